/* srv_store.c - the versioned model store on disk (layout, crash safety and import rules:
 * srv_store.h).
 *
 * The disk is the only truth: every call reads state.json and the version folders afresh, so
 * what a call returns is what a restarted process would see. The one thing held in memory is
 * the table of versions begun but not yet committed (their number and temporary folder), so
 * that two writers never draw the same number.
 *
 * Every change follows one order: write files inside a ".tmp-XXXXXX" folder, fsync them,
 * rename the folder into place, fsync the model folder, and only then rewrite state.json
 * (fs_write_atomic). Deletion goes the other way: a version folder is first renamed to a
 * ".tmp-" name (so it vanishes from the listing in one step) and then emptied. A crash at any
 * point leaves at most a ".tmp-" folder (removed at the next store_open), a "state.json.tmp."
 * file (same), or a complete version folder that state.json does not name yet.
 *
 * Version numbers: "next" in state.json, but never below 1 + the highest version folder on
 * disk (a crash between the rename and the state write) or 1 + a number already begun.
 *
 * Not here: loading models for serving (srv_registry.c), deciding when to prune (srv_job.c).
 */
#include "srv_store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "fsutil.h"
#include "sha256.h"
#include "vit.h"

#define STORE_MAX_PENDING 16
#define STORE_PATH 1024
#define STORE_ROOT_MAX 800   /* leaves room for /<model>/<version>/<file> in STORE_PATH */

typedef struct {
    char model[65];
    int version;
    char dir[STORE_PATH];       /* root/model/.tmp-XXXXXX */
} pending;

struct store {
    pthread_mutex_t mu;
    char root[STORE_PATH];
    pending pend[STORE_MAX_PENDING];
    int npend;
};

/* state.json: {"active": N, "next": N, "source": {"path", "sha256"[, "config_sha256"]}} */
typedef struct {
    int active;                 /* 0: none yet */
    int next;
    char src_path[STORE_PATH];  /* "" when the model was never imported */
    char src_sha[65];
    char src_cfg_sha[65];       /* "" when the source had no config.json */
} state;

/* What a commit records about the checkpoint (from vit_load and the file itself). */
typedef struct {
    uint64_t removed, params;
    char sha256[65];
} ckpt_meta;

/* ---- small file-system helpers ----------------------------------------------------- */

/* snprintf for paths (the root's length is capped at open, so store paths always fit) */
static void path_fmt(char *buf, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void path_fmt(char *buf, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, n, fmt, ap);
    va_end(ap);
}

static int valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > 64) return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '_' ||
              *s == '-'))
            return 0;
    return 1;
}

/* A version folder's name: decimal digits without a leading zero, 1..INT_MAX. */
static int version_of_name(const char *name)
{
    if (!*name || *name == '0' || strlen(name) > 9) return 0;
    for (const char *p = name; *p; p++)
        if (*p < '0' || *p > '9') return 0;
    return atoi(name);
}

static vt_status mkdir_p(const char *path, char *err, size_t errlen)
{
    char buf[STORE_PATH];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return vt_err(err, errlen, VT_EINVAL, "store: path too long: %s", path);
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || !*p) {
            char c = *p;
            *p = '\0';
            if (mkdir(buf, 0755) != 0 && errno != EEXIST)
                return vt_err(err, errlen, VT_EIO, "store: cannot create folder %s: %s", buf, strerror(errno));
            *p = c;
            if (!c) break;
        }
    }
    if (!fs_is_dir(path)) return vt_err(err, errlen, VT_EIO, "store: %s is not a folder", path);
    return VT_OK;
}

/* Removes a folder and everything under it (version folders hold files only; a leftover
 * may hold anything a crashed writer made). */
static void rm_tree(const char *path)
{
    DIR *d = opendir(path);
    if (d) {
        struct dirent *e;
        char p[STORE_PATH + 256];
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            snprintf(p, sizeof p, "%s/%s", path, e->d_name);
            struct stat sb;
            if (lstat(p, &sb) == 0 && S_ISDIR(sb.st_mode)) rm_tree(p);
            else unlink(p);
        }
        closedir(d);
    }
    rmdir(path);
}

/* dst = a hard link to src when the filesystem allows it, else a copy (fsynced). dst's
 * folder is a temporary one: the caller's rename is what makes it visible. */
static vt_status link_or_copy(const char *src, const char *dst, int *linked, char *err, size_t errlen)
{
    if (link(src, dst) == 0) {
        *linked = 1;
        return VT_OK;
    }
    *linked = 0;
    int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0) return vt_err(err, errlen, VT_EIO, "store: cannot read %s: %s", src, strerror(errno));
    int out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (out < 0) {
        close(in);
        return vt_err(err, errlen, VT_EIO, "store: cannot create %s: %s", dst, strerror(errno));
    }
    size_t bufsz = 1 << 16;
    char *buf = malloc(bufsz);
    if (!buf) {
        close(in);
        close(out);
        return vt_err(err, errlen, VT_ENOMEM, "out of memory");
    }
    vt_status st = VT_OK;
    for (;;) {
        ssize_t n = read(in, buf, bufsz);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) { st = vt_err(err, errlen, VT_EIO, "store: reading %s: %s", src, strerror(errno)); break; }
        if (n == 0) break;
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(out, buf + off, (size_t)(n - off));
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) { st = vt_err(err, errlen, VT_EIO, "store: writing %s: %s", dst, strerror(errno)); break; }
            off += w;
        }
        if (st) break;
    }
    if (!st && fsync(out) != 0) st = vt_err(err, errlen, VT_EIO, "store: fsync %s: %s", dst, strerror(errno));
    if (close(out) != 0 && !st) st = vt_err(err, errlen, VT_EIO, "store: closing %s: %s", dst, strerror(errno));
    close(in);
    free(buf);
    return st;
}

static vt_status write_json(const char *path, json_t *j, char *err, size_t errlen)
{
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);
    if (!text) return vt_err(err, errlen, VT_ENOMEM, "store: out of memory");
    size_t n = strlen(text);
    struct iovec parts[2] = {{text, n}, {"\n", 1}};
    vt_status st = fs_write_atomic(path, parts, 2, err, errlen);
    free(text);
    return st;
}

/* ---- state.json and version.json ----------------------------------------------------- */

static void model_dir(const store *s, const char *model, char *out, size_t n)
{
    path_fmt(out, n, "%s/%s", s->root, model);
}

/* Reads root/model/state.json; *exists = 0 (and a zeroed state) when there is none. */
static vt_status read_state(const store *s, const char *model, state *st, int *exists, char *err, size_t errlen)
{
    char path[STORE_PATH + 80];
    snprintf(path, sizeof path, "%s/%s/state.json", s->root, model);
    memset(st, 0, sizeof *st);
    st->next = 1;
    *exists = 0;
    if (!fs_is_file(path)) {
        if (access(path, F_OK) == 0) return vt_err(err, errlen, VT_EFORMAT, "store: %s is not a file", path);
        return VT_OK;
    }
    json_error_t je;
    json_t *j = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!j) return vt_err(err, errlen, VT_EFORMAT, "store: %s: not valid JSON (line %d: %s)", path, je.line, je.text);
    vt_status rc = VT_OK;
    json_t *a = json_object_get(j, "active"), *nx = json_object_get(j, "next"), *src = json_object_get(j, "source");
    if (!json_is_integer(a) || json_integer_value(a) < 0 || json_integer_value(a) > INT_MAX ||
        !json_is_integer(nx) || json_integer_value(nx) < 1 || json_integer_value(nx) > INT_MAX ||
        (src && !json_is_object(src) && !json_is_null(src))) {
        rc = vt_err(err, errlen, VT_EFORMAT, "store: %s: expected {\"active\": N >= 0, \"next\": N >= 1, \"source\": {...}}", path);
        goto done;
    }
    st->active = (int)json_integer_value(a);
    st->next = (int)json_integer_value(nx);
    if (json_is_object(src)) {
        const char *p = json_string_value(json_object_get(src, "path"));
        const char *h = json_string_value(json_object_get(src, "sha256"));
        const char *c = json_string_value(json_object_get(src, "config_sha256"));
        snprintf(st->src_path, sizeof st->src_path, "%s", p ? p : "");
        snprintf(st->src_sha, sizeof st->src_sha, "%s", h ? h : "");
        snprintf(st->src_cfg_sha, sizeof st->src_cfg_sha, "%s", c ? c : "");
    }
    *exists = 1;
done:
    json_decref(j);
    return rc;
}

static vt_status write_state(const store *s, const char *model, const state *st, char *err, size_t errlen)
{
    char path[STORE_PATH + 80];
    snprintf(path, sizeof path, "%s/%s/state.json", s->root, model);
    json_t *j = json_pack("{s:i, s:i}", "active", st->active, "next", st->next);
    if (!j) return vt_err(err, errlen, VT_ENOMEM, "store: out of memory");
    if (st->src_sha[0]) {
        json_t *src = json_pack("{s:s, s:s}", "path", st->src_path, "sha256", st->src_sha);
        if (src && st->src_cfg_sha[0]) json_object_set_new(src, "config_sha256", json_string(st->src_cfg_sha));
        json_object_set_new(j, "source", src ? src : json_null());
    }
    vt_status rc = write_json(path, j, err, errlen);
    json_decref(j);
    return rc;
}

/* Reads the version folder root/model/<v> and checks it is complete (version.json valid and
 * naming this version, every file it lists present). */
static vt_status read_version(const store *s, const char *model, int v, store_version *out, char **info_json,
                              char *err, size_t errlen)
{
    char dir[STORE_PATH], path[STORE_PATH + 80];
    path_fmt(dir, sizeof dir, "%s/%s/%d", s->root, model, v);
    snprintf(path, sizeof path, "%s/version.json", dir);
    memset(out, 0, sizeof *out);
    if (info_json) *info_json = NULL;
    if (!fs_is_dir(dir)) return vt_err(err, errlen, VT_EINVAL, "model '%s' has no version %d in the store", model, v);
    json_error_t je;
    json_t *j = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!j) return vt_err(err, errlen, VT_EFORMAT, "store: %s: %s", path, je.text);
    vt_status rc = VT_OK;
    json_t *ver = json_object_get(j, "version"), *files = json_object_get(j, "files");
    const char *sha = json_string_value(json_object_get(j, "sha256"));
    if (!json_is_integer(ver) || json_integer_value(ver) != v || !sha || strlen(sha) != 64 || !json_is_array(files)) {
        rc = vt_err(err, errlen, VT_EFORMAT, "store: %s: not the record of version %d", path, v);
        goto done;
    }
    size_t i;
    json_t *f;
    json_array_foreach(files, i, f) {
        const char *name = json_string_value(f);
        char fp[STORE_PATH + 80];
        if (!name || strchr(name, '/')) { rc = vt_err(err, errlen, VT_EFORMAT, "store: %s: bad file list", path); goto done; }
        snprintf(fp, sizeof fp, "%s/%s", dir, name);
        if (!fs_is_file(fp)) { rc = vt_err(err, errlen, VT_EFORMAT, "store: version %d of '%s' is incomplete: %s is missing", v, model, fp); goto done; }
    }
    out->version = v;
    out->parent = (int)json_integer_value(json_object_get(j, "parent"));
    snprintf(out->origin, sizeof out->origin, "%s", json_string_value(json_object_get(j, "origin")) ? json_string_value(json_object_get(j, "origin")) : "");
    snprintf(out->created, sizeof out->created, "%s", json_string_value(json_object_get(j, "created")) ? json_string_value(json_object_get(j, "created")) : "");
    json_t *rb = json_object_get(j, "removed_blocks");
    json_array_foreach(rb, i, f) {
        json_int_t b = json_integer_value(f);
        if (b >= 0 && b < 64) out->removed |= 1ull << b;
    }
    out->params = (uint64_t)json_integer_value(json_object_get(j, "params"));
    out->bytes = (uint64_t)json_integer_value(json_object_get(j, "bytes"));
    snprintf(out->sha256, sizeof out->sha256, "%s", sha);
    snprintf(out->dir, sizeof out->dir, "%s", dir);
    path_fmt(out->path, sizeof out->path, "%s/model.safetensors", dir);
    if (!fs_is_file(out->path)) { rc = vt_err(err, errlen, VT_EFORMAT, "store: version %d of '%s' has no model.safetensors", v, model); goto done; }
    json_t *info = json_object_get(j, "info");
    if (info_json && json_is_object(info)) {
        char *t = json_dumps(info, JSON_COMPACT | JSON_SORT_KEYS);
        if (t) *info_json = strdup(t);
        free(t);
    }
done:
    json_decref(j);
    return rc;
}

/* The version folders of a model (complete or not), ascending, in a malloc'd array. */
static int scan_versions(const store *s, const char *model, int **out)
{
    char dir[STORE_PATH];
    model_dir(s, model, dir, sizeof dir);
    *out = NULL;
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0, cap = 0, *v = NULL;
    struct dirent *e;
    while ((e = readdir(d))) {
        int k = version_of_name(e->d_name);
        char p[STORE_PATH + 256];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (!k || !fs_is_dir(p)) continue;
        if (n == cap) {
            int *t = realloc(v, sizeof *v * (size_t)(cap = cap ? 2 * cap : 16));
            if (!t) break;
            v = t;
        }
        v[n++] = k;
    }
    closedir(d);
    for (int i = 1; i < n; i++) /* insertion sort: a few hundred at most */
        for (int j = i; j > 0 && v[j - 1] > v[j]; j--) { int t = v[j]; v[j] = v[j - 1]; v[j - 1] = t; }
    *out = v;
    return n;
}

/* The number the next version of model gets (see the file comment). */
static int next_number(const store *s, const char *model, const state *st)
{
    int next = st->next > 0 ? st->next : 1, *v, n = scan_versions(s, model, &v);
    if (n && v[n - 1] >= next) next = v[n - 1] + 1;
    free(v);
    for (int i = 0; i < s->npend; i++)
        if (!strcmp(s->pend[i].model, model) && s->pend[i].version >= next) next = s->pend[i].version + 1;
    return next;
}

static pending *find_pending(store *s, const char *model, int version)
{
    for (int i = 0; i < s->npend; i++)
        if (!strcmp(s->pend[i].model, model) && s->pend[i].version == version) return &s->pend[i];
    return NULL;
}

static void drop_pending(store *s, pending *p)
{
    *p = s->pend[--s->npend];
}

/* root/model exists (and its creation reached the disk). */
static vt_status ensure_model_dir(const store *s, const char *model, char *err, size_t errlen)
{
    char dir[STORE_PATH];
    model_dir(s, model, dir, sizeof dir);
    if (fs_is_dir(dir)) return VT_OK;
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return vt_err(err, errlen, VT_EIO, "store: cannot create %s: %s", dir, strerror(errno));
    if (fs_sync_path(s->root, 1) != 0)
        return vt_err(err, errlen, VT_EIO, "store: fsync %s: %s", s->root, strerror(errno));
    return VT_OK;
}

/* A begun version: number and temporary folder, recorded as pending. */
static vt_status begin_locked(store *s, const char *model, int *version, pending **out, char *err, size_t errlen)
{
    state st;
    int exists;
    vt_status rc;
    if (s->npend >= STORE_MAX_PENDING) return vt_err(err, errlen, VT_ELIMIT, "store: too many versions being written at once");
    if ((rc = ensure_model_dir(s, model, err, errlen))) return rc;
    if ((rc = read_state(s, model, &st, &exists, err, errlen))) return rc;
    pending *p = &s->pend[s->npend];
    memset(p, 0, sizeof *p);
    snprintf(p->model, sizeof p->model, "%s", model);
    if (snprintf(p->dir, sizeof p->dir, "%s/%s/.tmp-XXXXXX", s->root, model) >= (int)sizeof p->dir)
        return vt_err(err, errlen, VT_EINVAL, "store: path too long under %s", s->root);
    p->version = next_number(s, model, &st);
    if (!mkdtemp(p->dir)) return vt_err(err, errlen, VT_EIO, "store: cannot create a temporary folder in %s/%s: %s", s->root, model, strerror(errno));
    s->npend++;
    *version = p->version;
    *out = p;
    return VT_OK;
}

static void utc_now(char *buf, size_t n)
{
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Writes version.json into the pending folder, fsyncs its files and renames it into place.
 * meta: what the caller already knows of the checkpoint, or NULL to load and hash it here. */
static vt_status commit_locked(store *s, pending *p, int parent, const char *origin, json_t *info,
                               const ckpt_meta *meta, char *err, size_t errlen)
{
    char file[STORE_PATH + 80], cfg[STORE_PATH + 80], path[STORE_PATH + 80], dest[STORE_PATH];
    snprintf(file, sizeof file, "%s/model.safetensors", p->dir);
    snprintf(cfg, sizeof cfg, "%s/config.json", p->dir);
    vt_status rc;
    ckpt_meta m;
    struct stat sb;
    if (stat(file, &sb) != 0 || !S_ISREG(sb.st_mode))
        return vt_err(err, errlen, VT_EINVAL, "store: %s was not written", file);
    if (meta) {
        m = *meta;
    } else {
        vit_model *vm;
        if ((rc = vit_load(p->dir, NULL, &vm, err, errlen))) return rc;
        m.removed = vit_config_of(vm)->removed;
        m.params = vit_param_count(vm);
        vit_free(vm);
        if ((rc = sha256_file(file, m.sha256, err, errlen))) return rc;
    }
    int has_cfg = fs_is_file(cfg);
    if (fs_sync_path(file, 0) != 0 || (has_cfg && fs_sync_path(cfg, 0) != 0))
        return vt_err(err, errlen, VT_EIO, "store: fsync in %s: %s", p->dir, strerror(errno));

    char created[32];
    utc_now(created, sizeof created);
    json_t *rb = json_array(), *files = json_array();
    for (int b = 0; b < 64; b++)
        if ((m.removed >> b) & 1) json_array_append_new(rb, json_integer(b));
    json_array_append_new(files, json_string("model.safetensors"));
    if (has_cfg) json_array_append_new(files, json_string("config.json"));
    json_t *j = json_pack("{s:i, s:i, s:s, s:s, s:o, s:I, s:I, s:s, s:o, s:O}", "version", p->version, "parent", parent,
                          "created", created, "origin", origin, "removed_blocks", rb, "params", (json_int_t)m.params,
                          "bytes", (json_int_t)sb.st_size, "sha256", m.sha256, "files", files, "info",
                          info ? info : json_null());
    if (!j) return vt_err(err, errlen, VT_ENOMEM, "store: out of memory");
    snprintf(path, sizeof path, "%s/version.json", p->dir);
    rc = write_json(path, j, err, errlen); /* fsyncs the file and the temporary folder */
    json_decref(j);
    if (rc) return rc;

    path_fmt(dest, sizeof dest, "%s/%s/%d", s->root, p->model, p->version);
    if (lstat(dest, &sb) == 0) return vt_err(err, errlen, VT_EIO, "store: %s already exists", dest);
    if (rename(p->dir, dest) != 0)
        return vt_err(err, errlen, VT_EIO, "store: cannot rename %s to %s: %s", p->dir, dest, strerror(errno));
    char mdir[STORE_PATH];
    model_dir(s, p->model, mdir, sizeof mdir);
    if (fs_sync_path(mdir, 1) != 0) return vt_err(err, errlen, VT_EIO, "store: fsync %s: %s", mdir, strerror(errno));
    return VT_OK;
}

/* ---- the API ------------------------------------------------------------------------- */

vt_status store_open(const char *root, store **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!root || !*root) return vt_err(err, errlen, VT_EINVAL, "store: the store folder (store_dir) is empty");
    vt_status rc = mkdir_p(root, err, errlen);
    if (rc) return rc;
    store *s = calloc(1, sizeof *s);
    if (!s) return vt_err(err, errlen, VT_ENOMEM, "out of memory");
    char abs[PATH_MAX];
    if (!realpath(root, abs) || strlen(abs) > STORE_ROOT_MAX) {
        free(s);
        return vt_err(err, errlen, VT_EINVAL, "store: cannot resolve %s (or the path is too long)", root);
    }
    memcpy(s->root, abs, strlen(abs) + 1);
    if (access(s->root, W_OK | X_OK) != 0) {
        rc = vt_err(err, errlen, VT_EIO, "store: %s is not writable: %s", s->root, strerror(errno));
        free(s);
        return rc;
    }
    pthread_mutex_init(&s->mu, NULL);
    /* crash leftovers: .tmp-* folders (versions being written or deleted) and state.json
     * temporaries of fs_write_atomic */
    DIR *d = opendir(s->root);
    struct dirent *e, *f;
    while (d && (e = readdir(d))) {
        if (!valid_name(e->d_name)) continue;
        char mdir[STORE_PATH + 256];
        snprintf(mdir, sizeof mdir, "%s/%s", s->root, e->d_name);
        DIR *md = opendir(mdir);
        while (md && (f = readdir(md))) {
            char p[STORE_PATH + 512];
            snprintf(p, sizeof p, "%s/%s", mdir, f->d_name);
            if (!strncmp(f->d_name, ".tmp-", 5)) rm_tree(p);
            else if (!strncmp(f->d_name, "state.json.tmp.", 15)) unlink(p);
        }
        if (md) closedir(md);
    }
    if (d) closedir(d);
    *out = s;
    return VT_OK;
}

void store_close(store *s)
{
    if (!s) return;
    for (int i = 0; i < s->npend; i++) rm_tree(s->pend[i].dir);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

const char *store_root(const store *s) { return s->root; }

/* The checkpoint file and config.json of an import source (a file, or a timm folder; a file
 * named model.safetensors brings the config.json beside it, as vit_load reads it). */
static vt_status source_files(const char *path, char *file, char *cfg, size_t n, char *err, size_t errlen)
{
    struct stat sb;
    cfg[0] = '\0';
    if (stat(path, &sb) != 0) return vt_err(err, errlen, VT_EIO, "%s: %s", path, strerror(errno));
    if (S_ISDIR(sb.st_mode)) {
        snprintf(file, n, "%s/model.safetensors", path);
        snprintf(cfg, n, "%s/config.json", path);
        if (!fs_is_file(file)) return vt_err(err, errlen, VT_EIO, "%s: the folder has no model.safetensors", path);
    } else {
        snprintf(file, n, "%s", path);
        const char *slash = strrchr(path, '/'), *base = slash ? slash + 1 : path;
        if (!strcmp(base, "model.safetensors")) snprintf(cfg, n, "%.*sconfig.json", (int)(base - path), path);
    }
    if (cfg[0] && !fs_is_file(cfg)) cfg[0] = '\0';
    return VT_OK;
}

vt_status store_import(store *s, const char *model, const char *path, int *active, char *err, size_t errlen)
{
    char file[STORE_PATH], cfg[STORE_PATH], abs[PATH_MAX], sha[65], cfg_sha[65] = "";
    vt_status rc;
    *active = 0;
    if (!valid_name(model)) return vt_err(err, errlen, VT_EINVAL, "store: invalid model name '%.80s'", model);
    if ((rc = source_files(path, file, cfg, sizeof file, err, errlen))) return rc;
    if (!realpath(path, abs)) snprintf(abs, sizeof abs, "%s", path);
    if ((rc = sha256_file(file, sha, err, errlen))) return rc;
    if (cfg[0] && (rc = sha256_file(cfg, cfg_sha, err, errlen))) return rc;

    pthread_mutex_lock(&s->mu);
    state st;
    int exists;
    store_version sv;
    if ((rc = read_state(s, model, &st, &exists, err, errlen))) goto out;
    if (exists && st.active) {
        char why[512];
        if (read_version(s, model, st.active, &sv, NULL, why, sizeof why)) {
            rc = vt_err(err, errlen, VT_EFORMAT,
                        "store: %s/%s/state.json names version %d as active, but that version is missing or incomplete (%s); "
                        "set \"active\" to an existing version or remove the folder %s/%s",
                        s->root, model, st.active, why, s->root, model);
            goto out;
        }
        if (!strcmp(st.src_sha, sha) && !strcmp(st.src_cfg_sha, cfg_sha)) { /* the same checkpoint */
            *active = st.active;
            goto out;
        }
    }
    if (!exists) {
        /* a crash after an import's rename but before its state.json: adopt that version */
        int *v, n = scan_versions(s, model, &v);
        for (int i = n - 1; i >= 0; i--) {
            if (read_version(s, model, v[i], &sv, NULL, NULL, 0) || strcmp(sv.origin, "import") || strcmp(sv.sha256, sha))
                continue;
            char c[STORE_PATH + 80], csha[65] = "";
            snprintf(c, sizeof c, "%s/config.json", sv.dir);
            if (fs_is_file(c) && sha256_file(c, csha, NULL, 0)) continue;
            if (strcmp(csha, cfg_sha)) continue;
            st.active = v[i];
            break;
        }
        free(v);
    }
    if (!st.active || exists) {
        /* a new version: check the checkpoint loads before anything is written */
        vit_model *vm;
        char why[768];
        if ((rc = vit_load(path, NULL, &vm, why, sizeof why))) {
            vt_err(err, errlen, rc, "cannot load %s: %s", path, why);
            goto out;
        }
        ckpt_meta m = {.removed = vit_config_of(vm)->removed, .params = vit_param_count(vm)};
        vit_free(vm);
        memcpy(m.sha256, sha, sizeof sha);
        pending *p;
        int version, linked = 0;
        char dst[STORE_PATH + 80];
        if ((rc = begin_locked(s, model, &version, &p, err, errlen))) goto out;
        snprintf(dst, sizeof dst, "%s/model.safetensors", p->dir);
        rc = link_or_copy(file, dst, &linked, err, errlen);
        if (!rc && cfg[0]) {
            int l2;
            snprintf(dst, sizeof dst, "%s/config.json", p->dir);
            rc = link_or_copy(cfg, dst, &l2, err, errlen);
        }
        json_t *info = json_pack("{s:s, s:s}", "source", abs, "import", linked ? "link" : "copy");
        if (!rc) rc = commit_locked(s, p, 0, "import", info, &m, err, errlen);
        json_decref(info);
        if (rc) {
            rm_tree(p->dir);
            drop_pending(s, p);
            goto out;
        }
        drop_pending(s, p);
        st.active = version;
        if (st.next <= version) st.next = version + 1;
    }
    st.next = next_number(s, model, &st);
    path_fmt(st.src_path, sizeof st.src_path, "%s", abs);
    memcpy(st.src_sha, sha, sizeof sha);
    memcpy(st.src_cfg_sha, cfg_sha, sizeof cfg_sha);
    if ((rc = write_state(s, model, &st, err, errlen))) goto out;
    *active = st.active;
out:
    pthread_mutex_unlock(&s->mu);
    return rc;
}

vt_status store_begin(store *s, const char *model, int *version, char *tmpdir, size_t tmplen, char *err, size_t errlen)
{
    if (!valid_name(model)) return vt_err(err, errlen, VT_EINVAL, "store: invalid model name '%.80s'", model);
    pthread_mutex_lock(&s->mu);
    pending *p;
    vt_status rc = begin_locked(s, model, version, &p, err, errlen);
    if (!rc && snprintf(tmpdir, tmplen, "%s", p->dir) >= (int)tmplen) {
        rm_tree(p->dir);
        drop_pending(s, p);
        rc = vt_err(err, errlen, VT_EINVAL, "store: the caller's buffer is too small for %s", p->dir);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

vt_status store_commit(store *s, const char *model, int version, int parent, const char *origin, const char *info_json,
                       char *err, size_t errlen)
{
    if (!origin || !*origin || strlen(origin) >= sizeof ((store_version *)0)->origin)
        return vt_err(err, errlen, VT_EINVAL, "store: origin must be a word of 1-15 characters");
    json_t *info = NULL;
    if (info_json) {
        json_error_t je;
        info = json_loads(info_json, JSON_REJECT_DUPLICATES, &je);
        if (!json_is_object(info)) {
            json_decref(info);
            return vt_err(err, errlen, VT_EINVAL, "store: the version's info is not a JSON object (%s)", info ? "another JSON value" : je.text);
        }
    }
    pthread_mutex_lock(&s->mu);
    vt_status rc;
    pending *p = find_pending(s, model, version);
    if (!p) {
        rc = vt_err(err, errlen, VT_EINVAL, "store: version %d of '%s' was not begun (or is already committed)", version, model);
        goto out;
    }
    if ((rc = commit_locked(s, p, parent, origin, info, NULL, err, errlen))) goto out; /* still pending: abort it */
    drop_pending(s, p);
    state st;
    int exists;
    if ((rc = read_state(s, model, &st, &exists, err, errlen))) goto out;
    st.next = next_number(s, model, &st);
    rc = write_state(s, model, &st, err, errlen);
out:
    pthread_mutex_unlock(&s->mu);
    json_decref(info);
    return rc;
}

void store_abort(store *s, const char *model, int version)
{
    pthread_mutex_lock(&s->mu);
    pending *p = find_pending(s, model, version);
    if (p) {
        rm_tree(p->dir);
        drop_pending(s, p);
    }
    pthread_mutex_unlock(&s->mu);
}

vt_status store_activate(store *s, const char *model, int version, char *err, size_t errlen)
{
    if (!valid_name(model)) return vt_err(err, errlen, VT_EINVAL, "store: invalid model name '%.80s'", model);
    pthread_mutex_lock(&s->mu);
    store_version sv;
    state st;
    int exists;
    char why[512];
    vt_status rc = VT_OK;
    if (version < 1 || read_version(s, model, version, &sv, NULL, why, sizeof why)) {
        rc = vt_err(err, errlen, VT_EINVAL, "model '%s' has no complete version %d in the store", model, version);
        goto out;
    }
    if ((rc = read_state(s, model, &st, &exists, err, errlen))) goto out;
    st.active = version;
    st.next = next_number(s, model, &st);
    rc = write_state(s, model, &st, err, errlen);
out:
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int store_active(store *s, const char *model)
{
    if (!valid_name(model)) return 0;
    pthread_mutex_lock(&s->mu);
    state st;
    int exists;
    store_version sv;
    int a = read_state(s, model, &st, &exists, NULL, 0) || !exists ? 0 : st.active;
    if (a && read_version(s, model, a, &sv, NULL, NULL, 0)) a = 0; /* names no complete version */
    pthread_mutex_unlock(&s->mu);
    return a;
}

vt_status store_get(store *s, const char *model, int version, store_version *out, char **info_json)
{
    if (info_json) *info_json = NULL;
    if (!valid_name(model)) return VT_EINVAL;
    pthread_mutex_lock(&s->mu);
    vt_status rc = read_version(s, model, version, out, info_json, NULL, 0);
    if (!rc) {
        state st;
        int exists;
        out->active = !read_state(s, model, &st, &exists, NULL, 0) && exists && st.active == version;
    } else {
        rc = VT_EINVAL;
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int store_list(store *s, const char *model, store_version *out, int max)
{
    if (!valid_name(model)) return 0;
    pthread_mutex_lock(&s->mu);
    state st;
    int exists, *v, n = scan_versions(s, model, &v), k = 0;
    int active = !read_state(s, model, &st, &exists, NULL, 0) && exists ? st.active : 0;
    for (int i = 0; i < n && k < max; i++) {
        if (read_version(s, model, v[i], &out[k], NULL, NULL, 0)) continue; /* not a complete version */
        out[k].active = v[i] == active;
        k++;
    }
    free(v);
    pthread_mutex_unlock(&s->mu);
    return k;
}

int store_prune_old(store *s, const char *model, int keep)
{
    if (!valid_name(model)) return 0;
    if (keep < 1) keep = 1;
    pthread_mutex_lock(&s->mu);
    state st;
    int exists, *v, n = scan_versions(s, model, &v), deleted = 0;
    store_version sv;
    int active = !read_state(s, model, &st, &exists, NULL, 0) && exists ? st.active : 0;
    int parent = active && !read_version(s, model, active, &sv, NULL, NULL, 0) ? sv.parent : 0;
    /* complete versions only: a folder that is not one is left for a person to look at */
    int complete = 0;
    for (int i = 0; i < n; i++)
        if (!read_version(s, model, v[i], &sv, NULL, NULL, 0)) v[complete++] = v[i];
    char mdir[STORE_PATH], from[STORE_PATH + 32], to[STORE_PATH + 64];
    model_dir(s, model, mdir, sizeof mdir);
    for (int i = 0; i < complete - keep; i++) { /* all but the newest `keep` */
        if (v[i] == active || v[i] == parent) continue;
        snprintf(from, sizeof from, "%s/%d", mdir, v[i]);
        snprintf(to, sizeof to, "%s/.tmp-deleted-%d", mdir, v[i]);
        rm_tree(to);
        if (rename(from, to) != 0) continue;
        fs_sync_path(mdir, 1);
        rm_tree(to);
        deleted++;
    }
    free(v);
    pthread_mutex_unlock(&s->mu);
    return deleted;
}
