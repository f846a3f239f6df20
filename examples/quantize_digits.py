"""Post-training quantization with mera, on real data.

Trains a small float CNN on scikit-learn's digits (8x8 images, a few seconds
on a CPU), exports it to ONNX, quantizes it with mera.Quantizer on 200
calibration images, prints the quality report and the test accuracy of the
float and int8 models, and builds the int8 model for the IP target (DNA-F100)
into digits_deploy/ with input0.bin and ref_result_0.bin, so that

    ./apps/inference/build/inference digits_deploy

checks the deployed model as the ResNet-50 example does.

    python examples/quantize_digits.py

It needs the `examples` extra (pip install -e ".[examples]": torch, onnx,
scikit-learn) and writes digits.onnx and digits_deploy/ into the current
folder (both git-ignored at the repository's root).
"""

import os

import numpy as np
import torch
import torch.nn as nn
from sklearn.datasets import load_digits

import mera

torch.manual_seed(0)

# -- data: 1000 images to train, 200 to calibrate, 597 to test -------------------------
digits = load_digits()
images = (digits.images.astype(np.float32) / 16.0 - 0.5) / 0.5
labels = digits.target.astype(np.int64)
order = np.random.default_rng(0).permutation(len(images))
images, labels = images[order], labels[order]
train, calib, test = slice(0, 1000), slice(1000, 1200), slice(1200, None)

# -- a float model, trained here -----------------------------------------------------------
model = nn.Sequential(
    nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
    nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
    nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
opt = torch.optim.Adam(model.parameters(), 3e-3)
x_train, y_train = torch.from_numpy(images[train][:, None]), torch.from_numpy(labels[train])
for epoch in range(15):
    model.train()
    perm = torch.randperm(1000)
    for i in range(0, 1000, 32):
        idx = perm[i:i + 32]
        opt.zero_grad()
        nn.functional.cross_entropy(model(x_train[idx]), y_train[idx]).backward()
        opt.step()
model.eval()
torch.onnx.export(model, (torch.zeros(1, 1, 8, 8),), "digits.onnx", opset_version=17, dynamo=False,
                  input_names=["image"], output_names=["logits"])
print("exported digits.onnx")


def nhwc(img):
    return np.ascontiguousarray(img[None, :, :, None])


# -- quantize with mera ---------------------------------------------------------------------
quantizer = mera.Quantizer("digits.onnx", layout="NHWC")
quantizer.calibrate([nhwc(img) for img in images[calib]])
mod, params = quantizer.quantize()
print(quantizer.measure_quantization_quality([nhwc(img) for img in images[test][:50]]))

float_runner = mera.compile(quantizer.float_mod, quantizer.float_params, target="Interpreter")
int8_runner = mera.compile(mod, params, target="InterpreterHw")
for name, runner in (("float", float_runner), ("int8 ", int8_runner)):
    pred = np.array([runner(nhwc(img))[0].argmax() for img in images[test]])
    print(f"{name} test accuracy: {(pred == labels[test]).mean():.4f} ({len(pred)} images)")

# -- build for the accelerator, with a reference the inference app checks against ----------
out = "digits_deploy"
os.makedirs(out, exist_ok=True)
x = nhwc(images[test][0])
x.tofile(os.path.join(out, "input0.bin"))
int8_runner(x)[0].astype(np.float32).tofile(os.path.join(out, "ref_result_0.bin"))
with mera.build_config(target="IP", arch=100):
    mera.build(mod, params, output_dir=out, host_arch="x86", layout="NHWC")
