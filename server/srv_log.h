/* srv_log.h - the server's log: start-up/shutdown messages and one access line per request.
 *
 * Two formats, chosen once at start (log_format): "text" (human-readable, one line per event)
 * and "json" (one JSON object per line, JSON Lines). Everything goes to stderr; each line is
 * written with one write(2) under a mutex, so lines from different threads never interleave.
 *
 * Threads: log_init once before any thread starts; everything else from any thread.
 * Only server/ logs (the engine never prints); commands other than `serve` print directly.
 */
#ifndef VT_SRV_LOG_H
#define VT_SRV_LOG_H

#include <stdint.h>

typedef enum { LOG_TEXT = 0, LOG_JSON = 1 } log_format;
typedef enum { LOG_INFO, LOG_WARN, LOG_ERROR } log_level;

void log_init(log_format f, int access_log);

/* A message: "2024-05-01T12:00:00.123Z info listening on 127.0.0.1:8080" in text, or
 * {"ts": ..., "level": "info", "msg": "..."} in JSON. */
void log_msg(log_level lv, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* One finished request. Strings may be NULL (omitted); numbers < 0 are omitted. */
typedef struct {
    const char *id;         /* request id (X-Request-Id echoed or generated) */
    const char *remote;     /* client address */
    const char *method, *path;
    int status;             /* HTTP status sent; 0 when the client went away first */
    uint64_t bytes_in, bytes_out;
    double ms;              /* first header byte seen .. response handed to the socket */
    const char *model;      /* model name, for inference endpoints */
    int version;            /* model version that served it; < 0 none */
    int images;             /* images in the request; < 0 none */
    double queue_ms, decode_ms, infer_ms; /* < 0 when not applicable */
    const char *error;      /* the error message sent, if any */
} log_access_rec;

void log_access(const log_access_rec *r);

#endif
