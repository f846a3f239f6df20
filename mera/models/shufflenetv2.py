"""Quantizable ShuffleNetV2 (Ma et al., 2018), torchvision-compatible.

Follows ``torchvision.models.quantization.shufflenetv2``: stride-1 units split the input with
``chunk``, the branches are joined with ``FloatFunctional.cat`` and channels are shuffled with
view / transpose / contiguous / view.
"""

from __future__ import annotations

from typing import List

import torch
from torch import Tensor, nn

import torch.ao.quantization as tq
from torch.ao.nn.quantized import FloatFunctional

from . import _common

__all__ = ["channel_shuffle", "QuantizableInvertedResidual", "QuantizableShuffleNetV2", "shufflenet_v2_x1_0"]


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """Interleave the channels of `groups` equal channel groups: (g, c/g) -> (c/g, g)."""
    batchsize, num_channels, height, width = x.size()
    channels_per_group = num_channels // groups
    x = x.view(batchsize, groups, channels_per_group, height, width)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(batchsize, -1, height, width)


def _depthwise_conv(channels: int, kernel_size: int, stride: int = 1, padding: int = 0) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, kernel_size, stride, padding, bias=False, groups=channels)


class QuantizableInvertedResidual(nn.Module):
    """ShuffleNetV2 unit.

    Stride 1: split channels in half, transform one half (``branch2``), concatenate, shuffle.  Stride 2:
    both branches see the whole input and each halves the resolution; ``branch1`` is then the second
    branch (for stride 1 it is an empty Sequential, as in torchvision).

    Parameters
    ----------
    inp, oup : int
        Input and output channels.
    stride : int
        1 or 2 (up to 3 accepted, as torchvision).
    """

    def __init__(self, inp: int, oup: int, stride: int) -> None:
        super().__init__()
        if not 1 <= stride <= 3:
            raise ValueError("illegal stride value")
        self.stride = stride
        branch_features = oup // 2
        if stride == 1 and inp != branch_features << 1:
            raise ValueError(f"Invalid combination of stride {stride}, inp {inp} and oup {oup} values. "
                             "If stride == 1 then inp should be equal to oup // 2 << 1.")
        if stride > 1:
            self.branch1 = nn.Sequential(
                _depthwise_conv(inp, 3, stride, 1),
                nn.BatchNorm2d(inp),
                nn.Conv2d(inp, branch_features, kernel_size=1, stride=1, padding=0, bias=False),
                nn.BatchNorm2d(branch_features),
                nn.ReLU(inplace=True),
            )
        else:
            self.branch1 = nn.Sequential()
        self.branch2 = nn.Sequential(
            nn.Conv2d(inp if stride > 1 else branch_features, branch_features, kernel_size=1, stride=1, padding=0,
                      bias=False),
            nn.BatchNorm2d(branch_features),
            nn.ReLU(inplace=True),
            _depthwise_conv(branch_features, 3, stride, 1),
            nn.BatchNorm2d(branch_features),
            nn.Conv2d(branch_features, branch_features, kernel_size=1, stride=1, padding=0, bias=False),
            nn.BatchNorm2d(branch_features),
            nn.ReLU(inplace=True),
        )
        self.cat = FloatFunctional()

    def forward(self, x: Tensor) -> Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = self.cat.cat([x1, self.branch2(x2)], dim=1)
        else:
            out = self.cat.cat([self.branch1(x), self.branch2(x)], dim=1)
        return channel_shuffle(out, 2)


class QuantizableShuffleNetV2(nn.Module):
    """ShuffleNetV2 with ``QuantStub`` / ``DeQuantStub`` around the float network.

    Parameters
    ----------
    stages_repeats : list of int
        Units in stages 2, 3, 4.
    stages_out_channels : list of int
        Output channels of conv1, stages 2-4 and conv5.
    num_classes : int
        Classifier width.
    """

    def __init__(self, stages_repeats: List[int], stages_out_channels: List[int], num_classes: int = 1000) -> None:
        super().__init__()
        if len(stages_repeats) != 3:
            raise ValueError("expected stages_repeats as list of 3 positive ints")
        if len(stages_out_channels) != 5:
            raise ValueError("expected stages_out_channels as list of 5 positive ints")
        self._stage_out_channels = stages_out_channels

        input_channels = 3
        output_channels = stages_out_channels[0]
        self.conv1 = nn.Sequential(
            nn.Conv2d(input_channels, output_channels, 3, 2, 1, bias=False),
            nn.BatchNorm2d(output_channels),
            nn.ReLU(inplace=True),
        )
        input_channels = output_channels
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

        self.stage2: nn.Sequential
        self.stage3: nn.Sequential
        self.stage4: nn.Sequential
        for name, repeats, output_channels in zip(("stage2", "stage3", "stage4"), stages_repeats,
                                                  stages_out_channels[1:]):
            units = [QuantizableInvertedResidual(input_channels, output_channels, 2)]
            units += [QuantizableInvertedResidual(output_channels, output_channels, 1) for _ in range(repeats - 1)]
            setattr(self, name, nn.Sequential(*units))
            input_channels = output_channels

        output_channels = stages_out_channels[-1]
        self.conv5 = nn.Sequential(
            nn.Conv2d(input_channels, output_channels, 1, 1, 0, bias=False),
            nn.BatchNorm2d(output_channels),
            nn.ReLU(inplace=True),
        )
        self.fc = nn.Linear(output_channels, num_classes)
        self.quant = tq.QuantStub()
        self.dequant = tq.DeQuantStub()

    def _forward_impl(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.conv1(x))
        x = self.stage4(self.stage3(self.stage2(x)))
        x = self.conv5(x)
        x = x.mean([2, 3])  # global average pool, as torchvision (a reduction, not a pooling op)
        return self.fc(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.dequant(self._forward_impl(self.quant(x)))

    def fuse_model(self, is_qat: bool = False) -> None:
        """Fuse Conv+BN(+ReLU) of the stem, conv5 and every unit's branches in place."""
        for name, m in self._modules.items():
            if name in ("conv1", "conv5") and m is not None:
                _common.fuse(m, [["0", "1", "2"]], is_qat)
        for m in self.modules():
            if type(m) is QuantizableInvertedResidual:
                if len(m.branch1._modules) > 0:
                    _common.fuse(m.branch1, [["0", "1"], ["2", "3", "4"]], is_qat)
                _common.fuse(m.branch2, [["0", "1", "2"], ["3", "4"], ["5", "6", "7"]], is_qat)


def shufflenet_v2_x1_0(quantize: bool = False, seed: int = 0, num_classes: int = 1000, *, pretrained: bool = False,
        progress: bool = True) -> QuantizableShuffleNetV2:
    """ShuffleNetV2 x1.0 with seeded random weights (2.3M parameters).

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
    QuantizableShuffleNetV2
        In eval mode.
    """
    # torchvision's ShuffleNetV2 keeps PyTorch's default conv init (kaiming-uniform), so no conv_init.
    return _common.build(
        "shufflenet_v2_x1_0",
        lambda: QuantizableShuffleNetV2([4, 8, 4], [24, 116, 232, 464, 1024], num_classes),
        seed, quantize, conv_init=None, pretrained=pretrained)
