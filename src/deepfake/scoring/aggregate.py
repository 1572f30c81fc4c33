"""From frame scores to one video score: small pure strategies in a registry.

A video is judged on a handful of sampled frames; how their fake
probabilities combine into one number matters as much as the model (the DFDC
winners gained more from aggregation than from most model changes). Each
strategy takes the frame scores of one video and returns one probability.
There is no fallback score: a video without frames raises, so it is counted
as unscored instead of entering the metrics as a made-up 0.5.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from deepfake.core.errors import DataError
from deepfake.core.registry import Registry

Strategy = Callable[[np.ndarray], float]
STRATEGIES: Registry[Strategy] = Registry("aggregation")


# confident_fake defaults, from the DFDC winning solution (selimsef), which scored 32 face crops a video.
CONFIDENT_HIGH = 0.8            # a frame with p_fake above this is confidently fake
CONFIDENT_LOW = 0.2             # a frame with p_fake below this is confidently real
FAKE_FRACTION = 0.4             # confidently fake frames must exceed this share of frames (the winner: n // 2.5)
MIN_FAKE_FRAMES = 3             # and number at least this many (the winner: > 11 of 32; we sample 16 frames)
REAL_FRACTION = 0.9             # confidently real frames must exceed this share to average only them


register = STRATEGIES.register          # decorator adding a strategy under a name
available = STRATEGIES.names
get_strategy = STRATEGIES.get


@register("mean")
def mean(scores: np.ndarray) -> float:
    """Mean frame probability: the calibrated, low-variance default."""
    return float(np.mean(scores))


@register("median")
def median(scores: np.ndarray) -> float:
    """Median frame probability: robust to a few frames with a bad crop."""
    return float(np.median(scores))


@register("max")
def maximum(scores: np.ndarray) -> float:
    """Most fake-looking frame: catches short manipulations, but raises false alarms on long videos."""
    return float(np.max(scores))


@register("confident_fake")
def confident_fake(
    scores: np.ndarray,
    high: float = CONFIDENT_HIGH,
    low: float = CONFIDENT_LOW,
    fake_fraction: float = FAKE_FRACTION,
    min_fake_frames: int = MIN_FAKE_FRAMES,
    real_fraction: float = REAL_FRACTION,
) -> float:
    """DFDC winner's rule: trust confident frames, fakes first.

    If more than ``fake_fraction`` of the frames, and at least
    ``min_fake_frames``, have ``p > high``, average those (a manipulation often
    shows in only some frames); else if more than ``real_fraction`` have
    ``p < low``, average those; else the mean of all frames.
    """
    s = np.asarray(scores, dtype=float)
    fake = s[s > high]
    if fake.size > fake_fraction * s.size and fake.size >= min_fake_frames:
        return float(np.mean(fake))
    real = s[s < low]
    if real.size > real_fraction * s.size:
        return float(np.mean(real))
    return float(np.mean(s))


def aggregate(scores: Any, strategy: str = "mean") -> float:
    """One video's fake probability from its frame probabilities.

    Raises DataError for no scores or scores outside [0, 1], ConfigError for an unknown strategy.
    """
    fn = get_strategy(strategy)
    s = np.asarray(scores, dtype=float).ravel()
    if s.size == 0:
        raise DataError("cannot aggregate an empty list of frame scores: a video without scored "
                        "frames must be reported as unscored, not given a score")
    if not np.isfinite(s).all() or s.min() < 0.0 or s.max() > 1.0:
        raise DataError(f"frame scores must be probabilities in [0, 1]; got {s[:8].tolist()}")
    return fn(s)
