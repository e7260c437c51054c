/* test_safetensors.c - tests of the safetensors reader and atomic writer (engine/safetensors.h):
 * writer->reader round trips, F16/BF16 conversion against known bit patterns (and all 65,536
 * halves against an ldexp oracle), one hand-made file per validation rule, every truncation
 * of a valid file, a fixed-seed mutation loop that must never crash, and the atomic-save
 * guarantees (old file intact and no temporary left behind when a save fails).
 * Exits non-zero on any failure; the last line is "test_safetensors: N checks passed".
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

#include "safetensors.h"

static int checks, failures;

#define CHECK(c)                                                                          \
    do {                                                                                  \
        checks++;                                                                         \
        if (!(c)) {                                                                       \
            failures++;                                                                   \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c);         \
        }                                                                                 \
    } while (0)

/* Checks a status; on mismatch prints both and the error detail in `err`. */
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

/* ---- building files by hand ---- */

static void put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* A file whose header is json with every ' turned into " (keeps the C literals readable),
 * followed by datalen bytes of data (a byte pattern when data is NULL). Exact-size malloc,
 * so ASan sees any read past the end. */
static uint8_t *mkfile(const char *json, const void *data, size_t datalen, size_t *len)
{
    size_t n = strlen(json);
    *len = 8 + n + datalen;
    uint8_t *buf = malloc(*len);
    put_le64(buf, n);
    for (size_t i = 0; i < n; i++) buf[8 + i] = json[i] == '\'' ? '"' : (uint8_t)json[i];
    for (size_t i = 0; i < datalen; i++)
        buf[8 + n + i] = data ? ((const uint8_t *)data)[i] : (uint8_t)(i * 7 + 1);
    return buf;
}

/* Opens a hand-made file and checks the status and that the detail contains substr. */
static void expect_open(const char *file, int line, const char *json, size_t datalen,
                        vt_status want, const char *substr)
{
    size_t len;
    uint8_t *buf = mkfile(json, NULL, datalen, &len);
    st_file *f = (st_file *)buf; /* must be overwritten */
    char e[512] = "";
    vt_status s = st_open_mem(buf, len, &f, e, sizeof e);
    checks++;
    if (s != want || (substr && !strstr(e, substr)) || ((s == VT_OK) != (f != NULL))) {
        failures++;
        fprintf(stderr, "%s:%d: st_open_mem gave '%s' (want '%s'), err \"%s\" (want \"%s\")\n",
                file, line, vt_status_str(s), vt_status_str(want), e, substr ? substr : "");
    }
    st_close(f);
    free(buf);
}
#define EXPECT_OPEN(json, datalen, want, substr) \
    expect_open(__FILE__, __LINE__, json, datalen, want, substr)

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

static int same_bits(float a, float b)
{
    return memcmp(&a, &b, sizeof a) == 0;
}

/* ---- tests ---- */

static void test_validation(void)
{
    /* Header length: past EOF, over the cap, enormous, zero. */
    {
        uint8_t buf[8 + 20];
        memset(buf, ' ', sizeof buf);
        buf[8] = '{';
        buf[9] = '}';
        st_file *f;
        put_le64(buf, 100);
        CHECK_ST(st_open_mem(buf, sizeof buf, &f, err, sizeof err), VT_EFORMAT);
        CHECK(f == NULL && strstr(err, "past the end"));
        put_le64(buf, (uint64_t)ST_MAX_HEADER + 1);
        CHECK_ST(st_open_mem(buf, sizeof buf, &f, err, sizeof err), VT_ELIMIT);
        put_le64(buf, UINT64_MAX);
        CHECK_ST(st_open_mem(buf, sizeof buf, &f, err, sizeof err), VT_ELIMIT);
        put_le64(buf, UINT64_MAX - 7); /* 8 + N wraps to 0 */
        CHECK_ST(st_open_mem(buf, sizeof buf, &f, err, sizeof err), VT_ELIMIT);
        put_le64(buf, 0);
        CHECK_ST(st_open_mem(buf, sizeof buf, &f, err, sizeof err), VT_EFORMAT);
        put_le64(buf, 20);
        CHECK_ST(st_open_mem(buf, sizeof buf, &f, err, sizeof err), VT_OK); /* "{}" + spaces */
        CHECK(st_count(f) == 0 && st_meta_count(f) == 0);
        st_close(f);
        CHECK_ST(st_open_mem(buf, 7, &f, err, sizeof err), VT_EFORMAT);
        CHECK_ST(st_open_mem(NULL, 0, &f, err, sizeof err), VT_EFORMAT);
        buf[8 + 5] = 0; /* a NUL inside the padding */
        CHECK_ST(st_open_mem(buf, sizeof buf, &f, err, sizeof err), VT_EFORMAT);
        CHECK(strstr(err, "NUL") != NULL);
    }

    EXPECT_OPEN(" {}", 0, VT_EFORMAT, "'{'");
    EXPECT_OPEN("[]", 0, VT_EFORMAT, "'{'");
    EXPECT_OPEN("{'a':", 0, VT_EFORMAT, "not valid JSON");
    EXPECT_OPEN("{} x", 0, VT_EFORMAT, "not valid JSON");
    EXPECT_OPEN("{'a':{'dtype':'U8','shape':[1],'data_offsets':[0,1]},"
                "'a':{'dtype':'U8','shape':[1],'data_offsets':[1,2]}}", 2, VT_EFORMAT,
                "duplicate");
    /* __metadata__ */
    EXPECT_OPEN("{'__metadata__':{'a':1}}", 0, VT_EFORMAT, "__metadata__ 'a'");
    EXPECT_OPEN("{'__metadata__':{'a':null}}", 0, VT_EFORMAT, "__metadata__ 'a'");
    EXPECT_OPEN("{'__metadata__':'x'}", 0, VT_EFORMAT, "__metadata__");
    EXPECT_OPEN("{'__metadata__':{'a':'b'},'__metadata__':{}}", 0, VT_EFORMAT, "duplicate");
    /* entry fields */
    EXPECT_OPEN("{'t':1}", 0, VT_EFORMAT, "tensor 't': entry is not");
    EXPECT_OPEN("{'t':{'shape':[1],'data_offsets':[0,4]}}", 4, VT_EFORMAT,
                "tensor 't': missing field 'dtype'");
    EXPECT_OPEN("{'t':{'dtype':'F32','data_offsets':[0,4]}}", 4, VT_EFORMAT,
                "missing field 'shape'");
    EXPECT_OPEN("{'t':{'dtype':'F32','shape':[1]}}", 4, VT_EFORMAT,
                "missing field 'data_offsets'");
    EXPECT_OPEN("{'t':{'dtype':'F32','shape':[1],'data_offsets':[0,4],'x':1}}", 4, VT_EFORMAT,
                "unexpected field 'x'");
    EXPECT_OPEN("{'t':{'dtype':'F8_E4M3','shape':[1],'data_offsets':[0,1]}}", 1,
                VT_EUNSUPPORTED, "unknown dtype 'F8_E4M3'");
    EXPECT_OPEN("{'t':{'dtype':'f32','shape':[1],'data_offsets':[0,4]}}", 4, VT_EUNSUPPORTED,
                "unknown dtype");
    EXPECT_OPEN("{'t':{'dtype':4,'shape':[1],'data_offsets':[0,4]}}", 4, VT_EFORMAT,
                "dtype is not a string");
    /* shape */
    EXPECT_OPEN("{'t':{'dtype':'F32','shape':[-1],'data_offsets':[0,4]}}", 4, VT_EFORMAT,
                "negative");
    EXPECT_OPEN("{'t':{'dtype':'F32','shape':[1.0],'data_offsets':[0,4]}}", 4, VT_EFORMAT,
                "shape[0] is not an integer");
    EXPECT_OPEN("{'t':{'dtype':'F32','shape':4,'data_offsets':[0,4]}}", 4, VT_EFORMAT,
                "shape is not an array");
    EXPECT_OPEN("{'t':{'dtype':'U8','shape':[1,1,1,1,1,1,1,1,1],'data_offsets':[0,1]}}", 1,
                VT_EUNSUPPORTED, "9 dimensions");
    EXPECT_OPEN("{'t':{'dtype':'U8','shape':[1,1,1,1,1,1,1,1],'data_offsets':[0,1]}}", 1,
                VT_OK, NULL);
    EXPECT_OPEN("{'t':{'dtype':'F32','shape':[4611686018427387904,8],'data_offsets':[0,4]}}",
                4, VT_EFORMAT, "overflows");
    EXPECT_OPEN("{'t':{'dtype':'F32','shape':[4611686018427387904,1],'data_offsets':[0,4]}}",
                4, VT_EFORMAT, "overflows"); /* numel fits, bytes do not */
    EXPECT_OPEN("{'t':{'dtype':'F32','shape':[99999999999999999999],'data_offsets':[0,4]}}",
                4, VT_EFORMAT, "not valid JSON"); /* past int64: jansson refuses */
    /* offsets */
    EXPECT_OPEN("{'t':{'dtype':'F32','shape':[1],'data_offsets':[4,0]}}", 4, VT_EFORMAT,
                "end before they begin");
    EXPECT_OPEN("{'t':{'dtype':'F32','shape':[1],'data_offsets':[-4,0]}}", 4, VT_EFORMAT,
                "negative");
    EXPECT_OPEN("{'t':{'dtype':'F32','shape':[1],'data_offsets':[0,4,8]}}", 4, VT_EFORMAT,
                "two integers");
    EXPECT_OPEN("{'t':{'dtype':'F32','shape':[1],'data_offsets':[0,'4']}}", 4, VT_EFORMAT,
                "two integers");
    EXPECT_OPEN("{'t':{'dtype':'F32','shape':[2],'data_offsets':[0,8]}}", 4, VT_EFORMAT,
                "tensor 't': data_offsets [0, 8] run past the data area of 4 bytes");
    EXPECT_OPEN("{'t':{'dtype':'F32','shape':[1],'data_offsets':[4,8]}}", 4, VT_EFORMAT,
                "run past");
    EXPECT_OPEN("{'blocks.0.attn.qkv.weight':{'dtype':'F32','shape':[3,4],"
                "'data_offsets':[0,100]}}", 100, VT_EFORMAT,
                "tensor 'blocks.0.attn.qkv.weight': data_offsets [0, 100] hold 100 bytes, "
                "shape [3, 4] F32 needs 48");
    /* tiling */
    EXPECT_OPEN("{'a':{'dtype':'F32','shape':[1],'data_offsets':[0,4]},"
                "'b':{'dtype':'F32','shape':[1],'data_offsets':[8,12]}}", 12, VT_EFORMAT,
                "hole: bytes [4, 8) before tensor 'b'");
    EXPECT_OPEN("{'a':{'dtype':'F32','shape':[1],'data_offsets':[4,8]}}", 8, VT_EFORMAT,
                "hole: bytes [0, 4)");
    EXPECT_OPEN("{'a':{'dtype':'U8','shape':[1],'data_offsets':[0,1]},"
                "'b':{'dtype':'U8','shape':[1],'data_offsets':[2,3]}}", 3, VT_EFORMAT,
                "hole: bytes [1, 2)");
    EXPECT_OPEN("{'a':{'dtype':'F32','shape':[2],'data_offsets':[0,8]},"
                "'b':{'dtype':'F32','shape':[2],'data_offsets':[4,12]}}", 12, VT_EFORMAT,
                "overlap tensor 'a'");
    EXPECT_OPEN("{'a':{'dtype':'F32','shape':[2],'data_offsets':[0,8]},"
                "'b':{'dtype':'F32','shape':[2],'data_offsets':[0,8]}}", 8, VT_EFORMAT,
                "overlap");
    EXPECT_OPEN("{'a':{'dtype':'F32','shape':[1],'data_offsets':[0,4]}}", 8, VT_EFORMAT,
                "trailing");
    EXPECT_OPEN("{}", 3, VT_EFORMAT, "trailing");
    EXPECT_OPEN("{'__metadata__':{'k':'v'}}", 1, VT_EFORMAT, "trailing");
    /* valid corner cases: out-of-order entries, 0-rank, empty tensors sharing an offset */
    EXPECT_OPEN("{'b':{'dtype':'F32','shape':[1],'data_offsets':[4,8]},"
                "'a':{'dtype':'F32','shape':[],'data_offsets':[0,4]},"
                "'e':{'dtype':'F32','shape':[0,3],'data_offsets':[4,4]},"
                "'z':{'dtype':'BOOL','shape':[0],'data_offsets':[4,4]},"
                "'c':{'dtype':'I64','shape':[1],'data_offsets':[8,16]}}    ", 16, VT_OK, NULL);
    EXPECT_OPEN("{}\n\t ", 0, VT_OK, NULL);
}

static void test_accessors(void)
{
    static const char json[] =
        "{'__metadata__':{'format':'pt','epoch':'3'},"
        "'w':{'dtype':'F32','shape':[2,3],'data_offsets':[0,24]},"
        "'a':{'dtype':'I32','shape':[2],'data_offsets':[24,32]},"
        "'s':{'dtype':'F64','shape':[],'data_offsets':[32,40]}}";
    float w[6] = {1, -2, 3.5f, 0, 1e-30f, -7};
    uint8_t data[40] = {0};
    memcpy(data, w, sizeof w);
    size_t len;
    uint8_t *buf = mkfile(json, data, sizeof data, &len);
    st_file *f = NULL;
    CHECK_ST(st_open_mem(buf, len, &f, err, sizeof err), VT_OK);
    if (!f) {
        free(buf);
        return;
    }
    CHECK(st_count(f) == 3);
    CHECK(!strcmp(st_at(f, 0)->name, "w") && !strcmp(st_at(f, 1)->name, "a") &&
          !strcmp(st_at(f, 2)->name, "s")); /* header order, not sorted */
    CHECK(st_at(f, 3) == NULL && st_at(f, -1) == NULL);
    const st_tensor *t = st_find(f, "w");
    CHECK(t == st_at(f, 0));
    CHECK(st_find(f, "a") == st_at(f, 1) && st_find(f, "s") == st_at(f, 2));
    CHECK(st_find(f, "x") == NULL && st_find(f, "__metadata__") == NULL);
    CHECK(t->dtype == ST_F32 && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3 &&
          t->numel == 6 && t->begin == 0 && t->end == 24);
    CHECK(st_find(f, "s")->ndim == 0 && st_find(f, "s")->numel == 1);
    CHECK(st_data(f, t) == buf + 8 + strlen(json));
    CHECK(!strcmp(st_meta(f, "format"), "pt") && !strcmp(st_meta(f, "epoch"), "3"));
    CHECK(st_meta(f, "nope") == NULL && st_meta_count(f) == 2);
    const char *k, *v;
    st_meta_at(f, 1, &k, &v);
    CHECK(!strcmp(k, "epoch") && !strcmp(v, "3"));
    st_meta_at(f, 2, &k, &v);
    CHECK(k == NULL && v == NULL);
    CHECK(!strcmp(st_dtype_name(ST_BF16), "BF16") && st_dtype_size(ST_BF16) == 2);
    CHECK(st_dtype_size(ST_F64) == 8 && st_dtype_size(ST_BOOL) == 1);

    float out[7];
    CHECK_ST(st_read_f32(f, t, out, 7, err, sizeof err), VT_OK);
    CHECK(!memcmp(out, w, sizeof w));
    CHECK_ST(st_read_f32(f, t, out, 5, err, sizeof err), VT_EINVAL);
    CHECK_ST(st_read_f32(f, st_find(f, "a"), out, 7, err, sizeof err), VT_EUNSUPPORTED);
    CHECK_ST(st_read_f32(f, st_find(f, "s"), out, 7, err, sizeof err), VT_EUNSUPPORTED);
    st_tensor bad = *t; /* a forged tensor must not read outside the data area */
    bad.end = 1000;
    bad.numel = 250;
    CHECK_ST(st_read_f32(f, &bad, out, 7, err, sizeof err), VT_EINVAL);
    CHECK(st_data(f, &bad) == NULL);
    st_close(f);
    free(buf);
    st_close(NULL);
    st_writer_free(NULL);
}

/* Reference half -> float by the definition, independent of the bit-twiddling in the
 * reader: (-1)^s * 2^(e-15) * (1 + m/1024), or 2^-14 * m/1024 for e = 0. */
static float half_oracle(uint16_t h)
{
    int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    float v;
    if (e == 31) v = m ? NAN : INFINITY;
    else if (e == 0) v = ldexpf((float)m, -24);
    else v = ldexpf((float)(1024 + m), e - 25);
    return s ? -v : v;
}

static void test_half_bf16(void)
{
    static const uint16_t hv[] = {0x3C00, 0xC000, 0x7C00, 0xFC00, 0x0001, 0x8000, 0x0000,
                                  0x03FF, 0x0400, 0x7BFF, 0x3555, 0x7E00, 0x8001};
    static const uint16_t bv[] = {0x3F80, 0xC040, 0x7F80, 0xFF80, 0x0001, 0x8000, 0x4049,
                                  0x7FC0};
    enum { NH = sizeof hv / 2, NB = sizeof bv / 2 };
    /* A leading U8 byte puts both tensors at odd addresses: the reader must not assume
     * alignment (UBSan would flag a misaligned load). */
    uint8_t data[1 + 2 * NH + 2 * NB];
    data[0] = 42;
    for (int i = 0; i < NH; i++) {
        data[1 + 2 * i] = (uint8_t)hv[i];
        data[2 + 2 * i] = (uint8_t)(hv[i] >> 8);
    }
    for (int i = 0; i < NB; i++) {
        data[1 + 2 * NH + 2 * i] = (uint8_t)bv[i];
        data[2 + 2 * NH + 2 * i] = (uint8_t)(bv[i] >> 8);
    }
    char json[512];
    snprintf(json, sizeof json,
             "{'u':{'dtype':'U8','shape':[1],'data_offsets':[0,1]},"
             "'h':{'dtype':'F16','shape':[%d],'data_offsets':[1,%d]},"
             "'b':{'dtype':'BF16','shape':[%d],'data_offsets':[%d,%d]}}",
             NH, 1 + 2 * NH, NB, 1 + 2 * NH, 1 + 2 * NH + 2 * NB);
    size_t len;
    uint8_t *buf = mkfile(json, data, sizeof data, &len);
    st_file *f = NULL;
    CHECK_ST(st_open_mem(buf, len, &f, err, sizeof err), VT_OK);
    if (f) {
        float h[NH], b[NB];
        CHECK_ST(st_read_f32(f, st_find(f, "h"), h, NH, err, sizeof err), VT_OK);
        CHECK(h[0] == 1.0f);
        CHECK(h[1] == -2.0f);
        CHECK(isinf(h[2]) && h[2] > 0);
        CHECK(isinf(h[3]) && h[3] < 0);
        CHECK(h[4] == 5.96046448e-08f && h[4] == ldexpf(1, -24)); /* smallest subnormal */
        CHECK(h[5] == 0 && signbit(h[5]));                          /* -0 keeps its sign */
        CHECK(h[6] == 0 && !signbit(h[6]));
        CHECK(h[7] == 6.09755516e-05f); /* largest subnormal, 1023 * 2^-24 */
        CHECK(h[8] == 6.10351562e-05f); /* smallest normal, 2^-14 */
        CHECK(h[9] == 65504.0f);        /* largest finite half */
        CHECK(h[10] == 0.333251953125f);
        CHECK(isnan(h[11]));
        CHECK(h[12] == -5.96046448e-08f);
        CHECK_ST(st_read_f32(f, st_find(f, "b"), b, NB, err, sizeof err), VT_OK);
        CHECK(b[0] == 1.0f);
        CHECK(b[1] == -3.0f);
        CHECK(isinf(b[2]) && b[2] > 0);
        CHECK(isinf(b[3]) && b[3] < 0);
        CHECK(b[4] == ldexpf(1, -133)); /* smallest bf16 subnormal, 9.18354962e-41 */
        CHECK(b[5] == 0 && signbit(b[5]));
        CHECK(b[6] == 3.140625f);
        CHECK(isnan(b[7]));
        st_close(f);
    }
    free(buf);

    /* Every half, against the oracle, bit for bit (NaNs: still NaN, same sign). */
    uint8_t *all = malloc(2 * 65536);
    for (int i = 0; i < 65536; i++) {
        all[2 * i] = (uint8_t)i;
        all[2 * i + 1] = (uint8_t)(i >> 8);
    }
    buf = mkfile("{'h':{'dtype':'F16','shape':[256,256],'data_offsets':[0,131072]}}", all,
                 2 * 65536, &len);
    float *out = malloc(65536 * sizeof *out);
    CHECK_ST(st_open_mem(buf, len, &f, err, sizeof err), VT_OK);
    if (f) {
        CHECK_ST(st_read_f32(f, st_find(f, "h"), out, 65536, err, sizeof err), VT_OK);
        int bad = -1;
        for (int i = 0; i < 65536 && bad < 0; i++) {
            float want = half_oracle((uint16_t)i);
            int ok = isnan(want) ? isnan(out[i]) && signbit(out[i]) == signbit(want)
                                 : same_bits(out[i], want);
            if (!ok) bad = i;
        }
        if (bad >= 0)
            fprintf(stderr, "half 0x%04x -> %.9g, want %.9g\n", bad, out[bad],
                    half_oracle((uint16_t)bad));
        CHECK(bad < 0);
        st_close(f);
    }
    free(out);
    free(all);
    free(buf);
}

/* The round-trip file used by several tests: written by st_writer, read back. */
static float rt_a[6] = {1.5f, -2.25f, 0.0f, 3e38f, 1e-45f, -0.0f};
static float rt_s[1] = {42.0f};
static float rt_d[4];

static vt_status write_rt(const char *path, int with_meta)
{
    rt_d[0] = INFINITY;
    rt_d[1] = -INFINITY;
    rt_d[2] = NAN;
    rt_d[3] = 0.1f;
    st_writer *w = st_writer_new();
    if (!w) return VT_ENOMEM;
    int64_t sa[2] = {2, 3}, sc[2] = {0, 5}, sd[1] = {4};
    vt_status s = VT_OK;
    if (s == VT_OK) s = st_writer_add_f32(w, "z.first", rt_a, 2, sa);
    if (s == VT_OK) s = st_writer_add_f32(w, "a.scalar", rt_s, 0, NULL);
    if (s == VT_OK) s = st_writer_add_f32(w, "m.empty", NULL, 2, sc);
    if (s == VT_OK) s = st_writer_add_f32(w, "blocks.0.attn.qkv.weight", rt_d, 1, sd);
    if (s == VT_OK && with_meta) s = st_writer_meta(w, "format", "pt");
    if (s == VT_OK && with_meta) s = st_writer_meta(w, "note", "h\xc3\xa9 \"quoted\" \\ \n");
    if (s == VT_OK) s = st_writer_save(w, path, err, sizeof err);
    st_writer_free(w);
    return s;
}

static void test_round_trip(void)
{
    char path[128];
    snprintf(path, sizeof path, "%s/rt.safetensors", tmpdir);
    CHECK_ST(write_rt(path, 1), VT_OK);
    st_file *f = NULL;
    CHECK_ST(st_open(path, &f, err, sizeof err), VT_OK);
    if (!f) return;
    CHECK(st_count(f) == 4);
    static const char *names[] = {"z.first", "a.scalar", "m.empty", "blocks.0.attn.qkv.weight"};
    for (int i = 0; i < 4 && i < st_count(f); i++) {
        CHECK(!strcmp(st_at(f, i)->name, names[i])); /* in the order added */
        CHECK(st_find(f, names[i]) == st_at(f, i));
        CHECK(st_at(f, i)->dtype == ST_F32);
    }
    const st_tensor *t = st_find(f, "z.first");
    float out[8];
    CHECK(t && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3 && t->numel == 6);
    CHECK(t && st_read_f32(f, t, out, 8, err, sizeof err) == VT_OK && !memcmp(out, rt_a, 24));
    t = st_find(f, "a.scalar");
    CHECK(t && t->ndim == 0 && t->numel == 1);
    CHECK(t && st_read_f32(f, t, out, 1, err, sizeof err) == VT_OK && out[0] == 42.0f);
    t = st_find(f, "m.empty");
    CHECK(t && t->ndim == 2 && t->shape[0] == 0 && t->shape[1] == 5 && t->numel == 0 &&
          t->begin == t->end);
    CHECK(t && st_read_f32(f, t, NULL, 0, err, sizeof err) == VT_OK);
    t = st_find(f, "blocks.0.attn.qkv.weight");
    CHECK(t && t->ndim == 1 && t->shape[0] == 4);
    CHECK(t && st_read_f32(f, t, out, 4, err, sizeof err) == VT_OK &&
          !memcmp(out, rt_d, sizeof rt_d)); /* inf, -inf, the same NaN bits */
    CHECK(st_meta_count(f) == 2);
    CHECK(st_meta(f, "format") && !strcmp(st_meta(f, "format"), "pt"));
    CHECK(st_meta(f, "note") && !strcmp(st_meta(f, "note"), "h\xc3\xa9 \"quoted\" \\ \n"));
    st_close(f);

    /* On-disk layout: 8 + N is a multiple of 8, the header is padded with spaces, and the
     * data area is exactly the tensors back to back. */
    size_t len;
    uint8_t *buf = read_all(path, &len);
    CHECK(buf && len >= 8);
    if (buf && len >= 8) {
        uint64_t n = 0;
        for (int i = 7; i >= 0; i--) n = n << 8 | buf[i];
        CHECK((8 + n) % 8 == 0);
        CHECK(8 + n + 4 * (6 + 1 + 0 + 4) == len);
        CHECK(buf[8] == '{');
        CHECK(n > 0 && n <= len - 8 && (buf[8 + n - 1] == ' ' || buf[8 + n - 1] == '}'));
        CHECK(memmem(buf, len, "__metadata__", 12) != NULL);
        CHECK(!memcmp(buf + 8 + n, rt_a, 24)); /* first added, first in the data area */
        /* The same bytes through st_open_mem. */
        CHECK_ST(st_open_mem(buf, len, &f, err, sizeof err), VT_OK);
        CHECK(st_count(f) == 4);
        st_close(f);
    }
    free(buf);

    /* No metadata set: no __metadata__ key at all. */
    CHECK_ST(write_rt(path, 0), VT_OK);
    buf = read_all(path, &len);
    CHECK(buf && memmem(buf, len, "__metadata__", 12) == NULL);
    free(buf);
    CHECK_ST(st_open(path, &f, err, sizeof err), VT_OK);
    CHECK(st_meta_count(f) == 0 && st_meta(f, "format") == NULL);
    st_close(f);
    unlink(path);
}

static void test_writer_rules(void)
{
    st_writer *w = st_writer_new();
    CHECK(w != NULL);
    if (!w) return;
    float x[4] = {1, 2, 3, 4};
    int64_t s4[1] = {4}, sneg[1] = {-1}, s9[9] = {1, 1, 1, 1, 1, 1, 1, 1, 4};
    int64_t sbig[2] = {INT64_MAX, 4};
    CHECK(st_writer_add_f32(w, "x", x, 1, s4) == VT_OK);
    CHECK(st_writer_add_f32(w, "x", x, 1, s4) == VT_EINVAL);          /* duplicate */
    CHECK(st_writer_add_f32(w, "__metadata__", x, 1, s4) == VT_EINVAL);
    CHECK(st_writer_add_f32(w, "neg", x, 1, sneg) == VT_EINVAL);
    CHECK(st_writer_add_f32(w, "nine", x, 9, s9) == VT_EINVAL);
    CHECK(st_writer_add_f32(w, "big", x, 2, sbig) == VT_EINVAL);
    CHECK(st_writer_add_f32(w, "null", NULL, 1, s4) == VT_EINVAL);
    CHECK(st_writer_add_f32(w, "bad\xff", x, 1, s4) == VT_EINVAL);  /* not UTF-8 */
    CHECK(st_writer_add_f32(NULL, "y", x, 1, s4) == VT_EINVAL);
    CHECK(st_writer_meta(w, "k", "one") == VT_OK);
    CHECK(st_writer_meta(w, "k", "two") == VT_OK); /* replaces */
    CHECK(st_writer_meta(w, "k2", "\xc0") == VT_EINVAL);

    char path[128];
    snprintf(path, sizeof path, "%s/rules.safetensors", tmpdir);
    CHECK_ST(st_writer_save(w, path, err, sizeof err), VT_OK);
    st_writer_free(w);
    st_file *f = NULL;
    CHECK_ST(st_open(path, &f, err, sizeof err), VT_OK);
    CHECK(st_count(f) == 1 && st_meta_count(f) == 1 && st_meta(f, "k") &&
          !strcmp(st_meta(f, "k"), "two"));
    st_close(f);
    unlink(path);

    /* An empty writer makes a valid empty file. */
    w = st_writer_new();
    CHECK_ST(st_writer_save(w, path, err, sizeof err), VT_OK);
    st_writer_free(w);
    CHECK_ST(st_open(path, &f, err, sizeof err), VT_OK);
    CHECK(st_count(f) == 0);
    st_close(f);
    unlink(path);

    /* Many tensors (more than one writev batch). */
    w = st_writer_new();
    float v[300];
    int64_t one[1] = {1};
    char name[32];
    int addbad = 0;
    for (int i = 0; i < 300; i++) {
        v[i] = (float)i * 0.5f;
        snprintf(name, sizeof name, "t%03d", i);
        if (st_writer_add_f32(w, name, &v[i], 1, one) != VT_OK) addbad++;
    }
    CHECK(addbad == 0);
    CHECK_ST(st_writer_save(w, path, err, sizeof err), VT_OK);
    st_writer_free(w);
    CHECK_ST(st_open(path, &f, err, sizeof err), VT_OK);
    int bad = f ? 0 : 1;
    for (int i = 0; f && i < 300; i++) {
        float got = -1;
        snprintf(name, sizeof name, "t%03d", i);
        const st_tensor *t = st_find(f, name);
        if (!t || st_read_f32(f, t, &got, 1, NULL, 0) != VT_OK || got != v[i] ||
            st_at(f, i) != t)
            bad++;
    }
    CHECK(bad == 0);
    st_close(f);
    unlink(path);
}

static void test_open_paths(void)
{
    char path[128];
    st_file *f = (st_file *)&f;
    snprintf(path, sizeof path, "%s/missing.safetensors", tmpdir);
    CHECK_ST(st_open(path, &f, err, sizeof err), VT_EIO);
    CHECK(f == NULL && strstr(err, path));
    CHECK_ST(st_open(tmpdir, &f, err, sizeof err), VT_EIO); /* a directory */
    snprintf(path, sizeof path, "%s/empty.safetensors", tmpdir);
    FILE *fp = fopen(path, "wb");
    fclose(fp);
    CHECK_ST(st_open(path, &f, err, sizeof err), VT_EFORMAT);
    fp = fopen(path, "wb");
    fwrite("\x02\0\0\0\0\0\0\0{}", 1, 10, fp);
    fclose(fp);
    CHECK_ST(st_open(path, &f, err, sizeof err), VT_OK);
    CHECK(f && st_count(f) == 0);
    st_close(f);
    unlink(path);
}

/* Every proper prefix of a valid file must be rejected without a crash or an over-read
 * (each prefix sits in an exact-size allocation for ASan); the whole file must open. */
static void test_truncation(void)
{
    char path[128];
    snprintf(path, sizeof path, "%s/trunc.safetensors", tmpdir);
    CHECK_ST(write_rt(path, 1), VT_OK);
    size_t len;
    uint8_t *full = read_all(path, &len);
    CHECK(full != NULL);
    if (!full) return;
    int wrong = 0;
    for (size_t n = 0; n <= len; n++) {
        uint8_t *b = malloc(n ? n : 1);
        memcpy(b, full, n);
        st_file *f = NULL;
        vt_status s = st_open_mem(b, n, &f, err, sizeof err);
        if ((n < len && (s == VT_OK || f)) || (n == len && s != VT_OK)) {
            if (!wrong) fprintf(stderr, "truncation to %zu of %zu: %s\n", n, len, err);
            wrong++;
        }
        st_close(f);
        free(b);
    }
    CHECK(wrong == 0);
    free(full);
    unlink(path);
}

static uint64_t rng = 0x9e3779b97f4a7c15u;
static uint64_t next_rand(void) /* xorshift64: fixed seed, same mutations every run */
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* Mutates a valid file thousands of times. Any status is fine; what must hold is no crash,
 * no over-read, and that anything accepted really satisfies the invariants. */
static void test_mutation(void)
{
    static const char json[] =
        "{'__metadata__':{'format':'pt','k':'v'},"
        "'h':{'dtype':'F16','shape':[2,2],'data_offsets':[0,8]},"
        "'b':{'dtype':'BF16','shape':[3],'data_offsets':[8,14]},"
        "'q':{'dtype':'I8','shape':[2],'data_offsets':[14,16]},"
        "'w':{'dtype':'F32','shape':[1,2,2],'data_offsets':[16,32]},"
        "'e':{'dtype':'F32','shape':[0],'data_offsets':[32,32]},"
        "'s':{'dtype':'F64','shape':[],'data_offsets':[32,40]}}  ";
    static const char interesting[] = "{}[]\",:-0123456789e. \\\0\xff";
    size_t len;
    uint8_t *base = mkfile(json, NULL, 40, &len);
    size_t hlen = strlen(json);
    st_file *f = NULL;
    CHECK_ST(st_open_mem(base, len, &f, err, sizeof err), VT_OK);
    st_close(f);

    int accepted = 0, broken = 0;
    enum { ITERS = 5000 };
    for (int it = 0; it < ITERS; it++) {
        size_t n = len;
        if (next_rand() % 8 == 0) n = (size_t)(next_rand() % (len + 16)); /* cut or extend */
        uint8_t *b = malloc(n ? n : 1);
        for (size_t i = 0; i < n; i++) b[i] = i < len ? base[i] : (uint8_t)next_rand();
        int edits = 1 + (int)(next_rand() % 4);
        for (int e = 0; e < edits && n > 0; e++) {
            uint64_t r = next_rand();
            /* Mostly the header: the data area is opaque bytes and rarely interesting. */
            size_t pos = r % 10 < 8 ? (size_t)((r >> 8) % (8 + hlen)) : (size_t)((r >> 8) % n);
            if (pos >= n) pos = n - 1;
            switch ((r >> 40) % 4) {
            case 0: b[pos] = (uint8_t)(r >> 48); break;
            case 1: b[pos] ^= (uint8_t)(1u << ((r >> 48) % 8)); break;
            case 2: b[pos] = (uint8_t)interesting[(r >> 48) % (sizeof interesting - 1)]; break;
            default: /* duplicate a run of bytes over another spot (shuffles tokens) */
                for (size_t k = 0, src = (size_t)((r >> 48) % n); k < 6 && pos + k < n &&
                                                                    src + k < n; k++)
                    b[pos + k] = b[src + k];
            }
        }
        vt_status s = st_open_mem(b, n, &f, err, sizeof err);
        if (s == VT_OK) {
            accepted++;
            /* Accepted means: tensors tile the data area and every float tensor reads. */
            uint64_t covered = 0, maxend = 0;
            for (int i = 0; i < st_count(f); i++) {
                const st_tensor *t = st_at(f, i);
                covered += t->end - t->begin;
                if (t->end > maxend) maxend = t->end;
                if (t->end - t->begin != t->numel * st_dtype_size(t->dtype) ||
                    !st_data(f, t) || (const uint8_t *)st_data(f, t) + (t->end - t->begin) >
                                          b + n)
                    broken++;
                if (t->dtype == ST_F32 || t->dtype == ST_F16 || t->dtype == ST_BF16) {
                    float *out = malloc(t->numel * sizeof(float) + 1);
                    if (st_read_f32(f, t, out, t->numel, err, sizeof err) != VT_OK) broken++;
                    free(out);
                }
            }
            if (covered != maxend) broken++;
            for (int i = 0; i < st_meta_count(f); i++) {
                const char *k, *v;
                st_meta_at(f, i, &k, &v);
                if (!k || !v || st_meta(f, k) == NULL) broken++;
            }
            st_close(f);
        } else if (f != NULL) {
            broken++;
        }
        free(b);
    }
    printf("mutation: %d files, %d accepted, %d invariant violations\n", ITERS, accepted,
           broken);
    CHECK(broken == 0);
    CHECK(accepted > 0 && accepted < ITERS); /* the loop exercised both paths */
    free(base);
}

/* The atomic-save guarantees. Runs as root in CI, where permission bits do not stop
 * writes, so failures are provoked with RLIMIT_FSIZE and with a directory at path. */
static void test_atomic_save(void)
{
    char path[128], sub[128];
    snprintf(path, sizeof path, "%s/model.safetensors", tmpdir);
    snprintf(sub, sizeof sub, "%s/sub", tmpdir);
    CHECK(mkdir(sub, 0755) == 0);

    /* New file: mode 0644, not mkstemp's 0600. */
    CHECK_ST(write_rt(path, 1), VT_OK);
    struct stat st;
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0644);

    /* Saving over an existing file replaces it and keeps its mode. */
    chmod(path, 0600);
    st_writer *w = st_writer_new();
    float v[3] = {7, 8, 9};
    int64_t s3[1] = {3};
    st_writer_add_f32(w, "new", v, 1, s3);
    CHECK_ST(st_writer_save(w, path, err, sizeof err), VT_OK);
    st_writer_free(w);
    st_file *f = NULL;
    CHECK_ST(st_open(path, &f, err, sizeof err), VT_OK);
    CHECK(f && st_count(f) == 1 && st_find(f, "new") && !st_find(f, "z.first"));
    st_close(f);
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
    CHECK(count_temp_files(tmpdir) == 0);

    size_t oldlen;
    uint8_t *old = read_all(path, &oldlen);

    /* A write that fails half way (file size limit): old file intact, no temporary. */
    float *big = calloc(1 << 16, sizeof *big);
    int64_t sbig[1] = {1 << 16};
    w = st_writer_new();
    st_writer_add_f32(w, "big", big, 1, sbig);
    struct rlimit saved, lim;
    getrlimit(RLIMIT_FSIZE, &saved);
    lim = saved;
    lim.rlim_cur = 4096;
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN); /* EFBIG instead of death */
    CHECK(setrlimit(RLIMIT_FSIZE, &lim) == 0);
    CHECK_ST(st_writer_save(w, path, err, sizeof err), VT_EIO);
    setrlimit(RLIMIT_FSIZE, &saved);
    signal(SIGXFSZ, prev);
    size_t nowlen;
    uint8_t *now = read_all(path, &nowlen);
    CHECK(now && nowlen == oldlen && !memcmp(now, old, oldlen));
    free(now);
    CHECK(count_temp_files(tmpdir) == 0);

    /* Path in a directory that does not exist: nothing is created anywhere. */
    char bad[160];
    snprintf(bad, sizeof bad, "%s/nodir/model.safetensors", tmpdir);
    CHECK_ST(st_writer_save(w, bad, err, sizeof err), VT_EIO);
    CHECK(access(bad, F_OK) != 0 && count_temp_files(tmpdir) == 0);

    /* Path is a directory: rename fails after the temporary was written; it is removed. */
    CHECK_ST(st_writer_save(w, sub, err, sizeof err), VT_EIO);
    CHECK(stat(sub, &st) == 0 && S_ISDIR(st.st_mode));
    CHECK(count_temp_files(tmpdir) == 0);

    /* A directory we may not write to (only meaningful when not root). */
    if (geteuid() != 0) {
        char ro[160];
        snprintf(ro, sizeof ro, "%s/model.safetensors", sub);
        CHECK_ST(write_rt(ro, 0), VT_OK);
        size_t l0, l1;
        uint8_t *b0 = read_all(ro, &l0);
        chmod(sub, 0555);
        CHECK_ST(st_writer_save(w, ro, err, sizeof err), VT_EIO);
        chmod(sub, 0755);
        uint8_t *b1 = read_all(ro, &l1);
        CHECK(b0 && b1 && l0 == l1 && !memcmp(b0, b1, l0));
        CHECK(count_temp_files(sub) == 0);
        free(b0);
        free(b1);
        unlink(ro);
    }
    st_writer_free(w);
    free(big);
    free(old);
    rmdir(sub);
    unlink(path);
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_safetensors.XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_validation();
    test_accessors();
    test_half_bf16();
    test_round_trip();
    test_writer_rules();
    test_open_paths();
    test_truncation();
    test_mutation();
    test_atomic_save();
    if (rmdir(tmpdir) != 0) {
        fprintf(stderr, "leftover files in %s: %s\n", tmpdir, strerror(errno));
        failures++;
    }
    if (failures) {
        printf("test_safetensors: %d of %d checks FAILED\n", failures, checks);
        return 1;
    }
    printf("test_safetensors: %d checks passed\n", checks);
    return 0;
}
