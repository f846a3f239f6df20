"""mera.compile and the Runner: inputs, outputs, DLPack, threads, run-time errors."""

import threading

import numpy as np
import pytest
import torch

import mera
from mera import ir


def conv_model(seed=0):
    rng = np.random.default_rng(seed)
    b = ir.Builder("conv")
    x = b.input("input0", (1, 3, 16, 16), layout="NCHW")
    w = b.param("w", rng.standard_normal((8, 3, 3, 3), dtype=np.float32))
    bias = b.param("b", rng.standard_normal(8, dtype=np.float32))
    y = b.conv2d(x, w, bias, padding=[1, 1, 1, 1], activation="relu")
    return b.finish(y), b.params


def quant_model(seed=0):
    rng = np.random.default_rng(seed)
    b = ir.Builder("qconv")
    x = b.input("input0", (1, 16, 16, 4), "uint8", qparams=(0.02, 120), layout="NHWC")
    w = b.const(rng.integers(-127, 128, (8, 4, 3, 3), dtype=np.int8), name="w",
                qparams=(rng.uniform(0.002, 0.02, 8), np.zeros(8, np.int32), 0))
    y = b.conv2d(x, w, rng.standard_normal(8, dtype=np.float32), padding=[1, 1, 1, 1], layout="NHWC",
                 out_scale=0.05, out_zero_point=10, activation="relu")
    return b.finish(y), {}


def torch_conv(mod_params, x):
    w = torch.from_numpy(mod_params["w"])
    b = torch.from_numpy(mod_params["b"])
    return torch.relu(torch.nn.functional.conv2d(torch.from_numpy(x), w, b, padding=1)).numpy()


def test_float_conv_matches_torch():
    mod, params = conv_model()
    x = np.random.default_rng(1).standard_normal((1, 3, 16, 16), dtype=np.float32)
    with mera.build_config(target="Interpreter"):
        runner = mera.compile(mod, params)
    out = runner.set_input(x).run().get_output(0)
    ref = torch_conv(params, x)
    assert out.shape == ref.shape and out.dtype == np.float32
    assert np.abs(out - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max())
    assert runner.get_num_outputs() == 1 and runner.input_names == ["input0"]
    np.testing.assert_array_equal(runner(x)[0], out)
    np.testing.assert_array_equal(runner.set_input({"input0": x}).run().get_outputs()[0], out)


def test_dlpack_in_and_out():
    mod, params = conv_model()
    xt = torch.randn(1, 3, 16, 16)
    with mera.build_config(target="Interpreter"):
        runner = mera.compile(mod, params)
    out = runner.set_input(xt).run().get_output(0)
    ref = torch_conv(params, xt.numpy())
    assert np.abs(out - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max())
    back = torch.from_dlpack(out)
    assert back.data_ptr() == out.ctypes.data  # no copy on the way out
    # params may be torch tensors too
    with mera.build_config(target="Interpreter"):
        runner2 = mera.compile(mod, {k: torch.from_numpy(v) for k, v in params.items()})
    np.testing.assert_array_equal(runner2(xt)[0], out)


def test_interpreter_targets_agree_on_a_quantized_conv():
    mod, params = quant_model()
    x = np.random.default_rng(2).integers(0, 256, (1, 16, 16, 4), dtype=np.uint8)
    with mera.build_config(target="InterpreterHw"):
        hw = mera.compile(mod, params)(x)[0]
    with mera.build_config(target="Interpreter"):
        fl = mera.compile(mod, params)(x)[0]
    assert hw.dtype == np.uint8 and hw.shape == (1, 16, 16, 8)
    # float emulation differs from integer arithmetic by at most one step
    assert np.abs(hw.astype(int) - fl.astype(int)).max() <= 1


def test_node_times_of_a_compiled_interpreter():
    """Compiled.node_times (benchmarks/interp.py --per-layer): one time per node of the
    compiled graph, the nodes of its IR text; a target that runs a DNA program has none."""
    import re
    mod, params = quant_model()
    x = np.random.default_rng(3).integers(0, 256, (1, 16, 16, 4), dtype=np.uint8)
    with mera.build_config(target="InterpreterHw"):
        runner = mera.compile(mod, params)
    core = runner._core
    n_nodes = sum(1 for line in core.graph_text().splitlines() if re.match(r"^\s*%\S+ = \w+\(", line))
    times = core.node_times([x], 3)
    assert len(times) == n_nodes >= 1
    assert all(0.0 <= t < 10.0 for t in times)
    with pytest.raises(mera.errors.MeraError, match="repeat must be at least 1"):
        core.node_times([x], 0)
    with pytest.raises(mera.errors.MeraError):
        core.node_times([x[:, :8]], 1)  # the wrong input shape, named as for a run
    with mera.build_config(target="Simulator"):
        sim = mera.compile(mod, params)
    with pytest.raises(mera.errors.MeraError, match="does not run the graph node by node"):
        sim._core.node_times([x], 1)


def test_threads_get_identical_results():
    mod, params = quant_model()
    rng = np.random.default_rng(3)
    xs = [rng.integers(0, 256, (1, 16, 16, 4), dtype=np.uint8) for _ in range(4)]
    with mera.build_config(target="InterpreterHw"):
        runner = mera.compile(mod, params)
    expected = [runner(x)[0] for x in xs]
    results, errors = {}, []

    def work(i):
        try:
            for k in range(20):
                x = xs[(i + k) % 4]
                out = runner.set_input(x).run().get_output(0)  # per-thread chained state
                results.setdefault(i, []).append(((i + k) % 4, out))
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for outs in results.values():
        for j, out in outs:
            np.testing.assert_array_equal(out, expected[j])


def test_run_time_errors_name_the_input():
    mod, params = conv_model()
    with mera.build_config(target="Interpreter"):
        runner = mera.compile(mod, params)
    x = np.zeros((1, 3, 16, 16), np.float32)
    with pytest.raises(mera.RuntimeInputError, match=r"input 'input0': expected \(1, 3, 16, 16\) float32, "
                                                     r"got \(1, 16, 16, 3\) float32"):
        runner(np.zeros((1, 16, 16, 3), np.float32))
    with pytest.raises(mera.RuntimeInputError, match=r"input 'input0': expected .* float32, got .* float64"):
        runner(np.zeros((1, 3, 16, 16)))
    with pytest.raises(mera.RuntimeInputError, match="input 'input0': the array is not C-contiguous"):
        runner(np.zeros((1, 3, 16, 32), np.float32)[..., ::2])
    with pytest.raises(mera.RuntimeInputError, match=r"takes 1 input\(s\) \(input0\), got 2"):
        runner.set_input([x, x])
    with pytest.raises(mera.RuntimeInputError, match="unknown input name"):
        runner.set_input({"image": x})
    with pytest.raises(mera.RuntimeInputError, match="output index 3 is out of range"):
        runner.set_input(x).run().get_output(3)
    fresh = mera.compile(mod, params, target="Interpreter")
    with pytest.raises(mera.RuntimeInputError, match="run\\(\\) before set_input"):
        fresh.run()
    with pytest.raises(mera.RuntimeInputError, match="param 'b' is missing from params"):
        mera.compile(mod, {"w": params["w"]}, target="Interpreter")
    with pytest.raises(mera.RuntimeInputError, match=r"param 'w': expected \(8, 3, 3, 3\) float32, got \(3, 3, 3\) float32"):
        mera.compile(mod, {"w": params["w"][0], "b": params["b"]}, target="Interpreter")
    with pytest.raises(mera.ConfigError, match="needs a target"):
        mera.compile(mod, params)
