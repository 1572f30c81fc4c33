"""Torch ``Dataset``s over the faces manifest: single crops, and (real, fake) pairs for self-blending.

Items are resized and normalised by :mod:`deepfake.media.preprocess`, the path
:meth:`deepfake.modeling.artifact.LoadedModel.predict_logits` uses too, so a
crop scores the same in validation, evaluation and serving.

Class imbalance (DFDC has about five fakes per real) is handled by the
training loop with :func:`balanced_sampler` (draw each class equally often) or
:func:`pos_weight` (weight the loss instead); ``TrainConfig.balance`` picks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Sampler, WeightedRandomSampler

from deepfake.core.errors import ConfigError, DataError, ManifestError
from deepfake.core.vocabulary import STATUS_OK
from deepfake.data.crop_cache import CropCache, read_rgb
from deepfake.media.preprocess import normalize, resize_crop

# (rgb uint8 H x W x 3, generator) -> rgb uint8 H x W x 3; deepfake.data.augment.TrainAugment is one.
Augment = Callable[[np.ndarray, np.random.Generator], np.ndarray]
REQUIRED_COLUMNS = ("abs_path", "label")


class FaceDataset(Dataset):
    """Face crops of the ``status == "ok"`` rows of a faces table, with float labels (1 = fake).

    Items are ``(image, label)``: a 3 x size x size float32 tensor and a 0-d float32
    tensor. With ``augment``, crop ``i`` of epoch ``e`` is augmented with a
    generator seeded by ``(seed, e, i)``: reproducible whatever the worker count
    or the order items are drawn in. Call :meth:`set_epoch` before each epoch.
    """

    def __init__(
        self,
        faces_df: pd.DataFrame,
        image_size: int,
        normalization: Mapping[str, Sequence[float]],
        augment: Augment | None = None,
        *,
        seed: int = 0,
        cache: bool | CropCache = False,
        device_augment: bool = False,
    ) -> None:
        missing = [c for c in REQUIRED_COLUMNS if c not in faces_df.columns]
        if missing:
            raise ManifestError(
                f"faces table lacks column(s) {', '.join(missing)}; has {', '.join(map(str, faces_df.columns))}. "
                "Read it with deepfake.data.faces_table.read_faces, which adds abs_path"
            )
        if int(image_size) < 32:
            raise ConfigError(f"image_size={image_size} is too small for the model; use 32 pixels or more")
        rows = faces_df[faces_df["status"] == STATUS_OK] if "status" in faces_df.columns else faces_df
        self.paths: list[str] = [str(p) for p in rows["abs_path"]]
        labels = pd.to_numeric(rows["label"], errors="coerce").to_numpy(dtype=np.float64)
        bad = sorted({str(v) for v, x in zip(rows["label"], labels, strict=True) if x not in (0.0, 1.0)})
        if bad:
            raise DataError(f"faces table has label value(s) {', '.join(bad[:5])}; labels must be 0 (real) or 1 (fake)")
        self.labels: np.ndarray = labels.astype(np.float32)
        self.image_size = int(image_size)
        self.normalization = {k: [float(v) for v in normalization[k]] for k in ("mean", "std")}
        self.augment = augment
        self.seed = int(seed)
        self.epoch = 0
        self.cache = CropCache(self.paths, self.image_size) if cache is True else (cache or None)
        if self.cache is not None and (self.cache.paths != self.paths or self.cache.image_size != self.image_size):
            raise DataError("the crop cache holds other crops or another size than this dataset")
        # the augmentation's draws travel with the uint8 crop; deepfake.data.device_augment applies them
        self.device_augment = bool(device_augment) and augment is not None
        self.streamed: dict[int, np.ndarray] = {}     # crops a ShardStream read for the item it is building

    def __len__(self) -> int:
        return len(self.paths)

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation draws for a new epoch."""
        self.epoch = int(epoch)

    def class_counts(self) -> dict[str, int]:
        fake = int(self.labels.sum())
        return {"real": len(self.labels) - fake, "fake": fake}

    def resized(self, index: int) -> np.ndarray:
        """The crop of item ``index`` at the model's size, not augmented (H x W x 3 uint8)."""
        if index in self.streamed:
            return self.streamed[index]
        if self.cache is not None:
            return self.cache[index]
        return resize_crop(read_rgb(self.paths[index]), self.image_size)

    def load(self, index: int) -> np.ndarray:
        """The crop of item ``index``, resized, augmented when training (H x W x 3 uint8)."""
        rgb = self.resized(index)
        if self.augment is not None:
            rgb = self.augment(rgb, self._rng(index))
        return rgb

    def _rng(self, index: int, epoch: int | None = None) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch if epoch is None else epoch, int(index)])

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, ...]:
        """``key``: an index, or ``(epoch, index)`` from :class:`EpochSampler` (persistent workers)."""
        epoch, index = key if isinstance(key, tuple) else (None, key)
        label = torch.tensor(self.labels[index], dtype=torch.float32)
        if self.device_augment:
            rgb = self.resized(index)
            draw = self.augment.draw(self._rng(index, epoch), *rgb.shape[:2])
            return torch.tensor(rgb), label, torch.from_numpy(draw.to_vector())
        if epoch is not None and epoch != self.epoch:
            self.set_epoch(epoch)
        image = normalize(self.load(index)[None], self.normalization)[0]
        return image, label


def balanced_sampler(labels: Sequence[float] | np.ndarray, generator: torch.Generator | None = None,
                     num_samples: int | None = None) -> WeightedRandomSampler:
    """Draw both classes equally often (with replacement), one epoch = ``len(labels)`` draws.

    Balanced batches keep the loss and the trainable BatchNorm statistics from
    leaning to the majority class (fakes, in DFDC).
    """
    y = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(y, minlength=2)
    if (counts == 0).any():
        raise DataError(f"cannot balance classes with {counts[0]} real and {counts[1]} fake crops; both are needed")
    weights = (1.0 / counts)[y]
    return WeightedRandomSampler(
        torch.as_tensor(weights, dtype=torch.double),
        num_samples=int(num_samples or len(y)),
        replacement=True,
        generator=generator,
    )


def pos_weight(labels: Sequence[float] | np.ndarray) -> float:
    """BCE weight of the positive (fake) class that evens out the classes: n_real / n_fake."""
    y = np.asarray(labels, dtype=np.float64)
    n_fake = float(y.sum())
    n_real = float(len(y) - n_fake)
    if n_fake == 0 or n_real == 0:
        raise DataError(f"cannot weight classes with {int(n_real)} real and {int(n_fake)} fake crops; both are needed")
    return n_real / n_fake


class PairDataset(Dataset):
    """Pairs of one real and one fake crop, for the ``self_blend`` and ``both`` training modes.

    Items ``0 .. len(reals) - 1`` are the real crops, each paired with its own
    pseudo-fake (``pseudo_fakes``: a family or a mix of :mod:`deepfake.data.pseudofakes`,
    self-blends by default); with ``fakes`` the items
    after them are the dataset's fake crops, each paired with a real crop drawn
    for it. Every item is ``(images, labels)``: a 2 x 3 x size x size tensor (real
    first) and ``[0., 1.]``, so every batch is half reals, half fakes
    (:func:`collate_pairs` flattens them). Both crops of a pair get the same
    augmentation draws, so the only difference the model can learn is the fake.
    Draws are seeded by ``(seed, epoch, item)``: reproducible with any number of
    workers. ``landmarks`` holds each real crop's five landmarks in the pixels of
    the crop resized to ``image_size``.
    """

    def __init__(
        self,
        reals_df: pd.DataFrame,
        landmarks: Sequence[np.ndarray],
        image_size: int,
        normalization: Mapping[str, Sequence[float]],
        augment: Augment | None = None,
        *,
        fakes_df: pd.DataFrame | None = None,
        pseudo_fakes: Any = None,
        seed: int = 0,
        cache: bool = False,
        device_augment: bool = False,
    ) -> None:
        from deepfake.data.pseudofakes import PseudoFakeMix

        self.reals = FaceDataset(reals_df, image_size, normalization, None, cache=cache)
        self.fakes = (FaceDataset(fakes_df, image_size, normalization, None, cache=cache)
                      if fakes_df is not None else None)
        if len(landmarks) != len(self.reals):
            raise DataError(f"{len(landmarks)} landmark sets for {len(self.reals)} real crops")
        if len(self.reals) == 0:
            raise DataError("pair training needs real face crops; the table has none")
        self.landmarks = [np.asarray(m, dtype=np.float64) for m in landmarks]
        self.image_size = int(image_size)
        self.normalization = self.reals.normalization
        self.augment = augment
        self.device_augment = bool(device_augment) and augment is not None
        self.pseudo_fakes = (pseudo_fakes if isinstance(pseudo_fakes, PseudoFakeMix)
                             else PseudoFakeMix(pseudo_fakes or "sbi"))   # no mix named: self-blends
        self.seed = int(seed)
        self.epoch = 0
        n_fake = 0 if self.fakes is None else len(self.fakes)
        # the class of each item's own crop: what a balanced sampler draws on
        self.labels = np.concatenate([np.zeros(len(self.reals)), np.ones(n_fake)]).astype(np.float32)

    def __len__(self) -> int:
        return len(self.labels)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def class_counts(self) -> dict[str, int]:
        """Crops a pass over the items shows the model: every item is one real and one fake."""
        return {"real": len(self), "fake": len(self)}

    def pair(self, index: int, epoch: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The (real, fake) crops of item ``index``, resized and augmented (H x W x 3 uint8 each)."""
        real, fake, draws = self._unaugmented(index, epoch)
        if self.augment is not None:                       # one augmentation for both crops of the pair
            real = self.augment(real, np.random.default_rng(draws))
            fake = self.augment(fake, np.random.default_rng(draws))
        return real, fake

    def _unaugmented(self, index: int, epoch: int | None) -> tuple[np.ndarray, np.ndarray, int]:
        """The pair before augmentation, and the seed of its augmentation draws."""
        rng = np.random.default_rng([self.seed, self.epoch if epoch is None else epoch, int(index), 0x5B1])
        if index < len(self.reals):
            real = self.reals.resized(index)
            fake = self.pseudo_fakes(real, self.landmarks[index], rng).image
        else:
            fake = self.fakes.resized(index - len(self.reals))
            real = self.reals.resized(int(rng.integers(len(self.reals))))
        return real, fake, int(rng.integers(2**63 - 1)) if self.augment is not None else 0

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, ...]:
        """``key``: an index, or ``(epoch, index)`` from :class:`EpochSampler` (persistent workers)."""
        epoch, index = key if isinstance(key, tuple) else (None, key)
        labels = torch.tensor([0.0, 1.0])
        if self.device_augment:
            real, fake, draws = self._unaugmented(index, epoch)
            draw = self.augment.draw(np.random.default_rng(draws), *real.shape[:2]).to_vector()
            return torch.from_numpy(np.stack([real, fake])), labels, torch.from_numpy(np.stack([draw, draw]))
        real, fake = self.pair(index, epoch)
        return normalize(np.stack([real, fake]), self.normalization), labels


def collate_pairs(items: Sequence[tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, ...]:
    """Concatenate :class:`PairDataset` items into one batch of 2 x len(items) crops (images, labels
    and, with device augmentation, the draws)."""
    return tuple(torch.cat(parts) for parts in zip(*items, strict=True))


class EpochSampler(Sampler):
    """The indices of ``base`` as ``(epoch, index)`` keys, the epoch read from ``dataset`` as each pass starts.

    Persistent DataLoader workers keep their copy of the dataset, so a
    :meth:`set_epoch` in the training process never reaches them; the key does.
    """

    def __init__(self, base: Iterable[int], dataset: FaceDataset | PairDataset) -> None:
        self.base, self.dataset = base, dataset

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.dataset.epoch
        return ((epoch, int(i)) for i in self.base)

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]
