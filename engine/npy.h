/* npy.h - NumPy .npy files of float32, so Python users and tests can drive the engine.
 *
 * Format (NumPy format version 1.0/2.0/3.0):
 *   "\x93NUMPY", major u8, minor u8, header length (u16 LE for v1, u32 LE for v2/v3),
 *   an ASCII Python dict literal {'descr': '<f4', 'fortran_order': False, 'shape': (d0, d1, ...), }
 *   padded with spaces and a final '\n' so the data starts at a multiple of 64, then the data.
 * Read: descr '<f4' (or '<f8', converted), C order only, shape product must match the
 * remaining bytes exactly. Write: version 1.0, '<f4', atomically (temp file, fsync, rename).
 * Thread-safe: no shared state.
 */
#ifndef VT_NPY_H
#define VT_NPY_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define NPY_MAX_DIMS 8

/* On success *data is malloc'd (caller frees) holding prod(shape) floats. */
vt_status npy_read_f32(const char *path, float **data, int *ndim, int64_t shape[NPY_MAX_DIMS],
                       char *err, size_t errlen);
vt_status npy_write_f32(const char *path, const float *data, int ndim, const int64_t *shape,
                        char *err, size_t errlen);

#endif
