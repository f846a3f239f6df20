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
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from . import _core, _progress, _valid_rows
from .config import Target, current_build_config, dump_options, simulator_options
from .errors import ConfigError, RuntimeInputError
from .ir import Module
from .profiling import LayerReport, PartitionReport

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
    if params is None:
        params = {}
    elif not isinstance(params, Mapping):
        raise RuntimeInputError(f"params must be a dict of parameter name -> array, got {type(params).__name__}")
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
        # outputs cut to their valid rows (NonMaxSuppression's; mera/_valid_rows.py)
        self._plan = _valid_rows.plan_from_graph(mod._graph)
        #: what the last :meth:`evaluate` measured (None before the first)
        self.evaluate_metrics: Optional[Dict[str, float]] = None

    @property
    def input_names(self) -> List[str]:
        return [i["name"] for i in self._inputs]

    def get_num_inputs(self) -> int:
        return len(self._inputs)

    def get_num_outputs(self) -> int:
        return len(_valid_rows.visible(self._plan))

    def _run_core(self, arrays: List[np.ndarray]) -> List[np.ndarray]:
        """One run; outputs computed from NonMaxSuppression's rows cut to the valid rows, their counts left out."""
        return _valid_rows.trim(self._plan, self._core.run(arrays))

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
        return self._run_core(self._arrays(list(inputs)))

    def set_input(self, data: Union[ArrayLike, Sequence[ArrayLike], Mapping[str, ArrayLike]]) -> "Runner":
        """Set the inputs: one array, a list in input order, or a dict by name."""
        self._state.inputs = self._arrays(data)
        return self

    def run(self) -> "Runner":
        inputs = getattr(self._state, "inputs", None)
        if inputs is None:
            raise RuntimeInputError("run() before set_input(): no inputs are set")
        self._state.outputs = self._run_core(inputs)
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

    def _samples(self, samples: Any) -> List[List[np.ndarray]]:
        """The input arrays of every sample of ``evaluate``."""
        if not isinstance(samples, (list, tuple)) and self.get_num_inputs() == 1:
            arr = _as_array(samples, self.input_names[0])
            shape = tuple(self._inputs[0]["shape"])
            if arr.ndim == len(shape) + 1 and tuple(arr.shape[1:]) == shape:
                return [[arr[i]] for i in range(arr.shape[0])]
            if shape and arr.ndim == len(shape) and tuple(arr.shape[1:]) == shape[1:] and shape[0] > 0 \
                    and arr.shape[0] % shape[0] == 0:
                b = shape[0]  # a stack of images, cut into batches of the model's size
                return [[arr[i:i + b]] for i in range(0, arr.shape[0], b)]
            raise RuntimeInputError(
                f"evaluate: input '{self.input_names[0]}' is {shape}; an array of samples must be "
                f"(N,) + {shape}, or (k * {shape[0] if shape else 1},) + {shape[1:]} to be cut into batches, "
                f"got {tuple(arr.shape)}")
        if isinstance(samples, (list, tuple)):
            return [self._arrays(s) for s in samples]
        raise RuntimeInputError(f"evaluate: samples must be a list or an array, got {type(samples).__name__}")

    def evaluate(self, samples: Any) -> List[List[np.ndarray]]:
        """Run the model on every sample in one call: the dataset-evaluation case.

        ``samples`` is a list of samples, each what :meth:`set_input` takes (one array,
        a list in input order, or a dict by name), or, for a model with one input, an
        array: ``(N,) + shape`` holds N samples, ``(k * B,) + shape[1:]`` (B the input's
        batch size) is cut into k batches. Returns one list of outputs per sample, in
        order. Afterwards ``evaluate_metrics`` holds ``samples``, ``images`` (samples
        times the first input's batch size), ``seconds`` (wall time of the runs alone)
        and ``images_per_second``. The runs release the GIL; each one splits its layers
        across the worker pool (``build_config(num_threads=...)``).
        """
        runs = self._samples(samples)
        outputs: List[List[np.ndarray]] = []
        t0 = time.perf_counter()
        for arrays in runs:
            outputs.append(self._run_core(arrays))
        seconds = time.perf_counter() - t0
        shape = self._inputs[0]["shape"] if self._inputs else ()
        images = len(runs) * (int(shape[0]) if len(shape) else 1)
        self.evaluate_metrics = {"samples": len(runs), "images": images, "seconds": seconds,
                                 "images_per_second": images / seconds if seconds > 0 else float("inf")}
        return outputs

    def __repr__(self) -> str:
        return f"<mera.Runner '{self._mod.name}' on {self.target.value}>"

    def _repr_html_(self) -> str:
        from .report import runner_html
        return runner_html(self)


class SimulatorRunner(Runner):
    """A model compiled for the Simulator: the DNA program run bit-exactly
    with a timing model. Same API as the interpreter runners, plus the
    simulator's reports.

    After every run (``run()`` or ``runner(x)``) it prints MERA's build-log
    line ``Simulator total latency: <us> us`` unless the build_config had
    ``sim_log=False``. The estimate does not depend on the input data.
    """

    def __init__(self, core: Any, mod: Module, target: Target, log: bool = True):
        super().__init__(core, mod, target)
        self._log = log
        self._timing = core.timing()

    def _after_run(self) -> None:
        if self._log:
            print(f"Simulator total latency: {self._timing['total_us']:.3f} us", flush=True)

    def __call__(self, *inputs: ArrayLike) -> List[np.ndarray]:
        out = super().__call__(*inputs)
        self._after_run()
        return out

    def run(self) -> "SimulatorRunner":
        super().run()
        self._after_run()
        return self

    def get_runtime_metrics(self) -> List[Dict[str, float]]:
        """MERA's metrics of the Simulator: ``[{"sim_time_us": total, "total_us": total, "device_us": ...,
        "device_cycles": ..., "clock_mhz": ..., "host_us": ...}]``; total = device + host, and
        device_us = device_cycles / clock_mhz (as a deploy directory's get_runtime_metrics)."""
        t = self._timing
        return [{"sim_time_us": t["total_us"], "total_us": t["total_us"], "device_us": t["device_us"],
                 "device_cycles": t["device_cycles"], "clock_mhz": t["clock_mhz"], "host_us": t["host_us"]}]

    def timing(self) -> Dict[str, Any]:
        """The timing model's full result: device_cycles, device_us, host_us, total_us, clock_mhz, layers."""
        return self._core.timing()

    def partition_report(self) -> PartitionReport:
        """Which nodes run on the DNA (with their tiles) and which on the host (with why); print it for a table."""
        return PartitionReport(self._core.partition())

    def layer_report(self) -> LayerReport:
        """Per-layer cycles, MAC utilization, bytes moved, compute/memory bound; print it for a table."""
        t = self._core.timing()
        return LayerReport(t["layers"], t, self._core.platform()["mac_count"])

    def write_trace(self, path: Any) -> None:
        """Write a Chrome/Perfetto trace (JSON, ``traceEvents``) of one inference, atomically."""
        self._core.write_trace(path)

    def program_bytes(self) -> bytes:
        """The serialized DNA program."""
        return self._core.program_bytes()

    def program_info(self) -> Dict[str, Any]:
        """Sizes and counts of the DNA program (instructions, segments, DRAM bytes, buffers)."""
        return self._core.program_info()

    @property
    def platform(self) -> Dict[str, Any]:
        """The platform the program was scheduled for, arch overrides applied."""
        return self._core.platform()


def compile(mod: Module, params: Optional[Mapping[str, ArrayLike]] = None, *,
            target: Union[str, Target, None] = None) -> Runner:
    """Compile ``mod`` with ``params`` for the target of the active build_config.

    Parameters
    ----------
    mod : mera.ir.Module
    params : dict of str to array, optional
        Data for every parameter the module declares.
    target : str or Target, optional
        Overrides the target of the active ``build_config``. The Simulator
        takes its platform and scheduler options from the active
        ``build_config`` (the defaults without one).
    """
    if not isinstance(mod, Module):
        raise ConfigError(f"compile: expected a mera.ir.Module, got {type(mod).__name__}")
    cfg = current_build_config()
    if target is None:
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
    if _core.backend_info(t.value)["runs_through_deploy"]:
        return _compile_via_deploy(mod, params, t, cfg)
    core = compile_core(mod, params, t, cfg, default_dump_dir="mera_dump_ir")
    if core.runs_program:
        return SimulatorRunner(core, mod, t, log=simulator_options(cfg)["log"])
    return Runner(core, mod, t)


def compile_core(mod: Module, params: Optional[Mapping[str, ArrayLike]], target: Target, cfg: Any, *,
                 default_dump_dir: str, load: bool = True) -> Any:
    """``mod`` through the C compile driver (``mera_compile``) for ``target``, with the
    platform, scheduler and dump_ir options of ``cfg`` (the defaults for ``None``): the one
    path of ``mera.compile`` and ``mera.build``."""
    so = simulator_options(cfg)
    dump = dump_options(cfg, default_dump_dir)
    slow = _core.backend_info(target.value)["runs_program"] and so["sched"]["mode"] == "Slow"
    # Slow: layers searched, counted from C; otherwise a line if compiling takes long
    report = (_progress.Counter(f"scheduling '{mod.name}' (Slow search)", "layers") if slow
              else _progress.stage(f"compiling '{mod.name}' for {target.value}"))
    with report:
        return _core.Compiled(mod._graph, target.value, _params_list(mod, params), platform=so["platform"],
                              arch_overrides=so["overrides"], sched=so["sched"], dump_dir=dump["dump_dir"],
                              dump_stages=dump["dump_stages"], load=load,
                              progress=report if slow and _progress.enabled() else None,
                              num_threads=cfg.options.get("num_threads", 0) if cfg is not None else 0)


def _compile_via_deploy(mod: Module, params: Optional[Mapping[str, ArrayLike]], target: Target, cfg: Any) -> Any:
    """A ``runs_through_deploy`` target (IP) in process: build a deploy directory for it (x86
    host) in a temporary folder and load it, as mera.load_runtime_module would; the folder is
    removed once loaded (deploy.so is loaded from a private copy, deploy.params stays mapped)."""
    import copy
    import shutil
    import tempfile

    from .build import build
    from .config import BuildConfig
    from .deploy_runtime import load_runtime_module

    bc = copy.copy(cfg) if cfg is not None else BuildConfig(target=target.value)
    bc.target = target
    bc._local = threading.local()
    layouts = {i.get("layout") for i in mod.inputs if len(i["shape"]) == 4} & {"NCHW", "NHWC"}
    layout = layouts.pop() if len(layouts) == 1 else "NCHW"
    d = tempfile.mkdtemp(prefix="mera_compile_")
    try:
        with bc:
            build(mod, params, host_arch="x86", output_dir=d, layout=layout)
        return load_runtime_module(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


__all__ = ["compile", "Runner", "SimulatorRunner"]
