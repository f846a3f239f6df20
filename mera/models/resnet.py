"""Quantizable ResNet / ResNeXt (He et al., 2015; Xie et al., 2016), torchvision-compatible.

Module names, fusion groups and forward semantics follow ``torchvision.models.quantization.resnet``
(ResNet "v1.5": the stride of a downsampling bottleneck sits on its 3x3 conv), so the state_dict keys
match torchvision's and the traced quantized graph has the same ops.
"""

from __future__ import annotations

from typing import List, Optional, Type, Union

import torch
from torch import Tensor, nn

import torch.ao.quantization as tq
from torch.ao.nn.quantized import FloatFunctional

from . import _common

__all__ = ["QuantizableBasicBlock", "QuantizableBottleneck", "QuantizableResNet",
           "resnet18", "resnet50", "resnext50_32x4d"]


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, groups=groups, bias=False)


def _conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class QuantizableBasicBlock(nn.Module):
    """Two 3x3 convs plus identity (ResNet-18/34); the closing add and ReLU are one ``add_relu``."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None,
                 groups: int = 1, base_width: int = 64) -> None:
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock only supports groups=1 and base_width=64")
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride
        self.add_relu = FloatFunctional()

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        # One FloatFunctional op so the quantized graph gets a single quantized::add_relu.
        return self.add_relu.add_relu(out, identity)

    def fuse_model(self, is_qat: bool = False) -> None:
        _common.fuse(self, [["conv1", "bn1", "relu"], ["conv2", "bn2"]], is_qat)
        if self.downsample is not None:
            _common.fuse(self.downsample, ["0", "1"], is_qat)


class QuantizableBottleneck(nn.Module):
    """1x1 reduce, 3x3 (grouped for ResNeXt, strided when downsampling), 1x1 expand, plus identity.

    Each ReLU is its own module (``relu1``, ``relu2``) so each can be fused into its conv; ``relu`` is
    kept, unused, because torchvision's module tree has it.
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None,
                 groups: int = 1, base_width: int = 64) -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = _conv1x1(inplanes, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, stride, groups)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = _conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride
        self.skip_add_relu = FloatFunctional()
        self.relu1 = nn.ReLU(inplace=False)
        self.relu2 = nn.ReLU(inplace=False)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.skip_add_relu.add_relu(out, identity)

    def fuse_model(self, is_qat: bool = False) -> None:
        _common.fuse(self, [["conv1", "bn1", "relu1"], ["conv2", "bn2", "relu2"], ["conv3", "bn3"]], is_qat)
        if self.downsample is not None:
            _common.fuse(self.downsample, ["0", "1"], is_qat)


Block = Type[Union[QuantizableBasicBlock, QuantizableBottleneck]]


class QuantizableResNet(nn.Module):
    """ResNet with ``QuantStub`` / ``DeQuantStub`` around the float network.

    Parameters
    ----------
    block : type
        ``QuantizableBasicBlock`` or ``QuantizableBottleneck``.
    layers : list of int
        Blocks per stage (4 stages).
    num_classes : int
        Classifier width.
    groups, width_per_group : int
        ResNeXt cardinality and per-group bottleneck width (1 and 64 for plain ResNet).
    """

    def __init__(self, block: Block, layers: List[int], num_classes: int = 1000, groups: int = 1,
                 width_per_group: int = 64) -> None:
        super().__init__()
        self.inplanes = 64
        self.groups = groups
        self.base_width = width_per_group
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        self.quant = tq.QuantStub()
        self.dequant = tq.DeQuantStub()

    def _make_layer(self, block: Block, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            # Projection shortcut: only where the identity's shape changes.
            downsample = nn.Sequential(
                _conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        stage = [block(self.inplanes, planes, stride, downsample, self.groups, self.base_width)]
        self.inplanes = planes * block.expansion
        stage += [block(self.inplanes, planes, groups=self.groups, base_width=self.base_width)
                  for _ in range(1, blocks)]
        return nn.Sequential(*stage)

    def _forward_impl(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.dequant(self._forward_impl(self.quant(x)))

    def fuse_model(self, is_qat: bool = False) -> None:
        """Fuse Conv+BN(+ReLU) in place; numerics are unchanged, the model stays float.

        Parameters
        ----------
        is_qat : bool
            Use the QAT fusions (BN kept trainable) instead of folding BN into the conv.
        """
        _common.fuse(self, ["conv1", "bn1", "relu"], is_qat)
        for m in self.modules():
            if type(m) is QuantizableBottleneck or type(m) is QuantizableBasicBlock:
                m.fuse_model(is_qat)


def resnet18(quantize: bool = False, seed: int = 0, num_classes: int = 1000, *, pretrained: bool = False,
        progress: bool = True) -> QuantizableResNet:
    """ResNet-18 with seeded random weights (11.7M parameters).

    Parameters
    ----------
    quantize : bool
        Return the fbgemm post-training-quantized model (calibrated on seeded random inputs).
    seed : int
        Same seed, identical weights.
    num_classes : int
        Classifier width.
    pretrained : bool
        Accepted for torchvision's signature: pretrained weights cannot be fetched here, so this warns
        and gives the seeded random weights.
    progress : bool
        Accepted for torchvision's signature; unused.

    Returns
    -------
    QuantizableResNet
        In eval mode.
    """
    return _common.build("resnet18", lambda: QuantizableResNet(QuantizableBasicBlock, [2, 2, 2, 2], num_classes),
                         seed, quantize, pretrained=pretrained)


def resnet50(quantize: bool = False, seed: int = 0, num_classes: int = 1000, *, pretrained: bool = False,
        progress: bool = True) -> QuantizableResNet:
    """ResNet-50 with seeded random weights (25.6M parameters); arguments as :func:`resnet18`."""
    return _common.build("resnet50", lambda: QuantizableResNet(QuantizableBottleneck, [3, 4, 6, 3], num_classes),
                         seed, quantize, pretrained=pretrained)


def resnext50_32x4d(quantize: bool = False, seed: int = 0, num_classes: int = 1000, *, pretrained: bool = False,
        progress: bool = True) -> QuantizableResNet:
    """ResNeXt-50 32x4d with seeded random weights (25.0M parameters); arguments as :func:`resnet18`.

    torchvision ships no quantizable ResNeXt-50, but ``QuantizableResNet`` with ``groups=32,
    width_per_group=4`` is exactly what its ``resnext101_32x8d`` recipe gives for the 50-layer depth.
    """
    return _common.build(
        "resnext50_32x4d",
        lambda: QuantizableResNet(QuantizableBottleneck, [3, 4, 6, 3], num_classes, groups=32, width_per_group=4),
        seed, quantize, pretrained=pretrained)
