/* srv_api.c - route handlers of the inference API (see srv_api.h for the formats).
 *
 * Every handler either replies on the spot (metadata, health, metrics, and every error
 * found while parsing and decoding) or builds an api_work, suspends the request and queues
 * the work's images for the model's worker; on_resume then replies from the logits.
 */
#include "srv_api.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "srv_batcher.h"
#include "srv_metrics.h"
#include "srv_payload.h"
#include "srv_registry.h"

#define INPUT_NAME "input"
#define OUTPUT_NAME "logits"

static const conf_t *g_conf;

void api_init(const conf_t *c) { g_conf = c; }

/* ---- helpers -------------------------------------------------------------------------- */

/* The model (and version) a request names, with a reference; replies 400/404/503 and
 * returns NULL when there is none to use. */
static reg_version *model_of(http_req *r, int for_inference)
{
    const char *name = r->param[0], *vs = r->param[1];
    if (!conf_valid_name(name)) {
        http_error(r, 400, "invalid model name (expected 1..64 of A-Z a-z 0-9 _ -)");
        return NULL;
    }
    long version = 0;
    if (*vs) {
        char *end;
        errno = 0;
        version = strtol(vs, &end, 10);
        if (end == vs || *end || errno || version < 1 || version > INT_MAX || !isdigit((unsigned char)*vs)) {
            http_error(r, 400, "invalid version '%.32s' (expected a positive integer)", vs);
            return NULL;
        }
    }
    reg_version *v = reg_acquire(name, (int)version);
    if (!v) {
        if (reg_ready(name) < 0) http_error(r, 404, "unknown model '%s'", name);
        else http_error(r, 404, "model '%s' has no version %ld", name, version);
        return NULL;
    }
    r->model = r->param[0];
    r->version = reg_version_id(v);
    /* requests in flight when the drain began are still served */
    if (for_inference && (http_after_drain(r) || reg_ready(name) != 1)) {
        if (http_after_drain(r)) http_error(r, 503, "the server is shutting down");
        else http_error(r, 503, "model '%s' is not ready yet", name);
        reg_release(v);
        return NULL;
    }
    return v;
}

static json_t *version_string(int id)
{
    char s[16];
    snprintf(s, sizeof s, "%d", id);
    return json_string(s);
}

/* Content-Type's media type equals want (case-insensitive, parameters ignored). */
static int media_is(const char *ct, const char *want)
{
    size_t n = strlen(want);
    if (!ct || strncasecmp(ct, want, n)) return 0;
    return ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ';
}

/* ---- metadata, health, metrics -------------------------------------------------------- */

static void api_server_meta(http_req *r)
{
    http_reply_json(r, 200, json_pack("{s:s, s:s, s:[s]}", "name", "vitd", "version", VITD_VERSION,
                                      "extensions", "classification"));
}

static void api_live(http_req *r)
{
    http_reply_json(r, 200, json_pack("{s:b}", "live", 1));
}

static void api_ready(http_req *r)
{
    if (http_draining(r)) http_error(r, 503, "not ready: the server is shutting down");
    else if (!reg_all_ready()) http_error(r, 503, "not ready: models are loading");
    else http_reply_json(r, 200, json_pack("{s:b}", "ready", 1));
}

static void api_model_meta(http_req *r)
{
    reg_version *v = model_of(r, 0);
    if (!v) return;
    const vit_config *c = reg_version_config(v);
    const vit_model *m = reg_version_model(v);
    int ids[64];
    int n = reg_versions(r->param[0], ids, 64);
    json_t *versions = json_array(), *removed = json_array(), *labels = NULL;
    for (int i = 0; i < n; i++) json_array_append_new(versions, version_string(ids[i]));
    for (int b = 0; b < c->depth; b++)
        if ((c->removed >> b) & 1) json_array_append_new(removed, json_integer(b));
    if (vit_label(m, 0)) {
        labels = json_array();
        for (int k = 0; k < c->classes; k++) json_array_append_new(labels, json_string(vit_label(m, k)));
    }
    json_t *j = json_pack(
        "{s:s, s:o, s:o, s:s, s:[{s:s, s:s, s:[i,i,i,i], s:{s:[s,s]}}], s:[{s:s, s:s, s:[i,i]}],"
        " s:{s:i, s:i, s:i, s:i, s:i, s:i, s:o, s:b}}",
        "name", r->param[0], "versions", versions, "version", version_string(reg_version_id(v)),
        "platform", "vitd_onednn",
        "inputs", "name", INPUT_NAME, "datatype", "FP32", "shape", -1, c->channels, c->image_size, c->image_size,
        "parameters", "datatypes", "FP32", "BYTES",
        "outputs", "name", OUTPUT_NAME, "datatype", "FP32", "shape", -1, c->classes,
        "parameters", "image_size", c->image_size, "channels", c->channels, "patch", c->patch,
        "classes", c->classes, "depth", c->depth, "dim", c->dim, "removed_blocks", removed,
        "distilled", c->distilled);
    if (j && labels) json_object_set_new(json_object_get(j, "parameters"), "labels", labels);
    else json_decref(labels);
    reg_release(v);
    http_reply_json(r, 200, j);
}

static void api_model_ready(http_req *r)
{
    reg_version *v = model_of(r, 0);
    if (!v) return;
    int ready = reg_ready(r->param[0]) == 1 && !http_draining(r);
    reg_release(v);
    if (ready) http_reply_json(r, 200, json_pack("{s:s, s:b}", "name", r->param[0], "ready", 1));
    else http_error(r, 503, "model '%s' is not ready%s", r->param[0], http_draining(r) ? ": the server is shutting down" : "");
}

static void api_metrics(http_req *r)
{
    size_t n;
    char *s = met_render(&n);
    if (!s) { http_error(r, 500, "out of memory"); return; }
    http_reply(r, 200, "text/plain; version=0.0.4; charset=utf-8", s, n);
}

/* ---- inference: the work a request queues --------------------------------------------- */

typedef enum { OUT_LOGITS, OUT_CLASSES, OUT_CLASSIFY } out_kind;

typedef struct {
    http_req *r;
    reg_version *ver;       /* a reference, released once the reply is queued */
    bat_job job;
    float *x;               /* (n, C, S, S) */
    float *logits;          /* (n, K) */
    int n;                  /* images */
    int top_k;
    out_kind kind;
    char *id;               /* OIP request id to echo, or NULL */
    int rejected;           /* bat_submit's refusal, 0 when queued */
} api_work;

static void work_free(void *p)
{
    api_work *w = p;
    if (!w) return;
    reg_release(w->ver);
    free(w->x);
    free(w->logits);
    free(w->id);
    free(w);
}

/* A new work for n images of model v (which it takes over); replies 413/503 (too many
 * images, queue already full, out of memory) and returns NULL on failure (and releases v). */
static api_work *work_new(http_req *r, reg_version *v, int n)
{
    const vit_config *c = reg_version_config(v);
    if (n > g_conf->max_images_per_request) {
        http_error(r, 413, "%d images is over the limit of %ld per request", n, g_conf->max_images_per_request);
        reg_release(v);
        return NULL;
    }
    if (!bat_has_room(reg_version_queue(v), n)) { /* refuse before spending time decoding */
        http_error(r, 503, "queue full: model '%s' has %ld images waiting (max_queue_images)",
                   reg_version_name(v), g_conf->max_queue_images);
        reg_release(v);
        return NULL;
    }
    size_t per = (size_t)c->channels * c->image_size * c->image_size;
    api_work *w = calloc(1, sizeof *w);
    if (w) {
        w->x = malloc((size_t)n * per * sizeof(float));
        w->logits = malloc((size_t)n * c->classes * sizeof(float));
    }
    if (!w || !w->x || !w->logits) {
        if (w) { free(w->x); free(w->logits); free(w); }
        reg_release(v);
        http_error(r, 503, "out of memory for %d images", n);
        return NULL;
    }
    w->r = r;
    w->ver = v;
    w->n = n;
    r->ctx = w;
    r->ctx_free = work_free;
    r->images = n;
    return w;
}

/* Decodes image i of w; replies and returns -1 on failure. what names it in the message. */
static int decode_one(http_req *r, api_work *w, int i, const void *buf, size_t len, const char *what)
{
    const vit_config *c = reg_version_config(w->ver);
    size_t per = (size_t)c->channels * c->image_size * c->image_size;
    char err[256] = "";
    int64_t t0 = bat_now_ns();
    vt_status st = len ? pay_image(w->ver, buf, len, w->x + (size_t)i * per, err, sizeof err)
                       : vt_err(err, sizeof err, VT_EFORMAT, "empty");
    double secs = (bat_now_ns() - t0) / 1e9;
    met_decode(secs);
    r->decode_ms = (r->decode_ms < 0 ? 0 : r->decode_ms) + secs * 1e3;
    if (!st) return 0;
    if (st == VT_ELIMIT) http_error(r, 413, "%s: %s", what, err);
    else if (st == VT_ENOMEM) http_error(r, 503, "%s: out of memory", what);
    else http_error(r, 400, "%s: cannot decode the image: %s", what, err);
    return -1;
}

/* Softmax probabilities of one row, best first: k entries of (index, probability). */
typedef struct { int k; float p; } ranked;

static int by_prob(const void *a, const void *b)
{
    const ranked *x = a, *y = b;
    if (x->p != y->p) return x->p < y->p ? 1 : -1;
    return x->k - y->k;
}

static ranked *rank(const float *y, int K)
{
    ranked *rk = malloc((size_t)K * sizeof *rk);
    if (!rk) return NULL;
    double mx = y[0], sum = 0;
    for (int k = 1; k < K; k++) mx = y[k] > mx ? y[k] : mx;
    for (int k = 0; k < K; k++) sum += exp((double)y[k] - mx);
    for (int k = 0; k < K; k++) rk[k] = (ranked){k, (float)(exp((double)y[k] - mx) / sum)};
    qsort(rk, (size_t)K, sizeof *rk, by_prob);
    return rk;
}

static const char *label_of(const vit_model *m, int k, char *buf, size_t n)
{
    const char *l = vit_label(m, k);
    if (l) return l;
    snprintf(buf, n, "%d", k);
    return buf;
}

/* The reply of a finished work. */
static json_t *result_json(api_work *w)
{
    const vit_config *c = reg_version_config(w->ver);
    const vit_model *m = reg_version_model(w->ver);
    int K = c->classes, top = w->top_k < K ? w->top_k : K;
    json_t *data = json_array();
    char lb[16];
    if (w->kind == OUT_LOGITS) {
        for (size_t i = 0; i < (size_t)w->n * K; i++) json_array_append_new(data, json_real(w->logits[i]));
    } else {
        for (int i = 0; i < w->n; i++) {
            ranked *rk = rank(w->logits + (size_t)i * K, K);
            if (!rk) { json_decref(data); return NULL; }
            json_t *row = w->kind == OUT_CLASSIFY ? json_array() : data;
            for (int t = 0; t < top; t++) {
                const char *label = label_of(m, rk[t].k, lb, sizeof lb);
                if (w->kind == OUT_CLASSIFY) {
                    json_array_append_new(row, json_pack("{s:s, s:i, s:f}", "label", label, "index", rk[t].k,
                                                         "score", (double)rk[t].p));
                } else {
                    char s[512];
                    snprintf(s, sizeof s, "%.9g:%d:%s", (double)rk[t].p, rk[t].k, label);
                    json_array_append_new(row, json_string(s));
                }
            }
            if (w->kind == OUT_CLASSIFY) json_array_append_new(data, row);
            free(rk);
        }
    }
    if (w->kind == OUT_CLASSIFY)
        return json_pack("{s:s, s:o, s:o}", "model", reg_version_name(w->ver), "version",
                         version_string(reg_version_id(w->ver)), "predictions", data);
    json_t *out = w->kind == OUT_LOGITS
        ? json_pack("{s:s, s:s, s:[i,i], s:o}", "name", OUTPUT_NAME, "datatype", "FP32", "shape", w->n, K, "data", data)
        : json_pack("{s:s, s:s, s:[i,i], s:o}", "name", OUTPUT_NAME, "datatype", "BYTES", "shape", w->n, top, "data", data);
    json_t *j = json_pack("{s:s, s:o, s:[o]}", "model_name", reg_version_name(w->ver), "model_version",
                          version_string(reg_version_id(w->ver)), "outputs", out);
    if (j && w->id) json_object_set_new(j, "id", json_string(w->id));
    return j;
}

/* Worker thread: the job is done; wake the request (after this the job is not touched). */
static void job_done(bat_job *j)
{
    api_work *w = j->ctx;
    http_resume(w->r);
}

/* HTTP thread, after http_resume: reply. */
static void on_resume(http_req *r)
{
    api_work *w = r->ctx;
    bat_job *j = &w->job;
    if (w->rejected == -1) {
        http_error(r, 503, "queue full: model '%s' has %ld images waiting (max_queue_images)",
                   reg_version_name(w->ver), g_conf->max_queue_images);
    } else if (w->rejected) {
        http_error(r, 503, "the server is shutting down");
    } else {
        if (j->t_started) {
            r->queue_ms = (j->t_started - j->t_enqueued) / 1e6;
            r->infer_ms = (j->t_finished - j->t_started) / 1e6;
        }
        switch (j->outcome) {
        case BAT_OK: {
            json_t *res = result_json(w);
            if (res) http_reply_json(r, 200, res);
            else http_error(r, 500, "out of memory");
            break;
        }
        case BAT_EXPIRED: http_error(r, 503, "%s", j->err); break;
        case BAT_DRAINED: http_error(r, 503, "%s", j->err); break;
        case BAT_FAILED: http_error(r, 500, "inference failed: %s", j->err); break;
        }
    }
    reg_release(w->ver); /* the reply is queued: this request no longer needs the model */
    w->ver = NULL;
}

static void submit(http_req *r, api_work *w)
{
    w->job = (bat_job){.ver = w->ver, .x = w->x, .logits = w->logits, .n = w->n,
                       .deadline_ns = r->t_start + (int64_t)g_conf->request_timeout_ms * 1000000,
                       .done = job_done, .ctx = w};
    /* suspend before queueing: the worker may finish and resume at once */
    http_suspend(r, on_resume);
    w->rejected = bat_submit(reg_version_queue(w->ver), &w->job);
    if (w->rejected) http_resume(r);
}

/* ---- POST /v2/models/{m}[/versions/{v}]/infer ----------------------------------------- */

/* Flattens nested arrays of numbers into out; returns 0, or -1 not a number, -2 too many
 * values, -3 outside float32, -4 nested too deep. */
static int flatten(json_t *a, float *out, size_t cap, size_t *n, int depth)
{
    if (json_is_array(a)) {
        if (depth > 4) return -4;
        size_t i;
        json_t *e;
        json_array_foreach(a, i, e) {
            int rc = flatten(e, out, cap, n, depth + 1);
            if (rc) return rc;
        }
        return 0;
    }
    if (!json_is_number(a)) return -1;
    if (*n >= cap) return -2;
    float f = (float)json_number_value(a);
    if (!isfinite(f)) return -3;
    out[(*n)++] = f;
    return 0;
}

/* shape as integers into dims (at most 8); -1 when not an array of non-negative integers. */
static int shape_of(json_t *s, long long *dims, int max)
{
    if (!json_is_array(s) || json_array_size(s) > (size_t)max) return -1;
    size_t i;
    json_t *e;
    json_array_foreach(s, i, e) {
        if (!json_is_integer(e) || json_integer_value(e) < 0) return -1;
        dims[i] = json_integer_value(e);
    }
    return (int)json_array_size(s);
}

static void api_infer(http_req *r)
{
    reg_version *v = model_of(r, 1);
    if (!v) return;
    const char *ct = http_header(r, "Content-Type");
    if (ct && *ct && !media_is(ct, "application/json")) {
        reg_release(v);
        http_error(r, 415, "Content-Type %.64s is not supported here: send application/json%s", ct,
                   media_is(ct, "application/octet-stream") ? " (the binary tensor extension is not implemented)" : "");
        return;
    }
    if (!r->body_len) { reg_release(v); http_error(r, 400, "empty body: expected an inference request in JSON"); return; }

    const vit_config *c = reg_version_config(v);
    size_t per = (size_t)c->channels * c->image_size * c->image_size;
    /* jansson holds ~50 bytes per value: bound the count before parsing (a body of
     * "0,0,0,..." would otherwise cost 25x its size) */
    size_t commas = 0, cap = (size_t)g_conf->max_images_per_request * per + 4096;
    for (size_t i = 0; i < r->body_len; i++) commas += r->body[i] == ',';
    if (commas > cap) {
        reg_release(v);
        http_error(r, 413, "too many JSON values: at most %ld images of %dx%dx%d per request",
                   g_conf->max_images_per_request, c->channels, c->image_size, c->image_size);
        return;
    }
    json_error_t je;
    json_t *req = json_loadb((const char *)r->body, r->body_len, JSON_REJECT_DUPLICATES, &je);
    api_work *w = NULL;
    if (!req) {
        http_error(r, 400, "malformed JSON at line %d column %d: %s", je.line, je.column, je.text);
        goto fail;
    }
    json_t *id = json_object_get(req, "id"), *inputs = json_object_get(req, "inputs");
    json_t *outputs = json_object_get(req, "outputs"), *params = json_object_get(req, "parameters");
    if (!json_is_object(req)) { http_error(r, 400, "the request must be a JSON object"); goto fail; }
    if (id && !json_is_string(id)) { http_error(r, 400, "\"id\" must be a string"); goto fail; }
    if (params && (!json_is_object(params) || json_object_get(params, "binary_data_output"))) {
        http_error(r, 400, "\"parameters\" must be an object; binary data outputs are not supported");
        goto fail;
    }
    if (!json_is_array(inputs) || json_array_size(inputs) != 1) {
        http_error(r, 400, "\"inputs\" must be an array of exactly one tensor (the model's input \"%s\")", INPUT_NAME);
        goto fail;
    }
    json_t *in = json_array_get(inputs, 0);
    json_t *name = json_object_get(in, "name"), *dt = json_object_get(in, "datatype");
    json_t *shape = json_object_get(in, "shape"), *data = json_object_get(in, "data");
    json_t *iparams = json_object_get(in, "parameters");
    if (!json_is_object(in) || !json_is_string(name) || !json_is_string(dt) || !shape || !data) {
        http_error(r, 400, "an input needs \"name\", \"datatype\", \"shape\" and \"data\"");
        goto fail;
    }
    if (strcmp(json_string_value(name), INPUT_NAME)) {
        http_error(r, 400, "unknown input '%.64s': this model's input is '%s'", json_string_value(name), INPUT_NAME);
        goto fail;
    }
    if (iparams && json_object_get(iparams, "binary_data_size")) {
        http_error(r, 400, "binary tensor data is not supported: put the data in JSON");
        goto fail;
    }

    /* outputs: logits, optionally as classification strings */
    out_kind kind = OUT_LOGITS;
    long top = 0;
    if (outputs) {
        if (!json_is_array(outputs) || json_array_size(outputs) > 1) {
            http_error(r, 400, "\"outputs\" must be an array of at most one output (\"%s\")", OUTPUT_NAME);
            goto fail;
        }
        json_t *o = json_array_get(outputs, 0);
        if (o) {
            json_t *on = json_object_get(o, "name"), *op = json_object_get(o, "parameters");
            if (!json_is_string(on) || strcmp(json_string_value(on), OUTPUT_NAME)) {
                http_error(r, 400, "unknown output: this model's output is '%s'", OUTPUT_NAME);
                goto fail;
            }
            if (op && !json_is_object(op)) { http_error(r, 400, "output \"parameters\" must be an object"); goto fail; }
            json_t *cls = op ? json_object_get(op, "classification") : NULL;
            if (op && json_is_true(json_object_get(op, "binary_data"))) {
                http_error(r, 400, "binary data outputs are not supported");
                goto fail;
            }
            if (cls) {
                if (!json_is_integer(cls) || json_integer_value(cls) < 1) {
                    http_error(r, 400, "\"classification\" must be a positive integer");
                    goto fail;
                }
                kind = OUT_CLASSES;
                top = json_integer_value(cls) < c->classes ? (long)json_integer_value(cls) : c->classes;
            }
        }
    }

    long long dims[8];
    int rank_ = shape_of(shape, dims, 8);
    const char *dts = json_string_value(dt);
    if (!strcmp(dts, "FP32")) {
        if (rank_ != 4 || dims[1] != c->channels || dims[2] != c->image_size || dims[3] != c->image_size || dims[0] < 1) {
            http_error(r, 400, "FP32 input shape must be [N, %d, %d, %d] with N >= 1", c->channels, c->image_size, c->image_size);
            goto fail;
        }
        if (dims[0] > g_conf->max_images_per_request) {
            http_error(r, 413, "%lld images is over the limit of %ld per request", dims[0], g_conf->max_images_per_request);
            goto fail;
        }
        w = work_new(r, v, (int)dims[0]);
        v = NULL; /* the work owns it now (or released it) */
        if (!w) goto fail;
        size_t n = 0, want = (size_t)w->n * per;
        int rc = flatten(data, w->x, want, &n, 0);
        if (rc == -1 || !json_is_array(data)) { http_error(r, 400, "FP32 \"data\" must be an array of numbers"); goto fail; }
        if (rc == -3) { http_error(r, 400, "FP32 \"data\" holds a value outside the float32 range"); goto fail; }
        if (rc == -4) { http_error(r, 400, "FP32 \"data\" is nested too deeply"); goto fail; }
        if (rc == -2 || n != want) {
            http_error(r, 400, "FP32 \"data\" has %s%zu values; shape [%d, %d, %d, %d] needs %zu",
                       rc == -2 ? "more than " : "", n, w->n, c->channels, c->image_size, c->image_size, want);
            goto fail;
        }
    } else if (!strcmp(dts, "BYTES")) {
        if (rank_ != 1 || dims[0] < 1) { http_error(r, 400, "BYTES input shape must be [N] with N >= 1"); goto fail; }
        if (dims[0] > g_conf->max_images_per_request) {
            http_error(r, 413, "%lld images is over the limit of %ld per request", dims[0], g_conf->max_images_per_request);
            goto fail;
        }
        if (!json_is_array(data) || json_array_size(data) != (size_t)dims[0]) {
            http_error(r, 400, "BYTES \"data\" must be an array of %lld base64 strings", dims[0]);
            goto fail;
        }
        w = work_new(r, v, (int)dims[0]);
        v = NULL;
        if (!w) goto fail;
        for (int i = 0; i < w->n; i++) {
            json_t *e = json_array_get(data, (size_t)i);
            char what[48];
            snprintf(what, sizeof what, "input element %d", i);
            if (!json_is_string(e)) { http_error(r, 400, "%s: not a base64 string", what); goto fail; }
            unsigned char *img;
            size_t len;
            int rc = pay_base64(json_string_value(e), json_string_length(e), &img, &len);
            if (rc) {
                if (rc == -1) http_error(r, 400, "%s: invalid base64", what);
                else http_error(r, 503, "out of memory");
                goto fail;
            }
            rc = decode_one(r, w, i, img, len, what);
            free(img);
            if (rc) goto fail;
        }
    } else {
        http_error(r, 400, "unsupported datatype '%.16s': the input takes FP32 (preprocessed) or BYTES (encoded images)", dts);
        goto fail;
    }
    w->kind = kind;
    w->top_k = (int)top;
    if (id && !(w->id = strdup(json_string_value(id)))) { http_error(r, 503, "out of memory"); goto fail; }
    json_decref(req);
    submit(r, w);
    return;
fail:
    json_decref(req);
    reg_release(v); /* when the work did not take it; the work itself is freed at completion */
}

/* ---- POST /v1/models/{m}/classify ----------------------------------------------------- */

static void api_classify(http_req *r)
{
    reg_version *v = model_of(r, 1);
    if (!v) return;
    const vit_config *c = reg_version_config(v);
    long top = g_conf->default_top_k;
    const char *tk = http_query(r, "top_k");
    if (tk) {
        char *end;
        errno = 0;
        top = strtol(tk, &end, 10);
        if (end == tk || *end || errno || top < 1) {
            reg_release(v);
            http_error(r, 400, "top_k must be a positive integer");
            return;
        }
    }
    if (top > c->classes) top = c->classes;
    const char *ct = http_header(r, "Content-Type");
    if (ct && !*ct) ct = NULL; /* an empty header is no header: the image is sniffed */
    int multipart = media_is(ct, "multipart/form-data");
    if (ct && !multipart && !media_is(ct, "image/jpeg") && !media_is(ct, "image/png") &&
        !media_is(ct, "application/octet-stream")) {
        reg_release(v);
        http_error(r, 415, "Content-Type %.64s is not supported: send image/jpeg, image/png or multipart/form-data", ct);
        return;
    }
    if (!r->body_len) { reg_release(v); http_error(r, 400, "empty body: expected an image"); return; }

    api_work *w;
    if (multipart) {
        int maxp = (int)g_conf->max_images_per_request, np = 0;
        pay_part *parts = malloc((size_t)maxp * sizeof *parts);
        char err[256];
        if (!parts) { reg_release(v); http_error(r, 503, "out of memory"); return; }
        int rc = pay_multipart(ct, r->body, r->body_len, parts, maxp, &np, err, sizeof err);
        if (rc || np == 0) {
            free(parts);
            reg_release(v);
            if (rc == -2) http_error(r, 413, "more than %d images in one request", maxp);
            else if (rc) http_error(r, 400, "%s", err);
            else http_error(r, 400, "multipart body without a file part");
            return;
        }
        if (!(w = work_new(r, v, np))) { free(parts); return; }
        for (int i = 0; i < np; i++) {
            char what[200];
            if (parts[i].filename[0]) snprintf(what, sizeof what, "part %d (%.128s)", i, parts[i].filename);
            else snprintf(what, sizeof what, "part %d", i);
            if (decode_one(r, w, i, parts[i].data, parts[i].len, what)) { free(parts); return; }
        }
        free(parts);
    } else {
        if (!(w = work_new(r, v, 1))) return;
        if (decode_one(r, w, 0, r->body, r->body_len, "body")) return;
    }
    w->kind = OUT_CLASSIFY;
    w->top_k = (int)top;
    submit(r, w);
}

/* ---- the route table ------------------------------------------------------------------ */

static const http_route routes[] = {
    {"GET", "/v2", api_server_meta, "server_metadata", NULL},
    {"GET", "/v2/health/live", api_live, "health_live", NULL},
    {"GET", "/v2/health/ready", api_ready, "health_ready", NULL},
    {"GET", "/v2/models/{m}", api_model_meta, "model_metadata", NULL},
    {"GET", "/v2/models/{m}/versions/{v}", api_model_meta, "model_metadata", NULL},
    {"GET", "/v2/models/{m}/ready", api_model_ready, "model_ready", NULL},
    {"GET", "/v2/models/{m}/versions/{v}/ready", api_model_ready, "model_ready", NULL},
    {"POST", "/v2/models/{m}/infer", api_infer, "infer", NULL},
    {"POST", "/v2/models/{m}/versions/{v}/infer", api_infer, "infer", NULL},
    {"POST", "/v1/models/{m}/classify", api_classify, "classify", NULL},
    {"GET", "/metrics", api_metrics, "metrics", NULL},
};

const http_route *api_routes(int *n)
{
    *n = (int)(sizeof routes / sizeof routes[0]);
    return routes;
}
