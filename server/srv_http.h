/* srv_http.h - the HTTP transport: libmicrohttpd daemon, per-request state, body limits,
 * route dispatch, replies (one JSON error helper), suspend/resume, and draining.
 *
 * The daemon runs a pool of `threads` HTTP threads (epoll each, MHD_ALLOW_SUSPEND_RESUME).
 * A request's life (libmicrohttpd's access handler is called several times per request):
 *   1. headers arrive: an http_req is allocated into MHD's per-connection pointer; the route
 *      is matched (404, 405 now) and Content-Length checked against max_body (413 now,
 *      before any body byte is read);
 *   2. body chunks: appended to r->body; a chunked body past max_body closes the connection
 *      (a reply cannot be sent mid-body);
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
 * http_resume from any thread; http_draining/http_inflight from any thread.
 */
#ifndef VT_SRV_HTTP_H
#define VT_SRV_HTTP_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

typedef struct http_req http_req;
typedef void (*http_handler)(http_req *r);

/* A route: the table is read top to bottom; "{m}" and "{v}" match one path segment each
 * and land in r->param[0] and r->param[1]. GET routes also answer HEAD. */
typedef struct {
    const char *method;
    const char *pattern;
    http_handler fn;
    const char *name;   /* endpoint label in metrics */
} http_route;

typedef struct {
    const char *host;
    int port;               /* 0: any free port (http_port tells which) */
    int threads;
    int max_connections, max_per_ip;
    int idle_timeout_s;
    size_t max_body;
    int retry_after_s;
} http_opts;

/* Per-request state (STYLE.md: lives in libmicrohttpd's connection pointer from the first
 * callback to the completion callback). Handlers read the request fields and fill the log
 * fields; everything else is the transport's. */
struct http_req {
    /* the request */
    struct MHD_Connection *conn;
    const http_route *route;     /* matched route */
    int endpoint;                /* met_endpoint(route->name), -1 when unrouted */
    char method[8];
    char path[512];
    char param[2][96];           /* {m}, {v} */
    char id[65];                 /* request id: X-Request-Id if acceptable, else generated */
    char remote[64];
    unsigned char *body;         /* the whole body, NUL-terminated (malloc'd) */
    size_t body_len, body_cap;
    int64_t t_start;             /* CLOCK_MONOTONIC ns */
    /* handler state: freed with ctx_free(ctx) at completion */
    void *ctx;
    void (*ctx_free)(void *ctx);
    /* filled by handlers for the access log (model NULL, numbers < 0: not applicable) */
    const char *model;           /* must outlive the request (e.g. r->param[0]) */
    int version, images;
    double decode_ms, queue_ms, infer_ms;
    /* transport state */
    int status;                  /* status of the reply queued, 0 none yet */
    size_t bytes_out;
    char errmsg[256];            /* error reply, for the log */
    const char *allow;           /* Allow header of a 405 */
    int suspended;               /* 1 between http_suspend and on_resume */
    void (*on_resume)(http_req *r);
};

int http_start(const http_opts *o, const http_route *routes, int nroutes, char *err, size_t errlen);
int http_port(void);            /* the bound port */
void http_begin_drain(void);    /* stop accepting connections; keep answering open ones */
int http_draining(void);
int http_after_drain(const http_req *r); /* r arrived after the drain began (not in flight) */
long http_inflight(void);       /* requests received and not completed */
void http_stop(void);           /* closes every connection; none may be suspended */

/* Request accessors (NULL when absent). */
const char *http_header(http_req *r, const char *name);
const char *http_query(http_req *r, const char *name);

/* Replies. Each request gets exactly one. http_reply takes ownership of body (malloc'd). */
void http_reply(http_req *r, int status, const char *content_type, char *body, size_t len);
void http_reply_json(http_req *r, int status, json_t *j);   /* steals the reference to j */
/* The one error reply: {"error": "<message>"}; 503 carries Retry-After, 405 Allow. */
void http_error(http_req *r, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Async: suspend r now (from its handler); call http_resume(r) from any thread when the
 * work is done; on_resume(r) then runs on an HTTP thread and must reply. */
void http_suspend(http_req *r, void (*on_resume)(http_req *r));
void http_resume(http_req *r);

#endif
