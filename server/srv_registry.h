/* srv_registry.h - the models being served: names, versions, the active version of each,
 * and reference counts that keep a version alive while a request uses it.
 *
 * A model (a name, "fashion-vit") has a batch queue (srv_batcher.h, one inference worker)
 * and a list of loaded versions, one of which is active. A version is a loaded checkpoint:
 * read-only weights (vit_model), the runner (scratch) that only its model's worker uses, and
 * the decode/preprocess parameters requests need before they reach the queue.
 *
 * Reference counting (STYLE.md "a model is reference counted"):
 *   reg_version_load  -> a version with one reference, the caller's;
 *   reg_publish_id    -> the registry takes over that reference; the version becomes active;
 *                        the previously active one stays listed while within `keep` (the most
 *                        recently published or activated versions), else the registry drops
 *                        its reference;
 *   reg_acquire       -> +1 for a request (active version, or a listed version by number);
 *   reg_release       -> -1; at zero the runner and the weights are freed, on whichever thread
 *                        released last.
 * A request acquires at dispatch and releases once its reply is queued, so a swap (issue 6:
 * publish a new version) never pulls weights from under a batch in flight.
 *
 * Threads: reg_init/reg_add/reg_shutdown in main's thread (before/after serving); everything
 * else from any thread (one mutex guards the lists; counts are atomic).
 */
#ifndef VT_SRV_REGISTRY_H
#define VT_SRV_REGISTRY_H

#include <stddef.h>

#include "image.h"
#include "status.h"
#include "vit.h"

typedef struct reg_version reg_version;
typedef struct bat_queue bat_queue;
typedef struct met_model met_model;

typedef struct {
    int max_batch;          /* the runner's largest batch */
    uint64_t max_pixels;    /* decode limit for this model's requests */
    int exif;               /* apply EXIF orientation when decoding */
    int instances;          /* runners (one per worker of the model's queue), 1..REG_MAX_INSTANCES; 0 means 1 */
} reg_load_opts;

#define REG_MAX_INSTANCES 16

/* Loads a checkpoint (file or timm folder) and makes its runner. One reference, the caller's. */
vt_status reg_version_load(const char *path, const reg_load_opts *o, reg_version **out,
                           char *err, size_t errlen);

/* What a request needs from a version (all borrowed while the caller holds a reference). */
const char *reg_version_name(const reg_version *v);   /* model name ("" until published) */
int reg_version_id(const reg_version *v);             /* the store's number (0 until published) */
const char *reg_version_path(const reg_version *v);
const vit_model *reg_version_model(const reg_version *v);
const vit_config *reg_version_config(const reg_version *v);
const img_preproc *reg_version_preproc(const reg_version *v);
const img_decode_opts *reg_version_decode(const reg_version *v);
vit_runner *reg_version_runner(reg_version *v);       /* runner 0 (reg_version_runner_at(v, 0)) */
/* Runner i < instances: only worker i of the model's queue uses it once published. */
vit_runner *reg_version_runner_at(reg_version *v, int i);
int reg_version_instances(const reg_version *v);
reg_load_opts reg_version_load_opts(const reg_version *v); /* what it was loaded with */
/* Gives v n runners (1..REG_MAX_INSTANCES) before it is published (start-up decides the
 * count once the model's size is known). */
vt_status reg_version_set_instances(reg_version *v, int n, char *err, size_t errlen);
bat_queue *reg_version_queue(const reg_version *v);   /* its model's queue (after publish) */
met_model *reg_version_metrics(const reg_version *v);

void reg_init(int keep);  /* keep: versions listed per model (>= 1; the active one counts) */
void reg_shutdown(void);  /* drops the registry's references; requests must be finished */

/* Registers a model name with its queue and metrics (both borrowed for the registry's life). */
int reg_add(const char *name, bat_queue *q, met_model *mm);

/* Makes v the active version `id` of `name` (the model store's number, srv_store.h), for
 * start-up and hot swap; takes over the caller's reference. A listed version with the same id
 * is unlisted (the registry drops its reference; requests holding it finish on it). Returns
 * id, or -1 when the name is unknown or id < 1 (the reference is then still the caller's). */
int reg_publish_id(const char *name, reg_version *v, int id);

/* Makes the listed version `id` of `name` active again (a roll back to a version still loaded;
 * it counts as the most recent for `keep`). 0, or -1 when the name or the version is not
 * listed (then load it and reg_publish_id it). */
int reg_activate(const char *name, int id);

/* Is version `id` of `name` loaded and listed? 1 yes, 0 no, -1 unknown name. */
int reg_has_version(const char *name, int id);

/* The active version's number: 0 none yet, -1 unknown name. */
int reg_active_id(const char *name);

/* The active version (version 0) or a listed version of `name`, with a reference; NULL when
 * the name or version is unknown. */
reg_version *reg_acquire(const char *name, int version);
void reg_release(reg_version *v); /* NULL is a no-op */

/* Readiness: a model is ready once its active version is warmed (set by the server). */
void reg_set_ready(const char *name, int ready);
int reg_ready(const char *name);  /* -1 unknown name */
int reg_all_ready(void);

/* Listing, for metadata: the model names in registration order, and the listed versions of
 * one model (ascending). Each returns the count (at most max). */
int reg_names(char (*names)[65], int max);
int reg_versions(const char *name, int *ids, int max);

#endif
