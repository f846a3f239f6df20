"""The compile driver (csrc/driver/driver.c, mera_compile): every entry point
goes through it, the backend table is the one list of targets, dump_ir
writes what each stage made, passes change what runs but never the
interface or a byte.
"""

import os

import numpy as np
import pytest

import mera
from mera import _core, ir
from mera.config import Target


def small_model(dead_branch=False):
    """quantized NHWC: conv+relu -> add with itself -> max pool (all DNA ops)."""
    rng = np.random.default_rng(11)
    b = ir.Builder("small")
    x = b.input("input0", (1, 9, 10, 8), "uint8", qparams=(0.02, 100), layout="NHWC")
    w = b.param("conv.weight", rng.integers(-127, 128, (16, 8, 3, 3), dtype=np.int8),
                qparams=(rng.uniform(0.002, 0.01, 16), np.zeros(16, np.int32), 0))
    y = b.conv2d(x, w, None, padding=[1, 1, 1, 1], layout="NHWC", activation="relu", out_scale=0.05,
                 out_zero_point=0, name="conv")
    s = b.add(y, y, out_scale=0.1, out_zero_point=0, name="sum")
    if dead_branch:
        b.relu(s, name="nobody_reads_me")
    out = b.max_pool2d(s, kernel=[2, 2], strides=[2, 2], layout="NHWC", name="pool")
    mod = b.finish(out)
    return mod, b.params, rng.integers(0, 256, (1, 9, 10, 8), dtype=np.uint8)


def test_the_backend_table_is_the_list_of_targets():
    table = _core.backends()
    assert sorted(b["name"] for b in table) == sorted(t.value for t in Target)
    by = {b["name"]: b for b in table}
    assert by["Simulator"]["runs_program"] and by["IP"]["runs_program"]
    assert not by["Interpreter"]["runs_program"] and not by["InterpreterHw"]["runs_program"]
    assert _core.backend_info("IP") == by["IP"]
    # what the Python package does per target is data of the table, never a comparison of names
    assert [(b["name"], b["interp_mode"]) for b in table if b["node_by_node"]] == [("Interpreter", "float"),
                                                                                 ("InterpreterHw", "hw")]
    assert all(b["interp_mode"] is None for b in table if not b["node_by_node"])
    assert [b["name"] for b in table if b["runs_through_deploy"]] == ["IP"]
    assert {b["name"]: b["mera_time_key"] for b in table} == {"Interpreter": None, "InterpreterHw": None,
                                                              "Simulator": "sim_time_us", "IP": "elapsed_latency"}
    with pytest.raises(mera.ConfigError, match="unknown target 'GPU'; targets: Interpreter, InterpreterHw"):
        _core.backend_info("GPU")


def test_every_in_process_target_gives_the_same_bytes_through_the_driver():
    mod, params, x = small_model()
    outs = {}
    for t in ("InterpreterHw", "Simulator"):
        with mera.build_config(target=t, sim_log=False):
            outs[t] = mera.compile(mod, params)(x)
    assert np.array_equal(outs["InterpreterHw"][0], outs["Simulator"][0])


def test_dce_removes_dead_nodes_and_keeps_the_interface():
    mod, params, x = small_model(dead_branch=True)
    assert "nobody_reads_me" in str(mod)
    for t in ("InterpreterHw", "Simulator"):
        core = _core.Compiled(mod._graph, t, _params(mod, params), platform="DNAF100L0003")
        text = core.graph_text()
        assert "nobody_reads_me" not in text and "conv" in text
        if t == "Simulator":
            assert [e["node"] for e in core.partition()] == ["conv", "sum", "pool"]
    live, _, _ = small_model()
    with mera.build_config(target="InterpreterHw"):
        assert np.array_equal(mera.compile(mod, params)(x)[0], mera.compile(live, params)(x)[0])


def _params(mod, params):
    from mera.runner import _params_list

    return _params_list(mod, params)


def test_dump_ir_writes_each_stage(tmp_path):
    mod, params, x = small_model(dead_branch=True)
    d = tmp_path / "dumps"
    with mera.build_config(target="Simulator", sim_log=False, dump_ir=str(d)):
        mera.compile(mod, params)(x)
    files = sorted(os.listdir(d))
    stages = _core.stage_names()
    assert files[0] == "00-input.ir" and "partition" in " ".join(files) and "schedule" in " ".join(files), files
    for f in files:
        n, rest = f.split("-", 1)
        assert rest.split(".")[0] == stages[int(n)], f
    # the input dump is the graph as the frontend gave it; dce's drops the dead node
    assert (d / "00-input.ir").read_text() == str(mod)
    dce = (d / f"{stages.index('dce'):02d}-dce.ir").read_text()
    assert "nobody_reads_me" not in dce
    part = (d / f"{stages.index('partition'):02d}-partition.txt").read_text()
    assert "3 of 3 nodes on the DNA" in part and "conv (conv2d)" in part
    sched = (d / f"{stages.index('schedule'):02d}-schedule.txt").read_text()
    assert "segment 0 DNA" in sched and "layer" in sched and "input0" in sched
    prog = (d / f"{stages.index('program'):02d}-program.txt").read_text()
    assert prog.startswith("; DNA program, ISA version ") and "\nsegment 0 dna insns=[0, " in prog, prog[:300]
    assert "'conv' conv2d" in prog and " CONV  compute " in prog and "not in a segment" not in prog


def test_dump_ir_stages_choose_what_is_written(tmp_path):
    mod, params, x = small_model()
    with mera.build_config(target="Simulator", sim_log=False, dump_ir=str(tmp_path), dump_ir_stages=["partition"]):
        mera.compile(mod, params)
    assert os.listdir(tmp_path) == [f"{_core.stage_names().index('partition'):02d}-partition.txt"]
    # an interpreter has no partition or schedule: only graph stages are written
    with mera.build_config(target="InterpreterHw", dump_ir=str(tmp_path / "hw"), dump_ir_stages="input,dce"):
        mera.compile(mod, params)
    assert sorted(os.listdir(tmp_path / "hw")) == ["00-input.ir", f"{_core.stage_names().index('dce'):02d}-dce.ir"]


def test_dump_ir_true_in_build_writes_beside_the_deploy_files(tmp_path):
    mod, params, x = small_model()
    with mera.build_config(target="InterpreterHw", dump_ir="true"):
        mera.build(mod, params, output_dir=str(tmp_path), host_arch="x86", layout="NHWC")
    assert "00-input.ir" in os.listdir(tmp_path / "dump_ir")


def test_dump_ir_errors():
    with pytest.raises(mera.ConfigError, match="unknown stage.*'parse'.*stages: input, "):
        mera.build_config(target="Simulator", dump_ir=True, dump_ir_stages="input,parse")
    mod, params, _ = small_model()
    with pytest.raises(mera.ConfigError, match="dump_ir: unknown stage 'bogus'"):
        _core.Compiled(mod._graph, "InterpreterHw", _params(mod, params), dump_dir="/tmp", dump_stages="bogus")
    with pytest.raises(mera.MeraIOError, match="dump_ir: cannot write '/nonexistent/dir/00-input.ir'"):
        _core.Compiled(mod._graph, "InterpreterHw", _params(mod, params), dump_dir="/nonexistent/dir")


def test_driver_errors_name_what():
    mod, params, _ = small_model()
    with pytest.raises(mera.ConfigError, match="unknown target 'TPU'"):
        _core.Compiled(mod._graph, "TPU", _params(mod, params))
    with pytest.raises(mera.ConfigError, match="target Simulator needs a platform"):
        _core.Compiled(mod._graph, "Simulator", _params(mod, params))
    with pytest.raises(mera.MeraError, match="compiled with load=False"):
        _core.Compiled(mod._graph, "InterpreterHw", _params(mod, params), load=False).run([])
    with pytest.raises(mera.MeraError, match="runs no DNA program"):
        _core.Compiled(mod._graph, "InterpreterHw", _params(mod, params)).program_info()


def test_interp_takes_its_mode_from_the_backend_table():
    """mera._core.Interp (the quantizer's node-by-node runs) looks the target up in the table:
    the same bytes as the driver's Interpreter and InterpreterHw, which differ on this graph
    (the float interpreter emulates the quantized conv in float; 0.1 * 0.1 / 0.3 lands many
    products on or near a rounding tie); other targets are refused."""
    b = ir.Builder("ties")
    x = b.input("input0", (1, 16, 16, 1), "uint8", qparams=(0.1, 100), layout="NHWC")
    w = b.param("w", np.arange(-63, 64, dtype=np.int8).reshape(127, 1, 1, 1),
                qparams=(np.full(127, 0.1), np.zeros(127, np.int32), 0))
    mod = b.finish(b.conv2d(x, w, None, layout="NHWC", out_scale=0.3, out_zero_point=128, name="conv"))
    params = _params(mod, b.params)
    xs = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
    got = {}
    for target in ("Interpreter", "InterpreterHw"):
        got[target] = _core.Interp(mod._graph, target, params).run([xs])[0]
        ref = _core.Compiled(mod._graph, target, params).run([xs])[0]
        assert got[target].dtype == ref.dtype == np.uint8 and np.array_equal(got[target], ref), target
    assert not np.array_equal(got["Interpreter"], got["InterpreterHw"])
    with pytest.raises(mera.ConfigError, match="Interp: target 'Simulator' does not run the graph node by node; "
                                               "the targets that run node by node: Interpreter, InterpreterHw"):
        _core.Interp(mod._graph, "Simulator", params)
    with pytest.raises(mera.ConfigError, match="Interp: target 'GPU' is unknown"):
        _core.Interp(mod._graph, "GPU", params)


def test_ip_backend_runs_in_process_through_the_table():
    """The IP entry of the table (the emulated device through the HAL) without deploy.so: the
    same bytes as InterpreterHw, serialized runs from several threads included."""
    import concurrent.futures

    mod, params, x = small_model()
    with mera.build_config(target="InterpreterHw"):
        ref = mera.compile(mod, params)
    ip = _core.Compiled(mod._graph, "IP", _params(mod, params), platform="DNAF100L0003")
    assert ip.target == "IP" and ip.runs_program
    xs = [np.random.default_rng(i).integers(0, 256, x.shape, dtype=np.uint8) for i in range(16)]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda a: ip.run([a])[0], xs))
    for a, g in zip(xs, got):
        assert np.array_equal(ref(a)[0], g)
    assert ip.timing()["device_cycles"] > 0
