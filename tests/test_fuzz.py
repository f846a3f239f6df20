"""The libFuzzer targets (fuzz/): built with AddressSanitizer and UndefinedBehaviorSanitizer by
fuzz/build.sh, each run for a few seconds on a copy of its seed corpus. A crash, a sanitizer
report, a leak or a timeout fails the test (libFuzzer exits non-zero and writes the input).

clang and libclang-rt-14-dev are required (.ci/run installs them). The build is cached under
the mera cache folder, keyed by the content of the runtime sources, fuzz/, the compiler and the
seeds folder's path (compiled into fuzz_deploy).
"""

import hashlib
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FUZZ = os.path.join(ROOT, "fuzz")
TARGETS = {"fuzz_ir": "ir", "fuzz_dna_program": "dna_program", "fuzz_deploy_json": "deploy_json",
           "fuzz_deploy_params": "deploy_params"}
SECONDS = 3
OPT = "-O0"  # compiles 5x faster than the long runs' -O1; a few seconds of fuzzing need no speed

sys.path.insert(0, ROOT)
from mera import _sources  # noqa: E402


def clang():
    cc = shutil.which("clang-14") or shutil.which("clang")
    assert cc, "clang is not installed: .ci/run installs it (apt-get install clang libclang-rt-14-dev)"
    return cc


def build_key(cc):
    h = hashlib.sha256()
    csrc = os.path.join(ROOT, "csrc")
    for rel in _sources.files(csrc, ["runtime"], _sources.BUILD_INPUTS):
        h.update(rel.encode())
        with open(os.path.join(csrc, rel), "rb") as f:
            h.update(f.read())
    for name in sorted(os.listdir(FUZZ)):
        p = os.path.join(FUZZ, name)
        if os.path.isfile(p):
            h.update(name.encode())
            with open(p, "rb") as f:
                h.update(f.read())
    for name in sorted(os.listdir(os.path.join(FUZZ, "seeds"))):
        with open(os.path.join(FUZZ, "seeds", name), "rb") as f:
            h.update(name.encode() + f.read())
    h.update(subprocess.run([cc, "--version"], capture_output=True).stdout + OPT.encode())
    # fuzz_deploy has its seeds folder's absolute path compiled in (build.sh): a build made from
    # another checkout would read that checkout's seeds, or none once it is gone
    h.update(os.path.abspath(os.path.join(FUZZ, "seeds")).encode())
    return h.hexdigest()[:16]


@pytest.fixture(scope="module")
def fuzz_build():
    cc = clang()
    base = os.environ.get("MERA_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "mera")
    out = os.path.join(base, "fuzz", build_key(cc))
    if not all(os.path.isfile(os.path.join(out, t)) for t in [*TARGETS, "load_dir"]):
        r = subprocess.run(["bash", os.path.join(FUZZ, "build.sh"), out], capture_output=True, text=True,
                           env={**os.environ, "CC": cc, "OPT": OPT})
        assert r.returncode == 0, r.stdout + r.stderr
    return out


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_fuzz_target_runs_clean(target, fuzz_build, tmp_path):
    corpus = tmp_path / "corpus"
    shutil.copytree(os.path.join(FUZZ, "corpus", TARGETS[target]), corpus)
    r = subprocess.run([os.path.join(fuzz_build, target), str(corpus), f"-max_total_time={SECONDS}",
                        "-timeout=10", "-rss_limit_mb=2048", f"-artifact_prefix={tmp_path}/",
                        "-print_final_stats=1"],
                       capture_output=True, text=True, timeout=SECONDS + 120, cwd=tmp_path)
    log = r.stdout + r.stderr
    assert r.returncode == 0, f"{target} found a problem (input in {tmp_path}):\n{log[-4000:]}"
    assert "Done " in log or "DONE" in log, log[-2000:]
    assert not any(p.name.startswith(("crash-", "leak-", "timeout-", "oom-")) for p in tmp_path.iterdir())
