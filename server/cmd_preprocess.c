/* cmd_preprocess.c - `vitd preprocess`: decode images and write the exact tensor a model sees
 * (float32 N x C x S x S .npy), so the preprocessing can be checked against torchvision and
 * fed to `vitd logits`. The parameters come from a model's configuration or from options;
 * this command does not run a model.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "image.h"
#include "npy.h"
#include "vit.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: vitd preprocess [--model MODEL | --image-size S --crop-pct X\n"
            "                        --interpolation bicubic|bilinear --channels 1|3\n"
            "                        --mean a,b,c --std a,b,c] [--exif] IMAGE... --output X.npy\n\n"
            "Decodes JPEG/PNG images and applies the evaluation transform of timm/torchvision:\n"
            "resize the shorter side to floor(S / crop_pct), centre-crop S x S, scale to [0,1],\n"
            "normalise. Writes float32 (N, C, S, S).\n\n"
            "  --model MODEL       take S, channels, crop_pct, interpolation, mean, std from a model\n"
            "  --image-size S      crop side (default 224)\n"
            "  --crop-pct X        resize = floor(S / X) (default 0.9)\n"
            "  --interpolation I   bicubic (default) or bilinear\n"
            "  --channels C        1 (gray, PIL convert(\"L\")) or 3 (RGB, default)\n"
            "  --mean a,b,c        per-channel mean (default ImageNet 0.485,0.456,0.406)\n"
            "  --std a,b,c         per-channel std (default ImageNet 0.229,0.224,0.225)\n"
            "  --exif              apply the JPEG EXIF orientation (PyTorch pipelines do not)\n"
            "  --output X.npy      where to write the tensor\n");
}

/* "a,b,c" (or a single value, used for every channel) into v[3]; -1 when malformed. */
static int parse_triple(const char *s, float v[3])
{
    double d[3];
    int n = 0;
    char buf[256];
    if (strlen(s) >= sizeof buf) return -1;
    strcpy(buf, s);
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        if (n == 3 || cli_float(tok, &d[n]) != 0 || !isfinite(d[n])) return -1;
        n++;
    }
    if (n != 1 && n != 3) return -1;
    for (int i = 0; i < 3; i++) v[i] = (float)d[n == 1 ? 0 : i];
    return 0;
}

int cmd_preprocess(int argc, char **argv)
{
    const char *model = NULL, *output = NULL, *v;
    const char *size_s = NULL, *pct_s = NULL, *interp_s = NULL, *ch_s = NULL, *mean_s = NULL,
               *std_s = NULL;
    int exif = 0, nimg = 0, r;
    const char **images = calloc((size_t)argc + 1, sizeof *images);
    if (!images) { fprintf(stderr, "vitd preprocess: out of memory\n"); return 1; }

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); free(images); return 0; }
        if ((r = cli_opt(argc, argv, &i, "--model", &v)) != 0) model = v;
        else if ((r = cli_opt(argc, argv, &i, "--output", &v)) != 0) output = v;
        else if ((r = cli_opt(argc, argv, &i, "--image-size", &v)) != 0) size_s = v;
        else if ((r = cli_opt(argc, argv, &i, "--crop-pct", &v)) != 0) pct_s = v;
        else if ((r = cli_opt(argc, argv, &i, "--interpolation", &v)) != 0) interp_s = v;
        else if ((r = cli_opt(argc, argv, &i, "--channels", &v)) != 0) ch_s = v;
        else if ((r = cli_opt(argc, argv, &i, "--mean", &v)) != 0) mean_s = v;
        else if ((r = cli_opt(argc, argv, &i, "--std", &v)) != 0) std_s = v;
        else if (cli_opt(argc, argv, &i, "--exif", NULL) == 1) { exif = 1; r = 1; }
        else if (a[0] == '-' && a[1] != '\0') {
            fprintf(stderr, "vitd preprocess: unknown option %s\n", a);
            goto usage_error;
        } else {
            images[nimg++] = a;
            r = 1;
        }
        if (r < 0) goto usage_error;
    }
    if (!output || nimg == 0) {
        fprintf(stderr, "vitd preprocess: %s\n", !output ? "--output is required"
                                                         : "no image given");
        goto usage_error;
    }
    if (model && (size_s || pct_s || interp_s || ch_s || mean_s || std_s)) {
        fprintf(stderr, "vitd preprocess: --model takes its parameters from the model; "
                        "do not combine it with explicit ones\n");
        goto usage_error;
    }

    int S = 224, C = 3;
    double crop_pct = 0.9;
    img_preproc pp = {.interp = IMG_BICUBIC,
                      .mean = {0.485f, 0.456f, 0.406f},
                      .std = {0.229f, 0.224f, 0.225f}};
    char err[512] = "";
    if (model) {
        vit_model *m = NULL;
        vit_load_opts lo = {0};
        vt_status st = vit_load(model, &lo, &m, err, sizeof err);
        if (st) {
            /* the loader's message usually starts with the path already */
            size_t pl = strlen(model);
            const char *msg = err[0] ? err : vt_status_str(st);
            if (!strncmp(msg, model, pl) && msg[pl] == ':') msg += pl + 1 + (msg[pl + 1] == ' ');
            fprintf(stderr, "vitd preprocess: %s: %s\n", model, msg);
            free(images);
            return 1;
        }
        const vit_config *c = vit_config_of(m);
        S = c->image_size;
        C = c->channels;
        /* crop_pct is a float in the configuration; go back to the short decimal it was
         * written as (0.9f -> 0.9) so floor(S / crop_pct) is timm's double computation */
        char pb[32];
        snprintf(pb, sizeof pb, "%g", (double)c->crop_pct);
        crop_pct = strtod(pb, NULL);
        pp.interp = c->interp;
        memcpy(pp.mean, c->mean, sizeof pp.mean);
        memcpy(pp.std, c->std, sizeof pp.std);
        vit_free(m);
    } else {
        long l;
        if (size_s && cli_int(size_s, 1, 8192, &l) != 0) {
            fprintf(stderr, "vitd preprocess: --image-size must be an integer in 1..8192\n");
            goto usage_error;
        }
        if (size_s) S = (int)l;
        if (ch_s && (cli_int(ch_s, 1, 3, &l) != 0 || l == 2)) {
            fprintf(stderr, "vitd preprocess: --channels must be 1 or 3\n");
            goto usage_error;
        }
        if (ch_s) C = (int)l;
        if (pct_s && (cli_float(pct_s, &crop_pct) != 0 || !(crop_pct > 0) || !isfinite(crop_pct))) {
            fprintf(stderr, "vitd preprocess: --crop-pct must be a positive number\n");
            goto usage_error;
        }
        if (interp_s) {
            if (!strcmp(interp_s, "bicubic")) pp.interp = IMG_BICUBIC;
            else if (!strcmp(interp_s, "bilinear")) pp.interp = IMG_BILINEAR;
            else {
                fprintf(stderr, "vitd preprocess: --interpolation must be bicubic or bilinear\n");
                goto usage_error;
            }
        }
        if ((mean_s && parse_triple(mean_s, pp.mean) != 0) ||
            (std_s && parse_triple(std_s, pp.std) != 0)) {
            fprintf(stderr, "vitd preprocess: --mean/--std take 1 or 3 comma-separated numbers\n");
            goto usage_error;
        }
        for (int c = 0; c < 3; c++)
            if (pp.std[c] == 0.0f) {
                fprintf(stderr, "vitd preprocess: --std values must not be 0\n");
                goto usage_error;
            }
    }
    /* timm: scale_size = math.floor(img_size / crop_pct) */
    double rs = floor((double)S / crop_pct);
    if (S < 1 || (C != 1 && C != 3) || !(rs >= 1) || rs > 65536) {
        fprintf(stderr, "vitd preprocess: image size %d / crop_pct %g gives resize %g, "
                        "outside 1..65536 (or channels %d)\n", S, crop_pct, rs, C);
        free(images);
        return model ? 1 : 2;
    }
    pp.resize = (int)rs;
    pp.crop = S;

    size_t per = (size_t)C * S * S;
    float *out = malloc(per * (size_t)nimg * sizeof *out);
    if (!out) {
        fprintf(stderr, "vitd preprocess: no memory for %d images of %dx%dx%d\n", nimg, C, S, S);
        free(images);
        return 1;
    }
    img_decode_opts dopt = {.channels = C, .max_pixels = 0, .exif_orient = exif};
    int rc = 0;
    for (int n = 0; n < nimg && rc == 0; n++) {
        size_t len = 0;
        unsigned char *buf = cli_read_file(images[n], &len);
        if (!buf) {
            fprintf(stderr, "vitd preprocess: %s: %s\n", images[n], strerror(errno));
            rc = 1;
            break;
        }
        img_image im;
        err[0] = '\0';
        vt_status st = img_decode(buf, len, &dopt, &im, err, sizeof err);
        free(buf);
        if (!st) st = img_preprocess(&im, &pp, out + per * (size_t)n, err, sizeof err);
        img_free(&im);
        if (st) {
            fprintf(stderr, "vitd preprocess: %s: %s\n", images[n], err[0] ? err : vt_status_str(st));
            rc = 1;
        }
    }
    if (rc == 0) {
        int64_t shape[4] = {nimg, C, S, S};
        err[0] = '\0';
        vt_status st = npy_write_f32(output, out, 4, shape, err, sizeof err);
        if (st) {
            fprintf(stderr, "vitd preprocess: %s: %s\n", output, err[0] ? err : vt_status_str(st));
            rc = 1;
        }
    }
    free(out);
    free(images);
    return rc;

usage_error:
    usage(stderr);
    free(images);
    return 2;
}
