"""Tables the notebooks show: small pandas summaries, kept here so no notebook defines code."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from deepfake import paths


def detection_rates(faces: pd.DataFrame, frames_per_video: int) -> pd.DataFrame:
    """Per video: frames with at least one face, share of the sampled frames, mean detector score."""
    ok = faces[faces["status"] == "ok"]
    per = ok.groupby("video_id").agg(frames_with_face=("frame_idx", "nunique"), faces=("face_idx", "size"),
                                     mean_score=("score", "mean"))
    videos = faces.drop_duplicates("video_id").set_index("video_id")[["label", "manipulation", "split"]]
    out = videos.join(per, how="left").fillna({"frames_with_face": 0, "faces": 0})
    status = faces[faces["status"] != "ok"].drop_duplicates("video_id").set_index("video_id")["status"]
    out["status"] = status.reindex(out.index).fillna("ok")
    out["detection_rate"] = (out["frames_with_face"] / max(frames_per_video, 1)).clip(upper=1.0)
    out["label"] = out["label"].map({0: "real", 1: "fake"})
    return out.reset_index().astype({"frames_with_face": int, "faces": int})


def rate_by(rates: pd.DataFrame, column: str) -> pd.DataFrame:
    """Detection rate grouped by ``label``, ``manipulation`` or ``split``."""
    return rates.groupby(column).agg(videos=("video_id", "size"),
                                     videos_with_face=("frames_with_face", lambda s: int((s > 0).sum())),
                                     mean_detection_rate=("detection_rate", "mean")).round(3)


def videos_without_faces(faces: pd.DataFrame) -> pd.DataFrame:
    """Status rows: videos that produced no face or failed to decode, with the reason."""
    cols = ["video_id", "label", "manipulation", "split", "status", "reason"]
    return faces.loc[faces["status"] != "ok", cols].reset_index(drop=True)


def sample_frames(videos: pd.DataFrame, data_dir: str | os.PathLike[str], n: int = 8, seed: int = 0,
                  ) -> tuple[list[np.ndarray], list[str]]:
    """One middle frame of ``n`` videos (both labels when present), with captions."""
    from deepfake.catalogs import dataset_root
    from deepfake.errors import VideoDecodeError
    from deepfake.video import sample_frames as sample

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


def metrics_table(evaluation: dict) -> pd.DataFrame:
    """evaluation.json's headline metrics as a level x metric table."""
    rows: dict[str, dict[str, float | None]] = {}
    for key, value in evaluation.get("metrics", {}).items():
        level, _, name = key.partition("_")
        if level in ("video", "frame"):
            rows.setdefault(level, {})[name] = value
    return pd.DataFrame(rows).T


def extraction_settings(faces_dir: str | os.PathLike[str]) -> dict:
    """The ExtractConfig that made a faces folder (from its manifest sidecar), for the model artifact."""
    from deepfake.errors import ManifestError
    from deepfake.manifest import read_sidecar

    root = paths.resolve(faces_dir)
    tables = [root / paths.FACES_MANIFEST] if (root / paths.FACES_MANIFEST).is_file() \
        else sorted(root.glob(f"shard-*/{paths.FACES_MANIFEST}"))
    configs = [read_sidecar(t).get("config", {}) for t in tables]
    if not configs:
        raise ManifestError(f"no {paths.FACES_MANIFEST} in {root}; run face extraction first")
    if any(c != configs[0] for c in configs[1:]):
        raise ManifestError(f"the shards of {root} were extracted with different settings")
    return configs[0]


def training_counts(faces: pd.DataFrame) -> pd.DataFrame:
    """Face crops and videos per split and label: what the model trains and validates on."""
    ok = faces[faces["status"] == "ok"].assign(label=lambda d: d["label"].map({0: "real", 1: "fake"}))
    return ok.groupby(["split", "label"]).agg(videos=("video_id", "nunique"), crops=("path", "size"))
