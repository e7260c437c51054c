/* srv_registry.c - model names, versions and their reference counts (see srv_registry.h). */
#include "srv_registry.h"

#include <malloc.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "srv_metrics.h"

#define REG_MAX_MODELS 64

struct reg_version {
    _Atomic int refs;
    int id;                     /* 0 until published */
    char path[1024];
    vit_model *model;           /* owned */
    vit_runner *runner[REG_MAX_INSTANCES]; /* owned; runner i used by the model's worker i only */
    reg_load_opts opts;
    img_preproc pp;
    img_decode_opts dopt;
    struct reg_slot *slot;      /* set by reg_publish_id */
    reg_version *next;          /* the slot's list, newest first (registry's reference) */
};

typedef struct reg_slot {
    char name[65];
    bat_queue *queue;
    met_model *mm;
    reg_version *active;        /* also in `versions` */
    reg_version *versions;
    int ready;
} reg_slot;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static reg_slot g_slots[REG_MAX_MODELS];
static int g_nslots;
static int g_keep = 1;

static void version_free(reg_version *v)
{
    for (int i = 0; i < REG_MAX_INSTANCES; i++) vit_runner_free(v->runner[i]); /* before the model (vit.h) */
    vit_free(v->model);
    free(v);
    /* a version's weights and runners are megabytes to gigabytes freed at once, on whichever
     * thread released last: hand the free pages of every malloc arena back to the kernel, or
     * each thread's arena keeps its high-water mark and resident memory creeps up with swaps */
    malloc_trim(0);
}

vt_status reg_version_load(const char *path, const reg_load_opts *o, reg_version **out,
                           char *err, size_t errlen)
{
    vt_status st;
    reg_version *v = calloc(1, sizeof *v);
    if (!v) return vt_err(err, errlen, VT_ENOMEM, "out of memory");
    snprintf(v->path, sizeof v->path, "%s", path);
    vit_load_opts lo = {0};
    if ((st = vit_load(path, &lo, &v->model, err, errlen))) goto fail;
    v->opts = *o;
    if (v->opts.instances < 1) v->opts.instances = 1;
    if (v->opts.instances > REG_MAX_INSTANCES) {
        st = vt_err(err, errlen, VT_EINVAL, "%d instances: at most %d", v->opts.instances, REG_MAX_INSTANCES);
        goto fail;
    }
    for (int i = 0; i < v->opts.instances; i++)
        if ((st = vit_runner_new(v->model, o->max_batch, &v->runner[i], err, errlen))) goto fail;
    const vit_config *c = vit_config_of(v->model);
    /* crop_pct is stored as a float; go back through its short decimal (0.9f -> 0.9) so
     * floor(S / crop_pct) is timm's double computation, as `vitd preprocess` does */
    char pb[32];
    snprintf(pb, sizeof pb, "%g", (double)c->crop_pct);
    double crop_pct = strtod(pb, NULL);
    v->pp.resize = (int)floor(c->image_size / crop_pct);
    v->pp.crop = c->image_size;
    v->pp.interp = c->interp;
    memcpy(v->pp.mean, c->mean, sizeof v->pp.mean);
    memcpy(v->pp.std, c->std, sizeof v->pp.std);
    v->dopt.channels = c->channels == 1 ? 1 : 3;
    v->dopt.max_pixels = o->max_pixels;
    v->dopt.exif_orient = o->exif;
    atomic_init(&v->refs, 1);
    *out = v;
    return VT_OK;
fail:
    version_free(v);
    return st;
}

const char *reg_version_name(const reg_version *v) { return v->slot ? v->slot->name : ""; }
int reg_version_id(const reg_version *v) { return v->id; }
const char *reg_version_path(const reg_version *v) { return v->path; }
const vit_model *reg_version_model(const reg_version *v) { return v->model; }
const vit_config *reg_version_config(const reg_version *v) { return vit_config_of(v->model); }
const img_preproc *reg_version_preproc(const reg_version *v) { return &v->pp; }
const img_decode_opts *reg_version_decode(const reg_version *v) { return &v->dopt; }
vit_runner *reg_version_runner(reg_version *v) { return v->runner[0]; }
vit_runner *reg_version_runner_at(reg_version *v, int i) { return i >= 0 && i < v->opts.instances ? v->runner[i] : NULL; }
int reg_version_instances(const reg_version *v) { return v->opts.instances; }

vt_status reg_version_set_instances(reg_version *v, int n, char *err, size_t errlen)
{
    if (n < 1 || n > REG_MAX_INSTANCES) return vt_err(err, errlen, VT_EINVAL, "%d instances: need 1..%d", n, REG_MAX_INSTANCES);
    for (int i = v->opts.instances; i < n; i++) {
        vt_status st = vit_runner_new(v->model, v->opts.max_batch, &v->runner[i], err, errlen);
        if (st) return st;
        v->opts.instances = i + 1;
    }
    for (int i = n; i < v->opts.instances; i++) {
        vit_runner_free(v->runner[i]);
        v->runner[i] = NULL;
    }
    v->opts.instances = n;
    return VT_OK;
}
reg_load_opts reg_version_load_opts(const reg_version *v) { return v->opts; }
bat_queue *reg_version_queue(const reg_version *v) { return v->slot ? v->slot->queue : NULL; }
met_model *reg_version_metrics(const reg_version *v) { return v->slot ? v->slot->mm : NULL; }

void reg_init(int keep)
{
    g_keep = keep >= 1 ? keep : 1;
}

void reg_shutdown(void)
{
    pthread_mutex_lock(&g_lock);
    for (int i = 0; i < g_nslots; i++) {
        reg_version *v = g_slots[i].versions;
        g_slots[i].versions = g_slots[i].active = NULL;
        while (v) {
            reg_version *next = v->next;
            reg_release(v);
            v = next;
        }
    }
    g_nslots = 0;
    pthread_mutex_unlock(&g_lock);
}

static reg_slot *find(const char *name)
{
    for (int i = 0; i < g_nslots; i++)
        if (!strcmp(g_slots[i].name, name)) return &g_slots[i];
    return NULL;
}

int reg_add(const char *name, bat_queue *q, met_model *mm)
{
    pthread_mutex_lock(&g_lock);
    int rc = -1;
    if (g_nslots < REG_MAX_MODELS && !find(name) && strlen(name) < sizeof g_slots[0].name) {
        reg_slot *s = &g_slots[g_nslots++];
        memset(s, 0, sizeof *s);
        strcpy(s->name, name);
        s->queue = q;
        s->mm = mm;
        rc = 0;
    }
    pthread_mutex_unlock(&g_lock);
    return rc;
}

/* Lists v first in s (newest first), active; unlists the entries beyond `keep` and any other
 * entry with v's id into *dropped (the caller releases them outside the lock). */
static void publish_locked(reg_slot *s, reg_version *v, reg_version **dropped)
{
    int swap = s->active != NULL;
    for (reg_version **p = &s->versions; *p;) { /* the same id published again replaces it */
        if (*p != v && (*p)->id == v->id) {
            reg_version *d = *p;
            *p = d->next;
            d->next = *dropped;
            *dropped = d;
        } else {
            p = &(*p)->next;
        }
    }
    v->next = s->versions;
    s->versions = v;
    s->active = v;
    /* keep the `keep` most recently published versions (the active one is the first) */
    reg_version **p = &s->versions;
    for (int k = 0; *p; k++) {
        if (k >= g_keep) {
            reg_version *tail = *p;
            *p = NULL;
            while (tail) {
                reg_version *next = tail->next;
                tail->next = *dropped;
                *dropped = tail;
                tail = next;
            }
            break;
        }
        p = &(*p)->next;
    }
    if (s->mm) {
        atomic_store(&s->mm->active_version, v->id);
        if (swap) atomic_fetch_add(&s->mm->swaps, 1);
    }
}

static void release_list(reg_version *v)
{
    while (v) { /* outside the lock: the last release frees weights */
        reg_version *next = v->next;
        reg_release(v);
        v = next;
    }
}

int reg_publish_id(const char *name, reg_version *v, int id)
{
    reg_version *dropped = NULL;
    if (id < 1) return -1;
    pthread_mutex_lock(&g_lock);
    reg_slot *s = find(name);
    if (!s) { pthread_mutex_unlock(&g_lock); return -1; }
    v->slot = s;
    v->id = id;
    publish_locked(s, v, &dropped);
    pthread_mutex_unlock(&g_lock);
    release_list(dropped);
    return id;
}

int reg_activate(const char *name, int id)
{
    reg_version *dropped = NULL, *v = NULL;
    pthread_mutex_lock(&g_lock);
    reg_slot *s = find(name);
    if (s) {
        reg_version **p = &s->versions;
        while (*p && (*p)->id != id) p = &(*p)->next;
        if ((v = *p)) {
            *p = v->next; /* relisted first by publish_locked */
            if (s->active != v) publish_locked(s, v, &dropped);
            else { v->next = s->versions; s->versions = v; }
        }
    }
    pthread_mutex_unlock(&g_lock);
    release_list(dropped);
    return v ? 0 : -1;
}

int reg_has_version(const char *name, int id)
{
    pthread_mutex_lock(&g_lock);
    reg_slot *s = find(name);
    int r = -1;
    if (s) {
        reg_version *v = s->versions;
        while (v && v->id != id) v = v->next;
        r = v != NULL;
    }
    pthread_mutex_unlock(&g_lock);
    return r;
}

int reg_active_id(const char *name)
{
    pthread_mutex_lock(&g_lock);
    reg_slot *s = find(name);
    int r = !s ? -1 : s->active ? s->active->id : 0;
    pthread_mutex_unlock(&g_lock);
    return r;
}

reg_version *reg_acquire(const char *name, int version)
{
    reg_version *v = NULL;
    pthread_mutex_lock(&g_lock);
    reg_slot *s = find(name);
    if (s) {
        if (version == 0) v = s->active;
        else
            for (v = s->versions; v && v->id != version; v = v->next) {}
        if (v) atomic_fetch_add_explicit(&v->refs, 1, memory_order_relaxed);
    }
    pthread_mutex_unlock(&g_lock);
    return v;
}

void reg_release(reg_version *v)
{
    if (!v) return;
    if (atomic_fetch_sub_explicit(&v->refs, 1, memory_order_acq_rel) == 1) version_free(v);
}

void reg_set_ready(const char *name, int ready)
{
    pthread_mutex_lock(&g_lock);
    reg_slot *s = find(name);
    if (s) {
        s->ready = ready;
        if (s->mm) atomic_store(&s->mm->ready, ready);
    }
    pthread_mutex_unlock(&g_lock);
}

int reg_ready(const char *name)
{
    pthread_mutex_lock(&g_lock);
    reg_slot *s = find(name);
    int r = s ? (s->ready && s->active) : -1;
    pthread_mutex_unlock(&g_lock);
    return r;
}

int reg_all_ready(void)
{
    pthread_mutex_lock(&g_lock);
    int r = g_nslots > 0;
    for (int i = 0; i < g_nslots; i++)
        if (!g_slots[i].ready || !g_slots[i].active) r = 0;
    pthread_mutex_unlock(&g_lock);
    return r;
}

int reg_names(char (*names)[65], int max)
{
    pthread_mutex_lock(&g_lock);
    int n = 0;
    for (; n < g_nslots && n < max; n++) strcpy(names[n], g_slots[n].name);
    pthread_mutex_unlock(&g_lock);
    return n;
}

int reg_versions(const char *name, int *ids, int max)
{
    pthread_mutex_lock(&g_lock);
    int n = 0;
    reg_slot *s = find(name);
    for (reg_version *v = s ? s->versions : NULL; v && n < max; v = v->next) ids[n++] = v->id;
    pthread_mutex_unlock(&g_lock);
    for (int i = 1; i < n; i++) /* listed by recency; ascending ids for the caller */
        for (int j = i; j > 0 && ids[j - 1] > ids[j]; j--) { int t = ids[j]; ids[j] = ids[j - 1]; ids[j - 1] = t; }
    return n;
}
