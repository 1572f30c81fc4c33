"""Scoring the test split and writing ``evaluation.json``.

Faces get the model's logits in batches, and the model's own
:class:`~deepfake.scoring.ScoringRule` (the one every serving path uses) turns
them into frame and video scores, with the aggregation and threshold of the
:class:`EvalConfig`; every other aggregation strategy is reported beside it.
The rule that was evaluated is written back into a copy of the model
(:func:`write_gated_model`), so the model that is registered and served scores
exactly as it was gated. Videos that failed to decode or had no face are
counted and listed with their reason, and never scored.

Each manipulation is marked seen or unseen in training (from the artifact's
``training`` record) and ``unseen_video_auc`` measures reals against the
manipulations the model never saw: the number that says whether it generalises.

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
from deepfake.aggregate import STRATEGIES, available
from deepfake.config import StageConfig
from deepfake.dataset import read_rgb
from deepfake.errors import ConfigError, DataError, ManifestError, ModelError
from deepfake.manifest import read_json, write_json, write_manifest
from deepfake.metrics import (
    ECE_BINS,
    binary_metrics,
    confusion_matrix,
    expected_calibration_error,
    precision_recall_curve,
    predicted_labels,
    roc_auc,
    roc_curve,
)
from deepfake.scoring import ScoringRule

SCHEMA_VERSION = 2           # 2: scoring rule, training record, seen/unseen manipulations, calibration

# Metrics of binary_metrics() copied, prefixed video_/frame_, into evaluation.json["metrics"].
METRIC_NAMES = ("auc", "log_loss", "accuracy", "eer", "ap", "ece", "precision", "recall", "f1")

# Columns of faces.csv the evaluation needs (abs_path only on face rows; read_faces adds it).
FACES_COLUMNS = ("video_id", "label", "manipulation", "split", "frame_idx", "face_idx", "status")
# Columns carried from the frame table to the video table when present.
VIDEO_COLUMNS = ("video_id", "label", "manipulation", "original_id", "split")
# Identity columns carried from faces.csv into the prediction tables when present.
ID_COLUMNS = ("video_id", "frame_idx", "face_idx", "label", "manipulation", "original_id", "split", "path")

ALL_SPLITS = "all"          # EvalConfig.split value that evaluates every row regardless of split
FAKES_CHOICES = ("auto", "split", "all")   # which fakes an evaluation scores (EvalConfig.fakes)


@dataclass(frozen=True)
class EvalConfig(StageConfig):
    aggregation: str = "mean"       # headline frame -> video strategy (deepfake.aggregate.STRATEGIES)
    threshold: float = 0.5          # p_fake at or above it is called fake (accuracy, precision, confusion matrix)
    batch_size: int = 64            # face crops per model call; 64 crops of 224 px are ~40 MB of float32
    split: str = "test"             # split to evaluate; "all" evaluates every row
    n_worst: int = 12               # most confidently wrong videos listed in evaluation.json (and the gallery)
    ece_bins: int = ECE_BINS        # equal-width p_fake bins of the expected calibration error
    fakes: str = "auto"             # "split": the split's fakes; "all": every fake (the model trained on none);
                                    # "auto": all when the model saw no fake of the dataset (self_blend), else split

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
        if self.fakes not in FAKES_CHOICES:
            raise ConfigError(f"fakes={self.fakes!r} is unknown; use one of {', '.join(FAKES_CHOICES)}")


class CropScorer(Protocol):
    """What evaluation needs of ``deepfake.model.LoadedModel``."""

    def predict_logits(self, crops: Sequence[np.ndarray]) -> np.ndarray: ...


# -- scoring -------------------------------------------------------------------------------------

def score_faces(loaded: CropScorer, faces_df: pd.DataFrame, rule: ScoringRule, batch_size: int = 64) -> pd.DataFrame:
    """One row per face crop with the model's ``logit`` and the rule's calibrated ``p_fake``.

    Only rows with ``status == "ok"`` are scored; crops are read from ``abs_path``.
    Columns: ``video_id, frame_idx, face_idx, label, manipulation`` (then
    ``original_id, split, path`` when present), ``logit`` and ``p_fake``.
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
    logits: list[np.ndarray] = []
    for start in range(0, len(crop_paths), batch_size):
        crops = [read_rgb(p) for p in crop_paths[start:start + batch_size]]
        out = np.asarray(loaded.predict_logits(crops), dtype=np.float32).reshape(-1)
        if out.size != len(crops):
            raise ModelError(f"the model returned {out.size} scores for {len(crops)} crops; "
                             "predict_logits must return one logit per crop")
        logits.append(out)
    z = np.concatenate(logits) if logits else np.zeros(0, dtype=np.float32)
    if z.size and not np.isfinite(z).all():
        raise ModelError(f"the model returned {int((~np.isfinite(z)).sum())} non-finite logits; "
                         "it cannot score these crops")
    out_df = faces[[c for c in ID_COLUMNS if c in faces.columns]].reset_index(drop=True).copy()
    out_df["label"] = out_df["label"].astype(int)
    out_df["logit"] = z
    out_df["p_fake"] = rule.face_probabilities(z)
    return out_df


def frame_predictions(face_preds: pd.DataFrame, rule: ScoringRule) -> pd.DataFrame:
    """One row per frame: the rule's frame score (its most fake face, ``face_idx`` names it) and ``n_faces``."""
    rows = []
    for _video_id, group in face_preds.groupby("video_id", sort=True):
        frames = rule.frames(group["frame_idx"].to_numpy(), group["p_fake"].to_numpy())
        best = group.iloc[frames.best_face].copy()
        best["n_faces"] = frames.n_faces
        best["p_fake"] = frames.p_fake
        rows.append(best)
    if not rows:
        return face_preds.iloc[0:0].assign(n_faces=pd.Series(dtype="int64"))
    frames_df = pd.concat(rows, ignore_index=True)
    cols = [c for c in frames_df.columns if c not in ("n_faces", "p_fake", "logit")]
    return frames_df[[*cols, "n_faces", "p_fake"]]


def video_predictions(frames: pd.DataFrame, rule: ScoringRule) -> pd.DataFrame:
    """One row per video: ``p_fake`` by the rule, ``p_fake_<strategy>`` for every strategy,
    and ``predicted`` (1 = fake at the rule's threshold)."""
    keep = [c for c in VIDEO_COLUMNS if c in frames.columns]
    rows = []
    for video_id, group in frames.groupby("video_id", sort=True):
        if "label" in group and group["label"].nunique() > 1:
            raise DataError(f"video {video_id!r} has frames with different labels "
                            f"{sorted(group['label'].unique().tolist())}; a video has one label")
        p = group["p_fake"].to_numpy()
        row = {c: group[c].iloc[0] for c in keep}
        row["n_frames"] = int(len(group))
        row["p_fake"] = rule.video_probability(p)
        for name in available():
            row[f"p_fake_{name}"] = rule.with_(aggregation=name).video_probability(p)
        rows.append(row)
    videos = pd.DataFrame(rows, columns=[*keep, "n_frames", "p_fake", *(f"p_fake_{n}" for n in available())])
    videos["predicted"] = rule.is_fake(videos["p_fake"].to_numpy()).astype(int)
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


def per_manipulation(videos: pd.DataFrame, threshold: float = 0.5,
                     seen: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Per manipulation: video count, accuracy, AUC of its fakes against all reals evaluated,
    and whether the model saw it in training (``seen``: the manipulations it trained on; None = unknown)."""
    reals = videos[videos["label"] == 0]
    rows = []
    for (label, manipulation), group in videos.groupby(["label", "manipulation"], sort=True):
        note = ""
        auc = None
        if int(label) == 0:
            note = "real videos: each manipulation's AUC is measured against them"
        elif reals.empty:
            note = "no real video evaluated to measure this manipulation against"
        else:
            both = pd.concat([reals, group])
            auc = roc_auc(both["label"].to_numpy(), both["p_fake"].to_numpy())
        p = group["p_fake"].to_numpy()
        rows.append({
            "manipulation": str(manipulation),
            "label": int(label),
            "n_videos": int(len(group)),
            "seen_in_training": None if int(label) == 0 or seen is None else str(manipulation) in seen,
            "accuracy": float(np.mean(predicted_labels(p, threshold) == int(label))),
            "auc": auc,
            "mean_p_fake": float(np.mean(p)),
            "note": note,
        })
    return rows


def generalisation_metrics(videos: pd.DataFrame, seen: Sequence[str] | None
                           ) -> tuple[dict[str, float | None], dict[str, str]]:
    """``unseen_video_auc`` (reals against every manipulation the model never trained on) and
    ``seen_video_auc`` (against the ones it did), with the reason where one is undefined."""
    reals = videos[videos["label"] == 0]
    fakes = videos[videos["label"] == 1]
    metrics: dict[str, float | None] = {}
    undefined: dict[str, str] = {}
    for name, unseen in (("unseen_video_auc", True), ("seen_video_auc", False)):
        if seen is None:
            metrics[name] = None
            undefined[name] = "the model does not record which manipulations it trained on"
            continue
        part = fakes[~fakes["manipulation"].isin(list(seen))] if unseen else fakes[fakes["manipulation"].isin(list(seen))]
        if part.empty or reals.empty:
            metrics[name] = None
            what = "unseen" if unseen else "seen"
            undefined[name] = (f"no fake of a manipulation {what} in training was evaluated" if part.empty
                               else "no real video was evaluated")
            continue
        both = pd.concat([reals, part])
        metrics[name] = roc_auc(both["label"].to_numpy(), both["p_fake"].to_numpy())
    return metrics, undefined


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


def training_record(loaded: Any) -> dict[str, Any] | None:
    """What the model's artifact says it trained on (``config.json["training"]``), None when it does not say."""
    record = (getattr(loaded, "config", None) or {}).get("training")
    return dict(record) if isinstance(record, Mapping) else None


def fakes_source(config: EvalConfig, training: Mapping[str, Any] | None) -> str:
    """``split`` or ``all``: where the evaluated fakes come from (resolves ``fakes="auto"``)."""
    saw_fakes = None if training is None else bool(training.get("manipulations_seen"))
    if config.fakes == "all" and saw_fakes is not False:
        why = ("it trained on fakes of this kind of data" if saw_fakes
               else "it does not record which fakes it trained on")
        raise ConfigError(f"fakes='all' scores the fakes of every split, but {why}: its training fakes would be "
                          "scored as if unseen; use fakes='split'")
    if config.fakes == "auto":
        return "all" if saw_fakes is False and config.split != ALL_SPLITS else "split"
    return config.fakes


def select_rows(faces_df: pd.DataFrame, config: EvalConfig, fakes: str) -> pd.DataFrame:
    """The rows evaluated: the split's (or every) row, plus every other fake when ``fakes == "all"``."""
    rows = select_split(faces_df, config.split)
    if fakes == "all" and config.split != ALL_SPLITS:
        others = faces_df[(faces_df["split"].astype(str) != config.split) & (faces_df["label"] == 1)]
        rows = pd.concat([rows, others])
    unlabeled = rows.loc[~rows["label"].isin([0, 1]), "video_id"].unique()
    if len(unlabeled):
        raise DataError(f"{len(unlabeled)} video(s) of split {config.split!r} have no 0/1 label "
                        f"(e.g. {', '.join(map(str, unlabeled[:3]))}); evaluation needs the true label of every video")
    return rows


def evaluation_rule(loaded: Any, config: EvalConfig) -> ScoringRule:
    """The model's rule (its calibration temperature) with the evaluation's aggregation and threshold."""
    base = ScoringRule.from_model_config(getattr(loaded, "config", None) or {})
    return base.with_(aggregation=config.aggregation, threshold=config.threshold)


def evaluate(loaded: CropScorer, faces_df: pd.DataFrame, out_dir: str | os.PathLike[str],
             config: EvalConfig | None = None, *, model_path: str | os.PathLike[str] | None = None
             ) -> dict[str, Any]:
    """Score the selected videos, write the prediction tables and ``evaluation.json``; returns the evaluation.

    ``loaded`` is a ``deepfake.model.LoadedModel``; ``faces_df`` comes from
    ``deepfake.extract.read_faces``. ``model_path`` defaults to ``loaded.path`` when it has one.
    """
    config = config or EvalConfig()
    _require(faces_df, FACES_COLUMNS, hint="pass the table of deepfake.extract.read_faces")
    training = training_record(loaded)
    fakes = fakes_source(config, training)
    rows = select_rows(faces_df, config, fakes)
    unscored = unscored_videos(rows)
    ok = rows[rows["status"].astype(str) == "ok"]
    if ok.empty:
        raise DataError(f"no video of split {config.split!r} has a face to score "
                        f"({len(unscored)} video(s) failed or had no face); check the extraction report")
    rule = evaluation_rule(loaded, config)
    faces = score_faces(loaded, ok, rule, config.batch_size)
    frames = frame_predictions(faces, rule)
    videos = video_predictions(frames, rule)
    seen = None if training is None else list(training.get("manipulations_seen") or [])
    metrics, undefined, by_aggregation = _metrics(faces, frames, videos, rule, config, seen)
    evaluation: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "kit_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": {"version": _version(loaded), "path": _model_path(loaded, model_path)},
        "split": config.split,
        "fakes": fakes,
        "aggregation": config.aggregation,
        "threshold": float(config.threshold),
        "scoring": rule.to_dict(),
        "training": training,
        "config": config.to_dict(),
        "metrics": metrics,
        "undefined_metrics": undefined,
        "by_aggregation": by_aggregation,
        "per_manipulation": per_manipulation(videos, config.threshold, seen),
        "counts": _counts(rows, faces, frames, videos, unscored),
        "unscored_videos": unscored,
        "worst_errors": [
            {"video_id": str(r.video_id), "label": int(r.label), "manipulation": str(r.manipulation),
             "p_fake": float(r.p_fake)} for r in worst_errors(videos, config.n_worst).itertuples(index=False)
        ],
        "binary_classification_metrics": sagemaker_model_quality(
            videos["label"], videos["p_fake"], config.threshold),
    }
    evaluation = _finite(evaluation)
    validate_evaluation(evaluation)
    _write(out_dir, frames, videos, evaluation, config)
    return evaluation


def _metrics(faces: pd.DataFrame, frames: pd.DataFrame, videos: pd.DataFrame, rule: ScoringRule,
             config: EvalConfig, seen: Sequence[str] | None
             ) -> tuple[dict[str, Any], dict[str, str], dict[str, dict[str, Any]]]:
    """Headline metrics (video and frame level, calibration before and after, generalisation) and
    the video metrics of every aggregation strategy."""
    frame_m = binary_metrics(frames["label"], frames["p_fake"], config.threshold, config.ece_bins)
    by_aggregation = {
        name: binary_metrics(videos["label"], videos[f"p_fake_{name}"], config.threshold, config.ece_bins)
        for name in available()
    }
    video_m = by_aggregation[config.aggregation]
    metrics = {f"{level}_{k}": m[k] for level, m in (("video", video_m), ("frame", frame_m)) for k in METRIC_NAMES}
    undefined = {f"{level}_{k}": why for level, m in (("video", video_m), ("frame", frame_m))
                 for k, why in m["undefined"].items() if k in METRIC_NAMES}
    raw = rule.with_(temperature=1.0)                           # the same faces, uncalibrated
    raw_frames = frame_predictions(faces.assign(p_fake=raw.face_probabilities(faces["logit"])), raw)
    raw_videos = video_predictions(raw_frames, raw)
    metrics["video_ece_uncalibrated"] = expected_calibration_error(raw_videos["label"], raw_videos["p_fake"],
                                                                   config.ece_bins)
    metrics["frame_ece_uncalibrated"] = expected_calibration_error(raw_frames["label"], raw_frames["p_fake"],
                                                                   config.ece_bins)
    reals = videos[videos["label"] == 0]
    metrics["video_false_positive_rate"] = float(reals["predicted"].mean()) if len(reals) else None
    if not len(reals):
        undefined["video_false_positive_rate"] = "no real video was evaluated"
    general, why = generalisation_metrics(videos, seen)
    metrics.update(general)
    undefined.update(why)
    return metrics, undefined, by_aggregation


def _counts(rows: pd.DataFrame, faces: pd.DataFrame, frames: pd.DataFrame, videos: pd.DataFrame,
            unscored: list[dict[str, Any]]) -> dict[str, int]:
    statuses = [u["status"] for u in unscored]
    n_real = int((videos["label"] == 0).sum())
    return {
        "videos_total": int(rows["video_id"].nunique()),
        "videos_scored": int(len(videos)),
        "videos_unscored": len(unscored),
        "videos_failed": statuses.count("decode_error"),
        "videos_no_face": statuses.count("no_face"),
        "videos_other_status": sum(1 for s in statuses if s not in ("decode_error", "no_face")),
        "real_videos": n_real,
        "fake_videos": int(len(videos) - n_real),
        "frames_scored": int(len(frames)),
        "faces_scored": int(len(faces)),
    }


def _write(out_dir: str | os.PathLike[str], frames: pd.DataFrame, videos: pd.DataFrame,
           evaluation: dict[str, Any], config: EvalConfig) -> None:
    out = paths.ensure_dir(out_dir)
    extra = {"model_version": evaluation["model"]["version"], "split": config.split, "fakes": evaluation["fakes"],
             "scoring": evaluation["scoring"]}
    write_manifest(frames, out / paths.FRAME_PREDICTIONS, config=config.to_dict(), extra=extra)
    write_manifest(videos, out / paths.VIDEO_PREDICTIONS, config=config.to_dict(), extra=extra)
    write_json(out / paths.EVALUATION, evaluation)


def write_gated_model(model_path: str | os.PathLike[str], evaluation: Mapping[str, Any],
                      out_dir: str | os.PathLike[str]) -> Path:
    """A copy of the evaluated model whose scoring rule is the one this evaluation measured.

    Same weights; ``config.json`` gets ``scoring`` (temperature, aggregation,
    threshold) and the headline metrics. This copy is what the quality gate
    registers and the endpoint serves. Returns the new model folder.
    """
    from deepfake.model import update_artifact

    metrics = {k: v for k, v in evaluation["metrics"].items() if v is not None}
    return update_artifact(model_path, out_dir, {
        "scoring": dict(evaluation["scoring"]),
        "metrics": metrics,
        "evaluation": {"split": evaluation["split"], "fakes": evaluation["fakes"],
                       "counts": dict(evaluation["counts"]), "created": evaluation["created"]},
    })


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
    "fakes": str,
    "aggregation": str,
    "threshold": (int, float),
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
                 "unseen_video_auc", "seen_video_auc")
REQUIRED_METRICS = (*(f"{level}_{k}" for level in ("video", "frame") for k in METRIC_NAMES), *EXTRA_METRICS)
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
    if evaluation["fakes"] not in ("split", "all"):
        problems.append(f"fakes must be 'split' or 'all'; got {evaluation['fakes']!r}")
    try:
        ScoringRule.from_model_config({"scoring": evaluation["scoring"]})
    except ConfigError as exc:
        problems.append(f"scoring: {exc}")
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
