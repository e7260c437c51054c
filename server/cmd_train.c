/* cmd_train.c - `vitd train`, `vitd finetune` and `vitd eval`: the epoch loop, progress,
 * checkpoints and resuming around the engine's training modules.
 *
 * What it is: orchestration and reporting. The maths is in engine/train.c (model, forward,
 * backward), engine/optim.c (AdamW, loss, schedule) and engine/data.c (data sets and
 * transforms); `vitd eval` runs the serving engine (vit.h) on the evaluation path.
 *
 * Training state: after every epoch, OUT.state (a safetensors file: parameters, AdamW
 * moments, the run's settings and position) is replaced atomically; --resume continues from
 * it with the same settings and gives the same result as an uninterrupted run. The model
 * itself (OUT) is written at the end.
 */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cmd.h"
#include "data.h"
#include "grad.h"
#include "npy.h"
#include "optim.h"
#include "train.h"
#include "vit.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void hms(char *buf, size_t n, double s)
{
    if (s < 0 || !isfinite(s)) s = 0;
    long t = lround(s);
    if (t >= 3600) snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else snprintf(buf, n, "%ld:%02ld", t / 60, t % 60);
}

/* ---- progress: a bar on a terminal, plain lines otherwise -------------------------------- */

typedef struct {
    const char *cmd;
    int tty;
    double last;
    int lines_per_epoch;
} progress;

static void progress_init(progress *p, const char *cmd)
{
    p->cmd = cmd;
    p->tty = isatty(fileno(stderr));
    p->last = 0;
    p->lines_per_epoch = 10;
}

/* One update: what, epoch e of E, step s of S, running loss/accuracy, images/s, time left. */
static void progress_step(progress *p, const char *what, int e, int E, int s, int S, double loss, double acc,
                          double ips, double left)
{
    char eta[32];
    hms(eta, sizeof eta, left);
    if (p->tty) {
        double t = now_s();
        if (t - p->last < 0.2 && s != S) return;
        p->last = t;
        int w = 24, fill = S ? (int)((double)s / S * w) : w;
        char bar[32];
        for (int i = 0; i < w; i++) bar[i] = i < fill ? '#' : '.';
        bar[w] = '\0';
        fprintf(stderr, "\r%s epoch %d/%d [%s] %d/%d loss %.4f acc %5.1f%% %6.0f img/s left %s \033[K", what, e + 1, E,
                bar, s, S, loss, 100 * acc, ips, eta);
        fflush(stderr);
    } else {
        int every = S / p->lines_per_epoch > 0 ? S / p->lines_per_epoch : 1;
        if (s % every && s != S) return;
        printf("%s epoch %d/%d step %d/%d loss %.4f acc %.2f%% %.0f img/s left %s\n", what, e + 1, E, s, S, loss,
               100 * acc, ips, eta);
        fflush(stdout);
    }
}

static void progress_clear(progress *p)
{
    if (p->tty) fprintf(stderr, "\r\033[K");
}

/* ---- options ------------------------------------------------------------------------------ */

typedef struct {
    const char *data, *eval_data, *out, *arch, *model, *remove, *labels, *logits_in, *logits_out, *init;
    long epochs, batch, threads, dilution_epochs, eval_every, limit, stop_after;
    double lr, min_lr, wd, smoothing, clip, warmup, pad, scale_min;
    unsigned long long seed;
    int resume, no_eval, no_flip, reference, profile;
} run_opts;

static int parse_num(const char *cmd, const char *opt, const char *v, double lo, double hi, double *out)
{
    if (cli_float(v, out) || *out < lo || *out > hi) {
        fprintf(stderr, "vitd %s: %s must be a number in [%g, %g]\n", cmd, opt, lo, hi);
        return -1;
    }
    return 0;
}

static int parse_long(const char *cmd, const char *opt, const char *v, long lo, long hi, long *out)
{
    if (cli_int(v, lo, hi, out)) {
        fprintf(stderr, "vitd %s: %s must be an integer in [%ld, %ld]\n", cmd, opt, lo, hi);
        return -1;
    }
    return 0;
}

/* Parses the options shared by train and finetune; 0 ok, 2 usage error, 1 --help shown. */
static int parse_run(int argc, char **argv, run_opts *o, int finetune, const char *usage)
{
    const char *cmd = argv[0];
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        int r;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { printf("%s", usage); return 1; }
#define STR(name, field) if ((r = cli_opt(argc, argv, &i, name, &v))) { if (r < 0) return 2; o->field = v; continue; }
#define NUM(name, field, lo, hi) if ((r = cli_opt(argc, argv, &i, name, &v))) { if (r < 0 || parse_num(cmd, name, v, lo, hi, &o->field)) return 2; continue; }
#define INT(name, field, lo, hi) if ((r = cli_opt(argc, argv, &i, name, &v))) { if (r < 0 || parse_long(cmd, name, v, lo, hi, &o->field)) return 2; continue; }
        STR("--data", data) STR("--eval-data", eval_data) STR("--out", out) STR("--labels", labels)
        STR("--logits-input", logits_in) STR("--logits-output", logits_out)
        if (finetune) { STR("--model", model) STR("--remove", remove) INT("--dilution-epochs", dilution_epochs, 1, 100000) }
        else { STR("--arch", arch) STR("--init", init) }
        INT("--epochs", epochs, 1, 100000) INT("--batch", batch, 1, 4096) INT("--threads", threads, 0, 1024)
        INT("--eval-every", eval_every, 0, 100000) INT("--limit", limit, 1, 1L << 30)
        INT("--stop-after", stop_after, 1, 100000)
        NUM("--lr", lr, 0, 10) NUM("--min-lr", min_lr, 0, 10) NUM("--weight-decay", wd, 0, 10)
        NUM("--label-smoothing", smoothing, 0, 0.99) NUM("--clip", clip, 0, 1e9) NUM("--warmup-epochs", warmup, 0, 1e5)
        NUM("--pad", pad, 0, 64) NUM("--scale-min", scale_min, 0.01, 1)
        if ((r = cli_opt(argc, argv, &i, "--seed", &v))) {
            long s;
            if (r < 0 || parse_long(cmd, "--seed", v, 0, 2147483647L, &s)) return 2;
            o->seed = (unsigned long long)s;
            continue;
        }
#undef STR
#undef NUM
#undef INT
        if (!strcmp(argv[i], "--resume")) o->resume = 1;
        else if (!strcmp(argv[i], "--no-eval")) o->no_eval = 1;
        else if (!strcmp(argv[i], "--no-flip")) o->no_flip = 1;
        else if (!strcmp(argv[i], "--reference")) o->reference = 1;
        else if (!strcmp(argv[i], "--profile")) o->profile = 1;
        else { fprintf(stderr, "vitd %s: unknown argument %s\n%s", cmd, argv[i], usage); return 2; }
    }
    if (!o->data || !o->out || (finetune && (!o->model || !o->remove))) { fprintf(stderr, "%s", usage); return 2; }
    return 0;
}

/* --labels "a,b,c" or @file (one per line) into an array of K names; NULL on mismatch. */
static char **read_labels(const char *cmd, const char *spec, int K)
{
    char **v = calloc((size_t)K, sizeof *v);
    int n = 0;
    if (!v) return NULL;
    if (spec[0] == '@') {
        FILE *f = fopen(spec + 1, "r");
        char line[512];
        if (!f) { fprintf(stderr, "vitd %s: %s: %s\n", cmd, spec + 1, strerror(errno)); free(v); return NULL; }
        while (fgets(line, sizeof line, f)) {
            line[strcspn(line, "\r\n")] = '\0';
            if (n < K) v[n] = strdup(line);
            n++;
        }
        fclose(f);
    } else {
        const char *p = spec;
        while (1) {
            size_t l = strcspn(p, ",");
            if (n < K) v[n] = strndup(p, l);
            n++;
            if (!p[l]) break;
            p += l + 1;
        }
    }
    if (n != K) {
        fprintf(stderr, "vitd %s: --labels gives %d names for %d classes\n", cmd, n, K);
        for (int i = 0; i < K; i++) free(v[i]);
        free(v);
        return NULL;
    }
    return v;
}

/* ---- the run -------------------------------------------------------------------------------- */

typedef struct {
    const char *cmd;
    run_opts o;
    ds_set *train, *eval;
    tr_model *m;
    opt_adamw adam;
    opt_group *groups;
    int ngroups;
    ds_transform aug, evt;
    uint64_t dilute;          /* finetune: blocks being removed */
    int start_epoch;
    int64_t step;             /* optimiser steps done */
    double elapsed;           /* seconds of earlier sessions (resume) */
    char state_path[4200];
} run;

static char *settings_json(const run *r, int epochs_done)
{
    json_t *j = json_object();
    json_object_set_new(j, "command", json_string(r->cmd));
    json_object_set_new(j, "epochs_done", json_integer(epochs_done));
    json_object_set_new(j, "step", json_integer(r->step));
    json_object_set_new(j, "adam_t", json_integer(r->adam.t));
    json_object_set_new(j, "elapsed_s", json_real(r->elapsed));
    json_object_set_new(j, "epochs", json_integer(r->o.epochs));
    json_object_set_new(j, "batch", json_integer(r->o.batch));
    json_object_set_new(j, "seed", json_integer((json_int_t)r->o.seed));
    json_object_set_new(j, "lr", json_real(r->o.lr));
    json_object_set_new(j, "min_lr", json_real(r->o.min_lr));
    json_object_set_new(j, "weight_decay", json_real(r->o.wd));
    json_object_set_new(j, "label_smoothing", json_real(r->o.smoothing));
    json_object_set_new(j, "clip", json_real(r->o.clip));
    json_object_set_new(j, "warmup_epochs", json_real(r->o.warmup));
    json_object_set_new(j, "dilute", json_integer((json_int_t)r->dilute));
    json_object_set_new(j, "dilution_epochs", json_integer(r->o.dilution_epochs));
    json_object_set_new(j, "data", json_string(r->o.data));
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    return s;
}

static vt_status save_state(run *r, int epochs_done, char *err, size_t errlen)
{
    char *js = settings_json(r, epochs_done);
    const char *names[2] = {"adam_m", "adam_v"};
    const float *bufs[2] = {r->adam.m, r->adam.v};
    vt_status st = tr_save_state(r->m, r->state_path, js, 2, names, bufs, err, errlen);
    free(js);
    return st;
}

/* Restores the model, moments and position from OUT.state; the settings must match. */
static int resume_state(run *r)
{
    char err[512], *js = NULL;
    const char *names[2] = {"adam_m", "adam_v"};
    float *bufs[2];
    tr_model *m;
    vt_status st = tr_load_state(r->state_path, &m, &js, 2, names, bufs, err, sizeof err);
    if (st) { fprintf(stderr, "vitd %s: --resume: %s\n", r->cmd, err); return -1; }
    json_t *j = js ? json_loads(js, 0, NULL) : NULL;
    free(js);
    int rc = -1;
    const struct { const char *key; double want; } same[] = {
        {"batch", (double)r->o.batch}, {"seed", (double)r->o.seed}, {"epochs", (double)r->o.epochs},
        {"lr", r->o.lr}, {"dilute", (double)r->dilute},
    };
    if (!j || !bufs[0] || !bufs[1]) { fprintf(stderr, "vitd %s: %s: not a resumable state\n", r->cmd, r->state_path); goto done; }
    for (size_t i = 0; i < sizeof same / sizeof *same; i++) {
        double have = json_number_value(json_object_get(j, same[i].key));
        if (fabs(have - same[i].want) > 1e-12 * fabs(same[i].want)) {
            fprintf(stderr, "vitd %s: %s was made with %s %g, this run has %g\n", r->cmd, r->state_path, same[i].key, have,
                    same[i].want);
            goto done;
        }
    }
    const vit_config *a = tr_config(m), *b = tr_config(r->m);
    if (a->dim != b->dim || a->depth != b->depth || a->heads != b->heads || a->patch != b->patch ||
        a->image_size != b->image_size || a->classes != b->classes || a->mlp_dim != b->mlp_dim || a->removed != b->removed) {
        fprintf(stderr, "vitd %s: %s holds a different architecture\n", r->cmd, r->state_path);
        goto done;
    }
    tr_free(r->m);
    r->m = m;
    m = NULL;
    memcpy(r->adam.m, bufs[0], tr_numel(r->m) * sizeof(float));
    memcpy(r->adam.v, bufs[1], tr_numel(r->m) * sizeof(float));
    r->start_epoch = (int)json_integer_value(json_object_get(j, "epochs_done"));
    r->step = json_integer_value(json_object_get(j, "step"));
    r->adam.t = json_integer_value(json_object_get(j, "adam_t"));
    r->elapsed = json_number_value(json_object_get(j, "elapsed_s"));
    printf("resuming %s after epoch %d (step %lld)\n", r->state_path, r->start_epoch, (long long)r->step);
    rc = 0;
done:
    json_decref(j);
    tr_free(m);
    free(bufs[0]);
    free(bufs[1]);
    return rc;
}

/* Top-1 accuracy of the training forward (eval path) over n images of d. */
static int eval_train_forward(run *r, ds_set *d, int n, double *acc, double *loss, char *err, size_t errlen)
{
    const vit_config *c = tr_config(r->m);
    int B = (int)r->o.batch, K = c->classes, hits = 0;
    size_t per = (size_t)c->channels * c->image_size * c->image_size;
    float *x = malloc((size_t)B * per * sizeof(float)), *lg = malloc((size_t)B * K * sizeof(float));
    int *idx = malloc((size_t)B * sizeof(int)), *lab = malloc((size_t)B * sizeof(int));
    double tot = 0;
    vt_status st = (!x || !lg || !idx || !lab) ? vt_err(err, errlen, VT_ENOMEM, "out of memory") : VT_OK;
    for (int i = 0; !st && i < n; i += B) {
        int b = n - i < B ? n - i : B, h;
        for (int k = 0; k < b; k++) idx[k] = i + k;
        if ((st = ds_load_batch(d, &r->evt, idx, b, 0, x, lab, err, errlen)) ||
            (st = tr_forward(r->m, x, b, lg, err, errlen)))
            break;
        tot += opt_ce_loss(lg, lab, b, K, 0.0f, NULL, &h) * b;
        hits += h;
    }
    free(x); free(lg); free(idx); free(lab);
    *acc = (double)hits / n;
    *loss = tot / n;
    return st;
}

/* Compares the written model (vit_load + the serving forward) with the training forward at the
 * lambda of the last epoch, on one batch of evaluation images: the finetune output must
 * compute what training computed. */
static int verify_output(run *r, ds_set *d, double *maxdiff, double *maxabs, char *err, size_t errlen)
{
    vit_model *vm = NULL;
    vit_runner *vr = NULL;
    const vit_config *c = tr_config(r->m);
    int B = (int)(r->o.batch < 16 ? r->o.batch : 16), K = c->classes;
    if (B > ds_count(d)) B = ds_count(d);
    size_t per = (size_t)c->channels * c->image_size * c->image_size;
    float *x = malloc((size_t)B * per * sizeof(float)), *a = malloc((size_t)B * K * 4), *b = malloc((size_t)B * K * 4);
    int idx[16], lab[16];
    for (int k = 0; k < B; k++) idx[k] = k;
    vt_status st = (!x || !a || !b) ? VT_ENOMEM : VT_OK;
    if (!st) st = ds_load_batch(d, &r->evt, idx, B, 0, x, lab, err, errlen);
    if (!st) st = tr_forward(r->m, x, B, a, err, errlen);
    if (!st) st = vit_load(r->o.out, NULL, &vm, err, errlen);
    if (!st) st = vit_runner_new(vm, B, &vr, err, errlen);
    if (!st) st = vit_forward(vr, x, B, b, NULL, err, errlen);
    *maxdiff = *maxabs = 0;
    for (int i = 0; !st && i < B * K; i++) {
        double e = fabs((double)a[i] - b[i]);
        if (e > *maxdiff || isnan(e)) *maxdiff = isnan(e) ? INFINITY : e;
        if (fabs(a[i]) > *maxabs) *maxabs = fabs(a[i]);
    }
    vit_runner_free(vr);
    vit_free(vm);
    free(x); free(a); free(b);
    return st;
}

/* --logits-input X.npy --logits-output Y.npy: the final training forward pass (the last
 * epoch's lambda) on X (N, C, S, S), so that `vitd logits` on the written model can be
 * compared with it. */
static int write_train_logits(run *r)
{
    if (!r->o.logits_in || !r->o.logits_out) return 0;
    char err[512];
    float *x = NULL, *y = NULL;
    int nd, rc = -1;
    int64_t sh[NPY_MAX_DIMS];
    const vit_config *c = tr_config(r->m);
    if (npy_read_f32(r->o.logits_in, &x, &nd, sh, err, sizeof err)) { fprintf(stderr, "vitd %s: %s\n", r->cmd, err); return -1; }
    if (nd != 4 || sh[1] != c->channels || sh[2] != c->image_size || sh[3] != c->image_size) {
        fprintf(stderr, "vitd %s: %s: shape must be (N, %d, %d, %d)\n", r->cmd, r->o.logits_in, c->channels, c->image_size, c->image_size);
        goto done;
    }
    size_t per = (size_t)c->channels * c->image_size * c->image_size;
    if (!(y = malloc((size_t)(sh[0] ? sh[0] : 1) * c->classes * sizeof(float)))) goto done;
    for (int64_t i = 0; i < sh[0]; i += r->o.batch) {
        int b = (int)(sh[0] - i < r->o.batch ? sh[0] - i : r->o.batch);
        if (tr_forward(r->m, x + (size_t)i * per, b, y + (size_t)i * c->classes, err, sizeof err)) {
            fprintf(stderr, "vitd %s: %s\n", r->cmd, err);
            goto done;
        }
    }
    int64_t osh[2] = {sh[0], c->classes};
    if (npy_write_f32(r->o.logits_out, y, 2, osh, err, sizeof err)) { fprintf(stderr, "vitd %s: %s\n", r->cmd, err); goto done; }
    rc = 0;
done:
    free(x);
    free(y);
    return rc;
}

static float finetune_lambda(const run *r, int e)
{
    if (e == 0) return 1.0f; /* METHOD.md section 4: lambda(0) = 1 */
    double l = 1.0 - (double)e / (double)r->o.dilution_epochs;
    return l > 0 ? (float)l : 0.0f;
}

/* --profile: time per oneDNN primitive over the whole run, largest first. */
static void print_profile(run *r, double total)
{
    gr_ctx *g = tr_ops(r->m);
    int n = g ? gr_prim_count(g) : 0;
    double *sec = calloc((size_t)n + 1, sizeof *sec), sum = 0;
    int *ord = calloc((size_t)n + 1, sizeof *ord);
    if (!sec || !ord) { free(sec); free(ord); return; }
    char desc[160];
    long calls;
    for (int i = 0; i < n; i++) { gr_prim_stats(g, i, desc, sizeof desc, &calls, &sec[i]); ord[i] = i; sum += sec[i]; }
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && sec[ord[j]] > sec[ord[j - 1]]; j--) { int t = ord[j]; ord[j] = ord[j - 1]; ord[j - 1] = t; }
    printf("profile: %.1f s in oneDNN primitives of %.1f s training (the rest: element-wise loops, data, optimiser)\n", sum, total);
    for (int i = 0; i < n; i++) {
        double s;
        gr_prim_stats(g, ord[i], desc, sizeof desc, &calls, &s);
        printf("  %8.3f s %5.1f%% %7ld calls  %s\n", s, 100 * s / total, calls, desc);
    }
    free(sec);
    free(ord);
}

static int train_loop(run *r)
{
    char err[512];
    vt_status st;
    const vit_config *c = tr_config(r->m);
    int B = (int)r->o.batch, K = c->classes, n = ds_count(r->train);
    if (r->o.limit && r->o.limit < n) n = (int)r->o.limit;
    int S = n / B; /* steps per epoch; the last partial batch is dropped (drop_last) */
    if (S < 1) { fprintf(stderr, "vitd %s: %d training images is less than one batch of %d\n", r->cmd, n, B); return 1; }
    int64_t total = (int64_t)S * r->o.epochs, warm = (int64_t)llround(r->o.warmup * S);
    size_t per = (size_t)c->channels * c->image_size * c->image_size;
    float *x = malloc((size_t)B * per * sizeof(float)), *lg = malloc((size_t)B * K * 4), *dlg = malloc((size_t)B * K * 4);
    int *perm = malloc((size_t)ds_count(r->train) * sizeof(int)), *lab = malloc((size_t)B * sizeof(int));
    int rc = 1;
    progress pg;
    progress_init(&pg, r->cmd);
    if (!x || !lg || !dlg || !perm || !lab) { fprintf(stderr, "vitd %s: out of memory\n", r->cmd); goto done; }
    int neval = r->eval ? ds_count(r->eval) : 0;
    double t_run = now_s();
    int64_t steps_run = 0;
    for (int e = r->start_epoch; e < r->o.epochs; e++) {
        float lam = 1.0f;
        if (r->dilute) {
            lam = finetune_lambda(r, e);
            tr_set_lambda(r->m, r->dilute, lam);
        }
        ds_shuffle(perm, ds_count(r->train), r->o.seed * 1000003ull + (uint64_t)e);
        double t0 = now_s(), lsum = 0;
        long hits = 0, seen = 0;
        for (int s = 0; s < S; s++) {
            int h;
            uint64_t bseed = (r->o.seed * 1000003ull + (uint64_t)e) * 0x100000001b3ull + 7;
            if ((st = ds_load_batch(r->train, &r->aug, perm + (size_t)s * B, B, bseed, x, lab, err, sizeof err)) ||
                (st = tr_forward(r->m, x, B, lg, err, sizeof err)))
                goto fail;
            double loss = opt_ce_loss(lg, lab, B, K, (float)r->o.smoothing, dlg, &h);
            if (!isfinite(loss)) { progress_clear(&pg); fprintf(stderr, "vitd %s: the loss diverged (%g) at epoch %d step %d\n", r->cmd, loss, e + 1, s + 1); goto done; }
            if ((st = tr_backward(r->m, dlg, err, sizeof err))) goto fail;
            if (r->o.clip > 0) opt_clip(tr_grads(r->m), r->groups, r->ngroups, r->o.clip);
            double lr = opt_lr(r->step, total, warm, r->o.lr, r->o.min_lr);
            opt_adamw_step(&r->adam, tr_params(r->m), tr_grads(r->m), r->groups, r->ngroups, (float)lr);
            r->step++;
            steps_run++;
            lsum += loss * B;
            hits += h;
            seen += B;
            double t = now_s(), ips = steps_run * B / (t - t_run);
            double left = (double)(total - r->step) * B / ips;
            progress_step(&pg, r->cmd, e, (int)r->o.epochs, s + 1, S, lsum / seen, (double)hits / seen, ips, left);
        }
        double t1 = now_s();
        r->elapsed += t1 - t0;
        progress_clear(&pg);
        char line[512];
        int k = snprintf(line, sizeof line, "%s epoch %d/%d: loss %.4f, train acc %.2f%%, lr %.2e, %.0f img/s, %.1f s",
                         r->cmd, e + 1, (int)r->o.epochs, lsum / seen, 100.0 * hits / seen,
                         opt_lr(r->step - 1, total, warm, r->o.lr, r->o.min_lr), seen / (t1 - t0), t1 - t0);
        if (r->dilute) k += snprintf(line + k, sizeof line - k, ", lambda %.4f", lam);
        int last = e + 1 == r->o.epochs;
        if (neval && r->o.eval_every && ((e + 1) % r->o.eval_every == 0 || last)) {
            double acc, vloss, te = now_s();
            if ((st = eval_train_forward(r, r->eval, neval, &acc, &vloss, err, sizeof err))) goto fail;
            k += snprintf(line + k, sizeof line - k, "; eval top-1 %.2f%% loss %.4f (%d images, %.1f s)", 100 * acc, vloss,
                          neval, now_s() - te);
        }
        printf("%s\n", line);
        fflush(stdout);
        if ((st = save_state(r, e + 1, err, sizeof err))) goto fail;
        if (r->o.stop_after && e + 1 - r->start_epoch >= r->o.stop_after && !last) {
            printf("%s: stopped after epoch %d as asked; continue with --resume (state in %s)\n", r->cmd, e + 1, r->state_path);
            rc = 3;
            goto done;
        }
    }
    if (r->o.profile) print_profile(r, now_s() - t_run);
    rc = 0;
    goto done;
fail:
    progress_clear(&pg);
    fprintf(stderr, "vitd %s: %s (%s)\n", r->cmd, err, vt_status_str(st));
done:
    free(x); free(lg); free(dlg); free(perm); free(lab);
    return rc;
}

/* Shared set-up once the model exists: transforms, optimiser, groups, resume. */
static int setup(run *r)
{
    char err[512];
    const vit_config *c = tr_config(r->m);
    if (r->o.labels) {
        char **names = read_labels(r->cmd, r->o.labels, c->classes);
        if (!names) return -1;
        tr_set_labels(r->m, (const char *const *)names, c->classes);
        for (int k = 0; k < c->classes; k++) free(names[k]);
        free(names);
    }
    ds_transform t = {.size = c->image_size, .channels = c->channels == 1 ? 1 : 3, .crop_pct = c->crop_pct,
                      .interp = c->interp, .pad = (int)r->o.pad, .flip = !r->o.no_flip, .scale_min = (float)r->o.scale_min};
    memcpy(t.mean, c->mean, sizeof t.mean);
    memcpy(t.std, c->std, sizeof t.std);
    r->evt = t;
    t.augment = 1;
    r->aug = t;
    if (ds_kind_of(r->train) == DS_IDX && c->channels != 1 && c->channels != 3) return -1;
    r->ngroups = tr_tensor_count(r->m);
    if (!(r->groups = calloc((size_t)r->ngroups, sizeof *r->groups))) return -1;
    for (int i = 0; i < r->ngroups; i++) {
        const tr_tensor *tt = tr_tensor_at(r->m, i);
        r->groups[i] = (opt_group){tt->offset, tt->numel, tt->decay};
    }
    if (opt_adamw_init(&r->adam, tr_numel(r->m), (float)r->o.wd, err, sizeof err)) { fprintf(stderr, "vitd %s: %s\n", r->cmd, err); return -1; }
    snprintf(r->state_path, sizeof r->state_path, "%s.state", r->o.out);
    if (r->o.resume) {
        struct stat sb;
        if (stat(r->state_path, &sb) == 0) {
            if (resume_state(r)) return -1;
        } else {
            printf("no %s yet: starting from the beginning\n", r->state_path);
        }
    }
    vit_set_threads((int)r->o.threads);
    if (tr_prepare(r->m, (int)r->o.batch, r->o.reference, err, sizeof err)) { fprintf(stderr, "vitd %s: %s\n", r->cmd, err); return -1; }
    return 0;
}

static void run_free(run *r)
{
    ds_free(r->train);
    ds_free(r->eval);
    tr_free(r->m);
    opt_adamw_free(&r->adam);
    free(r->groups);
}

/* Opens the training data and, unless --no-eval, the evaluation data (--eval-data, else the
 * test/val split of --data when there is one). */
static int open_data(run *r)
{
    char err[512];
    if (ds_open(r->o.data, "train", &r->train, err, sizeof err)) { fprintf(stderr, "vitd %s: %s\n", r->cmd, err); return -1; }
    if (r->o.no_eval) return 0;
    const char *spec = r->o.eval_data ? r->o.eval_data : r->o.data;
    if (ds_open(spec, "test", &r->eval, err, sizeof err)) {
        if (r->o.eval_data) { fprintf(stderr, "vitd %s: %s\n", r->cmd, err); return -1; }
        r->eval = NULL;
    } else if (!r->o.eval_data && ds_kind_of(r->eval) != DS_IDX && !strcmp(ds_source(r->eval), ds_source(r->train))) {
        ds_free(r->eval); /* a folder without splits: no held-out data */
        r->eval = NULL;
    }
    return 0;
}

static void print_model_line(const run *r)
{
    const vit_config *c = tr_config(r->m);
    uint64_t np = 0;
    for (int i = 0; i < tr_tensor_count(r->m); i++) np += tr_tensor_at(r->m, i)->numel;
    printf("%s: ViT image %d patch %d channels %d width %d depth %d heads %d mlp %d classes %d%s, %.3f M parameters\n",
           r->cmd, c->image_size, c->patch, c->channels, c->dim, c->depth, c->heads, c->mlp_dim, c->classes,
           c->distilled ? " distilled" : "", np / 1e6);
    printf("%s: data %s (%d images, %d classes)%s%s; batch %ld, epochs %ld, lr %g -> %g, warm-up %g epochs, weight decay %g, "
           "label smoothing %g, clip %g, seed %llu, threads %d\n",
           r->cmd, ds_source(r->train), ds_count(r->train), ds_classes(r->train), r->eval ? "; eval " : "",
           r->eval ? ds_source(r->eval) : "", r->o.batch, r->o.epochs, r->o.lr, r->o.min_lr, r->o.warmup,
           r->o.wd, r->o.smoothing, r->o.clip, r->o.seed, r->o.threads ? (int)r->o.threads : vit_cpu_count());
    fflush(stdout);
}

static const char train_usage[] =
    "usage: vitd train --data SPEC --out MODEL [--arch ARCH] [--epochs E] [options]\n"
    "  Trains a ViT from scratch. SPEC: a folder of IDX files (or \"fashion-mnist\"), an\n"
    "  ImageFolder folder (class/img.jpg, optionally under train/ and val/), or a tar of those.\n"
    "  --arch ARCH          preset and/or key=value list (default \"fashion\"): presets fashion,\n"
    "                       deit-tiny, deit-small, deit-base; keys img, patch, chans, dim, depth,\n"
    "                       heads, mlp, distilled (classes come from the data)\n"
    "  --epochs E           default 30          --batch B        default 128\n"
    "  --lr LR              default 1e-3        --min-lr LR      default 1e-5\n"
    "  --warmup-epochs W    default 2           --weight-decay   default 0.05\n"
    "  --label-smoothing    default 0.1         --clip NORM      default 1 (0: off)\n"
    "  --seed S             default 0           --threads N      default all CPUs\n"
    "  --pad P              IDX random-crop padding (default 2)   --no-flip  no horizontal flips\n"
    "  --scale-min F        photos: RandomResizedCrop smallest area (default 0.08)\n"
    "  --eval-data SPEC     held-out data (default: the test/val split of --data)\n"
    "  --eval-every N       evaluate every N epochs (default 1; 0: never)   --no-eval\n"
    "  --labels a,b,..|@f   class names (default: from the data)\n"
    "  --init MODEL         start from MODEL's weights (and its architecture, preprocessing,\n"
    "                       labels) instead of a random initialisation\n"
    "  --limit N            use the first N training images only\n"
    "  --resume             continue from MODEL.state (written after every epoch)\n"
    "  --stop-after N       stop after N epochs of this session (resume later with --resume)\n"
    "  --logits-input X.npy --logits-output Y.npy\n"
    "                       at the end, the training forward pass on X (N, C, S, S) into Y (N, K)\n"
    "  --profile            print the time spent in each oneDNN primitive at the end\n";

static void defaults(run_opts *o)
{
    memset(o, 0, sizeof *o);
    o->epochs = 30;
    o->batch = 128;
    o->lr = 1e-3;
    o->min_lr = 1e-5;
    o->wd = 0.05;
    o->smoothing = 0.1;
    o->clip = 1.0;
    o->warmup = 2;
    o->pad = 2;
    o->scale_min = 0.08;
    o->eval_every = 1;
}

int cmd_train(int argc, char **argv)
{
    run r;
    memset(&r, 0, sizeof r);
    r.cmd = "train";
    defaults(&r.o);
    int pr = parse_run(argc, argv, &r.o, 0, train_usage);
    if (pr) return pr == 1 ? 0 : 2;
    char err[512];
    int rc = 1;
    if (open_data(&r)) goto done;
    vit_config c;
    memset(&c, 0, sizeof c);
    int idx = ds_kind_of(r.train) == DS_IDX;
    if (tr_arch_parse(idx ? "fashion" : "deit-tiny", &c, err, sizeof err)) goto done;
    if (r.o.arch && tr_arch_parse(r.o.arch, &c, err, sizeof err)) { fprintf(stderr, "vitd train: %s\n", err); rc = 2; goto done; }
    c.classes = ds_classes(r.train);
    c.ln_eps = 1e-6f;
    c.interp = IMG_BICUBIC;
    if (idx) {
        /* mean and std of the training pixels (Fashion-MNIST: 0.2860, 0.3530), resize = S */
        int *all = malloc((size_t)ds_count(r.train) * sizeof(int)), *lab = malloc(4096 * sizeof(int));
        float *px = malloc((size_t)4096 * c.image_size * c.image_size * sizeof(float));
        double s = 0, ss = 0, cnt = 0;
        ds_transform raw = {.size = c.image_size, .channels = 1, .crop_pct = 1.0f, .interp = IMG_BICUBIC, .mean = {0}, .std = {1, 1, 1}};
        if (!all || !lab || !px) { free(all); free(lab); free(px); fprintf(stderr, "vitd train: out of memory\n"); goto done; }
        for (int i = 0; i < ds_count(r.train); i++) all[i] = i;
        for (int i = 0; i < ds_count(r.train); i += 4096) {
            int b = ds_count(r.train) - i < 4096 ? ds_count(r.train) - i : 4096;
            if (ds_load_batch(r.train, &raw, all + i, b, 0, px, lab, err, sizeof err)) {
                fprintf(stderr, "vitd train: %s\n", err);
                free(all); free(lab); free(px);
                goto done;
            }
            for (size_t k = 0; k < (size_t)b * c.image_size * c.image_size; k++) { s += px[k]; ss += (double)px[k] * px[k]; }
            cnt += (double)b * c.image_size * c.image_size;
        }
        free(all); free(lab); free(px);
        double mean = s / cnt, sd = sqrt(ss / cnt - mean * mean);
        for (int i = 0; i < 3; i++) { c.mean[i] = (float)(round(mean * 1e4) / 1e4); c.std[i] = (float)(round(sd * 1e4) / 1e4); }
        c.crop_pct = 1.0f;
    } else {
        const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
        memcpy(c.mean, mean, sizeof mean);
        memcpy(c.std, std, sizeof std);
        c.crop_pct = 0.9f;
    }
    if (r.o.init) {
        /* warm start: the checkpoint's architecture, weights, preprocessing and labels */
        if (r.o.arch) { fprintf(stderr, "vitd train: --init takes the architecture from the checkpoint; drop --arch\n"); rc = 2; goto done; }
        if (tr_load(r.o.init, &r.m, err, sizeof err)) { fprintf(stderr, "vitd train: %s: %s\n", r.o.init, err); goto done; }
        if (tr_config(r.m)->classes != ds_classes(r.train)) {
            fprintf(stderr, "vitd train: %s has %d classes, the data %d\n", r.o.init, tr_config(r.m)->classes, ds_classes(r.train));
            goto done;
        }
    } else if (tr_new(&c, r.o.seed, &r.m, err, sizeof err)) { fprintf(stderr, "vitd train: %s\n", err); rc = 2; goto done; }
    if (!r.o.init) {
        const char **names = malloc((size_t)c.classes * sizeof *names);
        for (int k = 0; names && k < c.classes; k++) names[k] = ds_class_name(r.train, k);
        if (names) tr_set_labels(r.m, names, c.classes);
        free(names);
    }
    if (setup(&r)) goto done;
    print_model_line(&r);
    double t0 = now_s();
    int lr_ = train_loop(&r);
    if (lr_ == 3) { rc = 0; goto done; }
    if (lr_) goto done;
    if (tr_save_model(r.m, r.o.out, 0, err, sizeof err)) { fprintf(stderr, "vitd train: %s\n", err); goto done; }
    if (write_train_logits(&r)) goto done;
    char tt[32];
    hms(tt, sizeof tt, r.elapsed);
    printf("train: wrote %s (training time %s, this session %.1f s)\n", r.o.out, tt, now_s() - t0);
    rc = 0;
done:
    run_free(&r);
    return rc;
}

static const char finetune_usage[] =
    "usage: vitd finetune --model MODEL --data SPEC --remove 0,2,4 --out MODEL2 [--epochs E]\n"
    "                     [--dilution-epochs E_d] [options]\n"
    "  Dilution learning (METHOD.md section 4): every block in --remove computes\n"
    "    h = (2 - lambda) x + lambda Attn(LN1 x);  x = h + MLP(LN2 h)\n"
    "  with lambda(0) = 1 and lambda(e) = max(0, 1 - e / E_d) for epoch e, all parameters\n"
    "  training. E_d <= E - 1, so the last epoch runs at lambda = 0; MODEL2 has those blocks'\n"
    "  attention tensors dropped and computes what that epoch computed.\n"
    "  --remove none (or an empty list): the dense control, the same schedule and budget\n"
    "  with nothing diluted.\n"
    "  --epochs E           default 10          --dilution-epochs  default floor(3E/4), at most E-1\n"
    "  --lr LR              default 5e-4 * batch / 512 (METHOD.md)  --min-lr default 1e-5\n"
    "  --warmup-epochs W    default min(5, E/10)  --batch B default 128\n"
    "  other options as for `vitd train` (--weight-decay, --label-smoothing, --clip, --seed,\n"
    "  --threads, --eval-data, --eval-every, --no-eval, --labels, --limit, --resume,\n"
    "  --stop-after, --profile, --logits-input/--logits-output: after training, the training\n"
    "  forward pass at lambda = 0 on X.npy, to compare with `vitd logits` on MODEL2)\n";

int cmd_finetune(int argc, char **argv)
{
    run r;
    memset(&r, 0, sizeof r);
    r.cmd = "finetune";
    defaults(&r.o);
    r.o.epochs = 10;
    r.o.lr = -1;
    r.o.warmup = -1;
    int pr = parse_run(argc, argv, &r.o, 1, finetune_usage);
    if (pr) return pr == 1 ? 0 : 2;
    if (r.o.lr < 0) r.o.lr = 5e-4 * r.o.batch / 512.0;
    if (r.o.warmup < 0) r.o.warmup = fmin(5.0, r.o.epochs / 10.0);
    if (!r.o.dilution_epochs) r.o.dilution_epochs = r.o.epochs * 3 / 4 > 0 ? r.o.epochs * 3 / 4 : 1;
    char err[512];
    int rc = 2;
    if (r.o.epochs < 2 || r.o.dilution_epochs > r.o.epochs - 1) {
        fprintf(stderr, "vitd finetune: need --epochs >= 2 and --dilution-epochs <= epochs - 1 so that the last epoch runs at lambda = 0\n");
        goto done;
    }
    if (tr_load(r.o.model, &r.m, err, sizeof err)) { fprintf(stderr, "vitd finetune: %s: %s\n", r.o.model, err); rc = 1; goto done; }
    const vit_config *c = tr_config(r.m);
    unsigned long long mask = 0;
    /* --remove '' or none: the dense control, the same schedule with nothing diluted */
    int control = !*r.o.remove || !strcmp(r.o.remove, "none");
    if (!control && (cli_parse_blocks(r.o.remove, c->depth, &mask) || !mask)) {
        fprintf(stderr, "vitd finetune: --remove '%s' is not a list of block indices below %d (or none)\n", r.o.remove, c->depth);
        goto done;
    }
    if (mask & c->removed) fprintf(stderr, "vitd finetune: note: some of --remove are already removed in %s\n", r.o.model);
    r.dilute = mask & ~c->removed;
    if (!control && !r.dilute) { fprintf(stderr, "vitd finetune: every block of --remove is already removed in %s\n", r.o.model); goto done; }
    rc = 1;
    if (open_data(&r)) goto done;
    if (ds_classes(r.train) != c->classes) {
        fprintf(stderr, "vitd finetune: the data has %d classes, the model %d\n", ds_classes(r.train), c->classes);
        goto done;
    }
    if (setup(&r)) goto done;
    print_model_line(&r);
    if (control)
        printf("finetune: dense control, %ld epochs with nothing diluted\n", r.o.epochs);
    else
        printf("finetune: diluting blocks %s over %ld epochs (lambda 0 from epoch %ld of %ld)\n", r.o.remove,
               r.o.dilution_epochs, r.o.dilution_epochs + 1, r.o.epochs);
    int lr_ = train_loop(&r);
    if (lr_ == 3) { rc = 0; goto done; }
    if (lr_) goto done;
    tr_set_lambda(r.m, r.dilute, finetune_lambda(&r, (int)r.o.epochs - 1)); /* 0: what the last epoch ran */
    if (tr_save_model(r.m, r.o.out, mask, err, sizeof err)) { fprintf(stderr, "vitd finetune: %s\n", err); goto done; }
    double md, ma;
    ds_set *vd = r.eval ? r.eval : r.train;
    if (verify_output(&r, vd, &md, &ma, err, sizeof err)) { fprintf(stderr, "vitd finetune: verifying %s: %s\n", r.o.out, err); goto done; }
    if (write_train_logits(&r)) goto done;
    char tt[32];
    hms(tt, sizeof tt, r.elapsed);
    printf("finetune: wrote %s (blocks %s removed, training time %s); its logits vs the last epoch's forward: "
           "max |diff| %.2e (max |logit| %.2f)\n", r.o.out, control ? "none" : r.o.remove, tt, md, ma);
    if (!(md <= 1e-4 * (ma > 1 ? ma : 1))) { fprintf(stderr, "vitd finetune: the written model does not match training\n"); goto done; }
    rc = 0;
done:
    run_free(&r);
    return rc;
}

/* ---- eval --------------------------------------------------------------------------------- */

int cmd_eval(int argc, char **argv)
{
    const char *model = NULL, *data = NULL, *split = "test", *bs = NULL, *thr = NULL, *lim = NULL, *rm = NULL;
    int json = 0;
    static const char usage[] =
        "usage: vitd eval --model MODEL --data SPEC [--split test|train|val] [--batch B] [--threads N]\n"
        "                 [--limit N] [--remove 0,2,4] [--json]\n"
        "  Top-1 and top-5 accuracy of MODEL (the serving forward pass) on a data set, images\n"
        "  preprocessed exactly as serving does (the model's resize, crop, mean and std).\n";
    for (int i = 1; i < argc; i++) {
        int r;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { printf("%s", usage); return 0; }
        if ((r = cli_opt(argc, argv, &i, "--model", &model)) || (r = cli_opt(argc, argv, &i, "--data", &data)) ||
            (r = cli_opt(argc, argv, &i, "--split", &split)) || (r = cli_opt(argc, argv, &i, "--batch", &bs)) ||
            (r = cli_opt(argc, argv, &i, "--threads", &thr)) || (r = cli_opt(argc, argv, &i, "--limit", &lim)) ||
            (r = cli_opt(argc, argv, &i, "--remove", &rm))) {
            if (r < 0) return 2;
        } else if (!strcmp(argv[i], "--json")) json = 1;
        else { fprintf(stderr, "vitd eval: unknown argument %s\n%s", argv[i], usage); return 2; }
    }
    long batch = 64, threads = 0, limit = 0;
    if (!model || !data || (bs && cli_int(bs, 1, 64, &batch)) || (thr && cli_int(thr, 0, 1024, &threads)) ||
        (lim && cli_int(lim, 1, 1L << 30, &limit))) {
        fprintf(stderr, "%s", usage);
        return 2;
    }
    char err[512];
    vit_model *m = NULL;
    vit_runner *vr = NULL;
    ds_set *d = NULL;
    float *x = NULL, *y = NULL;
    int *idx = NULL, *lab = NULL, rc = 1;
    vt_status st;
    if ((st = vit_load(model, NULL, &m, err, sizeof err))) { fprintf(stderr, "vitd eval: %s: %s\n", model, err); return 1; }
    const vit_config *c = vit_config_of(m);
    unsigned long long extra = 0;
    if (rm && cli_parse_blocks(rm, c->depth, &extra)) { fprintf(stderr, "vitd eval: bad --remove '%s'\n", rm); rc = 2; goto done; }
    if ((st = ds_open(data, split, &d, err, sizeof err))) { fprintf(stderr, "vitd eval: %s\n", err); goto done; }
    if (ds_classes(d) > c->classes) {
        fprintf(stderr, "vitd eval: the data has %d classes, the model %d\n", ds_classes(d), c->classes);
        goto done;
    }
    int n = ds_count(d);
    if (limit && limit < n) n = (int)limit;
    ds_transform t = {.size = c->image_size, .channels = c->channels == 1 ? 1 : 3, .crop_pct = c->crop_pct, .interp = c->interp};
    memcpy(t.mean, c->mean, sizeof t.mean);
    memcpy(t.std, c->std, sizeof t.std);
    size_t per = (size_t)t.channels * c->image_size * c->image_size;
    int K = c->classes;
    x = malloc((size_t)batch * per * sizeof(float));
    y = malloc((size_t)batch * K * sizeof(float));
    idx = malloc((size_t)batch * sizeof(int));
    lab = malloc((size_t)batch * sizeof(int));
    if (!x || !y || !idx || !lab) { fprintf(stderr, "vitd eval: out of memory\n"); goto done; }
    vit_set_threads((int)threads);
    if ((st = vit_runner_new(m, (int)batch, &vr, err, sizeof err))) { fprintf(stderr, "vitd eval: %s\n", err); goto done; }
    vit_opts vo = {.removed = extra};
    long top1 = 0, top5 = 0;
    double t0 = now_s(), tfwd = 0;
    progress pg;
    progress_init(&pg, "eval");
    for (int i = 0; i < n; i += (int)batch) {
        int b = n - i < batch ? n - i : (int)batch;
        for (int k = 0; k < b; k++) idx[k] = i + k;
        if ((st = ds_load_batch(d, &t, idx, b, 0, x, lab, err, sizeof err))) { progress_clear(&pg); fprintf(stderr, "vitd eval: %s\n", err); goto done; }
        double ta = now_s();
        if ((st = vit_forward(vr, x, b, y, &vo, err, sizeof err))) { progress_clear(&pg); fprintf(stderr, "vitd eval: %s\n", err); goto done; }
        tfwd += now_s() - ta;
        for (int k = 0; k < b; k++) {
            const float *z = y + (size_t)k * K;
            int above = 0;
            for (int j = 0; j < K; j++) above += z[j] > z[lab[k]] || (z[j] == z[lab[k]] && j < lab[k]);
            top1 += above == 0;
            top5 += above < 5;
        }
        if (pg.tty) {
            double el = now_s() - t0;
            progress_step(&pg, "eval", 0, 1, i + b, n, 0, (double)top1 / (i + b), (i + b) / el, el / (i + b) * (n - i - b));
        }
    }
    progress_clear(&pg);
    double el = now_s() - t0;
    if (json)
        printf("{\"model\": \"%s\", \"data\": \"%s\", \"split\": \"%s\", \"images\": %d, \"top1\": %.6f, \"top5\": %.6f, "
               "\"correct\": %ld, \"images_per_s\": %.2f, \"forward_images_per_s\": %.2f}\n",
               model, ds_source(d), split, n, (double)top1 / n, (double)top5 / n, top1, n / el, n / tfwd);
    else
        printf("%s on %s (%s, %d images): top-1 %.2f%% (%ld/%d), top-5 %.2f%%; %.0f images/s (forward alone %.0f)\n",
               model, ds_source(d), split, n, 100.0 * top1 / n, top1, n, 100.0 * top5 / n, n / el, n / tfwd);
    rc = 0;
done:
    vit_runner_free(vr);
    vit_free(m);
    ds_free(d);
    free(x); free(y); free(idx); free(lab);
    return rc;
}
