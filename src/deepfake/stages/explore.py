"""Stage 1: turn a dataset folder into ``videos.csv`` and a data profile.

The stage ends by checking that the data can train and evaluate a model (both
classes present, no split empty); it writes the profile first, so a person can
see exactly what is missing.

The dataset may be an ``s3://`` prefix (the SageMaker pipeline passes one): the
stage then lists it, downloads the catalog's index files and only the videos it
probes into a local view (:mod:`deepfake.data.listing`), never the archive. The
listing's digest, object count and bytes are the data's identity: recorded in
``data_profile.json`` and ``videos.json``, and checked against the digest the
pipeline computed as it started (``data_digest``), so a run never mixes data
that changed while it ran.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from deepfake.core import paths
from deepfake.core.config import StageConfig
from deepfake.core.errors import ConfigError, DataError, VideoDecodeError
from deepfake.core.files import write_json
from deepfake.core.vocabulary import SPLITS, TRAINING_MODES, label_name
from deepfake.data.catalogs import LAYOUT_ATTR, describe_layout
from deepfake.data.manifest import (
    DATA_KEY,
    read_manifest,
    read_sidecar,
    sources,
    with_sources,
    write_manifest,
)
from deepfake.data.splits import OFFICIAL, PROTOCOL_ATTR, PROTOCOLS, describe_protocol

# What the data is checked for: a training mode of deepfake.stages.train (the fakes' source), or "evaluate"
# (no training: an existing model scores every video).
CHECK_MODES = (*TRAINING_MODES, "evaluate")


@dataclass(frozen=True)
class ExploreConfig(StageConfig):
    catalog: str = "auto"          # dataset layout: auto, dfdc, faceforensics, celebdf, csv, folders
    protocol: str = "official"     # splits: official (the dataset's own, kept exactly) or grouped (each original in one)
    val_fraction: float = 0.15     # share of originals for validation where the kit assigns it
    test_fraction: float = 0.2     # share of originals for test where the data names no test split
    seed: int = 0                  # seed of the split assignment
    probe_videos: int = 200        # videos probed for duration, size and fps (0 = all)
    mode: str = "self_blend"       # checked for: self_blend, dataset, both (training modes) or evaluate

    def __post_init__(self) -> None:
        if self.mode not in CHECK_MODES:
            raise ConfigError(f"mode={self.mode!r} is unknown; use one of {', '.join(CHECK_MODES)}")
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"protocol={self.protocol!r} is unknown; use one of {', '.join(PROTOCOLS)}")
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
    root: Path | None = None  # where the probed videos can be read: the dataset folder, or the local view of a prefix

    @property
    def probed(self) -> pd.DataFrame:
        """The videos probed (on S3 data, the only ones downloaded), the unreadable ones included: the sample
        frames show each one's reason."""
        ids = set(self.probes["video_id"]) if len(self.probes) else set()
        return self.videos[self.videos["video_id"].isin(ids)]


DATASET_RECORDS = (LAYOUT_ATTR, PROTOCOL_ATTR)   # what videos.csv's sidecar says of the table (faces.csv's after it)


def build_videos_table(data_dir: str | os.PathLike[str], config: ExploreConfig) -> pd.DataFrame:
    """Catalog (read whole or refused) -> splits by the protocol; ``attrs`` keep the layout and protocol records."""
    from deepfake.data.catalogs import load_catalog
    from deepfake.data.splits import ensure_splits

    videos = load_catalog(config.catalog, paths.resolve(data_dir))
    inputs, layout = sources(videos), videos.attrs[LAYOUT_ATTR]
    videos = ensure_splits(videos, val_fraction=config.val_fraction, test_fraction=config.test_fraction,
                           seed=config.seed, protocol=config.protocol).reset_index(drop=True)
    videos.attrs.update({LAYOUT_ATTR: layout, PROTOCOL_ATTR: videos.attrs[PROTOCOL_ATTR]})
    return with_sources(videos, inputs)


def describe(profile: dict[str, Any]) -> str:
    """What was read and how it was split, in lines a run prints: the layout and its videos per source
    folder, then the protocol the splits follow, why, and what moved."""
    lines = describe_layout(profile["layout"]) if profile.get("layout") else []
    return "\n".join(lines + (describe_protocol(profile["protocol"]) if profile.get("protocol") else []))


def probe_sample(videos: pd.DataFrame, limit: int = 200, seed: int = 0) -> pd.DataFrame:
    """The videos probed: up to ``limit`` (0: all), a seeded sample."""
    return videos if limit == 0 or len(videos) <= limit else videos.sample(limit, random_state=seed)


def probe_videos(videos: pd.DataFrame, data_dir: str | os.PathLike[str], limit: int = 200,
                 seed: int = 0) -> pd.DataFrame:
    """Duration, size and fps of up to ``limit`` videos (a seeded sample); failures are kept as rows."""
    from deepfake.data.catalogs import dataset_root
    from deepfake.media.video import probe

    root = dataset_root(data_dir)
    sample = probe_sample(videos, limit, seed)
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
        **{key: videos.attrs.get(key) for key in DATASET_RECORDS},
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
    """Raise DataError naming what is missing, why, and what fixes it for this data when it cannot serve
    ``mode``; else say why it can.

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
    problems, short = [], []
    needs_fakes = mode == "dataset"
    for split in SPLITS:
        part = videos[videos["split"] == split]
        if part.empty:
            problems.append(f"split '{split}' is empty")
        elif split != "test" and not (part["label"] == 0).any() and mode != "dataset":
            problems.append(f"split '{split}' has no real videos, which mode {mode!r} learns from")
        elif needs_fakes and split != "val" and part["label"].nunique() < 2:
            problems.append(f"split '{split}' has only {'fake' if part['label'].iloc[0] == 1 else 'real'} videos")
        else:
            continue
        short.append(split)
    if needs_fakes and not (reals and fakes):
        problems.insert(0, f"no {'real' if not reals else 'fake'} videos at all")
    if problems:
        raise DataError(f"the data cannot train (mode {mode!r}) and evaluate a model: " + "; ".join(problems)
                        + ". " + _explain(videos, short, mode, reals, fakes))
    if mode == "dataset":
        return f"mode 'dataset': {reals} real and {fakes} fake videos, both classes in train and test"
    why = (f"mode {mode!r} trains on real faces and their self-blends, so {reals} real videos are enough to "
           "train")
    if not fakes:
        return why + "; the data has no fake video, so the test can measure false alarms only (AUC undefined)"
    return why + f"; the {fakes} fake videos are " + ("used too" if mode == "both" else "never trained on: "
                                                     "they test generalisation")


def _explain(videos: pd.DataFrame, short: list[str], mode: str, reals: int, fakes: int) -> str:
    """Why the splits in ``short`` lack what ``mode`` needs, and the fixes that work for this data."""
    record = videos.attrs.get(PROTOCOL_ATTR) or {}
    official = record.get("follows") == OFFICIAL and record.get("given", {}).get("test")
    pool = videos[videos["split"] != "test"] if official else videos
    originals = pool["original_id"].nunique()
    with_real = pool.loc[pool["label"] == 0, "original_id"].nunique()
    wanted = 2 if official else len(SPLITS)                           # train and val, or all three
    if official:
        why = (f"the dataset names its own test split ({int((videos['split'] == 'test').sum())} of the "
               f"{len(videos)} videos), which the official protocol keeps exactly; train and val share the "
               f"{len(pool)} videos it leaves, from {originals} original(s) ({with_real} with a real video)")
    else:
        why = (f"the {len(videos)} videos come from {originals} original(s) ({with_real} with a real video), and "
               "the kit gives each split whole originals (a fake goes with its source)")
    fixes = []
    if mode == "dataset" and reals:
        fixes.append("train with mode 'self_blend', which needs real videos only")
    if (with_real if mode != "dataset" else originals) < wanted or (mode == "dataset" and not fakes):
        needed = ", ".join(SPLITS[:wanted - 1]) + f" and {SPLITS[wanted - 1]}"
        fixes.append(f"add videos of more originals ({needed} need at least one each"
                     + (", with a real video" if mode != "dataset" else "") + ")")
    else:
        fixes.append("change val_fraction/test_fraction or seed (the kit assigns "
                     + ("val from the train side" if official else "the splits") + " by them)")
    fixes.append("or, to score this data with a model trained elsewhere, check it with mode 'evaluate' "
                 "(deepfake run --model MODEL --data DIR does; papermill: -p mode evaluate), which needs no split")
    return f"Why: {why}. Fix: " + "; ".join(fixes) + "."


def run_explore(data_dir: str | os.PathLike[str], output_dir: str | os.PathLike[str],
                config: ExploreConfig, *, data_digest: str = "") -> Exploration:
    """Writes videos.csv, probes.csv and data_profile.json; the notebook calls check_trainable last.

    ``data_dir`` is a folder or an ``s3://`` prefix (read through a local view holding only the index files
    and the probed videos); ``data_digest``, when given, must be the listing's digest now.
    """
    from deepfake.data.listing import fetch, list_data, stage

    out = paths.ensure_dir(output_dir)
    listing = list_data(data_dir)
    if data_digest and listing.digest != data_digest:
        raise DataError(f"the data under {data_dir} changed since the pipeline started (listing digest "
                        f"{data_digest[:12]}... then, {listing.digest[:12]}... now): start the pipeline again, so "
                        "that every step reads the same data")
    remote = paths.is_s3(str(data_dir))
    root = stage(listing, tempfile.mkdtemp(prefix="deepfake-explore-")) if remote else paths.resolve(data_dir)
    videos = build_videos_table(root, config)
    sample = probe_sample(videos, config.probe_videos, config.seed)
    downloaded = fetch(listing, sample["path"], root) if remote else 0
    probes = probe_videos(sample, root, limit=0)
    profile = {**data_profile(videos, probes), "data": {**listing.record(), "downloaded_bytes": downloaded}}
    source = str(data_dir) if remote else str(paths.resolve(data_dir))
    write_manifest(videos, out / paths.VIDEOS_MANIFEST, config=config.to_dict(), inputs=sources(videos),
                   extra={"data_dir": source, DATA_KEY: listing.record(),
                          **{key: videos.attrs.get(key) for key in DATASET_RECORDS}})
    write_manifest(probes, out / "probes.csv", config=config.to_dict())
    write_json(out / paths.DATA_PROFILE, profile)
    return Exploration(videos, probes, profile, root if root.is_dir() else root.parent)


def read_videos(videos_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """The videos table written by this stage."""

    path = Path(paths.resolve(videos_dir)) / paths.VIDEOS_MANIFEST
    table = read_manifest(path, required=("video_id", "path", "label", "original_id", "manipulation", "split"))
    sidecar = read_sidecar(path)
    table.attrs.update({key: sidecar[key] for key in DATASET_RECORDS if sidecar.get(key)})
    return with_sources(table, [path])


def _ratio(videos: pd.DataFrame) -> float | None:
    real = int((videos["label"] == 0).sum())
    return None if real == 0 else round(int((videos["label"] == 1).sum()) / real, 3)
