"""What the data must hold depends on what the run does with it: check_trainable per mode."""

from __future__ import annotations

import pandas as pd
import pytest

from deepfake.core.errors import ConfigError, DataError
from deepfake.data.manifest import read_sidecar
from deepfake.stages.explore import (
    ExploreConfig,
    build_videos_table,
    check_trainable,
    describe,
    read_videos,
    run_explore,
)


def table(rows):
    """``rows``: (split, label) per video."""
    return pd.DataFrame({"video_id": [f"v{i}" for i in range(len(rows))], "split": [s for s, _ in rows],
                         "label": [label for _, label in rows], "original_id": [f"v{i}" for i in range(len(rows))]})


BOTH = table([("train", 0), ("train", 1), ("val", 0), ("val", 1), ("test", 0), ("test", 1)])
REALS_ONLY = table([("train", 0), ("train", 0), ("val", 0), ("test", 0)])


def test_dataset_mode_needs_both_classes():
    assert "both classes" in check_trainable(BOTH, "dataset")
    with pytest.raises(DataError, match="no fake videos at all.*mode 'self_blend'"):
        check_trainable(REALS_ONLY, "dataset")


def test_self_blend_accepts_real_videos_alone_and_says_why():
    message = check_trainable(REALS_ONLY, "self_blend")
    assert "4 real videos are enough to train" in message and "false alarms only" in message
    assert "never trained on" in check_trainable(BOTH, "self_blend")
    assert "used too" in check_trainable(BOTH, "both")
    no_val_reals = table([("train", 0), ("val", 1), ("test", 0)])
    with pytest.raises(DataError, match="split 'val' has no real videos"):
        check_trainable(no_val_reals, "self_blend")
    with pytest.raises(DataError, match="split 'test' is empty"):
        check_trainable(table([("train", 0), ("val", 0)]), "self_blend")


def test_evaluate_mode_takes_any_labelled_videos():
    assert "6 videos" not in check_trainable(BOTH, "evaluate")
    assert "3 real and 3 fake videos to evaluate" in check_trainable(BOTH, "evaluate")
    assert "AUC is undefined" in check_trainable(REALS_ONLY, "evaluate")
    with pytest.raises(ConfigError, match="mode='train' is unknown"):
        check_trainable(BOTH, "train")
    with pytest.raises(ConfigError, match="mode"):
        ExploreConfig(mode="train")


def test_a_small_dataset_that_cannot_train_says_why_and_what_works(tmp_path):
    """The issue's case: a small DFDC tree under the explore defaults. The error names the real cause (too few
    originals for three splits) and fixes that work for it, not a missing class or val_fraction."""
    from test_catalogs import make_dfdc

    videos = build_videos_table(make_dfdc(tmp_path / "dfdc"), ExploreConfig())
    assert videos.attrs["protocol"]["follows"] == "re-split"
    with pytest.raises(DataError) as err:
        check_trainable(videos, "self_blend")
    msg = str(err.value)
    assert "the 6 videos come from 2 original(s) (2 with a real video)" in msg and "whole originals" in msg
    assert "add videos of more originals (train, val and test need at least one each" in msg and "mode 'evaluate'" in msg and "-p mode evaluate" in msg
    assert "missing class" not in msg and "val_fraction" not in msg
    assert "videos to evaluate" in check_trainable(videos, "evaluate")


def test_an_official_split_that_leaves_nothing_to_train_names_the_dataset_split(tmp_path):
    from test_catalogs import make_celebdf

    listed = "".join(f"{1 if 'real' in p else 0} {p}\n" for p in (
        "Celeb-real/id0_0000.mp4", "Celeb-real/id1_0001.mp4", "YouTube-real/00000.mp4", "YouTube-real/00001.mp4",
        "Celeb-synthesis/id0_id1_0000.mp4", "Celeb-synthesis/id1_id0_0001.mp4", "Celeb-synthesis/id9_id1_0005.mp4"))
    videos = build_videos_table(make_celebdf(tmp_path / "celebdf", test_list=listed), ExploreConfig())
    with pytest.raises(DataError) as err:
        check_trainable(videos, "self_blend")
    msg = str(err.value)
    assert "split 'train' is empty" in msg and "names its own test split (7 of the 7 videos)" in msg
    assert "the official protocol keeps exactly" in msg and "add videos of more originals (train and val" in msg


def test_explore_prints_the_layout_and_the_protocol(tmp_path):
    from test_catalogs import make_celebdf

    root = make_celebdf(tmp_path / "celebdf", test_list="0 Celeb-synthesis/id0_id1_0000.mp4\n1 YouTube-real/00001.mp4\n")
    exploration = run_explore(root, tmp_path / "out", ExploreConfig(probe_videos=0))
    text = describe(exploration.profile)
    assert text.splitlines()[0] == f"dataset: celebdf layout at {root}: 7 videos (4 real, 3 fake) in 3 folder(s)"
    assert "  Celeb-real/: 2 videos (2 real, 0 fake)" in text and "splits follow the official protocol" in text
    assert read_sidecar(tmp_path / "out" / "videos.csv")["protocol"] == exploration.profile["protocol"]
    assert read_videos(tmp_path / "out").attrs["protocol"]["follows"] == "official"


def write_dfdc(folder, n=12, frames=6):
    """A DFDC part of tiny mp4v clips (no faces: exploration only probes them), half fakes of the reals."""
    import json

    import cv2
    import numpy as np

    folder.mkdir(parents=True)
    meta = {}
    for i in range(n):
        name = f"v{i:02d}.mp4"
        writer = cv2.VideoWriter(str(folder / name), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
        for f in range(frames):
            writer.write(np.full((48, 64, 3), 20 * f + i, np.uint8))
        writer.release()
        meta[name] = {"label": "FAKE", "original": f"v{i - 1:02d}.mp4"} if i % 2 else {"label": "REAL"}
    (folder / "metadata.json").write_text(json.dumps(meta))
    return folder


@pytest.mark.aws
def test_an_s3_dataset_is_explored_from_its_index_files_and_the_probed_videos_only(tmp_path, monkeypatch):
    """The pipeline's exploration reads an S3 prefix: the catalog and the probes, never the archive."""
    moto = pytest.importorskip("moto")
    import boto3

    from deepfake.data.listing import list_data
    from deepfake.stages.explore import run_explore

    data = write_dfdc(tmp_path / "data" / "dfdc_train_part_0")
    config = ExploreConfig(probe_videos=3, mode="evaluate")
    local = run_explore(tmp_path / "data", tmp_path / "local", config)
    import tempfile

    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))       # as TMPDIR on the job's volume
    with moto.mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="datasets")
        for path in sorted(data.iterdir()):
            s3.upload_file(str(path), "datasets", f"dfdc/dfdc_train_part_0/{path.name}")
        listing = list_data("s3://datasets/dfdc/")
        remote = run_explore("s3://datasets/dfdc/", tmp_path / "remote", config, data_digest=listing.digest)
        s3.put_object(Bucket="datasets", Key="dfdc/dfdc_train_part_0/new.mp4", Body=b"x")
        with pytest.raises(DataError, match="changed since the pipeline started"):
            run_explore("s3://datasets/dfdc/", tmp_path / "again", config, data_digest=listing.digest)

    pd.testing.assert_frame_equal(remote.videos, local.videos)             # the same table from the listing
    record = remote.profile["data"]
    assert record["digest"] == listing.digest and record["objects"] == 13 and record["videos"] == 12
    probed = remote.probes["video_id"].tolist()
    assert len(probed) == 3 and (remote.probes["error"] == "").all()
    sizes = {p.stem: p.stat().st_size for p in data.glob("*.mp4")}
    assert record["downloaded_bytes"] == sum(sizes[v] for v in probed) < record["video_bytes"]
    on_disk = {p.stem for p in remote.root.rglob("*.mp4") if p.stat().st_size}   # the rest are empty names
    assert on_disk == set(probed) and remote.root.is_relative_to(tmp_path / "tmp")
    assert set(remote.probed["video_id"]) == set(probed)
