"""Builds the C extension mera._core from every C file under csrc/ (the groups of mera/_sources.py).

The C core needs nothing beyond libc, libm and pthreads; NumPy's headers are
a build requirement of the Python bindings only.

A regular (non-editable) install also ships the C sources of the runtime
(the runtime group of mera/_sources.py) inside the package as mera/_csrc:
mera.build compiles deploy.so from them. An editable install uses the
repository's csrc/ in place.
"""

import importlib.util
import os
import sys

import numpy
from setuptools import Extension, setup
from setuptools.command.build_py import build_py as _build_py

HERE = os.path.dirname(os.path.abspath(__file__))


def _load_sources_module():
    """mera/_sources.py, the one list of C sources, loaded by path (mera is not built yet)."""
    spec = importlib.util.spec_from_file_location("_mera_sources", os.path.join(HERE, "mera", "_sources.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


SOURCES = _load_sources_module()
sources = [os.path.join("csrc", f) for f in SOURCES.files(os.path.join(HERE, "csrc"), SOURCES.GROUPS)]

# -ffp-contract=off: the numerics contract forbids fusing a*b+c into an FMA
# unless the reference kernel does it; results must be the same on every CPU.
extra_compile_args = ["-std=c11", "-Wall", "-Wextra", "-O2", "-ffp-contract=off", "-fno-strict-aliasing"]
if sys.platform == "darwin":
    extra_compile_args.append("-D_DARWIN_C_SOURCE")



def runtime_sources():
    """csrc files mera.build compiles deploy.so from (relative to csrc/): the runtime group's C, headers, tables."""
    return SOURCES.files(os.path.join(HERE, "csrc"), ["runtime"], SOURCES.BUILD_INPUTS)


class build_py(_build_py):
    """The usual build_py, plus the runtime group of csrc/ (mera/_sources.py) copied to mera/_csrc."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # mera.build reads the repository's csrc/
        dest = os.path.join(self.build_lib, "mera", "_csrc")
        for rel in runtime_sources():
            target = os.path.join(dest, rel)
            self.mkpath(os.path.dirname(target))
            self.copy_file(os.path.join(HERE, "csrc", rel), target)


setup(
    cmdclass={"build_py": build_py},
    ext_modules=[
        Extension(
            "mera._core",
            sources=sources,
            include_dirs=[os.path.join(HERE, "csrc"), numpy.get_include()],
            define_macros=[("_POSIX_C_SOURCE", "200809L")],
            extra_compile_args=extra_compile_args,
            libraries=["m", "pthread"],
        )
    ],
)
