"""Following a face through a clip, and the aligned face space the manipulations work in.

MTCNN's five landmarks per frame (detected on a downscale by
:func:`deepfake.media.detectors.detect_faces`), interpolated over missed frames
and smoothed, give a :class:`FaceTrack`; :func:`align` maps a face onto a
canvas where its landmarks sit on a fixed template, and back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from deepfake.media.detectors import FaceDetector, detect_faces, get_detector

# MTCNN's five landmarks in image order (left = smaller x): eyes, nose, mouth corners.
LANDMARKS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


# The same five points of a frontal face on a 112 px canvas (the ArcFace template).
_TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)


TEMPLATE_ZOOM = 0.8          # template shrunk around the canvas centre, so forehead and chin fit
TRACK_LONG_SIDE = 320        # px: MTCNN runs on this downscale (faces here are >= 60 px on it)
TRACK_MIN_SCORE = 0.9        # MTCNN confidence below which a detection is ignored
TRACK_MIN_FACE = 20          # px on the image detected on: MTCNN's own smallest face
TRACK_SMOOTH = 5             # frames: centred moving average over landmarks (removes jitter)
TRACK_MIN_RATE = 0.5         # fraction of frames that must hold a face for the track to be usable
MAX_DONOR_YAW = 0.25         # nose offset from the eyes' midpoint, in eye distances


@dataclass(frozen=True)
class FaceTrack:
    """One face followed through a clip: smoothed landmarks per frame."""

    landmarks: np.ndarray  # (T, 5, 2) float64, full-resolution pixels, order of LANDMARKS
    boxes: np.ndarray      # (T, 4) float64, x0, y0, x1, y1
    detected: np.ndarray   # (T,) bool: the detector found the face in that frame

    @property
    def detection_rate(self) -> float:
        return float(self.detected.mean()) if len(self.detected) else 0.0


@dataclass(frozen=True)
class FaceImage:
    """A face to paste (a donor): an RGB image and its five landmarks."""

    name: str
    rgb: np.ndarray
    landmarks: np.ndarray  # (5, 2)

    @property
    def frontal(self) -> bool:
        """Nose near the eyes' midline: a turned head would paste its background into the swap."""
        return yaw(self.landmarks) <= MAX_DONOR_YAW


def yaw(landmarks: np.ndarray) -> float:
    """How far the head is turned: the nose's sideways offset from the eyes' midpoint, in eye distances."""
    eyes = np.linalg.norm(landmarks[1] - landmarks[0])
    return float(abs(landmarks[2, 0] - (landmarks[0, 0] + landmarks[1, 0]) / 2) / max(eyes, 1e-6))


def tracking_detector() -> FaceDetector:
    """The kit's MTCNN with MTCNN's own smallest face (20 px): demo faces can be small in a group photo."""
    return get_detector("mtcnn", min_face_size=TRACK_MIN_FACE)


def detect_landmarks(detector: FaceDetector, rgb: np.ndarray, long_side: int = TRACK_LONG_SIDE) -> list[dict]:
    """Confident faces with landmarks, detected on a downscaled copy by the kit's one detection path
    (:func:`deepfake.media.detectors.detect_faces`): box (x0, y0, x1, y1) and landmarks in full resolution."""
    return [{"box": np.array(d.box, dtype=np.float64), "landmarks": np.array(d.landmarks, dtype=np.float64),
             "score": d.score}
            for d in detect_faces(detector, rgb, long_side) if d.score >= TRACK_MIN_SCORE and d.landmarks]


def track_face(frames: Sequence[np.ndarray], detector: FaceDetector, *, long_side: int = TRACK_LONG_SIDE,
               smooth: int = TRACK_SMOOTH) -> FaceTrack | None:
    """Follow the main face through ``frames``; None if it is found in too few of them.

    The face nearest the previous one is kept in each frame (the largest one
    starts the track), frames without it are interpolated, and the landmarks are
    smoothed over time so a pasted face does not shake.
    """
    n = len(frames)
    marks = np.zeros((n, 5, 2))
    boxes = np.zeros((n, 4))
    detected = np.zeros(n, dtype=bool)
    previous: np.ndarray | None = None
    for i, frame in enumerate(frames):
        faces = detect_landmarks(detector, frame, long_side)
        if not faces:
            continue
        if previous is None:
            best = max(faces, key=lambda f: (f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1]))
        else:
            best = min(faces, key=lambda f: float(np.abs(_centre(f["box"]) - _centre(previous)).sum()))
        marks[i], boxes[i], detected[i] = best["landmarks"], best["box"], True
        previous = best["box"]
    if n == 0 or detected.mean() < TRACK_MIN_RATE:
        return None
    found = np.flatnonzero(detected)
    t = np.arange(n)
    flat_marks = marks.reshape(n, -1)
    for arr in (flat_marks, boxes):
        for j in range(arr.shape[1]):
            arr[:, j] = np.interp(t, found, arr[found, j])
    marks = _moving_average(flat_marks, smooth).reshape(n, 5, 2)
    boxes = _moving_average(boxes, smooth)
    return FaceTrack(landmarks=marks, boxes=boxes, detected=detected)


def _centre(box: np.ndarray) -> np.ndarray:
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])


def _moving_average(values: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or len(values) < 2:
        return values.copy()
    half = window // 2
    padded = np.pad(values, ((half, half), (0, 0)), mode="edge")
    kernel = np.ones(window) / window
    return np.stack([np.convolve(padded[:, j], kernel, mode="valid") for j in range(values.shape[1])], axis=1)


def template(size: float) -> np.ndarray:
    """The five landmarks of the aligned face on a ``size`` px square canvas."""
    return ((_TEMPLATE_112 / 112.0 - 0.5) * TEMPLATE_ZOOM + 0.5) * size


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, scale, shift) mapping ``src`` points onto ``dst``: a 2x3 matrix.

    Umeyama's closed form: deterministic, unlike OpenCV's robust estimators.
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1
    rot = u @ sign @ vt
    scale = float(np.trace(np.diag(sig) @ sign) / (s**2).sum(1).mean())
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - m[:, :2] @ mu_s
    return m


def align(rgb: np.ndarray, landmarks: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The face warped to the aligned canvas, and the matrix that maps the canvas back to ``rgb``.

    Bilinear sampling without prefiltering, as a generator's input pipeline does:
    shrinking a face this way aliases its fine detail (part of the artefact).
    """
    to_canvas = similarity(landmarks, template(size))
    crop = cv2.warpAffine(rgb, to_canvas, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    return crop, cv2.invertAffineTransform(to_canvas)
