"""Shared fixtures. Zoo models are slow to build and quantize, so each is built
once per test session and shared by every test file that needs it."""

import functools
from types import SimpleNamespace

import torch


@functools.lru_cache(maxsize=None)
def built_zoo(name: str) -> SimpleNamespace:
    """Float and quantized (fbgemm PTQ) zoo model `name`, traced, with 4 test inputs and outputs."""
    import mera.models as mm
    float_model = mm.MODELS[name](seed=0)
    quantized = mm.MODELS[name](quantize=True, seed=0)
    inputs = mm.calibration_data(name, n=4, seed=1234)  # not the calibration batches (seed 0)
    traced = mm.trace(quantized, inputs[0])
    # The numerics contract is PyTorch's single-threaded arithmetic: some
    # quantized kernels split work, and round, differently across threads.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            y_float = torch.cat([float_model(x) for x in inputs])
            y_traced = torch.cat([traced(x) for x in inputs])
    finally:
        torch.set_num_threads(threads)
    return SimpleNamespace(name=name, float_model=float_model, quantized=quantized, traced=traced,
                           inputs=inputs, y_float=y_float, y_traced=y_traced)
