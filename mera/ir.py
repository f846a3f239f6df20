"""Build and inspect mera IR graphs from Python.

The graph lives in C (``mera._core.Graph``); this module is a thin, friendly
layer over it. Every node is verified and typed by the C op table when it is
added, so a mistake is reported at the line that made it.

Example
-------
>>> import numpy as np
>>> from mera import ir
>>> b = ir.Builder("tiny")
>>> x = b.input("x", (1, 3, 8, 8), "float32", layout="NCHW")
>>> w = b.param("w", np.zeros((4, 3, 3, 3), np.float32))
>>> y = b.conv2d(x, w, None, padding=[1, 1, 1, 1], activation="relu")
>>> mod = b.finish(y)
>>> print(mod)                                  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _core
from ._fileio import atomic_write_bytes
from .errors import GraphError, MeraError, MeraIOError, UnknownOpError

QParams = Union[None, Tuple[float, int], Tuple[Sequence[float], Sequence[int], int]]

#: Names of every op in the op table, in table order.
OPS: Tuple[str, ...] = tuple(_core.op_names())


#: The rounding modes of the numerics contract (docs/numerics.md, "Rounding"):
#: where quantization adds the zero point, before or after rounding half to even.
ROUNDING_ZP_AFTER = "zero_point_after_rounding"
ROUNDING_ZP_BEFORE = "zero_point_before_rounding"
ROUNDINGS = (ROUNDING_ZP_AFTER, ROUNDING_ZP_BEFORE)
#: What graphs from the builder and the ONNX frontend use unless told
#: otherwise: the ONNX QuantizeLinear formula, and fbgemm's since PyTorch 2.14.
DEFAULT_ROUNDING = ROUNDING_ZP_AFTER


@contextlib.contextmanager
def _arguments_of(what: str):
    """Bad arguments of a graph call (a name with a NUL, a shape that is not a list of ints, a value
    the C binding cannot convert) as a GraphError naming the call, as the C core's own errors are."""
    try:
        yield
    except MeraError:
        raise
    except (TypeError, ValueError, OverflowError, IndexError, KeyError) as e:
        raise GraphError(f"{what}: {e}") from None


def _path_argument(path: Any, what: str) -> str:
    """A file path (an int would be taken by open() as a file descriptor)."""
    if not isinstance(path, (str, os.PathLike)):
        raise MeraIOError(f"{what}: expected a path (str or os.PathLike), got {type(path).__name__}")
    return os.fspath(path)


def op_info(op: str) -> Dict[str, Any]:
    """Describe an op: its inputs, attributes (kind, default, choices) and doc."""
    with _arguments_of("op_info"):
        return _core.op_info(op)


class Value:
    """A value of a graph: an input, a parameter, a constant or a node output."""

    __slots__ = ("_graph", "id")

    def __init__(self, graph: "_core.Graph", vid: int):
        self._graph = graph
        self.id = vid

    def _info(self) -> Dict[str, Any]:
        return self._graph.value(self.id)

    @property
    def name(self) -> str:
        return self._info()["name"]

    @property
    def kind(self) -> str:
        """``"input"``, ``"param"``, ``"const"`` or ``"node"``."""
        return self._info()["kind"]

    @property
    def shape(self) -> Tuple[int, ...]:
        return self._info()["shape"]

    @property
    def dtype(self) -> str:
        return self._info()["dtype"]

    @property
    def layout(self) -> str:
        return self._info()["layout"]

    @property
    def qparams(self) -> QParams:
        """``None``, ``(scale, zero_point)`` or ``(scales, zero_points, axis)``."""
        return self._info()["qparams"]

    def __repr__(self) -> str:
        i = self._info()
        return f"<mera.ir.Value %{i['name']}: {i['dtype']}{list(i['shape'])}>"


def _to_qparams(q: QParams):
    if q is None:
        return None
    if not isinstance(q, (tuple, list)):
        raise GraphError(f"qparams must be (scale, zero_point) or (scales, zero_points, axis), got {q!r}")
    if len(q) == 2:
        return (float(q[0]), int(q[1]))
    if len(q) == 3:
        return (np.asarray(q[0], np.float64), np.asarray(q[1], np.int32), int(q[2]))
    raise GraphError("qparams must be (scale, zero_point) or (scales, zero_points, axis)")


class Builder:
    """Records a graph node by node.

    Parameters
    ----------
    name : str
        Name of the graph.
    rounding : str
        The graph's rounding mode (one of :data:`ROUNDINGS`): how every
        quantized op turns float values into integers. The PyTorch frontends
        pass the one they probed from the installed PyTorch.

    Attributes
    ----------
    params : dict of str to numpy.ndarray
        The data of every parameter declared with :meth:`param`; pass it to
        :func:`mera.build` or :func:`mera.compile` together with the module.

    Notes
    -----
    Any op of the table is a method: ``b.conv2d(x, w, bias, strides=[2, 2])``
    is ``b.op("conv2d", x, w, bias, strides=[2, 2])``.
    """

    def __init__(self, name: str = "main", *, rounding: str = DEFAULT_ROUNDING):
        with _arguments_of(f"Builder({name!r})"):
            self._g = _core.Graph(name)
            self._g.rounding = rounding
        self.params: Dict[str, np.ndarray] = {}
        self._counter: Dict[str, int] = {}

    # -- declarations -----------------------------------------------------

    def input(self, name: str, shape: Sequence[int], dtype: str = "float32", *,
              layout: Optional[str] = None, qparams: QParams = None) -> Value:
        """Declare a run-time input of the graph."""
        with _arguments_of(f"input {name!r}"):
            return Value(self._g, self._g.add_input(name, tuple(shape), str(np.dtype(dtype)) if dtype else dtype,
                                                    layout, _to_qparams(qparams)))

    def param(self, name: str, array: Any, *, layout: Optional[str] = None, qparams: QParams = None) -> Value:
        """Declare a named weight; its data goes to :attr:`params`, not into the graph."""
        with _arguments_of(f"param {name!r}"):
            arr = np.asarray(array)
            vid = self._g.add_param(name, arr.shape, str(arr.dtype), layout, _to_qparams(qparams))
        self.params[name] = arr
        return Value(self._g, vid)

    def const(self, array: Any, *, name: Optional[str] = None, layout: Optional[str] = None,
              qparams: QParams = None) -> Value:
        """Embed a constant in the graph.

        A C-contiguous, aligned array of a supported dtype is used in place,
        without a copy; the graph keeps a reference to it, so do not modify it
        afterwards.
        """
        with _arguments_of(f"const {name!r}" if name is not None else "const"):
            arr = array if isinstance(array, np.ndarray) else np.asarray(array)
            if arr.dtype == np.float64:
                arr = arr.astype(np.float32)
            return Value(self._g, self._g.add_const(name or self._fresh("const"), arr, layout,
                                                    _to_qparams(qparams)))

    # -- nodes ------------------------------------------------------------

    def op(self, op: str, *inputs: Any, name: Optional[str] = None, source: Optional[str] = None,
           **attrs: Any) -> Union[Value, Tuple[Value, ...]]:
        """Add a node of op ``op``; returns its output (or a tuple of outputs).

        ``inputs`` are Values, ``None`` for an omitted optional input, or
        arrays (embedded as constants). Attribute values are ints, floats,
        strings or lists of numbers. Errors are raised as
        :class:`mera.MeraError` subclasses naming the node.
        """
        if not isinstance(op, str) or op not in OPS:
            raise UnknownOpError(f"unknown op '{op}'; known ops: {', '.join(OPS)}")
        ids = []
        for x in inputs:
            if x is None:
                ids.append(None)
            elif isinstance(x, Value):
                if x._graph is not self._g:
                    raise GraphError(f"{op}: input {x!r} belongs to another graph")
                ids.append(x.id)
            else:
                ids.append(self.const(x).id)
        with _arguments_of(f"{op} node {name!r}" if name is not None else f"{op} node"):
            outs = self._g.add_node(op, name or self._fresh(op), ids, attrs, source)
        vals = tuple(Value(self._g, o) for o in outs)
        return vals[0] if len(vals) == 1 else vals

    def __getattr__(self, op: str):
        if op in OPS:
            def add(*inputs: Any, name: Optional[str] = None, source: Optional[str] = None, **attrs: Any):
                return self.op(op, *inputs, name=name, source=source, **attrs)
            add.__name__ = op
            add.__doc__ = _core.op_info(op)["doc"]
            return add
        raise AttributeError(f"Builder has no attribute '{op}' (and no op of that name; see mera.ir.OPS)")

    def _fresh(self, base: str) -> str:
        n = self._counter.get(base, 0)
        while True:
            name = base if n == 0 else f"{base}_{n}"
            n += 1
            if self._g.find(name) < 0:
                self._counter[base] = n
                return name

    def finish(self, outputs: Union[Value, Sequence[Value]]) -> "Module":
        """Mark the graph's outputs and return the finished :class:`Module`."""
        if isinstance(outputs, Value):
            outs = [outputs]
        elif isinstance(outputs, (list, tuple)):
            outs = list(outputs)
        else:
            raise GraphError(f"finish: outputs must be a Value or a list of Values, got {type(outputs).__name__}")
        for o in outs:
            if not isinstance(o, Value) or o._graph is not self._g:
                raise GraphError(f"output {o!r} is not a value of graph '{self._g.name}'")
        self._g.set_outputs([o.id for o in outs])
        return Module(self._g)


class Module:
    """A finished graph: the ``mod`` of the ``(mod, params)`` pair.

    ``print(mod)`` shows the IR text; :meth:`serialize` and
    :meth:`deserialize` give the versioned binary form.
    """

    def __init__(self, graph: "_core.Graph"):
        self._graph = graph

    @property
    def name(self) -> str:
        return self._graph.name

    @property
    def rounding(self) -> str:
        """The graph's rounding mode (:data:`ROUNDINGS`; docs/numerics.md)."""
        return self._graph.rounding

    def __str__(self) -> str:
        return self._graph.text()

    def astext(self) -> str:
        """The IR text form (as TVM's ``mod.astext()``)."""
        return self._graph.text()

    def __repr__(self) -> str:
        return f"<mera.ir.Module '{self.name}': {self._graph.num_nodes()} nodes>"

    # -- structure --------------------------------------------------------

    def _values(self, kind: str) -> List[Dict[str, Any]]:
        infos = (self._graph.value(i) for i in self._graph.inputs())
        return [v for v in infos if v["kind"] == kind]

    @property
    def inputs(self) -> List[Dict[str, Any]]:
        """Run-time inputs in order: dicts of name, shape, dtype, layout, qparams."""
        return self._values("input")

    @property
    def param_names(self) -> List[str]:
        """Names of the declared parameters, in order."""
        return [v["name"] for v in self._values("param")]

    @property
    def outputs(self) -> List[Dict[str, Any]]:
        return [self._graph.value(i) for i in self._graph.outputs()]

    def nodes(self) -> Iterator[Dict[str, Any]]:
        """The nodes in order: dicts of op, name, inputs, outputs, attrs, source."""
        for i in range(self._graph.num_nodes()):
            yield self._graph.node(i)

    def __len__(self) -> int:
        return self._graph.num_nodes()

    # -- binary form ------------------------------------------------------

    def serialize(self) -> bytes:
        """The versioned binary form (constants included, params not)."""
        return self._graph.serialize()

    @classmethod
    def deserialize(cls, data: bytes) -> "Module":
        """Rebuild a module from :meth:`serialize` output; every node is re-verified."""
        with _arguments_of("Module.deserialize"):
            return cls(_core.Graph.deserialize(data))

    def save(self, path: Union[str, os.PathLike]) -> None:
        """Write the binary form to ``path`` (atomically: never half-written)."""
        atomic_write_bytes(_path_argument(path, "Module.save"), self.serialize())

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "Module":
        path = _path_argument(path, "Module.load")
        try:
            with open(path, "rb") as f:
                data = f.read()
        except (OSError, ValueError) as e:  # ValueError: a NUL in the path
            raise MeraIOError(f"cannot read IR file {path!r}: {getattr(e, 'strerror', None) or e}") from None
        try:
            return cls.deserialize(data)
        except MeraError as e:
            raise type(e)(f"{path}: {e}") from None


__all__ = ["Builder", "Module", "Value", "OPS", "op_info"]
