"""Import PyTorch models: TorchScript (traced or scripted, float or eager-mode
quantized), torch.export programs, and files holding either.

``from_pytorch(model, [("input0", shape)], layout="NHWC")`` returns the
``(mod, params)`` pair. Under ``layout="NHWC"`` the shapes given are NHWC, as
in MERA's documented flow, and the module takes and returns 4-D tensors in
NHWC.
"""

from __future__ import annotations

import os
import re
import warnings
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .. import ir
from ..errors import ConfigError, MeraIOError, UnsupportedError
from ._torch_numerics import probe_rounding
from ._torch_ops import CONVERTERS, Context, Tensor, Unavailable

InputShapes = Sequence[Tuple[str, Any]]

# TorchScript node kinds handled by the walker itself rather than a converter.
_STRUCTURAL = {
    "prim::Constant", "prim::GetAttr", "prim::ListConstruct", "prim::ListUnpack", "prim::TupleConstruct",
    "prim::TupleUnpack", "prim::TupleIndex", "aten::__getitem__", "prim::DictConstruct",
}


def _holds_tensor_type(t: "torch._C.JitType") -> bool:
    if isinstance(t, torch._C.TensorType):
        return True
    return any(_holds_tensor_type(c) for c in t.containedTypes())


def _runtime_values(graph) -> set:
    """The values that depend on the graph's inputs as tensors. A node none of whose inputs is one computes
    from constants and sizes only: the importer runs it in PyTorch (``_fold``) instead of converting it."""
    runtime = set(list(graph.inputs())[1:])

    def visit(nodes):
        for n in nodes:
            if any(i in runtime for i in n.inputs()):
                runtime.update(o for o in n.outputs() if _holds_tensor_type(o.type()))
            for blk in n.blocks():
                visit(blk.nodes())

    visit(graph.nodes())
    return runtime


def _has_graph_tensor(x: Any) -> bool:
    if isinstance(x, Tensor):
        return True
    if isinstance(x, (list, tuple)):
        return any(_has_graph_tensor(e) for e in x)
    return False


_FOLDABLE_ARG = (type(None), bool, int, float, str, torch.dtype, torch.device, torch.layout, torch.memory_format)


def _foldable_arg(x: Any) -> bool:
    if isinstance(x, torch.Tensor):
        return not x.is_quantized
    if isinstance(x, (list, tuple)):
        return all(_foldable_arg(e) for e in x)
    return isinstance(x, _FOLDABLE_ARG)


def _fold(node: "torch._C.Node", args: List[Any]) -> Any:
    """Run an aten op of constants (and static sizes) in PyTorch: its result is a constant of the graph."""
    schema = torch._C.parse_schema(node.schema())
    op = getattr(getattr(torch.ops.aten, schema.name.split("::", 1)[1]), schema.overload_name or "default")
    pos = [a for a, s in zip(args, schema.arguments) if not s.kwarg_only]
    kw = {s.name: a for a, s in zip(args, schema.arguments) if s.kwarg_only}
    with torch.no_grad():
        return op(*pos, **kw)

_TORCH_DIR = os.path.dirname(torch.__file__)
_FRAME = re.compile(r"^(.*)\((\d+)\): (\S+)$")


def _source_of(node: "torch._C.Node") -> Optional[str]:
    """The user's frame that made the node: 'file.py:12 (forward)'."""
    try:
        text = node.sourceRange()
    except Exception:
        return None
    fallback = None
    for line in text.splitlines():
        m = _FRAME.match(line.strip())
        if not m:
            continue
        path, lineno, fn = m.groups()
        loc = f"{os.path.basename(path)}:{lineno} ({fn})"
        if not os.path.abspath(path).startswith(_TORCH_DIR):
            return loc
        fallback = fallback or loc
    return fallback


def _scope_of(node: "torch._C.Node") -> Optional[str]:
    scope = node.scopeName()
    if not scope:
        return None
    last = scope.split("/")[-1]
    return last[len("__module."):] if last.startswith("__module.") else last or None


def _describe(kind: str, uses: List[str]) -> str:
    shown = "; ".join(uses[:3]) + (f"; and {len(uses) - 3} more" if len(uses) > 3 else "")
    return f"  {kind} ({len(uses)} use{'s' if len(uses) != 1 else ''}): {shown}"


def _unsupported_error(found: "OrderedDict[str, List[str]]") -> UnsupportedError:
    lines = [_describe(k, v) for k, v in found.items()]
    return UnsupportedError(f"the model uses {len(found)} op kind{'s' if len(found) != 1 else ''} that mera does "
                            "not support:\n" + "\n".join(lines))


def _parse_input_shapes(input_shapes: InputShapes) -> List[Tuple[str, Tuple[int, ...], str]]:
    out = []
    if isinstance(input_shapes, dict):
        input_shapes = list(input_shapes.items())
    elif input_shapes is None:
        input_shapes = []
    elif not isinstance(input_shapes, (list, tuple)):
        raise ConfigError(f"input_shapes must be a list of (name, shape) or a dict, got {type(input_shapes).__name__}")
    for i, item in enumerate(input_shapes):
        try:
            name, spec = item
        except (TypeError, ValueError):
            raise ConfigError(f"input_shapes[{i}] must be (name, shape) or (name, (shape, dtype)), got {item!r}") \
                from None
        dtype = "float32"
        if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[1], (str, np.dtype, torch.dtype)):
            spec, dtype = spec
            dtype = str(dtype).replace("torch.", "")
        try:
            shape = tuple(int(d) for d in spec)
        except (TypeError, ValueError):
            raise ConfigError(f"input_shapes[{i}] ('{name}'): shape must be a sequence of ints, got {spec!r}") \
                from None
        out.append((str(name), shape, dtype))
    return out


def _nchw(shape: Tuple[int, ...], layout: str) -> Tuple[int, ...]:
    if layout == "NHWC" and len(shape) == 4:
        return (shape[0], shape[3], shape[1], shape[2])
    return shape


class _TorchScriptImporter:
    def __init__(self, module: "torch.jit.ScriptModule", inputs, layout: str):
        self.module = module
        self.inputs = inputs
        self.layout = layout
        name = getattr(module, "original_name", None) or "main"
        self.ctx = Context(ir.Builder(str(name), rounding=probe_rounding()), layout)
        self.env: Dict[Any, Any] = {}
        self.paths: Dict[int, str] = {}  # id(module object) -> attribute path

    def graph(self) -> "torch._C.Graph":
        g = getattr(self.module, "inlined_graph", None)
        if g is None:
            g = self.module.graph.copy()
            torch._C._jit_pass_inline(g)
        return g

    def check_supported(self, graph) -> None:
        found: "OrderedDict[str, List[str]]" = OrderedDict()
        runtime = _runtime_values(graph)

        def visit(nodes):
            for n in nodes:
                k = n.kind()
                constant = k.startswith("aten::") and not any(i in runtime for i in n.inputs())
                if k not in CONVERTERS and k not in _STRUCTURAL and not constant:
                    where = _source_of(n) or "unknown location"
                    scope = _scope_of(n)
                    found.setdefault(k, []).append(f"{where}" + (f" in {scope}" if scope else ""))
                for blk in n.blocks():
                    visit(blk.nodes())

        visit(graph.nodes())
        if found:
            raise _unsupported_error(found)

    def declare_inputs(self, graph) -> None:
        g_inputs = list(graph.inputs())[1:]  # the first is the module itself
        if len(self.inputs) != len(g_inputs):
            raise ConfigError(f"the model takes {len(g_inputs)} input(s) but input_shapes names {len(self.inputs)}")
        for (name, shape, dtype), val in zip(self.inputs, g_inputs):
            traced = None
            try:
                traced = val.type().sizes()
            except Exception:
                pass
            want = _nchw(shape, self.layout)
            if traced is not None and None not in traced and tuple(traced) != want:
                raise ConfigError(
                    f"input '{name}': input_shapes gives {shape}"
                    + (f" (NHWC, i.e. {want} in NCHW)" if self.layout == "NHWC" and len(shape) == 4 else "")
                    + f", but the model was traced with {tuple(traced)}")
            nhwc = self.layout == "NHWC" and len(shape) == 4
            v = self.ctx.b.input(name, shape, dtype, layout=("NHWC" if nhwc else ("NCHW" if len(shape) == 4
                                                                                    else None)))
            self.env[val] = Tensor(v, nhwc)

    def getattr(self, node) -> Any:
        owner = self.env[node.input()]
        attr = node.s("name")
        obj = getattr(owner, attr)
        parent = self.paths.get(id(owner), "")
        path = f"{parent}.{attr}" if parent else attr
        if isinstance(obj, torch.Tensor):
            self.ctx.name_tensor(obj, path)
        else:
            # packed weights are named after the module that owns them
            self.paths[id(obj)] = path
            self.ctx._tensor_names[id(obj)] = re.sub(r"(\._packed_params)+$", "", path)
        return obj

    def foldable(self, kind: str, args: List[Any]) -> bool:
        """An aten op of constants: one without a converter, or one of a computed (unnamed) constant tensor
        (torch.arange(n) * 2). Ops of named parameters only keep their converters (the graph keeps the names)."""
        if not kind.startswith("aten::") or _has_graph_tensor(args) or not _foldable_arg(args):
            return False
        if kind not in CONVERTERS:
            return True
        computed = [a for a in args if isinstance(a, torch.Tensor) and id(a) not in self.ctx._tensor_names]
        return bool(computed) and all(isinstance(a, torch.Tensor) and id(a) not in self.ctx._tensor_names
                                      or not isinstance(a, torch.Tensor) for a in args)

    def run(self) -> Tuple[ir.Module, Dict[str, np.ndarray]]:
        graph = self.graph()
        self.check_supported(graph)
        self.env[list(graph.inputs())[0]] = self.module
        self.paths[id(self.module)] = ""
        self.declare_inputs(graph)
        ctx = self.ctx
        for node in graph.nodes():
            kind = node.kind()
            outs = list(node.outputs())
            ctx.source, ctx.scope = _source_of(node), _scope_of(node)
            if kind == "prim::Constant":
                self.env[outs[0]] = outs[0].toIValue()
                continue
            if kind == "prim::GetAttr":
                self.env[outs[0]] = self.getattr(node)
                continue
            args = [self.env[i] for i in node.inputs()]
            if kind in ("prim::ListConstruct", "prim::TupleConstruct"):
                result: Any = list(args)
            elif kind in ("prim::ListUnpack", "prim::TupleUnpack"):
                result = list(args[0])
            elif kind in ("prim::TupleIndex", "aten::__getitem__"):
                result = args[0][args[1]]
            elif kind == "prim::DictConstruct":
                result = dict(zip(args[0::2], args[1::2]))
            elif self.foldable(kind, args):
                try:
                    result = _fold(node, args)
                except Exception as e:
                    raise UnsupportedError(f"{kind} of constants{ctx.where()}: PyTorch could not compute it at "
                                           f"import: {e}") from None
            else:
                for a in args:
                    if isinstance(a, Unavailable):
                        raise UnsupportedError(f"{kind}{ctx.where()} uses {a.describe}")
                try:
                    result = CONVERTERS[kind](ctx, *args)
                except UnsupportedError as e:
                    raise UnsupportedError(f"{kind}: {e}") from None
            if len(outs) == 1:
                self.env[outs[0]] = result
            else:
                if len(result) != len(outs):
                    raise UnsupportedError(f"{kind} produced {len(result)} values where the model uses {len(outs)}"
                                           f"{ctx.where()}")
                for o, r in zip(outs, result):
                    self.env[o] = r
        ret = self.env[graph.return_node().input()]
        return finish_module(self.ctx, ret)



def finish_module(ctx: Context, ret: Any) -> Tuple[ir.Module, Dict[str, np.ndarray]]:
    """Mark the tensors in ``ret`` (nested lists/tuples) as the graph's outputs."""
    flat: List[Tensor] = []

    def collect(x):
        if isinstance(x, dict):  # a traced model's dict output: its values, in the dict's (insertion) order
            for e in x.values():
                collect(e)
        elif isinstance(x, (list, tuple)):
            for e in x:
                collect(e)
        elif isinstance(x, Tensor):
            flat.append(x)
        elif isinstance(x, (torch.Tensor, Unavailable)):
            flat.append(ctx.tensor(x, "output"))
        else:
            raise UnsupportedError(f"the model returns a {type(x).__name__}; mera models return tensors")

    collect(ret)
    ctx.source, ctx.scope = None, None
    outs = [ctx.to_layout(t) if len(t.value.shape) == 4 else t for t in flat]
    return ctx.b.finish([t.value for t in outs]), dict(ctx.b.params)


def _load(path: Union[str, os.PathLike]) -> Any:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise MeraIOError(f"model file '{path}' does not exist")
    try:
        if path.endswith(".pt2"):
            return torch.export.load(path)
        return torch.jit.load(path, map_location="cpu")
    except Exception as e:
        raise MeraIOError(f"cannot load PyTorch model '{path}': {e}") from None


def from_pytorch(model: Any, input_shapes: InputShapes, layout: str = "NCHW", *,
                 trace: bool = True) -> Tuple[ir.Module, Dict[str, np.ndarray]]:
    """Import a PyTorch model into mera IR.

    Parameters
    ----------
    model : torch.jit.ScriptModule, torch.export.ExportedProgram, torch.nn.Module, str or path
        A traced or scripted TorchScript module (float, or quantized with
        eager-mode post-training quantization), an exported program, a module
        (traced here with zeros of the given shapes), or the path of a saved
        TorchScript (``.pt``) or exported program (``.pt2``).
    input_shapes : list of (name, shape) or (name, (shape, dtype))
        One entry per model input, in order. Under ``layout="NHWC"`` 4-D
        shapes are given in NHWC.
    layout : {"NCHW", "NHWC"}
        The layout of the imported graph's 4-D activations, inputs and outputs.

    Returns
    -------
    (mera.ir.Module, dict of str to numpy.ndarray)

    Raises
    ------
    mera.UnsupportedError
        Listing every op kind the model uses that mera cannot import, each with
        the source locations that use it.
    """
    if not isinstance(layout, str) or layout not in ("NCHW", "NHWC"):
        raise ConfigError(f"layout must be 'NCHW' or 'NHWC', got {layout!r}")
    inputs = _parse_input_shapes(input_shapes)
    if isinstance(model, (str, os.PathLike)):
        model = _load(model)
    if isinstance(model, torch.export.ExportedProgram):
        from ._torch_export import import_exported_program
        return import_exported_program(model, inputs, layout)
    if isinstance(model, torch.jit.ScriptModule):
        return _TorchScriptImporter(model, inputs, layout).run()
    if isinstance(model, torch.nn.Module):
        if not trace:
            raise ConfigError("from_pytorch got an nn.Module with trace=False; pass a traced or exported model")
        examples = tuple(torch.zeros(_nchw(s, layout), dtype=getattr(torch, d)) for _, s, d in inputs)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
            traced = torch.jit.trace(model.eval(), examples)
        return _TorchScriptImporter(traced, inputs, layout).run()
    raise ConfigError(f"from_pytorch: cannot import a {type(model).__name__}; pass a TorchScript module, an "
                      "ExportedProgram, an nn.Module or a file path")


__all__ = ["from_pytorch"]
