"""Builds the C extension mera._core from every C file under csrc/.

The C core needs nothing beyond libc, libm and pthreads; NumPy's headers are
a build requirement of the Python bindings only.

A regular (non-editable) install also ships the C sources of the runtime
(csrc/ without the Python bindings) inside the package as mera/_csrc:
mera.build compiles deploy.so from them. An editable install uses the
repository's csrc/ in place.
"""

import glob
import os
import sys

import numpy
from setuptools import Extension, setup
from setuptools.command.build_py import build_py as _build_py

HERE = os.path.dirname(os.path.abspath(__file__))

sources = sorted(os.path.relpath(p, HERE) for p in glob.glob(os.path.join(HERE, "csrc", "**", "*.c"), recursive=True))

# -ffp-contract=off: the numerics contract forbids fusing a*b+c into an FMA
# unless the reference kernel does it; results must be the same on every CPU.
extra_compile_args = ["-std=c11", "-Wall", "-Wextra", "-O2", "-ffp-contract=off", "-fno-strict-aliasing"]
if sys.platform == "darwin":
    extra_compile_args.append("-D_DARWIN_C_SOURCE")



def runtime_sources():
    """csrc files mera.build compiles deploy.so from (relative to csrc/): C, headers, tables."""
    root = os.path.join(HERE, "csrc")
    out = []
    for p in glob.glob(os.path.join(root, "**", "*"), recursive=True):
        rel = os.path.relpath(p, root)
        if os.path.isfile(p) and p.endswith((".c", ".h", ".def")) and rel.split(os.sep)[0] != "python":
            out.append(rel)
    return sorted(out)


class build_py(_build_py):
    """The usual build_py, plus csrc/ (without python/) copied to mera/_csrc."""

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
