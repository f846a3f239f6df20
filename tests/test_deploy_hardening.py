"""Hostile deploy directories and shared modules (docs/deploy.md, "Guarantees").

- every numeric field of deploy.json set to 0, -1, 1e-320, 2^31, 2^63, 2^64, 1e308 and 0.5 on an
  IP and a Simulator build is refused with a MeraError naming the field, or runs with the
  reference's bytes;
- a FIFO, a directory, /dev/zero or a huge sparse file in place of each deploy file is refused
  (a timeout guards against a hang; nothing is timed);
- deploy.params rewritten in place under a loaded module is refused at the next run, and a
  rebuild into the same directory leaves the loaded module running its own model;
- 200 load/unload cycles leave no mapping behind;
- one module called from 8 threads gives each caller the outputs of its own inputs;
- loader errors are MeraErrors (a non-UTF-8 dlerror text included), and set_input(name=array)
  works.
"""

import contextlib
import io
import json
import os
import shutil
import subprocess
import threading

import numpy as np
import pytest

import mera
from test_simulator import GraphGen

MUTATIONS = [0, -1, 1e-320, 2 ** 31, 2 ** 63, 2 ** 64, 1e308, 0.5]
DEPLOY_FILES = ("deploy.json", "deploy.params", "deploy.so")


def build_dir(path, mod, target):
    with mera.build_config(target=target, arch=100), contextlib.redirect_stdout(io.StringIO()):
        mera.build(mod, {}, output_dir=str(path), host_arch="x86", layout="NHWC")
    return path


@pytest.fixture(scope="module")
def model():
    gen = GraphGen(7)
    mod, x = gen.build(n_layers=3)
    return mod, x


@pytest.fixture(scope="module")
def dirs(model, tmp_path_factory):
    mod, _ = model
    return {t: build_dir(tmp_path_factory.mktemp(f"hard-{t}"), mod, t) for t in ("IP", "Simulator", "Interpreter")}


def reference(d, x):
    with mera.load_runtime_module(d) as rt:
        return [o.copy() for o in rt(x)]


def numeric_paths(node, path=()):
    """(path, leaf name) of every number in a JSON document."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from numeric_paths(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from numeric_paths(v, path + (i,))
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        yield path


def set_path(doc, path, value):
    for k in path[:-1]:
        doc = doc[k]
    doc[path[-1]] = value


def leaf_name(path):
    return next(str(k) for k in reversed(path) if isinstance(k, str))


@pytest.mark.parametrize("target", ["IP", "Simulator"])
def test_every_numeric_field_of_deploy_json_is_checked(target, dirs, model, tmp_path):
    src = dirs[target]
    x = model[1]
    ref = reference(src, x)
    d = tmp_path / "mutant"
    shutil.copytree(src, d)
    text = (src / "deploy.json").read_text()
    doc = json.loads(text)
    paths = list(numeric_paths(doc))
    assert any(p[0] == "platform_params" for p in paths) and any("shape" in p for p in paths)
    refused = ran = 0
    for path in paths:
        for value in MUTATIONS:
            mutant = json.loads(text)
            set_path(mutant, path, value)
            (d / "deploy.json").write_text(json.dumps(mutant, indent=2))
            where = ".".join(map(str, path))
            try:
                with mera.load_runtime_module(d) as rt:
                    out = rt(x)
            except mera.MeraError as e:
                assert leaf_name(path) in str(e), f"{where} = {value!r}: the refusal does not name it: {e}"
                refused += 1
                continue
            assert mutant == doc, f"{where} = {value!r} was accepted although it changes deploy.json"
            assert all(a.tobytes() == b.tobytes() for a, b in zip(ref, out)), f"{where} = {value!r}: other bytes"
            ran += 1
    print(f"{target}: {len(paths)} numeric fields x {len(MUTATIONS)} values: {refused} refused, {ran} ran")
    assert refused > 0 and refused + ran == len(paths) * len(MUTATIONS)


def special_files(tmp_path):
    """Replacements for a deploy file: (kind, make(path))."""
    def fifo(p):
        os.mkfifo(p)

    def directory(p):
        os.mkdir(p)

    def dev_zero(p):
        os.symlink("/dev/zero", p)

    def sparse(p):
        with open(p, "wb") as f:
            f.truncate(8 << 30)
    return [("fifo", fifo), ("directory", directory), ("/dev/zero", dev_zero), ("sparse 8 GiB", sparse)]


def _raises(f):
    try:
        f()
    except BaseException as e:  # noqa: BLE001 - the caller checks the class
        return e
    return None


def load_with_timeout(d, seconds=60):
    """Load d in a daemon thread; returns the exception it raised (None if it loaded), or fails
    the test if the load is still blocked after `seconds`."""
    box = {}

    def go():
        try:
            mera.load_runtime_module(d).close()
            box["err"] = None
        except BaseException as e:  # noqa: BLE001 - reported below
            box["err"] = e
    t = threading.Thread(target=go, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"loading {d} is still blocked after {seconds} s"
    return box["err"]


@pytest.mark.parametrize("name", DEPLOY_FILES)
def test_special_files_in_place_of_a_deploy_file_are_refused(name, dirs, tmp_path):
    for kind, make in special_files(tmp_path):
        d = tmp_path / kind.replace("/", "").replace(" ", "_")
        shutil.copytree(dirs["IP"], d)
        os.unlink(d / name)
        make(str(d / name))
        err = load_with_timeout(d)
        assert isinstance(err, mera.MeraError), f"{name} as {kind}: {err!r}"
        assert name in str(err), f"{name} as {kind}: {err}"


def test_params_rewritten_in_place_is_refused_at_the_next_run(dirs, model, tmp_path):
    x = model[1]
    d = tmp_path / "d"
    shutil.copytree(dirs["IP"], d)
    rt = mera.load_runtime_module(d)
    ref = [o.copy() for o in rt(x)]
    data = (d / "deploy.params").read_bytes()
    with open(d / "deploy.params", "r+b") as f:  # cp new old: same inode, new bytes
        f.truncate(0)
        f.write(data[:4096])
    with pytest.raises(mera.MeraError, match="deploy.params changed after it was loaded"):
        rt(x)
    rt.close()
    # mera.build into the directory of a loaded module: the module keeps running its own model
    shutil.rmtree(d)
    shutil.copytree(dirs["IP"], d)
    with mera.load_runtime_module(d) as rt:
        gen = GraphGen(8)
        other, _ = gen.build(n_layers=2)
        build_dir(d, other, "IP")
        out = rt(x)
        assert all(a.tobytes() == b.tobytes() for a, b in zip(ref, out))


def mappings():
    with open("/proc/self/maps") as f:
        lines = f.read().splitlines()
    return len(lines), [ln for ln in lines if "mera-deploy-" in ln or "deploy.params" in ln]


def test_load_unload_leaves_no_mapping(dirs, model):
    x = model[1]
    for _ in range(5):  # warm up the allocator and the dynamic loader
        with mera.load_runtime_module(dirs["IP"]) as rt:
            rt(x)
    n0, ours0 = mappings()
    assert ours0 == []
    for _ in range(200):
        rt = mera.load_runtime_module(dirs["IP"])
        rt(x)
        rt.close()
    n1, ours1 = mappings()
    assert ours1 == [], ours1[:5]
    assert n1 <= n0 + 8, f"{n1 - n0} more mappings after 200 load/unload cycles"


def test_threads_sharing_one_module_get_their_own_outputs(dirs, model):
    x = model[1]
    rng = np.random.default_rng(0)
    inputs = [rng.integers(0, 256, x.shape).astype(x.dtype) if x.dtype != np.float32
              else rng.standard_normal(x.shape).astype(np.float32) for _ in range(8)]
    rt = mera.load_runtime_module(dirs["IP"])
    rt.max_contexts = 4  # the module's handle and up to 3 more, whatever the machine's CPU count
    refs = [[o.copy() for o in rt(a)] for a in inputs]
    assert any(refs[0][0].tobytes() != r[0].tobytes() for r in refs[1:]), "inputs do not change the output"
    bad = []

    def worker(k):
        for _ in range(200):
            out = rt(inputs[k])
            if any(a.tobytes() != b.tobytes() for a, b in zip(refs[k], out)):
                bad.append(k)
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    extra = rt._n_extra
    rt.close()
    assert not bad, f"{len(bad)} of 1600 runs returned another thread's outputs"
    assert 1 <= extra <= 3, f"{extra} extra execution contexts: calls never overlapped, or the bound was ignored"


def test_set_input_keyword_form_and_closed_module(dirs, model):
    x = model[1]
    with mera.load_runtime_module(dirs["Interpreter"]) as rt:
        ref = rt(x)
        name = rt.input_names[0]
        out = rt.set_input(**{name: x}).run().get_outputs()
        assert all(a.tobytes() == b.tobytes() for a, b in zip(ref, out))
        with pytest.raises(mera.RuntimeInputError, match="set_input"):
            rt.set_input()
    with pytest.raises(mera.RuntimeInputError, match="closed"):
        rt(x)


def test_dlerror_that_is_not_utf8_is_a_mera_error(dirs, tmp_path):
    """A deploy.so whose dependency has a non-UTF-8 name: dlopen's message holds those bytes."""
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "a C compiler is needed (mera.build needs one too)"
    dep = os.path.join(os.fsencode(str(tmp_path)), b"libdep\xff.so")
    (tmp_path / "dep.c").write_text("int dep_value(void) { return 1; }\n")
    (tmp_path / "lib.c").write_text("int dep_value(void);\nint f(void) { return dep_value(); }\n")
    subprocess.run([cc, "-shared", "-fPIC", "-o", dep, str(tmp_path / "dep.c"), b"-Wl,-soname,libdep\xff.so"],
                   check=True)
    d = tmp_path / "d"
    shutil.copytree(dirs["Interpreter"], d)
    os.unlink(d / "deploy.so")
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(d / "deploy.so"), str(tmp_path / "lib.c"), dep], check=True)
    os.unlink(dep)
    with pytest.raises(mera.FormatError, match="cannot load") as e:
        mera.load_runtime_module(d)
    assert "\ufffd" in str(e.value)


def test_bad_paths_and_triples_are_mera_errors(dirs, tmp_path):
    d = dirs["Interpreter"]
    for bad in (str(d) + "\0x", 3.5, None):
        with pytest.raises(mera.MeraError):
            mera.load_runtime_module(bad)
    js = (d / "deploy.json").read_text()
    params = (d / "deploy.params").read_bytes()
    fifo = tmp_path / "fifo.so"
    os.mkfifo(fifo)
    for lib in (str(fifo), "/dev/zero", str(tmp_path)):
        box = {}
        t = threading.Thread(target=lambda: box.update(err=_raises(lambda: mera.load_runtime_module(js, params, lib))),
                             daemon=True)
        t.start()
        t.join(60)
        assert not t.is_alive(), f"load_runtime_module(json, params, {lib!r}) is still blocked after 60 s"
        assert isinstance(box["err"], mera.MeraError), (lib, box["err"])
    (tmp_path / "elsewhere").mkdir()
    shutil.copy(d / "deploy.so", tmp_path / "elsewhere" / "deploy.so")
    with mera.load_runtime_module(js, params, str(tmp_path / "elsewhere" / "deploy.so")) as rt:
        assert rt.get_num_inputs() == 1


@pytest.mark.parametrize("field,value", [("clock_mhz", 2 ** 64), ("act_buffer_kib", 2 ** 63), ("mac_px", 2 ** 31),
                                         ("dram_gbps", 1e-320), ("host_call_us", 1e308), ("vector_lanes", 0)])
def test_arch_overrides_outside_their_range_are_refused(field, value, model):
    mod, x = model
    with pytest.raises(mera.MeraError, match=field):
        with mera.build_config(target="Simulator", arch={"platform": "DNAF100L0003", field: value}):
            mera.compile(mod, {})(x)
