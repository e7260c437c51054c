#!/bin/sh
# test_train_cli.sh - `vitd train`, `vitd eval` and `vitd finetune` end to end on a tiny
# synthetic IDX data set: learning happens, plain log lines off a terminal, an interrupted run
# resumed gives the same model byte for byte, the finetune output has the removed blocks'
# attention tensors dropped and matches training at lambda = 0, and bad input fails cleanly.
set -u
VITD=${VITD:-build/vitd}
PYTHON=${PYTHON:-/usr/bin/python3}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail=0
ok() { echo "ok   $1"; }
bad() { echo "FAIL $1"; fail=1; }

# 3 classes of 8x8 images: a bright 3x3 blob in a class-specific corner, plus noise
"$PYTHON" - "$T/data" <<'EOF'
import os, sys
import numpy as np
d = sys.argv[1]
os.makedirs(d)
g = np.random.default_rng(0)
def make(n):
    y = np.arange(n) % 3
    x = g.integers(0, 60, size=(n, 8, 8))
    for i, k in enumerate(y):
        r, c = [(1, 1), (1, 4), (4, 2)][k]
        x[i, r:r + 3, c:c + 3] += 180
    return x.clip(0, 255).astype(np.uint8), y.astype(np.uint8)
for pre, n in (("train", 384), ("t10k", 96)):
    x, y = make(n)
    with open(f"{d}/{pre}-images-idx3-ubyte", "wb") as f:
        f.write(b"\0\0\x08\x03" + np.array([n, 8, 8], ">u4").tobytes() + x.tobytes())
    with open(f"{d}/{pre}-labels-idx1-ubyte", "wb") as f:
        f.write(b"\0\0\x08\x01" + np.array([n], ">u4").tobytes() + y.tobytes())
with open(f"{d}/labels.txt", "w") as f:
    f.write("top-left\ntop-right\nbottom\n")
EOF

ARCH="img=8,patch=4,dim=16,depth=3,heads=2,mlp=32"
# the classes are positions: no crop or flip augmentation
COMMON="--data $T/data --arch $ARCH --batch 32 --lr 3e-3 --warmup-epochs 0.5 --threads 2 --seed 3 --pad 0 --no-flip"

if "$VITD" train $COMMON --epochs 4 --out "$T/a.safetensors" >"$T/a.log" 2>&1; then ok "train"; else bad "train"; cat "$T/a.log"; fi
grep -q "train epoch 4/4: loss" "$T/a.log" && ok "epoch summary lines" || bad "epoch summary lines"
grep -q "step 12/12" "$T/a.log" && ok "plain progress lines off a terminal" || bad "plain progress lines"
grep -q "$(printf '\r')" "$T/a.log" && bad "no carriage returns off a terminal" || ok "no carriage returns off a terminal"

"$VITD" eval --model "$T/a.safetensors" --data "$T/data" --json >"$T/eval.json" 2>"$T/eval.err" || bad "eval"
top1=$("$PYTHON" -c "import json,sys; print(json.load(open(sys.argv[1]))['top1'])" "$T/eval.json" 2>/dev/null || echo 0)
"$PYTHON" -c "import sys; sys.exit(0 if float(sys.argv[1]) >= 0.8 else 1)" "$top1" && ok "eval top-1 $top1 >= 0.8 (chance 0.33)" || { bad "eval top-1 $top1"; cat "$T/a.log" "$T/eval.err"; }
"$VITD" inspect "$T/a.safetensors" | grep -q "labels *yes" && ok "labels in the checkpoint" || bad "labels"

# warm start from a checkpoint
"$VITD" train --data "$T/data" --init "$T/a.safetensors" --epochs 1 --batch 32 --lr 1e-3 --threads 2 --pad 0 --no-flip \
    --out "$T/w.safetensors" >"$T/w.log" 2>&1 && grep -q "eval top-1 100.00%" "$T/w.log" && ok "train --init continues from a checkpoint" \
    || { bad "train --init"; cat "$T/w.log"; }

# resume: 2 epochs, stop, resume to 4 == 4 in one go
"$VITD" train $COMMON --epochs 4 --out "$T/b.safetensors" --stop-after 2 >"$T/b1.log" 2>&1 || bad "train --stop-after"
[ -f "$T/b.safetensors.state" ] && [ ! -f "$T/b.safetensors" ] && ok "stopped run left a state, no model" || bad "stop-after files"
"$VITD" train $COMMON --epochs 4 --out "$T/b.safetensors" --resume >"$T/b2.log" 2>&1 || { bad "train --resume"; cat "$T/b2.log"; }
grep -q "resuming" "$T/b2.log" && ok "resumed" || bad "resume message"
cmp -s "$T/a.safetensors" "$T/b.safetensors" && ok "resumed run == uninterrupted run (bytes)" || bad "resumed run differs"
"$VITD" train $COMMON --epochs 4 --batch 16 --out "$T/b.safetensors" --resume >"$T/b3.log" 2>&1
[ $? -ne 0 ] && grep -q "batch" "$T/b3.log" && ok "resume refuses other settings" || bad "resume with another batch"

# finetune: remove blocks 0 and 2 by dilution; the training forward at lambda = 0 on X.npy
"$PYTHON" -c "import numpy as np, sys; np.save(sys.argv[1], np.random.default_rng(1).standard_normal((10, 1, 8, 8)).astype(np.float32))" "$T/x.npy"
if "$VITD" finetune --model "$T/a.safetensors" --data "$T/data" --remove 0,2 --epochs 3 --dilution-epochs 2 \
    --batch 32 --lr 1e-3 --threads 2 --pad 0 --no-flip --out "$T/f.safetensors" \
    --logits-input "$T/x.npy" --logits-output "$T/train_logits.npy" >"$T/f.log" 2>&1; then ok "finetune"; else bad "finetune"; cat "$T/f.log"; fi
"$VITD" logits --model "$T/f.safetensors" --input "$T/x.npy" --output "$T/served_logits.npy" >/dev/null 2>&1 || bad "vitd logits"
"$PYTHON" - "$T/train_logits.npy" "$T/served_logits.npy" <<'EOF2' && ok "vitd logits of the finetuned model == training forward at lambda 0" || bad "finetuned logits differ"
import sys
import numpy as np
a, b = np.load(sys.argv[1]), np.load(sys.argv[2])
d = float(np.abs(a - b).max())
print(f"     max |diff| {d:.2e} over {a.size} logits (max |logit| {float(np.abs(a).max()):.2f})")
sys.exit(0 if a.shape == b.shape and d <= 1e-4 * max(1.0, float(np.abs(a).max())) else 1)
EOF2
grep -q "lambda 0.5000" "$T/f.log" && grep -q "epoch 3/3.*lambda 0.0000" "$T/f.log" && ok "lambda schedule 1, 0.5, 0" || { bad "lambda schedule"; cat "$T/f.log"; }
grep -q "max |diff|" "$T/f.log" && ok "finetune verified its output against training" || bad "finetune verification line"
"$VITD" inspect --json "$T/f.safetensors" >"$T/f.json" || bad "inspect finetuned"
grep -q '"removed": \[0,2\]' "$T/f.json" && ok "removed blocks in the checkpoint" || { bad "removed blocks"; cat "$T/f.json"; }
"$PYTHON" - "$T/f.safetensors" <<'EOF' && ok "attention tensors of removed blocks dropped" || bad "attention tensors still present"
import json, struct, sys
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
names = json.loads(b[8:8 + n])
assert not any(k.startswith(("blocks.0.attn", "blocks.0.norm1", "blocks.2.attn", "blocks.2.norm1")) for k in names)
assert "blocks.1.attn.qkv.weight" in names
EOF
"$VITD" eval --model "$T/f.safetensors" --data "$T/data" >/dev/null 2>&1 && ok "eval of the finetuned model" || bad "eval finetuned"

# errors
"$VITD" train --data "$T/nothing" --out "$T/x.safetensors" >/dev/null 2>"$T/e1"; rc=$?
[ $rc -eq 1 ] && grep -q "no such folder" "$T/e1" && ok "missing data: exit 1" || bad "missing data (rc $rc)"
"$VITD" train $COMMON --arch "dim=15" --out "$T/x.safetensors" >/dev/null 2>"$T/e2"; rc=$?
[ $rc -eq 2 ] && ok "bad architecture: exit 2" || { bad "bad architecture (rc $rc)"; cat "$T/e2"; }
head -c 100 "$T/data/train-images-idx3-ubyte" >"$T/data/t10k-images-idx3-ubyte"
"$VITD" eval --model "$T/a.safetensors" --data "$T/data" >/dev/null 2>"$T/e3"; rc=$?
[ $rc -eq 1 ] && grep -q "truncated" "$T/e3" && ok "truncated IDX: exit 1" || { bad "truncated IDX (rc $rc)"; cat "$T/e3"; }
"$VITD" finetune --model "$T/a.safetensors" --data "$T/data" --remove 0 --epochs 1 --out "$T/x.safetensors" >/dev/null 2>&1
[ $? -eq 2 ] && ok "finetune needs a lambda = 0 epoch" || bad "finetune --epochs 1 accepted"

[ $fail -eq 0 ] && echo "test_train_cli: ok" || echo "test_train_cli: FAILED"
exit $fail
