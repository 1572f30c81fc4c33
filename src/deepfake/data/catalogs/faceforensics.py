"""FaceForensics++ layout, one compression level at a time.

::

    original_sequences/{youtube,actors}/<comp>/videos/NNN.mp4
    manipulated_sequences/<method>/<comp>/videos/TTT_SSS.mp4
    splits/{train,val,test}.json          (optional; or beside the two folders)

A fake ``TTT_SSS`` is target video ``TTT`` with the face of ``SSS``: its
frames come from ``TTT``, so ``original_id`` is ``TTT``, the id of that real
video. Real ids are their stems (``000``, ``01__meeting_serious``); fake ids
carry the method (``Deepfakes/000_003``) because every method reuses the
same names.

DeepFakeDetection fakes are named ``01_02__meeting_serious__YVGY8LOK``:
target actor ``01``, source actor ``02``, scene ``meeting_serious`` and a take
code. Their original is the target actor's video of that scene,
``actors/<comp>/videos/01__meeting_serious.mp4``, so ``original_id`` is
``01__meeting_serious``. A fake name matching neither pattern is its own
original.

The official split files are lists of ``["TTT", "SSS"]`` pairs: both ids, and
both fakes of the pair, go to that split. They cover the youtube sequences
only; actors and DeepFakeDetection videos get an empty split, for
:func:`deepfake.data.splits.ensure_splits` to assign.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pandas as pd

from deepfake.core.errors import CatalogError
from deepfake.core.vocabulary import LABELS, NO_MANIPULATION, SPLITS
from deepfake.data.catalogs.table import Catalog, find_videos, make_table, relpath

ORIGINALS = "original_sequences"
MANIPULATED = "manipulated_sequences"
SOURCES = ("youtube", "actors")       # folders under original_sequences
ACTORS_METHOD = "DeepFakeDetection"   # the method whose fakes come from the actors videos
DEFAULT_COMPRESSION = "c23"           # the FF++ papers' default: light H.264 compression

_TARGET_SOURCE = re.compile(r"^(\d+)_(\d+)$")
_DFD_FAKE = re.compile(r"^(\d+)_(\d+)__(.+)__[^_]+$")


def detect(root: Path) -> bool:
    return (root / ORIGINALS).is_dir() or (root / MANIPULATED).is_dir()


def _sequence_dirs(root: Path) -> list[tuple[str, str, Path]]:
    """(kind, name, folder) of every sequence: ("real", "youtube", ...), ("fake", "Deepfakes", ...)."""
    out = [("real", s, root / ORIGINALS / s) for s in SOURCES if (root / ORIGINALS / s).is_dir()]
    if (root / MANIPULATED).is_dir():
        out += [("fake", d.name, d) for d in sorted((root / MANIPULATED).iterdir())
                if d.is_dir() and not d.name.startswith(".")]
    return out


def compressions(root: Path) -> list[str]:
    """Compression levels present under any sequence (``c23``, ``c40``, ``raw``...)."""
    return sorted({c.name for _, _, seq in _sequence_dirs(root) for c in seq.iterdir()
                   if (c / "videos").is_dir()})


def original_of(method: str, stem: str) -> str:
    """The id of the real video a fake's frames come from (see the module docstring)."""
    if method == ACTORS_METHOD:
        m = _DFD_FAKE.match(stem)
        return f"{m.group(1)}__{m.group(3)}" if m else stem
    m = _TARGET_SOURCE.match(stem)
    return m.group(1) if m else stem


def find_split_files(root: Path) -> dict[str, Path]:
    """``{split: file}`` from ``root/splits/`` or, failing that, the root itself."""
    for folder in (root / "splits", root):
        found = {s: folder / f"{s}.json" for s in SPLITS if (folder / f"{s}.json").is_file()}
        if found:
            return found
    return {}


def read_splits(files: dict[str, Path]) -> tuple[dict[str, str], dict[frozenset[str], str]]:
    """Split of each video id and of each pair, from the official pair lists."""
    by_id: dict[str, str] = {}
    by_pair: dict[frozenset[str], str] = {}
    seen_in: dict[str, Path] = {}
    for split, path in files.items():
        try:
            pairs = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CatalogError(f"{path} cannot be read as JSON: {exc}") from exc
        if not isinstance(pairs, list) or not all(
                isinstance(p, list) and len(p) == 2 for p in pairs):
            raise CatalogError(f'{path} must be a list of ["TTT", "SSS"] pairs, as in the FF++ release')
        for pair in pairs:
            ids = [str(v) for v in pair]
            for vid in ids:
                if by_id.get(vid, split) != split:
                    raise CatalogError(f"video {vid} is in both {seen_in[vid]} and {path}; "
                                       "a video can be in one split only")
                by_id[vid] = split
                seen_in[vid] = path
            by_pair[frozenset(ids)] = split
    return by_id, by_pair


def load(root: Path, *, compression: str = DEFAULT_COMPRESSION) -> pd.DataFrame:
    """The videos table of one compression level of an FF++ folder."""
    sequences = _sequence_dirs(root)
    if not sequences:
        raise CatalogError(f"{root} has neither {ORIGINALS}/{{{','.join(SOURCES)}}} "
                           f"nor {MANIPULATED}/<method>; "
                           "point at the folder the FF++ download script wrote")
    available = compressions(root)
    if compression not in available:
        raise CatalogError(f"compression {compression!r} not found in {root}; available: "
                           f"{', '.join(available) or 'none (no <sequence>/<comp>/videos folders)'}")
    split_files = find_split_files(root)
    by_id, by_pair = read_splits(split_files)

    rows = []
    lacking = []
    for kind, name, seq in sequences:
        folder = seq / compression / "videos"
        if not folder.is_dir():
            lacking.append(name)
            continue
        for video in find_videos(folder):
            stem = video.stem
            path = relpath(video, root)
            if kind == "real":
                rows.append({"video_id": stem, "path": path, "label": LABELS["real"], "original_id": stem,
                             "manipulation": NO_MANIPULATION, "split": by_id.get(stem, "")})
                continue
            original = original_of(name, stem)
            m = _TARGET_SOURCE.match(stem)
            split = by_pair.get(frozenset(m.groups()), by_id.get(original, "")) if m and split_files else ""
            rows.append({"video_id": f"{name}/{stem}", "path": path, "label": LABELS["fake"],
                         "original_id": original, "manipulation": name, "split": split})
    if lacking:
        warnings.warn(f"{', '.join(lacking)} in {root} have no {compression} videos; left out",
                      UserWarning, stacklevel=2)
    return make_table(rows, source=f"FaceForensics++ folder {root} ({compression})")


CATALOG = Catalog(
    name="faceforensics", load=load, detect=detect,
    index_files=lambda root: sorted(find_split_files(root).values()),
    owns=lambda root, rel: rel.split("/", 1)[0] in (ORIGINALS, MANIPULATED),
    layout=f"{ORIGINALS}/ or {MANIPULATED}/ (FaceForensics++)",
    left_out="another compression level (option compression) or not a <sequence>/<comp>/videos file (masks)",
)
