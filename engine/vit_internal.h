/* vit_internal.h - the model's layout in memory, shared by vit_model.c (loading) and
 * vit_forward.c (execution). Not part of the engine's API.
 *
 * Parameters are described once, in the X-macro tables below: name (timm's), shape in
 * terms of the architecture's dimensions, and whether the tensor belongs to the attention
 * half of a block (skipped for removed blocks). Matrices (2-D linear weights, and the
 * patch embedding viewed as (D, C*P*P)) are also packed for oneDNN.
 */
#ifndef VT_VIT_INTERNAL_H
#define VT_VIT_INTERNAL_H

#include <dnnl.h>

#include "vit.h"

/* Symbolic dimensions of the shape tables. */
enum { DIM_1 = 1, DIM_D, DIM_3D, DIM_F, DIM_N, DIM_C, DIM_P, DIM_K, DIM_NONE };

/*  slot      timm suffix          shape                     attention-half  matrix */
#define VIT_BLOCK_PARAMS(X)                                                         \
    X(LN1_G,  "norm1.weight",      DIM_D, DIM_NONE,            1, 0)                \
    X(LN1_B,  "norm1.bias",        DIM_D, DIM_NONE,            1, 0)                \
    X(QKV_W,  "attn.qkv.weight",   DIM_3D, DIM_D,              1, 1)                \
    X(QKV_B,  "attn.qkv.bias",     DIM_3D, DIM_NONE,           1, 0)                \
    X(PROJ_W, "attn.proj.weight",  DIM_D, DIM_D,               1, 1)                \
    X(PROJ_B, "attn.proj.bias",    DIM_D, DIM_NONE,            1, 0)                \
    X(LN2_G,  "norm2.weight",      DIM_D, DIM_NONE,            0, 0)                \
    X(LN2_B,  "norm2.bias",        DIM_D, DIM_NONE,            0, 0)                \
    X(FC1_W,  "mlp.fc1.weight",    DIM_F, DIM_D,               0, 1)                \
    X(FC1_B,  "mlp.fc1.bias",      DIM_F, DIM_NONE,            0, 0)                \
    X(FC2_W,  "mlp.fc2.weight",    DIM_D, DIM_F,               0, 1)                \
    X(FC2_B,  "mlp.fc2.bias",      DIM_D, DIM_NONE,            0, 0)

/*  slot       timm name                  shape (up to 4 dims)                  distilled-only */
#define VIT_GLOBAL_PARAMS(X)                                                               \
    X(CLS,     "cls_token",               DIM_1, DIM_1, DIM_D, DIM_NONE,          0)       \
    X(DIST,    "dist_token",              DIM_1, DIM_1, DIM_D, DIM_NONE,          1)       \
    X(POS,     "pos_embed",               DIM_1, DIM_N, DIM_D, DIM_NONE,          0)       \
    X(PATCH_W, "patch_embed.proj.weight", DIM_D, DIM_C, DIM_P, DIM_P,             0)       \
    X(PATCH_B, "patch_embed.proj.bias",   DIM_D, DIM_NONE, DIM_NONE, DIM_NONE,    0)       \
    X(NORM_G,  "norm.weight",             DIM_D, DIM_NONE, DIM_NONE, DIM_NONE,    0)       \
    X(NORM_B,  "norm.bias",               DIM_D, DIM_NONE, DIM_NONE, DIM_NONE,    0)       \
    X(HEAD_W,  "head.weight",             DIM_K, DIM_D, DIM_NONE, DIM_NONE,       0)       \
    X(HEAD_B,  "head.bias",               DIM_K, DIM_NONE, DIM_NONE, DIM_NONE,    0)       \
    X(HEADD_W, "head_dist.weight",        DIM_K, DIM_D, DIM_NONE, DIM_NONE,       1)       \
    X(HEADD_B, "head_dist.bias",          DIM_K, DIM_NONE, DIM_NONE, DIM_NONE,    1)

#define X_ENUM(slot, ...) BP_##slot,
enum { VIT_BLOCK_PARAMS(X_ENUM) BP_COUNT };
#undef X_ENUM
#define X_ENUM(slot, ...) GP_##slot,
enum { VIT_GLOBAL_PARAMS(X_ENUM) GP_COUNT };
#undef X_ENUM

/* The packed matrices: which slot they come from, and their layouts (one per kind, since
 * every block's qkv has the same shape and the layout does not depend on the batch). */
enum { MAT_QKV, MAT_PROJ, MAT_FC1, MAT_FC2, MAT_PATCH, MAT_HEAD, MAT_COUNT };

typedef struct {
    /* Plain f32 tensors in timm's layout. Vectors are always here; matrices only when the
     * model was loaded with keep_plain (the reference path). The Q rows of QKV_W/QKV_B are
     * NOT scaled here; the packed copy is. NULL for the attention half of removed blocks. */
    float *p[BP_COUNT];
    float *qkv_b_scaled;          /* (3D) bias with the Q part scaled by 1/sqrt(Dh) */
    float *packed[4];             /* MAT_QKV..MAT_FC2, oneDNN layout */
} vit_block;

struct vit_model {
    vit_config cfg;
    vit_block *blocks;            /* (L) */
    float *g[GP_COUNT];           /* plain globals; matrices only with keep_plain */
    float *patch_packed;          /* (C*P*P, D) in wmd[MAT_PATCH] */
    float *head_packed[2];        /* head, head_dist: (D, K) in wmd[MAT_HEAD] */
    dnnl_memory_desc_t wmd[MAT_COUNT];
    char **labels;                /* (K) or NULL */
    char source[96];
    uint64_t params, bytes;
    int keep_plain;
};

/* One parameter: its timm name (a block's suffix after "blocks.N."), shape in DIM_* terms,
 * whether it belongs to the attention half of a block, whether it is a packed matrix, and
 * whether only distilled models have it. Defined in vit_model.c from the tables above. */
typedef struct { const char *name; int d[4]; int attn; int matrix; int distilled; } vit_param_spec;
extern const vit_param_spec vit_block_specs[BP_COUNT];
extern const vit_param_spec vit_global_specs[GP_COUNT];

/* The size of a symbolic dimension (DIM_*) for configuration c; -1 for DIM_NONE. */
int64_t vit_dim_value(const vit_config *c, int d);

/* 64-byte aligned allocation (free() it), shared by the loader and the runners. */
void *vit_alloc(size_t bytes);

#endif
