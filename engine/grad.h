/* grad.h - the differentiable operations of training: forward and backward of every op a ViT
 * needs, each with a oneDNN implementation and a plain C reference.
 *
 * What it is: the numeric layer under train.c. A gr_ctx is either a oneDNN context (a stream,
 * a cache of primitives built on first use per shape, one user-managed scratchpad) or a
 * reference context, whose functions run naive loops with double accumulation (the oracle of
 * tests/test_train.c). The same call sequence runs on either, so a whole training step can be
 * compared between the two. What it is not: the model (train.c) or the optimiser (optim.c).
 *
 * Matrices are plain f32 described by views: up to 4 dimensions, any strides, so transposes
 * and per-head slices of a fused qkv buffer need no copies:
 *   gr_mat(p, R, C)  (R, C) row-major at p
 *   gr_t(p, R, C)    (R, C) view of the transpose of a row-major (C, R) buffer at p; with a
 *                    PyTorch Linear weight W (O, I), gr_t(W, I, O) is W^T, so y = x W^T + b
 *                    is gr_matmul(x, gr_t(W, I, O), b, y)
 *   4-D views (B, H, rows, cols) for batched attention products (grad.c has the layouts).
 * Statistics of LayerNorm are the mean and the biased variance of each row (eps added when
 * normalising), as oneDNN keeps them.
 *
 * Threads: a gr_ctx is used by one thread at a time; oneDNN and the reference loops both use
 * the calling thread's OpenMP team. Nothing here prints.
 */
#ifndef VT_GRAD_H
#define VT_GRAD_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef struct gr_ctx gr_ctx;

typedef struct {
    float *p;
    int nd;            /* 2 or 4 */
    int64_t d[4];      /* dimensions */
    int64_t s[4];      /* strides in floats */
} gr_view;

vt_status gr_new(int reference, gr_ctx **out, char *err, size_t errlen);
void gr_free(gr_ctx *g); /* NULL is a no-op */
int gr_is_reference(const gr_ctx *g);

gr_view gr_mat(const float *p, int64_t rows, int64_t cols);
gr_view gr_t(const float *p, int64_t rows, int64_t cols);
gr_view gr_view4(const float *p, int64_t d0, int64_t d1, int64_t d2, int64_t d3,
                 int64_t s0, int64_t s1, int64_t s2, int64_t s3);

/* C = alpha * (A B) + bias (a row of C's width; 2-D only; NULL for none), then, with
 * accumulate, plus the old C. A (.., M, K), B (.., K, N), C (.., M, N); C's last dimension
 * must be dense (stride 1). alpha != 1 with a bias is not supported. */
vt_status gr_matmul(gr_ctx *g, gr_view A, gr_view B, const float *bias, gr_view C, float alpha,
                    int accumulate, char *err, size_t errlen);

/* out (cols) = sum over rows of x (rows, cols), x row-major. */
vt_status gr_colsum(gr_ctx *g, int64_t rows, int64_t cols, const float *x, float *out,
                    char *err, size_t errlen);

/* LayerNorm over the last dimension: y = (x - mean) / sqrt(var + eps) * gamma + beta, with
 * mean and var (rows) saved for the backward pass. */
vt_status gr_ln_fwd(gr_ctx *g, int rows, int D, float eps, const float *x, const float *gamma,
                    const float *beta, float *y, float *mean, float *var, char *err, size_t errlen);
/* dx (rows, D), dgamma, dbeta (D) from dy; all three overwritten. */
vt_status gr_ln_bwd(gr_ctx *g, int rows, int D, float eps, const float *x, const float *gamma,
                    const float *mean, const float *var, const float *dy, float *dx,
                    float *dgamma, float *dbeta, char *err, size_t errlen);

/* Exact GELU y = u * Phi(u) and its exact derivative du = dy * (Phi(u) + u * phi(u)). */
vt_status gr_gelu_fwd(gr_ctx *g, size_t n, const float *u, float *y, char *err, size_t errlen);
vt_status gr_gelu_bwd(gr_ctx *g, size_t n, const float *u, const float *dy, float *du,
                      char *err, size_t errlen);

/* Softmax over each row of n values, in place (x becomes the probabilities p), and its
 * backward ds = p * (dp - sum(dp * p)) (ds may alias dp). */
vt_status gr_softmax_fwd(gr_ctx *g, int64_t rows, int n, float *x, char *err, size_t errlen);
vt_status gr_softmax_bwd(gr_ctx *g, int64_t rows, int n, const float *p, const float *dp,
                         float *ds, char *err, size_t errlen);

/* Number of primitives built so far and, for tests, the implementation of the i-th. */
int gr_prim_count(const gr_ctx *g);
const char *gr_prim_impl(const gr_ctx *g, int i);
/* Profile of the i-th primitive: a description, calls and seconds spent executing. */
void gr_prim_stats(const gr_ctx *g, int i, char *desc, size_t n, long *calls, double *seconds);

#endif
