"""Quantized ONNX models: the QDQ form (QuantizeLinear / DequantizeLinear
around float ops) and the QOperator form (QLinearConv, QLinearMatMul and
the com.microsoft QLinear ops that onnxruntime's quantizer writes).

A quantized ONNX tensor is a uint8/int8 tensor whose meaning comes from the
scale and zero point of the node that reads it; a mera tensor carries its
parameters. The importer therefore gives every integer tensor the parameters
of the node that made it (QuantizeLinear, a QLinear op) and checks that the
nodes reading it use the same ones.

QDQ form: translated one to one. ``DequantizeLinear`` of a run-time tensor
is a ``dequantize`` node; of a constant it is a :class:`DQConst` (a
quantized weight or an int32 bias), which the converters that can use the
integers (Conv and Gemm/MatMul weights, Add/Mul operands) emit as an int8 /
uint8 param or constant behind a ``dequantize`` node, and the others read as
the float it stands for. ``QuantizeLinear`` is a ``quantize`` node. The
``lower_qdq`` pass (csrc/passes/lower_qdq.c), which ``from_onnx`` runs,
turns each ``dequantize -> op [-> Relu | Clip] -> quantize`` chain into the
quantized op of mera's IR with the QuantizeLinear's parameters, and moves
byte-moving ops (MaxPool, Reshape, Transpose, ...) before their dequantize
even without a QuantizeLinear after them, since dequantizing commutes with
them exactly. Everything else runs in float.

Arithmetic: mera's quantized ops follow docs/numerics.md (PyTorch fbgemm),
not onnxruntime's kernels; docs/frontends.md gives the measured difference.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .. import ir
from ..errors import FormatError, UnsupportedError
from .onnx import (CONVERTERS, Context, Tensor, _check_4d, _const_input, _conv_geometry, _dense,
                   _onnx, _sanitize, converts)

_RANGE = {"uint8": (0, 255), "int8": (-128, 127)}
_QNAMES = {np.dtype(np.uint8): "uint8", np.dtype(np.int8): "int8"}


# -- quantization parameters ---------------------------------------------------------

class QParams:
    """Scale(s) and zero point(s) of one quantized operand, as a node gives them."""

    __slots__ = ("scale", "zero_point", "dtype", "axis")

    def __init__(self, scale: np.ndarray, zero_point: np.ndarray, dtype: str, axis: Optional[int]):
        self.scale = scale            # float64 (the float32 values), 1-D
        self.zero_point = zero_point  # int64, 1-D, as long as scale
        self.dtype = dtype            # "uint8", "int8" or "int32"
        self.axis = axis              # None: per tensor

    def ir(self):
        """The parameters as ``mera.ir`` takes them."""
        if self.axis is None:
            return (float(self.scale[0]), int(self.zero_point[0]))
        return (self.scale, self.zero_point.astype(np.int32), self.axis)

    def out_attrs(self) -> Dict[str, Any]:
        """Output parameters of a quantized op."""
        return {"out_scale": float(self.scale[0]), "out_zero_point": int(self.zero_point[0]), "out_dtype": self.dtype}


def _label(ctx: Context, node) -> str:
    return ctx.labels.get(id(node), node.name or node.op_type)


def _where(ctx: Context, node) -> str:
    return f"'{ctx.path}': node '{_label(ctx, node)}' ({node.op_type})"


def _dtype_name(dt: Any) -> str:
    return _QNAMES.get(np.dtype(dt), str(np.dtype(dt)))


def qparams(ctx: Context, node, scale: Any, zero_point: Any, what: str, *, shape=None, axis: int = 1,
            dtype: Optional[str] = None, allow_int32: bool = False, per_tensor: bool = False) -> QParams:
    """Read and check the scale and zero point a node gives its operand ``what``.

    ``shape``: the operand's (ONNX) shape, for per-axis parameters; ``dtype``:
    the operand's type when known (else the zero point's, else uint8);
    ``per_tensor``: the operand is a run-time tensor, which mera quantizes
    per tensor only. Invalid parameters are a FormatError naming the node.
    """
    if not isinstance(scale, np.ndarray):
        raise UnsupportedError(f"{what}_scale is computed at run time; mera needs it constant")
    try:
        sc = np.asarray(scale, np.float32).astype(np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise FormatError(f"{_where(ctx, node)}: {what}_scale has type {scale.dtype}") from None
    if sc.size == 0:
        raise FormatError(f"{_where(ctx, node)}: {what}_scale is empty")
    bad = ~(np.isfinite(sc) & (sc > 0))
    if bad.any():
        raise FormatError(f"{_where(ctx, node)}: {what}_scale must be positive and finite, got {sc[bad][0]:g}")
    if zero_point is None:
        zdtype = dtype or "uint8"
        zp = np.zeros(sc.size, np.int64)
    else:
        zero_point = _const_input(ctx, zero_point, f"{what}_zero_point")
        zdtype = _dtype_name(zero_point.dtype)
        if (zdtype == "int32" and not allow_int32) or zdtype not in ("uint8", "int8", "int32"):
            raise UnsupportedError(f"{what} of type {zdtype}: mera's quantized tensors are uint8 or int8")
        if dtype is not None and zdtype != dtype:
            raise FormatError(f"{_where(ctx, node)}: {what}_zero_point is {zdtype} but {what} is {dtype}")
        zp = zero_point.astype(np.int64).reshape(-1)
        if zp.size != sc.size:
            raise FormatError(f"{_where(ctx, node)}: {what}_zero_point has {zp.size} values but {what}_scale has "
                              f"{sc.size}")
    if zdtype == "int32" and np.any(zp != 0):
        raise FormatError(f"{_where(ctx, node)}: the int32 {what} must have zero point 0")
    ax = None
    if sc.size > 1:
        if shape is None:  # an output's parameters
            raise UnsupportedError(f"per-axis parameters ({what}) for a run-time tensor: mera quantizes "
                                   "activations per tensor")
        rank = len(shape)
        ax = axis + rank if axis < 0 else axis
        if not 0 <= ax < rank:
            raise FormatError(f"{_where(ctx, node)}: axis {axis} is out of range for the rank-{rank} {what}")
        if shape[ax] != sc.size:
            raise FormatError(f"{_where(ctx, node)}: {what}_scale has {sc.size} values but axis {axis} of {what} "
                              f"(shape {tuple(shape)}) has {shape[ax]}")
        if per_tensor:
            raise UnsupportedError(f"per-axis parameters ({what}) for a run-time tensor: mera quantizes "
                                   "activations per tensor")
    return QParams(sc, zp, zdtype, ax)


def _same(t: Tensor, qp: QParams) -> bool:
    """Does the quantized tensor ``t`` carry exactly the (per-tensor) parameters ``qp``?"""
    q = t.value.qparams
    return (q is not None and len(q) == 2 and t.value.dtype == qp.dtype and qp.axis is None
            and float(q[0]) == float(qp.scale[0]) and int(q[1]) == int(qp.zero_point[0]))


def _describe_q(t: Tensor) -> str:
    q = t.value.qparams
    return f"{t.value.dtype} scale {q[0]:.9g}, zero point {q[1]}"


# -- the float view of quantized values ------------------------------------------------

class DQConst:
    """DequantizeLinear of a constant integer tensor: a quantized weight (uint8/int8) or bias (int32)."""

    __slots__ = ("data", "qp", "name")

    def __init__(self, data: np.ndarray, qp: QParams, name: str):
        self.data, self.qp, self.name = data, qp, name

    def to_float(self) -> np.ndarray:
        # (q - z) * s in double, rounded once: ONNX's float32 (q - z) * s for these integer ranges
        shape = [1] * self.data.ndim
        if self.qp.axis is not None:
            shape[self.qp.axis] = -1
        f = (self.data.astype(np.float64) - self.qp.zero_point.reshape(shape)) * self.qp.scale.reshape(shape)
        return f.astype(np.float32)


def resolve(ctx: Context, v: Any) -> Any:
    """What a float converter sees: a DQConst as the float constant it stands for."""
    if isinstance(v, DQConst):
        return v.to_float()
    return v


# input positions where a converter takes a DQConst as it is (and emits its integers behind a dequantize)
_TAKES_DQCONST = {"Conv": (1,), "ConvTranspose": (1,), "Gemm": (1,), "MatMul": (1,), "Add": (0, 1), "Mul": (0, 1)}


def dq_weight(ctx: Context, w: DQConst, transposed: Optional[bool] = None, alpha: float = 1.0) -> Optional[ir.Value]:
    """``dequantize`` of an int8 param holding the weight ``w`` in the form a quantized conv2d / dense takes
    (output channels on axis 0, per-channel parameters), or None where it has none.

    ``transposed``: None for a Conv weight (OIHW); for a Gemm/MatMul B, whether it is given as [N, K] (transB).
    ``alpha`` (Gemm) scales the weight: it is folded into the scales.
    """
    if not alpha > 0 or w.data.ndim != (4 if transposed is None else 2):
        return None
    qp = w.qp if alpha == 1.0 else QParams(w.qp.scale * alpha, w.qp.zero_point, w.qp.dtype, w.qp.axis)
    w8 = _int8_weight(w.data, qp, 0) if transposed is None else _matrix_weight(ctx, None, w.data, qp, transposed)
    if w8 is None:
        return None
    return ctx.emit("dequantize", _weight_param(ctx, w.name, w8[0], w8[1]))


def dq_transposed_weight(ctx: Context, w: DQConst, groups: int) -> Optional[ir.Value]:
    """``dequantize`` of an int8 param holding the ConvTranspose weight ``w`` ([C_in, C_out/group, KH, KW]) in
    the form a quantized conv_transpose2d takes, or None where it has none: per output channel (axis 1) when
    group is 1 (per-tensor parameters repeated, as for Conv), per tensor when grouped, whose axis 1 holds one
    group's channels only."""
    if w.data.ndim != 4:
        return None
    w8 = _int8_weight(w.data, w.qp, 1)
    if w8 is None:
        return None
    data, (scales, zps, _) = w8
    if groups == 1:
        q = (scales, zps, 1)
    elif w.qp.axis is None:
        q = (float(scales[0]), int(zps[0]))
    else:
        return None
    return ctx.emit("dequantize", _weight_param(ctx, w.name, data, q))


def dq_operand(ctx: Context, ref: Tensor, c: DQConst) -> Optional[ir.Value]:
    """``dequantize`` of a per-tensor quantized constant operand of Add/Mul, laid out to broadcast against
    ``ref``; None for other constants (they are read as floats)."""
    if c.qp.dtype not in _RANGE or c.qp.axis is not None:
        return None
    data = c.data
    if ref.nhwc and data.ndim >= 1 and data.size > 1:
        if data.ndim > 4:
            raise UnsupportedError(f"a {data.ndim}-D constant broadcast against a 4-D tensor")
        data = data.reshape((1,) * (4 - data.ndim) + data.shape).transpose(0, 2, 3, 1)
    q = ctx.b.const(np.ascontiguousarray(data), name=ctx.b._fresh(_sanitize(ctx.node_label) + ".const"),
                    qparams=c.qp.ir())
    return ctx.emit("dequantize", q)


# ops of the default domain that may read quantized tensors directly (their ONNX
# meaning on the stored integers is the same as mera's on the values)
_BYTE_OPS = ("MaxPool", "Reshape", "Flatten", "Transpose", "Slice", "Identity", "Shape", "Concat", "Pad", "Resize",
             "Upsample")


def float_inputs(ctx: Context, node, ins: List[Any]) -> List[Any]:
    """The inputs of a default-domain op that is not lowered to a quantized op."""
    raw = [v for v in ins if isinstance(v, Tensor) and v.value.qparams is not None]
    if raw:
        if node.op_type not in _BYTE_OPS:
            raise UnsupportedError(
                f"{node.op_type} on a {raw[0].value.dtype} tensor: ONNX computes it on the stored integers, "
                "while mera's quantized tensors stand for real values; only ops that move bytes ("
                + ", ".join(_BYTE_OPS) + ") may read them directly")
        if node.op_type == "Concat":
            ts = [v for v in ins if v is not None]
            if not all(isinstance(v, Tensor) and _same_q(v, raw[0]) for v in ts):
                raise UnsupportedError("Concat of quantized tensors with different parameters (or with constants): "
                                       "ONNX joins the stored integers, so they must share one scale and zero point")
        if node.op_type == "Pad" and len(ins) > 2 and isinstance(ins[2], np.ndarray):
            # the fill is a stored integer; mera's pad takes the real value it stands for
            q = raw[0].value.qparams
            ins = list(ins)
            ins[2] = np.asarray((ins[2].astype(np.float64) - q[1]) * q[0], np.float32)
    keep = _TAKES_DQCONST.get(node.op_type, ())
    return [v if i in keep else resolve(ctx, v) for i, v in enumerate(ins)]


def _same_q(a: Tensor, b: Tensor) -> bool:
    return a.value.dtype == b.value.dtype and a.value.qparams == b.value.qparams


# -- graph inputs of integer type -------------------------------------------------------

def _operand_params(node, k: int) -> Optional[Tuple[int, int]]:
    """(scale index, zero point index) that ``node`` gives its input ``k``, if it reads it as quantized."""
    op = node.op_type
    if op == "QLinearConcat" and k >= 2 and (k - 2) % 3 == 0:
        return k + 1, k + 2
    table = _READS.get(op)
    if table is None:
        return None
    return table.get(k)


_READS = {
    "DequantizeLinear": {0: (1, 2)},
    "QLinearConv": {0: (1, 2), 3: (4, 5)}, "QLinearMatMul": {0: (1, 2), 3: (4, 5)}, "QGemm": {0: (1, 2), 3: (4, 5)},
    "QLinearAdd": {0: (1, 2), 3: (4, 5)}, "QLinearMul": {0: (1, 2), 3: (4, 5)},
    "QLinearGlobalAveragePool": {0: (1, 2)}, "QLinearAveragePool": {0: (1, 2)}, "QLinearSigmoid": {0: (1, 2)},
    "QLinearLeakyRelu": {0: (1, 2)},
}


def input_qparams(ctx: Context, name: str, dtype: str) -> Tuple[float, int]:
    """The parameters of a uint8/int8 graph input, from the nodes that read it (all must agree)."""
    found = set()
    for c in ctx.consumers.get(name, []):
        for k, i in enumerate(c.input):
            if i != name:
                continue
            pos = _operand_params(c, k)
            if pos is None:
                raise UnsupportedError(f"{dtype} input '{name}' is read by {c.op_type} node '{_label(ctx, c)}'; a "
                                       "quantized input must be read by DequantizeLinear or QLinear nodes")
            si, zi = pos
            scale = ctx.env.get(c.input[si]) if si < len(c.input) and c.input[si] else None
            zp = ctx.env.get(c.input[zi]) if zi < len(c.input) and c.input[zi] else None
            if not isinstance(scale, np.ndarray) or not (zp is None or isinstance(zp, np.ndarray)):
                raise UnsupportedError(f"{dtype} input '{name}': node '{_label(ctx, c)}' reads it with a scale or "
                                       "zero point that is not an initializer")
            if np.size(scale) != 1:
                how = "blockwise" if any(a.name == "block_size" and a.i for a in c.attribute) else "per axis"
                raise UnsupportedError(f"{dtype} input '{name}' is quantized {how} by node '{_label(ctx, c)}'; "
                                       "mera quantizes activations per tensor")
            found.add(qparams(ctx, c, scale, zp, name, dtype=dtype, per_tensor=True).ir())
    if not found:
        raise UnsupportedError(f"{dtype} input '{name}' is not read by any DequantizeLinear or QLinear node, so its "
                               "scale and zero point are unknown")
    if len(found) > 1:
        raise UnsupportedError(f"{dtype} input '{name}' is read with {len(found)} different scales and zero points; "
                               "a mera input has one set of parameters")
    return found.pop()


# -- QuantizeLinear / DequantizeLinear -------------------------------------------------

def _q_dtype(a: Dict[str, Any], zp: Any) -> str:
    if isinstance(zp, np.ndarray):
        name = _dtype_name(zp.dtype)
    elif a.get("output_dtype"):
        name = _dtype_name(_onnx().helper.tensor_dtype_to_np_dtype(int(a["output_dtype"])))
    else:
        name = "uint8"
    if name not in _RANGE:
        raise UnsupportedError(f"quantization to {name}: mera's quantized tensors are uint8 or int8")
    return name


def _check_blocked(a: Dict[str, Any]) -> None:
    if int(a.get("block_size", 0)):
        raise UnsupportedError(f"blocked quantization (block_size={a['block_size']}): mera quantizes per tensor "
                               "or per axis")


def _quantize_const(x: np.ndarray, qp: QParams) -> np.ndarray:
    """ONNX's QuantizeLinear of a constant: saturate(rne(x / scale) + zero_point), in float32."""
    shape = [1] * x.ndim
    if qp.axis is not None:
        shape[qp.axis] = -1
    sc = qp.scale.astype(np.float32).reshape(shape)
    with np.errstate(over="ignore", invalid="ignore"):
        q = np.rint(x.astype(np.float32) / sc) + qp.zero_point.reshape(shape).astype(np.float32)
    lo, hi = _RANGE[qp.dtype]
    # np.asarray: NumPy turns a 0-d result into a scalar, and a 0-d constant
    # (onnxruntime's quantize_static writes hard-swish's +3 so) is still an array
    return np.asarray(np.clip(np.nan_to_num(q), lo, hi).astype(qp.dtype))


@converts("QuantizeLinear")
def _quantize_linear(ctx: Context, node, a, x, scale, zp=None):
    _check_blocked(a)
    dtype = _q_dtype(a, zp)
    axis = int(a.get("axis", 1))
    if isinstance(x, (np.ndarray, DQConst)):  # a constant: folded
        xf = x.to_float() if isinstance(x, DQConst) else np.asarray(x, np.float32)
        return _quantize_const(xf, qparams(ctx, node, scale, zp, "y", shape=xf.shape, axis=axis, dtype=dtype))
    t = ctx.tensor(x)
    if t.value.qparams is not None:
        raise UnsupportedError(f"QuantizeLinear of a {t.value.dtype} tensor")
    if isinstance(scale, Tensor) or isinstance(zp, Tensor):
        if isinstance(zp, Tensor) and zp.value.dtype in _RANGE:
            dtype = zp.value.dtype
        return _quantize_linear_runtime(ctx, t, scale, zp, dtype)
    qp = qparams(ctx, node, scale, zp, "y", shape=t.shape, axis=axis, dtype=dtype, per_tensor=True)
    return Tensor(ctx.emit("quantize", t.value, scale=float(qp.scale[0]), zero_point=int(qp.zero_point[0]),
                           dtype=dtype), t.nhwc)


def _quantize_linear_runtime(ctx: Context, t: Tensor, scale: Any, zp: Any, dtype: str) -> Tensor:
    """QuantizeLinear with a scale or zero point computed at run time (older quantize_dynamic graphs compute them
    with float ops): plain integers, as DynamicQuantizeLinear's, for ConvInteger/MatMulInteger. onnxruntime's
    clamp(x / scale, lo - zp, hi - zp), rne, + zp is rne(x / scale) + zp clamped to [lo, hi], exactly: div, round,
    add, maximum, minimum and a cast on the host."""
    lo, hi = _RANGE[dtype]
    for v, what in ((scale, "y_scale"), (zp, "y_zero_point")):
        if v is not None and int(np.prod(ctx.tensor(v).shape if isinstance(v, Tensor) else np.shape(v))) != 1:
            raise UnsupportedError(f"a per-axis {what} computed at run time: mera quantizes at run time per tensor")
    if isinstance(scale, Tensor):
        if scale.value.dtype != "float32" or scale.value.qparams is not None:
            raise UnsupportedError(f"a run-time y_scale of type {scale.value.dtype}")
        s = ctx.emit("reshape", scale.value, shape=[1])
    else:
        s = ctx.const(np.asarray(scale, np.float32).reshape(1), "y_scale")
    y = ctx.emit("round", ctx.emit("div", ctx.to_nchw(t).value, s))
    if isinstance(zp, Tensor):
        if zp.value.dtype != dtype or zp.value.qparams is not None:
            raise FormatError(f"QuantizeLinear: y_zero_point is {zp.value.dtype}, the output is {dtype}")
        y = ctx.emit("add", y, ctx.emit("cast", ctx.emit("reshape", zp.value, shape=[1]), to="float32"))
    elif zp is not None and int(np.asarray(zp).reshape(-1)[0]) != 0:
        y = ctx.emit("add", y, ctx.const(np.asarray(zp, np.float32).reshape(1), "y_zero_point"))
    y = ctx.emit("minimum", ctx.emit("maximum", y, ctx.const(np.array([lo], np.float32), "lo")),
                 ctx.const(np.array([hi], np.float32), "hi"))
    return Tensor(ctx.emit("cast", y, to=dtype), False)


@converts("DequantizeLinear")
def _dequantize_linear(ctx: Context, node, a, x, scale, zp=None):
    _check_blocked(a)
    axis = int(a.get("axis", 1))
    if isinstance(x, np.ndarray):
        dt = _dtype_name(x.dtype)
        if dt not in ("uint8", "int8", "int32"):
            raise UnsupportedError(f"DequantizeLinear of {dt} data: mera's quantized tensors are uint8 or int8 "
                                   "(and int32 biases)")
        qp = qparams(ctx, node, scale, zp, "x", shape=x.shape, axis=axis, dtype=dt, allow_int32=True)
        return DQConst(x, qp, node.input[0])
    if isinstance(x, Tensor) and x.value.qparams is not None:
        qp = qparams(ctx, node, scale, zp, "x", shape=x.shape, axis=axis, dtype=x.value.dtype, per_tensor=True)
        if not _same(x, qp):
            raise UnsupportedError(f"it reads a tensor made with {_describe_q(x)} as scale {qp.scale[0]:.9g}, zero "
                                   f"point {qp.zero_point[0]}; a mera tensor has one set of parameters")
        return Tensor(ctx.emit("dequantize", x.value), x.nhwc)
    raise UnsupportedError("DequantizeLinear of a float or run-time int32 tensor")


def _requantize_to(ctx: Context, t: Tensor, qp: QParams) -> Tensor:
    if _same(t, qp):
        return t
    return Tensor(ctx.emit("requantize", t.value, out_scale=float(qp.scale[0]), out_zero_point=int(qp.zero_point[0]),
                           out_dtype=qp.dtype), t.nhwc)


# -- emitting quantized ops ----------------------------------------------------------

def _int8_weight(data: np.ndarray, qp: QParams, data_axis: int):
    """``(int8 data, IR qparams)`` for a weight quantized along ``data_axis`` (or per tensor), or None.

    uint8 weights become int8 by subtracting 128 from the data and the zero
    point, which leaves every (w - zero_point), and so the accumulator, as it
    is. Per-tensor parameters are repeated per output channel: the two mean the
    same, and fbgemm's per-channel requantization adds the bias as
    ``f32(acc) + f32(bias / (s_x * s_w))``, which is onnxruntime's integer
    ``acc + B`` for most biases (see _bias), where the per-tensor form,
    ``fma(bias, 1 / (s_x * s_w), acc)``, is almost never exactly B.
    """
    if qp.dtype not in _RANGE or (qp.axis is not None and qp.axis != data_axis):
        return None
    zp = qp.zero_point
    if qp.dtype == "uint8":
        data = (data.astype(np.int16) - 128).astype(np.int8)
        zp = zp - 128
    n = data.shape[data_axis]
    scales = np.broadcast_to(qp.scale, (n,)).copy()
    zps = np.broadcast_to(zp, (n,)).astype(np.int32)
    return np.ascontiguousarray(data.astype(np.int8)), (scales, zps, 0)


def _bias(b: Any, x_scale: float, w_scales: np.ndarray, n: int, beta: float = 1.0
          ) -> Tuple[bool, Optional[np.ndarray]]:
    """(usable, float bias) of a conv/dense bias input.

    An int32 constant (QLinearConv's B, QGemm's C) is in units of
    ``ats = f32(s_x) * f32(s_w)``, mera's own product; so is a
    DequantizeLinear'd int32 bias whose scale is that product (what
    onnxruntime's quantizer writes). Such a bias becomes ``f32(B * ats)``,
    whose ``f32(bias / ats)`` in the requantization is B again for about 89%
    of (B, ats) pairs and one float step from it otherwise. Other biases keep
    their float value.
    """
    if b is None or beta == 0.0:
        return True, None
    ats = np.float32(x_scale) * np.broadcast_to(w_scales.astype(np.float32), (n,))
    if isinstance(b, np.ndarray) and b.dtype == np.int32:
        units = b
    elif isinstance(b, DQConst) and b.qp.dtype == "int32" and b.data.size in (1, n) and \
            np.array_equal(np.broadcast_to(b.qp.scale.astype(np.float32), (n,)), ats):
        units = b.data
    elif isinstance(b, (DQConst, np.ndarray)):
        f = b.to_float() if isinstance(b, DQConst) else b.astype(np.float32)
        if f.size not in (1, n):
            return False, None
        f = np.broadcast_to(f.reshape(-1), (n,)).astype(np.float32)
        return True, f if beta == 1.0 else (f.astype(np.float64) * beta).astype(np.float32)
    else:
        return False, None
    if units.size not in (1, n):
        return False, None
    units = np.broadcast_to(units.reshape(-1), (n,))
    return True, (units.astype(np.float64) * ats * beta).astype(np.float32)


def _weight_param(ctx: Context, name: str, data: np.ndarray, q) -> ir.Value:
    return ctx.b.param(ctx.b._fresh(_sanitize(name)), data, qparams=q)


def _emit_qconv(ctx: Context, a, t: Tensor, w8: np.ndarray, wq, bias: Optional[np.ndarray], out: Dict[str, Any],
                activation: str, wname: str) -> Tensor:
    _check_4d(t, "convolution")
    if bias is not None and bias.shape != (w8.shape[0],):
        raise UnsupportedError(f"a bias of shape {bias.shape} for {w8.shape[0]} output channels")
    s, d, groups, pads = _conv_geometry(a, t, w8.shape)
    t = ctx.to_layout(t)
    wv = _weight_param(ctx, wname, w8, wq)
    bv = None if bias is None else ctx.param(bias, wname + ".bias")
    v = ctx.emit("conv2d", t.value, wv, bv, strides=s, padding=pads, dilation=d, groups=groups,
                 layout=ctx.spatial(), activation=activation, **out)
    return Tensor(v, ctx.layout == "NHWC")


def _emit_qdense(ctx: Context, t: Tensor, w8: np.ndarray, wq, bias: Optional[np.ndarray], out: Dict[str, Any],
                 activation: str, wname: str) -> Tensor:
    if bias is not None and bias.shape != (w8.shape[0],):
        raise UnsupportedError(f"a bias of shape {bias.shape} for {w8.shape[0]} outputs")
    t = ctx.to_nchw(t)
    if t.rank < 2:
        raise UnsupportedError(f"a {t.rank}-D matrix product input")
    wv = _weight_param(ctx, wname, w8, wq)
    bv = None if bias is None else ctx.param(bias, wname + ".bias")
    return Tensor(ctx.emit("dense", t.value, wv, bv, activation=activation, **out), False)


def _const_operand(ctx: Context, ref: Tensor, data: np.ndarray, qp: QParams) -> ir.Value:
    """A quantized constant operand of add/mul, laid out to broadcast against ``ref``."""
    if qp.axis is not None or qp.dtype != ref.value.dtype:
        how = "per axis" if qp.axis is not None else f"as {qp.dtype}"
        raise UnsupportedError(f"a constant operand quantized {how} with a {ref.value.dtype} tensor")
    c = data
    if ref.nhwc and c.ndim >= 1 and c.size > 1:
        if c.ndim > 4:
            raise UnsupportedError(f"a {c.ndim}-D constant broadcast against a 4-D tensor")
        c = c.reshape((1,) * (4 - c.ndim) + c.shape).transpose(0, 2, 3, 1)
    return ctx.b.const(np.ascontiguousarray(c), name=ctx.b._fresh(_sanitize(ctx.node_label) + ".const"),
                       qparams=qp.ir())


def _emit_qbinary(ctx: Context, op: str, x: Any, y: Any, out: Dict[str, Any], activation: str) -> Tensor:
    """Quantized add/mul; operands are quantized Tensors or (int data, QParams) constants."""
    if not isinstance(x, Tensor):
        return Tensor(ctx.emit(op, _const_operand(ctx, y, *x), y.value, activation=activation, **out), y.nhwc)
    if not isinstance(y, Tensor):
        return Tensor(ctx.emit(op, x.value, _const_operand(ctx, x, *y), activation=activation, **out), x.nhwc)
    if x.value.dtype != y.value.dtype:
        raise UnsupportedError(f"{op} of a {x.value.dtype} and a {y.value.dtype} tensor")
    if x.nhwc != y.nhwc:
        if x.rank == 4 and y.rank == 4:
            x, y = ctx.to_layout(x), ctx.to_layout(y)
        else:
            x, y = ctx.to_nchw(x), ctx.to_nchw(y)
    elif x.nhwc and x.rank != y.rank:
        x, y = ctx.to_nchw(x), ctx.to_nchw(y)
    return Tensor(ctx.emit(op, x.value, y.value, activation=activation, **out), x.nhwc)


def _with_qout(ctx: Context, out: QParams, fn, *args) -> Tensor:
    """Run a float converter on quantized inputs so that its op quantizes to ``out``.

    Ops that keep their input's parameters (max pool, reshape, ...) leave
    ``ctx.qout`` unused; they get a requantize if the parameters differ.
    """
    ctx.qout = out.out_attrs()
    try:
        r = fn(*args)
    finally:
        pending, ctx.qout = ctx.qout, None
    if not isinstance(r, Tensor):
        raise UnsupportedError("its quantized form does not give a tensor")
    if pending is not None:
        r = _requantize_to(ctx, r, out)
    return r


# -- QOperator form --------------------------------------------------------------------

def _qin(ctx: Context, node, x: Any, scale: Any, zp: Any, what: str) -> Tensor:
    """A quantized run-time input of a QLinear op, read with the node's parameters."""
    if isinstance(x, Tensor) and x.value.qparams is not None:
        qp = qparams(ctx, node, scale, zp, what, shape=x.shape, dtype=x.value.dtype, per_tensor=True)
        if not _same(x, qp):
            raise UnsupportedError(f"it reads {what}, a tensor made with {_describe_q(x)}, as scale "
                                   f"{qp.scale[0]:.9g}, zero point {qp.zero_point[0]}; a mera tensor has one set of "
                                   "parameters")
        return x
    if isinstance(x, np.ndarray) and _dtype_name(x.dtype) in _RANGE:
        qp = qparams(ctx, node, scale, zp, what, shape=x.shape, dtype=_dtype_name(x.dtype), per_tensor=True)
        return Tensor(ctx.b.const(np.ascontiguousarray(x), name=ctx.b._fresh(_sanitize(ctx.node_label) + "." + what),
                                  qparams=qp.ir()), False)
    raise UnsupportedError(f"{what} must be a uint8 or int8 tensor")


def _qout(ctx: Context, node, scale: Any, zp: Any, what: str, dtype: str) -> QParams:
    if zp is None:
        return qparams(ctx, node, scale, None, what, dtype=dtype, per_tensor=True)
    return qparams(ctx, node, scale, zp, what, per_tensor=True)


def _weight_const(ctx: Context, w: Any, what: str, ndim: int) -> np.ndarray:
    if not isinstance(w, np.ndarray):
        raise UnsupportedError(f"{what} is computed at run time; mera needs a constant weight")
    if _dtype_name(w.dtype) not in _RANGE or w.ndim != ndim:
        raise UnsupportedError(f"{what} is a {w.ndim}-D {_dtype_name(w.dtype)} tensor; mera needs a {ndim}-D uint8 "
                               "or int8 constant")
    return w


@converts("QLinearConv")
def _qlinear_conv(ctx: Context, node, a, x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, b=None):
    t = _qin(ctx, node, x, x_scale, x_zp, "x")
    w = _weight_const(ctx, w, "the weight", 4)
    wq = qparams(ctx, node, w_scale, w_zp, "w", shape=w.shape, axis=0, dtype=_dtype_name(w.dtype))
    out = _qout(ctx, node, y_scale, y_zp, "y", t.value.dtype)
    w8 = _int8_weight(w, wq, 0)
    ok, bias = _bias(b, t.value.qparams[0], wq.scale, w.shape[0])
    if not ok:
        raise UnsupportedError(f"a bias of shape {np.shape(b)} for {w.shape[0]} output channels")
    return _emit_qconv(ctx, a, t, w8[0], w8[1], bias, out.out_attrs(), "none", node.input[3])


def _matrix_weight(ctx: Context, node, bm: np.ndarray, qp: QParams, transposed: bool):
    """A [K, N] (or, transposed, [N, K]) weight as dense's [N, K] int8 weight, per column N."""
    if transposed:
        return _int8_weight(bm, qp, 0)
    if qp.axis == 0:
        return None
    per_col = QParams(qp.scale, qp.zero_point, qp.dtype, None if qp.axis is None else 0)
    return _int8_weight(np.ascontiguousarray(bm.T), per_col, 0)


@converts("QLinearMatMul")
def _qlinear_matmul(ctx: Context, node, a, x, a_scale, a_zp, bm, b_scale, b_zp, y_scale, y_zp):
    t = _qin(ctx, node, x, a_scale, a_zp, "a")
    if not isinstance(bm, np.ndarray) or bm.ndim != 2:
        raise UnsupportedError("QLinearMatMul is supported with a constant 2-D B (it becomes a dense layer)"
                               + ("" if isinstance(bm, np.ndarray) else "; here B is computed at run time")
                               + ("" if not isinstance(bm, np.ndarray) else f"; here B is {bm.ndim}-D"))
    bm = _weight_const(ctx, bm, "B", 2)
    bq = qparams(ctx, node, b_scale, b_zp, "b", shape=bm.shape, axis=1, dtype=_dtype_name(bm.dtype))
    out = _qout(ctx, node, y_scale, y_zp, "y", t.value.dtype)
    w8 = _matrix_weight(ctx, node, bm, bq, False)
    if w8 is None:
        raise UnsupportedError("B is quantized along its rows; dense needs one scale per output column")
    if t.rank < 2:
        raise UnsupportedError(f"a {t.rank}-D A (mera's dense needs 2-D or more)")
    return _emit_qdense(ctx, t, w8[0], w8[1], None, out.out_attrs(), "none", node.input[3])


def _ms_qgemm(ctx: Context, node, a, x, a_scale, a_zp, bm, b_scale, b_zp, c=None, y_scale=None, y_zp=None):
    t = _qin(ctx, node, x, a_scale, a_zp, "A")
    if t.rank != 2:
        raise UnsupportedError(f"QGemm needs a 2-D A, got a {t.rank}-D one")
    bm = _weight_const(ctx, bm, "B", 2)
    trans_b = bool(a.get("transB", 0))
    bq = qparams(ctx, node, b_scale, b_zp, "B", shape=bm.shape, axis=0 if trans_b else 1,
                 dtype=_dtype_name(bm.dtype))
    alpha = float(a.get("alpha", 1.0))
    if alpha != 1.0:  # alpha scales the product: fold it into the weight scales
        if not alpha > 0:
            raise UnsupportedError(f"QGemm with alpha={alpha:g}")
        bq = QParams(bq.scale * alpha, bq.zero_point, bq.dtype, bq.axis)
    n = bm.shape[0] if trans_b else bm.shape[1]
    ok, bias = _bias(c, t.value.qparams[0], bq.scale, n)
    if not ok:
        raise UnsupportedError(f"a C of shape {np.shape(c)}: mera's dense takes a bias vector of {n} values")
    if a.get("transA", 0):
        t = Tensor(ctx.emit("transpose", t.value, axes=[1, 0]), False)
    if y_scale is None:  # float output: mera's dense cannot give it from integers, so it runs in float
        wf = DQConst(bm, bq, node.input[3]).to_float()
        return _dense(ctx, Tensor(ctx.emit("dequantize", t.value), t.nhwc), np.ascontiguousarray(wf if trans_b else wf.T),
                      bias, node.input[3])
    out = _qout(ctx, node, y_scale, y_zp, "Y", t.value.dtype)
    w8 = _matrix_weight(ctx, node, bm, bq, trans_b)
    return _emit_qdense(ctx, t, w8[0], w8[1], bias, out.out_attrs(), "none", node.input[3])


def _qin_or_const(ctx: Context, node, x, scale, zp, what):
    """A run-time quantized Tensor, or (int data, QParams) for a constant operand."""
    if isinstance(x, np.ndarray) and _dtype_name(x.dtype) in _RANGE:
        return x, qparams(ctx, node, scale, zp, what, shape=x.shape, dtype=_dtype_name(x.dtype), per_tensor=True)
    return _qin(ctx, node, x, scale, zp, what)


def _ms_binary(op: str):
    def convert(ctx: Context, node, a, xa, a_scale, a_zp, xb, b_scale, b_zp, c_scale, c_zp=None):
        x = _qin_or_const(ctx, node, xa, a_scale, a_zp, "A")
        y = _qin_or_const(ctx, node, xb, b_scale, b_zp, "B")
        t = x if isinstance(x, Tensor) else y
        if not isinstance(t, Tensor):
            raise UnsupportedError(f"QLinear{op.capitalize()} of two constants")
        out = _qout(ctx, node, c_scale, c_zp, "C", t.value.dtype)
        return _emit_qbinary(ctx, op, x, y, out.out_attrs(), "none")
    return convert


def _ms_unary(float_op: str, *, forbid_channels_last: bool = False):
    def convert(ctx: Context, node, a, x, x_scale, x_zp, y_scale, y_zp=None):
        if forbid_channels_last and int(a.get("channels_last", 0)):
            raise UnsupportedError("channels_last=1 (an NHWC tensor in the ONNX graph)")
        t = _qin(ctx, node, x, x_scale, x_zp, "X")
        out = _qout(ctx, node, y_scale, y_zp, "Y", t.value.dtype)
        return _with_qout(ctx, out, CONVERTERS[float_op], ctx, node, a, t)
    return convert


def _ms_concat(ctx: Context, node, a, y_scale, y_zp, *rest):
    if len(rest) % 3 or not rest:
        raise FormatError(f"{_where(ctx, node)}: expects (tensor, scale, zero point) triples after Y's parameters")
    ts = [_qin(ctx, node, rest[i], rest[i + 1], rest[i + 2], f"X{i // 3}") for i in range(0, len(rest), 3)]
    out = _qout(ctx, node, y_scale, y_zp, "Y", ts[0].value.dtype)
    return _with_qout(ctx, out, CONVERTERS["Concat"], ctx, node, a, *ts)


#: (domain, op type) -> converter, for ops outside the default domain
DOMAIN_CONVERTERS = {
    ("com.microsoft", "QLinearAdd"): _ms_binary("add"),
    ("com.microsoft", "QLinearMul"): _ms_binary("mul"),
    ("com.microsoft", "QGemm"): _ms_qgemm,
    ("com.microsoft", "QLinearGlobalAveragePool"): _ms_unary("GlobalAveragePool", forbid_channels_last=True),
    ("com.microsoft", "QLinearAveragePool"): _ms_unary("AveragePool", forbid_channels_last=True),
    ("com.microsoft", "QLinearSigmoid"): _ms_unary("Sigmoid"),
    ("com.microsoft", "QLinearLeakyRelu"): _ms_unary("LeakyRelu"),
    ("com.microsoft", "QLinearConcat"): _ms_concat,
}

#: default-domain ops whose converters take quantized values as they are
QUANT_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul"})


__all__ = ["DOMAIN_CONVERTERS", "QUANT_OPS", "DQConst", "QParams", "dq_operand", "dq_transposed_weight", "dq_weight",
           "float_inputs", "input_qparams", "qparams", "resolve"]
