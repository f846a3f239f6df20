"""Run-time integer and rounding ops of ONNX graphs (floor, ceil, round, cast, int_arith) and onnxruntime's
float Sigmoid, against onnxruntime (graph optimizations off).

Old onnxruntime quantize_dynamic graphs (ddddocr's common_old.onnx) quantize each ConvInteger's bias in the
graph: Floor(bias / (x_scale * w_scale)), Cast to int32, an int32 Add to the ConvInteger's sums, Cast back to
float, Mul by the scales; SiLU between layers and DynamicQuantizeLinear before the next. Any one-ulp difference
before a DynamicQuantizeLinear may move a value across a rounding boundary, so these are checked bit for bit.
"""

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import mera
from mera.frontend import from_onnx

TARGETS = ("Interpreter", "InterpreterHw")


def ort_run(model, feeds):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def model(nodes, inputs, outputs, inits=(), opset=17):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
                          [helper.make_tensor_value_info(n, t, None) for n, t in outputs],
                          [numpy_helper.from_array(v, k) for k, v in inits])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def run_mera(m, feeds, target):
    mod, params = from_onnx(m, layout="NCHW")
    return [np.asarray(o) for o in mera.compile(mod, params, target=target)(*feeds.values())]


def same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def test_sigmoid_is_onnxruntimes_bit_for_bit():
    """ONNX Sigmoid imports with float_form=onnxruntime: MLAS's logistic, every bit, NaN and the clamp included."""
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(0, 6, 20000), rng.uniform(-30, 30, 5000),
                        [0.0, -0.0, 18, -18, 17.999, 19, -19, 1e30, -1e30, np.inf, -np.inf, np.nan, 1e-40]])
    x = x.astype(np.float32).reshape(1, -1)
    m = model([helper.make_node("Sigmoid", ["x"], ["y"])], [("x", x.shape)], [("y", TensorProto.FLOAT)])
    ref, = ort_run(m, {"x": x})
    for t in TARGETS:
        out, = run_mera(m, {"x": x}, t)
        assert same_bits(out, ref), (t, np.sum(out.view(np.uint32) != ref.view(np.uint32)))


def test_floor_ceil_round():
    """Round halves to even (ONNX), Floor and Ceil; halves, negative zero and large values included."""
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.normal(0, 50, 3000), np.arange(-8, 8.5, 0.5), [-0.0, 0.49999997, 8388609.0, 1e20, np.inf,
                                                                         -np.inf, np.nan]])
    x = x.astype(np.float32).reshape(1, 1, 1, -1)
    for op in ("Floor", "Ceil", "Round"):
        m = model([helper.make_node(op, ["x"], ["y"])], [("x", x.shape)], [("y", TensorProto.FLOAT)])
        ref, = ort_run(m, {"x": x})
        np.testing.assert_array_equal(ref, {"Floor": np.floor, "Ceil": np.ceil, "Round": np.round}[op](x))
        for layout in ("NCHW", "NHWC"):
            mod, params = from_onnx(m, layout=layout)
            xin = x if layout == "NCHW" else x.transpose(0, 2, 3, 1)
            out = np.asarray(mera.compile(mod, params, target="Interpreter")(xin)[0])
            out = out if layout == "NCHW" else out.transpose(0, 3, 1, 2)
            assert same_bits(out, ref), (op, layout)


_INT = {TensorProto.INT32: np.int32, TensorProto.INT64: np.int64, TensorProto.UINT8: np.uint8,
        TensorProto.INT8: np.int8}


@pytest.mark.parametrize("to", sorted(_INT))
def test_cast_float_to_integer_and_back(to):
    """float32 -> int truncates toward zero (in range, where ONNX defines it) -> float32 exactly."""
    rng = np.random.default_rng(to)
    info = np.iinfo(_INT[to])
    lo, hi = max(info.min, -2 ** 24), min(info.max, 2 ** 24)
    x = rng.uniform(lo, hi, (2, 3, 7, 5)).astype(np.float32)
    x.flat[:6] = [0.5, -0.5, 0.99, -0.99, lo, hi]
    m = model([helper.make_node("Cast", ["x"], ["i"], to=to), helper.make_node("Cast", ["i"], ["y"], to=1)],
              [("x", x.shape)], [("i", to), ("y", TensorProto.FLOAT)])
    ref = ort_run(m, {"x": x})
    np.testing.assert_array_equal(ref[0], np.trunc(x).astype(_INT[to]))
    for t in TARGETS:
        out = run_mera(m, {"x": x}, t)
        assert same_bits(out[0], ref[0]) and same_bits(out[1], ref[1]), t


def test_cast_out_of_range_saturates():
    """ONNX leaves float -> int out of range undefined; mera saturates (NaN -> 0), which docs/numerics.md says."""
    x = np.array([[3e9, -3e9, 300.0, -300.0, np.inf, -np.inf, np.nan, 1e30]], np.float32)
    want = {TensorProto.INT32: [2147483647, -2147483648, 300, -300, 2147483647, -2147483648, 0, 2147483647],
            TensorProto.INT64: [3000000000, -3000000000, 300, -300, 2 ** 63 - 1, -2 ** 63, 0, 2 ** 63 - 1],
            TensorProto.UINT8: [255, 0, 255, 0, 255, 0, 0, 255],
            TensorProto.INT8: [127, -128, 127, -128, 127, -128, 0, 127]}
    for to, w in want.items():
        m = model([helper.make_node("Cast", ["x"], ["y"], to=to)], [("x", x.shape)], [("y", to)])
        out, = run_mera(m, {"x": x}, "Interpreter")
        np.testing.assert_array_equal(out, np.array([w], _INT[to]), err_msg=str(to))


def test_cast_between_integers_wraps():
    """int32 -> uint8 / int8 keeps the low bits (two's complement), as onnxruntime's static_cast."""
    rng = np.random.default_rng(5)
    x = rng.integers(-100000, 100000, (1, 64)).astype(np.float32)
    for to in (TensorProto.UINT8, TensorProto.INT8, TensorProto.INT64):
        m = model([helper.make_node("Cast", ["x"], ["i"], to=TensorProto.INT32),
                   helper.make_node("Cast", ["i"], ["y"], to=to)], [("x", x.shape)], [("y", to)])
        ref, = ort_run(m, {"x": x})
        np.testing.assert_array_equal(ref, x.astype(np.int32).astype(_INT[to]))
        out, = run_mera(m, {"x": x}, "Interpreter")
        assert same_bits(out, ref), to


@pytest.mark.parametrize("seed", range(4))
def test_int_arith_broadcasting(seed):
    """int32 and int64 Add/Sub/Mul of two run-time tensors and of a tensor and a constant, broadcasting, with
    products and sums that wrap."""
    rng = np.random.default_rng(seed)
    rank = int(rng.integers(1, 5))
    shape = [int(rng.integers(1, 6)) for _ in range(rank)]
    other = [d if rng.random() < 0.6 else 1 for d in shape][int(rng.integers(0, rank)):]
    for to, dt, big in ((TensorProto.INT32, np.int32, 2 ** 20), (TensorProto.INT64, np.int64, 2 ** 40)):
        x = rng.integers(-big, big, shape).astype(np.float32)
        y = rng.integers(-big, big, other).astype(np.float32)
        c = rng.integers(-2 ** 30, 2 ** 30, other).astype(dt)
        for op in ("Add", "Sub", "Mul"):
            nodes = [helper.make_node("Cast", ["x"], ["xi"], to=to), helper.make_node("Cast", ["y"], ["yi"], to=to),
                     helper.make_node(op, ["xi", "yi"], ["a"]), helper.make_node(op, ["c", "a"], ["b"]),
                     helper.make_node("Cast", ["b"], ["f"], to=1)]
            m = model(nodes, [("x", x.shape), ("y", y.shape)], [("b", to), ("f", TensorProto.FLOAT)], [("c", c)])
            ref = ort_run(m, {"x": x, "y": y})
            with np.errstate(over="ignore"):
                f = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply}[op]
                want = f(c, f(x.astype(dt), y.astype(dt)))
            np.testing.assert_array_equal(ref[0], want)
            for t in TARGETS:
                out = run_mera(m, {"x": x, "y": y}, t)
                assert same_bits(out[0], ref[0]) and same_bits(out[1], ref[1]), (op, dt, t, shape, other)


def _old_dynamic_conv_block(rng, c_in, c_out, k, stride, name):
    """One ConvInteger layer as old quantize_dynamic writes it, with its bias quantized in the graph, then SiLU."""
    w = rng.integers(-127, 128, (c_out, c_in, k, k)).astype(np.int8)
    bias = rng.normal(0, 2, c_out).astype(np.float32)
    w_scale = np.array(rng.uniform(0.002, 0.02), np.float32)
    inits = [(f"{name}_w", w), (f"{name}_w_scale", w_scale), (f"{name}_w_zp", np.array(0, np.int8)),
             (f"{name}_bias", bias), (f"{name}_bshape", np.array([1, c_out, 1, 1], np.int64))]
    x = f"{name}_in"
    nodes = [
        helper.make_node("DynamicQuantizeLinear", [x], [f"{name}_xq", f"{name}_xs", f"{name}_xzp"]),
        helper.make_node("Mul", [f"{name}_xs", f"{name}_w_scale"], [f"{name}_bs"]),
        helper.make_node("Div", [f"{name}_bias", f"{name}_bs"], [f"{name}_bdiv"]),
        helper.make_node("Floor", [f"{name}_bdiv"], [f"{name}_bfloor"]),
        helper.make_node("Cast", [f"{name}_bfloor"], [f"{name}_bq"], to=TensorProto.INT32),
        helper.make_node("ConvInteger", [f"{name}_xq", f"{name}_w", f"{name}_xzp", f"{name}_w_zp"], [f"{name}_acc"],
                         kernel_shape=[k, k], pads=[k // 2] * 4, strides=[stride, stride]),
        helper.make_node("Reshape", [f"{name}_bq", f"{name}_bshape"], [f"{name}_bq4"]),
        helper.make_node("Add", [f"{name}_acc", f"{name}_bq4"], [f"{name}_accb"]),
        helper.make_node("Cast", [f"{name}_accb"], [f"{name}_accf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", [f"{name}_xs", f"{name}_w_scale"], [f"{name}_os"]),
        helper.make_node("Mul", [f"{name}_accf", f"{name}_os"], [f"{name}_y"]),
        helper.make_node("Sigmoid", [f"{name}_y"], [f"{name}_sig"]),
        helper.make_node("Mul", [f"{name}_y", f"{name}_sig"], [f"{name}_out"]),
    ]
    return nodes, inits


@pytest.mark.parametrize("seed", range(3))
def test_old_quantize_dynamic_conv_stack_matches_onnxruntime(seed):
    """A stack of old-style dynamically quantized conv layers (random seeded shapes) gives onnxruntime's bytes."""
    rng = np.random.default_rng(100 + seed)
    h, w = int(rng.integers(6, 20)), int(rng.integers(6, 20))
    chans = [int(rng.integers(1, 4))] + [int(rng.integers(2, 24)) for _ in range(4)]
    nodes, inits, prev = [], [], "x"
    for i in range(4):
        blk, ini = _old_dynamic_conv_block(rng, chans[i], chans[i + 1], int(rng.choice([1, 3])),
                                           int(rng.choice([1, 2])) if i == 1 else 1, f"l{i}")
        nodes += [helper.make_node("Identity", [prev], [f"l{i}_in"])] + blk
        inits += ini
        prev = f"l{i}_out"
    shape = (1, chans[0], h, w)
    m = model(nodes, [("x", shape)], [(prev, TensorProto.FLOAT)], inits, opset=13)
    for _ in range(3):
        x = rng.uniform(-1, 1, shape).astype(np.float32)
        ref, = ort_run(m, {"x": x})
        for t in TARGETS:
            out, = run_mera(m, {"x": x}, t)
            assert same_bits(out, ref), (t, np.abs(out - ref).max())


@pytest.mark.parametrize("case", ["cast_to_float16", "cast_quantized", "add_int8", "floor_int", "div_int32"])
def test_unsupported_integer_forms_raise(case):
    x = np.zeros((1, 4), np.float32)
    nodes = {
        "cast_to_float16": [helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT16)],
        "cast_quantized": [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
                           helper.make_node("Cast", ["q"], ["y"], to=TensorProto.INT32)],
        "add_int8": [helper.make_node("Cast", ["x"], ["i"], to=TensorProto.INT8),
                     helper.make_node("Add", ["i", "i"], ["y"])],
        "floor_int": [helper.make_node("Cast", ["x"], ["i"], to=TensorProto.INT32),
                      helper.make_node("Floor", ["i"], ["y"])],
        "div_int32": [helper.make_node("Cast", ["x"], ["i"], to=TensorProto.INT32),
                      helper.make_node("Div", ["i", "i"], ["y"])],
    }[case]
    inits = [("s", np.array(0.1, np.float32)), ("z", np.array(0, np.uint8))] if case == "cast_quantized" else []
    m = model(nodes, [("x", x.shape)], [("y", TensorProto.UNDEFINED)], inits)
    with pytest.raises(mera.UnsupportedError):
        from_onnx(m, layout="NCHW")


@pytest.mark.parametrize("target", ["Simulator", "IP"])
def test_old_quantize_dynamic_conv_stack_on_the_dna_targets(target):
    """floor, cast and int_arith fall back to the host on the DNA targets and in the deployed runtime."""
    rng = np.random.default_rng(7)
    nodes, inits = [], []
    for i, (ci, co) in enumerate([(1, 8), (8, 6)]):
        blk, ini = _old_dynamic_conv_block(rng, ci, co, 3, 1, f"l{i}")
        nodes += [helper.make_node("Identity", ["x" if i == 0 else "l0_out"], [f"l{i}_in"])] + blk
        inits += ini
    m = model(nodes, [("x", (1, 1, 9, 11))], [("l1_out", TensorProto.FLOAT)], inits, opset=13)
    x = rng.uniform(-1, 1, (1, 1, 9, 11)).astype(np.float32)
    ref, = ort_run(m, {"x": x})
    mod, params = from_onnx(m, layout="NCHW")
    out = np.asarray(mera.compile(mod, params, target=target)(x)[0])
    assert same_bits(out, ref), np.abs(out - ref).max()


def test_old_quantize_dynamic_conv_stack_through_mera_quantizer():
    """mera.Quantizer keeps the integer ops float-side on the host (their plain integers stay as they are):
    the int8 model is close to the float one, and the Simulator gives InterpreterHw's bytes."""
    rng = np.random.default_rng(11)
    nodes, inits = [], []
    for i, (ci, co) in enumerate([(1, 8), (8, 8)]):
        blk, ini = _old_dynamic_conv_block(rng, ci, co, 3, 1, f"l{i}")
        nodes += [helper.make_node("Identity", ["x" if i == 0 else "l0_out"], [f"l{i}_in"])] + blk
        inits += ini
    m = model(nodes, [("x", (1, 1, 12, 12))], [("l1_out", TensorProto.FLOAT)], inits, opset=13)
    xs = [rng.uniform(-1, 1, (1, 1, 12, 12)).astype(np.float32) for _ in range(6)]
    mod, params = from_onnx(m, layout="NCHW")
    q = mera.Quantizer((mod, params), layout="NCHW")
    q.calibrate(xs[:4])
    qmod, qparams = q.quantize()
    hw = mera.compile(qmod, qparams, target="InterpreterHw")
    with mera.build_config(target="Simulator", arch=100):
        sim = mera.compile(qmod, qparams)
    for x in xs[4:]:
        ref, = ort_run(m, {"x": x})
        out = np.asarray(hw(x)[0])
        assert np.array_equal(np.asarray(sim(x)[0]), out)
        psnr = 10 * np.log10(np.abs(ref).max() ** 2 / np.mean((out.astype(np.float64) - ref) ** 2))
        assert psnr > 20, psnr


@pytest.mark.parametrize("seed", range(3))
def test_quantize_linear_with_run_time_parameters(seed):
    """QuantizeLinear whose scale and zero point are computed in the graph (ReduceMin/ReduceMax, Sub, Div, Round,
    Clip, Cast, as the oldest quantize_dynamic writes them), feeding a ConvInteger: onnxruntime's bytes."""
    rng = np.random.default_rng(50 + seed)
    c, h, w = int(rng.integers(1, 5)), int(rng.integers(4, 12)), int(rng.integers(4, 12))
    wt = rng.integers(-127, 128, (3, c, 3, 3)).astype(np.int8)
    inits = [("w", wt), ("zero", np.array(0.0, np.float32)), ("qmax", np.array(255.0, np.float32)),
             ("w_zp", np.array(0, np.int8))]
    nodes = [
        helper.make_node("ReduceMin", ["x"], ["mn0"], keepdims=0),
        helper.make_node("ReduceMax", ["x"], ["mx0"], keepdims=0),
        helper.make_node("Min", ["mn0", "zero"], ["mn"]),
        helper.make_node("Max", ["mx0", "zero"], ["mx"]),
        helper.make_node("Sub", ["mx", "mn"], ["rng"]),
        helper.make_node("Div", ["rng", "qmax"], ["scale"]),
        helper.make_node("Div", ["mn", "scale"], ["mn_s"]),
        helper.make_node("Sub", ["zero", "mn_s"], ["zpf"]),
        helper.make_node("Round", ["zpf"], ["zpr"]),
        helper.make_node("Clip", ["zpr", "zero", "qmax"], ["zpc"]),
        helper.make_node("Cast", ["zpc"], ["zp"], to=TensorProto.UINT8),
        helper.make_node("QuantizeLinear", ["x", "scale", "zp"], ["xq"]),
        helper.make_node("ConvInteger", ["xq", "w", "zp", "w_zp"], ["acc"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Cast", ["acc"], ["y"], to=TensorProto.FLOAT),
    ]
    m = model(nodes, [("x", (1, c, h, w))], [("xq", TensorProto.UINT8), ("y", TensorProto.FLOAT),
                                             ("scale", TensorProto.FLOAT), ("zp", TensorProto.UINT8)], inits, opset=13)
    for i in range(3):
        x = rng.normal(0.3 * i, 1 + i, (1, c, h, w)).astype(np.float32)
        if i == 2:
            x = np.abs(x)  # one-signed data: the zero point clamps
        ref = ort_run(m, {"x": x})
        for t in TARGETS:
            out = run_mera(m, {"x": x}, t)
            # the scale and zero point are one-element values (mera gives the reduction's 0-d result as [1])
            assert all(same_bits(o.reshape(r.shape), r) for o, r in zip(out, ref)), (t, i)
