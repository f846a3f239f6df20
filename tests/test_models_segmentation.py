"""The segmentation models of mera.models.TASK_MODELS (LR-ASPP, DeepLabV3 on a dilated MobileNetV3-Large).

The torchvision layout (parameter counts, traced ops), the PTQ recipe, and the judge: the traced fbgemm
model's bytes on InterpreterHw in both layouts, at the zoo shape and at odd input sizes (whose bilinear
upsamples have non-integer ratios), the Simulator's bytes equal to InterpreterHw's, and the float model
on Interpreter.  Last, the quantized bilinear upsample alone, at the sizes and ratios segmentation heads
produce, against PyTorch byte for byte.
"""

import functools
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import mera
import mera.models as mm
from mera import ir
from mera.frontend._torch_numerics import probe_rounding
from mera.models._common import smooth_noise

torch.backends.quantized.engine = "fbgemm"

SEGMENTERS = ["lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large"]


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    # the numerics contract is PyTorch's single-threaded arithmetic; PTQ is faster so on a loaded machine
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@functools.lru_cache(maxsize=None)
def built(name: str) -> SimpleNamespace:
    """Float and quantized model `name`, traced at its zoo shape, with 2 test inputs and outputs."""
    float_model = mm.TASK_MODELS[name](seed=0)
    quantized = mm.TASK_MODELS[name](quantize=True, seed=0)
    inputs = mm.calibration_data(name, n=2, seed=1234)  # not the calibration batches (seed 0)
    traced = mm.trace(quantized, inputs[0])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            y_float = torch.cat([float_model(x) for x in inputs])
            y_traced = torch.cat([traced(x) for x in inputs])
    finally:
        torch.set_num_threads(threads)
    return SimpleNamespace(name=name, float_model=float_model, quantized=quantized, traced=traced, inputs=inputs,
                           y_float=y_float, y_traced=y_traced)


def to_layout(x: torch.Tensor, layout: str) -> np.ndarray:
    a = x.numpy()
    return a if layout == "NCHW" else np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def from_layout(a: np.ndarray, layout: str) -> np.ndarray:
    return a if layout == "NCHW" else np.ascontiguousarray(a.transpose(0, 3, 1, 2))


def compile_traced(traced, shape, layout, target="InterpreterHw", **config):
    mod, params = mera.relay.frontend.from_pytorch(traced, [("input0", shape)], layout=layout)
    if target == "Simulator":
        config.setdefault("sim_log", False)
    with mera.build_config(target=target, **config):
        return mera.compile(mod, params)


# -- the models ------------------------------------------------------------------------------------------

def test_registry_shapes_and_calibration_data():
    assert set(SEGMENTERS) <= set(mm.TASK_MODELS)
    assert not set(mm.TASK_MODELS) & set(mm.MODELS)
    for name in SEGMENTERS:
        assert mm.input_shape(name) == (1, 3, 128, 128)
        a, b = mm.calibration_data(name, n=2, seed=3)
        assert a.shape == b.shape == (1, 3, 128, 128) and not torch.equal(a, b)
        assert torch.equal(a, mm.calibration_data(name, n=1, seed=3)[0])


@pytest.mark.parametrize("name, n_params", [
    # torchvision's counts: LR-ASPP 3,221,538; DeepLabV3 11,029,328 with the auxiliary FCN head on the
    # stride-8 features (3,851 parameters), which torchvision's factory adds only for aux_loss=True.
    ("lraspp_mobilenet_v3_large", 3_221_538),
    ("deeplabv3_mobilenet_v3_large", 11_029_328 - 3_851),
])
def test_torchvision_layout(name, n_params):
    model = mm.TASK_MODELS[name](seed=0)
    assert mm.count_parameters(model) == n_params
    # the dilated backbone: stride 16 at the end, dilation 2 in the last stage's depthwise convs
    dw = [m for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert [m.dilation for m in dw[-3:]] == [(2, 2)] * 3 and all(m.stride == (1, 1) for m in dw[-3:])
    with torch.no_grad():
        assert model.backbone(torch.zeros(1, 3, 128, 128)).shape == (1, 960, 8, 8)


def test_seeded_and_any_input_size():
    a = mm.lraspp_mobilenet_v3_large(seed=5, num_classes=4)
    b = mm.lraspp_mobilenet_v3_large(seed=5, num_classes=4)
    c = mm.lraspp_mobilenet_v3_large(seed=6, num_classes=4)
    x = smooth_noise((1, 3, 70, 90), torch.Generator().manual_seed(0))
    with torch.no_grad():
        ya, yb, yc = a(x), b(x), c(x)
    assert ya.shape == (1, 4, 70, 90)
    assert torch.equal(ya, yb) and not torch.equal(ya, yc)


@pytest.mark.parametrize("name", SEGMENTERS)
def test_quantized_model_and_traced_ops(name):
    z = built(name)
    assert z.y_traced.shape == (2, 21, 128, 128)
    ops = {n.kind() for n in z.traced.inlined_graph.nodes()}
    assert {"aten::upsample_bilinear2d", "quantized::conv2d", "quantized::mul", "quantized::add"} <= ops
    assert ("aten::sigmoid" in ops) == (name == "lraspp_mobilenet_v3_large")  # LR-ASPP's gate
    assert ("quantized::cat" in ops) == (name == "deeplabv3_mobilenet_v3_large")  # the ASPP branches
    assert not any(isinstance(m, (torch.nn.Conv2d, torch.nn.BatchNorm2d)) for m in z.quantized.modules())
    with torch.no_grad():
        assert torch.equal(z.quantized(z.inputs[1]), z.y_traced[1:])
    # PTQ keeps the logits close to the float model's and most pixels' classes
    yq, yf = z.y_traced, z.y_float
    assert F.cosine_similarity(yq.flatten(), yf.flatten(), dim=0) > 0.95
    assert (yq.argmax(1) == yf.argmax(1)).float().mean() > 0.7


# -- mera against PyTorch ----------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("name", SEGMENTERS)
def test_quantized_segmenter_is_bit_exact_on_interpreter_hw(name, layout):
    z = built(name)
    x = to_layout(z.inputs[0], layout)
    runner = compile_traced(z.traced, x.shape, layout)
    out = from_layout(runner(x)[0], layout)
    ref = z.y_traced[:1].numpy()
    assert out.shape == ref.shape
    assert np.abs(out - ref).max() == 0.0, f"{name} {layout}: {int((out != ref).sum())} of {ref.size} differ"
    np.testing.assert_array_equal(from_layout(runner(to_layout(z.inputs[1], layout))[0], layout),
                                  z.y_traced[1:].numpy())


@functools.lru_cache(maxsize=None)
def traced_at(name, shape):
    x = smooth_noise(shape, torch.Generator().manual_seed(11))
    traced = mm.trace(built(name).quantized, x)
    with torch.no_grad():
        return traced, x, traced(x).numpy()


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("name, shape", [
    # stride-8 / stride-16 maps 13x15 / 7x8, upsampled 7x8 -> 13x15 -> 100x116
    ("lraspp_mobilenet_v3_large", (1, 3, 100, 116)),
    # 13x10 / 7x5 -> 97x75; ASPP's pool branch 1x1 -> 7x5
    ("lraspp_mobilenet_v3_large", (1, 3, 97, 75)),
    ("deeplabv3_mobilenet_v3_large", (1, 3, 97, 75)),
])
def test_odd_input_sizes_are_bit_exact(name, shape, layout):
    """Fully convolutional: traced at another size, every bilinear upsample gets a non-integer ratio."""
    traced, x, ref = traced_at(name, shape)
    assert ref.shape == (1, 21) + shape[2:]
    xi = to_layout(x, layout)
    out = from_layout(compile_traced(traced, xi.shape, layout)(xi)[0], layout)
    np.testing.assert_array_equal(out, ref, err_msg=f"{name} {shape} {layout}")


def test_thread_count_never_changes_a_byte():
    """InterpreterHw's worker pool splits the upsamples, the gate's mul and the skip add too."""
    z = built("lraspp_mobilenet_v3_large")
    x = to_layout(z.inputs[0], "NHWC")
    for threads in (1, 2, 7):
        out = compile_traced(z.traced, x.shape, "NHWC", num_threads=threads)(x)[0]
        np.testing.assert_array_equal(from_layout(out, "NHWC"), z.y_traced[:1].numpy(), err_msg=f"{threads} threads")


@pytest.mark.parametrize("layout, arch", [("NHWC", 100), ("NCHW", 200)])
@pytest.mark.parametrize("name", SEGMENTERS)
def test_simulator_matches_interpreter_hw(name, layout, arch):
    z = built(name)
    x = to_layout(z.inputs[0], layout)
    ref = compile_traced(z.traced, x.shape, layout)(x)
    sim = compile_traced(z.traced, x.shape, layout, "Simulator", arch=arch)
    got = sim(x)
    assert len(got) == len(ref) == 1
    assert got[0].dtype == ref[0].dtype and got[0].shape == ref[0].shape
    assert np.array_equal(got[0], ref[0]), f"{name}: {int((got[0] != ref[0]).sum())} bytes differ from InterpreterHw"
    np.testing.assert_array_equal(from_layout(got[0], layout), z.y_traced[:1].numpy())
    rep = sim.partition_report()
    assert len(rep.on_dna) > 0, str(rep)
    assert sim.timing()["total_us"] > 0 and 0 < sim.layer_report().mac_utilization <= 1


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_deeplabv3_aspp_runs_on_the_dna(layout):
    """The ASPP's 3x3 convs with dilation 12, 24, 36 on the 8x8 map read data only through their centre tap
    (passes/trim_taps.c): on the Simulator they are 1x1 convs on the DNA, every conv is, and the bytes are
    fbgemm's."""
    z = built("deeplabv3_mobilenet_v3_large")
    x = to_layout(z.inputs[0], layout)
    sim = compile_traced(z.traced, x.shape, layout, "Simulator", arch=100)
    np.testing.assert_array_equal(from_layout(sim(x)[0], layout), z.y_traced[:1].numpy())
    rep = sim.partition_report()
    aspp = [e for e in rep if e["node"] in ("classifier.0.convs.1.0", "classifier.0.convs.2.0",
                                             "classifier.0.convs.3.0")]
    assert len(aspp) == 3 and all(e["on_dna"] and e["op"] == "conv2d" for e in aspp), aspp
    assert all(e["on_dna"] for e in rep if e["op"] == "conv2d"), [e for e in rep if not e["on_dna"]]
    macs = {e["node"]: e["macs"] for e in sim.timing()["layers"]}
    assert macs["classifier.0.convs.1.0"] == 8 * 8 * 960 * 256  # one tap


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("name", SEGMENTERS)
def test_float_segmenter_matches_torch_on_interpreter(name, layout):
    z = built(name)
    x = to_layout(z.inputs[0], layout)
    mod, params = mera.frontend.from_pytorch(z.float_model, [("input0", x.shape)], layout=layout)
    with mera.build_config(target="Interpreter"):
        out = from_layout(mera.compile(mod, params)(x)[0], layout)
    ref = z.y_float[:1].numpy()
    assert np.abs(out - ref).max() <= 1e-4 * np.abs(ref).max()


# -- the quantized bilinear upsample at segmentation ratios ------------------------------------------------

def quantized_tensor(q: np.ndarray, scale: float, zp: int, channels_last: bool) -> torch.Tensor:
    """A PyTorch quantized tensor with the bytes of q (logical NCHW), channels-last strided if asked.

    Built with explicit strides: ``.contiguous(memory_format=channels_last)`` leaves a 1x1 tensor's NCHW
    strides alone, while a quantized conv's 1x1 output really has channels-last strides."""
    n, c, h, w = q.shape
    strides = (h * w * c, 1, w * c, c) if channels_last else (c * h * w, h * w, w, 1)
    data = torch.from_numpy(np.ascontiguousarray(q))
    v = torch.empty_strided(q.shape, strides, dtype=data.dtype)
    v.copy_(data)
    t = torch._make_per_tensor_quantized_tensor(v, scale, zp)
    assert t.stride() == strides
    return t


def test_bilinear_upsample_at_segmentation_ratios_matches_pytorch():
    """Feature maps up to 32x32 to outputs of up to ~260 pixels: integer factors (2..16, the heads'
    x8 and x16, as sizes and as scale factors) and arbitrary sizes, some with align_corners, 1x1
    sources (the ASPP pool branch), channel counts on both sides of the 8-lane blocks of PyTorch's
    channels-last kernel, NCHW and NHWC data, both memory formats.

    Not drawn: a 1x1 source with C > 1 held NCHW-strided in PyTorch.  is_contiguous(ChannelsLast) is
    true for it, so PyTorch runs its channels-last kernel, but allocates the output in the input's
    suggested (contiguous) format and so writes NHWC order into an NCHW tensor: channels and pixels
    scrambled (nearest too), a PyTorch bug that mera does not reproduce (docs/numerics.md, section
    9).  Quantized convs output channels-last tensors, so a 1x1 map a conv produced (DeepLabV3's pool
    branch) is exact.
    """
    rng = np.random.default_rng(20261203)
    rounding = probe_rounding()
    cases = bad = 0
    msgs = []
    for i in range(160):
        dt = "uint8" if rng.random() < 0.7 else "int8"
        nhwc, torch_cl = bool(rng.random() < 0.5), bool(rng.random() < 0.5)
        h, w = (1, 1) if i % 5 == 0 else (int(rng.integers(1, 33)), int(rng.integers(1, 33)))
        c = int(rng.choice([1, 3, 8, 16, 21, 40, 128]))
        if h == w == 1 and c > 1:
            torch_cl = True
        attrs = {"align_corners": int(rng.random() < 0.2)}
        r = rng.random()
        if r < 0.35:  # the heads' x8, x16: as an output size ...
            f = int(rng.choice([2, 4, 8, 16]))
            attrs["size"] = [h * f, w * f]
        elif r < 0.55:  # ... or as F.interpolate's scale_factor
            attrs["scales"] = [float(rng.choice([2.0, 4.0, 8.0, 16.0, 2.5])) for _ in range(2)]
        else:
            attrs["size"] = [int(rng.integers(1, 260)), int(rng.integers(1, 260))]
        lo, hi = (0, 256) if dt == "uint8" else (-128, 128)
        q = rng.integers(lo, hi, size=(1, c, h, w)).astype(dt)
        s = float(rng.choice([0.05, 0.1, 0.02])) if rng.random() < 0.5 else float(np.exp(rng.uniform(-5, -1)))
        z = int(rng.integers(lo, hi))
        ref = F.interpolate(quantized_tensor(q, s, z, torch_cl), size=attrs.get("size"),
                            scale_factor=attrs.get("scales"), mode="bilinear",
                            align_corners=bool(attrs["align_corners"])).int_repr().numpy()
        lay = "NHWC" if nhwc else "NCHW"
        b = ir.Builder("t", rounding=rounding)
        x = b.input("x0", (to_layout(torch.from_numpy(q), lay)).shape, dt, qparams=(s, z), layout=lay)
        mod = b.finish(b.upsample(x, method="bilinear", layout=lay, **attrs,
                                  torch_memory_format="channels_last" if torch_cl else "contiguous"))
        with mera.build_config(target="InterpreterHw"):
            got = from_layout(mera.compile(mod, {})(to_layout(torch.from_numpy(q), lay))[0], lay)
        cases += 1
        if ref.shape != got.shape or not np.array_equal(ref, got):
            bad += 1
            msgs.append(f"{(c, h, w)} {attrs} {dt} {lay} cl={torch_cl}: "
                        + (f"{int((ref != got).sum())} of {ref.size}" if ref.shape == got.shape else f"{got.shape}"))
    assert cases == 160
    assert not bad, f"{bad} of {cases} differ from PyTorch: " + "; ".join(msgs[:5])


@pytest.mark.parametrize("name", SEGMENTERS)
def test_float_segmenter_through_onnx_matches_onnxruntime(name, tmp_path):
    """The float model exported to ONNX (opset 17; the upsamples become Resize with sizes computed by
    Shape/Gather/Concat chains) on mera's Interpreter in both layouts, against onnxruntime."""
    import onnxruntime as ort

    z = built(name)
    x = z.inputs[0]
    path = str(tmp_path / f"{name}.onnx")
    with torch.no_grad():
        torch.onnx.export(z.float_model, (x,), path, input_names=["input"], opset_version=17, dynamo=False)
    ref = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})[0]
    for layout in ("NCHW", "NHWC"):
        xi = to_layout(x, layout)
        mod, params = mera.frontend.from_onnx(path, {"input": xi.shape}, layout=layout)
        with mera.build_config(target="Interpreter"):
            out = from_layout(mera.compile(mod, params)(xi)[0], layout)
        assert out.shape == ref.shape
        assert np.abs(out - ref).max() <= 1e-4 * np.abs(ref).max(), layout
