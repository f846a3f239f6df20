"""Every numeric field of deploy.json set to 0, -1, 1e-320, 2^31, 2^63, 2^64, 1e308 and 0.5, on
an IP and a Simulator build of a small model, loaded and run by fuzz/build.sh's load_dir (the
runtime built with ASan and UBSan, any report aborts): each mutant must be refused with a
message naming the field, or run with the reference's output bytes; none may reach a sanitizer
report. Each mutant is loaded twice: as deploy.so loads it (against the deploy.json it was
built with) and with that check off (so the range checks alone are exercised).

    python fuzz/ubsan_sweep.py BUILD_DIR      (BUILD_DIR from fuzz/build.sh)

Prints the counts per target; exit status 1 on any failure.
"""

import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), os.path.join(os.path.dirname(HERE), "tests")]

import mera  # noqa: E402
from test_simulator import GraphGen  # noqa: E402

VALUES = [0, -1, 1e-320, 2 ** 31, 2 ** 63, 2 ** 64, 1e308, 0.5]


def numeric_paths(node, path=()):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from numeric_paths(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from numeric_paths(v, path + (i,))
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        yield path


def run(load_dir, d, build_json=None):
    args = [load_dir, d] + ([build_json] if build_json else [])
    env = {**os.environ, "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1", "ASAN_OPTIONS": "detect_leaks=1"}
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)


def main():
    load_dir = os.path.join(sys.argv[1], "load_dir")
    mod, _ = GraphGen(7).build(n_layers=3)
    failures = 0
    for target in ("IP", "Simulator"):
        with tempfile.TemporaryDirectory() as d:
            with mera.build_config(target=target, arch=100), contextlib.redirect_stdout(io.StringIO()):
                mera.build(mod, {}, output_dir=d, host_arch="x86", layout="NHWC")
            build_json = os.path.join(d, "build.json")
            text = open(os.path.join(d, "deploy.json")).read()
            open(build_json, "w").write(text)
            r = run(load_dir, d, build_json)
            assert r.returncode == 0 and r.stdout.startswith("ran "), r.stdout + r.stderr
            ref = r.stdout.strip()
            counts = {"refused": 0, "ran": 0}
            paths = list(numeric_paths(json.loads(text)))
            for path in paths:
                for value in VALUES:
                    doc = json.loads(text)
                    o = doc
                    for k in path[:-1]:
                        o = o[k]
                    o[path[-1]] = value
                    open(os.path.join(d, "deploy.json"), "w").write(json.dumps(doc, indent=2))
                    leaf = next(str(k) for k in reversed(path) if isinstance(k, str))
                    for bj in (build_json, None):
                        r = run(load_dir, d, bj)
                        where = f"{target} {'.'.join(map(str, path))} = {value!r} ({'with' if bj else 'without'} " \
                                "the build's deploy.json)"
                        if "runtime error" in r.stderr or "Sanitizer" in r.stderr or r.returncode not in (0, 1):
                            print(f"FAIL {where}: sanitizer or crash (exit {r.returncode})\n{r.stderr[-3000:]}")
                            failures += 1
                        elif r.returncode == 1:
                            counts["refused"] += 1
                            if leaf not in r.stdout:
                                print(f"FAIL {where}: the refusal does not name '{leaf}': {r.stdout.strip()}")
                                failures += 1
                        else:
                            counts["ran"] += 1
                            if r.stdout.strip() != ref:
                                print(f"FAIL {where}: ran with other output bytes")
                                failures += 1
            print(f"{target}: {len(paths)} numeric fields x {len(VALUES)} values x 2 loads: "
                  f"{counts['refused']} refused, {counts['ran']} ran with the reference's bytes")
    print("failures:", failures)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
