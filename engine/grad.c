/* grad.c - forward and backward ops of training on oneDNN 2.6, and their C references
 * (see grad.h).
 *
 * oneDNN side: every call looks its primitive up in a small cache keyed by the op and its
 * exact shapes and strides (a training step uses a few dozen distinct ones), so primitives
 * are built once and reused; memory objects are created with the primitive and re-pointed
 * at the caller's buffers on each call. Backward primitives (LayerNorm, GELU, softmax) are
 * built with their forward primitive descriptor as the hint oneDNN requires.
 * Reference side: naive loops, double accumulation, OpenMP over independent rows only, so
 * results do not depend on the thread count.
 */
#include "grad.h"

#include <dnnl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ops.h"

enum { K_MATMUL, K_LN_F_UNUSED, K_LN_B_UNUSED, K_GELU_F, K_GELU_B, K_SM_F, K_SM_B };
enum { MAXMEM = 10 };

typedef struct {
    int kind, nd, bias, accumulate;
    float alpha, eps;
    int64_t d[3][4], s[3][4];   /* matmul: A, B, C views; others: d[0][0..1] = rows, width */
} key;

typedef struct {
    key k;
    dnnl_primitive_t prim;
    dnnl_memory_t mem[MAXMEM];
    int arg[MAXMEM], nmem;
    size_t scratch_bytes;
    dnnl_memory_t scratch;
    char impl[64];
    double seconds;           /* time spent executing (profiling) */
    long calls;
} entry;

struct gr_ctx {
    int reference;
    dnnl_stream_t stream;
    entry *e;
    int n, cap;
    void *scratch;
    size_t scratch_cap;
    float *ones;
    int64_t ones_n;
};

/* ---- views ------------------------------------------------------------------------------ */

gr_view gr_mat(const float *p, int64_t rows, int64_t cols)
{
    gr_view v = {(float *)p, 2, {rows, cols, 1, 1}, {cols, 1, 0, 0}};
    return v;
}

gr_view gr_t(const float *p, int64_t rows, int64_t cols)
{
    gr_view v = {(float *)p, 2, {rows, cols, 1, 1}, {1, rows, 0, 0}};
    return v;
}

gr_view gr_view4(const float *p, int64_t d0, int64_t d1, int64_t d2, int64_t d3,
                 int64_t s0, int64_t s1, int64_t s2, int64_t s3)
{
    gr_view v = {(float *)p, 4, {d0, d1, d2, d3}, {s0, s1, s2, s3}};
    return v;
}

/* ---- context ---------------------------------------------------------------------------- */

vt_status gr_new(int reference, gr_ctx **out, char *err, size_t errlen)
{
    *out = NULL;
    gr_ctx *g = calloc(1, sizeof *g);
    if (!g) return vt_err(err, errlen, VT_ENOMEM, "out of memory");
    g->reference = reference;
    if (!reference) {
        if (!op_engine() ||
            dnnl_stream_create(&g->stream, op_engine(), dnnl_stream_default_flags) != dnnl_success) {
            free(g);
            return vt_err(err, errlen, VT_EDNNL, "oneDNN could not create a CPU stream");
        }
    }
    *out = g;
    return VT_OK;
}

static void entry_free(entry *e)
{
    if (e->prim) dnnl_primitive_destroy(e->prim);
    for (int i = 0; i < e->nmem; i++)
        if (e->mem[i]) dnnl_memory_destroy(e->mem[i]);
    if (e->scratch) dnnl_memory_destroy(e->scratch);
}

void gr_free(gr_ctx *g)
{
    if (!g) return;
    for (int i = 0; i < g->n; i++) entry_free(&g->e[i]);
    free(g->e);
    if (g->stream) dnnl_stream_destroy(g->stream);
    free(g->scratch);
    free(g->ones);
    free(g);
}

int gr_is_reference(const gr_ctx *g) { return g->reference; }
int gr_prim_count(const gr_ctx *g) { return g->n; }
const char *gr_prim_impl(const gr_ctx *g, int i) { return i >= 0 && i < g->n ? g->e[i].impl : NULL; }

static const char *const kind_names[] = {"matmul", "layernorm fwd", "layernorm bwd", "gelu fwd", "gelu bwd",
                                         "softmax fwd", "softmax bwd"};

void gr_prim_stats(const gr_ctx *g, int i, char *desc, size_t n, long *calls, double *seconds)
{
    const entry *e = &g->e[i];
    const key *k = &e->k;
    if (k->kind == K_MATMUL) {
        int r = k->nd == 4 ? 2 : 0;
        snprintf(desc, n, "matmul %s%lldx%lldx%lld%s (%s)", k->nd == 4 ? "batched " : "", (long long)k->d[2][r],
                 (long long)k->d[0][r + 1], (long long)k->d[2][r + 1], k->nd == 4 ? "" : "", e->impl);
    } else {
        snprintf(desc, n, "%s %lldx%lld (%s)", kind_names[k->kind], (long long)k->d[0][0], (long long)k->d[0][1], e->impl);
    }
    *calls = e->calls;
    *seconds = e->seconds;
}

/* ---- primitive cache -------------------------------------------------------------------- */

static entry *lookup(gr_ctx *g, const key *k)
{
    for (int i = 0; i < g->n; i++)
        if (!memcmp(&g->e[i].k, k, sizeof *k)) return &g->e[i];
    return NULL;
}

static dnnl_memory_desc_t view_md(const int64_t *d, const int64_t *s, int nd)
{
    dnnl_memory_desc_t md;
    dnnl_dims_t dims, str;
    for (int i = 0; i < nd; i++) { dims[i] = d[i]; str[i] = s[i]; }
    dnnl_memory_desc_init_by_strides(&md, nd, dims, dnnl_f32, str);
    return md;
}

static dnnl_memory_desc_t plain_md(int nd, int64_t a, int64_t b)
{
    dnnl_memory_desc_t md;
    dnnl_dims_t dims = {a, b};
    dnnl_memory_desc_init_by_tag(&md, nd, dims, dnnl_f32, nd == 1 ? dnnl_a : dnnl_ab);
    return md;
}

/* Creates the primitive of pd into a new cache entry with memory objects for (arg, md). */
static vt_status add_entry(gr_ctx *g, const key *k, dnnl_primitive_desc_t pd, int n,
                           const int *args, const dnnl_memory_desc_t *mds, entry **out,
                           char *err, size_t errlen)
{
    if (g->n == g->cap) {
        int nc = g->cap ? 2 * g->cap : 32;
        entry *ne = realloc(g->e, (size_t)nc * sizeof *ne);
        if (!ne) return vt_err(err, errlen, VT_ENOMEM, "out of memory");
        g->e = ne;
        g->cap = nc;
    }
    entry *e = &g->e[g->n];
    memset(e, 0, sizeof *e);
    e->k = *k;
    const char *impl = NULL;
    dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
    snprintf(e->impl, sizeof e->impl, "%s", impl ? impl : "?");
    const dnnl_memory_desc_t *smd = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    e->scratch_bytes = smd ? dnnl_memory_desc_get_size(smd) : 0;
    if (e->scratch_bytes && !(e->scratch = op_mem(smd, NULL))) goto fail;
    if (dnnl_primitive_create(&e->prim, pd) != dnnl_success) goto fail;
    for (int i = 0; i < n; i++) {
        e->arg[i] = args[i];
        if (!(e->mem[i] = op_mem(&mds[i], NULL))) { e->nmem = i; goto fail; }
    }
    e->nmem = n;
    g->n++;
    *out = e;
    return VT_OK;
fail:
    entry_free(e);
    return vt_err(err, errlen, VT_EDNNL, "oneDNN could not create a primitive");
}

static dnnl_primitive_attr_t user_scratch_attr(void)
{
    dnnl_primitive_attr_t a = NULL;
    if (dnnl_primitive_attr_create(&a) != dnnl_success) return NULL;
    dnnl_primitive_attr_set_scratchpad_mode(a, dnnl_scratchpad_mode_user);
    return a;
}

/* Runs e with ptrs[i] as the buffer of its i-th memory object. */
static vt_status run(gr_ctx *g, entry *e, void *const *ptrs, char *err, size_t errlen)
{
    dnnl_exec_arg_t a[MAXMEM + 1];
    for (int i = 0; i < e->nmem; i++) {
        if (dnnl_memory_set_data_handle(e->mem[i], ptrs[i]) != dnnl_success)
            return vt_err(err, errlen, VT_EDNNL, "oneDNN: bad buffer");
        a[i] = (dnnl_exec_arg_t){e->arg[i], e->mem[i]};
    }
    int n = e->nmem;
    if (e->scratch) {
        if (e->scratch_bytes > g->scratch_cap) {
            free(g->scratch);
            g->scratch_cap = 0;
            if (posix_memalign(&g->scratch, 64, e->scratch_bytes)) {
                g->scratch = NULL;
                return vt_err(err, errlen, VT_ENOMEM, "out of memory for the oneDNN scratchpad");
            }
            g->scratch_cap = e->scratch_bytes;
        }
        dnnl_memory_set_data_handle(e->scratch, g->scratch);
        a[n++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, e->scratch};
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (dnnl_primitive_execute(e->prim, g->stream, n, a) != dnnl_success ||
        dnnl_stream_wait(g->stream) != dnnl_success)
        return vt_err(err, errlen, VT_EDNNL, "oneDNN execution failed (%s)", e->impl);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    e->seconds += (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
    e->calls++;
    return VT_OK;
}

/* ---- matmul ----------------------------------------------------------------------------- */

static void ref_matmul(gr_view A, gr_view B, const float *bias, gr_view C, float alpha, int acc)
{
    int64_t d0 = C.nd == 4 ? C.d[0] : 1, d1 = C.nd == 4 ? C.d[1] : 1;
    int r = C.nd == 4 ? 2 : 0;
    int64_t M = C.d[r], N = C.d[r + 1], K = A.d[r + 1];
    int64_t as0 = A.nd == 4 ? A.s[0] : 0, as1 = A.nd == 4 ? A.s[1] : 0;
    int64_t bs0 = B.nd == 4 ? B.s[0] : 0, bs1 = B.nd == 4 ? B.s[1] : 0;
    int64_t cs0 = C.nd == 4 ? C.s[0] : 0, cs1 = C.nd == 4 ? C.s[1] : 0;
    #pragma omp parallel for collapse(3)
    for (int64_t i0 = 0; i0 < d0; i0++)
        for (int64_t i1 = 0; i1 < d1; i1++)
            for (int64_t m = 0; m < M; m++) {
                const float *a = A.p + i0 * as0 + i1 * as1 + m * A.s[r];
                const float *b = B.p + i0 * bs0 + i1 * bs1;
                float *c = C.p + i0 * cs0 + i1 * cs1 + m * C.s[r];
                for (int64_t n = 0; n < N; n++) {
                    double s = 0;
                    for (int64_t k = 0; k < K; k++)
                        s += (double)a[k * A.s[r + 1]] * b[k * B.s[r] + n * B.s[r + 1]];
                    s *= alpha;
                    if (bias) s += bias[n];
                    if (acc) s += c[n * C.s[r + 1]];
                    c[n * C.s[r + 1]] = (float)s;
                }
            }
}

vt_status gr_matmul(gr_ctx *g, gr_view A, gr_view B, const float *bias, gr_view C, float alpha,
                    int accumulate, char *err, size_t errlen)
{
    int nd = C.nd, r = nd == 4 ? 2 : 0;
    if (A.nd != nd || B.nd != nd || A.d[r + 1] != B.d[r] || A.d[r] != C.d[r] || B.d[r + 1] != C.d[r + 1] ||
        (nd == 4 && (A.d[0] != C.d[0] || A.d[1] != C.d[1] || B.d[0] != C.d[0] || B.d[1] != C.d[1])) ||
        (bias && (nd != 2 || alpha != 1.0f)))
        return vt_err(err, errlen, VT_EINVAL, "gr_matmul: inconsistent views");
    if (g->reference) {
        ref_matmul(A, B, bias, C, alpha, accumulate);
        return VT_OK;
    }
    key k;
    memset(&k, 0, sizeof k);
    k.kind = K_MATMUL;
    k.nd = nd;
    k.bias = bias != NULL;
    k.accumulate = accumulate;
    k.alpha = alpha;
    const gr_view *v[3] = {&A, &B, &C};
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < nd; j++) { k.d[i][j] = v[i]->d[j]; k.s[i][j] = v[i]->s[j]; }
    entry *e = lookup(g, &k);
    if (!e) {
        dnnl_memory_desc_t mds[4];
        int args[4] = {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST, DNNL_ARG_BIAS};
        for (int i = 0; i < 3; i++) mds[i] = view_md(k.d[i], k.s[i], nd);
        mds[3] = plain_md(2, 1, C.d[1]);
        dnnl_matmul_desc_t md;
        if (dnnl_matmul_desc_init(&md, &mds[0], &mds[1], bias ? &mds[3] : NULL, &mds[2]) != dnnl_success)
            return vt_err(err, errlen, VT_EDNNL, "oneDNN: bad matmul");
        dnnl_primitive_attr_t attr = user_scratch_attr();
        dnnl_post_ops_t po = NULL;
        if (!attr) return vt_err(err, errlen, VT_ENOMEM, "oneDNN attributes");
        if (alpha != 1.0f) dnnl_primitive_attr_set_output_scales(attr, 1, 0, &alpha);
        if (accumulate) {
            dnnl_post_ops_create(&po);
            dnnl_post_ops_append_sum(po, 1.0f);
            dnnl_primitive_attr_set_post_ops(attr, po);
        }
        dnnl_primitive_desc_t pd = NULL;
        vt_status st = VT_EDNNL;
        if (dnnl_primitive_desc_create(&pd, &md, attr, op_engine(), NULL) == dnnl_success)
            st = add_entry(g, &k, pd, bias ? 4 : 3, args, mds, &e, err, errlen);
        else
            vt_err(err, errlen, st, "oneDNN refused a %lldx%lldx%lld matmul", (long long)C.d[r],
                   (long long)A.d[r + 1], (long long)C.d[r + 1]);
        dnnl_primitive_desc_destroy(pd);
        if (po) dnnl_post_ops_destroy(po);
        dnnl_primitive_attr_destroy(attr);
        if (st) return st;
    }
    void *ptrs[4] = {A.p, B.p, C.p, (void *)bias};
    return run(g, e, ptrs, err, errlen);
}

vt_status gr_colsum(gr_ctx *g, int64_t rows, int64_t cols, const float *x, float *out,
                    char *err, size_t errlen)
{
    if (g->reference) {
        #pragma omp parallel for
        for (int64_t c = 0; c < cols; c++) {
            double s = 0;
            for (int64_t r = 0; r < rows; r++) s += x[r * cols + c];
            out[c] = (float)s;
        }
        return VT_OK;
    }
    /* ones (1, rows) x X (rows, cols): a GEMV that oneDNN vectorises and threads */
    if (rows > g->ones_n) {
        free(g->ones);
        g->ones_n = 0;
        if (!(g->ones = malloc((size_t)rows * sizeof(float))))
            return vt_err(err, errlen, VT_ENOMEM, "out of memory");
        for (int64_t i = 0; i < rows; i++) g->ones[i] = 1.0f;
        g->ones_n = rows;
    }
    return gr_matmul(g, gr_mat(g->ones, 1, rows), gr_mat(x, rows, cols), NULL, gr_mat(out, 1, cols),
                     1.0f, 0, err, errlen);
}

/* ---- LayerNorm ---------------------------------------------------------------------------- */

vt_status gr_ln_fwd(gr_ctx *g, int rows, int D, float eps, const float *x, const float *gamma,
                    const float *beta, float *y, float *mean, float *var, char *err, size_t errlen)
{
    if (g->reference) {
        #pragma omp parallel for
        for (int r = 0; r < rows; r++) {
            const float *xr = x + (size_t)r * D;
            double mu = 0, v = 0;
            for (int i = 0; i < D; i++) mu += xr[i];
            mu /= D;
            for (int i = 0; i < D; i++) v += (xr[i] - mu) * (xr[i] - mu);
            v /= D;
            double rs = 1.0 / sqrt(v + eps);
            for (int i = 0; i < D; i++) y[(size_t)r * D + i] = (float)((xr[i] - mu) * rs * gamma[i] + beta[i]);
            mean[r] = (float)mu;
            var[r] = (float)v;
        }
        return VT_OK;
    }
    /* Not oneDNN's layer normalisation: 2.6's (simple_layer_normalization, not JIT) is no faster,
     * and its backward pass gives wrong scale/shift gradients when two threads run equal-shaped
     * primitives at once (the data-parallel shards of train.c do). Float rows, double sums. */
    #pragma omp parallel for
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * D;
        float *yr = y + (size_t)r * D;
        double s1 = 0, s2 = 0;
        for (int i = 0; i < D; i++) s1 += xr[i];
        float mu = (float)(s1 / D);
        for (int i = 0; i < D; i++) { float d = xr[i] - mu; s2 += (double)d * d; }
        float v = (float)(s2 / D), rs = 1.0f / sqrtf(v + eps);
        for (int i = 0; i < D; i++) yr[i] = (xr[i] - mu) * rs * gamma[i] + beta[i];
        mean[r] = mu;
        var[r] = v;
    }
    (void)err;
    (void)errlen;
    return VT_OK;
}

vt_status gr_ln_bwd(gr_ctx *g, int rows, int D, float eps, const float *x, const float *gamma,
                    const float *mean, const float *var, const float *dy, float *dx,
                    float *dgamma, float *dbeta, char *err, size_t errlen)
{
    if (g->reference) {
        /* xhat = (x - mu) rs;  dxhat = dy * gamma;
         * dx = rs * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)) */
        #pragma omp parallel for
        for (int r = 0; r < rows; r++) {
            const float *xr = x + (size_t)r * D, *dr = dy + (size_t)r * D;
            double rs = 1.0 / sqrt((double)var[r] + eps), m1 = 0, m2 = 0;
            for (int i = 0; i < D; i++) {
                double xh = (xr[i] - (double)mean[r]) * rs, dxh = (double)dr[i] * gamma[i];
                m1 += dxh;
                m2 += dxh * xh;
            }
            m1 /= D;
            m2 /= D;
            for (int i = 0; i < D; i++) {
                double xh = (xr[i] - (double)mean[r]) * rs, dxh = (double)dr[i] * gamma[i];
                dx[(size_t)r * D + i] = (float)(rs * (dxh - m1 - xh * m2));
            }
        }
        #pragma omp parallel for
        for (int i = 0; i < D; i++) {
            double sg = 0, sb = 0;
            for (int r = 0; r < rows; r++) {
                double rs = 1.0 / sqrt((double)var[r] + eps);
                double xh = (x[(size_t)r * D + i] - (double)mean[r]) * rs;
                sg += (double)dy[(size_t)r * D + i] * xh;
                sb += dy[(size_t)r * D + i];
            }
            dgamma[i] = (float)sg;
            dbeta[i] = (float)sb;
        }
        return VT_OK;
    }
    /* the same in float rows; dgamma and dbeta summed over rows in double */
    double *sg = calloc((size_t)D * 2, sizeof(double));
    float *xh = malloc((size_t)D * sizeof(float));
    if (!sg || !xh) { free(sg); free(xh); return vt_err(err, errlen, VT_ENOMEM, "out of memory"); }
    double *sb = sg + D;
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * D, *dr = dy + (size_t)r * D;
        float *dxr = dx + (size_t)r * D, mu = mean[r], rs = 1.0f / sqrtf(var[r] + eps);
        float m1 = 0, m2 = 0;
        for (int i = 0; i < D; i++) {
            xh[i] = (xr[i] - mu) * rs;
            float dxh = dr[i] * gamma[i];
            m1 += dxh;
            m2 += dxh * xh[i];
            sg[i] += (double)(dr[i] * xh[i]);
            sb[i] += dr[i];
        }
        m1 /= D;
        m2 /= D;
        for (int i = 0; i < D; i++) dxr[i] = rs * (dr[i] * gamma[i] - m1 - xh[i] * m2);
    }
    for (int i = 0; i < D; i++) { dgamma[i] = (float)sg[i]; dbeta[i] = (float)sb[i]; }
    free(sg);
    free(xh);
    return VT_OK;
}

/* ---- GELU and softmax ------------------------------------------------------------------- */

/* Element-wise primitives over a 2-D (rows, n) buffer; GELU uses (1, count). */
static vt_status elt_entry(gr_ctx *g, int kind, int64_t rows, int64_t n, entry **out,
                           char *err, size_t errlen)
{
    key k;
    memset(&k, 0, sizeof k);
    k.kind = kind;
    k.d[0][0] = rows;
    k.d[0][1] = n;
    if ((*out = lookup(g, &k))) return VT_OK;
    dnnl_memory_desc_t data = plain_md(2, rows, n);
    dnnl_primitive_desc_t fpd = NULL, bpd = NULL;
    dnnl_primitive_attr_t attr = user_scratch_attr();
    vt_status st = VT_EDNNL;
    if (!attr) return vt_err(err, errlen, VT_ENOMEM, "oneDNN attributes");
    if (kind == K_GELU_F || kind == K_GELU_B) {
        dnnl_eltwise_desc_t fd, bd;
        if (dnnl_eltwise_forward_desc_init(&fd, dnnl_forward_training, dnnl_eltwise_gelu_erf, &data, 0.f, 0.f) != dnnl_success ||
            dnnl_primitive_desc_create(&fpd, &fd, attr, op_engine(), NULL) != dnnl_success)
            goto done;
        if (kind == K_GELU_F) {
            int args[] = {DNNL_ARG_SRC, DNNL_ARG_DST};
            dnnl_memory_desc_t mds[] = {data, data};
            st = add_entry(g, &k, fpd, 2, args, mds, out, err, errlen);
        } else {
            if (dnnl_eltwise_backward_desc_init(&bd, dnnl_eltwise_gelu_erf, &data, &data, 0.f, 0.f) != dnnl_success ||
                dnnl_primitive_desc_create(&bpd, &bd, attr, op_engine(), fpd) != dnnl_success)
                goto done;
            int args[] = {DNNL_ARG_SRC, DNNL_ARG_DIFF_DST, DNNL_ARG_DIFF_SRC};
            dnnl_memory_desc_t mds[] = {data, data, data};
            st = add_entry(g, &k, bpd, 3, args, mds, out, err, errlen);
        }
    } else {
        dnnl_softmax_v2_desc_t fd, bd;
        if (dnnl_softmax_v2_forward_desc_init(&fd, dnnl_forward_training, dnnl_softmax_accurate, &data, &data, 1) != dnnl_success ||
            dnnl_primitive_desc_create(&fpd, &fd, attr, op_engine(), NULL) != dnnl_success)
            goto done;
        if (kind == K_SM_F) {
            int args[] = {DNNL_ARG_SRC, DNNL_ARG_DST};
            dnnl_memory_desc_t mds[] = {data, data};
            st = add_entry(g, &k, fpd, 2, args, mds, out, err, errlen);
        } else {
            if (dnnl_softmax_v2_backward_desc_init(&bd, dnnl_softmax_accurate, &data, &data, &data, 1) != dnnl_success ||
                dnnl_primitive_desc_create(&bpd, &bd, attr, op_engine(), fpd) != dnnl_success)
                goto done;
            int args[] = {DNNL_ARG_DST, DNNL_ARG_DIFF_DST, DNNL_ARG_DIFF_SRC};
            dnnl_memory_desc_t mds[] = {data, data, data};
            st = add_entry(g, &k, bpd, 3, args, mds, out, err, errlen);
        }
    }
done:
    if (st == VT_EDNNL && !*out) vt_err(err, errlen, st, "oneDNN refused an element-wise primitive");
    dnnl_primitive_desc_destroy(bpd);
    dnnl_primitive_desc_destroy(fpd);
    dnnl_primitive_attr_destroy(attr);
    return st;
}

vt_status gr_gelu_fwd(gr_ctx *g, size_t n, const float *u, float *y, char *err, size_t errlen)
{
    if (g->reference) {
        #pragma omp parallel for
        for (size_t i = 0; i < n; i++) y[i] = (float)(0.5 * u[i] * (1.0 + erf(u[i] / sqrt(2.0))));
        return VT_OK;
    }
    entry *e;
    vt_status st = elt_entry(g, K_GELU_F, 1, (int64_t)n, &e, err, errlen);
    if (st) return st;
    void *ptrs[] = {(void *)u, y};
    return run(g, e, ptrs, err, errlen);
}

vt_status gr_gelu_bwd(gr_ctx *g, size_t n, const float *u, const float *dy, float *du,
                      char *err, size_t errlen)
{
    if (g->reference) {
        #pragma omp parallel for
        for (size_t i = 0; i < n; i++) {
            double x = u[i], cdf = 0.5 * (1.0 + erf(x / sqrt(2.0))), pdf = exp(-0.5 * x * x) / sqrt(2.0 * M_PI);
            du[i] = (float)(dy[i] * (cdf + x * pdf));
        }
        return VT_OK;
    }
    entry *e;
    vt_status st = elt_entry(g, K_GELU_B, 1, (int64_t)n, &e, err, errlen);
    if (st) return st;
    void *ptrs[] = {(void *)u, (void *)dy, du};
    return run(g, e, ptrs, err, errlen);
}

vt_status gr_softmax_fwd(gr_ctx *g, int64_t rows, int n, float *x, char *err, size_t errlen)
{
    if (g->reference) {
        #pragma omp parallel for
        for (int64_t r = 0; r < rows; r++) {
            float *xr = x + r * n;
            double mx = xr[0], s = 0;
            for (int i = 1; i < n; i++) mx = xr[i] > mx ? xr[i] : mx;
            for (int i = 0; i < n; i++) s += exp(xr[i] - mx);
            for (int i = 0; i < n; i++) xr[i] = (float)(exp(xr[i] - mx) / s);
        }
        return VT_OK;
    }
    entry *e;
    vt_status st = elt_entry(g, K_SM_F, rows, n, &e, err, errlen);
    if (st) return st;
    void *ptrs[] = {x, x};
    return run(g, e, ptrs, err, errlen);
}

vt_status gr_softmax_bwd(gr_ctx *g, int64_t rows, int n, const float *p, const float *dp,
                         float *ds, char *err, size_t errlen)
{
    if (g->reference) {
        #pragma omp parallel for
        for (int64_t r = 0; r < rows; r++) {
            const float *pr = p + r * n, *dr = dp + r * n;
            double dot = 0;
            for (int i = 0; i < n; i++) dot += (double)pr[i] * dr[i];
            for (int i = 0; i < n; i++) ds[r * n + i] = (float)(pr[i] * (dr[i] - dot));
        }
        return VT_OK;
    }
    entry *e;
    vt_status st = elt_entry(g, K_SM_B, rows, n, &e, err, errlen);
    if (st) return st;
    void *ptrs[] = {(void *)p, (void *)dp, ds};
    return run(g, e, ptrs, err, errlen);
}
