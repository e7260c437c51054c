/* train.h - a ViT/DeiT in training: f32 parameters and gradients in timm's layout, a forward
 * pass that keeps what the backward pass needs, the backward pass, checkpoints.
 *
 * The model is the one vit.h serves (../shared/docs/METHOD.md sections 1, 2) plus dilution
 * (section 4). Each block b has a mixing factor lambda_b:
 *   h = (2 - lambda_b) x + lambda_b Attn(LN1(x));   x = h + MLP(LN2(h))
 * lambda_b = 1 is a normal block (h = x + Attn), 0 < lambda_b < 1 a block being diluted,
 * lambda_b = 0 the removed path h = 2x (attention not run; its gradients are zero). Blocks
 * whose attention does not exist (config.removed) always have lambda 0. The distilled model's
 * logits are (head(x_0) + head_dist(x_1)) / 2, in training as in serving (no teacher).
 *
 * Parameters live in one contiguous buffer (so the optimiser sees a flat vector) described by
 * a table of tensors: timm name, shape, offset, and whether weight decay applies (matrices
 * only; not norms, biases, tokens or position embeddings). Gradients have the same layout.
 *
 * Ownership and threads: a tr_model owns everything it points to; one thread at a time uses
 * it. A pass is data-parallel: the batch is split into as many contiguous shards as the
 * caller's OpenMP team has threads (omp_get_max_threads at tr_prepare), each shard runs the
 * whole model on its own thread with single-threaded oneDNN primitives and its own
 * activations, and tr_backward sums the shards' gradients in shard order (so results are
 * reproducible for a given thread count). Nothing here prints.
 */
#ifndef VT_TRAIN_H
#define VT_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"
#include "vit.h"

typedef struct tr_model tr_model;

typedef struct {
    char name[64];        /* timm name, e.g. "blocks.3.attn.qkv.weight" */
    int ndim;
    int64_t shape[4];
    size_t offset, numel; /* in floats, into tr_params / tr_grads */
    int decay;            /* 1: AdamW weight decay applies */
    int block;            /* block index, or -1 for global tensors */
    int attn;             /* 1: belongs to the attention half of its block */
} tr_tensor;

/* A new model of architecture c (image_size, patch, channels, dim, depth, heads, mlp_dim,
 * classes, distilled, ln_eps, removed; preprocessing fields are kept for checkpoints), with
 * timm's initialisation drawn from seed: linear weights trunc-normal(0.02), biases 0, norms
 * 1/0, pos_embed trunc-normal(0.02), class/dist tokens normal(1e-6), the patch projection as
 * PyTorch's Conv2d default (uniform +-1/sqrt(C P P)). */
vt_status tr_new(const vit_config *c, uint64_t seed, tr_model **out, char *err, size_t errlen);
/* Every parameter of a checkpoint vit_load accepts (its configuration and labels too). */
vt_status tr_load(const char *path, tr_model **out, char *err, size_t errlen);
void tr_free(tr_model *m); /* NULL is a no-op */

const vit_config *tr_config(const tr_model *m);
vit_config *tr_config_mut(tr_model *m);  /* preprocessing fields only; not the architecture */
/* Class names (copied); NULL clears them. */
vt_status tr_set_labels(tr_model *m, const char *const *names, int k);
const char *tr_label(const tr_model *m, int k);

int tr_tensor_count(const tr_model *m);
const tr_tensor *tr_tensor_at(const tr_model *m, int i);
const tr_tensor *tr_find(const tr_model *m, const char *name);
size_t tr_numel(const tr_model *m);
float *tr_params(tr_model *m);
float *tr_grads(tr_model *m);

/* Sets lambda for the blocks of mask (0 <= lambda <= 1; blocks without attention ignore it). */
void tr_set_lambda(tr_model *m, uint64_t mask, float lambda);
float tr_lambda(const tr_model *m, int block);

/* Allocates activations for batches up to max_batch and the op back end: oneDNN, or the
 * plain C reference (reference = 1). Call again to change either. */
vt_status tr_prepare(tr_model *m, int max_batch, int reference, char *err, size_t errlen);

/* The op back end (grad.h) of a prepared model, for profiles; NULL before tr_prepare. */
struct gr_ctx *tr_ops(tr_model *m);

/* Forward pass of B images (B, C, S, S) normalised, keeping activations; logits (B, K). */
vt_status tr_forward(tr_model *m, const float *images, int B, float *logits, char *err, size_t errlen);
/* Backward pass of the last tr_forward from dlogits (B, K): every gradient is overwritten. */
vt_status tr_backward(tr_model *m, const float *dlogits, char *err, size_t errlen);

/* Writes a checkpoint vit_load reads: timm names, F32, metadata "vitd.config" (timm's
 * config.json shape: architecture, num_classes, model_args, pretrained_cfg, label_names,
 * removed_blocks) and "vitd.removed_blocks". Blocks in remove (and those already without
 * attention) are written removed: their norm1/attn tensors are left out. */
vt_status tr_save_model(const tr_model *m, const char *path, uint64_t remove, char *err, size_t errlen);

/* Training state (resumable): parameters plus n_extra named buffers of tr_numel floats each
 * (the optimiser's moments), in one safetensors file written atomically, with metadata
 * "vitd.config" (as above) and "vitd.train" (caller's JSON). Tensor names are
 * "<buffer>/<timm name>", the parameters' buffer being "param". */
vt_status tr_save_state(const tr_model *m, const char *path, const char *train_json, int n_extra,
                        const char *const *extra_names, const float *const *extra,
                        char *err, size_t errlen);
/* Loads a state file: a new model, *train_json (malloc'd copy) and the extra buffers
 * (each malloc'd, tr_numel floats; NULL entries where the file lacks one). */
vt_status tr_load_state(const char *path, tr_model **out, char **train_json, int n_extra,
                        const char *const *extra_names, float **extra, char *err, size_t errlen);

/* Architecture presets and overrides: "NAME[,key=value...]" or "key=value,...", keys
 * img, patch, chans, dim, depth, heads, mlp, classes, distilled; names deit-tiny, deit-small,
 * deit-base (224, patch 16) and fashion (the default model: 28x28x1). Fields the spec leaves
 * unset keep c's values. */
vt_status tr_arch_parse(const char *spec, vit_config *c, char *err, size_t errlen);

#endif
