"""Real TFLite models that a PyPI wheel ships: MediaPipe's face, hand, pose, iris and palm models and its
selfie segmenter, run through mera as a new user would.

    pip download --no-deps mediapipe==0.10.21 -d wheels   # the wheel holds the .tflite files
    python benchmarks/tflite_corpus.py --wheel wheels/mediapipe-0.10.21-*.whl   # or an installed mediapipe

(Installing mediapipe itself pulls jax, OpenCV and numpy < 2; the script only reads the files.) For each
model it reports:

- import: does ``from_tflite`` take the file as shipped (or the one error listing every operator it
  cannot import);
- interp: the float Interpreter's largest difference from LiteRT (``ai-edge-litert``), relative to the
  output's largest magnitude, over every output;
- mera-q: mera.Quantizer calibrated on N inputs: the lowest PSNR over the outputs of the int8 model
  against LiteRT's float outputs on a held-out input (outputs that are constant are left out);
- sim: the Simulator's latency estimate on DNA-F100 and whether it gives InterpreterHw's bytes.

Inputs are seeded uniform noise in the range the model's preprocessing produces ([-1, 1] for the
detectors, [0, 1] for the rest): the wheel holds no images, and nothing may be downloaded. Figures on
noise say whether the arithmetic holds, not how well the models find faces.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import os
import sys
import tempfile
import zipfile
from typing import List, Tuple

import numpy as np

import mera
from mera.frontend import from_tflite

from onnx_corpus import psnr  # benchmarks/onnx_corpus.py


def model_files(wheel: str) -> List[Tuple[str, str]]:
    """(name, path) of every .tflite file of the wheel, or of the installed mediapipe package."""
    if wheel:
        out = tempfile.mkdtemp(prefix="mera-tflite-corpus-")
        with zipfile.ZipFile(wheel) as z:
            names = [n for n in z.namelist() if n.endswith(".tflite")]
            z.extractall(out, names)
        return sorted((os.path.basename(n)[:-7], os.path.join(out, n)) for n in names)
    spec = importlib.util.find_spec("mediapipe")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("no mediapipe installed: give --wheel (pip download --no-deps mediapipe==0.10.21)")
    root = list(spec.submodule_search_locations)[0]
    return sorted((os.path.basename(p)[:-7], p) for p in glob.glob(os.path.join(root, "**", "*.tflite"),
                                                                    recursive=True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wheel", default="", help="a mediapipe wheel to read the .tflite files from")
    ap.add_argument("--calib", type=int, default=4, help="calibration inputs for mera.Quantizer")
    ap.add_argument("--only", default="", help="substring of the model names to run")
    args = ap.parse_args()
    from ai_edge_litert.interpreter import Interpreter

    print(f"{'model':42} {'import':8} {'interp':>9} {'mera-q dB':>10} {'sim ms':>8} {'sim==hw':>8}")
    for name, path in model_files(args.wheel):
        if args.only not in name:
            continue
        try:
            it = Interpreter(model_path=path, num_threads=1)
            it.allocate_tensors()
        except (RuntimeError, ValueError) as e:      # a custom op LiteRT cannot run without MediaPipe's resolver
            print(f"{name:42} {'(LiteRT cannot run it: ' + str(e).splitlines()[0][:60] + ')'}")
            continue
        ins, outs = it.get_input_details(), it.get_output_details()
        lo = -1.0 if "detection" in name else 0.0

        def sample(seed: int) -> List[np.ndarray]:
            rng = np.random.default_rng(seed)
            return [rng.uniform(lo, 1.0, d["shape"]).astype(np.float32) for d in ins]

        def litert(xs: List[np.ndarray]) -> List[np.ndarray]:
            for d, x in zip(ins, xs):
                it.set_tensor(d["index"], x)
            it.invoke()
            return [it.get_tensor(d["index"]).copy() for d in outs]

        try:
            mod, params = from_tflite(path)
        except mera.MeraError as e:
            print(f"{name:42} {'no':8} {type(e).__name__}: {str(e).splitlines()[0][:90]}")
            continue
        x = sample(1000)
        refs = litert(x)
        got = mera.compile(mod, params, target="Interpreter")(*x)
        rel = max(float(np.abs(np.asarray(g) - r).max()) / max(float(np.abs(r).max()), 1e-12)
                  for g, r in zip(got, refs))
        q = mera.Quantizer((mod, params))
        q.calibrate([s if len(s) > 1 else s[0] for s in (sample(i) for i in range(args.calib))])
        qm, qp = q.quantize()
        hw = mera.compile(qm, qp, target="InterpreterHw")(*x)
        with mera.build_config(target="Simulator", arch=100):
            sim = mera.compile(qm, qp)
        same = all(np.array_equal(a, b) for a, b in zip(hw, sim(*x)))
        ms = float(sim.timing()["total_us"]) / 1000.0
        db = min((psnr(r, np.asarray(h)) for h, r in zip(hw, refs) if np.ptp(r) > 0), default=float("nan"))
        print(f"{name:42} {'yes':8} {rel:9.1e} {db:10.1f} {ms:8.2f} {str(same):>8}", flush=True)


if __name__ == "__main__":
    main()
