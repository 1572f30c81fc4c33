"""What a step's output folder holds for experiment tracking: its numbers and the files worth keeping.

Read from the files each stage writes (``data_profile.json``, the faces
sidecar, ``history.csv``, the model's ``config.json``, ``evaluation.json``),
so a step run long ago, or reused from the cache, is tracked exactly as a fresh
one. :mod:`deepfake.orchestration.tracking` sends them to MLflow.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from deepfake.core import paths
from deepfake.orchestration import steps

# Small tables kept with the run (the faces table and the crops are too big and stay in the run folder).
OUTPUT_TABLES = (paths.DATA_PROFILE, paths.VIDEOS_MANIFEST, paths.HISTORY, paths.EVALUATION,
                 paths.VIDEO_PREDICTIONS)
MODEL_FILES = ("config.json", "model_card.md")    # of model/: its settings and card; the weights are in the archive


def metrics(out: Path) -> list[tuple[str, float, int]]:
    """(key, value, step) of every number a step's outputs hold; per-epoch values have the epoch as step."""
    profile = read_json(out / paths.DATA_PROFILE)
    found = [(k, v, 0) for k, v in numbers({k: v for k, v in profile.items() if k != "layout"})]   # per folder:
    # as many as the dataset has folders; the report and data_profile.json (an output kept with the run) list them
    sidecar = read_json(out / Path(paths.FACES_MANIFEST).with_suffix(".json"))
    found += [(k, v, 0) for k, v in numbers({k: v for k, v in sidecar.items() if k not in ("config", "inputs")})]
    if (out / paths.HISTORY).is_file():
        with open(out / paths.HISTORY, newline="") as fh:
            for row in csv.DictReader(fh):
                epoch = int(float(row.pop("epoch")))
                found += [(k, float(v), epoch) for k, v in row.items() if _is_number(v)]
    calibration = read_json(out / paths.MODEL_DIR / "config.json").get("calibration") or {}
    found += [(f"calibration.{k}", v, 0) for k, v in numbers(calibration)]
    evaluation = read_json(out / paths.EVALUATION)
    on = split_prefix(evaluation)
    found += [(on + k, v, 0) for k, v in numbers(evaluation.get("metrics", {}))]
    for row in evaluation.get("per_manipulation", []):
        found += [(f"{on}manipulation.{row['manipulation']}.{k}", v, 0) for k, v in numbers(row)
                  if k not in ("label", "seen_in_training")]
    found += [(f"{on}aggregation.{k}", v, 0) for k, v in numbers(evaluation.get("by_aggregation", {}))]
    found += [(f"{on}counts.{k}", v, 0) for k, v in numbers(evaluation.get("counts", {}))]
    return found


def split_prefix(evaluation: Mapping[str, Any]) -> str:
    """``test.`` or ``all.``: an evaluation's metrics carry the split they were measured on in their MLflow
    names, so a comparison of runs cannot put a test-split AUC beside an every-video one under one name."""
    return f"{evaluation.get('split', 'test')}." if evaluation else ""


def videos_manifest(out: Path, depth: int = 3) -> Path | None:
    """The videos table a step's outputs were made from: its own ``videos.csv``, else the one its manifests'
    sidecars name as an input (through ``faces.csv``), so every step's run can name its dataset."""
    if (out / paths.VIDEOS_MANIFEST).is_file():
        return out / paths.VIDEOS_MANIFEST
    tables = [out / paths.FACES_MANIFEST, *sorted(out.glob(f"shard-*/{paths.FACES_MANIFEST}")), out / paths.HISTORY,
              out / paths.VIDEO_PREDICTIONS]
    for table in tables:
        for name in read_json(table.with_suffix(".json")).get("inputs") or {}:
            source = Path(name)
            if source.name == paths.VIDEOS_MANIFEST and source.is_file():
                return source
            if source.name == paths.FACES_MANIFEST and depth > 0:
                found = videos_manifest(source.parent, depth - 1)
                if found is not None:
                    return found
    return None


def files(out: Path, step: str) -> list[tuple[Path, str]]:
    """(file or folder, artifact folder) worth keeping with the step's run: figures, small tables, the model's
    settings and card, and for training the model archive (evaluation's gated copy has the same weights)."""
    found = [(out / paths.FIGURES_DIR, paths.FIGURES_DIR)] if (out / paths.FIGURES_DIR).is_dir() else []
    found += [(out / name, "outputs") for name in OUTPUT_TABLES if (out / name).is_file()]
    model = [out / paths.MODEL_DIR / name for name in MODEL_FILES]
    if step == steps.TRAIN_STEP:
        model.append(out / paths.MODEL_ARCHIVE)
    return found + [(path, "model") for path in model if path.is_file()]


def numbers(obj: Mapping[str, Any], prefix: str = "") -> list[tuple[str, float]]:
    """Numeric leaves of nested mappings under dotted keys (no bools, lists or None)."""
    out: list[tuple[str, float]] = []
    for key, value in obj.items():
        if isinstance(value, Mapping):
            out += numbers(value, f"{prefix}{key}.")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out.append((f"{prefix}{key}", float(value)))
    return out


def key(name: str) -> str:
    """An MLflow key: letters, digits and ``_-. /:``."""
    return re.sub(r"[^\w\-. /:]", "_", str(name))


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object, or {} when the file is missing or not one."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _is_number(text: str) -> bool:
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return True
