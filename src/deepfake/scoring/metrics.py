"""Binary-classification metrics as pure numpy functions.

Labels are ``0 = real``, ``1 = fake``; scores are fake probabilities. The
definitions follow scikit-learn (tied scores, step-wise average precision, the
confusion-matrix layout) so numbers agree with what people compute in a
notebook, without making scikit-learn a runtime dependency of the kit.

A metric that is undefined for the data (AUC with a single class, precision
with no predicted fakes, ...) is ``None``, never a stand-in number;
:func:`binary_metrics` records why under ``"undefined"``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from deepfake.core.errors import ConfigError, DataError

LOG_LOSS_EPS = 2.220446049250313e-16   # float64 machine epsilon, as sklearn >= 1.5: a p of exactly 0 or 1 costs 36 nats, not inf
ECE_BINS = 10                          # equal-width bins over [0, 1] of the fake probability


class ReliabilityCurve(NamedTuple):
    """Calibration per equal-width bin of ``p_fake`` (empty bins hold NaN)."""

    centers: np.ndarray      # bin centres, e.g. 0.05, 0.15, ... for 10 bins
    accuracy: np.ndarray     # observed fraction of fakes in the bin: what a calibrated p_fake should equal
    confidence: np.ndarray   # mean p_fake in the bin
    counts: np.ndarray       # samples in the bin (int)


def _labels(y_true: Any) -> np.ndarray:
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise DataError(f"labels must be one-dimensional; got shape {y.shape}")
    if y.size and y.dtype.kind not in "biuf":
        raise DataError(f"labels must be 0 (real) or 1 (fake); got dtype {y.dtype}")
    yf = y.astype(float)
    bad = ~np.isin(yf, (0.0, 1.0))
    if bad.any():
        raise DataError(f"labels must be 0 (real) or 1 (fake); got {np.unique(y[bad])[:5].tolist()}")
    return yf.astype(np.int64)


def _scores(scores: Any, n: int, *, probabilities: bool) -> np.ndarray:
    s = np.asarray(scores, dtype=float)
    if s.ndim != 1:
        raise DataError(f"scores must be one-dimensional; got shape {s.shape}")
    if s.size != n:
        raise DataError(f"got {n} labels but {s.size} scores; they must pair up one to one")
    if not np.isfinite(s).all():
        raise DataError(f"scores must be finite; {int((~np.isfinite(s)).sum())} are NaN or infinite")
    if probabilities and s.size and (s.min() < 0.0 or s.max() > 1.0):
        raise DataError(f"fake probabilities must lie in [0, 1]; got range [{s.min():g}, {s.max():g}]")
    return s


def _pair(y_true: Any, scores: Any, *, probabilities: bool = False) -> tuple[np.ndarray, np.ndarray]:
    y = _labels(y_true)
    return y, _scores(scores, y.size, probabilities=probabilities)


def _threshold(threshold: float) -> float:
    t = float(threshold)
    if not 0.0 <= t <= 1.0:
        raise ConfigError(f"threshold={threshold!r} must lie in [0, 1]")
    return t


def _both_classes(y: np.ndarray, what: str) -> None:
    if y.size == 0 or y.min() == y.max():
        raise DataError(f"{what} needs both real and fake samples; {_class_summary(y)}")


def _class_summary(y: np.ndarray) -> str:
    n_fake = int(y.sum())
    return f"got {y.size - n_fake} real and {n_fake} fake"


def predicted_labels(p_fake: Any, threshold: float = 0.5) -> np.ndarray:
    """The one decision rule of the kit: fake (1) when ``p_fake >= threshold``."""
    t = _threshold(threshold)
    p = np.asarray(p_fake, dtype=float)
    return (p >= t).astype(np.int64)


def confusion_matrix(y_true: Any, p_fake: Any, threshold: float = 0.5) -> np.ndarray:
    """2x2 counts ``[[tn, fp], [fn, tp]]``: rows are true labels, columns predictions (as sklearn)."""
    y, p = _pair(y_true, p_fake, probabilities=True)
    pred = predicted_labels(p, threshold)
    cm = np.zeros((2, 2), dtype=np.int64)
    np.add.at(cm, (y, pred), 1)
    return cm


def accuracy(y_true: Any, p_fake: Any, threshold: float = 0.5) -> float | None:
    """Fraction of samples whose thresholded prediction is right; None when there are none."""
    y, p = _pair(y_true, p_fake, probabilities=True)
    if y.size == 0:
        return None
    return float(np.mean(predicted_labels(p, threshold) == y))


def log_loss(y_true: Any, p_fake: Any, eps: float = LOG_LOSS_EPS) -> float | None:
    """Mean binary cross-entropy in nats, probabilities clipped to ``[eps, 1 - eps]``."""
    y, p = _pair(y_true, p_fake, probabilities=True)
    if y.size == 0:
        return None
    p = np.clip(p, eps, 1.0 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def _counts_by_threshold(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative false and true positives at each distinct score, highest score first."""
    order = np.argsort(s, kind="mergesort")[::-1]
    s, y = s[order], y[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s)), y.size - 1]
    tps = np.cumsum(y)[last_of_tie]
    fps = last_of_tie + 1 - tps
    return fps.astype(float), tps.astype(float), s[last_of_tie]


def roc_curve(y_true: Any, scores: Any, drop_intermediate: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, tpr, thresholds)`` from (0, 0) with threshold ``inf``, as ``sklearn.metrics.roc_curve``.

    Raises DataError unless both classes are present: one of the rates would be 0/0.
    """
    y, s = _pair(y_true, scores)
    _both_classes(y, "a ROC curve")
    fps, tps, thr = _counts_by_threshold(y, s)
    if drop_intermediate and fps.size > 2:
        # Keep corners only: collinear points add nothing to the curve or its area.
        keep = np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True]
        fps, tps, thr = fps[keep], tps[keep], thr[keep]
    fps, tps, thr = np.r_[0.0, fps], np.r_[0.0, tps], np.r_[np.inf, thr]
    return fps / fps[-1], tps / tps[-1], thr


def roc_auc(y_true: Any, scores: Any) -> float | None:
    """Area under the ROC curve; a tie between a real and a fake counts one half. None with one class."""
    y, s = _pair(y_true, scores)
    if y.size == 0 or y.min() == y.max():
        return None
    fpr, tpr, _ = roc_curve(y, s)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def eer(y_true: Any, scores: Any) -> float | None:
    """Equal error rate: where the ROC curve crosses ``fpr = 1 - tpr``, linearly interpolated.

    None with one class.
    """
    y, s = _pair(y_true, scores)
    if y.size == 0 or y.min() == y.max():
        return None
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    gap = (1.0 - tpr) - fpr                     # goes from 1 down to -1 along the curve
    i = int(np.argmax(gap <= 0.0))
    if gap[i] == 0.0:
        return float(fpr[i])
    t = gap[i - 1] / (gap[i - 1] - gap[i])      # fraction of the segment (i-1, i) where gap is 0
    return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))


def precision_recall_curve(y_true: Any, scores: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(precision, recall, thresholds)`` as ``sklearn.metrics.precision_recall_curve``.

    Thresholds increase; precision and recall have one more element, ending at 1 and 0.
    Raises DataError without fakes: recall would be 0/0.
    """
    y, s = _pair(y_true, scores)
    if y.sum() == 0:
        raise DataError(f"a precision-recall curve needs fake samples; {_class_summary(y)}")
    fps, tps, thr = _counts_by_threshold(y, s)
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return np.r_[precision[::-1], 1.0], np.r_[recall[::-1], 0.0], thr[::-1]


def average_precision(y_true: Any, scores: Any) -> float | None:
    """Step-wise area under the precision-recall curve (sklearn's definition, no interpolation).

    None without fakes.
    """
    y, s = _pair(y_true, scores)
    if y.sum() == 0:
        return None
    precision, recall, _ = precision_recall_curve(y, s)
    return float(-np.sum(np.diff(recall) * precision[:-1]))


def reliability_curve(y_true: Any, p_fake: Any, n_bins: int = ECE_BINS) -> ReliabilityCurve:
    """Observed fake rate against mean ``p_fake`` in ``n_bins`` equal-width bins of [0, 1].

    A probability on an inner bin edge falls in the lower bin, as in
    ``sklearn.calibration.calibration_curve(strategy="uniform")``.
    """
    if int(n_bins) != n_bins or n_bins < 1:
        raise ConfigError(f"n_bins={n_bins!r} must be a positive integer")
    n_bins = int(n_bins)
    y, p = _pair(y_true, p_fake, probabilities=True)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.searchsorted(edges[1:-1], p)
    counts = np.bincount(bins, minlength=n_bins)
    sum_y = np.bincount(bins, weights=y, minlength=n_bins)
    sum_p = np.bincount(bins, weights=p, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(counts > 0, sum_y / counts, np.nan)
        conf = np.where(counts > 0, sum_p / counts, np.nan)
    return ReliabilityCurve((edges[:-1] + edges[1:]) / 2.0, acc, conf, counts.astype(np.int64))


def expected_calibration_error(y_true: Any, p_fake: Any, n_bins: int = ECE_BINS) -> float | None:
    """Sample-weighted mean of ``|fake rate - mean p_fake|`` over the bins of :func:`reliability_curve`.

    This is the calibration error of ``p_fake`` itself (not of the top-label
    confidence), so all ``n_bins`` bins of [0, 1] are used. None when empty.
    """
    curve = reliability_curve(y_true, p_fake, n_bins)
    total = int(curve.counts.sum())
    if total == 0:
        return None
    used = curve.counts > 0
    gaps = np.abs(curve.accuracy[used] - curve.confidence[used])
    return float(np.sum(gaps * curve.counts[used]) / total)


def binary_metrics(y_true: Any, p_fake: Any, threshold: float = 0.5, n_bins: int = ECE_BINS) -> dict[str, Any]:
    """All metrics of one set of predictions as a JSON-ready dict.

    Keys: ``auc, log_loss, accuracy, eer, ap, ece, precision, recall, f1`` (float
    or None), ``n, n_real, n_fake`` (int), ``threshold`` and ``undefined``
    (metric name -> why it is None). Raises DataError when there is nothing to measure.
    """
    y, p = _pair(y_true, p_fake, probabilities=True)
    if y.size == 0:
        raise DataError("no predictions to measure: the labels and scores are empty")
    t = _threshold(threshold)
    n_fake = int(y.sum())
    n_real = int(y.size - n_fake)
    (tn, fp), (fn, tp) = confusion_matrix(y, p, t).tolist()
    undefined: dict[str, str] = {}
    classes = _class_summary(y)
    if n_real == 0 or n_fake == 0:
        undefined["auc"] = f"needs both real and fake samples; {classes}"
        undefined["eer"] = f"needs both real and fake samples; {classes}"
    if n_fake == 0:
        undefined["ap"] = f"needs fake samples; {classes}"
        undefined["recall"] = f"needs fake samples; {classes}"
    if tp + fp == 0:
        undefined["precision"] = f"no sample reaches the threshold {t:g}, so nothing is predicted fake"
    if 2 * tp + fp + fn == 0:
        undefined["f1"] = f"no fake sample and none predicted fake at threshold {t:g}"
    out: dict[str, Any] = {
        "auc": roc_auc(y, p),
        "log_loss": log_loss(y, p),
        "accuracy": accuracy(y, p, t),
        "eer": eer(y, p),
        "ap": average_precision(y, p),
        "ece": expected_calibration_error(y, p, n_bins),
        "precision": None if "precision" in undefined else tp / (tp + fp),
        "recall": None if "recall" in undefined else tp / (tp + fn),
        "f1": None if "f1" in undefined else 2 * tp / (2 * tp + fp + fn),
        "n": int(y.size),
        "n_real": n_real,
        "n_fake": n_fake,
        "threshold": t,
        "undefined": undefined,
    }
    return out
