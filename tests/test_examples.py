"""The examples run as users run them: a fresh process in an empty folder, then the C
inference app on the deploy directory they wrote, as the original docs did."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    build = tmp_path_factory.mktemp("app")
    for cmd in (["cmake", "-S", os.path.join(ROOT, "apps", "inference"), "-B", str(build)],
                ["cmake", "--build", str(build)]):
        r = subprocess.run(cmd, capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
    return str(build / "inference")


def run_example(name, cwd):
    script = os.path.join(ROOT, "examples", name)
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    r = subprocess.run([sys.executable, script], cwd=cwd, capture_output=True, text=True, timeout=900, env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return r


def check_deploy_dir(out, app, n_in, n_out):
    inp = np.fromfile(out / "input0.bin", np.float32)
    ref = np.fromfile(out / "ref_result_0.bin", np.float32)
    assert inp.size == n_in and ref.size == n_out
    assert np.isfinite(ref).all() and np.unique(ref).size >= min(10, n_out)  # real logits, not a constant
    assert {"deploy.so", "deploy.params", "deploy.json"} <= set(os.listdir(out))
    r = subprocess.run([app, str(out), "-n", "2"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"^Took \d+\.\d\d msec\. \(host emulation of the IP; device estimate below\)$", r.stdout,
                     re.M), r.stdout
    assert re.search(r"^Device latency: ", r.stdout, re.M), r.stdout
    assert "max abs diff: 0\nmean abs diff: 0\ncorrect ratio: 1\n" in r.stdout, r.stdout
    return r


def test_resnet50_example_builds_and_the_app_runs_it_bit_exact(tmp_path, app):
    r = run_example("resnet50.py", tmp_path)
    assert "Elapsed" in r.stdout
    assert re.search(r"^Simulator total latency: \d+\.\d+ us$", r.stdout, re.M), r.stdout  # the IP build's log
    check_deploy_dir(tmp_path / "resnet50_deploy", app, 224 * 224 * 3, 1000)


def test_mobilenet_v2_example_arch_200(tmp_path, app):
    r = run_example("mobilenet_v2.py", tmp_path)
    assert "for IP on DNAF200L0003" in r.stdout, r.stdout
    r = check_deploy_dir(tmp_path / "mobilenetv2_deploy", app, 224 * 224 * 3, 1000)
    assert "cycles at 300 MHz on DNAF200L0003" in r.stdout


def test_quantize_digits_example(tmp_path, app):
    """Float model trained on real data -> ONNX -> mera.Quantizer -> IP build, checked by the app."""
    r = run_example("quantize_digits.py", tmp_path)
    acc = dict(re.findall(r"^(float|int8) *test accuracy: (\d\.\d+)", r.stdout, re.M))
    assert set(acc) == {"float", "int8"}, r.stdout
    assert float(acc["int8"]) >= float(acc["float"]) - 0.01, r.stdout
    assert re.search(r"output \S+: PSNR \d+\.\d+ dB \((very good|good)\)", r.stdout), r.stdout
    check_deploy_dir(tmp_path / "digits_deploy", app, 8 * 8, 10)


def test_dump_ir_example(tmp_path):
    """examples/dump_ir.py (docs/architecture.md shows its ResNet-50 output), on MobileNetV2 for time."""
    script = os.path.join(ROOT, "examples", "dump_ir.py")
    r = subprocess.run([sys.executable, script, "mobilenet_v2", "dumps"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=900, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    files = sorted(os.listdir(tmp_path / "dumps"))
    assert files == ["00-input.ir", "01-fold_bn.ir", "02-fold_const.ir", "03-layout.ir", "04-subpixel.ir",
                     "05-trim_taps.ir", "07-dce.ir", "08-partition.txt", "09-schedule.txt", "10-program.txt"], files
    layout = (tmp_path / "dumps" / "03-layout.ir").read_text()
    assert 'layout="NCHW"' not in layout and "= transpose(" in layout
    assert "Simulator on DNA-F100" in r.stdout
