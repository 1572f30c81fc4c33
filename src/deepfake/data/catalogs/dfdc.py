"""DFDC (Deepfake Detection Challenge) layout: a ``metadata.json`` per part.

``metadata.json`` maps each file of its part to
``{"label": "FAKE"|"REAL", "split": ..., "original": "y.mp4"}`` (``original``
on fakes only). The root may be one part, a folder of parts, or a folder of
parts each extracted one level deeper (``part_0/part_0/metadata.json``).

Ids are file stems (DFDC names are unique across parts); where two parts hold
the same name the id gets the part's folder as a prefix. A fake's
``original_id`` is its original's id, looked up in the same part first, so it
matches the real row exactly; an original that is not on disk keeps its stem,
which still groups its fakes together.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from deepfake.core.errors import CatalogError
from deepfake.core.vocabulary import LABELS, NO_MANIPULATION
from deepfake.data.catalogs.table import (
    Catalog,
    drop_missing,
    make_table,
    normalize_split,
    relpath,
    unique_ids,
)

METADATA = "metadata.json"
DEFAULT_MANIPULATION = "dfdc"          # DFDC does not say which method made a fake
_METHOD_KEYS = ("method", "manipulation")  # used when a metadata file does name it


def metadata_files(root: Path) -> list[Path]:
    """The root's own metadata.json (the root is one part), else its parts': one folder level down, or two
    where the part was extracted into a folder of its own (``part_0/part_0/``: the outer folder has the part's
    name or holds no other folder). A folder of datasets (``dfdc/part_0/``) is not a DFDC root."""
    if (root / METADATA).is_file():
        return [root / METADATA]
    if not root.is_dir():
        return []
    found = list(root.glob(f"*/{METADATA}"))
    found += [p for p in root.glob(f"*/*/{METADATA}") if _wraps(p.parent.parent, p.parent)]
    return sorted(p for p in found if p.is_file() and not _hidden(p.relative_to(root)))


def _wraps(outer: Path, part: Path) -> bool:
    """Whether ``outer`` is only the folder a part was extracted into."""
    if (outer / METADATA).is_file():
        return False
    if outer.name == part.name:
        return True
    return [d for d in outer.iterdir() if d.is_dir() and not d.name.startswith(".")] == [part]


def owns(root: Path, rel: str) -> bool:
    """A video in a part's folder belongs to the layout (one not in its metadata.json has no label)."""
    return ((root / rel).parent / METADATA).is_file()


def _hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def detect(root: Path) -> bool:
    return bool(metadata_files(root))


def _read(meta: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CatalogError(f"{meta} cannot be read as JSON: {exc}") from exc
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise CatalogError(f"{meta} must map each file name to an object like "
                           '{"label": "FAKE", "original": "x.mp4"}')
    return data


def _label(value: Any, meta: Path, name: str) -> int:
    text = str(value).strip().lower() if value is not None else ""
    if text not in LABELS:
        raise CatalogError(f"{meta}: {name} has label {value!r}; expected REAL or FAKE")
    return LABELS[text]


def load(root: Path, *, allow_missing: bool = False) -> pd.DataFrame:
    """The videos table of a DFDC folder; files listed but absent raise unless ``allow_missing``."""
    files = metadata_files(root)
    if not files:
        raise CatalogError(f"no {METADATA} in {root} or its part folders; "
                           "a DFDC part is a folder of videos with a metadata.json beside them")
    entries = []  # (part folder, file name, metadata entry, metadata path)
    for meta in files:
        for name, info in sorted(_read(meta).items()):
            entries.append((meta.parent, name, info, meta))

    rel_paths = [relpath(part / name, root) for part, name, _, _ in entries]
    ids = unique_ids(rel_paths)
    by_part = {(part, name): vid for (part, name, _, _), vid in zip(entries, ids, strict=True)}
    by_name: dict[str, str] = {}
    for (_, name, _, _), vid in zip(entries, ids, strict=True):
        by_name.setdefault(name, vid)

    rows = []
    for (part, name, info, meta), path, vid in zip(entries, rel_paths, ids, strict=True):
        label = _label(info.get("label"), meta, name)
        if label == LABELS["real"]:
            original_id, manipulation = vid, NO_MANIPULATION
        else:
            original = info.get("original")
            if original:
                original = str(original)
                original_id = by_part.get((part, original)) or by_name.get(original) \
                    or PurePosixPath(original).stem
            else:
                original_id = vid
            manipulation = next((str(info[k]) for k in _METHOD_KEYS if info.get(k)), DEFAULT_MANIPULATION)
        rows.append({"video_id": vid, "path": path, "label": label, "original_id": original_id,
                     "manipulation": manipulation,
                     "split": normalize_split(info.get("split"), f"{meta}: {name}")})
    rows = drop_missing(rows, root, source=f"{len(files)} {METADATA} file(s)", allow_missing=allow_missing)
    return make_table(rows, source=f"DFDC folder {root}")


CATALOG = Catalog(
    name="dfdc", load=load, detect=detect, index_files=metadata_files, owns=owns,
    layout=f"{METADATA} in the folder or in each part folder under it (DFDC parts)",
    left_out="in a part folder but not in its metadata.json, so without a label",
)
