"""Crops packed into tar shards grouped by the step that reads them, read back by reference, and training
that streams from them (deepfake.data.shards, deepfake.data.stream)."""

from __future__ import annotations

import tarfile

import numpy as np
import pandas as pd
import pytest
import torch
from test_train import FAST, write_faces

from deepfake.core.errors import DataError
from deepfake.data.crop_cache import read_rgb
from deepfake.data.dataset import FaceDataset
from deepfake.data.faces_table import FACES_COLUMNS, read_faces
from deepfake.data.manifest import write_manifest
from deepfake.data.shards import CROP_INDEX, EVAL_GROUP, TRAIN_GROUP, crop_group, pack, parse_ref
from deepfake.data.stream import ShardStream
from deepfake.modeling.network import NORMALIZATION
from deepfake.stages.train import TrainConfig, train
from deepfake.stages.train_data import build_datasets, split_frames


def faces_folder(folder):
    """A faces.csv of two crops a video (so a video's crops stay in one tar) and its crop files."""
    import shutil

    folder.mkdir(parents=True)
    one = write_faces(folder)
    two = one[one["status"] == "ok"].assign(frame_idx=1)
    two["path"] = [p.replace(".jpg", "_1.jpg") for p in two["path"]]
    for a, b in zip(one.loc[two.index, "path"], two["path"], strict=True):
        shutil.copy(folder / a, folder / b)
    table = pd.concat([one, two], ignore_index=True).sort_values(["video_id", "frame_idx"], kind="stable")
    for column in FACES_COLUMNS:
        if column not in table:
            table[column] = ""
    write_manifest(table[FACES_COLUMNS], folder / "faces.csv")
    return read_faces(folder)


@pytest.fixture
def packed(tmp_path):
    table = faces_folder(tmp_path / "extract")
    pixels = {p: read_rgb(a) for p, a in zip(table["path"], table["abs_path"], strict=True) if p}
    index = pack(table, tmp_path / "extract", tmp_path / "tars", mode="self_blend", shard_bytes=4000, name="algo-1")
    return tmp_path, table, index, pixels


def test_crops_are_grouped_by_the_step_that_reads_them():
    rows = pd.DataFrame({"split": ["train", "train", "val", "test", "test"], "label": [0, 1, 1, 0, 1]})
    assert crop_group(rows, "self_blend").tolist() == ["train", "eval", "eval", "eval", "eval"]   # fakes: unseen
    assert crop_group(rows, "dataset").tolist() == ["train", "train", "train", "eval", "eval"]
    assert set(crop_group(rows, "evaluate")) == {EVAL_GROUP}


def test_packed_crops_read_back_bit_for_bit_from_tars_a_step_holds(packed):
    root, table, index, pixels = packed
    assert (root / "extract" / CROP_INDEX).is_file() and not list((root / "extract").glob("*.jpg"))   # files gone
    assert len(index) == (table["status"] == "ok").sum() and len(list((root / "tars").rglob("*.tar"))) > 2
    for tar in (root / "tars").rglob("*.tar"):                       # plain tars: WebDataset reads them
        with tarfile.open(tar) as archive:
            members = {m.name: m for m in archive.getmembers()}
        mine = index[index["tar"] == tar.relative_to(root / "tars").as_posix()]
        assert set(mine["path"]) == set(members)
        assert all(members[r.path].offset_data == r.offset and members[r.path].size == r.size
                   for r in mine.itertuples())
        assert mine.groupby("path").size().max() == 1
    every = read_faces(root / "extract", crops_dir=root / "tars")
    ok = every[every["status"] == "ok"]
    assert all(parse_ref(a) for a in ok["abs_path"])
    assert all(np.array_equal(read_rgb(a), pixels[p]) for p, a in zip(ok["path"], ok["abs_path"], strict=True))

    only_train = read_faces(root / "extract", crops_dir=root / "tars" / TRAIN_GROUP)   # as the train step sees it
    here = only_train[(only_train["status"] == "ok") & (only_train["abs_path"] != "")]
    assert set(here["split"]) == {"train", "val"} and set(here["label"]) == {0}
    split_frames(only_train, "self_blend")                            # the reals it trains on are all there
    with pytest.raises(DataError, match="not in this step's crops"):
        split_frames(only_train, "dataset")                           # fakes are in the eval group


def test_a_video_never_straddles_two_tars(packed):
    _root, _table, index, _pixels = packed
    video = index["path"].str.replace("_1.jpg", ".jpg")
    assert (index.assign(video=video).groupby("video")["tar"].nunique() == 1).all()


def test_a_stream_visits_every_item_once_an_epoch_in_a_seeded_order_and_balances_classes(packed):
    root, _table, _index, pixels = packed
    faces = read_faces(root / "extract", crops_dir=root / "tars")
    train_rows = faces[(faces["split"] == "train") & (faces["status"] == "ok")].reset_index(drop=True)
    base = FaceDataset(train_rows, 32, NORMALIZATION)
    stream = ShardStream(base, seed=3, shuffle_buffer=4)

    def epoch(s, n):
        s.set_epoch(n)
        return [(float(label), image.sum().item()) for image, label in s]

    first = epoch(stream, 1)
    assert len(first) == len(stream) == len(base)
    assert sorted(first) == sorted((float(label), image.sum().item()) for image, label in
                                   (base[i] for i in range(len(base))))       # the same items, streamed
    assert epoch(stream, 1) == first and epoch(stream, 2) != first           # seeded by the epoch
    balanced = ShardStream(base, seed=3, balanced=True)
    labels = [label for label, _ in epoch(balanced, 1)]
    assert labels.count(0.0) == labels.count(1.0) == min(base.class_counts().values())
    loader = torch.utils.data.DataLoader(ShardStream(base, seed=3), batch_size=4, num_workers=2)
    assert sum(len(y) for _, y in loader) == len(base)                     # workers share the tars out


def test_training_streams_from_tar_shards_beyond_its_cache_budget(packed, capsys):
    root, _table, _index, _pixels = packed
    faces = read_faces(root / "extract", crops_dir=root / "tars")
    config = TrainConfig(**{**FAST, "epochs": 1}, cache_crops=False)
    train_ds, _val = build_datasets(split_frames(faces, "dataset"), config.replace(cache_crops=True), None)
    assert not isinstance(train_ds, ShardStream)                             # it fits the budget: cached
    result = train(faces, root / "train", config, progress=True)
    out = capsys.readouterr().out
    assert "crops streamed from" in out and result.history_df["epoch"].tolist() == [1]
    assert np.isfinite(result.history_df["train_loss"]).all()
