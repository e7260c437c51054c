/* srv_metrics.c - lock-free metric updates and their Prometheus text rendering (see
 * srv_metrics.h). Histograms are cumulative only at render time; updates touch one bucket. */
#include "srv_metrics.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_ENDPOINTS 32
/* status codes with their own counter; anything else is counted under the last slot */
static const int codes[] = {200, 202, 400, 401, 404, 405, 409, 413, 415, 431, 500, 503, 0};
#define NCODES (int)(sizeof codes / sizeof codes[0])

static const double lat_bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                    0.25, 0.5, 1, 2.5, 5, 10, 30};
static const double batch_bounds[] = {1, 2, 4, 8, 16, 32, 64};
static const double job_bounds[] = {1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200};
static const char *const job_states[] = {"succeeded", "failed", "cancelled"};
#define NJOB_STATES 3
#define NB(a) (int)(sizeof a / sizeof a[0])

typedef struct {
    _Atomic uint64_t by_code[NCODES];
    met_hist duration;
} endpoint_series;

static const char *g_endpoints[MAX_ENDPOINTS];
static int g_nendpoints;
static endpoint_series g_ep[MAX_ENDPOINTS + 1]; /* last one: "other" */
static met_hist g_decode;
static _Atomic int64_t g_inflight;
static _Atomic uint64_t g_jobs[NJOB_STATES];
static met_hist g_job_duration = {.bounds = job_bounds, .nb = (int)(sizeof job_bounds / sizeof job_bounds[0])};
static _Atomic int g_job_running;
static met_model *g_models;
static pthread_mutex_t g_models_lock = PTHREAD_MUTEX_INITIALIZER;

static void hist_init(met_hist *h, const double *b, int nb)
{
    h->bounds = b;
    h->nb = nb;
}

void met_init(const char *const *endpoints, int n)
{
    g_nendpoints = 0;
    for (int i = 0; i < n && g_nendpoints < MAX_ENDPOINTS; i++)
        if (met_endpoint(endpoints[i]) < 0) g_endpoints[g_nendpoints++] = endpoints[i];
    for (int i = 0; i <= MAX_ENDPOINTS; i++) hist_init(&g_ep[i].duration, lat_bounds, NB(lat_bounds));
    hist_init(&g_decode, lat_bounds, NB(lat_bounds));
}

int met_endpoint(const char *name)
{
    for (int i = 0; i < g_nendpoints; i++)
        if (!strcmp(g_endpoints[i], name)) return i;
    return -1;
}

void met_shutdown(void)
{
    pthread_mutex_lock(&g_models_lock);
    while (g_models) {
        met_model *m = g_models;
        g_models = m->next;
        free(m);
    }
    pthread_mutex_unlock(&g_models_lock);
}

met_model *met_model_get(const char *name)
{
    pthread_mutex_lock(&g_models_lock);
    met_model *m = g_models;
    while (m && strcmp(m->name, name)) m = m->next;
    if (!m && (m = calloc(1, sizeof *m))) {
        snprintf(m->name, sizeof m->name, "%s", name);
        hist_init(&m->queue_wait, lat_bounds, NB(lat_bounds));
        hist_init(&m->inference, lat_bounds, NB(lat_bounds));
        hist_init(&m->batch, batch_bounds, NB(batch_bounds));
        /* appended, so the exposition lists models in registration order */
        met_model **p = &g_models;
        while (*p) p = &(*p)->next;
        *p = m;
    }
    pthread_mutex_unlock(&g_models_lock);
    return m;
}

void met_observe(met_hist *h, double v)
{
    int i = 0;
    while (i < h->nb && v > h->bounds[i]) i++;
    atomic_fetch_add_explicit(&h->counts[i], 1, memory_order_relaxed);
    if (v > 0) atomic_fetch_add_explicit(&h->sum_e9, (uint64_t)(v * 1e9), memory_order_relaxed);
}

void met_request(int endpoint, int status, double seconds)
{
    endpoint_series *e = &g_ep[endpoint >= 0 && endpoint < g_nendpoints ? endpoint : MAX_ENDPOINTS];
    int c = NCODES - 1;
    for (int i = 0; i < NCODES - 1; i++)
        if (codes[i] == status) c = i;
    atomic_fetch_add_explicit(&e->by_code[c], 1, memory_order_relaxed);
    met_observe(&e->duration, seconds);
}

void met_decode(double seconds) { met_observe(&g_decode, seconds); }
void met_inflight(int delta) { atomic_fetch_add_explicit(&g_inflight, delta, memory_order_relaxed); }

void met_job_finished(const char *state, double seconds)
{
    for (int i = 0; i < NJOB_STATES; i++)
        if (!strcmp(job_states[i], state)) atomic_fetch_add_explicit(&g_jobs[i], 1, memory_order_relaxed);
    met_observe(&g_job_duration, seconds);
}

void met_job_running(int running) { atomic_store(&g_job_running, running); }

/* ---- rendering ------------------------------------------------------------------------ */

typedef struct { char *buf; size_t n, cap; int oom; } text;

static void tprintf(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void tprintf(text *t, const char *fmt, ...)
{
    if (t->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(t->buf + t->n, t->cap - t->n, fmt, ap);
        va_end(ap);
        if (k < 0) { t->oom = 1; return; }
        if ((size_t)k < t->cap - t->n) { t->n += (size_t)k; return; }
        size_t cap = (t->cap + (size_t)k) * 2;
        char *nb = realloc(t->buf, cap);
        if (!nb) { t->oom = 1; return; }
        t->buf = nb;
        t->cap = cap;
    }
}

static void header(text *t, const char *name, const char *type, const char *help)
{
    tprintf(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* One histogram's series; labels is "" or `key="value"`. */
static void hist(text *t, const char *name, const char *labels, const met_hist *h)
{
    uint64_t cum = 0;
    const char *sep = *labels ? "," : "";
    for (int i = 0; i <= h->nb; i++) {
        cum += atomic_load_explicit(&h->counts[i], memory_order_relaxed);
        if (i < h->nb) tprintf(t, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, sep, h->bounds[i], (unsigned long long)cum);
        else tprintf(t, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep, (unsigned long long)cum);
    }
    double sum = atomic_load_explicit(&h->sum_e9, memory_order_relaxed) / 1e9;
    if (*labels) {
        tprintf(t, "%s_sum{%s} %.9g\n%s_count{%s} %llu\n", name, labels, sum, name, labels, (unsigned long long)cum);
    } else {
        tprintf(t, "%s_sum %.9g\n%s_count %llu\n", name, sum, name, (unsigned long long)cum);
    }
}

static long rss_bytes(void)
{
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return 0;
    if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    fclose(f);
    return resident * sysconf(_SC_PAGESIZE);
}

char *met_render(size_t *len)
{
    text t = {.buf = NULL, .n = 0, .cap = 0};
    char lab[160];
    header(&t, "vitd_requests_total", "counter", "Requests answered, by endpoint and HTTP status.");
    for (int e = 0; e <= g_nendpoints; e++) {
        endpoint_series *s = &g_ep[e == g_nendpoints ? MAX_ENDPOINTS : e];
        const char *name = e == g_nendpoints ? "other" : g_endpoints[e];
        for (int c = 0; c < NCODES; c++) {
            uint64_t v = atomic_load_explicit(&s->by_code[c], memory_order_relaxed);
            if (!v) continue;
            if (codes[c]) tprintf(&t, "vitd_requests_total{endpoint=\"%s\",code=\"%d\"} %llu\n", name, codes[c], (unsigned long long)v);
            else tprintf(&t, "vitd_requests_total{endpoint=\"%s\",code=\"other\"} %llu\n", name, (unsigned long long)v);
        }
    }
    header(&t, "vitd_request_duration_seconds", "histogram", "Whole request: first byte to reply handed to the socket.");
    for (int e = 0; e <= g_nendpoints; e++) {
        endpoint_series *s = &g_ep[e == g_nendpoints ? MAX_ENDPOINTS : e];
        snprintf(lab, sizeof lab, "endpoint=\"%s\"", e == g_nendpoints ? "other" : g_endpoints[e]);
        hist(&t, "vitd_request_duration_seconds", lab, &s->duration);
    }
    header(&t, "vitd_decode_seconds", "histogram", "Decode and preprocess of one image.");
    hist(&t, "vitd_decode_seconds", "", &g_decode);
    header(&t, "vitd_inflight_requests", "gauge", "Requests received and not yet answered.");
    tprintf(&t, "vitd_inflight_requests %lld\n", (long long)atomic_load(&g_inflight));

    pthread_mutex_lock(&g_models_lock);
    static const struct { const char *name, *type, *help; } per_model[] = {
        {"vitd_queue_wait_seconds", "histogram", "Time a request waited in the batch queue."},
        {"vitd_inference_seconds", "histogram", "Forward pass of one batch."},
        {"vitd_batch_size", "histogram", "Images per forward pass."},
        {"vitd_images_total", "counter", "Images inferred."},
        {"vitd_queue_depth", "gauge", "Images waiting in the batch queue."},
        {"vitd_model_active_version", "gauge", "Version number being served."},
        {"vitd_model_swaps_total", "counter", "Active-version changes after start-up."},
        {"vitd_model_ready", "gauge", "1 when the model is loaded and warmed."},
    };
    for (size_t k = 0; k < sizeof per_model / sizeof per_model[0]; k++) {
        header(&t, per_model[k].name, per_model[k].type, per_model[k].help);
        for (met_model *m = g_models; m; m = m->next) {
            snprintf(lab, sizeof lab, "model=\"%s\"", m->name);
            switch (k) {
            case 0: hist(&t, per_model[k].name, lab, &m->queue_wait); break;
            case 1: hist(&t, per_model[k].name, lab, &m->inference); break;
            case 2: hist(&t, per_model[k].name, lab, &m->batch); break;
            case 3: tprintf(&t, "%s{%s} %llu\n", per_model[k].name, lab, (unsigned long long)atomic_load(&m->images)); break;
            case 4: tprintf(&t, "%s{%s} %lld\n", per_model[k].name, lab, (long long)atomic_load(&m->queue_depth)); break;
            case 5: tprintf(&t, "%s{%s} %lld\n", per_model[k].name, lab, (long long)atomic_load(&m->active_version)); break;
            case 6: tprintf(&t, "%s{%s} %llu\n", per_model[k].name, lab, (unsigned long long)atomic_load(&m->swaps)); break;
            case 7: tprintf(&t, "%s{%s} %d\n", per_model[k].name, lab, atomic_load(&m->ready)); break;
            }
        }
    }
    pthread_mutex_unlock(&g_models_lock);
    header(&t, "vitd_admin_jobs_total", "counter", "Admin jobs finished, by final state.");
    for (int i = 0; i < NJOB_STATES; i++)
        tprintf(&t, "vitd_admin_jobs_total{state=\"%s\"} %llu\n", job_states[i], (unsigned long long)atomic_load(&g_jobs[i]));
    header(&t, "vitd_admin_job_duration_seconds", "histogram", "Duration of a finished admin job.");
    hist(&t, "vitd_admin_job_duration_seconds", "", &g_job_duration);
    header(&t, "vitd_admin_job_running", "gauge", "1 while an admin job is queued or running.");
    tprintf(&t, "vitd_admin_job_running %d\n", atomic_load(&g_job_running));
    header(&t, "process_resident_memory_bytes", "gauge", "Resident memory of the process.");
    tprintf(&t, "process_resident_memory_bytes %ld\n", rss_bytes());
    if (t.oom) { free(t.buf); return NULL; }
    *len = t.n;
    return t.buf;
}
