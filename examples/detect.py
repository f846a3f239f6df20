"""Object detection with mera: a quantized YOLOv5-style detector, compiled, run, its boxes drawn on the image.

    python examples/detect.py [--image photo.jpg] [--target Simulator|IP] [--out detections.png]

What it does:
1. builds mera.models.yolov5n (YOLOv5 layout, width 0.25 / depth 0.33, 256x256 input) and quantizes it with
   eager-mode post-training quantization (fbgemm), traces it;
2. compiles the traced model with mera (channels-last import) for the target (InterpreterHw by default, the
   Simulator, or the IP: then it builds a deploy directory, detect_deploy/, and runs it through
   mera.load_runtime_module on the software-emulated device) and runs it on the image (resized to 256x256,
   standardised per image);
3. decodes the three head maps into boxes and runs class-aware NMS on the host (mera.models.yolo_decode), checks
   that PyTorch's quantized model gives the same boxes, draws the boxes with class and score with PIL, saves a PNG.

Be aware: there are no pretrained weights and no dataset here.  The detector's weights are seeded random and it is
calibrated on seeded synthetic images, so the boxes show the pipeline working (compile, run bit-exactly, decode,
NMS, draw), not real detections.  Without --image the input is a generated picture of a few shapes.
Needs the [examples] extra (torch, pillow).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import List, Tuple

import numpy as np
import torch
from PIL import Image, ImageDraw

import mera
import mera.models as mm

INPUT = mm.input_shape("yolov5n")  # (1, 3, 256, 256)
COLORS = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
          (70, 240, 240), (240, 50, 230)]


def synthetic_image(seed: int = 0, size: Tuple[int, int] = (320, 240)) -> Image.Image:
    """A generated test picture: a vertical gradient and a few random rectangles and ellipses."""
    rng = np.random.default_rng(seed)
    w, h = size
    ramp = np.linspace(0, 1, h)[:, None, None]
    top, bottom = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    img = Image.fromarray(np.broadcast_to(top * (1 - ramp) + bottom * ramp, (h, w, 3)).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x0, y0 = rng.uniform(0, w * 0.8), rng.uniform(0, h * 0.8)
        x1, y1 = x0 + rng.uniform(20, w * 0.4), y0 + rng.uniform(20, h * 0.4)
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.rectangle if rng.random() < 0.5 else draw.ellipse)([x0, y0, x1, y1], fill=fill)
    return img


def preprocess(img: Image.Image) -> np.ndarray:
    """RGB image -> (1, 3, 256, 256) float32, standardised per image (the calibration data's range)."""
    _, _, h, w = INPUT
    a = np.asarray(img.convert("RGB").resize((w, h), Image.BILINEAR), dtype=np.float32) / 255.0
    a = (a - a.mean()) / max(float(a.std()), 1e-6)
    return np.ascontiguousarray(a.transpose(2, 0, 1)[None])


def build_detector(seed: int = 0) -> torch.jit.ScriptModule:
    """The quantized (fbgemm PTQ, seeded synthetic calibration) and traced detector."""
    torch.backends.quantized.engine = "fbgemm"
    model = mm.yolov5n(quantize=True, seed=seed)
    return mm.trace(model, mm.calibration_data("yolov5n", n=1, seed=seed)[0])


def draw_boxes(img: Image.Image, boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray) -> Image.Image:
    out = img.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    for box, s, c in zip(boxes, scores, classes):
        x0, y0, x1, y1 = (int(round(float(v))) for v in box)  # whole pixels, so the outline is where the box is
        color = COLORS[int(c) % len(COLORS)]
        draw.rectangle([x0, y0, x1, y1], outline=color, width=2)
        label = f"class {int(c)} {s:.2f}"
        tx, ty = x0 + 2, max(y0 - 12, 0)
        tw = draw.textlength(label)
        draw.rectangle([tx - 1, ty, tx + tw + 1, ty + 11], fill=color)
        draw.text((tx, ty), label, fill=(0, 0, 0))
    return out


def to_image_coords(boxes: np.ndarray, img: Image.Image) -> np.ndarray:
    """Boxes in the 256x256 network input -> pixels of `img`, clipped to it."""
    _, _, h, w = INPUT
    sx, sy = img.width / w, img.height / h
    b = boxes * np.array([sx, sy, sx, sy], np.float32)
    return np.clip(b, 0, [img.width - 1, img.height - 1, img.width - 1, img.height - 1])


def main(argv: List[str] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--image", help="input image (default: a generated picture)")
    p.add_argument("--target", default="InterpreterHw", choices=["InterpreterHw", "Simulator", "IP"])
    p.add_argument("--deploy-dir", default="detect_deploy", help="where --target IP builds (default: detect_deploy)")
    p.add_argument("--out", default="detections.png", help="PNG to write (default: detections.png)")
    p.add_argument("--json", help="also write the boxes (image pixels), scores and classes to this JSON file")
    p.add_argument("--conf", type=float, default=0.4, help="score threshold (objectness x class)")
    p.add_argument("--iou", type=float, default=0.45, help="NMS IoU threshold")
    p.add_argument("--max-det", type=int, default=10, help="keep at most this many boxes")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights and the calibration")
    args = p.parse_args(argv)

    print("Note: seeded random weights and synthetic calibration (no pretrained weights or dataset here): "
          "the boxes show the pipeline, not real detections.")
    try:
        img = Image.open(args.image).convert("RGB") if args.image else synthetic_image(args.seed)
    except OSError as e:  # missing, unreadable or not an image (PIL's UnidentifiedImageError is an OSError)
        print(f"detect.py: cannot read image '{args.image}': {e}", file=sys.stderr)
        return 2
    x = preprocess(img)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # PyTorch's numerics contract is its single-threaded arithmetic
    try:
        traced = build_detector(args.seed)
        with torch.no_grad():
            ref = [t.numpy() for t in traced(torch.from_numpy(x))]
    finally:
        torch.set_num_threads(threads)

    x_nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    mod, params = mera.relay.frontend.from_pytorch(traced, [("input0", x_nhwc.shape)], layout="NHWC")
    if args.target == "IP":
        with mera.build_config(target="IP", arch=100):
            mera.build(mod, params, host_arch="x86", output_dir=args.deploy_dir, layout="NHWC")
        outs = mera.load_runtime_module(args.deploy_dir).set_input(x_nhwc).run().get_outputs()
        print(f"built {args.deploy_dir}/ (deploy.json, deploy.params, deploy.so) and ran it on the emulated IP")
    else:
        with mera.build_config(target=args.target, sim_log=False):
            runner = mera.compile(mod, params)
        outs = runner(x_nhwc)
    # outs: three (1, H, W, 255) maps, channels-last
    same_bytes = all(np.array_equal(o.transpose(0, 3, 1, 2), r) for o, r in zip(outs, ref))

    kw = dict(conf_threshold=args.conf, iou_threshold=args.iou, max_det=args.max_det)
    boxes, scores, classes = mm.yolo_decode(outs, layout="NHWC", **kw)
    tb, ts, tc = mm.yolo_decode(ref, **kw)
    same_boxes = np.array_equal(boxes, tb) and np.array_equal(scores, ts) and np.array_equal(classes, tc)
    print(f"{args.target}: outputs {'bit-exact with' if same_bytes else 'DIFFERENT from'} PyTorch fbgemm; "
          f"decoded boxes {'identical' if same_boxes else 'DIFFERENT'}")

    pix = to_image_coords(boxes, img)
    draw_boxes(img, pix, scores, classes).save(args.out)
    for b, s, c in zip(pix, scores, classes):
        print(f"  class {int(c):2d}  score {s:.3f}  box {b[0]:6.1f} {b[1]:6.1f} {b[2]:6.1f} {b[3]:6.1f}")
    print(f"saved {args.out} ({len(boxes)} boxes on a {img.width}x{img.height} image)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"boxes": pix.tolist(), "scores": scores.tolist(), "classes": classes.tolist(),
                       "net_boxes": boxes.tolist(), "same_bytes": same_bytes, "same_boxes": same_boxes}, f)
    return 0 if same_bytes and same_boxes else 1


if __name__ == "__main__":
    sys.exit(main())
