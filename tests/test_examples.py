"""The examples run as users run them: a fresh process in an empty folder."""

import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_resnet50_example_writes_the_docs_reference_files(tmp_path):
    script = os.path.join(ROOT, "examples", "resnet50.py")
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    r = subprocess.run([sys.executable, script], cwd=tmp_path, capture_output=True, text=True, timeout=900, env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    out = tmp_path / "resnet50_deploy"
    inp = np.fromfile(out / "input0.bin", np.float32)
    ref = np.fromfile(out / "ref_result_0.bin", np.float32)
    assert inp.size == 224 * 224 * 3 and ref.size == 1000
    assert np.isfinite(ref).all() and np.unique(ref).size > 10  # real logits, not a constant
    assert "Elapsed" in r.stdout
