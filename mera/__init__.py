"""mera: an open compiler and runtime for the DNA family of dataflow DNN accelerators.

The workflow of EdgeCortix MERA, in the open::

    import mera
    with mera.build_config(target="InterpreterHw"):
        runner = mera.compile(mod, params)
    runner.set_input(x).run().get_outputs()
"""

from __future__ import annotations

from . import errors
from .errors import (AttrError, ConfigError, DtypeError, FormatError, GraphError, MeraError, MeraIOError,
                     RuntimeInputError, ShapeError, UnknownOpError, UnsupportedError)
from . import _core
from . import ir
from .config import BuildConfig, Platform, Target, build_config, current_build_config, platforms
from .runtime import Runner, compile
from . import frontend, relay, test_util

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "errors", "ir", "frontend", "relay", "test_util",
    "MeraError", "GraphError", "ShapeError", "DtypeError", "AttrError", "UnknownOpError", "FormatError",
    "UnsupportedError", "ConfigError", "RuntimeInputError", "MeraIOError",
    "Target", "Platform", "BuildConfig", "build_config", "current_build_config", "platforms",
    "Runner", "compile",
]
