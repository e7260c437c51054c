/* data.h - labelled image data sets for training and evaluation, and their transforms.
 *
 * Sources (ds_open's spec):
 *   a folder of IDX files (MNIST / Fashion-MNIST layout): split "train" reads
 *     train-images-idx3-ubyte and train-labels-idx1-ubyte, split "test" (or "val") reads
 *     t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte, each optionally gzip-compressed
 *     (".gz"). The word "fashion-mnist" alone means /usr/share/datasets/fashion-mnist
 *     (Debian's dataset-fashion-mnist).
 *   an ImageFolder: a folder of class folders of images (class/file.jpg), or a folder with
 *     "train" and "val"/"test" folders of those; classes are the sorted folder names.
 *   a tar file (ustar or GNU; plain, not compressed) of class/file.jpg or split/class/file.jpg.
 * Class names: the folder names; for IDX, a labels.txt beside the files (one name per line),
 * else the Fashion-MNIST names when the folder's path says "fashion", else "0", "1", ...
 *
 * IDX format (big-endian): bytes 0-1 zero, byte 2 the element type (0x08 = unsigned byte,
 * the only one accepted), byte 3 the number of dimensions n; then n u32 sizes; then the
 * elements, row-major, exactly prod(sizes) bytes (trailing bytes are an error). Images are
 * (count, rows, cols), labels (count).
 * Tar format: 512-byte headers (name[100], mode, uid, gid, size[12] octal or base-256,
 * mtime, chksum[8], typeflag, linkname, "ustar" magic, ..., prefix[155]); file data padded to
 * 512 bytes; two zero blocks end the archive. Regular files ('0' or NUL) are read; GNU long
 * names ('L') and pax path records ('x') are honoured; other entries are skipped. A bad
 * checksum, a non-numeric size or data past the end of the file is an error.
 *
 * Transforms: the evaluation path is exactly the serving preprocessing (img_preprocess:
 * resize the shorter side to floor(S / crop_pct), centre crop S, normalise). Training
 * augmentation: for IDX images, a random crop of the image padded by `pad` zero pixels and a
 * horizontal flip, then the evaluation path; for photographs, torchvision's
 * RandomResizedCrop(S, scale=(scale_min, 1), ratio=(3/4, 4/3)) and a horizontal flip.
 * Randomness comes from (seed, sample index) only, so a seeded run is reproducible whatever
 * the threads.
 *
 * Threads: a ds_set is read-only after ds_open; ds_load_batch decodes on the caller's OpenMP
 * team. Nothing here prints.
 */
#ifndef VT_DATA_H
#define VT_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "image.h"
#include "status.h"

typedef struct ds_set ds_set;

typedef enum { DS_IDX, DS_FOLDER, DS_TAR } ds_kind;

vt_status ds_open(const char *spec, const char *split, ds_set **out, char *err, size_t errlen);
void ds_free(ds_set *d); /* NULL is a no-op */

ds_kind ds_kind_of(const ds_set *d);
int ds_count(const ds_set *d);
int ds_classes(const ds_set *d);
const char *ds_class_name(const ds_set *d, int k);
int ds_label(const ds_set *d, int i);
const char *ds_source(const ds_set *d);  /* the files read, for logs */

typedef struct {
    int size;             /* S: output side */
    int channels;         /* 1 or 3 */
    float crop_pct;       /* evaluation resize = floor(S / crop_pct) */
    img_interp interp;
    float mean[3], std[3];
    int augment;          /* 0: evaluation path; 1: training augmentation */
    int pad;              /* IDX random-crop padding (pixels) */
    int flip;             /* 1: random horizontal flip */
    float scale_min;      /* photographs: smallest crop area fraction */
} ds_transform;

/* Images idx[0..n) as (n, C, S, S) normalised floats into out and their labels. Sample
 * idx[i] draws its augmentation from (seed, idx[i]). */
vt_status ds_load_batch(const ds_set *d, const ds_transform *t, const int *idx, int n, uint64_t seed,
                        float *out, int *labels, char *err, size_t errlen);

/* perm = a seeded permutation of 0..n-1 (Fisher-Yates). */
void ds_shuffle(int *perm, int n, uint64_t seed);

/* One IDX file (gzip or plain): dims and the bytes after the header (malloc'd). */
typedef struct {
    int ndim;
    uint32_t dims[4];
    uint8_t *data;
    size_t size;
} ds_idx;
vt_status ds_idx_read(const char *path, ds_idx *out, char *err, size_t errlen);
/* The same over a buffer already in memory (uncompressed); data is copied. */
vt_status ds_idx_parse(const void *buf, size_t len, const char *what, ds_idx *out, char *err, size_t errlen);
void ds_idx_free(ds_idx *x);

#endif
