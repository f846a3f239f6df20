"""mera.Quantizer: post-training quantization of float models, in C.

The workflow of MERA's quantizer, in the open::

    q = mera.Quantizer(model, input_shape=(1, 224, 224, 3), layout="NHWC")
    q.calibrate(calibration_images)          # a list of arrays
    mod, params = q.quantize()               # what mera.build takes
    print(q.measure_quantization_quality(test_images))

``model`` is a float ``torch.nn.Module`` (traced here), a TorchScript module
or ``.pt`` file, an ONNX model or ``.onnx`` file, or a float ``(mod,
params)`` pair from a mera frontend. The arithmetic (observers, batch-norm
folding, per-channel weights, requantization) lives in ``csrc/quant/``;
docs/quantizer.md explains it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from . import _core
from ._progress import Progress
from .config import Target
from .errors import ConfigError, RuntimeInputError
from .ir import Module
from .runner import _as_array, _params_list

#: Keys of the ``config`` dict and their defaults (C: mera_quant_config_default).
DEFAULT_CONFIG: Dict[str, Any] = {
    "observer": "auto",          # auto | histogram | minmax | percentile | entropy | mse
    "bins": 2048,                # histogram bins of the histogram-based observers
    "percentile": 99.99,         # the percentile observer's upper percentile
    "weight": "per_channel",     # per_channel | per_tensor (int8, symmetric)
    "fold_batch_norm": True,     # fold per-channel mul/add after conv/dense
    "fuse_relu": True,           # conv/dense/add + relu -> one quantized node
}

#: How many calibration batches the "auto" observer keeps to compare its three candidates on.
AUTO_HELD_BATCHES = 4

#: MERA's guidance for PSNR (dB): below 20 poor, 20-25 acceptable, 25-30 good, above 30 very good.
PSNR_GRADES = ((30.0, "very good"), (25.0, "good"), (20.0, "acceptable"), (-math.inf, "poor"))


def psnr_grade(psnr: float) -> str:
    """MERA's words for a PSNR in dB."""
    return next(name for bound, name in PSNR_GRADES if psnr > bound or bound == -math.inf)


def _is_onnx(model: Any) -> bool:
    if isinstance(model, (str, os.PathLike)):
        return os.fspath(model).lower().endswith(".onnx")
    return type(model).__name__ == "ModelProto" or isinstance(model, (bytes, bytearray))


def _import(model: Any, input_shape: Any, layout: str) -> Tuple[Module, Dict[str, np.ndarray]]:
    """The float (mod, params) of whatever the user handed in."""
    if isinstance(model, tuple) and len(model) == 2 and isinstance(model[0], Module):
        return model[0], dict(model[1] or {})
    if isinstance(model, Module):
        return model, {}
    one_shape = isinstance(input_shape, tuple) and all(isinstance(d, int) for d in input_shape)
    from . import frontend
    if _is_onnx(model):
        shapes = _onnx_first_input_shape(model, input_shape) if one_shape else input_shape
        return frontend.from_onnx(model, shapes, layout=layout)
    if input_shape is None:
        raise ConfigError("Quantizer: a PyTorch model needs input_shape (e.g. (1, 224, 224, 3) under "
                          "layout='NHWC')")
    return frontend.from_pytorch(model, [("input0", input_shape)] if one_shape else input_shape, layout=layout)


def _onnx_first_input_shape(model: Any, shape: Tuple[int, ...]) -> Dict[str, Tuple[int, ...]]:
    """{name of the ONNX model's first graph input: shape}."""
    from .frontend.onnx import _load
    m, _ = _load(model)
    inits = {i.name for i in m.graph.initializer}
    names = [i.name for i in m.graph.input if i.name not in inits]
    if not names:
        raise ConfigError("Quantizer: the ONNX model has no inputs")
    return {names[0]: shape}


def _merge_config(config: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    if config is None:
        return dict(DEFAULT_CONFIG)
    if not isinstance(config, Mapping):
        raise ConfigError(f"Quantizer: config must be a dict, got {type(config).__name__}")
    unknown = sorted(set(config) - set(DEFAULT_CONFIG))
    if unknown:
        raise ConfigError(f"Quantizer: unknown config key(s) {', '.join(map(repr, unknown))}; "
                          f"valid keys: {', '.join(DEFAULT_CONFIG)}")
    cfg = dict(DEFAULT_CONFIG)
    cfg.update(config)
    return cfg


@dataclass
class TensorQuality:
    """How close one quantized tensor is to its float counterpart over the data."""

    name: str
    op: str
    psnr: float            # dB: 10 log10(peak^2 / MSE), peak = max |float value|
    score: float           # cosine similarity of float and quantized values (1 = same direction)
    max_abs_error: float
    peak: float
    top1_agreement: Optional[float] = None  # outputs of shape (N, classes): share of equal argmax

    @property
    def grade(self) -> str:
        return psnr_grade(self.psnr)

    def to_dict(self) -> Dict[str, Any]:
        d = dict(self.__dict__)
        d["grade"] = self.grade
        return d


@dataclass
class QualityReport:
    """measure_quantization_quality's answer: per output and per layer."""

    outputs: List[TensorQuality]
    layers: List[TensorQuality]
    samples: int

    @property
    def psnr(self) -> float:
        """The worst output PSNR (dB)."""
        return min(o.psnr for o in self.outputs)

    @property
    def score(self) -> float:
        """The worst output score."""
        return min(o.score for o in self.outputs)

    def worst_layers(self, n: int = 5) -> List[TensorQuality]:
        return sorted(self.layers, key=lambda t: t.psnr)[:n]

    def to_dict(self) -> Dict[str, Any]:
        return {"psnr": self.psnr, "score": self.score, "samples": self.samples,
                "outputs": [o.to_dict() for o in self.outputs], "layers": [x.to_dict() for x in self.layers]}

    def _repr_html_(self) -> str:
        from .report import quality_report_html
        return quality_report_html(self)

    def __str__(self) -> str:
        lines = [f"Quantization quality over {self.samples} sample(s) "
                 "(PSNR dB: <20 poor, 20-25 acceptable, 25-30 good, >30 very good)"]
        for o in self.outputs:
            extra = f"  top-1 agreement {o.top1_agreement:.3f}" if o.top1_agreement is not None else ""
            lines.append(f"  output {o.name}: PSNR {o.psnr:.2f} dB ({o.grade}), score {o.score:.5f}{extra}")
        lines.append(f"  {'layer':<40} {'op':<20} {'PSNR':>8} {'score':>9}")
        for x in self.layers:
            lines.append(f"  {x.name[:40]:<40} {x.op:<20} {x.psnr:>8.2f} {x.score:>9.5f}")
        return "\n".join(lines)


class _Accum:
    """Running error statistics of one tensor."""

    def __init__(self) -> None:
        self.sq_err = 0.0
        self.n = 0
        self.peak = 0.0
        self.dot = 0.0
        self.ref_sq = 0.0
        self.q_sq = 0.0
        self.max_err = 0.0
        self.top1_same = 0
        self.top1_n = 0

    def add(self, ref: np.ndarray, got: np.ndarray) -> None:
        r = ref.astype(np.float64).ravel()
        g = got.astype(np.float64).ravel()
        d = r - g
        self.sq_err += float(d @ d)
        self.n += r.size
        self.peak = max(self.peak, float(np.max(np.abs(r))) if r.size else 0.0)
        self.dot += float(r @ g)
        self.ref_sq += float(r @ r)
        self.q_sq += float(g @ g)
        self.max_err = max(self.max_err, float(np.max(np.abs(d))) if d.size else 0.0)
        if ref.ndim == 2 and ref.shape[1] > 1:
            self.top1_same += int(np.sum(np.argmax(ref, 1) == np.argmax(got, 1)))
            self.top1_n += ref.shape[0]

    def result(self, name: str, op: str) -> TensorQuality:
        mse = self.sq_err / max(self.n, 1)
        if mse == 0:
            psnr = math.inf
        elif self.peak == 0:
            psnr = -math.inf
        else:
            psnr = 10.0 * math.log10(self.peak * self.peak / mse)
        denom = math.sqrt(self.ref_sq * self.q_sq)
        score = self.dot / denom if denom > 0 else (1.0 if self.sq_err == 0 else 0.0)
        top1 = self.top1_same / self.top1_n if self.top1_n else None
        return TensorQuality(name, op, psnr, score, self.max_err, self.peak, top1)


def _dequantize(a: np.ndarray, info: Dict[str, Any]) -> np.ndarray:
    q = info.get("qparams")
    if not q or a.dtype == np.float32:
        return a.astype(np.float32)
    scale, zero_point = q  # activations are per tensor
    return ((a.astype(np.float64) - zero_point) * scale).astype(np.float32)


class Quantizer:
    """Post-training quantization of a float model (MERA's ModelQuantizer).

    Parameters
    ----------
    model_or_mod_params
        A float ``torch.nn.Module`` (traced here with zeros of ``input_shape``),
        a TorchScript module or ``.pt`` path, an ONNX ``ModelProto`` or
        ``.onnx`` path, or a float ``(mod, params)`` pair from a frontend.
    input_shape : tuple or list of (name, shape), optional
        The model's input shape, in ``layout`` (NHWC under ``"NHWC"``).
        Needed for PyTorch modules; ONNX models carry their own.
    layout : {"NHWC", "NCHW"}
    config : dict, optional
        ``observer`` ("auto" (default): PyTorch's HistogramObserver ranges,
        the plain min/max ranges or the 99.99 percentile ranges, whichever
        gives outputs closer to float on the first calibration batches; "histogram", "minmax", "percentile",
        "entropy", "mse"), ``bins``, ``percentile``,
        ``weight`` ("per_channel" | "per_tensor"), ``fold_batch_norm``,
        ``fuse_relu``. Unknown keys are an error.
    """

    def __init__(self, model_or_mod_params: Any, input_shape: Any = None, layout: str = "NHWC",
                 config: Optional[Mapping[str, Any]] = None):
        if not isinstance(layout, str) or layout not in ("NCHW", "NHWC"):
            raise ConfigError(f"Quantizer: layout must be 'NCHW' or 'NHWC', got {layout!r}")
        self.config = _merge_config(config)
        self.layout = layout
        mod, params = _import(model_or_mod_params, input_shape, layout)
        self._float_mod_in = mod
        self._auto = self.config["observer"] == "auto"
        # "auto": histogram observers plus a percentile observer per activation (one float run)
        self._core = _core.Quantizer(mod._graph, _params_list(mod, params), self.config)
        #: calibration batches kept to choose between the "auto" observer's candidates
        self._held: List[List[np.ndarray]] = []
        #: what "auto" chose: {"ranges": "histogram" | "minmax" | "percentile", "psnr": {candidate: dB}};
        #: None otherwise
        self.auto_choice: Optional[Dict[str, Any]] = None
        graph, fparams = self._core.float_graph()
        #: the float model the quantizer works on (batch norms folded) and its params
        self.float_mod = Module(graph)
        self.float_params: Dict[str, np.ndarray] = fparams
        self._inputs = self.float_mod.inputs
        self._quantized: Optional[Tuple[Module, Dict[str, np.ndarray], List[int]]] = None

    # -- calibration ------------------------------------------------------

    @property
    def num_calibrated(self) -> int:
        """Calibration batches seen so far."""
        return self._core.num_batches()

    def _batches(self, item: Any, index: int) -> List[List[np.ndarray]]:
        """One calibration item -> one or more input lists (a stacked batch is split)."""
        if isinstance(item, Mapping):
            missing = [i["name"] for i in self._inputs if i["name"] not in item]
            if missing:
                raise RuntimeInputError(f"calibration item {index}: missing input(s) {missing}")
            arrays = [item[i["name"]] for i in self._inputs]
        elif isinstance(item, (list, tuple)) and len(self._inputs) > 1:
            arrays = list(item)
        else:
            arrays = [item]
        if len(arrays) != len(self._inputs):
            raise RuntimeInputError(f"calibration item {index}: the model takes {len(self._inputs)} input(s), "
                                    f"got {len(arrays)}")
        out: List[np.ndarray] = []
        splits = None
        for info, a in zip(self._inputs, arrays):
            try:
                # float32, or the int32/int64 of an index input (token or byte ids)
                a = np.ascontiguousarray(_as_array(a, info["name"]),
                                         dtype=info["dtype"] if info["dtype"] in ("int32", "int64") else np.float32)
            except (TypeError, ValueError) as e:
                raise RuntimeInputError(f"calibration item {index}: input '{info['name']}' is not numeric: {e}") \
                    from None
            want = tuple(info["shape"])
            if a.shape == want:
                out.append(a)
                continue
            if (a.ndim == len(want) and a.shape[1:] == want[1:] and want[0] > 0 and a.shape[0] % want[0] == 0):
                k = a.shape[0] // want[0]
                if splits not in (None, k):
                    raise RuntimeInputError(f"calibration item {index}: inputs hold different batch counts")
                splits = k
                out.append(a)
                continue
            hint = ""
            if a.ndim == 4 and len(want) == 4 and tuple(a.shape[i] for i in (0, 2, 3, 1)) == want:
                hint = " (the model takes NHWC: transpose with x.transpose(0, 2, 3, 1))"
            elif a.ndim == 4 and len(want) == 4 and tuple(a.shape[i] for i in (0, 3, 1, 2)) == want:
                hint = " (the model takes NCHW: transpose with x.transpose(0, 3, 1, 2))"
            raise RuntimeInputError(f"calibration item {index}: input '{info['name']}' has shape {a.shape}, "
                                    f"the model takes {want}{hint}")
        if splits is None:
            return [out]
        return [[np.ascontiguousarray(a[j * (a.shape[0] // splits):(j + 1) * (a.shape[0] // splits)])
                 if a.shape != tuple(info["shape"]) else a for a, info in zip(out, self._inputs)]
                for j in range(splits)]

    def calibrate(self, data: Iterable[Any], progress: Optional[bool] = None) -> "Quantizer":
        """Run calibration data through the float model's observers.

        ``data`` is a list (or any iterable) of arrays for a single-input model,
        of lists or dicts of arrays otherwise; an array holding several
        batches along axis 0 is split. May be called several times; the
        statistics accumulate. ``progress``: a progress bar (tqdm, when
        installed) or line on stderr; None: when calibration runs longer
        than two seconds and ``build_config(progress=False)`` or ``mera
        --quiet`` does not silence it.
        """
        if progress is not None and not isinstance(progress, (bool, np.bool_)):
            raise ConfigError(f"calibrate: progress must be True, False or None, got {progress!r}")
        if isinstance(data, np.ndarray) or (len(self._inputs) == 1 and hasattr(data, "shape")):
            items = [data]
        elif isinstance(data, (list, tuple)):
            items = data
        else:
            try:
                items = list(data)
            except TypeError:
                raise RuntimeInputError(f"calibrate: data must be a list (or iterable) of inputs, got "
                                        f"{type(data).__name__}") from None
        total = len(items)
        if total == 0:
            raise RuntimeInputError("calibrate: no calibration data (an empty list)")
        with Progress("calibrating", total, "batches", show=progress) as bar:
            for i, item in enumerate(items):
                for batch in self._batches(item, i):
                    self._core.calibrate(batch)
                    if self._auto and len(self._held) < AUTO_HELD_BATCHES:
                        self._held.append([np.array(a, copy=True) for a in batch])
                bar.update()
        self._quantized = None
        return self

    # -- quantization -----------------------------------------------------

    def quantize(self) -> Tuple[Module, Dict[str, np.ndarray]]:
        """The quantized ``(mod, params)``: uint8 activations, int8 weights,
        float inputs and outputs. Builds with :func:`mera.build` and runs on
        every target."""
        if self._auto and self._held:
            graph, float_of = self._auto_quantize()
        else:
            graph, float_of = self._core.quantize()
        mod = Module(graph)
        params = {}
        for vid in graph.inputs():
            info = graph.value(vid)
            if info["kind"] == "param":
                params[info["name"]] = np.array(graph.const_data(vid))
        self._quantized = (mod, params, float_of)
        return mod, params

    def _auto_quantize(self) -> Tuple[Any, List[int]]:
        """The "auto" observer: quantize with the histogram ranges, the
        min/max ranges and the percentile ranges, run each on InterpreterHw
        over the held calibration batches, and keep the one whose worst
        output PSNR against float is highest (the earlier one in that order
        on a tie). None is better everywhere: the histogram search clips
        outliers to minimise each tensor's own error, which helps most CNNs
        and hurts networks whose outliers carry the signal (squeeze-excitation
        gates, GELU blocks, DB text detectors' heads); min/max keeps every
        outlier and spends the levels on them; the percentile ranges clip only
        the rarest 0.01% at each end."""
        fg = self.float_mod._graph
        f_rt = _core.Interp(fg, Target.Interpreter.value, _params_list(self.float_mod, self.float_params))
        refs = [f_rt.run(batch) for batch in self._held]
        best = None
        scores: Dict[str, float] = {}
        for name, ranges in (("histogram", "observer"), ("minmax", "minmax"), ("percentile", "percentile")):
            graph, float_of = self._core.quantize(ranges=ranges)
            mod = Module(graph)
            params = {graph.value(v)["name"]: np.array(graph.const_data(v)) for v in graph.inputs()
                      if graph.value(v)["kind"] == "param"}
            q_rt = _core.Interp(graph, Target.InterpreterHw.value, _params_list(mod, params))
            acc = [_Accum() for _ in refs[0]]
            for batch, ref in zip(self._held, refs):
                for a, r, got in zip(acc, ref, q_rt.run(batch)):
                    a.add(r, got)
            scores[name] = min(a.result("", "output").psnr for a in acc)
            if best is None or scores[name] > scores[best[0]]:
                best = (name, graph, float_of)
        self.auto_choice = {"ranges": best[0], "psnr": scores}
        return best[1], best[2]

    def ranges(self) -> Dict[str, Dict[str, float]]:
        """Per observed float value: count, min, max and the chosen range (lo, hi)
        (under "auto", the range of the candidate it kept)."""
        g = self.float_mod._graph
        out = {}
        chose = self.auto_choice["ranges"] if self.auto_choice else None
        for vid in range(g.num_values()):
            st = self._core.observer_stats(vid)
            if st is not None and chose == "minmax":
                st = dict(st, lo=min(st["min"], 0.0), hi=max(st["max"], 0.0))
            elif st is not None and chose == "percentile":
                p = self._core.observer_stats(vid, True)
                st = dict(st, lo=p["lo"], hi=p["hi"])
            if st is not None:
                out[g.value(vid)["name"]] = st
        return out

    # -- quality ----------------------------------------------------------

    def measure_quantization_quality(self, data: Iterable[Any], target: str = "InterpreterHw") -> QualityReport:
        """Compare the quantized model with the float one on ``data``.

        Runs the float model on the Interpreter and the quantized one on
        ``target`` (InterpreterHw: the integer arithmetic every target
        shares) and reports, per output and per layer, the PSNR in dB of the
        quantized tensor against the float one and a score (cosine
        similarity). MERA's guidance: below 20 dB poor, above 30 very good.
        """
        if self._quantized is None:
            self.quantize()
        name = target.value if isinstance(target, Target) else target
        node_by_node = [b["name"] for b in _core.backends() if b["node_by_node"]]  # the interpreters
        if not isinstance(name, str) or name not in node_by_node:
            raise ConfigError(f"measure_quantization_quality: target must run the graph node by node, to compare "
                              f"each layer ({', '.join(node_by_node)}), got {target!r}")
        qmod, qparams, float_of = self._quantized
        fg, qg = self.float_mod._graph, qmod._graph
        f_rt = _core.Interp(fg, Target.Interpreter.value, _params_list(self.float_mod, self.float_params))
        q_rt = _core.Interp(qg, name, _params_list(qmod, qparams))
        # layers: quantized node outputs standing for a float node output
        pairs: List[Tuple[int, int, str, str]] = []
        for node in qmod.nodes():
            qv = qg.find(node["name"])
            fv = float_of[qv] if 0 <= qv < len(float_of) else -1
            if fv < 0 or fg.value(fv)["kind"] not in ("node", "input") or node["op"] == "dequantize":
                continue
            pairs.append((qv, fv, node["name"], node["op"]))
        input_pos = {vid: k for k, vid in enumerate(v for v in fg.inputs() if fg.value(v)["kind"] == "input")}
        outs = [(qo, fo) for qo, fo in zip(qg.outputs(), fg.outputs())]
        acc_layers = [_Accum() for _ in pairs]
        acc_out = [_Accum() for _ in outs]
        q_infos = [qg.value(p[0]) for p in pairs]
        n = 0
        items = data if isinstance(data, (list, tuple)) else list(data)
        if isinstance(data, np.ndarray):
            items = [data]
        with Progress("measuring quantization quality", len(items), "items") as bar:
            for i, item in enumerate(items):
                for batch in self._batches(item, i):
                    # a graph input's float value is the batch itself
                    f_node = [p[1] for p in pairs if p[1] not in input_pos]
                    f_got = iter(f_rt.run_values(batch, f_node))
                    f_vals = [batch[input_pos[p[1]]] if p[1] in input_pos else next(f_got) for p in pairs]
                    q_vals = q_rt.run_values(batch, [p[0] for p in pairs])
                    f_out = f_rt.run(batch)
                    q_out = q_rt.run(batch)
                    for k, info in enumerate(q_infos):
                        acc_layers[k].add(f_vals[k], _dequantize(q_vals[k], info))
                    for k in range(len(outs)):
                        acc_out[k].add(f_out[k], q_out[k])
                    n += 1
                bar.update()
        if n == 0:
            raise RuntimeInputError("measure_quantization_quality: no data (an empty list)")
        out_names = [fg.value(fo)["name"] for _, fo in outs]
        return QualityReport(outputs=[a.result(nm, "output") for a, nm in zip(acc_out, out_names)],
                             layers=[a.result(p[2], p[3]) for a, p in zip(acc_layers, pairs)], samples=n)


__all__ = ["Quantizer", "QualityReport", "TensorQuality", "DEFAULT_CONFIG", "psnr_grade"]
