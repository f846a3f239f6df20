"""InterpreterHw speed against PyTorch's fbgemm int8 kernels and onnxruntime, in the same process.

Times ResNet-50-shaped quantized conv layers one by one, then whole
quantized zoo networks (ResNet-50 and MobileNetV2 by default), and prints
mera / torch time ratios (higher is slower). mera and torch run the same
bytes: the script checks that the outputs are identical before timing.
With --onnxruntime it also times onnxruntime on the same network quantized
by onnxruntime's own quantize_static (QDQ, per-channel weights; other
scales, so not the same bytes) and prints mera / onnxruntime.

    python benchmarks/interp.py [--repeat N] [--layers-only | --networks-only] [--threads N]
                                [--models resnet50,mobilenet_v2] [--onnxruntime]
                                [--reference | --cpu-mask FEATURES]

--threads N sets the threads of all three (mera's build_config(num_threads),
torch.set_num_threads, onnxruntime's intra_op_num_threads); the network
figures are best-of-N with the contenders called in turn.

--reference times mera's reference kernels (MERA_REFERENCE_KERNELS=1);
--cpu-mask hides CPU features from kernel selection (MERA_CPU_FEATURES_MASK,
e.g. "avx512f,avx512vnni" for the AVX2 kernels, "all" for the portable C
ones). Both are read when a graph is compiled. The float kernels (the
Interpreter target) have their own script, benchmarks/interp_float.py.
"""

from __future__ import annotations

import argparse
import os
import warnings

import numpy as np
import torch

import mera
from mera import ir

from _common import RESNET50_LAYERS, best_of, best_of_interleaved, onnxruntime_qdq_session  # benchmarks/_common.py


def conv_layer(hw, cin, cout, k, stride, groups, rng, threads):
    x_scale, x_zp, out_scale, out_zp = 0.02, 64, 0.05, 0
    w = rng.integers(-127, 128, (cout, cin // groups, k, k), dtype=np.int8)
    w_scales = rng.uniform(0.001, 0.01, cout)
    bias = rng.standard_normal(cout).astype(np.float32)
    pad = k // 2
    # torch side
    qw = torch._make_per_channel_quantized_tensor(torch.from_numpy(w), torch.from_numpy(w_scales),
                                                  torch.zeros(cout, dtype=torch.int64), 0)
    conv = torch.ao.nn.quantized.Conv2d(cin, cout, k, stride=stride, padding=pad, groups=groups)
    conv.set_weight_bias(qw, torch.from_numpy(bias))
    conv.scale, conv.zero_point = out_scale, out_zp
    xq = torch.quantize_per_tensor(torch.rand(1, cin, hw, hw), x_scale, x_zp, torch.quint8)
    xq = xq.contiguous(memory_format=torch.channels_last)
    # mera side, NHWC
    b = ir.Builder("conv")
    xv = b.input("x", (1, hw, hw, cin), "uint8", qparams=(x_scale, x_zp), layout="NHWC")
    wv = b.const(w, name="w", qparams=(w_scales, np.zeros(cout, np.int32), 0))
    y = b.conv2d(xv, wv, bias, strides=[stride, stride], padding=[pad] * 4, groups=groups, layout="NHWC",
                 out_scale=out_scale, out_zero_point=out_zp)
    with mera.build_config(target="InterpreterHw", num_threads=threads):
        runner = mera.compile(b.finish(y), {})
    x_np = np.ascontiguousarray(xq.int_repr().numpy().transpose(0, 2, 3, 1))
    return conv, xq, runner, x_np


def bench_layers(repeat: int, threads: int) -> None:
    rng = np.random.default_rng(0)
    print(f"{'layer':28s} {'GMAC':>6s} {'torch ms':>9s} {'mera ms':>9s} {'ratio':>7s}  identical")
    for name, hw, cin, cout, k, s, g in RESNET50_LAYERS:
        conv, xq, runner, x_np = conv_layer(hw, cin, cout, k, s, g, rng, threads)
        ref = conv(xq).int_repr().numpy().transpose(0, 2, 3, 1)
        out = runner(x_np)[0]
        same = np.array_equal(out, ref)
        t_torch = best_of(lambda: conv(xq), repeat)
        t_mera = best_of(lambda: runner(x_np), repeat)
        oh = (hw + 2 * (k // 2) - k) // s + 1
        gmac = oh * oh * cout * (cin // g) * k * k / 1e9
        print(f"{name:28s} {gmac:6.3f} {t_torch * 1e3:9.3f} {t_mera * 1e3:9.3f} {t_mera / t_torch:7.1f}  {same}")


def bench_network(name: str, repeat: int, threads: int, with_ort: bool) -> None:
    from mera import models
    model = models.MODELS[name](quantize=True, seed=0)
    x = models.calibration_data(name, n=1, seed=1)[0]
    with torch.no_grad():
        traced = torch.jit.trace(model, x)
        ref = traced(x).numpy()
    x_nhwc = np.ascontiguousarray(x.numpy().transpose(0, 2, 3, 1))
    mod, params = mera.frontend.from_pytorch(traced, [("input0", x_nhwc.shape)], layout="NHWC")
    with mera.build_config(target="InterpreterHw", num_threads=threads):
        runner = mera.compile(mod, params)
    out = runner(x_nhwc)[0]
    fns = [lambda: runner(x_nhwc), lambda: traced(x)]
    if with_ort:
        import tempfile
        with tempfile.TemporaryDirectory() as folder:
            sess, in_name = onnxruntime_qdq_session(name, threads, folder)
        x_np = x.numpy()
        fns.append(lambda: sess.run(None, {in_name: x_np}))
    with torch.no_grad():
        times = best_of_interleaved(fns, repeat)
    t_mera, t_torch = times[0], times[1]
    line = (f"\n{name} int8, batch 1, {threads} thread(s): mera InterpreterHw {t_mera * 1e3:.1f} ms, "
            f"torch fbgemm {t_torch * 1e3:.1f} ms, ratio {t_mera / t_torch:.2f}")
    if with_ort:
        line += f"; onnxruntime QDQ {times[2] * 1e3:.1f} ms, ratio {t_mera / times[2]:.2f}"
    print(line + f"; mera and torch outputs identical: {np.array_equal(out, ref)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--layers-only", action="store_true")
    ap.add_argument("--networks-only", action="store_true")
    ap.add_argument("--threads", type=int, default=1, help="threads of mera, torch and onnxruntime")
    ap.add_argument("--models", default="resnet50,mobilenet_v2", help="zoo networks to time, comma-separated")
    ap.add_argument("--onnxruntime", action="store_true", help="also time onnxruntime on the network, QDQ")
    ap.add_argument("--reference", action="store_true", help="time mera's reference kernels")
    ap.add_argument("--cpu-mask", default="", help="CPU features to hide from kernel selection")
    args = ap.parse_args()
    if args.reference:
        os.environ["MERA_REFERENCE_KERNELS"] = "1"
    if args.cpu_mask:
        os.environ["MERA_CPU_FEATURES_MASK"] = args.cpu_mask
    torch.backends.quantized.engine = "fbgemm"
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    print(f"CPU features: {mera._core.cpu_features()}; torch threads: {torch.get_num_threads()}; "
          f"mera kernels: conv2d {mera._core.kernel_name('conv2d', True)}, dense {mera._core.kernel_name('dense', True)}")
    if not args.networks_only:
        bench_layers(args.repeat, args.threads)
    if not args.layers_only:
        for name in args.models.split(","):
            bench_network(name, args.repeat, args.threads, args.onnxruntime)


if __name__ == "__main__":
    main()
