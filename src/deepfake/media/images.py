"""Images in and out: the one place that decodes and encodes them.

Colour order is RGB everywhere inside the kit; OpenCV's BGR appears only here
(and in video decoding). Every image the kit reads, a request's bytes, a saved
face crop, a real photo from a package, goes through :func:`decode_image`.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from deepfake.core.errors import ImageDecodeError

IMAGE_FORMATS = ("jpg", "png")
PNG_COMPRESSION = 3          # zlib level: lossless either way, 3 is fast


def decode_image(data: bytes, what: str = "the image", hint: str = "send a JPEG or PNG file") -> np.ndarray:
    """JPEG/PNG/... bytes -> RGB uint8 (EXIF orientation applied by OpenCV)."""
    buf = np.frombuffer(data, np.uint8) if data else None
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf is not None else None
    if bgr is None:
        raise ImageDecodeError(f"{what} ({len(data)} bytes) cannot be decoded as an image; {hint}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_image(path: str | os.PathLike[str], what: str = "image", hint: str = "give a JPEG or PNG file"
               ) -> np.ndarray:
    """An image file as RGB uint8; the error names the file, what it was and what to do."""
    p = Path(path)
    if not p.is_file():
        raise ImageDecodeError(f"{what} {p} does not exist or is not a file; {hint}")
    return decode_image(p.read_bytes(), f"{what} {p}", hint)


def encode_image(rgb: np.ndarray, image_format: str = "jpg", jpeg_quality: int = 95) -> bytes:
    """RGB uint8 -> JPEG (at ``jpeg_quality``) or PNG bytes."""
    if image_format not in IMAGE_FORMATS:
        raise ImageDecodeError(f"image format {image_format!r} is not one of {', '.join(IMAGE_FORMATS)}")
    bgr = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)
    params = ([cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if image_format == "jpg"
              else [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION])
    ok, buf = cv2.imencode(f".{image_format}", bgr, params)
    if not ok:
        raise ImageDecodeError(f"OpenCV could not encode an image of shape {rgb.shape} as {image_format}")
    return buf.tobytes()
