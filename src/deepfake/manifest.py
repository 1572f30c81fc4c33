"""Manifests: the explicit files that carry data from one stage to the next.

A manifest is a CSV table plus a JSON sidecar (same name, ``.json``) with the
stage config, the sha256 of every input and the kit version, so any table on
disk says how it was made. Writes are atomic: a killed run never leaves half a
table behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from deepfake import __version__
from deepfake.errors import ManifestError


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write to a temporary file beside ``path`` and rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs are meant to be read by others
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path} does not exist")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path} is not valid JSON: {exc}") from exc


def sidecar_path(table: str | os.PathLike[str]) -> Path:
    return Path(table).with_suffix(".json")


def write_manifest(
    df: pd.DataFrame,
    path: str | os.PathLike[str],
    *,
    config: Mapping[str, Any] | None = None,
    inputs: Iterable[str | os.PathLike[str]] = (),
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``df`` as CSV at ``path`` and its sidecar; returns the table path."""
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


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__}")
