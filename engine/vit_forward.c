/* vit_forward.c - the forward pass: runners, per-batch oneDNN plans, and the block loop.
 *
 * What it is: execution only; vit_model.c loads and packs the weights it reads.
 * One block loop serves both back ends: each half-block step below either runs the oneDNN
 * primitives of the batch's plan or the plain C kernels of ref.h, so the reference path
 * computes exactly the same sequence of operations (the tests compare the two).
 *
 * Per dense block (9 oneDNN executions): LN1, qkv (+bias), S = QK^T, softmax, O = SV,
 * proj (+bias, +residual as a sum post-op), LN2, fc1 (+bias, GELU post-op), fc2 (+bias,
 * +residual). A removed block doubles x (METHOD.md section 2) and runs the last three.
 * With a tap, proj and fc2 write to a side buffer first so the caller sees the branch
 * output before the residual add (unfused variants, built only when a tap is used).
 */
#include "vit_internal.h"

#include <math.h>
#include <omp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"
#include "ref.h"

typedef struct {
    int B;
    op_prim patch, ln, qkv, qk, sm, av, proj, fc1, fc2, head;
    op_prim proj_ns, fc2_ns;        /* unfused (no residual sum), for taps; built lazily */
    int have_unfused;
    /* The last block on the class-token rows only (see last_block); built lazily. */
    op_prim qk_l, sm_l, av_l, proj_l, ln_l, fc1_l, fc2_l;
    int have_last;
    dnnl_memory_t q_l, s_l, s_l2, o_l, oc, xc, xcn, h_l;
    /* activation memory objects over the runner's buffers, shaped for B */
    dnnl_memory_t cols, pout, x, xn, qkv_m, q, kt, v, s, o, h, tmp, cls[2], lg[2];
} plan;

/* Every primitive of a plan, for loops that free or re-bind them all. */
#define PLAN_PRIMS(p) &(p)->patch, &(p)->ln, &(p)->qkv, &(p)->qk, &(p)->sm, &(p)->av, &(p)->proj, \
    &(p)->fc1, &(p)->fc2, &(p)->head, &(p)->proj_ns, &(p)->fc2_ns, &(p)->qk_l, &(p)->sm_l,       \
    &(p)->av_l, &(p)->proj_l, &(p)->ln_l, &(p)->fc1_l, &(p)->fc2_l

typedef struct { dnnl_memory_t w[4], b[4], ln1g, ln1b, ln2g, ln2b; } block_mem;

struct vit_runner {
    const vit_model *m;
    int max_batch, N, T, Np;
    plan *plans[65];                /* by batch size, built on first use */
    /* activations, sized for max_batch */
    float *x, *xn, *qkv, *s, *o, *h, *tmp, *cols, *pout, *cls[2], *lg[2], *att_scratch;
    void *scratch;                  /* oneDNN scratchpad shared by every primitive */
    size_t scratch_bytes;
    dnnl_stream_t stream;
    block_mem *bm;                  /* (L) weight memory objects */
    dnnl_memory_t patch_w, patch_b, head_w[2], head_b[2];
};

#define VIT_MAX_RUNNER_BATCH 64

/* ---- weight and plan construction ------------------------------------------------------- */

static dnnl_memory_t vec_mem(int n, const float *p)
{
    dnnl_memory_desc_t md = op_md1(n);
    return p ? op_mem(&md, (void *)p) : NULL;
}

static dnnl_memory_t row_mem(int n, const float *p) /* a bias, shaped (1, n) like dst */
{
    dnnl_memory_desc_t md = op_md2(1, n);
    return p ? op_mem(&md, (void *)p) : NULL;
}

static vt_status make_weight_mems(vit_runner *r, char *err, size_t errlen)
{
    const vit_model *m = r->m;
    const vit_config *c = &m->cfg;
    int D = c->dim, F = c->mlp_dim;
    if (!(r->bm = calloc((size_t)c->depth, sizeof *r->bm))) return vt_err(err, errlen, VT_ENOMEM, "out of memory");
    for (int b = 0; b < c->depth; b++) {
        const vit_block *blk = &m->blocks[b];
        block_mem *bm = &r->bm[b];
        if (!((c->removed >> b) & 1)) {
            bm->w[MAT_QKV] = op_mem(&m->wmd[MAT_QKV], blk->packed[MAT_QKV]);
            bm->b[MAT_QKV] = row_mem(3 * D, blk->qkv_b_scaled);
            bm->w[MAT_PROJ] = op_mem(&m->wmd[MAT_PROJ], blk->packed[MAT_PROJ]);
            bm->b[MAT_PROJ] = row_mem(D, blk->p[BP_PROJ_B]);
            bm->ln1g = vec_mem(D, blk->p[BP_LN1_G]);
            bm->ln1b = vec_mem(D, blk->p[BP_LN1_B]);
            if (!bm->w[0] || !bm->b[0] || !bm->w[1] || !bm->b[1] || !bm->ln1g || !bm->ln1b) goto fail;
        }
        bm->w[MAT_FC1] = op_mem(&m->wmd[MAT_FC1], blk->packed[MAT_FC1]);
        bm->b[MAT_FC1] = row_mem(F, blk->p[BP_FC1_B]);
        bm->w[MAT_FC2] = op_mem(&m->wmd[MAT_FC2], blk->packed[MAT_FC2]);
        bm->b[MAT_FC2] = row_mem(D, blk->p[BP_FC2_B]);
        bm->ln2g = vec_mem(D, blk->p[BP_LN2_G]);
        bm->ln2b = vec_mem(D, blk->p[BP_LN2_B]);
        if (!bm->w[2] || !bm->b[2] || !bm->w[3] || !bm->b[3] || !bm->ln2g || !bm->ln2b) goto fail;
    }
    r->patch_w = op_mem(&m->wmd[MAT_PATCH], m->patch_packed);
    r->patch_b = row_mem(D, m->g[GP_PATCH_B]);
    r->head_w[0] = op_mem(&m->wmd[MAT_HEAD], m->head_packed[0]);
    r->head_b[0] = row_mem(c->classes, m->g[GP_HEAD_B]);
    if (c->distilled) {
        r->head_w[1] = op_mem(&m->wmd[MAT_HEAD], m->head_packed[1]);
        r->head_b[1] = row_mem(c->classes, m->g[GP_HEADD_B]);
        if (!r->head_w[1] || !r->head_b[1]) goto fail;
    }
    if (!r->patch_w || !r->patch_b || !r->head_w[0] || !r->head_b[0]) goto fail;
    return VT_OK;
fail:
    return vt_err(err, errlen, VT_EDNNL, "oneDNN could not wrap the model's weights");
}

static void destroy_mem(dnnl_memory_t *m)
{
    if (*m) dnnl_memory_destroy(*m);
    *m = NULL;
}

static void plan_free(plan *p)
{
    if (!p) return;
    op_prim *prims[] = {PLAN_PRIMS(p)};
    for (size_t i = 0; i < sizeof prims / sizeof *prims; i++) op_prim_free(prims[i]);
    dnnl_memory_t *mems[] = {&p->cols, &p->pout, &p->x, &p->xn, &p->qkv_m, &p->q, &p->kt, &p->v,
                             &p->s, &p->o, &p->h, &p->tmp, &p->cls[0], &p->cls[1], &p->lg[0], &p->lg[1],
                             &p->q_l, &p->s_l, &p->s_l2, &p->o_l, &p->oc, &p->xc, &p->xcn, &p->h_l};
    for (size_t i = 0; i < sizeof mems / sizeof *mems; i++) destroy_mem(mems[i]);
    free(p);
}

/* Every primitive shares the runner's scratchpad; a plan that needs more grows it and
 * re-points every primitive built so far. */
static vt_status bind_scratch(vit_runner *r, op_prim **prims, int n, char *err, size_t errlen)
{
    size_t need = r->scratch_bytes;
    for (int i = 0; i < n; i++) if (prims[i]->scratch_bytes > need) need = prims[i]->scratch_bytes;
    if (need > r->scratch_bytes) {
        void *nb = vit_alloc(need);
        if (!nb) return vt_err(err, errlen, VT_ENOMEM, "out of memory for the oneDNN scratchpad");
        free(r->scratch);
        r->scratch = nb;
        r->scratch_bytes = need;
        for (int b = 0; b <= VIT_MAX_RUNNER_BATCH; b++) {
            plan *p = r->plans[b];
            if (!p) continue;
            op_prim *all[] = {PLAN_PRIMS(p)};
            for (size_t i = 0; i < sizeof all / sizeof *all; i++) op_bind_scratch(all[i], r->scratch);
        }
    }
    for (int i = 0; i < n; i++)
        if (op_bind_scratch(prims[i], r->scratch)) return vt_err(err, errlen, VT_EDNNL, "oneDNN scratchpad");
    return VT_OK;
}

static vt_status plan_unfused(vit_runner *r, plan *p, char *err, size_t errlen)
{
    const vit_model *m = r->m;
    int M = p->B * r->N, D = m->cfg.dim;
    vt_status st;
    if (p->have_unfused) return VT_OK;
    if ((st = op_linear(&p->proj_ns, M, D, D, &m->wmd[MAT_PROJ], 0, err, errlen)) ||
        (st = op_linear(&p->fc2_ns, M, m->cfg.mlp_dim, D, &m->wmd[MAT_FC2], 0, err, errlen)))
        return st;
    op_prim *prims[] = {&p->proj_ns, &p->fc2_ns};
    if ((st = bind_scratch(r, prims, 2, err, errlen))) return st;
    p->have_unfused = 1;
    return VT_OK;
}

/* The last block's primitives on the T class-token rows of each image: Q and the scores for
 * those rows only (K and V still come from every token), then proj, LN2 and the MLP on B*T
 * rows. Only rows 0..T-1 reach the head, so this is exact (about 7% of a DeiT's MACs). */
static vt_status plan_last(vit_runner *r, plan *p, char *err, size_t errlen)
{
    const vit_model *m = r->m;
    const vit_config *c = &m->cfg;
    int B = p->B, N = r->N, T = r->T, D = c->dim, F = c->mlp_dim, H = c->heads, dh = D / H;
    vt_status st;
    if (p->have_last) return VT_OK;
    dnnl_memory_desc_t q, sl, o;
    dnnl_dims_t qd = {B, H, T, dh}, qs = {(int64_t)N * 3 * D, dh, 3 * D, 1};
    dnnl_dims_t sd = {B, H, T, N}, ss = {(int64_t)H * T * N, (int64_t)T * N, N, 1};
    dnnl_dims_t od = {B, H, T, dh}, os = {(int64_t)T * D, dh, D, 1};
    dnnl_memory_desc_init_by_strides(&q, 4, qd, dnnl_f32, qs);
    dnnl_memory_desc_init_by_strides(&sl, 4, sd, dnnl_f32, ss);
    dnnl_memory_desc_init_by_strides(&o, 4, od, dnnl_f32, os);
    dnnl_matmul_desc_t qk, av;
    if (dnnl_matmul_desc_init(&qk, &q, &p->qk.wei_md, NULL, &sl) != dnnl_success ||
        dnnl_matmul_desc_init(&av, &sl, &p->av.wei_md, NULL, &o) != dnnl_success)
        return vt_err(err, errlen, VT_EDNNL, "oneDNN: bad last-block attention");
    if ((st = op_matmul_desc(&p->qk_l, &qk, err, errlen)) || (st = op_matmul_desc(&p->av_l, &av, err, errlen)) ||
        (st = op_softmax(&p->sm_l, B * H * T, N, err, errlen)) ||
        (st = op_linear(&p->proj_l, B * T, D, D, &m->wmd[MAT_PROJ], OP_SUM, err, errlen)) ||
        (st = op_layernorm(&p->ln_l, B * T, D, c->ln_eps, err, errlen)) ||
        (st = op_linear(&p->fc1_l, B * T, D, F, &m->wmd[MAT_FC1], OP_GELU, err, errlen)) ||
        (st = op_linear(&p->fc2_l, B * T, F, D, &m->wmd[MAT_FC2], OP_SUM, err, errlen)))
        return st;
    dnnl_memory_desc_t s2 = op_md2(B * H * T, N), rows = op_md2(B * T, D), hrows = op_md2(B * T, F);
    p->q_l = op_mem(&q, r->qkv);
    p->s_l = op_mem(&sl, r->s);
    p->s_l2 = op_mem(&s2, r->s);
    p->o_l = op_mem(&o, r->o);
    p->oc = op_mem(&rows, r->o);
    p->xc = op_mem(&rows, r->tmp);
    p->xcn = op_mem(&rows, r->xn);
    p->h_l = op_mem(&hrows, r->h);
    if (!p->q_l || !p->s_l || !p->s_l2 || !p->o_l || !p->oc || !p->xc || !p->xcn || !p->h_l)
        return vt_err(err, errlen, VT_EDNNL, "oneDNN could not create last-block memory");
    op_prim *prims[] = {&p->qk_l, &p->sm_l, &p->av_l, &p->proj_l, &p->ln_l, &p->fc1_l, &p->fc2_l};
    if ((st = bind_scratch(r, prims, 7, err, errlen))) return st;
    p->have_last = 1;
    return VT_OK;
}

static vt_status plan_get(vit_runner *r, int B, plan **out, char *err, size_t errlen)
{
    if (r->plans[B]) { *out = r->plans[B]; return VT_OK; }
    const vit_model *m = r->m;
    const vit_config *c = &m->cfg;
    int N = r->N, D = c->dim, F = c->mlp_dim, H = c->heads, M = B * N, K = c->classes;
    int cpp = c->channels * c->patch * c->patch;
    vt_status st;
    plan *p = calloc(1, sizeof *p);
    if (!p) return vt_err(err, errlen, VT_ENOMEM, "out of memory");
    p->B = B;
    if ((st = op_linear(&p->patch, B * r->Np, cpp, D, &m->wmd[MAT_PATCH], 0, err, errlen)) ||
        (st = op_layernorm(&p->ln, M, D, c->ln_eps, err, errlen)) ||
        (st = op_linear(&p->qkv, M, D, 3 * D, &m->wmd[MAT_QKV], 0, err, errlen)) ||
        (st = op_attn_scores(&p->qk, B, H, N, D, err, errlen)) ||
        (st = op_softmax(&p->sm, B * H * N, N, err, errlen)) ||
        (st = op_attn_values(&p->av, B, H, N, D, err, errlen)) ||
        (st = op_linear(&p->proj, M, D, D, &m->wmd[MAT_PROJ], OP_SUM, err, errlen)) ||
        (st = op_linear(&p->fc1, M, D, F, &m->wmd[MAT_FC1], OP_GELU, err, errlen)) ||
        (st = op_linear(&p->fc2, M, F, D, &m->wmd[MAT_FC2], OP_SUM, err, errlen)) ||
        (st = op_linear(&p->head, B, D, K, &m->wmd[MAT_HEAD], 0, err, errlen)))
        goto fail;
    dnnl_memory_desc_t md;
    md = op_md2(B * r->Np, cpp); p->cols = op_mem(&md, r->cols);
    md = op_md2(B * r->Np, D);   p->pout = op_mem(&md, r->pout);
    md = op_md2(M, D);           p->x = op_mem(&md, r->x); p->xn = op_mem(&md, r->xn);
                                 p->o = op_mem(&md, r->o); p->tmp = op_mem(&md, r->tmp);
    md = op_md2(M, 3 * D);       p->qkv_m = op_mem(&md, r->qkv);
    md = op_md2(M, F);           p->h = op_mem(&md, r->h);
    md = op_md2(B * H * N, N);   p->s = op_mem(&md, r->s);
    p->q = op_mem(&p->qk.src_md, r->qkv);
    p->kt = op_mem(&p->qk.wei_md, r->qkv + D);
    p->v = op_mem(&p->av.wei_md, r->qkv + 2 * D);
    md = op_md2(B, D);           p->cls[0] = op_mem(&md, r->cls[0]); p->cls[1] = op_mem(&md, r->cls[1]);
    md = op_md2(B, K);           p->lg[0] = op_mem(&md, r->lg[0]); p->lg[1] = op_mem(&md, r->lg[1]);
    if (!p->cols || !p->pout || !p->x || !p->xn || !p->o || !p->tmp || !p->qkv_m || !p->h || !p->s ||
        !p->q || !p->kt || !p->v || !p->cls[0] || !p->cls[1] || !p->lg[0] || !p->lg[1]) {
        st = vt_err(err, errlen, VT_EDNNL, "oneDNN could not create activation memory");
        goto fail;
    }
    /* the O view of attn.values writes (B*N, D) token-major into r->o */
    r->plans[B] = p;
    op_prim *prims[] = {&p->patch, &p->ln, &p->qkv, &p->qk, &p->sm, &p->av, &p->proj, &p->fc1, &p->fc2, &p->head};
    if ((st = bind_scratch(r, prims, 10, err, errlen))) { r->plans[B] = NULL; goto fail; }
    *out = p;
    return VT_OK;
fail:
    plan_free(p);
    return st;
}

vt_status vit_runner_new(const vit_model *m, int max_batch, vit_runner **out, char *err, size_t errlen)
{
    const vit_config *c = &m->cfg;
    *out = NULL;
    if (max_batch < 1 || max_batch > VIT_MAX_RUNNER_BATCH)
        return vt_err(err, errlen, VT_EINVAL, "max batch %d is outside 1..%d", max_batch, VIT_MAX_RUNNER_BATCH);
    vit_runner *r = calloc(1, sizeof *r);
    if (!r) return vt_err(err, errlen, VT_ENOMEM, "out of memory");
    r->m = m;
    r->max_batch = max_batch;
    r->N = vit_tokens(c);
    r->T = 1 + c->distilled;
    r->Np = r->N - r->T;
    size_t B = (size_t)max_batch, N = (size_t)r->N, D = (size_t)c->dim, F = (size_t)c->mlp_dim;
    size_t cpp = (size_t)c->channels * c->patch * c->patch, K = (size_t)c->classes;
    vt_status st;
    r->x = vit_alloc(B * N * D * 4);
    r->xn = vit_alloc(B * N * D * 4);
    r->o = vit_alloc(B * N * D * 4);
    r->tmp = vit_alloc(B * N * D * 4);
    r->qkv = vit_alloc(B * N * 3 * D * 4);
    r->h = vit_alloc(B * N * F * 4);
    r->s = vit_alloc(B * (size_t)c->heads * N * N * 4);
    r->cols = vit_alloc(B * (size_t)r->Np * cpp * 4);
    r->pout = vit_alloc(B * (size_t)r->Np * D * 4);
    r->cls[0] = vit_alloc(B * D * 4);
    r->cls[1] = vit_alloc(B * D * 4);
    r->lg[0] = vit_alloc(B * K * 4);
    r->lg[1] = vit_alloc(B * K * 4);
    r->att_scratch = vit_alloc(N * 4);
    if (!r->x || !r->xn || !r->o || !r->tmp || !r->qkv || !r->h || !r->s || !r->cols || !r->pout ||
        !r->cls[0] || !r->cls[1] || !r->lg[0] || !r->lg[1] || !r->att_scratch) {
        st = vt_err(err, errlen, VT_ENOMEM, "out of memory for activations (batch %d)", max_batch);
        goto fail;
    }
    if (dnnl_stream_create(&r->stream, op_engine(), dnnl_stream_default_flags) != dnnl_success) {
        st = vt_err(err, errlen, VT_EDNNL, "oneDNN could not create a stream");
        goto fail;
    }
    if ((st = make_weight_mems(r, err, errlen))) goto fail;
    *out = r;
    return VT_OK;
fail:
    vit_runner_free(r);
    return st;
}

void vit_runner_free(vit_runner *r)
{
    if (!r) return;
    for (int b = 0; b <= VIT_MAX_RUNNER_BATCH; b++) plan_free(r->plans[b]);
    if (r->bm) {
        for (int b = 0; b < r->m->cfg.depth; b++) {
            block_mem *bm = &r->bm[b];
            for (int k = 0; k < 4; k++) { destroy_mem(&bm->w[k]); destroy_mem(&bm->b[k]); }
            destroy_mem(&bm->ln1g); destroy_mem(&bm->ln1b); destroy_mem(&bm->ln2g); destroy_mem(&bm->ln2b);
        }
        free(r->bm);
    }
    destroy_mem(&r->patch_w); destroy_mem(&r->patch_b);
    for (int k = 0; k < 2; k++) { destroy_mem(&r->head_w[k]); destroy_mem(&r->head_b[k]); }
    if (r->stream) dnnl_stream_destroy(r->stream);
    float *bufs[] = {r->x, r->xn, r->o, r->tmp, r->qkv, r->h, r->s, r->cols, r->pout,
                     r->cls[0], r->cls[1], r->lg[0], r->lg[1], r->att_scratch};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) free(bufs[i]);
    free(r->scratch);
    free(r);
}

int vit_runner_max_batch(const vit_runner *r) { return r->max_batch; }

/* ---- the steps of the forward pass -------------------------------------------------------- */

#define EXEC(prim, ...)                                                                    \
    do {                                                                                   \
        const dnnl_exec_arg_t a_[] = {__VA_ARGS__};                                        \
        vt_status s_ = op_exec(prim, r->stream, (int)(sizeof a_ / sizeof *a_), a_, err, errlen); \
        if (s_) return s_;                                                                 \
    } while (0)

/* Patch embedding, tokens and positions: x (B, N, D). */
static vt_status embed(vit_runner *r, plan *p, const float *images, int B, int ref, char *err, size_t errlen)
{
    const vit_model *m = r->m;
    const vit_config *c = &m->cfg;
    int D = c->dim, N = r->N, T = r->T, Np = r->Np, cpp = c->channels * c->patch * c->patch;
    ref_im2col(images, r->cols, B, c->channels, c->image_size, c->patch);
    if (ref) {
        ref_linear(r->cols, m->g[GP_PATCH_W], m->g[GP_PATCH_B], r->pout, B * Np, cpp, D);
    } else {
        EXEC(&p->patch, {DNNL_ARG_SRC, p->cols}, {DNNL_ARG_WEIGHTS, r->patch_w},
             {DNNL_ARG_BIAS, r->patch_b}, {DNNL_ARG_DST, p->pout});
    }
    const float *pos = m->g[GP_POS];
    #pragma omp parallel for
    for (int b = 0; b < B; b++) {
        float *xb = r->x + (size_t)b * N * D;
        for (int d = 0; d < D; d++) {
            xb[d] = m->g[GP_CLS][d] + pos[d];
            if (T == 2) xb[D + d] = m->g[GP_DIST][d] + pos[D + d];
        }
        for (int t = 0; t < Np; t++) {
            const float *src = r->pout + ((size_t)b * Np + t) * D;
            float *dst = xb + (size_t)(T + t) * D;
            const float *pe = pos + (size_t)(T + t) * D;
            for (int d = 0; d < D; d++) dst[d] = src[d] + pe[d];
        }
    }
    return VT_OK;
}

static void add_into(float *x, const float *y, size_t n)
{
    #pragma omp parallel for
    for (size_t i = 0; i < n; i++) x[i] += y[i];
}

/* x += Attn(LN1(x)), or with a tap: tmp = Attn(LN1(x)), tap(tmp), x += tmp. */
static vt_status attn_half(vit_runner *r, plan *p, int blk, int B, const vit_opts *o, int ref,
                           char *err, size_t errlen)
{
    const vit_model *m = r->m;
    const vit_config *c = &m->cfg;
    const vit_block *w = &m->blocks[blk];
    const block_mem *bm = &r->bm[blk];
    int D = c->dim, N = r->N, M = B * N;
    int tap = o && o->tap;
    vt_status st;
    if (ref) {
        ref_layernorm(r->x, r->xn, M, D, w->p[BP_LN1_G], w->p[BP_LN1_B], c->ln_eps);
        ref_linear(r->xn, w->p[BP_QKV_W], w->p[BP_QKV_B], r->qkv, M, D, 3 * D);
        ref_attention(r->qkv, r->o, B, N, D, c->heads, 1.0f / sqrtf((float)(D / c->heads)), r->att_scratch);
        ref_linear(r->o, w->p[BP_PROJ_W], w->p[BP_PROJ_B], r->tmp, M, D, D);
        if (tap) o->tap(o->tap_ctx, VIT_TAP_ATTN, blk, r->tmp, B, N, D);
        add_into(r->x, r->tmp, (size_t)M * D);
        return VT_OK;
    }
    EXEC(&p->ln, {DNNL_ARG_SRC, p->x}, {DNNL_ARG_DST, p->xn}, {DNNL_ARG_SCALE, bm->ln1g}, {DNNL_ARG_SHIFT, bm->ln1b});
    EXEC(&p->qkv, {DNNL_ARG_SRC, p->xn}, {DNNL_ARG_WEIGHTS, bm->w[MAT_QKV]}, {DNNL_ARG_BIAS, bm->b[MAT_QKV]}, {DNNL_ARG_DST, p->qkv_m});
    EXEC(&p->qk, {DNNL_ARG_SRC, p->q}, {DNNL_ARG_WEIGHTS, p->kt}, {DNNL_ARG_DST, p->s});
    EXEC(&p->sm, {DNNL_ARG_SRC, p->s}, {DNNL_ARG_DST, p->s});
    EXEC(&p->av, {DNNL_ARG_SRC, p->s}, {DNNL_ARG_WEIGHTS, p->v}, {DNNL_ARG_DST, p->o});
    if (!tap) {
        EXEC(&p->proj, {DNNL_ARG_SRC, p->o}, {DNNL_ARG_WEIGHTS, bm->w[MAT_PROJ]}, {DNNL_ARG_BIAS, bm->b[MAT_PROJ]}, {DNNL_ARG_DST, p->x});
        return VT_OK;
    }
    if ((st = plan_unfused(r, p, err, errlen))) return st;
    EXEC(&p->proj_ns, {DNNL_ARG_SRC, p->o}, {DNNL_ARG_WEIGHTS, bm->w[MAT_PROJ]}, {DNNL_ARG_BIAS, bm->b[MAT_PROJ]}, {DNNL_ARG_DST, p->tmp});
    o->tap(o->tap_ctx, VIT_TAP_ATTN, blk, r->tmp, B, N, D);
    add_into(r->x, r->tmp, (size_t)M * D);
    return VT_OK;
}

/* x += MLP(LN2(x)), tapped the same way. */
static vt_status mlp_half(vit_runner *r, plan *p, int blk, int B, const vit_opts *o, int ref,
                          char *err, size_t errlen)
{
    const vit_model *m = r->m;
    const vit_config *c = &m->cfg;
    const vit_block *w = &m->blocks[blk];
    const block_mem *bm = &r->bm[blk];
    int D = c->dim, F = c->mlp_dim, N = r->N, M = B * N;
    int tap = o && o->tap;
    vt_status st;
    if (ref) {
        ref_layernorm(r->x, r->xn, M, D, w->p[BP_LN2_G], w->p[BP_LN2_B], c->ln_eps);
        ref_linear(r->xn, w->p[BP_FC1_W], w->p[BP_FC1_B], r->h, M, D, F);
        ref_gelu(r->h, (size_t)M * F);
        ref_linear(r->h, w->p[BP_FC2_W], w->p[BP_FC2_B], r->tmp, M, F, D);
        if (tap) o->tap(o->tap_ctx, VIT_TAP_MLP, blk, r->tmp, B, N, D);
        add_into(r->x, r->tmp, (size_t)M * D);
        return VT_OK;
    }
    EXEC(&p->ln, {DNNL_ARG_SRC, p->x}, {DNNL_ARG_DST, p->xn}, {DNNL_ARG_SCALE, bm->ln2g}, {DNNL_ARG_SHIFT, bm->ln2b});
    EXEC(&p->fc1, {DNNL_ARG_SRC, p->xn}, {DNNL_ARG_WEIGHTS, bm->w[MAT_FC1]}, {DNNL_ARG_BIAS, bm->b[MAT_FC1]}, {DNNL_ARG_DST, p->h});
    if (!tap) {
        EXEC(&p->fc2, {DNNL_ARG_SRC, p->h}, {DNNL_ARG_WEIGHTS, bm->w[MAT_FC2]}, {DNNL_ARG_BIAS, bm->b[MAT_FC2]}, {DNNL_ARG_DST, p->x});
        return VT_OK;
    }
    if ((st = plan_unfused(r, p, err, errlen))) return st;
    EXEC(&p->fc2_ns, {DNNL_ARG_SRC, p->h}, {DNNL_ARG_WEIGHTS, bm->w[MAT_FC2]}, {DNNL_ARG_BIAS, bm->b[MAT_FC2]}, {DNNL_ARG_DST, p->tmp});
    o->tap(o->tap_ctx, VIT_TAP_MLP, blk, r->tmp, B, N, D);
    add_into(r->x, r->tmp, (size_t)M * D);
    return VT_OK;
}

/* Final LayerNorm of the class (and distillation) tokens, then the head(s). */
static vt_status head(vit_runner *r, plan *p, int B, const float *xs, int stride, float *logits,
                      const vit_opts *o, int ref, char *err, size_t errlen)
{
    const vit_model *m = r->m;
    const vit_config *c = &m->cfg;
    int D = c->dim, T = r->T, K = c->classes;
    /* The final norm touches B*T rows only: a plain loop, not a primitive. Image b's token t
     * is row b*stride + t of xs. */
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            ref_layernorm(xs + ((size_t)b * stride + t) * D, r->cls[t] + (size_t)b * D, 1, D,
                          m->g[GP_NORM_G], m->g[GP_NORM_B], c->ln_eps);
    if (o && o->tap) {
        /* (B, T, D) as the contract says: interleave the token rows */
        for (int b = 0; b < B; b++)
            for (int t = 0; t < T; t++)
                memcpy(r->tmp + ((size_t)b * T + t) * D, r->cls[t] + (size_t)b * D, (size_t)D * 4);
        o->tap(o->tap_ctx, VIT_TAP_FEATURE, -1, r->tmp, B, T, D);
    }
    static const int wslot[2] = {GP_HEAD_W, GP_HEADD_W}, bslot[2] = {GP_HEAD_B, GP_HEADD_B};
    for (int t = 0; t < T; t++) {
        if (ref) {
            ref_linear(r->cls[t], m->g[wslot[t]], m->g[bslot[t]], r->lg[t], B, D, K);
        } else {
            EXEC(&p->head, {DNNL_ARG_SRC, p->cls[t]}, {DNNL_ARG_WEIGHTS, r->head_w[t]},
                 {DNNL_ARG_BIAS, r->head_b[t]}, {DNNL_ARG_DST, p->lg[t]});
        }
    }
    for (size_t i = 0; i < (size_t)B * K; i++)
        logits[i] = T == 2 ? (r->lg[0][i] + r->lg[1][i]) * 0.5f : r->lg[0][i];
    return VT_OK;
}

/* The last block, computed for the class-token rows only (plan_last); leaves them in
 * r->tmp as (B*T, D), image-major. */
static vt_status last_block(vit_runner *r, plan *p, int blk, int B, int removed, char *err, size_t errlen)
{
    const vit_model *m = r->m;
    const block_mem *bm = &r->bm[blk];
    int N = r->N, T = r->T, D = m->cfg.dim;
    vt_status st;
    if ((st = plan_last(r, p, err, errlen))) return st;
    if (!removed) {
        EXEC(&p->ln, {DNNL_ARG_SRC, p->x}, {DNNL_ARG_DST, p->xn}, {DNNL_ARG_SCALE, bm->ln1g}, {DNNL_ARG_SHIFT, bm->ln1b});
        EXEC(&p->qkv, {DNNL_ARG_SRC, p->xn}, {DNNL_ARG_WEIGHTS, bm->w[MAT_QKV]}, {DNNL_ARG_BIAS, bm->b[MAT_QKV]}, {DNNL_ARG_DST, p->qkv_m});
        EXEC(&p->qk_l, {DNNL_ARG_SRC, p->q_l}, {DNNL_ARG_WEIGHTS, p->kt}, {DNNL_ARG_DST, p->s_l});
        EXEC(&p->sm_l, {DNNL_ARG_SRC, p->s_l2}, {DNNL_ARG_DST, p->s_l2});
        EXEC(&p->av_l, {DNNL_ARG_SRC, p->s_l}, {DNNL_ARG_WEIGHTS, p->v}, {DNNL_ARG_DST, p->o_l});
    }
    /* the stream's class-token rows; oneDNN work above is queued in order on the same
     * in-order CPU stream, and executes synchronously, so x is final here */
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const float *src = r->x + ((size_t)b * N + t) * D;
            float *dst = r->tmp + ((size_t)b * T + t) * D;
            for (int d = 0; d < D; d++) dst[d] = removed ? 2.0f * src[d] : src[d];
        }
    if (!removed)
        EXEC(&p->proj_l, {DNNL_ARG_SRC, p->oc}, {DNNL_ARG_WEIGHTS, bm->w[MAT_PROJ]}, {DNNL_ARG_BIAS, bm->b[MAT_PROJ]}, {DNNL_ARG_DST, p->xc});
    EXEC(&p->ln_l, {DNNL_ARG_SRC, p->xc}, {DNNL_ARG_DST, p->xcn}, {DNNL_ARG_SCALE, bm->ln2g}, {DNNL_ARG_SHIFT, bm->ln2b});
    EXEC(&p->fc1_l, {DNNL_ARG_SRC, p->xcn}, {DNNL_ARG_WEIGHTS, bm->w[MAT_FC1]}, {DNNL_ARG_BIAS, bm->b[MAT_FC1]}, {DNNL_ARG_DST, p->h_l});
    EXEC(&p->fc2_l, {DNNL_ARG_SRC, p->h_l}, {DNNL_ARG_WEIGHTS, bm->w[MAT_FC2]}, {DNNL_ARG_BIAS, bm->b[MAT_FC2]}, {DNNL_ARG_DST, p->xc});
    return VT_OK;
}

vt_status vit_forward(vit_runner *r, const float *images, int B, float *logits, const vit_opts *o,
                      char *err, size_t errlen)
{
    const vit_model *m = r->m;
    const vit_config *c = &m->cfg;
    int ref = o && o->reference;
    uint64_t removed = c->removed | (o ? o->removed : 0);
    int start = o && o->start_x ? o->start_block : 0;
    size_t stream_floats = (size_t)B * r->N * c->dim;
    plan *p = NULL;
    vt_status st;
    if (B < 1 || B > r->max_batch)
        return vt_err(err, errlen, VT_EINVAL, "batch %d is outside 1..%d", B, r->max_batch);
    if (start < 0 || start > c->depth)
        return vt_err(err, errlen, VT_EINVAL, "start block %d is outside 0..%d", start, c->depth);
    if (ref && !m->keep_plain)
        return vt_err(err, errlen, VT_EINVAL, "the reference path needs a model loaded with keep_plain");
    if (o && o->save_mask && !o->save_x) return vt_err(err, errlen, VT_EINVAL, "save_mask without save_x");
    if (!ref && (st = plan_get(r, B, &p, err, errlen))) return st;
    if (o && o->start_x) memcpy(r->x, o->start_x, stream_floats * 4);
    else if ((st = embed(r, p, images, B, ref, err, errlen))) return st;
    /* The last block runs on the class-token rows only, unless a tap wants whole blocks or
     * this is the reference path (which stays the plain, independent oracle). */
    int last_rows = !ref && !(o && o->tap) && start < c->depth;
    int full_end = last_rows ? c->depth - 1 : c->depth;
    for (int blk = start; blk < full_end; blk++) {
        if (o && ((o->save_mask >> blk) & 1)) memcpy(o->save_x[blk], r->x, stream_floats * 4);
        if ((removed >> blk) & 1) {
            /* METHOD.md section 2: y = 2x (the lambda = 0 end of dilution learning) */
            float *x = r->x;
            #pragma omp parallel for
            for (size_t i = 0; i < stream_floats; i++) x[i] *= 2.0f;
        } else if ((st = attn_half(r, p, blk, B, o, ref, err, errlen))) {
            return st;
        }
        if ((st = mlp_half(r, p, blk, B, o, ref, err, errlen))) return st;
    }
    if (last_rows) {
        int blk = c->depth - 1;
        if (o && ((o->save_mask >> blk) & 1)) memcpy(o->save_x[blk], r->x, stream_floats * 4);
        if ((st = last_block(r, p, blk, B, (int)((removed >> blk) & 1), err, errlen))) return st;
        st = head(r, p, B, r->tmp, r->T, logits, o, ref, err, errlen);
    } else {
        st = head(r, p, B, r->x, r->N, logits, o, ref, err, errlen);
    }
    if (st) return st;
    if (!ref && dnnl_stream_wait(r->stream) != dnnl_success)
        return vt_err(err, errlen, VT_EDNNL, "oneDNN stream failed");
    return VT_OK;
}

void vit_set_threads(int n)
{
    omp_set_num_threads(n > 0 ? n : vit_cpu_count());
}

/* The CPU quota of the cgroup (v2 cpu.max "quota period", or v1 cfs files), rounded up;
 * 0 when there is none. */
static int cgroup_cpus(void)
{
    long long q = -1, per = 0;
    FILE *f = fopen("/sys/fs/cgroup/cpu.max", "r");
    if (f) {
        char qs[32];
        if (fscanf(f, "%31s %lld", qs, &per) == 2 && strcmp(qs, "max")) q = atoll(qs);
        fclose(f);
    } else if ((f = fopen("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "r"))) {
        if (fscanf(f, "%lld", &q) != 1) q = -1;
        fclose(f);
        if ((f = fopen("/sys/fs/cgroup/cpu/cpu.cfs_period_us", "r"))) {
            if (fscanf(f, "%lld", &per) != 1) per = 0;
            fclose(f);
        }
    }
    if (q <= 0 || per <= 0) return 0;
    return (int)((q + per - 1) / per);
}

int vit_cpu_count(void)
{
    cpu_set_t set;
    int n = 1;
    if (sched_getaffinity(0, sizeof set, &set) == 0) n = CPU_COUNT(&set);
    int q = cgroup_cpus();
    if (q > 0 && q < n) n = q;
    return n > 0 ? n : 1;
}
