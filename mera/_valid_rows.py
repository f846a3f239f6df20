"""Outputs whose leading rows alone are valid (ONNX NonMaxSuppression and what is computed from its rows).

mera tensors have static shapes, so ``non_max_suppression`` returns its largest possible row count and, as a
second node, the count of rows it selected (an int64 ``[1]``). Each graph output computed from those rows is made by
a ``rows_valid(data, count) {axis}`` node, and ``count`` is a graph output of its own. The runners
(``mera.compile(...)``'s :class:`~mera.runner.Runner` and :func:`mera.load_runtime_module`) return each such
output cut to its first ``count`` entries along ``axis`` and leave the count outputs out, so the user sees
onnxruntime's shapes. The C deploy runtime returns every output at full size; ``deploy.json`` says which output
holds which count (``"valid_rows": {"count_output": j, "axis": a}``). docs/frontends.md, "NonMaxSuppression".
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

#: per output: None, or (axis, index of the graph output that holds its valid count)
Plan = List[Optional[Tuple[int, int]]]


def plan_from_graph(graph: Any) -> Plan:
    """The plan of a ``_core.Graph``: outputs made by rows_valid whose count is a graph output."""
    outs = list(graph.outputs())
    made_by: Dict[int, Dict[str, Any]] = {}
    for i in range(graph.num_nodes()):
        n = graph.node(i)
        if n["op"] == "rows_valid":
            made_by[n["outputs"][0]] = n
        elif n["op"] == "dequantize" and n["inputs"][0] in made_by:  # the quantizer's float output of rows_valid's
            made_by[n["outputs"][0]] = made_by[n["inputs"][0]]
    plan: Plan = []
    for v in outs:
        n = made_by.get(v)
        count = n["inputs"][1] if n is not None else None
        if n is None or count not in outs:
            plan.append(None)
            continue
        plan.append((int(n["attrs"].get("axis", 0)), outs.index(count)))
    return plan


def plan_from_json(outputs: Sequence[Dict[str, Any]]) -> Plan:
    """The plan of deploy.json's ``outputs``."""
    plan: Plan = []
    for o in outputs:
        vr = o.get("valid_rows") if isinstance(o, dict) else None
        plan.append((int(vr["axis"]), int(vr["count_output"])) if isinstance(vr, dict) else None)
    return plan


def visible(plan: Plan) -> List[int]:
    """Indices of the outputs the user sees: all but the counts the plan trims by."""
    hidden = {p[1] for p in plan if p is not None}
    return [k for k in range(len(plan)) if k not in hidden]


def trim_one(plan: Plan, k: int, out: np.ndarray, get: Any) -> np.ndarray:
    """Output ``k`` cut to its valid rows; ``get(j)`` returns output j (the count)."""
    p = plan[k] if k < len(plan) else None
    if p is None:
        return out
    axis, j = p
    n = int(np.asarray(get(j)).reshape(-1)[0])
    index = [slice(None)] * out.ndim
    index[axis] = slice(0, n)
    return out[tuple(index)]


def trim(plan: Plan, outputs: List[np.ndarray]) -> List[np.ndarray]:
    """The outputs the user sees, each cut to its valid rows."""
    if not any(p is not None for p in plan):
        return outputs
    return [trim_one(plan, k, outputs[k], outputs.__getitem__) for k in visible(plan)]
