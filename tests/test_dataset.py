import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from deepfake.core.errors import DataError, ImageDecodeError, InvalidInputError, ManifestError
from deepfake.data.augment import TrainAugment
from deepfake.data.dataset import FaceDataset, balanced_sampler, pos_weight, read_rgb
from deepfake.media.preprocess import preprocess

NORM = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}


def write_faces(folder, labels, size=72, seed=0):
    """JPEG crops in ``folder`` and their faces table (plus one no_face status row)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, label in enumerate(labels):
        rgb = cv2.GaussianBlur(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), (5, 5), 0)
        path = folder / f"crop_{i}.jpg"
        cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        rows.append({"video_id": f"v{i}", "label": label, "split": "train", "status": "ok", "abs_path": str(path)})
    rows.append({"video_id": "gone", "label": 1, "split": "train", "status": "no_face", "abs_path": ""})
    return pd.DataFrame(rows)


def test_items_are_normalised_chw_float_with_float_labels(tmp_path):
    df = write_faces(tmp_path, [0, 1, 1])
    ds = FaceDataset(df, 64, NORM)
    assert len(ds) == 3  # the no_face row is skipped
    image, label = ds[1]
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32 and image.is_contiguous()
    assert label.dtype == torch.float32 and float(label) == 1.0
    rgb = cv2.resize(read_rgb(df.abs_path[1]), (64, 64), interpolation=cv2.INTER_AREA)
    expected = (torch.from_numpy(rgb).permute(2, 0, 1).float() / 255 - 0.5) / 0.25
    assert torch.allclose(image, expected, atol=1e-6)
    assert ds.class_counts() == {"real": 1, "fake": 2}


def test_batches_collate_to_float32(tmp_path):
    ds = FaceDataset(write_faces(tmp_path, [0, 1, 0, 1]), 64, NORM)
    images, labels = next(iter(DataLoader(ds, batch_size=4)))
    assert images.shape == (4, 3, 64, 64) and labels.dtype == torch.float32
    assert labels.tolist() == [0.0, 1.0, 0.0, 1.0]


@pytest.mark.parametrize("crop_size", [96, 64, 40])
def test_preprocess_is_exactly_the_dataset_eval_path(tmp_path, crop_size):
    df = write_faces(tmp_path, [0, 1], size=crop_size)
    ds = FaceDataset(df, 64, NORM)
    batch = preprocess([read_rgb(p) for p in df.abs_path[:2]], 64, NORM)
    assert torch.equal(batch, torch.stack([ds[0][0], ds[1][0]]))


def test_preprocess_checks_its_input():
    assert preprocess([], 64, NORM).shape == (0, 3, 64, 64)
    with pytest.raises(InvalidInputError, match="uint8"):
        preprocess([np.zeros((10, 10), np.uint8)], 64, NORM)
    with pytest.raises(InvalidInputError):
        preprocess([np.zeros((10, 10, 3), np.float32)], 64, NORM)


def test_augmentation_depends_on_seed_epoch_and_index_only(tmp_path):
    df = write_faces(tmp_path, [0, 1])
    aug = TrainAugment(p_color=1.0, p_cutout=1.0)
    ds = FaceDataset(df, 64, NORM, aug, seed=3)
    first = ds[0][0]
    assert torch.equal(first, FaceDataset(df, 64, NORM, aug, seed=3)[0][0])
    assert not torch.equal(first, FaceDataset(df, 64, NORM, aug, seed=4)[0][0])
    ds.set_epoch(1)
    assert not torch.equal(first, ds[0][0])
    ds.set_epoch(0)
    assert torch.equal(first, ds[0][0])


def test_bad_tables_and_files_raise_named_errors(tmp_path):
    df = write_faces(tmp_path, [0, 1])
    with pytest.raises(ManifestError, match="abs_path"):
        FaceDataset(df.drop(columns=["abs_path"]), 64, NORM)
    with pytest.raises(DataError, match="label"):
        FaceDataset(df.assign(label=["real", "fake", 1]), 64, NORM)
    missing = df.copy()
    missing.loc[0, "abs_path"] = str(tmp_path / "nope.jpg")
    with pytest.raises(ImageDecodeError, match="nope.jpg"):
        FaceDataset(missing, 64, NORM)[0]
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ImageDecodeError, match="broken.jpg"):
        read_rgb(tmp_path / "broken.jpg")


def test_balanced_sampler_evens_out_five_fakes_per_real():
    labels = np.array([0] * 20 + [1] * 100, dtype=np.float32)
    sampler = balanced_sampler(labels, generator=torch.Generator().manual_seed(0))
    drawn = labels[list(sampler)]
    assert len(drawn) == 120
    assert 0.4 < drawn.mean() < 0.6
    again = balanced_sampler(labels, generator=torch.Generator().manual_seed(0))
    assert list(again) == list(balanced_sampler(labels, generator=torch.Generator().manual_seed(0)))


def test_pos_weight_and_single_class_errors():
    assert pos_weight([0, 1, 1, 1, 1, 1]) == pytest.approx(0.2)
    with pytest.raises(DataError, match="both"):
        pos_weight([1, 1])
    with pytest.raises(DataError, match="both"):
        balanced_sampler([0, 0, 0])
