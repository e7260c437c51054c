/* data.c - IDX, ImageFolder and tar data sets; evaluation and augmentation transforms
 * (see data.h for the formats and the transforms).
 *
 * What it is: everything between files on disk and a normalised (B, C, S, S) batch. IDX
 * images are held decoded in memory (Fashion-MNIST is 47 MB); photographs stay encoded (tar:
 * the mapped archive; folders: read per batch) and are decoded when a batch needs them.
 */
#include "data.h"

#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "fsutil.h"

#define DS_FASHION_DIR "/usr/share/datasets/fashion-mnist"

static const char *const fashion_names[10] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                              "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};

struct ds_set {
    ds_kind kind;
    int n, K;
    char **names;          /* (K) */
    int *labels;           /* (n) */
    /* IDX */
    uint8_t *pix;          /* (n, rows, cols) */
    int rows, cols;
    /* folder */
    char **paths;          /* (n) */
    /* tar */
    uint8_t *map;
    size_t maplen;
    size_t *off, *len;     /* (n) */
    char source[600];
};

/* ---- random numbers ------------------------------------------------------------------------ */

static uint64_t sm64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double unif(uint64_t *s) { return (sm64(s) >> 11) * (1.0 / 9007199254740992.0); }
static int randint(uint64_t *s, int lo, int hi) { return lo + (int)(sm64(s) % (uint64_t)(hi - lo + 1)); } /* [lo, hi] */

void ds_shuffle(int *perm, int n, uint64_t seed)
{
    uint64_t s = seed ^ 0x5851f42d4c957f2dull;
    for (int i = 0; i < n; i++) perm[i] = i;
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(sm64(&s) % (uint64_t)(i + 1));
        int t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

/* ---- IDX --------------------------------------------------------------------------------------- */

static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

vt_status ds_idx_parse(const void *buf, size_t len, const char *what, ds_idx *out, char *err, size_t errlen)
{
    const uint8_t *b = buf;
    memset(out, 0, sizeof *out);
    if (len < 4 || b[0] || b[1])
        return vt_err(err, errlen, VT_EFORMAT, "%s: not an IDX file (bad magic)", what);
    if (b[2] != 0x08)
        return vt_err(err, errlen, VT_EUNSUPPORTED, "%s: IDX element type 0x%02x (only unsigned bytes, 0x08)", what, b[2]);
    int nd = b[3];
    if (nd < 1 || nd > 4) return vt_err(err, errlen, VT_EFORMAT, "%s: IDX with %d dimensions", what, nd);
    if (len < 4 + 4 * (size_t)nd) return vt_err(err, errlen, VT_EFORMAT, "%s: truncated IDX header", what);
    uint64_t total = 1;
    for (int i = 0; i < nd; i++) {
        out->dims[i] = be32(b + 4 + 4 * i);
        total *= out->dims[i];
        if (total > ((uint64_t)1 << 34)) return vt_err(err, errlen, VT_ELIMIT, "%s: IDX dimensions too large", what);
    }
    size_t hdr = 4 + 4 * (size_t)nd;
    if (len - hdr < total)
        return vt_err(err, errlen, VT_EFORMAT, "%s: truncated IDX data (%zu bytes, header says %llu)", what, len - hdr,
                      (unsigned long long)total);
    if (len - hdr > total)
        return vt_err(err, errlen, VT_EFORMAT, "%s: %zu bytes after the IDX data", what, (size_t)(len - hdr - total));
    out->ndim = nd;
    out->size = (size_t)total;
    if (!(out->data = malloc(total ? total : 1))) return vt_err(err, errlen, VT_ENOMEM, "out of memory");
    memcpy(out->data, b + hdr, total);
    return VT_OK;
}

vt_status ds_idx_read(const char *path, ds_idx *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    gzFile f = gzopen(path, "rb");
    if (!f) return vt_err(err, errlen, VT_EIO, "%s: cannot open", path);
    size_t cap = 1 << 20, n = 0;
    uint8_t *buf = malloc(cap);
    vt_status st = VT_OK;
    while (buf) {
        if (n == cap) {
            uint8_t *nb = cap > ((size_t)1 << 36) ? NULL : realloc(buf, cap * 2);
            if (!nb) { free(buf); buf = NULL; break; }
            buf = nb;
            cap *= 2;
        }
        int got = gzread(f, buf + n, (unsigned)(cap - n > (1u << 30) ? (1u << 30) : cap - n));
        if (got < 0) {
            int zerr;
            const char *msg = gzerror(f, &zerr);
            st = vt_err(err, errlen, VT_EFORMAT, "%s: corrupt gzip data (%s)", path, msg);
            break;
        }
        if (got == 0) break;
        n += (size_t)got;
    }
    gzclose(f);
    if (!buf) return vt_err(err, errlen, VT_ENOMEM, "out of memory reading %s", path);
    if (!st) st = ds_idx_parse(buf, n, path, out, err, errlen);
    free(buf);
    return st;
}

void ds_idx_free(ds_idx *x)
{
    if (!x) return;
    free(x->data);
    memset(x, 0, sizeof *x);
}

/* out = a + sep + b (sep may be ""); 0 on success, -1 when it does not fit. */
static int join(char *out, size_t n, const char *a, const char *sep, const char *b)
{
    size_t la = strlen(a), ls = strlen(sep), lb = strlen(b);
    if (la + ls + lb + 1 > n) return -1;
    memcpy(out, a, la);
    memcpy(out + la, sep, ls);
    memcpy(out + la + ls, b, lb + 1);
    return 0;
}

/* dir/base or dir/base.gz, whichever exists; 0 when neither. */
static int find_idx(const char *dir, const char *base, char *out, size_t n)
{
    if (join(out, n, dir, "/", base)) return 0;
    if (fs_is_file(out)) return 1;
    size_t k = strlen(out);
    if (k + 4 > n) return 0;
    memcpy(out + k, ".gz", 4);
    return fs_is_file(out);
}

static vt_status set_names(ds_set *d, const char *dir, char *err, size_t errlen)
{
    if (!(d->names = calloc((size_t)d->K, sizeof *d->names))) return vt_err(err, errlen, VT_ENOMEM, "out of memory");
    char path[4200], line[256];
    FILE *f = join(path, sizeof path, dir, "/", "labels.txt") ? NULL : fopen(path, "r");
    int k = 0;
    if (f) {
        while (k < d->K && fgets(line, sizeof line, f)) {
            line[strcspn(line, "\r\n")] = '\0';
            if (!(d->names[k++] = strdup(line))) { fclose(f); return VT_ENOMEM; }
        }
        fclose(f);
        if (k < d->K) return vt_err(err, errlen, VT_EFORMAT, "%s: %d names for %d classes", path, k, d->K);
        return VT_OK;
    }
    char low[4200];
    size_t i;
    for (i = 0; dir[i] && i + 1 < sizeof low; i++) low[i] = (char)tolower((unsigned char)dir[i]);
    low[i] = '\0';
    int fashion = strstr(low, "fashion") != NULL && d->K == 10;
    for (k = 0; k < d->K; k++) {
        char num[16];
        snprintf(num, sizeof num, "%d", k);
        if (!(d->names[k] = strdup(fashion ? fashion_names[k] : num))) return VT_ENOMEM;
    }
    return VT_OK;
}

static vt_status open_idx(ds_set *d, const char *dir, const char *split, char *err, size_t errlen)
{
    const char *pre = !strcmp(split, "train") ? "train" : "t10k";
    char ip[4200], lp[4200], base[64];
    snprintf(base, sizeof base, "%s-images-idx3-ubyte", pre);
    if (!find_idx(dir, base, ip, sizeof ip)) return vt_err(err, errlen, VT_EIO, "%s: no %s[.gz]", dir, base);
    snprintf(base, sizeof base, "%s-labels-idx1-ubyte", pre);
    if (!find_idx(dir, base, lp, sizeof lp)) return vt_err(err, errlen, VT_EIO, "%s: no %s[.gz]", dir, base);
    ds_idx im, lb;
    vt_status st = ds_idx_read(ip, &im, err, errlen);
    if (st) return st;
    if ((st = ds_idx_read(lp, &lb, err, errlen))) { ds_idx_free(&im); return st; }
    if (im.ndim != 3 || im.dims[1] < 1 || im.dims[2] < 1 || im.dims[1] > 4096 || im.dims[2] > 4096)
        st = vt_err(err, errlen, VT_EFORMAT, "%s: images must be (count, rows, cols)", ip);
    else if (lb.ndim != 1)
        st = vt_err(err, errlen, VT_EFORMAT, "%s: labels must be one-dimensional", lp);
    else if (lb.dims[0] != im.dims[0])
        st = vt_err(err, errlen, VT_EFORMAT, "%s has %u labels for %u images", lp, lb.dims[0], im.dims[0]);
    else if (im.dims[0] == 0 || im.dims[0] > (1u << 30))
        st = vt_err(err, errlen, VT_EFORMAT, "%s: %u images", ip, im.dims[0]);
    if (!st) {
        d->kind = DS_IDX;
        d->n = (int)im.dims[0];
        d->rows = (int)im.dims[1];
        d->cols = (int)im.dims[2];
        d->pix = im.data;
        im.data = NULL;
        if (!(d->labels = malloc((size_t)d->n * sizeof(int)))) st = vt_err(err, errlen, VT_ENOMEM, "out of memory");
        for (int i = 0; !st && i < d->n; i++) {
            d->labels[i] = lb.data[i];
            if (d->labels[i] + 1 > d->K) d->K = d->labels[i] + 1;
        }
        join(d->source, sizeof d->source, ip, " + ", lp);
    }
    ds_idx_free(&im);
    ds_idx_free(&lb);
    if (!st) st = set_names(d, dir, err, errlen);
    return st;
}

/* ---- ImageFolder and tar -------------------------------------------------------------------- */

typedef struct { char *cls, *path; size_t off, len; } item;

static int by_item(const void *a, const void *b)
{
    const item *x = a, *y = b;
    int c = strcmp(x->cls, y->cls);
    return c ? c : strcmp(x->path, y->path);
}


static int is_image_name(const char *name)
{
    const char *base = strrchr(name, '/'), *dot = strrchr(name, '.');
    base = base ? base + 1 : name;
    if (!dot || dot < base || base[0] == '.') return 0;
    return !strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg") || !strcasecmp(dot, ".png");
}

typedef struct { item *v; int n, cap; } items;

static int push(items *it, const char *cls, const char *path, size_t off, size_t len)
{
    if (it->n == it->cap) {
        int nc = it->cap ? it->cap * 2 : 256;
        item *nv = realloc(it->v, (size_t)nc * sizeof *nv);
        if (!nv) return -1;
        it->v = nv;
        it->cap = nc;
    }
    item *e = &it->v[it->n];
    e->cls = strdup(cls);
    e->path = strdup(path);
    e->off = off;
    e->len = len;
    if (!e->cls || !e->path) { free(e->cls); free(e->path); return -1; }
    it->n++;
    return 0;
}

static void items_free(items *it)
{
    for (int i = 0; i < it->n; i++) { free(it->v[i].cls); free(it->v[i].path); }
    free(it->v);
}

/* Sorts the items, assigns class indices and fills d. */
static vt_status finish_items(ds_set *d, items *it, const char *what, char *err, size_t errlen)
{
    if (!it->n) return vt_err(err, errlen, VT_EFORMAT, "%s: no class/image files (.jpg, .jpeg, .png) found", what);
    qsort(it->v, (size_t)it->n, sizeof *it->v, by_item);
    d->n = it->n;
    if (!(d->labels = malloc((size_t)d->n * sizeof(int))) || !(d->names = calloc((size_t)d->n, sizeof *d->names)))
        return vt_err(err, errlen, VT_ENOMEM, "out of memory");
    if (d->kind == DS_FOLDER && !(d->paths = calloc((size_t)d->n, sizeof *d->paths))) return VT_ENOMEM;
    if (d->kind == DS_TAR && (!(d->off = malloc((size_t)d->n * sizeof(size_t))) || !(d->len = malloc((size_t)d->n * sizeof(size_t)))))
        return VT_ENOMEM;
    for (int i = 0; i < d->n; i++) {
        if (!i || strcmp(it->v[i].cls, it->v[i - 1].cls)) {
            if (!(d->names[d->K++] = strdup(it->v[i].cls))) return VT_ENOMEM;
        }
        d->labels[i] = d->K - 1;
        if (d->kind == DS_FOLDER) { d->paths[i] = it->v[i].path; it->v[i].path = NULL; }
        else { d->off[i] = it->v[i].off; d->len[i] = it->v[i].len; }
    }
    return VT_OK;
}

static vt_status open_folder(ds_set *d, const char *dir, char *err, size_t errlen)
{
    d->kind = DS_FOLDER;
    join(d->source, sizeof d->source, dir, "", "");
    DIR *top = opendir(dir);
    if (!top) return vt_err(err, errlen, VT_EIO, "%s: cannot open folder", dir);
    items it = {0};
    vt_status st = VT_OK;
    struct dirent *e;
    char cdir[4200], path[4400];
    while (!st && (e = readdir(top))) {
        if (e->d_name[0] == '.') continue;
        if (join(cdir, sizeof cdir, dir, "/", e->d_name) || !fs_is_dir(cdir)) continue;
        DIR *cd = opendir(cdir);
        if (!cd) { st = vt_err(err, errlen, VT_EIO, "%s: cannot open folder", cdir); break; }
        struct dirent *f;
        while ((f = readdir(cd))) {
            if (!is_image_name(f->d_name)) continue;
            if (join(path, sizeof path, cdir, "/", f->d_name) || !fs_is_file(path)) continue;
            if (push(&it, e->d_name, path, 0, 0)) { st = vt_err(err, errlen, VT_ENOMEM, "out of memory"); break; }
        }
        closedir(cd);
    }
    closedir(top);
    if (!st) st = finish_items(d, &it, dir, err, errlen);
    items_free(&it);
    return st;
}

/* Octal (NUL/space terminated) or GNU base-256 numeric field; -1 when malformed. */
static int64_t tar_num(const uint8_t *f, int n)
{
    if (f[0] & 0x80) {
        int64_t v = f[0] & 0x3f;
        for (int i = 1; i < n; i++) {
            if (v > (INT64_MAX >> 8)) return -1;
            v = v << 8 | f[i];
        }
        return v;
    }
    int i = 0;
    while (i < n && f[i] == ' ') i++;
    int64_t v = 0;
    int digits = 0;
    for (; i < n && f[i] >= '0' && f[i] <= '7'; i++, digits++) {
        if (v > (INT64_MAX >> 3)) return -1;
        v = v * 8 + (f[i] - '0');
    }
    if (i < n && f[i] != 0 && f[i] != ' ') return -1;
    return digits ? v : -1;
}

static int zero_block(const uint8_t *h)
{
    for (int i = 0; i < 512; i++)
        if (h[i]) return 0;
    return 1;
}

/* Splits "a/b/c" (after "./" prefixes) into at most 4 components; returns the count. */
static int split_path(char *p, char **parts)
{
    int n = 0;
    while (p[0] == '.' && p[1] == '/') p += 2;
    for (char *s = strtok(p, "/"); s; s = strtok(NULL, "/")) {
        if (!strcmp(s, ".")) continue;
        if (n == 4) return 5;
        parts[n++] = s;
    }
    return n;
}

static vt_status open_tar(ds_set *d, const char *path, const char *split, char *err, size_t errlen)
{
    d->kind = DS_TAR;
    join(d->source, sizeof d->source, path, "", "");
    int fd = open(path, O_RDONLY);
    if (fd < 0) return vt_err(err, errlen, VT_EIO, "%s: cannot open", path);
    struct stat sb;
    if (fstat(fd, &sb) || sb.st_size <= 0) { close(fd); return vt_err(err, errlen, VT_EFORMAT, "%s: empty tar file", path); }
    d->maplen = (size_t)sb.st_size;
    void *mp = mmap(NULL, d->maplen, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (mp == MAP_FAILED) { d->map = NULL; return vt_err(err, errlen, VT_EIO, "%s: cannot map", path); }
    d->map = mp;
    const uint8_t *b = d->map;
    size_t n = d->maplen, pos = 0;
    items all = {0};
    vt_status st = VT_OK;
    char longname[4096] = "";
    while (!st) {
        if (pos == n) break;
        if (n - pos < 512) { st = vt_err(err, errlen, VT_EFORMAT, "%s: truncated tar header at offset %zu", path, pos); break; }
        const uint8_t *h = b + pos;
        if (zero_block(h)) break;
        int64_t want = tar_num(h + 148, 8), sum = 0, ssum = 0;
        for (int i = 0; i < 512; i++) {
            int c = (i >= 148 && i < 156) ? ' ' : h[i];
            sum += c;
            ssum += (i >= 148 && i < 156) ? ' ' : (signed char)h[i];
        }
        if (want < 0 || (want != sum && want != ssum)) {
            st = vt_err(err, errlen, VT_EFORMAT, "%s: tar header at offset %zu has a bad checksum", path, pos);
            break;
        }
        int64_t size = tar_num(h + 124, 12);
        if (size < 0) { st = vt_err(err, errlen, VT_EFORMAT, "%s: tar header at offset %zu has a malformed size", path, pos); break; }
        size_t data = pos + 512;
        if ((uint64_t)size > n - data) {
            st = vt_err(err, errlen, VT_EFORMAT, "%s: tar entry at offset %zu is truncated (%lld bytes past the end)", path, pos,
                        (long long)((uint64_t)size - (n - data)));
            break;
        }
        char type = (char)h[156];
        char name[4096];
        if (longname[0]) {
            snprintf(name, sizeof name, "%s", longname);
            longname[0] = '\0';
        } else if (!memcmp(h + 257, "ustar", 5) && h[345]) {
            snprintf(name, sizeof name, "%.155s/%.100s", (const char *)h + 345, (const char *)h);
        } else {
            snprintf(name, sizeof name, "%.100s", (const char *)h);
        }
        if (type == 'L') {
            size_t l = (size_t)size < sizeof longname - 1 ? (size_t)size : sizeof longname - 1;
            memcpy(longname, b + data, l);
            longname[l] = '\0';
        } else if (type == 'x') {
            /* pax records "LEN key=value\n"; only path matters here */
            const char *r = (const char *)b + data, *end = r + size;
            while (r < end) {
                char *sp;
                long len = strtol(r, &sp, 10);
                if (len <= 0 || r + len > end || *sp != ' ') break;
                if (!strncmp(sp + 1, "path=", 5)) {
                    int l = (int)(r + len - (sp + 6) - 1);
                    if (l > 0 && l < (int)sizeof longname) { memcpy(longname, sp + 6, (size_t)l); longname[l] = '\0'; }
                }
                r += len;
            }
        } else if ((type == '0' || type == '\0') && is_image_name(name)) {
            char *parts[5], tmp[4096];
            snprintf(tmp, sizeof tmp, "%s", name);
            int np = split_path(tmp, parts);
            /* remember the split (or "" when flat) in cls as "split\x01class" */
            char key[4200];
            if (np == 2) snprintf(key, sizeof key, "%c%s", 1, parts[0]);
            else if (np == 3) snprintf(key, sizeof key, "%s%c%s", parts[0], 1, parts[1]);
            else np = 0;
            if (np && push(&all, key, name, data, (size_t)size)) st = vt_err(err, errlen, VT_ENOMEM, "out of memory");
        }
        pos = data + (((size_t)size + 511) & ~(size_t)511);
        if (pos > n) pos = n;
    }
    if (!st) {
        /* split layout if any entry sits under train/val/test, else flat class/file */
        const char *want = split, *alt = !strcmp(split, "test") ? "val" : !strcmp(split, "val") ? "test" : NULL;
        int has_split = 0, has_want = 0;
        for (int i = 0; i < all.n; i++) {
            const char *k = all.v[i].cls;
            if (k[0] != 1) {
                has_split = 1;
                if (!strncmp(k, want, strlen(want)) && k[strlen(want)] == 1) has_want = 1;
            }
        }
        if (has_split && !has_want && alt) want = alt;
        items sel = {0};
        for (int i = 0; i < all.n && !st; i++) {
            const char *k = all.v[i].cls, *sep = strchr(k, 1);
            int flat = k[0] == 1;
            if (has_split ? (flat || (size_t)(sep - k) != strlen(want) || strncmp(k, want, strlen(want))) : !flat) continue;
            if (push(&sel, sep + 1, all.v[i].path, all.v[i].off, all.v[i].len)) st = vt_err(err, errlen, VT_ENOMEM, "out of memory");
        }
        if (!st) st = finish_items(d, &sel, path, err, errlen);
        items_free(&sel);
    }
    items_free(&all);
    return st;
}

vt_status ds_open(const char *spec, const char *split, ds_set **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!split) split = "train";
    if (!strcmp(spec, "fashion-mnist")) spec = DS_FASHION_DIR;
    ds_set *d = calloc(1, sizeof *d);
    if (!d) return vt_err(err, errlen, VT_ENOMEM, "out of memory");
    char probe[4200];
    vt_status st;
    if (fs_is_file(spec)) {
        st = open_tar(d, spec, split, err, errlen);
    } else if (!fs_is_dir(spec)) {
        st = vt_err(err, errlen, VT_EIO, "%s: no such folder or tar file", spec);
    } else if (find_idx(spec, "train-images-idx3-ubyte", probe, sizeof probe) ||
               find_idx(spec, "t10k-images-idx3-ubyte", probe, sizeof probe)) {
        st = open_idx(d, spec, split, err, errlen);
    } else {
        const char *alt = !strcmp(split, "test") ? "val" : !strcmp(split, "val") ? "test" : NULL;
        char sub[4200];
        if (join(sub, sizeof sub, spec, "/", split) || (!fs_is_dir(sub) && alt && join(sub, sizeof sub, spec, "/", alt)))
            sub[0] = '\0';
        st = open_folder(d, fs_is_dir(sub) ? sub : spec, err, errlen);
    }
    if (st) { ds_free(d); return st; }
    *out = d;
    return VT_OK;
}

void ds_free(ds_set *d)
{
    if (!d) return;
    if (d->names)
        for (int k = 0; k < d->K; k++) free(d->names[k]);
    free(d->names);
    free(d->labels);
    free(d->pix);
    if (d->paths)
        for (int i = 0; i < d->n; i++) free(d->paths[i]);
    free(d->paths);
    if (d->map) munmap(d->map, d->maplen);
    free(d->off);
    free(d->len);
    free(d);
}

ds_kind ds_kind_of(const ds_set *d) { return d->kind; }
int ds_count(const ds_set *d) { return d->n; }
int ds_classes(const ds_set *d) { return d->K; }
const char *ds_class_name(const ds_set *d, int k) { return k >= 0 && k < d->K ? d->names[k] : NULL; }
int ds_label(const ds_set *d, int i) { return d->labels[i]; }
const char *ds_source(const ds_set *d) { return d->source; }

/* ---- transforms ------------------------------------------------------------------------------ */

static void normalise(const img_image *im, const ds_transform *t, int flip, float *out)
{
    int S = t->size, C = t->channels;
    for (int c = 0; c < C; c++) {
        float mean = t->mean[c], std = t->std[c];
        for (int y = 0; y < S; y++)
            for (int x = 0; x < S; x++) {
                int sx = flip ? S - 1 - x : x;
                out[((size_t)c * S + y) * S + x] = ((float)im->pix[((size_t)y * S + sx) * C + c] / 255.0f - mean) / std;
            }
    }
}

static vt_status eval_path(const img_image *im, const ds_transform *t, float *out, char *err, size_t errlen)
{
    img_preproc pp = {.resize = (int)floorf(t->size / t->crop_pct), .crop = t->size, .interp = t->interp};
    memcpy(pp.mean, t->mean, sizeof pp.mean);
    memcpy(pp.std, t->std, sizeof pp.std);
    return img_preprocess(im, &pp, out, err, errlen);
}

static vt_status load_idx(const ds_set *d, const ds_transform *t, int i, uint64_t *rng, float *out,
                          char *err, size_t errlen)
{
    int W = d->cols, H = d->rows, C = t->channels;
    const uint8_t *src = d->pix + (size_t)i * W * H;
    img_image im = {W, H, C, malloc((size_t)W * H * C)};
    if (!im.pix) return vt_err(err, errlen, VT_ENOMEM, "out of memory");
    int ox = 0, oy = 0, flip = 0;
    if (t->augment) {
        /* RandomCrop(size, padding=pad) on the zero-padded image, then RandomHorizontalFlip */
        ox = randint(rng, -t->pad, t->pad);
        oy = randint(rng, -t->pad, t->pad);
        flip = t->flip && unif(rng) < 0.5;
    }
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            int sx = (flip ? W - 1 - x : x) + ox, sy = y + oy;
            uint8_t v = sx >= 0 && sx < W && sy >= 0 && sy < H ? src[(size_t)sy * W + sx] : 0;
            for (int c = 0; c < C; c++) im.pix[((size_t)y * W + x) * C + c] = v;
        }
    vt_status st = eval_path(&im, t, out, err, errlen);
    free(im.pix);
    return st;
}

/* torchvision RandomResizedCrop.get_params: (top, left, height, width). */
static void rrc_params(int W, int H, float scale_min, uint64_t *rng, int *top, int *left, int *ch, int *cw)
{
    double area = (double)W * H, lr0 = log(3.0 / 4.0), lr1 = log(4.0 / 3.0);
    for (int a = 0; a < 10; a++) {
        double ta = area * (scale_min + (1.0 - scale_min) * unif(rng));
        double ar = exp(lr0 + (lr1 - lr0) * unif(rng));
        int w = (int)lround(sqrt(ta * ar)), h = (int)lround(sqrt(ta / ar));
        if (w > 0 && h > 0 && w <= W && h <= H) {
            *top = randint(rng, 0, H - h);
            *left = randint(rng, 0, W - w);
            *ch = h;
            *cw = w;
            return;
        }
    }
    double r = (double)W / H;
    int w = W, h = H;
    if (r < 3.0 / 4.0) h = (int)lround(w / (3.0 / 4.0));
    else if (r > 4.0 / 3.0) w = (int)lround(h * (4.0 / 3.0));
    if (h > H) h = H;
    if (w > W) w = W;
    *top = (H - h) / 2;
    *left = (W - w) / 2;
    *ch = h;
    *cw = w;
}

static vt_status load_photo(const ds_set *d, const ds_transform *t, int i, uint64_t *rng, float *out,
                            char *err, size_t errlen)
{
    unsigned char *own = NULL;
    const unsigned char *buf;
    size_t len;
    if (d->kind == DS_TAR) {
        buf = d->map + d->off[i];
        len = d->len[i];
    } else {
        FILE *f = fopen(d->paths[i], "rb");
        if (!f) return vt_err(err, errlen, VT_EIO, "%s: cannot open", d->paths[i]);
        fseek(f, 0, SEEK_END);
        long sz = ftell(f);
        fseek(f, 0, SEEK_SET);
        own = malloc(sz > 0 ? (size_t)sz : 1);
        len = own && sz > 0 ? fread(own, 1, (size_t)sz, f) : 0;
        fclose(f);
        if (!own || sz <= 0 || len != (size_t)sz) { free(own); return vt_err(err, errlen, VT_EIO, "%s: cannot read", d->paths[i]); }
        buf = own;
    }
    img_decode_opts dopt = {.channels = t->channels};
    img_image im = {0};
    vt_status st = img_decode(buf, len, &dopt, &im, err, errlen);
    free(own);
    if (st) {
        char tmp[512];
        snprintf(tmp, sizeof tmp, "%s", err ? err : "");
        return vt_err(err, errlen, st, "%s #%d: %s", d->source, i, tmp);
    }
    if (!t->augment) {
        st = eval_path(&im, t, out, err, errlen);
        img_free(&im);
        return st;
    }
    int top, left, ch, cw;
    rrc_params(im.width, im.height, t->scale_min > 0 ? t->scale_min : 0.08f, rng, &top, &left, &ch, &cw);
    int flip = t->flip && unif(rng) < 0.5;
    int C = im.channels;
    img_image crop = {cw, ch, C, malloc((size_t)cw * ch * C)}, rs = {0};
    if (!crop.pix) { img_free(&im); return vt_err(err, errlen, VT_ENOMEM, "out of memory"); }
    for (int y = 0; y < ch; y++)
        memcpy(crop.pix + (size_t)y * cw * C, im.pix + ((size_t)(top + y) * im.width + left) * C, (size_t)cw * C);
    img_free(&im);
    st = img_resize(&crop, t->size, t->size, t->interp, &rs, err, errlen);
    free(crop.pix);
    if (!st) normalise(&rs, t, flip, out);
    img_free(&rs);
    return st;
}

vt_status ds_load_batch(const ds_set *d, const ds_transform *t, const int *idx, int n, uint64_t seed,
                        float *out, int *labels, char *err, size_t errlen)
{
    if (t->channels != 1 && t->channels != 3) return vt_err(err, errlen, VT_EINVAL, "transform channels must be 1 or 3");
    size_t per = (size_t)t->channels * t->size * t->size;
    vt_status first = VT_OK;
    int bad = -1;
    char msg[512] = "";
    #pragma omp parallel for schedule(dynamic, 4)
    for (int k = 0; k < n; k++) {
        int i = idx[k];
        char e2[512];
        vt_status st;
        if (i < 0 || i >= d->n) {
            st = vt_err(e2, sizeof e2, VT_EINVAL, "sample %d is outside 0..%d", i, d->n - 1);
        } else {
            uint64_t rng = seed * 0x9e3779b97f4a7c15ull ^ ((uint64_t)i * 0xd1b54a32d192ed03ull + 0x632be59bd9b4e019ull);
            st = d->kind == DS_IDX ? load_idx(d, t, i, &rng, out + (size_t)k * per, e2, sizeof e2)
                                   : load_photo(d, t, i, &rng, out + (size_t)k * per, e2, sizeof e2);
            labels[k] = d->labels[i];
        }
        if (st) {
            #pragma omp critical(ds_err)
            if (bad < 0 || k < bad) { bad = k; first = st; snprintf(msg, sizeof msg, "%s", e2); }
        }
    }
    if (first) return vt_err(err, errlen, first, "%s", msg);
    return VT_OK;
}
