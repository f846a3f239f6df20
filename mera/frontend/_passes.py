"""The C graph passes (csrc/passes/) from the frontends: the rewrites live
once, in C, and a frontend translates its ops one to one, then runs the
passes that give the graph users see (QDQ chains lowered, batch norms
folded)."""

from __future__ import annotations

from typing import Dict, Sequence, Tuple

import numpy as np

from ..ir import Module


def run_passes(mod: Module, params: Dict[str, np.ndarray], names: Sequence[str]) -> Tuple[Module, Dict[str, np.ndarray]]:
    """``(mod, params)`` rewritten by the passes ``names`` in order.

    Each param of the result is the caller's array where the pass kept it,
    else a new array (folded weights, dequantized constants)."""
    g = mod._graph
    plist = []
    for vid in g.inputs():
        info = g.value(vid)
        plist.append(params[info["name"]] if info["kind"] == "param" else None)
    for i, name in enumerate(names):
        g = g.run_pass(name, plist if i == 0 else None)
    out: Dict[str, np.ndarray] = {}
    for vid in g.inputs():
        info = g.value(vid)
        if info["kind"] != "param":
            continue
        view = g.const_data(vid)
        orig = params.get(info["name"])
        if orig is not None and orig.__array_interface__["data"][0] == view.__array_interface__["data"][0] \
                and orig.shape == view.shape and orig.dtype == view.dtype:
            out[info["name"]] = orig
        else:
            out[info["name"]] = np.array(view)
    return Module(g), out


__all__ = ["run_passes"]
