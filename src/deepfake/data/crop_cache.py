"""Face crops decoded once, resized to the model's input: a compact uint8 array for every epoch.

Without it every epoch decodes every JPEG crop again and resizes it; with it an
item is a slice of one (N, size, size, 3) uint8 array (150 KB a crop at 224 px),
which DataLoader workers share with the training process (fork: the pages are
not copied) and which a batch can be cut from without any decoding. The pixels
are exactly those of :func:`read_rgb` followed by
:func:`deepfake.media.preprocess.resize_crop`, so training sees the same
crops either way.

Up to ``MEMORY_FRACTION`` of the machine's memory the array lives in memory;
a larger set goes to a memory-mapped file in ``spill_dir`` (default: the
temporary folder), unlinked as soon as it is mapped: the system frees it when
the last process using it (training and its loader workers) ends, however it ends.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import tempfile
from collections.abc import Sequence

import numpy as np

from deepfake.core.errors import ConfigError
from deepfake.core.resources import memory_bytes, usable_cores
from deepfake.data.shards import parse_ref, read_crop_bytes
from deepfake.media.images import decode_image, read_image
from deepfake.media.preprocess import resize_crop

MEMORY_FRACTION = 0.25          # at most this share of the machine's RAM held in memory; beyond it, a file


def read_rgb(path: str | os.PathLike[str]) -> np.ndarray:
    """A saved face crop as RGB uint8: a file, or a member of a tar shard (:mod:`deepfake.data.shards`)."""
    if parse_ref(str(path)) is not None:
        return decode_image(read_crop_bytes(str(path)), what=f"face crop {path}", hint="re-run face extraction")
    return read_image(path, what="face crop", hint="re-run face extraction")


class CropCache:
    """``cache[i]``: crop ``paths[i]`` at ``image_size`` x ``image_size``, RGB uint8 (a read-only view)."""

    def __init__(self, paths: Sequence[str | os.PathLike[str]], image_size: int, *,
                 spill_dir: str | os.PathLike[str] | None = None, threads: int | None = None) -> None:
        if int(image_size) < 1:
            raise ConfigError(f"CropCache image_size={image_size!r} must be a positive number of pixels")
        self.paths = [str(p) for p in paths]
        self.image_size = int(image_size)
        shape = (len(self.paths), self.image_size, self.image_size, 3)
        self.spilled = _nbytes(shape) > MEMORY_FRACTION * memory_bytes()
        if self.spilled:
            with tempfile.NamedTemporaryFile(dir=spill_dir, prefix="crop-cache-", suffix=".u8") as tmp:
                tmp.truncate(max(1, _nbytes(shape)))
                self.array: np.ndarray = np.memmap(tmp.name, dtype=np.uint8, mode="r+", shape=shape)
        else:
            self.array = np.empty(shape, dtype=np.uint8)
        self._fill(threads or usable_cores())
        self.array.flags.writeable = False

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> np.ndarray:
        return self.array[index]

    @property
    def nbytes(self) -> int:
        return int(self.array.nbytes)

    def _fill(self, threads: int) -> None:
        def load(i: int) -> None:   # OpenCV decodes and resizes without the GIL: threads run side by side
            self.array[i] = resize_crop(read_rgb(self.paths[i]), self.image_size)

        with cf.ThreadPoolExecutor(max(1, threads), thread_name_prefix="crop-cache") as pool:
            for _ in pool.map(load, range(len(self.paths))):
                pass


def _nbytes(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape, dtype=np.int64))
