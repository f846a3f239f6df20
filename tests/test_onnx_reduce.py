"""ONNX's run-time Reduce* ops (mera's float reduce op on the host) against onnxruntime:
every kind, axes as attribute (opset 13/17) or input (opset 18), keepdims, noop_with_empty_axes,
random seeded shapes, both import layouts; unsupported forms raise UnsupportedError."""

import zlib

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import mera  # noqa: E402
from mera.frontend import from_onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

OPS = ("ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSum",
       "ReduceLogSumExp", "ReduceSumSquare", "ReduceMean")


def model_for(op, shape, axes, keepdims, opset, noop=None):
    inits, ins = [], ["x"]
    attrs = {"keepdims": keepdims}
    axes_input = opset >= 18 or (op == "ReduceSum" and opset >= 13)
    if axes is not None:
        if axes_input:
            inits.append(numpy_helper.from_array(np.asarray(axes, np.int64), "axes"))
            ins.append("axes")
        else:
            attrs["axes"] = axes
    if noop is not None:
        attrs["noop_with_empty_axes"] = noop
    node = helper.make_node(op, ins, ["y"], **attrs)
    g = helper.make_graph([node], "r", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def run_ort(model, x):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def run_mera(model, x, layout):
    mod, params = from_onnx(model, layout=layout)
    xin = np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if layout == "NHWC" and x.ndim == 4 else x
    out = mera.compile(mod, params, target="Interpreter")(xin)[0]
    if layout == "NHWC" and out.ndim == 4:
        out = np.ascontiguousarray(out.transpose(0, 3, 1, 2))
    return out, mod


@pytest.mark.parametrize("opset", [13, 17, 18])
@pytest.mark.parametrize("op", OPS)
def test_reduce_vs_onnxruntime(op, opset):
    rng = np.random.default_rng(zlib.crc32(f"{op} {opset}".encode()))
    for trial in range(6):
        rank = int(rng.integers(1, 5))
        shape = tuple(int(v) for v in rng.integers(1, 6, rank))
        if rng.random() < 0.2:
            axes = None
        else:
            k = int(rng.integers(1, rank + 1))
            axes = [int(a) - (rank if rng.random() < 0.3 else 0) for a in rng.choice(rank, k, replace=False)]
        keep = int(rng.integers(0, 2))
        model = model_for(op, shape, axes, keep, opset)
        x = rng.standard_normal(shape).astype(np.float32)
        if op in ("ReduceLogSum", "ReduceProd"):
            x = np.abs(x) + 0.5
        ref = run_ort(model, x)
        for layout in ("NCHW", "NHWC"):
            out, mod = run_mera(model, x, layout)
            assert out.shape == ref.shape, (shape, axes, keep, layout)
            np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5, err_msg=f"{shape} {axes} {keep} {layout}")
            if op != "ReduceMean":
                assert "reduce" in [n["op"] for n in mod.nodes()]


def test_reduce_noop_with_empty_axes():
    model = model_for("ReduceMax", (2, 3, 4), [], 1, 18, noop=1)
    x = np.random.default_rng(1).standard_normal((2, 3, 4)).astype(np.float32)
    out, _ = run_mera(model, x, "NCHW")
    np.testing.assert_array_equal(out, run_ort(model, x))


def test_reduce_max_propagates_nan():
    model = model_for("ReduceMax", (2, 4), [1], 0, 17)
    x = np.array([[1, np.nan, 3, 2], [0, -1, 5, 4]], np.float32)
    out, _ = run_mera(model, x, "NCHW")
    assert np.isnan(out[0]) and out[1] == 5


@pytest.mark.parametrize("axes,msg", [([3], "axis 3 is out of range"), ([-4], "axis -4 is out of range")])
def test_reduce_bad_axes_raise(axes, msg):
    model = model_for("ReduceSum", (2, 3, 4), axes, 1, 17)
    with pytest.raises(mera.UnsupportedError, match=msg):
        from_onnx(model)


def test_reduce_runtime_axes_raise():
    """Axes given as a run-time (int64) graph input are refused, naming the input."""
    node = helper.make_node("ReduceSum", ["x", "a"], ["y"], name="rsum")
    g = helper.make_graph([node], "r", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
                                        helper.make_tensor_value_info("a", TensorProto.INT64, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    with pytest.raises(mera.UnsupportedError, match="input 'a'"):
        from_onnx(model)
