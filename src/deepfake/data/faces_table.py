"""``faces.csv``: the contract between face extraction and training or evaluation.

One row per face (``status == "ok"``) plus one status row per video that gave
no face or failed to decode. Columns are documented in docs/architecture.md;
:func:`read_faces` reads one table or every shard's, with the crops' absolute
paths.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from deepfake.core.errors import (
    DataError,
    ManifestError,
)
from deepfake.core.paths import FACES_MANIFEST, resolve
from deepfake.data.manifest import read_sidecar, with_sources
from deepfake.data.selfblend import REEXTRACT_HINT
from deepfake.data.shards import is_packed, resolve_packed
from deepfake.data.splits import PROTOCOL_ATTR
from deepfake.media.crops import landmarks_in_crop

# faces.csv columns (docs/architecture.md), in order.
FACES_COLUMNS = ["video_id", "original_id", "label", "manipulation", "split", "frame_idx", "face_idx", "box",
                 "score", "landmarks", "path", "status", "reason"]


# Columns copied from the videos table; the rest come from extraction.
META_COLUMNS = ["original_id", "label", "manipulation", "split"]
PART_COLUMNS = ["video_id", "frame_idx", "face_idx", "box", "score", "landmarks", "path", "status", "reason"]


# Columns an older faces.csv may lack; they are read as empty (self-blending then asks for a re-extraction).
OPTIONAL_COLUMNS = ("landmarks",)


# Text columns of faces.csv: read as text so ids like "000" keep their zeros.
_TEXT_COLUMNS = ["video_id", "original_id", "manipulation", "split", "box", "landmarks", "path", "status", "reason"]


def read_faces(folder: str | os.PathLike[str], crops_dir: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """The faces table of ``folder`` (its ``faces.csv``, or every ``shard-*/faces.csv``).

    Adds ``abs_path``: the crop's absolute path, empty for status rows. Where extraction packed the crops
    into tar shards (:mod:`deepfake.data.shards`), it is the crop's reference in its tar, found under
    ``crops_dir`` or ``folder``, and empty for a crop whose tar is not there (another step's group).
    """
    root = resolve(folder)
    tables = [root / FACES_MANIFEST] if (root / FACES_MANIFEST).is_file() else sorted(root.glob(f"shard-*/{FACES_MANIFEST}"))
    if not tables:
        raise ManifestError(f"no {FACES_MANIFEST} in {root} nor in its shard-*/ folders; run face extraction first")
    frames = []
    for table in tables:
        df = _read_faces_csv(table)
        base = str(table.parent.resolve())
        if is_packed(base):
            df["abs_path"] = resolve_packed(base, df["path"], [d for d in (crops_dir, root) if d])
        else:
            df["abs_path"] = [os.path.normpath(os.path.join(base, p)) if p else "" for p in df["path"]]
        frames.append(df)
    faces = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    protocol = read_sidecar(tables[0]).get(PROTOCOL_ATTR)
    if protocol:
        faces.attrs[PROTOCOL_ATTR] = protocol            # what the splits follow (deepfake.data.splits)
    return with_sources(faces, tables)


def extraction_settings(faces_dir: str | os.PathLike[str]) -> dict:
    """The ExtractConfig that made a faces folder (from its manifest sidecar): what the model records."""
    root = resolve(faces_dir)
    tables = [root / FACES_MANIFEST] if (root / FACES_MANIFEST).is_file() \
        else sorted(root.glob(f"shard-*/{FACES_MANIFEST}"))
    configs = [read_sidecar(t).get("config", {}) for t in tables]
    if not configs:
        raise ManifestError(f"no {FACES_MANIFEST} in {root}; run face extraction first")
    if any(c != configs[0] for c in configs[1:]):
        raise ManifestError(f"the shards of {root} were extracted with different settings")
    return configs[0]


def _read_faces_csv(path: Path) -> pd.DataFrame:
    try:
        df = pd.read_csv(path, dtype={c: str for c in _TEXT_COLUMNS}, keep_default_na=False,
                         na_values={"score": [""], "label": [""]})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ManifestError(f"faces table {path} cannot be read: {exc}") from exc
    for column in OPTIONAL_COLUMNS:
        if column not in df.columns:
            df.insert(FACES_COLUMNS.index(column), column, "")
    missing = [c for c in FACES_COLUMNS if c not in df.columns]
    if missing:
        raise ManifestError(f"faces table {path} lacks column(s) {', '.join(missing)}; has {', '.join(df.columns)}")
    return df


def _format_box(box: Sequence[int]) -> str:
    return "[" + ", ".join(str(int(v)) for v in box) + "]"


def format_landmarks(landmarks: Sequence[Sequence[float]] | None) -> str:
    """``[[x, y], ...]`` in full-resolution pixels to 0.1 px, or empty for a detector without landmarks."""
    if not landmarks:
        return ""
    return "[" + ", ".join(f"[{float(x):.1f}, {float(y):.1f}]" for x, y in landmarks) + "]"


def parse_landmarks(text: object) -> np.ndarray | None:
    """The (N, 2) float array of a ``landmarks`` cell, or None when it is empty."""
    if text is None or (isinstance(text, float) and np.isnan(text)) or not str(text).strip():
        return None
    try:
        points = np.asarray(json.loads(str(text)), dtype=np.float64)
    except (ValueError, TypeError) as exc:
        raise ManifestError(f"landmarks cell {str(text)[:60]!r} is not a JSON list of [x, y] points") from exc
    if points.ndim != 2 or points.shape[1] != 2:
        raise ManifestError(f"landmarks cell {str(text)[:60]!r} is not a list of [x, y] points")
    return points


def crop_landmarks(faces_df: pd.DataFrame, margin: float, image_size: int) -> list[np.ndarray]:
    """Each face's five landmarks in the pixels of its crop resized to ``image_size`` (for self-blending)."""
    missing = [c for c in ("landmarks", "box") if c not in faces_df.columns]
    if missing:
        raise DataError(REEXTRACT_HINT)
    marks = [parse_landmarks(text) for text in faces_df["landmarks"]]
    lacking = sum(m is None for m in marks)
    if lacking:
        raise DataError(f"{lacking} of {len(marks)} real face crops have no landmarks: {REEXTRACT_HINT}")
    boxes = [json.loads(str(b)) for b in faces_df["box"]]
    return [landmarks_in_crop(m, b, margin, image_size) for m, b in zip(marks, boxes, strict=True)]


def require_crops(rows: pd.DataFrame, what: str) -> None:
    """DataError when face rows of ``rows`` have no crop here: their tar shard is another step's input."""
    ok = rows[rows["status"].astype(str) == "ok"] if "status" in rows.columns else rows
    missing = ok[ok["abs_path"].astype(str) == ""] if "abs_path" in ok.columns else ok.iloc[0:0]
    if len(missing):
        raise DataError(f"{len(missing)} face crop(s) of {what} are not in this step's crops (e.g. "
                        f"{missing['path'].iloc[0]!r}): extraction packed them into another step's tar shards "
                        "(deepfake.data.shards.crop_group); give this step the crops_dir of their group, or extract "
                        "with the mode this run trains in")
