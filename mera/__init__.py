"""mera: an open compiler and runtime for the DNA family of dataflow DNN accelerators.

The workflow of EdgeCortix MERA, in the open::

    import mera
    with mera.build_config(target="InterpreterHw"):
        runner = mera.compile(mod, params)
    runner.set_input(x).run().get_outputs()

    with mera.build_config(target="IP", arch=100):
        mera.build(mod, params, output_dir="deploy", host_arch="x86", layout="NHWC")
    mera.load_runtime_module("deploy").set_input(0, x).run().get_output(0)
"""

from __future__ import annotations

from . import errors
from .errors import (AttrError, ConfigError, DtypeError, FormatError, GraphError, MeraError, MeraIOError, MeraMemoryError,
                     RuntimeInputError, ShapeError, UnknownOpError, UnsupportedError)
from . import _core
from . import ir
from .config import BuildConfig, Platform, Target, build_config, current_build_config, platforms
from .runner import Runner, compile
from .build import build
from .deploy_runtime import DeployModule, load_runtime_module
from .quantizer import QualityReport, Quantizer
from .deployer import (Deployer, DeviceTarget, Layout, MeraDeployment, MeraModel, MeraModelRunner, MeraTvmDeployment,
                       MeraTvmModelRunner, MeraTvmPrjDeployment, ModelLoader, TVMDeployer, load_mera_deployment)
from . import ec, frontend, relay, test_util
from . import plots, report  # matplotlib is imported when a chart is drawn

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "errors", "ir", "frontend", "relay", "test_util", "ec", "plots", "report",
    "MeraError", "GraphError", "ShapeError", "DtypeError", "AttrError", "UnknownOpError", "FormatError",
    "UnsupportedError", "ConfigError", "RuntimeInputError", "MeraIOError", "MeraMemoryError",
    "Target", "Platform", "BuildConfig", "build_config", "current_build_config", "platforms",
    "Runner", "compile", "build", "load_runtime_module", "DeployModule", "Quantizer", "QualityReport",
    "Deployer", "TVMDeployer", "ModelLoader", "MeraModel", "MeraDeployment", "MeraTvmDeployment", "MeraTvmPrjDeployment",
    "MeraModelRunner", "MeraTvmModelRunner", "load_mera_deployment", "Layout", "DeviceTarget",
]
