"""mera.Quantizer against PyTorch's own post-training quantization, in the same process.

For each zoo model: the time to calibrate N images (PyTorch: fbgemm qconfig
with HistogramObserver, the prepared model run on each image; mera: the float
Interpreter with histogram observers on every activation), the time to produce
the quantized model (PyTorch: convert; mera: quantize), and mera / torch
ratios (higher is slower). Both sides run single-threaded. Accuracy is not
measured here (tests/test_quantizer.py does, on real data).

    python benchmarks/quantize.py [--images N] [--models resnet18,resnet50]
"""

from __future__ import annotations

import argparse
import copy
import time
import warnings

import torch
import torch.ao.quantization as tq

import mera
import mera.models as mm


def torch_ptq(model, images):
    m = copy.deepcopy(model)
    m.fuse_model()
    m.qconfig = tq.get_default_qconfig("fbgemm")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tq.prepare(m, inplace=True)
        t = time.perf_counter()
        with torch.no_grad():
            for x in images:
                m(x)
        calib = time.perf_counter() - t
        t = time.perf_counter()
        tq.convert(m, inplace=True)
        convert = time.perf_counter() - t
    return calib, convert


def mera_ptq(model, images):
    shape = tuple(images[0].permute(0, 2, 3, 1).shape)
    t = time.perf_counter()
    q = mera.Quantizer(model, input_shape=shape, layout="NHWC")
    setup = time.perf_counter() - t
    data = [x.permute(0, 2, 3, 1).contiguous().numpy() for x in images]
    t = time.perf_counter()
    q.calibrate(data, progress=False)
    calib = time.perf_counter() - t
    t = time.perf_counter()
    q.quantize()
    quant = time.perf_counter() - t
    return setup, calib, quant


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--models", default="resnet18,resnet50,mobilenet_v2")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"{args.images} calibration images, one thread; seconds")
    print(f"{'model':<20} {'torch calib':>12} {'mera calib':>11} {'ratio':>6}   {'torch convert':>13} "
          f"{'mera quantize':>13}   {'mera import':>11}")
    for name in args.models.split(","):
        model = mm.MODELS[name](seed=0).eval()
        images = mm.calibration_data(name, n=args.images, seed=0)
        tc, tv = torch_ptq(model, images)
        ms, mc, mq = mera_ptq(model, images)
        print(f"{name:<20} {tc:>12.2f} {mc:>11.2f} {mc / tc:>6.2f}   {tv:>13.2f} {mq:>13.2f}   {ms:>11.2f}")


if __name__ == "__main__":
    main()
