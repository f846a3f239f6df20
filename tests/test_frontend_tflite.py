"""mera.frontend.from_tflite against the TFLite interpreter (ai-edge-litert).

Models are written in TFLite's schema by tests/tflite_builder.py (seeded
weights, calibrated int8 parameters as TFLite's converter sets them). int8
results are compared with two TFLite kernel sets: ``AUTO`` (what the
interpreter runs by default: the XNNPACK delegate) and ``BUILTIN_REF`` (the
reference kernels with gemmlowp's fixed-point requantization).
docs/frontends.md explains the bounds below.
"""

import numpy as np
import pytest

import mera
from mera.frontend import from_tflite
from tflite_builder import ACT, MODELS, OP, S, Net, run_tflite  # needs ai-edge-litert (the test extra)

SHAPE = (1, 12, 12, 16)

# name -> (build, bounds vs AUTO, bounds vs BUILTIN_REF); a bound is (max quanta, max fraction of outputs that differ)
EXACT = (0, 0.0)
OPS = {
    "conv": (lambda n, x: n.conv(x, 16, act=ACT.NONE), EXACT, (1, 0.005)),
    "conv_s2_relu6": (lambda n, x: n.conv(x, 16, stride=2), EXACT, (1, 0.005)),
    "conv_relu_dilated": (lambda n, x: n.conv(x, 8, act=ACT.RELU, dilation=2), EXACT, (1, 0.005)),
    "depthwise": (lambda n, x: n.dwconv(x, act=ACT.NONE), EXACT, (1, 0.005)),
    "depthwise5_s2_relu6": (lambda n, x: n.dwconv(x, k=5, stride=2), EXACT, (1, 0.005)),
    "depthwise_multiplier2": (lambda n, x: n.dwconv(x, act=ACT.NONE, multiplier=2), EXACT, (1, 0.005)),
    "fully_connected": (lambda n, x: n.fc(n.reshape(x, [1, -1]), 32), EXACT, (1, 0.05)),
    "fully_connected_4d_input": (lambda n, x: n.fc(x, 8, act=ACT.RELU), EXACT, (1, 0.005)),
    "add": (lambda n, x: n.add(n.conv(x, 16, k=1, act=ACT.NONE), x), EXACT, (1, 0.005)),
    "add_relu6": (lambda n, x: n.add(n.conv(x, 16, k=1, act=ACT.NONE), x, act=ACT.RELU6), EXACT, (2, 0.005)),
    "add_constant_relu6": (lambda n, x: n.add(x, n.const(np.full((1, 1, 1, 1), 3.0, np.float32), "three", "operand"),
                                              act=ACT.RELU6), (1, 0.005), EXACT),
    "mul_constant": (lambda n, x: n.mul(x, n.const(np.full((1, 1, 1, 1), 1 / 6, np.float32), "sixth", "operand")),
                     EXACT, EXACT),
    "mul_broadcast": (lambda n, x: n.mul(x, n.mean(x)), EXACT, (1, 0.1)),
    "hard_swish_after_depthwise": (lambda n, x: n.unary(OP.HARD_SWISH, n.dwconv(x, k=5, act=ACT.NONE)), EXACT,
                                   (3, 0.005)),
    "mul": (lambda n, x: n.mul(n.conv(x, 16, k=1, act=ACT.NONE), x), EXACT, (1, 0.02)),
    "average_pool_same": (lambda n, x: n.pool(OP.AVERAGE_POOL_2D, x, 3, 2, S.Padding.SAME), (1, 0.05), (1, 0.05)),
    "average_pool_global": (lambda n, x: n.pool(OP.AVERAGE_POOL_2D, x, 12, 1), (1, 0.25), (1, 0.25)),
    "max_pool": (lambda n, x: n.pool(OP.MAX_POOL_2D, x, 3, 2, S.Padding.SAME), EXACT, EXACT),
    "mean": (lambda n, x: n.mean(x), EXACT, (1, 0.2)),
    "softmax": (lambda n, x: n.softmax(n.reshape(x, [-1, 16])), EXACT, EXACT),
    "hard_swish": (lambda n, x: n.unary(OP.HARD_SWISH, x), EXACT, EXACT),
    "logistic": (lambda n, x: n.unary(OP.LOGISTIC, x), EXACT, EXACT),
    "relu": (lambda n, x: n.unary(OP.RELU, x), EXACT, EXACT),
    "relu6": (lambda n, x: n.unary(OP.RELU6, x), EXACT, EXACT),
    "pad": (lambda n, x: n.pad(x, [[0, 0], [1, 2], [0, 1], [0, 0]]), EXACT, EXACT),
    "concat": (lambda n, x: n.concat([n.conv(x, 8, k=1, act=ACT.NONE), n.conv(x, 8, k=1, act=ACT.RELU)]),
               EXACT, (1, 0.005)),
    "resize_nearest_x2": (lambda n, x: n.resize(OP.RESIZE_NEAREST_NEIGHBOR, x, [24, 24]), EXACT, EXACT),
    "resize_nearest_x2_half_pixel": (lambda n, x: n.resize(OP.RESIZE_NEAREST_NEIGHBOR, x, [24, 24],
                                                           half_pixel_centers=True), EXACT, EXACT),
    "resize_nearest_12_to_17x20": (lambda n, x: n.resize(OP.RESIZE_NEAREST_NEIGHBOR, x, [17, 20]), EXACT, EXACT),
    "resize_bilinear_x2_half_pixel": (lambda n, x: n.resize(OP.RESIZE_BILINEAR, x, [24, 24], half_pixel_centers=True),
                                      (1, 0.06), (1, 0.06)),
    "resize_bilinear_12_to_17x20_half_pixel": (lambda n, x: n.resize(OP.RESIZE_BILINEAR, x, [17, 20],
                                                                     half_pixel_centers=True), (1, 0.03), (2, 0.3)),
    "resize_bilinear_x2_align_corners": (lambda n, x: n.resize(OP.RESIZE_BILINEAR, x, [24, 24], align_corners=True),
                                         (1, 0.03), (3, 0.35)),
    "transpose": (lambda n, x: n.transpose(x, [0, 3, 1, 2]), EXACT, EXACT),
    "squeeze": (lambda n, x: n.squeeze(n.mean(x, keep_dims=True), [1, 2]), EXACT, (1, 0.2)),
    "leaky_relu": (lambda n, x: n.leaky_relu(x, 0.1), (1, 0.3), (1, 0.3)),
    "relu_n1_to_1": (lambda n, x: n.unary(OP.RELU_N1_TO_1, x), EXACT, EXACT),
    # RELU6 on values past 6 (its output has other parameters than its input: it clamps in the output's domain)
    "relu6_clamping": (lambda n, x: n.unary(OP.RELU6, n.mul(x, n.const(np.full((1, 1, 1, 1), 4.0, np.float32), "four",
                                                                     "operand"))), EXACT, (1, 0.05)),
    "squeeze_reshape": (lambda n, x: n.reshape(n.mean(x, keep_dims=True), [1, 16]), EXACT, (1, 0.2)),
}


def _quantize_input(x, mod):
    g = mod._graph
    info = g.value(g.inputs()[0])
    s, z = info["qparams"]
    lo, hi = (0, 255) if info["dtype"] == "uint8" else (-128, 127)
    return np.clip(np.round(x / s) + z, lo, hi).astype(info["dtype"])


def _calibrated(net, outputs, shape, seed, lo=-2.0, hi=2.0, float_io=False, uint8=False):
    rng = np.random.default_rng(100 + seed)
    samples = [[rng.uniform(lo, hi, shape).astype(np.float32)] for _ in range(2)]
    return net.int8_model(outputs, samples, float_io=float_io, uint8=uint8), rng


def _diff(a, b):
    d = np.abs(a.astype(np.int64) - b.astype(np.int64))
    return int(d.max()), float((d > 0).mean())


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
@pytest.mark.parametrize("name", sorted(OPS))
def test_quantized_op_against_tflite(name, dtype):
    """int8: per-channel int8 weights; uint8: TFLite 1.x's scheme, per-tensor uint8 weights with a zero point."""
    build, bound_auto, bound_ref = OPS[name]
    for seed in range(2):
        net = Net(seed)
        y = build(net, net.input(list(SHAPE)))
        qm, rng = _calibrated(net, [y], SHAPE, seed, uint8=dtype == "uint8")
        mod, params = from_tflite(qm)
        run = mera.compile(mod, params, target="InterpreterHw")
        for _ in range(2):
            xi = (rng.integers(0, 256, SHAPE) - (128 if dtype == "int8" else 0)).astype(dtype)
            out = run(xi)[0]
            for resolver, (qmax, frac) in (("AUTO", bound_auto), ("BUILTIN_REF", bound_ref)):
                ref = run_tflite(qm, [xi], resolver)[0][0]
                assert out.dtype == ref.dtype and out.shape == ref.shape
                m, f = _diff(out, ref)
                assert m <= qmax and f <= frac, (resolver, m, f)


@pytest.mark.parametrize("name", sorted(OPS))
def test_int8_op_same_bytes_on_every_integer_target(name):
    """Every imported op gives InterpreterHw's bytes on the Simulator and the IP (DNA program, emulated device)."""
    net = Net(0)
    y = OPS[name][0](net, net.input(list(SHAPE)))
    qm, rng = _calibrated(net, [y], SHAPE, 0)
    mod, params = from_tflite(qm)
    xi = rng.integers(-128, 128, SHAPE).astype(np.int8)
    got = {}
    for target in ("InterpreterHw", "Simulator", "IP"):
        with mera.build_config(target=target, arch=100, sim_log=False):
            got[target] = mera.compile(mod, params)(xi)[0]
    assert np.array_equal(got["Simulator"], got["InterpreterHw"])
    assert np.array_equal(got["IP"], got["InterpreterHw"])


@pytest.mark.parametrize("name", sorted(OPS))
def test_float_op_against_tflite(name):
    net = Net(3)
    y = OPS[name][0](net, net.input(list(SHAPE)))
    fm = net.float_model([y])
    x = np.random.default_rng(5).uniform(-2, 2, SHAPE).astype(np.float32)
    out = mera.compile(*from_tflite(fm), target="Interpreter")(x)[0]
    ref = run_tflite(fm, [x])[0][0]
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_float_sub_of_a_constant():
    net = Net(0)
    x = net.input(list(SHAPE))
    y = net.sub(x, net.const(np.linspace(-1, 1, 16, dtype=np.float32), "c", "operand"), act=ACT.RELU)
    fm = net.float_model([y])
    xin = np.random.default_rng(0).uniform(-2, 2, SHAPE).astype(np.float32)
    np.testing.assert_allclose(mera.compile(*from_tflite(fm), target="Interpreter")(xin)[0], run_tflite(fm, [xin])[0][0],
                               rtol=1e-6, atol=1e-6)


def test_average_pool_differs_only_on_exact_ties():
    """TFLite rounds the window mean half away from zero, mera (PyTorch) half to even: they differ on ties alone."""
    net = Net(0)
    x = net.input(list(SHAPE))
    y = net.pool(OP.AVERAGE_POOL_2D, x, 2, 2)
    qm, rng = _calibrated(net, [y], SHAPE, 0)
    mod, params = from_tflite(qm)
    xi = rng.integers(-128, 128, SHAPE).astype(np.int8)
    out = mera.compile(mod, params, target="InterpreterHw")(xi)[0].astype(np.int64)
    ref = run_tflite(qm, [xi])[0][0].astype(np.int64)
    window_sum = xi.astype(np.int64).reshape(1, 6, 2, 6, 2, 16).sum(axis=(2, 4))
    tie = window_sum % 4 == 2
    assert np.array_equal(out[~tie], ref[~tie])
    assert tie.any() and np.array_equal(np.abs(out[tie] - ref[tie]) <= 1, np.ones(tie.sum(), bool))
    away = np.where(window_sum > 0, (window_sum + 2) // 4, -((-window_sum + 2) // 4))
    assert np.array_equal(ref, away)                     # TFLite: half away from zero on the raw sum
    assert (out != ref).any()


# whole models: bounds vs AUTO on logits and probabilities (max quanta, max fraction differing)
# (the differences start at average pools' exact ties, see test_average_pool_differs_only_on_exact_ties)
MODEL_BOUNDS = {"mobilenet_v1": (1, 0.5), "mobilenet_v2": (0, 0.0), "mobilenet_v3_small": (4, 1.0),
                "efficientnet_lite0": (1, 0.5)}


def _model(name):
    net, probs = MODELS[name]()
    logits = net.ops[-1].inputs[0]           # the softmax's input
    shape = tuple(net.shape(net.inputs[0]))
    rng = np.random.default_rng(7)
    samples = [[rng.uniform(-1, 1, shape).astype(np.float32)] for _ in range(4)]
    return net, [logits, probs], shape, samples, rng


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_float_on_interpreter(name):
    net, outs, shape, _, rng = _model(name)
    fm = net.float_model(outs)
    run = mera.compile(*from_tflite(fm), target="Interpreter")
    x = rng.uniform(-1, 1, shape).astype(np.float32)
    for a, b in zip(run(x), run_tflite(fm, [x])[0]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name,dtype", [(m, "int8") for m in sorted(MODELS)] + [("mobilenet_v2", "uint8")])
def test_model_quantized_against_tflite(name, dtype):
    net, outs, shape, samples, rng = _model(name)
    qm = net.int8_model(outs, samples, uint8=dtype == "uint8")
    mod, params = from_tflite(qm)
    assert sum(n["op"] == "conv2d" and n["attrs"].get("out_dtype") == dtype for n in mod.nodes()) == \
        sum(op.code in (OP.CONV_2D, OP.DEPTHWISE_CONV_2D) for op in net.ops)
    run = mera.compile(mod, params, target="InterpreterHw")
    qmax, frac = MODEL_BOUNDS[name]
    for _ in range(2):
        xi = _quantize_input(rng.uniform(-1, 1, shape).astype(np.float32), mod)
        for a, b in zip(run(xi), run_tflite(qm, [xi])[0]):
            m, f = _diff(a, b)
            assert m <= qmax and f <= frac, (m, f)


def test_full_size_efficientnet_lite0_is_bit_exact():
    """The published EfficientNet-Lite0 at 224x224 (1000 classes, seeded weights, int8): TFLite's bytes."""
    net, probs = MODELS["efficientnet_lite0"](size=224, classes=1000, full=True)
    outs = [net.ops[-1].inputs[0], probs]
    rng = np.random.default_rng(7)
    samples = [[rng.uniform(-1, 1, (1, 224, 224, 3)).astype(np.float32)] for _ in range(2)]
    qm = net.int8_model(outs, samples)
    mod, params = from_tflite(qm)
    xi = _quantize_input(rng.uniform(-1, 1, (1, 224, 224, 3)).astype(np.float32), mod)
    for a, b in zip(mera.compile(mod, params, target="InterpreterHw")(xi), run_tflite(qm, [xi])[0]):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("name", ["mobilenet_v2", "efficientnet_lite0"])
def test_model_int8_same_bytes_on_every_integer_target(name):
    """Simulator and IP (DNA program, emulated device) give InterpreterHw's bytes."""
    net, outs, shape, samples, rng = _model(name)
    mod, params = from_tflite(net.int8_model(outs, samples))
    xi = _quantize_input(rng.uniform(-1, 1, shape).astype(np.float32), mod)
    got = {}
    for target in ("InterpreterHw", "Simulator", "IP"):
        with mera.build_config(target=target, arch=100, sim_log=False):
            got[target] = mera.compile(mod, params)(xi)
    for target in ("Simulator", "IP"):
        for a, b in zip(got[target], got["InterpreterHw"]):
            assert np.array_equal(a, b), target


def test_float_import_quantized_by_mera():
    """A float TFLite model imported and quantized by mera.Quantizer (what `mera compile --calibrate` does)."""
    net, outs, shape, _, rng = _model("mobilenet_v3_small")
    fm = net.float_model(outs[:1])
    q = mera.Quantizer(from_tflite(fm), config={"observer": "minmax"})
    q.calibrate([rng.uniform(-1, 1, shape).astype(np.float32) for _ in range(4)], progress=False)
    qmod, qparams = q.quantize()
    assert sum(n["op"] == "conv2d" and "out_dtype" in n["attrs"] for n in qmod.nodes()) == \
        sum(op.code in (OP.CONV_2D, OP.DEPTHWISE_CONV_2D) for op in net.ops)
    x = rng.uniform(-1, 1, shape).astype(np.float32)
    out = mera.compile(qmod, qparams, target="InterpreterHw")(x)[0]
    ref = run_tflite(fm, [x])[0][0]
    psnr = 10 * np.log10(np.abs(ref).max() ** 2 / np.mean((out - ref) ** 2))
    assert psnr > 30, psnr


def test_float16_weights_are_folded():
    """TFLite's float16 quantization: weights as float16 behind DEQUANTIZE; mera folds them to float32 params."""
    net, outs, shape, _, rng = _model("mobilenet_v2")
    fm = net.float_model(outs, fp16_weights=True)
    mod, params = from_tflite(fm)
    assert "dequantize" not in {n["op"] for n in mod.nodes()}
    x = rng.uniform(-1, 1, shape).astype(np.float32)
    for a, b in zip(mera.compile(mod, params, target="Interpreter")(x), run_tflite(fm, [x])[0]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_hybrid_model_is_unsupported_with_the_reason():
    """int8 weights on float activations (dynamic-range quantization) are named as such."""
    net = Net(0)
    x = net.input([1, 6, 6, 3])
    opt = S.Conv2DOptionsT()
    opt.padding, opt.strideH, opt.strideW = S.Padding.SAME, 1, 1
    w = net.const(np.ones((4, 3, 3, 3), np.int8), "w", "const")
    y = net.op(OP.CONV_2D, [x, w, -1], [1, 6, 6, 4], S.BuiltinOptions.Conv2DOptions, opt)
    with pytest.raises(mera.UnsupportedError,
                       match=r"operator 0 \(CONV_2D\): int8 weights on a float32 input \(hybrid quantization\)"):
        from_tflite(net.float_model([y]))


def test_float_interface_quantize_dequantize():
    """A model with float input and output: QUANTIZE first, DEQUANTIZE last, as the converter writes by default."""
    net, outs, shape, samples, rng = _model("mobilenet_v2")
    qm = net.int8_model(outs[:1], samples, float_io=True)
    mod, params = from_tflite(qm)
    ops = [n["op"] for n in mod.nodes()]
    assert ops[0] == "quantize" and ops[-1] == "dequantize"
    x = rng.uniform(-1, 1, shape).astype(np.float32)
    out = mera.compile(mod, params, target="InterpreterHw")(x)[0]
    ref = run_tflite(qm, [x])[0][0]
    assert out.dtype == np.float32 and np.array_equal(out, ref)


def test_quantize_matches_xnnpack_on_exact_ties_with_an_odd_zero_point():
    """XNNPACK quantizes as rne(x * (1/s)) + z: the zero point after rounding, the rounding mode TFLite imports
    get (docs/numerics.md), so even exact ties with an odd zero point (where the other mode, fbgemm's
    rne(fma(x, 1/s, z)) of torch <= 2.13, differs by one quantum) give LiteRT's bytes."""
    shape = (1, 32, 32, 16)
    net = Net(0)
    y = net.reshape(net.input(list(shape)), [1, -1])
    rng = np.random.default_rng(0)
    qm = net.int8_model([y], [[rng.uniform(-1, 1, shape).astype(np.float32)]], float_io=True)
    mod, params = from_tflite(qm)
    attrs = next(iter(mod.nodes()))["attrs"]
    s, z = np.float32(attrs["scale"]), attrs["zero_point"]
    assert z % 2 == 1
    x = rng.uniform(-1, 1, shape).astype(np.float32)
    tie = np.zeros(shape, bool)
    tie[..., :4] = True
    x[tie] = ((rng.integers(-100, 100, tie.sum()) + 0.5) * np.float64(s)).astype(np.float32)
    tie &= (x * (np.float32(1) / s)) % 1 == 0.5
    out = mera.compile(mod, params, target="InterpreterHw")(x)[0].reshape(shape)
    ref = run_tflite(qm, [x])[0][0].reshape(shape)
    assert mod.astext().count('rounding="zero_point_after_rounding"') == 1
    assert tie.sum() > 1000 and np.array_equal(out, ref)


def test_nchw_layout_and_shape_dict():
    net = Net(1)
    x = net.input([1, 8, 8, 4], name="image")
    y = net.conv(x, 6, stride=2)
    fm = net.float_model([y])
    xin = np.random.default_rng(0).uniform(-1, 1, (1, 8, 8, 4)).astype(np.float32)
    ref = run_tflite(fm, [xin])[0][0]
    mod, params = from_tflite(fm, shape_dict={"image": (1, 4, 8, 8)}, dtype_dict={"image": "float32"},
                              layout="NCHW")
    out = mera.compile(mod, params, target="Interpreter")(np.ascontiguousarray(xin.transpose(0, 3, 1, 2)))[0]
    np.testing.assert_allclose(out, ref.transpose(0, 3, 1, 2), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["mobilenet_v2", "mobilenet_v3_small"])
def test_batch_from_shape_dict(name):
    """A file written for batch 1 run at batch 3: RESHAPE shapes written for batch 1 follow shape_dict's batch;
    each sample gives the batch-1 import's bytes (and so TFLite's, for mobilenet_v2)."""
    net, outs, shape, samples, rng = _model(name)
    qm = net.int8_model(outs, samples)
    one = mera.compile(*from_tflite(qm), target="InterpreterHw")
    mod, params = from_tflite(qm, shape_dict={"input": (3,) + shape[1:]})
    xs = [_quantize_input(rng.uniform(-1, 1, shape).astype(np.float32), mod) for _ in range(3)]
    got = mera.compile(mod, params, target="InterpreterHw")(np.concatenate(xs))
    for k, x in enumerate(xs):
        for a, b in zip(got, one(x)):
            assert np.array_equal(a[k:k + 1], b)
        if name == "mobilenet_v2":
            for a, b in zip(got, run_tflite(qm, [x])[0]):
                assert np.array_equal(a[k:k + 1], b)


def test_paths_parsed_models_and_relay_spelling(tmp_path):
    import tflite
    net = Net(0)
    y = net.unary(OP.RELU6, net.input([1, 4, 4, 2]))
    fm = net.float_model([y])
    p = tmp_path / "m.tflite"
    p.write_bytes(fm)
    for model in (str(p), p, fm, bytearray(fm), tflite.Model.GetRootAs(fm, 0), S.Model.GetRootAs(fm, 0)):
        mod, _ = mera.relay.frontend.from_tflite(model)
        assert [n["op"] for n in mod.nodes()] == ["clip"]


def test_every_unsupported_operator_is_listed():
    net = Net(0)
    x = net.input([1, 4, 4, 2])
    y = net.unary(OP.TANH, x)
    y = net.unary(OP.RELU, y)
    y = net.unary(OP.EXP, y)
    y = net.unary(OP.TANH, y)
    with pytest.raises(mera.UnsupportedError) as e:
        from_tflite(net.float_model([y]))
    msg = str(e.value)
    assert "3 operators cannot be imported" in msg
    for line in ("operator 0 (TANH)", "operator 2 (EXP)", "operator 3 (TANH)"):
        assert line in msg
    assert "operator 1" not in msg


def test_unsupported_options_are_listed_with_the_reason():
    net = Net(0)
    x = net.input([1, 4, 4, 2])
    y = net.softmax(net.reshape(x, [1, 32]), beta=0.5)
    z = net.resize(OP.RESIZE_BILINEAR, x, [8, 8])                    # TF1's legacy corner convention
    w = net.resize(OP.RESIZE_NEAREST_NEIGHBOR, x, [6, 6], half_pixel_centers=True)
    with pytest.raises(mera.UnsupportedError) as e:
        from_tflite(net.float_model([y, z, w]))
    msg = str(e.value)
    assert "3 operators cannot be imported" in msg
    assert "operator 1 (SOFTMAX): SOFTMAX with beta 0.5" in msg
    assert "operator 2 (RESIZE_BILINEAR): RESIZE_BILINEAR with align_corners=0 and half_pixel_centers=0" in msg
    assert "operator 3 (RESIZE_NEAREST_NEIGHBOR): RESIZE_NEAREST_NEIGHBOR with align_corners=0, " \
        "half_pixel_centers=1 from (4, 4) to (6, 6)" in msg


def test_other_model_types_are_a_config_error():
    with pytest.raises(mera.ConfigError, match="path, bytes or a tflite.Model, got dict"):
        from_tflite({"model": "m.tflite"})


def _patched(model, edit):
    """``model`` unpacked with the schema's object API, changed by ``edit(ModelT)``, packed again."""
    import flatbuffers
    m = S.ModelT.InitFromPackedBuf(model, 0)
    edit(m)
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def test_int16_activations_are_unsupported_and_bad_sparsity_is_a_format_error():
    net = Net(0)
    x = net.input([1, 6, 6, 3])
    y = net.unary(OP.RELU, net.conv(x, 4, act=ACT.NONE))
    qm = net.int8_model([y], [[np.ones((1, 6, 6, 3), np.float32)]], float_io=True)

    def to_int16(m):
        for t in m.subgraphs[0].tensors:
            if t.type == S.TensorType.INT8 and m.buffers[t.buffer].data is None:
                t.type = S.TensorType.INT16
    with pytest.raises(mera.UnsupportedError) as e:
        from_tflite(_patched(qm, to_int16))
    assert "1 operator cannot be imported" in str(e.value)   # the CONV_2D and RELU after it are not judged
    assert "operator 0 (QUANTIZE): QUANTIZE to int16: mera's quantized tensors are int8 or uint8" in str(e.value)
    with pytest.raises(mera.UnsupportedError, match="input 'input' is int16"):
        from_tflite(_patched(net.int8_model([y], [[np.ones((1, 6, 6, 3), np.float32)]]), to_int16))

    def sparse(m):   # sparsity parameters that do not fit the tensor: a FormatError naming it
        for t in m.subgraphs[0].tensors:
            if t.name.endswith(b"/weights"):
                t.sparsity = S.SparsityParametersT()
    with pytest.raises(mera.FormatError, match=r"tensor 1 'conv0/weights' \(sparse\)"):
        from_tflite(_patched(net.float_model([y]), sparse))


def test_bad_files(tmp_path):
    net = Net(0)
    fm = net.float_model([net.unary(OP.RELU, net.input([1, 4, 4, 2]))])
    with pytest.raises(mera.MeraIOError, match="missing.tflite"):
        from_tflite(str(tmp_path / "missing.tflite"))
    with pytest.raises(mera.FormatError, match="not a TFLite model"):
        from_tflite(b"\x00" * 64)
    bad = tmp_path / "trunc.tflite"
    bad.write_bytes(fm[:40])
    with pytest.raises(mera.FormatError, match="trunc.tflite"):
        from_tflite(str(bad))
    with pytest.raises(mera.ConfigError, match="no model input named 'nope'"):
        from_tflite(fm, shape_dict={"nope": (1, 4, 4, 2)})
    with pytest.raises(mera.ConfigError, match="dtype_dict says int8"):
        from_tflite(fm, dtype_dict={"input": "int8"})
    with pytest.raises(mera.ConfigError, match="layout"):
        from_tflite(fm, layout="NCWH")


def test_corrupt_bytes_never_crash():
    """Flipped bytes anywhere in a small model: a model or a MeraError, never another exception."""
    net = Net(0)
    x = net.input([1, 6, 6, 3])
    fm = bytearray(net.float_model([net.softmax(net.reshape(net.conv(x, 4), [1, -1]))]))
    rng = np.random.default_rng(0)
    for _ in range(200):
        b = bytearray(fm)
        for i in rng.integers(8, len(b), 3):
            b[i] = int(rng.integers(0, 256))
        try:
            from_tflite(bytes(b))
        except mera.MeraError:
            pass


# -- float operators of MediaPipe's models (the .tflite files its wheel ships) ---------------------------------------

def _strided_slice(n, x, begin, end, strides, begin_mask=0, end_mask=0, shrink=0):
    o = S.StridedSliceOptionsT()
    o.beginMask, o.endMask, o.shrinkAxisMask = begin_mask, end_mask, shrink
    shape = n.shape(x)
    out = []
    for d, size in enumerate(shape):
        b = 0 if begin_mask >> d & 1 else begin[d]
        e = size if end_mask >> d & 1 else end[d]
        b, e = (min(max(v + size if v < 0 else v, 0), size) for v in (b, e))
        if shrink >> d & 1:
            continue
        out.append(-(-(e - b) // strides[d]))
    ints = lambda v, w: n.const(np.array(v, np.int32), f"ss{len(n.ops)}/{w}", "shape")  # noqa: E731
    return n.op(OP.STRIDED_SLICE, [x, ints(begin, "begin"), ints(end, "end"), ints(strides, "strides")], out,
                S.BuiltinOptions.StridedSliceOptions, o)


def _depth_space(n, x, code, b):
    o = (S.DepthToSpaceOptionsT if code == OP.DEPTH_TO_SPACE else S.SpaceToDepthOptionsT)()
    o.blockSize = b
    nb, h, w, c = n.shape(x)
    out = [nb, h * b, w * b, c // (b * b)] if code == OP.DEPTH_TO_SPACE else [nb, h // b, w // b, c * b * b]
    kind = S.BuiltinOptions.DepthToSpaceOptions if code == OP.DEPTH_TO_SPACE else S.BuiltinOptions.SpaceToDepthOptions
    return n.op(code, [x], out, kind, o)


def _tconv_out(size, k, s, same):
    return size * s if same else (size - 1) * s + k


def _transpose_conv(n, x, cout, k, s, same, bias=True):
    nb, h, w, c = n.shape(x)
    wt = n.const(n.rng.normal(0, 0.3, (cout, k, k, c)).astype(np.float32), f"tconv{len(n.ops)}/weights", "weight")
    out = [nb, _tconv_out(h, k, s, same), _tconv_out(w, k, s, same), cout]
    o = S.TransposeConvOptionsT()
    o.padding, o.strideH, o.strideW = (S.Padding.SAME if same else S.Padding.VALID), s, s
    ins = [n.const(np.array(out, np.int32), f"tconv{len(n.ops)}/shape", "shape"), wt, x]
    if bias:
        ins.append(n.const(n.rng.normal(0, 0.1, cout).astype(np.float32), f"tconv{len(n.ops)}/bias", "bias"))
    return n.op(OP.TRANSPOSE_CONV, ins, out, S.BuiltinOptions.TransposeConvOptions, o)


def _transpose_conv_bias(n, x, cout, k, s, same):
    nb, h, w, c = n.shape(x)
    wt = n.const(n.rng.normal(0, 0.3, (cout, k, k, c)).astype(np.float32), f"tcb{len(n.ops)}/weights", "weight")
    b = n.const(n.rng.normal(0, 0.1, cout).astype(np.float32), f"tcb{len(n.ops)}/bias", "bias")
    opts = np.array([1 if same else 2, s, s], "<i4").tobytes()     # TfLiteTransposeConvParams
    return n.custom("Convolution2DTransposeBias", [x, wt, b],
                    [nb, _tconv_out(h, k, s, same), _tconv_out(w, k, s, same), cout], opts)


def _prelu(n, x, per_channel=True):
    c = n.shape(x)[3]
    alpha = n.const(n.rng.uniform(-0.5, 0.5, (1, 1, c) if per_channel else (1, 1, 1)).astype(np.float32),
                    f"prelu{len(n.ops)}/alpha", "operand")
    return n.op(OP.PRELU, [x, alpha], n.shape(x))


MEDIAPIPE_OPS = {
    "prelu_per_channel": lambda n, x: _prelu(n, x),
    "prelu_shared": lambda n, x: _prelu(n, x, per_channel=False),
    "strided_slice_steps": lambda n, x: _strided_slice(n, x, [0, 1, 0, 2], [1, 11, 12, 16], [1, 2, 3, 1]),
    "strided_slice_masks_shrink": lambda n, x: _strided_slice(n, x, [0, -5, 0, 3], [1, 0, 7, 4], [1, 1, 2, 1],
                                                              begin_mask=0b0001, end_mask=0b0010, shrink=0b1000),
    "depth_to_space": lambda n, x: _depth_space(n, x, OP.DEPTH_TO_SPACE, 2),
    "space_to_depth": lambda n, x: _depth_space(n, x, OP.SPACE_TO_DEPTH, 3),
    "transpose_conv_same_s2": lambda n, x: _transpose_conv(n, x, 5, 3, 2, True),
    "transpose_conv_valid_s2_k2": lambda n, x: _transpose_conv(n, x, 4, 2, 2, False, bias=False),
    "transpose_conv_same_s1_k4": lambda n, x: _transpose_conv(n, x, 3, 4, 1, True),
    "mediapipe_transpose_conv_bias_k2": lambda n, x: _transpose_conv_bias(n, x, 2, 2, 2, True),
    "mediapipe_transpose_conv_bias_k3_valid": lambda n, x: _transpose_conv_bias(n, x, 3, 3, 2, False),
}


@pytest.mark.parametrize("name", sorted(MEDIAPIPE_OPS))
def test_mediapipe_float_ops_against_tflite(name):
    """The float operators MediaPipe's shipped models use beyond the MobileNet set, against LiteRT, on the
    float Interpreter and (as mera quantizes nothing here) on InterpreterHw alike."""
    net = Net(7)
    y = MEDIAPIPE_OPS[name](net, net.input(list(SHAPE)))
    fm = net.float_model([y])
    x = np.random.default_rng(5).uniform(-2, 2, SHAPE).astype(np.float32)
    ref = run_tflite(fm, [x])[0][0]
    mod, params = from_tflite(fm)
    for target in ("Interpreter", "InterpreterHw"):
        out = mera.compile(mod, params, target=target)(x)[0]
        assert out.shape == ref.shape, (target, out.shape, ref.shape)
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5, err_msg=target)


def _sparsify(model: bytes, block: int = 0) -> bytes:
    """Every conv weight stored in TFLite's sparse format behind a DENSIFY operator, as TFLite's sparsity
    conversion writes them: dims 0-2 dense, the input-channel axis CSR (or, with ``block``, CSR over
    blocks of ``block`` input channels, the block dimension dense)."""
    def edit(m):
        sg = m.subgraphs[0]
        densify = len(m.operatorCodes)
        oc = S.OperatorCodeT()
        oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = OP.DENSIFY, OP.DENSIFY, 1
        m.operatorCodes.append(oc)
        new_ops = []
        for op in sg.operators:
            code = m.operatorCodes[op.opcodeIndex].builtinCode
            if code == OP.CONV_2D:
                wi = op.inputs[1]
                t = sg.tensors[wi]
                w = np.frombuffer(bytes(m.buffers[t.buffer].data), np.float32).reshape(t.shape).copy()
                w[np.abs(w) < np.quantile(np.abs(w), 0.6)] = 0.0          # 60% zeros
                o, kh, kw, c = t.shape
                sp = S.SparsityParametersT()
                dims = []
                for size in (o, kh, kw):
                    d = S.DimensionMetadataT()
                    d.format, d.denseSize = S.DimensionType.DENSE, size
                    dims.append(d)
                rows = w.reshape(o * kh * kw, c)
                if block:
                    assert c % block == 0
                    blocks = rows.reshape(-1, c // block, block)
                    keep = [np.nonzero(np.any(r != 0, axis=1))[0] for r in blocks]
                    values = np.concatenate([blocks[i][k].reshape(-1) for i, k in enumerate(keep)])
                else:
                    keep = [np.nonzero(r)[0] for r in rows]
                    values = np.concatenate([rows[i][k] for i, k in enumerate(keep)])
                seg, ind = S.Int32VectorT(), S.Int32VectorT()
                seg.values = np.concatenate([[0], np.cumsum([len(k) for k in keep])]).astype(np.int32).tolist()
                ind.values = np.concatenate(keep).astype(np.int32).tolist()
                d = S.DimensionMetadataT()
                d.format = S.DimensionType.SPARSE_CSR
                d.arraySegmentsType, d.arraySegments = S.SparseIndexVector.Int32Vector, seg
                d.arrayIndicesType, d.arrayIndices = S.SparseIndexVector.Int32Vector, ind
                dims.append(d)
                sp.traversalOrder = [0, 1, 2, 3]
                if block:
                    d.denseSize = c // block
                    inner = S.DimensionMetadataT()
                    inner.format, inner.denseSize = S.DimensionType.DENSE, block
                    dims.append(inner)
                    sp.traversalOrder, sp.blockMap = [0, 1, 2, 3, 4], [3]
                sp.dimMetadata = dims
                b = S.BufferT()
                b.data = np.frombuffer(values.astype(np.float32).tobytes(), np.uint8)
                m.buffers.append(b)
                st = S.TensorT()
                st.shape, st.name, st.type = list(t.shape), t.name + b"/sparse", S.TensorType.FLOAT32
                st.buffer, st.sparsity = len(m.buffers) - 1, sp
                sg.tensors.append(st)
                m.buffers[t.buffer].data = None
                t.buffer = 0
                dop = S.OperatorT()
                dop.opcodeIndex, dop.inputs, dop.outputs = densify, [len(sg.tensors) - 1], [wi]
                new_ops.append(dop)
            new_ops.append(op)
        sg.operators = new_ops
    return _patched(model, edit)


@pytest.mark.parametrize("block", [0, 4])
def test_sparse_weights_behind_densify_against_tflite(block):
    net = Net(11)
    x = net.input(list(SHAPE))
    y = net.conv(net.conv(x, 8, act=ACT.RELU), 12, k=1, act=ACT.NONE)
    fm = _sparsify(net.float_model([y]), block)
    xs = np.random.default_rng(2).uniform(-2, 2, SHAPE).astype(np.float32)
    ref = run_tflite(fm, [xs])[0][0]
    dense_ref = run_tflite(net.float_model([y]), [xs])[0][0]
    assert not np.allclose(ref, dense_ref, atol=1e-3)     # the zeros took effect: a sparse model, not the dense one
    out = mera.compile(*from_tflite(fm), target="Interpreter")(xs)[0]
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
