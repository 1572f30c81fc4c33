"""Scoring the test split and writing ``evaluation.json``.

Faces are scored one crop at a time in batches, a frame takes the score of
its most fake-looking face (one manipulated face is enough to make a frame
fake), and a video combines its frames with each registered aggregation
strategy; the configured one is the headline. Videos that failed to decode or
had no face are counted and listed with their reason, and never scored.

The schema of ``evaluation.json`` is documented in ``docs/evaluation-schema.md``
and checked by :func:`validate_evaluation`; ``metrics`` holds flat floats (or
null) because the SageMaker quality gate reads ``metrics.video_auc`` with JsonGet.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from deepfake import __version__, paths
from deepfake.aggregate import STRATEGIES, aggregate, aggregate_frames, available, get_strategy
from deepfake.config import StageConfig
from deepfake.dataset import read_rgb
from deepfake.errors import ConfigError, DataError, ManifestError, ModelError
from deepfake.manifest import read_json, write_json, write_manifest
from deepfake.metrics import (
    ECE_BINS,
    binary_metrics,
    confusion_matrix,
    precision_recall_curve,
    predicted_labels,
    roc_auc,
    roc_curve,
)

SCHEMA_VERSION = 1

# Metrics of binary_metrics() copied, prefixed video_/frame_, into evaluation.json["metrics"].
METRIC_NAMES = ("auc", "log_loss", "accuracy", "eer", "ap", "ece", "precision", "recall", "f1")

# Columns of faces.csv the evaluation needs (abs_path only on face rows; read_faces adds it).
FACES_COLUMNS = ("video_id", "label", "manipulation", "split", "frame_idx", "face_idx", "status")
# Identity columns carried from faces.csv into the prediction tables when present.
ID_COLUMNS = ("video_id", "frame_idx", "face_idx", "label", "manipulation", "original_id", "split", "path")

ALL_SPLITS = "all"          # EvalConfig.split value that evaluates every row regardless of split


@dataclass(frozen=True)
class EvalConfig(StageConfig):
    aggregation: str = "mean"       # headline frame -> video strategy (deepfake.aggregate.STRATEGIES)
    threshold: float = 0.5          # p_fake at or above it is called fake (accuracy, precision, confusion matrix)
    batch_size: int = 64            # face crops per model call; 64 crops of 224 px are ~40 MB of float32
    split: str = "test"             # split to evaluate; "all" evaluates every row
    n_worst: int = 12               # most confidently wrong videos listed in evaluation.json (and the gallery)
    ece_bins: int = ECE_BINS        # equal-width p_fake bins of the expected calibration error

    def __post_init__(self) -> None:
        if self.aggregation not in STRATEGIES:
            raise ConfigError(f"aggregation={self.aggregation!r} is unknown; available: {', '.join(available())}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"threshold={self.threshold!r} must lie in [0, 1]")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size={self.batch_size!r} must be at least 1")
        if self.n_worst < 0:
            raise ConfigError(f"n_worst={self.n_worst!r} must be 0 or more")
        if self.ece_bins < 1:
            raise ConfigError(f"ece_bins={self.ece_bins!r} must be at least 1")
        if not self.split:
            raise ConfigError("split must name a split (train, val, test) or be 'all'")


class CropScorer(Protocol):
    """What evaluation needs of ``deepfake.model.LoadedModel``."""

    def predict_crops(self, crops: Sequence[np.ndarray]) -> np.ndarray: ...


# -- scoring -------------------------------------------------------------------------------------

def score_faces(loaded: CropScorer, faces_df: pd.DataFrame, batch_size: int = 64) -> pd.DataFrame:
    """One row per face crop with ``p_fake``: the raw predictions every other table derives from.

    Only rows with ``status == "ok"`` are scored; crops are read from ``abs_path``.
    Columns: ``video_id, frame_idx, face_idx, label, manipulation`` (then
    ``original_id, split, path`` when present) and ``p_fake``.
    """
    if int(batch_size) < 1:
        raise ConfigError(f"batch_size={batch_size!r} must be at least 1")
    batch_size = int(batch_size)
    faces = faces_df
    if "status" in faces.columns:
        faces = faces[faces["status"].astype(str) == "ok"]
    _require(faces, ("video_id", "frame_idx", "face_idx", "label", "manipulation", "abs_path"),
             hint="read faces with deepfake.extract.read_faces, which adds abs_path")
    crop_paths = faces["abs_path"].astype(str).tolist()
    scores: list[np.ndarray] = []
    for start in range(0, len(crop_paths), batch_size):
        crops = [read_rgb(p) for p in crop_paths[start:start + batch_size]]
        out = np.asarray(loaded.predict_crops(crops), dtype=float).reshape(-1)
        if out.size != len(crops):
            raise ModelError(f"the model returned {out.size} scores for {len(crops)} crops; "
                             "predict_crops must return one fake probability per crop")
        scores.append(out)
    p = np.concatenate(scores) if scores else np.zeros(0)
    if p.size and (not np.isfinite(p).all() or p.min() < 0.0 or p.max() > 1.0):
        raise ModelError(f"the model returned scores outside [0, 1] (range {np.nanmin(p):g} to "
                         f"{np.nanmax(p):g}); predict_crops must return probabilities")
    out_df = faces[[c for c in ID_COLUMNS if c in faces.columns]].reset_index(drop=True).copy()
    out_df["label"] = out_df["label"].astype(int)
    out_df["p_fake"] = p
    return out_df


def frame_predictions(face_preds: pd.DataFrame) -> pd.DataFrame:
    """One row per frame: the score of its most fake-looking face (``face_idx`` names it) and ``n_faces``."""
    keys = ["video_id", "frame_idx"]
    ordered = face_preds.sort_values([*keys, "p_fake"], ascending=[True, True, False], kind="mergesort")
    frames = ordered.drop_duplicates(keys, keep="first").reset_index(drop=True)
    n_faces = face_preds.groupby(keys, sort=False).size().rename("n_faces").reset_index()
    frames = frames.merge(n_faces, on=keys, how="left")
    cols = [c for c in frames.columns if c not in ("n_faces", "p_fake")]
    return frames[[*cols, "n_faces", "p_fake"]]


def video_predictions(frames: pd.DataFrame, aggregation: str = "mean", threshold: float = 0.5) -> pd.DataFrame:
    """One row per video: ``p_fake`` by ``aggregation``, ``p_fake_<strategy>`` for every strategy,
    and ``predicted`` (1 = fake at ``threshold``)."""
    get_strategy(aggregation)
    videos = aggregate_frames(frames, aggregation)
    by_video = dict(tuple(frames.groupby("video_id", sort=True)["p_fake"]))
    for name in available():
        videos[f"p_fake_{name}"] = [aggregate(by_video[v].to_numpy(), name) for v in videos["video_id"]]
    videos["predicted"] = predicted_labels(videos["p_fake"].to_numpy(), threshold)
    return videos


# -- report pieces ----------------------------------------------------------------------------------

def unscored_videos(faces_df: pd.DataFrame) -> list[dict[str, Any]]:
    """Videos with no face row (``status != ok`` only): ``video_id, status, reason``, sorted by id."""
    status = faces_df["status"].astype(str)
    scored = set(faces_df.loc[status == "ok", "video_id"])
    rest = faces_df[(status != "ok") & ~faces_df["video_id"].isin(scored)]
    out = []
    for video_id, group in rest.groupby("video_id", sort=True):
        reason = group["reason"].iloc[0] if "reason" in group.columns else None
        out.append({
            "video_id": str(video_id),
            "status": str(group["status"].iloc[0]),
            "reason": "" if reason is None or (isinstance(reason, float) and math.isnan(reason)) else str(reason),
        })
    return out


def per_manipulation(videos: pd.DataFrame, threshold: float = 0.5) -> list[dict[str, Any]]:
    """Per manipulation: video count, accuracy and AUC of its fakes against all reals of the split."""
    reals = videos[videos["label"] == 0]
    rows = []
    for (label, manipulation), group in videos.groupby(["label", "manipulation"], sort=True):
        undefined: dict[str, str] = {}
        auc = None
        if int(label) == 0:
            undefined["auc"] = "real videos: a manipulation's AUC is measured against them"
        elif reals.empty:
            undefined["auc"] = "no real video in the split to measure this manipulation against"
        else:
            both = pd.concat([reals, group])
            auc = roc_auc(both["label"].to_numpy(), both["p_fake"].to_numpy())
        p = group["p_fake"].to_numpy()
        rows.append({
            "manipulation": str(manipulation),
            "label": int(label),
            "n_videos": int(len(group)),
            "accuracy": float(np.mean(predicted_labels(p, threshold) == int(label))),
            "auc": auc,
            "mean_p_fake": float(np.mean(p)),
            "undefined": undefined,
        })
    return rows


def worst_errors(videos: pd.DataFrame, n: int = 12) -> pd.DataFrame:
    """The ``n`` misclassified videos with the largest ``|p_fake - label|``, worst first."""
    wrong = videos[videos["predicted"] != videos["label"]].copy()
    wrong["error"] = (wrong["p_fake"] - wrong["label"]).abs()
    return wrong.sort_values(["error", "video_id"], ascending=[False, True]).head(n).reset_index(drop=True)


def sagemaker_model_quality(y_true: Any, p_fake: Any, threshold: float = 0.5) -> dict[str, Any]:
    """``binary_classification_metrics`` in the SageMaker Model Monitor model-quality format.

    ``ModelMetrics(model_statistics=MetricsSource(...))`` shows it in SageMaker
    Studio. Standard deviations are the string ``"NaN"`` (Model Monitor's value
    below 200 samples); a metric undefined for the data is left out.
    """
    y = np.asarray(y_true, dtype=int)
    p = np.asarray(p_fake, dtype=float)
    (tn, fp), (fn, tp) = confusion_matrix(y, p, threshold).tolist()
    m = binary_metrics(y, p, threshold)
    values: dict[str, float | None] = {
        "accuracy": m["accuracy"],
        "precision": m["precision"],
        "recall": m["recall"],
        "f1": m["f1"],
        "auc": m["auc"],
        "true_positive_rate": m["recall"],
        "false_negative_rate": None if m["recall"] is None else fn / (tp + fn),
        "true_negative_rate": tn / (tn + fp) if tn + fp else None,
        "false_positive_rate": fp / (tn + fp) if tn + fp else None,
    }
    out: dict[str, Any] = {
        # Model Monitor layout: outer key the true label, inner key the predicted label.
        "confusion_matrix": {"0": {"0": tn, "1": fp}, "1": {"0": fn, "1": tp}},
    }
    out.update({k: {"value": float(v), "standard_deviation": "NaN"} for k, v in values.items() if v is not None})
    if m["auc"] is not None:
        fpr, tpr, _ = roc_curve(y, p)
        out["receiver_operating_characteristic_curve"] = {
            "false_positive_rates": fpr.tolist(), "true_positive_rates": tpr.tolist()}
    if m["n_fake"]:
        precision, recall, _ = precision_recall_curve(y, p)
        out["precision_recall_curve"] = {"precisions": precision.tolist(), "recalls": recall.tolist()}
    return out


# -- the stage --------------------------------------------------------------------------------------

def select_split(faces_df: pd.DataFrame, split: str) -> pd.DataFrame:
    if split == ALL_SPLITS:
        return faces_df
    rows = faces_df[faces_df["split"].astype(str) == split]
    if rows.empty:
        have = sorted(map(str, faces_df["split"].unique()))
        raise DataError(f"no row of the faces table is in split {split!r}; splits present: "
                        f"{', '.join(have) or 'none'}; set split to one of them or 'all'")
    return rows


def evaluate(loaded: CropScorer, faces_df: pd.DataFrame, out_dir: str | os.PathLike[str],
             config: EvalConfig | None = None, *, model_path: str | os.PathLike[str] | None = None
             ) -> dict[str, Any]:
    """Score one split, write the prediction tables and ``evaluation.json``; returns the evaluation.

    ``loaded`` is a ``deepfake.model.LoadedModel``; ``faces_df`` comes from
    ``deepfake.extract.read_faces``. ``model_path`` defaults to ``loaded.path`` when it has one.
    """
    config = config or EvalConfig()
    _require(faces_df, FACES_COLUMNS, hint="pass the table of deepfake.extract.read_faces")
    split_df = select_split(faces_df, config.split)
    unlabeled = split_df.loc[~split_df["label"].isin([0, 1]), "video_id"].unique()
    if len(unlabeled):
        raise DataError(f"{len(unlabeled)} video(s) of split {config.split!r} have no 0/1 label "
                        f"(e.g. {', '.join(map(str, unlabeled[:3]))}); evaluation needs the true label of every video")
    unscored = unscored_videos(split_df)
    ok = split_df[split_df["status"].astype(str) == "ok"]
    if ok.empty:
        raise DataError(f"no video of split {config.split!r} has a face to score "
                        f"({len(unscored)} video(s) failed or had no face); check the extraction report")

    faces = score_faces(loaded, ok, config.batch_size)
    frames = frame_predictions(faces)
    videos = video_predictions(frames, config.aggregation, config.threshold)

    frame_m = binary_metrics(frames["label"], frames["p_fake"], config.threshold, config.ece_bins)
    by_aggregation = {
        name: binary_metrics(videos["label"], videos[f"p_fake_{name}"], config.threshold, config.ece_bins)
        for name in available()
    }
    video_m = by_aggregation[config.aggregation]
    metrics = {f"{level}_{k}": m[k] for level, m in (("video", video_m), ("frame", frame_m)) for k in METRIC_NAMES}
    undefined = {f"{level}_{k}": why for level, m in (("video", video_m), ("frame", frame_m))
                 for k, why in m["undefined"].items() if k in METRIC_NAMES}
    worst = worst_errors(videos, config.n_worst)
    statuses = [u["status"] for u in unscored]
    n_real = int((videos["label"] == 0).sum())

    evaluation: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "kit_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": {"version": _version(loaded), "path": _model_path(loaded, model_path)},
        "split": config.split,
        "aggregation": config.aggregation,
        "threshold": float(config.threshold),
        "config": config.to_dict(),
        "metrics": metrics,
        "undefined_metrics": undefined,
        "by_aggregation": by_aggregation,
        "per_manipulation": per_manipulation(videos, config.threshold),
        "counts": {
            "videos_total": int(split_df["video_id"].nunique()),
            "videos_scored": int(len(videos)),
            "videos_unscored": len(unscored),
            "videos_failed": statuses.count("decode_error"),
            "videos_no_face": statuses.count("no_face"),
            "videos_other_status": sum(1 for s in statuses if s not in ("decode_error", "no_face")),
            "real_videos": n_real,
            "fake_videos": int(len(videos) - n_real),
            "frames_scored": int(len(frames)),
            "faces_scored": int(len(faces)),
        },
        "unscored_videos": unscored,
        "worst_errors": [
            {"video_id": str(r.video_id), "label": int(r.label), "manipulation": str(r.manipulation),
             "p_fake": float(r.p_fake)} for r in worst.itertuples(index=False)
        ],
        "binary_classification_metrics": sagemaker_model_quality(
            videos["label"], videos["p_fake"], config.threshold),
    }
    evaluation = _finite(evaluation)
    validate_evaluation(evaluation)

    out = paths.ensure_dir(out_dir)
    extra = {"model_version": evaluation["model"]["version"], "split": config.split}
    write_manifest(frames, out / paths.FRAME_PREDICTIONS, config=config.to_dict(), extra=extra)
    write_manifest(videos, out / paths.VIDEO_PREDICTIONS, config=config.to_dict(), extra=extra)
    write_json(out / paths.EVALUATION, evaluation)
    return evaluation


def read_evaluation(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate an ``evaluation.json`` (a file, or the folder that holds it)."""
    p = Path(path)
    if p.is_dir():
        p = p / paths.EVALUATION
    evaluation = read_json(p)
    validate_evaluation(evaluation, source=str(p))
    return evaluation


# -- schema ------------------------------------------------------------------------------------------

_TOP_LEVEL: dict[str, type | tuple[type, ...]] = {
    "schema_version": int,
    "model": dict,
    "split": str,
    "aggregation": str,
    "threshold": (int, float),
    "metrics": dict,
    "undefined_metrics": dict,
    "by_aggregation": dict,
    "per_manipulation": list,
    "counts": dict,
    "unscored_videos": list,
    "worst_errors": list,
    "binary_classification_metrics": dict,
}
REQUIRED_METRICS = tuple(f"{level}_{k}" for level in ("video", "frame") for k in METRIC_NAMES)
REQUIRED_COUNTS = ("videos_total", "videos_scored", "videos_unscored", "videos_failed", "videos_no_face",
                   "frames_scored", "faces_scored")


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
        if not isinstance(row, Mapping) or not {"manipulation", "n_videos", "accuracy", "auc"} <= set(row):
            problems.append(f"per_manipulation[{i}] must have manipulation, n_videos, accuracy and auc")
        elif not (_is_metric(row["accuracy"]) and _is_metric(row["auc"])):
            problems.append(f"per_manipulation[{i}] accuracy and auc must be finite numbers or null")
    for name, entry in evaluation["binary_classification_metrics"].items():
        if name in ("confusion_matrix", "receiver_operating_characteristic_curve", "precision_recall_curve"):
            continue
        if not isinstance(entry, Mapping) or not _is_metric(entry.get("value")) or entry.get("value") is None:
            problems.append(f"binary_classification_metrics.{name} must be {{'value': number, ...}}")
    if problems:
        raise ManifestError(f"{source} does not follow the evaluation schema: " + "; ".join(problems))


# -- helpers -----------------------------------------------------------------------------------------

def _require(df: pd.DataFrame, columns: Sequence[str], *, hint: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ManifestError(f"the faces table lacks column(s) {', '.join(missing)}; "
                            f"has {', '.join(map(str, df.columns))}; {hint}")


def _is_metric(value: Any) -> bool:
    if value is None:
        return True
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)


def _finite(obj: Any) -> Any:
    """JSON-ready copy: numpy scalars to Python, NaN and infinities to None (JSON has no NaN)."""
    if isinstance(obj, Mapping):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _version(loaded: Any) -> str | None:
    version = getattr(loaded, "version", None)
    return None if version is None else str(version)


def _model_path(loaded: Any, model_path: str | os.PathLike[str] | None) -> str | None:
    path = model_path if model_path is not None else getattr(loaded, "path", None)
    return None if path is None else str(path)
