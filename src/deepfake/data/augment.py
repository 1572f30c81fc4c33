"""Training augmentations on RGB uint8 arrays, written with numpy and OpenCV.

No torchvision (it does not import on the CPU torch build this kit pins). Each
operation takes the random numbers it needs from a ``numpy.random.Generator``
passed in, so an augmented crop is a pure function of the crop and the
generator's seed: :class:`deepfake.data.dataset.FaceDataset` seeds one generator per
(seed, epoch, item), which makes training reproducible with any number of
DataLoader workers.

The operations mimic what separates one video of a face from another rather
than what separates a real face from a fake one: mirroring, lighting and white
balance, re-compression and resizing by video platforms, and occlusion.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from deepfake.core.errors import ConfigError, InvalidInputError
from deepfake.media.images import decode_image, encode_image


def hflip(rgb: np.ndarray) -> np.ndarray:
    """Mirror left-right (a face and its mirror image are equally real or fake)."""
    return np.ascontiguousarray(rgb[:, ::-1])


def adjust_brightness(rgb: np.ndarray, factor: float) -> np.ndarray:
    """Scale intensities by ``factor`` (1 keeps the image)."""
    return _to_uint8(rgb.astype(np.float32) * factor)


def adjust_contrast(rgb: np.ndarray, factor: float) -> np.ndarray:
    """Blend with the mean grey level: 0 gives flat grey, 1 keeps the image."""
    img = rgb.astype(np.float32)
    mean = float(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).mean())
    return _to_uint8(mean + factor * (img - mean))


def adjust_saturation(rgb: np.ndarray, factor: float) -> np.ndarray:
    """Blend with the greyscale image: 0 gives grey, 1 keeps the image."""
    img = rgb.astype(np.float32)
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)[..., None]
    return _to_uint8(grey + factor * (img - grey))


def adjust_hue(rgb: np.ndarray, shift: float) -> np.ndarray:
    """Rotate the hue by ``shift`` turns (-0.5..0.5; 0 keeps the image)."""
    if shift == 0:
        return rgb.copy()
    hsv = cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2HSV)  # H in degrees
    hsv[..., 0] = np.mod(hsv[..., 0] + 360.0 * shift, 360.0)
    return _to_uint8(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255.0)


COLOR_OPS = ("brightness", "contrast", "saturation", "hue")   # the colour jitter's operations, by code 0-3


def draw_color_jitter(rng: np.random.Generator, brightness: float = 0.2, contrast: float = 0.2,
                      saturation: float = 0.2, hue: float = 0.02) -> tuple[tuple[str, float], ...]:
    """The colour jitter's operations and values, in the random order they apply."""
    ops = []
    if brightness > 0:
        ops.append(("brightness", float(rng.uniform(1 - brightness, 1 + brightness))))
    if contrast > 0:
        ops.append(("contrast", float(rng.uniform(1 - contrast, 1 + contrast))))
    if saturation > 0:
        ops.append(("saturation", float(rng.uniform(1 - saturation, 1 + saturation))))
    if hue > 0:
        ops.append(("hue", float(rng.uniform(-hue, hue))))
    return tuple(ops[i] for i in rng.permutation(len(ops)))


def apply_color(rgb: np.ndarray, ops: Sequence[tuple[str, float]]) -> np.ndarray:
    """Apply drawn colour operations (:func:`draw_color_jitter`) in their order."""
    fns = {"brightness": adjust_brightness, "contrast": adjust_contrast, "saturation": adjust_saturation,
           "hue": adjust_hue}
    out = rgb
    for name, value in ops:
        out = fns[name](out, value)
    return out if out is not rgb else rgb.copy()


def color_jitter(
    rgb: np.ndarray,
    rng: np.random.Generator,
    brightness: float = 0.2,
    contrast: float = 0.2,
    saturation: float = 0.2,
    hue: float = 0.02,
) -> np.ndarray:
    """Brightness, contrast, saturation (factors in 1 +- value) and hue (+- turns), in random order."""
    return apply_color(rgb, draw_color_jitter(rng, brightness, contrast, saturation, hue))


def jpeg_recompress(rgb: np.ndarray, quality: int) -> np.ndarray:
    """Encode and decode as JPEG at ``quality`` (1-100), as video platforms re-compress uploads."""
    return decode_image(encode_image(rgb, "jpg", quality), "a JPEG re-compressed crop")


def downscale_upscale(rgb: np.ndarray, scale: float) -> np.ndarray:
    """Shrink by ``scale`` (0-1) and resize back: the blur of a low-resolution source."""
    h, w = rgb.shape[:2]
    small = (max(1, round(w * scale)), max(1, round(h * scale)))
    down = cv2.resize(rgb, small, interpolation=cv2.INTER_AREA)
    return cv2.resize(down, (w, h), interpolation=cv2.INTER_LINEAR)


def cutout_square(height: int, width: int, rng: np.random.Generator, fraction: float) -> tuple[int, int, int]:
    """Where a cutout of side ``fraction`` x the short side goes: (y0, x0, side)."""
    side = max(1, round(min(height, width) * fraction))
    y0 = int(rng.integers(0, height - side + 1))
    x0 = int(rng.integers(0, width - side + 1))
    return y0, x0, side


def fill_square(rgb: np.ndarray, square: tuple[int, int, int]) -> np.ndarray:
    """Fill ``square`` (y0, x0, side) with the image's mean colour."""
    y0, x0, side = square
    out = rgb.copy()
    out[y0:y0 + side, x0:x0 + side] = rgb.reshape(-1, rgb.shape[2]).mean(axis=0).round().astype(np.uint8)
    return out


def cutout(rgb: np.ndarray, rng: np.random.Generator, fraction: float = 0.25) -> np.ndarray:
    """Fill a random square of side ``fraction`` x the short side with the image's mean colour.

    Occluding part of the face keeps the model from relying on a single region.
    """
    return fill_square(rgb, cutout_square(rgb.shape[0], rgb.shape[1], rng, fraction))


@dataclass(frozen=True)
class AugmentDraw:
    """The random choices of one :class:`TrainAugment` call: what :meth:`TrainAugment.apply` (CPU) and
    :mod:`deepfake.data.device_augment` (a batch on the training device) apply."""

    flip: bool = False
    color: tuple[tuple[str, float], ...] = ()     # (operation, value) in the order they apply
    downscale: float | None = None                # scale of the downscale-upscale
    jpeg: int | None = None                       # JPEG quality of the re-compression
    cutout: tuple[int, int, int] | None = None    # y0, x0, side of the square filled with the mean colour

    def to_vector(self) -> np.ndarray:
        """A fixed-length float64 vector (DataLoader batches stack them): see :meth:`from_vector`."""
        v = np.zeros(DRAW_VECTOR, dtype=np.float64)
        v[0] = float(self.flip)
        for k, (name, value) in enumerate(self.color):
            v[1 + 2 * k], v[2 + 2 * k] = COLOR_OPS.index(name) + 1, value
        v[9] = self.downscale or 0.0
        v[10] = self.jpeg or 0
        if self.cutout is not None:
            v[11:14] = self.cutout
        return v

    @classmethod
    def from_vector(cls, v: Sequence[float]) -> AugmentDraw:
        color = tuple((COLOR_OPS[int(v[1 + 2 * k]) - 1], float(v[2 + 2 * k])) for k in range(4) if v[1 + 2 * k])
        return cls(bool(v[0]), color, float(v[9]) or None, int(v[10]) or None,
                   (int(v[11]), int(v[12]), int(v[13])) if v[13] else None)


DRAW_VECTOR = 14   # flip, 4 x (colour op code, value), downscale, jpeg quality, cutout y0, x0, side


@dataclass(frozen=True)
class TrainAugment:
    """The training augmentation: each operation applied with its probability, in a fixed order.

    Call it with a crop and a generator: ``TrainAugment()(rgb, np.random.default_rng(0))``.
    The output has the input's shape and dtype (H x W x 3 uint8, RGB).
    """

    p_flip: float = 0.5                                # probability of a horizontal flip
    p_color: float = 0.8                               # probability of colour jitter
    brightness: float = 0.2                            # brightness factor drawn from 1 +- this
    contrast: float = 0.2                              # contrast factor drawn from 1 +- this
    saturation: float = 0.2                            # saturation factor drawn from 1 +- this
    hue: float = 0.02                                  # hue shift drawn from +- this, in turns (0.02 = 7 degrees)
    p_downscale: float = 0.3                           # probability of downscale-upscale
    downscale: tuple[float, float] = (0.4, 0.9)        # scale range of the downscale
    p_jpeg: float = 0.5                                # probability of JPEG re-compression
    jpeg_quality: tuple[int, int] = (40, 95)           # JPEG quality range, inclusive
    p_cutout: float = 0.3                              # probability of one cutout square
    cutout_fraction: tuple[float, float] = (0.1, 0.35)  # cutout side as a fraction of the short side

    def __post_init__(self) -> None:
        for name in ("p_flip", "p_color", "p_downscale", "p_jpeg", "p_cutout"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"TrainAugment {name}={value!r} is not a probability; use a value in [0, 1]")
        for name in ("brightness", "contrast", "saturation"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"TrainAugment {name}={value!r} must be in [0, 1)")
        if not 0.0 <= self.hue <= 0.5:
            raise ConfigError(f"TrainAugment hue={self.hue!r} must be in [0, 0.5] turns")
        _check_range("downscale", self.downscale, 0.0, 1.0, low_open=True)
        _check_range("jpeg_quality", self.jpeg_quality, 1, 100)
        _check_range("cutout_fraction", self.cutout_fraction, 0.0, 1.0, low_open=True)

    def __call__(self, rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        _check_crop(rgb)
        return self.apply(rgb, self.draw(rng, rgb.shape[0], rgb.shape[1]))

    def draw(self, rng: np.random.Generator, height: int, width: int) -> AugmentDraw:
        """The random choices for one crop of ``height`` x ``width`` pixels."""
        flip = bool(rng.random() < self.p_flip)
        color: tuple[tuple[str, float], ...] = ()
        if rng.random() < self.p_color:
            color = draw_color_jitter(rng, self.brightness, self.contrast, self.saturation, self.hue)
        downscale = float(rng.uniform(*self.downscale)) if rng.random() < self.p_downscale else None
        jpeg = None
        if rng.random() < self.p_jpeg:
            jpeg = int(rng.integers(self.jpeg_quality[0], self.jpeg_quality[1] + 1))
        square = None
        if rng.random() < self.p_cutout:
            square = cutout_square(height, width, rng, float(rng.uniform(*self.cutout_fraction)))
        return AugmentDraw(flip, color, downscale, jpeg, square)

    def apply(self, rgb: np.ndarray, draw: AugmentDraw) -> np.ndarray:
        """The crop with the drawn operations applied, in the fixed order (a new array)."""
        _check_crop(rgb)
        out = hflip(rgb) if draw.flip else rgb
        if draw.color:
            out = apply_color(out, draw.color)
        if draw.downscale is not None:
            out = downscale_upscale(out, draw.downscale)
        if draw.jpeg is not None:
            out = jpeg_recompress(out, draw.jpeg)
        if draw.cutout is not None:
            out = fill_square(out, draw.cutout)
        return out if out is not rgb else rgb.copy()


def _check_crop(rgb: np.ndarray) -> None:
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise InvalidInputError(
            f"TrainAugment expects an H x W x 3 uint8 RGB image, got shape {rgb.shape} dtype {rgb.dtype}"
        )


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _check_range(name: str, value: tuple, low: float, high: float, low_open: bool = False) -> None:
    ok = (
        len(value) == 2
        and value[0] <= value[1]
        and (value[0] > low if low_open else value[0] >= low)
        and value[1] <= high
    )
    if not ok:
        bracket = "(" if low_open else "["
        raise ConfigError(f"TrainAugment {name}={value!r} must be (min, max) within {bracket}{low}, {high}]")
