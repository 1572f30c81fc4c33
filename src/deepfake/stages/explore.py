"""Stage 1: turn a dataset folder into ``videos.csv`` and a data profile.

The stage ends by checking that the data can train and evaluate a model (both
classes present, no split empty); it writes the profile first, so a person can
see exactly what is missing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from deepfake.core import paths
from deepfake.core.config import StageConfig
from deepfake.core.errors import ConfigError, DataError, VideoDecodeError
from deepfake.core.files import write_json
from deepfake.core.vocabulary import SPLITS, TRAINING_MODES, label_name
from deepfake.data.manifest import read_manifest, sources, with_sources, write_manifest

# What the data is checked for: a training mode of deepfake.stages.train (the fakes' source), or "evaluate"
# (no training: an existing model scores every video).
CHECK_MODES = (*TRAINING_MODES, "evaluate")


@dataclass(frozen=True)
class ExploreConfig(StageConfig):
    catalog: str = "auto"          # dataset layout: auto, dfdc, faceforensics, celebdf, csv, folders
    val_fraction: float = 0.15     # share of originals for validation, when the data defines no splits
    test_fraction: float = 0.2     # share of originals for the test split, likewise
    seed: int = 0                  # seed of the split assignment
    probe_videos: int = 200        # videos probed for duration, size and fps (0 = all)
    mode: str = "self_blend"       # checked for: self_blend, dataset, both (training modes) or evaluate

    def __post_init__(self) -> None:
        if self.mode not in CHECK_MODES:
            raise ConfigError(f"mode={self.mode!r} is unknown; use one of {', '.join(CHECK_MODES)}")
        if not (0 <= self.val_fraction < 1 and 0 < self.test_fraction < 1
                and self.val_fraction + self.test_fraction < 1):
            raise ConfigError(f"val_fraction={self.val_fraction} and test_fraction={self.test_fraction} "
                              "must be in [0, 1) with a sum below 1")
        if self.probe_videos < 0:
            raise ConfigError(f"probe_videos={self.probe_videos} must be >= 0")


@dataclass(frozen=True)
class Exploration:
    videos: pd.DataFrame      # the videos table with splits
    probes: pd.DataFrame      # per probed video: duration_s, width, height, fps, frame_count, error
    profile: dict[str, Any]   # what data_profile.json holds


def build_videos_table(data_dir: str | os.PathLike[str], config: ExploreConfig) -> pd.DataFrame:
    """Catalog -> splits grouped by original -> leak check."""
    from deepfake.data.catalogs import load_catalog
    from deepfake.data.splits import check_leaks, ensure_splits

    videos = load_catalog(config.catalog, paths.resolve(data_dir))
    inputs = sources(videos)
    videos = ensure_splits(videos, val_fraction=config.val_fraction, test_fraction=config.test_fraction,
                           seed=config.seed)
    check_leaks(videos)
    return with_sources(videos.reset_index(drop=True), inputs)


def probe_videos(videos: pd.DataFrame, data_dir: str | os.PathLike[str], limit: int = 200,
                 seed: int = 0) -> pd.DataFrame:
    """Duration, size and fps of up to ``limit`` videos (a seeded sample); failures are kept as rows."""
    from deepfake.data.catalogs import dataset_root
    from deepfake.media.video import probe

    root = dataset_root(data_dir)
    sample = videos if limit == 0 or len(videos) <= limit else videos.sample(limit, random_state=seed)
    rows = []
    for row in sample.itertuples(index=False):
        try:
            info = probe(root / row.path)
            rows.append({"video_id": row.video_id, "label": row.label, "duration_s": info.duration_s,
                         "width": info.width, "height": info.height, "fps": info.fps,
                         "frame_count": info.frame_count, "error": ""})
        except VideoDecodeError as exc:
            rows.append({"video_id": row.video_id, "label": row.label, "error": exc.reason})
    return pd.DataFrame(rows, columns=["video_id", "label", "duration_s", "width", "height", "fps",
                                       "frame_count", "error"])


def data_profile(videos: pd.DataFrame, probes: pd.DataFrame) -> dict[str, Any]:
    ok = probes[probes["error"] == ""] if len(probes) else probes

    def counts(col: str) -> dict[str, int]:
        return {str(k): int(v) for k, v in videos[col].value_counts().sort_index().items()}

    def stats(col: str) -> dict[str, float] | None:
        if ok.empty:
            return None
        s = ok[col].astype(float)
        return {"min": float(s.min()), "median": float(s.median()), "max": float(s.max())}

    resolutions = (ok["width"].astype(int).astype(str) + "x" + ok["height"].astype(int).astype(str)) \
        if not ok.empty else pd.Series(dtype=str)
    return {
        "videos": int(len(videos)),
        "originals": int(videos["original_id"].nunique()),
        "by_label": {label_name(k): v for k, v in counts("label").items()},
        "by_manipulation": counts("manipulation"),
        "by_split": counts("split"),
        "by_split_label": {s: {label_name(k): int(v)
                               for k, v in g["label"].value_counts().sort_index().items()}
                           for s, g in videos.groupby("split")},
        "probed": int(len(probes)),
        "unreadable": probes.loc[probes["error"] != "", ["video_id", "error"]].to_dict("records")
        if len(probes) else [],
        "duration_s": stats("duration_s"),
        "fps": stats("fps"),
        "resolutions": {str(k): int(v) for k, v in resolutions.value_counts().items()},
        "fake_to_real_ratio": _ratio(videos),
    }


def check_trainable(videos: pd.DataFrame, mode: str = "dataset") -> str:
    """Raise DataError naming what is missing when the data cannot serve ``mode``; else say why it can.

    ``dataset``: both classes in train and test, no empty split. ``self_blend``
    and ``both``: real videos in train and val (the fakes of self-blending are
    made from them), so real videos alone are valid; fakes only make the test
    measure something. ``evaluate``: at least one video, every split counts.
    """
    if mode not in CHECK_MODES:
        raise ConfigError(f"mode={mode!r} is unknown; use one of {', '.join(CHECK_MODES)}")
    reals, fakes = int((videos["label"] == 0).sum()), int((videos["label"] == 1).sum())
    if mode == "evaluate":
        if reals + fakes == 0:
            raise DataError("the data holds no labelled video to evaluate")
        missing = "" if reals and fakes else (" (only " + ("real" if reals else "fake") + " videos: AUC is "
                                              "undefined, the report shows false alarms or misses only)")
        return f"{reals} real and {fakes} fake videos to evaluate with an existing model{missing}"
    problems = []
    needs_fakes = mode == "dataset"
    for split in SPLITS:
        part = videos[videos["split"] == split]
        if part.empty:
            problems.append(f"split '{split}' is empty")
        elif split != "test" and not (part["label"] == 0).any() and mode != "dataset":
            problems.append(f"split '{split}' has no real videos, which mode {mode!r} learns from")
        elif needs_fakes and split != "val" and part["label"].nunique() < 2:
            problems.append(f"split '{split}' has only {'fake' if part['label'].iloc[0] == 1 else 'real'} videos")
    if needs_fakes and not (reals and fakes):
        problems.insert(0, f"no {'real' if not reals else 'fake'} videos at all")
    if problems:
        raise DataError(f"the data cannot train (mode {mode!r}) and evaluate a model: " + "; ".join(problems)
                        + ". Add videos of the missing class or change val_fraction/test_fraction"
                        + (", or train with mode 'self_blend', which needs real videos only." if needs_fakes else "."))
    if mode == "dataset":
        return f"mode 'dataset': {reals} real and {fakes} fake videos, both classes in train and test"
    why = (f"mode {mode!r} trains on real faces and their self-blends, so {reals} real videos are enough to "
           "train")
    if not fakes:
        return why + "; the data has no fake video, so the test can measure false alarms only (AUC undefined)"
    return why + f"; the {fakes} fake videos are " + ("used too" if mode == "both" else "never trained on: "
                                                     "they test generalisation")


def run_explore(data_dir: str | os.PathLike[str], output_dir: str | os.PathLike[str],
                config: ExploreConfig) -> Exploration:
    """Writes videos.csv, probes.csv and data_profile.json; the notebook calls check_trainable last."""
    out = paths.ensure_dir(output_dir)
    videos = build_videos_table(data_dir, config)
    probes = probe_videos(videos, data_dir, config.probe_videos, config.seed)
    profile = data_profile(videos, probes)
    write_manifest(videos, out / paths.VIDEOS_MANIFEST, config=config.to_dict(), inputs=sources(videos),
                   extra={"data_dir": str(paths.resolve(data_dir))})
    write_manifest(probes, out / "probes.csv", config=config.to_dict())
    write_json(out / paths.DATA_PROFILE, profile)
    return Exploration(videos, probes, profile)


def read_videos(videos_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """The videos table written by this stage."""

    path = Path(paths.resolve(videos_dir)) / paths.VIDEOS_MANIFEST
    table = read_manifest(path, required=("video_id", "path", "label", "original_id", "manipulation", "split"))
    return with_sources(table, [path])


def _ratio(videos: pd.DataFrame) -> float | None:
    real = int((videos["label"] == 0).sum())
    return None if real == 0 else round(int((videos["label"] == 1).sum()) / real, 3)
