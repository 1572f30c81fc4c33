"""Face extraction on real clips: the crop path, faces.csv, status rows, resume, workers, shards."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deepfake.core import resources
from deepfake.core.errors import ConfigError, ImageDecodeError, ManifestError, VideoDecodeError
from deepfake.data.faces_table import FACES_COLUMNS, format_landmarks, parse_landmarks, read_faces
from deepfake.demo.face_sources import multi_face_photo
from deepfake.media.extraction import (
    ExtractConfig,
    build_detector,
    decode_crop,
    encode_crop,
    extract_video_faces,
    faces_from_frames,
)
from deepfake.media.video import frame_indices
from deepfake.stages.extract import extract_faces

# Small and fast: 4 frames per video, 64 px crops.
FAST = ExtractConfig(frames_per_video=4, face_size=64)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, face_clip, multi_face_clip, no_face_clip, corrupt_files):
    """A data folder with one video of each kind, and its videos table (one file missing)."""
    root = tmp_path_factory.mktemp("dataset")
    (root / "fakes").mkdir()
    shutil.copy(face_clip, root / "real.mp4")
    shutil.copy(multi_face_clip, root / "fakes" / "group.mp4")
    shutil.copy(no_face_clip, root / "empty_room.mp4")
    shutil.copy(corrupt_files["text"], root / "broken.mp4")
    videos = pd.DataFrame({
        "video_id": ["real", "group", "room", "broken", "gone"],
        "path": ["real.mp4", "fakes/group.mp4", "empty_room.mp4", "broken.mp4", "gone.mp4"],
        "label": [0, 1, 0, 1, 1],
        "original_id": ["real", "real", "room", "broken", "real"],
        "manipulation": ["none", "faceswap", "none", "faceswap", "faceswap"],
        "split": ["train", "train", "val", "test", "test"],
    })
    return root, videos


# --- config -------------------------------------------------------------------------------------

def test_config_defaults():
    assert ExtractConfig().to_dict() == {
        "frames_per_video": 16, "stride": 0, "detector": "mtcnn", "detect_long_side": 640, "min_face": 40,
        "margin": 0.3,
        "face_size": 224, "max_faces": 3, "min_score": 0.9, "image_format": "jpg", "jpeg_quality": 95,
        "workers": 1,
    }


@pytest.mark.parametrize("change, words", [
    ({"frames_per_video": -1}, "frames_per_video"),
    ({"frames_per_video": 0}, "stride > 0"),
    ({"stride": -3}, "stride"),
    ({"detector": "retinaface"}, "available: dlib-hog, haar, mtcnn"),
    ({"min_face": 8}, "min_face"),
    ({"margin": -0.2}, "margin"),
    ({"face_size": 0}, "face_size"),
    ({"max_faces": 0}, "max_faces"),
    ({"min_score": 1.5}, "min_score"),
    ({"image_format": "gif"}, "jpg, png"),
    ({"jpeg_quality": 101}, "jpeg_quality"),
    ({"workers": 0}, "workers"),
    ({"face_size": "big"}, "face_size"),
])
def test_config_rejects_bad_values(change, words):
    with pytest.raises(ConfigError, match=words):
        ExtractConfig.from_dict(change)
    if not isinstance(next(iter(change.values())), str):
        with pytest.raises(ConfigError):
            ExtractConfig(**change)


def test_config_from_strings_and_unknown_keys():
    cfg = ExtractConfig.from_dict({"frames_per_video": "8", "margin": "0.5", "stride": 0})
    assert cfg.frames_per_video == 8 and cfg.margin == 0.5
    assert ExtractConfig.from_dict({"frames_per_video": 0, "stride": 5}).stride == 5
    with pytest.raises(ConfigError, match="known settings"):
        ExtractConfig.from_dict({"frame_per_video": 8})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.margin = 1.0


# --- crops in memory ----------------------------------------------------------------------------

def test_encode_decode_round_trip_keeps_rgb():
    crop = np.zeros((64, 64, 3), np.uint8)
    crop[..., 0] = 230
    crop[16:48, 16:48] = (10, 200, 40)
    png = ExtractConfig(image_format="png")
    assert np.array_equal(decode_crop(encode_crop(crop, png)), crop)
    back = decode_crop(encode_crop(crop, ExtractConfig()))
    assert np.abs(back.astype(int) - crop).mean() < 3 and back[2, 2, 0] > 200 and back[32, 32, 1] > 180
    low = encode_crop(crop, ExtractConfig(jpeg_quality=10))
    assert len(low) < len(encode_crop(crop, ExtractConfig()))


def test_decode_crop_rejects_junk():
    with pytest.raises(ImageDecodeError, match="12 bytes"):
        decode_crop(b"not an image")
    with pytest.raises(ImageDecodeError):
        decode_crop(b"")


def test_faces_from_frames_ranks_and_crops_a_multi_face_photo():
    photo = multi_face_photo()
    cfg = ExtractConfig(max_faces=3, face_size=48)
    faces = faces_from_frames([photo], [7], build_detector(cfg), cfg)
    assert [f.face_idx for f in faces] == [0, 1, 2] and {f.frame_idx for f in faces} == {7}
    assert all(f.crop.shape == (48, 48, 3) and f.score >= 0.9 for f in faces)
    areas = [(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]) for f in faces]
    assert areas == sorted(areas, reverse=True)
    with pytest.raises(ConfigError):
        faces_from_frames([photo], [1, 2], build_detector(cfg), cfg)


def test_extract_video_faces_finds_the_face_in_every_frame(face_clip):
    result = extract_video_faces(face_clip, build_detector(FAST), FAST)
    assert [f.frame_idx for f in result.faces] == frame_indices(12, 4) == list(result.frame_indices)
    assert all(f.crop.shape == (64, 64, 3) and f.face_idx == 0 for f in result.faces)
    assert result.info.width == 320 and not result.truncated


def test_on_frame_gets_each_searched_frame_while_decoding(face_clip, no_face_clip):
    """The predictor's hook: every searched frame's faces, in order, the same faces the result holds."""
    handed: list[list] = []
    result = extract_video_faces(face_clip, build_detector(FAST), FAST, on_frame=handed.append, decode_threads=1)
    assert len(handed) == len(result.frame_indices) == 4
    assert [f for frame in handed for f in frame] == result.faces
    plain = extract_video_faces(face_clip, build_detector(FAST), FAST)
    assert [f.box for f in plain.faces] == [f.box for f in result.faces]
    assert all(np.array_equal(a.crop, b.crop) for a, b in zip(plain.faces, result.faces, strict=True))
    empty: list[list] = []
    extract_video_faces(no_face_clip, build_detector(FAST), FAST, on_frame=empty.append)
    assert empty == [[]] * 4                                    # a frame without a face is handed over too


def test_workers_share_the_cores(monkeypatch):
    monkeypatch.setattr(resources, "usable_cores", lambda: 2)
    assert (resources.threads_per_worker(1), resources.decoder_threads(1)) == (2, 1)   # decoder + detection thread
    assert (resources.threads_per_worker(2), resources.decoder_threads(2)) == (1, 1)
    assert (resources.threads_per_worker(3), resources.decoder_threads(3)) == (1, 1)   # never below one
    monkeypatch.setattr(resources, "usable_cores", lambda: 16)
    assert (resources.threads_per_worker(4), resources.decoder_threads(4)) == (4, 3)


def test_extract_video_faces_raises_on_a_broken_file(corrupt_files):
    with pytest.raises(VideoDecodeError, match="truncated"):
        extract_video_faces(corrupt_files["truncated"], build_detector(FAST), FAST)


# --- over a videos table ------------------------------------------------------------------------

def test_extract_faces_writes_the_manifest_crops_and_status_rows(dataset, tmp_path):
    data, videos = dataset
    cfg = FAST.replace(max_faces=2)
    df = extract_faces(videos, data, tmp_path, cfg, progress=False)
    assert list(df.columns) == FACES_COLUMNS
    on_disk = pd.read_csv(tmp_path / "faces.csv", keep_default_na=False)
    assert list(on_disk.columns) == FACES_COLUMNS and len(on_disk) == len(df)

    status = df.groupby("video_id", sort=False)["status"].first().to_dict()
    assert status == {"real": "ok", "group": "ok", "room": "no_face", "broken": "decode_error",
                      "gone": "decode_error"}
    ok = df[df.status == "ok"]
    assert (ok[ok.video_id == "real"].face_idx == 0).all() and len(ok[ok.video_id == "real"]) == 4
    group = ok[ok.video_id == "group"]
    assert len(group) == 8 and sorted(group.face_idx.unique()) == [0, 1]       # multi-face: two per frame
    assert (group.label == 1).all() and (group.original_id == "real").all()
    for _, row in ok.iterrows():
        assert (tmp_path / row.path).is_file()
        x0, y0, x1, y1 = json.loads(row.box)
        assert 0 <= x0 < x1 <= 480 and 0 <= y0 < y1 <= 320
    assert ok.path.str.match(r"crops/(real|group)/\d+_\d\.jpg").all()

    rows = df[df.status != "ok"].set_index("video_id")
    assert (rows.frame_idx == -1).all() and (rows.face_idx == -1).all() and (rows.path == "").all()
    assert "not a readable video" in rows.loc["broken", "reason"]
    assert rows.loc["gone", "reason"] == "file not found"
    assert "no face" in rows.loc["room", "reason"]

    meta = json.loads((tmp_path / "faces.json").read_text())
    assert meta["config"] == cfg.to_dict() and meta["rows"] == len(df)
    assert (meta["faces"], meta["no_face_videos"], meta["decode_error_videos"]) == (12, 1, 2)

    back = read_faces(tmp_path)
    assert back.abs_path[back.status == "ok"].map(lambda p: p.startswith(str(tmp_path))).all()
    assert (back.abs_path[back.status != "ok"] == "").all()
    assert back[FACES_COLUMNS].astype(str).equals(df.astype(str))


def test_resume_redoes_only_unfinished_videos(dataset, tmp_path):
    data, videos = dataset
    extract_faces(videos, data, tmp_path, FAST, progress=False)
    parts = {p.name: p.stat().st_mtime_ns for p in (tmp_path / ".parts").glob("*.csv")}
    crops = {p: p.stat().st_mtime_ns for p in (tmp_path / "crops").rglob("*.jpg")}
    assert set(parts) == {"real.csv", "group.csv", "room.csv", "broken.csv"}   # a missing file has no part
    first = (tmp_path / "faces.csv").read_text()

    # a run killed after "real" finished but before "group" and faces.csv were written
    (tmp_path / "faces.csv").unlink()
    (tmp_path / ".parts" / "group.csv").unlink()
    extract_faces(videos, data, tmp_path, FAST.replace(workers=2), progress=False)

    after = {p.name: p.stat().st_mtime_ns for p in (tmp_path / ".parts").glob("*.csv")}
    assert after["group.csv"] != parts.get("group.csv")
    assert all(after[name] == parts[name] for name in parts if name != "group.csv")
    for path, mtime in crops.items():
        assert path.stat().st_mtime_ns == mtime or "group" in path.parts
    assert (tmp_path / "faces.csv").read_text() == first
    meta = json.loads((tmp_path / "faces.json").read_text())
    assert meta["resumed_videos"] == 3


def test_resume_refuses_other_settings(dataset, tmp_path):
    data, videos = dataset
    extract_faces(videos.iloc[:1], data, tmp_path, FAST, progress=False)
    with pytest.raises(ConfigError, match="face_size 64 -> 96"):
        extract_faces(videos.iloc[:1], data, tmp_path, FAST.replace(face_size=96), progress=False)


def test_two_workers_give_the_same_result(dataset, tmp_path):
    data, videos = dataset
    one = extract_faces(videos, data, tmp_path / "one", FAST, progress=False)
    two = extract_faces(videos, data, tmp_path / "two", FAST.replace(workers=2), progress=False)
    assert one.equals(two)
    for rel in one.path[one.status == "ok"]:
        assert (tmp_path / "one" / rel).read_bytes() == (tmp_path / "two" / rel).read_bytes()


def test_shards_process_only_their_files(dataset, tmp_path):
    data, videos = dataset
    wanted = videos[videos.video_id.isin(["real", "group", "room"])]
    shard_dirs = {"a": ["real.mp4"], "b": ["fakes/group.mp4", "empty_room.mp4"]}
    for name, files in shard_dirs.items():
        local = tmp_path / f"mount-{name}"
        for rel in files:
            (local / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(data / rel, local / rel)
        df = extract_faces(wanted, local, tmp_path / "out", FAST, shard=name, progress=False)
        assert set(df.video_id) == {videos.set_index("path").video_id[f] for f in files}
        meta = json.loads((tmp_path / "out" / f"shard-{name}" / "faces.json").read_text())
        assert meta["skipped_not_in_shard"] == 3 - len(files) and meta["shard"] == name
    assert not (tmp_path / "out" / "faces.csv").exists()
    both = read_faces(tmp_path / "out")
    assert set(both.video_id) == {"real", "group", "room"}
    assert both.abs_path[both.status == "ok"].map(lambda p: "/shard-" in p).all()


def test_ids_keep_leading_zeros_and_odd_characters(face_clip, tmp_path):
    videos = pd.DataFrame({"video_id": ["000", "../x y"], "path": [str(face_clip)] * 2,
                           "label": [0, 1], "original_id": ["000", "000"], "manipulation": ["none", "swap"],
                           "split": ["train", "train"]})
    extract_faces(videos, tmp_path / "data", tmp_path / "out", FAST.replace(frames_per_video=1), progress=False)
    back = read_faces(tmp_path / "out")
    assert list(back.video_id) == ["000", "../x y"] and list(back.original_id) == ["000", "000"]
    out = (tmp_path / "out").resolve()
    assert all(out in Path(p).resolve().parents for p in back.abs_path)   # odd ids stay inside out/


def test_videos_table_errors(tmp_path):
    with pytest.raises(ManifestError, match="path"):
        extract_faces(pd.DataFrame({"video_id": ["a"]}), tmp_path, tmp_path, FAST, progress=False)
    dup = pd.DataFrame({"video_id": ["a", "a"], "path": ["a.mp4", "b.mp4"]})
    with pytest.raises(ManifestError, match="unique"):
        extract_faces(dup, tmp_path, tmp_path, FAST, progress=False)
    with pytest.raises(ManifestError, match="run face extraction first"):
        read_faces(tmp_path / "nothing")


def test_progress_lines_when_not_a_terminal(dataset, tmp_path, capsys):
    data, videos = dataset
    extract_faces(videos.iloc[:2], data, tmp_path, FAST, progress=True)
    err = capsys.readouterr().err
    assert "extract faces: 2 videos to do" in err and "2/2 videos" in err and err.count("\n") <= 3
    extract_faces(videos.iloc[:2], data, tmp_path, FAST, progress=False)
    assert capsys.readouterr().err == ""
    with pytest.raises(ConfigError, match="progress"):
        extract_faces(videos.iloc[:2], data, tmp_path, FAST, progress="loud")


def test_truncated_video_keeps_its_faces_and_says_so(corrupt_files, tmp_path):
    path = corrupt_files["truncated_tail"]                     # announces 30 frames, ~11 decode
    videos = pd.DataFrame({"video_id": ["cut"], "path": [path.name]})
    df = extract_faces(videos, path.parent, tmp_path, FAST.replace(frames_per_video=3), progress=False)
    assert list(df.frame_idx) == [5] and list(df.status) == ["ok"]
    assert df.reason[0].startswith("truncated: the stream ends after")
    assert df.original_id[0] == "cut"                           # defaults to the video's own id


def test_every_face_row_has_its_five_landmarks_in_full_resolution(dataset, tmp_path):
    data, videos = dataset
    extract_faces(videos.iloc[:2], data, tmp_path, FAST, progress=False)
    df = read_faces(tmp_path)
    ok = df[df.status == "ok"]
    assert len(ok) and (ok.landmarks != "").all()
    for row in ok.itertuples():
        marks = parse_landmarks(row.landmarks)
        x0, y0, x1, y1 = json.loads(row.box)
        assert marks.shape == (5, 2)
        assert ((marks[:, 0] >= x0) & (marks[:, 0] <= x1) & (marks[:, 1] >= y0) & (marks[:, 1] <= y1)).all()
    assert parse_landmarks("") is None and format_landmarks(None) == ""
    with pytest.raises(ManifestError, match="landmarks cell"):
        parse_landmarks("[1, 2")


def test_a_manifest_without_landmarks_still_loads(dataset, tmp_path):
    """faces.csv of an older kit: read with an empty landmarks column; old parts are extracted again."""
    data, videos = dataset
    extract_faces(videos.iloc[:1], data, tmp_path, FAST, progress=False)
    table = pd.read_csv(tmp_path / "faces.csv", keep_default_na=False).drop(columns="landmarks")
    table.to_csv(tmp_path / "faces.csv", index=False)
    old = read_faces(tmp_path)
    assert list(old.columns[:-1]) == FACES_COLUMNS and (old.landmarks == "").all()

    stamp = tmp_path / ".parts" / "config.json"
    settings = json.loads(stamp.read_text())
    stamp.write_text(json.dumps({k: v for k, v in settings.items() if k != "parts_format"}))   # an older kit's
    part = tmp_path / ".parts" / "real.csv"
    part.write_text(pd.read_csv(part, keep_default_na=False).drop(columns="landmarks").to_csv(index=False))
    again = extract_faces(videos.iloc[:1], data, tmp_path, FAST, progress=False)
    assert (again[again.status == "ok"].landmarks != "").all()


@pytest.mark.slow
def test_cli_extract_as_the_readme_writes_it(face_clip, tmp_path, capsys):
    """README's `deepfake extract --data DIR --out faces/ --set detector=mtcnn-track` on a tiny real/ + fake/
    folder: the layout it read is printed, and the faces table records the detector it was made with."""
    from deepfake.data.manifest import read_sidecar
    from deepfake.orchestration.cli import main

    data = tmp_path / "data"
    for name in ("real/a.mp4", "fake/b.mp4"):
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(face_clip, data / name)
    out = tmp_path / "faces"
    assert main(["extract", "--data", str(data), "--out", str(out), "--set", "detector=mtcnn-track"]) == 0
    printed = capsys.readouterr().out
    assert "folders layout" in printed and f"rows written to {out}" in printed
    faces = read_faces(out)
    assert set(faces["video_id"]) == {"a", "b"} and (faces["status"] == "ok").all()
    assert read_sidecar(out / "faces.csv")["config"]["detector"] == "mtcnn-track"
