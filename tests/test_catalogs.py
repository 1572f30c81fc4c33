"""Catalogs on generated folder trees (empty files: a catalog never decodes a video)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pandas as pd
import pytest

from deepfake.core.errors import CatalogError, DeepfakeError
from deepfake.core.vocabulary import LABELS
from deepfake.data.catalogs import (
    available,
    dataset_root,
    describe_layout,
    detect_kind,
    layouts_in,
    load_catalog,
)
from deepfake.data.catalogs.table import COLUMNS, unique_ids

REAL, FAKE = LABELS["real"], LABELS["fake"]


def touch(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\0")


def write_json(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def by_id(df: pd.DataFrame) -> dict[str, dict]:
    return df.set_index("video_id").to_dict("index")


# --- builders: one small dataset per layout ---------------------------------------------------

def make_dfdc(root: Path, nested: bool = False) -> Path:
    parts = {
        "dfdc_train_part_0": {
            "aaa.mp4": {"label": "REAL", "split": "train", "original": None},
            "bbb.mp4": {"label": "FAKE", "split": "train", "original": "aaa.mp4"},
            "ccc.mp4": {"label": "FAKE", "split": "train", "original": "aaa.mp4"},
        },
        "dfdc_train_part_1": {
            "ddd.mp4": {"label": "REAL", "split": "train"},
            "eee.mp4": {"label": "FAKE", "split": "train", "original": "ddd.mp4"},
            # its original lives in another part
            "fff.mp4": {"label": "FAKE", "split": "train", "original": "aaa.mp4"},
        },
    }
    for part, meta in parts.items():
        folder = root / part / part if nested else root / part
        write_json(folder / "metadata.json", meta)
        touch(folder, *meta)
    return root


def make_ff(root: Path, compression: str = "c23") -> Path:
    for vid in ("000", "001", "002", "003"):
        touch(root, f"original_sequences/youtube/{compression}/videos/{vid}.mp4")
    touch(root, f"original_sequences/actors/{compression}/videos/01__meeting_serious.mp4",
          f"original_sequences/actors/{compression}/videos/02__walking_outside.mp4")
    for method in ("Deepfakes", "FaceSwap"):
        for fake in ("000_003", "003_000", "001_002", "002_001"):
            touch(root, f"manipulated_sequences/{method}/{compression}/videos/{fake}.mp4")
    touch(root, f"manipulated_sequences/DeepFakeDetection/{compression}/videos/"
                "01_02__meeting_serious__YVGY8LOK.mp4")
    return root


def make_celebdf(root: Path, test_list: str | None = None) -> Path:
    touch(root, "Celeb-real/id0_0000.mp4", "Celeb-real/id1_0001.mp4",
          "YouTube-real/00000.mp4", "YouTube-real/00001.mp4",
          "Celeb-synthesis/id0_id1_0000.mp4", "Celeb-synthesis/id1_id0_0001.mp4",
          "Celeb-synthesis/id0_id1_0000.mp4", "Celeb-synthesis/id9_id1_0005.mp4")
    if test_list is None:
        test_list = ("1 Celeb-real/id1_0001.mp4\n0 Celeb-synthesis/id1_id0_0001.mp4\n"
                     "1 YouTube-real/00001.mp4\n")
    (root / "List_of_testing_videos.txt").write_text(test_list)
    return root


def make_csv(root: Path) -> Path:
    touch(root, "videos/real_a.mp4", "videos/real_b.mp4", "videos/fake_a.mp4", "videos/fake_b.mov")
    (root / "labels.csv").write_text(
        "path,label,original,split\n"
        "videos/real_a.mp4,real,,train\n"
        "videos/real_b.mp4,REAL,,test\n"
        "videos/fake_a.mp4,fake,real_a.mp4,train\n"
        "videos/fake_b.mov,FAKE,videos/real_b.mp4,test\n")
    return root


def make_folders(root: Path) -> Path:
    touch(root, "real/a.mp4", "real/sub/b.MP4", "real/notes.txt", "real/._a.mp4", "real/.cache/x.mp4",
          "fake/001.avi", "fake/FaceSwap/c.webm", "fake/FaceSwap/d.mkv")
    return root


BUILDERS = {"dfdc": make_dfdc, "faceforensics": make_ff, "celebdf": make_celebdf, "csv": make_csv,
            "folders": make_folders}


# --- the table contract, for every layout ----------------------------------------------------

@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_every_catalog_returns_the_videos_table(tmp_path, kind):
    root = BUILDERS[kind](tmp_path / kind)
    df = load_catalog(kind, root)
    assert tuple(df.columns) == COLUMNS
    assert df["video_id"].is_unique and df["path"].is_unique
    assert list(df["path"]) == sorted(df["path"])
    assert set(df["label"]) <= {0, 1} and pd.api.types.is_integer_dtype(df["label"])
    assert set(df["split"]) <= {"", "train", "val", "test"}
    for path in df["path"]:
        assert not Path(path).is_absolute() and "\\" not in path
        assert (root / path).is_file()
    real = df[df["label"] == REAL]
    assert (real["original_id"] == real["video_id"]).all()
    assert (real["manipulation"] == "none").all()
    assert (df.loc[df["label"] == FAKE, "manipulation"] != "none").all()
    pd.testing.assert_frame_equal(df, load_catalog(kind, root))  # deterministic


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_auto_detects_each_layout(tmp_path, kind):
    root = BUILDERS[kind](tmp_path / kind)
    assert detect_kind(root) == kind
    pd.testing.assert_frame_equal(load_catalog("auto", root), load_catalog(kind, root))


def test_auto_accepts_a_csv_file_as_root(tmp_path):
    root = make_csv(tmp_path)
    assert detect_kind(root / "labels.csv") == "csv"
    assert dataset_root(root / "labels.csv") == root
    assert dataset_root(root) == root


def test_auto_on_an_unknown_layout_lists_what_it_looked_for(tmp_path):
    touch(tmp_path, "clips/a.mp4")
    with pytest.raises(CatalogError) as err:
        load_catalog("auto", tmp_path)
    msg = str(err.value)
    assert str(tmp_path) in msg
    for looked in ("metadata.json", "original_sequences", "Celeb-real", "labels.csv", "real/"):
        assert looked in msg


def test_unknown_kind_lists_the_available_ones(tmp_path):
    with pytest.raises(CatalogError,
                       match="unknown catalog 'kaggle'.*dfdc.*faceforensics.*celebdf.*csv.*folders.*auto"):
        load_catalog("kaggle", tmp_path)
    assert available() == ["dfdc", "faceforensics", "celebdf", "csv", "folders", "auto"]


def test_missing_root_is_named(tmp_path):
    with pytest.raises(CatalogError, match=f"{tmp_path / 'nope'} does not exist"):
        load_catalog("dfdc", tmp_path / "nope")


def test_unknown_option_names_the_accepted_ones(tmp_path):
    root = make_ff(tmp_path)
    with pytest.raises(CatalogError,
                       match="allow_missing not accepted by the faceforensics catalog.*compression"):
        load_catalog("auto", root, allow_missing=True)


def test_errors_share_the_kit_base_class():
    assert issubclass(CatalogError, DeepfakeError)


@pytest.mark.parametrize(("paths", "ids"), [
    (["a/x.mp4", "b/y.mp4"], ["x", "y"]),
    (["a/x.mp4", "b/x.mp4", "c/y.mp4"], ["a/x", "b/x", "y"]),
    (["x.mp4", "x.avi"], ["x.mp4", "x.avi"]),
    (["a/x.mp4", "a/x.avi", "b/x.mp4"], ["a/x.mp4", "a/x.avi", "b/x"]),
])
def test_unique_ids_widen_only_where_names_collide(paths, ids):
    assert unique_ids(paths) == ids


# --- a dataset read whole or refused -----------------------------------------------------------

def make_trees(root: Path) -> Path:
    """The issue's folder of datasets: DFDC (two parts, one extracted a level deeper), FF++ and Celeb-DF."""
    write_json(root / "dfdc/dfdc_train_part_0/metadata.json",
               {"a.mp4": {"label": "REAL"}, "b.mp4": {"label": "FAKE", "original": "a.mp4"}})
    touch(root, "dfdc/dfdc_train_part_0/a.mp4", "dfdc/dfdc_train_part_0/b.mp4")
    write_json(root / "dfdc/dfdc_train_part_1/dfdc_train_part_1/metadata.json",
               {"c.mp4": {"label": "REAL"}, "d.mp4": {"label": "FAKE", "original": "c.mp4"}})
    touch(root, "dfdc/dfdc_train_part_1/dfdc_train_part_1/c.mp4", "dfdc/dfdc_train_part_1/dfdc_train_part_1/d.mp4")
    make_ff(root / "ffpp")
    make_celebdf(root / "celebdf")
    return root


@pytest.mark.parametrize("kind", ["auto", "dfdc", "celebdf"])
def test_a_folder_of_datasets_is_refused_with_each_one_named(tmp_path, kind):
    root = make_trees(tmp_path / "trees")
    with pytest.raises(CatalogError) as err:
        load_catalog(kind, root)
    msg = str(err.value)
    for folder, layout in (("dfdc", "dfdc"), ("ffpp", "faceforensics"), ("celebdf", "celebdf")):
        assert f"{root / folder} ({layout})" in msg, msg
    assert "deepfake run --data" in msg and "data_dir" in msg
    assert [kind for kind, _ in sorted(layouts_in(root), key=lambda f: str(f[1]))] == \
        ["celebdf", "dfdc", "faceforensics"]


def test_each_dataset_of_the_folder_is_read_whole(tmp_path):
    root = make_trees(tmp_path / "trees")
    dfdc = load_catalog("auto", root / "dfdc")
    assert sorted(dfdc["video_id"]) == ["a", "b", "c", "d"]                  # both parts, one nested deeper
    layout = dfdc.attrs["layout"]
    assert layout["kind"] == "dfdc" and layout["left_out"] == []
    assert layout["folders"] == {"dfdc_train_part_0": {"real": 1, "fake": 1},
                                 "dfdc_train_part_1/dfdc_train_part_1": {"real": 1, "fake": 1}}
    lines = describe_layout(layout)
    assert lines[0] == f"dataset: dfdc layout at {root / 'dfdc'}: 4 videos (2 real, 2 fake) in 2 folder(s)"
    assert lines[2] == "  dfdc_train_part_1/dfdc_train_part_1/: 2 videos (1 real, 1 fake)"
    assert len(load_catalog("auto", root / "ffpp")) == 15 and len(load_catalog("auto", root / "celebdf")) == 7


def test_a_dataset_with_another_beside_it_is_refused_unless_the_layout_is_chosen(tmp_path):
    root = make_dfdc(tmp_path / "dfdc")
    make_celebdf(root / "extra_celebdf")
    touch(root, "loose/clip.mp4")
    with pytest.raises(CatalogError) as err:
        load_catalog("auto", root)
    msg = str(err.value)
    assert "holds more than one dataset: read as dfdc" in msg and "it gives 6 videos" in msg
    assert f"7 in {root / 'extra_celebdf'} (the celebdf layout)" in msg
    assert f"1 in {root / 'loose'} (no known layout)" in msg
    assert "catalog=dfdc (deepfake run --set explore.catalog=dfdc)" in msg
    chosen = load_catalog("dfdc", root)                                      # chosen: read, the rest listed
    assert len(chosen) == 6
    (left,) = chosen.attrs["layout"]["left_out"]
    assert left["videos"] == 8 and "catalog=dfdc was chosen" in left["why"]
    assert "left out: 8 video file(s)" in describe_layout(chosen.attrs["layout"])[-1]


def test_files_a_layout_leaves_out_in_its_own_folders_are_listed_not_refused(tmp_path):
    root = make_dfdc(tmp_path / "dfdc")
    touch(root, "dfdc_train_part_0/unlisted.mp4")
    make_ff(root / "ff", "c23")
    make_ff(root / "ff", "c40")
    with pytest.raises(CatalogError, match=f"30 in {root / 'ff'} \\(the faceforensics layout\\)"):
        load_catalog("auto", root)
    (root / "ff").rename(tmp_path / "ff")
    dfdc = load_catalog("auto", root)
    (left,) = dfdc.attrs["layout"]["left_out"]
    assert left == {"videos": 1, "why": "in a part folder but not in its metadata.json, so without a label",
                    "examples": ["dfdc_train_part_0/unlisted.mp4"]}
    ff = load_catalog("auto", tmp_path / "ff")
    (left,) = ff.attrs["layout"]["left_out"]
    assert left["videos"] == 15 and "compression" in left["why"]


# --- DFDC --------------------------------------------------------------------------------------

@pytest.mark.parametrize("nested", [False, True])
def test_dfdc_parts_flat_and_nested(tmp_path, nested):
    df = load_catalog("dfdc", make_dfdc(tmp_path, nested=nested))
    rows = by_id(df)
    assert sorted(rows) == ["aaa", "bbb", "ccc", "ddd", "eee", "fff"]
    prefix = "dfdc_train_part_0/dfdc_train_part_0/" if nested else "dfdc_train_part_0/"
    assert rows["bbb"]["path"] == prefix + "bbb.mp4"
    assert rows["bbb"]["label"] == FAKE and rows["aaa"]["label"] == REAL
    assert rows["bbb"]["original_id"] == rows["ccc"]["original_id"] == "aaa"
    assert rows["fff"]["original_id"] == "aaa"  # original found in another part
    assert rows["eee"]["original_id"] == "ddd"
    assert rows["bbb"]["manipulation"] == "dfdc"
    assert set(df["split"]) == {"train"}


def test_dfdc_root_may_be_a_single_part(tmp_path):
    make_dfdc(tmp_path)
    df = load_catalog("auto", tmp_path / "dfdc_train_part_1")
    assert sorted(df["video_id"]) == ["ddd", "eee", "fff"]
    assert by_id(df)["fff"]["original_id"] == "aaa"  # not on disk here: its stem still groups its fakes
    assert list(df["path"]) == ["ddd.mp4", "eee.mp4", "fff.mp4"]


def test_dfdc_method_field_and_colliding_names(tmp_path):
    write_json(tmp_path / "p0/metadata.json",
               {"x.mp4": {"label": "REAL"},
                "y.mp4": {"label": "FAKE", "original": "x.mp4", "method": "fsgan"}})
    write_json(tmp_path / "p1/metadata.json", {"x.mp4": {"label": "REAL"},
                                               "z.mp4": {"label": "FAKE", "original": "x.mp4"}})
    touch(tmp_path, "p0/x.mp4", "p0/y.mp4", "p1/x.mp4", "p1/z.mp4")
    rows = by_id(load_catalog("dfdc", tmp_path))
    assert sorted(rows) == ["p0/x", "p1/x", "y", "z"]
    assert rows["y"]["original_id"] == "p0/x" and rows["z"]["original_id"] == "p1/x"
    assert rows["y"]["manipulation"] == "fsgan" and rows["z"]["manipulation"] == "dfdc"
    assert rows["y"]["split"] == ""


def test_dfdc_missing_files_raise_unless_allowed(tmp_path):
    root = make_dfdc(tmp_path)
    (root / "dfdc_train_part_0/ccc.mp4").unlink()
    (root / "dfdc_train_part_1/eee.mp4").unlink()
    with pytest.raises(CatalogError,
                       match=r"2 of 6 videos .* missing under .*part_0/ccc\.mp4.*allow_missing=True"):
        load_catalog("dfdc", root)
    with pytest.warns(UserWarning, match="2 of 6 videos"):
        df = load_catalog("auto", root, allow_missing=True)
    assert sorted(df["video_id"]) == ["aaa", "bbb", "ddd", "fff"]


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", "cannot be read as JSON"),
    ('["a.mp4"]', "must map each file name"),
    ('{"a.mp4": {"label": "MAYBE"}}', "a.mp4 has label 'MAYBE'; expected REAL or FAKE"),
    ('{"a.mp4": {"label": "REAL", "split": "holdout"}}', "unknown split 'holdout'"),
])
def test_dfdc_bad_metadata_names_the_file(tmp_path, content, message):
    (tmp_path / "metadata.json").write_text(content)
    touch(tmp_path, "a.mp4")
    with pytest.raises(CatalogError, match=message) as err:
        load_catalog("dfdc", tmp_path)
    assert str(tmp_path / "metadata.json") in str(err.value)


def test_dfdc_without_metadata_names_the_folder(tmp_path):
    with pytest.raises(CatalogError, match=f"no metadata.json in {tmp_path}"):
        load_catalog("dfdc", tmp_path)


# --- FaceForensics++ ---------------------------------------------------------------------------

def test_ff_without_splits(tmp_path):
    df = load_catalog("faceforensics", make_ff(tmp_path))
    rows = by_id(df)
    assert rows["000"]["path"] == "original_sequences/youtube/c23/videos/000.mp4"
    assert rows["Deepfakes/000_003"]["original_id"] == "000"
    assert rows["FaceSwap/003_000"]["original_id"] == "003"
    assert rows["FaceSwap/003_000"]["manipulation"] == "FaceSwap"
    dfd = rows["DeepFakeDetection/01_02__meeting_serious__YVGY8LOK"]
    assert dfd["original_id"] == "01__meeting_serious" and "01__meeting_serious" in rows
    assert set(df["split"]) == {""}
    assert len(df) == 4 + 2 + 8 + 1


@pytest.mark.parametrize("where", ["splits", "."])
def test_ff_official_splits_send_both_ids_of_a_pair(tmp_path, where):
    root = make_ff(tmp_path)
    write_json(root / where / "train.json", [["000", "003"]])
    write_json(root / where / "test.json", [["001", "002"]])
    write_json(root / where / "val.json", [])
    rows = by_id(load_catalog("faceforensics", root))
    for vid in ("000", "003", "Deepfakes/000_003", "Deepfakes/003_000", "FaceSwap/003_000"):
        assert rows[vid]["split"] == "train", vid
    for vid in ("001", "002", "Deepfakes/001_002", "FaceSwap/002_001"):
        assert rows[vid]["split"] == "test", vid
    # actors and DeepFakeDetection are outside the official lists
    assert rows["01__meeting_serious"]["split"] == ""
    assert rows["DeepFakeDetection/01_02__meeting_serious__YVGY8LOK"]["split"] == ""


def test_ff_id_in_two_split_files_is_an_error(tmp_path):
    root = make_ff(tmp_path)
    write_json(root / "splits/train.json", [["000", "003"]])
    write_json(root / "splits/test.json", [["003", "001"]])
    with pytest.raises(CatalogError, match="video 003 is in both .*train.json and .*test.json"):
        load_catalog("faceforensics", root)


def test_ff_malformed_split_file(tmp_path):
    root = make_ff(tmp_path)
    write_json(root / "splits/train.json", {"000": "003"})
    with pytest.raises(CatalogError, match="train.json must be a list of"):
        load_catalog("faceforensics", root)


def test_ff_compression_choice_and_missing_one(tmp_path):
    root = make_ff(tmp_path, "c40")
    make_ff(root, "raw")
    raw = load_catalog("faceforensics", root, compression="raw")
    assert set(raw["path"].str.split("/").str[2]) == {"raw"}
    with pytest.raises(CatalogError, match=r"compression 'c23' not found in .*available: c40, raw"):
        load_catalog("faceforensics", root)


def test_ff_method_without_the_compression_is_left_out_with_a_warning(tmp_path):
    root = make_ff(tmp_path)
    touch(root, "manipulated_sequences/NeuralTextures/c40/videos/000_003.mp4")
    with pytest.warns(UserWarning, match="NeuralTextures .* have no c23 videos"):
        df = load_catalog("faceforensics", root)
    assert not df["manipulation"].eq("NeuralTextures").any()


def test_ff_empty_layout_names_the_path(tmp_path):
    (tmp_path / "original_sequences").mkdir()
    with pytest.raises(CatalogError, match=f"{tmp_path}"):
        load_catalog("faceforensics", tmp_path)


# --- Celeb-DF ----------------------------------------------------------------------------------

def test_celebdf_labels_originals_and_the_inverted_test_list(tmp_path):
    df = load_catalog("celebdf", make_celebdf(tmp_path))
    rows = by_id(df)
    assert rows["id0_0000"]["label"] == REAL and rows["00000"]["label"] == REAL
    assert rows["id0_id1_0000"]["label"] == FAKE
    assert rows["id0_id1_0000"]["original_id"] == "id0_0000"
    assert rows["id1_id0_0001"]["original_id"] == "id1_0001"
    assert rows["id9_id1_0005"]["original_id"] == "id9_0005"  # original absent: its name still groups
    assert rows["00001"]["original_id"] == "00001"
    assert rows["id0_id1_0000"]["manipulation"] == "celebdf"
    # "1 <real>" and "0 <fake>" in the list: Celeb-DF's 1 = real
    assert {v for v, r in rows.items() if r["split"] == "test"} == {"id1_0001", "id1_id0_0001", "00001"}
    assert rows["id0_0000"]["split"] == ""


def test_celebdf_list_in_our_convention_is_refused(tmp_path):
    root = make_celebdf(tmp_path, test_list="0 Celeb-real/id1_0001.mp4\n1 Celeb-synthesis/id1_id0_0001.mp4\n")
    with pytest.raises(CatalogError, match="id1_0001.mp4 is listed as fake .* 1 = real and 0 = fake"):
        load_catalog("celebdf", root)


def test_celebdf_bad_line_and_missing_listed_video(tmp_path):
    root = make_celebdf(tmp_path, test_list="1 Celeb-real/id1_0001.mp4\nREAL YouTube-real/00001.mp4\n")
    with pytest.raises(CatalogError, match="line 2: 'REAL YouTube-real/00001.mp4'"):
        load_catalog("celebdf", root)
    make_celebdf(tmp_path, test_list="1 Celeb-real/id1_0001.mp4\n0 Celeb-synthesis/id5_id6_0009.mp4\n")
    with pytest.raises(CatalogError, match="1 of 2 videos .*id5_id6_0009.mp4"):
        load_catalog("celebdf", root)
    with pytest.warns(UserWarning):
        df = load_catalog("celebdf", root, allow_missing=True)
    assert df["split"].eq("test").sum() == 1


def test_celebdf_without_test_list(tmp_path):
    root = make_celebdf(tmp_path)
    (root / "List_of_testing_videos.txt").unlink()
    assert set(load_catalog("auto", root)["split"]) == {""}


# --- CSV ---------------------------------------------------------------------------------------

def test_csv_string_labels_originals_and_splits(tmp_path):
    rows = by_id(load_catalog("csv", make_csv(tmp_path)))
    assert rows["real_a"]["label"] == REAL and rows["real_b"]["label"] == REAL
    assert rows["fake_a"]["label"] == FAKE and rows["fake_b"]["label"] == FAKE
    assert rows["fake_a"]["original_id"] == "real_a"   # by file name
    assert rows["fake_b"]["original_id"] == "real_b"   # by path
    assert rows["fake_a"]["manipulation"] == "unknown"
    assert rows["real_b"]["split"] == "test" and rows["fake_a"]["split"] == "train"
    assert rows["fake_b"]["path"] == "videos/fake_b.mov"


def test_csv_file_as_root_with_int_labels(tmp_path):
    touch(tmp_path, "data/r.mp4", "data/f.mp4", "data/g.mp4")
    csv = tmp_path / "data" / "my_list.csv"
    csv.write_text("Path, Label ,original_id,manipulation,extra\n"
                   "r.mp4,0,,,x\n"
                   "./f.mp4,1,r,faceswap,y\n"
                   f"{tmp_path / 'data' / 'g.mp4'},1,elsewhere.mp4,,z\n")
    df = load_catalog("auto", csv)
    rows = by_id(df)
    assert list(df["path"]) == ["f.mp4", "g.mp4", "r.mp4"]
    assert rows["r"]["label"] == REAL and rows["f"]["label"] == FAKE
    assert rows["f"]["original_id"] == "r" and rows["f"]["manipulation"] == "faceswap"
    assert rows["g"]["original_id"] == "elsewhere"  # a source not in the table still groups
    assert set(df["split"]) == {""}


def test_csv_video_id_column_is_used(tmp_path):
    touch(tmp_path, "a.mp4", "b.mp4")
    (tmp_path / "labels.csv").write_text("video_id,path,label,original\nA,a.mp4,real,\nB,b.mp4,fake,A\n")
    rows = by_id(load_catalog("csv", tmp_path))
    assert rows["B"]["original_id"] == "A" and rows["A"]["path"] == "a.mp4"


@pytest.mark.parametrize(("content", "message"), [
    ("file,label\na.mp4,real\n", "lacks column.*path"),
    ("path,label\na.mp4,maybe\na.mp4,2\n",
     r"2 row\(s\) with an unknown label, e.g. line 2: 'maybe'; line 3: '2'"),
    ("path,label\na.mp4,real\na.mp4,fake\n", "repeated path, e.g. line 3: a.mp4"),
    ("path,label\n../a.mp4,real\n", "line 2: ../a.mp4 leaves"),
    ("path,label\n/elsewhere/a.mp4,real\n", "line 2: /elsewhere/a.mp4 is outside"),
    ("path,label,split\na.mp4,real,holdout\n", "line 2: unknown split 'holdout'"),
    ("path,label\nb.mp4,real\n", r"1 of 1 videos .*missing.*b\.mp4"),
    ("", "cannot be read as CSV"),
])
def test_csv_errors_name_the_file(tmp_path, content, message):
    touch(tmp_path, "a.mp4")
    (tmp_path / "labels.csv").write_text(content)
    with pytest.raises(CatalogError, match=message) as err:
        load_catalog("csv", tmp_path)
    assert str(tmp_path / "labels.csv") in str(err.value)


def test_csv_allow_missing_drops_rows(tmp_path):
    touch(tmp_path, "a.mp4")
    (tmp_path / "labels.csv").write_text("path,label\na.mp4,real\nb.mp4,fake\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df = load_catalog("csv", tmp_path, allow_missing=True)
    assert list(df["video_id"]) == ["a"] and "b.mp4" in str(caught[0].message)


def test_csv_folder_without_labels_csv(tmp_path):
    with pytest.raises(CatalogError,
                       match=f"{tmp_path} is neither a .csv file nor a folder holding labels.csv"):
        load_catalog("csv", tmp_path)


# --- folders -----------------------------------------------------------------------------------

def test_folders_recursive_by_extension(tmp_path):
    df = load_catalog("folders", make_folders(tmp_path))
    rows = by_id(df)
    assert sorted(df["path"]) == ["fake/001.avi", "fake/FaceSwap/c.webm", "fake/FaceSwap/d.mkv",
                                  "real/a.mp4", "real/sub/b.MP4"]
    assert rows["b"]["label"] == REAL and rows["001"]["label"] == FAKE
    assert rows["c"]["manipulation"] == "FaceSwap" and rows["001"]["manipulation"] == "unknown"
    assert rows["c"]["original_id"] == "c"
    assert set(df["split"]) == {""}


def test_folders_same_name_in_real_and_fake(tmp_path):
    touch(tmp_path, "real/001.mp4", "fake/001.mp4")
    assert sorted(load_catalog("folders", tmp_path)["video_id"]) == ["fake/001", "real/001"]


def test_folders_under_split_folders(tmp_path):
    touch(tmp_path, "train/real/a.mp4", "train/fake/b.mp4", "test/real/c.mp4", "test/fake/d.mp4",
          "val/fake/e.mp4")
    assert detect_kind(tmp_path) == "folders"
    rows = by_id(load_catalog("folders", tmp_path))
    assert {v: r["split"] for v, r in rows.items()} == {"a": "train", "b": "train", "c": "test", "d": "test",
                                                         "e": "val"}


def test_folders_without_videos_names_the_folders(tmp_path):
    touch(tmp_path, "real/readme.txt")
    (tmp_path / "fake").mkdir()
    with pytest.raises(CatalogError, match=r"no video files \(.mp4 .*\) under .*real"):
        load_catalog("folders", tmp_path)
    with pytest.raises(CatalogError, match=f"{tmp_path / 'empty'} has no real/ or fake/"):
        (tmp_path / "empty").mkdir()
        load_catalog("folders", tmp_path / "empty")
