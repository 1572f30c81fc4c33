"""Pseudo-fakes made from real faces alone: the families a detector trains on, and their mix.

A self-blend (:mod:`deepfake.data.selfblend`, SBI) teaches the model the
boundary a pasted face leaves. Manipulations without such a boundary (a
geometric warp, a face re-rendered at another resolution and warped back) are
barely seen by it, so a second family covers them:

- ``sbi``: the self-blend of :mod:`deepfake.data.selfblend` (colour shift,
  resampling or sharpening, a shifted, elastically deformed, blurred face mask);
- ``fwa``: face warping artefacts (FWA, Li & Lyu, CVPR-W 2019): the face region
  is shrunk to the low resolution a generator renders at, blurred, mapped back
  with a small random affine and pasted into the crop, so its resolution no
  longer matches its surroundings (no colour change: the mismatch is in the
  sharpness and geometry only);
- ``warp``: local geometric warps: a few smooth displacement bumps inside the
  face (magnifying, shrinking or shifting a region), faded to zero at the face
  outline so no seam is left; the resampling softens what it moves, part of
  the time at a reduced resolution.

``pseudo_fakes`` names one family or a weighted mix, e.g. ``sbi`` or
``sbi:0.5,warp:0.5`` (:func:`parse_mix`); each training item draws its family
from the mix with its own seeded generator, so a pseudo-fake is a pure function
of the crop, its landmarks and the seed. Families are registered by name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import cv2
import numpy as np

from deepfake.core.errors import ConfigError
from deepfake.core.registry import Registry
from deepfake.data.selfblend import check_crop, check_landmarks, face_hull, hull_mask, self_blend

Synthesis = Callable[[np.ndarray, np.ndarray, np.random.Generator], "PseudoFake"]


@dataclass(frozen=True)
class PseudoFake:
    image: np.ndarray      # the pseudo-fake, RGB uint8, the crop's shape
    mask: np.ndarray       # float32 H x W in [0, 1]: where the crop was changed, and how strongly
    family: str


_FAMILIES: Registry[Synthesis] = Registry("pseudo-fake family")
register = _FAMILIES.register
families = _FAMILIES.names
get_family = _FAMILIES.get


# The default of train.pseudo_fakes, chosen by make quality's held-out set (README): self-blends and local warps
# half and half caught unseen manipulations best (AUC 0.84 against 0.75 for self-blends alone).
DEFAULT_MIX = "sbi:0.5,warp:0.5"


def parse_mix(text: str) -> dict[str, float]:
    """``"sbi"`` -> ``{"sbi": 1.0}``; ``"sbi:0.5,warp:0.5"`` -> the weights normalised to sum to 1."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"pseudo_fakes={text!r} must name a family or a mix such as 'sbi:0.5,warp:0.5'; "
                          f"families: {', '.join(families())}")
    weights: dict[str, float] = {}
    for part in text.split(","):
        name, sep, value = part.strip().partition(":")
        name = name.strip()
        get_family(name)
        try:
            weight = float(value) if sep else 1.0
        except ValueError:
            raise ConfigError(f"pseudo_fakes={text!r}: weight {value!r} of {name!r} is not a number") from None
        if not (weight > 0 and np.isfinite(weight)):
            raise ConfigError(f"pseudo_fakes={text!r}: the weight of {name!r} must be a positive number")
        if name in weights:
            raise ConfigError(f"pseudo_fakes={text!r} names {name!r} twice")
        weights[name] = weight
    total = sum(weights.values())
    return {name: w / total for name, w in weights.items()}


def mix_name(weights: Mapping[str, float]) -> str:
    """The canonical text of a mix (what the artifact records): ``sbi`` or ``sbi:0.5,warp:0.5``."""
    if len(weights) == 1:
        return next(iter(weights))
    return ",".join(f"{name}:{weights[name]:g}" for name in sorted(weights))


class PseudoFakeMix:
    """Draws a family from the weights, then that family's pseudo-fake of a crop."""

    def __init__(self, weights: Mapping[str, float] | str = DEFAULT_MIX) -> None:
        self.weights = parse_mix(weights) if isinstance(weights, str) else parse_mix(mix_name(weights))
        self.names = sorted(self.weights)
        self.p = np.array([self.weights[n] for n in self.names])

    def __call__(self, rgb: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator,
                 family: str | None = None) -> PseudoFake:
        name = family or (self.names[0] if len(self.names) == 1 else self.names[int(rng.choice(len(self.names),
                                                                                              p=self.p))])
        return get_family(name)(rgb, landmarks, rng)

    def __repr__(self) -> str:
        return f"PseudoFakeMix({mix_name(self.weights)!r})"


@register("sbi")
def sbi(rgb: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator) -> PseudoFake:
    """The self-blend (SBI): a colour-shifted, resampled, shifted copy of the face blended into itself."""
    blend = self_blend(rgb, landmarks, rng)
    return PseudoFake(blend.image, blend.mask, "sbi")


# FWA: the face is rendered at a generator's resolution (the paper draws 64-128 px for the face) and
# warped back. Here as fractions of the face's own size, so the mismatch is the same at any crop size.
FWA_RENDER_FRACTION = (0.35, 0.8)    # the face's side after the shrink, as a fraction of its side in the crop
FWA_BLUR_SIGMA = (0.0, 1.0)          # px at the shrunk size: the generator's smoothing
FWA_ROTATION = 5.0                   # degrees: the affine that maps the render back is a little off
FWA_SCALE = (0.96, 1.04)
FWA_SHIFT = 0.02                     # fraction of the face size
FWA_FEATHER = (0.02, 0.08)           # mask edge blur, fraction of the crop side


@register("fwa")
def fwa(rgb: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator) -> PseudoFake:
    """Face warping artefacts: the face region shrunk, blurred, warped back with a small affine and pasted."""
    target = check_crop(rgb)
    pts = check_landmarks(landmarks)
    h, w = target.shape[:2]
    hull = face_hull(pts, forehead=bool(rng.random() < 0.5), width=float(rng.choice((0.9, 1.0, 1.1))))
    x0, y0 = np.floor(hull.min(0)).astype(int)
    x1, y1 = np.ceil(hull.max(0)).astype(int)
    face_side = float(max(x1 - x0, y1 - y0, 8))
    frac = float(rng.uniform(*FWA_RENDER_FRACTION))
    small_side = max(8, int(round(face_side * frac)))
    shrink = small_side / face_side
    small = cv2.resize(target, (max(4, int(round(w * shrink))), max(4, int(round(h * shrink)))),
                       interpolation=cv2.INTER_AREA)
    sigma = float(rng.uniform(*FWA_BLUR_SIGMA))
    if sigma > 0.3:
        small = cv2.GaussianBlur(small, (0, 0), sigma)
    centre = ((x0 + x1) / 2.0, (y0 + y1) / 2.0)
    m = cv2.getRotationMatrix2D(centre, float(rng.uniform(-FWA_ROTATION, FWA_ROTATION)),
                                float(rng.uniform(*FWA_SCALE)))
    m[:, 2] += rng.uniform(-FWA_SHIFT, FWA_SHIFT, 2) * face_side
    up = cv2.resize(small, (w, h), interpolation=int(rng.choice([cv2.INTER_LINEAR, cv2.INTER_CUBIC])))
    source = cv2.warpAffine(up, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    mask = hull_mask((h, w), hull)
    mask = cv2.GaussianBlur(mask, (0, 0), max(0.5, float(rng.uniform(*FWA_FEATHER)) * max(h, w)))
    mask = mask / max(float(mask.max()), 1e-6)
    out = mask[..., None] * source.astype(np.float32) + (1.0 - mask[..., None]) * target.astype(np.float32)
    return PseudoFake(np.clip(out + 0.5, 0, 255).astype(np.uint8), mask.astype(np.float32), "fwa")


# Local warps: a few Gaussian bumps of displacement inside the face, in units of the eye distance.
WARP_BUMPS = (1, 4)                  # bumps per face (inclusive range)
WARP_RADIUS = (0.25, 0.7)            # bump radius, eye distances
WARP_GAIN = (0.08, 0.3)              # radial magnification (+) or shrink (-) at a bump's centre
WARP_SHIFT = (0.04, 0.15)            # translation of a bump, eye distances
WARP_P_RESAMPLE = 0.5                # warp a downscaled copy and upscale it (a re-rendered face's softness)
WARP_RESAMPLE = (1.5, 3.0)           # its downscale factor
WARP_FADE = 0.5                      # eye distances over which the warp fades in from the face outline


@register("warp")
def warp(rgb: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator) -> PseudoFake:
    """Local geometric warps inside the face, faded to nothing at its outline: no blending boundary."""
    target = check_crop(rgb)
    pts = check_landmarks(landmarks)
    h, w = target.shape[:2]
    eye = float(np.linalg.norm(pts[1] - pts[0]))
    hull = face_hull(pts, forehead=bool(rng.random() < 0.5), width=1.0)
    inside = (hull_mask((h, w), hull) > 0).astype(np.uint8)
    depth = cv2.distanceTransform(inside, cv2.DIST_L2, 5) / max(1.0, WARP_FADE * eye)
    t = np.clip(depth, 0.0, 1.0)
    fade = (t * t * (3.0 - 2.0 * t)).astype(np.float32)  # smoothstep: 0 on the outline, 1 well inside
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    dx = np.zeros((h, w), np.float32)
    dy = np.zeros((h, w), np.float32)
    lo, hi = np.floor(hull.min(0)), np.ceil(hull.max(0))
    for _ in range(int(rng.integers(WARP_BUMPS[0], WARP_BUMPS[1] + 1))):
        # centres on the landmarks (eyes, nose, mouth) half the time, anywhere in the face otherwise
        centre = (pts[int(rng.integers(len(pts)))] + rng.normal(0, 0.15 * eye, 2) if rng.random() < 0.5
                  else rng.uniform(lo, hi))
        r = float(rng.uniform(*WARP_RADIUS)) * eye
        weight = np.exp(-((gx - centre[0]) ** 2 + (gy - centre[1]) ** 2) / (2 * r * r)).astype(np.float32)
        if rng.random() < 0.6:                           # magnify (sample nearer the centre) or shrink
            gain = float(rng.uniform(*WARP_GAIN)) * float(rng.choice([-1.0, 1.0]))
            dx -= gain * weight * (gx - centre[0])
            dy -= gain * weight * (gy - centre[1])
        else:                                            # move the region
            angle = float(rng.uniform(0, 2 * np.pi))
            shift = float(rng.uniform(*WARP_SHIFT)) * eye
            dx += shift * np.cos(angle) * weight
            dy += shift * np.sin(angle) * weight
    dx *= fade
    dy *= fade
    if rng.random() < WARP_P_RESAMPLE:                   # the warp of a softer, re-rendered copy
        f = float(rng.uniform(*WARP_RESAMPLE))
        sw, sh = max(4, int(round(w / f))), max(4, int(round(h / f)))
        small = cv2.resize(target, (sw, sh), interpolation=cv2.INTER_AREA)
        sx, sy = sw / w, sh / h
        moved = cv2.remap(small, (gx + dx) * sx, (gy + dy) * sy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        soft = fade[..., None]                          # the softness fades in with the warp: no seam
        out = soft * moved.astype(np.float32) + (1.0 - soft) * target.astype(np.float32)
        image = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    else:
        image = cv2.remap(target, gx + dx, gy + dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    magnitude = np.sqrt(dx * dx + dy * dy)
    mask = np.clip(magnitude / max(float(magnitude.max()), 1e-6), 0, 1).astype(np.float32)
    return PseudoFake(image, mask, "warp")
