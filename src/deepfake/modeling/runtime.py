"""Where and how tensors run: the device, CPU threads, mixed precision, memory layout, seeds.

Training and scoring both set up their device here, so a model trains and
scores with the same layout (channels-last on CPU and CUDA) and the same
thread budget.
"""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from deepfake.core.errors import ConfigError
from deepfake.core.resources import usable_cores


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without it is an error, not a silent CPU run."""
    name = str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but this torch build sees no CUDA GPU; use device='cpu' or 'auto'")
    if not (name == "cpu" or name.startswith("cuda")):
        raise ConfigError(f"device={name!r} is not known; use 'auto', 'cpu' or 'cuda'")
    return torch.device(name)


def configure_cpu_threads(threads: int | None = None) -> int:
    """Set torch's CPU threads: ``threads``, else ``DEEPFAKE_TORCH_THREADS``, else the usable CPUs.

    torch's default counts the machine's cores, which oversubscribes a container
    or a CPU-pinned worker; the affinity mask is what the process can really use.
    On a machine shared with other busy processes, fewer threads can be much
    faster (OpenMP threads spin waiting for each other): set 1 there.
    """
    env = os.environ.get("DEEPFAKE_TORCH_THREADS", "").strip()
    if threads:
        if threads < 1:
            raise ConfigError(f"threads={threads!r} must be a positive integer")
        wanted = int(threads)
    elif env:
        if not env.isdigit() or int(env) < 1:
            raise ConfigError(f"DEEPFAKE_TORCH_THREADS={env!r} must be a positive integer")
        wanted = int(env)
    else:
        wanted = max(1, min(torch.get_num_threads(), usable_cores()))
    if torch.get_num_threads() != wanted:
        torch.set_num_threads(wanted)
    return wanted


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

    def inputs(self, images: torch.Tensor) -> torch.Tensor:
        """A batch of images on the device, in the memory layout the model was put in (:meth:`place`)."""
        images = images.to(self.device, non_blocking=self.device.type == "cuda")
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

    def to_device(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        labels = labels.to(self.device, non_blocking=self.device.type == "cuda").float().reshape(-1)
        return self.inputs(images), labels

    def place(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model on the device, in this runtime's memory layout."""
        model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model


class RuntimeSettings(Protocol):
    """What :func:`make_runtime` reads (``deepfake.stages.train.TrainConfig`` has it)."""

    device: str          # "auto", "cpu" or "cuda[:N]"
    amp: bool            # mixed precision on CUDA
    channels_last: bool  # NHWC memory layout
    cpu_threads: int     # torch CPU threads; 0 = the usable cores


def make_runtime(config: RuntimeSettings) -> Runtime:
    """AMP only on CUDA (on CPU it slows training down); channels_last on both: oneDNN's NHWC kernels
    trained Lite0 1.6x faster on 2 CPU cores (full fine-tuning at 160 px: 41 vs 25 images/s)."""
    device = resolve_device(config.device)
    if device.type != "cuda":
        configure_cpu_threads(config.cpu_threads or None)
        return Runtime(device, channels_last=config.channels_last)
    amp_dtype = None
    scaler = None
    if config.amp:
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    return Runtime(device, amp_dtype=amp_dtype, channels_last=config.channels_last, scaler=scaler)


@dataclass(frozen=True)
class Hardware:
    """Runtime settings of a model that only scores: the device, AMP and NHWC wherever they help."""

    device: str = "auto"
    amp: bool = True
    channels_last: bool = True
    cpu_threads: int = 0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
