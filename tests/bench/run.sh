#!/bin/sh
# run.sh - `make bench`: vitd against ONNX Runtime on DeiT-T/S/B, dense and with 6 of 12
# attention layers removed, batch 1 and 8. See tests/bench/README.md.
#   env: BUILD (default build), PYTHON (Debian's python3 with torch),
#        BENCH_SIZES (T,S,B), BENCH_BATCHES (1,8), BENCH_ROUNDS (3), BENCH_SECONDS (per-size
#        default), BENCH_THREADS (default: nproc, the CPUs vitd uses)
# Writes $BUILD/bench/results.md. Exit status non-zero when a check or a run failed.
set -eu
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
PYTHON=${PYTHON:-/usr/bin/python3}
ORT_VERSION=1.30.0
ORT_DIR=$BUILD/ort
OUT=$BUILD/bench
THREADS=${BENCH_THREADS:-$(nproc)}

[ -x "$BUILD/vitd" ] || { echo "bench: $BUILD/vitd missing (run make)" >&2; exit 1; }
command -v node >/dev/null 2>&1 || { echo "bench: node not found (scripts/deps.sh bench)" >&2; exit 1; }

# ONNX Runtime's CPU build comes with its Node binding. --ignore-scripts skips the install
# script, which only fetches GPU libraries from a host this machine cannot reach.
mkdir -p "$ORT_DIR"
ORT_DIR=$(cd "$ORT_DIR" && pwd) # absolute: BUILD may be relative or absolute
have=$(node -p "try { require('$ORT_DIR/node_modules/onnxruntime-node/package.json').version } catch (e) { '' }" 2>/dev/null || true)
if [ "$have" != "$ORT_VERSION" ]; then
    echo "bench: installing onnxruntime-node@$ORT_VERSION into $ORT_DIR" >&2
    npm install --prefix "$ORT_DIR" --ignore-scripts --no-audit --no-fund \
        "onnxruntime-node@$ORT_VERSION" >&2
fi
NODE_PATH="$ORT_DIR/node_modules"; export NODE_PATH

# Models are cached under $OUT (make_models.py regenerates one only when its sources change).
echo "bench: models in $OUT" >&2
"$PYTHON" tests/bench/make_models.py --out "$OUT" --sizes "${BENCH_SIZES:-T,S,B}"

exec "$PYTHON" tests/bench/bench.py --build "$BUILD" --models "$OUT" \
    --sizes "${BENCH_SIZES:-T,S,B}" --batches "${BENCH_BATCHES:-1,8}" \
    --rounds "${BENCH_ROUNDS:-3}" --seconds "${BENCH_SECONDS:-0}" --threads "$THREADS" \
    --ort-version "$ORT_VERSION" --out "$OUT/results.md"
