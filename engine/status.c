/* status.c - status names and the error-detail formatter (see status.h). */
#include "status.h"

#include <stdarg.h>
#include <stdio.h>

const char *vt_status_str(vt_status s)
{
    switch (s) {
    case VT_OK: return "ok";
    case VT_EINVAL: return "invalid argument";
    case VT_EIO: return "i/o error";
    case VT_EFORMAT: return "format error";
    case VT_ESHAPE: return "shape error";
    case VT_EUNSUPPORTED: return "unsupported";
    case VT_ELIMIT: return "over limit";
    case VT_ENOMEM: return "out of memory";
    case VT_EDNNL: return "oneDNN error";
    case VT_ECANCELLED: return "cancelled";
    }
    return "unknown status";
}

vt_status vt_err(char *err, size_t errlen, vt_status s, const char *fmt, ...)
{
    if (err && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return s;
}
