"""Each registered detector on real photos, and the downscale-then-map-back contract."""

from __future__ import annotations

import importlib.util
import sys

import cv2
import numpy as np
import pytest

from deepfake.core.errors import DetectorError, ImageDecodeError
from deepfake.media import detectors
from deepfake.media.detectors import LANDMARKS, Detection, FaceDetector, available, detect_faces, get_detector

HAS_DLIB = importlib.util.find_spec("dlib") is not None
# Grace Hopper's face in matplotlib's 512x600 sample photo (x0, y0, x1, y1), hand-checked.
HOPPER_FACE = (176, 118, 357, 337)


def iou(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


@pytest.fixture(scope="module")
def hopper(face_photos):
    return dict(face_photos)["mpl_grace_hopper"]


@pytest.fixture(scope="module")
def mtcnn():
    return get_detector("mtcnn")


class Recording(FaceDetector):
    """A real detector that remembers the size of every image it was given."""

    def __init__(self, inner: FaceDetector) -> None:
        self.inner = inner
        self.shapes: list[tuple[int, ...]] = []

    def detect(self, rgb):
        self.shapes.append(rgb.shape)
        return self.inner.detect(rgb)


def test_registry_lists_the_three_detectors():
    assert {"mtcnn", "dlib-hog", "haar"} <= set(available())


def test_unknown_detector_lists_available():
    with pytest.raises(DetectorError) as err:
        get_detector("retinaface")
    assert "retinaface" in str(err.value) and "mtcnn" in str(err.value) and "haar" in str(err.value)


def test_unknown_option_is_a_detector_error():
    with pytest.raises(DetectorError, match="haar"):
        get_detector("haar", flavour="spicy")


@pytest.mark.parametrize("name", [
    "mtcnn",
    pytest.param("dlib-hog", marks=pytest.mark.skipif(not HAS_DLIB, reason="dlib-bin not installed")),
    "haar",
])
def test_detector_finds_the_face_on_a_real_photo(name, hopper):
    found = get_detector(name).detect(hopper)
    assert len(found) == 1
    det = found[0]
    assert iou(det.box, HOPPER_FACE) > 0.5
    assert 0.0 <= det.score <= 1.0
    h, w = hopper.shape[:2]
    assert 0 <= det.box[0] < det.box[2] <= w and 0 <= det.box[1] < det.box[3] <= h


def test_every_detector_finds_faces_on_most_photos(face_photos):
    # MTCNN on every single-face photo; the weaker ones on most (at 320 px: the faces are large)
    names = [n for n in available() if n != "dlib-hog" or HAS_DLIB]
    for name in names:
        det = get_detector(name)
        hits = sum(len(detect_faces(det, rgb, long_side=320)) >= 1 for _, rgb in face_photos)
        assert hits >= (len(face_photos) if name == "mtcnn" else len(face_photos) - 2), name


def test_mtcnn_gives_five_landmarks_inside_the_box(mtcnn, hopper):
    det = mtcnn.detect(hopper)[0]
    assert det.score > 0.99 and len(det.landmarks) == len(LANDMARKS)
    x0, y0, x1, y1 = det.box
    assert all(x0 <= x <= x1 and y0 <= y <= y1 for x, y in det.landmarks)
    (lx, ly), (rx, ry) = det.landmarks[0], det.landmarks[1]
    assert lx < rx and abs(ly - ry) < 0.1 * (y1 - y0)   # eyes side by side, left in the image first


def test_no_face_in_noise(mtcnn):
    rng = np.random.default_rng(0)
    noise = cv2.GaussianBlur(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8), (5, 5), 2)
    assert mtcnn.detect(noise) == []


def test_downscaled_detection_maps_back_to_full_resolution(mtcnn, hopper):
    big = cv2.resize(hopper, (hopper.shape[1] * 3, hopper.shape[0] * 3), interpolation=cv2.INTER_CUBIC)
    rec = Recording(mtcnn)
    found = detect_faces(rec, big, long_side=600)
    assert max(rec.shapes[0][:2]) == 600                     # detection ran on the small copy
    assert len(found) == 1
    direct = mtcnn.detect(hopper)[0].box                      # the small copy is the original photo again
    expected = tuple(3 * v for v in direct)
    assert iou(found[0].box, expected) > 0.9                  # the box lands on the face in full res
    assert iou(found[0].box, tuple(3 * v for v in HOPPER_FACE)) > 0.7
    x0, y0, x1, y1 = found[0].box
    assert all(x0 <= x <= x1 and y0 <= y <= y1 for x, y in found[0].landmarks)


def test_never_upscales(mtcnn, hopper):
    rec = Recording(mtcnn)
    direct = mtcnn.detect(hopper)
    assert detect_faces(rec, hopper, long_side=2000) == direct
    assert rec.shapes == [hopper.shape]
    rec.shapes.clear()
    detect_faces(rec, hopper, long_side=None)
    assert rec.shapes == [hopper.shape]


def test_scaled_detection_is_clipped():
    det = Detection((10, 10, 60, 60), 0.9, ((20.0, 20.0),) * 5)
    big = det.scaled(2.0, 2.0, 100, 100)
    assert big.box == (20, 20, 100, 100) and big.landmarks[0] == (40.0, 40.0) and big.score == 0.9


def test_grey_and_rgba_inputs_work_and_bad_shapes_fail(mtcnn, hopper):
    grey = cv2.cvtColor(hopper, cv2.COLOR_RGB2GRAY)
    assert len(detect_faces(mtcnn, grey)) == 1
    rgba = cv2.cvtColor(hopper, cv2.COLOR_RGB2RGBA)
    assert len(detect_faces(mtcnn, rgba)) == 1
    with pytest.raises(ImageDecodeError, match="shape"):
        detect_faces(mtcnn, np.zeros((10, 10, 2), np.uint8))
    with pytest.raises(ImageDecodeError, match="uint8"):
        detect_faces(mtcnn, hopper.astype(np.float32))


def test_dlib_missing_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "dlib", None)    # makes `import dlib` fail
    with pytest.raises(DetectorError, match=r"pip install 'dlib-bin>=[0-9.]+'"):
        get_detector("dlib-hog")


def test_register_rejects_a_taken_name():
    with pytest.raises(DetectorError, match="already taken"):
        @detectors.register("mtcnn")
        class Other(FaceDetector):
            def detect(self, rgb):
                return []
