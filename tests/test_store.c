/* test_store.c - the versioned model store (server/srv_store.h) on a temporary folder:
 * import by hard link and by copy, timm folders, a changed checkpoint becoming a new version,
 * begin/commit/activate/list/get/prune_old, numbers never reused after deletes, a reopened
 * store seeing the same active version, crash leftovers removed at open, a state.json naming
 * a missing version refused with a clear error, bad input refused without a trace, and a
 * crash test: a child process that loops commit + activate + prune is killed with SIGKILL at
 * random moments, and after each kill the store must open and its active version be complete
 * and loadable. Also the registry's side of a hot swap: versions published under the store's
 * numbers, roll back to a listed version, `keep`, a held version surviving its unlisting.
 *
 * Fixtures: the checkpoints of tests/data/golden (run from the repository root, as tests/run.sh
 * does). The child of the crash test is this program run again ("--crash-child ROOT").
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "sha256.h"
#include "srv_registry.h"
#include "srv_store.h"
#include "vit.h"

#define FIX_A "tests/data/golden/vit_s32_d64.safetensors"           /* 3 blocks, none removed */
#define FIX_B "tests/data/golden/vit_s16_d32_bf16_rm1.safetensors"  /* 2 blocks, block 1 removed */

static char tmp[64];
static char err[1024];

static void path_of(char *out, size_t n, const char *rel)
{
    snprintf(out, n, "%s/%s", tmp, rel);
}

static int copy_file(const char *src, const char *dst)
{
    FILE *in = fopen(src, "rb"), *out = in ? fopen(dst, "wb") : NULL;
    char buf[1 << 15];
    size_t k;
    int rc = in && out ? 0 : -1;
    while (!rc && (k = fread(buf, 1, sizeof buf, in)) > 0)
        if (fwrite(buf, 1, k, out) != k) rc = -1;
    if (in) fclose(in);
    if (out && fclose(out)) rc = -1;
    return rc;
}

static int write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    fputs(text, f);
    return fclose(f);
}

static int exists(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0;
}

static void rm_rf(const char *p)
{
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", p);
    if (system(cmd) != 0) fprintf(stderr, "rm -rf %s failed\n", p);
}

/* Entries of dir whose name starts with prefix (and, for prefix "", numeric folder names). */
static int count_entries(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (*prefix) n += !strncmp(e->d_name, prefix, strlen(prefix));
        else n += e->d_name[0] >= '1' && e->d_name[0] <= '9' && strspn(e->d_name, "0123456789") == strlen(e->d_name);
    }
    if (d) closedir(d);
    return n;
}

/* A copy of src without its __metadata__ (so a config.json beside it is what configures it). */
static int strip_metadata(const char *src, const char *dst)
{
    FILE *f = fopen(src, "rb");
    if (!f) return -1;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)len);
    int rc = b && fread(b, 1, (size_t)len, f) == (size_t)len ? 0 : -1;
    fclose(f);
    uint64_t hl = 0;
    for (int i = 7; !rc && i >= 0; i--) hl = hl << 8 | b[i];
    json_t *h = rc ? NULL : json_loadb((const char *)b + 8, (size_t)hl, 0, NULL);
    if (!h) { free(b); return -1; }
    json_object_del(h, "__metadata__");
    char *text = json_dumps(h, JSON_COMPACT);
    size_t tl = strlen(text);
    FILE *o = fopen(dst, "wb");
    unsigned char le[8];
    for (int i = 0; i < 8; i++) le[i] = (unsigned char)((uint64_t)tl >> (8 * i));
    rc = o && fwrite(le, 1, 8, o) == 8 && fwrite(text, 1, tl, o) == tl &&
                 fwrite(b + 8 + hl, 1, (size_t)len - 8 - hl, o) == (size_t)len - 8 - hl ? 0 : -1;
    if (o && fclose(o)) rc = -1;
    free(text);
    json_decref(h);
    free(b);
    return rc;
}

static int loads(const char *path, int *heads, uint64_t *removed, uint64_t *params)
{
    vit_model *m;
    char e[512];
    if (vit_load(path, NULL, &m, e, sizeof e)) {
        fprintf(stderr, "vit_load %s: %s\n", path, e);
        return 0;
    }
    if (heads) *heads = vit_config_of(m)->heads;
    if (removed) *removed = vit_config_of(m)->removed;
    if (params) *params = vit_param_count(m);
    vit_free(m);
    return 1;
}

static void test_import(void)
{
    char root[256], src[256], dst[300];
    path_of(root, sizeof root, "s1");
    path_of(src, sizeof src, "src.safetensors");
    CHECK(copy_file(FIX_A, src) == 0, "copy fixture");
    store *s;
    CHECK(store_open(root, &s, err, sizeof err) == VT_OK, "open: %s", err);
    if (!s) return;
    int a = -1;
    CHECK(store_import(s, "m", src, &a, err, sizeof err) == VT_OK && a == 1, "first import: %d %s", a, err);

    /* a hard link to the source (same file system) holding what vit_load sees */
    store_version v;
    char *info = NULL;
    CHECK(store_get(s, "m", 1, &v, &info) == VT_OK, "get 1");
    struct stat ss, sv;
    CHECK(stat(src, &ss) == 0 && stat(v.path, &sv) == 0 && ss.st_ino == sv.st_ino && sv.st_nlink == 2,
          "version 1 is not a hard link of the source");
    uint64_t params = 0, removed = 1;
    CHECK(loads(FIX_A, NULL, &removed, &params), "load fixture");
    char sha[65];
    CHECK(sha256_file(src, sha, err, sizeof err) == VT_OK, "sha");
    CHECK(v.version == 1 && v.parent == 0 && !strcmp(v.origin, "import") && v.active == 1 && v.params == params &&
              v.removed == 0 && v.bytes == (uint64_t)ss.st_size && !strcmp(v.sha256, sha) && v.created[0],
          "version 1 record: v%d parent %d origin %s active %d params %llu/%llu bytes %llu", v.version, v.parent,
          v.origin, v.active, (unsigned long long)v.params, (unsigned long long)params, (unsigned long long)v.bytes);
    CHECK(info && strstr(info, "\"link\"") && strstr(info, "src.safetensors"), "import info: %s", info ? info : "(null)");
    free(info);
    CHECK(loads(v.dir, NULL, NULL, NULL), "version folder does not load");

    /* the same checkpoint again: nothing new */
    CHECK(store_import(s, "m", src, &a, err, sizeof err) == VT_OK && a == 1, "same import: %d", a);
    store_version list[8];
    CHECK(store_list(s, "m", list, 8) == 1, "one version after two identical imports");

    /* a reopened store sees the same active version */
    store_close(s);
    CHECK(store_open(root, &s, err, sizeof err) == VT_OK && store_active(s, "m") == 1, "reopened: active %d",
          s ? store_active(s, "m") : -1);

    /* the operator deploys another checkpoint (written and renamed over the source) */
    snprintf(dst, sizeof dst, "%s.new", src);
    CHECK(copy_file(FIX_B, dst) == 0 && rename(dst, src) == 0, "replace source");
    CHECK(store_import(s, "m", src, &a, err, sizeof err) == VT_OK && a == 2, "changed checkpoint: %d %s", a, err);
    CHECK(store_get(s, "m", 2, &v, NULL) == VT_OK && v.removed == 2 && v.active && v.parent == 0, "version 2 record");
    CHECK(store_get(s, "m", 1, &v, NULL) == VT_OK && !v.active, "version 1 no longer active");
    CHECK(store_list(s, "m", list, 8) == 2 && list[0].version == 1 && list[1].version == 2 && list[1].active,
          "list after the new import");
    store_close(s);
    CHECK(store_open(root, &s, err, sizeof err) == VT_OK && store_active(s, "m") == 2, "reopened after new import");
    store_close(s);
}

/* An import across file systems is a copy (tmpfs /dev/shm vs the test's folder in /tmp). */
static void test_import_copy(void)
{
    char src[] = "/dev/shm/vitd-test-store-XXXXXX", root[256];
    int fd = mkstemp(src);
    if (fd < 0) { printf("test_store: no /dev/shm: the copy path is not exercised\n"); return; }
    close(fd);
    path_of(root, sizeof root, "s2");
    store *s;
    CHECK(copy_file(FIX_A, src) == 0, "copy fixture to /dev/shm");
    CHECK(store_open(root, &s, err, sizeof err) == VT_OK, "open");
    struct stat ss, st;
    if (s && stat(src, &ss) == 0 && stat(root, &st) == 0 && ss.st_dev != st.st_dev) {
        int a = 0;
        store_version v;
        char *info = NULL, sha[65];
        CHECK(store_import(s, "c", src, &a, err, sizeof err) == VT_OK && a == 1, "copy import: %s", err);
        CHECK(store_get(s, "c", 1, &v, &info) == VT_OK && stat(v.path, &st) == 0 && st.st_nlink == 1 &&
                  st.st_size == ss.st_size, "copied file");
        CHECK(info && strstr(info, "\"copy\""), "info says copy: %s", info ? info : "(null)");
        CHECK(sha256_file(v.path, sha, err, sizeof err) == VT_OK && !strcmp(sha, v.sha256), "copy's hash");
        CHECK(loads(v.dir, NULL, NULL, NULL), "copied version loads");
        free(info);
    } else {
        printf("test_store: /dev/shm is on the same file system: the copy path is not exercised\n");
    }
    store_close(s);
    unlink(src);
}

/* A timm folder (model.safetensors + config.json): both files are kept and the version folder
 * loads with config.json's settings; so does a file named model.safetensors with config.json
 * beside it. */
static void test_timm_folder(void)
{
    char dir[256], file[300], cfg[300], root[256];
    path_of(dir, sizeof dir, "timm");
    path_of(root, sizeof root, "s3");
    snprintf(file, sizeof file, "%s/model.safetensors", dir);
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    CHECK(mkdir(dir, 0755) == 0 && strip_metadata(FIX_A, file) == 0, "make the timm folder");
    int heads = 0;
    CHECK(loads(file, &heads, NULL, NULL) && heads == 1, "without config.json: %d heads (D/64 = 1)", heads);
    CHECK(write_text(cfg, "{\"architecture\": \"vit_test\", \"num_classes\": 10, \"model_args\": {\"num_heads\": 4}}\n") == 0,
          "write config.json");
    store *s;
    CHECK(store_open(root, &s, err, sizeof err) == VT_OK, "open");
    if (!s) return;
    int a = 0;
    store_version v;
    char p[1200];
    CHECK(store_import(s, "t", dir, &a, err, sizeof err) == VT_OK && a == 1, "timm import: %s", err);
    CHECK(store_get(s, "t", 1, &v, NULL) == VT_OK, "get");
    snprintf(p, sizeof p, "%s/config.json", v.dir);
    CHECK(exists(p), "config.json not kept in the version folder");
    heads = 0;
    CHECK(loads(v.dir, &heads, NULL, NULL) && heads == 4, "version folder loads with %d heads, config.json says 4", heads);
    CHECK(store_import(s, "t2", file, &a, err, sizeof err) == VT_OK && a == 1, "model.safetensors import: %s", err);
    CHECK(store_get(s, "t2", 1, &v, NULL) == VT_OK, "get t2");
    heads = 0;
    CHECK(loads(v.dir, &heads, NULL, NULL) && heads == 4, "t2 loads with %d heads", heads);
    /* a changed config.json alone is a new version */
    CHECK(write_text(cfg, "{\"model_args\": {\"num_heads\": 2}}\n") == 0, "rewrite config.json");
    CHECK(store_import(s, "t", dir, &a, err, sizeof err) == VT_OK && a == 2, "changed config.json: %d", a);
    CHECK(store_get(s, "t", 2, &v, NULL) == VT_OK && loads(v.dir, &heads, NULL, NULL) && heads == 2, "v2 heads %d", heads);
    store_close(s);
}

/* Writes a checkpoint into a begun version's folder. */
static int put(const char *tmpdir, const char *fixture)
{
    char p[1200];
    snprintf(p, sizeof p, "%s/model.safetensors", tmpdir);
    return copy_file(fixture, p);
}

static int new_version(store *s, const char *model, int parent, const char *info)
{
    int v = 0;
    char d[1024];
    if (store_begin(s, model, &v, d, sizeof d, err, sizeof err) || put(d, FIX_B) ||
        store_commit(s, model, v, parent, "prune", info, err, sizeof err)) {
        fprintf(stderr, "new_version: %s\n", err);
        return 0;
    }
    return v;
}

static void test_versions(void)
{
    char root[256], src[256], d[1024], p[1200];
    path_of(root, sizeof root, "s4");
    path_of(src, sizeof src, "v.safetensors");
    CHECK(copy_file(FIX_A, src) == 0, "fixture");
    store *s;
    CHECK(store_open(root, &s, err, sizeof err) == VT_OK, "open");
    if (!s) return;
    int a = 0, v = 0;
    CHECK(store_import(s, "m", src, &a, err, sizeof err) == VT_OK && a == 1, "import");

    /* begin: a number and a temporary folder inside the model's folder */
    CHECK(store_begin(s, "m", &v, d, sizeof d, err, sizeof err) == VT_OK && v == 2, "begin: %d", v);
    snprintf(p, sizeof p, "%s/m/.tmp-", root);
    CHECK(!strncmp(d, p, strlen(p)) && exists(d), "temporary folder %s", d);
    CHECK(store_commit(s, "m", v, 1, "prune", "[1]", err, sizeof err) == VT_EINVAL && strstr(err, "JSON object"),
          "info not an object: %s", err);
    CHECK(store_commit(s, "m", v, 1, "prune", NULL, err, sizeof err) != VT_OK && strstr(err, "model.safetensors"),
          "commit without a checkpoint: %s", err);
    CHECK(put(d, FIX_B) == 0, "write the checkpoint");
    CHECK(store_commit(s, "m", v, 1, "prune", "{\"k\": 1, \"selected\": [1]}", err, sizeof err) == VT_OK, "commit: %s", err);
    CHECK(!exists(d), "temporary folder left after commit");
    CHECK(store_commit(s, "m", v, 1, "prune", NULL, err, sizeof err) == VT_EINVAL, "second commit of the same version");
    CHECK(store_active(s, "m") == 1, "commit must not activate");
    store_version sv;
    char *info = NULL;
    CHECK(store_get(s, "m", 2, &sv, &info) == VT_OK && sv.parent == 1 && !strcmp(sv.origin, "prune") && sv.removed == 2 &&
              !sv.active, "version 2 record");
    json_t *j = info ? json_loads(info, 0, NULL) : NULL;
    CHECK(j && json_integer_value(json_object_get(j, "k")) == 1, "info round trip: %s", info ? info : "(null)");
    json_decref(j);
    free(info);
    CHECK(store_get(s, "m", 9, &sv, NULL) == VT_EINVAL, "get of a missing version");

    CHECK(store_activate(s, "m", 2, err, sizeof err) == VT_OK && store_active(s, "m") == 2, "activate 2");
    CHECK(store_activate(s, "m", 99, err, sizeof err) == VT_EINVAL && strstr(err, "99"), "activate 99: %s", err);
    CHECK(store_active(s, "m") == 2, "a failed activate changed the active version");

    /* abort: folder removed, number not consumed */
    CHECK(store_begin(s, "m", &v, d, sizeof d, err, sizeof err) == VT_OK && v == 3, "begin 3");
    store_abort(s, "m", v);
    CHECK(!exists(d), "abort left %s", d);
    /* two versions begun at once get different numbers */
    int v1 = 0, v2 = 0;
    char d1[1024], d2[1024];
    CHECK(store_begin(s, "m", &v1, d1, sizeof d1, err, sizeof err) == VT_OK &&
              store_begin(s, "m", &v2, d2, sizeof d2, err, sizeof err) == VT_OK && v1 == 3 && v2 == 4 && strcmp(d1, d2),
          "concurrent begins: %d %d", v1, v2);
    store_abort(s, "m", v1);
    store_abort(s, "m", v2);

    /* versions 3..7; 5 active (its parent 3) */
    int p3 = new_version(s, "m", 2, NULL), p4 = new_version(s, "m", 3, NULL), p5 = new_version(s, "m", 3, NULL);
    int p6 = new_version(s, "m", 5, NULL), p7 = new_version(s, "m", 6, NULL);
    CHECK(p3 == 3 && p4 == 4 && p5 == 5 && p6 == 6 && p7 == 7, "numbers %d %d %d %d %d", p3, p4, p5, p6, p7);
    CHECK(store_activate(s, "m", 5, err, sizeof err) == VT_OK, "activate 5");
    CHECK(store_prune_old(s, "m", 2) == 3, "prune_old(2) deletes 1, 2, 4");
    store_version list[16];
    int n = store_list(s, "m", list, 16);
    CHECK(n == 4 && list[0].version == 3 && list[1].version == 5 && list[2].version == 6 && list[3].version == 7 &&
              list[1].active && !list[0].active, "kept 3 (parent), 5 (active), 6, 7: n=%d", n);
    snprintf(p, sizeof p, "%s/m", root);
    CHECK(count_entries(p, ".tmp-") == 0, "prune left a .tmp- folder");
    CHECK(store_prune_old(s, "m", 2) == 0, "second prune_old deletes nothing");

    /* numbers are never reused: not after prune_old, not after the newest folder vanishes */
    CHECK(new_version(s, "m", 5, NULL) == 8, "the next version after deletes");
    snprintf(p, sizeof p, "%s/m/8", root);
    rm_rf(p);
    snprintf(p, sizeof p, "%s/m/7", root);
    rm_rf(p);
    CHECK(store_begin(s, "m", &v, d, sizeof d, err, sizeof err) == VT_OK && v == 9, "number after the newest were deleted: %d", v);
    store_abort(s, "m", v);
    store_close(s);
    CHECK(store_open(root, &s, err, sizeof err) == VT_OK, "reopen");
    if (!s) return;
    CHECK(store_active(s, "m") == 5, "reopened store's active version: %d", store_active(s, "m"));
    CHECK(store_begin(s, "m", &v, d, sizeof d, err, sizeof err) == VT_OK && v == 9, "number after reopen: %d", v);
    store_close(s); /* closing removes a begun version's folder */
    CHECK(!exists(d), "close left the begun folder");

    /* crash leftovers are removed at open */
    snprintf(p, sizeof p, "%s/m/.tmp-AbC123", root);
    CHECK(mkdir(p, 0755) == 0, "make a leftover");
    char lf[1300];
    snprintf(lf, sizeof lf, "%s/model.safetensors", p);
    CHECK(copy_file(FIX_B, lf) == 0, "leftover file");
    snprintf(d, sizeof d, "%s/m/state.json.tmp.XyZ987", root);
    CHECK(write_text(d, "{\"act") == 0, "leftover state temp");
    CHECK(store_open(root, &s, err, sizeof err) == VT_OK, "reopen");
    CHECK(!exists(p) && !exists(d), "leftovers not removed at open");
    CHECK(s && store_active(s, "m") == 5, "leftovers changed the active version");
    store_close(s);
}

static void test_bad_input(void)
{
    char root[256], src[256], sp[300], before[4096], after[4096];
    path_of(root, sizeof root, "s5");
    path_of(src, sizeof src, "bad.safetensors");
    store *s = NULL;
    CHECK(store_open("", &s, err, sizeof err) == VT_EINVAL && !s, "empty root");
    CHECK(store_open("/proc/vitd-store", &s, err, sizeof err) != VT_OK && strstr(err, "/proc/vitd-store"),
          "unwritable root: %s", err);
    CHECK(store_open(root, &s, err, sizeof err) == VT_OK, "open");
    if (!s) return;
    int a = 7;
    CHECK(store_import(s, "../x", FIX_A, &a, err, sizeof err) == VT_EINVAL && strstr(err, "../x") && a == 0, "bad name: %s", err);
    CHECK(store_import(s, "m", "/nonexistent/x.safetensors", &a, err, sizeof err) != VT_OK &&
              strstr(err, "/nonexistent/x.safetensors"), "missing source: %s", err);
    CHECK(write_text(src, "\x10\x00\x00\x00\x00\x00\x00\x00{}garbage") == 0, "write a broken checkpoint");
    CHECK(store_import(s, "m", src, &a, err, sizeof err) != VT_OK && strstr(err, "bad.safetensors"), "broken: %s", err);
    snprintf(sp, sizeof sp, "%s/m", root);
    CHECK(count_entries(sp, "") == 0 && count_entries(sp, ".tmp-") == 0 && count_entries(sp, "state.json") == 0,
          "a failed import left files in %s", sp);
    CHECK(store_active(s, "m") == 0 && store_active(s, "nobody") == 0, "active of unknown models");
    char d[1024];
    int v;
    CHECK(store_begin(s, "a/b", &v, d, sizeof d, err, sizeof err) == VT_EINVAL, "begin with a bad name");

    /* state.json naming a missing version: a clear error, and nothing changes */
    CHECK(store_import(s, "x", FIX_A, &a, err, sizeof err) == VT_OK && a == 1, "import x");
    snprintf(sp, sizeof sp, "%s/x/state.json", root);
    FILE *f = fopen(sp, "r");
    size_t k = f ? fread(before, 1, sizeof before - 1, f) : 0;
    before[k] = '\0';
    if (f) fclose(f);
    char *at = strstr(before, "\"active\": 1");
    CHECK(at != NULL, "state.json layout: %s", before);
    if (at) at[10] = '7';
    CHECK(write_text(sp, before) == 0, "edit state.json");
    CHECK(store_import(s, "x", FIX_A, &a, err, sizeof err) == VT_EFORMAT && strstr(err, "state.json") &&
              strstr(err, "version 7") && a == 0, "state naming a missing version: %s", err);
    CHECK(store_active(s, "x") == 0, "store_active of a state naming a missing version");
    f = fopen(sp, "r");
    k = f ? fread(after, 1, sizeof after - 1, f) : 0;
    after[k] = '\0';
    if (f) fclose(f);
    CHECK(!strcmp(before, after), "the failed import changed state.json");
    CHECK(write_text(sp, "{\"active\": \"one\"}") == 0 && store_import(s, "x", FIX_A, &a, err, sizeof err) == VT_EFORMAT &&
              strstr(err, "state.json"), "malformed state.json: %s", err);
    store_close(s);
}

/* ---- the registry's side of a hot swap (srv_registry.h) -------------------------------- */

static reg_version *load_version(const char *path)
{
    reg_load_opts o = {.max_batch = 2, .max_pixels = 1 << 20, .exif = 0};
    reg_version *v = NULL;
    CHECK(reg_version_load(path, &o, &v, err, sizeof err) == VT_OK, "reg_version_load %s: %s", path, err);
    return v;
}

static void test_registry(void)
{
    reg_init(2);
    CHECK(reg_add("r", NULL, NULL) == 0, "reg_add");
    reg_version *a = load_version(FIX_A), *b = load_version(FIX_B), *c = load_version(FIX_A);
    if (!a || !b || !c) return;
    CHECK(reg_active_id("r") == 0 && reg_active_id("nobody") == -1, "active id before publishing");
    CHECK(reg_publish_id("nobody", a, 3) == -1 && reg_publish_id("r", a, 0) == -1, "publish to an unknown name / id 0");
    CHECK(reg_publish_id("r", a, 3) == 3 && reg_version_id(a) == 3 && !strcmp(reg_version_name(a), "r"), "publish 3");
    reg_version *held = reg_acquire("r", 0); /* a request in flight on version 3 */
    CHECK(held == a, "acquire the active version");
    CHECK(reg_publish_id("r", b, 7) == 7 && reg_active_id("r") == 7, "publish 7");
    int ids[8], n = reg_versions("r", ids, 8);
    CHECK(n == 2 && ids[0] == 3 && ids[1] == 7, "listed 3, 7 (ascending): n=%d", n);
    CHECK(reg_has_version("r", 3) == 1 && reg_has_version("r", 5) == 0 && reg_has_version("x", 3) == -1, "has_version");
    /* roll back to a listed version, then forward to a new one: keep 2 unlists version 7 */
    CHECK(reg_activate("r", 3) == 0 && reg_active_id("r") == 3, "activate 3");
    CHECK(reg_activate("r", 5) == -1 && reg_active_id("r") == 3, "activate an unlisted version");
    CHECK(reg_publish_id("r", c, 8) == 8, "publish 8");
    n = reg_versions("r", ids, 8);
    CHECK(n == 2 && ids[0] == 3 && ids[1] == 8 && reg_has_version("r", 7) == 0, "keep 2: listed 3 and 8 (n=%d)", n);
    CHECK(reg_acquire("r", 7) == NULL, "version 7 is no longer listed");
    /* the request still holding version 3 can use it through every swap */
    CHECK(reg_version_config(held)->depth == 3 && reg_version_id(held) == 3, "the held version is intact");
    reg_release(held);
    reg_version *b2 = load_version(FIX_B);
    CHECK(b2 && reg_publish_id("r", b2, 3) == 3 && reg_active_id("r") == 3, "publishing an id again replaces it");
    reg_version *now = reg_acquire("r", 3);
    CHECK(now == b2 && reg_version_config(now)->depth == 2, "version 3 is the new checkpoint");
    reg_release(now);
    n = reg_versions("r", ids, 8);
    CHECK(n == 2 && ids[0] == 3 && ids[1] == 8, "no duplicate id listed (n=%d)", n);
    reg_shutdown();
}

/* ---- crash test ------------------------------------------------------------------------ */

/* The child: versions of model "k" as fast as it can, each committed, activated, and old ones
 * pruned, until it is killed. */
static int crash_child(const char *root)
{
    store *s;
    char e[1024], d[1024];
    vit_set_threads(1);
    if (store_open(root, &s, e, sizeof e)) { fprintf(stderr, "child open: %s\n", e); return 1; }
    for (;;) {
        int v, parent = store_active(s, "k");
        if (store_begin(s, "k", &v, d, sizeof d, e, sizeof e) || put(d, FIX_B) ||
            store_commit(s, "k", v, parent, "prune", "{\"child\": true}", e, sizeof e) ||
            store_activate(s, "k", v, e, sizeof e)) {
            fprintf(stderr, "child: %s\n", e);
            return 1;
        }
        store_prune_old(s, "k", 3);
    }
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void test_crash(void)
{
    char root[256], mdir[300];
    path_of(root, sizeof root, "crash");
    snprintf(mdir, sizeof mdir, "%s/k", root);
    store *s;
    int a = 0;
    CHECK(store_open(root, &s, err, sizeof err) == VT_OK && store_import(s, "k", FIX_B, &a, err, sizeof err) == VT_OK &&
              a == 1, "crash store: %s", err);
    store_close(s);
    unsigned seed = 12345;
    int last = 1, kills = 0, broken = 0;
    double t0 = now_s();
    for (int round = 0; round < 30 && !broken; round++) {
        pid_t pid = fork();
        if (pid == 0) {
            execl("/proc/self/exe", "test_store", "--crash-child", root, (char *)NULL);
            _exit(127);
        }
        CHECK(pid > 0, "fork: %s", strerror(errno));
        if (pid < 0) return;
        seed = seed * 1103515245u + 12345u;
        struct timespec nap = {0, (long)(20 + (seed >> 8) % 180) * 1000000L}; /* 20..200 ms */
        nanosleep(&nap, NULL);
        kill(pid, SIGKILL);
        int status;
        waitpid(pid, &status, 0);
        kills += WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
        if (WIFEXITED(status)) {
            CHECK(0, "the child stopped by itself (status %d)", WEXITSTATUS(status));
            broken = 1;
        }

        /* the store after a kill at an arbitrary instant */
        if (store_open(root, &s, err, sizeof err)) {
            CHECK(0, "round %d: the store does not open: %s", round, err);
            broken = 1;
            continue;
        }
        int act = store_active(s, "k");
        store_version v;
        char sha[65];
        int ok = act >= last && store_get(s, "k", act, &v, NULL) == VT_OK && v.active;
        ok = ok && sha256_file(v.path, sha, err, sizeof err) == VT_OK && !strcmp(sha, v.sha256);
        uint64_t removed = 0;
        ok = ok && loads(v.dir, NULL, &removed, NULL) && removed == 2;
        CHECK(ok, "round %d: active version %d (before %d) is not complete and loadable", round, act, last);
        CHECK(count_entries(mdir, ".tmp-") == 0 && count_entries(mdir, "state.json.tmp") == 0,
              "round %d: leftovers survived open", round);
        store_version list[STORE_MAX_VERSIONS];
        int n = store_list(s, "k", list, STORE_MAX_VERSIONS);
        CHECK(n == count_entries(mdir, ""), "round %d: %d complete versions, %d version folders", round, n,
              count_entries(mdir, ""));
        broken |= !ok;
        last = act;
        store_close(s);
    }
    double dt = now_s() - t0;
    printf("test_store: crash test: %d kills in %.1f s, active version went 1 -> %d\n", kills, dt, last);
    CHECK(kills == 30, "only %d of 30 children were killed", kills);
    CHECK(last > 10, "the children made little progress (active version %d)", last);
    CHECK(dt < 20, "crash test took %.1f s", dt);
}

int main(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "--crash-child")) return crash_child(argv[2]);
    snprintf(tmp, sizeof tmp, "/tmp/vitd-test-store-XXXXXX");
    if (!mkdtemp(tmp)) { perror("mkdtemp"); return 1; }
    vit_set_threads(1);
    test_import();
    test_import_copy();
    test_timm_folder();
    test_versions();
    test_bad_input();
    test_registry();
    test_crash();
    if (!check_failed) rm_rf(tmp);
    else fprintf(stderr, "test_store: files kept in %s\n", tmp);
    return check_done("test_store");
}
