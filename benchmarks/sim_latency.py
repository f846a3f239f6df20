"""Estimated latency of the zoo models on the DNA platforms, from the Simulator.

For each model of mera.models, the classifiers (mm.MODELS) and the task
models (mm.TASK_MODELS: segmentation, and whatever else is registered there;
models returning tuples give one output per element), quantized with fbgemm
PTQ, traced, imported with layout NHWC, and each platform, the script builds
the model for the Simulator, checks that its outputs are byte-identical to
InterpreterHw's, and prints, as a table:

  - the timing model's estimate per inference: total, device and host
    time (ms), and the MAC array's utilization over the device time;
  - the nodes on the DNA and on the host;
  - the simulator's own wall time per inference against InterpreterHw's,
    same process, best of --repeat (the simulator executes every tile of
    the DNA program, so it is slower than the interpreter).

ResNet-50 on arch 100 (DNA-F100) is compared with EdgeCortix's published
7.96 ms (docs/hardware.md): the ratio estimate / published is printed.

    python benchmarks/sim_latency.py [--models resnet50,mobilenet_v2] [--arch 100 200]
                                     [--mode Fast|Slow] [--repeat N] [--trace DIR] [--layers]
                                     [--markdown]

--trace DIR writes a Chrome/Perfetto trace per model and platform
(<model>_<arch>.json; open it in ui.perfetto.dev). --layers prints the
per-layer report (cycles, MAC utilization, bytes moved, bound) of ResNet-50.
--markdown also prints the estimates as the Markdown table of docs/hardware.md
("Zoo latency"). A model that does not compile or run is reported with its
error and the others go on.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
import torch

import mera

from _common import best_of  # benchmarks/_common.py

PUBLISHED_MS = {("resnet50", "DNAF100L0003"): 7.96}  # EdgeCortix's DNA-F100 (arch 100) figure


def zoo() -> dict:
    """Every model name -> factory: the classifiers, then the task models (if this mera has them)."""
    import mera.models as mm
    return {**mm.MODELS, **getattr(mm, "TASK_MODELS", {})}


def build_model(name: str):
    import mera.models as mm
    quantized = zoo()[name](quantize=True, seed=0)
    x = mm.calibration_data(name, n=1, seed=1234)[0]
    traced = mm.trace(quantized, x)
    x_nhwc = np.ascontiguousarray(x.numpy().transpose(0, 2, 3, 1))
    mod, params = mera.frontend.from_pytorch(traced, [("input0", x_nhwc.shape)], layout="NHWC")
    return mod, params, x_nhwc


def table(headers, rows, align):
    cells = [list(map(str, headers))] + [list(map(str, r)) for r in rows]
    widths = [max(len(r[j]) for r in cells) for j in range(len(headers))]
    fmt = lambda r: "  ".join(c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(r, widths, align))
    return "\n".join([fmt(cells[0]), "  ".join("-" * w for w in widths)] + [fmt(r) for r in cells[1:]])


def main() -> None:
    import mera.models as mm
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(zoo()),
                    help="comma-separated zoo model names (default: every classifier and task model)")
    ap.add_argument("--arch", nargs="+", default=["100", "200"], help="platforms (arch numbers or names)")
    ap.add_argument("--mode", choices=["Fast", "Slow"], default="Fast", help="scheduler mode")
    ap.add_argument("--workers", type=int, default=4, help="compiler_workers (Slow mode threads)")
    ap.add_argument("--repeat", type=int, default=3, help="wall time: best of N runs")
    ap.add_argument("--trace", metavar="DIR", help="write a Chrome/Perfetto trace per model and platform")
    ap.add_argument("--layers", action="store_true", help="print the per-layer report of ResNet-50")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for quantizing and tracing the zoo")
    ap.add_argument("--markdown", action="store_true", help="also print the estimates as a Markdown table")
    args = ap.parse_args()
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in zoo()]
    if unknown:
        ap.error(f"unknown model(s) {', '.join(unknown)}; zoo: {', '.join(zoo())}")
    if args.trace:
        os.makedirs(args.trace, exist_ok=True)
    torch.backends.quantized.engine = "fbgemm"
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")

    rows, md_rows, notes, traces, layer_reports = [], [], [], [], []
    for name in names:
        try:
            run_model(name, args, rows, md_rows, notes, traces, layer_reports)
        except mera.errors.MeraError as e:
            notes.append(f"{name}: not measured: {type(e).__name__}: {e}")
            print(f"  {name}: FAILED ({type(e).__name__})", flush=True)

    print()
    print(f"Simulator estimates per inference (batch 1), scheduler mode {args.mode}; "
          f"wall times best of {args.repeat} in this process, Simulator and InterpreterHw on mera's "
          f"default thread count (every core, or MERA_NUM_THREADS)")
    print(table(["model", "arch", "total ms", "device ms", "host ms", "MAC util %", "DNA/host nodes", "build s",
                 "sim wall ms", "interp wall ms", "sim/interp", "identical"], rows, "llrrrrrrrrrl"))
    for n in notes:
        print(n)
    if args.markdown:
        print()
        print(markdown_table(md_rows, args.arch))
    if traces:
        print(f"traces ({len(traces)}): {', '.join(traces)}")
    for plat, rep, part in layer_reports:
        print(f"\nResNet-50 on {plat}: per-layer report")
        print(rep)
        if part.on_host:
            print(f"\nnodes on the host ({len(part.on_host)}):")
            for e in part.on_host:
                print(f"  {e['node']} ({e['op']}): {e['reason']}")


def markdown_table(md_rows, archs) -> str:
    """One row per model: per platform total / device / host ms and MAC utilization, then the
    nodes on the DNA / on the host (per platform, "100: ...; 200: ...", only where they differ)."""
    by_model = {}
    for name, shape, arch, cells, nodes in md_rows:
        entry = by_model.setdefault((name, shape), ({}, {}))
        entry[0][arch], entry[1][arch] = cells, nodes
    head = ["model", "input"] + [f"arch {a}: total / device / host ms, MAC util" for a in archs] + ["DNA / host nodes"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (name, shape), (cells, nodes) in by_model.items():
        nodes = (next(iter(nodes.values())) if len(set(nodes.values())) == 1
                 else "; ".join(f"{a}: {n}" for a, n in nodes.items()))
        lines.append("| " + " | ".join([f"`{name}`", shape] + [cells.get(a, "-") for a in archs] + [nodes]) + " |")
    return "\n".join(lines)


def run_model(name, args, rows, md_rows, notes, traces, layer_reports) -> None:
    mod, params, x = build_model(name)
    interp = mera.compile(mod, params, target="InterpreterHw")
    ref = interp(x)
    t_interp = best_of(lambda: interp(x), args.repeat)
    for arch in args.arch:
        with mera.build_config(target="Simulator", arch=arch, scheduler_config={"mode": args.mode},
                               compiler_workers=args.workers, sim_log=False):
            t0 = time.perf_counter()
            sim = mera.compile(mod, params)
            t_build = time.perf_counter() - t0
        out = sim(x)
        same = len(ref) == len(out) and all(np.array_equal(a, b) for a, b in zip(ref, out))
        t_sim = best_of(lambda: sim(x), args.repeat)
        m = sim.get_runtime_metrics()[0]
        rep = sim.layer_report()
        part = sim.partition_report()
        plat = sim.platform["name"]
        rows.append((name, f"{arch} ({plat})", f"{m['sim_time_us'] / 1e3:.3f}", f"{m['device_us'] / 1e3:.3f}",
                     f"{m['host_us'] / 1e3:.3f}", f"{100 * rep.mac_utilization:.1f}",
                     f"{len(part.on_dna)}/{len(part.on_host)}", f"{t_build:.2f}", f"{t_sim * 1e3:.1f}",
                     f"{t_interp * 1e3:.1f}", f"{t_sim / t_interp:.1f}", "yes" if same else "NO"))
        md_rows.append((name, "x".join(map(str, x.shape[1:3])), arch,
                        f"{m['sim_time_us'] / 1e3:.2f} / {m['device_us'] / 1e3:.2f} / {m['host_us'] / 1e3:.2f}, "
                        f"{100 * rep.mac_utilization:.0f}%", f"{len(part.on_dna)} / {len(part.on_host)}"))
        pub = PUBLISHED_MS.get((name, plat))
        if pub:
            est = m["sim_time_us"] / 1e3
            notes.append(f"{name} on {plat}: estimate {est:.3f} ms, published {pub:.2f} ms, "
                         f"ratio estimate/published {est / pub:.3f}")
        if args.trace:
            path = os.path.join(args.trace, f"{name}_{arch}.json")
            sim.write_trace(path)
            traces.append(path)
        if args.layers and name == "resnet50":
            layer_reports.append((plat, rep, part))
        print(f"  {name} arch {arch}: done", flush=True)


if __name__ == "__main__":
    main()
