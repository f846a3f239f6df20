"""examples/segment.py as a user runs it (a fresh process in an empty folder): it saves a palette-PNG
mask of the input's size and an overlay, and the mask is the argmax of PyTorch's quantized model,
checked here independently of the script's own comparison."""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import torch
from PIL import Image

import mera.models as mm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "examples", "segment.py")


def run_script(cwd, *args):
    env = dict(os.environ, PYTHONWARNINGS="ignore", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, SCRIPT, *args], cwd=cwd, capture_output=True, text=True, timeout=900,
                       env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return r.stdout


def example_module():
    spec = importlib.util.spec_from_file_location("segment_example", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # defines functions only: main() runs under __main__
    return mod


def test_segment_an_image_file_matches_pytorch(tmp_path):
    # a non-square image: the network runs at 128x85 (longer side 128)
    rng = np.random.default_rng(3)
    pixels = (rng.random((100, 150, 3)) * 64 + np.linspace(0, 190, 150)[None, :, None]).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "photo.png")
    out = run_script(tmp_path, "--image", "photo.png", "--out", "res")
    mask_png, overlay_png = tmp_path / "res" / "mask.png", tmp_path / "res" / "overlay.png"
    assert f"saved {os.path.join('res', 'mask.png')}" in out and f"saved {os.path.join('res', 'overlay.png')}" in out
    mask_img = Image.open(mask_png)
    assert mask_img.mode == "P" and mask_img.size == (128, 85)
    assert Image.open(overlay_png).size == (128, 85)
    mask = np.asarray(mask_img)
    assert mask.max() < 21

    # PyTorch's quantized model on the same input, built as the script builds it (single-threaded)
    ex = example_module()
    x = ex.network_input(ex.load_image(str(tmp_path / "photo.png"), 128, 0))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = mm.TASK_MODELS["lraspp_mobilenet_v3_large"](quantize=True, seed=0)
        with torch.no_grad():
            logits = model(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))))
    finally:
        torch.set_num_threads(threads)
    ref = logits[0].argmax(0).numpy()
    np.testing.assert_array_equal(mask, ref)
    assert len(np.unique(mask)) > 1  # a mask, not a constant
    assert "mask equals PyTorch's quantized model's: yes (10880 of 10880 pixels)" in out


def test_segment_synthetic_scene_on_the_simulator(tmp_path):
    out = run_script(tmp_path, "--target", "Simulator", "--arch", "200")
    mask = Image.open(tmp_path / "segment_out" / "mask.png")
    assert mask.mode == "P" and mask.size == (128, 128)
    assert mask.getpalette()[3:6] == [128, 0, 0]  # VOC colour of class 1
    assert Image.open(tmp_path / "segment_out" / "overlay.png").size == (128, 128)
    assert "on Simulator (arch 200)" in out and "estimated DNA latency:" in out
    assert "mask equals PyTorch's quantized model's: yes (16384 of 16384 pixels)" in out


def test_bad_arguments_are_clear_errors(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    env = dict(os.environ, PYTHONWARNINGS="ignore", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for args, message in ((["--image", "missing.png"], "--image missing.png: cannot read it as an image"),
                          (["--image", "notes.txt"], "--image notes.txt: cannot read it as an image"),
                          (["--size", "8"], "--size 8: must be 32 to 1024 pixels")):
        r = subprocess.run([sys.executable, SCRIPT, *args], cwd=tmp_path, capture_output=True, text=True,
                           timeout=300, env=env)
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert not (tmp_path / "segment_out").exists()
