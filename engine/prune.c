/* prune.c - the pruned checkpoint writer (format in prune.h). It copies tensors and
 * metadata and rewrites the configuration; it does not choose blocks (select.c) and it does
 * not know the forward pass (it checks its output by loading it with vit_load). */
#include "prune.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fsutil.h"
#include "safetensors.h"
#include "sha256.h"
#include "vit.h"

static const char *const replaced_keys[] = {"vitd.removed_blocks", "vitd.config", "vitd.parent_sha256",
                                            "vitd.selection"};

static int is_replaced(const char *key)
{
    for (size_t i = 0; i < sizeof replaced_keys / sizeof *replaced_keys; i++)
        if (!strcmp(key, replaced_keys[i])) return 1;
    return 0;
}

/* Is name blocks.<i>.norm1.* or blocks.<i>.attn.* with i in removed? */
static int is_cut(const char *name, uint64_t removed)
{
    if (strncmp(name, "blocks.", 7)) return 0;
    char *end;
    long b = strtol(name + 7, &end, 10);
    if (end == name + 7 || *end != '.' || b < 0 || b >= 64 || !((removed >> b) & 1)) return 0;
    return !strncmp(end + 1, "norm1.", 6) || !strncmp(end + 1, "attn.", 5);
}

/* The parent's .safetensors file and the config.json that vit_load would read beside it. */
static void parent_paths(const char *parent, char *file, size_t fn, char *cfg, size_t cn)
{
    cfg[0] = '\0';
    if (fs_is_dir(parent)) {
        snprintf(file, fn, "%s/model.safetensors", parent);
        snprintf(cfg, cn, "%s/config.json", parent);
        return;
    }
    snprintf(file, fn, "%s", parent);
    const char *slash = strrchr(parent, '/');
    const char *base = slash ? slash + 1 : parent;
    if (!strcmp(base, "model.safetensors")) snprintf(cfg, cn, "%.*sconfig.json", (int)(base - parent), parent);
}

/* The configuration JSON of the output, as a compact string (malloc'd). */
static vt_status new_config(const st_file *f, const char *cfgpath, uint64_t removed, char **out,
                            char *err, size_t errlen)
{
    json_error_t je;
    json_t *root = NULL;
    const char *meta = st_meta(f, "vitd.config");
    if (meta) {
        if (!(root = json_loads(meta, JSON_REJECT_DUPLICATES, &je)))
            return vt_err(err, errlen, VT_EFORMAT, "parent metadata 'vitd.config' is not valid JSON: %s", je.text);
    } else if (cfgpath[0] && fs_is_file(cfgpath)) {
        if (!(root = json_load_file(cfgpath, JSON_REJECT_DUPLICATES, &je)))
            return vt_err(err, errlen, VT_EFORMAT, "%s: not valid JSON: %s", cfgpath, je.text);
    } else {
        root = json_object();
    }
    if (!json_is_object(root)) {
        json_decref(root);
        return vt_err(err, errlen, VT_EFORMAT, "the parent's configuration is not a JSON object");
    }
    const char *sections[] = {"pretrained_cfg", "model_args"};
    for (int i = 0; i < 2; i++) {
        json_t *sec = json_object_get(root, sections[i]);
        if (json_is_object(sec)) json_object_del(sec, "removed_blocks");
    }
    json_t *list = json_array();
    for (int b = 0; b < 64; b++)
        if ((removed >> b) & 1) json_array_append_new(list, json_integer(b));
    json_object_set_new(root, "removed_blocks", list);
    *out = json_dumps(root, JSON_COMPACT | JSON_REAL_PRECISION(17));
    json_decref(root);
    return *out ? VT_OK : vt_err(err, errlen, VT_ENOMEM, "out of memory");
}

vt_status prune_write(const char *parent, uint64_t removed, const char *selection_json, const char *out,
                      char parent_sha256[65], char *err, size_t errlen)
{
    char file[4096], cfgpath[4096], outfile[4096], hex[65], list[256];
    st_file *f = NULL;
    st_writer *w = NULL;
    float **bufs = NULL;
    char *config = NULL;
    vit_model *check = NULL;
    vt_status st;
    int n = 0;

    parent_paths(parent, file, sizeof file, cfgpath, sizeof cfgpath);
    if (fs_is_dir(out)) snprintf(outfile, sizeof outfile, "%s/model.safetensors", out);
    else snprintf(outfile, sizeof outfile, "%s", out);
    if ((st = sha256_file(file, hex, err, errlen))) return st;
    if ((st = st_open(file, &f, err, errlen))) return st;
    n = st_count(f);
    if (!(w = st_writer_new()) || !(bufs = calloc((size_t)n + 1, sizeof *bufs))) {
        st = vt_err(err, errlen, VT_ENOMEM, "out of memory");
        goto done;
    }
    for (int i = 0; i < n; i++) {
        const st_tensor *t = st_at(f, i);
        if (is_cut(t->name, removed)) continue;
        size_t numel = t->numel ? (size_t)t->numel : 1;
        if (!(bufs[i] = malloc(numel * sizeof(float)))) {
            st = vt_err(err, errlen, VT_ENOMEM, "out of memory for tensor '%s'", t->name);
            goto done;
        }
        if ((st = st_read_f32(f, t, bufs[i], numel, err, errlen))) goto done;
        if ((st = st_writer_add_f32(w, t->name, bufs[i], t->ndim, t->shape))) {
            vt_err(err, errlen, st, "cannot add tensor '%s' to the output", t->name);
            goto done;
        }
    }
    for (int i = 0; i < st_meta_count(f); i++) {
        const char *k, *v;
        st_meta_at(f, i, &k, &v);
        if (!is_replaced(k) && (st = st_writer_meta(w, k, v))) {
            vt_err(err, errlen, st, "cannot copy metadata '%s'", k);
            goto done;
        }
    }
    size_t at = 0;
    list[0] = '\0';
    for (int b = 0; b < 64 && at < sizeof list; b++)
        if ((removed >> b) & 1) at += (size_t)snprintf(list + at, sizeof list - at, "%s%d", at ? "," : "", b);
    if ((st = new_config(f, cfgpath, removed, &config, err, errlen))) goto done;
    if ((st = st_writer_meta(w, "vitd.removed_blocks", list)) || (st = st_writer_meta(w, "vitd.config", config)) ||
        (st = st_writer_meta(w, "vitd.parent_sha256", hex)) ||
        (selection_json && (st = st_writer_meta(w, "vitd.selection", selection_json)))) {
        vt_err(err, errlen, st, "cannot set the output's metadata");
        goto done;
    }
    if ((st = st_writer_save(w, outfile, err, errlen))) goto done;

    /* The output must load on its own, with exactly these blocks removed. */
    char lerr[512];
    if ((st = vit_load(outfile, NULL, &check, lerr, sizeof lerr))) {
        vt_err(err, errlen, st, "the pruned checkpoint %s does not load: %s", outfile, lerr);
        goto done;
    }
    if (vit_config_of(check)->removed != removed) {
        st = vt_err(err, errlen, VT_EFORMAT, "the pruned checkpoint %s loads with removed blocks %#llx, expected %#llx",
                    outfile, (unsigned long long)vit_config_of(check)->removed, (unsigned long long)removed);
        goto done;
    }
    if (parent_sha256) memcpy(parent_sha256, hex, 65);
done:
    vit_free(check);
    free(config);
    if (bufs)
        for (int i = 0; i < n; i++) free(bufs[i]);
    free(bufs);
    st_writer_free(w);
    st_close(f);
    return st;
}
