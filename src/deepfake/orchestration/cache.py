"""What the local runner reuses: a step's cache key and the finished runs that hold it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from deepfake.core import imports
from deepfake.core.files import write_json
from deepfake.orchestration import steps
from deepfake.orchestration.step_outputs import read_json

STEP_RECORD = "step.json"


# The package whose code the keys hash (tests point it at a copy they edit).
CODE_ROOT = imports.ROOT


def cache_key(step: steps.Step, notebook: Path, params: Mapping[str, Any], data: Path,
              upstream_keys: Mapping[str, str]) -> str:
    """Content hash of the notebook, the code it imports, the parameters and the inputs.

    An input from an earlier step counts by that step's key, so a change that
    reruns a step reruns every step after it.
    """
    h = hashlib.sha256()
    h.update(notebook.read_bytes())
    h.update(code_fingerprint(notebook).encode())
    wired = set(step.inputs) | {"output_dir"}
    h.update(json.dumps({k: v for k, v in params.items() if k not in wired}, sort_keys=True).encode())
    for param, source in sorted(step.inputs.items()):
        h.update(param.encode())
        h.update((data_fingerprint(data) if source == steps.DATA else upstream_keys[source]).encode())
    return h.hexdigest()


def code_fingerprint(notebook: Path) -> str:
    """The code a step runs: the kit modules its notebook imports and everything they import
    (:mod:`deepfake.core.imports`); editing a plot of one report reruns that report's step only."""
    return imports.fingerprint(imports.notebook_modules(notebook, CODE_ROOT), CODE_ROOT)


_DATA_FINGERPRINTS: dict[str, str] = {}


def data_fingerprint(data: Path) -> str:
    """Names, sizes and the first 64 KiB of every file: content-sensitive, fast on large datasets."""
    if str(data) in _DATA_FINGERPRINTS:
        return _DATA_FINGERPRINTS[str(data)]
    h = hashlib.sha256()
    for path in sorted(p for p in data.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(data)).encode())
        h.update(str(path.stat().st_size).encode())
        with open(path, "rb") as fh:
            h.update(fh.read(1 << 16))
    _DATA_FINGERPRINTS[str(data)] = h.hexdigest()
    return _DATA_FINGERPRINTS[str(data)]


def _find_cached(key: str, runs_root: Path) -> Path | None:
    if not runs_root.is_dir():
        return None
    for record in sorted(runs_root.glob(f"*/*/{STEP_RECORD}"), key=lambda p: p.stat().st_mtime, reverse=True):
        info = step_record(record.parent)
        if info.get("key") == key and info.get("status") == "finished":
            return record.parent
    return None


def step_record(out_dir: Path) -> dict[str, Any]:
    """A step folder's ``step.json`` (key, status, parameters...), or {} when it is missing or unreadable."""
    return read_json(out_dir / STEP_RECORD)


def _retarget(out_dir: Path, params: Mapping[str, Any]) -> None:
    """A reused step's record names the run that now holds it."""
    record = out_dir / STEP_RECORD
    info = json.loads(record.read_text())
    info["cached_from"] = info.get("cached_from") or info["parameters"].get("output_dir")
    info["parameters"] = dict(params)
    record.unlink()
    write_json(record, info)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _model_fingerprint(path: Path) -> str:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()
