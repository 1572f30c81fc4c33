"""Figures for the notebooks.

Every function returns a :class:`Figure` and, given ``save_to``, also writes it
as PNG. Figures are built on the Agg canvas without pyplot: nothing depends on
a display, nothing accumulates in pyplot's figure list during a long batch
run, and a returned figure still shows (once) as a notebook cell's result.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as _MplFigure

from deepfake import metrics
from deepfake.errors import DataError, ManifestError

LABEL_NAMES = {0: "real", 1: "fake"}
LABEL_COLORS = {0: "tab:blue", 1: "tab:red"}
DPI = 110                    # PNG resolution: legible in HTML reports, small files
PANEL_INCHES = 2.2           # side of one image tile in the galleries


class Figure(_MplFigure):
    """A matplotlib figure that renders itself as PNG in Jupyter without pyplot."""

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.savefig(buf, format="png", dpi=DPI)
        return buf.getvalue()


def new_figure(nrows: int = 1, ncols: int = 1, size: tuple[float, float] = (6.0, 4.0),
               **subplot_kw: Any) -> tuple[Figure, Any]:
    """A figure on the Agg canvas and its axes (one Axes, or an array as ``Figure.subplots``)."""
    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, subplot_kw=subplot_kw or None)
    return fig, axes


def save(fig: Figure, save_to: str | os.PathLike[str] | None) -> Figure:
    """Write ``fig`` as PNG at ``save_to`` (folders created) when given; returns ``fig``."""
    if save_to is not None:
        path = Path(save_to)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png", dpi=DPI)
    return fig


# -- data ----------------------------------------------------------------------------------------

def plot_counts(df: pd.DataFrame, column: str, hue: str | None = None, *, title: str | None = None,
                save_to: str | os.PathLike[str] | None = None) -> Figure:
    """Bars of how many rows have each value of ``column`` (label, manipulation, split), split by ``hue``."""
    _columns(df, [column] + ([hue] if hue else []), "table")
    fig, ax = new_figure()
    keys = _named(df[column], column)
    if hue is None:
        counts = keys.value_counts().sort_index()
        bars = ax.bar(counts.index.astype(str), counts.to_numpy(), color="tab:gray")
        ax.bar_label(bars)
    else:
        table = pd.crosstab(keys, _named(df[hue], hue))
        width = 0.8 / max(len(table.columns), 1)
        x = np.arange(len(table.index))
        for i, name in enumerate(table.columns):
            bars = ax.bar(x + i * width - 0.4 + width / 2, table[name].to_numpy(), width, label=str(name),
                          color=_label_color(name) if hue == "label" else None)
            ax.bar_label(bars, fontsize=8)
        ax.set_xticks(x, table.index.astype(str))
        ax.legend(title=hue)
    ax.set_xlabel(column)
    ax.set_ylabel("count")
    ax.set_title(title or f"Count by {column}" + (f" and {hue}" if hue else ""))
    if len(ax.get_xticklabels()) > 4:
        ax.tick_params(axis="x", labelrotation=30)
    return save(fig, save_to)


def plot_frame_grid(frames: Sequence[np.ndarray], titles: Sequence[str] | None = None, *, ncols: int = 4,
                    title: str | None = "Sampled frames",
                    save_to: str | os.PathLike[str] | None = None) -> Figure:
    """RGB frames in a grid, for a first look at the videos."""
    return _image_grid(list(frames), titles, ncols=ncols, title=title, tile=(3.2, 2.2), save_to=save_to)


def plot_detection_rate(faces_df: pd.DataFrame, by: str = "manipulation", *,
                        save_to: str | os.PathLike[str] | None = None) -> Figure:
    """Share of videos with at least one face, per value of ``by``: low bars mean lost videos."""
    _columns(faces_df, ["video_id", "status", by], "faces table")
    per_video = faces_df.assign(found=faces_df["status"].astype(str) == "ok").groupby("video_id").agg(
        found=("found", "any"), key=(by, "first"))
    per_video["key"] = _named(per_video["key"], by)
    rate = per_video.groupby("key", observed=True)["found"].agg(["mean", "size"]).sort_index()
    fig, ax = new_figure()
    bars = ax.bar(rate.index.astype(str), rate["mean"].to_numpy(), color="tab:green")
    ax.bar_label(bars, labels=[f"{m:.0%}\n(n={n})" for m, n in zip(rate["mean"], rate["size"], strict=True)], fontsize=8)
    ax.set_ylim(0, 1.15)
    ax.set_xlabel(by)
    ax.set_ylabel("videos with a face")
    ax.set_title(f"Face detection rate by {by}")
    return save(fig, save_to)


def plot_crop_gallery(crops: Sequence[np.ndarray | str | os.PathLike[str]], captions: Sequence[str] | None = None,
                      *, ncols: int = 6, title: str | None = "Face crops",
                      save_to: str | os.PathLike[str] | None = None) -> Figure:
    """Face crops (RGB arrays or image files) with captions."""
    images = [_image(c) for c in crops]
    return _image_grid(images, captions, ncols=ncols, title=title, tile=(PANEL_INCHES, PANEL_INCHES + 0.3),
                       save_to=save_to)


def plot_self_blends(images: Sequence[np.ndarray], captions: Sequence[str], *,
                     save_to: str | os.PathLike[str] | None = None) -> Figure:
    """Real / mask / pseudo-fake triplets (:func:`deepfake.reports.self_blend_examples`), one per row."""
    if not images:
        fig, ax = new_figure(size=(6.0, 1.2))
        ax.axis("off")
        ax.text(0.5, 0.5, "no landmarks in faces.csv: re-run face extraction to see self-blends",
                ha="center", va="center")
        return save(fig, save_to)
    return _image_grid(list(images), captions, ncols=3, title="Self-blended pseudo-fakes: real, mask, blend",
                       tile=(PANEL_INCHES, PANEL_INCHES + 0.3), save_to=save_to)


# -- training ----------------------------------------------------------------------------------------

def plot_training_curves(history: pd.DataFrame, x: str = "epoch", *,
                         save_to: str | os.PathLike[str] | None = None) -> Figure:
    """Loss columns on the left, accuracy/AUC columns on the right, against ``x`` (or the row number)."""
    loss = [c for c in history.columns if "loss" in str(c)]
    score = [c for c in history.columns if any(k in str(c) for k in ("acc", "auc"))]
    if not loss and not score:
        raise DataError(f"the history table has no loss, accuracy or AUC column; columns: "
                        f"{', '.join(map(str, history.columns))}")
    xs = history[x].to_numpy() if x in history.columns else np.arange(1, len(history) + 1)
    fig, axes = new_figure(1, 2, size=(10.0, 3.8))
    for ax, cols, ylabel in ((axes[0], loss, "loss"), (axes[1], score, "score")):
        for c in cols:
            ax.plot(xs, history[c].to_numpy(dtype=float), marker="o", label=str(c))
        ax.set_xlabel(x if x in history.columns else "epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if cols:
            ax.legend()
    axes[0].set_title("Loss")
    axes[1].set_title("Accuracy / AUC")
    return save(fig, save_to)


# -- evaluation --------------------------------------------------------------------------------------

def plot_score_histogram(preds: pd.DataFrame, score: str = "p_fake", *, bins: int = 20,
                         threshold: float | None = 0.5, title: str | None = None,
                         save_to: str | os.PathLike[str] | None = None) -> Figure:
    """Distribution of ``score`` for real and fake rows: overlap is where the errors are."""
    _columns(preds, ["label", score], "predictions table")
    fig, ax = new_figure()
    edges = np.linspace(0.0, 1.0, bins + 1)
    for label in (0, 1):
        values = preds.loc[preds["label"] == label, score].to_numpy(dtype=float)
        ax.hist(values, bins=edges, alpha=0.55, color=LABEL_COLORS[label],
                label=f"{LABEL_NAMES[label]} (n={values.size})")
    if threshold is not None:
        ax.axvline(threshold, color="black", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
    ax.set_xlim(0, 1)
    ax.set_xlabel("fake probability")
    ax.set_ylabel("count")
    ax.set_title(title or "Score distribution")
    ax.legend()
    return save(fig, save_to)


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
                     title: str = "Reliability diagram",
                     save_to: str | os.PathLike[str] | None = None) -> Figure:
    """Observed fake rate against mean predicted probability per bin; the diagonal is perfect calibration."""
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
        faces = faces[faces["status"].astype(str) == "ok"]
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


# -- helpers -----------------------------------------------------------------------------------------

def _image_grid(images: list[np.ndarray], captions: Sequence[str] | None, *, ncols: int, title: str | None,
                tile: tuple[float, float], save_to: str | os.PathLike[str] | None) -> Figure:
    if not images:
        raise DataError("no image to show: the list of frames or crops is empty")
    if captions is not None and len(captions) != len(images):
        raise DataError(f"got {len(images)} images but {len(captions)} captions; give one caption per image")
    ncols = max(1, min(ncols, len(images)))
    nrows = math.ceil(len(images) / ncols)
    fig, axes = new_figure(nrows, ncols, size=(tile[0] * ncols, tile[1] * nrows + (0.4 if title else 0.0)))
    for i, ax in enumerate(np.atleast_1d(axes).ravel()):
        ax.axis("off")
        if i < len(images):
            ax.imshow(images[i])
            if captions is not None:
                ax.set_title(str(captions[i]), fontsize=8)
    if title:
        fig.suptitle(title)
    return save(fig, save_to)


def _image(item: np.ndarray | str | os.PathLike[str]) -> np.ndarray:
    if isinstance(item, np.ndarray):
        return item
    from deepfake.dataset import read_rgb  # imports torch: only when given files

    return read_rgb(item)


def _named(values: pd.Series, column: str) -> pd.Series:
    """Labels shown as real/fake rather than 0/1."""
    if column == "label":
        names = values.map(lambda v: LABEL_NAMES.get(int(v), str(v)))
        order = [*LABEL_NAMES.values(), *sorted(set(names) - set(LABEL_NAMES.values()))]
        return pd.Series(pd.Categorical(names, categories=order), index=values.index, name=values.name)
    return values.astype(str)


def _label_color(name: Any) -> str | None:
    for label, label_name in LABEL_NAMES.items():
        if name == label_name:
            return LABEL_COLORS[label]
    return None


def _columns(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ManifestError(f"the {what} lacks column(s) {', '.join(missing)}; "
                            f"has {', '.join(map(str, df.columns))}")
