"""A quantizable YOLOv5-style detector (Ultralytics YOLOv5, v6 layout) and its host post-processing.

The network follows ``models/yolov5s.yaml`` block for block: a Focus stem (space-to-depth by four strided
slices and a concat, then a 3x3 conv; YOLOv5 before v6 -- ``stem="conv"`` gives v6's 6x6/2 conv instead),
strided 3x3 convs, C3 blocks of bottlenecks, SPPF (three chained 5x5 max pools and a concat), a PANet neck
(1x1 conv, nearest 2x upsample, concat with the backbone, C3; then strided convs and concats back down)
and a detect head of one 1x1 conv per scale (strides 8, 16, 32, three anchors each) with a sigmoid.
Width and depth multipliers are those of YOLOv5n (0.25, 0.33), the input is 256x256, so the tests stay
quick; every structural element of YOLOv5s is there.  Weights are seeded random (no model hub here).

**The activation.** YOLOv5 uses SiLU, ``x * sigmoid(x)``.  PyTorch's fbgemm has no quantized SiLU
kernel, and eager-mode post-training quantization has no module mapping for ``nn.SiLU``: converted as is,
it would run on a quantized tensor and fail.  So a quantized eager-PTQ YOLOv5 has to spell the activation
with ops that do have quantized kernels.  We keep SiLU's mathematics: ``act="silu"`` (the default) is
``FloatFunctional.mul(x, sigmoid(x))`` -- a quantized sigmoid (fixed output scale 1/256, zero point 0) and
a quantized mul whose output range is calibrated -- so the float model *is* a SiLU network and the
quantized one approximates it with two int8 roundings per activation.  ``act="hardswish"`` is YOLOv5's
own edge-export choice (``export.py`` swaps SiLU for Hardswish for some targets), a single quantized op.

**The output.** The model returns the three head maps, ``(N, 3 * (5 + num_classes), H, W)`` each,
after the sigmoid: ``[x, y, w, h, objectness, class scores...]`` per anchor.  The box decode (grid,
anchors, strides) and class-aware NMS run on the host, in NumPy: :func:`yolo_decode`.
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn

import torch.ao.quantization as tq
from torch.ao.nn.quantized import FloatFunctional

from ..errors import ConfigError, RuntimeInputError
from . import _common

__all__ = ["ANCHORS", "STRIDES", "YOLOv5", "yolov5n", "yolo_decode", "nms"]

#: Anchor (width, height) pairs in input pixels, per detection scale (YOLOv5's defaults, P3/P4/P5).
ANCHORS: Tuple[Tuple[Tuple[float, float], ...], ...] = (
    ((10, 13), (16, 30), (33, 23)),
    ((30, 61), (62, 45), (59, 119)),
    ((116, 90), (156, 198), (373, 326)),
)
#: Downsampling factor of each detection scale.
STRIDES: Tuple[int, ...] = (8, 16, 32)

_common.INPUT_SHAPES["yolov5n"] = (1, 3, 256, 256)


class Activation(nn.Module):
    """SiLU as ``x * sigmoid(x)`` through a ``FloatFunctional`` mul, or Hardswish (see the module docs)."""

    def __init__(self, act: str) -> None:
        super().__init__()
        if act not in ("silu", "hardswish"):
            raise ConfigError(f"YOLOv5: act must be 'silu' or 'hardswish', got {act!r}")
        self.kind = act
        if act == "silu":
            self.sigmoid = nn.Sigmoid()
            self.mul = FloatFunctional()
        else:
            self.hardswish = nn.Hardswish()

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "silu":
            return self.mul.mul(x, self.sigmoid(x))
        return self.hardswish(x)


class Conv(nn.Module):
    """YOLOv5's ``Conv``: conv (no bias, "same" padding) -> BN (eps 1e-3) -> activation."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, p: Optional[int] = None, act: str = "silu") -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2 if p is None else p, bias=False)
        self.bn = nn.BatchNorm2d(c2, eps=1e-3, momentum=0.03)
        self.act = Activation(act)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))

    def fuse_model(self, is_qat: bool = False) -> None:
        _common.fuse(self, ["conv", "bn"], is_qat)


class Focus(nn.Module):
    """Space-to-depth: the four pixel phases of each 2x2 cell stacked on channels, then a conv."""

    def __init__(self, c1: int, c2: int, k: int = 1, act: str = "silu") -> None:
        super().__init__()
        self.cat = FloatFunctional()
        self.conv = Conv(c1 * 4, c2, k, act=act)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(self.cat.cat([x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]],
                                      1))


class Bottleneck(nn.Module):
    """1x1 conv -> 3x3 conv, plus the input when `shortcut` (a ``FloatFunctional`` add)."""

    def __init__(self, c1: int, c2: int, shortcut: bool = True, e: float = 0.5, act: str = "silu") -> None:
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, act=act)
        self.cv2 = Conv(c_, c2, 3, act=act)
        self.add = shortcut and c1 == c2
        self.skip_add = FloatFunctional()
        if not self.add:
            self.skip_add.qconfig = None  # never called: no observer to warn about

    def forward(self, x: Tensor) -> Tensor:
        y = self.cv2(self.cv1(x))
        return self.skip_add.add(x, y) if self.add else y


class C3(nn.Module):
    """CSP bottleneck with three convs: ``cv3(cat(m(cv1(x)), cv2(x)))``."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, e: float = 0.5, act: str = "silu") -> None:
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, act=act)
        self.cv2 = Conv(c1, c_, 1, act=act)
        self.cv3 = Conv(2 * c_, c2, 1, act=act)
        self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut, e=1.0, act=act) for _ in range(n)))
        self.cat = FloatFunctional()

    def forward(self, x: Tensor) -> Tensor:
        return self.cv3(self.cat.cat([self.m(self.cv1(x)), self.cv2(x)], 1))


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast: one 5x5 max pool applied three times in a row, all four concatenated."""

    def __init__(self, c1: int, c2: int, k: int = 5, act: str = "silu") -> None:
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1, act=act)
        self.cv2 = Conv(c_ * 4, c2, 1, act=act)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)
        self.cat = FloatFunctional()

    def forward(self, x: Tensor) -> Tensor:
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(self.cat.cat([x, y1, y2, self.m(y2)], 1))


class Detect(nn.Module):
    """One 1x1 conv per scale to ``num_anchors * (5 + num_classes)`` channels, then a sigmoid."""

    def __init__(self, num_classes: int, channels: Sequence[int], num_anchors: int = 3) -> None:
        super().__init__()
        self.no = num_classes + 5
        self.na = num_anchors
        self.m = nn.ModuleList(nn.Conv2d(c, self.no * self.na, 1) for c in channels)
        self.sigmoid = nn.Sigmoid()

    def forward(self, xs: List[Tensor]) -> List[Tensor]:
        return [self.sigmoid(conv(x)) for conv, x in zip(self.m, xs)]


class YOLOv5(nn.Module):
    """YOLOv5 (``yolov5s.yaml`` layout) with ``QuantStub`` / per-output ``DeQuantStub``.

    Parameters
    ----------
    num_classes : int
        Number of object classes (80, COCO's, by default).
    width, depth : float
        Channel and repeat multipliers (YOLOv5n: 0.25, 0.33; YOLOv5s: 0.5, 0.33).
    act : str
        ``"silu"`` (``x * sigmoid(x)``) or ``"hardswish"``; see the module docstring.
    stem : str
        ``"focus"`` (space-to-depth + 3x3 conv) or ``"conv"`` (a 6x6 stride-2 conv, YOLOv5 v6).
    """

    def __init__(self, num_classes: int = 80, width: float = 0.25, depth: float = 0.33, act: str = "silu",
                 stem: str = "focus") -> None:
        super().__init__()

        def ch(c: int) -> int:
            return _common.make_divisible(c * width, 8)

        def n(k: int) -> int:
            return max(round(k * depth), 1)

        if stem == "focus":
            s0: nn.Module = Focus(3, ch(64), 3, act=act)
        elif stem == "conv":
            s0 = Conv(3, ch(64), 6, 2, 2, act=act)
        else:
            raise ConfigError(f"YOLOv5: stem must be 'focus' or 'conv', got {stem!r}")
        self.num_classes = num_classes
        # backbone: indices as in yolov5s.yaml
        self.b0 = s0                                      # P1/2
        self.b1 = Conv(ch(64), ch(128), 3, 2, act=act)    # P2/4
        self.b2 = C3(ch(128), ch(128), n(3), act=act)
        self.b3 = Conv(ch(128), ch(256), 3, 2, act=act)   # P3/8
        self.b4 = C3(ch(256), ch(256), n(6), act=act)
        self.b5 = Conv(ch(256), ch(512), 3, 2, act=act)   # P4/16
        self.b6 = C3(ch(512), ch(512), n(9), act=act)
        self.b7 = Conv(ch(512), ch(1024), 3, 2, act=act)  # P5/32
        self.b8 = C3(ch(1024), ch(1024), n(3), act=act)
        self.b9 = SPPF(ch(1024), ch(1024), 5, act=act)
        # PANet neck
        self.h10 = Conv(ch(1024), ch(512), 1, 1, act=act)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.cat12 = FloatFunctional()
        self.h13 = C3(ch(512) * 2, ch(512), n(3), False, act=act)
        self.h14 = Conv(ch(512), ch(256), 1, 1, act=act)
        self.cat16 = FloatFunctional()
        self.h17 = C3(ch(256) * 2, ch(256), n(3), False, act=act)   # P3 out
        self.h18 = Conv(ch(256), ch(256), 3, 2, act=act)
        self.cat19 = FloatFunctional()
        self.h20 = C3(ch(256) * 2, ch(512), n(3), False, act=act)   # P4 out
        self.h21 = Conv(ch(512), ch(512), 3, 2, act=act)
        self.cat22 = FloatFunctional()
        self.h23 = C3(ch(512) * 2, ch(1024), n(3), False, act=act)  # P5 out
        self.detect = Detect(num_classes, (ch(256), ch(512), ch(1024)))
        self.quant = tq.QuantStub()
        self.dequant = nn.ModuleList(tq.DeQuantStub() for _ in STRIDES)

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        x = self.quant(x)
        x = self.b2(self.b1(self.b0(x)))
        p3 = self.b4(self.b3(x))
        p4 = self.b6(self.b5(p3))
        x = self.b9(self.b8(self.b7(p4)))
        h10 = self.h10(x)
        x = self.h13(self.cat12.cat([self.up(h10), p4], 1))
        h14 = self.h14(x)
        out3 = self.h17(self.cat16.cat([self.up(h14), p3], 1))
        out4 = self.h20(self.cat19.cat([self.h18(out3), h14], 1))
        out5 = self.h23(self.cat22.cat([self.h21(out4), h10], 1))
        ys = self.detect([out3, out4, out5])
        return tuple(dq(y) for dq, y in zip(self.dequant, ys))  # type: ignore[return-value]

    def fuse_model(self, is_qat: bool = False) -> None:
        """Fuse every Conv+BN in place (the activations stay separate ops)."""
        for m in self.modules():
            if type(m) is Conv:
                m.fuse_model(is_qat)


def _init_detect(model: YOLOv5) -> None:
    """Head init: small weights and YOLOv5-like negative objectness / class biases, milder than YOLOv5's
    prior (log(8 / (640 / s)^2)) so the random model's sigmoid outputs are not all rounded to 0 at the
    quantized sigmoid's 1/256 step."""
    det = model.detect
    with torch.no_grad():
        for conv in det.m:
            nn.init.normal_(conv.weight, 0.0, 0.8 / math.sqrt(conv.in_channels))
            b = conv.bias.view(det.na, det.no)
            b.normal_(0.0, 0.1)
            b[:, 4] -= 2.0  # objectness
            b[:, 5:] -= 3.0  # classes


def yolov5n(quantize: bool = False, seed: int = 0, num_classes: int = 80, act: str = "silu",
            stem: str = "focus") -> YOLOv5:
    """YOLOv5n-sized detector (width 0.25, depth 0.33) for 256x256 inputs, seeded random weights.

    Parameters
    ----------
    quantize : bool
        Return the fbgemm post-training-quantized model (calibrated on seeded random inputs).
    seed : int
        Same seed, identical weights.
    num_classes : int
        Object classes.
    act, stem : str
        See :class:`YOLOv5`.

    Returns
    -------
    YOLOv5
        In eval mode; ``forward`` returns the three sigmoid head maps (strides 8, 16, 32).
    """

    model = _common.build("yolov5n", lambda: YOLOv5(num_classes, 0.25, 0.33, act, stem), seed, quantize=False)
    # The head has no BN, so its init can follow the statistics pass; build() would overwrite it before.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        _init_detect(model)
    if quantize:
        from .ptq import calibration_data, quantize_ptq

        quantize_ptq(model, calibration_data("yolov5n", n=2, seed=seed))
    return model


# ---- host post-processing -------------------------------------------------------------------------


def _iou_one_to_many(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou_threshold: float = 0.45) -> np.ndarray:
    """Class-aware greedy non-maximum suppression.

    A box is dropped when a higher-scoring box *of the same class* overlaps it by more than
    `iou_threshold` (intersection over union).  Ties in score keep the earlier box (stable sort).

    Parameters
    ----------
    boxes : ndarray, (K, 4)
        ``x1, y1, x2, y2``.
    scores : ndarray, (K,)
    classes : ndarray, (K,) int
    iou_threshold : float

    Returns
    -------
    ndarray of int
        Indices of the kept boxes, highest score first.

    Raises
    ------
    mera.RuntimeInputError
        If the arrays' shapes do not agree.
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    scores = np.asarray(scores)
    classes = np.asarray(classes)
    if boxes.ndim != 2 or boxes.shape[1] != 4 or len(scores) != len(boxes) or len(classes) != len(boxes):
        raise RuntimeInputError(f"nms: boxes must be (K, 4) with K scores and K classes; got boxes {boxes.shape}, "
                         f"scores {scores.shape}, classes {classes.shape}")
    order = np.argsort(-scores, kind="stable")
    keep: List[int] = []
    suppressed = np.zeros(len(boxes), dtype=bool)
    for pos, i in enumerate(order):
        if suppressed[i]:
            continue
        keep.append(int(i))
        rest = order[pos + 1:]
        rest = rest[(classes[rest] == classes[i]) & ~suppressed[rest]]
        if len(rest):
            suppressed[rest[_iou_one_to_many(boxes[i], boxes[rest]) > iou_threshold]] = True
    return np.asarray(keep, dtype=np.int64)


def yolo_decode(outputs: Sequence[np.ndarray], conf_threshold: float = 0.25, iou_threshold: float = 0.45,
                max_det: int = 300, anchors: Sequence[Sequence[Tuple[float, float]]] = ANCHORS,
                strides: Sequence[int] = STRIDES, layout: str = "NCHW") -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode YOLOv5 head maps (after the sigmoid) into boxes, then class-aware NMS.

    Per anchor and grid cell ``(gx, gy)`` of a scale with stride ``s`` and anchor ``(aw, ah)``, with the
    sigmoid outputs ``[tx, ty, tw, th, obj, cls...]`` (YOLOv5's decode, ``models/yolo.py``)::

        cx = (2 tx - 0.5 + gx) s      cy = (2 ty - 0.5 + gy) s
        w  = (2 tw)^2 aw              h  = (2 th)^2 ah
        score = obj * cls[c] for the best class c

    Candidates with ``score > conf_threshold`` are kept, NMS'ed per class, and the best `max_det` returned.

    Parameters
    ----------
    outputs : sequence of ndarray
        The model's outputs for **one image** (batch 1): ``(1, A * (5 + C), H, W)`` per scale, or
        ``(1, H, W, A * (5 + C))`` with ``layout="NHWC"``.
    conf_threshold, iou_threshold : float
    max_det : int
    anchors, strides
        Per scale, as :data:`ANCHORS` / :data:`STRIDES`.
    layout : str
        ``"NCHW"`` or ``"NHWC"``: how the maps are laid out.

    Returns
    -------
    boxes : ndarray, (K, 4) float32
        ``x1, y1, x2, y2`` in input pixels.
    scores : ndarray, (K,) float32
    classes : ndarray, (K,) int64

    Raises
    ------
    mera.RuntimeInputError
        If a map is not a batch-1 4-D map of ``anchors x (5 + classes)`` channels, the counts of maps, strides
        and anchor sets differ, or `layout` is unknown.
    """
    if layout not in ("NCHW", "NHWC"):
        raise RuntimeInputError(f"yolo_decode: layout must be 'NCHW' or 'NHWC', got {layout!r}")
    if len(outputs) != len(strides) or len(anchors) != len(strides):
        raise RuntimeInputError(f"yolo_decode: {len(outputs)} output maps for {len(strides)} strides and "
                         f"{len(anchors)} anchor sets")
    all_boxes, all_scores, all_classes = [], [], []
    for i, (y, stride, anc) in enumerate(zip(outputs, strides, anchors)):
        y = np.asarray(y, dtype=np.float32)
        if y.ndim != 4 or y.shape[0] != 1:
            raise RuntimeInputError(f"yolo_decode: output {i} must be a batch-1 4-D map, got shape {y.shape}")
        if layout == "NHWC":
            y = y.transpose(0, 3, 1, 2)
        na = len(anc)
        _, c, h, w = y.shape
        if c % na or c // na < 6:
            raise RuntimeInputError(f"yolo_decode: output {i} has {c} channels, not {na} anchors x (5 + classes)")
        p = y.reshape(na, c // na, h, w).transpose(0, 2, 3, 1)  # (A, H, W, 5 + C)
        gy, gx = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
        a = np.asarray(anc, dtype=np.float32).reshape(na, 1, 1, 2)
        cx = (p[..., 0] * 2 - 0.5 + gx) * stride
        cy = (p[..., 1] * 2 - 0.5 + gy) * stride
        bw = (p[..., 2] * 2) ** 2 * a[..., 0]
        bh = (p[..., 3] * 2) ** 2 * a[..., 1]
        cls_scores = p[..., 5:] * p[..., 4:5]
        cls = cls_scores.argmax(-1)
        score = np.take_along_axis(cls_scores, cls[..., None], -1)[..., 0]
        sel = score > conf_threshold
        all_boxes.append(np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], -1)[sel])
        all_scores.append(score[sel])
        all_classes.append(cls[sel])
    boxes = np.concatenate(all_boxes).astype(np.float32)
    scores = np.concatenate(all_scores).astype(np.float32)
    classes = np.concatenate(all_classes).astype(np.int64)
    keep = nms(boxes, scores, classes, iou_threshold)[:max_det]
    return boxes[keep], scores[keep], classes[keep]
