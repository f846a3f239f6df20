"""Every error the public entry points raise for bad arguments is a MeraError: seeded random junk
(wrong types, NULs, non-UTF-8 text, NaN, huge and negative numbers, arrays where strings go) for
mera.ir.Builder, Module, build_config, compile, a Runner, build, the frontends and the Quantizer."""

import os
import random

import numpy as np
import pytest

import mera
from mera import ir

JUNK = [None, 0, -1, 1, 2 ** 70, 1.5, float("nan"), float("inf"), "", "x", "a\0b", "\udcff", b"\xff", [], [1, -2],
        [[1]], (1, 2, 3, 4), {}, {"a": 1}, object(), np.zeros(3, np.float32), np.zeros((0,), np.int8),
        np.array([1, 2], dtype=object), np.float64(1.0), True, "float32", "NHWC", "NCHW", "bogus", (0.1, 3), (0.1,),
        (1.0, 2, 3)]
ATTR_NAMES = ["axis", "strides", "padding", "activation", "scale", "zero_point", "foo", "layout", "alpha"]
CONFIG_KEYS = ["arch", "scheduler_config", "dump_ir", "platform", "bogus", "max_tile_height", "compiler_workers"]


class Escapes:
    """Calls whose exception is not a MeraError: (what, exception) of each."""

    def __init__(self):
        self.found = []

    def call(self, what, fn):
        try:
            fn()
        except mera.MeraError:
            pass
        except Exception as e:  # noqa: BLE001 - what the test looks for
            self.found.append(f"{what}: {type(e).__name__}: {e}")


def test_random_bad_arguments_raise_mera_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # junk that is a valid path ("x", "\udcff") is written here
    rng = random.Random(2026)
    junk = lambda: rng.choice(JUNK)  # noqa: E731
    esc = Escapes()
    ops = list(ir.OPS)
    out = str(tmp_path / "out")
    for i in range(150):
        b = ir.Builder("g")
        x = b.input("x", (1, 4, 4, 3), layout="NHWC")
        esc.call("Builder", lambda: ir.Builder(junk()))
        esc.call("Builder.input", lambda: b.input(junk(), junk(), junk(), layout=junk(), qparams=junk()))
        esc.call("Builder.input shape", lambda: b.input(f"i{i}", junk()))
        esc.call("Builder.param", lambda: b.param(junk(), junk(), layout=junk(), qparams=junk()))
        esc.call("Builder.const", lambda: b.const(junk(), name=junk(), layout=junk(), qparams=junk()))
        op = rng.choice(ops)
        attrs = {rng.choice(ATTR_NAMES): junk() for _ in range(rng.randint(0, 2))}
        args = [rng.choice([x, junk()]) for _ in range(rng.randint(0, 3))]
        esc.call(f"Builder.op {op}", lambda: b.op(op, *args, name=junk(), source=junk(), **attrs))
        esc.call("Builder.op name", lambda: b.op(junk()))
        esc.call("Builder.finish", lambda: b.finish(junk()))
        mod = b.finish(b.relu(x))
        esc.call("build_config", lambda: mera.build_config(target=junk(), **{rng.choice(CONFIG_KEYS): junk()}))
        esc.call("compile", lambda: mera.compile(mod, junk(), target=rng.choice(["Interpreter", junk()])))
        runner = mera.compile(mod, {}, target="Interpreter")
        esc.call("Runner()", lambda: runner(junk()))
        esc.call("Runner.set_input", lambda: runner.set_input(junk()))
        esc.call("Module.deserialize", lambda: ir.Module.deserialize(junk()))
        esc.call("Module.load", lambda: ir.Module.load(junk()))
        esc.call("Module.save", lambda: mod.save(junk()))
        esc.call("Quantizer", lambda: mera.Quantizer(junk(), junk()))
        esc.call("from_onnx", lambda: mera.frontend.from_onnx(junk(), junk(), layout=junk()))
        esc.call("from_pytorch", lambda: mera.frontend.from_pytorch(junk(), junk(), layout=junk()))
        if i % 10 == 0:  # argument checks of build (a valid combination links: keep them few)
            with mera.build_config(target="Interpreter"):
                esc.call("build", lambda: mera.build(mod, junk(), host_arch=rng.choice(["x86", junk()]),
                                                     output_dir=rng.choice([out, junk()]),
                                                     layout=rng.choice(["NHWC", junk()]), aux_config=junk()))
            esc.call("build mod", lambda: mera.build(junk(), {}))
    assert esc.found == [], "\n".join(sorted(set(esc.found)))


def test_bad_paths_are_io_errors(tmp_path):
    b = ir.Builder("g")
    mod = b.finish(b.relu(b.input("x", (1, 4))))
    for bad in (1, 0, None, b"x"):  # an int would be taken by open() as a file descriptor
        with pytest.raises(mera.MeraIOError, match="expected a path"):
            ir.Module.load(bad)
        with pytest.raises(mera.MeraIOError, match="expected a path"):
            mod.save(bad)
    with pytest.raises(mera.MeraIOError, match="cannot read IR file"):
        ir.Module.load(str(tmp_path / "a\0b"))
    with mera.build_config(target="Interpreter"):
        with pytest.raises(mera.MeraIOError, match="cannot create output_dir"):
            mera.build(mod, {}, output_dir=str(tmp_path / "a\0b"))
        with pytest.raises(mera.ConfigError, match="output_dir must be a path"):
            mera.build(mod, {}, output_dir=3)
    with pytest.raises(mera.GraphError, match="input 'a\\\\x00b'"):
        ir.Builder("g").input("a\0b", (1,))


def test_random_bad_quantizer_arguments_raise_mera_errors():
    rng = random.Random(7)
    arrays = [np.zeros((1, 4, 4, 3), np.float32), np.full((1, 4, 4, 3), np.nan, np.float32),
              np.zeros((2, 4, 4, 3), np.float64)]
    junk = lambda: rng.choice(JUNK + arrays)  # noqa: E731
    b = ir.Builder("q")
    x = b.input("x", (1, 4, 4, 3), layout="NHWC")
    w = b.param("w", np.random.default_rng(0).standard_normal((2, 3, 1, 1)).astype(np.float32))
    mod, params = b.finish(b.conv2d(x, w, None, layout="NHWC")), dict(b.params)
    esc = Escapes()
    for _ in range(40):
        esc.call("Quantizer", lambda: mera.Quantizer((mod, params), junk(), layout=rng.choice(["NHWC", junk()]),
                                                     config=junk()))
        q = mera.Quantizer((mod, params))
        esc.call("calibrate", lambda: q.calibrate([junk() for _ in range(rng.randint(0, 2))], progress=junk()))
        esc.call("calibrate data", lambda: q.calibrate(junk(), progress=False))
        esc.call("quantize", q.quantize)
        esc.call("measure_quantization_quality", lambda: q.measure_quantization_quality([junk()], target=junk()))
    assert esc.found == [], "\n".join(sorted(set(esc.found)))
