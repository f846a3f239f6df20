"""ONNX NonMaxSuppression, Gather by run-time indices and ArgMax/ArgMin against onnxruntime: randomized, seeded
boxes with tied scores and tied IoUs, both box formats, several batches and classes; a YOLO-style detector graph
(conv head -> boxes/scores -> NonMaxSuppression -> Gather) on every target, float and quantized by mera.Quantizer;
the outputs computed from NonMaxSuppression's rows cut to onnxruntime's shapes. (Their ONNX node tests are claimed
in tests/test_frontend_onnx.py.)"""

import json
import os

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import mera  # noqa: E402
from mera.frontend import from_onnx  # noqa: E402
from onnx import helper, numpy_helper, TensorProto  # noqa: E402

F, I64 = TensorProto.FLOAT, TensorProto.INT64
TARGETS = ("Interpreter", "InterpreterHw", "Simulator", "IP")


def vi(name, elem, shape=None):
    return helper.make_tensor_value_info(name, elem, shape)


def model_of(nodes, inputs, outputs, inits=(), opset=17):
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
        return mera.compile(mod, params)(*feeds)


def nms_model(b, c, n, mpc, iou, score, center):
    """NonMaxSuppression alone; mpc/iou/score None: that input omitted."""
    inits, names = [], ["boxes", "scores"]
    for v, name, dt in ((mpc, "mpc", np.int64), (iou, "iou", np.float32), (score, "score", np.float32)):
        if v is None:
            names.append("")
        else:
            inits.append(numpy_helper.from_array(np.array([v], dt), name))
            names.append(name)
    while names and not names[-1]:
        names.pop()
    node = helper.make_node("NonMaxSuppression", names, ["sel"], center_point_box=center)
    return model_of([node], [vi("boxes", F, [b, n, 4]), vi("scores", F, [b, c, n])], [vi("sel", I64)], inits)


def random_case(rng):
    """Boxes on a coarse grid (many equal IoUs, identical boxes, zero areas, flipped corners) and scores from a
    few values (many ties)."""
    b, c, n = int(rng.integers(1, 4)), int(rng.integers(1, 5)), int(rng.integers(1, 40))
    center = int(rng.integers(0, 2))
    grid = rng.integers(0, 8, size=(b, n, 4)).astype(np.float32)
    if center:
        grid[..., 2:] = rng.integers(0, 5, size=(b, n, 2))  # widths and heights, some 0
    boxes = grid * np.float32(rng.choice([1.0, 0.25, 0.1]))
    scores = rng.choice(np.array([0.1, 0.3, 0.3, 0.5, 0.9, 0.9], np.float32), size=(b, c, n))
    if rng.random() < 0.3:
        scores = scores + rng.random((b, c, n)).astype(np.float32) * 1e-3
    mpc = [None, 0, 1, 3, n, n + 5, -2][int(rng.integers(0, 7))]
    iou = [None, 0.0, 0.3, 0.5, 1.0, float(rng.random())][int(rng.integers(0, 6))]
    score = None if rng.random() < 0.4 else [0.0, 0.3, 0.5, float(rng.random())][int(rng.integers(0, 4))]
    if score is not None and iou is None:
        iou = 0.5
    if iou is not None and mpc is None:
        mpc = n
    return boxes.astype(np.float32), scores.astype(np.float32), mpc, iou, score, center


@pytest.mark.parametrize("seed", range(40))
def test_nms_vs_onnxruntime_random(seed):
    """Exactly onnxruntime's rows: its order among tied scores, its IoU arithmetic, the thresholds' strictness, the
    omitted inputs (no max_output_boxes_per_class: no rows) and a negative max (no rows)."""
    rng = np.random.default_rng(seed)
    boxes, scores, mpc, iou, score, center = random_case(rng)
    model = nms_model(boxes.shape[0], scores.shape[1], boxes.shape[1], mpc, iou, score, center)
    want = run_ort(model, [boxes, scores])[0]
    got = run_mera(model, [boxes, scores])
    assert len(got) == 1
    assert got[0].dtype == np.int64 and got[0].shape == want.shape, (got[0].shape, want.shape)
    np.testing.assert_array_equal(got[0], want)


def test_nms_tied_scores_lowest_index_first():
    """Twenty disjoint boxes with two score values, interleaved: onnxruntime pops equal scores lowest box index
    first, and so does mera (a heap ordered by score alone would not)."""
    n = 20
    boxes = np.array([[[i * 2, 0, i * 2 + 1, 1] for i in range(n)]], np.float32)
    scores = np.array([[[0.5 if i % 3 else 0.7 for i in range(n)]]], np.float32)
    model = nms_model(1, 1, n, n, 0.5, None, 0)
    want = run_ort(model, [boxes, scores])[0]
    hi = [i for i in range(n) if i % 3 == 0]
    assert list(want[:, 2]) == hi + [i for i in range(n) if i % 3]
    np.testing.assert_array_equal(run_mera(model, [boxes, scores])[0], want)


def test_nms_run_time_thresholds_and_bad_ones_refused():
    model = nms_model(1, 1, 4, 2, 0.5, None, 0)
    model.graph.initializer.pop()  # iou_threshold now a graph input
    model.graph.input.append(vi("iou", F, [1]))
    model.graph.node[0].name = "nms"
    with pytest.raises(mera.UnsupportedError, match="'nms'.*iou_threshold must be a constant"):
        from_onnx(model)
    with pytest.raises(mera.UnsupportedError, match="iou_threshold 1.5"):
        from_onnx(nms_model(1, 1, 4, 2, 1.5, None, 0))


# -- the rows through the ops that follow -------------------------------------------------------------------

def post_nms_nodes():
    """What detector exports write after NonMaxSuppression: the box index column, the boxes and scores gathered
    by it, the class ids as float."""
    return [
        helper.make_node("NonMaxSuppression", ["boxes", "scores", "mpc", "iou", "thr"], ["sel"], name="nms"),
        helper.make_node("Gather", ["sel", "two"], ["box_idx"], axis=1),            # [K]
        helper.make_node("Slice", ["sel", "one", "two", "one"], ["cls_col"]),     # [K, 1]
        helper.make_node("Squeeze", ["cls_col", "one"], ["cls"]),                   # [K]
        helper.make_node("Cast", ["cls"], ["cls_f"], to=F),
        helper.make_node("Squeeze", ["boxes", "zero"], ["boxes2"]),                 # [N, 4]
        helper.make_node("Gather", ["boxes2", "box_idx"], ["det_boxes"], axis=0),   # [K, 4]
        helper.make_node("Gather", ["scores", "box_idx"], ["det_scores"], axis=2),  # [1, C, K]
        helper.make_node("Unsqueeze", ["cls_f", "one"], ["cls_u"]),                 # [K, 1]
        helper.make_node("Concat", ["det_boxes", "cls_u"], ["det"], axis=1),        # [K, 5]
        helper.make_node("Unsqueeze", ["box_idx", "one"], ["box_u"]),               # [K, 1] int64
        helper.make_node("Concat", ["cls_col", "box_u"], ["pairs"], axis=1),        # [K, 2] int64
        helper.make_node("ArgMax", ["det_scores"], ["best"], axis=1, keepdims=0),   # [1, K]
    ]


def post_nms_inits(mpc, iou, thr):
    return [numpy_helper.from_array(np.array(v, dt), nm) for v, nm, dt in (
        ([mpc], "mpc", np.int64), ([iou], "iou", np.float32), ([thr], "thr", np.float32), (2, "two", np.int64),
        ([1], "one", np.int64), ([2], "two1", np.int64), ([0], "zero", np.int64))]


@pytest.mark.parametrize("seed", range(6))
def test_rows_through_gather_slice_squeeze_concat(seed):
    """Every output computed from the selected rows has onnxruntime's shape and values, on every target; the
    count outputs the runners cut by are not returned."""
    rng = np.random.default_rng(100 + seed)
    c, n = int(rng.integers(1, 4)), int(rng.integers(3, 30))
    boxes = (rng.integers(0, 10, size=(1, n, 4)) * 0.5).astype(np.float32)
    scores = rng.choice(np.array([0.2, 0.4, 0.4, 0.8], np.float32), size=(1, c, n))
    nodes = post_nms_nodes()
    nodes[2].input[2] = "two1"
    outs = [vi("sel", I64), vi("det_boxes", F), vi("det_scores", F), vi("det", F), vi("cls", I64),
            vi("pairs", I64), vi("best", I64)]
    model = model_of(nodes, [vi("boxes", F, [1, n, 4]), vi("scores", F, [1, c, n])], outs,
                     post_nms_inits(int(rng.integers(1, 6)), 0.4, 0.3))
    want = run_ort(model, [boxes, scores])
    for target in TARGETS:
        got = run_mera(model, [boxes, scores], target)
        assert len(got) == len(want), target
        for g, w in zip(got, want):
            assert g.shape == w.shape and g.dtype == w.dtype, (target, g.shape, w.shape)
            np.testing.assert_array_equal(g, w, err_msg=target)


def test_no_rows_selected_gives_empty_outputs():
    """A score threshold above every score: onnxruntime's [0, 3] and [0, 4] outputs, and max_output 0 too."""
    n = 5
    boxes = np.random.default_rng(0).random((1, n, 4)).astype(np.float32)
    scores = np.full((1, 1, n), 0.2, np.float32)
    for mpc, thr in ((3, 0.9), (0, 0.0)):
        nodes = post_nms_nodes()[:1] + [post_nms_nodes()[1], post_nms_nodes()[5], post_nms_nodes()[6]]
        model = model_of(nodes, [vi("boxes", F, [1, n, 4]), vi("scores", F, [1, 1, n])],
                         [vi("sel", I64), vi("det_boxes", F)], post_nms_inits(mpc, 0.5, thr))
        want = run_ort(model, [boxes, scores])
        got = run_mera(model, [boxes, scores])
        assert [g.shape for g in got] == [w.shape for w in want] == [(0, 3), (0, 4)]


def test_ops_that_would_mix_rows_are_refused():
    """A reduction over the selected rows (or a Gather along them) cannot know which rows are valid: the error
    names the node; the other nodes of the graph are checked too."""
    nodes = post_nms_nodes()[:7] + [
        helper.make_node("ReduceSum", ["det_boxes"], ["total"], name="sum_rows", keepdims=0),
        helper.make_node("Gather", ["sel", "zero"], ["first"], name="first_row", axis=0)]
    model = model_of(nodes, [vi("boxes", F, [1, 8, 4]), vi("scores", F, [1, 2, 8])],
                     [vi("total", F), vi("first", I64)], post_nms_inits(3, 0.5, 0.1))
    with pytest.raises(mera.UnsupportedError) as e:
        from_onnx(model)
    assert "'sum_rows'" in str(e.value) and "'first_row'" in str(e.value)
    assert "NonMaxSuppression's selected rows" in str(e.value)


# -- Gather by run-time indices ------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(8))
def test_gather_run_time_indices_vs_onnxruntime(seed):
    """Indices of any rank, negative ones included, on any axis of float data: onnxruntime's values."""
    rng = np.random.default_rng(seed)
    rank = int(rng.integers(1, 5))
    shape = [int(v) for v in rng.integers(1, 6, rank)]
    axis = int(rng.integers(-rank, rank))
    n = shape[axis]
    ishape = [int(v) for v in rng.integers(1, 4, int(rng.integers(1, 3)))]
    idx = rng.integers(-n, n, size=ishape).astype(np.int64)
    x = rng.standard_normal(shape).astype(np.float32)
    model = model_of([helper.make_node("Gather", ["x", "i"], ["y"], axis=axis)],
                     [vi("x", F, shape), vi("i", I64, ishape)], [vi("y", F)])
    want = run_ort(model, [x, idx])[0]
    for target in ("Interpreter", "InterpreterHw"):
        np.testing.assert_array_equal(run_mera(model, [x, idx], target)[0], want)


@pytest.mark.parametrize("target", TARGETS)
def test_gather_index_out_of_range_is_a_run_time_error(target):
    model = model_of([helper.make_node("Gather", ["x", "i"], ["y"], name="pick", axis=0)],
                     [vi("x", F, [4, 3]), vi("i", I64, [2])], [vi("y", F)])
    mod, params = from_onnx(model)
    with mera.build_config(target=target, sim_log=False):
        r = mera.compile(mod, params)
    x = np.zeros((4, 3), np.float32)
    np.testing.assert_array_equal(r(x, np.array([-4, 3], np.int64))[0], x[[0, 3]])
    with pytest.raises(mera.MeraError, match=r"index 4 .* out of range for axis 0 of size 4"):
        r(x, np.array([1, 4], np.int64))
    with pytest.raises(mera.MeraError, match=r"index -5 "):
        r(x, np.array([-5, 0], np.int64))


# -- ArgMax / ArgMin ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("seed", range(6))
def test_argmax_argmin_vs_onnxruntime(op, seed):
    """Random shapes, axes, keepdims and select_last_index on data with many ties; 4-D data in both layouts."""
    rng = np.random.default_rng(seed)
    rank = int(rng.integers(2, 5))
    shape = [int(v) for v in rng.integers(1, 6, rank)]
    axis, keep, last = int(rng.integers(-rank, rank)), int(rng.integers(0, 2)), int(rng.integers(0, 2))
    x = rng.integers(0, 3, size=shape).astype(np.float32)
    model = model_of([helper.make_node(op, ["x"], ["y"], axis=axis, keepdims=keep, select_last_index=last)],
                     [vi("x", F, shape)], [vi("y", I64)])
    want = run_ort(model, [x])[0]
    for layout in ("NCHW", "NHWC"):
        mod, params = from_onnx(model, layout=layout)
        xs = np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if layout == "NHWC" and rank == 4 else x
        y = mera.compile(mod, params, target="Interpreter")(xs)[0]
        if layout == "NHWC" and y.ndim == 4:
            y = np.ascontiguousarray(y.transpose(0, 3, 1, 2))
        assert y.dtype == np.int64
        np.testing.assert_array_equal(y, want, err_msg=layout)


@pytest.mark.parametrize("kind", ["argmax", "argmin"])
def test_argmax_of_quantized_data_equals_the_floats(kind):
    """On uint8/int8 data with a positive scale the index of the largest stored integer is that of the largest
    real value, ties included (select_last_index both ways)."""
    from mera import ir
    rng = np.random.default_rng(5)
    for dtype, zp in (("uint8", 128), ("int8", -3)):
        info = np.iinfo(dtype)
        q = rng.integers(info.min, info.min + 6, size=(3, 7, 4)).astype(dtype)
        real = (q.astype(np.float32) - zp) * np.float32(0.05)
        for last in (0, 1):
            b = ir.Builder()
            x = b.input("x", q.shape, dtype, qparams=(0.05, zp))
            y = b.op(kind, x, axis=1, keepdims=0, select_last_index=last)
            mod = b.finish(y)
            got = mera.compile(mod, {}, target="InterpreterHw")(q)[0]
            f = np.argmax if kind == "argmax" else np.argmin
            want = f(real, axis=1) if not last else real.shape[1] - 1 - f(real[:, ::-1], axis=1)
            np.testing.assert_array_equal(got, want)


# -- a YOLO-style detector ---------------------------------------------------------------------------------

def yolo_model(c=3, hw=16, mpc=4):
    """conv head -> [1, 4 + C, A] -> boxes [1, A, 4] (cx, cy, w, h) and sigmoid scores [1, C, A] ->
    NonMaxSuppression (center_point_box=1) -> the boxes, scores and classes of the selected rows."""
    rng = np.random.default_rng(0)
    a = (hw // 2) ** 2
    w1 = (rng.standard_normal((8, 3, 3, 3)) * 0.4).astype(np.float32)
    w2 = (rng.standard_normal((4 + c, 8, 1, 1)) * 0.5).astype(np.float32)
    b2 = (rng.standard_normal(4 + c) * 0.2).astype(np.float32)
    inits = [numpy_helper.from_array(v, nm) for v, nm in (
        (w1, "w1"), (w2, "w2"), (b2, "b2"), (np.array([1, 4 + c, a], np.int64), "shp"),
        (np.array([0], np.int64), "s0"), (np.array([4], np.int64), "s4"), (np.array([4 + c], np.int64), "s4c"),
        (np.array([1], np.int64), "ax1"), (np.array([8.0, 8.0, 4.0, 4.0], np.float32).reshape(1, 4, 1), "gain"),
        (np.array([mpc], np.int64), "mpc"), (np.array([0.45], np.float32), "iou"),
        (np.array([0.25], np.float32), "thr"), (np.array(2, np.int64), "two"), (np.array(1, np.int64), "one_s"),
        (np.array([0], np.int64), "zero"))]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["head"]),
        helper.make_node("Reshape", ["head", "shp"], ["flat"]),                       # [1, 4+C, A]
        helper.make_node("Slice", ["flat", "s0", "s4", "ax1"], ["box_raw"]),          # [1, 4, A]
        helper.make_node("Mul", ["box_raw", "gain"], ["box_scaled"]),
        helper.make_node("Transpose", ["box_scaled"], ["boxes"], perm=[0, 2, 1]),      # [1, A, 4]
        helper.make_node("Slice", ["flat", "s4", "s4c", "ax1"], ["cls_raw"]),         # [1, C, A]
        helper.make_node("Sigmoid", ["cls_raw"], ["scores"]),
        helper.make_node("NonMaxSuppression", ["boxes", "scores", "mpc", "iou", "thr"], ["sel"],
                         center_point_box=1),
        helper.make_node("Gather", ["sel", "two"], ["box_idx"], axis=1),
        helper.make_node("Gather", ["sel", "one_s"], ["cls_idx"], axis=1),
        helper.make_node("Squeeze", ["boxes", "zero"], ["boxes2"]),
        helper.make_node("Gather", ["boxes2", "box_idx"], ["det_boxes"], axis=0),
        helper.make_node("Gather", ["scores", "box_idx"], ["cand"], axis=2),          # [1, C, K]
    ]
    outs = [vi("det_boxes", F), vi("cls_idx", I64), vi("cand", F), vi("boxes", F), vi("scores", F)]
    return model_of(nodes, [vi("x", F, [1, 3, hw, hw])], outs, inits)


def images(n, hw=16, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((1, 3, hw, hw)).astype(np.float32) for _ in range(n)]


def test_yolo_style_float_on_every_target_matches_onnxruntime():
    model = yolo_model()
    mod, params = from_onnx(model, layout="NCHW")
    for x in images(3, seed=1):
        want = run_ort(model, [x])
        assert want[0].shape[0] > 0
        for target in TARGETS:
            with mera.build_config(target=target, sim_log=False):
                got = mera.compile(mod, params)(x)
            assert [g.shape for g in got] == [w.shape for w in want], target
            np.testing.assert_array_equal(got[1], want[1], err_msg=target)   # the classes selected
            np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-5, err_msg=target)
            np.testing.assert_allclose(got[2], want[2], rtol=1e-5, atol=1e-5, err_msg=target)


def test_yolo_style_quantized_same_on_every_target_and_nms_exact_on_its_boxes(tmp_path):
    """mera.Quantizer: the head is int8, NonMaxSuppression and the gathers stay on the host in float. InterpreterHw,
    Simulator and IP give the same bytes; the rows selected are onnxruntime's NonMaxSuppression of the quantized
    model's own boxes and scores; an int64 Concat of the class and box columns stays plain integers."""
    model = yolo_model()
    model.graph.node.extend([helper.make_node("Unsqueeze", ["cls_idx", "ax1"], ["cu"]),
                             helper.make_node("Unsqueeze", ["box_idx", "ax1"], ["bu"]),
                             helper.make_node("Concat", ["cu", "bu"], ["pairs"], axis=1)])
    model.graph.output.append(vi("pairs", I64))
    mod, params = from_onnx(model, layout="NHWC")
    q = mera.Quantizer((mod, params))
    q.calibrate([np.ascontiguousarray(x.transpose(0, 2, 3, 1)) for x in images(6, seed=2)])
    qmod, qparams = q.quantize()
    ops = [n["op"] for n in qmod.nodes()]
    assert "conv2d" in ops and "non_max_suppression" in ops and "gather" in ops
    nms_only = nms_model(1, 3, 64, 4, 0.45, 0.25, 1)
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
        det_boxes, cls_idx, cand, boxes, scores, pairs = base
        sel = run_ort(nms_only, [boxes, scores])[0]
        assert sel.shape[0] > 0
        np.testing.assert_array_equal(cls_idx, sel[:, 1])
        np.testing.assert_array_equal(pairs, sel[:, 1:])
        np.testing.assert_array_equal(det_boxes, boxes[0][sel[:, 2]])
        np.testing.assert_array_equal(cand, scores[:, :, sel[:, 2]])


def test_nms_computed_once_per_run_float_and_quantized():
    """One non_max_suppression node gives the rows and their count (output="packed": the rows then [count, 0, 0]),
    in the imported graph and in mera.Quantizer's; the count and rows it gives are onnxruntime's."""
    model = yolo_model()
    mod, params = from_onnx(model, layout="NHWC")
    nms_nodes = [n for n in mod.nodes() if n["op"] == "non_max_suppression"]
    assert len(nms_nodes) == 1 and nms_nodes[0]["attrs"]["output"] == "packed"
    q = mera.Quantizer((mod, params))
    q.calibrate([np.ascontiguousarray(x.transpose(0, 2, 3, 1)) for x in images(4, seed=2)])
    qmod, _ = q.quantize()
    assert [n["attrs"]["output"] for n in qmod.nodes() if n["op"] == "non_max_suppression"] == ["packed"]
    # the packed op alone, on boxes and scores with ties: rows, then [count, 0, 0]
    rng = np.random.default_rng(5)
    for _ in range(5):
        boxes, scores, mpc, iou, score, center = random_case(rng)
        want = run_ort(nms_model(*scores.shape[:2], boxes.shape[1], mpc, iou, score, center), [boxes, scores])[0]
        b = mera.ir.Builder()
        vb, vs = b.input("boxes", list(boxes.shape)), b.input("scores", list(scores.shape))
        attrs = dict(max_output_boxes_per_class=max(mpc or 0, 0), iou_threshold=float(iou or 0.0),
                     center_point_box=center)
        if score is not None:
            attrs.update(use_score_threshold=1, score_threshold=float(np.float32(score)))
        m = b.finish(b.op("non_max_suppression", vb, vs, output="packed", **attrs))
        with mera.build_config(target="Interpreter", sim_log=False):
            got = mera.compile(m, {})(boxes, scores)[0]
        k = want.shape[0]
        np.testing.assert_array_equal(got[:k], want)
        assert not got[k:-1].any() and list(got[-1]) == [k, 0, 0]


def test_deploy_json_says_which_output_holds_the_count(tmp_path):
    """The C deploy runtime returns full-size outputs plus the counts; deploy.json names them, and
    load_runtime_module cuts the outputs as mera.compile's runners do."""
    model = yolo_model()
    mod, params = from_onnx(model, layout="NCHW")
    with mera.build_config(target="IP"):
        mera.build(mod, params, output_dir=str(tmp_path), host_arch="x86", layout="NCHW")
    outs = json.load(open(os.path.join(tmp_path, "deploy.json")))["outputs"]
    assert len(outs) == 6 and outs[5]["dtype"] == "int64" and outs[5]["shape"] == [1]
    assert [o.get("valid_rows") for o in outs[:5]] == [{"count_output": 5, "axis": a} for a in (0, 0, 2)] + [None] * 2
    rt = mera.load_runtime_module(str(tmp_path))
    x = images(1, seed=1)[0]
    want = run_ort(model, [x])
    assert rt.get_num_outputs() == 5
    got = rt(x)
    assert [g.shape for g in got] == [w.shape for w in want]
    got2 = rt.set_input(x).run().get_outputs()
    assert all(np.array_equal(a, b) for a, b in zip(got, got2))


# -- torch.argmax / torch.argmin (TorchScript frontend) --------------------------------------------------------

@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_torch_argmax_argmin(layout):
    """aten::argmax / aten::argmin on float data with ties (PyTorch gives the first of equal values); a dim=None
    call (a 0-d result) is refused by name. (PyTorch has no argmax of quantized tensors.)"""
    torch = pytest.importorskip("torch")
    from mera.frontend import from_pytorch

    class M(torch.nn.Module):
        def forward(self, x):
            return torch.argmax(torch.relu(x), dim=1), torch.argmin(x, dim=-1, keepdim=True)

    x = torch.randint(-2, 3, (2, 5, 4, 3)).float()
    sm = torch.jit.trace(M().eval(), x)
    xi = x.permute(0, 2, 3, 1).contiguous().numpy() if layout == "NHWC" else x.numpy()
    mod, params = from_pytorch(sm, [("input0", xi.shape)], layout=layout)
    out = mera.compile(mod, params, target="Interpreter")(xi)
    ref = sm(x)
    np.testing.assert_array_equal(out[0], ref[0].numpy())
    np.testing.assert_array_equal(out[1] if layout == "NCHW" else out[1].transpose(0, 3, 1, 2), ref[1].numpy())

    class All(torch.nn.Module):
        def forward(self, x):
            return torch.argmax(x)

    # dim=None: the index into the flattened tensor, a 0-d int64 as PyTorch's
    mod, params = from_pytorch(torch.jit.trace(All().eval(), x), [("input0", tuple(x.shape))], layout="NCHW")
    out = mera.compile(mod, params, target="Interpreter")(x.numpy())
    assert int(np.asarray(out[0]).reshape(-1)[0]) == int(All()(x))


def test_torchvision_style_nms_export():
    """The graph torchvision's ONNX export of ``boxes[nms(boxes, scores, iou)]`` writes: Unsqueeze, Cast,
    NonMaxSuppression with max_output_boxes_per_class = sys.maxsize, Gather of column [2], Squeeze, Gather of the
    boxes: onnxruntime's shapes and values on every target."""
    nodes = [helper.make_node("Unsqueeze", ["boxes", "zero"], ["b3"]),
             helper.make_node("Unsqueeze", ["scores", "zero"], ["s2"]),
             helper.make_node("Unsqueeze", ["s2", "zero"], ["s3"]),
             helper.make_node("Cast", ["b3"], ["b3f"], to=F),
             helper.make_node("Cast", ["s3"], ["s3f"], to=F),
             helper.make_node("NonMaxSuppression", ["b3f", "s3f", "maxsize", "iou"], ["nms_out"]),
             helper.make_node("Gather", ["nms_out", "two"], ["col"], axis=1),
             helper.make_node("Squeeze", ["col", "one"], ["keep"]),
             helper.make_node("Gather", ["boxes", "keep"], ["kept"], axis=0)]
    inits = [numpy_helper.from_array(np.array(v, dt), nm) for v, nm, dt in (
        ([0], "zero", np.int64), ([1], "one", np.int64), ([2], "two", np.int64),
        ([np.iinfo(np.int64).max], "maxsize", np.int64), ([0.5], "iou", np.float32))]
    n = 30
    model = model_of(nodes, [vi("boxes", F, [n, 4]), vi("scores", F, [n])], [vi("keep", I64), vi("kept", F)], inits)
    rng = np.random.default_rng(7)
    xy = rng.random((n, 2)).astype(np.float32) * 10
    corners = np.concatenate([xy, xy + rng.random((n, 2)).astype(np.float32) * 4 + 0.5], axis=1)
    boxes = np.ascontiguousarray(corners[:, [1, 0, 3, 2]])  # [y1, x1, y2, x2]
    scores = rng.random(n).astype(np.float32)
    want = run_ort(model, [boxes, scores])
    assert 0 < want[0].shape[0] < n
    for target in TARGETS:
        got = run_mera(model, [boxes, scores], target)
        assert [g.shape for g in got] == [w.shape for w in want], target
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w, err_msg=target)


def test_cli_run_compares_cut_outputs(tmp_path, monkeypatch, capsys):
    """``mera run`` on a deploy directory of the YOLO-style graph: the outputs it saves and compares have the
    cut shapes (the references of a cut output are this run's shape)."""
    from mera.cli import main
    model = yolo_model()
    mod, params = from_onnx(model, layout="NCHW")
    with mera.build_config(target="InterpreterHw"):
        mera.build(mod, params, output_dir=str(tmp_path / "d"), host_arch="x86", layout="NCHW")
    x = images(1, seed=1)[0]
    x.tofile(tmp_path / "input0.bin")
    monkeypatch.chdir(tmp_path)
    assert main(["run", "d", "--input", "input0.bin", "--save-outputs", "out", "-q"]) == 0
    want = run_ort(model, [x])
    assert os.path.getsize(tmp_path / "out" / "output_0.bin") == want[0].nbytes
    refs = [f"out/output_{k}.bin" for k in range(len(want))]
    capsys.readouterr()
    assert main(["run", "d", "--input", "input0.bin", *[a for r in refs for a in ("--reference", r)]]) == 0
    assert capsys.readouterr().out.count("correct ratio: 1") == len(want)
