"""The batched augmentation the training device applies: the CPU augmentation's draws, the same operations."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from deepfake.data.augment import DRAW_VECTOR, AugmentDraw, TrainAugment
from deepfake.data.device_augment import augment_batch, jpeg_like, normalize_batch
from deepfake.media.preprocess import normalize

AUG = TrainAugment()


@pytest.fixture(scope="module")
def crops(face_photos):
    return np.stack([cv2.resize(rgb, (96, 96), interpolation=cv2.INTER_AREA) for _, rgb in face_photos[:4]])


def on_device(crops, draws):
    vectors = torch.from_numpy(np.stack([d.to_vector() for d in draws]))
    return augment_batch(torch.from_numpy(crops), vectors).permute(0, 2, 3, 1).numpy()


def on_cpu(crops, draws):
    return np.stack([AUG.apply(c, d) for c, d in zip(crops, draws, strict=True)]).astype(np.float64)


@pytest.mark.parametrize("draw, mean_tol, max_tol", [
    (AugmentDraw(flip=True), 0, 0),
    (AugmentDraw(color=(("brightness", 1.17),)), 0.01, 1),
    (AugmentDraw(color=(("contrast", 0.83),)), 0.01, 1),
    (AugmentDraw(color=(("saturation", 1.15),)), 0.01, 1),
    (AugmentDraw(color=(("hue", 0.018),)), 0.01, 1),
    (AugmentDraw(color=(("saturation", 0.9), ("hue", -0.01), ("brightness", 0.85), ("contrast", 1.1))), 0.05, 2),
    (AugmentDraw(downscale=0.5), 0.3, 3),            # OpenCV's area filter and torch's agree on whole ratios
    (AugmentDraw(cutout=(10, 20, 40)), 0, 0),
])
def test_each_operation_matches_the_cpu_one(crops, draw, mean_tol, max_tol):
    diff = np.abs(on_device(crops, [draw] * len(crops)) - on_cpu(crops, [draw] * len(crops)))
    assert diff.mean() <= mean_tol and diff.max() <= max_tol


@pytest.mark.parametrize("quality", [40, 75, 95])
def test_jpeg_is_modelled_with_libjpeg_s_error(crops, quality):
    draw = AugmentDraw(jpeg=quality)
    ours, libjpeg = on_device(crops, [draw] * len(crops)), on_cpu(crops, [draw] * len(crops))
    err_ours, err_lib = np.abs(ours - crops).mean(), np.abs(libjpeg - crops).mean()
    assert err_ours == pytest.approx(err_lib, rel=0.25)        # as lossy as OpenCV's encoder at that quality
    assert np.abs(ours - libjpeg).mean() < err_lib              # and closer to its output than to the original


def test_lower_quality_loses_more():
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 3, 32, 32)).astype(np.float32))
    x = torch.nn.functional.avg_pool2d(x, 3, 1, 1)
    errors = [float((jpeg_like(x, torch.tensor([q, q])) - x).abs().mean()) for q in (10, 50, 95)]
    assert errors[0] > errors[1] > errors[2]


def test_random_draws_are_close_and_repeatable(crops):
    draws = [AUG.draw(np.random.default_rng(seed), 96, 96) for seed in range(len(crops))]
    first, again = on_device(crops, draws), on_device(crops, draws)
    assert np.array_equal(first, again)
    assert np.abs(first - on_cpu(crops, draws)).mean() < 2.0


def test_draws_travel_as_fixed_length_vectors():
    for seed in range(50):
        draw = AUG.draw(np.random.default_rng(seed), 64, 80)
        vector = draw.to_vector()
        assert vector.shape == (DRAW_VECTOR,) and AugmentDraw.from_vector(vector) == draw
    assert AUG(np.zeros((8, 8, 3), np.uint8), np.random.default_rng(3)).shape == (8, 8, 3)


def test_device_normalisation_is_the_cpu_one(crops):
    norm = {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float()
    assert torch.allclose(normalize_batch(x, norm), normalize(crops, norm), atol=1e-6)
