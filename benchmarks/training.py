"""Item 4: does the training input pipeline keep the model fed?

The real loop (:func:`deepfake.modeling.training.train_one_epoch` over
:func:`deepfake.modeling.training.make_loader`: JPEG decoding, resizing, augmentation,
batching, then forward, backward and the optimiser step) against the same
step on one batch already in memory (:func:`deepfake.modeling.training.benchmark_step`).
The second is the limit: the loop can only match it when loading costs
nothing or overlaps the step. Both use the same model, optimiser and settings
as :func:`deepfake.stages.train.train` (TrainConfig defaults unless given).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch

from benchmarks.report import RATIO_AT_LEAST, Row, Target
from benchmarks.timing import p50, rounded, say
from deepfake.core.errors import DataError
from deepfake.data.augment import TrainAugment
from deepfake.data.dataset import FaceDataset
from deepfake.media.extraction import ExtractConfig, build_detector, encode_crop, extract_video_faces
from deepfake.modeling.network import NORMALIZATION
from deepfake.modeling.runtime import make_runtime, seed_everything
from deepfake.modeling.training import benchmark_step, build_training, make_loader, train_one_epoch
from deepfake.stages.train import TrainConfig

LOADER_TARGET = Target(RATIO_AT_LEAST, 0.9)   # the loop runs at >= 90% of the in-memory step's images/s


def write_crops(clip: Path, folder: Path, frames: int) -> list[Path]:
    """Face crops of ``clip`` saved as extraction saves them (the files the training loop reads)."""
    config = ExtractConfig(frames_per_video=frames)
    folder.mkdir(parents=True, exist_ok=True)
    result = extract_video_faces(clip, build_detector(config), config)
    paths = []
    for face in result.faces:
        path = folder / f"{face.frame_idx}_{face.face_idx}.{config.image_format}"
        path.write_bytes(encode_crop(face.crop, config))
        paths.append(path)
    return paths


def bench_training(crops: Sequence[Path], config: TrainConfig, batches: int, reps: int,
                   device_label: str = "cpu") -> Row:
    """Images/s of the real loop and of the in-memory step, interleaved ``reps`` times (medians)."""
    if not crops:
        raise DataError("no face crops to train on: the detector found no face in the clip")
    seed_everything(config.seed)
    runtime = make_runtime(config)
    # Enough rows for the warm-up batch and the timed ones; the crops repeat, labels alternate
    # (the class-balanced sampler needs both classes; what the labels are does not change the cost).
    n = config.batch_size * (batches + 1)
    faces = pd.DataFrame({"abs_path": [str(crops[i % len(crops)]) for i in range(n)],
                          "label": [i % 2 for i in range(n)], "status": "ok"})
    augment = TrainAugment() if config.augment else None
    dataset = FaceDataset(faces, config.image_size, NORMALIZATION, augment, seed=config.seed)
    loader = make_loader(dataset, config.batch_size, train=True, balance=config.balance, seed=config.seed,
                         num_workers=config.num_workers, pin_memory=runtime.device.type == "cuda")
    training = build_training(config, runtime, dataset.labels)
    model, loss_fn, optimizer = training.model, training.loss_fn, training.optimizer
    batch = next(iter(loader))

    say(f"[4] training loop vs in-memory step on {device_label}: {reps} x {batches} batches of "
        f"{config.batch_size} at {config.image_size} px")
    train_one_epoch(model, loader, optimizer, loss_fn, runtime, max_batches=1)  # warm-up
    loop, step = [], []
    for epoch in range(reps):
        dataset.set_epoch(epoch + 1)
        loop.append(train_one_epoch(model, loader, optimizer, loss_fn, runtime, max_batches=batches).images_per_s)
        step.append(benchmark_step(model, batch, optimizer, loss_fn, runtime, steps=batches, warmup=0))
    note = (f"batch {config.batch_size}, {config.image_size} px, unfreeze_blocks {config.unfreeze_blocks}, "
            f"num_workers {config.num_workers}, augment {config.augment}")
    return Row(4, "training images/s, real loop vs in-memory forward+backward", "img/s", p50(loop), p50(step),
               "in-memory step", LOADER_TARGET, device=device_label, note=note,
               samples={"loop_img_per_s": rounded(loop), "in_memory_img_per_s": rounded(step)})


def cuda_config(config: TrainConfig) -> TrainConfig | None:
    """The GPU variant (AMP, channels-last, loader processes), or None without CUDA."""
    if not torch.cuda.is_available():
        return None
    workers = max(1, min(8, (os.cpu_count() or 2) - 1))  # a GPU step outruns one decoding process
    return TrainConfig.from_dict({**config.to_dict(), "device": "cuda", "amp": True, "channels_last": True,
                                  "num_workers": workers})
