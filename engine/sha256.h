/* sha256.h - SHA-256 (FIPS 180-4), to name a parent checkpoint by its content.
 *
 * A pruned checkpoint records "vitd.parent_sha256", the hash of the file it was cut from, so
 * a model store can tell which parent a version descends from even after files are renamed.
 * The hash is of the file's bytes exactly as on disk (the same value as `sha256sum FILE`).
 * Small and dependency-free; not constant-time and not meant for secrets.
 * Thread-safe: a sha256_ctx belongs to its caller; no shared state.
 */
#ifndef VT_SHA256_H
#define VT_SHA256_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef struct {
    uint32_t h[8];        /* chaining state */
    uint64_t bytes;       /* message length so far */
    uint8_t buf[64];      /* partial block */
    size_t fill;          /* bytes in buf */
} sha256_ctx;

void sha256_init(sha256_ctx *c);
void sha256_update(sha256_ctx *c, const void *data, size_t n);
void sha256_final(sha256_ctx *c, uint8_t digest[32]);
/* digest as 64 lower-case hex digits and a NUL */
void sha256_hex(const uint8_t digest[32], char hex[65]);
/* Hashes a whole file (streamed, 16 KiB at a time) into hex. VT_EIO when it cannot be read. */
vt_status sha256_file(const char *path, char hex[65], char *err, size_t errlen);

#endif
