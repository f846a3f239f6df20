"""Import ``torch.export`` programs: float models, and the quantize /
dequantize (QDQ) form that PT2E quantization produces.

A QDQ graph computes in float between ``dequantize`` and ``quantize`` nodes;
it has no integer kernel of its own. The importer lowers each
``dequantize -> op [-> relu] -> quantize`` chain to the quantized op of mera's
IR (the integer contract of docs/numerics.md), with the output parameters of
the ``quantize`` node. Values that are not in such a chain stay float, with
explicit ``dequantize`` nodes.
"""

from __future__ import annotations

import operator
import os
import re
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from .. import ir
from ..errors import ConfigError, UnsupportedError
from ._torch_ops import CONVERTERS, Context, Tensor, converts

_TORCH_DIR = os.path.dirname(torch.__file__)
_STACK_LINE = re.compile(r'File "(.+)", line (\d+), in (\S+)')

_Q_OPS = {"quantized_decomposed::quantize_per_tensor"}
_DQ_OPS = {"quantized_decomposed::dequantize_per_tensor", "quantized_decomposed::dequantize_per_channel"}
_QRANGE = {torch.uint8: ("uint8", 0, 255), torch.int8: ("int8", -128, 127)}


class _DQ:
    """A dequantized view of a quantized graph tensor (not yet materialized)."""

    def __init__(self, tensor: Tensor):
        self.tensor = tensor
        self.float: Optional[Tensor] = None


class _DQWeight:
    """A per-channel (or per-tensor) dequantized int8 constant: a quantized weight."""

    def __init__(self, data: np.ndarray, qparams: Any, name: str):
        self.data, self.qparams, self.name = data, qparams, name
        self.float_tensor = None


def _scalar(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v.item()
    return v


@converts("aten::_native_batch_norm_legit_no_training")
def _bn_no_training(ctx, x, weight, bias, mean, var, momentum, eps):
    return [CONVERTERS["aten::batch_norm"](ctx, x, weight, bias, mean, var, False, momentum, eps), None, None]


class _ExportImporter:
    def __init__(self, ep: "torch.export.ExportedProgram", inputs, layout: str):
        self.ep = ep
        self.inputs = inputs
        self.layout = layout
        self.ctx = Context(ir.Builder("main"), layout)
        self.env: Dict[Any, Any] = {}
        self.done: Dict[Any, Any] = {}  # nodes already produced by a lowered chain
        self.lowering = False

    # -- helpers ----------------------------------------------------------

    def op_name(self, node) -> Optional[str]:
        t = node.target
        if t is operator.getitem:
            return "getitem"
        schema = getattr(t, "_schema", None)
        return schema.name if schema is not None else None

    def source(self, node) -> Optional[str]:
        trace = node.meta.get("stack_trace") or ""
        best = None
        for m in _STACK_LINE.finditer(trace):
            path, line, fn = m.groups()
            if not os.path.abspath(path).startswith(_TORCH_DIR):
                best = f"{os.path.basename(path)}:{line} ({fn})"
        return best or node.name

    def scope(self, node) -> Optional[str]:
        stack = node.meta.get("nn_module_stack")
        if not stack:
            return None
        path = list(stack.values())[-1][0]
        return path or None

    def arguments(self, node) -> List[Any]:
        schema = node.target._schema
        args = list(node.args)
        for a in schema.arguments[len(args):]:
            if a.name in node.kwargs:
                args.append(node.kwargs[a.name])
            elif a.has_default_value():
                args.append(a.default_value)
            else:
                args.append(None)
        return args

    def value(self, a: Any) -> Any:
        if isinstance(a, torch.fx.Node):
            return self.env[a]
        if isinstance(a, (list, tuple)):
            return [self.value(x) for x in a]
        return a

    def resolve(self, v: Any) -> Any:
        """Turn QDQ markers into what the converter should see."""
        if isinstance(v, list):
            return [self.resolve(x) for x in v]
        if isinstance(v, _DQ):
            if self.lowering:
                return v.tensor
            if v.float is None:
                v.float = Tensor(self.ctx.emit("dequantize", v.tensor.value), v.tensor.nhwc)
            return v.float
        if isinstance(v, _DQWeight):
            if self.lowering:
                return Tensor(self.ctx.b.param(self.ctx.b._fresh(v.name), v.data, qparams=v.qparams), False)
            if v.float_tensor is None:
                q = v.qparams
                if len(q) == 3:
                    shape = [1] * v.data.ndim
                    shape[q[2]] = -1
                    f = (v.data.astype(np.float32) - q[1].reshape(shape)) * q[0].reshape(shape).astype(np.float32)
                else:
                    f = (v.data.astype(np.float32) - q[1]) * np.float32(q[0])
                v.float_tensor = torch.from_numpy(f.astype(np.float32))
                self.ctx.name_tensor(v.float_tensor, v.name)
            return v.float_tensor
        return v

    # -- QDQ --------------------------------------------------------------

    def quantize(self, node, args) -> Any:
        x, scale, zp, qmin, qmax, dtype = args[:6]
        if dtype not in _QRANGE or (qmin, qmax) != _QRANGE[dtype][1:]:
            raise UnsupportedError(f"quantize_per_tensor to {dtype} with range [{qmin}, {qmax}] is not supported "
                                   "(mera quantizes to the full uint8 or int8 range)")
        t = self.ctx.tensor(self.resolve(x), "quantize")
        v = self.ctx.emit("quantize", t.value, scale=float(_scalar(scale)), zero_point=int(_scalar(zp)),
                          dtype=_QRANGE[dtype][0])
        return Tensor(v, t.nhwc)

    def dequantize(self, node, name: str, args) -> Any:
        x = args[0]
        if isinstance(x, Tensor) and x.quantized:
            return _DQ(x)
        if isinstance(x, torch.Tensor) and x.dtype == torch.int8:
            if name.endswith("per_channel"):
                _, scales, zps, axis = args[:4]
                qp = (np.asarray(scales.detach().double().numpy()), np.asarray(zps.detach().numpy(), np.int32),
                      int(axis))
            else:
                qp = (float(_scalar(args[1])), int(_scalar(args[2])))
            tname = self.ctx._tensor_names.get(id(x), node.name)
            return _DQWeight(np.ascontiguousarray(x.detach().numpy()), qp, tname)
        raise UnsupportedError(f"{name} of a {type(x).__name__} input is not supported at {self.source(node)}")

    def chain(self, node) -> Optional[Tuple[Any, Optional[str]]]:
        """If node's only use is `quantize` (optionally through relu): (quantize node, activation)."""
        users = list(node.users)
        if len(users) != 1:
            return None
        u = users[0]
        act = None
        if self.op_name(u) in ("aten::relu", "aten::relu_") and len(u.users) == 1:
            act, u = "relu", list(u.users)[0]
        if self.op_name(u) in _Q_OPS:
            return u, act
        return None

    def try_lower(self, node, name: str, args) -> Optional[Any]:
        """Convert `node` as a quantized op if its inputs are dequantized values and its result is quantized."""
        flat = []

        def walk(a):
            if isinstance(a, (list, tuple)):
                for e in a:
                    walk(e)
            else:
                flat.append(a)

        walk(args)
        acts = [a for a in flat if isinstance(a, (_DQ, Tensor))]
        if not acts or not all(isinstance(a, _DQ) for a in acts):
            return None
        found = self.chain(node)
        if found is None:
            return None
        qnode, act = found
        # the quantize node's own input is not converted yet; only its parameters are needed
        qargs = [None] + [self.value(a) for a in self.arguments(qnode)[1:]]
        scale, zp, dtype = float(_scalar(qargs[1])), int(_scalar(qargs[2])), qargs[5]
        if dtype not in _QRANGE or (qargs[3], qargs[4]) != _QRANGE[dtype][1:]:
            return None
        self.lowering = True
        self.ctx.pending_qout = {"out_scale": scale, "out_zero_point": zp, "out_dtype": _QRANGE[dtype][0]}
        self.ctx.pending_activation = act
        try:
            result = CONVERTERS[name](self.ctx, *self.resolve(args))
        finally:
            self.lowering = False
            pending_act = self.ctx.pending_activation
            self.ctx.pending_activation = None
        if not isinstance(result, Tensor):
            self.ctx.pending_qout = None
            raise UnsupportedError(f"cannot lower the quantized form of {name} at {self.source(node)}")
        if pending_act is not None:  # the op has no fused activation: add relu
            result = Tensor(self.ctx.emit("relu", result.value), result.nhwc)
        if self.ctx.pending_qout is not None:  # the op keeps its input's parameters: requantize if they differ
            self.ctx.pending_qout = None
            q = result.value.qparams
            if q is None or abs(q[0] - scale) > 0 or q[1] != zp or result.value.dtype != _QRANGE[dtype][0]:
                result = Tensor(self.ctx.emit("requantize", result.value, out_scale=scale, out_zero_point=zp,
                                              out_dtype=_QRANGE[dtype][0]), result.nhwc)
        self.done[qnode] = result
        return result

    # -- walk -------------------------------------------------------------

    def check_supported(self) -> None:
        found: Dict[str, List[str]] = {}
        for node in self.ep.graph.nodes:
            if node.op != "call_function":
                continue
            name = self.op_name(node)
            if name == "getitem" or name in CONVERTERS or name in _Q_OPS or name in _DQ_OPS:
                continue
            found.setdefault(name or str(node.target), []).append(
                f"{self.source(node)}" + (f" in {self.scope(node)}" if self.scope(node) else ""))
        if found:
            from .pytorch import _unsupported_error
            raise _unsupported_error(found)

    def declare(self) -> None:
        sig = self.ep.graph_signature
        state = dict(self.ep.state_dict)
        consts = dict(getattr(self.ep, "constants", {}) or {})
        named = {**sig.inputs_to_parameters, **sig.inputs_to_buffers,
                 **getattr(sig, "inputs_to_lifted_tensor_constants", {})}
        user = list(sig.user_inputs)
        if len(user) != len(self.inputs):
            raise ConfigError(f"the program takes {len(user)} input(s) but input_shapes names {len(self.inputs)}")
        by_name = {n.name: n for n in self.ep.graph.nodes if n.op == "placeholder"}
        for pname, target in named.items():
            t = state.get(target, consts.get(target))
            if t is None:
                raise UnsupportedError(f"exported program has no data for '{target}'")
            self.ctx.name_tensor(t, target)
            self.env[by_name[pname]] = t
        from .pytorch import _nchw
        for (name, shape, dtype), pname in zip(self.inputs, user):
            node = by_name[pname]
            val = node.meta.get("val")
            want = _nchw(shape, self.layout)
            if val is not None and tuple(val.shape) != want:
                raise ConfigError(f"input '{name}': input_shapes gives {shape}, but the program was exported with "
                                  f"{tuple(val.shape)}")
            nhwc = self.layout == "NHWC" and len(shape) == 4
            v = self.ctx.b.input(name, shape, dtype,
                                 layout="NHWC" if nhwc else ("NCHW" if len(shape) == 4 else None))
            self.env[node] = Tensor(v, nhwc)

    def run(self) -> Tuple[ir.Module, Dict[str, np.ndarray]]:
        self.check_supported()
        self.declare()
        ctx = self.ctx
        ctx.pending_qout = None
        ctx.pending_activation = None
        for node in self.ep.graph.nodes:
            if node.op == "placeholder":
                continue
            if node.op == "output":
                from .pytorch import finish_module
                return finish_module(ctx, self.resolve(self.value(node.args[0])))
            if node.op == "get_attr":
                self.env[node] = getattr(self.ep.graph_module, node.target)
                continue
            if node in self.done:
                self.env[node] = self.done[node]
                continue
            name = self.op_name(node)
            ctx.source, ctx.scope = self.source(node), self.scope(node)
            if name == "getitem":
                self.env[node] = self.value(node.args[0])[node.args[1]]
                continue
            args = [self.value(a) for a in self.arguments(node)]
            if name in _Q_OPS:
                self.env[node] = self.quantize(node, args)
            elif name in _DQ_OPS:
                self.env[node] = self.dequantize(node, name, args)
            else:
                lowered = self.try_lower(node, name, args)
                if lowered is not None:
                    self.env[node] = lowered
                    if self.chain(node) and self.op_name(list(node.users)[0]) in ("aten::relu", "aten::relu_"):
                        self.done[list(node.users)[0]] = lowered
                    continue
                try:
                    self.env[node] = CONVERTERS[name](ctx, *self.resolve(args))
                except UnsupportedError as e:
                    raise UnsupportedError(f"{name}: {e}") from None
        raise UnsupportedError("the exported program has no output node")


def import_exported_program(ep: "torch.export.ExportedProgram", inputs, layout: str):
    return _ExportImporter(ep, inputs, layout).run()


__all__ = ["import_exported_program"]
