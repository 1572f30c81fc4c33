"""The one rule that turns a video's face logits into its score and label.

Evaluation, ``deepfake predict``, the HTTP server and the SageMaker handler all
score through :class:`ScoringRule`, and the model artifact records the rule's
settings (``config.json["scoring"]``), so the model that is gated, registered
and served scores exactly the same way:

1. a face's probability is ``sigmoid(logit / temperature)``: the temperature is
   fitted on the validation split after training (:mod:`deepfake.modeling.calibration`);
2. a frame scores as its most fake-looking face (a video with two people where
   only one is swapped must not be judged on the real one);
3. a video combines its frames with the ``aggregation`` strategy
   (:mod:`deepfake.scoring.aggregate`), then, for a model recalibrated on a
   user's own labelled sample (``deepfake calibrate``), its log-odds are mapped by
   ``video_scale * z + video_bias`` (Platt scaling; 1 and 0 leave it as it is);
4. a video at or above ``threshold`` is FAKE (chosen for a target false-positive
   rate on real videos: :mod:`deepfake.scoring.operating_point`).

Nothing here reads tables or files: it works on arrays, so serving needs
neither pandas nor the evaluation code.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from deepfake.core.errors import ConfigError, DataError
from deepfake.modeling.calibration import probabilities
from deepfake.scoring.aggregate import aggregate, get_strategy

DEFAULT_THRESHOLD = 0.5        # p_fake at or above it is FAKE
DEFAULT_AGGREGATION = "mean"   # frame -> video strategy of a model nobody has evaluated yet


@dataclass(frozen=True)
class FrameScores:
    """One entry per frame that holds a face, in frame order."""

    frame_idx: np.ndarray      # int64, sorted, unique
    p_fake: np.ndarray         # float64: the frame's most fake face
    best_face: np.ndarray      # int64: position (in the faces given) of that face
    n_faces: np.ndarray        # int64: faces scored in the frame


@dataclass(frozen=True)
class VideoScore:
    frames: FrameScores
    p_fake: float              # the video's probability of being fake
    fake: bool                 # p_fake >= threshold


@dataclass(frozen=True)
class ScoringRule:
    temperature: float = 1.0                 # logits are divided by it (1 = uncalibrated)
    aggregation: str = DEFAULT_AGGREGATION   # frame -> video strategy, one of deepfake.scoring.aggregate.available()
    threshold: float = DEFAULT_THRESHOLD     # video p_fake at or above it is FAKE
    video_scale: float = 1.0                 # Platt scaling of the video log-odds (recalibration): scale ...
    video_bias: float = 0.0                  # ... and bias; 1 and 0 leave the aggregated probability as it is

    def __post_init__(self) -> None:
        if not (isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature)
                and self.temperature > 0):
            raise ConfigError(f"scoring temperature={self.temperature!r} must be a positive number")
        get_strategy(self.aggregation)
        if not (isinstance(self.threshold, (int, float)) and 0.0 <= self.threshold <= 1.0):
            raise ConfigError(f"scoring threshold={self.threshold!r} must lie in [0, 1]")
        for name in ("video_scale", "video_bias"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value)):
                raise ConfigError(f"scoring {name}={value!r} must be a finite number")
        if self.video_scale <= 0:
            raise ConfigError(f"scoring video_scale={self.video_scale!r} must be positive: a negative one would "
                              "turn the ranking of the videos upside down")

    @classmethod
    def from_model_config(cls, config: Mapping[str, Any]) -> ScoringRule:
        """The rule a model artifact records (``config["scoring"]``; older artifacts: top-level keys)."""
        scoring = config.get("scoring")
        if scoring is None:   # artifact format 1: aggregation (and maybe threshold) at the top level, no temperature
            scoring = {"aggregation": config.get("aggregation") or DEFAULT_AGGREGATION,
                       "threshold": config.get("threshold", DEFAULT_THRESHOLD)}
        if not isinstance(scoring, Mapping):
            raise ConfigError(f"the model's scoring settings must be an object; got {scoring!r}")
        known = ("temperature", "aggregation", "threshold", "video_scale", "video_bias")
        unknown = sorted(set(scoring) - set(known))
        if unknown:
            raise ConfigError(f"unknown scoring setting(s) {', '.join(unknown)}; known: {', '.join(known)}")
        return cls(temperature=float(scoring.get("temperature", 1.0)),
                   aggregation=str(scoring.get("aggregation", DEFAULT_AGGREGATION)),
                   threshold=float(scoring.get("threshold", DEFAULT_THRESHOLD)),
                   video_scale=float(scoring.get("video_scale", 1.0)),
                   video_bias=float(scoring.get("video_bias", 0.0)))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_(self, **changes: Any) -> ScoringRule:
        return replace(self, **changes)

    # -- the rule, step by step ------------------------------------------------------------------

    def face_probabilities(self, logits: Sequence[float] | np.ndarray) -> np.ndarray:
        """Step 1: calibrated fake probability of each face."""
        z = np.asarray(logits, dtype=np.float64).reshape(-1)
        if not np.isfinite(z).all():
            raise DataError("the model returned non-finite logits; it cannot score these faces")
        return probabilities(z, self.temperature)

    def frames(self, frame_idx: Sequence[int] | np.ndarray, p_face: Sequence[float] | np.ndarray) -> FrameScores:
        """Step 2: each frame's most fake face (the first of equal ones)."""
        idx = np.asarray(frame_idx, dtype=np.int64).reshape(-1)
        p = np.asarray(p_face, dtype=np.float64).reshape(-1)
        if idx.size != p.size:
            raise DataError(f"{p.size} face scores for {idx.size} faces; every face needs one score")
        order = np.lexsort((np.arange(idx.size), -p, idx))    # by frame, most fake first, then given order
        first = np.ones(idx.size, dtype=bool)
        first[1:] = idx[order][1:] != idx[order][:-1]
        best = order[first]
        counts = np.bincount(np.searchsorted(idx[best], idx), minlength=best.size) if idx.size else np.zeros(0)
        return FrameScores(frame_idx=idx[best], p_fake=p[best], best_face=best.astype(np.int64),
                           n_faces=counts.astype(np.int64))

    def video_probability(self, frame_p: Sequence[float] | np.ndarray) -> float:
        """Step 3: the frames combined by the aggregation strategy, then the video calibration."""
        return float(self.calibrate_video(aggregate(frame_p, self.aggregation)))

    def calibrate_video(self, p: float | np.ndarray) -> float | np.ndarray:
        """Platt scaling of aggregated video probabilities: ``sigmoid(video_scale * logit(p) + video_bias)``."""
        if self.video_scale == 1.0 and self.video_bias == 0.0:
            return p
        q = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1 - 1e-12)
        out = probabilities(self.video_scale * np.log(q / (1 - q)) + self.video_bias)
        return float(out) if np.ndim(p) == 0 else out

    def is_fake(self, p_fake: float | np.ndarray) -> bool | np.ndarray:
        """Step 4: at or above the threshold is fake."""
        return np.asarray(p_fake) >= self.threshold if isinstance(p_fake, np.ndarray) else p_fake >= self.threshold

    def score_video(self, frame_idx: Sequence[int] | np.ndarray, logits: Sequence[float] | np.ndarray) -> VideoScore:
        """All four steps for one video's faces (their frame numbers and logits)."""
        frames = self.frames(frame_idx, self.face_probabilities(logits))
        p = self.video_probability(frames.p_fake)
        return VideoScore(frames=frames, p_fake=p, fake=bool(self.is_fake(p)))
