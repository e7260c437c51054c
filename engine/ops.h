/* ops.h - the oneDNN 2.6 primitives the engine runs, each with a fixed shape.
 *
 * Every primitive is created with a user-managed scratchpad (dnnl_scratchpad_mode_user), so
 * it is not tied to the thread that created it: a runner hands it its own scratch buffer at
 * execution. One op_prim must not execute on two threads at once (oneDNN primitives are
 * not re-entrant with a shared scratchpad); each vit_runner owns its op_prims.
 *
 * Layouts: activations are plain row-major, token-major ((rows, width), tag ab). Linear
 * weights come in PyTorch's (out, in) layout and are packed once, at load, into the layout
 * the matmul primitive prefers (op_pack_weights); the packed layout is then fixed and
 * passed explicitly to the primitives of every batch size.
 * The attention matmuls read strided 4-D views of the fused qkv buffer (no transposes):
 *   Q  (B, H, N, Dh) strides (N*3D, Dh, 3D, 1) at qkv
 *   K^T(B, H, Dh, N) strides (N*3D, Dh, 1, 3D) at qkv + D
 *   V  (B, H, N, Dh) strides (N*3D, Dh, 3D, 1) at qkv + 2D
 *   S  (B, H, N, N)  plain
 *   O  (B, H, N, Dh) strides (N*D, Dh, D, 1)   = (B*N, D) token-major, ready for proj.
 * The 1/sqrt(Dh) scale is not applied here: the loader folds it into the Q rows of qkv.
 */
#ifndef VT_OPS_H
#define VT_OPS_H

#include <stddef.h>

#include <dnnl.h>

#include "status.h"

enum { OP_GELU = 1u, OP_SUM = 2u };

typedef struct {
    dnnl_primitive_t prim;
    dnnl_memory_desc_t src_md, wei_md, dst_md; /* as the primitive takes them */
    dnnl_memory_t scratch;                     /* handle set by the owner (op_bind_scratch) */
    size_t scratch_bytes;
    const char *impl;                          /* oneDNN implementation name */
} op_prim;

/* The process-wide CPU engine (created once, thread-safe). NULL if oneDNN fails. */
dnnl_engine_t op_engine(void);

/* y (M, O) = x (M, I) W + b, then GELU (OP_GELU) or y += old y (OP_SUM, residual add).
 * wmd: the packed weights layout to use, or NULL to let oneDNN choose (p->wei_md tells). */
vt_status op_linear(op_prim *p, int M, int I, int O, const dnnl_memory_desc_t *wmd,
                    unsigned flags, char *err, size_t errlen);
/* y (M, D) = LayerNorm(x) with separate scale and shift vectors (D). */
vt_status op_layernorm(op_prim *p, int M, int D, float eps, char *err, size_t errlen);
/* Softmax over the last axis of a (rows, n) buffer, in place. */
vt_status op_softmax(op_prim *p, int rows, int n, char *err, size_t errlen);
/* S = Q K^T and O = S V over the views above. */
vt_status op_attn_scores(op_prim *p, int B, int H, int N, int D, char *err, size_t errlen);
vt_status op_attn_values(op_prim *p, int B, int H, int N, int D, char *err, size_t errlen);
/* A matmul from a caller-built descriptor (other views of the same buffers). */
vt_status op_matmul_desc(op_prim *p, const dnnl_matmul_desc_t *d, char *err, size_t errlen);
void op_prim_free(op_prim *p);

/* Points p's scratchpad at buf (at least p->scratch_bytes, 64-byte aligned). */
vt_status op_bind_scratch(op_prim *p, void *buf);

/* A memory object over ptr (borrowed) with descriptor md; NULL on failure. */
dnnl_memory_t op_mem(const dnnl_memory_desc_t *md, void *ptr);
/* A plain (rows, cols) row-major descriptor, and a 1-D one. */
dnnl_memory_desc_t op_md2(int rows, int cols);
dnnl_memory_desc_t op_md1(int n);

/* Packs W (O, I) row-major into layout wmd; *out is 64-byte aligned (free()), *bytes its size. */
vt_status op_pack(const float *W, int I, int O, const dnnl_memory_desc_t *wmd, float **out,
                  size_t *bytes, char *err, size_t errlen);

/* Runs p on stream s with args plus its scratchpad. */
vt_status op_exec(const op_prim *p, dnnl_stream_t s, int nargs, const dnnl_exec_arg_t *args,
                  char *err, size_t errlen);

#endif
