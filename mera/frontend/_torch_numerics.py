"""Which rounding the installed PyTorch's quantized kernels use: a probe.

PyTorch's quantized CPU kernels quantize through fbgemm, and fbgemm changed
how: up to PyTorch 2.13 its ``Quantize`` added the zero point before rounding
(``rne(x/s + z)``, its LEGACY mode), since FBGEMM #5624 (April 2026, PyTorch
2.14) it adds it after (``rne(x/s) + z``). The two differ on exact ties
``x/s = k + 1/2`` with an odd zero point. The TorchScript and torch.export
frontends ask this module which one the installed build does, by running it
on such ties, and record the answer as the graph's rounding
(docs/numerics.md, "Rounding"). It is a probe, not a version table: a build
patched either way, or a version not yet seen, is judged by what it computes.
"""

from __future__ import annotations

import functools
from typing import Dict

import numpy as np
import torch

from .. import ir
from ..errors import UnsupportedError

# Exact ties x/s = k + 1/2 (s = 1/4, so x * (1/s) is exact) with an odd zero
# point, both signs; every result lies inside the int8 and uint8 ranges. Under ZP_BEFORE the stored value
# rne(k + 1/2 + z) is even; under ZP_AFTER rne(k + 1/2) + z is odd where
# k + 1/2 rounds to an even integer.
_SCALE = 0.25
_ZERO_POINT = 37
_TIES = (np.arange(-20, 20, dtype=np.float32) + np.float32(0.5)) * np.float32(_SCALE)


def _expected(rounding: str) -> np.ndarray:
    """What each rounding mode gives on the tie inputs (NumPy's rint rounds half to even)."""
    t = _TIES / np.float32(_SCALE)
    if rounding == ir.ROUNDING_ZP_BEFORE:
        q = np.rint(t + np.float32(_ZERO_POINT))
    else:
        q = np.rint(t) + _ZERO_POINT
    return q.astype(np.int64)


def _observed() -> Dict[str, np.ndarray]:
    """The installed PyTorch on the ties, through its two quantize paths:
    ``quantize_per_tensor`` (fbgemm's array Quantize) and the scalar tail of
    ``quantized::add`` (``at::native::quantize_val``: under 64 elements the
    whole row is the scalar tail), adding a zero tensor of scale 1."""
    x = torch.from_numpy(_TIES.copy())
    q = torch.quantize_per_tensor(x, _SCALE, _ZERO_POINT, torch.quint8)
    # the same ties as the sum of a quantized tensor and a zero
    a = torch.quantize_per_tensor(x, _SCALE / 2, 0, torch.qint8)  # x / (s/2) = 2k + 1: exact, in range
    zero = torch.quantize_per_tensor(torch.zeros_like(x), 1.0, 0, torch.qint8)
    s = torch.ops.quantized.add(a, zero, _SCALE, _ZERO_POINT)
    return {"quantize_per_tensor": q.int_repr().numpy().astype(np.int64),
            "quantized::add": s.int_repr().numpy().astype(np.int64)}


@functools.lru_cache(maxsize=None)
def probe_rounding() -> str:
    """The rounding mode (one of :data:`mera.ir.ROUNDINGS`) of the installed PyTorch.

    Raises
    ------
    mera.UnsupportedError
        When PyTorch's quantize agrees with no mode mera implements, or its
        two quantize paths disagree: mera cannot give that build's bytes.
    """
    engine = torch.backends.quantized.engine
    threads = torch.get_num_threads()
    try:
        if "fbgemm" in torch.backends.quantized.supported_engines:
            torch.backends.quantized.engine = "fbgemm"
        torch.set_num_threads(1)
        seen = _observed()
    finally:
        torch.backends.quantized.engine = engine
        torch.set_num_threads(threads)
    for mode in ir.ROUNDINGS:
        want = _expected(mode)
        if all(np.array_equal(v, want) for v in seen.values()):
            return mode
    detail = "; ".join(f"{k} gave {v[:6].tolist()}" for k, v in seen.items())
    raise UnsupportedError(
        f"PyTorch {torch.__version__} quantizes exact ties in a way mera does not implement: on x/s = k + 1/2 "
        f"(s={_SCALE}, zero point {_ZERO_POINT}) {detail}; expected {_expected(ir.ROUNDING_ZP_BEFORE)[:6].tolist()} "
        f"({ir.ROUNDING_ZP_BEFORE}) or {_expected(ir.ROUNDING_ZP_AFTER)[:6].tolist()} ({ir.ROUNDING_ZP_AFTER}) "
        f"(docs/numerics.md, 'Rounding')")


__all__ = ["probe_rounding"]
