"""The PyTorch frontend: TorchScript (quantized and float), torch.export (float and
QDQ), files, layouts, and errors that list every unsupported op."""

import logging
import os
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import mera
from mera import relay

torch.backends.quantized.engine = "fbgemm"


def nhwc(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def ptq(model: nn.Module, fuse, shape, seed=0):
    from torch.ao.quantization import convert, fuse_modules, get_default_qconfig, prepare
    torch.manual_seed(seed)
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if fuse:
            fuse_modules(model, fuse, inplace=True)
        model.qconfig = get_default_qconfig("fbgemm")
        prepare(model, inplace=True)
        for _ in range(4):
            model(torch.randn(*shape))
        convert(model, inplace=True)
    return model


class Block(nn.Module):
    """Residual block with the ops the zoo uses: conv(+relu), depthwise, add_relu, mul,
    cat, hardswish, hardsigmoid, max/avg/adaptive pool, upsample, chunk, mean, linear."""

    def __init__(self):
        super().__init__()
        q = torch.ao.quantization
        self.quant, self.dequant = q.QuantStub(), q.DeQuantStub()
        self.conv1, self.bn1, self.relu1 = nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU()
        self.dw, self.relu2 = nn.Conv2d(16, 16, 3, 1, 1, groups=16), nn.ReLU()
        self.pw = nn.Conv2d(8, 8, 1)
        self.hs = nn.Hardswish()
        self.ff = torch.ao.nn.quantized.FloatFunctional()
        self.ff2 = torch.ao.nn.quantized.FloatFunctional()
        self.ff3 = torch.ao.nn.quantized.FloatFunctional()
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.quant(x)
        y = self.relu1(self.bn1(self.conv1(x)))
        z = self.relu2(self.dw(y))
        y = self.ff.add_relu(y, z)
        a, b = y.chunk(2, dim=1)
        a = self.hs(self.pw(a))
        s = F.hardsigmoid(F.adaptive_avg_pool2d(b, 1))
        b = self.ff2.mul(b, s)
        y = self.ff3.cat([a, b], dim=1)
        y = F.max_pool2d(y, 3, 2, 1)
        y = F.interpolate(y, scale_factor=2.0, mode="nearest")
        y = F.avg_pool2d(y, 2)
        y = y.mean([2, 3])
        return self.dequant(self.fc(y))


@pytest.fixture(scope="module")
def quantized_block():
    m = ptq(Block(), [["conv1", "bn1", "relu1"], ["dw", "relu2"]], (2, 3, 32, 32))
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        traced = torch.jit.trace(m, x)
    return traced, x


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_quantized_torchscript_is_bit_exact(quantized_block, layout):
    traced, x = quantized_block
    ref = traced(x).numpy()
    xin = x.numpy() if layout == "NCHW" else nhwc(x.numpy())
    mod, params = relay.frontend.from_pytorch(traced, [("input0", xin.shape)], layout=layout)
    text = str(mod)
    assert "conv2d" in text and "hardswish" in text and "concat" in text and "mul" in text
    with mera.build_config(target="InterpreterHw"):
        out = mera.compile(mod, params)(xin)[0]
    np.testing.assert_array_equal(out, ref)


def test_run_mera_backend_prints_the_original_log(quantized_block, capsys, tmp_path):
    traced, x = quantized_block
    ref = traced(x).numpy()
    with mera.build_config(target="InterpreterHw"):
        outs = mera.test_util.run_mera_backend(traced, nhwc(x.numpy()), ref_results=ref, layout="NHWC")
    assert isinstance(outs, list) and len(outs) == 1
    log = capsys.readouterr().out
    assert "max abs diff: 0.0" in log and "mean abs diff: 0.0" in log and "correct ratio: 1.0" in log
    # IP (runs_through_deploy in the backend table) builds a deploy directory into output_dir, as
    # MERA's did; the Simulator runs in process and writes nothing; both give InterpreterHw's bytes
    for target in ("IP", "Simulator"):
        out_dir = tmp_path / target
        with mera.build_config(target=target, arch=100, sim_log=False):
            got = mera.test_util.run_mera_backend(traced, nhwc(x.numpy()), layout="NHWC", output_dir=str(out_dir))
        assert np.array_equal(got[0], outs[0]), target
        written = sorted(os.listdir(out_dir)) if out_dir.exists() else []
        assert written == (["deploy.json", "deploy.params", "deploy.so"] if target == "IP" else []), target
    with pytest.raises(mera.ConfigError, match="needs a target"):
        mera.test_util.run_mera_backend(traced, x.numpy())


class FloatNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=2)
        self.fc = nn.Linear(8 * 4 * 4, 5)
        with torch.no_grad():
            self.bn.running_mean.normal_()
            self.bn.running_var.uniform_(0.5, 1.5)

    def forward(self, x):
        y = F.relu6(self.bn(self.conv(x)))
        a, b = torch.split(y, [3, 5], dim=1)
        y = torch.cat([b * 0.5, F.hardswish(a)], dim=1) + 1.0
        y = F.leaky_relu(self.conv2(y), 0.1)
        y = F.interpolate(y, size=(16, 16), mode="bilinear", align_corners=False)
        y = F.max_pool2d(y, 2, ceil_mode=True)
        y = F.adaptive_avg_pool2d(torch.sigmoid(y), (4, 4))
        y = torch.flatten(y, 1)
        return torch.softmax(self.fc(y), dim=-1), y.view(1, 8, 16).transpose(1, 2)


@pytest.mark.parametrize("source", ["trace", "export", "module"])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_float_models_match_torch(source, layout):
    torch.manual_seed(1)
    m = FloatNet().eval()
    x = torch.randn(1, 3, 12, 12)
    with torch.no_grad():
        refs = [r.numpy() for r in m(x)]
        src = {"trace": lambda: torch.jit.trace(m, x), "export": lambda: torch.export.export(m, (x,)),
               "module": lambda: m}[source]()
    xin = x.numpy() if layout == "NCHW" else nhwc(x.numpy())
    mod, params = mera.frontend.from_pytorch(src, [("input0", xin.shape)], layout=layout)
    outs = mera.compile(mod, params, target="Interpreter")(xin)
    for out, ref in zip(outs, refs):
        assert out.shape == ref.shape
        assert np.abs(out - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max())


def test_model_files(tmp_path, quantized_block):
    traced, x = quantized_block
    traced.save(str(tmp_path / "m.pt"))
    mod, params = mera.frontend.from_pytorch(str(tmp_path / "m.pt"), [("input0", tuple(x.shape))])
    out = mera.compile(mod, params, target="InterpreterHw")(x.numpy())[0]
    np.testing.assert_array_equal(out, traced(x).numpy())

    torch.manual_seed(1)
    m = FloatNet().eval()
    xf = torch.randn(1, 3, 12, 12)
    torch.export.save(torch.export.export(m, (xf,)), str(tmp_path / "m.pt2"))
    mod, params = mera.frontend.from_pytorch(tmp_path / "m.pt2", [("input0", (1, 3, 12, 12))])
    out = mera.compile(mod, params, target="Interpreter")(xf.numpy())[0]
    assert np.abs(out - m(xf)[0].detach().numpy()).max() < 1e-5
    with pytest.raises(mera.MeraIOError, match="does not exist"):
        mera.frontend.from_pytorch(tmp_path / "none.pt", [("input0", (1, 3, 12, 12))])
    (tmp_path / "bad.pt").write_bytes(b"not a model")
    with pytest.raises(mera.MeraIOError, match="cannot load PyTorch model"):
        mera.frontend.from_pytorch(tmp_path / "bad.pt", [("input0", (1, 3, 12, 12))])


class Unsupported(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)

    def forward(self, x):
        y = self.conv(x).permute(0, 2, 3, 1)
        y = torch.lgamma(torch.digamma(y.abs() + 1))
        y = torch.lgamma(y.abs() + 1) + torch.i0(y)
        return torch.erfinv(torch.tanh(y))  # sort, cumsum, sin and cos were here: mera imports them now


@pytest.mark.parametrize("source", ["trace", "export"])
def test_unsupported_ops_are_all_listed_with_locations(source):
    m = Unsupported().eval()
    x = torch.randn(1, 3, 4, 4)
    with torch.no_grad():
        src = torch.jit.trace(m, x) if source == "trace" else torch.export.export(m, (x,))
    with pytest.raises(mera.UnsupportedError) as e:
        mera.frontend.from_pytorch(src, [("input0", (1, 3, 4, 4))])
    msg = str(e.value)
    assert "op kinds that mera does not support" in msg
    for kind in ("aten::digamma", "aten::lgamma", "aten::i0", "aten::erfinv"):
        assert kind in msg
    assert "aten::lgamma (2 uses)" in msg
    assert "test_frontend_pytorch.py:" in msg  # the user's source line, not torch's


def test_input_shape_errors(quantized_block):
    traced, _ = quantized_block
    with pytest.raises(mera.ConfigError, match=r"input 'input0': input_shapes gives \(1, 3, 32, 32\) \(NHWC, "
                                               r"i.e. \(1, 32, 3, 32\) in NCHW\), but the model was traced with"):
        mera.frontend.from_pytorch(traced, [("input0", (1, 3, 32, 32))], layout="NHWC")
    with pytest.raises(mera.ConfigError, match="takes 1 input"):
        mera.frontend.from_pytorch(traced, [("a", (1, 3, 32, 32)), ("b", (1, 3, 32, 32))])
    with pytest.raises(mera.ConfigError, match="layout must be"):
        mera.frontend.from_pytorch(traced, [("input0", (1, 3, 32, 32))], layout="NWHC")
    with pytest.raises(mera.ConfigError, match="from_pytorch: cannot import a int"):
        mera.frontend.from_pytorch(42, [("input0", (1, 3, 32, 32))])


def test_qdq_export_from_pt2e_is_lowered_to_integer_ops():
    logging.disable(logging.WARNING)
    try:
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
    finally:
        logging.disable(logging.NOTSET)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c, self.c2, self.fc = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), nn.Linear(8, 4)

        def forward(self, x):
            y = self.c2(torch.relu(self.c(x)))
            y = F.adaptive_avg_pool2d(F.max_pool2d(y, 2), 1).flatten(1)
            return self.fc(y)

    torch.manual_seed(0)
    x = torch.randn(1, 3, 16, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm = torch.export.export(Net().eval(), (x,)).module()
        quantizer = xiq.X86InductorQuantizer()
        quantizer.set_global(xiq.get_default_x86_inductor_quantization_config())
        gm = prepare_pt2e(gm, quantizer)
        for _ in range(4):
            gm(torch.randn(1, 3, 16, 16))
        gm = convert_pt2e(gm)
        ep = torch.export.export(gm, (x,))
    ref = ep.module()(x).detach().numpy()
    for layout in ("NCHW", "NHWC"):
        xin = x.numpy() if layout == "NCHW" else nhwc(x.numpy())
        mod, params = mera.frontend.from_pytorch(ep, [("input0", xin.shape)], layout=layout)
        convs = [n for n in mod.nodes() if n["op"] == "conv2d"]
        assert len(convs) == 2 and all("out_scale" in n["attrs"] for n in convs)  # integer convs
        assert convs[0]["attrs"]["activation"] == "relu"
        out = mera.compile(mod, params, target="InterpreterHw")(xin)[0]
        assert np.abs(out - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max())


class FloatMath(nn.Module):
    """The float ops mera runs on the host (sub, div, pow, maximum, minimum, sqrt, exp, log, tanh, erf,
    abs, matmul of two run-time tensors) and those built from them (gelu, silu, layer_norm)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.ln = nn.LayerNorm(12)

    def forward(self, x):
        y = self.conv(x)
        a = torch.sqrt(y.abs() + 1) / (torch.exp(-y.abs()) + 1)
        b = torch.maximum(a, torch.tanh(y)) - torch.minimum(a, torch.erf(y))
        c = F.gelu(b) + F.silu(b) + torch.log(a) + b ** 3 + y ** 2 + torch.pow(a, 0.5)
        t = c.flatten(2)  # [1, 8, 120]
        att = torch.softmax(torch.matmul(t, t.transpose(1, 2)) / 11.0, dim=-1)  # [1, 8, 8]
        return torch.matmul(att, t).reshape(1, 8, 10, 12) + self.ln(c)


@pytest.mark.parametrize("source", ["trace", "export"])
def test_float_math_ops_on_every_target(source):
    torch.manual_seed(0)
    m = FloatMath().eval()
    x = torch.randn(1, 3, 10, 12)
    with torch.no_grad():
        ref = m(x).numpy()
        src = torch.jit.trace(m, x) if source == "trace" else torch.export.export(m, (x,))
    for layout in ("NCHW", "NHWC"):
        shape = (1, 3, 10, 12) if layout == "NCHW" else (1, 10, 12, 3)
        mod, params = mera.frontend.from_pytorch(src, [("input0", shape)], layout=layout)
        xin = x.numpy() if layout == "NCHW" else np.ascontiguousarray(x.numpy().transpose(0, 2, 3, 1))
        out = mera.compile(mod, params, target="Interpreter")(xin)[0]
        out = out if layout == "NCHW" else out.transpose(0, 3, 1, 2)
        assert np.abs(out - ref).max() <= 1e-5 * np.abs(ref).max(), layout
        # mera.Quantizer keeps them float between a dequantize and a quantize, on the host
        q = mera.Quantizer((mod, params), layout=layout)
        rng = np.random.default_rng(1)
        cal = [rng.standard_normal(xin.shape).astype(np.float32) for _ in range(4)]
        q.calibrate(cal)
        qmod, qparams = q.quantize()
        assert {"sqrt", "matmul", "div", "erf"} <= {n["op"] for n in qmod.nodes()}
        hw = mera.compile(qmod, qparams, target="InterpreterHw")(cal[0])[0]
        with mera.build_config(target="Simulator"):
            sim = mera.compile(qmod, qparams)
        assert np.array_equal(sim(cal[0])[0], hw)
        f = mera.compile(mod, params, target="Interpreter")(cal[0])[0]
        psnr = 10 * np.log10(np.abs(f).max() ** 2 / np.mean((f - hw) ** 2))
        assert psnr > 30, psnr


class UpConv(nn.Module):
    """A U-Net-style decoder step: transposed convs (output_padding, groups) and a skip concat."""

    def __init__(self):
        super().__init__()
        self.down = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(8, 6, 3, stride=2, padding=1, output_padding=1)
        self.mix = nn.Conv2d(9, 4, 1)
        self.up2 = nn.ConvTranspose2d(4, 4, 4, stride=2, padding=1, groups=2, bias=False)

    def forward(self, x):
        y = self.up(torch.relu(self.down(x)))
        return self.up2(self.mix(torch.cat([y, x], 1)))


@pytest.mark.parametrize("source", ["trace", "export"])
def test_conv_transpose_runs_on_every_target(source):
    """Float on the host; quantized by mera.Quantizer, the DNA runs it as sub-pixel conv2d phases."""
    torch.manual_seed(0)
    m = UpConv().eval()
    x = torch.randn(1, 3, 12, 14)
    with torch.no_grad():
        ref = m(x).numpy()
        src = torch.jit.trace(m, x) if source == "trace" else torch.export.export(m, (x,))
    for layout in ("NCHW", "NHWC"):
        shape = (1, 3, 12, 14) if layout == "NCHW" else (1, 12, 14, 3)
        mod, params = mera.frontend.from_pytorch(src, [("input0", shape)], layout=layout)
        xin = x.numpy() if layout == "NCHW" else np.ascontiguousarray(x.numpy().transpose(0, 2, 3, 1))
        out = mera.compile(mod, params, target="Interpreter")(xin)[0]
        out = out if layout == "NCHW" else out.transpose(0, 3, 1, 2)
        assert out.shape == ref.shape and np.abs(out - ref).max() <= 1e-5 * np.abs(ref).max(), layout
        q = mera.Quantizer((mod, params), layout=layout)
        q.calibrate([np.random.default_rng(i).standard_normal(xin.shape).astype(np.float32) for i in range(4)])
        qmod, qparams = q.quantize()
        hw = mera.compile(qmod, qparams, target="InterpreterHw")(xin)[0]
        with mera.build_config(target="Simulator"):
            sim = mera.compile(qmod, qparams)
        assert np.array_equal(sim(xin)[0], hw)
        rep = sim.partition_report()
        assert not any(e["op"] == "conv_transpose2d" for e in rep), str(rep)
        phases = [e for e in rep if e["op"] == "conv2d" and ".phase" in e["node"]]
        assert len(phases) == 8 and all(e["on_dna"] for e in phases), str(rep)  # 2x2 phases per upsampler


class PadsAndActivations(nn.Module):
    """Reflect and replicate padding (concats of slices), PReLU, Mish, Softplus, PixelShuffle."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.prelu = nn.PReLU(8)
        self.conv2 = nn.Conv2d(8, 12, 3)

    def forward(self, x):
        y = self.prelu(self.conv(F.pad(x, (1, 2, 2, 1), mode="reflect")))
        y = F.mish(y) + F.softplus(y)
        y = self.conv2(F.pad(y, (1, 1, 1, 1), mode="replicate"))
        return F.pixel_shuffle(y, 2)


@pytest.mark.parametrize("source", ["trace", "export"])
def test_pads_and_activations(source):
    torch.manual_seed(0)
    m = PadsAndActivations().eval()
    with torch.no_grad():
        m.prelu.weight.uniform_(-0.5, 0.5)
    x = torch.randn(1, 3, 9, 10)
    with torch.no_grad():
        ref = m(x).numpy()
        src = torch.jit.trace(m, x) if source == "trace" else torch.export.export(m, (x,))
    for layout in ("NCHW", "NHWC"):
        shape = (1, 3, 9, 10) if layout == "NCHW" else (1, 9, 10, 3)
        mod, params = mera.frontend.from_pytorch(src, [("input0", shape)], layout=layout)
        xin = x.numpy() if layout == "NCHW" else np.ascontiguousarray(x.numpy().transpose(0, 2, 3, 1))
        out = mera.compile(mod, params, target="Interpreter")(xin)[0]
        out = out if out.shape == ref.shape else out.transpose(0, 3, 1, 2)
        assert out.shape == ref.shape and np.abs(out - ref).max() <= 2e-5 * np.abs(ref).max(), layout
        assert "pad" not in [n["op"] for n in mod.nodes()]


class ManyPReLUs(nn.Module):
    """MTCNN's pattern: conv -> PReLU -> pool, several times, each PReLU with slopes of its own (some with equal
    channel counts), then a dense layer with a PReLU."""

    def __init__(self):
        super().__init__()
        self.c1, self.p1 = nn.Conv2d(3, 16, 3), nn.PReLU(16)
        self.c2, self.p2 = nn.Conv2d(16, 16, 3), nn.PReLU(16)
        self.c3, self.p3 = nn.Conv2d(16, 24, 3), nn.PReLU(24)
        self.fc, self.p4 = nn.Linear(24 * 5 * 5, 32), nn.PReLU(32)

    def forward(self, x):
        x = F.max_pool2d(self.p1(self.c1(x)), 2, ceil_mode=True)
        x = self.p3(self.c3(self.p2(self.c2(x))))
        return self.p4(self.fc(x.flatten(1)))


@pytest.mark.parametrize("source", ["trace", "export"])
def test_each_prelu_keeps_its_own_slopes(source):
    """Regression: the float PReLU's negated-slope constant was a temporary torch tensor, cached by id(); once
    freed, the next PReLU's temporary could get the same id and so the first one's slopes (a ShapeError on
    MTCNN's RNet, silently wrong slopes where the channel counts agreed)."""
    torch.manual_seed(1)
    m = ManyPReLUs().eval()
    with torch.no_grad():
        for p in (m.p1, m.p2, m.p3, m.p4):
            p.weight.uniform_(-1.0, 1.0)
    x = torch.randn(1, 3, 19, 19)
    with torch.no_grad():
        ref = m(x).numpy()
        src = torch.jit.trace(m, x) if source == "trace" else torch.export.export(m, (x,))
    mod, params = mera.frontend.from_pytorch(src, [("input0", (1, 3, 19, 19))])
    out = mera.compile(mod, params, target="Interpreter")(x.numpy())[0]
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
