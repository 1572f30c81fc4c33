import json

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from deepfake.dataset import FaceDataset
from deepfake.errors import ConfigError, DataError, ManifestError
from deepfake.manifest import read_manifest, read_sidecar
from deepfake.model import NORMALIZATION, build_model, load_artifact
from deepfake.train import (
    HISTORY_COLUMNS,
    TrainConfig,
    benchmark_step,
    make_loader,
    make_loss,
    make_optimizer,
    make_runtime,
    train,
    train_one_epoch,
)

# Small and quick: 64 px inputs, batches of 4, two batches an epoch; one thread, because
# on a busy shared machine OpenMP threads waiting for each other slow tiny batches down.
FAST = dict(image_size=64, batch_size=4, max_train_batches=2, epochs=2, device="cpu", cpu_threads=1)


@pytest.fixture(autouse=True)
def keep_torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def write_faces(folder, per_split=(("train", 6, 6), ("val", 2, 2), ("test", 1, 1)), size=72):
    """JPEG crops (fakes carry a blocky pattern) and their faces table, one video per crop."""
    rng = np.random.default_rng(0)
    rows = []
    for split, n_real, n_fake in per_split:
        for i, label in enumerate([0] * n_real + [1] * n_fake):
            rgb = cv2.GaussianBlur(rng.integers(60, 200, (size, size, 3), dtype=np.uint8), (9, 9), 0)
            if label:
                rgb[::8] = 255
            path = folder / f"{split}_{i}.jpg"
            cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            rows.append({"video_id": f"{split}{i}", "original_id": f"{split}{i}", "label": label, "split": split,
                         "frame_idx": 0, "face_idx": 0, "status": "ok", "path": path.name, "abs_path": str(path)})
    rows.append({"video_id": "x", "original_id": "x", "label": 1, "split": "train", "frame_idx": -1,
                 "face_idx": -1, "status": "no_face", "path": "", "abs_path": ""})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    return write_faces(tmp_path_factory.mktemp("crops"))


def test_defaults_and_validation():
    config = TrainConfig()
    assert (config.epochs, config.batch_size, config.unfreeze_blocks, config.image_size) == (6, 32, 2, 224)
    assert config.balance == "sampler" and config.max_train_batches == 0 and config.device == "auto"
    assert TrainConfig.from_dict({"epochs": "3", "amp": "false"}) == TrainConfig(epochs=3, amp=False)
    with pytest.raises(ConfigError, match="known settings"):
        TrainConfig.from_dict({"epoch": 3})
    for bad in ({"epochs": 0}, {"balance": "oversample"}, {"lr": -1.0}, {"unfreeze_blocks": 20},
                {"label_smoothing": 1.0}, {"device": "tpu"}, {"image_size": 16}, {"patience": -1},
                {"backbone_lr_mult": 2.0}, {"cpu_threads": -1}):
        with pytest.raises(ConfigError):
            TrainConfig.from_dict(bad)


def test_train_writes_history_and_a_complete_artifact(faces, tmp_path):
    extract = {"frames_per_video": 4, "face_size": 72}
    result = train(faces, tmp_path, TrainConfig(**FAST), extract_config=extract, progress=False)
    history = read_manifest(tmp_path / "history.csv", required=HISTORY_COLUMNS)
    assert list(history.columns) == HISTORY_COLUMNS and history["epoch"].tolist() == [1, 2]
    assert np.isfinite(history[["train_loss", "val_loss", "images_per_s", "seconds"]].to_numpy()).all()
    assert history["lr"].iloc[1] < history["lr"].iloc[0]  # cosine decay
    pd.testing.assert_frame_equal(history, result.history_df, check_dtype=False)
    sidecar = read_sidecar(tmp_path / "history.csv")
    assert sidecar["config"]["image_size"] == 64 and sidecar["best_epoch"] == result.best_epoch

    assert result.artifact_dir == tmp_path / "model"
    config = json.loads((result.artifact_dir / "config.json").read_text())
    assert config["train"] == TrainConfig(**FAST).to_dict()
    assert config["extract"] == extract
    assert config["best_epoch"] == result.best_epoch
    assert config["best_val_loss"] == pytest.approx(result.best_val_loss)
    assert result.best_val_loss == pytest.approx(history["val_loss"].min())
    assert config["data"]["train"] == {"real": 6, "fake": 6, "videos": 12}
    assert config["data"]["val"] == {"real": 2, "fake": 2, "videos": 4}
    for key in ("label_map", "normalization", "aggregation", "kit_version", "image_size", "weights_sha256"):
        assert key in config

    loaded = load_artifact(result.artifact_dir)
    val = faces[faces.split == "val"]
    crops = [cv2.cvtColor(cv2.imread(p), cv2.COLOR_BGR2RGB) for p in val.abs_path]
    probs = loaded.predict_crops(crops)
    labels = val.label.to_numpy()
    log_loss = -np.mean(labels * np.log(probs) + (1 - labels) * np.log(1 - probs))
    assert log_loss == pytest.approx(result.best_val_loss, abs=1e-4)  # the saved weights are the best epoch's


def test_seeded_runs_reproduce_the_same_losses(faces, tmp_path):
    config = TrainConfig(**FAST, seed=5)
    first = train(faces, tmp_path / "a", config, progress=False).history_df
    second = train(faces, tmp_path / "b", config, progress=False).history_df
    cols = ["train_loss", "train_acc", "val_loss", "val_acc", "lr"]
    pd.testing.assert_frame_equal(first[cols], second[cols])
    other = train(faces, tmp_path / "c", config.replace(seed=6), progress=False).history_df
    assert not np.allclose(first["train_loss"], other["train_loss"])


def test_pos_weight_balance_and_progress_lines(faces, tmp_path, capsys):
    config = TrainConfig(**{**FAST, "epochs": 1}, balance="pos_weight", augment=False, unfreeze_blocks=0)
    result = train(faces, tmp_path, config)
    out = capsys.readouterr().out
    assert "epoch 1/1" in out and "val_loss" in out and "img/s" in out
    assert result.best_epoch == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda df: df[df.split != "val"], "val split has no face crops"),
        (lambda df: df[~((df.split == "train") & (df.label == 0))], "train split has a single class: 0 real and 6 fake"),
        (lambda df: df[~((df.split == "val") & (df.label == 1))], "val split has a single class: 2 real and 0 fake"),
        (lambda df: df.assign(status=np.where(df.split == "train", "no_face", df.status)), "train split has no face"),
    ],
)
def test_unusable_splits_raise_data_error_naming_the_split(faces, tmp_path, change, message):
    with pytest.raises(DataError, match=message):
        train(change(faces), tmp_path, TrainConfig(**FAST), progress=False)
    assert not (tmp_path / "model").exists()


def test_missing_columns_raise_manifest_error(faces, tmp_path):
    with pytest.raises(ManifestError, match="split"):
        train(faces.drop(columns=["split"]), tmp_path, TrainConfig(**FAST), progress=False)


def test_loop_pieces_for_benchmarks(faces):
    config = TrainConfig(**FAST)
    runtime = make_runtime(config)
    ds = FaceDataset(faces[faces.split == "train"], 64, NORMALIZATION)
    loader = make_loader(ds, 4, train=True, balance="sampler", seed=0)
    model = build_model(pretrained=True, unfreeze_blocks=1, image_size=64)
    optimizer = make_optimizer(model, config)
    assert [g["name"] for g in optimizer.param_groups][0] == "head"
    assert {g["lr"] for g in optimizer.param_groups} == {config.lr, config.lr * config.backbone_lr_mult}
    loss_fn = make_loss(config, ds.labels)
    stats = train_one_epoch(model, loader, optimizer, loss_fn, runtime, max_batches=1)
    assert stats.images == 4 and stats.images_per_s > 0
    batch = (torch.randn(4, 3, 64, 64), torch.tensor([0.0, 1.0, 0.0, 1.0]))
    assert benchmark_step(model, batch, optimizer, loss_fn, runtime, steps=1) > 0


def test_loader_processes_do_not_change_the_run(faces, tmp_path):
    """Augmentations are seeded per (seed, epoch, crop), so workers draw what the main process draws."""
    config = TrainConfig(**{**FAST, "epochs": 1})
    in_process = train(faces, tmp_path / "a", config, progress=False).history_df
    workers = train(faces, tmp_path / "b", config.replace(num_workers=2), progress=False).history_df
    cols = ["train_loss", "train_acc", "val_loss", "val_acc"]
    pd.testing.assert_frame_equal(in_process[cols], workers[cols])


def test_patience_stops_at_the_first_epoch_without_improvement(faces, tmp_path):
    result = train(faces, tmp_path, TrainConfig(**{**FAST, "epochs": 5}, patience=1, lr=0.01), progress=False)
    losses = result.history_df["val_loss"].tolist()
    running_best = np.minimum.accumulate(losses)
    worse = [i for i in range(1, len(losses)) if losses[i] >= running_best[i - 1]]
    expected_epochs = worse[0] + 1 if worse else 5
    assert len(losses) == expected_epochs
    assert result.best_epoch == int(np.argmin(losses)) + 1
