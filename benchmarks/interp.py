"""InterpreterHw speed against PyTorch's fbgemm int8 kernels and onnxruntime, in the same process.

Times ResNet-50-shaped quantized conv layers one by one, then whole
quantized zoo networks (ResNet-50 and MobileNetV2 by default; --models also takes the
detection and segmentation models of mera.models.TASK_MODELS, e.g. yolov5n), and prints
mera / torch time ratios (higher is slower). mera and torch run the same
bytes: the script checks that the outputs are identical before timing.
With --onnxruntime it also times onnxruntime on the same network quantized
by onnxruntime's own quantize_static (QDQ, per-channel weights; other
scales, so not the same bytes) and prints mera / onnxruntime.

    python benchmarks/interp.py [--repeat N] [--layers-only | --networks-only | --per-layer] [--threads N]
                                [--models resnet50,mobilenet_v2] [--onnxruntime]
                                [--reference | --cpu-mask FEATURES] [--pointwise]

--per-layer profiles the networks instead: every conv/dense node of the
compiled graph with its time (best of --repeat runs, timed node by node),
GMAC/s against the VNNI peak of one core (--peak: 228 GMAC/s, one 512-bit
vpdpbusd of 64 int8 MACs a cycle at about 3.55 GHz, the Zen 4 machines here),
and fbgemm's time for the same layer (the quantized torch module called
alone on the input it sees in the network, best of --repeat); then the time
per op class (conv 1x1, conv kxk, depthwise, add, pools, ...). The sum of
node times includes the interpreter's per-node overhead; fbgemm's module
calls include torch's per-call dispatch.

--pointwise times the 1x1 conv shapes of ResNet-50 and MobileNetV2 one
by one (random weights, uint8 in and out): mera's node time with its
GMAC/s and % of the peak, and fbgemm's module time.

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
import re
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


# 1x1 convs of ResNet-50 (stride 1) and MobileNetV2: (H=W, in channels, out channels)
POINTWISE_LAYERS = [
    (56, 64, 64), (56, 64, 256), (56, 256, 64), (28, 512, 128), (28, 128, 512), (14, 1024, 256),
    (14, 256, 1024), (7, 2048, 512), (7, 512, 2048),
    (112, 32, 16), (112, 16, 96), (56, 24, 144), (56, 144, 24), (28, 32, 192), (28, 192, 32), (14, 64, 384),
    (14, 384, 64), (14, 96, 576), (14, 576, 96), (7, 160, 960), (7, 960, 160), (7, 320, 1280),
]


def bench_pointwise(repeat: int, threads: int, peak: float) -> None:
    """The 1x1 convs one by one: mera's node time (as --per-layer times it, no
    input copy or output allocation), its GMAC/s and % of the peak, fbgemm's
    module time."""
    rng = np.random.default_rng(0)
    print(f"{'1x1 conv HxW cin->cout':24s} {'MMAC':>7s} {'mera ms':>8s} {'GMAC/s':>7s} {'%peak':>6s} "
          f"{'fbgemm ms':>9s} {'ratio':>6s}  identical")
    tot_mera = tot_fb = 0.0
    for hw, cin, cout in POINTWISE_LAYERS:
        conv, xq, runner, x_np = conv_layer(hw, cin, cout, 1, 1, 1, rng, threads)
        same = np.array_equal(runner(x_np)[0], conv(xq).int_repr().numpy().transpose(0, 2, 3, 1))
        t_mera = max(runner._core.node_times([x_np], repeat))
        t_fb = best_of(lambda: conv(xq), repeat)
        tot_mera += t_mera
        tot_fb += t_fb
        macs = hw * hw * cin * cout
        gmacs = macs / t_mera / 1e9
        print(f"{f'{hw}x{hw} {cin}->{cout}':24s} {macs / 1e6:7.1f} {t_mera * 1e3:8.3f} {gmacs:7.1f} "
              f"{100 * gmacs / (peak * threads):5.0f}% {t_fb * 1e3:9.3f} {t_mera / t_fb:6.2f}  {same}")
    print(f"{'all':24s} {'':7s} {tot_mera * 1e3:8.3f} {'':7s} {'':6s} {tot_fb * 1e3:9.3f} {tot_mera / tot_fb:6.2f}")


def zoo_factory(name: str):
    """The factory of a zoo network: a classifier (mera.models.MODELS) or a detection or
    segmentation model (TASK_MODELS)."""
    from mera import models
    zoo = {**models.MODELS, **models.TASK_MODELS}
    if name not in zoo:
        raise SystemExit(f"interp.py: unknown model {name!r}; known: {', '.join(zoo)}")
    return zoo[name]


def bench_network(name: str, repeat: int, threads: int, with_ort: bool) -> None:
    from mera import models
    model = zoo_factory(name)(quantize=True, seed=0)
    x = models.calibration_data(name, n=1, seed=1)[0]
    traced = models.trace(model, x)
    with torch.no_grad():
        ref = traced(x)
    ref = [t.numpy() for t in (ref if isinstance(ref, (tuple, list)) else (ref,))]
    x_nhwc = np.ascontiguousarray(x.numpy().transpose(0, 2, 3, 1))
    mod, params = mera.frontend.from_pytorch(traced, [("input0", x_nhwc.shape)], layout="NHWC")
    with mera.build_config(target="InterpreterHw", num_threads=threads):
        runner = mera.compile(mod, params)
    outs = runner(x_nhwc)
    fns = [lambda: runner(x_nhwc), lambda: traced(x)]
    if with_ort:
        import tempfile
        with tempfile.TemporaryDirectory() as folder:
            sess, in_name = onnxruntime_qdq_session(name, threads, folder)
        x_np = x.numpy()
        fns.append(lambda: sess.run(None, {in_name: x_np}))
    with torch.no_grad():
        times = best_of_interleaved(fns, repeat, run=4 if threads > 1 else 1)
    t_mera, t_torch = times[0], times[1]
    line = (f"\n{name} int8, batch 1, {threads} thread(s): mera InterpreterHw {t_mera * 1e3:.1f} ms, "
            f"torch fbgemm {t_torch * 1e3:.1f} ms, ratio {t_mera / t_torch:.2f}")
    if with_ort:
        line += f"; onnxruntime QDQ {times[2] * 1e3:.1f} ms, ratio {t_mera / times[2]:.2f}"
    # 4-D outputs come back in the NHWC layout they were imported with
    outs = [o.transpose(0, 3, 1, 2) if o.ndim == 4 else o for o in outs]
    same = len(outs) == len(ref) and all(np.array_equal(o, r) for o, r in zip(outs, ref))
    print(line + f"; mera and torch outputs identical: {same}")


# ---- --per-layer ------------------------------------------------------------

_NODE = re.compile(r"^\s*%(\S+) = (\w+)\(([^)]*)\)\s*(\{.*\})?\s*:\s*(\w+)\[([\d,]*)\]")
_VALUE = re.compile(r"^\s*(?:input|const|param) %(\S+): (\w+)\[([\d,]*)\]")


def _shape(text: str):
    return tuple(int(v) for v in text.split(",")) if text else ()


def compiled_nodes(graph_text: str):
    """The nodes of a compiled graph's IR text, in graph order: dicts of name, op,
    inputs (shapes), attrs (text) and output shape."""
    shapes, nodes = {}, []
    for line in graph_text.splitlines():
        v = _VALUE.match(line)
        if v:
            shapes[v.group(1)] = _shape(v.group(3))
            continue
        m = _NODE.match(line)
        if not m:
            continue
        name, op, args, attrs, _, out = m.groups()
        ins = [shapes.get(a.strip().lstrip("%"), ()) for a in args.split(",") if a.strip()]
        shapes[name] = _shape(out)
        nodes.append({"name": name, "op": op, "inputs": ins, "attrs": attrs or "", "out": _shape(out)})
    return nodes


def _attr_list(attrs: str, key: str):
    m = re.search(key + r"=\[([\d,]+)\]", attrs)
    return [int(v) for v in m.group(1).split(",")] if m else []


def node_class(node) -> str:
    """The op class a node's time is added to."""
    op = node["op"]
    if op == "conv2d":
        w = node["inputs"][1]
        groups = int(re.search(r"groups=(\d+)", node["attrs"]).group(1))
        if groups > 1 and w[1] == 1:
            return "conv depthwise"
        return f"conv {'1x1' if w[2] == w[3] == 1 else 'kxk'}" + ("/2" if max(_attr_list(node["attrs"], "strides")) > 1 else "")
    return op


def node_macs(node) -> int:
    if node["op"] == "conv2d":
        w, out = node["inputs"][1], node["out"]  # OIHW weights, NHWC output
        return int(np.prod(out)) * w[1] * w[2] * w[3]
    if node["op"] == "dense":
        return int(np.prod(node["out"])) * node["inputs"][0][-1]
    return 0


def torch_conv_times(model, x, repeat: int):
    """fbgemm's time of every quantized conv/linear module of model, called alone on the
    input it sees in the network: a dict from (in channels, out channels, kernel, stride,
    groups, input H) to a list of seconds in call order."""
    import torch.ao.nn.quantized as nnq
    seen = []
    hooks = [mod.register_forward_hook(lambda mod, inp, out: seen.append((mod, inp[0])))
             for mod in model.modules() if isinstance(mod, (nnq.Conv2d, nnq.Linear))]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    times = {}
    with torch.no_grad():
        for mod, inp in seen:
            if isinstance(mod, nnq.Linear):
                key = ("dense", mod.in_features, mod.out_features)
            else:
                key = (mod.in_channels, mod.out_channels, mod.kernel_size[0], mod.stride[0], mod.groups,
                       inp.shape[2])
            times.setdefault(key, []).append(best_of(lambda: mod(inp), repeat))
    return times


def bench_per_layer(name: str, repeat: int, threads: int, peak: float) -> None:
    from mera import models
    model = zoo_factory(name)(quantize=True, seed=0)
    x = models.calibration_data(name, n=1, seed=1)[0]
    with torch.no_grad():
        traced = torch.jit.trace(model, x)
    x_nhwc = np.ascontiguousarray(x.numpy().transpose(0, 2, 3, 1))
    mod, params = mera.frontend.from_pytorch(traced, [("input0", x_nhwc.shape)], layout="NHWC")
    with mera.build_config(target="InterpreterHw", num_threads=threads):
        runner = mera.compile(mod, params)
    core = runner._core
    nodes = compiled_nodes(core.graph_text())
    runner(x_nhwc)
    t_nodes = core.node_times([x_nhwc], repeat)
    assert len(t_nodes) == len(nodes), (len(t_nodes), len(nodes))
    fb = torch_conv_times(model, x, repeat)
    print(f"\n{name}, {threads} thread(s), per layer (best of {repeat}); peak {peak:.0f} GMAC/s/thread")
    print(f"{'node':34s} {'class':16s} {'shape out':>14s} {'MMAC':>7s} {'mera ms':>8s} {'GMAC/s':>7s} "
          f"{'%peak':>6s} {'fbgemm ms':>9s} {'ratio':>6s}")
    classes = {}
    tot_mera = tot_fb = 0.0
    for node, t in zip(nodes, t_nodes):
        cls, macs = node_class(node), node_macs(node)
        c = classes.setdefault(cls, [0, 0.0, 0, 0.0])
        c[0] += 1
        c[1] += t
        c[2] += macs
        if not macs:
            continue
        if node["op"] == "dense":
            key = ("dense", node["inputs"][0][-1], node["out"][-1])
        else:
            w = node["inputs"][1]
            groups = int(re.search(r"groups=(\d+)", node["attrs"]).group(1))
            key = (w[1] * groups, w[0], w[2], max(_attr_list(node["attrs"], "strides")), groups,
                   node["inputs"][0][1])
        t_fb = fb.get(key, []).pop(0) if fb.get(key) else float("nan")
        c[3] += t_fb
        tot_mera += t
        tot_fb += t_fb
        gmacs = macs / t / 1e9
        print(f"{node['name'][:34]:34s} {cls:16s} {'x'.join(map(str, node['out'][1:])):>14s} {macs / 1e6:7.1f} "
              f"{t * 1e3:8.3f} {gmacs:7.1f} {100 * gmacs / (peak * threads):5.0f}% {t_fb * 1e3:9.3f} "
              f"{t / t_fb:6.2f}")
    print(f"\n{'class':16s} {'nodes':>5s} {'mera ms':>8s} {'share':>6s} {'GMAC':>6s} {'GMAC/s':>7s} {'fbgemm ms':>9s}")
    total = sum(t_nodes)
    for cls, (n, t, macs, t_fb) in sorted(classes.items(), key=lambda kv: -kv[1][1]):
        rate = f"{macs / t / 1e9:7.1f}" if macs else f"{'':7s}"
        fbs = f"{t_fb * 1e3:9.3f}" if macs else ""
        print(f"{cls:16s} {n:5d} {t * 1e3:8.3f} {100 * t / total:5.1f}% {macs / 1e9:6.3f} {rate} {fbs}")
    print(f"{'all nodes':16s} {len(nodes):5d} {total * 1e3:8.3f}   (conv/dense: mera {tot_mera * 1e3:.3f} ms, "
          f"fbgemm modules {tot_fb * 1e3:.3f} ms)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--layers-only", action="store_true")
    ap.add_argument("--networks-only", action="store_true")
    ap.add_argument("--per-layer", action="store_true", help="profile the networks node by node against fbgemm")
    ap.add_argument("--pointwise", action="store_true",
                    help="time ResNet-50's and MobileNetV2's 1x1 conv shapes alone (node time, GMAC/s)")
    ap.add_argument("--peak", type=float, default=228.0, help="VNNI peak of one core, GMAC/s (--per-layer)")
    ap.add_argument("--threads", type=int, default=1, help="threads of mera, torch and onnxruntime")
    ap.add_argument("--models", default="resnet50,mobilenet_v2",
                    help="zoo networks to time, comma-separated: mera.models.MODELS or TASK_MODELS (yolov5n, ...)")
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
    if args.pointwise:
        bench_pointwise(args.repeat, args.threads, args.peak)
        return
    if args.per_layer:
        for name in args.models.split(","):
            bench_per_layer(name, args.repeat, args.threads, args.peak)
        return
    if not args.networks_only:
        bench_layers(args.repeat, args.threads)
    if not args.layers_only:
        for name in args.models.split(","):
            bench_network(name, args.repeat, args.threads, args.onnxruntime)


if __name__ == "__main__":
    main()
