"""Compile a module for a target and run it from Python.

``mera.compile(mod, params)`` under ``mera.build_config(target=...)`` returns
a :class:`Runner` with MERA's chained API::

    with mera.build_config(target="InterpreterHw"):
        runner = mera.compile(mod, params)
    out = runner.set_input(x).run().get_output(0)

Inputs are NumPy arrays or any object exporting ``__dlpack__`` (a CPU torch
tensor, say), taken without a copy. Outputs are NumPy arrays, which export
``__dlpack__`` themselves. The C core runs with the GIL released.
"""

from __future__ import annotations

import threading
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from . import _core
from .config import Target, current_build_config
from .errors import ConfigError, RuntimeInputError, UnsupportedError
from .ir import Module

ArrayLike = Any


def _as_array(x: ArrayLike, name: str) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "__dlpack__"):
        try:
            return np.from_dlpack(x)
        except Exception as e:  # DLPack producers raise many types
            raise RuntimeInputError(f"input '{name}': cannot take the object through DLPack ({e})") from None
    try:
        return np.asarray(x)
    except Exception as e:
        raise RuntimeInputError(f"input '{name}': cannot convert {type(x).__name__} to an array ({e})") from None


def _params_list(mod: Module, params: Optional[Mapping[str, ArrayLike]]) -> List[Optional[np.ndarray]]:
    params = dict(params or {})
    out: List[Optional[np.ndarray]] = []
    for vid in mod._graph.inputs():
        info = mod._graph.value(vid)
        if info["kind"] != "param":
            out.append(None)
            continue
        if info["name"] not in params:
            raise RuntimeInputError(f"param '{info['name']}' is missing from params")
        out.append(_as_array(params[info["name"]], info["name"]))
    return out


class Runner:
    """A compiled model: set inputs, run, read outputs.

    The chained state (inputs set, outputs of the last run) is kept per
    thread, so threads may share one runner. ``runner(x)`` runs without
    touching that state.
    """

    def __init__(self, core: Any, mod: Module, target: Target):
        self._core = core
        self._mod = mod
        self.target = target
        self._inputs = mod.inputs
        self._state = threading.local()

    @property
    def input_names(self) -> List[str]:
        return [i["name"] for i in self._inputs]

    def get_num_inputs(self) -> int:
        return len(self._inputs)

    def get_num_outputs(self) -> int:
        return len(self._mod.outputs)

    def _arrays(self, data: Union[ArrayLike, Sequence[ArrayLike], Mapping[str, ArrayLike]]) -> List[np.ndarray]:
        names = self.input_names
        if isinstance(data, Mapping):
            unknown = sorted(set(data) - set(names))
            if unknown:
                raise RuntimeInputError(f"unknown input name(s) {', '.join(map(repr, unknown))}; "
                                        f"inputs are: {', '.join(names)}")
            missing = [n for n in names if n not in data]
            if missing:
                raise RuntimeInputError(f"missing input(s): {', '.join(missing)}")
            return [_as_array(data[n], n) for n in names]
        if isinstance(data, (list, tuple)):
            if len(data) != len(names):
                raise RuntimeInputError(f"the model takes {len(names)} input(s) ({', '.join(names)}), "
                                        f"got {len(data)}")
            return [_as_array(x, n) for x, n in zip(data, names)]
        if len(names) != 1:
            raise RuntimeInputError(f"the model takes {len(names)} inputs ({', '.join(names)}); "
                                    "pass a list or a dict")
        return [_as_array(data, names[0])]

    def __call__(self, *inputs: ArrayLike) -> List[np.ndarray]:
        """Run on ``inputs`` (one array per model input) and return the outputs."""
        return self._core.run(self._arrays(list(inputs)))

    def set_input(self, data: Union[ArrayLike, Sequence[ArrayLike], Mapping[str, ArrayLike]]) -> "Runner":
        """Set the inputs: one array, a list in input order, or a dict by name."""
        self._state.inputs = self._arrays(data)
        return self

    def run(self) -> "Runner":
        inputs = getattr(self._state, "inputs", None)
        if inputs is None:
            raise RuntimeInputError("run() before set_input(): no inputs are set")
        self._state.outputs = self._core.run(inputs)
        return self

    def get_outputs(self) -> List[np.ndarray]:
        outputs = getattr(self._state, "outputs", None)
        if outputs is None:
            raise RuntimeInputError("get_outputs() before run()")
        return list(outputs)

    def get_output(self, i: int) -> np.ndarray:
        outputs = self.get_outputs()
        if not -len(outputs) <= i < len(outputs):
            raise RuntimeInputError(f"output index {i} is out of range: the model has {len(outputs)} output(s)")
        return outputs[i]

    def __repr__(self) -> str:
        return f"<mera.Runner '{self._mod.name}' on {self.target.value}>"


def compile(mod: Module, params: Optional[Mapping[str, ArrayLike]] = None, *,
            target: Union[str, Target, None] = None) -> Runner:
    """Compile ``mod`` with ``params`` for the target of the active build_config.

    Parameters
    ----------
    mod : mera.ir.Module
    params : dict of str to array, optional
        Data for every parameter the module declares.
    target : str or Target, optional
        Overrides the target of the active ``build_config``.
    """
    if not isinstance(mod, Module):
        raise ConfigError(f"compile: expected a mera.ir.Module, got {type(mod).__name__}")
    if target is None:
        cfg = current_build_config()
        if cfg is None:
            raise ConfigError("compile needs a target: call it inside `with mera.build_config(target=...):` "
                              "or pass target=")
        t = cfg.target
    else:
        try:
            t = Target(target.value if isinstance(target, Target) else target)
        except ValueError:
            raise ConfigError(f"unknown target {target!r}; valid targets: "
                              f"{', '.join(x.value for x in Target)}") from None
    if t in (Target.Interpreter, Target.InterpreterHw):
        core = _core.Interp(mod._graph, t.value, _params_list(mod, params))
        return Runner(core, mod, t)
    raise UnsupportedError(f"target {t.value} cannot run in process in this version of mera; "
                           "Interpreter and InterpreterHw can")


__all__ = ["compile", "Runner"]
