"""MERA's pre-2021 names: ``ec`` (EdgeCortix), before MERA was called MERA.

Until January 2021 the docs imported the compiler as ``from tvm.relay import
ec`` and called ``ec.build_config``, ``ec.build`` and
``ec.test_util.run_ec_backend``. Those scripts run here with their import
lines changed to ``from mera.relay import ec`` (or ``from mera import ec``)::

    with ec.build_config(target="InterpreterHw"):
        ref = ec.test_util.run_ec_backend(script_module, x, layout="NHWC")
    with ec.build_config(target="IP", **config):
        ec.build(mod, params, output_dir=output_dir, host_arch="x86", layout="NHWC")

Every name here is the same object as its MERA-era name (``mera.build_config``,
``mera.build``, ``mera.test_util``, ``mera.load_runtime_module``); nothing
behaves differently.
"""

from . import test_util
from .build import build
from .config import Platform, Target, build_config, current_build_config
from .deploy_runtime import load_runtime_module

__all__ = ["build_config", "current_build_config", "build", "test_util", "load_runtime_module", "Target",
           "Platform"]
