/* entropy.c - streaming per-channel statistics and the per-layer entropy analysis
 * (see entropy.h; the formula is METHOD.md section 3). Not the selection: select.c. */
#include "entropy.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

vt_status ent_stats_init(ent_stats *s, int dim)
{
    memset(s, 0, sizeof *s);
    if (dim < 1) return VT_EINVAL;
    s->mean = calloc((size_t)dim, sizeof *s->mean);
    s->m2 = calloc((size_t)dim, sizeof *s->m2);
    if (!s->mean || !s->m2) {
        ent_stats_free(s);
        return VT_ENOMEM;
    }
    s->dim = dim;
    return VT_OK;
}

void ent_stats_free(ent_stats *s)
{
    if (!s) return;
    free(s->mean);
    free(s->m2);
    memset(s, 0, sizeof *s);
}

void ent_stats_reset(ent_stats *s)
{
    s->n = 0;
    if (s->dim) {
        memset(s->mean, 0, (size_t)s->dim * sizeof *s->mean);
        memset(s->m2, 0, (size_t)s->dim * sizeof *s->m2);
    }
}

/* Welford's update, one vector at a time: exact order, so two runs that add the same vectors
 * in the same order get bit-identical statistics (the selection's tests rely on it). */
void ent_stats_add(ent_stats *s, const float *x, int rows, size_t stride)
{
    for (int r = 0; r < rows; r++) {
        const float *v = x + (size_t)r * stride;
        double n = (double)++s->n;
        for (int c = 0; c < s->dim; c++) {
            double d = (double)v[c] - s->mean[c];
            s->mean[c] += d / n;
            s->m2[c] += d * ((double)v[c] - s->mean[c]);
        }
    }
}

double ent_stats_var(const ent_stats *s, int c)
{
    return s->n >= 2 ? s->m2[c] / (double)(s->n - 1) : NAN;
}

double ent_stats_h(const ent_stats *s)
{
    if (s->n < 2) return NAN;
    double h = 0;
    for (int c = 0; c < s->dim; c++) {
        double v = ent_stats_var(s, c);
        h += 0.5 * log(v > ENT_VAR_FLOOR ? v : ENT_VAR_FLOOR); /* log(std) = log(var) / 2 */
    }
    return h;
}

/* ---- the per-layer analysis ----------------------------------------------------------- */

typedef struct {
    int L, D;
    ent_stats attn[VIT_MAX_DEPTH], mlp[VIT_MAX_DEPTH], feature;
} profile_acc;

/* Tap: keep the class token row (token 0) of every image. */
static void profile_tap(void *ctx, vit_tap kind, int block, const float *x, int B, int rows, int D)
{
    profile_acc *a = ctx;
    ent_stats *s = kind == VIT_TAP_ATTN ? &a->attn[block] : kind == VIT_TAP_MLP ? &a->mlp[block] : &a->feature;
    ent_stats_add(s, x, B, (size_t)rows * D);
}

/* H for the analysis: -infinity when no channel varies at all (the class token before the
 * first attention block is the same for every image), so a chart does not plot the floor. */
static double profile_h(const ent_stats *s)
{
    for (int c = 0; c < s->dim; c++)
        if (ent_stats_var(s, c) > ENT_VAR_FLOOR) return ent_stats_h(s);
    return -INFINITY;
}

static double now_seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

vt_status ent_profile_run(const vit_model *m, const ent_images *src, int batch, uint64_t removed,
                          const ent_control *ctl, ent_profile *out, char *err, size_t errlen)
{
    const vit_config *c = vit_config_of(m);
    int L = c->depth, D = c->dim, K = c->classes;
    size_t img_floats = (size_t)c->channels * c->image_size * c->image_size;
    double t0 = now_seconds();
    memset(out, 0, sizeof *out);
    if (src->count < 2) return vt_err(err, errlen, VT_EINVAL, "the entropy needs at least 2 images, got %d", src->count);
    if (batch < 1 || batch > 64) return vt_err(err, errlen, VT_EINVAL, "batch %d is outside 1..64", batch);
    if (batch > src->count) batch = src->count;

    vt_status st;
    profile_acc *acc = calloc(1, sizeof *acc);
    ent_stats logits = {0};
    float *x = malloc((size_t)batch * img_floats * sizeof *x), *y = malloc((size_t)batch * K * sizeof *y);
    vit_runner *r = NULL;
    if (!acc || !x || !y) goto nomem;
    acc->L = L;
    acc->D = D;
    for (int b = 0; b < L; b++)
        if (ent_stats_init(&acc->attn[b], D) || ent_stats_init(&acc->mlp[b], D)) goto nomem;
    if (ent_stats_init(&acc->feature, D) || ent_stats_init(&logits, K)) goto nomem;
    if ((st = vit_runner_new(m, batch, &r, err, errlen))) goto done;

    vit_opts o = {.removed = removed, .tap = profile_tap, .tap_ctx = acc};
    for (int first = 0; first < src->count; first += batch) {
        int B = src->count - first < batch ? src->count - first : batch;
        if (ctl && ctl->cancel && atomic_load(ctl->cancel)) {
            st = vt_err(err, errlen, VT_ECANCELLED, "cancelled after %d of %d images", first, src->count);
            goto done;
        }
        if ((st = src->read(src->ctx, first, B, x, err, errlen))) goto done;
        if ((st = vit_forward(r, x, B, y, &o, err, errlen))) goto done;
        ent_stats_add(&logits, y, B, (size_t)K);
        if (ctl && ctl->progress) ctl->progress(ctl->ctx, (double)(first + B) / src->count, 0, -1);
    }
    out->depth = L;
    out->images = src->count;
    for (int b = 0; b < L; b++) {
        out->h_attn[b] = acc->attn[b].n ? profile_h(&acc->attn[b]) : NAN;
        out->h_mlp[b] = profile_h(&acc->mlp[b]);
    }
    out->h_feature = profile_h(&acc->feature);
    out->h_logits = profile_h(&logits);
    out->seconds = now_seconds() - t0;
    st = VT_OK;
    goto done;
nomem:
    st = vt_err(err, errlen, VT_ENOMEM, "out of memory for the entropy statistics");
done:
    vit_runner_free(r);
    if (acc) {
        for (int b = 0; b < L; b++) { ent_stats_free(&acc->attn[b]); ent_stats_free(&acc->mlp[b]); }
        ent_stats_free(&acc->feature);
    }
    ent_stats_free(&logits);
    free(acc);
    free(x);
    free(y);
    return st;
}
