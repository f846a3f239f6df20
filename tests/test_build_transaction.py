"""mera.build as a transaction: builds killed at chosen and at random points leave the previous
complete deploy directory or the new one, never a mix; the next build deletes the leftovers."""

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

import mera
build_mod = sys.modules["mera.build"]  # mera.build is the function
from mera import _deploy_dir

HERE = os.path.dirname(os.path.abspath(__file__))
CHILD = os.path.join(HERE, "build_transaction_child.py")
sys.path.insert(0, HERE)
import build_transaction_child as child  # noqa: E402

SEEDS = (1, 2)


def run_child(*args, stdin=None, timeout=600):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(os.path.dirname(mera.__file__)),
                                                      os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, CHILD, *args], input=stdin, capture_output=True, text=True,
                          env=env, timeout=timeout)


def leftovers(*dirs):
    return [os.path.join(d, n) for d in dirs if os.path.isdir(d) for n in os.listdir(d) if ".mera-build-" in n]


def user_files(out):
    """The user's entries of a deploy directory: path -> (inode, mtime, bytes)."""
    got = {}
    for root, _, files in os.walk(out):
        for f in files:
            p = os.path.join(root, f)
            if os.path.relpath(p, out) not in _deploy_dir.DEPLOY_FILES:
                st = os.stat(p)
                with open(p, "rb") as fh:
                    got[os.path.relpath(p, out)] = (st.st_ino, st.st_mtime_ns, fh.read())
    return got


@pytest.fixture
def deploy_dir(tmp_path):
    """parent/out holding the user's files (no build yet)."""
    out = tmp_path / "parent" / "out"
    (out / "sub").mkdir(parents=True)
    (out / "input0.bin").write_bytes(b"\x01\x02\x03")
    (out / "sub" / "notes.txt").write_text("mine")
    return str(out)


def test_builds_killed_at_traced_lines_leave_the_old_or_the_new_directory(deploy_dir):
    parent = os.path.dirname(deploy_dir)
    mine = user_files(deploy_dir)
    # a complete build, which also lists the lines the transaction runs
    first = run_child("steps", deploy_dir, *map(str, SEEDS), stdin="end KILL\n")
    assert first.returncode == 0, first.stderr
    lines = list(dict.fromkeys(re.search(r"^LINES (.*)$", first.stdout, re.M).group(1).split()))  # distinct
    swap = [fl for fl in lines if fl.split(":")[0] in ("_swap", "_exchange")]
    exchange_call = next(i for i, fl in enumerate(swap) if fl.startswith("_exchange:"))
    after = [fl for fl in swap[exchange_call:] if fl.startswith("_swap:")]  # from the exchange to the cleanup
    before = [fl for fl in lines if fl not in after]
    assert len(after) >= 5, after  # the exchange call, carrying late entries over, fsync, cleanup
    rng = random.Random(16)
    plan = ([(fl, "KILL") for fl in after]
            + [(fl, "KILL") for fl in rng.sample(before, 8)]
            + [(fl, "INT") for fl in rng.sample(lines, 4)] + [("end", "KILL")])
    r = run_child("steps", deploy_dir, *map(str, SEEDS), stdin="".join(f"{fl} {h}\n" for fl, h in plan))
    assert r.returncode == 0, r.stderr
    results = re.findall(r"^(?:AT (\S+)\n)?STEP (\S+) (\w+) seed (\d+) -> (.*); HELD (.*)$", r.stdout, re.M)
    assert len(results) == len(plan), r.stdout + r.stderr
    ids, held_new = {}, 0
    for at, line, how, seed, ended, held in results:
        m = re.fullmatch(r"seed (\d+) ([0-9a-f]{16})", held)
        assert m, f"{how} at {line}: {held}"
        assert ids.setdefault(m.group(1), m.group(2)) == m.group(2)  # one model id per variant
        if ended == "exit 0":
            assert m.group(1) == seed and at == "", f"a build that completed left seed {m.group(1)}"
        else:
            assert at == line and ended == ("signal 9" if how == "KILL" else "exit 3"), (at, line, ended)
            held_new += m.group(1) == seed
    # kills after the exchange leave the new build, kills before it the old one
    assert held_new >= len(after), (held_new, after)
    # the last build completed: no leftovers, the user's files as they were (same inodes)
    assert results[-1][4] == "exit 0"
    assert leftovers(parent, deploy_dir) == []
    assert sorted(os.listdir(deploy_dir)) == ["deploy.json", "deploy.params", "deploy.so", "input0.bin", "sub"]
    assert user_files(deploy_dir) == mine


def test_builds_killed_after_random_delays(deploy_dir):
    parent = os.path.dirname(deploy_dir)
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(mera.__file__)))

    def start(seed):
        p = subprocess.Popen([sys.executable, CHILD, "build", deploy_dir, str(seed)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
        assert p.stdout.readline().strip() == "building"
        return p

    def held():
        text = child.held_variant(deploy_dir, SEEDS)
        assert text.startswith("seed "), text
        return int(text.split()[1])

    p = start(SEEDS[0])
    t0 = time.monotonic()
    assert p.wait(timeout=600) == 0, p.stderr.read()
    duration = time.monotonic() - t0  # from "building" (mera imported) to the end: the delays cover the build
    assert held() == SEEDS[0]
    rng = random.Random(17)
    for i, sig in enumerate([signal.SIGKILL, signal.SIGINT, signal.SIGKILL, signal.SIGINT]):
        before = held()
        new = SEEDS[1] if before == SEEDS[0] else SEEDS[0]
        p = start(new)
        time.sleep(rng.uniform(0, duration))
        p.send_signal(sig)
        code = p.wait(timeout=600)
        p.stdout.close()
        p.stderr.close()
        assert held() in (before, new), f"iteration {i}: {sig!r} (exit {code})"
        if code == 0:
            assert held() == new
    p = start(SEEDS[1] if held() == SEEDS[0] else SEEDS[0])
    assert p.wait(timeout=600) == 0
    p.stdout.close()
    p.stderr.close()
    assert leftovers(parent, deploy_dir) == []


def test_partial_cache_folders_are_removed_by_the_next_build(tmp_path, monkeypatch):
    tc = build_mod.toolchain("x86")
    archive, _ = build_mod.runtime_archive(tc, log=False)
    cache = tmp_path / "cache"
    # this cache holds the archive (copied) and what interrupted archive builds leave
    key_dir = cache / "runtime" / os.path.basename(os.path.dirname(archive))
    key_dir.mkdir(parents=True)
    shutil.copy(archive, key_dir / "libmera_rt.a")
    (key_dir / ".build-abc123").mkdir()
    (key_dir / ".build-abc123" / "half.o").write_bytes(b"\0")
    (cache / "runtime" / "x86-0123456789abcdef01234567" / ".build-xyz").mkdir(parents=True)
    monkeypatch.setenv("MERA_CACHE_DIR", str(cache))
    assert build_mod.runtime_archive(tc, log=False) == (str(key_dir / "libmera_rt.a"), True)
    assert sorted(p.name for p in (cache / "runtime").iterdir()) == [key_dir.name]
    assert os.listdir(key_dir) == ["libmera_rt.a"]


def test_fallback_renames_files_when_the_swap_is_impossible(deploy_dir, monkeypatch, capsys):
    """The working directory inside output_dir: the three files are renamed one by one (logged)."""
    mod, params = child.variant(SEEDS[0])
    monkeypatch.chdir(os.path.join(deploy_dir, "sub"))
    mine = user_files(deploy_dir)
    with mera.build_config(target="Interpreter"):
        mera.build(mod, params, output_dir=deploy_dir)
    assert "replaced one by one" in capsys.readouterr().out
    assert child.held_variant(deploy_dir, SEEDS).startswith(f"seed {SEEDS[0]} ")
    assert user_files(deploy_dir) == mine
    assert leftovers(os.path.dirname(deploy_dir), deploy_dir) == []
    assert os.getcwd() == os.path.join(deploy_dir, "sub")


def test_swap_keeps_the_directory_mode_and_a_symlinked_output_dir(deploy_dir, tmp_path, capsys):
    mod, params = child.variant(SEEDS[1])
    os.chmod(deploy_dir, 0o751)
    link = tmp_path / "link"
    link.symlink_to(deploy_dir)
    with mera.build_config(target="Interpreter"):
        _, _, lib = mera.build(mod, params, output_dir=str(link))
    assert "replaced one by one" not in capsys.readouterr().out
    assert lib == os.path.join(str(link), "deploy.so") and os.path.islink(link)
    assert oct(os.stat(deploy_dir).st_mode & 0o777) == oct(0o751)
    assert child.held_variant(str(link), SEEDS).startswith(f"seed {SEEDS[1]} ")
    with open(os.path.join(deploy_dir, "deploy.json")) as f:
        assert json.load(f)["target"] == "Interpreter"


def test_concurrent_builds_into_one_directory(deploy_dir):
    """Builds serialize on the parent's lock: each completes, the last one's directory stays whole."""
    import threading
    errors = []

    def one(seed):
        mod, params = child.variant(seed)
        try:
            with mera.build_config(target="Interpreter"):
                mera.build(mod, params, output_dir=deploy_dir)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
    threads = [threading.Thread(target=one, args=(s,)) for s in SEEDS * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert child.held_variant(deploy_dir, SEEDS).split()[0] == "seed"
    assert leftovers(os.path.dirname(deploy_dir), deploy_dir) == []
    assert sorted(os.listdir(deploy_dir)) == ["deploy.json", "deploy.params", "deploy.so", "input0.bin", "sub"]
