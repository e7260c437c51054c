/* srv_admin.c - the admin API's handlers, its token check and the prune upload (see
 * srv_admin.h). The work itself lives elsewhere: the tar parser in srv_spool.c, the jobs
 * and the swap in srv_job.c, the versions on disk in srv_store.c. This file only checks
 * requests, moves bytes into the spool and turns the answers into HTTP.
 */
#include "srv_admin.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sha256.h"
#include "srv_job.h"
#include "srv_log.h"
#include "srv_registry.h"
#include "srv_spool.h"

#define TOKEN_MAX 4096

/* Configuration: written by admin_load_token/admin_init before the listener starts, read-only
 * afterwards. */
static uint8_t g_token_sha[32];
static int g_have_token;
static const conf_t *g_conf;
static store *g_store;
static char g_spool_root[1024];
static _Atomic unsigned g_upload_seq;
static http_stream prune_stream; /* the upload route's limits and callbacks (defined below) */

/* ---- the token ------------------------------------------------------------------------ */

/* Trailing whitespace (the newline an editor or `echo` leaves) is not part of a token. */
static size_t trim_len(const char *s, size_t n)
{
    while (n && isspace((unsigned char)s[n - 1])) n--;
    return n;
}

int admin_load_token(const conf_t *c, char *msg, size_t msglen)
{
    char buf[TOKEN_MAX + 2];
    size_t n = 0;
    const char *env = getenv("VITD_ADMIN_TOKEN");
    if (env && *env) {
        n = trim_len(env, strlen(env));
        if (n > TOKEN_MAX) {
            snprintf(msg, msglen, "VITD_ADMIN_TOKEN is longer than %d bytes", TOKEN_MAX);
            return -1;
        }
        memcpy(buf, env, n);
    } else if (c->admin_token_file[0]) {
        int fd = open(c->admin_token_file, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            snprintf(msg, msglen, "admin_token_file %s: %s", c->admin_token_file, strerror(errno));
            return -1;
        }
        struct stat sb;
        if (fstat(fd, &sb) == 0 && (sb.st_mode & 077))
            log_msg(LOG_WARN, "admin_token_file %s can be read by other users (mode %03o); chmod 600 it",
                    c->admin_token_file, (unsigned)(sb.st_mode & 0777));
        ssize_t k;
        while (n < sizeof buf && (k = read(fd, buf + n, sizeof buf - n)) > 0) n += (size_t)k;
        close(fd);
        n = trim_len(buf, n);
        if (n > TOKEN_MAX) {
            snprintf(msg, msglen, "admin_token_file %s: the token is longer than %d bytes", c->admin_token_file, TOKEN_MAX);
            return -1;
        }
        if (!n) {
            snprintf(msg, msglen, "admin_token_file %s is empty", c->admin_token_file);
            return -1;
        }
        if (memchr(buf, '\n', n)) {
            snprintf(msg, msglen, "admin_token_file %s: the token must be one line", c->admin_token_file);
            return -1;
        }
    }
    /* child processes (a job's `vitd finetune`) must not inherit it */
    unsetenv("VITD_ADMIN_TOKEN");
    if (!n) {
        snprintf(msg, msglen, "no admin token (set VITD_ADMIN_TOKEN or admin_token_file): the admin listener is not started");
        return 0;
    }
    if (n < 16) log_msg(LOG_WARN, "the admin token is only %zu characters long; use at least 16 random ones", n);
    sha256_ctx h;
    sha256_init(&h);
    sha256_update(&h, buf, n);
    sha256_final(&h, g_token_sha);
    memset(buf, 0, sizeof buf);
    g_have_token = 1;
    return 1;
}

/* "Bearer <token>": hashes the token (or nothing) and compares the digests without an early
 * exit, so neither the position of a difference nor the token's length shows in the time. */
int admin_admit(http_req *r)
{
    const char *h = http_header(r, "Authorization");
    const char *tok = "";
    size_t n = 0;
    int scheme_ok = h && !strncasecmp(h, "Bearer ", 7);
    if (scheme_ok) {
        tok = h + 7;
        while (*tok == ' ') tok++;
        n = trim_len(tok, strlen(tok));
    }
    uint8_t d[32];
    sha256_ctx c;
    sha256_init(&c);
    sha256_update(&c, tok, n);
    sha256_final(&c, d);
    unsigned diff = 0;
    for (int i = 0; i < 32; i++) diff |= (unsigned)(d[i] ^ g_token_sha[i]);
    if (g_have_token && scheme_ok && n && !diff) return 0;
    if (!h) http_error(r, 401, "missing Authorization header: the admin API needs \"Authorization: Bearer <token>\"");
    else if (!scheme_ok) http_error(r, 401, "the Authorization header must be \"Bearer <token>\"");
    else http_error(r, 401, "wrong admin token");
    return 1;
}

/* ---- set-up --------------------------------------------------------------------------- */

int admin_init(const conf_t *c, store *st, char *err, size_t errlen)
{
    g_conf = c;
    g_store = st;
    prune_stream.max_body = (size_t)c->admin_max_archive_bytes;
    if (snprintf(g_spool_root, sizeof g_spool_root, "%s/.spool", store_root(st)) >= 990) {
        snprintf(err, errlen, "store_dir is too long for the spool folder");
        return -1;
    }
    if (mkdir(g_spool_root, 0700) && errno != EEXIST) {
        snprintf(err, errlen, "cannot create the upload spool %s: %s", g_spool_root, strerror(errno));
        return -1;
    }
    /* uploads (and the spool folders of jobs) cut short by a crash */
    DIR *d = opendir(g_spool_root);
    if (!d) {
        snprintf(err, errlen, "cannot read the upload spool %s: %s", g_spool_root, strerror(errno));
        return -1;
    }
    struct dirent *e;
    int removed = 0;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char p[1400];
        snprintf(p, sizeof p, "%s/%s", g_spool_root, e->d_name);
        spool_remove_dir(p);
        removed++;
    }
    closedir(d);
    if (removed) log_msg(LOG_WARN, "removed %d upload folder%s left in %s by an earlier run", removed,
                         removed == 1 ? "" : "s", g_spool_root);
    return 0;
}

/* ---- helpers -------------------------------------------------------------------------- */

/* A positive decimal integer (no sign, no spaces) no larger than max; -1 when it is not. */
static long long parse_uint(const char *s, long long max)
{
    if (!s || !isdigit((unsigned char)*s)) return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end || errno || v > (unsigned long long)max) return -1;
    return (long long)v;
}

static int media_is(const char *ct, const char *want)
{
    size_t n = strlen(want);
    if (!ct || strncasecmp(ct, want, n)) return 0;
    return ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ';
}

/* The model of r->param[0]: 400 for a malformed name, 404 for an unknown one (replied). */
static int known_model(http_req *r)
{
    if (!conf_valid_name(r->param[0])) {
        http_error(r, 400, "invalid model name (expected 1..64 of A-Z a-z 0-9 _ -)");
        return 0;
    }
    if (reg_ready(r->param[0]) < 0) {
        http_error(r, 404, "unknown model '%s'", r->param[0]);
        return 0;
    }
    r->model = r->param[0];
    return 1;
}

static json_t *removed_json(uint64_t removed)
{
    json_t *a = json_array();
    for (int b = 0; b < 64; b++)
        if ((removed >> b) & 1) json_array_append_new(a, json_integer(b));
    return a;
}

/* ---- GET /admin/models ---------------------------------------------------------------- */

static json_t *model_json(const char *name)
{
    store_version *vs = malloc(STORE_MAX_VERSIONS * sizeof *vs);
    if (!vs) return NULL;
    int n = store_list(g_store, name, vs, STORE_MAX_VERSIONS);
    int loaded[64];
    int nl = reg_versions(name, loaded, 64);
    reg_version *cur = reg_acquire(name, 0);
    int serving = cur ? reg_version_id(cur) : 0;
    reg_release(cur);

    json_t *versions = json_array();
    for (int i = 0; i < n; i++) {
        const store_version *v = &vs[i];
        int is_loaded = 0;
        for (int k = 0; k < nl; k++) is_loaded |= loaded[k] == v->version;
        char *info = NULL;
        store_version full;
        json_t *info_j = NULL;
        if (store_get(g_store, name, v->version, &full, &info) == VT_OK && info) {
            info_j = json_loads(info, 0, NULL);
        }
        free(info);
        json_t *j = json_pack("{s:i, s:o, s:s, s:s, s:o, s:I, s:I, s:s, s:b, s:b}",
                              "version", v->version, "parent", v->parent ? json_integer(v->parent) : json_null(),
                              "origin", v->origin, "created", v->created, "removed_blocks", removed_json(v->removed),
                              "params", (json_int_t)v->params, "bytes", (json_int_t)v->bytes, "sha256", v->sha256,
                              "active", v->active, "loaded", is_loaded);
        if (j) {
            /* the job's report (selection, check): the gate results live in "check" */
            json_t *check = json_object_get(info_j, "check");
            if (check) json_object_set(j, "check", check);
            json_object_set_new(j, "info", info_j ? info_j : json_null());
            json_array_append_new(versions, j);
        } else {
            json_decref(info_j);
        }
    }
    free(vs);
    int active = store_active(g_store, name);
    return json_pack("{s:s, s:o, s:o, s:b, s:o}", "name", name,
                     "active", active ? json_integer(active) : json_null(),
                     "serving", serving ? json_integer(serving) : json_null(),
                     "ready", reg_ready(name) == 1, "versions", versions);
}

static void admin_models(http_req *r)
{
    char names[CONF_MAX_MODELS][65];
    int n = reg_names(names, CONF_MAX_MODELS);
    json_t *models = json_array();
    for (int i = 0; i < n; i++) {
        json_t *m = model_json(names[i]);
        if (!m) { json_decref(models); http_error(r, 500, "out of memory"); return; }
        json_array_append_new(models, m);
    }
    int js = job_current_state();
    static const char *const state_names[] = {"queued", "running", "succeeded", "failed", "cancelled"};
    http_reply_json(r, 200, json_pack("{s:o, s:o}", "models", models, "job_state",
                                      js >= 0 && js <= JOB_CANCELLED ? json_string(state_names[js]) : json_null()));
}

/* ---- POST /admin/models/{m}/prune: the upload ----------------------------------------- */

typedef struct {
    spool *sp;              /* NULL once finished or handed over */
    char dir[1024];
    job_params p;
    vt_status st;           /* first error of the archive, VT_OK while it is good */
    char err[400];
} upload;

static void upload_free(void *ctx)
{
    upload *u = ctx;
    if (!u) return;
    spool_free(u->sp, 1); /* the client went away, or an error: the folder goes too */
    free(u);
}

static const char *const prune_args[] = {"remove", "strategy", "images", "seed", "gate", "finetune_epochs", NULL};

/* Fills p from the query string; replies 400 (and returns -1) naming the bad parameter. */
static int prune_params(http_req *r, job_params *p)
{
    const char *bad = http_query_unknown(r, prune_args);
    if (bad) {
        http_error(r, 400, "unknown parameter '%.64s' (prune takes remove, strategy, images, seed, gate, finetune_epochs)", bad);
        return -1;
    }
    snprintf(p->model, sizeof p->model, "%.64s", r->param[0]); /* a valid name: at most 64 */
    const char *s = http_query(r, "remove");
    long long k = parse_uint(s, 64);
    if (!s) { http_error(r, 400, "remove=K is required: the number of attention blocks to remove"); return -1; }
    if (k < 1) { http_error(r, 400, "remove must be a positive integer, not '%.32s'", s); return -1; }
    reg_version *v = reg_acquire(p->model, 0);
    if (!v) { http_error(r, 404, "model '%s' has no active version", p->model); return -1; }
    const vit_config *c = reg_version_config(v);
    int left = c->depth - __builtin_popcountll(c->removed);
    reg_release(v);
    if (k > left) {
        http_error(r, 400, "remove=%lld: the active version of '%s' has only %d attention blocks left", k, p->model, left);
        return -1;
    }
    p->remove = (int)k;
    s = http_query(r, "strategy");
    if (!s) s = "nose";
    if (strcmp(s, "nose") && strcmp(s, "first") && strcmp(s, "random")) {
        http_error(r, 400, "strategy must be nose, first or random, not '%.32s'", s);
        return -1;
    }
    snprintf(p->strategy, sizeof p->strategy, "%s", s);
    s = http_query(r, "images");
    p->images = 0;
    if (s) {
        long long n = parse_uint(s, INT_MAX);
        if (n < 0) { http_error(r, 400, "images must be a non-negative integer (0: all), not '%.32s'", s); return -1; }
        p->images = (int)n;
    }
    s = http_query(r, "seed");
    p->seed = 0;
    if (s) {
        char *end;
        errno = 0;
        unsigned long long seed = strtoull(s, &end, 10);
        if (!isdigit((unsigned char)*s) || *end || errno) {
            http_error(r, 400, "seed must be a non-negative integer below 2^64, not '%.32s'", s);
            return -1;
        }
        p->seed = seed;
    }
    s = http_query(r, "gate");
    p->gate = g_conf->job_gate;
    if (s) {
        char *end;
        errno = 0;
        double g = strtod(s, &end);
        if (end == s || *end || errno || !(g >= 0 && g <= 1)) {
            http_error(r, 400, "gate must be a number in 0..1 (the top-1 agreement to reach), not '%.32s'", s);
            return -1;
        }
        p->gate = g;
    }
    s = http_query(r, "finetune_epochs");
    p->finetune_epochs = 0;
    if (s) {
        long long e = parse_uint(s, 1000);
        if (e < 0) { http_error(r, 400, "finetune_epochs must be an integer in 0..1000, not '%.32s'", s); return -1; }
        p->finetune_epochs = (int)e;
    }
    p->holdout = g_conf->job_holdout;
    return 0;
}

/* Headers in, no body byte read yet: everything that can be refused without the archive is
 * refused here, so a bad call never costs an upload. */
static void prune_begin(http_req *r)
{
    if (!known_model(r)) return;
    job_params p;
    memset(&p, 0, sizeof p);
    if (prune_params(r, &p)) return;
    const char *ct = http_header(r, "Content-Type");
    if (!media_is(ct, "application/x-tar") && !media_is(ct, "application/octet-stream")) {
        http_error(r, 415, "Content-Type %.64s is not supported: send the proxy set as a tar archive "
                           "(application/x-tar or application/octet-stream)", ct && *ct ? ct : "(none)");
        return;
    }
    if (http_draining(r)) { http_error(r, 503, "the server is shutting down"); return; }
    int js = job_current_state();
    if (js == JOB_QUEUED || js == JOB_RUNNING) {
        http_error(r, 409, "a prune job is already %s: one job runs at a time (GET /admin/jobs/ID, DELETE to cancel)",
                   js == JOB_QUEUED ? "queued" : "running");
        return;
    }

    upload *u = calloc(1, sizeof *u);
    if (!u) { http_error(r, 503, "out of memory"); return; }
    u->p = p;
    /* a name nobody chooses: never anything from the request (a request id may be "..") */
    uint32_t rnd = 0;
    if (getrandom(&rnd, sizeof rnd, 0) != sizeof rnd) rnd = (uint32_t)r->t_start;
    if (snprintf(u->dir, sizeof u->dir, "%.990s/up-%u-%08x", g_spool_root, atomic_fetch_add(&g_upload_seq, 1) + 1, rnd) >=
        (int)sizeof u->dir) {
        free(u);
        http_error(r, 500, "the upload folder's path is too long");
        return;
    }
    spool_limits lim = {.max_total_bytes = (uint64_t)g_conf->admin_max_archive_bytes,
                        .max_entry_bytes = (uint64_t)g_conf->admin_max_entry_bytes,
                        .max_entries = g_conf->admin_max_archive_entries};
    char err[400];
    vt_status st = spool_new(u->dir, &lim, &u->sp, err, sizeof err);
    if (st) {
        free(u);
        http_error(r, 500, "cannot create the upload folder: %s", err);
        return;
    }
    r->ctx = u;
    r->ctx_free = upload_free;
}

static int prune_chunk(http_req *r, const char *data, size_t n)
{
    upload *u = r->ctx;
    u->st = spool_feed(u->sp, data, n, u->err, sizeof u->err);
    return u->st != VT_OK;
}

/* The body has ended (or been dropped after an error): answer, and either hand the spool
 * folder to a new job or remove it. */
static void prune_end(http_req *r)
{
    upload *u = r->ctx;
    if (!u || !u->sp) { http_error(r, 500, "internal error: no upload state"); return; }
    spool_stats ss = {0};
    if (u->st == VT_OK) u->st = spool_finish(u->sp, &ss, u->err, sizeof u->err);
    if (u->st != VT_OK) {
        spool_free(u->sp, 1);
        u->sp = NULL;
        if (u->st == VT_ELIMIT) http_error(r, 413, "proxy archive over a limit: %s", u->err);
        else http_error(r, 400, "bad proxy archive: %s", u->err);
        return;
    }
    snprintf(u->p.spool_dir, sizeof u->p.spool_dir, "%s", u->dir);
    spool_free(u->sp, 0);
    u->sp = NULL;
    char err[400] = "";
    int id = job_submit(&u->p, err, sizeof err);
    if (id < 0) {
        spool_remove_dir(u->dir); /* a job that did not start leaves the folder to us */
        if (id == JOB_EBUSY) http_error(r, 409, "a prune job is already queued or running: one job runs at a time");
        else http_error(r, 400, "cannot start the prune job: %s", err);
        return;
    }
    log_msg(LOG_INFO, "admin: prune job %d for model %s: remove %d (%s), %ld images in %ld classes (%ld entries ignored), "
                      "%llu archive bytes", id, u->p.model, u->p.remove, u->p.strategy, ss.images, ss.classes, ss.ignored,
            (unsigned long long)ss.bytes);
    http_reply_json(r, 202, json_pack("{s:i, s:I, s:I, s:I}", "job", id, "images", (json_int_t)ss.images,
                                      "classes", (json_int_t)ss.classes, "ignored", (json_int_t)ss.ignored));
}

/* ---- jobs ----------------------------------------------------------------------------- */

static int job_id_of(http_req *r)
{
    long long id = parse_uint(r->param[0], INT_MAX);
    if (id < 1) { http_error(r, 404, "no such job: '%.32s'", r->param[0]); return -1; }
    return (int)id;
}

static void admin_job_get(http_req *r)
{
    int id = job_id_of(r);
    if (id < 0) return;
    json_t *j = job_json(id);
    if (!j) { http_error(r, 404, "no such job: %d", id); return; }
    http_reply_json(r, 200, j);
}

static void admin_job_cancel(http_req *r)
{
    int id = job_id_of(r);
    if (id < 0) return;
    if (job_cancel(id) < 0) { http_error(r, 404, "no such job: %d", id); return; }
    json_t *j = job_json(id);
    if (!j) { http_error(r, 404, "no such job: %d", id); return; }
    http_reply_json(r, 200, j);
}

/* ---- POST /admin/models/{m}/versions/{v}/activate ------------------------------------- */

static void admin_activate(http_req *r)
{
    if (!known_model(r)) return;
    long long v = parse_uint(r->param[1], INT_MAX);
    if (v < 1) { http_error(r, 400, "invalid version '%.32s' (expected a positive integer)", r->param[1]); return; }
    char err[400] = "";
    int rc = job_activate(r->param[0], (int)v, err, sizeof err);
    if (rc) {
        http_error(r, rc >= 400 && rc <= 599 ? rc : 500, "cannot activate version %lld of '%s': %s", v, r->param[0], err);
        return;
    }
    log_msg(LOG_INFO, "admin: model %s version %lld activated", r->param[0], v);
    http_reply_json(r, 200, json_pack("{s:s, s:I}", "model", r->param[0], "active", (json_int_t)v));
}

/* ---- the route table ------------------------------------------------------------------ */

/* max_body is admin_max_archive_bytes, set by admin_init before the listener starts */
static http_stream prune_stream = {0, prune_begin, prune_chunk};

static const http_route routes[] = {
    {"GET", "/admin/models", admin_models, "admin_models", NULL},
    {"POST", "/admin/models/{m}/prune", prune_end, "admin_prune", &prune_stream},
    {"GET", "/admin/jobs/{j}", admin_job_get, "admin_job", NULL},
    {"DELETE", "/admin/jobs/{j}", admin_job_cancel, "admin_job_cancel", NULL},
    {"POST", "/admin/models/{m}/versions/{v}/activate", admin_activate, "admin_activate", NULL},
};

const http_route *admin_routes(int *n)
{
    *n = (int)(sizeof routes / sizeof routes[0]);
    return routes;
}
