"""The dataset-evaluation case: images per second over many inputs, mera against PyTorch.

Runs a quantized zoo network (MobileNetV2 by default) on N inputs (1,000 by
default; 16 distinct seeded images, cycled) with ``Runner.evaluate`` on
InterpreterHw, and the traced PyTorch fbgemm model on the same inputs in a
loop, in the same process, and prints both rates and their ratio (higher
is better for mera). The outputs of the first 16 are checked identical.

    python benchmarks/evaluate.py [--model NAME] [-n N] [--threads T] [--batch B]

--threads sets mera's build_config(num_threads) and torch.set_num_threads;
--batch runs batches of B images (the model traced and imported at that
batch size).
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch

import mera
from mera import models


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mobilenet_v2")
    ap.add_argument("-n", type=int, default=1000, help="images")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=1)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    torch.backends.quantized.engine = "fbgemm"
    torch.set_num_threads(args.threads)
    model = models.MODELS[args.model](quantize=True, seed=0)
    pool = models.calibration_data(args.model, n=16, seed=1)
    batches = [torch.cat([pool[(i + k) % 16] for k in range(args.batch)]) for i in range(0, 16, 1)]
    traced = torch.jit.trace(model, batches[0])
    x0 = np.ascontiguousarray(batches[0].numpy().transpose(0, 2, 3, 1))
    mod, params = mera.frontend.from_pytorch(traced, [("input0", x0.shape)], layout="NHWC")
    with mera.build_config(target="InterpreterHw", num_threads=args.threads):
        runner = mera.compile(mod, params)
    nhwc = [np.ascontiguousarray(b.numpy().transpose(0, 2, 3, 1)) for b in batches]
    runs = max(1, args.n // args.batch)
    samples = [nhwc[i % 16] for i in range(runs)]
    with torch.no_grad():
        same = all(np.array_equal(o[0], traced(b).numpy()) for o, b in zip(runner.evaluate(nhwc), batches))
        t0 = time.perf_counter()
        for i in range(runs):
            traced(batches[i % 16])
        t_torch = time.perf_counter() - t0
    runner.evaluate(samples)
    m = runner.evaluate_metrics
    torch_ips = runs * args.batch / t_torch
    print(f"{args.model} int8, {runs * args.batch} images in batches of {args.batch}, {args.threads} thread(s): "
          f"mera InterpreterHw {m['images_per_second']:.1f} images/s, torch fbgemm {torch_ips:.1f} images/s, "
          f"ratio {m['images_per_second'] / torch_ips:.2f}; outputs identical: {same}")


if __name__ == "__main__":
    main()
