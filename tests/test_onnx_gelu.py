"""GELU: the ONNX erf and tanh chains and opset 20's Gelu read as the IR's one `gelu` op (float against
onnxruntime), its quantized table bit for bit against PyTorch's qgelu over every input byte, and the
DNA running it (Simulator == IP == InterpreterHw bytes)."""

import math
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

import mera  # noqa: E402
from mera import ir  # noqa: E402
from mera.frontend import from_onnx  # noqa: E402
from onnx import helper, numpy_helper, TensorProto  # noqa: E402

SHAPE = [2, 7, 24]


def run_ort(model, x):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})


class Chain:
    """Builds one model: x -> MatMul (so x is no graph input) -> a GELU chain -> out."""

    def __init__(self, rng, const_nodes):
        self.rng, self.const_nodes = rng, const_nodes
        self.nodes, self.inits, self.k = [], [], 0
        w = rng.standard_normal((SHAPE[-1], SHAPE[-1])).astype(np.float32) * 0.4
        self.inits.append(numpy_helper.from_array(w, "w"))
        self.nodes.append(helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"))

    def const(self, v):
        self.k += 1
        name = f"c{self.k}"
        t = numpy_helper.from_array(np.array(v, np.float32).reshape([1] * int(self.rng.integers(0, 2))), name)
        if self.const_nodes:
            self.nodes.append(helper.make_node("Constant", [], [name], value=t))
        else:
            self.inits.append(t)
        return name

    def op(self, op, a, b=None, swap=False):
        self.k += 1
        out = f"t{self.k}"
        ins = [a] if b is None else ([b, a] if swap else [a, b])
        self.nodes.append(helper.make_node(op, ins, [out], name=f"{op.lower()}{self.k}"))
        return out

    def tail(self, x, f, order):
        """x * 0.5 * (1 + f) in one of three groupings, constants on either side."""
        s = lambda: bool(self.rng.integers(0, 2))  # noqa: E731
        one = self.op("Add", f, self.const(1.0), swap=s())
        if order == 0:
            return self.op("Mul", self.op("Mul", x, one, swap=s()), self.const(0.5), swap=s())
        if order == 1:
            return self.op("Mul", x, self.op("Mul", one, self.const(0.5), swap=s()), swap=s())
        return self.op("Mul", self.op("Mul", x, self.const(0.5), swap=s()), one, swap=s())

    def erf(self, x, order, div):
        s = bool(self.rng.integers(0, 2))
        scaled = self.op("Div", x, self.const(math.sqrt(2.0))) if div else \
            self.op("Mul", x, self.const(1.0 / math.sqrt(2.0)), swap=s)
        return self.tail(x, self.op("Erf", scaled), order)

    def tanh(self, x, order, pow_cube):
        s = lambda: bool(self.rng.integers(0, 2))  # noqa: E731
        cube = self.op("Pow", x, self.const(3.0)) if pow_cube else \
            self.op("Mul", self.op("Mul", x, x), x, swap=s())
        inner = self.op("Add", x, self.op("Mul", cube, self.const(0.044715), swap=s()), swap=s())
        t = self.op("Tanh", self.op("Mul", inner, self.const(math.sqrt(2.0 / math.pi)), swap=s()))
        return self.tail(x, t, order)

    def model(self, out, extra_outputs=(), opset=17):
        outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in (out,) + tuple(extra_outputs)]
        g = helper.make_graph(self.nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)], outs,
                              initializer=self.inits)
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def ops_of(mod):
    return [n["op"] for n in mod.nodes()]


def gelu_nodes(mod):
    return [n for n in mod.nodes() if n["op"] == "gelu"]


CASES = [(form, order, variant, const_nodes)
         for form in ("erf", "tanh") for order in range(3) for variant in (0, 1) for const_nodes in (False, True)]


@pytest.mark.parametrize("form,order,variant,const_nodes", CASES)
def test_chain_is_one_gelu_node_and_matches_onnxruntime(form, order, variant, const_nodes):
    rng = np.random.default_rng(hash((form, order, variant, const_nodes)) % 2**32)
    c = Chain(rng, const_nodes)
    out = c.erf("h", order, div=bool(variant)) if form == "erf" else c.tanh("h", order, pow_cube=bool(variant))
    model = c.model(out)
    mod, params = from_onnx(model)
    assert ops_of(mod) == ["dense", "gelu"], ops_of(mod)
    (g,) = gelu_nodes(mod)
    assert g["attrs"].get("approximate", "none") == ("none" if form == "erf" else "tanh"), g
    x = (rng.standard_normal(SHAPE) * 2).astype(np.float32)
    got = mera.compile(mod, params, target="Interpreter")(x)[0]
    want = run_ort(model, x)[0]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * max(1.0, float(np.abs(want).max())))


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_opset20_gelu_node(approximate):
    rng = np.random.default_rng(3)
    c = Chain(rng, False)
    c.nodes.append(helper.make_node("Gelu", ["h"], ["y"], name="gelu", approximate=approximate))
    model = c.model("y", opset=20)
    mod, params = from_onnx(model)
    assert ops_of(mod) == ["dense", "gelu"]
    assert gelu_nodes(mod)[0]["attrs"].get("approximate", "none") == approximate
    x = (rng.standard_normal(SHAPE) * 2).astype(np.float32)
    got = mera.compile(mod, params, target="Interpreter")(x)[0]
    want = run_ort(model, x)[0]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * max(1.0, float(np.abs(want).max())))


def test_chain_with_a_shared_intermediate_is_left_alone():
    """The erf's output is also a graph output: the chain stays primitives (and still runs)."""
    rng = np.random.default_rng(5)
    c = Chain(rng, False)
    out = c.erf("h", 0, div=True)
    erf_out = [n.output[0] for n in c.nodes if n.op_type == "Erf"][0]
    model = c.model(out, extra_outputs=(erf_out,))
    mod, params = from_onnx(model)
    assert "gelu" not in ops_of(mod) and "erf" in ops_of(mod), ops_of(mod)
    x = rng.standard_normal(SHAPE).astype(np.float32)
    got = mera.compile(mod, params, target="Interpreter")(x)
    for g_, w_ in zip(got, run_ort(model, x)):
        np.testing.assert_allclose(g_, w_, rtol=0, atol=1e-5)
    # a wrong constant (not sqrt(2)) is no GELU either
    c = Chain(rng, True)
    scaled = c.op("Div", "h", c.const(1.5))
    model = c.model(c.tail("h", c.op("Erf", scaled), 1))
    assert "gelu" not in ops_of(from_onnx(model)[0])


def test_gelu_with_an_unknown_approximation_is_refused():
    c = Chain(np.random.default_rng(0), False)
    c.nodes.append(helper.make_node("Gelu", ["h"], ["y"], name="odd_gelu", approximate="sigmoid"))
    with pytest.raises(mera.UnsupportedError, match="odd_gelu.*approximate"):
        from_onnx(c.model("y", opset=20))


# ---- quantized: the table against PyTorch's qgelu, and on the DNA ---------------------------------

@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("dtype", ["uint8", "int8"])
def test_quantized_gelu_every_byte_matches_pytorch(approximate, dtype):
    """Every input byte, with random parameters: InterpreterHw's table == PyTorch's quantized gelu (the
    vector body for the first 256 elements, the scalar one for a 7-element tail)."""
    rng = np.random.default_rng(11 if dtype == "uint8" else 12)
    for _ in range(3):
        scale, zp = float(rng.uniform(0.005, 0.1)), int(rng.integers(0, 256) if dtype == "uint8" else rng.integers(-128, 128))
        npt = np.uint8 if dtype == "uint8" else np.int8
        data = np.concatenate([np.arange(256).astype(np.uint8).view(npt) if dtype == "int8"
                               else np.arange(256, dtype=np.uint8),
                               rng.integers(0, 256, 7).astype(np.uint8).view(npt)])
        b = ir.Builder("qgelu")
        x = b.input("x", (1, data.size), dtype, qparams=(scale, zp))
        mod = b.finish(b.gelu(x, approximate=approximate, name="g"))
        got = mera.compile(mod, {}, target="InterpreterHw")(data[None])[0].reshape(-1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            qt = torch.quint8 if dtype == "uint8" else torch.qint8
            qx = torch._make_per_tensor_quantized_tensor(torch.from_numpy(data.copy()), scale, zp)
            assert qx.dtype == qt
            want = torch.nn.functional.gelu(qx, approximate=approximate).int_repr().numpy()
        np.testing.assert_array_equal(got, want, err_msg=f"{approximate} {dtype} scale {scale} zp {zp}")


def _compile(mod, params, target, **cfg):
    if target == "Simulator":
        cfg.setdefault("sim_log", False)
    with mera.build_config(target=target, **cfg):
        return mera.compile(mod, params)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_quantized_gelu_on_the_dna(approximate):
    """conv -> gelu (own output parameters) -> conv on the DNA: the gelu is a DNA layer, and the Simulator
    and the IP give InterpreterHw's bytes; the table is within one step of the float formula."""
    rng = np.random.default_rng(21)
    b = ir.Builder("dna_gelu")
    x = b.input("input0", (1, 6, 9, 16), "uint8", qparams=(0.03, 120), layout="NHWC")
    w = b.const(rng.integers(-127, 128, (16, 16, 3, 3), dtype=np.int8), qparams=(0.004, 0))
    y = b.conv2d(x, w, None, padding=[1, 1, 1, 1], layout="NHWC", out_scale=0.05, out_zero_point=128, name="conv")
    g = b.gelu(y, approximate=approximate, out_scale=0.03, out_zero_point=10, name="gelu")
    w2 = b.const(rng.integers(-127, 128, (8, 16, 1, 1), dtype=np.int8), qparams=(0.01, 0))
    z = b.conv2d(g, w2, None, layout="NHWC", out_scale=0.1, out_zero_point=128, name="conv2")
    mod = b.finish([z, g, y])
    inp = rng.integers(0, 256, (1, 6, 9, 16), dtype=np.uint8)
    ref = _compile(mod, {}, "InterpreterHw")(inp)
    sim = _compile(mod, {}, "Simulator")
    rep = {e["node"]: e for e in sim.partition_report()}
    assert rep["gelu"]["on_dna"], rep["gelu"]
    for tgt, got in (("Simulator", sim(inp)), ("IP", _compile(mod, {}, "IP")(inp))):
        for r, o in zip(ref, got):
            np.testing.assert_array_equal(r, o, err_msg=tgt)
    # the gelu's bytes against the float formula on its input's bytes
    xf = (ref[2].astype(np.float64) - 128) * 0.05
    if approximate == "none":
        gf = xf * 0.5 * (1 + np.vectorize(math.erf)(xf / math.sqrt(2)))
    else:
        gf = 0.5 * xf * (1 + np.tanh(math.sqrt(2 / math.pi) * (xf + 0.044715 * xf ** 3)))
    want = np.clip(np.round(gf / 0.03) + 10, 0, 255)
    assert np.abs(ref[1].astype(np.int64) - want).max() <= 1


def test_quantizer_puts_the_onnx_gelu_on_the_dna():
    """A float ONNX model with an erf chain, quantized by mera.Quantizer: one gelu with its own output
    parameters, on the DNA, Simulator == InterpreterHw, close to onnxruntime's float output."""
    rng = np.random.default_rng(31)
    c = Chain(rng, False)
    out = c.erf("h", 0, div=True)
    w2 = rng.standard_normal((SHAPE[-1], 10)).astype(np.float32) * 0.4
    c.inits.append(numpy_helper.from_array(w2, "w2"))
    c.nodes.append(helper.make_node("MatMul", [out, "w2"], ["y"], name="mm2"))
    model = c.model("y")
    mod, params = from_onnx(model)
    xs = [rng.standard_normal(SHAPE).astype(np.float32) for _ in range(4)]
    q = mera.Quantizer((mod, params))
    q.calibrate(xs)
    qmod, qparams = q.quantize()
    (g,) = gelu_nodes(qmod)
    ref = _compile(qmod, qparams, "InterpreterHw")
    sim = _compile(qmod, qparams, "Simulator")
    rep = {e["node"]: e for e in sim.partition_report()}
    assert rep[g["name"]]["on_dna"], rep[g["name"]]
    got = ref(xs[0])[0]
    np.testing.assert_array_equal(sim(xs[0])[0], got)
    want = run_ort(model, xs[0])[0]
    assert np.abs(got - want).max() < 0.05 * np.abs(want).max()


@pytest.mark.parametrize("form", ["erf", "tanh"])
def test_qdq_chain_is_one_quantized_gelu_on_the_dna(form):
    """DequantizeLinear -> GELU chain -> QuantizeLinear: one quantized gelu with the QuantizeLinear's
    parameters, on the DNA (Simulator == InterpreterHw), within one step of onnxruntime."""
    rng = np.random.default_rng(41)
    c = Chain(rng, False)
    c.nodes, c.inits = [], []
    for name, v, dt in (("s_in", 0.04, np.float32), ("z_in", 128, np.uint8), ("s_out", 0.02, np.float32),
                        ("z_out", 20, np.uint8)):
        c.inits.append(numpy_helper.from_array(np.array(v, dt), name))
    c.nodes.append(helper.make_node("DequantizeLinear", ["x", "s_in", "z_in"], ["h"]))
    out = c.erf("h", 1, div=False) if form == "erf" else c.tanh("h", 2, pow_cube=True)
    c.nodes.append(helper.make_node("QuantizeLinear", [out, "s_out", "z_out"], ["q"]))
    c.nodes.append(helper.make_node("DequantizeLinear", ["q", "s_out", "z_out"], ["y"]))
    g = helper.make_graph(c.nodes, "g", [helper.make_tensor_value_info("x", TensorProto.UINT8, SHAPE)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=c.inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    mod, params = from_onnx(model)
    assert ops_of(mod) == ["gelu", "dequantize"], ops_of(mod)
    x = rng.integers(0, 256, SHAPE, dtype=np.uint8)
    hw = _compile(mod, params, "InterpreterHw")(x)[0]
    sim = _compile(mod, params, "Simulator")
    np.testing.assert_array_equal(sim(x)[0], hw)
    gelus = [e for e in sim.partition_report() if e["node"].endswith(".gelu")]
    assert len(gelus) == 1 and gelus[0]["on_dna"], sim.partition_report()
    assert np.abs(hw - run_ort(model, x)[0]).max() <= 0.02 * 1.001


def test_pytorch_float_gelu_tanh_is_the_ir_gelu():
    """aten::gelu(approximate="tanh") of a float tensor: the IR's float gelu, close to PyTorch's."""
    m = torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.GELU(approximate="tanh")).eval()
    x = torch.randn(3, 12) * 2
    mod, params = mera.frontend.from_pytorch(torch.jit.trace(m, x), [("input0", (3, 12))])
    assert "gelu" in ops_of(mod) and "tanh" not in ops_of(mod), ops_of(mod)
    got = mera.compile(mod, params, target="Interpreter")(x.numpy())[0]
    with torch.no_grad():
        want = m(x).numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * max(1.0, float(np.abs(want).max())))
