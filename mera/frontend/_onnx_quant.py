"""Quantized ONNX models: the QDQ form (QuantizeLinear / DequantizeLinear
around float ops) and the QOperator form (QLinearConv, QLinearMatMul and
the com.microsoft QLinear ops that onnxruntime's quantizer writes).

A quantized ONNX tensor is a uint8/int8 tensor whose meaning comes from the
scale and zero point of the node that reads it; a mera tensor carries its
parameters. The importer therefore gives every integer tensor the parameters
of the node that made it (QuantizeLinear, a QLinear op) and checks that the
nodes reading it use the same ones.

QDQ form: ``DequantizeLinear`` of a run-time tensor is kept as a :class:`DQ`
marker and of a constant as a :class:`DQConst` (a quantized weight or an
int32 bias); neither emits anything yet. A float op whose run-time inputs are
all DQ markers and whose only reader is a ``QuantizeLinear`` (directly or
through one Relu or Clip) becomes the quantized op of mera's IR with the
QuantizeLinear's parameters (``try_lower``). Byte-moving ops (MaxPool,
Reshape, Transpose, ...) stay quantized even without a QuantizeLinear after
them, since dequantizing commutes with them exactly. Every other use of a DQ
marker gets an explicit ``dequantize``, and the op runs in float.

Arithmetic: mera's quantized ops follow docs/numerics.md (PyTorch fbgemm),
not onnxruntime's kernels; docs/frontends.md gives the measured difference.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .. import ir
from ..errors import FormatError, UnsupportedError
from .onnx import (CONVERTERS, Context, Tensor, _check_4d, _clip_bounds, _const_input, _conv_geometry, _dense,
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

class DQ:
    """DequantizeLinear of a run-time quantized tensor; dequantized only if a float op reads it."""

    __slots__ = ("tensor", "label", "float")

    def __init__(self, tensor: Tensor, label: str):
        self.tensor, self.label = tensor, label
        self.float: Optional[Tensor] = None


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
    """What a float converter sees: DQ markers dequantized, DQConst as float constants."""
    if isinstance(v, DQ):
        if v.float is None:
            saved = ctx.node_label
            ctx.node_label = v.label
            try:
                v.float = Tensor(ctx.emit("dequantize", v.tensor.value), v.tensor.nhwc)
            finally:
                ctx.node_label = saved
        return v.float
    if isinstance(v, DQConst):
        return v.to_float()
    return v


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
    if node.op_type == "Shape":  # only the shape is read: no need to dequantize
        return [v.tensor if isinstance(v, DQ) else v for v in ins]
    return [resolve(ctx, v) for v in ins]


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
    return np.clip(np.nan_to_num(q), lo, hi).astype(qp.dtype)


@converts("QuantizeLinear")
def _quantize_linear(ctx: Context, node, a, x, scale, zp=None):
    _check_blocked(a)
    dtype = _q_dtype(a, zp)
    axis = int(a.get("axis", 1))
    if isinstance(x, (np.ndarray, DQConst)):  # a constant: folded
        xf = x.to_float() if isinstance(x, DQConst) else np.asarray(x, np.float32)
        return _quantize_const(xf, qparams(ctx, node, scale, zp, "y", shape=xf.shape, axis=axis, dtype=dtype))
    if isinstance(x, DQ):  # DequantizeLinear -> QuantizeLinear: a requantization
        t = x.tensor
        qp = qparams(ctx, node, scale, zp, "y", shape=t.shape, axis=axis, dtype=dtype, per_tensor=True)
        return _requantize_to(ctx, t, qp)
    t = ctx.tensor(x)
    if t.value.qparams is not None:
        raise UnsupportedError(f"QuantizeLinear of a {t.value.dtype} tensor")
    qp = qparams(ctx, node, scale, zp, "y", shape=t.shape, axis=axis, dtype=dtype, per_tensor=True)
    return Tensor(ctx.emit("quantize", t.value, scale=float(qp.scale[0]), zero_point=int(qp.zero_point[0]),
                           dtype=dtype), t.nhwc)


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
        return DQ(x, _label(ctx, node))
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
        return _dense(ctx, resolve(ctx, DQ(t, ctx.node_label)), np.ascontiguousarray(wf if trans_b else wf.T), bias,
                      node.input[3])
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


# -- QDQ form: DequantizeLinear -> op [-> Relu | Clip] -> QuantizeLinear ------------------

def _lower_conv(ctx: Context, node, a, ins, out, activation):
    x, w = ins[0], ins[1]
    b = ins[2] if len(ins) > 2 else None
    if not isinstance(w, DQConst) or w.data.ndim != 4:
        return None
    w8 = _int8_weight(w.data, w.qp, 0)
    if w8 is None:
        return None
    ok, bias = _bias(b, x.value.qparams[0], w8[1][0], w.data.shape[0])
    if not ok:
        return None
    return _emit_qconv(ctx, a, x, w8[0], w8[1], bias, out, activation, w.name)


def _lower_gemm(ctx: Context, node, a, ins, out, activation):
    x, bm = ins[0], ins[1]
    c = ins[2] if len(ins) > 2 else None
    alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
    if not isinstance(bm, DQConst) or bm.data.ndim != 2 or x.rank != 2 or not alpha > 0:
        return None
    trans_b = bool(a.get("transB", 0))
    qp = bm.qp if alpha == 1.0 else QParams(bm.qp.scale * alpha, bm.qp.zero_point, bm.qp.dtype, bm.qp.axis)
    w8 = _matrix_weight(ctx, node, bm.data, qp, trans_b)
    if w8 is None:
        return None
    ok, bias = _bias(c, x.value.qparams[0], w8[1][0], w8[0].shape[0], beta)
    if not ok:
        return None
    if a.get("transA", 0):
        x = Tensor(ctx.emit("transpose", ctx.to_nchw(x).value, axes=[1, 0]), False)
    return _emit_qdense(ctx, x, w8[0], w8[1], bias, out, activation, bm.name)


def _lower_matmul(ctx: Context, node, a, ins, out, activation):
    x, bm = ins
    if not isinstance(x, Tensor) or not isinstance(bm, DQConst) or bm.data.ndim != 2 or x.rank < 2:
        return None
    w8 = _matrix_weight(ctx, node, bm.data, bm.qp, False)
    if w8 is None:
        return None
    return _emit_qdense(ctx, x, w8[0], w8[1], None, out, activation, bm.name)


def _lower_binary(op: str):
    def lower(ctx: Context, node, a, ins, out, activation):
        ops = []
        for v in ins:
            if isinstance(v, Tensor):
                ops.append(v)
            elif isinstance(v, DQConst) and v.qp.dtype in _RANGE and v.qp.axis is None:
                ops.append((v.data, v.qp))
            else:
                return None
        tensors = [v for v in ops if isinstance(v, Tensor)]
        dtypes = {t.value.dtype for t in tensors} | {v[1].dtype for v in ops if not isinstance(v, Tensor)}
        if len(dtypes) != 1:
            return None
        return _emit_qbinary(ctx, op, ops[0], ops[1], out, activation)
    return lower


_LOWER_OWN = {"Conv": _lower_conv, "Gemm": _lower_gemm, "MatMul": _lower_matmul, "Add": _lower_binary("add"),
              "Mul": _lower_binary("mul")}
# float converters reused on quantized inputs: ops with output parameters ...
_LOWER_QOUT = {"Concat", "AveragePool", "GlobalAveragePool", "LeakyRelu", "Sigmoid", "HardSwish", "HardSigmoid",
               "Resize", "Upsample", "Softmax", "ReduceMean"}
# ... and ops that keep their input's parameters (a requantize follows if the QuantizeLinear differs)
_LOWER_KEEP = {"MaxPool", "Relu", "Clip", "Reshape", "Flatten", "Transpose", "Slice", "Pad", "Identity", "Dropout"}
# these commute exactly with dequantization: quantized even without a QuantizeLinear after them
_EXACT_ALONE = {"MaxPool", "Relu", "Reshape", "Flatten", "Transpose", "Slice", "Identity", "Dropout", "Pad"}


def _single_reader(ctx: Context, name: str):
    users = ctx.consumers.get(name, [])
    if name in ctx.graph_outputs or len(users) != 1:
        return None
    return users[0]


def _chain(ctx: Context, node):
    """(QuantizeLinear, Relu/Clip or None) if node's output reaches a QuantizeLinear and nothing else."""
    if len([o for o in node.output if o]) != 1:
        return None
    u = _single_reader(ctx, node.output[0])
    act = None
    if u is not None and u.domain in ("", "ai.onnx") and u.op_type in ("Relu", "Clip") and u.input[0] == node.output[0]:
        act, u = u, _single_reader(ctx, u.output[0])
    if u is not None and u.domain in ("", "ai.onnx") and u.op_type == "QuantizeLinear" and \
            u.input[0] == (act or node).output[0]:
        return u, act
    return None


def _chain_params(ctx: Context, q, act) -> Optional[Tuple[QParams, Optional[Tuple[float, float]]]]:
    """The QuantizeLinear's parameters and the Clip bounds (Relu: None), or None if not known yet."""
    env = ctx.env
    qins = [env.get(n) if n else None for n in q.input]
    if len(qins) < 2 or not isinstance(qins[1], np.ndarray) or not (len(qins) < 3 or qins[2] is None or
                                                                     isinstance(qins[2], np.ndarray)):
        return None
    qa = {at.name: _onnx().helper.get_attribute_value(at) for at in q.attribute}
    if int(qa.get("block_size", 0)) or np.size(qins[1]) != 1:
        return None  # the QuantizeLinear itself reports these
    zp = qins[2] if len(qins) > 2 else None
    try:
        dtype = _q_dtype(qa, zp)
    except UnsupportedError:
        return None
    qp = qparams(ctx, q, qins[1], zp, "y", dtype=dtype, per_tensor=True)
    bounds = None
    if act is not None and act.op_type == "Clip":
        cins = [env.get(n) if n else None for n in act.input[1:]]
        if any(not (v is None or isinstance(v, np.ndarray)) for v in cins) or \
                any(n and n not in env for n in act.input[1:]):
            return None
        aa = {at.name: _onnx().helper.get_attribute_value(at) for at in act.attribute}
        bounds = _clip_bounds(ctx, aa, *cins)
    return qp, bounds


def _pad_on_grid(ctx: Context, a, t: Tensor, ins) -> bool:
    """Is the Pad's fill value exactly one of the tensor's quantized values?"""
    if a.get("mode", "constant") != "constant":
        return False
    if ctx.opset < 11:
        fill = float(a.get("value", 0.0))
    else:
        v = ins[2] if len(ins) > 2 else None
        if v is not None and not isinstance(v, np.ndarray):
            return False
        fill = 0.0 if v is None else float(np.asarray(v).reshape(-1)[0])
    s, z = t.value.qparams
    q = round(fill / s) + z
    lo, hi = _RANGE[t.value.dtype]
    return lo <= q <= hi and np.float32((q - z) * np.float32(s)) == np.float32(fill)


def try_lower(ctx: Context, node, a, ins: List[Any]) -> Any:
    """The quantized form of a float op that reads dequantized values, or None (it then runs in float)."""
    op = node.op_type
    if op not in _LOWER_OWN and op not in _LOWER_QOUT and op not in _LOWER_KEEP:
        return None
    acts = [v for v in ins if isinstance(v, (Tensor, DQ))]
    if not acts or not all(isinstance(v, DQ) for v in acts):
        return None
    if op not in _LOWER_OWN and any(isinstance(v, DQConst) for v in ins):
        return None
    qins = [v.tensor if isinstance(v, DQ) else v for v in ins]
    if op == "Pad" and not _pad_on_grid(ctx, a, qins[0], ins):
        return None
    chain = _chain(ctx, node)
    params = None if chain is None else _chain_params(ctx, *chain)
    if params is None:
        if op not in _EXACT_ALONE:
            return None
        return DQ(CONVERTERS[op](ctx, node, a, *qins), ctx.node_label)
    (q, act), (out, bounds) = chain, params
    relu = act is not None and act.op_type == "Relu"
    if op in _LOWER_OWN:
        r = _LOWER_OWN[op](ctx, node, a, qins, out.out_attrs(), "relu" if relu else "none")
        if r is None:
            return None
    else:
        r = _with_qout(ctx, out, CONVERTERS[op], ctx, node, a, *qins)
        if relu:  # relu on the quantized output is max(q, zero point): Q(relu(y)) exactly
            r = Tensor(ctx.emit("relu", r.value), r.nhwc)
    if bounds is not None:
        r = Tensor(ctx.emit("clip", r.value, a_min=bounds[0], a_max=bounds[1]), r.nhwc)
    ctx.done[id(q)] = r
    if act is not None:
        ctx.done[id(act)] = r
    return r


__all__ = ["DOMAIN_CONVERTERS", "QUANT_OPS", "DQ", "DQConst", "QParams", "float_inputs", "input_qparams", "qparams",
           "resolve", "try_lower"]
