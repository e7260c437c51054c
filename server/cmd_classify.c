/* cmd_classify.c - `vitd classify`: image files in, labels and probabilities out. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "image.h"
#include "vit.h"

typedef struct { float p; int k; } scored;

static int by_score(const void *a, const void *b)
{
    const scored *x = a, *y = b;
    if (x->p != y->p) return x->p < y->p ? 1 : -1;
    return x->k - y->k;
}

/* JSON string body with the few escapes a label can need. */
static void json_str(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') printf("\\%c", *s);
        else if ((unsigned char)*s < 0x20) printf("\\u%04x", *s);
        else putchar(*s);
    }
    putchar('"');
}

int cmd_classify(int argc, char **argv)
{
    const char *model = NULL, *topk_s = NULL;
    int json = 0, exif = 0, nimg = 0;
    char **imgs = calloc((size_t)argc, sizeof *imgs);
    if (!imgs) return 1;
    for (int i = 1; i < argc; i++) {
        int r;
        if (!strcmp(argv[i], "--help")) {
            printf("usage: vitd classify --model MODEL [--top-k K] [--json] [--exif] IMAGE...\n"
                   "  Decodes each JPEG/PNG, preprocesses it as the model's configuration says,\n"
                   "  and prints the K most probable classes (softmax of the logits).\n"
                   "  --exif  apply the EXIF orientation tag (PyTorch pipelines do not)\n");
            free(imgs);
            return 0;
        }
        if ((r = cli_opt(argc, argv, &i, "--model", &model)) || (r = cli_opt(argc, argv, &i, "--top-k", &topk_s))) {
            if (r < 0) { free(imgs); return 2; }
        } else if (!strcmp(argv[i], "--json")) json = 1;
        else if (!strcmp(argv[i], "--exif")) exif = 1;
        else if (argv[i][0] == '-' && argv[i][1]) { fprintf(stderr, "vitd classify: unknown option %s\n", argv[i]); free(imgs); return 2; }
        else imgs[nimg++] = argv[i];
    }
    long topk = 5;
    if (!model || !nimg || (topk_s && cli_int(topk_s, 1, 1000000, &topk))) {
        fprintf(stderr, "usage: vitd classify --model MODEL [--top-k K] [--json] IMAGE...\n");
        free(imgs);
        return 2;
    }
    char err[512];
    vit_model *m = NULL;
    vit_runner *r = NULL;
    vt_status st = vit_load(model, NULL, &m, err, sizeof err);
    if (st) { fprintf(stderr, "vitd classify: %s: %s\n", model, err); free(imgs); return 1; }
    const vit_config *c = vit_config_of(m);
    if (topk > c->classes) topk = c->classes;
    size_t per = (size_t)c->channels * c->image_size * c->image_size;
    float *x = malloc(per * sizeof(float)), *y = malloc((size_t)c->classes * sizeof(float));
    scored *sc = malloc((size_t)c->classes * sizeof *sc);
    int rc = 1, failures = 0;
    if (!x || !y || !sc) { fprintf(stderr, "vitd classify: out of memory\n"); goto done; }
    vit_set_threads(0);
    if ((st = vit_runner_new(m, 1, &r, err, sizeof err))) { fprintf(stderr, "vitd classify: %s\n", err); goto done; }
    img_decode_opts dopt = {.channels = c->channels == 1 ? 1 : 3, .exif_orient = exif};
    img_preproc pp = {.resize = (int)floorf(c->image_size / c->crop_pct), .crop = c->image_size, .interp = c->interp};
    memcpy(pp.mean, c->mean, sizeof pp.mean);
    memcpy(pp.std, c->std, sizeof pp.std);
    if (json) printf("[");
    for (int i = 0; i < nimg; i++) {
        size_t len;
        unsigned char *buf = cli_read_file(imgs[i], &len);
        img_image im = {0};
        if (!buf) { fprintf(stderr, "vitd classify: %s: cannot read\n", imgs[i]); failures++; continue; }
        st = img_decode(buf, len, &dopt, &im, err, sizeof err);
        free(buf);
        if (!st) st = img_preprocess(&im, &pp, x, err, sizeof err);
        img_free(&im);
        if (!st) st = vit_forward(r, x, 1, y, NULL, err, sizeof err);
        if (st) { fprintf(stderr, "vitd classify: %s: %s\n", imgs[i], err); failures++; continue; }
        /* softmax in double: probabilities that sum to 1 even for large logits */
        double mx = y[0], sum = 0;
        for (int k = 1; k < c->classes; k++) mx = y[k] > mx ? y[k] : mx;
        for (int k = 0; k < c->classes; k++) sum += exp((double)y[k] - mx);
        for (int k = 0; k < c->classes; k++) sc[k] = (scored){(float)(exp((double)y[k] - mx) / sum), k};
        qsort(sc, (size_t)c->classes, sizeof *sc, by_score);
        if (json) {
            printf("%s{\"image\": ", i ? ", " : "");
            json_str(imgs[i]);
            printf(", \"predictions\": [");
            for (int k = 0; k < topk; k++) {
                const char *lab = vit_label(m, sc[k].k);
                printf("%s{\"index\": %d, \"label\": ", k ? ", " : "", sc[k].k);
                if (lab) json_str(lab); else printf("\"%d\"", sc[k].k);
                printf(", \"score\": %.6f}", sc[k].p);
            }
            printf("]}");
        } else {
            printf("%s\n", imgs[i]);
            for (int k = 0; k < topk; k++) {
                const char *lab = vit_label(m, sc[k].k);
                printf("  %8.4f  %4d  %s\n", sc[k].p, sc[k].k, lab ? lab : "");
            }
        }
    }
    if (json) printf("]\n");
    rc = failures ? 1 : 0;
done:
    vit_runner_free(r);
    vit_free(m);
    free(x); free(y); free(sc); free(imgs);
    return rc;
}
