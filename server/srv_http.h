/* srv_http.h - the HTTP transport: libmicrohttpd daemons (one per listener), per-request
 * state, body limits, route dispatch, replies (one JSON error helper), suspend/resume, and
 * draining.
 *
 * vitd runs two listeners (SERVING.md "Listeners"): inference and admin. Each is an
 * http_server with its own address, port, options and route table; they share nothing but
 * the request-id generator and the metrics. A server runs a pool of `threads` HTTP threads
 * (epoll each, MHD_ALLOW_SUSPEND_RESUME).
 * A request's life (libmicrohttpd's access handler is called several times per request):
 *   1. headers arrive: an http_req is allocated into MHD's per-connection pointer; the
 *      server's admit hook runs (the admin token check: 401 now); the route is matched (404,
 *      405 now) and Content-Length checked against the limit (413 now, before any body byte
 *      is read); a streaming route's begin() runs (it may reply, e.g. 415 or 409);
 *   2. body chunks: a buffered route's are appended to r->body (a chunked body past the limit
 *      closes the connection: a reply cannot be sent mid-body); a streaming route's are
 *      handed to its chunk() as they come and never held: once chunk() refuses one, the
 *      rest of the body is read and dropped (the error is answered when the body ends);
 *   3. body complete: the route's handler runs on this HTTP thread and either replies at
 *      once (http_reply*, http_error) or calls http_suspend(r, on_resume) and hands work to
 *      another thread, which calls http_resume(r) when done; on_resume then runs on an HTTP
 *      thread and replies;
 *   4. completion (reply sent, or client gone): metrics, one access-log line, r->ctx_free,
 *      and r is freed. This is the only place a request's state is freed.
 * No HTTP thread ever waits for inference, so health checks and /metrics are answered while
 * every request in flight is waiting for the worker.
 *
 * Threads: http_start/http_begin_drain/http_stop from main's thread; http_reply*, http_error,
 * http_suspend, http_header, http_query from the request's handler (an HTTP thread);
 * http_resume from any thread; http_draining/http_inflight/http_port from any thread.
 */
#ifndef VT_SRV_HTTP_H
#define VT_SRV_HTTP_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

typedef struct http_req http_req;
typedef struct http_server http_server;
typedef void (*http_handler)(http_req *r);

/* A streamed body (for uploads): never buffered. begin() runs when the headers are in (it
 * may reply, and then no body byte is read); chunk() gets every body chunk as it arrives (0:
 * go on; non-zero: refuse the body: no further chunk() calls, the rest is read and dropped);
 * then the route's fn runs and must reply. max_body replaces the server's limit. */
typedef struct {
    size_t max_body;
    http_handler begin;   /* may be NULL */
    int (*chunk)(http_req *r, const char *data, size_t n);
} http_stream;

/* A route: the table is read top to bottom; "{m}" and "{v}" match one path segment each
 * and land in r->param[0] and r->param[1] (any other one-letter name, e.g. "{j}", lands in
 * r->param[0]). GET routes also answer HEAD. */
typedef struct {
    const char *method;
    const char *pattern;
    http_handler fn;          /* the body is complete (buffered in r->body, or streamed) */
    const char *name;         /* endpoint label in metrics */
    const http_stream *stream; /* NULL: the body is buffered whole (up to the server's max_body) */
} http_route;

typedef struct {
    const char *host;
    int port;               /* 0: any free port (http_port tells which) */
    int threads;
    int max_connections, max_per_ip;
    int idle_timeout_s;
    size_t max_body;
    int retry_after_s;
    /* Optional: runs first on every request, before routing and before any body byte is
     * read. Returns 0 to go on, non-zero after replying (e.g. 401). */
    int (*admit)(http_req *r);
} http_opts;

/* Per-request state (STYLE.md: lives in libmicrohttpd's connection pointer from the first
 * callback to the completion callback). Handlers read the request fields and fill the log
 * fields; everything else is the transport's. */
struct http_req {
    /* the request */
    struct MHD_Connection *conn;
    http_server *srv;            /* the listener it came to */
    const http_route *route;     /* matched route */
    int endpoint;                /* met_endpoint(route->name), -1 when unrouted */
    char method[8];
    char path[512];
    char param[2][96];           /* {m}, {v} */
    char id[65];                 /* request id: X-Request-Id if acceptable, else generated */
    char remote[64];
    unsigned char *body;         /* the whole body, NUL-terminated (malloc'd); NULL when streamed */
    size_t body_len, body_cap;   /* body_len: bytes received (streamed ones too) */
    int64_t t_start;             /* CLOCK_MONOTONIC ns */
    /* handler state: freed with ctx_free(ctx) at completion */
    void *ctx;
    void (*ctx_free)(void *ctx);
    /* filled by handlers for the access log (model NULL, numbers < 0: not applicable) */
    const char *model;           /* must outlive the request (e.g. r->param[0]) */
    int version, images;         /* version >= 1 is also sent as X-Model-Version */
    double decode_ms, queue_ms, infer_ms;
    /* transport state */
    int status;                  /* status of the reply queued, 0 none yet */
    size_t bytes_out;
    char errmsg[256];            /* error reply, for the log */
    char allow[32];              /* Allow header of a 405 */
    int suspended;               /* 1 between http_suspend and on_resume */
    int refused;                 /* a streaming route's chunk() refused the body */
    void (*on_resume)(http_req *r);
};

/* Starts a listener with its own route table (borrowed for the server's life); NULL and err
 * on failure (address in use, ...). */
http_server *http_start(const http_opts *o, const http_route *routes, int nroutes, char *err, size_t errlen);
int http_port(const http_server *s);        /* the bound port */
void http_begin_drain(http_server *s);      /* stop accepting connections; keep answering open ones */
long http_inflight(const http_server *s);   /* requests received and not completed */
void http_stop(http_server *s);             /* closes every connection (none may be suspended)
                                             * and frees s; NULL is a no-op */
int http_draining(const http_req *r);       /* r's listener is draining */
int http_after_drain(const http_req *r);    /* r arrived after the drain began (not in flight) */

/* Request accessors (NULL when absent). */
const char *http_header(http_req *r, const char *name);
const char *http_query(http_req *r, const char *name);
/* The first query argument whose name is not in known (a NULL-terminated list), or NULL. */
const char *http_query_unknown(http_req *r, const char *const *known);

/* Replies. Each request gets exactly one. http_reply takes ownership of body (malloc'd). */
void http_reply(http_req *r, int status, const char *content_type, char *body, size_t len);
void http_reply_json(http_req *r, int status, json_t *j);   /* steals the reference to j */
/* The one error reply: {"error": "<message>"}; 503 carries Retry-After, 405 Allow, 401
 * WWW-Authenticate. */
void http_error(http_req *r, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Async: suspend r now (from its handler); call http_resume(r) from any thread when the
 * work is done; on_resume(r) then runs on an HTTP thread and must reply. */
void http_suspend(http_req *r, void (*on_resume)(http_req *r));
void http_resume(http_req *r);

#endif
