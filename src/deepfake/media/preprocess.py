"""The one preprocessing path from RGB crops to the model's input tensor.

Shared by training (:mod:`deepfake.data.dataset`) and scoring
(:meth:`deepfake.modeling.artifact.LoadedModel.predict_logits`), so a crop is
resized and normalised the same way everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np
import torch

from deepfake.core.errors import InvalidInputError


def resize_crop(rgb: np.ndarray, image_size: int) -> np.ndarray:
    """Resize a crop to ``image_size`` x ``image_size`` (area filter to shrink, bilinear to enlarge)."""
    _check_rgb(rgb)
    h, w = rgb.shape[:2]
    if (h, w) == (image_size, image_size):
        return rgb
    interpolation = cv2.INTER_AREA if h > image_size or w > image_size else cv2.INTER_LINEAR
    return cv2.resize(rgb, (image_size, image_size), interpolation=interpolation)


def normalize(batch: np.ndarray, normalization: Mapping[str, Sequence[float]]) -> torch.Tensor:
    """N x H x W x 3 uint8 -> N x 3 x H x W float32, scaled to [0, 1] then ``(x - mean) / std``."""
    mean = torch.tensor(normalization["mean"], dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(normalization["std"], dtype=torch.float32).view(1, 3, 1, 1)
    batch = np.ascontiguousarray(batch)
    if not batch.flags.writeable:      # a view of a read-only crop cache: torch wants memory it may write
        batch = batch.copy()
    x = torch.from_numpy(batch).permute(0, 3, 1, 2).float().div_(255.0)
    return x.sub_(mean).div_(std).contiguous()


def preprocess(
    rgb_batch: Sequence[np.ndarray], image_size: int, normalization: Mapping[str, Sequence[float]]
) -> torch.Tensor:
    """RGB uint8 crops of any size -> the model's input tensor (N x 3 x size x size, float32)."""
    if len(rgb_batch) == 0:
        return torch.empty((0, 3, image_size, image_size), dtype=torch.float32)
    return normalize(np.stack([resize_crop(rgb, image_size) for rgb in rgb_batch]), normalization)


def _check_rgb(rgb: Any) -> None:
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        desc = f"shape {rgb.shape} dtype {rgb.dtype}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
        raise InvalidInputError(f"expected an H x W x 3 uint8 RGB crop, got {desc}")
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise InvalidInputError(f"expected a non-empty crop, got shape {rgb.shape}")
