"""Import ``torch.export`` programs: float models, and the quantize /
dequantize (QDQ) form that PT2E quantization produces.

A QDQ graph computes in float between ``dequantize`` and ``quantize`` nodes;
it has no integer kernel of its own. The importer translates it one to one
(``quantize`` and ``dequantize`` nodes, int8 weights behind a
``dequantize``, float ops between) and then runs the ``lower_qdq`` pass
(csrc/passes/lower_qdq.c), which turns each ``dequantize -> op [-> relu] ->
quantize`` chain into the quantized op of mera's IR (the integer contract of
docs/numerics.md) with the output parameters of the ``quantize`` node.
Values that are not in such a chain stay float, with explicit
``dequantize`` nodes.
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
from ._passes import run_passes
from ._torch_numerics import probe_rounding
from ._torch_ops import CONVERTERS, Context, Tensor, Unavailable, converts

_TORCH_DIR = os.path.dirname(torch.__file__)
_STACK_LINE = re.compile(r'File "(.+)", line (\d+), in (\S+)')

_Q_OPS = {"quantized_decomposed::quantize_per_tensor"}
_DQ_OPS = {"quantized_decomposed::dequantize_per_tensor", "quantized_decomposed::dequantize_per_channel"}
_QRANGE = {torch.uint8: ("uint8", 0, 255), torch.int8: ("int8", -128, 127)}


class _DQWeight:
    """A per-channel (or per-tensor) dequantized int8 constant: a quantized weight, emitted on first use."""

    def __init__(self, data: np.ndarray, qparams: Any, name: str):
        self.data, self.qparams, self.name = data, qparams, name
        self.tensor: Optional[Tensor] = None


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
        self.ctx = Context(ir.Builder("main", rounding=probe_rounding()), layout)
        self.env: Dict[Any, Any] = {}

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
        """A dequantized weight as the float value of its ``dequantize``."""
        if isinstance(v, list):
            return [self.resolve(x) for x in v]
        if isinstance(v, _DQWeight):
            if v.tensor is None:
                w = self.ctx.b.param(self.ctx.b._fresh(v.name), v.data, qparams=v.qparams)
                v.tensor = Tensor(self.ctx.emit("dequantize", w), False)
            return v.tensor
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
            return Tensor(self.ctx.emit("dequantize", x.value), x.nhwc, x.torch_cl, True)
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

    # -- walk -------------------------------------------------------------

    def runtime_nodes(self) -> set:
        """The nodes that depend on the user inputs; an aten op of none of them computes from constants only
        and the importer runs it in PyTorch (``fold``)."""
        user = set(self.ep.graph_signature.user_inputs)
        runtime = {n for n in self.ep.graph.nodes if n.op == "placeholder" and n.name in user}
        for n in self.ep.graph.nodes:
            if n.op == "call_function" and any(a in runtime for a in n.all_input_nodes):
                runtime.add(n)
        return runtime

    def foldable(self, node, name: Optional[str], args: List[Any]) -> bool:
        """As the TorchScript importer's: an aten op of constants without a converter, or of computed
        (unnamed) constant tensors only; quantized tensors and the QDQ ops are never folded."""
        if node in self._runtime or not (name or "").startswith("aten::") or name in _Q_OPS or name in _DQ_OPS:
            return False
        from .pytorch import _foldable_arg, _has_graph_tensor
        if _has_graph_tensor(args) or not _foldable_arg(args):
            return False
        if name not in CONVERTERS:
            return True
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        return bool(tensors) and all(id(a) not in self.ctx._tensor_names for a in tensors)

    def check_supported(self) -> None:
        found: Dict[str, List[str]] = {}
        self._runtime = self.runtime_nodes()
        for node in self.ep.graph.nodes:
            if node.op != "call_function":
                continue
            name = self.op_name(node)
            if name == "getitem" or name in CONVERTERS or name in _Q_OPS or name in _DQ_OPS:
                continue
            if node not in self._runtime and (name or "").startswith("aten::"):
                continue  # folded at import
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
        for node in self.ep.graph.nodes:
            if node.op == "placeholder":
                continue
            if node.op == "output":
                from .pytorch import finish_module
                return finish_module(ctx, self.resolve(self.value(node.args[0])))
            if node.op == "get_attr":
                self.env[node] = getattr(self.ep.graph_module, node.target)
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
            elif self.foldable(node, name, args):
                try:
                    with torch.no_grad():
                        self.env[node] = node.target(*torch.fx.node.map_arg(node.args, self.env.__getitem__),
                                                     **torch.fx.node.map_arg(node.kwargs, self.env.__getitem__))
                except Exception as e:
                    raise UnsupportedError(f"{name} of constants at {self.source(node)}: PyTorch could not compute "
                                           f"it at import: {e}") from None
            else:
                for a in args:
                    if isinstance(a, Unavailable):
                        raise UnsupportedError(f"{name} at {self.source(node)} uses {a.describe}")
                try:
                    self.env[node] = CONVERTERS[name](ctx, *self.resolve(args))
                except UnsupportedError as e:
                    raise UnsupportedError(f"{name}: {e}") from None
        raise UnsupportedError("the exported program has no output node")


def import_exported_program(ep: "torch.export.ExportedProgram", inputs, layout: str):
    mod, params = _ExportImporter(ep, inputs, layout).run()
    return run_passes(mod, params, ["lower_qdq", "dce"])


__all__ = ["import_exported_program"]
