/* srv_job.h - admin prune jobs: select attention blocks on an uploaded proxy set, build the
 * pruned version, check it against the active one, store it and hot-swap it in.
 *
 * One job runs at a time (job_submit answers JOB_EBUSY while one is queued or running). A job
 * runs on its own thread, beside serving, with a bounded CPU share: its OpenMP team has
 * `threads` threads (default 1) and the thread runs at nice `nice` (default 19), so the
 * inference workers and HTTP threads always go first.
 *
 * The pipeline (job.state: queued -> running -> succeeded | failed | cancelled):
 *   1. acquire the model's active version (the job's parent; kept referenced to the end);
 *   2. open the spool folder as a proxy set (proxy.h) and split it, by a seeded shuffle, into
 *      a selection part and a held-out check part (`holdout` fraction, default 0.2; at least
 *      one image in each);
 *   3. sel_run (select.h) with the requested strategy, k, seed and image cap; progress 0..0.8
 *      comes from its callback, every finished step's scores are visible in job_json;
 *      cancellation is honoured between forward passes;
 *   4. optional dilution fine-tuning (finetune_epochs > 0, needs labels: the class folders
 *      named as the model's labels or as label indices): runs `vitd finetune` as a child
 *      process at the job's nice and threads; cancel kills it;
 *   5. prune_write (or the fine-tuning child) into store_begin's temporary folder;
 *   6. the check: the candidate (loaded from that folder) and the parent classify the held-out
 *      images on the job thread's own runners; top-1 agreement (and top-1 accuracy of both
 *      when every class folder maps to a label: the label's name, the name with '/' written
 *      '_', or a label index); then store_commit as a new version (origin "prune", parent =
 *      the active version, info = {"job", "selection": report, "check", "finetune_epochs",
 *      "proxy"}). agreement < gate: the version stays stored but is not activated, state
 *      "succeeded" with "activated": false and the reason;
 *   7. otherwise: load and warm the candidate on the job thread (a runner may move between
 *      threads, vit.h), store_activate, then reg_publish_id: requests already holding the old
 *      version finish on it; the old version is freed when its last request releases it.
 * The spool folder is deleted when the job ends, whatever the outcome. Cancelled before the
 * commit, nothing is stored; after it, the version stays stored but is not activated. Once
 * step 7 has begun, the job finishes it.
 *
 * Threads: every function from any thread; one mutex guards the job table.
 */
#ifndef VT_SRV_JOB_H
#define VT_SRV_JOB_H

#include <jansson.h>
#include <stdint.h>

#include "srv_store.h"
#include "status.h"

typedef enum { JOB_QUEUED, JOB_RUNNING, JOB_SUCCEEDED, JOB_FAILED, JOB_CANCELLED } job_state;

typedef struct {
    char model[65];
    char spool_dir[1024];      /* taken over by the job: deleted when it ends */
    int remove;                /* k */
    char strategy[16];         /* nose | first | random */
    int images;                /* cap on proxy images, selection + check (0: all) */
    uint64_t seed;
    double gate;               /* minimum top-1 agreement on the held-out part, >= 0 (above 1:
                                  never passes, the version is stored but not activated) */
    double holdout;            /* fraction held out for the check, [0, 1) (at least 1 image) */
    int finetune_epochs;       /* 0: none; else >= 2 (vitd finetune's last epoch is lambda 0) */
} job_params;

typedef struct {
    int threads;               /* OpenMP threads of a job (>= 1) */
    int nice;                  /* nice value of the job thread (0..19) */
    double cpu_share;          /* while inference is active, the job pauses after each forward
                                * pass so that it uses at most this share of one CPU (0..1];
                                * 1: no pauses. 0 (unset) means 1 */
    int idle;                  /* 1: the job thread (and its team, and a fine-tuning child) run
                                * under SCHED_IDLE: CPU time only when no other thread wants it */
    int keep_versions;         /* store_prune_old after a publish */
    int max_jobs_kept;         /* finished jobs remembered for GET (0: 32) */
    const char *exe;           /* the vitd binary run for fine-tuning (NULL: /proc/self/exe) */
} job_opts;

#define JOB_EBUSY (-2)

void job_init(store *st, const job_opts *o);
void job_shutdown(void);       /* cancels a running job and waits for it */

/* Starts a job; returns its id (1, 2, ...), JOB_EBUSY when one is running or queued, -1 on
 * another error (err says why; the spool folder is then the caller's). */
int job_submit(const job_params *p, char *err, size_t errlen);

/* The job as JSON for GET /admin/jobs/{id}:
 *   {"id", "model", "state", "progress", "params": {...}, "parent_version",
 *    "steps": [{"step", "scores": [{"block", "score"}], "chosen"}],   (so far)
 *    "selected": [...], "removed_blocks": [...],
 *    "check": {"images", "agreement", "accuracy_parent", "accuracy_candidate", "gate", "passed"},
 *    "version": N|null, "activated": bool, "reason", "error",
 *    "created", "started", "finished", "seconds", "paused_seconds" (job_opts.cpu_share)}
 * NULL when id is unknown. */
json_t *job_json(int id);

/* Cancels a queued or running job: 0 done (or already finished), -1 unknown id. */
int job_cancel(int id);

/* Makes a stored version active (roll back or forward), as step 7 does: load and warm it
 * beside the active one (unless it is already loaded), store_activate, publish. Runs on the
 * caller's thread (the admin HTTP thread; it takes about a warm-up's time). Returns 0, or an
 * HTTP status for the error: 404 unknown model or version, 409 a job is publishing, 500. */
int job_activate(const char *model, int version, char *err, size_t errlen);

/* For /metrics: the current job's state (-1: none) and finished-job counts and durations. */
int job_current_state(void);

#endif
