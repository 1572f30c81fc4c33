"""Training: ``TrainConfig`` and the loop that turns a faces table into a model artifact.

The train split trains, the val split picks the best epoch (lowest validation
log loss) and stops early; the test split is never read here. The pieces of the
loop (:func:`make_loader`, :func:`train_step`, :func:`train_one_epoch`,
:func:`evaluate_loader`, :func:`benchmark_step`) are public so a benchmark can
compare the real loop's images/s with forward+backward on in-memory tensors.

Class imbalance (DFDC has about five fakes per real): ``balance="sampler"``
(default) draws real and fake crops equally often with replacement, so every
batch is balanced, which also keeps the trainable BatchNorm statistics
unbiased; ``"pos_weight"`` keeps one pass over each crop per epoch and weights
the loss of fakes by n_real / n_fake instead; ``"none"`` trains on the raw mix.
The validation loss is always the plain, unweighted log loss.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import random
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from deepfake import paths
from deepfake.augment import TrainAugment
from deepfake.config import StageConfig
from deepfake.dataset import FaceDataset, balanced_sampler, pos_weight
from deepfake.errors import ConfigError, DataError, ManifestError, ModelError
from deepfake.manifest import write_manifest
from deepfake.model import (
    NORMALIZATION,
    build_model,
    configure_cpu_threads,
    head_parameter_names,
    resolve_device,
    save_artifact,
)

BALANCE_CHOICES = ("sampler", "pos_weight", "none")
HISTORY_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "images_per_s"]


@dataclass(frozen=True)
class TrainConfig(StageConfig):
    epochs: int = 6                  # passes over the train split (early stopping may end sooner)
    batch_size: int = 32             # face crops per optimiser step
    lr: float = 1e-3                 # AdamW learning rate of the head (conv head + classifier), cosine-decayed per step
    backbone_lr_mult: float = 0.1    # unfrozen MBConv blocks learn at lr x this: pretrained features should move slowly
    weight_decay: float = 1e-4       # AdamW decoupled weight decay (not on biases and BatchNorm)
    unfreeze_blocks: int = 2         # final MBConv blocks (of 16) trained with the head; -1 = all, 0 = head only
    image_size: int = 224            # pixels, side of the square model input; crops are resized to it
    augment: bool = True             # flip, colour jitter, downscale, JPEG re-compression, cutout on train crops
    balance: str = "sampler"         # class imbalance: "sampler" (equal draws), "pos_weight" (weighted loss), "none"
    label_smoothing: float = 0.05    # train targets 0/1 -> eps/2 and 1-eps/2: a few-video model should not be sure
    patience: int = 3                # epochs without a better validation loss before stopping; 0 = never stop early
    seed: int = 0                    # seeds torch, numpy, python, the sampler and every augmentation
    num_workers: int = 0             # DataLoader processes; 0 decodes in the training process (best on 2 CPU cores)
    cpu_threads: int = 0             # torch CPU threads; 0 = the CPUs this process may use (DEEPFAKE_TORCH_THREADS)
    device: str = "auto"             # "auto" (CUDA when present), "cpu" or "cuda"
    amp: bool = True                 # mixed precision on CUDA (bf16 where supported, else fp16); ignored on CPU
    channels_last: bool = True       # NHWC memory layout on CUDA (faster convolutions); ignored on CPU
    max_train_batches: int = 0       # cut each epoch after this many batches; 0 = all (for tests and benchmarks)

    def __post_init__(self) -> None:
        positive = ("epochs", "batch_size", "image_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"TrainConfig {name}={getattr(self, name)!r} must be at least 1")
        if self.image_size < 32:
            raise ConfigError(f"TrainConfig image_size={self.image_size} is too small; use 32 pixels or more (224 is native)")
        for name in ("num_workers", "cpu_threads", "patience", "max_train_batches", "seed"):
            if getattr(self, name) < 0:
                raise ConfigError(f"TrainConfig {name}={getattr(self, name)!r} must not be negative")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"TrainConfig lr={self.lr!r} must be a positive number")
        if not 0 <= self.backbone_lr_mult <= 1:
            raise ConfigError(f"TrainConfig backbone_lr_mult={self.backbone_lr_mult!r} must be in [0, 1]")
        if self.weight_decay < 0:
            raise ConfigError(f"TrainConfig weight_decay={self.weight_decay!r} must not be negative")
        if not -1 <= self.unfreeze_blocks <= 16:
            raise ConfigError(
                f"TrainConfig unfreeze_blocks={self.unfreeze_blocks!r} must be -1 (all), 0 (head only) or 1-16"
            )
        if self.balance not in BALANCE_CHOICES:
            raise ConfigError(f"TrainConfig balance={self.balance!r} is unknown; use one of {', '.join(BALANCE_CHOICES)}")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"TrainConfig label_smoothing={self.label_smoothing!r} must be in [0, 1)")
        if self.device != "auto" and self.device != "cpu" and not self.device.startswith("cuda"):
            raise ConfigError(f"TrainConfig device={self.device!r} is unknown; use 'auto', 'cpu' or 'cuda'")


@dataclass(frozen=True)
class TrainResult:
    history_df: pd.DataFrame   # one row per epoch, HISTORY_COLUMNS
    best_epoch: int            # 1-based epoch whose weights were saved
    best_val_loss: float       # its validation log loss
    artifact_dir: Path         # out_dir/model: model.safetensors, config.json, model_card.md


@dataclass(frozen=True)
class EpochStats:
    loss: float                # mean training loss (smoothed, weighted targets: what was optimised)
    acc: float                 # accuracy against the hard labels at threshold 0.5
    images: int                # crops seen
    seconds: float             # wall time of the epoch's training part
    images_per_s: float


@dataclass
class Runtime:
    """Where and how tensors run: device, autocast dtype, memory layout, gradient scaler."""

    device: torch.device
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False
    scaler: torch.amp.GradScaler | None = None

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def to_device(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        non_blocking = self.device.type == "cuda"
        images = images.to(self.device, non_blocking=non_blocking)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, labels.to(self.device, non_blocking=non_blocking).float().reshape(-1)


def make_runtime(config: TrainConfig) -> Runtime:
    """AMP and channels_last only on CUDA: on CPU they slow training down or change nothing."""
    device = resolve_device(config.device)
    if device.type != "cuda":
        configure_cpu_threads(config.cpu_threads or None)
        return Runtime(device)
    amp_dtype = None
    scaler = None
    if config.amp:
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    return Runtime(device, amp_dtype=amp_dtype, channels_last=config.channels_last, scaler=scaler)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


class SmoothedBCE(nn.Module):
    """Binary cross-entropy on logits with label smoothing and an optional weight for fakes."""

    def __init__(self, smoothing: float = 0.0, pos_weight: float | None = None) -> None:
        super().__init__()
        self.smoothing = float(smoothing)
        weight = torch.tensor([pos_weight], dtype=torch.float32) if pos_weight is not None else None
        self.register_buffer("pos_weight", weight)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        targets = targets * (1.0 - self.smoothing) + 0.5 * self.smoothing
        return F.binary_cross_entropy_with_logits(logits.reshape(-1), targets, pos_weight=self.pos_weight)


def make_loss(config: TrainConfig, train_labels: np.ndarray) -> SmoothedBCE:
    weight = pos_weight(train_labels) if config.balance == "pos_weight" else None
    return SmoothedBCE(config.label_smoothing, weight)


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW: the head at ``lr``, unfrozen blocks at ``lr * backbone_lr_mult``; no decay on biases and norms."""
    head = head_parameter_names(model)
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            groups.setdefault((name in head, param.ndim > 1), []).append(param)
    param_groups = []
    for (is_head, decays), params in sorted(groups.items(), key=lambda kv: (not kv[0][0], not kv[0][1])):
        lr = config.lr if is_head else config.lr * config.backbone_lr_mult
        param_groups.append({"params": params, "lr": lr, "weight_decay": config.weight_decay if decays else 0.0,
                             "name": ("head" if is_head else "backbone") + ("" if decays else "_no_decay")})
    return torch.optim.AdamW(param_groups, lr=config.lr)


def make_model(config: TrainConfig, runtime: Runtime, train_labels: np.ndarray,
               ) -> tuple[nn.Module, SmoothedBCE, torch.optim.AdamW]:
    """The pretrained model on its device and layout, its loss and optimiser: what ``train`` and the benchmark use."""
    model = build_model(pretrained=True, unfreeze_blocks=config.unfreeze_blocks, image_size=config.image_size)
    model.to(runtime.device)
    if runtime.channels_last:
        model.to(memory_format=torch.channels_last)
    loss_fn = make_loss(config, train_labels).to(runtime.device)
    return model, loss_fn, make_optimizer(model, config)


def cosine_schedule(optimizer: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Decay every group's learning rate along half a cosine, to zero after ``total_steps``."""
    total = max(1, int(total_steps))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total)))


def make_loader(
    dataset: FaceDataset,
    batch_size: int,
    *,
    train: bool,
    balance: str = "none",
    seed: int = 0,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """Shuffled (or class-balanced) batches for training, the dataset in order for validation.

    Workers are not persistent, so ``dataset.set_epoch`` reaches them each epoch.
    """
    generator = torch.Generator().manual_seed(int(seed))
    sampler = None
    shuffle = False
    if train:
        if balance == "sampler":
            sampler = balanced_sampler(dataset.labels, generator=generator)
        else:
            shuffle = True
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        generator=generator if shuffle else None,
        drop_last=False,
    )


def train_step(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    runtime: Runtime,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step on a batch; returns the detached loss and logits (no device sync)."""
    images, labels = runtime.to_device(images, labels)
    with runtime.autocast():
        logits = model(images).reshape(-1)
    loss = loss_fn(logits.float(), labels)
    optimizer.zero_grad(set_to_none=True)
    if runtime.scaler is not None:
        runtime.scaler.scale(loss).backward()
        runtime.scaler.step(optimizer)
        runtime.scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return loss.detach(), logits.detach()


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    runtime: Runtime,
    *,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    max_batches: int = 0,
    bar: Any = None,
) -> EpochStats:
    """One pass of the real loop: loading, augmentation, forward, backward, step."""
    model.train()
    loss_sum = torch.zeros((), device=runtime.device)
    correct = torch.zeros((), device=runtime.device)
    images_seen = 0
    start = time.perf_counter()
    for images, labels in _limit(loader, max_batches):
        loss, logits = train_step(model, images, labels, optimizer, loss_fn, runtime)
        if scheduler is not None:
            scheduler.step()
        n = int(labels.shape[0])
        loss_sum += loss * n
        correct += ((logits > 0).float() == labels.to(runtime.device).reshape(-1)).sum()
        images_seen += n
        if bar is not None:
            bar.update(1)
    seconds = time.perf_counter() - start
    if images_seen == 0:
        raise DataError("the training loader yielded no batches; the train split has no usable crops")
    return EpochStats(
        loss=float(loss_sum) / images_seen,
        acc=float(correct) / images_seen,
        images=images_seen,
        seconds=seconds,
        images_per_s=images_seen / seconds if seconds > 0 else float("nan"),
    )


def evaluate_loader(model: nn.Module, loader: DataLoader, runtime: Runtime) -> tuple[float, float]:
    """Plain (unweighted, unsmoothed) log loss and accuracy over a whole loader."""
    model.eval()
    loss_sum = 0.0
    correct = 0.0
    total = 0
    with torch.inference_mode():
        for images, labels in loader:
            x, y = runtime.to_device(images, labels)
            with runtime.autocast():
                logits = model(x).reshape(-1)
            logits = logits.float()
            loss_sum += float(F.binary_cross_entropy_with_logits(logits, y, reduction="sum"))
            correct += float(((logits > 0).float() == y).sum())
            total += int(y.shape[0])
    if total == 0:
        raise DataError("the validation loader yielded no batches; the val split has no usable crops")
    return loss_sum / total, correct / total


def benchmark_step(
    model: nn.Module,
    batch: tuple[torch.Tensor, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    runtime: Runtime,
    *,
    steps: int = 5,
    warmup: int = 1,
) -> float:
    """Images/s of :func:`train_step` alone on one in-memory batch (no decoding, no augmentation)."""
    model.train()
    images, labels = batch
    for _ in range(warmup):
        train_step(model, images, labels, optimizer, loss_fn, runtime)
    _sync(runtime)
    start = time.perf_counter()
    for _ in range(steps):
        train_step(model, images, labels, optimizer, loss_fn, runtime)
    _sync(runtime)
    return steps * int(images.shape[0]) / (time.perf_counter() - start)


def split_frames(faces_df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The usable crops (``status == "ok"``) of the train and val splits, checked for both classes."""
    missing = [c for c in ("split", "label", "abs_path") if c not in faces_df.columns]
    if missing:
        raise ManifestError(
            f"faces table lacks column(s) {', '.join(missing)}; read it with deepfake.extract.read_faces"
        )
    ok = faces_df[faces_df["status"] == "ok"] if "status" in faces_df.columns else faces_df
    counts = _class_counts(ok)
    summary = "; ".join(f"{s}: {c['real']} real + {c['fake']} fake" for s, c in counts.items()) or "no usable crops"
    out = {}
    for split in ("train", "val"):
        rows = ok[ok["split"] == split]
        c = counts.get(split, {"real": 0, "fake": 0})
        if len(rows) == 0:
            raise DataError(
                f"the {split} split has no face crops (crops per split: {summary}); "
                "give it videos (deepfake.splits.ensure_splits) or check why extraction found no faces"
            )
        if c["real"] == 0 or c["fake"] == 0:
            raise DataError(
                f"the {split} split has a single class: {c['real']} real and {c['fake']} fake crops "
                f"(crops per split: {summary}); both classes are needed to train and validate"
            )
        out[split] = rows.reset_index(drop=True)
    return out


def train(
    faces_df: pd.DataFrame,
    out_dir: str | Path,
    config: TrainConfig | None = None,
    extract_config: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train on the train split, keep the epoch with the lowest validation loss as ``out_dir/model``.

    Writes ``out_dir/history.csv`` (+ sidecar) after every epoch and the model
    artifact whenever the validation loss improves, so an interrupted run leaves
    its best model so far. ``progress`` prints one line per epoch (and a tqdm
    bar when stderr is a terminal).
    """
    config = config or TrainConfig()
    out = paths.ensure_dir(out_dir)
    artifact_dir = out / paths.MODEL_DIR
    splits = split_frames(faces_df)
    seed_everything(config.seed)
    runtime = make_runtime(config)

    augment = TrainAugment() if config.augment else None
    train_ds = FaceDataset(splits["train"], config.image_size, NORMALIZATION, augment, seed=config.seed)
    val_ds = FaceDataset(splits["val"], config.image_size, NORMALIZATION)
    pin = runtime.device.type == "cuda"
    train_loader = make_loader(train_ds, config.batch_size, train=True, balance=config.balance,
                               seed=config.seed, num_workers=config.num_workers, pin_memory=pin)
    val_loader = make_loader(val_ds, config.batch_size, train=False, num_workers=config.num_workers, pin_memory=pin)

    model, loss_fn, optimizer = make_model(config, runtime, train_ds.labels)
    steps_per_epoch = len(train_loader) if not config.max_train_batches else min(len(train_loader), config.max_train_batches)
    scheduler = cosine_schedule(optimizer, config.epochs * steps_per_epoch)

    data = {name: {**ds.class_counts(), "videos": int(df["video_id"].nunique()) if "video_id" in df else None}
            for name, ds, df in (("train", train_ds, splits["train"]), ("val", val_ds, splits["val"]))}
    extract = _as_dict(extract_config)
    _log(progress, f"training {len(train_ds)} crops ({data['train']['real']} real, {data['train']['fake']} fake), "
                   f"validating on {len(val_ds)}; {config.epochs} epochs of {steps_per_epoch} batches "
                   f"on {runtime.device.type}, image_size {config.image_size}")

    rows: list[dict[str, float]] = []
    best_epoch, best_val_loss = 0, math.inf
    for epoch in range(1, config.epochs + 1):
        start = time.perf_counter()
        train_ds.set_epoch(epoch)
        lr = optimizer.param_groups[0]["lr"]  # the head's rate at the epoch's start
        with _bar(progress, steps_per_epoch, f"epoch {epoch}") as bar:
            stats = train_one_epoch(model, train_loader, optimizer, loss_fn, runtime, scheduler=scheduler,
                                    max_batches=config.max_train_batches, bar=bar)
        val_loss, val_acc = evaluate_loader(model, val_loader, runtime)
        rows.append({"epoch": epoch, "train_loss": stats.loss, "train_acc": stats.acc, "val_loss": val_loss,
                     "val_acc": val_acc, "lr": lr, "seconds": time.perf_counter() - start,
                     "images_per_s": stats.images_per_s})
        improved = val_loss < best_val_loss
        if improved:
            best_epoch, best_val_loss = epoch, val_loss
            save_artifact(model, artifact_dir, {
                "train": config.to_dict(),
                "extract": extract,
                "image_size": config.image_size,
                "best_epoch": best_epoch,
                "best_val_loss": best_val_loss,
                "metrics": {"val_loss": val_loss, "val_acc": val_acc, "train_loss": stats.loss,
                            "train_acc": stats.acc},
                "data": data,
            })
        history = pd.DataFrame(rows, columns=HISTORY_COLUMNS)
        write_manifest(history, out / paths.HISTORY, config=config.to_dict(),
                       extra={"best_epoch": best_epoch, "best_val_loss": _finite_or_none(best_val_loss),
                              "device": runtime.device.type, "data": data})
        r = rows[-1]
        _log(progress, f"epoch {epoch}/{config.epochs}  train_loss {r['train_loss']:.4f}  train_acc {r['train_acc']:.3f}  "
                       f"val_loss {val_loss:.4f}  val_acc {val_acc:.3f}  lr {lr:.2e}  {r['seconds']:.1f} s  "
                       f"{stats.images_per_s:.1f} img/s" + ("  *best" if improved else ""))
        if config.patience and best_epoch and epoch - best_epoch >= config.patience:
            _log(progress, f"early stop: no better validation loss for {config.patience} epochs; best epoch {best_epoch}")
            break
    if best_epoch == 0:
        raise ModelError(
            f"training produced no usable model: the validation loss was not finite in any epoch "
            f"(lr={config.lr}); lower lr and train again"
        )
    return TrainResult(pd.DataFrame(rows, columns=HISTORY_COLUMNS), best_epoch, best_val_loss, artifact_dir)


def _class_counts(df: pd.DataFrame) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    labels = pd.to_numeric(df["label"], errors="coerce")
    for split in sorted(map(str, df["split"].dropna().unique())):
        mask = df["split"] == split
        fake = int((labels[mask] == 1).sum())
        counts[split] = {"real": int((labels[mask] == 0).sum()), "fake": fake}
    return counts


def _limit(loader: DataLoader, max_batches: int) -> Iterator[Any]:
    """The loader's batches, at most ``max_batches`` (0: all) and without fetching one more."""
    return iter(loader) if not max_batches else itertools.islice(loader, max_batches)


def _sync(runtime: Runtime) -> None:
    if runtime.device.type == "cuda":
        torch.cuda.synchronize(runtime.device)


def _bar(progress: bool, total: int, desc: str) -> contextlib.AbstractContextManager:
    """A tqdm bar on a terminal only: in papermill and logs the per-epoch lines say enough."""
    if not (progress and sys.stderr.isatty()):
        return contextlib.nullcontext()
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, mininterval=5.0, leave=False, unit="batch")


def _log(progress: bool, line: str) -> None:
    if progress:
        print(line, flush=True)


def _as_dict(config: Any) -> dict[str, Any] | None:
    if config is None:
        return None
    if hasattr(config, "to_dict"):
        return dict(config.to_dict())
    if isinstance(config, Mapping):
        return dict(config)
    raise ConfigError(f"extract_config must be a dict or an ExtractConfig, got {type(config).__name__}")


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None
