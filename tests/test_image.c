/* test_image.c - tests of engine/image.c: decoding against Pillow's bytes, resampling against
 * Pillow's Image.resize, EXIF orientation, centre-crop geometry, and robustness (truncated,
 * mutated, oversized and non-image inputs must fail cleanly, never crash).
 *
 * The golden tables below come from tests/make_odd_images.py (--table, --resize-table),
 * which also wrote the images in tests/data/images/. Run from the repository root (the data
 * folder can be given as argv[1]). Exits non-zero on failure.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "image.h"

static int checks, failures;
#define CHECK(cond, ...)                                                                   \
    do {                                                                                   \
        checks++;                                                                          \
        if (!(cond)) {                                                                     \
            failures++;                                                                    \
            fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond);       \
            fprintf(stderr, __VA_ARGS__);                                                  \
            fputc('\n', stderr);                                                           \
        }                                                                                  \
    } while (0)

static const char *datadir = "tests/data";

static uint8_t *load(const char *name, size_t *len)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", datadir, name);
    FILE *f = fopen(path, "rb");
    if (!f) { fprintf(stderr, "cannot open %s\n", path); exit(2); }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)n + 1);
    if (!b || fread(b, 1, (size_t)n, f) != (size_t)n) { fprintf(stderr, "cannot read %s\n", path); exit(2); }
    fclose(f);
    *len = (size_t)n;
    return b;
}

static uint64_t fnv1a(const uint8_t *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static vt_status decode(const uint8_t *b, size_t n, int channels, int exif, img_image *im,
                        char *err, size_t errlen)
{
    img_decode_opts o = {.channels = channels, .max_pixels = 0, .exif_orient = exif};
    return img_decode(b, n, &o, im, err, errlen);
}

/* ---- golden decodes: Pillow's Image.open(f).convert(mode) (after exif_transpose) ------- */

static const struct {
    const char *name;
    int channels, exif, w, h;
    uint64_t fnv;
} golden_decode[] = {
    {"cmyk.jpg", 3, 0, 40, 30, 0xe717a53da808de62ull},
    {"cmyk.jpg", 1, 0, 40, 30, 0x99a144bb800695deull},
    {"exif_1.jpg", 3, 0, 24, 16, 0xbaf0d13a3a6f76caull},
    {"exif_1.jpg", 1, 0, 24, 16, 0x62877b9f5e287f14ull},
    {"exif_1.jpg", 3, 1, 24, 16, 0xbaf0d13a3a6f76caull},
    {"exif_1.jpg", 1, 1, 24, 16, 0x62877b9f5e287f14ull},
    {"exif_2.jpg", 3, 0, 24, 16, 0xbaf0d13a3a6f76caull},
    {"exif_2.jpg", 1, 0, 24, 16, 0x62877b9f5e287f14ull},
    {"exif_2.jpg", 3, 1, 24, 16, 0x90f86a8f03afcaf4ull},
    {"exif_2.jpg", 1, 1, 24, 16, 0x05fe421cb92fb68eull},
    {"exif_3.jpg", 3, 0, 24, 16, 0xbaf0d13a3a6f76caull},
    {"exif_3.jpg", 1, 0, 24, 16, 0x62877b9f5e287f14ull},
    {"exif_3.jpg", 3, 1, 24, 16, 0xc38ef34301fb19b8ull},
    {"exif_3.jpg", 1, 1, 24, 16, 0x5a7255b843010f32ull},
    {"exif_3_mm.jpg", 3, 0, 24, 16, 0xbaf0d13a3a6f76caull},
    {"exif_3_mm.jpg", 1, 0, 24, 16, 0x62877b9f5e287f14ull},
    {"exif_3_mm.jpg", 3, 1, 24, 16, 0xc38ef34301fb19b8ull},
    {"exif_3_mm.jpg", 1, 1, 24, 16, 0x5a7255b843010f32ull},
    {"exif_4.jpg", 3, 0, 24, 16, 0xbaf0d13a3a6f76caull},
    {"exif_4.jpg", 1, 0, 24, 16, 0x62877b9f5e287f14ull},
    {"exif_4.jpg", 3, 1, 24, 16, 0x6f042652c419a0b6ull},
    {"exif_4.jpg", 1, 1, 24, 16, 0xacb94a36fd3aacc0ull},
    {"exif_5.jpg", 3, 0, 24, 16, 0xbaf0d13a3a6f76caull},
    {"exif_5.jpg", 1, 0, 24, 16, 0x62877b9f5e287f14ull},
    {"exif_5.jpg", 3, 1, 16, 24, 0x9533d3bfe0cfbf32ull},
    {"exif_5.jpg", 1, 1, 16, 24, 0x59fb6f6e646d1370ull},
    {"exif_6.jpg", 3, 0, 24, 16, 0xbaf0d13a3a6f76caull},
    {"exif_6.jpg", 1, 0, 24, 16, 0x62877b9f5e287f14ull},
    {"exif_6.jpg", 3, 1, 16, 24, 0x161829d913228ea4ull},
    {"exif_6.jpg", 1, 1, 16, 24, 0x08659a7d388753ceull},
    {"exif_6_mm.jpg", 3, 0, 24, 16, 0xbaf0d13a3a6f76caull},
    {"exif_6_mm.jpg", 1, 0, 24, 16, 0x62877b9f5e287f14ull},
    {"exif_6_mm.jpg", 3, 1, 16, 24, 0x161829d913228ea4ull},
    {"exif_6_mm.jpg", 1, 1, 16, 24, 0x08659a7d388753ceull},
    {"exif_7.jpg", 3, 0, 24, 16, 0xbaf0d13a3a6f76caull},
    {"exif_7.jpg", 1, 0, 24, 16, 0x62877b9f5e287f14ull},
    {"exif_7.jpg", 3, 1, 16, 24, 0x2c371f38ce90e378ull},
    {"exif_7.jpg", 1, 1, 16, 24, 0x5a04a62f5952b8f6ull},
    {"exif_8.jpg", 3, 0, 24, 16, 0xbaf0d13a3a6f76caull},
    {"exif_8.jpg", 1, 0, 24, 16, 0x62877b9f5e287f14ull},
    {"exif_8.jpg", 3, 1, 16, 24, 0x0208c20d429a571eull},
    {"exif_8.jpg", 1, 1, 16, 24, 0x42969207b0173040ull},
    {"gray.jpg", 3, 0, 45, 31, 0xb2c00ff47a6ea853ull},
    {"gray.jpg", 1, 0, 45, 31, 0x4a027751e96aff1full},
    {"gray1.png", 3, 0, 29, 15, 0x14c6846ec687be5bull},
    {"gray1.png", 1, 0, 29, 15, 0x6409c75443dd6debull},
    {"gray16.png", 3, 0, 25, 18, 0x728b8b7c2ce5b411ull},
    {"gray16.png", 1, 0, 25, 18, 0xa32a32a1fabb2649ull},
    {"gray2.png", 3, 0, 29, 15, 0xda25be9feafab264ull},
    {"gray2.png", 1, 0, 29, 15, 0xd87122f65c2a3cd6ull},
    {"gray4.png", 3, 0, 29, 15, 0xcb8fde7ba3e91756ull},
    {"gray4.png", 1, 0, 29, 15, 0x861ddb9d9b692bacull},
    {"gray8_trns.png", 3, 0, 33, 21, 0xed3a51aa908f8804ull},
    {"gray8_trns.png", 1, 0, 33, 21, 0xac86d995191da626ull},
    {"interlaced_1x1.png", 3, 0, 1, 1, 0xe06b5b186fa69700ull},
    {"interlaced_1x1.png", 1, 0, 1, 1, 0xaf63ed4c8602096full},
    {"interlaced_3x2.png", 3, 0, 3, 2, 0x1678c4841f03c53aull},
    {"interlaced_3x2.png", 1, 0, 3, 2, 0x857943cf500e34aeull},
    {"interlaced_gray16.png", 3, 0, 14, 9, 0x88d42bf6b749945eull},
    {"interlaced_gray16.png", 1, 0, 14, 9, 0xd813781fa9359b50ull},
    {"interlaced_la.png", 3, 0, 7, 10, 0x40b95010a86389d3ull},
    {"interlaced_la.png", 1, 0, 7, 10, 0x859b97fdc84caa97ull},
    {"interlaced_pal2.png", 3, 0, 11, 13, 0x40e21d1ccb874741ull},
    {"interlaced_pal2.png", 1, 0, 11, 13, 0xe49cf887b59c545bull},
    {"interlaced_rgb.png", 3, 0, 29, 19, 0x62e8741d6adb9edfull},
    {"interlaced_rgb.png", 1, 0, 29, 19, 0x8493c7badb00c33dull},
    {"la.png", 3, 0, 33, 21, 0xed3a51aa908f8804ull},
    {"la.png", 1, 0, 33, 21, 0xac86d995191da626ull},
    {"la16.png", 3, 0, 23, 17, 0x95be301a8794959cull},
    {"la16.png", 1, 0, 23, 17, 0xeb5cbc5b78f5bbfeull},
    {"metadata.png", 3, 0, 21, 17, 0x51b14062dbbe8c39ull},
    {"metadata.png", 1, 0, 21, 17, 0x4979bb40d63cb6c1ull},
    {"one_px.jpg", 3, 0, 1, 1, 0x9d81da1c412243c6ull},
    {"one_px.jpg", 1, 0, 1, 1, 0xaf64154c86024d67ull},
    {"one_px.png", 3, 0, 1, 1, 0x2d813d189b116e92ull},
    {"one_px.png", 1, 0, 1, 1, 0xaf641c4c8602594cull},
    {"palette.png", 3, 0, 27, 22, 0x1724f6abfa9d506bull},
    {"palette.png", 1, 0, 27, 22, 0x5b4bf3b0dc9581d1ull},
    {"palette4_trns.png", 3, 0, 31, 14, 0x784428c7b30adf68ull},
    {"palette4_trns.png", 1, 0, 31, 14, 0x775c6e9cc391660bull},
    {"progressive.jpg", 3, 0, 61, 47, 0x4654d323e1597176ull},
    {"progressive.jpg", 1, 0, 61, 47, 0xe786604b2a2ac04dull},
    {"rgb.png", 3, 0, 45, 31, 0xcb54d6cca3210148ull},
    {"rgb.png", 1, 0, 45, 31, 0xc0bc443229a6dae8ull},
    {"rgb16.png", 3, 0, 26, 19, 0xe5f9b1080e1d4d39ull},
    {"rgb16.png", 1, 0, 26, 19, 0xaf64de0f5b733afbull},
    {"rgb_trns.png", 3, 0, 45, 31, 0xcb54d6cca3210148ull},
    {"rgb_trns.png", 1, 0, 45, 31, 0xc0bc443229a6dae8ull},
    {"rgba.png", 3, 0, 45, 31, 0xcb54d6cca3210148ull},
    {"rgba.png", 1, 0, 45, 31, 0xc0bc443229a6dae8ull},
    {"rgba16.png", 3, 0, 26, 19, 0xaa5ed9c985a5e106ull},
    {"rgba16.png", 1, 0, 26, 19, 0xf266abd588254df8ull},
    {"s422.jpg", 3, 0, 37, 23, 0xcf3737403bf80c43ull},
    {"s422.jpg", 1, 0, 37, 23, 0xb3fbf7934ba35c05ull},
    {"s444.jpg", 3, 0, 37, 23, 0x6b0ab0fc3681873cull},
    {"s444.jpg", 1, 0, 37, 23, 0xcca3fc1b4cdf812aull},
    {"small.png", 3, 0, 20, 14, 0x90f54befb6e5c124ull},
    {"small.png", 1, 0, 20, 14, 0x15a7aea8ee5a1d76ull},
    {"tall.jpg", 3, 0, 9, 230, 0x7a7f5379b17c9264ull},
    {"tall.jpg", 1, 0, 9, 230, 0xc6246bed42694c58ull},
    {"wide.png", 3, 0, 300, 5, 0x8f7176ee82358259ull},
    {"wide.png", 1, 0, 300, 5, 0xbd8600168272caedull},
    {"ycck.jpg", 3, 0, 38, 27, 0xb127058d4a01000bull},
    {"ycck.jpg", 1, 0, 38, 27, 0xad33c5232e9bca95ull},
};

static void test_golden_decodes(void)
{
    for (size_t i = 0; i < sizeof golden_decode / sizeof golden_decode[0]; i++) {
        char path[300];
        snprintf(path, sizeof path, "images/%s", golden_decode[i].name);
        size_t n;
        uint8_t *b = load(path, &n);
        img_image im;
        char err[256] = "";
        vt_status st = decode(b, n, golden_decode[i].channels, golden_decode[i].exif, &im, err, sizeof err);
        CHECK(st == VT_OK, "%s: %s", path, err);
        if (st == VT_OK) {
            uint64_t h = fnv1a(im.pix, (size_t)im.width * im.height * im.channels);
            CHECK(im.width == golden_decode[i].w && im.height == golden_decode[i].h &&
                      im.channels == golden_decode[i].channels,
                  "%s: %dx%dx%d", path, im.width, im.height, im.channels);
            CHECK(h == golden_decode[i].fnv, "%s channels %d exif %d: decode differs from Pillow",
                  path, golden_decode[i].channels, golden_decode[i].exif);
            int w, hh;
            CHECK(img_probe(b, n, &w, &hh, err, sizeof err) == VT_OK, "%s: probe: %s", path, err);
        }
        img_free(&im);
        free(b);
    }
}

/* ---- golden resizes: Pillow's Image.resize of a synthetic pattern ---------------------- */

static const struct {
    int sw, sh, c, k, dw, dh;
    img_interp interp;
    uint64_t fnv;
    const char *bytes; /* the whole result when small */
} golden_resize[] = {
    {7, 5, 3, 0, 3, 2, IMG_BICUBIC, 0xc9d28f4ad688d22bull, "\x93\x90\xaa\xb9\x81\x94\xb0\x8e\x81\x82\x9b\xae\xad\x76\xa7\x9f\x6c\xa0"},
    {7, 5, 3, 0, 11, 8, IMG_BICUBIC, 0x0314c19bc03b1dd5ull, NULL},
    {7, 5, 3, 0, 7, 9, IMG_BICUBIC, 0x3541aa99cc26c24bull, NULL},
    {7, 5, 3, 0, 14, 5, IMG_BICUBIC, 0x80e7bd36d830a5aeull, NULL},
    {7, 5, 3, 0, 1, 1, IMG_BICUBIC, 0x1fdedf1a468ff954ull, "\xa3\x84\x9e"},
    {7, 5, 3, 0, 2, 13, IMG_BICUBIC, 0x6bca3ec279992caeull, NULL},
    {9, 6, 1, 1, 4, 3, IMG_BICUBIC, 0xe21b18d5ae7d119dull, "\x91\xb3\xb9\x65\x8b\xc4\xac\xb1\x81\x73\x99\x8d"},
    {9, 6, 1, 1, 20, 17, IMG_BICUBIC, 0xa687dcb773737126ull, NULL},
    {9, 6, 1, 1, 9, 2, IMG_BICUBIC, 0x03964474a134b5d4ull, "\x96\x92\x96\xd5\xc7\xaa\xad\x95\x5a\x73\x90\x86\x8b\xa4\x8a\xa5\xdb\x59"},
    {64, 48, 3, 2, 17, 13, IMG_BICUBIC, 0x48d92535ecc74e48ull, NULL},
    {64, 48, 1, 3, 5, 47, IMG_BICUBIC, 0x93cfdcf731ec2000ull, NULL},
    {5, 4, 3, 4, 64, 48, IMG_BICUBIC, 0x47da7c3579f46c44ull, NULL},
    {1, 1, 3, 5, 4, 3, IMG_BICUBIC, 0x18de08c2b548d185ull, NULL},
    {300, 2, 1, 6, 7, 2, IMG_BICUBIC, 0x897270d5f95d5c7full, "\x93\x93\x89\x92\x96\x93\x91\x90\x90\x96\x95\x8d\x92\x8d"},
    {7, 5, 3, 0, 3, 2, IMG_BILINEAR, 0x1abe99590c64ceaeull, "\x94\x91\xaa\xb7\x80\x96\xad\x8c\x84\x84\x97\xae\xac\x7a\xa6\x9f\x70\xa0"},
    {7, 5, 3, 0, 11, 8, IMG_BILINEAR, 0x8de7f0a6a915181aull, NULL},
    {7, 5, 3, 0, 7, 9, IMG_BILINEAR, 0xbd8be21f2bdc619dull, NULL},
    {7, 5, 3, 0, 14, 5, IMG_BILINEAR, 0x5cab0ee93a4409edull, NULL},
    {7, 5, 3, 0, 1, 1, IMG_BILINEAR, 0xf7de901a30d872e4ull, "\xa4\x83\x9c"},
    {7, 5, 3, 0, 2, 13, IMG_BILINEAR, 0xefe35c416ded835full, NULL},
    {9, 6, 1, 1, 4, 3, IMG_BILINEAR, 0x9b7b0a563419e81eull, "\x92\xb1\xb1\x71\x8d\xbb\xab\xaa\x83\x7a\x97\x91"},
    {9, 6, 1, 1, 20, 17, IMG_BILINEAR, 0xbe7df55aa1bda0dfull, NULL},
    {9, 6, 1, 1, 9, 2, IMG_BILINEAR, 0x15f36930753ce8d4ull, "\x92\x8f\x9b\xd3\xc5\xa6\xab\x9b\x54\x77\x93\x81\x8b\xa9\x89\xa8\xd7\x5a"},
    {64, 48, 3, 2, 17, 13, IMG_BILINEAR, 0x841e15827adf701cull, NULL},
    {64, 48, 1, 3, 5, 47, IMG_BILINEAR, 0x8b828ea2f1888d8eull, NULL},
    {5, 4, 3, 4, 64, 48, IMG_BILINEAR, 0x512cbc0c1ff73475ull, NULL},
    {1, 1, 3, 5, 4, 3, IMG_BILINEAR, 0x18de08c2b548d185ull, NULL},
    {300, 2, 1, 6, 7, 2, IMG_BILINEAR, 0x952b4e5196688f94ull, "\x93\x92\x89\x93\x94\x93\x92\x8f\x90\x96\x95\x8d\x91\x8d"},
};

/* Same formula as pattern() in make_odd_images.py. */
static void pattern(uint8_t *p, int w, int h, int c, int k)
{
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int ch = 0; ch < c; ch++) {
                int v = (x * (37 + k) + y * 91 + ch * 53 + x * y * 13 + (x * x * 7) % 29) % 256;
                if ((x + y) % 5 == 0) v = 255 - v / 4;
                p[((size_t)y * w + x) * c + ch] = (uint8_t)v;
            }
}

static void test_golden_resizes(void)
{
    for (size_t i = 0; i < sizeof golden_resize / sizeof golden_resize[0]; i++) {
        const __typeof__(golden_resize[0]) *g = &golden_resize[i];
        img_image src = {g->sw, g->sh, g->c, malloc((size_t)g->sw * g->sh * g->c)}, dst;
        pattern(src.pix, g->sw, g->sh, g->c, g->k);
        char err[256] = "";
        vt_status st = img_resize(&src, g->dw, g->dh, g->interp, &dst, err, sizeof err);
        CHECK(st == VT_OK, "%s", err);
        if (st == VT_OK) {
            size_t n = (size_t)g->dw * g->dh * g->c;
            CHECK(dst.width == g->dw && dst.height == g->dh && dst.channels == g->c, "shape");
            CHECK(fnv1a(dst.pix, n) == g->fnv, "resize %dx%dx%d -> %dx%d %s differs from Pillow",
                  g->sw, g->sh, g->c, g->dw, g->dh, g->interp == IMG_BICUBIC ? "bicubic" : "bilinear");
            if (g->bytes)
                for (size_t j = 0; j < n; j++)
                    CHECK(dst.pix[j] == (uint8_t)g->bytes[j], "case %zu byte %zu: %d, Pillow %d", i, j,
                          dst.pix[j], (uint8_t)g->bytes[j]);
        }
        img_free(&dst);
        img_free(&src);
    }
    /* same size: Pillow skips both passes */
    img_image src = {13, 7, 3, malloc(13 * 7 * 3)}, dst;
    pattern(src.pix, 13, 7, 3, 9);
    CHECK(img_resize(&src, 13, 7, IMG_BICUBIC, &dst, NULL, 0) == VT_OK, "identity");
    CHECK(dst.pix && memcmp(dst.pix, src.pix, 13 * 7 * 3) == 0, "identity resize changed pixels");
    img_free(&dst);
    /* bad arguments */
    CHECK(img_resize(&src, 0, 5, IMG_BICUBIC, &dst, NULL, 0) == VT_EINVAL, "zero width");
    CHECK(img_resize(&src, 5, 5, (img_interp)7, &dst, NULL, 0) == VT_EINVAL, "bad interp");
    img_image bad = {0, 5, 3, src.pix};
    CHECK(img_resize(&bad, 5, 5, IMG_BICUBIC, &dst, NULL, 0) == VT_EINVAL, "empty source");
    CHECK(dst.pix == NULL, "dst not cleared on failure");
    img_free(&src);
    img_free(&src); /* twice: zeroed, so a no-op */
    img_free(NULL);
}

/* ---- EXIF orientation ----------------------------------------------------------------- */

/* Independent oracle: every orientation as a composition of rot_cw and flip_h. */
static img_image rot_cw(img_image a)
{
    img_image o = {a.height, a.width, a.channels, malloc((size_t)a.width * a.height * a.channels)};
    for (int y = 0; y < o.height; y++)
        for (int x = 0; x < o.width; x++) /* out(x, y) = in(y, H-1-x) */
            memcpy(o.pix + ((size_t)y * o.width + x) * a.channels,
                   a.pix + ((size_t)(a.height - 1 - x) * a.width + y) * a.channels, (size_t)a.channels);
    img_free(&a);
    return o;
}

static img_image flip_h(img_image a)
{
    img_image o = {a.width, a.height, a.channels, malloc((size_t)a.width * a.height * a.channels)};
    for (int y = 0; y < o.height; y++)
        for (int x = 0; x < o.width; x++)
            memcpy(o.pix + ((size_t)y * o.width + x) * a.channels,
                   a.pix + ((size_t)y * a.width + a.width - 1 - x) * a.channels, (size_t)a.channels);
    img_free(&a);
    return o;
}

static img_image oriented(const img_image *base, int o)
{
    img_image a = {base->width, base->height, base->channels,
                   malloc((size_t)base->width * base->height * base->channels)};
    memcpy(a.pix, base->pix, (size_t)base->width * base->height * base->channels);
    static const int cw[9] = {0, 0, 0, 2, 2, 1, 1, 3, 3};   /* clockwise quarter turns ... */
    static const int fl[9] = {0, 0, 1, 0, 1, 1, 0, 1, 0};   /* ... then a horizontal flip */
    for (int i = 0; i < cw[o]; i++) a = rot_cw(a);
    if (fl[o]) a = flip_h(a);
    return a;
}

static int same(const img_image *a, const img_image *b)
{
    return a->width == b->width && a->height == b->height && a->channels == b->channels &&
           memcmp(a->pix, b->pix, (size_t)a->width * a->height * a->channels) == 0;
}

/* A copy of jpg with an APP1 segment (payload p, n bytes) inserted right after SOI. */
static uint8_t *with_app1(const uint8_t *jpg, size_t len, const uint8_t *p, size_t n, size_t *out)
{
    uint8_t *b = malloc(len + n + 4);
    memcpy(b, jpg, 2);
    b[2] = 0xff; b[3] = 0xe1; b[4] = (uint8_t)((n + 2) >> 8); b[5] = (uint8_t)(n + 2);
    memcpy(b + 6, p, n);
    memcpy(b + 6 + n, jpg + 2, len - 2);
    *out = len + n + 4;
    return b;
}

/* "Exif\0\0" + little-endian TIFF with one IFD entry (tag, type, count, value). */
static size_t exif_payload(uint8_t *p, const char *order, uint32_t ifd, unsigned entries,
                           unsigned type, uint32_t count, unsigned value)
{
    memcpy(p, "Exif\0\0", 6);
    uint8_t *t = p + 6;
    memcpy(t, order, 2);
    t[2] = 42; t[3] = 0;
    t[4] = (uint8_t)ifd; t[5] = (uint8_t)(ifd >> 8); t[6] = (uint8_t)(ifd >> 16); t[7] = (uint8_t)(ifd >> 24);
    t[8] = (uint8_t)entries; t[9] = (uint8_t)(entries >> 8);
    uint8_t e[12] = {0x12, 0x01, (uint8_t)type, 0, (uint8_t)count, (uint8_t)(count >> 8), 0, 0,
                     (uint8_t)value, (uint8_t)(value >> 8), 0, 0};
    memcpy(t + 10, e, 12);
    memset(t + 22, 0, 4);
    return 6 + 26;
}

static void test_exif(void)
{
    size_t n;
    uint8_t *b = load("images/exif_1.jpg", &n);
    img_image base;
    char err[256];
    CHECK(decode(b, n, 3, 0, &base, err, sizeof err) == VT_OK, "%s", err);
    for (int o = 1; o <= 8; o++) {
        for (int mm = 0; mm < 2; mm++) {
            if (mm && o != 3 && o != 6) continue;
            char name[64];
            snprintf(name, sizeof name, "images/exif_%d%s.jpg", o, mm ? "_mm" : "");
            size_t m;
            uint8_t *e = load(name, &m);
            img_image got, plain, want = oriented(&base, o);
            CHECK(decode(e, m, 3, 1, &got, err, sizeof err) == VT_OK, "%s: %s", name, err);
            CHECK(same(&got, &want), "%s: orientation %d applied wrongly", name, o);
            CHECK(decode(e, m, 3, 0, &plain, err, sizeof err) == VT_OK && same(&plain, &base),
                  "%s: orientation applied although not asked", name);
            img_free(&got); img_free(&plain); img_free(&want);
            free(e);
        }
    }
    /* malformed EXIF is ignored; a valid first segment wins over the file's own */
    static const struct { const char *order; uint32_t ifd; unsigned entries, type, count, value; int expect; } cases[] = {
        {"II", 8, 1, 3, 1, 6, 6},         /* valid: rotate */
        {"II", 8, 1, 4, 1, 8, 8},         /* LONG is accepted too */
        {"II", 4000, 1, 3, 1, 6, 1},      /* IFD past the end */
        {"II", 0xffffffffu, 1, 3, 1, 6, 1},
        {"II", 8, 0xffff, 3, 1, 6, 6},    /* huge entry count: only entries in bounds read */
        {"II", 8, 1, 3, 2, 6, 1},         /* two values */
        {"II", 8, 1, 3, 1, 9, 1},         /* orientation out of range */
        {"II", 8, 1, 3, 1, 0, 1},
        {"II", 8, 1, 7, 1, 6, 1},         /* UNDEFINED type */
        {"XX", 8, 1, 3, 1, 6, 1},         /* not a TIFF header */
        {"II", 24, 1, 3, 1, 6, 1},        /* IFD count at the last 2 bytes */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t p[64];
        size_t pn = exif_payload(p, cases[i].order, cases[i].ifd, cases[i].entries, cases[i].type,
                                 cases[i].count, cases[i].value), m;
        uint8_t *e = with_app1(b, n, p, pn, &m);
        img_image got, want = oriented(&base, cases[i].expect);
        CHECK(decode(e, m, 3, 1, &got, err, sizeof err) == VT_OK, "exif case %zu: %s", i, err);
        CHECK(got.pix && same(&got, &want), "exif case %zu: expected orientation %d", i, cases[i].expect);
        img_free(&got); img_free(&want);
        free(e);
        /* every truncation of the TIFF block inside a well-formed segment: no crash, and
         * never an orientation read from bytes past the segment */
        for (size_t cut = 0; cut < pn; cut++) {
            e = with_app1(b, n, p, cut, &m);
            vt_status st = decode(e, m, 3, 1, &got, err, sizeof err);
            CHECK(st == VT_OK, "exif case %zu cut %zu: %s", i, cut, err);
            if (cut < pn - 4) { /* the value and next-IFD fields are cut off */
                img_image w1 = oriented(&base, 1);
                CHECK(got.pix && same(&got, &w1), "exif case %zu cut %zu read past the segment", i, cut);
                img_free(&w1);
            }
            img_free(&got);
            free(e);
        }
    }
    /* an APP1 "Exif\0" without the second 0 is still Pillow's Exif block: it has no TIFF
     * header, so no orientation, and the later (valid) segment is not consulted */
    {
        uint8_t p[64];
        size_t pn = exif_payload(p, "II", 8, 1, 3, 1, 6), m, m2;
        uint8_t *e = with_app1(b, n, p, pn, &m);
        p[5] = 'X';
        uint8_t *e2 = with_app1(e, m, p, pn, &m2);
        img_image got, want = oriented(&base, 1);
        CHECK(decode(e2, m2, 3, 1, &got, err, sizeof err) == VT_OK && same(&got, &want),
              "Exif block without TIFF header");
        img_free(&got); img_free(&want);
        free(e); free(e2);
    }
    /* two Exif segments: the first is used (as Pillow does) */
    uint8_t p1[64], p2[64];
    size_t n1 = exif_payload(p1, "II", 8, 1, 3, 1, 3), n2 = exif_payload(p2, "II", 8, 1, 3, 1, 8), m1, m2;
    uint8_t *e1 = with_app1(b, n, p2, n2, &m1), *e2 = with_app1(e1, m1, p1, n1, &m2);
    img_image got, want = oriented(&base, 3);
    CHECK(decode(e2, m2, 3, 1, &got, err, sizeof err) == VT_OK && same(&got, &want), "first Exif wins");
    img_free(&got); img_free(&want);
    /* a segment length running past the file: JPEG error, no crash */
    e1[4] = 0xff; e1[5] = 0xff;
    vt_status st = decode(e1, m1, 3, 1, &got, err, sizeof err);
    CHECK(st != VT_OK && got.pix == NULL, "overlong APP1 accepted");
    free(e1); free(e2);
    img_free(&base);
    free(b);
}

/* ---- preprocessing geometry ----------------------------------------------------------- */

static void test_preprocess_geometry(void)
{
    /* resize == shorter side keeps that side; crop offsets use Python's round-half-even */
    static const struct { int w, h, resize, crop, left, top; } g[] = {
        {10, 13, 10, 8, 1, 2},   /* (13-8)/2 = 2.5 -> 2 */
        {10, 15, 10, 8, 1, 4},   /* 3.5 -> 4 */
        {10, 10, 10, 7, 2, 2},   /* 1.5 -> 2 */
        {10, 10, 10, 9, 0, 0},   /* 0.5 -> 0 */
        {12, 11, 11, 6, 3, 2},   /* (12-6)/2 = 3, 2.5 -> 2 */
        {10, 10, 10, 14, -2, -2},/* padding (14-10)//2 = 2 before */
        {10, 10, 10, 13, -1, -1},/* padding 1 before, 2 after */
        {7, 20, 7, 10, -1, 5},   /* one side padded, the other cropped */
    };
    for (size_t i = 0; i < sizeof g / sizeof g[0]; i++) {
        img_image im = {g[i].w, g[i].h, 3, malloc((size_t)g[i].w * g[i].h * 3)};
        pattern(im.pix, im.width, im.height, 3, (int)i);
        img_preproc p = {g[i].resize, g[i].crop, IMG_BICUBIC, {0.5f, 0.25f, 0.125f}, {0.5f, 2.0f, 0.25f}};
        int S = g[i].crop;
        float *out = malloc(sizeof(float) * 3 * S * S);
        char err[256] = "";
        CHECK(img_preprocess(&im, &p, out, err, sizeof err) == VT_OK, "%s", err);
        int bad = 0;
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < S; y++)
                for (int x = 0; x < S; x++) {
                    int sx = x + g[i].left, sy = y + g[i].top;
                    int v = sx < 0 || sy < 0 || sx >= im.width || sy >= im.height ? 0
                          : im.pix[((size_t)sy * im.width + sx) * 3 + c];
                    float want = ((float)v / 255.0f - p.mean[c]) / p.std[c];
                    bad += out[((size_t)c * S + y) * S + x] != want;
                }
        CHECK(bad == 0, "geometry case %zu: %d values differ", i, bad);
        free(out);
        img_free(&im);
    }
    img_image im = {4, 4, 1, calloc(16, 1)};
    float out[16];
    img_preproc p = {4, 4, IMG_BILINEAR, {0, 0, 0}, {0, 1, 1}};
    CHECK(img_preprocess(&im, &p, out, NULL, 0) == VT_EINVAL, "std 0 accepted");
    p.std[0] = 1;
    p.resize = 0;
    CHECK(img_preprocess(&im, &p, out, NULL, 0) == VT_EINVAL, "resize 0 accepted");
    p.resize = 4;
    CHECK(img_preprocess(&im, &p, out, NULL, 0) == VT_OK, "gray 4x4");
    img_free(&im);
}

/* ---- hostile inputs ------------------------------------------------------------------- */

static uint32_t crc32_png(const uint8_t *p, size_t n)
{
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = c >> 1 ^ (0xedb88320u & (0u - (c & 1)));
    }
    return ~c;
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}

/* Rewrites a PNG's IHDR size (fixing its CRC) or a JPEG's SOF size, in place. */
static void set_size(uint8_t *b, size_t n, uint32_t w, uint32_t h)
{
    if (b[0] == 0x89) {
        put32(b + 16, w);
        put32(b + 20, h);
        put32(b + 29, crc32_png(b + 12, 17));
        return;
    }
    for (size_t i = 2; i + 9 < n;) {
        unsigned m = b[i + 1], len = (unsigned)b[i + 2] << 8 | b[i + 3];
        if (m >= 0xc0 && m <= 0xcf && m != 0xc4 && m != 0xc8 && m != 0xcc) {
            b[i + 5] = (uint8_t)(h >> 8); b[i + 6] = (uint8_t)h;
            b[i + 7] = (uint8_t)(w >> 8); b[i + 8] = (uint8_t)w;
            return;
        }
        i += 2 + len;
    }
}

static void test_limits(void)
{
    static const char *files[] = {"images/s444.jpg", "images/rgb.png", "images/progressive.jpg",
                                  "images/interlaced_rgb.png"};
    for (size_t f = 0; f < sizeof files / sizeof files[0]; f++) {
        size_t n;
        uint8_t *b = load(files[f], &n);
        char err[256] = "";
        img_image im;
        int w, h;
        /* a header declaring 65500 x 65500 (4.3 Gpixel): refused from the header alone */
        set_size(b, n, 65500, 65500);
        CHECK(img_probe(b, n, &w, &h, err, sizeof err) == VT_OK && w == 65500 && h == 65500,
              "%s: probe of the big header: %s", files[f], err);
        double t0 = now();
        vt_status st = decode(b, n, 3, 0, &im, err, sizeof err);
        double dt = now() - t0;
        CHECK(st == VT_ELIMIT, "%s: 65500x65500 gave %s (%s)", files[f], vt_status_str(st), err);
        CHECK(dt < 0.05, "%s: refusing the big header took %.3f s", files[f], dt);
        CHECK(im.pix == NULL, "%s: pixels returned with an error", files[f]);
        /* just over / at the caller's limit */
        set_size(b, n, 200, 100);
        img_decode_opts o = {.channels = 3, .max_pixels = 19999};
        CHECK(img_decode(b, n, &o, &im, err, sizeof err) == VT_ELIMIT, "%s: 20000 > 19999", files[f]);
        /* zero sizes */
        set_size(b, n, 0, 10);
        st = decode(b, n, 3, 0, &im, err, sizeof err);
        CHECK(st == VT_EFORMAT || st == VT_EUNSUPPORTED, "%s: width 0 gave %s", files[f], vt_status_str(st));
        set_size(b, n, 10, 0);
        st = decode(b, n, 1, 0, &im, err, sizeof err);
        CHECK(st == VT_EFORMAT || st == VT_EUNSUPPORTED, "%s: height 0 gave %s", files[f], vt_status_str(st));
        free(b);
    }
    /* the limit itself, on a real image */
    size_t n;
    uint8_t *b = load("images/rgb.png", &n);
    img_image im;
    img_decode_opts o = {.channels = 3, .max_pixels = 45 * 31};
    CHECK(img_decode(b, n, &o, &im, NULL, 0) == VT_OK, "exactly at the limit");
    img_free(&im);
    o.max_pixels = 45 * 31 - 1;
    CHECK(img_decode(b, n, &o, &im, NULL, 0) == VT_ELIMIT, "one over the limit");
    o.channels = 2;
    CHECK(img_decode(b, n, &o, &im, NULL, 0) == VT_EINVAL, "channels 2");
    free(b);
}

static void test_not_images(void)
{
    static const struct { const char *bytes; size_t n; } cases[] = {
        {"", 0}, {"hello, world", 12}, {"GIF89a\x01\x00\x01\x00", 10}, {"BM\x3a\0\0\0", 6},
        {"\xff", 1}, {"\xff\xd8", 2}, {"\x89PNG\r\n\x1a", 7}, {"RIFF\0\0\0\0WEBPVP8 ", 16},
        {"\0\0\0\x0c" "jP  \r\n\x87\n", 12}, {"%PDF-1.4", 8},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        img_image im;
        char err[256] = "";
        int w, h;
        CHECK(decode((const uint8_t *)cases[i].bytes, cases[i].n, 3, 1, &im, err, sizeof err) == VT_EUNSUPPORTED,
              "case %zu: %s", i, err);
        CHECK(err[0] != '\0', "case %zu: no message", i);
        CHECK(img_probe(cases[i].bytes, cases[i].n, &w, &h, NULL, 0) == VT_EUNSUPPORTED, "probe case %zu", i);
    }
    img_image im;
    CHECK(decode(NULL, 0, 3, 0, &im, NULL, 0) == VT_EUNSUPPORTED, "NULL buffer");
    /* signatures followed by nothing useful */
    CHECK(decode((const uint8_t *)"\xff\xd8\xff\xe0", 4, 3, 0, &im, NULL, 0) == VT_EFORMAT, "JPEG stub");
    CHECK(decode((const uint8_t *)"\x89PNG\r\n\x1a\n\0\0", 10, 3, 0, &im, NULL, 0) == VT_EFORMAT, "PNG stub");
    /* a tables-only JPEG (SOI, DQT, EOI): TurboJPEG 2.1 reports success with no size */
    uint8_t tables[2 + 4 + 65 + 2] = {0xff, 0xd8, 0xff, 0xdb, 0x00, 0x43, 0x00};
    memset(tables + 7, 1, 64);
    tables[71] = 0xff; tables[72] = 0xd9;
    int w = -1, h = -1;
    CHECK(decode(tables, sizeof tables, 3, 0, &im, NULL, 0) == VT_EFORMAT, "tables-only JPEG");
    CHECK(img_probe(tables, sizeof tables, &w, &h, NULL, 0) == VT_EFORMAT, "tables-only probe");
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void) /* xorshift64*, fixed seed: reproducible mutations */
{
    rng ^= rng >> 12; rng ^= rng << 25; rng ^= rng >> 27;
    return (uint32_t)((rng * 0x2545f4914f6cdd1dull) >> 32);
}

static void test_truncated_and_mutated(void)
{
    static const char *files[] = {"images/s444.jpg", "images/progressive.jpg", "images/cmyk.jpg",
                                  "images/rgb.png", "images/interlaced_pal2.png", "images/gray16.png",
                                  "images/exif_6.jpg"};
    int ok_cut = 0, ok_mut = 0, total_mut = 0;
    for (size_t f = 0; f < sizeof files / sizeof files[0]; f++) {
        size_t n;
        uint8_t *b = load(files[f], &n);
        img_image im;
        char err[256];
        CHECK(decode(b, n, 3, 1, &im, err, sizeof err) == VT_OK, "%s intact: %s", files[f], err);
        img_free(&im);
        /* every prefix; the copy is exactly cut so ASan sees reads past it */
        for (size_t cut = 0; cut < n; cut++) {
            uint8_t *c = malloc(cut ? cut : 1);
            memcpy(c, b, cut);
            vt_status st = decode(c, cut, (cut & 1) ? 1 : 3, 1, &im, err, sizeof err);
            if (st == VT_OK) {
                ok_cut++;
                CHECK(im.pix && im.width > 0 && im.height > 0, "%s cut %zu", files[f], cut);
            } else {
                CHECK(im.pix == NULL && err[0], "%s cut %zu: status %d without message", files[f], cut, st);
            }
            CHECK(cut > 40 || st != VT_OK, "%s: %zu-byte prefix decoded", files[f], cut);
            img_free(&im);
            free(c);
        }
        /* random byte mutations, 1 to 8 bytes each */
        for (int it = 0; it < 1500; it++) {
            uint8_t *c = malloc(n);
            memcpy(c, b, n);
            int k = 1 + (int)(rnd() % 8);
            for (int j = 0; j < k; j++) {
                size_t pos = rnd() % n;
                c[pos] = (rnd() & 3) == 0 ? (uint8_t)(c[pos] ^ (1u << (rnd() % 8))) : (uint8_t)rnd();
            }
            vt_status st = decode(c, n, (it & 1) ? 1 : 3, 1, &im, err, sizeof err);
            total_mut++;
            if (st == VT_OK) {
                ok_mut++;
                CHECK(im.pix && im.width > 0 && im.height > 0 && im.width <= 65535 && im.height <= 65535,
                      "%s mutation %d", files[f], it);
            }
            img_free(&im);
            free(c);
        }
        free(b);
    }
    printf("robustness: %d truncated prefixes decoded anyway, %d of %d mutations decoded\n", ok_cut,
           ok_mut, total_mut);
}

int main(int argc, char **argv)
{
    if (argc > 1) datadir = argv[1];
    test_golden_decodes();
    test_golden_resizes();
    test_exif();
    test_preprocess_geometry();
    test_limits();
    test_not_images();
    test_truncated_and_mutated();
    printf("test_image: %d checks, %d failed\n", checks, failures);
    return failures != 0;
}
