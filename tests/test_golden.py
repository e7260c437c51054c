#!/usr/bin/python3
"""test_golden.py - vitd's forward pass, loader and inspect against the PyTorch reference.

Run by tests/run.sh with Debian's /usr/bin/python3 (it has torch); VITD names the binary
(default build/vitd). Exits non-zero when any check fails, after printing every case.

  (a) the committed fixtures in tests/data/golden/ (gen_golden.py): `vitd logits`, with the
      oneDNN path and with --reference (plain C kernels), against the committed torch logits;
  (b) checkpoints generated now in a temporary folder (seeded, so every run is the same):
      DeiT-T/S/B shapes dense and with 6 of 12 attention layers removed, a distilled DeiT-T,
      odd shapes (head width 50, one channel, 37 and 17 tokens, depth 1, every block removed),
      a removed block whose leftover norm1/attn tensors are still in the file, removal known
      only from absent tensors, timm's folder layout (heads from config.json), metadata taking
      precedence over config.json, F16 and BF16 storage, `--remove` on a dense checkpoint;
  (c) `vitd inspect --json`: parameter count equal to the torch model's, dense minus removed
      equal to k attention layers (parameters and MACs), and the configuration it found;
  (d) broken inputs: truncated files, a transposed or missing tensor, an input of the wrong
      shape: vitd must fail cleanly (exit status 1 or 2, "vitd logits: ..." on stderr naming
      the tensor where there is one), never crash.

Pass: max |vitd - torch| <= 1e-4 * max |torch logit| for every case. The bound is relative to
the logits' size because fp32 rounding error scales with it; it is ~10x above what a correct
fp32 implementation shows and far below what any real bug (wrong scale, GELU, eps, head
split, removed-block residual) produces. Where a case is meant to tell two computations apart
(leftover tensors, --remove, heads from config.json), a guard also checks that the wrong
computation would differ from the right one by far more than the tolerance, so the case cannot
pass by accident.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import torch_vit as tv  # noqa: E402

VITD = os.environ.get("VITD") or os.path.join(ROOT, "build", "vitd")
GOLDEN = os.path.join(HERE, "data", "golden")
RTOL = 1e-4
BATCH = 2
TIMEOUT = 300  # seconds for one vitd run (a DeiT-B load + forward takes a few)
DEIT_REMOVED = (0, 1, 3, 4, 6, 9)  # the official DeiT-B 50% pick (METHOD.md section 3)

results = []   # (section, case, max_diff, max_logit, ratio, ok, note)
failures = []


def fail(case, msg):
    failures.append(f"{case}: {msg}")


def crashed(p):
    """A signal, or a sanitizer report (ASan/UBSan exit 1 after printing one), is a crash."""
    err = p.stderr or ""
    return (p.returncode < 0 or p.returncode > 125 or "AddressSanitizer" in err
            or "runtime error:" in err or "LeakSanitizer" in err)


def vitd(*args, timeout=TIMEOUT):
    try:
        return subprocess.run([VITD, *args], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess([VITD, *args], -999, "", f"timeout after {timeout}s")


def describe(p):
    tail = (p.stderr or "").strip().splitlines()[-3:]
    return f"exit {p.returncode}: " + " | ".join(tail)


def run_logits(model, x, tmp, extra=()):
    """-> (logits or None, error text)."""
    xin, yout = os.path.join(tmp, "x.npy"), os.path.join(tmp, "y.npy")
    np.save(xin, np.ascontiguousarray(x, dtype=np.float32))
    if os.path.exists(yout):
        os.remove(yout)
    p = vitd("logits", "--model", model, "--input", xin, "--output", yout, *extra)
    if p.returncode != 0 or crashed(p):
        return None, describe(p)
    try:
        return np.load(yout), ""
    except Exception as e:  # noqa: BLE001 - any unreadable output is this case's failure
        return None, f"output unreadable: {e}"


def compare(section, case, model, x, ref, tmp, extra=()):
    y, err = run_logits(model, x, tmp, extra)
    ml = float(np.abs(ref).max())
    if y is None:
        results.append((section, case, None, ml, None, False, err))
        fail(case, err)
        return None
    if y.shape != ref.shape or y.dtype != np.float32:
        note = f"output {y.dtype} {y.shape}, expected float32 {ref.shape}"
        results.append((section, case, None, ml, None, False, note))
        fail(case, note)
        return None
    d = float(np.abs(y.astype(np.float64) - ref).max())
    ok = bool(np.isfinite(y).all()) and d <= RTOL * ml  # NaN compares False: fails
    results.append((section, case, d, ml, d / ml, ok, ""))
    if not ok:
        fail(case, f"max|diff| {d:.3g} > {RTOL:g} x max|logit| {ml:.3g}")
    return y


def guard(case, a, b, what):
    """The case must be able to fail: the wrong computation differs by >> tolerance."""
    r = float(np.abs(a - b).max() / np.abs(b).max())
    if not r > 100 * RTOL:
        fail(case, f"guard: {what} differs by only {r:.2g} (relative); the case proves nothing")


# ---------------------------------------------------------------------------------------------
# (a) committed fixtures

def section_fixtures(tmp):
    manifest = json.load(open(os.path.join(GOLDEN, "manifest.json")))
    for name in sorted(manifest):
        model = os.path.join(GOLDEN, name + ".safetensors")
        x = np.load(os.path.join(GOLDEN, name + ".input.npy"))
        ref = np.load(os.path.join(GOLDEN, name + ".logits.npy"))
        compare("fixture", name, model, x, ref, tmp)
        compare("fixture", name + " --reference", model, x, ref, tmp, ["--reference"])
    # --remove on a dense checkpoint: the removed path with that checkpoint's own weights.
    e = manifest["vit_s32_d64"]
    c = tv.cfg(**dict(e["config"], removed=(0, 2)))
    m = tv.build(c, seed=e["seed"])
    x = np.load(os.path.join(GOLDEN, "vit_s32_d64.input.npy"))
    ref = tv.logits(m, x)
    compare("fixture", "vit_s32_d64 --remove 0,2", os.path.join(GOLDEN, "vit_s32_d64.safetensors"),
            x, ref, tmp, ["--remove", "0,2"])
    guard("vit_s32_d64 --remove 0,2", np.load(os.path.join(GOLDEN, "vit_s32_d64.logits.npy")),
          ref, "the dense forward")


# ---------------------------------------------------------------------------------------------
# (b) + (c) generated checkpoints

def macs(c, removed):
    """METHOD.md section 5 cost model per image: attention 4ND^2 + 2N^2D per kept block,
    MLP 2NDF per block, plus patch embedding and head(s)."""
    D, F, S, P = c["embed_dim"], c["mlp_dim"], c["img_size"], c["patch_size"]
    n_p = (S // P) ** 2
    N = n_p + (2 if c["distilled"] else 1)
    attn = 4 * N * D * D + 2 * N * N * D
    total = c["depth"] * 2 * N * D * F + (c["depth"] - len(removed)) * attn
    return total + n_p * c["in_chans"] * P * P * D + (2 if c["distilled"] else 1) * D * c["num_classes"], attn


inspected = {}  # case -> inspect JSON, for the dense/removed pair checks
inspect_rows = []  # (case, vitd params, torch params, vitd macs, cost-model macs, ok)


def check_inspect(case, model_path, m):
    p = vitd("inspect", "--json", model_path)
    if p.returncode != 0 or crashed(p):
        fail(case, "inspect " + describe(p))
        return
    try:
        j = json.loads(p.stdout)
    except ValueError as e:
        fail(case, f"inspect --json printed no JSON ({e})")
        return
    c = m.cfg
    want = {"params": tv.params(m), "removed": list(c["removed"]), "depth": c["depth"],
            "dim": c["embed_dim"], "heads": c["num_heads"], "classes": c["num_classes"]}
    n_fail = len(failures)
    for k, v in want.items():
        if j.get(k) != v:
            fail(case, f"inspect {k} = {j.get(k)!r}, torch model has {v!r}")
    if not isinstance(j.get("weight_bytes"), int) or j["weight_bytes"] <= 0:
        fail(case, f"inspect weight_bytes = {j.get('weight_bytes')!r}")
    want_macs, _ = macs(c, c["removed"])
    if j.get("macs") != want_macs:
        fail(case, f"inspect macs = {j.get('macs')!r}, the cost model gives {want_macs}")
    inspect_rows.append((case, j.get("params"), want["params"], j.get("macs"), want_macs,
                         len(failures) == n_fail))
    inspected[case] = j


def check_pair(dense_case, cut_case, c, k):
    a, b = inspected.get(dense_case), inspected.get(cut_case)
    if not a or not b:
        return  # already reported
    D = c["embed_dim"]
    _, attn = macs(c, ())
    dp, dm = a["params"] - b["params"], a["macs"] - b["macs"]
    ok = dp == k * tv.attn_params(D) and dm == k * attn
    if dp != k * tv.attn_params(D):
        fail(cut_case, f"params dense - removed = {dp}, expected {k} x {tv.attn_params(D)}")
    if dm != k * attn:
        fail(cut_case, f"macs dense - removed = {dm}, expected {k} x {attn}")
    inspect_rows.append((f"{dense_case} - {cut_case}", dp, k * tv.attn_params(D), dm, k * attn,
                         ok))


def generated_case(tmp, case, over, seed, save="meta", dtype="F32", extra=(), inspect=True,
                   keep=False):
    """Builds the torch model, writes it as `save` says, runs vitd, compares; returns
    (model, path, x, logits)."""
    c = tv.cfg(**over)
    m = tv.build(c, seed=seed)
    if dtype != "F32":
        tv.round_weights(m, dtype)
    x = tv.random_input(c, BATCH, seed=seed + 7)
    ref = tv.logits(m, x)
    path = os.path.join(tmp, case + ".safetensors")
    if save == "meta":
        tv.save_model(path, m, dtype=dtype)
    elif save == "bare":
        tv.save_model(path, m, dtype=dtype, metadata=False)
    elif save == "folder":
        path = tv.save_timm_folder(os.path.join(tmp, case), m, dtype=dtype)
    compare("generated", case, path, x, ref, tmp, extra)
    if inspect:
        check_inspect(case, path, m)
    if not keep:
        (shutil.rmtree if os.path.isdir(path) else os.remove)(path)
    return m, path, x, ref


def deit(size, **kw):
    D, H = {"T": (192, 3), "S": (384, 6), "B": (768, 12)}[size]
    return dict(img_size=224, patch_size=16, embed_dim=D, num_heads=H, depth=12,
                num_classes=1000, **kw)


def odd(**kw):
    """Odd shapes and loader cases use a larger weight scale than timm's 0.02, which keeps
    attention far from uniform, so a wrong head split or scale shows up clearly."""
    return dict(init_std=0.08, **kw)


def section_generated(tmp):
    # DeiT shapes, dense and with 6 removed; the same seed gives the removed model exactly the
    # dense one's remaining tensors (torch_vit seeds per tensor name).
    for size, seed in (("T", 10), ("S", 11), ("B", 12)):
        over = deit(size)
        keep = size == "T"
        _, dense_path, x, dense_ref = generated_case(tmp, f"deit_{size.lower()}", over, seed,
                                                     keep=keep)
        generated_case(tmp, f"deit_{size.lower()}_rm6", dict(over, removed=DEIT_REMOVED), seed)
        check_pair(f"deit_{size.lower()}", f"deit_{size.lower()}_rm6", tv.cfg(**over),
                   len(DEIT_REMOVED))
        if size == "T":
            # --remove on the dense file equals the torch model without those attentions.
            cut = tv.build(tv.cfg(**dict(over, removed=(0, 2))), seed=seed)
            ref = tv.logits(cut, x)
            compare("generated", "deit_t --remove 0,2", dense_path, x, ref, tmp,
                    ["--remove", "0,2"])
            guard("deit_t --remove 0,2", dense_ref, ref, "the dense forward")
            compare("generated", "deit_t --reference", dense_path, x, dense_ref, tmp,
                    ["--reference"])
            os.remove(dense_path)

    generated_case(tmp, "deit_t_distilled", deit("T", distilled=True), 13)

    # Odd shapes.
    generated_case(tmp, "d200_h4_dh50", odd(img_size=32, patch_size=8, embed_dim=200,
                                             num_heads=4, depth=2, num_classes=13), 20)
    generated_case(tmp, "c1_s56_p8", odd(img_size=56, patch_size=8, in_chans=1, embed_dim=96,
                                          num_heads=2, depth=2, num_classes=10), 21)
    generated_case(tmp, "s48_p8_37tok", odd(img_size=48, patch_size=8, embed_dim=128,
                                             num_heads=2, depth=2, num_classes=100), 22)
    generated_case(tmp, "s64_p16_17tok_h1", odd(img_size=64, patch_size=16, embed_dim=64,
                                                 num_heads=1, depth=2, num_classes=5), 23)
    generated_case(tmp, "depth1", odd(img_size=32, patch_size=16, embed_dim=64, num_heads=2,
                                       depth=1, num_classes=3), 24)
    generated_case(tmp, "all_removed", odd(img_size=32, patch_size=8, embed_dim=64,
                                            num_heads=2, depth=4, removed=(0, 1, 2, 3),
                                            num_classes=10), 25)

    # Leftover norm1/attn tensors of blocks marked removed in the metadata: ignored.
    over = odd(img_size=32, patch_size=8, embed_dim=128, num_heads=2, depth=4,
                num_classes=10, removed=(1, 2))
    m = tv.build(tv.cfg(**over), seed=26)
    dense = tv.build(tv.cfg(**dict(over, removed=())), seed=26)
    leftovers = {k: v for k, v in dense.state_dict().items()
                 if k.startswith(("blocks.1.norm1", "blocks.1.attn", "blocks.2.norm1",
                                  "blocks.2.attn"))}
    assert len(leftovers) == 12
    x = tv.random_input(m.cfg, BATCH, seed=33)
    ref = tv.logits(m, x)
    path = tv.save_model(os.path.join(tmp, "leftover.safetensors"), m, extra=leftovers)
    compare("generated", "leftover_attn_ignored", path, x, ref, tmp)
    check_inspect("leftover_attn_ignored", path, m)
    guard("leftover_attn_ignored", tv.logits(dense, x), ref, "using the leftover attention")

    # Removal known only from absent tensors; no metadata at all, so heads = D/64 and the rest
    # come from shapes.
    generated_case(tmp, "absent_tensors_no_meta", odd(img_size=32, patch_size=8,
                                                       embed_dim=128, num_heads=2, depth=4,
                                                       num_classes=10, removed=(0, 3)), 27,
                   save="bare")

    # timm's folder layout: heads from config.json (8, where D/64 would give 2); removal from
    # absent tensors (timm's config.json has no such key).
    over = odd(img_size=32, patch_size=8, embed_dim=128, num_heads=8, depth=3, num_classes=10,
                removed=(1,))
    _, _, x, ref = generated_case(tmp, "timm_folder_h8", over, 28, save="folder")
    wrong = tv.build(tv.cfg(**dict(over, num_heads=2)), seed=28)
    guard("timm_folder_h8", tv.logits(wrong, x), ref, "heads = D/64")

    # vitd.config metadata wins over a config.json beside the file that says otherwise.
    m = tv.build(tv.cfg(**over), seed=29)
    folder = os.path.join(tmp, "precedence")
    os.makedirs(folder)
    tv.save_model(os.path.join(folder, "model.safetensors"), m)
    j = tv.timm_config(tv.cfg(**dict(over, num_heads=4)))
    json.dump(j, open(os.path.join(folder, "config.json"), "w"))
    x = tv.random_input(m.cfg, BATCH, seed=36)
    compare("generated", "metadata_over_config_json", folder, x, tv.logits(m, x), tmp)
    check_inspect("metadata_over_config_json", folder, m)
    wrong = tv.build(tv.cfg(**dict(over, num_heads=4)), seed=29)
    guard("metadata_over_config_json", tv.logits(wrong, x), tv.logits(m, x),
          "heads from config.json")

    # Stored as F16 / BF16: torch runs the same rounded weights in fp32.
    for dt, seed in (("F16", 30), ("BF16", 31)):
        generated_case(tmp, f"stored_{dt.lower()}", odd(img_size=64, patch_size=16,
                                                         embed_dim=192, num_heads=3, depth=4,
                                                         num_classes=100, removed=(1,)),
                       seed, dtype=dt)


# ---------------------------------------------------------------------------------------------
# (d) broken inputs

def expect_failure(case, model, xpath, tmp, must_name=None):
    out = os.path.join(tmp, "never.npy")
    p = vitd("logits", "--model", model, "--input", xpath, "--output", out)
    err = (p.stderr or "").strip()
    ok = True
    if crashed(p):
        ok = False
        fail(case, "crashed: " + describe(p))
    elif p.returncode == 0:
        ok = False
        fail(case, "vitd logits accepted it (exit 0)")
    elif "vitd logits:" not in err:
        ok = False
        fail(case, f"no 'vitd logits: ...' message on stderr (got {err[:200]!r})")
    elif must_name and must_name not in err:
        ok = False
        fail(case, f"message does not name {must_name}: {err[:300]!r}")
    results.append(("error", case, None, None, None, ok,
                    f"exit {p.returncode}: {err.splitlines()[-1][:90] if err else ''}"))


def section_errors(tmp):
    over = dict(img_size=32, patch_size=8, embed_dim=64, num_heads=2, depth=2, num_classes=10)
    m = tv.build(tv.cfg(**over), seed=40)
    x = tv.random_input(m.cfg, BATCH, seed=41)
    xpath = os.path.join(tmp, "err_x.npy")
    np.save(xpath, x)
    good = tv.safetensors_bytes(m.state_dict(), tv.vitd_metadata(m.cfg))
    hlen = int.from_bytes(good[:8], "little")

    def write(name, data):
        p = os.path.join(tmp, name)
        open(p, "wb").write(data)
        return p

    expect_failure("truncated_data", write("trunc_data.safetensors", good[:len(good) - 1000]),
                   xpath, tmp)
    expect_failure("truncated_header", write("trunc_head.safetensors", good[:8 + hlen // 2]),
                   xpath, tmp)
    expect_failure("truncated_to_4_bytes", write("trunc4.safetensors", good[:4]), xpath, tmp)
    sd = dict(m.state_dict())
    sd["blocks.0.attn.qkv.weight"] = sd["blocks.0.attn.qkv.weight"].t().contiguous()
    expect_failure("qkv_weight_transposed",
                   tv.save_safetensors(os.path.join(tmp, "transposed.safetensors"), sd,
                                       tv.vitd_metadata(m.cfg)),
                   xpath, tmp, must_name="blocks.0.attn.qkv.weight")
    expect_failure("fc1_weight_missing",
                   tv.save_model(os.path.join(tmp, "missing.safetensors"), m,
                                 drop=("blocks.1.mlp.fc1.weight",)),
                   xpath, tmp, must_name="blocks.1.mlp.fc1.weight")
    good_path = write("good.safetensors", good)
    bad_x = os.path.join(tmp, "err_x1.npy")
    np.save(bad_x, x[:, :1])  # one channel for a three-channel model
    expect_failure("input_wrong_channels", good_path, bad_x, tmp)


# ---------------------------------------------------------------------------------------------

def fmt(v, spec):
    if v is None:
        return "-"
    try:
        return format(v, spec)
    except (TypeError, ValueError):  # vitd printed something odd: show it as it is
        return str(v)


def main():
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    if not os.access(VITD, os.X_OK):
        print(f"test_golden: {VITD} is not an executable (set VITD or run make)")
        return 1
    t0 = time.time()
    tmp = tempfile.mkdtemp(prefix="vitd_golden_")
    try:
        for section in (section_fixtures, section_generated, section_errors):
            try:
                section(tmp)
            except Exception as e:  # noqa: BLE001 - report and go on to the next section
                import traceback
                traceback.print_exc()
                fail(section.__name__, f"raised {type(e).__name__}: {e}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"{'section':<10} {'case':<34} {'max|diff|':>10} {'max|logit|':>10} "
          f"{'ratio':>9}  result")
    for sec, case, d, ml, r, ok, note in results:
        print(f"{sec:<10} {case:<34} {fmt(d, '10.3e')} {fmt(ml, '10.3e')} {fmt(r, '9.2e')}  "
              f"{'ok' if ok else 'FAIL'}{'  ' + note if note else ''}")
    print(f"\n{'inspect --json':<34} {'params':>10} {'torch':>10} {'macs':>13} "
          f"{'cost model':>13}  result")
    for case, p, tp, mc, tm, ok in inspect_rows:
        print(f"{case:<34} {fmt(p, '10d')} {tp:>10d} {fmt(mc, '13d')} {tm:>13d}  "
              f"{'ok' if ok else 'FAIL'}")
    print(f"\ntolerance: max|diff| <= {RTOL:g} x max|logit|; {len(results)} cases, "
          f"{time.time() - t0:.0f} s")
    if failures:
        print(f"\n{len(failures)} failure(s):")
        for f in failures:
            print("  " + f)
        return 1
    print("all golden checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
