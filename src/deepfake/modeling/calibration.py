"""Temperature scaling: one number that makes the classifier's probabilities mean what they say.

A fine-tuned network is usually over- or under-confident: of the crops it
calls 90 % fake, far more or far fewer than 90 % are. Temperature scaling (Guo
et al., ICML 2017) divides every logit by one positive number ``T`` fitted on
held-out data by minimising the log loss. It keeps the ranking of the scores
(so AUC is unchanged) and fixes their scale. Training fits ``T`` on the
validation split and stores it in the artifact; every scorer applies it through
:func:`probabilities` (via :class:`deepfake.scoring.rule.ScoringRule`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from deepfake.core.errors import DataError

T_RANGE = (0.05, 20.0)     # temperatures searched; beyond them a model is broken, not miscalibrated
SEARCH_STEPS = 80          # golden-section steps on log T: far below 1e-6 relative error


@dataclass(frozen=True)
class TemperatureFit:
    temperature: float     # divide logits by this
    nll_before: float      # mean log loss at T = 1
    nll_after: float       # mean log loss at the fitted T
    n: int                 # logits it was fitted on


def probabilities(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """``sigmoid(logit / T)`` as float64, computed stably for large logits."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def log_loss(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean binary cross-entropy of ``labels`` (0/1) under ``sigmoid(logit / T)``."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    y = np.asarray(labels, dtype=np.float64)
    # log(1 + exp(-|z|)) + max(z, 0) - y z  ==  -[y log p + (1 - y) log(1 - p)]
    return float(np.mean(np.logaddexp(0.0, -np.abs(z)) + np.maximum(z, 0.0) - y * z))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> TemperatureFit:
    """The ``T`` in :data:`T_RANGE` minimising the log loss of ``labels`` (golden-section search on log T).

    The log loss is convex in ``1 / T``, so the search finds the global minimum.
    Raises DataError when the labels hold a single class (nothing to calibrate against).
    """
    z = np.asarray(logits, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    if z.size != y.size or z.size == 0:
        raise DataError(f"temperature scaling needs one label per logit; got {z.size} logits and {y.size} labels")
    if not np.isfinite(z).all():
        raise DataError("temperature scaling got non-finite logits; the model diverged")
    if len(np.unique(y)) < 2:
        raise DataError("temperature scaling needs real and fake examples in the validation data; "
                        f"all {y.size} labels are {int(y[0])}")
    lo, hi = math.log(T_RANGE[0]), math.log(T_RANGE[1])
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = log_loss(z, y, math.exp(a)), log_loss(z, y, math.exp(b))
    for _ in range(SEARCH_STEPS):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = log_loss(z, y, math.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = log_loss(z, y, math.exp(b))
    t = math.exp((lo + hi) / 2.0)
    return TemperatureFit(temperature=t, nll_before=log_loss(z, y), nll_after=log_loss(z, y, t), n=int(z.size))
