/* optim.c - AdamW, label-smoothed cross-entropy, warm-up + cosine schedule, clipping
 * (see optim.h). */
#include "optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

vt_status opt_adamw_init(opt_adamw *o, size_t n, float weight_decay, char *err, size_t errlen)
{
    memset(o, 0, sizeof *o);
    o->beta1 = 0.9f;
    o->beta2 = 0.999f;
    o->eps = 1e-8f;
    o->weight_decay = weight_decay;
    o->n = n;
    o->m = calloc(n ? n : 1, sizeof(float));
    o->v = calloc(n ? n : 1, sizeof(float));
    if (!o->m || !o->v) {
        opt_adamw_free(o);
        return vt_err(err, errlen, VT_ENOMEM, "out of memory for the optimiser (%zu parameters)", n);
    }
    return VT_OK;
}

void opt_adamw_free(opt_adamw *o)
{
    if (!o) return;
    free(o->m);
    free(o->v);
    o->m = o->v = NULL;
}

void opt_adamw_step(opt_adamw *o, float *params, const float *grads, const opt_group *groups,
                    int ngroups, float lr)
{
    o->t++;
    const float b1 = o->beta1, b2 = o->beta2, eps = o->eps;
    const double bc1 = 1.0 - pow(b1, (double)o->t), bc2 = 1.0 - pow(b2, (double)o->t);
    const float step = (float)(lr / bc1), rbc2 = (float)(1.0 / sqrt(bc2));
    for (int gi = 0; gi < ngroups; gi++) {
        const opt_group *g = &groups[gi];
        float *p = params + g->offset, *m = o->m + g->offset, *v = o->v + g->offset;
        const float *gr = grads + g->offset;
        const float decay = g->decay ? 1.0f - lr * o->weight_decay : 1.0f;
        #pragma omp parallel for if (g->numel > 16384)
        for (size_t i = 0; i < g->numel; i++) {
            float gi_ = gr[i];
            m[i] = b1 * m[i] + (1.0f - b1) * gi_;
            v[i] = b2 * v[i] + (1.0f - b2) * gi_ * gi_;
            p[i] = p[i] * decay - step * m[i] / (sqrtf(v[i]) * rbc2 + eps);
        }
    }
}

double opt_clip(float *grads, const opt_group *groups, int ngroups, double max_norm)
{
    double ss = 0;
    for (int gi = 0; gi < ngroups; gi++) {
        const float *g = grads + groups[gi].offset;
        double s = 0;
        #pragma omp parallel for reduction(+ : s) if (groups[gi].numel > 16384)
        for (size_t i = 0; i < groups[gi].numel; i++) s += (double)g[i] * g[i];
        ss += s;
    }
    double norm = sqrt(ss);
    if (max_norm > 0 && norm > max_norm) {
        float f = (float)(max_norm / (norm + 1e-6));
        for (int gi = 0; gi < ngroups; gi++) {
            float *g = grads + groups[gi].offset;
            for (size_t i = 0; i < groups[gi].numel; i++) g[i] *= f;
        }
    }
    return norm;
}

double opt_ce_loss(const float *logits, const int *labels, int B, int K, float smoothing,
                   float *dlogits, int *correct)
{
    double total = 0;
    int hits = 0;
    for (int b = 0; b < B; b++) {
        const float *z = logits + (size_t)b * K;
        double mx = z[0], s = 0;
        int arg = 0;
        for (int k = 1; k < K; k++)
            if (z[k] > mx) { mx = z[k]; arg = k; }
        for (int k = 0; k < K; k++) s += exp(z[k] - mx);
        double lse = mx + log(s), loss = 0;
        for (int k = 0; k < K; k++) {
            double q = smoothing / K + (k == labels[b] ? 1.0 - smoothing : 0.0);
            double logp = z[k] - lse;
            loss -= q * logp;
            if (dlogits) dlogits[(size_t)b * K + k] = (float)((exp(logp) - q) / B);
        }
        total += loss;
        hits += arg == labels[b];
    }
    if (correct) *correct = hits;
    return total / B;
}

double opt_lr(int64_t step, int64_t total, int64_t warmup, double lr, double min_lr)
{
    if (step < warmup) return lr * (double)(step + 1) / (double)warmup;
    if (total <= warmup + 1) return lr;
    double p = (double)(step - warmup) / (double)(total - warmup - 1);
    if (p > 1) p = 1;
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + cos(M_PI * p));
}
