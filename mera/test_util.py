"""MERA's test utilities: import a traced model, run it on the active target,
compare with reference results.

The log lines are those of the original docs (``max abs diff:``, ``mean abs diff:``,
``correct ratio:``), so scripts and habits that read them keep working.
"""

from __future__ import annotations

import time
from typing import Any, List, Optional, Sequence, Union

import numpy as np

from . import _core
from .config import require_build_config
from .errors import RuntimeInputError, UnsupportedError
from .runner import compile as _compile


def verify_output(ref_result: np.ndarray, result: np.ndarray, tol: float = 1e-5, quantized: bool = True) -> float:
    """Print MERA's comparison of ``result`` against ``ref_result``; returns the correct ratio.

    With ``quantized=False`` it asserts closeness within ``tol`` instead.
    """
    ref = np.asarray(ref_result)
    res = np.asarray(result)
    if ref.shape != res.shape and ref.size == res.size:
        ref = ref.reshape(res.shape)  # reference files are flat
    if ref.shape != res.shape:
        raise RuntimeInputError(f"reference result has shape {ref.shape} but the output has shape {res.shape}")
    if not quantized:
        np.testing.assert_allclose(res, ref, rtol=tol, atol=tol)
        return float(np.mean(res == ref))
    diff = np.abs(res.astype(np.float64) - ref.astype(np.float64))
    ratio = float(np.sum(res == ref) / max(1, res.size))
    print("max abs diff:", diff.max() if diff.size else 0.0)
    print("mean abs diff:", diff.mean() if diff.size else 0.0)
    print("correct ratio:", ratio)
    if res.ndim == 2 and res.shape[0] >= 1 and res.shape[1] > 5:
        print("Ref top5 label:", np.argsort(ref[0])[::-1][:5])
        print("EC top5 label:", np.argsort(res[0])[::-1][:5])
    return ratio


def run_mera_backend(script_module: Any, inp_np: Union[np.ndarray, Sequence[np.ndarray]],
                     ref_results: Optional[Union[np.ndarray, Sequence[np.ndarray]]] = None, layout: str = "NCHW",
                     output_dir: str = "_out", aux_config: Optional[dict] = None) -> List[np.ndarray]:
    """Import ``script_module``, build it for the active target, run it on ``inp_np``.

    As MERA's: the input is named ``input0`` (``input1``... for a list of
    inputs) and ``inp_np``'s shape is in ``layout``. Returns the list of
    output arrays; with ``ref_results`` it also prints max abs diff, mean abs
    diff and correct ratio per output.

    On the ``IP`` target it does what MERA did: ``mera.build`` (host x86)
    into ``output_dir`` (deploy.so, deploy.params, deploy.json; nothing else
    there is touched), then runs the directory through
    :func:`mera.load_runtime_module` (the device is the software-emulated
    IP). Interpreter, InterpreterHw and Simulator run in process, with the
    same bytes a deploy directory gives and nothing written (the Simulator
    also prints ``Simulator total latency: ... us``). ``aux_config`` takes
    MERA's keys.
    """
    from .frontend import from_pytorch

    cfg = require_build_config("run_mera_backend")
    if aux_config:
        unknown = sorted(set(aux_config) - {"weight_layout", "prequantize_input", "with_clip_pattern",
                                            "with_fc_pattern", "insert_downsample"})
        if unknown:
            raise UnsupportedError(f"aux_config: unknown key(s) {', '.join(map(repr, unknown))}")
    inputs = list(inp_np) if isinstance(inp_np, (list, tuple)) else [inp_np]
    inputs = [np.ascontiguousarray(np.asarray(x)) for x in inputs]
    shapes = [(f"input{i}", (x.shape, str(x.dtype))) for i, x in enumerate(inputs)]
    mod, params = from_pytorch(script_module, shapes, layout=layout)
    if _core.backend_info(cfg.target.value)["runs_through_deploy"]:
        from .build import build
        from .deploy_runtime import load_runtime_module
        build(mod, params, host_arch="x86", output_dir=output_dir, layout=layout, aux_config=aux_config)
        runner = load_runtime_module(output_dir)
    else:
        runner = _compile(mod, params)
    t1 = time.time()
    outputs = runner.set_input(inputs).run().get_outputs()
    print("Elapsed %f seconds" % (time.time() - t1))
    if ref_results is not None:
        refs = list(ref_results) if isinstance(ref_results, (list, tuple)) else [ref_results]
        for ref, out in zip(refs, outputs):
            verify_output(ref, out)
    return outputs


#: MERA's name before 2021 (``ec.test_util.run_ec_backend``): the same function.
run_ec_backend = run_mera_backend

__all__ = ["run_mera_backend", "run_ec_backend", "verify_output"]
