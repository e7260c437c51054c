/* safetensors.h - reader and atomic writer for the safetensors checkpoint format.
 *
 * Format (huggingface safetensors, as vitd reads and writes it):
 *   bytes [0, 8)        u64 little-endian N: length of the JSON header
 *   bytes [8, 8+N)      UTF-8 JSON object, first byte '{', may be padded with trailing spaces:
 *                         "__metadata__": { "key": "string value", ... }        (optional)
 *                         "<tensor name>": { "dtype": "F32"|"F16"|"BF16"|...,
 *                                            "shape": [d0, d1, ...],
 *                                            "data_offsets": [BEGIN, END] }
 *   bytes [8+N, EOF)    the data area; BEGIN/END are relative to its start, END exclusive.
 *                       Data is little-endian, row-major.
 * Validation (st_open rejects the file, naming the field or tensor, when any fails):
 *   N <= ST_MAX_HEADER and 8+N <= file size; header is a JSON object without duplicate keys;
 *   __metadata__ maps strings to strings; every entry has exactly a known dtype string, a shape
 *   of non-negative integers (at most ST_MAX_DIMS), two integer offsets with BEGIN <= END;
 *   END - BEGIN = numel x dtype size (overflow-checked); sorted by BEGIN the tensors tile the
 *   data area from 0 with no hole and no overlap, and the last END equals the data size.
 *
 * Ownership: an st_file owns the mapped file and every string it hands out; they live until
 * st_close. The reader is read-only after st_open, so one st_file may be read from several
 * threads. The writer is single-threaded. Nothing here prints.
 */
#ifndef VT_SAFETENSORS_H
#define VT_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define ST_MAX_HEADER 100000000u /* bytes, the reference implementation's cap */
#define ST_MAX_DIMS 8

typedef enum {
    ST_F32, ST_F16, ST_BF16, ST_F64, ST_I64, ST_I32, ST_I16, ST_I8, ST_U8, ST_BOOL,
    ST_NDTYPES
} st_dtype;

typedef struct {
    const char *name;             /* owned by the st_file */
    st_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    uint64_t numel;
    uint64_t begin, end;          /* byte range in the data area */
} st_tensor;

typedef struct st_file st_file;

/* Maps and validates path. On failure *out is NULL and err says why. */
vt_status st_open(const char *path, st_file **out, char *err, size_t errlen);
/* Same over a caller's buffer (borrowed until st_close; used by tests and fuzzers). */
vt_status st_open_mem(const void *buf, size_t len, st_file **out, char *err, size_t errlen);
void st_close(st_file *f); /* NULL is a no-op */

int st_count(const st_file *f);
const st_tensor *st_at(const st_file *f, int i);             /* in header order */
const st_tensor *st_find(const st_file *f, const char *name); /* NULL when absent */
const char *st_dtype_name(st_dtype t);                        /* "F32" ... */
size_t st_dtype_size(st_dtype t);

/* __metadata__ values; NULL when absent. */
const char *st_meta(const st_file *f, const char *key);
int st_meta_count(const st_file *f);
void st_meta_at(const st_file *f, int i, const char **key, const char **value);

/* Copies tensor t into dst as float32 (F32, F16 and BF16 convert; other dtypes are
 * VT_EUNSUPPORTED). n is dst's capacity in floats and must be >= t->numel. */
vt_status st_read_f32(const st_file *f, const st_tensor *t, float *dst, size_t n,
                      char *err, size_t errlen);
/* Raw bytes of a tensor (may be misaligned: memcpy from it). */
const void *st_data(const st_file *f, const st_tensor *t);

/* Writer: collects tensors and metadata, then writes path atomically: a temporary file in
 * the same directory, fsync, rename over path, fsync of the directory. A crash leaves either
 * the old file or the new one, never a half-written one. Tensors are written as F32, in the
 * order added, header padded to 8 bytes. */
typedef struct st_writer st_writer;
st_writer *st_writer_new(void);                 /* NULL on allocation failure */
void st_writer_free(st_writer *w);              /* NULL is a no-op */
/* data is borrowed until st_writer_save returns; name and shape are copied. */
vt_status st_writer_add_f32(st_writer *w, const char *name, const float *data,
                            int ndim, const int64_t *shape);
vt_status st_writer_meta(st_writer *w, const char *key, const char *value); /* copies */
vt_status st_writer_save(st_writer *w, const char *path, char *err, size_t errlen);

#endif
