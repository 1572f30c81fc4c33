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


def _scores_and_labels(logits: np.ndarray, labels: np.ndarray, method: str, noun: str,
                       nonfinite: str) -> tuple[np.ndarray, np.ndarray]:
    """``logits`` and ``labels`` as float vectors, one label per score, every score finite (DataError naming
    ``method`` otherwise): what every fit here checks first."""
    z = np.asarray(logits, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    if z.size != y.size or z.size == 0:
        raise DataError(f"{method} needs one label per {noun}; got {z.size} {noun}s and {y.size} labels")
    if not np.isfinite(z).all():
        raise DataError(f"{method} got {nonfinite}")
    return z, y


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> TemperatureFit:
    """The ``T`` in :data:`T_RANGE` minimising the log loss of ``labels`` (golden-section search on log T).

    The log loss is convex in ``1 / T``, so the search finds the global minimum.
    Raises DataError when the labels hold a single class (nothing to calibrate against).
    """
    z, y = _scores_and_labels(logits, labels, "temperature scaling", "logit", "non-finite logits; the model diverged")
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


@dataclass(frozen=True)
class PlattFit:
    scale: float           # new log-odds = scale * z + bias
    bias: float
    nll_before: float      # mean log loss of the labels at scale 1, bias 0
    nll_after: float
    n: int


PLATT_STEPS = 100          # Newton steps; converges in well under 20 on any sample seen
MIN_SCALE = 1e-3           # below it the scores carry no ranking on the sample


def fit_platt(logits: np.ndarray, labels: np.ndarray, *, bias: bool = True) -> PlattFit:
    """Platt scaling (Platt, 1999): ``sigmoid(scale * z + bias)`` fitted to ``labels`` by maximum likelihood
    with Platt's smoothed targets ((n+ + 1) / (n+ + 2) and 1 / (n- + 2)), so a small, perfectly separated
    sample gives a finite fit. ``bias=False`` fits the scale alone (temperature scaling, ``T = 1 / scale``).

    Raises DataError with a single class, or when the fitted scale is not positive (the scores rank the
    sample's reals above its fakes: a model that is wrong, not miscalibrated).
    """
    z, y = _scores_and_labels(logits, labels, "Platt scaling", "score", "non-finite scores")
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    if n_pos == 0 or n_neg == 0:
        raise DataError(f"recalibration needs real and fake videos; the sample's {z.size} are all "
                        f"{'fake' if n_neg == 0 else 'real'}")
    t = np.where(y == 1, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))
    x = np.stack([z, np.ones_like(z)], axis=1) if bias else z[:, None]

    def loss(w: np.ndarray) -> float:             # cross-entropy against the smoothed targets
        s = x @ w
        return float(np.mean(np.logaddexp(0.0, s) - t * s))

    w = np.zeros(x.shape[1])
    w[0] = 1.0
    current = loss(w)
    for _ in range(PLATT_STEPS):                  # Newton's method with backtracking: the loss never rises
        p = probabilities(x @ w)
        grad = x.T @ (p - t)
        hess = (x * (p * (1 - p))[:, None]).T @ x + 1e-9 * np.eye(x.shape[1])
        step = np.linalg.solve(hess, grad)
        size = 1.0
        while size > 1e-8 and loss(w - size * step) > current:
            size /= 2
        w = w - size * step
        previous, current = current, loss(w)
        if abs(previous - current) < 1e-12 or np.abs(size * step).max() < 1e-10:
            break
    scale, b = float(w[0]), float(w[1]) if bias else 0.0
    if not (np.isfinite(scale) and np.isfinite(b)) or scale < MIN_SCALE:
        raise DataError(f"recalibration fitted a scale of {scale:.3g}: on this sample the model's scores do not "
                        "rank fakes above reals, so no calibration can make them meaningful; check the labels, "
                        "or retrain on data like it")
    return PlattFit(scale, b, log_loss(z, y), log_loss(scale * z + b, y), int(z.size))
