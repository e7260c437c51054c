/* vit_model.c - loading a ViT/DeiT checkpoint: configuration, validation, packing.
 *
 * What it is: the only place that maps timm's parameter names onto the engine's slots
 * (the tables in vit_internal.h). What it is not: the forward pass (vit_forward.c).
 *
 * Where the configuration comes from, in order: the checkpoint's "vitd.config" metadata
 * (a JSON object shaped like timm's config.json), else config.json beside
 * model.safetensors, else nothing; the architecture itself is always read off the tensor
 * shapes, and a configuration that contradicts them is an error, not a guess.
 */
#include "vit_internal.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fsutil.h"
#include "ops.h"
#include "safetensors.h"


#define X_BLOCK(slot, name, d0, d1, attn, mat) {name, {d0, d1, DIM_NONE, DIM_NONE}, attn, mat, 0},
const vit_param_spec vit_block_specs[BP_COUNT] = {VIT_BLOCK_PARAMS(X_BLOCK)};
#undef X_BLOCK
#define X_GLOBAL(slot, name, d0, d1, d2, d3, dist) {name, {d0, d1, d2, d3}, 0, 0, dist},
const vit_param_spec vit_global_specs[GP_COUNT] = {VIT_GLOBAL_PARAMS(X_GLOBAL)};
#undef X_GLOBAL

void *vit_alloc(size_t bytes)
{
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 64)) return NULL;
    return p;
}

int vit_tokens(const vit_config *c)
{
    int g = c->image_size / c->patch;
    return 1 + c->distilled + g * g;
}

int64_t vit_dim_value(const vit_config *c, int d)
{
    switch (d) {
    case DIM_1: return 1;
    case DIM_D: return c->dim;
    case DIM_3D: return 3 * (int64_t)c->dim;
    case DIM_F: return c->mlp_dim;
    case DIM_N: return vit_tokens(c);
    case DIM_C: return c->channels;
    case DIM_P: return c->patch;
    case DIM_K: return c->classes;
    }
    return -1;
}

static int spec_ndim(const vit_param_spec *s)
{
    int n = 0;
    while (n < 4 && s->d[n] != DIM_NONE) n++;
    return n;
}

static void shape_str(char *buf, size_t n, int ndim, const int64_t *shape)
{
    size_t k = 0;
    k += snprintf(buf + k, n - k, "[");
    for (int i = 0; i < ndim && k < n; i++)
        k += snprintf(buf + k, n - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
}

static vt_status check_shape(const vit_config *c, const vit_param_spec *s, const st_tensor *t,
                             char *err, size_t errlen)
{
    int64_t want[4];
    int nd = spec_ndim(s);
    for (int i = 0; i < nd; i++) want[i] = vit_dim_value(c, s->d[i]);
    int ok = t->ndim == nd;
    for (int i = 0; ok && i < nd; i++) ok = t->shape[i] == want[i];
    if (ok) return VT_OK;
    char got[96], exp[96];
    shape_str(got, sizeof got, t->ndim, t->shape);
    shape_str(exp, sizeof exp, nd, want);
    return vt_err(err, errlen, VT_ESHAPE, "tensor '%s': shape %s, expected %s for this architecture",
                  t->name, got, exp);
}

/* ---- configuration -------------------------------------------------------------------- */

/* A JSON value looked up first in pretrained_cfg, then in model_args, then at the top. */
static json_t *cfg_get(json_t *root, const char *key)
{
    const char *sections[] = {"pretrained_cfg", "model_args"};
    for (int i = 0; i < 2; i++) {
        json_t *sec = json_object_get(root, sections[i]);
        json_t *v = json_is_object(sec) ? json_object_get(sec, key) : NULL;
        if (v) return v;
    }
    return json_object_get(root, key);
}

static vt_status cfg_int(json_t *root, const char *key, int64_t have, const char *what,
                         char *err, size_t errlen)
{
    json_t *v = cfg_get(root, key);
    if (!v || json_is_null(v)) return VT_OK;
    if (!json_is_integer(v))
        return vt_err(err, errlen, VT_EFORMAT, "configuration '%s' is not an integer", key);
    if (json_integer_value(v) != have)
        return vt_err(err, errlen, VT_ESHAPE,
                      "configuration '%s' = %lld contradicts the tensors (%s = %lld)", key,
                      (long long)json_integer_value(v), what, (long long)have);
    return VT_OK;
}

static vt_status cfg_floats(json_t *root, const char *key, int n, float *out, char *err, size_t errlen)
{
    json_t *v = cfg_get(root, key);
    if (!v || json_is_null(v)) return VT_OK;
    /* timm writes one value per channel; a single value applies to all */
    if (json_is_number(v)) {
        for (int i = 0; i < n; i++) out[i] = (float)json_number_value(v);
        return VT_OK;
    }
    if (!json_is_array(v) || (json_array_size(v) != (size_t)n && json_array_size(v) != 1))
        return vt_err(err, errlen, VT_EFORMAT, "configuration '%s' must hold %d numbers", key, n);
    for (int i = 0; i < n; i++) {
        json_t *e = json_array_get(v, json_array_size(v) == 1 ? 0 : (size_t)i);
        if (!json_is_number(e))
            return vt_err(err, errlen, VT_EFORMAT, "configuration '%s' must hold numbers", key);
        out[i] = (float)json_number_value(e);
    }
    return VT_OK;
}

static vt_status parse_blocks_json(json_t *v, int depth, uint64_t *mask, char *err, size_t errlen)
{
    if (!json_is_array(v))
        return vt_err(err, errlen, VT_EFORMAT, "configuration 'removed_blocks' must be a list of block indices");
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e) {
        if (!json_is_integer(e) || json_integer_value(e) < 0 || json_integer_value(e) >= depth)
            return vt_err(err, errlen, VT_EFORMAT, "configuration 'removed_blocks': entry %zu is not a block index below %d", i, depth);
        *mask |= 1ull << json_integer_value(e);
    }
    return VT_OK;
}

static vt_status parse_blocks_str(const char *s, int depth, uint64_t *mask, char *err, size_t errlen)
{
    while (*s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 0 || v >= depth)
            return vt_err(err, errlen, VT_EFORMAT, "metadata 'vitd.removed_blocks' = '%s' is not a list of block indices below %d", s, depth);
        *mask |= 1ull << v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return vt_err(err, errlen, VT_EFORMAT, "metadata 'vitd.removed_blocks' is malformed");
    }
    return VT_OK;
}

/* Applies a timm-style configuration: heads, preprocessing, labels, removed blocks, and
 * checks the architecture numbers it states against the shapes. */
static vt_status apply_config(vit_model *m, json_t *root, char *err, size_t errlen)
{
    vit_config *c = &m->cfg;
    vt_status st;
    if (!json_is_object(root)) return vt_err(err, errlen, VT_EFORMAT, "configuration is not a JSON object");
    json_t *v = cfg_get(root, "num_heads");
    if (v && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) <= 0 || json_integer_value(v) > c->dim ||
            c->dim % json_integer_value(v))
            return vt_err(err, errlen, VT_ESHAPE, "configuration 'num_heads' must divide the width %d", c->dim);
        c->heads = (int)json_integer_value(v);
    }
    if ((st = cfg_int(root, "embed_dim", c->dim, "width", err, errlen)) ||
        (st = cfg_int(root, "patch_size", c->patch, "patch", err, errlen)) ||
        (st = cfg_int(root, "in_chans", c->channels, "channels", err, errlen)) ||
        (st = cfg_int(root, "img_size", c->image_size, "image size", err, errlen)) ||
        (st = cfg_int(root, "depth", c->depth, "depth", err, errlen)) ||
        (st = cfg_int(root, "num_classes", c->classes, "classes", err, errlen)))
        return st;
    v = cfg_get(root, "input_size");
    if (v && json_is_array(v) && json_array_size(v) == 3) {
        json_t *ch = json_array_get(v, 0), *h = json_array_get(v, 1), *w = json_array_get(v, 2);
        if (json_integer_value(ch) != c->channels || json_integer_value(h) != c->image_size ||
            json_integer_value(w) != c->image_size)
            return vt_err(err, errlen, VT_ESHAPE, "configuration 'input_size' contradicts the tensors ([%d, %d, %d])",
                          c->channels, c->image_size, c->image_size);
    }
    v = cfg_get(root, "crop_pct");
    if (v && !json_is_null(v)) {
        if (!json_is_number(v) || json_number_value(v) <= 0 || json_number_value(v) > 1)
            return vt_err(err, errlen, VT_EFORMAT, "configuration 'crop_pct' must be in (0, 1]");
        c->crop_pct = (float)json_number_value(v);
    }
    v = cfg_get(root, "interpolation");
    if (v && !json_is_null(v)) {
        const char *s = json_string_value(v);
        if (s && !strcmp(s, "bicubic")) c->interp = IMG_BICUBIC;
        else if (s && !strcmp(s, "bilinear")) c->interp = IMG_BILINEAR;
        else return vt_err(err, errlen, VT_EUNSUPPORTED, "configuration 'interpolation' must be bicubic or bilinear");
    }
    int nc = c->channels < 3 ? c->channels : 3;
    if ((st = cfg_floats(root, "mean", nc, c->mean, err, errlen)) ||
        (st = cfg_floats(root, "std", nc, c->std, err, errlen)))
        return st;
    for (int i = 0; i < nc; i++)
        if (!(c->std[i] > 0)) return vt_err(err, errlen, VT_EFORMAT, "configuration 'std' must be positive");
    v = cfg_get(root, "removed_blocks");
    if (v && !json_is_null(v) && (st = parse_blocks_json(v, c->depth, &c->removed, err, errlen))) return st;
    v = cfg_get(root, "label_names");
    if (v && !json_is_null(v)) {
        if (!json_is_array(v) || json_array_size(v) != (size_t)c->classes)
            return vt_err(err, errlen, VT_EFORMAT, "configuration 'label_names' must list %d names", c->classes);
        if (!(m->labels = calloc((size_t)c->classes, sizeof *m->labels))) return VT_ENOMEM;
        for (int k = 0; k < c->classes; k++) {
            const char *s = json_string_value(json_array_get(v, (size_t)k));
            if (!s) return vt_err(err, errlen, VT_EFORMAT, "configuration 'label_names' entry %d is not a string", k);
            if (!(m->labels[k] = strdup(s))) return VT_ENOMEM;
        }
    }
    return VT_OK;
}

/* ---- architecture from shapes ---------------------------------------------------------- */

static const st_tensor *need(const st_file *f, const char *name, int ndim, char *err, size_t errlen)
{
    const st_tensor *t = st_find(f, name);
    if (!t) { vt_err(err, errlen, VT_ESHAPE, "tensor '%s' is missing: not a ViT/DeiT checkpoint", name); return NULL; }
    if (t->ndim != ndim) {
        vt_err(err, errlen, VT_ESHAPE, "tensor '%s' has %d dimensions, expected %d", name, t->ndim, ndim);
        return NULL;
    }
    return t;
}

/* Parses "blocks.<i>.<suffix>"; returns i or -1. */
static int block_index(const char *name, const char **suffix)
{
    if (strncmp(name, "blocks.", 7)) return -1;
    const char *p = name + 7;
    if (*p < '0' || *p > '9') return -1;
    long i = 0;
    while (*p >= '0' && *p <= '9' && i < 100000) i = i * 10 + (*p++ - '0');
    if (*p != '.') return -1;
    *suffix = p + 1;
    return (int)i;
}

static vt_status infer_arch(vit_config *c, const st_file *f, char *err, size_t errlen)
{
    const st_tensor *cls, *pw, *pos, *fc1, *head;
    if (!(cls = need(f, "cls_token", 3, err, errlen)) || !(pw = need(f, "patch_embed.proj.weight", 4, err, errlen)) ||
        !(pos = need(f, "pos_embed", 3, err, errlen)) || !(fc1 = need(f, "blocks.0.mlp.fc1.weight", 2, err, errlen)) ||
        !(head = need(f, "head.weight", 2, err, errlen)))
        return VT_ESHAPE;
    if (pw->shape[2] != pw->shape[3])
        return vt_err(err, errlen, VT_EUNSUPPORTED, "tensor 'patch_embed.proj.weight': non-square patches");
    c->dim = (int)cls->shape[2];
    c->channels = (int)pw->shape[1];
    c->patch = (int)pw->shape[2];
    c->mlp_dim = (int)fc1->shape[0];
    c->classes = (int)head->shape[0];
    c->distilled = st_find(f, "dist_token") != NULL;
    if (c->dim <= 0 || c->dim > 16384 || c->channels <= 0 || c->channels > 4 || c->patch <= 0 ||
        c->patch > 1024 || c->mlp_dim <= 0 || c->mlp_dim > 65536 || c->classes <= 0 || c->classes > 1000000)
        return vt_err(err, errlen, VT_ESHAPE, "implausible dimensions: width %d, channels %d, patch %d, mlp %d, classes %d",
                      c->dim, c->channels, c->patch, c->mlp_dim, c->classes);
    int64_t np = pos->shape[1] - 1 - c->distilled;
    int64_t g = (int64_t)llround(sqrt((double)(np > 0 ? np : 0)));
    if (np <= 0 || g * g != np || g > 1024)
        return vt_err(err, errlen, VT_ESHAPE, "tensor 'pos_embed': %lld positions is not 1%s + a square number of patches",
                      (long long)pos->shape[1], c->distilled ? " + 1" : "");
    c->image_size = (int)(g * c->patch);
    int depth = 0;
    for (int i = 0; i < st_count(f); i++) {
        const char *suf;
        int b = block_index(st_at(f, i)->name, &suf);
        if (b >= depth) depth = b + 1;
    }
    if (depth > VIT_MAX_DEPTH) return vt_err(err, errlen, VT_EUNSUPPORTED, "depth %d is over the limit of %d blocks", depth, VIT_MAX_DEPTH);
    c->depth = depth;
    c->heads = c->dim % 64 == 0 ? c->dim / 64 : 0; /* DeiT's head width; a configuration may say otherwise */
    c->ln_eps = 1e-6f;
    /* DeiT's ImageNet evaluation preprocessing (timm's deit cfgs) */
    c->crop_pct = 0.9f;
    c->interp = IMG_BICUBIC;
    const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
    for (int i = 0; i < 3; i++) {
        c->mean[i] = c->channels == 3 ? mean[i] : 0.5f;
        c->std[i] = c->channels == 3 ? std[i] : 0.5f;
    }
    return VT_OK;
}

/* ---- loading ----------------------------------------------------------------------------- */

static vt_status read_tensor(vit_model *m, const st_file *f, const st_tensor *t, float **out,
                             char *err, size_t errlen)
{
    float *buf = vit_alloc(t->numel * sizeof(float));
    if (!buf) return vt_err(err, errlen, VT_ENOMEM, "out of memory for tensor '%s'", t->name);
    vt_status st = st_read_f32(f, t, buf, t->numel, err, errlen);
    if (st) { free(buf); return st; }
    for (uint64_t i = 0; i < t->numel; i++)
        if (!isfinite(buf[i])) {
            free(buf);
            return vt_err(err, errlen, VT_EFORMAT, "tensor '%s' holds a non-finite value at index %llu",
                          t->name, (unsigned long long)i);
        }
    m->params += t->numel;
    *out = buf;
    return VT_OK;
}

/* Packs a (O, I) matrix; keeps the plain copy only with keep_plain. */
static vt_status pack_matrix(vit_model *m, float **plain, int I, int O, int mat, float **packed,
                             char *err, size_t errlen)
{
    size_t bytes;
    vt_status st = op_pack(*plain, I, O, &m->wmd[mat], packed, &bytes, err, errlen);
    if (st) return st;
    m->bytes += bytes;
    if (!m->keep_plain) { free(*plain); *plain = NULL; }
    else m->bytes += (size_t)I * O * sizeof(float);
    return VT_OK;
}

static vt_status choose_layouts(vit_model *m, char *err, size_t errlen)
{
    const vit_config *c = &m->cfg;
    int N = vit_tokens(c), g = c->image_size / c->patch;
    struct { int M, I, O; } shp[MAT_COUNT] = {
        [MAT_QKV] = {N, c->dim, 3 * c->dim}, [MAT_PROJ] = {N, c->dim, c->dim},
        [MAT_FC1] = {N, c->dim, c->mlp_dim}, [MAT_FC2] = {N, c->mlp_dim, c->dim},
        [MAT_PATCH] = {g * g, c->channels * c->patch * c->patch, c->dim}, [MAT_HEAD] = {1, c->dim, c->classes},
    };
    for (int i = 0; i < MAT_COUNT; i++) {
        op_prim p;
        vt_status st = op_linear(&p, shp[i].M, shp[i].I, shp[i].O, NULL, 0, err, errlen);
        if (st) return st;
        m->wmd[i] = p.wei_md;
        op_prim_free(&p);
    }
    return VT_OK;
}

static vt_status load_block(vit_model *m, const st_file *f, int b, char *err, size_t errlen)
{
    vit_config *c = &m->cfg;
    vit_block *blk = &m->blocks[b];
    int removed = (c->removed >> b) & 1;
    char name[160];
    vt_status st;
    for (int s = 0; s < BP_COUNT; s++) {
        if (removed && vit_block_specs[s].attn) continue;
        snprintf(name, sizeof name, "blocks.%d.%s", b, vit_block_specs[s].name);
        const st_tensor *t = st_find(f, name);
        if (!t) return vt_err(err, errlen, VT_ESHAPE, "tensor '%s' is missing", name);
        if ((st = check_shape(c, &vit_block_specs[s], t, err, errlen)) ||
            (st = read_tensor(m, f, t, &blk->p[s], err, errlen)))
            return st;
        if (!vit_block_specs[s].matrix) m->bytes += t->numel * sizeof(float);
    }
    if (!removed) {
        /* Fold timm's scale Dh^-0.5 into the Q rows (the first D rows of qkv), so the
         * attention matmul needs no output scale. The plain copy stays as timm has it. */
        int D = c->dim;
        float scale = 1.0f / sqrtf((float)(D / c->heads));
        float *w = vit_alloc((size_t)3 * D * D * sizeof(float));
        if (!w || !(blk->qkv_b_scaled = vit_alloc((size_t)3 * D * sizeof(float)))) {
            free(w);
            return vt_err(err, errlen, VT_ENOMEM, "out of memory for block %d", b);
        }
        memcpy(w, blk->p[BP_QKV_W], (size_t)3 * D * D * sizeof(float));
        memcpy(blk->qkv_b_scaled, blk->p[BP_QKV_B], (size_t)3 * D * sizeof(float));
        for (size_t i = 0; i < (size_t)D * D; i++) w[i] *= scale;
        for (int i = 0; i < D; i++) blk->qkv_b_scaled[i] *= scale;
        if (!m->keep_plain) { free(blk->p[BP_QKV_B]); blk->p[BP_QKV_B] = NULL; } /* replaced by the scaled copy */
        else m->bytes += (size_t)3 * D * sizeof(float);
        st = op_pack(w, D, 3 * D, &m->wmd[MAT_QKV], &blk->packed[MAT_QKV], &(size_t){0}, err, errlen);
        free(w);
        if (st) return st;
        m->bytes += dnnl_memory_desc_get_size(&m->wmd[MAT_QKV]);
        if (!m->keep_plain) { free(blk->p[BP_QKV_W]); blk->p[BP_QKV_W] = NULL; }
        else m->bytes += (size_t)3 * D * D * sizeof(float);
        if ((st = pack_matrix(m, &blk->p[BP_PROJ_W], D, D, MAT_PROJ, &blk->packed[MAT_PROJ], err, errlen)))
            return st;
    }
    if ((st = pack_matrix(m, &blk->p[BP_FC1_W], c->dim, c->mlp_dim, MAT_FC1, &blk->packed[MAT_FC1], err, errlen)) ||
        (st = pack_matrix(m, &blk->p[BP_FC2_W], c->mlp_dim, c->dim, MAT_FC2, &blk->packed[MAT_FC2], err, errlen)))
        return st;
    return VT_OK;
}

/* Every tensor in the file must be a known parameter of this architecture (so that, say,
 * a LayerScale checkpoint is refused rather than silently run without its scales), except
 * the attention tensors of blocks marked removed, which official checkpoints still carry. */
static vt_status check_names(const vit_config *c, const st_file *f, uint64_t marked, char *err, size_t errlen)
{
    for (int i = 0; i < st_count(f); i++) {
        const st_tensor *t = st_at(f, i);
        const char *suf;
        int b = block_index(t->name, &suf), known = 0;
        if (b >= 0) {
            for (int s = 0; s < BP_COUNT && !known; s++) known = !strcmp(suf, vit_block_specs[s].name);
        } else {
            for (int s = 0; s < GP_COUNT && !known; s++)
                known = !strcmp(t->name, vit_global_specs[s].name) && (!vit_global_specs[s].distilled || c->distilled);
        }
        if (!known) return vt_err(err, errlen, VT_EUNSUPPORTED, "tensor '%s' is not a parameter of a ViT/DeiT model", t->name);
        (void)marked;
    }
    return VT_OK;
}

/* Blocks whose attention tensors are all absent are removed; some present and some absent
 * is a damaged file. */
static vt_status detect_removed(vit_config *c, const st_file *f, char *err, size_t errlen)
{
    char name[160];
    for (int b = 0; b < c->depth; b++) {
        if ((c->removed >> b) & 1) continue;
        int present = 0, absent = 0;
        const char *missing = NULL;
        for (int s = 0; s < BP_COUNT; s++) {
            if (!vit_block_specs[s].attn) continue;
            snprintf(name, sizeof name, "blocks.%d.%s", b, vit_block_specs[s].name);
            if (st_find(f, name)) present++;
            else { absent++; missing = vit_block_specs[s].name; }
        }
        if (present && absent)
            return vt_err(err, errlen, VT_ESHAPE, "tensor 'blocks.%d.%s' is missing (the block's other attention tensors are present)", b, missing);
        if (!present) c->removed |= 1ull << b;
    }
    return VT_OK;
}

vt_status vit_load(const char *path, const vit_load_opts *o, vit_model **out, char *err, size_t errlen)
{
    char file[4096], cfgpath[4096];
    struct stat sb;
    st_file *f = NULL;
    json_t *cfgj = NULL;
    vt_status st;
    *out = NULL;
    if (stat(path, &sb) != 0) return vt_err(err, errlen, VT_EIO, "%s: no such file or folder", path);
    cfgpath[0] = '\0';
    if (S_ISDIR(sb.st_mode)) {
        snprintf(file, sizeof file, "%s/model.safetensors", path);
        snprintf(cfgpath, sizeof cfgpath, "%s/config.json", path);
    } else {
        snprintf(file, sizeof file, "%s", path);
        const char *slash = strrchr(path, '/');
        const char *base = slash ? slash + 1 : path;
        if (!strcmp(base, "model.safetensors"))
            snprintf(cfgpath, sizeof cfgpath, "%.*sconfig.json", (int)(base - path), path);
    }
    vit_model *m = calloc(1, sizeof *m);
    if (!m) return vt_err(err, errlen, VT_ENOMEM, "out of memory");
    m->keep_plain = o && o->keep_plain;
    if ((st = st_open(file, &f, err, errlen))) goto fail;
    vit_config *c = &m->cfg;
    if ((st = infer_arch(c, f, err, errlen))) goto fail;

    const char *meta = st_meta(f, "vitd.config");
    json_error_t jerr;
    if (meta) {
        if (!(cfgj = json_loads(meta, JSON_REJECT_DUPLICATES, &jerr))) {
            st = vt_err(err, errlen, VT_EFORMAT, "metadata 'vitd.config' is not valid JSON: %s", jerr.text);
            goto fail;
        }
        snprintf(m->source, sizeof m->source, "checkpoint metadata (vitd.config)");
    } else if (cfgpath[0] && fs_is_file(cfgpath)) {
        if (!(cfgj = json_load_file(cfgpath, JSON_REJECT_DUPLICATES, &jerr))) {
            st = vt_err(err, errlen, VT_EFORMAT, "%s: not valid JSON (line %d: %s)", cfgpath, jerr.line, jerr.text);
            goto fail;
        }
        snprintf(m->source, sizeof m->source, "config.json");
    } else {
        snprintf(m->source, sizeof m->source, "tensor shapes (DeiT ImageNet defaults)");
    }
    if (cfgj && (st = apply_config(m, cfgj, err, errlen))) goto fail;
    if (!c->heads) {
        st = vt_err(err, errlen, VT_ESHAPE, "cannot infer the number of heads: width %d is not a multiple of 64 and no configuration gives num_heads", c->dim);
        goto fail;
    }
    const char *rm = st_meta(f, "vitd.removed_blocks");
    if (rm && (st = parse_blocks_str(rm, c->depth, &c->removed, err, errlen))) goto fail;
    if ((st = check_names(c, f, c->removed, err, errlen)) || (st = detect_removed(c, f, err, errlen))) goto fail;

    /* globals: check every expected tensor's shape before reading anything */
    for (int s = 0; s < GP_COUNT; s++) {
        if (vit_global_specs[s].distilled && !c->distilled) continue;
        const st_tensor *t = st_find(f, vit_global_specs[s].name);
        if (!t) { st = vt_err(err, errlen, VT_ESHAPE, "tensor '%s' is missing", vit_global_specs[s].name); goto fail; }
        if ((st = check_shape(c, &vit_global_specs[s], t, err, errlen))) goto fail;
    }
    if ((st = choose_layouts(m, err, errlen))) goto fail;
    for (int s = 0; s < GP_COUNT; s++) {
        if (vit_global_specs[s].distilled && !c->distilled) continue;
        const st_tensor *t = st_find(f, vit_global_specs[s].name);
        if ((st = read_tensor(m, f, t, &m->g[s], err, errlen))) goto fail;
        if (s != GP_PATCH_W && s != GP_HEAD_W && s != GP_HEADD_W) m->bytes += t->numel * sizeof(float);
    }
    if ((st = pack_matrix(m, &m->g[GP_PATCH_W], c->channels * c->patch * c->patch, c->dim, MAT_PATCH,
                          &m->patch_packed, err, errlen)) ||
        (st = pack_matrix(m, &m->g[GP_HEAD_W], c->dim, c->classes, MAT_HEAD, &m->head_packed[0], err, errlen)))
        goto fail;
    if (c->distilled &&
        (st = pack_matrix(m, &m->g[GP_HEADD_W], c->dim, c->classes, MAT_HEAD, &m->head_packed[1], err, errlen)))
        goto fail;
    if (!(m->blocks = calloc((size_t)c->depth, sizeof *m->blocks))) { st = vt_err(err, errlen, VT_ENOMEM, "out of memory"); goto fail; }
    for (int b = 0; b < c->depth; b++)
        if ((st = load_block(m, f, b, err, errlen))) goto fail;
    json_decref(cfgj);
    st_close(f);
    *out = m;
    return VT_OK;
fail:
    json_decref(cfgj);
    st_close(f);
    vit_free(m);
    return st;
}

void vit_free(vit_model *m)
{
    if (!m) return;
    if (m->blocks) {
        for (int b = 0; b < m->cfg.depth; b++) {
            for (int s = 0; s < BP_COUNT; s++) free(m->blocks[b].p[s]);
            for (int k = 0; k < 4; k++) free(m->blocks[b].packed[k]);
            free(m->blocks[b].qkv_b_scaled);
        }
        free(m->blocks);
    }
    for (int s = 0; s < GP_COUNT; s++) free(m->g[s]);
    free(m->patch_packed);
    free(m->head_packed[0]);
    free(m->head_packed[1]);
    if (m->labels)
        for (int k = 0; k < m->cfg.classes; k++) free(m->labels[k]);
    free(m->labels);
    free(m);
}

const vit_config *vit_config_of(const vit_model *m) { return &m->cfg; }
const char *vit_label(const vit_model *m, int k)
{
    return m->labels && k >= 0 && k < m->cfg.classes ? m->labels[k] : NULL;
}
const char *vit_source(const vit_model *m) { return m->source; }
uint64_t vit_param_count(const vit_model *m) { return m->params; }
uint64_t vit_weight_bytes(const vit_model *m) { return m->bytes; }

uint64_t vit_params(const vit_config *c, uint64_t removed)
{
    uint64_t D = (uint64_t)c->dim, F = (uint64_t)c->mlp_dim, K = (uint64_t)c->classes;
    uint64_t N = (uint64_t)vit_tokens(c), cpp = (uint64_t)c->channels * c->patch * c->patch;
    uint64_t n = D * cpp + D + D * (1 + (uint64_t)c->distilled) + N * D + 2 * D + (K * D + K) * (1 + (uint64_t)c->distilled);
    for (int b = 0; b < c->depth; b++) {
        n += 2 * D + F * D + F + D * F + D;
        if (!(((c->removed | removed) >> b) & 1)) n += 2 * D + 3 * D * D + 3 * D + D * D + D;
    }
    return n;
}

uint64_t vit_macs(const vit_config *c, uint64_t removed)
{
    uint64_t D = (uint64_t)c->dim, F = (uint64_t)c->mlp_dim, K = (uint64_t)c->classes;
    uint64_t N = (uint64_t)vit_tokens(c), g = (uint64_t)(c->image_size / c->patch);
    uint64_t n = g * g * (uint64_t)c->channels * c->patch * c->patch * D + D * K * (1 + (uint64_t)c->distilled);
    for (int b = 0; b < c->depth; b++) {
        n += 2 * N * D * F;
        if (!(((c->removed | removed) >> b) & 1)) n += 4 * N * D * D + 2 * N * N * D;
    }
    return n;
}
