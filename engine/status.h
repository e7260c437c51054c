/* status.h - the engine's status codes and error-detail helper.
 *
 * Every engine function that can fail returns a vt_status and, when the caller passes a
 * buffer (err, errlen), writes a one-line human-readable detail into it ("tensor
 * blocks.3.attn.qkv.weight: shape [576, 192] expected [576, 190]"). The engine never prints
 * and never exits; err may be NULL. Thread-safe: no state.
 */
#ifndef VT_STATUS_H
#define VT_STATUS_H

#include <stddef.h>

typedef enum {
    VT_OK = 0,
    VT_EINVAL,       /* bad argument or option (caller's or user's mistake) */
    VT_EIO,          /* a file could not be opened, read or written */
    VT_EFORMAT,      /* malformed input: checkpoint, image, npy, archive, JSON */
    VT_ESHAPE,       /* well-formed, but a shape does not fit the architecture */
    VT_EUNSUPPORTED, /* valid input this build does not handle (dtype, colour space) */
    VT_ELIMIT,       /* over a configured limit (pixels, bytes, batch) */
    VT_ENOMEM,       /* allocation failed */
    VT_EDNNL,        /* oneDNN refused a descriptor or an execution */
    VT_ECANCELLED,   /* the caller asked to stop */
} vt_status;

/* Short constant name of a status ("format error"); never NULL. */
const char *vt_status_str(vt_status s);

/* Formats a detail into err (if err != NULL and errlen > 0) and returns s, so that
 * failure paths read `return vt_err(err, errlen, VT_EFORMAT, "tensor %s: ...", name);`. */
vt_status vt_err(char *err, size_t errlen, vt_status s, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
