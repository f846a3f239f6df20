"""The Simulator target: the scheduled DNA program, run by the DNA machine,
gives InterpreterHw's bytes exactly, whatever the tiling, the buffers and
the scheduler mode; layers that do not fit are split, layers the DNA cannot
run go to the host with a reason; the reports, the trace and MERA's latency
line are there. Nothing here asserts on time.
"""

import json
import os

import numpy as np
import pytest
import torch

import mera
from mera import ir

torch.backends.quantized.engine = "fbgemm"


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    # Building the zoo (PTQ calibration) is many times slower with several
    # threads on a loaded machine; the numerics contract is single-threaded.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

# Buffers small enough that even these small layers need many tiles (KiB).
TINY = {"act_buffer_kib": 8, "weight_buffer_kib": 4, "acc_buffer_kib": 4}

# (build_config kwargs) the random graphs run under; each forces a
# different tiling of the same layers.
CONFIGS = [
    dict(arch=100),
    dict(arch={"platform": 100, **TINY}, max_tile_height=3, max_tile_width=3),
    dict(arch={"platform": 200, "act_buffer_kib": 16, "weight_buffer_kib": 8}, max_tile_height=5, max_tile_width=4),
    dict(arch={"platform": "DNAA600L0002", **TINY}, max_tile_height=2, max_tile_width=7,
         scheduler_config={"mode": "Slow"}, compiler_workers=2),
]


def compile_for(mod, params, target, **config):
    if target == "Simulator":
        config.setdefault("sim_log", False)
    with mera.build_config(target=target, **config):
        return mera.compile(mod, params)


def assert_same_bytes(ref, got, what):
    assert len(ref) == len(got), what
    for i, (r, g) in enumerate(zip(ref, got)):
        assert r.shape == g.shape and r.dtype == g.dtype, f"{what}: output {i} is {g.shape} {g.dtype}, " \
                                                          f"expected {r.shape} {r.dtype}"
        if not np.array_equal(r, g):
            n = int((r != g).sum())
            raise AssertionError(f"{what}: output {i}: {n} of {r.size} bytes differ from InterpreterHw")


# ---- random quantized NHWC graphs -------------------------------------------------

class GraphGen:
    """Random quantized NHWC graphs: a chain of layers with residual, SE-style
    and concat branches, over images of odd sizes."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.b = ir.Builder(f"rand{seed}")
        self.ops = []

    def qout(self, lo=0.02, hi=0.2):
        return dict(out_scale=float(self.rng.uniform(lo, hi)), out_zero_point=int(self.rng.integers(0, 256)))

    @staticmethod
    def q(v):
        s, z = v.qparams[:2]
        return float(np.asarray(s).reshape(-1)[0]), int(np.asarray(z).reshape(-1)[0])

    def conv(self, x, o=None, k=None, stride=None, groups=None, same=False, pad=None, dil=None, relu=None):
        rng = self.rng
        _, h, w, c = x.shape
        k = k or int(rng.choice([1, 3, 5, 7]))
        stride = stride or int(rng.integers(1, 3))
        dil = dil or (int(rng.integers(1, 3)) if k > 1 and rng.random() < 0.25 else 1)
        if pad is None:
            pad = [(k - 1) * dil // 2] * 4 if same else [int(rng.integers(0, k // 2 + 1)) for _ in range(4)]
        ext = (k - 1) * dil + 1
        while h + pad[0] + pad[2] < ext or w + pad[1] + pad[3] < ext:  # the window must fit
            k, dil, ext = max(1, k - 2), 1, max(1, k - 2)
        groups = groups or 1
        o = o or int(rng.choice([4, 8, 12, 16, 24]))
        if o % groups:
            o = groups * max(1, o // groups)
        cg = c // groups
        wq = rng.integers(-127, 128, (o, cg, k, k), dtype=np.int8)
        wsc = rng.uniform(0.002, 0.02, o)
        sx, _ = self.q(x)
        acc_std = 70.0 * 73.0 * np.sqrt(cg * k * k)
        so = float(sx * wsc.mean() * acc_std / float(rng.uniform(20, 60)))
        wv = self.b.const(wq, qparams=(wsc, np.zeros(o, np.int32), 0))
        bias = (rng.standard_normal(o) * so * 20).astype(np.float32) if rng.random() < 0.8 else None
        relu = bool(rng.random() < 0.4) if relu is None else relu
        self.ops.append(f"conv{k}x{k}/s{stride}/d{dil}/g{groups} {c}->{o}")
        return self.b.conv2d(x, wv, bias, strides=[stride, stride], padding=pad, dilation=[dil, dil], groups=groups,
                             layout="NHWC", activation="relu" if relu else "none", out_scale=so,
                             out_zero_point=int(rng.integers(0, 40)) if relu else int(rng.integers(100, 156)))

    def depthwise(self, x, same=True):
        c = x.shape[3]
        k = int(self.rng.choice([3, 5, 7]))
        return self.conv(x, o=c, k=k, groups=c, same=same, stride=int(self.rng.integers(1, 3)), dil=1)

    KINDS = ["conv", "depthwise", "grouped", "residual", "se", "concat", "unary", "maxpool", "avgpool", "adaptive",
             "upsample", "dense_nhwc"]

    def step(self, x, kind=None, unary=None):
        """One random layer (or block) applied to x (NHWC 4-D)."""
        rng, b = self.rng, self.b
        _, h, w, c = x.shape
        kind = kind or str(rng.choice(["conv"] + self.KINDS))
        if kind == "conv":
            return self.conv(x)
        if kind == "depthwise":
            if c % 8:  # channel count for fbgemm's depthwise kernel (int16 pair saturation)
                x = self.conv(x, o=int(rng.choice([8, 16])), k=1, stride=1)
            return self.depthwise(x, same=bool(rng.random() < 0.8))
        if kind == "grouped":
            g = int(rng.choice([2, 4]))
            if c % g:
                x = self.conv(x, o=8 * g // 2, k=1, stride=1)
            return self.conv(x, o=g * int(rng.integers(1, 5)), groups=g, k=int(rng.choice([1, 3])))
        if kind == "residual":
            y = self.conv(x, o=c, k=3, stride=1, same=True, dil=1)
            self.ops.append("add")
            return b.add(x, y, activation="relu" if rng.random() < 0.5 else "none", **self.qout())
        if kind == "se":
            s = b.adaptive_avg_pool2d(x, output_size=[1, 1], layout="NHWC", **self.qout())
            s = b.sigmoid(s, out_scale=1 / 256, out_zero_point=0)
            self.ops.append("se mul")
            return b.mul(x, s, **self.qout())
        if kind == "concat":
            y = self.conv(x, k=1, stride=1)
            self.ops.append("concat")
            return b.concat(x, y, axis=3, **self.qout())
        if kind == "unary":
            op = unary or str(rng.choice(["relu", "clip", "hardswish", "sigmoid"]))
            self.ops.append(op)
            if op == "relu":
                return b.relu(x)
            if op == "clip":
                s, z = self.q(x)
                return b.clip(x, a_min=float(s * rng.integers(-60, 0)), a_max=float(s * rng.integers(1, 90)))
            if op == "hardswish":
                return b.hardswish(x, **self.qout())
            return b.sigmoid(x, out_scale=1 / 256, out_zero_point=0)
        if kind in ("maxpool", "avgpool"):
            k = [int(rng.integers(2, 4)), int(rng.integers(2, 4))]
            k = [min(k[0], h), min(k[1], w)]
            st = [int(rng.integers(1, 3)), int(rng.integers(1, 3))]
            pd = [int(rng.integers(0, k[0] // 2 + 1)), int(rng.integers(0, k[1] // 2 + 1))]
            attrs = dict(kernel=k, strides=st, padding=pd + pd, ceil_mode=int(rng.random() < 0.3), layout="NHWC")
            self.ops.append(f"{kind} {attrs}")
            if kind == "maxpool":
                return b.max_pool2d(x, **attrs)
            return b.avg_pool2d(x, count_include_pad=int(rng.random() < 0.5), **attrs, **self.qout())
        if kind == "adaptive":
            os_ = [int(rng.integers(1, h + 1)), int(rng.integers(1, w + 1))]
            self.ops.append(f"adaptive {os_}")
            return b.adaptive_avg_pool2d(x, output_size=os_, layout="NHWC", **self.qout())
        if kind == "upsample":
            method = str(rng.choice(["nearest", "bilinear"]))
            self.ops.append(f"upsample {method}")
            if rng.random() < 0.5:
                return b.upsample(x, method=method, scales=[2.0, 2.0], layout="NHWC")
            return b.upsample(x, method=method, size=[int(rng.integers(h, 2 * h + 2)), int(rng.integers(w, 2 * w + 2))],
                              layout="NHWC", **self.qout())
        # dense over the channels of every pixel (a 1x1 conv written as dense)
        o = int(rng.integers(3, 20))
        wq = rng.integers(-127, 128, (o, c), dtype=np.int8)
        sx, _ = self.q(x)
        self.ops.append(f"dense {c}->{o}")
        return b.dense(x, b.const(wq, qparams=(0.01, 0)), None,
                       out_scale=float(sx * 0.01 * 70 * 73 * np.sqrt(c) / 30), out_zero_point=128)

    def head(self, x):
        """Reduce to a vector and classify: mean or flatten/reshape, then dense."""
        rng, b = self.rng, self.b
        _, h, w, c = x.shape
        if rng.random() < 0.5:
            x = b.mean(x, axes=[1, 2], keepdims=1, **self.qout())
            x = b.reshape(x, shape=[1, -1])
            self.ops.append("mean reshape")
        else:
            if h * w * c > 4096:
                x = b.adaptive_avg_pool2d(x, output_size=[2, 2], layout="NHWC", **self.qout())
            x = b.flatten(x, start_axis=1, end_axis=-1)
            self.ops.append("flatten")
        k = x.shape[-1]
        o = int(rng.integers(5, 40))
        wq = rng.integers(-127, 128, (o, k), dtype=np.int8)
        wsc = rng.uniform(0.002, 0.02, o)
        sx, _ = self.q(x)
        self.ops.append(f"dense {k}->{o}")
        return b.dense(x, b.const(wq, qparams=(wsc, np.zeros(o, np.int32), 0)),
                       rng.standard_normal(o).astype(np.float32),
                       out_scale=float(sx * wsc.mean() * 70 * 73 * np.sqrt(k) / 30), out_zero_point=128)

    def build(self, n_layers):
        rng = self.rng
        h, w = [(13, 17), (17, 13), (11, 9), (15, 15), (7, 19)][int(rng.integers(0, 5))]
        c = int(rng.choice([3, 5, 8, 16]))
        x = self.b.input("input0", (1, h, w, c), "uint8", qparams=(float(rng.uniform(0.01, 0.05)),
                                                                     int(rng.integers(0, 256))), layout="NHWC")
        y = x
        for _ in range(n_layers):
            y = self.step(y)
            if y.shape[1] * y.shape[2] > 900:  # keep the graph small: upsample twice is big enough
                y = self.b.max_pool2d(y, kernel=[2, 2], strides=[2, 2], layout="NHWC")
        outs = [self.head(y)] if rng.random() < 0.6 else [y]
        if rng.random() < 0.3:
            outs.append(y if len(outs) == 1 and outs[0] is not y else self.conv(y, k=1, stride=1))
        mod = self.b.finish(outs if len(outs) > 1 else outs[0])
        inp = rng.integers(0, 256, (1, h, w, c), dtype=np.uint8)
        return mod, inp


# MERA_SIM_TEST_GRAPHS=500 makes a long soak.
N_RANDOM = int(os.environ.get("MERA_SIM_TEST_GRAPHS", "40"))


@pytest.mark.parametrize("seed", range(N_RANDOM))
def test_random_graphs_match_interpreter_hw(seed):
    gen = GraphGen(seed)
    mod, x = gen.build(n_layers=int(gen.rng.integers(3, 10)))
    ref = compile_for(mod, {}, "InterpreterHw")(x)
    for cfg in CONFIGS:
        sim = compile_for(mod, {}, "Simulator", **cfg)
        assert_same_bytes(ref, sim(x), f"seed {seed} {cfg} layers {gen.ops}")


@pytest.mark.parametrize("seed", range(12))
def test_random_graphs_run_conv_layers_whole_with_the_tiles_bytes(seed, monkeypatch, capfd):
    """Layers run whole (docs/architecture.md): under every tiling config, the Simulator with
    conv2d layers run whole gives the bytes of the one that runs every tile (MERA_SIM_LAYERS=0)
    and InterpreterHw's, at 1, 2 and 7 threads; across the configs some layers do run whole."""
    gen = GraphGen(500 + seed)
    mod, x = gen.build(n_layers=int(gen.rng.integers(3, 8)))
    ref = compile_for(mod, {}, "InterpreterHw")(x)
    monkeypatch.setenv("MERA_SIM_PROFILE", "1")  # read when the machine loads
    ran_whole = 0
    for k, cfg in enumerate(CONFIGS):
        for layers, threads in (("0", 1), ("1", (1, 2, 7)[k % 3])):
            monkeypatch.setenv("MERA_SIM_LAYERS", layers)
            capfd.readouterr()
            sim = compile_for(mod, {}, "Simulator", num_threads=threads, **cfg)
            whole = layers_run_whole(capfd.readouterr().err)
            assert_same_bytes(ref, sim(x), f"seed {seed} {cfg} MERA_SIM_LAYERS={layers} {threads} threads, {gen.ops}")
            assert len(whole) == 1 and (layers == "1" or whole[0][0] == 0), whole
            ran_whole += whole[0][0] if layers == "1" else 0
    n_convs = sum(op.startswith("conv") for op in gen.ops)
    assert ran_whole > 0 or n_convs == 0, (gen.ops, ran_whole)


def test_every_layer_kind_in_one_graph():
    """Each layer kind of the generator at least once, in one deterministic graph."""
    gen = GraphGen(77)
    x = gen.b.input("input0", (1, 13, 17, 8), "uint8", qparams=(0.025, 90), layout="NHWC")
    y = x
    for kind in GraphGen.KINDS:
        y = gen.step(y, kind=kind, unary="hardswish")
        if y.shape[1] * y.shape[2] > 400:
            y = gen.b.max_pool2d(y, kernel=[2, 2], strides=[2, 2], layout="NHWC")
    for op in ("relu", "clip", "sigmoid"):
        y = gen.step(y, kind="unary", unary=op)
    mod = gen.b.finish(gen.head(y))
    inp = gen.rng.integers(0, 256, (1, 13, 17, 8), dtype=np.uint8)
    ref = compile_for(mod, {}, "InterpreterHw")(inp)
    for cfg in CONFIGS:
        assert_same_bytes(ref, compile_for(mod, {}, "Simulator", **cfg)(inp), f"{cfg} layers {gen.ops}")


def test_many_tiles_and_edge_tiles():
    """With 3x3 tiles on 13x17 images every conv has edge tiles, and the report shows the cuts."""
    for seed in range(3):
        rng = np.random.default_rng(100 + seed)
        gen = GraphGen(100 + seed)
        x = gen.b.input("input0", (1, 13, 17, 16), "uint8", qparams=(0.03, 120), layout="NHWC")
        y = gen.conv(x, o=24, k=3, stride=1, same=True)
        y = gen.depthwise(gen.conv(y, o=16, k=1, stride=1), same=True)   # depthwise, "same" padding
        y = gen.conv(y, o=16, k=5, stride=2, pad=[2, 1, 2, 1])
        y = gen.conv(y, o=8, k=7, stride=1, same=True, dil=1)
        mod = gen.b.finish(y)
        inp = rng.integers(0, 256, (1, 13, 17, 16), dtype=np.uint8)
        ref = compile_for(mod, {}, "InterpreterHw")(inp)
        sim = compile_for(mod, {}, "Simulator", **CONFIGS[1])
        assert_same_bytes(ref, sim(inp), f"seed {seed} {gen.ops}")
        rep = sim.partition_report()
        convs = [e for e in rep if e["op"] == "conv2d"]
        assert convs and all(e["on_dna"] for e in convs), str(rep)
        assert all(e["tiles"] > 1 for e in convs), str(rep)


# ---- scheduler modes ----------------------------------------------------------------

def test_fast_and_slow_modes_give_identical_bytes():
    for seed in (3, 7, 11):
        gen = GraphGen(1000 + seed)
        mod, x = gen.build(n_layers=5)
        outs = []
        for mode in ("Fast", "Slow"):
            sim = compile_for(mod, {}, "Simulator", arch={"platform": 100, **TINY}, max_tile_height=4,
                              max_tile_width=4, compiler_workers=4, scheduler_config={"mode": mode})
            outs.append(sim(x))
            assert sim.get_runtime_metrics()[0]["sim_time_us"] > 0
        assert_same_bytes(outs[0], outs[1], f"seed {seed}: Slow against Fast")
        assert_same_bytes(compile_for(mod, {}, "InterpreterHw")(x), outs[0], f"seed {seed}")


# ---- partition: split and host fallback ------------------------------------------------

def big_conv_model():
    rng = np.random.default_rng(5)
    b = ir.Builder("big")
    x = b.input("input0", (1, 40, 40, 32), "uint8", qparams=(0.02, 100), layout="NHWC")
    w = b.const(rng.integers(-127, 128, (64, 32, 3, 3), dtype=np.int8),
                qparams=(rng.uniform(0.002, 0.01, 64), np.zeros(64, np.int32), 0))
    y = b.conv2d(x, w, None, padding=[1, 1, 1, 1], layout="NHWC", activation="relu", out_scale=0.5,
                 out_zero_point=0, name="big_conv")
    return b.finish(y), rng.integers(0, 256, (1, 40, 40, 32), dtype=np.uint8)


def test_layer_too_large_for_the_buffers_is_split():
    mod, x = big_conv_model()
    ref = compile_for(mod, {}, "InterpreterHw")(x)
    sim = compile_for(mod, {}, "Simulator", arch={"platform": 100, "act_buffer_kib": 16, "weight_buffer_kib": 8,
                                                  "acc_buffer_kib": 8})
    assert_same_bytes(ref, sim(x), "big conv")
    (entry,) = [e for e in sim.partition_report() if e["node"] == "big_conv"]
    assert entry["on_dna"] and entry["tiles"] > 1, entry


def host_op_model():
    """conv -> softmax (not a DNA op) -> pad (not a DNA op) -> transpose (DNA data movement) -> relu."""
    rng = np.random.default_rng(6)
    b = ir.Builder("host_ops")
    x = b.input("input0", (1, 9, 11, 8), "uint8", qparams=(0.02, 100), layout="NHWC")
    w = b.const(rng.integers(-127, 128, (16, 8, 3, 3), dtype=np.int8), qparams=(0.005, 0))
    y = b.conv2d(x, w, None, padding=[1, 1, 1, 1], layout="NHWC", out_scale=0.2, out_zero_point=128, name="conv")
    y = b.softmax(y, axis=-1, out_scale=1 / 256, out_zero_point=0, name="softmax")
    y = b.pad(y, pads=[0, 1, 0, 2, 0, 0, 1, 0], name="pad")
    y = b.transpose(y, axes=[0, 3, 1, 2], name="transpose")
    y = b.relu(y, name="relu")
    return b.finish(y), rng.integers(0, 256, (1, 9, 11, 8), dtype=np.uint8)


def test_unsupported_ops_run_on_the_host_with_a_reason():
    mod, x = host_op_model()
    ref = compile_for(mod, {}, "InterpreterHw")(x)
    for cfg in (CONFIGS[0], CONFIGS[1]):
        sim = compile_for(mod, {}, "Simulator", **cfg)
        assert_same_bytes(ref, sim(x), f"host ops {cfg}")
        rep = {e["node"]: e for e in sim.partition_report()}
        for name in ("softmax", "pad"):
            assert not rep[name]["on_dna"], rep[name]
            assert rep[name]["reason"].strip(), rep[name]
        assert rep["conv"]["on_dna"] and rep["transpose"]["on_dna"], (rep["conv"], rep["transpose"])
        text = str(sim.partition_report())
        assert "softmax" in text and "host" in text and rep["softmax"]["reason"] in text
        layers = {d["node"]: d for d in sim.layer_report()}
        assert not layers["softmax"]["on_dna"] and layers["conv"]["on_dna"]
        assert sim.get_runtime_metrics()[0]["host_us"] > 0


def test_layer_whose_smallest_tile_cannot_fit_runs_on_the_host():
    """A 3x3 conv over 256 channels needs 2304 weight bytes per output
    channel; with a 1 KiB weight buffer not even one channel fits."""
    rng = np.random.default_rng(7)
    b = ir.Builder("nofit")
    x = b.input("input0", (1, 5, 7, 256), "uint8", qparams=(0.02, 100), layout="NHWC")
    w = b.const(rng.integers(-127, 128, (8, 256, 3, 3), dtype=np.int8), qparams=(0.001, 0))
    y = b.conv2d(x, w, None, padding=[1, 1, 1, 1], layout="NHWC", out_scale=0.5, out_zero_point=128, name="wide")
    y = b.relu(y, name="after")
    mod = b.finish(y)
    inp = rng.integers(0, 256, (1, 5, 7, 256), dtype=np.uint8)
    ref = compile_for(mod, {}, "InterpreterHw")(inp)
    sim = compile_for(mod, {}, "Simulator", arch={"platform": 100, "weight_buffer_kib": 1})
    assert_same_bytes(ref, sim(inp), "wide conv")
    rep = {e["node"]: e for e in sim.partition_report()}
    assert not rep["wide"]["on_dna"] and rep["wide"]["reason"].strip(), rep["wide"]


# ---- the zoo ------------------------------------------------------------------------

ZOO = ["resnet18", "resnet50", "resnext50_32x4d", "mobilenet_v2", "mobilenet_v3_large", "shufflenet_v2_x1_0",
       "googlenet", "inception_v3"]


def forwarded_counts(stderr):
    """The LOADs and STOREs the machine forwarded, from its MERA_SIM_PROFILE lines (one per run)."""
    import re
    lines = [ln for ln in stderr.splitlines() if ln.startswith("mera sim profile:")]
    assert lines, stderr

    def count(kind, ln):
        m = re.search(kind + r" forwarded [0-9.]+ ms \((\d+)\)", ln)
        return int(m.group(1)) if m else 0
    return [(count("LOAD", ln), count("STORE", ln)) for ln in lines]


def layers_run_whole(stderr):
    """(layers run whole, layers) of each machine loaded, from its MERA_SIM_PROFILE lines."""
    import re
    return [(int(m.group(1)), int(m.group(2)))
            for m in re.finditer(r"mera sim layers: (\d+) of (\d+) run whole", stderr)]


@pytest.mark.parametrize("name", ZOO)
def test_zoo_on_simulator_matches_interpreter_hw(name, monkeypatch, capfd):
    """The Simulator gives InterpreterHw's bytes on 1, 2 and 7 threads, and with forwarding off
    (MERA_SIM_FORWARD=0, docs/architecture.md "Forwarding"); with it on, LOADs and STOREs are forwarded."""
    from conftest import built_zoo
    z = built_zoo(name)
    x = np.ascontiguousarray(z.inputs[0].numpy().transpose(0, 2, 3, 1))
    mod, params = mera.relay.frontend.from_pytorch(z.traced, [("input0", x.shape)], layout="NHWC")
    ref = compile_for(mod, params, "InterpreterHw")(x)
    np.testing.assert_array_equal(ref[0], z.y_traced[:1].numpy())
    monkeypatch.setenv("MERA_SIM_PROFILE", "1")  # read when the machine loads
    # every conv2d as tiles, without and with forwarding; then conv2d layers run whole
    for forward, layers, threads in (("0", "0", 1), ("1", "0", 2), ("1", "1", 2), ("1", "1", 7)):
        monkeypatch.setenv("MERA_SIM_FORWARD", forward)
        monkeypatch.setenv("MERA_SIM_LAYERS", layers)
        capfd.readouterr()
        other = compile_for(mod, params, "Simulator", arch=100, num_threads=threads)
        what = f"{name}, MERA_SIM_FORWARD={forward} MERA_SIM_LAYERS={layers}, {threads} threads"
        assert_same_bytes(ref, other(x), what)
        err = capfd.readouterr().err
        whole = layers_run_whole(err)
        assert whole and all(w == 0 for w, _ in whole) if layers == "0" else all(w > 0 for w, _ in whole), \
            (what, whole)
        if layers == "0":
            counts = forwarded_counts(err)
            assert all(c == (0, 0) for c in counts) if forward == "0" else all(c[0] > 0 and c[1] > 0 for c in counts), \
                (what, counts)
        del other
    monkeypatch.delenv("MERA_SIM_FORWARD")
    monkeypatch.delenv("MERA_SIM_LAYERS")
    monkeypatch.delenv("MERA_SIM_PROFILE")
    sim = compile_for(mod, params, "Simulator", arch=100)
    assert_same_bytes(ref, sim(x), name)
    rep = sim.partition_report()
    assert len(rep.on_dna) > 0, str(rep)
    t = sim.timing()
    assert t["total_us"] > 0 and t["device_cycles"] > 0
    assert 0 < sim.layer_report().mac_utilization <= 1


def test_resnet50_estimate_on_arch_100_is_within_15_percent_of_the_docs_measurement():
    """The calibration anchor (docs/hardware.md, "Calibration"): the original
    docs measured ResNet-50 at 7.96 ms end to end on DNA-F100. The estimate
    is a deterministic function of the program and the platform table, so
    this guards the documented parameters; it does not time anything."""
    from conftest import built_zoo
    z = built_zoo("resnet50")
    mod, params = mera.relay.frontend.from_pytorch(z.traced, [("input0", (1, 224, 224, 3))], layout="NHWC")
    sim = compile_for(mod, params, "Simulator", arch=100)  # the docs' build: default (Fast) scheduler
    total_ms = sim.timing()["total_us"] / 1000
    assert 0.85 * 7.96 <= total_ms <= 1.15 * 7.96, total_ms


# ---- the latency line, metrics, trace, program ------------------------------------------

def small_model():
    gen = GraphGen(42)
    return gen.build(n_layers=4)


def test_latency_line_metrics_and_trace(capsys, tmp_path):
    mod, x = small_model()
    with mera.build_config(target="Simulator", arch=100):
        runner = mera.compile(mod, {})
    capsys.readouterr()
    out = runner.set_input(x).run().get_outputs()
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("Simulator total latency:")]
    assert len(lines) == 1, lines
    metrics = runner.get_runtime_metrics()
    assert isinstance(metrics, list) and set(metrics[0]) >= {"sim_time_us", "device_us", "host_us"}
    m = metrics[0]
    assert m["sim_time_us"] > 0 and m["device_us"] >= 0 and m["host_us"] >= 0
    assert m["sim_time_us"] == pytest.approx(m["device_us"] + m["host_us"])
    assert lines[0] == f"Simulator total latency: {m['sim_time_us']:.3f} us"
    runner(x)  # the direct call prints it too
    assert capsys.readouterr().out.count("Simulator total latency:") == 1
    assert_same_bytes(compile_for(mod, {}, "InterpreterHw")(x), out, "small model")

    # silenced by sim_log=False, and mera.compile(target=...) alone works (default platform)
    quiet = compile_for(mod, {}, "Simulator", arch=200)
    quiet(x)
    quiet.set_input(x).run()
    assert "Simulator total latency" not in capsys.readouterr().out
    loud = mera.compile(mod, {}, target="Simulator")
    assert loud.platform["name"] == mera.config.DEFAULT_ARCH
    loud(x)
    assert capsys.readouterr().out.count("Simulator total latency:") == 1

    path = tmp_path / "trace.json"
    runner.write_trace(str(path))
    trace = json.loads(path.read_text())
    assert isinstance(trace["traceEvents"], list) and trace["traceEvents"]
    runner.write_trace(tmp_path / "trace2.json")  # a PathLike works too
    assert json.loads((tmp_path / "trace2.json").read_text())["traceEvents"]

    rep = runner.layer_report()
    assert len(rep) == len(mod) and "MAC util" in str(rep) and "total" in str(rep)
    for d in rep:
        assert {"node", "op", "on_dna", "macs", "mac_cycles", "vec_cycles", "load_bytes", "store_bytes",
                "load_cycles", "store_cycles", "start_cycle", "end_cycle", "mac_utilization", "memory_bound",
                "host_us"} <= set(d)
        assert 0 <= d["mac_utilization"] <= 1
    prep = runner.partition_report()
    assert len(prep) == len(mod) and str(prep).splitlines()[0].split() == ["node", "op", "where", "tiles", "reason"]
    prog = runner.program_bytes()
    assert isinstance(prog, bytes) and prog.startswith(b"MERADNA\n")
    with pytest.raises(mera.MeraIOError):
        runner.write_trace(tmp_path / "no" / "such" / "dir" / "t.json")


def test_simulator_runner_api_and_input_checks():
    mod, x = small_model()
    runner = compile_for(mod, {}, "Simulator", arch=100)
    assert runner.target is mera.Target.Simulator and runner.input_names == ["input0"]
    out = runner.set_input({"input0": x}).run().get_output(0)
    np.testing.assert_array_equal(runner(x)[0], out)
    np.testing.assert_array_equal(runner.set_input(torch.from_numpy(x)).run().get_outputs()[0], out)
    with pytest.raises(mera.RuntimeInputError, match=r"input 'input0': expected \(1, \d+, \d+, \d+\) uint8, got .* int8"):
        runner(x.astype(np.int8))
    with pytest.raises(mera.RuntimeInputError, match="not C-contiguous"):
        runner(np.concatenate([x, x], axis=3)[..., ::2])
    with pytest.raises(mera.RuntimeInputError, match="run\\(\\) before set_input"):
        compile_for(mod, {}, "Simulator").run()


def test_threads_share_one_simulator():
    import threading
    mod, _ = small_model()
    runner = compile_for(mod, {}, "Simulator", arch={"platform": 100, **TINY}, max_tile_height=3)
    rng = np.random.default_rng(9)
    shape = mod.inputs[0]["shape"]
    xs = [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(3)]
    expected = [runner(x)[0] for x in xs]
    errors, bad = [], []

    def work(i):
        try:
            for k in range(6):
                j = (i + k) % 3
                if not np.array_equal(runner.set_input(xs[j]).run().get_output(0), expected[j]):
                    bad.append((i, k))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and not bad, (errors, bad)


def test_threaded_simulator_gives_the_serial_bytes_and_cycles():
    """num_threads splits each tile's kernel and the rows of large LOADs and STOREs across the worker
    pool: 1, 2 and 7 threads give InterpreterHw's bytes and the same timing, cycle for cycle."""
    cases = [big_conv_model()]
    for seed in (21, 22, 23):
        gen = GraphGen(seed)
        cases.append(gen.build(n_layers=6))
    for k, (mod, x) in enumerate(cases):
        ref = compile_for(mod, {}, "InterpreterHw")(x)
        seen = []
        for threads in (1, 2, 7):
            sim = compile_for(mod, {}, "Simulator", arch=100, num_threads=threads)
            assert_same_bytes(ref, sim(x), f"case {k} threads={threads}")
            assert_same_bytes(ref, sim(x), f"case {k} threads={threads}, second run")
            seen.append((sim.get_runtime_metrics()[0], sim.timing()))
        assert all(s == seen[0] for s in seen), f"case {k}: the timing depends on the thread count: {seen}"


def test_runs_reuse_the_machines_buffers_and_give_each_inputs_own_bytes():
    """A Simulator keeps the DRAM, buffers and kernel scratch of its last run for the next (zeroing
    what that run wrote): runs on different inputs, one after another, on 1, 2 and 7 threads and
    under tilings with many tiles, each give InterpreterHw's bytes for their own input, and the same
    input again gives the first run's bytes."""
    for seed in (31, 32, 33):
        gen = GraphGen(seed)
        mod, x0 = gen.build(n_layers=6)
        rng = np.random.default_rng(seed)
        xs = [x0] + [rng.integers(0, 256, x0.shape, dtype=x0.dtype) for _ in range(2)]
        interp = compile_for(mod, {}, "InterpreterHw")
        refs = [interp(x) for x in xs]
        for cfg in CONFIGS[:3]:
            for threads in (1, 2, 7):
                sim = compile_for(mod, {}, "Simulator", num_threads=threads, **cfg)
                for k in (0, 1, 2, 1, 0, 2):
                    assert_same_bytes(refs[k], sim(xs[k]), f"seed {seed} {cfg} threads={threads} input {k}")


def test_simulator_config_errors():
    mod, _ = small_model()
    with pytest.raises(mera.ConfigError, match="'max_tile_width' must be a positive int"):
        mera.build_config(target="Simulator", max_tile_width=-2)
    with pytest.raises(mera.ConfigError, match="'compiler_workers' must be a positive int"):
        mera.build_config(target="Simulator", compiler_workers="4")
    with pytest.raises(mera.ConfigError, match="'sim_log' must be True/False"):
        mera.build_config(target="Simulator", sim_log=3)
    with pytest.raises(mera.ConfigError, match="'mode' must be \"Fast\" or \"Slow\""):
        mera.build_config(target="Simulator", scheduler_config={"mode": "Medium"})
    with pytest.raises(mera.ConfigError, match="unknown target 'FPGA'"):
        mera.compile(mod, {}, target="FPGA")


def test_simulator_and_interpreter_hw_share_the_worker_pool():
    """A Simulator on 2 or 7 threads tells idle pool workers to stop spinning between its pooled
    tiles (mera_parallel_rest); an InterpreterHw on another Python thread uses the same process-wide
    pool meanwhile. Both keep giving their serial bytes, run after run."""
    import threading
    cases = [big_conv_model(), GraphGen(41).build(n_layers=6)]
    for k, (mod, x) in enumerate(cases):
        ref = compile_for(mod, {}, "InterpreterHw", num_threads=1)(x)
        for threads in (2, 7):
            sim = compile_for(mod, {}, "Simulator", arch=100, num_threads=threads)
            interp = compile_for(mod, {}, "InterpreterHw", num_threads=threads)
            bad, errors = [], []

            def work(runner, name):
                try:
                    for r in range(8):
                        out = runner(x)
                        if len(out) != len(ref) or not all(np.array_equal(a, b) for a, b in zip(ref, out)):
                            bad.append((name, r))
                except Exception as e:  # pragma: no cover - reported below
                    errors.append(e)

            ts = [threading.Thread(target=work, args=(sim, "sim")), threading.Thread(target=work, args=(interp, "hw"))]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            assert not errors and not bad, (k, threads, errors, bad)
