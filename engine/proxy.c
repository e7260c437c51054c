/* proxy.c - the proxy data set of the selection (see proxy.h). Data set formats and image
 * decoding are data.c's and image.c's; this file samples, counts failures and caches. */
#include "proxy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data.h"

#define PROBE_CHUNK 32 /* images decoded per ds_load_batch call while sampling */

struct proxy_set {
    ds_set *ds;
    ds_transform t;
    size_t per;          /* floats per image: C * S * S */
    int count, failed, available;
    int *idx;            /* (count) data set indices of the usable images, in sample order */
    float *cache;        /* (count, C, S, S) or NULL when over the budget */
    int *labels;         /* scratch for ds_load_batch */
    char first_error[512];
};

static vt_status read_images(void *ctx, int first, int n, float *out, char *err, size_t errlen)
{
    proxy_set *p = ctx;
    if (first < 0 || n < 0 || first + n > p->count)
        return vt_err(err, errlen, VT_EINVAL, "images %d..%d of a proxy set of %d", first, first + n, p->count);
    if (p->cache) {
        memcpy(out, p->cache + (size_t)first * p->per, (size_t)n * p->per * sizeof *out);
        return VT_OK;
    }
    return ds_load_batch(p->ds, &p->t, p->idx + first, n, 0, out, p->labels, err, errlen);
}

/* Decodes idx[0..n) into out (room for n images); a failed image is dropped and counted.
 * Returns the number kept, compacted to the front of idx and out. */
static int decode_keep(proxy_set *p, int *idx, int n, float *out)
{
    char e[512];
    if (ds_load_batch(p->ds, &p->t, idx, n, 0, out, p->labels, e, sizeof e) == VT_OK) return n;
    int kept = 0;
    for (int i = 0; i < n; i++) { /* someone failed: one at a time to find who */
        if (ds_load_batch(p->ds, &p->t, &idx[i], 1, 0, out + (size_t)kept * p->per, p->labels, e, sizeof e)) {
            if (!p->failed++) snprintf(p->first_error, sizeof p->first_error, "%s", e);
            continue;
        }
        idx[kept++] = idx[i];
    }
    return kept;
}

vt_status proxy_open(const char *spec, const vit_config *c, const proxy_opts *o, proxy_set **out,
                     char *err, size_t errlen)
{
    *out = NULL;
    proxy_set *p = calloc(1, sizeof *p);
    if (!p) return vt_err(err, errlen, VT_ENOMEM, "out of memory");
    vt_status st = ds_open(spec, o && o->split ? o->split : "train", &p->ds, err, errlen);
    if (st) { free(p); return st; }
    p->t = (ds_transform){.size = c->image_size, .channels = c->channels, .crop_pct = c->crop_pct,
                          .interp = c->interp};
    memcpy(p->t.mean, c->mean, sizeof p->t.mean);
    memcpy(p->t.std, c->std, sizeof p->t.std);
    p->per = (size_t)c->channels * c->image_size * c->image_size;
    p->available = ds_count(p->ds);
    int want = o && o->max_images > 0 && o->max_images < p->available ? o->max_images : p->available;
    size_t budget = o && o->cache_bytes ? o->cache_bytes : (size_t)512 << 20;
    int cache = (size_t)want * p->per * sizeof(float) <= budget;
    int *perm = malloc((size_t)p->available * sizeof *perm);
    float *chunk = malloc((size_t)PROBE_CHUNK * p->per * sizeof *chunk);
    p->idx = malloc((size_t)want * sizeof *p->idx);
    p->labels = malloc((size_t)(want > PROBE_CHUNK ? want : PROBE_CHUNK) * sizeof *p->labels);
    if (cache) p->cache = malloc((size_t)want * p->per * sizeof *p->cache);
    if (!perm || !chunk || !p->idx || !p->labels || (cache && !p->cache)) {
        st = vt_err(err, errlen, VT_ENOMEM, "out of memory for %d proxy images", want);
        goto done;
    }
    ds_shuffle(perm, p->available, o ? o->seed : 0);
    /* Walk the sample order until `want` images decoded (or the split runs out). */
    for (int at = 0; at < p->available && p->count < want;) {
        int n = want - p->count < PROBE_CHUNK ? want - p->count : PROBE_CHUNK;
        if (n > p->available - at) n = p->available - at;
        memcpy(p->idx + p->count, perm + at, (size_t)n * sizeof *perm);
        at += n;
        int kept = decode_keep(p, p->idx + p->count, n, chunk);
        if (cache) memcpy(p->cache + (size_t)p->count * p->per, chunk, (size_t)kept * p->per * sizeof *chunk);
        p->count += kept;
    }
    if (!p->count) {
        st = vt_err(err, errlen, VT_EFORMAT, "%s: none of its %d images could be decoded (first error: %s)", spec,
                    p->failed, p->first_error);
        goto done;
    }
    st = VT_OK;
done:
    free(perm);
    free(chunk);
    if (st) { proxy_free(p); return st; }
    *out = p;
    return VT_OK;
}

void proxy_free(proxy_set *p)
{
    if (!p) return;
    ds_free(p->ds);
    free(p->idx);
    free(p->cache);
    free(p->labels);
    free(p);
}

int proxy_count(const proxy_set *p) { return p->count; }
int proxy_failed(const proxy_set *p) { return p->failed; }
int proxy_available(const proxy_set *p) { return p->available; }
const char *proxy_first_error(const proxy_set *p) { return p->first_error; }
const char *proxy_source(const proxy_set *p) { return ds_source(p->ds); }

int proxy_label(const proxy_set *p, int i) { return ds_label(p->ds, p->idx[i]); }
int proxy_classes(const proxy_set *p) { return ds_classes(p->ds); }
const char *proxy_class_name(const proxy_set *p, int k) { return ds_class_name(p->ds, k); }

ent_images proxy_images(proxy_set *p)
{
    return (ent_images){.count = p->count, .read = read_images, .ctx = p};
}
