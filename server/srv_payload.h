/* srv_payload.h - the bytes clients send, turned into model input: multipart/form-data
 * bodies, base64 strings, and encoded images decoded and preprocessed for a model.
 *
 * multipart/form-data (RFC 7578 over RFC 2046 section 5.1), as parsed here:
 *   Content-Type: multipart/form-data; boundary=B        (B: 1..70 characters, maybe quoted)
 *   body:  [preamble] "--B" CRLF  headers CRLF CRLF  content  CRLF "--B" CRLF  ...  "--B--"
 *   part headers: Content-Disposition: form-data; name="n"; filename="f", Content-Type: t.
 *   A part is a file part when it has a filename or a Content-Type other than text/plain;
 *   other parts (plain form fields) are skipped. Anything else (no boundary, a delimiter
 *   not followed by CRLF or "--", headers without their blank line, no closing delimiter) is
 *   malformed. The parts point into the body; nothing is copied.
 *
 * base64: RFC 4648 standard alphabet, padding optional, no whitespace.
 *
 * Threads: pure functions, any thread. libmicrohttpd's PostProcessor is not used (its CVE
 * record, ../shared/notes/reliability.md); the body is already in memory and bounded.
 */
#ifndef VT_SRV_PAYLOAD_H
#define VT_SRV_PAYLOAD_H

#include <stddef.h>

#include "srv_registry.h"
#include "status.h"

typedef struct {
    const unsigned char *data;   /* into the body */
    size_t len;
    char filename[128];          /* "" when absent (cut at 127 bytes) */
} pay_part;

/* 0: *nparts file parts in parts; -1: malformed (err says why); -2: more than max file parts. */
int pay_multipart(const char *content_type, const unsigned char *body, size_t len,
                  pay_part *parts, int max, int *nparts, char *err, size_t errlen);

/* Decodes base64 into a malloc'd buffer (*out, *outlen). -1 on an invalid character or
 * length, -2 out of memory. */
int pay_base64(const char *in, size_t n, unsigned char **out, size_t *outlen);

/* Decodes an encoded image and preprocesses it for version v into out (C*S*S floats).
 * VT_ELIMIT: over the pixel limit; VT_EFORMAT/VT_EUNSUPPORTED: not a decodable JPEG/PNG. */
vt_status pay_image(const reg_version *v, const void *buf, size_t len, float *out,
                    char *err, size_t errlen);

#endif
