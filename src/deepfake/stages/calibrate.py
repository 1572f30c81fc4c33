"""Recalibration on a user's own labelled sample: the score scale and the threshold of their platform.

No detector can know the score scale of a manipulation it never saw; production
teams recalibrate on a small labelled sample of their own traffic. Given the
videos of such a sample scored through the rule the model serves (evaluation's
``video_predictions.csv``), :func:`recalibrate` fits Platt scaling on the video
log-odds (``sigmoid(a z + b)``; ``method="temperature"`` fits ``a`` alone), sets
the threshold for ``target_fpr`` on the sample's real videos, and measures ECE,
the share of reals called fake and the share of fakes caught before and after
on held-out parts of the sample (stratified k-fold cross-validation: every
video is measured by a fit that did not see it). :func:`write_recalibrated_model`
writes the new model: the parent's weights with the new rule, and a record that
names the sample (its table's path and sha256, its size), the parent and the
figures.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deepfake.core import paths
from deepfake.core.config import StageConfig
from deepfake.core.errors import ConfigError, DataError
from deepfake.core.files import write_json
from deepfake.modeling.artifact import read_artifact_config, update_artifact
from deepfake.modeling.calibration import fit_platt, probabilities
from deepfake.scoring.metrics import expected_calibration_error, roc_auc
from deepfake.scoring.operating_point import DEFAULT_TARGET_FPR, check_target, threshold_for_fpr
from deepfake.scoring.rule import ScoringRule

METHODS = ("platt", "temperature")       # scale and bias, or the scale alone
RECALIBRATION = "recalibration.json"     # the record beside the recalibrated model
MIN_PER_CLASS = 2                        # videos of each class a cross-validated fit needs at the least
EPS = 1e-12


FOLD_SEED = 0                            # shuffles the cross-validation folds


@dataclass(frozen=True)
class CalibrateConfig(StageConfig):
    """Named so the evaluation notebook's parameters can carry it beside EvalConfig's."""

    recalibration: str = "platt"         # platt (scale and bias of the video log-odds) or temperature (scale only)
    target_fpr: float = DEFAULT_TARGET_FPR  # share of the sample's real videos the new threshold may call fake
    recalibration_folds: int = 5         # cross-validation folds of the before/after figures (fewer on a small sample)

    def __post_init__(self) -> None:
        if self.recalibration not in METHODS:
            raise ConfigError(f"recalibration={self.recalibration!r} is unknown; use one of {', '.join(METHODS)}")
        check_target(self.target_fpr)
        if self.recalibration_folds < 2:
            raise ConfigError(f"recalibration_folds={self.recalibration_folds!r} must be at least 2")


def video_logits(p: Any) -> np.ndarray:
    q = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    return np.log(q / (1 - q))


def recalibrate(videos: pd.DataFrame, rule: ScoringRule, config: CalibrateConfig | None = None
                ) -> tuple[ScoringRule, dict[str, Any]]:
    """The recalibrated rule and its record, from ``videos`` (``label``, ``p_fake`` by ``rule``)."""
    config = config or CalibrateConfig()
    y = videos["label"].astype(int).to_numpy()
    z = video_logits(videos["p_fake"])
    n_real, n_fake = int((y == 0).sum()), int((y == 1).sum())
    if n_real < MIN_PER_CLASS or n_fake < MIN_PER_CLASS:
        raise DataError(f"recalibration needs at least {MIN_PER_CLASS} real and {MIN_PER_CLASS} fake scored "
                        f"videos; the sample has {n_real} real and {n_fake} fake: add labelled videos of the "
                        "missing class")
    fit = _fit(z, y, config)
    new_rule = _compose(rule, fit.scale, fit.bias)
    point = threshold_for_fpr(probabilities(_apply(z, fit.scale, fit.bias)[y == 0]), config.target_fpr)
    new_rule = new_rule.with_(threshold=point.threshold)
    folds = min(config.recalibration_folds, n_real, n_fake)
    before, after = _cross_validated(z, y, rule.threshold, config, folds)
    record = {
        "method": config.recalibration, "scale": fit.scale, "bias": fit.bias,
        "target_fpr": config.target_fpr, "threshold": point.threshold,
        "n_videos": int(len(y)), "n_real": n_real, "n_fake": n_fake,
        "threshold_supported": point.supported, "warning": point.warning(),
        "estimated_by": f"stratified {folds}-fold cross-validation on the sample (each video measured by a fit "
                        "that did not see it)",
        "folds": folds, "before": before, "after": after,
        "log_loss_in_sample": {"before": fit.nll_before, "after": fit.nll_after},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return new_rule, record


def write_recalibrated_model(model_path: str | os.PathLike[str], rule: ScoringRule, record: dict[str, Any],
                             out_dir: str | os.PathLike[str], *, sample: dict[str, Any]) -> Path:
    """The parent's weights with the recalibrated rule; ``config.json`` names the sample and the parent."""
    parent_config = read_artifact_config(model_path)
    parent = {"path": str(model_path), "weights_sha256": parent_config.get("weights_sha256")}
    full = {**record, "sample": dict(sample), "parent": parent}
    out = update_artifact(model_path, out_dir, {
        "scoring": rule.to_dict(),
        "operating_point": {"method": "target_fpr", "threshold": rule.threshold, "target_fpr": record["target_fpr"],
                            "n_real_videos": record["n_real"], "supported": record["threshold_supported"],
                            "source": f"recalibration sample {sample.get('path')}"},
        "recalibration": full,
    })
    write_json(Path(out).parent / RECALIBRATION, full)
    return Path(out)


def _fit(z: np.ndarray, y: np.ndarray, config: CalibrateConfig) -> Any:
    return fit_platt(z, y, bias=config.recalibration == "platt")


def _apply(z: np.ndarray, scale: float, bias: float) -> np.ndarray:
    return scale * z + bias


def _compose(rule: ScoringRule, scale: float, bias: float) -> ScoringRule:
    """A new Platt map on top of the rule's own: ``a (s z + b0) + b``."""
    return rule.with_(video_scale=scale * rule.video_scale, video_bias=scale * rule.video_bias + bias)


def _cross_validated(z: np.ndarray, y: np.ndarray, threshold: float, config: CalibrateConfig, folds: int
                     ) -> tuple[dict[str, Any], dict[str, Any]]:
    """ECE, false-positive rate, catch rate and AUC before (the model as it is) and after (out-of-fold fits)."""
    rng = np.random.default_rng(FOLD_SEED)
    fold = np.empty(len(y), dtype=int)
    for label in (0, 1):
        idx = np.flatnonzero(y == label)
        fold[rng.permutation(idx)] = np.arange(idx.size) % folds
    p_before = probabilities(z)
    p_after = np.empty(len(y))
    called = np.empty(len(y), dtype=bool)
    for k in range(folds):
        train, test = fold != k, fold == k
        fit = _fit(z[train], y[train], config)
        point = threshold_for_fpr(probabilities(_apply(z[train & (y == 0)], fit.scale, fit.bias)),
                                  config.target_fpr)
        p_after[test] = probabilities(_apply(z[test], fit.scale, fit.bias))
        called[test] = p_after[test] >= point.threshold
    return _figures(y, p_before, p_before >= threshold), _figures(y, p_after, called)


def _figures(y: np.ndarray, p: np.ndarray, called: np.ndarray) -> dict[str, Any]:
    return {"ece": expected_calibration_error(y, p), "false_positive_rate": float(called[y == 0].mean()),
            "catch_rate": float(called[y == 1].mean()), "auc": roc_auc(y, p)}


def recalibrate_evaluation(evaluate_dir: str | os.PathLike[str], faces_dir: str | os.PathLike[str],
                           model_path: str | os.PathLike[str], config: CalibrateConfig) -> dict[str, Any]:
    """Recalibrate the model an evaluation scored on the videos it scored (the labelled sample): writes
    ``recalibrated/model`` under ``evaluate_dir`` with ``recalibration.json`` beside it; returns the record."""
    from deepfake.data.manifest import read_manifest
    from deepfake.scoring.schema import read_evaluation

    evaluation = read_evaluation(evaluate_dir)
    videos = read_manifest(paths.resolve(evaluate_dir) / paths.VIDEO_PREDICTIONS)
    rule = ScoringRule.from_model_config({"scoring": evaluation["scoring"]})
    new_rule, record = recalibrate(videos, rule, config)
    sample = sample_of(faces_dir)
    sample["videos_unscored"] = int(evaluation["counts"].get("videos_unscored", 0))
    model_dir, _archive = recalibrated_paths(evaluate_dir)
    write_recalibrated_model(model_path, new_rule, record, model_dir, sample=sample)
    return {**record, "sample": sample}


def sample_of(faces_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The sample a recalibration rests on: the dataset folder and its videos table (path and sha256), read
    from the sidecars the exploration and the extraction wrote."""
    from deepfake.data.manifest import read_sidecar

    faces = paths.resolve(faces_dir) / paths.FACES_MANIFEST
    inputs = read_sidecar(faces).get("inputs") or {}
    table = next((p for p in inputs if Path(p).name == paths.VIDEOS_MANIFEST), None)
    data_dir = None
    if table is not None and Path(table).is_file():
        data_dir = read_sidecar(table).get("data_dir")
    return {"path": data_dir, "table": table, "sha256": None if table is None else inputs[table]}


def recalibrated_paths(output_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Where an evaluation writes the recalibrated model and its archive: ``recalibrated/model`` and
    ``recalibrated/model.tar.gz``."""
    base = paths.resolve(output_dir) / "recalibrated"
    return base / paths.MODEL_DIR, base / paths.MODEL_ARCHIVE
