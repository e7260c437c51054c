/* image.c - image decoding and the evaluation preprocessing (see image.h).
 *
 * What it reproduces: Image.open(f).convert("RGB" or "L") of Pillow 9.4, then torchvision
 * 0.14's Resize / CenterCrop / ToTensor / Normalize on that PIL image, byte for byte where
 * Pillow works in bytes (tests/test_preprocess.py measures it). What it is not: a general
 * image library. No colour management (Pillow ignores ICC profiles and gAMA too), no other
 * formats, no metadata beyond the EXIF Orientation tag.
 *
 * Layout: format sniffing and limits; JPEG (TurboJPEG 2 API, EXIF); PNG (libpng 1.6);
 * orientation; resampling; preprocessing.
 */
#include "image.h"

#include <limits.h>
#include <math.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>

/* Pillow's Image.MAX_IMAGE_PIXELS = 1024*1024*1024 // 4 // 3. */
#define IMG_DEFAULT_MAX_PIXELS 89478485ull

/* ------------------------------------------------------------------------------------------
 * Common: sniffing, limits, channel conversion
 * ------------------------------------------------------------------------------------------ */

typedef enum { FMT_UNKNOWN, FMT_JPEG, FMT_PNG } img_format;

static const uint8_t png_signature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

static img_format sniff(const uint8_t *b, size_t n)
{
    if (n >= 3 && b[0] == 0xff && b[1] == 0xd8 && b[2] == 0xff) return FMT_JPEG;
    if (n >= 8 && memcmp(b, png_signature, 8) == 0) return FMT_PNG;
    return FMT_UNKNOWN;
}

static vt_status unsupported(const uint8_t *b, size_t n, char *err, size_t errlen)
{
    if (!b || n == 0) return vt_err(err, errlen, VT_EUNSUPPORTED, "empty image data");
    return vt_err(err, errlen, VT_EUNSUPPORTED,
                  "not a JPEG or PNG image (first bytes %02x %02x %02x %02x)", b[0],
                  n > 1 ? b[1] : 0, n > 2 ? b[2] : 0, n > 3 ? b[3] : 0);
}

/* The decompression-bomb check, made on header dimensions before any pixel buffer exists. */
static vt_status check_dims(const char *what, uint64_t w, uint64_t h, const img_decode_opts *o,
                            char *err, size_t errlen)
{
    uint64_t maxp = o && o->max_pixels ? o->max_pixels : IMG_DEFAULT_MAX_PIXELS;
    if (w == 0 || h == 0)
        return vt_err(err, errlen, VT_EFORMAT, "%s header declares a %llux%llu image", what,
                      (unsigned long long)w, (unsigned long long)h);
    if (w > INT_MAX || h > INT_MAX || w * h > maxp)
        return vt_err(err, errlen, VT_ELIMIT,
                      "%s image is %llux%llu = %llu pixels, over the limit of %llu", what,
                      (unsigned long long)w, (unsigned long long)h,
                      (unsigned long long)(w * h), (unsigned long long)maxp);
    return VT_OK;
}

/* PIL's convert("L"): ITU-R 601-2 luma in 16-bit fixed point, rounded (Convert.c L24). */
static inline uint8_t luma(unsigned r, unsigned g, unsigned b)
{
    return (uint8_t)((r * 19595u + g * 38470u + b * 7471u + 0x8000u) >> 16);
}

/* (a * b) / 255 rounded, the way Pillow's MULDIV255 computes it. */
static inline unsigned muldiv255(unsigned a, unsigned b)
{
    unsigned t = a * b + 128;
    return ((t >> 8) + t) >> 8;
}

/* Source pixel layouts of the decoders. CMYK is the raw libjpeg sample order of an Adobe
 * (inverted) CMYK JPEG; Pillow always assumes the Adobe convention ("CMYK;I"). */
enum { SRC_GRAY = 1, SRC_RGB = 3, SRC_CMYK = 4 };

/* Converts n pixels of layout src to C channels (1 or 3). Shrinking conversions work in
 * place (pixel i is written at i*C <= i*src before pixel i+1 is read); gray to RGB grows
 * and allocates. Takes ownership of p; returns the result or NULL (p freed) on ENOMEM. */
static uint8_t *to_channels(uint8_t *p, size_t n, int src, int C)
{
    if (src == C) return p;
    if (src == SRC_GRAY) { /* C == 3 */
        uint8_t *q = malloc(n * 3);
        if (!q) { free(p); return NULL; }
        for (size_t i = 0; i < n; i++) q[3 * i] = q[3 * i + 1] = q[3 * i + 2] = p[i];
        free(p);
        return q;
    }
    for (size_t i = 0; i < n; i++) {
        const uint8_t *s = p + i * (size_t)src;
        unsigned r = s[0], g = s[1], b = s[2];
        if (src == SRC_CMYK) {
            /* Pillow: C' = 255 - c (CMYK;I), then cmyk2rgb: R = nk - C'*nk/255 with
             * nk = 255 - K' = k. */
            unsigned nk = s[3];
            r = nk - muldiv255(255u - r, nk);
            g = nk - muldiv255(255u - g, nk);
            b = nk - muldiv255(255u - b, nk);
        }
        uint8_t *d = p + i * (size_t)C;
        if (C == 1) {
            d[0] = luma(r, g, b);
        } else {
            d[0] = (uint8_t)r; d[1] = (uint8_t)g; d[2] = (uint8_t)b;
        }
    }
    uint8_t *q = realloc(p, n * (size_t)C);
    return q ? q : p;
}

/* ------------------------------------------------------------------------------------------
 * EXIF orientation
 * ------------------------------------------------------------------------------------------ */

static unsigned rd16(const uint8_t *p, int be) { return be ? (p[0] << 8 | p[1]) : (p[1] << 8 | p[0]); }
static uint32_t rd32(const uint8_t *p, int be)
{
    return be ? ((uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3])
              : ((uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0]);
}

/* Orientation (0x0112) from IFD0 of a TIFF block; 0 if absent or malformed. Accepts a single
 * BYTE, SHORT or LONG value, which is what Pillow reads back as an int. */
static int tiff_orientation(const uint8_t *t, size_t n)
{
    if (n < 8) return 0;
    int be;
    if (t[0] == 'I' && t[1] == 'I') be = 0;
    else if (t[0] == 'M' && t[1] == 'M') be = 1;
    else return 0;
    if (rd16(t + 2, be) != 42) return 0;
    uint32_t ifd = rd32(t + 4, be);
    if (ifd > n || n - ifd < 2) return 0;
    unsigned count = rd16(t + ifd, be);
    const uint8_t *e = t + ifd + 2;
    size_t room = (n - ifd - 2) / 12;
    for (unsigned i = 0; i < count && i < room; i++, e += 12) {
        if (rd16(e, be) != 0x0112) continue;
        unsigned type = rd16(e + 2, be);
        if (rd32(e + 4, be) != 1) return 0;
        uint32_t v = type == 1 ? e[8] : type == 3 ? rd16(e + 8, be) : type == 4 ? rd32(e + 8, be) : 0;
        return v >= 1 && v <= 8 ? (int)v : 0;
    }
    return 0;
}

/* Walks the JPEG markers before the first scan and reads the orientation from the first
 * APP1 Exif segment, as Pillow does (later Exif segments are ignored). Every length is
 * checked against the buffer; anything malformed means "no orientation". */
static int jpeg_orientation(const uint8_t *b, size_t n)
{
    size_t i = 2; /* after SOI */
    while (i + 4 <= n) {
        if (b[i] != 0xff) return 0;
        while (i < n && b[i] == 0xff) i++; /* fill bytes */
        if (i >= n) return 0;
        unsigned m = b[i++];
        if (m == 0xd9 || m == 0xda) return 0; /* EOI or start of scan: no Exif before data */
        if (m == 0x01 || (m >= 0xd0 && m <= 0xd7)) continue; /* no length */
        if (n - i < 2) return 0;
        size_t len = (size_t)b[i] << 8 | b[i + 1];
        if (len < 2 || len > n - i) return 0;
        const uint8_t *seg = b + i + 2;
        size_t slen = len - 2;
        /* Pillow takes the first APP1 starting "Exif\0" as the Exif block, and finds a TIFF
         * header after it only when the sixth byte is 0 too */
        if (m == 0xe1 && slen >= 5 && memcmp(seg, "Exif", 5) == 0)
            return slen >= 6 && seg[5] == 0 ? tiff_orientation(seg + 6, slen - 6) : 0;
        i += len;
    }
    return 0;
}

/* PIL's Image.transpose for EXIF orientations 2..8, as ImageOps.exif_transpose maps them.
 * Output pixel (x, y) reads source pixel s0 + x*ax + y*ay (in pixels). */
static vt_status apply_orientation(img_image *im, int o, char *err, size_t errlen)
{
    if (o < 2 || o > 8) return VT_OK;
    ptrdiff_t W = im->width, H = im->height, C = im->channels, s0, ax, ay;
    switch (o) {
    case 2: s0 = W - 1; ax = -1; ay = W; break;                      /* FLIP_LEFT_RIGHT */
    case 3: s0 = (H - 1) * W + W - 1; ax = -1; ay = -W; break;       /* ROTATE_180 */
    case 4: s0 = (H - 1) * W; ax = 1; ay = -W; break;                /* FLIP_TOP_BOTTOM */
    case 5: s0 = 0; ax = W; ay = 1; break;                           /* TRANSPOSE */
    case 6: s0 = (H - 1) * W; ax = -W; ay = 1; break;                /* ROTATE_270 (cw) */
    case 7: s0 = (H - 1) * W + W - 1; ax = -W; ay = -1; break;       /* TRANSVERSE */
    default: s0 = W - 1; ax = W; ay = -1; break;                     /* 8: ROTATE_90 (ccw) */
    }
    ptrdiff_t ow = o >= 5 ? H : W, oh = o >= 5 ? W : H;
    uint8_t *d = malloc((size_t)(W * H * C));
    if (!d) return vt_err(err, errlen, VT_ENOMEM, "no memory to orient a %dx%d image",
                          im->width, im->height);
    for (ptrdiff_t y = 0; y < oh; y++)
        for (ptrdiff_t x = 0; x < ow; x++)
            memcpy(d + (y * ow + x) * C, im->pix + (s0 + x * ax + y * ay) * C, (size_t)C);
    free(im->pix);
    im->pix = d;
    im->width = (int)ow;
    im->height = (int)oh;
    return VT_OK;
}

/* ------------------------------------------------------------------------------------------
 * JPEG (TurboJPEG 2)
 * ------------------------------------------------------------------------------------------ */

/* ACCURATEDCT is libjpeg's default islow IDCT, what Pillow gets; LIMITSCANS rejects
 * progressive files with more than 500 scans (a CPU bomb); STOPONWARNING turns corrupt-data
 * warnings (which libjpeg would paper over with grey) into errors at once. */
#define JPEG_FLAGS (TJFLAG_ACCURATEDCT | TJFLAG_LIMITSCANS | TJFLAG_STOPONWARNING)

static vt_status jpeg_error(tjhandle tj, char *err, size_t errlen)
{
    const char *msg = tjGetErrorStr2(tj);
    if (!msg) msg = "unknown TurboJPEG error";
    /* libjpeg says "Unsupported JPEG process/data precision/..." for valid files it cannot
     * decode (lossless, 12-bit); everything else is damage. */
    vt_status s = strstr(msg, "Unsupported") ? VT_EUNSUPPORTED : VT_EFORMAT;
    return vt_err(err, errlen, s, "JPEG: %s", msg);
}

static vt_status jpeg_header(tjhandle tj, const uint8_t *buf, size_t len, int *w, int *h,
                             int *cs, char *err, size_t errlen)
{
    int subsamp = -1;
    *w = *h = 0;
    *cs = -1;
    if (len > ULONG_MAX) return vt_err(err, errlen, VT_ELIMIT, "JPEG data too large");
    if (tjDecompressHeader3(tj, buf, (unsigned long)len, w, h, &subsamp, cs) != 0)
        return jpeg_error(tj, err, errlen);
    /* TurboJPEG 2.1 returns success without filling anything for a tables-only stream */
    if (*w < 1 || *h < 1)
        return vt_err(err, errlen, VT_EFORMAT, "JPEG: no image in the data (tables only)");
    return VT_OK;
}

static vt_status jpeg_decode(const uint8_t *buf, size_t len, const img_decode_opts *o, int C,
                             img_image *out, char *err, size_t errlen)
{
    tjhandle tj = tjInitDecompress();
    if (!tj) return vt_err(err, errlen, VT_ENOMEM, "TurboJPEG: %s", tjGetErrorStr2(NULL));
    uint8_t *pix = NULL;
    int w, h, cs;
    vt_status st = jpeg_header(tj, buf, len, &w, &h, &cs, err, errlen);
    if (st) goto done;
    if ((st = check_dims("JPEG", (uint64_t)w, (uint64_t)h, o, err, errlen))) goto done;

    int src, pf;
    switch (cs) {
    case TJCS_GRAY: src = SRC_GRAY; pf = TJPF_GRAY; break;
    case TJCS_CMYK: case TJCS_YCCK: src = SRC_CMYK; pf = TJPF_CMYK; break;
    default: src = SRC_RGB; pf = TJPF_RGB; break; /* YCbCr or Adobe RGB */
    }
    size_t n = (size_t)w * (size_t)h;
    pix = malloc(n * (size_t)src);
    if (!pix) {
        st = vt_err(err, errlen, VT_ENOMEM, "no memory for a %dx%d JPEG", w, h);
        goto done;
    }
    if (tjDecompress2(tj, buf, (unsigned long)len, pix, w, w * src, h, pf, JPEG_FLAGS) != 0) {
        st = jpeg_error(tj, err, errlen);
        goto done;
    }
    pix = to_channels(pix, n, src, C);
    if (!pix) {
        st = vt_err(err, errlen, VT_ENOMEM, "no memory for a %dx%d JPEG", w, h);
        goto done;
    }
    out->width = w;
    out->height = h;
    out->channels = C;
    out->pix = pix;
    pix = NULL;
    if (o && o->exif_orient) {
        st = apply_orientation(out, jpeg_orientation(buf, len), err, errlen);
        if (st) img_free(out);
    }
done:
    free(pix);
    tjDestroy(tj);
    return st;
}

/* ------------------------------------------------------------------------------------------
 * PNG (libpng 1.6)
 *
 * Only packing (1/2/4-bit samples to bytes) and de-interlacing are asked of libpng; the
 * conversion to Pillow's convert() result is done here, because Pillow's rules are not
 * libpng's: 16-bit colour keeps the high byte, 16-bit gray opens as mode "I" and clips to
 * 255, palette indices past the PLTE read Pillow's default grey ramp, alpha and tRNS are
 * dropped without compositing.
 * ------------------------------------------------------------------------------------------ */

typedef struct {
    const uint8_t *buf;
    size_t len, pos;
    char msg[200];
    uint8_t *rows; /* raw rows: the whole image when interlaced, else one row */
    uint8_t *pix;  /* the output being built */
} png_src;

static void png_on_error(png_structp png, png_const_charp msg)
{
    png_src *s = png_get_error_ptr(png);
    snprintf(s->msg, sizeof s->msg, "%s", msg ? msg : "error");
    png_longjmp(png, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg)
{
    (void)png; /* the engine never prints; libpng's warnings are recoverable by definition */
    (void)msg;
}

static void png_on_read(png_structp png, png_bytep data, size_t n)
{
    png_src *s = png_get_io_ptr(png);
    if (n > s->len - s->pos) png_error(png, "truncated PNG data");
    memcpy(data, s->buf + s->pos, n);
    s->pos += n;
}

/* IHDR is the first chunk (PNG spec 5.6), so dimensions need no library. */
static vt_status png_header(const uint8_t *b, size_t n, uint32_t *w, uint32_t *h,
                            char *err, size_t errlen)
{
    if (n < 8 + 8 + 13) return vt_err(err, errlen, VT_EFORMAT, "PNG: truncated before IHDR");
    if (memcmp(b + 12, "IHDR", 4) != 0 || rd32(b + 8, 1) != 13)
        return vt_err(err, errlen, VT_EFORMAT, "PNG: first chunk is not a valid IHDR");
    *w = rd32(b + 16, 1);
    *h = rd32(b + 20, 1);
    return VT_OK;
}

/* Samples per pixel of a colour type, before any transformation (palette: the index). */
static int png_samples(int ct)
{
    return ct == PNG_COLOR_TYPE_GRAY || ct == PNG_COLOR_TYPE_PALETTE ? 1
         : ct == PNG_COLOR_TYPE_GRAY_ALPHA ? 2 : ct == PNG_COLOR_TYPE_RGB ? 3 : 4;
}

/* Converts one raw row (after packing/de-interlacing) to C channels. */
static void png_row(const uint8_t *r, uint8_t *d, uint32_t w, int ct, int bd, int C,
                    const uint8_t pal[256][3])
{
    int nch = png_samples(ct);
    int bps = bd == 16 ? 2 : 1;
    /* 1, 2 and 4-bit gray scale to 0..255 like Pillow's "1", "L;2", "L;4" unpackers */
    unsigned scale = bd == 1 ? 255 : bd == 2 ? 85 : bd == 4 ? 17 : 1;
    for (uint32_t x = 0; x < w; x++, r += nch * bps, d += C) {
        unsigned v, g, b;
        if (ct == PNG_COLOR_TYPE_PALETTE) {
            v = pal[r[0]][0]; g = pal[r[0]][1]; b = pal[r[0]][2];
        } else if (ct == PNG_COLOR_TYPE_GRAY && bd == 16) {
            v = (unsigned)r[0] << 8 | r[1]; /* Pillow mode "I": convert() clips */
            g = b = v = v > 255 ? 255 : v;
        } else if (nch <= 2) {
            g = b = v = r[0] * scale; /* high byte when 16-bit */
        } else {
            v = r[0]; g = r[bps]; b = r[2 * bps];
        }
        if (C == 1) {
            d[0] = nch <= 2 && ct != PNG_COLOR_TYPE_PALETTE ? (uint8_t)v : luma(v, g, b);
        } else {
            d[0] = (uint8_t)v; d[1] = (uint8_t)g; d[2] = (uint8_t)b;
        }
    }
}

/* Runs libpng; allocations go into s so that the caller frees them whether libpng returned
 * or longjmp'd here. Nothing local to this function is read after the longjmp. */
static vt_status png_run(png_structp png, png_infop info, png_src *s, const img_decode_opts *o,
                         int C, img_image *out, char *err, size_t errlen)
{
    if (setjmp(png_jmpbuf(png))) return vt_err(err, errlen, VT_EFORMAT, "PNG: %s", s->msg);

    /* our own pixel limit applies; libpng's default 1,000,000 per side would not */
    png_set_user_limits(png, 0x7fffffffu, 0x7fffffffu);
    png_set_read_fn(png, s, png_on_read);
    /* text and ICC chunks do not change pixels (Pillow ignores ICC profiles too); skipping
     * them avoids inflating compressed metadata from untrusted files */
    static const png_byte skip[] = "iCCP\0tEXt\0zTXt\0iTXt\0eXIf";
    png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_NEVER, skip, 5);
    png_read_info(png, info);
    png_uint_32 w, h;
    int bd, ct, il;
    png_get_IHDR(png, info, &w, &h, &bd, &ct, &il, NULL, NULL);
    vt_status st = check_dims("PNG", w, h, o, err, errlen);
    if (st) return st;

    uint8_t pal[256][3] = {{0}};
    if (ct == PNG_COLOR_TYPE_PALETTE) {
        png_colorp plte = NULL;
        int num = 0;
        if (!png_get_PLTE(png, info, &plte, &num)) num = 0;
        for (int i = 0; i < 256; i++) { /* Pillow's palette starts as a grey ramp */
            int in = i < num && plte;
            pal[i][0] = in ? plte[i].red : (uint8_t)i;
            pal[i][1] = in ? plte[i].green : (uint8_t)i;
            pal[i][2] = in ? plte[i].blue : (uint8_t)i;
        }
    }
    if (bd < 8) png_set_packing(png);
    int passes = png_set_interlace_handling(png);
    png_read_update_info(png, info);

    int nch = png_samples(ct);
    size_t rowbytes = png_get_rowbytes(png, info);
    if (png_get_channels(png, info) != nch || rowbytes != (size_t)w * nch * (bd == 16 ? 2 : 1))
        return vt_err(err, errlen, VT_EUNSUPPORTED, "PNG: unexpected row layout");

    s->rows = malloc(rowbytes * (passes > 1 ? h : 1));
    s->pix = malloc((size_t)w * h * (size_t)C);
    if (!s->rows || !s->pix)
        return vt_err(err, errlen, VT_ENOMEM, "no memory for a %ux%u PNG", (unsigned)w,
                      (unsigned)h);
    size_t outrow = (size_t)w * (size_t)C;
    if (passes > 1) { /* Adam7: every pass refines the same full-image rows */
        for (int p = 0; p < passes; p++)
            for (png_uint_32 y = 0; y < h; y++) png_read_row(png, s->rows + y * rowbytes, NULL);
        for (png_uint_32 y = 0; y < h; y++)
            png_row(s->rows + y * rowbytes, s->pix + y * outrow, w, ct, bd, C, pal);
    } else {
        for (png_uint_32 y = 0; y < h; y++) {
            png_read_row(png, s->rows, NULL);
            png_row(s->rows, s->pix + y * outrow, w, ct, bd, C, pal);
        }
    }
    out->width = (int)w;
    out->height = (int)h;
    out->channels = C;
    out->pix = s->pix;
    s->pix = NULL;
    return VT_OK;
}

static vt_status png_decode(const uint8_t *buf, size_t len, const img_decode_opts *o, int C,
                            img_image *out, char *err, size_t errlen)
{
    uint32_t w, h;
    vt_status st = png_header(buf, len, &w, &h, err, errlen);
    if (!st) st = check_dims("PNG", w, h, o, err, errlen);
    if (st) return st;

    png_src s = {.buf = buf, .len = len, .pos = 0};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &s, png_on_error,
                                             png_on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) st = vt_err(err, errlen, VT_ENOMEM, "libpng: cannot create a read structure");
    else st = png_run(png, info, &s, o, C, out, err, errlen);
    png_destroy_read_struct(png ? &png : NULL, info ? &info : NULL, NULL);
    free(s.rows);
    free(s.pix);
    return st;
}

/* ------------------------------------------------------------------------------------------
 * Public decoding
 * ------------------------------------------------------------------------------------------ */

vt_status img_probe(const void *buf, size_t len, int *width, int *height, char *err, size_t errlen)
{
    const uint8_t *b = buf;
    switch (b ? sniff(b, len) : FMT_UNKNOWN) {
    case FMT_JPEG: {
        tjhandle tj = tjInitDecompress();
        if (!tj) return vt_err(err, errlen, VT_ENOMEM, "TurboJPEG: %s", tjGetErrorStr2(NULL));
        int w, h, cs;
        vt_status st = jpeg_header(tj, b, len, &w, &h, &cs, err, errlen);
        tjDestroy(tj);
        if (st) return st;
        *width = w;
        *height = h;
        return VT_OK;
    }
    case FMT_PNG: {
        uint32_t w, h;
        vt_status st = png_header(b, len, &w, &h, err, errlen);
        if (st) return st;
        if (w == 0 || h == 0 || w > INT_MAX || h > INT_MAX)
            return vt_err(err, errlen, VT_EFORMAT, "PNG: invalid size %ux%u", (unsigned)w,
                          (unsigned)h);
        *width = (int)w;
        *height = (int)h;
        return VT_OK;
    }
    default:
        return unsupported(b, len, err, errlen);
    }
}

vt_status img_decode(const void *buf, size_t len, const img_decode_opts *o, img_image *out,
                     char *err, size_t errlen)
{
    const uint8_t *b = buf;
    int C = o && o->channels ? o->channels : 3;
    memset(out, 0, sizeof *out);
    if (C != 1 && C != 3)
        return vt_err(err, errlen, VT_EINVAL, "channels must be 1 or 3, not %d", C);
    switch (b ? sniff(b, len) : FMT_UNKNOWN) {
    case FMT_JPEG: return jpeg_decode(b, len, o, C, out, err, errlen);
    case FMT_PNG: return png_decode(b, len, o, C, out, err, errlen);
    default: return unsupported(b, len, err, errlen);
    }
}

void img_free(img_image *im)
{
    if (!im) return;
    free(im->pix);
    memset(im, 0, sizeof *im);
}

/* ------------------------------------------------------------------------------------------
 * Resampling (Pillow's Resample.c semantics, 8 bits per sample)
 *
 * One axis at a time. Output sample i has centre (i + 0.5) * scale in input coordinates,
 * scale = in/out; when shrinking, the kernel is stretched by scale (antialiasing), so its
 * support is support * max(scale, 1). Taps run from (int)(centre - support + 0.5) to
 * (int)(centre + support + 0.5), clipped to the image; the weights are normalised to sum 1
 * and converted to 22-bit fixed point (32 - 8 bits of sample - 2 bits of headroom). Each
 * pass rounds (adds half) and clips to 0..255, so the horizontal result is re-quantised
 * before the vertical pass, exactly as Pillow does. Every double expression below keeps
 * Pillow's operation order so that the weights are bit-identical.
 * ------------------------------------------------------------------------------------------ */

#define PRECISION_BITS (32 - 8 - 2)

/* Keys' cubic convolution with a = -0.5 (Pillow's BICUBIC). */
static double filter_bicubic(double x)
{
    const double a = -0.5;
    if (x < 0.0) x = -x;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

static double filter_bilinear(double x)
{
    if (x < 0.0) x = -x;
    return x < 1.0 ? 1.0 - x : 0.0;
}

typedef struct {
    int n;         /* output samples planned: indices first .. first+n-1 of the full axis */
    int ksize;     /* taps per output sample (upper bound) */
    int *bounds;   /* (n, 2): first input index, number of taps */
    int32_t *k;    /* (n, ksize): fixed-point weights */
} rs_plan;

static void plan_free(rs_plan *p)
{
    free(p->bounds);
    free(p->k);
    memset(p, 0, sizeof *p);
}

/* Weights for outputs first..first+n-1 of an in -> out axis. When in == out Pillow skips
 * the pass; the identity plan (one tap of weight 1.0) reproduces that exactly. */
static vt_status plan_make(int in, int out, int first, int n, img_interp interp, rs_plan *p,
                           char *err, size_t errlen)
{
    memset(p, 0, sizeof *p);
    int identity = in == out;
    double support = 0, scale = (double)in / out, filterscale = scale;
    if (filterscale < 1.0) filterscale = 1.0;
    if (!identity) {
        support = (interp == IMG_BICUBIC ? 2.0 : 1.0) * filterscale;
        if (support > (double)(INT_MAX / 4))
            return vt_err(err, errlen, VT_ELIMIT, "resize %d -> %d: kernel too wide", in, out);
    }
    p->n = n;
    p->ksize = identity ? 1 : (int)ceil(support) * 2 + 1;
    if ((size_t)n > SIZE_MAX / sizeof(int32_t) / (size_t)p->ksize / 2)
        return vt_err(err, errlen, VT_ELIMIT, "resize %d -> %d: too many weights", in, out);
    p->bounds = malloc((size_t)n * 2 * sizeof *p->bounds);
    p->k = calloc((size_t)n * (size_t)p->ksize, sizeof *p->k);
    double *w = malloc((size_t)p->ksize * sizeof *w);
    if (!p->bounds || !p->k || !w) {
        free(w);
        plan_free(p);
        return vt_err(err, errlen, VT_ENOMEM, "resize %d -> %d: no memory for weights", in, out);
    }
    double (*filter)(double) = interp == IMG_BICUBIC ? filter_bicubic : filter_bilinear;
    for (int i = 0; i < n; i++) {
        int xx = first + i;
        int32_t *k = p->k + (size_t)i * p->ksize;
        if (identity) {
            p->bounds[2 * i] = xx;
            p->bounds[2 * i + 1] = 1;
            k[0] = 1 << PRECISION_BITS;
            continue;
        }
        double center = (xx + 0.5) * scale, ww = 0.0, ss = 1.0 / filterscale;
        int xmin = (int)(center - support + 0.5), xmax = (int)(center + support + 0.5);
        if (xmin < 0) xmin = 0;
        if (xmax > in) xmax = in;
        xmax -= xmin;
        if (xmax > p->ksize) xmax = p->ksize; /* cannot happen; keeps the writes in bounds */
        if (xmax < 0) xmax = 0;
        for (int x = 0; x < xmax; x++) {
            w[x] = filter((x + xmin - center + 0.5) * ss);
            ww += w[x];
        }
        for (int x = 0; x < xmax; x++) {
            if (ww != 0.0) w[x] /= ww;
            /* round half away from zero, as Pillow's normalize_coeffs_8bpc */
            k[x] = w[x] < 0 ? (int32_t)(-0.5 + w[x] * (1 << PRECISION_BITS))
                            : (int32_t)(0.5 + w[x] * (1 << PRECISION_BITS));
        }
        p->bounds[2 * i] = xmin;
        p->bounds[2 * i + 1] = xmax;
    }
    free(w);
    return VT_OK;
}

static inline uint8_t clip8(int64_t ss)
{
    if (ss <= 0) return 0;
    if (ss >= (int64_t)256 << PRECISION_BITS) return 255;
    return (uint8_t)(ss >> PRECISION_BITS);
}

/* Horizontal pass over `rows` rows: src rows have sw pixels, dst rows have px->n. */
static void pass_h(const uint8_t *src, int sw, int C, int rows, const rs_plan *px, uint8_t *dst)
{
    for (int y = 0; y < rows; y++) {
        const uint8_t *s = src + (size_t)y * sw * C;
        uint8_t *d = dst + (size_t)y * px->n * C;
        for (int i = 0; i < px->n; i++) {
            const int32_t *k = px->k + (size_t)i * px->ksize;
            const uint8_t *s0 = s + (size_t)px->bounds[2 * i] * C;
            int nt = px->bounds[2 * i + 1];
            for (int c = 0; c < C; c++) {
                int64_t ss = 1 << (PRECISION_BITS - 1);
                for (int t = 0; t < nt; t++) ss += (int64_t)s0[t * C + c] * k[t];
                d[i * C + c] = clip8(ss);
            }
        }
    }
}

/* Vertical pass: src has rows of `width` pixels starting at input row `row0`; writes py->n
 * rows of `width` pixels. */
static void pass_v(const uint8_t *src, int width, int C, int row0, const rs_plan *py, uint8_t *dst)
{
    size_t stride = (size_t)width * C;
    for (int i = 0; i < py->n; i++) {
        const int32_t *k = py->k + (size_t)i * py->ksize;
        const uint8_t *s0 = src + (size_t)(py->bounds[2 * i] - row0) * stride;
        int nt = py->bounds[2 * i + 1];
        uint8_t *d = dst + (size_t)i * stride;
        for (size_t j = 0; j < stride; j++) {
            int64_t ss = 1 << (PRECISION_BITS - 1);
            for (int t = 0; t < nt; t++) ss += (int64_t)s0[t * stride + j] * k[t];
            d[j] = clip8(ss);
        }
    }
}

/* The window [x0, x0+cw) x [y0, y0+ch) of src resized to ow x oh, into dst (cw*ch*C bytes).
 * Each output sample depends only on its own weights, so a window is exactly the same
 * bytes as the full resize, without computing (or allocating) the rest. */
static vt_status resize_window(const img_image *src, int ow, int oh, int x0, int y0, int cw,
                               int ch, img_interp interp, uint8_t *dst, char *err, size_t errlen)
{
    int C = src->channels;
    rs_plan px, py;
    vt_status st = plan_make(src->width, ow, x0, cw, interp, &px, err, errlen);
    if (st) return st;
    st = plan_make(src->height, oh, y0, ch, interp, &py, err, errlen);
    if (st) { plan_free(&px); return st; }
    /* input rows the vertical pass reads; only those get the horizontal pass */
    int r0 = INT_MAX, r1 = 0;
    for (int i = 0; i < ch; i++) {
        int a = py.bounds[2 * i], b = a + py.bounds[2 * i + 1];
        if (a < r0) r0 = a;
        if (b > r1) r1 = b;
    }
    if (r1 <= r0) r0 = r1 = 0;
    uint8_t *tmp = malloc((size_t)(r1 - r0) * cw * C + 1);
    if (!tmp) {
        st = vt_err(err, errlen, VT_ENOMEM, "resize: no memory for %dx%d", cw, r1 - r0);
    } else {
        pass_h(src->pix + (size_t)r0 * src->width * C, src->width, C, r1 - r0, &px, tmp);
        pass_v(tmp, cw, C, r0, &py, dst);
    }
    free(tmp);
    plan_free(&px);
    plan_free(&py);
    return st;
}

static vt_status check_image(const img_image *im, char *err, size_t errlen)
{
    if (!im || !im->pix || im->width < 1 || im->height < 1 ||
        (im->channels != 1 && im->channels != 3))
        return vt_err(err, errlen, VT_EINVAL, "invalid source image");
    return VT_OK;
}

vt_status img_resize(const img_image *src, int w, int h, img_interp interp, img_image *dst,
                     char *err, size_t errlen)
{
    memset(dst, 0, sizeof *dst);
    vt_status st = check_image(src, err, errlen);
    if (st) return st;
    if (w < 1 || h < 1 || (interp != IMG_BICUBIC && interp != IMG_BILINEAR))
        return vt_err(err, errlen, VT_EINVAL, "resize to %dx%d (interp %d)", w, h, (int)interp);
    size_t n = (size_t)w * (size_t)h;
    if (n > SIZE_MAX / 4 / (size_t)src->channels)
        return vt_err(err, errlen, VT_ELIMIT, "resize to %dx%d: too large", w, h);
    uint8_t *pix = malloc(n * (size_t)src->channels);
    if (!pix) return vt_err(err, errlen, VT_ENOMEM, "resize to %dx%d: no memory", w, h);
    st = resize_window(src, w, h, 0, 0, w, h, interp, pix, err, errlen);
    if (st) { free(pix); return st; }
    dst->width = w;
    dst->height = h;
    dst->channels = src->channels;
    dst->pix = pix;
    return VT_OK;
}

/* ------------------------------------------------------------------------------------------
 * Preprocessing (torchvision 0.14 on a PIL image)
 * ------------------------------------------------------------------------------------------ */

/* Python's int(round(d / 2.0)) for d >= 0: halves go to the even neighbour. */
static int round_half_even_div2(int d)
{
    int q = d / 2;
    if ((d & 1) && (q & 1)) q++;
    return q;
}

/* One axis of CenterCrop: output index j reads resized index j + off. torchvision pads a
 * too-small side with (crop - size) // 2 zeros before, then crops at round((size-crop)/2). */
static int crop_offset(int size, int crop)
{
    return crop > size ? -((crop - size) / 2) : round_half_even_div2(size - crop);
}

vt_status img_preprocess(const img_image *src, const img_preproc *p, float *out,
                         char *err, size_t errlen)
{
    vt_status st = check_image(src, err, errlen);
    if (st) return st;
    int C = src->channels, S = p->crop;
    if (p->resize < 1 || S < 1 || (p->interp != IMG_BICUBIC && p->interp != IMG_BILINEAR))
        return vt_err(err, errlen, VT_EINVAL, "resize %d, crop %d, interp %d", p->resize, S,
                      (int)p->interp);
    for (int c = 0; c < C; c++)
        if (!(p->std[c] != 0.0f) || !isfinite(p->std[c]) || !isfinite(p->mean[c]))
            return vt_err(err, errlen, VT_EINVAL, "channel %d: mean %g, std %g", c,
                          (double)p->mean[c], (double)p->std[c]);

    /* Resize(resize): the shorter side becomes resize, the longer int(resize*long/short)
     * (torchvision _compute_resized_output_size; the product is exact in a double). */
    int W = src->width, H = src->height, rw, rh;
    double lng = (double)p->resize * (W <= H ? H : W) / (W <= H ? W : H);
    if (lng >= (double)INT_MAX)
        return vt_err(err, errlen, VT_ELIMIT, "resized long side of a %dx%d image too large", W, H);
    if (W <= H) { rw = p->resize; rh = (int)lng; }
    else { rh = p->resize; rw = (int)lng; }

    /* CenterCrop(S): the window of the resized image that lands in the output */
    int ox = crop_offset(rw, S), oy = crop_offset(rh, S);
    int x0 = ox > 0 ? ox : 0, y0 = oy > 0 ? oy : 0;
    int x1 = ox + S < rw ? ox + S : rw, y1 = oy + S < rh ? oy + S : rh;
    int cw = x1 - x0, ch = y1 - y0;
    uint8_t *win = malloc((size_t)cw * ch * C);
    if (!win) return vt_err(err, errlen, VT_ENOMEM, "preprocess: no memory");
    st = resize_window(src, rw, rh, x0, y0, cw, ch, p->interp, win, err, errlen);
    if (st) { free(win); return st; }

    /* ToTensor then Normalize, in float32 like torch: (v / 255 - mean) / std; padding is
     * the byte 0 */
    for (int c = 0; c < C; c++) {
        float mean = p->mean[c], sd = p->std[c], zero = (0.0f / 255.0f - mean) / sd;
        float *o = out + (size_t)c * S * S;
        for (int y = 0; y < S; y++) {
            int sy = y + oy - y0;
            for (int x = 0; x < S; x++) {
                int sx = x + ox - x0;
                if (sy < 0 || sy >= ch || sx < 0 || sx >= cw) {
                    o[(size_t)y * S + x] = zero;
                } else {
                    float v = (float)win[((size_t)sy * cw + sx) * C + c] / 255.0f;
                    o[(size_t)y * S + x] = (v - mean) / sd;
                }
            }
        }
    }
    free(win);
    return VT_OK;
}
