"""The `mera` command: compile, run, profile, info, platforms; as a subprocess
(`python -m mera`) and in process (`mera.cli.main`)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import mera
from mera.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def mera_cmd(*args, cwd):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, "-m", "mera", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env=env)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """A float digits-style CNN (8x8 grey images, 10 classes) as ONNX, calibration data and one input."""
    import torch
    import torch.nn as nn
    d = tmp_path_factory.mktemp("digits")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10)).eval()
    torch.onnx.export(model, (torch.zeros(1, 1, 8, 8),), str(d / "digits.onnx"), opset_version=17, dynamo=False,
                      input_names=["image"], output_names=["logits"])
    rng = np.random.default_rng(0)
    np.save(d / "calib.npy", rng.standard_normal((12, 1, 8, 8)).astype(np.float32))
    rng.standard_normal((1, 1, 8, 8)).astype(np.float32).tofile(d / "input0.bin")
    return d


COMPILE = ["digits.onnx", "--arch", "100", "--layout", "NCHW", "--input-shape", "1,1,8,8", "--calibrate", "calib.npy"]


@pytest.fixture(scope="module")
def sim_dir(digits):
    """The issue's command: the digits model compiled for the Simulator (as a subprocess)."""
    r = mera_cmd("compile", *COMPILE[:1], "-o", "d", "--target", "Simulator", *COMPILE[1:], cwd=digits)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "quantized 'main_graph' on 12 calibration batch(es)" in r.stdout
    return digits / "d"


def test_compile_run_profile_as_the_issue_says(digits, sim_dir, monkeypatch):
    # the reference: the same model on InterpreterHw, through the command in process
    monkeypatch.chdir(digits)
    assert main(["compile", "digits.onnx", "-o", "hw", "--target", "InterpreterHw", *COMPILE[1:], "-q"]) == 0
    assert main(["run", "hw", "--input", "input0.bin", "--save-outputs", "hw_out", "-q"]) == 0
    r = mera_cmd("run", "d", "--input", "input0.bin", "--reference", "hw_out/output_0.bin", "-n", "3", cwd=digits)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert "Running 3 times..." in lines
    assert any(ln.startswith("Took ") and "simulating the DNA" in ln for ln in lines)
    assert any(ln.startswith("Simulator total latency: ") for ln in lines)
    assert lines[-3:] == ["max abs diff: 0", "mean abs diff: 0", "correct ratio: 1"]

    r = mera_cmd("profile", "d", "--plot", "layers.png", "--trace", "trace.json", "--html", "report.html", cwd=digits)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "byte-identical to the one in deploy.params" in r.stdout
    assert "0_Conv.conv2d" in r.stdout and "MAC utilization" in r.stdout
    png = (digits / "layers.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20000
    trace = json.loads((digits / "trace.json").read_text())
    assert any(e.get("name") == "0_Conv.conv2d" for e in trace["traceEvents"])
    assert "<!DOCTYPE html>" in (digits / "report.html").read_text()


def test_profile_a_model_file_matches_the_deploy_dir(digits, sim_dir, capsys, monkeypatch):
    monkeypatch.chdir(digits)
    assert main(["profile", *COMPILE]) == 0
    from_model = capsys.readouterr().out
    assert main(["profile", "d"]) == 0
    from_dir = capsys.readouterr().out
    total = [ln for ln in from_model.splitlines() if ln.startswith("total ")]
    assert total and total == [ln for ln in from_dir.splitlines() if ln.startswith("total ")]


def test_info_and_platforms(digits, sim_dir, capsys):
    assert main(["info", str(sim_dir)]) == 0
    out = capsys.readouterr().out
    assert "target        Simulator" in out and "DNAF100L0003" in out and "runtime accepts it" in out
    assert "input         image: float32 (1, 1, 8, 8) NCHW" in out
    assert main(["info", str(sim_dir), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["machine"] == "x86_64" and d["loads"] is True and d["json"]["platform"] == "DNAF100L0003"
    so = (sim_dir / "deploy.so").read_bytes()
    import hashlib
    assert d["files"]["deploy.so"] == {"bytes": len(so), "sha256": hashlib.sha256(so).hexdigest()}
    assert main(["platforms"]) == 0
    out = capsys.readouterr().out
    assert all(p["name"] in out for p in mera.platforms()) and "SAKURA_1" in out
    assert main(["platforms", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == mera.platforms()


def test_info_of_a_corrupt_directory_says_the_runtime_refuses_it(digits, sim_dir, tmp_path, capsys):
    import shutil
    bad = tmp_path / "bad"
    shutil.copytree(sim_dir, bad)
    data = bytearray((bad / "deploy.params").read_bytes())
    data[100] ^= 0xFF
    (bad / "deploy.params").write_bytes(bytes(data))
    assert main(["info", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "the runtime refuses it here" in out and "checksum" in out
    for cut in (100, 20, 0):  # truncated: profile reads deploy.params itself and says what is wrong
        (bad / "deploy.params").write_bytes(bytes(data[:cut]))
        e = _error(capsys, ["profile", str(bad)])
        assert "deploy.params" in e and ("runs past the end" in e or "section count" in e or "no MERAPRM" in e), e


@pytest.mark.parametrize("cmd", [[], ["compile"], ["run"], ["profile"], ["info"], ["platforms"]])
def test_help(cmd, capsys):
    assert main([*cmd, "--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: mera")


def _error(capsys, argv, code=1):
    assert main(argv) == code
    lines = capsys.readouterr().err.splitlines()
    # one error line, last; before it only progress lines of a step that took over 2 s
    assert lines and lines[-1].startswith("mera ") and ": error: " in lines[-1], lines
    assert all(ln.startswith("mera: ") for ln in lines[:-1]) and "Traceback" not in "".join(lines), lines
    return lines[-1] + "\n"


def test_bad_input_is_one_line_and_a_nonzero_exit(digits, sim_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(digits)
    e = _error(capsys, ["compile", "missing.onnx", "-o", str(tmp_path / "x"), "--target", "Simulator"])
    assert e.startswith("mera compile: error: ") and "'missing.onnx' does not exist" in e
    e = _error(capsys, ["compile", "calib.npy", "-o", str(tmp_path / "x"), "--target", "Simulator"])
    assert "unknown model file type '.npy'" in e
    e = _error(capsys, ["compile", "digits.onnx", "-o", str(tmp_path / "x"), "--target", "Simulator",
                        "--input-shape", "1,a,8"])
    assert "--input-shape '1,a,8'" in e
    e = _error(capsys, ["compile", "digits.onnx", "-o", str(tmp_path / "x"), "--target", "Simulator",
                        "--layout", "NCHW", "--calibrate", "input0.bin"])
    assert "--calibrate" in e and "input0.bin" in e
    e = _error(capsys, ["compile", "digits.onnx", "-o", str(tmp_path / "x"), "--target", "Simulator",
                        "--arch", "999"])
    assert "unknown platform" in e
    for name in ("garbage.onnx", "garbage.pt2"):
        (tmp_path / name).write_bytes(b"garbage")
        e = _error(capsys, ["compile", str(tmp_path / name), "-o", str(tmp_path / "x"), "--target", "Simulator",
                            "--input-shape", "1,1,8,8"])
        assert name in e
    e = _error(capsys, ["compile", "digits.onnx", "--target", "Nowhere", "-o", "x"], code=2)
    assert "invalid choice: 'Nowhere'" in e
    (tmp_path / "short.bin").write_bytes(b"\0" * 10)
    e = _error(capsys, ["run", "d", "--input", str(tmp_path / "short.bin")])
    assert "has 10 bytes, expected 256" in e
    e = _error(capsys, ["run", str(tmp_path)])
    assert "does not exist: not a deploy directory" in e
    e = _error(capsys, ["info", str(tmp_path)])
    assert "deploy.json" in e
    e = _error(capsys, ["profile", "d", "--plot", str(tmp_path / "no" / "such" / "dir.png")])
    assert "cannot write the plot" in e
    e = _error(capsys, ["profile", "digits.onnx", "--target", "IP"])
    assert "--target IP has no timing model" in e


def test_profile_refuses_an_interpreter_deploy_dir(digits, capsys, monkeypatch):
    monkeypatch.chdir(digits)
    assert main(["compile", "digits.onnx", "-o", "hw2", "--target", "InterpreterHw", *COMPILE[1:], "-q"]) == 0
    capsys.readouterr()
    e = _error(capsys, ["profile", "hw2"])
    assert "built for InterpreterHw, which runs no DNA program" in e


def test_quiet_compile_prints_nothing_and_the_ip_runs(digits, capsys, monkeypatch):
    monkeypatch.chdir(digits)
    assert main(["compile", "digits.onnx", "-o", "q", "--target", "IP", *COMPILE[1:], "-q"]) == 0
    assert capsys.readouterr().out == ""
    e = _error(capsys, ["run", "q"])
    assert "input0.bin' does not exist (give --input FILE)" in e
    assert main(["run", "q", "--input", "input0.bin"]) == 0
    out = capsys.readouterr().out
    assert "emulating the IP" in out and "Device latency: " in out and "cycles on DNAF100L0003" in out


def test_torchscript_and_exported_program_files(digits, tmp_path, capsys, monkeypatch):
    import torch
    import torch.nn as nn
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(256, 3)).eval()
    x = torch.zeros(1, 1, 8, 8)
    torch.jit.save(torch.jit.trace(model, x), str(tmp_path / "m.pt"))
    torch.export.save(torch.export.export(model, (x,)), str(tmp_path / "m.pt2"))
    monkeypatch.chdir(tmp_path)
    inp = np.random.default_rng(2).standard_normal((1, 1, 8, 8)).astype(np.float32)
    inp.tofile("input0.bin")
    with torch.no_grad():
        want = model(torch.from_numpy(inp)).numpy()
    for f in ("m.pt", "m.pt2"):
        out = f"{f}_deploy"
        assert main(["compile", f, "-o", out, "--target", "Interpreter", "--layout", "NCHW",
                     "--input-shape", "1,1,8,8", "-q"]) == 0
        assert main(["run", out, "--input", "input0.bin", "--save-outputs", f"{f}_out", "-q"]) == 0
        got = np.fromfile(f"{f}_out/output_0.bin", np.float32).reshape(want.shape)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    capsys.readouterr()
    e = _error(capsys, ["compile", "m.pt", "-o", "x", "--target", "Interpreter"])
    assert "needs --input-shape" in e
    # a float model for a DNA target: it runs on the host, and the command says so
    assert main(["profile", "m.pt", "--layout", "NCHW", "--input-shape", "1,1,8,8", "--arch", "200"]) == 0
    out = capsys.readouterr().out
    assert "is a float model" in out and "0 on the DNA" in out


def test_tflite_goes_to_the_tflite_frontend_by_name(digits, tmp_path, capsys, monkeypatch):
    import mera.frontend as fe
    (tmp_path / "m.tflite").write_bytes(b"TFL3 not a real model")
    monkeypatch.delattr(fe, "from_tflite", raising=False)
    e = _error(capsys, ["compile", str(tmp_path / "m.tflite"), "-o", str(tmp_path / "x"), "--target", "Simulator"])
    assert "no TFLite frontend (mera.frontend.from_tflite)" in e
    calls = []

    def fake_from_tflite(path, shape_dict):
        calls.append((path, shape_dict))
        raise mera.FormatError(f"'{path}': not a TFLite flatbuffer")
    monkeypatch.setattr(fe, "from_tflite", fake_from_tflite, raising=False)
    e = _error(capsys, ["compile", str(tmp_path / "m.tflite"), "-o", str(tmp_path / "x"), "--target", "Simulator",
                        "--input-shape", "x:1,8,8,1"])
    assert calls == [(str(tmp_path / "m.tflite"), {"x": (1, 8, 8, 1)})] and "not a TFLite flatbuffer" in e


def test_profile_of_an_ip_directory_and_the_console_script(digits, capsys, monkeypatch):
    monkeypatch.chdir(digits)
    assert main(["compile", "digits.onnx", "-o", "ip", "--target", "IP", *COMPILE[1:], "-q"]) == 0
    assert main(["profile", "ip", "--html", "ip.html"]) == 0
    out = capsys.readouterr().out
    assert "(target IP, platform DNAF100L0003)" in out and "byte-identical" in out
    assert "byte-identical" in (digits / "ip.html").read_text()
    # pyproject's console script resolves to main
    import importlib
    import re
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        scripts = f.read().split("[project.scripts]", 1)[1]
    module, func = re.search(r'^mera = "([\w.]+):(\w+)"$', scripts, re.M).groups()
    assert getattr(importlib.import_module(module), func) is main
    r = mera_cmd("--version", cwd=digits)
    assert r.returncode == 0 and r.stdout.strip() == f"mera {mera.__version__}"
