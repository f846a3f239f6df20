"""ONNX Resize / Upsample against onnxruntime: nearest, linear and cubic (with
cubic_coeff_a and exclude_outside), every coordinate_transformation_mode and nearest_mode, scales and sizes, random seeded shapes; float to 1e-5, the QDQ form
(lowered to mera's quantized upsample) against onnxruntime with graph optimizations
off, and the Simulator against InterpreterHw."""

import itertools
import os
import zlib

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import mera  # noqa: E402
from mera.frontend import from_onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

F32 = TensorProto.FLOAT
COORDS = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "half_pixel_symmetric",
          "tf_half_pixel_for_nn", "tf_crop_and_resize")
NEAREST = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


def nhwc(x):
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def nchw(x):
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def run_ort(model, feeds):
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {i.name: x for i, x in zip(sess.get_inputs(), feeds)})[0]


def run_mera(model, x, layout, target="Interpreter"):
    mod, params = from_onnx(model, layout=layout)
    out = mera.compile(mod, params, target=target)(nhwc(x) if layout == "NHWC" else x)[0]
    return nchw(out) if layout == "NHWC" else out


def init(name, value, dtype=np.float32):
    return numpy_helper.from_array(np.asarray(value, dtype), name)


def resize_model(shape, mode, ctm, nearest, scales=None, sizes=None, roi=None, qdq=None, opset=19, extrap=0.0,
                 cubic_a=-0.75, exclude=0):
    """x -> [Q -> DQ ->] Resize -> [Q -> DQ] -> y (onnxruntime warns that tf_half_pixel_for_nn is deprecated
    from opset 13, and runs it)"""
    inits, nodes, src = [], [], "x"
    if qdq:
        s, z = qdq
        inits += [init("s", s), init("z", z, np.uint8)]
        nodes += [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
                  helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"])]
        src = "xd"
    ins = [src, "roi" if roi is not None else "", "scales" if scales is not None else ""]
    if roi is not None:
        inits.append(init("roi", roi))
    if scales is not None:
        inits.append(init("scales", scales))
    if sizes is not None:
        ins.append("sizes")
        inits.append(init("sizes", sizes, np.int64))
    attrs = dict(mode=mode, coordinate_transformation_mode=ctm)
    if mode == "nearest":
        attrs["nearest_mode"] = nearest
    if ctm == "tf_crop_and_resize":
        attrs["extrapolation_value"] = float(extrap)
    if mode == "cubic":
        attrs["cubic_coeff_a"], attrs["exclude_outside"] = float(cubic_a), int(exclude)
    out = "yf" if qdq else "y"
    nodes.append(helper.make_node("Resize", ins, [out], **attrs))
    if qdq:
        nodes += [helper.make_node("QuantizeLinear", ["yf", "s", "z"], ["yq"]),
                  helper.make_node("DequantizeLinear", ["yq", "s", "z"], ["y"])]
    g = helper.make_graph(nodes, "resize", [helper.make_tensor_value_info("x", F32, list(shape))],
                          [helper.make_tensor_value_info("y", F32, None)], initializer=inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def random_case(rng, mode, ctm, nearest):
    kw = random_geometry(rng, ctm)
    if mode == "cubic":
        kw[1].update(cubic_a=float(rng.choice([-0.75, -0.5])), exclude=int(rng.integers(0, 2)))
    return kw


def random_geometry(rng, ctm):
    shape = (int(rng.integers(1, 3)), int(rng.integers(1, 5)), int(rng.integers(1, 9)), int(rng.integers(1, 9)))
    roi = None
    if ctm == "tf_crop_and_resize":
        a, b = sorted(rng.uniform(-0.2, 1.2, 2)), sorted(rng.uniform(-0.2, 1.2, 2))
        roi = [0, 0, a[0], b[0], 1, 1, a[1], b[1]]
    if rng.random() < 0.5:
        sc = [float(rng.choice([0.5, 0.6, 0.75, 1.0, 1.3, 1.5, 2.0, 2.5, 3.0])) for _ in range(2)]
        sc = [s if int(np.floor(n * s)) >= 1 else 1.0 for s, n in zip(sc, shape[2:])]
        return shape, dict(scales=[1, 1] + sc, roi=roi)
    return shape, dict(scales=[] if roi is not None else None,
                       sizes=[shape[0], shape[1], int(rng.integers(1, 13)), int(rng.integers(1, 13))], roi=roi)


TRIALS = int(os.environ.get("MERA_RESIZE_TRIALS", "12"))
FLOAT_CASES = [(m, c, n) for m, c in itertools.product(("nearest", "linear", "cubic"), COORDS)
               for n in (NEAREST if m == "nearest" else ("floor",))]


# Known difference: nearest with round_prefer_ceil or half_pixel_symmetric picks the other pixel when the
# source coordinate lands within a float rounding of a half (e.g. 4 / (8/7) in float is 3.4999998, which
# onnxruntime rounds to 4); measured at 2 of ~9000 random cases (MERA_RESIZE_TRIALS=300).
_TIE_PRONE = 0.02


@pytest.mark.parametrize("mode,ctm,nearest", FLOAT_CASES)
def test_resize_float_vs_onnxruntime(mode, ctm, nearest):
    rng = np.random.default_rng(zlib.crc32(f"{mode} {ctm} {nearest}".encode()))
    tie_prone = mode == "nearest" and (nearest == "round_prefer_ceil" or ctm == "half_pixel_symmetric")
    differ, total = 0, 0
    for trial in range(TRIALS):
        shape, kw = random_case(rng, mode, ctm, nearest)
        model = resize_model(shape, mode, ctm, nearest, extrap=-7.5, **kw)
        x = rng.standard_normal(shape).astype(np.float32)
        ref = run_ort(model, [x])
        for layout in ("NCHW", "NHWC"):
            out = run_mera(model, x, layout)
            assert out.shape == ref.shape, (shape, kw, layout)
            if tie_prone:  # every output is an input element; a few may be the neighbour's
                assert np.isin(out, np.append(x, np.float32(-7.5))).all()
                differ, total = differ + int((out != ref).sum()), total + out.size
            else:
                np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5, err_msg=f"{shape} {kw} {layout}")
    assert differ <= _TIE_PRONE * total, (differ, total)


QDQ_CASES = [("nearest", c, n) for c in COORDS for n in ("round_prefer_floor", "floor")] + \
            [("linear", c, "floor") for c in COORDS] + [("cubic", c, "floor") for c in COORDS]


@pytest.mark.parametrize("mode,ctm,nearest", QDQ_CASES)
def test_resize_qdq_vs_onnxruntime(mode, ctm, nearest):
    """DequantizeLinear -> Resize -> QuantizeLinear becomes mera's quantized upsample; onnxruntime (graph
    optimizations off) runs it as dequantize, float Resize, quantize. nearest moves bytes: identical. linear:
    mera quantizes with quantize_val (x * (1/s)), onnxruntime divides (x / s), so an exact tie can differ by one."""
    rng = np.random.default_rng(zlib.crc32(f"q {mode} {ctm} {nearest}".encode()))
    worst, differ, total = 0.0, 0, 0
    for trial in range(8):
        shape, kw = random_case(rng, mode, ctm, nearest)
        s = 0.05
        model = resize_model(shape, mode, ctm, nearest, qdq=(s, 128), extrap=1.0, **kw)
        x = (rng.standard_normal(shape) * 2).astype(np.float32)
        ref = run_ort(model, [x])
        outs = []
        for layout in ("NCHW", "NHWC"):
            mod, params = from_onnx(model, layout=layout)
            assert "upsample" in [n["op"] for n in mod.nodes()]
            out = mera.compile(mod, params, target="InterpreterHw")(nhwc(x) if layout == "NHWC" else x)[0]
            outs.append(nchw(out) if layout == "NHWC" else out)
        assert np.array_equal(outs[0], outs[1])
        d = np.abs(outs[0].astype(np.float64) - ref) / s
        worst, differ, total = max(worst, float(d.max())), differ + int((d > 0.5).sum()), total + d.size
    if mode == "nearest":
        assert worst == 0.0
    else:
        assert worst <= 1 + 1e-4 and differ <= 0.01 * total, (worst, differ, total)


@pytest.mark.parametrize("mode,ctm", [("nearest", "half_pixel"), ("linear", "half_pixel"),
                                      ("linear", "align_corners"), ("nearest", "tf_crop_and_resize")])
def test_resize_simulator_matches_interpreter_hw(mode, ctm):
    """The quantized upsample with ONNX coordinates runs on the DNA: the Simulator gives InterpreterHw's bytes."""
    roi = [0, 0, 0.1, -0.1, 1, 1, 0.8, 1.1] if ctm == "tf_crop_and_resize" else None
    model = resize_model((1, 20, 9, 11), mode, ctm, "round_prefer_floor", scales=[1, 1, 1.7, 2.3] if roi is None
                         else [], sizes=None if roi is None else [1, 20, 13, 17], roi=roi, qdq=(0.05, 128))
    x = (np.random.default_rng(4).standard_normal((1, 20, 9, 11)) * 2).astype(np.float32)
    mod, params = from_onnx(model, layout="NHWC")
    hw = mera.compile(mod, params, target="InterpreterHw")(nhwc(x))[0]
    sim = mera.compile(mod, params, target="Simulator")(nhwc(x))[0]
    assert np.array_equal(hw, sim)


@pytest.mark.parametrize("attrs,msg", [
    (dict(mode="cubic", antialias=1), "antialias"),
    (dict(mode="linear", antialias=1), "antialias"),
    (dict(mode="nearest", keep_aspect_ratio_policy="not_larger"), "keep_aspect_ratio_policy"),
    (dict(mode="nearest", coordinate_transformation_mode="tf_half_pixel"), "tf_half_pixel"),
])
def test_resize_unsupported_forms_raise(attrs, msg):
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], **attrs)
    g = helper.make_graph([node], "r", [helper.make_tensor_value_info("x", F32, [1, 2, 4, 4])],
                          [helper.make_tensor_value_info("y", F32, None)], initializer=[init("scales", [1, 1, 2, 2])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)])
    with pytest.raises(mera.UnsupportedError, match=msg):
        from_onnx(model)
