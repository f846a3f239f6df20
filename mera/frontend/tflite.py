"""TFLite frontend: ``from_tflite(model, shape_dict, dtype_dict, layout)`` -> ``(mod, params)``.

The flatbuffer is read with the ``tflite`` package (the code generated from
TFLite's schema; ``pip install "mera[tflite]"``). Operators are translated one
to one onto mera's IR ops; TFLite is channels-last, so the imported graph is
NHWC throughout and its shapes are the file's shapes. int8/uint8 tensors keep
their scale and zero point as the IR value's qparams, and the quantized ops
follow mera's numerics contract (docs/numerics.md), not TFLite's fixed-point
kernels: docs/frontends.md gives what differs, op by op, and how much.
"""

from __future__ import annotations

import os
import re
import struct
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .. import ir
from ..errors import ConfigError, FormatError, MeraError, MeraIOError, UnsupportedError

_TYPES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 7: "int16", 9: "int8"}
_QUANT = ("int8", "uint8")
_RANGE = {"int8": (-128, 127), "uint8": (0, 255)}
# fused activations (ActivationFunctionType): 0 NONE, 1 RELU, 2 RELU_N1_TO_1, 3 RELU6
_FUSED = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}
_CLIP_BOUNDS = {2: (-1.0, 1.0), 3: (0.0, 6.0)}


def _tflite():
    try:
        import tflite
    except ImportError:  # pragma: no cover - depends on the environment
        raise UnsupportedError("from_tflite needs the 'tflite' package (the TFLite schema): "
                               "pip install \"mera[tflite]\"") from None
    return tflite


def _sanitize(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_.]+", "_", name).strip("_.")
    return s or "t"


class _T:
    """An imported tensor: an IR value, or a constant array (weights, shapes)."""

    __slots__ = ("value", "const")

    def __init__(self, value: Optional[ir.Value] = None, const: Optional[np.ndarray] = None):
        self.value, self.const = value, const


class _Op:
    """One TFLite operator as the converters see it."""

    def __init__(self, index: int, name: str, op, opts):
        self.index, self.name, self.raw, self.opts = index, name, op, opts
        self.inputs: List[int] = [int(i) for i in op.InputsAsNumpy()] if op.InputsLength() else []
        self.outputs: List[int] = [int(i) for i in op.OutputsAsNumpy()] if op.OutputsLength() else []

    def __str__(self) -> str:
        return f"operator {self.index} ({self.name})"


CONVERTERS: Dict[str, Callable[..., None]] = {}


class _Unjudged(Exception):
    """An operator reads the output of one that could not be imported: it is not judged itself."""


def converts(*names: str):
    def reg(fn):
        for n in names:
            CONVERTERS[n] = fn
        return fn
    return reg


class _Importer:
    def __init__(self, model, where: str, shape_dict, dtype_dict, layout: str):
        self.tfl = _tflite()
        self.m, self.where, self.layout = model, where, layout
        self.shape_dict = dict(shape_dict or {})
        self.dtype_dict = dict(dtype_dict or {})
        if self.m.SubgraphsLength() < 1:
            raise FormatError(f"{where}: the model has no subgraph")
        self.g = self.m.Subgraphs(0)
        self.b = ir.Builder(_sanitize(self.g.Name().decode() if self.g.Name() else "tflite"))
        self.vals: Dict[int, _T] = {}
        self.op: Optional[_Op] = None
        # (file's batch, given batch) when shape_dict changes every input's leading dimension alike
        self.batch: Optional[Tuple[int, int]] = None
        self._codes = {v: k for k, v in vars(self.tfl.BuiltinOperator).items() if not k.startswith("_")}
        self._opt_classes = {v: k for k, v in vars(self.tfl.BuiltinOptions).items() if not k.startswith("_")}

    # -- reading the file --------------------------------------------------------------

    def tensor(self, i: int):
        if not 0 <= i < self.g.TensorsLength():
            raise FormatError(f"{self.where}: {self.op or 'the graph'} refers to tensor {i}, but the subgraph has "
                              f"{self.g.TensorsLength()} tensors")
        return self.g.Tensors(i)

    def tname(self, i: int) -> str:
        n = self.tensor(i).Name()
        return n.decode(errors="replace") if n else f"tensor{i}"

    def ttype(self, i: int) -> str:
        t = self.tensor(i).Type()
        return _TYPES.get(t, f"type {t}")

    def shape(self, i: int) -> List[int]:
        t = self.tensor(i)
        return [int(d) for d in t.ShapeAsNumpy()] if t.ShapeLength() else []

    def qparams(self, i: int) -> Optional[Tuple[np.ndarray, np.ndarray, int]]:
        """(scales, zero points, axis) of a quantized tensor, or None."""
        q = self.tensor(i).Quantization()
        if q is None or q.ScaleLength() == 0:
            return None
        if q.DetailsType() != 0:
            raise UnsupportedError(f"tensor {i} '{self.tname(i)}' has custom quantization details")
        s = q.ScaleAsNumpy().astype(np.float64)
        z = q.ZeroPointAsNumpy().astype(np.int64) if q.ZeroPointLength() else np.zeros(len(s), np.int64)
        if len(z) == 1 and len(s) > 1:
            z = np.repeat(z, len(s))
        if len(z) != len(s):
            raise FormatError(f"{self.where}: tensor {i} '{self.tname(i)}': {len(s)} scales but {len(z)} zero points")
        if not np.all(np.isfinite(s)) or np.any(s <= 0):
            raise FormatError(f"{self.where}: tensor {i} '{self.tname(i)}': scales must be positive and finite, "
                              f"got {s[:4].tolist()}")
        return s, z, int(q.QuantizedDimension())

    def act_qparams(self, i: int) -> Optional[Tuple[float, int]]:
        """Per-tensor (scale, zero point) of a run-time quantized tensor."""
        q = self.qparams(i)
        if q is None or self.ttype(i) not in _QUANT:
            return None
        s, z, _ = q
        if len(s) != 1:
            raise UnsupportedError(f"tensor {i} '{self.tname(i)}' is a run-time tensor with per-axis parameters; "
                                   "mera quantizes activations per tensor")
        lo, hi = _RANGE[self.ttype(i)]
        if not lo <= z[0] <= hi:
            raise FormatError(f"{self.where}: tensor {i} '{self.tname(i)}': zero point {z[0]} out of "
                              f"{self.ttype(i)} range")
        return float(s[0]), int(z[0])

    def buffer_data(self, i: int) -> Optional[np.ndarray]:
        t = self.tensor(i)
        bi = t.Buffer()
        sparse = t.Sparsity()
        if bi == 0 or bi >= self.m.BuffersLength():
            if bi >= self.m.BuffersLength():
                raise FormatError(f"{self.where}: tensor {i} '{self.tname(i)}' refers to buffer {bi}, but the model "
                                  f"has {self.m.BuffersLength()}")
            return None
        buf = self.m.Buffers(bi)
        if buf.Offset() > 1:            # large models keep their data after the flatbuffer
            raw = self.m._tab.Bytes[buf.Offset():buf.Offset() + buf.Size()]
            if len(raw) != buf.Size():
                raise FormatError(f"{self.where}: buffer {bi} of tensor {i} lies outside the file")
        elif buf.DataLength():
            raw = buf.DataAsNumpy().tobytes()
        else:
            return None
        dt = self.ttype(i)
        if dt.startswith("type"):
            raise UnsupportedError(f"tensor {i} '{self.tname(i)}' has TFLite {dt}")
        shape = self.shape(i)
        if sparse is not None:
            return self.densify(i, sparse, raw, dt, shape)
        n = int(np.prod(shape)) if shape else 1
        if len(raw) != n * np.dtype(dt).itemsize:
            raise FormatError(f"{self.where}: tensor {i} '{self.tname(i)}': buffer {bi} holds {len(raw)} bytes, "
                              f"shape {shape} of {dt} needs {n * np.dtype(dt).itemsize}")
        return np.frombuffer(raw, dt).reshape(shape).copy()

    def densify(self, i: int, sp, raw: bytes, dt: str, shape: List[int]) -> np.ndarray:
        """The dense array of a constant stored in TFLite's sparse format (the schema's SparsityParameters:
        a traversal order over the dimensions and the block dimensions, each DENSE or SPARSE_CSR with
        segments and indices), as TFLite's own format converter expands it: values in storage order,
        zeros elsewhere."""
        where = f"{self.where}: tensor {i} '{self.tname(i)}' (sparse)"
        values = np.frombuffer(raw, dt)
        n = len(shape)
        order = [int(v) for v in sp.TraversalOrderAsNumpy()] if sp.TraversalOrderLength() else list(range(n))
        block_map = [int(v) for v in sp.BlockMapAsNumpy()] if sp.BlockMapLength() else []
        levels = [sp.DimMetadata(k) for k in range(sp.DimMetadataLength())]
        k = len(block_map)
        if len(levels) != n + k or sorted(order) != list(range(n + k)) or any(not 0 <= b < n for b in block_map):
            raise FormatError(f"{where}: traversal order {order}, block map {block_map} and {len(levels)} dimension "
                              f"metadata do not fit a rank-{n} tensor")
        block = [int(levels[n + b].DenseSize()) for b in range(k)]

        def vec(table, kind) -> np.ndarray:
            cls = {1: self.tfl.Int32Vector, 2: self.tfl.Uint16Vector, 3: self.tfl.Uint8Vector}.get(int(kind))
            if table is None or cls is None:
                raise FormatError(f"{where}: a SPARSE_CSR dimension without segments or indices")
            v = cls()
            v.Init(table.Bytes, table.Pos)
            return v.ValuesAsNumpy().astype(np.int64) if v.ValuesLength() else np.zeros(0, np.int64)

        csr = {}
        for lv, m in enumerate(levels):
            if int(m.Format()) == 1:
                csr[lv] = (vec(m.ArraySegments(), m.ArraySegmentsType()), vec(m.ArrayIndices(), m.ArrayIndicesType()))
            elif int(m.Format()) != 0:
                raise FormatError(f"{where}: dimension format {m.Format()}")
        out = np.zeros(shape, dt)
        expanded = [0] * (n + k)
        pos = [0]

        def walk(lv: int, prev: int) -> None:
            if lv == n + k:
                if pos[0] >= len(values):
                    raise FormatError(f"{where}: the index arrays address more than its {len(values)} values")
                idx = list(expanded[:n])
                for b, d in enumerate(block_map):
                    idx[d] = expanded[d] * block[b] + expanded[n + b]
                out[tuple(idx)] = values[pos[0]]
                pos[0] += 1
                return
            if lv in csr:
                seg, ind = csr[lv]
                if prev + 1 >= len(seg) or not 0 <= seg[prev] <= seg[prev + 1] <= len(ind):
                    raise FormatError(f"{where}: segment {prev} out of range at level {lv}")
                for j in range(int(seg[prev]), int(seg[prev + 1])):
                    expanded[order[lv]] = int(ind[j])
                    walk(lv + 1, j)
            else:
                size = int(levels[lv].DenseSize())
                for j in range(size):
                    expanded[order[lv]] = j
                    walk(lv + 1, prev * size + j)
        try:
            walk(0, 0)
        except IndexError as e:
            raise FormatError(f"{where}: an index lies outside the dense shape {shape}") from e
        if pos[0] != len(values):
            raise FormatError(f"{where}: {len(values)} values stored, the index arrays address {pos[0]}")
        return out

    def opname(self, op) -> str:
        if op.OpcodeIndex() >= self.m.OperatorCodesLength():
            raise FormatError(f"{self.where}: an operator uses opcode {op.OpcodeIndex()}, but the model has "
                              f"{self.m.OperatorCodesLength()}")
        oc = self.m.OperatorCodes(op.OpcodeIndex())
        code = max(int(oc.BuiltinCode()), int(oc.DeprecatedBuiltinCode()))
        if code == self.tfl.BuiltinOperator.CUSTOM:
            cc = oc.CustomCode()
            return "CUSTOM:" + (cc.decode(errors="replace") if cc else "?")
        return self._codes.get(code, f"builtin {code}")

    def options(self, op):
        t = op.BuiltinOptions()
        if t is None:
            return None
        name = self._opt_classes.get(op.BuiltinOptionsType())
        if name is None:
            return None
        cls = getattr(getattr(self.tfl, name, None), name, None) or getattr(self.tfl, name, None)
        o = cls()
        o.Init(t.Bytes, t.Pos)
        return o

    # -- values -------------------------------------------------------------------------

    def get(self, i: int) -> _T:
        if i in self.vals:
            return self.vals[i]
        data = self.buffer_data(i)
        if data is None:
            raise FormatError(f"{self.where}: {self.op} reads tensor {i} '{self.tname(i)}', which no operator "
                              "makes and which has no data")
        self.vals[i] = _T(const=data)
        return self.vals[i]

    def run_value(self, i: int, what: str) -> ir.Value:
        t = self.get(i)
        if t.value is None:
            t.value = self.const_value(i, what)
        return t.value

    def const_value(self, i: int, what: str) -> ir.Value:
        """A constant operand as an IR constant (quantized with its tensor's parameters)."""
        data = self.get(i).const
        dt = self.ttype(i)
        if dt == "float16":
            data = data.astype(np.float32)
        if dt in _QUANT:
            qp = self.act_qparams(i)
            if qp is None:
                raise UnsupportedError(f"{what} is a {dt} constant without quantization parameters")
            return self.b.const(np.ascontiguousarray(data), name=self.fresh(what), qparams=qp)
        if dt != "float32":
            raise UnsupportedError(f"{what} is a {dt} constant; mera computes in float32 or int8/uint8")
        return self.b.const(np.ascontiguousarray(data), name=self.fresh(what))

    def const_ints(self, i: int, what: str) -> List[int]:
        t = self.get(i)
        if t.const is None:
            raise UnsupportedError(f"{what} is computed at run time; mera needs it constant")
        return [int(v) for v in t.const.reshape(-1)]

    def fresh(self, what: str) -> str:
        return self.b._fresh(_sanitize(f"{self.op.name.lower()}{self.op.index}.{what}" if self.op else what))

    def emit(self, op: str, *inputs, **attrs) -> ir.Value:
        return self.b.op(op, *inputs, name=self.fresh(op), source=f"{self.where}: {self.op}", **attrs)

    def set_out(self, v: ir.Value, act: int = 0) -> None:
        """Bind the current operator's output to ``v``, then a fused activation ``act``.

        Where the file gives the output other parameters than mera's op has (ops that keep their input's:
        pools, relu, clip, reshape), ``v`` is requantized first, so the activation clamps in the output's
        quantized domain as TFLite does (a RELU_N1_TO_1 clamps at ``z + round(-1 / s_out)``).
        """
        o = self.op.outputs[0]
        want = self.act_qparams(o)
        have = v.qparams
        if want is not None and have is not None and self.ttype(o) == v.dtype:
            if (have[0], have[1]) != want:
                v = self.emit("requantize", v, out_scale=want[0], out_zero_point=want[1], out_dtype=self.ttype(o))
        elif (want is None) != (have is None) or (want is not None and self.ttype(o) != v.dtype):
            raise UnsupportedError(f"its output '{self.tname(o)}' is {self.ttype(o)}"
                                   f"{' (quantized)' if want else ''}, but mera computes it as {v.dtype}")
        self.vals[o] = _T(value=self.fused(v, act))

    def qout(self) -> Dict[str, Any]:
        """out_scale / out_zero_point / out_dtype of a quantized op's output (empty for float)."""
        o = self.op.outputs[0]
        qp = self.act_qparams(o)
        if qp is None:
            return {}
        return {"out_scale": qp[0], "out_zero_point": qp[1], "out_dtype": self.ttype(o)}

    def fused(self, v: ir.Value, act: int) -> ir.Value:
        """``v`` after the fused activation ``act`` (relu, or a clip for RELU6 and RELU_N1_TO_1)."""
        if act in _CLIP_BOUNDS:
            lo, hi = _CLIP_BOUNDS[act]
            return self.emit("clip", v, a_min=lo, a_max=hi)
        if act == 1:
            return self.emit("relu", v)
        if act != 0:
            raise UnsupportedError(f"fused activation {_FUSED.get(act, act)}")
        return v

    # -- the graph ----------------------------------------------------------------------

    def inputs(self) -> None:
        names = [self.tname(int(i)) for i in self.g.InputsAsNumpy()] if self.g.InputsLength() else []
        unknown = sorted(set(self.shape_dict) - set(names)) + sorted(set(self.dtype_dict) - set(names))
        if unknown:
            raise ConfigError(f"{self.where}: no model input named {', '.join(map(repr, unknown))}; the inputs are "
                              f"{', '.join(map(repr, names))}")
        batches = set()
        for i, name in zip((int(i) for i in self.g.InputsAsNumpy()), names):
            dt = self.ttype(i)
            if name in self.dtype_dict and str(np.dtype(self.dtype_dict[name])) != dt:
                raise ConfigError(f"{self.where}: input '{name}' is {dt} in the model, dtype_dict says "
                                  f"{np.dtype(self.dtype_dict[name])}")
            if dt not in ("float32",) + _QUANT:
                raise UnsupportedError(f"{self.where}: input '{name}' is {dt}; mera takes float32, int8 or uint8")
            shape = self.shape(i)
            if name in self.shape_dict:
                given = [int(d) for d in self.shape_dict[name]]
                if len(given) != len(shape):
                    raise ConfigError(f"{self.where}: input '{name}' has rank {len(shape)} in the model, shape_dict "
                                      f"gives {given}")
                if self.layout == "NCHW" and len(given) == 4:
                    given = [given[0], given[2], given[3], given[1]]
                if shape and shape[0] >= 1 and given[0] != shape[0]:
                    batches.add((shape[0], given[0]))
                shape = given
            if any(d < 1 for d in shape):
                raise ConfigError(f"{self.where}: input '{name}' has dynamic shape {shape}; give it in shape_dict")
            qp = self.act_qparams(i) if dt in _QUANT else None
            if dt in _QUANT and qp is None:
                raise UnsupportedError(f"{self.where}: input '{name}' is {dt} without quantization parameters")
            if len(shape) == 4 and self.layout == "NCHW":
                v = self.b.input(_sanitize(name), [shape[0], shape[3], shape[1], shape[2]], dt, layout="NCHW",
                                 qparams=qp)
                v = self.b.transpose(v, axes=[0, 2, 3, 1], name=self.b._fresh(_sanitize(name) + ".nhwc"))
            else:
                v = self.b.input(_sanitize(name), shape, dt, layout="NHWC" if len(shape) == 4 else None, qparams=qp)
            self.vals[i] = _T(value=v)

        if len(batches) == 1:
            self.batch = batches.pop()

    def collect(self) -> List[_Op]:
        ops, bad = [], []
        for k in range(self.g.OperatorsLength()):
            raw = self.g.Operators(k)
            name = self.opname(raw)
            op = _Op(k, name, raw, None)
            if name not in CONVERTERS:
                bad.append(f"  {op}")
                continue
            op.opts = self.options(raw)
            ops.append(op)
        if bad:
            raise UnsupportedError(f"{self.where}: {len(bad)} operator{'s' if len(bad) > 1 else ''} cannot be "
                                   "imported:\n" + "\n".join(bad))
        return ops

    def run(self) -> Tuple[ir.Module, Dict[str, np.ndarray]]:
        ops = self.collect()
        self.inputs()
        bad = []
        for op in ops:
            self.op = op
            try:
                CONVERTERS[op.name](self, op, op.opts)
            except (UnsupportedError, _Unjudged) as e:
                if isinstance(e, UnsupportedError):
                    bad.append(f"  {op}: {e}")
                for o in op.outputs:
                    self.vals[o] = _T()     # later users of a failed output are not judged
            except FormatError:
                raise
            except MeraError as e:
                raise type(e)(f"{self.where}: {op}: {e}") from None
        if bad:
            raise UnsupportedError(f"{self.where}: {len(bad)} operator{'s' if len(bad) > 1 else ''} cannot be "
                                   "imported:\n" + "\n".join(bad))
        self.op = None
        outs = []
        for i in (int(i) for i in self.g.OutputsAsNumpy()):
            t = self.get(i)
            v = t.value if t.value is not None else self.const_value(i, "output")
            if self.layout == "NCHW" and len(v.shape) == 4:
                v = self.b.transpose(v, axes=[0, 3, 1, 2], name=self.b._fresh(_sanitize(self.tname(i)) + ".nchw"))
            outs.append(v)
        return self.b.finish(outs), self.b.params

    # -- helpers for converters ---------------------------------------------------------

    def data_in(self, op: _Op, k: int = 0) -> ir.Value:
        if k >= len(op.inputs) or op.inputs[k] < 0:
            raise FormatError(f"{self.where}: {op} lacks input {k}")
        i = op.inputs[k]
        t = self.get(i)
        if t.value is None and t.const is None:
            raise _Unjudged()
        dt = self.ttype(i)
        if t.const is None and dt not in ("float32",) + _QUANT:
            raise UnsupportedError(f"its input '{self.tname(i)}' is {dt}; mera's run-time tensors are float32, "
                                   "int8 or uint8" + (" (16x8 quantization is not supported)" if dt == "int16" else ""))
        return self.run_value(i, f"in{k}")

    def param(self, data: np.ndarray, what: str, qparams=None) -> ir.Value:
        return self.b.param(self.fresh(what), np.ascontiguousarray(data), qparams=qparams)


# -- weights and biases ------------------------------------------------------------------

def _float_bias(units: np.ndarray, ats: np.ndarray) -> np.ndarray:
    """mera's float bias for TFLite's int32 bias ``units`` in units of ``ats = f32(s_x) * f32(s_w[c])``.

    mera's per-channel requantization adds it as ``f32(acc) + f32(b / ats)``
    (docs/numerics.md, section 3); TFLite adds the integer to the int32
    accumulator. With ``b = f32(units * ats)`` the quotient is exactly
    ``units`` for about 89% of (units, ats) pairs; for the rest no float32 b
    divides back to it (consecutive floats' quotients step over it), and the
    quotient is one float step away, which the float sum with ``acc`` mostly
    rounds away again.
    """
    return (units.astype(np.float64) * ats.astype(np.float32).astype(np.float64)).astype(np.float32)


def _weights(imp: _Importer, op: _Op, k: int, axis: int, n: int, x_dtype: str):
    """(data, IR qparams) of a constant weight input; int8 per output channel for a quantized op."""
    i = op.inputs[k]
    t = imp.get(i)
    if t.const is None:
        raise UnsupportedError(f"its weight '{imp.tname(i)}' is computed at run time; mera needs a constant weight")
    data, dt = t.const, imp.ttype(i)
    if x_dtype not in _QUANT:
        if dt == "float16":
            data = data.astype(np.float32)
        elif dt != "float32":
            raise UnsupportedError(f"{dt} weights on a float32 input (hybrid quantization)")
        return data.astype(np.float32), None
    if dt not in _QUANT:
        raise UnsupportedError(f"{dt} weights on a {x_dtype} input")
    q = imp.qparams(i)
    if q is None:
        raise UnsupportedError(f"its weight '{imp.tname(i)}' has no quantization parameters")
    s, z, qaxis = q
    if len(s) > 1 and qaxis != axis:
        raise UnsupportedError(f"its weight '{imp.tname(i)}' is quantized along axis {qaxis}; mera needs the output "
                               f"channel axis {axis}")
    if dt == "uint8":                # int8 with the zero point moved: every (w - z) is unchanged
        data = (data.astype(np.int16) - 128).astype(np.int8)
        z = z - 128
    scales = np.broadcast_to(s, (n,)).astype(np.float64).copy()
    zps = np.broadcast_to(z, (n,)).astype(np.int32).copy()
    return data.astype(np.int8), (scales, zps, 0)


def _bias(imp: _Importer, op: _Op, k: int, n: int, x: ir.Value, wq) -> Optional[np.ndarray]:
    if len(op.inputs) <= k or op.inputs[k] < 0:
        return None
    i = op.inputs[k]
    t = imp.get(i)
    if t.const is None:
        raise UnsupportedError(f"its bias '{imp.tname(i)}' is computed at run time")
    b = t.const.reshape(-1)
    if b.size != n:
        raise UnsupportedError(f"a bias of {b.size} values for {n} output channels")
    dt = imp.ttype(i)
    if wq is None:
        return (b.astype(np.float32))
    if dt != "int32":
        raise UnsupportedError(f"a {dt} bias on a quantized op; TFLite's int8 ops take int32 biases")
    ats = np.float32(x.qparams[0]) * wq[0].astype(np.float32)
    return _float_bias(b, ats)


def _same_pads(in_hw, k, s, d, padding: int) -> List[int]:
    """TFLite's SAME/VALID padding as mera's [top, left, bottom, right]."""
    if padding == 1:   # VALID
        return [0, 0, 0, 0]
    pads = []
    for size, kk, ss, dd in zip(in_hw, k, s, d):
        out = -(-size // ss)
        total = max((out - 1) * ss + (kk - 1) * dd + 1 - size, 0)
        pads.append((total // 2, total - total // 2))
    return [pads[0][0], pads[1][0], pads[0][1], pads[1][1]]


def _check_nhwc(imp: _Importer, x: ir.Value, what: str) -> None:
    if len(x.shape) != 4:
        raise UnsupportedError(f"{what} needs a 4-D NHWC input, got shape {list(x.shape)}")


def _conv_common(imp: _Importer, op: _Op, o, depthwise: bool) -> None:
    x = imp.data_in(op)
    _check_nhwc(imp, x, "a convolution")
    wshape = imp.shape(op.inputs[1])
    if len(wshape) != 4:
        raise UnsupportedError(f"a {len(wshape)}-D convolution weight")
    cin = x.shape[3]
    if depthwise:
        n = wshape[3]
        w, wq = _weights(imp, op, 1, 3, n, x.dtype)
        w = np.ascontiguousarray(w.transpose(3, 1, 2, 0))       # [1, H, W, C*M] -> OHWI [C*M, H, W, 1]
        mult = int(o.DepthMultiplier()) if o is not None and o.DepthMultiplier() else n // cin
        if n != cin * mult:
            raise UnsupportedError(f"a depthwise weight of {n} channels for {cin} input channels and depth "
                                   f"multiplier {mult}")
        groups = cin
    else:
        n = wshape[0]
        w, wq = _weights(imp, op, 1, 0, n, x.dtype)
        if cin % wshape[3]:
            raise UnsupportedError(f"a weight of {wshape[3]} input channels for a {cin}-channel input")
        groups = cin // wshape[3]
    s = [int(o.StrideH()), int(o.StrideW())]
    d = [int(o.DilationHFactor()) or 1, int(o.DilationWFactor()) or 1]
    act = int(o.FusedActivationFunction())
    pads = _same_pads(x.shape[1:3], [w.shape[1], w.shape[2]], s, d, int(o.Padding()))
    bias = _bias(imp, op, 2, n, x, wq)
    wv = imp.param(w, "weight", qparams=wq)
    bv = None if bias is None else imp.param(bias, "bias")
    extra = {"depthwise_saturate": "no"} if wq is not None else {}
    v = imp.emit("conv2d", x, wv, bv, strides=s, padding=pads, dilation=d, groups=groups, layout="NHWC",
                 kernel_layout="OHWI", activation="relu" if act in (1, 3) else "none", **extra, **imp.qout())
    imp.set_out(v, act if act != 1 else 0)   # RELU is the op's own activation


@converts("CONV_2D")
def _conv2d(imp: _Importer, op: _Op, o) -> None:
    _conv_common(imp, op, o, depthwise=False)


@converts("DEPTHWISE_CONV_2D")
def _depthwise(imp: _Importer, op: _Op, o) -> None:
    _conv_common(imp, op, o, depthwise=True)


@converts("FULLY_CONNECTED")
def _fully_connected(imp: _Importer, op: _Op, o) -> None:
    x = imp.data_in(op)
    wshape = imp.shape(op.inputs[1])
    if len(wshape) != 2:
        raise UnsupportedError(f"a {len(wshape)}-D weight")
    if o is not None and o.WeightsFormat() != 0:
        raise UnsupportedError("shuffled weights (weights_format SHUFFLED4x16INT8)")
    n, k = wshape
    w, wq = _weights(imp, op, 1, 0, n, x.dtype)
    keep = bool(o.KeepNumDims()) if o is not None else False
    if x.shape[-1] != k or (len(x.shape) != 2 and not keep):
        if int(np.prod(x.shape)) % k:
            raise UnsupportedError(f"an input of shape {list(x.shape)} for a weight of {k} columns")
        x = imp.emit("reshape", x, shape=[-1, k])
    bias = _bias(imp, op, 2, n, x, wq)
    act = int(o.FusedActivationFunction()) if o is not None else 0
    wv = imp.param(w, "weight", qparams=wq)
    bv = None if bias is None else imp.param(bias, "bias")
    v = imp.emit("dense", x, wv, bv, activation="relu" if act in (1, 3) else "none", **imp.qout())
    imp.set_out(v, act if act != 1 else 0)   # RELU is the op's own activation


def _binary(mera_op: str):
    def convert(imp: _Importer, op: _Op, o) -> None:
        a, b = imp.data_in(op, 0), imp.data_in(op, 1)
        if a.dtype != b.dtype:
            raise UnsupportedError(f"{mera_op} of a {a.dtype} and a {b.dtype} tensor")
        act = int(o.FusedActivationFunction()) if o is not None else 0
        v = imp.emit(mera_op, a, b, activation="relu" if act in (1, 3) else "none", **imp.qout())
        imp.set_out(v, act if act != 1 else 0)   # RELU is the op's own activation
    return convert


converts("ADD")(_binary("add"))
converts("MUL")(_binary("mul"))


@converts("SUB")
def _sub(imp: _Importer, op: _Op, o) -> None:
    a = imp.data_in(op, 0)
    t = imp.get(op.inputs[1])
    if t.value is not None or imp.ttype(op.inputs[1]) != "float32" or a.dtype != "float32":
        raise UnsupportedError("SUB is supported on float32 tensors with a constant right-hand side")
    act = int(o.FusedActivationFunction()) if o is not None else 0
    v = imp.emit("add", a, np.ascontiguousarray(-t.const.astype(np.float32)))
    imp.set_out(v, act)


def _pool(mera_op: str):
    def convert(imp: _Importer, op: _Op, o) -> None:
        x = imp.data_in(op)
        _check_nhwc(imp, x, "a pool")
        k, s = [int(o.FilterHeight()), int(o.FilterWidth())], [int(o.StrideH()), int(o.StrideW())]
        pads = _same_pads(x.shape[1:3], k, s, [1, 1], int(o.Padding()))
        act = int(o.FusedActivationFunction())
        if mera_op == "avg_pool2d":     # TFLite divides by the number of taps inside the input
            v = imp.emit(mera_op, x, kernel=k, strides=s, padding=pads, layout="NHWC", count_include_pad=0,
                         **imp.qout())
        else:
            v = imp.emit(mera_op, x, kernel=k, strides=s, padding=pads, layout="NHWC")
        imp.set_out(v, act)
    return convert


converts("AVERAGE_POOL_2D")(_pool("avg_pool2d"))
converts("MAX_POOL_2D")(_pool("max_pool2d"))


@converts("MEAN")
def _mean(imp: _Importer, op: _Op, o) -> None:
    x = imp.data_in(op)
    rank = len(x.shape)
    axes = sorted({a % rank for a in imp.const_ints(op.inputs[1], "the MEAN axes")})
    keep = int(bool(o.KeepDims())) if o is not None else 0
    imp.set_out(imp.emit("mean", x, axes=axes, keepdims=keep, **imp.qout()))


def _reshape_to(imp: _Importer, op: _Op, x: ir.Value, shape: Sequence[int]) -> None:
    shape = [int(d) for d in shape]
    if list(x.shape) != shape:
        x = imp.emit("reshape", x, shape=shape)
    imp.set_out(x)


@converts("RESHAPE")
def _reshape(imp: _Importer, op: _Op, o) -> None:
    x = imp.data_in(op)
    if len(op.inputs) > 1 and op.inputs[1] >= 0:
        shape = imp.const_ints(op.inputs[1], "the RESHAPE shape")
    elif o is not None and o.NewShapeLength():
        shape = [int(v) for v in o.NewShapeAsNumpy()]
    else:
        shape = imp.shape(op.outputs[0])
    n = int(np.prod(x.shape))
    if imp.batch is not None and shape and shape[0] == imp.batch[0] and -1 not in shape and \
            int(np.prod(shape)) != n and x.shape[0] == imp.batch[1]:
        shape = [imp.batch[1]] + shape[1:]      # a shape written for the file's batch, under shape_dict's batch
    if shape.count(-1) == 1:
        rest = int(np.prod([d for d in shape if d != -1]))
        shape = [n // rest if d == -1 else d for d in shape]
    if int(np.prod(shape)) != n:
        raise UnsupportedError(f"RESHAPE of {list(x.shape)} to {shape}")
    _reshape_to(imp, op, x, shape)


@converts("SQUEEZE")
def _squeeze(imp: _Importer, op: _Op, o) -> None:
    x = imp.data_in(op)
    dims = [int(v) % len(x.shape) for v in o.SqueezeDimsAsNumpy()] if o is not None and o.SqueezeDimsLength() \
        else [i for i, d in enumerate(x.shape) if d == 1]
    _reshape_to(imp, op, x, [d for i, d in enumerate(x.shape) if i not in dims])


@converts("SOFTMAX")
def _softmax(imp: _Importer, op: _Op, o) -> None:
    if o is not None and o.Beta() != 1.0:
        raise UnsupportedError(f"SOFTMAX with beta {o.Beta()}: mera's softmax has beta 1")
    x = imp.data_in(op)
    imp.set_out(imp.emit("softmax", x, axis=-1, **imp.qout()))


@converts("RELU")
def _relu(imp: _Importer, op: _Op, o) -> None:
    imp.set_out(imp.data_in(op), 1)


@converts("RELU6")
def _relu6(imp: _Importer, op: _Op, o) -> None:
    imp.set_out(imp.data_in(op), 3)


@converts("RELU_N1_TO_1")
def _relu_n1(imp: _Importer, op: _Op, o) -> None:
    imp.set_out(imp.data_in(op), 2)


@converts("HARD_SWISH")
def _hard_swish(imp: _Importer, op: _Op, o) -> None:
    imp.set_out(imp.emit("hardswish", imp.data_in(op), **imp.qout()))


@converts("LOGISTIC")
def _logistic(imp: _Importer, op: _Op, o) -> None:
    imp.set_out(imp.emit("sigmoid", imp.data_in(op), **imp.qout()))


@converts("LEAKY_RELU")
def _leaky_relu(imp: _Importer, op: _Op, o) -> None:
    imp.set_out(imp.emit("leaky_relu", imp.data_in(op), alpha=float(o.Alpha()), **imp.qout()))


@converts("DENSIFY")
def _densify(imp: _Importer, op: _Op, o) -> None:
    t = imp.get(op.inputs[0])          # the sparse constant, expanded when read (_Importer.densify)
    if t.const is None:
        raise UnsupportedError("DENSIFY of a run-time tensor")
    imp.vals[op.outputs[0]] = _T(const=t.const)


@converts("STRIDED_SLICE")
def _strided_slice(imp: _Importer, op: _Op, o) -> None:
    """Constant begin/end/strides with TFLite's masks; positive strides, no ellipsis or new axes: one
    (strided) slice per cut axis, then a reshape for the shrunk axes."""
    x = imp.data_in(op)
    shape = list(x.shape)
    rank = len(shape)
    begin, end, strides = (imp.const_ints(op.inputs[k], f"the STRIDED_SLICE {w}")
                           for k, w in ((1, "begin"), (2, "end"), (3, "strides")))
    bm, em, sm = int(o.BeginMask()), int(o.EndMask()), int(o.ShrinkAxisMask())
    if int(o.EllipsisMask()) or int(o.NewAxisMask()) or (hasattr(o, "Offset") and o.Offset()):
        raise UnsupportedError("STRIDED_SLICE with an ellipsis, new axes or offset")
    if not len(begin) == len(end) == len(strides) <= rank:
        raise UnsupportedError(f"STRIDED_SLICE begin/end/strides {begin}/{end}/{strides} of a rank-{rank} tensor")
    v, out_shape = x, []
    for d in range(rank):
        n = shape[d]
        if d >= len(begin):
            out_shape.append(n)
            continue
        st = strides[d]
        if st < 1:
            raise UnsupportedError(f"STRIDED_SLICE stride {st} on axis {d}: mera's slice steps are >= 1")
        b = 0 if bm >> d & 1 else begin[d]
        e = n if em >> d & 1 else end[d]
        b = min(max(b + n if b < 0 else b, 0), n)
        e = min(max(e + n if e < 0 else e, 0), n)
        if sm >> d & 1:
            e, st = b + 1, 1
            if b >= n:
                raise UnsupportedError(f"STRIDED_SLICE shrinks axis {d} of {n} at {b}")
        if e <= b:
            raise UnsupportedError(f"STRIDED_SLICE of axis {d} is empty ({b}:{e})")
        if (b, e, st) != (0, n, 1):
            v = imp.emit("slice", v, axis=d, begin=b, end=e, **({"step": st} if st != 1 else {}))
        if not sm >> d & 1:
            out_shape.append(-(-(e - b) // st))
    if list(v.shape) != out_shape:
        if not out_shape:
            raise UnsupportedError("STRIDED_SLICE to a 0-d tensor")
        v = imp.emit("reshape", v, shape=out_shape)
    imp.set_out(v)


@converts("DEPTH_TO_SPACE", "SPACE_TO_DEPTH")
def _depth_space(imp: _Importer, op: _Op, o) -> None:
    """TFLite's NHWC forms: out[n, h*b + i, w*b + j, c] = in[n, h, w, (i*b + j)*C + c] and its inverse, as
    reshape, transpose, reshape (byte moves)."""
    x = imp.data_in(op)
    _check_nhwc(imp, x, op.name)
    b = int(o.BlockSize())
    n, h, w, c = x.shape
    if b < 1:
        raise UnsupportedError(f"{op.name} block size {b}")
    if op.name == "DEPTH_TO_SPACE":
        if c % (b * b):
            raise UnsupportedError(f"DEPTH_TO_SPACE by {b} of {c} channels")
        v = imp.emit("reshape", x, shape=[n, h, w, b, b, c // (b * b)])
        v = imp.emit("transpose", v, axes=[0, 1, 3, 2, 4, 5])
        imp.set_out(imp.emit("reshape", v, shape=[n, h * b, w * b, c // (b * b)]))
    else:
        if h % b or w % b:
            raise UnsupportedError(f"SPACE_TO_DEPTH by {b} of {h}x{w}")
        v = imp.emit("reshape", x, shape=[n, h // b, b, w // b, b, c])
        v = imp.emit("transpose", v, axes=[0, 1, 3, 2, 4, 5])
        imp.set_out(imp.emit("reshape", v, shape=[n, h // b, w // b, c * b * b]))


def _transpose_conv(imp: _Importer, op: _Op, x: ir.Value, w_in: int, b_in: Optional[int], strides: List[int],
                    same: bool) -> None:
    """A float transposed convolution to the shape of the operator's output tensor, padded as TFLite
    pads it: the forward convolution's SAME/VALID padding with the output as its input."""
    _check_nhwc(imp, x, "a transposed convolution")
    if x.dtype != "float32":
        raise UnsupportedError("a quantized transposed convolution (mera imports float TRANSPOSE_CONV)")
    wt = imp.get(w_in)
    if wt.const is None or len(wt.const.shape) != 4:
        raise UnsupportedError("a run-time or non-4-D transposed-convolution weight")
    w = wt.const.astype(np.float32)                      # OHWI [C_out, KH, KW, C_in]
    if w.shape[3] != x.shape[3]:
        raise UnsupportedError(f"a weight of {w.shape[3]} input channels for a {x.shape[3]}-channel input")
    out = imp.shape(op.outputs[0])
    if len(out) != 4 or out[3] != w.shape[0]:
        raise UnsupportedError(f"output shape {out} for a weight of {w.shape[0]} output channels")
    pads, opad = [0, 0, 0, 0], [0, 0]
    for a in range(2):
        k, s, n_in = w.shape[1 + a], strides[a], x.shape[1 + a]
        full = (n_in - 1) * s + k
        total = max((n_in - 1) * s + k - out[1 + a], 0) if same else 0
        before = total // 2
        after = full - out[1 + a] - before
        if after < 0:
            opad[a], after = -after, 0
        if opad[a] >= s:
            raise UnsupportedError(f"output size {out[1 + a]} from {n_in} by stride {s} and kernel {k}")
        pads[a], pads[2 + a] = before, after
    bias = None
    if b_in is not None and b_in >= 0:
        bt = imp.get(b_in)
        if bt.const is None:
            raise UnsupportedError("a run-time transposed-convolution bias")
        bias = imp.param(bt.const.astype(np.float32).reshape(-1), "bias")
    wv = imp.param(np.ascontiguousarray(w.transpose(3, 0, 1, 2)), "weight")   # -> [C_in, C_out, KH, KW]
    imp.set_out(imp.emit("conv_transpose2d", x, wv, bias, strides=list(strides), padding=pads, output_padding=opad,
                         layout="NHWC"))


@converts("TRANSPOSE_CONV")
def _transpose_conv_builtin(imp: _Importer, op: _Op, o) -> None:
    act = int(o.FusedActivationFunction()) if hasattr(o, "FusedActivationFunction") else 0
    if act:
        raise UnsupportedError(f"fused activation {_FUSED.get(act, act)} on TRANSPOSE_CONV")
    _transpose_conv(imp, op, imp.data_in(op, 2), op.inputs[1], op.inputs[3] if len(op.inputs) > 3 else None,
                    [int(o.StrideH()), int(o.StrideW())], int(o.Padding()) == 0)


@converts("CUSTOM:Convolution2DTransposeBias")
def _transpose_conv_bias(imp: _Importer, op: _Op, o) -> None:
    """MediaPipe's transposed convolution with bias (LiteRT and XNNPACK run it): inputs data, OHWI weight,
    bias; custom options are TfLiteTransposeConvParams {padding (1 SAME, 2 VALID), stride_w, stride_h}."""
    raw = op.raw.CustomOptionsAsNumpy().tobytes() if op.raw.CustomOptionsLength() else b""
    if len(raw) < 12:
        raise FormatError(f"{imp.where}: {op}: custom options of {len(raw)} bytes (TfLiteTransposeConvParams "
                          "needs 12)")
    padding, sw, sh = np.frombuffer(raw[:12], "<i4").tolist()
    if padding not in (1, 2) or sw < 1 or sh < 1:
        raise UnsupportedError(f"padding {padding}, strides {sh}x{sw}")
    _transpose_conv(imp, op, imp.data_in(op, 0), op.inputs[1], op.inputs[2] if len(op.inputs) > 2 else None, [sh, sw],
                    padding == 1)


@converts("PRELU")
def _prelu(imp: _Importer, op: _Op, o) -> None:
    """x >= 0 ? x : alpha * x on float32 as relu(x) + (-alpha) * relu(-x): exact, the alpha product
    being the one rounding TFLite's kernel makes too."""
    x = imp.data_in(op)
    t = imp.get(op.inputs[1])
    if x.dtype != "float32" or t.const is None:
        raise UnsupportedError("PRELU is supported on float32 tensors with a constant alpha")
    neg_alpha = np.ascontiguousarray(-t.const.astype(np.float32))
    neg = imp.emit("relu", imp.emit("mul", x, np.array([-1.0], np.float32)))
    imp.set_out(imp.emit("add", imp.emit("relu", x), imp.emit("mul", neg, neg_alpha)))


@converts("QUANTIZE")
def _quantize(imp: _Importer, op: _Op, o) -> None:
    x = imp.data_in(op)
    qp = imp.act_qparams(op.outputs[0])
    if qp is None:
        raise UnsupportedError(f"QUANTIZE to {imp.ttype(op.outputs[0])}: mera's quantized tensors are int8 or uint8")
    if x.dtype == "float32":
        imp.set_out(imp.emit("quantize", x, scale=qp[0], zero_point=qp[1], dtype=imp.ttype(op.outputs[0])))
    else:
        imp.set_out(imp.emit("requantize", x, **imp.qout()))


@converts("DEQUANTIZE")
def _dequantize(imp: _Importer, op: _Op, o) -> None:
    i = op.inputs[0]
    t = imp.get(i)
    if t.value is None and t.const is not None:      # float16 or int8 weights stored compressed: fold
        if imp.ttype(i) == "float16":
            imp.vals[op.outputs[0]] = _T(const=t.const.astype(np.float32))
            return
        q = imp.qparams(i)
        if q is None:
            raise UnsupportedError(f"DEQUANTIZE of a {imp.ttype(i)} constant without parameters")
        s, z, axis = q
        shape = [1] * t.const.ndim
        if len(s) > 1:
            shape[axis] = -1
        f = (t.const.astype(np.float64) - z.reshape(shape)) * s.reshape(shape)
        imp.vals[op.outputs[0]] = _T(const=f.astype(np.float32))
        return
    imp.set_out(imp.emit("dequantize", imp.data_in(op)))


@converts("PAD", "PADV2")
def _pad(imp: _Importer, op: _Op, o) -> None:
    x = imp.data_in(op)
    p = imp.const_ints(op.inputs[1], "the PAD paddings")
    rank = len(x.shape)
    if len(p) != 2 * rank or any(v < 0 for v in p):
        raise UnsupportedError(f"paddings {p} for a {rank}-D tensor")
    value = 0.0
    if op.name == "PADV2" and len(op.inputs) > 2 and op.inputs[2] >= 0:
        c = imp.get(op.inputs[2]).const
        if c is None:
            raise UnsupportedError("a run-time pad value")
        qp = imp.act_qparams(op.inputs[2])
        value = float(c.reshape(-1)[0]) if qp is None else (float(c.reshape(-1)[0]) - qp[1]) * qp[0]
    before, after = p[0::2], p[1::2]
    imp.set_out(imp.emit("pad", x, pads=before + after, value=value))


@converts("CONCATENATION")
def _concat(imp: _Importer, op: _Op, o) -> None:
    xs = [imp.data_in(op, k) for k in range(len(op.inputs))]
    if len({x.dtype for x in xs}) != 1:
        raise UnsupportedError("CONCATENATION of tensors of different dtypes")
    axis = int(o.Axis()) % len(xs[0].shape)
    act = int(o.FusedActivationFunction())
    v = imp.emit("concat", *xs, axis=axis, **imp.qout())
    imp.set_out(v, act)


@converts("RESIZE_NEAREST_NEIGHBOR", "RESIZE_BILINEAR")
def _resize(imp: _Importer, op: _Op, o) -> None:
    x = imp.data_in(op)
    _check_nhwc(imp, x, "a resize")
    size = imp.const_ints(op.inputs[1], "the resize size")
    if len(size) != 2 or min(size) < 1:
        raise UnsupportedError(f"a resize to size {size}")
    align = bool(o.AlignCorners()) if o is not None else False
    half = bool(o.HalfPixelCenters()) if o is not None else False
    in_hw = list(x.shape[1:3])
    if op.name == "RESIZE_NEAREST_NEIGHBOR":
        # mera's nearest is min(floor(dst * in / out), in - 1): TFLite's without half-pixel centers, and with
        # them too when every output size is a whole multiple of the input's (the two then pick the same pixel)
        integer_up = all(o_ % i == 0 for o_, i in zip(size, in_hw))
        if align or (half and not integer_up):
            raise UnsupportedError(f"RESIZE_NEAREST_NEIGHBOR with align_corners={int(align)}, half_pixel_centers="
                                   f"{int(half)} from {tuple(in_hw)} to {tuple(size)}: mera's nearest is "
                                   "floor(dst * in / out)")
        attrs: Dict[str, Any] = {"method": "nearest"}
    else:
        if align == half:
            raise UnsupportedError(f"RESIZE_BILINEAR with align_corners={int(align)} and half_pixel_centers="
                                   f"{int(half)}: mera's bilinear has align_corners or half-pixel centers, one of "
                                   "the two")
        if 1 in size:
            raise UnsupportedError(f"RESIZE_BILINEAR to an output size of 1 ({tuple(size)})")
        attrs = {"method": "bilinear", "align_corners": int(align)}
    imp.set_out(imp.emit("upsample", x, size=size, layout="NHWC", **attrs, **imp.qout()))


@converts("TRANSPOSE")
def _transpose(imp: _Importer, op: _Op, o) -> None:
    x = imp.data_in(op)
    perm = [p % len(x.shape) for p in imp.const_ints(op.inputs[1], "the TRANSPOSE permutation")]
    if sorted(perm) != list(range(len(x.shape))):
        raise UnsupportedError(f"TRANSPOSE with permutation {perm} of a {len(x.shape)}-D tensor")
    imp.set_out(imp.emit("transpose", x, axes=perm))


# -- entry point ---------------------------------------------------------------------------

def _load(model: Any) -> Tuple[Any, str]:
    tfl = _tflite()
    where = "<bytes>"
    if isinstance(model, (str, os.PathLike)):
        where = repr(os.fspath(model))
        try:
            with open(model, "rb") as f:
                data = f.read()
        except OSError as e:
            raise MeraIOError(f"cannot read TFLite model {where}: {e.strerror or e}") from None
    elif isinstance(model, (bytes, bytearray, memoryview)):
        data = bytes(model)
    elif hasattr(model, "_tab") and hasattr(model, "Subgraphs"):
        # a parsed model (tflite.Model, or the same schema generated elsewhere): read it with tflite's classes
        m = tfl.Model()
        m.Init(model._tab.Bytes, model._tab.Pos)
        return m, "<Model>"
    else:
        raise ConfigError(f"from_tflite takes a path, bytes or a tflite.Model, got {type(model).__name__}")
    if len(data) < 8 or not tfl.Model.ModelBufferHasIdentifier(data, 0):
        raise FormatError(f"{where} is not a TFLite model (no 'TFL3' file identifier)")
    try:
        return tfl.Model.GetRootAs(data, 0), where
    except Exception as e:  # noqa: BLE001 - a corrupt flatbuffer fails anywhere in the generated code
        raise FormatError(f"{where}: the TFLite flatbuffer does not parse: {e}") from None


def from_tflite(model: Any, shape_dict: Optional[Dict[str, Sequence[int]]] = None,
                dtype_dict: Optional[Dict[str, Any]] = None, layout: str = "NHWC"
                ) -> Tuple[ir.Module, Dict[str, np.ndarray]]:
    """Import a TFLite model, float32 or int8/uint8-quantized, into mera IR.

    Parameters
    ----------
    model : str, os.PathLike, bytes or tflite.Model
        A ``.tflite`` file, its bytes, or a model parsed with the ``tflite``
        package.
    shape_dict : dict of str to shape, optional
        Shapes for inputs whose shape the file leaves open (or to override
        it); in the import's layout.
    dtype_dict : dict of str to dtype, optional
        Expected input dtypes; a mismatch with the file is a ConfigError.
    layout : {"NHWC", "NCHW"}
        TFLite is NHWC and the graph stays NHWC inside. With ``"NCHW"`` the
        module takes and returns 4-D tensors in NCHW, with a transpose at each
        end.

    Returns
    -------
    (mera.ir.Module, dict of str to numpy.ndarray)

    Raises
    ------
    mera.UnsupportedError
        One error listing every operator (index and name) that cannot be imported.
    mera.FormatError
        The file is not a valid TFLite flatbuffer, or a tensor, buffer or
        quantization parameter in it is inconsistent (named by index).
    mera.MeraIOError
        The file cannot be read.
    """
    if layout not in ("NCHW", "NHWC"):
        raise ConfigError(f"layout must be 'NCHW' or 'NHWC', got {layout!r}")
    m, where = _load(model)
    try:
        return _Importer(m, where, shape_dict, dtype_dict, layout).run()
    except MeraError:
        raise
    except (IndexError, ValueError, TypeError, AttributeError, KeyError, OverflowError, struct.error) as e:
        # the generated reader does not check offsets: a corrupt file fails in it
        raise FormatError(f"{where}: the TFLite flatbuffer is corrupt ({type(e).__name__}: {e})") from None


__all__ = ["from_tflite", "CONVERTERS"]
