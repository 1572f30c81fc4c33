"""Figures and tables of the evaluation report (04_evaluate).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg

from deepfake.core.vocabulary import LABEL_NAMES, STATUS_OK
from deepfake.reporting.figures import (
    PANEL_INCHES,
    Figure,
    Note,
    _columns,
    _image,
    _image_grid,
    new_figure,
    readable,
    save,
    table_or_note,
)
from deepfake.scoring import metrics
from deepfake.scoring.operating_point import REPORTED_FPRS


def plot_roc(curves: Mapping[str, tuple[Any, Any]], *, title: str = "ROC curve",
             save_to: str | os.PathLike[str] | None = None) -> Figure:
    """ROC curves, e.g. ``{"frame": (y, p), "video": (y, p)}``, with their AUC in the legend."""
    fig, ax = new_figure(size=(5.0, 5.0))
    ax.plot([0, 1], [0, 1], color="gray", linestyle=":", linewidth=1, label="chance")
    for name, (y, s) in curves.items():
        auc = metrics.roc_auc(y, s)
        if auc is None:
            ax.plot([], [], " ", label=f"{name}: undefined (one class only)")
            continue
        fpr, tpr, _ = metrics.roc_curve(y, s)
        ax.plot(fpr, tpr, linewidth=2, label=f"{name} (AUC {auc:.3f})")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate (reals called fake)",
           ylabel="true positive rate (fakes caught)", title=title)
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    return save(fig, save_to)


def plot_pr_curve(curves: Mapping[str, tuple[Any, Any]], *, title: str = "Precision-recall curve",
                  save_to: str | os.PathLike[str] | None = None) -> Figure:
    """Precision-recall curves with their average precision in the legend."""
    fig, ax = new_figure(size=(5.0, 5.0))
    for name, (y, s) in curves.items():
        ap = metrics.average_precision(y, s)
        if ap is None:
            ax.plot([], [], " ", label=f"{name}: undefined (no fakes)")
            continue
        precision, recall, _ = metrics.precision_recall_curve(y, s)
        ax.step(recall, precision, where="post", linewidth=2, label=f"{name} (AP {ap:.3f})")
        ax.axhline(float(np.mean(y)), linestyle=":", linewidth=1, color="gray")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="recall (fakes caught)",
           ylabel="precision (calls of fake that are right)", title=title)
    ax.legend(loc="lower left")
    ax.grid(alpha=0.3)
    return save(fig, save_to)


def plot_reliability(y_true: Any, p_fake: Any, *, n_bins: int = metrics.ECE_BINS,
                     title: str = "Reliability diagram", threshold: float | None = None,
                     save_to: str | os.PathLike[str] | None = None) -> Figure:
    """Observed fake rate against mean predicted probability per bin; the diagonal is perfect calibration.
    ``threshold`` (the operating point) is drawn as a vertical line."""
    curve = metrics.reliability_curve(y_true, p_fake, n_bins)
    ece = metrics.expected_calibration_error(y_true, p_fake, n_bins)
    fig = Figure(figsize=(5.0, 5.8), layout="constrained")
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    width = 1.0 / n_bins
    used = curve.counts > 0
    top.bar(curve.centers[used], curve.accuracy[used], width=width * 0.9, color="tab:purple", alpha=0.7,
            label="observed fake rate")
    top.plot(curve.confidence[used], curve.accuracy[used], "o", color="black", markersize=4,
             label="bin mean p_fake")
    top.plot([0, 1], [0, 1], color="gray", linestyle=":", label="perfect calibration")
    if threshold is not None:
        for ax in (top, bottom):
            ax.axvline(threshold, color="tab:red", linestyle="--", linewidth=1.2,
                       label=f"threshold {threshold:.3g}" if ax is top else None)
    top.set(ylim=(0, 1), ylabel="fraction of fakes",
            title=f"{title} (ECE {ece:.3f})" if ece is not None else title)
    top.legend(loc="upper left")
    bottom.bar(curve.centers, curve.counts, width=width * 0.9, color="tab:gray")
    bottom.set(xlim=(0, 1), xlabel="predicted fake probability", ylabel="count")
    return save(fig, save_to)


def plot_confusion_matrix(y_true: Any, p_fake: Any, threshold: float = 0.5, *,
                          title: str | None = None, save_to: str | os.PathLike[str] | None = None) -> Figure:
    """2x2 counts (rows: truth, columns: prediction at ``threshold``) with row percentages."""
    cm = metrics.confusion_matrix(y_true, p_fake, threshold)
    fig, ax = new_figure(size=(4.2, 3.8))
    ax.imshow(cm, cmap="Blues", vmin=0)
    rows = cm.sum(axis=1, keepdims=True)
    for i in range(2):
        for j in range(2):
            share = f"\n{cm[i, j] / rows[i, 0]:.0%}" if rows[i, 0] else ""
            ax.text(j, i, f"{cm[i, j]}{share}", ha="center", va="center",
                    color="white" if cm[i, j] > cm.max() / 2 else "black", fontsize=12)
    names = [LABEL_NAMES[0], LABEL_NAMES[1]]
    ax.set_xticks([0, 1], names)
    ax.set_yticks([0, 1], names)
    ax.set(xlabel="predicted", ylabel="true", title=title or f"Confusion matrix (threshold {threshold:g})")
    return save(fig, save_to)


def plot_worst_errors(video_preds: pd.DataFrame, faces_df: pd.DataFrame, *, n: int = 12, threshold: float = 0.5,
                      ncols: int = 6, save_to: str | os.PathLike[str] | None = None) -> Figure:
    """One crop (the middle face row) of each of the ``n`` most confidently wrong videos, with its score."""
    _columns(video_preds, ["video_id", "label", "p_fake"], "video predictions")
    _columns(faces_df, ["video_id", "frame_idx", "face_idx", "abs_path"], "faces table")
    wrong = video_preds[metrics.predicted_labels(video_preds["p_fake"].to_numpy(), threshold)
                        != video_preds["label"].to_numpy()]
    wrong = wrong.assign(error=(wrong["p_fake"] - wrong["label"]).abs())
    wrong = wrong.sort_values(["error", "video_id"], ascending=[False, True]).head(n)
    faces = faces_df
    if "status" in faces.columns:
        faces = faces[faces["status"].astype(str) == STATUS_OK]
    crops, captions = [], []
    for row in wrong.itertuples(index=False):
        rows = faces[faces["video_id"] == row.video_id].sort_values(["frame_idx", "face_idx"])
        if rows.empty:
            continue
        crops.append(_image(rows["abs_path"].iloc[len(rows) // 2]))
        captions.append(f"{row.video_id}\n{LABEL_NAMES[int(row.label)]}, p_fake {row.p_fake:.2f}")
    title = f"Most confidently wrong videos (threshold {threshold:g})"
    if not crops:
        fig, ax = new_figure(size=(5.0, 1.5))
        ax.axis("off")
        ax.text(0.5, 0.5, "no misclassified video", ha="center", va="center", fontsize=12)
        ax.set_title(title)
        return save(fig, save_to)
    return _image_grid(crops, captions, ncols=ncols, title=title, tile=(PANEL_INCHES, PANEL_INCHES + 0.4),
                       save_to=save_to)


def metrics_table(evaluation: dict) -> pd.DataFrame:
    """evaluation.json's headline metrics as a level x metric table (a dash where a metric is undefined)."""
    rows: dict[str, dict[str, float | None]] = {}
    for key, value in evaluation.get("metrics", {}).items():
        level, _, name = key.partition("_")
        if level in ("video", "frame"):
            rows.setdefault(level, {})[name] = value
    return readable(pd.DataFrame(rows).T.rename_axis("level"))


# What each count of evaluation.json means, in the order a reader wants them (docs/evaluation-schema.md).
COUNT_NAMES = {
    "videos_total": "videos evaluated", "videos_scored": "videos scored", "real_videos": "real videos scored",
    "fake_videos": "fake videos scored", "videos_unscored": "videos not scored",
    "videos_failed": "not scored: failed to decode", "videos_no_face": "not scored: no face found",
    "videos_other_status": "not scored: other status", "frames_scored": "frames scored",
    "faces_scored": "face crops scored",
}


def counts_table(evaluation: dict) -> pd.DataFrame:
    """evaluation.json's counts, one named row each: what was evaluated, scored and left out."""
    counts = evaluation.get("counts", {})
    keys = [k for k in COUNT_NAMES if k in counts] + [k for k in counts if k not in COUNT_NAMES]
    return pd.DataFrame({"what": [COUNT_NAMES.get(k, k) for k in keys], "count": [counts[k] for k in keys]}
                        ).set_index("what")


def per_manipulation_table(evaluation: dict) -> pd.DataFrame:
    """One row per manipulation (reals first): videos, seen in training, accuracy, AUC against the reals,
    mean p_fake and why an AUC is undefined."""
    rows = [{"manipulation": r["manipulation"], "label": LABEL_NAMES.get(r["label"], r["label"]),
             "videos": r["n_videos"],
             "seen in training": {True: "yes", False: "no"}.get(r.get("seen_in_training"), "—"),
             "accuracy": r.get("accuracy"), "AUC vs reals": r.get("auc"),
             **{f"caught at {pct}% FPR": r.get(f"tpr_at_fpr_{pct}") for pct in CATCH_PERCENTS},
             "mean p_fake": r.get("mean_p_fake"),
             "note": r.get("note") or ""} for r in evaluation.get("per_manipulation", [])]
    return readable(pd.DataFrame(rows).set_index("manipulation")) if rows else pd.DataFrame()


CATCH_PERCENTS = tuple(round(f * 100) for f in REPORTED_FPRS)


def operating_point_table(evaluation: dict) -> pd.DataFrame:
    """How the threshold was chosen (target false-positive rate on validation reals, the model's own, fixed),
    what it rests on, and what it does on this set; the catch rates at fixed false-positive rates."""
    point = evaluation.get("operating_point") or {}
    m = evaluation.get("metrics", {})
    how = {"target_fpr": "for a target share of real videos called fake, on the validation split's reals",
           "model": "the model's own (as it is served)", "fixed": "fixed by the evaluation's threshold"}
    rows = [("threshold (video p_fake at or above it is FAKE)", evaluation.get("threshold")),
            ("chosen", how.get(point.get("method"), point.get("method", "not recorded")))]
    if point.get("method") == "target_fpr":
        rows += [("target share of real videos called fake", point.get("target_fpr")),
                 ("real videos it rests on (validation)", point.get("n_real_videos")),
                 ("share of them called fake", point.get("achieved_fpr"))]
    rows += [("real videos called fake here", m.get("video_false_positive_rate")),
             ("fakes caught here (recall)", m.get("video_recall"))]
    rows += [(f"fakes caught at {pct}% real videos called fake", m.get(f"video_tpr_at_fpr_{pct}"))
             for pct in CATCH_PERCENTS]
    return readable(pd.DataFrame(rows, columns=["measure", "value"]).set_index("measure"))


def operating_point_warning(evaluation: dict) -> Note | None:
    """A sentence when the threshold rests on too few real videos to support its target."""
    warning = (evaluation.get("operating_point") or {}).get("warning")
    return Note(f"Warning: {warning}.") if warning else None


def aggregation_table(evaluation: dict) -> pd.DataFrame:
    """Video-level metrics of every frame-to-video strategy; the headline one is marked."""
    headline = evaluation.get("aggregation")
    table = pd.DataFrame(evaluation.get("by_aggregation", {})).T
    table = table[[c for c in ("auc", "log_loss", "accuracy", "eer", "ap", "ece") if c in table.columns]]
    table.index = [f"{name} (headline)" if name == headline else name for name in table.index]
    return readable(table.rename_axis("aggregation"))


def unscored_table(evaluation: dict) -> pd.DataFrame | Note:
    """Videos that failed to decode or had no face, with the reason; a sentence when there are none."""
    table = pd.DataFrame(evaluation.get("unscored_videos", []), columns=["video_id", "status", "reason"])
    return table_or_note(table.set_index("video_id"),
                         "Every video was scored: none failed to decode or lacked a face.")


def generalisation_table(evaluation: dict) -> pd.DataFrame:
    """AUC against unseen and seen manipulations, false alarms, and ECE before/after calibration."""
    m = evaluation.get("metrics", {})
    training = evaluation.get("training") or {}
    seen = training.get("manipulations_seen")
    rows = [
        ("training mode", training.get("mode", "not recorded")),
        ("manipulations seen in training", ", ".join(seen) if seen else ("none" if seen is not None else "not recorded")),
        ("video AUC, unseen manipulations", m.get("unseen_video_auc")),
        ("video AUC, seen manipulations", m.get("seen_video_auc")),
        ("real videos called fake", m.get("video_false_positive_rate")),
        ("video ECE before calibration", m.get("video_ece_uncalibrated")),
        ("video ECE after calibration", m.get("video_ece")),
    ]
    return readable(pd.DataFrame(rows, columns=["measure", "value"]).set_index("measure"))


def recalibration_table(record: dict | None) -> pd.DataFrame | Note:
    """Before and after recalibration on the sample (cross-validated), and what the new rule rests on."""
    if not record:
        return Note("Not recalibrated here: set recalibrate=True (or run deepfake calibrate) to fit the score "
                    "scale and threshold on a labelled sample of your own.")
    names = {"ece": "ECE (video)", "false_positive_rate": "real videos called fake", "catch_rate": "fakes caught",
             "auc": "AUC"}
    rows = [{"measure": label, "before": record["before"].get(key), "after": record["after"].get(key)}
            for key, label in names.items()]
    rows += [{"measure": "videos it rests on (real + fake)", "before": None,
              "after": f"{record['n_real']} + {record['n_fake']}"},
             {"measure": "method", "before": None, "after": f"{record['method']} (scale {record['scale']:.3g}, "
                                                          f"bias {record['bias']:.3g})"},
             {"measure": "threshold", "before": None, "after": record["threshold"]}]
    return readable(pd.DataFrame(rows).set_index("measure"))
