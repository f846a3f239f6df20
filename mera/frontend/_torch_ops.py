"""Conversion of PyTorch ops to mera IR, one function per op kind.

Each converter takes the conversion context and the op's arguments in schema
order (already converted: tensors as :class:`Tensor` entries, scalars and
lists as Python values, packed weights and attribute tensors as torch
objects) and returns its result(s). The TorchScript walker and the
torch.export walker share this table.

Layout: under ``layout="NHWC"`` every 4-D activation is kept channels-last
in the graph. Each entry records whether its data is NHWC; ops that index
axes (cat, mean, chunk, softmax, flatten, view) remap axes or convert.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from .. import ir
from ..errors import UnsupportedError

# NCHW axis -> position of that axis in NHWC data
_NCHW_TO_NHWC_AXIS = {0: 0, 1: 3, 2: 1, 3: 2}


@dataclass
class Unavailable:
    """An op result mera does not compute (an LSTM's last cell state): an error names it where it is used."""

    describe: str


@dataclass
class Tensor:
    """A tensor of the graph being built. ``nhwc``: 4-D data stored channels-last."""

    value: ir.Value
    nhwc: bool = False
    # PyTorch's memory format for this tensor (channels-last or contiguous),
    # whatever our layout: it picks the formula of some quantized ops.
    torch_cl: bool = False
    # A dequantized quantized tensor (torch.export QDQ): the ops reading it
    # get the quantized formula's attributes, for when the lower_qdq pass
    # makes them quantized ops.
    dequantized: bool = False

    @property
    def shape(self):
        """The shape as PyTorch sees it (NCHW for NHWC data)."""
        s = self.value.shape
        return (s[0], s[3], s[1], s[2]) if self.nhwc else s

    @property
    def quantized(self) -> bool:
        return self.value.qparams is not None


class Context:
    """What converters need: the builder, the layout and naming."""

    def __init__(self, builder: ir.Builder, layout: str):
        self.b = builder
        self.layout = layout
        self.source: Optional[str] = None   # location of the op being converted
        self.scope: Optional[str] = None    # module path of the op being converted
        self._tensor_names: Dict[int, str] = {}
        self._materialized: Dict[int, Tensor] = {}
        # every torch tensor materialized above, kept alive: _materialized is keyed by id(), and a temporary
        # tensor (a converter's torch.from_numpy, say) freed while the graph is built would hand its id to
        # the next one, which would then get the first one's constant
        self._alive: List[torch.Tensor] = []

    # -- naming -----------------------------------------------------------

    def node_name(self, op: str) -> Optional[str]:
        base = self.scope or op
        if self.scope and self.b._g.find(self.scope) >= 0:
            base = f"{self.scope}.{op}"
        return self.b._fresh(base)

    def name_tensor(self, t: torch.Tensor, name: str) -> None:
        self._tensor_names.setdefault(id(t), name)

    # -- building ---------------------------------------------------------

    def emit(self, op: str, *inputs: Any, **attrs: Any) -> ir.Value:
        return self.b.op(op, *inputs, name=self.node_name(op), source=self.source, **attrs)

    def spatial(self) -> str:
        return "NHWC" if self.layout == "NHWC" else "NCHW"

    def tensor(self, x: Any, what: str) -> Tensor:
        """The graph tensor for an argument; torch tensors become params/consts."""
        if isinstance(x, Tensor):
            return x
        if isinstance(x, torch.Tensor):
            key = id(x)
            if key not in self._materialized:
                arr = x.detach().contiguous().numpy()
                if arr.dtype == np.float64:
                    arr = arr.astype(np.float32)
                name = self._tensor_names.get(key)
                if name is not None and arr.size > 1:
                    v = self.b.param(self.b._fresh(name), arr)
                else:
                    v = self.b.const(arr, name=self.b._fresh(name or "const"))
                self._materialized[key] = Tensor(v, False)
                self._alive.append(x)
            return self._materialized[key]
        if isinstance(x, (int, float)) and not isinstance(x, bool):
            return Tensor(self.b.const(np.array(x, np.float32), name=self.b._fresh("scalar")), False)
        if isinstance(x, Unavailable):
            raise UnsupportedError(f"{what}{self.where()} uses {x.describe}")
        raise UnsupportedError(f"{what}: expected a tensor, got {type(x).__name__}{self.where()}")

    def where(self) -> str:
        return f" at {self.source}" if self.source else ""

    def to_nchw(self, t: Tensor) -> Tensor:
        if not t.nhwc:
            return t
        return Tensor(self.emit("transpose", t.value, axes=[0, 3, 1, 2]), False, t.torch_cl, t.dequantized)

    def to_layout(self, t: Tensor) -> Tensor:
        """4-D data in the graph's layout (what spatial ops expect)."""
        want = self.layout == "NHWC"
        if t.value.shape.__len__() != 4 or t.nhwc == want:
            return t
        if want:
            return Tensor(self.emit("transpose", t.value, axes=[0, 2, 3, 1]), True, t.torch_cl, t.dequantized)
        return self.to_nchw(t)

    def axis(self, t: Tensor, dim: int) -> int:
        """The graph axis of PyTorch dimension ``dim`` of ``t``."""
        rank = len(t.value.shape)
        d = dim + rank if dim < 0 else dim
        return _NCHW_TO_NHWC_AXIS[d] if t.nhwc else d


_OP_INFO: Dict[str, Dict[str, Any]] = {}


def _op_info(op: str) -> Dict[str, Any]:
    if op not in _OP_INFO:
        info = dict(ir.op_info(op))
        info["attr_names"] = {a["name"] for a in info["attrs"]}
        _OP_INFO[op] = info
    return _OP_INFO[op]


ConvertFn = Callable[..., Any]
CONVERTERS: Dict[str, ConvertFn] = {}


def converts(*kinds: str):
    def register(fn: ConvertFn) -> ConvertFn:
        for k in kinds:
            CONVERTERS[k] = fn
        return fn
    return register


def _qout(scale: float, zp: int) -> Dict[str, Any]:
    return {"out_scale": float(scale), "out_zero_point": int(zp)}


_QDTYPES = {torch.quint8: "uint8", torch.qint8: "int8"}
# TorchScript passes dtypes as ScalarType numbers
_SCALAR_TYPES = {13: "uint8", 12: "int8"}


def _qdtype(d: Any) -> str:
    if isinstance(d, torch.dtype) and d in _QDTYPES:
        return _QDTYPES[d]
    if isinstance(d, int) and d in _SCALAR_TYPES:
        return _SCALAR_TYPES[d]
    raise UnsupportedError(f"quantize to dtype {d} is not supported (use torch.quint8 or torch.qint8)")


def _pair(v: Any) -> List[int]:
    if isinstance(v, int):
        return [v, v]
    v = list(v)
    return v * 2 if len(v) == 1 else v


def _weight_qparams(w: torch.Tensor):
    qs = w.qscheme()
    if qs in (torch.per_channel_affine, torch.per_channel_symmetric):
        return (w.q_per_channel_scales().numpy().astype(np.float64),
                w.q_per_channel_zero_points().numpy().astype(np.int32), int(w.q_per_channel_axis()))
    if qs in (torch.per_tensor_affine, torch.per_tensor_symmetric):
        return (float(w.q_scale()), int(w.q_zero_point()))
    raise UnsupportedError(f"weight quantization scheme {qs} is not supported")


# -- quantize / dequantize ---------------------------------------------------

@converts("aten::quantize_per_tensor")
def _quantize(ctx: Context, x, scale, zp, dtype):
    t = ctx.tensor(x, "quantize_per_tensor")
    v = ctx.emit("quantize", t.value, scale=float(scale), zero_point=int(zp), dtype=_qdtype(dtype))
    return Tensor(v, t.nhwc, t.torch_cl)


@converts("aten::dequantize")
def _dequantize(ctx: Context, x):
    if isinstance(x, list):
        return [_dequantize(ctx, e) for e in x]
    t = ctx.tensor(x, "dequantize")
    return Tensor(ctx.emit("dequantize", t.value), t.nhwc, t.torch_cl)


# -- quantized conv / linear --------------------------------------------------

def _packed_name(ctx: Context, packed: Any) -> str:
    return ctx._tensor_names.get(id(packed), ctx.scope or "conv")


def _qconv(ctx: Context, x, packed, scale, zp, relu: bool):
    if packed.transpose():  # quantized::conv2d never gets transposed params from PyTorch itself
        raise UnsupportedError(f"quantized::conv2d with transposed-convolution params is not supported"
                               f"{ctx.where()}: use quantized::conv_transpose2d")
    w, bias = torch.ops.quantized.conv2d_unpack(packed)
    t = ctx.to_layout(ctx.tensor(x, "quantized::conv2d"))
    base = _packed_name(ctx, packed)
    wv = ctx.b.param(ctx.b._fresh(base + ".weight"), np.ascontiguousarray(w.int_repr().numpy()), qparams=_weight_qparams(w))
    bv = None
    if bias is not None:
        bv = ctx.b.param(ctx.b._fresh(base + ".bias"), bias.detach().float().numpy())
    ph, pw = _pair(packed.padding())
    v = ctx.emit("conv2d", t.value, wv, bv, strides=_pair(packed.stride()), padding=[ph, pw, ph, pw],
                 dilation=_pair(packed.dilation()), groups=int(packed.groups()), layout=ctx.spatial(),
                 activation="relu" if relu else "none", **_qout(scale, zp))
    return Tensor(v, ctx.layout == "NHWC", True)  # fbgemm conv output is always channels-last


def _fbgemm_direct_path(c_in: int, c_out: int, k, stride, padding, dilation, groups: int) -> bool:
    """Whether fbgemm runs a transposed conv with its direct-convolution kernel, which does not compute a
    transposed convolution (docs/numerics.md, tests/test_conv_transpose_q.py)."""
    return (groups == 1 and c_in % 8 == 0 and c_out % 8 == 0 and k[0] == 2 and k[1] <= 6 and
            all(s in (1, 2) for s in stride) and not any(padding) and all(d == 1 for d in dilation))


@converts("quantized::conv_transpose2d")
def _quantized_conv_transpose2d(ctx, x, packed, scale, zp):
    w, bias = torch.ops.quantized.conv_transpose2d_unpack(packed)
    if w.dim() != 4:
        raise UnsupportedError(f"only 2-D quantized transposed convolution is supported, got a {w.dim()}-D weight"
                               f"{ctx.where()}")
    t = ctx.to_layout(ctx.tensor(x, "quantized::conv_transpose2d"))
    base = _packed_name(ctx, packed)
    wv = ctx.b.param(ctx.b._fresh(base + ".weight"), np.ascontiguousarray(w.int_repr().numpy()),
                     qparams=_weight_qparams(w))
    bv = None if bias is None else ctx.b.param(ctx.b._fresh(base + ".bias"), bias.detach().float().numpy())
    stride, (ph, pw) = _pair(packed.stride()), _pair(packed.padding())
    dil, groups = _pair(packed.dilation()), int(packed.groups())
    if _fbgemm_direct_path(w.shape[0], w.shape[1] * groups, w.shape[2:], stride, (ph, pw), dil, groups):
        warnings.warn(f"quantized::conv_transpose2d{ctx.where()}: PyTorch's fbgemm runs this layer (2-row kernel, "
                      "channels multiples of 8, no padding) with a direct kernel whose results are not a transposed "
                      "convolution; mera computes the transposed convolution, so this layer's output differs from "
                      "PyTorch's (docs/numerics.md)", stacklevel=2)
    v = ctx.emit("conv_transpose2d", t.value, wv, bv, strides=stride, padding=[ph, pw, ph, pw],
                 output_padding=_pair(packed.output_padding()), dilation=dil, groups=groups,
                 layout=ctx.spatial(), **_qout(scale, zp))
    return Tensor(v, ctx.layout == "NHWC", True)  # fbgemm's output is channels-last


@converts("quantized::conv_transpose1d")
def _quantized_conv_transpose1d(ctx, x, packed, scale, zp):
    """Like conv1d: fbgemm's packed params are conv_transpose2d's with a unit first spatial axis."""
    t = ctx.to_nchw(ctx.tensor(x, "quantized::conv_transpose1d"))
    if len(t.shape) != 3:
        raise UnsupportedError(f"quantized::conv_transpose1d of a rank-{len(t.shape)} tensor (PyTorch takes "
                               f"[N, C, L]){ctx.where()}")
    n, c, length = t.shape
    x4 = Tensor(ctx.emit("reshape", t.value, shape=[n, c, 1, length]))
    y = ctx.to_nchw(_quantized_conv_transpose2d(ctx, x4, packed, scale, zp))
    n, o, _, out_len = y.shape
    return Tensor(ctx.emit("reshape", y.value, shape=[n, o, out_len]))


@converts("quantized::conv2d", "quantized::conv2d.new")
def _quantized_conv2d(ctx, x, packed, scale, zp):
    return _qconv(ctx, x, packed, scale, zp, False)


def _qconv1d(ctx: Context, x, packed, scale, zp, relu: bool):
    """fbgemm runs a quantized conv1d as conv2d on [N, C, 1, L] (its packed params are conv2d's, with a
    unit first spatial axis): the same here, between two reshapes."""
    t = ctx.to_nchw(ctx.tensor(x, "quantized::conv1d"))
    if len(t.shape) != 3:
        raise UnsupportedError(f"quantized::conv1d of a rank-{len(t.shape)} tensor (PyTorch takes [N, C, L])"
                               f"{ctx.where()}")
    n, c, length = t.shape
    x4 = Tensor(ctx.emit("reshape", t.value, shape=[n, c, 1, length]))
    y = ctx.to_nchw(_qconv(ctx, x4, packed, scale, zp, relu))
    n, o, _, out_len = y.shape
    return Tensor(ctx.emit("reshape", y.value, shape=[n, o, out_len]))


@converts("quantized::conv1d")
def _quantized_conv1d(ctx, x, packed, scale, zp):
    return _qconv1d(ctx, x, packed, scale, zp, False)


@converts("quantized::conv1d_relu")
def _quantized_conv1d_relu(ctx, x, packed, scale, zp):
    return _qconv1d(ctx, x, packed, scale, zp, True)


@converts("quantized::conv2d_relu", "quantized::conv2d_relu.new")
def _quantized_conv2d_relu(ctx, x, packed, scale, zp):
    return _qconv(ctx, x, packed, scale, zp, True)


def _qlinear(ctx: Context, x, packed, scale, zp, relu: bool):
    w, bias = torch.ops.quantized.linear_unpack(packed)
    t = ctx.tensor(x, "quantized::linear")
    if t.nhwc:
        t = ctx.to_nchw(t)
    base = _packed_name(ctx, packed)
    wv = ctx.b.param(ctx.b._fresh(base + ".weight"), np.ascontiguousarray(w.int_repr().numpy()), qparams=_weight_qparams(w))
    bv = None if bias is None else ctx.b.param(ctx.b._fresh(base + ".bias"), bias.detach().float().numpy())
    v = ctx.emit("dense", t.value, wv, bv, activation="relu" if relu else "none", **_qout(scale, zp))
    return Tensor(v, False)


@converts("quantized::linear")
def _quantized_linear(ctx, x, packed, scale, zp):
    return _qlinear(ctx, x, packed, scale, zp, False)


@converts("quantized::linear_relu")
def _quantized_linear_relu(ctx, x, packed, scale, zp):
    return _qlinear(ctx, x, packed, scale, zp, True)


def _qlinear_dynamic(ctx: Context, x, packed, reduce_range, relu: bool):
    """torch.ao.nn.quantized.dynamic.Linear (fbgemm): the IR's linear_dynamic, float in and out."""
    what = "quantized::linear_relu_dynamic" if relu else "quantized::linear_dynamic"
    w, bias = torch.ops.quantized.linear_unpack(packed)
    if w.dtype != torch.qint8:
        raise UnsupportedError(f"{what} with a {w.dtype} weight (mera takes qint8){ctx.where()}")
    t = ctx.to_nchw(ctx.tensor(x, what))
    if t.quantized:
        raise UnsupportedError(f"{what} of a quantized tensor (PyTorch takes float){ctx.where()}")
    qp = _weight_qparams(w)
    if len(qp) == 3 and qp[2] != 0:
        raise UnsupportedError(f"{what} with weights quantized per axis {qp[2]} (fbgemm's are per output "
                               f"channel, axis 0){ctx.where()}")
    base = _packed_name(ctx, packed)
    wv = ctx.b.param(ctx.b._fresh(base + ".weight"), np.ascontiguousarray(w.int_repr().numpy()), qparams=qp)
    bv = None if bias is None else ctx.b.param(ctx.b._fresh(base + ".bias"), bias.detach().float().numpy())
    v = ctx.emit("linear_dynamic", t.value, wv, bv, reduce_range=int(bool(reduce_range)), relu=int(relu))
    return Tensor(v, False)


@converts("quantized::linear_dynamic")
def _quantized_linear_dynamic(ctx, x, packed, reduce_range=False):
    return _qlinear_dynamic(ctx, x, packed, reduce_range, False)


@converts("quantized::linear_relu_dynamic")
def _quantized_linear_relu_dynamic(ctx, x, packed, reduce_range=False):
    return _qlinear_dynamic(ctx, x, packed, reduce_range, True)


def _lstm_cell_params(ctx: Context, p) -> tuple:
    """(packed_ih, packed_hh, reduce_range) of one torch.classes.rnn.CellParamsBase of a dynamic quantized LSTM
    (its state: ("quantized_dynamic", [b_ih, b_hh], [], [reduce_range], [packed_ih, packed_hh]))."""
    try:
        kind, _tensors, _doubles, longs, packed = p.__getstate__()[0]
    except Exception:
        raise UnsupportedError(f"aten::quantized_lstm with cell parameters of type {type(p).__name__}{ctx.where()}") \
            from None
    if kind != "quantized_dynamic" or len(packed) != 2:
        raise UnsupportedError(f"aten::quantized_lstm with '{kind}' cell parameters (mera takes torch's int8 "
                               f"'quantized_dynamic' ones){ctx.where()}")
    return packed[0], packed[1], bool(longs[0]) if longs else False


def _concat_axis0(ctx: Context, vals: List[ir.Value]) -> ir.Value:
    """concat of any number of values on axis 0 (the IR's concat takes up to 64)."""
    while len(vals) > 1:
        vals = [ctx.emit("concat", *vals[i:i + 64], axis=0) if len(vals[i:i + 64]) > 1 else vals[i]
                for i in range(0, len(vals), 64)]
    return vals[0]


@converts("aten::quantized_lstm")
def _quantized_lstm(ctx, x, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first,
                    dtype=None, use_dynamic=False):
    """torch.ao.nn.quantized.dynamic.LSTM (quantize_dynamic's LSTM), unrolled over the static sequence: per layer
    and direction, the input projection is one linear_dynamic over the whole [T, B, I] sequence (ATen's FullLayer
    precomputes it on CPU, so its input parameters come from the whole sequence), then per step
    gates = linear_dynamic(h) + that step's projection, i, f, o = sigmoid, g = tanh (chunks in that order),
    c = f * c + i * g, h = o * tanh(c). The gates' float sigmoid and tanh are mera's, not ATen's vector kernels:
    within float rounding of PyTorch (docs/frontends.md gives the measured error)."""
    if train:
        raise UnsupportedError(f"aten::quantized_lstm in training mode{ctx.where()}")
    cells = [_lstm_cell_params(ctx, p) for p in params]
    dirs = 2 if bidirectional else 1
    if len(cells) != num_layers * dirs:
        raise UnsupportedError(f"aten::quantized_lstm with {len(cells)} cell parameters for {num_layers} layers x "
                               f"{dirs} directions{ctx.where()}")
    t = ctx.to_nchw(ctx.tensor(x, "aten::quantized_lstm"))
    if len(t.shape) != 3 or t.quantized:
        raise UnsupportedError(f"aten::quantized_lstm of a {'quantized' if t.quantized else 'float'} rank-"
                               f"{len(t.shape)} input (PyTorch takes a float [T, B, I] or [B, T, I]){ctx.where()}")
    seq = Tensor(ctx.emit("transpose", t.value, axes=[1, 0, 2])) if batch_first else t
    T, B, _ = seq.shape
    h0, c0 = (ctx.to_nchw(ctx.tensor(v, "aten::quantized_lstm hx")) for v in hx)
    hy, cy = [], []
    for layer in range(num_layers):
        dir_outs = []
        for d in range(dirs):
            idx = layer * dirs + d
            packed_ih, packed_hh, rr = cells[idx]
            gi = _qlinear_dynamic(ctx, seq, packed_ih, rr, False)  # [T, B, 4H]
            H = gi.shape[2] // 4
            h = Tensor(ctx.emit("reshape", ctx.emit("slice", h0.value, axis=0, begin=idx, end=idx + 1), shape=[B, H]))
            c = Tensor(ctx.emit("reshape", ctx.emit("slice", c0.value, axis=0, begin=idx, end=idx + 1), shape=[B, H]))
            outs: List[Optional[Tensor]] = [None] * T
            for step in (range(T) if d == 0 else range(T - 1, -1, -1)):
                g_t = Tensor(ctx.emit("reshape", ctx.emit("slice", gi.value, axis=0, begin=step, end=step + 1),
                                      shape=[B, 4 * H]))
                gates = _binary(ctx, "add", _qlinear_dynamic(ctx, h, packed_hh, rr, False), g_t)
                chunk = [Tensor(ctx.emit("slice", gates.value, axis=1, begin=k * H, end=(k + 1) * H)) for k in range(4)]
                i_g, f_g = _unary(ctx, "sigmoid", chunk[0]), _unary(ctx, "sigmoid", chunk[1])
                g_g, o_g = _unary(ctx, "tanh", chunk[2]), _unary(ctx, "sigmoid", chunk[3])
                c = _binary(ctx, "add", _binary(ctx, "mul", f_g, c), _binary(ctx, "mul", i_g, g_g))
                h = _binary(ctx, "mul", o_g, _unary(ctx, "tanh", c))
                outs[step] = h
            dir_outs.append(_concat_axis0(ctx, [ctx.emit("reshape", o.value, shape=[1, B, H]) for o in outs]))
            hy.append(ctx.emit("reshape", h.value, shape=[1, B, H]))
            cy.append(ctx.emit("reshape", c.value, shape=[1, B, H]))
        seq = Tensor(dir_outs[0] if dirs == 1 else ctx.emit("concat", *dir_outs, axis=2))
    out = Tensor(ctx.emit("transpose", seq.value, axes=[1, 0, 2])) if batch_first else seq
    return [out, Tensor(_concat_axis0(ctx, hy)), Tensor(_concat_axis0(ctx, cy))]


@converts("quantized::layer_norm")
def _qlayer_norm(ctx, x, shape, weight, bias, eps, scale, zp):
    """torch.ao.nn.quantized.LayerNorm: the IR's layer_norm_q (PyTorch's integer sums, then its float steps)."""
    t = ctx.to_nchw(ctx.tensor(x, "quantized::layer_norm"))
    k = len(list(shape))
    if list(t.shape[len(t.shape) - k:]) != [int(s) for s in shape]:
        raise UnsupportedError(f"quantized::layer_norm over {list(shape)} of a tensor of shape {list(t.shape)}"
                               f"{ctx.where()}")
    affine = []
    for p, what in ((weight, "weight"), (bias, "bias")):
        if p is not None and not isinstance(p, torch.Tensor):
            raise UnsupportedError(f"quantized::layer_norm with a computed {what}{ctx.where()}")
        affine.append(None if p is None else
                      ctx.b.const(p.detach().float().contiguous().numpy().reshape(-1),
                                  name=ctx.b._fresh((ctx.scope or "layer_norm") + "." + what)))
    v = ctx.emit("layer_norm_q", t.value, *affine, num_axes=k, eps=float(eps), **_qout(scale, zp))
    return Tensor(v, False)


def _per_channel_affine(ctx, p, what: str, op: str, channels: int):
    """A norm's optional per-channel weight or bias as a float [C] constant."""
    if p is None:
        return None
    if not isinstance(p, torch.Tensor):
        raise UnsupportedError(f"{op} with a computed {what}{ctx.where()}")
    arr = p.detach().float().contiguous().numpy().reshape(-1)
    if arr.size != channels:
        raise UnsupportedError(f"{op} with a {what} of {arr.size} values for {channels} channels{ctx.where()}")
    return ctx.b.const(arr, name=ctx.b._fresh((ctx.scope or op.split("::")[-1]) + "." + what))


def _qgroup_norm_to(ctx, op: str, x, groups, weight, bias, eps, scale, zp):
    """quantized::group_norm and instance_norm: the IR's group_norm_q, with PyTorch's memory format (it picks
    the contiguous or the channels-last kernel) and thread count (the latter's float sums follow it)."""
    t = ctx.tensor(x, op)
    if not t.quantized:
        raise UnsupportedError(f"{op} of a float tensor{ctx.where()}")
    nchw = ctx.to_nchw(t)
    if len(nchw.shape) < 3:
        raise UnsupportedError(f"{op} of a rank-{len(nchw.shape)} tensor (PyTorch takes rank >= 3){ctx.where()}")
    C = nchw.shape[1]
    groups = C if groups is None else int(groups)
    if groups < 1 or C % groups:
        raise UnsupportedError(f"{op} with {groups} groups of {C} channels{ctx.where()}")
    affine = [_per_channel_affine(ctx, p, what, op, C) for p, what in ((weight, "weight"), (bias, "bias"))]
    v = ctx.emit("group_norm_q", nchw.value, *affine, num_groups=groups, eps=float(eps),
                 torch_memory_format="channels_last" if t.torch_cl else "contiguous",
                 torch_threads=int(torch.get_num_threads()), **_qout(scale, zp))
    return ctx.to_layout(Tensor(v, False, t.torch_cl))


@converts("quantized::group_norm")
def _qgroup_norm(ctx, x, groups, weight, bias, eps, scale, zp):
    """torch.ao.nn.quantized.GroupNorm."""
    return _qgroup_norm_to(ctx, "quantized::group_norm", x, groups, weight, bias, eps, scale, zp)


@converts("quantized::instance_norm")
def _qinstance_norm(ctx, x, weight, bias, eps, scale, zp):
    """torch.ao.nn.quantized.InstanceNorm1d/2d/3d: group norm with one group per channel."""
    return _qgroup_norm_to(ctx, "quantized::instance_norm", x, None, weight, bias, eps, scale, zp)


@converts("quantized::matmul")
def _qmatmul(ctx, a, b, scale, zp):
    """PyTorch's qmatmul on x86 (no ruy): dequantize both, float matmul, quantize_per_tensor with the first
    operand's dtype. The float sums' order differs from MKL's sgemm (numerics.md section 5a)."""
    ta, tb = (ctx.to_nchw(ctx.tensor(v, "quantized::matmul")) for v in (a, b))
    if not (ta.quantized and tb.quantized) or ta.value.dtype != tb.value.dtype:
        raise UnsupportedError(f"quantized::matmul of {ta.value.dtype} and {tb.value.dtype} tensors (PyTorch takes "
                               f"two quantized tensors of one dtype){ctx.where()}")
    if len(ta.shape) != len(tb.shape) or len(ta.shape) < 2:
        raise UnsupportedError(f"quantized::matmul of a rank-{len(ta.shape)} by a rank-{len(tb.shape)} tensor "
                               f"(PyTorch takes equal ranks >= 2){ctx.where()}")
    y = ctx.emit("matmul", ctx.emit("dequantize", ta.value), ctx.emit("dequantize", tb.value))
    return Tensor(ctx.emit("quantize", y, scale=float(scale), zero_point=int(zp), dtype=ta.value.dtype), False)


@converts("aten::zeros")
def _zeros(ctx, size, dtype=None, layout=None, device=None, pin_memory=None):
    """A zero tensor of a static size (what a traced LSTM makes its initial state of): a float constant."""
    if dtype not in (None, 6, torch.float32):
        raise UnsupportedError(f"aten::zeros of dtype {dtype} (mera makes float32 zeros){ctx.where()}")
    if not all(isinstance(s, int) for s in size):
        raise UnsupportedError(f"aten::zeros of a run-time size{ctx.where()}")
    return torch.zeros([int(s) for s in size], dtype=torch.float32)


# -- elementwise ------------------------------------------------------------------

def _align(ctx: Context, a: Tensor, b: Tensor):
    """Bring two operands of an elementwise op to one layout."""
    if a.nhwc == b.nhwc:
        return a, b
    nh, other = (a, b) if a.nhwc else (b, a)
    o_shape = other.value.shape
    if len(o_shape) == 0 or all(d == 1 for d in o_shape[1:]) and (len(o_shape) == 4 or o_shape[0] == 1):
        fixed = other  # one value, or [N,1,1,1]: broadcasts the same in both layouts
    elif len(o_shape) == 4:
        fixed = Tensor(ctx.emit("transpose", other.value, axes=[0, 2, 3, 1]), True, other.torch_cl)
    elif len(o_shape) < 4 and len(nh.value.shape) == 4:
        # a lower-rank operand aligns with PyTorch's last axes (NCHW): a [W] one with W, a [C,1,1] one with C.
        # As [1,..,*o_shape] moved to NHWC it aligns the same with the channels-last data (a bare [C] would
        # align with the last NHWC axis, C, instead of W).
        full = [1] * (4 - len(o_shape)) + list(o_shape)
        r = ctx.emit("reshape", other.value, shape=full)
        fixed = Tensor(ctx.emit("transpose", r, axes=[0, 2, 3, 1]), True, other.torch_cl)
    else:
        nh = ctx.to_nchw(nh)
        fixed = other
    return (nh, fixed) if a.nhwc else (fixed, nh)


def _scalar_beside(ctx: Context, v, other) -> Any:
    """A Python number beside a tensor of rank >= 1, as a one-element [1] constant: it broadcasts the same
    as a 0-d one, and the DNA takes operands of rank 1 to 4 (x * 2.0, x + 3 and the like stay on it)."""
    if isinstance(v, (int, float)) and not isinstance(v, bool) and isinstance(other, Tensor) \
            and len(other.value.shape) >= 1:
        return Tensor(ctx.b.const(np.array([v], np.float32), name=ctx.b._fresh("scalar")), False)
    return v


def _promoted(v, other) -> Any:
    """An integer or bool constant beside a float tensor: float32, as PyTorch's type promotion makes it
    (x + torch.arange(n))."""
    if isinstance(v, torch.Tensor) and not v.is_floating_point() and not v.is_quantized \
            and isinstance(other, Tensor) and other.value.dtype == "float32":
        return v.to(torch.float32)
    return v


def _binary(ctx: Context, op: str, a, b, relu=False, qout=None):
    a, b = _scalar_beside(ctx, a, b), _scalar_beside(ctx, b, a)
    a, b = _promoted(a, b), _promoted(b, a)
    first = ctx.tensor(a, op)
    ta, tb = _align(ctx, first, ctx.tensor(b, op))
    attrs = dict(qout or {})
    attrs.update(_memory_format(first))  # PyTorch's qadd/qmul follow the first operand's format
    if relu:
        attrs["activation"] = "relu"
    # quantized add/mul write in the first operand's suggested memory format
    return Tensor(ctx.emit(op, ta.value, tb.value, **attrs), ta.nhwc or tb.nhwc, first.torch_cl)


# quantized::add.Scalar and the other .Scalar overloads (what FX convert makes of x + 0.5) are PyTorch's
# add_scalar / mul_scalar kernels: no output parameters of their own
@converts("quantized::add")
def _qadd(ctx, a, b, scale=None, zp=None):
    if scale is None:
        return _scalar_op(ctx, "add_scalar", a, b, False)
    return _binary(ctx, "add", a, b, qout=_qout(scale, zp))


@converts("quantized::add_relu")
def _qadd_relu(ctx, a, b, scale=None, zp=None):
    if scale is None:
        return _scalar_op(ctx, "add_scalar", a, b, True)
    return _binary(ctx, "add", a, b, relu=True, qout=_qout(scale, zp))


@converts("quantized::mul")
def _qmul(ctx, a, b, scale=None, zp=None):
    if scale is None:
        return _scalar_op(ctx, "mul_scalar", a, b, False)
    return _binary(ctx, "mul", a, b, qout=_qout(scale, zp))


@converts("quantized::mul_relu")
def _qmul_relu(ctx, a, b, scale=None, zp=None):
    if scale is None:
        return _scalar_op(ctx, "mul_scalar", a, b, True)
    return _binary(ctx, "mul", a, b, relu=True, qout=_qout(scale, zp))


# -- PyTorch quantized kernels with formulas of their own (docs/numerics.md 5a) ------------

def _scalar_value(ctx: Context, b, what: str) -> float:
    if isinstance(b, torch.Tensor) and b.numel() == 1:
        return float(b.item())  # torch.jit.trace records a Scalar as a tensor
    if isinstance(b, (int, float)) and not isinstance(b, bool):
        return float(b)
    raise UnsupportedError(f"{what} of a run-time tensor operand (mera takes a constant scalar){ctx.where()}")


def _scalar_op(ctx: Context, op: str, x, b, relu: bool):
    t = ctx.tensor(x, f"quantized::{op}")
    if not t.quantized:
        raise UnsupportedError(f"quantized::{op} of a float tensor{ctx.where()}")
    v = ctx.emit(op, t.value, value=_scalar_value(ctx, b, f"quantized::{op}"), relu=int(relu))
    return Tensor(v, t.nhwc, t.torch_cl)


@converts("quantized::add_scalar", "quantized::add_scalar.Tensor")
def _qadd_scalar(ctx, x, b):
    return _scalar_op(ctx, "add_scalar", x, b, False)


@converts("quantized::add_scalar_relu", "quantized::add_scalar_relu.Tensor")
def _qadd_scalar_relu(ctx, x, b):
    return _scalar_op(ctx, "add_scalar", x, b, True)


@converts("quantized::mul_scalar", "quantized::mul_scalar.Tensor")
def _qmul_scalar(ctx, x, b):
    return _scalar_op(ctx, "mul_scalar", x, b, False)


@converts("quantized::mul_scalar_relu", "quantized::mul_scalar_relu.Tensor")
def _qmul_scalar_relu(ctx, x, b):
    return _scalar_op(ctx, "mul_scalar", x, b, True)


def _bn_scale_shift(weight, bias, mean, var, eps: float):
    """qbatch_norm.cpp compute_fused_params in float32: scale = f32(inv_sigma * weight) and
    shift = f32(bias - f32(f32(mean * inv_sigma) * weight)), inv_sigma = f32(1.0 / sqrtf(var + f32(eps)))."""
    f32 = np.float32
    m = mean.detach().float().numpy().astype(f32)
    v = var.detach().float().numpy().astype(f32)
    w = np.ones_like(m) if weight is None else weight.detach().float().numpy().astype(f32)
    b = np.zeros_like(m) if bias is None else bias.detach().float().numpy().astype(f32)
    inv_sigma = (1.0 / np.sqrt(v + f32(eps)).astype(np.float64)).astype(f32)
    scale = (inv_sigma * w).astype(f32)
    shift = (b - ((m * inv_sigma).astype(f32) * w).astype(f32)).astype(f32)
    return scale, shift


def _qbatch_norm(ctx: Context, x, weight, bias, mean, var, eps, scale, zp, relu: bool, rank: int):
    what = f"quantized::batch_norm{rank - 2}d" if rank != 4 else "quantized::batch_norm2d"
    t = ctx.tensor(x, what)
    if len(t.shape) != rank:
        raise UnsupportedError(f"{what} of a rank-{len(t.shape)} tensor (PyTorch takes rank {rank}){ctx.where()}")
    if not all(isinstance(p, torch.Tensor) or p is None for p in (weight, bias, mean, var)) or mean is None:
        raise UnsupportedError(f"{what} with computed statistics is not supported{ctx.where()}")
    sc, sh = _bn_scale_shift(weight, bias, mean, var, float(eps))
    base = ctx.scope or "bn"
    sv = ctx.b.const(sc, name=ctx.b._fresh(base + ".scale"))
    hv = ctx.b.const(sh, name=ctx.b._fresh(base + ".shift"))
    v = ctx.emit("batch_norm", t.value, sv, hv, axis=ctx.axis(t, 1), activation="relu" if relu else "none",
                 **_qout(scale, zp))
    return Tensor(v, t.nhwc, rank == 4 or t.torch_cl)  # PyTorch writes 2-D/3-D batch norm channels-last


def _qbn_converter(rank: int, relu: bool):
    def conv(ctx, x, weight, bias, mean, var, eps, scale, zp):
        return _qbatch_norm(ctx, x, weight, bias, mean, var, eps, scale, zp, relu, rank)
    return conv


for _rank, _name in ((3, "batch_norm1d"), (4, "batch_norm2d"), (5, "batch_norm3d")):
    converts(f"quantized::{_name}")(_qbn_converter(_rank, False))
    converts(f"quantized::{_name}_relu")(_qbn_converter(_rank, True))


@converts("quantized::batch_norm")
def _qbatch_norm_any(ctx, x, weight, bias, mean, var, eps, scale, zp):
    rank = len(ctx.tensor(x, "quantized::batch_norm").shape)
    return _qbatch_norm(ctx, x, weight, bias, mean, var, eps, scale, zp, False, rank)


@converts("aten::add", "aten::add_")
def _add(ctx, a, b, alpha=1):
    if not isinstance(a, Tensor) and not isinstance(a, torch.Tensor):
        return a + b * alpha  # scalar arithmetic on sizes
    if alpha != 1:
        b = Tensor(ctx.emit("mul", ctx.tensor(b, "add").value, ctx.tensor(float(alpha), "add").value))
    return _binary(ctx, "add", a, b)


@converts("aten::mul", "aten::mul_")
def _mul(ctx, a, b):
    if not isinstance(a, (Tensor, torch.Tensor)) and not isinstance(b, (Tensor, torch.Tensor)):
        return a * b
    return _binary(ctx, "mul", a, b)


@converts("aten::sub", "aten::sub_")
def _sub(ctx, a, b, alpha=1):
    if not isinstance(a, (Tensor, torch.Tensor)):
        return a - b * alpha
    # a + b * -alpha: the mul keeps b's layout (a bare Tensor(...) here lost it for channels-last b)
    return _binary(ctx, "add", a, _binary(ctx, "mul", b, -float(alpha)))


@converts("aten::floor_divide", "aten::floordiv")
def _floordiv(ctx, a, b):
    if isinstance(a, (Tensor, torch.Tensor)) or isinstance(b, (Tensor, torch.Tensor)):
        raise UnsupportedError(f"floor_divide on tensors is not supported{ctx.where()}")
    return a // b


@converts("aten::div", "aten::div_")
def _div(ctx, a, b, rounding_mode=None):
    if isinstance(a, (Tensor, torch.Tensor)) or isinstance(b, (Tensor, torch.Tensor)):
        if isinstance(b, (int, float)) and rounding_mode is None:
            return _binary(ctx, "mul", a, 1.0 / float(b))
        if rounding_mode is None:
            return _binary(ctx, "div", a, b)
        raise UnsupportedError(f"tensor division with rounding_mode={rounding_mode!r} is not supported{ctx.where()}")
    if rounding_mode == "floor":
        return a // b
    if rounding_mode == "trunc":
        return int(a / b)
    return a / b


@converts("aten::pow")
def _pow(ctx, x, e):
    if isinstance(e, (int, float)) and float(e) == 2.0:
        return _binary(ctx, "mul", x, x)  # what torch computes for a square: x * x
    if isinstance(e, (int, float)) and float(e) == 0.5:
        return _unary(ctx, "sqrt", x)
    return _binary(ctx, "pow", x, float(e) if isinstance(e, (int, float)) else e)


@converts("aten::maximum")
def _maximum(ctx, a, b):
    return _binary(ctx, "maximum", a, b)


@converts("aten::minimum")
def _minimum(ctx, a, b):
    return _binary(ctx, "minimum", a, b)


@converts("aten::matmul", "aten::bmm")
def _matmul(ctx, a, b):
    ta, tb = ctx.to_nchw(ctx.tensor(a, "matmul")), ctx.to_nchw(ctx.tensor(b, "matmul"))
    if len(ta.value.shape) < 2 or len(tb.value.shape) < 2:
        raise UnsupportedError(f"matmul of a {len(ta.value.shape)}-D by a {len(tb.value.shape)}-D tensor "
                               f"(mera's matmul takes rank >= 2){ctx.where()}")
    return Tensor(ctx.emit("matmul", ta.value, tb.value))


@converts("aten::gelu")
def _gelu(ctx, x, approximate="none"):
    if approximate not in ("none", "tanh"):
        raise UnsupportedError(f"gelu with approximate={approximate!r}{ctx.where()}")
    if isinstance(x, Tensor) and x.quantized:  # PyTorch's qgelu: the IR's gelu, output parameters = the input's
        return _unary(ctx, "gelu", x, approximate=approximate)
    if approximate == "tanh":  # the IR's float gelu: the vector body's formula
        return _unary(ctx, "gelu", x, approximate="tanh")
    # torch's formula: x * 0.5 * (1 + erf(x * M_SQRT1_2))
    e = _unary(ctx, "erf", _binary(ctx, "mul", x, 0.7071067811865476))
    return _binary(ctx, "mul", x, _binary(ctx, "mul", _binary(ctx, "add", e, 1.0), 0.5))


@converts("aten::silu", "aten::silu_")
def _silu(ctx, x):
    return _binary(ctx, "mul", x, _unary(ctx, "sigmoid", x))


# IR ops with a float kernel only (ops.def FLOAT_IN): PyTorch runs tanh, gelu, ... on a quantized
# tensor with quantized kernels of their own, which mera does not reproduce
_FLOAT_ONLY = {"sqrt", "exp", "log", "tanh", "erf", "abs"}


def _float_input(ctx: Context, x, what: str) -> None:
    if isinstance(x, Tensor) and x.quantized:
        raise UnsupportedError(f"{what} of a quantized tensor (PyTorch's quantized {what} kernel) is not supported"
                               f"{ctx.where()}{' in ' + ctx.scope if ctx.scope else ''}")


def _unary(ctx: Context, op: str, x, **attrs):
    t = ctx.tensor(x, op)
    if op in _FLOAT_ONLY:
        _float_input(ctx, t, op)
    if "torch_memory_format" in _op_info(op)["attr_names"]:
        attrs.update(_memory_format(t))
    return Tensor(ctx.emit(op, t.value, **attrs), t.nhwc, t.torch_cl)


def _float_unary(op: str):
    def conv(ctx, x):
        return _unary(ctx, op, x)
    return conv


for _op in ("sqrt", "exp", "log", "erf", "abs"):
    converts(f"aten::{_op}", f"aten::{_op}_")(_float_unary(_op))


@converts("aten::tanh", "aten::tanh_")
def _tanh(ctx, x):
    t = ctx.tensor(x, "tanh")
    if t.quantized:  # PyTorch's qtanh: fixed output parameters (scale 2/256, zero point 128 / 0)
        return Tensor(ctx.emit("qtanh", t.value, **_memory_format(t)), t.nhwc, t.torch_cl)
    return _unary(ctx, "tanh", t)


@converts("aten::relu", "aten::relu_")
def _relu(ctx, x):
    return _unary(ctx, "relu", x)


@converts("aten::hardtanh", "aten::hardtanh_")
def _hardtanh(ctx, x, lo=-1.0, hi=1.0):
    return _unary(ctx, "clip", x, a_min=float(lo), a_max=float(hi))


@converts("aten::relu6", "aten::relu6_", "quantized::relu6")
def _relu6(ctx, x, inplace=False):
    return _unary(ctx, "clip", x, a_min=0.0, a_max=6.0)


@converts("aten::clamp", "aten::clamp_")
def _clamp(ctx, x, lo=None, hi=None):
    return _unary(ctx, "clip", x, a_min=-math.inf if lo is None else float(lo),
                  a_max=math.inf if hi is None else float(hi))


@converts("aten::leaky_relu", "aten::leaky_relu_")
def _leaky_relu(ctx, x, slope=0.01):
    return _unary(ctx, "leaky_relu", x, alpha=float(slope))


@converts("quantized::leaky_relu")
def _qleaky_relu(ctx, x, slope, inplace, scale, zp):
    return _unary(ctx, "leaky_relu", x, alpha=float(slope), **_qout(scale, zp))


@converts("aten::hardswish", "aten::hardswish_")
def _hardswish(ctx, x):
    return _unary(ctx, "hardswish", x)


@converts("quantized::hardswish")
def _qhardswish(ctx, x, scale, zp):
    return _unary(ctx, "hardswish", x, **_qout(scale, zp))


@converts("quantized::elu")
def _qelu(ctx, x, scale, zp, alpha=1.0, coef=1.0, input_scale=1.0):
    if float(coef) != 1.0 or float(input_scale) != 1.0:
        raise UnsupportedError(f"quantized::elu with scale={coef}, input_scale={input_scale} (mera takes ELU's "
                               f"1 and 1){ctx.where()}")
    return _unary(ctx, "elu", x, alpha=float(alpha), **_qout(scale, zp))


def _fixed_qparams_unary(ctx: Context, op: str, x):
    t = ctx.tensor(x, op)
    if t.quantized:
        # PyTorch's quantized sigmoid and hardsigmoid have fixed output
        # parameters: scale 1/256 with zero point 0 (quint8), -128 (qint8).
        zp = 0 if t.value.dtype == "uint8" else -128
        return Tensor(ctx.emit(op, t.value, out_scale=1.0 / 256.0, out_zero_point=zp, **_memory_format(t)),
                      t.nhwc, t.torch_cl)
    return Tensor(ctx.emit(op, t.value, **_memory_format(t)), t.nhwc, t.torch_cl)


@converts("aten::hardsigmoid", "aten::hardsigmoid_")
def _hardsigmoid(ctx, x):
    return _fixed_qparams_unary(ctx, "hardsigmoid", x)


@converts("aten::sigmoid", "aten::sigmoid_")
def _sigmoid(ctx, x):
    return _fixed_qparams_unary(ctx, "sigmoid", x)


@converts("quantized::softmax")
def _qsoftmax(ctx, x, dim, scale, zp):
    """PyTorch's quantized softmax (fbgemm engine): dequantize, float softmax, quantize_per_tensor; the IR's
    quantized softmax has that contract (docs/numerics.md section 8)."""
    t = ctx.tensor(x, "quantized::softmax")
    return Tensor(ctx.emit("softmax", t.value, axis=ctx.axis(t, int(dim)), **_qout(scale, zp)), t.nhwc, t.torch_cl)


@converts("aten::softmax", "aten::_softmax")
def _softmax(ctx, x, dim, dtype_or_half=None):
    t = ctx.tensor(x, "softmax")
    return Tensor(ctx.emit("softmax", t.value, axis=ctx.axis(t, int(dim))), t.nhwc, t.torch_cl)


def _arg_reduce(op: str):
    def convert(ctx, x, dim=None, keepdim=False):
        """torch.argmax / argmin along one dim: int64 indices, the first of equal values (as PyTorch)."""
        t = ctx.to_nchw(ctx.tensor(x, op))
        if dim is None:  # over all elements: the index into the flattened tensor, 0-d (or all unit axes)
            shape = t.value.shape
            flat = ctx.emit("reshape", t.value, shape=[int(np.prod(shape))])
            i = ctx.emit(op, flat, axis=0, keepdims=1, select_last_index=0)
            return Tensor(ctx.emit("reshape", i, shape=[1] * len(shape) if keepdim else []), False)
        return Tensor(ctx.emit(op, t.value, axis=int(dim), keepdims=int(bool(keepdim)), select_last_index=0), False)
    return convert


converts("aten::argmax")(_arg_reduce("argmax"))
converts("aten::argmin")(_arg_reduce("argmin"))


# -- concat / split -------------------------------------------------------------

def _cat(ctx: Context, xs, dim, qout=None):
    ts = [ctx.tensor(x, "cat") for x in xs]
    if any(t.nhwc for t in ts) and not all(t.nhwc for t in ts):
        ts = [ctx.to_layout(t) for t in ts]
    cl = all(t.torch_cl for t in ts)
    fmt = {"torch_memory_format": "channels_last" if cl else "contiguous"} \
        if ts[0].quantized or ts[0].dequantized else {}
    return Tensor(ctx.emit("concat", *[t.value for t in ts], axis=ctx.axis(ts[0], int(dim)), **(qout or {}), **fmt),
                  ts[0].nhwc, cl)


@converts("quantized::cat")
def _qcat(ctx, xs, dim, scale, zp):
    return _cat(ctx, xs, dim, _qout(scale, zp))


@converts("aten::cat", "aten::concat")
def _acat(ctx, xs, dim=0):
    return _cat(ctx, xs, dim)


def _slices(ctx: Context, t: Tensor, dim: int, sizes: Sequence[int]):
    axis = ctx.axis(t, dim)
    out, begin = [], 0
    for s in sizes:
        out.append(Tensor(ctx.emit("slice", t.value, axis=axis, begin=begin, end=begin + s), t.nhwc, t.torch_cl))
        begin += s
    return out


@converts("aten::chunk")
def _chunk(ctx, x, chunks, dim=0):
    t = ctx.tensor(x, "chunk")
    n = t.shape[dim]
    step = -(-n // chunks)
    sizes = [min(step, n - i) for i in range(0, n, step)]
    return _slices(ctx, t, dim, sizes)


@converts("aten::split", "aten::split_with_sizes")
def _split(ctx, x, split, dim=0):
    t = ctx.tensor(x, "split")
    n = t.shape[dim]
    if isinstance(split, int):
        sizes = [min(split, n - i) for i in range(0, n, split)]
    else:
        sizes = list(split)
    return _slices(ctx, t, dim, sizes)


@converts("aten::slice")
def _slice(ctx, x, dim=0, start=None, end=None, step=1):
    t = ctx.tensor(x, "slice")
    n = t.shape[dim]
    start = 0 if start is None else (start + n if start < 0 else min(start, n))
    end = n if end is None else (end + n if end < 0 else min(end, n))
    start, end = max(start, 0), max(end, 0)
    if step is None:
        step = 1
    if step < 1:
        raise UnsupportedError(f"slice with step {step} (PyTorch's steps are positive){ctx.where()}")
    if start == 0 and end == n and step == 1:
        return t
    if end <= start:
        raise UnsupportedError(f"slice [{start}:{end}] of an axis of {n} is empty{ctx.where()}")
    return Tensor(ctx.emit("slice", t.value, axis=ctx.axis(t, dim), begin=start, end=end, step=int(step)), t.nhwc,
                  t.torch_cl)


# -- pooling ---------------------------------------------------------------------

def _memory_format(t: Tensor) -> Dict[str, str]:
    """The formula choice for quantized pooling, mean and upsampling (see the IR attribute)."""
    if not (t.quantized or t.dequantized):
        return {}
    return {"torch_memory_format": "channels_last" if t.torch_cl else "contiguous"}


@converts("aten::max_pool2d")
def _max_pool2d(ctx, x, kernel, stride=(), padding=0, dilation=1, ceil_mode=False):
    t = ctx.to_layout(ctx.tensor(x, "max_pool2d"))
    k = _pair(kernel)
    s = _pair(stride) if stride not in ((), [], None) else k
    ph, pw = _pair(padding)
    return Tensor(ctx.emit("max_pool2d", t.value, kernel=k, strides=s, padding=[ph, pw, ph, pw],
                           dilation=_pair(dilation), ceil_mode=int(bool(ceil_mode)), layout=ctx.spatial()),
                  t.nhwc, t.torch_cl)


@converts("aten::avg_pool2d")
def _avg_pool2d(ctx, x, kernel, stride=(), padding=0, ceil_mode=False, count_include_pad=True,
                divisor_override=None):
    t = ctx.to_layout(ctx.tensor(x, "avg_pool2d"))
    k = _pair(kernel)
    s = _pair(stride) if stride not in ((), [], None) else k
    ph, pw = _pair(padding)
    return Tensor(ctx.emit("avg_pool2d", t.value, kernel=k, strides=s, padding=[ph, pw, ph, pw],
                           ceil_mode=int(bool(ceil_mode)), count_include_pad=int(bool(count_include_pad)),
                           divisor_override=int(divisor_override or 0), layout=ctx.spatial(), **_memory_format(t)),
                  t.nhwc, t.torch_cl)


@converts("aten::adaptive_avg_pool2d")
def _adaptive_avg_pool2d(ctx, x, output_size):
    t = ctx.to_layout(ctx.tensor(x, "adaptive_avg_pool2d"))
    return Tensor(ctx.emit("adaptive_avg_pool2d", t.value, output_size=_pair(output_size), layout=ctx.spatial(),
                           **_memory_format(t)), t.nhwc, t.torch_cl)


# -- 1-D pools: the 2-D pool on [N, C, 1, L], between two reshapes (as ATen itself runs them) ------------

def _one(v, default=None) -> int:
    v = list(v) if isinstance(v, (list, tuple)) else [v]
    if not v and default is not None:
        return default
    if len(v) != 1:
        raise UnsupportedError(f"a 1-D op with the 2-D argument {v}")
    return int(v[0])


def _as_2d(ctx: Context, x, what: str) -> Tensor:
    """[N, C, L] as [N, C, 1, L], keeping PyTorch's memory format (a unit axis changes no stride order)."""
    t = ctx.to_nchw(ctx.tensor(x, what))
    if len(t.shape) != 3:
        raise UnsupportedError(f"{what} of a rank-{len(t.shape)} tensor (PyTorch takes [N, C, L]){ctx.where()}")
    n, c, length = t.shape
    return Tensor(ctx.emit("reshape", t.value, shape=[n, c, 1, length]), False, t.torch_cl, t.dequantized)


def _back_to_1d(ctx: Context, y: Tensor) -> Tensor:
    y = ctx.to_nchw(y)
    n, c, _, length = y.shape
    return Tensor(ctx.emit("reshape", y.value, shape=[n, c, length]), False, y.torch_cl, y.dequantized)


@converts("aten::max_pool1d")
def _max_pool1d(ctx, x, kernel, stride=(), padding=0, dilation=1, ceil_mode=False):
    k = _one(kernel)
    return _back_to_1d(ctx, _max_pool2d(ctx, _as_2d(ctx, x, "max_pool1d"), [1, k], [1, _one(stride, k)],
                                        [0, _one(padding)], [1, _one(dilation)], ceil_mode))


@converts("aten::avg_pool1d")
def _avg_pool1d(ctx, x, kernel, stride=(), padding=0, ceil_mode=False, count_include_pad=True):
    k = _one(kernel)
    return _back_to_1d(ctx, _avg_pool2d(ctx, _as_2d(ctx, x, "avg_pool1d"), [1, k], [1, _one(stride, k)],
                                        [0, _one(padding)], ceil_mode, count_include_pad))


@converts("aten::adaptive_avg_pool1d")
def _adaptive_avg_pool1d(ctx, x, output_size):
    return _back_to_1d(ctx, _adaptive_avg_pool2d(ctx, _as_2d(ctx, x, "adaptive_avg_pool1d"),
                                                 [1, _one(output_size)]))


class _NoIndices:
    """The indices output of an adaptive max pool, which mera does not compute."""


def _adaptive_max(ctx: Context, t: Tensor, out_hw: Sequence[int], what: str) -> Tensor:
    """An adaptive max pool whose output size divides the input's: a max pool with equal windows."""
    h, w = t.shape[2:]
    if any(o < 1 or size % o for o, size in zip(out_hw, (h, w))):
        raise UnsupportedError(f"{what} from {h}x{w} to {out_hw[0]}x{out_hw[1]}: only output sizes that divide "
                               f"the input's (equal windows) are supported{ctx.where()}")
    k = [h // out_hw[0], w // out_hw[1]]
    return _max_pool2d(ctx, t, k, k, [0, 0], [1, 1], False)


@converts("aten::adaptive_max_pool2d")
def _adaptive_max_pool2d(ctx, x, output_size):
    t = ctx.tensor(x, "adaptive_max_pool2d")
    out = [int(v) for v in _pair(output_size)]
    return _adaptive_max(ctx, t, out, "adaptive_max_pool2d"), _NoIndices()


@converts("aten::adaptive_max_pool1d")
def _adaptive_max_pool1d(ctx, x, output_size):
    t = _as_2d(ctx, x, "adaptive_max_pool1d")
    return _back_to_1d(ctx, _adaptive_max(ctx, t, [1, _one(output_size)], "adaptive_max_pool1d")), _NoIndices()


@converts("aten::mean")
def _mean(ctx, x, dims=None, keepdim=False, dtype=None):
    t = ctx.tensor(x, "mean")
    rank = len(t.value.shape)
    dims = list(range(rank)) if dims is None else ([dims] if isinstance(dims, int) else list(dims))
    axes = [ctx.axis(t, d) for d in dims]
    v = ctx.emit("mean", t.value, axes=axes, keepdims=int(bool(keepdim)), **_memory_format(t))
    return Tensor(v, t.nhwc and bool(keepdim), t.torch_cl and bool(keepdim))


@converts("aten::layer_norm")
def _layer_norm(ctx, x, shape, weight=None, bias=None, eps=1e-5, cudnn_enable=True):
    """(x - mean) / sqrt(var + eps) * weight + bias over the last len(shape) axes, in float ops on the
    host (torch's fused kernel rounds in its own order: within float tolerance, not bit-exact)."""
    t = ctx.to_nchw(ctx.tensor(x, "layer_norm"))
    rank, k = len(t.value.shape), len(list(shape))
    axes = list(range(rank - k, rank))
    mean = Tensor(ctx.emit("mean", t.value, axes=axes, keepdims=1))
    d = _binary(ctx, "sub", t, mean)
    var = Tensor(ctx.emit("mean", _binary(ctx, "mul", d, d).value, axes=axes, keepdims=1))
    y = _binary(ctx, "div", d, _unary(ctx, "sqrt", _binary(ctx, "add", var, float(eps))))
    if weight is not None:
        y = _binary(ctx, "mul", y, weight)
    if bias is not None:
        y = _binary(ctx, "add", y, bias)
    return y


@converts("quantized::prelu")
def _qprelu(ctx, x, weight, scale, zp):
    """PyTorch's quantized prelu (integer products, one requantize; docs/numerics.md 5a): the IR's prelu with
    the quantized slopes as they are."""
    t = ctx.tensor(x, "quantized::prelu")
    if not isinstance(weight, torch.Tensor) or not weight.is_quantized:
        raise UnsupportedError(f"quantized::prelu with a computed or float weight is not supported{ctx.where()}")
    if weight.qscheme() not in (torch.per_tensor_affine, torch.per_tensor_symmetric):
        raise UnsupportedError(f"quantized::prelu with a {weight.qscheme()} weight (PyTorch quantizes it per tensor)"
                               f"{ctx.where()}")
    if len(t.shape) < 2 and weight.numel() != 1:
        raise UnsupportedError(f"quantized::prelu of a rank-{len(t.shape)} tensor with {weight.numel()} slopes"
                               f"{ctx.where()}")
    wv = ctx.b.param(ctx.b._fresh((ctx.scope or "prelu") + ".weight"),
                     np.ascontiguousarray(weight.int_repr().reshape(-1).numpy()),
                     qparams=(float(weight.q_scale()), int(weight.q_zero_point())))
    axis = ctx.axis(t, 1) if len(t.shape) >= 2 else 0
    return Tensor(ctx.emit("prelu", t.value, wv, axis=axis, **_qout(scale, zp)), t.nhwc, t.torch_cl)


@converts("aten::prelu")
def _prelu(ctx, x, slope):
    # relu(x) + (-slope) * relu(-x) == slope * min(x, 0) exactly; slope per channel (dim 1)
    t = ctx.tensor(x, "prelu")
    sl = slope.detach().numpy().astype(np.float32) if isinstance(slope, torch.Tensor) else np.float32(slope)
    rank = len(t.shape)
    neg_slope = -sl.reshape([1, -1] + [1] * (rank - 2)) if np.size(sl) > 1 and rank >= 2 else -np.reshape(sl, -1)
    neg = _unary(ctx, "relu", _binary(ctx, "mul", t, -1.0))
    return _binary(ctx, "add", _unary(ctx, "relu", t), _binary(ctx, "mul", neg, torch.from_numpy(neg_slope)))


@converts("aten::softplus")
def _softplus(ctx, x, beta=1.0, threshold=20.0):
    if float(beta) != 1.0:
        raise UnsupportedError(f"softplus with beta={beta}{ctx.where()}")
    return _unary(ctx, "log", _binary(ctx, "add", _unary(ctx, "exp", x), 1.0))


@converts("aten::mish", "aten::mish_")
def _mish(ctx, x):
    return _binary(ctx, "mul", x, _unary(ctx, "tanh", _softplus(ctx, x)))


def _pixel_shuffle_nchw(ctx, x, r: int, up: bool):
    t = ctx.to_nchw(ctx.tensor(x, "pixel_shuffle"))
    if len(t.shape) != 4:
        raise UnsupportedError(f"pixel_shuffle of a rank-{len(t.shape)} tensor{ctx.where()}")
    N, C, H, W = t.shape
    if up:  # [N, C*r*r, H, W] -> [N, C, H*r, W*r]
        v = ctx.emit("reshape", t.value, shape=[N, C // (r * r), r, r, H, W])
        v = ctx.emit("transpose", v, axes=[0, 1, 4, 2, 5, 3])
        return Tensor(ctx.emit("reshape", v, shape=[N, C // (r * r), H * r, W * r]))
    v = ctx.emit("reshape", t.value, shape=[N, C, H // r, r, W // r, r])
    v = ctx.emit("transpose", v, axes=[0, 1, 3, 5, 2, 4])
    return Tensor(ctx.emit("reshape", v, shape=[N, C * r * r, H // r, W // r]))


@converts("aten::pixel_shuffle")
def _pixel_shuffle(ctx, x, r):
    return _pixel_shuffle_nchw(ctx, x, int(r), True)


@converts("aten::pixel_unshuffle")
def _pixel_unshuffle(ctx, x, r):
    return _pixel_shuffle_nchw(ctx, x, int(r), False)


@converts("aten::neg", "aten::neg_")
def _neg(ctx, x):
    return _binary(ctx, "mul", x, -1.0)  # exact


# -- upsample -------------------------------------------------------------------

def _upsample(ctx: Context, x, size, scales, method: str, align_corners=False):
    t = ctx.to_layout(ctx.tensor(x, "upsample"))
    attrs: Dict[str, Any] = {"method": method, "layout": ctx.spatial(), **_memory_format(t)}
    if method == "bilinear":
        attrs["align_corners"] = int(bool(align_corners))
    if size is not None:
        attrs["size"] = _pair(size)
    elif scales is not None:
        attrs["scales"] = [float(s) for s in _pair(scales)]
    else:
        raise UnsupportedError(f"upsample needs an output size or scale factors{ctx.where()}")
    return Tensor(ctx.emit("upsample", t.value, **attrs), t.nhwc, t.torch_cl)


@converts("aten::upsample_nearest2d")
def _upsample_nearest2d(ctx, x, size, scales=None, scales_w=None):
    # .vec overload: (input, output_size?, scale_factors?); default overload:
    # (input, output_size, scales_h?, scales_w?) with output_size given.
    if scales_w is not None and not isinstance(scales, (list, tuple)):
        scales = [scales, scales_w]
    return _upsample(ctx, x, size, scales, "nearest")


@converts("aten::upsample_bilinear2d")
def _upsample_bilinear2d(ctx, x, size, align_corners, scales=None, scales_w=None):
    if scales_w is not None and not isinstance(scales, (list, tuple)):
        scales = [scales, scales_w]
    return _upsample(ctx, x, size, scales, "bilinear", align_corners)


# -- shapes -----------------------------------------------------------------------

def _flat_source(ctx: Context, t: Tensor) -> Tensor:
    """Data whose memory order is PyTorch's (NCHW) order."""
    if t.nhwc and not (t.value.shape[1] == 1 and t.value.shape[2] == 1):
        return ctx.to_nchw(t)
    return t  # NHWC [N,1,1,C] has NCHW's element order already


@converts("aten::flatten")
def _flatten(ctx, x, start=0, end=-1):
    t = ctx.tensor(x, "flatten")
    rank = len(t.shape)
    s, e = (start + rank if start < 0 else start), (end + rank if end < 0 else end)
    src = _flat_source(ctx, t)
    shape = list(t.shape[:s]) + [int(np.prod(t.shape[s:e + 1]))] + list(t.shape[e + 1:])
    return Tensor(ctx.emit("reshape", src.value, shape=shape), False)


@converts("aten::view", "aten::reshape")
def _view(ctx, x, shape):
    t = ctx.tensor(x, "view")
    src = _flat_source(ctx, t)
    return Tensor(ctx.emit("reshape", src.value, shape=[int(s) for s in shape]), False)


@converts("aten::transpose", "aten::transpose_")
def _transpose(ctx, x, d0, d1):
    t = ctx.to_nchw(ctx.tensor(x, "transpose"))
    rank = len(t.value.shape)
    perm = list(range(rank))
    perm[d0], perm[d1] = perm[d1], perm[d0]
    return Tensor(ctx.emit("transpose", t.value, axes=perm), False)


@converts("aten::permute")
def _permute(ctx, x, dims):
    t = ctx.tensor(x, "permute")
    rank = len(t.value.shape)
    dims = [int(d) + rank if int(d) < 0 else int(d) for d in dims]
    if t.nhwc:
        # one transpose straight from the channels-last data (none for permute(0, 2, 3, 1), a detection
        # head's NCHW -> NHWC), not a transpose back to NCHW and then the permute
        axes = [_NCHW_TO_NHWC_AXIS[d] for d in dims]
        if axes == list(range(rank)):
            return Tensor(t.value, False)
        return Tensor(ctx.emit("transpose", t.value, axes=axes), False)
    return Tensor(ctx.emit("transpose", t.value, axes=dims), False)


@converts("aten::dropout", "aten::dropout_", "aten::feature_dropout", "aten::detach", "aten::alpha_dropout")
def _identity(ctx, x, *rest):
    return x


# TorchScript passes a memory format as its MemoryFormat number
_MEMORY_FORMATS = {0: torch.contiguous_format, 1: torch.preserve_format, 2: torch.channels_last,
                   3: torch.channels_last_3d}


def _with_memory_format(ctx: Context, x, memory_format, what: str):
    """x in memory_format: the same graph value, with PyTorch's memory format
    (which picks the formula of some quantized ops, docs/numerics.md section 4)
    changed where PyTorch changes it. None and preserve_format keep it."""
    t = ctx.tensor(x, what)
    fmt = _MEMORY_FORMATS.get(memory_format, memory_format) if isinstance(memory_format, int) else memory_format
    if fmt is None or fmt == torch.preserve_format:
        return t
    if fmt == torch.contiguous_format:
        cl = False
    elif fmt == torch.channels_last:
        if len(t.shape) != 4:
            raise UnsupportedError(f"{what}: channels_last needs a 4-D tensor, got {len(t.shape)}-D{ctx.where()}")
        cl = True
    else:
        raise UnsupportedError(f"{what}: memory format {fmt} is not supported{ctx.where()}")
    return Tensor(t.value, t.nhwc, cl, t.dequantized)


@converts("aten::contiguous")
def _contiguous(ctx, x, memory_format=0):
    return _with_memory_format(ctx, x, memory_format, "contiguous")


@converts("aten::clone")
def _clone(ctx, x, memory_format=None):
    return _with_memory_format(ctx, x, memory_format, "clone")


# the dtypes a tensor of the graph may be converted to by Tensor.to without a
# graph op: its own (TorchScript passes ScalarType numbers)
_SAME_DTYPE = {"float32": (torch.float32, 6), "uint8": (torch.quint8, 13), "int8": (torch.qint8, 12)}
# what Tensor.to(dtype) of a plain tensor becomes: the IR's cast (ScalarType numbers as TorchScript gives them)
_CAST_DTYPES = {torch.float32: "float32", 6: "float32", torch.int64: "int64", 4: "int64", torch.int32: "int32",
                3: "int32", torch.int8: "int8", 1: "int8", torch.uint8: "uint8", 0: "uint8"}


@converts("aten::to", "aten::_to_copy")
def _to(ctx, x, *args):
    """Tensor.to that changes the memory format only. Every overload ends in
    its memory format and has its dtype first, or second after a device; the
    dtype must be the tensor's own."""
    t = ctx.tensor(x, "to")
    first = args[0] if args else None
    if isinstance(first, (Tensor, torch.Tensor)):
        raise UnsupportedError(f"to(other tensor) is not supported{ctx.where()}")
    dtype = (args[1] if len(args) > 2 else None) if isinstance(first, (torch.device, str)) else first
    if dtype is not None and dtype not in _SAME_DTYPE.get(t.value.dtype, ()) and not t.quantized \
            and _CAST_DTYPES.get(dtype) is not None:
        return Tensor(ctx.emit("cast", t.value, to=_CAST_DTYPES[dtype]), t.nhwc, t.torch_cl)
    if dtype is not None and dtype not in _SAME_DTYPE.get(t.value.dtype, ()):
        raise UnsupportedError(f"to({dtype}) on a {t.value.dtype} tensor: only a change of memory format is "
                               f"supported{ctx.where()}")
    return _with_memory_format(ctx, t, args[-1] if args else None, "to")


@converts("aten::_assert_tensor_metadata")
def _assert_tensor_metadata(ctx, x, *rest):
    return None  # torch.export's check of a tensor's dtype and device before Tensor.to: nothing to compute


@converts("aten::size")
def _size(ctx, x, dim=None):
    shape = ctx.tensor(x, "size").shape
    return list(shape) if dim is None else shape[dim]


@converts("prim::NumToTensor", "aten::Int", "aten::Float", "aten::ScalarImplicit")
def _scalar(ctx, x):
    if isinstance(x, (int, float)):
        return x
    raise UnsupportedError(f"a tensor value is used as a Python number{ctx.where()}; only sizes may be")


def _pad_by_copies(ctx: Context, t: Tensor, before: List[int], after: List[int], mode: str) -> Tensor:
    """reflect / replicate padding as a concat of slices along each padded axis: byte copies, exact."""
    for d in range(len(t.shape)):
        b, e = before[d], after[d]
        if not b and not e:
            continue
        n = t.shape[d]
        if mode == "reflect" and (b >= n or e >= n):
            raise UnsupportedError(f"reflection pad by {max(b, e)} of an axis of {n}{ctx.where()}")
        ax = ctx.axis(t, d)
        src = [0] * b + [None] + [n - 1] * e if mode == "replicate" else \
            list(range(b, 0, -1)) + [None] + list(range(n - 2, n - 2 - e, -1))
        parts = [t.value if i is None else ctx.emit("slice", t.value, axis=ax, begin=i, end=i + 1) for i in src]
        t = Tensor(ctx.emit("concat", *parts, axis=ax), t.nhwc, t.torch_cl)
    return t


@converts("aten::reflection_pad2d", "aten::reflection_pad1d")
def _reflection_pad(ctx, x, pad):
    return _pad(ctx, x, pad, "reflect")


@converts("aten::replication_pad2d", "aten::replication_pad1d")
def _replication_pad(ctx, x, pad):
    return _pad(ctx, x, pad, "replicate")


@converts("aten::pad", "aten::constant_pad_nd")
def _pad(ctx, x, pad, mode_or_value="constant", value=None):
    t = ctx.tensor(x, "pad")
    mode = "constant"
    if isinstance(mode_or_value, str):
        mode = mode_or_value
        if mode not in ("constant", "reflect", "replicate"):
            raise UnsupportedError(f"pad mode '{mode_or_value}' is not supported{ctx.where()}")
        fill = 0.0 if value is None else float(value)
    else:
        fill = float(mode_or_value or 0.0)
    rank = len(t.shape)
    before, after = [0] * rank, [0] * rank
    for i in range(len(pad) // 2):  # torch pads the last axis first
        d = rank - 1 - i
        before[d], after[d] = int(pad[2 * i]), int(pad[2 * i + 1])
    if mode != "constant":
        if min(before + after) < 0:
            raise UnsupportedError(f"{mode} pad with negative pads{ctx.where()}")
        return _pad_by_copies(ctx, t, before, after, mode)
    if t.nhwc:
        perm = [0, 2, 3, 1]
        before, after = [before[p] for p in perm], [after[p] for p in perm]
    return Tensor(ctx.emit("pad", t.value, pads=before + after, value=fill), t.nhwc, t.torch_cl)


# -- float conv / linear / batch norm ------------------------------------------

def _float_conv(ctx: Context, x, w, b, stride, padding, dilation, groups):
    t = ctx.to_layout(ctx.tensor(x, "conv2d"))
    if isinstance(w, torch.Tensor) and w.dim() != 4:
        raise UnsupportedError(f"only 2-D convolution is supported, got a {w.dim()}-D weight{ctx.where()}")
    wv = ctx.tensor(w, "conv2d weight").value
    bv = None if b is None else ctx.tensor(b, "conv2d bias").value
    if isinstance(padding, str):
        raise UnsupportedError(f"conv2d padding='{padding}' is not supported{ctx.where()}")
    ph, pw = _pair(padding)
    v = ctx.emit("conv2d", t.value, wv, bv, strides=_pair(stride), padding=[ph, pw, ph, pw],
                 dilation=_pair(dilation), groups=int(groups), layout=ctx.spatial())
    return Tensor(v, ctx.layout == "NHWC", t.torch_cl)


@converts("aten::conv2d")
def _conv2d(ctx, x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    return _float_conv(ctx, x, w, b, stride, padding, dilation, groups)


def _float_conv_transpose(ctx: Context, x, w, b, stride, padding, output_padding, groups, dilation):
    t = ctx.to_layout(ctx.tensor(x, "conv_transpose2d"))
    if isinstance(w, torch.Tensor) and w.dim() != 4:
        raise UnsupportedError(f"only 2-D transposed convolution is supported, got a {w.dim()}-D weight"
                               f"{ctx.where()}")
    if isinstance(padding, str):
        raise UnsupportedError(f"conv_transpose2d padding='{padding}' is not supported{ctx.where()}")
    wv = ctx.tensor(w, "conv_transpose2d weight").value
    bv = None if b is None else ctx.tensor(b, "conv_transpose2d bias").value
    ph, pw = _pair(padding)
    v = ctx.emit("conv_transpose2d", t.value, wv, bv, strides=_pair(stride), padding=[ph, pw, ph, pw],
                 output_padding=_pair(output_padding), dilation=_pair(dilation), groups=int(groups),
                 layout=ctx.spatial())
    return Tensor(v, ctx.layout == "NHWC", t.torch_cl)


@converts("aten::conv_transpose2d")
def _conv_transpose2d(ctx, x, w, b=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    return _float_conv_transpose(ctx, x, w, b, stride, padding, output_padding, groups, dilation)


def _weight_as_2d(ctx: Context, w):
    """A 1-D conv's [O, I, k] weight as [O, I, 1, k], under the weight's own name."""
    if not isinstance(w, torch.Tensor):
        raise UnsupportedError(f"a 1-D convolution with a computed weight{ctx.where()}")
    w4 = w.detach().unsqueeze(2)
    name = ctx._tensor_names.get(id(w))
    if name is not None:
        ctx.name_tensor(w4, name)
    return w4


def _padding_1d(ctx: Context, padding, what: str) -> int:
    if isinstance(padding, str):
        if padding == "valid":
            return 0
        raise UnsupportedError(f"{what} padding='{padding}' is not supported{ctx.where()}")
    return _one(padding)


@converts("aten::conv1d")
def _conv1d(ctx, x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    y = _float_conv(ctx, _as_2d(ctx, x, "conv1d"), _weight_as_2d(ctx, w), b, [1, _one(stride)],
                    [0, _padding_1d(ctx, padding, "conv1d")], [1, _one(dilation)], groups)
    return _back_to_1d(ctx, y)


@converts("aten::conv_transpose1d")
def _conv_transpose1d(ctx, x, w, b=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    y = _float_conv_transpose(ctx, _as_2d(ctx, x, "conv_transpose1d"), _weight_as_2d(ctx, w), b, [1, _one(stride)],
                              [0, _one(padding)], [0, _one(output_padding)], groups, [1, _one(dilation)])
    return _back_to_1d(ctx, y)


@converts("aten::_convolution", "aten::convolution")
def _convolution(ctx, x, w, b, stride, padding, dilation, transposed, output_padding, groups, *rest):
    if isinstance(w, torch.Tensor) and w.dim() == 3:
        if transposed:
            return _conv_transpose1d(ctx, x, w, b, stride, padding, output_padding, groups, dilation)
        return _conv1d(ctx, x, w, b, stride, padding, dilation, groups)
    if transposed:
        return _float_conv_transpose(ctx, x, w, b, stride, padding, output_padding, groups, dilation)
    return _float_conv(ctx, x, w, b, stride, padding, dilation, groups)


@converts("aten::linear")
def _linear(ctx, x, w, b=None):
    t = ctx.tensor(x, "linear")
    if t.nhwc:
        t = ctx.to_nchw(t)
    wv = ctx.tensor(w, "linear weight").value
    bv = None if b is None else ctx.tensor(b, "linear bias").value
    return Tensor(ctx.emit("dense", t.value, wv, bv), False)


@converts("aten::t")
def _t(ctx, x):
    if isinstance(x, torch.Tensor):
        return x.t()
    t = ctx.tensor(x, "t")
    return Tensor(ctx.emit("transpose", t.value, axes=[1, 0]), False)


@converts("aten::addmm")
def _addmm(ctx, bias, x, w, beta=1, alpha=1):
    if beta != 1 or alpha != 1 or not isinstance(w, torch.Tensor):
        from ._torch_tensor_ops import _baddbmm  # run-time operands or scaling: a matmul and an add
        return _baddbmm(ctx, bias, x, w, beta, alpha)
    return _linear(ctx, x, w.t(), bias)


@converts("aten::batch_norm")
def _batch_norm(ctx, x, weight, bias, mean, var, training, momentum, eps, cudnn=None):
    if training:
        raise UnsupportedError(f"batch_norm in training mode{ctx.where()}; call model.eval() first")
    t = ctx.tensor(x, "batch_norm")
    if not all(isinstance(p, torch.Tensor) or p is None for p in (weight, bias, mean, var)):
        raise UnsupportedError(f"batch_norm with computed statistics is not supported{ctx.where()}")
    c = mean.numel()
    w = weight.detach().double() if weight is not None else torch.ones(c, dtype=torch.float64)
    bb = bias.detach().double() if bias is not None else torch.zeros(c, dtype=torch.float64)
    scale = w / torch.sqrt(var.detach().double() + eps)
    shift = bb - mean.detach().double() * scale
    rank = len(t.shape)
    shape = [c] if t.nhwc or rank < 3 else [c] + [1] * (rank - 2)
    sv = ctx.b.const(scale.float().numpy().reshape(shape), name=ctx.b._fresh((ctx.scope or "bn") + ".scale"))
    hv = ctx.b.const(shift.float().numpy().reshape(shape), name=ctx.b._fresh((ctx.scope or "bn") + ".shift"))
    y = ctx.emit("mul", t.value, sv)
    return Tensor(ctx.emit("add", y, hv), t.nhwc, t.torch_cl)


__all__ = ["CONVERTERS", "Context", "Tensor", "converts"]


from . import _torch_tensor_ops  # noqa: E402,F401  (more float tensor ops; registers converters)
