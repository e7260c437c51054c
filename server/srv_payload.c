/* srv_payload.c - multipart/form-data splitting, base64, image decode + preprocess (see
 * srv_payload.h). Every length is checked against the end of the buffer before use. */
#include "srv_payload.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "image.h"

#define MAX_PART_HEADERS 8192

static int perr(char *err, size_t errlen, const char *msg)
{
    snprintf(err, errlen, "malformed multipart body: %s", msg);
    return -1;
}

/* The boundary parameter of a Content-Type value. 0 on success. */
static int boundary_of(const char *ct, char *b, size_t bsz)
{
    const char *p = ct;
    while ((p = strchr(p, ';'))) {
        p++;
        while (*p == ' ' || *p == '\t') p++;
        if (strncasecmp(p, "boundary=", 9)) continue;
        p += 9;
        size_t n = 0;
        if (*p == '"') {
            p++;
            while (p[n] && p[n] != '"') n++;
            if (p[n] != '"') return -1;
        } else {
            while (p[n] && p[n] != ';' && p[n] != ' ' && p[n] != '\t') n++;
        }
        if (n < 1 || n > 70 || n >= bsz) return -1;
        memcpy(b, p, n);
        b[n] = '\0';
        return 0;
    }
    return -1;
}

/* Header value of `name` (case-insensitive) in a CRLF-separated block; copies it into
 * out. 1 when found. */
static int header_value(const char *h, size_t hlen, const char *name, char *out, size_t outsz)
{
    size_t nl = strlen(name);
    const char *p = h, *end = h + hlen;
    while (p < end) {
        const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
        if (!eol) eol = end;
        if ((size_t)(eol - p) > nl && !strncasecmp(p, name, nl) && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (v < eol && (*v == ' ' || *v == '\t')) v++;
            size_t n = (size_t)(eol - v);
            if (n >= outsz) n = outsz - 1;
            memcpy(out, v, n);
            out[n] = '\0';
            return 1;
        }
        p = eol + 2;
    }
    return 0;
}

/* filename="x" (or filename=x) from a Content-Disposition value. */
static int filename_of(const char *cd, char *out, size_t outsz)
{
    const char *p = cd;
    while ((p = strcasestr(p, "filename="))) {
        if (p > cd && p[-1] != ';' && p[-1] != ' ' && p[-1] != '\t') { p += 9; continue; }
        p += 9;
        size_t n = 0;
        if (*p == '"') {
            p++;
            while (p[n] && p[n] != '"') n++;
        } else {
            while (p[n] && p[n] != ';') n++;
        }
        if (n >= outsz) n = outsz - 1;
        memcpy(out, p, n);
        out[n] = '\0';
        return 1;
    }
    return 0;
}

int pay_multipart(const char *content_type, const unsigned char *body, size_t len,
                  pay_part *parts, int max, int *nparts, char *err, size_t errlen)
{
    char b[80], delim[84];
    *nparts = 0;
    if (!content_type || boundary_of(content_type, b, sizeof b))
        return perr(err, errlen, "no valid boundary parameter in Content-Type");
    size_t dl = (size_t)snprintf(delim, sizeof delim, "\r\n--%s", b); /* CRLF "--" B */
    const unsigned char *p, *end = body + len;
    /* the first delimiter may open the body without its CRLF */
    if (len >= dl - 2 && !memcmp(body, delim + 2, dl - 2)) {
        p = body + dl - 2;
    } else {
        const unsigned char *f = memmem(body, len, delim, dl);
        if (!f) return perr(err, errlen, "no boundary delimiter");
        p = f + dl;
    }
    for (;;) {
        if (end - p >= 2 && p[0] == '-' && p[1] == '-') break; /* close delimiter */
        while (p < end && (*p == ' ' || *p == '\t')) p++;
        if (end - p < 2 || p[0] != '\r' || p[1] != '\n') return perr(err, errlen, "delimiter not followed by CRLF");
        p += 2;
        const unsigned char *hs = p, *cs;
        size_t hl;
        if (end - p >= 2 && p[0] == '\r' && p[1] == '\n') { /* no headers */
            hl = 0;
            cs = p + 2;
        } else {
            size_t room = (size_t)(end - p) < MAX_PART_HEADERS ? (size_t)(end - p) : MAX_PART_HEADERS;
            const unsigned char *he = memmem(p, room, "\r\n\r\n", 4);
            if (!he) return perr(err, errlen, "part headers without an end (or over 8 KiB)");
            hl = (size_t)(he - hs);
            cs = he + 4;
        }
        const unsigned char *ce = memmem(cs, (size_t)(end - cs), delim, dl);
        if (!ce) return perr(err, errlen, "part without a closing delimiter (truncated body?)");
        char cd[512] = "", ct[128] = "", fn[128] = "";
        int has_cd = header_value((const char *)hs, hl, "Content-Disposition", cd, sizeof cd);
        int has_ct = header_value((const char *)hs, hl, "Content-Type", ct, sizeof ct);
        int has_fn = has_cd && filename_of(cd, fn, sizeof fn);
        int is_file = has_fn || (has_ct && strncasecmp(ct, "text/plain", 10));
        if (is_file) {
            if (*nparts == max) return -2;
            pay_part *pp = &parts[(*nparts)++];
            pp->data = cs;
            pp->len = (size_t)(ce - cs);
            snprintf(pp->filename, sizeof pp->filename, "%s", fn);
        }
        p = ce + dl;
    }
    return 0;
}

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

int pay_base64(const char *in, size_t n, unsigned char **out, size_t *outlen)
{
    while (n > 0 && in[n - 1] == '=' ) n--; /* padding is optional */
    if (n % 4 == 1) return -1;
    size_t cap = n / 4 * 3 + 3;
    unsigned char *o = malloc(cap ? cap : 1);
    if (!o) return -2;
    size_t k = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64_value((unsigned char)in[i]);
        if (v < 0) { free(o); return -1; }
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            o[k++] = (unsigned char)(acc >> bits);
        }
    }
    *out = o;
    *outlen = k;
    return 0;
}

vt_status pay_image(const reg_version *v, const void *buf, size_t len, float *out,
                    char *err, size_t errlen)
{
    img_image im = {0};
    vt_status st = img_decode(buf, len, reg_version_decode(v), &im, err, errlen);
    if (!st) st = img_preprocess(&im, reg_version_preproc(v), out, err, errlen);
    img_free(&im);
    return st;
}
