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
                codec: str = "h264", crf: int | None = None) -> Path:
    """Encode RGB frames to ``path``, atomically (a killed run leaves no half file).

    ``codec="h264"`` uses PyAV's libx264 (yuv420p, even sizes only, MP4 with the
    index at the front so a truncated copy still decodes up to the cut), at
    constant rate factor ``crf`` when given (0-51; x264's default 23, higher is
    smaller and blockier); any other value is a FourCC for ``cv2.VideoWriter``
    (``mp4v``, ``MJPG``, ``XVID``).
    """
    path = Path(path)
    if crf is not None and (codec not in PYAV_CODECS or not 0 <= crf <= 51):
        raise ConfigError(f"crf={crf} needs codec h264 and a value in 0-51 (x264's constant rate factor)")
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
            _write_pyav(tmp, first, frames, fps, PYAV_CODECS[codec], path, crf)
        else:
            _write_cv2(tmp, first, frames, fps, codec, path)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _write_pyav(tmp: Path, first: np.ndarray, rest: Iterator[np.ndarray], fps: float, codec: str,
                path: Path, crf: int | None = None) -> None:
    import av

    options = {"movflags": "faststart"} if path.suffix.lower() in (".mp4", ".mov", ".m4v") else {}
    with av.open(str(tmp), mode="w", format=_container_format(path), options=options) as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.height, stream.width = first.shape[:2]
        stream.pix_fmt = "yuv420p"
        if crf is not None:
            stream.options = {"crf": str(int(crf))}
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


def reencode(source: str | os.PathLike[str], target: str | os.PathLike[str], *, scale: float = 1.0,
             crf: int = 23) -> Path:
    """``source`` again as H.264 at ``scale`` of its size and constant rate factor ``crf``: what a platform's
    transcoder does to uploads (a smaller, blockier copy of the same frames, at the same rate)."""
    from deepfake.media.video import FrameReader

    if not 0 < scale <= 1:
        raise ConfigError(f"scale={scale} must lie in (0, 1]")
    with FrameReader(source, n_frames=0, stride=1) as reader:
        frames = [frame for _, frame in reader]
        fps = reader.info.fps or 25.0
    height, width = frames[0].shape[:2]
    size = (max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2))
    small = (cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames)
    return write_video(target, small, fps=fps, codec="h264", crf=crf)


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
