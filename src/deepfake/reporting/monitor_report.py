"""Figures and the HTML page of ``deepfake monitor``: a window of captured traffic against its baseline.

The page is one self-contained file (figures embedded as PNG), so it reads the
same opened from disk, from S3 or attached to an alarm. Every figure takes plain
data: the traffic table (a row per captured request), the summary written to
``monitoring.json`` and the evaluation's reference values.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deepfake.core.files import atomic_write_text
from deepfake.reporting.figures import DPI, LABEL_COLORS, Figure, new_figure, readable, save

OUTCOME_COLORS = {"ok": "tab:green", "no_face": "tab:orange", "unreadable": "tab:gray"}
ERROR_COLORS = ("tab:red", "tab:purple", "tab:brown", "tab:pink", "darkred", "indigo")
WINDOW_COLOR, BASELINE_COLOR = "tab:blue", "0.35"
STATUS_COLORS = {"ok": "#1a7f37", "violation": "#c62828", "skipped": "#6e7781"}


def plot_requests(periods: Sequence[Mapping[str, Any]], table: pd.DataFrame, *,
                  save_to: str | os.PathLike[str] | None = None) -> Figure:
    """Requests per period, stacked by outcome, each error kind (class and HTTP status) apart."""
    fig, ax = new_figure(size=(8.0, 3.4))
    starts = pd.to_datetime([p["start"] for p in periods], utc=True)
    x = np.arange(len(periods))
    bottom = np.zeros(len(periods))
    for outcome in ("ok", "no_face", "unreadable"):
        values = np.array([p[outcome] for p in periods], dtype=float)
        if values.any():
            ax.bar(x, values, bottom=bottom, color=OUTCOME_COLORS[outcome], label=outcome)
            bottom += values
    errors = table[table["outcome"] == "error"]
    if len(errors):
        freq = _freq(starts)
        keys = errors["time"].dt.floor(freq)
        kinds = errors.assign(kind=errors["error"].astype(str) + " " + errors["http_status"].astype(int).astype(str))
        for i, (kind, rows) in enumerate(kinds.groupby("kind")):
            per = rows.groupby(keys[rows.index]).size()
            values = np.array([per.get(s, 0) for s in starts], dtype=float)
            ax.bar(x, values, bottom=bottom, color=ERROR_COLORS[i % len(ERROR_COLORS)], label=f"error: {kind}")
            bottom += values
    _time_axis(ax, starts)
    ax.set(ylabel="requests", title="Requests per period, by outcome")
    if len(table):
        ax.legend(fontsize=8, loc="upper left")
    return save(fig, save_to)


def plot_rates(periods: Sequence[Mapping[str, Any]], *, expected_fake_share: float | None,
               baseline_no_face: float | None, save_to: str | os.PathLike[str] | None = None) -> Figure:
    """Share called FAKE and no-face rate per period, with the evaluation's values."""
    fig, axes = new_figure(1, 2, size=(9.0, 3.2))
    starts = pd.to_datetime([p["start"] for p in periods], utc=True)
    for ax, key, base, title in ((axes[0], "fake_share", expected_fake_share, "Share called FAKE"),
                                 (axes[1], "no_face_rate", baseline_no_face, "No-face rate")):
        values = np.array([np.nan if p[key] is None else p[key] for p in periods], dtype=float)
        ax.plot(np.arange(len(periods)), values, marker="o", color=WINDOW_COLOR, label="window")
        if base is not None:
            ax.axhline(base, color=BASELINE_COLOR, linestyle="--", label=f"evaluation {base:.3f}")
        _time_axis(ax, starts)
        ax.set(ylim=(-0.02, 1.02), title=title)
        ax.legend(fontsize=8)
    return save(fig, save_to)


def plot_scores(table: pd.DataFrame, reference: Mapping[str, np.ndarray], threshold: float, *,
                save_to: str | os.PathLike[str] | None = None) -> Figure:
    """The window's ``p_fake`` against the evaluation's, as histograms and as the cumulative distributions
    of what is called REAL (what the drift test compares)."""
    fig, axes = new_figure(1, 2, size=(10.0, 3.6))
    scored = table[table["outcome"] == "ok"]
    edges = np.linspace(0, 1, 21)
    window = scored["p_fake"].astype(float).to_numpy()
    for values, color, name in ((reference["real_p_fake"], LABEL_COLORS[0], "evaluation reals"),
                                (reference["fake_p_fake"], LABEL_COLORS[1], "evaluation fakes"),
                                (window, WINDOW_COLOR, "window")):
        if len(values):
            axes[0].hist(values, bins=edges, density=True, histtype="step", linewidth=2, color=color,
                         label=f"{name} (n={len(values)})")
    axes[0].axvline(threshold, color="black", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
    axes[0].set(xlim=(0, 1), xlabel="p_fake", ylabel="density", title="Scores")
    axes[0].legend(fontsize=7)
    called_real = window[window < threshold]
    for values, color, name in ((reference["real_called_real"], BASELINE_COLOR, "evaluation reals called REAL"),
                                (called_real, WINDOW_COLOR, "window called REAL")):
        if len(values):
            xs = np.sort(values)
            axes[1].step(xs, np.arange(1, len(xs) + 1) / len(xs), where="post", color=color, linewidth=2,
                         label=f"{name} (n={len(xs)})")
    axes[1].set(xlim=(0, max(threshold, 1e-3)), ylim=(0, 1.02), xlabel="p_fake", ylabel="cumulative share",
                title="Called REAL: cumulative distribution")
    axes[1].legend(fontsize=7, loc="lower right")
    return save(fig, save_to)


def plot_faces(table: pd.DataFrame, reference_shares: np.ndarray, *,
               save_to: str | os.PathLike[str] | None = None) -> Figure:
    """Share of sampled frames with a face per scored video (against the evaluation's) and faces per frame."""
    fig, axes = new_figure(1, 2, size=(9.0, 3.2))
    scored = table[table["outcome"] == "ok"]
    edges = np.linspace(0, 1, 11)
    for values, color, name in ((reference_shares, BASELINE_COLOR, "evaluation"),
                                (scored["face_frame_share"].dropna().astype(float).to_numpy(), WINDOW_COLOR, "window")):
        if len(values):
            axes[0].hist(values, bins=edges, density=True, histtype="step", linewidth=2, color=color,
                         label=f"{name} (n={len(values)})")
    axes[0].set(xlim=(0, 1), xlabel="frames with a face / frames sampled", ylabel="density",
                title="Frames with a face, per video")
    axes[0].legend(fontsize=8)
    per_frame = scored["faces_per_frame"].dropna().astype(float).to_numpy()
    if len(per_frame):
        axes[1].hist(per_frame, bins=np.arange(0.75, max(3.0, per_frame.max()) + 0.5, 0.25), color=WINDOW_COLOR)
    axes[1].set(xlabel="faces per frame with a face", ylabel="videos", title="Faces per frame")
    return save(fig, save_to)


def plot_inputs(table: pd.DataFrame, *, save_to: str | os.PathLike[str] | None = None) -> Figure:
    """What arrives: resolution, codec, file size, duration and bits per pixel of the videos."""
    fig, axes = new_figure(1, 5, size=(16.0, 3.2))
    videos = table[table["outcome"].isin(["ok", "no_face"])]
    sizes = videos.dropna(subset=["width", "height"])
    if len(sizes):
        grouped = sizes.groupby(["width", "height"]).size()
        w, h = zip(*grouped.index, strict=True)
        axes[0].scatter(w, h, s=30 + 20 * grouped.to_numpy(), color=WINDOW_COLOR, alpha=0.7)
        for (wi, hi), n in grouped.items():
            axes[0].annotate(f"{int(wi)}x{int(hi)} ({n})", (wi, hi), fontsize=7, xytext=(3, 3),
                             textcoords="offset points")
    axes[0].margins(0.3)                                 # room for the labels
    axes[0].set(xlabel="width (px)", ylabel="height (px)", title="Resolution")
    codecs = videos["codec"].dropna().astype(str).value_counts()
    axes[1].barh(codecs.index[::-1], codecs.to_numpy()[::-1], color=WINDOW_COLOR)
    axes[1].set(xlabel="videos", title="Codec")
    megabytes = videos["video_bytes"].dropna().astype(float).to_numpy() / 1e6
    if len(megabytes):
        axes[2].hist(megabytes, bins=15, color=WINDOW_COLOR)
    axes[2].set(xlabel="MB", ylabel="videos", title="File size")
    seconds = videos["duration_s"].dropna().astype(float).to_numpy()
    if len(seconds):
        axes[3].hist(seconds, bins=15, color=WINDOW_COLOR)
    axes[3].set(xlabel="seconds", ylabel="videos", title="Duration")
    bpp = videos["bits_per_pixel"].dropna().astype(float).to_numpy()
    if len(bpp):
        axes[4].hist(bpp, bins=15, color=WINDOW_COLOR)
    axes[4].set(xlabel="bits per pixel per frame", ylabel="videos", title="Compression")
    return save(fig, save_to)


def plot_latency(table: pd.DataFrame, *, save_to: str | os.PathLike[str] | None = None) -> Figure:
    fig, ax = new_figure(size=(5.0, 3.2))
    values = table["latency_ms"].dropna().astype(float).to_numpy()
    if len(values):
        ax.hist(values, bins=20, color=WINDOW_COLOR)
        ax.axvline(float(np.median(values)), color="black", linestyle="--", linewidth=1,
                   label=f"median {np.median(values):.0f} ms")
        ax.legend(fontsize=8)
    ax.set(xlabel="ms", ylabel="requests", title="Scoring latency")
    return save(fig, save_to)


def plot_ground_truth(periods: Sequence[Mapping[str, Any]], baseline: Mapping[str, Any], *,
                      save_to: str | os.PathLike[str] | None = None) -> Figure:
    """AUC, catch rate and false-positive rate of the labelled requests per period, with the evaluation's."""
    fig, axes = new_figure(1, 3, size=(12.0, 3.2))
    starts = pd.to_datetime([p["start"] for p in periods], utc=True)
    for ax, key, base_key, title in ((axes[0], "auc", "auc", "AUC"),
                                     (axes[1], "catch_rate", "catch_rate", "Catch rate (fakes called FAKE)"),
                                     (axes[2], "false_positive_rate", "false_positive_rate",
                                      "False-positive rate (reals called FAKE)")):
        values = np.array([np.nan if p.get(key) is None else p[key] for p in periods], dtype=float)
        ax.plot(np.arange(len(periods)), values, marker="o", color=WINDOW_COLOR, label="labelled requests")
        if baseline.get(base_key) is not None:
            ax.axhline(baseline[base_key], color=BASELINE_COLOR, linestyle="--",
                       label=f"evaluation {baseline[base_key]:.3f}")
        _time_axis(ax, starts)
        ax.set(ylim=(-0.02, 1.02), title=title)
        ax.legend(fontsize=8)
    return save(fig, save_to)


def checks_table(checks: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    rows = [{"check": c["name"], "status": c["status"], "window": c["value"], "evaluation": c["baseline"],
             "p": c["p_value"], "n": c["n"], "why": c["reason"]} for c in checks]
    return pd.DataFrame(rows, columns=["check", "status", "window", "evaluation", "p", "n", "why"])


def write_report(summary: Mapping[str, Any], table: pd.DataFrame, reference: Mapping[str, np.ndarray],
                 out: str | os.PathLike[str]) -> Path:
    """The HTML page of one window; returns its path."""
    base = summary["baseline"]
    figures = [
        ("Requests", plot_requests(summary["periods"], table)),
        ("Rates over time", plot_rates(summary["periods"], expected_fake_share=_expected_share(summary),
                                       baseline_no_face=base["no_face_rate"])),
        ("Scores", plot_scores(table, reference, summary["model"]["threshold"])),
        ("Faces", plot_faces(table, reference["face_frame_share"])),
        ("Inputs", plot_inputs(table)),
        ("Latency", plot_latency(table)),
    ]
    if summary["ground_truth"] is not None:
        figures.append(("Ground truth over time", plot_ground_truth(summary["periods"], base)))
    page = _page(summary, figures)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, page)
    return path


def _page(summary: Mapping[str, Any], figures: Sequence[tuple[str, Figure]]) -> str:
    window, counts, model = summary["window"], summary["counts"], summary["model"]
    found = summary["violations"]
    verdict = (f"<p class='verdict bad'>{len(found)} violation(s): "
               + "; ".join(html.escape(v["check"]) for v in found) + "</p>") if found \
        else "<p class='verdict good'>No violation.</p>"
    overview = pd.DataFrame([
        ("window", f"{window['since']} to {window['until']} (requests {window['first_request'] or '-'} "
                   f"to {window['last_request'] or '-'})"),
        ("capture", f"{summary['capture']['location']} ({summary['capture']['files']} file(s), "
                    f"{summary['capture']['unreadable_records']} unreadable record(s))"),
        ("model", f"{model['version']} ({model['source']}); threshold {model['threshold']:g}, "
                  f"{model['aggregation']}"),
        ("baseline", f"evaluation {summary['baseline']['source']} ({summary['baseline']['videos_total']} videos, "
                     f"split {summary['baseline']['split']}, fakes {summary['baseline']['fakes']})"),
        ("requests", f"{counts['requests']}: {counts['ok']} scored ({counts['called_fake']} called FAKE), "
                     f"{counts['no_face']} no face, {counts['error']} error(s), {counts['unreadable']} unreadable"),
    ], columns=["", "this window"])
    parts = [f"<h1>Monitoring: {html.escape(str(window['since']))} to {html.escape(str(window['until']))}</h1>",
             verdict, overview.to_html(index=False, border=0, classes="facts"),
             "<h2>Checks</h2>", _checks_html(summary["checks"])]
    if counts["error_kinds"]:
        parts += ["<h2>Errors by kind</h2>",
                  pd.DataFrame(counts["error_kinds"]).to_html(index=False, border=0)]
    for title, fig in figures:
        parts += [f"<h2>{html.escape(title)}</h2>", f"<img alt='{html.escape(title)}' src='data:image/png;base64,"
                  f"{_png(fig)}'>"]
    inputs = summary["inputs"]
    parts += ["<h2>Inputs, counted</h2>", pd.DataFrame(
        [(k, ", ".join(f"{name} ({n})" for name, n in inputs[k].items()) or "-")
         for k in ("content_types", "containers", "codecs", "resolutions")],
        columns=["", "values"]).to_html(index=False, border=0)]
    if summary["capture"]["problems"]:
        parts += ["<h2>Unreadable capture records</h2><ul>"]
        parts += [f"<li>{html.escape(p)}</li>" for p in summary["capture"]["problems"]]
        parts += ["</ul>"]
    style = ("body{font-family:sans-serif;margin:2em;max-width:1400px} table{border-collapse:collapse;margin:1em 0}"
             "td,th{padding:4px 8px;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}"
             ".verdict{font-size:1.3em;font-weight:bold;padding:.5em}.bad{color:#c62828}.good{color:#1a7f37}"
             "img{max-width:100%}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>deepfake monitor {html.escape(str(window['since']))}"
            f"</title><style>{style}</style></head><body>{''.join(parts)}</body></html>\n")


def _checks_html(checks: Sequence[Mapping[str, Any]]) -> str:
    table = readable(checks_table(checks))
    body = table.to_html(index=False, border=0, escape=True)
    for status, color in STATUS_COLORS.items():
        body = body.replace(f"<td>{status}</td>", f"<td style='color:{color};font-weight:bold'>{status}</td>")
    return body


def _expected_share(summary: Mapping[str, Any]) -> float | None:
    check = next((c for c in summary["checks"] if c["name"] == "fake_share"), None)
    return None if check is None else check["baseline"]


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _freq(starts: pd.DatetimeIndex) -> str:
    return "D" if len(starts) > 1 and (starts[1] - starts[0]) >= pd.Timedelta(days=1) else "h"


def _time_axis(ax: Any, starts: pd.DatetimeIndex) -> None:
    n = len(starts)
    step = max(1, n // 8)
    ticks = np.arange(0, n, step)
    fmt = "%m-%d" if _freq(starts) == "D" else "%m-%d %H:00"
    ax.set_xticks(ticks, [starts[i].strftime(fmt) for i in ticks], rotation=30, fontsize=7, ha="right")
    ax.set_xlim(-0.6, max(n - 0.4, 0.6))
