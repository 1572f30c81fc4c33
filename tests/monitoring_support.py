"""A served model with the evaluation it was gated on, as the evaluate step writes them, for the monitoring tests.

The dataset is a ``real/`` + ``fake/`` folder of small clips of the real faces
shipped in packages (the fakes: each face with its colours shifted and its
skin smoothed, a crude manipulation); the model is the serving tests' small
real model (ImageNet features, an untrained head, seeded so its scores are the
same on every run). Extraction, evaluation, the gated copy and its
``model.tar.gz`` are the kit's own stages, so the model, ``evaluation.json`` and
``video_predictions.csv`` are laid out as a run's ``evaluate/`` folder is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from deepfake.media.encode import write_video

FRAMES = 4                       # frames the model's extraction samples per video
THRESHOLD = 0.62                 # the evaluation's threshold (the gated model scores with it)
VARIANTS = ((320, 240, 0.9, 3), (288, 224, 0.75, 5))   # width, height, face fill, motion: two clips per face
SEED = 0


@dataclass(frozen=True)
class Evaluated:
    data: Path                   # the dataset folder
    videos: pd.DataFrame         # video_id, path (absolute), label: every evaluated video
    model: Path                  # evaluate/model.tar.gz, the gated model that is served
    evaluation: Path             # evaluate/: evaluation.json, video_predictions.csv


def manipulate(frame: np.ndarray) -> np.ndarray:
    """A crude fake: colours rotated towards red and the picture smoothed."""
    shifted = frame.astype(np.int16) + np.array([18, -6, -12], dtype=np.int16)
    return cv2.bilateralFilter(np.clip(shifted, 0, 255).astype(np.uint8), 7, 40, 7)


def build_dataset(root: Path, photos: list[tuple[str, np.ndarray]], clip_frames) -> Path:
    for name, photo in photos:
        for i, (w, h, fill, motion) in enumerate(VARIANTS):
            frames = clip_frames(photo, (w, h), 12, motion, fill)
            write_video(root / "real" / f"{name}-{i}.mp4", frames, fps=25.0, codec="mp4v")
        fake = [manipulate(f) for f in clip_frames(photo, VARIANTS[0][:2], 12, 4, 0.85)]
        write_video(root / "fake" / f"{name}-fake.mp4", fake, fps=25.0, codec="mp4v")
    return root


def evaluate_model(work: Path, data: Path) -> Evaluated:
    import torch
    from serving_support import IMAGE_SIZE, make_model

    from deepfake.data.catalogs import load_catalog
    from deepfake.data.faces_table import read_faces
    from deepfake.data.splits import ensure_splits
    from deepfake.media.extraction import ExtractConfig
    from deepfake.modeling.artifact import load_artifact
    from deepfake.serving.packaging import package_model
    from deepfake.stages.evaluate import EvalConfig, evaluate, write_gated_model
    from deepfake.stages.extract import extract_faces

    videos = ensure_splits(load_catalog("auto", data))
    extract_faces(videos, data, work / "extract", ExtractConfig(frames_per_video=FRAMES, face_size=IMAGE_SIZE,
                                                                workers=1), progress=False)
    torch.manual_seed(SEED)
    loaded = load_artifact(make_model(work / "train" / "model", frames=FRAMES))
    out = work / "evaluate"
    evaluation = evaluate(loaded, read_faces(work / "extract"), out, EvalConfig(split="all", threshold=THRESHOLD))
    gated = write_gated_model(loaded.path, evaluation, out / "model")
    model = package_model(gated, out / "model.tar.gz")
    table = videos.assign(path=[str(data / p) for p in videos["path"]])[["video_id", "path", "label"]]
    return Evaluated(data=data, videos=table.reset_index(drop=True), model=model, evaluation=out)
