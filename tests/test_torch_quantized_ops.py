"""PyTorch quantized kernels that mera maps to ops of their own (docs/numerics.md 5a):
quantized::batch_norm{1,2,3}d[_relu], add_scalar[_relu], mul_scalar[_relu]. Randomized,
seeded differential tests against the real quantized PyTorch ops (fbgemm engine) on
InterpreterHw and the Simulator, in both layouts, and an eager-PTQ model that uses them."""

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


def _run(traced, x: torch.Tensor, layout: str):
    """(InterpreterHw output, Simulator output) in PyTorch's NCHW order."""
    xin = _nhwc(x.numpy()) if layout == "NHWC" else x.numpy()
    mod, params = relay.frontend.from_pytorch(traced, [("input0", xin.shape)], layout=layout)
    hw = mera.compile(mod, params, target="InterpreterHw")(xin)[0]
    with mera.build_config(target="Simulator"):
        sim = mera.compile(mod, params)(xin)[0]
    if layout == "NHWC" and hw.ndim == 4:
        hw, sim = hw.transpose(0, 3, 1, 2), sim.transpose(0, 3, 1, 2)
    return hw, sim


def _input_qparams(rng):
    """A random input scale and zero point, sometimes a 'nice' scale that makes exact ties common."""
    s = float(rng.choice([0.25, 0.125, 1 / 64])) if rng.random() < 0.3 else float(rng.uniform(0.004, 0.2))
    return s, int(rng.integers(0, 256))


class QuantOp(nn.Module):
    """quantize_per_tensor -> op -> dequantize; the op is a callable on the quantized tensor."""

    def __init__(self, op, scale, zp, dtype, keep=None):
        super().__init__()
        self.op, self.scale, self.zp, self.dtype = op, scale, zp, dtype
        self.keep = keep  # an nn.Module the op uses, registered so trace sees its tensors

    def forward(self, x):
        return self.op(torch.quantize_per_tensor(x, self.scale, self.zp, self.dtype)).dequantize()


def _random_bn(rng, c: int, rank: int, relu: bool, out_scale: float, out_zp: int):
    import torch.ao.nn.quantized as nnq
    import torch.ao.nn.intrinsic.quantized as nniq
    cls = {(3, False): nnq.BatchNorm2d, (4, False): nnq.BatchNorm2d, (5, False): nnq.BatchNorm3d,
           (4, True): nniq.BNReLU2d, (5, True): nniq.BNReLU3d}[(rank, relu)]
    bn = cls(c)
    g = torch.Generator().manual_seed(int(rng.integers(1 << 30)))
    with torch.no_grad():
        bn.weight.copy_(torch.randn(c, generator=g) * 1.5)
        bn.bias.copy_(torch.randn(c, generator=g))
        bn.running_mean.copy_(torch.randn(c, generator=g) * 2)
        bn.running_var.copy_(torch.rand(c, generator=g) * 3 + 0.01)
    bn.eps = float(rng.choice([1e-5, 1e-3]))
    bn.scale, bn.zero_point = torch.tensor(out_scale), torch.tensor(out_zp)
    return bn.eval()


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("seed", range(8))
def test_batch_norm2d_matches_fbgemm(seed, layout):
    rng = np.random.default_rng(seed)
    relu = bool(seed % 2)
    dtype = "int8" if seed % 4 == 3 else "uint8"
    c = int(rng.choice([1, 3, 7, 8, 13, 32, 40, 45]))
    shape = (int(rng.integers(1, 3)), c, int(rng.integers(1, 10)), int(rng.integers(1, 10)))
    s, z = _input_qparams(rng)
    if dtype == "int8":
        z -= 128
    out_zp = int(rng.integers(0, 256)) - (128 if dtype == "int8" else 0)
    bn = _random_bn(rng, c, 4, relu, float(rng.uniform(0.01, 0.1)), out_zp)
    m = QuantOp(bn, s, z, _QDT[dtype], bn).eval()
    x = torch.randn(shape) * 3
    with torch.no_grad():
        traced = torch.jit.trace(m, x)
        ref = m(x).numpy()
    assert any(n.kind().startswith("quantized::batch_norm2d") for n in traced.inlined_graph.nodes())
    hw, sim = _run(traced, x, layout)
    np.testing.assert_array_equal(hw, ref)
    np.testing.assert_array_equal(sim, hw)


@pytest.mark.parametrize("seed", range(4))
def test_batch_norm3d_matches_fbgemm(seed):
    rng = np.random.default_rng(100 + seed)
    c = int(rng.choice([3, 8, 33]))
    shape = (1, c, int(rng.integers(1, 4)), int(rng.integers(1, 6)), int(rng.integers(1, 6)))
    s, z = _input_qparams(rng)
    bn = _random_bn(rng, c, 5, bool(seed % 2), float(rng.uniform(0.01, 0.1)), int(rng.integers(0, 256)))
    m = QuantOp(bn, s, z, torch.quint8, bn).eval()
    x = torch.randn(shape) * 3
    with torch.no_grad():
        traced = torch.jit.trace(m, x)
        ref = m(x).numpy()
    hw, sim = _run(traced, x, "NCHW")
    np.testing.assert_array_equal(hw, ref)
    np.testing.assert_array_equal(sim, hw)


# values that hit each branch of PyTorch's rules: add_scalar's in-range shift and both clamped
# sides (|value| / scale beyond the zero point's room), mul_scalar's positive, zero and negative
_SCALARS = [0.7, -0.3, 3.0, -4.5, 100.0, -100.0, 0.0, 1.0, 2.5e-3, 1e4]


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("op", ["add_scalar", "add_scalar_relu", "mul_scalar", "mul_scalar_relu"])
@pytest.mark.parametrize("seed", range(5))
def test_scalar_ops_match_fbgemm(op, seed, layout):
    rng = np.random.default_rng(1000 + seed)
    dtype = "int8" if seed % 3 == 2 else "uint8"
    shape = (1, int(rng.integers(1, 20)), int(rng.integers(1, 12)), int(rng.integers(1, 70)))
    s, z = _input_qparams(rng)
    if dtype == "int8":
        z -= 128
    x = torch.randn(shape) * 4
    fn = getattr(torch.ops.quantized, op)
    for value in _SCALARS[seed::5] + [float(rng.uniform(-5, 5))]:
        m = QuantOp(lambda q, v=value: fn(q, v), s, z, _QDT[dtype]).eval()
        with torch.no_grad():
            traced = torch.jit.trace(m, x)
            ref = m(x).numpy()
        hw, sim = _run(traced, x, layout)
        np.testing.assert_array_equal(hw, ref, err_msg=f"{op}({value}) s={s} z={z} {dtype}")
        np.testing.assert_array_equal(sim, hw)


class EagerModel(nn.Module):
    """The eager-PTQ recipe with the ops of this file: a conv, a batch norm PyTorch keeps
    (not after a conv, so not fused), FloatFunctional add_scalar and mul_scalar, ELU."""

    def __init__(self):
        super().__init__()
        q = torch.ao.quantization
        self.quant, self.dequant = q.QuantStub(), q.DeQuantStub()
        self.conv = nn.Conv2d(3, 12, 3, padding=1)
        self.relu = nn.ReLU()
        self.bn = nn.BatchNorm2d(12)
        self.conv2 = nn.Conv2d(12, 10, 3, stride=2)
        self.bn2 = nn.BatchNorm2d(10)
        self.elu = nn.ELU(0.8)
        self.ff1 = torch.ao.nn.quantized.FloatFunctional()
        self.ff2 = torch.ao.nn.quantized.FloatFunctional()
        self.ff3 = torch.ao.nn.quantized.FloatFunctional()

    def forward(self, x):
        x = self.quant(x)
        y = self.bn(self.relu(self.conv(x)))
        y = self.ff1.add_scalar(y, 0.5)
        y = self.ff2.mul_scalar(self.conv2(y), -1.5)
        y = self.ff3.add_scalar(self.elu(self.bn2(y)), -2.0)
        return self.dequant(y)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_eager_ptq_model(layout):
    from torch.ao.quantization import convert, get_default_qconfig, prepare
    torch.manual_seed(0)
    m = EagerModel().eval()
    with torch.no_grad():
        for bn in (m.bn, m.bn2):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m.qconfig = get_default_qconfig("fbgemm")
        prepare(m, inplace=True)
        for _ in range(4):
            m(torch.randn(2, 3, 17, 19))
        convert(m, inplace=True)
    x = torch.randn(1, 3, 17, 19)
    with torch.no_grad():
        traced = torch.jit.trace(m, x)
        ref = m(x).numpy()
    kinds = {n.kind() for n in traced.inlined_graph.nodes()}
    assert {"quantized::batch_norm2d", "quantized::add_scalar", "quantized::mul_scalar",
            "quantized::elu"} <= kinds, kinds
    hw, sim = _run(traced, x, layout)
    np.testing.assert_array_equal(hw, ref)
    np.testing.assert_array_equal(sim, hw)
    # the partition report says which layers fall back to the host, and why
    xin = _nhwc(x.numpy()) if layout == "NHWC" else x.numpy()
    mod, params = relay.frontend.from_pytorch(traced, [("input0", xin.shape)], layout=layout)
    with mera.build_config(target="Simulator"):
        rep = mera.compile(mod, params).partition_report()
    host = {e["op"]: e["reason"] for e in rep if not e["on_dna"]}
    for op in ("batch_norm", "add_scalar", "mul_scalar", "elu"):
        assert "not in the DNA's op set" in host.get(op, ""), rep
    assert all(e["on_dna"] for e in rep if e["op"] == "conv2d"), rep


def test_batch_norm_every_input_byte_of_many_channels():
    """All 256 input bytes through 4096 channels of random statistics: PyTorch's fused
    multiply-add (the AVX2 kernel's fmadd, and its scalar tail's contracted a*x+b) differs
    from a rounded product then a sum on a few of these million elements."""
    import torch.ao.nn.quantized as nnq
    rng = np.random.default_rng(2)  # its statistics give 4 bytes where the two differ
    c, s, z = 4096, 0.0625, 131
    bn = _random_bn(rng, c, 4, False, 0.1, 128)
    with torch.no_grad():
        bn.running_var.copy_(torch.from_numpy(rng.uniform(0.01, 4, c).astype(np.float32)))
        bn.bias.copy_(torch.from_numpy(rng.uniform(-3, 3, c).astype(np.float32)))
    q = (np.arange(256)[None, :] + np.arange(c)[:, None]) % 256  # every byte in every channel
    x = torch.from_numpy(((q - z) * s).astype(np.float32).reshape(1, c, 16, 16))
    m = QuantOp(bn, s, z, torch.quint8, bn).eval()
    with torch.no_grad():
        assert torch.equal(torch.quantize_per_tensor(x, s, z, torch.quint8).int_repr().long(),
                           torch.from_numpy(q.reshape(1, c, 16, 16)))
        traced = torch.jit.trace(m, x)
        ref = m(x).numpy()
    xin = x.numpy()
    mod, params = relay.frontend.from_pytorch(traced, [("input0", xin.shape)])
    np.testing.assert_array_equal(mera.compile(mod, params, target="InterpreterHw")(xin)[0], ref)


class Unmapped(nn.Module):
    """Quantized ops mera does not import yet: each must be named in the one error."""

    def __init__(self):
        super().__init__()
        q = torch.ao.quantization
        self.quant, self.dequant = q.QuantStub(), q.DeQuantStub()
        self.ln = nn.LayerNorm([6])
        self.inorm = nn.InstanceNorm2d(4, affine=True)
        self.ff = torch.ao.nn.quantized.FloatFunctional()
        self.c3 = nn.Conv3d(4, 4, 1)

    def forward(self, x):
        x = self.quant(x)
        y = self.inorm(self.ln(x))
        return self.dequant(self.c3(self.ff.matmul(y, y.transpose(-1, -2)).unsqueeze(2)))


def test_unmapped_quantized_ops_are_all_named():
    from torch.ao.quantization import convert, get_default_qconfig, prepare
    m = Unmapped().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m.qconfig = get_default_qconfig("fbgemm")
        prepare(m, inplace=True)
        m(torch.randn(1, 4, 5, 6))
        convert(m, inplace=True)
        traced = torch.jit.trace(m, torch.randn(1, 4, 5, 6))
    with pytest.raises(mera.UnsupportedError) as e:
        relay.frontend.from_pytorch(traced, [("input0", (1, 4, 5, 6))])
    msg = str(e.value)
    for kind in ("quantized::layer_norm", "quantized::instance_norm", "quantized::matmul"):
        assert kind not in msg  # mapped (tests/test_torch_quantized_ops2.py, test_torch_quantized_ops3.py)
    for kind, where in (("quantized::conv3d", "in c3"),):
        line = next((ln for ln in msg.splitlines() if kind in ln), None)
        assert line is not None and where in line and "test_torch_quantized_ops.py" in line, msg


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("seed", range(6))
def test_softmax_matches_fbgemm(seed, layout):
    """quantized::softmax (what FX makes of nn.Softmax): dequantize, float softmax, quantize."""
    rng = np.random.default_rng(2000 + seed)
    shape = (int(rng.integers(1, 3)), int(rng.integers(1, 40)), int(rng.integers(1, 9)), int(rng.integers(1, 21)))
    dim = int(rng.integers(-4, 4))
    s, z = _input_qparams(rng)
    out_zp = int(rng.choice([0, 0, 17]))
    m = QuantOp(lambda q, d=dim, zo=out_zp: torch.ops.quantized.softmax(q, d, 1.0 / 256, zo), s, z, torch.quint8)
    x = torch.randn(shape) * 3
    with torch.no_grad():
        traced = torch.jit.trace(m.eval(), x)
        ref = m(x).numpy()
    hw, sim = _run(traced, x, layout)
    np.testing.assert_array_equal(hw, ref, err_msg=f"dim {dim} shape {shape}")
    np.testing.assert_array_equal(sim, hw)


class FxModel(nn.Module):
    """What FX convert makes of scalar arithmetic, PReLU and softmax: quantized::add/mul/add_relu with a
    Scalar operand (PyTorch's add_scalar/mul_scalar kernels), quantized::prelu and quantized::softmax."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 8, 1)
        self.softmax = nn.Softmax(dim=1)
        self.prelu = nn.PReLU(16)

    def forward(self, x):
        y = torch.relu(self.conv(x) + 0.25)
        y = self.prelu(self.bn(y * -0.75))  # a batch norm FX keeps (not after a conv)
        y = self.conv2(y) * 2.0 + -1.0
        return self.softmax(y)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_fx_quantized_model(layout):
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
    torch.manual_seed(1)
    m = FxModel().eval()
    x = torch.randn(1, 3, 13, 11)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = prepare_fx(m, get_default_qconfig_mapping("fbgemm"), (x,))
        for _ in range(4):
            p(torch.randn(2, 3, 13, 11))
        c = convert_fx(p)
        with torch.no_grad():
            traced = torch.jit.trace(c, x)
            ref = c(x).numpy()
    kinds = [n.kind() for n in traced.inlined_graph.nodes()]
    for k in ("quantized::add_relu", "quantized::mul", "quantized::add", "quantized::batch_norm2d",
              "quantized::softmax", "quantized::prelu"):
        assert k in kinds, kinds
    hw, sim = _run(traced, x, layout)
    np.testing.assert_array_equal(hw, ref)
    np.testing.assert_array_equal(sim, hw)


# (input scale, zero point, value) where add_scalar's output scale is clamped and the multiplier's
# last bit decides ties: f32(s_x) * (1 / f32(s_y)) gives PyTorch's bytes, f32(s_x / s_y) does not
_ADD_SCALAR_TIES = [(0.125, 255, -3.403239210717071), (0.05, 107, 11.786785510707112),
                    (0.3, 88, -86.94558727056632), (0.3, 117, 88.2751804898607)]


@pytest.mark.parametrize("relu", [False, True])
def test_add_scalar_every_byte_on_multiplier_ties(relu):
    q = np.arange(256)
    fn = torch.ops.quantized.add_scalar_relu if relu else torch.ops.quantized.add_scalar
    for s, z, value in _ADD_SCALAR_TIES:
        x = torch.from_numpy(((q - z) * s).astype(np.float32).reshape(1, 1, 16, 16))
        assert torch.equal(torch.quantize_per_tensor(x, s, z, torch.quint8).int_repr().reshape(-1).long(),
                           torch.from_numpy(q))
        m = QuantOp(lambda t, v=value: fn(t, v), s, z, torch.quint8).eval()
        with torch.no_grad():
            traced = torch.jit.trace(m, x)
            ref = m(x).numpy()
        hw, sim = _run(traced, x, "NCHW")
        np.testing.assert_array_equal(hw, ref, err_msg=f"s={s} z={z} value={value}")
        np.testing.assert_array_equal(sim, hw)


class QConv1d(nn.Module):
    def __init__(self, conv, scale, zp):
        super().__init__()
        self.conv, self.scale, self.zp = conv, scale, zp

    def forward(self, x):
        return self.conv(torch.quantize_per_tensor(x, self.scale, self.zp, torch.quint8)).dequantize()


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("seed", range(6))
def test_conv1d_matches_fbgemm(seed, layout):
    """quantized::conv1d[_relu] (fbgemm: conv2d on [N, C, 1, L]) as conv2d between reshapes."""
    import torch.ao.nn.quantized as nnq
    import torch.ao.nn.intrinsic.quantized as nniq
    rng = np.random.default_rng(3000 + seed)
    groups = int(rng.choice([1, 1, 2]))
    c_in, c_out = groups * int(rng.integers(1, 9)), groups * int(rng.integers(1, 9))
    k, stride = int(rng.integers(1, 6)), int(rng.integers(1, 3))
    pad, dil = int(rng.integers(0, 3)), int(rng.integers(1, 3))
    length = int(rng.integers((k - 1) * dil + 1, 40))
    cls = nniq.ConvReLU1d if seed % 2 else nnq.Conv1d
    conv = cls(c_in, c_out, k, stride=stride, padding=pad, dilation=dil, groups=groups)
    g = torch.Generator().manual_seed(seed)
    w = torch.quantize_per_channel(torch.randn(c_out, c_in // groups, k, generator=g) * 0.3,
                                   torch.rand(c_out, generator=g).double() * 0.01 + 0.002,
                                   torch.zeros(c_out, dtype=torch.long), 0, torch.qint8)
    conv.set_weight_bias(w, torch.randn(c_out, generator=g))
    conv.scale, conv.zero_point = float(rng.uniform(0.02, 0.2)), int(rng.integers(0, 256))
    s, z = _input_qparams(rng)
    m = QConv1d(conv, s, z).eval()
    x = torch.randn(int(rng.integers(1, 3)), c_in, length) * 2
    with torch.no_grad():
        traced = torch.jit.trace(m, x)
        ref = m(x).numpy()
    assert any(n.kind().startswith("quantized::conv1d") for n in traced.inlined_graph.nodes())
    hw, sim = _run(traced, x, layout)
    np.testing.assert_array_equal(hw, ref)
    np.testing.assert_array_equal(sim, hw)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("seed", range(6))
def test_prelu_matches_fbgemm(seed, layout):
    """quantized::prelu (what FX makes of nn.PReLU): integer products with the quantized slopes, then
    requantize_from_int; one slope or one per channel, both dtypes."""
    import torch.ao.nn.quantized as nnq
    rng = np.random.default_rng(4000 + seed)
    dtype = "int8" if seed % 3 == 2 else "uint8"
    c = int(rng.choice([1, 5, 16, 33]))
    n_slopes = 1 if seed % 2 else c
    shape = (int(rng.integers(1, 3)), c, int(rng.integers(1, 8)), int(rng.integers(1, 70)))
    s, z = _input_qparams(rng)
    if dtype == "int8":
        z -= 128
    g = torch.Generator().manual_seed(seed)
    slopes = torch.randn(n_slopes, generator=g) * 0.5
    w_scale = float(slopes.abs().max()) / 127 + 1e-3
    prelu = nnq.PReLU(float(rng.uniform(0.01, 0.1)), int(rng.integers(0, 256)) - (128 if dtype == "int8" else 0),
                      n_slopes)
    w_zp = int(rng.integers(100, 156)) - (128 if dtype == "int8" else 0)
    prelu.set_weight(torch.quantize_per_tensor(slopes, w_scale, w_zp, _QDT[dtype]))  # PyTorch: the input's dtype
    m = QuantOp(prelu, s, z, _QDT[dtype], prelu).eval()
    x = torch.randn(shape) * 3
    with torch.no_grad():
        traced = torch.jit.trace(m, x)
        ref = m(x).numpy()
    assert any(n.kind() == "quantized::prelu" for n in traced.inlined_graph.nodes())
    hw, sim = _run(traced, x, layout)
    np.testing.assert_array_equal(hw, ref)
    np.testing.assert_array_equal(sim, hw)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("seed", range(6))
def test_elu_matches_fbgemm(seed, layout):
    """quantized::elu (nn.ELU in eager PTQ and FX): a table per body, the vector one with Sleef's exp and the
    FMA dequantize, the scalar tail with libm's expf; the row split decides which element gets which."""
    import torch.ao.nn.quantized as nnq
    rng = np.random.default_rng(5000 + seed)
    dtype = "int8" if seed % 3 == 2 else "uint8"
    shape = (int(rng.integers(1, 3)), int(rng.integers(1, 20)), int(rng.integers(1, 9)), int(rng.integers(1, 70)))
    s, z = _input_qparams(rng)
    if dtype == "int8":
        z -= 128
    alpha = float(rng.choice([1.0, 0.5, 1.7]))
    elu = nnq.ELU(float(rng.uniform(0.005, 0.05)), int(rng.integers(0, 256)) - (128 if dtype == "int8" else 0), alpha)
    m = QuantOp(elu, s, z, _QDT[dtype], elu).eval()
    x = torch.randn(shape) * 3
    with torch.no_grad():
        traced = torch.jit.trace(m, x)
        ref = m(x).numpy()
    assert any(n.kind() == "quantized::elu" for n in traced.inlined_graph.nodes())
    hw, sim = _run(traced, x, layout)
    np.testing.assert_array_equal(hw, ref)
    np.testing.assert_array_equal(sim, hw)


def test_float_graph_with_the_new_ops_quantizes():
    """The IR ops are ordinary ops too: a float graph built with them runs on the Interpreter, and
    mera.Quantizer makes an int8 graph of it (batch_norm's scale and shift stay float, prelu's slopes are
    quantized as PyTorch's are) that InterpreterHw and the Simulator run to the same bytes."""
    from mera import ir
    rng = np.random.default_rng(9)
    scale, shift = rng.uniform(0.5, 2, 6).astype(np.float32), rng.normal(0, 1, 6).astype(np.float32)
    slopes = rng.uniform(0, 0.5, 6).astype(np.float32)
    b = ir.Builder("new_ops")
    x = b.input("x", (1, 6, 5, 7))
    y = b.op("batch_norm", x, b.const(scale, name="bn.scale"), b.const(shift, name="bn.shift"), axis=1, name="bn")
    y = b.op("prelu", y, b.const(slopes, name="slopes"), axis=1, name="prelu")
    y = b.op("elu", y, alpha=0.7, name="elu")
    y = b.op("add_scalar", y, value=0.3, name="adds")
    y = b.op("mul_scalar", y, value=-1.25, relu=1, name="muls")
    mod, params = b.finish(y), b.params
    xs = [rng.normal(0, 1, (1, 6, 5, 7)).astype(np.float32) for _ in range(4)]
    xv = xs[0]
    e = xv * scale[:, None, None] + shift[:, None, None]
    e = np.where(e > 0, e, slopes[:, None, None] * e)
    e = np.where(e > 0, e, (np.exp(e) - 1) * 0.7)
    e = np.maximum((e + np.float32(0.3)) * np.float32(-1.25), 0)
    ref = mera.compile(mod, params, target="Interpreter")(xv)[0]
    np.testing.assert_allclose(ref, e, rtol=1e-5, atol=1e-6)
    q = mera.Quantizer((mod, params))
    q.calibrate(xs)
    qmod, qparams = q.quantize()
    ops = {n["op"] for n in qmod.nodes()}
    assert {"batch_norm", "prelu", "elu", "add_scalar", "mul_scalar"} <= ops, ops
    hw = mera.compile(qmod, qparams, target="InterpreterHw")(xv)[0]
    with mera.build_config(target="Simulator"):
        sim = mera.compile(qmod, qparams)(xv)[0]
    np.testing.assert_array_equal(sim, hw)
    assert np.abs(hw - ref).max() < 0.05 * np.abs(ref).max() + 0.02


class Conv1dBlock(nn.Module):
    """Eager PTQ of a 1-D block (keyword spotting style): two conv1d, add, hardswish, cat."""

    def __init__(self):
        super().__init__()
        q = torch.ao.quantization
        self.quant, self.dequant = q.QuantStub(), q.DeQuantStub()
        self.c1, self.c2 = nn.Conv1d(8, 24, 3, padding=1), nn.Conv1d(8, 24, 5, padding=2)
        self.hs = nn.Hardswish()
        self.ff, self.ff2 = torch.ao.nn.quantized.FloatFunctional(), torch.ao.nn.quantized.FloatFunctional()

    def forward(self, x):
        x = self.quant(x)
        y = self.hs(self.ff.add(self.c1(x), self.c2(x)))
        return self.dequant(self.ff2.cat([y, self.c1(x)], 1))


@pytest.mark.parametrize("seed", range(3))
def test_conv1d_block_eager_ptq(seed):
    from torch.ao.quantization import convert, get_default_qconfig, prepare
    torch.manual_seed(seed)
    m = Conv1dBlock().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m.qconfig = get_default_qconfig("fbgemm")
        prepare(m, inplace=True)
        for _ in range(3):
            m(torch.randn(2, 8, 77))
        convert(m, inplace=True)
    x = torch.randn(1, 8, 77)
    with torch.no_grad():
        traced = torch.jit.trace(m, x)
        ref = m(x).numpy()
    for layout in ("NCHW", "NHWC"):
        hw, sim = _run(traced, x, layout)
        np.testing.assert_array_equal(hw, ref, err_msg=layout)
        np.testing.assert_array_equal(sim, hw)


def test_bad_new_op_graphs_are_errors_naming_the_node():
    from mera import ir
    b = ir.Builder("bad")
    x = b.input("x", (1, 4, 3, 3))
    with pytest.raises(mera.ShapeError, match=r"'bn'.*scale.*\[4\]"):
        b.op("batch_norm", x, b.const(np.ones(3, np.float32)), b.const(np.zeros(4, np.float32)), name="bn")
    with pytest.raises(mera.AttrError, match=r"'bn2'.*axis 4 is out of range"):
        b.op("batch_norm", x, b.const(np.ones(4, np.float32)), b.const(np.zeros(4, np.float32)), axis=4, name="bn2")
    with pytest.raises(mera.ShapeError, match=r"'pr'.*slope.*\[1\] or \[4\]"):
        b.op("prelu", x, b.const(np.ones(2, np.float32)), name="pr")
    with pytest.raises(mera.AttrError, match=r"'adds'.*not finite"):
        b.op("add_scalar", x, value=float("inf"), name="adds")
    q = b.op("quantize", x, scale=0.1, zero_point=3, dtype="uint8", name="q")
    with pytest.raises(mera.DtypeError, match=r"'pr2'.*slope.*per-tensor quantized"):
        b.op("prelu", q, b.const(np.ones(4, np.float32)), name="pr2")
    with pytest.raises(mera.AttrError, match=r"'adds2'.*no valid output scale"):
        b.op("add_scalar", q, value=1e300, name="adds2")



@pytest.mark.parametrize("relu", [False, True])
def test_batch_norm1d_matches_fbgemm(relu):
    """quantized::batch_norm1d[_relu] on [N, C, L] (called directly: eager convert cannot reach it)."""
    rng = np.random.default_rng(77 + relu)
    c, length = 37, 29
    bn = _random_bn(rng, c, 4, False, 0.05, 100)
    fn = torch.ops.quantized.batch_norm1d_relu if relu else torch.ops.quantized.batch_norm1d
    op = (lambda q: fn(q, bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.eps, 0.05, 100))
    m = QuantOp(op, 0.03, 120, torch.quint8, bn).eval()
    x = torch.randn(2, c, length) * 3
    with torch.no_grad():
        traced = torch.jit.trace(m, x)
        ref = m(x).numpy()
    assert any(n.kind().startswith("quantized::batch_norm1d") for n in traced.inlined_graph.nodes())
    hw, sim = _run(traced, x, "NHWC")
    np.testing.assert_array_equal(hw, ref)
    np.testing.assert_array_equal(sim, hw)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("seed", range(4))
def test_conv_transpose1d_matches_fbgemm(seed, layout):
    """quantized::conv_transpose1d (fbgemm: conv_transpose2d on [N, C, 1, L]; its direct path needs two kernel
    rows, so never here)."""
    import torch.ao.nn.quantized as nnq
    rng = np.random.default_rng(6000 + seed)
    groups = int(rng.choice([1, 2]))
    c_in, c_out = groups * int(rng.integers(1, 9)), groups * int(rng.integers(1, 9))
    k, stride, dil = int(rng.integers(1, 5)), int(rng.integers(1, 4)), int(rng.integers(1, 3))
    pad = int(rng.integers(0, k))
    out_pad = int(rng.integers(0, max(stride, dil)))
    conv = nnq.ConvTranspose1d(c_in, c_out, k, stride=stride, padding=pad, output_padding=out_pad, groups=groups,
                               dilation=dil)
    g = torch.Generator().manual_seed(seed)
    w = torch.quantize_per_tensor(torch.randn(c_in, c_out // groups, k, generator=g) * 0.3, 0.01,
                                  int(rng.integers(-3, 4)), torch.qint8)
    conv.set_weight_bias(w, torch.randn(c_out, generator=g))
    conv.scale, conv.zero_point = float(rng.uniform(0.02, 0.2)), int(rng.integers(0, 256))
    s, z = _input_qparams(rng)
    m = QConv1d(conv, s, z).eval()
    x = torch.randn(int(rng.integers(1, 3)), c_in, int(rng.integers(1, 30))) * 2
    with torch.no_grad():
        traced = torch.jit.trace(m, x)
        ref = m(x).numpy()
    assert any(n.kind() == "quantized::conv_transpose1d" for n in traced.inlined_graph.nodes())
    hw, sim = _run(traced, x, layout)
    np.testing.assert_array_equal(hw, ref)
    np.testing.assert_array_equal(sim, hw)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("seed", range(6))
def test_gelu_matches_fbgemm(seed, layout):
    """aten::gelu of a quantized tensor (eager PTQ leaves nn.GELU between quantized layers): PyTorch's qgelu,
    output parameters the input's; vector body with ATen's erf polynomial and Sleef's exp, scalar tail in
    double with libm's erf (odd seeds: approximate="tanh", Sleef's tanhf and libm's tanh). Every input byte
    appears in both bodies."""
    rng = np.random.default_rng(7000 + seed)
    approximate = ("none", "tanh")[seed % 2]
    dtype = "int8" if seed % 3 == 2 else "uint8"
    s, z = _input_qparams(rng)
    if dtype == "int8":
        z -= 128
    rows, width = int(rng.integers(3, 9)), int(rng.integers(65, 130))
    lo = -128 if dtype == "int8" else 0
    q = (np.arange(rows * width) % 256 + lo).reshape(1, 1, rows, width)
    x = torch.from_numpy(((q - z) * s).astype(np.float32))
    m = QuantOp(nn.GELU(approximate=approximate), s, z, _QDT[dtype]).eval()
    with torch.no_grad():
        traced = torch.jit.trace(m, x)
        ref = m(x).numpy()
    hw, sim = _run(traced, x, layout)
    np.testing.assert_array_equal(hw, ref)
    np.testing.assert_array_equal(sim, hw)
