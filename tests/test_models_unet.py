"""mera.models.unet: the U-Net of the zoo (TASK_MODELS), quantized with the eager PTQ recipe and traced.

Quantized, it runs bit-exact on InterpreterHw against PyTorch's fbgemm model (single-threaded torch) in
both layouts, and the Simulator gives InterpreterHw's bytes; its transposed convs are imported as
quantized conv_transpose2d layers, which the DNA runs as sub-pixel conv2d phases.
"""

import functools
import warnings

import numpy as np
import pytest
import torch

import mera
import mera.models as mm

torch.backends.quantized.engine = "fbgemm"


@functools.lru_cache(maxsize=1)
def zoo():
    float_model = mm.TASK_MODELS["unet"](seed=0)
    quantized = mm.TASK_MODELS["unet"](quantize=True, seed=0)
    inputs = mm.calibration_data("unet", n=2, seed=1234)
    traced = mm.trace(quantized, inputs[0])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            y_float = torch.cat([float_model(x) for x in inputs])
            y_traced = torch.cat([traced(x) for x in inputs])
    finally:
        torch.set_num_threads(threads)
    return float_model, quantized, traced, inputs, y_float, y_traced


def to_layout(x, layout):
    a = x.numpy()
    return a if layout == "NCHW" else np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def import_quantized(layout):
    _, _, traced, inputs, _, _ = zoo()
    x = to_layout(inputs[0], layout)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fbgemm direct-path warning: the zoo's upsamplers avoid it
        return mera.relay.frontend.from_pytorch(traced, [("input0", x.shape)], layout=layout)


def test_registry_and_shapes():
    assert "unet" in mm.TASK_MODELS and "unet" not in mm.MODELS
    assert mm.input_shape("unet") == (1, 3, 128, 128)
    a, b = mm.calibration_data("unet", 2, seed=3), mm.calibration_data("unet", 1, seed=3)
    assert a[0].shape == (1, 3, 128, 128) and torch.equal(a[0], b[0])
    float_model, quantized, traced, inputs, y_float, y_traced = zoo()
    assert y_float.shape == (2, 2, 128, 128)
    kinds = {n.kind() for n in traced.inlined_graph.nodes()}
    assert {"quantized::conv_transpose2d", "quantized::cat", "aten::max_pool2d"} <= kinds
    # the quantized model tracks the float one (seeded random weights, seeded calibration)
    assert np.corrcoef(y_float.flatten(), y_traced.flatten())[0, 1] > 0.99
    assert all(m.weight().qscheme() == torch.per_tensor_affine for m in quantized.modules()
               if isinstance(m, torch.ao.nn.quantized.ConvTranspose2d))


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_quantized_unet_is_bit_exact_on_interpreter_hw(layout):
    _, _, _, inputs, _, y_traced = zoo()
    mod, params = import_quantized(layout)
    assert sum(n["op"] == "conv_transpose2d" for n in mod.nodes()) == 3
    with mera.build_config(target="InterpreterHw"):
        runner = mera.compile(mod, params)
    for i in range(2):
        out = runner(to_layout(inputs[i], layout))[0]
        ref = to_layout(y_traced[i:i + 1], layout)  # an NHWC import gives NHWC outputs
        assert out.shape == ref.shape
        assert np.abs(out - ref).max() == 0.0, f"{layout} input {i}: max abs diff {np.abs(out - ref).max()}"


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_simulator_matches_interpreter_hw(layout):
    _, _, _, inputs, _, y_traced = zoo()
    mod, params = import_quantized(layout)
    x = to_layout(inputs[0], layout)
    with mera.build_config(target="InterpreterHw"):
        hw = mera.compile(mod, params)(x)[0]
    with mera.build_config(target="Simulator", arch=100):
        sim_rt = mera.compile(mod, params)
    sim = sim_rt(x)[0]
    rep = sim_rt.partition_report()
    # the transposed convs became sub-pixel conv2d phases (passes/subpixel.c): 4 per upsampler
    assert not any(e["op"] == "conv_transpose2d" for e in rep), rep
    phases = [e for e in rep if e["op"] == "conv2d" and ".phase" in e["node"]]
    assert len(phases) == 12 and all(e["on_dna"] for e in phases), rep
    assert all(e["on_dna"] for e in rep if e["op"] in ("conv2d", "concat")), rep
    np.testing.assert_array_equal(sim, hw)
    np.testing.assert_array_equal(sim, to_layout(y_traced[:1], layout))


def test_float_unet_matches_torch_on_interpreter():
    float_model, _, _, inputs, y_float, _ = zoo()
    x = inputs[0].numpy()
    mod, params = mera.frontend.from_pytorch(float_model, [("input0", x.shape)], layout="NCHW")
    with mera.build_config(target="Interpreter"):
        out = mera.compile(mod, params)(x)[0]
    ref = y_float[:1].numpy()
    assert np.abs(out - ref).max() <= 1e-4 * np.abs(ref).max()
