"""Training items read tar shard by tar shard: an epoch over millions of crops in little memory and disk.

A set whose decoded crops do not fit the training's cache budget is not
cached (:class:`deepfake.data.crop_cache.CropCache` would hold all of them); a
:class:`ShardStream` reads its crops from their tar shards instead
(:mod:`deepfake.data.shards`): each epoch visits the shards in a seeded order,
every loader worker takes its share of them and reads each one front to back
(sequential reads, not one seek per crop), and a buffer of decoded crops per
worker shuffles within what it has read, as WebDataset does. Items are built by
the map-style dataset it wraps (:class:`~deepfake.data.dataset.FaceDataset` or
:class:`~deepfake.data.dataset.PairDataset`: the same augmentation and
self-blending, seeded per ``(seed, epoch, item)``), so only the order differs
from the cached path. Same seed and loader workers: the same run.

``balanced`` draws both classes equally often: every item of the smaller
class and, each epoch, a seeded choice of as many of the larger one.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from deepfake.core.errors import DataError
from deepfake.data.dataset import FaceDataset, PairDataset
from deepfake.data.shards import parse_ref
from deepfake.media.images import decode_image
from deepfake.media.preprocess import resize_crop

SHUFFLE_BUFFER = 1024            # decoded crops each worker shuffles among (150 KB each at 224 px)


class ShardStream(IterableDataset):
    """The items of ``base`` (not cached), read in the order of their crops' tar shards."""

    def __init__(self, base: FaceDataset | PairDataset, *, seed: int = 0, shuffle_buffer: int = SHUFFLE_BUFFER,
                 balanced: bool = False) -> None:
        self.base = base
        self.seed = int(seed)
        self.shuffle_buffer = max(1, int(shuffle_buffer))
        self.balanced = balanced
        self.owners = _owners(base)
        self.locations = [_location(owner.paths[j]) for owner, j in self.owners]

    # -- what the training loop asks of a dataset -------------------------------------------------
    @property
    def labels(self) -> np.ndarray:
        return self.base.labels

    @property
    def epoch(self) -> int:
        return self.base.epoch

    @property
    def normalization(self) -> dict[str, list[float]]:
        return self.base.normalization

    def set_epoch(self, epoch: int) -> None:
        self.base.set_epoch(epoch)

    def class_counts(self) -> dict[str, int]:
        return self.base.class_counts()

    def shards(self) -> int:
        return len({tar for tar, _offset, _size in self.locations})

    def with_balance(self, balanced: bool) -> ShardStream:
        self.balanced = balanced
        return self

    def __len__(self) -> int:
        return len(self.items(0))

    # -- the epoch ------------------------------------------------------------------------------
    def items(self, epoch: int) -> np.ndarray:
        """The items an epoch visits: all of them, or both classes as often (balanced)."""
        every = np.arange(len(self.labels))
        if not self.balanced:
            return every
        y = np.asarray(self.labels).astype(int)
        counts = np.bincount(y, minlength=2)
        if (counts == 0).any():
            raise DataError(f"cannot balance classes with {counts[0]} real and {counts[1]} fake crops; both are needed")
        small = int(np.argmin(counts))
        rng = np.random.default_rng([self.seed, int(epoch), 0xBA1])
        chosen = rng.choice(every[y != small], size=int(counts[small]), replace=False)
        return np.sort(np.concatenate([every[y == small], chosen]))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        epoch = self.base.epoch
        worker = get_worker_info()
        wid, workers = (worker.id, worker.num_workers) if worker is not None else (0, 1)
        by_tar: dict[str, list[int]] = defaultdict(list)
        for item in self.items(epoch):
            by_tar[self.locations[item][0]].append(int(item))
        order = np.random.default_rng([self.seed, epoch, 0x5A4D]).permutation(sorted(by_tar))
        rng = np.random.default_rng([self.seed, epoch, wid])
        buffer: list[tuple[int, np.ndarray]] = []
        for tar in order[wid::workers]:
            for item, rgb in self._read(str(tar), by_tar[str(tar)]):
                buffer.append((item, rgb))
                if len(buffer) >= self.shuffle_buffer:
                    yield self._item(epoch, *_take(buffer, rng))
        while buffer:
            yield self._item(epoch, *_take(buffer, rng))

    def _read(self, tar: str, items: list[int]) -> Iterator[tuple[int, np.ndarray]]:
        """The crops of ``items`` in one tar (or file), decoded and resized, front to back."""
        size = self.base.image_size
        with open(tar, "rb") as fh:
            for item in sorted(items, key=lambda i: self.locations[i][1]):
                _tar, offset, length = self.locations[item]
                fh.seek(offset)
                data = fh.read(length) if length >= 0 else fh.read()
                rgb = decode_image(data, what=f"face crop {self.owners[item][0].paths[self.owners[item][1]]}",
                                   hint="re-run face extraction")
                yield item, resize_crop(rgb, size)

    def _item(self, epoch: int, item: int, rgb: np.ndarray) -> tuple[torch.Tensor, ...]:
        owner, j = self.owners[item]
        owner.streamed[j] = rgb
        try:
            return self.base[(epoch, item)]
        finally:
            owner.streamed.pop(j, None)


def _owners(base: FaceDataset | PairDataset) -> list[tuple[FaceDataset, int]]:
    """Each item's own crop: the dataset holding it and its index there."""
    if isinstance(base, PairDataset):
        fakes = [] if base.fakes is None else [(base.fakes, j) for j in range(len(base.fakes))]
        return [(base.reals, j) for j in range(len(base.reals))] + fakes
    return [(base, j) for j in range(len(base))]


def _location(path: str) -> tuple[str, int, int]:
    """(tar or file, offset, size) of a crop; a plain file is read whole (size -1)."""
    parsed = parse_ref(path)
    return parsed if parsed is not None else (path, 0, -1)


def _take(buffer: list[tuple[int, np.ndarray]], rng: np.random.Generator) -> tuple[int, np.ndarray]:
    j = int(rng.integers(len(buffer)))
    buffer[j], buffer[-1] = buffer[-1], buffer[j]
    return buffer.pop()


def is_stream(dataset: Any) -> bool:
    return isinstance(dataset, ShardStream)
