"""Probing videos and sampling frames in one sequential decoding pass.

Seeking (``CAP_PROP_POS_FRAMES``) re-decodes from the previous keyframe on every
call, which costs 5-8x a single pass on long-GOP H.264. So sampling walks the
stream once: ``grab()`` on every frame (demux and decode, no colour conversion)
and ``retrieve()`` (conversion to an image) only at the wanted indices.

Frame counts from containers lie (``CAP_PROP_FRAME_COUNT`` is an estimate for
many formats, and a truncated file still announces its full length). Sampling
therefore trusts the end of the stream, not the header:

- The stream ending early is not an error: the wanted frames past the real end
  are left out, :attr:`SampledFrames.truncated` is set and ``info.frame_count``
  is the number of frames that actually decoded. Frames are never padded or
  re-sampled, so an index always names a real, decoded frame.
- If not one wanted frame decoded before the end, the file is too damaged to
  stand for the video and :class:`~deepfake.core.errors.VideoDecodeError` is raised.
- An unknown count (0 or negative) costs one extra grab-only pass to count.

Frames come out as RGB ``uint8`` arrays; BGR exists only inside this module.
"""

from __future__ import annotations

import os
import queue
import re
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from deepfake.core.errors import ConfigError, VideoDecodeError

# Enough decoded frames buffered ahead of the consumer to hide decode jitter,
# few enough that 1080p frames (6 MB each) stay cheap.
DEFAULT_PREFETCH = 4


@dataclass(frozen=True)
class VideoInfo:
    path: str
    frame_count: int        # frames; from the container header in probe(), as decoded after sampling
    fps: float              # frames per second; 0.0 when the container does not say
    width: int              # pixels
    height: int             # pixels
    duration_s: float       # seconds; frame_count / fps, 0.0 when fps is unknown
    codec: str = ""         # the stream's FourCC as FFmpeg reports it (h264, hevc, mp4v, ...); "" when unknown
    size_bytes: int = 0     # the file's size


@dataclass(frozen=True)
class SampledFrames:
    frames: list[np.ndarray]    # RGB uint8, H x W x 3, one per index
    indices: list[int]          # frame numbers (0-based) of ``frames``, increasing
    info: VideoInfo
    truncated: bool = False     # the stream ended before the frame count its header announced


def open_capture(path: str | os.PathLike[str], threads: int | None = None) -> cv2.VideoCapture:
    """Open ``path`` with OpenCV's FFmpeg backend only (not the image-sequence one).

    ``threads``: FFmpeg decoding threads (None: OpenCV's default, about one per core of the
    machine, whatever the process may use). The decoded frames are the same either way.
    The one place the kit builds a ``cv2.VideoCapture``; tests wrap it to count calls.
    """
    if threads is None:
        return cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    return cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, int(threads)])


def frame_indices(frame_count: int, n_frames: int = 16, stride: int = 0) -> list[int]:
    """Which frames to sample.

    ``stride == 0``: ``n_frames`` evenly spaced frames, each at the middle of one
    of ``n_frames`` equal segments (the last frames, where fade-outs are and
    where a lying frame count hurts, are never the target). ``n_frames >=
    frame_count`` gives every frame.
    ``stride > 0``: every ``stride``-th frame from frame 0, at most ``n_frames`` of
    them (``n_frames == 0``: no cap).
    """
    if frame_count < 0 or n_frames < 0 or stride < 0:
        raise ConfigError(
            f"frame_indices needs non-negative values; got frame_count={frame_count}, "
            f"n_frames={n_frames}, stride={stride}"
        )
    if stride > 0:
        picks = range(0, frame_count, stride)
        return list(picks[:n_frames] if n_frames else picks)
    if n_frames == 0:
        raise ConfigError("n_frames=0 (no cap) needs stride > 0; set n_frames or stride")
    if n_frames >= frame_count:
        return list(range(frame_count))
    return [int((i + 0.5) * frame_count / n_frames) for i in range(n_frames)]


def probe(path: str | os.PathLike[str]) -> VideoInfo:
    """Read size, rate and length from the container header (no frame is decoded)."""
    cap = _open(path)
    try:
        return _info(path, cap)
    finally:
        cap.release()


class FrameReader:
    """Iterate ``(frame_idx, rgb)`` over the sampled frames of one video, in one pass.

    With ``prefetch > 0`` a thread decodes ahead into a bounded queue, so decoding
    overlaps whatever the consumer does with each frame (OpenCV releases the GIL
    while it decodes). ``decode_threads`` sets FFmpeg's own threads (None: its
    default), so parallel workers can each keep to their share of the cores.
    After the iteration ends, :attr:`info` holds the decoded frame count when
    the stream was read to its end, :attr:`truncated` says whether it ended
    early and :attr:`indices` lists the frames yielded.
    The file is opened (and fails fast) in the constructor.
    """

    def __init__(self, path: str | os.PathLike[str], n_frames: int = 16, stride: int = 0,
                 *, prefetch: int = 0, decode_threads: int | None = None, start: int = 0) -> None:
        frame_indices(0, n_frames, stride)  # validates the arguments
        if start < 0 or (start and not stride):
            raise ConfigError(f"start={start!r} must be >= 0, and only goes with a stride (every stride-th "
                              "frame from frame start)")
        self.start = int(start)
        if decode_threads is not None and decode_threads < 1:
            raise ConfigError(f"decode_threads must be None (FFmpeg's choice) or >= 1; got {decode_threads!r}")
        self.path = str(path)
        self.n_frames = n_frames
        self.stride = stride
        self.prefetch = prefetch
        self.decode_threads = decode_threads
        self.indices: list[int] = []
        self.truncated = False
        self._cap: cv2.VideoCapture | None = _open(path, decode_threads)
        try:
            self.info = _info(path, self._cap)
        except VideoDecodeError:
            self.close()
            raise

    def close(self) -> None:
        """Release the file early (iterating to the end releases it too)."""
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        if self._cap is None:
            raise RuntimeError(f"this FrameReader of {self.path} was already read or closed; make a new one")
        return self._prefetched() if self.prefetch > 0 else self._decode()

    def result(self) -> SampledFrames:
        """Decode every sampled frame into a :class:`SampledFrames`."""
        pairs = list(self)
        return SampledFrames([f for _, f in pairs], [i for i, _ in pairs], self.info, self.truncated)

    def _decode(self, stop: threading.Event | None = None) -> Iterator[tuple[int, np.ndarray]]:
        cap, self._cap = self._cap, None
        if cap is None:
            raise RuntimeError(f"this FrameReader of {self.path} was already read or closed; make a new one")
        try:
            announced = self.info.frame_count
            if self.stride == 0 and announced <= 0:
                announced = _count_and_release(cap, self.path)
                self.info = replace(self.info, frame_count=announced, duration_s=_duration(announced, self.info.fps))
                cap = _open(self.path, self.decode_threads)
            # even spacing: a fixed set of indices; stride: every stride-th frame, whatever the count
            wanted = set(frame_indices(announced, self.n_frames, 0)) if self.stride == 0 else None
            last = max(wanted, default=-1) if wanted is not None else None
            decoded = 0  # frames grabbed so far == index of the next frame
            at_end = False
            while True:
                if stop is not None and stop.is_set():
                    return
                if last is not None and decoded > last:
                    break
                if wanted is None and self.n_frames and len(self.indices) >= self.n_frames:
                    break
                if not _grab(cap, self.path):
                    at_end = True
                    break
                idx = decoded
                decoded += 1
                skip = (idx not in wanted if wanted is not None
                        else idx < self.start or (idx - self.start) % self.stride != 0)
                if skip:
                    continue
                ok, bgr = cap.retrieve()
                if not ok or bgr is None:
                    continue  # a damaged frame: leave it out and keep going
                self.indices.append(idx)
                yield idx, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        finally:
            cap.release()
        if at_end:
            self.truncated = 0 < decoded < self.info.frame_count
            self.info = replace(self.info, frame_count=decoded, duration_s=_duration(decoded, self.info.fps))
        if decoded == 0:
            raise VideoDecodeError(self.path, "no frame could be decoded (the stream is empty or unreadable)")
        if not self.indices:
            raise VideoDecodeError(
                self.path,
                f"truncated or damaged: only {decoded} of {announced} announced frames decode, "
                "and none of the sampled frames is among them",
            )

    def _prefetched(self) -> Iterator[tuple[int, np.ndarray]]:
        q: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        done = object()

        def produce() -> None:
            try:
                for item in self._decode(stop):
                    while not stop.is_set():
                        try:
                            q.put(item, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                q.put(done)
            except Exception as exc:  # noqa: BLE001 - handed over to the consumer, which re-raises it
                q.put(exc)

        thread = threading.Thread(target=produce, name=f"decode {Path(self.path).name}", daemon=True)
        thread.start()
        try:
            while True:
                item = q.get()
                if item is done:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            while thread.is_alive():  # unblock a producer waiting on a full queue
                try:
                    q.get(timeout=0.05)
                except queue.Empty:
                    pass
            thread.join()


def iter_frames(path: str | os.PathLike[str], n_frames: int = 16, stride: int = 0,
                *, prefetch: int = DEFAULT_PREFETCH, decode_threads: int | None = None) -> FrameReader:
    """A :class:`FrameReader` that decodes ahead in a thread (for decode/detect overlap)."""
    return FrameReader(path, n_frames, stride, prefetch=prefetch, decode_threads=decode_threads)


def read_frames(path: str | os.PathLike[str], start: int, count: int) -> list[np.ndarray]:
    """``count`` consecutive RGB frames from frame ``start`` (fewer when the video ends first)."""
    return FrameReader(path, count, 1, start=start).result().frames


def sample_frames(path: str | os.PathLike[str], n_frames: int = 16, stride: int = 0) -> SampledFrames:
    """Sample RGB frames in one sequential pass; see the module docstring for short streams."""
    return FrameReader(path, n_frames, stride).result()


@contextmanager
def video_bytes_as_file(data: bytes, suffix: str = ".mp4") -> Iterator[Path]:
    """An in-memory video (an HTTP body) as a temporary file, since FFmpeg needs one.

    Decode errors raised inside name the bytes, not the temporary path.
    """
    if not re.fullmatch(r"\.[A-Za-z0-9]{1,8}", suffix):
        raise ConfigError(f"suffix {suffix!r} is not a file extension like '.mp4'")
    label = f"<{len(data)} bytes of {suffix} video>"
    if not data:
        raise VideoDecodeError(label, "the video is empty (0 bytes)")
    fd, tmp = tempfile.mkstemp(prefix="deepfake-", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        yield Path(tmp)
    except VideoDecodeError as exc:
        raise VideoDecodeError(label, exc.reason) from None
    finally:
        Path(tmp).unlink(missing_ok=True)


def sample_frames_from_bytes(data: bytes, suffix: str = ".mp4", n_frames: int = 16,
                             stride: int = 0) -> SampledFrames:
    """Sample frames from an in-memory video (an HTTP body)."""
    with video_bytes_as_file(data, suffix) as tmp:
        sampled = sample_frames(tmp, n_frames, stride)
    label = f"<{len(data)} bytes of {suffix} video>"
    return SampledFrames(sampled.frames, sampled.indices, replace(sampled.info, path=label), sampled.truncated)


def _open(path: str | os.PathLike[str], threads: int | None = None) -> cv2.VideoCapture:
    p = Path(path)
    if not p.exists():
        raise VideoDecodeError(path, "file not found")
    if p.is_dir():
        raise VideoDecodeError(path, "is a folder, not a video file")
    if p.stat().st_size == 0:
        raise VideoDecodeError(path, "the file is empty (0 bytes)")
    try:
        cap = open_capture(p) if threads is None else open_capture(p, threads)
    except cv2.error as exc:
        raise VideoDecodeError(path, f"OpenCV failed to open it: {exc}") from exc
    if not cap.isOpened():
        cap.release()
        raise VideoDecodeError(
            path, "not a readable video (not a video, a truncated MP4 without its index, or a codec FFmpeg lacks)"
        )
    return cap


def _count_and_release(cap: cv2.VideoCapture, path: str) -> int:
    """Count frames by grabbing to the end (for containers that do not say)."""
    try:
        n = 0
        while _grab(cap, path):
            n += 1
        return n
    finally:
        cap.release()


def _grab(cap: cv2.VideoCapture, path: str) -> bool:
    try:
        return bool(cap.grab())
    except cv2.error as exc:
        raise VideoDecodeError(path, f"decoding failed: {exc}") from exc


def _info(path: str | os.PathLike[str], cap: cv2.VideoCapture) -> VideoInfo:
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    if not np.isfinite(fps) or fps < 0:
        fps = 0.0
    count = cap.get(cv2.CAP_PROP_FRAME_COUNT)
    count = int(count) if np.isfinite(count) and count > 0 else 0
    width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
    height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    if width <= 0 or height <= 0:
        raise VideoDecodeError(path, f"the stream has no picture size ({width}x{height}); not a video")
    return VideoInfo(str(path), count, fps, width, height, _duration(count, fps), _fourcc(cap), _size(path))


def _fourcc(cap: cv2.VideoCapture) -> str:
    code = cap.get(cv2.CAP_PROP_FOURCC)
    if not np.isfinite(code) or code <= 0:
        return ""
    text = int(code).to_bytes(4, "little").decode("latin-1")
    return "".join(c for c in text if c.isprintable()).strip().lower()


def _size(path: str | os.PathLike[str]) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _duration(frame_count: int, fps: float) -> float:
    return round(frame_count / fps, 3) if fps > 0 else 0.0
