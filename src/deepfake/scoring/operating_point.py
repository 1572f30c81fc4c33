"""The operating point: the threshold that flags a stated share of genuine videos.

Deployed detectors choose their threshold for a target rate of genuine samples
flagged (ISO/IEC 30107-3 calls it BPCER; vendors publish "catch rate at 1 %
false positives"), because the score scale of a manipulation the model never
saw is unknown while the scores of real videos are not. :func:`threshold_for_fpr`
picks the lowest threshold at which at most ``target_fpr`` of the given real
videos score at or above it (a video at or above the threshold is FAKE, as in
:class:`deepfake.scoring.rule.ScoringRule`); :func:`tpr_at_fpr` is the catch rate
of the fakes at the threshold that the reals of the same set give, the point of
the ROC curve the field reports.

With ``n`` real videos a target below ``1 / n`` cannot be read off them: the
highest of ``n`` scores sits on average at the ``n / (n + 1)`` quantile (with 4
reals, the 80th percentile: a threshold just above it flags about 20 % of unseen
reals, not 5 %). The threshold is then the one-sided normal prediction bound of
the reals' log-odds, ``mean + t(n - 1, 1 - target) * sd * sqrt(1 + 1 / n)``
(the value a new real video stays below with probability ``1 - target`` if the
log-odds are normal; Student's t because the spread is estimated from the same
few videos), and never below just above the highest real score; the operating
point says it rests on too few videos and how it was estimated.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from deepfake.core.errors import ConfigError, DataError

# Catch rates reported at these false-positive rates (evaluation.json: video_tpr_at_fpr_<pct>).
REPORTED_FPRS = (0.01, 0.05, 0.10)
DEFAULT_TARGET_FPR = 0.05            # 5 %: a common operating point for a screening detector
EMPIRICAL, PREDICTION_BOUND = "empirical", "prediction bound"   # OperatingPoint.estimate
# How an evaluation chooses its threshold: for a target false-positive rate on the validation split's real
# videos, the model's own (an evaluation-only run), or a fixed number.
METHODS = ("target_fpr", "model", "fixed")


@dataclass(frozen=True)
class OperatingPoint:
    threshold: float          # p_fake at or above it is FAKE
    target_fpr: float         # the share of real videos the threshold was chosen to flag at most
    achieved_fpr: float       # the share of the given real videos it flags
    n_real_videos: int        # how many real videos the choice rests on
    supported: bool           # n_real_videos >= 1 / target_fpr: enough reals to read the target off them
    estimate: str = "empirical"  # "empirical" quantile, or "prediction bound" (too few reals: see the module)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def warning(self) -> str | None:
        if self.supported:
            return None
        how = ("the normal prediction bound of their log-odds" if self.estimate == PREDICTION_BOUND
               else "just above the highest real score")
        return (f"the threshold rests on {self.n_real_videos} real video(s); a target false-positive rate of "
                f"{self.target_fpr:g} needs at least {min_reals(self.target_fpr)} to be read off them, so it is "
                f"{how} (achieved {self.achieved_fpr:g} on them); give the validation split more real videos "
                "for a threshold that rests on data rather than on an assumption")


def min_reals(target_fpr: float) -> int:
    """The fewest real videos that can show a false-positive rate of ``target_fpr`` (one false positive)."""
    return math.ceil(1.0 / target_fpr - 1e-9)


def check_target(target_fpr: float) -> float:
    if not (isinstance(target_fpr, (int, float)) and 0.0 < float(target_fpr) < 1.0):
        raise ConfigError(f"target_fpr={target_fpr!r} must be a share of real videos in (0, 1), e.g. 0.05")
    return float(target_fpr)


def threshold_for_fpr(real_scores: Any, target_fpr: float) -> OperatingPoint:
    """The lowest threshold flagging at most ``target_fpr`` of ``real_scores`` (video p_fake of real videos)."""
    target = check_target(target_fpr)
    s = np.sort(np.asarray(real_scores, dtype=np.float64).reshape(-1))[::-1]
    if s.size == 0:
        raise DataError("choosing a threshold for a target false-positive rate needs real videos; none was given")
    if not np.isfinite(s).all():
        raise DataError("the real videos' scores hold non-finite values; they cannot set a threshold")
    allowed = int(math.floor(target * s.size + 1e-9))      # real videos that may be flagged
    threshold = float(np.nextafter(s[allowed], np.inf))    # just above the highest score that must pass
    supported = s.size >= min_reals(target)
    estimate = EMPIRICAL
    if not supported and s.size >= 2:
        bound = prediction_bound(s, target)
        if bound > threshold:
            threshold, estimate = bound, PREDICTION_BOUND
    threshold = min(threshold, 1.0)
    achieved = float(np.mean(s >= threshold))
    return OperatingPoint(threshold, target, achieved, int(s.size), supported, estimate)


def prediction_bound(real_scores: Any, target_fpr: float) -> float:
    """The one-sided normal prediction bound of the reals' log-odds at ``1 - target_fpr``, as a probability."""
    p = np.clip(np.asarray(real_scores, dtype=np.float64), 1e-12, 1 - 1e-12)
    z = np.log(p / (1 - p))
    n = z.size
    bound = float(z.mean() + student_t_quantile(1.0 - target_fpr, n - 1) * z.std(ddof=1) * math.sqrt(1 + 1 / n))
    return float(1.0 / (1.0 + math.exp(-bound))) if bound > -700 else 0.0


def student_t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile (p > 0.5) of Student's t with ``df`` degrees of freedom: its CDF inverted by bisection,
    the CDF integrated with Simpson's rule (no scipy at run time; 1e-6 is plenty for a threshold)."""
    if df < 1 or not 0.5 < p < 1:
        raise ConfigError(f"Student's t quantile needs df >= 1 and 0.5 < p < 1; got df={df}, p={p}")
    const = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)

    def cdf(x: float) -> float:
        t = np.linspace(0.0, x, 4001)
        f = const * (1 + t * t / df) ** (-(df + 1) / 2)
        return 0.5 + float((t[1] - t[0]) / 3 * (f[0] + f[-1] + 4 * f[1:-1:2].sum() + 2 * f[2:-1:2].sum()))

    lo, hi = 0.0, NormalDist().inv_cdf(p)
    while cdf(hi) < p:
        lo, hi = hi, hi * 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < p else (lo, mid)
    return (lo + hi) / 2


def tpr_at_fpr(labels: Any, scores: Any, target_fpr: float) -> float | None:
    """Share of fakes at or above the threshold that flags at most ``target_fpr`` of the reals of the same set;
    None without both classes."""
    y = np.asarray(labels).reshape(-1).astype(int)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if y.size != s.size:
        raise DataError(f"{s.size} scores for {y.size} labels")
    reals, fakes = s[y == 0], s[y == 1]
    if reals.size == 0 or fakes.size == 0:
        return None
    point = threshold_for_fpr(reals, target_fpr)
    return float(np.mean(fakes >= point.threshold))


def metric_name(target_fpr: float) -> str:
    """``video_tpr_at_fpr_5`` for 0.05: the catch-rate metric of evaluation.json."""
    return f"video_tpr_at_fpr_{round(target_fpr * 100):d}"
