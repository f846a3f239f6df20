"""mera.build, the deploy directory, deploy.so's C ABI, mera.load_runtime_module and the C
inference app (apps/inference).

Every target's deploy directory runs, through the app and through ctypes, with the bytes of
mera.compile; a corrupt or mismatched directory is refused with a message (never a crash);
builds are atomic and touch nothing else; deploy.so exports only the ABI and needs only libc,
libm and pthreads; host_arch="arm" cross-compiles, and the aarch64 app runs it under qemu.

The tools (cmake, make, aarch64-linux-gnu-gcc, qemu-aarch64) are required: .ci/run installs
them, and a missing one fails the test that needs it instead of skipping it.
"""

import contextlib
import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch

import mera
from conftest import built_zoo
from test_simulator import GraphGen

build_mod = sys.modules["mera.build"]  # mera.build is the function; the module holds the helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP_SRC = os.path.join(ROOT, "apps", "inference")
TARGETS = ["Interpreter", "InterpreterHw", "Simulator", "IP"]
ARM_SYSROOT = "/usr/aarch64-linux-gnu"


def need(tool):
    path = shutil.which(tool)
    assert path, f"{tool} is not installed: .ci/run installs it (apt-get install gcc-aarch64-linux-gnu " \
                 "libc6-dev-arm64-cross qemu-user cmake make)"
    return path


@pytest.fixture(scope="module", autouse=True)
def cache_dir(tmp_path_factory):
    """One runtime-archive cache for this module: the first build compiles it, the rest reuse it."""
    old = os.environ.get("MERA_CACHE_DIR")
    d = tmp_path_factory.mktemp("mera-cache")
    os.environ["MERA_CACHE_DIR"] = str(d)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield d
    torch.set_num_threads(n)
    if old is None:
        os.environ.pop("MERA_CACHE_DIR", None)
    else:
        os.environ["MERA_CACHE_DIR"] = old


def cmake_build(build_dir, *extra):
    need("cmake")
    need("make")
    r = subprocess.run(["cmake", "-S", APP_SRC, "-B", str(build_dir), *extra], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run(["cmake", "--build", str(build_dir)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    exe = os.path.join(str(build_dir), "inference")
    assert os.path.isfile(exe)
    return exe


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """apps/inference built with cmake, once."""
    return cmake_build(tmp_path_factory.mktemp("app-build"))


def run_app(app, deploy_dir, *args, prefix=(), timeout=600):
    return subprocess.run([*prefix, app, str(deploy_dir), *args], capture_output=True, text=True, timeout=timeout)


def assert_app_ok(r, exact=True):
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    out = r.stdout
    assert re.search(r"^Took \d+\.\d\d msec\.( \(host (emulation of the IP|run of the Simulator); "
                     r"(device|its) estimate below\))?$", out, re.M), out
    ratios = re.findall(r"^correct ratio: (\S+)$", out, re.M)
    assert ratios and all(x == "1" for x in ratios), out
    assert out.rstrip().endswith("correct ratio: 1"), out  # the log ends as the docs' did
    if exact:
        assert all(x == "0" for x in re.findall(r"^max abs diff: (\S+)$", out, re.M)), out
        assert all(x == "0" for x in re.findall(r"^mean abs diff: (\S+)$", out, re.M)), out
    assert re.search(r"^Peak memory: \d+\.\d MiB \(weights \d+\.\d MiB, arena \d+\.\d MiB\)$", out, re.M), out


def assert_same(ref, got, what):
    assert len(ref) == len(got), what
    for i, (a, b) in enumerate(zip(ref, got)):
        assert a.shape == b.shape and a.dtype == b.dtype, f"{what}: output {i}: {b.shape} {b.dtype} vs {a.shape} {a.dtype}"
        assert a.tobytes() == b.tobytes(), f"{what}: output {i}: {int((a != b).sum())} of {a.size} values differ"


# ---- the models ----------------------------------------------------------------------------------

class Model:
    def __init__(self, name, mod, params, x, layout):
        self.name, self.mod, self.params, self.x, self.layout = name, mod, params, x, layout
        self._ref = {}
        self._dirs = {}

    def reference(self, target):
        """mera.compile's outputs (in process) for target; Simulator and IP give InterpreterHw's bytes."""
        t = "Interpreter" if target == "Interpreter" else "InterpreterHw"
        if t not in self._ref:
            with mera.build_config(target=t):
                self._ref[t] = mera.compile(self.mod, self.params)(self.x)
        return self._ref[t]


@pytest.fixture(scope="module")
def small():
    gen = GraphGen(42)
    mod, x = gen.build(n_layers=4)
    return Model("small", mod, {}, x, "NHWC")


@pytest.fixture(scope="module")
def resnet18():
    z = built_zoo("resnet18")
    x = z.inputs[0].numpy()
    mod, params = mera.frontend.from_pytorch(z.traced, [("input0", x.shape)], layout="NCHW")
    return Model("resnet18", mod, params, x, "NCHW")


_BUILT = {}


def deploy(model, target, tmp_path_factory, **config):
    """A deploy directory of model for target (built once per module), with input0.bin and
    ref_result_k.bin written first, as in the docs."""
    key = (model.name, target, tuple(sorted(config.items())))
    if key not in _BUILT:
        d = tmp_path_factory.mktemp(f"{model.name}-{target}")
        model.x.tofile(d / "input0.bin")
        for k, r in enumerate(model.reference(target)):
            r.tofile(d / f"ref_result_{k}.bin")
        config.setdefault("arch", 100)
        log = io.StringIO()
        with mera.build_config(target=target, **config), contextlib.redirect_stdout(log):
            result = mera.build(model.mod, model.params, output_dir=str(d), host_arch="x86", layout=model.layout)
        _BUILT[key] = (d, result, log.getvalue())
    return _BUILT[key][:2]


def build_log(model, target):
    return _BUILT[(model.name, target, ())][2]


# ---- every target: the app and load_runtime_module give mera.compile's bytes -----------------------

@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("which", ["small", "resnet18"])
def test_every_target_runs_bit_exact(which, target, request, app, tmp_path_factory, tmp_path):
    model = request.getfixturevalue(which)
    d, (json_str, params_bytes, lib_path) = deploy(model, target, tmp_path_factory)
    log = build_log(model, target)
    assert f"mera.build: '{model.mod.name}' for {target}" in log and "mera.build: wrote deploy.so" in log
    assert lib_path == os.path.join(str(d), "deploy.so") and os.path.isfile(lib_path)
    assert (d / "deploy.json").read_text() == json_str and (d / "deploy.params").read_bytes() == params_bytes
    info = json.loads(json_str)
    assert info["target"] == target and info["host_arch"] == "x86"
    ref = model.reference(target)

    rt = mera.load_runtime_module(str(d))
    out = rt.set_input(0, model.x).run().get_outputs()
    assert_same(ref, out, f"{which} {target} load_runtime_module")
    assert rt.get_num_outputs() == len(ref) and rt.get_num_inputs() == 1
    metrics = rt.get_runtime_metrics()[0]
    assert metrics["target"] == target and metrics["weights_bytes"] == info["weights_bytes"]
    assert metrics["arena_bytes"] == info["arena_bytes"] and metrics["host_run_us"] > 0
    if target in ("Simulator", "IP"):
        assert info["latency_us"] > 0 and metrics["device_us"] > 0 and metrics["device_cycles"] > 0
        key = "sim_time_us" if target == "Simulator" else "elapsed_latency"
        # MERA's key is the end-to-end estimate; device_us is the device alone (cycles at the clock)
        assert metrics[key] == metrics["total_us"] == pytest.approx(metrics["device_us"] + metrics["host_us"])
        assert metrics["total_us"] == pytest.approx(info["latency_us"])
        assert metrics["clock_mhz"] == 300 and metrics["host_us"] > 0
        assert metrics["device_us"] == pytest.approx(metrics["device_cycles"] / metrics["clock_mhz"])
        assert f"Simulator total latency: {info['latency_us']:.3f} us" in log
        if which == "small":  # the same figures as the in-process Simulator's
            with mera.build_config(target="Simulator", arch=100, sim_log=False):
                sim = mera.compile(model.mod, model.params).get_runtime_metrics()[0]
            for k in ("total_us", "device_us", "device_cycles", "host_us", "clock_mhz"):
                assert metrics[k] == pytest.approx(sim[k]), k
            assert metrics[key] == pytest.approx(sim["sim_time_us"])
        assert metrics["platform"] == "DNAF100L0003"
    else:
        assert "sim_time_us" not in metrics and "elapsed_latency" not in metrics

    r = run_app(app, d, "-n", "2", "-w", "1", "-o", str(tmp_path))
    assert_app_ok(r)
    for k, a in enumerate(ref):
        assert (tmp_path / f"output_{k}.bin").read_bytes() == a.tobytes()
    if target in ("Simulator", "IP"):
        # the device figure alone, then the modelled host time on its own line
        dev = re.search(r"^Device latency: (\d+\.\d{3}) us \((\d+) cycles at 300 MHz on DNAF100L0003, device "
                        r"'(\w+)'\)$", r.stdout, re.M)
        assert dev and float(dev.group(1)) == pytest.approx(metrics["device_us"], abs=1e-3), r.stdout
        assert int(dev.group(2)) == metrics["device_cycles"], r.stdout
        assert dev.group(3) == ("emulated" if target == "IP" else "simulated"), r.stdout
        host = re.search(r"^Host time \(modelled\): (\d+\.\d{3}) us \(host nodes, PCIe transfers, call\); "
                         r"end-to-end estimate (\d+\.\d{3}) us$", r.stdout, re.M)
        assert host and float(host.group(1)) == pytest.approx(metrics["host_us"], abs=1e-3), r.stdout
        assert float(host.group(2)) == pytest.approx(info["latency_us"], abs=1e-3), r.stdout
    if target == "Simulator":
        assert f"Simulator total latency: {info['latency_us']:.3f} us" in r.stdout
        assert re.search(r"^Took \d+\.\d\d msec\. \(host run of the Simulator; its estimate below\)$", r.stdout, re.M)
    elif target == "IP":
        assert re.search(r"^Took \d+\.\d\d msec\. \(host emulation of the IP; device estimate below\)$", r.stdout,
                         re.M), r.stdout
    else:
        assert re.search(r"^Took \d+\.\d\d msec\.$", r.stdout, re.M) and "Device latency" not in r.stdout


def test_ip_host_nodes_in_place_and_on_copies_agree(resnet18, app, tmp_path_factory, tmp_path):
    """The IP's host segments run in place on the emulated device's memory (the HAL's map) and on
    copies read from and written back to it (emulated-copy, no map): both give the reference's
    bytes. The app's -m accounts for the resident memory after the runs, part by part."""
    model = resnet18
    assert model.x.dtype == np.float32  # a float input: the program starts with a host quantize node
    d, _ = deploy(model, "IP", tmp_path_factory)
    ref = model.reference("IP")
    for device in ("emulated", "emulated-copy"):
        out = tmp_path / device
        out.mkdir()
        r = subprocess.run([app, str(d), "-n", "2", "-m", "-o", str(out)], capture_output=True, text=True,
                           timeout=600, env={**os.environ, "MERA_IP_DEVICE": device})
        assert_app_ok(r)
        assert f"device '{device}'" in r.stdout, r.stdout
        for k, a in enumerate(ref):
            assert (out / f"output_{k}.bin").read_bytes() == a.tobytes(), (device, k)
        m = re.search(r"^Resident now: (\S+) MiB: heap \(malloc\) (\S+), anonymous mappings \(large allocations\) "
                      r"(\S+), deploy\.params (\S+), deploy\.so (\S+), stack (\S+), other files \(the app and its "
                      r"libraries\) (\S+); malloc'd and not freed: (\S+) MiB$", r.stdout, re.M)
        assert m, r.stdout
        total, heap, anon, params, so, stack, files, held = map(float, m.groups())
        assert total == pytest.approx(heap + anon + params + so + stack + files, abs=0.35)  # six roundings
        assert heap > 0 and so > 0 and files > 0 and held > 0
        peak = float(re.search(r"^Peak memory: (\S+) MiB", r.stdout, re.M).group(1))
        assert peak >= total - 0.25, r.stdout  # the peak is at least what is resident after the runs


def test_triple_form_and_input_forms(small, tmp_path_factory):
    d, triple = deploy(small, "IP", tmp_path_factory)
    ref = small.reference("IP")
    rt = mera.load_runtime_module(*triple)  # MERA's load_runtime_module(json, params, lib_path)
    assert_same(ref, rt.set_input("input0", small.x).run().get_outputs(), "triple")
    assert_same(ref, mera.load_runtime_module(triple).run(small.x).get_outputs(), "tuple")
    assert_same(ref, rt.set_input({"input0": small.x}).run().get_outputs(), "dict")
    assert_same(ref, rt(small.x), "call")
    assert rt.inputs == [{"name": "input0", "shape": small.x.shape, "dtype": "uint8"}]
    # the triple's data files are copied when they are not those next to lib_path
    other = tmp_path_factory.mktemp("triple")
    shutil.copy(triple[2], other / "deploy.so")
    assert_same(ref, mera.load_runtime_module(triple[0], triple[1], str(other / "deploy.so"))(small.x), "copied")


def test_compile_for_ip_builds_and_loads_a_deploy_directory(small, capsys):
    ref = small.reference("IP")
    with mera.build_config(target="IP", arch=100):
        rt = mera.compile(small.mod, small.params)
    assert_same(ref, rt.set_input(small.x).run().get_outputs(), "compile(IP)")
    assert rt.get_runtime_metrics()[0]["elapsed_latency"] > 0
    assert "mera.build" in capsys.readouterr().out


def test_run_time_input_errors(small, tmp_path_factory):
    d, _ = deploy(small, "InterpreterHw", tmp_path_factory)
    rt = mera.load_runtime_module(str(d))
    with pytest.raises(mera.RuntimeInputError, match="run.. before set_input.*input0"):
        rt.run()
    with pytest.raises(mera.RuntimeInputError, match=r"get_output\(\) before run"):
        rt.get_output(0)
    bad_shape = np.zeros((1,) + small.x.shape, small.x.dtype)
    with pytest.raises(mera.RuntimeInputError, match=r"input 'input0': expected \(1, \d+, \d+, \d+\) uint8, got"):
        rt.set_input(0, bad_shape)
    with pytest.raises(mera.RuntimeInputError, match="input 'input0'.*float32"):
        rt.set_input("input0", small.x.astype(np.float32))
    with pytest.raises(mera.RuntimeInputError, match="unknown input name 'nope'; inputs are: input0"):
        rt.set_input("nope", small.x)
    with pytest.raises(mera.RuntimeInputError, match="input index 3 is out of range"):
        rt.set_input(3, small.x)
    rt.set_input(0, small.x).run()
    with pytest.raises(mera.RuntimeInputError, match="output index 9 is out of range"):
        rt.get_output(9)
    with pytest.raises(mera.MeraIOError, match="not a deploy directory"):
        mera.load_runtime_module(str(tmp_path_factory.mktemp("empty")))


# ---- corrupt, truncated and mismatched directories ------------------------------------------------

def _flip(data, at):
    b = bytearray(data)
    b[at] ^= 0x5A
    return bytes(b)


def corruptions(d, other):
    """(name, {file: new bytes or None to delete}) of broken copies of deploy dir d; other is
    another build's directory."""
    params = (d / "deploy.params").read_bytes()
    js = (d / "deploy.json").read_text()
    so = (d / "deploy.so").read_bytes()
    info = json.loads(js)
    wrong_version = bytearray(params)
    wrong_version[8:12] = struct.pack("<I", 99)
    edited_shape = json.loads(js)
    edited_shape["inputs"][0]["shape"][1] += 1
    edited_dtype = json.loads(js)
    edited_dtype["outputs"][0]["dtype"] = "int32" if edited_dtype["outputs"][0]["dtype"] != "int32" else "int8"
    edited_version = dict(info, version=99)
    edited_abi = dict(info, abi_version=99)
    return [
        ("params truncated", {"deploy.params": params[: len(params) // 2]}),
        ("params truncated by one byte", {"deploy.params": params[:-1]}),
        ("params empty", {"deploy.params": b""}),
        ("params flipped byte (data)", {"deploy.params": _flip(params, len(params) // 2)}),
        ("params flipped byte (header)", {"deploy.params": _flip(params, 20)}),
        ("params flipped byte (magic)", {"deploy.params": _flip(params, 0)}),
        ("params wrong version", {"deploy.params": bytes(wrong_version)}),
        ("params missing", {"deploy.params": None}),
        ("json truncated", {"deploy.json": js[: len(js) // 2].encode()}),
        ("json not json", {"deploy.json": b"\x00\xff garbage"}),
        ("json missing", {"deploy.json": None}),
        ("json edited shape", {"deploy.json": json.dumps(edited_shape).encode()}),
        ("json edited dtype", {"deploy.json": json.dumps(edited_dtype).encode()}),
        ("json wrong version", {"deploy.json": json.dumps(edited_version).encode()}),
        ("json wrong abi", {"deploy.json": json.dumps(edited_abi).encode()}),
        ("params and json of another build", {"deploy.params": (other / "deploy.params").read_bytes(),
                                              "deploy.json": (other / "deploy.json").read_bytes()}),
        ("params of another build", {"deploy.params": (other / "deploy.params").read_bytes()}),
        ("so truncated", {"deploy.so": so[: len(so) // 3]}),
        ("so not a library", {"deploy.so": b"#!/bin/sh\necho hi\n"}),
    ]


def test_corrupt_directories_are_refused(small, app, tmp_path_factory, tmp_path):
    d, _ = deploy(small, "IP", tmp_path_factory)
    other, _ = deploy(small, "IP", tmp_path_factory, arch=200)  # the same model, another build
    for name, changes in corruptions(d, other):
        bad = tmp_path / re.sub(r"\W+", "_", name)
        shutil.copytree(d, bad)
        for f, data in changes.items():
            if data is None:
                os.unlink(bad / f)
            else:
                (bad / f).write_bytes(data)
        r = run_app(app, bad, "-n", "1", "-w", "0", timeout=120)
        assert r.returncode == 1, f"{name}: the app exited {r.returncode}\n{r.stdout}\n{r.stderr}"
        assert r.stderr.startswith("inference: ") and len(r.stderr.strip()) > 20, f"{name}: {r.stderr!r}"
        # the class comes from mera_deploy_create's status, not from the message: a missing file is I/O
        expected = mera.MeraIOError if "missing" in name else mera.FormatError
        with pytest.raises(mera.MeraError) as e:
            mera.load_runtime_module(str(bad))
        assert type(e.value) is expected, f"{name}: {type(e.value).__name__}: {e.value}"
        assert len(str(e.value)) > 10, name
        if "another build" in name:
            assert re.search(r"another build|different builds|model id", str(e.value)), f"{name}: {e.value}"
        if name.startswith("params") and "missing" not in name:
            assert "deploy.params" in str(e.value), f"{name}: {e.value}"
        if name.startswith("json") and "missing" not in name:
            assert "deploy.json" in str(e.value), f"{name}: {e.value}"


def test_deploy_params_stores_each_weight_once(resnet18, tmp_path_factory):
    """Simulator and IP: the DNA layers' weights are in the program's constant image only, not
    also in the PARAMS section; deploy.params is within 1.1x the int8 weights, and weights_bytes
    counts the image."""
    int8_bytes = sum(np.asarray(v).nbytes for v in resnet18.params.values() if np.asarray(v).dtype == np.int8)
    assert int8_bytes > 10_000_000  # ResNet-18's 11.7 M weights
    for target in ("Simulator", "IP"):
        d, (json_str, params_bytes, _) = deploy(resnet18, target, tmp_path_factory)
        assert len(params_bytes) <= 1.1 * int8_bytes, f"{target}: {len(params_bytes)} bytes for {int8_bytes} int8"
        assert json.loads(json_str)["weights_bytes"] <= len(params_bytes)
    d, (_, ihw_bytes, _) = deploy(resnet18, "InterpreterHw", tmp_path_factory)
    assert int8_bytes <= len(ihw_bytes) <= 1.1 * int8_bytes  # every PARAM once, no DNA program


def test_old_format_directories_are_refused(small, app, tmp_path_factory, tmp_path):
    """A deploy directory of the previous format version (which stored weights twice) is refused
    by this runtime with a message saying to rebuild it, from deploy.json's version or, when that
    was edited, from deploy.params' own."""
    d, _ = deploy(small, "IP", tmp_path_factory)
    old = mera._core.DEPLOY_FORMAT_VERSION - 1
    info = json.loads((d / "deploy.json").read_text())
    params = bytearray((d / "deploy.params").read_bytes())
    params[8:12] = struct.pack("<I", old)
    cases = {"json": {"deploy.json": json.dumps(dict(info, version=old)).encode()},
             "params": {"deploy.params": bytes(params)}}
    for name, changes in cases.items():
        bad = tmp_path / name
        shutil.copytree(d, bad)
        for f, data in changes.items():
            (bad / f).write_bytes(data)
        with pytest.raises(mera.FormatError) as e:
            mera.load_runtime_module(str(bad))
        msg = str(e.value)
        assert f"= {old}" in msg and f"format version {old + 1}" in msg and "rebuild" in msg, msg
        assert ("deploy.json" if name == "json" else "deploy.params") in msg, msg
        r = run_app(app, bad, "-n", "1", "-w", "0")
        assert r.returncode == 1 and "rebuild" in r.stderr, r.stderr


def test_first_build_links_the_prebuilt_runtime(small, tmp_path, monkeypatch, capsys):
    """The install built the runtime archive for this machine (setup.py build_ext): with an empty
    cache, mera.build compiles nothing but the entry file and links that archive; another host
    arch, or edited C sources, do not use it."""
    from mera import _runtime_archive

    monkeypatch.setenv("MERA_CACHE_DIR", str(tmp_path / "empty-cache"))
    tc = build_mod.toolchain("x86")
    packaged = build_mod.packaged_runtime_archive(tc)
    pkg = os.path.dirname(os.path.abspath(mera.__file__))
    assert packaged == os.path.join(pkg, "_runtime", "x86", "libmera_rt.a"), packaged
    manifest = json.load(open(os.path.join(os.path.dirname(packaged), "manifest.json")))
    assert manifest["sources"] == build_mod._sources_hash(build_mod.csrc_dir())
    with mera.build_config(target="IP", arch=100):
        mera.build(small.mod, {}, output_dir=str(tmp_path / "d"), layout="NHWC")
    log = capsys.readouterr().out
    assert f"(runtime archive prebuilt at install: {packaged})" in log, log
    assert "compiling the C runtime" not in log
    assert not os.path.exists(tmp_path / "empty-cache" / "runtime")  # nothing compiled into the cache
    assert build_mod.packaged_runtime_archive(build_mod.toolchain("arm")) is None  # built on first use
    # a manifest that does not match the sources (an edited tree) is not used
    fake = tmp_path / "pkg"
    folder = fake / "_runtime" / "x86"
    folder.mkdir(parents=True)
    (folder / "libmera_rt.a").write_bytes(b"!<arch>\n")
    root = build_mod.csrc_dir()
    (folder / "manifest.json").write_text(json.dumps(_runtime_archive.manifest("x86", root, "cc 1")))
    assert _runtime_archive.packaged_archive("x86", root, str(fake)) == str(folder / "libmera_rt.a")
    (folder / "manifest.json").write_text(json.dumps(dict(_runtime_archive.manifest("x86", root, "cc"),
                                                          sources="0" * 64)))
    assert _runtime_archive.packaged_archive("x86", root, str(fake)) is None


def test_app_refuses_bad_inputs_and_arguments(small, app, tmp_path_factory, tmp_path):
    d, _ = deploy(small, "InterpreterHw", tmp_path_factory)
    bad = tmp_path / "bad"
    shutil.copytree(d, bad)
    x = small.x.tobytes()
    for data, msg in [(x[:-1], f"has {len(x) - 1} bytes, expected {len(x)}"), (x + b"\0", "expected"),
                      (None, "cannot open input 0")]:
        if data is None:
            os.unlink(bad / "input0.bin")
        else:
            (bad / "input0.bin").write_bytes(data)
        r = run_app(app, bad, "-n", "1")
        assert r.returncode == 1 and msg in r.stderr and "input0.bin" in r.stderr, r.stderr
    (bad / "input0.bin").write_bytes(x)
    (bad / "ref_result_0.bin").write_bytes(b"\0" * 3)
    r = run_app(app, bad, "-n", "1")
    assert r.returncode == 1 and "ref_result_0.bin" in r.stderr, r.stderr
    os.unlink(bad / "ref_result_0.bin")
    r = run_app(app, bad, "-n", "1")
    assert r.returncode == 0 and "No ref_result_0.bin" in r.stdout, r.stdout + r.stderr
    for args in (["-n", "0"], ["-n", "x"], ["--bogus"]):
        r = run_app(app, bad, *args)
        assert r.returncode != 0 and r.stderr, args
    r = subprocess.run([app, str(tmp_path / "nowhere")], capture_output=True, text=True)
    assert r.returncode == 1 and "not a deploy directory" in r.stderr


# ---- atomic builds ------------------------------------------------------------------------------

def _snapshot(d):
    """{name: (mtime, bytes)} of the files in d ({name: None} for folders)."""
    out = {}
    for p in sorted(os.listdir(d)):
        f = os.path.join(d, p)
        if os.path.isdir(f):
            out[p] = None
        else:
            with open(f, "rb") as fh:
                out[p] = (os.stat(f).st_mtime_ns, fh.read())
    return out


def test_build_touches_nothing_else_and_leaves_no_temp_files(small, tmp_path, capsys):
    (tmp_path / "input0.bin").write_bytes(small.x.tobytes())
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "deploy.json").write_text("not mine to touch")
    before = _snapshot(tmp_path / "sub"), {p: _snapshot(tmp_path)[p] for p in ("input0.bin", "notes.txt")}
    with mera.build_config(target="InterpreterHw"):
        mera.build(small.mod, {}, output_dir=str(tmp_path), layout="NHWC")
        mera.build(small.mod, {}, output_dir=str(tmp_path), layout="NHWC")  # over an existing build
    after = _snapshot(tmp_path / "sub"), {p: _snapshot(tmp_path)[p] for p in ("input0.bin", "notes.txt")}
    assert before == after
    assert sorted(os.listdir(tmp_path)) == ["deploy.json", "deploy.params", "deploy.so", "input0.bin", "notes.txt",
                                            "sub"]
    assert oct(os.stat(tmp_path / "deploy.json").st_mode & 0o777) != "0o600"
    log = capsys.readouterr().out
    assert "mera.build: wrote deploy.so" in log and "(runtime archive prebuilt at install" in log


def test_failed_build_keeps_the_previous_files(small, tmp_path, monkeypatch):
    with mera.build_config(target="IP", arch=100):
        mera.build(small.mod, {}, output_dir=str(tmp_path), layout="NHWC")
    before = _snapshot(tmp_path)
    real = build_mod.Toolchain
    # the compiler fails: /bin/false as the C compiler (a new cache key, so the archive build runs)
    monkeypatch.setattr(build_mod, "toolchain", lambda host_arch: real(host_arch, shutil.which("false"), "ar"))
    with mera.build_config(target="IP", arch=100):
        with pytest.raises(mera.MeraError, match="failed"):
            mera.build(small.mod, {}, output_dir=str(tmp_path), layout="NHWC")
    monkeypatch.undo()
    # the link fails (the archive is cached)
    monkeypatch.setattr(build_mod, "link_deploy_so", lambda *a: (_ for _ in ()).throw(mera.MeraError("link failed")))
    with mera.build_config(target="Simulator", arch=200):
        with pytest.raises(mera.MeraError, match="link failed"):
            mera.build(small.mod, {}, output_dir=str(tmp_path), layout="NHWC")
    monkeypatch.undo()
    # an interrupt while the data files are written (deploy.so is linked): nothing changes
    real_write = build_mod.DeployTransaction.write

    def interrupted(self, name, data):
        if name == "deploy.params":
            raise KeyboardInterrupt
        real_write(self, name, data)
    monkeypatch.setattr(build_mod.DeployTransaction, "write", interrupted)
    with mera.build_config(target="Simulator", arch=200):
        with pytest.raises(KeyboardInterrupt):
            mera.build(small.mod, {}, output_dir=str(tmp_path), layout="NHWC")
    monkeypatch.undo()
    assert _snapshot(tmp_path) == before  # the previous build, whole; no temporary files
    assert not [p for p in os.listdir(tmp_path.parent) if ".mera-build-" in p]
    assert_same(small.reference("IP"), mera.load_runtime_module(str(tmp_path))(small.x), "previous build")
    with mera.build_config(target="IP", arch=100):
        mera.build(small.mod, {}, output_dir=str(tmp_path), layout="NHWC")
    assert_same(small.reference("IP"), mera.load_runtime_module(str(tmp_path))(small.x), "rebuilt")


def test_build_argument_errors(small, resnet18, tmp_path, monkeypatch):
    with pytest.raises(mera.ConfigError, match="build needs a target"):
        mera.build(small.mod, {}, output_dir=str(tmp_path))
    with mera.build_config(target="InterpreterHw"):
        with pytest.raises(mera.ConfigError, match="layout='NCHW' but input 'input0' of the module is NHWC"):
            mera.build(small.mod, {}, output_dir=str(tmp_path), layout="NCHW")
        with pytest.raises(mera.ConfigError, match="layout must be"):
            mera.build(small.mod, {}, output_dir=str(tmp_path), layout="HWC")
        with pytest.raises(mera.ConfigError, match="host_arch must be 'x86' or 'arm'"):
            mera.build(small.mod, {}, output_dir=str(tmp_path), host_arch="riscv", layout="NHWC")
        with pytest.raises(mera.ConfigError, match="unknown aux_config key.*'bogus'"):
            mera.build(small.mod, {}, output_dir=str(tmp_path), layout="NHWC", aux_config={"bogus": 1})
        with pytest.raises(mera.RuntimeInputError, match="param .* is missing"):
            mera.build(resnet18.mod, {}, output_dir=str(tmp_path))
        monkeypatch.setattr(build_mod, "_which", lambda name: None)
        with pytest.raises(mera.ConfigError, match="apt-get install gcc-aarch64-linux-gnu"):
            mera.build(small.mod, {}, output_dir=str(tmp_path), host_arch="arm", layout="NHWC")
    assert os.listdir(tmp_path) == []
    # output_dir=None: a fresh temporary directory
    monkeypatch.undo()
    with mera.build_config(target="InterpreterHw"):
        _, _, lib = mera.build(small.mod, {}, layout="NHWC", aux_config={"weight_layout": "OIHW"})
    try:
        assert os.path.basename(os.path.dirname(lib)).startswith("mera_deploy_")
        assert sorted(os.listdir(os.path.dirname(lib))) == ["deploy.json", "deploy.params", "deploy.so"]
    finally:
        shutil.rmtree(os.path.dirname(lib))


# ---- deploy.so: exports, dependencies, cache ----------------------------------------------------

def test_deploy_so_exports_only_the_abi_and_needs_only_libc(small, tmp_path_factory):
    d, _ = deploy(small, "IP", tmp_path_factory)
    nm = need("nm")
    out = subprocess.run([nm, "-D", "--defined-only", str(d / "deploy.so")], capture_output=True, text=True,
                         check=True).stdout
    names = sorted(line.split()[-1] for line in out.splitlines() if line.strip())
    assert names == sorted(build_mod.ABI_FUNCTIONS), names
    out = subprocess.run([need("readelf"), "-d", str(d / "deploy.so")], capture_output=True, text=True,
                         check=True).stdout
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", out)
    assert "libc.so.6" in needed and all(re.fullmatch(r"lib(c|m|pthread)\.so\.\d|ld-linux[-\w.]*\.so\.\d", x)
                                         for x in needed), needed
    out = subprocess.run([need("ldd"), str(d / "deploy.so")], capture_output=True, text=True, check=True).stdout
    libs = [line.split()[0] for line in out.splitlines() if line.strip()]
    assert all(re.match(r"(linux-vdso|libc\.so|libm\.so|libpthread\.so|/lib.*/ld-linux)", x) for x in libs), libs


@pytest.fixture(scope="module")
def compiler_symbols(tmp_path_factory):
    """The global symbols the compiler group's objects (passes, quantizer, scheduler, codegen,
    driver) define, compiled here with deploy.so's flags."""
    from mera import _sources

    work = tmp_path_factory.mktemp("compiler-objs")
    root = build_mod.csrc_dir()
    objs = []
    for rel in _sources.files(root, ["compiler"]):
        obj = work / (rel.replace(os.sep, "__")[:-2] + ".o")
        subprocess.run([need("gcc"), *build_mod.RUNTIME_CFLAGS, "-I", root, "-c", os.path.join(root, rel), "-o",
                        str(obj)], check=True)
        objs.append(str(obj))
    out = subprocess.run([need("nm"), "-g", "--defined-only", *objs], capture_output=True, text=True,
                         check=True).stdout
    return {line.split()[-1] for line in out.splitlines() if len(line.split()) == 3}


@pytest.mark.parametrize("target", ["IP", "InterpreterHw"])
def test_deploy_so_links_no_compiler_code(small, tmp_path_factory, compiler_symbols, target):
    """deploy.so holds the runtime only: no symbol that the compiler group's objects define
    appears in it, and the runtime archive mera.build links it from is compiled from the runtime
    group alone."""
    from mera import _sources

    d, _ = deploy(small, target, tmp_path_factory)
    compiler = compiler_symbols
    assert {"mera_schedule", "mera_compile", "mera_pass_dce", "mera_quantizer_new", "mera_deploy_write"} <= compiler
    out = subprocess.run([need("nm"), str(d / "deploy.so")], capture_output=True, text=True, check=True).stdout
    in_so = {line.split()[-1] for line in out.splitlines() if line.strip()}
    assert "mera_rt_create" in in_so and "mera_interp_run" in in_so
    leaked = sorted(in_so & compiler)
    assert not leaked, f"deploy.so for {target} contains compiler code: {leaked[:20]}"
    assert not any(s.split(os.sep)[0] in _sources.GROUPS["compiler"] for s in build_mod.runtime_sources())


def test_runtime_archive_is_cached_by_sources_and_compiler(cache_dir, tmp_path, capsys):
    tc = build_mod.toolchain("x86")
    build_mod.runtime_archive(tc)  # built by an earlier test of this module, or now (run alone)
    path, cached = build_mod.runtime_archive(tc)
    assert cached and path.startswith(str(cache_dir)) and path.endswith("libmera_rt.a")
    # another C source tree is another archive
    src = tmp_path / "csrc"
    shutil.copytree(build_mod.csrc_dir(), src, ignore=shutil.ignore_patterns("python"))
    with open(src / "util" / "status.c", "a") as f:
        f.write("\n/* changed */\n")
    os.environ["MERA_CSRC_DIR"] = str(src)
    try:
        assert build_mod.csrc_dir() == str(src)
        path2, cached2 = build_mod.runtime_archive(tc)
    finally:
        del os.environ["MERA_CSRC_DIR"]
    assert not cached2 and path2 != path and os.path.isfile(path2)
    assert "compiling the C runtime for x86 once" in capsys.readouterr().out
    leftovers = [p for p in os.listdir(os.path.dirname(path2)) if p != "libmera_rt.a"]
    assert leftovers == []  # the build folder is gone
    assert "runtime/runtime.c" in build_mod.runtime_sources() and not any(
        s.startswith("python") for s in build_mod.runtime_sources())


# ---- host_arch="arm" ----------------------------------------------------------------------------

def test_arm_build_runs_under_qemu(small, app, tmp_path_factory, tmp_path):
    need("aarch64-linux-gnu-gcc")
    d = tmp_path / "arm"
    d.mkdir()
    small.x.tofile(d / "input0.bin")
    for k, r in enumerate(small.reference("IP")):
        r.tofile(d / f"ref_result_{k}.bin")
    with mera.build_config(target="IP", arch=100):
        json_str, _, lib = mera.build(small.mod, {}, output_dir=str(d), host_arch="arm", layout="NHWC")
    assert json.loads(json_str)["host_arch"] == "arm"
    with open(lib, "rb") as f:
        head = f.read(20)
    assert head[:4] == b"\x7fELF" and head[4] == 2 and struct.unpack("<H", head[18:20])[0] == 183  # EM_AARCH64
    # not loadable on this x86 host, and both loaders say why (not dlopen's "No such file or directory")
    with pytest.raises(mera.UnsupportedError, match=r"deploy\.so' was built for aarch64 \(mera.build "
                                                     r"host_arch='arm'\), but this machine is x86-64"):
        mera.load_runtime_module(str(d))
    r = run_app(app, d, "-n", "1")
    assert r.returncode == 1 and "No such file" not in r.stderr, r.stderr
    assert re.search(r"deploy\.so' was built for aarch64 \(mera.build host_arch=\"arm\"\), but this app runs on "
                     r"x86-64", r.stderr), r.stderr
    qemu = need("qemu-aarch64")
    assert os.path.isdir(ARM_SYSROOT), f"{ARM_SYSROOT} is missing: apt-get install libc6-dev-arm64-cross"
    exe = cmake_build(tmp_path / "app-arm", "-DCMAKE_SYSTEM_NAME=Linux", "-DCMAKE_SYSTEM_PROCESSOR=aarch64",
                      f"-DCMAKE_C_COMPILER={need('aarch64-linux-gnu-gcc')}")
    r = run_app(exe, d, "-n", "1", "-w", "0", prefix=(qemu, "-L", ARM_SYSROOT))
    assert_app_ok(r)
    assert "Device latency:" in r.stdout
