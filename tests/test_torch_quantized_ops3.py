"""PyTorch quantized norms and matmul: quantized::group_norm and quantized::instance_norm (the IR's
group_norm_q, PyTorch's contiguous quantized_normalize_kernel or its channels-last
quantized_groupnorm_nhwc_kernel, whose float sums follow PyTorch's thread split) and quantized::matmul
(dequantize, float matmul, quantize). Randomized, seeded differential tests against the installed PyTorch
(fbgemm engine): bytes equal for the norms under 1 and 2 torch threads, both import layouts, channels-last
and contiguous inputs; matmul within 1 LSB (MKL's float sums are in another order)."""

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


def _compile(traced, shape, layout: str, simulator: bool = False):
    """An InterpreterHw (or Simulator) callable on NCHW-ordered float input, giving NCHW-ordered output."""
    in_shape = (shape[0], shape[2], shape[3], shape[1]) if layout == "NHWC" and len(shape) == 4 else tuple(shape)
    mod, params = relay.frontend.from_pytorch(traced, [("input0", in_shape)], layout=layout)
    if simulator:
        with mera.build_config(target="Simulator"):
            f = mera.compile(mod, params)
    else:
        f = mera.compile(mod, params, target="InterpreterHw")

    def run(x: np.ndarray) -> np.ndarray:
        y = f(_nhwc(x) if layout == "NHWC" else x)[0]
        return y.transpose(0, 3, 1, 2) if layout == "NHWC" and y.ndim == 4 else y
    return run


class QuantOp(nn.Module):
    """quantize_per_tensor (of a channels-last copy if asked) -> op -> dequantize."""

    def __init__(self, op, scale, zp, dtype, channels_last=False):
        super().__init__()
        self.op, self.scale, self.zp, self.dtype, self.cl = op, scale, zp, dtype, channels_last

    def forward(self, x):
        if self.cl:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.op(torch.quantize_per_tensor(x, self.scale, self.zp, self.dtype)).dequantize()


@pytest.fixture
def torch_threads():
    """Set torch's thread count for a test and restore it after."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def _trace(m, x):
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(m.eval(), x)
        return traced, m(x).numpy()


# -- group_norm / instance_norm --------------------------------------------------------------------

# (batch, channels, groups, H, W) chosen to reach every branch: channels-last maps of H*W >= 512 (float sums in
# thread order; C = 130 and 65 groups is a case whose bytes change with the thread count), smaller maps
# (integer sums, C/G >= 64 for the vector quantize within a group), C = 1 and H = W = 1 (channels-last
# contiguous even in NCHW)
_GN_SHAPES = [(1, 130, 65, 32, 34), (2, 6, 3, 30, 38), (1, 130, 2, 34, 23), (2, 128, 2, 5, 7), (1, 70, 5, 5, 12),
              (2, 8, 4, 33, 17), (1, 1, 1, 14, 33), (2, 12, 3, 1, 1)]


def _gn_case(i: int):
    rng = np.random.default_rng(13000 + i)
    B, C, G, H, W = _GN_SHAPES[i % len(_GN_SHAPES)]
    dtype = "int8" if i % 4 == 3 else "uint8"
    off = 128 if dtype == "int8" else 0
    return dict(shape=(B, C, H, W), groups=G, dtype=dtype, s=float(rng.uniform(0.01, 0.2)),
                z=int(rng.integers(0, 256)) - off, out_s=float(rng.uniform(0.01, 0.1)),
                out_z=int(rng.integers(0, 256)) - off, eps=float(rng.choice([1e-5, 1e-3])), affine=i % 5 != 4,
                spread=float(rng.uniform(0.3, 3)), shift=float(rng.uniform(-1, 1)))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("i", range(8))
def test_group_norm_matches_fbgemm(i, threads, torch_threads):
    """quantized::group_norm, bytes equal: channels-last input on even cases (PyTorch's NHWC kernel), contiguous
    on odd ones, NHWC import on every third; weight and bias on or off."""
    torch_threads(threads)
    c = _gn_case(i)
    g = torch.Generator().manual_seed(i)
    C = c["shape"][1]
    w = torch.randn(C, generator=g) * 1.5 if c["affine"] else None
    b = torch.randn(C, generator=g) if c["affine"] else None
    op = lambda q: torch.ops.quantized.group_norm(q, c["groups"], w, b, c["eps"], c["out_s"], c["out_z"])  # noqa: E731
    m = QuantOp(op, c["s"], c["z"], _QDT[c["dtype"]], channels_last=i % 2 == 0)
    x = torch.randn(c["shape"], generator=g) * c["spread"] + c["shift"]
    traced, ref = _trace(m, x)
    layout = "NHWC" if i % 3 == 1 else "NCHW"
    got = _compile(traced, c["shape"], layout)(x.numpy())
    np.testing.assert_array_equal(got, ref, err_msg=f"{c} layout {layout}")


def test_group_norm_follows_the_thread_split(torch_threads):
    """The channels-last kernel's float sums depend on at::get_num_threads(): a graph imported under 2 threads
    matches PyTorch under 2 threads and not under 1 (the case is one where the bytes differ)."""
    c = _gn_case(0)
    g = torch.Generator().manual_seed(0)
    C = c["shape"][1]
    w, b = torch.randn(C, generator=g) * 1.5, torch.randn(C, generator=g)
    op = lambda q: torch.ops.quantized.group_norm(q, c["groups"], w, b, c["eps"], c["out_s"], c["out_z"])  # noqa: E731
    m = QuantOp(op, c["s"], c["z"], _QDT[c["dtype"]], channels_last=True)
    x = torch.randn(c["shape"], generator=g) * c["spread"] + c["shift"]
    torch_threads(2)
    traced, ref2 = _trace(m, x)
    run = _compile(traced, c["shape"], "NCHW")
    torch_threads(1)
    with torch.no_grad():
        ref1 = m(x).numpy()
    assert (ref1 != ref2).any()
    np.testing.assert_array_equal(run(x.numpy()), ref2)


@pytest.mark.parametrize("rank", [3, 4, 5])
@pytest.mark.parametrize("affine", [False, True])
def test_instance_norm_matches_fbgemm(rank, affine, torch_threads):
    """torch.ao.nn.quantized.InstanceNorm1d/2d/3d (quantized::instance_norm: group norm, one group per channel)."""
    import torch.ao.nn.quantized as nnq
    torch_threads(2)
    rng = np.random.default_rng(14000 + rank * 2 + affine)
    C = int(rng.choice([3, 16, 67]))
    shape = (2, C) + tuple(int(rng.integers(2, 9)) for _ in range(rank - 2))
    cls = {3: nnq.InstanceNorm1d, 4: nnq.InstanceNorm2d, 5: nnq.InstanceNorm3d}[rank]
    g = torch.Generator().manual_seed(rank)
    w = nn.Parameter(torch.randn(C, generator=g)) if affine else None
    b = nn.Parameter(torch.randn(C, generator=g)) if affine else None
    norm = cls(C, w, b, scale=float(rng.uniform(0.01, 0.1)), zero_point=int(rng.integers(0, 256)),
               eps=float(rng.choice([1e-5, 1e-3])), affine=affine)
    m = QuantOp(norm, float(rng.uniform(0.01, 0.2)), int(rng.integers(0, 256)), torch.quint8)
    x = torch.randn(shape, generator=g) * 2
    traced, ref = _trace(m, x)
    assert "quantized::instance_norm" in [nd.kind() for nd in traced.inlined_graph.nodes()]
    np.testing.assert_array_equal(_compile(traced, shape, "NCHW")(x.numpy()), ref)


class ConvNorms(nn.Module):
    """Eager PTQ: conv (channels-last output in PyTorch) -> GroupNorm -> InstanceNorm2d -> conv."""

    def __init__(self):
        super().__init__()
        q = torch.ao.quantization
        self.quant, self.dequant = q.QuantStub(), q.DeQuantStub()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.gn = nn.GroupNorm(4, 16)
        self.inorm = nn.InstanceNorm2d(16, affine=True)
        self.conv2 = nn.Conv2d(16, 8, 1)

    def forward(self, x):
        return self.dequant(self.conv2(self.inorm(self.gn(self.conv1(self.quant(x))))))


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_eager_model_with_norms(layout, torch_threads):
    """nn.GroupNorm and nn.InstanceNorm2d after eager convert, on channels-last conv outputs (a 24x24 map, so
    the float-sum branch), bytes equal on InterpreterHw, the Simulator equal to it (NHWC)."""
    from torch.ao.quantization import convert, get_default_qconfig, prepare
    torch_threads(2)
    torch.manual_seed(5)
    m = ConvNorms().eval()
    with torch.no_grad():
        m.gn.weight.uniform_(0.5, 2)
        m.gn.bias.uniform_(-1, 1)
        m.inorm.weight.uniform_(0.5, 2)
    m.qconfig = get_default_qconfig("fbgemm")
    x = torch.randn(1, 3, 24, 24)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepare(m, inplace=True)
        for _ in range(4):
            m(torch.randn(1, 3, 24, 24))
        convert(m, inplace=True)
    traced, ref = _trace(m, x)
    kinds = [nd.kind() for nd in traced.inlined_graph.nodes()]
    assert "quantized::group_norm" in kinds and "quantized::instance_norm" in kinds
    hw = _compile(traced, x.shape, layout)(x.numpy())
    np.testing.assert_array_equal(hw, ref)
    if layout == "NHWC":
        np.testing.assert_array_equal(_compile(traced, x.shape, layout, simulator=True)(x.numpy()), hw)


def test_bad_group_norm_graphs_are_errors_naming_the_node():
    from mera import ir
    b = ir.Builder("bad")
    x = b.op("quantize", b.input("x", (1, 6, 3, 3)), scale=0.1, zero_point=3, dtype="uint8", name="q")
    with pytest.raises(mera.AttrError, match=r"'gn'.*num_groups = 4.*6 channels"):
        b.op("group_norm_q", x, num_groups=4, out_scale=0.1, out_zero_point=0, name="gn")
    with pytest.raises(mera.ShapeError, match=r"'gn2'.*6 values"):
        b.op("group_norm_q", x, b.const(np.ones(3, np.float32)), num_groups=3, out_scale=0.1, out_zero_point=0,
             name="gn2")
    with pytest.raises(mera.AttrError, match=r"'gn3'.*torch_threads"):
        b.op("group_norm_q", x, num_groups=3, torch_threads=0, out_scale=0.1, out_zero_point=0, name="gn3")
    with pytest.raises(mera.DtypeError, match=r"'gn4'.*quantized"):
        b.op("group_norm_q", b.input("y", (1, 6, 3, 3)), num_groups=3, out_scale=0.1, out_zero_point=0, name="gn4")
    q2 = b.op("quantize", b.input("z", (6, 9)), scale=0.1, zero_point=3, dtype="uint8", name="q2")
    with pytest.raises(mera.ShapeError, match=r"'gn5'.*rank >= 3"):
        b.op("group_norm_q", q2, num_groups=3, out_scale=0.1, out_zero_point=0, name="gn5")


# -- matmul ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(8))
def test_matmul_within_one_lsb(seed):
    """quantized::matmul of two run-time tensors: PyTorch dequantizes, runs MKL's sgemm and quantizes; mera
    runs the same steps with its own float sum order, so a byte may differ by 1 where the product lands
    within rounding of a half step. Both dtypes, 2-D to 4-D."""
    rng = np.random.default_rng(15000 + seed)
    dtype = "int8" if seed % 2 else "uint8"
    off = 128 if dtype == "int8" else 0
    rank = 2 + seed % 3
    batch = tuple(int(rng.integers(1, 4)) for _ in range(rank - 2))
    M, K, N = int(rng.integers(1, 40)), int(rng.integers(1, 400)), int(rng.integers(1, 40))
    s1, s2, so = (float(rng.uniform(0.01, 0.1)) for _ in range(3))
    z1, z2, zo = (int(rng.integers(0, 256)) - off for _ in range(3))

    class QMatmul(nn.Module):
        def forward(self, x):
            a = torch.quantize_per_tensor(x[..., :M, :K], s1, z1, _QDT[dtype])
            bq = torch.quantize_per_tensor(x[..., M:, :N], s2, z2, _QDT[dtype])
            return torch.ops.quantized.matmul(a, bq, so, zo).dequantize()

    shape = batch + (M + K, max(K, N))
    x = torch.randn(shape) * 2
    traced, ref = _trace(QMatmul(), x)
    assert "quantized::matmul" in [nd.kind() for nd in traced.inlined_graph.nodes()]
    got = _compile(traced, shape, "NCHW")(x.numpy())
    assert got.shape == ref.shape
    lsb = np.abs(got.astype(np.float64) - ref) / so
    assert lsb.max() <= 1 + 1e-3, lsb.max()
    assert (lsb < 0.5).mean() > 0.97
