/* cmd_select.c - `vitd entropy` (the per-layer entropy analysis, a table and an SVG chart)
 * and `vitd prune` (choose attention layers with NOSE, first-k or random, write the pruned
 * checkpoint and the selection report). The work is the engine's (entropy.h, select.h,
 * prune.h, proxy.h); this file parses options, shows progress and formats results.
 * Ctrl-C cancels a running selection between two forward passes. */
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cmd.h"
#include "entropy.h"
#include "fsutil.h"
#include "proxy.h"
#include "prune.h"
#include "select.h"
#include "sha256.h"
#include "vit.h"

static atomic_int interrupted;

static void on_sigint(int sig)
{
    (void)sig;
    atomic_store(&interrupted, 1);
}

/* ---- options shared by both commands ----------------------------------------------------- */

typedef struct {
    const char *model, *data, *split, *images, *seed, *batch, *threads;
} common_opts;

/* 1 when argv[*i] was one of the shared options, 0 when not, -1 on a missing value. */
static int common_opt(int argc, char **argv, int *i, common_opts *c)
{
    int r;
    if ((r = cli_opt(argc, argv, i, "--model", &c->model)) || (r = cli_opt(argc, argv, i, "--data", &c->data)) ||
        (r = cli_opt(argc, argv, i, "--split", &c->split)) || (r = cli_opt(argc, argv, i, "--images", &c->images)) ||
        (r = cli_opt(argc, argv, i, "--seed", &c->seed)) || (r = cli_opt(argc, argv, i, "--batch", &c->batch)) ||
        (r = cli_opt(argc, argv, i, "--threads", &c->threads)))
        return r;
    return 0;
}

#define COMMON_HELP                                                                            \
    "  --data SPEC     proxy images: a folder of IDX files (or \"fashion-mnist\"), an ImageFolder\n" \
    "                  (class/file.jpg|png) or a tar of one; no labels are needed\n"            \
    "  --split NAME    train (default), test or val, for data sets that have splits\n"           \
    "  --images N      use N images (a seeded sample; default 256, 0 = all)\n"                   \
    "  --seed S        sample order of the proxy images (and the random strategy's draw)\n"      \
    "  --batch B       images per forward pass, 1..64 (default 8)\n"                              \
    "  --threads N     CPU threads (default: all allowed)\n"

typedef struct {
    long images, batch, threads;
    unsigned long long seed;
} common_vals;

static int common_parse(const char *cmd, const common_opts *o, common_vals *v)
{
    v->images = 256;
    v->batch = 8;
    v->threads = 0;
    v->seed = 0;
    long s = 0;
    if ((o->images && cli_int(o->images, 0, 1L << 30, &v->images)) || (o->batch && cli_int(o->batch, 1, 64, &v->batch)) ||
        (o->threads && cli_int(o->threads, 0, 1024, &v->threads)) || (o->seed && cli_int(o->seed, 0, 1L << 62, &s))) {
        fprintf(stderr, "vitd %s: --images, --batch (1..64), --threads and --seed take non-negative integers\n", cmd);
        return -1;
    }
    v->seed = (unsigned long long)s;
    return 0;
}

static vit_model *load_model(const char *cmd, const char *path)
{
    char err[512];
    vit_model *m = NULL;
    vt_status st = vit_load(path, NULL, &m, err, sizeof err);
    if (st) fprintf(stderr, "vitd %s: %s: %s (%s)\n", cmd, path, err, vt_status_str(st));
    return m;
}

static proxy_set *open_proxy(const char *cmd, const common_opts *o, const common_vals *v, const vit_model *m)
{
    char err[1024];
    proxy_set *p = NULL;
    proxy_opts po = {.max_images = (int)v->images, .seed = v->seed, .split = o->split};
    vt_status st = proxy_open(o->data, vit_config_of(m), &po, &p, err, sizeof err);
    if (st) {
        fprintf(stderr, "vitd %s: %s (%s)\n", cmd, err, vt_status_str(st));
        return NULL;
    }
    fprintf(stderr, "vitd %s: proxy set: %d of %d images from %s", cmd, proxy_count(p), proxy_available(p),
            proxy_source(p));
    if (proxy_failed(p)) fprintf(stderr, "; %d failed to decode (first: %s)", proxy_failed(p), proxy_first_error(p));
    fputc('\n', stderr);
    if (proxy_count(p) < 2) {
        fprintf(stderr, "vitd %s: the entropy needs at least 2 images\n", cmd);
        proxy_free(p);
        return NULL;
    }
    return p;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Progress on stderr: a line rewritten in place on a terminal; otherwise a line per step
 * and, on long steps, every 10% at most every 5 s. */
typedef struct {
    const char *cmd;
    int tty, steps, last_step, last_tenth, last_pct;
    double t0, last_line;
} progress;

static void on_progress(void *ctx, double f, int step, int block)
{
    progress *p = ctx;
    double el = now_s() - p->t0, left = f > 0 ? el / f * (1 - f) : 0;
    int pct = (int)(f * 100), tenth = (int)(f * 10);
    if (p->tty) {
        if (pct == p->last_pct && step == p->last_step) return;
        fprintf(stderr, "\r%s: step %d/%d, block %2d, %3d%%, %.0f s elapsed, ~%.0f s left   ", p->cmd, step + 1, p->steps,
                block, pct, el, left);
        if (f >= 1) fputc('\n', stderr);
    } else if (step != p->last_step || (tenth != p->last_tenth && el - p->last_line >= 5)) {
        fprintf(stderr, "%s: step %d/%d, %d%% done, %.1f s elapsed\n", p->cmd, step + 1, p->steps, pct, el);
        p->last_line = el;
    }
    p->last_pct = pct;
    p->last_step = step;
    p->last_tenth = tenth;
}

/* ---- vitd entropy ---------------------------------------------------------------------------- */

/* A line chart of the per-block attention and MLP entropies as a standalone SVG. */
static int write_svg(const char *path, const ent_profile *pf, const char *title, char *err, size_t errlen)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return vt_err(err, errlen, VT_ENOMEM, "out of memory"), -1;
    const int W = 720, H = 420, ml = 70, mr = 20, mt = 50, mb = 60, L = pf->depth;
    double lo = INFINITY, hi = -INFINITY;
    for (int b = 0; b < L; b++) {
        double v[2] = {pf->h_attn[b], pf->h_mlp[b]};
        for (int k = 0; k < 2; k++)
            if (isfinite(v[k])) { lo = v[k] < lo ? v[k] : lo; hi = v[k] > hi ? v[k] : hi; }
    }
    if (!isfinite(lo)) { lo = 0; hi = 1; }
    if (hi - lo < 1e-9) { lo -= 1; hi += 1; }
    /* tick step: 1, 2 or 5 times a power of ten, about 6 ticks */
    double raw = (hi - lo) / 6, mag = pow(10, floor(log10(raw))), step = mag;
    if (raw / mag > 5) step = 10 * mag;
    else if (raw / mag > 2) step = 5 * mag;
    else if (raw / mag > 1) step = 2 * mag;
    lo = floor(lo / step) * step;
    hi = ceil(hi / step) * step;
    double pw = W - ml - mr, ph = H - mt - mb;
#define XP(b) (ml + (L > 1 ? pw * (b) / (L - 1) : pw / 2))
#define YP(v) (mt + ph * (hi - (v)) / (hi - lo))
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
               "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
            W, H, W, H);
    fprintf(f, "<text x=\"%d\" y=\"24\" font-size=\"15\" text-anchor=\"middle\">", W / 2);
    for (const char *s = title; *s; s++) { /* XML-escape the title (a path) */
        if (*s == '<') fputs("&lt;", f);
        else if (*s == '>') fputs("&gt;", f);
        else if (*s == '&') fputs("&amp;", f);
        else fputc(*s, f);
    }
    fputs("</text>\n", f);
    for (double v = lo; v <= hi + step / 2; v += step) {
        fprintf(f, "<line x1=\"%d\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>"
                   "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n",
                ml, W - mr, YP(v), YP(v), ml - 6, YP(v) + 4, fabs(v) < step / 2 ? 0.0 : v);
    }
    for (int b = 0; b < L; b++)
        fprintf(f, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%d</text>\n", XP(b), H - mb + 18, b);
    fprintf(f, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">block</text>\n", ml + pw / 2, H - 18);
    fprintf(f, "<text transform=\"translate(18 %.1f) rotate(-90)\" text-anchor=\"middle\">"
               "H = sum of log std (class token)</text>\n", mt + ph / 2);
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%.0f\" height=\"%.0f\" fill=\"none\" stroke=\"#888\"/>\n", ml, mt, pw, ph);
    static const char *names[2] = {"attention Attn(LN1 x)", "MLP MLP(LN2 h)"}, *colors[2] = {"#d62728", "#1f77b4"};
    for (int k = 0; k < 2; k++) {
        const double *v = k ? pf->h_mlp : pf->h_attn;
        int open = 0;
        for (int b = 0; b < L; b++) { /* a gap in the line where a block has no attention */
            if (!isfinite(v[b])) {
                if (open) fputs("\"/>\n", f);
                open = 0;
                continue;
            }
            if (!open) fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", colors[k]);
            fprintf(f, "%.1f,%.1f ", XP(b), YP(v[b]));
            open = 1;
        }
        if (open) fputs("\"/>\n", f);
        for (int b = 0; b < L; b++)
            if (isfinite(v[b]))
                fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"%s\"><title>block %d: %.4f</title></circle>\n",
                        XP(b), YP(v[b]), colors[k], b, v[b]);
        if (!k) fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"190\" height=\"42\" fill=\"white\" opacity=\"0.85\"/>\n", ml + 4, mt + 4);
        fprintf(f, "<line x1=\"%d\" x2=\"%d\" y1=\"%d\" y2=\"%d\" stroke=\"%s\" stroke-width=\"2\"/>"
                   "<text x=\"%d\" y=\"%d\">%s</text>\n",
                ml + 10, ml + 34, mt + 16 + 18 * k, mt + 16 + 18 * k, colors[k], ml + 40, mt + 20 + 18 * k, names[k]);
    }
#undef XP
#undef YP
    fputs("</svg>\n", f);
    if (fclose(f)) { free(buf); return vt_err(err, errlen, VT_ENOMEM, "out of memory"), -1; }
    struct iovec part = {buf, len};
    vt_status st = fs_write_atomic(path, &part, 1, err, errlen);
    free(buf);
    return st ? -1 : 0;
}

int cmd_entropy(int argc, char **argv)
{
    common_opts co = {0};
    const char *plot = NULL, *rm = NULL;
    int json = 0;
    for (int i = 1; i < argc; i++) {
        int r;
        if (!strcmp(argv[i], "--help")) {
            printf("usage: vitd entropy --model MODEL --data SPEC [--images N] [--plot FILE.svg] [--json]\n"
                   "                    [--remove 0,2] [--split S] [--seed S] [--batch B] [--threads N]\n"
                   "  The per-layer entropy analysis (METHOD.md section 3): for every block, the\n"
                   "  entropy H = sum over channels of log(std) across the proxy images of the\n"
                   "  attention output Attn(LN1 x) and of the MLP output MLP(LN2 h), class token,\n"
                   "  before the residual add; also of the final class feature and the logits.\n"
                   COMMON_HELP
                   "  --plot FILE.svg a chart of both entropies per block\n"
                   "  --remove LIST   also run these blocks as removed\n"
                   "  --json          print the table as JSON\n");
            return 0;
        }
        if ((r = common_opt(argc, argv, &i, &co)) || (r = cli_opt(argc, argv, &i, "--plot", &plot)) ||
            (r = cli_opt(argc, argv, &i, "--remove", &rm))) {
            if (r < 0) return 2;
        } else if (!strcmp(argv[i], "--json")) json = 1;
        else { fprintf(stderr, "vitd entropy: unknown argument %s\n", argv[i]); return 2; }
    }
    common_vals v;
    if (!co.model || !co.data) {
        fprintf(stderr, "usage: vitd entropy --model MODEL --data SPEC [--images N] [--plot FILE.svg]\n");
        return 2;
    }
    if (common_parse("entropy", &co, &v)) return 2;
    if (plot) {
        const char *dot = strrchr(plot, '.');
        if (!dot || strcmp(dot, ".svg")) {
            fprintf(stderr, "vitd entropy: --plot writes an SVG chart; name the file *.svg\n");
            return 2;
        }
    }
    vit_model *m = load_model("entropy", co.model);
    if (!m) return 1;
    const vit_config *c = vit_config_of(m);
    unsigned long long extra = 0;
    int rc = 1;
    proxy_set *p = NULL;
    if (rm && cli_parse_blocks(rm, c->depth, &extra)) {
        fprintf(stderr, "vitd entropy: --remove '%s' is not a list of block indices below %d\n", rm, c->depth);
        rc = 2;
        goto done;
    }
    vit_set_threads((int)v.threads);
    if (!(p = open_proxy("entropy", &co, &v, m))) goto done;
    ent_images src = proxy_images(p);
    progress pr = {.cmd = "entropy", .tty = isatty(2), .steps = 1, .last_step = -1, .last_tenth = -1, .t0 = now_s()};
    ent_control ctl = {.progress = on_progress, .ctx = &pr, .cancel = &interrupted};
    signal(SIGINT, on_sigint);
    ent_profile pf;
    char err[1024];
    vt_status st = ent_profile_run(m, &src, (int)v.batch, extra, &ctl, &pf, err, sizeof err);
    signal(SIGINT, SIG_DFL);
    if (st) {
        fprintf(stderr, "vitd entropy: %s (%s)\n", err, vt_status_str(st));
        rc = st == VT_ECANCELLED ? 130 : 1;
        goto done;
    }
    uint64_t removed = c->removed | extra;
    if (json) {
        printf("{\"model\": \"%s\", \"images\": %d, \"images_failed\": %d, \"blocks\": [", co.model, pf.images, proxy_failed(p));
        for (int b = 0; b < pf.depth; b++) {
            printf("%s{\"block\": %d, \"removed\": %s, \"attn\": ", b ? ", " : "", b, (removed >> b) & 1 ? "true" : "false");
            if (isfinite(pf.h_attn[b])) printf("%.17g", pf.h_attn[b]);
            else printf("null");
            if (isfinite(pf.h_mlp[b])) printf(", \"mlp\": %.17g}", pf.h_mlp[b]);
            else printf(", \"mlp\": null}");
        }
        printf("], \"feature\": %.17g, \"logits\": %.17g, \"seconds\": %.3f}\n", pf.h_feature, pf.h_logits, pf.seconds);
    } else {
        printf("entropy H = sum over channels of log(std) across %d images (class token, before the residual add)\n",
               pf.images);
        printf("block   attention        MLP\n");
        int constant = 0;
        for (int b = 0; b < pf.depth; b++) {
            char a[32], mm[32];
            constant |= isinf(pf.h_attn[b]) || isinf(pf.h_mlp[b]);
            if (isnan(pf.h_attn[b])) snprintf(a, sizeof a, "(removed)");
            else if (isinf(pf.h_attn[b])) snprintf(a, sizeof a, "(constant)");
            else snprintf(a, sizeof a, "%.4f", pf.h_attn[b]);
            if (isinf(pf.h_mlp[b])) snprintf(mm, sizeof mm, "(constant)");
            else snprintf(mm, sizeof mm, "%.4f", pf.h_mlp[b]);
            printf("%5d  %10s  %10s\n", b, a, mm);
        }
        if (constant) printf("(constant: the class token is the same for every image there, H = -infinity)\n");
        printf("final class feature  %10.4f\nlogits               %10.4f\n", pf.h_feature, pf.h_logits);
        printf("%.2f s\n", pf.seconds);
    }
    if (plot) {
        char title[600];
        const char *base = strrchr(co.model, '/');
        snprintf(title, sizeof title, "Per-block entropy: %s (%d images)", base && base[1] ? base + 1 : co.model, pf.images);
        if (write_svg(plot, &pf, title, err, sizeof err)) {
            fprintf(stderr, "vitd entropy: %s: %s\n", plot, err);
            goto done;
        }
        fprintf(stderr, "vitd entropy: chart written to %s\n", plot);
    }
    rc = 0;
done:
    proxy_free(p);
    vit_free(m);
    return rc;
}

/* ---- vitd prune ------------------------------------------------------------------------------ */

static void print_scores(const sel_result *r)
{
    int L = r->depth;
    printf("NOSE scores T(S + {i}) = H(full) - H(without S + {i}), %s; lower = less lost; baseline H = %.6f\n",
           sel_measure_name(r->measure), r->h_full);
    printf("step  chosen");
    for (int i = 0; i < L; i++) printf(" %9d", i);
    putchar('\n');
    for (int s = 0; s < r->k; s++) {
        printf("%4d  %6d", s, r->chosen[s]);
        for (int i = 0; i < L; i++) {
            if (isnan(r->score[s][i])) printf(" %9s", "-");
            else printf(" %9.4f", r->score[s][i]);
        }
        putchar('\n');
    }
}

static void block_list(char *buf, size_t n, uint64_t mask, int depth)
{
    size_t k = 0;
    buf[0] = '\0';
    for (int b = 0; b < depth && k < n; b++)
        if ((mask >> b) & 1) k += (size_t)snprintf(buf + k, n - k, "%s%d", k ? "," : "", b);
    if (!buf[0]) snprintf(buf, n, "none");
}

int cmd_prune(int argc, char **argv)
{
    common_opts co = {0};
    const char *k_s = NULL, *strat = NULL, *out = NULL, *report = NULL, *measure = NULL;
    int naive = 0;
    for (int i = 1; i < argc; i++) {
        int r;
        if (!strcmp(argv[i], "--help")) {
            printf("usage: vitd prune --model MODEL --data SPEC --remove K --strategy nose|first|random\n"
                   "                  --out MODEL2 [--report R.json] [--images N] [--seed S] [--measure logits|feature]\n"
                   "                  [--naive] [--split S] [--batch B] [--threads N]\n"
                   "  Chooses K attention layers to remove and writes the pruned checkpoint: the\n"
                   "  parent's tensors without norm1/attn of those blocks, metadata naming them, the\n"
                   "  parent's SHA-256 and the selection report. No retraining: a removed block\n"
                   "  computes y = 2x; x = y + MLP(LN2(y)) (METHOD.md sections 2, 3).\n"
                   "  --strategy nose    greedy transfer entropy: K steps, each removing the block i\n"
                   "                     with the smallest T(S + {i}) = H(full) - H(without S + {i})\n"
                   "             first   the first K blocks that still have attention\n"
                   "             random  K of them drawn with --seed\n"
                   "                     (--data is optional for first/random: it adds T of the choice)\n"
                   COMMON_HELP
                   "  --measure M     where H is measured: logits (default) or feature (final class token)\n"
                   "  --naive         recompute every pass (no activation reuse; for timing)\n"
                   "  --report FILE   the selection report as JSON (scores of every step)\n"
                   "  Ctrl-C cancels between two forward passes; nothing is written then.\n");
            return 0;
        }
        if ((r = common_opt(argc, argv, &i, &co)) || (r = cli_opt(argc, argv, &i, "--remove", &k_s)) ||
            (r = cli_opt(argc, argv, &i, "--strategy", &strat)) || (r = cli_opt(argc, argv, &i, "--out", &out)) ||
            (r = cli_opt(argc, argv, &i, "--report", &report)) || (r = cli_opt(argc, argv, &i, "--measure", &measure))) {
            if (r < 0) return 2;
        } else if (!strcmp(argv[i], "--naive")) naive = 1;
        else { fprintf(stderr, "vitd prune: unknown argument %s\n", argv[i]); return 2; }
    }
    sel_opts so = {0};
    long k = 0;
    common_vals v;
    if (!co.model || !k_s || !strat || !out) {
        fprintf(stderr, "usage: vitd prune --model MODEL --data SPEC --remove K --strategy nose|first|random --out MODEL2\n");
        return 2;
    }
    if (common_parse("prune", &co, &v)) return 2;
    if (cli_int(k_s, 1, 64, &k)) { fprintf(stderr, "vitd prune: --remove takes a number of blocks (1..depth)\n"); return 2; }
    if (sel_strategy_parse(strat, &so.strategy)) {
        fprintf(stderr, "vitd prune: --strategy must be nose, first or random\n");
        return 2;
    }
    if (measure && strcmp(measure, "logits") && strcmp(measure, "feature")) {
        fprintf(stderr, "vitd prune: --measure must be logits or feature\n");
        return 2;
    }
    if (so.strategy == SEL_NOSE && !co.data) { fprintf(stderr, "vitd prune: nose needs --data\n"); return 2; }
    so.k = (int)k;
    so.seed = v.seed;
    so.batch = (int)v.batch;
    so.naive = naive;
    so.measure = measure && !strcmp(measure, "feature") ? SEL_AT_FEATURE : SEL_AT_LOGITS;
    so.evaluate = co.data != NULL;

    vit_model *m = load_model("prune", co.model);
    if (!m) return 1;
    const vit_config *c = vit_config_of(m);
    int rc = 1;
    proxy_set *p = NULL;
    sel_result *res = malloc(sizeof *res);
    char *rep = NULL, err[1024], hex[65];
    json_t *rj = NULL;
    if (!res) { fprintf(stderr, "vitd prune: out of memory\n"); goto done; }
    vit_set_threads((int)v.threads);
    if (co.data && !(p = open_proxy("prune", &co, &v, m))) goto done;
    ent_images src = p ? proxy_images(p) : (ent_images){0};
    int steps = so.strategy == SEL_NOSE ? so.k : 1;
    progress pr = {.cmd = sel_strategy_name(so.strategy), .tty = isatty(2), .steps = steps, .last_step = -1,
                   .last_tenth = -1, .t0 = now_s()};
    ent_control ctl = {.progress = on_progress, .ctx = &pr, .cancel = &interrupted};
    signal(SIGINT, on_sigint);
    vt_status st = sel_run(m, p ? &src : NULL, &so, &ctl, res, err, sizeof err);
    signal(SIGINT, SIG_DFL);
    if (st) {
        fprintf(stderr, "vitd prune: %s (%s)\n", err, vt_status_str(st));
        rc = st == VT_ECANCELLED ? 130 : st == VT_EINVAL ? 2 : 1;
        goto done;
    }
    if (so.strategy == SEL_NOSE) print_scores(res);
    char chosen[256], all[256];
    size_t at = 0;
    chosen[0] = '\0';
    for (int s = 0; s < res->k; s++) at += (size_t)snprintf(chosen + at, sizeof chosen - at, "%s%d", s ? "," : "", res->chosen[s]);
    uint64_t removed = c->removed | res->chosen_mask;
    block_list(all, sizeof all, removed, c->depth);
    printf("chosen (in order): %s; removed after pruning: %s\n", chosen, all);
    if (isfinite(res->t_chosen)) printf("T(chosen) = %.6f (baseline H = %.6f)\n", res->t_chosen, res->h_full);
    printf("selection: %ld forward passes, %ld blocks, %.2f s (%s)\n", res->passes, res->blocks_run, res->seconds,
           so.strategy == SEL_NOSE ? (naive ? "naive" : "activation reuse") : sel_strategy_name(so.strategy));

    /* the report: the engine's JSON plus where it came from */
    if (!(rep = sel_report_json(res, p ? proxy_failed(p) : 0, co.model, co.data))) { fprintf(stderr, "vitd prune: out of memory\n"); goto done; }
    char pfile[4200];
    snprintf(pfile, sizeof pfile, "%s", co.model);
    {
        FILE *probe = NULL;
        char tmp[4200];
        snprintf(tmp, sizeof tmp, "%s/model.safetensors", co.model);
        if ((probe = fopen(tmp, "rb"))) { fclose(probe); snprintf(pfile, sizeof pfile, "%s", tmp); }
    }
    if ((st = sha256_file(pfile, hex, err, sizeof err))) { fprintf(stderr, "vitd prune: %s\n", err); goto done; }
    json_error_t je;
    if (!(rj = json_loads(rep, 0, &je))) { fprintf(stderr, "vitd prune: internal error: report is not JSON\n"); goto done; }
    json_object_set_new(rj, "parent_sha256", json_string(hex));
    json_object_set_new(rj, "output", json_string(out));
    if (p) {
        json_object_set_new(rj, "split", json_string(co.split ? co.split : "train"));
        json_object_set_new(rj, "images_available", json_integer(proxy_available(p)));
        json_object_set_new(rj, "sample_seed", json_integer((json_int_t)v.seed));
    }
    free(rep);
    rep = json_dumps(rj, JSON_COMPACT | JSON_REAL_PRECISION(17));
    if (!rep) { fprintf(stderr, "vitd prune: out of memory\n"); goto done; }
    if ((st = prune_write(co.model, removed, rep, out, NULL, err, sizeof err))) {
        fprintf(stderr, "vitd prune: %s (%s)\n", err, vt_status_str(st));
        goto done;
    }
    vit_config after = *c;
    after.removed = removed;
    printf("wrote %s: %.3f M parameters (parent %.3f M), %.3f GMACs per image (parent %.3f)\n", out,
           vit_params(&after, 0) / 1e6, vit_param_count(m) / 1e6, vit_macs(&after, 0) / 1e9, vit_macs(c, 0) / 1e9);
    if (report) {
        char *pretty = json_dumps(rj, JSON_INDENT(1) | JSON_REAL_PRECISION(17));
        if (!pretty) { fprintf(stderr, "vitd prune: out of memory\n"); goto done; }
        struct iovec parts[2] = {{pretty, strlen(pretty)}, {"\n", 1}};
        st = fs_write_atomic(report, parts, 2, err, sizeof err);
        free(pretty);
        if (st) { fprintf(stderr, "vitd prune: %s: %s\n", report, err); goto done; }
        printf("report: %s\n", report);
    }
    rc = 0;
done:
    json_decref(rj);
    free(rep);
    free(res);
    proxy_free(p);
    vit_free(m);
    return rc;
}
