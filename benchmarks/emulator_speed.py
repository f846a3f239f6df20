"""Per-run cost of the Simulator against InterpreterHw, same process, same inputs.

For each model (zoo names: mera.models.MODELS and TASK_MODELS) and each thread count,
the script compiles the model for InterpreterHw and for the Simulator (arch 100, Fast
scheduler) with ``build_config(num_threads=N)``, checks that the outputs are byte-identical,
and times both interleaved (InterpreterHw, Simulator, InterpreterHw, ...; one warm-up each):

  - wall time per run, best of --repeat;
  - CPU time per run (time.process_time over all threads of the process, best of
    --repeat), which a shared, loaded machine disturbs less than the wall time.

Prints a table with both ratios Simulator / InterpreterHw (issue 17's target: <= 1.2).
With --no-waves the script also times, interleaved with the others, a Simulator loaded with
MERA_SIM_WAVES=0 (every DNA segment in execution order, each tile split across the threads:
the Simulator before its waves; docs/architecture.md, "Waves") and prints its wall time.
With MERA_SIM_PROFILE=1 in the environment the machine also prints, per run, where its
time went (LOAD, STORE, CONV, VEC, host nodes; see csrc/sim/run.c).

    python benchmarks/emulator_speed.py [--models resnet50,mobilenet_v2,yolov5n] [--threads 1 2]
                                        [--repeat 7] [--no-waves]
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
import torch

import mera


def build_model(name: str):
    import mera.models as mm
    factory = {**mm.MODELS, **mm.TASK_MODELS}[name]
    quantized = factory(quantize=True, seed=0)
    x = mm.calibration_data(name, n=1, seed=1234)[0]
    traced = mm.trace(quantized, x)
    x_nhwc = np.ascontiguousarray(x.numpy().transpose(0, 2, 3, 1))
    mod, params = mera.frontend.from_pytorch(traced, [("input0", x_nhwc.shape)], layout="NHWC")
    return mod, params, x_nhwc


def timed(fn):
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet50,mobilenet_v2,yolov5n")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--arch", default="100")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--no-waves", action="store_true", help="also time a Simulator without waves")
    args = ap.parse_args()
    torch.backends.quantized.engine = "fbgemm"
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    arch = int(args.arch) if args.arch.isdigit() else args.arch
    rows = []
    for name in [n.strip() for n in args.models.split(",") if n.strip()]:
        mod, params, x = build_model(name)
        for th in args.threads:
            with mera.build_config(target="InterpreterHw", num_threads=th):
                interp = mera.compile(mod, params)
            with mera.build_config(target="Simulator", arch=arch, num_threads=th, sim_log=False):
                sim = mera.compile(mod, params)
            runners = [interp, sim]
            if args.no_waves:
                old = os.environ.get("MERA_SIM_WAVES")
                os.environ["MERA_SIM_WAVES"] = "0"  # read when the machine loads
                with mera.build_config(target="Simulator", arch=arch, num_threads=th, sim_log=False):
                    runners.append(mera.compile(mod, params))
                if old is None:
                    del os.environ["MERA_SIM_WAVES"]
                else:
                    os.environ["MERA_SIM_WAVES"] = old
            ref = interp(x)
            same = all(len(ref) == len(out) and all(np.array_equal(a, b) for a, b in zip(ref, out))
                       for out in (r(x) for r in runners[1:]))
            best = [[float("inf")] * 2 for _ in runners]  # [interp, sim, sim without waves] x [wall, cpu]
            for _ in range(args.repeat):
                for k, r in enumerate(runners):
                    w, c = timed(lambda: r(x))
                    best[k] = [min(best[k][0], w), min(best[k][1], c)]
            (iw, ic), (sw, sc) = best[:2]
            rows.append((name, th, iw, sw, ic, sc, same, best[2][0] if args.no_waves else None))
            print(f"  {name} threads {th}: done", flush=True)
            del interp, sim, runners
    print()
    print(f"per run, best of {args.repeat} interleaved, ms (wall | CPU of all threads)")
    head = f"{'model':<14} {'thr':>3} {'interp wall':>11} {'sim wall':>9} {'ratio':>6} " \
           f"{'interp cpu':>10} {'sim cpu':>8} {'ratio':>6}  identical" + ("  no-waves wall" if args.no_waves else "")
    print(head)
    print("-" * len(head))
    for name, th, iw, sw, ic, sc, same, nw in rows:
        print(f"{name:<14} {th:>3} {iw * 1e3:>11.1f} {sw * 1e3:>9.1f} {sw / iw:>6.2f} "
              f"{ic * 1e3:>10.1f} {sc * 1e3:>8.1f} {sc / ic:>6.2f}  {'yes' if same else 'NO ':<9}"
              + (f"  {nw * 1e3:>8.1f} ({nw / iw:.2f})" if nw is not None else ""))


if __name__ == "__main__":
    main()
