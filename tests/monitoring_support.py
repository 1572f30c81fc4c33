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
    evaluation = evaluate(loaded, read_faces(work / "extract"), out, EvalConfig(split="all", operating_point="fixed",
                                                                        threshold=THRESHOLD))
    gated = write_gated_model(loaded.path, evaluation, out / "model")
    model = package_model(gated, out / "model.tar.gz")
    table = videos.assign(path=[str(data / p) for p in videos["path"]])[["video_id", "path", "label"]]
    return Evaluated(data=data, videos=table.reset_index(drop=True), model=model, evaluation=out)


SHIFT = "0.4:45"                 # the shifted window's videos: 40 % of their size, x264 CRF 45
BLANKS = 8                       # videos without a face added to the shifted window
ENDPOINT = "deepfake-staging"    # the endpoint name the capture is filed under


@dataclass(frozen=True)
class Loop:
    """`deepfake serve --capture` with two windows of traffic sent by `deepfake invoke`."""

    evaluated: Evaluated
    capture: Path
    labels: Path                                       # inference_id,label of the baseline window
    windows: dict[str, tuple[str, str]]                # name -> (since, until), ISO 8601
    responses: dict[str, dict[str, dict]]              # name -> inference id -> the answer


def run_loop(work: Path, evaluated: Evaluated, no_face_clip: Path) -> Loop:
    """Serve the model capturing every request; send the evaluated videos (the baseline-like window), then
    the same videos re-encoded much smaller and heavily compressed plus videos without a face (shifted)."""
    import json
    import shutil
    import subprocess
    import time
    from datetime import datetime, timezone

    from serving_support import deepfake_cli, serve

    capture, labels = work / "capture", work / "labels.csv"
    blanks = []
    for i in range(BLANKS):
        blanks.append(work / "blank" / f"blank-{i}.mp4")
        blanks[-1].parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(no_face_clip, blanks[-1])

    def now() -> str:
        return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")

    def next_second() -> str:
        time.sleep(1.05 - (time.time() % 1.0))         # capture times are whole seconds: windows must not share one
        return now()

    def invoke(url: str, *args: str) -> dict[str, dict]:
        proc = subprocess.run([*deepfake_cli(), "invoke", "--url", url, "--json", *args], capture_output=True,
                              text=True, timeout=900)
        if proc.returncode not in (0, 1):
            raise RuntimeError(f"deepfake invoke failed ({proc.returncode}): {proc.stderr[-2000:]}")
        answers = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
        return {a.pop("inference_id"): a for a in answers}

    source = ("--data", str(evaluated.data), "--evaluation", str(evaluated.evaluation))
    with serve(evaluated.model, log=work / "serve.log",
               args=("--capture", str(capture), "--endpoint-name", ENDPOINT)) as url:
        t0 = next_second()
        baseline = invoke(url, *source, "--labels", str(labels))
        t1 = next_second()
        shifted = invoke(url, *source, "--reencode", SHIFT, "--id-prefix", "shifted-", *map(str, blanks))
        t2 = next_second()
    for answers in (baseline, shifted):
        for answer in answers.values():
            answer.pop("http_status")
    return Loop(evaluated, capture, labels, {"baseline": (t0, t1), "shifted": (t1, t2)},
                {"baseline": baseline, "shifted": shifted})
