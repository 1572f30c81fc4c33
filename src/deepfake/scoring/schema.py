"""The schema of ``evaluation.json``: the contract between evaluation and the quality gates.

Documented in docs/evaluation-schema.md; :func:`validate_evaluation` checks it,
:func:`read_evaluation` reads and checks a file. ``metrics`` holds flat floats
(or null) because the SageMaker quality gate reads ``metrics.video_auc`` with
JsonGet.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from deepfake.core import paths
from deepfake.core.errors import ConfigError, ManifestError
from deepfake.core.files import read_json
from deepfake.core.vocabulary import ALL_SPLITS
from deepfake.scoring.operating_point import METHODS as OPERATING_POINT_METHODS
from deepfake.scoring.operating_point import REPORTED_FPRS, metric_name
from deepfake.scoring.rule import ScoringRule

SCHEMA_VERSION = 3           # 3: operating point (threshold for a target FPR), catch rates at fixed FPRs
                             # 2: scoring rule, training record, seen/unseen manipulations, calibration


# Metrics of binary_metrics() copied, prefixed video_/frame_, into evaluation.json["metrics"].
METRIC_NAMES = ("auc", "log_loss", "accuracy", "eer", "ap", "ece", "precision", "recall", "f1")


def read_evaluation(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate an ``evaluation.json`` (a file, or the folder that holds it)."""
    p = Path(path)
    if p.is_dir():
        p = p / paths.EVALUATION
    evaluation = read_json(p)
    validate_evaluation(evaluation, source=str(p))
    return evaluation


_TOP_LEVEL: dict[str, type | tuple[type, ...]] = {
    "schema_version": int,
    "model": dict,
    "split": str,
    "fakes": str,
    "aggregation": str,
    "threshold": (int, float),
    "operating_point": dict,
    "scoring": dict,
    "training": (dict, type(None)),
    "metrics": dict,
    "undefined_metrics": dict,
    "by_aggregation": dict,
    "per_manipulation": list,
    "counts": dict,
    "unscored_videos": list,
    "worst_errors": list,
    "binary_classification_metrics": dict,
}


# Metrics beyond METRIC_NAMES: calibration before temperature scaling, the share of real videos called
# fake, and the AUC against manipulations the model did not (unseen) or did (seen) train on.
EXTRA_METRICS = ("video_ece_uncalibrated", "frame_ece_uncalibrated", "video_false_positive_rate",
                 "unseen_video_auc", "seen_video_auc", *(metric_name(f) for f in REPORTED_FPRS))


REQUIRED_METRICS = (*(f"{level}_{k}" for level in ("video", "frame") for k in METRIC_NAMES), *EXTRA_METRICS)
REQUIRED_COUNTS = ("videos_total", "videos_scored", "videos_unscored", "videos_failed", "videos_no_face",
                   "frames_scored", "faces_scored")


# Metrics where lower is better: a quality gate on one of them passes at or below its threshold.
LOWER_IS_BETTER = ("log_loss", "eer", "ece", "ece_uncalibrated", "false_positive_rate")


def gate_comparison(metric: str) -> str:
    """``">="`` or ``"<="``: how a quality gate on ``metric`` (a key of ``evaluation.json["metrics"]``) compares.
    Raises ConfigError for a name that is not a metric of the schema."""
    if metric not in REQUIRED_METRICS:
        raise ConfigError(f"gate metric {metric!r} is not a metric of evaluation.json; metrics: "
                          f"{', '.join(REQUIRED_METRICS)}")
    return "<=" if metric.split("_", 1)[1] in LOWER_IS_BETTER else ">="


def gate_passes(metric: str, value: float, threshold: float) -> bool:
    return value <= threshold if gate_comparison(metric) == "<=" else value >= threshold



def validate_evaluation(evaluation: Any, *, source: str = "evaluation") -> None:
    """Check required keys and types of an evaluation dict; ManifestError lists every problem."""
    problems: list[str] = []
    if not isinstance(evaluation, Mapping):
        raise ManifestError(f"{source} must be a JSON object; got {type(evaluation).__name__}")
    for key, kind in _TOP_LEVEL.items():
        if key not in evaluation:
            problems.append(f"missing key {key!r}")
        elif not isinstance(evaluation[key], kind) or isinstance(evaluation[key], bool):
            problems.append(f"{key!r} must be {_kind_name(kind)}; got {type(evaluation[key]).__name__}")
    if problems:
        raise ManifestError(f"{source} does not follow the evaluation schema: " + "; ".join(problems))

    if evaluation["schema_version"] != SCHEMA_VERSION:
        problems.append(f"schema_version is {evaluation['schema_version']}; this kit reads {SCHEMA_VERSION}")
    for key in ("version", "path"):
        if key not in evaluation["model"]:
            problems.append(f"model lacks {key!r}")
    protocol = evaluation.get("protocol")
    if protocol is not None and not (isinstance(protocol, Mapping) and {"follows", "reason", "moved"} <= set(protocol)):
        problems.append("protocol must be null or an object with follows, reason and moved")
    if evaluation["fakes"] not in ("split", "all"):
        problems.append(f"fakes must be 'split' or 'all'; got {evaluation['fakes']!r}")
    try:
        ScoringRule.from_model_config({"scoring": evaluation["scoring"]})
    except ConfigError as exc:
        problems.append(f"scoring: {exc}")
    point = evaluation["operating_point"]
    if point.get("method") not in OPERATING_POINT_METHODS:
        problems.append(f"operating_point.method must be one of {', '.join(OPERATING_POINT_METHODS)}; "
                        f"got {point.get('method')!r}")
    if point.get("threshold") != evaluation["threshold"]:
        problems.append(f"operating_point.threshold {point.get('threshold')!r} differs from threshold "
                        f"{evaluation['threshold']!r}")
    metrics = evaluation["metrics"]
    problems += [f"metrics lacks {k!r}" for k in REQUIRED_METRICS if k not in metrics]
    problems += [f"metrics.{k} must be a finite number or null; got {v!r}"
                 for k, v in metrics.items() if not _is_metric(v)]
    for name, m in evaluation["by_aggregation"].items():
        if not isinstance(m, Mapping):
            problems.append(f"by_aggregation.{name} must be an object")
            continue
        problems += [f"by_aggregation.{name}.{k} must be a finite number or null"
                     for k in METRIC_NAMES if not _is_metric(m.get(k, "missing"))]
    if evaluation["aggregation"] not in evaluation["by_aggregation"]:
        problems.append(f"by_aggregation lacks the headline aggregation {evaluation['aggregation']!r}")
    counts = evaluation["counts"]
    problems += [f"counts lacks {k!r}" for k in REQUIRED_COUNTS if k not in counts]
    problems += [f"counts.{k} must be an integer; got {v!r}" for k, v in counts.items()
                 if not isinstance(v, int) or isinstance(v, bool)]
    for i, row in enumerate(evaluation["unscored_videos"]):
        if not isinstance(row, Mapping) or not {"video_id", "status", "reason"} <= set(row):
            problems.append(f"unscored_videos[{i}] must have video_id, status and reason")
    for i, row in enumerate(evaluation["per_manipulation"]):
        if not isinstance(row, Mapping) or not {"manipulation", "n_videos", "seen_in_training", "accuracy",
                                                "auc"} <= set(row):
            problems.append(f"per_manipulation[{i}] must have manipulation, n_videos, seen_in_training, "
                            "accuracy and auc")
        elif not (_is_metric(row["accuracy"]) and _is_metric(row["auc"])):
            problems.append(f"per_manipulation[{i}] accuracy and auc must be finite numbers or null")
        elif row["seen_in_training"] not in (True, False, None):
            problems.append(f"per_manipulation[{i}].seen_in_training must be true, false or null")
    for name, entry in evaluation["binary_classification_metrics"].items():
        if name in ("confusion_matrix", "receiver_operating_characteristic_curve", "precision_recall_curve"):
            continue
        if not isinstance(entry, Mapping) or not _is_metric(entry.get("value")) or entry.get("value") is None:
            problems.append(f"binary_classification_metrics.{name} must be {{'value': number, ...}}")
    if problems:
        raise ManifestError(f"{source} does not follow the evaluation schema: " + "; ".join(problems))


def evaluated_on(evaluation: Mapping[str, Any]) -> str:
    """What an evaluation's metrics were measured on, in words (run summaries, MLflow tags)."""
    split = str(evaluation.get("split", "test"))
    if split == ALL_SPLITS:
        return "every video"
    fakes = " + the fakes of every split" if evaluation.get("fakes") == "all" else ""
    return f"{split} split{fakes}"


def _is_metric(value: Any) -> bool:
    if value is None:
        return True
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)
