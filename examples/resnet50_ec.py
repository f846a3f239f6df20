# The ResNet-50 flow of the original MERA docs in their first version (dna-IP-series
# README before commit d4672e3, January 2021), when the compiler was still called `ec`,
# with only the import lines changed:
#   import tvm                       ->  import mera
#   from tvm import relay            ->  from mera import relay
#   from tvm.relay import ec         ->  from mera.relay import ec
#   from torchvision.models.quantization import resnet as qresnet
#                                    ->  from mera.models import resnet as qresnet
# The `config` dict was left for EdgeCortix to fill ("provided by EdgeCortix"); empty, it
# builds for MERA's default platform, DNAF200L0002. No ImageNet weights can be downloaded
# here: pretrained=True gives seeded random weights (with a warning).
#
# It writes resnet50_deploy/ (input0.bin, ref_result_0.bin, deploy.so, deploy.params,
# deploy.json); then, as the docs did, build and run the C inference app:
#   cmake -S apps/inference -B apps/inference/build && cmake --build apps/inference/build
#   apps/inference/build/inference resnet50_deploy
# (examples/run_example.sh resnet50_ec does all of it.)
import os
import torch
import numpy as np
import mera
from mera import relay
from mera.relay import ec

from mera.models import resnet as qresnet
model = qresnet.resnet50(pretrained=True).eval()

# ResNet-50 Pytorch model expects an input image with layout NCHW and size 224x224
inp = torch.rand((1, 3, 224, 224))
model.fuse_model()
model.qconfig = torch.quantization.get_default_qconfig('fbgemm')
torch.quantization.prepare(model, inplace=True)
model(inp)
torch.quantization.convert(model, inplace=True)
with torch.no_grad():
    script_module = torch.jit.trace(model, inp).eval()

def nchw_to_nhwc(arr):
    if len(arr.shape) != 4:
        return arr
    N, C, H, W = arr.shape
    ret = np.zeros((N, H, W, C), dtype=arr.dtype)
    for n in range(N):
        for c in range(C):
            for h in range(H):
                for w in range(W):
                    ret[n, h, w, c] = arr[n, c, h, w]
    return ret

# Save reference input and run the model on the interpreter
output_dir = "resnet50_deploy"
input_name = "input0"
input_layout = "NHWC"
nhwc_inp = nchw_to_nhwc(inp.numpy())
os.makedirs(output_dir, exist_ok=True)
nhwc_inp.flatten().astype(np.float32).tofile(os.path.join(output_dir, input_name+".bin"))

with ec.build_config(target="InterpreterHw"):
    int_result = ec.test_util.run_ec_backend(script_module, nhwc_inp, layout="NHWC")
    res_idx = 0
    for res in int_result:
        nhwc_res = res
        nhwc_res.flatten().astype(np.float32).tofile(
            os.path.join(output_dir, "ref_result_" + str(res_idx) + ".bin"))
        res_idx += 1

input_shapes = [(input_name, nhwc_inp.shape)]
mod, params = relay.frontend.from_pytorch(script_module,input_shapes,layout=input_layout)

config = {
# provided by EdgeCortix
}
with ec.build_config(target="IP", **config):
    ec.build(mod, params, output_dir=output_dir, host_arch="x86", layout=input_layout)
