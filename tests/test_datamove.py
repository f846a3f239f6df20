"""Data movement on the DNA (csrc/sched/move.c): reshape, flatten,
transpose and slice as strided DMA, on the zoo models that use them.

ShuffleNetV2's channel shuffle (reshape to rank 5, transpose, reshape back),
its channel split (slices) and the NHWC <-> NCHW transposes the importer
puts around them used to run on the host. Now they are LOAD/STORE boxes, and
the whole network is one DNA segment between quantize and dequantize.

The simulated latencies are a deterministic function of the program and the
platform table. BEFORE_US are the estimates on arch 100 before this change
(branch base 3e19484, measured with the same build as below).
"""

import numpy as np
import pytest

import mera
from test_simulator import assert_same_bytes, compile_for

MOVE_OPS = {"reshape", "flatten", "transpose", "slice"}

BEFORE_US = {"resnet50": 7165.9, "mobilenet_v2": 3005.1, "shufflenet_v2_x1_0": 5362.9}


def build(name):
    from conftest import built_zoo
    z = built_zoo(name)
    x = np.ascontiguousarray(z.inputs[0].numpy().transpose(0, 2, 3, 1))
    mod, params = mera.relay.frontend.from_pytorch(z.traced, [("input0", x.shape)], layout="NHWC")
    return mod, params, x


def test_shufflenet_v2_moves_data_on_the_dna():
    mod, params, x = build("shufflenet_v2_x1_0")
    ref = compile_for(mod, params, "InterpreterHw")(x)
    sim = compile_for(mod, params, "Simulator", arch=100)
    assert_same_bytes(ref, sim(x), "shufflenet_v2_x1_0")
    ip = compile_for(mod, params, "IP", arch=100)  # the deployable runtime's emulated device
    assert_same_bytes(ref, ip(x), "shufflenet_v2_x1_0 on IP")
    rep = sim.partition_report()
    moves = [e for e in rep if e["op"] in MOVE_OPS]
    # 63 transposes, 32 reshapes, 26 slices as imported
    assert len([e for e in moves if e["op"] == "transpose"]) >= 60, str(rep)
    assert len([e for e in moves if e["op"] == "slice"]) >= 20, str(rep)
    on_host = [(e["node"], e["op"], e["reason"]) for e in moves if not e["on_dna"]]
    assert on_host == [], on_host
    for e in moves:
        assert e["reason"].startswith("DMA move ["), e
    # every concat (the channel join) is on the DNA too: only the float
    # quantize and dequantize at the ends stay on the host
    assert sorted(e["op"] for e in rep if not e["on_dna"]) == ["dequantize", "quantize"], str(rep)
    # the rank-5 shuffle transpose [1,2,C/2,H,W] -> [1,C/2,2,H,W] moves runs of H*W bytes
    shuffles = [e for e in moves if e["op"] == "transpose" and "x2x" in e["reason"].split("]")[0]]
    assert shuffles, str(rep)
    t_us = sim.timing()["total_us"]
    print(f"shufflenet_v2_x1_0 arch 100: {BEFORE_US['shufflenet_v2_x1_0']:.1f} -> {t_us:.1f} us")
    assert t_us < 0.5 * BEFORE_US["shufflenet_v2_x1_0"], t_us


@pytest.mark.parametrize("name", ["resnet50", "mobilenet_v2"])
def test_other_models_do_not_get_slower(name):
    mod, params, x = build(name)
    sim = compile_for(mod, params, "Simulator", arch=100)
    assert_same_bytes(compile_for(mod, params, "InterpreterHw")(x), sim(x), name)
    t_us = sim.timing()["total_us"]
    print(f"{name} arch 100: {BEFORE_US[name]:.1f} -> {t_us:.1f} us")
    assert t_us <= BEFORE_US[name] + 0.05, t_us


class _Focus(__import__("torch").nn.Module):
    """YOLOv5's Focus stem: the four pixel phases of each 2x2 block (slices with step 2 on H and W)
    joined on channels, then a conv; eager-PTQ quantized like the zoo."""

    def __init__(self):
        import torch
        super().__init__()
        self.quant, self.dequant = torch.ao.quantization.QuantStub(), torch.ao.quantization.DeQuantStub()
        self.cat = torch.ao.nn.quantized.FloatFunctional()
        self.conv = torch.nn.Conv2d(12, 16, 3, padding=1)

    def forward(self, x):
        x = self.quant(x)
        x = self.cat.cat([x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], 1)
        return self.dequant(self.conv(x))


def test_strided_slices_focus_bit_exact_and_on_the_dna():
    import torch
    torch.manual_seed(0)
    m = _Focus().eval()
    m.qconfig = torch.ao.quantization.get_default_qconfig("fbgemm")
    torch.ao.quantization.prepare(m, inplace=True)
    for _ in range(4):
        m(torch.randn(1, 3, 20, 22))
    torch.ao.quantization.convert(m, inplace=True)
    x = torch.randn(1, 3, 20, 22)
    with torch.no_grad():
        ref = m(x).numpy()
        traced = torch.jit.trace(m, x)
    for layout in ("NCHW", "NHWC"):
        shape = (1, 3, 20, 22) if layout == "NCHW" else (1, 20, 22, 3)
        mod, params = mera.relay.frontend.from_pytorch(traced, [("input0", shape)], layout=layout)
        assert any(n["op"] == "slice" and n["attrs"].get("step") == 2 for n in mod.nodes())
        xin = x.numpy() if layout == "NCHW" else np.ascontiguousarray(x.numpy().transpose(0, 2, 3, 1))
        hw = compile_for(mod, params, "InterpreterHw")(xin)
        out = hw[0] if layout == "NCHW" else hw[0].transpose(0, 3, 1, 2)
        assert np.array_equal(out, ref), f"{layout}: {int((out != ref).sum())} of {out.size} differ from fbgemm"
        sim = compile_for(mod, params, "Simulator", arch=100)
        assert_same_bytes(hw, sim(xin), f"focus {layout}")
    slices = [e for e in sim.partition_report() if e["op"] == "slice"]
    assert len(slices) == 8 and all(e["on_dna"] for e in slices), str(sim.partition_report())
