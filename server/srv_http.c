/* srv_http.c - libmicrohttpd glue: daemon options, the access handler's state machine,
 * routing, replies and draining (see srv_http.h). Knows nothing about models or tokens:
 * one http_server per listener, each with its own routes and options. */
#include "srv_http.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "srv_log.h"
#include "srv_metrics.h"

enum { REQ_BODY = 1, REQ_DISPATCHED }; /* phases of the access handler (ahc) */

/* One listener. Written by main's thread before the daemon starts and at the drain; read
 * by its HTTP threads (the atomics are what changes while they run). */
struct http_server {
    struct MHD_Daemon *daemon;
    http_opts o;
    char host[256];                  /* o.host points here */
    const http_route *routes;
    int nroutes;
    int port;
    _Atomic int draining;
    _Atomic int64_t drain_ns;        /* when the drain began */
    _Atomic long inflight;
    MHD_socket quiesced_fd;
};

/* request ids are unique across listeners: one counter, one seed (set once by http_start) */
static _Atomic uint64_t g_id_counter;
static _Atomic uint64_t g_id_seed;

/* State kept beside the public http_req: the access handler's phase, the declared length. */
typedef struct {
    http_req r;
    int phase;
    size_t declared;   /* Content-Length, or SIZE_MAX */
} req_box;
#define b_declared(r) (((req_box *)(void *)(r))->declared)

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- routing -------------------------------------------------------------------------- */

/* Matches path against pattern segment by segment; fills params. 1 on a match. */
static int match(const char *pattern, const char *path, char param[2][96])
{
    const char *p = pattern, *s = path;
    while (*p && *s) {
        if (*p != '/' || *s != '/') return 0;
        p++;
        s++;
        const char *pe = strchr(p, '/'), *se = strchr(s, '/');
        size_t pl = pe ? (size_t)(pe - p) : strlen(p), sl = se ? (size_t)(se - s) : strlen(s);
        if (pl == 3 && p[0] == '{' && p[2] == '}') {
            int k = p[1] == 'v';
            if (sl == 0 || sl >= sizeof param[0]) return 0;
            memcpy(param[k], s, sl);
            param[k][sl] = '\0';
        } else if (pl != sl || memcmp(p, s, pl)) {
            return 0;
        }
        p += pl;
        s += sl;
    }
    return *p == '\0' && *s == '\0';
}

/* Finds the route; on a path match with another method sets *allow (for a 405). */
/* Finds the route; on a path match with other methods fills allow (for a 405). */
static int route_find(const http_server *s, const char *method, const char *path, char param[2][96],
                      char *allow, size_t allowlen)
{
    const char *m = strcmp(method, "HEAD") ? method : "GET";
    allow[0] = '\0';
    for (int i = 0; i < s->nroutes; i++) {
        char tmp[2][96] = {"", ""};
        if (!match(s->routes[i].pattern, path, tmp)) continue;
        if (!strcmp(s->routes[i].method, m)) {
            memcpy(param, tmp, sizeof tmp);
            return i;
        }
        const char *add = strcmp(s->routes[i].method, "GET") ? s->routes[i].method : "GET, HEAD";
        if (!strstr(allow, s->routes[i].method)) {
            size_t n = strlen(allow);
            snprintf(allow + n, allowlen - n, "%s%s", n ? ", " : "", add);
        }
    }
    return -1;
}

/* ---- replies -------------------------------------------------------------------------- */

void http_reply(http_req *r, int status, const char *content_type, char *body, size_t len)
{
    if (r->status) { /* a second reply is a bug in a handler */
        log_msg(LOG_ERROR, "request %s: second reply (%d after %d) dropped", r->id, status, r->status);
        free(body);
        return;
    }
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!resp) { free(body); return; }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    MHD_add_response_header(resp, "X-Request-Id", r->id);
    if (status == 503) {
        char ra[16];
        snprintf(ra, sizeof ra, "%d", r->srv->o.retry_after_s);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, ra);
    }
    if (status == 405 && r->allow[0]) MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, r->allow);
    if (status == 401) MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"vitd-admin\"");
    if (r->version >= 1) { /* the version that served the request (the one it acquired) */
        char v[16];
        snprintf(v, sizeof v, "%d", r->version);
        MHD_add_response_header(resp, "X-Model-Version", v);
    }
    if (atomic_load(&r->srv->draining)) MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    if (MHD_queue_response(r->conn, (unsigned)status, resp) == MHD_YES) {
        r->status = status;
        r->bytes_out = len;
    } else {
        log_msg(LOG_ERROR, "request %s: libmicrohttpd refused the %d reply", r->id, status);
    }
    MHD_destroy_response(resp);
}

void http_reply_json(http_req *r, int status, json_t *j)
{
    /* 9 significant digits: every float32 value prints exactly (round-trips) */
    char *s = j ? json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(9)) : NULL;
    json_decref(j);
    if (!s) {
        http_error(r, 500, "out of memory");
        return;
    }
    size_t n = strlen(s);
    /* json_dumps uses jansson's allocator, which is malloc unless changed; reply owns it */
    http_reply(r, status, "application/json", s, n);
}

void http_error(http_req *r, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->errmsg, sizeof r->errmsg, fmt, ap);
    va_end(ap);
    json_t *j = json_pack("{s:s}", "error", r->errmsg);
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!s) s = strdup("{\"error\":\"out of memory\"}");
    if (!s) return;
    http_reply(r, status, "application/json", s, strlen(s));
}

const char *http_header(http_req *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

const char *http_query(http_req *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, name);
}

typedef struct {
    const char *const *known;
    const char *unknown;
} query_scan;

static enum MHD_Result scan_arg(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    (void)kind;
    (void)value;
    query_scan *q = cls;
    for (const char *const *k = q->known; *k; k++)
        if (!strcmp(*k, key)) return MHD_YES;
    q->unknown = key;
    return MHD_NO;
}

const char *http_query_unknown(http_req *r, const char *const *known)
{
    query_scan q = {known, NULL};
    MHD_get_connection_values(r->conn, MHD_GET_ARGUMENT_KIND, scan_arg, &q);
    return q.unknown;
}

void http_suspend(http_req *r, void (*on_resume)(http_req *r))
{
    r->on_resume = on_resume;
    r->suspended = 1;
    MHD_suspend_connection(r->conn);
}

void http_resume(http_req *r)
{
    MHD_resume_connection(r->conn);
}

/* ---- the access handler --------------------------------------------------------------- */

static void request_id(http_req *r)
{
    const char *h = http_header(r, "X-Request-Id");
    size_t n = h ? strlen(h) : 0;
    int ok = n >= 1 && n < sizeof r->id;
    for (size_t i = 0; ok && i < n; i++)
        ok = isalnum((unsigned char)h[i]) || strchr("-_.:", h[i]);
    if (ok) {
        memcpy(r->id, h, n + 1);
        return;
    }
    /* splitmix64 of a per-process seed and a counter: unique in the process, unguessable */
    uint64_t z = atomic_load(&g_id_seed) + 0x9e3779b97f4a7c15ull * (atomic_fetch_add(&g_id_counter, 1) + 1);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    snprintf(r->id, sizeof r->id, "%016llx", (unsigned long long)z);
}

static void remote_addr(http_req *r)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (!ci || !ci->client_addr) return;
    const struct sockaddr *sa = ci->client_addr;
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, r->remote, sizeof r->remote);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, r->remote, sizeof r->remote);
}

/* The body limit of r's route: its own for a streaming route, else the server's. */
static size_t body_limit(const http_req *r)
{
    return r->route->stream ? r->route->stream->max_body : r->srv->o.max_body;
}

/* First call: the headers are in. Returns 1 when a reply was queued already. */
static int on_headers(http_req *r, const char *url, const char *method)
{
    http_server *s = r->srv;
    r->t_start = now_ns();
    r->version = r->images = -1;
    r->decode_ms = r->queue_ms = r->infer_ms = -1;
    r->endpoint = -1;
    snprintf(r->method, sizeof r->method, "%s", method);
    snprintf(r->path, sizeof r->path, "%s", url);
    request_id(r);
    remote_addr(r);
    atomic_fetch_add(&s->inflight, 1);
    met_inflight(1);

    if (s->o.admit && s->o.admit(r)) return 1; /* refused before routing: nothing is revealed */
    int i = strlen(url) >= sizeof r->path ? -1 : route_find(s, method, url, r->param, r->allow, sizeof r->allow);
    if (i < 0) {
        if (r->allow[0]) http_error(r, 405, "method %s is not allowed on %s (allowed: %s)", r->method, r->path, r->allow);
        else http_error(r, 404, "no such path: %s", r->path);
        return 1;
    }
    r->route = &s->routes[i];
    r->endpoint = met_endpoint(r->route->name);
    size_t limit = body_limit(r);
    const char *cl = http_header(r, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl) {
        char *end;
        unsigned long long n = strtoull(cl, &end, 10);
        if (end == cl || *end) { http_error(r, 400, "malformed Content-Length"); return 1; }
        if (n > limit) {
            http_error(r, 413, "request body of %llu bytes is over the limit of %zu bytes", n, limit);
            return 1;
        }
        b_declared(r) = (size_t)n;
    }
    if (r->route->stream && r->route->stream->begin) {
        r->route->stream->begin(r);
        if (r->status) return 1;
    }
    return 0;
}

/* A body chunk. 0 to go on, -1 to drop the connection (over the limit without
 * Content-Length, or out of memory). */
static int on_body(http_req *r, const char *data, size_t n)
{
    size_t limit = body_limit(r);
    if (r->body_len + n > limit) {
        log_msg(LOG_WARN, "request %s: body over %zu bytes (no Content-Length); connection closed", r->id, limit);
        return -1;
    }
    if (r->route->stream) { /* handed over as it comes; after a refusal, dropped */
        r->body_len += n;
        if (!r->refused && r->route->stream->chunk(r, data, n)) r->refused = 1;
        return 0;
    }
    if (r->body_len + n + 1 > r->body_cap) {
        /* grow with what arrives, not with what is declared: headers alone cost no memory */
        size_t cap = r->body_cap ? r->body_cap : 65536;
        while (cap < r->body_len + n + 1) cap *= 2;
        size_t most = (b_declared(r) != SIZE_MAX ? b_declared(r) : limit) + 1;
        if (cap > most) cap = most;
        unsigned char *nb = realloc(r->body, cap);
        if (!nb) return -1;
        r->body = nb;
        r->body_cap = cap;
    }
    memcpy(r->body + r->body_len, data, n);
    r->body_len += n;
    return 0;
}

static enum MHD_Result ahc(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                           const char *version, const char *upload_data, size_t *upload_data_size,
                           void **con_cls)
{
    (void)version;
    req_box *b = *con_cls;
    if (!b) {
        if (!(b = calloc(1, sizeof *b))) return MHD_NO;
        *con_cls = b;
        b->r.conn = c;
        b->r.srv = cls;
        b->phase = REQ_BODY;
        b->declared = SIZE_MAX;
        on_headers(&b->r, url, method);
        return MHD_YES;
    }
    http_req *r = &b->r;
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (r->status) return MHD_YES; /* already answered (not reached: MHD skips the body) */
        return on_body(r, upload_data, n) ? MHD_NO : MHD_YES;
    }
    if (r->status) return MHD_YES;
    if (b->phase == REQ_BODY) {
        b->phase = REQ_DISPATCHED;
        if (r->body) r->body[r->body_len] = '\0';
        r->route->fn(r);
    } else if (r->suspended) {
        r->suspended = 0;
        r->on_resume(r);
    }
    if (!r->status && !r->suspended) {
        http_error(r, 500, "internal error: the handler gave no reply");
        if (!r->status) return MHD_NO; /* not even an error could be queued: close */
    }
    return MHD_YES;
}

static void completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    (void)c;
    http_server *s = cls;
    req_box *b = *con_cls;
    if (!b) return;
    *con_cls = NULL;
    http_req *r = &b->r;
    double secs = (now_ns() - r->t_start) / 1e9;
    int status = toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? r->status : 0;
    met_request(r->endpoint, status ? status : r->status, secs);
    log_access_rec a = {
        .id = r->id, .remote = r->remote[0] ? r->remote : NULL, .method = r->method, .path = r->path,
        .status = status, .bytes_in = r->body_len, .bytes_out = r->bytes_out, .ms = secs * 1e3,
        .model = r->model, .version = r->version, .images = r->images, .queue_ms = r->queue_ms,
        .decode_ms = r->decode_ms, .infer_ms = r->infer_ms, .error = r->errmsg[0] ? r->errmsg : NULL,
    };
    log_access(&a);
    if (r->ctx_free) r->ctx_free(r->ctx);
    free(r->body);
    free(b);
    atomic_fetch_sub(&s->inflight, 1);
    met_inflight(-1);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) msg[--n] = '\0';
    log_msg(LOG_WARN, "libmicrohttpd: %s", msg);
}

/* ---- daemon --------------------------------------------------------------------------- */

http_server *http_start(const http_opts *o, const http_route *routes, int nroutes, char *err, size_t errlen)
{
    uint64_t seed = 0;
    if (getrandom(&seed, sizeof seed, 0) != sizeof seed) seed = (uint64_t)now_ns();
    uint64_t zero = 0;
    atomic_compare_exchange_strong(&g_id_seed, &zero, seed); /* the first listener's */

    http_server *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->o = *o;
    snprintf(s->host, sizeof s->host, "%s", o->host);
    s->o.host = s->host;
    s->routes = routes;
    s->nroutes = nroutes;
    s->quiesced_fd = MHD_INVALID_SOCKET;

    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *ai = NULL;
    int e = getaddrinfo(o->host, NULL, &hints, &ai);
    if (e || !ai) {
        snprintf(err, errlen, "host: cannot resolve '%s': %s", o->host, gai_strerror(e));
        free(s);
        return NULL;
    }
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (ss.ss_family == AF_INET6) {
        ((struct sockaddr_in6 *)(void *)&ss)->sin6_port = htons((uint16_t)o->port);
        flags |= MHD_USE_IPv6;
    } else {
        ((struct sockaddr_in *)(void *)&ss)->sin_port = htons((uint16_t)o->port);
    }
    freeaddrinfo(ai);

    s->daemon = MHD_start_daemon(
        flags, (uint16_t)o->port, NULL, NULL, ahc, s,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, /* first, so every message goes through it */
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned)o->threads,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)o->max_connections,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)o->max_per_ip,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)o->idle_timeout_s,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(64 * 1024),
        MHD_OPTION_NOTIFY_COMPLETED, completed, s,
        MHD_OPTION_END);
    if (!s->daemon) {
        snprintf(err, errlen, "cannot listen on %s:%d (address in use or not available)", o->host, o->port);
        free(s);
        return NULL;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : o->port;
    return s;
}

int http_port(const http_server *s) { return s->port; }
int http_draining(const http_req *r) { return atomic_load(&r->srv->draining); }
int http_after_drain(const http_req *r)
{
    return atomic_load(&r->srv->draining) && r->t_start >= atomic_load(&r->srv->drain_ns);
}
long http_inflight(const http_server *s) { return s ? atomic_load(&s->inflight) : 0; }

void http_begin_drain(http_server *s)
{
    if (!s) return;
    atomic_store(&s->drain_ns, now_ns());
    atomic_store(&s->draining, 1);
    if (s->daemon && s->quiesced_fd == MHD_INVALID_SOCKET) {
        s->quiesced_fd = MHD_quiesce_daemon(s->daemon);
        /* Nobody accepts on it any more; shut it down so new clients are refused at once.
         * Not closed before MHD_stop_daemon: MHD's threads may still be taking it out of
         * their epoll sets, and a closed descriptor number can be reused meanwhile. */
        if (s->quiesced_fd != MHD_INVALID_SOCKET) shutdown(s->quiesced_fd, SHUT_RDWR);
    }
}

void http_stop(http_server *s)
{
    if (!s) return;
    if (s->daemon) MHD_stop_daemon(s->daemon);
    if (s->quiesced_fd != MHD_INVALID_SOCKET) close(s->quiesced_fd);
    free(s);
}
