"""Frontends: import models from other frameworks into mera IR.

torch is imported only when a PyTorch model is imported, onnx only when an
ONNX model is and tflite only when a TFLite model is, so ``import mera`` needs NumPy alone.
"""

from __future__ import annotations

from typing import Any


def from_pytorch(model: Any, input_shapes: Any, layout: str = "NCHW", **kwargs: Any):
    """Import a PyTorch model; see :func:`mera.frontend.pytorch.from_pytorch`."""
    from .pytorch import from_pytorch as _impl
    return _impl(model, input_shapes, layout=layout, **kwargs)


def from_onnx(path_or_model: Any, input_shapes: Any = None, layout: str = "NHWC"):
    """Import an ONNX model (float, or quantized in QDQ or QOperator form); see :func:`mera.frontend.onnx.from_onnx`."""
    from .onnx import from_onnx as _impl
    return _impl(path_or_model, input_shapes, layout=layout)


def from_tflite(model: Any, shape_dict: Any = None, dtype_dict: Any = None, layout: str = "NHWC"):
    """Import a TFLite model (float, or int8/uint8 quantized); see :func:`mera.frontend.tflite.from_tflite`."""
    from .tflite import from_tflite as _impl
    return _impl(model, shape_dict, dtype_dict, layout=layout)


__all__ = ["from_pytorch", "from_onnx", "from_tflite"]
