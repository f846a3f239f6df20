"""Fast conv2d and dense kernels against the reference kernels: quantized byte for byte, float within a tolerance.

Every case is compiled twice or more: once with ``MERA_REFERENCE_KERNELS=1``
(the reference kernels of csrc/kernels/ref, the semantic truth) and once per
fast path this CPU can run (the best one, and with ``MERA_CPU_FEATURES_MASK``
hiding features, the AVX-512 kernels without their AVX512BW forms, the AVX2
and the portable C kernels). The outputs must be
identical. Cases are random: odd sizes, channel counts that are not
multiples of the vector widths, depthwise (with fbgemm's saturating fast path
and without), groups, strides 1-3, dilation, asymmetric padding, both data
layouts, all weight layouts, per-tensor and per-channel weights with zero
and non-zero zero points, uint8 and int8 activations and outputs, relu,
extreme zero points and scales that push results to the clamps (and past
the int32 range), weights that are constants, params or run-time inputs.

A smaller set runs against PyTorch's fbgemm kernels directly.

The float kernels (last section) may add in another order than the
reference and fuse multiply-adds, so their outputs are compared with a
bound relative to the sum of |products| of each output, the reference run
on |x|, |w| and |bias|: 1e-5 of it, far below what a misplaced tap or
channel changes. Non-finite outputs must match exactly.
"""

import itertools
import os

import numpy as np
import pytest
import torch

import mera
from mera import _core, ir

torch.backends.quantized.engine = "fbgemm"

# Cases per test are the numbers below times this; MERA_TEST_MORE=10 makes a soak.
MORE = int(os.environ.get("MERA_TEST_MORE", "1"))


def _paths():
    """(name, mask) of every fast path this CPU can run, best first. The name is
    the kernel's (``kernel_name``), with the variant after a "-"."""
    f = _core.cpu_features()
    paths = []
    if f["avx512f"] and f["avx512vnni"]:
        if f["avx512bw"] and f["amx_int8"]:  # the AMX tiles, then AVX-512 VNNI alone
            paths.append(("amx", ""))
            paths.append(("avx512vnni", "amx_int8"))
            paths.append(("avx512vnni-nobw", "amx_int8,avx512bw"))
        elif f["avx512bw"]:  # the packed epilogue and the byte-pair depthwise loop, then without them
            paths.append(("avx512vnni", ""))
            paths.append(("avx512vnni-nobw", "avx512bw"))
        else:
            paths.append(("avx512vnni-nobw", ""))
    if f["avx2"] and f["fma"]:
        paths.append(("avx2", "avx512f,avx512vnni"))
    paths.append(("c", "all"))
    return paths


PATHS = _paths()


def _float_paths():
    """(name, mask) of every fast float path this CPU can run, best first."""
    f = _core.cpu_features()
    paths = []
    if f["avx512f"] and f["fma"]:
        paths.append(("avx512f", ""))
    if f["avx2"] and f["fma"]:
        paths.append(("avx2", "avx512f"))
    paths.append(("c", "all"))
    return paths


FLOAT_PATHS = _float_paths()


def compile_with(monkeypatch, mod, params, *, reference=False, mask=""):
    """Compile for InterpreterHw with the kernel-selection variables set."""
    if reference:
        monkeypatch.setenv("MERA_REFERENCE_KERNELS", "1")
    else:
        monkeypatch.delenv("MERA_REFERENCE_KERNELS", raising=False)
    if mask:
        monkeypatch.setenv("MERA_CPU_FEATURES_MASK", mask)
    else:
        monkeypatch.delenv("MERA_CPU_FEATURES_MASK", raising=False)
    try:
        return mera.compile(mod, params, target="InterpreterHw")
    finally:
        monkeypatch.delenv("MERA_REFERENCE_KERNELS", raising=False)
        monkeypatch.delenv("MERA_CPU_FEATURES_MASK", raising=False)


class Tally:
    """Counts cases per path and keeps the first few that differ."""

    def __init__(self, name):
        self.name, self.cases, self.bad = name, {p: 0 for p, _ in PATHS}, []

    def check(self, path, ref, got, what):
        self.cases[path] += 1
        if ref.shape != got.shape or ref.dtype != got.dtype or not np.array_equal(ref, got):
            n = int((ref != got).sum()) if ref.shape == got.shape else -1
            self.bad.append(f"[{path}] {what}: {n} of {ref.size} bytes differ")

    def done(self, min_cases):
        for p, n in self.cases.items():
            assert n >= min_cases, f"{self.name}: only {n} cases ran on the {p} path"
        assert not self.bad, f"{self.name}: {len(self.bad)} cases differ from the reference; " + \
            "; ".join(self.bad[:5])


# The fast kernels split their work across the worker pool; the thread
# count must never change a byte, so the runs take 1, 2 and 7 threads in turn
# (a cycle of 5 over 2 to 4 paths: every path meets every count).
THREAD_CYCLE = itertools.cycle((1, 2, 7, 2, 1))


def run_all(monkeypatch, tally, mod, params, inputs, what):
    ref = compile_with(monkeypatch, mod, params, reference=True)(*inputs)[0]
    for path, mask in PATHS:
        threads = next(THREAD_CYCLE)
        monkeypatch.setenv("MERA_NUM_THREADS", str(threads))
        got = compile_with(monkeypatch, mod, params, mask=mask)(*inputs)[0]
        tally.check(path, ref, got, f"{what} threads={threads}")
    monkeypatch.delenv("MERA_NUM_THREADS")
    return ref


# ---- selection ----------------------------------------------------------------

def test_selection_follows_the_environment(monkeypatch):
    for op in ("conv2d", "dense"):
        for path, mask in PATHS:
            monkeypatch.setenv("MERA_CPU_FEATURES_MASK", mask)
            assert _core.kernel_name(op, True) == path.split("-")[0]
        monkeypatch.delenv("MERA_CPU_FEATURES_MASK")
        if _core.cpu_features()["amx_int8"]:  # then the AMX kernel is the best
            assert _core.kernel_name(op, True) == "amx"
        monkeypatch.setenv("MERA_CPU_FEATURES_MASK", "all")
        monkeypatch.setenv("MERA_REFERENCE_KERNELS", "1")
        assert _core.kernel_name(op, True) == "ref"
        monkeypatch.setenv("MERA_REFERENCE_KERNELS", "0")
        assert _core.kernel_name(op, True) == PATHS[-1][0]  # the mask is still "all"
        monkeypatch.delenv("MERA_REFERENCE_KERNELS")
        monkeypatch.delenv("MERA_CPU_FEATURES_MASK")
    for op in ("conv2d", "dense"):
        for path, mask in FLOAT_PATHS:
            monkeypatch.setenv("MERA_CPU_FEATURES_MASK", mask)
            assert _core.kernel_name(op, False) == path
        monkeypatch.setenv("MERA_REFERENCE_KERNELS", "1")
        assert _core.kernel_name(op, False) == "ref"
        monkeypatch.delenv("MERA_REFERENCE_KERNELS")
        monkeypatch.delenv("MERA_CPU_FEATURES_MASK")
    assert _core.kernel_name("add", False) == "ref"  # elementwise ops have no fast kernels
    monkeypatch.setenv("MERA_CPU_FEATURES_MASK", "avx2,avx512vnni")
    f = _core.cpu_features()
    assert not f["avx2"] and not f["avx512vnni"]
    monkeypatch.setenv("MERA_CPU_FEATURES_MASK", "avx512f")  # the byte/word forms go with AVX512F
    assert not _core.cpu_features()["avx512bw"]
    monkeypatch.setenv("MERA_CPU_FEATURES_MASK", "amx_int8")
    assert not _core.cpu_features()["amx_int8"] and _core.kernel_name("conv2d", True) != "amx"
    monkeypatch.setenv("MERA_CPU_FEATURES_MASK", "all")
    assert not _core.cpu_features()["amx_int8"]


# ---- random cases -------------------------------------------------------------

def rand_scale(rng, lo, hi):
    if rng.random() < 0.4:  # "nice" scales make exact rounding ties
        return float(2.0 ** -int(rng.integers(int(-np.log2(hi)), int(-np.log2(lo)) + 1)))
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def rand_zp(rng, dtype):
    lo, hi = (0, 255) if dtype == "uint8" else (-128, 127)
    u = rng.random()
    return lo if u < 0.15 else hi if u < 0.3 else int(rng.integers(lo, hi + 1))


def rand_data(rng, shape, dtype, near=None):
    lo, hi = (0, 256) if dtype == "uint8" else (-128, 128)
    if near is not None:  # a few steps around the zero point: small, exact accumulators
        return np.clip(near + rng.integers(-4, 5, size=shape), lo, hi - 1).astype(dtype)
    u = rng.random()
    if u < 0.1:  # saturated activations
        return np.full(shape, hi - 1 if rng.random() < 0.5 else lo, dtype)
    return rng.integers(lo, hi, size=shape).astype(dtype)


def rand_weights(rng, shape, tight=False):
    if tight:
        return rng.integers(-4, 5, size=shape).astype(np.int8)
    u = rng.random()
    if u < 0.1:  # extreme weights: int16 pair saturation in the depthwise fast path, big sums
        return np.full(shape, -128 if rng.random() < 0.5 else 127, np.int8)
    if u < 0.2:
        return rng.choice(np.array([-128, 127], np.int8), size=shape)
    return rng.integers(-128, 128, size=shape).astype(np.int8)


def weight_qparams(rng, o, axis):
    """Per-tensor or per-channel, zero points zero or not."""
    if rng.random() < 0.5:
        scales = np.array([rand_scale(rng, 1e-3, 5e-2) for _ in range(o)])
        zps = np.zeros(o, np.int32) if rng.random() < 0.6 else rng.integers(-128, 128, o).astype(np.int32)
        return (scales, zps, axis)
    zp = 0 if rng.random() < 0.5 else int(rng.integers(-128, 128))
    return (rand_scale(rng, 1e-3, 5e-2), zp)


def weight_zps_small(wqp):
    """Weight zero points within a few steps of zero, for tight cases."""
    if len(wqp) == 3:
        return (wqp[0], np.clip(wqp[1], -3, 3).astype(np.int32), wqp[2])
    return (wqp[0], int(np.clip(wqp[1], -3, 3)))


def out_params(rng, i, dtype, sx=None, wqp=None):
    """Output scale and zero point. With sx and wqp (tight cases) the
    multiplier is near 1, so every bit of the accumulator shows."""
    if sx is not None:
        ws = float(np.median(wqp[0]))
        return sx * ws * float(rng.uniform(0.5, 2.0)), rand_zp(rng, dtype) // 2 + (64 if dtype == "uint8" else 0)
    so = rand_scale(rng, 1e-2, 1.0)
    if i % 13 == 12:
        so = rand_scale(rng, 1e-7, 1e-5)  # the multiplier overflows int32: cvtps2dq gives INT32_MIN
    elif i % 11 == 10:
        so = 50.0  # everything rounds to the zero point
    elif i % 29 == 28:
        so = 1e-39  # a subnormal float scale: an infinite multiplier
    return so, rand_zp(rng, dtype)


def rand_bias(rng, o):
    bias = (rng.standard_normal(o) * rng.uniform(0.01, 100)).astype(np.float32)
    if rng.random() < 0.1:  # non-finite and huge biases: NaN and overflow give INT32_MIN in cvtps2dq
        idx = rng.integers(0, o, size=max(1, o // 3))
        bias[idx] = rng.choice(np.array([np.nan, np.inf, -np.inf, 3e38, -3e38, 1e10], np.float32), size=len(idx))
    return bias


def add_weight(b, rng, arr, qp, layout, how):
    """The weight as a constant, a param or a run-time input; returns (value, extra inputs)."""
    if how == "const":
        return b.const(arr, layout=layout, qparams=qp), []
    if how == "param":
        return b.param("w", arr, layout=layout, qparams=qp), []
    return b.input("w", arr.shape, "int8", layout=layout, qparams=qp), [arr]


def conv_geometry(rng, i):
    kind = ["generic", "grouped", "pointwise", "depthwise", "depthwise_fbgemm", "wide"][i % 6]
    k = (int(rng.integers(1, 6)), int(rng.integers(1, 6)))
    stride = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    dil = (1, 1) if rng.random() < 0.7 else (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
    pad = [int(v) for v in rng.integers(0, 4, size=4)]
    if kind == "generic":
        g, c, o = 1, int(rng.integers(1, 40)), int(rng.integers(1, 40))
    elif kind == "grouped":
        g = int(rng.choice([2, 3, 4, 8]))
        c, o = g * int(rng.integers(1, 7)), g * int(rng.integers(1, 10))
    elif kind == "pointwise":
        g, c, o, k, dil, pad = 1, int(rng.integers(1, 90)), int(rng.integers(1, 90)), (1, 1), (1, 1), [0, 0, 0, 0]
        stride = (1, 1) if rng.random() < 0.7 else stride
    elif kind == "depthwise":
        c = int(rng.integers(1, 40))
        g, o = c, c * int(rng.choice([1, 1, 2, 3]))
    elif kind == "depthwise_fbgemm":  # fbgemm's depthwise fast path: int16 pair saturation for uint8
        g = int(rng.choice([8, 16, 24, 40]))
        c, o = g, g * int(rng.choice([1, 2]))
        kk = int(rng.choice([3, 5, 7]))
        k, stride, dil, pad = (kk, kk), (int(rng.choice([1, 2])),) * 2, (1, 1), [(kk - 1) // 2] * 4
    else:  # several output-channel tiles, K not a multiple of 4
        g, c, o = 1, int(rng.integers(30, 70)), int(rng.integers(65, 150))
        k = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    kh, kw = k
    h = int(rng.integers(max(1, (kh - 1) * dil[0] + 1 - pad[0] - pad[2]), 11))
    w = int(rng.integers(max(1, (kw - 1) * dil[1] + 1 - pad[1] - pad[3]), 11))
    return dict(kind=kind, g=g, c=c, o=o, k=k, stride=stride, dil=dil, pad=pad, h=h, w=w)


def test_conv2d_fast_equals_reference(monkeypatch):
    rng = np.random.default_rng(11)
    tally = Tally("conv2d")
    for i in range(3000 * MORE):
        p = conv_geometry(rng, i)
        n = int(rng.integers(1, 3))
        xdt = "uint8" if rng.random() < 0.6 or p["kind"] == "depthwise_fbgemm" else "int8"
        ydt = xdt if rng.random() < 0.7 else ("int8" if xdt == "uint8" else "uint8")
        nhwc = bool(rng.random() < 0.5)
        klayout = str(rng.choice(["OIHW", "OHWI", "HWIO"]))
        tight = i % 5 == 4  # accumulators small enough to show in the output bit for bit
        sx, zx = rand_scale(rng, 5e-3, 0.1), rand_zp(rng, xdt)
        kh, kw = p["k"]
        wq = rand_weights(rng, (p["o"], p["c"] // p["g"], kh, kw), tight)
        wl = {"OIHW": wq, "OHWI": wq.transpose(0, 2, 3, 1), "HWIO": wq.transpose(2, 3, 1, 0)}[klayout]
        wl = np.ascontiguousarray(wl)
        wqp = weight_qparams(rng, p["o"], 3 if klayout == "HWIO" else 0)
        if tight:
            wqp = weight_zps_small(wqp)
        so, zo = out_params(rng, i, ydt, *((sx, wqp) if tight else ()))
        how = str(rng.choice(["const", "const", "param", "input"]))
        bias_kind = str(rng.choice(["const", "const", "none", "input"]))
        bias = rand_bias(rng, p["o"])
        relu = bool(rng.random() < 0.3)
        shape = (n, p["h"], p["w"], p["c"]) if nhwc else (n, p["c"], p["h"], p["w"])
        x = rand_data(rng, shape, xdt, zx if tight else None)

        b = ir.Builder("conv")
        xv = b.input("x", shape, xdt, qparams=(sx, zx), layout="NHWC" if nhwc else "NCHW")
        wv, extra = add_weight(b, rng, wl, wqp, klayout, how)
        bv = None
        if bias_kind == "const":
            bv = b.const(bias)
        elif bias_kind == "input":
            bv = b.input("b", bias.shape, "float32")
            extra = extra + [bias]
        y = b.conv2d(xv, wv, bv, strides=list(p["stride"]), padding=p["pad"], dilation=list(p["dil"]),
                     groups=p["g"], layout="NHWC" if nhwc else "NCHW", kernel_layout=klayout,
                     activation="relu" if relu else "none", out_scale=so, out_zero_point=zo, out_dtype=ydt)
        mod = b.finish(y)
        run_all(monkeypatch, tally, mod, b.params, [x] + extra,
                f"{p} n={n} {xdt}->{ydt} nhwc={nhwc} {klayout} w={how} bias={bias_kind} "
                f"{'per-channel' if len(wqp) == 3 else 'per-tensor'} relu={relu}")
    tally.done(3000 * MORE)


def test_dense_fast_equals_reference(monkeypatch):
    rng = np.random.default_rng(12)
    tally = Tally("dense")
    for i in range(1200 * MORE):
        lead = [int(v) for v in rng.integers(1, 5, size=int(rng.integers(0, 3)))]
        k = int(rng.integers(1, 300)) if i % 5 else int(rng.integers(1, 9))
        o = int(rng.integers(1, 150))
        xdt = "uint8" if rng.random() < 0.6 else "int8"
        ydt = xdt if rng.random() < 0.7 else ("int8" if xdt == "uint8" else "uint8")
        tight = i % 5 == 4
        sx, zx = rand_scale(rng, 5e-3, 0.1), rand_zp(rng, xdt)
        wq = rand_weights(rng, (o, k), tight)
        wqp = weight_qparams(rng, o, 0)
        if tight:
            wqp = weight_zps_small(wqp)
        so, zo = out_params(rng, i, ydt, *((sx, wqp) if tight else ()))
        how = str(rng.choice(["const", "const", "param", "input"]))
        bias = rand_bias(rng, o) if rng.random() < 0.8 else None
        relu = bool(rng.random() < 0.3)
        x = rand_data(rng, tuple(lead + [k]), xdt, zx if tight else None)

        b = ir.Builder("dense")
        xv = b.input("x", x.shape, xdt, qparams=(sx, zx))
        wv, extra = add_weight(b, rng, wq, wqp, None, how)
        y = b.dense(xv, wv, bias, activation="relu" if relu else "none", out_scale=so, out_zero_point=zo,
                    out_dtype=ydt)
        run_all(monkeypatch, tally, b.finish(y), b.params, [x] + extra,
                f"x {x.shape} {xdt}->{ydt} w {wq.shape} {how} {'per-channel' if len(wqp) == 3 else 'per-tensor'} "
                f"bias={bias is not None} relu={relu}")
    tally.done(1200 * MORE)


def test_large_layers_equal_reference(monkeypatch):
    """ResNet- and MobileNet-like layers with realistic sizes (several tiles of every kind)."""
    rng = np.random.default_rng(13)
    tally = Tally("large")
    layers = [  # hw, c, o, k, stride, groups, nhwc
        (20, 3, 64, 7, 2, 1, True),
        (14, 64, 200, 1, 1, 1, True),
        (10, 96, 96, 3, 1, 1, False),
        (9, 128, 128, 3, 2, 32, True),
        (16, 144, 144, 3, 1, 144, True),
        (15, 72, 72, 5, 2, 72, False),
    ]
    for hw, c, o, k, s, g, nhwc in layers:
        x = rand_data(rng, (1, hw, hw, c) if nhwc else (1, c, hw, hw), "uint8")
        b = ir.Builder("layer")
        xv = b.input("x", x.shape, "uint8", qparams=(0.02, 64), layout="NHWC" if nhwc else "NCHW")
        wq = rng.integers(-127, 128, (o, c // g, k, k)).astype(np.int8)
        wv = b.const(wq, qparams=(rng.uniform(0.001, 0.01, o), np.zeros(o, np.int32), 0))
        y = b.conv2d(xv, wv, rng.standard_normal(o).astype(np.float32), strides=[s, s], padding=[k // 2] * 4,
                     groups=g, layout="NHWC" if nhwc else "NCHW", out_scale=0.05, out_zero_point=3)
        run_all(monkeypatch, tally, b.finish(y), {}, [x], f"{hw}x{hw}x{c}->{o} k{k} s{s} g{g} nhwc={nhwc}")
    x = rand_data(rng, (3, 2048), "uint8")
    b = ir.Builder("fc")
    y = b.dense(b.input("x", x.shape, "uint8", qparams=(0.02, 64)),
                b.const(rng.integers(-127, 128, (1000, 2048)).astype(np.int8), qparams=(0.003, 0)),
                rng.standard_normal(1000).astype(np.float32), out_scale=0.1, out_zero_point=5)
    run_all(monkeypatch, tally, b.finish(y), {}, [x], "fc 2048->1000")
    tally.done(len(layers) + 1)


def test_wide_channel_layers_equal_reference(monkeypatch):
    """Many channels: the AVX-512 depthwise loop over 64-channel blocks of
    byte pairs (fbgemm's saturating path: uint8, pair sums saturated to
    int16; forced with depthwise_saturate="yes" where PyTorch's geometry
    rule would not take it) and the conv tiles that requantize in
    registers, with odd channel counts, odd sizes, strides, paddings,
    channel multipliers, both layouts and rounding modes, extreme weights
    and biases, on every path and 1, 2 and 7 threads."""
    rng = np.random.default_rng(14)
    tally = Tally("wide")
    n_cases = 90 * MORE
    for i in range(n_cases):
        pointwise = i % 3 == 2
        if pointwise:  # dense-like 1x1 and small-K 3x3 convs with many output channels
            g, c = 1, int(rng.integers(1, 70))
            o, kk = int(rng.integers(60, 300)), int(rng.choice([1, 1, 3]))
        else:
            g = int(rng.integers(1, 40)) * (8 if i % 2 else 1) + (0 if i % 2 else int(rng.integers(60, 200)))
            c, o, kk = g, g * int(rng.choice([1, 1, 1, 2])), int(rng.choice([3, 3, 5, 7]))
        s = int(rng.choice([1, 2]))
        pad = [(kk - 1) // 2] * 4 if rng.random() < 0.8 else [int(v) for v in rng.integers(0, kk, size=4)]
        h = int(rng.integers(max(1, kk - pad[0] - pad[2]), 13))
        w = int(rng.integers(max(1, kk - pad[1] - pad[3]), 13))
        nhwc = bool(rng.random() < 0.7)
        sat = "auto" if pointwise or rng.random() < 0.5 else "yes"
        rounding = str(rng.choice(ir.ROUNDINGS))
        wq = rand_weights(rng, (o, c // g, kk, kk))
        wqp = weight_qparams(rng, o, 0)
        if rng.random() < 0.7:  # mostly the zero weight zero points of real models
            wqp = (wqp[0], np.zeros(o, np.int32), 0) if len(wqp) == 3 else (wqp[0], 0)
        sx, zx = rand_scale(rng, 5e-3, 0.1), rand_zp(rng, "uint8")
        so, zo = out_params(rng, i, "uint8")
        bias = rand_bias(rng, o) if rng.random() < 0.8 else None
        relu = bool(rng.random() < 0.3)
        shape = (1, h, w, c) if nhwc else (1, c, h, w)
        x = rand_data(rng, shape, "uint8")
        b = ir.Builder("wide", rounding=rounding)
        xv = b.input("x", shape, "uint8", qparams=(sx, zx), layout="NHWC" if nhwc else "NCHW")
        wv = b.const(wq, qparams=wqp)
        y = b.conv2d(xv, wv, bias, strides=[s, s], padding=pad, groups=g, layout="NHWC" if nhwc else "NCHW",
                     activation="relu" if relu else "none", out_scale=so, out_zero_point=zo,
                     depthwise_saturate=sat)
        run_all(monkeypatch, tally, b.finish(y), {}, [x],
                f"{h}x{w}x{c}->{o} k{kk} s{s} pad={pad} g{g} nhwc={nhwc} sat={sat} {rounding} "
                f"{'per-channel' if len(wqp) == 3 else 'per-tensor'} bias={bias is not None} relu={relu}")
    tally.done(n_cases)


def test_pixel_tiles_equal_reference(monkeypatch):
    """Pixel counts that leave remainders (1, prime, 49, 196, ... pixels: the
    blocks and register tiles are cut evenly) with 1 to 4 vectors of output
    channels and tails of them, in the tiles that requantize in registers
    (NHWC output, no weight zero points; with AVX512BW the packed stores),
    uint8 and int8 in and out, relu, clamps, on every path and thread count."""
    rng = np.random.default_rng(15)
    tally = Tally("pixel tiles")
    n_cases = 60 * MORE
    for i in range(n_cases):
        hw = [(1, 1), (7, 7), (14, 14), (1, 13), (5, 19), (3, 1), (2, 25), (11, 9)][i % 8]
        n = 1 if i % 4 else 2
        k = 1 if i % 3 else 3
        c = int(rng.integers(1, 80))
        o = int(rng.choice([16, 32, 48, 64, 96, 128])) + (0 if i % 2 else int(rng.integers(-15, 16)))
        xdt = "uint8" if rng.random() < 0.6 else "int8"
        ydt = str(rng.choice(["uint8", "int8"]))
        sx, zx = rand_scale(rng, 5e-3, 0.1), rand_zp(rng, xdt)
        so, zo = out_params(rng, i, ydt)
        wq = rand_weights(rng, (o, c, k, k))
        wqp = weight_qparams(rng, o, 0)
        wqp = (wqp[0], np.zeros(o, np.int32), 0) if len(wqp) == 3 else (wqp[0], 0)
        relu = bool(rng.random() < 0.4)
        x = rand_data(rng, (n, hw[0], hw[1], c), xdt)
        b = ir.Builder("tiles")
        xv = b.input("x", x.shape, xdt, qparams=(sx, zx), layout="NHWC")
        y = b.conv2d(xv, b.const(wq, qparams=wqp), rand_bias(rng, o) if rng.random() < 0.8 else None,
                     padding=[k // 2] * 4, layout="NHWC", activation="relu" if relu else "none",
                     out_scale=so, out_zero_point=zo, out_dtype=ydt)
        run_all(monkeypatch, tally, b.finish(y), {}, [x],
                f"n={n} {hw} {c}->{o} k{k} {xdt}->{ydt} so={so:.3g} zo={zo} relu={relu}")
    tally.done(n_cases)


def test_tile_matrix_layers_equal_reference(monkeypatch):
    """Convs and denses of 16 pixels and more, which the AMX kernel runs on its
    tiles (blocks of 32 pixels, 2x2 tiles of 16 pixels by 16 channels): windows
    copied into rows (padding, strides, int8 input, grouped, dilated, NCHW) and
    windows read in place at one stride (1x1 and 1xk/kx1 convs over 64k
    channels of an NHWC uint8 input without padding, whole rows of 32 pixels),
    odd channel counts (3, 17, 65, 130), K not a multiple of 64, pixel counts
    that leave a last block of 1 to 31, weight zero points, per-tensor and
    per-channel, uint8 and int8 in and out, on every path and 1, 2 and 7
    threads. On a CPU with AMX the best path must be the AMX kernel."""
    if _core.cpu_features()["amx_int8"]:
        assert PATHS[0][0] == "amx" and _core.kernel_name("conv2d", True) == "amx"
        assert _core.kernel_name("dense", True) == "amx"
    rng = np.random.default_rng(16)
    tally = Tally("tile matrix")
    n_cases = 120 * MORE
    for i in range(n_cases):
        kind = ["inplace", "rows", "grouped", "dense"][i % 4]
        xdt = "uint8" if kind == "inplace" or rng.random() < 0.6 else "int8"
        ydt = str(rng.choice(["uint8", "int8"]))
        nhwc, g, dil, pad, n = True, 1, (1, 1), [0, 0, 0, 0], 1
        if kind == "inplace":  # the input itself at one stride: C a multiple of 64
            c = 64 * int(rng.integers(1, 4))
            o = int(rng.choice([3, 17, 32, 65, 130, 200]))
            k = (1, 1) if i % 8 == 0 else (1, int(rng.integers(1, 4))) if i % 8 == 4 else (1, 1)
            h, w = int(rng.integers(1, 4)), 32 + k[1] - 1 if rng.random() < 0.5 else int(rng.integers(16, 70))
            stride = (1, 1)
        elif kind == "rows":
            c = int(rng.choice([3, 17, 64, 65, 130]))
            o = int(rng.choice([3, 17, 65, 130]))
            k = (int(rng.integers(1, 8)), int(rng.integers(1, 8)))
            stride = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
            dil = (1, 1) if rng.random() < 0.7 else (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
            pad = [int(v) for v in rng.integers(0, 4, size=4)]
            nhwc = bool(rng.random() < 0.6)
            h, w = int(rng.integers(8, 20)), int(rng.integers(8, 20))
            n = int(rng.integers(1, 3))
        elif kind == "grouped":
            g = int(rng.choice([2, 3, 4]))
            c, o = g * int(rng.integers(1, 40)), g * int(rng.integers(1, 40))
            k = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
            stride = (1, 1)
            pad = [int(v) for v in rng.integers(0, 2, size=4)]
            nhwc = bool(rng.random() < 0.5)
            h, w = int(rng.integers(6, 14)), int(rng.integers(6, 14))
        h = max(h, (k[0] - 1) * dil[0] + 1 - pad[0] - pad[2]) if kind != "dense" else 0
        w = max(w, (k[1] - 1) * dil[1] + 1 - pad[1] - pad[3]) if kind != "dense" else 0
        sx, zx = rand_scale(rng, 5e-3, 0.1), rand_zp(rng, xdt)
        so, zo = out_params(rng, i, ydt)
        relu = bool(rng.random() < 0.3)
        b = ir.Builder("amx")
        if kind == "dense":
            kk, o = int(rng.integers(1, 400)), int(rng.integers(1, 150))
            x = rand_data(rng, (int(rng.integers(16, 80)), kk), xdt)
            wq = rand_weights(rng, (o, kk))
            wqp = weight_qparams(rng, o, 0)
            xv = b.input("x", x.shape, xdt, qparams=(sx, zx))
            y = b.dense(xv, b.const(wq, qparams=wqp), rand_bias(rng, o) if rng.random() < 0.8 else None,
                        activation="relu" if relu else "none", out_scale=so, out_zero_point=zo, out_dtype=ydt)
            what = f"dense x {x.shape} {xdt}->{ydt} w {wq.shape}"
        else:
            shape = (n, h, w, c) if nhwc else (n, c, h, w)
            x = rand_data(rng, shape, xdt)
            wq = rand_weights(rng, (o, c // g) + k)
            wqp = weight_qparams(rng, o, 0)
            xv = b.input("x", shape, xdt, qparams=(sx, zx), layout="NHWC" if nhwc else "NCHW")
            y = b.conv2d(xv, b.const(wq, qparams=wqp), rand_bias(rng, o) if rng.random() < 0.8 else None,
                         strides=list(stride), padding=pad, dilation=list(dil), groups=g,
                         layout="NHWC" if nhwc else "NCHW", activation="relu" if relu else "none",
                         out_scale=so, out_zero_point=zo, out_dtype=ydt)
            what = f"{kind} n={n} {h}x{w}x{c}->{o} k{k} s{stride} d{dil} pad={pad} g{g} nhwc={nhwc} {xdt}->{ydt}"
        run_all(monkeypatch, tally, b.finish(y), {}, [x],
                f"{what} {'per-channel' if len(wqp) == 3 else 'per-tensor'} relu={relu}")
    tally.done(n_cases)


def test_small_pixel_count_layers_equal_reference(monkeypatch):
    """Convs and denses of 1 to 20 output pixels: from 6 pixels (QCONV_ROWS_MIN_PX)
    the AMX kernel runs them on one partly filled A tile (the Simulator's tiles of a
    7x7 layer), fewer on the AVX-512 loop; padding, strides, grouped, NCHW, int8,
    weight zero points, on every path and 1, 2 and 7 threads."""
    rng = np.random.default_rng(17)
    tally = Tally("small pixel counts")
    n_cases = 60 * MORE
    for i in range(n_cases):
        xdt = str(rng.choice(["uint8", "int8"]))
        ydt = str(rng.choice(["uint8", "int8"]))
        sx, zx = rand_scale(rng, 5e-3, 0.1), rand_zp(rng, xdt)
        so, zo = out_params(rng, i, ydt)
        relu = bool(rng.random() < 0.3)
        b = ir.Builder("small")
        npx = 1 + i % 20
        if i % 3 == 2:
            kk, o = int(rng.integers(1, 300)), int(rng.integers(1, 150))
            x = rand_data(rng, (npx, kk), xdt)
            wq = rand_weights(rng, (o, kk))
            wqp = weight_qparams(rng, o, 0)
            xv = b.input("x", x.shape, xdt, qparams=(sx, zx))
            y = b.dense(xv, b.const(wq, qparams=wqp), rand_bias(rng, o) if rng.random() < 0.8 else None,
                        activation="relu" if relu else "none", out_scale=so, out_zero_point=zo, out_dtype=ydt)
            what = f"dense x {x.shape} {xdt}->{ydt} w {wq.shape}"
        else:
            g = int(rng.choice([1, 1, 2, 3]))
            c, o = g * int(rng.integers(1, 80)), g * int(rng.integers(1, 60))
            k = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
            oh = int(rng.integers(1, npx + 1))
            while npx % oh:
                oh -= 1
            ow = npx // oh  # oh x ow = npx output pixels
            stride = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
            pad = [int(v) for v in rng.integers(0, 2, size=4)]
            h = (oh - 1) * stride[0] + k[0] - pad[0] - pad[2]
            w = (ow - 1) * stride[1] + k[1] - pad[1] - pad[3]
            if h < 1 or w < 1:
                pad = [0, 0, 0, 0]
                h, w = (oh - 1) * stride[0] + k[0], (ow - 1) * stride[1] + k[1]
            nhwc = bool(rng.random() < 0.7)
            shape = (1, h, w, c) if nhwc else (1, c, h, w)
            x = rand_data(rng, shape, xdt)
            wq = rand_weights(rng, (o, c // g) + k)
            wqp = weight_qparams(rng, o, 0)
            xv = b.input("x", shape, xdt, qparams=(sx, zx), layout="NHWC" if nhwc else "NCHW")
            y = b.conv2d(xv, b.const(wq, qparams=wqp), rand_bias(rng, o) if rng.random() < 0.8 else None,
                         strides=list(stride), padding=pad, groups=g,
                         layout="NHWC" if nhwc else "NCHW", activation="relu" if relu else "none",
                         out_scale=so, out_zero_point=zo, out_dtype=ydt)
            what = f"conv {h}x{w}x{c}->{o} k{k} s{stride} pad={pad} g{g} nhwc={nhwc} {xdt}->{ydt}"
        run_all(monkeypatch, tally, b.finish(y), {}, [x],
                f"{what} npx={npx} {'per-channel' if len(wqp) == 3 else 'per-tensor'} relu={relu}")
    tally.done(n_cases)


def test_inputs_read_in_place_equal_reference(monkeypatch):
    """Convs that read their input in place, as the Simulator's tiles do (NHWC uint8,
    no padding): depthwise convs over 16k channels (the rows whose reads could pass
    the input's end run on a copy of its last rows), with dilation, strides, inputs
    one pixel wide, two images, fbgemm's saturating path forced, off and automatic,
    weight zero points; and 1x1 and 1xk convs whose K is not a multiple of 64 (the
    AMX tiles read rows of kpad bytes from the input where all of them lie inside it,
    else copy the windows), grouped too, with pixel counts that end a block of 32
    anywhere; controls with channel counts off these rules. Every path, 1, 2 and 7
    threads."""
    rng = np.random.default_rng(18)
    tally = Tally("in place")
    n_cases = 120 * MORE
    for i in range(n_cases):
        ydt = str(rng.choice(["uint8", "int8"]))
        sx, zx = rand_scale(rng, 5e-3, 0.1), rand_zp(rng, "uint8")
        so, zo = out_params(rng, i, ydt)
        relu = bool(rng.random() < 0.3)
        n = int(rng.integers(1, 3))
        b = ir.Builder("inplace", rounding=str(rng.choice(ir.ROUNDINGS)))
        if i % 2 == 0:  # depthwise
            c = 16 * int(rng.integers(1, 13)) if i % 10 else int(rng.integers(1, 60))
            k = (int(rng.integers(1, 6)), int(rng.integers(1, 6)))
            stride = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
            dil = (1, 1) if rng.random() < 0.7 else (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
            h = (k[0] - 1) * dil[0] + 1 + int(rng.integers(0, 6))
            w = (k[1] - 1) * dil[1] + 1 + (int(rng.integers(0, 8)) if rng.random() < 0.8 else 0)
            sat = str(rng.choice(["yes", "no", "auto"]))
            g, o, cg = c, c, 1
            what = f"depthwise n={n} {h}x{w}x{c} k{k} s{stride} d{dil} sat={sat}"
        else:  # 1x1 or 1xk, K off the multiples of 64
            g = 1 if rng.random() < 0.7 else int(rng.choice([2, 3]))
            cg = 4 * int(rng.integers(1, 40)) if i % 10 != 1 else int(rng.integers(1, 90))
            c, o = g * cg, g * int(rng.integers(1, 80))
            k = (1, 1) if rng.random() < 0.6 else (1, int(rng.integers(2, 4)))
            stride = (1, 1) if rng.random() < 0.8 else (1, 2)
            dil, sat = (1, 1), "auto"
            h = int(rng.integers(1, 5))
            w = k[1] + int(rng.integers(0, 40))
            what = f"pointwise n={n} {h}x{w}x{c}->{o} k{k} s{stride} g{g}"
        wq = rand_weights(rng, (o, cg) + k)
        wqp = weight_qparams(rng, o, 0)
        bias = rand_bias(rng, o) if rng.random() < 0.8 else None
        shape = (n, h, w, c)
        x = rand_data(rng, shape, "uint8")
        xv = b.input("x", shape, "uint8", qparams=(sx, zx), layout="NHWC")
        extra = {"depthwise_saturate": sat} if g == c else {}
        y = b.conv2d(xv, b.const(wq, qparams=wqp), bias, strides=list(stride), padding=[0, 0, 0, 0],
                     dilation=list(dil), groups=g, layout="NHWC", activation="relu" if relu else "none",
                     out_scale=so, out_zero_point=zo, out_dtype=ydt, **extra)
        run_all(monkeypatch, tally, b.finish(y), {}, [x],
                f"{what} ->{ydt} {'per-channel' if len(wqp) == 3 else 'per-tensor'} relu={relu}")
    tally.done(n_cases)


def test_compiled_graph_is_shared_by_threads(monkeypatch):
    """Prepared (packed) weights are read-only: concurrent runs agree."""
    import threading
    rng = np.random.default_rng(14)
    b = ir.Builder("two")
    xv = b.input("x", (1, 12, 12, 24), "uint8", qparams=(0.02, 100), layout="NHWC")
    y = b.conv2d(xv, b.const(rng.integers(-128, 128, (40, 24, 3, 3)).astype(np.int8), qparams=(0.004, 2)),
                 rng.standard_normal(40).astype(np.float32), padding=[1, 1, 1, 1], layout="NHWC",
                 out_scale=0.1, out_zero_point=0, activation="relu")
    y = b.conv2d(y, b.const(rng.integers(-128, 128, (40, 1, 3, 3)).astype(np.int8), qparams=(0.01, 0)), None,
                 padding=[1, 1, 1, 1], groups=40, layout="NHWC", out_scale=0.2, out_zero_point=128)
    mod = b.finish(y)
    runner = compile_with(monkeypatch, mod, {})
    ref = compile_with(monkeypatch, mod, {}, reference=True)
    xs = [rand_data(rng, (1, 12, 12, 24), "uint8") for _ in range(8)]
    want = [ref(x)[0] for x in xs]
    errors = []

    def work(k):
        for _ in range(20):
            if not np.array_equal(runner(xs[k])[0], want[k]):
                errors.append(k)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


# ---- against PyTorch ------------------------------------------------------------

@pytest.fixture
def one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_conv2d_fast_matches_fbgemm(monkeypatch, one_torch_thread):
    """The fast kernels against quantized::conv2d directly (uint8, as fbgemm takes)."""
    rng = np.random.default_rng(15)
    n_cases = 0
    for i in range(60 * MORE):
        p = conv_geometry(rng, i)
        if p["pad"][0] != p["pad"][2] or p["pad"][1] != p["pad"][3]:
            p["pad"] = [p["pad"][0], p["pad"][1], p["pad"][0], p["pad"][1]]
        kh, kw = p["k"]
        h = max(p["h"], (kh - 1) * p["dil"][0] + 1)
        w = max(p["w"], (kw - 1) * p["dil"][1] + 1)
        sx, zx = rand_scale(rng, 5e-3, 0.1), rand_zp(rng, "uint8")
        so, zo = out_params(rng, i, "uint8")
        xq = rand_data(rng, (1, p["c"], h, w), "uint8")
        wq = rand_weights(rng, (p["o"], p["c"] // p["g"], kh, kw))
        wsc = np.array([rand_scale(rng, 1e-3, 5e-2) for _ in range(p["o"])])
        bias = (rng.standard_normal(p["o"]) * 2).astype(np.float32)
        relu = bool(rng.random() < 0.3)
        wt = torch._make_per_channel_quantized_tensor(torch.from_numpy(wq), torch.from_numpy(wsc),
                                                      torch.zeros(p["o"], dtype=torch.int64), 0)
        packed = torch.ops.quantized.conv2d_prepack(wt, torch.from_numpy(bias), list(p["stride"]), p["pad"][:2],
                                                    list(p["dil"]), p["g"])
        xt = torch._make_per_tensor_quantized_tensor(torch.from_numpy(xq), sx, zx)
        conv = torch.ops.quantized.conv2d_relu if relu else torch.ops.quantized.conv2d
        want = conv(xt.contiguous(memory_format=torch.channels_last), packed, so, zo).int_repr().numpy()

        b = ir.Builder("conv")
        xv = b.input("x", (1, h, w, p["c"]), "uint8", qparams=(sx, zx), layout="NHWC")
        y = b.conv2d(xv, b.const(wq, qparams=(wsc, np.zeros(p["o"], np.int32), 0)), bias,
                     strides=list(p["stride"]), padding=p["pad"], dilation=list(p["dil"]), groups=p["g"],
                     layout="NHWC", activation="relu" if relu else "none", out_scale=so, out_zero_point=zo)
        got = compile_with(monkeypatch, b.finish(y), {})(np.ascontiguousarray(xq.transpose(0, 2, 3, 1)))[0]
        assert np.array_equal(got.transpose(0, 3, 1, 2), want), f"case {i}: {p} relu={relu}"
        n_cases += 1
    assert n_cases == 60 * MORE


def test_dense_fast_matches_fbgemm(monkeypatch, one_torch_thread):
    rng = np.random.default_rng(16)
    for i in range(40 * MORE):
        rows, k, o = int(rng.integers(1, 6)), int(rng.integers(1, 300)), int(rng.integers(1, 150))
        sx, zx = rand_scale(rng, 5e-3, 0.1), rand_zp(rng, "uint8")
        so, zo = out_params(rng, i, "uint8")
        xq = rand_data(rng, (rows, k), "uint8")
        wq = rand_weights(rng, (o, k))
        wsc, wzp = rand_scale(rng, 1e-3, 5e-2), int(rng.integers(-20, 21))
        bias = (rng.standard_normal(o) * 2).astype(np.float32)
        relu = bool(rng.random() < 0.3)
        wt = torch._make_per_tensor_quantized_tensor(torch.from_numpy(wq), wsc, wzp)
        packed = torch.ops.quantized.linear_prepack(wt, torch.from_numpy(bias))
        linear = torch.ops.quantized.linear_relu if relu else torch.ops.quantized.linear
        want = linear(torch._make_per_tensor_quantized_tensor(torch.from_numpy(xq), sx, zx), packed, so,
                      zo).int_repr().numpy()
        b = ir.Builder("dense")
        y = b.dense(b.input("x", xq.shape, "uint8", qparams=(sx, zx)), b.const(wq, qparams=(wsc, wzp)), bias,
                    activation="relu" if relu else "none", out_scale=so, out_zero_point=zo)
        got = compile_with(monkeypatch, b.finish(y), {})(xq)[0]
        assert np.array_equal(got, want), f"case {i}: x {xq.shape} w {wq.shape} relu={relu}"


# ---- float kernels ------------------------------------------------------------

FLOAT_TOL = 1e-5  # of the sum of |products| (and |bias|) of an output


def compile_float(monkeypatch, mod, params, *, reference=False, mask=""):
    """Compile for the Interpreter (the float target the quantizer calibrates on)."""
    monkeypatch.setenv("MERA_REFERENCE_KERNELS", "1" if reference else "0")
    monkeypatch.setenv("MERA_CPU_FEATURES_MASK", mask)
    try:
        return mera.compile(mod, params, target="Interpreter")
    finally:
        monkeypatch.delenv("MERA_REFERENCE_KERNELS", raising=False)
        monkeypatch.delenv("MERA_CPU_FEATURES_MASK", raising=False)


class FloatTally:
    """Cases per float path, the largest error seen relative to the bound,
    and the first few cases out of tolerance."""

    def __init__(self, name):
        self.name, self.cases, self.bad, self.worst = name, {p: 0 for p, _ in FLOAT_PATHS}, [], 0.0

    def check(self, path, ref, bound, got, what):
        self.cases[path] += 1
        if ref.shape != got.shape or got.dtype != np.float32:
            self.bad.append(f"[{path}] {what}: got {got.shape} {got.dtype}, expected {ref.shape} float32")
            return
        # NaN and inf come from non-finite inputs, whatever the order of the additions
        inf = np.isinf(ref)
        if not np.array_equal(np.isnan(got), np.isnan(ref)) or not np.array_equal(got[inf], ref[inf]) or \
                np.isinf(got).sum() != inf.sum():
            self.bad.append(f"[{path}] {what}: non-finite outputs differ")
            return
        fin = np.isfinite(ref)
        err = np.abs(got[fin].astype(np.float64) - ref[fin])
        b = bound[fin].astype(np.float64)
        if err.size:
            self.worst = max(self.worst, float((err / np.maximum(b, 1e-30)).max()))
            over = err - FLOAT_TOL * b
            if (over > 0).any():
                k = int(np.argmax(over))
                self.bad.append(f"[{path}] {what}: |error| {err[k]:.3g} > {FLOAT_TOL:g} * {b[k]:.3g} "
                                f"({int((over > 0).sum())} of {err.size} outputs)")

    def done(self, min_cases):
        for p, n in self.cases.items():
            assert n >= min_cases, f"{self.name}: only {n} cases ran on the {p} path"
        assert not self.bad, f"{self.name}: {len(self.bad)} cases off (worst {self.worst:.3g}); " + \
            "; ".join(self.bad[:5])
        assert self.worst < FLOAT_TOL


def float_data(rng, shape, special=False):
    """Normal values at a random scale; with special, some NaN and +-inf."""
    x = (rng.standard_normal(shape) * float(np.exp(rng.uniform(-3, 3)))).astype(np.float32)
    if special and x.size:
        idx = rng.integers(0, x.size, size=max(1, x.size // 50))
        x.flat[idx] = rng.choice(np.array([np.nan, np.inf, -np.inf], np.float32), size=len(idx))
    return x


def float_weight(b, arr, layout, how):
    """The weight as a constant, a param or a run-time input; returns (value, extra inputs)."""
    if how == "const":
        return b.const(arr, layout=layout), []
    if how == "param":
        return b.param("w", arr, layout=layout), []
    return b.input("w", arr.shape, "float32", layout=layout), [arr]


def run_float_all(monkeypatch, tally, build, x, w, bias, what):
    """build(w, bias, relu_off) -> (module, params, extra inputs). Checks every
    float path against the reference, with the bound from |x|, |w|, |bias|."""
    mod, params, extra = build(w, bias, False)
    ref = compile_float(monkeypatch, mod, params, reference=True)(x, *extra)[0]
    amod, aparams, aextra = build(np.abs(w), None if bias is None else np.abs(bias), True)
    bound = compile_float(monkeypatch, amod, aparams, reference=True)(np.abs(x), *aextra)[0]
    for path, mask in FLOAT_PATHS:
        got = compile_float(monkeypatch, mod, params, mask=mask)(x, *extra)[0]
        tally.check(path, ref, bound, got, what)
    return ref


def float_conv_geometry(rng, i):
    kind = ["generic", "grouped", "pointwise", "depthwise", "wide", "deep", "stem"][i % 7]
    k = (int(rng.integers(1, 6)), int(rng.integers(1, 6)))
    stride = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    dil = (1, 1) if rng.random() < 0.7 else (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
    pad = [int(v) for v in rng.integers(0, 4, size=4)]
    n = int(rng.integers(1, 3))
    if kind == "generic":
        g, c, o = 1, int(rng.integers(1, 40)), int(rng.integers(1, 40))
    elif kind == "grouped":
        g = int(rng.choice([2, 3, 4, 8]))
        c, o = g * int(rng.integers(1, 7)), g * int(rng.integers(1, 10))
    elif kind == "pointwise":
        g, c, o, k, dil, pad = 1, int(rng.integers(1, 90)), int(rng.integers(1, 90)), (1, 1), (1, 1), [0, 0, 0, 0]
        stride = (1, 1) if rng.random() < 0.7 else stride
    elif kind == "depthwise":  # with channel multipliers
        c = int(rng.integers(1, 40))
        g, o = c, c * int(rng.choice([1, 1, 2, 3]))
    elif kind == "wide":  # several output-channel tiles and a tail
        g, c, o = 1, int(rng.integers(30, 70)), int(rng.integers(65, 150))
        k = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    elif kind == "deep":  # K in the thousands: pixel blocks smaller than the batch, across images
        g, c, o, k, stride, n = 1, int(rng.integers(200, 400)), int(rng.integers(1, 40)), (3, 3), (1, 1), 2
        pad = [1, 1, 1, 1]
    else:  # a 7x7 stride-2 stem on three channels
        g, c, o, k, stride, dil, pad = 1, 3, int(rng.integers(8, 65)), (7, 7), (2, 2), (1, 1), [3, 3, 3, 3]
    kh, kw = k
    lo = 6 if kind == "deep" else 1
    h = int(rng.integers(max(lo, (kh - 1) * dil[0] + 1 - pad[0] - pad[2]), 12))
    w = int(rng.integers(max(lo, (kw - 1) * dil[1] + 1 - pad[1] - pad[3]), 12))
    return dict(kind=kind, g=g, c=c, o=o, k=k, stride=stride, dil=dil, pad=pad, h=h, w=w, n=n)


def float_conv_case(rng, p, nhwc, klayout, how, bias_kind, relu):
    """(build, x, w in OIHW, bias) of one float conv case."""
    kh, kw = p["k"]
    shape = (p["n"], p["h"], p["w"], p["c"]) if nhwc else (p["n"], p["c"], p["h"], p["w"])
    x = float_data(rng, shape, special=rng.random() < 0.05)
    w = float_data(rng, (p["o"], p["c"] // p["g"], kh, kw))
    bias = None if bias_kind == "none" else float_data(rng, (p["o"],))

    def build(w, bias, bound):
        wl = {"OIHW": w, "OHWI": w.transpose(0, 2, 3, 1), "HWIO": w.transpose(2, 3, 1, 0)}[klayout]
        wl = np.ascontiguousarray(wl)
        b = ir.Builder("fconv")
        xv = b.input("x", shape, "float32", layout="NHWC" if nhwc else "NCHW")
        wv, extra = float_weight(b, wl, klayout, how)
        bv = None
        if bias is not None and bias_kind == "const":
            bv = b.const(bias)
        elif bias is not None:
            bv = b.input("b", bias.shape, "float32")
            extra = extra + [bias]
        y = b.conv2d(xv, wv, bv, strides=list(p["stride"]), padding=p["pad"], dilation=list(p["dil"]),
                     groups=p["g"], layout="NHWC" if nhwc else "NCHW", kernel_layout=klayout,
                     activation="relu" if relu and not bound else "none")
        return b.finish(y), b.params, extra

    return build, x, w, bias


def test_conv2d_float_fast_within_tolerance(monkeypatch):
    rng = np.random.default_rng(21)
    tally = FloatTally("float conv2d")
    kinds = set()
    for i in range(700 * MORE):
        p = float_conv_geometry(rng, i)
        nhwc = bool(rng.random() < 0.5)
        klayout = str(rng.choice(["OIHW", "OHWI", "HWIO"]))
        how = str(rng.choice(["const", "const", "param", "input"]))
        bias_kind = str(rng.choice(["const", "const", "none", "input"]))
        relu = bool(rng.random() < 0.3)
        build, x, w, bias = float_conv_case(rng, p, nhwc, klayout, how, bias_kind, relu)
        run_float_all(monkeypatch, tally, build, x, w, bias,
                      f"{p} nhwc={nhwc} {klayout} w={how} bias={bias_kind} relu={relu}")
        kinds.add(p["kind"])
    assert len(kinds) == 7
    tally.done(700 * MORE)


def test_dense_float_fast_within_tolerance(monkeypatch):
    rng = np.random.default_rng(22)
    tally = FloatTally("float dense")
    for i in range(300 * MORE):
        lead = [int(v) for v in rng.integers(1, 5, size=int(rng.integers(0, 3)))]
        k = int(rng.integers(1, 300)) if i % 5 else int(rng.integers(1, 9))
        o = int(rng.integers(1, 150))
        how = str(rng.choice(["const", "const", "param", "input"]))
        bias_kind = str(rng.choice(["const", "none", "input"]))
        relu = bool(rng.random() < 0.3)
        x = float_data(rng, tuple(lead + [k]), special=rng.random() < 0.05)
        w = float_data(rng, (o, k))
        bias = None if bias_kind == "none" else float_data(rng, (o,))

        def build(w, bias, bound, x=x, how=how, bias_kind=bias_kind, relu=relu):
            b = ir.Builder("fdense")
            xv = b.input("x", x.shape, "float32")
            wv, extra = float_weight(b, w, None, how)
            bv = None
            if bias is not None and bias_kind == "const":
                bv = b.const(bias)
            elif bias is not None:
                bv = b.input("b", bias.shape, "float32")
                extra = extra + [bias]
            y = b.dense(xv, wv, bv, activation="relu" if relu and not bound else "none")
            return b.finish(y), b.params, extra

        run_float_all(monkeypatch, tally, build, x, w, bias,
                      f"x {x.shape} w {w.shape} {how} bias={bias_kind} relu={relu}")
    tally.done(300 * MORE)


def test_large_float_layers_within_tolerance(monkeypatch):
    """ResNet- and MobileNet-like float layers with realistic sizes."""
    rng = np.random.default_rng(23)
    tally = FloatTally("large float")
    layers = [  # n, hw, c, o, k, stride, groups, nhwc
        (1, 40, 3, 64, 7, 2, 1, True),
        (1, 40, 3, 64, 7, 2, 1, False),
        (1, 28, 64, 64, 3, 1, 1, True),
        (1, 28, 64, 256, 1, 1, 1, False),
        (2, 14, 256, 256, 3, 2, 1, True),
        (2, 7, 512, 2048, 1, 1, 1, False),  # NCHW scratch holds 32 pixels: blocks across images
        (1, 9, 128, 128, 3, 2, 32, True),
        (1, 16, 144, 144, 3, 1, 144, True),
        (1, 15, 72, 72, 5, 2, 72, False),
        (2, 20, 32, 64, 3, 1, 32, True),  # depthwise with a channel multiplier of 2
    ]
    for n, hw, c, o, k, s, g, nhwc in layers:
        p = dict(n=n, h=hw, w=hw, c=c, o=o, k=(k, k), stride=(s, s), dil=(1, 1), pad=[k // 2] * 4, g=g)
        build, x, w, bias = float_conv_case(rng, p, nhwc, "OIHW", "const", "const", True)
        run_float_all(monkeypatch, tally, build, x, w, bias, f"n={n} {hw}x{hw}x{c}->{o} k{k} s{s} g{g} nhwc={nhwc}")
    x = float_data(rng, (3, 2048))
    w, bias = float_data(rng, (1000, 2048)), float_data(rng, (1000,))

    def build(w, bias, bound):
        b = ir.Builder("fc")
        return b.finish(b.dense(b.input("x", x.shape, "float32"), b.const(w), bias)), {}, []

    run_float_all(monkeypatch, tally, build, x, w, bias, "fc 2048->1000")
    tally.done(len(layers) + 1)


def test_float_prepared_and_per_run_plans_agree(monkeypatch):
    """Weights packed once at compile time (constants, params) and per run
    (run-time inputs) give the same bits on every path."""
    rng = np.random.default_rng(24)
    for i in range(60):
        p = float_conv_geometry(rng, i)
        nhwc, klayout = bool(i % 2), ["OIHW", "OHWI", "HWIO"][i % 3]
        outs = {}
        for how in ("const", "param", "input"):
            case_rng = np.random.default_rng(1000 + i)  # the same data for every how
            build, x, w, bias = float_conv_case(case_rng, p, nhwc, klayout, how, "const", i % 4 == 1)
            mod, params, extra = build(w, bias, False)
            for path, mask in FLOAT_PATHS:
                outs[how, path] = compile_float(monkeypatch, mod, params, mask=mask)(x, *extra)[0]
        for path, _ in FLOAT_PATHS:
            for how in ("param", "input"):
                np.testing.assert_array_equal(outs[how, path], outs["const", path], err_msg=f"{p} {how} {path}")


def test_float_graph_is_shared_by_threads(monkeypatch):
    """Prepared float plans are read-only: concurrent runs give the bits of a lone run."""
    import threading
    rng = np.random.default_rng(25)
    b = ir.Builder("two")
    xv = b.input("x", (1, 12, 12, 24), "float32", layout="NHWC")
    y = b.conv2d(xv, b.const(float_data(rng, (40, 24, 3, 3))), float_data(rng, (40,)), padding=[1, 1, 1, 1],
                 layout="NHWC", activation="relu")
    y = b.conv2d(y, b.const(float_data(rng, (40, 1, 3, 3))), None, padding=[1, 1, 1, 1], groups=40, layout="NHWC")
    runner = compile_float(monkeypatch, b.finish(y), {})
    xs = [float_data(rng, (1, 12, 12, 24)) for _ in range(8)]
    want = [runner(x)[0] for x in xs]
    errors = []

    def work(k):
        for _ in range(20):
            if not np.array_equal(runner(xs[k])[0], want[k]):
                errors.append(k)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_interpreter_emulation_of_quantized_convs(monkeypatch):
    """The Interpreter runs quantized convs as dequantize, float conv,
    quantize. With the fast float conv the result may move by one step
    where the float value lies within rounding of a tie, and nowhere more;
    constant weights (dequantized when the plan is made) and run-time ones
    (dequantized per run) give the same bytes."""
    rng = np.random.default_rng(26)
    n_diff = n_total = 0
    for i in range(300):
        p = conv_geometry(rng, i)
        n = int(rng.integers(1, 3))
        xdt = "uint8" if rng.random() < 0.6 else "int8"
        nhwc = bool(rng.random() < 0.5)
        klayout = str(rng.choice(["OIHW", "OHWI", "HWIO"]))
        sx, zx = rand_scale(rng, 5e-3, 0.1), rand_zp(rng, xdt)
        kh, kw = p["k"]
        wq = rand_weights(rng, (p["o"], p["c"] // p["g"], kh, kw))
        wl = {"OIHW": wq, "OHWI": wq.transpose(0, 2, 3, 1), "HWIO": wq.transpose(2, 3, 1, 0)}[klayout]
        wl = np.ascontiguousarray(wl)
        wqp = weight_qparams(rng, p["o"], 3 if klayout == "HWIO" else 0)
        so, zo = rand_scale(rng, 1e-2, 1.0), rand_zp(rng, xdt)
        bias = (rng.standard_normal(p["o"]) * 2).astype(np.float32)
        relu = bool(rng.random() < 0.3)
        shape = (n, p["h"], p["w"], p["c"]) if nhwc else (n, p["c"], p["h"], p["w"])
        x = rand_data(rng, shape, xdt)
        outs = {}
        for how in ("const", "input"):
            b = ir.Builder("qconv")
            xv = b.input("x", shape, xdt, qparams=(sx, zx), layout="NHWC" if nhwc else "NCHW")
            wv, extra = add_weight(b, rng, wl, wqp, klayout, how)
            y = b.conv2d(xv, wv, bias, strides=list(p["stride"]), padding=p["pad"], dilation=list(p["dil"]),
                         groups=p["g"], layout="NHWC" if nhwc else "NCHW", kernel_layout=klayout,
                         activation="relu" if relu else "none", out_scale=so, out_zero_point=zo, out_dtype=xdt)
            mod = b.finish(y)
            outs[how, "ref"] = compile_float(monkeypatch, mod, b.params, reference=True)(x, *extra)[0]
            for path, mask in FLOAT_PATHS:
                outs[how, path] = compile_float(monkeypatch, mod, b.params, mask=mask)(x, *extra)[0]
        what = f"case {i}: {p} n={n} {xdt} nhwc={nhwc} {klayout}"
        np.testing.assert_array_equal(outs["input", "ref"], outs["const", "ref"], err_msg=what)
        for path, _ in FLOAT_PATHS:
            np.testing.assert_array_equal(outs["input", path], outs["const", path], err_msg=f"{what} {path}")
            d = np.abs(outs["const", path].astype(np.int32) - outs["const", "ref"].astype(np.int32))
            assert d.max(initial=0) <= 1, f"{what} {path}: off by {d.max()}"
            n_diff += int((d != 0).sum())
            n_total += d.size
    assert n_diff <= n_total // 1000, f"{n_diff} of {n_total} quantized outputs moved by one step"
