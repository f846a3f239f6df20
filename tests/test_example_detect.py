"""examples/detect.py runs as a user runs it (a fresh process in an empty folder): it writes a PNG with
the boxes drawn on the image, and the boxes mera decoded are the ones PyTorch's quantized model gives."""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

import mera.models as mm  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "examples", "detect.py")


def load_example():
    spec = importlib.util.spec_from_file_location("detect_example", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run(cwd, *args):
    env = dict(os.environ, PYTHONWARNINGS="ignore", PYTHONPATH=ROOT)
    r = subprocess.run([sys.executable, SCRIPT, *args], cwd=cwd, capture_output=True, text=True, timeout=900,
                       env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return r


def pytorch_boxes(x, conf=0.4, iou=0.45, max_det=10):
    """What PyTorch's own quantized detector finds on the same input, decoded with the same host code."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.backends.quantized.engine = "fbgemm"
        model = mm.yolov5n(quantize=True, seed=0)
        with torch.no_grad():
            ys = [t.numpy() for t in mm.trace(model, torch.from_numpy(x))(torch.from_numpy(x))]
    finally:
        torch.set_num_threads(threads)
    return mm.yolo_decode(ys, conf_threshold=conf, iou_threshold=iou, max_det=max_det)


@pytest.mark.parametrize("target", ["InterpreterHw", "Simulator", "IP"])
def test_detect_example_draws_pytorchs_boxes(tmp_path, target):
    ex = load_example()
    src = ex.synthetic_image(seed=5, size=(288, 224))
    src.save(tmp_path / "in.png")
    r = run(tmp_path, "--image", "in.png", "--target", target, "--json", "boxes.json")
    assert "no pretrained weights" in r.stdout
    assert f"{target}: outputs bit-exact with PyTorch fbgemm; decoded boxes identical" in r.stdout, r.stdout
    assert "saved detections.png" in r.stdout
    if target == "IP":  # a deploy directory, run through load_runtime_module
        assert {"deploy.json", "deploy.params", "deploy.so"} <= set(os.listdir(tmp_path / "detect_deploy"))
    out = np.asarray(Image.open(tmp_path / "detections.png").convert("RGB")).astype(int)
    inp = np.asarray(src.convert("RGB")).astype(int)
    assert out.shape == inp.shape
    got = json.loads((tmp_path / "boxes.json").read_text())
    assert got["same_bytes"] and got["same_boxes"]
    assert len(got["boxes"]) > 0

    # every box is drawn: its outline differs from the input image
    for x0, y0, x1, y1 in np.round(got["boxes"]).astype(int):
        outline = np.concatenate([out[y0:y1 + 1, x0] - inp[y0:y1 + 1, x0], out[y0:y1 + 1, x1] - inp[y0:y1 + 1, x1],
                                  out[y1, x0:x1 + 1] - inp[y1, x0:x1 + 1]])
        assert np.mean(np.any(outline != 0, axis=-1)) > 0.5, (x0, y0, x1, y1)
    # and nothing outside the boxes (and their labels above them) changed
    changed = np.any(out != inp, axis=-1)
    mask = np.zeros_like(changed)
    for x0, y0, x1, y1 in np.round(got["boxes"]).astype(int):
        # the label sits above the box (inside it at the top edge) and may run past its right edge
        mask[max(y0 - 14, 0):max(y1 + 3, 15), max(x0 - 3, 0):] = True
    assert changed.any() and not (changed & ~mask).any()

    # the decoded boxes are the ones PyTorch's quantized model gives (boxes in network-input pixels)
    boxes, scores, classes = pytorch_boxes(ex.preprocess(src))
    np.testing.assert_array_equal(np.asarray(got["net_boxes"], np.float32), boxes)
    np.testing.assert_array_equal(np.asarray(got["scores"], np.float32), scores)
    assert got["classes"] == classes.tolist()


def test_detect_example_on_its_own_picture_with_options(tmp_path):
    r = run(tmp_path, "--out", "o.png", "--max-det", "3", "--conf", "0.3")
    assert "saved o.png (3 boxes on a 320x240 image)" in r.stdout, r.stdout
    assert os.path.getsize(tmp_path / "o.png") > 0


def test_detect_example_reports_a_missing_image(tmp_path):
    env = dict(os.environ, PYTHONWARNINGS="ignore", PYTHONPATH=ROOT)
    r = subprocess.run([sys.executable, SCRIPT, "--image", "nope.png"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300, env=env)
    assert r.returncode != 0 and "nope.png" in r.stderr and "Traceback" not in r.stderr
