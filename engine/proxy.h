/* proxy.h - a proxy data set for the selection and the entropy analysis: images only, no
 * labels needed, decoded and preprocessed exactly as the model's serving path does.
 *
 * Sources: anything data.h's ds_open reads (a folder of IDX files, "fashion-mnist", an
 * ImageFolder, a tar of class/file.jpg|png), with the split it names. The images used are a
 * seeded sample: the data set's indices shuffled with ds_shuffle(seed), then taken in that
 * order until max_images have decoded (so a capped proxy set still spans the classes of a
 * class-sorted folder). An image that fails to decode is counted, its first error kept, and
 * skipped: not fatal unless no image at all is left (VT_EFORMAT).
 * The preprocessed images stay in memory when they fit in cache_bytes (default 512 MiB);
 * otherwise only their indices are kept and each read decodes them again.
 *
 * Threads: a proxy_set is read by one computation at a time (reads decode on the caller's
 * OpenMP team). Nothing here prints.
 */
#ifndef VT_PROXY_H
#define VT_PROXY_H

#include <stddef.h>
#include <stdint.h>

#include "entropy.h"
#include "status.h"
#include "vit.h"

typedef struct proxy_set proxy_set;

typedef struct {
    int max_images;      /* 0: every image of the split */
    uint64_t seed;       /* sampling order */
    const char *split;   /* "train" (default when NULL), "test", "val" */
    size_t cache_bytes;  /* 0: 512 MiB */
} proxy_opts;

/* Opens spec for a model of configuration c (size, channels, preprocessing). */
vt_status proxy_open(const char *spec, const vit_config *c, const proxy_opts *o, proxy_set **out,
                     char *err, size_t errlen);
void proxy_free(proxy_set *p); /* NULL is a no-op */

int proxy_count(const proxy_set *p);          /* images usable */
int proxy_failed(const proxy_set *p);         /* images that failed to decode */
int proxy_available(const proxy_set *p);      /* images in the split */
const char *proxy_first_error(const proxy_set *p); /* "" when none failed */
const char *proxy_source(const proxy_set *p); /* the files read */
/* Labels of the sampled images, for a check that needs them (the selection does not): the
 * data set's class of image i (0 <= i < proxy_count, in sample order), the number of classes
 * and the name of class k (an ImageFolder's sorted folder names). */
int proxy_label(const proxy_set *p, int i);
int proxy_classes(const proxy_set *p);
const char *proxy_class_name(const proxy_set *p, int k);
/* The images as the selection reads them; borrowed from p (valid until proxy_free). */
ent_images proxy_images(proxy_set *p);

#endif
