# A script in the style of MERA 1.x's tutorials (mera.TVMDeployer, mera.ModelLoader.from_pytorch,
# deployer.deploy, deployment.get_runner().set_input().run().get_outputs()). A MERA 1.x user's
# script runs with one import changed:
#   from torchvision.models.quantization import resnet as qresnet  ->  from mera.models import resnet as qresnet
# (the zoo's weights are seeded random ones: no model hub here).
#
#   python examples/deployer_1x.py [resnet18 | resnet50]      (default resnet18)
#
# It writes the MERA project deployment_<model>/ (project.mdp, model/, data/, build/<Target>/result/
# deploy.so, deploy.json, deploy.params), runs InterpreterHw for the reference, then Simulator and
# IP, and checks both against it byte for byte.
import sys
import torch
import numpy as np

import mera
from mera import Target, Platform

from mera.models import resnet as qresnet

model_name = sys.argv[1] if len(sys.argv) > 1 else "resnet18"
model_path = f"{model_name}.pt"
out_dir = f"deployment_{model_name}"
input_desc = {"input0": ((1, 224, 224, 3), "float32")}
mera_platform = Platform.DNAF100L0003

torch.manual_seed(123)
inp = torch.rand((1, 3, 224, 224))
model = getattr(qresnet, model_name)(pretrained=True).eval()
model.fuse_model()
model.qconfig = torch.quantization.get_default_qconfig("fbgemm")
torch.quantization.prepare(model, inplace=True)
model(inp)
torch.quantization.convert(model, inplace=True)
with torch.no_grad():
    torch.jit.save(torch.jit.trace(model, inp).eval(), model_path)
nhwc_inp = np.ascontiguousarray(inp.numpy().transpose(0, 2, 3, 1))

with mera.TVMDeployer(out_dir, overwrite=True) as deployer:
    model = mera.ModelLoader(deployer).from_pytorch(model_path, input_desc)

    deploy_int = deployer.deploy(model, mera_platform=mera_platform, target=Target.InterpreterHw)
    int_result = deploy_int.get_runner().set_input(nhwc_inp).run().get_outputs()
    for idx, res in enumerate(int_result):
        deployer.save_data_file(f"ref_result_{idx}.bin", res.flatten().astype(np.float32))

    deploy_sim = deployer.deploy(model, mera_platform=mera_platform, build_config={}, target=Target.Simulator,
                                 host_arch="x86")
    deploy_ip = deployer.deploy(model, mera_platform=mera_platform, target=Target.IP, host_arch="x86")

for name, deploy, key in (("Simulator", deploy_sim, "sim_time_us"), ("IP", deploy_ip, "elapsed_latency")):
    run_res = deploy.get_runner().set_input(nhwc_inp).run()
    for int_data, hw_data in zip(int_result, run_res.get_outputs()):
        assert np.array_equal(int_data, hw_data), name
    m = run_res.get_runtime_metrics()[0]
    print(f"{name}: same bytes as InterpreterHw; {key} {m[key] / 1000:.3f} ms "
          f"(device {m['device_us'] / 1000:.3f} ms = {m['device_cycles']} cycles at {m['clock_mhz']:g} MHz, "
          f"host {m['host_us'] / 1000:.3f} ms)")

print("SUCCESS")
