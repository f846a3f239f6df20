"""GELU written out as ONNX primitives, read as one ``Gelu`` node before import.

Exporters that predate opset 20's ``Gelu`` (PaddlePaddle's, torch.onnx's older ones) write

- the erf form  ``x * 0.5 * (1 + Erf(x / sqrt(2)))`` (or ``x * (1 / sqrt(2))``), and
- the tanh form ``0.5 * x * (1 + Tanh(sqrt(2 / pi) * (x + 0.044715 * x^3)))`` (x^3 as ``Pow(x, 3)``
  or two Muls),

with the three factors x, 0.5 and (1 + ...) multiplied in any order and grouping, and each constant an
initializer or a ``Constant`` node, on either side of its (commutative) op. A matched chain becomes one
synthetic ``Gelu`` node (``approximate`` none or tanh) in place of its last node, which the importer maps
to the IR's ``gelu`` (one elementwise op: a 256-entry table on quantized data, which the DNA runs). A
chain is rewritten only when every intermediate value is read by the chain alone (no other reader, not
a graph output).
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional

import numpy as np

_SQRT2 = math.sqrt(2.0)
_BETA = math.sqrt(2.0 / math.pi)
_KAPPA = 0.044715


class _Graph:
    def __init__(self, graph, nodes: List[Any]):
        self.producer: Dict[str, Any] = {o: n for n in nodes for o in n.output if o}
        self.readers: Dict[str, List[Any]] = {}
        for n in nodes:
            for i in n.input:
                if i:
                    self.readers.setdefault(i, []).append(n)
        # values a subgraph (If, Loop, Scan bodies) reads from outside count as read elsewhere
        self.outputs = {o.name for o in graph.output} | _subgraph_reads(nodes)
        self.consts: Dict[str, np.ndarray] = {}
        from onnx import numpy_helper
        for init in graph.initializer:
            self.consts[init.name] = init
        self._np = numpy_helper
        self._cache: Dict[str, Optional[float]] = {}

    def scalar(self, name: str) -> Optional[float]:
        """The value of a one-element float constant (initializer or Constant node), else None."""
        if name in self._cache:
            return self._cache[name]
        v = None
        try:
            if name in self.consts:
                arr = self._np.to_array(self.consts[name])
            else:
                p = self.producer.get(name)
                arr = None
                if p is not None and p.op_type == "Constant" and p.domain in ("", "ai.onnx"):
                    for at in p.attribute:
                        if at.name == "value":
                            arr = self._np.to_array(at.t)
                        elif at.name == "value_float":
                            arr = np.array(at.f, np.float32)
            if arr is not None and arr.size == 1 and arr.dtype.kind == "f":
                v = float(arr.reshape(()))
        except Exception:  # an unreadable constant is simply not part of a pattern
            v = None
        self._cache[name] = v
        return v

    def sole_reader(self, name: str) -> Optional[Any]:
        """The one node that reads name, when it is the only reader and name is no graph output."""
        r = self.readers.get(name, [])
        if len(r) != 1 or name in self.outputs:
            return None
        return r[0]

    def node(self, name: str, op: str) -> Optional[Any]:
        p = self.producer.get(name)
        return p if p is not None and p.op_type == op and p.domain in ("", "ai.onnx") else None


def _subgraph_reads(nodes) -> set:
    names, todo = set(), [n for n in nodes]
    while todo:
        n = todo.pop()
        for at in n.attribute:
            for sub in ([at.g] if at.HasField("g") else []) + list(at.graphs):
                for sn in sub.node:
                    names.update(i for i in sn.input if i)
                    todo.append(sn)
    return names


def _near(v: Optional[float], want: float, rel: float = 1e-4) -> bool:
    return v is not None and abs(v - want) <= rel * abs(want)


def _split_const(G: _Graph, n, want: float):
    """For a binary node with one input the constant want, the other input's name, else None."""
    if len(n.input) != 2:
        return None
    a, b = n.input
    if _near(G.scalar(b), want):
        return a
    if _near(G.scalar(a), want) and n.op_type in ("Mul", "Add"):
        return b
    return None


def _erf_x(G: _Graph, erf):
    """x of Erf(x / sqrt(2)) or Erf(x * (1 / sqrt(2))), with the scaling node, else None."""
    s = G.producer.get(erf.input[0])
    if s is None or s.domain not in ("", "ai.onnx") or G.sole_reader(erf.input[0]) is not erf:
        return None
    if s.op_type == "Div":
        x = _split_const(G, s, _SQRT2)
    elif s.op_type == "Mul":
        x = _split_const(G, s, 1.0 / _SQRT2)
    else:
        return None
    return (x, [s]) if x else None


def _cube_of(G: _Graph, name: str):
    """x of x^3 written Pow(x, 3), Mul(Mul(x, x), x) or Mul(x, Mul(x, x)), with its nodes, else None."""
    p = G.node(name, "Pow")
    if p is not None and _near(G.scalar(p.input[1]), 3.0, 0):
        return p.input[0], [p]
    m = G.node(name, "Mul")
    if m is None:
        return None
    for sq_name, x in ((m.input[0], m.input[1]), (m.input[1], m.input[0])):
        sq = G.node(sq_name, "Mul")
        if sq is not None and sq.input[0] == sq.input[1] == x and G.sole_reader(sq_name) is m:
            return x, [sq, m]
    return None


def _tanh_x(G: _Graph, tanh):
    """x of Tanh(sqrt(2/pi) * (x + 0.044715 * x^3)), with the nodes, else None."""
    inner = G.node(tanh.input[0], "Mul")
    if inner is None or G.sole_reader(tanh.input[0]) is not tanh:
        return None
    s_name = _split_const(G, inner, _BETA)
    add = G.node(s_name, "Add") if s_name else None
    if add is None or G.sole_reader(s_name) is not inner:
        return None
    for k_name, x in ((add.input[0], add.input[1]), (add.input[1], add.input[0])):
        k = G.node(k_name, "Mul")
        if k is None or G.sole_reader(k_name) is not add:
            continue
        c_name = _split_const(G, k, _KAPPA)
        cube = _cube_of(G, c_name) if c_name else None
        if cube is None or cube[0] != x:
            continue
        if any(G.sole_reader(n.output[0]) is None for n in cube[1][:-1]) or G.sole_reader(c_name) is not k:
            continue
        return x, cube[1] + [k, add, inner]
    return None


def _tail(G: _Graph, f, x: str):
    """The product x * 0.5 * (1 + f) in any grouping after f (Erf or Tanh), as (its nodes, the last)."""
    add = G.sole_reader(f.output[0])
    if add is None or add.op_type != "Add" or _split_const(G, add, 1.0) != f.output[0]:
        return None
    m1 = G.sole_reader(add.output[0])
    if m1 is None or m1.op_type != "Mul" or len(m1.input) != 2:
        return None
    other = m1.input[1] if m1.input[0] == add.output[0] else m1.input[0]
    if other == x:  # (x * (1 + f)) * 0.5
        m2 = G.sole_reader(m1.output[0])
        if m2 is not None and m2.op_type == "Mul" and _split_const(G, m2, 0.5) == m1.output[0]:
            return [add, m1, m2], m2
        return None
    if _near(G.scalar(other), 0.5):  # x * ((1 + f) * 0.5)
        m2 = G.sole_reader(m1.output[0])
        if m2 is not None and m2.op_type == "Mul" and len(m2.input) == 2 and \
                sorted(m2.input) == sorted([x, m1.output[0]]):
            return [add, m1, m2], m2
        return None
    h = G.node(other, "Mul")  # (x * 0.5) * (1 + f)
    if h is not None and _split_const(G, h, 0.5) == x and G.sole_reader(other) is m1:
        return [h, add, m1], m1
    return None


def fuse_gelu(graph, nodes: List[Any]) -> List[Any]:
    """nodes with every GELU chain replaced by one synthetic Gelu node at its last node's place."""
    from onnx import helper
    G = _Graph(graph, nodes)
    drop, put = set(), {}
    for n in nodes:
        if n.domain not in ("", "ai.onnx") or n.op_type not in ("Erf", "Tanh") or id(n) in drop:
            continue
        head = _erf_x(G, n) if n.op_type == "Erf" else _tanh_x(G, n)
        if head is None:
            continue
        x, pre = head
        tail = _tail(G, n, x)
        if tail is None:
            continue
        chain, last = pre + [n] + tail[0], tail[1]
        if any(id(c) in drop for c in chain):
            continue
        gelu = helper.make_node("Gelu", [x], [last.output[0]], name=last.name or last.output[0],
                                approximate="none" if n.op_type == "Erf" else "tanh")
        drop.update(id(c) for c in chain)
        put[id(last)] = gelu
    if not put:
        return nodes
    return [put.get(id(n), n) for n in nodes if id(n) in put or id(n) not in drop]
