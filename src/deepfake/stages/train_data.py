"""What training learns from: the usable crops of each split, the datasets of a training mode, and the
record of what the model saw (stored in the artifact, read by evaluation)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from deepfake.core.errors import ConfigError, DataError, ManifestError
from deepfake.core.resources import memory_bytes
from deepfake.core.vocabulary import STATUS_OK, TRAINING_MODES
from deepfake.data.augment import TrainAugment
from deepfake.data.crop_cache import MEMORY_FRACTION
from deepfake.data.dataset import FaceDataset, PairDataset
from deepfake.data.faces_table import crop_landmarks, require_crops
from deepfake.data.pseudofakes import mix_name, parse_mix
from deepfake.data.shards import parse_ref
from deepfake.data.stream import ShardStream
from deepfake.modeling.network import normalization

if TYPE_CHECKING:
    from deepfake.stages.train import TrainConfig


def split_frames(faces_df: pd.DataFrame, mode: str = "dataset") -> dict[str, pd.DataFrame]:
    """The usable crops (``status == "ok"``) of the train and val splits, checked for what ``mode`` needs.

    ``dataset`` needs real and fake crops in both splits; ``self_blend`` needs
    real crops in both (fakes are dropped: it never trains on them); ``both``
    needs real crops in both and uses the fakes it finds.
    """
    missing = [c for c in ("split", "label", "abs_path") if c not in faces_df.columns]
    if missing:
        raise ManifestError(
            f"faces table lacks column(s) {', '.join(missing)}; read it with deepfake.data.faces_table.read_faces"
        )
    if mode not in TRAINING_MODES:
        raise ConfigError(f"mode={mode!r} is unknown; use one of {', '.join(TRAINING_MODES)}")
    ok = faces_df[faces_df["status"] == STATUS_OK] if "status" in faces_df.columns else faces_df
    if mode == "self_blend":
        ok = ok[pd.to_numeric(ok["label"], errors="coerce") == 0]
    counts = _class_counts(ok)
    summary = "; ".join(f"{s}: {c['real']} real + {c['fake']} fake" for s, c in counts.items()) or "no usable crops"
    out = {}
    for split in ("train", "val"):
        rows = ok[ok["split"] == split]
        c = counts.get(split, {"real": 0, "fake": 0})
        if len(rows) == 0:
            raise DataError(
                f"the {split} split has no {'real ' if mode == 'self_blend' else ''}face crops (crops per split: "
                f"{summary}); give it videos (deepfake.data.splits.ensure_splits) or check why extraction found no faces"
            )
        if c["real"] == 0:
            raise DataError(f"the {split} split has no real face crops (crops per split: {summary}); "
                            f"mode {mode!r} needs real faces to train and validate")
        if mode == "dataset" and c["fake"] == 0:
            raise DataError(
                f"the {split} split has a single class: {c['real']} real and {c['fake']} fake crops "
                f"(crops per split: {summary}); mode 'dataset' needs both classes to train and validate "
                "(mode 'self_blend' trains on real faces alone)"
            )
        require_crops(rows, f"the {split} split")
        out[split] = rows.reset_index(drop=True)
    return out


def build_datasets(splits: Mapping[str, pd.DataFrame], config: TrainConfig, extract: Mapping[str, Any] | None,
                   *, device_augment: bool = False) -> tuple[Any, FaceDataset | PairDataset]:
    """The training and validation datasets of ``config.mode``; validation is never augmented.
    ``device_augment``: training items carry their augmentation draws for the device to apply.

    Crops are decoded once into memory (``cache_crops``) while the decoded set fits ``cache_budget_mb``;
    a larger set is not cached: its training items stream from their tar shards
    (:class:`~deepfake.data.stream.ShardStream`; decoded every epoch where the crops are files).
    """
    augment = TrainAugment() if config.augment else None
    cache = config.cache_crops and decoded_bytes(splits, config.image_size) <= cache_budget(config)
    train_ds, val_ds = _datasets(splits, config, extract, augment, cache, device_augment)
    if not cache and packed(splits["train"]):
        return ShardStream(train_ds, seed=config.seed, shuffle_buffer=config.shuffle_buffer), val_ds
    return train_ds, val_ds


def decoded_bytes(splits: Mapping[str, pd.DataFrame], image_size: int) -> int:
    """What the train and val crops take decoded and resized: uint8, 3 channels."""
    return sum(len(rows) for rows in splits.values()) * int(image_size) ** 2 * 3


def cache_budget(config: TrainConfig) -> int:
    """Bytes of decoded crops training may hold in memory: ``cache_budget_mb``, or a share of this
    process's memory (:data:`deepfake.data.crop_cache.MEMORY_FRACTION`)."""
    if config.cache_budget_mb:
        return config.cache_budget_mb * 1024**2
    return int(MEMORY_FRACTION * memory_bytes())


def packed(rows: pd.DataFrame) -> bool:
    """Whether the crops of ``rows`` are in tar shards."""
    return bool(len(rows)) and parse_ref(str(rows["abs_path"].iloc[0])) is not None


def loading_note(train_ds: Any, config: TrainConfig) -> str:
    """One line on how the training crops are read."""
    if isinstance(train_ds, ShardStream):
        return (f"crops streamed from {train_ds.shards()} tar shard(s): their decoded size is over the cache "
                f"budget of {cache_budget(config) / 1024**2:.0f} MB")
    base = train_ds.reals if isinstance(train_ds, PairDataset) else train_ds
    if base.cache is not None:
        return f"crops decoded once into memory ({base.cache.nbytes / 1024**2:.0f} MB for the train split)"
    return "crops decoded every epoch (not cached)"


def _datasets(splits: Mapping[str, pd.DataFrame], config: TrainConfig, extract: Mapping[str, Any] | None,
              augment: TrainAugment | None, cache: bool, device_augment: bool
              ) -> tuple[FaceDataset | PairDataset, FaceDataset | PairDataset]:
    norm = normalization(config.backbone)     # the mean and std its ImageNet weights expect
    if config.mode == "dataset":
        return (FaceDataset(splits["train"], config.image_size, norm, augment, seed=config.seed,
                            cache=cache, device_augment=device_augment),
                FaceDataset(splits["val"], config.image_size, norm, cache=cache))
    if not extract or "margin" not in extract:
        raise ConfigError(f"mode {config.mode!r} places landmarks in the crops with the extraction's margin: "
                          "pass extract_config (the settings faces.csv was extracted with)")
    datasets = []
    for split, aug in (("train", augment), ("val", None)):
        rows = splits[split]
        labels = pd.to_numeric(rows["label"], errors="coerce")
        reals = rows[labels == 0].reset_index(drop=True)
        fakes = rows[labels == 1].reset_index(drop=True) if config.mode == "both" else None
        marks = crop_landmarks(reals, float(extract["margin"]), config.image_size)
        datasets.append(PairDataset(reals, marks, config.image_size, norm, aug,
                                    fakes_df=fakes if fakes is not None and len(fakes) else None,
                                    pseudo_fakes=config.pseudo_fakes,
                                    seed=config.seed if split == "train" else config.seed + 1, cache=cache,
                                    device_augment=device_augment and split == "train"))
    return datasets[0], datasets[1]


def family_datasets(splits: Mapping[str, pd.DataFrame], config: TrainConfig, extract: Mapping[str, Any] | None,
                    names: Sequence[str]) -> dict[str, PairDataset]:
    """One validation set per pseudo-fake family: the val split's reals, each paired with that family's
    pseudo-fake (fixed seed): how well the model separates each family, whatever it trained on."""
    if not extract or "margin" not in extract:
        return {}
    rows = splits["val"]
    reals = rows[pd.to_numeric(rows["label"], errors="coerce") == 0].reset_index(drop=True)
    marks = crop_landmarks(reals, float(extract["margin"]), config.image_size)
    cache = config.cache_crops and decoded_bytes({"val": reals}, config.image_size) <= cache_budget(config)
    return {name: PairDataset(reals, marks, config.image_size, normalization(config.backbone), None, pseudo_fakes=name,
                              seed=config.seed + 1, cache=cache) for name in names}


def rows_digest(splits: Mapping[str, pd.DataFrame]) -> str:
    """sha256 of which crops each split trains on (identity columns, never the absolute paths, which move
    with the machine): a training checkpoint resumes only on the same rows."""
    import hashlib

    h = hashlib.sha256()
    for name in sorted(splits):
        cols = [c for c in ("video_id", "frame_idx", "face_idx", "label", "path", "landmarks") if c in splits[name]]
        h.update(f"{name}\n".encode())
        h.update(splits[name][cols].to_csv(index=False).encode())
    return h.hexdigest()


def training_record(config: TrainConfig, splits: Mapping[str, pd.DataFrame]) -> dict[str, Any]:
    """What the model learned from: recorded in the artifact, read by evaluation (seen vs unseen)."""
    seen: list[str] = []
    if config.mode in ("dataset", "both"):
        rows = pd.concat([splits["train"], splits["val"]])
        fakes = rows[pd.to_numeric(rows["label"], errors="coerce") == 1]
        seen = sorted(map(str, fakes["manipulation"].unique()))
    return {"mode": config.mode, "backbone": config.backbone, "manipulations_seen": seen,
            "pseudo_fakes": mix_name(parse_mix(config.pseudo_fakes)) if config.mode in ("self_blend", "both") else None}


def _class_counts(df: pd.DataFrame) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    labels = pd.to_numeric(df["label"], errors="coerce")
    for split in sorted(map(str, df["split"].dropna().unique())):
        mask = df["split"] == split
        fake = int((labels[mask] == 1).sum())
        counts[split] = {"real": int((labels[mask] == 0).sum()), "fake": fake}
    return counts
