"""Float Interpreter speed against PyTorch's float CPU kernels, in the same process.

Times ResNet-50-shaped float conv layers one by one (NHWC and NCHW), then
whole float ResNet-18 and ResNet-50 of mera.models imported in both
layouts, and prints mera / torch time ratios (higher is slower) and the
largest difference of the outputs relative to the largest torch output.
This is the path the post-training quantizer calibrates on. Each network
is timed as imported (batch norms become per-channel mul and add nodes)
and after the model's fuse_model() has folded them into the convs, which
shows how much of the time is the convs'.

    python benchmarks/interp_float.py [--repeat N] [--layers-only | --models-only]
                                      [--models resnet18,resnet50] [--threads N]
                                      [--reference | --cpu-mask FEATURES]

--reference times mera's reference kernels (MERA_REFERENCE_KERNELS=1; slow:
use --repeat 1); --cpu-mask hides CPU features from kernel selection
(MERA_CPU_FEATURES_MASK, e.g. "avx512f" for the AVX2 kernels, "all" for
the portable C ones). Both are read when a graph is compiled.
"""

from __future__ import annotations

import argparse
import os
import warnings

import numpy as np
import torch
import torch.nn.functional as F

import mera
from mera import ir

from _common import RESNET50_LAYERS, best_of  # benchmarks/_common.py

# RESNET50_LAYERS and a strided depthwise layer (its own loop in the float kernels)
LAYERS = RESNET50_LAYERS + [("depthwise 3x3/2 (MobileNet)", 112, 32, 32, 3, 2, 32)]


def rel_diff(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / max(1e-30, float(np.abs(want).max())))


def bench_layers(repeat: int) -> None:
    rng = np.random.default_rng(0)
    print(f"{'layer':28s} {'layout':6s} {'GFLOP':>6s} {'torch ms':>9s} {'mera ms':>9s} {'ratio':>6s} {'rel diff':>9s}")
    for name, hw, cin, cout, k, s, g in LAYERS:
        x = rng.standard_normal((1, cin, hw, hw)).astype(np.float32)
        w = (rng.standard_normal((cout, cin // g, k, k)) / np.sqrt(cin // g * k * k)).astype(np.float32)
        bias = rng.standard_normal(cout).astype(np.float32)
        gflop = 2 * ((hw + 2 * (k // 2) - k) // s + 1) ** 2 * cout * (cin // g) * k * k / 1e9
        for layout in ("NHWC", "NCHW"):
            fmt = torch.channels_last if layout == "NHWC" else torch.contiguous_format
            xt = torch.from_numpy(x).contiguous(memory_format=fmt)
            wt = torch.from_numpy(w).contiguous(memory_format=fmt)
            bt = torch.from_numpy(bias)
            with torch.no_grad():
                want = F.conv2d(xt, wt, bt, s, k // 2, 1, g).numpy()
                t_torch = best_of(lambda: F.conv2d(xt, wt, bt, s, k // 2, 1, g), repeat)
            b = ir.Builder("conv")
            shape = (1, hw, hw, cin) if layout == "NHWC" else (1, cin, hw, hw)
            y = b.conv2d(b.input("x", shape, "float32", layout=layout), b.const(w), bias, strides=[s, s],
                         padding=[k // 2] * 4, groups=g, layout=layout)
            runner = mera.compile(b.finish(y), {}, target="Interpreter")
            xm = np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if layout == "NHWC" else x
            got = runner(xm)[0]
            got = got.transpose(0, 3, 1, 2) if layout == "NHWC" else got
            t_mera = best_of(lambda: runner(xm), repeat)
            print(f"{name:28s} {layout:6s} {gflop:6.3f} {t_torch * 1e3:9.3f} {t_mera * 1e3:9.3f} "
                  f"{t_mera / t_torch:6.2f} {rel_diff(got, want):9.2g}")


def bench_network(name: str, repeat: int, fused: bool) -> None:
    from mera import models
    model = models.MODELS[name](seed=0).eval()
    if fused:
        model.fuse_model()  # eval mode: batch norms folded into the convs' weights and biases
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((1, 3, 224, 224)).astype(np.float32))
    with torch.no_grad():
        want = model(x).numpy()
        t_torch = best_of(lambda: model(x), repeat)
    what = "bn folded" if fused else "as is"
    for layout in ("NHWC", "NCHW"):
        shape = (1, 224, 224, 3) if layout == "NHWC" else (1, 3, 224, 224)
        mod, params = mera.relay.frontend.from_pytorch(model, [("input0", shape)], layout=layout)
        runner = mera.compile(mod, params, target="Interpreter")
        xm = np.ascontiguousarray(x.numpy().transpose(0, 2, 3, 1)) if layout == "NHWC" else x.numpy()
        got = runner(xm)[0]
        t_mera = best_of(lambda: runner(xm), max(1, repeat // 2))
        print(f"{name:9s} {what:9s} {layout:4s} float, batch 1, 224x224: torch {t_torch * 1e3:7.1f} ms, "
              f"mera Interpreter {t_mera * 1e3:7.1f} ms, ratio {t_mera / t_torch:5.2f}; "
              f"rel diff {rel_diff(got, want):.2g}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--layers-only", action="store_true")
    group.add_argument("--models-only", action="store_true")
    ap.add_argument("--models", default="resnet18,resnet50", help="comma-separated names of mera.models.MODELS")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (mera's kernels are serial)")
    ap.add_argument("--reference", action="store_true", help="time mera's reference kernels")
    ap.add_argument("--cpu-mask", default="", help="CPU features to hide from kernel selection")
    args = ap.parse_args()
    if args.reference:
        os.environ["MERA_REFERENCE_KERNELS"] = "1"
    if args.cpu_mask:
        os.environ["MERA_CPU_FEATURES_MASK"] = args.cpu_mask
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    print(f"CPU features: {mera._core.cpu_features()}; torch threads: {torch.get_num_threads()}; "
          f"mera kernels: conv2d {mera._core.kernel_name('conv2d', False)}, "
          f"dense {mera._core.kernel_name('dense', False)}")
    if not args.models_only:
        bench_layers(args.repeat)
        print()
    if not args.layers_only:
        for name in args.models.split(","):
            for fused in (False, True):
                bench_network(name.strip(), args.repeat, fused)


if __name__ == "__main__":
    main()
