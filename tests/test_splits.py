"""Splits grouped by original video, and the leak check."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from deepfake.core.errors import ConfigError, DataError, SplitLeakError
from deepfake.data.catalogs import load_catalog
from deepfake.data.manifest import read_manifest, write_manifest
from deepfake.data.splits import check_leaks, describe_protocol, ensure_splits, split_summary


def table(groups: list[tuple[str, int, int]], split: str = "") -> pd.DataFrame:
    """Rows for groups given as (original id, has a real video, number of fakes)."""
    rows = []
    for original, has_real, fakes in groups:
        if has_real:
            rows.append({"video_id": original, "path": f"{original}.mp4", "label": 0, "original_id": original,
                         "manipulation": "none", "split": split})
        for k in range(fakes):
            vid = f"{original}_f{k}"
            rows.append({"video_id": vid, "path": f"{vid}.mp4", "label": 1, "original_id": original,
                         "manipulation": "x", "split": split})
    return pd.DataFrame(rows)


def random_table(seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(6, 120))
    return table([(f"g{i:03d}", int(rng.random() < 0.85), int(rng.integers(0, 6))) for i in range(n)])


def splits_of_groups(df: pd.DataFrame) -> pd.Series:
    return df.groupby("original_id")["split"].nunique()


@pytest.mark.parametrize("seed", range(25))
def test_random_tables_keep_groups_whole(seed):
    df = random_table(seed)
    out = ensure_splits(df, seed=seed)
    assert (splits_of_groups(out) == 1).all()
    assert set(out["split"]) <= {"train", "val", "test"} and (out["split"] != "").all()
    check_leaks(out)
    # every split gets each label whenever that label has a group per split
    for label in (0, 1):
        if df.loc[df["label"] == label, "original_id"].nunique() >= 3:
            assert set(out.loc[out["label"] == label, "split"]) == {"train", "val", "test"}, label
    # the input is untouched, rows keep their order
    assert (df["split"] == "").all() and list(out["video_id"]) == list(df["video_id"])


def test_large_table_follows_the_fractions_per_label():
    df = table([(f"g{i:04d}", 1, i % 7) for i in range(1500)])
    out = ensure_splits(df, val_fraction=0.1, test_fraction=0.3)
    shares = pd.crosstab(out["split"], out["label"], normalize="columns")
    np.testing.assert_allclose(shares.loc[["train", "val", "test"]].to_numpy(),
                               [[0.6, 0.6], [0.1, 0.1], [0.3, 0.3]], atol=0.01)


def test_tiny_dataset_of_six_groups_gets_both_labels_in_every_split():
    out = ensure_splits(table([(f"o{i}", 1, 1) for i in range(6)]))
    assert pd.crosstab(out["split"], out["label"]).gt(0).all().all()
    singles = table([(f"r{i}", 1, 0) for i in range(3)] + [(f"f{i}", 0, 1) for i in range(3)])
    out = ensure_splits(singles)
    assert pd.crosstab(out["split"], out["label"]).shape == (3, 2)
    assert pd.crosstab(out["split"], out["label"]).gt(0).all().all()


def test_same_seed_same_splits_whatever_the_row_order():
    df = random_table(99)
    a = ensure_splits(df, seed=3)
    b = ensure_splits(df.sample(frac=1, random_state=1), seed=3).loc[a.index]
    pd.testing.assert_series_equal(a["split"], b["split"])
    c = ensure_splits(df, seed=4)
    assert not a["split"].equals(c["split"])


def test_given_train_and_test_are_kept_and_the_rest_filled_by_group():
    df = table([("a", 1, 2), ("b", 1, 1), ("c", 1, 1), ("d", 1, 1), ("e", 1, 1), ("f", 1, 1)])
    df.loc[df["original_id"] == "a", "split"] = "train"
    df.loc[df["video_id"] == "b", "split"] = "test"  # only the real
    out = ensure_splits(df, protocol="grouped")     # grouped: its fake follows it into test
    assert set(out.loc[out["original_id"] == "a", "split"]) == {"train"}
    assert set(out.loc[out["original_id"] == "b", "split"]) == {"test"}
    assert (out["split"] != "").all()
    check_leaks(out)
    record = out.attrs["protocol"]
    assert record["follows"] == "grouped"
    assert {"video_id": "b_f0", "from": "train", "to": "test"} in record["moved"]["examples"]
    official = ensure_splits(df)                     # official: the test split stays exactly as given
    assert list(official.loc[official["split"] == "test", "video_id"]) == ["b"]
    assert official.loc[official["video_id"] == "b_f0", "split"].item() == "train"
    shared = official.attrs["protocol"]["shared_originals"]
    assert shared == {"originals": 1, "examples": [{"original_id": "b", "splits": ["test", "train"]}]}


def test_a_published_test_set_alone_is_kept(tmp_path):
    """Celeb-DF names only its test videos: they stay in test, the rest go to train and val."""
    df = table([(f"g{i}", 1, 2) for i in range(12)])
    df.loc[df["original_id"].isin(["g0", "g1", "g2"]), "split"] = "test"
    out = ensure_splits(df, seed=5)
    assert set(out.loc[out["original_id"].isin(["g0", "g1", "g2"]), "split"]) == {"test"}
    assert set(out.loc[~out["original_id"].isin(["g0", "g1", "g2"]), "split"]) == {"train", "val"}


def test_train_only_splits_are_reassigned():
    """DFDC training parts all say "train": that cannot evaluate a model, so every group is assigned."""
    df = table([(f"g{i}", 1, 3) for i in range(20)], split="train")
    out = ensure_splits(df)
    assert set(out["split"]) == {"train", "val", "test"}
    assert (splits_of_groups(out) == 1).all()


def test_given_splits_that_leak_are_refused_by_grouped_and_reported_by_official():
    df = table([("a", 1, 1), ("b", 1, 1)])
    df["split"] = ["train", "test", "test", "train"]
    with pytest.raises(SplitLeakError):
        ensure_splits(df, protocol="grouped")
    out = ensure_splits(df)
    assert list(out["split"]) == list(df["split"])
    assert out.attrs["protocol"]["shared_originals"]["originals"] == 2
    assert "2 original(s) have videos in more than one split" in describe_protocol(out.attrs["protocol"])[-1]


def test_check_leaks_names_the_original_and_its_splits():
    df = table([("000", 1, 2), ("001", 1, 1)])
    df["split"] = ["train", "train", "test", "val", "val"]
    with pytest.raises(SplitLeakError,
                       match=r"1 original video\(s\) straddle splits.*000 in test, train") as err:
        check_leaks(df)
    assert err.value.leaks == {"000": ["test", "train"]}
    df.loc[2, "split"] = "train"
    check_leaks(df)


def test_empty_splits_are_no_leak_and_survive_a_csv_round_trip(tmp_path):
    df = table([("a", 1, 1), ("b", 1, 1)])
    df.loc[0, "split"] = "train"
    check_leaks(df)
    write_manifest(df, tmp_path / "videos.csv")
    back = read_manifest(tmp_path / "videos.csv")
    assert (back["split"] == "").sum() == 3  # text columns read back as strings, empty split as ""
    out = ensure_splits(back)
    assert (out["split"] != "").all() and (splits_of_groups(out) == 1).all()


def test_on_a_catalog_table(tmp_path):
    for name in ("real/a.mp4", "real/b.mp4", "real/c.mp4", "fake/d.mp4", "fake/e.mp4", "fake/f.mp4"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"\0")
    out = ensure_splits(load_catalog("folders", tmp_path))
    assert pd.crosstab(out["split"], out["label"]).gt(0).all().all()


@pytest.mark.parametrize(("val", "test"), [(-0.1, 0.2), (0.5, 0.5), (0.2, 1.0)])
def test_bad_fractions(val, test):
    with pytest.raises(ConfigError, match=f"val_fraction={val} and test_fraction={test}"):
        ensure_splits(table([("a", 1, 1)]), val_fraction=val, test_fraction=test)


def test_zero_val_fraction_makes_no_val_split():
    out = ensure_splits(table([(f"g{i}", 1, 1) for i in range(10)]), val_fraction=0)
    assert set(out["split"]) == {"train", "test"}


def test_bad_tables():
    with pytest.raises(DataError, match="lacks column.*original_id"):
        ensure_splits(pd.DataFrame({"label": [0], "split": [""]}))
    df = table([("a", 1, 1)])
    df["split"] = ["train", "holdout"]
    with pytest.raises(DataError, match="unknown split value.*'holdout'"):
        ensure_splits(df)
    df = table([("a", 1, 1)])
    df["label"] = [0, 2]
    with pytest.raises(DataError, match="labels must be 0 .* or 1"):
        ensure_splits(df)


def test_split_summary_counts_by_split_and_label():
    df = table([("a", 1, 2), ("b", 1, 0)])
    df["split"] = ["train", "train", "train", ""]
    summary = split_summary(df)
    assert list(summary.index) == ["train", "(none)", "total"]
    assert summary.loc["train"].to_dict() == {"real": 1, "fake": 2, "total": 3, "originals": 1}
    assert summary.loc["total"].to_dict() == {"real": 2, "fake": 2, "total": 4, "originals": 2}


def test_celebdf_test_list_is_the_test_split_exactly(tmp_path):
    """The issue's case: the list names a fake and a YouTube real; the fake's source stays in train (official),
    or joins test with its fake (grouped), and the record says what moved."""
    from test_catalogs import make_celebdf

    root = make_celebdf(tmp_path, test_list="0 Celeb-synthesis/id0_id1_0000.mp4\n1 YouTube-real/00001.mp4\n")
    videos = load_catalog("auto", root)
    official = ensure_splits(videos)
    assert sorted(official.loc[official["split"] == "test", "path"]) == ["Celeb-synthesis/id0_id1_0000.mp4",
                                                                         "YouTube-real/00001.mp4"]
    record = official.attrs["protocol"]
    assert record["follows"] == "official" and record["moved"]["videos"] == 0
    assert record["shared_originals"]["examples"] == [{"original_id": "id0_0000", "splits": ["test", "train"]}]
    lines = describe_protocol(record)
    assert lines[0].startswith("splits follow the official protocol: train ") and "test 2 videos" in lines[0]
    assert "kept exactly" in lines[1]
    grouped = ensure_splits(videos, protocol="grouped")
    assert (grouped["split"] == "test").sum() == 3
    assert grouped.attrs["protocol"]["moved"]["examples"] == [{"video_id": "id0_0000", "from": "train", "to": "test"}]
    assert "moved against the official protocol: 1 video(s) (train -> test: 1" in describe_protocol(
        grouped.attrs["protocol"])[2]


def test_a_train_only_dataset_is_re_split_and_says_so():
    df = table([(f"g{i}", 1, 3) for i in range(20)], split="train")
    out = ensure_splits(df, seed=2)
    record = out.attrs["protocol"]
    assert record["follows"] == "re-split" and record["given"] == {"train": 80}
    assert record["moved"]["videos"] == record["splits"]["val"] + record["splits"]["test"] > 0
    lines = describe_protocol(record)
    assert lines[0].startswith("splits follow a re-split: train ")
    assert "the dataset names no test split (train: 80 videos): every original was assigned afresh" in lines[1]
    assert lines[2].startswith(f"  moved: {record['moved']['videos']} video(s) (train -> test: ")


def test_official_val_is_carved_from_the_train_side_when_the_dataset_names_none():
    df = table([(f"g{i}", 1, 1) for i in range(20)])
    df.loc[df["original_id"].isin([f"g{i}" for i in range(4)]), "split"] = "test"
    df.loc[df["original_id"].isin([f"g{i}" for i in range(4, 20)]), "split"] = "train"
    out = ensure_splits(df)
    assert (out.loc[df["split"] == "test", "split"] == "test").all()
    assert set(out.loc[df["split"] == "train", "split"]) == {"train", "val"}
    record = out.attrs["protocol"]
    assert set(record["moved"]["by"]) == {"train->val"} and record["shared_originals"]["originals"] == 0
    with_val = df.copy()
    with_val.loc[with_val["original_id"].isin(["g4", "g5"]), "split"] = "val"
    kept = ensure_splits(with_val)
    assert list(kept["split"]) == list(with_val["split"]) and kept.attrs["protocol"]["moved"]["videos"] == 0


def test_faceforensics_split_files_are_the_splits_exactly(tmp_path):
    """FF++'s train/val/test.json kept as given: every video they name stays in its split, none moved; what
    they leave unsplit (actors, DeepFakeDetection) goes to the train side, never to test."""
    from test_catalogs import make_ff, touch, write_json

    root = make_ff(tmp_path)
    touch(root, "original_sequences/youtube/c23/videos/004.mp4", "original_sequences/youtube/c23/videos/005.mp4",
          "manipulated_sequences/Deepfakes/c23/videos/004_005.mp4")
    write_json(root / "splits/train.json", [["000", "003"]])
    write_json(root / "splits/val.json", [["004", "005"]])
    write_json(root / "splits/test.json", [["001", "002"]])
    videos = load_catalog("auto", root)
    named = videos["split"] != ""
    out = ensure_splits(videos, val_fraction=0.5)
    assert list(out.loc[named, "split"]) == list(videos.loc[named, "split"])
    assert set(out.loc[~named, "split"]) == {"train"} and (out["split"] == "test").sum() == 6
    record = out.attrs["protocol"]
    assert record["follows"] == "official" and record["moved"]["videos"] == 0
