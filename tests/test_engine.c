/* test_engine.c - the forward pass as a whole: oneDNN path vs the C reference path vs the
 * committed PyTorch logits (tests/data/golden, made by tests/gen_golden.py), per-call removal,
 * activation save/resume, taps, batching, memory of removed blocks, and argument errors. */
#include <string.h>

#include "check.h"
#include "npy.h"
#include "vit.h"
#include "vit_internal.h"

#define GOLDEN "tests/data/golden/"
static const char *fixtures[] = {"vit_s32_d64", "vit_s32_d48_rm02", "deit_s32_d32_dist_rm1",
                                 "vit_c1_s28_p7_d48", "vit_s32_d64_f16", "vit_s16_d32_bf16_rm1"};

static float *load_npy(const char *path, int64_t *shape)
{
    float *d = NULL;
    int nd;
    char err[256];
    vt_status st = npy_read_f32(path, &d, &nd, shape, err, sizeof err);
    CHECK(st == VT_OK, "%s: %s", path, err);
    return st == VT_OK ? d : NULL;
}

static vit_model *load(const char *path, int keep_plain)
{
    char err[512];
    vit_model *m = NULL;
    vit_load_opts o = {.keep_plain = keep_plain};
    vt_status st = vit_load(path, &o, &m, err, sizeof err);
    CHECK(st == VT_OK, "%s: %s", path, err);
    return m;
}

static int forward(vit_runner *r, const float *x, int B, float *y, const vit_opts *o)
{
    char err[512];
    vt_status st = vit_forward(r, x, B, y, o, err, sizeof err);
    CHECK(st == VT_OK, "forward: %s", err);
    return st == VT_OK;
}

/* Every fixture: oneDNN and reference both equal PyTorch's logits. */
static void test_golden(const char *name)
{
    char path[256];
    int64_t xs[8], ys[8];
    snprintf(path, sizeof path, GOLDEN "%s.input.npy", name);
    float *x = load_npy(path, xs);
    snprintf(path, sizeof path, GOLDEN "%s.logits.npy", name);
    float *want = load_npy(path, ys);
    snprintf(path, sizeof path, GOLDEN "%s.safetensors", name);
    vit_model *m = load(path, 1);
    if (!x || !want || !m) goto done;
    const vit_config *c = vit_config_of(m);
    int B = (int)xs[0], K = c->classes;
    CHECK(ys[1] == K, "%s: %lld classes in the fixture, %d in the model", name, (long long)ys[1], K);
    vit_runner *r = NULL;
    char err[256];
    CHECK(vit_runner_new(m, B, &r, err, sizeof err) == VT_OK, "%s", err);
    float *y = calloc((size_t)B * K, 4), *yr = calloc((size_t)B * K, 4);
    vit_opts ref = {.reference = 1};
    if (forward(r, x, B, y, NULL) && forward(r, x, B, yr, &ref)) {
        double mx, d = max_abs_diff(y, want, (size_t)B * K, &mx), dr = max_abs_diff(yr, want, (size_t)B * K, NULL);
        printf("golden %-24s oneDNN %.2e  reference %.2e  (max|logit| %.3f)\n", name, d, dr, mx);
        CHECK(d <= 1e-4 * mx, "%s: oneDNN differs from PyTorch by %g (max logit %g)", name, d, mx);
        CHECK(dr <= 1e-4 * mx, "%s: reference differs from PyTorch by %g", name, dr);
        /* each image alone gives the same logits as the batch */
        for (int b = 0; b < B; b++) {
            float one[4096];
            if (K > 4096 || !forward(r, x + (size_t)b * c->channels * c->image_size * c->image_size, 1, one, NULL)) break;
            double d1 = max_abs_diff(one, y + (size_t)b * K, K, NULL);
            CHECK(d1 <= 1e-5 * mx, "%s: image %d alone differs from the batch by %g", name, b, d1);
        }
    }
    free(y);
    free(yr);
    vit_runner_free(r);
done:
    vit_free(m);
    free(x);
    free(want);
}

typedef struct { int calls_attn, calls_mlp, calls_feat; float *feat; int B, T, D; } tap_log;

static void tap_fn(void *ctx, vit_tap kind, int block, const float *x, int B, int rows, int D)
{
    tap_log *t = ctx;
    (void)block;
    if (kind == VIT_TAP_ATTN) t->calls_attn++;
    if (kind == VIT_TAP_MLP) t->calls_mlp++;
    if (kind == VIT_TAP_FEATURE) {
        t->calls_feat++;
        t->B = B; t->T = rows; t->D = D;
        memcpy(t->feat, x, (size_t)B * rows * D * 4);
    }
}

/* Per-call removal, save/resume and taps on one model. */
static void test_options(void)
{
    vit_model *m = load(GOLDEN "vit_s32_d48_rm02.safetensors", 1); /* depth 4, blocks 0,2 removed */
    int64_t xs[8];
    float *x = load_npy(GOLDEN "vit_s32_d48_rm02.input.npy", xs);
    if (!m || !x) { vit_free(m); free(x); return; }
    const vit_config *c = vit_config_of(m);
    int B = (int)xs[0], K = c->classes, N = vit_tokens(c), D = c->dim;
    size_t sf = (size_t)B * N * D;
    char err[256];
    vit_runner *r = NULL;
    CHECK(vit_runner_new(m, B, &r, err, sizeof err) == VT_OK, "%s", err);
    if (!r) { vit_free(m); free(x); return; }
    float *y = calloc((size_t)B * K, 4), *y2 = calloc((size_t)B * K, 4), *y3 = calloc((size_t)B * K, 4);
    forward(r, x, B, y, NULL);

    /* removing block 1 per call equals the reference path doing the same */
    vit_opts rm1 = {.removed = 1u << 1}, rm1r = {.removed = 1u << 1, .reference = 1};
    forward(r, x, B, y2, &rm1);
    forward(r, x, B, y3, &rm1r);
    double mx, d = max_abs_diff(y2, y3, (size_t)B * K, &mx);
    CHECK(d <= 1e-4 * mx, "per-call removal: oneDNN vs reference %g", d);
    CHECK(max_abs_diff(y2, y, (size_t)B * K, NULL) > 1e-3, "removing block 1 changed nothing");
    /* removing a block the model already removed changes nothing */
    vit_opts rm0 = {.removed = 1u << 0};
    forward(r, x, B, y2, &rm0);
    CHECK(max_abs_diff(y2, y, (size_t)B * K, NULL) == 0, "re-removing block 0 changed the logits");

    /* save the stream entering every block, resume from each: identical logits */
    float *saved[4];
    for (int b = 0; b < 4; b++) saved[b] = malloc(sf * 4);
    vit_opts sv = {.save_mask = 0xf, .save_x = saved};
    forward(r, x, B, y2, &sv);
    CHECK(max_abs_diff(y2, y, (size_t)B * K, NULL) == 0, "saving activations changed the logits");
    for (int b = 0; b < 4; b++) {
        vit_opts st = {.start_block = b, .start_x = saved[b]};
        forward(r, NULL, B, y2, &st);
        d = max_abs_diff(y2, y, (size_t)B * K, NULL);
        CHECK(d <= 1e-6 * mx, "resuming at block %d: logits differ by %g", b, d);
        /* and a resumed pass with an extra removal equals a full pass with it */
        vit_opts st3 = {.start_block = b, .start_x = saved[b], .removed = 1u << 3};
        vit_opts full3 = {.removed = 1u << 3};
        forward(r, NULL, B, y2, &st3);
        forward(r, x, B, y3, &full3);
        CHECK(max_abs_diff(y2, y3, (size_t)B * K, NULL) <= 1e-6 * mx, "resume at %d with block 3 removed differs", b);
    }
    for (int b = 0; b < 4; b++) free(saved[b]);

    /* taps: called once per live attention and per MLP; the feature tap feeds the head */
    tap_log tl = {.feat = malloc((size_t)B * 2 * D * 4)};
    vit_opts tp = {.tap = tap_fn, .tap_ctx = &tl};
    forward(r, x, B, y2, &tp);
    CHECK(tl.calls_attn == 2 && tl.calls_mlp == 4 && tl.calls_feat == 1, "tap calls attn %d mlp %d feature %d",
          tl.calls_attn, tl.calls_mlp, tl.calls_feat);
    CHECK(max_abs_diff(y2, y, (size_t)B * K, NULL) <= 1e-5 * mx, "tapping changed the logits");
    float *hl = calloc((size_t)B * K, 4);
    for (int b = 0; b < B; b++)
        for (int k = 0; k < K; k++) {
            double acc = m->g[GP_HEAD_B][k];
            for (int e = 0; e < D; e++) acc += (double)tl.feat[(size_t)b * D + e] * m->g[GP_HEAD_W][(size_t)k * D + e];
            hl[(size_t)b * K + k] = (float)acc;
        }
    CHECK(max_abs_diff(hl, y, (size_t)B * K, NULL) <= 1e-5 * mx, "head(feature tap) is not the logits");
    free(hl);
    free(tl.feat);

    /* argument errors */
    CHECK(vit_forward(r, x, B + 1, y2, NULL, err, sizeof err) == VT_EINVAL, "batch over max accepted");
    CHECK(vit_forward(r, x, 0, y2, NULL, err, sizeof err) == VT_EINVAL, "batch 0 accepted");
    vit_opts bad = {.start_block = 9, .start_x = x};
    CHECK(vit_forward(r, x, B, y2, &bad, err, sizeof err) == VT_EINVAL, "start block past depth accepted");
    vit_runner *r0 = NULL;
    CHECK(vit_runner_new(m, 0, &r0, err, sizeof err) == VT_EINVAL && !r0, "max batch 0 accepted");
    free(y); free(y2); free(y3);
    vit_runner_free(r);
    vit_free(m);
    free(x);

    /* the reference path needs plain weights */
    m = load(GOLDEN "vit_s32_d64.safetensors", 0);
    if (m && vit_runner_new(m, 1, &r, err, sizeof err) == VT_OK) {
        float in[3 * 32 * 32] = {0}, out[10];
        vit_opts ref = {.reference = 1};
        CHECK(vit_forward(r, in, 1, out, &ref, err, sizeof err) == VT_EINVAL, "reference without plain weights accepted");
        vit_runner_free(r);
    }
    vit_free(m);
}

/* Parameters and resident bytes drop by exactly the removed attention. */
static void test_counts(void)
{
    for (size_t i = 0; i < sizeof fixtures / sizeof *fixtures; i++) {
        char path[256];
        snprintf(path, sizeof path, GOLDEN "%s.safetensors", fixtures[i]);
        vit_model *m = load(path, 0);
        if (!m) continue;
        const vit_config *c = vit_config_of(m);
        uint64_t D = (uint64_t)c->dim, k = (uint64_t)__builtin_popcountll(c->removed);
        vit_config dense = *c;
        dense.removed = 0;
        uint64_t attn = 2 * D + 3 * D * D + 3 * D + D * D + D;
        CHECK(vit_param_count(m) == vit_params(c, 0), "%s: loaded %llu params, formula %llu", fixtures[i],
              (unsigned long long)vit_param_count(m), (unsigned long long)vit_params(c, 0));
        CHECK(vit_params(&dense, 0) - vit_params(c, 0) == k * attn, "%s: removed blocks' parameters", fixtures[i]);
        CHECK(vit_macs(&dense, 0) > vit_macs(c, 0) || k == 0, "%s: MACs did not drop", fixtures[i]);
        vit_free(m);
    }
}

int main(void)
{
    vit_set_threads(0);
    for (size_t i = 0; i < sizeof fixtures / sizeof *fixtures; i++) test_golden(fixtures[i]);
    test_options();
    test_counts();
    return check_done("test_engine");
}
