"""Shared pieces of the notebooks' figures: a figure, saving it, grids of images, colours.

Each report module (``explore_report``, ``extract_report``, ``train_report``,
``evaluate_report``) holds the figures and tables of one notebook, so editing
one notebook's figure changes that step's code and nothing else's.
"""

from __future__ import annotations

import io
import math
import os
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as _MplFigure

from deepfake.core.errors import DataError, ManifestError
from deepfake.core.vocabulary import LABEL_NAMES

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


def plot_score_histogram(preds: pd.DataFrame, score: str = "p_fake", *, bins: int = 20,
                         threshold: float | None = 0.5, title: str | None = None,
                         xlabel: str = "fake probability (p_fake)", span: tuple[float, float] = (0.0, 1.0),
                         threshold_label: str | None = None,
                         save_to: str | os.PathLike[str] | None = None) -> Figure:
    """Distribution of ``score`` over ``span`` for real and fake rows, side by side in each bin (bars never
    blend into a colour the legend does not name): overlap is where the errors are."""
    _columns(preds, ["label", score], "predictions table")
    fig, ax = new_figure()
    edges = np.linspace(span[0], span[1], bins + 1)
    values = [preds.loc[preds["label"] == label, score].to_numpy(dtype=float) for label in (0, 1)]
    ax.hist(values, bins=edges, color=[LABEL_COLORS[0], LABEL_COLORS[1]],
            label=[f"{LABEL_NAMES[label]} (n={v.size})" for label, v in zip((0, 1), values, strict=True)])
    if threshold is not None:
        ax.axvline(threshold, color="black", linestyle="--", linewidth=1,
                   label=threshold_label or f"threshold {threshold:g}")
    ax.set_xlim(*span)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.set_title(title or "Score distribution")
    ax.legend()
    return save(fig, save_to)


class Note:
    """A sentence shown in place of an empty table ("no video failed"), in HTML and as text."""

    def __init__(self, text: str) -> None:
        self.text = text

    def _repr_html_(self) -> str:
        import html

        return f"<p><em>{html.escape(self.text)}</em></p>"

    def __repr__(self) -> str:
        return self.text


class Table(pd.DataFrame):
    """A DataFrame a notebook shows whole: pandas cuts a cell longer than 50 characters to "..."."""

    @property
    def _constructor(self) -> type[Table]:
        return Table

    def _repr_html_(self) -> str | None:
        with pd.option_context("display.max_colwidth", None):
            return super()._repr_html_()


def readable(table: pd.DataFrame, digits: int = 4) -> Table:
    """A table for people: numbers to ``digits`` significant digits, missing values as a dash, never NaN,
    no cell cut short."""
    def cell(v: Any) -> Any:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "—"
        if isinstance(v, (float, np.floating)):
            return format(float(v), f".{digits}g")
        return v

    return Table(table.astype(object).apply(lambda column: column.map(cell)))


def table_or_note(table: pd.DataFrame, note: str) -> pd.DataFrame | Note:
    """``table``, or ``note`` when it has no row: an empty table shows only headers."""
    return table if len(table) else Note(note)


def _image_grid(images: list[np.ndarray], captions: Sequence[str] | None, *, ncols: int, title: str | None,
                tile: tuple[float, float], save_to: str | os.PathLike[str] | None) -> Figure:
    if not images:
        raise DataError("no image to show: the list of frames or crops is empty")
    if captions is not None and len(captions) != len(images):
        raise DataError(f"got {len(images)} images but {len(captions)} captions; give one caption per image")
    ncols = max(1, min(ncols, len(images)))
    nrows = math.ceil(len(images) / ncols)
    # A title wider than a narrow grid (one crop) is wrapped instead of cut at the figure's edges.
    lines = textwrap.wrap(title, max(12, int(tile[0] * ncols * 8))) if title else []
    title_inches = 0.4 + 0.25 * (len(lines) - 1) if lines else 0.0
    fig, axes = new_figure(nrows, ncols, size=(tile[0] * ncols, tile[1] * nrows + title_inches))
    for i, ax in enumerate(np.atleast_1d(axes).ravel()):
        ax.axis("off")
        if i < len(images):
            ax.imshow(images[i])
            if captions is not None:
                ax.set_title(str(captions[i]), fontsize=8)
    if lines:
        fig.suptitle("\n".join(lines))
    return save(fig, save_to)


def _image(item: np.ndarray | str | os.PathLike[str]) -> np.ndarray:
    if isinstance(item, np.ndarray):
        return item
    from deepfake.data.dataset import read_rgb

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
