"""Quantizable MobileNetV3-Large (Howard et al., 2019), torchvision-compatible.

Follows ``torchvision.models.quantization.mobilenetv3``: hardswish activations stay separate modules
(quantized as ``quantized::hardswish``), the squeeze-and-excitation block scales with ``Hardsigmoid``
and multiplies through a ``FloatFunctional.mul``, and residual adds use ``FloatFunctional.add``.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, List, Sequence, Tuple

import torch
from torch import Tensor, nn

import torch.ao.quantization as tq
from torch.ao.nn.quantized import FloatFunctional

from . import _common
from ._common import Conv2dNormActivation

__all__ = ["InvertedResidualConfig", "QuantizableSqueezeExcitation", "QuantizableInvertedResidual",
           "QuantizableMobileNetV3", "fuse_blocks", "large_config", "mobilenet_v3_large"]


class QuantizableSqueezeExcitation(nn.Module):
    """Channel attention: ``x * hardsigmoid(fc2(relu(fc1(avgpool(x)))))``.

    Parameters
    ----------
    input_channels : int
        Channels of `x` (and of the scale).
    squeeze_channels : int
        Bottleneck width of the two 1x1 convs.
    """

    def __init__(self, input_channels: int, squeeze_channels: int) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(input_channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, input_channels, 1)
        self.activation = nn.ReLU()
        self.scale_activation = nn.Hardsigmoid()
        self.skip_mul = FloatFunctional()

    def _scale(self, x: Tensor) -> Tensor:
        scale = self.avgpool(x)
        scale = self.activation(self.fc1(scale))
        return self.scale_activation(self.fc2(scale))

    def forward(self, x: Tensor) -> Tensor:
        return self.skip_mul.mul(self._scale(x), x)

    def fuse_model(self, is_qat: bool = False) -> None:
        _common.fuse(self, ["fc1", "activation"], is_qat)


class InvertedResidualConfig:
    """One row of Table 1 of the MobileNetV3 paper (channel counts already width-adjusted)."""

    def __init__(self, input_channels: int, kernel: int, expanded_channels: int, out_channels: int, use_se: bool,
                 activation: str, stride: int, dilation: int = 1, width_mult: float = 1.0) -> None:
        self.input_channels = self.adjust_channels(input_channels, width_mult)
        self.kernel = kernel
        self.expanded_channels = self.adjust_channels(expanded_channels, width_mult)
        self.out_channels = self.adjust_channels(out_channels, width_mult)
        self.use_se = use_se
        self.use_hs = activation == "HS"
        self.stride = stride
        self.dilation = dilation

    @staticmethod
    def adjust_channels(channels: int, width_mult: float) -> int:
        return _common.make_divisible(channels * width_mult, 8)


class QuantizableInvertedResidual(nn.Module):
    """Expand (1x1, if widening) -> depthwise kxk -> [SE] -> linear project (1x1), plus skip add.

    Parameters
    ----------
    cnf : InvertedResidualConfig
        The block's configuration.
    norm_layer : callable
        Norm constructor (BN with eps 1e-3, momentum 0.01 in MobileNetV3).
    """

    def __init__(self, cnf: InvertedResidualConfig, norm_layer: Callable[..., nn.Module]) -> None:
        super().__init__()
        if not 1 <= cnf.stride <= 2:
            raise ValueError("illegal stride value")
        self.use_res_connect = cnf.stride == 1 and cnf.input_channels == cnf.out_channels
        activation_layer = nn.Hardswish if cnf.use_hs else nn.ReLU

        layers: List[nn.Module] = []
        if cnf.expanded_channels != cnf.input_channels:
            layers.append(Conv2dNormActivation(cnf.input_channels, cnf.expanded_channels, kernel_size=1,
                                               norm_layer=norm_layer, activation_layer=activation_layer))
        stride = 1 if cnf.dilation > 1 else cnf.stride
        layers.append(Conv2dNormActivation(cnf.expanded_channels, cnf.expanded_channels, kernel_size=cnf.kernel,
                                           stride=stride, dilation=cnf.dilation, groups=cnf.expanded_channels,
                                           norm_layer=norm_layer, activation_layer=activation_layer))
        if cnf.use_se:
            squeeze_channels = _common.make_divisible(cnf.expanded_channels // 4, 8)
            layers.append(QuantizableSqueezeExcitation(cnf.expanded_channels, squeeze_channels))
        layers.append(Conv2dNormActivation(cnf.expanded_channels, cnf.out_channels, kernel_size=1,
                                           norm_layer=norm_layer, activation_layer=None))
        self.block = nn.Sequential(*layers)
        self.out_channels = cnf.out_channels
        self._is_cn = cnf.stride > 1
        self.skip_add = FloatFunctional()
        if not self.use_res_connect:
            # Kept for torchvision's module tree but never called: without a qconfig it gets no
            # observer, so PTQ does not warn about an uncalibrated one.
            self.skip_add.qconfig = None

    def forward(self, x: Tensor) -> Tensor:
        if self.use_res_connect:
            return self.skip_add.add(x, self.block(x))
        return self.block(x)


def large_config(width_mult: float = 1.0, dilated: bool = False) -> Tuple[List[InvertedResidualConfig], int]:
    """Block configurations and penultimate width of MobileNetV3-Large.

    `dilated` (torchvision's ``dilated=True``, for the segmentation backbones): the last stage (C4)
    keeps stride 16 instead of 32, its three blocks using dilation 2 in the depthwise conv instead of
    the stride-2 downsampling.
    """
    bneck = partial(InvertedResidualConfig, width_mult=width_mult)
    d = 2 if dilated else 1
    setting = [
        # in, kernel, expanded, out, SE, activation, stride
        bneck(16, 3, 16, 16, False, "RE", 1),
        bneck(16, 3, 64, 24, False, "RE", 2),  # C1
        bneck(24, 3, 72, 24, False, "RE", 1),
        bneck(24, 5, 72, 40, True, "RE", 2),  # C2
        bneck(40, 5, 120, 40, True, "RE", 1),
        bneck(40, 5, 120, 40, True, "RE", 1),
        bneck(40, 3, 240, 80, False, "HS", 2),  # C3
        bneck(80, 3, 200, 80, False, "HS", 1),
        bneck(80, 3, 184, 80, False, "HS", 1),
        bneck(80, 3, 184, 80, False, "HS", 1),
        bneck(80, 3, 480, 112, True, "HS", 1),
        bneck(112, 3, 672, 112, True, "HS", 1),
        bneck(112, 5, 672, 160, True, "HS", 2, d),  # C4
        bneck(160, 5, 960, 160, True, "HS", 1, d),
        bneck(160, 5, 960, 160, True, "HS", 1, d),
    ]
    last_channel = InvertedResidualConfig.adjust_channels(1280, width_mult)  # C5
    return setting, last_channel


class QuantizableMobileNetV3(nn.Module):
    """MobileNetV3 with ``QuantStub`` / ``DeQuantStub`` around the float network.

    Parameters
    ----------
    inverted_residual_setting : sequence of InvertedResidualConfig
        The blocks, see :func:`large_config`.
    last_channel : int
        Width of the penultimate (hidden) classifier layer.
    num_classes : int
        Classifier width.
    dropout : float
        Classifier dropout (identity in eval mode).
    """

    def __init__(self, inverted_residual_setting: Sequence[InvertedResidualConfig], last_channel: int,
                 num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        if not inverted_residual_setting:
            raise ValueError("The inverted_residual_setting should not be empty")
        norm_layer = partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)

        first_channels = inverted_residual_setting[0].input_channels
        layers: List[nn.Module] = [Conv2dNormActivation(3, first_channels, kernel_size=3, stride=2,
                                                        norm_layer=norm_layer, activation_layer=nn.Hardswish)]
        layers += [QuantizableInvertedResidual(cnf, norm_layer) for cnf in inverted_residual_setting]
        lastconv_in = inverted_residual_setting[-1].out_channels
        lastconv_out = 6 * lastconv_in
        layers.append(Conv2dNormActivation(lastconv_in, lastconv_out, kernel_size=1, norm_layer=norm_layer,
                                           activation_layer=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(lastconv_out, last_channel),
            nn.Hardswish(inplace=True),
            nn.Dropout(p=dropout, inplace=True),
            nn.Linear(last_channel, num_classes),
        )
        self.quant = tq.QuantStub()
        self.dequant = tq.DeQuantStub()

    def _forward_impl(self, x: Tensor) -> Tensor:
        x = self.features(x)
        x = torch.flatten(self.avgpool(x), 1)
        return self.classifier(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.dequant(self._forward_impl(self.quant(x)))

    def fuse_model(self, is_qat: bool = False) -> None:
        """Fuse Conv+BN (+ReLU; hardswish stays separate) and the SE block's fc1+ReLU in place."""
        fuse_blocks(self, is_qat)


def fuse_blocks(module: nn.Module, is_qat: bool = False) -> None:
    """Fuse every MobileNetV3 building block below `module` in place: each ``Conv2dNormActivation``'s
    Conv+BN (+ReLU; hardswish stays separate) and each squeeze-and-excitation block's fc1+ReLU.  Also
    used by the segmentation models, whose backbone is MobileNetV3's ``features``."""
    for m in module.modules():
        if type(m) is Conv2dNormActivation:
            group = ["0", "1"]
            if len(m) == 3 and type(m[2]) is nn.ReLU:
                group.append("2")
            _common.fuse(m, group, is_qat)
        elif type(m) is QuantizableSqueezeExcitation:
            m.fuse_model(is_qat)


def mobilenet_v3_large(quantize: bool = False, seed: int = 0, num_classes: int = 1000, *, pretrained: bool = False,
        progress: bool = True) -> QuantizableMobileNetV3:
    """MobileNetV3-Large with seeded random weights (5.5M parameters).

    Parameters
    ----------
    quantize : bool
        Return the fbgemm post-training-quantized model (calibrated on seeded random inputs).  (torchvision
        ships its quantized MobileNetV3 for qnnpack; we use fbgemm for every model, like our users.)
    seed : int
        Same seed, identical weights.
    num_classes : int
        Classifier width.

    Returns
    -------
    QuantizableMobileNetV3
        In eval mode.
    """
    setting, last_channel = large_config()
    return _common.build("mobilenet_v3_large", lambda: QuantizableMobileNetV3(setting, last_channel, num_classes),
                         seed, quantize, pretrained=pretrained)
