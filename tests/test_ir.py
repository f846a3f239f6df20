"""The IR from Python: building, printing, round trips, and errors that name the node."""

import os

import numpy as np
import pytest

import mera
from mera import ir

REQUIRED_OPS = {
    "conv2d", "dense", "add", "mul", "concat", "relu", "clip", "hardswish", "hardsigmoid", "sigmoid",
    "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "mean", "flatten", "reshape", "transpose", "pad",
    "upsample", "softmax", "quantize", "dequantize", "requantize",
}


def small_conv_net(seed=0):
    """A float conv net and a quantized tail, built from NumPy arrays."""
    rng = np.random.default_rng(seed)
    b = ir.Builder("small")
    x = b.input("input0", (1, 3, 32, 32), "float32", layout="NCHW")
    w1 = b.param("conv1.weight", rng.standard_normal((16, 3, 3, 3), dtype=np.float32))
    b1 = b.const(rng.standard_normal(16, dtype=np.float32), name="conv1.bias")
    y = b.conv2d(x, w1, b1, strides=[2, 2], padding=[1, 1, 1, 1], activation="relu", name="conv1")
    dw = b.param("dw.weight", rng.standard_normal((16, 1, 3, 3), dtype=np.float32))
    y = b.conv2d(y, dw, None, padding=[1, 1, 1, 1], groups=16, name="dw")
    y = b.clip(y, a_min=0.0, a_max=6.0)
    y = b.max_pool2d(y, kernel=[2, 2], strides=[2, 2])
    q = b.quantize(y, scale=0.05, zero_point=3, dtype="uint8")
    qw = b.const(rng.integers(-127, 128, (8, 16, 1, 1), dtype=np.int8), name="pw.weight",
                 qparams=(rng.uniform(0.001, 0.01, 8), np.zeros(8, np.int32), 0))
    q = b.conv2d(q, qw, np.zeros(8, np.float32), out_scale=0.1, out_zero_point=0, activation="relu", name="pw")
    q = b.adaptive_avg_pool2d(q)
    y = b.dequantize(q)
    y = b.flatten(y)
    fw = b.param("fc.weight", rng.standard_normal((10, 8), dtype=np.float32))
    y = b.dense(y, fw, np.zeros(10, np.float32), name="fc")
    y = b.softmax(y, axis=-1)
    return b.finish(y), b.params


def test_op_table_covers_the_cnn_op_set():
    assert REQUIRED_OPS <= set(ir.OPS)
    info = ir.op_info("conv2d")
    assert info["inputs"] == ["data", "weight", "bias"]
    names = {a["name"]: a for a in info["attrs"]}
    assert names["groups"]["default"] == "1"
    assert names["layout"]["choices"] == "NCHW|NHWC"


def test_small_conv_net_prints_and_round_trips():
    mod, params = small_conv_net()
    text = str(mod)
    assert text.startswith('graph "small" {')
    assert "input %input0: f32[1,3,32,32] NCHW" in text
    assert "%conv1 = conv2d(%input0, %conv1.weight, %conv1.bias)" in text
    assert "%dw = conv2d(%conv1, %dw.weight, _)" in text
    assert "groups=16" in text
    assert ": u8[1,8,8,8] NCHW q(0.10000000000000001, 0)" in text
    assert "output %softmax" in text
    assert set(params) == {"conv1.weight", "dw.weight", "fc.weight"}
    assert mod.param_names == ["conv1.weight", "dw.weight", "fc.weight"]
    assert [i["name"] for i in mod.inputs] == ["input0"]
    assert mod.outputs[0]["shape"] == (1, 10)

    data = mod.serialize()
    mod2 = ir.Module.deserialize(data)
    assert str(mod2) == text
    assert mod2.serialize() == data
    # per-axis weight parameters survive bit for bit
    w = [n for n in mod2.nodes() if n["name"] == "pw"][0]
    qp = mod2._graph.value(w["inputs"][1])["qparams"]
    qp0 = mod._graph.value(w["inputs"][1])["qparams"]
    np.testing.assert_array_equal(qp[0], qp0[0])
    assert qp[2] == 0


def test_const_is_borrowed_without_copy():
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    b = ir.Builder()
    c = b.const(arr, name="c")
    mod = b.finish(b.relu(c))
    view = mod._graph.const_data(c.id)
    assert np.shares_memory(view, arr)
    # a non-contiguous array is copied once, and the copy is kept alive
    b2 = ir.Builder()
    c2 = b2.const(arr.T, name="t")
    mod2 = b2.finish(b2.relu(c2))
    del arr
    np.testing.assert_array_equal(mod2._graph.const_data(c2.id), np.arange(12, dtype=np.float32).reshape(3, 4).T)


def test_save_and_load_are_atomic_and_checked(tmp_path):
    mod, _ = small_conv_net()
    path = tmp_path / "model.mera"
    mod.save(path)
    assert os.listdir(tmp_path) == ["model.mera"]  # no temporary left behind
    assert str(ir.Module.load(path)) == str(mod)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(mera.FormatError, match="model.mera: checksum mismatch"):
        ir.Module.load(path)
    path.write_bytes(bytes(data[:40]))
    with pytest.raises(mera.FormatError, match="truncated"):
        ir.Module.load(path)
    with pytest.raises(mera.MeraIOError, match="cannot read IR file"):
        ir.Module.load(tmp_path / "missing.mera")


def test_every_truncation_is_rejected():
    mod, _ = small_conv_net()
    data = mod.serialize()
    for cut in range(0, len(data), max(1, len(data) // 300)):
        with pytest.raises(mera.FormatError):
            ir.Module.deserialize(data[:cut])


def test_wrong_shape_names_node_and_input():
    b = ir.Builder()
    x = b.input("x", (1, 3, 8, 8))
    w = b.param("w", np.zeros((4, 5, 3, 3), np.float32))
    with pytest.raises(mera.ShapeError) as e:
        b.conv2d(x, w, name="conv_a")
    msg = str(e.value)
    assert "node 'conv_a' (conv2d)" in msg
    assert "input 1 (weight) 'w'" in msg
    assert "5 input channels per group" in msg
    with pytest.raises(mera.ShapeError, match=r"node 'sum' \(add\): shapes \[1,3,8,8\] \('x'\) and \[7\] \('c'\)"):
        b.add(x, b.const(np.zeros(7, np.float32), name="c"), name="sum")
    with pytest.raises(mera.ShapeError, match="node 'rs' .*cannot reshape"):
        b.reshape(x, shape=[5, -1], name="rs")
    with pytest.raises(mera.ShapeError, match="input .big.: rank 7 exceeds the maximum of 6"):
        b.input("big", (1,) * 7)


def test_wrong_dtype_names_node_and_input():
    b = ir.Builder()
    x = b.input("x", (1, 3, 8, 8), "uint8", qparams=(0.1, 128))
    w = b.param("w", np.zeros((4, 3, 3, 3), np.float32))
    with pytest.raises(mera.DtypeError) as e:
        b.conv2d(x, w, name="qconv")
    assert "node 'qconv' (conv2d)" in str(e.value)
    assert "input 1 (weight) 'w' must be a quantized int8 tensor" in str(e.value)
    f = b.input("f", (1, 3, 8, 8))
    with pytest.raises(mera.DtypeError, match=r"node 'mix' \(add\): input 1 \(rhs\) 'f' has dtype float32"):
        b.add(x, f, name="mix")
    with pytest.raises(mera.DtypeError, match="node 'dq' .*must be a quantized"):
        b.dequantize(f, name="dq")
    with pytest.raises(mera.DtypeError, match="unknown dtype"):
        b.input("y", (1,), "complex64")
    with pytest.raises(mera.DtypeError, match="zero point 300 is out of range"):
        b.input("z", (1, 4), "uint8", qparams=(0.1, 300))
    with pytest.raises(mera.DtypeError, match="3 scales given for axis 0 of size 4"):
        b.param("pw", np.zeros((4, 2), np.int8), qparams=(np.ones(3), np.zeros(3), 0))
    assert isinstance(e.value, mera.MeraError) and isinstance(e.value, TypeError)


def test_unknown_ops_and_attributes():
    b = ir.Builder()
    x = b.input("x", (1, 3, 8, 8))
    with pytest.raises(mera.UnknownOpError, match="unknown op 'conv3d'; known ops: conv2d, dense"):
        b.op("conv3d", x)
    with pytest.raises(AttributeError, match="no op of that name"):
        b.conv3d(x)
    with pytest.raises(mera.AttrError, match=r"node 'r' \(relu\): unknown attribute 'alpha'; relu takes: \(none\)"):
        b.relu(x, alpha=0.1, name="r")
    with pytest.raises(mera.AttrError, match="unknown attribute 'stride'; max_pool2d takes: kernel, strides"):
        b.max_pool2d(x, kernel=[2, 2], stride=[2, 2])
    with pytest.raises(mera.AttrError, match="missing required attribute 'strides'"):
        b.max_pool2d(x, kernel=[2, 2])
    with pytest.raises(mera.AttrError, match="'strides' must have 2 values, got 3"):
        b.conv2d(x, b.param("w", np.zeros((3, 3, 1, 1), np.float32)), strides=[1, 1, 1])
    with pytest.raises(mera.AttrError, match="'method' is 'lanczos'; it must be one of nearest|bilinear|cubic"):
        b.upsample(x, method="lanczos", scales=[2.0, 2.0])
    with pytest.raises(mera.AttrError, match="method cubic needs an ONNX coordinate_mode"):
        b.upsample(x, method="cubic", scales=[2.0, 2.0])
    with pytest.raises(mera.AttrError, match="attribute 'axis' .*has unsupported type dict|attribute 'axis' must be int"):
        b.softmax(x, axis={})
    with pytest.raises(mera.GraphError, match="name 'x' is already used"):
        b.relu(x, name="x")
    # a failed node leaves nothing behind
    assert len(b.finish(x)) == 0


def test_builder_infers_every_op():
    b = ir.Builder()
    x = b.input("x", (2, 8, 10, 12), layout="NCHW")
    n = b.input("n", (2, 10, 12, 8), layout="NHWC")
    assert b.avg_pool2d(x, kernel=[3, 3], strides=[2, 2], padding=[1, 1, 1, 1]).shape == (2, 8, 5, 6)
    assert b.max_pool2d(n, kernel=[3, 3], strides=[2, 2], layout="NHWC", ceil_mode=1).shape == (2, 5, 6, 8)
    assert b.adaptive_avg_pool2d(x, output_size=[3, 4]).shape == (2, 8, 3, 4)
    assert b.upsample(n, size=[20, 24], method="bilinear", layout="NHWC").shape == (2, 20, 24, 8)
    assert b.mean(x, axes=[2, 3]).shape == (2, 8)
    assert b.concat(x, x, x, axis=1).shape == (2, 24, 10, 12)
    assert b.transpose(x, axes=[0, 2, 3, 1]).layout == "NHWC"
    assert b.pad(x, pads=[0, 0, 1, 1, 0, 0, 1, 1]).shape == (2, 8, 12, 14)
    assert b.flatten(x, start_axis=2).shape == (2, 8, 120)
    assert b.mul(x, b.const(np.ones((8, 1, 1), np.float32))).shape == (2, 8, 10, 12)
    for op in ("hardswish", "hardsigmoid", "sigmoid", "relu", "leaky_relu"):
        assert b.op(op, x).shape == x.shape
    q = b.quantize(x, scale=0.1, zero_point=0, dtype="int8")
    assert q.dtype == "int8" and q.qparams == (pytest.approx(0.1), 0)
    r = b.requantize(q, out_scale=0.2, out_zero_point=5, out_dtype="uint8")
    assert r.dtype == "uint8" and r.qparams[1] == 5
    with pytest.raises(mera.ShapeError, match="layout NHWC but the op's layout attribute is NCHW"):
        b.max_pool2d(n, kernel=[2, 2], strides=[2, 2])
    with pytest.raises(mera.AttrError, match="apply to quantized inputs"):
        b.add(x, x, out_scale=0.1, out_zero_point=0)
