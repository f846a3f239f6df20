"""Quantizable GoogLeNet / Inception-v1 (Szegedy et al., 2014), torchvision-compatible.

Follows ``torchvision.models.quantization.googlenet``: every conv is Conv+BN+ReLU (fused for
quantization) and each Inception block joins its four branches with ``FloatFunctional.cat``.
torchvision's known quirk is kept: the "5x5" branch uses a 3x3 kernel (pytorch/vision#906), so
torchvision checkpoints load into this model.
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

__all__ = ["GoogLeNetOutputs", "QuantizableBasicConv2d", "QuantizableInception", "QuantizableInceptionAux",
           "QuantizableGoogLeNet", "googlenet"]

GoogLeNetOutputs = namedtuple("GoogLeNetOutputs", ["logits", "aux_logits2", "aux_logits1"])


class QuantizableInception(nn.Module):
    """Four parallel branches (1x1; 1x1->3x3; 1x1->3x3; maxpool->1x1) concatenated on channels."""

    def __init__(self, in_channels: int, ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int, ch5x5: int,
                 pool_proj: int) -> None:
        super().__init__()
        conv_block = QuantizableBasicConv2d
        self.branch1 = conv_block(in_channels, ch1x1, kernel_size=1)
        self.branch2 = nn.Sequential(
            conv_block(in_channels, ch3x3red, kernel_size=1),
            conv_block(ch3x3red, ch3x3, kernel_size=3, padding=1),
        )
        self.branch3 = nn.Sequential(
            conv_block(in_channels, ch5x5red, kernel_size=1),
            # 3x3, not 5x5: torchvision's (documented) deviation from the paper, kept for compatibility.
            conv_block(ch5x5red, ch5x5, kernel_size=3, padding=1),
        )
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True),
            conv_block(in_channels, pool_proj, kernel_size=1),
        )
        self.cat = FloatFunctional()

    def _forward(self, x: Tensor) -> List[Tensor]:
        return [self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)]

    def forward(self, x: Tensor) -> Tensor:
        return self.cat.cat(self._forward(x), 1)


class QuantizableInceptionAux(nn.Module):
    """Auxiliary classifier head; only evaluated in training mode."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.7) -> None:
        super().__init__()
        self.conv = QuantizableBasicConv2d(in_channels, 128, kernel_size=1)
        self.fc1 = nn.Linear(2048, 1024)
        self.fc2 = nn.Linear(1024, num_classes)
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = F.adaptive_avg_pool2d(x, (4, 4))  # N x 512|528 x 14 x 14 -> 4 x 4
        x = torch.flatten(self.conv(x), 1)  # N x 2048
        x = self.dropout(self.relu(self.fc1(x)))
        return self.fc2(x)


class QuantizableGoogLeNet(nn.Module):
    """GoogLeNet with ``QuantStub`` / ``DeQuantStub`` around the float network.

    Parameters
    ----------
    num_classes : int
        Classifier width.
    aux_logits : bool
        Build the two auxiliary heads.  They only run in training mode; in eval mode the model returns
        the logits tensor either way.
    transform_input : bool
        Re-normalise the input from ImageNet mean/std to [-1, 1] per channel (for TF-ported weights);
        done in float, before the ``QuantStub``.
    dropout, dropout_aux : float
        Dropout of the main and auxiliary classifiers (identity in eval mode).
    """

    def __init__(self, num_classes: int = 1000, aux_logits: bool = False, transform_input: bool = False,
                 dropout: float = 0.2, dropout_aux: float = 0.7) -> None:
        super().__init__()
        conv_block, inception_block = QuantizableBasicConv2d, QuantizableInception
        self.aux_logits = aux_logits
        self.transform_input = transform_input

        self.conv1 = conv_block(3, 64, kernel_size=7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = conv_block(64, 64, kernel_size=1)
        self.conv3 = conv_block(64, 192, kernel_size=3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)

        self.inception3a = inception_block(192, 64, 96, 128, 16, 32, 32)
        self.inception3b = inception_block(256, 128, 128, 192, 32, 96, 64)
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)

        self.inception4a = inception_block(480, 192, 96, 208, 16, 48, 64)
        self.inception4b = inception_block(512, 160, 112, 224, 24, 64, 64)
        self.inception4c = inception_block(512, 128, 128, 256, 24, 64, 64)
        self.inception4d = inception_block(512, 112, 144, 288, 32, 64, 64)
        self.inception4e = inception_block(528, 256, 160, 320, 32, 128, 128)
        self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)

        self.inception5a = inception_block(832, 256, 160, 320, 32, 128, 128)
        self.inception5b = inception_block(832, 384, 192, 384, 48, 128, 128)

        self.aux1: Optional[QuantizableInceptionAux] = None
        self.aux2: Optional[QuantizableInceptionAux] = None
        if aux_logits:
            self.aux1 = QuantizableInceptionAux(512, num_classes, dropout=dropout_aux)
            self.aux2 = QuantizableInceptionAux(528, num_classes, dropout=dropout_aux)

        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(1024, num_classes)
        self.quant = tq.QuantStub()
        self.dequant = tq.DeQuantStub()

    def _transform_input(self, x: Tensor) -> Tensor:
        return _common.imagenet_transform_input(x) if self.transform_input else x

    def _forward(self, x: Tensor) -> Tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
        x = self.maxpool1(self.conv1(x))  # N x 64 x 56 x 56
        x = self.maxpool2(self.conv3(self.conv2(x)))  # N x 192 x 28 x 28
        x = self.maxpool3(self.inception3b(self.inception3a(x)))  # N x 480 x 14 x 14
        x = self.inception4a(x)  # N x 512 x 14 x 14
        aux1 = self.aux1(x) if self.aux1 is not None and self.training else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))  # N x 528 x 14 x 14
        aux2 = self.aux2(x) if self.aux2 is not None and self.training else None
        x = self.maxpool4(self.inception4e(x))  # N x 832 x 7 x 7
        x = self.inception5b(self.inception5a(x))  # N x 1024 x 7 x 7
        x = torch.flatten(self.avgpool(x), 1)
        x = self.fc(self.dropout(x))
        return x, aux2, aux1

    def forward(self, x: Tensor) -> Union[Tensor, GoogLeNetOutputs]:
        x = self.quant(self._transform_input(x))
        x, aux2, aux1 = self._forward(x)
        x = self.dequant(x)
        if self.training and self.aux_logits:
            return GoogLeNetOutputs(x, aux2, aux1)
        return x

    def fuse_model(self, is_qat: bool = False) -> None:
        """Fuse every Conv+BN+ReLU in place (numerics unchanged)."""
        for m in self.modules():
            if type(m) is QuantizableBasicConv2d:
                m.fuse_model(is_qat)


def _trunc_normal_001(conv: nn.Conv2d) -> None:
    """torchvision's GoogLeNet conv init: truncated normal, std 0.01, cut at +-2 (i.e. +-200 sigma)."""
    nn.init.trunc_normal_(conv.weight, mean=0.0, std=0.01, a=-2, b=2)


def googlenet(quantize: bool = False, seed: int = 0, num_classes: int = 1000,
              aux_logits: bool = False, *, pretrained: bool = False, progress: bool = True) -> QuantizableGoogLeNet:
    """GoogLeNet with seeded random weights (6.6M parameters without the auxiliary heads).

    Parameters
    ----------
    quantize : bool
        Return the fbgemm post-training-quantized model (calibrated on seeded random inputs).
    seed : int
        Same seed, identical weights.
    num_classes : int
        Classifier width.
    aux_logits : bool
        Also build the two auxiliary heads (+6.4M parameters).  Off by default, as in torchvision's
        pretrained GoogLeNet: they never run in eval mode, so they are not in the traced graph, and when
        quantizing they would see no calibration data.

    Returns
    -------
    QuantizableGoogLeNet
        In eval mode, ``transform_input=False``.
    """
    if aux_logits and quantize:
        warnings.warn("googlenet: the auxiliary heads do not run in eval mode, so PTQ leaves them "
                      "uncalibrated", UserWarning, stacklevel=2)
    return _common.build("googlenet", lambda: QuantizableGoogLeNet(num_classes, aux_logits=aux_logits),
                         seed, quantize, conv_init=_trunc_normal_001, pretrained=pretrained)
