"""The model artifact: a folder (or a SageMaker ``model.tar.gz`` with the same files at its root).

- ``model.safetensors``: weights only, no pickle, so loading runs no code;
- ``config.json``: everything needed to score a crop the way training did
  (backbone, image size, normalisation, label map, the scoring rule) plus the
  train and extract configs, the calibration, the training record, the kit
  version and the weights' sha256;
- ``model_card.md``: intended use, data, metrics and limitations
  (:mod:`deepfake.modeling.card`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from deepfake import __version__
from deepfake.core.errors import ConfigError, ModelError
from deepfake.core.files import atomic_write_bytes, atomic_write_text, write_json
from deepfake.core.vocabulary import LABELS
from deepfake.media.preprocess import preprocess
from deepfake.modeling.artifact_files import (
    ARTIFACT_FORMAT,
    CARD_FILE,
    CONFIG_FILE,
    CPU_MICRO_BATCH,
    WEIGHTS_FILE,
    ArtifactFiles,
    config_of,
    micro_batch,
    read_artifact,
    read_artifact_files,
)
from deepfake.modeling.card import model_card
from deepfake.modeling.network import (
    DEFAULT_BACKBONE,
    TIMM_PREFIX,
    _unwrap,
    backbones,
    build_model,
    get_backbone,
    normalization,
)
from deepfake.modeling.runtime import Hardware, Runtime, make_runtime

LABEL_MAP = dict(LABELS)                 # the kit's labels, 0 = real, 1 = fake; the logit is for "fake"


# The scoring rule of a model nobody has calibrated or evaluated yet (deepfake.scoring.rule.ScoringRule):
# training replaces the temperature, evaluation the aggregation and threshold it gated with.
DEFAULT_SCORING: dict[str, Any] = {"temperature": 1.0, "aggregation": "mean", "threshold": 0.5}


def save_artifact(model: nn.Module, out_dir: str | os.PathLike[str], config: Mapping[str, Any]) -> Path:
    """Write the weights, ``config.json`` and ``model_card.md`` into ``out_dir``; returns ``out_dir``.

    ``config`` carries what the caller knows (``train``, ``extract``, ``image_size``,
    ``best_epoch``, ``best_val_loss``, ``metrics``, ``data``); the kit adds the
    label map, normalisation, default aggregation, versions, time and the sha256.
    """
    out = Path(out_dir)
    train_cfg = dict(config.get("train") or {})
    image_size = config.get("image_size", train_cfg.get("image_size"))
    if image_size is None:
        raise ModelError("save_artifact needs config['image_size'] (or config['train']['image_size'])")
    architecture = str(config.get("architecture") or train_cfg.get("backbone") or DEFAULT_BACKBONE)
    get_backbone(architecture)
    state = {k: v.detach().to("cpu").contiguous() for k, v in _unwrap(model).state_dict().items()}
    weights = save_safetensors(state, metadata={"architecture": architecture, "kit_version": __version__,
                                                "format": str(ARTIFACT_FORMAT)})
    sha = hashlib.sha256(weights).hexdigest()
    full: dict[str, Any] = {
        "format": ARTIFACT_FORMAT,
        "label_map": dict(LABEL_MAP),
        "normalization": normalization(architecture),
        "scoring": dict(DEFAULT_SCORING),
        "extract": None,
        **dict(config),
        "architecture": architecture,
        "train": train_cfg,
        "image_size": int(image_size),
        "kit_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "weights_file": WEIGHTS_FILE,
        "weights_sha256": sha,
    }
    atomic_write_bytes(out / WEIGHTS_FILE, weights)
    write_json(out / CONFIG_FILE, full)
    atomic_write_text(out / CARD_FILE, model_card(full))
    return out


def read_artifact_config(source: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``config.json`` of a model folder or ``model.tar.gz``, checked, without loading the weights."""
    src = Path(source)
    return _config_of(read_artifact_files(src), src)


def update_artifact(source: str | os.PathLike[str], out_dir: str | os.PathLike[str],
                    changes: Mapping[str, Any]) -> Path:
    """Copy the artifact at ``source`` (folder or ``model.tar.gz``) to ``out_dir`` with ``changes`` in its config.

    The weights are copied byte for byte (their sha256 still matches); the
    model card is written again from the new config. Returns ``out_dir``.
    """
    src = Path(source)
    files = read_artifact_files(src)
    config = {**_config_of(files, src), **dict(changes)}
    out = Path(out_dir)
    atomic_write_bytes(out / WEIGHTS_FILE, files[WEIGHTS_FILE])
    write_json(out / CONFIG_FILE, config)
    atomic_write_text(out / CARD_FILE, model_card(config))
    return out


@dataclass
class LoadedModel:
    """A model ready to score crops, with the config it was trained with."""

    model: nn.Module
    config: dict[str, Any]
    version: str
    runtime: Runtime
    path: Path | None = None
    micro_batch: int = CPU_MICRO_BATCH    # crops in every forward pass (a short one is padded): see predict_logits
    sha256: str | None = None             # of the weights: with the version, what names the model in MLflow

    @property
    def device(self) -> torch.device:
        return self.runtime.device

    @property
    def image_size(self) -> int:
        return int(self.config["image_size"])

    @property
    def normalization(self) -> dict[str, list[float]]:
        return self.config["normalization"]

    def predict_logits(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """The fake logit (float32, one per crop) of RGB uint8 crops of any size.

        Every forward pass holds exactly ``micro_batch`` crops, the last one padded
        with blank crops: torch's kernels round a little differently for other
        batch sizes (never for other crops in a batch of the same size), so a crop
        gets the very same logit whether a video is scored alone while it decodes
        (serving) or among thousands of saved crops (evaluation).
        """
        size = int(self.micro_batch)
        out: list[np.ndarray] = []
        with torch.inference_mode():
            for start in range(0, len(crops), size):
                chunk = list(crops[start:start + size])
                x = preprocess(chunk, self.image_size, self.normalization)
                if len(chunk) < size:
                    x = torch.cat([x, x.new_zeros((size - len(chunk), *x.shape[1:]))])
                logits = self.forward(x)
                out.append(logits.float().reshape(-1)[:len(chunk)].cpu().numpy())
        return np.concatenate(out).astype(np.float32) if out else np.zeros(0, dtype=np.float32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a preprocessed batch on the model's runtime: channels_last everywhere (~20% faster on
        CPU too), AMP on CUDA."""
        with self.runtime.autocast():
            return self.model(self.runtime.inputs(x))


def load_artifact(path: str | os.PathLike[str] | ArtifactFiles, device: str = "cpu") -> LoadedModel:
    """Load a model folder, or a ``model.tar.gz`` with the model files at its root (or files already read).

    The tarball is read in memory (no extraction, no temporary folder). The
    weights are checked against the sha256 in ``config.json`` and loaded strictly.
    """
    files = path if isinstance(path, ArtifactFiles) else read_artifact(path)
    source, config = files.source, files.config
    _check_architecture(config, source)
    try:
        state = load_safetensors(files.weights)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise ModelError(f"{WEIGHTS_FILE} of model {source} cannot be read as safetensors: {exc}") from exc
    architecture = config["architecture"]
    model = build_model(unfreeze_blocks=0, image_size=int(config["image_size"]), backbone=architecture)
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ModelError(
            f"weights of model {source} do not fit {architecture}: missing {missing[:5] or 'none'}, "
            f"unexpected {unexpected[:5] or 'none'}; was it saved by deepfake.modeling.artifact.save_artifact?"
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"weights of model {source} do not fit {architecture}: {exc}") from exc
    runtime = make_runtime(Hardware(device=str(device)))
    model.requires_grad_(False)
    runtime.place(model.eval())
    return LoadedModel(model=model, config=config, version=files.version, runtime=runtime, path=source,
                       micro_batch=micro_batch(runtime.device.type), sha256=files.sha256)


def artifact_files(source: str | os.PathLike[str]) -> list[Path]:
    """The files a model was loaded from: its archive, or the weights and config of its folder."""
    src = Path(source)
    if src.is_file():
        return [src]
    folder = src if (src / CONFIG_FILE).is_file() else src / "model"
    return [p for p in (folder / CONFIG_FILE, folder / WEIGHTS_FILE) if p.is_file()]


def _config_of(files: Mapping[str, bytes], source: Path) -> dict[str, Any]:
    config = config_of(files, source)
    _check_architecture(config, source)
    return config


def _check_architecture(config: Mapping[str, Any], source: Path) -> None:
    try:
        get_backbone(config.get("architecture"))
    except ConfigError:
        raise ModelError(f"model {source} is a {config.get('architecture')!r}; this kit loads "
                         f"{', '.join(backbones())} and {TIMM_PREFIX}<model>") from None
