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


def _quoted_includes(rel):
    """(line number, line, csrc-relative path it resolves to or None) of each #include "..." of csrc/rel,
    resolved as the compiler does: beside the file first, then under csrc/ (the -I root)."""
    here = os.path.dirname(os.path.join(CSRC, rel))
    with open(os.path.join(CSRC, rel)) as f:
        for n, line in enumerate(f, 1):
            m = re.match(r'\s*#\s*include\s+"([^"]+)"', line)
            if not m:
                continue
            found = None
            for base in (here, CSRC):
                p = os.path.normpath(os.path.join(base, m.group(1)))
                if os.path.isfile(p):
                    found = os.path.relpath(p, CSRC)
                    break
            yield n, line.strip(), found


def test_the_runtime_includes_only_runtime_headers():
    """What deploy.so is compiled from (the runtime group) includes nothing of the compiler or
    the bindings, however the path is spelled ("sched/plan.h", "../sched/plan.h")."""
    bad = []
    for rel in _sources.files(CSRC, ["runtime"], (".c", ".h")):
        for n, line, found in _quoted_includes(rel):
            top = found.split(os.sep)[0] if found else None
            if not found or found.startswith(".."):
                bad.append(f"csrc/{rel}:{n}: {line} resolves to no file under csrc/")
            elif _sources.group_of(top) != "runtime":
                bad.append(f"csrc/{rel}:{n}: {line} is csrc/{found}, of the {_sources.group_of(top)} group")
    assert not bad, "runtime sources include headers from outside the runtime group:\n" + "\n".join(bad)


def test_an_install_ships_the_runtime_group_and_finds_it(tmp_path):
    """A regular install (setup.py build_py) ships the runtime group as mera/_csrc byte for byte
    (so mera.build's archive hashes the same as from the repository) and mera/_sources.py, and the
    installed mera.build compiles from that copy; the sdist carries every group and the list."""
    import tarfile

    from mera import build as build_mod  # noqa: F401 (the module, below through sys.modules)
    import sys

    bm = sys.modules["mera.build"]
    lib = tmp_path / "lib"
    env = {k: v for k, v in os.environ.items() if k != "MERA_CSRC_DIR"}
    r = subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(lib)], cwd=ROOT, env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    shipped = lib / "mera" / "_csrc"
    kinds = _sources.BUILD_INPUTS
    got = sorted(os.path.relpath(os.path.join(d, f), shipped) for d, _, fs in os.walk(shipped) for f in fs)
    assert got == _sources.files(CSRC, ["runtime"], kinds)
    assert bm._sources_hash(str(shipped)) == bm._sources_hash(CSRC)
    assert (lib / "mera" / "_sources.py").read_bytes() == open(os.path.join(ROOT, "mera", "_sources.py"), "rb").read()
    core = [f for f in os.listdir(os.path.join(ROOT, "mera")) if f.startswith("_core.") and f.endswith(".so")]
    assert core, "build the extension first (setup.py build_ext --inplace)"
    shutil.copy(os.path.join(ROOT, "mera", core[0]), lib / "mera" / core[0])
    r = subprocess.run([sys.executable, "-c", "import importlib; b = importlib.import_module('mera.build'); "
                        "print(b.__file__); print(b.csrc_dir()); print(len(b.runtime_sources()))"],
                       cwd=tmp_path, env=dict(env, PYTHONPATH=str(lib)), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    where, root, n = r.stdout.split()
    assert where == str(lib / "mera" / "build.py") and root == str(shipped)
    assert int(n) == len(_sources.files(CSRC, ["runtime"]))

    r = subprocess.run([sys.executable, "setup.py", "-q", "sdist", "--formats=gztar", "-d", str(tmp_path / "sd")],
                       cwd=ROOT, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    (tgz,) = os.listdir(tmp_path / "sd")
    with tarfile.open(tmp_path / "sd" / tgz) as t:
        names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    want = {"csrc/" + f for f in _sources.files(CSRC, list(_sources.GROUPS), kinds)} | {"mera/_sources.py"}
    assert want <= names, sorted(want - names)


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
