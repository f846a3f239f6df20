"""mera.models: a small zoo of quantizable ImageNet CNNs in plain PyTorch, for testing the frontends,
plus task models (:data:`TASK_MODELS`: a YOLOv5-style detector with its host decode, SSDlite320).

The models reproduce torchvision's *quantizable* models (``torchvision.models.quantization``) layer for
layer: same submodule names, same ``fuse_model`` fusion groups, ``QuantStub``/``DeQuantStub`` and
``FloatFunctional`` adds/cats/muls.  Quantized with eager-mode post-training quantization (fbgemm) and
traced with ``torch.jit.trace``, they give the same TorchScript ops our users' models give.  Weights are
random but seeded (there is no model hub here), and initialised so activations stay in a realistic range.

This subpackage needs torch; ``import mera`` never imports it.

Example
-------
>>> import mera.models as mm
>>> model = mm.resnet18(quantize=True, seed=0)
>>> x = mm.calibration_data("resnet18", n=1, seed=1)[0]
>>> traced = mm.trace(model, x)
"""

from __future__ import annotations

from typing import Callable, Dict

from torch import nn

from ._common import count_parameters, input_shape
from .googlenet import googlenet
from .inception import inception_v3
from .mobilenetv2 import mobilenet_v2
from .mobilenetv3 import mobilenet_v3_large
from .ptq import calibration_data, quantize_ptq, trace
from .resnet import resnet18, resnet50, resnext50_32x4d
from .segmentation import deeplabv3_mobilenet_v3_large, lraspp_mobilenet_v3_large
from .shufflenetv2 import shufflenet_v2_x1_0
from .ssdlite import ssdlite320_mobilenet_v3_large
from .unet import unet
from .yolo import yolo_decode, yolov5n

#: Model name -> factory ``(quantize=False, seed=0, num_classes=1000) -> nn.Module``.
MODELS: Dict[str, Callable[..., nn.Module]] = {
    "resnet18": resnet18,
    "resnet50": resnet50,
    "resnext50_32x4d": resnext50_32x4d,
    "mobilenet_v2": mobilenet_v2,
    "mobilenet_v3_large": mobilenet_v3_large,
    "shufflenet_v2_x1_0": shufflenet_v2_x1_0,
    "googlenet": googlenet,
    "inception_v3": inception_v3,
}

#: Task models (detection, segmentation): name -> factory ``(quantize=False, seed=0) -> nn.Module``, same
#: recipe as :data:`MODELS`.  They may return a tuple of tensors; :func:`input_shape` and :func:`calibration_data`
#: know their input shapes.
TASK_MODELS: Dict[str, Callable[..., nn.Module]] = {
    "yolov5n": yolov5n,
    "ssdlite320_mobilenet_v3_large": ssdlite320_mobilenet_v3_large,
    "lraspp_mobilenet_v3_large": lraspp_mobilenet_v3_large,  # (1, 21, H, W) logits
    "deeplabv3_mobilenet_v3_large": deeplabv3_mobilenet_v3_large,  # (1, 21, H, W) logits
    "unet": unet,
}

__all__ = [
    "MODELS", "TASK_MODELS", "input_shape", "count_parameters", "quantize_ptq", "calibration_data", "trace",
    "resnet18", "resnet50", "resnext50_32x4d", "mobilenet_v2", "mobilenet_v3_large", "shufflenet_v2_x1_0",
    "googlenet", "inception_v3",
    "yolov5n", "yolo_decode", "ssdlite320_mobilenet_v3_large", "lraspp_mobilenet_v3_large",
    "deeplabv3_mobilenet_v3_large", "unet",
]
