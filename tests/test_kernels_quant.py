"""Quantized reference kernels against PyTorch's fbgemm CPU kernels, byte for byte.

Every test draws hundreds of random cases (odd sizes, both layouts, strides,
padding, dilation, groups, per-tensor and per-channel weights, random and
"nice" scales: the nice ones make exact rounding ties, where the details of
docs/numerics.md decide the result), runs one node on InterpreterHw and
compares the bytes with what PyTorch computes.

PyTorch is run single-threaded: its elementwise kernels compute the tail of
each row with scalar code that rounds differently from the vector code, and
with several threads tensors above 32768 elements get one tail per thread.
"""

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import mera
from mera import ir
from mera.frontend._torch_numerics import probe_rounding

torch.backends.quantized.engine = "fbgemm"

# Cases per test are the numbers below times this; the default keeps the
# file near ten seconds. MERA_TEST_MORE=50 makes a long soak.
MORE = int(os.environ.get("MERA_TEST_MORE", "6"))

NICE_SCALES = [2.0 ** -k for k in range(2, 9)] + [0.1, 0.05, 0.02, 0.01, 0.2, 0.3, 0.03, 0.015, 0.025, 0.004]


@pytest.fixture(autouse=True)
def one_torch_thread():
    torch.backends.quantized.engine = "fbgemm"
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ---- helpers ----------------------------------------------------------------

def rand_scale(rng, lo=1e-3, hi=1.0):
    """Half of the time a 'nice' scale, so that exact rounding ties occur."""
    nice = [s for s in NICE_SCALES if lo / 4 <= s <= hi * 4]
    if nice and rng.random() < 0.5:
        return float(nice[rng.integers(len(nice))])
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def rand_q(rng, shape, dtype):
    lo, hi = (0, 256) if dtype == "uint8" else (-128, 128)
    return rng.integers(lo, hi, size=shape).astype(dtype)


def rand_zp(rng, dtype):
    return int(rng.integers(0, 256)) if dtype == "uint8" else int(rng.integers(-128, 128))


def tq(q, scale, zp, nhwc=False):
    """A PyTorch quantized tensor with the bytes of q (logical NCHW)."""
    t = torch._make_per_tensor_quantized_tensor(torch.from_numpy(np.ascontiguousarray(q)), scale, zp)
    return t.contiguous(memory_format=torch.channels_last) if nhwc else t


def to_nhwc(a):
    return np.ascontiguousarray(np.asarray(a).transpose(0, 2, 3, 1))


def to_nchw(a):
    return np.ascontiguousarray(np.asarray(a).transpose(0, 3, 1, 2))


def run(build, inputs):
    """Build a graph with build(b, [input values]) and run it on InterpreterHw.

    inputs: list of (array, qparams, layout); qparams None for float.
    """
    b = ir.Builder("t", rounding=probe_rounding())  # PyTorch is the reference: its rounding
    vals = [b.input(f"x{i}", a.shape, str(a.dtype), qparams=q, layout=lay) for i, (a, q, lay) in enumerate(inputs)]
    mod = b.finish(build(b, vals))
    with mera.build_config(target="InterpreterHw"):
        rt = mera.compile(mod, {})
    return rt.set_input({f"x{i}": a for i, (a, _, _) in enumerate(inputs)}).run().get_output(0)


class Tally:
    """Counts cases and keeps the first few that differ, for the message."""

    def __init__(self, name):
        self.name, self.cases, self.bad = name, 0, []

    def check(self, ref, got, what):
        self.cases += 1
        ref = np.asarray(ref)
        if ref.shape != got.shape or ref.dtype != got.dtype or not np.array_equal(ref, got):
            n = int((ref != got).sum()) if ref.shape == got.shape else -1
            self.bad.append(f"{what}: {n} of {ref.size} bytes differ" if n >= 0 else
                            f"{what}: shape {got.shape} {got.dtype}, expected {ref.shape} {ref.dtype}")

    def done(self, min_cases):
        assert self.cases >= min_cases, f"{self.name}: only {self.cases} cases ran"
        assert not self.bad, f"{self.name}: {len(self.bad)} of {self.cases} cases differ from PyTorch; " + \
            "; ".join(self.bad[:5])


# ---- conv2d and dense -------------------------------------------------------

def conv_case(rng, kind):
    """Random conv geometry; each kind aims at one fbgemm path."""
    if kind == "depthwise_fast":   # fbgemm depthwise kernel: int16 pair saturation
        g = int(rng.choice([8, 16, 24, 32]))
        c, o = g, g * int(rng.choice([1, 2]))
        k = int(rng.choice([3, 5, 7]))
        return dict(c=c, o=o, g=g, k=(k, k), stride=(int(rng.choice([1, 2])),) * 2, pad=((k - 1) // 2,) * 2, dil=(1, 1))
    if kind == "groupwise_fast":
        cpg, g = int(rng.choice([2, 4, 8, 16])), int(rng.choice([4, 8, 16]))
        return dict(c=cpg * g, o=cpg * g, g=g, k=(3, 3), stride=(int(rng.choice([1, 2])),) * 2, pad=(1, 1), dil=(1, 1))
    if kind == "pointwise":
        return dict(c=int(rng.integers(1, 48)), o=int(rng.integers(1, 48)), g=1, k=(1, 1), stride=(1, 1), pad=(0, 0), dil=(1, 1))
    if kind == "grouped":
        g = int(rng.choice([2, 3, 4, 8]))
        cpg = int(rng.integers(1, 6))
        c, o = g * cpg, g * int(rng.integers(1, 5))
    else:
        g, c, o = 1, int(rng.integers(1, 40)), int(rng.integers(1, 40))
    k = (int(rng.integers(1, 6)), int(rng.integers(1, 6)))
    dil = (1, 1) if rng.random() < 0.7 else (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
    return dict(c=c, o=o, g=g, k=k, stride=(int(rng.integers(1, 4)), int(rng.integers(1, 4))),
                pad=(int(rng.integers(0, 3)), int(rng.integers(0, 3))), dil=dil)


def test_conv2d_matches_fbgemm():
    rng = np.random.default_rng(1)
    tally = Tally("conv2d")
    kinds = ["generic", "grouped", "pointwise", "depthwise_fast", "groupwise_fast"]
    for i in range(450 * MORE):
        kind = kinds[i % len(kinds)]
        p = conv_case(rng, kind)
        kh, kw = p["k"]
        h = int(rng.integers(max(1, (kh - 1) * p["dil"][0] + 1 - 2 * p["pad"][0]), 13))
        w = int(rng.integers(max(1, (kw - 1) * p["dil"][1] + 1 - 2 * p["pad"][1]), 13))
        n = int(rng.integers(1, 3))
        sx, zx = rand_scale(rng, 0.005, 0.1), int(rng.integers(0, 256))
        xq = rand_q(rng, (n, p["c"], h, w), "uint8")
        wq = rng.integers(-127, 128, size=(p["o"], p["c"] // p["g"], kh, kw)).astype(np.int8)
        per_channel = bool(rng.random() < 0.6)
        if per_channel:
            wsc = np.array([rand_scale(rng, 0.001, 0.05) for _ in range(p["o"])])
            wzp = np.zeros(p["o"], np.int32)
            wt = torch._make_per_channel_quantized_tensor(torch.from_numpy(wq), torch.from_numpy(wsc),
                                                          torch.zeros(p["o"], dtype=torch.int64), 0)
        else:
            wsc, wzp = rand_scale(rng, 0.001, 0.05), 0 if rng.random() < 0.6 else int(rng.integers(-20, 21))
            wt = torch._make_per_tensor_quantized_tensor(torch.from_numpy(wq), wsc, wzp)
        bias = (rng.standard_normal(p["o"]) * rng.uniform(0.01, 3)).astype(np.float32) if rng.random() < 0.8 else None
        so, zo = rand_scale(rng, 0.01, 0.5), int(rng.integers(0, 256))
        if i % 17 == 16:
            so = rand_scale(rng, 1e-7, 1e-5)  # the multiplier overflows int32: cvtps2dq gives INT32_MIN
        relu = bool(rng.random() < 0.3)
        nhwc = bool(rng.random() < 0.5)
        klayout = str(rng.choice(["OIHW", "OHWI", "HWIO"]))

        pads = [*p["pad"], *p["pad"]]  # top, left, bottom, right
        xt = tq(xq, sx, zx)
        if kind == "generic" and rng.random() < 0.3:  # asymmetric: PyTorch pads with the zero point first
            pads = [int(v) for v in rng.integers(0, 3, size=4)]
            xt = F.pad(xt, [pads[1], pads[3], pads[0], pads[2]], value=0.0)
            if xt.shape[2] < (kh - 1) * p["dil"][0] + 1 or xt.shape[3] < (kw - 1) * p["dil"][1] + 1:
                continue
        packed = torch.ops.quantized.conv2d_prepack(wt, None if bias is None else torch.from_numpy(bias),
                                                    list(p["stride"]), [pads[0], pads[1]] if xt.shape == xq.shape
                                                    else [0, 0], list(p["dil"]), p["g"])
        conv = torch.ops.quantized.conv2d_relu if relu else torch.ops.quantized.conv2d
        ref = conv(xt, packed, so, zo).int_repr().numpy()

        wl = {"OIHW": wq, "OHWI": wq.transpose(0, 2, 3, 1), "HWIO": wq.transpose(2, 3, 1, 0)}[klayout]
        wqp = (wsc, wzp, 3 if klayout == "HWIO" else 0) if per_channel else (wsc, wzp)

        def build(b, v):
            wv = b.const(np.ascontiguousarray(wl), layout=klayout, qparams=wqp)
            return b.conv2d(v[0], wv, bias, strides=list(p["stride"]), padding=pads,
                            dilation=list(p["dil"]), groups=p["g"], layout="NHWC" if nhwc else "NCHW",
                            kernel_layout=klayout, activation="relu" if relu else "none", out_scale=so, out_zero_point=zo)

        got = run(build, [(to_nhwc(xq) if nhwc else xq, (sx, zx), "NHWC" if nhwc else "NCHW")])
        tally.check(ref, to_nchw(got) if nhwc else got, f"{kind} {p} pads={pads} "
                    f"{'per-channel' if per_channel else 'per-tensor'} relu={relu} nhwc={nhwc}")
    tally.done(440 * MORE)


def test_dense_matches_fbgemm():
    rng = np.random.default_rng(2)
    tally = Tally("dense")
    for i in range(300 * MORE):
        lead = [int(v) for v in rng.integers(1, 5, size=int(rng.integers(1, 3)))]
        k, o = int(rng.integers(1, 300)), int(rng.integers(1, 70))
        sx, zx = rand_scale(rng, 0.005, 0.1), int(rng.integers(0, 256))
        xq = rand_q(rng, lead + [k], "uint8")
        wq = rng.integers(-127, 128, size=(o, k)).astype(np.int8)
        if rng.random() < 0.5:
            wsc = np.array([rand_scale(rng, 0.001, 0.05) for _ in range(o)])
            wqp = (wsc, np.zeros(o, np.int32), 0)
            wt = torch._make_per_channel_quantized_tensor(torch.from_numpy(wq), torch.from_numpy(wsc),
                                                          torch.zeros(o, dtype=torch.int64), 0)
        else:
            wsc, wzp = rand_scale(rng, 0.001, 0.05), 0 if rng.random() < 0.6 else int(rng.integers(-30, 31))
            wqp = (wsc, wzp)
            wt = torch._make_per_tensor_quantized_tensor(torch.from_numpy(wq), wsc, wzp)
        bias = (rng.standard_normal(o) * rng.uniform(0.01, 3)).astype(np.float32) if rng.random() < 0.8 else None
        so, zo = rand_scale(rng, 0.01, 0.5) if i % 10 else rand_scale(rng, 1e-7, 1e-5), int(rng.integers(0, 256))
        relu = bool(rng.random() < 0.3)
        packed = torch.ops.quantized.linear_prepack(wt, None if bias is None else torch.from_numpy(bias))
        linear = torch.ops.quantized.linear_relu if relu else torch.ops.quantized.linear
        ref = linear(tq(xq, sx, zx), packed, so, zo).int_repr().numpy()
        got = run(lambda b, v: b.dense(v[0], b.const(wq, qparams=wqp), bias, activation="relu" if relu else "none",
                                       out_scale=so, out_zero_point=zo), [(xq, (sx, zx), None)])
        tally.check(ref, got, f"x {xq.shape} w {wq.shape} {'per-channel' if len(wqp) == 3 else 'per-tensor'} relu={relu}")
    tally.done(300 * MORE)


# ---- elementwise --------------------------------------------------------------

def bcast_shapes(rng):
    r = int(rng.integers(1, 5))
    shape = [int(v) for v in rng.integers(1, 9, size=r)]
    if rng.random() < 0.4:
        shape[-1] = int(rng.integers(30, 140))  # rows longer than a vector step, with tails
    a, b = list(shape), list(shape)
    for k in range(r):
        u = rng.random()
        if u < 0.25:
            b[k] = 1
        elif u < 0.4:
            a[k] = 1
    if rng.random() < 0.3:
        b = b[int(rng.integers(0, r)):]
    return a, b


@pytest.mark.parametrize("op", ["add", "mul"])
def test_binary_ops_match_pytorch(op):
    rng = np.random.default_rng(3 if op == "add" else 4)
    tally = Tally(op)
    for i in range(300 * MORE):
        dt = "uint8" if rng.random() < 0.7 else "int8"
        sa, sb = rand_scale(rng), rand_scale(rng)
        so = rand_scale(rng) if i % 4 else 2 * sa
        za, zb, zo = rand_zp(rng, dt), rand_zp(rng, dt), rand_zp(rng, dt)
        relu = bool(rng.random() < 0.3)
        fn = getattr(torch.ops.quantized, op + ("_relu" if relu else ""))
        if i % 3 == 0:  # channels-last tensors, broadcast over spatial dims or whole
            shp = (int(rng.integers(1, 3)), int(rng.integers(1, 100)), int(rng.integers(1, 8)), int(rng.integers(1, 8)))
            bsh = [shp, (1, shp[1], 1, 1), (shp[0], 1, shp[2], shp[3])][int(rng.integers(0, 3))]
            qa, qb = rand_q(rng, shp, dt), rand_q(rng, bsh, dt)
            ref = fn(tq(qa, sa, za, True), tq(qb, sb, zb, True), so, zo).int_repr().numpy()
            ins = [(to_nhwc(qa), (sa, za), "NHWC"), (to_nhwc(qb), (sb, zb), "NHWC")]
            post = to_nchw
        else:
            ash, bsh = bcast_shapes(rng)
            qa, qb = rand_q(rng, ash, dt), rand_q(rng, bsh, dt)
            ref = fn(tq(qa, sa, za), tq(qb, sb, zb), so, zo).int_repr().numpy()
            ins = [(qa, (sa, za), None), (qb, (sb, zb), None)]
            post = np.asarray
        got = run(lambda b, v: b.op(op, v[0], v[1], activation="relu" if relu else "none", out_scale=so,
                                    out_zero_point=zo), ins)
        tally.check(ref, post(got), f"{[x[0].shape for x in ins]} {dt} relu={relu}")
    tally.done(300 * MORE)


UNARY_OPS = ["relu", "clip", "leaky_relu", "hardswish", "hardsigmoid", "sigmoid"]


@pytest.mark.parametrize("op", UNARY_OPS)
def test_unary_ops_match_pytorch(op):
    rng = np.random.default_rng(20 + UNARY_OPS.index(op))
    tally = Tally(op)
    for i in range(250 * MORE):
        dt = "uint8" if rng.random() < 0.7 else "int8"
        shape = [int(v) for v in rng.integers(1, 9, size=int(rng.integers(1, 5)))]
        if rng.random() < 0.5:
            shape[-1] = int(rng.integers(30, 200))  # rows with vector bodies and scalar tails
        q, s, z = rand_q(rng, shape, dt), rand_scale(rng, 1e-3, 0.2), rand_zp(rng, dt)
        x = tq(q, s, z)
        attrs = {}
        if op == "relu":
            ref = torch.relu(x)
        elif op == "clip":
            lo, hi = (0.0, 6.0) if i % 3 == 0 else sorted(float(v) for v in rng.uniform(-3, 3, size=2))
            ref = torch.ops.quantized.relu6(x) if (lo, hi) == (0.0, 6.0) and i % 2 else torch.clamp(x, lo, hi)
            attrs = {"a_min": lo, "a_max": hi}
        elif op == "leaky_relu":
            alpha = float(rng.uniform(0.001, 0.5))
            ref = F.leaky_relu(x, alpha)
            attrs = {"alpha": alpha}
        elif op == "hardswish":
            so, zo = (rand_scale(rng, 1e-3, 0.2), rand_zp(rng, dt)) if i % 5 else (s, z)
            ref = torch.ops.quantized.hardswish(x, so, zo)
        elif op == "hardsigmoid":
            ref = F.hardsigmoid(x)
        else:
            ref = torch.sigmoid(x)
        if op in ("hardswish", "hardsigmoid", "sigmoid"):  # output parameters as PyTorch chose them
            attrs.update(out_scale=ref.q_scale(), out_zero_point=ref.q_zero_point())
        got = run(lambda b, v: b.op(op, v[0], **attrs), [(q, (s, z), None)])
        tally.check(ref.int_repr().numpy(), got, f"{q.shape} {dt} q=({s},{z}) {attrs}")
    tally.done(250 * MORE)


# ---- pooling and mean ------------------------------------------------------------

def pool_input(rng, dt, nhwc, c=None, h=None, w=None):
    shape = (int(rng.integers(1, 3)), c or int(rng.integers(1, 40)), h or int(rng.integers(1, 16)), w or int(rng.integers(1, 16)))
    q, s, z = rand_q(rng, shape, dt), rand_scale(rng, 0.005, 0.2), rand_zp(rng, dt)
    return q, s, z, tq(q, s, z, nhwc), (to_nhwc(q) if nhwc else q, (s, z), "NHWC" if nhwc else "NCHW")


@pytest.mark.parametrize("op", ["max_pool2d", "avg_pool2d"])
def test_pool_matches_pytorch(op):
    rng = np.random.default_rng(5 if op == "max_pool2d" else 6)
    tally = Tally(op)
    for i in range(300 * MORE):
        dt, nhwc = ("uint8" if rng.random() < 0.8 else "int8"), bool(rng.random() < 0.5)
        q, s, z, t, inp = pool_input(rng, dt, nhwc)
        h, w = q.shape[2], q.shape[3]
        k = [int(rng.integers(1, min(h, 6) + 1)), int(rng.integers(1, min(w, 6) + 1))]
        st = [int(rng.integers(1, 4)), int(rng.integers(1, 4))]
        pd = [int(rng.integers(0, k[0] // 2 + 1)), int(rng.integers(0, k[1] // 2 + 1))]
        ceil = bool(rng.random() < 0.3)
        attrs = dict(kernel=k, strides=st, padding=pd + pd, ceil_mode=int(ceil), layout=inp[2])
        if op == "max_pool2d":
            dil = [1, 1] if rng.random() < 0.7 else [int(rng.integers(1, 3)), int(rng.integers(1, 3))]
            try:
                ref = F.max_pool2d(t, k, st, pd, dil, ceil_mode=ceil)
            except RuntimeError:
                continue  # the dilated window does not fit
            attrs["dilation"] = dil
        else:
            cip, dov = bool(rng.random() < 0.5), (int(rng.integers(1, 20)) if rng.random() < 0.2 else None)
            ref = F.avg_pool2d(t, k, st, pd, ceil_mode=ceil, count_include_pad=cip, divisor_override=dov)
            attrs.update(count_include_pad=int(cip), divisor_override=dov or 0)
        got = run(lambda b, v: b.op(op, v[0], **attrs), [inp])
        tally.check(ref.int_repr().numpy(), to_nchw(got) if nhwc else got, f"{q.shape} {dt} {attrs}")
    tally.done(250 * MORE)


def test_adaptive_avg_pool2d_matches_pytorch():
    rng = np.random.default_rng(7)
    tally = Tally("adaptive_avg_pool2d")
    for i in range(300 * MORE):
        dt, nhwc = ("uint8" if rng.random() < 0.8 else "int8"), bool(rng.random() < 0.5)
        q, s, z, t, inp = pool_input(rng, dt, nhwc)
        h, w = q.shape[2], q.shape[3]
        os_ = [1, 1] if i % 4 == 0 else [int(rng.integers(1, h + 3)), int(rng.integers(1, w + 3))]
        if h == 1 and w == 1:
            os_ = [1, 1]  # PyTorch writes NHWC order into an NCHW output here (a PyTorch bug)
        ref = F.adaptive_avg_pool2d(t, os_).int_repr().numpy()
        got = run(lambda b, v: b.adaptive_avg_pool2d(v[0], output_size=os_, layout=inp[2]), [inp])
        tally.check(ref, to_nchw(got) if nhwc else got, f"{q.shape} {dt} nhwc={nhwc} out={os_}")
    tally.done(300 * MORE)


def test_mean_matches_pytorch():
    rng = np.random.default_rng(8)
    tally = Tally("mean")
    to_ours = {0: 0, 1: 3, 2: 1, 3: 2}
    for i in range(300 * MORE):
        dt, nhwc = ("uint8" if rng.random() < 0.7 else "int8"), bool(rng.random() < 0.5)
        q, s, z, t, inp = pool_input(rng, dt, nhwc, h=int(rng.integers(1, 12)), w=int(rng.integers(1, 12)))
        dims = [2, 3] if i % 2 else [[3], [1], [1, 2, 3], [2], [1, 3], [0, 2]][int(rng.integers(0, 6))]
        keep = bool(rng.random() < 0.5)
        ref = t.mean(dims, keepdim=keep).int_repr().numpy()
        axes = [to_ours[d] for d in dims] if nhwc else dims
        got = run(lambda b, v: b.mean(v[0], axes=axes, keepdims=int(keep)), [inp])
        if nhwc:  # our kept axes are in NHWC order; bring them to PyTorch's
            kept = [a for a in range(4) if a not in axes] if not keep else [0, 1, 2, 3]
            order = sorted(range(len(kept)), key=lambda j: [0, 2, 3, 1][kept[j]])
            got = got.transpose(order)
        tally.check(ref, got, f"{q.shape} {dt} nhwc={nhwc} dims={dims} keepdim={keep}")
    tally.done(300 * MORE)


def test_softmax_matches_pytorch():
    rng = np.random.default_rng(14)
    tally = Tally("softmax")
    for i in range(200 * MORE):
        dt = "uint8" if rng.random() < 0.7 else "int8"
        rank = int(rng.integers(1, 5))
        shape = [int(v) for v in rng.integers(1, 12, size=rank)]
        if rng.random() < 0.3:
            shape[-1] = int(rng.integers(20, 300))
        axis = -1 if i % 2 else int(rng.integers(-rank, rank))
        q, s, z = rand_q(rng, shape, dt), rand_scale(rng, 0.01, 0.5), rand_zp(rng, dt)
        so, zo = (1 / 256, 0 if dt == "uint8" else -128) if i % 3 else (rand_scale(rng, 0.001, 0.01), rand_zp(rng, dt))
        ref = torch.ops.quantized.softmax(tq(q, s, z), axis, so, zo).int_repr().numpy()
        got = run(lambda b, v: b.softmax(v[0], axis=axis, out_scale=so, out_zero_point=zo), [(q, (s, z), None)])
        tally.check(ref, got, f"{shape} axis={axis} {dt}")
    tally.done(200 * MORE)


def test_channels_last_tensors_in_nchw_graphs():
    """An NCHW graph imported from PyTorch holds channels-last tensors there
    (quantized convs output them); torch_memory_format selects PyTorch's
    channels-last formulas while our data stays NCHW, and "contiguous" does
    the reverse for NHWC data."""
    rng = np.random.default_rng(15)
    tally = Tally("torch_memory_format")
    for i in range(100 * MORE):
        dt = "uint8" if rng.random() < 0.8 else "int8"
        data_nhwc = bool(i % 2)
        torch_cl = not data_nhwc
        mf = "channels_last" if torch_cl else "contiguous"
        shape = (int(rng.integers(1, 3)), int(rng.integers(1, 50)), int(rng.integers(1, 9)), int(rng.integers(1, 9)))
        q, s, z = rand_q(rng, shape, dt), rand_scale(rng, 0.005, 0.2), rand_zp(rng, dt)
        t = tq(q, s, z, torch_cl)
        lay = "NHWC" if data_nhwc else "NCHW"
        inp = [(to_nhwc(q) if data_nhwc else q, (s, z), lay)]
        back = to_nchw if data_nhwc else np.asarray
        h, w = shape[2], shape[3]
        k = [int(rng.integers(1, min(h, 3) + 1)), int(rng.integers(1, min(w, 3) + 1))]
        tally.check(F.avg_pool2d(t, k, k).int_repr().numpy(),
                    back(run(lambda b, v: b.avg_pool2d(v[0], kernel=k, strides=k, layout=lay, torch_memory_format=mf), inp)),
                    f"avg_pool2d {shape} {lay} {mf}")
        os_ = [1, 1] if h == w == 1 or i % 3 == 0 else [int(rng.integers(1, h + 2)), int(rng.integers(1, w + 2))]
        tally.check(F.adaptive_avg_pool2d(t, os_).int_repr().numpy(),
                    back(run(lambda b, v: b.adaptive_avg_pool2d(v[0], output_size=os_, layout=lay, torch_memory_format=mf), inp)),
                    f"adaptive_avg_pool2d {shape} {lay} {mf} -> {os_}")
        keep = bool(rng.random() < 0.5)
        got = run(lambda b, v: b.mean(v[0], axes=[1, 2] if data_nhwc else [2, 3], keepdims=int(keep), torch_memory_format=mf), inp)
        tally.check(t.mean([2, 3], keepdim=keep).int_repr().numpy(), back(got) if keep else got, f"mean {shape} {lay} {mf}")
        size = [1, 1] if h == w == 1 else [int(rng.integers(1, 15)), int(rng.integers(1, 15))]
        mode = "bilinear" if i % 4 < 2 else "nearest"
        ref = F.interpolate(t, size=size, mode=mode, align_corners=False if mode == "bilinear" else None)
        tally.check(ref.int_repr().numpy(),
                    back(run(lambda b, v: b.upsample(v[0], size=size, method=mode, layout=lay, torch_memory_format=mf), inp)),
                    f"upsample {mode} {shape} {lay} {mf}")
    tally.done(400 * MORE)


# ---- shape ops, concat, upsample --------------------------------------------------

def test_concat_matches_pytorch():
    rng = np.random.default_rng(9)
    tally = Tally("concat")
    for i in range(300 * MORE):
        dt, nhwc = ("uint8" if rng.random() < 0.7 else "int8"), bool(rng.random() < 0.5)
        n = int(rng.integers(1, 3))
        h, w = (1, 1) if i % 7 == 0 else (int(rng.integers(1, 7)), int(rng.integers(1, 7)))
        dim = 1 if rng.random() < 0.7 else int(rng.choice([0, 2, 3]))
        c0 = int(rng.integers(1, 10))
        ts, ins = [], []
        for _ in range(int(rng.integers(1, 5))):
            shp = [n, int(rng.integers(1, 80)) if rng.random() < 0.5 else int(rng.integers(1, 10)), h, w]
            if dim != 1:
                shp[1] = c0
                shp[dim] = int(rng.integers(1, 6))
            q, s, zp = rand_q(rng, shp, dt), rand_scale(rng, 0.005, 0.2), rand_zp(rng, dt)
            ts.append(tq(q, s, zp, nhwc))
            ins.append((to_nhwc(q) if nhwc else q, (s, zp), "NHWC" if nhwc else "NCHW"))
        so, zo = (rand_scale(rng, 0.005, 0.2), rand_zp(rng, dt)) if i % 5 else (ts[0].q_scale(), ts[0].q_zero_point())
        ref = torch.ops.quantized.cat(ts, dim, so, zo).int_repr().numpy()
        axis = {0: 0, 1: 3, 2: 1, 3: 2}[dim] if nhwc else dim
        got = run(lambda b, v: b.concat(*v, axis=axis, out_scale=so, out_zero_point=zo), ins)
        tally.check(ref, to_nchw(got) if nhwc else got, f"{[x[0].shape for x in ins]} {dt} dim={dim} nhwc={nhwc}")
    tally.done(300 * MORE)


def test_upsample_matches_pytorch():
    rng = np.random.default_rng(10)
    tally = Tally("upsample")
    for i in range(300 * MORE):
        dt, nhwc = ("uint8" if rng.random() < 0.7 else "int8"), bool(rng.random() < 0.5)
        q, s, z, t, inp = pool_input(rng, dt, nhwc, h=int(rng.integers(1, 9)), w=int(rng.integers(1, 9)))
        h, w = q.shape[2], q.shape[3]
        mode = "nearest" if i % 2 else "bilinear"
        ac = bool(rng.random() < 0.5) if mode == "bilinear" else None
        if rng.random() < 0.5:
            size = [1, 1] if h == w == 1 else [int(rng.integers(1, 20)), int(rng.integers(1, 20))]
            ref, attrs = F.interpolate(t, size=size, mode=mode, align_corners=ac), {"size": size}
        else:
            sf = [1.0, 1.0] if h == w == 1 else [float(rng.choice([0.5, 1.0, 1.5, 2.0, 3.0, 0.75, 2.5, 1.3, 1.7])) for _ in range(2)]
            if int(h * sf[0]) < 1 or int(w * sf[1]) < 1:
                continue
            ref, attrs = F.interpolate(t, scale_factor=sf, mode=mode, align_corners=ac), {"scales": sf}
        attrs.update(method=mode, align_corners=int(bool(ac)), layout=inp[2])
        got = run(lambda b, v: b.upsample(v[0], **attrs), [inp])
        tally.check(ref.int_repr().numpy(), to_nchw(got) if nhwc else got, f"{q.shape} {dt} {attrs}")
    tally.done(250 * MORE)


def test_shape_ops_move_bytes():
    rng = np.random.default_rng(11)
    tally = Tally("pad/transpose/reshape/flatten")
    for i in range(200 * MORE):
        dt = "uint8" if rng.random() < 0.7 else "int8"
        rank = int(rng.integers(1, 5))
        shape = [int(v) for v in rng.integers(1, 7, size=rank)]
        q, s, z = rand_q(rng, shape, dt), rand_scale(rng, 0.005, 0.5), rand_zp(rng, dt)
        t = tq(q, s, z)
        inp = [(q, (s, z), None)]
        pb, pe = [int(v) for v in rng.integers(0, 3, size=rank)], [int(v) for v in rng.integers(0, 3, size=rank)]
        value = float(rng.choice([0.0, float(rng.uniform(-3, 3)), 0.5 * s, 1.5 * s]))
        torch_pads = [p for d in reversed(range(rank)) for p in (pb[d], pe[d])]
        tally.check(F.pad(t, torch_pads, value=value).int_repr().numpy(),
                    run(lambda b, v: b.pad(v[0], pads=pb + pe, value=value), inp), f"pad {shape} {pb}+{pe} value={value}")
        perm = [int(v) for v in rng.permutation(rank)]
        tally.check(t.permute(perm).contiguous().int_repr().numpy(),
                    run(lambda b, v: b.transpose(v[0], axes=perm), inp), f"transpose {shape} {perm}")
        tally.check(q.reshape(-1), run(lambda b, v: b.reshape(v[0], shape=[-1]), inp), f"reshape {shape}")
        sa = int(rng.integers(0, rank))
        ea = int(rng.integers(sa, rank))
        tally.check(torch.flatten(t, sa, ea).int_repr().numpy(),
                    run(lambda b, v: b.flatten(v[0], start_axis=sa, end_axis=ea), inp), f"flatten {shape} {sa}..{ea}")
    tally.done(800 * MORE)


# ---- quantize, dequantize, requantize -------------------------------------------------

def test_quantize_matches_quantize_per_tensor():
    rng = np.random.default_rng(12)
    tally = Tally("quantize")
    for i in range(300 * MORE):
        dt = "uint8" if rng.random() < 0.6 else "int8"
        s, z = rand_scale(rng, 1e-4, 10.0), rand_zp(rng, dt)
        n = int(rng.integers(1, 300))
        x = (rng.standard_normal(n) * s * rng.uniform(1, 200)).astype(np.float32)
        ties = rng.integers(0, n, size=n // 3)
        x[ties] = ((rng.integers(-300, 300, size=len(ties)) + 0.5) * np.float32(s)).astype(np.float32)
        if i % 5 == 0:  # NaN and the infinities go where PyTorch sends them
            special = np.array([np.nan, np.inf, -np.inf, 3e38, -3e38, 1e10, -1e10, 0.0, -0.0], np.float32)[:n]
            x[:len(special)] = special
        ref = torch.quantize_per_tensor(torch.from_numpy(x), s, z, torch.quint8 if dt == "uint8" else torch.qint8)
        got = run(lambda b, v: b.quantize(v[0], scale=s, zero_point=z, dtype=dt), [(x, None, None)])
        tally.check(ref.int_repr().numpy(), got, f"n={n} {dt} q=({s},{z})")
    tally.done(300 * MORE)


def test_dequantize_and_requantize_match_pytorch():
    rng = np.random.default_rng(13)
    tally = Tally("dequantize/requantize")
    for i in range(200 * MORE):
        dt = "uint8" if rng.random() < 0.6 else "int8"
        shape = [int(v) for v in rng.integers(1, 6, size=int(rng.integers(1, 5)))]
        q = rand_q(rng, shape, dt)
        if i % 2:  # per-axis: PyTorch computes (q - zp) * scale in double there
            axis = int(rng.integers(0, len(shape)))
            sc = np.array([rand_scale(rng) for _ in range(shape[axis])])
            zps = np.array([rand_zp(rng, dt) for _ in range(shape[axis])], np.int32)
            ref = torch._make_per_channel_quantized_tensor(torch.from_numpy(q), torch.from_numpy(sc),
                                                           torch.from_numpy(zps.astype(np.int64)), axis).dequantize()
            got = run(lambda b, v: b.dequantize(b.const(q, qparams=(sc, zps, axis))), [(q, (1.0, 0), None)])
        else:
            s, z = rand_scale(rng), rand_zp(rng, dt)
            ref = tq(q, s, z).dequantize()
            got = run(lambda b, v: b.dequantize(v[0]), [(q, (s, z), None)])
        tally.check(ref.numpy().view(np.uint32), got.view(np.uint32), f"dequantize {shape} {dt}")
        s, z = rand_scale(rng), rand_zp(rng, dt)
        odt = dt if rng.random() < 0.7 else ("int8" if dt == "uint8" else "uint8")
        so, zo = rand_scale(rng), rand_zp(rng, odt)
        ref = torch.quantize_per_tensor(tq(q, s, z).dequantize(), so, zo, torch.quint8 if odt == "uint8" else torch.qint8)
        got = run(lambda b, v: b.requantize(v[0], out_scale=so, out_zero_point=zo, out_dtype=odt), [(q, (s, z), None)])
        tally.check(ref.int_repr().numpy(), got, f"requantize {shape} {dt}->{odt}")
    tally.done(400 * MORE)
