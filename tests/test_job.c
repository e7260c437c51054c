/* test_job.c - admin prune jobs (srv_job.h) end to end, without HTTP: a small random model
 * served from a temporary store, spool folders of PNGs written here, and jobs driven through
 * job_submit / job_json / job_cancel / job_activate.
 *
 * What is checked: a job that passes its gate stores and activates a version whose removed
 * blocks are exactly the parent's plus the selection (read back from the checkpoint, the
 * store and the registry); a gate above 1 stores without activating and says why; a cancel
 * stores and activates nothing; a second submit while one runs is JOB_EBUSY; the spool
 * folder is deleted whatever the outcome; bad parameters are refused before anything starts;
 * labels map by name, by name with '/' as '_' and by index; fine-tuning without labels fails
 * clearly (and, when the vitd binary is at hand, a real 2-epoch fine-tune succeeds);
 * job_activate rolls back; the job series and the active-version series of /metrics follow. */
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <png.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "safetensors.h"
#include "srv_job.h"
#include "srv_metrics.h"
#include "srv_registry.h"
#include "srv_store.h"
#include "vit.h"

#define MODEL "tiny"

static char tmpdir[256];
static int spool_seq;

/* ---- fixtures -------------------------------------------------------------------------------- */

/* A 5-block ViT (S 16, P 4, D 32, 3 classes) with block 1's attention already removed, and
 * labels "cat", "dog/wolf", "bird" in its vitd.config. */
static void write_model(const char *path)
{
    const int S = 16, P = 4, C = 3, D = 32, L = 5, K = 3, N = (S / P) * (S / P) + 1, F = 4 * D;
    st_writer *w = st_writer_new();
    float *bufs[128];
    int nb = 0;
    unsigned seed = 7;
    char name[96];
#define T(nm, scale, shift, nd, ...)                                                       \
    do {                                                                                   \
        int64_t sh_[] = {__VA_ARGS__};                                                     \
        size_t n_ = 1;                                                                     \
        for (int i_ = 0; i_ < nd; i_++) n_ *= (size_t)sh_[i_];                             \
        float *b_ = bufs[nb++] = malloc(n_ * sizeof(float));                               \
        for (size_t i_ = 0; i_ < n_; i_++) b_[i_] = shift + scale * check_randn(&seed);    \
        CHECK(st_writer_add_f32(w, nm, b_, nd, sh_) == VT_OK, "add %s", nm);              \
    } while (0)
    T("cls_token", 0.5f, 0, 3, 1, 1, D);
    T("pos_embed", 0.5f, 0, 3, 1, N, D);
    T("patch_embed.proj.weight", 0.15f, 0, 4, D, C, P, P);
    T("patch_embed.proj.bias", 0.02f, 0, 1, D);
    for (int b = 0; b < L; b++) {
#define B(s) (snprintf(name, sizeof name, "blocks.%d.%s", b, s), name)
        if (b != 1) {
            T(B("norm1.weight"), 0.1f, 1, 1, D);
            T(B("norm1.bias"), 0.02f, 0, 1, D);
            T(B("attn.qkv.weight"), 0.15f, 0, 2, 3 * D, D);
            T(B("attn.qkv.bias"), 0.02f, 0, 1, 3 * D);
            T(B("attn.proj.weight"), 0.15f, 0, 2, D, D);
            T(B("attn.proj.bias"), 0.02f, 0, 1, D);
        }
        T(B("norm2.weight"), 0.1f, 1, 1, D);
        T(B("norm2.bias"), 0.02f, 0, 1, D);
        T(B("mlp.fc1.weight"), 0.15f, 0, 2, F, D);
        T(B("mlp.fc1.bias"), 0.02f, 0, 1, F);
        T(B("mlp.fc2.weight"), 0.15f, 0, 2, D, F);
        T(B("mlp.fc2.bias"), 0.02f, 0, 1, D);
#undef B
    }
    T("norm.weight", 0.1f, 1, 1, D);
    T("norm.bias", 0.02f, 0, 1, D);
    T("head.weight", 0.3f, 0, 2, K, D);
    T("head.bias", 0.02f, 0, 1, K);
#undef T
    CHECK(st_writer_meta(w, "vitd.config",
                         "{\"model_args\": {\"num_heads\": 2}, \"pretrained_cfg\": {\"crop_pct\": 1.0, "
                         "\"interpolation\": \"bilinear\"}, \"label_names\": [\"cat\", \"dog/wolf\", \"bird\"], "
                         "\"removed_blocks\": [1]}") == VT_OK, "meta");
    CHECK(st_writer_meta(w, "vitd.removed_blocks", "1") == VT_OK, "meta");
    char err[256];
    CHECK(st_writer_save(w, path, err, sizeof err) == VT_OK, "save %s: %s", path, err);
    st_writer_free(w);
    for (int i = 0; i < nb; i++) free(bufs[i]);
}

/* A spool folder: per_class random 20x20 PNGs in each class folder; returns its path. */
static const char *make_spool(const char *const *classes, int ncls, int per_class)
{
    static char dirs[16][512];
    char *dir = dirs[spool_seq % 16];
    snprintf(dir, 512, "%s/spool%d", tmpdir, spool_seq++);
    CHECK(mkdir(dir, 0700) == 0, "mkdir %s: %s", dir, strerror(errno));
    unsigned s = (unsigned)spool_seq * 101u;
    unsigned char px[20 * 20 * 3];
    for (int c = 0; c < ncls; c++) {
        char cd[700], f[800];
        snprintf(cd, sizeof cd, "%s/%s", dir, classes[c]);
        CHECK(mkdir(cd, 0700) == 0, "mkdir %s", cd);
        for (int i = 0; i < per_class; i++) {
            /* each class a colour cast, so the classes differ */
            for (int k = 0; k < (int)sizeof px; k++) {
                s = s * 1664525u + 1013904223u;
                px[k] = (unsigned char)((s >> 24) / 2 + (k % 3 == c % 3 ? 120 : 0));
            }
            png_image im;
            memset(&im, 0, sizeof im);
            im.version = PNG_IMAGE_VERSION;
            im.width = im.height = 20;
            im.format = PNG_FORMAT_RGB;
            snprintf(f, sizeof f, "%s/img%d.png", cd, i);
            CHECK(png_image_write_to_file(&im, f, 0, px, 0, NULL), "write %s: %s", f, im.message);
        }
    }
    return dir;
}

static int exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

static job_params params(const char *spool, const char *strategy, int k, double gate)
{
    job_params p;
    memset(&p, 0, sizeof p);
    snprintf(p.model, sizeof p.model, "%s", MODEL);
    snprintf(p.spool_dir, sizeof p.spool_dir, "%s", spool);
    snprintf(p.strategy, sizeof p.strategy, "%s", strategy);
    p.remove = k;
    p.gate = gate;
    p.holdout = 0.25;
    p.seed = 3;
    return p;
}

/* Polls job_json until the job is finished (or 120 s); returns the final JSON (caller frees). */
static json_t *wait_job(int id)
{
    for (int i = 0; i < 12000; i++) {
        json_t *j = job_json(id);
        if (!j) return NULL;
        const char *s = json_string_value(json_object_get(j, "state"));
        if (s && (!strcmp(s, "succeeded") || !strcmp(s, "failed") || !strcmp(s, "cancelled"))) return j;
        json_decref(j);
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    CHECK(0, "job %d did not finish in 120 s", id);
    return job_json(id);
}

static const char *jstr(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "(null)";
}

static int has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; (p = strstr(p, line)); p += n)
        if ((p == text || p[-1] == '\n') && (p[n] == '\n' || !p[n])) return 1;
    return 0;
}

static uint64_t mask_of(json_t *arr)
{
    uint64_t m = 0;
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v) m |= 1ull << json_integer_value(v);
    return m;
}

/* 1 when some thread of this process has nice value `nice` (/proc/self/task/TID/stat field 19) */
static int thread_with_nice(int nice)
{
    char path[300], buf[1024];
    int found = 0;
    DIR *d = opendir("/proc/self/task");
    for (struct dirent *e; d && (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "/proc/self/task/%s/stat", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = '\0';
        char *p = strrchr(buf, ')');
        int field = 2, v = 0;
        for (char *tok = p ? strtok(p + 1, " ") : NULL; tok; tok = strtok(NULL, " "))
            if (++field == 19) { v = atoi(tok); break; }
        if (field == 19 && v == nice) found = 1;
    }
    if (d) closedir(d);
    return found;
}

/* ---- the tests ------------------------------------------------------------------------------ */

static const char *const labelled[] = {"cat", "dog_wolf", "2"}; /* by name, '/' as '_', index */

static void test_refused(void)
{
    char err[512];
    const char *sp = make_spool(labelled, 3, 2);
    job_params p = params(sp, "nose", 2, 0);
    snprintf(p.model, sizeof p.model, "nope");
    CHECK(job_submit(&p, err, sizeof err) == -1 && strstr(err, "unknown model"), "unknown model: %s", err);
    p = params(sp, "nose", 5, 0);
    CHECK(job_submit(&p, err, sizeof err) == -1 && strstr(err, "4 attention layers left"), "k too large: %s", err);
    p = params(sp, "best", 1, 0);
    CHECK(job_submit(&p, err, sizeof err) == -1 && strstr(err, "strategy"), "strategy: %s", err);
    p = params(sp, "nose", 1, NAN);
    CHECK(job_submit(&p, err, sizeof err) == -1 && strstr(err, "gate"), "gate: %s", err);
    p = params(sp, "nose", 1, 0);
    p.holdout = 1;
    CHECK(job_submit(&p, err, sizeof err) == -1 && strstr(err, "holdout"), "holdout: %s", err);
    p = params(sp, "nose", 1, 0);
    p.finetune_epochs = 1;
    CHECK(job_submit(&p, err, sizeof err) == -1 && strstr(err, "finetune_epochs"), "epochs: %s", err);
    p = params("/nonexistent/spool", "nose", 1, 0);
    CHECK(job_submit(&p, err, sizeof err) == -1 && strstr(err, "/nonexistent/spool"), "spool: %s", err);
    CHECK(exists(sp), "a refused job leaves the spool folder to the caller");
    CHECK(job_current_state() == -1, "nothing started");
    CHECK(job_json(1) == NULL && job_cancel(1) == -1, "no job 1");
}

/* NOSE k = 2, gate 0: stored, activated; the candidate's removed blocks are the selection's */
static int test_publish(store *st)
{
    char err[512];
    const char *sp = make_spool(labelled, 3, 4);
    job_params p = params(sp, "nose", 2, 0);
    int id = job_submit(&p, err, sizeof err);
    CHECK(id > 0, "submit: %s", err);
    if (id <= 0) return 0;
    json_t *j = wait_job(id);
    if (!j) return 0;
    char *txt = json_dumps(j, JSON_COMPACT);
    printf("publish job: %s\n", txt);
    free(txt);
    CHECK(!strcmp(jstr(j, "state"), "succeeded"), "state %s (error %s)", jstr(j, "state"), jstr(j, "error"));
    CHECK(json_integer_value(json_object_get(j, "parent_version")) == 1, "parent version 1");
    json_t *sel = json_object_get(j, "selected"), *steps = json_object_get(j, "steps");
    uint64_t chosen = mask_of(sel), removed = mask_of(json_object_get(j, "removed_blocks"));
    CHECK(json_array_size(sel) == 2 && __builtin_popcountll(chosen) == 2 && !(chosen & 2), "two distinct blocks chosen, "
          "not the removed block 1 (%#llx)", (unsigned long long)chosen);
    CHECK(removed == (chosen | 2), "removed_blocks = selection + block 1 (%#llx)", (unsigned long long)removed);
    CHECK(json_array_size(steps) == 2, "two steps listed");
    for (size_t s = 0; s < json_array_size(steps) && s < 2; s++) {
        json_t *step = json_array_get(steps, s);
        CHECK(json_integer_value(json_object_get(step, "chosen")) == json_integer_value(json_array_get(sel, s)),
              "step %zu's choice is the %zu-th selected", s, s);
        CHECK(json_array_size(json_object_get(step, "scores")) == 4 - s, "step %zu scores %zu candidates", s, 4 - s);
    }
    json_t *chk = json_object_get(j, "check");
    CHECK(json_integer_value(json_object_get(chk, "images")) == 3, "3 of 12 images held out");
    double ag = json_real_value(json_object_get(chk, "agreement"));
    CHECK(ag >= 0 && ag <= 1 && json_is_true(json_object_get(chk, "passed")), "agreement %g, passed", ag);
    CHECK(json_is_real(json_object_get(chk, "accuracy_parent")) && json_is_real(json_object_get(chk, "accuracy_candidate")),
          "labels mapped (cat, dog_wolf for dog/wolf, 2 by index): accuracies measured");
    CHECK(json_integer_value(json_object_get(j, "version")) == 2 && json_is_true(json_object_get(j, "activated")),
          "version 2, activated");
    CHECK(json_real_value(json_object_get(j, "progress")) == 1.0, "progress 1");
    CHECK(json_is_null(json_object_get(j, "error")) && json_is_string(json_object_get(j, "finished")), "no error, finished");
    CHECK(!exists(sp), "spool deleted");
    /* the store, the checkpoint and the registry agree */
    store_version sv;
    char *info = NULL;
    CHECK(store_get(st, MODEL, 2, &sv, &info) == VT_OK && sv.removed == removed && sv.parent == 1 &&
          !strcmp(sv.origin, "prune"), "stored version 2: removed %#llx parent %d origin %s",
          (unsigned long long)sv.removed, sv.parent, sv.origin);
    CHECK(info && strstr(info, "\"check\"") && strstr(info, "\"selection\""), "version.json info carries the report and the check");
    free(info);
    CHECK(store_active(st, MODEL) == 2, "store: version 2 active");
    vit_model *m = NULL;
    CHECK(vit_load(sv.path, NULL, &m, err, sizeof err) == VT_OK, "%s", err);
    if (m) CHECK(vit_config_of(m)->removed == removed, "the stored checkpoint loads with exactly those blocks removed");
    vit_free(m);
    reg_version *v = reg_acquire(MODEL, 0);
    CHECK(v && reg_version_id(v) == 2 && reg_version_config(v)->removed == removed, "registry serves version 2");
    reg_release(v);
    size_t len;
    char *met = met_render(&len);
    CHECK(met && has_line(met, "vitd_admin_jobs_total{state=\"succeeded\"} 1"), "jobs_total succeeded 1");
    CHECK(met && has_line(met, "vitd_model_active_version{model=\"" MODEL "\"} 2"), "active_version 2");
    CHECK(met && has_line(met, "vitd_model_swaps_total{model=\"" MODEL "\"} 1"), "one swap");
    CHECK(met && has_line(met, "vitd_admin_job_running 0") && has_line(met, "vitd_admin_job_duration_seconds_count 1"),
          "running 0, one duration");
    free(met);
    json_decref(j);
    return 1;
}

/* A gate no agreement can reach: stored, not activated, with the reason */
static void test_gate(store *st)
{
    char err[512];
    const char *sp = make_spool(labelled, 3, 3);
    job_params p = params(sp, "random", 1, 1.5);
    int id = job_submit(&p, err, sizeof err);
    CHECK(id > 0, "submit: %s", err);
    json_t *j = id > 0 ? wait_job(id) : NULL;
    if (!j) return;
    CHECK(!strcmp(jstr(j, "state"), "succeeded"), "state %s (error %s)", jstr(j, "state"), jstr(j, "error"));
    CHECK(json_is_false(json_object_get(j, "activated")) && strstr(jstr(j, "reason"), "below the gate"),
          "not activated: %s", jstr(j, "reason"));
    CHECK(json_is_false(json_object_get(json_object_get(j, "check"), "passed")), "check not passed");
    int ver = (int)json_integer_value(json_object_get(j, "version"));
    store_version sv;
    CHECK(ver == 3 && store_get(st, MODEL, 3, &sv, NULL) == VT_OK, "version 3 stored (%d)", ver);
    CHECK(store_active(st, MODEL) == 2 && reg_active_id(MODEL) == 2, "version 2 still active");
    CHECK(json_array_size(json_object_get(j, "steps")) == 0 && json_array_size(json_object_get(j, "selected")) == 1,
          "random: no steps, one block selected");
    CHECK(!exists(sp), "spool deleted");
    json_decref(j);
}

/* Busy, then cancelled: nothing stored or activated, spool deleted */
static void test_cancel_busy(store *st)
{
    char err[512];
    store_version list[16];
    int before = store_list(st, MODEL, list, 16);
    const char *sp = make_spool(labelled, 3, 6), *sp2 = make_spool(labelled, 3, 2);
    job_params p = params(sp, "nose", 2, 0), p2 = params(sp2, "first", 1, 0);
    int id = job_submit(&p, err, sizeof err);
    CHECK(id > 0, "submit: %s", err);
    if (id <= 0) return;
    int st2 = job_submit(&p2, err, sizeof err);
    CHECK(st2 == JOB_EBUSY, "second submit while one runs: %d (%s)", st2, err);
    CHECK(exists(sp2), "a busy refusal leaves the spool folder to the caller");
    int cs = job_current_state();
    CHECK(cs == JOB_QUEUED || cs == JOB_RUNNING, "current state %d", cs);
    CHECK(job_cancel(id) == 0, "cancel");
    json_t *j = wait_job(id);
    if (!j) return;
    CHECK(!strcmp(jstr(j, "state"), "cancelled"), "state %s", jstr(j, "state"));
    CHECK(strstr(jstr(j, "error"), "cancel") != NULL, "error says cancelled: %s", jstr(j, "error"));
    CHECK(json_is_null(json_object_get(j, "version")) && json_is_false(json_object_get(j, "activated")), "no version");
    CHECK(store_list(st, MODEL, list, 16) == before, "nothing stored");
    CHECK(store_active(st, MODEL) == 2 && reg_active_id(MODEL) == 2, "version 2 still active");
    CHECK(!exists(sp), "spool deleted");
    CHECK(job_cancel(id) == 0, "cancelling a finished job is a no-op");
    json_decref(j);
    /* the finished job no longer blocks: sp2 runs now (first k = 1, stored, gate 0 -> active) */
    int id2 = job_submit(&p2, err, sizeof err);
    CHECK(id2 == id + 1, "next submit accepted (%d: %s)", id2, err);
    if (id2 > 0) {
        json_t *j2 = wait_job(id2);
        CHECK(j2 && !strcmp(jstr(j2, "state"), "succeeded") && json_is_true(json_object_get(j2, "activated")),
              "first-k job: %s %s", j2 ? jstr(j2, "state") : "?", j2 ? jstr(j2, "error") : "");
        CHECK(j2 && mask_of(json_object_get(j2, "selected")) == 1, "first: block 0");
        json_decref(j2);
    }
}

/* Class folders that are not the model's labels: agreement only; fine-tuning refused */
static void test_unlabelled(store *st)
{
    char err[512];
    static const char *const odd[] = {"zebra", "cat"};
    const char *sp = make_spool(odd, 2, 3);
    job_params p = params(sp, "nose", 1, 0);
    p.finetune_epochs = 2;
    int active = store_active(st, MODEL);
    int id = job_submit(&p, err, sizeof err);
    json_t *j = id > 0 ? wait_job(id) : NULL;
    CHECK(j && !strcmp(jstr(j, "state"), "failed") && strstr(jstr(j, "error"), "fine-tuning needs labels") &&
          strstr(jstr(j, "error"), "zebra"), "fine-tuning without labels: %s", j ? jstr(j, "error") : "?");
    CHECK(!exists(sp) && store_active(st, MODEL) == active, "spool deleted, nothing activated");
    json_decref(j);
    sp = make_spool(odd, 2, 3);
    p = params(sp, "nose", 1, 0);
    id = job_submit(&p, err, sizeof err);
    j = id > 0 ? wait_job(id) : NULL;
    json_t *chk = j ? json_object_get(j, "check") : NULL;
    CHECK(j && !strcmp(jstr(j, "state"), "succeeded") && json_is_null(json_object_get(chk, "accuracy_parent")) &&
          json_is_real(json_object_get(chk, "agreement")), "unlabelled: agreement only (%s)", j ? jstr(j, "error") : "?");
    json_decref(j);
}

/* A real 2-epoch fine-tune through the vitd binary (skipped when it is not built) */
static void test_finetune(store *st, const char *exe)
{
    char err[512];
    /* folders sorted by name are the model's label order only when named by index */
    static const char *const wrong_order[] = {"cat", "dog_wolf", "bird"}, *const by_index[] = {"0", "1", "2"};
    const char *sp = make_spool(wrong_order, 3, 4);
    job_params p = params(sp, "first", 1, 0);
    p.finetune_epochs = 2;
    int id = job_submit(&p, err, sizeof err);
    json_t *j = id > 0 ? wait_job(id) : NULL;
    CHECK(j && !strcmp(jstr(j, "state"), "failed") && strstr(jstr(j, "error"), "folder 'bird' is class 0"),
          "labels out of the model's order: %s", j ? jstr(j, "error") : "?");
    json_decref(j);
    uint64_t parent_removed = 0;
    reg_version *v = reg_acquire(MODEL, 0);
    if (v) parent_removed = reg_version_config(v)->removed;
    reg_release(v);
    sp = make_spool(by_index, 3, 4);
    p = params(sp, "first", 1, 0);
    p.finetune_epochs = 2;
    id = job_submit(&p, err, sizeof err);
    j = id > 0 ? wait_job(id) : NULL;
    CHECK(j && !strcmp(jstr(j, "state"), "succeeded") && json_is_true(json_object_get(j, "activated")),
          "fine-tuned job: %s %s", j ? jstr(j, "state") : "?", j ? jstr(j, "error") : "");
    int ver = j ? (int)json_integer_value(json_object_get(j, "version")) : 0;
    store_version sv;
    uint64_t removed = j ? mask_of(json_object_get(j, "removed_blocks")) : 0;
    CHECK(removed == (parent_removed | 1u), "the first block left is added (%#llx)", (unsigned long long)removed);
    CHECK(ver > 0 && store_get(st, MODEL, ver, &sv, NULL) == VT_OK && sv.removed == removed && reg_active_id(MODEL) == ver,
          "fine-tuned version %d stored with those blocks removed, and active", ver);
    CHECK(!exists(sp), "spool deleted");
    printf("fine-tune through %s: %s\n", exe, j ? jstr(j, "state") : "?");
    json_decref(j);

    /* cancelled while the child trains (a long run, killed): nothing stored, no leftovers */
    store_version list[32];
    int before = store_list(st, MODEL, list, 32), niced = 0;
    sp = make_spool(by_index, 3, 4);
    p = params(sp, "first", 1, 0);
    p.finetune_epochs = 2000;
    id = job_submit(&p, err, sizeof err);
    CHECK(id > 0, "submit: %s", err);
    for (int i = 0; i < 3000 && id > 0; i++) { /* until the selection is done: the child runs */
        json_t *k = job_json(id);
        double prog = json_real_value(json_object_get(k, "progress"));
        int live = !strcmp(jstr(k, "state"), "running") || !strcmp(jstr(k, "state"), "queued");
        json_decref(k);
        niced |= thread_with_nice(19);
        if (!live || prog >= 0.8) break;
        struct timespec ts = {0, 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    CHECK(niced, "the job thread runs at nice 19");
    struct timespec ts = {0, 100 * 1000 * 1000};
    nanosleep(&ts, NULL);
    CHECK(job_cancel(id) == 0, "cancel");
    j = id > 0 ? wait_job(id) : NULL;
    CHECK(j && !strcmp(jstr(j, "state"), "cancelled") && strstr(jstr(j, "error"), "during fine-tuning"),
          "cancelled during fine-tuning: %s %s", j ? jstr(j, "state") : "?", j ? jstr(j, "error") : "");
    CHECK(j && json_real_value(json_object_get(j, "seconds")) < 30, "the child was killed, not waited for");
    CHECK(store_list(st, MODEL, list, 32) == before && !exists(sp), "nothing stored, spool deleted");
    char tmpglob[600];
    snprintf(tmpglob, sizeof tmpglob, "ls -a '%s/store/%s' | grep -q '^\\.tmp'", tmpdir, MODEL);
    CHECK(system(tmpglob) != 0, "no temporary folder left in the store");
    json_decref(j);
}

static void test_activate(store *st)
{
    char err[512];
    CHECK(job_activate(MODEL, 1, err, sizeof err) == 0, "roll back to 1: %s", err);
    CHECK(store_active(st, MODEL) == 1 && reg_active_id(MODEL) == 1, "version 1 active (store %d, registry %d)",
          store_active(st, MODEL), reg_active_id(MODEL));
    reg_version *v = reg_acquire(MODEL, 0);
    CHECK(v && reg_version_config(v)->removed == 2, "serving the parent again (removed %#llx)",
          v ? (unsigned long long)reg_version_config(v)->removed : 0ull);
    reg_release(v);
    CHECK(job_activate(MODEL, 2, err, sizeof err) == 0 && reg_active_id(MODEL) == 2 && store_active(st, MODEL) == 2,
          "forward to 2: %s", err);
    CHECK(job_activate(MODEL, 2, err, sizeof err) == 0 && reg_active_id(MODEL) == 2, "activating the active one");
    /* the registry keeps 2 versions: 1 is still loaded and is switched back without a load */
    CHECK(reg_has_version(MODEL, 1) == 1, "version 1 still listed");
    CHECK(job_activate(MODEL, 1, err, sizeof err) == 0 && reg_active_id(MODEL) == 1 && store_active(st, MODEL) == 1,
          "back to the loaded version 1: %s", err);
    CHECK(job_activate(MODEL, 2, err, sizeof err) == 0 && reg_active_id(MODEL) == 2 && store_active(st, MODEL) == 2,
          "and forward to 2: %s", err);
    CHECK(job_activate(MODEL, 99, err, sizeof err) == 404 && strstr(err, "99"), "unknown version: %s", err);
    CHECK(job_activate("nope", 1, err, sizeof err) == 404, "unknown model: %s", err);
}

int main(int argc, char **argv)
{
    /* libgomp reads the wait policy at start-up: passive, so the job's team does not spin on
     * a shared machine (as test_select) */
    if (argc >= 1 && !getenv("OMP_WAIT_POLICY")) {
        setenv("OMP_WAIT_POLICY", "passive", 1);
        execv("/proc/self/exe", argv);
    }
    snprintf(tmpdir, sizeof tmpdir, "/tmp/vitd_test_job_XXXXXX");
    if (!mkdtemp(tmpdir)) { perror("mkdtemp"); return 1; }
    char path[400], root[400], err[512];
    snprintf(path, sizeof path, "%s/tiny.safetensors", tmpdir);
    snprintf(root, sizeof root, "%s/store", tmpdir);
    write_model(path);

    met_init(NULL, 0);
    reg_init(2);
    met_model *mm = met_model_get(MODEL);
    store *st = NULL;
    int active = 0;
    reg_version *v = NULL;
    store_version sv;
    CHECK(reg_add(MODEL, NULL, mm) == 0, "reg_add");
    CHECK(store_open(root, &st, err, sizeof err) == VT_OK, "store_open: %s", err);
    if (!st) return check_done("test_job");
    CHECK(store_import(st, MODEL, path, &active, err, sizeof err) == VT_OK && active == 1, "import: %s", err);
    CHECK(store_get(st, MODEL, 1, &sv, NULL) == VT_OK, "version 1");
    reg_load_opts lo = {.max_batch = 4, .max_pixels = 1 << 20};
    CHECK(reg_version_load(sv.path, &lo, &v, err, sizeof err) == VT_OK, "load: %s", err);
    if (!v) return check_done("test_job");
    CHECK(reg_publish_id(MODEL, v, 1) == 1, "publish 1");

    /* the binary for the fine-tuning child: $VITD (tests/run.sh), else build/vitd */
    const char *exe = getenv("VITD");
    if (!exe || access(exe, X_OK)) exe = access("build/vitd", X_OK) ? NULL : "build/vitd";
    job_opts jo = {.threads = 1, .nice = 19, .keep_versions = 10, .max_jobs_kept = 4, .exe = exe};
    job_init(st, &jo);
    test_refused();
    if (test_publish(st)) {
        test_gate(st);
        test_cancel_busy(st);
        test_unlabelled(st);
        test_activate(st);
        if (exe) test_finetune(st, exe);
        else printf("fine-tune through the binary: skipped (no build/vitd)\n");
    }
    CHECK(job_json(1) == NULL, "the oldest finished jobs are forgotten (max_jobs_kept 4)");
    job_shutdown();
    reg_shutdown();
    store_close(st);
    met_shutdown();
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return check_done("test_job");
}
