"""Manifests: the explicit tables that carry data from one stage to the next.

A manifest is a CSV table plus a JSON sidecar (same name, ``.json``) with the
stage config, the sha256 of every input file and the kit version, so any table
on disk says how it was made. Writes are atomic (:mod:`deepfake.core.files`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from deepfake import __version__
from deepfake.core.errors import ManifestError
from deepfake.core.files import atomic_write_text, read_json, sha256_file, write_json


def sidecar_path(table: str | os.PathLike[str]) -> Path:
    return Path(table).with_suffix(".json")


INPUTS_ATTR = "inputs"     # DataFrame.attrs key: the files a table was read from (sidecars record their sha256)


def sources(df: pd.DataFrame) -> list[str]:
    """The files ``df`` was read from, as recorded by the reader that made it."""
    return list(df.attrs.get(INPUTS_ATTR, []))


def with_sources(df: pd.DataFrame, files: Iterable[str | os.PathLike[str]]) -> pd.DataFrame:
    """``df`` tagged with the files it was read from (kept through filters, read back by :func:`sources`)."""
    df.attrs[INPUTS_ATTR] = [str(f) for f in files]
    return df


def write_manifest(
    df: pd.DataFrame,
    path: str | os.PathLike[str],
    *,
    config: Mapping[str, Any] | None = None,
    inputs: Iterable[str | os.PathLike[str]] = (),
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``df`` as CSV at ``path`` and its sidecar; returns the table path.

    ``inputs``: the files the table was made from; the sidecar records their sha256.
    """
    path = Path(path)
    atomic_write_text(path, df.to_csv(index=False))
    meta = {
        "kit_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "rows": int(len(df)),
        "columns": list(map(str, df.columns)),
        "config": dict(config or {}),
        "inputs": {str(p): sha256_file(p) for p in inputs if Path(p).is_file()},
        **dict(extra or {}),
    }
    write_json(sidecar_path(path), meta)
    return path


# Identity and text columns: read as strings, so an id like FF++ "000" stays "000" and an empty split is "".
TEXT_COLUMNS = ("video_id", "original_id", "path", "manipulation", "split", "status", "reason", "box")


def read_manifest(path: str | os.PathLike[str], required: Iterable[str] = ()) -> pd.DataFrame:
    """Read a manifest table, checking that the ``required`` columns are there."""
    path = Path(path)
    if path.is_dir():
        raise ManifestError(f"{path} is a folder; expected a manifest CSV file")
    if not path.is_file():
        raise ManifestError(f"manifest {path} does not exist; run the stage that writes it first")
    try:
        df = pd.read_csv(path, keep_default_na=False, na_values=[""], dtype={c: str for c in TEXT_COLUMNS})
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise ManifestError(f"manifest {path} cannot be read: {exc}") from exc
    for col in TEXT_COLUMNS:
        if col in df.columns:
            df[col] = df[col].fillna("").astype(str)
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ManifestError(f"manifest {path} lacks column(s) {', '.join(missing)}; has {', '.join(df.columns)}")
    return df


def read_sidecar(path: str | os.PathLike[str]) -> dict[str, Any]:
    return read_json(sidecar_path(path))


DATA_KEY = "data"          # sidecar key of the dataset's identity: its listing's source, digest, objects and bytes


def data_identity(df: pd.DataFrame) -> dict[str, Any] | None:
    """The dataset's identity (:meth:`deepfake.data.listing.Listing.record`) that the manifests ``df`` was read
    from carry forward, None where none does (a table made before the kit recorded it)."""
    for path in sources(df):
        side = sidecar_path(path)
        if side.is_file():
            record = read_json(side).get(DATA_KEY)
            if isinstance(record, Mapping):
                return dict(record)
    return None
