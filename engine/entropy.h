/* entropy.h - the Gaussian entropy of features over a proxy data set (METHOD.md section 3),
 * and the per-layer entropy analysis of a model.
 *
 * Features are treated as Gaussian, so up to constants that cancel in every difference vitd
 * uses, the entropy of a set of D-dimensional vectors (one per image) is
 *
 *     H(Y) = sum over channels c of log(sigma_c),
 *
 * sigma_c the standard deviation of channel c across the images. vitd uses the sample standard
 * deviation (n - 1 in the denominator, torch.std's default); the choice only shifts H by the
 * constant (D/2) log(n / (n - 1)), which cancels in T(S) = H(Y_full) - H(Y_without_S).
 * Statistics stream: images are added a batch at a time, per channel, with Welford's update in
 * double precision (no sum-of-squares cancellation, however large the mean). A channel whose
 * variance is exactly 0 contributes log(sqrt(ENT_VAR_FLOOR)) rather than -infinity, so H stays
 * a finite number a report can carry.
 *
 * Where features are measured (vit.h taps, all "before the residual add"):
 *   logits                        (B, K): one vector per image
 *   feature                       the class token after the final LayerNorm, (B, D)
 *   attention output of block i   Attn(LN1(x)), class token row, (B, D)
 *   MLP output of block i         MLP(LN2(h)), class token row, (B, D)
 *
 * A proxy set reaches the engine as an ent_images: a count and a read callback that fills
 * preprocessed images; it is read in batches, in order, as many times as a computation needs
 * (the selection reads it once per greedy step, or once per candidate in naive mode).
 * Long computations report progress through ent_control and stop between two forward passes
 * when its cancel flag is set (VT_ECANCELLED).
 *
 * Threads: an ent_stats belongs to its caller. ent_profile_run uses one runner of its own,
 * from the calling thread; the model is only read.
 */
#ifndef VT_ENTROPY_H
#define VT_ENTROPY_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"
#include "vit.h"

#define ENT_VAR_FLOOR 1e-300

/* Per-channel running mean and spread of a stream of D-vectors. */
typedef struct {
    int dim;          /* D, channels */
    uint64_t n;       /* vectors added */
    double *mean;     /* (D) */
    double *m2;       /* (D) sum of squared deviations from the running mean */
} ent_stats;

vt_status ent_stats_init(ent_stats *s, int dim);  /* allocates; zeroed statistics */
void ent_stats_free(ent_stats *s);                /* frees the arrays; NULL or zeroed is a no-op */
void ent_stats_reset(ent_stats *s);               /* back to no vectors, keeping the arrays */
/* Adds rows vectors of dim floats; row r starts at x + r * stride. */
void ent_stats_add(ent_stats *s, const float *x, int rows, size_t stride);
double ent_stats_var(const ent_stats *s, int c);  /* sample variance of channel c (n >= 2) */
/* H = sum_c log(std_c). Needs n >= 2 (NAN otherwise). */
double ent_stats_h(const ent_stats *s);

/* A proxy data set: count images of the model's input shape, read in order.
 * read fills out with images [first, first + n) as (n, C, S, S) preprocessed floats. */
typedef struct {
    int count;
    vt_status (*read)(void *ctx, int first, int n, float *out, char *err, size_t errlen);
    void *ctx;
} ent_images;

/* Progress and cancellation of a long computation over a proxy set.
 * progress (optional) is called from the computing thread after every forward pass, with the
 * fraction of the work done in [0, 1], the greedy step (0 for analyses without steps) and the
 * block being evaluated (-1 for a pass that is not a candidate's). cancel (optional) is read
 * before every forward pass; non-zero stops the computation with VT_ECANCELLED. */
typedef struct {
    void (*progress)(void *ctx, double fraction, int step, int block);
    void *ctx;
    const atomic_int *cancel;
} ent_control;

/* The per-layer analysis: entropy of each block's attention and MLP outputs (class token),
 * of the final class feature and of the logits. h_attn is NAN for blocks already removed; a
 * value is -INFINITY when no channel varies at all across the images (the class token is the
 * same for every image until the first attention block mixes the patches in). */
typedef struct {
    int depth;                    /* L */
    int images;                   /* proxy images measured */
    double h_attn[VIT_MAX_DEPTH]; /* (L) H(Attn(LN1 x)[:, 0]) */
    double h_mlp[VIT_MAX_DEPTH];  /* (L) H(MLP(LN2 h)[:, 0]) */
    double h_feature;             /* H(norm(x)[:, 0]) */
    double h_logits;              /* H(logits) */
    double seconds;
} ent_profile;

/* Runs the model over the proxy set in batches of `batch` (1..64), blocks in `removed` run as
 * removed (besides the model's own), and fills out. Needs at least 2 images. */
vt_status ent_profile_run(const vit_model *m, const ent_images *src, int batch, uint64_t removed,
                          const ent_control *ctl, ent_profile *out, char *err, size_t errlen);

#endif
