/* srv_spool.c - the streaming tar extractor behind the admin prune upload (see srv_spool.h).
 *
 * A state machine over the bytes as they arrive:
 *   HDR   collects one 512-byte header block, then decides what the entry is;
 *   DATA  routes the entry's bytes to a file in the spool folder, to the metadata buffer (a
 *         GNU long name or a pax 'x' record block, parsed when complete) or nowhere;
 *   PAD   skips to the next 512-byte boundary;
 *   END   swallows whatever follows the end-of-archive blocks.
 * Chunk boundaries never matter: every state takes as many bytes as it can from the chunk and
 * keeps its position, so a 1-byte feed and a whole-archive feed take the same decisions.
 *
 * Every entry's path is checked before anything is created, whether or not the entry is kept.
 * Files are created with openat relative to a descriptor of the spool folder and one of the
 * class folder (opened with O_DIRECTORY|O_NOFOLLOW), with O_CREAT|O_EXCL|O_NOFOLLOW, so no name
 * and no concurrent rename of a path component can point a write outside the spool folder.
 *
 * It is not a general tar reader: it keeps the two-level image layout the prune job reads and
 * refuses what an image upload has no reason to hold. engine/data.c reads tars for training
 * from a mapped file; this one never sees the whole archive, so it shares no code with it.
 */
#include "srv_spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define BLK 512
#define PATH_MAX_BYTES 4095      /* a path, from any source, in bytes */
#define PAX_MAX_BYTES 65536      /* one pax 'x' record block */
#define COMPONENT_MAX 255        /* one name component of a file we create */

/* ustar header fields (offset; length) - the full table is in srv_spool.h */
#define H_NAME 0      /* 100 */
#define H_SIZE 124    /* 12 */
#define H_CHKSUM 148  /* 8 */
#define H_TYPE 156    /* 1 */
#define H_LINK 157    /* 100 */
#define H_MAGIC 257   /* 6: "ustar\0" POSIX, "ustar " + " \0" GNU, zeros v7 */
#define H_PREFIX 345  /* 155, POSIX ustar only */

enum { S_HDR, S_DATA, S_PAD, S_END, S_FAIL };
enum { TO_SKIP, TO_FILE, TO_META };

struct spool {
    char *dir;                  /* owned copy of the folder's path */
    int dirfd;                  /* the spool folder */
    spool_limits lim;
    spool_stats st;             /* st.bytes: every byte fed so far */
    long entries;               /* headers seen, of any kind */
    int state;
    uint8_t hdr[BLK];           /* the header being collected */
    size_t hlen;
    uint64_t hdr_off;           /* archive offset of the current entry's header */
    uint64_t size, left, pad;   /* the current entry's data size, data left, padding left */
    int sink;                   /* TO_* */
    char meta_type;             /* 'L' or 'x' while buffering into meta */
    char *meta;                 /* PAX_MAX_BYTES + 1, allocated on first use */
    size_t metalen;
    char *pend_path;            /* PATH_MAX_BYTES + 1: path from 'L' or pax for the next entry */
    int have_path, have_size;
    uint64_t pend_size;         /* pax size for the next entry */
    int zero_seen;              /* one end-of-archive block read */
    int fd;                     /* the image file being written, or -1 */
    int clsfd;                  /* the class folder of the last image, or -1 */
    char cls[COMPONENT_MAX + 1];
    char name[PATH_MAX_BYTES + 1]; /* the current (or last) entry's path, for messages */
    vt_status fail_st;
    char fail_msg[640];
};

/* ---- errors ------------------------------------------------------------------------------ */

/* A printable, JSON-safe rendering of a name from the archive: valid UTF-8 is kept, other bytes
 * and control characters become '?', and long names are cut with "...". */
static const char *quote(const char *in, char *out, size_t cap)
{
    size_t o = 0, limit = cap - 4;
    const unsigned char *p = (const unsigned char *)in;
    while (*p) {
        size_t n = 1;
        if (*p >= 0x80) {
            n = (*p & 0xe0) == 0xc0 ? 2 : (*p & 0xf0) == 0xe0 ? 3 : (*p & 0xf8) == 0xf0 ? 4 : 0;
            for (size_t i = 1; i < n; i++)
                if ((p[i] & 0xc0) != 0x80) n = 0;
        }
        if (o + (n ? n : 1) > limit) { memcpy(out + o, "...", 3); o += 3; break; }
        if (!n || *p < 0x20 || *p == 0x7f) {
            out[o++] = '?';
            p++;
        } else {
            memcpy(out + o, p, n);
            o += n;
            p += n;
        }
    }
    out[o] = '\0';
    return out;
}

/* Records the upload's failure (every later call repeats it) and returns its status. */
static vt_status fail(spool *s, vt_status st, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static vt_status fail(spool *s, vt_status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->fail_msg, sizeof s->fail_msg, fmt, ap);
    va_end(ap);
    s->fail_st = st;
    s->state = S_FAIL;
    if (s->fd >= 0) close(s->fd);
    s->fd = -1;
    return st;
}

/* The same, prefixed with the current entry: `tar entry "cat/a.jpg" (offset 1024): ...`. */
static vt_status fail_entry(spool *s, vt_status st, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static vt_status fail_entry(spool *s, vt_status st, const char *fmt, ...)
{
    char q[200], what[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return fail(s, st, "tar entry \"%s\" (offset %llu): %s", quote(s->name, q, sizeof q),
                (unsigned long long)s->hdr_off, what);
}

static vt_status report(const spool *s, char *err, size_t errlen)
{
    return vt_err(err, errlen, s->fail_st, "%s", s->fail_msg);
}

/* ---- header fields ----------------------------------------------------------------------- */

/* An octal field (leading spaces, digits, then NUL or space or the field's end) or, when the
 * high bit of the first byte is set, a GNU base-256 big-endian number. -1: malformed, negative
 * or too large. */
static int64_t field_num(const uint8_t *f, int n, int base256)
{
    if (f[0] & 0x80) {
        if (!base256 || (f[0] & 0x40)) return -1;
        uint64_t v = f[0] & 0x3f;
        for (int i = 1; i < n; i++) {
            if (v >> 55) return -1;
            v = v << 8 | f[i];
        }
        return (int64_t)v;
    }
    int i = 0, digits = 0;
    while (i < n && f[i] == ' ') i++;
    uint64_t v = 0;
    for (; i < n && f[i] >= '0' && f[i] <= '7'; i++, digits++) {
        if (v >> 60) return -1;
        v = v * 8 + (uint64_t)(f[i] - '0');
    }
    if (i < n && f[i] != '\0' && f[i] != ' ') return -1;
    return digits ? (int64_t)v : -1;
}

static int checksum_ok(const uint8_t *h)
{
    int64_t want = field_num(h + H_CHKSUM, 8, 0);
    int64_t sum = 0, ssum = 0; /* unsigned bytes (POSIX), signed bytes (some old writers) */
    for (int i = 0; i < BLK; i++) {
        int in_field = i >= H_CHKSUM && i < H_CHKSUM + 8;
        sum += in_field ? ' ' : h[i];
        ssum += in_field ? ' ' : (signed char)h[i];
    }
    return want >= 0 && (want == sum || want == ssum);
}

static int zero_block(const uint8_t *h)
{
    for (int i = 0; i < BLK; i++)
        if (h[i]) return 0;
    return 1;
}

/* name, or prefix "/" name for POSIX ustar headers (GNU headers keep other fields there). */
static void header_name(const uint8_t *h, char *out, size_t cap)
{
    if (!memcmp(h + H_MAGIC, "ustar\0", 6) && h[H_PREFIX])
        snprintf(out, cap, "%.155s/%.100s", (const char *)h + H_PREFIX, (const char *)h + H_NAME);
    else
        snprintf(out, cap, "%.100s", (const char *)h + H_NAME);
}

/* What a body that is not a tar archive looks like, for the error message. */
static const char *sniff(const uint8_t *b, size_t n)
{
    if (n >= 2 && b[0] == 0x1f && b[1] == 0x8b) return " (it is gzip data: send the tar uncompressed)";
    if (n >= 3 && !memcmp(b, "BZh", 3)) return " (it is bzip2 data: send the tar uncompressed)";
    if (n >= 6 && !memcmp(b, "\xfd" "7zXZ\0", 6)) return " (it is xz data: send the tar uncompressed)";
    if (n >= 4 && !memcmp(b, "\x28\xb5\x2f\xfd", 4)) return " (it is zstd data: send the tar uncompressed)";
    if (n >= 4 && !memcmp(b, "PK\3\4", 4)) return " (it is a zip archive)";
    if (n >= 3 && b[0] == 0xff && b[1] == 0xd8 && b[2] == 0xff) return " (it is a JPEG image)";
    if (n >= 4 && !memcmp(b, "\x89PNG", 4)) return " (it is a PNG image)";
    size_t i = 0;
    while (i < n && (b[i] == ' ' || b[i] == '\t' || b[i] == '\r' || b[i] == '\n')) i++;
    if (i < n && (b[i] == '{' || b[i] == '[')) return " (it looks like JSON)";
    return "";
}

/* ---- paths ------------------------------------------------------------------------------- */

static int image_name(const char *base)
{
    const char *dot = strrchr(base, '.');
    if (!dot || dot == base) return 0;
    return !strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg") || !strcasecmp(dot, ".png");
}

/* Checks s->name for entry type `type` ('0' file or '5' folder). Returns VT_OK and, for a file
 * to keep, sets *keep, the class folder (clslen bytes at *cls) and the file name (both point
 * into s->name). */
static vt_status check_path(spool *s, char type, int *keep, const char **cls, size_t *clslen, const char **file)
{
    *keep = 0;
    const char *p = s->name;
    size_t len = strlen(p);
    if (!len) return fail_entry(s, VT_EFORMAT, "empty path");
    if (p[0] == '/') return fail_entry(s, VT_EFORMAT, "absolute path (names must be relative, class/file)");
    while (p[0] == '.' && p[1] == '/') p += 2;
    if (type == '5') {
        len = strlen(p);
        if (len && p[len - 1] == '/') len--;  /* "cat/" */
        if (!len || (len == 1 && p[0] == '.')) return VT_OK; /* the archive's root, "./" */
    }
    int ncomp = 0, dot = 0, toolong = 0;
    const char *c = p;
    const char *comp[2] = {NULL, NULL};
    for (;;) {
        const char *e = strchr(c, '/');
        size_t n = e ? (size_t)(e - c) : strlen(c);
        if (type == '5' && e && !e[1]) e = NULL;  /* the folder's trailing slash */
        if (!n) return fail_entry(s, VT_EFORMAT, "empty path component");
        if (n == 2 && c[0] == '.' && c[1] == '.') return fail_entry(s, VT_EFORMAT, "'..' path component (the entry would leave the upload)");
        if (c[0] == '.') dot = 1;
        if (n > COMPONENT_MAX) toolong = 1;
        if (ncomp < 2) comp[ncomp] = c;
        ncomp++;
        if (!e) break;
        c = e + 1;
    }
    if (type == '5') return VT_OK;
    if (ncomp != 2 || dot || !image_name(comp[1])) return VT_OK;
    if (toolong) return fail_entry(s, VT_EFORMAT, "a name component is longer than %d bytes", COMPONENT_MAX);
    *cls = comp[0];
    *clslen = (size_t)(comp[1] - 1 - comp[0]);
    *file = comp[1];
    *keep = 1;
    return VT_OK;
}

/* ---- entries ----------------------------------------------------------------------------- */

/* Opens cls/file (cls: clslen bytes) for writing into s->fd, creating cls when it is new. */
static vt_status open_image(spool *s, const char *clsname, size_t clslen, const char *file)
{
    char cls[COMPONENT_MAX + 1];
    memcpy(cls, clsname, clslen);
    cls[clslen] = '\0';
    if (s->clsfd < 0 || strcmp(s->cls, cls)) {
        if (s->clsfd >= 0) close(s->clsfd);
        s->clsfd = -1;
        if (!mkdirat(s->dirfd, cls, 0700)) s->st.classes++;
        else if (errno != EEXIST) return fail_entry(s, VT_EIO, "cannot create folder \"%s\": %s", cls, strerror(errno));
        s->clsfd = openat(s->dirfd, cls, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (s->clsfd < 0) return fail_entry(s, VT_EIO, "cannot open folder \"%s\": %s", cls, strerror(errno));
        snprintf(s->cls, sizeof s->cls, "%s", cls);
    }
    s->fd = openat(s->clsfd, file, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (s->fd < 0) {
        if (errno == EEXIST) return fail_entry(s, VT_EFORMAT, "duplicate entry (the path appears twice)");
        return fail_entry(s, VT_EIO, "cannot create the file: %s", strerror(errno));
    }
    return VT_OK;
}

/* The data of an 'x' header: records "LEN key=value\n", LEN counting the whole record. Only
 * path and size matter; GNU sparse files are refused (their data is not the file's bytes). */
static vt_status parse_pax(spool *s)
{
    const char *r = s->meta, *end = s->meta + s->metalen;
    while (r < end) {
        size_t len = 0;
        const char *q = r;
        while (q < end && *q >= '0' && *q <= '9' && len <= PAX_MAX_BYTES) len = len * 10 + (size_t)(*q++ - '0');
        if (q == r || q == end || *q != ' ' || len > (size_t)(end - r) || len < (size_t)(q - r) + 3 || r[len - 1] != '\n')
            return fail_entry(s, VT_EFORMAT, "malformed pax record at byte %zu of the pax header", (size_t)(r - s->meta));
        const char *key = q + 1, *rec_end = r + len - 1;
        const char *eq = memchr(key, '=', (size_t)(rec_end - key));
        if (!eq || eq == key) return fail_entry(s, VT_EFORMAT, "malformed pax record at byte %zu of the pax header", (size_t)(r - s->meta));
        size_t klen = (size_t)(eq - key), vlen = (size_t)(rec_end - eq - 1);
        const char *v = eq + 1;
        if (klen == 4 && !memcmp(key, "path", 4)) {
            if (memchr(v, '\0', vlen)) return fail_entry(s, VT_EFORMAT, "NUL byte inside the pax path");
            if (vlen > PATH_MAX_BYTES) return fail_entry(s, VT_ELIMIT, "pax path of %zu bytes (limit %d)", vlen, PATH_MAX_BYTES);
            memcpy(s->pend_path, v, vlen);
            s->pend_path[vlen] = '\0';
            s->have_path = 1;
        } else if (klen == 4 && !memcmp(key, "size", 4)) {
            uint64_t n = 0;
            size_t i = 0;
            for (; i < vlen && v[i] >= '0' && v[i] <= '9' && !(n >> 59); i++) n = n * 10 + (uint64_t)(v[i] - '0');
            if (!vlen || i != vlen) return fail_entry(s, VT_EFORMAT, "non-numeric size in the pax header");
            s->pend_size = n;
            s->have_size = 1;
        } else if (klen > 11 && !memcmp(key, "GNU.sparse.", 11)) {
            return fail_entry(s, VT_EFORMAT, "sparse file (not accepted)");
        }
        r += len;
    }
    return VT_OK;
}

/* The entry's data has all arrived. */
static vt_status end_entry(spool *s)
{
    if (s->sink == TO_FILE) {
        int rc = close(s->fd);
        s->fd = -1;
        if (rc) return fail_entry(s, VT_EIO, "cannot write the file: %s", strerror(errno));
        s->st.images++;
    } else if (s->sink == TO_META && s->meta_type == 'L') {
        size_t n = strnlen(s->meta, s->metalen);
        if (n > PATH_MAX_BYTES) return fail_entry(s, VT_ELIMIT, "GNU long name of %zu bytes (limit %d)", n, PATH_MAX_BYTES);
        memcpy(s->pend_path, s->meta, n);
        s->pend_path[n] = '\0';
        s->have_path = 1;
    } else if (s->sink == TO_META && parse_pax(s)) {
        return s->fail_st;
    }
    s->pad = (BLK - s->size % BLK) % BLK;
    s->state = s->pad ? S_PAD : S_HDR;
    return VT_OK;
}

/* Where the entry's data will go, once the header is accepted. */
static vt_status begin_data(spool *s, int sink)
{
    s->sink = sink;
    s->left = s->size;
    s->metalen = 0;
    s->state = S_DATA;
    return s->size ? VT_OK : end_entry(s);
}

/* Limits every entry meets as soon as its header is read. */
static vt_status check_size(spool *s)
{
    if (s->size > s->lim.max_entry_bytes)
        return fail_entry(s, VT_ELIMIT, "%llu bytes, over the limit of %llu bytes per entry",
                          (unsigned long long)s->size, (unsigned long long)s->lim.max_entry_bytes);
    uint64_t padded = s->size + (BLK - s->size % BLK) % BLK;
    if (s->hdr_off + BLK + padded > s->lim.max_total_bytes)
        return fail_entry(s, VT_ELIMIT, "%llu bytes would take the archive past its limit of %llu bytes",
                          (unsigned long long)s->size, (unsigned long long)s->lim.max_total_bytes);
    return VT_OK;
}

/* A complete header block in s->hdr. */
static vt_status header(spool *s)
{
    const uint8_t *h = s->hdr;
    if (zero_block(h)) {
        if (s->have_path || s->have_size)
            return fail(s, VT_EFORMAT, "tar archive ends (offset %llu) right after a long name or pax header",
                        (unsigned long long)s->hdr_off);
        if (s->zero_seen) s->state = S_END;
        s->zero_seen = 1;
        return VT_OK;
    }
    if (s->zero_seen)
        return fail(s, VT_EFORMAT, "data at offset %llu after an end-of-archive block (concatenated archives are not accepted)",
                    (unsigned long long)s->hdr_off);
    if (!checksum_ok(h)) {
        if (!s->entries)
            return fail(s, VT_EFORMAT, "not a tar archive: the first 512 bytes are not a tar header%s", sniff(h, BLK));
        char q[200];
        return fail(s, VT_EFORMAT, "tar header at offset %llu (after entry \"%s\"): bad checksum",
                    (unsigned long long)s->hdr_off, quote(s->name, q, sizeof q));
    }
    if (++s->entries > s->lim.max_entries)
        return fail(s, VT_ELIMIT, "tar archive has more than %ld entries (the limit)", s->lim.max_entries);

    char type = (char)h[H_TYPE];
    int64_t hsize = field_num(h + H_SIZE, 12, 1);
    int meta = type == 'L' || type == 'x' || type == 'g' || type == 'K';
    if (meta || !s->have_path) header_name(h, s->name, sizeof s->name);
    else snprintf(s->name, sizeof s->name, "%s", s->pend_path);

    if (meta) {
        if (hsize < 0) return fail_entry(s, VT_EFORMAT, "non-numeric size field");
        s->size = (uint64_t)hsize;
        if (check_size(s)) return s->fail_st;
        switch (type) {
        case 'K':
            return fail_entry(s, VT_EFORMAT, "GNU long link name (links are not accepted)");
        case 'g':
            s->st.ignored++;
            return begin_data(s, TO_SKIP);
        case 'L':
            if (s->size > PATH_MAX_BYTES + 1)
                return fail_entry(s, VT_ELIMIT, "GNU long name of %llu bytes (limit %d)", (unsigned long long)s->size, PATH_MAX_BYTES);
            break;
        default: /* 'x' */
            if (s->size > PAX_MAX_BYTES)
                return fail_entry(s, VT_ELIMIT, "pax header of %llu bytes (limit %d)", (unsigned long long)s->size, PAX_MAX_BYTES);
            break;
        }
        if (!s->meta && !(s->meta = malloc(PAX_MAX_BYTES + 1))) return fail(s, VT_ENOMEM, "out of memory");
        s->meta_type = type;
        return begin_data(s, TO_META);
    }

    /* a real entry: a long name or pax record before it applies to it, once */
    int had_size = s->have_size;
    s->size = s->have_size ? s->pend_size : (uint64_t)hsize;
    s->have_path = s->have_size = 0;
    if (!had_size && hsize < 0) return fail_entry(s, VT_EFORMAT, "non-numeric size field");
    size_t nlen = strlen(s->name);
    if (type == '\0' && nlen && s->name[nlen - 1] == '/') type = '5'; /* v7 folder */
    char lq[200], link[101];
    snprintf(link, sizeof link, "%.100s", (const char *)h + H_LINK);
    switch (type) {
    case '0': case '\0': type = '0'; break;
    case '5': break;
    case '1': return fail_entry(s, VT_EFORMAT, "hard link to \"%s\" (links are not accepted)", quote(link, lq, sizeof lq));
    case '2': return fail_entry(s, VT_EFORMAT, "symbolic link to \"%s\" (links are not accepted)", quote(link, lq, sizeof lq));
    case '3': return fail_entry(s, VT_EFORMAT, "character device (not accepted)");
    case '4': return fail_entry(s, VT_EFORMAT, "block device (not accepted)");
    case '6': return fail_entry(s, VT_EFORMAT, "FIFO (not accepted)");
    default:
        if (type > ' ' && type < 0x7f) return fail_entry(s, VT_EFORMAT, "unsupported type flag '%c'", type);
        return fail_entry(s, VT_EFORMAT, "unsupported type flag 0x%02x", (unsigned char)type);
    }
    int keep;
    const char *cls = NULL, *file = NULL;
    size_t clslen = 0;
    if (check_path(s, type, &keep, &cls, &clslen, &file) || check_size(s)) return s->fail_st;
    if (type == '5') return begin_data(s, TO_SKIP);
    if (!keep) {
        s->st.ignored++;
        return begin_data(s, TO_SKIP);
    }
    return open_image(s, cls, clslen, file) ? s->fail_st : begin_data(s, TO_FILE);
}

static vt_status write_all(spool *s, const uint8_t *p, size_t n)
{
    while (n) {
        ssize_t w = write(s->fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return fail_entry(s, VT_EIO, "cannot write the file: %s", w < 0 ? strerror(errno) : "no progress");
        p += w;
        n -= (size_t)w;
    }
    return VT_OK;
}

/* ---- API --------------------------------------------------------------------------------- */

vt_status spool_new(const char *dir, const spool_limits *lim, spool **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!dir || !*dir || !lim || !lim->max_total_bytes || !lim->max_entry_bytes || lim->max_entries <= 0)
        return vt_err(err, errlen, VT_EINVAL, "spool: a folder and three non-zero limits are needed");
    spool *s = calloc(1, sizeof *s);
    if (!s) return vt_err(err, errlen, VT_ENOMEM, "out of memory");
    s->dirfd = s->fd = s->clsfd = -1;
    s->lim = *lim;
    if (!(s->dir = strdup(dir)) || !(s->pend_path = malloc(PATH_MAX_BYTES + 1))) {
        free(s->dir);
        free(s);
        return vt_err(err, errlen, VT_ENOMEM, "out of memory");
    }
    if (mkdir(dir, 0700)) {
        vt_status st = vt_err(err, errlen, VT_EIO, "%s: cannot create the spool folder: %s", dir, strerror(errno));
        free(s->pend_path);
        free(s->dir);
        free(s);
        return st;
    }
    s->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (s->dirfd < 0) {
        vt_status st = vt_err(err, errlen, VT_EIO, "%s: cannot open the spool folder: %s", dir, strerror(errno));
        rmdir(dir);
        spool_free(s, 0);
        return st;
    }
    *out = s;
    return VT_OK;
}

vt_status spool_feed(spool *s, const void *data, size_t n, char *err, size_t errlen)
{
    if (s->state == S_FAIL) return report(s, err, errlen);
    if (n > s->lim.max_total_bytes - s->st.bytes) {
        fail(s, VT_ELIMIT, "tar archive larger than the limit of %llu bytes", (unsigned long long)s->lim.max_total_bytes);
        return report(s, err, errlen);
    }
    const uint8_t *p = data;
    while (n) {
        size_t k = n;
        switch (s->state) {
        case S_HDR:
            if (k > BLK - s->hlen) k = BLK - s->hlen;
            memcpy(s->hdr + s->hlen, p, k);
            s->hlen += k;
            s->st.bytes += k;
            if (s->hlen == BLK) {
                s->hlen = 0;
                s->hdr_off = s->st.bytes - BLK;
                if (header(s)) return report(s, err, errlen);
            }
            break;
        case S_DATA:
            if (k > s->left) k = (size_t)s->left;
            if (s->sink == TO_FILE && write_all(s, p, k)) return report(s, err, errlen);
            if (s->sink == TO_META) {
                memcpy(s->meta + s->metalen, p, k);
                s->metalen += k;
            }
            s->left -= k;
            s->st.bytes += k;
            if (!s->left && end_entry(s)) return report(s, err, errlen);
            break;
        case S_PAD:
            if (k > s->pad) k = (size_t)s->pad;
            s->pad -= k;
            s->st.bytes += k;
            if (!s->pad) s->state = S_HDR;
            break;
        default: /* S_END: bytes after the end blocks are ignored */
            s->st.bytes += k;
            break;
        }
        p += k;
        n -= k;
    }
    return VT_OK;
}

vt_status spool_finish(spool *s, spool_stats *st, char *err, size_t errlen)
{
    if (st) memset(st, 0, sizeof *st);
    if (s->state == S_FAIL) return report(s, err, errlen);
    unsigned long long at = (unsigned long long)s->st.bytes;
    /* a lone end block at the very end loses nothing: accepted, as GNU tar and Python do */
    int ended = s->state == S_END || (s->state == S_HDR && !s->hlen && s->zero_seen);
    if (!ended) {
        if (!s->st.bytes) fail(s, VT_EFORMAT, "not a tar archive: the body is empty");
        else if (!s->entries && !s->zero_seen && s->state == S_HDR)
            fail(s, VT_EFORMAT, "not a tar archive: %llu bytes, less than one 512-byte tar header%s", at, sniff(s->hdr, s->hlen));
        else if (s->state == S_HDR && s->hlen)
            fail(s, VT_EFORMAT, "tar archive truncated inside the header at offset %llu", at - s->hlen);
        else if (s->state == S_HDR)
            fail(s, VT_EFORMAT, "tar archive truncated: it ends at offset %llu without its end-of-archive blocks", at);
        else if (s->state == S_DATA)
            fail_entry(s, VT_EFORMAT, "truncated: %llu of its %llu bytes are missing", (unsigned long long)s->left,
                       (unsigned long long)s->size);
        else
            fail_entry(s, VT_EFORMAT, "tar archive truncated in the padding after the entry");
        return report(s, err, errlen);
    }
    if (!s->st.images) {
        if (!s->entries) fail(s, VT_EFORMAT, "empty tar archive (only end-of-archive blocks)");
        else fail(s, VT_EFORMAT, "tar archive holds no image as class/file.jpg, .jpeg or .png (%ld entries ignored)", s->st.ignored);
        return report(s, err, errlen);
    }
    if (st) *st = s->st;
    return VT_OK;
}

/* Deletes what dfd holds: files, and folders up to `depth` levels down. Best effort. */
static void empty_dir(int dfd, int depth)
{
    int fd = dup(dfd);
    if (fd < 0) return;
    DIR *d = fdopendir(fd);
    if (!d) { close(fd); return; }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        struct stat sb;
        if (fstatat(dfd, e->d_name, &sb, AT_SYMLINK_NOFOLLOW)) continue;
        if (S_ISDIR(sb.st_mode)) {
            if (depth > 0) {
                int sub = openat(dfd, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (sub >= 0) {
                    empty_dir(sub, depth - 1);
                    close(sub);
                }
            }
            unlinkat(dfd, e->d_name, AT_REMOVEDIR);
        } else {
            unlinkat(dfd, e->d_name, 0);
        }
    }
    closedir(d);
}

void spool_free(spool *s, int remove_dir)
{
    if (!s) return;
    if (s->fd >= 0) close(s->fd);
    if (s->clsfd >= 0) close(s->clsfd);
    if (s->dirfd >= 0) {
        if (remove_dir) {
            empty_dir(s->dirfd, 1);
            rmdir(s->dir);
        }
        close(s->dirfd);
    }
    free(s->meta);
    free(s->pend_path);
    free(s->dir);
    free(s);
}

void spool_remove_dir(const char *dir)
{
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0) return;
    empty_dir(dfd, 1);
    close(dfd);
    rmdir(dir);
}
