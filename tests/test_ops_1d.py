"""1-D CNNs (audio, sensor and byte/token models): Conv1d, ConvTranspose1d and 1-D pools run as the 2-D
ops on [N, C, 1, L], in both frontends; GlobalMaxPool; int32 index inputs. Randomized, seeded
differential tests against PyTorch (fbgemm for the int8 path, bit-exact) and onnxruntime (float)."""

import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn as nn
from onnx import TensorProto, helper, numpy_helper

import mera
from mera import relay
from mera.frontend import from_onnx

torch.backends.quantized.engine = "fbgemm"


def _sim_and_hw(mod, params, x):
    hw = mera.compile(mod, params, target="InterpreterHw")(x)[0]
    with mera.build_config(target="Simulator"):
        sim = mera.compile(mod, params)(x)[0]
    return hw, sim


class Net1d(nn.Module):
    """Eager-PTQ 1-D CNN: conv-bn-relu, max pool, grouped dilated conv, an avg or adaptive pool, a transposed
    conv, global max and average pools, linear."""

    def __init__(self, rng):
        super().__init__()
        r = lambda lo, hi: int(rng.integers(lo, hi + 1))  # noqa: E731
        c0, c1, c2 = r(1, 5), r(2, 9), 2 * r(2, 8)
        self.q, self.dq = torch.ao.quantization.QuantStub(), torch.ao.quantization.DeQuantStub()
        k1 = r(1, 7)
        self.c1 = nn.Conv1d(c0, c1, k1, stride=r(1, 3), padding=r(0, k1 // 2))
        self.bn, self.r1 = nn.BatchNorm1d(c1), nn.ReLU()
        k = r(2, 4)
        self.p1 = nn.MaxPool1d(k, r(1, k), r(0, k // 2), ceil_mode=bool(rng.integers(2)))
        self.c2 = nn.Conv1d(c1, c2, 3, padding=r(0, 2), dilation=r(1, 2), groups=2 if c1 % 2 == 0 else 1)
        self.r2 = nn.ReLU()
        if rng.integers(2):
            k = r(2, 4)
            self.p2 = nn.AvgPool1d(k, r(1, k), r(0, k // 2), ceil_mode=bool(rng.integers(2)),
                                   count_include_pad=bool(rng.integers(2)))
        else:
            self.p2 = nn.AdaptiveAvgPool1d(r(1, 5))
        self.ct = nn.ConvTranspose1d(c2, c1, r(2, 4), stride=r(1, 2), padding=r(0, 1))
        self.fc = nn.Linear(c2 * 2 + c1, 5)

    def forward(self, x):
        x = self.q(x)
        x = self.p1(self.r1(self.bn(self.c1(x))))
        x = self.p2(self.r2(self.c2(x)))
        t = self.ct(x)
        g = nn.functional.max_pool1d(x, x.shape[2]).flatten(1)  # global max (TextCNN's form)
        a = nn.functional.adaptive_avg_pool1d(x, 1).flatten(1)
        m = nn.functional.adaptive_avg_pool1d(t, 1).flatten(1)
        return self.dq(self.fc(torch.cat([g, a, m], 1)))


def _ptq(model, shape, rng):
    model.eval()
    model.qconfig = torch.ao.quantization.get_default_qconfig("fbgemm")
    # fbgemm's transposed conv takes per-tensor weights only
    model.ct.qconfig = torch.ao.quantization.QConfig(activation=model.qconfig.activation,
                                                     weight=torch.ao.quantization.default_weight_observer)
    torch.ao.quantization.fuse_modules(model, [["c1", "bn", "r1"], ["c2", "r2"]], inplace=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.ao.quantization.prepare(model, inplace=True)
        for _ in range(4):
            model(torch.from_numpy(rng.normal(size=shape).astype(np.float32)))
        torch.ao.quantization.convert(model, inplace=True)
    return model


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("seed", range(6))
def test_quantized_1d_cnn_matches_fbgemm(seed, layout):
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    model = Net1d(rng)
    shape = (1, model.c1.in_channels, int(rng.integers(40, 140)))
    _ptq(model, shape, rng)
    x = torch.from_numpy(rng.normal(size=shape).astype(np.float32))
    with torch.no_grad():
        ref = model(x).numpy()
        traced = torch.jit.trace(model, x)
    kinds = {n.kind() for n in traced.inlined_graph.nodes()}
    assert {"quantized::conv1d_relu", "aten::max_pool1d", "aten::adaptive_avg_pool1d",
            "quantized::conv_transpose1d"} <= kinds
    mod, params = relay.frontend.from_pytorch(traced, [("input0", shape)], layout=layout)
    hw, sim = _sim_and_hw(mod, params, x.numpy())
    np.testing.assert_array_equal(hw, ref)
    np.testing.assert_array_equal(sim, hw)


@pytest.mark.parametrize("seed", range(4))
def test_float_1d_ops_match_pytorch(seed):
    """Float Conv1d / ConvTranspose1d / pools, traced, on the Interpreter."""
    rng = np.random.default_rng(50 + seed)
    torch.manual_seed(seed)
    model = Net1d(rng).eval()
    shape = (2, model.c1.in_channels, int(rng.integers(40, 140)))
    x = torch.from_numpy(rng.normal(size=shape).astype(np.float32))
    model.q = model.dq = nn.Identity()
    with torch.no_grad():
        ref = model(x).numpy()
        traced = torch.jit.trace(model, x)
    mod, params = relay.frontend.from_pytorch(traced, [("input0", shape)])
    out = mera.compile(mod, params, target="Interpreter")(x.numpy())[0]
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


def test_adaptive_max_pool_uneven_windows_raise():
    class M(nn.Module):
        def forward(self, x):
            return nn.functional.adaptive_max_pool1d(x, 3)
    x = torch.randn(1, 4, 10)
    traced = torch.jit.trace(M(), x)
    with pytest.raises(mera.UnsupportedError, match="adaptive_max_pool1d from 1x10 to 1x3"):
        relay.frontend.from_pytorch(traced, [("input0", (1, 4, 10))])
    mod, params = relay.frontend.from_pytorch(torch.jit.trace(M(), torch.randn(1, 4, 12)), [("input0", (1, 4, 12))])
    x = torch.randn(1, 4, 12)
    np.testing.assert_array_equal(mera.compile(mod, params, target="Interpreter")(x.numpy())[0],
                                  nn.functional.adaptive_max_pool1d(x, 3).numpy())


def _onnx_1d_model(rng, length):
    c0, c1, c2 = 3, 8, 6
    w1 = rng.normal(size=(c1, c0, 5)).astype(np.float32) * 0.3
    b1 = rng.normal(size=c1).astype(np.float32)
    w2 = rng.normal(size=(c1, c2 // 2, 4)).astype(np.float32) * 0.3  # ConvTranspose, group 2: [I, O/g, k]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], strides=[2], pads=[2, 1], dilations=[1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[3], strides=[2], pads=[1, 1]),
             helper.make_node("AveragePool", ["p1"], ["p2"], kernel_shape=[2], auto_pad="SAME_UPPER"),
             helper.make_node("ConvTranspose", ["p2", "w2"], ["t"], strides=[2], group=2),
             helper.make_node("GlobalMaxPool", ["t"], ["gm"]),
             helper.make_node("GlobalAveragePool", ["t"], ["ga"]),
             helper.make_node("Concat", ["gm", "ga"], ["y"], axis=1)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c0, length])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"))])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_onnx_1d_cnn_vs_onnxruntime(layout):
    rng = np.random.default_rng(7)
    m = _onnx_1d_model(rng, 97)
    xs = [rng.normal(size=(1, 3, 97)).astype(np.float32) for _ in range(5)]
    sess = ort.InferenceSession(m.SerializeToString())
    refs = [sess.run(None, {"x": x})[0] for x in xs]
    mod, params = from_onnx(m, layout=layout)
    interp = mera.compile(mod, params, target="Interpreter")
    for x, r in zip(xs, refs):
        np.testing.assert_allclose(interp(x)[0], r, rtol=1e-5, atol=1e-5)
    q = mera.Quantizer((mod, params), layout=layout)
    q.calibrate(xs[:4])
    qm, qp = q.quantize()
    hw, sim = _sim_and_hw(qm, qp, xs[4])
    np.testing.assert_array_equal(sim, hw)
    err = hw - refs[4]
    assert 10 * np.log10(np.mean(refs[4] ** 2) / np.mean(err ** 2)) > 25
    # the convs and pools are 2-D ops on a unit axis, which the DNA runs
    ops = {n["op"] for n in qm.nodes()}
    assert {"conv2d", "max_pool2d", "conv_transpose2d"} <= ops


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_global_max_pool_2d_is_a_max_pool(layout):
    rng = np.random.default_rng(3)
    g = helper.make_graph([helper.make_node("GlobalMaxPool", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5, 7, 9])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    x = rng.normal(size=(2, 5, 7, 9)).astype(np.float32)
    mod, params = from_onnx(m, layout=layout)
    assert [n["op"] for n in mod.nodes() if n["op"] != "transpose"] == ["max_pool2d"]
    xin = np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if layout == "NHWC" else x
    out = mera.compile(mod, params, target="Interpreter")(xin)[0]
    out = out.transpose(0, 3, 1, 2) if layout == "NHWC" else out
    np.testing.assert_array_equal(out, x.max(axis=(2, 3), keepdims=True))


def test_int32_index_input_embedding_conv1d():
    """A byte/token model: int32 ids -> Gather (embedding) -> Conv1d -> GlobalMaxPool; the Quantizer keeps the
    ids as they are."""
    rng = np.random.default_rng(0)
    table = rng.normal(size=(256, 8)).astype(np.float32)
    w = rng.normal(size=(6, 8, 3)).astype(np.float32)
    nodes = [helper.make_node("Gather", ["table", "ids"], ["e"], axis=0),
             helper.make_node("Transpose", ["e"], ["t"], perm=[0, 2, 1]),
             helper.make_node("Conv", ["t", "w"], ["c"], pads=[1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalMaxPool", ["r"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("ids", TensorProto.INT32, [1, 50])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(table, "table"), numpy_helper.from_array(w, "w")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    ids = [rng.integers(0, 256, size=(1, 50)).astype(np.int32) for _ in range(5)]
    sess = ort.InferenceSession(m.SerializeToString())
    mod, params = from_onnx(m)
    assert mod.inputs[0]["dtype"] == "int32"
    for target in ("Interpreter", "InterpreterHw"):
        np.testing.assert_allclose(mera.compile(mod, params, target=target)(ids[4])[0],
                                   sess.run(None, {"ids": ids[4]})[0], rtol=1e-5, atol=1e-5)
    q = mera.Quantizer((mod, params))
    q.calibrate(ids[:4])
    qm, qp = q.quantize()
    assert qm.inputs[0]["dtype"] == "int32"
    hw, sim = _sim_and_hw(qm, qp, ids[4])
    np.testing.assert_array_equal(sim, hw)
    ref = sess.run(None, {"ids": ids[4]})[0]
    assert np.abs(hw - ref).max() < 0.05 * np.abs(ref).max()


def test_1d_attribute_errors_name_the_field():
    g = helper.make_graph([helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 20])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(mera.UnsupportedError, match="kernel_shape"):
        from_onnx(m)
