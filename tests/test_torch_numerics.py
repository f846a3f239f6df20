"""The numerics contract's rounding and PyTorch's memory formats.

- The probe: which rounding the installed PyTorch uses, recorded on every graph
  the PyTorch frontends make.
- Each rounding mode on every kernel it affects, against a NumPy model of the
  formula (docs/numerics.md, "Rounding"), driven through the builder, so the
  mode the installed PyTorch does not use is tested too; every target gives
  the same bytes.
- Memory format: an explicit contiguous(memory_format=...) / to(memory_format=...)
  changes which formula a quantized op uses; traced and exported models give
  PyTorch's bytes.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import mera
from mera import ir
from mera.frontend._torch_numerics import probe_rounding

torch.backends.quantized.engine = "fbgemm"

ROUNDINGS = list(ir.ROUNDINGS)
F32 = np.float32


@pytest.fixture(autouse=True)
def one_torch_thread():
    torch.backends.quantized.engine = "fbgemm"
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ---- the probe -------------------------------------------------------------------

def test_probe_names_the_installed_torch_rounding():
    """The probe's answer is what torch.quantize_per_tensor does on a tie with an odd zero point."""
    mode = probe_rounding()
    assert mode in ir.ROUNDINGS
    q = int(torch.quantize_per_tensor(torch.tensor([0.125]), 0.25, 1, torch.quint8).int_repr()[0])  # x/s = 0.5
    assert q == {ir.ROUNDING_ZP_BEFORE: 2, ir.ROUNDING_ZP_AFTER: 1}[mode]  # rne(1.5) or rne(0.5) + 1


def test_frontends_record_the_probed_rounding_and_others_the_default(tmp_path):
    class M(torch.nn.Module):
        def forward(self, x):
            return torch.quantize_per_tensor(x, 0.25, 1, torch.quint8).dequantize()

    x = torch.randn(1, 8)
    for src in (torch.jit.trace(M(), x), torch.export.export(M(), (x,))):
        mod, _ = mera.frontend.from_pytorch(src, [("input0", (1, 8))])
        assert mod.rounding == probe_rounding()
        assert f'numerics {{rounding="{probe_rounding()}"}}' in str(mod)
    b = ir.Builder("b")
    assert b.finish(b.relu(b.input("x", [2]))).rounding == ir.DEFAULT_ROUNDING == ir.ROUNDING_ZP_AFTER


def test_rounding_survives_serialization_and_bad_modes_are_errors():
    b = ir.Builder("s", rounding=ir.ROUNDING_ZP_BEFORE)
    mod = b.finish(b.quantize(b.input("x", [4]), scale=0.5, zero_point=3, dtype="uint8"))
    back = ir.Module.deserialize(mod.serialize())
    assert back.rounding == ir.ROUNDING_ZP_BEFORE and str(back) == str(mod)
    with pytest.raises(mera.MeraError, match="graph 'bad': rounding must be one of"):
        ir.Builder("bad", rounding="half_away")


def test_deploy_directory_and_program_carry_the_rounding(tmp_path):
    b = ir.Builder("d", rounding=ir.ROUNDING_ZP_BEFORE)
    x = b.input("x", [1, 4, 4, 8], qparams=(0.25, 3), dtype="uint8", layout="NHWC")
    mod = b.finish(b.avg_pool2d(x, kernel=[2, 2], strides=[2, 2], layout="NHWC"))
    with mera.build_config(target="IP"):
        mera.build(mod, {}, output_dir=str(tmp_path / "d"), host_arch="x86", layout="NHWC")
    import json
    info = json.loads((tmp_path / "d" / "deploy.json").read_text())
    assert info["rounding"] == ir.ROUNDING_ZP_BEFORE


# ---- each rounding mode on every affected kernel ---------------------------------

def rne(v):
    return np.rint(v)


def quantize_model(x, scale, zp, rounding, lo=0, hi=255):
    """torch.quantize_per_tensor under a rounding: fbgemm's array Quantize (docs/numerics.md section 1)."""
    inv = F32(1) / F32(scale)
    if rounding == ir.ROUNDING_ZP_BEFORE:
        t = (x.astype(np.float64) * np.float64(inv) + zp).astype(F32)  # one FMA: exact product, one rounding
        q = rne(t)
    else:
        q = rne((x * inv).astype(F32)) + zp
    return np.clip(q, lo, hi).astype(np.int64)


def run_graph(build, inputs, rounding, target="InterpreterHw"):
    b = ir.Builder("t", rounding=rounding)
    vals = [b.input(f"x{i}", a.shape, str(a.dtype), qparams=q, layout=lay) for i, (a, q, lay) in enumerate(inputs)]
    mod = b.finish(build(b, vals))
    rt = mera.compile(mod, {}, target=target)
    return rt.set_input({f"x{i}": a for i, (a, _, _) in enumerate(inputs)}).run().get_output(0).astype(np.int64)


# exact ties x/s = k + 1/2 with odd zero points, and ordinary values
TIE_X = ((np.arange(-60, 60, dtype=F32) + F32(0.5)) * F32(0.25)).reshape(1, 2, 6, 10)


@pytest.mark.parametrize("target", ["InterpreterHw", "Simulator"])
@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_quantize_requantize_and_add(rounding, target):
    rng = np.random.default_rng(1)
    x = np.concatenate([TIE_X.ravel(), rng.normal(0, 4, 120).astype(F32)]).reshape(2, 120)
    got = run_graph(lambda b, v: b.quantize(v[0], scale=0.25, zero_point=117, dtype="uint8"),
                    [(x, None, None)], rounding)
    assert np.array_equal(got, quantize_model(x, 0.25, 117, rounding))
    # requantize: the exact dequantize 0.25 * (q - 4), then the same quantize; (q - 4) / 2 ties when odd
    q = rng.integers(0, 256, (1, 1, 4, 64)).astype(np.uint8)
    v = F32(0.25) * (q.astype(np.int64) - 4).astype(F32)
    want = quantize_model(v, 0.5, 9, rounding)
    got = run_graph(lambda b, vs: b.requantize(vs[0], out_scale=0.5, out_zero_point=9), [(q, (0.25, 4), "NHWC")],
                    rounding, target)
    assert np.array_equal(got, want) and (want != quantize_model(v, 0.5, 9, ROUNDINGS[0] if rounding != ROUNDINGS[0]
                                                                   else ROUNDINGS[1])).any()
    # add of 40 elements: all in the scalar body (rows under 64 elements), dequantize_val + quantize_val
    a = rng.integers(0, 256, (1, 1, 1, 40)).astype(np.uint8)
    c = rng.integers(0, 256, (1, 1, 1, 40)).astype(np.uint8)
    da = F32(0.25) * (a.astype(np.int64) - 3).astype(F32)
    dc = F32(0.25) * (c.astype(np.int64) - 5).astype(F32)
    t = ((da + dc) * (F32(1) / F32(0.5))).astype(F32)
    sq = rne((t + F32(11)).astype(F32)) if rounding == ir.ROUNDING_ZP_BEFORE else rne(t) + 11
    got = run_graph(lambda b, vs: b.add(vs[0], vs[1], out_scale=0.5, out_zero_point=11, layout="NHWC")
                    if "layout" in [a["name"] for a in ir.op_info("add")["attrs"]]
                    else b.add(vs[0], vs[1], out_scale=0.5, out_zero_point=11),
                    [(a, (0.25, 3), "NHWC"), (c, (0.25, 5), "NHWC")], rounding, target)
    assert np.array_equal(got, np.clip(sq, 0, 255))


def mean_tie_input(rng, shape):
    """uint8 data whose 2x2 (and global) means are often exactly k + 1/2."""
    return rng.integers(0, 256, shape).astype(np.uint8)


@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_pools_and_mean_nhwc(rounding):
    """NHWC (channels-last) pools: acc = sum(q) - z*n; avg_pool2d's first C/16*16 channels and
    adaptive pool's first C/8*8 use the vector lane (rne then + z, every rounding); the other
    channels go through quantize_val / quantize_fbgemm, which follow the rounding."""
    rng = np.random.default_rng(2)
    s, z = 0.25, 3
    x = mean_tie_input(rng, (1, 4, 4, 20))  # C = 20: channels 16..19 (avg) and 16..19 (adaptive) are tails
    acc = x.astype(np.int64).reshape(1, 2, 2, 2, 2, 20).sum(axis=(2, 4)) - z * 4  # 2x2 windows
    lane = rne((acc.astype(F32) * F32(F32(s) / F32(s) / F32(4))).astype(F32)) + z
    inv = F32(1) / (F32(1) / (F32(s) / F32(s) / F32(4)))
    if rounding == ir.ROUNDING_ZP_BEFORE:
        val = rne(((acc.astype(F32) * inv).astype(F32) + F32(z)).astype(F32))
        fbg = rne((acc.astype(np.float64) * np.float64(inv) + z).astype(F32))
    else:
        val = rne((acc.astype(F32) * inv).astype(F32)) + z
        fbg = val
    avg = np.where(np.arange(20) < 16, lane, val)
    ada = np.where(np.arange(20) < 16, fbg, val)
    inp = [(x, (s, z), "NHWC")]
    got = run_graph(lambda b, v: b.avg_pool2d(v[0], kernel=[2, 2], strides=[2, 2], layout="NHWC",
                                              torch_memory_format="channels_last"), inp, rounding)
    assert np.array_equal(got, np.clip(avg, 0, 255))
    got = run_graph(lambda b, v: b.adaptive_avg_pool2d(v[0], output_size=[2, 2], layout="NHWC",
                                                       torch_memory_format="channels_last"), inp, rounding)
    assert np.array_equal(got, np.clip(ada, 0, 255))
    # the same ties with an even zero point: both modes agree
    assert (avg != lane).any() == (rounding == ir.ROUNDING_ZP_BEFORE)


@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_mean_through_float(rounding):
    """Channels-last mean over H, W (NHWC data, axes [1, 2]): dequantize, float mean, quantize_fbgemm
    (docs/numerics.md section 7). With s = 1/4 and 2x2 spatial positions every step is exact in float,
    so the NumPy model is the formula itself."""
    rng = np.random.default_rng(4)
    x = rng.integers(0, 256, (1, 2, 2, 24)).astype(np.uint8)
    y = (F32(0.25) * (x.astype(np.int64) - 3).astype(F32)).sum(axis=(1, 2), keepdims=True) / F32(4)
    want = quantize_model(y.astype(F32), 0.25, 5, rounding)
    got = run_graph(lambda b, v: b.mean(v[0], axes=[1, 2], keepdims=1, out_scale=0.25, out_zero_point=5,
                                        torch_memory_format="channels_last"), [(x, (0.25, 3), "NHWC")], rounding)
    assert np.array_equal(got, want)
    other = quantize_model(y.astype(F32), 0.25, 5, [r for r in ROUNDINGS if r != rounding][0])
    assert (want != other).any()  # the case has ties on which the modes differ


# ---- memory format: contiguous / to / clone ---------------------------------------

class ChannelsLastOps(torch.nn.Module):
    """A quantized input made channels-last explicitly, then the op whose formula depends on it."""

    def __init__(self, op, how):
        super().__init__()
        self.op, self.how = op, how

    def forward(self, x):
        q = torch.quantize_per_tensor(x, 0.25, 3, torch.quint8)
        if self.how == "contiguous":
            q = q.contiguous(memory_format=torch.channels_last)
        elif self.how == "to":
            q = q.to(memory_format=torch.channels_last)
        else:  # there and back: contiguous() makes it NCHW-contiguous again
            q = q.contiguous(memory_format=torch.channels_last).contiguous()
        if self.op == "avg_pool2d":
            y = F.avg_pool2d(q, 2)
        elif self.op == "adaptive_avg_pool2d":
            y = F.adaptive_avg_pool2d(q, 3)
        elif self.op == "mean":
            y = torch.mean(q, [2, 3], keepdim=True)
        elif self.op == "add":
            y = torch.ops.quantized.add(q, q, 0.5, 11)
        else:
            y = torch.ops.quantized.cat([q, q], 1, 0.5, 11)
        return y.dequantize()


@pytest.mark.parametrize("op, source", [(op, "trace") for op in ("avg_pool2d", "adaptive_avg_pool2d", "mean", "add",
                                                                  "cat")] +
                         # torch.export has no fake kernels for quantized::add and quantized::cat
                         [(op, "export") for op in ("avg_pool2d", "adaptive_avg_pool2d", "mean")])
def test_explicit_channels_last_gives_pytorch_bytes(op, source):
    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.integers(0, 256, (1, 20, 6, 6)).astype(np.float32) * 0.25 - 0.75)
    hows = ["contiguous", "to", "back"] if source == "trace" else ["contiguous", "back"]
    for how in hows:
        m = ChannelsLastOps(op, how)
        ref = m(x).numpy()
        src = torch.jit.trace(m, x) if source == "trace" else torch.export.export(m, (x,))
        for layout in ("NCHW", "NHWC"):
            xin = x.numpy() if layout == "NCHW" else np.ascontiguousarray(x.numpy().transpose(0, 2, 3, 1))
            mod, params = mera.frontend.from_pytorch(src, [("input0", xin.shape)], layout=layout)
            fmt = [n["attrs"].get("torch_memory_format") for n in mod.nodes() if n["op"] not in ("quantize",
                                                                                                 "dequantize")]
            assert fmt and all(f == ("contiguous" if how == "back" else "channels_last") for f in fmt if f), fmt
            out = mera.compile(mod, params, target="InterpreterHw")(xin)[0]
            if out.ndim == 4 and layout == "NHWC" and out.shape != ref.shape:
                out = out.transpose(0, 3, 1, 2)
            assert np.array_equal(out, ref), (how, layout, int((out != ref).sum()), ref.size)


def test_the_channels_last_formula_matters_here():
    """Without the explicit format the tie case gives other bytes: the test above can fail."""
    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.integers(0, 256, (1, 20, 6, 6)).astype(np.float32) * 0.25 - 0.75)
    cl, plain = ChannelsLastOps("avg_pool2d", "contiguous")(x), ChannelsLastOps("avg_pool2d", "back")(x)
    assert (cl != plain).sum() > 0


def test_memory_format_errors_name_the_op():
    class To(torch.nn.Module):
        def forward(self, x):
            return x.to(torch.float16).float()

    with pytest.raises(mera.UnsupportedError, match="only a change of memory format"):
        mera.frontend.from_pytorch(torch.jit.trace(To(), torch.randn(1, 2, 3, 3)), [("input0", (1, 2, 3, 3))])
