"""Writing RGB frames as a video file: H.264 through PyAV, other codecs through OpenCV.

OpenCV's ``VideoWriter`` has no H.264 encoder in the pip wheels, so the codecs
PyAV knows go through it; FourCC codes (``mp4v``, ``MJPG``, ``XVID``) go
through OpenCV. Writes are atomic.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from deepfake.core.errors import ConfigError

# H.264 goes through PyAV (OpenCV's wheels have no H.264 encoder); every other
# codec is a FourCC for cv2.VideoWriter (mp4v -> .mp4, MJPG/XVID -> .avi, VP90 -> .mkv).
PYAV_CODECS = {"h264": "libx264"}


def write_video(path: str | os.PathLike[str], frames_rgb: Iterable[np.ndarray], fps: float = 25.0,
                codec: str = "h264") -> Path:
    """Encode RGB frames to ``path``, atomically (a killed run leaves no half file).

    ``codec="h264"`` uses PyAV's libx264 (yuv420p, even sizes only, MP4 with the
    index at the front so a truncated copy still decodes up to the cut); any
    other value is a FourCC for ``cv2.VideoWriter`` (``mp4v``, ``MJPG``, ``XVID``).
    """
    path = Path(path)
    if fps <= 0:
        raise ConfigError(f"fps must be > 0 to write {path}; got {fps}")
    if codec not in PYAV_CODECS and len(codec) != 4:
        raise ConfigError(f"codec {codec!r} for {path} is neither one of {sorted(PYAV_CODECS)} nor a 4-letter FourCC")
    frames = iter(frames_rgb)
    first = next(frames, None)
    if first is None:
        raise ConfigError(f"no frames to write to {path}")
    first = _check_frame(first, None, path)
    height, width = first.shape[:2]
    if codec in PYAV_CODECS and (width % 2 or height % 2):
        raise ConfigError(f"{codec} (yuv420p) needs even frame sizes; {path} got {width}x{height}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    try:
        if codec in PYAV_CODECS:
            _write_pyav(tmp, first, frames, fps, PYAV_CODECS[codec], path)
        else:
            _write_cv2(tmp, first, frames, fps, codec, path)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _write_pyav(tmp: Path, first: np.ndarray, rest: Iterator[np.ndarray], fps: float, codec: str,
                path: Path) -> None:
    import av

    options = {"movflags": "faststart"} if path.suffix.lower() in (".mp4", ".mov", ".m4v") else {}
    with av.open(str(tmp), mode="w", format=_container_format(path), options=options) as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.height, stream.width = first.shape[:2]
        stream.pix_fmt = "yuv420p"
        for frame in _chain(first, rest, path):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _write_cv2(tmp: Path, first: np.ndarray, rest: Iterator[np.ndarray], fps: float, fourcc: str,
               path: Path) -> None:
    height, width = first.shape[:2]
    writer = cv2.VideoWriter(str(tmp), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*fourcc), float(fps), (width, height))
    if not writer.isOpened():
        raise ConfigError(
            f"OpenCV cannot write FourCC {fourcc!r} into {path.suffix or 'a file without extension'} ({path}); "
            "try mp4v with .mp4, MJPG with .avi, or codec='h264'"
        )
    try:
        for frame in _chain(first, rest, path):
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()


def _chain(first: np.ndarray, rest: Iterator[np.ndarray], path: Path) -> Iterator[np.ndarray]:
    yield first
    for frame in rest:
        yield _check_frame(frame, first.shape, path)


def _check_frame(frame: np.ndarray, shape: tuple[int, ...] | None, path: Path) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ConfigError(f"frames for {path} must be RGB uint8 H x W x 3; got {frame.dtype} {frame.shape}")
    if shape is not None and frame.shape != shape:
        raise ConfigError(f"frames for {path} must all be {shape}; got {frame.shape}")
    return np.ascontiguousarray(frame)


def _container_format(path: Path) -> str | None:
    return {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".avi": "avi"}.get(path.suffix.lower())
