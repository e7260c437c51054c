/* srv_batcher.c - the bounded queue and the inference worker of one model (see
 * srv_batcher.h). The queue is a singly linked list in arrival order under one mutex; the
 * worker unlinks jobs as it fills a batch, runs the forward pass without the mutex, then
 * calls each finished job's done(). */
#include "srv_batcher.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "srv_log.h"
#include "srv_metrics.h"

/* CPU tokens, one per usable CPU (bat_set_cpus): a forward pass holds as many as its team
 * has threads (at most all of them), so the OpenMP teams running at once never add up to more
 * threads than CPUs: two models with all-CPU teams take turns, two one-thread workers of a
 * small model run side by side. */
static pthread_mutex_t g_cpu_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cpu_cond = PTHREAD_COND_INITIALIZER;
static int g_cpu_cap = 1, g_cpu_free = 1;
static _Atomic int64_t g_last_active_ns; /* when a forward pass of any worker last ended */

int64_t bat_last_active_ns(void)
{
    return atomic_load_explicit(&g_last_active_ns, memory_order_relaxed);
}

void bat_set_cpus(int cpus)
{
    pthread_mutex_lock(&g_cpu_lock);
    if (cpus < 1) cpus = 1;
    g_cpu_free += cpus - g_cpu_cap;
    g_cpu_cap = cpus;
    pthread_mutex_unlock(&g_cpu_lock);
}

static int cpu_take(int n)
{
    pthread_mutex_lock(&g_cpu_lock);
    if (n > g_cpu_cap) n = g_cpu_cap;
    if (n < 1) n = 1;
    while (g_cpu_free < n) pthread_cond_wait(&g_cpu_cond, &g_cpu_lock);
    g_cpu_free -= n;
    pthread_mutex_unlock(&g_cpu_lock);
    return n;
}

static void cpu_give(int n)
{
    pthread_mutex_lock(&g_cpu_lock);
    g_cpu_free += n;
    pthread_cond_broadcast(&g_cpu_cond);
    pthread_mutex_unlock(&g_cpu_lock);
}

/* A batch: segments of jobs (job, first image, count), in order. */
typedef struct segment { bat_job *job; int first, count; } segment;

/* One worker thread and its scratch: a batch's input and output when jobs are concatenated. */
typedef struct bat_worker {
    struct bat_queue *q;
    int index;                     /* runs runner `index` of each version */
    pthread_t thread;
    int started;
    float *xbuf, *ybuf;
    size_t xcap, ycap;             /* floats */
    segment *seg;                  /* max_batch slots: the batch being formed */
    bat_job **done_list;           /* max_batch slots: jobs the batch completes */
} bat_worker;

struct bat_queue {
    char name[65];
    bat_opts o;
    met_model *mm;
    bat_worker w[REG_MAX_INSTANCES];
    pthread_mutex_t lock;
    pthread_cond_t wake;           /* worker: jobs arrived, warm-up asked, stop */
    pthread_cond_t warmed;         /* bat_warm: the worker finished a warm-up */
    bat_job *head, *tail;
    long depth;                    /* images queued, not yet in a batch */
    long running;                  /* images in the batches being computed */
    int stop;
    int closed;                    /* bat_fail_queued ran: refuse new jobs */
    reg_version *warm_ver;         /* a warm-up request, or NULL */
    int warm_done;
    vt_status warm_st;
    char warm_err[256];
};

int64_t bat_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static struct timespec abs_deadline(int64_t mono_ns)
{
    /* the condition variables are created with CLOCK_MONOTONIC */
    struct timespec ts = {.tv_sec = mono_ns / 1000000000, .tv_nsec = mono_ns % 1000000000};
    return ts;
}

static int grow(float **buf, size_t *cap, size_t need)
{
    if (need <= *cap) return 0;
    float *nb = realloc(*buf, need * sizeof(float));
    if (!nb) return -1;
    *buf = nb;
    *cap = need;
    return 0;
}

/* Runs every runner of v at every batch size 1..its max batch on the calling thread (a
 * version not yet published: nobody else uses its runners). */
static vt_status warm_runners(reg_version *v, int threads, char *err, size_t errlen)
{
    const vit_config *c = reg_version_config(v);
    size_t per = (size_t)c->channels * c->image_size * c->image_size;
    int B = vit_runner_max_batch(reg_version_runner(v));
    float *x = malloc(per * B * sizeof *x), *y = malloc((size_t)c->classes * B * sizeof *y);
    vt_status st = VT_OK;
    if (!x || !y) st = vt_err(err, errlen, VT_ENOMEM, "out of memory for warm-up");
    uint32_t s = 12345;
    for (size_t i = 0; x && i < per * B; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = (float)(s >> 8) / (float)(1 << 24) * 2.0f - 1.0f;
    }
    for (int r = 0; r < reg_version_instances(v) && !st; r++) {
        int held = threads > 0 ? cpu_take(threads) : 0;
        for (int b = 1; b <= B && !st; b++) st = vit_forward(reg_version_runner_at(v, r), x, b, y, NULL, err, errlen);
        if (held) cpu_give(held);
    }
    free(x);
    free(y);
    return st;
}

static void warm_up(bat_queue *q, reg_version *v)
{
    q->warm_st = warm_runners(v, q->o.threads, q->warm_err, sizeof q->warm_err);
}

vt_status bat_warm_here(reg_version *v, char *err, size_t errlen)
{
    return warm_runners(v, 0, err, errlen);
}

/* Unlinks job j (prev is its predecessor or NULL). Caller holds the lock. */
static void unlink_job(bat_queue *q, bat_job *prev, bat_job *j)
{
    if (prev) prev->next = j->next;
    else q->head = j->next;
    if (q->tail == j) q->tail = prev;
    j->next = NULL;
}

static void finish(bat_job *j, bat_outcome o)
{
    j->outcome = o;
    j->t_finished = bat_now_ns();
    j->done(j);
}

/* Images queued for version v. Caller holds the lock. */
static long queued_for(bat_queue *q, reg_version *v)
{
    long n = 0;
    for (bat_job *j = q->head; j; j = j->next)
        if (j->ver == v) n += j->n - j->taken;
    return n;
}

static void *worker(void *arg)
{
    bat_worker *w = arg;
    bat_queue *q = w->q;
    /* The OpenMP team is created by this thread's first parallel region and inherits its
     * nice value, so set it first. */
    if (q->o.nice) {
        pid_t tid = (pid_t)syscall(SYS_gettid);
        errno = 0;
        int cur = getpriority(PRIO_PROCESS, (id_t)tid);
        if (errno == 0) setpriority(PRIO_PROCESS, (id_t)tid, cur + q->o.nice);
    }
    vit_set_threads(q->o.threads);
    segment *seg = w->seg;
    bat_job **done_list = w->done_list;

    pthread_mutex_lock(&q->lock);
    for (;;) {
        if (q->warm_ver && w->index == 0) {
            reg_version *v = q->warm_ver;
            pthread_mutex_unlock(&q->lock);
            warm_up(q, v);
            pthread_mutex_lock(&q->lock);
            q->warm_ver = NULL;
            q->warm_done = 1;
            pthread_cond_broadcast(&q->warmed);
            continue;
        }
        if (!q->head) {
            if (q->stop) break;
            pthread_cond_wait(&q->wake, &q->lock);
            continue;
        }
        int64_t now = bat_now_ns();

        /* expired jobs that never started leave without running */
        bat_job *expired = NULL, **etail = &expired;
        for (bat_job *prev = NULL, *j = q->head, *next; j; j = next) {
            next = j->next;
            if (j->taken == 0 && j->deadline_ns && now > j->deadline_ns) {
                unlink_job(q, prev, j);
                q->depth -= j->n;
                *etail = j;
                etail = &j->next;
            } else {
                prev = j;
            }
        }
        if (expired) {
            atomic_store(&q->mm->queue_depth, q->depth);
            pthread_mutex_unlock(&q->lock);
            while (expired) {
                bat_job *next = expired->next;
                snprintf(expired->err, sizeof expired->err, "deadline exceeded after %.0f ms in the queue",
                         (now - expired->t_enqueued) / 1e6);
                finish(expired, BAT_EXPIRED);
                expired = next;
            }
            pthread_mutex_lock(&q->lock);
            continue;
        }

        /* wait (bounded) for a fuller batch, unless the queue is stopping */
        reg_version *v = q->head->ver;
        if (q->o.max_queue_delay_us > 0 && !q->stop && !q->warm_ver) {
            int64_t until = q->head->t_enqueued + q->o.max_queue_delay_us * 1000;
            if (now < until && queued_for(q, v) < q->o.max_batch) {
                struct timespec ts = abs_deadline(until);
                pthread_cond_timedwait(&q->wake, &q->lock, &ts);
                continue;
            }
        }

        /* fill the batch from jobs of the head's version, in order; a job leaves the queue
         * once all its images are taken, but is finished only when its last piece has run */
        int nseg = 0, room = q->o.max_batch;
        for (bat_job *prev = NULL, *j = q->head, *next; j && room > 0; j = next) {
            next = j->next;
            if (j->ver != v) { prev = j; continue; }
            int k = j->n - j->taken < room ? j->n - j->taken : room;
            if (j->taken == 0) j->t_started = now;
            seg[nseg++] = (segment){j, j->taken, k};
            j->taken += k;
            j->running++;
            room -= k;
            if (j->taken == j->n) unlink_job(q, prev, j);
            else prev = j;
        }
        int B = q->o.max_batch - room;
        q->depth -= B;
        q->running += B;
        atomic_store(&q->mm->queue_depth, q->depth);
        pthread_mutex_unlock(&q->lock);

        /* one segment: run in place; several: gather into the batch buffers */
        const vit_config *c = reg_version_config(v);
        size_t per = (size_t)c->channels * c->image_size * c->image_size, K = (size_t)c->classes;
        const float *x;
        float *y;
        char err[200] = "";
        vt_status st = VT_OK;
        if (nseg == 1) {
            x = seg[0].job->x + (size_t)seg[0].first * per;
            y = seg[0].job->logits + (size_t)seg[0].first * K;
        } else if (grow(&w->xbuf, &w->xcap, per * B) || grow(&w->ybuf, &w->ycap, K * B)) {
            st = vt_err(err, sizeof err, VT_ENOMEM, "out of memory for a batch of %d", B);
            x = y = NULL;
        } else {
            size_t off = 0;
            for (int s = 0; s < nseg; s++) {
                memcpy(w->xbuf + off * per, seg[s].job->x + (size_t)seg[s].first * per,
                       (size_t)seg[s].count * per * sizeof(float));
                off += (size_t)seg[s].count;
            }
            x = w->xbuf;
            y = w->ybuf;
        }
        if (!st) {
            for (int s = 0; s < nseg; s++) {
                bat_job *j = seg[s].job;
                if (seg[s].first == 0)
                    met_observe(&q->mm->queue_wait, (j->t_started - j->t_enqueued) / 1e9);
            }
            int64_t t0 = bat_now_ns();
            int held = cpu_take(q->o.threads);
            st = vit_forward(reg_version_runner_at(v, w->index), x, B, y, NULL, err, sizeof err);
            cpu_give(held);
            int64_t t1 = bat_now_ns();
            atomic_store_explicit(&g_last_active_ns, t1, memory_order_relaxed);
            met_observe(&q->mm->inference, (t1 - t0) / 1e9);
            met_observe(&q->mm->batch, B);
            atomic_fetch_add_explicit(&q->mm->images, (uint64_t)B, memory_order_relaxed);
        }
        if (!st && nseg > 1) { /* scatter the batch's logits back; each job's rows are its own */
            size_t off = 0;
            for (int s = 0; s < nseg; s++) {
                memcpy(seg[s].job->logits + (size_t)seg[s].first * K, y + off * K, (size_t)seg[s].count * K * sizeof(float));
                off += (size_t)seg[s].count;
            }
        }
        if (st) log_msg(LOG_ERROR, "model %s: forward pass of %d images failed: %s", q->name, B, err);

        /* Under the lock, since other workers may be running other pieces of the same jobs:
         * record the outcome, and collect the jobs whose last piece this was. */
        int ndone = 0;
        pthread_mutex_lock(&q->lock);
        for (int s = 0; s < nseg; s++) {
            bat_job *j = seg[s].job;
            j->batch_size = B;
            if (st && j->outcome != BAT_FAILED) {
                j->outcome = BAT_FAILED;
                snprintf(j->err, sizeof j->err, "%.150s (%.40s)", err, vt_status_str(st));
            }
            if (--j->running == 0 && j->taken == j->n) done_list[ndone++] = j;
        }
        q->running -= B;
        pthread_mutex_unlock(&q->lock);
        for (int d = 0; d < ndone; d++) finish(done_list[d], done_list[d]->outcome);
        pthread_mutex_lock(&q->lock);
    }
    pthread_mutex_unlock(&q->lock);
    return NULL;
}

vt_status bat_new(const char *name, const bat_opts *o, met_model *mm, bat_queue **out,
                  char *err, size_t errlen)
{
    bat_queue *q = calloc(1, sizeof *q);
    if (!q) return vt_err(err, errlen, VT_ENOMEM, "out of memory");
    snprintf(q->name, sizeof q->name, "%s", name);
    q->o = *o;
    if (q->o.instances < 1) q->o.instances = 1;
    if (q->o.instances > REG_MAX_INSTANCES) q->o.instances = REG_MAX_INSTANCES;
    q->mm = mm;
    int nomem = 0;
    for (int i = 0; i < q->o.instances; i++) {
        q->w[i].q = q;
        q->w[i].index = i;
        q->w[i].seg = calloc((size_t)o->max_batch, sizeof *q->w[i].seg);
        q->w[i].done_list = calloc((size_t)o->max_batch, sizeof *q->w[i].done_list);
        nomem |= !q->w[i].seg || !q->w[i].done_list;
    }
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&q->lock, NULL);
    pthread_cond_init(&q->wake, &ca);
    pthread_cond_init(&q->warmed, &ca);
    pthread_condattr_destroy(&ca);
    if (nomem) {
        bat_free(q);
        return vt_err(err, errlen, VT_ENOMEM, "out of memory");
    }
    for (int i = 0; i < q->o.instances; i++) {
        int e = pthread_create(&q->w[i].thread, NULL, worker, &q->w[i]);
        if (e) {
            bat_free(q);
            return vt_err(err, errlen, VT_ENOMEM, "cannot start worker thread %d: %s", i, strerror(e));
        }
        q->w[i].started = 1;
    }
    *out = q;
    return VT_OK;
}

int bat_submit(bat_queue *q, bat_job *j)
{
    pthread_mutex_lock(&q->lock);
    if (q->stop || q->closed) { pthread_mutex_unlock(&q->lock); return -2; }
    if (q->depth + j->n > q->o.max_queue_images) { pthread_mutex_unlock(&q->lock); return -1; }
    j->t_enqueued = bat_now_ns();
    j->taken = 0;
    j->running = 0;
    j->outcome = BAT_OK;
    j->err[0] = '\0';
    j->next = NULL;
    if (q->tail) q->tail->next = j;
    else q->head = j;
    q->tail = j;
    q->depth += j->n;
    atomic_store(&q->mm->queue_depth, q->depth);
    pthread_cond_signal(&q->wake);
    pthread_mutex_unlock(&q->lock);
    return 0;
}

int bat_has_room(bat_queue *q, int n)
{
    pthread_mutex_lock(&q->lock);
    int ok = !q->stop && !q->closed && q->depth + n <= q->o.max_queue_images;
    pthread_mutex_unlock(&q->lock);
    return ok;
}

vt_status bat_warm(bat_queue *q, reg_version *v, char *err, size_t errlen)
{
    pthread_mutex_lock(&q->lock);
    while (q->warm_ver) pthread_cond_wait(&q->warmed, &q->lock); /* one warm-up at a time */
    q->warm_ver = v;
    q->warm_done = 0;
    pthread_cond_broadcast(&q->wake); /* worker 0 warms; the others may be the ones waiting */
    while (!q->warm_done) pthread_cond_wait(&q->warmed, &q->lock);
    vt_status st = q->warm_st;
    if (st) snprintf(err, errlen, "%s", q->warm_err);
    pthread_mutex_unlock(&q->lock);
    return st;
}

void bat_fail_queued(bat_queue *q)
{
    bat_job *list = NULL, **tail = &list;
    pthread_mutex_lock(&q->lock);
    q->closed = 1;
    for (bat_job *prev = NULL, *j = q->head, *next; j; j = next) {
        next = j->next;
        if (j->taken == 0) {
            unlink_job(q, prev, j);
            q->depth -= j->n;
            *tail = j;
            tail = &j->next;
        } else {
            prev = j;
        }
    }
    atomic_store(&q->mm->queue_depth, q->depth);
    pthread_mutex_unlock(&q->lock);
    while (list) {
        bat_job *next = list->next;
        snprintf(list->err, sizeof list->err, "the server is shutting down");
        finish(list, BAT_DRAINED);
        list = next;
    }
}

long bat_pending(bat_queue *q)
{
    pthread_mutex_lock(&q->lock);
    long n = q->depth + q->running;
    pthread_mutex_unlock(&q->lock);
    return n;
}

void bat_free(bat_queue *q)
{
    if (!q) return;
    if (q->w[0].started) {
        bat_fail_queued(q);
        pthread_mutex_lock(&q->lock);
        q->stop = 1;
        pthread_cond_broadcast(&q->wake);
        pthread_mutex_unlock(&q->lock);
    }
    for (int i = 0; i < REG_MAX_INSTANCES; i++) {
        if (q->w[i].started) pthread_join(q->w[i].thread, NULL);
        free(q->w[i].xbuf);
        free(q->w[i].ybuf);
        free(q->w[i].seg);
        free(q->w[i].done_list);
    }
    pthread_mutex_destroy(&q->lock);
    pthread_cond_destroy(&q->wake);
    pthread_cond_destroy(&q->warmed);
    free(q);
}
