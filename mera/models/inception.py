"""Quantizable Inception-v3 (Szegedy et al., 2015), torchvision-compatible, for 299x299 inputs.

Follows ``torchvision.models.quantization.inception``: every conv is Conv+BN+ReLU (fused for
quantization), branch outputs are joined with ``FloatFunctional.cat`` (named ``myop``; InceptionE has
``myop1``-``myop3`` for its nested concatenations), pooling branches use functional avg/max pooling.
"""

from __future__ import annotations

import warnings
from collections import namedtuple
from typing import Any, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import torch.ao.quantization as tq
from torch.ao.nn.quantized import FloatFunctional

from . import _common
from ._common import QuantizableBasicConv2d

__all__ = ["InceptionOutputs", "QuantizableBasicConv2d", "QuantizableInceptionA", "QuantizableInceptionB",
           "QuantizableInceptionC", "QuantizableInceptionD", "QuantizableInceptionE", "QuantizableInceptionAux",
           "QuantizableInception3", "inception_v3"]

InceptionOutputs = namedtuple("InceptionOutputs", ["logits", "aux_logits"])


Conv = QuantizableBasicConv2d


class QuantizableInceptionA(nn.Module):
    """35x35 block: 1x1 | 1x1->5x5 | 1x1->3x3->3x3 | avgpool->1x1."""

    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = Conv(in_channels, 64, kernel_size=1)
        self.branch5x5_1 = Conv(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = Conv(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = Conv(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = Conv(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = Conv(96, 96, kernel_size=3, padding=1)
        self.branch_pool = Conv(in_channels, pool_features, kernel_size=1)
        self.myop = FloatFunctional()

    def _forward(self, x: Tensor) -> List[Tensor]:
        branch1x1 = self.branch1x1(x)
        branch5x5 = self.branch5x5_2(self.branch5x5_1(x))
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        branch_pool = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))
        return [branch1x1, branch5x5, branch3x3dbl, branch_pool]

    def forward(self, x: Tensor) -> Tensor:
        return self.myop.cat(self._forward(x), 1)


class QuantizableInceptionB(nn.Module):
    """35x35 -> 17x17 reduction: 3x3/2 | 1x1->3x3->3x3/2 | maxpool/2."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = Conv(in_channels, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = Conv(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = Conv(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = Conv(96, 96, kernel_size=3, stride=2)
        self.myop = FloatFunctional()

    def _forward(self, x: Tensor) -> List[Tensor]:
        branch3x3 = self.branch3x3(x)
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        branch_pool = F.max_pool2d(x, kernel_size=3, stride=2)
        return [branch3x3, branch3x3dbl, branch_pool]

    def forward(self, x: Tensor) -> Tensor:
        return self.myop.cat(self._forward(x), 1)


class QuantizableInceptionC(nn.Module):
    """17x17 block with factorised 7x7 convs (1x7 / 7x1)."""

    def __init__(self, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = Conv(in_channels, 192, kernel_size=1)
        self.branch7x7_1 = Conv(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = Conv(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = Conv(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = Conv(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = Conv(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = Conv(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = Conv(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = Conv(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = Conv(in_channels, 192, kernel_size=1)
        self.myop = FloatFunctional()

    def _forward(self, x: Tensor) -> List[Tensor]:
        branch1x1 = self.branch1x1(x)
        branch7x7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        branch7x7dbl = self.branch7x7dbl_1(x)
        branch7x7dbl = self.branch7x7dbl_3(self.branch7x7dbl_2(branch7x7dbl))
        branch7x7dbl = self.branch7x7dbl_5(self.branch7x7dbl_4(branch7x7dbl))
        branch_pool = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))
        return [branch1x1, branch7x7, branch7x7dbl, branch_pool]

    def forward(self, x: Tensor) -> Tensor:
        return self.myop.cat(self._forward(x), 1)


class QuantizableInceptionD(nn.Module):
    """17x17 -> 8x8 reduction: 1x1->3x3/2 | 1x1->1x7->7x1->3x3/2 | maxpool/2."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = Conv(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = Conv(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = Conv(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = Conv(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = Conv(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = Conv(192, 192, kernel_size=3, stride=2)
        self.myop = FloatFunctional()

    def _forward(self, x: Tensor) -> List[Tensor]:
        branch3x3 = self.branch3x3_2(self.branch3x3_1(x))
        branch7x7x3 = self.branch7x7x3_2(self.branch7x7x3_1(x))
        branch7x7x3 = self.branch7x7x3_4(self.branch7x7x3_3(branch7x7x3))
        branch_pool = F.max_pool2d(x, kernel_size=3, stride=2)
        return [branch3x3, branch7x7x3, branch_pool]

    def forward(self, x: Tensor) -> Tensor:
        return self.myop.cat(self._forward(x), 1)


class QuantizableInceptionE(nn.Module):
    """8x8 block whose 3x3 branches fan out into parallel 1x3 / 3x1 convs (concatenated)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch1x1 = Conv(in_channels, 320, kernel_size=1)
        self.branch3x3_1 = Conv(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = Conv(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = Conv(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = Conv(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = Conv(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = Conv(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = Conv(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = Conv(in_channels, 192, kernel_size=1)
        # Three separate FloatFunctionals: each cat gets its own output observer / quantization params.
        self.myop1 = FloatFunctional()
        self.myop2 = FloatFunctional()
        self.myop3 = FloatFunctional()

    def _forward(self, x: Tensor) -> List[Tensor]:
        branch1x1 = self.branch1x1(x)
        branch3x3 = self.branch3x3_1(x)
        branch3x3 = self.myop1.cat([self.branch3x3_2a(branch3x3), self.branch3x3_2b(branch3x3)], 1)
        branch3x3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        branch3x3dbl = self.myop2.cat([self.branch3x3dbl_3a(branch3x3dbl), self.branch3x3dbl_3b(branch3x3dbl)], 1)
        branch_pool = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))
        return [branch1x1, branch3x3, branch3x3dbl, branch_pool]

    def forward(self, x: Tensor) -> Tensor:
        return self.myop3.cat(self._forward(x), 1)


class QuantizableInceptionAux(nn.Module):
    """Auxiliary classifier on the 17x17 features; only evaluated in training mode."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv0 = Conv(in_channels, 128, kernel_size=1)
        self.conv1 = Conv(128, 768, kernel_size=5)
        # torchvision sets these init hints too; as there, the conv one sits on the block, not on the
        # nn.Conv2d the init looks at, so it has no effect (and all Linear layers get our own init).
        self.conv1.stddev = 0.01  # type: ignore[assignment]
        self.fc = nn.Linear(768, num_classes)
        self.fc.stddev = 0.001  # type: ignore[assignment]

    def forward(self, x: Tensor) -> Tensor:
        x = F.avg_pool2d(x, kernel_size=5, stride=3)  # N x 768 x 5 x 5
        x = self.conv1(self.conv0(x))  # N x 768 x 1 x 1
        x = torch.flatten(F.adaptive_avg_pool2d(x, (1, 1)), 1)
        return self.fc(x)


class QuantizableInception3(nn.Module):
    """Inception-v3 with ``QuantStub`` / ``DeQuantStub`` around the float network.

    Parameters
    ----------
    num_classes : int
        Classifier width.
    aux_logits : bool
        Build the auxiliary head (``AuxLogits``); it only runs in training mode.
    transform_input : bool
        Re-normalise the input from ImageNet mean/std to [-1, 1] per channel (for TF-ported weights);
        done in float, before the ``QuantStub``.
    dropout : float
        Classifier dropout (identity in eval mode).
    """

    def __init__(self, num_classes: int = 1000, aux_logits: bool = False, transform_input: bool = False,
                 dropout: float = 0.5) -> None:
        super().__init__()
        self.aux_logits = aux_logits
        self.transform_input = transform_input
        self.Conv2d_1a_3x3 = Conv(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = Conv(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = Conv(32, 64, kernel_size=3, padding=1)
        self.maxpool1 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Conv2d_3b_1x1 = Conv(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = Conv(80, 192, kernel_size=3)
        self.maxpool2 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Mixed_5b = QuantizableInceptionA(192, pool_features=32)
        self.Mixed_5c = QuantizableInceptionA(256, pool_features=64)
        self.Mixed_5d = QuantizableInceptionA(288, pool_features=64)
        self.Mixed_6a = QuantizableInceptionB(288)
        self.Mixed_6b = QuantizableInceptionC(768, channels_7x7=128)
        self.Mixed_6c = QuantizableInceptionC(768, channels_7x7=160)
        self.Mixed_6d = QuantizableInceptionC(768, channels_7x7=160)
        self.Mixed_6e = QuantizableInceptionC(768, channels_7x7=192)
        self.AuxLogits: Optional[QuantizableInceptionAux] = None
        if aux_logits:
            self.AuxLogits = QuantizableInceptionAux(768, num_classes)
        self.Mixed_7a = QuantizableInceptionD(768)
        self.Mixed_7b = QuantizableInceptionE(1280)
        self.Mixed_7c = QuantizableInceptionE(2048)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(2048, num_classes)
        self.quant = tq.QuantStub()
        self.dequant = tq.DeQuantStub()

    def _transform_input(self, x: Tensor) -> Tensor:
        return _common.imagenet_transform_input(x) if self.transform_input else x

    def _forward(self, x: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))  # N x 64 x 147 x 147
        x = self.maxpool1(x)  # N x 64 x 73 x 73
        x = self.maxpool2(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)))  # N x 192 x 35 x 35
        x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x)))  # N x 288 x 35 x 35
        x = self.Mixed_6a(x)  # N x 768 x 17 x 17
        x = self.Mixed_6e(self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(x))))
        aux = self.AuxLogits(x) if self.AuxLogits is not None and self.training else None
        x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))  # N x 2048 x 8 x 8
        x = self.dropout(self.avgpool(x))  # dropout before flatten, as torchvision
        x = self.fc(torch.flatten(x, 1))
        return x, aux

    def forward(self, x: Tensor) -> Union[Tensor, InceptionOutputs]:
        x = self.quant(self._transform_input(x))
        x, aux = self._forward(x)
        x = self.dequant(x)
        if self.training and self.aux_logits:
            return InceptionOutputs(x, aux)
        return x

    def fuse_model(self, is_qat: bool = False) -> None:
        """Fuse every Conv+BN+ReLU in place (numerics unchanged)."""
        for m in self.modules():
            if type(m) is QuantizableBasicConv2d:
                m.fuse_model(is_qat)


def _trunc_normal_stddev(conv: nn.Conv2d) -> None:
    """torchvision's Inception-v3 init: truncated normal, std 0.1 (or the layer's ``stddev``), cut at +-2."""
    stddev = float(getattr(conv, "stddev", 0.1))
    nn.init.trunc_normal_(conv.weight, mean=0.0, std=stddev, a=-2, b=2)


def inception_v3(quantize: bool = False, seed: int = 0, num_classes: int = 1000,
                 aux_logits: bool = False, *, pretrained: bool = False,
                 progress: bool = True) -> QuantizableInception3:
    """Inception-v3 with seeded random weights, for 1x3x299x299 inputs.

    23.8M parameters without the auxiliary head; torchvision's published 27.2M counts it
    (``aux_logits=True``).

    Parameters
    ----------
    quantize : bool
        Return the fbgemm post-training-quantized model (calibrated on seeded random inputs).
    seed : int
        Same seed, identical weights.
    num_classes : int
        Classifier width.
    aux_logits : bool
        Also build the auxiliary head (+3.3M parameters).  Off by default, as torchvision does for its
        pretrained (and quantized) Inception-v3: it never runs in eval mode, so it is not in the traced
        graph, and when quantizing it would see no calibration data.

    Returns
    -------
    QuantizableInception3
        In eval mode, ``transform_input=False``.
    """
    if aux_logits and quantize:
        warnings.warn("inception_v3: the auxiliary head does not run in eval mode, so PTQ leaves it "
                      "uncalibrated", UserWarning, stacklevel=2)
    return _common.build("inception_v3", lambda: QuantizableInception3(num_classes, aux_logits=aux_logits),
                         seed, quantize, conv_init=_trunc_normal_stddev, pretrained=pretrained)
