/* srv_batcher.h - one model's bounded queue and its inference workers, which form batches.
 *
 * HTTP threads decode and preprocess images into a job (n images, (n, C, S, S) floats) and
 * submit it. The worker thread takes jobs in arrival order and forms a batch of up to
 * max_batch images from jobs of the same model version: it waits for more only while the
 * oldest job is younger than max_queue_delay_us (0: run what is queued at once; under load
 * batches fill by themselves while the previous one runs). A job larger than what is left
 * of a batch is split across batches, which several workers may run at once; the job is
 * finished (done() called) only when its last piece has run, by whichever worker ran it, and
 * a failed piece fails the whole job. Jobs whose deadline passed before they started are
 * answered BAT_EXPIRED without running.
 *
 * Instances: a queue has opts.instances workers (Triton's instance count, OpenVINO's
 * streams), each taking whole batches from the one queue; worker i runs runner i of a version
 * (reg_load_opts.instances runners), so a small model whose passes are too short to split
 * across a team runs one single-thread pass per CPU side by side.
 *
 * Threads and the engine's contract (vit.h): worker i is the only thread that runs
 * vit_forward on runner i of its model's versions; it sets its OpenMP team size once
 * (opts.threads). CPU tokens (bat_set_cpus) keep the teams running at once within the
 * CPUs: a pass holds min(threads, cpus) tokens, so several models with all-CPU teams take
 * turns and one-thread instances run side by side. The worker lowers its own
 * scheduling priority (opts.nice) before its first OpenMP call, so its team inherits it and
 * HTTP threads (health checks, decoding) are never starved by inference.
 *
 * Ownership: a submitted job stays owned by the submitter but must not be touched until its
 * done() callback runs, exactly once, on the worker thread (or on the thread calling
 * bat_fail_queued/bat_free); after done() the batcher never touches the job again. The job's
 * version must stay referenced until then (the request's reference does it).
 */
#ifndef VT_SRV_BATCHER_H
#define VT_SRV_BATCHER_H

#include <stdint.h>

#include "srv_registry.h"
#include "status.h"

typedef enum {
    BAT_OK = 0,    /* logits written */
    BAT_EXPIRED,   /* deadline passed while queued */
    BAT_DRAINED,   /* the server is shutting down */
    BAT_FAILED,    /* the forward pass failed (err says why) */
} bat_outcome;

typedef struct bat_job {
    /* set by the submitter */
    reg_version *ver;          /* borrowed (see above) */
    const float *x;            /* (n, C, S, S), borrowed */
    float *logits;             /* (n, K), written by the worker */
    int n;
    int64_t deadline_ns;       /* CLOCK_MONOTONIC; 0 = none */
    void (*done)(struct bat_job *j);
    void *ctx;                 /* for done() */
    /* set by the batcher before done() */
    bat_outcome outcome;
    char err[200];
    int64_t t_enqueued, t_started, t_finished; /* CLOCK_MONOTONIC ns */
    int batch_size;            /* images in the (last) forward pass it was part of */
    /* private to the batcher */
    int taken;                 /* images already put in a batch */
    int running;               /* pieces in forward passes now (several workers may each run one) */
    struct bat_job *next;
} bat_job;

typedef struct {
    int max_batch;             /* <= the runners' max batch */
    long max_queue_delay_us;
    long max_queue_images;     /* images waiting; a job that does not fit is refused */
    int threads;               /* OpenMP team of each worker (> 0) */
    int instances;             /* workers, each with its own runner of every version (reg_load_opts.instances; 0 means 1) */
    int nice;                  /* added to the worker's nice value (0: unchanged) */
} bat_opts;

typedef struct bat_queue bat_queue;

/* CPUs the workers of every model may use at once (default 1): a forward pass holds
 * min(threads, cpus) of them while it runs. Call before the first bat_new. */
void bat_set_cpus(int cpus);

/* Starts the workers. mm: the model's metrics (borrowed). */
vt_status bat_new(const char *name, const bat_opts *o, met_model *mm, bat_queue **out,
                  char *err, size_t errlen);

/* Queues j (j->t_enqueued is set). 0: queued, done() will be called; -1: the queue has no
 * room for j->n images; -2: the queue is stopping. On non-zero, j is untouched. */
int bat_submit(bat_queue *q, bat_job *j);

/* Whether n more images would fit now (a hint: bat_submit decides). Lets a request that
 * would be refused skip decoding its images. */
int bat_has_room(bat_queue *q, int n);

/* Runs v's forward pass once at every batch size 1..max_batch on worker 0, with every runner, so that the
 * first requests do not pay for building oneDNN primitives. Blocks until done. */
vt_status bat_warm(bat_queue *q, reg_version *v, char *err, size_t errlen);

/* The same warm-up on the calling thread, for a version that is not published yet (an admin
 * job builds it beside the served one; a runner may move between threads, vit.h): a forward
 * pass at every batch size 1..its runner's max batch, on the caller's OpenMP team and at the
 * caller's priority, for every runner of v. It takes no CPU tokens, so a low-priority
 * caller never holds up the workers. */
vt_status bat_warm_here(reg_version *v, char *err, size_t errlen);

/* Answers every queued job that has not started with BAT_DRAINED, and refuses new jobs
 * from then on (bat_submit returns -2). */
void bat_fail_queued(bat_queue *q);

/* Images queued or running (0 when idle). */
long bat_pending(bat_queue *q);

/* Stops the worker (after bat_fail_queued, or when idle) and frees the queue. NULL no-op. */
void bat_free(bat_queue *q);

int64_t bat_now_ns(void); /* CLOCK_MONOTONIC */

/* When any worker of any model last finished a forward pass (CLOCK_MONOTONIC ns; 0: never):
 * admin jobs pause while inference is active (srv_job.h, cpu_share). */
int64_t bat_last_active_ns(void);

#endif
