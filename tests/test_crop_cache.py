"""The uint8 crop cache: the very pixels of decoding and resizing each crop, in memory or spilled to a file."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

import deepfake.data.crop_cache as crop_cache
from deepfake.core.errors import ImageDecodeError
from deepfake.data.crop_cache import CropCache, read_rgb
from deepfake.media.preprocess import resize_crop


@pytest.fixture
def crops(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i, size in enumerate((72, 50, 64, 200)):
        path = tmp_path / f"crop_{i}.jpg"
        cv2.imwrite(str(path), cv2.GaussianBlur(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), (5, 5), 0))
        paths.append(path)
    return paths


def test_the_cache_holds_each_crop_decoded_and_resized(crops):
    cache = CropCache(crops, 64, threads=2)
    assert len(cache) == 4 and cache.array.shape == (4, 64, 64, 3) and cache.nbytes == 4 * 64 * 64 * 3
    assert not cache.spilled
    for i, path in enumerate(crops):
        assert np.array_equal(cache[i], resize_crop(read_rgb(path), 64))
    with pytest.raises(ValueError):
        cache[0][0, 0, 0] = 1            # read-only: an item is a view the dataset must not change


def test_a_cache_larger_than_its_memory_share_goes_to_an_unlinked_file(crops, tmp_path, monkeypatch):
    monkeypatch.setattr(crop_cache, "MEMORY_FRACTION", 0.0)
    spill = tmp_path / "spill"
    spill.mkdir()
    cache = CropCache(crops, 48, spill_dir=spill)
    assert cache.spilled and isinstance(cache.array, np.memmap)
    assert list(spill.iterdir()) == []   # unlinked once mapped: nothing left behind, however the run ends
    assert np.array_equal(cache[3], resize_crop(read_rgb(crops[3]), 48))


def test_a_missing_crop_is_named(crops):
    crops[2].unlink()
    with pytest.raises(ImageDecodeError, match="crop_2.jpg"):
        CropCache(crops, 32)
