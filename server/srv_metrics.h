/* srv_metrics.h - counters, gauges and histograms, rendered as Prometheus text (/metrics).
 *
 * Series (SERVING.md "Observability"):
 *   vitd_requests_total{endpoint,code}            counter  requests answered, by route and status
 *   vitd_request_duration_seconds{endpoint}       histogram whole request, first byte to reply
 *   vitd_decode_seconds                           histogram decode + preprocess of one image
 *   vitd_queue_wait_seconds{model}                histogram enqueue .. batch start, per request
 *   vitd_inference_seconds{model}                 histogram one batch's forward pass
 *   vitd_batch_size{model}                        histogram images per forward pass
 *   vitd_images_total{model}                      counter  images inferred
 *   vitd_queue_depth{model}                       gauge    images waiting
 *   vitd_inflight_requests                        gauge    requests received and not yet answered
 *   vitd_model_active_version{model}              gauge    version number being served
 *   vitd_model_swaps_total{model}                 counter  active-version changes after start-up
 *   vitd_model_ready{model}                       gauge    1 when loaded and warmed
 *   vitd_admin_jobs_total{state}                  counter  admin jobs finished: succeeded, failed, cancelled
 *   vitd_admin_job_duration_seconds               histogram a finished job, start to end
 *   vitd_admin_job_running                        gauge    1 while an admin job is queued or running
 *   process_resident_memory_bytes                 gauge    RSS (from /proc/self/statm)
 *
 * Threads: met_init once before threads start; met_model registers a model (any thread, the
 * list only grows); every update is a relaxed atomic, callable from any thread without locks;
 * met_render from any thread.
 */
#ifndef VT_SRV_METRICS_H
#define VT_SRV_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define MET_MAX_BUCKETS 16

typedef struct {
    const double *bounds;              /* upper bounds, ascending; +Inf implied */
    int nb;
    _Atomic uint64_t counts[MET_MAX_BUCKETS + 1];
    _Atomic uint64_t sum_e9;           /* sum of observations x 1e9 (ns for seconds) */
} met_hist;

/* Per-model series; owned by the metrics module, alive until met_shutdown. */
typedef struct met_model {
    char name[65];
    met_hist queue_wait, inference, batch;
    _Atomic uint64_t images;
    _Atomic int64_t queue_depth;
    _Atomic int64_t active_version;
    _Atomic uint64_t swaps;
    _Atomic int ready;
    struct met_model *next;
} met_model;

/* endpoints: the route names (duplicates merge; the strings must outlive the module);
 * requests outside them count as "other". */
void met_init(const char *const *endpoints, int n);
int met_endpoint(const char *name); /* index for met_request, -1 unknown */
void met_shutdown(void);

met_model *met_model_get(const char *name); /* registers on first use; NULL when out of memory */

void met_request(int endpoint, int status, double seconds); /* endpoint -1: "other" */
void met_decode(double seconds);
void met_inflight(int delta);
void met_observe(met_hist *h, double v);

/* Admin jobs (srv_job.c): one finished with state "succeeded", "failed" or "cancelled"
 * after `seconds`; the running gauge (0 or 1). */
void met_job_finished(const char *state, double seconds);
void met_job_running(int running);

/* The whole exposition; malloc'd, caller frees. NULL when out of memory. */
char *met_render(size_t *len);

#endif
