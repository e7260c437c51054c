/* train.c - the ViT in training: parameter table, forward with saved activations, backward,
 * checkpoints and training-state files (see train.h).
 *
 * What it is: the model's calculus, written once over grad.h, so the oneDNN and reference back
 * ends run the same sequence of ops. What it is not: the optimiser (optim.c), the data
 * (data.c) or the epoch loop (server/cmd_train.c).
 *
 * Layouts: the residual stream is token-major (B*N, D) (M = B*N rows); qkv is (M, 3D) with
 * [q heads | k heads | v heads] per token as timm has it, and attention reads it through
 * strided (B, H, N, Dh) views (grad.h), so nothing is transposed or copied per head.
 *
 * Saved per block l for the backward pass: X[l] (block input), LN1 output and statistics,
 * qkv, attention probabilities P (B, H, N, N), the heads' output o (pre-projection),
 * h (after the mix), LN2 output and statistics, the fc1 output u (pre-GELU) and GELU(u).
 */
#include "train.h"

#include <jansson.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grad.h"
#include "ref.h"
#include "safetensors.h"
#include "vit_internal.h"


/* Activations for max_batch images; X and H per block, the rest as listed in the header. */
typedef struct {
    float *X, *xn1, *mu1, *var1, *qkv, *P, *o, *H, *xn2, *mu2, *var2, *u, *gl;
} block_acts;

/* One shard of a batch: a thread's own op back end, activations and gradients. A pass splits
 * the batch into contiguous shards run in parallel, one thread each, with oneDNN running
 * single-threaded inside each (data parallelism: one synchronisation per pass instead of one
 * per op, which matters for small matrices and on a busy machine); the gradients of the
 * shards are then summed in a fixed order. */
typedef struct {
    gr_ctx *g;
    int B, b0;                     /* images in the current pass, and the first one's index */
    block_acts *ba;                /* (L) */
    float *Xout;                   /* X[L] (M, D) */
    float *cols, *pout, *z, *zn, *muf, *varf, *lg[2];
    float *dX, *dH, *dxn, *tmp, *dg, *du, *dqkv, *dP, *dS, *dO, *dz, *dzn, *dpout, *dlg;
    float *grads;                  /* (numel); shard 0's are the model's */
    float **bufs;                  /* every buffer, for freeing */
    int nbufs;
    vt_status st;
    char err[256];
} shard;

struct tr_model {
    vit_config cfg;
    char **labels;                 /* (K) or NULL */
    tr_tensor *t;
    int nt;
    size_t numel;
    float *params, *grads;
    float *bp[VIT_MAX_DEPTH][BP_COUNT]; /* parameters of block l, slot s; NULL: absent */
    float *gp[GP_COUNT];
    float lambda[VIT_MAX_DEPTH];
    /* prepared state */
    int max_batch, N, T, Np, cpp, nshards, cap;
    shard *sh;                     /* (nshards) */
};

/* Gradient of parameter p (a pointer into m->params) in shard s. */
#define GRAD(m, s, p) ((p) ? (s)->grads + ((p) - (m)->params) : NULL)

/* ---- construction ------------------------------------------------------------------------- */

static void add_tensor(tr_model *m, const vit_param_spec *s, int block, int is_global_matrix)
{
    tr_tensor *t = &m->t[m->nt++];
    memset(t, 0, sizeof *t);
    if (block >= 0) snprintf(t->name, sizeof t->name, "blocks.%d.%s", block, s->name);
    else snprintf(t->name, sizeof t->name, "%s", s->name);
    t->numel = 1;
    for (int i = 0; i < 4 && s->d[i] != DIM_NONE; i++) {
        t->shape[t->ndim++] = vit_dim_value(&m->cfg, s->d[i]);
        t->numel *= (size_t)t->shape[t->ndim - 1];
    }
    t->offset = m->numel;
    m->numel += (t->numel + 15) & ~(size_t)15; /* 64-byte aligned starts */
    t->decay = block >= 0 ? s->matrix : is_global_matrix;
    t->block = block;
    t->attn = block >= 0 && s->attn;
}

static vt_status check_config(const vit_config *c, char *err, size_t errlen)
{
    if (c->image_size <= 0 || c->patch <= 0 || c->image_size % c->patch || c->channels < 1 || c->channels > 4 ||
        c->dim <= 0 || c->heads <= 0 || c->dim % c->heads || c->depth < 1 || c->depth > VIT_MAX_DEPTH ||
        c->mlp_dim <= 0 || c->classes < 1 || c->distilled < 0 || c->distilled > 1)
        return vt_err(err, errlen, VT_EINVAL,
                      "bad architecture: image %d, patch %d, channels %d, width %d, heads %d, depth %d, mlp %d, classes %d",
                      c->image_size, c->patch, c->channels, c->dim, c->heads, c->depth, c->mlp_dim, c->classes);
    if (c->depth < 64 && (c->removed >> c->depth))
        return vt_err(err, errlen, VT_EINVAL, "removed blocks beyond the depth");
    return VT_OK;
}

/* Builds the tensor table and the parameter/gradient buffers (zeroed). */
static vt_status alloc_model(const vit_config *c, tr_model **out, char *err, size_t errlen)
{
    vt_status st = check_config(c, err, errlen);
    if (st) return st;
    tr_model *m = calloc(1, sizeof *m);
    if (!m) return vt_err(err, errlen, VT_ENOMEM, "out of memory");
    m->cfg = *c;
    if (m->cfg.ln_eps <= 0) m->cfg.ln_eps = 1e-6f;
    m->t = calloc((size_t)(GP_COUNT + c->depth * BP_COUNT), sizeof *m->t);
    if (!m->t) { free(m); return vt_err(err, errlen, VT_ENOMEM, "out of memory"); }
    for (int s = 0; s < GP_COUNT; s++) {
        if (vit_global_specs[s].distilled && !c->distilled) continue;
        add_tensor(m, &vit_global_specs[s], -1, s == GP_PATCH_W || s == GP_HEAD_W || s == GP_HEADD_W);
    }
    for (int b = 0; b < c->depth; b++)
        for (int s = 0; s < BP_COUNT; s++)
            if (!(vit_block_specs[s].attn && ((c->removed >> b) & 1))) add_tensor(m, &vit_block_specs[s], b, 0);
    m->params = vit_alloc(m->numel * sizeof(float));
    m->grads = vit_alloc(m->numel * sizeof(float));
    if (!m->params || !m->grads) { tr_free(m); return vt_err(err, errlen, VT_ENOMEM, "out of memory for %zu parameters", m->numel); }
    memset(m->params, 0, m->numel * sizeof(float));
    memset(m->grads, 0, m->numel * sizeof(float));
    int k = 0;
    for (int s = 0; s < GP_COUNT; s++) {
        if (vit_global_specs[s].distilled && !c->distilled) continue;
        m->gp[s] = m->params + m->t[k].offset;
        k++;
    }
    for (int b = 0; b < c->depth; b++) {
        int has_attn = !((c->removed >> b) & 1);
        m->lambda[b] = has_attn ? 1.0f : 0.0f;
        for (int s = 0; s < BP_COUNT; s++) {
            if (vit_block_specs[s].attn && !has_attn) continue;
            m->bp[b][s] = m->params + m->t[k].offset;
            k++;
        }
    }
    *out = m;
    return VT_OK;
}

/* splitmix64: the generator of initial weights (seeded, platform-independent). */
static uint64_t sm64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double unif(uint64_t *s) { return ((sm64(s) >> 11) + 0.5) * (1.0 / 9007199254740992.0); }

static double gauss(uint64_t *s)
{
    return sqrt(-2.0 * log(unif(s))) * cos(2.0 * M_PI * unif(s));
}

static void fill_trunc(float *p, size_t n, double std, uint64_t *s)
{
    for (size_t i = 0; i < n; i++) {
        double z;
        do z = gauss(s); while (fabs(z) > 2.0);
        p[i] = (float)(z * std);
    }
}

vt_status tr_new(const vit_config *c, uint64_t seed, tr_model **out, char *err, size_t errlen)
{
    *out = NULL;
    tr_model *m;
    vt_status st = alloc_model(c, &m, err, errlen);
    if (st) return st;
    for (int i = 0; i < m->nt; i++) {
        const tr_tensor *t = &m->t[i];
        float *p = m->params + t->offset;
        uint64_t s = seed * 0x2545f4914f6cdd1dull + (uint64_t)i * 0x9e3779b97f4a7c15ull + 1;
        const char *leaf = strrchr(t->name, '.');
        leaf = leaf ? leaf + 1 : t->name;
        int norm = strstr(t->name, "norm") != NULL;
        if (!strcmp(t->name, "patch_embed.proj.weight") || !strcmp(t->name, "patch_embed.proj.bias")) {
            double bound = 1.0 / sqrt((double)c->channels * c->patch * c->patch);
            for (size_t j = 0; j < t->numel; j++) p[j] = (float)((2 * unif(&s) - 1) * bound);
        } else if (!strcmp(t->name, "cls_token") || !strcmp(t->name, "dist_token")) {
            for (size_t j = 0; j < t->numel; j++) p[j] = (float)(gauss(&s) * 1e-6);
        } else if (!strcmp(t->name, "pos_embed")) {
            fill_trunc(p, t->numel, 0.02, &s);
        } else if (norm && !strcmp(leaf, "weight")) {
            for (size_t j = 0; j < t->numel; j++) p[j] = 1.0f;
        } else if (!strcmp(leaf, "weight")) {
            fill_trunc(p, t->numel, 0.02, &s);
        } /* biases and norm shifts stay 0 */
    }
    *out = m;
    return VT_OK;
}

vt_status tr_load(const char *path, tr_model **out, char *err, size_t errlen)
{
    *out = NULL;
    vit_model *vm = NULL;
    vit_load_opts lo = {.keep_plain = 1};
    vt_status st = vit_load(path, &lo, &vm, err, errlen);
    if (st) return st;
    tr_model *m = NULL;
    if ((st = alloc_model(&vm->cfg, &m, err, errlen))) goto done;
    for (int s = 0; s < GP_COUNT; s++)
        if (m->gp[s]) memcpy(m->gp[s], vm->g[s], tr_find(m, vit_global_specs[s].name)->numel * sizeof(float));
    for (int b = 0; b < m->cfg.depth; b++)
        for (int s = 0; s < BP_COUNT; s++) {
            if (!m->bp[b][s]) continue;
            char name[96];
            snprintf(name, sizeof name, "blocks.%d.%s", b, vit_block_specs[s].name);
            memcpy(m->bp[b][s], vm->blocks[b].p[s], tr_find(m, name)->numel * sizeof(float));
        }
    if (vm->labels) st = tr_set_labels(m, (const char *const *)vm->labels, vm->cfg.classes);
done:
    vit_free(vm);
    if (st) tr_free(m);
    else *out = m;
    return st;
}

static void free_shards(tr_model *m)
{
    for (int k = 0; k < m->nshards; k++) {
        shard *s = &m->sh[k];
        for (int i = 0; i < s->nbufs; i++) free(s->bufs[i]);
        free(s->bufs);
        free(s->ba);
        gr_free(s->g);
        if (k) free(s->grads);
    }
    free(m->sh);
    m->sh = NULL;
    m->nshards = 0;
    m->max_batch = 0;
}

void tr_free(tr_model *m)
{
    if (!m) return;
    free_shards(m);
    tr_set_labels(m, NULL, 0);
    free(m->t);
    free(m->params);
    free(m->grads);
    free(m);
}

const vit_config *tr_config(const tr_model *m) { return &m->cfg; }
vit_config *tr_config_mut(tr_model *m) { return &m->cfg; }
int tr_tensor_count(const tr_model *m) { return m->nt; }
const tr_tensor *tr_tensor_at(const tr_model *m, int i) { return i >= 0 && i < m->nt ? &m->t[i] : NULL; }
size_t tr_numel(const tr_model *m) { return m->numel; }
float *tr_params(tr_model *m) { return m->params; }
float *tr_grads(tr_model *m) { return m->grads; }
float tr_lambda(const tr_model *m, int b) { return m->lambda[b]; }
gr_ctx *tr_ops(tr_model *m) { return m->nshards ? m->sh[0].g : NULL; }

const tr_tensor *tr_find(const tr_model *m, const char *name)
{
    for (int i = 0; i < m->nt; i++)
        if (!strcmp(m->t[i].name, name)) return &m->t[i];
    return NULL;
}

vt_status tr_set_labels(tr_model *m, const char *const *names, int k)
{
    if (m->labels)
        for (int i = 0; i < m->cfg.classes; i++) free(m->labels[i]);
    free(m->labels);
    m->labels = NULL;
    if (!names) return VT_OK;
    if (k != m->cfg.classes) return vt_err(NULL, 0, VT_EINVAL, "label count");
    if (!(m->labels = calloc((size_t)k, sizeof *m->labels))) return VT_ENOMEM;
    for (int i = 0; i < k; i++)
        if (!(m->labels[i] = strdup(names[i] ? names[i] : ""))) return VT_ENOMEM;
    return VT_OK;
}

const char *tr_label(const tr_model *m, int k)
{
    return m->labels && k >= 0 && k < m->cfg.classes ? m->labels[k] : NULL;
}

void tr_set_lambda(tr_model *m, uint64_t mask, float lambda)
{
    for (int b = 0; b < m->cfg.depth; b++)
        if ((mask >> b) & 1) m->lambda[b] = m->bp[b][BP_QKV_W] ? lambda : 0.0f;
}

/* ---- activations -------------------------------------------------------------------------- */

static float *abuf(shard *s, size_t n)
{
    float *p = vit_alloc(n * sizeof(float));
    if (p) s->bufs[s->nbufs++] = p;
    return p;
}

/* Activations of one shard for up to cap images. */
static int alloc_shard(tr_model *m, shard *s, int cap)
{
    const vit_config *c = &m->cfg;
    size_t B = (size_t)cap, M = B * m->N, D = (size_t)c->dim, F = (size_t)c->mlp_dim;
    size_t HNN = (size_t)c->heads * m->N * m->N, K = (size_t)c->classes, L = (size_t)c->depth;
    size_t BT = B * (size_t)m->T, BNp = B * (size_t)m->Np;
    if (!(s->bufs = calloc(L * 13 + 40, sizeof *s->bufs)) || !(s->ba = calloc(L, sizeof *s->ba))) return 0;
    int ok = 1;
    for (size_t l = 0; l < L; l++) {
        block_acts *a = &s->ba[l];
        ok &= !!(a->X = abuf(s, M * D));
        ok &= !!(a->H = abuf(s, M * D));
        ok &= !!(a->xn2 = abuf(s, M * D));
        ok &= !!(a->mu2 = abuf(s, M));
        ok &= !!(a->var2 = abuf(s, M));
        ok &= !!(a->u = abuf(s, M * F));
        ok &= !!(a->gl = abuf(s, M * F));
        if (m->bp[l][BP_QKV_W]) {
            ok &= !!(a->xn1 = abuf(s, M * D));
            ok &= !!(a->mu1 = abuf(s, M));
            ok &= !!(a->var1 = abuf(s, M));
            ok &= !!(a->qkv = abuf(s, M * 3 * D));
            ok &= !!(a->P = abuf(s, B * HNN));
            ok &= !!(a->o = abuf(s, M * D));
        }
    }
    ok &= !!(s->Xout = abuf(s, M * D));
    ok &= !!(s->cols = abuf(s, BNp * (size_t)m->cpp));
    ok &= !!(s->pout = abuf(s, BNp * D));
    ok &= !!(s->z = abuf(s, BT * D));
    ok &= !!(s->zn = abuf(s, BT * D));
    ok &= !!(s->muf = abuf(s, BT));
    ok &= !!(s->varf = abuf(s, BT));
    ok &= !!(s->lg[0] = abuf(s, B * K));
    ok &= !!(s->lg[1] = abuf(s, B * K));
    ok &= !!(s->dX = abuf(s, M * D));
    ok &= !!(s->dH = abuf(s, M * D));
    ok &= !!(s->dxn = abuf(s, M * D));
    ok &= !!(s->tmp = abuf(s, M * D));
    ok &= !!(s->dg = abuf(s, M * F));
    ok &= !!(s->du = abuf(s, M * F));
    ok &= !!(s->dqkv = abuf(s, M * 3 * D));
    ok &= !!(s->dP = abuf(s, B * HNN));
    ok &= !!(s->dS = abuf(s, B * HNN));
    ok &= !!(s->dO = abuf(s, M * D));
    ok &= !!(s->dz = abuf(s, BT * D));
    ok &= !!(s->dzn = abuf(s, BT * D));
    ok &= !!(s->dpout = abuf(s, BNp * D));
    ok &= !!(s->dlg = abuf(s, B * K));
    return ok;
}

vt_status tr_prepare(tr_model *m, int max_batch, int reference, char *err, size_t errlen)
{
    free_shards(m);
    const vit_config *c = &m->cfg;
    if (max_batch < 1) return vt_err(err, errlen, VT_EINVAL, "batch must be at least 1");
    m->N = vit_tokens(c);
    m->T = 1 + c->distilled;
    m->Np = m->N - m->T;
    m->cpp = c->channels * c->patch * c->patch;
    int ns = omp_get_max_threads();
    if (ns > max_batch) ns = max_batch;
    if (ns < 1) ns = 1;
    if (!(m->sh = calloc((size_t)ns, sizeof *m->sh))) return vt_err(err, errlen, VT_ENOMEM, "out of memory");
    m->nshards = ns;
    m->cap = (max_batch + ns - 1) / ns;
    for (int k = 0; k < ns; k++) {
        shard *s = &m->sh[k];
        vt_status st = gr_new(reference, &s->g, err, errlen);
        if (st) { free_shards(m); return st; }
        s->grads = k ? vit_alloc(m->numel * sizeof(float)) : m->grads;
        if (!s->grads || !alloc_shard(m, s, m->cap)) {
            free_shards(m);
            return vt_err(err, errlen, VT_ENOMEM, "out of memory for the activations of batch %d", max_batch);
        }
        if (k) memset(s->grads, 0, m->numel * sizeof(float));
    }
    m->max_batch = max_batch;
    return VT_OK;
}

/* ---- forward ------------------------------------------------------------------------------- */

#define TRY(call) do { vt_status s_ = (call); if (s_) return s_; } while (0)

/* The attention views of grad.h over a (M, 3D) qkv-shaped buffer at column offset off. */
static gr_view heads_view(const float *base, int B, int H, int N, int D, int width)
{
    int dh = D / H;
    return gr_view4(base, B, H, N, dh, (int64_t)N * width, dh, width, 1);
}

static gr_view heads_view_t(const float *base, int B, int H, int N, int D, int width)
{
    int dh = D / H;
    return gr_view4(base, B, H, dh, N, (int64_t)N * width, dh, 1, width);
}

static gr_view scores_view(const float *p, int B, int H, int N, int transposed)
{
    int64_t nn = (int64_t)N * N;
    return transposed ? gr_view4(p, B, H, N, N, H * nn, nn, 1, N) : gr_view4(p, B, H, N, N, H * nn, nn, N, 1);
}

static vt_status embed_fwd(tr_model *m, shard *sh, const float *images, char *err, size_t errlen)
{
    const vit_config *c = &m->cfg;
    int B = sh->B, D = c->dim, N = m->N, T = m->T, Np = m->Np;
    float *X = sh->ba[0].X;
    ref_im2col(images, sh->cols, B, c->channels, c->image_size, c->patch);
    TRY(gr_matmul(sh->g, gr_mat(sh->cols, (int64_t)B * Np, m->cpp), gr_t(m->gp[GP_PATCH_W], m->cpp, D),
                  m->gp[GP_PATCH_B], gr_mat(sh->pout, (int64_t)B * Np, D), 1.0f, 0, err, errlen));
    const float *pos = m->gp[GP_POS];
    for (int b = 0; b < B; b++) {
        float *xb = X + (size_t)b * N * D;
        for (int d = 0; d < D; d++) {
            xb[d] = m->gp[GP_CLS][d] + pos[d];
            if (T == 2) xb[D + d] = m->gp[GP_DIST][d] + pos[D + d];
        }
        for (int t = 0; t < Np; t++)
            for (int d = 0; d < D; d++)
                xb[(size_t)(T + t) * D + d] = sh->pout[((size_t)b * Np + t) * D + d] + pos[(size_t)(T + t) * D + d];
    }
    return VT_OK;
}

static vt_status block_fwd(tr_model *m, shard *sh, int l, const float *x, float *xout, char *err, size_t errlen)
{
    const vit_config *c = &m->cfg;
    block_acts *a = &sh->ba[l];
    float **w = m->bp[l];
    gr_ctx *g = sh->g;
    int B = sh->B, D = c->dim, F = c->mlp_dim, H = c->heads, N = m->N;
    int64_t M = (int64_t)B * N;
    size_t n = (size_t)M * D;
    float lam = m->lambda[l];
    if (lam > 0) {
        float scale = 1.0f / sqrtf((float)(D / H));
        TRY(gr_ln_fwd(g, (int)M, D, c->ln_eps, x, w[BP_LN1_G], w[BP_LN1_B], a->xn1, a->mu1, a->var1, err, errlen));
        TRY(gr_matmul(g, gr_mat(a->xn1, M, D), gr_t(w[BP_QKV_W], D, 3 * D), w[BP_QKV_B],
                      gr_mat(a->qkv, M, 3 * D), 1.0f, 0, err, errlen));
        TRY(gr_matmul(g, heads_view(a->qkv, B, H, N, D, 3 * D), heads_view_t(a->qkv + D, B, H, N, D, 3 * D),
                      NULL, scores_view(a->P, B, H, N, 0), scale, 0, err, errlen));
        TRY(gr_softmax_fwd(g, (int64_t)B * H * N, N, a->P, err, errlen));
        TRY(gr_matmul(g, scores_view(a->P, B, H, N, 0), heads_view(a->qkv + 2 * D, B, H, N, D, 3 * D), NULL,
                      heads_view(a->o, B, H, N, D, D), 1.0f, 0, err, errlen));
        TRY(gr_matmul(g, gr_mat(a->o, M, D), gr_t(w[BP_PROJ_W], D, D), w[BP_PROJ_B], gr_mat(sh->tmp, M, D),
                      1.0f, 0, err, errlen));
        /* METHOD.md section 4: h = (2 - lambda) x + lambda Attn(LN1 x); lambda = 1 is x + Attn */
        float cx = 2.0f - lam, *h = a->H, *t = sh->tmp;
        for (size_t i = 0; i < n; i++) {
            float v = cx * x[i] + lam * t[i];
            h[i] = v;
            xout[i] = v;
        }
    } else {
        /* section 2: the removed path, y = 2x */
        float *h = a->H;
        for (size_t i = 0; i < n; i++) {
            h[i] = 2.0f * x[i];
            xout[i] = h[i];
        }
    }
    TRY(gr_ln_fwd(g, (int)M, D, c->ln_eps, a->H, w[BP_LN2_G], w[BP_LN2_B], a->xn2, a->mu2, a->var2, err, errlen));
    TRY(gr_matmul(g, gr_mat(a->xn2, M, D), gr_t(w[BP_FC1_W], D, F), w[BP_FC1_B], gr_mat(a->u, M, F),
                  1.0f, 0, err, errlen));
    TRY(gr_gelu_fwd(g, (size_t)M * F, a->u, a->gl, err, errlen));
    /* x_out = h + fc2(GELU(u)): xout already holds h, the matmul adds onto it */
    TRY(gr_matmul(g, gr_mat(a->gl, M, F), gr_t(w[BP_FC2_W], F, D), w[BP_FC2_B], gr_mat(xout, M, D),
                  1.0f, 1, err, errlen));
    return VT_OK;
}

/* A (B, D) view of token t of each image in a (B*T, D) buffer. */
static gr_view token_rows(const float *p, int B, int T, int D, int t)
{
    gr_view v = {(float *)p + (size_t)t * D, 2, {B, D, 1, 1}, {(int64_t)T * D, 1, 0, 0}};
    return v;
}

static vt_status shard_forward(tr_model *m, shard *sh, const float *images, float *logits, char *err, size_t errlen)
{
    const vit_config *c = &m->cfg;
    int B = sh->B, D = c->dim, N = m->N, T = m->T, K = c->classes, L = c->depth;
    TRY(embed_fwd(m, sh, images, err, errlen));
    for (int l = 0; l < L; l++)
        TRY(block_fwd(m, sh, l, sh->ba[l].X, l + 1 < L ? sh->ba[l + 1].X : sh->Xout, err, errlen));
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            memcpy(sh->z + ((size_t)b * T + t) * D, sh->Xout + ((size_t)b * N + t) * D, (size_t)D * sizeof(float));
    TRY(gr_ln_fwd(sh->g, B * T, D, c->ln_eps, sh->z, m->gp[GP_NORM_G], m->gp[GP_NORM_B], sh->zn, sh->muf, sh->varf,
                  err, errlen));
    static const int ws[2] = {GP_HEAD_W, GP_HEADD_W}, bs[2] = {GP_HEAD_B, GP_HEADD_B};
    for (int t = 0; t < T; t++)
        TRY(gr_matmul(sh->g, token_rows(sh->zn, B, T, D, t), gr_t(m->gp[ws[t]], D, K), m->gp[bs[t]],
                      gr_mat(sh->lg[t], B, K), 1.0f, 0, err, errlen));
    for (size_t i = 0; i < (size_t)B * K; i++)
        logits[i] = T == 2 ? (sh->lg[0][i] + sh->lg[1][i]) * 0.5f : sh->lg[0][i];
    return VT_OK;
}

/* Runs fn on every shard with images, one thread each; the first error wins. */
typedef vt_status (*shard_fn)(tr_model *m, shard *sh, const float *in, float *out, char *err, size_t errlen);

static vt_status run_shards(tr_model *m, shard_fn fn, const float *in, size_t in_per, float *out, size_t out_per,
                            char *err, size_t errlen)
{
    int ns = m->nshards;
    #pragma omp parallel for num_threads(ns) schedule(static, 1)
    for (int k = 0; k < ns; k++) {
        shard *sh = &m->sh[k];
        /* oneDNN sizes its work (and per-thread reduction buffers) by the calling thread's
         * OpenMP team size when a primitive is created and run: make it 1 here, consistently */
        omp_set_num_threads(1);
        sh->st = sh->B ? fn(m, sh, in + (size_t)sh->b0 * in_per, out ? out + (size_t)sh->b0 * out_per : NULL,
                            sh->err, sizeof sh->err)
                       : VT_OK;
    }
    for (int k = 0; k < ns; k++)
        if (m->sh[k].st) return vt_err(err, errlen, m->sh[k].st, "%s", m->sh[k].err);
    return VT_OK;
}

vt_status tr_forward(tr_model *m, const float *images, int B, float *logits, char *err, size_t errlen)
{
    const vit_config *c = &m->cfg;
    if (!m->nshards) return vt_err(err, errlen, VT_EINVAL, "tr_forward before tr_prepare");
    if (B < 1 || B > m->max_batch) return vt_err(err, errlen, VT_EINVAL, "batch %d is outside 1..%d", B, m->max_batch);
    /* contiguous shards whose sizes differ by at most one */
    int ns = m->nshards, b0 = 0;
    for (int k = 0; k < ns; k++) {
        int n = B / ns + (k < B % ns);
        m->sh[k].b0 = b0;
        m->sh[k].B = n;
        b0 += n;
    }
    return run_shards(m, shard_forward, images, (size_t)c->channels * c->image_size * c->image_size, logits,
                      (size_t)c->classes, err, errlen);
}

/* ---- backward ------------------------------------------------------------------------------ */

/* dX holds dL/d(block output) on entry and dL/d(block input) on return. */
static vt_status block_bwd(tr_model *m, shard *sh, int l, char *err, size_t errlen)
{
    const vit_config *c = &m->cfg;
    block_acts *a = &sh->ba[l];
    float **w = m->bp[l], *gw[BP_COUNT];
    for (int k = 0; k < BP_COUNT; k++) gw[k] = GRAD(m, sh, w[k]);
    gr_ctx *g = sh->g;
    int B = sh->B, D = c->dim, F = c->mlp_dim, H = c->heads, N = m->N;
    int64_t M = (int64_t)B * N;
    size_t n = (size_t)M * D;
    float lam = m->lambda[l], *dX = sh->dX, *dH = sh->dH;
    /* x_out = h + fc2(g), g = GELU(u), u = fc1(LN2(h)) */
    TRY(gr_matmul(g, gr_t(dX, D, M), gr_mat(a->gl, M, F), NULL, gr_mat(gw[BP_FC2_W], D, F), 1.0f, 0, err, errlen));
    TRY(gr_colsum(g, M, D, dX, gw[BP_FC2_B], err, errlen));
    TRY(gr_matmul(g, gr_mat(dX, M, D), gr_mat(w[BP_FC2_W], D, F), NULL, gr_mat(sh->dg, M, F), 1.0f, 0, err, errlen));
    TRY(gr_gelu_bwd(g, (size_t)M * F, a->u, sh->dg, sh->du, err, errlen));
    TRY(gr_matmul(g, gr_t(sh->du, F, M), gr_mat(a->xn2, M, D), NULL, gr_mat(gw[BP_FC1_W], F, D), 1.0f, 0, err, errlen));
    TRY(gr_colsum(g, M, F, sh->du, gw[BP_FC1_B], err, errlen));
    TRY(gr_matmul(g, gr_mat(sh->du, M, F), gr_mat(w[BP_FC1_W], F, D), NULL, gr_mat(sh->dxn, M, D), 1.0f, 0, err, errlen));
    TRY(gr_ln_bwd(g, (int)M, D, c->ln_eps, a->H, w[BP_LN2_G], a->mu2, a->var2, sh->dxn, dH, gw[BP_LN2_G],
                  gw[BP_LN2_B], err, errlen));
    for (size_t i = 0; i < n; i++) dH[i] += dX[i];
    if (lam > 0) {
        float scale = 1.0f / sqrtf((float)(D / H)), *dA = sh->tmp;
        for (size_t i = 0; i < n; i++) dA[i] = lam * dH[i];
        TRY(gr_matmul(g, gr_t(dA, D, M), gr_mat(a->o, M, D), NULL, gr_mat(gw[BP_PROJ_W], D, D), 1.0f, 0, err, errlen));
        TRY(gr_colsum(g, M, D, dA, gw[BP_PROJ_B], err, errlen));
        TRY(gr_matmul(g, gr_mat(dA, M, D), gr_mat(w[BP_PROJ_W], D, D), NULL, gr_mat(sh->dO, M, D), 1.0f, 0, err, errlen));
        /* o = P V, P = softmax(scale Q K^T) per image and head */
        gr_view dOv = heads_view(sh->dO, B, H, N, D, D);
        TRY(gr_matmul(g, dOv, heads_view_t(a->qkv + 2 * D, B, H, N, D, 3 * D), NULL, scores_view(sh->dP, B, H, N, 0),
                      1.0f, 0, err, errlen));
        TRY(gr_matmul(g, scores_view(a->P, B, H, N, 1), dOv, NULL, heads_view(sh->dqkv + 2 * D, B, H, N, D, 3 * D),
                      1.0f, 0, err, errlen));
        TRY(gr_softmax_bwd(g, (int64_t)B * H * N, N, a->P, sh->dP, sh->dS, err, errlen));
        TRY(gr_matmul(g, scores_view(sh->dS, B, H, N, 0), heads_view(a->qkv + D, B, H, N, D, 3 * D), NULL,
                      heads_view(sh->dqkv, B, H, N, D, 3 * D), scale, 0, err, errlen));
        TRY(gr_matmul(g, scores_view(sh->dS, B, H, N, 1), heads_view(a->qkv, B, H, N, D, 3 * D), NULL,
                      heads_view(sh->dqkv + D, B, H, N, D, 3 * D), scale, 0, err, errlen));
        TRY(gr_matmul(g, gr_t(sh->dqkv, 3 * D, M), gr_mat(a->xn1, M, D), NULL, gr_mat(gw[BP_QKV_W], 3 * D, D),
                      1.0f, 0, err, errlen));
        TRY(gr_colsum(g, M, 3 * D, sh->dqkv, gw[BP_QKV_B], err, errlen));
        TRY(gr_matmul(g, gr_mat(sh->dqkv, M, 3 * D), gr_mat(w[BP_QKV_W], 3 * D, D), NULL, gr_mat(sh->dxn, M, D),
                      1.0f, 0, err, errlen));
        TRY(gr_ln_bwd(g, (int)M, D, c->ln_eps, a->X, w[BP_LN1_G], a->mu1, a->var1, sh->dxn, dX, gw[BP_LN1_G],
                      gw[BP_LN1_B], err, errlen));
        float cx = 2.0f - lam;
        for (size_t i = 0; i < n; i++) dX[i] += cx * dH[i];
    } else {
        for (size_t i = 0; i < n; i++) dX[i] = 2.0f * dH[i];
        if (w[BP_QKV_W]) {
            size_t DD = (size_t)D * D;
            memset(gw[BP_LN1_G], 0, D * sizeof(float));
            memset(gw[BP_LN1_B], 0, D * sizeof(float));
            memset(gw[BP_QKV_W], 0, 3 * DD * sizeof(float));
            memset(gw[BP_QKV_B], 0, 3 * (size_t)D * sizeof(float));
            memset(gw[BP_PROJ_W], 0, DD * sizeof(float));
            memset(gw[BP_PROJ_B], 0, D * sizeof(float));
        }
    }
    return VT_OK;
}

static vt_status shard_backward(tr_model *m, shard *sh, const float *dlogits, float *unused, char *err, size_t errlen)
{
    (void)unused;
    const vit_config *c = &m->cfg;
    gr_ctx *g = sh->g;
    int B = sh->B, D = c->dim, N = m->N, T = m->T, K = c->classes, L = c->depth, Np = m->Np;
    float *gg[GP_COUNT];
    for (int k = 0; k < GP_COUNT; k++) gg[k] = GRAD(m, sh, m->gp[k]);
    /* logits = head(z_0) (T = 1) or (head(z_0) + head_dist(z_1)) / 2 */
    float hs = T == 2 ? 0.5f : 1.0f;
    for (size_t i = 0; i < (size_t)B * K; i++) sh->dlg[i] = dlogits[i] * hs;
    static const int ws[2] = {GP_HEAD_W, GP_HEADD_W}, bs[2] = {GP_HEAD_B, GP_HEADD_B};
    for (int t = 0; t < T; t++) {
        TRY(gr_matmul(g, gr_t(sh->dlg, K, B), token_rows(sh->zn, B, T, D, t), NULL, gr_mat(gg[ws[t]], K, D),
                      1.0f, 0, err, errlen));
        TRY(gr_colsum(g, B, K, sh->dlg, gg[bs[t]], err, errlen));
        TRY(gr_matmul(g, gr_mat(sh->dlg, B, K), gr_mat(m->gp[ws[t]], K, D), NULL, token_rows(sh->dzn, B, T, D, t),
                      1.0f, 0, err, errlen));
    }
    TRY(gr_ln_bwd(g, B * T, D, c->ln_eps, sh->z, m->gp[GP_NORM_G], sh->muf, sh->varf, sh->dzn, sh->dz,
                  gg[GP_NORM_G], gg[GP_NORM_B], err, errlen));
    memset(sh->dX, 0, (size_t)B * N * D * sizeof(float));
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            memcpy(sh->dX + ((size_t)b * N + t) * D, sh->dz + ((size_t)b * T + t) * D, (size_t)D * sizeof(float));
    for (int l = L - 1; l >= 0; l--) TRY(block_bwd(m, sh, l, err, errlen));
    /* x0 = [cls, (dist), patches] + pos */
    TRY(gr_colsum(g, B, (int64_t)N * D, sh->dX, gg[GP_POS], err, errlen));
    memcpy(gg[GP_CLS], gg[GP_POS], (size_t)D * sizeof(float));
    if (T == 2) memcpy(gg[GP_DIST], gg[GP_POS] + D, (size_t)D * sizeof(float));
    for (int b = 0; b < B; b++)
        memcpy(sh->dpout + (size_t)b * Np * D, sh->dX + ((size_t)b * N + T) * D, (size_t)Np * D * sizeof(float));
    TRY(gr_matmul(g, gr_t(sh->dpout, D, (int64_t)B * Np), gr_mat(sh->cols, (int64_t)B * Np, m->cpp), NULL,
                  gr_mat(gg[GP_PATCH_W], D, m->cpp), 1.0f, 0, err, errlen));
    TRY(gr_colsum(g, (int64_t)B * Np, D, sh->dpout, gg[GP_PATCH_B], err, errlen));
    return VT_OK;
}

vt_status tr_backward(tr_model *m, const float *dlogits, char *err, size_t errlen)
{
    if (!m->nshards || !m->sh[0].B) return vt_err(err, errlen, VT_EINVAL, "tr_backward without a forward pass");
    vt_status st = run_shards(m, shard_backward, dlogits, (size_t)m->cfg.classes, NULL, 0, err, errlen);
    if (st) return st;
    /* the model's gradient (shard 0's buffer) += the other shards', in shard order */
    int ns = 0;
    for (int k = 1; k < m->nshards; k++) ns += m->sh[k].B > 0;
    if (ns) {
        float *g0 = m->grads;
        #pragma omp parallel for
        for (size_t i = 0; i < m->numel; i++) {
            float v = g0[i];
            for (int k = 1; k < m->nshards; k++)
                if (m->sh[k].B) v += m->sh[k].grads[i];
            g0[i] = v;
        }
    }
    return VT_OK;
}

/* ---- checkpoints ------------------------------------------------------------------------------ */

static const char *arch_name(const vit_config *c, char *buf, size_t n)
{
    const char *size = c->dim == 192 ? "tiny" : c->dim == 384 ? "small" : c->dim == 768 ? "base" : NULL;
    if (size && c->depth == 12 && c->heads == c->dim / 64 && c->mlp_dim == 4 * c->dim && c->channels == 3)
        snprintf(buf, n, "deit_%s%s_patch%d_%d", size, c->distilled ? "_distilled" : "", c->patch, c->image_size);
    else
        snprintf(buf, n, "vit_d%d_l%d_h%d_patch%d_%d", c->dim, c->depth, c->heads, c->patch, c->image_size);
    return buf;
}

/* A float as the shortest decimal that reads back to it (0.286f, not 0.286000013). */
static double f2d(float v)
{
    char b[32];
    snprintf(b, sizeof b, "%.7g", v);
    return strtod(b, NULL);
}

/* The vitd.config JSON (timm config.json shape plus removed_blocks and label_names). */
static char *config_json(const tr_model *m, uint64_t removed)
{
    const vit_config *c = &m->cfg;
    char name[96];
    json_t *root = json_object(), *args = json_object(), *pre = json_object();
    json_t *isz = json_array(), *mean = json_array(), *std = json_array(), *rm = json_array();
    json_object_set_new(root, "architecture", json_string(arch_name(c, name, sizeof name)));
    json_object_set_new(root, "num_classes", json_integer(c->classes));
    json_object_set_new(root, "num_features", json_integer(c->dim));
    json_object_set_new(root, "global_pool", json_string("token"));
    json_object_set_new(args, "img_size", json_integer(c->image_size));
    json_object_set_new(args, "patch_size", json_integer(c->patch));
    json_object_set_new(args, "in_chans", json_integer(c->channels));
    json_object_set_new(args, "embed_dim", json_integer(c->dim));
    json_object_set_new(args, "depth", json_integer(c->depth));
    json_object_set_new(args, "num_heads", json_integer(c->heads));
    json_object_set_new(args, "mlp_ratio", json_real((double)c->mlp_dim / c->dim));
    json_object_set_new(args, "num_classes", json_integer(c->classes));
    if (c->distilled) json_object_set_new(args, "distilled", json_true());
    json_object_set_new(root, "model_args", args);
    json_array_append_new(isz, json_integer(c->channels));
    json_array_append_new(isz, json_integer(c->image_size));
    json_array_append_new(isz, json_integer(c->image_size));
    json_object_set_new(pre, "input_size", isz);
    json_object_set_new(pre, "interpolation", json_string(c->interp == IMG_BILINEAR ? "bilinear" : "bicubic"));
    json_object_set_new(pre, "crop_pct", json_real(f2d(c->crop_pct)));
    json_object_set_new(pre, "crop_mode", json_string("center"));
    int nc = c->channels < 3 ? c->channels : 3;
    for (int i = 0; i < nc; i++) {
        json_array_append_new(mean, json_real(f2d(c->mean[i])));
        json_array_append_new(std, json_real(f2d(c->std[i])));
    }
    json_object_set_new(pre, "mean", mean);
    json_object_set_new(pre, "std", std);
    json_object_set_new(pre, "num_classes", json_integer(c->classes));
    json_object_set_new(root, "pretrained_cfg", pre);
    if (m->labels) {
        json_t *lab = json_array();
        for (int k = 0; k < c->classes; k++) json_array_append_new(lab, json_string(m->labels[k]));
        json_object_set_new(root, "label_names", lab);
    }
    for (int b = 0; b < c->depth; b++)
        if ((removed >> b) & 1) json_array_append_new(rm, json_integer(b));
    json_object_set_new(root, "removed_blocks", rm);
    char *s = json_dumps(root, JSON_COMPACT | JSON_REAL_PRECISION(9));
    json_decref(root);
    return s;
}

static void blocks_str(char *buf, size_t n, uint64_t mask, int depth)
{
    size_t k = 0;
    buf[0] = '\0';
    for (int b = 0; b < depth && k < n; b++)
        if ((mask >> b) & 1) k += (size_t)snprintf(buf + k, n - k, "%s%d", k ? "," : "", b);
}

static vt_status add_meta(st_writer *w, const tr_model *m, uint64_t removed)
{
    char *cj = config_json(m, removed);
    char rm[256];
    blocks_str(rm, sizeof rm, removed, m->cfg.depth);
    vt_status st = cj ? st_writer_meta(w, "vitd.config", cj) : VT_ENOMEM;
    if (!st) st = st_writer_meta(w, "vitd.removed_blocks", rm);
    free(cj);
    return st;
}

vt_status tr_save_model(const tr_model *m, const char *path, uint64_t remove, char *err, size_t errlen)
{
    uint64_t removed = remove | m->cfg.removed;
    if (m->cfg.depth < 64) removed &= (1ull << m->cfg.depth) - 1;
    st_writer *w = st_writer_new();
    if (!w) return vt_err(err, errlen, VT_ENOMEM, "out of memory");
    vt_status st = VT_OK;
    for (int i = 0; i < m->nt && !st; i++) {
        const tr_tensor *t = &m->t[i];
        if (t->attn && ((removed >> t->block) & 1)) continue;
        st = st_writer_add_f32(w, t->name, m->params + t->offset, t->ndim, t->shape);
    }
    if (!st) st = add_meta(w, m, removed);
    if (st) vt_err(err, errlen, st, "out of memory building %s", path);
    else st = st_writer_save(w, path, err, errlen);
    st_writer_free(w);
    return st;
}

static void arch_str(const vit_config *c, char *buf, size_t n)
{
    char rm[256];
    blocks_str(rm, sizeof rm, c->removed, c->depth);
    for (char *p = rm; *p; p++) if (*p == ',') *p = '+';
    snprintf(buf, n, "img=%d,patch=%d,chans=%d,dim=%d,depth=%d,heads=%d,mlp=%d,classes=%d,distilled=%d%s%s",
             c->image_size, c->patch, c->channels, c->dim, c->depth, c->heads, c->mlp_dim, c->classes, c->distilled,
             rm[0] ? ",removed=" : "", rm);
}

vt_status tr_save_state(const tr_model *m, const char *path, const char *train_json, int n_extra,
                        const char *const *extra_names, const float *const *extra, char *err, size_t errlen)
{
    st_writer *w = st_writer_new();
    if (!w) return vt_err(err, errlen, VT_ENOMEM, "out of memory");
    char name[160], arch[512];
    vt_status st = VT_OK;
    for (int k = -1; k < n_extra && !st; k++) {
        const float *buf = k < 0 ? m->params : extra[k];
        for (int i = 0; i < m->nt && !st; i++) {
            snprintf(name, sizeof name, "%s/%s", k < 0 ? "param" : extra_names[k], m->t[i].name);
            st = st_writer_add_f32(w, name, buf + m->t[i].offset, m->t[i].ndim, m->t[i].shape);
        }
    }
    arch_str(&m->cfg, arch, sizeof arch);
    if (!st) st = add_meta(w, m, m->cfg.removed);
    if (!st) st = st_writer_meta(w, "vitd.arch", arch);
    if (!st && train_json) st = st_writer_meta(w, "vitd.train", train_json);
    if (st) vt_err(err, errlen, st, "out of memory building %s", path);
    else st = st_writer_save(w, path, err, errlen);
    st_writer_free(w);
    return st;
}

/* Preprocessing and labels from a vitd.config JSON (the architecture comes from vitd.arch). */
static vt_status apply_state_config(tr_model *m, const char *js, char *err, size_t errlen)
{
    json_error_t je;
    json_t *root = json_loads(js, 0, &je);
    if (!root) return vt_err(err, errlen, VT_EFORMAT, "state: vitd.config is not JSON: %s", je.text);
    vit_config *c = &m->cfg;
    json_t *pre = json_object_get(root, "pretrained_cfg");
    json_t *v;
    vt_status st = VT_OK;
    if ((v = json_object_get(pre, "crop_pct")) && json_is_number(v)) c->crop_pct = (float)json_number_value(v);
    if ((v = json_object_get(pre, "interpolation")) && json_is_string(v))
        c->interp = strcmp(json_string_value(v), "bilinear") ? IMG_BICUBIC : IMG_BILINEAR;
    json_t *mean = json_object_get(pre, "mean"), *std = json_object_get(pre, "std");
    for (int i = 0; i < 3; i++) {
        if (json_is_array(mean) && (size_t)i < json_array_size(mean)) c->mean[i] = (float)json_number_value(json_array_get(mean, (size_t)i));
        if (json_is_array(std) && (size_t)i < json_array_size(std)) c->std[i] = (float)json_number_value(json_array_get(std, (size_t)i));
    }
    json_t *lab = json_object_get(root, "label_names");
    if (json_is_array(lab) && json_array_size(lab) == (size_t)c->classes) {
        const char **names = calloc((size_t)c->classes, sizeof *names);
        if (!names) st = VT_ENOMEM;
        for (int k = 0; names && k < c->classes; k++) names[k] = json_string_value(json_array_get(lab, (size_t)k));
        if (names) st = tr_set_labels(m, names, c->classes);
        free(names);
    }
    json_decref(root);
    return st;
}

vt_status tr_load_state(const char *path, tr_model **out, char **train_json, int n_extra,
                        const char *const *extra_names, float **extra, char *err, size_t errlen)
{
    *out = NULL;
    if (train_json) *train_json = NULL;
    for (int k = 0; k < n_extra; k++) extra[k] = NULL;
    st_file *f = NULL;
    tr_model *m = NULL;
    vt_status st = st_open(path, &f, err, errlen);
    if (st) return st;
    const char *arch = st_meta(f, "vitd.arch"), *cj = st_meta(f, "vitd.config");
    if (!arch || !cj) { st = vt_err(err, errlen, VT_EFORMAT, "%s: not a vitd training state (no vitd.arch)", path); goto fail; }
    vit_config c;
    memset(&c, 0, sizeof c);
    c.ln_eps = 1e-6f;
    c.crop_pct = 1.0f;
    if ((st = tr_arch_parse(arch, &c, err, errlen)) || (st = alloc_model(&c, &m, err, errlen)) ||
        (st = apply_state_config(m, cj, err, errlen)))
        goto fail;
    char name[160];
    for (int k = -1; k < n_extra; k++) {
        float *buf = m->params;
        if (k >= 0) {
            snprintf(name, sizeof name, "%s/%s", extra_names[k], m->t[0].name);
            if (!st_find(f, name)) continue;
            if (!(buf = extra[k] = vit_alloc(m->numel * sizeof(float)))) { st = vt_err(err, errlen, VT_ENOMEM, "out of memory"); goto fail; }
            memset(buf, 0, m->numel * sizeof(float));
        }
        for (int i = 0; i < m->nt; i++) {
            const tr_tensor *t = &m->t[i];
            snprintf(name, sizeof name, "%s/%s", k < 0 ? "param" : extra_names[k], t->name);
            const st_tensor *s = st_find(f, name);
            if (!s || s->numel != t->numel) { st = vt_err(err, errlen, VT_ESHAPE, "%s: tensor '%s' is missing or misshapen", path, name); goto fail; }
            if ((st = st_read_f32(f, s, buf + t->offset, t->numel, err, errlen))) goto fail;
        }
    }
    const char *tj = st_meta(f, "vitd.train");
    if (train_json && tj && !(*train_json = strdup(tj))) { st = vt_err(err, errlen, VT_ENOMEM, "out of memory"); goto fail; }
    st_close(f);
    *out = m;
    return VT_OK;
fail:
    for (int k = 0; k < n_extra; k++) { free(extra[k]); extra[k] = NULL; }
    if (train_json) { free(*train_json); *train_json = NULL; }
    tr_free(m);
    st_close(f);
    return st;
}

/* ---- architecture specs ---------------------------------------------------------------------- */

typedef struct { const char *name; int img, patch, chans, dim, depth, heads, mlp, classes; } preset;
static const preset presets[] = {
    {"deit-tiny", 224, 16, 3, 192, 12, 3, 768, 1000},
    {"deit-small", 224, 16, 3, 384, 12, 6, 1536, 1000},
    {"deit-base", 224, 16, 3, 768, 12, 12, 3072, 1000},
    /* vitd's default model (models/fashion-vit/MODEL_CARD.md) */
    {"fashion", 28, 7, 1, 64, 12, 4, 256, 10},
};

vt_status tr_arch_parse(const char *spec, vit_config *c, char *err, size_t errlen)
{
    char buf[512];
    snprintf(buf, sizeof buf, "%s", spec);
    char *save = NULL;
    int first = 1;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save), first = 0) {
        char *eq = strchr(tok, '=');
        if (!eq) {
            size_t i;
            for (i = 0; i < sizeof presets / sizeof *presets; i++)
                if (!strcmp(tok, presets[i].name)) break;
            if (!first || i == sizeof presets / sizeof *presets)
                return vt_err(err, errlen, VT_EINVAL, "architecture '%s': unknown preset '%s' (deit-tiny, deit-small, deit-base, fashion)", spec, tok);
            const preset *p = &presets[i];
            c->image_size = p->img; c->patch = p->patch; c->channels = p->chans; c->dim = p->dim;
            c->depth = p->depth; c->heads = p->heads; c->mlp_dim = p->mlp; c->classes = p->classes;
            continue;
        }
        *eq = '\0';
        const char *k = tok, *v = eq + 1;
        if (!strcmp(k, "removed")) {
            uint64_t mask = 0;
            for (const char *p = v; *p;) {
                char *end;
                long b = strtol(p, &end, 10);
                if (end == p || b < 0 || b >= VIT_MAX_DEPTH) return vt_err(err, errlen, VT_EINVAL, "architecture: bad removed list '%s'", v);
                mask |= 1ull << b;
                p = *end == '+' ? end + 1 : end;
                if (*end && *end != '+') return vt_err(err, errlen, VT_EINVAL, "architecture: bad removed list '%s'", v);
            }
            c->removed = mask;
            continue;
        }
        char *end;
        long n = strtol(v, &end, 10);
        if (end == v || *end || n < 0 || n > 1000000)
            return vt_err(err, errlen, VT_EINVAL, "architecture: '%s=%s' is not a number", k, v);
        int iv = (int)n;
        if (!strcmp(k, "img")) c->image_size = iv;
        else if (!strcmp(k, "patch")) c->patch = iv;
        else if (!strcmp(k, "chans")) c->channels = iv;
        else if (!strcmp(k, "dim")) c->dim = iv;
        else if (!strcmp(k, "depth")) c->depth = iv;
        else if (!strcmp(k, "heads")) c->heads = iv;
        else if (!strcmp(k, "mlp")) c->mlp_dim = iv;
        else if (!strcmp(k, "classes")) c->classes = iv;
        else if (!strcmp(k, "distilled")) c->distilled = iv != 0;
        else return vt_err(err, errlen, VT_EINVAL, "architecture: unknown key '%s' (img, patch, chans, dim, depth, heads, mlp, classes, distilled)", k);
    }
    return VT_OK;
}
