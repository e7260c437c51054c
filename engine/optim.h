/* optim.h - what turns gradients into a trained model: AdamW, the loss, the learning-rate
 * schedule and gradient clipping.
 *
 * AdamW (Loshchilov & Hutter; PyTorch's torch.optim.AdamW): per step t (from 1)
 *   p -= lr * wd * p                 (decoupled decay, only where the tensor decays)
 *   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
 *   p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
 * Loss: cross-entropy with label smoothing e (PyTorch's CrossEntropyLoss(label_smoothing=e)):
 *   q = (1 - e) onehot(y) + e / K;  loss = mean over the batch of -sum_k q_k log softmax(z)_k;
 *   dz = (softmax(z) - q) / B.
 * Schedule (per step): linear warm-up from 0 to lr over the warm-up steps, then cosine decay
 * to min_lr at the last step.
 * Thread-safe: no global state; the optimiser's buffers belong to its opt_adamw.
 */
#ifndef VT_OPTIM_H
#define VT_OPTIM_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef struct {
    size_t offset, numel;   /* a tensor's floats in the flat parameter vector */
    int decay;              /* 1: weight decay applies */
} opt_group;

typedef struct {
    float beta1, beta2, eps, weight_decay;
    size_t n;               /* floats in the parameter vector */
    float *m, *v;           /* (n) moments, owned */
    int64_t t;              /* steps taken */
} opt_adamw;

/* Moments zeroed; beta1 0.9, beta2 0.999, eps 1e-8, weight_decay as given. */
vt_status opt_adamw_init(opt_adamw *o, size_t n, float weight_decay, char *err, size_t errlen);
void opt_adamw_free(opt_adamw *o);
/* One step over every group (floats outside the groups are left alone). */
void opt_adamw_step(opt_adamw *o, float *params, const float *grads, const opt_group *groups,
                    int ngroups, float lr);

/* Global L2 norm of the gradients; with max_norm > 0 and a larger norm, scales them so the
 * norm is max_norm (PyTorch's clip_grad_norm_). Returns the norm before clipping. */
double opt_clip(float *grads, const opt_group *groups, int ngroups, double max_norm);

/* Loss (mean over the batch) and dlogits (B, K); *correct counts top-1 hits. */
double opt_ce_loss(const float *logits, const int *labels, int B, int K, float smoothing,
                   float *dlogits, int *correct);

/* Learning rate of step `step` (0-based) of `total`, warm-up `warmup` steps. */
double opt_lr(int64_t step, int64_t total, int64_t warmup, double lr, double min_lr);

#endif
