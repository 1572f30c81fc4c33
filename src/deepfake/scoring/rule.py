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
   (:mod:`deepfake.scoring.aggregate`);
4. a video at or above ``threshold`` is FAKE.

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

    def __post_init__(self) -> None:
        if not (isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature)
                and self.temperature > 0):
            raise ConfigError(f"scoring temperature={self.temperature!r} must be a positive number")
        get_strategy(self.aggregation)
        if not (isinstance(self.threshold, (int, float)) and 0.0 <= self.threshold <= 1.0):
            raise ConfigError(f"scoring threshold={self.threshold!r} must lie in [0, 1]")

    @classmethod
    def from_model_config(cls, config: Mapping[str, Any]) -> ScoringRule:
        """The rule a model artifact records (``config["scoring"]``; older artifacts: top-level keys)."""
        scoring = config.get("scoring")
        if scoring is None:   # artifact format 1: aggregation (and maybe threshold) at the top level, no temperature
            scoring = {"aggregation": config.get("aggregation") or DEFAULT_AGGREGATION,
                       "threshold": config.get("threshold", DEFAULT_THRESHOLD)}
        if not isinstance(scoring, Mapping):
            raise ConfigError(f"the model's scoring settings must be an object; got {scoring!r}")
        unknown = sorted(set(scoring) - {"temperature", "aggregation", "threshold"})
        if unknown:
            raise ConfigError(f"unknown scoring setting(s) {', '.join(unknown)}; known: temperature, aggregation, "
                              "threshold")
        return cls(temperature=float(scoring.get("temperature", 1.0)),
                   aggregation=str(scoring.get("aggregation", DEFAULT_AGGREGATION)),
                   threshold=float(scoring.get("threshold", DEFAULT_THRESHOLD)))

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
        """Step 3: the frames combined by the aggregation strategy."""
        return aggregate(frame_p, self.aggregation)

    def is_fake(self, p_fake: float | np.ndarray) -> bool | np.ndarray:
        """Step 4: at or above the threshold is fake."""
        return np.asarray(p_fake) >= self.threshold if isinstance(p_fake, np.ndarray) else p_fake >= self.threshold

    def score_video(self, frame_idx: Sequence[int] | np.ndarray, logits: Sequence[float] | np.ndarray) -> VideoScore:
        """All four steps for one video's faces (their frame numbers and logits)."""
        frames = self.frames(frame_idx, self.face_probabilities(logits))
        p = self.video_probability(frames.p_fake)
        return VideoScore(frames=frames, p_fake=p, fake=bool(self.is_fake(p)))
