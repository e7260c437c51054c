#!/usr/bin/python3
"""make_odd_images.py - writes the small odd images of tests/data/images/ (run once; the
outputs are committed). Run with Debian's /usr/bin/python3 (Pillow 9.4, numpy).

  /usr/bin/python3 tests/make_odd_images.py            # (re)write the images
  /usr/bin/python3 tests/make_odd_images.py --table    # print the golden decode table of
                                                       # tests/test_image.c (Pillow's bytes)
  /usr/bin/python3 tests/make_odd_images.py --resize-table   # the golden resize table

PNGs are written by hand (chunk by chunk) so that every colour type, bit depth, tRNS, a
short palette and Adam7 interlacing can be produced; Pillow cannot write most of them. The
YCCK JPEG comes from libturbojpeg through ctypes (Pillow writes CMYK only as plain CMYK).
Everything is deterministic: fixed seeds, fixed encoder settings.
"""
import ctypes
import io
import os
import struct
import sys
import warnings
import zlib

import numpy as np
from PIL import Image, ImageOps

# Pillow warns about palette PNGs with tRNS on convert(); that case is tested on purpose
warnings.filterwarnings("ignore", message="Palette images with Transparency")

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "images")


def scene(w, h, seed, c=3):
    """A smooth gradient with a few edges and a little noise: compresses like a photo."""
    rs = np.random.RandomState(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    chans = []
    for k in range(c):
        v = 128 + 100 * np.sin(x / (3.0 + 2 * k) + k) * np.cos(y / (4.0 + k))
        v += 60 * ((x + 2 * y + 7 * k) % 17 < 5)
        v += rs.normal(0, 6, (h, w))
        chans.append(v)
    return np.clip(np.stack(chans, -1), 0, 255).astype(np.uint8)


# ---- PNG writer --------------------------------------------------------------------------

def chunk(t, d):
    return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)


def pack_rows(a, bd):
    """a: (h, w*nch) integer samples -> list of row bytes (big-endian 16-bit, packed <8)."""
    rows = []
    for r in a:
        if bd == 16:
            rows.append(r.astype(">u2").tobytes())
        elif bd == 8:
            rows.append(r.astype(np.uint8).tobytes())
        else:
            per = 8 // bd
            n = (len(r) + per - 1) // per
            out = bytearray(n)
            for i, v in enumerate(r):
                out[i // per] |= int(v) << (8 - bd * (i % per + 1))
            rows.append(bytes(out))
    return rows


ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def png(a, bd, ct, plte=None, trns=None, interlace=False, extra=b""):
    """a: (h, w, nch) samples. Filter type 0 everywhere (valid and simple). extra: chunks
    placed before IDAT."""
    h, w, nch = a.shape
    raw = b""
    if interlace:
        for x0, y0, dx, dy in ADAM7:
            sub = a[y0::dy, x0::dx]
            if sub.shape[0] == 0 or sub.shape[1] == 0:
                continue
            raw += b"".join(b"\0" + r for r in pack_rows(sub.reshape(sub.shape[0], -1), bd))
    else:
        raw = b"".join(b"\0" + r for r in pack_rows(a.reshape(h, -1), bd))
    s = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bd, ct, 0, 0, int(interlace)))
    if plte is not None:
        s += chunk(b"PLTE", bytes(plte))
    if trns is not None:
        s += chunk(b"tRNS", bytes(trns))
    return s + extra + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


# ---- JPEG helpers ------------------------------------------------------------------------

def jpeg(im, **kw):
    b = io.BytesIO()
    im.save(b, "JPEG", **kw)
    return b.getvalue()


def exif_blob(orientation, big_endian):
    """APP1 payload: "Exif\\0\\0" + a TIFF header + IFD0 holding only Orientation (SHORT)."""
    e = ">" if big_endian else "<"
    tiff = (b"MM" if big_endian else b"II") + struct.pack(e + "HI", 42, 8)
    tiff += struct.pack(e + "H", 1) + struct.pack(e + "HHI", 0x0112, 3, 1)
    tiff += struct.pack(e + "H", orientation) + b"\0\0" + struct.pack(e + "I", 0)
    return b"Exif\0\0" + tiff


def ycck_jpeg(cmyk, quality=90):
    """libturbojpeg compresses packed CMYK into a YCCK JPEG (Adobe transform 2)."""
    tj = ctypes.CDLL("libturbojpeg.so.0")
    tj.tjInitCompress.restype = ctypes.c_void_p
    h = tj.tjInitCompress()
    hgt, wid, _ = cmyk.shape
    buf = ctypes.POINTER(ctypes.c_ubyte)()
    size = ctypes.c_ulong(0)
    src = np.ascontiguousarray(cmyk)
    TJPF_CMYK, TJSAMP_420 = 11, 2
    rc = tj.tjCompress2(ctypes.c_void_p(h), src.ctypes.data_as(ctypes.c_void_p), wid, 0, hgt,
                        TJPF_CMYK, ctypes.byref(buf), ctypes.byref(size), TJSAMP_420, quality, 4096)
    assert rc == 0, "tjCompress2 failed"
    data = ctypes.string_at(buf, size.value)
    tj.tjFree(buf)
    tj.tjDestroy(ctypes.c_void_p(h))
    return data


def images():
    """name -> bytes of every odd image."""
    rs = np.random.RandomState(7)
    d = {}
    rgb = scene(45, 31, 1)
    d["gray.jpg"] = jpeg(Image.fromarray(scene(45, 31, 2, 1)[..., 0], "L"), quality=90)
    d["cmyk.jpg"] = jpeg(Image.fromarray(scene(40, 30, 3, 4), "CMYK"), quality=90)
    d["ycck.jpg"] = ycck_jpeg(scene(38, 27, 4, 4))
    d["progressive.jpg"] = jpeg(Image.fromarray(scene(61, 47, 5)), quality=85, progressive=True)
    d["s444.jpg"] = jpeg(Image.fromarray(scene(37, 23, 6)), quality=92, subsampling=0)
    d["s422.jpg"] = jpeg(Image.fromarray(scene(37, 23, 6)), quality=92, subsampling=1)
    d["one_px.jpg"] = jpeg(Image.fromarray(np.array([[[200, 30, 90]]], np.uint8)), quality=95)
    d["tall.jpg"] = jpeg(Image.fromarray(scene(9, 230, 8)), quality=90)
    # EXIF orientation: one 24x16 picture, the same compressed data, eight tags (and two
    # big-endian ones); the asymmetric content shows any wrong flip.
    base = Image.fromarray(scene(24, 16, 9))
    for o in range(1, 9):
        d["exif_%d.jpg" % o] = jpeg(base, quality=95, exif=exif_blob(o, False))
    d["exif_3_mm.jpg"] = jpeg(base, quality=95, exif=exif_blob(3, True))
    d["exif_6_mm.jpg"] = jpeg(base, quality=95, exif=exif_blob(6, True))

    # PNG: every colour type and depth Pillow opens
    d["rgb.png"] = png(rgb, 8, 2)
    d["rgba.png"] = png(np.dstack([rgb, rs.randint(0, 256, rgb.shape[:2])]), 8, 6)
    g = scene(33, 21, 10, 1)
    d["la.png"] = png(np.dstack([g, rs.randint(0, 256, g.shape[:2])]), 8, 4)
    d["gray8_trns.png"] = png(g, 8, 0, trns=struct.pack(">H", int(g[0, 0, 0])))
    d["rgb_trns.png"] = png(rgb, 8, 2, trns=struct.pack(">HHH", *map(int, rgb[0, 0])))
    d["rgb16.png"] = png(rs.randint(0, 65536, (19, 26, 3)), 16, 2)
    d["rgba16.png"] = png(rs.randint(0, 65536, (19, 26, 4)), 16, 6)
    d["la16.png"] = png(rs.randint(0, 65536, (17, 23, 2)), 16, 4)
    # 16-bit gray opens as mode "I" and convert() clips at 255: keep many values below 256
    g16 = rs.randint(0, 600, (18, 25, 1))
    g16[0, :5, 0] = [0, 255, 256, 65535, 1000]
    d["gray16.png"] = png(g16, 16, 0)
    for bd in (1, 2, 4):
        d["gray%d.png" % bd] = png(rs.randint(0, 1 << bd, (15, 29, 1)), bd, 0)
    # palette with 20 entries while indices go to 31: Pillow's default ramp fills the rest
    plte = rs.randint(0, 256, 60)
    d["palette.png"] = png(rs.randint(0, 32, (22, 27, 1)), 8, 3, plte=plte)
    d["palette4_trns.png"] = png(rs.randint(0, 16, (14, 31, 1)), 4, 3, plte=rs.randint(0, 256, 48),
                                 trns=rs.randint(0, 256, 10))
    d["interlaced_rgb.png"] = png(scene(29, 19, 11), 8, 2, interlace=True)
    d["interlaced_pal2.png"] = png(rs.randint(0, 4, (13, 11, 1)), 2, 3,
                                   plte=rs.randint(0, 256, 12), interlace=True)
    d["interlaced_gray16.png"] = png(rs.randint(0, 400, (9, 14, 1)), 16, 0, interlace=True)
    d["interlaced_la.png"] = png(rs.randint(0, 256, (10, 7, 2)), 8, 4, interlace=True)
    d["one_px.png"] = png(np.array([[[10, 250, 99]]]), 8, 2)
    # Adam7 passes that are empty for tiny images
    d["interlaced_1x1.png"] = png(np.array([[[3, 140, 250]]]), 8, 2, interlace=True)
    d["interlaced_3x2.png"] = png(rs.randint(0, 256, (2, 3, 3)), 8, 2, interlace=True)
    d["small.png"] = png(scene(20, 14, 12), 8, 2)
    d["wide.png"] = png(scene(300, 5, 13), 8, 2)
    # metadata that must not change pixels: gAMA, text, a (bogus) ICC profile, an eXIf
    meta = (chunk(b"gAMA", struct.pack(">I", 100000)) + chunk(b"tEXt", b"Comment\0odd image")
            + chunk(b"zTXt", b"Big\0\0" + zlib.compress(b"x" * 100000, 9))
            + chunk(b"iTXt", b"Title\0\0\0\0\0title") + chunk(b"iCCP", b"bogus\0\0" + zlib.compress(b"not icc"))
            + chunk(b"eXIf", exif_blob(6, False)[6:]))
    d["metadata.png"] = png(scene(21, 17, 14), 8, 2, extra=meta)
    return d


def fnv1a(b):
    h = 0xCBF29CE484222325
    for x in b:
        h = ((h ^ x) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def table():
    """Golden decodes for tests/test_image.c: Pillow's convert() (and exif_transpose)."""
    for name in sorted(os.listdir(OUT)):
        if not (name.endswith(".jpg") or name.endswith(".png")):
            continue
        for exif in (0, 1):
            if exif and not name.startswith("exif_"):
                continue
            for c, mode in ((3, "RGB"), (1, "L")):
                im = Image.open(os.path.join(OUT, name))
                if exif:
                    im = ImageOps.exif_transpose(im)
                a = np.asarray(im.convert(mode))
                print('    {"%s", %d, %d, %d, %d, 0x%016xull},' % (name, c, exif, a.shape[1], a.shape[0], fnv1a(a.tobytes())))


def pattern(w, h, c, k):
    """The synthetic source of the resize goldens; test_image.c computes the same formula."""
    y, x, ch = np.mgrid[0:h, 0:w, 0:c]
    v = (x * (37 + k) + y * 91 + ch * 53 + x * y * 13 + (x * x * 7) % 29) % 256
    v = np.where((x + y) % 5 == 0, 255 - v // 4, v)  # hard edges, so clipping is exercised
    return v.astype(np.uint8)


RESIZE_CASES = [  # (src w, h, channels, pattern k, dst w, h)
    (7, 5, 3, 0, 3, 2), (7, 5, 3, 0, 11, 8), (7, 5, 3, 0, 7, 9), (7, 5, 3, 0, 14, 5),
    (7, 5, 3, 0, 1, 1), (7, 5, 3, 0, 2, 13), (9, 6, 1, 1, 4, 3), (9, 6, 1, 1, 20, 17),
    (9, 6, 1, 1, 9, 2), (64, 48, 3, 2, 17, 13), (64, 48, 1, 3, 5, 47), (5, 4, 3, 4, 64, 48),
    (1, 1, 3, 5, 4, 3), (300, 2, 1, 6, 7, 2),
]


def resize_table():
    """Pillow's Image.resize of the synthetic patterns: the full bytes of the small results,
    an FNV-1a hash for all."""
    for interp, name in ((Image.BICUBIC, "IMG_BICUBIC"), (Image.BILINEAR, "IMG_BILINEAR")):
        for sw, sh, c, k, dw, dh in RESIZE_CASES:
            a = pattern(sw, sh, c, k)
            im = Image.fromarray(a if c == 3 else a[..., 0], "RGB" if c == 3 else "L")
            r = np.asarray(im.resize((dw, dh), interp)).tobytes()
            small = '"' + "".join("\\x%02x" % b for b in r) + '"' if len(r) <= 24 else "NULL"
            print("    {%d, %d, %d, %d, %d, %d, %s, 0x%016xull, %s}," % (sw, sh, c, k, dw, dh, name, fnv1a(r), small))


def main():
    if "--resize-table" in sys.argv:
        resize_table()
        return
    if "--table" in sys.argv:
        table()
        return
    os.makedirs(OUT, exist_ok=True)
    for name, data in images().items():
        assert len(data) < 20000, name
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
    print("wrote %d images to %s" % (len(images()), OUT))


if __name__ == "__main__":
    main()
