"""Peak memory and per-run time of the C inference app, against the model's own memory and
against InterpreterHw's app run, and mera.build's time.

Builds ResNet-50 (the zoo's, fbgemm PTQ) for the IP target on arch 100 (the docs' build),
once with an empty runtime-archive cache and once with it warm, and for InterpreterHw; builds
apps/inference with cmake; runs ``./inference <dir> -n RUNS`` on both directories, alternating,
ROUNDS times, and reports the best mean per-run time of each (the app's "Took"; the machine may
be shared, the best round is the least disturbed) and their ratio, and the target's peak RSS
(VmHWM, as the app prints it; the highest of the rounds) against weights + arena (deploy.json's
weights_bytes and arena_bytes), with where the resident memory is after the runs (the app's -m:
/proc/self/smaps by mapping, and what malloc holds). Targets: per-run time <= 1.2 x
InterpreterHw's, peak RSS <= 1.3 x (weights + arena). Prints a table; exits 1 when the memory
ratio is over its target.

    python benchmarks/deploy_memory.py [--model resnet50] [--target IP] [--arch 100] [--runs 10]
                                       [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET_RATIO = 1.3
TARGET_TIME_RATIO = 1.2


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--target", default="IP", choices=["IP", "Simulator", "InterpreterHw", "Interpreter"])
    ap.add_argument("--arch", default="100")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    import numpy as np
    import torch
    import mera
    import mera.models as mm

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="mera-bench-") as tmp:
        os.environ["MERA_CACHE_DIR"] = os.path.join(tmp, "cache")  # a cold cache for the first build
        t = time.perf_counter()
        model = mm.MODELS[args.model](quantize=True, seed=0)
        x = mm.calibration_data(args.model, n=1, seed=1234)[0]
        traced = mm.trace(model, x)
        x_nhwc = x.numpy().transpose(0, 2, 3, 1).copy()
        mod, params = mera.relay.frontend.from_pytorch(traced, [("input0", x_nhwc.shape)], layout="NHWC")
        t_import = time.perf_counter() - t
        with mera.build_config(target="InterpreterHw"):
            ref = mera.compile(mod, params)(x_nhwc)
        d = os.path.join(tmp, "deploy")
        os.makedirs(d)
        x_nhwc.astype("float32").tofile(os.path.join(d, "input0.bin"))
        for k, r in enumerate(ref):
            r.tofile(os.path.join(d, f"ref_result_{k}.bin"))
        arch = int(args.arch) if args.arch.isdigit() else args.arch
        times = []
        for _ in range(2):
            t = time.perf_counter()
            with mera.build_config(target=args.target, arch=arch):
                mera.build(mod, params, output_dir=d, host_arch="x86", layout="NHWC")
            times.append(time.perf_counter() - t)

        d_ref = os.path.join(tmp, "deploy-interpreterhw")
        os.makedirs(d_ref)
        x_nhwc.astype("float32").tofile(os.path.join(d_ref, "input0.bin"))
        with mera.build_config(target="InterpreterHw"):
            mera.build(mod, params, output_dir=d_ref, host_arch="x86", layout="NHWC")

        app_dir = os.path.join(tmp, "app")
        subprocess.run(["cmake", "-S", os.path.join(ROOT, "apps", "inference"), "-B", app_dir], check=True,
                       capture_output=True)
        subprocess.run(["cmake", "--build", app_dir], check=True, capture_output=True)
        took, took_ref, peaks = [], [], []
        for _ in range(args.rounds):
            for where, runs in ((d, took), (d_ref, took_ref)):
                r = subprocess.run([os.path.join(app_dir, "inference"), where, "-n", str(args.runs), "-m"],
                                   capture_output=True, text=True)
                if r.returncode != 0:
                    print(r.stdout + r.stderr, file=sys.stderr)
                    return 1
                runs.append(float(re.search(r"^Took (\S+) msec", r.stdout, re.M).group(1)))
                if where == d:
                    peaks.append(float(re.search(r"^Peak memory: (\S+) MiB", r.stdout, re.M).group(1)) * 1048576)
                    if peaks[-1] == max(peaks):
                        out = r.stdout
        print(out, end="")
        info = json.load(open(os.path.join(d, "deploy.json")))
        took, took_ref, peak = min(took), min(took_ref), max(peaks)
        own = info["weights_bytes"] + info["arena_bytes"]
        ratio = peak / own
        mib = lambda n: f"{n / 1048576:.1f} MiB"  # noqa: E731
        print()
        print(f"{args.model} {args.target} arch {args.arch}")
        print(f"  import (quantize, trace, from_pytorch)  {t_import:.1f} s")
        print(f"  mera.build, cold runtime cache          {times[0]:.1f} s")
        print(f"  mera.build, warm runtime cache          {times[1]:.1f} s")
        print(f"  deploy.so / deploy.params               {mib(os.path.getsize(os.path.join(d, 'deploy.so')))} / "
              f"{mib(os.path.getsize(os.path.join(d, 'deploy.params')))}")
        int8 = sum(v.nbytes for v in map(np.asarray, params.values()) if v.dtype == np.int8)
        print(f"  deploy.params / int8 weights            {os.path.getsize(os.path.join(d, 'deploy.params')) / int8:.3f}"
              f" ({mib(int8)} of int8 weights; target <= 1.1)")
        print(f"  ./inference, best mean of {args.runs} runs         {took:.2f} ms ({args.rounds} rounds)")
        print(f"  ./inference InterpreterHw, the same     {took_ref:.2f} ms")
        print(f"  time ratio                              {took / took_ref:.2f} (target <= {TARGET_TIME_RATIO})")
        if info.get("latency_us"):
            print(f"  modelled device latency                 {info['latency_us'] / 1000:.2f} ms")
        print(f"  weights + arena                         {mib(info['weights_bytes'])} + {mib(info['arena_bytes'])}"
              f" = {mib(own)}")
        print(f"  peak RSS of ./inference                 {mib(peak)} (highest of {args.rounds} rounds; lowest "
              f"{mib(min(peaks))})")
        where = re.search(r"^Resident now: (\S+) MiB: (.*?)(?:; malloc'd and not freed: (\S+) MiB)?$", out, re.M)
        if where:  # the app's -m, in the round of the highest peak
            print(f"  resident after the runs                 {where.group(1)} MiB:")
            for part in where.group(2).split(", "):
                name, _, size = part.rpartition(" ")
                print(f"    {name:<40}{size} MiB")
            if where.group(3):
                print(f"  malloc'd and not freed (heap + large)   {where.group(3)} MiB")
        print(f"  ratio                                   {ratio:.2f} (target <= {TARGET_RATIO})")
        return 0 if ratio <= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
