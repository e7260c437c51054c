/* cmd_serve.c - `vitd serve`: configuration, model loading and warm-up, the HTTP daemon,
 * and the drain on SIGTERM/SIGINT. The pieces live in srv_*.c; this file only orders them.
 *
 * Start-up: configuration (invalid -> exit 2 naming the key) -> models loaded (a missing or
 * bad checkpoint -> exit 1 naming the path) -> listener up (live 200, ready 503) -> every
 * model warmed at every batch size -> ready 200.
 * Shutdown: the first SIGTERM/SIGINT stops accepting connections, turns readiness and new
 * inference requests to 503, and waits up to drain_timeout_s for requests in flight; then
 * queued jobs are answered 503, the batches running finish, and the process exits 0. A
 * second signal skips the wait.
 */
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cmd.h"
#include "srv_admin.h"
#include "srv_api.h"
#include "srv_batcher.h"
#include "srv_config.h"
#include "srv_http.h"
#include "srv_job.h"
#include "srv_log.h"
#include "srv_metrics.h"
#include "srv_registry.h"
#include "srv_store.h"

static conf_t g_conf; /* immutable once loaded */

/* The OpenMP team of a model's worker. threads = 0 (auto): every usable CPU, except one
 * thread for models whose whole batch is under SMALL_BATCH_MACS: their ~100 parallel regions
 * per forward pass each hold so little work that the fork/join and barrier cost of a team
 * (tens of microseconds when waiting threads sleep, far more when the HTTP threads or another
 * process hold a core) exceeds what the second core adds. Measured on this 2-CPU machine
 * (docs/serving.md): the default model (10 MMAC per image) serves more images/s on one
 * thread than on two. */
#define SMALL_BATCH_MACS 500e6

static int worker_threads(const vit_config *c, int cpus)
{
    if (g_conf.threads) return (int)g_conf.threads;
    return (double)vit_macs(c, 0) * g_conf.max_batch_size < SMALL_BATCH_MACS ? 1 : cpus;
}

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int cmd_serve(int argc, char **argv)
{
    char err[1024];
    int rc = conf_load(&g_conf, argc, argv, err, sizeof err);
    if (rc > 0) return 0;
    if (rc < 0) {
        fprintf(stderr, "vitd serve: invalid configuration: %s\n", err);
        return 2;
    }
    /* gomp_spincount. GNU OpenMP reads GOMP_SPINCOUNT when the program is loaded, before main: the only way to
     * set it from the configuration is to run the program again with it in the environment.
     * A waiting OpenMP thread spins (by default ~300,000 iterations) before it sleeps; when other
     * threads want the same cores (the HTTP threads decoding the next batch, or any other
     * process) the spinning burns the time slices its partner needs, at each of the ~100 parallel
     * regions of a forward pass. Measured on 2 shared CPUs (docs/serving.md): a 12-block ViT at
     * batch 1 runs at under 1 image/s with the default, 18 with 10,000 spins, 63-66 with 1,000,
     * 100-108 with 0; idle, 0 costs ~40% against 1,000 (main.c's measurement for the other
     * commands); the server itself showed no difference between 0 and 1,000 under load. So 1,000,
     * as for every other vitd command, with the active wait policy (cmd.h).
     * argv is main's argv + 1 (main.c's command table): argv - 1 is the whole command line. */
    cli_reexec_spincount(g_conf.gomp_spincount, 1, argc + 1, argv - 1);
    log_init(g_conf.log_format == 1 ? LOG_JSON : LOG_TEXT, g_conf.access_log);
    json_object_seed(0); /* before any thread: jansson's hash seed (reliability.md) */
    /* the admin token, before any thread: it is taken out of the environment */
    char admin_msg[512];
    int admin_on = admin_load_token(&g_conf, admin_msg, sizeof admin_msg);
    if (admin_on < 0) {
        log_msg(LOG_ERROR, "invalid configuration: %s", admin_msg);
        return 2;
    }

    /* SIGTERM/SIGINT are taken by sigwait below: block them before any thread starts so
     * every thread inherits the mask. SIGPIPE: a client gone mid-reply is not fatal. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    int cpus = vit_cpu_count();
    bat_set_cpus(cpus);
    log_msg(LOG_INFO, "vitd %s starting: %d CPUs usable, %ld HTTP threads, GOMP_SPINCOUNT=%s OMP_WAIT_POLICY=%s, config file %s",
            VITD_VERSION, cpus, g_conf.http_threads, getenv("GOMP_SPINCOUNT") ? getenv("GOMP_SPINCOUNT") : "(default)",
            getenv("OMP_WAIT_POLICY") ? getenv("OMP_WAIT_POLICY") : "(default)",
            g_conf.config_file[0] ? g_conf.config_file : "(none)");

    int nroutes, nadmin;
    const http_route *routes = api_routes(&nroutes), *aroutes = admin_routes(&nadmin);
    const char *names[48];
    int nnames = 0;
    for (int i = 0; i < nroutes && nnames < 48; i++) names[nnames++] = routes[i].name;
    for (int i = 0; i < nadmin && nnames < 48; i++) names[nnames++] = aroutes[i].name;
    met_init(names, nnames);
    reg_init(1);

    int n = g_conf.nmodels, exit_code = 1, jobs_on = 0;
    http_server *hs = NULL, *as = NULL;
    bat_queue *queues[CONF_MAX_MODELS] = {0};
    reg_version *loaded[CONF_MAX_MODELS] = {0}; /* borrowed after publish, for warm-up */
    /* The model store (srv_store.h): every configured checkpoint is imported into it, and what
     * is served is the store's active version under the store's number, so a restart serves
     * what was active (e.g. a pruned version 3), and a changed checkpoint becomes a new one. */
    store *mstore = NULL;
    if (store_open(g_conf.store_dir, &mstore, err, sizeof err)) {
        log_msg(LOG_ERROR, "model store: %s", err);
        goto done;
    }
    for (int i = 0; i < n; i++) {
        const conf_model *cm = &g_conf.models[i];
        struct stat sb;
        if (stat(cm->path, &sb) != 0) {
            if (g_conf.default_model || !strcmp(cm->path, CONF_DEFAULT_MODEL_PATH))
                log_msg(LOG_ERROR, "the default model %s does not exist (the training issue produces it); "
                                   "name a model with --model NAME=PATH or VITD_MODELS", cm->path);
            else
                log_msg(LOG_ERROR, "model %s: %s: %s", cm->name, cm->path, strerror(errno));
            goto done;
        }
        double t0 = mono_s();
        int version;
        store_version sv;
        vt_status st = store_import(mstore, cm->name, cm->path, &version, err, sizeof err);
        if (st) {
            log_msg(LOG_ERROR, "model %s: %s (%s)", cm->name, err, vt_status_str(st));
            goto done;
        }
        if (store_get(mstore, cm->name, version, &sv, NULL)) {
            log_msg(LOG_ERROR, "model %s: version %d vanished from the store %s", cm->name, version, store_root(mstore));
            goto done;
        }
        int pruned = store_prune_old(mstore, cm->name, (int)g_conf.keep_versions);
        reg_load_opts lo = {.max_batch = (int)g_conf.max_batch_size, .max_pixels = (uint64_t)g_conf.max_image_pixels,
                            .exif = g_conf.exif};
        reg_version *v;
        st = reg_version_load(sv.dir, &lo, &v, err, sizeof err);
        /* threads and instances depend on the model's size */
        int threads = st ? 1 : worker_threads(reg_version_config(v), cpus);
        int instances = g_conf.instances ? (int)g_conf.instances : (cpus / threads > 1 ? cpus / threads : 1);
        if (!st && (st = reg_version_set_instances(v, instances, err, sizeof err))) reg_release(v);
        if (st) {
            log_msg(LOG_ERROR, "model %s: cannot load version %d (%s): %s (%s)", cm->name, version, sv.dir, err,
                    vt_status_str(st));
            goto done;
        }
        const vit_config *c = reg_version_config(v);
        met_model *mm = met_model_get(cm->name);
        bat_opts bo = {.max_batch = (int)g_conf.max_batch_size, .max_queue_delay_us = g_conf.max_queue_delay_us,
                       .max_queue_images = g_conf.max_queue_images, .threads = threads, .nice = (int)g_conf.worker_nice,
                       .instances = instances};
        if (!mm || (st = bat_new(cm->name, &bo, mm, &queues[i], err, sizeof err)) || reg_add(cm->name, queues[i], mm)) {
            log_msg(LOG_ERROR, "model %s: cannot start its worker: %s", cm->name, mm && st ? err : "out of memory");
            reg_release(v);
            goto done;
        }
        reg_publish_id(cm->name, v, version);
        loaded[i] = v;
        log_msg(LOG_INFO, "model %s version %d (store %s, %s; %d old version%s deleted): %s, image %d, channels %d, width %d, "
                          "depth %d, %d removed, %d classes, %.1f GMAC per batch of %ld, %d instance%s of %d OpenMP thread%s (%.0f ms)",
                cm->name, reg_version_id(v), sv.dir, sv.origin, pruned, pruned == 1 ? "" : "s", cm->path, c->image_size, c->channels, c->dim, c->depth,
                __builtin_popcountll(c->removed), c->classes, vit_macs(c, 0) * g_conf.max_batch_size / 1e9,
                g_conf.max_batch_size, instances, instances == 1 ? "" : "s", threads, threads == 1 ? "" : "s",
                (mono_s() - t0) * 1e3);
    }

    api_init(&g_conf);
    http_opts ho = {.host = g_conf.host, .port = (int)g_conf.port, .threads = (int)g_conf.http_threads,
                    .max_connections = (int)g_conf.max_connections, .max_per_ip = (int)g_conf.max_connections_per_ip,
                    .idle_timeout_s = (int)g_conf.idle_timeout_s, .max_body = (size_t)g_conf.max_body_bytes,
                    .retry_after_s = (int)g_conf.retry_after_s};
    hs = http_start(&ho, routes, nroutes, err, sizeof err);
    if (!hs) {
        log_msg(LOG_ERROR, "%s", err);
        goto done;
    }
    log_msg(LOG_INFO, "listening on %s:%d", g_conf.host, http_port(hs));

    for (int i = 0; i < n; i++) {
        double t0 = mono_s();
        vt_status st = bat_warm(queues[i], loaded[i], err, sizeof err);
        if (st) {
            log_msg(LOG_ERROR, "model %s: warm-up failed: %s", g_conf.models[i].name, err);
            http_stop(hs);
            goto done;
        }
        reg_set_ready(g_conf.models[i].name, 1);
        log_msg(LOG_INFO, "model %s warmed at batch sizes 1..%ld (%.0f ms)", g_conf.models[i].name,
                g_conf.max_batch_size, (mono_s() - t0) * 1e3);
    }

    /* the admin API (jobs, then its listener): only once every model serves */
    job_opts jo = {.threads = (int)g_conf.job_threads, .nice = (int)g_conf.job_nice, .idle = g_conf.job_idle, .cpu_share = g_conf.job_cpu_share,
                   .keep_versions = (int)g_conf.keep_versions};
    job_init(mstore, &jo);
    jobs_on = 1;
    if (admin_on) {
        http_opts ao = {.host = g_conf.admin_host, .port = (int)g_conf.admin_port, .threads = 2,
                        .max_connections = 64, .max_per_ip = 0, .idle_timeout_s = (int)g_conf.idle_timeout_s,
                        .max_body = 65536, .retry_after_s = (int)g_conf.retry_after_s, .admit = admin_admit};
        if (admin_init(&g_conf, mstore, err, sizeof err) || !(as = http_start(&ao, aroutes, nadmin, err, sizeof err))) {
            log_msg(LOG_ERROR, "admin listener: %s", err);
            http_stop(hs);
            goto done;
        }
        log_msg(LOG_INFO, "admin listening on %s:%d", g_conf.admin_host, http_port(as));
    } else {
        log_msg(LOG_WARN, "%s", admin_msg);
    }
    log_msg(LOG_INFO, "ready");

    int sig = 0;
    while (sigwait(&sigs, &sig) != 0) {}
    log_msg(LOG_INFO, "%s: draining (up to %ld s for %ld requests in flight)", sig == SIGTERM ? "SIGTERM" : "SIGINT",
            g_conf.drain_timeout_s, http_inflight(hs) + http_inflight(as));
    http_begin_drain(hs);
    http_begin_drain(as);
    double until = mono_s() + (double)g_conf.drain_timeout_s;
    struct timespec tick = {0, 10 * 1000 * 1000};
    while (http_inflight(hs) + http_inflight(as) > 0 && mono_s() < until) {
        if (sigtimedwait(&sigs, NULL, &tick) > 0) {
            log_msg(LOG_WARN, "second signal: not waiting any longer");
            break;
        }
    }
    if (http_inflight(hs) > 0)
        log_msg(LOG_WARN, "%ld requests still in flight: queued ones get 503, running batches finish", http_inflight(hs));
    /* a running job is cancelled (its version, if not yet published, is not) */
    job_shutdown();
    jobs_on = 0;
    for (int i = 0; i < n; i++) bat_fail_queued(queues[i]);
    for (int i = 0; i < n; i++)
        while (bat_pending(queues[i]) > 0) nanosleep(&tick, NULL);
    /* let resumed requests send their replies (bounded: slow clients are cut by the stop) */
    for (double t = mono_s() + 1.0; http_inflight(hs) > 0 && mono_s() < t;) nanosleep(&tick, NULL);
    http_stop(hs);
    http_stop(as);
    exit_code = 0;
    log_msg(LOG_INFO, "stopped");
done:
    if (jobs_on) job_shutdown(); /* a job holds versions: before the registry goes */
    for (int i = 0; i < n; i++) bat_free(queues[i]);
    reg_shutdown();
    store_close(mstore);
    met_shutdown();
    return exit_code;
}
