/* test_spool.c - tests of the streaming tar extractor (server/srv_spool.h).
 *
 * Archives are built in memory, header by header (ustar with a prefix, GNU long names and
 * base-256 sizes, pax path and size records, v7), and fed whole, one byte at a time and in
 * random chunk sizes; the spool folder must then hold exactly the image entries, byte for byte,
 * and the statistics must count what was ignored. Every hostile archive (links, devices,
 * escaping paths, bad checksums and sizes, limits, truncations, bodies that are not tars,
 * duplicates) must be refused with the expected status and a message naming the problem, and
 * leave nothing behind in the parent folder.
 *
 * `test_spool --extract ARCHIVE DIR [--chunk N] [--max-total N] [--max-entry N]
 * [--max-entries N]` runs the extractor on a file instead (tests/test_spool_tar.py uses it on
 * archives made by Python's tarfile and GNU tar): prints "ok images=I classes=C ignored=G
 * bytes=B" and exits 0, or prints "refused: <status>: <message>" and exits 1 (the folder is
 * then removed). --chunk 0 feeds random chunk sizes.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "srv_spool.h"

/* ---- archive builder --------------------------------------------------------------------- */

typedef struct { uint8_t *b; size_t n, cap; } tarbuf;

static void tb_put(tarbuf *t, const void *p, size_t n)
{
    if (t->n + n > t->cap) {
        t->cap = (t->n + n) * 2 + 4096;
        t->b = realloc(t->b, t->cap);
        if (!t->b) abort();
    }
    if (p) memcpy(t->b + t->n, p, n);
    else memset(t->b + t->n, 0, n);
    t->n += n;
}

static void tb_pad(tarbuf *t)
{
    if (t->n % 512) tb_put(t, NULL, 512 - t->n % 512);
}

enum { F_USTAR, F_GNU, F_V7 };

typedef struct {
    const char *name;
    char type;
    uint64_t size;
    int fmt;                /* F_* */
    const char *prefix;     /* ustar only */
    const char *link;
    int base256;            /* size in GNU base-256 */
    const char *size_field; /* raw 12 bytes instead of the size */
} hdr_spec;

static void set_checksum(uint8_t *h)
{
    memset(h + 148, ' ', 8);
    unsigned sum = 0;
    for (int i = 0; i < 512; i++) sum += h[i];
    char f[9];
    snprintf(f, sizeof f, "%06o", sum);
    memcpy(h + 148, f, 7); /* six digits, NUL, and the space already there */
}

/* Appends one header; returns its offset. */
static size_t tb_header(tarbuf *t, const hdr_spec *s)
{
    uint8_t h[512] = {0};
    memcpy(h, s->name, strlen(s->name) < 100 ? strlen(s->name) : 100);
    snprintf((char *)h + 100, 8, "%07o", 0644);
    snprintf((char *)h + 108, 8, "%07o", 1000);
    snprintf((char *)h + 116, 8, "%07o", 1000);
    if (s->size_field) {
        memcpy(h + 124, s->size_field, 12);
    } else if (s->base256) {
        h[124] = 0x80;
        for (int i = 0; i < 8; i++) h[135 - i] = (uint8_t)(s->size >> (8 * i));
    } else {
        char f[13];
        snprintf(f, sizeof f, "%011llo", (unsigned long long)s->size);
        memcpy(h + 124, f, 12);
    }
    snprintf((char *)h + 136, 12, "%011o", 1700000000);
    h[156] = (uint8_t)s->type;
    if (s->link) memcpy(h + 157, s->link, strlen(s->link) < 100 ? strlen(s->link) : 100);
    if (s->fmt == F_USTAR) {
        memcpy(h + 257, "ustar\0" "00", 8);
        if (s->prefix) memcpy(h + 345, s->prefix, strlen(s->prefix));
    } else if (s->fmt == F_GNU) {
        memcpy(h + 257, "ustar  \0", 8);
    }
    if (s->fmt != F_V7) {
        memcpy(h + 265, "user", 4);
        memcpy(h + 297, "group", 5);
    }
    set_checksum(h);
    size_t at = t->n;
    tb_put(t, h, 512);
    return at;
}

/* A regular file (or anything else with data) in format fmt. */
static void tb_file(tarbuf *t, int fmt, const char *name, const uint8_t *data, size_t n)
{
    tb_header(t, &(hdr_spec){.name = name, .type = fmt == F_V7 ? '\0' : '0', .size = n, .fmt = fmt});
    tb_put(t, data, n);
    tb_pad(t);
}

static void tb_typed(tarbuf *t, const char *name, char type, const char *link)
{
    tb_header(t, &(hdr_spec){.name = name, .type = type, .fmt = F_USTAR, .link = link});
}

/* One pax record "LEN key=value\n" appended to rec (LEN counts its own digits). */
static void pax_rec(tarbuf *rec, const char *key, const char *val, size_t vlen)
{
    size_t body = 1 + strlen(key) + 1 + vlen + 1, len = body + 1;
    for (;;) {
        char d[24];
        size_t l = body + (size_t)snprintf(d, sizeof d, "%zu", len);
        if (l == len) break;
        len = l;
    }
    char head[64];
    int hn = snprintf(head, sizeof head, "%zu %s=", len, key);
    tb_put(rec, head, (size_t)hn);
    tb_put(rec, val, vlen);
    tb_put(rec, "\n", 1);
}

static void tb_pax(tarbuf *t, char type, const tarbuf *rec)
{
    tb_header(t, &(hdr_spec){.name = "PaxHeaders/x", .type = type, .size = rec->n, .fmt = F_USTAR});
    tb_put(t, rec->b, rec->n);
    tb_pad(t);
}

static void tb_end(tarbuf *t)
{
    tb_put(t, NULL, 1024);
}

static void fill(uint8_t *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        p[i] = (uint8_t)(seed >> 24);
    }
}

/* ---- running the extractor ----------------------------------------------------------------- */

static char g_parent[256], g_spool[300];

static const spool_limits big_limits = {.max_total_bytes = 1 << 26, .max_entry_bytes = 1 << 24, .max_entries = 1000};

/* Feeds a[0..n) whole (mode 0), byte by byte (1) or in random chunks (2) and finishes. On
 * failure the spool is freed with its folder; on success the folder stays. */
static vt_status run(const uint8_t *a, size_t n, int mode, const spool_limits *lim, spool_stats *st, char *err,
                     size_t errlen)
{
    spool *s;
    err[0] = '\0';
    vt_status r = spool_new(g_spool, lim, &s, err, errlen);
    if (r) return r;
    unsigned seed = 12345u + (unsigned)n;
    size_t pos = 0;
    while (!r && pos < n) {
        size_t k = n - pos;
        if (mode == 1) {
            k = 1;
        } else if (mode == 2) {
            seed = seed * 1664525u + 1013904223u;
            size_t c = (seed >> 8) % 8 == 0 ? (seed >> 12) % 5000 : (seed >> 12) % 700; /* sometimes 0 */
            if (c < k) k = c;
        }
        r = spool_feed(s, a + pos, k, err, errlen);
        pos += k;
    }
    if (!r) r = spool_finish(s, st, err, errlen);
    if (r) {
        /* every later call repeats the error */
        char again[640] = "";
        CHECK(spool_feed(s, "x", 1, again, sizeof again) == r && !strcmp(again, err), "error not sticky: %s / %s", err, again);
        CHECK(spool_finish(s, NULL, again, sizeof again) == r && !strcmp(again, err), "error not sticky at finish");
    }
    spool_free(s, r != VT_OK);
    return r;
}

static int count_dir(const char *path)
{
    DIR *d = opendir(path);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

/* Files under the spool folder, two levels (class/file) - any deeper thing counts as 1000. */
static int count_spool_files(void)
{
    DIR *d = opendir(g_spool);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", g_spool, e->d_name);
        struct stat sb;
        if (lstat(p, &sb) || !S_ISDIR(sb.st_mode)) { n += 1000; continue; }
        DIR *c = opendir(p);
        struct dirent *f;
        while (c && (f = readdir(c))) {
            if (!strcmp(f->d_name, ".") || !strcmp(f->d_name, "..")) continue;
            char q[1400];
            snprintf(q, sizeof q, "%s/%s", p, f->d_name);
            n += !lstat(q, &sb) && S_ISREG(sb.st_mode) ? 1 : 1000;
        }
        if (c) closedir(c);
    }
    closedir(d);
    return n;
}

/* The spool file rel holds exactly data[0..n). */
static int file_is(const char *rel, const uint8_t *data, size_t n)
{
    char p[8192];
    snprintf(p, sizeof p, "%s/%s", g_spool, rel);
    FILE *f = fopen(p, "rb");
    if (!f) return 0;
    uint8_t *b = malloc(n + 1);
    size_t got = fread(b, 1, n + 1, f);
    fclose(f);
    int ok = got == n && !memcmp(b, data, n);
    free(b);
    return ok;
}

static const char *mode_name[] = {"whole", "1-byte", "random"};

/* ---- accepted archives ------------------------------------------------------------------- */

typedef struct { const char *path; const uint8_t *data; size_t n; } want_file;

static void expect_ok(const char *what, const tarbuf *t, const want_file *w, int nw, long classes, long ignored)
{
    for (int mode = 0; mode < 3; mode++) {
        char err[640];
        spool_stats st;
        vt_status r = run(t->b, t->n, mode, &big_limits, &st, err, sizeof err);
        CHECK(r == VT_OK, "%s (%s): %s: %s", what, mode_name[mode], vt_status_str(r), err);
        if (r) continue;
        CHECK(st.images == nw, "%s (%s): %ld images, expected %d", what, mode_name[mode], st.images, nw);
        CHECK(st.classes == classes, "%s (%s): %ld classes, expected %ld", what, mode_name[mode], st.classes, classes);
        CHECK(st.ignored == ignored, "%s (%s): %ld ignored, expected %ld", what, mode_name[mode], st.ignored, ignored);
        CHECK(st.bytes == t->n, "%s (%s): %llu bytes, expected %zu", what, mode_name[mode], (unsigned long long)st.bytes, t->n);
        for (int i = 0; i < nw; i++)
            CHECK(file_is(w[i].path, w[i].data, w[i].n), "%s (%s): %s differs or is missing", what, mode_name[mode], w[i].path);
        CHECK(count_spool_files() == nw, "%s (%s): %d files in the spool, expected %d", what, mode_name[mode], count_spool_files(), nw);
        struct stat sb;
        CHECK(!stat(g_spool, &sb) && (sb.st_mode & 0777) == 0700, "%s: spool folder mode %o", what, sb.st_mode & 0777);
        spool_remove_dir(g_spool);
        CHECK(count_dir(g_parent) == 0, "%s (%s): spool_remove_dir left %d things", what, mode_name[mode], count_dir(g_parent));
    }
}

static uint8_t D[8][3000];

static void test_ustar(void)
{
    tarbuf t = {0};
    char prefix[160], pname[300];
    memset(prefix, 'p', 150);
    prefix[150] = '\0';
    snprintf(pname, sizeof pname, "%s/p.jpg", prefix);
    tb_typed(&t, "./", '5', NULL);
    tb_typed(&t, "./cat/", '5', NULL);
    tb_file(&t, F_USTAR, "./cat/a.jpg", D[0], 1000);
    tb_file(&t, F_USTAR, "cat/b.JPEG", D[1], 512);
    tb_file(&t, F_USTAR, "cat/empty.png", D[2], 0);
    tb_file(&t, F_USTAR, "dog/c.png", D[3], 1);
    tb_file(&t, F_USTAR, "././dog/d.jpg", D[4], 513);
    tb_file(&t, F_USTAR, "README", D[5], 20);              /* top level: ignored */
    tb_file(&t, F_USTAR, "cat/._a.jpg", D[5], 30);         /* macOS resource fork: ignored */
    tb_file(&t, F_USTAR, "cat/sub/x.jpg", D[5], 40);       /* too deep: ignored */
    tb_file(&t, F_USTAR, "cat/notes.txt", D[5], 50);       /* not an image: ignored */
    tb_file(&t, F_USTAR, ".hidden/e.jpg", D[5], 60);       /* hidden class folder: ignored */
    tarbuf g = {0};
    pax_rec(&g, "comment", "global", 6);
    tb_pax(&t, 'g', &g);                                   /* global pax header: ignored */
    tb_header(&t, &(hdr_spec){.name = "p.jpg", .prefix = prefix, .type = '0', .size = 700, .fmt = F_USTAR});
    tb_put(&t, D[6], 700);
    tb_pad(&t);
    tb_end(&t);
    tb_put(&t, "trailing garbage after the end blocks", 37);
    want_file w[] = {{"cat/a.jpg", D[0], 1000}, {"cat/b.JPEG", D[1], 512}, {"cat/empty.png", D[2], 0},
                     {"dog/c.png", D[3], 1},     {"dog/d.jpg", D[4], 513},  {pname, D[6], 700}};
    expect_ok("ustar", &t, w, 6, 3, 6);
    free(t.b);
    free(g.b);

    /* a lone end block at the very end is accepted (nothing is lost) */
    tarbuf l = {0};
    tb_file(&l, F_USTAR, "cat/a.jpg", D[0], 100);
    tb_put(&l, NULL, 512);
    want_file wl[] = {{"cat/a.jpg", D[0], 100}};
    expect_ok("lone end block", &l, wl, 1, 1, 0);
    free(l.b);
}

static void test_gnu(void)
{
    tarbuf t = {0};
    char longname[200];
    memset(longname, 'n', sizeof longname);
    memcpy(longname, "longclass/", 10);
    strcpy(longname + 150, "_file.png");
    size_t ln = strlen(longname) + 1;
    tb_header(&t, &(hdr_spec){.name = "././@LongLink", .type = 'L', .size = ln, .fmt = F_GNU});
    tb_put(&t, longname, ln);
    tb_pad(&t);
    tb_file(&t, F_GNU, longname, D[0], 2000); /* its own name field: the first 100 bytes */
    tb_header(&t, &(hdr_spec){.name = "big/x.png", .type = '0', .size = 777, .fmt = F_GNU, .base256 = 1});
    tb_put(&t, D[1], 777);
    tb_pad(&t);
    tb_header(&t, &(hdr_spec){.name = "big/", .type = '5', .fmt = F_GNU});
    tb_end(&t);
    want_file w[] = {{longname, D[0], 2000}, {"big/x.png", D[1], 777}};
    expect_ok("gnu long name + base-256 size", &t, w, 2, 2, 0);
    free(t.b);
}

static void test_pax(void)
{
    tarbuf t = {0}, rec = {0};
    char path[400];
    memset(path, 'c', 120);
    path[120] = '/';
    memset(path + 121, 'f', 200);
    strcpy(path + 321, ".Jpg");
    CHECK(strlen(path) > 255, "pax path is %zu bytes", strlen(path));
    pax_rec(&rec, "mtime", "1700000000.123456", 17);
    pax_rec(&rec, "path", path, strlen(path));
    pax_rec(&rec, "uname", "someone", 7);
    tb_pax(&t, 'x', &rec);
    tb_file(&t, F_USTAR, "truncated-name-in-the-header", D[0], 1500);

    /* pax size overrides the header's (here not even a number) */
    tarbuf rs = {0};
    pax_rec(&rs, "size", "2500", 4);
    tb_pax(&t, 'x', &rs);
    tb_header(&t, &(hdr_spec){.name = "sized/s.png", .type = '0', .fmt = F_USTAR, .size_field = "\0\0\0\0\0\0\0\0\0\0\0\0"});
    tb_put(&t, D[1], 2500);
    tb_pad(&t);

    /* unicode path (UTF-8, as pax requires) */
    tarbuf ru = {0};
    const char *upath = "\xc3\xa9t\xc3\xa9/\xe7\x8c\xab.png"; /* été/猫.png */
    pax_rec(&ru, "path", upath, strlen(upath));
    tb_pax(&t, 'x', &ru);
    tb_file(&t, F_USTAR, "ascii-fallback.png", D[2], 10);
    tb_end(&t);
    want_file w[] = {{path, D[0], 1500}, {"sized/s.png", D[1], 2500}, {upath, D[2], 10}};
    expect_ok("pax path > 255 + pax size", &t, w, 3, 3, 0);
    free(t.b);
    free(rec.b);
    free(rs.b);
    free(ru.b);
}

static void test_v7(void)
{
    tarbuf t = {0};
    tb_header(&t, &(hdr_spec){.name = "v7cls/", .type = '\0', .fmt = F_V7}); /* a v7 folder */
    tb_file(&t, F_V7, "v7cls/f.jpg", D[0], 1024);
    tb_file(&t, F_V7, "v7cls/g.png", D[1], 1);
    tb_end(&t);
    want_file w[] = {{"v7cls/f.jpg", D[0], 1024}, {"v7cls/g.png", D[1], 1}};
    expect_ok("v7", &t, w, 2, 1, 0);
    free(t.b);
}

/* ---- refused archives -------------------------------------------------------------------- */

static void expect_refused(const char *what, const uint8_t *a, size_t n, const spool_limits *lim, vt_status want,
                           const char *msg)
{
    for (int mode = 0; mode < 3; mode++) {
        char err[640];
        spool_stats st;
        vt_status r = run(a, n, mode, lim ? lim : &big_limits, &st, err, sizeof err);
        CHECK(r == want, "%s (%s): status %s, expected %s (%s)", what, mode_name[mode], vt_status_str(r),
              vt_status_str(want), err);
        CHECK(strstr(err, msg) != NULL, "%s (%s): message \"%s\" lacks \"%s\"", what, mode_name[mode], err, msg);
        CHECK(count_dir(g_parent) == 0, "%s (%s): %d things left in the parent folder", what, mode_name[mode],
              count_dir(g_parent));
        if (count_dir(g_parent)) spool_remove_dir(g_spool);
    }
}

static void refused_tb(const char *what, tarbuf *t, vt_status want, const char *msg)
{
    expect_refused(what, t->b, t->n, NULL, want, msg);
    free(t->b);
    *t = (tarbuf){0};
}

/* An archive holding a good image and then one entry of type `type` named `name`. */
static void refused_typed(const char *what, const char *name, char type, const char *link, const char *msg)
{
    tarbuf t = {0};
    tb_file(&t, F_USTAR, "cat/ok.jpg", D[0], 100);
    tb_typed(&t, name, type, link);
    tb_file(&t, F_USTAR, "cat/after.jpg", D[1], 100);
    tb_end(&t);
    refused_tb(what, &t, VT_EFORMAT, msg);
}

static void test_hostile_entries(void)
{
    char abs[400];
    snprintf(abs, sizeof abs, "%s/abs.jpg", g_parent);
    tarbuf t = {0};

    refused_typed("symlink", "cat/l.jpg", '2', "/etc/passwd", "symbolic link");
    refused_typed("symlink folder", "cat", '2', "/etc", "symbolic link to \"/etc\"");
    refused_typed("hard link", "cat/h.jpg", '1', "cat/ok.jpg", "hard link");
    refused_typed("char device", "cat/tty", '3', NULL, "character device");
    refused_typed("block device", "cat/sda", '4', NULL, "block device");
    refused_typed("fifo", "cat/fifo", '6', NULL, "FIFO");
    refused_typed("unknown type", "cat/x.jpg", 'Z', NULL, "unsupported type flag 'Z'");
    refused_typed("contiguous type", "cat/x.jpg", '7', NULL, "unsupported type flag '7'");
    refused_typed("GNU long link", "././@LongLink", 'K', NULL, "links are not accepted");

    const char *bad_paths[][2] = {
        {"../x.jpg", "'..'"},        {"cat/../../x.jpg", "'..'"},     {"../../x", "'..'"},
        {"cat//a.jpg", "empty path component"}, {"cat/a.jpg/", "empty path component"},
        {"/cat/a.jpg", "absolute path"}, {abs, "absolute path"},     {"README/..", "'..'"},
    };
    for (size_t i = 0; i < sizeof bad_paths / sizeof bad_paths[0]; i++) {
        tb_file(&t, F_USTAR, "cat/ok.jpg", D[0], 100);
        tb_file(&t, F_USTAR, bad_paths[i][0], D[1], 100);
        tb_end(&t);
        char what[500];
        snprintf(what, sizeof what, "path %s", bad_paths[i][0]);
        refused_tb(what, &t, VT_EFORMAT, bad_paths[i][1]);
    }
    /* a folder entry escaping is refused too, and the message names the entry */
    tb_typed(&t, "../up/", '5', NULL);
    tb_end(&t);
    refused_tb("folder ..", &t, VT_EFORMAT, "tar entry \"../up/\"");

    /* duplicate path */
    tb_file(&t, F_USTAR, "cat/a.jpg", D[0], 100);
    tb_file(&t, F_USTAR, "dog/b.jpg", D[0], 100);
    tb_file(&t, F_USTAR, "./cat/a.jpg", D[1], 100);
    tb_end(&t);
    refused_tb("duplicate", &t, VT_EFORMAT, "duplicate entry");

    /* bad checksum: one byte of the second header's name changed after the sum */
    tb_file(&t, F_USTAR, "cat/a.jpg", D[0], 100);
    size_t at = tb_header(&t, &(hdr_spec){.name = "cat/b.jpg", .type = '0', .size = 10, .fmt = F_USTAR});
    t.b[at + 4] = 'X';
    tb_put(&t, D[1], 10);
    tb_pad(&t);
    tb_end(&t);
    refused_tb("bad checksum", &t, VT_EFORMAT, "bad checksum");

    /* sizes that are not numbers */
    tb_header(&t, &(hdr_spec){.name = "cat/a.jpg", .type = '0', .fmt = F_USTAR, .size_field = "0000000012a\0"});
    tb_end(&t);
    refused_tb("size 12a", &t, VT_EFORMAT, "non-numeric size");
    tb_header(&t, &(hdr_spec){.name = "cat/a.jpg", .type = '0', .fmt = F_USTAR, .size_field = "           \0"});
    tb_end(&t);
    refused_tb("blank size", &t, VT_EFORMAT, "non-numeric size");
    tb_header(&t, &(hdr_spec){.name = "cat/a.jpg", .type = '0', .fmt = F_GNU,
                              .size_field = "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x9c"});
    tb_end(&t);
    refused_tb("negative base-256 size", &t, VT_EFORMAT, "non-numeric size");

    /* pax: NUL inside the path, a size that is not a number, a malformed record, sparse */
    tarbuf rec = {0};
    pax_rec(&rec, "path", "cat/a\0.jpg", 10);
    tb_pax(&t, 'x', &rec);
    tb_file(&t, F_USTAR, "cat/a.jpg", D[0], 10);
    tb_end(&t);
    refused_tb("pax NUL", &t, VT_EFORMAT, "NUL byte inside the pax path");
    free(rec.b), rec = (tarbuf){0};
    pax_rec(&rec, "size", "12x", 3);
    tb_pax(&t, 'x', &rec);
    tb_file(&t, F_USTAR, "cat/a.jpg", D[0], 10);
    tb_end(&t);
    refused_tb("pax size 12x", &t, VT_EFORMAT, "non-numeric size");
    free(rec.b), rec = (tarbuf){0};
    tb_put(&rec, "99 path=cat/a.jpg\n", 18); /* length past the data */
    tb_pax(&t, 'x', &rec);
    tb_file(&t, F_USTAR, "cat/a.jpg", D[0], 10);
    tb_end(&t);
    refused_tb("pax bad length", &t, VT_EFORMAT, "malformed pax record");
    free(rec.b), rec = (tarbuf){0};
    pax_rec(&rec, "GNU.sparse.major", "1", 1);
    tb_pax(&t, 'x', &rec);
    tb_file(&t, F_USTAR, "cat/a.jpg", D[0], 10);
    tb_end(&t);
    refused_tb("pax sparse", &t, VT_EFORMAT, "sparse");
    free(rec.b), rec = (tarbuf){0};
    pax_rec(&rec, "path", "../../x.jpg", 11);
    tb_pax(&t, 'x', &rec);
    tb_file(&t, F_USTAR, "cat/harmless.jpg", D[0], 10);
    tb_end(&t);
    refused_tb("pax path ..", &t, VT_EFORMAT, "tar entry \"../../x.jpg\"");
    free(rec.b);

    /* a long name with no entry after it */
    tb_header(&t, &(hdr_spec){.name = "././@LongLink", .type = 'L', .size = 10, .fmt = F_GNU});
    tb_put(&t, "cat/a.jpg", 10);
    tb_pad(&t);
    tb_end(&t);
    refused_tb("dangling long name", &t, VT_EFORMAT, "right after a long name");

    /* data after the end blocks' first block */
    tb_file(&t, F_USTAR, "cat/a.jpg", D[0], 10);
    tb_put(&t, NULL, 512);
    tb_file(&t, F_USTAR, "cat/b.jpg", D[0], 10);
    tb_end(&t);
    refused_tb("concatenated", &t, VT_EFORMAT, "after an end-of-archive block");

    /* no image at all */
    tb_file(&t, F_USTAR, "README", D[0], 10);
    tb_file(&t, F_USTAR, "cat/notes.txt", D[0], 10);
    tb_end(&t);
    refused_tb("no image", &t, VT_EFORMAT, "no image");
}

static void test_truncated(void)
{
    tarbuf t = {0};
    tb_file(&t, F_USTAR, "cat/a.jpg", D[0], 1000);
    tb_file(&t, F_USTAR, "cat/b.jpg", D[1], 1000);
    tb_end(&t);
    expect_refused("truncated in data", t.b, 512 + 1024 + 512 + 300, NULL, VT_EFORMAT, "700 of its 1000 bytes are missing");
    expect_refused("truncated in header", t.b, 512 + 1024 + 200, NULL, VT_EFORMAT, "truncated inside the header");
    expect_refused("truncated in padding", t.b, 512 + 1000, NULL, VT_EFORMAT, "padding");
    expect_refused("no end blocks", t.b, 2 * (512 + 1024), NULL, VT_EFORMAT, "without its end-of-archive blocks");
    /* every cut of the archive before its first end block is refused */
    for (size_t cut = 0; cut < 2 * (512 + 1024); cut += 97) {
        char err[640];
        spool_stats st;
        vt_status r = run(t.b, cut, 2, &big_limits, &st, err, sizeof err);
        CHECK(r == VT_EFORMAT, "cut at %zu: %s", cut, vt_status_str(r));
        CHECK(count_dir(g_parent) == 0, "cut at %zu: things left", cut);
    }
    free(t.b);
}

static void test_not_tar(void)
{
    uint8_t jpeg[3000];
    fill(jpeg, sizeof jpeg, 7);
    memcpy(jpeg, "\xff\xd8\xff\xe0\0\x10JFIF", 10);
    expect_refused("jpeg", jpeg, sizeof jpeg, NULL, VT_EFORMAT, "not a tar archive");
    expect_refused("jpeg named", jpeg, sizeof jpeg, NULL, VT_EFORMAT, "JPEG");
    expect_refused("short jpeg", jpeg, 100, NULL, VT_EFORMAT, "JPEG");
    uint8_t gz[1000];
    fill(gz, sizeof gz, 8);
    gz[0] = 0x1f, gz[1] = 0x8b, gz[2] = 8;
    expect_refused("gzip", gz, sizeof gz, NULL, VT_EFORMAT, "gzip");
    const char *json = "  {\"images\": [\"aGVsbG8=\", \"d29ybGQ=\"], \"padding\": \""
                       "0123456789012345678901234567890123456789012345678901234567890123456789"
                       "0123456789012345678901234567890123456789012345678901234567890123456789"
                       "0123456789012345678901234567890123456789012345678901234567890123456789"
                       "0123456789012345678901234567890123456789012345678901234567890123456789"
                       "0123456789012345678901234567890123456789012345678901234567890123456789"
                       "0123456789012345678901234567890123456789012345678901234567890123456789"
                       "0123456789012345678901234567890123456789012345678901234567890123456789"
                       "0123456789012345678901234567890123456789012345678901234567890123456789\"}";
    CHECK(strlen(json) > 512, "json body too short");
    expect_refused("json", (const uint8_t *)json, strlen(json), NULL, VT_EFORMAT, "JSON");
    expect_refused("short json", (const uint8_t *)"{\"a\": 1}", 8, NULL, VT_EFORMAT, "not a tar archive");
    uint8_t zeros[1024] = {0};
    expect_refused("zeros short", zeros, 100, NULL, VT_EFORMAT, "less than one 512-byte tar header");
    expect_refused("empty archive", zeros, 1024, NULL, VT_EFORMAT, "empty tar archive");
    expect_refused("empty body", zeros, 0, NULL, VT_EFORMAT, "body is empty");
    char text[600];
    memset(text, 'a', sizeof text);
    expect_refused("text", (const uint8_t *)text, sizeof text, NULL, VT_EFORMAT, "not a tar archive");
}

static void test_limits(void)
{
    tarbuf t = {0};
    tb_file(&t, F_USTAR, "cat/a.jpg", D[0], 1000);
    tb_file(&t, F_USTAR, "cat/b.jpg", D[1], 3000);
    tb_file(&t, F_USTAR, "cat/c.jpg", D[2], 100);
    tb_end(&t);

    spool_limits l = big_limits;
    l.max_entry_bytes = 2999;
    expect_refused("entry over limit", t.b, t.n, &l, VT_ELIMIT, "over the limit of 2999 bytes per entry");
    /* refused when its header arrives, before any of its data */
    {
        spool *s;
        char err[640];
        CHECK(spool_new(g_spool, &l, &s, err, sizeof err) == VT_OK, "spool_new: %s", err);
        vt_status r = spool_feed(s, t.b, 512 + 1024, err, sizeof err);
        CHECK(r == VT_OK, "first entry: %s", err);
        r = spool_feed(s, t.b + 512 + 1024, 512, err, sizeof err);
        CHECK(r == VT_ELIMIT && strstr(err, "cat/b.jpg"), "header of the big entry: %s (%s)", vt_status_str(r), err);
        spool_free(s, 1);
        CHECK(count_dir(g_parent) == 0, "entry limit: things left");
    }
    l = big_limits;
    l.max_entry_bytes = 3000;
    {
        char err[640];
        spool_stats st;
        CHECK(run(t.b, t.n, 0, &l, &st, err, sizeof err) == VT_OK && st.images == 3, "entry at the limit: %s", err);
        spool_remove_dir(g_spool);
    }
    l = big_limits;
    l.max_entries = 2;
    expect_refused("entries", t.b, t.n, &l, VT_ELIMIT, "more than 2 entries");
    l = big_limits;
    l.max_total_bytes = t.n - 1;
    expect_refused("total bytes", t.b, t.n, &l, VT_ELIMIT, "limit of");
    /* refused at the header whose data would pass the total */
    l.max_total_bytes = 512 + 1024 + 512 + 2000;
    {
        spool *s;
        char err[640];
        CHECK(spool_new(g_spool, &l, &s, err, sizeof err) == VT_OK, "spool_new: %s", err);
        vt_status r = spool_feed(s, t.b, 512 + 1024 + 512, err, sizeof err);
        CHECK(r == VT_ELIMIT && strstr(err, "cat/b.jpg"), "total at the header: %s (%s)", vt_status_str(r), err);
        spool_free(s, 1);
        CHECK(count_dir(g_parent) == 0, "total limit: things left");
    }
    l = big_limits;
    l.max_total_bytes = t.n;
    {
        char err[640];
        spool_stats st;
        CHECK(run(t.b, t.n, 1, &l, &st, err, sizeof err) == VT_OK, "archive exactly at the total limit: %s", err);
        spool_remove_dir(g_spool);
    }
    free(t.b);
    t = (tarbuf){0};

    /* a long name or a pax block over its own buffer limit */
    tb_header(&t, &(hdr_spec){.name = "././@LongLink", .type = 'L', .size = 5000, .fmt = F_GNU});
    tb_put(&t, NULL, 5120);
    tb_end(&t);
    refused_tb("long name 5000", &t, VT_ELIMIT, "GNU long name");
    tb_header(&t, &(hdr_spec){.name = "PaxHeaders/x", .type = 'x', .size = 100000, .fmt = F_USTAR});
    tb_put(&t, NULL, 100352);
    tb_end(&t);
    refused_tb("pax 100000", &t, VT_ELIMIT, "pax header");
}

static void test_api(void)
{
    spool *s = NULL;
    char err[640];
    CHECK(spool_new(g_spool, NULL, &s, err, sizeof err) == VT_EINVAL && !s, "no limits accepted");
    spool_limits zero = big_limits;
    zero.max_entries = 0;
    CHECK(spool_new(g_spool, &zero, &s, err, sizeof err) == VT_EINVAL && !s, "zero limit accepted");
    CHECK(count_dir(g_parent) == 0, "refused spool_new made a folder");
    /* the folder must not exist; an existing one is left as it was */
    CHECK(mkdir(g_spool, 0755) == 0, "mkdir");
    char keep[400];
    snprintf(keep, sizeof keep, "%s/keep", g_spool);
    FILE *f = fopen(keep, "w");
    if (f) fclose(f);
    CHECK(spool_new(g_spool, &big_limits, &s, err, sizeof err) == VT_EIO && !s, "existing folder accepted");
    CHECK(access(keep, F_OK) == 0, "existing folder touched");
    unlink(keep);
    rmdir(g_spool);
    spool_free(NULL, 1);
    spool_remove_dir(g_spool); /* missing: a no-op */
}

/* ---- --extract ----------------------------------------------------------------------------- */

static int extract(int argc, char **argv)
{
    spool_limits l = {.max_total_bytes = 1ull << 32, .max_entry_bytes = 1ull << 28, .max_entries = 100000};
    long chunk = 65536;
    for (int i = 4; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--chunk")) chunk = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--max-total")) l.max_total_bytes = strtoull(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--max-entry")) l.max_entry_bytes = strtoull(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--max-entries")) l.max_entries = atol(argv[i + 1]);
        else { fprintf(stderr, "unknown option %s\n", argv[i]); return 2; }
    }
    int fd = open(argv[2], O_RDONLY);
    if (fd < 0) { perror(argv[2]); return 2; }
    spool *s;
    char err[640];
    vt_status r = spool_new(argv[3], &l, &s, err, sizeof err);
    if (r) { printf("refused: %s: %s\n", vt_status_str(r), err); close(fd); return 1; }
    static uint8_t buf[1 << 16];
    unsigned seed = 99;
    for (;;) {
        size_t want = sizeof buf;
        if (chunk > 0 && (size_t)chunk < want) want = (size_t)chunk;
        if (chunk == 0) {
            seed = seed * 1664525u + 1013904223u;
            want = 1 + (seed >> 8) % 3000;
        }
        ssize_t n = read(fd, buf, want);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) { perror("read"); spool_free(s, 1); close(fd); return 2; }
        if (n == 0) break;
        if ((r = spool_feed(s, buf, (size_t)n, err, sizeof err))) break;
    }
    close(fd);
    spool_stats st;
    if (!r) r = spool_finish(s, &st, err, sizeof err);
    spool_free(s, r != VT_OK);
    if (r) { printf("refused: %s: %s\n", vt_status_str(r), err); return 1; }
    printf("ok images=%ld classes=%ld ignored=%ld bytes=%llu\n", st.images, st.classes, st.ignored, (unsigned long long)st.bytes);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 4 && !strcmp(argv[1], "--extract")) return extract(argc, argv);
    if (argc > 1) {
        fprintf(stderr, "usage: test_spool [--extract ARCHIVE DIR [--chunk N] [--max-total N] [--max-entry N] [--max-entries N]]\n");
        return 2;
    }
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(g_parent, sizeof g_parent, "%s/test_spool.XXXXXX", tmp);
    if (!mkdtemp(g_parent)) { perror("mkdtemp"); return 1; }
    snprintf(g_spool, sizeof g_spool, "%s/spool", g_parent);
    for (int i = 0; i < 8; i++) fill(D[i], sizeof D[i], 100u + (unsigned)i);

    test_api();
    test_ustar();
    test_gnu();
    test_pax();
    test_v7();
    test_hostile_entries();
    test_truncated();
    test_not_tar();
    test_limits();

    spool_remove_dir(g_spool);
    CHECK(rmdir(g_parent) == 0, "the parent folder is not empty at the end");
    return check_done("test_spool");
}
