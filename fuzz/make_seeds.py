"""Regenerate fuzz/seeds and fuzz/corpus from a tiny model (2 layers of tests/test_simulator.py's
GraphGen), one deploy directory per target:

    seeds/<Target>.json, seeds/<Target>.params   the directory's data files (the harnesses'
                                                  templates: the other file of each pair)
    corpus/deploy_json/<Target>.json              deploy.json texts
    corpus/deploy_params/<Target>.params          a selector byte (the target's index) + deploy.params
    corpus/ir/<Target>.ir                         the GRAPH section (mera_graph_serialize)
    corpus/dna_program/<Target>.dna               the PROGRAM section (Simulator, IP)

Run from the repository: python fuzz/make_seeds.py (needs mera built in place).
"""

import contextlib
import io
import os
import struct
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), os.path.join(os.path.dirname(HERE), "tests")]

import mera  # noqa: E402
from test_simulator import GraphGen  # noqa: E402

TARGETS = ["Interpreter", "InterpreterHw", "Simulator", "IP"]  # the selector byte's order (fuzz_deploy.c)


def sections(params):
    n, = struct.unpack_from("<I", params, 12)
    out = {}
    for s in range(n):
        kind, off, length = struct.unpack_from("<IQQ", params, 16 + 20 * s)
        out[kind] = params[off:off + length]
    return out


def write(rel, data):
    path = os.path.join(HERE, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def main():
    mod, _ = GraphGen(3).build(n_layers=2)
    for sel, target in enumerate(TARGETS):
        with tempfile.TemporaryDirectory() as d:
            with mera.build_config(target=target, arch=100), contextlib.redirect_stdout(io.StringIO()):
                mera.build(mod, {}, output_dir=d, host_arch="x86", layout="NHWC")
            js = open(os.path.join(d, "deploy.json"), "rb").read()
            params = open(os.path.join(d, "deploy.params"), "rb").read()
        write(f"seeds/{target}.json", js)
        write(f"seeds/{target}.params", params)
        write(f"corpus/deploy_json/{target}.json", js)
        write(f"corpus/deploy_params/{target}.params", bytes([sel]) + params)
        sec = sections(params)
        write(f"corpus/ir/{target}.ir", sec[1])
        if 3 in sec:
            write(f"corpus/dna_program/{target}.dna", sec[3])


if __name__ == "__main__":
    main()
