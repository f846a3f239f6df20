"""Quantizable SSDlite320 with a MobileNetV3-Large backbone, laid out as torchvision's
``ssdlite320_mobilenet_v3_large``.

- Backbone: the zoo's MobileNetV3-Large blocks (:mod:`mera.models.mobilenetv3`) with the "reduced tail" torchvision
  uses when no pretrained backbone is loaded (C4/C5 blocks at half width: 80 channels, 480 in the last conv), BN eps
  1e-3.  As in torchvision's ``SSDLiteFeatureExtractorMobileNet`` the backbone is cut inside the C4 block: the first
  feature map (stride 16, 672 channels) is the output of C4's expansion conv, the second (stride 32, 480 channels) the
  output of the last conv.
- Four extra blocks (1x1 conv -> depthwise 3x3 stride 2 -> 1x1 conv, each BN + ReLU6) to 512, 256, 256, 128 channels
  (strides 64 ... 512; at 320x320 the six maps are 20, 10, 5, 3, 2, 1 pixels wide).
- Separable-conv heads per map: depthwise 3x3 conv + BN + ReLU6, then a 1x1 conv to ``6 * 4`` box offsets and
  ``6 * num_classes`` class logits (six default boxes per location); each map's output is permuted to channels-last
  and flattened to ``(N, H * W * 6, K)``, and the maps are concatenated (a ``FloatFunctional`` cat) -- the shapes
  torchvision's ``SSDLiteHead`` returns.

As the zoo's MobileNetV2, ReLU6 becomes ReLU for eager-mode fusion (``replace_relu``; a quantized activation's
range is clamped by its output scale anyway).  The model returns ``(bbox_regression, cls_logits)``: the anchor
generation, box decoding and NMS of torchvision's ``SSD`` are host post-processing and not part of the network.
Weights are seeded random (no model hub here).
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
from .mobilenetv3 import InvertedResidualConfig, QuantizableInvertedResidual, QuantizableSqueezeExcitation

__all__ = ["QuantizableSSDLite", "ssdlite320_mobilenet_v3_large"]

_common.INPUT_SHAPES["ssdlite320_mobilenet_v3_large"] = (1, 3, 320, 320)


def reduced_tail_config() -> List[InvertedResidualConfig]:
    """MobileNetV3-Large's blocks with torchvision's ``reduced_tail=True`` (C4 and C5 at half width)."""
    rd = 2
    b = InvertedResidualConfig
    return [
        b(16, 3, 16, 16, False, "RE", 1),
        b(16, 3, 64, 24, False, "RE", 2),  # C1
        b(24, 3, 72, 24, False, "RE", 1),
        b(24, 5, 72, 40, True, "RE", 2),  # C2
        b(40, 5, 120, 40, True, "RE", 1),
        b(40, 5, 120, 40, True, "RE", 1),
        b(40, 3, 240, 80, False, "HS", 2),  # C3
        b(80, 3, 200, 80, False, "HS", 1),
        b(80, 3, 184, 80, False, "HS", 1),
        b(80, 3, 184, 80, False, "HS", 1),
        b(80, 3, 480, 112, True, "HS", 1),
        b(112, 3, 672, 112, True, "HS", 1),
        b(112, 5, 672, 160 // rd, True, "HS", 2),  # C4
        b(160 // rd, 5, 960 // rd, 160 // rd, True, "HS", 1),
        b(160 // rd, 5, 960 // rd, 160 // rd, True, "HS", 1),
    ]


def _extra_block(cin: int, cout: int, norm_layer: Callable[..., nn.Module]) -> nn.Sequential:
    mid = cout // 2
    return nn.Sequential(
        Conv2dNormActivation(cin, mid, kernel_size=1, norm_layer=norm_layer, activation_layer=nn.ReLU6),
        Conv2dNormActivation(mid, mid, kernel_size=3, stride=2, groups=mid, norm_layer=norm_layer,
                             activation_layer=nn.ReLU6),
        Conv2dNormActivation(mid, cout, kernel_size=1, norm_layer=norm_layer, activation_layer=nn.ReLU6),
    )


def _prediction_block(cin: int, cout: int, norm_layer: Callable[..., nn.Module]) -> nn.Sequential:
    return nn.Sequential(
        Conv2dNormActivation(cin, cin, kernel_size=3, groups=cin, norm_layer=norm_layer, activation_layer=nn.ReLU6),
        nn.Conv2d(cin, cout, 1),
    )


class ScoringHead(nn.Module):
    """One prediction block per feature map; outputs flattened to ``(N, sum(H * W * anchors), columns)``."""

    def __init__(self, channels: Sequence[int], num_anchors: Sequence[int], columns: int,
                 norm_layer: Callable[..., nn.Module]) -> None:
        super().__init__()
        self.columns = columns
        self.module_list = nn.ModuleList(_prediction_block(c, columns * a, norm_layer)
                                         for c, a in zip(channels, num_anchors))
        self.cat = FloatFunctional()

    def forward(self, xs: List[Tensor]) -> Tensor:
        ys = []
        for block, x in zip(self.module_list, xs):
            y = block(x)
            n = y.shape[0]
            # (N, A*K, H, W) -> (N, H, W, A*K) -> (N, H*W*A, K): torchvision's view/permute/reshape, 4-D
            ys.append(y.permute(0, 2, 3, 1).reshape(n, -1, self.columns))
        return self.cat.cat(ys, 1)


class QuantizableSSDLite(nn.Module):
    """SSDlite320 (MobileNetV3-Large backbone, reduced tail) with ``QuantStub`` / ``DeQuantStub``.

    Parameters
    ----------
    num_classes : int
        Classes including background (91 for COCO, torchvision's default).
    """

    def __init__(self, num_classes: int = 91) -> None:
        super().__init__()
        norm_layer = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)
        setting = reduced_tail_config()
        layers: List[nn.Module] = [Conv2dNormActivation(3, setting[0].input_channels, kernel_size=3, stride=2,
                                                        norm_layer=norm_layer, activation_layer=nn.Hardswish)]
        layers += [QuantizableInvertedResidual(cnf, norm_layer) for cnf in setting]
        last_in = setting[-1].out_channels
        layers.append(Conv2dNormActivation(last_in, 6 * last_in, kernel_size=1, norm_layer=norm_layer,
                                           activation_layer=nn.Hardswish))
        c4 = [i for i, m in enumerate(layers) if getattr(m, "_is_cn", False)][-1]
        c4_block = layers[c4]
        assert isinstance(c4_block, QuantizableInvertedResidual) and not c4_block.use_res_connect
        self.features = nn.Sequential(
            nn.Sequential(*layers[:c4], c4_block.block[0]),  # start .. C4 expansion conv
            nn.Sequential(c4_block.block[1:], *layers[c4 + 1:]),  # C4 depthwise .. last conv
        )
        channels = [c4_block.block[0].out_channels, 6 * last_in, 512, 256, 256, 128]
        self.extra = nn.ModuleList([_extra_block(channels[1], 512, norm_layer), _extra_block(512, 256, norm_layer),
                                    _extra_block(256, 256, norm_layer), _extra_block(256, 128, norm_layer)])
        anchors = [6] * 6
        self.regression_head = ScoringHead(channels, anchors, 4, norm_layer)
        self.classification_head = ScoringHead(channels, anchors, num_classes, norm_layer)
        self.quant = tq.QuantStub()
        self.dequant_boxes = tq.DeQuantStub()
        self.dequant_logits = tq.DeQuantStub()

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        x = self.quant(x)
        feats = []
        for block in self.features:
            x = block(x)
            feats.append(x)
        for block in self.extra:
            x = block(x)
            feats.append(x)
        return (self.dequant_boxes(self.regression_head(feats)),
                self.dequant_logits(self.classification_head(feats)))

    def fuse_model(self, is_qat: bool = False) -> None:
        """Fuse Conv+BN(+ReLU) in place (hardswish stays separate), and the SE blocks' fc1+ReLU."""
        for m in self.modules():
            if type(m) is Conv2dNormActivation:
                group = ["0", "1"]
                if len(m) == 3 and type(m[2]) is nn.ReLU:
                    group.append("2")
                _common.fuse(m, group, is_qat)
            elif type(m) is QuantizableSqueezeExcitation:
                m.fuse_model(is_qat)


def ssdlite320_mobilenet_v3_large(quantize: bool = False, seed: int = 0, num_classes: int = 91) -> QuantizableSSDLite:
    """SSDlite320 with a MobileNetV3-Large backbone, seeded random weights, 320x320 inputs.

    Parameters
    ----------
    quantize : bool
        Return the fbgemm post-training-quantized model (calibrated on seeded random inputs).
    seed : int
        Same seed, identical weights.
    num_classes : int
        Classes including background.

    Returns
    -------
    QuantizableSSDLite
        In eval mode; ``forward`` returns ``(bbox_regression (N, 3234, 4), cls_logits (N, 3234, num_classes))``.
    """
    model = _common.build("ssdlite320_mobilenet_v3_large", lambda: QuantizableSSDLite(num_classes), seed,
                          quantize=False)
    # torchvision's _normal_init (std 0.03, zero bias) for the heads' output convs, which have no BN to normalise
    # them: box offsets and logits then have std ~1.  (It follows the statistics pass, which build() ends with.)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed + 1)
        for head in (model.regression_head, model.classification_head):
            for block in head.module_list:
                nn.init.normal_(block[1].weight, 0.0, 0.03)
                nn.init.zeros_(block[1].bias)
    if quantize:
        from .ptq import calibration_data, quantize_ptq

        quantize_ptq(model, calibration_data("ssdlite320_mobilenet_v3_large", n=2, seed=seed))
    return model
