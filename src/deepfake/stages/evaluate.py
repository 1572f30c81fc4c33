"""Scoring the test split and writing ``evaluation.json``.

Faces get the model's logits in batches, and the model's own
:class:`~deepfake.scoring.rule.ScoringRule` (the one every serving path uses) turns
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

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from deepfake import __version__
from deepfake.core import paths
from deepfake.core.config import StageConfig
from deepfake.core.errors import ConfigError, DataError
from deepfake.core.files import json_ready, sha256_file, write_json
from deepfake.core.vocabulary import ALL_SPLITS, STATUS_DECODE_ERROR, STATUS_NO_FACE, STATUS_OK
from deepfake.data.manifest import sources, write_manifest
from deepfake.data.splits import PROTOCOL_ATTR
from deepfake.media.extraction import check_detection
from deepfake.modeling.artifact import artifact_files, update_artifact
from deepfake.scoring.aggregate import STRATEGIES, available
from deepfake.scoring.metrics import (
    ECE_BINS,
    binary_metrics,
    expected_calibration_error,
)
from deepfake.scoring.model_quality import sagemaker_model_quality
from deepfake.scoring.operating_point import (
    DEFAULT_TARGET_FPR,
    REPORTED_FPRS,
    OperatingPoint,
    check_target,
    metric_name,
    threshold_for_fpr,
    tpr_at_fpr,
)
from deepfake.scoring.operating_point import (
    METHODS as OPERATING_POINTS,
)
from deepfake.scoring.rule import ScoringRule
from deepfake.scoring.schema import METRIC_NAMES, SCHEMA_VERSION, validate_evaluation
from deepfake.stages.evaluation_tables import (
    LOGIT_KEYS,
    CropScorer,
    _require,
    attach_logits,
    frame_predictions,
    generalisation_metrics,
    per_manipulation,
    score_faces,
    unscored_videos,
    video_predictions,
    worst_errors,
)

# Columns of faces.csv the evaluation needs (abs_path only on face rows; read_faces adds it).
FACES_COLUMNS = ("video_id", "label", "manipulation", "split", "frame_idx", "face_idx", "status")




FAKES_CHOICES = ("auto", "split", "all")   # which fakes an evaluation scores (EvalConfig.fakes)


@dataclass(frozen=True)
class EvalConfig(StageConfig):
    aggregation: str = "mean"       # headline frame -> video strategy (deepfake.scoring.aggregate.STRATEGIES)
    operating_point: str = "target_fpr"  # threshold: "target_fpr" (on the val split's real videos), "model"
                                    # (the model's own), "fixed" (threshold below)
    target_fpr: float = DEFAULT_TARGET_FPR  # share of real videos the threshold may call fake (operating_point target_fpr)
    threshold: float = 0.5          # p_fake at or above it is called fake, when operating_point is "fixed"
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
        if self.operating_point not in OPERATING_POINTS:
            raise ConfigError(f"operating_point={self.operating_point!r} is unknown; use one of "
                              f"{', '.join(OPERATING_POINTS)}")
        check_target(self.target_fpr)
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


def evaluation_rule(loaded: Any, config: EvalConfig, threshold: float | None = None) -> ScoringRule:
    """The model's rule (its calibration) with the evaluation's aggregation, and ``threshold`` when given
    (else the model's own for operating_point "model", the config's otherwise)."""
    base = ScoringRule.from_model_config(getattr(loaded, "config", None) or {})
    if threshold is None:
        threshold = base.threshold if config.operating_point == "model" else config.threshold
    return base.with_(aggregation=config.aggregation, threshold=float(threshold))


def read_val_predictions(model_dir: str | os.PathLike[str]) -> pd.DataFrame | None:
    """The val faces training scored (``val_predictions.csv`` beside ``model/`` in a training output folder);
    None when ``model_dir`` is a model folder or archive on its own."""
    from deepfake.data.manifest import read_manifest

    path = paths.resolve(model_dir)
    candidates = [path / paths.VAL_PREDICTIONS] if path.is_dir() else []
    if path.is_dir() and path.name == paths.MODEL_DIR:
        candidates.append(path.parent / paths.VAL_PREDICTIONS)
    for candidate in candidates:
        if candidate.is_file():
            return read_manifest(candidate)
    return None


def choose_operating_point(loaded: Any, config: EvalConfig, val_predictions: pd.DataFrame | None
                           ) -> tuple[ScoringRule, dict[str, Any]]:
    """The evaluated rule and the record of how its threshold was chosen (``evaluation.json["operating_point"]``)."""
    if config.operating_point != "target_fpr":
        rule = evaluation_rule(loaded, config)
        record: dict[str, Any] = {"method": config.operating_point, "threshold": rule.threshold}
        chosen = (getattr(loaded, "config", None) or {}).get("operating_point")
        if config.operating_point == "model" and isinstance(chosen, Mapping):
            record["chosen_as"] = dict(chosen)          # how the model's threshold was chosen when it was gated
        return rule, record
    if val_predictions is None or val_predictions.empty:
        raise ConfigError(
            "operating_point='target_fpr' chooses the threshold on the validation split's real videos, but "
            "model_dir holds no val_predictions.csv (03_train writes it beside model/); point model_dir at the "
            "training output folder, or use operating_point='model' (the model's own threshold) or 'fixed'")
    rule = evaluation_rule(loaded, config, threshold=0.5)
    reals = val_predictions[val_predictions["label"].astype(int) == 0]
    if reals.empty:
        raise DataError("the validation split has no real video to choose the threshold on; give it real "
                        "videos, or use operating_point='fixed'")
    faces = reals.assign(p_fake=rule.face_probabilities(reals["logit"]))
    videos = video_predictions(frame_predictions(faces, rule), rule)
    point: OperatingPoint = threshold_for_fpr(videos["p_fake"], config.target_fpr)
    record = {"method": "target_fpr", **point.to_dict(), "source": "validation split, real videos",
              "aggregation": config.aggregation, "warning": point.warning()}
    return rule.with_(threshold=point.threshold), record


def evaluate(loaded: CropScorer, faces_df: pd.DataFrame, out_dir: str | os.PathLike[str],
             config: EvalConfig | None = None, *, model_path: str | os.PathLike[str] | None = None,
             extraction: Mapping[str, Any] | None = None, val_predictions: pd.DataFrame | None = None,
             face_logits: pd.DataFrame | None = None) -> dict[str, Any]:
    """Score the selected videos, write the prediction tables and ``evaluation.json``; returns the evaluation.

    ``loaded`` is a ``deepfake.modeling.artifact.LoadedModel``; ``faces_df`` comes from
    ``deepfake.data.faces_table.read_faces``. ``model_path`` defaults to ``loaded.path`` when it has one.
    ``extraction``: the settings the faces were extracted with (``deepfake.data.faces_table.extraction_settings``);
    faces detected otherwise than the model's training faces are refused.
    ``val_predictions`` (:func:`read_val_predictions`) are the validation faces the threshold is chosen on
    (``operating_point="target_fpr"``).
    ``face_logits`` (:func:`read_face_logits`): the faces' logits scored elsewhere (the pipeline's sharded
    score step, :func:`score_shard`), used instead of scoring the crops here; everything after is the same.
    """
    config = config or EvalConfig()
    if extraction is not None and isinstance(getattr(loaded, "config", None), Mapping):
        check_detection(loaded.config.get("extract") or {}, extraction, _model_path(loaded, model_path), "faces_dir")
    _require(faces_df, FACES_COLUMNS, hint="pass the table of deepfake.data.faces_table.read_faces")
    training = training_record(loaded)
    fakes = fakes_source(config, training)
    rows = select_rows(faces_df, config, fakes)
    unscored = unscored_videos(rows)
    ok = rows[rows["status"].astype(str) == STATUS_OK]
    if ok.empty:
        raise DataError(f"no video of split {config.split!r} has a face to score "
                        f"({len(unscored)} video(s) failed or had no face); check the extraction report")
    rule, operating_point = choose_operating_point(loaded, config, val_predictions)
    faces = (score_faces(loaded, ok, rule, config.batch_size) if face_logits is None
             else attach_logits(ok, face_logits, rule))
    frames = frame_predictions(faces, rule)
    videos = video_predictions(frames, rule)
    seen = None if training is None else list(training.get("manipulations_seen") or [])
    metrics, undefined, by_aggregation = _metrics(faces, frames, videos, rule, config, seen)
    evaluation: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "kit_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": _model_record(loaded, model_path),
        "split": config.split,
        "protocol": faces_df.attrs.get(PROTOCOL_ATTR),   # which protocol the splits follow, what moved
        "fakes": fakes,
        "aggregation": config.aggregation,
        "threshold": float(rule.threshold),
        "operating_point": operating_point,
        "scoring": rule.to_dict(),
        "training": training,
        "config": config.to_dict(),
        "metrics": metrics,
        "undefined_metrics": undefined,
        "by_aggregation": by_aggregation,
        "per_manipulation": per_manipulation(videos, rule.threshold, seen),
        "counts": _counts(rows, faces, frames, videos, unscored),
        "unscored_videos": unscored,
        "worst_errors": [
            {"video_id": str(r.video_id), "label": int(r.label), "manipulation": str(r.manipulation),
             "p_fake": float(r.p_fake)} for r in worst_errors(videos, config.n_worst).itertuples(index=False)
        ],
        "binary_classification_metrics": sagemaker_model_quality(
            videos["label"], videos["p_fake"], rule.threshold),
    }
    evaluation = json_ready(evaluation)
    validate_evaluation(evaluation)
    model_files = artifact_files(loaded.path) if getattr(loaded, "path", None) else []
    _write(out_dir, frames, videos, evaluation, config, inputs=[*sources(faces_df), *model_files])
    return evaluation


def _metrics(faces: pd.DataFrame, frames: pd.DataFrame, videos: pd.DataFrame, rule: ScoringRule,
             config: EvalConfig, seen: Sequence[str] | None
             ) -> tuple[dict[str, Any], dict[str, str], dict[str, dict[str, Any]]]:
    """Headline metrics (video and frame level, calibration before and after, generalisation) and
    the video metrics of every aggregation strategy."""
    frame_m = binary_metrics(frames["label"], frames["p_fake"], rule.threshold, config.ece_bins)
    by_aggregation = {
        name: binary_metrics(videos["label"], videos[f"p_fake_{name}"], rule.threshold, config.ece_bins)
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
    for fpr in REPORTED_FPRS:         # catch rates at fixed false-positive rates of this set's reals
        name = metric_name(fpr)
        metrics[name] = tpr_at_fpr(videos["label"], videos["p_fake"], fpr)
        if metrics[name] is None:
            undefined[name] = "needs real and fake videos"
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
        "videos_failed": statuses.count(STATUS_DECODE_ERROR),
        "videos_no_face": statuses.count(STATUS_NO_FACE),
        "videos_other_status": sum(1 for s in statuses if s not in (STATUS_DECODE_ERROR, STATUS_NO_FACE)),
        "real_videos": n_real,
        "fake_videos": int(len(videos) - n_real),
        "frames_scored": int(len(frames)),
        "faces_scored": int(len(faces)),
    }


def _write(out_dir: str | os.PathLike[str], frames: pd.DataFrame, videos: pd.DataFrame,
           evaluation: dict[str, Any], config: EvalConfig, *, inputs: Sequence[str | os.PathLike[str]]) -> None:
    out = paths.ensure_dir(out_dir)
    extra = {"model_version": evaluation["model"]["version"], "split": config.split, "fakes": evaluation["fakes"],
             "scoring": evaluation["scoring"]}
    write_manifest(frames, out / paths.FRAME_PREDICTIONS, config=config.to_dict(), inputs=inputs, extra=extra)
    write_manifest(videos, out / paths.VIDEO_PREDICTIONS, config=config.to_dict(), inputs=inputs, extra=extra)
    write_json(out / paths.EVALUATION, evaluation)


FACE_LOGITS = "face_logits-{name}.csv"      # one per scoring instance (the pipeline's score step)


def score_shard(loaded: CropScorer, faces_df: pd.DataFrame, out_dir: str | os.PathLike[str], *, name: str,
                batch_size: int = 64) -> Path:
    """The logits of every face whose crop this instance holds (its share of the crops the evaluation reads:
    rows of other shards have no ``abs_path`` here), as ``out_dir/face_logits-<name>.csv``; an evaluation
    given every instance's table (:func:`read_face_logits`) computes what it would from the crops."""
    _require(faces_df, FACES_COLUMNS, hint="pass the table of deepfake.data.faces_table.read_faces")
    ok = faces_df[(faces_df["status"].astype(str) == STATUS_OK) & (faces_df["abs_path"].astype(str) != "")]
    scored = score_faces(loaded, ok, ScoringRule.from_model_config(getattr(loaded, "config", None) or {}), batch_size)
    out = paths.ensure_dir(out_dir) / FACE_LOGITS.format(name=name)
    table = scored[[*LOGIT_KEYS]].assign(logit=scored["logit"].astype("float64"))   # float32, exact in CSV
    write_manifest(table, out, inputs=sources(faces_df),
                   extra={"model_version": _version(loaded), "faces": int(len(scored)), "shard": name})
    return out


def read_face_logits(folder: str | os.PathLike[str] | None) -> pd.DataFrame | None:
    """Every scoring instance's face logits in ``folder``; None for no folder (the evaluation scores the crops)."""
    if not folder:
        return None
    tables = sorted(paths.resolve(folder).glob(FACE_LOGITS.format(name="*")))
    if not tables:
        raise DataError(f"no {FACE_LOGITS.format(name='*')} in {paths.resolve(folder)}: the score step writes them; "
                        "did it run?")
    return pd.concat([pd.read_csv(t, dtype={"video_id": str}, keep_default_na=False) for t in tables],
                     ignore_index=True)


def write_gated_model(model_path: str | os.PathLike[str], evaluation: Mapping[str, Any],
                      out_dir: str | os.PathLike[str]) -> Path:
    """A copy of the evaluated model whose scoring rule is the one this evaluation measured.

    Same weights; ``config.json`` gets ``scoring`` (temperature, aggregation,
    threshold) and the headline metrics. This copy is what the quality gate
    registers and the endpoint serves. Returns the new model folder.
    """

    metrics = {k: v for k, v in evaluation["metrics"].items() if v is not None}
    return update_artifact(model_path, out_dir, {
        "scoring": dict(evaluation["scoring"]),
        "operating_point": dict(evaluation["operating_point"]),
        "metrics": metrics,
        "evaluation": {"split": evaluation["split"], "fakes": evaluation["fakes"],
                       "counts": dict(evaluation["counts"]), "created": evaluation["created"]},
    })


def _version(loaded: Any) -> str | None:
    version = getattr(loaded, "version", None)
    return None if version is None else str(version)


def _model_path(loaded: Any, model_path: str | os.PathLike[str] | None) -> str | None:
    path = model_path if model_path is not None else getattr(loaded, "path", None)
    return None if path is None else str(path)


def _model_record(loaded: Any, model_path: str | os.PathLike[str] | None) -> dict[str, Any]:
    """Which model was evaluated: its version and weights' sha256 name it wherever its path goes (a later run
    may overwrite the path); an archive's own sha256 is the one the model registry knows it by."""
    path = _model_path(loaded, model_path)
    archive = sha256_file(path) if path is not None and Path(path).is_file() else None
    return {"version": _version(loaded), "path": path, "sha256": getattr(loaded, "sha256", None),
            "archive_sha256": archive}
