"""More PyTorch quantized ops: torch.tanh of a quantized tensor (qtanh_kernel, fixed output parameters),
dynamic quantization (quantized::linear_dynamic / linear_relu_dynamic, quantize_dynamic's LSTM) and
quantized::layer_norm. Randomized, seeded differential tests against the installed PyTorch (fbgemm engine)
on InterpreterHw and the Simulator: bytes (or float bits) equal, except the LSTM's float gates (a stated
tolerance)."""

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn

import mera
from mera import relay

torch.backends.quantized.engine = "fbgemm"

_QDT = {"uint8": torch.quint8, "int8": torch.qint8}


def _nhwc(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)) if a.ndim == 4 else a


def _compile(traced, shape, layout: str):
    """(InterpreterHw, Simulator) callables on NCHW-ordered float input, giving NCHW-ordered output."""
    in_shape = (shape[0], shape[2], shape[3], shape[1]) if layout == "NHWC" and len(shape) == 4 else tuple(shape)
    mod, params = relay.frontend.from_pytorch(traced, [("input0", in_shape)], layout=layout)
    hw = mera.compile(mod, params, target="InterpreterHw")
    with mera.build_config(target="Simulator"):
        sim = mera.compile(mod, params)

    def wrap(f):
        def run(x: np.ndarray) -> np.ndarray:
            y = f(_nhwc(x) if layout == "NHWC" else x)[0]
            return y.transpose(0, 3, 1, 2) if layout == "NHWC" and y.ndim == 4 else y
        return run
    return wrap(hw), wrap(sim)


class QuantOp(nn.Module):
    """quantize_per_tensor -> op -> dequantize."""

    def __init__(self, op, scale, zp, dtype):
        super().__init__()
        self.op, self.scale, self.zp, self.dtype = op, scale, zp, dtype

    def forward(self, x):
        return self.op(torch.quantize_per_tensor(x, self.scale, self.zp, self.dtype)).dequantize()


def _floats_of(q: np.ndarray, s: float, z: int) -> np.ndarray:
    """Float inputs that quantize_per_tensor maps back to the bytes q."""
    return ((q.astype(np.int64) - z) * np.float64(s)).astype(np.float32)


# -- tanh ---------------------------------------------------------------------------------------

def _tanh_boundary_scales():
    """Input scales s near x_k = atanh((k + 1/2) / 128), where an output byte changes: with the input
    byte 1 and zero point 0 the dequantized value is s itself."""
    out = []
    for k in range(-127, 127):
        x = np.float32(math.atanh((k + 0.5) / 128))
        if x > 0:
            out.append(float(x))
    return out


def _tanh_cases():
    rng = np.random.default_rng(31)
    cases = []
    for i in range(16):
        dtype = "int8" if i % 3 == 2 else "uint8"
        if i < 4:
            s = float(rng.choice([0.25, 0.125, 1 / 64, 1 / 128]))
        else:
            s = float(rng.uniform(0.002, 0.15))
        z = int(rng.integers(0, 256)) - (128 if dtype == "int8" else 0)
        cases.append((s, z, dtype))
    b = _tanh_boundary_scales()
    for i, j in enumerate(rng.choice(len(b), 6, replace=False)):
        cases.append((b[j], 0, "int8" if i % 2 else "uint8"))
    return cases


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("case", _tanh_cases())
def test_tanh_matches_pytorch_every_byte(case, layout):
    """torch.tanh of a quantized tensor: every input byte through the vector body (a tensor of 512, two
    whole vector chunks) and the scalar body (tensors of 64 bytes and 1 byte, shorter than a chunk),
    each compared with PyTorch byte for byte; output parameters fixed (2/256 with zero point 128 / 0)."""
    s, z, dtype = case
    lo = -128 if dtype == "int8" else 0
    for shape in ((1, 4, 8, 16), (1, 1, 8, 8), (1, 1, 1, 1)):
        n = int(np.prod(shape))
        m = QuantOp(torch.tanh, s, z, _QDT[dtype]).eval()
        x0 = _floats_of((np.arange(n) % 256 + lo).reshape(shape), s, z)
        with torch.no_grad():
            traced = torch.jit.trace(m, torch.from_numpy(x0))
        q = torch.quantize_per_tensor(torch.from_numpy(x0), s, z, _QDT[dtype])
        assert torch.tanh(q).q_scale() == 2 / 256 and torch.tanh(q).q_zero_point() == (128 if lo == 0 else 0)
        hw, sim = _compile(traced, shape, layout)
        for start in range(0, 256, n):
            x = _floats_of((np.arange(start, start + n) % 256 + lo).reshape(shape), s, z)
            with torch.no_grad():
                ref = m(torch.from_numpy(x)).numpy()
            got = hw(x)
            np.testing.assert_array_equal(got, ref, err_msg=f"shape {shape}, bytes from {start}")
            np.testing.assert_array_equal(sim(x), got)


def _qtanh_graph_bytes(scales, n: int) -> np.ndarray:
    """mera's qtanh of the int8 bytes [1, -1, 1, ...] (n of them) under each input scale (zero point 0),
    one graph input per scale, on InterpreterHw: [len(scales), n] output bytes."""
    from mera import ir
    b = ir.Builder("qtanh_scales")
    outs = [b.qtanh(b.input(f"x{i}", [n], "int8", qparams=(float(s), 0))) for i, s in enumerate(scales)]
    while len(outs) > 1:  # concat takes up to 64 inputs; every qtanh output has the same parameters
        outs = [b.concat(*outs[j:j + 64], axis=0) if len(outs[j:j + 64]) > 1 else outs[j]
                for j in range(0, len(outs), 64)]
    f = mera.compile(b.finish(outs[0]), b.params, target="InterpreterHw")
    data = np.array([1, -1] * (n // 2), np.int8)
    return np.asarray(f(*([data] * len(scales)))[0]).reshape(len(scales), n)


def test_tanh_every_float_near_an_output_boundary():
    """The float tanh decides a byte only where tanh(x) lies within an ulp or so of a rounding boundary
    (k + 1/2) / 128 of the output. This walks every float x within 96 ulps of each boundary's atanh
    (far wider than the window where a 1-ulp difference can matter, ~32 floats at the steepest), both
    signs, through PyTorch's quantized tanh and mera's qtanh (input byte +-1, zero point 0, scale x:
    dequantized exactly to +-x), in the vector body (256 bytes: Sleef's tanhf_u10) and the scalar body
    (2 bytes: libm's tanhf). A correctly rounded tanh gets 4 of these bytes wrong; Sleef's agrees."""
    xs = []
    for x0 in _tanh_boundary_scales():
        b = np.float32(x0).view(np.int32)
        xs.append(np.arange(b - 96, b + 97, dtype=np.int32).view(np.float32))
    xs = np.concatenate(xs)
    assert xs.size > 20000
    for n in (256, 2):
        data = torch.tensor([1, -1] * (n // 2), dtype=torch.int8)
        want = np.stack([torch.tanh(torch._make_per_tensor_quantized_tensor(data, float(x), 0)).int_repr().numpy()
                         for x in xs])
        got = np.concatenate([_qtanh_graph_bytes(xs[i:i + 1024], n) for i in range(0, xs.size, 1024)])
        bad = np.nonzero((got != want).any(axis=1))[0]
        assert bad.size == 0, f"{n} bytes: {[(float(xs[i]), got[i, :2].tolist(), want[i, :2].tolist()) for i in bad[:8]]}"


class _TanhModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.Tanh()
        self.conv2 = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.conv2(self.act(self.conv(x)))


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("mode", ["eager", "fx"])
def test_tanh_in_quantized_models(mode, layout):
    """nn.Tanh between quantized convs, eager PTQ (QuantStub/DeQuantStub) and FX (its fixed-qparams
    observer): both leave aten::tanh on a quantized, channels-last tensor."""
    from torch.ao.quantization import DeQuantStub, QuantStub, convert, get_default_qconfig, \
        get_default_qconfig_mapping, prepare
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
    torch.manual_seed(5)
    x = torch.randn(1, 3, 9, 13)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if mode == "eager":
            m = nn.Sequential(QuantStub(), _TanhModel(), DeQuantStub()).eval()
            m.qconfig = get_default_qconfig("fbgemm")
            prepare(m, inplace=True)
            for _ in range(3):
                m(torch.randn(2, 3, 9, 13) * 2)
            c = convert(m)
        else:
            p = prepare_fx(_TanhModel().eval(), get_default_qconfig_mapping("fbgemm"), (x,))
            for _ in range(3):
                p(torch.randn(2, 3, 9, 13) * 2)
            c = convert_fx(p)
        with torch.no_grad():
            traced = torch.jit.trace(c, x)
            ref = c(x).numpy()
    assert "aten::tanh" in [n.kind() for n in traced.inlined_graph.nodes()]
    hw, sim = _compile(traced, tuple(x.shape), layout)
    got = hw(x.numpy())
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(sim(x.numpy()), got)


# -- linear_dynamic -----------------------------------------------------------------------------

def _dynamic_linear(rng, k: int, n: int, per_channel: bool, bias: bool, relu: bool):
    import torch.ao.nn.intrinsic.quantized.dynamic as nniqd
    import torch.ao.nn.quantized.dynamic as nnqd
    g = torch.Generator().manual_seed(int(rng.integers(1 << 30)))
    wf = torch.randn(n, k, generator=g) * float(rng.uniform(0.05, 1.0))
    if per_channel:
        wf = wf * torch.rand(n, 1, generator=g) * 3
        scales = (wf.abs().amax(1) / 127).clamp(min=1e-6).double()
        wq = torch.quantize_per_channel(wf, scales, torch.zeros(n, dtype=torch.long), 0, torch.qint8)
    else:
        wq = torch.quantize_per_tensor(wf, float(wf.abs().max()) / 127, 0, torch.qint8)
    lin = (nniqd.LinearReLU if relu else nnqd.Linear)(k, n, bias, dtype=torch.qint8)
    lin.set_weight_bias(wq, torch.randn(n, generator=g) if bias else None)
    return lin


# input ranges that reach each branch of ChooseQuantizationParams: both signs, all positive, all negative,
# all zero (the 0.1 scale), tiny (the 6.1e-5 cut, each of its three forms), huge
_DYN_INPUTS = ["normal", "positive", "negative", "zero", "tiny", "tiny_pos", "tiny_neg", "huge", "ties"]


def _dyn_input(rng, kind: str, shape):
    x = rng.standard_normal(shape).astype(np.float32)
    if kind == "positive":
        x = np.abs(x) + 0.5
    elif kind == "negative":
        x = -np.abs(x) - 0.1
    elif kind == "zero":
        x = np.zeros(shape, np.float32)
    elif kind == "tiny":
        x = x * np.float32(1e-3)
    elif kind == "tiny_pos":
        x = np.abs(x) * np.float32(1e-3)
    elif kind == "tiny_neg":
        x = -np.abs(x) * np.float32(1e-3)
    elif kind == "huge":
        x = x * np.float32(1e4)
    elif kind == "ties":  # a power-of-two range: x / scale lands on halves often
        x = np.round(x * 8).astype(np.float32) / np.float32(16)
        x.flat[0], x.flat[1] = -4.0, 3.96875
    return x


@pytest.mark.parametrize("seed", range(24))
def test_linear_dynamic_matches_fbgemm(seed):
    """torch.ao.nn.quantized.dynamic.Linear / LinearReLU (quantized::linear_dynamic, linear_relu_dynamic,
    reduce_range as the module passes it): float output bit for bit, per-tensor and per-channel weights,
    with and without bias, 2-D and 3-D inputs, odd sizes, every input-range branch."""
    rng = np.random.default_rng(9000 + seed)
    k, n = int(rng.integers(1, 70)), int(rng.integers(1, 40))
    per_channel, bias, relu = bool(seed % 2), seed % 5 != 4, seed % 3 == 2
    lin = _dynamic_linear(rng, k, n, per_channel, bias, relu)
    shape = (int(rng.integers(1, 9)), k) if seed % 4 < 2 else (int(rng.integers(1, 4)), int(rng.integers(1, 6)), k)
    x = _dyn_input(rng, _DYN_INPUTS[seed % len(_DYN_INPUTS)], shape)
    with torch.no_grad():
        traced = torch.jit.trace(lin, torch.from_numpy(x))
    kinds = [nd.kind() for nd in traced.inlined_graph.nodes()]
    assert ("quantized::linear_relu_dynamic" if relu else "quantized::linear_dynamic") in kinds, kinds
    hw, sim = _compile(traced, shape, "NCHW")
    for trial in range(3):  # one compiled graph, inputs of different ranges: the parameters are chosen per run
        xt = x if trial == 0 else _dyn_input(rng, _DYN_INPUTS[int(rng.integers(len(_DYN_INPUTS)))], shape)
        with torch.no_grad():
            ref = lin(torch.from_numpy(xt)).numpy()
        got = hw(xt)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got.view(np.int32), ref.view(np.int32))
        np.testing.assert_array_equal(sim(xt).view(np.int32), got.view(np.int32))


class _MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(37, 64), nn.Linear(64, 19), nn.Linear(19, 5, bias=False)

    def forward(self, x):
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


@pytest.mark.parametrize("mode", ["eager", "fx"])
@pytest.mark.parametrize("per_channel", [False, True])
def test_quantize_dynamic_model(per_channel, mode):
    """An MLP (Linear layers, the relu between them float) dynamically quantized by quantize_dynamic (eager)
    or prepare_fx/convert_fx with a dynamic qconfig: bit for bit on InterpreterHw and the Simulator."""
    from torch.ao.quantization import QConfigMapping, default_dynamic_qconfig, per_channel_dynamic_qconfig, \
        quantize_dynamic
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
    torch.manual_seed(3)
    qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
    x = torch.randn(6, 37) * 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if mode == "eager":
            m = quantize_dynamic(_MLP().eval(), {nn.Linear: qconfig}, dtype=torch.qint8)
        else:
            m = convert_fx(prepare_fx(_MLP().eval(), QConfigMapping().set_object_type(nn.Linear, qconfig), (x,)))
    with torch.no_grad():
        traced = torch.jit.trace(m, x)
        ref = m(x).numpy()
    assert [nd.kind() for nd in traced.inlined_graph.nodes()].count("quantized::linear_dynamic") == 3
    hw, sim = _compile(traced, tuple(x.shape), "NCHW")
    got = hw(x.numpy())
    np.testing.assert_array_equal(got.view(np.int32), ref.view(np.int32))
    np.testing.assert_array_equal(sim(x.numpy()).view(np.int32), got.view(np.int32))


# -- dynamic LSTM -------------------------------------------------------------------------------

# (input size, hidden size, layers, bidirectional, batch_first, steps, batch)
_LSTM_CASES = [(8, 16, 1, False, True, 5, 2), (5, 7, 2, True, False, 9, 3), (3, 33, 1, True, True, 4, 1),
               (16, 8, 3, False, False, 12, 2), (1, 5, 1, False, True, 70, 1), (12, 20, 2, True, True, 6, 4)]


@pytest.mark.parametrize("case", _LSTM_CASES)
def test_dynamic_lstm_within_float_rounding(case):
    """quantize_dynamic's LSTM (aten::quantized_lstm): linear_dynamic for both projections (the input one over
    the whole sequence), float gates. The gates' sigmoid and tanh are mera's float kernels, not ATen's, so the
    outputs differ from PyTorch's in the last bits: measured max |diff| 1.2e-7 over these cases
    (docs/frontends.md); 1e-6 is the bound checked. Output, h_n and c_n, InterpreterHw and Simulator."""
    from torch.ao.quantization import quantize_dynamic
    i_size, hidden, layers, bi, bf, steps, batch = case
    torch.manual_seed(sum(case))

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(i_size, hidden, num_layers=layers, bidirectional=bi, batch_first=bf)

        def forward(self, x):
            return self.lstm(x)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = quantize_dynamic(Model().eval(), {nn.LSTM}, dtype=torch.qint8)
        x = torch.randn((batch, steps, i_size) if bf else (steps, batch, i_size)) * 1.5
        with torch.no_grad():
            traced = torch.jit.trace(m, x, check_trace=False)
            y, (h, c) = m(x)
    assert "aten::quantized_lstm" in [nd.kind() for nd in traced.inlined_graph.nodes()]
    mod, params = relay.frontend.from_pytorch(traced, [("input0", tuple(x.shape))])
    hw = mera.compile(mod, params, target="InterpreterHw")(x.numpy())
    with mera.build_config(target="Simulator"):
        sim = mera.compile(mod, params)(x.numpy())
    for got, s, ref in zip(hw, sim, (y, h, c)):
        assert got.shape == tuple(ref.shape)
        np.testing.assert_allclose(got, ref.numpy(), rtol=0, atol=1e-6)
        np.testing.assert_array_equal(s, got)


# -- layer_norm ---------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(16))
def test_layer_norm_matches_fbgemm(seed):
    """torch.ao.nn.quantized.LayerNorm (quantized::layer_norm): integer sums, PyTorch's float steps, the first
    N - N % 64 elements of each group through the vector quantize and the rest through quantize_val; with and
    without affine parameters, 1-3 normalized axes, both dtypes, InterpreterHw and Simulator."""
    import torch.ao.nn.quantized as nnq
    rng = np.random.default_rng(11000 + seed)
    dtype = "int8" if seed % 4 == 3 else "uint8"
    rank = int(rng.integers(2, 5))
    shape = tuple(int(rng.integers(1, 5)) for _ in range(rank - 1)) + (int(rng.choice([1, 7, 64, 65, 100, 131])),)
    k = int(rng.integers(1, min(rank, 3) + 1))
    norm_shape = list(shape[rank - k:])
    affine = seed % 3 != 2
    s, z = float(rng.uniform(0.01, 0.2)), int(rng.integers(0, 256)) - (128 if dtype == "int8" else 0)
    out_zp = int(rng.integers(0, 256)) - (128 if dtype == "int8" else 0)
    g = torch.Generator().manual_seed(seed)
    w = nn.Parameter(torch.randn(norm_shape, generator=g) * 1.5) if affine else None
    b = nn.Parameter(torch.randn(norm_shape, generator=g)) if affine else None
    ln = nnq.LayerNorm(norm_shape, w, b, scale=float(rng.uniform(0.01, 0.1)), zero_point=out_zp,
                       eps=float(rng.choice([1e-5, 1e-3])), elementwise_affine=affine)
    m = QuantOp(ln, s, z, _QDT[dtype]).eval()
    x = torch.randn(shape) * float(rng.uniform(0.3, 3)) + float(rng.uniform(-1, 1))
    with torch.no_grad():
        traced = torch.jit.trace(m, x)
        ref = m(x).numpy()
    assert "quantized::layer_norm" in [nd.kind() for nd in traced.inlined_graph.nodes()]
    hw, sim = _compile(traced, shape, "NCHW")
    got = hw(x.numpy())
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(sim(x.numpy()), got)
