"""Float32 reference kernels against PyTorch's CPU operators.

Float results are compared with a tolerance, |ours - torch| <= 1e-5 *
max(1, max|torch|): the order of float additions is free in the float
kernels. Hundreds of random cases per op, both layouts, odd sizes.
"""

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import mera
from mera import ir

MORE = int(os.environ.get("MERA_TEST_MORE", "6"))


@pytest.fixture(autouse=True)
def one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def run(build, inputs):
    """Build a graph with build(b, [input values]) and run it on the Interpreter."""
    b = ir.Builder("t")
    vals = [b.input(f"x{i}", a.shape, "float32", layout=lay) for i, (a, lay) in enumerate(inputs)]
    mod = b.finish(build(b, vals))
    with mera.build_config(target="Interpreter"):
        rt = mera.compile(mod, {})
    return rt.set_input({f"x{i}": a for i, (a, _) in enumerate(inputs)}).run().get_output(0)


def to_nhwc(a):
    return np.ascontiguousarray(np.asarray(a).transpose(0, 2, 3, 1))


def to_nchw(a):
    return np.ascontiguousarray(np.asarray(a).transpose(0, 3, 1, 2))


class Tally:
    def __init__(self, name):
        self.name, self.cases, self.bad = name, 0, []

    def check(self, ref, got, what):
        self.cases += 1
        ref = np.asarray(ref, np.float32)
        if ref.shape != got.shape or got.dtype != np.float32:
            self.bad.append(f"{what}: shape {got.shape} {got.dtype}, expected {ref.shape} float32")
            return
        tol = 1e-5 * max(1.0, float(np.abs(ref).max()) if ref.size else 1.0)
        err = float(np.abs(ref - got).max()) if ref.size else 0.0
        if not err <= tol or np.isnan(got).any() != np.isnan(ref).any():
            self.bad.append(f"{what}: max error {err:.3g} > {tol:.3g}")

    def done(self, min_cases):
        assert self.cases >= min_cases, f"{self.name}: only {self.cases} cases ran"
        assert not self.bad, f"{self.name}: {len(self.bad)} of {self.cases} cases off; " + "; ".join(self.bad[:5])


def image(rng, nhwc, c=None, h=None, w=None, scale=1.0):
    """A random NCHW tensor, PyTorch's view of it and our input tuple."""
    x = (rng.standard_normal((int(rng.integers(1, 3)), c or int(rng.integers(1, 24)), h or int(rng.integers(1, 12)),
                              w or int(rng.integers(1, 12)))) * scale).astype(np.float32)
    t = torch.from_numpy(x)
    if nhwc:
        t = t.contiguous(memory_format=torch.channels_last)
    return x, t, (to_nhwc(x) if nhwc else x, "NHWC" if nhwc else "NCHW")


def test_conv2d():
    rng = np.random.default_rng(1)
    tally = Tally("conv2d")
    for i in range(150 * MORE):
        nhwc = bool(rng.random() < 0.5)
        g = int(rng.choice([1, 1, 2, 4]))
        c = g * int(rng.integers(1, 8))
        o = g * int(rng.integers(1, 8))
        if i % 5 == 0:
            g = c = int(rng.integers(1, 24))  # depthwise
            o = c * int(rng.integers(1, 3))
        k = (int(rng.integers(1, 5)), int(rng.integers(1, 5)))
        st, dil = [int(rng.integers(1, 3))] * 2, [int(rng.integers(1, 3)), int(rng.integers(1, 3))]
        pad = [int(rng.integers(0, 3)), int(rng.integers(0, 3))]
        h = int(rng.integers(max(1, (k[0] - 1) * dil[0] + 1 - 2 * pad[0]), 12))
        wd = int(rng.integers(max(1, (k[1] - 1) * dil[1] + 1 - 2 * pad[1]), 12))
        x, t, inp = image(rng, nhwc, c=c, h=h, w=wd)
        w = rng.standard_normal((o, c // g, *k)).astype(np.float32)
        bias = rng.standard_normal(o).astype(np.float32) if rng.random() < 0.8 else None
        relu = bool(rng.random() < 0.5)
        kl = str(rng.choice(["OIHW", "OHWI", "HWIO"]))
        pads, tp = pad + pad, t
        if rng.random() < 0.25:  # asymmetric padding: pad explicitly in PyTorch
            pads = [int(v) for v in rng.integers(0, 3, size=4)]
            tp = F.pad(t, [pads[1], pads[3], pads[0], pads[2]])
            if tp.shape[2] < (k[0] - 1) * dil[0] + 1 or tp.shape[3] < (k[1] - 1) * dil[1] + 1:
                continue
        with torch.backends.mkldnn.flags(enabled=False):  # oneDNN 3.12 segfaults on some dilated depthwise convs
            ref = F.conv2d(tp, torch.from_numpy(w), None if bias is None else torch.from_numpy(bias), st,
                           pad if tp is t else 0, dil, g)
        ref = torch.relu(ref) if relu else ref
        wl = {"OIHW": w, "OHWI": w.transpose(0, 2, 3, 1), "HWIO": w.transpose(2, 3, 1, 0)}[kl]
        got = run(lambda b, v: b.conv2d(v[0], b.const(np.ascontiguousarray(wl), layout=kl), bias, strides=st,
                                        padding=pads, dilation=dil, groups=g, layout=inp[1], kernel_layout=kl,
                                        activation="relu" if relu else "none"), [inp])
        tally.check(ref.numpy(), to_nchw(got) if nhwc else got, f"x {x.shape} w {w.shape} g={g} {kl} pads={pads}")
    tally.done(140 * MORE)


def test_dense():
    rng = np.random.default_rng(2)
    tally = Tally("dense")
    for i in range(150 * MORE):
        k, o = int(rng.integers(1, 200)), int(rng.integers(1, 60))
        x = rng.standard_normal([int(v) for v in rng.integers(1, 5, size=int(rng.integers(1, 3)))] + [k]).astype(np.float32)
        w = rng.standard_normal((o, k)).astype(np.float32)
        bias = rng.standard_normal(o).astype(np.float32) if rng.random() < 0.8 else None
        relu = bool(rng.random() < 0.5)
        ref = F.linear(torch.from_numpy(x), torch.from_numpy(w), None if bias is None else torch.from_numpy(bias))
        ref = torch.relu(ref) if relu else ref
        got = run(lambda b, v: b.dense(v[0], b.const(w), bias, activation="relu" if relu else "none"), [(x, None)])
        tally.check(ref.numpy(), got, f"x {x.shape} w {w.shape}")
    tally.done(150 * MORE)


@pytest.mark.parametrize("op", ["add", "mul"])
def test_binary(op):
    rng = np.random.default_rng(3)
    tally = Tally(op)
    for i in range(150 * MORE):
        r = int(rng.integers(1, 5))
        shape = [int(v) for v in rng.integers(1, 9, size=r)]
        bshape = [1 if rng.random() < 0.3 else d for d in shape][int(rng.integers(0, r)):]
        x, y = rng.standard_normal(shape).astype(np.float32), rng.standard_normal(bshape).astype(np.float32)
        relu = bool(rng.random() < 0.3)
        ref = torch.from_numpy(x) + torch.from_numpy(y) if op == "add" else torch.from_numpy(x) * torch.from_numpy(y)
        ref = torch.relu(ref) if relu else ref
        got = run(lambda b, v: b.op(op, v[0], v[1], activation="relu" if relu else "none"), [(x, None), (y, None)])
        tally.check(ref.numpy(), got, f"{shape} {op} {bshape}")
    tally.done(150 * MORE)


@pytest.mark.parametrize("op", ["add", "mul"])
def test_binary_broadcast_both_ways_is_exact(op):
    """Either operand broadcast along any axes (rank 0 to 4), NaN included: one float32
    rounding per element, so the bytes are numpy's."""
    rng = np.random.default_rng(11)
    for case in range(200):
        r = int(rng.integers(0, 5))
        out = [int(rng.integers(1, 6)) for _ in range(r)]

        def operand_shape():
            k = int(rng.integers(0, r + 1))
            return [d if rng.random() < 0.6 else 1 for d in out[r - k:]]

        x = rng.standard_normal(operand_shape()).astype(np.float32)
        y = rng.standard_normal(operand_shape()).astype(np.float32)
        if case % 5 == 0 and x.size:
            x.flat[int(rng.integers(0, x.size))] = np.nan
        relu = bool(case % 2)
        got = run(lambda b, v: b.op(op, v[0], v[1], activation="relu" if relu else "none"), [(x, None), (y, None)])
        ref = x + y if op == "add" else x * y
        ref = np.where(ref < 0, np.float32(0), ref) if relu else ref
        assert got.shape == ref.shape and np.array_equal(got, ref, equal_nan=True), (x.shape, y.shape, relu)


UNARY = {
    "relu": (lambda t: torch.relu(t), {}),
    "clip": (lambda t: torch.clamp(t, -0.7, 1.9), {"a_min": -0.7, "a_max": 1.9}),
    "leaky_relu": (lambda t: F.leaky_relu(t, 0.15), {"alpha": 0.15}),
    "hardswish": (F.hardswish, {}),
    "hardsigmoid": (F.hardsigmoid, {}),
    "sigmoid": (torch.sigmoid, {}),
}


@pytest.mark.parametrize("op", sorted(UNARY))
def test_unary(op):
    rng = np.random.default_rng(4)
    fn, attrs = UNARY[op]
    tally = Tally(op)
    for i in range(150 * MORE):
        x = (rng.standard_normal([int(v) for v in rng.integers(1, 9, size=int(rng.integers(1, 5)))]) * 5).astype(np.float32)
        got = run(lambda b, v: b.op(op, v[0], **attrs), [(x, None)])
        tally.check(fn(torch.from_numpy(x)).numpy(), got, f"{x.shape}")
    tally.done(150 * MORE)


def test_pooling():
    rng = np.random.default_rng(5)
    tally = Tally("pooling")
    for i in range(150 * MORE):
        nhwc = bool(rng.random() < 0.5)
        x, t, inp = image(rng, nhwc, h=int(rng.integers(2, 12)), w=int(rng.integers(2, 12)))
        k = [int(rng.integers(1, min(x.shape[2], 3) + 1)), int(rng.integers(1, min(x.shape[3], 3) + 1))]
        st = [int(rng.integers(1, 3)), int(rng.integers(1, 3))]
        pd = [int(rng.integers(0, k[0] // 2 + 1)), int(rng.integers(0, k[1] // 2 + 1))]
        ceil = bool(rng.random() < 0.3)
        base = dict(kernel=k, strides=st, padding=pd + pd, ceil_mode=int(ceil), layout=inp[1])
        post = to_nchw if nhwc else np.asarray
        tally.check(F.max_pool2d(t, k, st, pd, ceil_mode=ceil).numpy(),
                    post(run(lambda b, v: b.max_pool2d(v[0], **base), [inp])), f"max {x.shape} {base}")
        cip = bool(rng.random() < 0.5)
        tally.check(F.avg_pool2d(t, k, st, pd, ceil_mode=ceil, count_include_pad=cip).numpy(),
                    post(run(lambda b, v: b.avg_pool2d(v[0], count_include_pad=int(cip), **base), [inp])),
                    f"avg {x.shape} {base} cip={cip}")
        os_ = [int(rng.integers(1, x.shape[2] + 3)), int(rng.integers(1, x.shape[3] + 3))]
        tally.check(F.adaptive_avg_pool2d(t, os_).numpy(),
                    post(run(lambda b, v: b.adaptive_avg_pool2d(v[0], output_size=os_, layout=inp[1]), [inp])),
                    f"adaptive {x.shape} -> {os_}")
    tally.done(450 * MORE)


def test_mean_and_softmax():
    rng = np.random.default_rng(6)
    tally = Tally("mean/softmax")
    for i in range(150 * MORE):
        x = (rng.standard_normal([int(v) for v in rng.integers(1, 12, size=4)]) * 3).astype(np.float32)
        dims = [[2, 3], [1], [3], [1, 2, 3], [0, 2]][i % 5]
        keep = bool(rng.random() < 0.5)
        tally.check(torch.from_numpy(x).mean(dims, keepdim=keep).numpy(),
                    run(lambda b, v: b.mean(v[0], axes=dims, keepdims=int(keep)), [(x, None)]), f"mean {x.shape} {dims}")
        axis = int(rng.integers(-4, 4))
        tally.check(torch.softmax(torch.from_numpy(x), axis).numpy(),
                    run(lambda b, v: b.softmax(v[0], axis=axis), [(x, None)]), f"softmax {x.shape} axis={axis}")
    tally.done(300 * MORE)


def test_upsample():
    rng = np.random.default_rng(7)
    tally = Tally("upsample")
    for i in range(150 * MORE):
        nhwc = bool(rng.random() < 0.5)
        x, t, inp = image(rng, nhwc, h=int(rng.integers(1, 9)), w=int(rng.integers(1, 9)))
        mode = "nearest" if i % 2 else "bilinear"
        ac = bool(rng.random() < 0.5) if mode == "bilinear" else None
        if rng.random() < 0.5:
            size = [int(rng.integers(1, 20)), int(rng.integers(1, 20))]
            ref, attrs = F.interpolate(t, size=size, mode=mode, align_corners=ac), {"size": size}
        else:
            sf = [float(rng.choice([0.5, 1.0, 1.3, 1.5, 2.0, 2.5, 3.0])) for _ in range(2)]
            if int(x.shape[2] * sf[0]) < 1 or int(x.shape[3] * sf[1]) < 1:
                continue
            ref, attrs = F.interpolate(t, scale_factor=sf, mode=mode, align_corners=ac), {"scales": sf}
        attrs.update(method=mode, align_corners=int(bool(ac)), layout=inp[1])
        got = run(lambda b, v: b.upsample(v[0], **attrs), [inp])
        tally.check(ref.numpy(), to_nchw(got) if nhwc else got, f"{x.shape} {attrs}")
    tally.done(120 * MORE)


def test_shape_ops():
    rng = np.random.default_rng(8)
    tally = Tally("shape ops")
    for i in range(150 * MORE):
        rank = int(rng.integers(1, 5))
        x = rng.standard_normal([int(v) for v in rng.integers(1, 7, size=rank)]).astype(np.float32)
        t = torch.from_numpy(x)
        pb, pe = [int(v) for v in rng.integers(0, 3, size=rank)], [int(v) for v in rng.integers(0, 3, size=rank)]
        value = float(rng.uniform(-2, 2))
        tally.check(F.pad(t, [p for d in reversed(range(rank)) for p in (pb[d], pe[d])], value=value).numpy(),
                    run(lambda b, v: b.pad(v[0], pads=pb + pe, value=value), [(x, None)]), f"pad {x.shape}")
        perm = [int(v) for v in rng.permutation(rank)]
        tally.check(x.transpose(perm), run(lambda b, v: b.transpose(v[0], axes=perm), [(x, None)]), f"transpose {perm}")
        tally.check(x.reshape(-1), run(lambda b, v: b.reshape(v[0], shape=[-1]), [(x, None)]), "reshape")
        sa = int(rng.integers(0, rank))
        ea = int(rng.integers(sa, rank))
        tally.check(torch.flatten(t, sa, ea).numpy(),
                    run(lambda b, v: b.flatten(v[0], start_axis=sa, end_axis=ea), [(x, None)]), f"flatten {sa}..{ea}")
        y = rng.standard_normal(list(x.shape[:-1]) + [int(rng.integers(1, 6))]).astype(np.float32)
        tally.check(torch.cat([t, torch.from_numpy(y)], -1).numpy(),
                    run(lambda b, v: b.concat(v[0], v[1], axis=-1), [(x, None), (y, None)]), f"concat {x.shape} {y.shape}")
    tally.done(750 * MORE)
