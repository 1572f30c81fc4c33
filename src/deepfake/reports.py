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


def self_blend_examples(faces: pd.DataFrame, extract_settings: dict, image_size: int, n: int = 6,
                        seed: int = 0) -> tuple[list[np.ndarray], list[str]]:
    """``n`` (real, mask, pseudo-fake) triplets from real crops of the train split, for the training report.

    Empty when the faces table has no landmarks (extracted by an older kit or a detector without them).
    """
    from deepfake.dataset import read_rgb, resize_crop
    from deepfake.selfblend import self_blend
    from deepfake.train import crop_landmarks

    ok = faces[(faces["status"] == "ok") & (faces["label"] == 0)]
    if "landmarks" not in ok.columns or not ok["landmarks"].astype(str).str.len().gt(0).all() or ok.empty:
        return [], []
    train = ok[ok["split"] == "train"] if (ok["split"] == "train").any() else ok
    picks = train.groupby("video_id").head(1).sample(min(n, train["video_id"].nunique()), random_state=seed)
    marks = crop_landmarks(picks, float(extract_settings.get("margin", 0.3)), image_size)
    images: list[np.ndarray] = []
    captions: list[str] = []
    for i, (row, lm) in enumerate(zip(picks.itertuples(index=False), marks, strict=True)):
        real = resize_crop(read_rgb(row.abs_path), image_size)
        blend = self_blend(real, lm, np.random.default_rng([seed, i]))
        mask = (np.repeat(blend.mask[..., None], 3, axis=2) * 255).astype(np.uint8)
        images += [real, mask, blend.image]
        captions += [f"{row.video_id} real", f"mask (max {blend.mask.max():.2f})", "pseudo-fake"]
    return images, captions


def calibration_table(model_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """The temperature training fitted, and the validation log loss and ECE before and after it."""
    from deepfake.manifest import read_json

    folder = paths.resolve(model_dir)
    config = read_json(folder / "config.json" if (folder / "config.json").is_file() else folder / "model" / "config.json")
    cal = config.get("calibration") or {}
    rows = [("temperature", cal.get("temperature")), ("validation log loss before", cal.get("nll_before")),
            ("validation log loss after", cal.get("nll_after")), ("validation ECE before", cal.get("ece_before")),
            ("validation ECE after", cal.get("ece_after"))]
    return pd.DataFrame(rows, columns=["calibration", "value"]).set_index("calibration").round(4)


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
    table = pd.DataFrame(rows, columns=["measure", "value"]).set_index("measure")
    table["value"] = [round(v, 4) if isinstance(v, float) else ("undefined" if v is None else v) for v in table["value"]]
    return table
