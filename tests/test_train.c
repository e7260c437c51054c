/* test_train.c - training: gradients by finite differences (per op and for whole small
 * models: dense, removed blocks, 0 < lambda < 1, distilled), oneDNN against the C reference,
 * the optimiser, checkpoints (the finetune output computes what training computed at
 * lambda = 0), and the data sets (IDX, tar, folders, malformed files).
 *
 * Finite differences run on double-precision forward passes written here from the equations
 * (METHOD.md sections 1, 2, 4), so they are exact to ~1e-9 and the 1e-3 bound measures the
 * engine's f32 analytic gradients, not rounding. The engine's own f32 forward is compared
 * with the same double forward.
 *
 * With --fixture DIR (used by tests/test_train_torch.py): compares the gradients of
 * DIR/model.safetensors on DIR/input.npy and DIR/labels.npy with PyTorch's DIR/grads.safetensors.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>
#include <unistd.h>
#include <zlib.h>

#include "check.h"
#include "data.h"
#include "grad.h"
#include "npy.h"
#include "optim.h"
#include "safetensors.h"
#include "train.h"
#include "vit.h"

static unsigned seed = 777;
static char tmpdir[256];

static double rnd(void) { return check_randn(&seed); }

static float *randf(size_t n, double scale)
{
    float *v = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) v[i] = (float)(rnd() * scale);
    return v;
}

/* max |a - b| / max |b| */
static double rel_err(const double *a, const double *b, size_t n)
{
    double d = 0, m = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs(a[i] - b[i]);
        if (e > d || isnan(e)) d = isnan(e) ? INFINITY : e;
        if (fabs(b[i]) > m) m = fabs(b[i]);
    }
    return m > 0 ? d / m : d;
}

static double *to_d(const float *x, size_t n)
{
    double *d = malloc(n * sizeof(double));
    for (size_t i = 0; i < n; i++) d[i] = x[i];
    return d;
}

/* ---- per-op checks ------------------------------------------------------------------------ */

/* Objective of each op: L = sum(w * op(x)) in double. */
static double ln_obj(const double *x, const double *g, const double *b, const double *w, int R, int D, double eps)
{
    double L = 0;
    for (int r = 0; r < R; r++) {
        double mu = 0, v = 0;
        for (int i = 0; i < D; i++) mu += x[r * D + i];
        mu /= D;
        for (int i = 0; i < D; i++) v += (x[r * D + i] - mu) * (x[r * D + i] - mu);
        v /= D;
        for (int i = 0; i < D; i++) L += w[r * D + i] * ((x[r * D + i] - mu) / sqrt(v + eps) * g[i] + b[i]);
    }
    return L;
}

static double gelu_d(double u) { return 0.5 * u * (1 + erf(u / sqrt(2.0))); }

static double sm_obj(const double *x, const double *w, int R, int n)
{
    double L = 0;
    for (int r = 0; r < R; r++) {
        double mx = x[r * n], s = 0;
        for (int i = 1; i < n; i++) mx = fmax(mx, x[r * n + i]);
        for (int i = 0; i < n; i++) s += exp(x[r * n + i] - mx);
        for (int i = 0; i < n; i++) L += w[r * n + i] * exp(x[r * n + i] - mx) / s;
    }
    return L;
}

/* central difference of f at every element of v (in place perturbation) */
#define FD(out, v, n, expr)                                    \
    for (size_t i_ = 0; i_ < (n); i_++) {                      \
        double keep_ = (v)[i_], h_ = 1e-6 * fmax(1.0, fabs(keep_)); \
        (v)[i_] = keep_ + h_;                                  \
        double up_ = (expr);                                   \
        (v)[i_] = keep_ - h_;                                  \
        double dn_ = (expr);                                   \
        (v)[i_] = keep_;                                       \
        (out)[i_] = (up_ - dn_) / (2 * h_);                    \
    }

static void check_grad(const char *what, const float *got, const double *fd, size_t n)
{
    double *g = to_d(got, n), e = rel_err(g, fd, n);
    CHECK(e <= 1e-3, "%s: relative error %.2e", what, e);
    printf("  %-40s rel err %.2e\n", what, e);
    free(g);
}

static void test_ops(int reference)
{
    char err[256];
    gr_ctx *g;
    CHECK(gr_new(reference, &g, err, sizeof err) == VT_OK, "%s", err);
    printf("ops (%s):\n", reference ? "reference" : "oneDNN");
    /* LayerNorm: R rows of D with a large mean, as residual streams have */
    int R = 7, D = 24;
    float *x = randf((size_t)R * D, 2), *ga = randf(D, 1), *be = randf(D, 1), *w = randf((size_t)R * D, 1);
    for (int i = 0; i < R * D; i++) x[i] += 3;
    float *y = malloc((size_t)R * D * 4), *mu = malloc(R * 4), *var = malloc(R * 4), *dx = malloc((size_t)R * D * 4);
    float *dg = malloc(D * 4), *db = malloc(D * 4);
    CHECK(gr_ln_fwd(g, R, D, 1e-6f, x, ga, be, y, mu, var, err, sizeof err) == VT_OK, "%s", err);
    CHECK(gr_ln_bwd(g, R, D, 1e-6f, x, ga, mu, var, w, dx, dg, db, err, sizeof err) == VT_OK, "%s", err);
    double *xd = to_d(x, (size_t)R * D), *gd = to_d(ga, D), *bd = to_d(be, D), *wd = to_d(w, (size_t)R * D);
    double *fd = malloc((size_t)R * D * sizeof(double));
    FD(fd, xd, (size_t)R * D, ln_obj(xd, gd, bd, wd, R, D, 1e-6));
    check_grad("layernorm dx", dx, fd, (size_t)R * D);
    FD(fd, gd, (size_t)D, ln_obj(xd, gd, bd, wd, R, D, 1e-6));
    check_grad("layernorm dgamma", dg, fd, D);
    FD(fd, bd, (size_t)D, ln_obj(xd, gd, bd, wd, R, D, 1e-6));
    check_grad("layernorm dbeta", db, fd, D);
    /* forward against double */
    double ym = 0, yd = 0;
    for (int r = 0; r < R; r++)
        for (int i = 0; i < D; i++) {
            double m = 0, v = 0;
            for (int k = 0; k < D; k++) m += xd[r * D + k];
            m /= D;
            for (int k = 0; k < D; k++) v += (xd[r * D + k] - m) * (xd[r * D + k] - m);
            v /= D;
            double want = (xd[r * D + i] - m) / sqrt(v + 1e-6) * gd[i] + bd[i];
            yd = fmax(yd, fabs(y[r * D + i] - want));
            ym = fmax(ym, fabs(want));
        }
    CHECK(yd <= 1e-5 * ym, "layernorm forward: %g", yd);
    free(xd); free(gd); free(bd); free(wd); free(fd);
    free(x); free(ga); free(be); free(w); free(y); free(mu); free(var); free(dx); free(dg); free(db);

    /* GELU: exact derivative */
    size_t n = 301;
    float *u = randf(n, 2), *dy = randf(n, 1), *gy = malloc(n * 4), *du = malloc(n * 4);
    CHECK(gr_gelu_fwd(g, n, u, gy, err, sizeof err) == VT_OK, "%s", err);
    CHECK(gr_gelu_bwd(g, n, u, dy, du, err, sizeof err) == VT_OK, "%s", err);
    double *fdg = malloc(n * sizeof(double)), ge = 0;
    for (size_t i = 0; i < n; i++) {
        double h = 1e-6, v = u[i];
        fdg[i] = dy[i] * (gelu_d(v + h) - gelu_d(v - h)) / (2 * h);
        ge = fmax(ge, fabs(gy[i] - gelu_d(v)));
    }
    CHECK(ge <= 1e-6 * 4, "gelu forward: %g", ge);
    check_grad("gelu du", du, fdg, n);
    free(u); free(dy); free(gy); free(du); free(fdg);

    /* softmax */
    int rows = 6, cols = 17;
    float *s = randf((size_t)rows * cols, 2), *p = malloc((size_t)rows * cols * 4), *dp = randf((size_t)rows * cols, 1);
    float *ds = malloc((size_t)rows * cols * 4);
    memcpy(p, s, (size_t)rows * cols * 4);
    CHECK(gr_softmax_fwd(g, rows, cols, p, err, sizeof err) == VT_OK, "%s", err);
    CHECK(gr_softmax_bwd(g, rows, cols, p, dp, ds, err, sizeof err) == VT_OK, "%s", err);
    double *sd = to_d(s, (size_t)rows * cols), *dpd = to_d(dp, (size_t)rows * cols), *fds = malloc((size_t)rows * cols * 8);
    FD(fds, sd, (size_t)rows * cols, sm_obj(sd, dpd, rows, cols));
    check_grad("softmax ds", ds, fds, (size_t)rows * cols);
    free(s); free(p); free(dp); free(ds); free(sd); free(dpd); free(fds);

    /* linear y = x W^T + b as the model runs it, and its three gradients as products */
    int M = 9, I = 13, O = 11;
    float *X = randf((size_t)M * I, 1), *W = randf((size_t)O * I, 0.5), *B = randf(O, 0.5), *Wy = randf((size_t)M * O, 1);
    float *Y = malloc((size_t)M * O * 4), *dX = malloc((size_t)M * I * 4), *dW = malloc((size_t)O * I * 4), *dB = malloc(O * 4);
    CHECK(gr_matmul(g, gr_mat(X, M, I), gr_t(W, I, O), B, gr_mat(Y, M, O), 1, 0, err, sizeof err) == VT_OK, "%s", err);
    CHECK(gr_matmul(g, gr_mat(Wy, M, O), gr_mat(W, O, I), NULL, gr_mat(dX, M, I), 1, 0, err, sizeof err) == VT_OK, "%s", err);
    CHECK(gr_matmul(g, gr_t(Wy, O, M), gr_mat(X, M, I), NULL, gr_mat(dW, O, I), 1, 0, err, sizeof err) == VT_OK, "%s", err);
    CHECK(gr_colsum(g, M, O, Wy, dB, err, sizeof err) == VT_OK, "%s", err);
    double *Xd = to_d(X, (size_t)M * I), *Wd = to_d(W, (size_t)O * I), *Bd = to_d(B, O), *Wyd = to_d(Wy, (size_t)M * O);
#define LIN_OBJ() ({ double L_ = 0; for (int r_ = 0; r_ < M; r_++) for (int o_ = 0; o_ < O; o_++) { double a_ = Bd[o_]; \
        for (int i2 = 0; i2 < I; i2++) a_ += Xd[r_ * I + i2] * Wd[o_ * I + i2]; L_ += Wyd[r_ * O + o_] * a_; } L_; })
    double *fl = malloc((size_t)(M > O ? M : O) * I * 8);
    FD(fl, Xd, (size_t)M * I, LIN_OBJ());
    check_grad("linear dx", dX, fl, (size_t)M * I);
    FD(fl, Wd, (size_t)O * I, LIN_OBJ());
    check_grad("linear dW", dW, fl, (size_t)O * I);
    FD(fl, Bd, (size_t)O, LIN_OBJ());
    check_grad("linear db", dB, fl, O);
    /* accumulate + alpha */
    float *Y2 = malloc((size_t)M * O * 4);
    memcpy(Y2, Wy, (size_t)M * O * 4);
    CHECK(gr_matmul(g, gr_mat(X, M, I), gr_t(W, I, O), NULL, gr_mat(Y2, M, O), 0.5f, 1, err, sizeof err) == VT_OK, "%s", err);
    double ad = 0;
    for (int r = 0; r < M; r++)
        for (int o = 0; o < O; o++) {
            double a = 0;
            for (int i = 0; i < I; i++) a += Xd[r * I + i] * Wd[o * I + i];
            ad = fmax(ad, fabs(Y2[r * O + o] - (0.5 * a + Wy[r * O + o])));
        }
    CHECK(ad <= 1e-5, "matmul alpha+accumulate: %g", ad);
#undef LIN_OBJ
    free(X); free(W); free(B); free(Wy); free(Y); free(dX); free(dW); free(dB); free(Y2);
    free(Xd); free(Wd); free(Bd); free(Wyd); free(fl);
    gr_free(g);
}

/* Every strided attention product of the training step, oneDNN against the reference. */
static void test_attention_views(void)
{
    char err[256];
    gr_ctx *gd, *gref;
    gr_new(0, &gd, err, sizeof err);
    gr_new(1, &gref, err, sizeof err);
    int B = 3, H = 2, N = 7, D = 12, dh = D / H;
    float *qkv = randf((size_t)B * N * 3 * D, 1), *P = randf((size_t)B * H * N * N, 1), *dO = randf((size_t)B * N * D, 1);
    size_t nS = (size_t)B * H * N * N, nQ = (size_t)B * N * 3 * D;
    float *a = calloc(nQ > nS ? nQ : nS, 4), *b = calloc(nQ > nS ? nQ : nS, 4);
    struct { gr_view A, B, C; float alpha; size_t n; const char *what; } cs[] = {
        {gr_view4(qkv, B, H, N, dh, (int64_t)N * 3 * D, dh, 3 * D, 1), gr_view4(qkv + D, B, H, dh, N, (int64_t)N * 3 * D, dh, 1, 3 * D),
         gr_view4(NULL, B, H, N, N, (int64_t)H * N * N, N * N, N, 1), 0.4f, nS, "S = a Q K^T"},
        {gr_view4(P, B, H, N, N, (int64_t)H * N * N, N * N, N, 1), gr_view4(qkv + 2 * D, B, H, N, dh, (int64_t)N * 3 * D, dh, 3 * D, 1),
         gr_view4(NULL, B, H, N, dh, (int64_t)N * D, dh, D, 1), 1, (size_t)B * N * D, "O = P V"},
        {gr_view4(dO, B, H, N, dh, (int64_t)N * D, dh, D, 1), gr_view4(qkv + 2 * D, B, H, dh, N, (int64_t)N * 3 * D, dh, 1, 3 * D),
         gr_view4(NULL, B, H, N, N, (int64_t)H * N * N, N * N, N, 1), 1, nS, "dP = dO V^T"},
        {gr_view4(P, B, H, N, N, (int64_t)H * N * N, N * N, 1, N), gr_view4(dO, B, H, N, dh, (int64_t)N * D, dh, D, 1),
         gr_view4(NULL, B, H, N, dh, (int64_t)N * 3 * D, dh, 3 * D, 1), 1, nQ, "dV = P^T dO"},
        {gr_view4(P, B, H, N, N, (int64_t)H * N * N, N * N, N, 1), gr_view4(qkv + D, B, H, N, dh, (int64_t)N * 3 * D, dh, 3 * D, 1),
         gr_view4(NULL, B, H, N, dh, (int64_t)N * 3 * D, dh, 3 * D, 1), 0.4f, nQ, "dQ = a dS K"},
        {gr_view4(P, B, H, N, N, (int64_t)H * N * N, N * N, 1, N), gr_view4(qkv, B, H, N, dh, (int64_t)N * 3 * D, dh, 3 * D, 1),
         gr_view4(NULL, B, H, N, dh, (int64_t)N * 3 * D, dh, 3 * D, 1), 0.4f, nQ, "dK = a dS^T Q"},
    };
    for (size_t i = 0; i < sizeof cs / sizeof *cs; i++) {
        memset(a, 0, cs[i].n * 4);
        memset(b, 0, cs[i].n * 4);
        gr_view ca = cs[i].C, cb = cs[i].C;
        ca.p = a;
        cb.p = b;
        CHECK(gr_matmul(gd, cs[i].A, cs[i].B, NULL, ca, cs[i].alpha, 0, err, sizeof err) == VT_OK, "%s: %s", cs[i].what, err);
        CHECK(gr_matmul(gref, cs[i].A, cs[i].B, NULL, cb, cs[i].alpha, 0, err, sizeof err) == VT_OK, "%s: %s", cs[i].what, err);
        double m, d = max_abs_diff(a, b, cs[i].n, &m);
        CHECK(d <= 1e-5 * fmax(1, m), "%s: oneDNN vs reference %g", cs[i].what, d);
        printf("  attention %-16s oneDNN vs reference max|diff| %.2e (%s)\n", cs[i].what, d,
               gr_prim_impl(gd, gr_prim_count(gd) - 1));
    }
    free(qkv); free(P); free(dO); free(a); free(b);
    gr_free(gd);
    gr_free(gref);
}

/* ---- whole model ------------------------------------------------------------------------- */

typedef struct {
    const vit_config *c;
    tr_model *m;
    const double *p;      /* parameters in tr_params layout */
    const float *x;       /* images */
    const int *y;
    int B;
    float smoothing;
} dmodel;

static const double *P_(const dmodel *d, const char *name)
{
    const tr_tensor *t = tr_find(d->m, name);
    return t ? d->p + t->offset : NULL;
}

static const double *BP(const dmodel *d, int b, const char *suf)
{
    char name[96];
    snprintf(name, sizeof name, "blocks.%d.%s", b, suf);
    return P_(d, name);
}

static void d_ln(const double *x, double *y, int R, int D, const double *g, const double *b)
{
    for (int r = 0; r < R; r++) {
        double mu = 0, v = 0;
        for (int i = 0; i < D; i++) mu += x[r * D + i];
        mu /= D;
        for (int i = 0; i < D; i++) v += (x[r * D + i] - mu) * (x[r * D + i] - mu);
        v /= D;
        for (int i = 0; i < D; i++) y[r * D + i] = (x[r * D + i] - mu) / sqrt(v + 1e-6) * g[i] + b[i];
    }
}

static void d_lin(const double *x, const double *W, const double *b, double *y, int R, int I, int O)
{
    for (int r = 0; r < R; r++)
        for (int o = 0; o < O; o++) {
            double a = b ? b[o] : 0;
            for (int i = 0; i < I; i++) a += x[r * I + i] * W[o * I + i];
            y[r * O + o] = a;
        }
}

/* Logits (B, K) in double, straight from METHOD.md sections 1, 2 and 4. */
static void d_forward(const dmodel *d, double *logits)
{
    const vit_config *c = d->c;
    int D = c->dim, H = c->heads, F = c->mlp_dim, K = c->classes, S = c->image_size, P = c->patch, C = c->channels;
    int G = S / P, Np = G * G, T = 1 + c->distilled, N = T + Np, dh = D / H;
    double *x = calloc((size_t)N * D, 8), *xn = calloc((size_t)N * D, 8), *qkv = calloc((size_t)N * 3 * D, 8);
    double *o = calloc((size_t)N * D, 8), *a = calloc((size_t)N * D, 8), *u = calloc((size_t)N * F, 8), *s = calloc(N, 8);
    for (int b = 0; b < d->B; b++) {
        const double *pw = P_(d, "patch_embed.proj.weight"), *pb = P_(d, "patch_embed.proj.bias"), *pos = P_(d, "pos_embed");
        for (int i = 0; i < D; i++) {
            x[i] = P_(d, "cls_token")[i] + pos[i];
            if (T == 2) x[D + i] = P_(d, "dist_token")[i] + pos[D + i];
        }
        for (int gy = 0; gy < G; gy++)
            for (int gx = 0; gx < G; gx++)
                for (int e = 0; e < D; e++) {
                    double acc = pb[e];
                    for (int ch = 0; ch < C; ch++)
                        for (int ky = 0; ky < P; ky++)
                            for (int kx = 0; kx < P; kx++)
                                acc += pw[((e * C + ch) * P + ky) * P + kx] *
                                       d->x[(((size_t)b * C + ch) * S + gy * P + ky) * S + gx * P + kx];
                    int t = T + gy * G + gx;
                    x[t * D + e] = acc + pos[t * D + e];
                }
        for (int l = 0; l < c->depth; l++) {
            double lam = tr_lambda(d->m, l);
            if (lam > 0) {
                d_ln(x, xn, N, D, BP(d, l, "norm1.weight"), BP(d, l, "norm1.bias"));
                d_lin(xn, BP(d, l, "attn.qkv.weight"), BP(d, l, "attn.qkv.bias"), qkv, N, D, 3 * D);
                for (int h = 0; h < H; h++)
                    for (int i = 0; i < N; i++) {
                        double mx = -1e300, sum = 0;
                        for (int j = 0; j < N; j++) {
                            double v = 0;
                            for (int e = 0; e < dh; e++) v += qkv[i * 3 * D + h * dh + e] * qkv[j * 3 * D + D + h * dh + e];
                            s[j] = v / sqrt((double)dh);
                            mx = fmax(mx, s[j]);
                        }
                        for (int j = 0; j < N; j++) { s[j] = exp(s[j] - mx); sum += s[j]; }
                        for (int e = 0; e < dh; e++) {
                            double v = 0;
                            for (int j = 0; j < N; j++) v += s[j] / sum * qkv[j * 3 * D + 2 * D + h * dh + e];
                            o[i * D + h * dh + e] = v;
                        }
                    }
                d_lin(o, BP(d, l, "attn.proj.weight"), BP(d, l, "attn.proj.bias"), a, N, D, D);
                for (int i = 0; i < N * D; i++) x[i] = (2 - lam) * x[i] + lam * a[i];
            } else {
                for (int i = 0; i < N * D; i++) x[i] *= 2;
            }
            d_ln(x, xn, N, D, BP(d, l, "norm2.weight"), BP(d, l, "norm2.bias"));
            d_lin(xn, BP(d, l, "mlp.fc1.weight"), BP(d, l, "mlp.fc1.bias"), u, N, D, F);
            for (int i = 0; i < N * F; i++) u[i] = gelu_d(u[i]);
            d_lin(u, BP(d, l, "mlp.fc2.weight"), BP(d, l, "mlp.fc2.bias"), a, N, F, D);
            for (int i = 0; i < N * D; i++) x[i] += a[i];
        }
        d_ln(x, xn, T, D, P_(d, "norm.weight"), P_(d, "norm.bias"));
        double *lg = logits + (size_t)b * K, l2[1024];
        d_lin(xn, P_(d, "head.weight"), P_(d, "head.bias"), lg, 1, D, K);
        if (T == 2) {
            d_lin(xn + D, P_(d, "head_dist.weight"), P_(d, "head_dist.bias"), l2, 1, D, K);
            for (int k = 0; k < K; k++) lg[k] = (lg[k] + l2[k]) / 2;
        }
    }
    free(x); free(xn); free(qkv); free(o); free(a); free(u); free(s);
}

static double d_loss(const dmodel *d)
{
    int K = d->c->classes;
    double *lg = malloc((size_t)d->B * K * 8), L = 0;
    d_forward(d, lg);
    for (int b = 0; b < d->B; b++) {
        double mx = lg[b * K], s = 0;
        for (int k = 1; k < K; k++) mx = fmax(mx, lg[b * K + k]);
        for (int k = 0; k < K; k++) s += exp(lg[b * K + k] - mx);
        for (int k = 0; k < K; k++) {
            double q = d->smoothing / K + (k == d->y[b] ? 1 - d->smoothing : 0);
            L -= q * (lg[b * K + k] - mx - log(s));
        }
    }
    free(lg);
    return L / d->B;
}

static void fill_random(tr_model *m, double scale)
{
    float *p = tr_params(m);
    for (int i = 0; i < tr_tensor_count(m); i++) {
        const tr_tensor *t = tr_tensor_at(m, i);
        int norm_w = strstr(t->name, "norm") && strstr(t->name, ".weight");
        for (size_t k = 0; k < t->numel; k++) p[t->offset + k] = (float)(norm_w ? 1 + 0.2 * rnd() : scale * rnd());
    }
}

/* Gradients of m (both back ends) against finite differences of the double model. */
static void check_model(const char *what, tr_model *m, int B)
{
    const vit_config *c = tr_config(m);
    char err[256];
    size_t per = (size_t)c->channels * c->image_size * c->image_size, n = tr_numel(m);
    float *x = randf((size_t)B * per, 1), *lg = malloc((size_t)B * c->classes * 4), *dl = malloc((size_t)B * c->classes * 4);
    int *y = malloc((size_t)B * sizeof(int));
    for (int b = 0; b < B; b++) y[b] = b % c->classes;
    double *p = to_d(tr_params(m), n), *fd = calloc(n, sizeof(double));
    dmodel dm = {c, m, p, x, y, B, 0.1f};
    for (int i = 0; i < tr_tensor_count(m); i++) {
        const tr_tensor *t = tr_tensor_at(m, i);
        FD(fd + t->offset, p + t->offset, t->numel, d_loss(&dm));
    }
    double *dlog = malloc((size_t)B * c->classes * 8);
    d_forward(&dm, dlog);
    printf("%s:\n", what);
    for (int reference = 0; reference < 2; reference++) {
        CHECK(tr_prepare(m, B, reference, err, sizeof err) == VT_OK, "%s", err);
        CHECK(tr_forward(m, x, B, lg, err, sizeof err) == VT_OK, "%s", err);
        double fe = 0, fm = 0;
        for (int i = 0; i < B * c->classes; i++) { fe = fmax(fe, fabs(lg[i] - dlog[i])); fm = fmax(fm, fabs(dlog[i])); }
        CHECK(fe <= 1e-4 * fmax(1, fm), "%s: f32 forward vs double %g", what, fe);
        opt_ce_loss(lg, y, B, c->classes, 0.1f, dl, NULL);
        CHECK(tr_backward(m, dl, err, sizeof err) == VT_OK, "%s", err);
        double worst = 0;
        const char *wname = "";
        for (int i = 0; i < tr_tensor_count(m); i++) {
            const tr_tensor *t = tr_tensor_at(m, i);
            double *gg = to_d(tr_grads(m) + t->offset, t->numel), e = rel_err(gg, fd + t->offset, t->numel);
            double fmaxv = 0;
            for (size_t k = 0; k < t->numel; k++) fmaxv = fmax(fmaxv, fabs(fd[t->offset + k]));
            if (fmaxv == 0) e = 0;
            for (size_t k = 0; fmaxv == 0 && k < t->numel; k++) e = fmax(e, fabs(gg[k]));
            CHECK(e <= 1e-3, "%s (%s): %s relative error %.2e", what, reference ? "reference" : "oneDNN", t->name, e);
            if (e > worst) { worst = e; wname = t->name; }
            free(gg);
        }
        printf("  %-9s forward vs double %.2e; worst gradient rel err %.2e (%s) over %d tensors\n",
               reference ? "reference" : "oneDNN", fe, worst, wname, tr_tensor_count(m));
    }
    free(x); free(lg); free(dl); free(y); free(p); free(fd); free(dlog);
}

static vit_config small_cfg(void)
{
    vit_config c;
    memset(&c, 0, sizeof c);
    c.image_size = 8; c.patch = 4; c.channels = 2; c.dim = 12; c.depth = 3; c.heads = 2; c.mlp_dim = 20;
    c.classes = 5; c.ln_eps = 1e-6f; c.crop_pct = 1.0f;
    for (int i = 0; i < 3; i++) { c.mean[i] = 0.5f; c.std[i] = 0.5f; }
    return c;
}

static void test_models(void)
{
    char err[256];
    tr_model *m;
    vit_config c = small_cfg();
    CHECK(tr_new(&c, 1, &m, err, sizeof err) == VT_OK, "%s", err);
    fill_random(m, 0.3);
    check_model("dense model (batch 4: two equal shards)", m, 4);
    tr_set_lambda(m, 0x5, 0.5f);
    check_model("blocks 0,2 diluted at lambda 0.5", m, 3);
    tr_set_lambda(m, 0x5, 0.0f);
    check_model("blocks 0,2 at lambda 0 (removed path, attention present)", m, 2);
    tr_free(m);
    c.removed = 0x2;
    CHECK(tr_new(&c, 2, &m, err, sizeof err) == VT_OK, "%s", err);
    fill_random(m, 0.3);
    tr_set_lambda(m, 0x1, 0.3f);
    check_model("block 1 removed, block 0 at lambda 0.3", m, 3);
    tr_free(m);
    c.removed = 0;
    c.distilled = 1;
    c.channels = 1;
    CHECK(tr_new(&c, 3, &m, err, sizeof err) == VT_OK, "%s", err);
    fill_random(m, 0.3);
    tr_set_lambda(m, 0x4, 0.7f);
    check_model("distilled, block 2 at lambda 0.7", m, 3);
    tr_free(m);
}

/* The written model (vit_load + the serving forward) computes what training computes at
 * lambda = 0 for the removed blocks. */
static void test_checkpoint(void)
{
    char err[256], path[512];
    tr_model *m;
    vit_config c = small_cfg();
    c.image_size = 12; c.depth = 4; c.classes = 7;
    CHECK(tr_new(&c, 5, &m, err, sizeof err) == VT_OK, "%s", err);
    fill_random(m, 0.2);
    const char *names[7] = {"a", "b", "c", "d", "e", "f", "g"};
    tr_set_labels(m, names, 7);
    tr_set_lambda(m, 0x9, 0.0f);
    int B = 4;
    size_t per = (size_t)c.channels * c.image_size * c.image_size;
    float *x = randf(B * per, 1), *a = malloc((size_t)B * 7 * 4), *b = malloc((size_t)B * 7 * 4);
    CHECK(tr_prepare(m, B, 0, err, sizeof err) == VT_OK, "%s", err);
    CHECK(tr_forward(m, x, B, a, err, sizeof err) == VT_OK, "%s", err);
    snprintf(path, sizeof path, "%s/ft.safetensors", tmpdir);
    CHECK(tr_save_model(m, path, 0x9, err, sizeof err) == VT_OK, "%s", err);
    vit_model *vm = NULL;
    vit_runner *vr = NULL;
    CHECK(vit_load(path, NULL, &vm, err, sizeof err) == VT_OK, "%s", err);
    if (vm) {
        const vit_config *vc = vit_config_of(vm);
        CHECK(vc->removed == 0x9, "removed mask %llx", (unsigned long long)vc->removed);
        CHECK(vc->heads == 2 && vc->classes == 7 && vc->crop_pct == 1.0f, "config");
        CHECK(vit_label(vm, 6) && !strcmp(vit_label(vm, 6), "g"), "labels");
        CHECK(vit_runner_new(vm, B, &vr, err, sizeof err) == VT_OK, "%s", err);
        CHECK(vit_forward(vr, x, B, b, NULL, err, sizeof err) == VT_OK, "%s", err);
        double mx, d = max_abs_diff(b, a, (size_t)B * 7, &mx);
        CHECK(d <= 1e-5 * fmax(1, mx), "served vs training forward at lambda 0: %g", d);
        printf("checkpoint: blocks 0,3 removed; served logits vs training forward at lambda 0: max|diff| %.2e\n", d);
    }
    st_file *f;
    CHECK(st_open(path, &f, err, sizeof err) == VT_OK, "%s", err);
    CHECK(!st_find(f, "blocks.0.attn.qkv.weight") && !st_find(f, "blocks.3.norm1.weight") && st_find(f, "blocks.1.attn.qkv.weight"),
          "attention tensors of removed blocks must be dropped");
    CHECK(st_meta(f, "vitd.removed_blocks") && !strcmp(st_meta(f, "vitd.removed_blocks"), "0,3"), "removed_blocks metadata");
    st_close(f);
    /* state round trip */
    snprintf(path, sizeof path, "%s/state.safetensors", tmpdir);
    float *mom = randf(tr_numel(m), 1);
    const char *bn[1] = {"adam_m"};
    const float *bb[1] = {mom};
    CHECK(tr_save_state(m, path, "{\"epochs_done\":3}", 1, bn, bb, err, sizeof err) == VT_OK, "%s", err);
    tr_model *m2 = NULL;
    char *js = NULL;
    float *back[1];
    CHECK(tr_load_state(path, &m2, &js, 1, bn, back, err, sizeof err) == VT_OK, "%s", err);
    if (m2) {
        CHECK(!memcmp(tr_params(m2), tr_params(m), tr_numel(m) * 4), "state parameters");
        int same = back[0] != NULL;
        for (int i = 0; same && i < tr_tensor_count(m); i++) {
            const tr_tensor *t = tr_tensor_at(m, i);
            same = !memcmp(back[0] + t->offset, mom + t->offset, t->numel * 4);
        }
        CHECK(same, "state moments");
        CHECK(js && strstr(js, "epochs_done"), "state json");
        CHECK(tr_label(m2, 3) && !strcmp(tr_label(m2, 3), "d"), "state labels");
        free(back[0]);
    }
    free(js);
    tr_free(m2);
    /* a loaded checkpoint trains the same tensors */
    tr_model *m3 = NULL;
    snprintf(path, sizeof path, "%s/ft.safetensors", tmpdir);
    CHECK(tr_load(path, &m3, err, sizeof err) == VT_OK, "%s", err);
    if (m3) CHECK(tr_find(m3, "blocks.0.attn.qkv.weight") == NULL && tr_find(m3, "blocks.1.attn.qkv.weight"), "tr_load removed blocks");
    tr_free(m3);
    vit_runner_free(vr);
    vit_free(vm);
    tr_free(m);
    free(x); free(a); free(b); free(mom);
}

/* ---- optimiser ---------------------------------------------------------------------------- */

static void test_optim(void)
{
    char err[256];
    opt_adamw o;
    CHECK(opt_adamw_init(&o, 4, 0.1f, err, sizeof err) == VT_OK, "%s", err);
    float p[4] = {1, -2, 3, 0.5f}, g[4] = {0.1f, 0.2f, -0.3f, 0.0f};
    opt_group gr[2] = {{0, 2, 1}, {2, 2, 0}};
    double pd[4] = {1, -2, 3, 0.5}, m[4] = {0}, v[4] = {0};
    for (int t = 1; t <= 3; t++) {
        opt_adamw_step(&o, p, g, gr, 2, 0.01f);
        for (int i = 0; i < 4; i++) {
            if (i < 2) pd[i] *= 1 - 0.01 * 0.1;
            m[i] = 0.9 * m[i] + 0.1 * g[i];
            v[i] = 0.999 * v[i] + 0.001 * g[i] * g[i];
            pd[i] -= 0.01 * (m[i] / (1 - pow(0.9, t))) / (sqrt(v[i] / (1 - pow(0.999, t))) + 1e-8);
        }
    }
    for (int i = 0; i < 4; i++) CHECK(fabs(p[i] - pd[i]) < 1e-6, "adamw p[%d] %g vs %g", i, p[i], pd[i]);
    opt_adamw_free(&o);
    /* clipping */
    float gc[4] = {3, 4, 0, 0};
    opt_group all = {0, 4, 0};
    double nrm = opt_clip(gc, &all, 1, 1.0);
    CHECK(fabs(nrm - 5) < 1e-6 && fabs(gc[0] - 0.6f) < 1e-5 && fabs(gc[1] - 0.8f) < 1e-5, "clip");
    /* loss and its gradient */
    int K = 6, B = 3, y[3] = {0, 5, 2};
    float *z = randf((size_t)B * K, 2), dz[18];
    double l0 = opt_ce_loss(z, y, B, K, 0.1f, dz, NULL), fd[18];
    double *zd = to_d(z, (size_t)B * K);
    for (int i = 0; i < B * K; i++) {
        float keep = z[i];
        z[i] = keep + 1e-3f;
        double up = opt_ce_loss(z, y, B, K, 0.1f, NULL, NULL);
        z[i] = keep - 1e-3f;
        double dn = opt_ce_loss(z, y, B, K, 0.1f, NULL, NULL);
        z[i] = keep;
        fd[i] = (up - dn) / (2e-3);
    }
    check_grad("cross-entropy (smoothing 0.1) dlogits", dz, fd, (size_t)B * K);
    CHECK(l0 > 0, "loss");
    free(z); free(zd);
    /* schedule: warm-up reaches lr, cosine ends at min_lr */
    CHECK(fabs(opt_lr(9, 100, 10, 1e-3, 1e-5) - 1e-3) < 1e-12, "warm-up end");
    CHECK(fabs(opt_lr(0, 100, 10, 1e-3, 1e-5) - 1e-4) < 1e-12, "warm-up start");
    CHECK(fabs(opt_lr(99, 100, 10, 1e-3, 1e-5) - 1e-5) < 1e-12, "cosine end");
}

/* ---- data ---------------------------------------------------------------------------------- */

static void put_be32(uint8_t *p, uint32_t v) { p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = (uint8_t)v; }

static void write_file(const char *path, const void *buf, size_t n)
{
    FILE *f = fopen(path, "wb");
    fwrite(buf, 1, n, f);
    fclose(f);
}

static void write_gz(const char *path, const void *buf, size_t n)
{
    gzFile f = gzopen(path, "wb");
    gzwrite(f, buf, (unsigned)n);
    gzclose(f);
}

/* count images of 5x6 with pixel value (i * 7 + y * 6 + x) % 256, labels i % 3 */
static size_t make_idx(uint8_t **img, uint8_t **lab, int count)
{
    size_t n = 16 + (size_t)count * 30;
    *img = malloc(n);
    *lab = malloc(8 + (size_t)count);
    uint8_t *a = *img, *b = *lab;
    memcpy(a, "\0\0\x08\x03", 4);
    put_be32(a + 4, (uint32_t)count); put_be32(a + 8, 5); put_be32(a + 12, 6);
    for (int i = 0; i < count; i++)
        for (int k = 0; k < 30; k++) a[16 + i * 30 + k] = (uint8_t)((i * 7 + k) % 256);
    memcpy(b, "\0\0\x08\x01", 4);
    put_be32(b + 4, (uint32_t)count);
    for (int i = 0; i < count; i++) b[8 + i] = (uint8_t)(i % 3);
    return n;
}

static void test_idx(void)
{
    char err[256], dir[400], p1[500], p2[500];
    uint8_t *img, *lab;
    size_t n = make_idx(&img, &lab, 10);
    snprintf(dir, sizeof dir, "%s/idx", tmpdir);
    {
        char cmd[600];
        snprintf(cmd, sizeof cmd, "mkdir -p %s", dir);
        CHECK(system(cmd) == 0, "mkdir");
    }
    snprintf(p1, sizeof p1, "%s/train-images-idx3-ubyte.gz", dir);
    snprintf(p2, sizeof p2, "%s/train-labels-idx1-ubyte", dir);
    write_gz(p1, img, n);
    write_file(p2, lab, 18);
    ds_set *d = NULL;
    CHECK(ds_open(dir, "train", &d, err, sizeof err) == VT_OK, "%s", err);
    if (d) {
        CHECK(ds_count(d) == 10 && ds_classes(d) == 3 && ds_label(d, 4) == 1, "idx counts");
        CHECK(!strcmp(ds_class_name(d, 2), "2"), "idx names");
        ds_transform t = {.size = 6, .channels = 1, .crop_pct = 1, .interp = IMG_BICUBIC, .mean = {0.25f}, .std = {0.5f}};
        /* a non-square image: the eval path resizes the shorter side to 6 then centre-crops */
        int idx[2] = {3, 7}, labels[2];
        float *out = malloc(2 * 36 * 4);
        CHECK(ds_load_batch(d, &t, idx, 2, 0, out, labels, err, sizeof err) == VT_OK, "%s", err);
        CHECK(labels[0] == 0 && labels[1] == 1, "batch labels");
        free(out);
        ds_free(d);
    }
    /* square images: the evaluation path is x / 255 normalised, augmentation is seeded */
    {
        uint8_t *a = malloc(16 + 4 * 64), b[12];
        memcpy(a, "\0\0\x08\x03", 4);
        put_be32(a + 4, 4); put_be32(a + 8, 8); put_be32(a + 12, 8);
        for (int k = 0; k < 4 * 64; k++) a[16 + k] = (uint8_t)(k * 37 % 251);
        memcpy(b, "\0\0\x08\x01", 4);
        put_be32(b + 4, 4);
        for (int i = 0; i < 4; i++) b[8 + i] = (uint8_t)(9 - i);
        snprintf(dir, sizeof dir, "%s/fashion-sq", tmpdir);
        char cmd[600];
        snprintf(cmd, sizeof cmd, "mkdir -p %s", dir);
        CHECK(system(cmd) == 0, "mkdir");
        snprintf(p1, sizeof p1, "%s/t10k-images-idx3-ubyte", dir);
        snprintf(p2, sizeof p2, "%s/t10k-labels-idx1-ubyte", dir);
        write_file(p1, a, 16 + 4 * 64);
        write_file(p2, b, 12);
        CHECK(ds_open(dir, "test", &d, err, sizeof err) == VT_OK, "%s", err);
        if (d) {
            CHECK(ds_classes(d) == 10 && !strcmp(ds_class_name(d, 0), "T-shirt/top"), "fashion names");
            ds_transform t = {.size = 8, .channels = 1, .crop_pct = 1, .interp = IMG_BICUBIC, .mean = {0.286f}, .std = {0.353f},
                              .pad = 2, .flip = 1};
            int idx[4] = {0, 1, 2, 3}, labels[4];
            float out[4 * 64], aug1[4 * 64], aug2[4 * 64], aug3[4 * 64];
            CHECK(ds_load_batch(d, &t, idx, 4, 0, out, labels, err, sizeof err) == VT_OK, "%s", err);
            double e = 0;
            for (int k = 0; k < 4 * 64; k++) e = fmax(e, fabs(out[k] - ((float)a[16 + k] / 255.0f - 0.286f) / 0.353f));
            CHECK(e == 0, "eval path on IDX is x/255 normalised (diff %g)", e);
            t.augment = 1;
            ds_load_batch(d, &t, idx, 4, 11, aug1, labels, err, sizeof err);
            ds_load_batch(d, &t, idx, 4, 11, aug2, labels, err, sizeof err);
            ds_load_batch(d, &t, idx, 4, 12, aug3, labels, err, sizeof err);
            CHECK(!memcmp(aug1, aug2, sizeof aug1), "seeded augmentation is reproducible");
            CHECK(memcmp(aug1, aug3, sizeof aug1), "another seed augments differently");
            ds_free(d);
        }
        free(a);
    }
    /* malformed files */
    ds_idx x;
    uint8_t bad[32];
    memcpy(bad, img, 32);
    bad[0] = 1;
    CHECK(ds_idx_parse(bad, 32, "t", &x, err, sizeof err) == VT_EFORMAT, "bad magic");
    memcpy(bad, img, 32);
    bad[2] = 0x0d;
    CHECK(ds_idx_parse(bad, 32, "t", &x, err, sizeof err) == VT_EUNSUPPORTED, "float IDX");
    CHECK(ds_idx_parse(img, n - 1, "t", &x, err, sizeof err) == VT_EFORMAT && strstr(err, "truncated"), "truncated: %s", err);
    CHECK(ds_idx_parse(img, 10, "t", &x, err, sizeof err) == VT_EFORMAT, "truncated header");
    uint8_t *longer = malloc(n + 3);
    memcpy(longer, img, n);
    CHECK(ds_idx_parse(longer, n + 3, "t", &x, err, sizeof err) == VT_EFORMAT && strstr(err, "after"), "trailing: %s", err);
    free(longer);
    CHECK(ds_idx_parse(img, n, "t", &x, err, sizeof err) == VT_OK && x.ndim == 3 && x.dims[2] == 6, "good IDX");
    ds_idx_free(&x);
    /* label count mismatch */
    put_be32(lab + 4, 9);
    write_file(p2, lab, 17);
    snprintf(p2, sizeof p2, "%s/t10k-labels-idx1-ubyte", dir);
    write_file(p2, lab, 17);
    CHECK(ds_open(dir, "test", &d, err, sizeof err) == VT_EFORMAT && strstr(err, "labels for"), "label count: %s", err);
    /* corrupt gzip */
    snprintf(p1, sizeof p1, "%s/bad.gz", tmpdir);
    uint8_t gz[40] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 0xff, 0xfe, 0xfd};
    write_file(p1, gz, sizeof gz);
    CHECK(ds_idx_read(p1, &x, err, sizeof err) != VT_OK, "corrupt gzip");
    free(img);
    free(lab);
}

/* A tiny JPEG of w x h with a colour per class. */
static unsigned char *jpeg(int w, int h, int shade, unsigned long *len)
{
    unsigned char *rgb = malloc((size_t)w * h * 3), *out = NULL;
    for (int i = 0; i < w * h * 3; i++) rgb[i] = (unsigned char)((shade * 70 + i * 5) % 256);
    tjhandle tj = tjInitCompress();
    tjCompress2(tj, rgb, w, 0, h, TJPF_RGB, &out, len, TJSAMP_444, 95, 0);
    tjDestroy(tj);
    free(rgb);
    return out;
}

static size_t tar_entry(uint8_t *buf, const char *name, const void *data, size_t n, int corrupt_sum)
{
    memset(buf, 0, 512);
    snprintf((char *)buf, 100, "%s", name);
    snprintf((char *)buf + 100, 8, "%07o", 0644);
    snprintf((char *)buf + 124, 12, "%011o", (unsigned)n);
    snprintf((char *)buf + 136, 12, "%011o", 0);
    buf[156] = '0';
    memcpy(buf + 257, "ustar\00000", 8);
    memset(buf + 148, ' ', 8);
    unsigned sum = 0;
    for (int i = 0; i < 512; i++) sum += buf[i];
    snprintf((char *)buf + 148, 8, "%06o", sum + (corrupt_sum ? 1 : 0));
    memcpy(buf + 512, data, n);
    return 512 + ((n + 511) & ~(size_t)511);
}

static void test_tar_and_folder(void)
{
    char err[256], path[512];
    uint8_t *tar = calloc(1, 1 << 20);
    size_t off = 0;
    const char *names[] = {"./train/cat/b.jpg", "train/cat/a.jpg", "train/dog/x.jpg", "val/dog/y.jpg", "val/cat/z.jpg", "train/readme.txt"};
    for (int i = 0; i < 6; i++) {
        unsigned long n;
        unsigned char *j = jpeg(20 + i, 16, i, &n);
        off += tar_entry(tar + off, names[i], j, n, 0);
        tjFree(j);
    }
    off += 1024; /* end of archive */
    snprintf(path, sizeof path, "%s/data.tar", tmpdir);
    write_file(path, tar, off);
    ds_set *d = NULL;
    CHECK(ds_open(path, "train", &d, err, sizeof err) == VT_OK, "%s", err);
    if (d) {
        CHECK(ds_count(d) == 3 && ds_classes(d) == 2, "tar train: %d images %d classes", ds_count(d), ds_classes(d));
        CHECK(!strcmp(ds_class_name(d, 0), "cat") && ds_label(d, 2) == 1, "tar classes");
        ds_transform t = {.size = 8, .channels = 3, .crop_pct = 0.875f, .interp = IMG_BICUBIC,
                          .mean = {0.5f, 0.5f, 0.5f}, .std = {0.25f, 0.25f, 0.25f}, .flip = 1, .scale_min = 0.08f};
        int idx[3] = {0, 1, 2}, labels[3];
        float out[3 * 3 * 64], out2[3 * 3 * 64];
        CHECK(ds_load_batch(d, &t, idx, 3, 0, out, labels, err, sizeof err) == VT_OK, "%s", err);
        t.augment = 1;
        CHECK(ds_load_batch(d, &t, idx, 3, 5, out, labels, err, sizeof err) == VT_OK, "%s", err);
        CHECK(ds_load_batch(d, &t, idx, 3, 5, out2, labels, err, sizeof err) == VT_OK && !memcmp(out, out2, sizeof out),
              "tar augmentation reproducible");
        ds_free(d);
    }
    CHECK(ds_open(path, "test", &d, err, sizeof err) == VT_OK && d && ds_count(d) == 2, "tar val via test alias");
    ds_free(d);
    /* malformed archives */
    uint8_t save = tar[148];
    tar[148] = '7';
    write_file(path, tar, off);
    CHECK(ds_open(path, "train", &d, err, sizeof err) == VT_EFORMAT && strstr(err, "checksum"), "bad checksum: %s", err);
    tar[148] = save;
    write_file(path, tar, 700);
    CHECK(ds_open(path, "train", &d, err, sizeof err) == VT_EFORMAT && strstr(err, "truncated"), "truncated: %s", err);
    write_file(path, tar, 300);
    CHECK(ds_open(path, "train", &d, err, sizeof err) == VT_EFORMAT, "short header");
    memcpy(tar + 124, "12x4567", 7);
    memset(tar + 148, ' ', 8);
    unsigned sum = 0;
    for (int i = 0; i < 512; i++) sum += tar[i];
    snprintf((char *)tar + 148, 8, "%06o", sum);
    write_file(path, tar, off);
    CHECK(ds_open(path, "train", &d, err, sizeof err) == VT_EFORMAT && strstr(err, "size"), "bad size: %s", err);
    uint8_t junk[1024];
    memset(junk, 'A', sizeof junk);
    write_file(path, junk, sizeof junk);
    CHECK(ds_open(path, "train", &d, err, sizeof err) == VT_EFORMAT, "not a tar");
    free(tar);
    /* an ImageFolder without splits */
    char cmd[700];
    snprintf(cmd, sizeof cmd, "mkdir -p %s/folder/b_class %s/folder/a_class", tmpdir, tmpdir);
    CHECK(system(cmd) == 0, "mkdir");
    for (int i = 0; i < 3; i++) {
        unsigned long n;
        unsigned char *j = jpeg(12, 10 + i, i, &n);
        snprintf(path, sizeof path, "%s/folder/%s/img%d.JPG", tmpdir, i ? "a_class" : "b_class", i);
        write_file(path, j, n);
        tjFree(j);
    }
    snprintf(path, sizeof path, "%s/folder", tmpdir);
    CHECK(ds_open(path, "train", &d, err, sizeof err) == VT_OK, "%s", err);
    if (d) {
        CHECK(ds_count(d) == 3 && !strcmp(ds_class_name(d, 0), "a_class") && ds_label(d, 2) == 1, "folder order");
        ds_transform t = {.size = 8, .channels = 1, .crop_pct = 1, .interp = IMG_BILINEAR, .mean = {0.5f}, .std = {0.5f}};
        int idx[3] = {0, 1, 2}, labels[3];
        float out[3 * 64];
        CHECK(ds_load_batch(d, &t, idx, 3, 0, out, labels, err, sizeof err) == VT_OK, "%s", err);
        ds_free(d);
    }
    snprintf(path, sizeof path, "%s/folder/a_class/img1.JPG", tmpdir);
    write_file(path, "not a jpeg", 10);
    snprintf(path, sizeof path, "%s/folder", tmpdir);
    if (ds_open(path, "train", &d, err, sizeof err) == VT_OK) {
        ds_transform t = {.size = 8, .channels = 3, .crop_pct = 1, .mean = {0.5f, 0.5f, 0.5f}, .std = {1, 1, 1}};
        int idx[3] = {0, 1, 2}, labels[3];
        float out[3 * 3 * 64];
        CHECK(ds_load_batch(d, &t, idx, 3, 0, out, labels, err, sizeof err) != VT_OK, "undecodable image is an error");
        ds_free(d);
    }
    CHECK(ds_open("/nonexistent/data", "train", &d, err, sizeof err) == VT_EIO, "missing data");
}

/* ---- PyTorch fixtures ------------------------------------------------------------------- */

static int run_fixture(const char *dir)
{
    char err[512], path[1024];
    tr_model *m = NULL;
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (tr_load(path, &m, err, sizeof err)) { fprintf(stderr, "%s\n", err); return 1; }
    float *x = NULL, *yl = NULL;
    int nd;
    int64_t sh[NPY_MAX_DIMS], shl[NPY_MAX_DIMS];
    snprintf(path, sizeof path, "%s/input.npy", dir);
    CHECK(npy_read_f32(path, &x, &nd, sh, err, sizeof err) == VT_OK, "%s", err);
    snprintf(path, sizeof path, "%s/labels.npy", dir);
    CHECK(npy_read_f32(path, &yl, &nd, shl, err, sizeof err) == VT_OK, "%s", err);
    st_file *g = NULL;
    snprintf(path, sizeof path, "%s/grads.safetensors", dir);
    CHECK(st_open(path, &g, err, sizeof err) == VT_OK, "%s", err);
    if (!x || !yl || !g) return 1;
    const vit_config *c = tr_config(m);
    int B = (int)sh[0], *y = malloc((size_t)B * sizeof(int));
    for (int b = 0; b < B; b++) y[b] = (int)yl[b];
    float lam = (float)atof(st_meta(g, "lambda") ? st_meta(g, "lambda") : "1");
    unsigned long long mask = strtoull(st_meta(g, "dilute") ? st_meta(g, "dilute") : "0", NULL, 10);
    float smoothing = (float)atof(st_meta(g, "smoothing") ? st_meta(g, "smoothing") : "0");
    double want_loss = atof(st_meta(g, "loss") ? st_meta(g, "loss") : "0");
    tr_set_lambda(m, mask, lam);
    float *lg = malloc((size_t)B * c->classes * 4), *dl = malloc((size_t)B * c->classes * 4);
    for (int reference = 0; reference < 2; reference++) {
        CHECK(tr_prepare(m, B, reference, err, sizeof err) == VT_OK, "%s", err);
        CHECK(tr_forward(m, x, B, lg, err, sizeof err) == VT_OK, "%s", err);
        double loss = opt_ce_loss(lg, y, B, c->classes, smoothing, dl, NULL);
        CHECK(fabs(loss - want_loss) <= 1e-5 * fmax(1, fabs(want_loss)), "loss %.8f vs PyTorch %.8f", loss, want_loss);
        CHECK(tr_backward(m, dl, err, sizeof err) == VT_OK, "%s", err);
        double worst = 0;
        const char *wn = "";
        int compared = 0;
        for (int i = 0; i < tr_tensor_count(m); i++) {
            const tr_tensor *t = tr_tensor_at(m, i);
            const st_tensor *s = st_find(g, t->name);
            CHECK(s && s->numel == t->numel, "PyTorch gradient of %s missing", t->name);
            if (!s || s->numel != t->numel) continue;
            float *want = malloc(t->numel * 4);
            st_read_f32(g, s, want, t->numel, err, sizeof err);
            double mx, d = max_abs_diff(tr_grads(m) + t->offset, want, t->numel, &mx), e = mx > 0 ? d / mx : d;
            CHECK(e <= 1e-3, "%s: gradient rel err %.2e vs PyTorch (max |g| %.2e)", t->name, e, mx);
            if (e > worst) { worst = e; wn = t->name; }
            compared++;
            free(want);
        }
        printf("%s %s: loss %.6f (PyTorch %.6f); %d gradients, worst rel err %.2e (%s)\n", dir, reference ? "reference" : "oneDNN",
               loss, want_loss, compared, worst, wn);
    }
    st_close(g);
    tr_free(m);
    free(x); free(yl); free(y); free(lg); free(dl);
    return check_done("test_train --fixture");
}

int main(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "--fixture")) return run_fixture(argv[2]);
    snprintf(tmpdir, sizeof tmpdir, "/tmp/vitd_test_train.XXXXXX");
    if (!mkdtemp(tmpdir)) { perror("mkdtemp"); return 1; }
    vit_set_threads(2);
    test_ops(1);
    test_ops(0);
    test_attention_views();
    test_models();
    test_checkpoint();
    test_optim();
    test_idx();
    test_tar_and_folder();
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", tmpdir);
    return check_done("test_train");
}
