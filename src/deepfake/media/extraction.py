"""The one crop path: a video's sampled frames -> detected faces -> square crops.

Extraction for training (:mod:`deepfake.stages.extract`) and inference on a
served video (:mod:`deepfake.serving.predictor`) both go through
:func:`faces_from_frames` and :func:`encode_crop`, so a video scores the same in
evaluation and serving. :class:`ExtractConfig` holds the settings; the model
artifact records them and serving rebuilds them from it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from deepfake.core.config import StageConfig
from deepfake.core.errors import ConfigError
from deepfake.media import detectors
from deepfake.media.crops import select, square_crop
from deepfake.media.detectors import Box, DetectFrames, FaceDetector, detect_faces_batch
from deepfake.media.images import IMAGE_FORMATS, decode_image, encode_image
from deepfake.media.video import DEFAULT_PREFETCH, VideoInfo, iter_frames

DETECTION_SETTINGS = ("detector", "detect_long_side", "min_face")  # decide which faces, boxes and landmarks a frame gives
GPU_DETECT_BATCH = 8   # frames per detector call on a GPU: one cascade for 8 frames, still overlapping decoding


@dataclass(frozen=True)
class ExtractConfig(StageConfig):
    frames_per_video: int = 16      # frames sampled per video, evenly spaced (with stride: at most this many, 0 = all)
    stride: int = 0                 # 0 = spread frames_per_video over the video; N = every N-th frame from frame 0
    detector: str = "mtcnn"         # face detector name, one of deepfake.media.detectors.available()
    detect_long_side: int = 640     # px: frames are downscaled to this long side to detect (0 = full size)
    min_face: int = 40              # px on that downscaled frame: the smallest face searched (MTCNN's pyramid starts there)
    margin: float = 0.3             # context added on EACH side of the face box, as a fraction of its longer side
    face_size: int = 224            # px: side of the saved square crop (the model's input size)
    max_faces: int = 3              # faces kept per frame, best score then largest first (a frame scores as its most fake)
    min_score: float = 0.9          # detections with a lower confidence (0-1) are dropped
    image_format: str = "jpg"       # crop files: jpg (small) or png (lossless)
    jpeg_quality: int = 95          # 1-100; 95 keeps compression traces of the fake itself dominant
    workers: int = 1                # processes over videos; does not change the result

    def __post_init__(self) -> None:
        for name in ("frames_per_video", "stride", "detect_long_side", "min_face", "face_size", "max_faces", "jpeg_quality",
                     "workers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ConfigError(f"{name} must be an integer; got {value!r}")
        for name in ("margin", "min_score"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
                raise ConfigError(f"{name} must be a number; got {value!r}")
        _require(self.frames_per_video >= 0, "frames_per_video", self.frames_per_video, ">= 0")
        _require(self.stride >= 0, "stride", self.stride, ">= 0 (0 = evenly spaced)")
        _require(self.frames_per_video > 0 or self.stride > 0, "frames_per_video", 0,
                 "> 0 unless stride > 0 (0 = every stride-th frame)")
        if self.detector not in detectors.available():
            raise ConfigError(f"detector {self.detector!r} is unknown; available: {', '.join(detectors.available())}")
        _require(self.detect_long_side >= 0, "detect_long_side", self.detect_long_side, ">= 0 pixels (0 = full size)")
        _require(self.min_face >= 12, "min_face", self.min_face, ">= 12 pixels (MTCNN's smallest cell)")
        _require(0 <= self.margin <= 5, "margin", self.margin, "between 0 and 5 (a fraction of the box per side)")
        _require(self.face_size >= 8, "face_size", self.face_size, ">= 8 pixels")
        _require(self.max_faces >= 1, "max_faces", self.max_faces, ">= 1")
        _require(0 <= self.min_score <= 1, "min_score", self.min_score, "between 0 and 1")
        if self.image_format not in IMAGE_FORMATS:
            raise ConfigError(f"image_format {self.image_format!r} is not one of {', '.join(IMAGE_FORMATS)}")
        _require(1 <= self.jpeg_quality <= 100, "jpeg_quality", self.jpeg_quality, "between 1 and 100")
        _require(self.workers >= 1, "workers", self.workers, ">= 1")

    def result_settings(self) -> dict[str, Any]:
        """The settings that change the output (all but ``workers``)."""
        return {k: v for k, v in self.to_dict().items() if k != "workers"}


@dataclass(frozen=True)
class Face:
    frame_idx: int                  # frame number in the video, 0-based
    face_idx: int                   # rank within the frame, 0 = best
    box: Box                        # x0, y0, x1, y1 in full-resolution pixels
    score: float                    # detector confidence, 0-1
    crop: np.ndarray                # RGB uint8, face_size x face_size
    landmarks: tuple[tuple[float, float], ...] | None = None


@dataclass(frozen=True)
class VideoFaces:
    info: VideoInfo
    faces: list[Face]
    frame_indices: tuple[int, ...] = ()   # the frames that were decoded and searched
    truncated: bool = False               # the stream ended before its announced length


def check_detection(model: Mapping[str, Any], faces: Mapping[str, Any], model_name: object, faces_name: object) -> None:
    """Refuse to score faces detected otherwise than the model's training faces were (``model`` and
    ``faces``: the extract settings of the model artifact and of the faces' extraction)."""
    missing = [k for k in DETECTION_SETTINGS if k not in model]
    if missing:
        raise ConfigError(f"model {model_name} does not record its extraction's {', '.join(missing)} "
                          "(config.json, extract), so its faces cannot be detected as in training; retrain it")
    differ = [f"{k}: model {model[k]!r}, faces {faces.get(k)!r}" for k in DETECTION_SETTINGS if faces.get(k) != model[k]]
    if differ:
        raise ConfigError(f"the faces in {faces_name} were detected otherwise than model {model_name} was trained on "
                          f"({'; '.join(differ)}); extract them with the model's settings "
                          "(deepfake run --model MODEL --data DATA does) or train on these faces")


def detect_batch(device: str) -> int:
    """Frames detected together on ``device``: a GPU wants several per call, a CPU overlaps one with decoding."""
    return GPU_DETECT_BATCH if str(device).startswith("cuda") else 1


def build_detector(config: ExtractConfig, device: str = "cpu") -> FaceDetector:
    """The detector of ``config``; MTCNN runs its networks on ``device`` (a GPU: torch, else OpenCV)."""
    if config.detector in ("mtcnn", "mtcnn-track"):
        gpu = str(device).startswith("cuda")
        return detectors.get_detector(config.detector, min_face_size=config.min_face, backend="torch" if gpu else "opencv",
                                      device=str(device) if gpu else "cpu")
    return detectors.get_detector(config.detector)


def faces_from_frames(frames: Sequence[np.ndarray], indices: Sequence[int], detector: FaceDetector,
                      config: ExtractConfig, *, sequence: DetectFrames | None = None) -> list[Face]:
    """Detect, keep the best ``max_faces`` per frame and crop them: the one crop path of the kit.

    ``sequence``: the video's :meth:`~deepfake.media.detectors.FaceDetector.sequence` when ``frames``
    continue the frames of one video (a tracking detector follows faces across the calls).
    """
    if len(frames) != len(indices):
        raise ConfigError(f"got {len(frames)} frames but {len(indices)} frame indices")
    faces: list[Face] = []
    found_per_frame = detect_faces_batch(detector, list(frames), config.detect_long_side, sequence=sequence)
    for frame, frame_idx, found in zip(frames, indices, found_per_frame, strict=True):
        for face_idx, det in enumerate(select(found, config.max_faces, config.min_score)):
            crop = square_crop(frame, det.box, config.margin, config.face_size)
            faces.append(Face(int(frame_idx), face_idx, det.box, float(det.score), crop, det.landmarks))
    return faces


def extract_video_faces(path: str | os.PathLike[str], detector: FaceDetector, config: ExtractConfig, *,
                        on_frame: Callable[[list[Face]], None] | None = None,
                        decode_threads: int | None = None, batch: int = 1) -> VideoFaces:
    """Faces of one video; a decode thread runs ahead so decoding overlaps detection.

    ``on_frame`` gets each searched frame's faces as soon as they are cropped
    (an empty list for a frame without a face), while the decode thread goes on:
    the predictor classifies crops there instead of after the last frame.
    ``decode_threads``: FFmpeg threads of the decoder (None: FFmpeg's choice);
    parallel extraction gives each worker its share of the cores. ``batch``:
    frames detected together (a GPU wants several; the detections do not depend on it).
    Raises :class:`~deepfake.core.errors.VideoDecodeError` when the video cannot be read.
    """
    reader = iter_frames(path, config.frames_per_video, config.stride, prefetch=DEFAULT_PREFETCH,
                         decode_threads=decode_threads)
    faces: list[Face] = []
    pending: list[tuple[int, np.ndarray]] = []
    sequence = detector.sequence()

    def flush() -> None:
        found = faces_from_frames([f for _, f in pending], [i for i, _ in pending], detector, config,
                                  sequence=sequence)
        faces.extend(found)
        if on_frame is not None:
            for idx, _ in pending:
                on_frame([f for f in found if f.frame_idx == idx])
        pending.clear()

    for frame_idx, frame in reader:
        pending.append((frame_idx, frame))
        if len(pending) >= max(1, batch):
            flush()
    if pending:
        flush()
    return VideoFaces(reader.info, faces, tuple(reader.indices), reader.truncated)


def encode_crop(crop: np.ndarray, config: ExtractConfig) -> bytes:
    """Encode an RGB crop as the saved crop files are (format and JPEG quality of ``config``)."""
    return encode_image(crop, config.image_format, config.jpeg_quality)


def decode_crop(data: bytes) -> np.ndarray:
    """Decode crop bytes to RGB uint8."""
    return decode_image(data, "a face crop", "it was not written by encode_crop")


def _require(ok: bool, name: str, value: object, rule: str) -> None:
    if not ok:
        raise ConfigError(f"{name} must be {rule}; got {value!r}")
