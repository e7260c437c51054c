/* test_ops.c - every oneDNN primitive the engine builds against its plain C reference. */
#include <string.h>

#include "check.h"
#include "ops.h"
#include "ref.h"
#include "vit_internal.h"

static unsigned seed = 12345;

static float *randv(size_t n, float scale)
{
    float *v = vit_alloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) v[i] = check_randn(&seed) * scale;
    return v;
}

static void exec_or_fail(const op_prim *p, dnnl_stream_t s, int n, const dnnl_exec_arg_t *a)
{
    char err[256];
    CHECK(op_exec(p, s, n, a, err, sizeof err) == VT_OK, "%s", err);
    dnnl_stream_wait(s);
}

static void *scratch_for(op_prim *p)
{
    void *buf = vit_alloc(p->scratch_bytes + 64);
    op_bind_scratch(p, buf);
    return buf;
}

/* y = xW^T + b [GELU] [+ y_old] for odd shapes, packed weights as the loader packs them. */
static void test_linear(int M, int I, int O, unsigned flags, dnnl_stream_t s)
{
    char err[256];
    float *x = randv((size_t)M * I, 1), *W = randv((size_t)O * I, 0.2f), *b = randv(O, 0.5f);
    float *y = randv((size_t)M * O, 1), *want = vit_alloc((size_t)M * O * 4);
    ref_linear(x, W, b, want, M, I, O);
    if (flags & OP_SUM)
        for (size_t i = 0; i < (size_t)M * O; i++) want[i] += y[i];
    if (flags & OP_GELU) ref_gelu(want, (size_t)M * O);
    op_prim p;
    CHECK(op_linear(&p, M, I, O, NULL, flags, err, sizeof err) == VT_OK, "%s", err);
    float *packed;
    size_t bytes;
    CHECK(op_pack(W, I, O, &p.wei_md, &packed, &bytes, err, sizeof err) == VT_OK, "%s", err);
    void *sc = scratch_for(&p);
    dnnl_memory_desc_t xmd = op_md2(M, I), ymd = op_md2(M, O), bmd = op_md2(1, O);
    dnnl_memory_t mx = op_mem(&xmd, x), my = op_mem(&ymd, y), mb = op_mem(&bmd, b), mw = op_mem(&p.wei_md, packed);
    dnnl_exec_arg_t a[] = {{DNNL_ARG_SRC, mx}, {DNNL_ARG_WEIGHTS, mw}, {DNNL_ARG_BIAS, mb}, {DNNL_ARG_DST, my}};
    exec_or_fail(&p, s, 4, a);
    double mb_, d = max_abs_diff(y, want, (size_t)M * O, &mb_);
    CHECK(d <= 1e-5 * (mb_ > 1 ? mb_ : 1), "linear %dx%dx%d flags %u: max diff %g (max %g)", M, I, O, flags, d, mb_);
    printf("linear   M=%-4d I=%-4d O=%-4d flags=%u  max|diff| %.2e\n", M, I, O, flags, d);
    dnnl_memory_destroy(mx); dnnl_memory_destroy(my); dnnl_memory_destroy(mb); dnnl_memory_destroy(mw);
    op_prim_free(&p);
    free(x); free(W); free(b); free(y); free(want); free(packed); free(sc);
}

static void test_layernorm(int M, int D, dnnl_stream_t s)
{
    char err[256];
    float *x = randv((size_t)M * D, 3), *g = randv(D, 1), *b = randv(D, 1);
    for (int i = 0; i < M * D; i++) x[i] += 5.0f; /* a large mean, as residual streams have */
    float *y = vit_alloc((size_t)M * D * 4), *want = vit_alloc((size_t)M * D * 4);
    ref_layernorm(x, want, M, D, g, b, 1e-6f);
    op_prim p;
    CHECK(op_layernorm(&p, M, D, 1e-6f, err, sizeof err) == VT_OK, "%s", err);
    void *sc = scratch_for(&p);
    dnnl_memory_desc_t md = op_md2(M, D), vmd = op_md1(D);
    dnnl_memory_t mx = op_mem(&md, x), my = op_mem(&md, y), mg = op_mem(&vmd, g), mbb = op_mem(&vmd, b);
    dnnl_exec_arg_t a[] = {{DNNL_ARG_SRC, mx}, {DNNL_ARG_DST, my}, {DNNL_ARG_SCALE, mg}, {DNNL_ARG_SHIFT, mbb}};
    exec_or_fail(&p, s, 4, a);
    double m, d = max_abs_diff(y, want, (size_t)M * D, &m);
    CHECK(d <= 1e-5 * m, "layernorm %dx%d: max diff %g", M, D, d);
    printf("layernorm M=%-4d D=%-4d                max|diff| %.2e\n", M, D, d);
    dnnl_memory_destroy(mx); dnnl_memory_destroy(my); dnnl_memory_destroy(mg); dnnl_memory_destroy(mbb);
    op_prim_free(&p);
    free(x); free(g); free(b); free(y); free(want); free(sc);
}

/* QK^T, softmax and SV through the strided views, against ref_attention (scale 1: the
 * engine folds the scale into the weights, so the primitives apply none). */
static void test_attention(int B, int N, int D, int H, dnnl_stream_t s)
{
    char err[256];
    float *qkv = randv((size_t)B * N * 3 * D, 1), *sbuf = vit_alloc((size_t)B * H * N * N * 4);
    float *o = vit_alloc((size_t)B * N * D * 4), *want = vit_alloc((size_t)B * N * D * 4), *tmp = vit_alloc((size_t)N * 4);
    ref_attention(qkv, want, B, N, D, H, 1.0f, tmp);
    op_prim qk, sm, av;
    CHECK(op_attn_scores(&qk, B, H, N, D, err, sizeof err) == VT_OK, "%s", err);
    CHECK(op_softmax(&sm, B * H * N, N, err, sizeof err) == VT_OK, "%s", err);
    CHECK(op_attn_values(&av, B, H, N, D, err, sizeof err) == VT_OK, "%s", err);
    void *s1 = scratch_for(&qk), *s2 = scratch_for(&sm), *s3 = scratch_for(&av);
    dnnl_memory_desc_t smd = op_md2(B * H * N, N);
    dnnl_memory_t mq = op_mem(&qk.src_md, qkv), mk = op_mem(&qk.wei_md, qkv + D), ms4 = op_mem(&qk.dst_md, sbuf);
    dnnl_memory_t ms2 = op_mem(&smd, sbuf), mv = op_mem(&av.wei_md, qkv + 2 * D), mo = op_mem(&av.dst_md, o);
    dnnl_exec_arg_t a1[] = {{DNNL_ARG_SRC, mq}, {DNNL_ARG_WEIGHTS, mk}, {DNNL_ARG_DST, ms4}};
    dnnl_exec_arg_t a2[] = {{DNNL_ARG_SRC, ms2}, {DNNL_ARG_DST, ms2}};
    dnnl_exec_arg_t a3[] = {{DNNL_ARG_SRC, ms4}, {DNNL_ARG_WEIGHTS, mv}, {DNNL_ARG_DST, mo}};
    exec_or_fail(&qk, s, 3, a1);
    exec_or_fail(&sm, s, 2, a2);
    exec_or_fail(&av, s, 3, a3);
    double m, d = max_abs_diff(o, want, (size_t)B * N * D, &m);
    CHECK(d <= 1e-5 * (m > 1 ? m : 1), "attention B=%d N=%d D=%d H=%d: max diff %g", B, N, D, H, d);
    printf("attention B=%d N=%-4d D=%-4d H=%-3d        max|diff| %.2e\n", B, N, D, H, d);
    dnnl_memory_t ms[] = {mq, mk, ms4, ms2, mv, mo};
    for (int i = 0; i < 6; i++) dnnl_memory_destroy(ms[i]);
    op_prim_free(&qk); op_prim_free(&sm); op_prim_free(&av);
    free(qkv); free(sbuf); free(o); free(want); free(tmp); free(s1); free(s2); free(s3);
}

/* im2col against a direct stride-P convolution, written out the long way. */
static void test_im2col(int B, int C, int S, int P, int D)
{
    int G = S / P, K = C * P * P;
    float *img = randv((size_t)B * C * S * S, 1), *W = randv((size_t)D * K, 0.1f);
    float *cols = vit_alloc((size_t)B * G * G * K * 4), *y = vit_alloc((size_t)B * G * G * D * 4);
    float *want = vit_alloc((size_t)B * G * G * D * 4);
    ref_im2col(img, cols, B, C, S, P);
    ref_linear(cols, W, NULL, y, B * G * G, K, D);
    for (int b = 0; b < B; b++)
        for (int gy = 0; gy < G; gy++)
            for (int gx = 0; gx < G; gx++)
                for (int d = 0; d < D; d++) {
                    double acc = 0;
                    for (int c = 0; c < C; c++)
                        for (int ky = 0; ky < P; ky++)
                            for (int kx = 0; kx < P; kx++)
                                acc += (double)W[((d * C + c) * P + ky) * P + kx] *
                                       img[(((size_t)b * C + c) * S + gy * P + ky) * S + gx * P + kx];
                    want[(((size_t)b * G + gy) * G + gx) * D + d] = (float)acc;
                }
    double m, diff = max_abs_diff(y, want, (size_t)B * G * G * D, &m);
    CHECK(diff <= 1e-5 * (m > 1 ? m : 1), "im2col conv B=%d C=%d S=%d P=%d: max diff %g", B, C, S, P, diff);
    printf("patch conv B=%d C=%d S=%-3d P=%-2d D=%-3d      max|diff| %.2e\n", B, C, S, P, D, diff);
    free(img); free(W); free(cols); free(y); free(want);
}

int main(void)
{
    dnnl_stream_t s;
    if (!op_engine() || dnnl_stream_create(&s, op_engine(), dnnl_stream_default_flags) != dnnl_success) {
        fprintf(stderr, "no oneDNN CPU engine\n");
        return 1;
    }
    int shapes[][3] = {{197, 192, 576}, {17, 33, 65}, {1, 192, 1000}, {394, 384, 1536}, {5, 1536, 384}, {50, 200, 600}};
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++)
        for (unsigned f = 0; f < 3; f++) test_linear(shapes[i][0], shapes[i][1], shapes[i][2], f, s);
    test_layernorm(197, 192, s);
    test_layernorm(7, 200, s);
    test_layernorm(394, 768, s);
    test_attention(1, 197, 192, 3, s);
    test_attention(2, 17, 64, 2, s);
    test_attention(3, 50, 200, 4, s);
    test_attention(2, 198, 384, 6, s);
    test_im2col(2, 3, 32, 8, 16);
    test_im2col(1, 1, 28, 7, 12);
    dnnl_stream_destroy(s);
    return check_done("test_ops");
}
