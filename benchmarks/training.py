"""Item 4: does the training input pipeline keep the model fed?

The real loop (:func:`deepfake.modeling.training.train_one_epoch` over
:func:`deepfake.modeling.training.make_loader`, with the datasets
:func:`deepfake.stages.train_data.build_datasets` builds for ``train``: the crop
cache, augmentation in the loader or on the device, self-blending) against
the same step on one batch already on the device
(:func:`deepfake.modeling.training.benchmark_step`). The second is the limit:
the loop can only match it when loading costs nothing or overlaps the step.

On the CPU: TrainConfig's settings (batch 32, 224 px, augmentation in the
training process), with the crops decoded once into memory (the small-set path)
and streamed from tar shards (:class:`deepfake.data.stream.ShardStream`, what a set
beyond ``cache_budget_mb`` does: each crop read and decoded every epoch). With CUDA: batch 128, 224 px, AMP and channels-last, loader
processes, augmentation on the GPU; the same with augmentation in the loader
is the peer row that shows what moving it to the GPU buys.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from benchmarks.report import RATIO_AT_LEAST, Row, Target
from benchmarks.timing import p50, rounded, say
from deepfake.core.errors import DataError
from deepfake.data.faces_table import format_landmarks
from deepfake.data.stream import ShardStream
from deepfake.media.extraction import ExtractConfig, build_detector, encode_crop, extract_video_faces
from deepfake.modeling.runtime import make_runtime, seed_everything
from deepfake.modeling.training import benchmark_step, build_training, make_loader, on_device, train_one_epoch
from deepfake.stages.train import TrainConfig
from deepfake.stages.train_data import build_datasets

LOADER_TARGET = Target(RATIO_AT_LEAST, 0.9)       # CPU: the loop at >= 90% of the in-memory step's images/s
GPU_LOADER_TARGET = Target(RATIO_AT_LEAST, 0.8)   # GPU, batch 128 at 224 px: >= 80%
GPU_BATCH = 128


def write_crops(clip: Path, folder: Path, frames: int) -> pd.DataFrame:
    """Face crops of ``clip`` saved as extraction saves them, with their boxes and landmarks (self-blending)."""
    config = ExtractConfig(frames_per_video=frames)
    folder.mkdir(parents=True, exist_ok=True)
    result = extract_video_faces(clip, build_detector(config), config)
    rows = []
    for face in result.faces:
        path = folder / f"{face.frame_idx}_{face.face_idx}.{config.image_format}"
        path.write_bytes(encode_crop(face.crop, config))
        rows.append({"abs_path": str(path), "box": json.dumps([int(v) for v in face.box]),
                     "landmarks": format_landmarks(face.landmarks)})
    if not rows:
        raise DataError("no face crops to train on: the detector found no face in the clip")
    return pd.DataFrame(rows)


def packed_crops(crops: pd.DataFrame, n: int, folder: Path) -> pd.DataFrame:
    """``n`` rows of ``crops`` (repeating them), each its own member of tar shards as extraction packs them:
    rows whose ``abs_path`` is a tar reference, so training streams them."""
    from deepfake.data.shards import pack, resolve_packed

    folder.mkdir(parents=True, exist_ok=True)
    rows = crops.iloc[[i % len(crops) for i in range(n)]].reset_index(drop=True)
    names = [f"c{i}.jpg" for i in range(n)]
    for name, source in zip(names, rows["abs_path"], strict=True):
        target = folder / name
        if not target.exists():
            os.link(source, target)
    table = rows.assign(path=names, status="ok", split="train", label=0, video_id=[f"v{i}" for i in range(n)])
    pack(table, folder, folder / "tars", mode="dataset", shard_bytes=64 * 1024**2, name="bench", remove_files=False)
    return rows.assign(abs_path=resolve_packed(folder, names, [folder / "tars"]))


def bench_training(crops: pd.DataFrame, config: TrainConfig, batches: int, reps: int,
                   device_label: str = "cpu", target: Target = LOADER_TARGET) -> Row:
    """Images/s of the real loop and of the in-memory step, interleaved ``reps`` times (medians)."""
    seed_everything(config.seed)
    runtime = make_runtime(config)
    on_gpu = config.augment_on == "device" or (config.augment_on == "auto" and runtime.device.type == "cuda")
    train_ds, _ = build_datasets(_splits(crops, config, batches), config, {"margin": ExtractConfig().margin},
                                 device_augment=on_gpu)
    loader = make_loader(train_ds, config.batch_size, train=True, balance="none", seed=config.seed,
                         num_workers=config.num_workers, pin_memory=runtime.device.type == "cuda")
    training = build_training(config, runtime, train_ds.labels)
    model, loss_fn, optimizer = training.model, training.loss_fn, training.optimizer
    batch = on_device(next(iter(loader)), runtime, train_ds.normalization)   # augmented, on the device

    say(f"[4] training loop vs in-memory step on {device_label}: {reps} x {batches} batches of "
        f"{config.batch_size} at {config.image_size} px, mode {config.mode}, augmentation "
        f"{'on the device' if on_gpu else 'in the loader'}")
    train_one_epoch(model, loader, optimizer, loss_fn, runtime, max_batches=2)  # warm-up, workers started
    loop, step = [], []
    for epoch in range(reps):
        train_ds.set_epoch(epoch + 1)
        loop.append(train_one_epoch(model, loader, optimizer, loss_fn, runtime, max_batches=batches).images_per_s)
        step.append(benchmark_step(model, batch, optimizer, loss_fn, runtime, steps=batches, warmup=0))
    streamed = isinstance(train_ds, ShardStream)
    note = (f"mode {config.mode}, batch {config.batch_size}, {config.image_size} px, unfreeze_blocks "
            f"{config.unfreeze_blocks}, num_workers {config.num_workers}, augmentation "
            f"{'on the device' if on_gpu else 'in the loader'}, "
            + (f"streamed from {train_ds.shards()} tar shard(s)" if streamed else f"crop cache {config.cache_crops}"))
    metric = f"training images/s, real loop vs in-memory step, {config.mode}" + (
        ", augmentation in the loader" if runtime.device.type == "cuda" and not on_gpu else "") + (
        ", streamed from tar shards" if streamed else "")
    return Row(4, metric, "img/s", p50(loop), p50(step), "in-memory step", target, device=device_label, note=note,
               samples={"loop_img_per_s": rounded(loop), "in_memory_img_per_s": rounded(step)})


def rows_needed(config: TrainConfig, batches: int) -> int:
    """Rows for the warm-up and the timed batches."""
    return config.batch_size * (batches + 3) * (2 if config.mode != "dataset" else 1)


def _splits(crops: pd.DataFrame, config: TrainConfig, batches: int) -> dict[str, pd.DataFrame]:
    """Enough rows for the warm-up and the timed batches; the crops repeat, labels alternate (the dataset mode
    needs both classes; what the labels are does not change the cost). Self-blending uses the reals."""
    n = rows_needed(config, batches)
    rows = crops.iloc[[i % len(crops) for i in range(n)]].reset_index(drop=True)
    rows = rows.assign(label=[i % 2 if config.mode == "dataset" else 0 for i in range(n)], status="ok",
                       video_id=[f"v{i}" for i in range(n)], split="train")
    return {"train": rows, "val": rows.iloc[:2]}


def cuda_configs(config: TrainConfig, where: str | None) -> list[tuple[TrainConfig, Target]]:
    """The GPU rows' settings (batch 128, AMP, channels-last, loader processes) on ``where``
    (:func:`benchmarks.scoring.gpu_rows_device`), or none."""
    if where is None:
        return []
    workers = max(1, min(8, (os.cpu_count() or 2) - 1))
    batch = GPU_BATCH if where == "cuda" else config.batch_size      # a dry run on the CPU keeps the CPU's batch
    gpu = TrainConfig.from_dict({**config.to_dict(), "device": where, "amp": True, "channels_last": True,
                                 "num_workers": workers, "batch_size": batch, "augment_on": "device"})
    return [(gpu, GPU_LOADER_TARGET), (gpu.replace(augment_on="loader"), GPU_LOADER_TARGET),
            (gpu.replace(mode="self_blend"), GPU_LOADER_TARGET)]
