"""The checks of a window against its baseline: what counts as a violation, and why.

Every check compares a figure of the window with the same figure of the
evaluation the model was gated on, and calls it a violation only when both hold:

- the difference is larger than a set margin (an effect worth acting on), and
- it is statistically significant at ``alpha`` (not the noise of a small window).

Rates (no face, errors, share called FAKE, and with ground truth the
false-positive and catch rates) use an exact binomial test of the window's
count against the evaluation's rate. Distributions (the ``p_fake`` of what the
model calls REAL, the share of sampled frames with a face) use the two-sample
Kolmogorov-Smirnov test against the evaluation's videos. Why KS and not the
population stability index: docs/monitoring.md. A check without enough data is
``skipped`` with the reason, never a pass or a violation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from deepfake.core.config import StageConfig
from deepfake.core.errors import ConfigError
from deepfake.core.vocabulary import FAKE, REAL
from deepfake.monitoring.baseline import Baseline, MonitoredModel
from deepfake.monitoring.traffic import ERROR, NO_FACE, OK, UNREADABLE
from deepfake.scoring.metrics import roc_auc

PASSED, VIOLATION, SKIPPED = "ok", "violation", "skipped"
CHECK_STATUSES = (PASSED, VIOLATION, SKIPPED)
MIN_BASELINE = 5                 # evaluation videos a distribution check needs


@dataclass(frozen=True)
class MonitorConfig(StageConfig):
    """The limits of ``deepfake monitor`` (``--set name=value``)."""

    alpha: float = 0.01                   # significance level: a difference counts only with p < alpha
    min_requests: int = 10                # requests (scored videos for score checks) a check needs in the window
    max_no_face_increase: float = 0.10    # no-face rate above the evaluation's by more than this
    max_error_increase: float = 0.05      # error answers (4xx, 5xx) above the evaluation's undecodable share by more
    max_fake_share_change: float = 0.15   # share called FAKE away from the expected share by more than this
    fake_prevalence: float | None = None  # share of fakes expected in traffic; None: the evaluation's own mix
    min_ks_distance: float = 0.25         # Kolmogorov-Smirnov distance of the called-REAL scores beyond which a shift counts
    max_face_frame_drop: float = 0.15     # mean share of sampled frames with a face below the evaluation's by more
    max_fpr_increase: float = 0.10        # ground truth: reals called FAKE above the evaluation's rate by more than this
    max_catch_rate_drop: float = 0.15     # ground truth: fakes called FAKE below the evaluation's rate by more than this
    max_auc_drop: float = 0.10            # ground truth: video AUC below the evaluation's by more than this
    min_labelled: int = 10                # labelled reals (for the FPR), fakes (catch rate), both (AUC) needed
    bucket: str = "auto"                  # period of the figures over time: hour, day, or auto (day beyond 72 h)

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ConfigError(f"alpha={self.alpha} must lie between 0 and 1")
        for name in ("max_no_face_increase", "max_error_increase", "max_fake_share_change", "min_ks_distance",
                     "max_face_frame_drop", "max_fpr_increase", "max_catch_rate_drop", "max_auc_drop"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"{name}={getattr(self, name)} must lie between 0 and 1")
        if self.fake_prevalence is not None and not 0 <= self.fake_prevalence <= 1:
            raise ConfigError(f"fake_prevalence={self.fake_prevalence} must lie between 0 and 1 (or be left out)")
        if self.min_requests < 1 or self.min_labelled < 1:
            raise ConfigError("min_requests and min_labelled must be at least 1")
        if self.bucket not in ("auto", "hour", "day"):
            raise ConfigError(f"bucket={self.bucket!r} must be hour, day or auto")


def run_checks(table: pd.DataFrame, baseline: Baseline, model: MonitoredModel, config: MonitorConfig,
               labelled: pd.DataFrame | None = None) -> list[dict[str, Any]]:
    """Every check of the window (``table`` from :func:`deepfake.monitoring.traffic.traffic_table`)."""
    answered = table[table["outcome"].isin([OK, NO_FACE])]
    other = answered[answered["model_version"].astype(str) != model.version]
    mine = table.drop(index=other.index)
    checks = [_model_check(answered, other, model)]
    videos = mine[mine["outcome"].isin([OK, NO_FACE])]
    scored = mine[mine["outcome"] == OK]
    checks.append(_rate_check(
        "no_face_rate", int((videos["outcome"] == NO_FACE).sum()), len(videos), baseline.no_face_rate,
        config.max_no_face_increase, "greater", config,
        what="videos answered no_face (no face in any sampled frame)", base="the evaluation's no-face share"))
    judged = mine[mine["outcome"] != UNREADABLE]
    checks.append(_rate_check(
        "error_rate", int((judged["outcome"] == ERROR).sum()), len(judged), baseline.failed_rate,
        config.max_error_increase, "greater", config,
        what="requests answered with an error", base="the evaluation's share of undecodable videos"))
    expected = baseline.expected_fake_share(config.fake_prevalence)
    checks.append(_rate_check(
        "fake_share", int(scored["called_fake"].astype(bool).sum()), len(scored), expected,
        config.max_fake_share_change, "two-sided", config, what="scored videos called FAKE",
        base="the evaluation's share" if config.fake_prevalence is None
        else f"FPR x (1 - {config.fake_prevalence:g}) + catch rate x {config.fake_prevalence:g}"))
    called_real = scored.loc[~scored["called_fake"].astype(bool), "p_fake"].astype(float).to_numpy()
    checks.append(_distribution_check(
        "score_drift", called_real, baseline.real_called_real, config.min_ks_distance, config,
        what="p_fake of the videos called REAL", base="the evaluation's real videos called REAL",
        margin_on="distance"))
    shares = scored["face_frame_share"].dropna().astype(float).to_numpy()
    checks.append(_distribution_check(
        "face_frame_share", shares, np.asarray(baseline.face_frame_share, dtype=float), config.max_face_frame_drop,
        config, what="share of sampled frames with a face, per scored video",
        base="the evaluation's scored videos", margin_on="mean_drop"))
    if labelled is not None:
        checks += ground_truth_checks(scored, labelled, baseline, config)
    return checks


def ground_truth_checks(scored: pd.DataFrame, labelled: pd.DataFrame, baseline: Baseline,
                        config: MonitorConfig) -> list[dict[str, Any]]:
    """False-positive rate, catch rate and AUC of the scored requests that have a label."""
    merged = scored.merge(labelled, on="join_id", how="inner")
    reals = merged[merged["truth"] == REAL]
    fakes = merged[merged["truth"] == FAKE]
    fpr = _rate_check("false_positive_rate", int(reals["called_fake"].astype(bool).sum()), len(reals),
                      baseline.false_positive_rate, config.max_fpr_increase, "greater", config,
                      what="labelled real videos called FAKE", base="the evaluation's false-positive rate",
                      minimum=config.min_labelled)
    catch = _rate_check("catch_rate", int(fakes["called_fake"].astype(bool).sum()), len(fakes), baseline.catch_rate,
                        config.max_catch_rate_drop, "less", config, what="labelled fakes called FAKE",
                        base="the evaluation's catch rate (recall)", minimum=config.min_labelled)
    auc_check = _check("auc", what="video AUC of the labelled scored videos", base="the evaluation's video AUC",
                       statistic="difference", baseline=baseline.auc, n=len(merged), margin=config.max_auc_drop)
    if min(len(reals), len(fakes)) < config.min_labelled:
        auc_check.update(status=SKIPPED, reason=f"{len(reals)} labelled real and {len(fakes)} labelled fake "
                                                f"video(s); the AUC needs {config.min_labelled} of each")
    elif baseline.auc is None:
        auc_check.update(status=SKIPPED, reason="the evaluation has no AUC")
    else:
        auc = roc_auc(merged["truth"].astype(int), merged["p_fake"].astype(float))
        auc_check["value"] = auc
        bad = auc is not None and auc < baseline.auc - config.max_auc_drop
        auc_check.update(status=VIOLATION if bad else PASSED, reason=(
            f"AUC {auc:.3f} vs {baseline.auc:.3f} in evaluation"
            f"{' (more than ' + format(config.max_auc_drop, 'g') + ' below)' if bad else ''}"))
    return [fpr, catch, auc_check]


def violations(checks: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"check": c["name"], "description": c["reason"], "value": c["value"], "baseline": c["baseline"]}
            for c in checks if c["status"] == VIOLATION]


def binomial_p(k: int, n: int, p0: float, alternative: str) -> float:
    """Exact binomial test of ``k`` successes in ``n`` against rate ``p0``."""
    from scipy.stats import binomtest

    return float(binomtest(k, n, min(max(p0, 0.0), 1.0), alternative=alternative).pvalue)


def ks_test(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov distance and p-value (exact for small samples)."""
    from scipy.stats import ks_2samp

    result = ks_2samp(a, b, alternative="two-sided", method="auto")
    return float(result.statistic), float(result.pvalue)


def _check(name: str, *, what: str, base: str, statistic: str, baseline: float | None, n: int,
           margin: float) -> dict[str, Any]:
    return {"name": name, "status": SKIPPED, "what": what, "compared_with": base, "statistic": statistic,
            "value": None, "baseline": baseline, "margin": margin, "p_value": None, "n": int(n), "reason": ""}


def _model_check(answered: pd.DataFrame, other: pd.DataFrame, model: MonitoredModel) -> dict[str, Any]:
    check = _check("model_version", what="responses from another model than the monitored one",
                   base=f"the monitored model {model.version}", statistic="count", baseline=0.0, n=len(answered),
                   margin=0.0)
    check["value"] = float(len(other))
    if len(other):
        versions = ", ".join(sorted({str(v) for v in other["model_version"]}))
        check.update(status=VIOLATION, reason=f"{len(other)} of {len(answered)} response(s) came from model "
                     f"{versions}, not {model.version}: the endpoint serves another model than the baseline's; "
                     "they are left out of the other checks")
    else:
        check.update(status=PASSED, reason=f"all {len(answered)} response(s) came from {model.version}")
    return check


def _rate_check(name: str, k: int, n: int, p0: float | None, margin: float, alternative: str,
                config: MonitorConfig, *, what: str, base: str, minimum: int | None = None) -> dict[str, Any]:
    check = _check(name, what=what, base=base, statistic="binomial", baseline=p0, n=n, margin=margin)
    need = config.min_requests if minimum is None else minimum
    if n < need:
        unit = "request(s) in the window" if minimum is None else f"{what.split(' called')[0]} (of {what})"
        check["reason"] = f"{n} {unit}; the check needs {need}"
        return check
    rate = k / n
    check["value"] = rate
    if p0 is None:
        check["reason"] = "the evaluation does not say this rate"
        return check
    p = binomial_p(k, n, p0, alternative)
    check["p_value"] = p
    diff = rate - p0
    beyond = {"greater": diff > margin, "less": -diff > margin, "two-sided": abs(diff) > margin}[alternative]
    significant = p < config.alpha
    check["status"] = VIOLATION if beyond and significant else PASSED
    check["reason"] = (f"{k} of {n} {what}: {rate:.3f} against {p0:.3f} ({base}); binomial p = {p:.2g}"
                       + ("" if check["status"] == PASSED else
                          f" < {config.alpha:g} and a difference of {diff:+.3f} beyond the margin {margin:g}"))
    return check


def _distribution_check(name: str, window: np.ndarray, reference: np.ndarray, margin: float, config: MonitorConfig,
                        *, what: str, base: str, margin_on: str) -> dict[str, Any]:
    check = _check(name, what=what, base=base, statistic="ks_2samp", baseline=None, n=len(window), margin=margin)
    check["n_baseline"] = int(len(reference))
    if len(reference):
        check["baseline"] = float(np.mean(reference))
    if len(window) < config.min_requests:
        check["reason"] = f"{len(window)} value(s) in the window; the check needs {config.min_requests}"
        return check
    if len(reference) < MIN_BASELINE:
        check["reason"] = f"the evaluation has {len(reference)} value(s) to compare with; the check needs {MIN_BASELINE}"
        return check
    distance, p = ks_test(window, reference)
    mean_drop = float(np.mean(reference) - np.mean(window))
    check.update(value=float(np.mean(window)), p_value=p, ks_distance=distance, mean_difference=-mean_drop)
    beyond = distance > margin if margin_on == "distance" else mean_drop > margin
    significant = p < config.alpha
    check["status"] = VIOLATION if beyond and significant else PASSED
    effect = f"KS distance {distance:.3f}" if margin_on == "distance" else f"mean {-mean_drop:+.3f}"
    check["reason"] = (f"{what}: mean {np.mean(window):.3f} over {len(window)} against {np.mean(reference):.3f} "
                       f"over {len(reference)} ({base}); {effect}, KS p = {p:.2g}"
                       + ("" if check["status"] == PASSED else
                          f" < {config.alpha:g} with the {'distance' if margin_on == 'distance' else 'drop'} "
                          f"beyond the margin {margin:g}"))
    return check
