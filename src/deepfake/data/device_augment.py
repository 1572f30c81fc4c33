"""The training augmentation applied to a whole batch on the training device (a GPU, or the CPU).

A DataLoader worker draws each crop's augmentation as :class:`deepfake.data.augment.TrainAugment`
does, from the generator seeded by ``(seed, epoch, item)``, and sends the draws
(:meth:`~deepfake.data.augment.AugmentDraw.to_vector`) with the uint8 crop; this
module applies them to the batch with torch: flip, colour jitter (brightness,
contrast, saturation, hue, in each crop's drawn order), downscale-upscale, JPEG
re-compression and cutout. The worker's share of the work is then a slice of
the crop cache, so a few workers keep a GPU fed.

The operations follow the CPU ones (:mod:`deepfake.data.augment`), rounding to
whole grey levels after each as they do; they differ by a grey level or so
where OpenCV uses fixed-point arithmetic, and JPEG is modelled rather than
encoded: 8 x 8 DCT of YCbCr with 4:2:0 chroma, quantised with the IJG tables
scaled to the drawn quality (what libjpeg does, without the entropy coding,
which loses nothing). Same draws and same device: same pixels, run after run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from deepfake.data.augment import COLOR_OPS

# IJG (libjpeg) base quantisation tables, row-major 8 x 8: luminance, chrominance.
_LUMA = (16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
         14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
         49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99)
_CHROMA = (17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
           47, 66, 99, 99, 99, 99, 99, 99) + (99,) * 32
_GREY = (0.299, 0.587, 0.114)


def augment_batch(images: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
    """``images``: N x H x W x 3 uint8 (as the loader stacks crops) on the device; ``draws``: N x 14 (the
    :class:`~deepfake.data.augment.AugmentDraw` vectors). Returns N x 3 x H x W float32 in 0-255, whole levels."""
    x = images.permute(0, 3, 1, 2).float()
    d = draws.to(device=x.device, dtype=torch.float64)
    x = torch.where(d[:, 0].bool()[:, None, None, None], x.flip(-1), x)
    for k in range(4):
        code, value = d[:, 1 + 2 * k], d[:, 2 + 2 * k].float()
        for c, name in enumerate(COLOR_OPS, start=1):
            rows = (code == c).nonzero().flatten()
            if len(rows):
                x[rows] = _COLOR[name](x[rows], value[rows])
    for i in (d[:, 9] > 0).nonzero().flatten().tolist():
        x[i] = _downscale_upscale(x[i:i + 1], float(d[i, 9]))[0]
    quality = d[:, 10]
    rows = (quality > 0).nonzero().flatten()
    if len(rows):
        x[rows] = jpeg_like(x[rows], quality[rows])
    rows = (d[:, 13] > 0).nonzero().flatten()
    if len(rows):
        x[rows] = _cutout(x[rows], d[rows, 11:14].long())
    return x


def normalize_batch(x: torch.Tensor, normalization: Mapping[str, Sequence[float]]) -> torch.Tensor:
    """N x 3 x H x W in 0-255 -> the model's input, as :func:`deepfake.media.preprocess.normalize` does on the CPU."""
    mean = torch.tensor(normalization["mean"], dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(normalization["std"], dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    return (x / 255.0 - mean) / std


def _u8(x: torch.Tensor) -> torch.Tensor:
    return x.round().clamp_(0, 255)


def _grey(x: torch.Tensor) -> torch.Tensor:
    w = torch.tensor(_GREY, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return _u8((x * w).sum(1, keepdim=True))


def _brightness(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return _u8(x * f.view(-1, 1, 1, 1))


def _contrast(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    mean = _grey(x).mean((2, 3), keepdim=True)
    return _u8(mean + f.view(-1, 1, 1, 1) * (x - mean))


def _saturation(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    grey = _grey(x)
    return _u8(grey + f.view(-1, 1, 1, 1) * (x - grey))


def _hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    rgb = x / 255.0
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    v, _ = rgb.max(1)
    c = v - rgb.min(1).values
    safe = torch.where(c > 0, c, torch.ones_like(c))
    h = torch.where(v == r, (g - b) / safe % 6, torch.where(v == g, (b - r) / safe + 2, (r - g) / safe + 4))
    h = torch.where(c > 0, h * 60.0, torch.zeros_like(h))
    s = torch.where(v > 0, c / torch.where(v > 0, v, torch.ones_like(v)), torch.zeros_like(v))
    h = (h + 360.0 * shift.view(-1, 1, 1)) % 360.0
    k = torch.stack([(5 + h / 60.0) % 6, (3 + h / 60.0) % 6, (1 + h / 60.0) % 6], 1)   # r, g, b
    out = v[:, None] - (v * s)[:, None] * torch.clamp(torch.minimum(k, 4 - k), 0, 1)
    return _u8(out * 255.0)


_COLOR = {"brightness": _brightness, "contrast": _contrast, "saturation": _saturation, "hue": _hue}


def _downscale_upscale(x: torch.Tensor, scale: float) -> torch.Tensor:
    h, w = x.shape[-2:]
    small = F.interpolate(x, size=(max(1, round(h * scale)), max(1, round(w * scale))), mode="area")
    return _u8(F.interpolate(_u8(small), size=(h, w), mode="bilinear", align_corners=False))


def _cutout(x: torch.Tensor, squares: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[-2:]
    y0, x0, side = (squares[:, k].view(-1, 1, 1) for k in range(3))
    yy = torch.arange(h, device=x.device).view(1, h, 1)
    xx = torch.arange(w, device=x.device).view(1, 1, w)
    inside = ((yy >= y0) & (yy < y0 + side) & (xx >= x0) & (xx < x0 + side))[:, None]
    mean = x.mean((2, 3), keepdim=True).round()
    return torch.where(inside, mean, x)


def jpeg_like(x: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """JPEG compression and decompression of N x 3 x H x W (0-255) at per-image ``quality`` (1-100)."""
    n, _, h, w = x.shape
    ph, pw = -h % 16, -w % 16
    x = F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x
    m = torch.tensor([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]],
                     dtype=x.dtype, device=x.device)
    ycc = torch.einsum("ij,njhw->nihw", m, x) + torch.tensor([0.0, 128.0, 128.0], device=x.device).view(1, 3, 1, 1)
    luma, chroma = ycc[:, :1], F.avg_pool2d(ycc[:, 1:], 2)
    scale = _quality_scale(quality.to(x.device)).view(n, 1, 1, 1, 1, 1)
    luma = _blocks_roundtrip(luma, _table(_LUMA, scale, x))
    chroma = _blocks_roundtrip(chroma, _table(_CHROMA, scale, x))
    chroma = F.interpolate(chroma, scale_factor=2, mode="bilinear", align_corners=False)
    ycc = torch.cat([luma, chroma], 1) - torch.tensor([0.0, 128.0, 128.0], device=x.device).view(1, 3, 1, 1)
    inv = torch.tensor([[1.0, 0.0, 1.402], [1.0, -0.344136, -0.714136], [1.0, 1.772, 0.0]],
                       dtype=x.dtype, device=x.device)
    return _u8(torch.einsum("ij,njhw->nihw", inv, ycc)[:, :, :h, :w])


def _quality_scale(quality: torch.Tensor) -> torch.Tensor:
    q = quality.clamp(1, 100).double()
    return torch.where(q < 50, 5000.0 / q, 200.0 - 2.0 * q)


def _table(base: Sequence[int], scale: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    t = torch.tensor(base, dtype=torch.float64, device=like.device).view(1, 1, 1, 1, 8, 8)
    return torch.floor((t * scale + 50.0) / 100.0).clamp(1, 255).to(like.dtype)


def _blocks_roundtrip(plane: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Level shift, 8 x 8 DCT, quantise and dequantise with ``table`` (N x 1 x 1 x 1 x 8 x 8), inverse DCT."""
    n, c, h, w = plane.shape
    blocks = plane.reshape(n, c, h // 8, 8, w // 8, 8).permute(0, 1, 2, 4, 3, 5) - 128.0
    d = _dct_matrix(plane)
    coef = d @ blocks @ d.T
    coef = torch.round(coef / table) * table
    back = d.T @ coef @ d + 128.0
    return back.permute(0, 1, 2, 4, 3, 5).reshape(n, c, h, w)


def _dct_matrix(like: torch.Tensor) -> torch.Tensor:
    k = torch.arange(8, dtype=torch.float64)
    d = torch.cos((2 * k[None, :] + 1) * k[:, None] * math.pi / 16) * math.sqrt(2 / 8)
    d[0] /= math.sqrt(2)
    return d.to(device=like.device, dtype=like.dtype)
