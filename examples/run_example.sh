#!/bin/sh
# The original docs' flow end to end, from the current directory:
#   1. examples/<model>.py: quantize and trace the model, run it on InterpreterHw
#      (writing <dir>/input0.bin and <dir>/ref_result_0.bin), build it for the IP
#      target into <dir> (deploy.so, deploy.params, deploy.json);
#   2. build the C inference app with cmake (apps/inference/build/inference);
#   3. run it on <dir>: "Took X msec.", the device latency, and the comparison
#      with the reference ending in "correct ratio: 1".
#
#   examples/run_example.sh [resnet50 | resnet50_ec | mobilenet_v2] [inference options, e.g. -n 10]
#
# Python: $PYTHON, else .venv/bin/python of the repository if it exists, else python3.
set -eu
model=${1:-resnet50}
[ $# -gt 0 ] && shift
root=$(cd "$(dirname "$0")/.." && pwd)
case $model in
resnet50 | resnet50_ec) dir=resnet50_deploy ;;
mobilenet_v2) dir=mobilenetv2_deploy ;;
*) echo "usage: $0 [resnet50 | resnet50_ec | mobilenet_v2] [inference options]" >&2; exit 2 ;;
esac
py=${PYTHON:-}
if [ -z "$py" ]; then
    if [ -x "$root/.venv/bin/python" ]; then py=$root/.venv/bin/python; else py=python3; fi
fi
"$py" "$root/examples/$model.py"
cmake -S "$root/apps/inference" -B "$root/apps/inference/build" > /dev/null
cmake --build "$root/apps/inference/build" > /dev/null
exec "$root/apps/inference/build/inference" "$dir" "$@"
