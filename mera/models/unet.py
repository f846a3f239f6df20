"""A small quantizable U-Net (Ronneberger et al., 2015) with transposed-convolution upsampling.

Three encoder levels (two 3x3 Conv+BN+ReLU each, then 2x2 max pooling), a bottleneck, and three decoder
levels that upsample with ``ConvTranspose2d``, concatenate the encoder's skip tensor
(``FloatFunctional.cat``) and apply two more 3x3 Conv+BN+ReLU; a 1x1 conv gives per-pixel class scores.
Input 1x3x128x128, output 1x``num_classes``x128x128.

The upsamplers are 4x4 kernels with stride 2 and padding 1 (the pix2pix / DCGAN upsampler) and, on the
middle level, a 3x3 kernel with stride 2, padding 1 and output_padding 1, rather than the 2x2 stride-2
kernels of the original paper: PyTorch's fbgemm runs a 2x2 transposed conv with channel counts that are
multiples of 8 on a direct kernel that does not compute a transposed convolution (docs/numerics.md), and
the zoo's quantized models are meant to be references for bit-exact comparison.

fbgemm refuses per-channel weights for transposed convolutions, so :meth:`QuantizableUNet.fuse_model` gives
the ``ConvTranspose2d`` layers a per-tensor weight qconfig (what PyTorch's own default qconfig mapping does
for them); every ordinary conv keeps the engine's per-channel default.
"""

from __future__ import annotations

from typing import List

import torch
import torch.ao.quantization as tq
from torch import Tensor, nn
from torch.ao.nn.quantized import FloatFunctional

from . import _common

__all__ = ["QuantizableUNet", "unet"]


class DoubleConv(nn.Module):
    """Two 3x3 Conv+BN+ReLU (bias-free convs), each fusable into one ``ConvReLU2d``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu2 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.relu2(self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))))

    def fuse_model(self, is_qat: bool = False) -> None:
        _common.fuse(self, [["conv1", "bn1", "relu1"], ["conv2", "bn2", "relu2"]], is_qat)


class Up(nn.Module):
    """Transposed-conv upsampling by 2, concatenation with the skip tensor, DoubleConv."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, output_padding: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, kernel_size, stride=2, padding=1,
                                     output_padding=output_padding)
        self.cat = FloatFunctional()
        self.conv = DoubleConv(2 * out_channels, out_channels)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        return self.conv(self.cat.cat([self.up(x), skip], 1))


class QuantizableUNet(nn.Module):
    """U-Net with ``widths`` channels per level (encoder levels, then the bottleneck)."""

    def __init__(self, in_channels: int = 3, num_classes: int = 2, widths: List[int] = (16, 32, 64, 128)) -> None:
        super().__init__()
        w = list(widths)
        self.quant = tq.QuantStub()
        self.enc1 = DoubleConv(in_channels, w[0])
        self.enc2 = DoubleConv(w[0], w[1])
        self.enc3 = DoubleConv(w[1], w[2])
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = DoubleConv(w[2], w[3])
        self.up3 = Up(w[3], w[2], kernel_size=4, output_padding=0)
        self.up2 = Up(w[2], w[1], kernel_size=3, output_padding=1)
        self.up1 = Up(w[1], w[0], kernel_size=4, output_padding=0)
        self.head = nn.Conv2d(w[0], num_classes, 1)
        self.dequant = tq.DeQuantStub()

    def forward(self, x: Tensor) -> Tensor:
        x = self.quant(x)
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        e3 = self.enc3(self.pool(e2))
        b = self.bottleneck(self.pool(e3))
        d = self.up1(self.up2(self.up3(b, e3), e2), e1)
        return self.dequant(self.head(d))

    def fuse_model(self, is_qat: bool = False) -> None:
        """Fuse every Conv+BN+ReLU, and give the transposed convs per-tensor weights (fbgemm has no
        per-channel transposed conv)."""
        for m in self.modules():
            if isinstance(m, DoubleConv):
                m.fuse_model(is_qat)
        engine = torch.backends.quantized.engine
        per_tensor = tq.QConfig(activation=tq.get_default_qconfig(engine).activation,
                                weight=tq.default_weight_observer)
        for m in self.modules():
            if isinstance(m, nn.ConvTranspose2d):
                m.qconfig = per_tensor


def unet(quantize: bool = False, seed: int = 0, num_classes: int = 2) -> QuantizableUNet:
    """A 4-level U-Net (3 encoder levels and a bottleneck; 0.60M parameters) with seeded random weights.

    Parameters
    ----------
    quantize : bool
        Return the fbgemm post-training-quantized model (calibrated on seeded random inputs).
    seed : int
        Same seed, identical weights.
    num_classes : int
        Output channels (per-pixel class scores).

    Returns
    -------
    QuantizableUNet
        In eval mode; input ``mera.models.input_shape("unet")`` = (1, 3, 128, 128).
    """
    return _common.build("unet", lambda: QuantizableUNet(num_classes=num_classes), seed, quantize)
