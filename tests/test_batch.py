"""Batch > 1 on InterpreterHw and the Simulator, and Runner.evaluate (many inputs in one call)."""

import numpy as np
import pytest
import torch
from conftest import built_zoo

import mera
import mera.models as mm
from mera import ir
from mera.errors import RuntimeInputError

torch.backends.quantized.engine = "fbgemm"


@pytest.mark.parametrize("target", ["InterpreterHw", "Simulator"])
def test_batch_of_three_is_pytorchs_bytes(target):
    z = built_zoo("mobilenet_v2")
    xb = torch.cat(z.inputs[:3])
    traced = mm.trace(z.quantized, xb)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            ref = traced(xb).numpy()
    finally:
        torch.set_num_threads(threads)
    x = np.ascontiguousarray(xb.numpy().transpose(0, 2, 3, 1))
    mod, params = mera.relay.frontend.from_pytorch(traced, [("input0", x.shape)], layout="NHWC")
    with mera.build_config(target=target, sim_log=False):
        out = mera.compile(mod, params)(x)[0]
    assert out.shape == (3, 1000)
    np.testing.assert_array_equal(out, ref)


def small_model(batch):
    rng = np.random.default_rng(5)
    b = ir.Builder("small")
    x = b.input("x", (batch, 6, 6, 8), "uint8", qparams=(0.05, 10), layout="NHWC")
    w = b.const(rng.integers(-50, 50, (16, 8, 3, 3)).astype(np.int8), qparams=(0.01, 0))
    y = b.conv2d(x, w, rng.standard_normal(16).astype(np.float32), padding=[1, 1, 1, 1], layout="NHWC",
                 out_scale=0.1, out_zero_point=3, activation="relu")
    y = b.add(y, y, out_scale=0.2, out_zero_point=0)
    with mera.build_config(target="InterpreterHw"):
        return mera.compile(b.finish(y), {})


def test_evaluate_runs_every_sample_in_order():
    runner = small_model(2)
    rng = np.random.default_rng(6)
    data = rng.integers(0, 256, (5, 2, 6, 6, 8)).astype(np.uint8)
    want = [runner(d)[0] for d in data]
    for samples in (list(data), data):  # a list of samples, an array of them
        got = runner.evaluate(samples)
        assert len(got) == 5 and all(np.array_equal(g[0], w) for g, w in zip(got, want))
    flat = data.reshape(10, 6, 6, 8)  # a stack of images, cut into batches of 2
    got = runner.evaluate(flat)
    assert all(np.array_equal(g[0], w) for g, w in zip(got, want))
    m = runner.evaluate_metrics
    assert m["samples"] == 5 and m["images"] == 10 and m["seconds"] > 0
    assert m["images_per_second"] == pytest.approx(10 / m["seconds"])
    got = runner.evaluate([{"x": data[0]}, [data[1]]])  # dicts and lists per sample
    assert np.array_equal(got[0][0], want[0]) and np.array_equal(got[1][0], want[1])


def test_evaluate_names_a_wrong_shape():
    runner = small_model(2)
    with pytest.raises(RuntimeInputError, match=r"evaluate: input 'x'.*got \(3, 6, 6, 8\)"):
        runner.evaluate(np.zeros((3, 6, 6, 8), np.uint8))  # 3 images do not make batches of 2
    with pytest.raises(RuntimeInputError, match="input 'x'"):
        runner.evaluate([np.zeros((1, 6, 6, 8), np.uint8)])
    with pytest.raises(RuntimeInputError, match=r"evaluate: input 'x'.*got \(\)"):
        runner.evaluate(None)
