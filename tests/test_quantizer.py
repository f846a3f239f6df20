"""mera.Quantizer: post-training quantization in C (csrc/quant).

Accuracy on real data (scikit-learn's digits) against float and against
PyTorch's own post-training quantization; mera-quantized zoo models exported
to ONNX give identical bytes on InterpreterHw, Simulator and IP; batch-norm
folding, relu fusion, clip ranges and constants; the quality report; errors.
"""

import copy
import functools
import io
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn

import mera
import mera.models as mm
from mera import ir
from mera.errors import ConfigError, RuntimeInputError, UnsupportedError

# -- the digits model: trained here, in a few seconds ---------------------------------


class DigitsNet(nn.Module):
    """A small CNN for 8x8 digits, with stubs so PyTorch's eager PTQ can convert it."""

    def __init__(self):
        super().__init__()
        self.quant = torch.ao.quantization.QuantStub()
        self.dequant = torch.ao.quantization.DeQuantStub()
        self.c1, self.b1, self.r1 = nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU()
        self.c2, self.b2, self.r2 = nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.c3, self.b3, self.r3 = nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = self.quant(x)
        x = self.r1(self.b1(self.c1(x)))
        x = self.pool(self.r2(self.b2(self.c2(x))))
        x = self.r3(self.b3(self.c3(x)))
        return self.dequant(self.fc(torch.flatten(self.gap(x), 1)))


@functools.lru_cache(maxsize=None)
def digits():
    """(model, X, y, splits): the float model trained on 1000 images; 200 for
    calibration, the other 597 for test. Seeded: the same every run."""
    from sklearn.datasets import load_digits
    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0 - 0.5) / 0.5
    y = d.target.astype(np.int64)
    perm = np.random.default_rng(0).permutation(len(x))
    x, y = x[perm], y[perm]
    train, calib, test = slice(0, 1000), slice(1000, 1200), slice(1200, None)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        net = DigitsNet()
        opt = torch.optim.Adam(net.parameters(), 3e-3)
        xt, yt = torch.from_numpy(x[:, None]), torch.from_numpy(y)
        g = torch.Generator().manual_seed(0)
        for _ in range(15):
            net.train()
            order = torch.randperm(1000, generator=g)
            for i in range(0, 1000, 32):
                idx = order[i:i + 32]
                opt.zero_grad()
                nn.functional.cross_entropy(net(xt[train][idx]), yt[train][idx]).backward()
                opt.step()
        net.eval()
    finally:
        torch.set_num_threads(threads)
    return net, x, y, (train, calib, test)


def nhwc1(img):
    return np.ascontiguousarray(img[None, :, :, None])


def torch_ptq_accuracy(net, x, y, calib, test):
    """PyTorch's own eager-mode post-training quantization (fbgemm qconfig:
    HistogramObserver activations, per-channel weights), same calibration data."""
    qn = copy.deepcopy(net)
    qn.qconfig = torch.ao.quantization.get_default_qconfig("fbgemm")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.ao.quantization.fuse_modules(qn, [["c1", "b1", "r1"], ["c2", "b2", "r2"], ["c3", "b3", "r3"]],
                                           inplace=True)
        torch.ao.quantization.prepare(qn, inplace=True)
        with torch.no_grad():
            for img in x[calib]:
                qn(torch.from_numpy(img[None, None]))
        torch.ao.quantization.convert(qn, inplace=True)
        with torch.no_grad():
            pred = qn(torch.from_numpy(x[test][:, None])).argmax(1).numpy()
    return float((pred == y[test]).mean())


def test_digits_accuracy_float_torch_ptq_and_mera():
    net, x, y, (_, calib, test) = digits()
    with torch.no_grad():
        acc_float = float((net(torch.from_numpy(x[test][:, None])).argmax(1).numpy() == y[test]).mean())
    acc_torch = torch_ptq_accuracy(net, x, y, calib, test)
    q = mera.Quantizer(net, input_shape=(1, 8, 8, 1), layout="NHWC")
    q.calibrate([nhwc1(img) for img in x[calib]])
    mod, params = q.quantize()
    runner = mera.compile(mod, params, target="InterpreterHw")
    pred = np.array([runner(nhwc1(img))[0].argmax() for img in x[test]])
    acc_mera = float((pred == y[test]).mean())
    print(f"digits test accuracy ({len(pred)} images): float {acc_float:.4f}, "
          f"PyTorch PTQ {acc_torch:.4f}, mera {acc_mera:.4f}")
    assert acc_float > 0.95  # the model learned
    assert acc_mera >= acc_float - 0.01
    assert acc_mera >= acc_torch


# -- zoo models through ONNX: identical bytes on every integer target ---------------------

def onnx_export(model, shape, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (torch.zeros(shape),), str(path), opset_version=17, dynamo=False,
                          input_names=["input"], output_names=["logits"])
    return path


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "mobilenet_v3_large"])
def test_zoo_onnx_quantized_identical_bytes_on_integer_targets(name, tmp_path):
    pytest.importorskip("onnx")
    shape = mm.input_shape(name)
    path = onnx_export(mm.MODELS[name](seed=0), shape, tmp_path / f"{name}.onnx")
    calib = [x.permute(0, 2, 3, 1).contiguous().numpy() for x in mm.calibration_data(name, n=3, seed=0)]
    q = mera.Quantizer(str(path), layout="NHWC")
    q.calibrate(calib[:2])
    mod, params = q.quantize()
    x = calib[2]
    outs = {}
    for target in ("InterpreterHw", "Simulator", "IP"):
        with mera.build_config(target=target, arch=100, sim_log=False):
            outs[target] = mera.compile(mod, params)(x)[0]
    assert outs["InterpreterHw"].dtype == np.float32
    for target in ("Simulator", "IP"):
        assert np.array_equal(outs[target], outs["InterpreterHw"]), target
    # and the quantized model tracks the float one
    report = q.measure_quantization_quality([x])
    assert report.outputs[0].score > 0.9, str(report)


# -- the rewrite ----------------------------------------------------------------------------

def small_graph(with_bn=True, act="relu"):
    """conv -> (mul, add: a batch norm) -> relu|clip -> conv -> dense, NHWC, float."""
    rng = np.random.default_rng(1)
    b = ir.Builder("small")
    x = b.input("x", (1, 6, 6, 3), layout="NHWC")
    w1 = b.param("c1.weight", rng.normal(0, 0.5, (8, 3, 3, 3)).astype(np.float32))
    y = b.conv2d(x, w1, padding=[1, 1, 1, 1], layout="NHWC", name="c1")
    if with_bn:
        y = b.mul(y, b.const(rng.uniform(0.5, 2, (8,)).astype(np.float32), name="bn.scale"), name="bn.mul")
        y = b.add(y, b.const(rng.normal(0, 1, (8,)).astype(np.float32), name="bn.shift"), name="bn.add")
    if act == "relu":
        y = b.relu(y, name="act")
    else:
        y = b.clip(y, a_min=0.0, a_max=1.5, name="act")
    w2 = b.param("c2.weight", rng.normal(0, 0.3, (4, 8, 3, 3)).astype(np.float32))
    bias2 = b.param("c2.bias", rng.normal(0, 0.1, (4,)).astype(np.float32))
    y = b.conv2d(y, w2, bias2, layout="NHWC", name="c2")
    y = b.reshape(y, shape=[1, 64], name="flat")
    w3 = b.param("fc.weight", rng.normal(0, 0.2, (5, 64)).astype(np.float32))
    y = b.dense(y, w3, name="fc")
    return b.finish(y), b.params


def inputs(n, shape=(1, 6, 6, 3), seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(0, 1, shape).astype(np.float32) for _ in range(n)]


def ops_of(mod):
    return [n["op"] for n in mod.nodes()]


def test_batch_norm_folding_keeps_the_float_function():
    mod, params = small_graph()
    q = mera.Quantizer((mod, params))
    assert "mul" not in ops_of(q.float_mod) and "add" not in ops_of(q.float_mod)
    assert set(q.float_params) == {"c1.weight", "c1.bias", "c2.weight", "c2.bias", "fc.weight"}
    ref = mera.compile(mod, params, target="Interpreter")
    folded = mera.compile(q.float_mod, q.float_params, target="Interpreter")
    for x in inputs(3):
        a, b = ref(x)[0], folded(x)[0]
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5 * np.abs(a).max())


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("groups,bias", [(1, True), (1, False), (2, True), (4, False)])
def test_batch_norm_after_conv_transpose_is_folded(layout, groups, bias):
    """A DB text detector's head: ConvTranspose2d -> BatchNorm -> ReLU. The batch
    norm folds into the transposed conv's weight (along its output axis 1, per
    group) and bias, so the int8 graph has one rounding there instead of three."""
    torch.manual_seed(groups)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                        nn.ConvTranspose2d(8, 12, 2, stride=2, groups=groups, bias=bias),
                        nn.BatchNorm2d(12), nn.ReLU(), nn.ConvTranspose2d(12, 1, 2, stride=2)).eval()
    with torch.no_grad():
        bn = net[3]
        bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(-2, 2), bn.bias.uniform_(-1, 1)
    shape = (1, 3, 10, 9) if layout == "NCHW" else (1, 10, 9, 3)
    q = mera.Quantizer(net, input_shape=shape, layout=layout)
    ops = ops_of(q.float_mod)
    assert ops.count("conv_transpose2d") == 2 and "mul" not in ops and "add" not in ops, ops
    x = np.random.default_rng(0).normal(0, 1, (1, 3, 10, 9)).astype(np.float32)
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    xin = x if layout == "NCHW" else np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    got = np.asarray(mera.compile(q.float_mod, q.float_params, target="Interpreter")(xin)[0])
    if layout == "NHWC":
        got = got.transpose(0, 3, 1, 2)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    q.calibrate([np.random.default_rng(i).normal(0, 1, shape).astype(np.float32) for i in range(3)])
    qmod, qparams = q.quantize()
    assert ops_of(qmod).count("mul") == 0
    assert q.measure_quantization_quality([xin]).psnr > 30


def test_no_folding_when_disabled_or_when_the_conv_output_is_shared():
    mod, params = small_graph()
    q = mera.Quantizer((mod, params), config={"fold_batch_norm": False})
    assert ops_of(q.float_mod).count("mul") == 1
    # the conv output read twice: the per-channel mul cannot be folded into it
    rng = np.random.default_rng(0)
    b = ir.Builder("shared")
    x = b.input("x", (1, 4, 4, 2), layout="NHWC")
    y = b.conv2d(x, b.param("w", rng.normal(size=(3, 2, 1, 1)).astype(np.float32)), layout="NHWC", name="c")
    z = b.mul(y, b.const(np.array([1.0, 2.0, 3.0], np.float32), name="s"), name="m")
    out = b.add(z, y, name="res")
    q = mera.Quantizer((b.finish(out), b.params))
    assert ops_of(q.float_mod) == ["conv2d", "mul", "add"]


def test_relu_fused_and_clip_lends_its_range():
    mod, params = small_graph(act="relu")
    q = mera.Quantizer((mod, params))
    q.calibrate(inputs(4))
    qmod, qparams = q.quantize()
    nodes = {n["name"]: n for n in qmod.nodes()}
    assert "act" not in nodes and nodes["c1"]["attrs"]["activation"] == "relu"
    assert ops_of(qmod) == ["quantize", "conv2d", "conv2d", "reshape", "dense", "dequantize"]
    c1_out = qmod._graph.value(qmod._graph.find("c1"))
    assert c1_out["dtype"] == "uint8" and c1_out["qparams"][1] == 0  # relu: zero point at 0
    assert qparams["c1.weight"].dtype == np.int8 and qparams["c1.bias"].dtype == np.float32

    mod, params = small_graph(act="clip")
    q = mera.Quantizer((mod, params), config={"observer": "minmax"})
    q.calibrate(inputs(4))
    qmod, _ = q.quantize()
    g = qmod._graph
    scale, zp = g.value(g.find("c1"))["qparams"]
    assert zp == 0 and scale * 255 <= 1.5 * (1 + 1e-6)  # the conv output takes the clip's range
    assert "clip" in ops_of(qmod)


def test_weights_int8_symmetric_per_channel_and_per_tensor():
    mod, params = small_graph()
    for mode in ("per_channel", "per_tensor"):
        q = mera.Quantizer((mod, params), config={"weight": mode})
        q.calibrate(inputs(2))
        qmod, qparams = q.quantize()
        w = qmod._graph.value(qmod._graph.find("c2.weight"))
        fw = q.float_params["c2.weight"]
        assert w["dtype"] == "int8"
        qw = qparams["c2.weight"].astype(np.float64)
        assert np.abs(qw).max() == 127
        if mode == "per_channel":
            scales = np.asarray(w["qparams"][0])
            assert scales.shape == (4,)
            np.testing.assert_allclose(scales, np.abs(fw).reshape(4, -1).max(1) / 127, rtol=1e-6)
            deq = qw * scales[:, None, None, None]
        else:
            scale = w["qparams"][0]
            np.testing.assert_allclose(scale, np.abs(fw).max() / 127, rtol=1e-6)
            deq = qw * scale
        assert np.abs(deq - fw).max() <= (np.abs(fw).max() / 127) / 2 * (1 + 1e-5)


def test_constants_used_as_activations_and_multi_input():
    b = ir.Builder("consts")
    x = b.input("x", (1, 4, 4, 3), layout="NHWC")
    y = b.input("y", (1, 4, 4, 3), layout="NHWC")
    s = b.mul(x, b.const(np.array([0.5, -1.0, 2.0], np.float32), name="c"), name="scaled")
    t = b.add(s, y, name="sum")
    u = b.hardswish(t, name="hs")
    mod = b.finish(u)
    q = mera.Quantizer((mod, {}))
    rng = np.random.default_rng(0)
    data = [{"x": rng.normal(size=(1, 4, 4, 3)).astype(np.float32),
             "y": rng.normal(size=(1, 4, 4, 3)).astype(np.float32)} for _ in range(4)]
    q.calibrate(data)
    qmod, qparams = q.quantize()
    g = qmod._graph
    assert g.value(g.find("c"))["dtype"] == "uint8"
    assert ops_of(qmod) == ["quantize", "quantize", "mul", "add", "hardswish", "dequantize"]
    rep = q.measure_quantization_quality(data)
    assert rep.psnr > 30, str(rep)
    # the target is any node-by-node entry of the backend table, by name or Target
    rep_hw = q.measure_quantization_quality(data, target=mera.Target.InterpreterHw)
    assert rep_hw.psnr == rep.psnr
    for bad in ("Simulator", "IP", "GPU"):
        with pytest.raises(mera.ConfigError, match=r"measure_quantization_quality: target must run the graph node "
                                                   r"by node, to compare each layer \(Interpreter, "
                                                   rf"InterpreterHw\), got '{bad}'"):
            q.measure_quantization_quality(data, target=bad)


@pytest.mark.parametrize("magnitude", [1e-3, 1e-7, 1e-12])
def test_tiny_activations_keep_their_levels(magnitude):
    """Activations far below PyTorch's eps floor times 255 (3e-5) -- a randomly
    initialised network's vanishing logits, a detector's empty probability map --
    keep 256 levels: the quantizer floors scales at 1e-18, not at float32 eps
    as torch's observers do, so the PSNR does not depend on the magnitude."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.Sigmoid(),
                        nn.Conv2d(8, 4, 1)).eval()
    with torch.no_grad():
        for conv in (net[2], net[4]):
            conv.weight.mul_(magnitude)
            conv.bias.mul_(magnitude)
    q = mera.Quantizer(net, input_shape=(1, 3, 12, 12), layout="NCHW")
    q.calibrate([np.random.default_rng(i).normal(0, 1, (1, 3, 12, 12)).astype(np.float32) for i in range(3)])
    q.quantize()
    x = np.random.default_rng(9).normal(0, 1, (1, 3, 12, 12)).astype(np.float32)
    with torch.no_grad():
        peak = float(net(torch.from_numpy(x)).abs().max())
    assert peak < 10 * magnitude
    rep = q.measure_quantization_quality([x])
    assert rep.psnr > 30, str(rep)


@pytest.mark.parametrize("kind", ["gauss", "spiky", "uniform"])
def test_auto_observer_keeps_the_better_candidate(kind):
    """The default "auto" observer quantizes with the histogram ranges, the
    plain min/max ranges and the percentile ranges, and keeps the one whose
    outputs are closer to float on the first calibration batches; the graph it
    keeps is the one the explicit observer of that name gives, byte for byte."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3, padding=1)).eval()
    rng = np.random.default_rng(1)

    def sample():
        if kind == "gauss":
            return rng.normal(0, 1, (1, 3, 16, 16)).astype(np.float32)
        if kind == "uniform":
            return rng.uniform(-1, 1, (1, 3, 16, 16)).astype(np.float32)
        x = rng.normal(0, 0.1, (1, 3, 16, 16))
        hit = rng.random(x.shape) < 0.002
        x[hit] = rng.normal(0, 20, hit.sum())
        return x.astype(np.float32)

    cal = [sample() for _ in range(6)]
    q = mera.Quantizer(net, input_shape=(1, 3, 16, 16), layout="NCHW")
    assert q.config["observer"] == "auto"
    q.calibrate(cal)
    mod, params = q.quantize()
    choice = q.auto_choice
    order = ["histogram", "minmax", "percentile"]  # a tie keeps the earlier
    assert set(choice["psnr"]) == set(order)
    assert choice["ranges"] == max(order, key=lambda k: (choice["psnr"][k], -order.index(k)))
    same = mera.Quantizer(net, input_shape=(1, 3, 16, 16), layout="NCHW", config={"observer": choice["ranges"]})
    same.calibrate(cal)
    mod2, params2 = same.quantize()
    assert same.auto_choice is None
    x = sample()
    a = mera.compile(mod, params, target="InterpreterHw")(x)[0]
    b = mera.compile(mod2, params2, target="InterpreterHw")(x)[0]
    assert np.array_equal(a, b)
    rg, rg2 = q.ranges(), same.ranges()
    assert all((rg[k]["lo"], rg[k]["hi"]) == (rg2[k]["lo"], rg2[k]["hi"]) for k in rg2)


def test_stacked_batches_are_split_and_calibration_accumulates():
    mod, params = small_graph()
    q = mera.Quantizer((mod, params))
    q.calibrate([np.concatenate(inputs(3))])
    assert q.num_calibrated == 3
    q.calibrate(inputs(2))
    assert q.num_calibrated == 5


def test_observers_choose_different_ranges():
    mod, params = small_graph(with_bn=False)
    data = inputs(100)
    data[3][0, 0, 0, 0] = 40.0  # one outlier pixel
    his = {}
    for obs in ("minmax", "percentile", "histogram", "entropy", "mse"):
        # 10800 values: the 99.99th percentile would still interpolate towards the outlier
        cfg = {"observer": obs, "percentile": 99.9} if obs == "percentile" else {"observer": obs}
        q = mera.Quantizer((mod, params), config=cfg)
        q.calibrate(data)
        his[obs] = q.ranges()["x"]
        assert his[obs]["max"] == 40.0 and his[obs]["count"] == 100 * 108
    assert his["minmax"]["hi"] == 40.0
    assert his["percentile"]["hi"] < 20.0, his["percentile"]
    # PyTorch's histogram search and the MSE search keep this lone outlier
    # (clipping it costs more squared error than the coarser steps over 10800
    # values), and so does TensorRT's entropy rule (the bins between the body and
    # the outlier are empty); each is tested against its definition in
    # test_quant_observers.py. Here: the quantizer uses those observers.
    for obs in ("histogram", "entropy", "mse"):
        ref = mera._core.Observer(obs)
        for x in data:
            ref.update(x)
        assert (his[obs]["lo"], his[obs]["hi"]) == pytest.approx(ref.range(), rel=1e-7)


def test_quality_report_sees_a_bad_quantization():
    """One calibration batch with a huge outlier stretches the input's range
    (minmax observer): the report's PSNR drops, and its first layer shows where."""
    mod, params = small_graph()
    clean = inputs(64)
    spoiled = [x.copy() for x in clean]
    spoiled[0][0, 0, 0, 0] = 1000.0
    reports = {}
    for name, data in (("clean", clean), ("spoiled", spoiled)):
        q = mera.Quantizer((mod, params), config={"observer": "minmax"})
        q.calibrate(data)
        reports[name] = q.measure_quantization_quality(inputs(3, seed=7))
    good, bad = reports["clean"], reports["spoiled"]
    assert [x.name for x in good.layers] == ["x.quant", "c1", "c2", "flat", "fc"]
    assert good.psnr > 30 and good.outputs[0].grade == "very good", str(good)
    assert bad.psnr < good.psnr - 10, (good.psnr, bad.psnr)
    assert bad.worst_layers(1)[0].psnr == min(x.psnr for x in bad.layers)
    # the damage starts at the input's quantization, the first layer
    assert bad.layers[0].name == "x.quant" and bad.layers[0].psnr < good.layers[0].psnr - 30
    text = str(bad)
    assert "x.quant" in text and "PSNR" in text
    d = good.to_dict()
    assert d["outputs"][0]["grade"] == "very good" and len(d["layers"]) == 5 and d["samples"] == 3


def test_progress_line(capsys):
    mod, params = small_graph()
    q = mera.Quantizer((mod, params))
    q.calibrate(inputs(3), progress=True)
    err = capsys.readouterr().err
    assert "mera: calibrating" in err and "3/3" in err and err.endswith("\n")
    q.calibrate(inputs(3), progress=False)
    assert capsys.readouterr().err == ""


# -- errors ----------------------------------------------------------------------------------

def test_errors_name_what_and_where():
    mod, params = small_graph()
    with pytest.raises(ConfigError, match="unknown config key.*'observers'"):
        mera.Quantizer((mod, params), config={"observers": "minmax"})
    with pytest.raises(ConfigError, match="unknown observer 'kl'"):
        mera.Quantizer((mod, params), config={"observer": "kl"})
    with pytest.raises(ConfigError, match="'weight'.*per_row"):
        mera.Quantizer((mod, params), config={"weight": "per_row"})
    with pytest.raises(ConfigError, match="layout"):
        mera.Quantizer((mod, params), layout="HWC")
    with pytest.raises(ConfigError, match="input_shape"):
        mera.Quantizer(DigitsNet().eval())
    q = mera.Quantizer((mod, params))
    with pytest.raises(mera.GraphError, match="calibrate with at least one batch"):
        q.quantize()
    bad = inputs(1)[0]
    bad[0, 2, 3, 1] = np.nan
    with pytest.raises(RuntimeInputError, match=r"input 'x' holds a non-finite value at index 46"):
        q.calibrate([bad])
    assert q.num_calibrated == 0
    with pytest.raises(RuntimeInputError, match=r"shape \(1, 3, 6, 6\).*transpose"):
        q.calibrate([np.zeros((1, 3, 6, 6), np.float32)])
    with pytest.raises(RuntimeInputError, match="no calibration data"):
        q.calibrate([])
    q.calibrate(inputs(1))  # still usable
    q.quantize()


def test_already_quantized_graph_is_refused():
    b = ir.Builder("q")
    x = b.input("x", (1, 4), layout=None)
    y = b.quantize(x, scale=0.1, zero_point=3, dtype="uint8", name="qx")
    z = b.dequantize(y, name="dq")
    with pytest.raises(UnsupportedError, match="node 'qx' \\(quantize\\): the graph is already quantized"):
        mera.Quantizer((b.finish(z), {}))


def test_dead_weight_channels_keep_their_bias():
    """A conv output channel whose weights are so small (1e-37, left by training)
    that max|w| / 127 is a subnormal float32 made the requantization's
    act-times-weight scale underflow, bias / ats overflow and the channel
    saturate at the lowest level; onnxruntime's quantize_static gives such a
    channel scale 1. It is quantized as an all-zero channel now: its output is
    its bias."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1)).eval()
    with torch.no_grad():
        net[0].weight[1] = 1e-37 * torch.sign(net[0].weight[1])
        net[0].weight[2] = 1e-30 * torch.sign(net[0].weight[2])  # normal scale, tiny product with s_x
        net[0].bias.copy_(torch.tensor([0.3, -0.7, 0.45, 0.1]))
    rng = np.random.default_rng(0)
    cal = [rng.normal(0, 1, (1, 3, 12, 12)).astype(np.float32) for _ in range(4)]
    for obs in ("minmax", "histogram"):
        q = mera.Quantizer(net, input_shape=(1, 3, 12, 12), layout="NCHW", config={"observer": obs})
        q.calibrate(cal)
        mod, params = q.quantize()
        x = rng.normal(0, 1, (1, 3, 12, 12)).astype(np.float32)
        ref = net(torch.from_numpy(x)).detach().numpy()
        out = mera.compile(mod, params, target="InterpreterHw")(x)[0]
        conv = next(n for n in mod.nodes() if n["op"] == "conv2d")
        step = conv["attrs"]["out_scale"]
        for ch in (1, 2):
            assert np.abs(out[0, ch] - ref[0, ch]).max() <= step, (obs, ch)
        err = float(np.mean((out.astype(np.float64) - ref) ** 2))
        assert 10 * np.log10(float(np.abs(ref).max()) ** 2 / err) > 30
