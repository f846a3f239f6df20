"""Frontends: import models from other frameworks into mera IR.

torch is imported only when a PyTorch model is imported, so ``import mera``
needs NumPy alone.
"""

from __future__ import annotations

from typing import Any


def from_pytorch(model: Any, input_shapes: Any, layout: str = "NCHW", **kwargs: Any):
    """Import a PyTorch model; see :func:`mera.frontend.pytorch.from_pytorch`."""
    from .pytorch import from_pytorch as _impl
    return _impl(model, input_shapes, layout=layout, **kwargs)


__all__ = ["from_pytorch"]
