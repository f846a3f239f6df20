"""Fast quantized elementwise, conversion and pooling kernels against the reference kernels, byte for byte.

Covers add, mul, the tabulated activations (leaky_relu, hardswish,
hardsigmoid, sigmoid, gelu), quantize, dequantize, requantize, max_pool2d,
avg_pool2d, adaptive_avg_pool2d, mean, concat and upsample
(csrc/kernels/fast/elementwise_q.c, pool_q.c, mean_q.c, concat_q.c, upsample_q.c),
each under both rounding modes (zero point before and after rounding). Every case is compiled with
``MERA_REFERENCE_KERNELS=1`` and once per fast path this CPU can run
(AVX-512, AVX2, portable C), each run with 1, 2 and 7 worker threads;
every output must equal the reference's bytes. Shapes are random with odd
sizes, rows longer and shorter than ATen's 64-element vector step (so both
of its bodies occur), per-channel broadcasts over the innermost axis,
scalars, general broadcasts and walks in the other memory order (PyTorch's
channels-last tensors imported NCHW, and the reverse: the fast kernels run
the vector body everywhere and redo the tails of PyTorch's rows with the
scalar body), and tensors large enough to be split across threads.
"""

import os

import numpy as np
import pytest

from mera import ir

from test_kernels_fast import MORE, PATHS, Tally, compile_with

THREADS = (1, 2, 7)
ROUNDINGS = (ir.ROUNDING_ZP_BEFORE, ir.ROUNDING_ZP_AFTER)


def run_everywhere(monkeypatch, tally, build, inputs, what, rounding=ir.DEFAULT_ROUNDING):
    """Build a graph of that rounding with build(b, [input values]); compare every fast path and thread
    count to the reference."""
    b = ir.Builder("t", rounding=rounding)
    vals = [b.input(f"x{i}", a.shape, str(a.dtype), qparams=q, layout=lay) for i, (a, q, lay) in enumerate(inputs)]
    mod = b.finish(build(b, vals))
    arrays = [a for a, _, _ in inputs]
    ref = compile_with(monkeypatch, mod, {}, reference=True)(*arrays)[0]
    for path, mask in PATHS:
        rt = compile_with(monkeypatch, mod, {}, mask=mask)
        for t in THREADS:
            monkeypatch.setenv("MERA_NUM_THREADS", str(t))
            tally.check(path, ref, rt(*arrays)[0], f"{what} {rounding} threads={t}")
        monkeypatch.delenv("MERA_NUM_THREADS")


def rand_q(rng, shape, dt):
    lo, hi = (0, 256) if dt == "uint8" else (-128, 128)
    return rng.integers(lo, hi, size=shape).astype(dt)


def rand_qparams(rng, dt, extreme=False):
    s = float(rng.choice([1e-30, 1e30, 1e-4])) if extreme else float(np.exp(rng.uniform(np.log(1e-3), np.log(0.5))))
    z = int(rng.integers(0, 256)) if dt == "uint8" else int(rng.integers(-128, 128))
    return s, z


def rand_shape(rng):
    rank = int(rng.integers(1, 5))
    shape = [int(v) for v in rng.integers(1, 9, size=rank)]
    r = rng.random()
    if r < 0.4:
        shape[-1] = int(rng.integers(30, 300))  # rows with vector bodies and scalar tails
    elif r < 0.5:
        shape = [1, 37, 29, 67][-rank:] if rank > 1 else [70001]  # split across threads
    return tuple(shape)


def other_shape(rng, shape):
    """The second operand: the same shape, per-channel over the innermost axis, a scalar or a general broadcast."""
    r = rng.random()
    if r < 0.4:
        return shape
    if r < 0.7:
        return (shape[-1],) if rng.random() < 0.5 else (1,) * (len(shape) - 1) + (shape[-1],)
    if r < 0.85:
        return (1,)
    return tuple(1 if (i % 2 == 0 and s > 1) else s for i, s in enumerate(shape))


def layout_args(rng, shape):
    """(layout, torch_memory_format) for rank-4 data: both orders, both walks."""
    if len(shape) != 4:
        return None, "auto"
    return [("NHWC", "auto"), ("NHWC", "contiguous"), (None, "auto"), (None, "channels_last")][int(rng.integers(0, 4))]


@pytest.mark.parametrize("op", ["add", "mul"])
def test_binary_fast_equals_reference(monkeypatch, op):
    rng = np.random.default_rng(100 + (op == "mul"))
    tally = Tally(op)
    for i in range(12 * MORE):
        dt, odt = [str(rng.choice(["uint8", "int8"])) for _ in range(2)]
        shape = rand_shape(rng)
        bshape = other_shape(rng, shape)
        if i % 2:
            shape, bshape = bshape, shape  # the broadcast operand first
        lay, mf = layout_args(rng, np.broadcast_shapes(shape, bshape))
        extreme = i % 6 == 5
        qa, qb = rand_qparams(rng, dt, extreme), rand_qparams(rng, dt)
        so, zo = rand_qparams(rng, odt, extreme)
        relu = "relu" if rng.random() < 0.3 else "none"
        ins = [(rand_q(rng, shape, dt), qa, lay if len(shape) == 4 else None),
               (rand_q(rng, bshape, dt), qb, lay if len(bshape) == 4 else None)]
        run_everywhere(monkeypatch, tally,
                       lambda b, v: b.op(op, v[0], v[1], activation=relu, torch_memory_format=mf, out_scale=so,
                                         out_zero_point=zo, out_dtype=odt),
                       ins, f"{shape} {bshape} {dt}->{odt} {lay} {mf} relu={relu}", rounding=ROUNDINGS[i % 2])
    tally.done(12 * MORE * len(THREADS))


@pytest.mark.parametrize("op", ["add", "mul", "hardswish"])
def test_other_memory_order_fast_equals_reference(monkeypatch, op):
    """A channels-last PyTorch tensor held NCHW (ResNet's adds imported with layout NCHW), and an NCHW one
    held NHWC: which elements take ATen's scalar body follows PyTorch's order. Power-of-two scales and odd
    zero points make exact ties, where the two bodies round apart under zero_point_before_rounding, so an
    element given the wrong body shows."""
    rng = np.random.default_rng(130 + ["add", "mul", "hardswish"].index(op))
    tally = Tally(op + " other order")
    cases = 0
    for i in range(8 * MORE):
        n, c, h, w = int(rng.integers(1, 3)), int(rng.integers(1, 150)), int(rng.integers(1, 9)), int(rng.integers(1, 9))
        lay, mf = [("NHWC", "contiguous"), (None, "channels_last")][i % 2]
        shape = (n, h, w, c) if lay == "NHWC" else (n, c, h, w)
        dt = str(rng.choice(["uint8", "int8"]))
        z = lambda: int(rng.integers(0, 128)) * 2 + 1 if dt == "uint8" else int(rng.integers(-64, 64)) * 2 + 1  # noqa: E731
        so = float(2.0 ** int(rng.integers(-3, 1)))
        if op == "hardswish":
            ins = [(rand_q(rng, shape, dt), (so / 2, z()), lay)]
            build = lambda b, v: b.op(op, v[0], out_scale=so, out_zero_point=z(), torch_memory_format=mf)  # noqa: E731
        else:
            bshape = shape if rng.random() < 0.7 else (1,)
            ins = [(rand_q(rng, shape, dt), (so / 2, z()), lay),
                   (rand_q(rng, bshape, dt), (so / 2 if op == "add" else 1.0, z()), lay if len(bshape) == 4 else None)]
            build = lambda b, v: b.op(op, v[0], v[1], torch_memory_format=mf, out_scale=so,  # noqa: E731
                                      out_zero_point=z(), out_dtype=dt)
        run_everywhere(monkeypatch, tally, build, ins, f"{shape} {dt} {lay} {mf}", rounding=ROUNDINGS[0])
        cases += 1
    tally.done(cases * len(THREADS))


ACTS = ["leaky_relu", "hardswish", "hardsigmoid", "sigmoid", "gelu"]


@pytest.mark.parametrize("op", ACTS)
def test_activation_fast_equals_reference(monkeypatch, op):
    rng = np.random.default_rng(110 + ACTS.index(op))
    tally = Tally(op)
    for i in range(6 * MORE):
        dt = str(rng.choice(["uint8", "int8"]))
        shape = rand_shape(rng)
        lay, mf = layout_args(rng, shape)
        s, z = rand_qparams(rng, dt)
        attrs = {"alpha": float(rng.uniform(0.01, 0.5))} if op == "leaky_relu" else {}
        if op != "leaky_relu":
            so, zo = rand_qparams(rng, dt)
            attrs.update(out_scale=so, out_zero_point=zo, torch_memory_format=mf)
        if op == "gelu":
            attrs["approximate"] = ("none", "tanh")[i % 2 == 0]
        run_everywhere(monkeypatch, tally, lambda b, v: b.op(op, v[0], **attrs),
                       [(rand_q(rng, shape, dt), (s, z), lay)], f"{shape} {dt} {lay} {mf}", rounding=ROUNDINGS[i % 2])
    tally.done(6 * MORE * len(THREADS))


def test_conversions_fast_equal_reference(monkeypatch):
    rng = np.random.default_rng(120)
    tally = Tally("quantize/dequantize/requantize")
    for i in range(6 * MORE):
        dt, odt = [str(rng.choice(["uint8", "int8"])) for _ in range(2)]
        shape = rand_shape(rng)
        s, z = rand_qparams(rng, dt)
        so, zo = rand_qparams(rng, odt, extreme=i % 3 == 2)
        x = (rng.standard_normal(shape) * 3).astype(np.float32)
        x.flat[:: 7] = np.float32(np.nan) if i % 2 else np.float32(np.inf)  # NaN and inf take the clamps
        if i % 3 == 0:  # exact ties: x / scale = k + 0.5
            x = ((rng.integers(-300, 300, size=shape) + 0.5) * np.float32(so)).astype(np.float32)
        run_everywhere(monkeypatch, tally, lambda b, v: b.quantize(v[0], scale=so, zero_point=zo, dtype=odt),
                       [(x, None, None)], f"quantize {shape} {odt}", rounding=ROUNDINGS[i % 2])
        q = rand_q(rng, shape, dt)
        run_everywhere(monkeypatch, tally, lambda b, v: b.dequantize(v[0]), [(q, (s, z), None)],
                       f"dequantize {shape} {dt}", rounding=ROUNDINGS[i % 2])
        run_everywhere(monkeypatch, tally,
                       lambda b, v: b.requantize(v[0], out_scale=so, out_zero_point=zo, out_dtype=odt),
                       [(q, (s, z), None)], f"requantize {shape} {dt}->{odt}", rounding=ROUNDINGS[i % 2])
    tally.done(18 * MORE * len(THREADS) // 3)


def test_max_pool2d_fast_equals_reference(monkeypatch):
    rng = np.random.default_rng(130)
    tally = Tally("max_pool2d")
    for i in range(10 * MORE):
        dt = str(rng.choice(["uint8", "int8"]))
        n, c = int(rng.integers(1, 3)), int(rng.choice([1, 3, 13, 16, 24, 33, 57, 64, 100]))
        h, w = [int(v) for v in rng.integers(1, 30, size=2)]
        kh, kw = [int(v) for v in rng.integers(1, 4, size=2)]
        sh, sw = [int(v) for v in rng.integers(1, 3, size=2)]
        dh, dw = [int(v) for v in rng.integers(1, 3, size=2)]
        pad = [int(rng.integers(0, k // 2 + 1)) for k in (kh, kw, kh, kw)]
        if (h + pad[0] + pad[2] - dh * (kh - 1) - 1) < 0 or (w + pad[1] + pad[3] - dw * (kw - 1) - 1) < 0:
            continue
        nhwc = i % 4 != 3
        shape = (n, h, w, c) if nhwc else (n, c, h, w)
        q = rand_q(rng, shape, dt)
        run_everywhere(monkeypatch, tally,
                       lambda b, v: b.max_pool2d(v[0], kernel=[kh, kw], strides=[sh, sw], padding=pad,
                                                 dilation=[dh, dw], layout="NHWC" if nhwc else "NCHW"),
                       [(q, rand_qparams(rng, dt), "NHWC" if nhwc else None)],
                       f"{shape} k={kh}x{kw} s={sh},{sw} d={dh},{dw} pad={pad} {dt}", rounding=ROUNDINGS[i % 2])
    tally.done(6 * MORE * len(THREADS))


def test_concat_fast_equals_reference(monkeypatch):
    rng = np.random.default_rng(140)
    tally = Tally("concat")
    for i in range(10 * MORE):
        dt = str(rng.choice(["uint8", "int8"]))
        rank = int(rng.integers(1, 5))
        base = [int(v) for v in rng.integers(1, 7, size=rank)]
        axis = int(rng.integers(-rank, rank))
        lay, mf = layout_args(rng, base)
        ins = []
        for _ in range(int(rng.integers(1, 5))):
            shape = list(base)
            shape[axis] = int(rng.choice([1, 3, 8, 13, 40, 64]))
            qp = rand_qparams(rng, dt) if i % 3 else (0.05, 7 if dt == "uint8" else -3)  # some equal to the output's
            ins.append((rand_q(rng, tuple(shape), dt), qp, lay))
        so, zo = (0.05, 7 if dt == "uint8" else -3) if i % 3 == 0 else rand_qparams(rng, dt)
        run_everywhere(monkeypatch, tally,
                       lambda b, v: b.concat(*v, axis=axis, out_scale=so, out_zero_point=zo, torch_memory_format=mf),
                       ins, f"{[x[0].shape for x in ins]} axis={axis} {dt} {lay} {mf}", rounding=ROUNDINGS[i % 2])
    tally.done(10 * MORE * len(THREADS))


def test_transpose_fast_equals_reference(monkeypatch):
    """Transposes of ranks 1 to 6 with random permutations (negative axes among them), extents of 1 that the
    fast kernel drops, axes it merges, blocks larger than its 32x32 tiles, and elements of 1, 2, 4 and 8
    bytes, quantized and float; the kernel is not the reference."""
    from mera import _core

    assert _core.kernel_name("transpose", True) != "ref" and _core.kernel_name("transpose", False) != "ref"
    rng = np.random.default_rng(190)
    tally = Tally("transpose")
    dtypes = ["uint8", "int8", "float32", "int32", "int64"]
    for i in range(30 * MORE):
        dt = dtypes[i % len(dtypes)]
        rank = int(rng.integers(1, 7))
        shape = [int(rng.choice([1, 2, 3, 5, 17, 33, 70])) for _ in range(rank)]
        while int(np.prod(shape)) > 300_000:
            shape[int(np.argmax(shape))] //= 2
        perm = [int(v) for v in rng.permutation(rank)]
        if i % 5 == 0 and rank > 1:
            perm = [p - rank if rng.random() < 0.5 else p for p in perm]  # negative axes
        if dt in ("uint8", "int8"):
            x, qp = rand_q(rng, shape, dt), rand_qparams(rng, dt)
        elif dt.startswith("float"):
            x, qp = rng.standard_normal(shape).astype(dt), None
        else:
            x, qp = rng.integers(-2**31, 2**31, size=shape).astype("int32"), None

        def build(b, v):
            if dt == "int64":  # 8-byte elements: widened in the graph, narrowed back for the comparison
                return b.op("cast", b.transpose(b.op("cast", v[0], to="int64"), axes=perm), to="int32")
            return b.transpose(v[0], axes=perm)
        run_everywhere(monkeypatch, tally, build, [(x, qp, None)], f"{dt} {shape} axes={perm}")
    tally.done(30 * MORE * len(THREADS))


def test_adaptive_avg_pool2d_fast_equals_reference(monkeypatch):
    rng = np.random.default_rng(150)
    tally = Tally("adaptive_avg_pool2d")
    for i in range(10 * MORE):
        dt = str(rng.choice(["uint8", "int8"]))
        n, c = int(rng.integers(1, 3)), int(rng.choice([1, 7, 8, 16, 37, 300, 2000]))
        h, w = [int(v) for v in rng.integers(1, 20, size=2)]
        oh, ow = int(rng.integers(1, h + 1)), int(rng.integers(1, w + 1))
        if rng.random() < 0.5:  # a few large windows: fbgemm's FMA and quantize_val's two roundings differ more often
            oh, ow = int(rng.integers(1, 3)), int(rng.integers(1, 3))
        nhwc = i % 4 != 3
        mf = str(rng.choice(["auto", "contiguous", "channels_last"]))
        s, z = rand_qparams(rng, dt)
        so, zo = (s, z) if i % 3 == 0 else rand_qparams(rng, dt)  # equal parameters: both PyTorch paths
        shape = (n, h, w, c) if nhwc else (n, c, h, w)
        run_everywhere(monkeypatch, tally,
                       lambda b, v: b.adaptive_avg_pool2d(v[0], output_size=[oh, ow], layout="NHWC" if nhwc else "NCHW",
                                                          torch_memory_format=mf, out_scale=so, out_zero_point=zo),
                       [(rand_q(rng, shape, dt), (s, z), "NHWC" if nhwc else None)],
                       f"{shape} -> {oh}x{ow} {dt} {mf} same_q={i % 3 == 0}", rounding=ROUNDINGS[i % 2])
    tally.done(10 * MORE * len(THREADS))


def test_worker_pool_survives_fork():
    """A forked child (a DataLoader worker, say) has none of the parent's pool threads: its runs
    still split, on threads of its own, and give the same bytes."""
    import mera

    b = ir.Builder("t")
    x = b.input("x", (1, 200000), "uint8", qparams=(0.1, 3))
    with mera.build_config(target="InterpreterHw", num_threads=4):
        runner = mera.compile(b.finish(b.add(x, x, out_scale=0.2, out_zero_point=1)), {})
    data = (np.arange(200000) % 251).astype(np.uint8)[None]
    want = runner(data)[0]
    pid = os.fork()
    if pid == 0:  # the child: exit status 0 when its bytes agree
        os._exit(0 if np.array_equal(runner(data)[0], want) else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert np.array_equal(runner(data)[0], want)


def test_fast_kernels_serve_both_roundings():
    """Every quantized elementwise, convert and pool fast kernel is selected under both rounding modes
    (ONNX and TFLite imports and torch >= 2.14 carry zero_point_after_rounding)."""
    from mera import _core

    for op, quantized in [("add", True), ("mul", True), ("leaky_relu", True), ("hardswish", True),
                          ("hardsigmoid", True), ("sigmoid", True), ("quantize", False), ("dequantize", True),
                          ("requantize", True), ("max_pool2d", True), ("avg_pool2d", True),
                          ("adaptive_avg_pool2d", True), ("upsample", True), ("concat", True), ("mean", True)]:
        for r in ROUNDINGS:
            assert _core.kernel_name(op, quantized, r) != "ref", (op, r)


def test_avg_pool2d_fast_equals_reference(monkeypatch):
    """NHWC and NCHW data, both of PyTorch's paths (channels-last and contiguous), count_include_pad both
    ways, divisor_override, ceil_mode, odd channel counts around the 16-channel vector block."""
    rng = np.random.default_rng(160)
    tally = Tally("avg_pool2d")
    for i in range(24 * MORE):
        dt = str(rng.choice(["uint8", "int8"]))
        n, c = int(rng.integers(1, 3)), int(rng.choice([1, 3, 12, 15, 16, 17, 27, 33, 100, 300]))
        h, w = [int(v) for v in rng.integers(1, 24, size=2)]
        k = [int(rng.integers(1, min(h, 5) + 1)), int(rng.integers(1, min(w, 5) + 1))]
        st = [int(v) for v in rng.integers(1, 4, size=2)]
        pd = [int(rng.integers(0, k[0] // 2 + 1)), int(rng.integers(0, k[1] // 2 + 1))]
        ceil, cip = int(rng.random() < 0.4), int(rng.random() < 0.5)
        dov = int(rng.integers(1, 20)) if rng.random() < 0.2 else 0
        nhwc = i % 3 != 2
        mf = str(rng.choice(["auto", "contiguous", "channels_last"]))
        s, z = rand_qparams(rng, dt)
        z |= 1  # odd zero points: the two roundings differ on ties
        # equal or power-of-two scales make exact ties acc * m = k + 1/2 frequent
        so, zo = [(s, z), (s * 2, z), (s / 4, z - 2 if z >= 2 else z + 2)][i % 4] if i % 4 < 3 else rand_qparams(rng, dt)
        shape = (n, h, w, c) if nhwc else (n, c, h, w)
        attrs = dict(kernel=k, strides=st, padding=pd + pd, ceil_mode=ceil, count_include_pad=cip,
                     divisor_override=dov, layout="NHWC" if nhwc else "NCHW", torch_memory_format=mf,
                     out_scale=so, out_zero_point=zo)
        run_everywhere(monkeypatch, tally, lambda b, v: b.op("avg_pool2d", v[0], **attrs),
                       [(rand_q(rng, shape, dt), (s, z), "NHWC" if nhwc else None)],
                       f"{shape} {attrs}", rounding=ROUNDINGS[i // 4 % 2])
    tally.done(24 * MORE * len(THREADS))


def test_upsample_fast_equals_reference(monkeypatch):
    """nearest and bilinear, sizes and scale factors (1.3 leaves small sizes unchanged), align_corners,
    NHWC and NCHW data, both PyTorch kernels, the same or other output parameters (extreme scales among
    them: overflow and NaN), odd channel counts around the 8-channel vector block and the AVX-512
    path's 16 lanes."""
    rng = np.random.default_rng(170)
    tally = Tally("upsample")
    for i in range(24 * MORE):
        dt = str(rng.choice(["uint8", "int8"]))
        n, c = int(rng.integers(1, 3)), int(rng.choice([1, 3, 7, 8, 9, 16, 17, 21, 33, 64, 100]))
        h, w = [int(v) for v in rng.integers(1, 12, size=2)]
        method = "nearest" if i % 2 else "bilinear"
        if rng.random() < 0.5:
            attrs = {"size": [int(rng.integers(1, 30)), int(rng.integers(1, 30))]}
        else:
            attrs = {"scales": [float(rng.choice([0.5, 1.0, 1.3, 1.5, 2.0, 2.5, 3.0])) for _ in range(2)]}
            if int(h * attrs["scales"][0]) < 1 or int(w * attrs["scales"][1]) < 1:
                attrs = {"size": [h, w]}  # the same size: the copy paths
        nhwc = i % 3 != 2
        mf = str(rng.choice(["auto", "contiguous", "channels_last"]))
        s, z = rand_qparams(rng, dt)
        z |= 1  # odd zero points: the two roundings differ on ties
        so, zo = (s, z) if i % 4 < 2 else ((s * 2, z) if i % 4 == 2 else rand_qparams(rng, dt, extreme=i % 8 == 7))
        attrs.update(method=method, align_corners=int(method == "bilinear" and rng.random() < 0.5),
                     layout="NHWC" if nhwc else "NCHW", torch_memory_format=mf, out_scale=so, out_zero_point=zo)
        shape = (n, h, w, c) if nhwc else (n, c, h, w)
        run_everywhere(monkeypatch, tally, lambda b, v: b.op("upsample", v[0], **attrs),
                       [(rand_q(rng, shape, dt), (s, z), "NHWC" if nhwc else None)],
                       f"{shape} {attrs}", rounding=ROUNDINGS[i // 4 % 2])
    tally.done(24 * MORE * len(THREADS))


def test_mean_fast_equals_reference(monkeypatch):
    """The global spatial mean (ShuffleNet's x.mean([2, 3])): NHWC and NCHW data held channels-last or
    contiguous in PyTorch (the float cascade_sum path and the integer inner-dim path), the same or other
    output parameters, keepdims, axes in any order and negative, channel counts around the 4- and 32-column
    blocks of cascade_sum, maps large enough for its cascade levels; and means over other axes, which the
    fast kernel leaves to the reference."""
    rng = np.random.default_rng(180)
    tally = Tally("mean")
    for i in range(30 * MORE):
        dt = str(rng.choice(["uint8", "int8"]))
        n, c = int(rng.integers(1, 4)), int(rng.choice([1, 2, 3, 4, 5, 7, 8, 9, 31, 32, 33, 65, 100, 1024]))
        h, w = [int(v) for v in rng.integers(1, 12, size=2)]
        if i % 5 == 0:  # cascade levels: 16 rows a step, 4 levels
            h, w = int(rng.integers(16, 80)), int(rng.integers(16, 80))
            c = int(rng.choice([3, 8, 40]))
        nhwc = i % 2 == 0
        mf = str(rng.choice(["auto", "contiguous", "channels_last"]))
        s, z = rand_qparams(rng, dt)
        z |= 1  # odd zero points: the two roundings differ on ties
        so, zo = (s, z) if i % 3 else rand_qparams(rng, dt)
        spatial = [1, 2] if nhwc else [2, 3]
        if i % 7 == 6:  # not a spatial mean: the reference's other geometries
            axes = [int(v) for v in rng.choice(4, size=int(rng.integers(1, 4)), replace=False)]
        else:
            axes = [a - 4 if rng.random() < 0.3 else a for a in spatial[::int(rng.choice([1, -1]))]]
        shape = (n, h, w, c) if nhwc else (n, c, h, w)
        attrs = dict(axes=axes, keepdims=int(rng.random() < 0.5), torch_memory_format=mf, out_scale=so,
                     out_zero_point=zo)
        run_everywhere(monkeypatch, tally, lambda b, v: b.op("mean", v[0], **attrs),
                       [(rand_q(rng, shape, dt), (s, z), "NHWC" if nhwc else None)],
                       f"{shape} {attrs} {dt}", rounding=ROUNDINGS[i // 2 % 2])
    tally.done(30 * MORE * len(THREADS))


def test_mean_fast_sums_in_pytorch_order(monkeypatch):
    """Ties decided by the float sum's last bit: scale 0.1 (no dequantized value is exact) and every
    channel's integer sum an odd multiple of half the pixel count, so each exact mean lies halfway between
    two output levels and the order of the float additions decides each byte. C = 40 and 5 give whole
    column blocks (multi_row_sum) and the rest (row_sum): summing any column in the other order shows."""
    rng = np.random.default_rng(181)
    tally = Tally("mean ties")
    for i, (c, nhwc) in enumerate([(40, True), (40, False), (5, True), (13, False), (100, True), (37, True)]):
        h, w = [(4, 6), (8, 8), (6, 11), (16, 20), (5, 9), (7, 7)][i]
        hw = h * w
        q = rng.integers(60, 200, size=(2, hw, c))
        for n in range(2):  # make each channel's sum of (q - z) an odd multiple of hw / 2
            for k in range(c):
                want = (q[n, :, k].sum() // hw) * hw + hw // 2 if hw % 2 == 0 else q[n, :, k].sum()
                q[n, 0, k] += want - q[n, :, k].sum()
        q = np.clip(q, 0, 255).astype(np.uint8).reshape(2, h, w, c)
        data = q if nhwc else np.ascontiguousarray(q.transpose(0, 3, 1, 2))
        attrs = dict(axes=[1, 2] if nhwc else [2, 3], keepdims=1, torch_memory_format="channels_last",
                     out_scale=0.1, out_zero_point=0)
        run_everywhere(monkeypatch, tally, lambda b, v: b.op("mean", v[0], **attrs),
                       [(data, (0.1, 0), "NHWC" if nhwc else None)], f"{data.shape} {attrs}",
                       rounding=ROUNDINGS[i % 2])
    tally.done(6 * len(THREADS))


def test_network_shaped_pools_and_adds_equal_reference(monkeypatch):
    """The shapes of ResNet-50's and MobileNetV2's non-conv ops (scaled down where the
    time matters): max_pool2d 3x3/2 with padding on 64 channels, adaptive_avg_pool2d of
    a 7x7 map to 1x1 over wide channels, and same-shape requantizing adds with and
    without relu whose output saturates at both ends (the SIMD loops' saturating
    narrowing), odd channel counts leaving tails, and an extreme scale (the loops' checked
    path with min and clamp) -- on every path and thread count."""
    rng = np.random.default_rng(170)
    tally = Tally("network-shaped")
    for i, (dt, odt) in enumerate([("uint8", "uint8"), ("int8", "int8"), ("uint8", "int8"), ("int8", "uint8")]):
        hw, c = int(rng.choice([28, 31])), int(rng.choice([64, 67, 96]))
        q = rand_q(rng, (1, hw, hw, c), dt)
        run_everywhere(monkeypatch, tally,
                       lambda b, v: b.max_pool2d(v[0], kernel=[3, 3], strides=[2, 2], padding=[1, 1, 1, 1],
                                                 dilation=[1, 1], layout="NHWC"),
                       [(q, rand_qparams(rng, dt), "NHWC")], f"max_pool2d {q.shape} {dt}", rounding=ROUNDINGS[i % 2])
        c = int(rng.choice([2048, 1280, 1001]))
        so, zo = rand_qparams(rng, dt)
        run_everywhere(monkeypatch, tally,
                       lambda b, v: b.adaptive_avg_pool2d(v[0], output_size=[1, 1], layout="NHWC",
                                                          torch_memory_format="channels_last", out_scale=so,
                                                          out_zero_point=zo),
                       [(rand_q(rng, (1, 7, 7, c), dt), rand_qparams(rng, dt), "NHWC")],
                       f"adaptive_avg_pool2d 7x7x{c} {dt}", rounding=ROUNDINGS[i % 2])
        for relu in ("relu", "none"):
            shape = (1, int(rng.choice([14, 15])), int(rng.choice([14, 9])), int(rng.choice([256, 160, 33])))
            qa, qb = rand_qparams(rng, dt), rand_qparams(rng, dt)
            so, zo = rand_qparams(rng, odt, extreme=relu == "none" and i == 3)
            so /= 4.0  # outputs past both ends of the range
            run_everywhere(monkeypatch, tally,
                           lambda b, v: b.op("add", v[0], v[1], activation=relu, out_scale=so, out_zero_point=zo,
                                             out_dtype=odt),
                           [(rand_q(rng, shape, dt), qa, "NHWC"), (rand_q(rng, shape, dt), qb, "NHWC")],
                           f"add {shape} {dt}->{odt} relu={relu} so={so}", rounding=ROUNDINGS[i % 2])
    tally.done(16 * len(THREADS))
