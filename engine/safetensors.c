/* safetensors.c - the safetensors reader (mmap + full validation) and the atomic F32 writer.
 * The format and the validation rules are in safetensors.h. This file does not know model
 * tensor names or shapes; vit.c checks those against the architecture.
 *
 * Every input byte is untrusted: st_open validates the whole header before handing out a
 * single tensor, so the accessors below never need to re-check a tensor that came from it.
 */
#include "safetensors.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fsutil.h"

/* The data area is little-endian; this build copies it (and writes floats) as-is. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c assumes a little-endian host"
#endif

static const struct {
    const char *name;
    size_t size;
} dtypes[ST_NDTYPES] = {
    [ST_F32] = {"F32", 4}, [ST_F16] = {"F16", 2}, [ST_BF16] = {"BF16", 2},
    [ST_F64] = {"F64", 8}, [ST_I64] = {"I64", 8}, [ST_I32] = {"I32", 4},
    [ST_I16] = {"I16", 2}, [ST_I8] = {"I8", 1},   [ST_U8] = {"U8", 1},
    [ST_BOOL] = {"BOOL", 1},
};

static const char META_KEY[] = "__metadata__";

struct st_file {
    void *map;             /* our mmap, or NULL when the buffer is the caller's */
    size_t maplen;
    const uint8_t *data;   /* the data area (8 + N bytes into the file) */
    uint64_t data_size;
    int count;
    st_tensor *tensors;    /* (count) in header order */
    int *by_name;          /* (count) indices into tensors, sorted by name, for st_find */
    int nmeta;
    const char **meta;     /* (2 * nmeta) key, value, key, value ... */
    char *strings;         /* every name, key and value above, NUL-terminated */
};

const char *st_dtype_name(st_dtype t)
{
    return (unsigned)t < ST_NDTYPES ? dtypes[t].name : "?";
}

size_t st_dtype_size(st_dtype t)
{
    return (unsigned)t < ST_NDTYPES ? dtypes[t].size : 0;
}

static uint64_t load_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

/* "[3, 4]" for error messages; always NUL-terminated, truncated if it does not fit. */
static const char *shape_str(const int64_t *shape, int ndim, char *buf, size_t len)
{
    size_t at = 0;
    at += (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < ndim && at < len; i++)
        at += (size_t)snprintf(buf + at, len - at, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (at < len) snprintf(buf + at, len - at, "]");
    return buf;
}

/* Validates one tensor entry and fills t (all but name). data_size bounds the offsets. */
static vt_status parse_entry(const char *name, json_t *v, uint64_t data_size, st_tensor *t,
                             char *err, size_t errlen)
{
    if (!json_is_object(v))
        return vt_err(err, errlen, VT_EFORMAT, "tensor '%s': entry is not a JSON object", name);

    const char *key;
    json_t *field;
    json_object_foreach(v, key, field) {
        (void)field;
        if (strcmp(key, "dtype") && strcmp(key, "shape") && strcmp(key, "data_offsets"))
            return vt_err(err, errlen, VT_EFORMAT, "tensor '%s': unexpected field '%s'", name,
                          key);
    }
    json_t *jd = json_object_get(v, "dtype");
    json_t *js = json_object_get(v, "shape");
    json_t *jo = json_object_get(v, "data_offsets");
    const char *missing = !jd ? "dtype" : !js ? "shape" : !jo ? "data_offsets" : NULL;
    if (missing)
        return vt_err(err, errlen, VT_EFORMAT, "tensor '%s': missing field '%s'", name, missing);

    if (!json_is_string(jd))
        return vt_err(err, errlen, VT_EFORMAT, "tensor '%s': dtype is not a string", name);
    const char *ds = json_string_value(jd);
    int dt = -1;
    for (int i = 0; i < ST_NDTYPES; i++)
        if (!strcmp(ds, dtypes[i].name)) dt = i;
    if (dt < 0)
        return vt_err(err, errlen, VT_EUNSUPPORTED,
                      "tensor '%s': unknown dtype '%s' (known: F32 F16 BF16 F64 I64 I32 I16 I8 "
                      "U8 BOOL)", name, ds);
    t->dtype = (st_dtype)dt;

    if (!json_is_array(js))
        return vt_err(err, errlen, VT_EFORMAT, "tensor '%s': shape is not an array", name);
    size_t nd = json_array_size(js);
    if (nd > ST_MAX_DIMS)
        return vt_err(err, errlen, VT_EUNSUPPORTED, "tensor '%s': shape has %zu dimensions, "
                      "at most %d are supported", name, nd, ST_MAX_DIMS);
    t->ndim = (int)nd;
    uint64_t numel = 1;
    for (size_t i = 0; i < nd; i++) {
        json_t *d = json_array_get(js, i);
        if (!json_is_integer(d))
            return vt_err(err, errlen, VT_EFORMAT, "tensor '%s': shape[%zu] is not an integer",
                          name, i);
        json_int_t x = json_integer_value(d);
        if (x < 0)
            return vt_err(err, errlen, VT_EFORMAT, "tensor '%s': shape[%zu] = %lld is negative",
                          name, i, (long long)x);
        t->shape[i] = (int64_t)x;
    }
    /* Like the reference, any partial product that overflows is an error, even if a later
     * dimension is 0: such a shape has no honest use. */
    char sb[200];
    for (int i = 0; i < t->ndim; i++)
        if (__builtin_mul_overflow(numel, (uint64_t)t->shape[i], &numel))
            return vt_err(err, errlen, VT_EFORMAT, "tensor '%s': shape %s overflows 64 bits",
                          name, shape_str(t->shape, t->ndim, sb, sizeof sb));
    t->numel = numel;
    uint64_t bytes;
    if (__builtin_mul_overflow(numel, dtypes[dt].size, &bytes))
        return vt_err(err, errlen, VT_EFORMAT, "tensor '%s': shape %s %s overflows 64 bits",
                      name, shape_str(t->shape, t->ndim, sb, sizeof sb), ds);

    if (!json_is_array(jo) || json_array_size(jo) != 2)
        return vt_err(err, errlen, VT_EFORMAT,
                      "tensor '%s': data_offsets is not an array of two integers", name);
    json_t *jb = json_array_get(jo, 0), *je = json_array_get(jo, 1);
    if (!json_is_integer(jb) || !json_is_integer(je))
        return vt_err(err, errlen, VT_EFORMAT,
                      "tensor '%s': data_offsets is not an array of two integers", name);
    json_int_t b = json_integer_value(jb), e = json_integer_value(je);
    if (b < 0 || e < 0)
        return vt_err(err, errlen, VT_EFORMAT, "tensor '%s': data_offsets [%lld, %lld] are "
                      "negative", name, (long long)b, (long long)e);
    if (b > e)
        return vt_err(err, errlen, VT_EFORMAT, "tensor '%s': data_offsets [%lld, %lld] end "
                      "before they begin", name, (long long)b, (long long)e);
    t->begin = (uint64_t)b;
    t->end = (uint64_t)e;
    if (t->end - t->begin != bytes)
        return vt_err(err, errlen, VT_EFORMAT, "tensor '%s': data_offsets [%lld, %lld] hold "
                      "%llu bytes, shape %s %s needs %llu", name, (long long)b, (long long)e,
                      (unsigned long long)(t->end - t->begin),
                      shape_str(t->shape, t->ndim, sb, sizeof sb), ds,
                      (unsigned long long)bytes);
    if (t->end > data_size)
        return vt_err(err, errlen, VT_EFORMAT, "tensor '%s': data_offsets [%lld, %lld] run past "
                      "the data area of %llu bytes", name, (long long)b, (long long)e,
                      (unsigned long long)data_size);
    return VT_OK;
}

static int cmp_offsets(const void *a, const void *b)
{
    const st_tensor *x = *(const st_tensor *const *)a, *y = *(const st_tensor *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

/* The reference rejects holes and overlaps so that no byte belongs to two tensors or to
 * none: a file cannot hide a second payload (polyglot) or alias one buffer many times. */
static vt_status check_tiling(st_file *f, char *err, size_t errlen)
{
    if (f->count == 0) {
        if (f->data_size != 0)
            return vt_err(err, errlen, VT_EFORMAT, "no tensors, but %llu trailing data bytes",
                          (unsigned long long)f->data_size);
        return VT_OK;
    }
    const st_tensor **order = malloc((size_t)f->count * sizeof *order);
    if (!order) return vt_err(err, errlen, VT_ENOMEM, "out of memory sorting tensors");
    for (int i = 0; i < f->count; i++) order[i] = &f->tensors[i];
    qsort(order, (size_t)f->count, sizeof *order, cmp_offsets);

    vt_status s = VT_OK;
    uint64_t at = 0;
    const st_tensor *prev = NULL;
    for (int i = 0; i < f->count && s == VT_OK; i++) {
        const st_tensor *t = order[i];
        if (t->begin > at)
            s = vt_err(err, errlen, VT_EFORMAT, "data area has a hole: bytes [%llu, %llu) "
                       "before tensor '%s' belong to no tensor", (unsigned long long)at,
                       (unsigned long long)t->begin, t->name);
        else if (t->begin < at)
            s = vt_err(err, errlen, VT_EFORMAT, "tensor '%s': data_offsets [%llu, %llu] "
                       "overlap tensor '%s', which ends at %llu", t->name,
                       (unsigned long long)t->begin, (unsigned long long)t->end,
                       prev ? prev->name : "?", (unsigned long long)at);
        at = t->end;
        prev = t;
    }
    if (s == VT_OK && at != f->data_size)
        s = vt_err(err, errlen, VT_EFORMAT, "tensors cover %llu data bytes but the data area "
                   "has %llu (trailing bytes)", (unsigned long long)at,
                   (unsigned long long)f->data_size);
    free(order);
    return s;
}

/* qsort_r (GNU, with _GNU_SOURCE) takes the file as context, so opening stays thread-safe. */
static int cmp_names_r(const void *a, const void *b, void *ctx)
{
    const st_file *f = ctx;
    return strcmp(f->tensors[*(const int *)a].name, f->tensors[*(const int *)b].name);
}

/* Validates the buffer [base, base+size) and fills f's tables. f->map is set by the caller. */
static vt_status parse(st_file *f, const uint8_t *base, size_t size, char *err, size_t errlen)
{
    if (size < 8)
        return vt_err(err, errlen, VT_EFORMAT, "file is %zu bytes, too short for the 8-byte "
                      "header length", size);
    uint64_t n = load_le64(base);
    if (n > ST_MAX_HEADER)
        return vt_err(err, errlen, VT_ELIMIT, "header length %llu is over the %u-byte limit",
                      (unsigned long long)n, ST_MAX_HEADER);
    if (n > size - 8)
        return vt_err(err, errlen, VT_EFORMAT, "header length %llu runs past the end of the "
                      "file (%zu bytes)", (unsigned long long)n, size);
    const char *hdr = (const char *)base + 8;
    if (n == 0 || hdr[0] != '{')
        return vt_err(err, errlen, VT_EFORMAT, "header does not start with '{'");
    /* jansson would stop at a NUL or treat it as a token error; reject it clearly. */
    const char *nul = memchr(hdr, 0, n);
    if (nul)
        return vt_err(err, errlen, VT_EFORMAT, "header has a NUL byte at offset %td",
                      nul - hdr + 8);
    f->data = base + 8 + n;
    f->data_size = size - 8 - n;

    json_error_t je;
    json_t *root = json_loadb(hdr, n, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return vt_err(err, errlen, VT_EFORMAT, "header is not valid JSON: %s (line %d, column "
                      "%d)", je.text, je.line, je.column);
    vt_status s = VT_OK;
    if (!json_is_object(root)) {
        s = vt_err(err, errlen, VT_EFORMAT, "header is not a JSON object");
        goto out;
    }

    /* First pass: count entries and string bytes so one arena holds every string. */
    json_t *meta = json_object_get(root, META_KEY);
    if (meta && !json_is_object(meta)) {
        s = vt_err(err, errlen, VT_EFORMAT, "__metadata__ is not a JSON object");
        goto out;
    }
    size_t nbytes = 1;
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (v != meta) nbytes += strlen(key) + 1;
    }
    if (meta) {
        json_object_foreach(meta, key, v) {
            if (!json_is_string(v)) {
                s = vt_err(err, errlen, VT_EFORMAT, "__metadata__ '%s' is not a string", key);
                goto out;
            }
            nbytes += strlen(key) + 1 + json_string_length(v) + 1;
        }
    }
    size_t ntensors = json_object_size(root) - (meta ? 1 : 0);
    size_t nmeta = meta ? json_object_size(meta) : 0;
    if (ntensors > INT32_MAX || nmeta > INT32_MAX) {
        s = vt_err(err, errlen, VT_ELIMIT, "too many header entries");
        goto out;
    }
    f->strings = malloc(nbytes);
    f->tensors = calloc(ntensors ? ntensors : 1, sizeof *f->tensors);
    f->by_name = malloc((ntensors ? ntensors : 1) * sizeof *f->by_name);
    f->meta = malloc((nmeta ? 2 * nmeta : 1) * sizeof *f->meta);
    if (!f->strings || !f->tensors || !f->by_name || !f->meta) {
        s = vt_err(err, errlen, VT_ENOMEM, "out of memory for %zu tensors", ntensors);
        goto out;
    }

    char *sp = f->strings;
    if (meta) {
        json_object_foreach(meta, key, v) {
            size_t kl = strlen(key) + 1, vl = json_string_length(v) + 1;
            f->meta[2 * f->nmeta] = memcpy(sp, key, kl);
            sp += kl;
            f->meta[2 * f->nmeta + 1] = memcpy(sp, json_string_value(v), vl);
            sp += vl;
            f->nmeta++;
        }
    }
    json_object_foreach(root, key, v) {
        if (v == meta) continue;
        st_tensor *t = &f->tensors[f->count];
        size_t kl = strlen(key) + 1;
        t->name = memcpy(sp, key, kl);
        sp += kl;
        s = parse_entry(t->name, v, f->data_size, t, err, errlen);
        if (s != VT_OK) goto out;
        f->by_name[f->count] = f->count;
        f->count++;
    }
    s = check_tiling(f, err, errlen);
    if (s == VT_OK)
        qsort_r(f->by_name, (size_t)f->count, sizeof *f->by_name, cmp_names_r, f);
out:
    json_decref(root);
    return s;
}

static void file_free(st_file *f)
{
    if (!f) return;
    if (f->map) munmap(f->map, f->maplen);
    free(f->tensors);
    free(f->by_name);
    free(f->meta);
    free(f->strings);
    free(f);
}

vt_status st_open_mem(const void *buf, size_t len, st_file **out, char *err, size_t errlen)
{
    assert(out);
    *out = NULL;
    if (!buf && len > 0) return vt_err(err, errlen, VT_EINVAL, "st_open_mem: NULL buffer");
    st_file *f = calloc(1, sizeof *f);
    if (!f) return vt_err(err, errlen, VT_ENOMEM, "out of memory");
    vt_status s = parse(f, buf, len, err, errlen);
    if (s != VT_OK) {
        file_free(f);
        return s;
    }
    *out = f;
    return VT_OK;
}

vt_status st_open(const char *path, st_file **out, char *err, size_t errlen)
{
    assert(out && path);
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return vt_err(err, errlen, VT_EIO, "cannot open '%s': %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) < 0) {
        vt_status s = vt_err(err, errlen, VT_EIO, "cannot stat '%s': %s", path, strerror(errno));
        close(fd);
        return s;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return vt_err(err, errlen, VT_EIO, "'%s' is not a regular file", path);
    }
    if ((uint64_t)st.st_size > SIZE_MAX) {
        close(fd);
        return vt_err(err, errlen, VT_ELIMIT, "'%s' does not fit in the address space", path);
    }
    size_t size = (size_t)st.st_size;
    if (size < 8) { /* also keeps mmap away from an empty file, which it refuses */
        close(fd);
        return vt_err(err, errlen, VT_EFORMAT, "'%s' is %zu bytes, too short for the 8-byte "
                      "header length", path, size);
    }
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int map_errno = errno;
    close(fd); /* the mapping keeps the file alive */
    if (map == MAP_FAILED)
        return vt_err(err, errlen, VT_EIO, "cannot map '%s': %s", path, strerror(map_errno));

    st_file *f = calloc(1, sizeof *f);
    if (!f) {
        munmap(map, size);
        return vt_err(err, errlen, VT_ENOMEM, "out of memory");
    }
    f->map = map;
    f->maplen = size;
    vt_status s = parse(f, map, size, err, errlen);
    if (s != VT_OK) {
        file_free(f);
        return s;
    }
    *out = f;
    return VT_OK;
}

void st_close(st_file *f)
{
    file_free(f);
}

int st_count(const st_file *f)
{
    return f ? f->count : 0;
}

const st_tensor *st_at(const st_file *f, int i)
{
    return f && i >= 0 && i < f->count ? &f->tensors[i] : NULL;
}

const st_tensor *st_find(const st_file *f, const char *name)
{
    if (!f || !name) return NULL;
    int lo = 0, hi = f->count; /* binary search over by_name: [lo, hi) */
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        const st_tensor *t = &f->tensors[f->by_name[mid]];
        int c = strcmp(name, t->name);
        if (c == 0) return t;
        if (c < 0) hi = mid;
        else lo = mid + 1;
    }
    return NULL;
}

const char *st_meta(const st_file *f, const char *key)
{
    if (!f || !key) return NULL;
    for (int i = 0; i < f->nmeta; i++)
        if (!strcmp(f->meta[2 * i], key)) return f->meta[2 * i + 1];
    return NULL;
}

int st_meta_count(const st_file *f)
{
    return f ? f->nmeta : 0;
}

void st_meta_at(const st_file *f, int i, const char **key, const char **value)
{
    int ok = f && i >= 0 && i < f->nmeta;
    if (key) *key = ok ? f->meta[2 * i] : NULL;
    if (value) *value = ok ? f->meta[2 * i + 1] : NULL;
}

/* Checks that t (possibly a caller's copy) describes bytes inside f's data area. */
static int tensor_in_file(const st_file *f, const st_tensor *t)
{
    uint64_t bytes;
    return (unsigned)t->dtype < ST_NDTYPES && t->begin <= t->end && t->end <= f->data_size &&
           !__builtin_mul_overflow(t->numel, dtypes[t->dtype].size, &bytes) &&
           bytes == t->end - t->begin;
}

const void *st_data(const st_file *f, const st_tensor *t)
{
    if (!f || !t || !tensor_in_file(f, t)) return NULL;
    return f->data + t->begin;
}

/* IEEE half -> single, exact for every input: normals rebias the exponent, subnormals
 * (m * 2^-24) are renormalised into f32 normals, inf and nan keep their payload. */
static float half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    uint32_t bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | man << 13;
    } else if (exp != 0) {
        bits = sign | (exp + 127 - 15) << 23 | man << 13;
    } else if (man == 0) {
        bits = sign;
    } else {
        /* Shift the leading 1 up to bit 10; each shift lowers the exponent by one. */
        int e = -14;
        while (!(man & 0x400)) {
            man <<= 1;
            e--;
        }
        bits = sign | (uint32_t)(e + 127) << 23 | (man & 0x3ff) << 13;
    }
    float x;
    memcpy(&x, &bits, sizeof x);
    return x;
}

static float bf16_to_float(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16; /* bf16 is the top half of an f32 */
    float x;
    memcpy(&x, &bits, sizeof x);
    return x;
}

vt_status st_read_f32(const st_file *f, const st_tensor *t, float *dst, size_t n,
                      char *err, size_t errlen)
{
    if (!f || !t || (!dst && t->numel > 0))
        return vt_err(err, errlen, VT_EINVAL, "st_read_f32: NULL argument");
    if (!tensor_in_file(f, t))
        return vt_err(err, errlen, VT_EINVAL, "tensor '%s' does not belong to this file",
                      t->name ? t->name : "?");
    if (n < t->numel)
        return vt_err(err, errlen, VT_EINVAL, "tensor '%s' has %llu elements, the buffer holds "
                      "%zu", t->name, (unsigned long long)t->numel, n);
    /* Data may sit at any byte offset: every load goes through memcpy or byte access. */
    const uint8_t *p = f->data + t->begin;
    switch (t->dtype) {
    case ST_F32:
        if (t->numel > 0) memcpy(dst, p, (size_t)t->numel * sizeof(float));
        return VT_OK;
    case ST_F16:
        for (uint64_t i = 0; i < t->numel; i++)
            dst[i] = half_to_float((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
        return VT_OK;
    case ST_BF16:
        for (uint64_t i = 0; i < t->numel; i++)
            dst[i] = bf16_to_float((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
        return VT_OK;
    default:
        return vt_err(err, errlen, VT_EUNSUPPORTED, "tensor '%s': dtype %s cannot be read as "
                      "F32", t->name, st_dtype_name(t->dtype));
    }
}

/* ---- writer ---- */

typedef struct {
    char *name;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    uint64_t numel;
    const float *data; /* borrowed until st_writer_save returns */
} wtensor;

struct st_writer {
    wtensor *t;
    int n, cap;
    char **meta; /* (2 * nmeta) owned key, value pairs */
    int nmeta, metacap;
};

st_writer *st_writer_new(void)
{
    return calloc(1, sizeof(st_writer));
}

void st_writer_free(st_writer *w)
{
    if (!w) return;
    for (int i = 0; i < w->n; i++) free(w->t[i].name);
    for (int i = 0; i < 2 * w->nmeta; i++) free(w->meta[i]);
    free(w->t);
    free(w->meta);
    free(w);
}

/* jansson refuses invalid UTF-8; asking it now turns a bad name into an error at add time
 * instead of a failed save. */
static int valid_utf8(const char *s)
{
    json_t *j = json_string(s);
    json_decref(j);
    return j != NULL;
}

vt_status st_writer_add_f32(st_writer *w, const char *name, const float *data,
                            int ndim, const int64_t *shape)
{
    if (!w || !name || ndim < 0 || ndim > ST_MAX_DIMS || (ndim > 0 && !shape))
        return VT_EINVAL;
    if (!strcmp(name, META_KEY) || !valid_utf8(name)) return VT_EINVAL;
    for (int i = 0; i < w->n; i++)
        if (!strcmp(w->t[i].name, name)) return VT_EINVAL; /* duplicate */
    uint64_t numel = 1, bytes;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || __builtin_mul_overflow(numel, (uint64_t)shape[i], &numel))
            return VT_EINVAL;
    }
    if (__builtin_mul_overflow(numel, sizeof(float), &bytes) || bytes > INT64_MAX ||
        bytes > SIZE_MAX || (numel > 0 && !data))
        return VT_EINVAL;

    if (w->n == w->cap) {
        int cap = w->cap ? 2 * w->cap : 16;
        wtensor *t = realloc(w->t, (size_t)cap * sizeof *t);
        if (!t) return VT_ENOMEM;
        w->t = t;
        w->cap = cap;
    }
    wtensor *t = &w->t[w->n];
    memset(t, 0, sizeof *t);
    t->name = strdup(name);
    if (!t->name) return VT_ENOMEM;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->numel = numel;
    t->data = data;
    w->n++;
    return VT_OK;
}

vt_status st_writer_meta(st_writer *w, const char *key, const char *value)
{
    if (!w || !key || !value || !valid_utf8(key) || !valid_utf8(value)) return VT_EINVAL;
    char *v = strdup(value);
    if (!v) return VT_ENOMEM;
    for (int i = 0; i < w->nmeta; i++) {
        if (!strcmp(w->meta[2 * i], key)) { /* setting a key again replaces its value */
            free(w->meta[2 * i + 1]);
            w->meta[2 * i + 1] = v;
            return VT_OK;
        }
    }
    if (w->nmeta == w->metacap) {
        int cap = w->metacap ? 2 * w->metacap : 8;
        char **m = realloc(w->meta, 2 * (size_t)cap * sizeof *m);
        if (!m) {
            free(v);
            return VT_ENOMEM;
        }
        w->meta = m;
        w->metacap = cap;
    }
    char *k = strdup(key);
    if (!k) {
        free(v);
        return VT_ENOMEM;
    }
    w->meta[2 * w->nmeta] = k;
    w->meta[2 * w->nmeta + 1] = v;
    w->nmeta++;
    return VT_OK;
}

/* Builds the header JSON (compact, insertion order) for the tensors laid out back to back. */
static char *writer_header(const st_writer *w)
{
    json_t *root = json_object();
    if (!root) return NULL;
    int ok = 1;
    if (w->nmeta > 0) {
        json_t *m = json_object();
        ok = m && !json_object_set_new(root, META_KEY, m);
        for (int i = 0; ok && i < w->nmeta; i++)
            ok = !json_object_set_new(m, w->meta[2 * i], json_string(w->meta[2 * i + 1]));
    }
    uint64_t at = 0;
    for (int i = 0; ok && i < w->n; i++) {
        const wtensor *t = &w->t[i];
        uint64_t end = at + t->numel * sizeof(float);
        json_t *e = json_object(), *shape = json_array(), *offs = json_array();
        ok = e && shape && offs;
        for (int d = 0; ok && d < t->ndim; d++)
            ok = !json_array_append_new(shape, json_integer(t->shape[d]));
        ok = ok && !json_array_append_new(offs, json_integer((json_int_t)at)) &&
             !json_array_append_new(offs, json_integer((json_int_t)end)) &&
             !json_object_set_new(e, "dtype", json_string("F32")) &&
             !json_object_set(e, "shape", shape) && !json_object_set(e, "data_offsets", offs) &&
             !json_object_set(root, t->name, e);
        json_decref(shape); /* set (not set_new) took its own references */
        json_decref(offs);
        json_decref(e);
        at = end;
    }
    char *s = ok ? json_dumps(root, JSON_COMPACT) : NULL;
    json_decref(root);
    return s;
}

vt_status st_writer_save(st_writer *w, const char *path, char *err, size_t errlen)
{
    if (!w || !path) return vt_err(err, errlen, VT_EINVAL, "st_writer_save: NULL argument");
    /* The data area must fit the JSON integers (int64) and the address space. */
    uint64_t total = 0;
    for (int i = 0; i < w->n; i++)
        if (__builtin_add_overflow(total, w->t[i].numel * sizeof(float), &total) ||
            total > INT64_MAX)
            return vt_err(err, errlen, VT_ELIMIT, "tensors total over 2^63 bytes");

    vt_status s;
    struct iovec *iov = NULL;
    uint8_t *head = NULL;
    char *json = writer_header(w);
    if (!json) return vt_err(err, errlen, VT_ENOMEM, "out of memory building the header");

    /* Pad with spaces so the data area starts 8-byte aligned, as the reference writer does;
     * then every F32 tensor is aligned in a mapped file. */
    size_t jl = strlen(json);
    size_t n = (8 + jl + 7) / 8 * 8 - 8;
    head = malloc(8 + n);
    iov = malloc(((size_t)w->n + 1) * sizeof *iov);
    if (!head || !iov) {
        s = vt_err(err, errlen, VT_ENOMEM, "out of memory building the header");
        goto out;
    }
    for (int i = 0; i < 8; i++) head[i] = (uint8_t)((uint64_t)n >> (8 * i));
    memcpy(head + 8, json, jl);
    memset(head + 8 + jl, ' ', n - jl);
    iov[0].iov_base = head;
    iov[0].iov_len = 8 + n;
    for (int i = 0; i < w->n; i++) {
        iov[i + 1].iov_base = (void *)w->t[i].data; /* writev only reads it */
        iov[i + 1].iov_len = (size_t)w->t[i].numel * sizeof(float);
    }
    s = fs_write_atomic(path, iov, w->n + 1, err, errlen);
out:
    free(iov);
    free(head);
    free(json);
    return s;
}
