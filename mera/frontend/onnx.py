"""Import ONNX models (opsets 11 to 28), float and quantized, into mera IR.

``from_onnx(path_or_model, input_shapes=None, layout="NHWC")`` returns the
``(mod, params)`` pair, as :func:`mera.frontend.from_pytorch` does. Under
``layout="NHWC"`` 4-D input shapes are given in NHWC, every 4-D activation of
the imported graph is channels-last, and the module takes and returns 4-D
tensors in NHWC; the ONNX graph itself keeps its NCHW semantics (axes of
Concat, Softmax, ReduceMean, Flatten, Reshape, Transpose, Pad are remapped, or
a transpose is inserted where the element order matters).

Only the ``onnx`` package is used. Shape computations that ``torch.onnx.export``
emits (Constant, Shape, Gather, Unsqueeze, Concat, arithmetic on constants ...)
are folded at import time when the input shapes are static.

This file holds the walker and the float converters; quantized models
(QuantizeLinear / DequantizeLinear and the QLinear ops) are handled in
``_onnx_quant.py``, which registers its converters here.
"""

from __future__ import annotations

import math
import os
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .. import ir
from ._passes import run_passes
from ..errors import ConfigError, FormatError, GraphError, MeraError, MeraIOError, UnsupportedError
from . import _onnx_gelu

#: Lowest and highest default-domain opset the importer reads, the range it is tested over: zoo
#: exports at 11, 17 and 21, and onnx 1.23's node tests, which cover the latest version (up to
#: opset 28, onnx 1.23's newest) of every op that has them. Others are refused: an op's meaning
#: may differ there (older attribute forms below 11, versions no test has seen above 28).
MIN_OPSET, MAX_OPSET = 11, 28

#: Versions of the other domains whose ops the importer reads (com.microsoft has had only version 1).
DOMAIN_OPSETS = {"com.microsoft": (1, 1)}

_NCHW_TO_NHWC_AXIS = {0: 0, 1: 3, 2: 1, 3: 2}


@dataclass
class Tensor:
    """A run-time tensor of the graph being built; ``nhwc``: 4-D data stored channels-last."""

    value: ir.Value
    nhwc: bool = False
    #: computed from NonMaxSuppression's selected rows: (ONNX axis of the rows, the int64 [1] count of valid ones)
    rows: Optional[Tuple[int, ir.Value]] = None

    @property
    def shape(self) -> Tuple[int, ...]:
        """The shape as the ONNX graph sees it (NCHW for NHWC data)."""
        s = tuple(self.value.shape)
        return (s[0], s[3], s[1], s[2]) if self.nhwc else s

    @property
    def rank(self) -> int:
        return len(self.value.shape)


class _Poison:
    """The output of a node that could not be converted."""


_POISON = _Poison()


def _onnx():
    try:
        import onnx
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ConfigError("from_onnx needs the 'onnx' package: pip install 'mera[onnx]'") from e
    return onnx


def _sanitize(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_.]+", "_", name).strip("_.")
    return s or "node"


class Context:
    def __init__(self, builder: ir.Builder, layout: str, opset: int, consumers: Dict[str, List[Any]],
                 graph_outputs: set, path: str = "<ModelProto>"):
        self.b = builder
        self.layout = layout
        self.opset = opset
        self.consumers = consumers
        self.graph_outputs = graph_outputs
        self.path = path
        self.env: Dict[str, Any] = {}
        self.node: Any = None
        self.node_label = ""
        self.labels: Dict[int, str] = {}  # id of a node -> its name in messages
        # Output parameters for the next quantized op emitted (set while a
        # QLinear op is converted through a float converter).
        self.qout: Optional[Dict[str, Any]] = None
        # ids of values that are a dequantized quantized tensor (the output of
        # a dequantize, or of an op the lower_qdq pass moves before it)
        self.dq_ids: set = set()

    # -- building ---------------------------------------------------------

    def emit(self, op: str, *inputs: Any, **attrs: Any) -> ir.Value:
        first = inputs[0] if inputs else None
        quantized = isinstance(first, ir.Value) and first.qparams is not None
        # A float op reading a dequantized tensor becomes a quantized op when
        # the lower_qdq pass lowers its QDQ chain: it gets the same formula
        # attributes as one emitted quantized here.
        dequantized = isinstance(first, ir.Value) and first.id in self.dq_ids
        if quantized or dequantized:
            info = _op_info(op)
            if quantized and self.qout is not None and info["quantized_output"]:
                attrs.update(self.qout)
                self.qout = None
            # One formula whatever the import layout, so NCHW and NHWC imports give the same bytes.
            if "torch_memory_format" in info["attr_names"] and \
                    any(isinstance(v, ir.Value) and len(v.shape) == 4 for v in inputs):
                attrs.setdefault("torch_memory_format", "channels_last")
            # ONNX's QLinearConv is the exact integer sum (no fbgemm depthwise pair saturation).
            if op == "conv2d":
                attrs.setdefault("depthwise_saturate", "no")
        try:
            v = self.b.op(op, *inputs, name=self.b._fresh(_sanitize(self.node_label) + "." + op),
                          source=f"onnx:{self.node_label}", **attrs)
        except GraphError as e:
            raise UnsupportedError(f"mera's {op} does not accept it: {e}") from None
        if op == "dequantize" or (dequantized and op in _MOVES_BEFORE_DEQUANTIZE):
            self.dq_ids.add(v.id)
        return v

    def const(self, arr: np.ndarray, what: str = "const") -> ir.Value:
        arr = np.ascontiguousarray(arr)
        if arr.dtype == object:  # holds a _Dyn: the Shape of rows whose count is known only at run time
            raise UnsupportedError("a size known only at run time (the Shape of NonZero's or NonMaxSuppression's "
                                   "rows) used as data; mera reads it only as a shape, a Pad amount or an index")
        if arr.dtype == np.float64:
            arr = arr.astype(np.float32)
        return self.b.const(arr, name=self.b._fresh(_sanitize(self.node_label) + "." + what))

    def param(self, arr: np.ndarray, what: str) -> ir.Value:
        arr = np.ascontiguousarray(np.asarray(arr, np.float32))
        return self.b.param(self.b._fresh(_sanitize(what)), arr)

    def spatial(self) -> str:
        return self.layout

    def to_nchw(self, t: Tensor) -> Tensor:
        if not t.nhwc:
            return t
        return Tensor(self.emit("transpose", t.value, axes=[0, 3, 1, 2]), False)

    def to_layout(self, t: Tensor) -> Tensor:
        want = self.layout == "NHWC"
        if t.rank != 4 or t.nhwc == want:
            return t
        if want:
            return Tensor(self.emit("transpose", t.value, axes=[0, 2, 3, 1]), True)
        return self.to_nchw(t)

    def axis(self, t: Tensor, axis: int) -> int:
        d = axis + t.rank if axis < 0 else axis
        if not 0 <= d < t.rank:
            raise UnsupportedError(f"axis {axis} is out of range for rank {t.rank}")
        return _NCHW_TO_NHWC_AXIS[d] if t.nhwc else d

    def flat_source(self, t: Tensor) -> Tensor:
        """Data whose memory order is the ONNX (NCHW) order."""
        if t.nhwc and not (t.value.shape[1] == 1 and t.value.shape[2] == 1):
            return self.to_nchw(t)
        return t

    def tensor(self, x: Any, what: str = "const") -> Tensor:
        if isinstance(x, Tensor):
            return x
        if isinstance(x, np.ndarray):
            if x.dtype != np.float32:
                x = x.astype(np.float32)
            return Tensor(self.const(x, what), False)
        raise UnsupportedError(f"{what}: expected a tensor, got {type(x).__name__}")


# ops the lower_qdq pass moves before a dequantize (csrc/passes/lower_qdq.c, rule 2)
_MOVES_BEFORE_DEQUANTIZE = frozenset({"max_pool2d", "relu", "reshape", "flatten", "transpose", "slice", "pad"})

# -- attribute helpers ------------------------------------------------------------

_OP_INFO: Dict[str, Dict[str, Any]] = {}


def _op_info(op: str) -> Dict[str, Any]:
    if op not in _OP_INFO:
        info = dict(ir.op_info(op))
        info["attr_names"] = {at["name"] for at in info["attrs"]}
        _OP_INFO[op] = info
    return _OP_INFO[op]


def _dtype_name(elem_type: int) -> str:
    """The name of an ONNX element type, also for a number no version of ONNX defines."""
    try:
        return _onnx().TensorProto.DataType.Name(elem_type)
    except ValueError:
        return f"{elem_type} (not an ONNX type)"


def _tensor_data(t, what: str) -> np.ndarray:
    """A TensorProto's data; a FormatError naming ``what`` when it is inconsistent (size, type)."""
    try:
        return _onnx().numpy_helper.to_array(t)
    except MeraError:
        raise
    except Exception as e:  # noqa: BLE001 - onnx raises ValueError, TypeError, KeyError, ... here
        raise FormatError(f"{what}: its data cannot be read: {type(e).__name__}: {e}") from None


def _attrs(node) -> Dict[str, Any]:
    onnx = _onnx()
    out = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        elif isinstance(v, list):
            v = [e.decode("utf-8", "replace") if isinstance(e, bytes) else e for e in v]
        elif a.type == onnx.AttributeProto.TENSOR:
            v = _tensor_data(v, f"attribute '{a.name}'")
        out[a.name] = v
    return out


def _const_input(ctx: Context, x: Any, what: str) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    source = ""
    if isinstance(x, Tensor) and x.value.kind == "input":  # (an int64 graph input, say)
        source = f": it is the graph's input '{x.value.name}'"
    raise UnsupportedError(f"{what} must be a constant (an initializer or computable at import), "
                           f"but it is computed at run time{source}")


def _ints(x: Any) -> List[int]:
    return [int(v) for v in np.asarray(x).reshape(-1)]


# -- converters --------------------------------------------------------------------

ConvertFn = Callable[..., Any]
CONVERTERS: Dict[str, ConvertFn] = {}
# op types folded when all their inputs are constant
FOLDERS: Dict[str, ConvertFn] = {}


def converts(*ops: str):
    def reg(fn):
        for o in ops:
            CONVERTERS[o] = fn
        return fn
    return reg


def folds(*ops: str):
    def reg(fn):
        for o in ops:
            FOLDERS[o] = fn
        return fn
    return reg


def _same_pads(in_hw, k, s, d, mode: str) -> List[int]:
    pads_b, pads_e = [], []
    for i in range(2):
        out = -(-in_hw[i] // s[i])
        total = max((out - 1) * s[i] + (k[i] - 1) * d[i] + 1 - in_hw[i], 0)
        small, big = total // 2, total - total // 2
        if mode == "SAME_UPPER":
            pads_b.append(small)
            pads_e.append(big)
        else:
            pads_b.append(big)
            pads_e.append(small)
    return [pads_b[0], pads_b[1], pads_e[0], pads_e[1]]


def _spatial_pads(a: Dict[str, Any], in_hw, k, s, d) -> List[int]:
    auto = a.get("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        return _same_pads(in_hw, k, s, d, auto)
    if auto == "VALID":
        return [0, 0, 0, 0]
    if auto not in ("NOTSET", ""):
        raise UnsupportedError(f"auto_pad '{auto}' is not supported")
    p = list(a.get("pads", [0, 0, 0, 0]))
    if len(p) != 4:
        raise UnsupportedError(f"only 2-D spatial ops are supported (pads {p})")
    return [int(v) for v in p]  # ONNX: [top, left, bottom, right], as the IR


# -- 1-D spatial ops (Conv1d, pools over [N, C, L]): the 2-D op on [N, C, 1, L], between two reshapes ----

_SPATIAL_ATTRS = ("kernel_shape", "strides", "dilations", "output_padding", "output_shape")


def _attrs_as_2d(a: Dict[str, Any]) -> Dict[str, Any]:
    """A 1-D op's attributes as the 2-D op's on [N, C, 1, L]: a unit first spatial axis, unpadded."""
    b = dict(a)
    for key in _SPATIAL_ATTRS:
        if key in b:
            v = list(b[key])
            if len(v) != 1:
                raise UnsupportedError(f"{key} {v} on a 3-D [N, C, L] input (1 value expected)")
            b[key] = [1] + [int(e) for e in v]
    if "pads" in b:
        p = list(b["pads"])
        if len(p) != 2:
            raise UnsupportedError(f"pads {p} on a 3-D [N, C, L] input (2 values expected)")
        b["pads"] = [0, int(p[0]), 0, int(p[1])]
    return b


def _weight_as_2d(w: Any) -> Any:
    """A 1-D conv's [O, I, k] weight (constant, or integers behind a DequantizeLinear) as [O, I, 1, k]."""
    if isinstance(w, _onnx_quant.DQConst):
        if w.data.ndim != 3:
            return w
        return _onnx_quant.DQConst(w.data.reshape(w.data.shape[:2] + (1,) + w.data.shape[2:]), w.qp, w.name)
    if isinstance(w, np.ndarray) and w.ndim == 3:
        return w.reshape(w.shape[:2] + (1,) + w.shape[2:])
    return w


def _as_1d(ctx: Context, fn, node, a, t: Tensor, *rest) -> Tensor:
    """Run the 2-D converter ``fn`` on [N, C, L] data as [N, C, 1, L], and give back [N, C', L']."""
    n, c, length = t.shape
    t4 = _reshape_to(ctx, t, (n, c, 1, length))
    y = ctx.to_nchw(fn(ctx, node, _attrs_as_2d(a), t4, *rest))
    if y.shape[2] != 1:  # pragma: no cover - a 2-D op on a unit axis keeps it
        raise AssertionError(f"1-D {node.op_type} gave {y.shape}")
    return _reshape_to(ctx, y, (y.shape[0], y.shape[1], y.shape[3]))


def _check_4d(t: Tensor, what: str) -> None:
    if t.rank != 4:
        raise UnsupportedError(f"only 2-D {what} (4-D NCHW input) is supported, got a {t.rank}-D input")


def _pair_attr(a, key, default):
    v = list(a.get(key, default))
    if len(v) != 2:
        raise UnsupportedError(f"only 2-D spatial ops are supported ({key} {v})")
    return [int(e) for e in v]


def _conv_geometry(a: Dict[str, Any], t: Tensor, w_shape: Sequence[int]):
    """(strides, dilations, groups, pads) of a Conv (or QLinearConv) on ``t`` with an OIHW weight."""
    k = [int(w_shape[2]), int(w_shape[3])]
    if "kernel_shape" in a and [int(v) for v in a["kernel_shape"]] != k:
        raise UnsupportedError(f"kernel_shape {a['kernel_shape']} does not match the weight {tuple(w_shape)}")
    s = _pair_attr(a, "strides", [1, 1])
    d = _pair_attr(a, "dilations", [1, 1])
    return s, d, int(a.get("group", 1)), _spatial_pads(a, t.shape[2:], k, s, d)


@converts("Conv")
def _conv(ctx: Context, node, a, x, w, b=None):
    t = ctx.tensor(x)
    if t.rank == 3:
        return _as_1d(ctx, _conv, node, a, t, _weight_as_2d(w), b)
    _check_4d(t, "convolution")
    wq = w if isinstance(w, _onnx_quant.DQConst) else None  # a quantized weight behind a DequantizeLinear
    if wq is None:
        w = _const_input(ctx, w, "the Conv weight").astype(np.float32)
    w_shape = np.shape(w.data if wq is not None else w)
    if len(w_shape) != 4:
        raise UnsupportedError(f"only 2-D convolution is supported, got a {len(w_shape)}-D weight")
    bias = None if b is None else _const_input(ctx, b, "the Conv bias").astype(np.float32)
    s, d, groups, pads = _conv_geometry(a, t, w_shape)
    t = ctx.to_layout(t)
    wv = None if wq is None else _onnx_quant.dq_weight(ctx, wq)
    if wv is None:
        wv = ctx.param(wq.to_float() if wq is not None else w, node.input[1])
    bv = None if bias is None else ctx.param(bias, (node.input[2] if len(node.input) > 2 and node.input[2]
                                                    else node.input[1] + ".bias"))
    v = ctx.emit("conv2d", t.value, wv, bv, strides=s, padding=pads, dilation=d, groups=groups,
                 layout=ctx.spatial())
    return Tensor(v, ctx.layout == "NHWC")


def _bn_scale_shift(a, gamma, beta, mean, var):
    eps = float(a.get("epsilon", 1e-5))
    scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
    shift = beta.astype(np.float64) - mean.astype(np.float64) * scale
    return scale, shift


@converts("ConvTranspose")
def _conv_transpose(ctx: Context, node, a, x, w, b=None):
    if ctx.tensor(x).rank == 3:
        return _as_1d(ctx, _conv_transpose, node, a, ctx.tensor(x), _weight_as_2d(w), b)
    t = ctx.to_layout(ctx.tensor(x))
    _check_4d(t, "transposed convolution")
    wq = w if isinstance(w, _onnx_quant.DQConst) else None  # a quantized weight behind a DequantizeLinear
    w = _const_input(ctx, _onnx_quant.resolve(ctx, w), "the ConvTranspose weight").astype(np.float32)
    if w.ndim != 4:
        raise UnsupportedError(f"only 2-D transposed convolution is supported, got a {w.ndim}-D weight")
    auto = a.get("auto_pad", "NOTSET")
    if isinstance(auto, bytes):
        auto = auto.decode()
    st, dil = _pair_attr(a, "strides", [1, 1]), _pair_attr(a, "dilations", [1, 1])
    op = _pair_attr(a, "output_padding", [0, 0])
    in_hw, k = t.shape[2:], w.shape[2:]
    full = [st[i] * (in_hw[i] - 1) + op[i] + (k[i] - 1) * dil[i] + 1 for i in range(2)]  # before padding
    want = None
    if "output_shape" in a:
        want = list(a["output_shape"])[-2:]
    elif auto in ("SAME_UPPER", "SAME_LOWER"):
        want = [in_hw[i] * st[i] for i in range(2)]
    elif auto not in ("NOTSET", "VALID"):
        raise UnsupportedError(f"ConvTranspose auto_pad '{auto}'")
    if want is not None:
        # ONNX: total padding from the output shape; SAME_UPPER puts the larger half at the start
        total = [full[i] - int(want[i]) for i in range(2)]
        for i in range(2):
            if total[i] < 0:  # a larger output: the extra rows/columns come at the end, as output_padding
                op[i] -= total[i]
                total[i] = 0
        if any(op[i] >= st[i] and op[i] >= dil[i] for i in range(2)):
            raise UnsupportedError(f"ConvTranspose output_shape {want}: more than stride - 1 extra rows or "
                                   f"columns beyond the full output {full}")
        small = [v // 2 for v in total]
        # what onnxruntime and ONNX's reference compute: SAME_UPPER pads the end more
        p = [small[0], small[1], total[0] - small[0], total[1] - small[1]]
        if auto == "SAME_LOWER":
            p = [total[0] - small[0], total[1] - small[1], small[0], small[1]]
    else:
        p = list(a.get("pads", [0, 0, 0, 0])) if auto == "NOTSET" else [0, 0, 0, 0]
    if len(p) != 4:
        raise UnsupportedError(f"only 2-D spatial ops are supported (pads {p})")
    wv = None if wq is None else _onnx_quant.dq_transposed_weight(ctx, wq, int(a.get("group", 1)))
    if wv is None:
        wv = ctx.param(w, node.input[1])
    bv = None if b is None else ctx.param(_const_input(ctx, _onnx_quant.resolve(ctx, b), "the ConvTranspose bias"),
                                          node.input[2])
    v = ctx.emit("conv_transpose2d", t.value, wv, bv, strides=st, padding=[p[0], p[1], p[2], p[3]],
                 output_padding=op, dilation=dil, groups=int(a.get("group", 1)), layout=ctx.spatial())
    return Tensor(v, ctx.layout == "NHWC")


def _rnn_input(ctx: Context, op: str, a, x, seq_lens, activations: List[str],
               batchwise: bool = False) -> Tuple[Tensor, str, int]:
    """What LSTM, GRU and DynamicQuantizeLSTM share: their default activations only, X as [seq, batch, input]
    (``batchwise``: from layout 1's [batch, seq, input]), every sequence full length. Returns X, the direction
    and the hidden size."""
    def s(v):
        return v.decode() if isinstance(v, bytes) else v
    acts = [s(v) for v in a.get("activations", [])]
    if acts and any(v != d for v, d in zip(acts, activations * 2)):
        raise UnsupportedError(f"{op} activations {acts} (mera's is {', '.join(activations)})")
    t = ctx.to_nchw(ctx.tensor(x))
    if t.rank != 3:
        raise UnsupportedError(f"{op} input of rank {t.rank} (expected [seq, batch, input])")
    if batchwise:
        t = Tensor(ctx.emit("transpose", t.value, axes=[1, 0, 2]), False)
    seq = t.value.shape[0]
    if seq_lens is not None:
        lens = _const_input(ctx, seq_lens, f"the {op} sequence_lens")
        if np.any(lens != seq):
            raise UnsupportedError(f"{op} sequence_lens {lens.tolist()}: mera runs every sequence to its full "
                                   f"length {seq}")
    return t, s(a.get("direction", "forward")), int(a["hidden_size"])


@converts("LSTM")
def _lstm(ctx: Context, node, a, x, w, r, b=None, seq_lens=None, h0=None, c0=None, p=None):
    if "clip" in a or int(a.get("input_forget", 0)) or int(a.get("layout", 0)):
        raise UnsupportedError("LSTM with clip, input_forget or layout=1")
    if p is not None:
        raise UnsupportedError("LSTM with peepholes (input P)")
    t, direction, hidden = _rnn_input(ctx, "LSTM", a, x, seq_lens, ["Sigmoid", "Tanh", "Tanh"])
    seq, batch = t.value.shape[0], t.value.shape[1]
    ins = [t.value, ctx.param(_const_input(ctx, w, "the LSTM W"), node.input[1]),
           ctx.param(_const_input(ctx, r, "the LSTM R"), node.input[2])]
    opt = [b, h0, c0]
    while opt and opt[-1] is None:
        opt.pop()
    for v, what in zip(opt, ("B", "initial_h", "initial_c")):
        if v is None:
            ins.append(None)
        elif isinstance(v, np.ndarray):
            ins.append(ctx.const(v.astype(np.float32), what))
        else:
            ins.append(ctx.to_nchw(ctx.tensor(v)).value)
    y = ctx.emit("lstm", *ins, hidden_size=hidden, direction=direction)
    outs = list(node.output) + ["", ""]
    if outs[2] and (ctx.consumers.get(outs[2]) or outs[2] in ctx.graph_outputs):
        raise UnsupportedError("LSTM whose Y_c output is used (mera's lstm gives Y)")
    if outs[1] and (ctx.consumers.get(outs[1]) or outs[1] in ctx.graph_outputs):
        ctx.env[outs[1]] = Tensor(_rnn_y_h(ctx, y, direction, seq, batch, hidden), False)
    return Tensor(y, False)


# -- onnxruntime's dynamic quantization (quantize_dynamic): plain integer tensors ------------------

#: ops that read uint8/int8 tensors as plain integers (with their zero points beside them)
_INTEGER_OPS = frozenset({"ConvInteger", "MatMulInteger"})


def _plain_int_input(ctx: Context, name: str) -> bool:
    """Whether a uint8/int8 graph input is only read by ops of plain integers (ConvInteger, MatMulInteger)."""
    readers = ctx.consumers.get(name, [])
    return bool(readers) and all(c.op_type in _INTEGER_OPS and (c.domain or "") in ("", "ai.onnx") for c in readers)


def _int_operand(ctx: Context, x: Any, what: str) -> Tensor:
    """A uint8/int8 operand of an integer op as a plain (unquantized) tensor; constants keep their dtype."""
    if isinstance(x, np.ndarray):
        if x.dtype not in (np.uint8, np.int8):
            raise UnsupportedError(f"{what} has element type {x.dtype}; mera's integer ops take uint8 and int8")
        return Tensor(ctx.const(np.ascontiguousarray(x), what), False)
    if isinstance(x, Tensor) and x.value.qparams is None and x.value.dtype in ("uint8", "int8"):
        return x
    got = x.value.dtype + (" (quantized)" if x.value.qparams is not None else "") if isinstance(x, Tensor) \
        else type(x).__name__
    raise UnsupportedError(f"{what} must be a uint8/int8 tensor of plain integers, got {got}")


def _zero_point(ctx: Context, zp: Any, operand: Tensor, what: str, per: int = 0) -> Optional[ir.Value]:
    """A zero point input: None when omitted or all 0, else a tensor of the operand's dtype (one value, or
    ``per`` values when per > 1)."""
    if zp is None:
        return None
    if isinstance(zp, np.ndarray):
        if zp.dtype != np.dtype(operand.value.dtype):
            raise UnsupportedError(f"{what} is {zp.dtype} but its operand is {operand.value.dtype}")
        if zp.size == 1:
            if int(zp.reshape(-1)[0]) == 0:
                return None
            return ctx.const(zp.reshape(()), what)
        if per > 1 and zp.size == per:
            if not zp.any():
                return None
            return ctx.const(np.ascontiguousarray(zp.reshape(per)), what)
        raise UnsupportedError(f"{what} of shape {list(zp.shape)}: mera takes one value"
                               + (f" or {per} (one per output column/channel)" if per > 1 else ""))
    t = _int_operand(ctx, zp, what)
    if t.value.dtype != operand.value.dtype:
        raise UnsupportedError(f"{what} is {t.value.dtype} but its operand is {operand.value.dtype}")
    return t.value


def _used(ctx: Context, name: str) -> bool:
    return bool(name) and bool(ctx.consumers.get(name) or name in ctx.graph_outputs)


@converts("DynamicQuantizeLinear")
def _dynamic_quantize_linear(ctx: Context, node, a, x):
    t = ctx.tensor(x, "DynamicQuantizeLinear x")
    if t.rank == 4:
        t = ctx.to_nchw(t)  # ConvInteger reads NCHW
    outs = list(node.output) + ["", ""]
    for name, which in ((outs[1], "scale"), (outs[2], "zero_point")):
        if _used(ctx, name):
            ctx.env[name] = Tensor(ctx.emit("dynamic_quantize_linear", t.value, output=which), False)
    return Tensor(ctx.emit("dynamic_quantize_linear", t.value, output="y"), t.nhwc)


@converts("MatMulInteger")
def _matmul_integer(ctx: Context, node, a, x, w, x_zp=None, w_zp=None):
    at = ctx.to_nchw(_int_operand(ctx, x, "MatMulInteger A"))
    bt = ctx.to_nchw(_int_operand(ctx, w, "MatMulInteger B"))
    if at.rank < 2 or bt.rank < 2:
        raise UnsupportedError(f"MatMulInteger of a {at.rank}-D by a {bt.rank}-D operand (mera's matmul_integer "
                               "takes rank >= 2)")
    ins = [at.value, bt.value, _zero_point(ctx, x_zp, at, "MatMulInteger a_zero_point"),
           _zero_point(ctx, w_zp, bt, "MatMulInteger b_zero_point", bt.shape[-1] if bt.rank == 2 else 0)]
    while ins[-1] is None:
        ins.pop()
    return Tensor(ctx.emit("matmul_integer", *ins), False)


@converts("ConvInteger")
def _conv_integer(ctx: Context, node, a, x, w, x_zp=None, w_zp=None):
    t = ctx.to_nchw(_int_operand(ctx, x, "ConvInteger x"))
    wt = ctx.to_nchw(_int_operand(ctx, w, "ConvInteger w"))
    if t.rank != 4 or wt.rank != 4:
        raise UnsupportedError(f"a {t.rank - 2}-D ConvInteger: mera's conv_integer is 2-D")
    st, dil, groups, p = _conv_geometry(a, t, wt.shape)
    ins = [t.value, wt.value, _zero_point(ctx, x_zp, t, "ConvInteger x_zero_point"),
           _zero_point(ctx, w_zp, wt, "ConvInteger w_zero_point", wt.shape[0])]
    while ins[-1] is None:
        ins.pop()
    return Tensor(ctx.emit("conv_integer", *ins, strides=st, padding=[p[0], p[1], p[2], p[3]], dilation=dil,
                           groups=groups), False)


# -- run-time integer and rounding ops (old quantize_dynamic graphs quantize the bias in the graph:
#    Floor(bias / (x_scale * w_scale)), Cast to int32, an int32 Add to ConvInteger's sums, Cast to float)

#: ONNX tensor types a run-time Cast converts between, as mera dtypes
_CAST_TYPES = {1: "float32", 6: "int32", 7: "int64", 2: "uint8", 3: "int8"}


def _onnx_type_name(to: int) -> str:
    try:
        return _onnx().TensorProto.DataType.Name(to)
    except ValueError:
        return f"type {to}"


def _cast_runtime(ctx: Context, node, a, x):
    """Cast of a run-time tensor between float32, int32, int64, uint8 and int8 (ops.def's cast: float to integer
    truncates toward zero and saturates, integer to integer wraps)."""
    to = int(a["to"])
    if not isinstance(x, Tensor):
        raise UnsupportedError(f"Cast of a {type(x).__name__}")
    if to not in _CAST_TYPES:
        raise UnsupportedError(f"Cast of a run-time tensor to {_onnx_type_name(to)}: mera casts run-time tensors "
                               "between float32, int32, int64, uint8 and int8")
    if x.value.qparams is not None:
        raise UnsupportedError(f"Cast of a quantized {x.value.dtype} tensor (ONNX casts the stored integers)")
    if x.value.dtype == _CAST_TYPES[to]:
        return x
    if x.value.dtype not in _CAST_TYPES.values():
        raise UnsupportedError(f"Cast of a run-time {x.value.dtype} tensor")
    return Tensor(ctx.emit("cast", x.value, to=_CAST_TYPES[to]), x.nhwc)


CONVERTERS["Cast"] = _cast_runtime


def _rounding(op: str):
    """Floor, Ceil, Round of a run-time float32 tensor (Round: halves to even)."""
    def conv(ctx, node, a, x):
        t = ctx.tensor(x)
        if t.value.dtype != "float32" or t.value.qparams is not None:
            raise UnsupportedError(f"{node.op_type} of a run-time {t.value.dtype} tensor: mera rounds float32")
        return Tensor(ctx.emit(op, t.value), t.nhwc)
    return conv


for _onnx_op, _mera_op in (("Floor", "floor"), ("Ceil", "ceil"), ("Round", "round")):
    CONVERTERS[_onnx_op] = _rounding(_mera_op)


_INT_DTYPES = {"int32": np.int32, "int64": np.int64}


def _int_runtime(*xs) -> bool:
    """Is one of the operands a run-time integer tensor (ConvInteger's sums, a Cast to int32, ...)?"""
    return any(isinstance(x, Tensor) and x.value.qparams is None and x.value.dtype in ("int32", "int64", "uint8",
                                                                                       "int8") for x in xs)


def _int_arith(ctx: Context, kind: str, x, y) -> Tensor:
    """Add/Sub/Mul where an operand is a run-time integer tensor: ``int_arith`` on int32 or int64 (wrapping)."""
    ts = [v for v in (x, y) if isinstance(v, Tensor)]
    dt = ts[0].value.dtype
    if dt not in _INT_DTYPES or any(t.value.dtype != dt for t in ts):
        raise UnsupportedError(f"{kind} of run-time {' and '.join(t.value.dtype for t in ts)} tensors: mera's "
                               "integer arithmetic takes two int32 or two int64 operands")
    vals = []
    for v in (x, y):
        if isinstance(v, Tensor):
            vals.append(ctx.to_nchw(v).value)
            continue
        c = np.asarray(_onnx_quant.resolve(ctx, v))
        if not np.issubdtype(c.dtype, np.integer):
            raise UnsupportedError(f"{kind} of a run-time {dt} tensor and a {c.dtype} constant")
        vals.append(ctx.const(c.astype(_INT_DTYPES[dt]), "int_operand"))
    return Tensor(ctx.emit("int_arith", vals[0], vals[1], kind=kind), False)


@converts("GRU")
def _gru(ctx: Context, node, a, x, w, r, b=None, seq_lens=None, h0=None):
    if "clip" in a:
        raise UnsupportedError("GRU with clip")
    batchwise = int(a.get("layout", 0)) == 1
    t, direction, hidden = _rnn_input(ctx, "GRU", a, x, seq_lens, ["Sigmoid", "Tanh"], batchwise)
    seq, batch = t.value.shape[0], t.value.shape[1]
    ins = [t.value, ctx.param(_const_input(ctx, w, "the GRU W"), node.input[1]),
           ctx.param(_const_input(ctx, r, "the GRU R"), node.input[2])]
    if b is not None:
        ins.append(ctx.const(b.astype(np.float32), "B") if isinstance(b, np.ndarray)
                   else ctx.to_nchw(ctx.tensor(b)).value)
    if h0 is not None:
        ins += [None] * (4 - len(ins))
        if isinstance(h0, np.ndarray):
            hv = ctx.const(h0.astype(np.float32), "initial_h")
        else:
            hv = ctx.to_nchw(ctx.tensor(h0)).value
        ins.append(ctx.emit("transpose", hv, axes=[1, 0, 2]) if batchwise else hv)
    y = ctx.emit("gru", *ins, hidden_size=hidden, direction=direction,
                 linear_before_reset=int(a.get("linear_before_reset", 0)))
    outs = list(node.output) + [""]
    if _used(ctx, outs[1]):
        yh = _rnn_y_h(ctx, y, direction, seq, batch, hidden)
        ctx.env[outs[1]] = Tensor(ctx.emit("transpose", yh, axes=[1, 0, 2]) if batchwise else yh, False)
    # Y [seq, dirs, batch, H]; layout 1: [batch, seq, dirs, H]
    return Tensor(ctx.emit("transpose", y, axes=[2, 0, 1, 3]) if batchwise else y, False)


def _rnn_y_h(ctx: Context, y: ir.Value, direction: str, seq: int, batch: int, hidden: int) -> ir.Value:
    """Y_h of a recurrent op's Y [seq, dirs, batch, H]: the last step of each direction, [dirs, batch, H]."""
    dirs = 2 if direction == "bidirectional" else 1
    parts = []
    for d in range(dirs):
        last = 0 if direction == "reverse" or d == 1 else seq - 1
        v = ctx.emit("slice", y, axis=0, begin=last, end=last + 1)
        parts.append(ctx.emit("slice", v, axis=1, begin=d, end=d + 1) if dirs > 1 else v)
    yh = parts[0] if dirs == 1 else ctx.emit("concat", *parts, axis=1)
    return ctx.emit("reshape", yh, shape=[dirs, batch, hidden])


def _dynamic_quantize_matmul(ctx: Context, node, a, x, b, b_scale, b_zp=None, bias=None):
    """com.microsoft DynamicQuantizeMatMul (onnxruntime's fusion of DynamicQuantizeLinear, MatMulInteger and the
    scaling): A quantized as DynamicQuantizeLinear does, the exact integer product by the int8/uint8 B, then
    acc * (a_scale * b_scale) (+ bias) in float32."""
    t = ctx.to_nchw(ctx.tensor(x, "DynamicQuantizeMatMul A"))
    bt = ctx.to_nchw(_int_operand(ctx, b, "DynamicQuantizeMatMul B"))
    if t.rank < 2 or bt.rank != 2:
        raise UnsupportedError(f"DynamicQuantizeMatMul of a {t.rank}-D A by a {bt.rank}-D B (mera takes A of rank "
                               ">= 2 and a 2-D B)")
    n = bt.shape[-1]
    scale = _const_input(ctx, b_scale, "the DynamicQuantizeMatMul b_scale").astype(np.float32)
    if scale.size not in (1, n):
        raise UnsupportedError(f"DynamicQuantizeMatMul b_scale of shape {list(scale.shape)} (one value or {n})")
    aq = ctx.emit("dynamic_quantize_linear", t.value, output="y")
    ins = [aq, bt.value, ctx.emit("dynamic_quantize_linear", t.value, output="zero_point"),
           _zero_point(ctx, b_zp, bt, "DynamicQuantizeMatMul b_zero_point", n)]
    acc = ctx.emit("cast", ctx.emit("matmul_integer", *[v for v in ins if v is not None]), to="float32")
    a_scale = ctx.emit("dynamic_quantize_linear", t.value, output="scale")
    s = ctx.emit("mul", a_scale, ctx.const(np.ascontiguousarray(scale.reshape(-1) if scale.size == n and n > 1
                                                                else scale.reshape(())), "b_scale"))
    y = ctx.emit("mul", acc, s)
    if bias is not None:
        bv = ctx.const(_const_input(ctx, bias, "the DynamicQuantizeMatMul bias").astype(np.float32), "bias") \
            if isinstance(bias, np.ndarray) else ctx.to_nchw(ctx.tensor(bias)).value
        y = ctx.emit("add", y, bv)
    return Tensor(y, False)


def _dynamic_quantize_lstm(ctx: Context, node, a, x, w, r, b=None, seq_lens=None, h0=None, c0=None, p=None,
                           w_scale=None, w_zp=None, r_scale=None, r_zp=None):
    """com.microsoft DynamicQuantizeLSTM (quantize_dynamic's LSTM): int8/uint8 weights [dirs, in, 4H] with their
    scales and zero points; onnxruntime quantizes X and the hidden state at run time."""
    if "clip" in a or int(a.get("input_forget", 0)):
        raise UnsupportedError("DynamicQuantizeLSTM with clip or input_forget")
    if p is not None:
        raise UnsupportedError("DynamicQuantizeLSTM with peepholes (input P)")
    t, direction, hidden = _rnn_input(ctx, "DynamicQuantizeLSTM", a, x, seq_lens, ["Sigmoid", "Tanh", "Tanh"])
    seq, batch = t.value.shape[0], t.value.shape[1]
    ins = []
    for v, what in ((w, "W"), (r, "R")):
        arr = _const_input(ctx, v, f"the DynamicQuantizeLSTM {what}")
        if arr.dtype not in (np.int8, np.uint8):
            raise UnsupportedError(f"DynamicQuantizeLSTM {what} of element type {arr.dtype} (expected int8/uint8)")
        ins.append(ctx.const(np.ascontiguousarray(arr), what))
    for v, what in ((b, "B"), (h0, "initial_h"), (c0, "initial_c")):
        if v is None:
            ins.append(None)
        elif isinstance(v, np.ndarray):
            ins.append(ctx.const(v.astype(np.float32), what))
        else:
            ins.append(ctx.to_nchw(ctx.tensor(v)).value)
    for sc, zp, what in ((w_scale, w_zp, "W"), (r_scale, r_zp, "R")):
        sc = _const_input(ctx, sc, f"the DynamicQuantizeLSTM {what}_scale").astype(np.float32)
        zp = _const_input(ctx, zp, f"the DynamicQuantizeLSTM {what}_zero_point")
        if zp.ndim == 2 and np.any(zp != zp[:, :1]):
            raise UnsupportedError(f"DynamicQuantizeLSTM {what}_zero_point differs between columns (onnxruntime "
                                   "reads one zero point per direction)")
        ins += [ctx.const(np.ascontiguousarray(sc), f"{what}_scale"), ctx.const(np.ascontiguousarray(zp),
                                                                                 f"{what}_zero_point")]
    y = ctx.emit("dynamic_quantize_lstm", t.value, *ins, hidden_size=hidden,
                 direction=direction)
    outs = list(node.output) + ["", ""]
    if _used(ctx, outs[2]):
        raise UnsupportedError("DynamicQuantizeLSTM whose Y_c output is used (mera's gives Y)")
    if _used(ctx, outs[1]):
        ctx.env[outs[1]] = Tensor(_rnn_y_h(ctx, y, direction, seq, batch, hidden), False)
    return Tensor(y, False)



@converts("TopK")
def _topk(ctx: Context, node, a, x, k=None):
    """TopK with a constant K: values (float32) and indices (int64), each a topk node. sorted=0 leaves the order to
    the implementation; mera's is the sorted one."""
    kk = _ints(_const_input(ctx, k, "the TopK K")) if k is not None else [int(a.get("k", 0))]
    if len(kk) != 1:
        raise UnsupportedError(f"TopK K {kk} (expected one value)")
    t = ctx.tensor(x, "TopK X")
    axis = ctx.axis(t, int(a.get("axis", -1)))
    largest = int(a.get("largest", 1))
    outs = list(node.output) + [""]
    if _used(ctx, outs[1]):
        ctx.env[outs[1]] = Tensor(ctx.emit("topk", t.value, k=kk[0], axis=axis, largest=largest, output="indices"),
                                  t.nhwc)
    return Tensor(ctx.emit("topk", t.value, k=kk[0], axis=axis, largest=largest, output="values"), t.nhwc)


# -- NonMaxSuppression and the ops on its rows -------------------------------------------------------------
#
# mera's tensors have static shapes. non_max_suppression returns its largest possible row count
# (batches * classes * min(max_output_boxes_per_class, boxes)) with the selected rows first and zeros after them
# (valid indices, so the gathers that follow never fail on them), and a second node gives the count of selected
# rows. A Tensor computed from those rows carries ``rows = (axis, count)``; _ROW_RULES says where the rows go
# through each op that keeps them apart, and every graph output with rows is a rows_valid node whose count is an
# extra graph output: the runners cut the output to the valid rows (mera/_valid_rows.py).

@converts("NonMaxSuppression")
def _non_max_suppression(ctx: Context, node, a, boxes, scores, max_out=None, iou=None, score=None):
    """onnxruntime's NonMaxSuppression; max_output_boxes_per_class, iou_threshold and score_threshold must be
    constants (the first sets the static row count)."""
    def scalar(v, what, dtype):
        arr = np.asarray(_const_input(ctx, v, f"the NonMaxSuppression {what}"))
        if arr.size != 1:
            raise UnsupportedError(f"NonMaxSuppression {what} of shape {arr.shape} (expected one value)")
        return dtype(arr.reshape(-1)[0])
    mpc = max(scalar(max_out, "max_output_boxes_per_class", int), 0) if max_out is not None else 0
    iou_thr = scalar(iou, "iou_threshold", float) if iou is not None else 0.0
    if not 0.0 <= iou_thr <= 1.0:
        raise UnsupportedError(f"NonMaxSuppression iou_threshold {iou_thr} (onnxruntime requires it in [0, 1])")
    attrs = dict(max_output_boxes_per_class=mpc, iou_threshold=np.float32(iou_thr).item(),
                 center_point_box=int(a.get("center_point_box", 0)))
    if score is not None:
        attrs.update(use_score_threshold=1,
                     score_threshold=np.float32(scalar(score, "score_threshold", float)).item())
    b, s = (ctx.to_nchw(ctx.tensor(v, f"NonMaxSuppression {w}")) for v, w in ((boxes, "boxes"), (scores, "scores")))
    extra = []
    if b.rows is not None or s.rows is not None:  # boxes filtered by score (NonZero -> GatherND): the valid ones first
        if b.rows is None or s.rows is None or b.rows[0] != 1 or s.rows[0] != 2 or b.rows[1].id != s.rows[1].id:
            raise UnsupportedError("NonMaxSuppression of boxes and scores whose valid count is known only at run "
                                   "time: both must have those rows along their boxes axis (boxes axis 1, scores "
                                   "axis 2), with one count")
        extra = [b.rows[1]]
    # one run gives the rows and, in a last row [count, 0, 0], their count: the suppression is computed once
    packed = ctx.emit("non_max_suppression", b.value, s.value, *extra, output="packed", **attrs)
    rows = int(packed.shape[0]) - 1
    sel = ctx.emit("slice", packed, axis=0, begin=0, end=rows)
    last = ctx.emit("slice", ctx.emit("slice", packed, axis=0, begin=rows, end=rows + 1), axis=1, begin=0, end=1)
    count = ctx.emit("reshape", last, shape=[1])
    return Tensor(sel, False, rows=(0, count))


def _arg_reduce(op: str):
    def convert(ctx: Context, node, a, x):
        t = ctx.to_nchw(ctx.tensor(x, f"{node.op_type} data"))
        axis = int(a.get("axis", 0))
        d = axis + t.rank if axis < 0 else axis
        if not 0 <= d < t.rank:
            raise UnsupportedError(f"{node.op_type} axis {axis} of a rank-{t.rank} tensor")
        return Tensor(ctx.emit(op, t.value, axis=d, keepdims=int(a.get("keepdims", 1)),
                               select_last_index=int(a.get("select_last_index", 0))), False)
    return convert


CONVERTERS["ArgMax"] = _arg_reduce("argmax")
CONVERTERS["ArgMin"] = _arg_reduce("argmin")


def _norm_axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def _one_tag(node, tags) -> Tuple[int, int]:
    """(input position, rows axis) of the one input with rows."""
    if len(tags) != 1:
        raise UnsupportedError(f"{node.op_type} with NonMaxSuppression's rows in {len(tags)} of its inputs")
    (i, (r, _)), = tags.items()
    return i, r


def _rows_same_block(node, a, ins, out: Tensor, r: int, src: Tensor) -> int:
    """Where the rows axis r of ``src`` is in ``out`` when ``out`` holds the same elements in the same order
    (Reshape, Squeeze, Unsqueeze, Flatten): the axis whose size is the rows' and before which as many elements lie."""
    before = int(np.prod(src.shape[:r]))
    for k in range(out.rank):
        if int(np.prod(out.shape[:k])) == before and out.shape[k] == src.shape[r]:
            return k
    raise UnsupportedError(f"{node.op_type} of {src.shape} to {out.shape} merges or splits NonMaxSuppression's "
                           f"rows (axis {r}), whose valid count is known only at run time")


def _rows_elementwise(node, a, ins, out: Tensor, tags) -> int:
    axes = set()
    for i, (r, _) in tags.items():
        k = r + out.rank - ins[i].rank
        if out.shape[k] != ins[i].shape[r]:
            raise UnsupportedError(f"{node.op_type} broadcasts NonMaxSuppression's rows")
        axes.add(k)
    if len(axes) != 1:
        raise UnsupportedError(f"{node.op_type} of NonMaxSuppression's rows on different axes")
    return axes.pop()


def _rows_gather(node, a, ins, out: Tensor, tags) -> Any:
    if len(tags) == 2 and tags[0][1].id != tags[1][1].id:
        # data with rows (a NonZero filter's) gathered along them by NonMaxSuppression's rows: its selected rows
        # index only valid data rows, so the output has the indices' rows (and their count)
        d = _norm_axis(int(a.get("axis", 0)), ins[0].rank)
        if d != tags[0][0]:
            raise UnsupportedError("Gather of rows by rows of another count, not along the data's rows")
        return d + tags[1][0], tags[1][1]
    if len(tags) != 1:
        raise UnsupportedError("Gather of NonMaxSuppression's rows by indices computed from them")
    i, r = _one_tag(node, tags)
    d = _norm_axis(int(a.get("axis", 0)), ins[0].rank if isinstance(ins[0], Tensor) else np.ndim(ins[0]))
    if i == 1:  # the indices are the rows: they take the place of the data's axis d
        return d + r
    if d == r:
        raise UnsupportedError("Gather along NonMaxSuppression's rows (their valid count is known only at run time)")
    return r if r < d else r - 1 + int(np.ndim(ins[1]) if not isinstance(ins[1], Tensor) else ins[1].rank)


def _rows_slice(node, a, ins, out: Tensor, tags) -> Any:
    i, r = _one_tag(node, tags)
    if (i == 0 and out.rank == ins[0].rank and out.shape[r] < ins[0].shape[r]
            and all(out.shape[d] == ins[0].shape[d] for d in range(out.rank) if d != r)
            and _slice_from_start(node, a, ins, r)):
        return ("min", r, int(out.shape[r]))  # the first `end` rows: min(count, end) of them are valid
    if i != 0 or out.rank != ins[0].rank or out.shape[r] != ins[0].shape[r]:
        raise UnsupportedError("Slice of NonMaxSuppression's rows themselves (their valid count is known only at "
                               "run time)")
    return r


def _rows_expand(node, a, ins, out: Tensor, tags) -> int:
    _, r = _one_tag(node, tags)
    k = r + out.rank - ins[0].rank
    if out.shape[k] != ins[0].shape[r]:
        raise UnsupportedError("Expand broadcasts NonMaxSuppression's or NonZero's rows")
    return k


class _Dyn:
    """An integer known only at run time: a * count + b, count the valid rows of a NonZero or NonMaxSuppression
    (Shape of such rows). Shape arithmetic (Gather, Concat, Sub, Mul, Equal, Where, Cast) carries it in object
    arrays; as a plain int it is its value at the static maximum count, the size mera's tensors have."""

    __slots__ = ("a", "b", "count", "max")

    def __init__(self, a: int, b: int, count: ir.Value, mx: int):
        self.a, self.b, self.count, self.max = int(a), int(b), count, int(mx)

    def _other(self, o: Any) -> "_Dyn":
        if isinstance(o, _Dyn):
            if o.count.id != self.count.id:
                raise UnsupportedError("shape arithmetic on the run-time counts of two filters")
            return o
        return _Dyn(0, int(o), self.count, self.max)

    def __add__(self, o):
        o = self._other(o)
        return _Dyn(self.a + o.a, self.b + o.b, self.count, self.max)

    __radd__ = __add__

    def __neg__(self):
        return _Dyn(-self.a, -self.b, self.count, self.max)

    def __sub__(self, o):
        return self + (-self._other(o))

    def __rsub__(self, o):
        return self._other(o) - self

    def __mul__(self, o):
        o = self._other(o)
        if self.a and o.a:
            raise UnsupportedError("a product of two run-time counts")
        k, d = (o.b, self) if o.a == 0 else (self.b, o)
        return _Dyn(d.a * k, d.b * k, self.count, self.max)

    __rmul__ = __mul__

    def __eq__(self, o):
        o = self._other(o)
        if self.a == o.a:
            return self.b == o.b
        n, rem = divmod(o.b - self.b, self.a - o.a)
        if rem or not 0 <= n <= self.max:  # no count in 0..max makes them equal
            return False
        raise UnsupportedError("a comparison of a run-time count with a value it may take")

    def __hash__(self):
        return hash((self.a, self.b, self.count.id))

    def __int__(self):
        return self.a * self.max + self.b

    __index__ = __int__


def _slice_from_start(node, a, ins, r: int) -> bool:
    """Does the Slice keep rows 0, 1, 2, ... of axis r (start 0, step 1)?"""
    starts = _ints(ins[1]) if len(ins) > 1 and isinstance(ins[1], np.ndarray) else None
    axes = _ints(ins[3]) if len(ins) > 3 and isinstance(ins[3], np.ndarray) else None
    steps = _ints(ins[4]) if len(ins) > 4 and isinstance(ins[4], np.ndarray) else None
    if starts is None:
        return False
    axes = list(range(len(starts))) if axes is None else [v + ins[0].rank if v < 0 else v for v in axes]
    for j, d in enumerate(axes):
        if d == r:
            return starts[j] == 0 and (steps is None or steps[j] == 1)
    return False


def _rows_reshape(node, a, ins, out: Tensor, tags) -> Any:
    _, r = _one_tag(node, tags)
    src = ins[0]
    before = int(np.prod(src.shape[:r]))
    for k in range(out.rank):  # the rows and every axis after them merged into one (a flatten of [rows, 6])
        if (node.op_type in ("Reshape", "Flatten") and r < src.rank - 1 and k == out.rank - 1
                and int(np.prod(out.shape[:k])) == before and out.shape[k] == int(np.prod(src.shape[r:]))):
            return ("scale", k, int(np.prod(src.shape[r + 1:])))
    return _rows_same_block(node, a, ins, out, r, ins[0])


def _rows_transpose(node, a, ins, out: Tensor, tags) -> int:
    _, r = _one_tag(node, tags)
    perm = [int(p) for p in a.get("perm", list(range(ins[0].rank))[::-1])]
    return perm.index(r)


def _rows_concat(node, a, ins, out: Tensor, tags) -> int:
    axes = {r for r, _ in tags.values()}
    d = _norm_axis(int(a["axis"]), out.rank)
    if len(axes) != 1 or d in axes:
        raise UnsupportedError("Concat along NonMaxSuppression's rows, or of rows on different axes")
    return axes.pop()


def _rows_arg(node, a, ins, out: Tensor, tags) -> int:
    _, r = _one_tag(node, tags)
    d = _norm_axis(int(a.get("axis", 0)), ins[0].rank)
    if d == r:
        raise UnsupportedError(f"{node.op_type} along NonMaxSuppression's rows (their valid count is known only at "
                               "run time)")
    return r if r < d or int(a.get("keepdims", 1)) else r - 1


def _rows_keep(node, a, ins, out: Tensor, tags) -> int:
    return _one_tag(node, tags)[1]


_ROW_RULES = {
    "Gather": _rows_gather, "Slice": _rows_slice, "Reshape": _rows_reshape, "Squeeze": _rows_reshape,
    "Unsqueeze": _rows_reshape, "Flatten": _rows_reshape, "Transpose": _rows_transpose, "Concat": _rows_concat,
    "ArgMax": _rows_arg, "ArgMin": _rows_arg, "Cast": _rows_keep, "Identity": _rows_keep,
    **{op: _rows_elementwise for op in ("Add", "Sub", "Mul", "Div", "Relu", "Sigmoid", "Neg", "Abs", "Sqrt", "Exp",
                                        "Log")},
}


def _row_tags(ins: List[Any]) -> Dict[int, Tuple[int, ir.Value]]:
    return {i: v.rows for i, v in enumerate(ins) if isinstance(v, Tensor) and v.rows is not None}


def _check_row_op(node, tags) -> None:
    """Refuse an op that would mix NonMaxSuppression's valid rows with the unused ones."""
    if node.op_type not in _ROW_RULES:
        raise UnsupportedError(
            f"{node.op_type} of NonMaxSuppression's selected rows or NonZero's indices: their count is known only at "
            f"run time, and mera follows them through {', '.join(sorted(_ROW_RULES))} only")
    if len({c.id for _, c in tags.values()}) > 1 and node.op_type != "Gather":
        raise UnsupportedError(f"{node.op_type} of the rows of two NonMaxSuppression nodes")


#: ops folded on run-time counts (_Dyn) in any input, in the data input only, and run-time ops reading one as their
#: shape (input 1)
_DYN_ANY = frozenset({"Concat", "Add", "Sub", "Mul", "Neg", "Equal", "Where", "Identity"})
_DYN_DATA = frozenset({"Gather", "Unsqueeze", "Squeeze", "Reshape", "Slice", "Transpose", "Cast", "Shape", "Flatten"})
_DYN_SHAPE = frozenset({"Reshape", "Expand", "Pad"})


def _has_dyn(v: Any) -> bool:
    return isinstance(v, np.ndarray) and v.dtype == object and any(isinstance(e, _Dyn) for e in v.reshape(-1))


_EMPTY_THROUGH = frozenset({"Gather", "GatherND", "Unsqueeze", "Squeeze", "Reshape", "Flatten", "Cast", "Transpose",
                            "Identity", "Slice"})


class _Empty(np.ndarray):
    """An empty tensor a Slice made at run time (mera's tensors are never empty); other empty constants (Resize's
    roi, say) are plain arrays."""


def _empty(shape: Sequence[int], dtype: Any) -> np.ndarray:
    return np.zeros(shape, dtype).view(_Empty)


def _is_empty(v: Any) -> bool:
    return isinstance(v, _Empty) and v.size == 0


def _with_rows(node, a, ins, out: Any, tags, ctx: Optional[Context] = None) -> Any:
    """``out`` tagged with where the rows of its inputs went."""
    if _is_empty(out):  # nothing to follow
        return out
    if node.op_type in ("Shape", "Pad"):  # their own rows handling (symbolic shape, padded to a fixed size)
        return out
    if not isinstance(out, Tensor):
        raise UnsupportedError(f"{node.op_type} of NonMaxSuppression's rows to a constant")
    if out.nhwc:
        raise UnsupportedError(f"{node.op_type} of NonMaxSuppression's rows to a channels-last tensor")
    axis = _ROW_RULES[node.op_type](node, a, ins, out, tags)
    if axis is None:  # the op's own rows (NonMaxSuppression of filtered boxes)
        return out
    if isinstance(axis, tuple) and axis[0] in ("scale", "min"):
        # the count changes: rows merged with `unit` elements after them (Reshape), or cut to the first `end` (Slice)
        kind, ax, k = axis
        count = next(iter(tags.values()))[1]
        if kind == "scale":
            new = ctx.emit("int_arith", count, ctx.const(np.array([k], np.int64), "unit"), kind="mul")
            ctx.__dict__.setdefault("count_scale", {})[new.id] = (count.id, k)
        else:
            f = ctx.emit("cast", count, to="float32")
            f = ctx.emit("minimum", f, ctx.const(np.array([k], np.float32), "end"))
            new = ctx.emit("cast", f, to="int64")
        return Tensor(out.value, out.nhwc, rows=(ax, new))
    if isinstance(axis, tuple):  # (axis, count): rows of another count
        return Tensor(out.value, out.nhwc, rows=axis)
    count = next(iter(tags.values()))[1]
    return Tensor(out.value, out.nhwc, rows=(axis, count))


def _rows_own(node, a, ins, out: Tensor, tags) -> None:
    return None


# -- comparisons, NonZero, GatherND, ScatterND (data-dependent indexing, on the host) -----------------------------
#
# NonZero's count of indices depends on the data: like NonMaxSuppression's rows (above), nonzero returns the largest
# possible count (every element) with the valid indices first, and the count; the indices carry ``rows`` along their
# axis 1, which Transpose, GatherND and the ops of _ROW_RULES follow to the graph outputs (cut by the runners).

_COMPARE = {"Greater": "greater", "Less": "less", "Equal": "equal", "GreaterOrEqual": "greater_or_equal",
            "LessOrEqual": "less_or_equal"}


def _compare(kind: str):
    def convert(ctx: Context, node, a, x, y):
        """ONNX's bool result is uint8 0/1 in mera."""
        ts = [v for v in (x, y) if isinstance(v, Tensor)]
        dt = ts[0].value.dtype
        if any(t.value.qparams is not None for t in ts):
            raise UnsupportedError(f"{node.op_type} of quantized tensors")
        vals = []
        for v in (x, y):
            if isinstance(v, Tensor):
                if v.value.dtype != dt:
                    raise UnsupportedError(f"{node.op_type} of run-time {v.value.dtype} and {dt} tensors")
                vals.append(ctx.to_nchw(v).value)
                continue
            c = np.asarray(_onnx_quant.resolve(ctx, v))
            if c.dtype == np.bool_ or (dt != "float32" and not np.issubdtype(c.dtype, np.integer)):
                raise UnsupportedError(f"{node.op_type} of a run-time {dt} tensor and a {c.dtype} constant")
            vals.append(ctx.const(c.astype(dt), "operand"))
        return Tensor(ctx.emit("compare", vals[0], vals[1], kind=kind), False)
    return convert


for _op, _kind in _COMPARE.items():
    CONVERTERS[_op] = _compare(_kind)


@converts("NonZero")
def _nonzero(ctx: Context, node, a, x):
    """int64 [rank, numel] indices (the valid ones first) and their count; rows along axis 1."""
    t = ctx.to_nchw(ctx.tensor(x, "NonZero data"))
    if t.value.qparams is not None:
        raise UnsupportedError("NonZero of a quantized tensor")
    # one node per tensor (the Ultralytics exports write a NonZero of the same mask before each GatherND): their rows
    # then share one count, and the indices are computed once
    done = ctx.__dict__.setdefault("nonzero_of", {})
    if t.value.id in done:
        return done[t.value.id]
    packed = ctx.emit("nonzero", t.value)
    r, n = (int(s) for s in packed.shape)
    idx = ctx.emit("slice", packed, axis=0, begin=0, end=r - 1)
    last = ctx.emit("slice", ctx.emit("slice", packed, axis=0, begin=r - 1, end=r), axis=1, begin=0, end=1)
    count = ctx.emit("reshape", last, shape=[1])
    done[t.value.id] = Tensor(idx, False, rows=(1, count))
    return done[t.value.id]


@converts("GatherND")
def _gather_nd(ctx: Context, node, a, data, indices):
    b = int(a.get("batch_dims", 0))
    d = ctx.to_nchw(ctx.tensor(data, "GatherND data"))
    if isinstance(indices, Tensor):
        ix = ctx.to_nchw(indices)
        if ix.value.dtype != "int64":
            raise UnsupportedError(f"GatherND indices of type {ix.value.dtype} (int64 expected)")
        iv = ix.value
    else:
        iv = ctx.const(np.asarray(_onnx_quant.resolve(ctx, indices)).astype(np.int64), "indices")
    return Tensor(ctx.emit("gather_nd", d.value, iv, batch_dims=b), False)


@converts("ScatterND")
def _scatter_nd(ctx: Context, node, a, data, indices, updates):
    red = a.get("reduction", "none")
    red = red.decode() if isinstance(red, bytes) else str(red)
    if red not in ("none", "add", "mul", "max", "min"):
        raise UnsupportedError(f"ScatterND reduction '{red}'")
    ts = [v for v in (data, updates) if isinstance(v, Tensor)]
    dt = ts[0].value.dtype
    vals = []
    for v, what in ((data, "data"), (indices, "indices"), (updates, "updates")):
        if isinstance(v, Tensor):
            v = ctx.to_nchw(v)
            if v.value.qparams is not None:
                raise UnsupportedError(f"ScatterND {what} quantized")
            vals.append(v.value)
            continue
        c = np.asarray(_onnx_quant.resolve(ctx, v))
        vals.append(ctx.const(c.astype(np.int64 if what == "indices" else dt), what))
    return Tensor(ctx.emit("scatter_nd", *vals, reduction=red), False)


def _rows_gather_nd(node, a, ins, out: Tensor, tags) -> int:
    i, r = _one_tag(node, tags)
    b = int(a.get("batch_dims", 0))
    if i == 1:  # the indices' rows: an axis of indices.shape[:-1], which leads the output
        if r >= ins[1].rank - 1 or r < b:
            raise UnsupportedError("GatherND with NonMaxSuppression's or NonZero's rows along the indices' last axis "
                                   "or a batch axis")
        return r
    k = ins[1].shape[-1] if isinstance(ins[1], Tensor) else np.shape(ins[1])[-1]
    if r < b + k:
        raise UnsupportedError("GatherND indexing along NonMaxSuppression's or NonZero's rows (their valid count is "
                               "known only at run time)")
    irank = ins[1].rank if isinstance(ins[1], Tensor) else np.ndim(ins[1])
    return irank - 1 + r - (b + k)


_ROW_RULES.update({"GatherND": _rows_gather_nd, "NonMaxSuppression": _rows_own, "Shape": _rows_own, "Pad": _rows_own,
                   "Expand": _rows_expand,
                   **{op: _rows_elementwise for op in _COMPARE}})

@converts("BatchNormalization")
def _batchnorm(ctx: Context, node, a, x, gamma, beta, mean, var):
    if a.get("training_mode", 0) or len([o for o in node.output if o]) > 1:
        raise UnsupportedError("BatchNormalization in training mode (or with running-statistics outputs)")
    t = ctx.tensor(x)
    stats = [_const_input(ctx, v, "BatchNormalization " + n) for v, n in
             ((gamma, "scale"), (beta, "bias"), (mean, "mean"), (var, "var"))]
    scale, shift = _bn_scale_shift(a, *stats)
    c = scale.size
    shape = [c] if t.nhwc or t.rank < 3 else [c] + [1] * (t.rank - 2)
    y = ctx.emit("mul", t.value, ctx.const(scale.astype(np.float32).reshape(shape), "scale"))
    return Tensor(ctx.emit("add", y, ctx.const(shift.astype(np.float32).reshape(shape), "shift")), t.nhwc)


def _dense(ctx: Context, t: Tensor, weight_nk: Union[np.ndarray, ir.Value], bias: Optional[np.ndarray], wname: str,
           any_rank: bool = False):
    """dense of ``t`` by a constant [N, K] weight (or its value: a dequantized int8 weight); ``any_rank``: a
    product over the last axis of an input of rank >= 2."""
    t = ctx.to_nchw(t)
    if t.rank != 2 and not (any_rank and t.rank > 2):
        raise UnsupportedError(f"only 2-D matrix products are supported, got a {t.rank}-D input")
    wv = weight_nk if isinstance(weight_nk, ir.Value) else ctx.param(weight_nk, wname)
    bv = None if bias is None else ctx.param(bias, wname + ".bias")
    return Tensor(ctx.emit("dense", t.value, wv, bv), False)


@converts("Gemm")
def _gemm(ctx: Context, node, a, x, bmat, c=None):
    alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
    t = ctx.tensor(x)
    if t.rank != 2:
        raise UnsupportedError(f"Gemm needs a 2-D A, got a {t.rank}-D one")
    if a.get("transA", 0):
        t = Tensor(ctx.emit("transpose", ctx.to_nchw(t).value, axes=[1, 0]), False)
    wq = w = None
    if isinstance(bmat, _onnx_quant.DQConst):  # a quantized B behind a DequantizeLinear
        wq = _onnx_quant.dq_weight(ctx, bmat, bool(a.get("transB", 0)), alpha)
    if wq is None:
        bm = _const_input(ctx, _onnx_quant.resolve(ctx, bmat), "the Gemm B (weight)").astype(np.float32)
        w = bm if a.get("transB", 0) else bm.T
        if alpha != 1.0:
            w = (w.astype(np.float64) * alpha).astype(np.float32)
    n = int(wq.shape[0]) if wq is not None else w.shape[0]
    bias = None
    after = None
    if c is not None and beta != 0.0:
        if isinstance(c, np.ndarray):
            cc = (c.astype(np.float64) * beta).astype(np.float32)
            if cc.size == 1 or (cc.ndim >= 1 and cc.shape[-1] == n and cc.size == n):
                bias = np.broadcast_to(cc.reshape(-1), (n,)).astype(np.float32)
            else:
                after = cc
        else:
            ct = ctx.tensor(c)
            if beta != 1.0:
                ct = Tensor(ctx.emit("mul", ct.value, ctx.const(np.array(beta, np.float32))), False)
            after = ct
    y = _dense(ctx, t, wq if wq is not None else np.ascontiguousarray(w), bias, node.input[1])
    if after is not None:
        av = after.value if isinstance(after, Tensor) else ctx.const(after, "C")
        y = Tensor(ctx.emit("add", y.value, av), False)
    return y


@converts("MatMul")
def _matmul(ctx: Context, node, a, x, bmat):
    if isinstance(bmat, _onnx_quant.DQConst):  # a quantized B behind a DequantizeLinear
        wq = _onnx_quant.dq_weight(ctx, bmat, False) if bmat.data.ndim == 2 and x.rank >= 2 else None
        if wq is not None:
            return _dense(ctx, x, wq, None, node.input[1], any_rank=True)
        bmat = _onnx_quant.resolve(ctx, bmat)
    if isinstance(bmat, np.ndarray) and bmat.ndim == 2 and isinstance(x, Tensor) and x.rank >= 2:
        # a constant weight: a dense layer over the last axis
        return _dense(ctx, x, np.ascontiguousarray(bmat.astype(np.float32).T), None, node.input[1], any_rank=True)
    t = ctx.to_nchw(ctx.tensor(x, "A"))
    b = ctx.to_nchw(ctx.tensor(bmat, "B"))
    if t.rank < 2 or b.rank < 2:
        raise UnsupportedError(f"MatMul of a {t.rank}-D by a {b.rank}-D operand (mera's matmul takes rank >= 2)")
    return Tensor(ctx.emit("matmul", t.value, b.value), False)


@converts("Einsum")
def _einsum(ctx, node, a, *xs):
    """Einsum of one operand that only permutes, or of two whose shared indices are batch axes (in the
    output) or contracted (not in it): transposes and reshapes around one matmul."""
    eq = a["equation"].decode() if isinstance(a["equation"], bytes) else str(a["equation"])
    eq = eq.replace(" ", "")
    if "..." in eq or "->" not in eq:
        raise UnsupportedError(f"Einsum '{eq}': only explicit equations without ellipsis are supported")
    lhs, out = eq.split("->")
    terms = lhs.split(",")
    ts = [ctx.to_nchw(ctx.tensor(x)) for x in xs]
    if len(terms) != len(ts) or any(len(set(t)) != len(t) for t in terms + [out]) or \
            any(len(t) != x.rank for t, x in zip(terms, ts)):
        raise UnsupportedError(f"Einsum '{eq}' with {[x.rank for x in ts]}-D operands (repeated indices "
                               "or a rank mismatch)")
    if len(ts) == 1:
        if sorted(terms[0]) != sorted(out):
            raise UnsupportedError(f"Einsum '{eq}': a single operand is only permuted, not reduced")
        perm = [terms[0].index(c) for c in out]
        return ts[0] if perm == list(range(len(perm))) else Tensor(ctx.emit("transpose", ts[0].value, axes=perm))
    if len(ts) != 2:
        raise UnsupportedError(f"Einsum '{eq}' of {len(ts)} operands (one or two are supported)")
    (ta, tb), (x, y) = terms, ts
    size = {}
    for term, t in ((ta, x), (tb, y)):
        for c, n in zip(term, t.shape):
            if size.setdefault(c, n) != n:
                raise UnsupportedError(f"Einsum '{eq}': index '{c}' has sizes {size[c]} and {n}")
    batch = [c for c in out if c in ta and c in tb]
    left = [c for c in out if c in ta and c not in tb]
    right = [c for c in out if c in tb and c not in ta]
    contracted = [c for c in ta if c in tb and c not in out]
    if any(c not in out and c not in tb for c in ta) or any(c not in out and c not in ta for c in tb) or \
            any(c not in ta and c not in tb for c in out):
        raise UnsupportedError(f"Einsum '{eq}': an index summed over one operand alone")
    prod = lambda cs: int(np.prod([size[c] for c in cs])) if cs else 1  # noqa: E731

    def arrange(t, term, order, shape):
        perm = [term.index(c) for c in order]
        if perm != list(range(len(perm))):
            t = Tensor(ctx.emit("transpose", t.value, axes=perm))
        return _reshape_to(ctx, t, shape)

    bs = [size[c] for c in batch]
    am = arrange(x, ta, batch + left + contracted, bs + [prod(left), prod(contracted)])
    bm = arrange(y, tb, batch + contracted + right, bs + [prod(contracted), prod(right)])
    r = Tensor(ctx.emit("matmul", am.value, bm.value))
    got = batch + left + right
    r = _reshape_to(ctx, r, [size[c] for c in got])
    perm = [got.index(c) for c in out]
    return r if perm == list(range(len(perm))) else Tensor(ctx.emit("transpose", r.value, axes=perm))


def _broadcast_const(ctx: Context, t: Tensor, c: np.ndarray) -> ir.Value:
    """A constant operand arranged to broadcast against ``t`` in t's data layout."""
    c = c.astype(np.float32)
    if t.nhwc and c.ndim >= 1 and c.size > 1:
        if c.ndim > 4:
            raise UnsupportedError(f"a {c.ndim}-D constant broadcast against a 4-D tensor")
        c = c.reshape((1,) * (4 - c.ndim) + c.shape).transpose(0, 2, 3, 1)
    return ctx.const(np.ascontiguousarray(c))


def _binary(ctx: Context, op: str, x, y):
    # a quantized constant behind a DequantizeLinear: its integers behind a dequantize, or its float value
    if isinstance(x, _onnx_quant.DQConst) and isinstance(y, Tensor):
        v = _onnx_quant.dq_operand(ctx, y, x)
        if v is not None:
            return Tensor(ctx.emit(op, v, y.value), y.nhwc)
    if isinstance(y, _onnx_quant.DQConst) and isinstance(x, Tensor):
        v = _onnx_quant.dq_operand(ctx, x, y)
        if v is not None:
            return Tensor(ctx.emit(op, x.value, v), x.nhwc)
    x, y = _onnx_quant.resolve(ctx, x), _onnx_quant.resolve(ctx, y)
    if isinstance(x, np.ndarray) and isinstance(y, np.ndarray):
        raise AssertionError("folded")  # pragma: no cover
    if not isinstance(x, Tensor):
        tx = ctx.tensor(y)
        return Tensor(ctx.emit(op, _broadcast_const(ctx, tx, x), tx.value), tx.nhwc)
    if not isinstance(y, Tensor):
        return Tensor(ctx.emit(op, x.value, _broadcast_const(ctx, x, y)), x.nhwc)
    if x.nhwc != y.nhwc:
        if x.rank == 4 and y.rank == 4:
            x, y = ctx.to_layout(x), ctx.to_layout(y)
        else:
            x, y = ctx.to_nchw(x), ctx.to_nchw(y)
    elif x.nhwc and (x.rank != y.rank):
        x, y = ctx.to_nchw(x), ctx.to_nchw(y)
    return Tensor(ctx.emit(op, x.value, y.value), x.nhwc)


@converts("Add")
def _add(ctx, node, a, x, y):
    if _int_runtime(x, y):
        return _int_arith(ctx, "add", x, y)
    return _binary(ctx, "add", x, y)


@converts("Mul")
def _mul(ctx, node, a, x, y):
    if _int_runtime(x, y):
        return _int_arith(ctx, "mul", x, y)
    return _binary(ctx, "mul", x, y)


@converts("Sub")
def _sub(ctx, node, a, x, y):
    if _int_runtime(x, y):
        return _int_arith(ctx, "sub", x, y)
    if isinstance(y, np.ndarray):
        return _binary(ctx, "add", x, -y.astype(np.float32))
    return _binary(ctx, "sub", x, y)  # two run-time tensors (or a constant minuend): the host's float sub


@converts("Pow")
def _pow(ctx, node, a, x, y):
    if isinstance(y, np.ndarray) and y.size == 1 and float(y.reshape(-1)[0]) in (1.0, 2.0):
        return x if float(y.reshape(-1)[0]) == 1.0 else _binary(ctx, "mul", x, x)  # x*x is x**2 correctly rounded
    if isinstance(y, np.ndarray) and not np.issubdtype(y.dtype, np.floating):
        y = y.astype(np.float32)
    return _binary(ctx, "pow", x, y)


@converts("Div")
def _div(ctx, node, a, x, y):
    scalar = isinstance(x, Tensor) and int(np.prod(x.shape)) == 1
    if isinstance(y, np.ndarray) and not scalar:
        # by a constant: a mul by the reciprocal, which the DNA runs (within 1 ulp of the division)
        return _binary(ctx, "mul", x, (1.0 / y.astype(np.float64)).astype(np.float32))
    # two run-time tensors, or a one-element dividend (a quantization scale computed in the graph, which
    # must be onnxruntime's to the bit): the host's float div
    return _binary(ctx, "div", x, y)


def _variadic(ctx: Context, op: str, xs) -> Any:
    out = xs[0]
    for y in xs[1:]:
        out = _binary(ctx, op, out, y)
    return ctx.tensor(out) if len(xs) == 1 else out


@converts("Max")
def _max(ctx, node, a, *xs):
    return _variadic(ctx, "maximum", list(xs))


@converts("Min")
def _min(ctx, node, a, *xs):
    return _variadic(ctx, "minimum", list(xs))


def _float_unary(op: str):
    def conv(ctx, node, a, x):
        return _unary(ctx, op, x)
    return conv


for _onnx_op, _mera_op in (("Sqrt", "sqrt"), ("Exp", "exp"), ("Log", "log"), ("Tanh", "tanh"), ("Erf", "erf"),
                           ("Abs", "abs")):
    CONVERTERS[_onnx_op] = _float_unary(_mera_op)


def _unary(ctx: Context, op: str, x, **attrs):
    t = ctx.tensor(x)
    return Tensor(ctx.emit(op, t.value, **attrs), t.nhwc)


@converts("Relu")
def _relu(ctx, node, a, x):
    return _unary(ctx, "relu", x)


@converts("Sigmoid")
def _sigmoid(ctx, node, a, x):
    # float: onnxruntime's MLAS kernel, which graphs that quantize activations at run time
    # (DynamicQuantizeLinear) need bit for bit; quantized: fbgemm's, as every quantized sigmoid
    return _unary(ctx, "sigmoid", x, float_form="onnxruntime")


@converts("HardSwish")
def _hardswish(ctx, node, a, x):
    return _unary(ctx, "hardswish", x)


@converts("HardSigmoid")
def _hardsigmoid(ctx, node, a, x):
    alpha, beta = float(a.get("alpha", 0.2)), float(a.get("beta", 0.5))
    if abs(alpha - 1.0 / 6.0) <= 1e-6 and abs(beta - 0.5) <= 1e-6:
        return _unary(ctx, "hardsigmoid", x)  # PyTorch's relu6(x+3)/6: the IR op, bit-exact with fbgemm
    # any other slope (Paddle and Keras export alpha=0.2): max(0, min(1, alpha*x + beta)) as ONNX defines it
    y = _binary(ctx, "mul", x, np.array([alpha], np.float32))
    y = _binary(ctx, "add", y, np.array([beta], np.float32))
    return _unary(ctx, "clip", y, a_min=0.0, a_max=1.0)


@converts("LeakyRelu")
def _leaky_relu(ctx, node, a, x):
    return _unary(ctx, "leaky_relu", x, alpha=float(a.get("alpha", 0.01)))


def _clip_bounds(ctx: Context, a, lo=None, hi=None) -> Tuple[float, float]:
    lo_v = -math.inf if lo is None else float(_const_input(ctx, lo, "the Clip min").reshape(-1)[0])
    hi_v = math.inf if hi is None else float(_const_input(ctx, hi, "the Clip max").reshape(-1)[0])
    if lo_v > hi_v:  # ONNX: every value becomes max
        lo_v = hi_v
    return lo_v, hi_v


@converts("Clip")
def _clip(ctx, node, a, x, lo=None, hi=None):
    lo_v, hi_v = _clip_bounds(ctx, a, lo, hi)
    return _unary(ctx, "clip", x, a_min=lo_v, a_max=hi_v)


def _pool(ctx: Context, op: str, a, x, **extra):
    t = ctx.tensor(x)
    _check_4d(t, op)
    k = _pair_attr(a, "kernel_shape", [])
    s = _pair_attr(a, "strides", [1, 1])
    d = _pair_attr(a, "dilations", [1, 1])
    pads = _spatial_pads(a, t.shape[2:], k, s, d)
    attrs = dict(kernel=k, strides=s, padding=pads, ceil_mode=int(a.get("ceil_mode", 0)), layout=ctx.spatial())
    if op == "max_pool2d":
        attrs["dilation"] = d
    elif d != [1, 1]:
        raise UnsupportedError(f"AveragePool with dilations {d}: mera's avg_pool2d has no dilation")
    attrs.update(extra)
    t = ctx.to_layout(t)
    return Tensor(ctx.emit(op, t.value, **attrs), ctx.layout == "NHWC")


@converts("MaxPool")
def _maxpool(ctx, node, a, x):
    if len([o for o in node.output if o]) > 1:
        raise UnsupportedError("MaxPool with an Indices output")
    if ctx.tensor(x).rank == 3:
        return _as_1d(ctx, _maxpool, node, a, ctx.tensor(x))
    return _pool(ctx, "max_pool2d", a, x)


@converts("AveragePool")
def _avgpool(ctx, node, a, x):
    if ctx.tensor(x).rank == 3:
        return _as_1d(ctx, _avgpool, node, a, ctx.tensor(x))
    return _pool(ctx, "avg_pool2d", a, x, count_include_pad=int(a.get("count_include_pad", 0)))


@converts("GlobalAveragePool")
def _gap(ctx, node, a, x):
    t = ctx.tensor(x)
    if t.rank == 3:
        return _as_1d(ctx, _gap, node, a, t)
    _check_4d(t, "GlobalAveragePool")
    t = ctx.to_layout(t)
    return Tensor(ctx.emit("adaptive_avg_pool2d", t.value, output_size=[1, 1], layout=ctx.spatial()),
                  ctx.layout == "NHWC")


@converts("GlobalMaxPool")
def _gmp(ctx, node, a, x):
    """A max pool whose window is the whole map (exact in int8, so it quantizes and runs on the DNA
    where the window fits its buffer)."""
    t = ctx.tensor(x)
    if t.rank == 3:
        return _as_1d(ctx, _gmp, node, a, t)
    _check_4d(t, "GlobalMaxPool")
    h, w = t.shape[2:]
    t = ctx.to_layout(t)
    return Tensor(ctx.emit("max_pool2d", t.value, kernel=[h, w], strides=[h, w], padding=[0, 0, 0, 0],
                           dilation=[1, 1], ceil_mode=0, layout=ctx.spatial()), ctx.layout == "NHWC")


@converts("Concat")
def _concat(ctx, node, a, *xs):
    ts = [ctx.tensor(x) for x in xs]
    ref = next(t for t in ts if isinstance(t, Tensor))
    if any(t.nhwc for t in ts) and not all(t.nhwc for t in ts):
        ts = [ctx.to_layout(t) if t.rank == 4 else t for t in ts]
        if not all(t.nhwc for t in ts):
            ts = [ctx.to_nchw(t) for t in ts]
        ref = ts[0]
    return Tensor(ctx.emit("concat", *[t.value for t in ts], axis=ctx.axis(ref, int(a["axis"]))), ts[0].nhwc)


def _reshape_to(ctx: Context, t: Tensor, shape: Sequence[int]) -> Tensor:
    src = ctx.flat_source(t)
    if tuple(shape) == tuple(src.value.shape):
        return src
    return Tensor(ctx.emit("reshape", src.value, shape=[int(s) for s in shape]), False)


def _reshape_shape(in_shape: Sequence[int], spec: Sequence[int], allowzero: int) -> List[int]:
    out = []
    for i, s in enumerate(spec):
        if s == 0 and not allowzero:
            if i >= len(in_shape):
                raise UnsupportedError(f"Reshape: 0 at position {i} beyond the input's rank")
            out.append(int(in_shape[i]))
        elif s == 0:
            raise UnsupportedError("Reshape to a zero-sized axis (allowzero=1)")
        else:
            out.append(int(s))
    if out.count(-1) > 1:
        raise UnsupportedError(f"Reshape with more than one -1: {spec}")
    if -1 in out:
        known = int(np.prod([s for s in out if s != -1]))
        out[out.index(-1)] = int(np.prod(in_shape)) // max(known, 1)
    if int(np.prod(out)) != int(np.prod(in_shape)):
        raise UnsupportedError(f"Reshape of {tuple(in_shape)} to {spec}: sizes differ")
    return out


@converts("Reshape")
def _reshape(ctx, node, a, x, shape):
    t = ctx.tensor(x)
    spec = _ints(_const_input(ctx, shape, "the Reshape shape"))
    return _reshape_to(ctx, t, _reshape_shape(t.shape, spec, int(a.get("allowzero", 0))))


@converts("Flatten")
def _flatten(ctx, node, a, x):
    t = ctx.tensor(x)
    ax = int(a.get("axis", 1))
    ax = ax + t.rank if ax < 0 else ax
    sh = t.shape
    return _reshape_to(ctx, t, [int(np.prod(sh[:ax])), int(np.prod(sh[ax:]))])


@converts("Transpose")
def _transpose(ctx, node, a, x):
    t = ctx.tensor(x)
    perm = [int(p) for p in a.get("perm", list(range(t.rank))[::-1])]
    axes = [ctx.axis(t, p) for p in perm]
    if t.nhwc and perm == [0, 2, 3, 1]:
        return Tensor(t.value, False)  # the NHWC data already is this transpose
    if axes == list(range(t.rank)):
        return Tensor(t.value, False)
    return Tensor(ctx.emit("transpose", t.value, axes=axes), False)


def _pad_by_copies(ctx: Context, t: Tensor, before: List[int], after: List[int], mode: str) -> Tensor:
    """Edge and reflect padding as a concat of slices of the input along each padded axis (ONNX axes):
    copies of bytes, exact in every dtype."""
    for d in range(t.rank):
        b, e = before[d], after[d]
        if not b and not e:
            continue
        n = t.shape[d]
        if mode == "reflect" and (b >= n or e >= n):
            raise UnsupportedError(f"Pad mode 'reflect' by {max(b, e)} on an axis of {n} (at most {n - 1})")
        ax = ctx.axis(t, d)
        if mode == "edge":
            src = [0] * b + [None] + [n - 1] * e
        else:  # reflect: ... x2 x1 | x0 x1 ... xn-1 | xn-2 xn-3 ...
            src = list(range(b, 0, -1)) + [None] + list(range(n - 2, n - 2 - e, -1))
        parts = [t.value if i is None else ctx.emit("slice", t.value, axis=ax, begin=i, end=i + 1) for i in src]
        t = Tensor(ctx.emit("concat", *parts, axis=ax), t.nhwc)
    return t


@converts("Pad")
def _pad(ctx, node, a, x, pads=None, value=None, axes=None):
    mode = a.get("mode", "constant")
    if isinstance(mode, bytes):
        mode = mode.decode()
    if mode not in ("constant", "edge", "reflect"):
        raise UnsupportedError(f"Pad mode '{mode}' (mera pads in constant, edge and reflect modes)")
    t = ctx.tensor(x)
    r = t.rank
    if t.rows is not None:
        return _pad_rows(ctx, t, np.asarray(_const_input(ctx, pads, "the Pad pads")).reshape(-1), mode, value, axes)
    p = _ints(_const_input(ctx, pads, "the Pad pads"))
    fill = 0.0 if value is None else float(_const_input(ctx, value, "the Pad value").reshape(-1)[0])
    ax = list(range(r)) if axes is None else [int(v) + r if int(v) < 0 else int(v)
                                              for v in _ints(_const_input(ctx, axes, "the Pad axes"))]
    before, after = [0] * r, [0] * r
    for i, d in enumerate(ax):
        before[d], after[d] = p[i], p[i + len(ax)]
    if min(before + after) < 0:
        raise UnsupportedError("Pad with negative pads (cropping)")
    if mode != "constant":
        return _pad_by_copies(ctx, t, before, after, mode)
    if t.nhwc:
        perm = [0, 2, 3, 1]
        before, after = [before[q] for q in perm], [after[q] for q in perm]
    return Tensor(ctx.emit("pad", t.value, pads=before + after, value=fill), t.nhwc)


def _pad_rows(ctx: Context, t: Tensor, pads: np.ndarray, mode: str, value, axes) -> Tensor:
    """Pad of rows (valid count known at run time) by a run-time amount that makes their size fixed (the Ultralytics
    exports pad the kept detections to max_det rows): the invalid rows zeroed, then cut or padded to that size."""
    r, count = t.rows
    scale = ctx.__dict__.get("count_scale", {})
    if mode != "constant" or value is not None or axes is not None or len(pads) != 2 * t.rank:
        raise UnsupportedError("Pad of NonZero's or NonMaxSuppression's rows other than a constant 0 pad of all axes")
    end = pads[t.rank + r]
    base, unit = scale.get(count.id, (count.id, 1))
    if (any(int(v) != 0 for i, v in enumerate(pads) if i != t.rank + r) or not isinstance(end, _Dyn)
            or end.count.id != base or end.a + unit != 0 or end.b < 0):
        raise UnsupportedError("Pad of NonZero's or NonMaxSuppression's rows by other than the amount that fills "
                               "them to a fixed size")
    size = end.b  # unit * count + (end.b - unit * count)
    n = int(t.shape[r])
    shape = [1] * t.rank
    shape[r] = n
    idx = ctx.const(np.arange(n, dtype=np.int64).reshape(shape), "row_index")
    keep = ctx.emit("cast", ctx.emit("compare", idx, count, kind="less"), to=t.value.dtype)
    v = ctx.emit("mul", t.value, keep) if t.value.dtype == "float32" else ctx.emit("int_arith", t.value, keep,
                                                                                      kind="mul")
    if size < n:
        v = ctx.emit("slice", v, axis=r, begin=0, end=size)
    elif size > n:
        before, after = [0] * t.rank, [0] * t.rank
        after[r] = size - n
        v = ctx.emit("pad", v, pads=before + after, value=0.0)
    return Tensor(v, False)


_RESIZE_COORDS = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "half_pixel_symmetric",
                  "tf_half_pixel_for_nn", "tf_crop_and_resize")
_RESIZE_NEAREST = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


@converts("Resize", "Upsample")
def _resize(ctx, node, a, x, *rest):
    """Resize / Upsample of the two spatial axes, as onnxruntime computes it (upsample's ONNX coordinate
    modes, csrc/kernels/ref/upsample.c)."""
    t = ctx.tensor(x)
    _check_4d(t, node.op_type)
    roi_in = None
    if node.op_type == "Upsample":  # scales of at least 1: asymmetric coordinates, nearest truncates
        scales_in, sizes_in = (rest[0] if rest else np.array(a.get("scales", []), np.float32)), None
        ctm, nearest_mode = "asymmetric", "floor"
    else:
        roi_in = rest[0] if rest else None
        scales_in = rest[1] if len(rest) > 1 else None
        sizes_in = rest[2] if len(rest) > 2 else None
        ctm = a.get("coordinate_transformation_mode", "half_pixel")
        nearest_mode = a.get("nearest_mode", "round_prefer_floor")
    mode = a.get("mode", "nearest")
    if mode == "bilinear":
        mode = "linear"
    if mode not in ("nearest", "linear", "cubic"):
        raise UnsupportedError(f"Resize mode '{mode}'")
    if a.get("antialias", 0):
        raise UnsupportedError("Resize with antialias=1")
    if a.get("keep_aspect_ratio_policy", "stretch") != "stretch":
        raise UnsupportedError(f"Resize keep_aspect_ratio_policy '{a['keep_aspect_ratio_policy']}'")
    if ctm not in _RESIZE_COORDS:
        raise UnsupportedError(f"Resize coordinate_transformation_mode '{ctm}'")
    if mode == "nearest" and nearest_mode not in _RESIZE_NEAREST:
        raise UnsupportedError(f"Resize nearest_mode '{nearest_mode}'")
    axes = [int(v) % 4 for v in a.get("axes", [0, 1, 2, 3])]
    in_shape = t.shape
    scales = sizes = None
    if scales_in is not None and np.asarray(_const_input(ctx, scales_in, "the Resize scales")).size:
        sc = np.asarray(scales_in, np.float32).reshape(-1)
        full = [1.0] * 4
        for d, v in zip(axes, sc):
            full[d] = float(v)
        if full[0] != 1.0 or full[1] != 1.0:
            raise UnsupportedError(f"Resize of the batch or channel axis (scales {full})")
        scales = full[2:]
        out_hw = [int(math.floor(in_shape[2] * scales[0])), int(math.floor(in_shape[3] * scales[1]))]
        if min(out_hw) < 1:
            raise UnsupportedError(f"Resize scales {scales} shrink {tuple(in_shape[2:])} to nothing")
    elif sizes_in is not None:
        sz = _ints(_const_input(ctx, sizes_in, "the Resize sizes"))
        full = list(in_shape)
        for d, v in zip(axes, sz):
            full[d] = int(v)
        if full[0] != in_shape[0] or full[1] != in_shape[1]:
            raise UnsupportedError(f"Resize of the batch or channel axis (sizes {full})")
        sizes = full[2:]
    else:
        raise UnsupportedError("Resize needs constant scales or sizes")
    attrs: Dict[str, Any] = {"layout": ctx.spatial(), "coordinate_mode": ctm,
                             "method": {"nearest": "nearest", "linear": "bilinear", "cubic": "cubic"}[mode]}
    if mode == "cubic":
        attrs["cubic_coeff_a"] = float(a.get("cubic_coeff_a", -0.75))
        attrs["exclude_outside"] = int(a.get("exclude_outside", 0))
    if mode == "nearest":
        attrs["nearest_mode"] = nearest_mode
    if ctm == "tf_crop_and_resize":
        roi = np.asarray(_const_input(ctx, roi_in, "the Resize roi") if roi_in is not None else [],
                         np.float32).reshape(-1)
        if roi.size != 2 * len(axes):
            raise UnsupportedError(f"Resize tf_crop_and_resize with a roi of {roi.size} values for {len(axes)} axes")
        start, end = [0.0] * 4, [1.0] * 4
        for i, d in enumerate(axes):
            start[d], end[d] = float(roi[i]), float(roi[i + len(axes)])
        if start[:2] != [0.0, 0.0] or end[:2] != [1.0, 1.0]:
            raise UnsupportedError(f"Resize tf_crop_and_resize cropping the batch or channel axis (roi {roi})")
        attrs["roi"] = start[2:] + end[2:]
        attrs["extrapolation_value"] = float(a.get("extrapolation_value", 0.0))
    if scales is not None:
        attrs["scales"] = [float(s) for s in scales]
    else:
        attrs["size"] = [int(s) for s in sizes]
    t = ctx.to_layout(t)
    return Tensor(ctx.emit("upsample", t.value, **attrs), ctx.layout == "NHWC")


@converts("Softmax")
def _softmax(ctx, node, a, x):
    t = ctx.tensor(x)
    ax = int(a.get("axis", -1 if ctx.opset >= 13 else 1))
    ax = ax + t.rank if ax < 0 else ax
    if ctx.opset < 13 and ax != t.rank - 1 and int(np.prod(t.shape[ax + 1:])) != 1:
        raise UnsupportedError(f"Softmax (opset {ctx.opset}) over the flattened axes {ax}.. of a {t.rank}-D "
                               "tensor")
    return Tensor(ctx.emit("softmax", t.value, axis=ctx.axis(t, ax)), t.nhwc)


@converts("ReduceMean")
def _reduce_mean(ctx, node, a, x, axes_in=None):
    t = ctx.tensor(x)
    keep = int(a.get("keepdims", 1))
    if ctx.opset >= 18:
        axes = None if axes_in is None else _ints(_const_input(ctx, axes_in, "the ReduceMean axes"))
        if not axes:
            if a.get("noop_with_empty_axes", 0):
                return t
            axes = None
    else:
        axes = a.get("axes")
    axes = list(range(t.rank)) if axes is None else [int(v) for v in axes]
    data_axes = sorted(ctx.axis(t, v) for v in axes)
    v = ctx.emit("mean", t.value, axes=data_axes, keepdims=keep)
    return Tensor(v, t.nhwc and bool(keep))


_REDUCE_KINDS = {"ReduceSum": "sum", "ReduceMax": "max", "ReduceMin": "min", "ReduceProd": "prod",
                 "ReduceL1": "l1", "ReduceL2": "l2", "ReduceLogSum": "log_sum", "ReduceLogSumExp": "log_sum_exp",
                 "ReduceSumSquare": "sum_square"}


@converts(*_REDUCE_KINDS)
def _reduce(ctx, node, a, x, axes_in=None):
    """Run-time reductions: mera's float reduce op on the host (ReduceMean keeps its quantizable mean)."""
    t = ctx.tensor(x)
    keep = int(a.get("keepdims", 1))
    # axes became an input in opset 13 (ReduceSum) or 18 (the others)
    if axes_in is not None or ctx.opset >= (13 if node.op_type == "ReduceSum" else 18):
        axes = [] if axes_in is None else _ints(_const_input(ctx, axes_in, f"the {node.op_type} axes"))
    else:
        axes = [int(v) for v in a.get("axes", [])]
    if not axes:
        if a.get("noop_with_empty_axes", 0):
            return t
        axes = list(range(t.rank))
    if t.nhwc and not keep:  # dropping axes of NHWC data would leave them in another order than ONNX's
        t = ctx.to_nchw(t)
    data_axes = sorted(ctx.axis(t, v) for v in axes)
    v = ctx.emit("reduce", t.value, kind=_REDUCE_KINDS[node.op_type], axes=data_axes, keepdims=keep)
    return Tensor(v, t.nhwc and bool(keep))


@converts("Slice")
def _slice(ctx, node, a, x, starts=None, ends=None, axes=None, steps=None):
    t = ctx.tensor(x)
    st = _ints(_const_input(ctx, starts, "the Slice starts"))
    en = _ints(_const_input(ctx, ends, "the Slice ends"))
    ax = None if axes is None else _ints(_const_input(ctx, axes, "the Slice axes"))
    sp = None if steps is None else _ints(_const_input(ctx, steps, "the Slice steps"))
    ax = list(range(len(st))) if ax is None else ax
    sp = [1] * len(st) if sp is None else sp
    if any(s < 1 for s in sp):
        raise UnsupportedError(f"Slice with steps {sp} (mera's slice takes steps >= 1)")
    shape = t.shape
    v = t.value
    for b, e, d, step in zip(st, en, ax, sp):
        d = d + t.rank if d < 0 else d
        n = shape[d]
        b = max(0, min(b + n if b < 0 else b, n))
        e = max(0, min(e + n if e < 0 else e, n))
        if b == 0 and e == n and step == 1:
            continue
        if e <= b:  # an empty tensor: a constant (mera tensors are not empty) that Concat leaves out
            out = list(shape)
            out[d] = 0
            return _empty(out, np.float32 if v.dtype == "float32" else np.int64)
        v = ctx.emit("slice", v, axis=ctx.axis(t, d), begin=b, end=e, step=step)
    return Tensor(v, t.nhwc)


def _repeat(ctx: Context, t: Tensor, axis: int, n: int) -> Tensor:
    """``t`` repeated ``n`` times along ONNX axis ``axis``: concats, which copy bytes exactly."""
    d = ctx.axis(t, axis)
    parts = [t.value] * n
    while len(parts) > 1:
        parts = [ctx.emit("concat", *parts[i:i + 64], axis=d) if len(parts[i:i + 64]) > 1 else parts[i]
                 for i in range(0, len(parts), 64)]
    return Tensor(parts[0], t.nhwc)


@converts("Expand")
def _expand(ctx, node, a, x, shape):
    t = ctx.tensor(x)
    want = _ints(_const_input(ctx, shape, "the Expand shape"))
    r = max(t.rank, len(want))
    if r > t.rank:
        t = _reshape_to(ctx, t, (1,) * (r - t.rank) + t.shape)
    for d, (xd, wd) in enumerate(zip(t.shape, [1] * (r - len(want)) + want)):
        if xd == 1 and wd > 1:
            t = _repeat(ctx, t, d, wd)
        elif wd not in (1, xd):
            raise UnsupportedError(f"Expand of {t.shape} to {want}: axis {d} has size {xd}, which broadcasts "
                                   f"only to itself or from 1")
    return t


@converts("Tile")
def _tile(ctx, node, a, x, repeats):
    t = ctx.tensor(x)
    reps = _ints(_const_input(ctx, repeats, "the Tile repeats"))
    if len(reps) != t.rank:
        raise UnsupportedError(f"Tile repeats {reps} do not match the input's rank {t.rank}")
    for d, n in enumerate(reps):
        if n < 1:
            raise UnsupportedError(f"Tile with repeats {reps}: mera tensors have no empty axes")
        if n > 1:
            t = _repeat(ctx, t, d, n)
    return t


def _unsqueezed_shape(rank: int, shape: Sequence[int], axes: Sequence[int]) -> List[int]:
    r = rank + len(axes)
    ax = sorted(v + r if v < 0 else v for v in axes)
    if len(set(ax)) != len(ax) or any(not 0 <= v < r for v in ax):
        raise UnsupportedError(f"Unsqueeze axes {list(axes)} are invalid for rank {rank}")
    out, it = [], iter(shape)
    for i in range(r):
        out.append(1 if i in ax else next(it))
    return out


@converts("Unsqueeze")
def _unsqueeze(ctx, node, a, x, axes=None):
    t = ctx.tensor(x)
    ax = _ints(_const_input(ctx, axes, "the Unsqueeze axes")) if axes is not None else list(a["axes"])
    return _reshape_to(ctx, t, _unsqueezed_shape(t.rank, t.shape, ax))


@converts("Squeeze")
def _squeeze(ctx, node, a, x, axes=None):
    t = ctx.tensor(x)
    ax = _ints(_const_input(ctx, axes, "the Squeeze axes")) if axes is not None else a.get("axes")
    shape = t.shape
    ax = [i for i, n in enumerate(shape) if n == 1] if ax is None else [v + t.rank if v < 0 else v for v in ax]
    if any(not 0 <= v < t.rank or shape[v] != 1 for v in ax):
        raise UnsupportedError(f"Squeeze axes {ax} of a tensor of shape {shape}: only axes of size 1 squeeze")
    out = [n for i, n in enumerate(shape) if i not in ax]
    if not out:
        raise UnsupportedError(f"Squeeze of {shape} to a 0-d tensor: mera tensors have at least one axis")
    return _reshape_to(ctx, t, out)


@converts("Split")
def _split(ctx, node, a, x, split=None):
    t = ctx.tensor(x)
    axis = int(a.get("axis", 0))
    d = axis + t.rank if axis < 0 else axis
    n = t.shape[d] if 0 <= d < t.rank else 0
    outs = [o for o in node.output]
    if split is not None:
        sizes = _ints(_const_input(ctx, split, "the Split sizes"))
    elif "split" in a:
        sizes = [int(v) for v in a["split"]]
    else:
        k = int(a.get("num_outputs", len(outs)))
        chunk = -(-n // k)
        sizes = [min(chunk, n - i * chunk) for i in range(k)]
    if len(sizes) != len(outs) or sum(sizes) != n or min(sizes) < 1:
        raise UnsupportedError(f"Split of an axis of {n} into {sizes} ({len(outs)} outputs)")
    ax, begin, parts = ctx.axis(t, d), 0, []
    for size in sizes:
        parts.append(Tensor(ctx.emit("slice", t.value, axis=ax, begin=begin, end=begin + size), t.nhwc))
        begin += size
    for name, part in zip(outs[1:], parts[1:]):
        if name:
            ctx.env[name] = part
    return parts[0]


def _take(ctx: Context, v: ir.Value, ax: int, n: int, idx: List[int]) -> ir.Value:
    """Elements ``idx`` (in range) of axis ``ax`` (of size n) of ``v``: each run of indices with a constant
    positive step is one (strided) slice, and the runs are joined by concats of at most 64 inputs each
    (nested when there are more); byte moves, exact in every dtype. The whole axis in order is ``v``."""
    if idx == list(range(n)):
        return v
    runs: List[List[int]] = []
    i = 0
    while i < len(idx):
        j, step = i + 1, (idx[i + 1] - idx[i] if i + 1 < len(idx) else 1)
        if step <= 0:
            step, j = 1, i + 1
        else:
            while j < len(idx) and idx[j] - idx[j - 1] == step:
                j += 1
        runs.append([idx[i], idx[j - 1] + 1, step])
        i = j
    parts = [ctx.emit("slice", v, axis=ax, begin=b, end=e, **({"step": st} if st != 1 else {}))
             for b, e, st in runs]
    while len(parts) > 1:
        parts = [p[0] if len(p) == 1 else ctx.emit("concat", *p, axis=ax)
                 for p in (parts[k:k + 64] for k in range(0, len(parts), 64))]
    return parts[0]


@converts("Gather")
def _gather(ctx, node, a, x, idx):
    t = ctx.tensor(x)
    if isinstance(idx, Tensor):
        return _gather_runtime(ctx, a, t, idx)
    ind = _const_input(ctx, idx, "the Gather indices")
    axis = int(a.get("axis", 0))
    d = axis + t.rank if axis < 0 else axis
    if not 0 <= d < t.rank:
        raise UnsupportedError(f"Gather axis {axis} of a rank-{t.rank} tensor")
    n, ax = t.shape[d], ctx.axis(t, d)
    flat = [int(i) + n if int(i) < 0 else int(i) for i in np.asarray(ind).reshape(-1)]
    if any(not 0 <= i < n for i in flat) or not flat:
        raise UnsupportedError(f"Gather indices {np.asarray(ind).tolist()} out of range for an axis of {n}")
    g = Tensor(_take(ctx, t.value, ax, n, flat), t.nhwc)
    shape = list(t.shape[:d]) + list(np.shape(ind)) + list(t.shape[d + 1:])
    if list(g.shape) == shape:
        return g
    if not shape:
        raise UnsupportedError("Gather to a 0-d tensor: mera tensors have at least one axis")
    return _reshape_to(ctx, g, shape)


def _gather_runtime(ctx: Context, a, t: Tensor, idx: Tensor) -> Tensor:
    """Gather by indices computed at run time (NonMaxSuppression's, say): the gather op, int64 indices; an index out
    of range is an error when the graph runs."""
    if idx.value.dtype == "int32":  # ONNX allows int32 indices: widened, every value kept
        idx = Tensor(ctx.emit("cast", idx.value, to="int64"), idx.nhwc, idx.rows)
    if idx.value.dtype != "int64":
        raise UnsupportedError(f"Gather by run-time {idx.value.dtype} indices (mera's gather takes int64 ones)")
    t, idx = ctx.to_nchw(t), ctx.to_nchw(idx)
    axis = int(a.get("axis", 0))
    d = axis + t.rank if axis < 0 else axis
    if not 0 <= d < t.rank:
        raise UnsupportedError(f"Gather axis {axis} of a rank-{t.rank} tensor")
    return Tensor(ctx.emit("gather", t.value, idx.value, axis=d), False)


def _space_depth(ctx: Context, t: Tensor, b: int, to_depth: bool, mode: str = "DCR") -> Tensor:
    """DepthToSpace / SpaceToDepth as reshape, transpose, reshape of NCHW data (moves of bytes)."""
    _check_4d(t, "DepthToSpace/SpaceToDepth")
    t = ctx.to_nchw(t)
    N, C, H, W = t.shape
    if to_depth:
        if H % b or W % b:
            raise UnsupportedError(f"SpaceToDepth by {b} of {H}x{W}")
        v = ctx.emit("reshape", t.value, shape=[N, C, H // b, b, W // b, b])
        v = ctx.emit("transpose", v, axes=[0, 3, 5, 1, 2, 4] if mode == "DCR" else [0, 1, 3, 5, 2, 4])
        return Tensor(ctx.emit("reshape", v, shape=[N, C * b * b, H // b, W // b]), False)
    if C % (b * b):
        raise UnsupportedError(f"DepthToSpace by {b} of {C} channels")
    if mode == "DCR":
        v = ctx.emit("reshape", t.value, shape=[N, b, b, C // (b * b), H, W])
        v = ctx.emit("transpose", v, axes=[0, 3, 4, 1, 5, 2])
    else:  # CRD
        v = ctx.emit("reshape", t.value, shape=[N, C // (b * b), b, b, H, W])
        v = ctx.emit("transpose", v, axes=[0, 1, 4, 2, 5, 3])
    return Tensor(ctx.emit("reshape", v, shape=[N, C // (b * b), H * b, W * b]), False)


@converts("DepthToSpace")
def _depth_to_space(ctx, node, a, x):
    mode = a.get("mode", "DCR")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    return _space_depth(ctx, ctx.tensor(x), int(a["blocksize"]), False, mode)


@converts("SpaceToDepth")
def _space_to_depth(ctx, node, a, x):
    mode = a.get("mode", "DCR")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    return _space_depth(ctx, ctx.tensor(x), int(a["blocksize"]), True, mode)


@converts("PRelu")
def _prelu(ctx, node, a, x, slope):
    # relu(x) + (-slope) * relu(-x): slope * min(x, 0) exactly, with ops the DNA runs
    t = ctx.tensor(x)
    s_ = _const_input(ctx, slope, "the PRelu slope").astype(np.float32)
    neg = _unary(ctx, "relu", _binary(ctx, "mul", t, np.array([-1.0], np.float32)))
    return _binary(ctx, "add", _unary(ctx, "relu", t), _binary(ctx, "mul", neg, -s_))


@converts("Softplus")
def _softplus(ctx, node, a, x):
    return _unary(ctx, "log", _binary(ctx, "add", _unary(ctx, "exp", x), np.array([1.0], np.float32)))


@converts("Mish")
def _mish(ctx, node, a, x):
    return _binary(ctx, "mul", x, _unary(ctx, "tanh", _softplus(ctx, node, a, x)))


@converts("InstanceNormalization")
def _instance_norm(ctx, node, a, x, scale, bias):
    t = ctx.to_nchw(ctx.tensor(x))
    if t.rank < 3:
        raise UnsupportedError(f"InstanceNormalization of a rank-{t.rank} tensor")
    y = _normalize(ctx, t, list(range(2, t.rank)), float(a.get("epsilon", 1e-5)))
    c = t.shape[1]
    sh = [1, c] + [1] * (t.rank - 2)
    y = _binary(ctx, "mul", y, _const_input(ctx, scale, "the InstanceNormalization scale").reshape(sh))
    return _binary(ctx, "add", y, _const_input(ctx, bias, "the InstanceNormalization bias").reshape(sh))


def _normalize(ctx: Context, t: Tensor, axes: List[int], eps: float) -> Tensor:
    """(t - mean) / sqrt(var + eps) over ``axes`` of NCHW-ordered ``t``, in float ops."""
    mean = Tensor(ctx.emit("mean", t.value, axes=axes, keepdims=1))
    d = _binary(ctx, "sub", t, mean)
    var = Tensor(ctx.emit("mean", _binary(ctx, "mul", d, d).value, axes=axes, keepdims=1))
    return _binary(ctx, "div", d, _unary(ctx, "sqrt", _binary(ctx, "add", var, np.array([eps], np.float32))))


@converts("LayerNormalization")
def _layer_norm(ctx, node, a, x, scale, bias=None):
    """(x - mean) / sqrt(var + eps) * scale + bias over the axes from ``axis`` on; the optional Mean and
    InvStdDev outputs too."""
    t = ctx.to_nchw(ctx.tensor(x))
    axis = int(a.get("axis", -1))
    axis = axis + t.rank if axis < 0 else axis
    if not 0 <= axis < t.rank:
        raise UnsupportedError(f"LayerNormalization axis {a.get('axis')} of a rank-{t.rank} tensor")
    axes, eps = list(range(axis, t.rank)), float(a.get("epsilon", 1e-5))
    y = _normalize(ctx, t, axes, eps)
    extra = list(node.output[1:3]) + [""] * (3 - len(node.output))
    if any(extra):
        mean = Tensor(ctx.emit("mean", t.value, axes=axes, keepdims=1))
        if extra[0]:
            ctx.env[extra[0]] = mean
        if extra[1]:
            d = _binary(ctx, "sub", t, mean)
            var = Tensor(ctx.emit("mean", _binary(ctx, "mul", d, d).value, axes=axes, keepdims=1))
            std = _unary(ctx, "sqrt", _binary(ctx, "add", var, np.array([eps], np.float32)))
            ctx.env[extra[1]] = _binary(ctx, "div", np.array([1.0], np.float32), std)
    y = _binary(ctx, "mul", y, _const_input(ctx, scale, "the LayerNormalization scale").astype(np.float32))
    if bias is None:
        return y
    return _binary(ctx, "add", y, _const_input(ctx, bias, "the LayerNormalization bias").astype(np.float32))


@converts("GroupNormalization")
def _group_norm(ctx, node, a, x, scale, bias):
    t = ctx.to_nchw(ctx.tensor(x))
    g = int(a["num_groups"])
    shape = list(t.shape)
    if t.rank < 3 or shape[1] % g:
        raise UnsupportedError(f"GroupNormalization of {shape} in {g} groups")
    grouped = _reshape_to(ctx, t, [shape[0], g, -1])
    y = _reshape_to(ctx, _normalize(ctx, grouped, [2], float(a.get("epsilon", 1e-5))), shape)
    sc = _const_input(ctx, scale, "the GroupNormalization scale").astype(np.float32)
    bi = _const_input(ctx, bias, "the GroupNormalization bias").astype(np.float32)
    if sc.size == g and g != shape[1]:  # opset 18: one scale per group
        sc, bi = np.repeat(sc, shape[1] // g), np.repeat(bi, shape[1] // g)
    sh = [1, shape[1]] + [1] * (t.rank - 2)
    return _binary(ctx, "add", _binary(ctx, "mul", y, sc.reshape(sh)), bi.reshape(sh))


@converts("Gelu")
def _gelu(ctx, node, a, x):
    # opset 20's Gelu, and the erf / tanh chains that _onnx_gelu.fuse_gelu reads as one
    approx = a.get("approximate", "none")
    approx = approx.decode() if isinstance(approx, bytes) else approx
    if approx not in ("none", "tanh"):
        raise UnsupportedError(f"Gelu with approximate={approx!r} (mera reads none and tanh)")
    return _unary(ctx, "gelu", x, approximate=approx)


@converts("Reciprocal")
def _reciprocal(ctx, node, a, x):
    return _binary(ctx, "div", np.array([1.0], np.float32), x)


@converts("Neg")
def _neg(ctx, node, a, x):
    return _binary(ctx, "mul", x, np.array([-1.0], np.float32))


@converts("Identity", "Dropout")
def _identity(ctx, node, a, x, *rest):
    if node.op_type == "Dropout" and len([o for o in node.output if o]) > 1:
        raise UnsupportedError("Dropout with a mask output")
    return x


@converts("Shape")
def _shape(ctx, node, a, x):
    if isinstance(x, Tensor) and x.rows is not None:  # the rows' size is their run-time count
        shape = np.array(list(x.shape), dtype=object)
        r, count = x.rows
        shape[r] = _Dyn(1, 0, count, int(x.shape[r]))
        return shape[a.get("start", 0):a.get("end", None)]
    shape = np.array(ctx.tensor(x).shape if isinstance(x, Tensor) else np.shape(x), np.int64)
    start, end = a.get("start", 0), a.get("end", None)
    return shape[start:end]


# -- constant folding ----------------------------------------------------------------

@folds("Constant")
def _f_constant(a):
    for key, v in a.items():
        if key == "value":
            return v
        if key == "value_float":
            return np.array(v, np.float32)
        if key == "value_floats":
            return np.array(v, np.float32)
        if key == "value_int":
            return np.array(v, np.int64)
        if key == "value_ints":
            return np.array(v, np.int64)
    raise UnsupportedError(f"Constant with attributes {sorted(a)}")


FOLDERS.update({
    "Identity": lambda a, x: x,
    "Add": lambda a, x, y: np.asarray(x + y, np.result_type(x, y)),
    "Sub": lambda a, x, y: np.asarray(x - y, np.result_type(x, y)),
    "Mul": lambda a, x, y: np.asarray(x * y, np.result_type(x, y)),
    "Div": lambda a, x, y: (np.asarray(np.trunc(x / y), x.dtype) if np.issubdtype(x.dtype, np.integer)
                            else np.asarray(x / y, x.dtype)),
    "Gather": lambda a, x, i: np.take(x, i, axis=int(a.get("axis", 0))),
    "Concat": lambda a, *xs: np.concatenate([np.atleast_1d(v) for v in xs], axis=int(a["axis"])),
    "Cast": lambda a, x: (x if x.dtype == object and any(isinstance(v, _Dyn) for v in x.reshape(-1))
                          else x.astype(_onnx().helper.tensor_dtype_to_np_dtype(int(a["to"])))),
    "Reshape": lambda a, x, s: x.reshape(_reshape_shape(x.shape, _ints(s), int(a.get("allowzero", 0)))),
    "Transpose": lambda a, x: np.transpose(x, a.get("perm")),
    "Floor": lambda a, x: np.floor(x),
    "Round": lambda a, x: np.round(x),  # halves to even, as ONNX
    "Sqrt": lambda a, x: np.sqrt(x),
    "Neg": lambda a, x: -x,
    "Relu": lambda a, x: np.maximum(x, 0),
})


def _all_constant(ins: List[Any]) -> bool:
    """Inputs all known at import (constants, quantized constants or omitted), at least one present."""
    return (any(v is not None for v in ins)
            and all(v is None or isinstance(v, (np.ndarray, _onnx_quant.DQConst)) for v in ins))


#: ops never folded even on constant inputs: random draws, and the quantization ops, which the
#: quantized-model import reads as a pattern (mera/frontend/_onnx_quant.py)
_NOT_FOLDED = frozenset({"RandomNormalLike", "RandomUniformLike", "Bernoulli", "Multinomial", "QuantizeLinear",
                         "DequantizeLinear", "DynamicQuantizeLinear"})


def _f_range(a, start, limit, delta):
    start, limit, delta = (np.asarray(v).reshape(()) for v in (start, limit, delta))
    if delta == 0:
        raise UnsupportedError("Range with delta 0")
    n = max(int(math.ceil((float(limit) - float(start)) / float(delta))), 0)
    return (start + np.arange(n, dtype=np.result_type(start, delta)) * delta).astype(start.dtype)


def _f_expand(a, x, shape):
    want = _ints(shape)
    r = max(x.ndim, len(want))
    xs = (1,) * (r - x.ndim) + x.shape
    ws = [1] * (r - len(want)) + want
    out = [max(xd, wd) if 1 in (xd, wd) else xd for xd, wd in zip(xs, ws)]
    return np.broadcast_to(x.reshape(xs), out).copy()


def _f_where(a, c, x, y):
    return np.where(c.astype(bool), x, y).astype(np.result_type(x, y))


FOLDERS.update({
    "Range": _f_range,
    "Expand": _f_expand,
    "Tile": lambda a, x, reps: np.tile(x, _ints(reps)),
    "Where": _f_where,
    "Equal": lambda a, x, y: np.equal(x, y),
    "Less": lambda a, x, y: np.less(x, y),
    "LessOrEqual": lambda a, x, y: np.less_equal(x, y),
    "Greater": lambda a, x, y: np.greater(x, y),
    "GreaterOrEqual": lambda a, x, y: np.greater_equal(x, y),
    "Not": lambda a, x: np.logical_not(x),
    "And": lambda a, x, y: np.logical_and(x, y),
    "Or": lambda a, x, y: np.logical_or(x, y),
    "Min": lambda a, *xs: np.asarray(np.minimum.reduce(np.broadcast_arrays(*xs)), np.result_type(*xs)),
    "Max": lambda a, *xs: np.asarray(np.maximum.reduce(np.broadcast_arrays(*xs)), np.result_type(*xs)),
    "Abs": lambda a, x: np.abs(x),
    "Ceil": lambda a, x: np.ceil(x),
    "Size": lambda a, x: np.array(x.size, np.int64),
    "ReduceProd": lambda a, x, axes=None: _f_reduce(np.prod, a, x, axes),
    "ReduceSum": lambda a, x, axes=None: _f_reduce(np.sum, a, x, axes),
    "ReduceMin": lambda a, x, axes=None: _f_reduce(np.min, a, x, axes),
    "ReduceMax": lambda a, x, axes=None: _f_reduce(np.max, a, x, axes),
})


def _f_reduce(fn, a, x, axes=None):
    ax = _ints(axes) if axes is not None else a.get("axes")
    if ax is not None and len(ax) == 0 and int(a.get("noop_with_empty_axes", 0)):
        return x
    return np.asarray(fn(x, axis=None if not ax else tuple(int(v) for v in ax),
                         keepdims=bool(int(a.get("keepdims", 1)))), x.dtype)


@folds("Unsqueeze")
def _f_unsqueeze(a, x, axes=None):
    ax = _ints(axes) if axes is not None else list(a["axes"])
    r = x.ndim + len(ax)
    for d in sorted(v + r if v < 0 else v for v in ax):
        x = np.expand_dims(x, d)
    return x


@folds("Squeeze")
def _f_squeeze(a, x, axes=None):
    ax = _ints(axes) if axes is not None else a.get("axes")
    return np.squeeze(x, axis=None if ax is None else tuple(ax))


@folds("ConstantOfShape")
def _f_cos(a, shape):
    v = a.get("value", np.zeros(1, np.float32))
    return np.full(_ints(shape), v.reshape(-1)[0], v.dtype)


@folds("Slice")
def _f_slice(a, x, starts, ends, axes=None, steps=None):
    sl = [slice(None)] * x.ndim
    ax = list(range(len(starts))) if axes is None else _ints(axes)
    sp = [1] * len(ax) if steps is None else _ints(steps)
    for b, e, d, s in zip(_ints(starts), _ints(ends), ax, sp):
        sl[d] = slice(b, e, s)
    return x[tuple(sl)]


# -- the importer -----------------------------------------------------------------

def _describe(op_type: str, names: List[str]) -> str:
    shown = "; ".join(names[:5]) + (f"; and {len(names) - 5} more" if len(names) > 5 else "")
    return f"  {op_type} ({len(names)} node{'s' if len(names) != 1 else ''}): {shown}"


def _load(model: Any):
    onnx = _onnx()
    if isinstance(model, onnx.ModelProto):
        return _decode_texts(model, "<ModelProto>"), "<ModelProto>"  # as given: not through the checker
    if isinstance(model, (bytes, bytearray)):
        path, data = "<bytes>", bytes(model)
    elif isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if not os.path.exists(path):
            raise MeraIOError(f"ONNX model file '{path}' does not exist")
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise MeraIOError(f"cannot read ONNX model '{path}': {e.strerror}") from None
    else:
        raise ConfigError(f"from_onnx: cannot import a {type(model).__name__}; pass an onnx.ModelProto, a path "
                          "or bytes")
    try:
        m = onnx.ModelProto()
        m.ParseFromString(data)
    except Exception as e:
        raise FormatError(f"'{path}' is not a valid ONNX model (cannot parse it: {e})") from None
    if os.path.isfile(path) and any(t.data_location == onnx.TensorProto.EXTERNAL for t in m.graph.initializer):
        try:
            onnx.load_external_data_for_model(m, os.path.dirname(os.path.abspath(path)))
        except Exception as e:
            raise MeraIOError(f"'{path}': cannot load external tensor data: {e}") from None
    m = _decode_texts(m, path)
    _check(m, path)
    return m, path


def _check(m, path: str) -> None:
    """onnx's checker, and a graph that computes something."""
    try:
        _onnx().checker.check_model(m)
    except Exception as e:
        raise FormatError(f"'{path}' is not a valid ONNX model: {str(e).splitlines()[0] if str(e) else e}") \
            from None
    if not m.graph.node and not m.graph.output:
        raise FormatError(f"'{path}' is not a valid ONNX model: its graph is empty")


#: Fields holding the name of a value (an edge of the graph), where two names must not merge.
_VALUE_NAME_FIELDS = {("NodeProto", "input"), ("NodeProto", "output"), ("ValueInfoProto", "name"),
                      ("TensorProto", "name")}


def _repeated(field) -> bool:
    """Whether a protobuf field is repeated (``is_repeated`` in protobuf >= 5.28, ``label`` before)."""
    flag = getattr(field, "is_repeated", None)
    return bool(flag) if flag is not None else field.label == field.LABEL_REPEATED


_TEXT_LAYOUT: Dict[str, Tuple[list, list]] = {}  # message type -> (its message fields, its string fields)


def _text_fields(msg):
    """Every string field of ``msg`` and of its sub-messages: (message, field, index or -1, value).
    Only string and message fields are read (not the tensors' data)."""
    d = msg.DESCRIPTOR
    if d.full_name not in _TEXT_LAYOUT:
        _TEXT_LAYOUT[d.full_name] = ([f for f in d.fields if f.type == f.TYPE_MESSAGE],
                                     [f for f in d.fields if f.type == f.TYPE_STRING])
    messages, texts = _TEXT_LAYOUT[d.full_name]
    for f in texts:
        if _repeated(f):
            for i, v in enumerate(getattr(msg, f.name)):
                yield msg, f, i, v
        else:
            v = getattr(msg, f.name)
            if v:
                yield msg, f, -1, v
    for f in messages:
        if _repeated(f):
            for sub in getattr(msg, f.name):
                yield from _text_fields(sub)
        elif msg.HasField(f.name):
            yield from _text_fields(getattr(msg, f.name))


def _decode_texts(model, path: str):
    """``model`` with every string field that is not valid UTF-8 decoded with replacement characters
    (protobuf hands such fields over as bytes). A copy when anything changes; the caller's model is
    never modified. Value names that become equal to another value's name are a FormatError."""
    if not any(isinstance(v, bytes) for _, _, _, v in _text_fields(model)):
        return model
    copy = type(model)()
    copy.CopyFrom(model)
    found = [(m, f, i, v) for m, f, i, v in _text_fields(copy) if isinstance(v, bytes)]
    merged: Dict[str, set] = {}
    for msg, field, i, raw in found:
        text = raw.decode("utf-8", "replace")
        if (msg.DESCRIPTOR.name, field.name) in _VALUE_NAME_FIELDS:
            merged.setdefault(text, set()).add(raw)
        if i < 0:
            setattr(msg, field.name, text)
        else:
            getattr(msg, field.name)[i] = text
    if merged:
        valid = {v for m, f, _, v in _text_fields(model)  # the names that were valid UTF-8 from the start
                 if isinstance(v, str) and (m.DESCRIPTOR.name, f.name) in _VALUE_NAME_FIELDS}
        for text, raws in merged.items():
            if len(raws) > 1 or text in valid:
                raise FormatError(f"'{path}': value names that are not valid UTF-8 ({sorted(raws)[0]!r}, ...) "
                                  f"cannot be told apart from other names once decoded ({text!r})")
    return copy


def _parse_input_shapes(input_shapes) -> Dict[str, Tuple[int, ...]]:
    if input_shapes is None:
        return {}
    if isinstance(input_shapes, dict):
        items = list(input_shapes.items())
    elif isinstance(input_shapes, (list, tuple)):
        items = list(input_shapes)
    else:
        raise ConfigError(f"input_shapes must be a list of (name, shape) or a dict, got {type(input_shapes).__name__}")
    out = {}
    for i, item in enumerate(items):
        try:
            name, spec = item
            if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[1], (str, np.dtype)):
                spec = spec[0]
            out[str(name)] = tuple(int(d) for d in spec)
        except (TypeError, ValueError):
            raise ConfigError(f"input_shapes[{i}] must be (name, shape), got {item!r}") from None
    return out


def _check_opsets(model, path: str) -> int:
    """The default-domain opset of ``model``, refused outside MIN_OPSET..MAX_OPSET; the versions of
    other domains whose ops mera reads (DOMAIN_OPSETS) are checked too. Other domains are accepted
    here: their nodes, if any, are reported as unsupported, each by name."""
    opset = None
    for o in model.opset_import:
        domain = o.domain if o.domain != "ai.onnx" else ""
        if domain == "":
            opset = o.version
            if not MIN_OPSET <= opset <= MAX_OPSET:
                raise UnsupportedError(f"'{path}': default-domain opset {opset} is not supported (mera imports "
                                       f"opsets {MIN_OPSET} to {MAX_OPSET}; re-export the model with an opset "
                                       "in that range)")
        elif domain in DOMAIN_OPSETS:
            lo, hi = DOMAIN_OPSETS[domain]
            if not lo <= o.version <= hi:
                raise UnsupportedError(f"'{path}': opset {o.version} of domain '{domain}' is not supported "
                                       f"(mera reads its version{'s' if lo != hi else ''} "
                                       f"{lo if lo == hi else f'{lo} to {hi}'})")
    if opset is None:
        raise FormatError(f"'{path}': the model imports no version of the default ONNX domain")
    return opset


OLDEST_CONVERTED_OPSET = 7  # opsets 7 .. MIN_OPSET - 1 are upgraded with onnx's version converter


def _upgrade_old_opset(model, path: str):
    """A model of default-domain opset 7 .. MIN_OPSET - 1 (PaddlePaddle's older exports) upgraded to
    MIN_OPSET by onnx.version_converter, which rewrites the old forms (Slice's attributes, Upsample, ...);
    a model it cannot convert is refused naming the converter's reason. Other models are returned as given."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or not OLDEST_CONVERTED_OPSET <= opset < MIN_OPSET:
        return model
    from onnx import version_converter
    try:
        return version_converter.convert_version(model, MIN_OPSET)
    except Exception as e:  # onnx raises RuntimeError / ValueError / its C++ errors
        raise UnsupportedError(f"'{path}': default-domain opset {opset}: onnx's version converter could not "
                               f"upgrade it to opset {MIN_OPSET} ({str(e).splitlines()[0][:200]}); re-export the "
                               f"model with an opset from {MIN_OPSET} to {MAX_OPSET}") from None


class _Importer:
    def __init__(self, model, path: str, input_shapes, layout: str):
        model = _upgrade_old_opset(model, path)
        self.m = model
        self.path = path
        self.layout = layout
        self.shapes = _parse_input_shapes(input_shapes)
        g = model.graph
        self.opset = _check_opsets(model, path)
        consumers: Dict[str, List[Any]] = {}
        # one wrapper object per node, kept alive: nodes are keyed by id() below
        self.nodes = _onnx_gelu.fuse_gelu(g, list(g.node))  # GELU chains read as one Gelu node
        for n in self.nodes:
            for i in n.input:
                if i:
                    consumers.setdefault(i, []).append(n)
        self.ctx = Context(ir.Builder(_sanitize(g.name or "main"), rounding=ir.DEFAULT_ROUNDING), layout, self.opset, consumers,
                           {o.name for o in g.output}, path)
        self.env: Dict[str, Any] = self.ctx.env
        self.ctx.labels = {id(n): n.name or f"{n.op_type}_{i}" for i, n in enumerate(self.nodes)}
        self._types: Optional[Dict[str, Any]] = None  # ONNX's inferred value types, computed on first need
        self._stand_in_types: Dict[str, Any] = {}  # output types of nodes that could not be imported

    def declare(self) -> None:
        onnx = _onnx()
        g = self.m.graph
        for init in g.initializer:
            self.env[init.name] = _tensor_data(init, f"'{self.path}': initializer '{init.name}'")
        for init in g.sparse_initializer:  # pragma: no cover - rare
            raise UnsupportedError(f"sparse initializer '{init.values.name}'")
        real = [i for i in g.input if i.name not in self.env]
        unknown = set(self.shapes) - {i.name for i in real}
        if unknown:
            raise ConfigError(f"input_shapes names {sorted(unknown)}, which the model does not take as inputs "
                              f"(its inputs: {[i.name for i in real]})")
        for vi in real:
            tt = vi.type.tensor_type
            if not vi.type.HasField("tensor_type"):
                raise UnsupportedError(f"input '{vi.name}' is not a tensor")
            dtype, qparams = "float32", None
            if tt.elem_type in (onnx.TensorProto.UINT8, onnx.TensorProto.INT8):
                # a quantized input: its readers (DequantizeLinear, QLinear ops) give its parameters
                dtype = "uint8" if tt.elem_type == onnx.TensorProto.UINT8 else "int8"
                if not _plain_int_input(self.ctx, vi.name):  # (plain integers for ConvInteger, MatMulInteger)
                    qparams = _onnx_quant.input_qparams(self.ctx, vi.name, dtype)
            elif tt.elem_type in (onnx.TensorProto.INT64, onnx.TensorProto.INT32):
                # plain integers: indices (Gather's, say), token or byte ids
                dtype = "int64" if tt.elem_type == onnx.TensorProto.INT64 else "int32"
            elif tt.elem_type != onnx.TensorProto.FLOAT:
                raise UnsupportedError(f"input '{vi.name}' has element type "
                                       f"{_dtype_name(tt.elem_type)}; mera imports float32 and int64 "
                                       "inputs, and uint8/int8 inputs that DequantizeLinear or QLinear nodes read")
            # a dim_param, no value, or a negative value (some exporters write -1) is dynamic:
            # input_shapes gives it
            model_shape = [d.dim_value if d.HasField("dim_value") and d.dim_value >= 0 else None
                           for d in tt.shape.dim]
            if vi.name in self.shapes:
                shape = self.shapes[vi.name]
                nchw = (shape[0], shape[3], shape[1], shape[2]) if self.layout == "NHWC" and len(shape) == 4 \
                    else shape
                if len(nchw) != len(model_shape) or any(m_ is not None and m_ != s for m_, s in
                                                         zip(model_shape, nchw)):
                    raise ConfigError(f"input '{vi.name}': input_shapes gives {shape}"
                                      + (" (NHWC)" if self.layout == "NHWC" and len(shape) == 4 else "")
                                      + f", which does not fit the model's {model_shape}")
            else:
                if None in model_shape or not tt.HasField("shape"):
                    raise ConfigError(f"input '{vi.name}' has a dynamic shape {model_shape}; give it in "
                                      "input_shapes")
                nchw = tuple(model_shape)
            if any(d < 1 for d in nchw):
                raise UnsupportedError(f"input '{vi.name}' has shape {tuple(nchw)}; mera tensors have no "
                                       "empty axes")
            nhwc = self.layout == "NHWC" and len(nchw) == 4
            data_shape = (nchw[0], nchw[2], nchw[3], nchw[1]) if nhwc else nchw
            v = self.ctx.b.input(vi.name, data_shape, dtype,
                                 layout=("NHWC" if nhwc else ("NCHW" if len(nchw) == 4 else None)), qparams=qparams)
            self.env[vi.name] = Tensor(v, nhwc)

    def run(self):
        ctx = self.ctx
        self.declare()
        found: "OrderedDict[str, List[str]]" = OrderedDict()
        for node in self.nodes:
            label = ctx.labels[id(node)]
            domain = node.domain if node.domain not in ("", "ai.onnx") else ""
            if domain and (domain, node.op_type) not in _onnx_quant.DOMAIN_CONVERTERS:
                found.setdefault(f"{domain}.{node.op_type}", []).append(f"'{label}'")
                self._poison(node)
                continue
            ins = [self.env.get(n, None) if n else None for n in node.input]
            missing = [n for n, v in zip(node.input, ins) if n and n not in self.env]
            if missing:
                raise FormatError(f"'{self.path}': node '{label}' uses undefined value(s) {missing}")
            known = (domain or node.op_type in CONVERTERS or node.op_type in FOLDERS
                     or (_all_constant(ins) and node.op_type not in _NOT_FOLDED))
            if not known:
                found.setdefault(node.op_type, []).append(f"'{label}'")
                self._infer_outputs(node, [v if v is not _POISON else None for v in ins])
                self._poison(node)
                continue
            downstream = any(v is _POISON for v in ins)
            if downstream:
                # Check it anyway, on stand-ins of the shapes ONNX's shape
                # inference gives, so one error names every node that cannot
                # be imported, downstream ones included.
                ins = [self._stand_in(n) if v is _POISON else v for n, v in zip(node.input, ins)]
                if any(v is _POISON for v in ins):
                    self._poison(node)
                    continue
            if not any(node.output):  # (a leading optional output may be omitted: LSTM's Y)
                raise FormatError(f"'{self.path}': node '{label}' ({node.op_type}) has no output")
            ctx.node, ctx.node_label = node, label
            try:
                a = _attrs(node)
                tags = _row_tags(ins)
                if tags:
                    _check_row_op(node, tags)
                out = self._convert(node, domain, a, ins)
                if tags:
                    out = _with_rows(node, a, ins, out, tags, ctx)
            except UnsupportedError as e:
                where = "; downstream of an unsupported node" if downstream else ""
                found.setdefault(f"{domain}.{node.op_type}" if domain else node.op_type, []).append(
                    f"'{label}' ({e}{where})")
                ctx.qout = None
                self._infer_outputs(node, [None if _has_dyn(v) else v for v in ins])
                self._poison(node)
                continue
            except (GraphError, FormatError):
                if not downstream:
                    raise
                self._poison(node)  # the stand-in did not fit: this node's own check waits for its inputs
                continue
            except MeraError:
                raise
            except (LookupError, ValueError, TypeError, AttributeError, ArithmeticError) as e:
                if downstream:  # on a stand-in: its own check waits for its inputs
                    self._poison(node)
                    continue
                # a node the converter cannot read (a missing input or attribute, one of the wrong type
                # or size), in a model the checker let through or that was passed as a ModelProto
                raise FormatError(f"'{self.path}': node '{label}' ({node.op_type}) is malformed: "
                                  f"{type(e).__name__}: {e}") from e
            self.env[node.output[0]] = out
        if found:
            n_nodes = sum(len(v) for v in found.values())
            raise UnsupportedError(
                f"'{self.path}': {n_nodes} node{'s' if n_nodes != 1 else ''} of {len(found)} op type"
                f"{'s' if len(found) != 1 else ''} cannot be imported:\n"
                + "\n".join(_describe(k, v) for k, v in found.items()))
        outs, counts = [], []
        for o in self.m.graph.output:
            if o.name not in self.env:
                raise FormatError(f"'{self.path}': graph output '{o.name}' is neither an input nor computed by a node")
            v = _onnx_quant.resolve(ctx, self.env[o.name])
            if not isinstance(v, Tensor):
                raise UnsupportedError(f"'{self.path}': output '{o.name}' is a constant; mera graphs compute "
                                       "their outputs from their inputs")
            if v.rows is not None:  # cut to its valid rows by the runners (mera/_valid_rows.py)
                v = ctx.to_nchw(v)
                ctx.node_label = o.name
                outs.append(ctx.emit("rows_valid", v.value, v.rows[1], axis=v.rows[0]))
                if v.rows[1].id not in [c.id for c in counts]:
                    counts.append(v.rows[1])
                continue
            if v.rank == 4:
                v = ctx.to_layout(v)
            else:
                v = ctx.to_nchw(v)
            outs.append(v.value)
        return ctx.b.finish(outs + counts), dict(ctx.b.params)

    def _convert(self, node, domain: str, a: Dict[str, Any], ins: List[Any]) -> Any:
        ctx = self.ctx
        if domain:
            return _onnx_quant.DOMAIN_CONVERTERS[(domain, node.op_type)](ctx, node, a, *ins)
        if node.op_type in _onnx_quant.QUANT_OPS:  # QuantizeLinear, DequantizeLinear, QLinearConv, ...
            return CONVERTERS[node.op_type](ctx, node, a, *ins)
        if not _all_constant(ins) and node.op_type != "Constant" and any(_is_empty(v) for v in ins):
            # an empty tensor (an Ultralytics export's "extras" of zero columns) through a gather, reshape or cast
            # stays empty; Concat leaves it out
            if node.op_type == "Concat" and any(isinstance(v, Tensor) for v in ins):
                ins = [v for v in ins if not _is_empty(v)]
                if len(ins) == 1:
                    return ins[0]
            elif node.op_type in _EMPTY_THROUGH and _is_empty(ins[0]):
                return _empty((0,), np.asarray(ins[0]).dtype)
            else:
                raise UnsupportedError(f"{node.op_type} of an empty tensor (mera's tensors are never empty: only "
                                       "Concat leaves one out)")
        dyn = [i for i, v in enumerate(ins) if _has_dyn(v)]
        if dyn:  # a run-time count (Shape of rows): symbolic arithmetic, or read as a shape at the static maximum
            allowed = _DYN_ANY if _all_constant(ins) else set()
            pos0 = _DYN_DATA if _all_constant(ins) else set()
            if not (node.op_type in allowed or (node.op_type in pos0 and dyn == [0])
                    or (not _all_constant(ins) and node.op_type in _DYN_SHAPE and dyn == [1])):
                raise UnsupportedError(f"{node.op_type} of a size known only at run time (the Shape of NonZero's or "
                                       "NonMaxSuppression's rows): mera follows it through shape arithmetic "
                                       f"({', '.join(sorted(_DYN_ANY | _DYN_DATA))}) into the shape of a Reshape or "
                                       "Expand and the pads of a Pad only")
        if (_all_constant(ins) or node.op_type == "Constant") and node.op_type not in _NOT_FOLDED:
            ins = [_onnx_quant.resolve(ctx, v) for v in ins]
            out = (np.asarray(FOLDERS[node.op_type](a, *ins)) if node.op_type in FOLDERS
                   else self._fold_by_reference(node, ins))
            if isinstance(out, np.ndarray) and out.size == 0 and any(_is_empty(v) for v in ins):
                out = out.view(_Empty)  # still a Slice's empty tensor
            return out
        ins = _onnx_quant.float_inputs(ctx, node, ins)
        if node.op_type not in CONVERTERS:
            raise UnsupportedError(f"{node.op_type} is supported on constants only (folded at import); "
                                   "here it computes on a run-time tensor")
        return CONVERTERS[node.op_type](ctx, node, a, *ins)

    def _fold_by_reference(self, node, ins: List[Any]) -> np.ndarray:
        """A node of constants that mera has no folder for, evaluated by ONNX's reference implementation
        (onnx.reference): shape arithmetic such as Mod, Pow or Einsum on constants. Outputs after the
        first go to ``env`` as converters with several outputs do."""
        onnx = _onnx()
        from onnx.reference import ReferenceEvaluator
        h = onnx.helper
        names = [n for n, v in zip(node.input, ins) if n and v is not None]
        feeds = {n: np.asarray(v) for n, v in zip(node.input, ins) if n and v is not None}
        inputs = [h.make_tensor_value_info(n, h.np_dtype_to_tensor_dtype(feeds[n].dtype), feeds[n].shape)
                  for n in dict.fromkeys(names)]
        outputs = [h.make_empty_tensor_value_info(o) for o in node.output if o]
        graph = h.make_graph([node], "fold", inputs, outputs)
        m = h.make_model(graph, opset_imports=list(self.m.opset_import))
        try:
            values = ReferenceEvaluator(m).run(None, feeds)
        except Exception as e:  # the reference implementation's own errors have no common base class
            raise UnsupportedError(f"{node.op_type} on constants: ONNX's reference implementation cannot "
                                   f"evaluate it ({type(e).__name__}: {e})") from e
        for name, v in zip([o for o in node.output if o][1:], values[1:]):
            self.ctx.env[name] = np.asarray(v)
        return np.asarray(values[0])

    def _inferred_types(self) -> Dict[str, Any]:
        """name -> ONNX TypeProto of every value, from ONNX's shape inference on the input shapes used."""
        if self._types is None:
            onnx = _onnx()
            m = onnx.ModelProto()
            m.CopyFrom(self.m)
            for vi in m.graph.input:
                v = self.env.get(vi.name)
                if isinstance(v, Tensor):
                    dims = vi.type.tensor_type.shape.dim
                    del dims[:]
                    for n in v.shape:
                        dims.add().dim_value = int(n)
            try:
                m = onnx.shape_inference.infer_shapes(m, data_prop=True)  # data_prop: through Shape -> Reshape
            except Exception:  # noqa: BLE001 - inference is a best effort here; failing it only skips checks
                self._types = {}
                return self._types
            g = m.graph
            self._types = {vi.name: vi.type for vi in list(g.value_info) + list(g.output)}
        return self._types

    def _infer_outputs(self, node, ins: List[Any]) -> None:
        """Record the output types of a node that could not be imported, inferred by ONNX from the
        shapes mera knows for its inputs (more than whole-graph inference knows after a dynamic Reshape)."""
        onnx = _onnx()
        types, data = {}, {}
        for name, v in zip(node.input, ins):
            if not name:
                continue
            if isinstance(v, Tensor):
                elem = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(v.value.dtype)) \
                    if v.value.qparams is None else onnx.TensorProto.FLOAT
                types[name] = onnx.helper.make_tensor_type_proto(elem, list(v.shape))
            elif isinstance(v, np.ndarray):
                types[name] = onnx.helper.make_tensor_type_proto(onnx.helper.np_dtype_to_tensor_dtype(v.dtype),
                                                                 list(v.shape))
                data[name] = onnx.numpy_helper.from_array(v, name)
            elif name in self._stand_in_types:
                types[name] = self._stand_in_types[name]
            else:
                return
        try:
            domain = node.domain if node.domain not in ("", "ai.onnx") else ""
            schema = onnx.defs.get_schema(node.op_type, self.opset, domain)
            out = onnx.shape_inference.infer_node_outputs(schema, node, types, data)
        except Exception:  # noqa: BLE001 - a best effort: without it, the whole-graph inference is used
            return
        self._stand_in_types.update(out)

    def _stand_in(self, name: str) -> Any:
        """A float graph input standing for the output of a node that could not be imported, or _POISON."""
        onnx = _onnx()
        tp = self._stand_in_types.get(name) or self._inferred_types().get(name)
        if tp is None or not tp.HasField("tensor_type") or tp.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            return _POISON
        dims = tp.tensor_type.shape.dim
        shape = [d.dim_value if d.HasField("dim_value") else 0 for d in dims]
        if not tp.tensor_type.HasField("shape") or not shape or any(n < 1 for n in shape):
            return _POISON
        nhwc = self.layout == "NHWC" and len(shape) == 4
        data_shape = (shape[0], shape[2], shape[3], shape[1]) if nhwc else tuple(shape)
        v = self.ctx.b.input(self.ctx.b._fresh("unchecked_" + _sanitize(name)), data_shape, "float32",
                             layout=("NHWC" if nhwc else ("NCHW" if len(shape) == 4 else None)))
        return Tensor(v, nhwc)

    def _poison(self, node) -> None:
        for o in node.output:
            if o:
                self.env[o] = _POISON


def from_onnx(path_or_model: Any, input_shapes: Any = None, layout: str = "NHWC"
              ) -> Tuple[ir.Module, Dict[str, np.ndarray]]:
    """Import an ONNX model, float or quantized (QDQ or QLinear ops), into mera IR.

    Parameters
    ----------
    path_or_model : str, os.PathLike, bytes or onnx.ModelProto
    input_shapes : list of (name, shape) or dict, optional
        Shapes of the model's inputs (NHWC for 4-D inputs under
        ``layout="NHWC"``); needed only for inputs with dynamic dimensions.
    layout : {"NHWC", "NCHW"}

    Returns
    -------
    (mera.ir.Module, dict of str to numpy.ndarray)

    Raises
    ------
    mera.UnsupportedError
        One error naming every node (name and op type, with counts) that
        cannot be imported.
    mera.FormatError
        The file is not a valid ONNX model, or a node's quantization
        parameters are invalid (a scale that is not positive and finite,
        per-axis parameters whose length does not match the axis).
    mera.MeraIOError
        The file cannot be read.
    """
    if not isinstance(layout, str) or layout not in ("NCHW", "NHWC"):
        raise ConfigError(f"layout must be 'NCHW' or 'NHWC', got {layout!r}")
    model, path = _load(path_or_model)
    mod, params = _Importer(model, path, input_shapes, layout).run()
    # BatchNormalization is a per-channel mul and add: the fold_bn pass folds
    # it into the Conv (or Gemm) before it, as the quantizer does (float
    # graphs only). QDQ chains are lowered to quantized ops by lower_qdq.
    passes = ["fold_bn"]
    if any(n["op"] == "dequantize" for n in mod.nodes()):
        passes += ["lower_qdq", "dce"]
    return run_passes(mod, params, passes)


from . import _onnx_quant  # noqa: E402  (registers the quantized converters; needs the names above)

__all__ = ["from_onnx", "MIN_OPSET", "MAX_OPSET", "CONVERTERS", "FOLDERS"]

_onnx_quant.DOMAIN_CONVERTERS[("com.microsoft", "DynamicQuantizeLSTM")] = _dynamic_quantize_lstm
_onnx_quant.DOMAIN_CONVERTERS[("com.microsoft", "DynamicQuantizeMatMul")] = _dynamic_quantize_matmul

from . import _onnx_math  # noqa: E402,F401  (registers the host math converters; needs the names above)
