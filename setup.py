"""Builds the C extension mera._core from every C file under csrc/.

The C core needs nothing beyond libc, libm and pthreads; NumPy's headers are
a build requirement of the Python bindings only.
"""

import glob
import os
import sys

import numpy
from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))

sources = sorted(os.path.relpath(p, HERE) for p in glob.glob(os.path.join(HERE, "csrc", "**", "*.c"), recursive=True))

# -ffp-contract=off: the numerics contract forbids fusing a*b+c into an FMA
# unless the reference kernel does it; results must be the same on every CPU.
extra_compile_args = ["-std=c11", "-Wall", "-Wextra", "-O2", "-ffp-contract=off", "-fno-strict-aliasing"]
if sys.platform == "darwin":
    extra_compile_args.append("-D_DARWIN_C_SOURCE")

setup(
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
