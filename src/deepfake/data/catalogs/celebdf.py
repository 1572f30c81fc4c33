"""Celeb-DF (v2) layout.

::

    Celeb-real/id0_0000.mp4           real celebrity videos
    YouTube-real/00000.mp4            real YouTube videos (their own originals)
    Celeb-synthesis/id0_id16_0000.mp4 fakes: video id0_0000 with the face of id16
    List_of_testing_videos.txt        optional: lines "<label> <folder>/<file>.mp4"

Labels come from the folders. The testing list uses Celeb-DF's own convention,
**1 = real and 0 = fake** (the inverse of :data:`deepfake.data.catalogs.LABELS`);
each line is checked against its folder, so a list written in the other
convention is an error rather than silently inverted. Listed videos get split
``test``; the others an empty split, for :func:`deepfake.data.splits.ensure_splits`
to fill with train and val.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from deepfake.core.errors import CatalogError
from deepfake.core.vocabulary import LABELS, NO_MANIPULATION
from deepfake.data.catalogs.table import Catalog, drop_missing, find_videos, make_table, relpath, unique_ids

FOLDERS = {"Celeb-real": LABELS["real"], "YouTube-real": LABELS["real"], "Celeb-synthesis": LABELS["fake"]}
CELEB_REAL = "Celeb-real"
TEST_LIST = "List_of_testing_videos.txt"
MANIPULATION = "celebdf"
# Celeb-DF's testing list convention (the inverse of ours).
LIST_LABELS = {"1": LABELS["real"], "0": LABELS["fake"]}

_SYNTHESIS = re.compile(r"^(id\d+)_(id\d+)_(\d+)$")


def detect(root: Path) -> bool:
    return any((root / name).is_dir() for name in FOLDERS)


def original_name(stem: str) -> str:
    """``id0_id16_0000`` -> ``id0_0000``: the Celeb-real video whose frames the fake uses."""
    m = _SYNTHESIS.match(stem)
    return f"{m.group(1)}_{m.group(3)}" if m else stem


def read_test_list(path: Path) -> dict[str, int]:
    """``{relative path: our label}`` from the testing list."""
    listed: dict[str, int] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or parts[0] not in LIST_LABELS:
            raise CatalogError(f"{path} line {n}: {line.strip()!r} is not '<1|0> <folder>/<file>.mp4' "
                               "(Celeb-DF convention: 1 = real, 0 = fake)")
        listed[parts[1].replace("\\", "/")] = LIST_LABELS[parts[0]]
    return listed


def load(root: Path, *, allow_missing: bool = False) -> pd.DataFrame:
    """The videos table of a Celeb-DF folder; listed test videos not on disk raise unless allowed."""
    found = [(folder, label, video) for folder, label in FOLDERS.items() if (root / folder).is_dir()
             for video in find_videos(root / folder)]
    if not found:
        raise CatalogError(f"no videos in {', '.join(f'{root / f}/' for f in FOLDERS)}")
    paths = [relpath(video, root) for _, _, video in found]
    ids = unique_ids(paths)
    real_ids = {video.stem: vid for (folder, _, video), vid in zip(found, ids, strict=True)
                if folder == CELEB_REAL}

    test_path = root / TEST_LIST
    listed = read_test_list(test_path) if test_path.is_file() else {}
    on_disk = set(paths)
    for rel, list_label in listed.items():
        folder = rel.split("/", 1)[0]
        if rel in on_disk and FOLDERS.get(folder) != list_label:
            raise CatalogError(
                f"{test_path}: {rel} is listed as {'real' if list_label == 0 else 'fake'} but lies in "
                f"{folder}/; the list must use Celeb-DF's convention, 1 = real and 0 = fake")

    rows = []
    for (_, label, video), path, vid in zip(found, paths, ids, strict=True):
        fake = label == LABELS["fake"]
        original = real_ids.get(original_name(video.stem), original_name(video.stem)) if fake else vid
        rows.append({"video_id": vid, "path": path, "label": label, "original_id": original,
                     "manipulation": MANIPULATION if fake else NO_MANIPULATION,
                     "split": "test" if path in listed else ""})
    # Only checked: the rows come from the folders, the list only names the test split.
    drop_missing([{"path": rel} for rel in sorted(listed)], root, source=str(test_path),
                 allow_missing=allow_missing)
    return make_table(rows, source=f"Celeb-DF folder {root}")


CATALOG = Catalog(
    name="celebdf", load=load, detect=detect,
    index_files=lambda root: [root / TEST_LIST] if (root / TEST_LIST).is_file() else [],
    owns=lambda root, rel: rel.split("/", 1)[0] in FOLDERS,
    layout=f"{', '.join(f'{f}/' for f in FOLDERS)} (Celeb-DF)",
)
