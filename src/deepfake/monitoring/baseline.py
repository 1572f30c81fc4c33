"""The baseline a window is compared with: the evaluation the served model was gated on.

The gated model (``evaluate/model.tar.gz``, what the registry holds and the
endpoint serves) carries the scoring rule its evaluation measured; the
evaluation beside it holds what the model did on its test set:
``evaluation.json`` (rates, counts, metrics at the threshold) and
``video_predictions.csv`` (each scored video's ``p_fake``). Nothing is recomputed:
the threshold is the artifact's, the rates and metrics are the evaluation's, and
the score distribution of real videos is the evaluation's own ``p_fake`` of them.

The evaluation is found beside the model (the folder of ``model.tar.gz``, or the
folder holding ``model/``; the S3 prefix of an S3 model), or given. The model
and the evaluation must belong together: the same weights (``model_version``)
and the same scoring rule, or the comparison would be with another model.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deepfake.core import paths
from deepfake.core.errors import DeepfakeError, MonitoringError
from deepfake.core.vocabulary import REAL
from deepfake.data.manifest import read_manifest
from deepfake.modeling.artifact_files import ArtifactFiles, read_artifact
from deepfake.monitoring import storage
from deepfake.scoring.rule import ScoringRule
from deepfake.scoring.schema import read_evaluation

SCORING_TOLERANCE = 1e-9        # scoring settings of model and evaluation compared to this


@dataclass(frozen=True)
class MonitoredModel:
    """The served model: its version and scoring rule (from its artifact)."""

    source: str
    version: str
    rule: ScoringRule
    frames_per_video: int          # frames its extraction samples per video (0: a stride, no fixed number)


@dataclass(frozen=True)
class Baseline:
    """What the model did in its evaluation, in the terms a window is measured in."""

    source: str                    # the evaluation folder (or S3 prefix)
    model_version: str | None
    threshold: float
    aggregation: str
    created: str | None
    split: str
    fakes: str
    videos_total: int              # videos evaluated, scored or not
    videos_scored: int
    videos_no_face: int
    videos_failed: int             # could not be decoded
    real_p_fake: tuple[float, ...]        # the scored real videos' p_fake, sorted
    fake_p_fake: tuple[float, ...]        # the scored fakes'
    called_fake: int               # scored videos at or above the threshold
    face_frame_share: tuple[float, ...]   # per scored video: sampled frames with a face (n_frames / frames sampled)
    faces_per_frame: float | None  # faces scored per frame with a face
    false_positive_rate: float | None     # real videos called fake
    catch_rate: float | None              # fakes called fake (recall)
    auc: float | None

    @property
    def no_face_rate(self) -> float | None:
        decoded = self.videos_total - self.videos_failed
        return self.videos_no_face / decoded if decoded else None

    @property
    def failed_rate(self) -> float | None:
        return self.videos_failed / self.videos_total if self.videos_total else None

    @property
    def fake_share(self) -> float | None:
        """Share of the scored videos called fake: the evaluation's own mix of reals and fakes."""
        return self.called_fake / self.videos_scored if self.videos_scored else None

    @property
    def real_called_real(self) -> np.ndarray:
        """``p_fake`` of the real videos the model called real: the scores a window's calls of REAL are
        compared with (mostly reals in both, whatever share of fakes each holds)."""
        scores = np.asarray(self.real_p_fake, dtype=float)
        return scores[scores < self.threshold]

    def expected_fake_share(self, prevalence: float | None) -> float | None:
        """Share called fake expected in traffic with ``prevalence`` fakes (None: the evaluation's mix):
        ``FPR x (1 - prevalence) + catch rate x prevalence``."""
        if prevalence is None:
            return self.fake_share
        if self.false_positive_rate is None or (prevalence > 0 and self.catch_rate is None):
            return None
        catch = self.catch_rate if self.catch_rate is not None else 0.0
        return self.false_positive_rate * (1 - prevalence) + catch * prevalence

    def to_dict(self) -> dict[str, Any]:
        """The summary monitoring.json records (distributions as counts and quantiles)."""
        return {
            "source": self.source, "model_version": self.model_version, "threshold": self.threshold,
            "aggregation": self.aggregation, "created": self.created, "split": self.split, "fakes": self.fakes,
            "videos_total": self.videos_total, "videos_scored": self.videos_scored,
            "videos_no_face": self.videos_no_face, "videos_failed": self.videos_failed,
            "no_face_rate": _num(self.no_face_rate), "failed_rate": _num(self.failed_rate),
            "fake_share": _num(self.fake_share), "false_positive_rate": _num(self.false_positive_rate),
            "catch_rate": _num(self.catch_rate), "auc": _num(self.auc), "faces_per_frame": _num(self.faces_per_frame),
            "real_videos": len(self.real_p_fake), "fake_videos": len(self.fake_p_fake),
            "real_p_fake_quantiles": quantiles(self.real_p_fake),
            "face_frame_share_mean": _num(float(np.mean(self.face_frame_share)) if self.face_frame_share else None),
        }


def monitored_model(model: str, work: Path | None = None) -> MonitoredModel:
    """The served model's version and scoring rule from its folder, ``model.tar.gz`` or S3 URI."""
    files = _artifact(model, work)
    frames = int((files.config.get("extract") or {}).get("frames_per_video") or 0)
    stride = int((files.config.get("extract") or {}).get("stride") or 0)
    return MonitoredModel(source=str(model), version=files.version, rule=ScoringRule.from_model_config(files.config),
                          frames_per_video=0 if stride else frames)


def evaluation_location(model: str) -> str | None:
    """Where the evaluation of a gated model is: the folder (or S3 prefix) of its ``model.tar.gz``, or the
    folder holding its ``model/``; None when no ``evaluation.json`` is there."""
    text = str(model).rstrip("/")
    candidates = [storage.parent(text)]
    if not storage.is_s3(text) and Path(text).is_dir():
        candidates = [text, str(Path(text).parent)] if (Path(text) / paths.MODEL_DIR).is_dir() \
            else [str(Path(text).parent)]
    for folder in candidates:
        if storage.exists(storage.join(folder, paths.EVALUATION)):
            return folder
    return None


def load_baseline(evaluation: str, model: MonitoredModel, work: Path | None = None) -> Baseline:
    """The baseline from an evaluation folder or S3 prefix (``evaluation.json`` + ``video_predictions.csv``),
    checked against the served model."""
    with tempfile.TemporaryDirectory(prefix="deepfake-baseline-") as tmp:
        folder = Path(work or tmp)
        try:
            doc = read_evaluation(storage.download(storage.join(evaluation, paths.EVALUATION),
                                                   folder / paths.EVALUATION))
            videos = read_manifest(storage.download(storage.join(evaluation, paths.VIDEO_PREDICTIONS),
                                                    folder / paths.VIDEO_PREDICTIONS), ["label", "p_fake"])
        except MonitoringError:
            raise
        except DeepfakeError as exc:
            raise MonitoringError(f"the evaluation at {evaluation} cannot serve as the baseline: {exc}") from exc
    check_pair(doc, model, evaluation)
    return baseline_from_evaluation(doc, videos, model, str(evaluation))


def check_pair(evaluation: dict[str, Any], model: MonitoredModel, where: str) -> None:
    """MonitoringError unless the evaluation measured this model (weights and scoring rule)."""
    version = (evaluation.get("model") or {}).get("version")
    if version and version != model.version:
        raise MonitoringError(
            f"the evaluation at {where} measured model {version}, not the served model {model.version} "
            f"({model.source}); give the evaluation of the served model with --evaluation")
    measured = ScoringRule.from_model_config({"scoring": evaluation["scoring"]})
    mine = model.rule
    if measured.aggregation != mine.aggregation or not math.isclose(measured.threshold, mine.threshold,
                                                                      abs_tol=SCORING_TOLERANCE) \
            or not math.isclose(measured.temperature, mine.temperature, rel_tol=1e-6):
        raise MonitoringError(
            f"model {model.source} scores with {mine.aggregation}, threshold {mine.threshold:g}, temperature "
            f"{mine.temperature:.4g}, but the evaluation at {where} measured {measured.aggregation}, threshold "
            f"{measured.threshold:g}, temperature {measured.temperature:.4g}: monitor the gated model the "
            "evaluation wrote (evaluate/model.tar.gz), the one that is served")


def baseline_from_evaluation(evaluation: dict[str, Any], videos: pd.DataFrame, model: MonitoredModel,
                             source: str) -> Baseline:
    counts = evaluation["counts"]
    metrics = evaluation["metrics"]
    threshold = float(evaluation["scoring"]["threshold"])
    p = videos["p_fake"].astype(float).to_numpy()
    labels = videos["label"].astype(int).to_numpy()
    shares: tuple[float, ...] = ()
    if model.frames_per_video and "n_frames" in videos.columns:
        shares = tuple(float(min(1.0, n / model.frames_per_video)) for n in videos["n_frames"].astype(float))
    frames, faces = counts.get("frames_scored"), counts.get("faces_scored")
    return Baseline(
        source=source, model_version=(evaluation.get("model") or {}).get("version"), threshold=threshold,
        aggregation=str(evaluation["scoring"]["aggregation"]), created=evaluation.get("created"),
        split=str(evaluation.get("split")), fakes=str(evaluation.get("fakes")),
        videos_total=int(counts["videos_total"]), videos_scored=int(counts["videos_scored"]),
        videos_no_face=int(counts["videos_no_face"]), videos_failed=int(counts["videos_failed"]),
        real_p_fake=tuple(sorted(float(v) for v in p[labels == REAL])),
        fake_p_fake=tuple(sorted(float(v) for v in p[labels != REAL])),
        called_fake=int((p >= threshold).sum()),
        face_frame_share=shares,
        faces_per_frame=float(faces) / float(frames) if frames else None,
        false_positive_rate=metrics.get("video_false_positive_rate"),
        catch_rate=metrics.get("video_recall"), auc=metrics.get("video_auc"),
    )


def quantiles(values: Any, qs: tuple[float, ...] = (0.05, 0.25, 0.5, 0.75, 0.95)) -> dict[str, float] | None:
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return None
    return {f"p{round(q * 100):02d}": float(np.quantile(arr, q)) for q in qs}


def _artifact(model: str, work: Path | None) -> ArtifactFiles:
    try:
        if storage.is_s3(model):
            with tempfile.TemporaryDirectory(prefix="deepfake-model-") as tmp:
                local = storage.download(model, Path(work or tmp) / Path(model).name)
                return read_artifact(local)
        return read_artifact(model)
    except DeepfakeError as exc:
        if isinstance(exc, MonitoringError):
            raise
        raise MonitoringError(f"cannot read the served model {model}: {exc}") from exc


def _num(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None
