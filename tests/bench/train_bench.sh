#!/bin/sh
# train_bench.sh - training throughput of vitd against PyTorch on the same model and batch.
#   tests/bench/train_bench.sh [ARCH] [BATCH] [THREADS] [REPS]
# vitd trains on Fashion-MNIST batches (`vitd train --limit`, one epoch, no evaluation; its
# epoch line gives images/s); PyTorch (Debian's, same thread count) trains tests/torch_vit.py's
# model with the same recipe on random batches of the same shape (tests/bench/train_torch.py).
# Runs alternate so that a busy machine slows both alike; prints each run and the ratio of the
# medians. Not part of `make test` (speed is measured, never asserted).
set -eu
ARCH=${1:-fashion}
BATCH=${2:-128}
THREADS=${3:-2}
REPS=${4:-3}
VITD=${VITD:-build/vitd}
PYTHON=${PYTHON:-/usr/bin/python3}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
v=""; p=""
for r in $(seq "$REPS"); do
    x=$("$VITD" train --data fashion-mnist --arch "$ARCH" --batch "$BATCH" --threads "$THREADS" --limit $((BATCH * 30)) \
        --epochs 1 --no-eval --out "$T/m.safetensors" | sed -n 's/.*, \([0-9.]*\) img\/s, .*/\1/p' | tail -1)
    y=$("$PYTHON" tests/bench/train_torch.py --arch "$ARCH" --batch "$BATCH" --threads "$THREADS" --steps 5 --reps 1 |
        sed -n 's/.*: \([0-9.]*\) images\/s.*/\1/p')
    echo "rep $r: vitd $x images/s, pytorch $y images/s"
    v="$v $x"; p="$p $y"
done
"$PYTHON" - "$v" "$p" "$ARCH" "$BATCH" "$THREADS" <<'PY'
import statistics, sys
v = [float(x) for x in sys.argv[1].split()]
p = [float(x) for x in sys.argv[2].split()]
mv, mp = statistics.median(v), statistics.median(p)
print(f"arch {sys.argv[3]} batch {sys.argv[4]} threads {sys.argv[5]}: vitd {mv:.1f} images/s, "
      f"PyTorch {mp:.1f} images/s, ratio {mv / mp:.2f}x (medians of {len(v)})")
PY
