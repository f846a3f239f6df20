"""MERA 1.x / 2.x's deployment API (mera/deployer.py): a 1.x-style script runs unchanged apart from
its imports on the Simulator and the IP, writes MERA's project layout, and what cannot apply here
is a clear error."""

import json
import os

import numpy as np
import pytest
import torch

import mera
from test_ec_names import tiny_quantized_net

# A MERA 1.x user's script, in the shape of MERA's tutorials (tutorials/pytorch/resnet50_*.py);
# the test provides out_dir, nhwc_inp, target and build_cfg, and a TorchScript file 'tiny.pt'.
SCRIPT_1X = """
import numpy as np
import mera
from mera import Target, Platform

model_path = 'tiny.pt'
input_desc = {'input0' : ((1, 16, 16, 3), 'float32')}
mera_platform = Platform.DNAF100L0003

with mera.TVMDeployer(out_dir, overwrite=True) as deployer:
    model = mera.ModelLoader(deployer).from_pytorch(model_path, input_desc)

    deploy_int = deployer.deploy(model, mera_platform=mera_platform, target=Target.InterpreterHw)
    int_result = deploy_int.get_runner().set_input(nhwc_inp).run().get_outputs()
    for idx, res in enumerate(int_result):
        deployer.save_data_file(f'ref_result_{idx}.bin', res.flatten().astype(np.float32))

    deploy = deployer.deploy(model, mera_platform=mera_platform, build_config=build_cfg, target=target,
                             host_arch='x86')

run_res = deploy.get_runner().set_input(nhwc_inp).run()
for int_data, hw_data in zip(int_result, run_res.get_outputs()):
    assert np.allclose(int_data, hw_data)
metrics = run_res.get_runtime_metrics()
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    traced, x = tiny_quantized_net(seed=3)
    d = tmp_path_factory.mktemp("tiny")
    torch.jit.save(traced, str(d / "tiny.pt"))
    return d / "tiny.pt", np.ascontiguousarray(x.numpy().transpose(0, 2, 3, 1)), traced(x).numpy()


def run_script(tmp_path, tiny, target, build_cfg):
    pt, x, _ = tiny
    os.symlink(pt, tmp_path / "tiny.pt")
    env = {"out_dir": "deployment_tiny", "nhwc_inp": x, "target": target, "build_cfg": build_cfg}
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        exec(compile(SCRIPT_1X, "mera1x_script.py", "exec"), env)
    finally:
        os.chdir(cwd)
    return env


@pytest.mark.parametrize("target", ["Simulator", "IP"])
def test_mera_1x_script_runs_unchanged(target, tiny, tmp_path):
    env = run_script(tmp_path, tiny, getattr(mera.Target, target), {"sim_freq_mhz": 300})
    _, x, ref = tiny
    outs = env["run_res"].get_outputs()
    assert len(outs) == 1 and outs[0].tobytes() == ref.tobytes()  # PyTorch's bytes
    assert env["int_result"][0].tobytes() == ref.tobytes()
    m = env["metrics"][0]
    key = "sim_time_us" if target == "Simulator" else "elapsed_latency"
    assert m[key] == pytest.approx(m["device_us"] + m["host_us"]) and m["device_cycles"] > 0
    assert m["platform"] == "DNAF100L0003" and m["target"] == target
    assert list(env["run_res"].get_output_dict()) == [o["name"] for o in env["run_res"].module.outputs]

    root = tmp_path / "deployment_tiny"
    prj = json.loads((root / "project.mdp").read_text())
    arts = prj["artifact_list"]
    for t in ("InterpreterHw", target):
        assert sorted(os.path.basename(p) for p in arts[t]) == sorted(
            ["build_config.yaml", "mera_cfg.json", "deploy.so", "deploy.json", "deploy.params"]), arts
        for f in ("deploy.so", "deploy.json", "deploy.params"):
            assert (root / "build" / t / "result" / f).is_file()
        assert json.loads((root / "build" / t / "mera_cfg.json").read_text())["arch"] == "DNAF100L0003"
    assert json.loads((root / "build" / target / "build_config.yaml").read_text()) == {"sim_freq_mhz": 300}
    assert sorted(os.path.basename(p) for p in arts["model"]) == ["input_desc.json", "tiny.pt"]
    assert json.loads((root / "model" / "input_desc.json").read_text()) == {
        "input0": {"input_shape": [1, 16, 16, 3], "input_type": "float32"}}
    assert np.fromfile(root / "data" / "ref_result_0.bin", np.float32).tobytes() == ref.tobytes()
    assert (root / "build" / target / "result" / "compile_metrics.json").is_file()
    log = (root / "logs" / "mera.log").read_text()
    assert f"deploy: 'tiny' for {target} on DNAF100L0003" in log and "mera.build: wrote deploy.so" in log

    # load_mera_deployment: a project with two targets needs target=; a plain result folder works too
    with pytest.raises(mera.ConfigError, match="several built targets"):
        mera.load_mera_deployment(str(root))
    for dep in (mera.load_mera_deployment(str(root), target=target),
                mera.load_mera_deployment(str(root / "build" / target / "result"))):
        assert dep.get_runner().set_input({"input0": x}).run().get_output(0).tobytes() == ref.tobytes()
    with pytest.raises(mera.ConfigError, match="target Interpreter is not built"):
        mera.load_mera_deployment(str(root), target="Interpreter")

    # overwrite=False keeps the project and adds to it; overwrite=True starts afresh
    with mera.Deployer(str(root)) as dep:
        assert dep.load_data_file("ref_result_0.bin").tobytes() == ref.tobytes()
    mera.Deployer(str(root), overwrite=True)
    assert json.loads((root / "project.mdp").read_text())["artifact_list"] == {}
    assert not (root / "build").exists()


def test_what_cannot_apply_is_a_clear_error(tiny, tmp_path):
    pt, x, _ = tiny
    root = tmp_path / "prj"
    with mera.Deployer(str(root)) as deployer:
        with pytest.raises(mera.MeraIOError, match="in use by another deployer"):
            with mera.Deployer(str(root)):
                pass
        with pytest.raises(mera.MeraIOError, match="in use by another deployer"):
            mera.Deployer(str(root), overwrite=True)  # does not remove a project in use
        assert (root / "project.mdp").is_file()
        loader = mera.ModelLoader(deployer)
        with pytest.raises(mera.MeraIOError, match="nope.pt' does not exist"):
            loader.from_pytorch(str(tmp_path / "nope.pt"), {"input0": ((1, 16, 16, 3), "float32")})
        with pytest.raises(mera.ConfigError, match="input_desc"):
            loader.from_pytorch(str(pt), {"input0": "big"})
        with pytest.raises(mera.UnsupportedError, match="use_prequantize_input"):
            loader.from_pytorch(str(pt), {"input0": ((1, 16, 16, 3), "float32")}, use_prequantize_input=True)
        for call in (lambda: loader.from_quantized_mera("m.mera"), lambda: loader.fuse_models([]),
                     lambda: loader.from_executorch("m.pte")):
            with pytest.raises(mera.UnsupportedError):
                call()
        model = loader.from_pytorch(str(pt), {"input0": ((1, 16, 16, 3), "float32")}, layout=mera.Layout.NHWC)
        assert model.model_name == "tiny" and model.get_input_shape() == (1, 16, 16, 3)
        with pytest.raises(mera.ConfigError, match="VerilatorSimulator and BF16 targets are not available"):
            deployer.deploy(model, target="SimulatorBf16")
        with pytest.raises(mera.ConfigError, match="unknown platform 'DNAX'"):
            deployer.deploy(model, mera_platform="DNAX", target=mera.Target.InterpreterHw)
        with pytest.raises(mera.ConfigError, match="unknown key"):
            deployer.deploy(model, build_config={"compiler_worker": 4}, target=mera.Target.InterpreterHw)
        with pytest.raises(mera.UnsupportedError, match="mcu_config"):
            deployer.deploy(model, target=mera.Target.InterpreterHw, mcu_config={"core": "m85"})
        with pytest.raises(mera.ConfigError, match="from mera.ModelLoader"):
            deployer.deploy("tiny.pt")
        with pytest.raises(mera.ConfigError, match="plain file name"):
            deployer.save_data_file("../x.bin", np.zeros(2))
        dep = deployer.deploy(model, target=mera.Target.InterpreterHw, mcu_config={})
    runner = dep.get_runner(mera.DeviceTarget.XILINX_U50)
    assert runner.device_target is mera.DeviceTarget.XILINX_U50 and dep.get_runner(2).device_target.code == 2
    assert dep.get_runner(device_ids=[0]).run  # one device, device 0: accepted
    with pytest.raises(mera.UnsupportedError, match="power"):
        runner.get_power_metrics()
    with pytest.raises(mera.UnsupportedError, match="device_ids"):
        dep.get_runner(device_ids=[0, 1])
    with pytest.raises(mera.UnsupportedError, match="tvm_debug_mode"):
        dep.get_runner(tvm_debug_mode=True)
    with pytest.raises(mera.ConfigError, match="device_target"):
        dep.get_runner(device_target=7)
    with pytest.raises(mera.RuntimeInputError, match="input0"):
        runner.set_input(np.zeros((1, 3, 16, 16), np.float32))

    (root / "project.mdp").write_text("artifact_list: [")
    with pytest.raises(mera.FormatError, match="project.mdp' is not a project file"):
        mera.load_mera_deployment(str(root))
    with pytest.raises(mera.MeraIOError, match="is not a directory"):
        mera.load_mera_deployment(str(tmp_path / "missing"))
    with pytest.raises(mera.MeraIOError, match="deploy.so' does not exist"):
        mera.load_mera_deployment(str(tmp_path))


def test_from_onnx_resolves_a_symbolic_batch(tmp_path):
    import onnx
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 8, 8])], [numpy_helper.from_array(w, "w")])
    path = tmp_path / "conv.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    ref = onnxruntime.InferenceSession(str(path)).run(None, {"x": x})[0]
    with mera.Deployer(str(tmp_path / "prj")) as deployer:
        model = mera.ModelLoader(deployer).from_onnx(str(path), batch_num=2, layout=mera.Layout.NCHW)
        assert model.get_input_shape("x") == (2, 3, 8, 8)
        dep = deployer.deploy(model, target=mera.Target.Interpreter)
    out = dep.get_runner().set_input(x).run().get_outputs()[0]
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    nhwc = mera.ModelLoader().from_onnx(str(path), shape_mapping={"N": 1})
    assert nhwc.get_input_shape() == (1, 8, 8, 3) and nhwc.layout == "NHWC"


def test_from_tflite_goes_through_the_tflite_frontend(tmp_path, monkeypatch):
    path = tmp_path / "m.tflite"
    path.write_bytes(b"TFL3")
    b = mera.ir.Builder("m")
    y = b.relu(b.input("input", (1, 4, 4, 3)))
    mod = b.finish([y])
    calls = []

    def fake_from_tflite(model_path, shape_dict):
        calls.append((model_path, shape_dict))
        return mod, {}

    monkeypatch.setattr(mera.frontend, "from_tflite", fake_from_tflite, raising=False)
    model = mera.ModelLoader(mera.Deployer(str(tmp_path / "prj"))).from_tflite(str(path))
    assert calls == [(str(path), None)] and model.model_name == "m" and model.layout == "NHWC"
    assert model.aux_config == {"weight_layout": "HWIO"} and (tmp_path / "prj" / "model" / "m.tflite").is_file()
    monkeypatch.delattr(mera.frontend, "from_tflite")
    with pytest.raises(mera.UnsupportedError, match="no TFLite frontend"):
        mera.ModelLoader().from_tflite(str(path))
