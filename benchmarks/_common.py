"""Helpers shared by the benchmark scripts (run as `python benchmarks/<script>.py`,
so this directory is on sys.path)."""

from __future__ import annotations

import time


def best_of(fn, repeat: int) -> float:
    """Seconds of the fastest of `repeat` calls of fn, after one warm-up call."""
    fn()  # warm up
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def best_of_interleaved(fns, repeat: int, run: int = 1):
    """Seconds of the fastest call of each fn, the fns called in turn `repeat` times (after
    one warm-up call each), so a machine whose load changes treats them alike.

    run > 1 makes each turn `run` calls in a row, all timed. With several threads this
    matters: the thread pools of the other contenders (torch's OpenMP, onnxruntime's) keep
    spinning on the cores for a while after their call returns, so the first call of a turn
    shares its cores with them; the later calls of the run do not."""
    for fn in fns:
        fn()
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for k, fn in enumerate(fns):
            for _ in range(run):
                t = time.perf_counter()
                fn()
                best[k] = min(best[k], time.perf_counter() - t)
    return best


def onnxruntime_qdq_session(name: str, threads: int, folder: str):
    """The zoo's float model `name` exported to ONNX and quantized by onnxruntime's own
    quantize_static (QDQ, per-channel int8 weights, uint8 activations, calibrated on the
    zoo's calibration batches), in an onnxruntime session with `threads` intra-op threads.
    Returns (session, input name)."""
    import os

    import onnxruntime as ort
    import torch
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from mera import models

    float_model = {**models.MODELS, **models.TASK_MODELS}[name](seed=0).eval()
    x = models.calibration_data(name, n=1, seed=1)[0]
    fp, qp = os.path.join(folder, f"{name}.onnx"), os.path.join(folder, f"{name}.qdq.onnx")
    with torch.no_grad():
        torch.onnx.export(float_model, (x,), fp, input_names=["input"], opset_version=17, dynamo=False)

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"input": b.numpy()} for b in models.calibration_data(name, n=4, seed=0)])

        def get_next(self):
            return next(self.it, None)

    quantize_static(fp, qp, Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(qp, so, providers=["CPUExecutionProvider"]), "input"


# ResNet-50-shaped conv layers (and a MobileNet depthwise one) that the
# interpreter benchmarks time one by one:
# (name, H=W, in channels, out channels, kernel, stride, groups)
RESNET50_LAYERS = [
    ("stem 7x7/2", 224, 3, 64, 7, 2, 1),
    ("layer1 1x1", 56, 64, 64, 1, 1, 1),
    ("layer1 3x3", 56, 64, 64, 3, 1, 1),
    ("layer1 1x1 expand", 56, 64, 256, 1, 1, 1),
    ("layer2 3x3/2", 56, 128, 128, 3, 2, 1),
    ("layer3 3x3", 14, 256, 256, 3, 1, 1),
    ("layer4 3x3", 7, 512, 512, 3, 1, 1),
    ("layer4 1x1 expand", 7, 512, 2048, 1, 1, 1),
    ("depthwise 3x3 (MobileNet)", 56, 144, 144, 3, 1, 144),
]
