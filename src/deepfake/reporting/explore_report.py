"""Figures and tables of the exploration report (01_explore_data).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from deepfake.reporting.figures import (
    Figure,
    _columns,
    _image_grid,
    _label_color,
    _named,
    new_figure,
    readable,
    save,
)


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


def middle_frames(videos: pd.DataFrame, data_dir: str | os.PathLike[str], n: int = 8, seed: int = 0,
                  ) -> tuple[list[np.ndarray], list[str]]:
    """One middle frame of ``n`` videos (both labels when present), with captions."""
    from deepfake.core.errors import VideoDecodeError
    from deepfake.data.catalogs import dataset_root
    from deepfake.media.video import sample_frames as sample

    root = dataset_root(data_dir)
    per_label = max(1, n // 2)
    picks = pd.concat([g.sample(min(len(g), per_label), random_state=seed) for _, g in videos.groupby("label")])
    frames, titles = [], []
    for row in picks.head(n).itertuples(index=False):
        try:
            got = sample(root / row.path, n_frames=1)
        except VideoDecodeError as exc:
            titles.append(f"{row.video_id}: {exc.reason}")
            frames.append(np.zeros((90, 160, 3), np.uint8))
            continue
        frames.append(got.frames[0])
        titles.append(f"{row.video_id} ({'fake' if row.label == 1 else 'real'}, {row.manipulation})")
    return frames, titles


def profile_table(profile: dict) -> pd.DataFrame:
    """The data profile (``data_profile.json``) as one named row per measure."""
    def spread(stats: dict | None, unit: str) -> str:
        if not stats:
            return "—"
        return f"{stats['min']:g} / {stats['median']:g} / {stats['max']:g} {unit} (min / median / max)"

    resolutions = profile.get("resolutions") or {}
    unreadable = profile.get("unreadable") or []
    rows = [
        ("videos", profile.get("videos")),
        ("original videos", profile.get("originals")),
        ("fakes per real video", profile.get("fake_to_real_ratio")),
        ("videos probed", profile.get("probed")),
        ("duration", spread(profile.get("duration_s"), "s")),
        ("frame rate", spread(profile.get("fps"), "fps")),
        ("resolutions", ", ".join(f"{r} ({n} videos)" for r, n in resolutions.items()) or "—"),
        ("unreadable videos", f"{len(unreadable)}: " + ", ".join(map(str, unreadable[:10])) if unreadable else "none"),
    ]
    return readable(pd.DataFrame(rows, columns=["measure", "value"]).set_index("measure"))


def probe_summary(probes: pd.DataFrame) -> pd.DataFrame:
    """Duration, size, frame rate and frame count of the probed videos: count, mean, spread, quartiles."""
    columns = [c for c in ("duration_s", "width", "height", "fps", "frame_count") if c in probes.columns]
    return readable(probes[columns].describe().rename_axis("statistic"))


def dataset_table(profile: dict) -> pd.DataFrame:
    """What was read and how it was split (``data_profile.json``'s layout and protocol), one named row each."""
    from deepfake.data.splits import RESPLIT

    layout, record = profile.get("layout") or {}, profile.get("protocol") or {}
    rows = []
    if layout:
        rows += [("layout", f"{layout['kind']}: {layout['description']}"), ("dataset folder", layout["root"])]
        rows += [(f"videos in {folder}/", f"{c['real'] + c['fake']} ({c['real']} real, {c['fake']} fake)")
                 for folder, c in list(layout["folders"].items())[:20]]
        rows += [("left out", f"{g['videos']} video file(s) {g['why']}, e.g. {', '.join(g['examples'][:3])}")
                 for g in layout.get("left_out", [])]
    if record:
        follows = {RESPLIT: "re-split (the dataset names no test split)"}.get(record["follows"], record["follows"])
        given = ", ".join(f"{k} {v}" for k, v in record["given"].items())
        rows += [("split protocol", f"{follows} (asked: {record['protocol']})"), ("why", record["reason"]),
                 ("splits as the dataset gives them", given),
                 ("splits used", ", ".join(f"{k} {v}" for k, v in record["splits"].items()))]
        moved = record["moved"]
        rows.append(("videos moved", "none" if not moved["videos"] else f"{moved['videos']}: " + ", ".join(
            f"{k.replace('->', ' -> ')} {n}" for k, n in moved["by"].items())))
        shared = record["shared_originals"]
        rows.append(("originals in more than one split", "none" if not shared["originals"] else
                     f"{shared['originals']}, as the dataset's split has them (e.g. " + ", ".join(
                         f"{e['original_id']}: {' + '.join(e['splits'])}" for e in shared["examples"][:3]) + ")"))
    return readable(pd.DataFrame(rows, columns=["", "value"]).set_index(""))
