"""ONNX converters for float math and selection ops mera runs on the host (issue 13, op coverage).

Each maps onto IR ops: the host float ops of ops.def (sin ... atanh, sign, atan2, where, cumsum, gather_elements)
and existing ones (exp, log, div, mul, add, reduce, maximum, compare, cast, ...). Registered in onnx.py's CONVERTERS
by @converts; imported at the end of onnx.py. docs/frontends.md lists them.
"""
from __future__ import annotations

from typing import Any, List

import numpy as np

from . import _onnx_quant
from ..errors import UnsupportedError
from .onnx import (CONVERTERS, FOLDERS, Context, Tensor, _binary, _cast_runtime, _const_input, _ints, _unary,
                   _variadic, converts)

_F = np.float32

for _onnx_op in ("Sin", "Cos", "Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh", "Asinh", "Acosh", "Atanh", "Sign"):
    CONVERTERS[_onnx_op] = (lambda op: lambda ctx, node, a, x: _unary(ctx, op, x))(_onnx_op.lower())


def _c(v: float) -> np.ndarray:
    return np.array([v], _F)


def _nchw(ctx: Context, x: Any, what: str) -> Tensor:
    return ctx.to_nchw(ctx.tensor(x, what))


def _float_only(t: Tensor, op: str) -> None:
    if t.value.dtype != "float32":
        raise UnsupportedError(f"{op} of a {t.value.dtype} tensor (mera's is float32)")


def _select(ctx: Context, cond: Any, x: Any, y: Any) -> Tensor:
    """where(cond, x, y) of NCHW-ordered operands; a constant x or y takes the run-time one's dtype."""
    runtime = [v for v in (x, y) if isinstance(v, Tensor)]
    dt = runtime[0].value.dtype if runtime else "float32"
    vals = []
    for v in (x, y):
        if isinstance(v, Tensor):
            v = ctx.to_nchw(v)
            if v.value.qparams is not None:
                raise UnsupportedError("Where of a quantized tensor (dequantize it)")
            if v.value.dtype != dt:
                raise UnsupportedError(f"Where of run-time {v.value.dtype} and {dt} tensors")
            vals.append(v.value)
        else:
            vals.append(ctx.const(np.asarray(_onnx_quant.resolve(ctx, v)).astype(dt), "operand"))
    if isinstance(cond, Tensor):
        c = ctx.to_nchw(cond).value
        if c.dtype == "float32" or c.qparams is not None:
            raise UnsupportedError(f"Where with a {c.dtype} condition (bool expected)")
    else:
        c = ctx.const(np.asarray(cond).astype(np.uint8), "cond")
    return Tensor(ctx.emit("where", c, vals[0], vals[1]), False)


@converts("Where")
def _where(ctx, node, a, cond, x, y):
    return _select(ctx, cond, x, y)


@converts("Elu")
def _elu(ctx, node, a, x):
    t = ctx.tensor(x)
    return Tensor(ctx.emit("elu", t.value, alpha=float(a.get("alpha", 1.0))), t.nhwc)


@converts("Selu")
def _selu(ctx, node, a, x):
    t = ctx.tensor(x)
    e = Tensor(ctx.emit("elu", t.value, alpha=float(a.get("alpha", 1.67326319217681884765625))), t.nhwc)
    return _binary(ctx, "mul", e, _c(float(a.get("gamma", 1.05070102214813232421875))))


@converts("Celu")
def _celu(ctx, node, a, x):
    """max(0, x) + min(0, alpha * (exp(x / alpha) - 1))"""
    alpha = float(a.get("alpha", 1.0))
    t = ctx.tensor(x)
    e = _binary(ctx, "add", _unary(ctx, "exp", _binary(ctx, "div", t, _c(alpha))), _c(-1.0))
    neg = _binary(ctx, "minimum", _binary(ctx, "mul", e, _c(alpha)), _c(0.0))
    return _binary(ctx, "add", _unary(ctx, "relu", t), neg)


@converts("ThresholdedRelu")
def _thresholded_relu(ctx, node, a, x):
    t = _nchw(ctx, x, "ThresholdedRelu input")
    _float_only(t, "ThresholdedRelu")
    m = ctx.emit("compare", t.value, ctx.const(_c(float(a.get("alpha", 1.0))), "alpha"), kind="greater")
    return _select(ctx, Tensor(m), t, _c(0.0))


@converts("Softsign")
def _softsign(ctx, node, a, x):
    t = ctx.tensor(x)
    return _binary(ctx, "div", t, _binary(ctx, "add", _unary(ctx, "abs", t), _c(1.0)))


@converts("Shrink")
def _shrink(ctx, node, a, x):
    """x < -lambd ? x + bias : x > lambd ? x - bias : 0"""
    lambd, bias = float(a.get("lambd", 0.5)), float(a.get("bias", 0.0))
    t = _nchw(ctx, x, "Shrink input")
    _float_only(t, "Shrink")
    lo = Tensor(ctx.emit("compare", t.value, ctx.const(_c(-lambd), "lambd"), kind="less"))
    hi = Tensor(ctx.emit("compare", t.value, ctx.const(_c(lambd), "lambd"), kind="greater"))
    inner = _select(ctx, hi, _binary(ctx, "add", t, _c(-bias)), _c(0.0))
    return _select(ctx, lo, _binary(ctx, "add", t, _c(bias)), inner)


def _softmax_axes(ctx: Context, node, a, t: Tensor) -> List[int]:
    """The axes one softmax-like normalization covers: `axis` (opset 13 on), or axis.. (before: the input is
    coerced to 2-D there)."""
    ax = int(a.get("axis", -1 if ctx.opset >= 13 else 1))
    ax = ax + t.rank if ax < 0 else ax
    if not 0 <= ax < t.rank:
        raise UnsupportedError(f"{node.op_type} axis {a.get('axis')} is out of range for rank {t.rank}")
    return [ax] if ctx.opset >= 13 else list(range(ax, t.rank))


@converts("LogSoftmax")
def _log_softmax(ctx, node, a, x):
    """(x - max) - log(sum(exp(x - max))) over the axes"""
    t = _nchw(ctx, x, "LogSoftmax input")
    axes = _softmax_axes(ctx, node, a, t)
    m = Tensor(ctx.emit("reduce", t.value, kind="max", axes=axes, keepdims=1))
    d = _binary(ctx, "sub", t, m)
    s = Tensor(ctx.emit("reduce", _unary(ctx, "exp", d).value, kind="sum", axes=axes, keepdims=1))
    return _binary(ctx, "sub", d, _unary(ctx, "log", s))


@converts("Hardmax")
def _hardmax(ctx, node, a, x):
    """1.0 at the first largest element over the axes, 0.0 elsewhere"""
    t = _nchw(ctx, x, "Hardmax input")
    _float_only(t, "Hardmax")
    axes = _softmax_axes(ctx, node, a, t)
    shape = list(t.shape)
    v = t.value
    if len(axes) > 1:  # the coerced 2-D form's one axis
        inner = int(np.prod(shape[axes[0]:]))
        v = ctx.emit("reshape", v, shape=shape[:axes[0]] + [inner])
    axis = axes[0]
    m = ctx.emit("reduce", v, kind="max", axes=[axis], keepdims=1)
    eq = ctx.emit("compare", v, m, kind="equal")
    first = ctx.emit("cumsum", ctx.emit("cast", eq, to="int32"), axis=axis)
    one = ctx.emit("compare", first, ctx.const(np.array([1], np.int32), "one"), kind="equal")
    y = ctx.emit("where", eq, ctx.emit("cast", one, to="float32"), ctx.const(_c(0.0), "zero"))
    if len(axes) > 1:
        y = ctx.emit("reshape", y, shape=shape)
    return Tensor(y, False)


@converts("Sum")
def _sum(ctx, node, a, *xs):
    return _variadic(ctx, "add", list(xs))


@converts("Mean")
def _mean(ctx, node, a, *xs):
    s = _variadic(ctx, "add", list(xs))
    return s if len(xs) == 1 else _binary(ctx, "div", s, _c(float(len(xs))))


@converts("LRN")
def _lrn(ctx, node, a, x):
    """x / (bias + alpha / size * square_sum) ** beta, square_sum over the channels c - (size-1)//2 ..
    c + ceil((size-1)/2): a band matrix times x * x"""
    t = _nchw(ctx, x, "LRN input")
    _float_only(t, "LRN")
    size = int(a["size"])
    alpha, beta, bias = float(a.get("alpha", 1e-4)), float(a.get("beta", 0.75)), float(a.get("bias", 1.0))
    if t.rank < 3 or size < 1:
        raise UnsupportedError(f"LRN of a rank-{t.rank} tensor with size {size}")
    n, c = t.shape[0], t.shape[1]
    rest = int(np.prod(t.shape[2:]))
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    band = np.zeros((c, c), _F)
    for o in range(c):
        band[o, max(0, o - lo):min(c, o + hi + 1)] = 1.0
    sq = ctx.emit("reshape", _binary(ctx, "mul", t, t).value, shape=[n, c, rest])
    s = ctx.emit("reshape", ctx.emit("matmul", ctx.const(band, "band"), sq), shape=list(t.shape))
    d = _binary(ctx, "add", _binary(ctx, "mul", Tensor(s), _c(alpha / size)), _c(bias))
    return _binary(ctx, "div", t, _binary(ctx, "pow", d, _c(beta)))


@converts("LpNormalization")
def _lp_normalization(ctx, node, a, x):
    t = _nchw(ctx, x, "LpNormalization input")
    p, axis = int(a.get("p", 2)), int(a.get("axis", -1))
    if p not in (1, 2):
        raise UnsupportedError(f"LpNormalization with p = {p} (1 or 2)")
    axis = axis + t.rank if axis < 0 else axis
    n = Tensor(ctx.emit("reduce", t.value, kind="l1" if p == 1 else "l2", axes=[axis], keepdims=1))
    zero = Tensor(ctx.emit("compare", n.value, ctx.const(_c(0.0), "zero"), kind="equal"))
    return _select(ctx, zero, _c(0.0), _binary(ctx, "div", t, n))  # a zero norm gives 0 (ONNX, onnxruntime)


@converts("GlobalLpPool")
def _global_lp_pool(ctx, node, a, x):
    t = _nchw(ctx, x, "GlobalLpPool input")
    p = int(a.get("p", 2))
    axes = list(range(2, t.rank))
    if p in (1, 2):
        return Tensor(ctx.emit("reduce", t.value, kind="l1" if p == 1 else "l2", axes=axes, keepdims=1))
    if p < 1:
        raise UnsupportedError(f"GlobalLpPool with p = {p}")
    s = ctx.emit("reduce", _binary(ctx, "pow", _unary(ctx, "abs", t), _c(float(p))).value, kind="sum", axes=axes,
                 keepdims=1)
    return _binary(ctx, "pow", Tensor(s), _c(1.0 / p))


@converts("MeanVarianceNormalization")
def _mvn(ctx, node, a, x):
    """ONNX's function body: (x - mean) / (sqrt(mean(x^2) - mean^2) + 1e-9)"""
    t = _nchw(ctx, x, "MeanVarianceNormalization input")
    axes = sorted(v + t.rank if v < 0 else v for v in a.get("axes", [0, 2, 3]))
    mean = Tensor(ctx.emit("reduce", t.value, kind="mean", axes=axes, keepdims=1))
    ex2 = Tensor(ctx.emit("reduce", _binary(ctx, "mul", t, t).value, kind="mean", axes=axes, keepdims=1))
    std = _unary(ctx, "sqrt", _binary(ctx, "sub", ex2, _binary(ctx, "mul", mean, mean)))
    return _binary(ctx, "div", _binary(ctx, "sub", t, mean), _binary(ctx, "add", std, _c(1e-9)))


@converts("CumSum")
def _cumsum(ctx, node, a, x, axis):
    t = _nchw(ctx, x, "CumSum input")
    ax = _ints(_const_input(ctx, axis, "the CumSum axis"))
    if len(ax) != 1:
        raise UnsupportedError(f"CumSum axis {ax} (one axis)")
    return Tensor(ctx.emit("cumsum", t.value, axis=ax[0], exclusive=int(a.get("exclusive", 0)),
                           reverse=int(a.get("reverse", 0))), False)


@converts("GatherElements")
def _gather_elements(ctx, node, a, data, indices):
    d = _nchw(ctx, data, "GatherElements data")
    if isinstance(indices, Tensor):
        iv = ctx.to_nchw(indices).value
        if iv.dtype not in ("int64", "int32"):
            raise UnsupportedError(f"GatherElements indices of type {iv.dtype} (int64 or int32 expected)")
        if iv.dtype == "int32":
            iv = ctx.emit("cast", iv, to="int64")
    else:
        iv = ctx.const(np.asarray(_onnx_quant.resolve(ctx, indices)).astype(np.int64), "indices")
    return Tensor(ctx.emit("gather_elements", d.value, iv, axis=int(a.get("axis", 0))), False)


# ONNX TensorProto types of mera's dtypes
_ONNX_TYPE = {"float32": 1, "uint8": 2, "int8": 3, "int32": 6, "int64": 7}


@converts("CastLike")
def _cast_like(ctx, node, a, x, target):
    dt = target.value.dtype if isinstance(target, Tensor) else str(np.asarray(target).dtype)
    if dt not in _ONNX_TYPE:
        raise UnsupportedError(f"CastLike to {dt}")
    return _cast_runtime(ctx, node, {"to": _ONNX_TYPE[dt]}, x)


@converts("Trilu")
def _trilu(ctx, node, a, x, k=None):
    """The upper (j - i >= k) or lower (j - i <= k) triangle of the last two axes, the rest 0: a where by a
    constant mask"""
    t = _nchw(ctx, x, "Trilu input")
    kk = 0 if k is None else int(_ints(_const_input(ctx, k, "the Trilu k"))[0])
    if t.rank < 2:
        raise UnsupportedError(f"Trilu of a rank-{t.rank} tensor")
    rows, cols = t.shape[-2], t.shape[-1]
    d = np.arange(cols)[None, :] - np.arange(rows)[:, None]
    mask = (d >= kk) if int(a.get("upper", 1)) else (d <= kk)
    return _select(ctx, mask.astype(np.uint8), t, np.zeros(1, _F))


def _f_trilu(a, x, k=None):
    kk = 0 if k is None else int(np.asarray(k).reshape(-1)[0])
    return np.triu(x, kk) if int(a.get("upper", 1)) else np.tril(x, kk)


FOLDERS.update({
    "CastLike": lambda a, x, t: x.astype(t.dtype),
    "Trilu": _f_trilu,
    "Sign": lambda a, x: np.sign(x),
})
