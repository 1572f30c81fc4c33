"""Layouts for data that follows no published dataset: a CSV of labels, or real/fake folders.

**csv** -- columns ``path,label`` and optionally ``original`` (or
``original_id``), ``split``, ``video_id``, ``manipulation``; other columns are
ignored. ``label`` accepts ``real``/``fake`` in any case or ``0``/``1``. The
``root`` given to the catalog is either the CSV file itself or a folder holding
``labels.csv``; either way paths in the CSV are relative to the CSV's folder,
which is the dataset root (:func:`deepfake.data.catalogs.dataset_root`), and must
stay inside it. ``original`` may name the source by its path, file name or id;
a real video is always its own original, and a fake without one is too.

**folders** -- ``real/`` and ``fake/`` under the root, searched at any depth
for video files, or the same pair under ``train/``, ``val/`` and ``test/``
(which then give the split). A fake inside a subfolder of ``fake/`` takes the
subfolder's name as its manipulation (``fake/FaceSwap/x.mp4``).
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from deepfake.core.errors import CatalogError
from deepfake.core.vocabulary import LABELS, NO_MANIPULATION, SPLITS
from deepfake.data.catalogs.table import (
    UNKNOWN_MANIPULATION,
    VIDEO_EXTENSIONS,
    Catalog,
    drop_missing,
    find_videos,
    make_table,
    normalize_split,
    relpath,
    strip_video_suffix,
    unique_ids,
)

LABELS_CSV = "labels.csv"   # looked for inside a folder given as the csv root
REAL_DIR, FAKE_DIR = "real", "fake"

_LABEL_VALUES = {"real": LABELS["real"], "fake": LABELS["fake"],
                 "0": LABELS["real"], "1": LABELS["fake"], "0.0": LABELS["real"], "1.0": LABELS["fake"]}
_OPTIONAL = ("original", "original_id", "split", "video_id", "manipulation")


# --- csv ---------------------------------------------------------------------------------------

def csv_file(root: Path) -> Path | None:
    if root.is_file() and root.suffix.lower() == ".csv":
        return root
    if root.is_dir() and (root / LABELS_CSV).is_file():
        return root / LABELS_CSV
    return None


def detect_csv(root: Path) -> bool:
    return csv_file(root) is not None


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        raise CatalogError(f"{path} cannot be read as CSV: {exc}") from exc
    df.columns = [str(c).strip().lower() for c in df.columns]
    missing = [c for c in ("path", "label") if c not in df.columns]
    if missing:
        raise CatalogError(f"{path} lacks column(s) {', '.join(missing)}; it has {', '.join(df.columns)}. "
                           f"Expected path,label and optionally {','.join(_OPTIONAL)}")
    return df.apply(lambda col: col.str.strip())


def _relative(value: str, base: Path, where: str) -> str:
    """A CSV path as a clean path relative to the CSV's folder."""
    text = value.replace("\\", "/")
    if not text:
        raise CatalogError(f"{where}: empty path")
    p = Path(text)
    if p.is_absolute():
        try:
            p = p.resolve().relative_to(base.resolve())
        except ValueError:
            raise CatalogError(f"{where}: {value} is outside {base}; paths must lie under the CSV's folder "
                               "so the table works wherever the data is mounted") from None
    rel = PurePosixPath(p.as_posix())
    if ".." in rel.parts:
        raise CatalogError(f"{where}: {value} leaves {base}; paths must lie under the CSV's folder")
    return rel.as_posix()


def _bad(problems: list[str], path: Path, what: str, hint: str) -> None:
    if problems:
        raise CatalogError(f"{path}: {len(problems)} row(s) with {what}, "
                           f"e.g. {'; '.join(problems[:5])}. {hint}")


def load_csv(root: Path, *, allow_missing: bool = False) -> pd.DataFrame:
    """The videos table of a labels CSV; rows whose file is absent raise unless ``allow_missing``."""
    path = csv_file(root)
    if path is None:
        raise CatalogError(f"{root} is neither a .csv file nor a folder holding {LABELS_CSV}")
    base = path.parent
    df = _read_csv(path)
    lines = range(2, len(df) + 2)  # line numbers in the file, after the header

    rel_paths = [_relative(v, base, f"{path} line {n}") for v, n in zip(df["path"], lines, strict=True)]
    labels, bad_labels = [], []
    for value, n in zip(df["label"], lines, strict=True):
        label = _LABEL_VALUES.get(value.lower())
        if label is None:
            bad_labels.append(f"line {n}: {value!r}")
        labels.append(label)
    _bad(bad_labels, path, "an unknown label", "Use real/fake or 0/1 (1 = fake).")
    seen: dict[str, int] = {}
    dups = [f"line {n}: {p}" for p, n in zip(rel_paths, lines, strict=True) if seen.setdefault(p, n) != n]
    _bad(dups, path, "a repeated path", "List each video once.")

    given_ids = list(df["video_id"]) if "video_id" in df.columns else [""] * len(df)
    ids = unique_ids(rel_paths)
    ids = [g or i for g, i in zip(given_ids, ids, strict=True)]
    by_path = dict(zip(rel_paths, ids, strict=True))
    by_id = set(ids)
    by_name: dict[str, list[str]] = {}
    for p, vid in zip(rel_paths, ids, strict=True):
        by_name.setdefault(PurePosixPath(p).name, []).append(vid)
        by_name.setdefault(PurePosixPath(p).stem, []).append(vid)

    def resolve_original(value: str) -> str:
        clean = value.replace("\\", "/")
        clean = PurePosixPath(clean).as_posix() if clean else clean
        if clean in by_path:
            return by_path[clean]
        if clean in by_id:
            return clean
        if len(by_name.get(clean, [])) == 1:
            return by_name[clean][0]
        return strip_video_suffix(clean)

    originals = df["original"] if "original" in df.columns else df.get("original_id")
    rows = []
    for i, n in enumerate(lines):
        vid, label = ids[i], labels[i]
        original = originals.iloc[i] if originals is not None else ""
        fake = label == LABELS["fake"]
        manipulation = df["manipulation"].iloc[i] if "manipulation" in df.columns else ""
        rows.append({
            "video_id": vid, "path": rel_paths[i], "label": label,
            "original_id": resolve_original(original) if fake and original else vid,
            "manipulation": (manipulation or UNKNOWN_MANIPULATION) if fake else NO_MANIPULATION,
            "split": normalize_split(df["split"].iloc[i], f"{path} line {n}")
            if "split" in df.columns else "",
        })
    rows = drop_missing(rows, base, source=str(path), allow_missing=allow_missing)
    return make_table(rows, source=str(path))


# --- folders -----------------------------------------------------------------------------------

def _label_dirs(root: Path) -> list[tuple[str, int, Path]]:
    """(split, label, folder) pairs: ``real/``, ``fake/`` or ``<split>/real/``, ``<split>/fake/``."""
    pairs = [("", LABELS[name], root / name) for name in (REAL_DIR, FAKE_DIR) if (root / name).is_dir()]
    if pairs:
        return pairs
    return [(split, LABELS[name], root / split / name) for split in SPLITS for name in (REAL_DIR, FAKE_DIR)
            if (root / split / name).is_dir()]


def detect_folders(root: Path) -> bool:
    return root.is_dir() and bool(_label_dirs(root))


def load_folders(root: Path) -> pd.DataFrame:
    """The videos table of ``real/`` + ``fake/`` folders (optionally under split folders)."""
    dirs = _label_dirs(root)
    if not dirs:
        raise CatalogError(f"{root} has no {REAL_DIR}/ or {FAKE_DIR}/ folder "
                           f"(nor {'/, '.join(SPLITS)}/ folders holding them)")
    found: list[tuple[str, int, Path, Path]] = [(split, label, folder, video) for split, label, folder in dirs
                                                for video in find_videos(folder)]
    if not found:
        raise CatalogError(f"no video files ({' '.join(VIDEO_EXTENSIONS)}) under "
                           f"{', '.join(str(folder) for _, _, folder in dirs)}")
    paths = [relpath(video, root) for *_, video in found]
    rows: list[dict[str, Any]] = []
    for (split, label, folder, video), path, vid in zip(found, paths, unique_ids(paths), strict=True):
        sub = video.relative_to(folder).parts
        fake = label == LABELS["fake"]
        rows.append({"video_id": vid, "path": path, "label": label, "original_id": vid,
                     "manipulation": (sub[0] if len(sub) > 1 else UNKNOWN_MANIPULATION) if fake
                     else NO_MANIPULATION,
                     "split": split})
    return make_table(rows, source=f"folder {root}")


CSV_CATALOG = Catalog(
    name="csv", load=load_csv, detect=detect_csv, index_files=lambda root: [f for f in [csv_file(root)] if f],
    layout=f"a .csv file given as the root, or {LABELS_CSV} in the folder (columns path,label)",
    left_out="not listed in the CSV",          # a CSV is a chosen list: every video under its folder is its to skip
)


def _owns_folder(root: Path, rel: str) -> bool:
    parts = rel.split("/")
    return parts[0] in (REAL_DIR, FAKE_DIR) or (len(parts) > 2 and parts[0] in SPLITS
                                                and parts[1] in (REAL_DIR, FAKE_DIR))


FOLDERS_CATALOG = Catalog(
    name="folders", load=load_folders, detect=detect_folders, owns=_owns_folder,
    layout=f"{REAL_DIR}/ and {FAKE_DIR}/ folders, or them under {'/, '.join(SPLITS)}/",
)
