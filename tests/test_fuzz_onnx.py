"""A short run of the ONNX fuzz target (fuzz/onnx_atheris.py): mutated seed models import as
success or a MeraError, never another exception. The long runs are described in docs/frontends.md."""

import os
import shutil
import subprocess
import sys

import pytest

onnx = pytest.importorskip("onnx")

import mera  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HARNESS = os.path.join(ROOT, "fuzz", "onnx_atheris.py")
CORPUS = os.path.join(ROOT, "fuzz", "corpus", "onnx")
sys.path.insert(0, os.path.join(ROOT, "fuzz"))
import onnx_atheris  # noqa: E402


def run_harness(*args, cwd):
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(mera.__file__)))
    return subprocess.run([sys.executable, HARNESS, *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=900)


def test_seed_corpus_imports():
    """Every seed is a valid model that imports (the mutations start from real coverage)."""
    seeds = onnx_atheris.load_corpus([CORPUS])
    assert len(seeds) >= 5
    assert all(onnx_atheris.check_one(s) == "ok/ok" for s in seeds)


def test_harness_reports_an_escape(monkeypatch):
    """An exception that is not a MeraError propagates out of the target, and the loop reports it."""
    def escapes(*a, **k):
        raise TypeError("escaped")
    monkeypatch.setattr(mera.frontend, "from_onnx", escapes)
    with pytest.raises(TypeError, match="escaped"):
        onnx_atheris.check_one(onnx_atheris.load_corpus([CORPUS])[0])


def test_random_mutation_loop(tmp_path):
    r = run_harness("--random", "--runs", "400", "--seed", "3", CORPUS, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "400 inputs (seed 3), no finding" in r.stdout
    assert os.listdir(tmp_path) == []  # no crash file


def test_atheris_run(tmp_path):
    """Coverage-guided: libFuzzer through atheris, a fixed seed and number of runs."""
    assert onnx_atheris._have_atheris(), "atheris is not installed: pip install 'mera[fuzz]'"
    corpus = tmp_path / "corpus"
    shutil.copytree(CORPUS, corpus)
    r = run_harness(str(corpus), "-runs=1500", "-seed=5", "-max_len=8192", "-rss_limit_mb=4096", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-4000:]
    assert "Done 1500 runs" in r.stderr
    assert not [p for p in os.listdir(tmp_path) if p.startswith("crash-")]
