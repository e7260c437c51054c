/* test_batcher.c - the batch queue (srv_batcher.h) with several workers, without HTTP.
 *
 * What is checked: a job larger than max_batch is split into pieces that different workers
 * run at once, and its done() runs exactly once, after the last piece: at that moment every
 * row of its logits equals a forward pass of the same image alone (rows are filled with NaN
 * before submitting, so a row not yet written is seen). Several submitter threads mix small
 * and large jobs for a while. Regression test for a job finished by whichever piece was
 * taken last while an earlier piece still ran on another worker (wrong logits, then a
 * use-after-free of the request's buffers). */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "srv_batcher.h"
#include "srv_metrics.h"
#include "srv_registry.h"

#define MODEL_PATH "tests/data/golden/vit_s32_d48_rm02.safetensors"
#define MAX_BATCH 4
#define INSTANCES 2
#define SUBMITTERS 3
#define IMAGES 7            /* distinct inputs; jobs use them in rotation */

static reg_version *g_ver;
static const vit_config *g_cfg;
static size_t g_per, g_K;
static float *g_x, *g_ref;  /* (IMAGES, C, S, S) and their logits one image at a time */
static _Atomic int g_stop, g_jobs, g_bad_rows, g_twice;

typedef struct {
    bat_job job;
    float *x, *logits;
    int n, first;           /* images first, first + 1, ... (mod IMAGES) */
    _Atomic int done_calls;
    pthread_mutex_t m;
    pthread_cond_t c;
} tjob;

/* done(): on the worker thread, exactly once, after every piece has run. The rows are read
 * here, before the submitter is woken, as the server's reply would read them. */
static void on_done(bat_job *j)
{
    tjob *t = j->ctx;
    if (atomic_fetch_add(&t->done_calls, 1)) atomic_fetch_add(&g_twice, 1);
    if (j->outcome == BAT_OK) {
        for (int i = 0; i < t->n; i++) {
            const float *want = g_ref + (size_t)((t->first + i) % IMAGES) * g_K;
            if (max_abs_diff(t->logits + (size_t)i * g_K, want, g_K, NULL) > 1e-4) atomic_fetch_add(&g_bad_rows, 1);
        }
    }
    pthread_mutex_lock(&t->m);
    pthread_cond_signal(&t->c);
    pthread_mutex_unlock(&t->m);
}

static void *submitter(void *arg)
{
    bat_queue *q = reg_version_queue(g_ver);
    unsigned seed = (unsigned)(uintptr_t)arg * 7919u + 1;
    while (!atomic_load(&g_stop)) {
        seed = seed * 1664525u + 1013904223u;
        int n = 1 + (int)((seed >> 16) % (3 * MAX_BATCH + 2)); /* 1 .. 3 batches + 1 */
        tjob *t = calloc(1, sizeof *t);
        t->n = n;
        t->first = (int)((seed >> 8) % IMAGES);
        t->x = malloc((size_t)n * g_per * sizeof(float));
        t->logits = malloc((size_t)n * g_K * sizeof(float));
        for (int i = 0; i < n; i++)
            memcpy(t->x + (size_t)i * g_per, g_x + (size_t)((t->first + i) % IMAGES) * g_per, g_per * sizeof(float));
        for (size_t i = 0; i < (size_t)n * g_K; i++) t->logits[i] = NAN;
        pthread_mutex_init(&t->m, NULL);
        pthread_cond_init(&t->c, NULL);
        t->job = (bat_job){.ver = g_ver, .x = t->x, .logits = t->logits, .n = n, .done = on_done, .ctx = t};
        pthread_mutex_lock(&t->m);
        if (bat_submit(q, &t->job) == 0) {
            while (!atomic_load(&t->done_calls)) pthread_cond_wait(&t->c, &t->m);
            CHECK(t->job.outcome == BAT_OK, "outcome %d: %s", (int)t->job.outcome, t->job.err);
            atomic_fetch_add(&g_jobs, 1);
        }
        pthread_mutex_unlock(&t->m);
        /* freed at once, as a request is freed once replied: a piece still running would
         * write into freed memory (ASan) */
        pthread_mutex_destroy(&t->m);
        pthread_cond_destroy(&t->c);
        free(t->x);
        free(t->logits);
        free(t);
    }
    return NULL;
}

int main(void)
{
    char err[256] = "";
    reg_load_opts lo = {.max_batch = MAX_BATCH, .max_pixels = 1u << 20, .instances = INSTANCES};
    vt_status st = reg_version_load(MODEL_PATH, &lo, &g_ver, err, sizeof err);
    CHECK(st == VT_OK, "load %s: %s", MODEL_PATH, err);
    if (st) return check_done("test_batcher");
    g_cfg = reg_version_config(g_ver);
    g_per = (size_t)g_cfg->channels * g_cfg->image_size * g_cfg->image_size;
    g_K = (size_t)g_cfg->classes;

    /* inputs and their reference logits, one image per pass, before any worker starts */
    unsigned seed = 3;
    g_x = malloc(IMAGES * g_per * sizeof(float));
    g_ref = malloc(IMAGES * g_K * sizeof(float));
    for (size_t i = 0; i < IMAGES * g_per; i++) g_x[i] = check_randn(&seed);
    for (int i = 0; i < IMAGES; i++)
        CHECK(vit_forward(reg_version_runner(g_ver), g_x + i * g_per, 1, g_ref + i * g_K, NULL, err, sizeof err) == VT_OK,
              "reference pass: %s", err);

    reg_init(2);
    met_model *mm = met_model_get("tiny");
    bat_set_cpus(INSTANCES);
    bat_opts bo = {.max_batch = MAX_BATCH, .max_queue_images = 1000, .threads = 1, .instances = INSTANCES};
    bat_queue *q = NULL;
    CHECK(bat_new("tiny", &bo, mm, &q, err, sizeof err) == VT_OK, "bat_new: %s", err);
    CHECK(reg_add("tiny", q, mm) == 0, "reg_add");
    CHECK(reg_publish_id("tiny", g_ver, 1) == 1, "publish");
    reg_set_ready("tiny", 1);

    pthread_t th[SUBMITTERS];
    for (int i = 0; i < SUBMITTERS; i++) pthread_create(&th[i], NULL, submitter, (void *)(uintptr_t)i);
    struct timespec ts = {.tv_sec = 3};
    nanosleep(&ts, NULL);
    atomic_store(&g_stop, 1);
    for (int i = 0; i < SUBMITTERS; i++) pthread_join(th[i], NULL);

    printf("test_batcher: %d jobs, %d rows wrong at done(), %d second done() calls\n", atomic_load(&g_jobs),
           atomic_load(&g_bad_rows), atomic_load(&g_twice));
    CHECK(atomic_load(&g_jobs) > 100, "only %d jobs ran in 3 s", atomic_load(&g_jobs));
    CHECK(atomic_load(&g_bad_rows) == 0, "%d logit rows were not (yet) right when done() ran", atomic_load(&g_bad_rows));
    CHECK(atomic_load(&g_twice) == 0, "done() ran twice for %d jobs", atomic_load(&g_twice));
    CHECK(bat_pending(q) == 0, "%ld images still pending", bat_pending(q));

    bat_free(q);
    reg_shutdown();
    free(g_x);
    free(g_ref);
    return check_done("test_batcher");
}
