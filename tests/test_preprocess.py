#!/usr/bin/python3
"""test_preprocess.py - vitd's decoding and preprocessing against Pillow 9.4 + torchvision.

  1. `$VITD preprocess` (default build/vitd) on the photographs of tests/data/photos and the
     odd images of tests/data/images, for several (S, crop_pct, interpolation, channels),
     against transforms.Compose([Resize(floor(S/crop_pct)), CenterCrop(S), ToTensor()
     (, Normalize)]) on Image.open(f).convert("RGB" or "L"); with --exif, against
     ImageOps.exif_transpose first; with --model, with the parameters `vitd inspect --json`
     reports for the checkpoints of tests/data/golden. Tolerance 1/255 (divided by std when
     normalising); the goal, and what is measured today, is exact equality.
  2. img_decode and img_resize called directly (engine/image.c built into a temporary shared
     library, used through ctypes) against Image.convert and Image.resize, byte for byte,
     on random sizes.
  3. The command's failure modes: exit statuses and "vitd preprocess: FILE: message".

Run with Debian's /usr/bin/python3 (torch, torchvision, Pillow). Exits non-zero on failure
and prints the largest difference of every case.
"""
import ctypes
import glob
import json
import math
import os
import subprocess
import sys
import warnings
import tempfile

import numpy as np
import torch
from PIL import Image, ImageOps

# Pillow warns about palette PNGs with tRNS on convert(); that case is tested on purpose
warnings.filterwarnings("ignore", message="Palette images with Transparency")
from torchvision import transforms as T

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VITD = os.environ.get("VITD", os.path.join(ROOT, "build", "vitd"))
PHOTOS = sorted(glob.glob(os.path.join(ROOT, "tests", "data", "photos", "*.jpg")))
ODD = sorted(glob.glob(os.path.join(ROOT, "tests", "data", "images", "*.*")))
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL " + msg)


def reference(path, S, pct, interp, channels, exif, norm):
    im = Image.open(path)
    if exif:
        im = ImageOps.exif_transpose(im)
    im = im.convert("RGB" if channels == 3 else "L")
    mode = T.InterpolationMode.BICUBIC if interp == "bicubic" else T.InterpolationMode.BILINEAR
    tf = [T.Resize(math.floor(S / pct), interpolation=mode), T.CenterCrop(S), T.ToTensor()]
    if norm:
        tf.append(T.Normalize(norm[0][:channels], norm[1][:channels]))
    return T.Compose(tf)(im).numpy()


def run_case(name, files, S, pct, interp, channels, exif=False, norm=None, model=None):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "x.npy")
        args = [VITD, "preprocess", "--output", out]
        if model:  # every parameter, mean and std included, comes from the checkpoint
            args += ["--model", model]
        else:
            args += ["--image-size", str(S), "--crop-pct", repr(pct), "--interpolation", interp,
                     "--channels", str(channels)]
            if norm:
                args += ["--mean", ",".join(map(repr, norm[0])), "--std", ",".join(map(repr, norm[1]))]
            else:
                args += ["--mean", "0,0,0", "--std", "1,1,1"]
        if exif:
            args.append("--exif")
        p = subprocess.run(args + files, capture_output=True, text=True)
        if p.returncode != 0:
            fail("%s: vitd exited %d: %s" % (name, p.returncode, p.stderr.strip()))
            return
        got = np.load(out)
    if got.shape != (len(files), channels, S, S) or got.dtype != np.float32:
        fail("%s: output %s %s" % (name, got.shape, got.dtype))
        return
    tol = 1 / 255 / (min(norm[1][:channels]) if norm else 1.0) + 1e-6
    worst, worst_file, unequal = 0.0, "", 0
    for i, f in enumerate(files):
        ref = reference(f, S, pct, interp, channels, exif, norm)
        d = float(np.abs(ref - got[i]).max())
        unequal += int((ref != got[i]).sum())
        if d > worst:
            worst, worst_file = d, os.path.basename(f)
        if d > tol:
            fail("%s: %s: max |diff| %.6g > %.6g" % (name, os.path.basename(f), d, tol))
    print("%-44s %3d images  max |diff| %.3g%s  (%d values not bit-equal)"
          % (name, len(files), worst, " (%s)" % worst_file if worst_file else "", unequal))


# ---- the engine itself, through ctypes ----------------------------------------------------

class Img(ctypes.Structure):
    _fields_ = [("width", ctypes.c_int), ("height", ctypes.c_int), ("channels", ctypes.c_int),
                ("pix", ctypes.POINTER(ctypes.c_uint8))]


class DecodeOpts(ctypes.Structure):
    _fields_ = [("channels", ctypes.c_int), ("max_pixels", ctypes.c_uint64), ("exif_orient", ctypes.c_int)]


def build_engine(tmp):
    so = os.path.join(tmp, "libimage.so")
    cc = os.environ.get("CC", "gcc")
    cmd = [cc, "-std=c11", "-D_GNU_SOURCE", "-O2", "-shared", "-fPIC", "-I" + os.path.join(ROOT, "engine"),
           os.path.join(ROOT, "engine", "image.c"), os.path.join(ROOT, "engine", "status.c"),
           "-o", so, "-lturbojpeg", "-lpng", "-lm"]
    subprocess.run(cmd, check=True)
    lib = ctypes.CDLL(so)
    lib.img_decode.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(DecodeOpts),
                               ctypes.POINTER(Img), ctypes.c_char_p, ctypes.c_size_t]
    lib.img_resize.argtypes = [ctypes.POINTER(Img), ctypes.c_int, ctypes.c_int, ctypes.c_int,
                               ctypes.POINTER(Img), ctypes.c_char_p, ctypes.c_size_t]
    lib.img_free.argtypes = [ctypes.POINTER(Img)]
    return lib


def to_array(im):
    n = im.width * im.height * im.channels
    a = np.ctypeslib.as_array(im.pix, shape=(n,)).copy()
    return a.reshape(im.height, im.width, im.channels)


def check_decode_direct(lib):
    worst = 0
    for f in PHOTOS + ODD:
        data = open(f, "rb").read()
        for channels, mode in ((3, "RGB"), (1, "L")):
            im, err = Img(), ctypes.create_string_buffer(256)
            st = lib.img_decode(data, len(data), ctypes.byref(DecodeOpts(channels, 0, 0)),
                                ctypes.byref(im), err, 256)
            if st != 0:
                fail("img_decode %s: status %d %s" % (os.path.basename(f), st, err.value.decode()))
                continue
            got = to_array(im)
            lib.img_free(ctypes.byref(im))
            ref = np.asarray(Image.open(f).convert(mode)).reshape(got.shape[0], got.shape[1], -1)
            if got.shape != ref.shape:
                fail("img_decode %s %s: shape %s, Pillow %s" % (os.path.basename(f), mode, got.shape, ref.shape))
                continue
            d = int(np.abs(got.astype(int) - ref).max())
            worst = max(worst, d)
            if d:
                fail("img_decode %s %s: max |diff| %d" % (os.path.basename(f), mode, d))
    print("%-44s %3d images  max |diff| %d (bytes, RGB and L)" % ("img_decode vs Image.convert", len(PHOTOS + ODD), worst))


def check_resize_direct(lib):
    rs = np.random.RandomState(1234)
    worst, n = 0, 0
    sizes = [(rs.randint(1, 48), rs.randint(1, 48), rs.randint(1, 64), rs.randint(1, 64)) for _ in range(150)]
    sizes += [(500, 375, 248, 186), (375, 500, 7, 9), (3, 2, 250, 301), (1, 1, 5, 1), (640, 1, 3, 1)]
    for sw, sh, dw, dh in sizes:
        for channels, mode in ((3, "RGB"), (1, "L")):
            # a smooth field plus noise plus hard steps: both rounding and clipping happen
            y, x = np.mgrid[0:sh, 0:sw]
            base = 127 + 120 * np.sin(x / 3.0 + y / 5.0)[..., None] + rs.normal(0, 40, (sh, sw, channels))
            base[(x + y) % 7 == 0] = 255
            a = np.clip(base, 0, 255).astype(np.uint8)
            pil = Image.fromarray(a if channels == 3 else a[..., 0], mode)
            for interp, code in ((Image.BICUBIC, 0), (Image.BILINEAR, 1)):
                ref = np.asarray(pil.resize((dw, dh), interp)).reshape(dh, dw, channels)
                buf = np.ascontiguousarray(a)
                src = Img(sw, sh, channels, buf.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)))
                dst, err = Img(), ctypes.create_string_buffer(256)
                st = lib.img_resize(ctypes.byref(src), dw, dh, code, ctypes.byref(dst), err, 256)
                if st != 0:
                    fail("img_resize %dx%d->%dx%d: %s" % (sw, sh, dw, dh, err.value.decode()))
                    continue
                got = to_array(dst)
                lib.img_free(ctypes.byref(dst))
                d = int(np.abs(got.astype(int) - ref).max())
                worst, n = max(worst, d), n + 1
                if d:
                    fail("img_resize %dx%dx%d -> %dx%d interp %d: max |diff| %d" % (sw, sh, channels, dw, dh, code, d))
    print("%-44s %3d cases   max |diff| %d (bytes)" % ("img_resize vs Image.resize", n, worst))


# ---- failure modes of the command --------------------------------------------------------

def check_cli():
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "x.npy")
        notimg = os.path.join(tmp, "notes.txt")
        open(notimg, "w").write("not an image\n")
        # a real JPEG whose SOF declares 65500 x 65500
        b = bytearray(open(os.path.join(ROOT, "tests", "data", "images", "s444.jpg"), "rb").read())
        i = 2
        while b[i + 1] not in (0xC0, 0xC1, 0xC2):
            i += 2 + (b[i + 2] << 8 | b[i + 3])
        b[i + 5:i + 9] = bytes([0xFF, 0xDC, 0xFF, 0xDC])
        bomb = os.path.join(tmp, "bomb.jpg")
        open(bomb, "wb").write(bytes(b))
        cases = [
            ("--help", [VITD, "preprocess", "--help"], 0, "usage:"),
            ("no output", [VITD, "preprocess", PHOTOS[0]], 2, "--output"),
            ("no image", [VITD, "preprocess", "--output", out], 2, "no image"),
            ("unknown option", [VITD, "preprocess", "--frobnicate", PHOTOS[0], "--output", out], 2, "unknown option"),
            ("bad channels", [VITD, "preprocess", "--channels", "2", PHOTOS[0], "--output", out], 2, "--channels"),
            ("bad mean", [VITD, "preprocess", "--mean", "1,2", PHOTOS[0], "--output", out], 2, "--mean"),
            ("zero std", [VITD, "preprocess", "--std", "0.2,0,0.2", PHOTOS[0], "--output", out], 2, "--std"),
            ("bad interp", [VITD, "preprocess", "--interpolation", "lanczos", PHOTOS[0], "--output", out], 2, "--interpolation"),
            ("missing file", [VITD, "preprocess", os.path.join(tmp, "nope.jpg"), "--output", out], 1,
             "vitd preprocess: %s: No such file" % os.path.join(tmp, "nope.jpg")),
            ("not an image", [VITD, "preprocess", PHOTOS[0], notimg, "--output", out], 1,
             "vitd preprocess: %s: not a JPEG or PNG" % notimg),
            ("bomb header", [VITD, "preprocess", bomb, "--output", out], 1,
             "vitd preprocess: %s: JPEG image is 65500x65500" % bomb),
        ]
        for name, args, code, text in cases:
            p = subprocess.run(args, capture_output=True, text=True, timeout=60)
            shown = p.stdout + p.stderr
            if p.returncode != code or text not in shown:
                fail("cli %s: exit %d (want %d), output %r lacks %r" % (name, p.returncode, code, shown[:300], text))
            if code and os.path.exists(out):
                fail("cli %s: wrote %s although it failed" % (name, out))
        print("%-44s %3d cases   %s" % ("command failure modes", len(cases), "ok" if not failures else "see above"))


def main():
    if not os.path.exists(VITD):
        print("FAIL: %s not built" % VITD)
        return 1
    torch.set_num_threads(1)
    exif = [f for f in ODD if os.path.basename(f).startswith("exif_")]
    small = [f for f in ODD if os.path.basename(f).split(".")[0] in ("small", "one_px", "gray1", "palette")]
    print("%-44s %s" % ("case", "result"))
    run_case("photos 224/0.9/bicubic RGB", PHOTOS, 224, 0.9, "bicubic", 3)
    run_case("photos 224/0.875/bilinear RGB", PHOTOS, 224, 0.875, "bilinear", 3)
    run_case("photos 224/0.9/bicubic RGB ImageNet-norm", PHOTOS, 224, 0.9, "bicubic", 3, norm=IMAGENET)
    run_case("photos 28/1.0/bicubic gray", PHOTOS, 28, 1.0, "bicubic", 1)
    run_case("photos 384/1.0/bicubic RGB", PHOTOS, 384, 1.0, "bicubic", 3)
    run_case("photos 224/0.9/bicubic RGB --exif", PHOTOS, 224, 0.9, "bicubic", 3, exif=True)
    run_case("odd 32/0.9/bicubic RGB", ODD, 32, 0.9, "bicubic", 3)
    run_case("odd 32/0.875/bilinear RGB", ODD, 32, 0.875, "bilinear", 3)
    run_case("odd 28/1.0/bilinear gray", ODD, 28, 1.0, "bilinear", 1)
    run_case("odd 28/1.0/bicubic gray ImageNet-norm", ODD, 28, 1.0, "bicubic", 1, norm=IMAGENET)
    run_case("odd 224/0.9/bicubic RGB (upscaling)", ODD, 224, 0.9, "bicubic", 3)
    run_case("odd 32/1.25/bicubic RGB (padded crop)", ODD, 32, 1.25, "bicubic", 3)
    run_case("small 32/1.5/bilinear gray (padded crop)", small, 32, 1.5, "bilinear", 1)
    run_case("exif 16/1.0/bicubic RGB --exif", exif, 16, 1.0, "bicubic", 3, exif=True)
    run_case("exif 12/0.9/bilinear gray --exif", exif, 12, 0.9, "bilinear", 1, exif=True)
    # --model: the parameters come from the checkpoint (as `vitd inspect --json` reports them)
    for m in sorted(glob.glob(os.path.join(ROOT, "tests", "data", "golden", "*.safetensors"))):
        p = subprocess.run([VITD, "inspect", "--json", m], capture_output=True, text=True)
        if p.returncode != 0:
            fail("inspect %s: %s" % (m, p.stderr.strip()))
            continue
        c = json.loads(p.stdout)
        if c["resize"] != math.floor(c["image_size"] / c["crop_pct"]):
            fail("%s: resize %d, floor(S / crop_pct) = %d" % (m, c["resize"], math.floor(c["image_size"] / c["crop_pct"])))
        run_case("--model " + os.path.basename(m), PHOTOS + small, c["image_size"], c["crop_pct"],
                 c["interpolation"], c["channels"], norm=(c["mean"], c["std"]), model=m)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            lib = build_engine(tmp)
        except (subprocess.CalledProcessError, OSError) as e:
            fail("cannot build engine/image.c as a shared library: %s" % e)
            lib = None
        if lib:
            check_decode_direct(lib)
            check_resize_direct(lib)
    check_cli()
    if failures:
        print("%d failures" % len(failures))
        return 1
    print("all preprocessing cases match")
    return 0


if __name__ == "__main__":
    sys.exit(main())
