"""Eager-mode post-training static quantization and tracing, the way our users do it.

The recipe is the one of the PyTorch eager-mode quantization docs and of torchvision's quantizable
models: fuse Conv+BN(+ReLU), attach the backend's default qconfig, insert observers, calibrate, convert.
"""

from __future__ import annotations

import warnings
from typing import Iterable, List

import torch
import torch.ao.quantization as tq
from torch import Tensor, nn

from ._common import input_shape, quiet_torch_deprecations, smooth_noise

__all__ = ["quantize_ptq", "calibration_data", "trace"]


def quantize_ptq(model: nn.Module, calibration_inputs: Iterable[Tensor], engine: str = "fbgemm") -> nn.Module:
    """Quantize a quantizable zoo model in place with eager-mode post-training static quantization.

    Parameters
    ----------
    model : nn.Module
        A float model with ``fuse_model()``, ``QuantStub``/``DeQuantStub`` and ``FloatFunctional`` ops
        (every model of :data:`mera.models.MODELS` built with ``quantize=False``).
    calibration_inputs : iterable of Tensor
        Batches run through the observed model to collect activation ranges.
    engine : str
        Quantized backend, ``"fbgemm"`` by default.  It is made the global quantized engine before
        ``prepare`` and deliberately left set afterwards: the packed weights are backend-specific and the
        model must later run (and trace) under the same engine.  The default engine of torch 2.13 on x86,
        ``"x86"``, would send convolutions to oneDNN instead.

    Returns
    -------
    nn.Module
        `model` itself, now quantized, in eval mode.

    Raises
    ------
    RuntimeError
        If `engine` is not supported by this torch build.
    """
    if engine not in torch.backends.quantized.supported_engines:
        raise RuntimeError(f"quantized engine {engine!r} is not supported by this torch build; "
                           f"supported: {', '.join(torch.backends.quantized.supported_engines)}")
    torch.backends.quantized.engine = engine
    model.eval()
    with quiet_torch_deprecations():
        model.fuse_model()
        model.qconfig = tq.get_default_qconfig(engine)
        tq.prepare(model, inplace=True)
        with torch.no_grad():
            for x in calibration_inputs:
                model(x)
        tq.convert(model, inplace=True)
    return model


def calibration_data(name: str, n: int = 2, seed: int = 0) -> List[Tensor]:
    """Seeded random inputs for the zoo model `name`.

    Parameters
    ----------
    name : str
        Model name; fixes the shape, see :func:`mera.models.input_shape`.
    n : int
        Number of tensors.
    seed : int
        Same seed, same tensors (bit for bit).

    Returns
    -------
    list of Tensor
        `n` float32 tensors of shape ``input_shape(name)``: spatially smoothed normal noise with mean 0
        and std 1 per sample, i.e. in the range of ImageNet-normalised images.  Samples are drawn one
        after the other, so the first ``k`` do not depend on `n`.
    """
    shape = input_shape(name)
    gen = torch.Generator().manual_seed(seed)
    return [smooth_noise(shape, gen) for _ in range(n)]


def trace(model: nn.Module, example_input: Tensor) -> torch.jit.ScriptModule:
    """``torch.jit.trace`` `model` on `example_input` with autograd off.

    Tracing under ``no_grad`` keeps autograd bookkeeping out of the recorded graph.  Silenced for this
    call only: the deprecation warning of ``torch.jit.trace`` itself, and the tracer's warnings about
    converting tensors to Python floats/ints.  In a converted model those conversions are the stored
    scales and zero points (``QuantStub`` -> ``Quantize``, ``FloatFunctional`` -> ``QFunctional``),
    which are constants by design, so recording them as constants is exactly right.

    Returns
    -------
    torch.jit.ScriptModule
        The traced module; ``traced.inlined_graph`` is what a TorchScript frontend imports.
    """
    with torch.no_grad(), quiet_torch_deprecations(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Converting a tensor to a Python (float|integer) might cause",
                                category=torch.jit.TracerWarning)
        return torch.jit.trace(model, example_input)
