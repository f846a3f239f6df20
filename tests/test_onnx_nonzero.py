"""ONNX comparisons (Greater, Less, Equal, GreaterOrEqual, LessOrEqual), NonZero, GatherND and ScatterND against
onnxruntime: randomized, seeded shapes with broadcasts, batch_dims, negative indices, duplicate indices under each
reduction; NonZero's indices (a data-dependent count) through Transpose and GatherND to the outputs, as the
Ultralytics nms=True exports filter boxes by score, on every target, float and quantized by mera.Quantizer. (Their
ONNX node tests are claimed in tests/test_frontend_onnx.py.)"""

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import mera  # noqa: E402
from mera.frontend import from_onnx  # noqa: E402
from onnx import helper, numpy_helper, TensorProto  # noqa: E402

F, I64 = TensorProto.FLOAT, TensorProto.INT64
TARGETS = ("Interpreter", "InterpreterHw", "Simulator", "IP")
_ELEM = {np.dtype(np.float32): F, np.dtype(np.int64): I64}


def vi(name, elem, shape=None):
    return helper.make_tensor_value_info(name, elem, shape)


def model_of(nodes, inputs, outputs, inits=(), opset=18):
    return helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits)),
                             opset_imports=[helper.make_opsetid("", opset)])


def run_ort(model, feeds):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {i.name: x for i, x in zip(sess.get_inputs(), feeds)})


def run_mera(model, feeds, target="Interpreter", layout="NCHW"):
    mod, params = from_onnx(model, layout=layout)
    with mera.build_config(target=target, sim_log=False):
        return mera.compile(mod, params)(*feeds), mod


def random_shape(rng, rank):
    return [int(rng.integers(1, 5)) for _ in range(rank)]


@pytest.mark.parametrize("op", ["Greater", "Less", "Equal", "GreaterOrEqual", "LessOrEqual"])
@pytest.mark.parametrize("seed", range(4))
def test_compare_vs_onnxruntime(op, seed):
    """Broadcast shapes, float32 with ties (and a NaN) or int64 beyond 2^53; a constant operand or two run-time
    ones. mera's result is uint8 0/1 where ONNX's is bool."""
    rng = np.random.default_rng(seed)
    rank = int(rng.integers(1, 5))
    sa = random_shape(rng, rank)
    sb = [1 if rng.random() < 0.4 else s for s in sa][int(rng.integers(0, rank)):]
    if seed % 2:
        a = rng.choice(np.array([-1.5, 0.0, 0.25, 2.0, np.nan], np.float32), size=sa)
        b = rng.choice(np.array([-1.5, 0.0, 0.25, 2.0], np.float32), size=sb)
    else:
        big = np.int64(2 ** 60)
        a = big + rng.integers(-2, 3, size=sa).astype(np.int64)
        b = big + rng.integers(-2, 3, size=sb).astype(np.int64)
    for const_b in (False, True):
        inits = [numpy_helper.from_array(b, "b")] if const_b else []
        ins = [vi("a", _ELEM[a.dtype], sa)] + ([] if const_b else [vi("b", _ELEM[b.dtype], sb)])
        m = model_of([helper.make_node(op, ["a", "b"], ["y"])], ins, [vi("y", TensorProto.BOOL)], inits)
        feeds = [a] if const_b else [a, b]
        want = run_ort(m, feeds)[0]
        got, mod = run_mera(m, feeds)
        assert "compare" in [n["op"] for n in mod.nodes()]
        assert got[0].dtype == np.uint8 and got[0].shape == want.shape
        np.testing.assert_array_equal(got[0], want.astype(np.uint8))


@pytest.mark.parametrize("seed", range(12))
def test_nonzero_vs_onnxruntime(seed):
    """NonZero of float32 / int64 tensors of rank 1 to 4 with few, many, all or no nonzero elements: onnxruntime's
    indices and shape, after a Transpose too."""
    rng = np.random.default_rng(seed)
    shape = random_shape(rng, int(rng.integers(1, 5)))
    p = [0.0, 0.1, 0.5, 1.0][seed % 4]
    x = (rng.random(shape) < p) * rng.integers(1, 4, size=shape)
    x = x.astype(np.float32 if seed % 3 else np.int64)
    m = model_of([helper.make_node("NonZero", ["x"], ["nz"]), helper.make_node("Transpose", ["nz"], ["t"])],
                 [vi("x", _ELEM[x.dtype], shape)], [vi("nz", I64), vi("t", I64)])
    want = run_ort(m, [x])
    got, _ = run_mera(m, [x])
    assert [g.shape for g in got] == [w.shape for w in want]
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("seed", range(12))
def test_gather_nd_vs_onnxruntime(seed):
    """GatherND with batch_dims 0..2, index tuples of 1 to rank - batch_dims, negative indices, run-time or constant
    indices, float32 or int64 data."""
    rng = np.random.default_rng(100 + seed)
    rank = int(rng.integers(1, 5))
    shape = [int(rng.integers(1, 5)) for _ in range(rank)]
    b = int(rng.integers(0, min(rank, 3)))
    k = int(rng.integers(1, rank - b + 1))
    lead = shape[:b] + random_shape(rng, int(rng.integers(0, 3)))
    idx = np.stack([rng.integers(-s, s, size=lead) for s in shape[b:b + k]], axis=-1).astype(np.int64)
    data = (rng.standard_normal(shape).astype(np.float32) if seed % 2
            else rng.integers(-9, 9, size=shape).astype(np.int64))
    for const_idx in (False, True):
        inits = [numpy_helper.from_array(idx, "i")] if const_idx else []
        ins = [vi("d", _ELEM[data.dtype], shape)] + ([] if const_idx else [vi("i", I64, list(idx.shape))])
        m = model_of([helper.make_node("GatherND", ["d", "i"], ["y"], batch_dims=b)], ins,
                     [vi("y", _ELEM[data.dtype])], inits)
        feeds = [data] if const_idx else [data, idx]
        want = run_ort(m, feeds)[0]
        got, mod = run_mera(m, feeds)
        assert "gather_nd" in [n["op"] for n in mod.nodes()]
        assert got[0].shape == (want.shape if want.ndim else (1,))
        np.testing.assert_array_equal(got[0].reshape(want.shape), want)


def test_gather_nd_index_out_of_range_is_a_run_time_error():
    m = model_of([helper.make_node("GatherND", ["d", "i"], ["y"])], [vi("d", F, [3, 4]), vi("i", I64, [2, 2])],
                 [vi("y", F)])
    mod, params = from_onnx(m, layout="NCHW")
    run = mera.compile(mod, params, target="Interpreter")
    d = np.zeros((3, 4), np.float32)
    assert run(d, np.array([[2, -4], [0, 3]], np.int64))[0].shape == (2,)
    with pytest.raises(mera.MeraError, match="out of range"):
        run(d, np.array([[0, 0], [3, 0]], np.int64))


@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
@pytest.mark.parametrize("seed", range(5))
def test_scatter_nd_vs_onnxruntime(reduction, seed):
    """ScatterND of float32 (or int64) data, tuples of 1 to rank indices, duplicates under the reductions (unique
    under none, whose order ONNX leaves open), negative indices."""
    rng = np.random.default_rng(200 + seed)
    rank = int(rng.integers(1, 4))
    shape = [int(rng.integers(2, 5)) for _ in range(rank)]
    k = int(rng.integers(1, rank + 1))
    cells = np.array(np.unravel_index(np.arange(int(np.prod(shape[:k]))), shape[:k])).T
    n = int(rng.integers(1, len(cells) + 1))
    pick = rng.choice(len(cells), size=n, replace=reduction != "none")
    idx = cells[pick] - np.where(rng.random((n, k)) < 0.3, np.array(shape[:k]), 0)
    idx = idx.reshape(([n] if seed % 2 else [1, n]) + [k]).astype(np.int64)
    ushape = list(idx.shape[:-1]) + shape[k:]
    dt = np.int64 if seed == 4 else np.float32
    data = rng.integers(-3, 4, size=shape).astype(dt)
    upd = rng.integers(-3, 4, size=ushape).astype(dt)
    m = model_of([helper.make_node("ScatterND", ["d", "i", "u"], ["y"], reduction=reduction)],
                 [vi("d", _ELEM[np.dtype(dt)], shape), vi("i", I64, list(idx.shape)),
                  vi("u", _ELEM[np.dtype(dt)], ushape)], [vi("y", _ELEM[np.dtype(dt)])])
    want = run_ort(m, [data, idx, upd])[0]
    got, mod = run_mera(m, [data, idx, upd])
    assert "scatter_nd" in [n["op"] for n in mod.nodes()]
    np.testing.assert_array_equal(got[0], want)


# -- the score filter of Ultralytics' nms=True exports ----------------------------------------------------------

def filter_model(c=3, hw=16, conf=0.7):
    """conv head -> [1, 4 + C, A] -> Transpose [1, A, 4 + C] -> Slice boxes/scores -> ReduceMax/ArgMax over classes
    -> Gather batch 0 -> Greater(score, conf) -> NonZero -> Transpose -> GatherND of the boxes, scores and classes
    (the export writes one NonZero per GatherND) -> Concat [K, 6]."""
    rng = np.random.default_rng(0)
    w1 = (rng.standard_normal((8, 3, 3, 3)) * 0.4).astype(np.float32)
    w2 = (rng.standard_normal((4 + c, 8, 1, 1)) * 0.5).astype(np.float32)
    a = (hw // 2) ** 2
    inits = [numpy_helper.from_array(v, nm) for v, nm in (
        (w1, "w1"), (w2, "w2"), (np.array([1, 4 + c, a], np.int64), "shp"), (np.array([0], np.int64), "s0"),
        (np.array([4], np.int64), "s4"), (np.array([4 + c], np.int64), "s4c"), (np.array([2], np.int64), "ax2"),
        (np.array(0, np.int64), "zero"), (np.array(conf, np.float32), "conf"), (np.array([-1, 1], np.int64), "col"))]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["head"]),
        helper.make_node("Reshape", ["head", "shp"], ["flat"]),
        helper.make_node("Transpose", ["flat"], ["pred"], perm=[0, 2, 1]),             # [1, A, 4 + C]
        helper.make_node("Slice", ["pred", "s0", "s4", "ax2"], ["boxes"]),
        helper.make_node("Slice", ["pred", "s4", "s4c", "ax2"], ["cls_raw"]),
        helper.make_node("Sigmoid", ["cls_raw"], ["cls"]),
        helper.make_node("ReduceMax", ["cls"], ["score"], axes=[-1], keepdims=0),
        helper.make_node("ArgMax", ["cls"], ["label"], axis=-1, keepdims=0),
        helper.make_node("Gather", ["boxes", "zero"], ["box0"], axis=0),
        helper.make_node("Gather", ["score", "zero"], ["score0"], axis=0),
        helper.make_node("Gather", ["label", "zero"], ["label0"], axis=0),
        helper.make_node("Greater", ["score0", "conf"], ["mask"]),
    ]
    for i, src in enumerate(("box0", "score0", "label0")):
        nodes += [helper.make_node("NonZero", ["mask"], [f"nz{i}"]),
                  helper.make_node("Transpose", [f"nz{i}"], [f"t{i}"], perm=[1, 0]),
                  helper.make_node("GatherND", [src, f"t{i}"], [f"k{i}"])]
    nodes += [helper.make_node("Reshape", ["k1", "col"], ["k1c"]),
              helper.make_node("Reshape", ["k2", "col"], ["k2c"]),
              helper.make_node("Cast", ["k2c"], ["k2f"], to=F),
              helper.make_node("Concat", ["k0", "k1c", "k2f"], ["dets"], axis=-1)]
    return model_of(nodes, [vi("x", F, [1, 3, hw, hw])], [vi("dets", F), vi("k2", I64), vi("score0", F)], inits,
                    opset=17)


def images(n, hw=16, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((1, 3, hw, hw)).astype(np.float32) for _ in range(n)]


def test_score_filter_float_on_every_target_matches_onnxruntime():
    model = filter_model()
    mod, params = from_onnx(model, layout="NCHW")
    for x in images(3, seed=1):
        want = run_ort(model, [x])
        assert 0 < want[0].shape[0] < want[2].shape[0]
        for target in TARGETS:
            with mera.build_config(target=target, sim_log=False):
                got = mera.compile(mod, params)(x)
            assert [g.shape for g in got] == [w.shape for w in want], target
            np.testing.assert_array_equal(got[1], want[1], err_msg=target)
            np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-5, err_msg=target)


def test_score_filter_quantized_same_on_every_target(tmp_path):
    """mera.Quantizer: the head int8 on the DNA, the filter on the host; InterpreterHw, Simulator and IP give the same
    bytes, and the rows kept are exactly those of the quantized model's own scores above the threshold."""
    model = filter_model()
    mod, params = from_onnx(model, layout="NHWC")
    q = mera.Quantizer((mod, params))
    q.calibrate([np.ascontiguousarray(x.transpose(0, 2, 3, 1)) for x in images(6, seed=2)])
    qmod, qparams = q.quantize()
    ops = [n["op"] for n in qmod.nodes()]
    assert "conv2d" in ops and "nonzero" in ops and "gather_nd" in ops and "compare" in ops
    for x in images(3, seed=3):
        xh = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        results = {}
        for target in TARGETS[1:]:
            with mera.build_config(target=target, sim_log=False):
                results[target] = mera.compile(qmod, qparams)(xh)
        base = results["InterpreterHw"]
        for target in TARGETS[2:]:
            for g, b in zip(results[target], base):
                assert g.shape == b.shape and g.tobytes() == b.tobytes(), target
        dets, labels, score0 = base
        keep = np.nonzero(score0.astype(np.float32) > np.float32(0.7))[0]
        assert len(keep) > 0 and dets.shape == (len(keep), 6) and labels.shape == (len(keep),)
        # the int8 Concat requantizes the scores to the boxes' wider range: within its step
        np.testing.assert_allclose(dets[:, 4], score0[keep], atol=0.05)
        np.testing.assert_allclose(dets[:, 5], labels.astype(np.float32), atol=0.05)


def filter_nms_model(conf=0.5, iou=0.5):
    """filter_model, then as the export: the kept boxes and scores unsqueezed to [1, K, 4] and [1, 1, K],
    NonMaxSuppression (max_output_boxes_per_class = int64 max), the box column of its rows, and Gathers of the kept
    boxes, scores and classes by it -> Concat [M, 6]."""
    m = filter_model(conf=conf)
    g = m.graph
    g.initializer.extend([numpy_helper.from_array(v, nm) for v, nm in (
        (np.array([0], np.int64), "u0"), (np.array([np.iinfo(np.int64).max], np.int64), "mpc"),
        (np.array([iou], np.float32), "iou"), (np.array([2], np.int64), "c2"), (np.array([1], np.int64), "a1"))])
    g.node.extend([
        helper.make_node("Unsqueeze", ["k0", "u0"], ["nb"]),
        helper.make_node("Unsqueeze", ["k1", "u0"], ["ns1"]),
        helper.make_node("Unsqueeze", ["ns1", "u0"], ["ns"]),
        helper.make_node("NonMaxSuppression", ["nb", "ns", "mpc", "iou"], ["sel"]),
        helper.make_node("Gather", ["sel", "c2"], ["selc"], axis=1),
        helper.make_node("Squeeze", ["selc", "a1"], ["keep"]),
        helper.make_node("Gather", ["k0", "keep"], ["kb"], axis=0),
        helper.make_node("Gather", ["k1", "keep"], ["ks"], axis=0),
        helper.make_node("Reshape", ["ks", "col"], ["ksc"]),
        helper.make_node("Gather", ["k2", "keep"], ["kl"], axis=0),
        helper.make_node("Reshape", ["kl", "col"], ["klc"]),
        helper.make_node("Cast", ["klc"], ["klf"], to=F),
        helper.make_node("Concat", ["kb", "ksc", "klf"], ["final"], axis=-1)])
    del g.output[:]
    g.output.extend([vi("final", F), vi("dets", F), vi("sel", I64)])
    return m


def test_score_filter_then_nms_float_on_every_target_matches_onnxruntime():
    """NonMaxSuppression of the boxes a NonZero filter kept: only the valid ones are candidates (its count input),
    and the Gathers by its rows take the kept boxes' rows."""
    model = filter_nms_model()
    mod, params = from_onnx(model, layout="NCHW")
    assert [n["op"] for n in mod.nodes()].count("non_max_suppression") == 1
    for x in images(3, seed=4):
        want = run_ort(model, [x])
        assert 0 < want[0].shape[0] < want[1].shape[0]
        for target in TARGETS:
            with mera.build_config(target=target, sim_log=False):
                got = mera.compile(mod, params)(x)
            assert [g.shape for g in got] == [w.shape for w in want], target
            np.testing.assert_array_equal(got[2], want[2], err_msg=target)
            np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-5, err_msg=target)


def test_score_filter_then_nms_quantized_same_on_every_target():
    """Quantized: the head int8 on the DNA; compare, nonzero, gather_nd, NonMaxSuppression and the gathers on the
    host; InterpreterHw, Simulator and IP give the same bytes, and the rows are onnxruntime's NonMaxSuppression of
    the quantized model's own kept boxes and scores."""
    model = filter_nms_model()
    model.graph.output.extend([vi("k0", F), vi("k1", F)])  # the kept boxes and scores NonMaxSuppression reads
    mod, params = from_onnx(model, layout="NHWC")
    q = mera.Quantizer((mod, params))
    q.calibrate([np.ascontiguousarray(x.transpose(0, 2, 3, 1)) for x in images(6, seed=2)])
    qmod, qparams = q.quantize()
    ops = [n["op"] for n in qmod.nodes()]
    assert "conv2d" in ops and ops.count("non_max_suppression") == 1 and "nonzero" in ops
    nms_only = model_of([helper.make_node("NonMaxSuppression", ["b", "s", "mpc", "iou"], ["sel"])],
                        [vi("b", F, None), vi("s", F, None)], [vi("sel", I64)],
                        [numpy_helper.from_array(np.array([np.iinfo(np.int64).max], np.int64), "mpc"),
                         numpy_helper.from_array(np.array([0.5], np.float32), "iou")], opset=17)
    for x in images(3, seed=5):
        xh = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        results = {}
        for target in TARGETS[1:]:
            with mera.build_config(target=target, sim_log=False):
                results[target] = mera.compile(qmod, qparams)(xh)
        base = results["InterpreterHw"]
        for target in TARGETS[2:]:
            for g, b in zip(results[target], base):
                assert g.shape == b.shape and g.tobytes() == b.tobytes(), target
        final, dets, sel, k0, k1 = base
        assert 0 < sel.shape[0] < dets.shape[0] == k0.shape[0] and final.shape == (sel.shape[0], 6)
        want = run_ort(nms_only, [k0[None].astype(np.float32), k1[None, None].astype(np.float32)])[0]
        np.testing.assert_array_equal(sel, want)


def test_ops_that_would_mix_filtered_rows_are_refused():
    """NonZero's count is known only at run time: a ReduceSum over the indices, a Pad of them by a constant amount,
    or a NonMaxSuppression of filtered boxes with unfiltered scores is an UnsupportedError naming the node."""
    x = vi("x", F, [6])
    nodes = [helper.make_node("NonZero", ["x"], ["nz"]), helper.make_node("ReduceSum", ["nz"], ["y"], keepdims=0)]
    with pytest.raises(mera.UnsupportedError, match="'ReduceSum_1'.*NonZero's indices"):
        from_onnx(model_of(nodes, [x], [vi("y", I64)]), layout="NCHW")
    nodes = [helper.make_node("NonZero", ["x"], ["nz"]), helper.make_node("Pad", ["nz", "p"], ["y"])]
    m = model_of(nodes, [x], [vi("y", I64)], [numpy_helper.from_array(np.array([0, 0, 0, 3], np.int64), "p")])
    with pytest.raises(mera.UnsupportedError, match="'Pad_1'.*other than the amount that fills them"):
        from_onnx(m, layout="NCHW")
    nodes = [helper.make_node("NonZero", ["x"], ["nz"]), helper.make_node("Transpose", ["nz"], ["t"]),
             helper.make_node("GatherND", ["b", "t"], ["kb"]), helper.make_node("Unsqueeze", ["kb", "z"], ["nb"]),
             helper.make_node("NonMaxSuppression", ["nb", "s"], ["y"])]
    m = model_of(nodes, [x, vi("b", F, [6, 4]), vi("s", F, [1, 1, 6])], [vi("y", I64)],
                 [numpy_helper.from_array(np.array([0], np.int64), "z")])
    with pytest.raises(mera.UnsupportedError, match="NonMaxSuppression.*both must have those rows"):
        from_onnx(m, layout="NCHW")


def test_empty_extras_left_out_of_the_concat():
    """The Ultralytics exports split an "extras" tensor of zero columns off the head and carry it (Gather, GatherND,
    Slice) into the final Concat: mera has no empty tensors, so it stays a constant that Concat leaves out."""
    model = filter_model()
    g = model.graph
    g.initializer.extend([numpy_helper.from_array(np.array([7], np.int64), "s7")])
    g.node.extend([
        helper.make_node("Slice", ["pred", "s4c", "s7", "ax2"], ["extras"]),          # [1, A, 0]
        helper.make_node("Gather", ["extras", "zero"], ["ex0"], axis=0),
        helper.make_node("GatherND", ["ex0", "t0"], ["kex"]),
        helper.make_node("Concat", ["dets", "kex"], ["dets_ex"], axis=-1)])
    g.output.append(vi("dets_ex", F))
    mod, params = from_onnx(model, layout="NCHW")
    x = images(1, seed=1)[0]
    want = run_ort(model, [x])
    got = mera.compile(mod, params, target="Interpreter")(x)
    assert [w.shape for w in want] == [gg.shape for gg in got]
    np.testing.assert_allclose(got[3], want[3], rtol=1e-5, atol=1e-5)


def ultralytics_model(max_det=5, conf=0.5, iou=0.5):
    """The whole post-processing of an Ultralytics nms=True export, by hand: the score filter, class offsets built
    by shape arithmetic on the kept rows (Shape -> Gather -> Unsqueeze -> Concat -> Reshape, Equal/Where -> Expand),
    NonMaxSuppression, its first max_det rows (Slice), the Gathers, and the rows written into a fixed
    [1, max_det, 6] output: Shape -> Sub -> Mul -> Pad of the flattened rows -> Reshape -> ScatterND."""
    m = filter_model(conf=conf)
    g = m.graph
    c = lambda v, nm, dt=np.int64: g.initializer.append(numpy_helper.from_array(np.array(v, dt), nm))  # noqa: E731
    c([0], "u0"); c([np.iinfo(np.int64).max], "mpc"); c([iou], "iou", np.float32); c([2], "c2"); c([1], "a1")
    c(0, "i0"); c(1, "i1"); c([1], "one"); c([4], "four"); c([-1], "m1"); c(-1, "neg1"); c([max_det], "md")
    c(max_det, "md_s"); c([max_det, 6], "out2"); c([1, max_det, 6], "out3"); c([[0]], "at0")
    c(np.zeros((1, max_det, 6), np.float32), "zeros", np.float32); c(0.05, "mult", np.float32); c([0], "z1")
    g.node.extend([
        helper.make_node("Shape", ["k2"], ["shk"]),
        helper.make_node("Gather", ["shk", "i0"], ["nk"], axis=0),
        helper.make_node("Unsqueeze", ["nk", "u0"], ["nk1"]),
        helper.make_node("Concat", ["nk1", "one"], ["sh_k1"], axis=0),
        helper.make_node("Reshape", ["k2", "sh_k1"], ["lab_col"]),
        helper.make_node("Concat", ["nk1", "four"], ["sh_k4"], axis=0),
        helper.make_node("ConstantOfShape", ["two_s"], ["ones"], value=numpy_helper.from_array(np.array([1], np.int64))),
        helper.make_node("Mul", ["ones", "neg1"], ["negs"]),
        helper.make_node("Equal", ["sh_k4", "negs"], ["isneg"]),
        helper.make_node("Where", ["isneg", "ones", "sh_k4"], ["exp_shape"]),
        helper.make_node("Expand", ["lab_col", "exp_shape"], ["lab4"]),
        helper.make_node("Cast", ["lab4"], ["lab4f"], to=F),
        helper.make_node("Mul", ["lab4f", "mult"], ["off"]),
        helper.make_node("Add", ["k0", "off"], ["offbox"]),
        helper.make_node("Unsqueeze", ["offbox", "u0"], ["nb"]),
        helper.make_node("Unsqueeze", ["k1", "u0"], ["ns1"]),
        helper.make_node("Unsqueeze", ["ns1", "u0"], ["ns"]),
        helper.make_node("NonMaxSuppression", ["nb", "ns", "mpc", "iou"], ["sel"]),
        helper.make_node("Gather", ["sel", "c2"], ["selc"], axis=1),
        helper.make_node("Squeeze", ["selc", "a1"], ["keep_all"]),
        helper.make_node("Slice", ["keep_all", "z1", "md", "z1", "one"], ["keep"]),
        helper.make_node("Gather", ["k0", "keep"], ["kb"], axis=0),
        helper.make_node("Gather", ["k1", "keep"], ["ks"], axis=0),
        helper.make_node("Reshape", ["ks", "col"], ["ksc"]),
        helper.make_node("Gather", ["k2", "keep"], ["kl"], axis=0),
        helper.make_node("Reshape", ["kl", "col"], ["klc"]),
        helper.make_node("Cast", ["klc"], ["klf"], to=F),
        helper.make_node("Concat", ["kb", "ksc", "klf"], ["final"], axis=-1),
        helper.make_node("Shape", ["final"], ["shf"]),
        helper.make_node("Gather", ["shf", "i1"], ["ncol"], axis=0),
        helper.make_node("Gather", ["shf", "i0"], ["nrow"], axis=0),
        helper.make_node("Sub", ["md_s", "nrow"], ["missing"]),
        helper.make_node("Mul", ["missing", "ncol"], ["pad_n"]),
        helper.make_node("Reshape", ["final", "m1"], ["flat_dets"]),
        helper.make_node("Unsqueeze", ["pad_n", "u0"], ["pad_n1"]),
        helper.make_node("Concat", ["z1", "pad_n1"], ["pads"], axis=0),
        helper.make_node("Pad", ["flat_dets", "pads"], ["padded"], mode="constant"),
        helper.make_node("Reshape", ["padded", "out2"], ["dets2"]),
        helper.make_node("Reshape", ["dets2", "out3"], ["dets3"]),
        helper.make_node("ScatterND", ["zeros", "at0", "dets3"], ["out"])])
    c([2], "two_s")
    del g.output[:]
    g.output.extend([vi("out", F), vi("sel", I64), vi("k0", F), vi("k1", F)])
    return m


def test_ultralytics_post_processing_float_on_every_target_matches_onnxruntime():
    """More NonMaxSuppression rows than max_det and fewer: the fixed [1, max_det, 6] output is onnxruntime's,
    zeros after the kept rows, on all four targets."""
    for max_det in (3, 80):  # fewer than NonMaxSuppression gives, and more than its 64 rows at most
        model = ultralytics_model(max_det=max_det)
        mod, params = from_onnx(model, layout="NCHW")
        for x in images(2, seed=6):
            want = run_ort(model, [x])
            assert 3 < want[1].shape[0] < 64
            for target in TARGETS:
                with mera.build_config(target=target, sim_log=False):
                    got = mera.compile(mod, params)(x)
                assert [g.shape for g in got] == [w.shape for w in want], target
                np.testing.assert_array_equal(got[1], want[1], err_msg=target)
                np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-5, err_msg=target)


def test_ultralytics_post_processing_quantized_same_on_every_target():
    model = ultralytics_model(max_det=4)
    mod, params = from_onnx(model, layout="NHWC")
    q = mera.Quantizer((mod, params))
    q.calibrate([np.ascontiguousarray(x.transpose(0, 2, 3, 1)) for x in images(6, seed=2)])
    qmod, qparams = q.quantize()
    ops = [n["op"] for n in qmod.nodes()]
    assert "conv2d" in ops and "scatter_nd" in ops and ops.count("non_max_suppression") == 1
    for x in images(2, seed=7):
        xh = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        results = {}
        for target in TARGETS[1:]:
            with mera.build_config(target=target, sim_log=False):
                results[target] = mera.compile(qmod, qparams)(xh)
        base = results["InterpreterHw"]
        for target in TARGETS[2:]:
            for g, b in zip(results[target], base):
                assert g.shape == b.shape and g.tobytes() == b.tobytes(), target
        out, sel = base[0], base[1]
        n = min(sel.shape[0], 4)
        assert out.shape == (1, 4, 6) and np.all(out[0, n:] == 0) and np.all(np.abs(out[0, :n]).sum(-1) > 0)


def test_other_ops_of_an_empty_tensor_are_refused():
    m = model_of([helper.make_node("Slice", ["x", "s2", "s2", "s0"], ["e"]), helper.make_node("Add", ["x", "e"], ["y"])],
                 [vi("x", F, [3, 2])], [vi("y", F)],
                 [numpy_helper.from_array(np.array([2], np.int64), "s2"),
                  numpy_helper.from_array(np.array([1], np.int64), "s0")])
    with pytest.raises(mera.UnsupportedError, match="'Add_1'.*empty tensor"):
        from_onnx(m, layout="NCHW")


def test_run_time_count_as_data_is_refused():
    """Shape of NonZero's indices is a run-time count: as a shape it works, as data (Div by it) it is refused."""
    nodes = [helper.make_node("NonZero", ["x"], ["nz"]), helper.make_node("Shape", ["nz"], ["sh"]),
             helper.make_node("Cast", ["sh"], ["shf"], to=F), helper.make_node("Div", ["x", "shf"], ["y"])]
    m = model_of(nodes, [vi("x", F, [2])], [vi("y", F)])
    with pytest.raises(mera.UnsupportedError, match="'Div_3'.*known only at run time"):
        from_onnx(m, layout="NCHW")


def test_deploy_json_marks_quantized_filtered_outputs(tmp_path):
    """Quantized, a filtered graph output is rows_valid then the quantizer's dequantize: deploy.json still names
    its count output, and load_runtime_module cuts it as mera.compile's runner does."""
    import json
    import os
    model = filter_model()
    mod, params = from_onnx(model, layout="NHWC")
    q = mera.Quantizer((mod, params))
    q.calibrate([np.ascontiguousarray(x.transpose(0, 2, 3, 1)) for x in images(4, seed=2)])
    qmod, qparams = q.quantize()
    with mera.build_config(target="IP"):
        mera.build(qmod, qparams, output_dir=str(tmp_path), host_arch="x86", layout="NHWC")
    outs = json.load(open(os.path.join(tmp_path, "deploy.json")))["outputs"]
    assert len(outs) == 4 and [o.get("valid_rows") for o in outs[:3]] == [{"count_output": 3, "axis": 0}] * 2 + [None]
    xh = np.ascontiguousarray(images(1, seed=3)[0].transpose(0, 2, 3, 1))
    got = mera.load_runtime_module(str(tmp_path))(xh)
    with mera.build_config(target="InterpreterHw", sim_log=False):
        want = mera.compile(qmod, qparams)(xh)
    assert [g.shape for g in got] == [w.shape for w in want] and want[0].shape[0] < 64
    assert all(np.array_equal(g, w) for g, w in zip(got, want))
