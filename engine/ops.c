/* ops.c - oneDNN 2.6 primitive construction and execution (see ops.h). */
#include "ops.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static dnnl_engine_t g_engine;
static pthread_once_t g_engine_once = PTHREAD_ONCE_INIT;

static void engine_init(void)
{
    if (dnnl_engine_create(&g_engine, dnnl_cpu, 0) != dnnl_success) g_engine = NULL;
}

dnnl_engine_t op_engine(void)
{
    pthread_once(&g_engine_once, engine_init);
    return g_engine;
}

dnnl_memory_desc_t op_md2(int rows, int cols)
{
    dnnl_memory_desc_t md;
    dnnl_dims_t d = {rows, cols};
    dnnl_memory_desc_init_by_tag(&md, 2, d, dnnl_f32, dnnl_ab);
    return md;
}

dnnl_memory_desc_t op_md1(int n)
{
    dnnl_memory_desc_t md;
    dnnl_dims_t d = {n};
    dnnl_memory_desc_init_by_tag(&md, 1, d, dnnl_f32, dnnl_a);
    return md;
}

dnnl_memory_t op_mem(const dnnl_memory_desc_t *md, void *ptr)
{
    dnnl_memory_t m = NULL;
    dnnl_engine_t e = op_engine();
    if (!e || dnnl_memory_create(&m, md, e, ptr ? ptr : DNNL_MEMORY_NONE) != dnnl_success)
        return NULL;
    return m;
}

/* Creates the primitive from an op descriptor with a user scratchpad and optional
 * post-ops, and records its memory descriptors. */
static vt_status make_prim(op_prim *p, const void *desc, dnnl_post_ops_t po, const char *what,
                           char *err, size_t errlen)
{
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t pd = NULL;
    vt_status st = VT_EDNNL;
    memset(p, 0, sizeof *p);
    if (!op_engine()) return vt_err(err, errlen, VT_EDNNL, "oneDNN: no CPU engine");
    if (dnnl_primitive_attr_create(&attr) != dnnl_success) goto fail;
    if (dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user) != dnnl_success)
        goto fail;
    if (po && dnnl_primitive_attr_set_post_ops(attr, po) != dnnl_success) goto fail;
    if (dnnl_primitive_desc_create(&pd, desc, attr, op_engine(), NULL) != dnnl_success) goto fail;
    const dnnl_memory_desc_t *md;
    if ((md = dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0))) p->src_md = *md;
    if ((md = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0))) p->wei_md = *md;
    if ((md = dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0))) p->dst_md = *md;
    md = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    p->scratch_bytes = md ? dnnl_memory_desc_get_size(md) : 0;
    if (p->scratch_bytes && !(p->scratch = op_mem(md, NULL))) goto fail;
    dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &p->impl);
    if (dnnl_primitive_create(&p->prim, pd) != dnnl_success) goto fail;
    /* impl points into pd, which dies below; keep a static description only. */
    p->impl = NULL;
    st = VT_OK;
fail:
    if (st != VT_OK) {
        if (p->scratch) dnnl_memory_destroy(p->scratch);
        p->scratch = NULL;
        vt_err(err, errlen, st, "oneDNN refused the %s primitive", what);
    }
    dnnl_primitive_desc_destroy(pd);
    dnnl_primitive_attr_destroy(attr);
    return st;
}

vt_status op_linear(op_prim *p, int M, int I, int O, const dnnl_memory_desc_t *wmd,
                    unsigned flags, char *err, size_t errlen)
{
    dnnl_memory_desc_t src = op_md2(M, I), dst = op_md2(M, O), bias = op_md2(1, O), w;
    if (wmd) {
        w = *wmd;
    } else {
        dnnl_dims_t d = {I, O};
        dnnl_memory_desc_init_by_tag(&w, 2, d, dnnl_f32, dnnl_format_tag_any);
    }
    dnnl_matmul_desc_t md;
    if (dnnl_matmul_desc_init(&md, &src, &w, &bias, &dst) != dnnl_success)
        return vt_err(err, errlen, VT_EDNNL, "oneDNN: bad matmul %dx%dx%d", M, I, O);
    dnnl_post_ops_t po = NULL;
    if (flags) {
        if (dnnl_post_ops_create(&po) != dnnl_success) return vt_err(err, errlen, VT_ENOMEM, "oneDNN post-ops");
        /* Post-ops apply in order: the residual sum first, then nothing else is fused after it;
         * GELU applies to xW + b (fc1 has no residual). */
        if (flags & OP_SUM) dnnl_post_ops_append_sum(po, 1.0f);
        if (flags & OP_GELU) dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_gelu_erf, 0.f, 0.f);
    }
    vt_status st = make_prim(p, &md, po, "matmul", err, errlen);
    if (po) dnnl_post_ops_destroy(po);
    return st;
}

vt_status op_layernorm(op_prim *p, int M, int D, float eps, char *err, size_t errlen)
{
    dnnl_memory_desc_t data = op_md2(M, D);
    dnnl_layer_normalization_desc_t d;
    if (dnnl_layer_normalization_forward_desc_init(&d, dnnl_forward_inference, &data, NULL, eps,
                                                   dnnl_use_scale | dnnl_use_shift) != dnnl_success)
        return vt_err(err, errlen, VT_EDNNL, "oneDNN: bad layer norm %dx%d", M, D);
    return make_prim(p, &d, NULL, "layer normalization", err, errlen);
}

vt_status op_softmax(op_prim *p, int rows, int n, char *err, size_t errlen)
{
    dnnl_memory_desc_t data = op_md2(rows, n);
    dnnl_softmax_v2_desc_t d;
    if (dnnl_softmax_v2_forward_desc_init(&d, dnnl_forward_inference, dnnl_softmax_accurate, &data,
                                          &data, 1) != dnnl_success)
        return vt_err(err, errlen, VT_EDNNL, "oneDNN: bad softmax %dx%d", rows, n);
    return make_prim(p, &d, NULL, "softmax", err, errlen);
}

static void strided(dnnl_memory_desc_t *md, int64_t d0, int64_t d1, int64_t d2, int64_t d3,
                    int64_t s0, int64_t s1, int64_t s2, int64_t s3)
{
    dnnl_dims_t dims = {d0, d1, d2, d3}, str = {s0, s1, s2, s3};
    dnnl_memory_desc_init_by_strides(md, 4, dims, dnnl_f32, str);
}

vt_status op_attn_scores(op_prim *p, int B, int H, int N, int D, char *err, size_t errlen)
{
    int dh = D / H;
    dnnl_memory_desc_t q, kt, s;
    strided(&q, B, H, N, dh, (int64_t)N * 3 * D, dh, 3 * D, 1);
    strided(&kt, B, H, dh, N, (int64_t)N * 3 * D, dh, 1, 3 * D);
    strided(&s, B, H, N, N, (int64_t)H * N * N, (int64_t)N * N, N, 1);
    dnnl_matmul_desc_t md;
    if (dnnl_matmul_desc_init(&md, &q, &kt, NULL, &s) != dnnl_success)
        return vt_err(err, errlen, VT_EDNNL, "oneDNN: bad attention scores matmul");
    return make_prim(p, &md, NULL, "attention scores matmul", err, errlen);
}

vt_status op_attn_values(op_prim *p, int B, int H, int N, int D, char *err, size_t errlen)
{
    int dh = D / H;
    dnnl_memory_desc_t s, v, o;
    strided(&s, B, H, N, N, (int64_t)H * N * N, (int64_t)N * N, N, 1);
    strided(&v, B, H, N, dh, (int64_t)N * 3 * D, dh, 3 * D, 1);
    strided(&o, B, H, N, dh, (int64_t)N * D, dh, D, 1);
    dnnl_matmul_desc_t md;
    if (dnnl_matmul_desc_init(&md, &s, &v, NULL, &o) != dnnl_success)
        return vt_err(err, errlen, VT_EDNNL, "oneDNN: bad attention values matmul");
    return make_prim(p, &md, NULL, "attention values matmul", err, errlen);
}

vt_status op_matmul_desc(op_prim *p, const dnnl_matmul_desc_t *d, char *err, size_t errlen)
{
    return make_prim(p, d, NULL, "matmul", err, errlen);
}

void op_prim_free(op_prim *p)
{
    if (!p) return;
    if (p->prim) dnnl_primitive_destroy(p->prim);
    if (p->scratch) dnnl_memory_destroy(p->scratch);
    memset(p, 0, sizeof *p);
}

vt_status op_bind_scratch(op_prim *p, void *buf)
{
    if (!p->scratch) return VT_OK;
    return dnnl_memory_set_data_handle(p->scratch, buf) == dnnl_success ? VT_OK : VT_EDNNL;
}

vt_status op_pack(const float *W, int I, int O, const dnnl_memory_desc_t *wmd, float **out,
                  size_t *bytes, char *err, size_t errlen)
{
    dnnl_memory_desc_t user;
    dnnl_dims_t d = {I, O};
    /* PyTorch's (O, I) row-major matrix is the (I, O) matrix W^T in layout "ba". */
    dnnl_memory_desc_init_by_tag(&user, 2, d, dnnl_f32, dnnl_ba);
    size_t n = dnnl_memory_desc_get_size(wmd);
    float *buf = NULL;
    dnnl_memory_t src = NULL, dst = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t r = NULL;
    dnnl_stream_t s = NULL;
    vt_status st = VT_EDNNL;
    *out = NULL;
    if (posix_memalign((void **)&buf, 64, n ? n : 64))
        return vt_err(err, errlen, VT_ENOMEM, "out of memory packing a %dx%d weight", O, I);
    memset(buf, 0, n);
    if (!(src = op_mem(&user, (void *)W)) || !(dst = op_mem(wmd, buf))) goto fail;
    if (dnnl_reorder_primitive_desc_create(&pd, &user, op_engine(), wmd, op_engine(), NULL) != dnnl_success)
        goto fail;
    if (dnnl_primitive_create(&r, pd) != dnnl_success) goto fail;
    if (dnnl_stream_create(&s, op_engine(), dnnl_stream_default_flags) != dnnl_success) goto fail;
    dnnl_exec_arg_t args[] = {{DNNL_ARG_FROM, src}, {DNNL_ARG_TO, dst}};
    if (dnnl_primitive_execute(r, s, 2, args) != dnnl_success || dnnl_stream_wait(s) != dnnl_success)
        goto fail;
    *out = buf;
    *bytes = n;
    buf = NULL;
    st = VT_OK;
fail:
    if (st != VT_OK) vt_err(err, errlen, st, "oneDNN could not pack a %dx%d weight", O, I);
    if (s) dnnl_stream_destroy(s);
    if (r) dnnl_primitive_destroy(r);
    dnnl_primitive_desc_destroy(pd);
    if (src) dnnl_memory_destroy(src);
    if (dst) dnnl_memory_destroy(dst);
    free(buf);
    return st;
}

vt_status op_exec(const op_prim *p, dnnl_stream_t s, int nargs, const dnnl_exec_arg_t *args,
                  char *err, size_t errlen)
{
    dnnl_exec_arg_t a[8];
    if (nargs > 7) return vt_err(err, errlen, VT_EINVAL, "too many primitive arguments");
    memcpy(a, args, sizeof *a * nargs);
    if (p->scratch) a[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, p->scratch};
    if (dnnl_primitive_execute(p->prim, s, nargs, a) != dnnl_success)
        return vt_err(err, errlen, VT_EDNNL, "oneDNN execution failed");
    return VT_OK;
}
