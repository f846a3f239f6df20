"""The C graph passes from Python: Graph.run_pass and mera.frontend._passes.run_passes
(the C unit tests, tests/c/test_passes_fold.c, check each pass's rules and bytes)."""

import numpy as np
import pytest

import mera
from mera import ir
from mera.frontend._passes import run_passes


def _conv_bn():
    """x -> conv (param weight and bias) -> mul [8,1,1] -> add [8,1,1]: a batch norm as the frontends write it."""
    rng = np.random.default_rng(0)
    b = ir.Builder("bn")
    x = b.input("x", (1, 3, 8, 8), layout="NCHW")
    w = b.param("conv.weight", rng.standard_normal((8, 3, 3, 3)).astype(np.float32))
    bias = b.param("conv.bias", rng.standard_normal(8).astype(np.float32))
    y = b.conv2d(x, w, bias, padding=[1, 1, 1, 1], name="conv")
    y = b.mul(y, rng.uniform(0.5, 1.5, (8, 1, 1)).astype(np.float32), name="bn.mul")
    y = b.add(y, rng.standard_normal((8, 1, 1)).astype(np.float32), name="bn.add")
    return b.finish(y), dict(b.params)


def test_run_pass_gives_a_new_graph_and_leaves_the_input_alone():
    mod, params = _conv_bn()
    before = str(mod)
    plist = [None] + [params[n] for n in mod.param_names]
    g = mod._graph.run_pass("fold_bn", plist)
    assert str(mod) == before
    assert [n["op"] for n in ir.Module(g).nodes()] == ["conv2d"]
    # the folded params carry their data in the new graph
    ids = {g.value(i)["name"]: i for i in g.inputs()}
    assert set(ids) == {"x", "conv.weight", "conv.bias"}
    w = g.const_data(ids["conv.weight"])
    assert w.shape == (8, 3, 3, 3) and not np.array_equal(w, params["conv.weight"])


def test_run_passes_folds_and_computes_the_same_function():
    mod, params = _conv_bn()
    fmod, fparams = run_passes(mod, params, ["fold_bn", "fold_const", "lower_qdq", "dce"])
    assert [n["op"] for n in fmod.nodes()] == ["conv2d"]
    assert list(fparams) == ["conv.weight", "conv.bias"]  # the params keep their names and order
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    ref = mera.compile(mod, params, target="Interpreter")(x)[0]
    out = mera.compile(fmod, fparams, target="Interpreter")(x)[0]
    assert np.abs(out - ref).max() <= 1e-5 * np.abs(ref).max()
    # a pass that changes nothing hands back the caller's arrays
    _, same = run_passes(mod, params, ["lower_qdq"])
    assert all(same[k] is params[k] for k in params)


def test_lower_qdq_through_the_binding_matches_the_quantized_graph():
    rng = np.random.default_rng(2)
    wq = rng.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8)
    wqp = (np.array([0.01, 0.02, 0.015, 0.03]), np.zeros(4, np.int32), 0)
    bias = rng.standard_normal(4).astype(np.float32)

    def build(qdq):
        b = ir.Builder("q")
        x = b.input("x", (1, 3, 6, 6), layout="NCHW")
        xq = b.quantize(x, scale=0.05, zero_point=128, dtype="uint8")
        w = b.param("w", wq, qparams=wqp)
        bv = b.param("b", bias)
        out = dict(out_scale=0.1, out_zero_point=0, out_dtype="uint8")
        if qdq:
            y = b.relu(b.conv2d(b.dequantize(xq), b.dequantize(w), bv, name="conv"))
            y = b.quantize(y, scale=0.1, zero_point=0, dtype="uint8")
        else:
            y = b.conv2d(xq, w, bv, activation="relu", name="conv", **out)
        return b.finish(b.dequantize(y)), dict(b.params)

    mod, params = build(True)
    lmod, lparams = run_passes(mod, params, ["lower_qdq", "dce"])
    assert [n["op"] for n in lmod.nodes()] == ["quantize", "conv2d", "dequantize"]
    conv = next(n for n in lmod.nodes() if n["op"] == "conv2d")
    assert conv["name"] == "conv" and conv["attrs"]["activation"] == "relu" and conv["attrs"]["out_scale"] == 0.1
    assert lparams["w"] is params["w"]
    ref_mod, ref_params = build(False)
    x = rng.standard_normal((1, 3, 6, 6)).astype(np.float32)
    a = mera.compile(lmod, lparams, target="InterpreterHw")(x)[0]
    b = mera.compile(ref_mod, ref_params, target="InterpreterHw")(x)[0]
    assert np.array_equal(a, b)


def test_run_pass_errors_name_the_pass_or_the_param():
    mod, params = _conv_bn()
    with pytest.raises(mera.GraphError, match="unknown pass 'fold_everything'"):
        mod._graph.run_pass("fold_everything")
    with pytest.raises(mera.GraphError, match="param 'conv.weight' has no data"):
        mod._graph.run_pass("fold_bn")  # params not given, and the builder's graph does not carry them
    with pytest.raises(mera.RuntimeInputError, match="conv.bias"):
        run_passes(mod, {**params, "conv.bias": np.zeros(8, np.float64)}, ["fold_bn"])


def test_collapse_moves_shufflenet_channel_shuffle_same_bytes_everywhere():
    """passes/moves.c on the zoo's quantized ShuffleNetV2 imported in NHWC: every channel shuffle (transpose ->
    reshape -> transpose -> reshape) becomes reshape -> one transpose -> reshape; InterpreterHw (which runs the
    pass), the Simulator and the IP (which do not) give PyTorch's bytes."""
    import sys, os
    sys.path.insert(0, os.path.dirname(__file__))
    from conftest import built_zoo
    from test_simulator import assert_same_bytes, compile_for
    z = built_zoo("shufflenet_v2_x1_0")
    x = np.ascontiguousarray(z.inputs[0].numpy().transpose(0, 2, 3, 1))
    mod, params = mera.relay.frontend.from_pytorch(z.traced, [("input0", x.shape)], layout="NHWC")
    ops = [n["op"] for n in mod.nodes()]
    g = ir.Module(mod._graph.run_pass("collapse_moves", [None] + [params[n] for n in mod.param_names]))
    new_ops = [n["op"] for n in g.nodes()]
    shuffles = sum(1 for n in mod.nodes() if n["op"] == "transpose" and n["attrs"].get("axes") == [0, 2, 1, 3, 4])
    assert shuffles == 16
    # one transpose fewer per shuffle; the last shuffle and the NHWC transpose before conv5 (one chain of five)
    # are one channel permutation, reshape -> transpose of (H*W, 2, C/2) by [0,2,1] -> reshape: two transposes
    # fewer there
    assert new_ops.count("transpose") == ops.count("transpose") - shuffles - 1
    assert new_ops.count("reshape") == ops.count("reshape")
    assert len(new_ops) == len(ops) - shuffles - 1
    last = [n for n in g.nodes() if n["op"] == "transpose"][-1]
    assert last["attrs"]["axes"] == [0, 2, 1], last
    ref = compile_for(mod, params, "InterpreterHw")(x)
    assert np.array_equal(ref[0], z.y_traced[:1].numpy())
    for target in ("Simulator", "IP"):
        assert_same_bytes(ref, compile_for(mod, params, target, arch=100)(x), f"shufflenet_v2_x1_0 on {target}")
