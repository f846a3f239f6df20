"""The trim_taps pass (csrc/passes/trim_taps.c): conv2d taps that read only padding removed on DNA targets.

Random seeded geometries aim at the case the pass exists for (dilations as large as the map or larger,
DeepLabV3's ASPP on a small feature map), plus strides, asymmetric padding (the pass then slices the
input), groups, depthwise, per-channel weights and kernel layouts. The judge is PyTorch fbgemm's
quantized::conv2d where PyTorch can express the conv (symmetric padding, OIHW), and InterpreterHw (which
never runs the pass) everywhere: the Simulator and the IP run the trimmed conv and must give the same
bytes, under both roundings. Float convs are left to the host as they are.
"""

import os

import numpy as np
import pytest
import torch

import mera
from mera import ir

torch.backends.quantized.engine = "fbgemm"

MORE = int(os.environ.get("MERA_TEST_MORE", "1"))
ROUNDINGS = ("zero_point_before_rounding", "zero_point_after_rounding")


@pytest.fixture(autouse=True)
def one_torch_thread():
    torch.backends.quantized.engine = "fbgemm"
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def case(rng, symmetric=True):
    """A geometry where some taps are likely to read only padding."""
    kind = rng.choice(["aspp", "generic", "depthwise", "grouped"])
    if kind == "depthwise":
        g = int(rng.choice([1, 3, 8, 16]))
        c, o = g, g * int(rng.choice([1, 2]))
    elif kind == "grouped":
        g = int(rng.choice([2, 3]))
        c, o = g * int(rng.integers(1, 5)), g * int(rng.integers(1, 5))
    else:
        g, c, o = 1, int(rng.integers(1, 40)), int(rng.integers(1, 40))
    k = (3, 3) if kind == "aspp" else (int(rng.integers(1, 6)), int(rng.integers(1, 6)))
    h, w = int(rng.integers(1, 15)), int(rng.integers(1, 15))
    if kind == "aspp":  # the ASPP's padding = dilation, on a map about the dilation's size or smaller
        d = int(rng.integers(max(1, min(h, w) - 2), 40))
        dil, stride = (d, d), (1, 1)
        pad = [d, d, d, d]
    else:
        dil = (int(rng.integers(1, 20)), int(rng.integers(1, 20)))
        stride = (int(rng.choice([1, 1, 2, 3])), int(rng.choice([1, 1, 2, 3])))
        pad = [int(rng.integers(0, dil[i % 2] * (k[i % 2] - 1) + 2)) for i in range(2)]
        pad = pad + (pad if symmetric else [int(rng.integers(0, dil[i] * (k[i] - 1) + 2)) for i in range(2)])
    for i in range(2):  # the dilated kernel must fit the padded input
        hw = (h, w)[i] + pad[i] + pad[i + 2]
        if dil[i] * (k[i] - 1) + 1 > hw:
            extra = dil[i] * (k[i] - 1) + 1 - hw
            pad[i] += extra // 2 + extra % 2 if symmetric else extra
            pad[i + 2] += extra // 2 + extra % 2 if symmetric else 0
    return dict(kind=str(kind), c=c, o=o, g=g, k=k, stride=stride, pad=pad, dil=dil, h=h, w=w)


def draw(rng, p):
    sx, zx = float(np.exp(rng.uniform(np.log(0.005), np.log(0.1)))), int(rng.integers(0, 256))
    xq = rng.integers(0, 256, size=(1, p["c"], p["h"], p["w"])).astype(np.uint8)
    wq = rng.integers(-127, 128, size=(p["o"], p["c"] // p["g"], *p["k"])).astype(np.int8)
    if rng.random() < 0.4:
        wqp = (np.exp(rng.uniform(np.log(0.001), np.log(0.05), p["o"])), np.zeros(p["o"], np.int32), 0)
    else:
        wqp = (float(np.exp(rng.uniform(np.log(0.001), np.log(0.05)))),
               0 if rng.random() < 0.6 else int(rng.integers(-20, 21)))
    bias = (rng.standard_normal(p["o"]) * rng.uniform(0.01, 3)).astype(np.float32) if rng.random() < 0.8 else None
    so, zo = float(np.exp(rng.uniform(np.log(0.01), np.log(0.5)))), int(rng.integers(0, 256))
    return dict(sx=sx, zx=zx, xq=xq, wq=wq, wqp=wqp, bias=bias, so=so, zo=zo, relu=bool(rng.random() < 0.3))


def torch_ref(p, d):
    """fbgemm's quantized::conv2d (symmetric padding only), NCHW uint8."""
    xt = torch._make_per_tensor_quantized_tensor(torch.from_numpy(d["xq"]), d["sx"], d["zx"])
    wqp = d["wqp"]
    if len(wqp) == 3:
        wt = torch._make_per_channel_quantized_tensor(torch.from_numpy(d["wq"]), torch.from_numpy(wqp[0]),
                                                      torch.from_numpy(wqp[1].astype(np.int64)), 0)
    else:
        wt = torch._make_per_tensor_quantized_tensor(torch.from_numpy(d["wq"]), wqp[0], wqp[1])
    packed = torch.ops.quantized.conv2d_prepack(wt, None if d["bias"] is None else torch.from_numpy(d["bias"]),
                                                list(p["stride"]), list(p["pad"][:2]), list(p["dil"]), p["g"])
    op = torch.ops.quantized.conv2d_relu if d["relu"] else torch.ops.quantized.conv2d
    return op(xt, packed, d["so"], d["zo"]).int_repr().numpy()


def to_kernel_layout(wq, layout):
    return np.ascontiguousarray({"OIHW": wq, "OHWI": wq.transpose(0, 2, 3, 1), "HWIO": wq.transpose(2, 3, 1, 0)}[layout])


def module(p, d, rounding, kernel_layout="OIHW"):
    """The conv as one NHWC node."""
    b = ir.Builder("t", rounding=rounding)
    x = b.input("x", (1, p["h"], p["w"], p["c"]), "uint8", qparams=(d["sx"], d["zx"]), layout="NHWC")
    wqp = d["wqp"]
    if len(wqp) == 3 and kernel_layout == "HWIO":
        wqp = (wqp[0], wqp[1], 3)
    args = [x, b.const(to_kernel_layout(d["wq"], kernel_layout), qparams=wqp, layout=kernel_layout)]
    args += [] if d["bias"] is None else [b.const(d["bias"])]
    y = b.conv2d(*args, strides=list(p["stride"]), padding=list(p["pad"]), dilation=list(p["dil"]), groups=p["g"],
                 layout="NHWC", kernel_layout=kernel_layout, activation="relu" if d["relu"] else "none",
                 out_scale=d["so"], out_zero_point=d["zo"], out_dtype="uint8")
    return b.finish(y)


def run(mod, target, dump=None):
    cfg = dict(target=target)
    if target == "Simulator":
        cfg["sim_log"] = False
    if dump:
        cfg["dump_ir"] = dump
        cfg["dump_ir_stages"] = "subpixel,trim_taps"
    with mera.build_config(**cfg):
        rt = mera.compile(mod, {})
    return rt


def nhwc(a):
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def taps_read(p):
    """Per axis, the taps some output reads a data row (not padding) with: what the pass must keep."""
    kept = []
    for i, size in enumerate((p["h"], p["w"])):
        k, d, s, pt = p["k"][i], p["dil"][i], p["stride"][i], p["pad"][i]
        out = (size + p["pad"][i] + p["pad"][i + 2] - d * (k - 1) - 1) // s + 1
        kept.append([t for t in range(k) if any(0 <= o * s - pt + t * d < size for o in range(out))])
    return kept


def test_trimmed_convs_match_fbgemm_on_the_dna():
    """Symmetric geometries: fbgemm, InterpreterHw, Simulator give the same bytes, under both roundings; the
    trimmed convs run on the DNA."""
    rng = np.random.default_rng(1300)
    trimmed = on_dna = 0
    for i in range(40 * MORE):
        p = case(rng)
        d = draw(rng, p)
        ref = torch_ref(p, d)
        kept = taps_read(p)
        if not kept[0] or not kept[1]:
            continue  # no tap reads data: the pass leaves it, fbgemm gives the requantized bias
        rounding = ROUNDINGS[i % 2]
        mod = module(p, d, rounding)
        hw = run(mod, "InterpreterHw")(nhwc(d["xq"]))[0]
        sim_rt = run(mod, "Simulator")
        sim = sim_rt(nhwc(d["xq"]))[0]
        np.testing.assert_array_equal(hw, nhwc(ref), err_msg=str(p))
        np.testing.assert_array_equal(sim, hw, err_msg=str(p))
        if len(kept[0]) < p["k"][0] or len(kept[1]) < p["k"][1]:
            trimmed += 1
            conv = [e for e in sim_rt.partition_report() if e["op"] == "conv2d"]
            assert len(conv) == 1 and conv[0]["node"] == "conv2d", conv
            on_dna += conv[0]["on_dna"]
    assert trimmed >= 15 * MORE and on_dna >= 10 * MORE, (trimmed, on_dna)


@pytest.mark.parametrize("kernel_layout", ["OIHW", "OHWI", "HWIO"])
def test_asymmetric_padding_strides_and_kernel_layouts(kernel_layout, tmp_path):
    """Asymmetric padding and strides make the pass slice the input where the kept taps read fewer rows; the
    dump shows the kernel cut to the taps that read data; InterpreterHw == Simulator bytes."""
    rng = np.random.default_rng(1301 + len(kernel_layout) + ord(kernel_layout[0]))
    sliced = trimmed = 0
    for i in range(25 * MORE):
        p = case(rng, symmetric=False)
        d = draw(rng, p)
        kept = taps_read(p)
        if not kept[0] or not kept[1]:
            continue
        mod = module(p, d, ROUNDINGS[i % 2], kernel_layout)
        hw = run(mod, "InterpreterHw")(nhwc(d["xq"]))[0]
        dump = tmp_path / str(i)
        os.makedirs(dump)
        sim = run(mod, "Simulator", dump=str(dump))(nhwc(d["xq"]))[0]
        np.testing.assert_array_equal(sim, hw, err_msg=str(p))
        text = open(dump / [f for f in os.listdir(dump) if f.endswith("trim_taps.ir")][0]).read()
        want_h, want_w = kept[0][-1] - kept[0][0] + 1, kept[1][-1] - kept[1][0] + 1
        if (want_h, want_w) != p["k"]:
            trimmed += 1
            sliced += "= slice(" in text
            kshape = {"OIHW": (p["o"], p["c"] // p["g"], want_h, want_w),
                      "OHWI": (p["o"], want_h, want_w, p["c"] // p["g"]),
                      "HWIO": (want_h, want_w, p["c"] // p["g"], p["o"])}[kernel_layout]
            assert "i8[%s]" % ",".join(map(str, kshape)) in text, (p, text)
        else:
            assert "= slice(" not in text and ".trimmed" not in text, text
    assert trimmed >= 8 * MORE and sliced >= 2 * MORE, (trimmed, sliced)


def test_ip_target_gives_the_same_bytes():
    """The IP target (deploy directory, emulated device) runs the trimmed program too."""
    p = dict(kind="aspp", c=24, o=16, g=1, k=(3, 3), stride=(1, 1), pad=[12, 12, 12, 12], dil=(12, 12), h=7, w=9)
    d = draw(np.random.default_rng(1302), p)
    mod = module(p, d, ROUNDINGS[0])
    ref = nhwc(torch_ref(p, d))
    np.testing.assert_array_equal(run(mod, "IP")(nhwc(d["xq"]))[0], ref)


def test_fbgemm_saturating_depthwise_conv_is_left_alone(tmp_path):
    """A 3x3 depthwise conv with padding 1 on a 1x1 map reads only padding with its off-centre taps, but
    fbgemm's depthwise path saturates the int16 sums of tap pairs that mix the centre and padding: the pass
    must keep all 9 taps, and the bytes stay fbgemm's."""
    p = dict(kind="depthwise", c=16, o=16, g=16, k=(3, 3), stride=(1, 1), pad=[1, 1, 1, 1], dil=(1, 1), h=1, w=1)
    rng = np.random.default_rng(1303)
    d = draw(rng, p)
    d.update(zx=250, xq=np.full((1, 16, 1, 1), 3, np.uint8), wq=np.full((16, 1, 3, 3), 127, np.int8),
             wqp=(0.01, 0), bias=None, so=0.5, zo=128, relu=False)
    ref = torch_ref(p, d)
    exact = np.clip(np.rint(0.02 * 0.01 * 127 * (3 - 250) / 0.5) + 128, 0, 255)
    assert (ref != exact).any()  # fbgemm saturated: the trimmed conv would differ
    rt = run(module(p, d, ROUNDINGS[0]), "Simulator", dump=str(tmp_path))
    np.testing.assert_array_equal(rt(nhwc(d["xq"]))[0], nhwc(ref))
    text = open(tmp_path / [f for f in os.listdir(tmp_path) if f.endswith("trim_taps.ir")][0]).read()
    assert ".trimmed" not in text and "i8[16,1,3,3]" in text, text


def test_float_convs_are_left_to_the_host():
    """Float convs keep their taps (their sums would be added in another order): Simulator == Interpreter."""
    rng = np.random.default_rng(1304)
    b = ir.Builder("t")
    x = b.input("x", (1, 5, 6, 8), "float32", layout="NHWC")
    w = rng.standard_normal((4, 8, 3, 3)).astype(np.float32)
    y = b.conv2d(x, b.const(w), padding=[9, 9, 9, 9], dilation=[9, 9], layout="NHWC")
    mod = b.finish(y)
    xv = rng.standard_normal((1, 5, 6, 8)).astype(np.float32)
    sim_rt = run(mod, "Simulator")
    np.testing.assert_array_equal(sim_rt(xv)[0], run(mod, "Interpreter")(xv)[0])
    assert not any(e["on_dna"] for e in sim_rt.partition_report() if e["op"] == "conv2d")


def test_dilated_conv_whose_taps_all_read_data_stays_on_the_host_with_its_reason():
    """DeepLabV3's dilation-24 ASPP conv on a 33x33 map (a 520x520 input): every tap reads data for some
    output, so nothing is trimmed, and its 49x49-pixel window of 960 channels does not fit ACT. It stays on
    the host, the report says why, and the bytes are fbgemm's."""
    p = dict(kind="aspp", c=960, o=8, g=1, k=(3, 3), stride=(1, 1), pad=[24, 24, 24, 24], dil=(24, 24), h=33, w=33)
    d = draw(np.random.default_rng(1305), p)
    rt = run(module(p, d, ROUNDINGS[0]), "Simulator")
    np.testing.assert_array_equal(rt(nhwc(d["xq"]))[0], nhwc(torch_ref(p, d)))
    conv = [e for e in rt.partition_report() if e["op"] == "conv2d"]
    assert len(conv) == 1 and not conv[0]["on_dna"], conv
    assert "dilation 24x24" in conv[0]["reason"] and "49x49 input pixels" in conv[0]["reason"], conv
