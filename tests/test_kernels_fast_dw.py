"""The AVX-512 byte-pair depthwise loop (csrc/kernels/fast/isa_avx512.c,
dw_row_wide) against the reference kernels and against fbgemm, byte for byte.

That loop runs fbgemm's saturating depthwise path without weight zero
points (uint8 input, pair sums saturated to int16) and requantizes its
accumulators in their lane order with the saturating packs; 32-channel
layers at stride 1 take two pixels per 512-bit vector. The cases here aim
at its corners: channel counts below, at and around 32 and the 64-channel
blocks (with channel multipliers, which make the padded input's copies),
strides 1 and 2, odd and even output widths, 3x3 / 5x5 / 7x7 and 1x1
kernels, symmetric and asymmetric padding, uint8 and int8 outputs, relu,
output scales that push every value to the clamps or past the int32 range,
NaN/inf biases, both layouts, and 1, 2 and 7 threads on every fast path
this CPU has (tests/test_kernels_fast.py: PATHS).
"""

import numpy as np
import pytest
import torch

from mera import ir

from test_kernels_fast import (MORE, PATHS, Tally, compile_with, out_params, rand_bias, rand_data, rand_scale,
                               rand_weights, rand_zp, run_all)

torch.backends.quantized.engine = "fbgemm"

CHANNELS = [8, 16, 24, 31, 32, 33, 48, 64, 80, 96, 100, 144, 192]


def test_byte_pair_depthwise_equals_reference(monkeypatch):
    rng = np.random.default_rng(21)
    tally = Tally("depthwise byte pairs")
    n_cases = 120 * MORE
    for i in range(n_cases):
        o = CHANNELS[i % len(CHANNELS)]
        mult = 2 if i % 5 == 3 and o % 2 == 0 else 1
        c = o // mult
        kk = int(rng.choice([3, 3, 3, 5, 7, 1]))
        s = int(rng.choice([1, 1, 2]))
        pad = [(kk - 1) // 2] * 4 if rng.random() < 0.7 else [int(v) for v in rng.integers(0, kk, size=4)]
        h = int(rng.integers(max(1, kk - pad[0] - pad[2]), 12))
        w = int(rng.integers(max(1, kk - pad[1] - pad[3]), 14))
        n = int(rng.integers(1, 3))
        nhwc = bool(rng.random() < 0.7)
        ydt = "uint8" if rng.random() < 0.6 else "int8"
        wq = rand_weights(rng, (o, 1, kk, kk))
        wqp = (np.array([rand_scale(rng, 1e-3, 5e-2) for _ in range(o)]), np.zeros(o, np.int32), 0) \
            if rng.random() < 0.6 else (rand_scale(rng, 1e-3, 5e-2), 0)
        sx, zx = rand_scale(rng, 5e-3, 0.1), rand_zp(rng, "uint8")
        so, zo = out_params(rng, i, ydt)
        bias = rand_bias(rng, o) if rng.random() < 0.8 else None
        relu = bool(rng.random() < 0.3)
        rounding = str(rng.choice(ir.ROUNDINGS))
        shape = (n, h, w, c) if nhwc else (n, c, h, w)
        x = rand_data(rng, shape, "uint8")
        b = ir.Builder("dw", rounding=rounding)
        xv = b.input("x", shape, "uint8", qparams=(sx, zx), layout="NHWC" if nhwc else "NCHW")
        y = b.conv2d(xv, b.const(wq, qparams=wqp), bias, strides=[s, s], padding=pad, groups=c,
                     layout="NHWC" if nhwc else "NCHW", activation="relu" if relu else "none", out_scale=so,
                     out_zero_point=zo, out_dtype=ydt, depthwise_saturate="yes")
        run_all(monkeypatch, tally, b.finish(y), {}, [x],
                f"n={n} {h}x{w}x{c}->{o} k{kk} s{s} pad={pad} nhwc={nhwc} ->{ydt} {rounding} "
                f"{'per-channel' if len(wqp) == 3 else 'per-tensor'} bias={bias is not None} relu={relu}")
    tally.done(n_cases)


@pytest.fixture
def one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("hw,c,stride", [(112, 32, 1), (113, 32, 1), (56, 96, 2), (57, 144, 1), (14, 576, 1),
                                         (7, 960, 1), (15, 48, 2)])
def test_mobilenet_depthwise_layers_match_fbgemm(monkeypatch, one_torch_thread, hw, c, stride):
    """MobileNetV2's depthwise 3x3 layers (and odd-sized neighbours) against quantized::conv2d."""
    rng = np.random.default_rng(hw * 1000 + c)
    sx, zx, so, zo = 0.02, int(rng.integers(0, 256)), 0.05, int(rng.integers(0, 40))
    xq = rng.integers(0, 256, (1, c, hw, hw)).astype(np.uint8)
    wq = rng.integers(-128, 128, (c, 1, 3, 3)).astype(np.int8)
    wq[: c // 8] = 127  # saturating pair sums
    wsc = rng.uniform(0.001, 0.02, c)
    bias = (rng.standard_normal(c) * 3).astype(np.float32)
    wt = torch._make_per_channel_quantized_tensor(torch.from_numpy(wq), torch.from_numpy(wsc),
                                                  torch.zeros(c, dtype=torch.int64), 0)
    packed = torch.ops.quantized.conv2d_prepack(wt, torch.from_numpy(bias), [stride] * 2, [1, 1], [1, 1], c)
    xt = torch._make_per_tensor_quantized_tensor(torch.from_numpy(xq), sx, zx).contiguous(
        memory_format=torch.channels_last)
    for relu in (False, True):
        conv = torch.ops.quantized.conv2d_relu if relu else torch.ops.quantized.conv2d
        want = conv(xt, packed, so, zo).int_repr().numpy()
        b = ir.Builder("dw")
        xv = b.input("x", (1, hw, hw, c), "uint8", qparams=(sx, zx), layout="NHWC")
        y = b.conv2d(xv, b.const(wq, qparams=(wsc, np.zeros(c, np.int32), 0)), bias, strides=[stride] * 2,
                     padding=[1] * 4, groups=c, layout="NHWC", activation="relu" if relu else "none",
                     out_scale=so, out_zero_point=zo)
        mod = b.finish(y)
        x_nhwc = np.ascontiguousarray(xq.transpose(0, 2, 3, 1))
        for path, mask in PATHS:
            for threads in (1, 2, 7):
                monkeypatch.setenv("MERA_NUM_THREADS", str(threads))
                got = compile_with(monkeypatch, mod, {}, mask=mask)(x_nhwc)[0]
                assert np.array_equal(got.transpose(0, 3, 1, 2), want), f"{path} threads={threads} relu={relu}"
        monkeypatch.delenv("MERA_NUM_THREADS")
