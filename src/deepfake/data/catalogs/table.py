"""The videos table every catalog produces, and the pieces catalogs share.

Each dataset layout has its own module that knows where labels and sources
live; they all end here, so the table has the same columns, types, id rules
and row order whichever layout it came from.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from deepfake.core.errors import CatalogError
from deepfake.core.vocabulary import SPLITS

COLUMNS = ("video_id", "path", "label", "original_id", "manipulation", "split")
UNKNOWN_MANIPULATION = "unknown"  # a fake whose layout does not say how it was made

# Matched case-insensitively; the catalog never decodes, so these are only names.
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")

_SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val",
    "test": "test", "testing": "test",
}


@dataclass(frozen=True)
class Catalog:
    """One dataset layout: how to recognise it and how to read it."""

    name: str                                   # the ``kind`` users pass to load_catalog
    load: Callable[..., pd.DataFrame]           # load(root, **options) -> videos table
    detect: Callable[[Path], bool]              # does this folder (or file) have the layout?
    layout: str                                 # what detect looks for, shown when auto finds nothing
    index_files: Callable[[Path], list[Path]] = lambda root: []   # the files that list the videos, if any
    # Whether a video file (a path relative to the root) lies where this layout keeps its videos: one the table
    # leaves out there is the layout's own choice (``left_out`` says why); one elsewhere is another dataset.
    owns: Callable[[Path, str], bool] = lambda root, rel: True
    left_out: str = "not listed by the layout"


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS and not path.name.startswith(".")


def find_videos(folder: Path) -> list[Path]:
    """Video files under ``folder`` at any depth, sorted; hidden files and folders (``._x.mp4``) skipped."""
    found = []
    for path in folder.rglob("*"):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if is_video(path) and path.is_file():
            found.append(path)
    return sorted(found)


def relpath(path: Path, root: Path) -> str:
    """``path`` relative to the dataset root, with forward slashes, so the table works on any mount."""
    return path.relative_to(root).as_posix()


def strip_video_suffix(name: str) -> str:
    p = PurePosixPath(name)
    return p.with_suffix("").as_posix() if p.suffix.lower() in VIDEO_EXTENSIONS else p.as_posix()


def unique_ids(rel_paths: Sequence[str]) -> list[str]:
    """Video ids from relative paths: the file stem, widened only where stems collide.

    ``a/x.mp4`` and ``b/x.mp4`` become ``a/x`` and ``b/x``; if two files differ
    only by extension the id keeps it. Paths are unique, so the ids are too.
    """
    levels = [
        [PurePosixPath(p).stem for p in rel_paths],
        [PurePosixPath(p).with_suffix("").as_posix() for p in rel_paths],
        list(rel_paths),
    ]
    depth = [0] * len(rel_paths)
    while True:
        ids = [levels[d][i] for i, d in enumerate(depth)]
        counts = Counter(ids)
        clashes = [i for i, v in enumerate(ids) if counts[v] > 1 and depth[i] < 2]
        if not clashes:
            return ids
        for i in clashes:
            depth[i] += 1


def normalize_split(value: Any, where: str) -> str:
    """``train``/``val``/``test`` (a few common spellings accepted) or ``""`` when not given."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    text = str(value).strip().lower()
    if text == "":
        return ""
    if text not in _SPLIT_ALIASES:
        raise CatalogError(f"{where}: unknown split {value!r}; "
                           f"use one of {', '.join(SPLITS)} or leave it empty")
    return _SPLIT_ALIASES[text]


def drop_missing(rows: list[dict[str, Any]], root: Path, *, source: str,
                 allow_missing: bool) -> list[dict[str, Any]]:
    """Rows whose file exists; missing files are an error unless ``allow_missing`` (then a warning)."""
    missing = [r for r in rows if not (root / r["path"]).is_file()]
    if not missing:
        return rows
    examples = ", ".join(r["path"] for r in missing[:5])
    message = (f"{len(missing)} of {len(rows)} videos listed in {source} are missing under {root} "
               f"(e.g. {examples})")
    if not allow_missing:
        raise CatalogError(f"{message}; restore them, or pass allow_missing=True to drop those rows")
    warnings.warn(f"{message}; dropped them because allow_missing=True", UserWarning, stacklevel=3)
    gone = {id(r) for r in missing}
    return [r for r in rows if id(r) not in gone]


def make_table(rows: Iterable[dict[str, Any]], *, source: str) -> pd.DataFrame:
    """The videos table: fixed columns and types, unique ids, rows sorted by path."""
    df = pd.DataFrame(list(rows), columns=list(COLUMNS))
    if df.empty:
        raise CatalogError(f"no videos found in {source}")
    dup = df.loc[df["video_id"].duplicated(keep=False), "video_id"]
    if len(dup):
        raise CatalogError(f"video ids repeat in {source}: {', '.join(sorted(set(dup))[:5])}; "
                           "every video needs its own id")
    for col in ("video_id", "path", "original_id", "manipulation", "split"):
        df[col] = df[col].astype(str)
    df["label"] = df["label"].astype("int64")
    return df.sort_values("path", kind="stable").reset_index(drop=True)
