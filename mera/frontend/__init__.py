"""Frontends: import models from other frameworks into mera IR.

torch is imported only when a PyTorch model is imported, and onnx only when an
ONNX model is, so ``import mera`` needs NumPy alone.
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


__all__ = ["from_pytorch", "from_onnx"]
