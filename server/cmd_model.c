/* cmd_model.c - the commands that run a model without HTTP: inspect, logits, bench. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cmd.h"
#include "npy.h"
#include "vit.h"

static void block_list(char *buf, size_t n, uint64_t mask, int depth)
{
    size_t k = 0;
    buf[0] = '\0';
    for (int b = 0; b < depth && k < n; b++)
        if ((mask >> b) & 1) k += snprintf(buf + k, n - k, "%s%d", k ? "," : "", b);
}

static vit_model *load_or_complain(const char *cmd, const char *path, int keep_plain)
{
    char err[512];
    vit_model *m = NULL;
    vit_load_opts lo = {.keep_plain = keep_plain};
    vt_status st = vit_load(path, &lo, &m, err, sizeof err);
    if (st) fprintf(stderr, "vitd %s: %s: %s (%s)\n", cmd, path, err, vt_status_str(st));
    return m;
}

int cmd_inspect(int argc, char **argv)
{
    const char *path = NULL;
    int json = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help")) {
            printf("usage: vitd inspect [--json] MODEL\n"
                   "  Prints the configuration, removed attention blocks, parameter count and\n"
                   "  multiply-accumulates per image of a checkpoint (file or timm folder).\n");
            return 0;
        } else if (!strcmp(argv[i], "--json")) json = 1;
        else if (argv[i][0] == '-') { fprintf(stderr, "vitd inspect: unknown option %s\n", argv[i]); return 2; }
        else if (!path) path = argv[i];
        else { fprintf(stderr, "vitd inspect: one model at a time\n"); return 2; }
    }
    if (!path) { fprintf(stderr, "usage: vitd inspect [--json] MODEL\n"); return 2; }
    vit_model *m = load_or_complain("inspect", path, 0);
    if (!m) return 1;
    const vit_config *c = vit_config_of(m);
    char rm[256];
    block_list(rm, sizeof rm, c->removed, c->depth);
    int nrm = __builtin_popcountll(c->removed);
    vit_config dense = *c;
    dense.removed = 0;
    uint64_t dense_params = vit_params(&dense, 0);
    int resize = (int)floorf(c->image_size / c->crop_pct);
    if (json) {
        printf("{\"path\": \"%s\", \"config_source\": \"%s\", \"image_size\": %d, \"patch\": %d, "
               "\"channels\": %d, \"dim\": %d, \"depth\": %d, \"heads\": %d, \"mlp_dim\": %d, "
               "\"classes\": %d, \"distilled\": %s, \"tokens\": %d, \"removed\": [%s], "
               "\"params\": %llu, \"params_dense\": %llu, \"macs\": %llu, \"macs_dense\": %llu, "
               "\"weight_bytes\": %llu, \"crop_pct\": %g, \"resize\": %d, \"interpolation\": \"%s\", "
               "\"mean\": [%g, %g, %g], \"std\": [%g, %g, %g], \"labelled\": %s}\n",
               path, vit_source(m), c->image_size, c->patch, c->channels, c->dim, c->depth, c->heads,
               c->mlp_dim, c->classes, c->distilled ? "true" : "false", vit_tokens(c), rm,
               (unsigned long long)vit_param_count(m), (unsigned long long)dense_params,
               (unsigned long long)vit_macs(c, 0), (unsigned long long)vit_macs(&dense, 0),
               (unsigned long long)vit_weight_bytes(m), c->crop_pct, resize,
               c->interp == IMG_BICUBIC ? "bicubic" : "bilinear", c->mean[0], c->mean[1], c->mean[2],
               c->std[0], c->std[1], c->std[2], vit_label(m, 0) ? "true" : "false");
    } else {
        printf("model          %s\n", path);
        printf("configuration  from %s\n", vit_source(m));
        printf("architecture   ViT%s: image %d, patch %d, channels %d, width %d, depth %d, heads %d (head width %d), mlp %d, classes %d, tokens %d\n",
               c->distilled ? " (distilled DeiT)" : "", c->image_size, c->patch, c->channels, c->dim,
               c->depth, c->heads, c->dim / c->heads, c->mlp_dim, c->classes, vit_tokens(c));
        printf("removed        %d of %d attention blocks%s%s\n", nrm, c->depth, nrm ? ": " : "", rm);
        printf("parameters     %.3f M (dense %.3f M, %.1f%% fewer)\n", vit_param_count(m) / 1e6,
               dense_params / 1e6, 100.0 * (1.0 - (double)vit_param_count(m) / dense_params));
        printf("MACs / image   %.3f G (dense %.3f G, %.1f%% fewer)\n", vit_macs(c, 0) / 1e9,
               vit_macs(&dense, 0) / 1e9, 100.0 * (1.0 - (double)vit_macs(c, 0) / vit_macs(&dense, 0)));
        printf("weights        %.2f MB resident\n", vit_weight_bytes(m) / 1e6);
        printf("preprocessing  resize %d (%s, crop_pct %g), crop %d, mean %g,%g,%g std %g,%g,%g\n", resize,
               c->interp == IMG_BICUBIC ? "bicubic" : "bilinear", c->crop_pct, c->image_size,
               c->mean[0], c->mean[1], c->mean[2], c->std[0], c->std[1], c->std[2]);
        printf("labels         %s\n", vit_label(m, 0) ? "yes" : "none (indices only)");
    }
    vit_free(m);
    return 0;
}

int cmd_logits(int argc, char **argv)
{
    const char *model = NULL, *in = NULL, *out = NULL, *rm = NULL, *bs = NULL;
    int reference = 0;
    for (int i = 1; i < argc; i++) {
        int r;
        if (!strcmp(argv[i], "--help")) {
            printf("usage: vitd logits --model MODEL --input X.npy --output Y.npy [--remove 0,2,4]\n"
                   "                   [--batch B] [--reference]\n"
                   "  X: float32 (N, C, S, S), preprocessed. Y: float32 (N, classes).\n"
                   "  --remove    also run these blocks as removed (y = 2x; x = y + MLP(LN2(y)))\n"
                   "  --reference run the plain C kernels instead of oneDNN (slow; for tests)\n");
            return 0;
        }
        if ((r = cli_opt(argc, argv, &i, "--model", &model)) || (r = cli_opt(argc, argv, &i, "--input", &in)) ||
            (r = cli_opt(argc, argv, &i, "--output", &out)) || (r = cli_opt(argc, argv, &i, "--remove", &rm)) ||
            (r = cli_opt(argc, argv, &i, "--batch", &bs))) {
            if (r < 0) return 2;
        } else if (!strcmp(argv[i], "--reference")) reference = 1;
        else { fprintf(stderr, "vitd logits: unknown argument %s\n", argv[i]); return 2; }
    }
    if (!model || !in || !out) { fprintf(stderr, "usage: vitd logits --model MODEL --input X.npy --output Y.npy\n"); return 2; }
    long batch = 8;
    if (bs && cli_int(bs, 1, 64, &batch)) { fprintf(stderr, "vitd logits: --batch must be 1..64\n"); return 2; }
    vit_model *m = load_or_complain("logits", model, reference);
    if (!m) return 1;
    const vit_config *c = vit_config_of(m);
    unsigned long long extra = 0;
    int rc = 1;
    float *x = NULL, *y = NULL;
    vit_runner *r = NULL;
    char err[512];
    int ndim;
    int64_t shape[NPY_MAX_DIMS];
    vt_status st;
    if (rm && cli_parse_blocks(rm, c->depth, &extra)) {
        fprintf(stderr, "vitd logits: --remove '%s' is not a list of block indices below %d\n", rm, c->depth);
        rc = 2;
        goto done;
    }
    if ((st = npy_read_f32(in, &x, &ndim, shape, err, sizeof err))) {
        fprintf(stderr, "vitd logits: %s: %s\n", in, err);
        goto done;
    }
    if (ndim != 4 || shape[1] != c->channels || shape[2] != c->image_size || shape[3] != c->image_size) {
        fprintf(stderr, "vitd logits: %s: shape must be (N, %d, %d, %d) for this model\n", in, c->channels,
                c->image_size, c->image_size);
        goto done;
    }
    int64_t n = shape[0];
    size_t per = (size_t)c->channels * c->image_size * c->image_size;
    if (!(y = malloc((size_t)(n ? n : 1) * c->classes * sizeof(float)))) { fprintf(stderr, "vitd logits: out of memory\n"); goto done; }
    if ((st = vit_runner_new(m, (int)batch, &r, err, sizeof err))) { fprintf(stderr, "vitd logits: %s\n", err); goto done; }
    vit_set_threads(0);
    vit_opts o = {.removed = extra, .reference = reference};
    for (int64_t i = 0; i < n; i += batch) {
        int b = (int)(n - i < batch ? n - i : batch);
        if ((st = vit_forward(r, x + (size_t)i * per, b, y + (size_t)i * c->classes, &o, err, sizeof err))) {
            fprintf(stderr, "vitd logits: %s (%s)\n", err, vt_status_str(st));
            goto done;
        }
    }
    int64_t oshape[2] = {n, c->classes};
    if ((st = npy_write_f32(out, y, 2, oshape, err, sizeof err))) { fprintf(stderr, "vitd logits: %s: %s\n", out, err); goto done; }
    rc = 0;
done:
    vit_runner_free(r);
    vit_free(m);
    free(x);
    free(y);
    return rc;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int cmd_bench(int argc, char **argv)
{
    const char *model = NULL, *bs = NULL, *secs = NULL, *reps_s = NULL, *thr = NULL, *rm = NULL;
    int json = 0;
    for (int i = 1; i < argc; i++) {
        int r;
        if (!strcmp(argv[i], "--help")) {
            printf("usage: vitd bench --model MODEL [--batch B] [--seconds T] [--reps R] [--threads N]\n"
                   "                  [--remove 0,2,4] [--json]\n"
                   "  Runs the forward pass on random input: a warm-up, then R repetitions of T/R\n"
                   "  seconds each; reports the median images/s over repetitions and latency\n"
                   "  percentiles over all calls. Defaults: batch 1, 10 s, 5 repetitions, all CPUs.\n");
            return 0;
        }
        if ((r = cli_opt(argc, argv, &i, "--model", &model)) || (r = cli_opt(argc, argv, &i, "--batch", &bs)) ||
            (r = cli_opt(argc, argv, &i, "--seconds", &secs)) || (r = cli_opt(argc, argv, &i, "--reps", &reps_s)) ||
            (r = cli_opt(argc, argv, &i, "--threads", &thr)) || (r = cli_opt(argc, argv, &i, "--remove", &rm))) {
            if (r < 0) return 2;
        } else if (!strcmp(argv[i], "--json")) json = 1;
        else { fprintf(stderr, "vitd bench: unknown argument %s\n", argv[i]); return 2; }
    }
    long batch = 1, reps = 5, threads = 0;
    double seconds = 10;
    if (!model || (bs && cli_int(bs, 1, 64, &batch)) || (reps_s && cli_int(reps_s, 1, 1000, &reps)) ||
        (thr && cli_int(thr, 0, 1024, &threads)) || (secs && (cli_float(secs, &seconds) || seconds <= 0))) {
        fprintf(stderr, "usage: vitd bench --model MODEL [--batch 1..64] [--seconds T] [--reps R] [--threads N]\n");
        return 2;
    }
    vit_model *m = load_or_complain("bench", model, 0);
    if (!m) return 1;
    const vit_config *c = vit_config_of(m);
    unsigned long long extra = 0;
    if (rm && cli_parse_blocks(rm, c->depth, &extra)) {
        fprintf(stderr, "vitd bench: --remove '%s' is not a list of block indices\n", rm);
        vit_free(m);
        return 2;
    }
    size_t per = (size_t)c->channels * c->image_size * c->image_size;
    float *x = malloc(per * batch * sizeof(float)), *y = malloc((size_t)batch * c->classes * sizeof(float));
    size_t cap = 1 << 16, nlat = 0;
    double *lat = malloc(cap * sizeof(double)), *ips = malloc(reps * sizeof(double));
    vit_runner *r = NULL;
    char err[512];
    int rc = 1;
    if (!x || !y || !lat || !ips) { fprintf(stderr, "vitd bench: out of memory\n"); goto done; }
    srand(1);
    for (size_t i = 0; i < per * batch; i++) x[i] = (float)rand() / RAND_MAX * 4.0f - 2.0f;
    vit_set_threads((int)threads);
    if (vit_runner_new(m, (int)batch, &r, err, sizeof err)) { fprintf(stderr, "vitd bench: %s\n", err); goto done; }
    vit_opts o = {.removed = extra};
    /* warm-up: builds the plan, touches every buffer, settles the OpenMP team */
    double t0 = now_s();
    for (int i = 0; i < 3 || now_s() - t0 < 1.0; i++)
        if (vit_forward(r, x, (int)batch, y, &o, err, sizeof err)) { fprintf(stderr, "vitd bench: %s\n", err); goto done; }
    for (long rep = 0; rep < reps; rep++) {
        double start = now_s(), end = start + seconds / reps;
        long calls = 0;
        double t;
        do {
            double a = now_s();
            vit_forward(r, x, (int)batch, y, &o, err, sizeof err);
            t = now_s();
            if (nlat < cap) lat[nlat++] = (t - a) * 1e3;
            calls++;
        } while (t < end);
        ips[rep] = calls * batch / (t - start);
    }
    qsort(ips, reps, sizeof *ips, cmp_double);
    qsort(lat, nlat, sizeof *lat, cmp_double);
    double med = reps % 2 ? ips[reps / 2] : 0.5 * (ips[reps / 2 - 1] + ips[reps / 2]);
    double p50 = lat[nlat / 2], p90 = lat[(size_t)(nlat * 0.9)], p99 = lat[(size_t)(nlat * 0.99)];
    double gmacs = vit_macs(c, extra) / 1e9;
    if (json)
        printf("{\"model\": \"%s\", \"batch\": %ld, \"threads\": %d, \"removed_extra\": \"%llx\", "
               "\"images_per_s\": %.3f, \"images_per_s_min\": %.3f, \"images_per_s_max\": %.3f, "
               "\"latency_ms_p50\": %.3f, \"latency_ms_p90\": %.3f, \"latency_ms_p99\": %.3f, "
               "\"calls\": %zu, \"gmacs_per_image\": %.4f, \"gflops\": %.2f}\n",
               model, batch, threads ? (int)threads : vit_cpu_count(), extra, med, ips[0], ips[reps - 1],
               p50, p90, p99, nlat, gmacs, med * gmacs * 2);
    else
        printf("%s batch %ld: %.2f images/s (median of %ld, range %.2f-%.2f), latency p50 %.2f ms "
               "p90 %.2f ms p99 %.2f ms, %.1f GFLOP/s\n",
               model, batch, med, reps, ips[0], ips[reps - 1], p50, p90, p99, med * gmacs * 2);
    rc = 0;
done:
    vit_runner_free(r);
    vit_free(m);
    free(x); free(y); free(lat); free(ips);
    return rc;
}
