#!/usr/bin/env bash
# Build the libFuzzer targets and the sweep driver with AddressSanitizer and
# UndefinedBehaviorSanitizer (clang; libclang-rt-14-dev on Debian/Ubuntu):
#
#   fuzz/build.sh [OUT_DIR]        (default fuzz/build)
#   OPT=-O0 fuzz/build.sh ...      (compiles 5x faster, runs slower: tests/test_fuzz.py's short runs)
#
#   OUT_DIR/fuzz_deploy_json    deploy.json     (fuzz_deploy.c)
#   OUT_DIR/fuzz_deploy_params  deploy.params   (fuzz_deploy.c)
#   OUT_DIR/fuzz_dna_program    the DNA program (fuzz_dna_program.c)
#   OUT_DIR/fuzz_ir             the IR binary form (fuzz_ir.c)
#   OUT_DIR/load_dir            one deploy directory, loaded and run (load_dir.c)
#
# Run a target on a copy of its seed corpus, e.g.
#   cp -r fuzz/corpus/ir /tmp/ir && fuzz/build/fuzz_ir /tmp/ir -max_total_time=60
# docs/deploy.md, "Fuzzing", gives the figures of the last long run.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(dirname "$HERE")"
OUT="${1:-$HERE/build}"
CC="${CC:-$(command -v clang-14 || command -v clang || true)}"
if [ -z "$CC" ]; then
    echo "fuzz/build.sh: clang not found (apt-get install clang libclang-rt-14-dev)" >&2
    exit 2
fi
mkdir -p "$OUT/obj"
SAN="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
CFLAGS="-g ${OPT:--O1} -std=c11 -D_POSIX_C_SOURCE=200809L -ffp-contract=off -I$ROOT/csrc $SAN"
# The runtime group of mera/_sources.py: what deploy.so is made of.
SOURCES=$(python3 - "$ROOT" <<'PY'
import importlib.util, os, sys
root = sys.argv[1]
spec = importlib.util.spec_from_file_location("_sources", os.path.join(root, "mera", "_sources.py"))
m = importlib.util.module_from_spec(spec)
spec.loader.exec_module(m)
print("\n".join(m.files(os.path.join(root, "csrc"), ["runtime"])))
PY
)
# An object is rebuilt when its source, any header or table, or this script is newer.
newest_header=$(find "$ROOT/csrc" \( -name '*.h' -o -name '*.def' -o -name '*.inc' \) -printf '%T@ %p\n' \
                | sort -n | tail -1 | cut -d' ' -f2-)
objs=()
jobs=()
for rel in $SOURCES; do
    obj="$OUT/obj/${rel//\//_}.o"
    objs+=("$obj")
    if [ ! -f "$obj" ] || [ "$ROOT/csrc/$rel" -nt "$obj" ] || [ "$newest_header" -nt "$obj" ] || [ "$0" -nt "$obj" ]; then
        jobs+=("$rel")
    fi
done
if [ ${#jobs[@]} -gt 0 ]; then
    printf '%s\n' "${jobs[@]}" | xargs -P "${JOBS:-2}" -I{} sh -c \
        'o="$1/obj/$(echo "$2" | tr / _).o"; '"$CC"' '"$CFLAGS"' -fsanitize=fuzzer-no-link -c "$3/csrc/$2" -o "$o.tmp" && mv "$o.tmp" "$o"' \
        sh "$OUT" {} "$ROOT"
fi
rm -f "$OUT/libmera_rt_san.a"
ar rcs "$OUT/libmera_rt_san.a" "${objs[@]}"
LINK="$OUT/libmera_rt_san.a -lm -lpthread"
SEEDS="-DMERA_FUZZ_SEEDS=\"$HERE/seeds\""
$CC $CFLAGS -fsanitize=fuzzer -DFUZZ_DEPLOY_JSON $SEEDS "$HERE/fuzz_deploy.c" $LINK -o "$OUT/fuzz_deploy_json"
$CC $CFLAGS -fsanitize=fuzzer -DFUZZ_DEPLOY_PARAMS $SEEDS "$HERE/fuzz_deploy.c" $LINK -o "$OUT/fuzz_deploy_params"
$CC $CFLAGS -fsanitize=fuzzer "$HERE/fuzz_dna_program.c" $LINK -o "$OUT/fuzz_dna_program"
$CC $CFLAGS -fsanitize=fuzzer "$HERE/fuzz_ir.c" $LINK -o "$OUT/fuzz_ir"
$CC $CFLAGS "$HERE/load_dir.c" $LINK -o "$OUT/load_dir"
echo "fuzz/build.sh: built in $OUT"
