"""What ``mera compile`` and ``mera profile MODEL`` share: reading a model file
(ONNX, TorchScript ``.pt``, exported ``.pt2``, ``.tflite``), its input shapes,
calibration data, and quantizing a float model."""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .. import _progress, frontend
from ..errors import ConfigError, FormatError, MeraIOError, UnsupportedError
from ..ir import Module

#: Model file suffixes and the frontend each goes through.
MODEL_KINDS = {".onnx": "ONNX", ".pt": "TorchScript", ".pth": "TorchScript", ".pt2": "exported program",
               ".tflite": "TFLite"}


def add_model_arguments(p: argparse.ArgumentParser, target_required: bool) -> None:
    """--target, --arch, --layout, --input-shape, --calibrate, --scheduler, --workers."""
    from ..config import Target
    targets = [t.value for t in Target]
    p.add_argument("--target", required=target_required, default=None if target_required else "Simulator",
                   choices=targets, help="where the model runs" + ("" if target_required else " (default Simulator)"))
    p.add_argument("--arch", default=None,
                   help="DNA platform: 100, 200, a platform name or alias (see `mera platforms`); "
                        "default DNAF200L0002, as MERA's")
    p.add_argument("--layout", default="NHWC", choices=["NHWC", "NCHW"],
                   help="the layout the model is imported in; --input-shape and the data are in it (default NHWC)")
    p.add_argument("--input-shape", action="append", default=[], metavar="[NAME:]1,3,224,224",
                   help="an input's shape, in --layout; once per input, in order, or NAME:shape")
    p.add_argument("--calibrate", metavar="CALIB.npy",
                   help="quantize a float model with mera.Quantizer on this data: a .npy array of batches stacked "
                        "along axis 0 (one input), or a .npz with one array per input name")
    p.add_argument("--scheduler", choices=["Fast", "Slow"], default="Fast",
                   help="Simulator/IP scheduler mode (Slow searches tile shapes with the timing model)")
    p.add_argument("--workers", type=int, default=None, help="threads of the Slow scheduler")


def parse_shape(text: str) -> Tuple[Optional[str], Tuple[int, ...]]:
    """'1,3,224,224' or 'name:1,3,224,224' -> (name or None, shape)."""
    name, _, dims = text.rpartition(":")
    try:
        shape = tuple(int(d) for d in dims.replace("x", ",").split(",") if d.strip())
    except ValueError:
        shape = ()
    if not shape or any(d <= 0 for d in shape):
        raise ConfigError(f"--input-shape {text!r}: expected positive integers separated by commas, "
                          "e.g. 1,3,224,224 or input0:1,3,224,224")
    return (name or None), shape


def model_kind(path: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    if ext not in MODEL_KINDS:
        raise UnsupportedError(f"'{path}': unknown model file type '{ext or '(none)'}'; mera reads "
                               + ", ".join(f"{k} ({v})" for k, v in MODEL_KINDS.items()))
    if not os.path.isfile(path):
        raise MeraIOError(f"'{path}' does not exist or is not a file")
    return MODEL_KINDS[ext]


def _onnx_input_names(path: str) -> List[str]:
    from ..frontend.onnx import _load
    m, _ = _load(path)
    inits = {i.name for i in m.graph.initializer}
    return [i.name for i in m.graph.input if i.name not in inits]


def import_model(path: str, shapes: List[str], layout: str) -> Tuple[Module, Dict[str, np.ndarray]]:
    """(mod, params) of the model file at ``path`` through its frontend."""
    kind = model_kind(path)
    parsed = [parse_shape(s) for s in shapes]
    with _progress.stage(f"importing {os.path.basename(path)} ({kind})"):
        if kind == "ONNX":
            shape_list = None
            if parsed:
                names = _onnx_input_names(path) if any(n is None for n, _ in parsed) else []
                if len(parsed) > len(names) and names:
                    raise ConfigError(f"{len(parsed)} --input-shape given, but '{path}' has {len(names)} input(s): "
                                      f"{', '.join(names)}")
                shape_list = [(n if n is not None else names[i], s) for i, (n, s) in enumerate(parsed)]
            return frontend.from_onnx(path, shape_list, layout=layout)
        if kind == "TFLite":
            from_tflite = getattr(frontend, "from_tflite", None)
            if from_tflite is None:
                raise UnsupportedError(f"'{path}': this mera has no TFLite frontend (mera.frontend.from_tflite)")
            return from_tflite(path, {(n or f"input{i}"): s for i, (n, s) in enumerate(parsed)} or None)
        if not parsed:
            raise ConfigError(f"'{path}' ({kind}) needs --input-shape for each input, e.g. --input-shape 1,3,224,224")
        # torch.export.load logs a traceback at WARNING before raising on a bad file; the command's one line says it
        import torch.export  # noqa: F401  (torch sets its loggers' levels when imported)
        logging.getLogger("torch.export").setLevel(logging.ERROR)
        return frontend.from_pytorch(path, [(n or f"input{i}", s) for i, (n, s) in enumerate(parsed)],
                                     layout=layout)


def load_calibration(path: str, mod: Module) -> List[Any]:
    """The calibration items of a .npy (one input) or .npz (one array per input name) file."""
    names = [i["name"] for i in mod.inputs]
    try:
        data = np.load(path, allow_pickle=False)
    except OSError as e:
        raise MeraIOError(f"--calibrate: cannot read '{path}': {e}") from None
    except ValueError as e:
        raise FormatError(f"--calibrate: '{path}' is not a .npy or .npz file of arrays ({e})") from None
    if isinstance(data, np.ndarray):
        if len(names) != 1:
            raise ConfigError(f"--calibrate: the model takes {len(names)} inputs ({', '.join(names)}): give a .npz "
                              "with one array per input name")
        return _split(mod, {names[0]: data}, lambda d: d[names[0]])
    with data:
        missing = [n for n in names if n not in data.files]
        if missing:
            raise ConfigError(f"--calibrate: '{path}' has no array for input(s) {', '.join(missing)} "
                              f"(it holds {', '.join(data.files) or 'nothing'})")
        return _split(mod, {n: data[n] for n in names}, lambda d: d)


def _split(mod: Module, arrays: Dict[str, np.ndarray], item: Any) -> List[Any]:
    """One calibration item per model batch when every array stacks whole batches (so progress counts
    batches); else the arrays as one item, for the Quantizer to check."""
    arrays = {n: np.ascontiguousarray(a, dtype=np.float32) for n, a in arrays.items()}
    counts = set()
    for i in mod.inputs:
        a, want = arrays[i["name"]], tuple(i["shape"])
        if a.ndim == len(want) and want and want[0] > 0 and a.shape[1:] == want[1:] and a.shape[0] % want[0] == 0:
            counts.add(a.shape[0] // want[0])
        else:
            counts.add(None)
    if len(counts) != 1 or None in counts:
        return [item(arrays)]
    k = counts.pop()
    batch = {i["name"]: i["shape"][0] for i in mod.inputs}
    return [item({n: a[j * batch[n]:(j + 1) * batch[n]] for n, a in arrays.items()}) for j in range(k)]


def is_float_model(mod: Module) -> bool:
    """True when no value of the graph is int8/uint8: a float model, which only a quantizer makes run on the DNA."""
    g = mod._graph
    return all(g.value(v)["dtype"] == "float32" for v in range(g.num_values()))


def _say(args: argparse.Namespace, line: str) -> None:
    if not getattr(args, "quiet", False):
        print(line)


def load(args: argparse.Namespace) -> Tuple[Module, Dict[str, np.ndarray]]:
    """The model of ``args.model``, quantized when ``--calibrate`` is given."""
    mod, params = import_model(args.model, args.input_shape, args.layout)
    if args.calibrate:
        from ..quantizer import Quantizer
        items = load_calibration(args.calibrate, mod)
        q = Quantizer((mod, params), layout=args.layout)
        q.calibrate(items)
        mod, params = q.quantize()
        _say(args, f"mera: quantized '{mod.name}' on {q.num_calibrated} calibration batch(es) from {args.calibrate}")
    elif is_float_model(mod) and args.target not in ("Interpreter",):
        _say(args, f"mera: note: '{args.model}' is a float model: on {args.target} it runs on the host; "
             "give --calibrate data to quantize it for the DNA")
    return mod, params


def config_kwargs(args: argparse.Namespace) -> Dict[str, Any]:
    """build_config keywords from the command line."""
    kw: Dict[str, Any] = {"scheduler_config": {"mode": args.scheduler}}
    if args.arch is not None:
        kw["arch"] = int(args.arch) if args.arch.isdigit() else args.arch
    if args.workers is not None:
        kw["compiler_workers"] = args.workers
    return kw
