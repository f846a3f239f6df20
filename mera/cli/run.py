"""``mera run DIR``: the inference app's run and log (apps/inference), from Python."""

from __future__ import annotations

import argparse
import os
import time
from typing import Any, Dict, List

import numpy as np

from .. import _progress
from ..errors import MeraIOError, RuntimeInputError


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("run", parents=[common], help="run a deploy directory and check it against references",
                       description="Load DIR with mera.load_runtime_module, set its inputs (input0.bin, "
                                   "input1.bin, ... in DIR, or --input files), run it N times and print the "
                                   "inference app's log; each output k with a reference (ref_result_k.bin in "
                                   "DIR, or --reference files) is compared with it.")
    p.add_argument("deploy_dir", metavar="DIR", help="a deploy directory written by mera.build / mera compile")
    p.add_argument("--input", action="append", default=[], metavar="FILE",
                   help="an input's raw bytes (dtype and layout of the model's input) or a .npy; once per input")
    p.add_argument("--reference", action="append", default=[], metavar="FILE",
                   help="an output's expected raw bytes or .npy; once per output")
    p.add_argument("-n", "--runs", type=int, default=1, metavar="N", help="timed runs (default 1)")
    p.add_argument("-w", "--warmup", type=int, default=1, metavar="W", help="untimed runs first (default 1)")
    p.add_argument("--save-outputs", metavar="OUT_DIR", help="write each output k to OUT_DIR/output_k.bin")
    p.set_defaults(func=run)


def read_tensor(path: str, spec: Dict[str, Any], what: str) -> np.ndarray:
    """The array in ``path`` (raw bytes or .npy) with exactly ``spec``'s dtype and shape."""
    dtype, shape = np.dtype(spec["dtype"]), tuple(spec["shape"])
    if path.endswith(".npy"):
        try:
            a = np.load(path, allow_pickle=False)
        except OSError as e:
            raise MeraIOError(f"{what}: cannot read '{path}': {e}") from None
        except ValueError as e:
            raise RuntimeInputError(f"{what}: '{path}' is not a .npy array ({e})") from None
        if a.dtype != dtype or a.size != int(np.prod(shape)):
            raise RuntimeInputError(f"{what}: '{path}' holds {a.shape} {a.dtype}, expected {shape} {dtype}")
        return np.ascontiguousarray(a).reshape(shape)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise MeraIOError(f"{what}: cannot read '{path}': {e.strerror}") from None
    want = int(np.prod(shape)) * dtype.itemsize
    if len(data) != want:
        raise RuntimeInputError(f"{what}: '{path}' has {len(data)} bytes, expected {want} ({shape} {dtype})")
    return np.frombuffer(data, dtype=dtype).reshape(shape).copy()


def _files(given: List[str], default_dir: str, pattern: str, count: int, what: str, required: bool) -> List[Any]:
    if given:
        if len(given) != count:
            raise RuntimeInputError(f"{len(given)} {what} file(s) given, the model has {count}")
        return list(given)
    out = []
    for i in range(count):
        path = os.path.join(default_dir, pattern.format(i))
        if not os.path.isfile(path):
            if required:
                raise MeraIOError(f"no {what} file for {what} {i}: '{path}' does not exist (give --{what} FILE)")
            path = None
        out.append(path)
    return out


def compare(res: np.ndarray, ref: np.ndarray) -> None:
    """The app's comparison lines (max and mean of |result - ref|, share of equal elements), '%g' numbers."""
    diff = np.abs(res.astype(np.float64) - ref.astype(np.float64))
    n = max(1, res.size)
    print(f"max abs diff: {float(diff.max()) if diff.size else 0.0:g}")
    print(f"mean abs diff: {float(diff.sum()) / n:g}")
    print(f"correct ratio: {float(np.sum(res == ref)) / n:g}")


def run(args: argparse.Namespace) -> int:
    import mera
    if args.runs < 1 or args.warmup < 0:
        raise RuntimeInputError(f"-n must be >= 1 and -w >= 0, got -n {args.runs} -w {args.warmup}")
    print("Loading runtime module...")
    rt = mera.load_runtime_module(args.deploy_dir)
    print("Loading input...")
    in_files = _files(args.input, args.deploy_dir, "input{}.bin", rt.get_num_inputs(), "input", True)
    for i, (spec, path) in enumerate(zip(rt.inputs, in_files)):
        rt.set_input(i, read_tensor(path, spec, f"input {i} ('{spec['name']}')"))
    print("Warming up...")
    for _ in range(args.warmup):
        rt.run()
    print(f"Running {args.runs} times...")
    with _progress.Progress("running", args.runs, "runs") as bar:
        t0 = time.perf_counter()
        for _ in range(args.runs):
            rt.run()
            bar.update()
        ms = (time.perf_counter() - t0) * 1e3 / args.runs
    m = rt.get_runtime_metrics()[0]
    target = m["target"]
    host_note = {"IP": " (host CPU time per run, emulating the IP; device estimate below)",
                 "Simulator": " (host CPU time per run, simulating the DNA; device estimate below)"}
    print(f"Took {ms:.2f} msec.{host_note.get(target, '')}")
    if target == "Simulator":
        print(f"Simulator total latency: {m['device_us']:.3f} us")
    elif target == "IP":
        print(f"Device latency: {m['device_us']:.3f} us ({m['device_cycles']} cycles on {m['platform']}, "
              f"device '{m['device']}')")
    print(f"Weights {m['weights_bytes'] / 1048576:.1f} MiB, arena {m['arena_bytes'] / 1048576:.1f} MiB")
    outputs = rt.get_outputs()
    if args.save_outputs:
        os.makedirs(args.save_outputs, exist_ok=True)
        for k, out in enumerate(outputs):
            out.tofile(os.path.join(args.save_outputs, f"output_{k}.bin"))
    refs = _files(args.reference, args.deploy_dir, "ref_result_{}.bin", len(outputs), "reference", False)
    for k, (spec, out, path) in enumerate(zip(rt.outputs, outputs, refs)):
        if path is None:
            print(f"No ref_result_{k}.bin: output {k} not compared.")
            continue
        # (an output cut to NonMaxSuppression's valid rows has this run's shape: docs/frontends.md)
        ref = read_tensor(path, dict(spec, shape=out.shape), f"reference of output {k} ('{spec['name']}')")
        if len(outputs) > 1:
            print(f"output {k}:")
        compare(out, ref)
    return 0
