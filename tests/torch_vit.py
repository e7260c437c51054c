"""torch_vit.py - the PyTorch reference vitd is tested against.

A small reimplementation of timm's VisionTransformer / VisionTransformerDistilled forward pass
(eval mode) with timm's parameter names, plus the removed-block path of
../shared/docs/METHOD.md section 2, plus writers for the checkpoint files vitd loads
(safetensors with vitd's metadata, and timm's hub folder layout).

It is NOT timm: no dropout, drop-path, LayerScale, pooling variants, position-embedding
resampling or training code. It needs nothing but torch and numpy (timm and the safetensors
package are not available here, and a reference that is short enough to read line by line is the
point of a test oracle).

Configuration (a plain dict; see `cfg()` for the defaults):
    img_size S, patch_size P (S % P == 0), in_chans C, embed_dim D, depth L, num_heads H
    (D % H == 0; the head width D/H need not be 64), mlp_dim F (or mlp_ratio), num_classes K,
    distilled (bool), removed (iterable of block indices whose norm1/attn do not exist),
    init_std (weight scale; 0.02 as timm's trunc_normal_).
"""

import json
import math
import os
import struct
import zlib

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

LN_EPS = 1e-6  # timm's ViT LayerNorm (METHOD.md section 1); torch's default 1e-5 would differ

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def cfg(**kw):
    """A full configuration: DeiT-T shape unless overridden."""
    c = dict(img_size=224, patch_size=16, in_chans=3, embed_dim=192, depth=12, num_heads=3,
             mlp_dim=None, mlp_ratio=4.0, num_classes=1000, distilled=False, removed=(),
             init_std=0.02)
    unknown = set(kw) - set(c)
    if unknown:
        raise ValueError(f"unknown config keys {sorted(unknown)}")
    c.update(kw)
    if c["mlp_dim"] is None:
        c["mlp_dim"] = int(c["embed_dim"] * c["mlp_ratio"])
    c["mlp_ratio"] = c["mlp_dim"] / c["embed_dim"]
    c["removed"] = tuple(sorted(set(int(i) for i in c["removed"])))
    assert c["img_size"] % c["patch_size"] == 0, "image size must be a multiple of the patch"
    assert c["embed_dim"] % c["num_heads"] == 0, "heads must divide the width"
    assert all(0 <= i < c["depth"] for i in c["removed"]), "removed block out of range"
    return c


class Attention(nn.Module):
    """timm Attention: qkv Linear with bias, rows [Q heads | K heads | V heads], scale Dh^-0.5."""

    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, D = x.shape
        H = self.heads
        # (B, N, 3D) -> (3, B, H, N, Dh): the same reshape/permute as timm, so the row order of
        # qkv.weight that vitd must honour is exactly timm's.
        qkv = self.qkv(x).reshape(B, N, 3, H, D // H).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = torch.softmax((q * self.scale) @ k.transpose(-2, -1), dim=-1)  # (B, H, N, N)
        x = (attn @ v).transpose(1, 2).reshape(B, N, D)
        return self.proj(x)


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()  # exact erf form, as timm (not the tanh approximation)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm block. A removed block has no norm1/attn modules at all, so its state_dict has
    no such keys and its parameter count drops by exactly the attention's."""

    def __init__(self, dim, heads, mlp_dim, removed):
        super().__init__()
        self.removed = removed
        if not removed:
            self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
            self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, mlp_dim)

    def forward(self, x):
        if self.removed:
            x = 2 * x  # METHOD.md section 2: the lambda = 0 end of dilution, not x itself
        else:
            x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.cfg = c
        D, P = c["embed_dim"], c["patch_size"]
        n_patches = (c["img_size"] // P) ** 2
        self.n_prefix = 2 if c["distilled"] else 1
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(c["in_chans"], D, kernel_size=P, stride=P)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        if c["distilled"]:
            self.dist_token = nn.Parameter(torch.zeros(1, 1, D))
        self.pos_embed = nn.Parameter(torch.zeros(1, n_patches + self.n_prefix, D))
        self.blocks = nn.ModuleList(
            Block(D, c["num_heads"], c["mlp_dim"], i in c["removed"]) for i in range(c["depth"]))
        self.norm = nn.LayerNorm(D, eps=LN_EPS)
        self.head = nn.Linear(D, c["num_classes"])
        if c["distilled"]:
            self.head_dist = nn.Linear(D, c["num_classes"])

    def forward(self, images):
        x = self.patch_embed.proj(images).flatten(2).transpose(1, 2)  # (B, Np, D), row-major
        B = x.shape[0]
        prefix = [self.cls_token.expand(B, -1, -1)]
        if self.cfg["distilled"]:
            prefix.append(self.dist_token.expand(B, -1, -1))
        # Position embeddings are added after the tokens are concatenated (timm, no_embed_class
        # False): the class/dist tokens get their own rows of pos_embed.
        x = torch.cat(prefix + [x], dim=1) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        x = self.norm(x)
        if self.cfg["distilled"]:
            # timm VisionTransformerDistilled in eval (distilled_training False): the mean.
            return (self.head(x[:, 0]) + self.head_dist(x[:, 1])) / 2
        return self.head(x[:, 0])


# ---------------------------------------------------------------------------------------------
# Deterministic weights

def _name_seed(seed, name):
    # Each tensor gets its own generator seeded from (seed, name), so a removed-block model built
    # with the same seed shares every remaining tensor with the dense one bit for bit, whatever
    # is absent. crc32 rather than hash(): Python's str hash is salted per process.
    return (seed * 1000003 + zlib.crc32(name.encode())) & 0x7FFFFFFFFFFFFFFF


def init_weights(model, seed, std=0.02):
    """timm-like init, but with every bias and LayerNorm affine made non-trivial so that a
    missing bias, a swapped gamma/beta or a dropped LN shows up in the logits."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            g = torch.Generator().manual_seed(_name_seed(seed, name))
            r = torch.randn(p.shape, generator=g, dtype=torch.float32)
            leaf = name.rsplit(".", 1)[-1]
            is_norm = ".norm" in "." + name and leaf in ("weight", "bias")
            if is_norm and leaf == "weight":
                v = 1.0 + 0.1 * r
            elif is_norm or leaf == "bias":
                v = 0.02 * r
            else:
                # Truncated normal at +-2 std (timm's trunc_normal_ cuts at the absolute +-2,
                # which for std 0.02 is no cut at all; clamping is cheap and keeps tails sane).
                v = std * r.clamp_(-2.0, 2.0)
            p.copy_(v)
    return model


def build(c, seed=0):
    """A VisionTransformer in eval mode with deterministic weights. c: a dict from cfg() (or
    keyword overrides of it)."""
    if not isinstance(c, dict) or "mlp_ratio" not in c or "init_std" not in c:
        c = cfg(**c)
    m = VisionTransformer(c).eval()
    return init_weights(m, seed, c["init_std"])


def params(model):
    return sum(p.numel() for p in model.parameters())


def attn_params(D):
    """Parameters of one block's norm1 + attention (qkv, proj with biases)."""
    return 2 * D + (3 * D * D + 3 * D) + (D * D + D)


def round_weights(model, dtype):
    """Rounds every parameter through dtype ('F16', 'BF16', 'F32') in place, so the fp32 torch
    forward sees exactly what a loader that widens stored F16/BF16 to f32 sees."""
    t = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}[dtype]
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(t).to(torch.float32))
    return model


def logits(model, x):
    """x: numpy or tensor (B, C, S, S) float32 -> numpy (B, K) float32."""
    with torch.no_grad():
        return model(torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32)).numpy()


# ---------------------------------------------------------------------------------------------
# Files

_DTYPES = {"F32": (torch.float32, 4), "F16": (torch.float16, 2), "BF16": (torch.bfloat16, 2)}


def _tensor_bytes(t, dtype):
    tt, _ = _DTYPES[dtype]
    t = t.detach().to(tt).contiguous().cpu()
    # numpy has no bfloat16: reinterpret the 16-bit payload as int16 (little-endian on the
    # hosts we run on, and safetensors data is little-endian).
    if tt is torch.bfloat16:
        t = t.view(torch.int16)
    a = t.numpy()
    assert a.dtype.byteorder in ("<", "=", "|") and np.little_endian
    return a.tobytes()


def safetensors_bytes(tensors, metadata=None, dtype="F32"):
    """The bytes of a safetensors file. tensors: dict name -> tensor (written in dict order);
    metadata: dict str -> str; dtype applies to every tensor ('F32', 'F16' or 'BF16').
    Written by hand, following the format spec (../shared/notes/engines.md section 5)."""
    if dtype not in _DTYPES:
        raise ValueError(f"dtype {dtype}")
    header, blobs, off = {}, [], 0
    if metadata:
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise TypeError("safetensors metadata maps strings to strings")
        header["__metadata__"] = dict(metadata)
    for name, t in tensors.items():
        b = _tensor_bytes(t, dtype)
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    # Pad the header with spaces so the data area starts 8-aligned (8 + len is a multiple of 8),
    # as the reference writer does; readers may then use the mapped data in place.
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def save_safetensors(path, tensors, metadata=None, dtype="F32"):
    data = safetensors_bytes(tensors, metadata, dtype)
    with open(path, "wb") as f:
        f.write(data)
    return path


def load_safetensors(path):
    """Minimal reader (for self-checks): -> (dict name -> float32 tensor, metadata dict)."""
    with open(path, "rb") as f:
        buf = f.read()
    (n,) = struct.unpack("<Q", buf[:8])
    header = json.loads(buf[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {})
    data = buf[8 + n:]
    out = {}
    for name, e in header.items():
        b, end = e["data_offsets"]
        raw = np.frombuffer(data[b:end], dtype={"F32": "<f4", "F16": "<f2", "BF16": "<i2"}[e["dtype"]])
        if e["dtype"] == "BF16":
            t = torch.from_numpy(raw.copy()).view(torch.bfloat16).float()
        else:
            t = torch.from_numpy(raw.astype(np.float32))
        out[name] = t.reshape(e["shape"])
    return out, meta


def architecture_name(c):
    size = {192: "tiny", 384: "small", 768: "base"}.get(c["embed_dim"])
    deit_shape = (size and c["depth"] == 12 and c["num_heads"] == c["embed_dim"] // 64
                  and c["mlp_dim"] == 4 * c["embed_dim"] and c["in_chans"] == 3)
    if deit_shape:
        dist = "_distilled" if c["distilled"] else ""
        return f"deit_{size}{dist}_patch{c['patch_size']}_{c['img_size']}"
    return f"vit_test_d{c['embed_dim']}_patch{c['patch_size']}_{c['img_size']}"


def timm_config(c, removed=None, labels=None, crop_pct=0.9, interpolation="bicubic"):
    """The config.json timm's push_to_hub writes, with model_args spelled out (so a loader need
    not know timm's model names). removed/labels add vitd's two extra keys."""
    C, S = c["in_chans"], c["img_size"]
    mean = IMAGENET_MEAN if C == 3 else [0.5] * C
    std = IMAGENET_STD if C == 3 else [0.5] * C
    j = {
        "architecture": architecture_name(c),
        "num_classes": c["num_classes"],
        "num_features": c["embed_dim"],
        "global_pool": "token",
        "model_args": {
            "img_size": S,
            "patch_size": c["patch_size"],
            "in_chans": C,
            "embed_dim": c["embed_dim"],
            "depth": c["depth"],
            "num_heads": c["num_heads"],
            "mlp_ratio": c["mlp_ratio"],
            "num_classes": c["num_classes"],
        },
        "pretrained_cfg": {
            "input_size": [C, S, S],
            "interpolation": interpolation,
            "crop_pct": crop_pct,
            "crop_mode": "center",
            "mean": mean,
            "std": std,
            "num_classes": c["num_classes"],
            "first_conv": "patch_embed.proj",
            "classifier": ["head", "head_dist"] if c["distilled"] else "head",
        },
    }
    if c["distilled"]:
        j["model_args"]["distilled"] = True
    if removed is not None:
        j["removed_blocks"] = sorted(int(i) for i in removed)
    if labels is not None:
        j["label_names"] = list(labels)
    return j


def default_labels(k):
    return [f"class_{i:04d}" for i in range(k)]


def vitd_metadata(c, labels=None, **kw):
    """vitd's own safetensors metadata: vitd.config (timm config.json schema + removed_blocks +
    label_names) and vitd.removed_blocks ("0,2,4")."""
    labels = default_labels(c["num_classes"]) if labels is None else labels
    j = timm_config(c, removed=c["removed"], labels=labels, **kw)
    return {"vitd.config": json.dumps(j, separators=(",", ":")),
            "vitd.removed_blocks": ",".join(str(i) for i in c["removed"])}


def save_model(path, model, dtype="F32", metadata=True, extra=None, drop=(), labels=None):
    """Writes model's state_dict as a safetensors checkpoint.
    metadata: True -> vitd metadata; False/None -> none; a dict -> exactly that.
    extra: more tensors to store (e.g. leftover attention of removed blocks); drop: names left
    out (e.g. to make a deliberately broken file)."""
    sd = {k: v for k, v in model.state_dict().items() if k not in drop}
    if extra:
        sd.update(extra)
    if metadata is True:
        meta = vitd_metadata(model.cfg, labels=labels)
    else:
        meta = metadata or None
    return save_safetensors(path, sd, meta, dtype)


def save_timm_folder(folder, model, dtype="F32", labels=None):
    """timm's hub layout: folder/model.safetensors (no metadata, as timm writes it) and
    folder/config.json. Blocks whose attention is removed are then known from absent tensors."""
    os.makedirs(folder, exist_ok=True)
    save_model(os.path.join(folder, "model.safetensors"), model, dtype=dtype, metadata=False)
    j = timm_config(model.cfg, labels=labels)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(j, f, indent=4)
        f.write("\n")
    return folder


def random_input(c, batch, seed):
    g = np.random.default_rng(seed)
    return g.standard_normal((batch, c["in_chans"], c["img_size"], c["img_size"])).astype(np.float32)


if __name__ == "__main__":
    # Self-check: the removed path, parameter accounting, and the file writer round trip.
    c = cfg(img_size=32, patch_size=8, embed_dim=64, depth=4, num_heads=2, num_classes=10)
    dense = build(c, seed=1)
    cut = build(dict(c, removed=(0, 2)), seed=1)
    assert params(dense) - params(cut) == 2 * attn_params(64)
    x = torch.as_tensor(random_input(c, 2, 0))
    # The removed path by hand: the same weights, attention skipped and the stream doubled.
    with torch.no_grad():
        h = torch.cat([dense.cls_token.expand(2, -1, -1),
                       dense.patch_embed.proj(x).flatten(2).transpose(1, 2)], 1) + dense.pos_embed
        for i, b in enumerate(dense.blocks):
            h = 2 * h if i in (0, 2) else h + b.attn(b.norm1(h))
            h = h + b.mlp(b.norm2(h))
        ref = dense.head(dense.norm(h)[:, 0])
        assert torch.equal(ref, cut(x)), "removed path"
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        for dt in ("F32", "F16", "BF16"):
            p = save_model(os.path.join(d, f"m_{dt}.safetensors"), cut, dtype=dt)
            sd, meta = load_safetensors(p)
            r = round_weights(build(dict(c, removed=(0, 2)), seed=1), dt)
            assert all(torch.equal(sd[k], v) for k, v in r.state_dict().items()), dt
            assert json.loads(meta["vitd.config"])["removed_blocks"] == [0, 2]
            assert (8 + struct.unpack("<Q", open(p, "rb").read(8))[0]) % 8 == 0
    print("torch_vit self-check ok")
