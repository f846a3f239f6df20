"""Is mera bit-exact with every PyTorch build it can reach? One virtualenv per build.

    python benchmarks/torch_versions.py                      # every build, every model
    python benchmarks/torch_versions.py --models resnet50 mobilenet_v2 --builds torch-2.14.1

For each build (a pip requirement set: torch and the torchvision that goes with
it) a virtualenv is made under --venv-dir, or reused when it already has that
torch. In it a worker (this file with --worker) imports mera from this source
tree, probes the build's rounding (mera/frontend/_torch_numerics.py) and, for
each model (the zoo of mera.models, and torchvision's quantizable models with
random seeded weights), quantizes it with the fbgemm recipe, traces it, and
compares the logits of InterpreterHw in NHWC and in NCHW with PyTorch's, and
the Simulator's (NHWC) with InterpreterHw's. The table gives the fraction of
identical logits; 1.0000 everywhere is the contract (docs/numerics.md).

torchvision's quantizable models are only Python code: where its C extension
does not load beside a CPU torch (a CUDA torchvision wheel), nothing here needs it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import warnings
from typing import Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

#: Builds reachable on this machine without a multi-GB download: the pinned CPU
#: wheel and the CUDA build of 2.14.1 that lies on the local disk.
BUILDS: Dict[str, List[str]] = {
    "torch-2.13.0+cpu": ["torch==2.13.0+cpu", "torchvision==0.28.0", "numpy"],
    "torch-2.14.1": ["torch==2.14.1", "torchvision==0.29.1", "numpy"],
}

ZOO = ["resnet18", "resnet50", "resnext50_32x4d", "mobilenet_v2", "mobilenet_v3_large", "shufflenet_v2_x1_0",
       "googlenet", "inception_v3"]
#: torchvision.models.quantization builders (quantize=False: the float quantizable model, then our PTQ)
TORCHVISION = {"tv.resnet50": "resnet50", "tv.mobilenet_v2": "mobilenet_v2",
               "tv.mobilenet_v3_large": "mobilenet_v3_large", "tv.shufflenet_v2_x1_0": "shufflenet_v2_x1_0",
               "tv.googlenet": "googlenet", "tv.inception_v3": "inception_v3",
               "tv.resnext101_32x8d": "resnext101_32x8d"}


# ---- the worker: runs inside one build's virtualenv ---------------------------------

def _torchvision_models_only():
    """torchvision.models.quantization without torchvision/__init__.py, which loads the C extension:
    a CUDA torchvision wheel's extension does not load beside a CPU torch ('operator torchvision::nms
    does not exist'), and the model code needs none of it."""
    import importlib.util
    import types
    spec = importlib.util.find_spec("torchvision")
    pkg = types.ModuleType("torchvision")
    pkg.__path__ = list(spec.submodule_search_locations)
    pkg.__spec__ = spec
    sys.modules["torchvision"] = pkg
    from torchvision.models import quantization
    return quantization


def _torchvision_model(name: str, seed: int):
    import torch
    try:
        from torchvision.models import quantization as tvq
    except (RuntimeError, ImportError, OSError):
        for k in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
            del sys.modules[k]
        tvq = _torchvision_models_only()
    torch.manual_seed(seed)
    kw = {"weights": None, "quantize": False}
    if name in ("googlenet", "inception_v3"):
        kw.update(aux_logits=False, init_weights=True)
    return getattr(tvq, name)(**kw).eval()


def _compare(name: str, seed: int) -> Dict[str, float]:
    import numpy as np
    import torch

    import mera
    import mera.models as mm

    torch.set_num_threads(1)  # the contract is the single-threaded result (docs/numerics.md section 10)
    if name.startswith("tv."):
        model = _torchvision_model(TORCHVISION[name], seed)
        hw = 299 if "inception" in name else 224
        gen = torch.Generator().manual_seed(seed + 1)
        calib = [torch.randn(1, 3, hw, hw, generator=gen) for _ in range(2)]
    else:
        model = mm.MODELS[name](seed=seed)
        calib = mm.calibration_data(name, n=2, seed=seed + 1)
    mm.quantize_ptq(model, calib)
    x = calib[0]
    traced = mm.trace(model, x)
    with torch.no_grad():
        ref = traced(x).numpy()
    xn = x.numpy()
    out = {}
    hw_nhwc = None
    for layout in ("NHWC", "NCHW"):
        xin = np.ascontiguousarray(xn.transpose(0, 2, 3, 1)) if layout == "NHWC" else xn
        mod, params = mera.frontend.from_pytorch(traced, [("input0", xin.shape)], layout=layout)
        got = mera.compile(mod, params, target="InterpreterHw")(xin)[0]
        out[f"hw_{layout.lower()}"] = float(np.mean(got == ref))
        if layout == "NHWC":
            hw_nhwc = got
            sim = mera.compile(mod, params, target="Simulator")(xin)[0]
            out["sim_eq_hw"] = float(np.mean(sim == hw_nhwc))
            out["rounding"] = mod.rounding
    return out


def worker(models: List[str], seed: int) -> None:
    warnings.simplefilter("ignore")
    import torch
    sys.path.insert(0, ROOT)
    from mera.frontend._torch_numerics import probe_rounding
    print(json.dumps({"torch": torch.__version__, "rounding": probe_rounding()}), flush=True)
    for name in models:
        try:
            r = _compare(name, seed)
        except Exception as e:  # a model that fails is a row of the table, not the end of the run
            r = {"error": f"{type(e).__name__}: {e}"[:200]}
        print(json.dumps({"model": name, **r}), flush=True)


# ---- the driver ---------------------------------------------------------------------

def venv_python(venv_dir: str, build: str) -> str:
    """The python of build's virtualenv, made (or completed) with pip when needed."""
    path = os.path.join(venv_dir, build)
    py = os.path.join(path, "bin", "python")
    want = BUILDS[build][0].split("==")[1]
    if os.path.exists(py):
        have = subprocess.run([py, "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True)
        if have.returncode == 0 and have.stdout.strip().startswith(want.split("+")[0]):
            return py
    else:
        subprocess.run([sys.executable, "-m", "venv", path], check=True)
    subprocess.run([py, "-m", "pip", "install", "-q", *BUILDS[build]], check=True)
    return py


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--venv-dir", default=os.environ.get("MERA_TORCH_VENVS", "/work/venvs"))
    ap.add_argument("--builds", nargs="*", default=list(BUILDS))
    ap.add_argument("--models", nargs="*", default=ZOO + list(TORCHVISION))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker(a.models, a.seed)
        return
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    results: Dict[str, Dict[str, dict]] = {}
    for build in a.builds:
        py = venv_python(a.venv_dir, build)
        proc = subprocess.Popen([py, os.path.abspath(__file__), "--worker", "--seed", str(a.seed), "--models",
                                 *a.models], stdout=subprocess.PIPE, text=True, env=env)
        rows = results.setdefault(build, {})
        for line in proc.stdout:
            if not line.startswith("{"):
                continue  # something the model code printed
            r = json.loads(line)
            if "model" not in r:
                print(f"# {build}: torch {r['torch']}, probed rounding {r['rounding']}", flush=True)
                continue
            rows[r.pop("model")] = r
            print(f"#   {build} {list(rows)[-1]}: {r}", flush=True)
        proc.wait()
    print()
    print("| model | " + " | ".join(f"{b} NHWC | {b} NCHW | {b} Sim==HW" for b in a.builds) + " |")
    print("|---|" + "---|---|---|" * len(a.builds))
    for m in a.models:
        cells = []
        for b in a.builds:
            r = results.get(b, {}).get(m, {})
            if "error" in r:
                cells += [r["error"][:60], "", ""]
            else:
                cells += [f"{r[k]:.4f}" if k in r else "-" for k in ("hw_nhwc", "hw_nchw", "sim_eq_hw")]
        print(f"| {m} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
