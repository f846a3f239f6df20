"""Builds a tiny deploy directory, for tests/test_build_transaction.py, in a process of its own.

    python build_transaction_child.py build OUT SEED
        build variant SEED into OUT; prints "building" when mera is imported
    python build_transaction_child.py steps OUT SEED... < kill plan
        one forked child per line of the plan on stdin ("LINE HOW": kill itself (HOW "KILL") or
        raise KeyboardInterrupt ("INT") when the transaction code (mera/_deploy_dir.py) first runs
        LINE, "function:lineno"; LINE "end": run to the end and print the lines it ran), each
        building the variant the directory does not hold; after each,
        a forked checker loads OUT and prints which variant it holds. Forked children keep this
        process free of mera's threads, so forking is safe.
"""

import json
import os
import signal
import sys

import numpy as np

import mera
import mera._deploy_dir as deploy_dir_mod

SHAPE = (1, 16)


def variant(seed):
    b = mera.ir.Builder("tiny")
    x = b.input("x", SHAPE)
    w = b.param("w", np.random.default_rng(seed).standard_normal(SHAPE).astype(np.float32))
    return b.finish(b.add(x, w)), b.params


def probe_input():
    return np.linspace(-1, 1, SHAPE[1], dtype=np.float32).reshape(SHAPE)


def expected(seed):
    return (probe_input() + variant(seed)[1]["w"]).astype(np.float32)


def build(out, seed):
    mod, params = variant(seed)
    with mera.build_config(target="Interpreter"):
        mera.build(mod, params, output_dir=out)


def held_variant(out, seeds):
    """Which seed's build ``out`` holds, by its outputs and model id: 'seed N', or 'error: ...'."""
    try:
        with open(os.path.join(out, "deploy.json")) as f:
            model_id = json.load(f)["params_file"]["fnv1a64"]
        (y,) = mera.load_runtime_module(out)(probe_input())
    except Exception as e:  # noqa: BLE001 - reported to the test, which fails on it
        return f"error: {type(e).__name__}: {e}"
    for s in seeds:
        if y.tobytes() == expected(s).tobytes():
            return f"seed {s} {model_id}"
    return f"error: outputs of no known build (model id {model_id})"


def in_child(fn):
    """Run ``fn`` in a forked child; its wait status."""
    pid = os.fork()
    if pid == 0:
        try:
            code = fn() or 0
        except BaseException as e:  # noqa: BLE001
            print(f"child: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            code = 3 if isinstance(e, KeyboardInterrupt) else 1
        sys.stdout.flush()
        os._exit(code)
    return os.waitpid(pid, 0)[1]


def build_killed_at(out, seed, at, how):
    """Build, with a tracer that kills this process (or raises KeyboardInterrupt) when the line ``at``
    ("function:lineno") of mera/_deploy_dir.py first runs; ``at`` "end" prints every line run instead."""
    target_file = deploy_dir_mod.__file__
    lines = []

    def local(frame, event, arg):
        if event == "line":
            lines.append(f"{frame.f_code.co_name}:{frame.f_lineno}")
            if lines[-1] == at:
                print(f"AT {at}", flush=True)
                if how == "KILL":
                    os.kill(os.getpid(), signal.SIGKILL)
                raise KeyboardInterrupt
        return local

    def tracer(frame, event, arg):
        return local if frame.f_code.co_filename == target_file else None

    sys.settrace(tracer)
    try:
        build(out, seed)
    finally:
        sys.settrace(None)
    if at == "end":
        print("LINES " + " ".join(lines), flush=True)


def held_in_child(out, seeds):
    """held_variant, computed in a forked child (loading runs mera's C code, which may start threads)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.write(w, held_variant(out, seeds).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        text = f.read().decode()
    os.waitpid(pid, 0)
    return text


def steps(out, seeds):
    for line in sys.stdin:
        at, how = line.split()
        held = held_in_child(out, seeds)
        seed = seeds[1] if held.startswith(f"seed {seeds[0]} ") else seeds[0]
        sys.stdout.flush()
        status = in_child(lambda: build_killed_at(out, seed, at, how))
        ended = f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"exit {os.WEXITSTATUS(status)}"
        print(f"STEP {at} {how} seed {seed} -> {ended}; HELD {held_in_child(out, seeds)}", flush=True)


def main():
    cmd, out = sys.argv[1], sys.argv[2]
    seeds = [int(s) for s in sys.argv[3:]]
    if cmd == "build":
        print("building", flush=True)
        build(out, seeds[0])
    elif cmd == "held":
        print("HELD " + held_variant(out, seeds), flush=True)
    elif cmd == "steps":
        steps(out, seeds)
    else:
        raise SystemExit(f"unknown command {cmd!r}")


if __name__ == "__main__":
    main()
