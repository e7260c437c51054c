/* image.h - image decoding (JPEG via TurboJPEG 2, PNG via libpng) and the evaluation
 * preprocessing of timm/torchvision, reproduced exactly.
 *
 * Decoding: the header is read first and width x height is checked against max_pixels before
 * any pixel buffer is allocated (decompression bombs get VT_ELIMIT). Output is 8-bit RGB
 * (channels = 3) or 8-bit gray (channels = 1), row-major, no padding. Gray, palette, alpha
 * (dropped, as PIL's convert("RGB") does), 16-bit (scaled to 8 bits) and CMYK JPEG inputs are
 * handled. EXIF orientation is applied only when asked (PyTorch pipelines ignore it).
 * Gray output from colour input uses PIL's convert("L") weights (299/587/114, fixed point).
 *
 * Preprocessing (torchvision eval transform on a PIL image):
 *   Resize(resize) on the shorter side: new_short = resize, new_long = int(resize*long/short),
 *   with Pillow's antialiased resampling (bicubic Keys a=-0.5, or bilinear), horizontal pass
 *   then vertical, each rounded and clipped to 8 bits as Pillow does;
 *   CenterCrop(crop): top = int(round((H - crop) / 2.0)), same for left;
 *   ToTensor (/255) and Normalize(mean, std); output planar float32 (C, crop, crop).
 *
 * Thread-safe: every function works on its arguments only (a TurboJPEG handle per call).
 */
#ifndef VT_IMAGE_H
#define VT_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef struct {
    int width, height, channels; /* channels 1 or 3 */
    uint8_t *pix;                /* height * width * channels bytes, owned (img_free) */
} img_image;

typedef struct {
    int channels;        /* 1 or 3: what the model takes */
    uint64_t max_pixels; /* width*height above this is VT_ELIMIT; 0 = 89478485 (Pillow's) */
    int exif_orient;     /* apply the EXIF Orientation tag of JPEGs */
} img_decode_opts;

typedef enum { IMG_BICUBIC = 0, IMG_BILINEAR = 1 } img_interp;

typedef struct {
    int resize;          /* shorter side after resizing (floor(crop / crop_pct)) */
    int crop;            /* square centre crop, = the model's image size */
    img_interp interp;
    float mean[3], std[3];
} img_preproc;

/* Detects JPEG or PNG by signature; anything else is VT_EUNSUPPORTED. */
vt_status img_decode(const void *buf, size_t len, const img_decode_opts *o, img_image *out,
                     char *err, size_t errlen);
/* Reads only the header: dimensions without decoding. */
vt_status img_probe(const void *buf, size_t len, int *width, int *height, char *err, size_t errlen);
void img_free(img_image *im); /* frees pix, zeroes the struct; NULL-safe */

/* Pillow-exact resampling of src to (w, h) into dst (allocated; img_free it). */
vt_status img_resize(const img_image *src, int w, int h, img_interp interp, img_image *dst,
                     char *err, size_t errlen);
/* Resize + centre crop + normalise into out (channels x crop x crop floats). */
vt_status img_preprocess(const img_image *src, const img_preproc *p, float *out,
                         char *err, size_t errlen);

#endif
