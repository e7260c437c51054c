/* srv_job.c - admin prune jobs (see srv_job.h): the job table, the job thread that runs the
 * pipeline (selection, optional fine-tuning child, pruned checkpoint, held-out check, store,
 * warm-up and hot swap), and job_activate for an existing stored version.
 *
 * What this file is not: the HTTP side (routes, the upload into the spool folder, status
 * codes) is the admin API's; the selection, the pruned checkpoint and the proxy set are the
 * engine's (select.h, prune.h, proxy.h); versions on disk are srv_store's.
 *
 * Locks: g_lock guards the job table and every field of a job that job_json reads; the job
 * thread takes it only to publish progress and results. g_publish serialises the last step
 * of a publish (store_activate + reg_publish_id) between the job thread and job_activate.
 */
#include "srv_job.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "proxy.h"
#include "prune.h"
#include "select.h"
#include "srv_batcher.h"
#include "srv_log.h"
#include "srv_metrics.h"
#include "srv_registry.h"
#include "srv_spool.h"
#include "vit.h"

#define CHECK_BATCH 8          /* images per forward pass of the held-out check */
#define SELECT_BATCH 8         /* images per forward pass of the selection */
#define FINETUNE_BATCH 64      /* vitd finetune's batch (fewer when the upload is smaller) */
#define DEFAULT_KEPT 32        /* finished jobs remembered when max_jobs_kept is 0 */
/* progress: selection 0 .. P_SELECTED, then the checkpoint, the check, the publish */
#define P_SELECTED 0.8
#define P_WRITTEN 0.85
#define P_CHECKED 0.95

typedef struct {
    double score[VIT_MAX_DEPTH];   /* (L) T(S + {i}); NAN when i was not a candidate */
    int chosen;
} job_step;

typedef struct job {
    int id;
    job_params p;
    job_state state;
    double progress;
    int parent_version;            /* 0 until the job has acquired its parent */
    int depth;                     /* L of the parent */
    job_step *steps;               /* (p.remove) NOSE steps; the first nsteps are final */
    int nsteps;
    int nselected;                 /* 0 until the selection finished, then p.remove */
    int selected[VIT_MAX_DEPTH];
    uint64_t removed;              /* every removed block of the candidate (valid with nselected) */
    int checked;                   /* the check ran */
    int check_images;
    double agreement, acc_parent, acc_candidate; /* accuracies NAN without labels */
    int passed;
    int version;                   /* stored version, 0: none */
    int activated;
    char reason[256];
    char error[512];
    time_t created, started, finished;  /* wall clock, 0: not yet */
    double t_started, t_finished;       /* monotonic seconds */
    atomic_int cancel;
    double cpu_mark;               /* job thread: its CPU time when throttle() last ran */
    double throttled_s;            /* seconds paused for inference (under g_lock) */
    struct job *next;              /* the table, newest first */
} job;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t g_publish = PTHREAD_MUTEX_INITIALIZER;
static store *g_store;
static job_opts g_opts;
static char g_exe[1024];           /* the vitd binary run for `vitd finetune` */
static job *g_jobs;
static job *g_current;             /* queued or running, NULL when idle */
static pthread_t g_thread;
static int g_thread_joinable;
static int g_next_id = 1;

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static const char *state_name(job_state s)
{
    static const char *const names[] = {"queued", "running", "succeeded", "failed", "cancelled"};
    return names[s];
}

static void job_free(job *j)
{
    if (!j) return;
    free(j->steps);
    free(j);
}

/* ---- set-up -------------------------------------------------------------------------------- */

void job_init(store *st, const job_opts *o)
{
    pthread_mutex_lock(&g_lock);
    g_store = st;
    g_opts = *o;
    if (g_opts.threads < 1) g_opts.threads = 1;
    if (g_opts.nice < 0) g_opts.nice = 0;
    if (g_opts.nice > 19) g_opts.nice = 19;
    if (!(g_opts.cpu_share > 0) || g_opts.cpu_share > 1) g_opts.cpu_share = 1;
    if (g_opts.keep_versions < 1) g_opts.keep_versions = 1;
    if (g_opts.max_jobs_kept < 1) g_opts.max_jobs_kept = DEFAULT_KEPT;
    if (o->exe && *o->exe) snprintf(g_exe, sizeof g_exe, "%s", o->exe);
    else snprintf(g_exe, sizeof g_exe, "/proc/self/exe");
    g_opts.exe = g_exe;
    pthread_mutex_unlock(&g_lock);
}

void job_shutdown(void)
{
    pthread_mutex_lock(&g_lock);
    if (g_current) atomic_store(&g_current->cancel, 1);
    int joinable = g_thread_joinable;
    g_thread_joinable = 0;
    pthread_mutex_unlock(&g_lock);
    if (joinable) pthread_join(g_thread, NULL);
    pthread_mutex_lock(&g_lock);
    while (g_jobs) {
        job *j = g_jobs;
        g_jobs = j->next;
        job_free(j);
    }
    g_current = NULL;
    pthread_mutex_unlock(&g_lock);
    met_job_running(0);
}

/* Forgets the oldest finished jobs beyond max_jobs_kept. Caller holds g_lock. */
static void trim_table(void)
{
    int n = 0;
    for (job **p = &g_jobs; *p;) {
        job *j = *p;
        if (j->state >= JOB_SUCCEEDED && ++n > g_opts.max_jobs_kept) {
            *p = j->next;
            job_free(j);
        } else {
            p = &j->next;
        }
    }
}

static job *find_job(int id)
{
    for (job *j = g_jobs; j; j = j->next)
        if (j->id == id) return j;
    return NULL;
}

/* ---- labels ---------------------------------------------------------------------------------- */

/* a label with every '/' as '_' (a folder name cannot hold a '/') */
static int same_but_slash(const char *label, const char *folder)
{
    for (; *label && *folder; label++, folder++)
        if (*label != *folder && !(*label == '/' && *folder == '_')) return 0;
    return !*label && !*folder;
}

/* The model's label index for each class folder of the proxy set: the label of that name (or
 * with '/' written '_'), else the folder's name as a label index. map: (proxy classes).
 * Returns 1 when every folder maps; otherwise 0 with the first that does not in `why`. */
static int map_labels(const proxy_set *px, const vit_model *m, int *map, char *why, size_t whylen)
{
    const int K = vit_config_of(m)->classes;
    int all = 1;
    for (int k = 0; k < proxy_classes(px); k++) {
        const char *name = proxy_class_name(px, k);
        map[k] = -1;
        for (int l = 0; l < K && map[k] < 0 && name; l++) {
            const char *lab = vit_label(m, l);
            if (lab && (!strcmp(lab, name) || same_but_slash(lab, name))) map[k] = l;
        }
        if (map[k] < 0 && name && *name && strspn(name, "0123456789") == strlen(name) && strlen(name) < 9) {
            int l = atoi(name);
            if (l < K) map[k] = l;
        }
        if (map[k] < 0 && all) {
            snprintf(why, whylen, "class folder '%s' is neither one of the model's %d labels nor a label index", name ? name : "?", K);
            all = 0;
        }
    }
    return all;
}

/* ---- the job's steps ---------------------------------------------------------------------- */

static double thread_cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The CPU share of a job (job_opts.cpu_share), applied between two forward passes: while any
 * inference worker ran a pass in the last INFERENCE_QUIET_S, the job sleeps long enough
 * after each pass that its CPU time stays within that share of one CPU. SCHED_IDLE alone
 * still costs inference a third of its images/s on a large model (cache, memory bandwidth
 * and the preemption at every barrier of the inference team); pausing costs none of that.
 * An idle server lets the job run flat out. Cancellation is checked while sleeping. */
#define INFERENCE_QUIET_S 0.1
static void throttle(job *j)
{
    double cpu = thread_cpu_s(), used = cpu - j->cpu_mark;
    j->cpu_mark = cpu;
    double share = g_opts.cpu_share;
    if (share >= 1 || used <= 0) return;
    double pause = used * (1 - share) / share;
    if (pause > 10) pause = 10;
    double t0 = mono_s();
    while (mono_s() - t0 < pause && !atomic_load(&j->cancel)) {
        if ((bat_now_ns() - bat_last_active_ns()) / 1e9 > INFERENCE_QUIET_S) break;
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    pthread_mutex_lock(&g_lock);
    j->throttled_s += mono_s() - t0;
    pthread_mutex_unlock(&g_lock);
    j->cpu_mark = thread_cpu_s();
}

static void on_progress(void *ctx, double f, int step, int block)
{
    job *j = ctx;
    (void)step; (void)block;
    pthread_mutex_lock(&g_lock);
    j->progress = P_SELECTED * f;
    pthread_mutex_unlock(&g_lock);
    throttle(j);
}

static void on_step(void *ctx, const sel_result *r, int step)
{
    job *j = ctx;
    pthread_mutex_lock(&g_lock);
    if (step < j->p.remove) {
        memcpy(j->steps[step].score, r->score[step], sizeof j->steps[step].score);
        j->steps[step].chosen = r->chosen[step];
        j->nsteps = step + 1;
    }
    pthread_mutex_unlock(&g_lock);
}

static void set_progress(job *j, double p)
{
    pthread_mutex_lock(&g_lock);
    j->progress = p;
    pthread_mutex_unlock(&g_lock);
}

static vt_status cancelled(job *j, const char *where, char *err, size_t errlen)
{
    (void)j;
    return vt_err(err, errlen, VT_ECANCELLED, "cancelled %s", where);
}

/* "0,2,4" */
static void block_list(char *buf, size_t n, uint64_t mask)
{
    size_t at = 0;
    buf[0] = '\0';
    for (int b = 0; b < 64 && at < n; b++)
        if ((mask >> b) & 1) at += (size_t)snprintf(buf + at, n - at, "%s%d", at ? "," : "", b);
}

/* Dilution fine-tuning as a child process (`vitd finetune`), at the job's nice value and
 * threads; its output goes to a temporary log whose tail becomes the error on failure. The
 * child is polled so that a cancel kills it within 50 ms. */
static vt_status run_finetune(job *j, const char *parent_path, uint64_t removed, int images, const char *out,
                              char *err, size_t errlen)
{
    char blocks[256], epochs[16], threads[16], batch[16], logpath[] = "/tmp/vitd-finetune-XXXXXX";
    block_list(blocks, sizeof blocks, removed);
    snprintf(epochs, sizeof epochs, "%d", j->p.finetune_epochs);
    snprintf(threads, sizeof threads, "%d", g_opts.threads);
    snprintf(batch, sizeof batch, "%d", images < FINETUNE_BATCH ? images : FINETUNE_BATCH);
    int logfd = mkostemp(logpath, O_CLOEXEC);
    if (logfd < 0) return vt_err(err, errlen, VT_EIO, "fine-tuning: cannot create a log file: %s", strerror(errno));
    char *argv[] = {"vitd", "finetune", "--model", (char *)parent_path, "--data", j->p.spool_dir, "--remove", blocks,
                    "--epochs", epochs, "--threads", threads, "--batch", batch, "--out", (char *)out, NULL};
    int nullfd = open("/dev/null", O_WRONLY | O_CLOEXEC);
    pid_t pid = fork();
    if (pid == 0) { /* the child: only async-signal-safe calls until exec */
        setpriority(PRIO_PROCESS, 0, g_opts.nice);
        dup2(nullfd >= 0 ? nullfd : logfd, 1); /* progress lines; errors go to stderr */
        dup2(logfd, 2);
        execv(g_exe, argv);
        _exit(127);
    }
    if (nullfd >= 0) close(nullfd);
    if (pid < 0) {
        close(logfd);
        unlink(logpath);
        return vt_err(err, errlen, VT_EIO, "fine-tuning: fork: %s", strerror(errno));
    }
    int status = 0, killed = 0;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid || (r < 0 && errno != EINTR)) break;
        if (!killed && atomic_load(&j->cancel)) {
            kill(pid, SIGKILL);
            killed = 1;
        }
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    vt_status st = VT_OK;
    if (killed) {
        st = cancelled(j, "during fine-tuning", err, errlen);
    } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        /* the last line the child wrote says why */
        char tail[400] = "";
        off_t end = lseek(logfd, 0, SEEK_END);
        off_t from = end > (off_t)sizeof tail - 1 ? end - (off_t)sizeof tail + 1 : 0;
        ssize_t n = pread(logfd, tail, sizeof tail - 1, from);
        tail[n > 0 ? n : 0] = '\0';
        while (n > 0 && (tail[n - 1] == '\n' || tail[n - 1] == '\r')) tail[--n] = '\0';
        char *last = strrchr(tail, '\n');
        st = vt_err(err, errlen, VT_EIO, "fine-tuning (%s finetune) %s %d: %s", g_exe,
                    WIFEXITED(status) ? "exited with status" : "was killed by signal",
                    WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status), last ? last + 1 : tail);
    }
    close(logfd);
    unlink(logpath);
    return st;
}

/* Top-1 agreement (and accuracies when labels map) of the candidate and the parent on the
 * held-out images [first, first + n) of the proxy set, on runners of this thread. */
static vt_status run_check(job *j, const vit_model *parent, const char *cand_path, proxy_set *px, int first, int n,
                           const int *map, int labelled, char *err, size_t errlen)
{
    vit_model *cm = NULL;
    vit_runner *rp = NULL, *rc = NULL;
    float *x = NULL, *yp = NULL, *yc = NULL;
    vt_status st;
    if ((st = vit_load(cand_path, NULL, &cm, err, errlen))) goto done;
    const vit_config *c = vit_config_of(parent);
    const int K = c->classes, B = n < CHECK_BATCH ? n : CHECK_BATCH;
    const size_t per = (size_t)c->channels * c->image_size * c->image_size;
    if (vit_config_of(cm)->classes != K) {
        st = vt_err(err, errlen, VT_EFORMAT, "the candidate has %d classes, its parent %d", vit_config_of(cm)->classes, K);
        goto done;
    }
    x = malloc((size_t)B * per * sizeof *x);
    yp = malloc((size_t)B * K * sizeof *yp);
    yc = malloc((size_t)B * K * sizeof *yc);
    if (!x || !yp || !yc) { st = vt_err(err, errlen, VT_ENOMEM, "out of memory for the check"); goto done; }
    if ((st = vit_runner_new(parent, B, &rp, err, errlen)) || (st = vit_runner_new(cm, B, &rc, err, errlen))) goto done;
    ent_images src = proxy_images(px);
    int agree = 0, right_p = 0, right_c = 0;
    for (int at = 0; at < n; at += B) {
        int b = n - at < B ? n - at : B;
        if (atomic_load(&j->cancel)) { st = cancelled(j, "during the check", err, errlen); goto done; }
        if ((st = src.read(src.ctx, first + at, b, x, err, errlen)) ||
            (st = vit_forward(rp, x, b, yp, NULL, err, errlen)) || (st = vit_forward(rc, x, b, yc, NULL, err, errlen)))
            goto done;
        for (int i = 0; i < b; i++) {
            int ap = 0, ac = 0;
            for (int k = 1; k < K; k++) {
                if (yp[(size_t)i * K + k] > yp[(size_t)i * K + ap]) ap = k;
                if (yc[(size_t)i * K + k] > yc[(size_t)i * K + ac]) ac = k;
            }
            agree += ap == ac;
            if (labelled) {
                int truth = map[proxy_label(px, first + at + i)];
                right_p += ap == truth;
                right_c += ac == truth;
            }
        }
        set_progress(j, P_WRITTEN + (P_CHECKED - P_WRITTEN) * (at + b) / n);
        throttle(j);
    }
    pthread_mutex_lock(&g_lock);
    j->checked = 1;
    j->check_images = n;
    j->agreement = (double)agree / n;
    j->acc_parent = labelled ? (double)right_p / n : NAN;
    j->acc_candidate = labelled ? (double)right_c / n : NAN;
    j->passed = j->agreement >= j->p.gate;
    pthread_mutex_unlock(&g_lock);
done:
    vit_runner_free(rp);
    vit_runner_free(rc);
    vit_free(cm);
    free(x);
    free(yp);
    free(yc);
    return st;
}

/* Loads stored `version` of `model` beside the active one (`like`: its load options), warms
 * it on this thread, makes it active in the store and publishes it. Caller holds g_publish. */
static vt_status publish_version(const char *model, int version, const reg_version *like, char *err, size_t errlen)
{
    store_version sv;
    vt_status st;
    if ((st = store_get(g_store, model, version, &sv, NULL)))
        return vt_err(err, errlen, VT_EINVAL, "model %s has no stored version %d", model, version);
    reg_load_opts lo = reg_version_load_opts(like);
    reg_version *v = NULL;
    double t0 = mono_s();
    if ((st = reg_version_load(sv.path, &lo, &v, err, errlen))) return st;
    if ((st = bat_warm_here(v, err, errlen)) || (st = store_activate(g_store, model, version, err, errlen))) {
        reg_release(v);
        return st;
    }
    if (reg_publish_id(model, v, version) < 0) {
        reg_release(v);
        return vt_err(err, errlen, VT_EINVAL, "model %s is not served", model);
    }
    int pruned = store_prune_old(g_store, model, g_opts.keep_versions);
    log_msg(LOG_INFO, "model %s: version %d is active (loaded and warmed in %.0f ms; %d old version%s deleted)", model,
            version, (mono_s() - t0) * 1e3, pruned, pruned == 1 ? "" : "s");
    return VT_OK;
}

/* The pipeline of srv_job.h, on the job thread. Results go into j under g_lock as they come. */
static vt_status run_job(job *j, char *err, size_t errlen)
{
    vt_status st;
    const job_params *p = &j->p;
    reg_version *parent = reg_acquire(p->model, 0);
    proxy_set *px = NULL;
    sel_result *res = NULL;
    char *report = NULL, *info = NULL, tmpdir[1024] = "", out[1100];
    int version = 0, committed = 0, *map = NULL;
    json_t *ij = NULL;
    if (!parent) return vt_err(err, errlen, VT_EINVAL, "model %s is not served", p->model);
    const vit_model *pm = reg_version_model(parent);
    const vit_config *c = vit_config_of(pm);
    pthread_mutex_lock(&g_lock);
    j->parent_version = reg_version_id(parent);
    j->depth = c->depth;
    pthread_mutex_unlock(&g_lock);

    /* 2. the proxy set and its split: the seeded sample's first images select, the rest check */
    proxy_opts po = {.max_images = p->images, .seed = p->seed};
    if ((st = proxy_open(p->spool_dir, c, &po, &px, err, errlen))) goto done;
    const int n = proxy_count(px);
    int nhold = (int)lround(n * p->holdout);
    if (n < 3) {
        st = vt_err(err, errlen, VT_EINVAL, "the upload has %d usable image%s; a job needs at least 3 (2 to select, 1 to check)",
                    n, n == 1 ? "" : "s");
        goto done;
    }
    if (nhold < 1) nhold = 1;
    if (nhold > n - 2) nhold = n - 2;
    const int nsel = n - nhold;
    if (!(map = calloc((size_t)proxy_classes(px) + 1, sizeof *map))) { st = vt_err(err, errlen, VT_ENOMEM, "out of memory"); goto done; }
    char why[300];
    int labelled = map_labels(px, pm, map, why, sizeof why);
    if (p->finetune_epochs > 0) {
        /* vitd finetune trains class folder k (sorted) as output k */
        int identity = labelled && proxy_classes(px) == c->classes;
        for (int k = 0; identity && k < c->classes; k++)
            if (map[k] != k) {
                snprintf(why, sizeof why, "folder '%s' is class %d in sorted order but the model's label %d",
                         proxy_class_name(px, k), k, map[k]);
                identity = 0;
            }
        if (labelled && proxy_classes(px) != c->classes)
            snprintf(why, sizeof why, "the upload has %d class folders", proxy_classes(px));
        if (!identity) {
            st = vt_err(err, errlen, VT_EINVAL, "fine-tuning needs labels: the sorted class folders must be the model's %d "
                        "labels (names, '/' written '_', or indices) in the model's order; %s", c->classes, why);
            goto done;
        }
    }

    /* 3. the selection on the first nsel images */
    if (atomic_load(&j->cancel)) { st = cancelled(j, "before the selection", err, errlen); goto done; }
    ent_images sel_src = proxy_images(px);
    sel_src.count = nsel;
    sel_opts so = {.k = p->remove, .seed = p->seed, .batch = SELECT_BATCH, .evaluate = 1, .on_step = on_step, .step_ctx = j};
    sel_strategy_parse(p->strategy, &so.strategy);
    ent_control ctl = {.progress = on_progress, .ctx = j, .cancel = &j->cancel};
    if (!(res = malloc(sizeof *res))) { st = vt_err(err, errlen, VT_ENOMEM, "out of memory"); goto done; }
    if ((st = sel_run(pm, &sel_src, &so, &ctl, res, err, errlen))) goto done;
    uint64_t removed = c->removed | res->chosen_mask;
    pthread_mutex_lock(&g_lock);
    memcpy(j->selected, res->chosen, sizeof j->selected);
    j->nselected = res->k;
    j->removed = removed;
    j->progress = P_SELECTED;
    pthread_mutex_unlock(&g_lock);
    if (!(report = sel_report_json(res, proxy_failed(px), reg_version_path(parent), "upload"))) {
        st = vt_err(err, errlen, VT_ENOMEM, "out of memory");
        goto done;
    }

    /* 4-5. the candidate's checkpoint, in the store's temporary folder */
    if (atomic_load(&j->cancel)) { st = cancelled(j, "after the selection", err, errlen); goto done; }
    if ((st = store_begin(g_store, p->model, &version, tmpdir, sizeof tmpdir, err, errlen))) { version = 0; goto done; }
    snprintf(out, sizeof out, "%s/model.safetensors", tmpdir);
    if (p->finetune_epochs > 0) st = run_finetune(j, reg_version_path(parent), removed, proxy_available(px), out, err, errlen);
    else st = prune_write(reg_version_path(parent), removed, report, out, NULL, err, errlen);
    if (st) goto done;
    set_progress(j, P_WRITTEN);

    /* 6. the check (before the commit, so that version.json carries it) */
    if ((st = run_check(j, pm, out, px, nsel, nhold, map, labelled, err, errlen))) goto done;

    /* commit: the version exists from here on, whatever happens next */
    json_error_t je;
    ij = json_object();
    json_t *rep = json_loads(report, 0, &je), *chk = json_object();
    json_object_set_new(ij, "job", json_integer(j->id));
    json_object_set_new(ij, "selection", rep ? rep : json_null());
    json_object_set_new(chk, "images", json_integer(j->check_images));
    json_object_set_new(chk, "agreement", json_real(j->agreement));
    json_object_set_new(chk, "accuracy_parent", labelled ? json_real(j->acc_parent) : json_null());
    json_object_set_new(chk, "accuracy_candidate", labelled ? json_real(j->acc_candidate) : json_null());
    json_object_set_new(chk, "gate", json_real(p->gate));
    json_object_set_new(chk, "passed", json_boolean(j->passed));
    json_object_set_new(ij, "check", chk);
    json_object_set_new(ij, "finetune_epochs", json_integer(p->finetune_epochs));
    json_object_set_new(ij, "proxy", json_pack("{s:i, s:i, s:i, s:i, s:i, s:b}", "images", n, "selection", nsel,
                                               "held_out", nhold, "failed", proxy_failed(px), "classes",
                                               proxy_classes(px), "labelled", labelled));
    if (!(info = json_dumps(ij, JSON_COMPACT | JSON_REAL_PRECISION(17)))) { st = vt_err(err, errlen, VT_ENOMEM, "out of memory"); goto done; }
    if ((st = store_commit(g_store, p->model, version, j->parent_version, "prune", info, err, errlen))) goto done;
    committed = 1;
    pthread_mutex_lock(&g_lock);
    j->version = version;
    pthread_mutex_unlock(&g_lock);

    /* 7. the gate, then load + warm + activate + publish */
    if (!j->passed) {
        pthread_mutex_lock(&g_lock);
        snprintf(j->reason, sizeof j->reason, "top-1 agreement %.4f on %d held-out images is below the gate %g: "
                 "version %d is stored but not activated", j->agreement, j->check_images, p->gate, version);
        j->progress = 1;
        pthread_mutex_unlock(&g_lock);
        goto done;
    }
    if (atomic_load(&j->cancel)) { st = cancelled(j, "before activation (the version stays stored)", err, errlen); goto done; }
    pthread_mutex_lock(&g_publish);
    st = publish_version(p->model, version, parent, err, errlen);
    pthread_mutex_unlock(&g_publish);
    if (st) goto done;
    pthread_mutex_lock(&g_lock);
    j->activated = 1;
    j->progress = 1;
    pthread_mutex_unlock(&g_lock);
done:
    if (version && !committed) store_abort(g_store, p->model, version);
    json_decref(ij);
    free(info);
    free(report);
    free(res);
    free(map);
    proxy_free(px);
    reg_release(parent);
    return st;
}

static void *job_thread(void *arg)
{
    job *j = arg;
    /* The OpenMP team is created by this thread's first parallel region and inherits the
     * thread's nice value: set both first. */
    pid_t tid = (pid_t)syscall(SYS_gettid);
    errno = 0;
    int cur = getpriority(PRIO_PROCESS, (id_t)tid);
    if (errno == 0 && cur < g_opts.nice) setpriority(PRIO_PROCESS, (id_t)tid, g_opts.nice);
    /* SCHED_IDLE, not only nice 19: a nice-19 thread still gets CFS slices of a few ms beside
     * an inference team, and each one stalls the whole team at its next barrier (DeiT-S
     * served 0.58x its images/s while a job ran); a waking normal thread preempts an idle-
     * policy one at once. The team and a fine-tuning child inherit the policy. */
    int idle = 0;
    if (g_opts.idle) {
        struct sched_param sp = {0};
        idle = sched_setscheduler(tid, SCHED_IDLE, &sp) == 0;
        if (!idle) log_msg(LOG_WARN, "job %d: cannot use SCHED_IDLE (%s); running at nice %d only", j->id, strerror(errno), g_opts.nice);
    }
    vit_set_threads(g_opts.threads);
    j->cpu_mark = thread_cpu_s();

    pthread_mutex_lock(&g_lock);
    j->state = JOB_RUNNING;
    j->started = time(NULL);
    j->t_started = mono_s();
    pthread_mutex_unlock(&g_lock);
    log_msg(LOG_INFO, "job %d: %s k=%d on model %s started (%d thread%s, nice %d%s)", j->id, j->p.strategy, j->p.remove,
            j->p.model, g_opts.threads, g_opts.threads == 1 ? "" : "s", g_opts.nice, idle ? ", SCHED_IDLE" : "");

    char err[512] = "";
    vt_status st = atomic_load(&j->cancel) ? cancelled(j, "before it started", err, sizeof err) : run_job(j, err, sizeof err);
    spool_remove_dir(j->p.spool_dir);

    pthread_mutex_lock(&g_lock);
    j->state = st == VT_OK ? JOB_SUCCEEDED : st == VT_ECANCELLED ? JOB_CANCELLED : JOB_FAILED;
    if (st) snprintf(j->error, sizeof j->error, "%s", err);
    j->finished = time(NULL);
    j->t_finished = mono_s();
    double secs = j->t_finished - j->t_started;
    const char *name = state_name(j->state);
    int version = j->version, activated = j->activated;
    g_current = NULL;
    trim_table();
    pthread_mutex_unlock(&g_lock);
    /* j stays in the table: it is the newest finished job, and the next one cannot finish
     * before job_submit has joined this thread */
    met_job_finished(name, secs);
    met_job_running(0);
    if (st) log_msg(st == VT_ECANCELLED ? LOG_INFO : LOG_WARN, "job %d %s after %.1f s: %s", j->id, name, secs, err);
    else log_msg(LOG_INFO, "job %d succeeded in %.1f s: version %d %s", j->id, secs, version,
                 activated ? "is active" : "stored, not activated");
    return NULL;
}

/* ---- the API ------------------------------------------------------------------------------- */

int job_submit(const job_params *p, char *err, size_t errlen)
{
    sel_strategy strat;
    struct stat sb;
    if (!g_store) return vt_err(err, errlen, VT_EINVAL, "jobs are not enabled (no store)"), -1;
    if (sel_strategy_parse(p->strategy, &strat))
        return vt_err(err, errlen, VT_EINVAL, "strategy '%s' is not nose, first or random", p->strategy), -1;
    if (!(p->gate >= 0) || !isfinite(p->gate))
        return vt_err(err, errlen, VT_EINVAL, "gate %g is not a number >= 0 (a top-1 agreement; above 1 never passes)", p->gate), -1;
    if (!(p->holdout >= 0 && p->holdout < 1))
        return vt_err(err, errlen, VT_EINVAL, "holdout %g is outside [0, 1)", p->holdout), -1;
    if (p->images < 0) return vt_err(err, errlen, VT_EINVAL, "images %d is negative", p->images), -1;
    if (p->finetune_epochs < 0 || p->finetune_epochs == 1 || p->finetune_epochs > 10000)
        return vt_err(err, errlen, VT_EINVAL, "finetune_epochs %d: 0 (none) or 2..10000 (the last epoch runs without the "
                      "removed attention)", p->finetune_epochs), -1;
    if (stat(p->spool_dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return vt_err(err, errlen, VT_EINVAL, "spool folder %s: %s", p->spool_dir, errno ? strerror(errno) : "not a folder"), -1;
    reg_version *v = reg_acquire(p->model, 0);
    if (!v) return vt_err(err, errlen, VT_EINVAL, "unknown model '%s'", p->model), -1;
    const vit_config *c = reg_version_config(v);
    int left = c->depth - __builtin_popcountll(c->removed), depth = c->depth;
    reg_release(v);
    if (p->remove < 1 || p->remove > left)
        return vt_err(err, errlen, VT_EINVAL, "remove=%d: model %s has %d attention layers left (of %d blocks)", p->remove,
                      p->model, left, depth), -1;

    job *j = calloc(1, sizeof *j);
    if (j) j->steps = calloc((size_t)p->remove, sizeof *j->steps);
    if (!j || !j->steps) {
        job_free(j);
        return vt_err(err, errlen, VT_ENOMEM, "out of memory"), -1;
    }
    j->p = *p;
    j->state = JOB_QUEUED;
    j->created = time(NULL);
    j->agreement = j->acc_parent = j->acc_candidate = NAN;
    atomic_init(&j->cancel, 0);

    pthread_mutex_lock(&g_lock);
    if (g_current) {
        int busy = g_current->id;
        const char *what = state_name(g_current->state);
        pthread_mutex_unlock(&g_lock);
        job_free(j);
        vt_err(err, errlen, VT_EINVAL, "job %d is still %s", busy, what);
        return JOB_EBUSY;
    }
    /* the previous job's thread has finished its last locked step: joining is immediate */
    if (g_thread_joinable) {
        pthread_join(g_thread, NULL);
        g_thread_joinable = 0;
    }
    j->id = g_next_id++;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, (size_t)8 << 20);
    int rc = pthread_create(&g_thread, &attr, job_thread, j);
    pthread_attr_destroy(&attr);
    if (rc) {
        g_next_id--;
        pthread_mutex_unlock(&g_lock);
        job_free(j);
        return vt_err(err, errlen, VT_ENOMEM, "cannot start the job thread: %s", strerror(rc)), -1;
    }
    g_thread_joinable = 1;
    j->next = g_jobs;
    g_jobs = j;
    g_current = j;
    int id = j->id;
    pthread_mutex_unlock(&g_lock);
    met_job_running(1);
    return id;
}

static json_t *num_or_null(double v) { return isfinite(v) ? json_real(v) : json_null(); }

static json_t *time_or_null(time_t t)
{
    if (!t) return json_null();
    struct tm tm;
    char buf[32];
    gmtime_r(&t, &tm);
    strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return json_string(buf);
}

static json_t *block_array(uint64_t mask)
{
    json_t *a = json_array();
    for (int b = 0; b < 64; b++)
        if ((mask >> b) & 1) json_array_append_new(a, json_integer(b));
    return a;
}

json_t *job_json(int id)
{
    pthread_mutex_lock(&g_lock);
    job *j = find_job(id);
    if (!j) {
        pthread_mutex_unlock(&g_lock);
        return NULL;
    }
    const job_params *p = &j->p;
    json_t *o = json_object(), *steps = json_array(), *sel = json_array();
    json_object_set_new(o, "id", json_integer(j->id));
    json_object_set_new(o, "model", json_string(p->model));
    json_object_set_new(o, "state", json_string(state_name(j->state)));
    json_object_set_new(o, "progress", json_real(j->progress));
    json_object_set_new(o, "params", json_pack("{s:i, s:s, s:i, s:I, s:f, s:f, s:i}", "remove", p->remove, "strategy",
                                               p->strategy, "images", p->images, "seed", (json_int_t)p->seed, "gate",
                                               p->gate, "holdout", p->holdout, "finetune_epochs", p->finetune_epochs));
    json_object_set_new(o, "parent_version", j->parent_version ? json_integer(j->parent_version) : json_null());
    for (int s = 0; s < j->nsteps; s++) {
        json_t *scores = json_array();
        for (int i = 0; i < j->depth; i++)
            if (!isnan(j->steps[s].score[i]))
                json_array_append_new(scores, json_pack("{s:i, s:o}", "block", i, "score", num_or_null(j->steps[s].score[i])));
        json_array_append_new(steps, json_pack("{s:i, s:o, s:i}", "step", s, "scores", scores, "chosen", j->steps[s].chosen));
    }
    json_object_set_new(o, "steps", steps);
    for (int s = 0; s < j->nselected; s++) json_array_append_new(sel, json_integer(j->selected[s]));
    json_object_set_new(o, "selected", sel);
    json_object_set_new(o, "removed_blocks", j->nselected ? block_array(j->removed) : json_array());
    if (j->checked)
        json_object_set_new(o, "check", json_pack("{s:i, s:o, s:o, s:o, s:f, s:b}", "images", j->check_images, "agreement",
                                                  num_or_null(j->agreement), "accuracy_parent", num_or_null(j->acc_parent),
                                                  "accuracy_candidate", num_or_null(j->acc_candidate), "gate", p->gate,
                                                  "passed", j->passed));
    else
        json_object_set_new(o, "check", json_null());
    json_object_set_new(o, "version", j->version ? json_integer(j->version) : json_null());
    json_object_set_new(o, "activated", json_boolean(j->activated));
    json_object_set_new(o, "reason", j->reason[0] ? json_string(j->reason) : json_null());
    json_object_set_new(o, "error", j->error[0] ? json_string(j->error) : json_null());
    json_object_set_new(o, "created", time_or_null(j->created));
    json_object_set_new(o, "started", time_or_null(j->started));
    json_object_set_new(o, "finished", time_or_null(j->finished));
    double secs = !j->started ? NAN : (j->finished ? j->t_finished : mono_s()) - j->t_started;
    json_object_set_new(o, "seconds", num_or_null(secs));
    json_object_set_new(o, "paused_seconds", json_real(j->throttled_s));
    pthread_mutex_unlock(&g_lock);
    return o;
}

int job_cancel(int id)
{
    pthread_mutex_lock(&g_lock);
    job *j = find_job(id);
    if (j && j->state < JOB_SUCCEEDED) atomic_store(&j->cancel, 1);
    pthread_mutex_unlock(&g_lock);
    return j ? 0 : -1;
}

int job_current_state(void)
{
    pthread_mutex_lock(&g_lock);
    int s = g_current ? (int)g_current->state : -1;
    pthread_mutex_unlock(&g_lock);
    return s;
}

int job_activate(const char *model, int version, char *err, size_t errlen)
{
    store_version sv;
    if (!g_store) return vt_err(err, errlen, VT_EINVAL, "no model store"), 500;
    reg_version *active = reg_acquire(model, 0);
    if (!active) return vt_err(err, errlen, VT_EINVAL, "unknown model '%s'", model), 404;
    if (store_get(g_store, model, version, &sv, NULL)) {
        reg_release(active);
        return vt_err(err, errlen, VT_EINVAL, "model %s has no version %d", model, version), 404;
    }
    if (pthread_mutex_trylock(&g_publish)) {
        reg_release(active);
        return vt_err(err, errlen, VT_EINVAL, "a job is publishing a version; try again when it has finished"), 409;
    }
    vt_status st = VT_OK;
    if (reg_version_id(active) == version) {
        /* already served: only make sure the store says so too */
        if (store_active(g_store, model) != version) st = store_activate(g_store, model, version, err, errlen);
    } else if (reg_has_version(model, version) == 1 && !(st = store_activate(g_store, model, version, err, errlen)) &&
               reg_activate(model, version) == 0) {
        /* still loaded (and warm): switched back without loading */
        log_msg(LOG_INFO, "model %s: version %d is active again (it was still loaded)", model, version);
    } else if (!st) {
        vit_set_threads(g_opts.threads); /* this (admin) thread's OpenMP team for the warm-up */
        st = publish_version(model, version, active, err, errlen);
    }
    pthread_mutex_unlock(&g_publish);
    reg_release(active);
    return st ? 500 : 0;
}
