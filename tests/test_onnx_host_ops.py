"""ONNX host ops against onnxruntime: its dynamic quantization (quantize_dynamic's DynamicQuantizeLinear,
ConvInteger, MatMulInteger, Cast), and GRU. Randomized, seeded shapes and data; the integer parts exact.
(The ONNX node tests of these ops are claimed in tests/test_frontend_onnx.py.)"""

import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

import mera  # noqa: E402
from mera.frontend import from_onnx  # noqa: E402
from onnx import helper, numpy_helper, TensorProto  # noqa: E402

LAYOUTS = ("NCHW", "NHWC")


def nhwc(x):
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if x.ndim == 4 else x


def nchw(x):
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if x.ndim == 4 else x


def run_ort(model, feeds, threads=0):
    """onnxruntime on the CPU with graph optimizations off (its kernels as the nodes say)."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    sess = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    return sess.run(None, {i.name: x for i, x in zip(sess.get_inputs(), feeds)})


def run_mera(model, feeds, layout="NCHW", target="Interpreter"):
    mod, params = from_onnx(model, layout=layout)
    xs = [nhwc(x) if layout == "NHWC" else x for x in feeds]
    outs = mera.compile(mod, params, target=target)(*xs)
    return [nchw(o) if layout == "NHWC" else o for o in outs], mod


def model_of(nodes, inputs, outputs, inits=(), opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def vi(name, elem, shape=None):
    return helper.make_tensor_value_info(name, elem, shape)


# -- DynamicQuantizeLinear ------------------------------------------------------------------------

def _dql_data(rng, kind, shape):
    x = rng.standard_normal(shape).astype(np.float32) * rng.uniform(0.01, 100)
    if kind == "positive":
        x = np.abs(x)
    elif kind == "negative":
        x = -np.abs(x)
    elif kind == "zeros":
        x = np.zeros(shape, np.float32)
    elif kind == "constant":
        x = np.full(shape, 3.25, np.float32)
    elif kind == "ties":  # scale 0.5 exactly, x on quarter steps: x / scale = k + 0.5 rounds half to even
        lo = -63.75 if rng.integers(2) else 0.0  # (-63.75: the zero point 127.5 is a tie too)
        x = np.float32(lo) + rng.integers(0, 511, shape).astype(np.float32) * np.float32(0.25)
        x.reshape(-1)[0] = lo
        if x.size > 1:
            x.reshape(-1)[1] = lo + 127.5
    return x


@pytest.mark.parametrize("kind", ["normal", "positive", "negative", "zeros", "constant", "ties"])
def test_dynamic_quantize_linear_vs_onnxruntime(kind):
    model = model_of([helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"])], [vi("x", TensorProto.FLOAT)],
                     [vi("y", TensorProto.UINT8), vi("s", TensorProto.FLOAT), vi("z", TensorProto.UINT8)])
    for seed in range(4):
        rng = np.random.default_rng(seed)
        shape = tuple(int(d) for d in rng.integers(1, 9, rng.integers(1, 5)))
        x = _dql_data(rng, kind, shape)
        model.graph.input[0].CopyFrom(vi("x", TensorProto.FLOAT, list(shape)))
        ref = run_ort(model, [x])
        outs, _ = run_mera(model, [x], "NCHW")
        for o, r in zip(outs, ref):
            assert o.dtype == r.dtype and o.shape == r.shape, (o.dtype, r.dtype, o.shape, r.shape)
            assert np.array_equal(o, r), (kind, seed, o, r)
        if kind == "ties" and x.size > 1:
            assert float(ref[1]) == 0.5 and np.any(x / np.float32(0.5) % 1 == 0.5)


# -- MatMulInteger, ConvInteger ---------------------------------------------------------------------

_I8 = {np.uint8: TensorProto.UINT8, np.int8: TensorProto.INT8}


def _ints(rng, dtype, shape):
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max + 1, shape).astype(dtype)


@pytest.mark.parametrize("adt,bdt", [(np.uint8, np.uint8), (np.uint8, np.int8), (np.int8, np.int8),
                                     (np.int8, np.uint8)])
def test_matmul_integer_vs_onnxruntime(adt, bdt):
    for seed in range(4):
        rng = np.random.default_rng(seed)
        m, k, n = (int(v) for v in rng.integers(1, 40, 3))
        batch = [int(v) for v in rng.integers(1, 4, seed % 3)]
        a = _ints(rng, adt, batch + [m, k])
        b = _ints(rng, bdt, [k, n])
        azp = _ints(rng, adt, [])
        bzp = _ints(rng, bdt, [n] if seed % 2 else [])
        b_const = seed % 2 == 0  # a weight (initializer), or a run-time B
        inits = [numpy_helper.from_array(azp, "azp"), numpy_helper.from_array(bzp, "bzp")]
        inputs = [vi("a", _I8[adt], list(a.shape))]
        if b_const:
            inits.append(numpy_helper.from_array(b, "b"))
        else:
            inputs.append(vi("b", _I8[bdt], list(b.shape)))
        model = model_of([helper.make_node("MatMulInteger", ["a", "b", "azp", "bzp"], ["y"])], inputs,
                         [vi("y", TensorProto.INT32)], inits)
        feeds = [a] if b_const else [a, b]
        ref = run_ort(model, feeds)[0]
        (out,), mod = run_mera(model, feeds)
        assert "matmul_integer" in [nd["op"] for nd in mod.nodes()]
        assert out.dtype == np.int32 and np.array_equal(out, ref), (seed, adt, bdt)


@pytest.mark.parametrize("wdt", [np.uint8, np.int8])
def test_conv_integer_vs_onnxruntime(wdt):
    for seed in range(5):
        rng = np.random.default_rng(seed)
        groups = int(rng.choice([1, 2]))
        c, m = groups * int(rng.integers(1, 4)), groups * int(rng.integers(1, 4))
        kh, kw = (int(v) for v in rng.integers(1, 4, 2))
        h, w = int(rng.integers(kh + 2, 12)), int(rng.integers(kw + 2, 12))
        strides = [int(v) for v in rng.integers(1, 3, 2)]
        dil = [int(v) for v in rng.integers(1, 3, 2)]
        pads = [int(v) for v in rng.integers(0, 2, 4)]
        x = _ints(rng, np.uint8, (1, c, h, w))
        wt = _ints(rng, wdt, (m, c // groups, kh, kw))
        xzp, wzp = _ints(rng, np.uint8, []), _ints(rng, wdt, [])
        node = helper.make_node("ConvInteger", ["x", "w", "xzp", "wzp"], ["y"], group=groups, strides=strides,
                                dilations=dil, pads=pads)
        model = model_of([node], [vi("x", TensorProto.UINT8, list(x.shape))], [vi("y", TensorProto.INT32)],
                         [numpy_helper.from_array(a, n) for a, n in ((wt, "w"), (xzp, "xzp"), (wzp, "wzp"))])
        ref = run_ort(model, [x])[0]
        (out,), _ = run_mera(model, [x])
        assert out.dtype == np.int32 and np.array_equal(out, ref), (seed, wdt)


# -- whole models quantized by onnxruntime.quantization.quantize_dynamic --------------------------

class _ConvNet(torch.nn.Module):
    def __init__(self, c, k, stride, groups, hidden, classes):
        super().__init__()
        self.conv = torch.nn.Conv2d(3 * groups, 4 * groups, k, stride=stride, padding=k // 2, groups=groups)
        self.fc1 = torch.nn.Linear(4 * groups, hidden)
        self.fc2 = torch.nn.Linear(hidden, classes)

    def forward(self, x):
        f = torch.relu(self.conv(x))                   # [1, C, H, W]
        seq = f.flatten(2).transpose(1, 2)             # [1, HW, C]: a batched Linear (MatMul of rank 3)
        return self.fc2(torch.relu(self.fc1(seq))).mean(1)


def _quantized(tmp_path, model, x, weight_type, name):
    from onnxruntime.quantization import QuantType, quantize_dynamic
    f, q = tmp_path / f"{name}.onnx", tmp_path / f"{name}_q.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (x,), str(f), opset_version=13, dynamo=False)
    import logging
    logging.getLogger().setLevel(logging.ERROR)  # quantize_dynamic's advice to pre-process
    quantize_dynamic(str(f), str(q), weight_type=getattr(QuantType, weight_type))
    return q


def _with_integer_outputs(path):
    """The model with every output of its integer ops (and DynamicQuantizeLinear's scales) as graph outputs."""
    m = onnx.load(str(path))
    for n in m.graph.node:
        if n.op_type in ("DynamicQuantizeLinear", "ConvInteger", "MatMulInteger"):
            m.graph.output.extend(vi(o, TensorProto.UNDEFINED) for o in n.output)
    return onnx.shape_inference.infer_shapes(m)


@pytest.mark.parametrize("weight_type", ["QInt8", "QUInt8"])
def test_quantize_dynamic_cnn_vs_onnxruntime(weight_type, tmp_path):
    """A CNN with batched Linear layers through quantize_dynamic: DynamicQuantizeLinear -> ConvInteger /
    MatMulInteger -> Cast -> Mul by the scales; identical to onnxruntime (the float steps are the same ops in the
    same order)."""
    for seed in range(3):
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        groups = 1 + seed % 2
        net = _ConvNet(3, 1 + 2 * (seed % 2), 1 + seed % 2, groups, int(rng.integers(4, 20)), int(rng.integers(2, 9)))
        x = torch.randn(1, 3 * groups, int(rng.integers(5, 12)), int(rng.integers(5, 12))) * float(rng.uniform(0.1, 4))
        q = _quantized(tmp_path, net, x, weight_type, f"cnn{seed}")
        qm = _with_integer_outputs(q)
        ops = [n.op_type for n in qm.graph.node]
        assert {"DynamicQuantizeLinear", "ConvInteger", "MatMulInteger", "Cast"} <= set(ops), ops
        ref = run_ort(qm, [x.numpy()])
        for layout in LAYOUTS:
            outs, _ = run_mera(qm, [x.numpy()], layout)
            assert len(outs) == len(ref) > 4
            np.testing.assert_allclose(outs[0], ref[0], rtol=1e-5, atol=1e-6)
            for o, r in zip(outs[1:], ref[1:]):  # the integer steps: exact
                assert o.dtype == r.dtype and o.shape == r.shape and np.array_equal(o, r), (seed, layout)


@pytest.mark.parametrize("target", ["InterpreterHw", "Simulator", "IP"])
def test_quantize_dynamic_on_every_target(target, tmp_path):
    """The integer host ops fall back to the host on the DNA targets and in the deployed runtime."""
    torch.manual_seed(7)
    net = _ConvNet(3, 3, 1, 1, 8, 5)
    x = torch.randn(1, 3, 7, 6)
    q = _quantized(tmp_path, net, x, "QInt8", "cnn")
    qm = _with_integer_outputs(q)
    ref = run_ort(qm, [x.numpy()])
    outs, _ = run_mera(qm, [x.numpy()], "NHWC", target=target)
    np.testing.assert_allclose(outs[0], ref[0], rtol=1e-5, atol=1e-6)
    for o, r in zip(outs[1:], ref[1:]):
        assert o.dtype == r.dtype and np.array_equal(o, r)


class _CnnLstm(torch.nn.Module):
    """A CRNN-style recogniser: conv features, columns as a sequence, an LSTM, a classifier; Y and Y_h out."""

    def __init__(self, bidirectional):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 8, 3, stride=(4, 1), padding=1)
        self.lstm = torch.nn.LSTM(32, 16, bidirectional=bidirectional)
        self.fc = torch.nn.Linear(32 if bidirectional else 16, 11)

    def forward(self, x):
        f = torch.relu(self.conv(x))                    # [N, 8, 4, W]
        seq = f.flatten(1, 2).permute(2, 0, 1)           # [W, N, 32]
        y, (h, _) = self.lstm(seq)
        return self.fc(y), h


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("weight_type", ["QInt8", "QUInt8"])
def test_quantize_dynamic_cnn_lstm_vs_onnxruntime(bidirectional, weight_type, tmp_path):
    """quantize_dynamic writes com.microsoft DynamicQuantizeLSTM for an LSTM: X and each step's hidden state are
    quantized at run time. Batch 3 with onnxruntime on one thread: with more, onnxruntime quantizes the hidden state
    per thread's block of batch rows (docs/frontends.md). The gates use onnxruntime's MLAS logistic and tanh, so
    every output is onnxruntime's, bit for bit."""
    for seed, (batch, threads) in enumerate([(1, 0), (3, 1)]):
        torch.manual_seed(seed)
        x = torch.randn(batch, 1, 16, int(np.random.default_rng(seed).integers(6, 20)))
        q = _quantized(tmp_path, _CnnLstm(bidirectional), x, weight_type, f"crnn{seed}")
        assert "DynamicQuantizeLSTM" in [n.op_type for n in onnx.load(str(q)).graph.node]
        ref = run_ort(q, [x.numpy()], threads)
        for layout in LAYOUTS:
            outs, mod = run_mera(q, [x.numpy()], layout)
            assert "dynamic_quantize_lstm" in [nd["op"] for nd in mod.nodes()]
            for o, e in zip(outs, ref):
                assert o.dtype == e.dtype and o.shape == e.shape
                assert np.array_equal(o, e), (layout, seed, np.abs(o - e).max())


def test_dynamic_quantize_lstm_refuses_what_it_does_not_support(tmp_path):
    torch.manual_seed(0)

    class Full(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = torch.nn.LSTM(6, 4)

        def forward(self, x):
            y, (h, c) = self.lstm(x)
            return y, c  # Y_c used

    q = _quantized(tmp_path, Full(), torch.randn(5, 1, 6), "QInt8", "lstm_c")
    with pytest.raises(mera.UnsupportedError, match="DynamicQuantizeLSTM.*Y_c"):
        from_onnx(str(q))


# -- errors ----------------------------------------------------------------------------------------

def test_integer_ops_refuse_what_they_do_not_support():
    u8 = TensorProto.UINT8
    w1d = numpy_helper.from_array(np.ones((2, 1, 3), np.uint8), "w")
    conv1d = model_of([helper.make_node("ConvInteger", ["x", "w"], ["y"], name="ci")], [vi("x", u8, [1, 1, 8])],
                      [vi("y", TensorProto.INT32)], [w1d])
    with pytest.raises(mera.UnsupportedError, match="'ci'.*1-D ConvInteger"):
        from_onnx(conv1d)
    bzp = numpy_helper.from_array(np.ones((2, 3), np.uint8), "bzp")
    mm = model_of([helper.make_node("MatMulInteger", ["a", "b", "", "bzp"], ["y"], name="mmi")],
                  [vi("a", u8, [2, 4]), vi("b", u8, [4, 3])], [vi("y", TensorProto.INT32)], [bzp])
    with pytest.raises(mera.UnsupportedError, match="'mmi'.*b_zero_point of shape \\[2, 3\\]"):
        from_onnx(mm)
    cast = model_of([helper.make_node("MatMulInteger", ["a", "b"], ["i"]),
                     helper.make_node("Cast", ["i"], ["y"], name="to_f16", to=TensorProto.FLOAT16)],
                    [vi("a", u8, [2, 4]), vi("b", u8, [4, 3])], [vi("y", TensorProto.FLOAT16)])
    with pytest.raises(mera.UnsupportedError, match="'to_f16'.*to FLOAT16"):
        from_onnx(cast)
    # a quantized (QDQ) tensor is not a plain integer operand
    f = TensorProto.FLOAT
    qdq = model_of([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
                    helper.make_node("MatMulInteger", ["q", "b"], ["y"], name="mmq")],
                   [vi("x", f, [2, 4])], [vi("y", TensorProto.INT32)],
                   [numpy_helper.from_array(np.float32(0.1), "s"), numpy_helper.from_array(np.uint8(3), "z"),
                    numpy_helper.from_array(np.ones((4, 3), np.uint8), "b")])
    with pytest.raises(mera.UnsupportedError, match="'mmq'.*on the stored integers"):
        from_onnx(qdq)


# -- GRU ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("lbr", [0, 1])
def test_gru_vs_onnxruntime(direction, lbr):
    """Random GRU nodes (bias, initial_h, both layouts of the batch) feeding a float op, Y and Y_h."""
    f = TensorProto.FLOAT
    for seed in range(3):
        rng = np.random.default_rng(seed)
        S, B, I, H = (int(v) for v in rng.integers(1, 7, 4))
        dirs = 2 if direction == "bidirectional" else 1
        batchwise = False  # (onnxruntime refuses layout=1; the node test test_gru_batchwise covers it)
        w = rng.standard_normal((dirs, 3 * H, I)).astype(np.float32)
        r = rng.standard_normal((dirs, 3 * H, H)).astype(np.float32)
        b = rng.standard_normal((dirs, 6 * H)).astype(np.float32)
        x = rng.standard_normal((B, S, I) if batchwise else (S, B, I)).astype(np.float32)
        h0 = rng.standard_normal((B, dirs, H) if batchwise else (dirs, B, H)).astype(np.float32)
        ins = ["x", "w", "r", "b", "", "h0"] if seed else ["x", "w", "r"]
        node = helper.make_node("GRU", ins, ["y", "yh"], hidden_size=H, direction=direction,
                                linear_before_reset=lbr, layout=int(batchwise))
        inits = [numpy_helper.from_array(a, n) for a, n in ((w, "w"), (r, "r"), (b, "b"))]
        inputs = [vi("x", f, list(x.shape))] + ([vi("h0", f, list(h0.shape))] if seed else [])
        model = model_of([node, helper.make_node("Relu", ["y"], ["yr"])], inputs,
                         [vi("yr", f), vi("yh", f)], inits[:3] if seed else inits[:2])
        feeds = [x, h0] if seed else [x]
        ref = run_ort(model, feeds)
        outs, mod = run_mera(model, feeds)
        assert "gru" in [nd["op"] for nd in mod.nodes()]
        for o, e in zip(outs, ref):
            assert o.shape == e.shape
            np.testing.assert_allclose(o, e, rtol=1e-5, atol=1e-5, err_msg=f"{direction} lbr={lbr} seed={seed}")


class _CnnGru(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 8, 3, stride=(4, 1), padding=1)
        self.gru = torch.nn.GRU(32, 16, num_layers=2, bidirectional=True)
        self.fc = torch.nn.Linear(32, 11)

    def forward(self, x):
        f = torch.relu(self.conv(x))
        seq = f.flatten(1, 2).permute(2, 0, 1)
        y, h = self.gru(seq)
        return self.fc(y), h


def test_gru_exported_from_pytorch_vs_onnxruntime(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(1, 1, 16, 20)
    path = tmp_path / "crnn_gru.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_CnnGru().eval(), (x,), str(path), opset_version=14, dynamo=False)
    ref = run_ort(path, [x.numpy()])
    for layout in LAYOUTS:
        outs, _ = run_mera(path, [x.numpy()], layout)
        for o, e in zip(outs, ref):
            assert o.shape == e.shape
            np.testing.assert_allclose(o, e, rtol=1e-5, atol=1e-5, err_msg=layout)


def test_gru_refuses_what_it_does_not_support():
    f = TensorProto.FLOAT
    w = numpy_helper.from_array(np.ones((1, 6, 3), np.float32), "w")
    r = numpy_helper.from_array(np.ones((1, 6, 2), np.float32), "r")
    lens = numpy_helper.from_array(np.array([4, 2], np.int32), "lens")
    cases = {
        "activations": dict(activations=["Relu", "Tanh"]),
        "clip": dict(clip=1.0),
    }
    for what, kw in cases.items():
        m = model_of([helper.make_node("GRU", ["x", "w", "r"], ["y"], name="g", hidden_size=2, **kw)],
                     [vi("x", f, [4, 2, 3])], [vi("y", f)], [w, r])
        with pytest.raises(mera.UnsupportedError, match=f"'g'.*{what}"):
            from_onnx(m)
    m = model_of([helper.make_node("GRU", ["x", "w", "r", "", "lens"], ["y"], name="g", hidden_size=2)],
                 [vi("x", f, [4, 2, 3])], [vi("y", f)], [w, r, lens])
    with pytest.raises(mera.UnsupportedError, match="'g'.*sequence_lens \\[4, 2\\]"):
        from_onnx(m)


# -- TopK --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("largest", [1, 0])
def test_topk_vs_onnxruntime(largest):
    """Random shapes, axes and k; data with many ties (onnxruntime puts the lower index first); values and int64
    indices, both layouts, then a float op on the values."""
    f = TensorProto.FLOAT
    for seed in range(8):
        rng = np.random.default_rng(seed)
        rank = int(rng.integers(1, 5))
        shape = [int(v) for v in rng.integers(1, 7, rank)]
        axis = int(rng.integers(-rank, rank))
        k = int(rng.integers(1, shape[axis] + 1))
        x = rng.integers(-3, 4, shape).astype(np.float32) * np.float32(0.5)  # ties
        sorted_ = 1 if seed % 3 else 0
        node = helper.make_node("TopK", ["x", "k"], ["v", "i"], axis=axis, largest=largest, sorted=sorted_)
        model = model_of([node, helper.make_node("Relu", ["v"], ["vr"])], [vi("x", f, shape)],
                         [vi("vr", f), vi("i", TensorProto.INT64)],
                         [numpy_helper.from_array(np.array([k], np.int64), "k")], opset=11 + seed % 8)
        ref = run_ort(model, [x])
        for layout in LAYOUTS:
            (v, i), mod = run_mera(model, [x], layout)
            assert "topk" in [nd["op"] for nd in mod.nodes()]
            assert i.dtype == np.int64 and v.shape == ref[0].shape and i.shape == ref[1].shape
            if sorted_:
                assert np.array_equal(v, ref[0]) and np.array_equal(i, ref[1]), (seed, layout)
            else:  # the order is unspecified: the same (value, index) pairs
                key = lambda a, b: np.sort(b * 1000 + a, axis=axis)  # noqa: E731
                assert np.array_equal(key(v, i), key(ref[0], ref[1])), (seed, layout)


@pytest.mark.parametrize("target", ["InterpreterHw", "Simulator", "IP"])
def test_topk_int64_output_on_every_target(target):
    f = TensorProto.FLOAT
    node = helper.make_node("TopK", ["x", "k"], ["v", "i"], axis=1)
    model = model_of([node], [vi("x", f, [2, 9])], [vi("v", f), vi("i", TensorProto.INT64)],
                     [numpy_helper.from_array(np.array([4], np.int64), "k")])
    x = np.random.default_rng(1).standard_normal((2, 9)).astype(np.float32)
    ref = run_ort(model, [x])
    outs, _ = run_mera(model, [x], target=target)
    for o, r in zip(outs, ref):
        assert o.dtype == r.dtype and np.array_equal(o, r)


def test_topk_refuses_a_run_time_k():
    f = TensorProto.FLOAT
    model = model_of([helper.make_node("TopK", ["x", "one"], ["v1", "i1"]),  # i1: a run-time int64 [1]
                      helper.make_node("TopK", ["x", "i1"], ["v", "i"], name="tk")],
                     [vi("x", f, [9])], [vi("v", f)], [numpy_helper.from_array(np.array([1], np.int64), "one")])
    with pytest.raises(mera.UnsupportedError, match="'tk'.*TopK K must be a constant"):
        from_onnx(model)


# -- mera.Quantizer on a float model with these ops ---------------------------------------------------

def test_quantizer_keeps_host_ops_float_and_indices_plain():
    """A float graph with a GRU and a TopK quantized by mera.Quantizer: the gru and topk stay float between a
    dequantize and a quantize, and TopK's int64 indices stay plain integers (no observer, no quantize)."""
    f = TensorProto.FLOAT
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
             for n, s in (("w", (4, 3, 3, 3)), ("gw", (1, 15, 4)), ("gr", (1, 15, 5)))]
    inits += [numpy_helper.from_array(np.array([3], np.int64), "k"),
              numpy_helper.from_array(np.array([36, 1, 4], np.int64), "shp")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Transpose", ["r"], ["t"], perm=[2, 3, 0, 1]),
             helper.make_node("Reshape", ["t", "shp"], ["seq"]),
             helper.make_node("GRU", ["seq", "gw", "gr"], ["y", "yh"], hidden_size=5),
             helper.make_node("TopK", ["yh", "k"], ["v", "i"], axis=-1),
             helper.make_node("Relu", ["v"], ["vr"])]
    model = model_of(nodes, [vi("x", f, [1, 3, 6, 6])], [vi("vr", f), vi("i", TensorProto.INT64)], inits)
    mod, params = from_onnx(model, layout="NHWC")
    q = mera.Quantizer((mod, params))
    q.calibrate([np.random.default_rng(i).standard_normal((1, 6, 6, 3)).astype(np.float32) for i in range(4)])
    qmod, qparams = q.quantize()
    ops = [n["op"] for n in qmod.nodes()]
    assert "gru" in ops and ops.count("topk") == 2 and "conv2d" in ops
    x = np.random.default_rng(9).standard_normal((1, 6, 6, 3)).astype(np.float32)
    ref = mera.compile(mod, params, target="Interpreter")(x)
    for target in ("Interpreter", "InterpreterHw"):
        v, i = mera.compile(qmod, qparams, target=target)(x)
        assert i.dtype == np.int64 and np.array_equal(i, ref[1]), target
        np.testing.assert_allclose(v, ref[0], atol=0.1 * np.abs(ref[0]).max())  # int8 error (measured 6%)


@pytest.mark.parametrize("bdt", [np.int8, np.uint8])
def test_dynamic_quantize_matmul_vs_onnxruntime(bdt):
    """com.microsoft DynamicQuantizeMatMul (onnxruntime's fused form): per-tensor and per-column B scales and zero
    points, with and without bias, A of rank 2 and 3."""
    f = TensorProto.FLOAT
    for seed in range(6):
        rng = np.random.default_rng(seed)
        k, n = (int(v) for v in rng.integers(1, 30, 2))
        shape = [int(v) for v in rng.integers(1, 6, 1 + seed % 2)] + [k]
        x = (rng.standard_normal(shape) * rng.uniform(0.1, 10)).astype(np.float32)
        b = _ints(rng, bdt, [k, n])
        per = [n] if seed % 2 else []
        scale = rng.uniform(0.001, 0.1, per).astype(np.float32)
        zp = _ints(rng, bdt, per) if seed % 3 else np.zeros(per, bdt)
        names = ["x", "b", "s", "z"] + (["bias"] if seed % 3 != 1 else [])
        inits = [numpy_helper.from_array(v, nm) for v, nm in ((b, "b"), (scale, "s"), (zp, "z"))]
        inits.append(numpy_helper.from_array(rng.standard_normal(n).astype(np.float32), "bias"))
        node = helper.make_node("DynamicQuantizeMatMul", names, ["y"], domain="com.microsoft")
        graph = helper.make_graph([node], "g", [vi("x", f, shape)], [vi("y", f)], initializer=inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                        helper.make_opsetid("com.microsoft", 1)])
        ref = run_ort(model, [x])[0]
        (out,), mod = run_mera(model, [x])
        assert "matmul_integer" in [nd["op"] for nd in mod.nodes()]
        np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6 * np.abs(ref).max(), err_msg=f"seed {seed}")


@pytest.mark.parametrize("target", ["InterpreterHw", "Simulator", "IP"])
def test_gru_and_dynamic_quantize_lstm_on_every_target(target, tmp_path):
    """The recurrent host ops fall back to the host on the DNA targets and in the deployed runtime."""
    torch.manual_seed(3)
    x = torch.randn(1, 1, 16, 9)
    path = tmp_path / "crnn_gru.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_CnnGru().eval(), (x,), str(path), opset_version=14, dynamo=False)
    q = _quantized(tmp_path, _CnnLstm(True), x, "QInt8", "crnn_lstm")
    for model in (path, q):
        ref = run_ort(model, [x.numpy()])
        outs, _ = run_mera(model, [x.numpy()], "NHWC", target=target)
        for o, e in zip(outs, ref):
            np.testing.assert_allclose(o, e, rtol=1e-5, atol=1e-5 * np.abs(e).max())
