"""Figures and tables of the face-extraction report (02_extract_faces).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from deepfake.core.vocabulary import LABEL_NAMES, STATUS_OK
from deepfake.reporting.figures import (
    PANEL_INCHES,
    Figure,
    Note,
    _columns,
    _image,
    _image_grid,
    _named,
    new_figure,
    plot_score_histogram,
    save,
    table_or_note,
)


def plot_detector_scores(faces_df: pd.DataFrame, min_score: float, *, bins: int = 20,
                         save_to: str | os.PathLike[str] | None = None) -> Figure:
    """The face detector's confidence of the kept faces, real and fake side by side. Every kept face scores at
    least ``min_score`` (the rest were dropped), so the axis spans the scores there are, not 0 to 1."""
    kept = faces_df[faces_df["status"] == STATUS_OK]
    low = float(kept["score"].min()) if len(kept) else min_score
    low = max(0.0, np.floor(min(low, min_score) * 100) / 100)             # a round edge at or below the floor
    return plot_score_histogram(kept, score="score", bins=bins, threshold=min_score, span=(low, 1.0),
                                xlabel="face detector confidence", threshold_label=f"min_score {min_score:g} "
                                "(faces below are dropped)", title="Face detector confidence of the kept faces",
                                save_to=save_to)


def plot_detection_rate(faces_df: pd.DataFrame, by: str = "manipulation", *,
                        save_to: str | os.PathLike[str] | None = None) -> Figure:
    """Share of videos with at least one face, per value of ``by``: low bars mean lost videos."""
    _columns(faces_df, ["video_id", "status", by], "faces table")
    per_video = faces_df.assign(found=faces_df["status"].astype(str) == STATUS_OK).groupby("video_id").agg(
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


def detection_rates(faces: pd.DataFrame, frames_per_video: int) -> pd.DataFrame:
    """Per video: frames with at least one face, share of the sampled frames, mean detector score."""
    ok = faces[faces["status"] == STATUS_OK]
    per = ok.groupby("video_id").agg(frames_with_face=("frame_idx", "nunique"), faces=("face_idx", "size"),
                                     mean_score=("score", "mean"))
    videos = faces.drop_duplicates("video_id").set_index("video_id")[["label", "manipulation", "split"]]
    out = videos.join(per, how="left").fillna({"frames_with_face": 0, "faces": 0})
    status = faces[faces["status"] != STATUS_OK].drop_duplicates("video_id").set_index("video_id")["status"]
    out["status"] = status.reindex(out.index).fillna("ok")
    out["detection_rate"] = (out["frames_with_face"] / max(frames_per_video, 1)).clip(upper=1.0)
    out["label"] = out["label"].map(LABEL_NAMES)
    return out.reset_index().astype({"frames_with_face": int, "faces": int})


def rate_by(rates: pd.DataFrame, column: str) -> pd.DataFrame:
    """Detection rate grouped by ``label``, ``manipulation`` or ``split``."""
    return rates.groupby(column).agg(videos=("video_id", "size"),
                                     videos_with_face=("frames_with_face", lambda s: int((s > 0).sum())),
                                     mean_detection_rate=("detection_rate", "mean")).round(3)


def videos_without_faces(faces: pd.DataFrame) -> pd.DataFrame | Note:
    """Status rows: videos that produced no face or failed to decode, with the reason (a sentence when none)."""
    cols = ["video_id", "label", "manipulation", "split", "status", "reason"]
    table = faces.loc[faces["status"] != STATUS_OK, cols].assign(label=lambda d: d["label"].map(LABEL_NAMES))
    return table_or_note(table.set_index("video_id"), "Every video produced at least one face.")
