/* select.c - NOSE, first-k and random selection of attention layers (see select.h; the
 * method is METHOD.md section 3). The statistics are entropy.c's; the forward pass, with its
 * save/resume of the residual stream, is vit_forward's. This file only schedules passes. */
#include "select.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *sel_strategy_name(sel_strategy s)
{
    switch (s) {
    case SEL_NOSE: return "nose";
    case SEL_FIRST: return "first";
    case SEL_RANDOM: return "random";
    }
    return "?";
}

int sel_strategy_parse(const char *name, sel_strategy *out)
{
    static const sel_strategy all[] = {SEL_NOSE, SEL_FIRST, SEL_RANDOM};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        if (!strcmp(name, sel_strategy_name(all[i]))) { *out = all[i]; return 0; }
    return -1;
}

const char *sel_measure_name(sel_measure m)
{
    return m == SEL_AT_FEATURE ? "feature" : "logits";
}

static double now_seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

/* One selection in progress: the runner, one batch of images, the measured vectors, the
 * saved streams (reuse mode) and the bookkeeping for progress. */
typedef struct {
    const vit_config *c;
    const ent_images *src;
    const sel_opts *o;
    const ent_control *ctl;
    vit_runner *r;
    int batch, nbatch;            /* images per pass, batches in the proxy set */
    int dim;                      /* measured vector width: K (logits) or D (feature) */
    float *x;                     /* (batch, C, S, S) images of the current batch */
    float *y;                     /* (batch, K) logits */
    float *feat;                  /* (batch, D) class feature, filled by the tap */
    float *saves[VIT_MAX_DEPTH];  /* (batch, N, D) stream entering block i; candidates only */
    long passes_total;            /* forward passes the whole run will make */
    int step;                     /* for progress */
    sel_result *res;
} run;

/* Tap: keep the final-normed class token (row 0 of each image's (T, D) block). */
static void feature_tap(void *ctx, vit_tap kind, int block, const float *x, int B, int rows, int D)
{
    (void)block;
    run *R = ctx;
    if (kind != VIT_TAP_FEATURE) return;
    for (int b = 0; b < B; b++) memcpy(R->feat + (size_t)b * D, x + (size_t)b * rows * D, (size_t)D * sizeof *x);
}

/* One forward pass of B images with `removed` run as removed, from the images (start_x NULL)
 * or resumed at block `start` from a saved stream; saves the stream entering the blocks of
 * save_mask; adds the measured vectors to `into`. */
static vt_status pass(run *R, int B, uint64_t removed, int start, const float *start_x, uint64_t save_mask,
                      ent_stats *into, int block, char *err, size_t errlen)
{
    const ent_control *ctl = R->ctl;
    if (ctl && ctl->cancel && atomic_load(ctl->cancel))
        return vt_err(err, errlen, VT_ECANCELLED, "selection cancelled at step %d", R->step);
    vit_opts vo = {.removed = removed, .save_mask = save_mask, .save_x = R->saves,
                   .start_block = start_x ? start : 0, .start_x = start_x};
    if (R->o->measure == SEL_AT_FEATURE) {
        vo.tap = feature_tap;
        vo.tap_ctx = R;
    }
    vt_status st = vit_forward(R->r, R->x, B, R->y, &vo, err, errlen);
    if (st) return st;
    if (R->o->measure == SEL_AT_FEATURE) ent_stats_add(into, R->feat, B, (size_t)R->c->dim);
    else ent_stats_add(into, R->y, B, (size_t)R->c->classes);
    R->res->passes++;
    R->res->blocks_run += R->c->depth - (start_x ? start : 0);
    if (ctl && ctl->progress)
        ctl->progress(ctl->ctx, (double)R->res->passes / (double)R->passes_total, R->step, block);
    return VT_OK;
}

static vt_status read_batch(run *R, int bi, int *B, char *err, size_t errlen)
{
    int first = bi * R->batch;
    *B = R->src->count - first < R->batch ? R->src->count - first : R->batch;
    return R->src->read(R->src->ctx, first, *B, R->x, err, errlen);
}

/* H of the model with `removed` over the whole proxy set (one pass per batch). */
static vt_status measure_set(run *R, uint64_t removed, ent_stats *s, double *h, char *err, size_t errlen)
{
    vt_status st;
    ent_stats_reset(s);
    for (int bi = 0; bi < R->nbatch; bi++) {
        int B;
        if ((st = read_batch(R, bi, &B, err, errlen)) ||
            (st = pass(R, B, removed, 0, NULL, 0, s, -1, err, errlen)))
            return st;
    }
    *h = ent_stats_h(s);
    return VT_OK;
}

/* The greedy loop. stats[i] accumulates candidate i's vectors of the current step, base the
 * vectors of the full model (step 0 only: H(Y_full)).
 *
 * Reuse: candidate c_max (the largest index) differs from the current set S only from block
 * c_max on, so the stream entering every other candidate i < c_max in c_max's own pass is
 * exactly S's stream there. c_max therefore runs from the images and saves those streams,
 * and every other candidate resumes from its save; no pass of S itself is needed. At step 0
 * the baseline (S = {}) also resumes, from the stream entering c_max. Per step and batch that
 * is as many passes as the naive loop but L + sum_{i != c_max} (L - i) blocks instead of
 * |candidates| x L. */
static vt_status nose(run *R, ent_stats *stats, ent_stats *base, char *err, size_t errlen)
{
    sel_result *res = R->res;
    const int L = R->c->depth, naive = R->o->naive;
    const size_t stream = (size_t)R->batch * vit_tokens(R->c) * R->c->dim;
    const uint64_t cand0 = ~res->already_removed & (L == 64 ? ~0ull : (1ull << L) - 1);
    uint64_t S = 0;
    vt_status st;
    if (!naive)
        for (int i = 0; i < L; i++)
            if ((cand0 >> i) & 1 && !(R->saves[i] = malloc(stream * sizeof(float))))
                return vt_err(err, errlen, VT_ENOMEM, "out of memory for the saved streams (%zu MB)",
                              (size_t)__builtin_popcountll(cand0) * stream * 4 >> 20);
    for (int s = 0; s < res->k; s++) {
        const uint64_t cand = cand0 & ~S;
        const int cmax = 63 - __builtin_clzll(cand);
        R->step = s;
        for (int i = 0; i < L; i++) ent_stats_reset(&stats[i]);
        ent_stats_reset(base);
        for (int bi = 0; bi < R->nbatch; bi++) {
            int B;
            if ((st = read_batch(R, bi, &B, err, errlen))) return st;
            if (naive) {
                /* the baseline H(Y_full) is a pass of its own (the "+1" of METHOD.md) */
                if (s == 0 && (st = pass(R, B, 0, 0, NULL, 0, base, -1, err, errlen))) return st;
                for (int i = 0; i < L; i++)
                    if ((cand >> i) & 1 && (st = pass(R, B, S | 1ull << i, 0, NULL, 0, &stats[i], i, err, errlen)))
                        return st;
                continue;
            }
            if ((st = pass(R, B, S | 1ull << cmax, 0, NULL, cand, &stats[cmax], cmax, err, errlen))) return st;
            if (s == 0 && (st = pass(R, B, 0, cmax, R->saves[cmax], 0, base, -1, err, errlen))) return st;
            for (int i = 0; i < cmax; i++)
                if ((cand >> i) & 1 && (st = pass(R, B, S | 1ull << i, i, R->saves[i], 0, &stats[i], i, err, errlen)))
                    return st;
        }
        if (s == 0) res->h_full = ent_stats_h(base);
        int best = -1;
        for (int i = 0; i < L; i++) {
            res->score[s][i] = NAN;
            if (!((cand >> i) & 1)) continue;
            res->score[s][i] = res->h_full - ent_stats_h(&stats[i]);
            if (best < 0 || res->score[s][i] < res->score[s][best]) best = i;
        }
        res->chosen[s] = best;
        S |= 1ull << best;
        if (R->o->on_step) R->o->on_step(R->o->step_ctx, res, s);
    }
    res->t_chosen = res->score[res->k - 1][res->chosen[res->k - 1]];
    return VT_OK;
}

/* splitmix64 (Steele, Lea, Flood 2014): a seed gives the same draw on every platform. */
static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void choose_fixed(sel_result *res, const int *cand, int ncand)
{
    int pool[VIT_MAX_DEPTH];
    memcpy(pool, cand, (size_t)ncand * sizeof *pool);
    if (res->strategy == SEL_RANDOM) {
        uint64_t state = res->seed;
        for (int s = 0; s < res->k; s++) { /* Fisher-Yates, the first k places */
            int j = s + (int)(splitmix64(&state) % (uint64_t)(ncand - s));
            int t = pool[s]; pool[s] = pool[j]; pool[j] = t;
        }
    }
    for (int s = 0; s < res->k; s++) res->chosen[s] = pool[s];
}

/* The runs that measure entropies: NOSE, or first/random with evaluate. */
static vt_status measured_run(const vit_model *m, const ent_images *src, const sel_opts *o,
                              const ent_control *ctl, const int *cand, int ncand, int batch,
                              sel_result *res, char *err, size_t errlen)
{
    const vit_config *c = vit_config_of(m);
    const int L = c->depth;
    vt_status st;
    run R = {.c = c, .src = src, .o = o, .ctl = ctl, .res = res, .batch = batch};
    R.nbatch = (src->count + batch - 1) / batch;
    R.dim = o->measure == SEL_AT_FEATURE ? c->dim : c->classes;
    if (o->strategy == SEL_NOSE) {
        /* per step and batch: the candidates, plus the baseline at step 0 (both modes) */
        long per = 1;
        for (int s = 0; s < o->k; s++) per += ncand - s;
        R.passes_total = per * R.nbatch;
    } else {
        R.passes_total = 2L * R.nbatch;
    }
    ent_stats *stats = calloc((size_t)L + 1, sizeof *stats); /* (L) candidates, then the base */
    R.x = malloc((size_t)batch * c->channels * c->image_size * c->image_size * sizeof(float));
    R.y = malloc((size_t)batch * c->classes * sizeof(float));
    R.feat = malloc((size_t)batch * c->dim * sizeof(float));
    if (!stats || !R.x || !R.y || !R.feat) {
        st = vt_err(err, errlen, VT_ENOMEM, "out of memory");
        goto done;
    }
    for (int i = 0; i <= L; i++)
        if (ent_stats_init(&stats[i], R.dim)) {
            st = vt_err(err, errlen, VT_ENOMEM, "out of memory");
            goto done;
        }
    if ((st = vit_runner_new(m, batch, &R.r, err, errlen))) goto done;
    if (o->strategy == SEL_NOSE) {
        st = nose(&R, stats, &stats[L], err, errlen);
    } else {
        choose_fixed(res, cand, ncand);
        uint64_t mask = 0;
        double h;
        for (int s = 0; s < o->k; s++) mask |= 1ull << res->chosen[s];
        if (!(st = measure_set(&R, 0, &stats[L], &res->h_full, err, errlen)) &&
            !(st = measure_set(&R, mask, &stats[L], &h, err, errlen)))
            res->t_chosen = res->h_full - h;
    }
done:
    vit_runner_free(R.r);
    for (int i = 0; i < L; i++) free(R.saves[i]);
    if (stats)
        for (int i = 0; i <= L; i++) ent_stats_free(&stats[i]);
    free(stats);
    free(R.x);
    free(R.y);
    free(R.feat);
    return st;
}

vt_status sel_run(const vit_model *m, const ent_images *src, const sel_opts *o, const ent_control *ctl,
                  sel_result *res, char *err, size_t errlen)
{
    const vit_config *c = vit_config_of(m);
    const int L = c->depth;
    double t0 = now_seconds();
    int cand[VIT_MAX_DEPTH], ncand = 0;
    for (int i = 0; i < L; i++)
        if (!((c->removed >> i) & 1)) cand[ncand++] = i;
    if (o->k < 1 || o->k > ncand)
        return vt_err(err, errlen, VT_EINVAL, "cannot remove %d attention layers: the model has %d left", o->k, ncand);
    int measured = o->strategy == SEL_NOSE || o->evaluate;
    int batch = o->batch ? o->batch : 8;
    if (batch < 1 || batch > 64) return vt_err(err, errlen, VT_EINVAL, "batch %d is outside 1..64", batch);
    if (measured && (!src || src->count < 2))
        return vt_err(err, errlen, VT_EINVAL, "the selection needs a proxy set of at least 2 images");

    memset(res, 0, sizeof *res);
    res->strategy = o->strategy;
    res->measure = o->measure;
    res->naive = o->strategy == SEL_NOSE && o->naive;
    res->seed = o->seed;
    res->depth = L;
    res->k = o->k;
    res->already_removed = c->removed;
    res->h_full = res->t_chosen = NAN;
    for (int s = 0; s < VIT_MAX_DEPTH; s++)
        for (int i = 0; i < VIT_MAX_DEPTH; i++) res->score[s][i] = NAN;
    if (measured) {
        if (batch > src->count) batch = src->count;
        res->images = src->count;
        res->batch = batch;
        vt_status st = measured_run(m, src, o, ctl, cand, ncand, batch, res, err, errlen);
        if (st) return st;
    } else {
        choose_fixed(res, cand, ncand);
    }
    for (int s = 0; s < res->k; s++) res->chosen_mask |= 1ull << res->chosen[s];
    res->seconds = now_seconds() - t0;
    return VT_OK;
}

/* ---- the report -------------------------------------------------------------------------- */

static json_t *block_array(uint64_t mask, int L)
{
    json_t *a = json_array();
    for (int i = 0; i < L && a; i++)
        if ((mask >> i) & 1) json_array_append_new(a, json_integer(i));
    return a;
}

static json_t *num_or_null(double v)
{
    return isfinite(v) ? json_real(v) : json_null();
}

static json_t *str_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

char *sel_report_json(const sel_result *r, int images_failed, const char *model, const char *data)
{
    const int L = r->depth;
    json_t *j = json_object(), *steps = json_array(), *chosen = json_array();
    if (!j || !steps || !chosen) {
        json_decref(j); json_decref(steps); json_decref(chosen);
        return NULL;
    }
    json_object_set_new(j, "strategy", json_string(sel_strategy_name(r->strategy)));
    json_object_set_new(j, "measure", json_string(sel_measure_name(r->measure)));
    json_object_set_new(j, "mode", json_string(r->naive ? "naive" : "reuse"));
    json_object_set_new(j, "k", json_integer(r->k));
    if (r->strategy == SEL_RANDOM) json_object_set_new(j, "seed", json_integer((json_int_t)r->seed));
    json_object_set_new(j, "depth", json_integer(L));
    json_object_set_new(j, "images", json_integer(r->images));
    json_object_set_new(j, "images_failed", json_integer(images_failed));
    json_object_set_new(j, "batch", json_integer(r->batch));
    json_object_set_new(j, "model", str_or_null(model));
    json_object_set_new(j, "data", str_or_null(data));
    json_object_set_new(j, "already_removed", block_array(r->already_removed, L));
    json_object_set_new(j, "baseline_h", num_or_null(r->h_full));
    uint64_t S = 0;
    for (int s = 0; s < r->k; s++) {
        if (r->strategy == SEL_NOSE) {
            json_t *st = json_object(), *scores = json_array();
            json_object_set_new(st, "step", json_integer(s));
            json_object_set_new(st, "removed_before", block_array(S, L));
            for (int i = 0; i < L; i++) {
                if (isnan(r->score[s][i])) continue;
                json_t *e = json_object();
                json_object_set_new(e, "block", json_integer(i));
                json_object_set_new(e, "score", num_or_null(r->score[s][i]));
                json_object_set_new(e, "h", num_or_null(r->h_full - r->score[s][i]));
                json_array_append_new(scores, e);
            }
            json_object_set_new(st, "scores", scores);
            json_object_set_new(st, "chosen", json_integer(r->chosen[s]));
            json_array_append_new(steps, st);
        }
        json_array_append_new(chosen, json_integer(r->chosen[s]));
        S |= 1ull << r->chosen[s];
    }
    json_object_set_new(j, "steps", steps);
    json_object_set_new(j, "chosen", chosen);
    json_object_set_new(j, "removed_blocks", block_array(r->already_removed | r->chosen_mask, L));
    json_object_set_new(j, "t_chosen", num_or_null(r->t_chosen));
    json_object_set_new(j, "passes", json_integer(r->passes));
    json_object_set_new(j, "blocks_run", json_integer(r->blocks_run));
    json_object_set_new(j, "seconds", json_real(r->seconds));
    char *out = json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(17));
    json_decref(j);
    return out;
}
