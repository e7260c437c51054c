/* vit.h - Vision Transformer (timm ViT/DeiT) models: configuration, loading, forward pass.
 *
 * Dimensions, named once:  B batch, C channels, S image side, P patch side,
 *   Np = (S/P)^2 patches, T = 1 + distilled tokens before the patches, N = T + Np tokens,
 *   D width, H heads, Dh = D/H head width, F MLP width, L depth, K classes.
 *
 * A block computes (../shared/docs/METHOD.md section 1, 2):
 *   normal:   x = x + Attn(LN1(x));  x = x + MLP(LN2(x))
 *   removed:  y = 2x;                x = y + MLP(LN2(y))
 * A removed block's norm1/attn tensors are never read into memory.
 *
 * Objects and threads:
 *   vit_model  - read-only weights (oneDNN-packed matrices, plain vectors), configuration and
 *                labels. Immutable after vit_load; share it between any number of threads and
 *                runners. Free it only after every runner made from it is freed.
 *   vit_runner - one worker's scratch: activations, oneDNN primitives built per batch size,
 *                the oneDNN scratchpad (user-managed, so the primitives are not tied to the
 *                thread that created them). A runner is used by ONE thread at a time; which
 *                thread may change between calls. oneDNN parallelises each primitive over the
 *                calling thread's OpenMP team, whose size vit_set_threads sets; two runners
 *                working at once on different threads each use their own team, so the caller
 *                (the server's scheduler) decides how many run at once.
 * Nothing here prints or exits; errors come back as vt_status with a detail in err.
 */
#ifndef VT_VIT_H
#define VT_VIT_H

#include <stddef.h>
#include <stdint.h>

#include "image.h"
#include "status.h"

#define VIT_MAX_DEPTH 64

typedef struct {
    /* architecture (inferred from tensor shapes; heads from the configuration or D/64) */
    int image_size;   /* S */
    int patch;        /* P */
    int channels;     /* C */
    int dim;          /* D */
    int depth;        /* L */
    int heads;        /* H */
    int mlp_dim;      /* F */
    int classes;      /* K */
    int distilled;    /* 1: dist_token and head_dist; logits = (head(x0) + head_dist(x1)) / 2 */
    float ln_eps;     /* 1e-6 for timm ViT/DeiT */
    uint64_t removed; /* bit i set: block i's attention was removed */
    /* evaluation preprocessing */
    float crop_pct;   /* resize shorter side to floor(S / crop_pct), then centre-crop S */
    img_interp interp;
    float mean[3], std[3];
} vit_config;

typedef struct vit_model vit_model;
typedef struct vit_runner vit_runner;

typedef struct {
    int keep_plain;   /* also keep unpacked f32 weights (needed by the reference path) */
} vit_load_opts;

/* Loads path: a .safetensors file, or a folder holding model.safetensors (and optionally
 * timm's config.json). Configuration precedence: the checkpoint's vitd.config metadata, then
 * config.json beside it, then inference from shapes with DeiT's ImageNet defaults. */
vt_status vit_load(const char *path, const vit_load_opts *o, vit_model **out,
                   char *err, size_t errlen);
void vit_free(vit_model *m); /* NULL is a no-op */

const vit_config *vit_config_of(const vit_model *m);
int vit_tokens(const vit_config *c);                 /* N */
const char *vit_label(const vit_model *m, int k);    /* class name, or NULL when unlabelled */
const char *vit_source(const vit_model *m);          /* where the configuration came from */
uint64_t vit_param_count(const vit_model *m);        /* parameters actually loaded */
uint64_t vit_weight_bytes(const vit_model *m);       /* bytes of weights resident */
/* Multiply-accumulates of one image's forward pass with the blocks in `removed` skipped
 * (METHOD.md section 5 cost model, plus patch embedding and head). */
uint64_t vit_macs(const vit_config *c, uint64_t removed);
/* Parameter count the architecture has with `removed` blocks (same formula as the loader). */
uint64_t vit_params(const vit_config *c, uint64_t removed);

/* Per-call options of vit_forward; a zeroed struct (or NULL) is a plain forward pass. */
typedef enum {
    VIT_TAP_ATTN,     /* Attn(LN1(x)) of block `block`, (B, N, D), before the residual add */
    VIT_TAP_MLP,      /* MLP(LN2(h)) of block `block`, (B, N, D), before the residual add */
    VIT_TAP_FEATURE,  /* final LayerNorm of the class token(s), (B, T, D); block = -1 */
} vit_tap;
typedef void (*vit_tap_fn)(void *ctx, vit_tap kind, int block, const float *x,
                           int B, int rows, int D);

typedef struct {
    uint64_t removed;        /* blocks to run as removed in this call, besides the model's */
    int reference;           /* run the plain C kernels (needs keep_plain); tests only */
    vit_tap_fn tap;          /* if set, called with activations (unfused residual adds) */
    void *tap_ctx;
    /* Activation reuse (selection): save the residual stream entering block i into
     * save_x[i] (B*N*D floats) for every bit i of save_mask ... */
    uint64_t save_mask;
    float *const *save_x;
    /* ... and start from a saved stream: if start_x is set, images is ignored and the pass
     * begins at block start_block with start_x (B*N*D floats) as its input. */
    int start_block;
    const float *start_x;
} vit_opts;

vt_status vit_runner_new(const vit_model *m, int max_batch, vit_runner **out,
                         char *err, size_t errlen);
void vit_runner_free(vit_runner *r); /* NULL is a no-op */
int vit_runner_max_batch(const vit_runner *r);

/* images: (B, C, S, S) float32, already normalised. logits: (B, K). 1 <= B <= max_batch. */
vt_status vit_forward(vit_runner *r, const float *images, int B, float *logits,
                      const vit_opts *o, char *err, size_t errlen);

/* OpenMP threads for oneDNN work started from the calling thread (0: all allowed CPUs). */
void vit_set_threads(int n);
/* CPUs this process may use: the affinity mask, capped by a cgroup v2/v1 CPU quota. */
int vit_cpu_count(void);

#endif
