"""Fuzz target of the ONNX frontend: every outcome of importing mutated model bytes is success or
a mera.MeraError. Anything else (TypeError, KeyError, UnicodeDecodeError, a crash) is a finding.

Each input goes through ``from_onnx(bytes)`` (parser, onnx checker, importer) and, when protobuf
can parse it, ``from_onnx(ModelProto)`` (the importer without the checker, as for a model built in
memory); a model that imports is compiled for the Interpreter.

With atheris (``pip install 'mera[fuzz]'``; libFuzzer's coverage-guided mutation)::

    python fuzz/onnx_atheris.py fuzz/corpus/onnx -max_total_time=600 [libFuzzer flags]

Without it, or with ``--random``, a seeded mutation loop of our own (bit flips, byte edits, cuts,
duplicated and spliced ranges over the seed corpus)::

    python fuzz/onnx_atheris.py --random --runs 5000 --seed 1 fuzz/corpus/onnx

Both exit non-zero on a finding and print the input's traceback; the random loop also writes the
input to ``crash-<sha1>.onnx`` in the working directory (libFuzzer does the same as ``crash-*``).
"""

import hashlib
import os
import random
import sys
import traceback
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # the repository, for a source checkout

import numpy as np  # noqa: E402

# mera is imported on first use: under atheris, inside instrument_imports (coverage of mera's code)

MAX_INPUT_BYTES = 1 << 16
#: An imported graph is compiled only below this many elements per value (bounds the fuzzer's memory).
MAX_COMPILE_ELEMENTS = 1 << 20


def _compile_small(mod, params) -> None:
    import mera
    for v in list(mod.inputs) + list(mod.outputs):
        if int(np.prod(v["shape"], dtype=np.float64)) > MAX_COMPILE_ELEMENTS:
            return
    mera.compile(mod, params, target="Interpreter")


def check_one(data: bytes) -> str:
    """Import ``data`` both ways; 'ok' or the MeraError class name. Any other exception propagates."""
    import onnx
    import mera
    outcome = []
    for source in ("bytes", "proto"):
        if source == "bytes":
            arg = data
        else:
            try:
                arg = onnx.ModelProto.FromString(data)
            except Exception:  # noqa: BLE001 - not a protobuf: the bytes path has reported it
                continue
        try:
            mod, params = mera.frontend.from_onnx(arg, layout="NHWC" if len(data) % 2 else "NCHW")
            _compile_small(mod, params)
            outcome.append("ok")
        except mera.MeraError as e:
            outcome.append(type(e).__name__)
        except MemoryError:
            outcome.append("MemoryError")  # a huge shape or tensor the input asks for: refused by the system
    return "/".join(outcome)


def load_corpus(paths):
    seeds = []
    for p in paths:
        files = [os.path.join(p, f) for f in sorted(os.listdir(p))] if os.path.isdir(p) else [p]
        for f in files:
            with open(f, "rb") as fh:
                seeds.append(fh.read())
    if not seeds:
        raise SystemExit(f"no seed files in {paths}")
    return seeds


def mutate(rng: random.Random, seeds) -> bytes:
    """One input: a seed with 1 to 8 random edits, sometimes spliced with another seed."""
    data = bytearray(rng.choice(seeds))
    for _ in range(rng.randint(1, 8)):
        kind = rng.randrange(7)
        n = len(data)
        if n == 0:
            data += bytes([rng.randrange(256)])
            continue
        i = rng.randrange(n)
        if kind == 0:
            data[i] ^= 1 << rng.randrange(8)
        elif kind == 1:
            data[i] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)))
        elif kind == 2:
            del data[i:i + rng.randint(1, 16)]
        elif kind == 3:
            data[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif kind == 4:
            j = rng.randrange(n)
            data[i:i] = data[j:j + rng.randint(1, 64)]
        elif kind == 5:
            other = rng.choice(seeds)
            j = rng.randrange(len(other))
            data = data[:i] + bytearray(other[j:])
        else:  # a varint-sized value: lengths, dims and enums in protobuf
            data[i:i + 1] = rng.choice((b"\xff\xff\xff\xff\x0f", b"\x80\x01", b"\x00", b"\xff\x01"))
    return bytes(data[:MAX_INPUT_BYTES])


def random_loop(seeds, runs: int, seed: int) -> int:
    rng = random.Random(seed)
    counts = {}
    for i in range(runs):
        data = seeds[i] if i < len(seeds) else mutate(rng, seeds)
        try:
            out = check_one(data)
        except BaseException:  # noqa: BLE001 - the finding
            name = f"crash-{hashlib.sha1(data).hexdigest()}.onnx"
            with open(name, "wb") as f:
                f.write(data)
            traceback.print_exc()
            print(f"FINDING after {i + 1} inputs; input written to {name}", file=sys.stderr)
            return 1
        counts[out] = counts.get(out, 0) + 1
    summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
    print(f"{runs} inputs (seed {seed}), no finding: {summary}")
    return 0


def main(argv) -> int:
    warnings.simplefilter("ignore")
    np.seterr(all="ignore")
    if "--random" in argv or not _have_atheris():
        args = [a for a in argv if a != "--random"]
        runs, seed, paths = 1000, 1, []
        it = iter(args)
        for a in it:
            if a == "--runs":
                runs = int(next(it))
            elif a == "--seed":
                seed = int(next(it))
            else:
                paths.append(a)
        if not _have_atheris() and "--random" not in argv:
            print("atheris is not installed (pip install 'mera[fuzz]'): the seeded random loop runs instead")
        return random_loop(load_corpus(paths or [os.path.join(HERE, "corpus", "onnx")]), runs, seed)
    import atheris

    def test_one_input(data: bytes) -> None:
        if len(data) <= MAX_INPUT_BYTES:
            check_one(data)

    with atheris.instrument_imports(include=["mera"]):  # coverage of mera's Python code
        import mera.frontend.onnx  # noqa: F401
    atheris.Setup([sys.argv[0], *argv], test_one_input)
    atheris.Fuzz()
    return 0


def _have_atheris() -> bool:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
