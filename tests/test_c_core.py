"""The C core on its own: unit tests in C, and a warning-free build.

The C unit tests link only csrc/ (no Python, no NumPy) with libc, libm and
pthreads, which is the C core's whole dependency list.
"""

import glob
import os
import re
import shutil
import subprocess
import sysconfig

import numpy as np
import pytest

from mera import _sources

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSRC = os.path.join(ROOT, "csrc")
CC = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
WARN = ["-std=c11", "-Wall", "-Wextra", "-Werror", "-ffp-contract=off", "-D_POSIX_C_SOURCE=200809L"]


def core_sources():
    """The C core without the bindings: the runtime and compiler groups of mera/_sources.py."""
    return [os.path.join(CSRC, f) for f in _sources.files(CSRC, ["runtime", "compiler"])]


def test_every_csrc_folder_is_in_exactly_one_group():
    folders = sorted(d for d in os.listdir(CSRC) if os.path.isdir(os.path.join(CSRC, d)))
    listed = sorted(f for fs in _sources.GROUPS.values() for f in fs)
    assert folders == listed, f"csrc/ has {folders}, mera/_sources.py lists {listed}"
    assert not glob.glob(os.path.join(CSRC, "*.c")), "a C file directly in csrc/ belongs to no group"


def test_the_runtime_includes_no_compiler_header():
    compiler = _sources.GROUPS["compiler"]
    bad = []
    for rel in _sources.files(CSRC, ["runtime"], (".c", ".h")):
        with open(os.path.join(CSRC, rel)) as f:
            for n, line in enumerate(f, 1):
                m = re.match(r'\s*#\s*include\s+"([^/"]+)/', line)
                if m and m.group(1) in compiler:
                    bad.append(f"csrc/{rel}:{n}: {line.strip()}")
    assert not bad, "runtime sources include compiler headers:\n" + "\n".join(bad)


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
