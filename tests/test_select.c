/* test_select.c - entropy statistics, NOSE / first / random selection, and the pruned
 * checkpoint writer, on small random models written by this test.
 *
 * The oracles: NOSE with activation reuse must equal its naive mode bit for bit (every score
 * of every step), and both must agree with an independent brute force here (full forward
 * passes of the whole proxy set at once, two-pass mean and variance, its own greedy loop).
 * A pruned checkpoint must load with the chosen blocks removed and give exactly the logits of
 * its parent run with those blocks switched to the removed path (vit_opts.removed). */
#include <math.h>
#include <stdatomic.h>
#include <string.h>
#include <jansson.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "entropy.h"
#include "prune.h"
#include "safetensors.h"
#include "select.h"
#include "sha256.h"
#include "vit.h"

static char tmpdir[256];

/* ---- a random model, written with the engine's own writer ------------------------------- */

typedef struct {
    int S, P, C, D, H, L, K, distilled;
    uint64_t removed;  /* blocks written without norm1/attn */
    uint64_t leftover; /* removed blocks that still carry norm1/attn (official checkpoints) */
    unsigned seed;
    float std;
} spec;

static float *randn(size_t n, float scale, float shift, unsigned *state)
{
    float *p = malloc(n * sizeof *p);
    for (size_t i = 0; i < n; i++) p[i] = shift + scale * check_randn(state);
    return p;
}

/* Writes path; with meta == 0 the file has no metadata at all (timm's folder layout). */
static void write_model(const char *path, const spec *s, int meta, const char *extra_key)
{
    st_writer *w = st_writer_new();
    float *bufs[512];
    int nb = 0;
    unsigned st = s->seed;
    int N = (s->S / s->P) * (s->S / s->P) + 1 + s->distilled, F = 4 * s->D, D = s->D;
    char name[128];
#define ADD(nm, scale, shift, nd, ...)                                                   \
    do {                                                                                 \
        int64_t sh_[] = {__VA_ARGS__};                                                   \
        size_t n_ = 1;                                                                   \
        for (int i_ = 0; i_ < nd; i_++) n_ *= (size_t)sh_[i_];                           \
        bufs[nb] = randn(n_, scale, shift, &st);                                         \
        CHECK(st_writer_add_f32(w, nm, bufs[nb], nd, sh_) == VT_OK, "add %s", nm);       \
        nb++;                                                                            \
    } while (0)
    ADD("cls_token", 0.5f, 0, 3, 1, 1, D);
    if (s->distilled) ADD("dist_token", 0.5f, 0, 3, 1, 1, D);
    ADD("pos_embed", 0.5f, 0, 3, 1, N, D);
    ADD("patch_embed.proj.weight", s->std, 0, 4, D, s->C, s->P, s->P);
    ADD("patch_embed.proj.bias", 0.02f, 0, 1, D);
    for (int b = 0; b < s->L; b++) {
        int has_attn = !((s->removed >> b) & 1) || ((s->leftover >> b) & 1);
#define BLK(suffix) (snprintf(name, sizeof name, "blocks.%d.%s", b, suffix), name)
        if (has_attn) {
            ADD(BLK("norm1.weight"), 0.1f, 1, 1, D);
            ADD(BLK("norm1.bias"), 0.02f, 0, 1, D);
            ADD(BLK("attn.qkv.weight"), s->std, 0, 2, 3 * D, D);
            ADD(BLK("attn.qkv.bias"), 0.02f, 0, 1, 3 * D);
            ADD(BLK("attn.proj.weight"), s->std, 0, 2, D, D);
            ADD(BLK("attn.proj.bias"), 0.02f, 0, 1, D);
        }
        ADD(BLK("norm2.weight"), 0.1f, 1, 1, D);
        ADD(BLK("norm2.bias"), 0.02f, 0, 1, D);
        ADD(BLK("mlp.fc1.weight"), s->std, 0, 2, F, D);
        ADD(BLK("mlp.fc1.bias"), 0.02f, 0, 1, F);
        ADD(BLK("mlp.fc2.weight"), s->std, 0, 2, D, F);
        ADD(BLK("mlp.fc2.bias"), 0.02f, 0, 1, D);
#undef BLK
    }
    ADD("norm.weight", 0.1f, 1, 1, D);
    ADD("norm.bias", 0.02f, 0, 1, D);
    ADD("head.weight", s->std, 0, 2, s->K, D);
    ADD("head.bias", 0.02f, 0, 1, s->K);
    if (s->distilled) {
        ADD("head_dist.weight", s->std, 0, 2, s->K, D);
        ADD("head_dist.bias", 0.02f, 0, 1, s->K);
    }
#undef ADD
    if (meta) {
        char cfg[512], rm[128] = "";
        size_t at = 0;
        for (int b = 0; b < s->L; b++)
            if ((s->removed >> b) & 1) at += (size_t)snprintf(rm + at, sizeof rm - at, "%s%d", at ? "," : "", b);
        snprintf(cfg, sizeof cfg,
                 "{\"model_args\": {\"num_heads\": %d}, \"pretrained_cfg\": {\"crop_pct\": 0.875, "
                 "\"interpolation\": \"bilinear\"}, \"removed_blocks\": [%s]}", s->H, rm);
        CHECK(st_writer_meta(w, "vitd.config", cfg) == VT_OK, "meta");
        CHECK(st_writer_meta(w, "vitd.removed_blocks", rm) == VT_OK, "meta");
        if (extra_key) CHECK(st_writer_meta(w, extra_key, "kept as is") == VT_OK, "meta");
    }
    char err[256];
    CHECK(st_writer_save(w, path, err, sizeof err) == VT_OK, "save %s: %s", path, err);
    st_writer_free(w);
    for (int i = 0; i < nb; i++) free(bufs[i]);
}

static vit_model *load(const char *path)
{
    char err[512];
    vit_model *m = NULL;
    vt_status st = vit_load(path, NULL, &m, err, sizeof err);
    CHECK(st == VT_OK, "load %s: %s", path, err);
    return m;
}

/* ---- the proxy set: random images in memory ---------------------------------------------- */

typedef struct {
    int count;
    size_t floats; /* per image */
    float *x;
    int reads;
} mem_images;

static vt_status mem_read(void *ctx, int first, int n, float *out, char *err, size_t errlen)
{
    mem_images *mi = ctx;
    (void)err; (void)errlen;
    mi->reads++;
    memcpy(out, mi->x + (size_t)first * mi->floats, (size_t)n * mi->floats * sizeof *out);
    return VT_OK;
}

static ent_images proxy(mem_images *mi, const vit_model *m, int count, unsigned seed)
{
    const vit_config *c = vit_config_of(m);
    mi->count = count;
    mi->floats = (size_t)c->channels * c->image_size * c->image_size;
    mi->x = randn((size_t)count * mi->floats, 1.0f, 0, &seed);
    mi->reads = 0;
    return (ent_images){.count = count, .read = mem_read, .ctx = mi};
}

static vt_status run_sel(const vit_model *m, const ent_images *src, sel_opts o, const ent_control *ctl,
                         sel_result *r)
{
    char err[512] = "";
    vt_status st = sel_run(m, src, &o, ctl, r, err, sizeof err);
    if (st != VT_ECANCELLED && st != VT_EINVAL) CHECK(st == VT_OK, "sel_run: %s", err);
    return st;
}

/* ---- entropy statistics --------------------------------------------------------------- */

static void test_stats(void)
{
    /* Welford against a two-pass computation in long double, on data with a large mean. */
    enum { R = 500, D = 3 };
    float x[R * D];
    unsigned s = 7;
    for (int i = 0; i < R * D; i++) x[i] = 1e4f * (float)(i % D + 1) + check_randn(&s) * (float)(i % D + 1) * 0.01f;
    ent_stats st;
    CHECK(ent_stats_init(&st, D) == VT_OK, "init");
    ent_stats_add(&st, x, 200, D);
    ent_stats_add(&st, x + 200 * D, R - 200, D);
    double h = 0;
    for (int c = 0; c < D; c++) {
        long double mean = 0, ss = 0;
        for (int r = 0; r < R; r++) mean += x[r * D + c];
        mean /= R;
        for (int r = 0; r < R; r++) ss += (x[r * D + c] - mean) * (x[r * D + c] - mean);
        double var = (double)(ss / (R - 1));
        CHECK(fabs(ent_stats_var(&st, c) - var) <= 1e-9 * var, "channel %d: var %.12g, two-pass %.12g", c,
              ent_stats_var(&st, c), var);
        h += 0.5 * log(var);
    }
    CHECK(fabs(ent_stats_h(&st) - h) < 1e-9, "H %.12g vs %.12g", ent_stats_h(&st), h);
    /* a constant channel gives a finite floor, one vector gives NAN */
    float k[4] = {1, 2, 1, 3};
    ent_stats_reset(&st);
    ent_stats_add(&st, k, 1, 2);
    CHECK(isnan(ent_stats_h(&st)), "one vector");
    float k2[6] = {1, 2, 1, 3, 1, 4};
    ent_stats st2;
    ent_stats_init(&st2, 2);
    ent_stats_add(&st2, k2, 3, 2);
    CHECK(isfinite(ent_stats_h(&st2)) && ent_stats_h(&st2) < -300, "constant channel: %g", ent_stats_h(&st2));
    ent_stats_free(&st);
    ent_stats_free(&st2);
    ent_stats_free(NULL);
}

static void test_sha256(void)
{
    static const struct { const char *msg; const char *hex; } v[] = {
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
    };
    for (size_t i = 0; i < sizeof v / sizeof *v; i++) {
        sha256_ctx c;
        uint8_t d[32];
        char hex[65];
        sha256_init(&c);
        /* byte by byte, to cross every block boundary case */
        for (const char *p = v[i].msg; *p; p++) sha256_update(&c, p, 1);
        sha256_final(&c, d);
        sha256_hex(d, hex);
        CHECK(!strcmp(hex, v[i].hex), "sha256('%s') = %s", v[i].msg, hex);
    }
    /* one million 'a' in uneven chunks */
    static char a[1000];
    memset(a, 'a', sizeof a);
    sha256_ctx c;
    uint8_t d[32];
    char hex[65];
    sha256_init(&c);
    size_t left = 1000000, chunk = 1;
    while (left) {
        size_t n = chunk < left ? chunk : left;
        if (n > sizeof a) n = sizeof a;
        sha256_update(&c, a, n);
        left -= n;
        chunk = chunk * 7 % 997 + 1;
    }
    sha256_final(&c, d);
    sha256_hex(d, hex);
    CHECK(!strcmp(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"), "million a: %s", hex);
}

/* ---- NOSE -------------------------------------------------------------------------------- */

/* Independent brute force: every candidate set's logits (or class features) over the whole
 * proxy set in one batch, two-pass variance in long double, its own greedy loop. */
typedef struct { double full; double score[VIT_MAX_DEPTH][VIT_MAX_DEPTH]; int chosen[VIT_MAX_DEPTH]; } brute;

static float *feat_out;
static void brute_tap(void *ctx, vit_tap kind, int block, const float *x, int B, int rows, int D)
{
    (void)ctx; (void)block;
    if (kind == VIT_TAP_FEATURE)
        for (int b = 0; b < B; b++) memcpy(feat_out + (size_t)b * D, x + (size_t)b * rows * D, (size_t)D * 4);
}

static double brute_h(vit_runner *r, const mem_images *mi, int K, int D, uint64_t removed, int feature)
{
    int n = mi->count, dim = feature ? D : K;
    float *y = malloc((size_t)n * K * 4), *f = malloc((size_t)n * D * 4);
    feat_out = f;
    vit_opts o = {.removed = removed, .tap = feature ? brute_tap : NULL};
    char err[256];
    CHECK(vit_forward(r, mi->x, n, y, &o, err, sizeof err) == VT_OK, "%s", err);
    const float *v = feature ? f : y;
    double h = 0;
    for (int c = 0; c < dim; c++) {
        long double mean = 0, ss = 0;
        for (int i = 0; i < n; i++) mean += v[(size_t)i * dim + c];
        mean /= n;
        for (int i = 0; i < n; i++) ss += (v[(size_t)i * dim + c] - mean) * (v[(size_t)i * dim + c] - mean);
        double var = (double)(ss / (n - 1));
        h += 0.5 * log(var > ENT_VAR_FLOOR ? var : ENT_VAR_FLOOR); /* entropy.h's floor */
    }
    free(y);
    free(f);
    return h;
}

static void brute_force(const vit_model *m, const mem_images *mi, int k, int feature, brute *out)
{
    const vit_config *c = vit_config_of(m);
    vit_runner *r = NULL;
    char err[256];
    CHECK(vit_runner_new(m, mi->count, &r, err, sizeof err) == VT_OK, "%s", err);
    out->full = brute_h(r, mi, c->classes, c->dim, 0, feature);
    uint64_t S = 0;
    for (int s = 0; s < k; s++) {
        int best = -1;
        for (int i = 0; i < c->depth; i++) {
            out->score[s][i] = NAN;
            if (((S | c->removed) >> i) & 1) continue;
            out->score[s][i] = out->full - brute_h(r, mi, c->classes, c->dim, S | 1ull << i, feature);
            if (best < 0 || out->score[s][i] < out->score[s][best]) best = i;
        }
        out->chosen[s] = best;
        S |= 1ull << best;
    }
    vit_runner_free(r);
}

static int same_double(double a, double b) { return (isnan(a) && isnan(b)) || a == b; }

static void test_nose_model(const char *label, const spec *sp, int nimg, int k, int batch)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s.safetensors", tmpdir, label);
    write_model(path, sp, 1, NULL);
    vit_model *m = load(path);
    if (!m) return;
    const vit_config *c = vit_config_of(m);
    mem_images mi;
    ent_images src = proxy(&mi, m, nimg, sp->seed + 100);
    sel_result *a = malloc(sizeof *a), *b = malloc(sizeof *b);
    brute *bf = malloc(sizeof *bf);
    for (int feature = 0; feature <= 1; feature++) {
        sel_opts o = {.strategy = SEL_NOSE, .k = k, .batch = batch, .measure = feature ? SEL_AT_FEATURE : SEL_AT_LOGITS};
        if (run_sel(m, &src, o, NULL, a)) continue;
        o.naive = 1;
        if (run_sel(m, &src, o, NULL, b)) continue;
        const char *at = feature ? "feature" : "logits";
        CHECK(same_double(a->h_full, b->h_full), "%s/%s: H_full reuse %.17g naive %.17g", label, at, a->h_full, b->h_full);
        int diff = 0;
        for (int s = 0; s < k; s++) {
            CHECK(a->chosen[s] == b->chosen[s], "%s/%s step %d: reuse chose %d, naive %d", label, at, s, a->chosen[s], b->chosen[s]);
            for (int i = 0; i < c->depth; i++) diff += !same_double(a->score[s][i], b->score[s][i]);
        }
        CHECK(diff == 0, "%s/%s: %d scores differ between reuse and naive", label, at, diff);
        /* work: the same number of passes per formula, fewer blocks with reuse */
        int ncand = c->depth - __builtin_popcountll(c->removed), nb = (nimg + batch - 1) / batch;
        long want = nb;
        for (int s = 0; s < k; s++) want += (long)nb * (ncand - s);
        CHECK(a->passes == want && b->passes == want, "%s: passes %ld/%ld, expected %ld", label, a->passes,
              b->passes, want);
        CHECK(a->blocks_run < b->blocks_run, "%s: reuse ran %ld blocks, naive %ld", label, a->blocks_run, b->blocks_run);
        CHECK(b->blocks_run == b->passes * c->depth, "%s: naive blocks", label);
        /* every score is T(S + {i}) of the brute force, and the greedy path is the same */
        brute_force(m, &mi, k, feature, bf);
        double worst = 0;
        for (int s = 0; s < k; s++) {
            CHECK(a->chosen[s] == bf->chosen[s], "%s/%s step %d: chose %d, brute force %d", label, at, s, a->chosen[s], bf->chosen[s]);
            for (int i = 0; i < c->depth; i++) {
                if (isnan(a->score[s][i]) != isnan(bf->score[s][i])) {
                    fprintf(stderr, "%s/%s step %d block %d: score %g, brute force %g\n", label, at, s, i, a->score[s][i], bf->score[s][i]);
                    worst = INFINITY;
                    continue;
                }
                if (isnan(a->score[s][i])) continue;
                double e = fabs(a->score[s][i] - bf->score[s][i]);
                if (e > worst) worst = e;
            }
        }
        printf("%s/%s: H_full %.6f (brute %.6f), chosen", label, at, a->h_full, bf->full);
        for (int s = 0; s < k; s++) printf(" %d", a->chosen[s]);
        printf("; largest |score - brute force| %.3g; blocks run reuse %ld vs naive %ld\n", worst, a->blocks_run, b->blocks_run);
        CHECK(fabs(a->h_full - bf->full) < 1e-4, "%s/%s: H_full %.9g vs brute %.9g", label, at, a->h_full, bf->full);
        CHECK(worst < 1e-4, "%s/%s: scores differ from the brute force by %g", label, at, worst);
        /* scores of already removed / chosen blocks are NAN, others finite */
        uint64_t S = 0;
        for (int s = 0; s < k; s++) {
            for (int i = 0; i < c->depth; i++) {
                int cand = !(((S | c->removed) >> i) & 1);
                CHECK(cand == !isnan(a->score[s][i]), "%s step %d block %d: candidate %d score %g", label, s, i, cand, a->score[s][i]);
            }
            CHECK(!((c->removed >> a->chosen[s]) & 1), "%s: chose an already removed block", label);
            S |= 1ull << a->chosen[s];
        }
        CHECK(a->chosen_mask == S, "%s: chosen mask", label);
    }
    free(a);
    free(b);
    free(bf);
    free(mi.x);
    vit_free(m);
}

/* ---- first, random, argument errors ------------------------------------------------------ */

static void test_fixed(void)
{
    char path[512];
    spec sp = {.S = 16, .P = 4, .C = 3, .D = 32, .H = 2, .L = 8, .K = 5, .removed = 1u << 1 | 1u << 4, .seed = 9, .std = 0.15f};
    snprintf(path, sizeof path, "%s/fixed.safetensors", tmpdir);
    write_model(path, &sp, 1, NULL);
    vit_model *m = load(path);
    if (!m) return;
    sel_result *r = malloc(sizeof *r), *r2 = malloc(sizeof *r2);
    sel_opts o = {.strategy = SEL_FIRST, .k = 3};
    if (!run_sel(m, NULL, o, NULL, r))
        CHECK(r->chosen[0] == 0 && r->chosen[1] == 2 && r->chosen[2] == 3 && r->passes == 0 && isnan(r->h_full),
              "first 3 skipping removed 1, 4: %d %d %d", r->chosen[0], r->chosen[1], r->chosen[2]);
    o.strategy = SEL_RANDOM;
    uint64_t masks = 0;
    int distinct = 0;
    for (uint64_t seed = 0; seed < 6; seed++) {
        o.seed = seed;
        if (run_sel(m, NULL, o, NULL, r) || run_sel(m, NULL, o, NULL, r2)) continue;
        CHECK(!memcmp(r->chosen, r2->chosen, sizeof r->chosen), "random seed %llu is not reproducible", (unsigned long long)seed);
        CHECK(__builtin_popcountll(r->chosen_mask) == 3 && !(r->chosen_mask & sp.removed) && r->chosen_mask < 1u << sp.L,
              "random seed %llu: mask %#llx", (unsigned long long)seed, (unsigned long long)r->chosen_mask);
        if (seed && r->chosen_mask != masks) distinct++;
        masks = r->chosen_mask;
    }
    CHECK(distinct >= 3, "random: only %d changes of choice over 6 seeds", distinct);
    /* every candidate is drawn: k = all six */
    o.k = 6;
    if (!run_sel(m, NULL, o, NULL, r)) CHECK(r->chosen_mask == (0xffu & ~sp.removed), "random k=all");
    /* errors */
    o.k = 7;
    CHECK(run_sel(m, NULL, o, NULL, r) == VT_EINVAL, "k above the candidates");
    o.k = 0;
    CHECK(run_sel(m, NULL, o, NULL, r) == VT_EINVAL, "k = 0");
    o = (sel_opts){.strategy = SEL_NOSE, .k = 2};
    CHECK(run_sel(m, NULL, o, NULL, r) == VT_EINVAL, "NOSE without images");
    /* evaluate: T(chosen) of first-k equals NOSE's brute-force quantity H_full - H(without) */
    mem_images mi;
    ent_images src = proxy(&mi, m, 12, 5);
    o = (sel_opts){.strategy = SEL_FIRST, .k = 1, .evaluate = 1, .batch = 5};
    sel_opts on = {.strategy = SEL_NOSE, .k = 1, .batch = 5};
    if (!run_sel(m, &src, o, NULL, r) && !run_sel(m, &src, on, NULL, r2)) {
        CHECK(r->h_full == r2->h_full, "evaluate H_full %.17g vs NOSE %.17g", r->h_full, r2->h_full);
        CHECK(r->t_chosen == r2->score[0][0], "first-1 T %.17g vs NOSE score of block 0 %.17g", r->t_chosen, r2->score[0][0]);
        char *j = sel_report_json(r2, 3, "m.safetensors", NULL);
        json_error_t je;
        json_t *root = j ? json_loads(j, 0, &je) : NULL;
        CHECK(root != NULL, "report is JSON");
        if (root) {
            json_t *steps = json_object_get(root, "steps");
            json_t *sc = json_object_get(json_array_get(steps, 0), "scores");
            CHECK(json_array_size(sc) == 6, "report: 6 candidates at step 0, got %zu", json_array_size(sc));
            CHECK(json_integer_value(json_object_get(root, "images_failed")) == 3, "images_failed");
            CHECK(json_is_null(json_object_get(root, "data")), "data null");
            CHECK(json_real_value(json_object_get(json_array_get(sc, 0), "score")) == r2->score[0][0], "score round trip");
            json_t *rb = json_object_get(root, "removed_blocks");
            CHECK(json_array_size(rb) == 3, "removed_blocks: the model's 2 and the chosen one");
            json_decref(root);
        }
        free(j);
    }
    free(mi.x);
    free(r);
    free(r2);
    vit_free(m);
}

/* ---- progress and cancellation ----------------------------------------------------------- */

/* sel_opts.on_step: each step reported once, in order, with its final scores and choice */
typedef struct {
    int calls, order_ok;
    int chosen[VIT_MAX_DEPTH];
    double score[VIT_MAX_DEPTH][VIT_MAX_DEPTH];
} step_log;

static void on_step(void *ctx, const sel_result *r, int step)
{
    step_log *l = ctx;
    if (step != l->calls) l->order_ok = 0;
    if (step >= 0 && step < VIT_MAX_DEPTH) {
        l->chosen[step] = r->chosen[step];
        memcpy(l->score[step], r->score[step], sizeof l->score[step]);
    }
    l->calls++;
}

typedef struct {
    atomic_int cancel;
    int calls, stop_after, monotonic;
    double last;
} prog;

static void on_progress(void *ctx, double f, int step, int block)
{
    prog *p = ctx;
    (void)step; (void)block;
    if (f < p->last || f > 1.0 + 1e-12) p->monotonic = 0;
    p->last = f;
    if (++p->calls == p->stop_after) atomic_store(&p->cancel, 1);
}

static void test_cancel(void)
{
    char path[512];
    spec sp = {.S = 16, .P = 4, .C = 3, .D = 32, .H = 2, .L = 6, .K = 5, .seed = 21, .std = 0.15f};
    snprintf(path, sizeof path, "%s/cancel.safetensors", tmpdir);
    write_model(path, &sp, 1, NULL);
    vit_model *m = load(path);
    if (!m) return;
    mem_images mi;
    ent_images src = proxy(&mi, m, 10, 3);
    sel_result *r = malloc(sizeof *r);
    for (int naive = 0; naive <= 1; naive++) {
        prog p = {.monotonic = 1};
        ent_control ctl = {.progress = on_progress, .ctx = &p, .cancel = &p.cancel};
        sel_opts o = {.strategy = SEL_NOSE, .k = 3, .batch = 4, .naive = naive};
        CHECK(run_sel(m, &src, o, &ctl, r) == VT_OK, "uncancelled");
        CHECK(p.monotonic && fabs(p.last - 1.0) < 1e-12, "naive %d: progress monotonic, ends at 1 (%.17g)", naive, p.last);
        CHECK(p.calls == r->passes, "one progress call per pass (%d vs %ld)", p.calls, r->passes);
        int total = p.calls;
        step_log sl = {.order_ok = 1};
        sel_opts os = o;
        os.on_step = on_step;
        os.step_ctx = &sl;
        sel_result *r2 = malloc(sizeof *r2);
        CHECK(run_sel(m, &src, os, NULL, r2) == VT_OK, "with on_step");
        CHECK(sl.calls == 3 && sl.order_ok, "naive %d: on_step once per step, in order (%d calls)", naive, sl.calls);
        for (int s = 0; s < 3 && s < sl.calls; s++) {
            CHECK(sl.chosen[s] == r->chosen[s] && sl.chosen[s] == r2->chosen[s], "step %d: hook saw block %d, result %d", s,
                  sl.chosen[s], r->chosen[s]);
            for (int i = 0; i < 6; i++)
                CHECK(same_double(sl.score[s][i], r->score[s][i]), "step %d block %d: hook score %.17g, result %.17g", s, i,
                      sl.score[s][i], r->score[s][i]);
        }
        free(r2);
        p = (prog){.monotonic = 1, .stop_after = 7};
        CHECK(run_sel(m, &src, o, &ctl, r) == VT_ECANCELLED, "naive %d: cancelled mid-run", naive);
        CHECK(p.calls == 7 && total > 7, "naive %d: stopped at the next pass (%d calls of %d)", naive, p.calls, total);
        atomic_store(&p.cancel, 1);
        p.calls = 0;
        CHECK(run_sel(m, &src, o, &ctl, r) == VT_ECANCELLED && p.calls == 0, "cancelled before the first pass");
    }
    /* the per-layer analysis: NAN for removed blocks, cancellable, H(logits) close to NOSE's */
    ent_profile pf;
    char err[256];
    CHECK(ent_profile_run(m, &src, 4, 1u << 2, NULL, &pf, err, sizeof err) == VT_OK, "%s", err);
    CHECK(isnan(pf.h_attn[2]) && isfinite(pf.h_attn[1]) && isfinite(pf.h_mlp[2]) && pf.images == 10, "profile");
    sel_opts o1 = {.strategy = SEL_FIRST, .k = 1, .evaluate = 1, .batch = 4};
    if (!run_sel(m, &src, o1, NULL, r)) {
        CHECK(ent_profile_run(m, &src, 4, 0, NULL, &pf, err, sizeof err) == VT_OK, "%s", err);
        CHECK(fabs(pf.h_logits - r->h_full) < 1e-4, "profile H(logits) %.9g vs selection %.9g", pf.h_logits, r->h_full);
    }
    prog p = {.monotonic = 1, .stop_after = 1};
    ent_control ctl = {.progress = on_progress, .ctx = &p, .cancel = &p.cancel};
    CHECK(ent_profile_run(m, &src, 4, 0, &ctl, &pf, err, sizeof err) == VT_ECANCELLED, "profile cancelled");
    free(r);
    free(mi.x);
    vit_free(m);
}

/* ---- the pruned checkpoint --------------------------------------------------------------- */

static int has_tensor_prefix(const st_file *f, const char *prefix)
{
    for (int i = 0; i < st_count(f); i++)
        if (!strncmp(st_at(f, i)->name, prefix, strlen(prefix))) return 1;
    return 0;
}

static void check_pruned(const char *label, const char *parent, const char *out, uint64_t want_removed,
                         uint64_t chosen, const char *extra_key)
{
    char err[512], hex[65], hex2[65];
    CHECK(prune_write(parent, want_removed, "{\"strategy\":\"test\"}", out, hex, err, sizeof err) == VT_OK,
          "%s: prune_write: %s", label, err);
    vit_model *pm = load(parent), *cm = load(out);
    if (!pm || !cm) { vit_free(pm); vit_free(cm); return; }
    const vit_config *pc = vit_config_of(pm), *cc = vit_config_of(cm);
    CHECK(cc->removed == want_removed, "%s: pruned loads with removed %#llx", label, (unsigned long long)cc->removed);
    CHECK(cc->crop_pct == pc->crop_pct && cc->interp == pc->interp && cc->heads == pc->heads, "%s: configuration kept", label);
    CHECK(vit_param_count(cm) < vit_param_count(pm) || !chosen, "%s: fewer parameters", label);
    /* tensors and metadata */
    st_file *f = NULL;
    CHECK(st_open(out, &f, err, sizeof err) == VT_OK, "%s", err);
    if (f) {
        for (int b = 0; b < cc->depth; b++) {
            char p1[64], p2[64];
            snprintf(p1, sizeof p1, "blocks.%d.attn.", b);
            snprintf(p2, sizeof p2, "blocks.%d.norm1.", b);
            int cut = (want_removed >> b) & 1;
            CHECK(has_tensor_prefix(f, p1) == !cut && has_tensor_prefix(f, p2) == !cut, "%s: block %d attention present %d",
                  label, b, !cut);
        }
        char pfile[600];
        struct stat sb;
        if (stat(parent, &sb) == 0 && S_ISDIR(sb.st_mode)) snprintf(pfile, sizeof pfile, "%s/model.safetensors", parent);
        else snprintf(pfile, sizeof pfile, "%s", parent);
        CHECK(sha256_file(pfile, hex2, err, sizeof err) == VT_OK, "%s", err);
        const char *ps = st_meta(f, "vitd.parent_sha256");
        CHECK(ps && !strcmp(ps, hex2) && !strcmp(hex, hex2), "%s: parent hash %s vs %s", label, ps ? ps : "(none)", hex2);
        CHECK(st_meta(f, "vitd.selection") && !strcmp(st_meta(f, "vitd.selection"), "{\"strategy\":\"test\"}"), "%s: selection", label);
        if (extra_key) CHECK(st_meta(f, extra_key) && !strcmp(st_meta(f, extra_key), "kept as is"), "%s: %s kept", label, extra_key);
        st_close(f);
    }
    /* logits: the pruned model equals its parent with the chosen blocks run as removed */
    mem_images mi;
    proxy(&mi, pm, 6, 77);
    vit_runner *r1 = NULL, *r2 = NULL;
    float y1[6 * 16], y2[6 * 16];
    CHECK(vit_runner_new(pm, 6, &r1, err, sizeof err) == VT_OK && vit_runner_new(cm, 6, &r2, err, sizeof err) == VT_OK, "%s", err);
    if (r1 && r2) {
        vit_opts o = {.removed = chosen};
        CHECK(vit_forward(r1, mi.x, 6, y1, &o, err, sizeof err) == VT_OK, "%s", err);
        CHECK(vit_forward(r2, mi.x, 6, y2, NULL, err, sizeof err) == VT_OK, "%s", err);
        double mb, d = max_abs_diff(y2, y1, (size_t)6 * pc->classes, &mb);
        printf("%s: pruned vs parent with blocks %#llx removed: largest logit difference %.3g (largest logit %.3g)\n",
               label, (unsigned long long)chosen, d, mb);
        CHECK(d == 0, "%s: logits differ by %g", label, d);
    }
    vit_runner_free(r1);
    vit_runner_free(r2);
    free(mi.x);
    vit_free(pm);
    vit_free(cm);
}

static void test_prune(void)
{
    char parent[600], out[512], dir[512];
    /* a vitd checkpoint with one block already removed but still carrying its attention, plus a
     * foreign metadata key; prune two more chosen by NOSE */
    spec sp = {.S = 16, .P = 4, .C = 3, .D = 32, .H = 2, .L = 5, .K = 7, .removed = 1u << 3, .leftover = 1u << 3,
               .seed = 31, .std = 0.15f};
    snprintf(parent, sizeof parent, "%s/parent.safetensors", tmpdir);
    snprintf(out, sizeof out, "%s/pruned.safetensors", tmpdir);
    write_model(parent, &sp, 1, "custom.origin");
    vit_model *m = load(parent);
    if (m) {
        mem_images mi;
        ent_images src = proxy(&mi, m, 9, 8);
        sel_result *r = malloc(sizeof *r);
        sel_opts o = {.strategy = SEL_NOSE, .k = 2, .batch = 4};
        if (!run_sel(m, &src, o, NULL, r))
            check_pruned("vitd parent", parent, out, r->chosen_mask | sp.removed, r->chosen_mask, "custom.origin");
        free(r);
        free(mi.x);
        vit_free(m);
    }
    /* a distilled timm folder (no metadata, config.json beside it) */
    spec sd = {.S = 16, .P = 4, .C = 3, .D = 32, .H = 2, .L = 4, .K = 6, .distilled = 1, .seed = 41, .std = 0.15f};
    snprintf(dir, sizeof dir, "%s/timm", tmpdir);
    mkdir(dir, 0755);
    snprintf(parent, sizeof parent, "%s/model.safetensors", dir);
    write_model(parent, &sd, 0, NULL);
    char cfgp[700];
    snprintf(cfgp, sizeof cfgp, "%s/config.json", dir);
    FILE *f = fopen(cfgp, "w");
    fprintf(f, "{\"architecture\": \"vit_test\", \"model_args\": {\"num_heads\": 2, \"removed_blocks\": []},\n"
               " \"pretrained_cfg\": {\"crop_pct\": 0.95, \"interpolation\": \"bicubic\"},\n"
               " \"label_names\": [\"a\", \"b\", \"c\", \"d\", \"e\", \"f\"]}\n");
    fclose(f);
    snprintf(out, sizeof out, "%s/pruned_timm.safetensors", tmpdir);
    check_pruned("timm folder", dir, out, 1u << 0 | 1u << 2, 1u << 0 | 1u << 2, NULL);
    vit_model *cm = load(out);
    if (cm) {
        CHECK(vit_label(cm, 5) && !strcmp(vit_label(cm, 5), "f"), "labels carried over from config.json");
        vit_free(cm);
    }
}

int main(int argc, char **argv)
{
    /* On a shared machine OpenMP threads spinning at barriers (libgomp's default) make this
     * test ten times slower; libgomp reads the policy at start-up, so set it and start again. */
    if (argc >= 1 && !getenv("OMP_WAIT_POLICY")) {
        setenv("OMP_WAIT_POLICY", "passive", 1);
        execv("/proc/self/exe", argv);
    }
    snprintf(tmpdir, sizeof tmpdir, "/tmp/vitd_test_select_XXXXXX");
    if (!mkdtemp(tmpdir)) { perror("mkdtemp"); return 1; }
    vit_set_threads(0);
    test_stats();
    test_sha256();
    /* plain ViT, batch not dividing the set (a last partial batch) */
    spec a = {.S = 16, .P = 4, .C = 3, .D = 32, .H = 2, .L = 6, .K = 10, .seed = 1, .std = 0.2f};
    test_nose_model("vit_L6", &a, 19, 4, 8);
    /* one block already removed (never a candidate), single-channel, batch 1 */
    spec b = {.S = 14, .P = 7, .C = 1, .D = 24, .H = 3, .L = 5, .K = 4, .removed = 1u << 1, .seed = 2, .std = 0.2f};
    test_nose_model("vit_c1_rm1", &b, 6, 3, 1);
    /* distilled DeiT, choose every block */
    spec d = {.S = 16, .P = 8, .C = 3, .D = 32, .H = 2, .L = 4, .K = 6, .distilled = 1, .seed = 3, .std = 0.2f};
    test_nose_model("deit_dist", &d, 11, 4, 5);
    test_fixed();
    test_cancel();
    test_prune();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return check_done("test_select");
}
