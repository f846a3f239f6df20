"""Fast quantized conv2d and dense kernels against the reference kernels, byte for byte.

Every case is compiled twice or more: once with ``MERA_REFERENCE_KERNELS=1``
(the reference kernels of csrc/kernels/ref, the semantic truth) and once per
fast path this CPU can run (the best one, and with ``MERA_CPU_FEATURES_MASK``
hiding features, the AVX2 and the portable C kernels). The outputs must be
identical. Cases are random: odd sizes, channel counts that are not
multiples of the vector widths, depthwise (with fbgemm's saturating fast path
and without), groups, strides 1-3, dilation, asymmetric padding, both data
layouts, all weight layouts, per-tensor and per-channel weights with zero
and non-zero zero points, uint8 and int8 activations and outputs, relu,
extreme zero points and scales that push results to the clamps (and past
the int32 range), weights that are constants, params or run-time inputs.

A smaller set runs against PyTorch's fbgemm kernels directly.
"""

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
    """(name, mask) of every fast path this CPU can run, best first."""
    f = _core.cpu_features()
    paths = []
    if f["avx512f"] and f["avx512vnni"]:
        paths.append(("avx512vnni", ""))
    if f["avx2"] and f["fma"]:
        paths.append(("avx2", "avx512f,avx512vnni"))
    paths.append(("c", "all"))
    return paths


PATHS = _paths()


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


def run_all(monkeypatch, tally, mod, params, inputs, what):
    ref = compile_with(monkeypatch, mod, params, reference=True)(*inputs)[0]
    for path, mask in PATHS:
        got = compile_with(monkeypatch, mod, params, mask=mask)(*inputs)[0]
        tally.check(path, ref, got, what)
    return ref


# ---- selection ----------------------------------------------------------------

def test_selection_follows_the_environment(monkeypatch):
    for op in ("conv2d", "dense"):
        for path, mask in PATHS:
            monkeypatch.setenv("MERA_CPU_FEATURES_MASK", mask)
            assert _core.kernel_name(op, True) == path
        monkeypatch.setenv("MERA_REFERENCE_KERNELS", "1")
        assert _core.kernel_name(op, True) == "ref"
        monkeypatch.setenv("MERA_REFERENCE_KERNELS", "0")
        assert _core.kernel_name(op, True) == PATHS[-1][0]  # the mask is still "all"
        monkeypatch.delenv("MERA_REFERENCE_KERNELS")
        monkeypatch.delenv("MERA_CPU_FEATURES_MASK")
    assert _core.kernel_name("conv2d", False) == "ref"  # float convs have no fast kernel yet
    monkeypatch.setenv("MERA_CPU_FEATURES_MASK", "avx2,avx512vnni")
    f = _core.cpu_features()
    assert not f["avx2"] and not f["avx512vnni"]


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
