"""Square face crops with context, and which detections to keep.

A deepfake's traces sit at the blend boundary around the face (jaw, hairline,
cheeks), so a crop keeps a margin of context around the detector's box. The crop
is always square and centred on the box: near the image border the missing part
is padded (black by default) instead of shifting the window, so the face keeps
the same place and scale in every crop.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import cv2
import numpy as np

from deepfake.core.errors import ConfigError, DataError
from deepfake.media.detectors import Detection, as_rgb

# Border fills for the part of a crop outside the image.
PADDING = {"black": cv2.BORDER_CONSTANT, "edge": cv2.BORDER_REPLICATE}


# Scores equal to this many decimals tie, so ranking among near-certain faces
# (MTCNN gives 0.9999x to every clear face) falls to the larger, main face.
SCORE_DECIMALS = 2


def crop_window(box: Sequence[float], margin: float = 0.3) -> tuple[int, int, int, int]:
    """The square ``(x0, y0, x1, y1)`` a crop of ``box`` covers, possibly outside the image.

    Its side is the box's longer side times ``1 + 2 * margin``: ``margin`` is added on
    *each* side (0.3 -> a window 1.6x the face), centred on the box centre.
    """
    if margin < 0:
        raise ConfigError(f"margin must be >= 0 (a fraction of the face box per side); got {margin}")
    x0, y0, x1, y1 = (float(v) for v in box)
    side = max(1, int(round(max(x1 - x0, y1 - y0) * (1 + 2 * margin))))
    left = int(round((x0 + x1) / 2 - side / 2))
    top = int(round((y0 + y1) / 2 - side / 2))
    return left, top, left + side, top + side


def square_crop(rgb: np.ndarray, box: Sequence[float], margin: float = 0.3, size: int | None = 224,
                *, pad: str = "black") -> np.ndarray:
    """A ``size`` x ``size`` RGB crop of ``box`` with ``margin`` of the box's side added on each side.

    ``size=None`` keeps the window's own resolution. ``pad``: ``black`` or ``edge``
    (repeat the border pixels) for the part of the window outside the image.
    """
    if pad not in PADDING:
        raise ConfigError(f"pad {pad!r} is not one of {', '.join(PADDING)}")
    if size is not None and size < 1:
        raise ConfigError(f"crop size must be >= 1 pixel; got {size}")
    rgb = as_rgb(rgb)
    height, width = rgb.shape[:2]
    left, top, right, bottom = crop_window(box, margin)
    ix0, iy0, ix1, iy1 = max(left, 0), max(top, 0), min(right, width), min(bottom, height)
    if ix0 >= ix1 or iy0 >= iy1:
        raise DataError(f"face box {list(box)} lies outside the {width}x{height} image")
    crop = rgb[iy0:iy1, ix0:ix1]
    if (ix0, iy0, ix1, iy1) != (left, top, right, bottom):
        crop = cv2.copyMakeBorder(crop, iy0 - top, bottom - iy1, ix0 - left, right - ix1, PADDING[pad],
                                  value=(0, 0, 0))
    if size is None or crop.shape[0] == size:
        return np.ascontiguousarray(crop)
    shrink = crop.shape[0] > size
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


def landmarks_in_crop(landmarks: np.ndarray, box: Sequence[float], margin: float, size: int) -> np.ndarray:
    """Full-resolution landmarks ``(N, 2)`` in the pixels of the ``size`` px crop :func:`square_crop` makes of ``box``."""
    left, top, right, _ = crop_window(box, margin)
    scale = size / max(1, right - left)
    return (np.asarray(landmarks, dtype=np.float64) - (left, top)) * scale


def rank(detections: Iterable[Detection]) -> list[Detection]:
    """Best first: higher score (to ``SCORE_DECIMALS``), then larger box."""
    return sorted(detections, key=lambda d: (-round(d.score, SCORE_DECIMALS), -d.area))


def select(detections: Iterable[Detection], max_faces: int | None = 1, min_score: float = 0.0) -> list[Detection]:
    """The best ``max_faces`` detections scoring at least ``min_score`` (``max_faces`` None/0: all)."""
    if max_faces is not None and max_faces < 0:
        raise ConfigError(f"max_faces must be >= 0 (0 = no limit); got {max_faces}")
    kept = rank(d for d in detections if d.score >= min_score)
    return kept[:max_faces] if max_faces else kept
