# dump_ir: what each stage of the compile driver makes, for ResNet-50 imported in NCHW.
#
#   python examples/dump_ir.py [model] [folder]     (default: resnet50 resnet50_dump_ir)
#
# Quantizes a zoo model (seeded random weights, fbgemm PTQ), traces it, imports it with
# layout="NCHW", compiles it for the Simulator on DNA-F100 with build_config(dump_ir=folder)
# and lists what was written: NN-<stage>.ir after each graph stage (input, fold_bn,
# fold_const, layout, subpixel, trim_taps, dce), NN-partition.txt, NN-schedule.txt and
# NN-program.txt (the DNA program disassembled). docs/architecture.md shows excerpts of
# this output.
import os
import sys

import torch

import mera
import mera.models as mm
from mera import relay

name = sys.argv[1] if len(sys.argv) > 1 else "resnet50"
folder = sys.argv[2] if len(sys.argv) > 2 else f"{name}_dump_ir"
torch.backends.quantized.engine = "fbgemm"
model = getattr(mm, name)(quantize=True, seed=0)
x = mm.calibration_data(name, n=1, seed=1)[0]
mod, params = relay.frontend.from_pytorch(mm.trace(model, x), [("input0", tuple(x.shape))], layout="NCHW")
with mera.build_config(target="Simulator", arch=100, dump_ir=folder, sim_log=False):
    runner = mera.compile(mod, params)
runner(x.numpy())
print(f"{name}, NCHW import, Simulator on DNA-F100: {runner.timing()['total_us']:.1f} us estimated")
for f in sorted(os.listdir(folder)):
    path = os.path.join(folder, f)
    with open(path) as fh:
        lines = fh.read().count("\n")
    print(f"{path}: {lines} lines")
