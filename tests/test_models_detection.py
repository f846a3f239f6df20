"""Detection models of the zoo (mera.models.TASK_MODELS): quantized with eager PTQ (fbgemm), traced,
imported in both layouts, they give PyTorch's bytes on InterpreterHw, and the Simulator gives
InterpreterHw's bytes; the float model matches on the Interpreter.  The YOLO host post-processing
(decode + class-aware NMS) is checked on hand-made maps and against onnxruntime's NonMaxSuppression."""

import copy
import functools
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

import mera
import mera.models as mm
from mera.models import yolo

torch.backends.quantized.engine = "fbgemm"
# from_pytorch traces the float nn.Modules given to it; torch 2.13 announces the deprecation of tracing
pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.trace(_method)?` is deprecated:DeprecationWarning")
DETECTORS = ["yolov5n", "ssdlite320_mobilenet_v3_large"]


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    # the numerics contract is PyTorch's single-threaded arithmetic
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def flat(y):
    return list(y) if isinstance(y, (tuple, list)) else [y]


@functools.lru_cache(maxsize=None)
def built(name, **kwargs):
    kw = dict(kwargs)
    float_model = mm.TASK_MODELS[name](seed=0, **kw)
    quantized = mm.TASK_MODELS[name](quantize=True, seed=0, **kw)
    inputs = mm.calibration_data(name, n=2, seed=1234)  # not the calibration batches (seed 0)
    traced = mm.trace(quantized, inputs[0])
    with torch.no_grad():
        y_float = [[t.numpy() for t in flat(float_model(x))] for x in inputs]
        y_traced = [[t.numpy() for t in flat(traced(x))] for x in inputs]
    return SimpleNamespace(float_model=float_model, traced=traced, inputs=inputs, y_float=y_float,
                           y_traced=y_traced)


def to_layout(x, layout):
    a = x.numpy() if isinstance(x, torch.Tensor) else x
    return a if layout == "NCHW" else np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def from_layout(a, layout):
    return a if layout == "NCHW" or a.ndim != 4 else a.transpose(0, 3, 1, 2)


def compile_for(mod, params, target, **config):
    if target == "Simulator":
        config.setdefault("sim_log", False)
    with mera.build_config(target=target, **config):
        return mera.compile(mod, params)


def assert_bit_exact(outs, refs, what):
    assert len(outs) == len(refs), f"{what}: {len(outs)} outputs, expected {len(refs)}"
    for i, (o, r) in enumerate(zip(outs, refs)):
        assert o.shape == r.shape, f"{what}: output {i} shape {o.shape}, expected {r.shape}"
        diff = np.abs(o - r)
        assert diff.max() == 0.0, f"{what}: output {i}: {int((diff > 0).sum())} of {r.size} differ, " \
                                  f"max abs diff {diff.max()}"


def test_task_models_know_their_shapes_and_data():
    for name in DETECTORS:
        shape = mm.input_shape(name)
        xs = mm.calibration_data(name, n=2, seed=3)
        assert len(xs) == 2 and tuple(xs[0].shape) == shape
        assert torch.equal(xs[0], mm.calibration_data(name, n=1, seed=3)[0])
    assert mm.input_shape("yolov5n") == (1, 3, 256, 256)


# parameter counts of the real models: Ultralytics' YOLOv5n summary, torchvision's SSDlite320 docs
PARAMETERS = {"yolov5n": 1_872_157, "ssdlite320_mobilenet_v3_large": 3_440_060}
# op kinds each traced model must use (the structure the frontend has to handle)
KEY_OPS = {
    "yolov5n": {"aten::slice", "quantized::cat", "quantized::mul", "quantized::add", "aten::sigmoid",
                "aten::max_pool2d", "aten::upsample_nearest2d", "quantized::conv2d"},
    "ssdlite320_mobilenet_v3_large": {"quantized::conv2d_relu", "quantized::hardswish", "aten::hardsigmoid",
                                      "quantized::mul", "aten::permute", "aten::reshape", "quantized::cat"},
}


@pytest.mark.parametrize("name", DETECTORS)
def test_detector_structure_and_quantization(name):
    z = built(name)
    assert mm.count_parameters(z.float_model) == PARAMETERS[name]
    kinds = [n.kind() for n in z.traced.inlined_graph.nodes()]
    assert KEY_OPS[name] <= set(kinds), sorted(KEY_OPS[name] - set(kinds))
    # fusion is complete: one quantized conv per float conv, no batch norm left
    n_convs = sum(k in ("quantized::conv2d", "quantized::conv2d_relu") for k in kinds)
    assert n_convs == sum(isinstance(m, nn.Conv2d) for m in z.float_model.modules())
    fused = copy.deepcopy(z.float_model)
    fused.fuse_model()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    with torch.no_grad():
        for a, b in zip(flat(fused(z.inputs[0])), z.y_float[0]):
            np.testing.assert_allclose(a.numpy(), b, rtol=1e-3, atol=1e-3)
    # the int8 model tracks the float one, input-dependent part included
    for i in range(len(z.inputs)):
        for yf, yq in zip(z.y_float[i], z.y_traced[i]):
            assert np.corrcoef(yf.ravel(), yq.ravel())[0, 1] > 0.95
    d_float = [a - b for a, b in zip(z.y_float[0], z.y_float[1])]
    d_quant = [a - b for a, b in zip(z.y_traced[0], z.y_traced[1])]
    for a, b in zip(d_float, d_quant):
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.8


def test_task_model_build_is_quiet_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = mm.yolov5n(quantize=True, seed=3)
        mm.trace(model, mm.calibration_data("yolov5n", n=1)[0])
    assert [str(w.message) for w in caught] == []
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("name", DETECTORS)
def test_quantized_detector_is_bit_exact_on_interpreter_hw(name, layout):
    z = built(name)
    x = to_layout(z.inputs[0], layout)
    mod, params = mera.relay.frontend.from_pytorch(z.traced, [("input0", x.shape)], layout=layout)
    runner = compile_for(mod, params, "InterpreterHw")
    for x_t, ref in zip(z.inputs, z.y_traced):
        outs = [from_layout(o, layout) for o in runner(to_layout(x_t, layout))]
        assert_bit_exact(outs, ref, f"{name} {layout}")
    # the outputs carry information: not constant, many distinct levels, and they depend on the input
    for r, r1 in zip(z.y_traced[0], z.y_traced[1]):
        assert r.std() > 0.05 and len(np.unique(r)) > 30 and not np.array_equal(r, r1)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("name", DETECTORS)
def test_detector_on_simulator_matches_interpreter_hw(name, layout):
    z = built(name)
    x = to_layout(z.inputs[0], layout)
    mod, params = mera.relay.frontend.from_pytorch(z.traced, [("input0", x.shape)], layout=layout)
    ref = compile_for(mod, params, "InterpreterHw")(x)
    assert_bit_exact([from_layout(o, layout) for o in ref], z.y_traced[0], f"{name} InterpreterHw")
    sim = compile_for(mod, params, "Simulator", arch=100)
    got = sim(x)
    assert len(got) == len(ref)
    for i, (r, g) in enumerate(zip(ref, got)):
        assert r.dtype == g.dtype and r.shape == g.shape
        assert np.array_equal(r, g), f"{name}: Simulator output {i}: {int((r != g).sum())} bytes differ"
    assert len(sim.partition_report().on_dna) > 0


@pytest.mark.parametrize("name", DETECTORS)
def test_thread_count_never_changes_a_byte(name):
    """InterpreterHw splits convs, sigmoids, muls, pools, upsampling and concats across its workers."""
    z = built(name)
    x = to_layout(z.inputs[0], "NHWC")
    mod, params = mera.relay.frontend.from_pytorch(z.traced, [("input0", x.shape)], layout="NHWC")
    for threads in (2, 7):
        outs = compile_for(mod, params, "InterpreterHw", num_threads=threads)(x)
        assert_bit_exact([from_layout(o, "NHWC") for o in outs], z.y_traced[0], f"{name}, {threads} threads")


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("name", DETECTORS)
def test_float_detector_matches_torch_on_interpreter(name, layout):
    z = built(name)
    x = to_layout(z.inputs[0], layout)
    mod, params = mera.frontend.from_pytorch(z.float_model, [("input0", x.shape)], layout=layout)
    outs = compile_for(mod, params, "Interpreter")(x)
    assert len(outs) == len(z.y_float[0])
    for o, r in zip(outs, z.y_float[0]):
        o = from_layout(o, layout)
        assert o.shape == r.shape and np.abs(o - r).max() <= 1e-4 * np.abs(r).max()


def test_yolo_variants_hardswish_and_conv_stem_are_bit_exact():
    """YOLOv5's edge-export activation (Hardswish) and v6's 6x6/2 stem conv instead of Focus."""
    z = built("yolov5n", act="hardswish", stem="conv")
    x = to_layout(z.inputs[1], "NCHW")
    mod, params = mera.relay.frontend.from_pytorch(z.traced, [("input0", x.shape)], layout="NCHW")
    assert_bit_exact(compile_for(mod, params, "InterpreterHw")(x), z.y_traced[1], "yolov5n hardswish/conv")


def test_yolo_rejects_unknown_options():
    with pytest.raises(mera.ConfigError, match="act must be"):
        yolo.YOLOv5(act="mish")
    with pytest.raises(mera.ConfigError, match="stem must be"):
        yolo.YOLOv5(stem="patchify")


# ---- host post-processing -------------------------------------------------------------------------

def empty_maps(nc=2, hw=(8, 4, 2), fill=0.0):
    return [np.full((1, 3 * (5 + nc), h, h), fill, np.float32) for h in hw]


def test_yolo_decode_puts_a_box_where_the_map_says():
    nc = 2
    maps = empty_maps(nc)
    # scale 1 (stride 16), anchor 2 (59 x 119), cell gy=1, gx=3, class 1
    a, gy, gx = 2, 1, 3
    ch = a * (5 + nc)
    maps[1][0, ch:ch + 7, gy, gx] = [0.5, 0.75, 0.5, 0.25, 0.9, 0.1, 0.8]
    boxes, scores, classes = yolo.yolo_decode(maps, conf_threshold=0.5)
    cx, cy = (2 * 0.5 - 0.5 + gx) * 16, (2 * 0.75 - 0.5 + gy) * 16
    w, h = (2 * 0.5) ** 2 * 59, (2 * 0.25) ** 2 * 119
    np.testing.assert_allclose(boxes, [[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]], rtol=1e-6)
    np.testing.assert_allclose(scores, [0.9 * 0.8], rtol=1e-6)
    assert classes.tolist() == [1]
    # the same maps channels-last give the same boxes
    b2, s2, c2 = yolo.yolo_decode([m.transpose(0, 2, 3, 1) for m in maps], conf_threshold=0.5, layout="NHWC")
    np.testing.assert_array_equal(b2, boxes)
    # below the threshold: nothing
    assert len(yolo.yolo_decode(maps, conf_threshold=0.75)[0]) == 0


def test_yolo_decode_rejects_bad_maps():
    with pytest.raises(mera.RuntimeInputError, match="output 0 has 20 channels"):
        yolo.yolo_decode([np.zeros((1, 20, 8, 8))] + empty_maps()[1:])
    with pytest.raises(mera.RuntimeInputError, match="2 output maps for 3 strides"):
        yolo.yolo_decode(empty_maps()[:2])
    with pytest.raises(mera.RuntimeInputError, match="batch-1"):
        yolo.yolo_decode([np.zeros((2, 21, 8, 8))] + empty_maps()[1:])
    with pytest.raises(mera.RuntimeInputError, match="layout"):
        yolo.yolo_decode(empty_maps(), layout="CHWN")


def ort_nms(boxes, scores, classes, iou, nc):
    """onnxruntime's NonMaxSuppression, class by class (one score row per class)."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper
    node = helper.make_node("NonMaxSuppression", ["boxes", "scores", "max", "iou"], ["sel"])
    graph = helper.make_graph(
        [node], "nms",
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, None, 4]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, nc, None]),
         helper.make_tensor_value_info("max", TensorProto.INT64, [1]),
         helper.make_tensor_value_info("iou", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("sel", TensorProto.INT64, [None, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    # each class's row scores its own boxes; the others get -1, so they come last in ORT's greedy order
    # (they cannot suppress a real box) and are filtered out below
    per_class = np.full((1, nc, len(boxes)), -1.0, np.float32)
    per_class[0, classes, np.arange(len(boxes))] = scores
    sel = sess.run(None, {"boxes": boxes[None].astype(np.float32), "scores": per_class,
                          "max": np.array([len(boxes)], np.int64), "iou": np.array([iou], np.float32)})[0]
    return {int(i) for c, i in zip(sel[:, 1], sel[:, 2]) if classes[i] == c}


@pytest.mark.parametrize("seed", range(6))
def test_nms_matches_onnxruntime(seed):
    rng = np.random.default_rng(seed)
    k, nc = int(rng.integers(5, 120)), int(rng.integers(1, 5))
    xy = rng.uniform(0, 100, (k, 2))
    wh = rng.uniform(5, 40, (k, 2))
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    scores = rng.permutation(k).astype(np.float32) / k + 0.01  # distinct: no tie order to argue about
    classes = rng.integers(0, nc, k)
    iou = float(rng.uniform(0.2, 0.7))
    keep = yolo.nms(boxes, scores, classes, iou)
    assert set(keep.tolist()) == ort_nms(boxes, scores, classes, iou, nc)
    assert np.all(np.diff(scores[keep]) <= 0)



def test_nms_is_class_aware():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [0, 1, 10, 11], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    assert yolo.nms(boxes, scores, np.array([0, 0, 1, 1]), 0.5).tolist() == [0, 2, 3]
    assert yolo.nms(boxes, scores, np.array([0, 0, 0, 0]), 0.5).tolist() == [0, 3]
    assert yolo.nms(boxes, scores, np.array([0, 1, 2, 3]), 0.5).tolist() == [0, 1, 2, 3]


def test_nms_rejects_mismatched_arrays():
    with pytest.raises(mera.RuntimeInputError, match="boxes must be"):
        yolo.nms(np.zeros((3, 4)), np.zeros(2), np.zeros(3))


# ---- random YOLO-style graphs ------------------------------------------------------------------------

class TinyYolo(nn.Module):
    """A random small YOLO: stem, strided convs, C3s, SPPF, one upsample + concat, a sigmoid head."""

    def __init__(self, rng):
        super().__init__()
        act = str(rng.choice(["silu", "hardswish"]))
        c = [int(rng.integers(1, 5)) * 8 for _ in range(3)]
        self.stem = yolo.Focus(3, c[0], 3, act=act) if rng.random() < 0.5 else yolo.Conv(3, c[0], 6, 2, 2, act=act)
        self.down1 = yolo.Conv(c[0], c[1], 3, 2, act=act)
        self.c3a = yolo.C3(c[1], c[1], int(rng.integers(1, 3)), bool(rng.random() < 0.5), act=act)
        self.down2 = yolo.Conv(c[1], c[2], 3, 2, act=act)
        self.sppf = yolo.SPPF(c[2], c[2], int(rng.choice([3, 5])), act=act)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.cat = torch.ao.nn.quantized.FloatFunctional()
        self.c3b = yolo.C3(c[2] + c[1], c[1], 1, False, act=act)
        self.detect = yolo.Detect(int(rng.integers(1, 4)), (c[1], c[2]))
        self.quant = torch.ao.quantization.QuantStub()
        self.dequant = nn.ModuleList([torch.ao.quantization.DeQuantStub() for _ in range(2)])

    def forward(self, x):
        p = self.c3a(self.down1(self.stem(self.quant(x))))
        q = self.sppf(self.down2(p))
        ys = self.detect([self.c3b(self.cat.cat([self.up(q), p], 1)), q])
        return tuple(dq(y) for dq, y in zip(self.dequant, ys))

    def fuse_model(self):
        for m in self.modules():
            if type(m) is yolo.Conv:
                m.fuse_model()


@pytest.mark.parametrize("seed", range(6))
def test_random_yolo_graphs_are_bit_exact_in_both_layouts_and_on_the_simulator(seed):
    from mera.models import _common
    rng = np.random.default_rng(seed)
    shape = (1, 3, 8 * int(rng.integers(2, 10)), 8 * int(rng.integers(2, 10)))
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = TinyYolo(rng)
        _common._randomise_affine_and_biases(model)
    _common._set_statistics(model, _common.smooth_noise((2,) + shape[1:], gen, torch.float64))
    mm.quantize_ptq(model.eval(), [_common.smooth_noise(shape, gen) for _ in range(2)])
    x = _common.smooth_noise(shape, gen)
    traced = mm.trace(model, x)
    with torch.no_grad():
        ref = [t.numpy() for t in traced(x)]
    for layout in ("NCHW", "NHWC"):
        xl = to_layout(x, layout)
        mod, params = mera.relay.frontend.from_pytorch(traced, [("input0", xl.shape)], layout=layout)
        hw = compile_for(mod, params, "InterpreterHw")(xl)
        assert_bit_exact([from_layout(o, layout) for o in hw], ref, f"seed {seed} {shape} {layout}")
    # small buffers and tiles: upsample, concat, max pool and the sigmoid/mul chains are split in tiles
    sim = compile_for(mod, params, "Simulator", arch={"platform": 100, "act_buffer_kib": 8, "weight_buffer_kib": 4,
                                                      "acc_buffer_kib": 4}, max_tile_height=3, max_tile_width=5)
    for i, (h, s) in enumerate(zip(hw, sim(xl))):
        assert np.array_equal(h, s), f"seed {seed} {shape}: Simulator output {i}: {int((h != s).sum())} bytes differ"
    assert len(sim.partition_report().on_dna) > 0


# ---- permute of channels-last data (the SSD heads' NCHW -> NHWC flattening) ------------------------------

class PermuteNet(nn.Module):
    def __init__(self, dims, flatten):
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3, padding=1)
        self.dims, self.flatten = dims, flatten
        self.quant = torch.ao.quantization.QuantStub()
        self.dequant = torch.ao.quantization.DeQuantStub()

    def forward(self, x):
        y = self.conv(self.quant(x)).permute(*self.dims)
        if self.flatten:
            y = y.reshape(y.shape[0], -1, 4 if self.flatten == 3 else y.shape[-1])
        return self.dequant(y)

    def fuse_model(self):
        pass  # a lone conv: nothing to fuse


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_every_permutation_matches_torch(layout):
    import itertools
    rng = np.random.default_rng(0)
    x = torch.randn(2, 3, 6, 4)
    for i, dims in enumerate(itertools.permutations(range(4))):
        flatten = [0, 1, 3][i % 3]
        m = PermuteNet(dims, flatten).eval()
        with torch.no_grad():
            ref = m(x).numpy()
        xl = to_layout(x, layout)
        mod, params = mera.frontend.from_pytorch(m, [("input0", xl.shape)], layout=layout)
        out = from_layout(compile_for(mod, params, "Interpreter")(xl)[0], layout)
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5, err_msg=f"{dims} flatten {flatten} {layout}")
        if rng.random() < 0.25:  # the quantized graph through the same converter, bit-exact
            mm.quantize_ptq(m, [x])
            traced = mm.trace(m, x)
            with torch.no_grad():
                qref = traced(x).numpy()
            mod, params = mera.relay.frontend.from_pytorch(traced, [("input0", xl.shape)], layout=layout)
            qout = from_layout(compile_for(mod, params, "InterpreterHw")(xl)[0], layout)
            assert_bit_exact([qout], [qref], f"{dims} flatten {flatten} {layout} quantized")
