/* npy.c - reads and writes NumPy .npy files of float32 (see npy.h). Not a general NumPy
 * reader: one array, '<f4' or '<f8', C order; everything else is refused with a reason.
 *
 * The header is a Python dict literal. Rather than search it for substrings, it is parsed
 * by a small recursive-descent reader of exactly the grammar NumPy writes (strings,
 * True/False, tuples of integers), so "(3,)", "()", "(2, 3)" and odd spacing all parse and
 * anything else is an error naming the offset.
 */
#include "npy.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fsutil.h"

/* Data is little-endian ('<'); this build copies it (and writes floats) as-is. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "npy.c assumes a little-endian host"
#endif

/* NumPy itself refuses headers over 10,000 bytes unless told otherwise; a float array's
 * header is under 300, so anything past this cap is not a file we should parse. */
#define NPY_HEADER_CAP 65536u

static const char magic[6] = {'\x93', 'N', 'U', 'M', 'P', 'Y'};

/* Formats "path: detail" into err. */
static vt_status fail(char *err, size_t errlen, vt_status s, const char *path,
                      const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static vt_status fail(char *err, size_t errlen, vt_status s, const char *path,
                      const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return vt_err(err, errlen, s, "%s: %s", path, msg);
}

/* ---- header dict parser ---- */

typedef struct {
    const char *s, *p, *end; /* header text [s, end), cursor p */
    char descr[16];
    int have_descr, have_fortran, have_shape;
    int fortran;
    int ndim;
    int64_t shape[NPY_MAX_DIMS];
    vt_status st;            /* set with msg on the first error */
    char msg[160];
} hdr_parser;

static int perr(hdr_parser *h, vt_status s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int perr(hdr_parser *h, vt_status s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(h->msg, sizeof h->msg, fmt, ap);
    va_end(ap);
    h->st = s;
    return -1;
}

static long off(const hdr_parser *h)
{
    return (long)(h->p - h->s);
}

static void skip_ws(hdr_parser *h)
{
    while (h->p < h->end && (*h->p == ' ' || *h->p == '\t' || *h->p == '\n' || *h->p == '\r'))
        h->p++;
}

static int peek(const hdr_parser *h)
{
    return h->p < h->end ? (unsigned char)*h->p : -1;
}

static int expect(hdr_parser *h, char c)
{
    skip_ws(h);
    if (peek(h) != c)
        return perr(h, VT_EFORMAT, "header: expected '%c' at offset %ld", c, off(h));
    h->p++;
    return 0;
}

/* A quoted string without escapes (NumPy never writes any in these fields). */
static int parse_string(hdr_parser *h, char *out, size_t cap)
{
    skip_ws(h);
    int q = peek(h);
    if (q != '\'' && q != '"')
        return perr(h, VT_EFORMAT, "header: expected a quoted string at offset %ld", off(h));
    const char *start = ++h->p;
    while (h->p < h->end && *h->p != q) {
        if (*h->p == '\\' || *h->p == '\n')
            return perr(h, VT_EFORMAT, "header: unsupported character in string at offset %ld",
                        off(h));
        h->p++;
    }
    if (h->p >= h->end)
        return perr(h, VT_EFORMAT, "header: unterminated string");
    size_t len = (size_t)(h->p - start);
    h->p++;
    if (len >= cap)
        return perr(h, VT_EFORMAT, "header: string of %zu bytes at offset %ld is too long", len,
                    (long)(start - h->s));
    memcpy(out, start, len);
    out[len] = 0;
    return 0;
}

static int parse_bool(hdr_parser *h, int *out)
{
    skip_ws(h);
    size_t left = (size_t)(h->end - h->p);
    if (left >= 4 && !memcmp(h->p, "True", 4)) {
        *out = 1;
        h->p += 4;
    } else if (left >= 5 && !memcmp(h->p, "False", 5)) {
        *out = 0;
        h->p += 5;
    } else {
        return perr(h, VT_EFORMAT, "header: expected True or False at offset %ld", off(h));
    }
    return 0;
}

static int parse_dim(hdr_parser *h, int64_t *out)
{
    skip_ws(h);
    if (peek(h) == '-')
        return perr(h, VT_EFORMAT, "header: negative dimension at offset %ld", off(h));
    if (peek(h) < '0' || peek(h) > '9')
        return perr(h, VT_EFORMAT, "header: expected a dimension at offset %ld", off(h));
    int64_t v = 0;
    while (peek(h) >= '0' && peek(h) <= '9') {
        int d = *h->p - '0';
        if (v > (INT64_MAX - d) / 10)
            return perr(h, VT_EFORMAT, "header: dimension at offset %ld overflows 64 bits",
                        off(h));
        v = v * 10 + d;
        h->p++;
    }
    if (peek(h) == 'L') h->p++; /* Python 2 NumPy wrote long ints as "3L" */
    *out = v;
    return 0;
}

/* "()" or "(d,)" or "(d0, d1, ...)" with an optional trailing comma. As in Python, "(3)" is
 * the integer 3, not a tuple, and NumPy refuses it; so do we. */
static int parse_shape(hdr_parser *h)
{
    if (expect(h, '(') < 0) return -1;
    h->ndim = 0;
    skip_ws(h);
    if (peek(h) == ')') {
        h->p++;
        return 0;
    }
    for (;;) {
        int64_t d = 0;
        if (h->ndim == NPY_MAX_DIMS)
            return perr(h, VT_EUNSUPPORTED, "shape has more than %d dimensions", NPY_MAX_DIMS);
        if (parse_dim(h, &d) < 0) return -1;
        h->shape[h->ndim++] = d;
        skip_ws(h);
        if (peek(h) == ')') {
            if (h->ndim == 1)
                return perr(h, VT_EFORMAT, "header: shape (%lld) is not a tuple (a 1-tuple "
                            "needs a trailing comma)", (long long)d);
            h->p++;
            return 0;
        }
        if (expect(h, ',') < 0) return -1;
        skip_ws(h);
        if (peek(h) == ')') {
            h->p++;
            return 0;
        }
    }
}

static int parse_header(hdr_parser *h)
{
    if (expect(h, '{') < 0) return -1;
    for (;;) {
        skip_ws(h);
        if (peek(h) == '}') break;
        char key[32];
        if (parse_string(h, key, sizeof key) < 0) return -1;
        if (expect(h, ':') < 0) return -1;
        int *seen;
        int rc;
        if (!strcmp(key, "descr")) {
            seen = &h->have_descr;
            rc = parse_string(h, h->descr, sizeof h->descr);
        } else if (!strcmp(key, "fortran_order")) {
            seen = &h->have_fortran;
            rc = parse_bool(h, &h->fortran);
        } else if (!strcmp(key, "shape")) {
            seen = &h->have_shape;
            rc = parse_shape(h);
        } else {
            return perr(h, VT_EFORMAT, "header: unexpected key '%s'", key);
        }
        if (rc < 0) return -1;
        if (*seen) return perr(h, VT_EFORMAT, "header: duplicate key '%s'", key);
        *seen = 1;
        skip_ws(h);
        if (peek(h) == ',') {
            h->p++;
            continue;
        }
        if (peek(h) != '}')
            return perr(h, VT_EFORMAT, "header: expected ',' or '}' at offset %ld", off(h));
    }
    h->p++; /* '}' */
    skip_ws(h);
    if (h->p != h->end)
        return perr(h, VT_EFORMAT, "header: unexpected text after the dict at offset %ld",
                    off(h));
    const char *missing = !h->have_descr ? "descr" : !h->have_fortran ? "fortran_order"
                        : !h->have_shape ? "shape" : NULL;
    if (missing) return perr(h, VT_EFORMAT, "header: missing key '%s'", missing);
    return 0;
}

/* ---- reader ---- */

static void convert_f8(float *dst, const unsigned char *src, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        double d;
        memcpy(&d, src + 8 * i, sizeof d);
        dst[i] = (float)d;
    }
}

/* Reads the data (already checked to be exactly numel elements of esize bytes) into out. */
static vt_status read_data(int fd, off_t at, int esize, uint64_t numel, float *out,
                           char *err, size_t errlen)
{
    if (esize == 4) return fs_read_at(fd, out, (size_t)numel * 4, at, err, errlen);
    enum { CHUNK = 8192 }; /* doubles per read, so '<f8' needs no second full-size buffer */
    unsigned char *buf = malloc(CHUNK * 8);
    if (!buf) return vt_err(err, errlen, VT_ENOMEM, "out of memory");
    vt_status s = VT_OK;
    for (uint64_t i = 0; i < numel && s == VT_OK; i += CHUNK) {
        size_t n = numel - i < CHUNK ? (size_t)(numel - i) : CHUNK;
        s = fs_read_at(fd, buf, n * 8, at + (off_t)(i * 8), err, errlen);
        if (s == VT_OK) convert_f8(out + i, buf, n);
    }
    free(buf);
    return s;
}

vt_status npy_read_f32(const char *path, float **data, int *ndim, int64_t shape[NPY_MAX_DIMS],
                       char *err, size_t errlen)
{
    if (!path || !data || !ndim || !shape)
        return vt_err(err, errlen, VT_EINVAL, "npy_read_f32: NULL argument");
    *data = NULL;
    *ndim = 0;

    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return fail(err, errlen, VT_EIO, path, "cannot open: %s", strerror(errno));
    vt_status s;
    char *text = NULL;
    float *out = NULL;
    struct stat st;
    if (fstat(fd, &st) < 0) {
        s = fail(err, errlen, VT_EIO, path, "cannot stat: %s", strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        s = fail(err, errlen, VT_EIO, path, "not a regular file");
        goto out;
    }
    uint64_t size = (uint64_t)st.st_size;

    unsigned char pre[12];
    if (size < 10) {
        s = fail(err, errlen, VT_EFORMAT, path, "%llu bytes is too short for a .npy file",
                 (unsigned long long)size);
        goto out;
    }
    s = fs_read_at(fd, pre, size < 12 ? 10 : 12, 0, err, errlen);
    if (s != VT_OK) goto out;
    if (memcmp(pre, magic, sizeof magic)) {
        s = fail(err, errlen, VT_EFORMAT, path, "not a .npy file (bad magic)");
        goto out;
    }
    int major = pre[6], minor = pre[7];
    if (major < 1 || major > 3 || minor != 0) {
        s = fail(err, errlen, VT_EUNSUPPORTED, path, ".npy format version %d.%d is not "
                 "supported (1.0, 2.0, 3.0 are)", major, minor);
        goto out;
    }
    uint64_t hstart = major == 1 ? 10 : 12, hlen;
    if (size < hstart) {
        s = fail(err, errlen, VT_EFORMAT, path, "file ends inside the header length");
        goto out;
    }
    hlen = major == 1 ? (uint64_t)pre[8] | (uint64_t)pre[9] << 8
                      : (uint64_t)pre[8] | (uint64_t)pre[9] << 8 | (uint64_t)pre[10] << 16 |
                            (uint64_t)pre[11] << 24;
    if (hlen > NPY_HEADER_CAP) {
        s = fail(err, errlen, VT_ELIMIT, path, "header of %llu bytes is over the %u-byte limit",
                 (unsigned long long)hlen, NPY_HEADER_CAP);
        goto out;
    }
    if (hlen > size - hstart) {
        s = fail(err, errlen, VT_EFORMAT, path, "header of %llu bytes runs past the end of the "
                 "file (%llu bytes)", (unsigned long long)hlen, (unsigned long long)size);
        goto out;
    }
    text = malloc(hlen + 1);
    if (!text) {
        s = vt_err(err, errlen, VT_ENOMEM, "out of memory");
        goto out;
    }
    s = fs_read_at(fd, text, hlen, (off_t)hstart, err, errlen);
    if (s != VT_OK) goto out;
    text[hlen] = 0;

    hdr_parser h = {.s = text, .p = text, .end = text + hlen, .st = VT_OK};
    if (parse_header(&h) < 0) {
        s = fail(err, errlen, h.st, path, "%s", h.msg);
        goto out;
    }
    int esize = !strcmp(h.descr, "<f4") ? 4 : !strcmp(h.descr, "<f8") ? 8 : 0;
    if (!esize) {
        s = fail(err, errlen, VT_EUNSUPPORTED, path, "dtype '%s' is not supported (only '<f4' "
                 "and '<f8')", h.descr);
        goto out;
    }
    if (h.fortran) {
        s = fail(err, errlen, VT_EUNSUPPORTED, path, "fortran_order True is not supported "
                 "(C order only)");
        goto out;
    }
    uint64_t numel = 1, bytes;
    for (int i = 0; i < h.ndim; i++) {
        if (__builtin_mul_overflow(numel, (uint64_t)h.shape[i], &numel)) {
            s = fail(err, errlen, VT_EFORMAT, path, "shape overflows 64 bits");
            goto out;
        }
    }
    uint64_t have = size - hstart - hlen;
    if (__builtin_mul_overflow(numel, (uint64_t)esize, &bytes) || bytes != have) {
        char sb[200];
        size_t at = (size_t)snprintf(sb, sizeof sb, "(");
        for (int i = 0; i < h.ndim && at < sizeof sb; i++)
            at += (size_t)snprintf(sb + at, sizeof sb - at, "%s%lld", i ? ", " : "",
                                   (long long)h.shape[i]);
        if (at < sizeof sb) snprintf(sb + at, sizeof sb - at, "%s)", h.ndim == 1 ? "," : "");
        s = fail(err, errlen, VT_EFORMAT, path, "shape %s '%s' needs %llu data bytes, the file "
                 "has %llu after the header", sb, h.descr,
                 (unsigned long long)(numel * (uint64_t)esize), (unsigned long long)have);
        goto out;
    }
    if (numel > SIZE_MAX / sizeof(float)) {
        s = fail(err, errlen, VT_ELIMIT, path, "array does not fit in memory");
        goto out;
    }
    out = malloc(numel ? (size_t)numel * sizeof(float) : 1);
    if (!out) {
        s = fail(err, errlen, VT_ENOMEM, path, "out of memory for %llu floats",
                 (unsigned long long)numel);
        goto out;
    }
    s = read_data(fd, (off_t)(hstart + hlen), esize, numel, out, err, errlen);
    if (s != VT_OK) goto out;

    *data = out;
    out = NULL;
    *ndim = h.ndim;
    for (int i = 0; i < h.ndim; i++) shape[i] = h.shape[i];
out:
    free(out);
    free(text);
    close(fd);
    return s;
}

/* ---- writer ---- */

vt_status npy_write_f32(const char *path, const float *data, int ndim, const int64_t *shape,
                        char *err, size_t errlen)
{
    if (!path || ndim < 0 || ndim > NPY_MAX_DIMS || (ndim > 0 && !shape))
        return vt_err(err, errlen, VT_EINVAL, "npy_write_f32: bad arguments (ndim %d)", ndim);
    uint64_t numel = 1, bytes;
    for (int i = 0; i < ndim; i++)
        if (shape[i] < 0 || __builtin_mul_overflow(numel, (uint64_t)shape[i], &numel))
            return vt_err(err, errlen, VT_EINVAL, "npy_write_f32: bad shape[%d] = %lld", i,
                          (long long)shape[i]);
    if (__builtin_mul_overflow(numel, sizeof(float), &bytes) || bytes > SIZE_MAX)
        return vt_err(err, errlen, VT_EINVAL, "npy_write_f32: array too large");
    if (numel > 0 && !data) return vt_err(err, errlen, VT_EINVAL, "npy_write_f32: NULL data");

    /* The dict exactly as NumPy writes it, then spaces and '\n' up to a multiple of 64 so
     * the data is aligned for anyone who maps the file. 8 dims of 19 digits fit easily. */
    char head[512];
    size_t n = 10;
    n += (size_t)snprintf(head + n, sizeof head - n,
                          "{'descr': '<f4', 'fortran_order': False, 'shape': (");
    for (int i = 0; i < ndim; i++)
        n += (size_t)snprintf(head + n, sizeof head - n, "%s%lld", i ? ", " : "",
                              (long long)shape[i]);
    n += (size_t)snprintf(head + n, sizeof head - n, "%s), }", ndim == 1 ? "," : "");
    size_t total = (n + 1 + 63) / 64 * 64;
    if (total > sizeof head) /* cannot happen with NPY_MAX_DIMS <= 8 */
        return vt_err(err, errlen, VT_EINVAL, "npy_write_f32: header too long");
    memset(head + n, ' ', total - 1 - n);
    head[total - 1] = '\n';
    memcpy(head, magic, sizeof magic);
    head[6] = 1;
    head[7] = 0;
    head[8] = (char)((total - 10) & 0xff);
    head[9] = (char)((total - 10) >> 8);

    struct iovec iov[2] = {
        {.iov_base = head, .iov_len = total},
        {.iov_base = (void *)data, .iov_len = (size_t)bytes}, /* writev only reads it */
    };
    return fs_write_atomic(path, iov, 2, err, errlen);
}
