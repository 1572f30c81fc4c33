"""Face manipulations that turn a real clip into a fake one, for the demo dataset.

Each method imitates a family of the public datasets (DFDC, FaceForensics++):
``faceswap`` pastes another person's face, rendered at the low resolution of an
autoencoder and colour-matched in LAB, onto the tracked face; ``reenact``
re-renders the person's own face through a low-resolution, smoothed, slightly
warped pass (NeuralTextures-like); ``face2face`` moves the mouth and brows over
time (an expression transfer) and re-renders the face. All of them work in one
aligned face space given by the five MTCNN landmarks, render at about a third
of the face's resolution with the flatter, paler look of a generator, and blend
back through a feathered ellipse. So the artefacts sit inside the face crop of
every frame, as in the real datasets, and a small detector can learn them.

``blendswap``, ``warp`` and ``lipsync`` are made for ``make quality``'s held-out
set only (the demo never makes them): a Poisson-blended full-resolution swap, a
geometric warp of the face, and a mouth re-rendered to new speech and faded in
without a pasted edge.

Methods are registered by name; ``get_method(name)`` fails with the list of
known names.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from deepfake.core.errors import ConfigError, DataError
from deepfake.core.registry import Registry
from deepfake.demo.tracking import FaceImage, FaceTrack, align, similarity, template

MIN_RENDER = 32              # px: smallest render canvas of a method
MAX_RENDER = 256             # px: largest render canvas of a method
Method = Callable[..., list[np.ndarray]]


@dataclass(frozen=True)
class MethodSpec:
    name: str
    fn: Method
    needs_donor: bool
    summary: str


_METHODS: Registry[MethodSpec] = Registry("manipulation")
available = _METHODS.names
get_method = _METHODS.get


def register(name: str, *, needs_donor: bool = False) -> Callable[[Method], Method]:
    """Register ``fn(frames, track, rng, donor=None) -> frames`` under ``name``."""

    def wrap(fn: Method) -> Method:
        summary = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        _METHODS.add(name, MethodSpec(name, fn, needs_donor, summary))
        return fn

    return wrap


def manipulate(
    name: str,
    frames: Sequence[np.ndarray],
    track: FaceTrack,
    rng: np.random.Generator,
    donor: FaceImage | None = None,
) -> list[np.ndarray]:
    """Apply method ``name`` to RGB ``frames`` whose face is ``track``."""
    spec = get_method(name)
    if len(frames) != len(track.landmarks):
        raise DataError(f"{name}: {len(frames)} frames but a face track of {len(track.landmarks)}")
    if spec.needs_donor and donor is None:
        raise ConfigError(f"manipulation {name!r} needs a donor face; pass donor=FaceImage(...)")
    return spec.fn(list(frames), track, rng, donor=donor)


def render_size(track: FaceTrack, factor: float) -> int:
    """Side of the aligned canvas that renders the face at ``factor`` times its resolution in the clip.

    Relative to the face, so the blur of the upsampled render is the same in every
    face crop, whatever the face's size in the frame.
    """
    eyes = float(np.median(np.linalg.norm(track.landmarks[:, 1] - track.landmarks[:, 0], axis=1)))
    per_eye = float(np.linalg.norm(template(1.0)[1] - template(1.0)[0]))  # canvas sides per eye distance
    return int(np.clip(round(factor * eyes / per_eye), MIN_RENDER, MAX_RENDER))


def ellipse_mask(size: int, centre: tuple[float, float], axes: tuple[float, float], feather: float) -> np.ndarray:
    """A float mask in [0, 1]: an ellipse (fractions of ``size``) softened by a Gaussian of ``feather`` px."""
    mask = np.zeros((size, size), np.float32)
    cv2.ellipse(mask, (round(centre[0] * size), round(centre[1] * size)),
                (round(axes[0] * size), round(axes[1] * size)), 0, 0, 360, 1.0, -1, cv2.LINE_AA)
    if feather > 0:
        mask = cv2.GaussianBlur(mask, (0, 0), feather)
    return mask


def paste(frame: np.ndarray, face: np.ndarray, mask: np.ndarray, to_frame: np.ndarray) -> np.ndarray:
    """Blend an aligned ``face`` back into ``frame`` through ``mask``; upsampling is the render's blur."""
    h, w = frame.shape[:2]
    x0, y0, x1, y1 = _footprint(to_frame, face.shape[0], w, h)
    if x1 <= x0 or y1 <= y0:
        return frame.copy()
    shift = to_frame.copy()
    shift[:, 2] -= (x0, y0)
    size = (x1 - x0, y1 - y0)
    warped = cv2.warpAffine(face, shift, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(mask, shift, size, flags=cv2.INTER_LINEAR, borderValue=0)[..., None]
    out = frame.copy()
    roi = out[y0:y1, x0:x1].astype(np.float32)
    out[y0:y1, x0:x1] = np.clip(roi + alpha * (warped.astype(np.float32) - roi) + 0.5, 0, 255).astype(np.uint8)
    return out


def _footprint(to_frame: np.ndarray, size: int, w: int, h: int) -> tuple[int, int, int, int]:
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], np.float64) @ to_frame.T
    x0, y0 = np.floor(corners.min(0)).astype(int) - 2
    x1, y1 = np.ceil(corners.max(0)).astype(int) + 2
    return max(0, x0), max(0, y0), min(w, x1), min(h, y1)


def match_colour(src: np.ndarray, ref: np.ndarray, mask: np.ndarray, strength: float = 1.0) -> np.ndarray:
    """``src`` moved towards the LAB mean and std of ``ref`` inside ``mask`` (a pasted face matches its skin).

    ``strength`` < 1 leaves part of the donor's own tone, as real swap tools do.
    """
    weight = mask > 0.5
    if weight.sum() < 16:
        return src
    src_lab = cv2.cvtColor(src, cv2.COLOR_RGB2LAB).astype(np.float32)
    ref_lab = cv2.cvtColor(ref, cv2.COLOR_RGB2LAB).astype(np.float32)
    s_mean, s_std = src_lab[weight].mean(0), src_lab[weight].std(0) + 1e-3
    r_mean, r_std = ref_lab[weight].mean(0), ref_lab[weight].std(0) + 1e-3
    matched = (src_lab - s_mean) * np.clip(r_std / s_std, 0.5, 2.0) + r_mean
    out = src_lab + strength * (matched - src_lab)
    return cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)


def _remap(img: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(img, gx - dx.astype(np.float32), gy - dy.astype(np.float32), cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REFLECT_101)


def _bump(size: int, centre: np.ndarray, radius: float) -> np.ndarray:
    """A Gaussian bump on the canvas: how strongly a point near ``centre`` follows a displacement."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    return np.exp(-((x - centre[0]) ** 2 + (y - centre[1]) ** 2) / (2 * radius**2))


# Face region on the aligned canvas (fractions of the canvas side): brows to chin, cheek to cheek.
FACE_CENTRE = (0.5, 0.57)
FACE_AXES = (0.245, 0.31)


@dataclass(frozen=True)
class RenderLook:
    """What a generator's output shares across methods: flatter contrast, paler colour, a slight cast.

    Drawn once per video, so the look is the same in every frame.
    """

    contrast: float      # local contrast kept, < 1: renders lose the skin's fine shading
    saturation: float    # colour kept, < 1: renders come out paler
    tint: np.ndarray     # LAB offset of the render

    @classmethod
    def draw(cls, rng: np.random.Generator, tint: float) -> RenderLook:
        cast = rng.choice([-1.0, 1.0], 3) * rng.uniform(0.5, 1.0, 3) * np.array([1.0, 0.6, 0.6]) * tint
        return cls(float(rng.uniform(0.8, 0.9)), float(rng.uniform(0.78, 0.9)), cast)

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).astype(np.float32)
        light = lab[..., 0]
        base = cv2.GaussianBlur(light, (0, 0), max(1.0, rgb.shape[0] / 24))
        lab[..., 0] = base + self.contrast * (light - base)
        lab[..., 1:] = 128 + self.saturation * (lab[..., 1:] - 128)
        lab += self.tint.astype(np.float32)
        return cv2.cvtColor(np.clip(lab + 0.5, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)


@register("faceswap", needs_donor=True)
def faceswap(frames: list[np.ndarray], track: FaceTrack, rng: np.random.Generator, *,
             donor: FaceImage | None = None) -> list[np.ndarray]:
    """Another person's face, rendered small, colour-matched and feathered onto the tracked face."""
    if donor is None:
        raise ConfigError("faceswap needs a donor face")
    size = render_size(track, rng.uniform(0.25, 0.38))  # px: the autoencoder's output, ~1/3 of the face
    feather = float(rng.uniform(0.025, 0.04)) * size    # px on the canvas: soft mask edge
    axes = (FACE_AXES[0] * rng.uniform(0.95, 1.05), FACE_AXES[1] * rng.uniform(0.95, 1.05))
    strength = float(rng.uniform(0.5, 0.8))            # how much of the skin tone is matched (1 = all)
    look = RenderLook.draw(rng, tint=2.0)
    mask = ellipse_mask(size, FACE_CENTRE, axes, feather)
    donor_face, _ = align(donor.rgb, donor.landmarks, size)
    out = []
    for frame, marks in zip(frames, track.landmarks, strict=True):
        target, to_frame = align(frame, marks, size)
        face = look(match_colour(donor_face, target, mask, strength))
        out.append(paste(frame, face, mask, to_frame))
    return out


@register("reenact")
def reenact(frames: list[np.ndarray], track: FaceTrack, rng: np.random.Generator, *,
            donor: FaceImage | None = None) -> list[np.ndarray]:
    """The person's own face re-rendered: low resolution, smoothed, slightly warped, tinted."""
    size = render_size(track, rng.uniform(0.25, 0.35))  # px: the renderer's output, ~1/3 of the face
    feather = float(rng.uniform(0.012, 0.025)) * size   # px: a narrow edge, visible but subtle
    amplitude = float(rng.uniform(0.6, 1.2))           # px on the canvas: the warp's strength
    period = float(rng.uniform(12, 24))                # frames: how fast the warp drifts
    phase = float(rng.uniform(0, 2 * np.pi))
    look = RenderLook.draw(rng, tint=5.0)
    mask = ellipse_mask(size, FACE_CENTRE, FACE_AXES, feather)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    out = []
    for t, (frame, marks) in enumerate(zip(frames, track.landmarks, strict=True)):
        face, to_frame = align(frame, marks, size)
        face = cv2.bilateralFilter(face, 5, 25, 3)
        drift = 2 * np.pi * t / period + phase
        dx = amplitude * np.sin(2 * np.pi * 1.5 * yy + drift)
        dy = amplitude * 0.7 * np.cos(2 * np.pi * 1.2 * xx + drift)
        face = look(_remap(face, dx, dy))
        out.append(paste(frame, face, mask, to_frame))
    return out


@register("face2face")
def face2face(frames: list[np.ndarray], track: FaceTrack, rng: np.random.Generator, *,
              donor: FaceImage | None = None) -> list[np.ndarray]:
    """A transferred expression: mouth and brows moved over time, the face re-rendered."""
    size = render_size(track, rng.uniform(0.28, 0.4))  # px: the render of the face, ~1/3 of it
    feather = float(rng.uniform(0.015, 0.03)) * size
    period = float(rng.uniform(14, 30))                # frames: one cycle of the puppeteer's expression
    phase = float(rng.uniform(0, 2 * np.pi))
    smile = float(rng.uniform(0.035, 0.055)) * size    # px on the canvas: mouth corners move up/out
    jaw = float(rng.uniform(0.03, 0.05)) * size        # px: lower lip and chin move down
    brow = float(rng.uniform(0.0, 0.02)) * size        # px: brows rise
    look = RenderLook.draw(rng, tint=4.0)
    pts = template(size)
    left, right = pts[3], pts[4]
    lip = (left + right) / 2 + np.array([0, 0.05 * size])
    brows = pts[:2] - np.array([0, 0.1 * size])
    radius = 0.09 * size
    w_left, w_right, w_lip = (_bump(size, c, radius) for c in (left, right, lip))
    w_brow = _bump(size, brows[0], radius * 1.3) + _bump(size, brows[1], radius * 1.3)
    mask = ellipse_mask(size, FACE_CENTRE, FACE_AXES, feather)
    out = []
    for t, (frame, marks) in enumerate(zip(frames, track.landmarks, strict=True)):
        face, to_frame = align(frame, marks, size)
        e = 0.5 + 0.5 * np.sin(2 * np.pi * t / period + phase)
        dx = e * smile * (w_right - w_left)
        dy = e * (-0.5 * smile * (w_left + w_right) + jaw * w_lip - brow * w_brow)
        face = look(_remap(face, dx, dy))
        out.append(paste(frame, face, mask, to_frame))
    return out


@register("blendswap", needs_donor=True)
def blendswap(frames: list[np.ndarray], track: FaceTrack, rng: np.random.Generator, *,
              donor: FaceImage | None = None) -> list[np.ndarray]:
    """Another person's face at full resolution, blended in by Poisson editing (no render artefacts)."""
    if donor is None:
        raise ConfigError("blendswap needs a donor face")
    shrink = float(rng.uniform(0.88, 0.96))             # of the face ellipse: the cloned region
    out = []
    for frame, marks in zip(frames, track.landmarks, strict=True):
        h, w = frame.shape[:2]
        to_frame = similarity(donor.landmarks, marks)
        warped = cv2.warpAffine(donor.rgb, to_frame, (w, h), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REFLECT_101)
        size = 256
        _canvas, canvas_to_frame = align(frame, marks, size)
        axes = (FACE_AXES[0] * shrink, FACE_AXES[1] * shrink)
        mask = cv2.warpAffine((ellipse_mask(size, FACE_CENTRE, axes, 0) > 0.5).astype(np.uint8) * 255,
                              canvas_to_frame, (w, h), flags=cv2.INTER_NEAREST)
        ys, xs = np.nonzero(mask)
        if len(xs) == 0 or xs.min() < 1 or ys.min() < 1 or xs.max() >= w - 1 or ys.max() >= h - 1:
            out.append(frame.copy())                     # the face touches the border: leave the frame as it is
            continue
        centre = (int((xs.min() + xs.max() + 1) // 2), int((ys.min() + ys.max() + 1) // 2))
        cloned = cv2.seamlessClone(cv2.cvtColor(warped, cv2.COLOR_RGB2BGR), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR),
                                   mask, centre, cv2.NORMAL_CLONE)
        out.append(cv2.cvtColor(cloned, cv2.COLOR_BGR2RGB))
    return out


@register("warp")
def warp(frames: list[np.ndarray], track: FaceTrack, rng: np.random.Generator, *,
         donor: FaceImage | None = None) -> list[np.ndarray]:
    """A geometric warp of the face region (a beauty filter): slimmer jaw, larger eyes, no colour change."""
    slim = float(rng.uniform(0.06, 0.1))               # of the eye distance: how far the jaw moves in
    eyes_gain = float(rng.uniform(0.12, 0.2))          # radial magnification at the eye centres
    out = []
    for frame, marks in zip(frames, track.landmarks, strict=True):
        h, w = frame.shape[:2]
        eye_dist = float(np.linalg.norm(marks[1] - marks[0]))
        gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        dx = np.zeros((h, w), np.float32)               # where each output pixel samples the frame, relative
        dy = np.zeros((h, w), np.float32)
        for eye in marks[:2]:                          # magnify around each eye: sample closer to its centre
            r = 0.45 * eye_dist
            weight = np.exp(-((gx - eye[0]) ** 2 + (gy - eye[1]) ** 2) / (2 * r**2)) * eyes_gain
            dx -= weight * (gx - eye[0])
            dy -= weight * (gy - eye[1])
        mid = (marks[3] + marks[4]) / 2
        for side in (-1.0, 1.0):                       # pull each cheek towards the midline: sample further out
            cheek = mid + np.array([side * 0.9 * eye_dist, -0.1 * eye_dist])
            weight = np.exp(-((gx - cheek[0]) ** 2 + (gy - cheek[1]) ** 2) / (2 * (0.45 * eye_dist) ** 2))
            dx += weight * side * slim * eye_dist
        warped = cv2.remap(frame, gx + dx, gy + dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        out.append(warped)
    return out


@register("lipsync")
def lipsync(frames: list[np.ndarray], track: FaceTrack, rng: np.random.Generator, *,
            donor: FaceImage | None = None) -> list[np.ndarray]:
    """A lip-sync re-render (Wav2Lip-like): the mouth opens and closes to new speech, re-rendered softer,
    faded into the face with no pasted edge (neither a mask boundary nor a face-wide change)."""
    jaw = float(rng.uniform(0.12, 0.2))                # of the eye distance: how far the lower lip drops
    stretch = float(rng.uniform(0.04, 0.08))           # of the eye distance: mouth corners move out
    period = float(rng.uniform(6, 12))                 # frames per syllable
    phase = float(rng.uniform(0, 2 * np.pi))
    soften = float(rng.uniform(0.5, 0.9))              # how much of the render's softness reaches the mouth
    out = []
    for t, (frame, marks) in enumerate(zip(frames, track.landmarks, strict=True)):
        h, w = frame.shape[:2]
        eye_dist = float(np.linalg.norm(marks[1] - marks[0]))
        mouth = (marks[3] + marks[4]) / 2
        r = 0.55 * eye_dist                            # the mouth region's radius
        x0, y0 = (int(max(0, c - 3 * r)) for c in mouth)
        x1, y1 = int(min(w, mouth[0] + 3 * r)), int(min(h, mouth[1] + 3 * r))
        if x1 - x0 < 8 or y1 - y0 < 8:
            out.append(frame.copy())
            continue
        gx, gy = np.meshgrid(np.arange(x0, x1, dtype=np.float32), np.arange(y0, y1, dtype=np.float32))
        weight = np.exp(-((gx - mouth[0]) ** 2 + (gy - mouth[1]) ** 2) / (2 * r * r)).astype(np.float32)
        open_ = 0.5 + 0.5 * np.sin(2 * np.pi * t / period + phase)
        below = np.clip((gy - mouth[1]) / r + 0.3, 0, 1)       # the lower lip and chin move, not the nose
        dy = -open_ * jaw * eye_dist * weight * below           # sample from above: the lower lip drops
        dx = -open_ * stretch * eye_dist * weight * np.tanh((gx - mouth[0]) / r)
        roi = frame[y0:y1, x0:x1]
        moved = cv2.remap(roi, (gx - x0 + dx).astype(np.float32), (gy - y0 + dy).astype(np.float32), cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT_101)
        small = cv2.resize(moved, (max(2, (x1 - x0) // 3), max(2, (y1 - y0) // 3)), interpolation=cv2.INTER_AREA)
        render = cv2.resize(small, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)   # the render's softness
        a = (soften * weight)[..., None]
        region = a * render.astype(np.float32) + (1 - a) * moved.astype(np.float32)
        result = frame.copy()
        result[y0:y1, x0:x1] = np.clip(region + 0.5, 0, 255).astype(np.uint8)
        out.append(result)
    return out
