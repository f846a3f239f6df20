"""MERA's pre-2021 names (`from tvm.relay import ec`): `mera.ec` and `mera.relay.ec`.

The second original document (dna-IP-series README before commit d4672e3) runs as
examples/resnet50_ec.py with only its import lines changed, and the C app ends
`correct ratio: 1` on what it built."""

import re

import numpy as np
import pytest
import torch

import mera
from test_examples import app, check_deploy_dir, run_example  # noqa: F401  (app is a fixture)


class TinyNet(torch.nn.Module):
    """A small quantizable CNN (conv-bn-relu, pool, linear): fast to quantize, trace and build."""

    def __init__(self):
        super().__init__()
        self.quant = torch.ao.quantization.QuantStub()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.relu = torch.nn.ReLU()
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(8, 10)
        self.dequant = torch.ao.quantization.DeQuantStub()

    def forward(self, x):
        x = self.pool(self.relu(self.bn(self.conv(self.quant(x)))))
        return self.dequant(self.fc(torch.flatten(x, 1)))


def tiny_quantized_net(seed=0, shape=(1, 3, 16, 16)):
    """TinyNet quantized with PyTorch's fbgemm PTQ, traced: (script_module, NCHW input)."""
    torch.manual_seed(seed)
    torch.backends.quantized.engine = "fbgemm"
    m = TinyNet().eval()
    with torch.no_grad():
        m.bn.running_mean.uniform_(-0.2, 0.2)
        m.bn.running_var.uniform_(0.5, 2.0)
    m = torch.ao.quantization.fuse_modules(m, [["conv", "bn", "relu"]])
    m.qconfig = torch.ao.quantization.get_default_qconfig("fbgemm")
    torch.ao.quantization.prepare(m, inplace=True)
    x = torch.rand(shape)
    with torch.no_grad():
        for _ in range(4):
            m(torch.rand(shape))
    torch.ao.quantization.convert(m, inplace=True)
    with torch.no_grad():
        traced = torch.jit.trace(m, x).eval()
    return traced, x


def test_the_ec_names_are_meras():
    from mera import ec as ec1
    from mera.relay import ec as ec2
    assert ec1 is ec2 is mera.ec
    assert ec1.build_config is mera.build_config and ec1.build is mera.build
    assert ec1.load_runtime_module is mera.load_runtime_module and ec1.test_util is mera.test_util
    assert ec1.test_util.run_ec_backend is mera.test_util.run_mera_backend
    with pytest.raises(mera.ConfigError, match="target is not provided"):
        ec1.build_config()


def test_the_ec_flow_in_process(tmp_path, capsys):
    """The document's steps 3 to 5 with ec names, empty config, on a small model; the directory
    loaded with ec.load_runtime_module gives InterpreterHw's bytes."""
    from mera.relay import ec
    traced, x = tiny_quantized_net()
    nhwc = np.ascontiguousarray(x.numpy().transpose(0, 2, 3, 1))
    ref = traced(x).numpy()
    with ec.build_config(target="InterpreterHw"):
        int_result = ec.test_util.run_ec_backend(traced, nhwc, ref_results=ref, layout="NHWC")
    log = capsys.readouterr().out
    assert "Elapsed" in log and "correct ratio: 1.0" in log, log
    assert np.array_equal(int_result[0], ref)
    mod, params = mera.relay.frontend.from_pytorch(traced, [("input0", nhwc.shape)], layout="NHWC")
    config = {}
    out_dir = str(tmp_path / "deploy")
    with ec.build_config(target="IP", **config):
        json_str, params_bytes, lib_path = ec.build(mod, params, output_dir=out_dir, host_arch="x86", layout="NHWC")
    assert "for IP on DNAF200L0002" in capsys.readouterr().out  # MERA's default platform
    rt = ec.load_runtime_module(json_str, params_bytes, lib_path)
    assert rt.set_input(0, nhwc).run().get_output(0).tobytes() == int_result[0].tobytes()


def test_second_document_script_runs_and_the_app_ends_correct_ratio_1(tmp_path, app):  # noqa: F811
    """examples/resnet50_ec.py: the document's script with only its imports changed (ResNet-50, as
    the document has it: the script has no way to choose another model)."""
    r = run_example("resnet50_ec.py", tmp_path)
    assert "Elapsed" in r.stdout
    assert re.search(r"^mera\.build: 'QuantizableResNet' for IP on DNAF200L0002", r.stdout, re.M), r.stdout
    out = check_deploy_dir(tmp_path / "resnet50_deploy", app, 224 * 224 * 3, 1000)
    assert out.stdout.rstrip().endswith("correct ratio: 1"), out.stdout
