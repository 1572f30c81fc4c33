"""Self-blended pseudo-fakes: a fake made from one real face crop, so a detector can train on reals alone.

The idea is Self-Blended Images (SBI, Shiohara & Yamasaki, CVPR 2022), the
refinement of Face X-ray (Li et al., CVPR 2020): most face manipulations paste
a generated face into a real frame, and what they share is not the generator
but the paste: a boundary where two slightly different images meet (colour,
sharpness, a small misalignment). SBI makes exactly that from one frame: two
copies of the same face, one shifted in colour and resampled or sharpened and
moved a little, blended into the other through a soft face-shaped mask. A
classifier trained on reals against their self-blends learns the boundary, not
one generator's look, and catches manipulations it has never seen.

Our variant. The papers build the mask from 68 or 81 landmarks; MTCNN, the
kit's detector, gives five (eyes, nose, mouth corners). :func:`face_hull`
extrapolates a face outline from them with the proportions of an average face:
jaw and chin from the eye-to-mouth distance, cheeks from the eye distance, and
optionally a forehead. Random shape variants (with or without forehead,
narrower, wider) stand in for the papers' random hull types. Everything else
follows the published recipe (:class:`SelfBlendConfig` holds its numbers):

1. source and target are two copies of the same crop;
2. the source alone gets a colour shift (RGB, hue-saturation-value, brightness
   and contrast) and either a down-up resampling (x2 or x4) or a sharpening;
3. the source and the mask move by one small random affine (about +-3 % in x,
   +-1.5 % in y, scale 0.95-1.05) and the mask gets an elastic deformation;
4. the mask is blurred twice with random kernels (the first blur, cut at 1,
   shrinks it; the second softens its edge) and scaled by a blend ratio drawn
   from {0.25, 0.5, 0.75, 1, 1, 1};
5. output = mask x source + (1 - mask) x target.

Everything is drawn from the ``numpy.random.Generator`` passed in, so a
pseudo-fake is a pure function of the crop, its landmarks and the seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from deepfake.core.errors import ConfigError, DataError, InvalidInputError

N_LANDMARKS = 5                      # MTCNN: left eye, right eye, nose, left and right mouth corner (image order)
REEXTRACT_HINT = ("the faces table has no landmarks (it was extracted by an older kit, or with a detector "
                  "that gives none); self-blending builds its masks from them: re-run face extraction with "
                  "detector='mtcnn' (02_extract_faces) into a new output folder")


# The average face in units of the face's own geometry: u across (eye distance), v down (eye-to-mouth
# distance), origin between the eyes. Read off the mean 68-point face of the iBUG 300-W annotations.
JAW_HALF_WIDTH = 1.15                # eye distances from the midline to the face contour at eye level
CHIN_DEPTH = 1.75                    # eye-to-mouth distances from the eye line down to the chin
BROW_HEIGHT = 0.4                    # eye-to-mouth distances from the eye line up to the brows
FOREHEAD_HEIGHT = 0.9                # eye-to-mouth distances from the brows up to the hairline
HULL_POINTS = 24                     # points on each arc of the outline


@dataclass(frozen=True)
class SelfBlendConfig:
    """The numbers of the recipe; defaults are the published ones, scaled to the crop where they are pixels."""

    rgb_shift: float = 20.0                    # per-channel shift, 0-255 levels, applied with p_rgb
    p_rgb: float = 0.3                         # probability of the RGB shift
    hsv_shift: float = 0.3                     # hue (units of 2 degrees), saturation and value (levels of 255) shift
    brightness: float = 0.1                    # brightness change, fraction of 255
    contrast: float = 0.1                      # contrast change, fraction
    downscale_factors: tuple[int, ...] = (2, 4)  # down-up resampling factors (else a sharpen)
    p_downscale: float = 0.5                   # resampling instead of sharpening
    sharpen_alpha: tuple[float, float] = (0.2, 0.5)  # blend of the sharpened image
    shift_x: float = 0.03                      # affine translation, fraction of the width
    shift_y: float = 0.015                     # affine translation, fraction of the height
    scale: tuple[float, float] = (0.95, 1 / 0.95)  # affine scale range
    elastic_alpha: float = 50.0 / 380.0        # elastic displacement scale, per pixel of crop side (SBI: 50 at 380 px)
    elastic_sigma: float = 7.0 / 380.0         # elastic smoothness, per pixel of crop side (SBI: 7 at 380 px)
    blur_kernels: tuple[int, int] = (5, 26)    # odd Gaussian kernel range at 256 px, scaled to the crop
    blend_ratios: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)  # mask strength, drawn uniformly
    p_forehead: float = 0.5                    # hull with a forehead (else brows are its top)
    hull_width: tuple[float, ...] = (0.85, 1.0, 1.0, 1.15)  # hull width variants: narrower, average, wider

    def __post_init__(self) -> None:
        for name in ("p_rgb", "p_downscale", "p_forehead"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"SelfBlendConfig {name}={value!r} is not a probability in [0, 1]")
        if not self.blend_ratios or not all(0 < r <= 1 for r in self.blend_ratios):
            raise ConfigError(f"SelfBlendConfig blend_ratios={self.blend_ratios!r} must be values in (0, 1]")
        if not self.downscale_factors or min(self.downscale_factors) < 2:
            raise ConfigError(f"SelfBlendConfig downscale_factors={self.downscale_factors!r} must be >= 2")


@dataclass(frozen=True)
class SelfBlend:
    image: np.ndarray      # the pseudo-fake, RGB uint8, the crop's shape
    mask: np.ndarray       # the blend mask actually used, float32 in [0, 1] (H x W)


def face_hull(landmarks: np.ndarray, *, forehead: bool = True, width: float = 1.0) -> np.ndarray:
    """A face outline ``(M, 2)`` extrapolated from five landmarks (eyes, nose, mouth corners).

    ``forehead`` adds the forehead up to an average hairline; ``width`` scales the face across.
    """
    pts = check_landmarks(landmarks)
    eyes = (pts[0] + pts[1]) / 2
    mouth = (pts[3] + pts[4]) / 2
    down = mouth - eyes
    length = float(np.linalg.norm(down))
    eye_dist = float(np.linalg.norm(pts[1] - pts[0]))
    if length < 1e-3 or eye_dist < 1e-3:
        raise DataError(f"landmarks {pts.round(1).tolist()} are degenerate: the eyes or the mouth coincide")
    down = down / length
    across = np.array([-down[1], down[0]])          # from the left eye towards the right one
    if np.dot(across, pts[1] - pts[0]) < 0:
        across = -across
    half = JAW_HALF_WIDTH * eye_dist * width
    t = np.linspace(0.0, np.pi, HULL_POINTS)
    # jaw: half an ellipse from one side at eye level, round the chin, to the other side
    jaw = [eyes + half * np.cos(s) * across + CHIN_DEPTH * length * np.sin(s) * down for s in t]
    height = (BROW_HEIGHT + (FOREHEAD_HEIGHT if forehead else 0.0)) * length
    # top: half an ellipse back over the brows (and forehead); sin < 0 on (pi, 2 pi) points up the face
    top = [eyes + half * np.cos(s) * across + height * np.sin(s) * down for s in np.pi + t]
    return np.asarray(jaw + top, dtype=np.float64)


def hull_mask(shape: tuple[int, int], hull: np.ndarray) -> np.ndarray:
    """A float32 H x W mask: 1 inside the convex hull of ``hull``, 0 outside."""
    mask = np.zeros(shape, np.float32)
    cv2.fillConvexPoly(mask, cv2.convexHull(np.round(hull).astype(np.int32)), 1.0)
    return mask


def self_blend(rgb: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator,
               config: SelfBlendConfig | None = None) -> SelfBlend:
    """The pseudo-fake of one real RGB uint8 crop whose five ``landmarks`` are in crop pixels."""
    cfg = config or SelfBlendConfig()
    target = check_crop(rgb)
    h, w = target.shape[:2]
    hull = face_hull(landmarks, forehead=bool(rng.random() < cfg.p_forehead),
                     width=float(rng.choice(cfg.hull_width)))
    mask = hull_mask((h, w), hull)
    source = _resample_or_sharpen(_colour_shift(target, rng, cfg), rng, cfg)
    source, mask = _random_affine(source, mask, rng, cfg)
    mask = _elastic(mask, rng, cfg)
    mask = _blend_mask(mask, rng, cfg) * float(rng.choice(cfg.blend_ratios))
    m = mask[..., None]
    out = m * source.astype(np.float32) + (1.0 - m) * target.astype(np.float32)
    return SelfBlend(np.clip(out + 0.5, 0, 255).astype(np.uint8), mask)


def _colour_shift(rgb: np.ndarray, rng: np.random.Generator, cfg: SelfBlendConfig) -> np.ndarray:
    img = rgb.astype(np.float32)
    if rng.random() < cfg.p_rgb:
        img += rng.uniform(-cfg.rgb_shift, cfg.rgb_shift, 3).astype(np.float32)
    hsv = cv2.cvtColor(np.clip(img, 0, 255) / 255.0, cv2.COLOR_RGB2HSV)   # H in degrees, S and V in [0, 1]
    dh, ds, dv = rng.uniform(-cfg.hsv_shift, cfg.hsv_shift, 3)
    hsv[..., 0] = np.mod(hsv[..., 0] + dh * 2.0, 360.0)
    hsv[..., 1] = np.clip(hsv[..., 1] + ds / 255.0, 0, 1)
    hsv[..., 2] = np.clip(hsv[..., 2] + dv / 255.0, 0, 1)
    img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255.0
    alpha = 1.0 + rng.uniform(-cfg.contrast, cfg.contrast)
    beta = rng.uniform(-cfg.brightness, cfg.brightness) * 255.0
    img = img * alpha + beta
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def _resample_or_sharpen(rgb: np.ndarray, rng: np.random.Generator, cfg: SelfBlendConfig) -> np.ndarray:
    h, w = rgb.shape[:2]
    if rng.random() < cfg.p_downscale:
        factor = int(rng.choice(cfg.downscale_factors))
        small = cv2.resize(rgb, (max(1, w // factor), max(1, h // factor)), interpolation=cv2.INTER_NEAREST)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    alpha = float(rng.uniform(*cfg.sharpen_alpha))
    lightness = float(rng.uniform(0.5, 1.0))
    kernel = np.array([[-1, -1, -1], [-1, 8 + lightness, -1], [-1, -1, -1]], np.float32)
    sharp = cv2.filter2D(rgb.astype(np.float32), -1, kernel)
    out = (1 - alpha) * rgb.astype(np.float32) + alpha * sharp
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _random_affine(source: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
                   cfg: SelfBlendConfig) -> tuple[np.ndarray, np.ndarray]:
    h, w = mask.shape
    scale = float(rng.uniform(*cfg.scale))
    dx = float(rng.uniform(-cfg.shift_x, cfg.shift_x)) * w
    dy = float(rng.uniform(-cfg.shift_y, cfg.shift_y)) * h
    m = cv2.getRotationMatrix2D((w / 2, h / 2), 0.0, scale)
    m[:, 2] += (dx, dy)
    source = cv2.warpAffine(source, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    mask = cv2.warpAffine(mask, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)
    return source, mask


def _elastic(mask: np.ndarray, rng: np.random.Generator, cfg: SelfBlendConfig) -> np.ndarray:
    h, w = mask.shape
    side = max(h, w)
    alpha, sigma = cfg.elastic_alpha * side, max(0.5, cfg.elastic_sigma * side)
    dx = cv2.GaussianBlur(rng.uniform(-1, 1, (h, w)).astype(np.float32), (0, 0), sigma) * alpha
    dy = cv2.GaussianBlur(rng.uniform(-1, 1, (h, w)).astype(np.float32), (0, 0), sigma) * alpha
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(mask, gx + dx, gy + dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _blend_mask(mask: np.ndarray, rng: np.random.Generator, cfg: SelfBlendConfig) -> np.ndarray:
    """Blur, cut at 1 (shrinks the mask), blur again: a soft edge of random width inside the hull."""
    h, w = mask.shape
    per_px = max(h, w) / 256.0
    k1, k2 = (_odd(rng.integers(cfg.blur_kernels[0], cfg.blur_kernels[1]) * per_px) for _ in range(2))
    blurred = cv2.GaussianBlur(mask, (k1, k1), 0)
    top = float(blurred.max())
    if top <= 0:
        return np.zeros_like(mask)
    blurred = blurred / top
    blurred[blurred < 1] = 0
    sigma = float(rng.uniform(5, 46)) * per_px
    blurred = cv2.GaussianBlur(blurred, (k2, k2), sigma)
    top = float(blurred.max())
    return blurred / top if top > 0 else blurred


def _odd(value: float) -> int:
    n = max(3, int(round(float(value))))
    return n if n % 2 else n + 1


def check_crop(rgb: np.ndarray) -> np.ndarray:
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        desc = f"shape {getattr(rgb, 'shape', None)} dtype {getattr(rgb, 'dtype', None)}"
        raise InvalidInputError(f"self-blending expects an H x W x 3 uint8 RGB crop, got {desc}")
    return rgb


def check_landmarks(landmarks: np.ndarray | None) -> np.ndarray:
    if landmarks is None:
        raise DataError(REEXTRACT_HINT)
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.shape != (N_LANDMARKS, 2) or not np.isfinite(pts).all():
        raise DataError(f"self-blending needs the {N_LANDMARKS} MTCNN landmarks of a face as (x, y) pairs; "
                        f"got an array of shape {pts.shape}")
    return pts
