"""The layout pass (csrc/passes/layout.c) on whole models: ResNet-50 and
MobileNetV2 imported as NCHW compile for the Simulator to a program that
gives InterpreterHw's bytes of the same import, runs every conv, pool and
add on the DNA, and is estimated within 5% of the NHWC import's latency.
"""

import numpy as np
import pytest
import torch

import mera

torch.backends.quantized.engine = "fbgemm"


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def compile_for(mod, params, target, **config):
    if target == "Simulator":
        config.setdefault("sim_log", False)
    with mera.build_config(target=target, **config):
        return mera.compile(mod, params)


@pytest.mark.parametrize("name", ["resnet50", "mobilenet_v2"])
def test_nchw_import_runs_on_the_dna_like_nhwc(name):
    from conftest import built_zoo  # seeded weights (PTQ recipe) and inputs, shared with test_simulator.py
    z = built_zoo(name)
    traced, xn = z.traced, z.inputs[0].numpy()
    mod, params = mera.relay.frontend.from_pytorch(traced, [("input0", (1, 3, 224, 224))], layout="NCHW")
    ref = compile_for(mod, params, "InterpreterHw")(xn)
    sim = compile_for(mod, params, "Simulator", arch=100)
    got = sim(xn)
    assert len(got) == len(ref)
    for r, g in zip(ref, got):
        assert r.dtype == g.dtype and r.shape == g.shape
        assert np.array_equal(r, g), f"{name}: {int((r != g).sum())} of {r.size} bytes differ from InterpreterHw"

    rep = sim.partition_report()
    on_host = [e for e in rep if not e["on_dna"]]
    for e in rep:
        if e["op"] in ("conv2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "add"):
            assert e["on_dna"], f"{e['node']} ({e['op']}) on the host: {e['reason']}"
    # what stays on the host: the input's quantize and transpose, the head's dequantize
    assert {e["op"] for e in on_host} <= {"quantize", "transpose", "dequantize"}, on_host
    assert sum(e["op"] == "transpose" for e in rep) == 1, [e["node"] for e in rep if e["op"] == "transpose"]

    xh = np.ascontiguousarray(xn.transpose(0, 2, 3, 1))
    mod_h, params_h = mera.relay.frontend.from_pytorch(traced, [("input0", (1, 224, 224, 3))], layout="NHWC")
    sim_h = compile_for(mod_h, params_h, "Simulator", arch=100)
    for r, g in zip(sim_h(xh), got):
        assert np.array_equal(r, g), f"{name}: the NHWC import computes other bytes"
    t_nchw, t_nhwc = sim.timing()["total_us"], sim_h.timing()["total_us"]
    print(f"{name}: NCHW import {t_nchw:.1f} us, NHWC import {t_nhwc:.1f} us, ratio {t_nchw / t_nhwc:.4f} "
          f"({len(rep) - len(on_host)} of {len(rep)} nodes on the DNA)")
    assert t_nchw <= 1.05 * t_nhwc, (t_nchw, t_nhwc)
