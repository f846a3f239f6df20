# segment: semantic segmentation with a quantized LR-ASPP (or DeepLabV3) compiled by mera.
#
#   python examples/segment.py [--image PATH] [--model NAME] [--target T] [--arch A] [--size S] [--out DIR]
#
# Builds mera.models' LR-ASPP (dilated MobileNetV3-Large, 21 PASCAL VOC classes), quantizes it
# with fbgemm post-training quantization, traces it at the image's size, imports it with
# layout="NHWC", compiles it with mera (InterpreterHw by default; Simulator or IP selectable), runs
# it on the image, takes the per-pixel argmax and saves
#   DIR/mask.png     the class of each pixel, a palette PNG (PASCAL VOC colours; index = class)
#   DIR/overlay.png  the image with the mask's colours blended over it
# and checks that mera's mask is PyTorch's (the traced fbgemm model's), pixel for pixel.
#
# Honest note: there are no pretrained weights or datasets here (no model hub), so the weights
# are seeded random ones and calibration runs on seeded synthetic images (mera.models.
# calibration_data). The mask shows the flow and mera's exactness, not a meaningful segmentation:
# with trained weights (load_state_dict, torchvision's names) the same script segments for real.
#
# Without --image it draws a synthetic scene (shapes on a gradient). An image is scaled so its
# longer side is --size pixels (default 128); the network is fully convolutional, so any size works.
import argparse
import os
import time

import numpy as np
import torch
from PIL import Image, ImageDraw

import mera
import mera.models as mm
from mera import relay

MEAN, STD = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)


def voc_palette(n=256):
    """The PASCAL VOC colour map: class i's colour from the bits of i, spread over R, G, B."""
    pal = np.zeros((n, 3), np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for k in range(8):
            r |= ((c >> 0) & 1) << (7 - k)
            g |= ((c >> 1) & 1) << (7 - k)
            b |= ((c >> 2) & 1) << (7 - k)
            c >>= 3
        pal[i] = (r, g, b)
    return pal


def synthetic_scene(w, h, seed):
    """A gradient background with a few random ellipses and rectangles."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    bg = np.stack([xx / w, yy / h, 1 - xx / w], axis=-1) * 255
    img = Image.fromarray(bg.astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x0, y0 = rng.integers(0, w - 8), rng.integers(0, h - 8)
        x1, y1 = x0 + rng.integers(8, w // 2), y0 + rng.integers(8, h // 2)
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x1, y1], fill=colour)
    return img


def load_image(path, size, seed):
    """The image at `path` scaled so its longer side is `size`, or (no path) a synthetic scene."""
    if not path:
        return synthetic_scene(size, size, seed)
    img = Image.open(path).convert("RGB")
    scale = size / max(img.size)
    return img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BILINEAR)


def network_input(img):
    """(1, H, W, 3) float32, normalised with ImageNet's mean and std, as torchvision's models expect."""
    return ((np.asarray(img, np.float32) / 255 - MEAN) / STD)[None]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--image", help="image file (default: a synthetic scene)")
    ap.add_argument("--model", default="lraspp_mobilenet_v3_large",
                    choices=[n for n in mm.TASK_MODELS if n.startswith(("lraspp", "deeplabv3"))])
    ap.add_argument("--target", default="InterpreterHw", choices=["InterpreterHw", "Simulator", "IP"])
    ap.add_argument("--arch", type=int, default=100, help="DNA platform for Simulator/IP (100 or 200)")
    ap.add_argument("--size", type=int, default=128, help="longer side of the network input, pixels")
    ap.add_argument("--seed", type=int, default=0, help="weights and calibration seed")
    ap.add_argument("--out", default="segment_out", help="folder for mask.png and overlay.png")
    args = ap.parse_args()
    if not 32 <= args.size <= 1024:
        ap.error(f"--size {args.size}: must be 32 to 1024 pixels")
    t0 = time.time()
    torch.backends.quantized.engine = "fbgemm"
    torch.set_num_threads(1)  # mera's contract is PyTorch's single-threaded arithmetic (and it is faster here)

    try:
        img = load_image(args.image, args.size, args.seed)
    except (OSError, ValueError) as e:  # missing, unreadable or not an image (PIL's UnidentifiedImageError)
        ap.error(f"--image {args.image}: cannot read it as an image: {e}")
    x = network_input(img)  # NHWC
    x_nchw = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))

    # seeded random weights, fbgemm PTQ on seeded synthetic calibration images, traced at this size
    model = mm.TASK_MODELS[args.model](quantize=True, seed=args.seed)
    traced = mm.trace(model, x_nchw)
    mod, params = relay.frontend.from_pytorch(traced, [("input0", x.shape)], layout="NHWC")
    with mera.build_config(target=args.target, arch=args.arch, sim_log=False):
        runner = mera.compile(mod, params)
    logits = runner(x)[0]  # (1, H, W, classes)
    mask = logits[0].argmax(-1).astype(np.uint8)

    with torch.no_grad():
        ref = traced(x_nchw)[0].argmax(0).numpy().astype(np.uint8)
    same = int((mask == ref).sum())

    os.makedirs(args.out, exist_ok=True)
    pal = voc_palette()
    mask_img = Image.fromarray(mask, mode="P")
    mask_img.putpalette(pal.flatten().tolist())
    mask_path = os.path.join(args.out, "mask.png")
    mask_img.save(mask_path)
    overlay = (0.5 * np.asarray(img, np.float32) + 0.5 * pal[mask].astype(np.float32)).astype(np.uint8)
    overlay_path = os.path.join(args.out, "overlay.png")
    Image.fromarray(overlay).save(overlay_path)

    classes, counts = np.unique(mask, return_counts=True)
    print(f"{args.model} (seeded random weights, fbgemm PTQ on synthetic data), {mask.shape[1]}x{mask.shape[0]} "
          f"input, on {args.target}" + (f" (arch {args.arch})" if args.target != "InterpreterHw" else ""))
    if args.target == "Simulator":
        print(f"estimated DNA latency: {runner.timing()['total_us'] / 1000:.3f} ms")
    print("classes in the mask: " + ", ".join(f"{c}: {n} px" for c, n in zip(classes, counts)))
    print(f"mask equals PyTorch's quantized model's: {'yes' if same == mask.size else 'NO'} "
          f"({same} of {mask.size} pixels)")
    print(f"saved {mask_path} (palette PNG, {mask.shape[1]}x{mask.shape[0]}, index = class)")
    print(f"saved {overlay_path}")
    print(f"took {time.time() - t0:.1f} s")
    return 0 if same == mask.size else 1


if __name__ == "__main__":
    raise SystemExit(main())
