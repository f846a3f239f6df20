"""Quantizable semantic-segmentation models on a dilated MobileNetV3-Large backbone, torchvision-compatible.

Two of torchvision's segmentation models (``torchvision.models.segmentation``), made quantizable the way
its quantizable classifiers are: ``QuantStub``/``DeQuantStub`` around the network, ``FloatFunctional``
for the gating multiply, the skip add and the concatenation, Conv+BN(+ReLU) fused before PTQ.

- :func:`lraspp_mobilenet_v3_large`: LR-ASPP (Howard et al., 2019).  A 1x1 conv+BN+ReLU branch on the
  stride-16 high-level features is gated by a global-pool branch (pool, 1x1 conv, sigmoid), bilinearly
  upsampled to the stride-8 low-level features, and both levels are classified by 1x1 convs and added.
- :func:`deeplabv3_mobilenet_v3_large`: DeepLabV3 (Chen et al., 2017).  ASPP on the stride-16 features:
  a 1x1 conv, three 3x3 convs with dilation 12, 24 and 36, and a global-pool branch bilinearly upsampled
  back from 1x1; concatenated, projected, then a 3x3 conv and the 1x1 classifier.

Both upsample the class logits bilinearly (``align_corners=False``) to the input size.  The backbone is
MobileNetV3-Large's ``features`` with its last stage dilated (stride 16, not 32), as torchvision builds it.
Submodule names follow torchvision (``backbone.<i>``, ``classifier.*``), so the traced graphs have the
same ops and names.  Two differences, both for tracing: ``forward`` returns the logits tensor rather
than ``{"out": logits}``, and there is no auxiliary head (torchvision's default, ``aux_loss=False``).
"""

from __future__ import annotations

from functools import partial
from typing import List, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import torch.ao.quantization as tq
from torch.ao.nn.quantized import FloatFunctional

from . import _common
from .mobilenetv3 import QuantizableMobileNetV3, fuse_blocks, large_config

__all__ = ["QuantizableLRASPP", "QuantizableDeepLabV3", "lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large"]


def _dilated_features() -> nn.Sequential:
    """MobileNetV3-Large ``features`` with a dilated last stage: output stride 16, 960 channels."""
    setting, last_channel = large_config(dilated=True)
    return QuantizableMobileNetV3(setting, last_channel).features


def _stage_indices(features: nn.Sequential) -> List[int]:
    """torchvision's ``stage_indices``: the stem, every block that downsamples (or would, undilated), the
    last conv.  For MobileNetV3-Large: ``[0, 2, 4, 7, 13, 16]``."""
    return [0] + [i for i, b in enumerate(features) if getattr(b, "_is_cn", False)] + [len(features) - 1]


def _fuse_conv_bn_relu(module: nn.Module, groups: Sequence[Sequence[str]], is_qat: bool) -> None:
    for g in groups:
        _common.fuse(module, list(g), is_qat)


class LRASPPHead(nn.Module):
    """LR-ASPP's segmentation head (``torchvision.models.segmentation.lraspp.LRASPPHead``).

    Parameters
    ----------
    low_channels, high_channels : int
        Channels of the stride-8 and stride-16 features.
    num_classes : int
        Output channels.
    inter_channels : int
        Width of the high-level branch.
    """

    def __init__(self, low_channels: int, high_channels: int, num_classes: int, inter_channels: int) -> None:
        super().__init__()
        self.cbr = nn.Sequential(
            nn.Conv2d(high_channels, inter_channels, 1, bias=False),
            nn.BatchNorm2d(inter_channels),
            nn.ReLU(inplace=True),
        )
        self.scale = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(high_channels, inter_channels, 1, bias=False),
            nn.Sigmoid(),
        )
        self.low_classifier = nn.Conv2d(low_channels, num_classes, 1)
        self.high_classifier = nn.Conv2d(inter_channels, num_classes, 1)
        self.gate_mul = FloatFunctional()
        self.skip_add = FloatFunctional()

    def forward(self, low: Tensor, high: Tensor) -> Tensor:
        x = self.gate_mul.mul(self.cbr(high), self.scale(high))
        x = F.interpolate(x, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.skip_add.add(self.low_classifier(low), self.high_classifier(x))


class QuantizableLRASPP(nn.Module):
    """LR-ASPP: dilated MobileNetV3-Large backbone, :class:`LRASPPHead`, bilinear upsample to the input.

    Parameters
    ----------
    num_classes : int
        Output channels (21: the 20 PASCAL VOC classes and background, torchvision's default).
    inter_channels : int
        Width of the head's high-level branch.
    """

    def __init__(self, num_classes: int = 21, inter_channels: int = 128) -> None:
        super().__init__()
        self.backbone = _dilated_features()
        stages = _stage_indices(self.backbone)
        self.low_pos, self.high_pos = stages[-4], stages[-1]  # stride 8 (40 ch) and stride 16 (960 ch)
        self.classifier = LRASPPHead(self.backbone[self.low_pos].out_channels,
                                     self.backbone[self.high_pos].out_channels, num_classes, inter_channels)
        self.quant = tq.QuantStub()
        self.dequant = tq.DeQuantStub()

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        x = self.quant(x)
        low = x
        for i, layer in enumerate(self.backbone):
            x = layer(x)
            if i == self.low_pos:
                low = x
        out = self.classifier(low, x)
        out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
        return self.dequant(out)

    def fuse_model(self, is_qat: bool = False) -> None:
        """Fuse the backbone's blocks and the head's Conv+BN+ReLU in place."""
        fuse_blocks(self.backbone, is_qat)
        _fuse_conv_bn_relu(self.classifier.cbr, [["0", "1", "2"]], is_qat)


class ASPPPooling(nn.Sequential):
    """ASPP's image-level branch: global average pool, 1x1 conv+BN+ReLU, bilinear upsample back."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
        )

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        for mod in self:
            x = mod(x)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (``torchvision.models.segmentation.deeplabv3.ASPP``).

    Parameters
    ----------
    in_channels : int
        Channels of the backbone output.
    atrous_rates : sequence of int
        Dilations of the 3x3 branches.
    out_channels : int
        Width of every branch and of the projection.
    """

    def __init__(self, in_channels: int, atrous_rates: Sequence[int], out_channels: int = 256) -> None:
        super().__init__()
        modules: List[nn.Module] = [nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False),
                                                  nn.BatchNorm2d(out_channels), nn.ReLU())]
        for rate in atrous_rates:
            modules.append(nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 3, padding=rate, dilation=rate, bias=False),
                nn.BatchNorm2d(out_channels), nn.ReLU()))
        modules.append(ASPPPooling(in_channels, out_channels))
        self.convs = nn.ModuleList(modules)
        self.project = nn.Sequential(
            nn.Conv2d(len(self.convs) * out_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
            nn.Dropout(0.5),
        )
        self.cat = FloatFunctional()

    def forward(self, x: Tensor) -> Tensor:
        return self.project(self.cat.cat([conv(x) for conv in self.convs], dim=1))


class DeepLabHead(nn.Sequential):
    """DeepLabV3's head: ASPP, 3x3 conv+BN+ReLU, 1x1 classifier."""

    def __init__(self, in_channels: int, num_classes: int, atrous_rates: Sequence[int] = (12, 24, 36)) -> None:
        super().__init__(
            ASPP(in_channels, atrous_rates),
            nn.Conv2d(256, 256, 3, padding=1, bias=False),
            nn.BatchNorm2d(256),
            nn.ReLU(),
            nn.Conv2d(256, num_classes, 1),
        )


class QuantizableDeepLabV3(nn.Module):
    """DeepLabV3: dilated MobileNetV3-Large backbone, :class:`DeepLabHead`, bilinear upsample to the input.

    Parameters
    ----------
    num_classes : int
        Output channels.
    """

    def __init__(self, num_classes: int = 21) -> None:
        super().__init__()
        self.backbone = _dilated_features()
        out_channels = self.backbone[_stage_indices(self.backbone)[-1]].out_channels
        self.classifier = DeepLabHead(out_channels, num_classes)
        self.quant = tq.QuantStub()
        self.dequant = tq.DeQuantStub()

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        out = self.classifier(self.backbone(self.quant(x)))
        out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
        return self.dequant(out)

    def fuse_model(self, is_qat: bool = False) -> None:
        """Fuse the backbone's blocks and every Conv+BN+ReLU of the head in place."""
        fuse_blocks(self.backbone, is_qat)
        aspp = self.classifier[0]
        for branch in aspp.convs[:-1]:
            _fuse_conv_bn_relu(branch, [["0", "1", "2"]], is_qat)
        _fuse_conv_bn_relu(aspp.convs[-1], [["1", "2", "3"]], is_qat)
        _fuse_conv_bn_relu(aspp.project, [["0", "1", "2"]], is_qat)
        _fuse_conv_bn_relu(self.classifier, [["1", "2", "3"]], is_qat)


def lraspp_mobilenet_v3_large(quantize: bool = False, seed: int = 0, num_classes: int = 21) -> QuantizableLRASPP:
    """LR-ASPP with a dilated MobileNetV3-Large backbone and seeded random weights (3.2M parameters).

    Parameters
    ----------
    quantize : bool
        Return the fbgemm post-training-quantized model (calibrated on seeded random inputs).
    seed : int
        Same seed, identical weights.
    num_classes : int
        Output channels.

    Returns
    -------
    QuantizableLRASPP
        In eval mode; maps ``(N, 3, H, W)`` images to ``(N, num_classes, H, W)`` logits.
    """
    return _common.build("lraspp_mobilenet_v3_large", partial(QuantizableLRASPP, num_classes), seed, quantize)


def deeplabv3_mobilenet_v3_large(quantize: bool = False, seed: int = 0,
                                 num_classes: int = 21) -> QuantizableDeepLabV3:
    """DeepLabV3 with a dilated MobileNetV3-Large backbone and seeded random weights (11M parameters).

    Parameters and result as :func:`lraspp_mobilenet_v3_large`.
    """
    return _common.build("deeplabv3_mobilenet_v3_large", partial(QuantizableDeepLabV3, num_classes), seed,
                         quantize)
