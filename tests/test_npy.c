/* test_npy.c - tests of the .npy reader and atomic writer (engine/npy.h): writer->reader
 * round trips and the exact bytes NumPy would write, v2/v3 headers, '<f8' conversion, one
 * hand-made file per rejection (byte order, dtype, Fortran order, sizes, malformed dicts),
 * every truncation of a valid file, a fixed-seed mutation loop that must never crash, and
 * the atomic-save guarantees. Exits non-zero on any failure; the last line is
 * "test_npy: N checks passed".
 */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "npy.h"

static int checks, failures;

#define CHECK(c)                                                                          \
    do {                                                                                  \
        checks++;                                                                         \
        if (!(c)) {                                                                       \
            failures++;                                                                   \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c);         \
        }                                                                                 \
    } while (0)

#define CHECK_ST(expr, want)                                                              \
    do {                                                                                  \
        vt_status got_ = (expr);                                                          \
        checks++;                                                                         \
        if (got_ != (want)) {                                                             \
            failures++;                                                                   \
            fprintf(stderr, "%s:%d: %s returned '%s', want '%s' (err: %s)\n", __FILE__,   \
                    __LINE__, #expr, vt_status_str(got_), vt_status_str(want), err);      \
        }                                                                                 \
    } while (0)

static char err[512];
static char tmpdir[64];
static char scratch[128]; /* tmpdir/x.npy: where hand-made files are written to be read */

static int write_file(const char *path, const void *buf, size_t len)
{
    FILE *fp = fopen(path, "wb");
    if (!fp) return -1;
    size_t n = fwrite(buf, 1, len, fp);
    return fclose(fp) == 0 && n == len ? 0 : -1;
}

static uint8_t *read_all(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    uint8_t *buf = malloc(n > 0 ? (size_t)n : 1);
    *len = fread(buf, 1, (size_t)n, fp);
    fclose(fp);
    return buf;
}

static int count_temp_files(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strstr(e->d_name, ".tmp.")) n++;
    closedir(d);
    return n;
}

/* A .npy file: magic, version major.minor, the header length in the width the version
 * uses, the header text verbatim, then the data (a byte pattern when data is NULL). */
static uint8_t *mknpy(int major, int minor, const char *hdr, const void *data, size_t datalen,
                      size_t *len)
{
    size_t hl = strlen(hdr), pre = major == 1 ? 10 : 12;
    *len = pre + hl + datalen;
    uint8_t *b = malloc(*len);
    memcpy(b, "\x93NUMPY", 6);
    b[6] = (uint8_t)major;
    b[7] = (uint8_t)minor;
    b[8] = (uint8_t)hl;
    b[9] = (uint8_t)(hl >> 8);
    if (major != 1) {
        b[10] = (uint8_t)(hl >> 16);
        b[11] = (uint8_t)(hl >> 24);
    }
    memcpy(b + pre, hdr, hl);
    for (size_t i = 0; i < datalen; i++)
        b[pre + hl + i] = data ? ((const uint8_t *)data)[i] : (uint8_t)(i * 13 + 5);
    return b;
}

/* Writes a hand-made v1 file, reads it, checks status, detail substring and outputs. */
static void expect_read(const char *file, int line, int major, const char *hdr,
                        size_t datalen, vt_status want, const char *substr)
{
    size_t len;
    uint8_t *b = mknpy(major, 0, hdr, NULL, datalen, &len);
    write_file(scratch, b, len);
    free(b);
    float *data = (float *)&data; /* must be overwritten */
    int ndim = -1;
    int64_t shape[NPY_MAX_DIMS];
    char e[512] = "";
    vt_status s = npy_read_f32(scratch, &data, &ndim, shape, e, sizeof e);
    checks++;
    if (s != want || (substr && !strstr(e, substr)) || ((s == VT_OK) != (data != NULL))) {
        failures++;
        fprintf(stderr, "%s:%d: npy_read_f32 gave '%s' (want '%s'), err \"%s\" (want \"%s\")\n",
                file, line, vt_status_str(s), vt_status_str(want), e, substr ? substr : "");
    }
    if (s == VT_OK) free(data);
}
#define EXPECT_READ(hdr, datalen, want, substr) \
    expect_read(__FILE__, __LINE__, 1, hdr, datalen, want, substr)

/* Round trip of one shape; checks the returned shape, values and the exact header. */
static void round_trip(const char *file, int line, int ndim, const int64_t *shape,
                       const char *want_shape_text)
{
    size_t numel = 1;
    for (int i = 0; i < ndim; i++) numel *= (size_t)shape[i];
    float *x = malloc((numel ? numel : 1) * sizeof *x);
    for (size_t i = 0; i < numel; i++) x[i] = (float)i * 0.25f - 3.0f;
    char path[160];
    snprintf(path, sizeof path, "%s/rt.npy", tmpdir);
    vt_status s = npy_write_f32(path, x, ndim, shape, err, sizeof err);
    float *y = NULL;
    int nd = -1;
    int64_t sh[NPY_MAX_DIMS];
    if (s == VT_OK) s = npy_read_f32(path, &y, &nd, sh, err, sizeof err);
    int ok = s == VT_OK && nd == ndim && (numel == 0 || !memcmp(x, y, numel * sizeof *x));
    for (int i = 0; ok && i < ndim; i++) ok = sh[i] == shape[i];

    /* The bytes NumPy writes: v1.0, the dict text, spaces, '\n', data at a multiple of 64. */
    size_t len;
    uint8_t *b = read_all(path, &len);
    char want[256];
    snprintf(want, sizeof want, "{'descr': '<f4', 'fortran_order': False, 'shape': %s, }",
             want_shape_text);
    size_t hl = b && len >= 10 ? (size_t)(b[8] | b[9] << 8) : 0;
    ok = ok && b && len >= 10 && !memcmp(b, "\x93NUMPY\x01\x00", 8) && (10 + hl) % 64 == 0 &&
         10 + hl + numel * 4 == len && !memcmp(b + 10, want, strlen(want)) &&
         b[10 + hl - 1] == '\n';
    for (size_t i = 10 + strlen(want); ok && i < 10 + hl - 1; i++) ok = b[i] == ' ';
    checks++;
    if (!ok) {
        failures++;
        fprintf(stderr, "%s:%d: round trip of shape %s failed (%s: %s)\n", file, line,
                want_shape_text, vt_status_str(s), err);
    }
    free(b);
    free(x);
    free(y);
    unlink(path);
}
#define ROUND_TRIP(ndim, shape, text) round_trip(__FILE__, __LINE__, ndim, shape, text)

static void test_round_trip(void)
{
    int64_t s23[] = {2, 3}, s3[] = {3}, s0[] = {0}, s203[] = {2, 0, 3};
    int64_t s8[] = {1, 2, 1, 3, 1, 1, 2, 1}, sbig[] = {1000, 77};
    ROUND_TRIP(2, s23, "(2, 3)");
    ROUND_TRIP(1, s3, "(3,)");
    ROUND_TRIP(0, NULL, "()");
    ROUND_TRIP(1, s0, "(0,)");
    ROUND_TRIP(3, s203, "(2, 0, 3)");
    ROUND_TRIP(8, s8, "(1, 2, 1, 3, 1, 1, 2, 1)");
    ROUND_TRIP(2, sbig, "(1000, 77)");

    /* Special values survive bit for bit. */
    float sp[4] = {INFINITY, -0.0f, NAN, 1e-45f};
    int64_t s4[] = {4};
    char path[160];
    snprintf(path, sizeof path, "%s/sp.npy", tmpdir);
    CHECK_ST(npy_write_f32(path, sp, 1, s4, err, sizeof err), VT_OK);
    float *y = NULL;
    int nd;
    int64_t sh[NPY_MAX_DIMS];
    CHECK_ST(npy_read_f32(path, &y, &nd, sh, err, sizeof err), VT_OK);
    CHECK(y && nd == 1 && sh[0] == 4 && !memcmp(y, sp, sizeof sp));
    free(y);
    unlink(path);

    /* Writer argument checks. */
    int64_t s9[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1}, sneg[] = {-2}, sover[] = {INT64_MAX, 4};
    snprintf(path, sizeof path, "%s/bad.npy", tmpdir);
    CHECK_ST(npy_write_f32(path, sp, 9, s9, err, sizeof err), VT_EINVAL);
    CHECK_ST(npy_write_f32(path, sp, 1, sneg, err, sizeof err), VT_EINVAL);
    CHECK_ST(npy_write_f32(path, sp, 2, sover, err, sizeof err), VT_EINVAL);
    CHECK_ST(npy_write_f32(path, NULL, 1, s4, err, sizeof err), VT_EINVAL);
    CHECK_ST(npy_write_f32(path, sp, -1, s4, err, sizeof err), VT_EINVAL);
    CHECK(access(path, F_OK) != 0);
}

static void test_versions_and_f8(void)
{
    static const char h23[] = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }\n";
    float x[6] = {1, 2, 3, 4, 5, 6};
    float *y = NULL;
    int nd;
    int64_t sh[NPY_MAX_DIMS];
    for (int major = 2; major <= 3; major++) {
        size_t len;
        uint8_t *b = mknpy(major, 0, h23, x, sizeof x, &len);
        write_file(scratch, b, len);
        free(b);
        CHECK_ST(npy_read_f32(scratch, &y, &nd, sh, err, sizeof err), VT_OK);
        CHECK(y && nd == 2 && sh[0] == 2 && sh[1] == 3 && !memcmp(x, y, sizeof x));
        free(y);
        y = NULL;
    }

    /* '<f8' converts to the nearest float, overflow to inf, like (float)d. */
    double d[5] = {1.5, -2.25, 0.1, 1e300, -1e-300};
    size_t len;
    uint8_t *b = mknpy(1, 0, "{'descr': '<f8', 'fortran_order': False, 'shape': (5,), }\n", d,
                       sizeof d, &len);
    write_file(scratch, b, len);
    free(b);
    CHECK_ST(npy_read_f32(scratch, &y, &nd, sh, err, sizeof err), VT_OK);
    CHECK(y && nd == 1 && sh[0] == 5);
    if (y) {
        CHECK(y[0] == 1.5f && y[1] == -2.25f && y[2] == 0.1f);
        CHECK(isinf(y[3]) && y[3] > 0);
        CHECK(y[4] == 0 && signbit(y[4]));
    }
    free(y);
    y = NULL;

    /* '<f8' bigger than one conversion chunk (8192 doubles). */
    enum { ND = 20001 };
    double *dd = malloc(ND * sizeof *dd);
    for (int i = 0; i < ND; i++) dd[i] = i * 0.5 - 7;
    b = mknpy(1, 0, "{'descr': '<f8', 'fortran_order': False, 'shape': (3, 6667), }\n", dd,
              ND * sizeof *dd, &len);
    write_file(scratch, b, len);
    free(b);
    CHECK_ST(npy_read_f32(scratch, &y, &nd, sh, err, sizeof err), VT_OK);
    int bad = !y;
    for (int i = 0; y && i < ND; i++) bad += y[i] != (float)dd[i];
    CHECK(bad == 0 && nd == 2 && sh[0] == 3 && sh[1] == 6667);
    free(y);
    free(dd);
}

static void test_rejections(void)
{
    /* dtype, byte order, layout */
    EXPECT_READ("{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }\n", 8,
                VT_EUNSUPPORTED, "dtype '>f4'");
    EXPECT_READ("{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }\n", 8,
                VT_EUNSUPPORTED, "dtype '<i4'");
    EXPECT_READ("{'descr': '<f2', 'fortran_order': False, 'shape': (2,), }\n", 4,
                VT_EUNSUPPORTED, "not supported");
    EXPECT_READ("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }\n", 24,
                VT_EUNSUPPORTED, "fortran_order");
    EXPECT_READ("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }\n", 8,
                VT_EFORMAT, "quoted string");
    /* sizes */
    EXPECT_READ("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }\n", 23, VT_EFORMAT,
                "shape (2, 3) '<f4' needs 24 data bytes, the file has 23");
    EXPECT_READ("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }\n", 25, VT_EFORMAT,
                "needs 24");
    EXPECT_READ("{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }\n", 24, VT_EFORMAT,
                "shape (4,) '<f4' needs 16");
    EXPECT_READ("{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }\n", 12, VT_EFORMAT,
                "needs 24");
    EXPECT_READ("{'descr': '<f4', 'fortran_order': False, 'shape': (), }\n", 0, VT_EFORMAT,
                "needs 4");
    EXPECT_READ("{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 8), }",
                4, VT_EFORMAT, "overflows");
    EXPECT_READ("{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904,), }",
                4, VT_EFORMAT, "needs"); /* numel fits, bytes do not */
    EXPECT_READ("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }",
                4, VT_EFORMAT, "overflows");
    /* shape syntax */
    EXPECT_READ("{'descr': '<f4', 'fortran_order': False, 'shape': (3), }\n", 12, VT_EFORMAT,
                "not a tuple");
    EXPECT_READ("{'descr': '<f4', 'fortran_order': False, 'shape': (-3,), }\n", 12, VT_EFORMAT,
                "negative");
    EXPECT_READ("{'descr': '<f4', 'fortran_order': False, 'shape': (,), }\n", 0, VT_EFORMAT,
                "expected a dimension");
    EXPECT_READ("{'descr': '<f4', 'fortran_order': False, 'shape': (2 3), }\n", 24, VT_EFORMAT,
                "expected ','");
    EXPECT_READ("{'descr': '<f4', 'fortran_order': False, 'shape': [2, 3], }\n", 24,
                VT_EFORMAT, "expected '('");
    EXPECT_READ("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3.0), }\n", 24,
                VT_EFORMAT, NULL);
    EXPECT_READ("{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1), }\n", 4,
                VT_EUNSUPPORTED, "more than 8");
    /* dict syntax */
    EXPECT_READ("hello", 0, VT_EFORMAT, "expected '{'");
    EXPECT_READ("", 0, VT_EFORMAT, "expected '{'");
    EXPECT_READ("{'descr': '<f4', 'fortran_order': False, 'shape': (2,)", 8, VT_EFORMAT,
                "expected ',' or '}'");
    EXPECT_READ("{'descr': '<f4' 'fortran_order': False, 'shape': (2,)}", 8, VT_EFORMAT,
                "expected ',' or '}'");
    EXPECT_READ("{'descr': '<f4, 'fortran_order': False, 'shape': (2,)}", 8, VT_EFORMAT, NULL);
    EXPECT_READ("{'descr': '<f4', 'fortran_order': false, 'shape': (2,)}", 8, VT_EFORMAT,
                "True or False");
    EXPECT_READ("{'descr': '<f4', 'fortran_order': False}", 8, VT_EFORMAT,
                "missing key 'shape'");
    EXPECT_READ("{'descr': '<f4', 'shape': (2,)}", 8, VT_EFORMAT, "missing key 'fortran_order'");
    EXPECT_READ("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'shape': (2,)}", 8,
                VT_EFORMAT, "duplicate key 'shape'");
    EXPECT_READ("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}", 8,
                VT_EFORMAT, "unexpected key 'x'");
    EXPECT_READ("{'descr': '<f4', 'fortran_order': False, 'shape': (2,)} x", 8, VT_EFORMAT,
                "after the dict");
    /* accepted spellings: other order, double quotes, odd spacing, no trailing comma, 3L */
    EXPECT_READ("{\"shape\" :( 2 ,3 ) ,\"fortran_order\":False,\"descr\":\"<f4\"}", 24, VT_OK,
                NULL);
    EXPECT_READ("{'descr': '<f4', 'fortran_order': False, 'shape': (2L, 3L), }\n", 24, VT_OK,
                NULL);
    EXPECT_READ("{'descr':'<f4','fortran_order':False,'shape':(0,)}\r\n\t ", 0, VT_OK, NULL);

    /* The preamble: magic, version, header length. */
    size_t len;
    float *data = NULL;
    int nd;
    int64_t sh[NPY_MAX_DIMS];
    static const char ok1[] = "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }\n";
    uint8_t *b = mknpy(1, 0, ok1, NULL, 4, &len);
    b[1] = 'n';
    write_file(scratch, b, len);
    CHECK_ST(npy_read_f32(scratch, &data, &nd, sh, err, sizeof err), VT_EFORMAT);
    CHECK(data == NULL && strstr(err, "magic"));
    b[1] = 'N';
    b[6] = 4;
    write_file(scratch, b, len);
    CHECK_ST(npy_read_f32(scratch, &data, &nd, sh, err, sizeof err), VT_EUNSUPPORTED);
    b[6] = 1;
    b[7] = 1;
    write_file(scratch, b, len);
    CHECK_ST(npy_read_f32(scratch, &data, &nd, sh, err, sizeof err), VT_EUNSUPPORTED);
    b[7] = 0;
    b[8] = 0xff; /* header length past the end */
    write_file(scratch, b, len);
    CHECK_ST(npy_read_f32(scratch, &data, &nd, sh, err, sizeof err), VT_EFORMAT);
    CHECK(strstr(err, "past the end") != NULL);
    write_file(scratch, b, 7);
    CHECK_ST(npy_read_f32(scratch, &data, &nd, sh, err, sizeof err), VT_EFORMAT);
    free(b);
    b = mknpy(2, 0, ok1, NULL, 4, &len);
    b[11] = 0x7f; /* a 2 GB v2 header */
    write_file(scratch, b, len);
    CHECK_ST(npy_read_f32(scratch, &data, &nd, sh, err, sizeof err), VT_ELIMIT);
    write_file(scratch, b, 11); /* v2 preamble cut inside the 4-byte length */
    CHECK_ST(npy_read_f32(scratch, &data, &nd, sh, err, sizeof err), VT_EFORMAT);
    free(b);

    char path[160];
    snprintf(path, sizeof path, "%s/missing.npy", tmpdir);
    CHECK_ST(npy_read_f32(path, &data, &nd, sh, err, sizeof err), VT_EIO);
    CHECK(strstr(err, path) != NULL);
    CHECK_ST(npy_read_f32(tmpdir, &data, &nd, sh, err, sizeof err), VT_EIO);
    unlink(scratch);
}

/* Every proper prefix of a valid file is rejected; the whole file reads. */
static void test_truncation(void)
{
    float x[12];
    for (int i = 0; i < 12; i++) x[i] = (float)i;
    int64_t s[2] = {3, 4};
    char path[160];
    snprintf(path, sizeof path, "%s/full.npy", tmpdir);
    CHECK_ST(npy_write_f32(path, x, 2, s, err, sizeof err), VT_OK);
    size_t len;
    uint8_t *full = read_all(path, &len);
    CHECK(full && len == 128 + sizeof x); /* 70 bytes of preamble and dict pad to 128 */
    int wrong = 0;
    for (size_t n = 0; full && n <= len; n++) {
        write_file(scratch, full, n);
        float *y = NULL;
        int nd;
        int64_t sh[NPY_MAX_DIMS];
        vt_status st = npy_read_f32(scratch, &y, &nd, sh, err, sizeof err);
        if ((n < len && (st == VT_OK || y)) || (n == len && (st != VT_OK || memcmp(y, x, 48)))) {
            if (!wrong) fprintf(stderr, "truncation to %zu of %zu: %s\n", n, len, err);
            wrong++;
        }
        free(y);
    }
    CHECK(wrong == 0);
    free(full);
    unlink(path);
    unlink(scratch);
}

static uint64_t rng = 0x2545f4914f6cdd1du;
static uint64_t next_rand(void) /* xorshift64: fixed seed, same mutations every run */
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* Mutates a valid file; any status is fine, but nothing may crash and an accepted file must
 * describe exactly the bytes it holds. */
static void test_mutation(void)
{
    static const char hdr[] = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"
                              "    \n";
    static const char interesting[] = "{}()',:-0123456789L <>f84TrueFals\n\0\xff";
    size_t len;
    uint8_t *base = mknpy(1, 0, hdr, NULL, 24, &len);
    int accepted = 0, broken = 0;
    enum { ITERS = 3000 };
    for (int it = 0; it < ITERS; it++) {
        size_t n = len;
        if (next_rand() % 8 == 0) n = (size_t)(next_rand() % (len + 16));
        uint8_t *b = malloc(n ? n : 1);
        for (size_t i = 0; i < n; i++) b[i] = i < len ? base[i] : (uint8_t)next_rand();
        int edits = 1 + (int)(next_rand() % 3);
        for (int e = 0; e < edits && n > 0; e++) {
            uint64_t r = next_rand();
            size_t pos = (size_t)((r >> 8) % (r % 10 < 8 ? 10 + sizeof hdr : n));
            if (pos >= n) pos = n - 1;
            switch ((r >> 40) % 3) {
            case 0: b[pos] = (uint8_t)(r >> 48); break;
            case 1: b[pos] ^= (uint8_t)(1u << ((r >> 48) % 8)); break;
            default: b[pos] = (uint8_t)interesting[(r >> 48) % (sizeof interesting - 1)];
            }
        }
        write_file(scratch, b, n);
        float *y = NULL;
        int nd = -1;
        int64_t sh[NPY_MAX_DIMS];
        vt_status s = npy_read_f32(scratch, &y, &nd, sh, err, sizeof err);
        if (s == VT_OK) {
            accepted++;
            uint64_t numel = 1;
            for (int i = 0; i < nd; i++) numel *= (uint64_t)sh[i];
            size_t hl = (size_t)(b[8] | b[9] << 8); /* v1 and v2/v3 differ: size bound only */
            if (!y || nd < 0 || nd > NPY_MAX_DIMS || numel * 4 > n || hl > n) broken++;
            for (uint64_t i = 0; y && i < numel; i++) {
                volatile float v = y[i]; /* touch every element (ASan) */
                (void)v;
            }
        } else if (y) {
            broken++;
        }
        free(y);
        free(b);
    }
    printf("mutation: %d files, %d accepted, %d invariant violations\n", ITERS, accepted,
           broken);
    CHECK(broken == 0);
    CHECK(accepted > 0 && accepted < ITERS);
    free(base);
    unlink(scratch);
}

/* Same guarantees as the safetensors writer (both go through fs_write_atomic). */
static void test_atomic_save(void)
{
    char path[160], sub[160];
    snprintf(path, sizeof path, "%s/a.npy", tmpdir);
    snprintf(sub, sizeof sub, "%s/sub", tmpdir);
    CHECK(mkdir(sub, 0755) == 0);
    float x[3] = {1, 2, 3}, z[2] = {9, 8};
    int64_t s3[1] = {3}, s2[1] = {2};
    CHECK_ST(npy_write_f32(path, x, 1, s3, err, sizeof err), VT_OK);
    CHECK_ST(npy_write_f32(path, z, 1, s2, err, sizeof err), VT_OK); /* replaces */
    float *y = NULL;
    int nd;
    int64_t sh[NPY_MAX_DIMS];
    CHECK_ST(npy_read_f32(path, &y, &nd, sh, err, sizeof err), VT_OK);
    CHECK(y && nd == 1 && sh[0] == 2 && y[0] == 9 && y[1] == 8);
    free(y);
    struct stat st;
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0644);
    CHECK(count_temp_files(tmpdir) == 0);

    size_t oldlen, nowlen;
    uint8_t *old = read_all(path, &oldlen);
    float *big = calloc(1 << 16, sizeof *big);
    int64_t sbig[1] = {1 << 16};
    struct rlimit saved, lim;
    getrlimit(RLIMIT_FSIZE, &saved);
    lim = saved;
    lim.rlim_cur = 4096;
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN); /* EFBIG instead of death */
    CHECK(setrlimit(RLIMIT_FSIZE, &lim) == 0);
    CHECK_ST(npy_write_f32(path, big, 1, sbig, err, sizeof err), VT_EIO);
    setrlimit(RLIMIT_FSIZE, &saved);
    signal(SIGXFSZ, prev);
    uint8_t *now = read_all(path, &nowlen);
    CHECK(old && now && nowlen == oldlen && !memcmp(now, old, oldlen));
    CHECK(count_temp_files(tmpdir) == 0);
    free(now);
    free(old);
    free(big);

    char bad[192];
    snprintf(bad, sizeof bad, "%s/nodir/a.npy", tmpdir);
    CHECK_ST(npy_write_f32(bad, x, 1, s3, err, sizeof err), VT_EIO);
    CHECK(access(bad, F_OK) != 0);
    CHECK_ST(npy_write_f32(sub, x, 1, s3, err, sizeof err), VT_EIO); /* path is a directory */
    CHECK(stat(sub, &st) == 0 && S_ISDIR(st.st_mode));
    CHECK(count_temp_files(tmpdir) == 0);
    rmdir(sub);
    unlink(path);
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_npy.XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(scratch, sizeof scratch, "%s/x.npy", tmpdir);
    test_round_trip();
    test_versions_and_f8();
    test_rejections();
    test_truncation();
    test_mutation();
    test_atomic_save();
    unlink(scratch);
    if (rmdir(tmpdir) != 0) {
        fprintf(stderr, "leftover files in %s: %s\n", tmpdir, strerror(errno));
        failures++;
    }
    if (failures) {
        printf("test_npy: %d of %d checks FAILED\n", failures, checks);
        return 1;
    }
    printf("test_npy: %d checks passed\n", checks);
    return 0;
}
