"""The C core on its own: unit tests in C, and a warning-free build.

The C unit tests link only csrc/ (no Python, no NumPy) with libc, libm and
pthreads, which is the C core's whole dependency list.
"""

import glob
import os
import shutil
import subprocess
import sysconfig

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSRC = os.path.join(ROOT, "csrc")
CC = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
WARN = ["-std=c11", "-Wall", "-Wextra", "-Werror", "-ffp-contract=off", "-D_POSIX_C_SOURCE=200809L"]


def core_sources():
    srcs = glob.glob(os.path.join(CSRC, "**", "*.c"), recursive=True)
    return sorted(s for s in srcs if os.sep + "python" + os.sep not in s)


@pytest.mark.parametrize("test_file", sorted(glob.glob(os.path.join(ROOT, "tests", "c", "test_*.c"))),
                         ids=os.path.basename)
def test_c_unit_tests(tmp_path, test_file):
    exe = tmp_path / "test"
    cmd = [CC, *WARN, "-O1", "-g", "-I", CSRC, test_file, *core_sources(), "-lm", "-lpthread", "-o", str(exe)]
    build = subprocess.run(cmd, capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
    print(run.stdout)
    assert run.returncode == 0, run.stdout + run.stderr
    assert " 0 failed" in run.stdout


def test_bindings_compile_without_warnings():
    includes = ["-I", CSRC, "-I", sysconfig.get_paths()["include"], "-I", np.get_include()]
    for src in sorted(glob.glob(os.path.join(CSRC, "python", "*.c"))):
        r = subprocess.run([CC, *WARN, "-fsyntax-only", *includes, src], capture_output=True, text=True)
        assert r.returncode == 0, f"{src}:\n{r.stderr}"
