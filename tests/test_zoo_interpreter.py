"""Every zoo model through the PyTorch frontend: quantized on InterpreterHw is
bit-identical to PyTorch's fbgemm model, in both layouts; float on Interpreter
matches torch within 1e-4 relative."""

import numpy as np
import pytest
import torch
from conftest import built_zoo

import mera
import mera.models as mm

torch.backends.quantized.engine = "fbgemm"
NAMES = list(mm.MODELS)


def to_layout(x: torch.Tensor, layout: str) -> np.ndarray:
    a = x.numpy()
    return a if layout == "NCHW" else np.ascontiguousarray(a.transpose(0, 2, 3, 1))


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("name", NAMES)
def test_quantized_zoo_is_bit_exact_on_interpreter_hw(name, layout):
    z = built_zoo(name)
    x = to_layout(z.inputs[0], layout)
    mod, params = mera.relay.frontend.from_pytorch(z.traced, [("input0", x.shape)], layout=layout)
    with mera.build_config(target="InterpreterHw"):
        runner = mera.compile(mod, params)
    ref = z.y_traced[:1].numpy()
    out = runner.set_input(x).run().get_output(0)
    assert out.shape == ref.shape
    assert np.abs(out - ref).max() == 0.0, f"{name} {layout}: max abs diff {np.abs(out - ref).max()}"
    assert np.mean(out == ref) == 1.0
    # a second input through the same compiled model
    out2 = runner(to_layout(z.inputs[1], layout))[0]
    np.testing.assert_array_equal(out2, z.y_traced[1:2].numpy())


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("name", NAMES)
def test_float_zoo_matches_torch_on_interpreter(name, layout):
    z = built_zoo(name)
    x = to_layout(z.inputs[0], layout)
    mod, params = mera.frontend.from_pytorch(z.float_model, [("input0", x.shape)], layout=layout)
    with mera.build_config(target="Interpreter"):
        out = mera.compile(mod, params).set_input(x).run().get_output(0)
    ref = z.y_float[:1].numpy()
    assert np.abs(out - ref).max() <= 1e-4 * np.abs(ref).max()


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_large"])
def test_thread_count_never_changes_a_byte(name):
    """InterpreterHw splits conv, elementwise and pooling work across its worker pool: every
    thread count gives PyTorch's bytes (ResNet: adds, max pool; MobileNetV3: hardswish,
    hardsigmoid, the squeeze-excite muls)."""
    z = built_zoo(name)
    x = to_layout(z.inputs[0], "NHWC")
    mod, params = mera.relay.frontend.from_pytorch(z.traced, [("input0", x.shape)], layout="NHWC")
    for threads in (1, 2, 7):
        with mera.build_config(target="InterpreterHw", num_threads=threads):
            out = mera.compile(mod, params)(x)[0]
        np.testing.assert_array_equal(out, z.y_traced[:1].numpy(), err_msg=f"{name}, {threads} threads")
