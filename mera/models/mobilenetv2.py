"""Quantizable MobileNetV2 (Sandler et al., 2018), torchvision-compatible.

Follows ``torchvision.models.quantization.mobilenetv2``.  As there, the float architecture's ReLU6 is
replaced by ReLU (by the factory's ``replace_relu``): eager-mode fusion has no Conv+BN+ReLU6 pattern,
and a quantized activation's range is clamped by its output scale anyway.
"""

from __future__ import annotations

from typing import Callable, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import torch.ao.quantization as tq
from torch.ao.nn.quantized import FloatFunctional

from . import _common
from ._common import Conv2dNormActivation

__all__ = ["QuantizableInvertedResidual", "QuantizableMobileNetV2", "mobilenet_v2"]


class QuantizableInvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise 3x3 -> linear project (1x1), with a skip add when shapes allow.

    ``conv`` is a Sequential: ``[Conv2dNormActivation (expand, absent when t == 1),
    Conv2dNormActivation (depthwise), Conv2d, BatchNorm2d]``.
    """

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int,
                 norm_layer: Optional[Callable[..., nn.Module]] = None) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride should be 1 or 2, got {stride}")
        norm_layer = norm_layer or nn.BatchNorm2d
        self.stride = stride
        hidden_dim = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup

        layers: List[nn.Module] = []
        if expand_ratio != 1:
            layers.append(Conv2dNormActivation(inp, hidden_dim, kernel_size=1, norm_layer=norm_layer,
                                               activation_layer=nn.ReLU6))
        layers += [
            Conv2dNormActivation(hidden_dim, hidden_dim, stride=stride, groups=hidden_dim, norm_layer=norm_layer,
                                 activation_layer=nn.ReLU6),
            # Linear bottleneck: no activation after the projection.
            nn.Conv2d(hidden_dim, oup, 1, 1, 0, bias=False),
            norm_layer(oup),
        ]
        self.conv = nn.Sequential(*layers)
        self.out_channels = oup
        self._is_cn = stride > 1
        self.skip_add = FloatFunctional()
        if not self.use_res_connect:
            # Kept for torchvision's module tree but never called: without a qconfig it gets no
            # observer, so PTQ does not warn about an uncalibrated one.
            self.skip_add.qconfig = None

    def forward(self, x: Tensor) -> Tensor:
        if self.use_res_connect:
            return self.skip_add.add(x, self.conv(x))
        return self.conv(x)

    def fuse_model(self, is_qat: bool = False) -> None:
        # Only the bare projection Conv2d + BN; the Conv2dNormActivation children are fused by the model.
        for idx in range(len(self.conv)):
            if type(self.conv[idx]) is nn.Conv2d:
                _common.fuse(self.conv, [str(idx), str(idx + 1)], is_qat)


class QuantizableMobileNetV2(nn.Module):
    """MobileNetV2 (width 1.0) with ``QuantStub`` / ``DeQuantStub`` around the float network.

    Parameters
    ----------
    num_classes : int
        Classifier width.
    width_mult : float
        Channel multiplier.
    round_nearest : int
        Channel counts are rounded to multiples of this.
    dropout : float
        Dropout before the classifier (identity in eval mode).
    """

    # t (expansion), c (output channels), n (repeats), s (stride of the first repeat)
    SETTING = [
        [1, 16, 1, 1],
        [6, 24, 2, 2],
        [6, 32, 3, 2],
        [6, 64, 4, 2],
        [6, 96, 3, 1],
        [6, 160, 3, 2],
        [6, 320, 1, 1],
    ]

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, round_nearest: int = 8,
                 dropout: float = 0.2) -> None:
        super().__init__()
        norm_layer = nn.BatchNorm2d
        input_channel = _common.make_divisible(32 * width_mult, round_nearest)
        self.last_channel = _common.make_divisible(1280 * max(1.0, width_mult), round_nearest)
        features: List[nn.Module] = [
            Conv2dNormActivation(3, input_channel, stride=2, norm_layer=norm_layer, activation_layer=nn.ReLU6)
        ]
        for t, c, n, s in self.SETTING:
            output_channel = _common.make_divisible(c * width_mult, round_nearest)
            for i in range(n):
                features.append(QuantizableInvertedResidual(input_channel, output_channel, s if i == 0 else 1,
                                                            expand_ratio=t, norm_layer=norm_layer))
                input_channel = output_channel
        features.append(Conv2dNormActivation(input_channel, self.last_channel, kernel_size=1, norm_layer=norm_layer,
                                             activation_layer=nn.ReLU6))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(self.last_channel, num_classes))
        self.quant = tq.QuantStub()
        self.dequant = tq.DeQuantStub()

    def _forward_impl(self, x: Tensor) -> Tensor:
        x = self.features(x)
        # Functional pool + flatten (not squeeze), as torchvision: batch 1 must keep its batch dim.
        x = F.adaptive_avg_pool2d(x, (1, 1))
        x = torch.flatten(x, 1)
        return self.classifier(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.dequant(self._forward_impl(self.quant(x)))

    def fuse_model(self, is_qat: bool = False) -> None:
        """Fuse every Conv+BN+ReLU and projection Conv+BN in place (numerics unchanged)."""
        for m in self.modules():
            if type(m) is Conv2dNormActivation:
                _common.fuse(m, ["0", "1", "2"], is_qat)
            if type(m) is QuantizableInvertedResidual:
                m.fuse_model(is_qat)


def mobilenet_v2(quantize: bool = False, seed: int = 0, num_classes: int = 1000, *, pretrained: bool = False,
        progress: bool = True) -> QuantizableMobileNetV2:
    """MobileNetV2 with seeded random weights (3.5M parameters).

    Parameters
    ----------
    quantize : bool
        Return the fbgemm post-training-quantized model (calibrated on seeded random inputs).
    seed : int
        Same seed, identical weights.
    num_classes : int
        Classifier width.

    Returns
    -------
    QuantizableMobileNetV2
        In eval mode.
    """
    return _common.build("mobilenet_v2", lambda: QuantizableMobileNetV2(num_classes), seed, quantize, pretrained=pretrained)
