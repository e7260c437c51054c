/* test_load.c - the model loader against damaged and unusual checkpoints: every problem gets
 * its own clear error naming the tensor or key, and nothing crashes. Checkpoints are written
 * with the engine's own safetensors writer into a temporary folder. */
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "safetensors.h"
#include "vit.h"

enum { D = 64, F = 128, L = 3, S = 16, P = 8, C = 3, K = 5, N = 1 + (S / P) * (S / P) };
static char dir[64];
static unsigned seed = 7;

typedef struct { char name[64]; int ndim; int64_t shape[4]; float *data; } tensor;
static tensor ts[64];
static int nts;

static void add(const char *name, int ndim, int64_t a, int64_t b, int64_t c, int64_t d)
{
    tensor *t = &ts[nts++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = ndim;
    int64_t sh[4] = {a, b, c, d};
    size_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (size_t)(t->shape[i] = sh[i]);
    t->data = malloc(n * 4);
    for (size_t i = 0; i < n; i++) t->data[i] = check_randn(&seed) * 0.1f;
}

/* A complete dense model's tensors, timm names. */
static void make_model(void)
{
    for (int i = 0; i < nts; i++) free(ts[i].data);
    nts = 0;
    add("cls_token", 3, 1, 1, D, 0);
    add("pos_embed", 3, 1, N, D, 0);
    add("patch_embed.proj.weight", 4, D, C, P, P);
    add("patch_embed.proj.bias", 1, D, 0, 0, 0);
    for (int b = 0; b < L; b++) {
        char n[64];
        const char *vec[][2] = {{"norm1.weight", "D"}, {"norm1.bias", "D"}, {"attn.qkv.bias", "3"}, {"attn.proj.bias", "D"},
                                {"norm2.weight", "D"}, {"norm2.bias", "D"}, {"mlp.fc1.bias", "F"}, {"mlp.fc2.bias", "D"}};
        for (int i = 0; i < 8; i++) {
            snprintf(n, sizeof n, "blocks.%d.%s", b, vec[i][0]);
            add(n, 1, vec[i][1][0] == 'D' ? D : vec[i][1][0] == '3' ? 3 * D : F, 0, 0, 0);
        }
        snprintf(n, sizeof n, "blocks.%d.attn.qkv.weight", b); add(n, 2, 3 * D, D, 0, 0);
        snprintf(n, sizeof n, "blocks.%d.attn.proj.weight", b); add(n, 2, D, D, 0, 0);
        snprintf(n, sizeof n, "blocks.%d.mlp.fc1.weight", b); add(n, 2, F, D, 0, 0);
        snprintf(n, sizeof n, "blocks.%d.mlp.fc2.weight", b); add(n, 2, D, F, 0, 0);
    }
    add("norm.weight", 1, D, 0, 0, 0);
    add("norm.bias", 1, D, 0, 0, 0);
    add("head.weight", 2, K, D, 0, 0);
    add("head.bias", 1, K, 0, 0, 0);
}

static tensor *find(const char *name)
{
    for (int i = 0; i < nts; i++) if (!strcmp(ts[i].name, name)) return &ts[i];
    return NULL;
}

static void drop(const char *prefix)
{
    for (int i = 0; i < nts;)
        if (!strncmp(ts[i].name, prefix, strlen(prefix))) { free(ts[i].data); ts[i] = ts[--nts]; }
        else i++;
}

/* Writes the current tensors (and metadata pairs) to dir/name; returns the path. */
static const char *write_model(const char *name, const char *const *meta)
{
    static char path[128];
    char err[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    st_writer *w = st_writer_new();
    for (int i = 0; i < nts; i++) st_writer_add_f32(w, ts[i].name, ts[i].data, ts[i].ndim, ts[i].shape);
    for (; meta && meta[0]; meta += 2) st_writer_meta(w, meta[0], meta[1]);
    CHECK(st_writer_save(w, path, err, sizeof err) == VT_OK, "save %s: %s", path, err);
    st_writer_free(w);
    return path;
}

/* Loading must fail with status want and a message containing needle. */
static void expect_fail(const char *what, const char *path, vt_status want, const char *needle)
{
    char err[512] = "";
    vit_model *m = NULL;
    vt_status st = vit_load(path, NULL, &m, err, sizeof err);
    CHECK(st == want && m == NULL, "%s: status '%s', expected '%s' (%s)", what, vt_status_str(st), vt_status_str(want), err);
    CHECK(strstr(err, needle) != NULL, "%s: message '%s' does not mention '%s'", what, err, needle);
    printf("%-34s -> %s: %s\n", what, vt_status_str(st), err);
    vit_free(m);
}

static vit_model *expect_load(const char *what, const char *path)
{
    char err[512] = "";
    vit_model *m = NULL;
    vt_status st = vit_load(path, NULL, &m, err, sizeof err);
    CHECK(st == VT_OK, "%s: %s", what, err);
    return m;
}

static void logits_of(vit_model *m, float *y)
{
    char err[256];
    vit_runner *r = NULL;
    float x[C * S * S];
    unsigned s2 = 99;
    for (int i = 0; i < C * S * S; i++) x[i] = check_randn(&s2);
    CHECK(vit_runner_new(m, 1, &r, err, sizeof err) == VT_OK, "%s", err);
    CHECK(r && vit_forward(r, x, 1, y, NULL, err, sizeof err) == VT_OK, "%s", err);
    vit_runner_free(r);
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/vitd-test-load-XXXXXX");
    if (!mkdtemp(dir)) { perror("mkdtemp"); return 1; }
    vit_set_threads(1);
    const char *heads2[] = {"vitd.config", "{\"model_args\": {\"num_heads\": 2}}", NULL};

    make_model();
    vit_model *dense = expect_load("dense", write_model("dense.safetensors", heads2));
    CHECK(dense && vit_config_of(dense)->heads == 2 && vit_config_of(dense)->depth == L &&
          vit_config_of(dense)->image_size == S, "dense configuration wrong");
    CHECK(dense && !strcmp(vit_source(dense), "checkpoint metadata (vitd.config)"), "config source");
    vit_model *noconf = expect_load("no configuration", write_model("noconf.safetensors", NULL));
    CHECK(noconf && vit_config_of(noconf)->heads == 1, "heads not inferred as D/64");
    CHECK(noconf && vit_config_of(noconf)->crop_pct == 0.9f && vit_config_of(noconf)->interp == IMG_BICUBIC,
          "DeiT preprocessing defaults not applied");
    vit_free(noconf);

    /* removed block 1, marked in metadata, leftover attention tensors kept in the file */
    const char *rm1[] = {"vitd.config", "{\"model_args\": {\"num_heads\": 2}}", "vitd.removed_blocks", "1", NULL};
    vit_model *left = expect_load("removed with leftovers", write_model("leftover.safetensors", rm1));
    drop("blocks.1.norm1");
    drop("blocks.1.attn");
    vit_model *clean = expect_load("removed, tensors absent", write_model("clean.safetensors", heads2));
    if (dense && left && clean) {
        CHECK(vit_config_of(left)->removed == 2 && vit_config_of(clean)->removed == 2, "removed mask wrong");
        float y1[K], y2[K];
        logits_of(left, y1);
        logits_of(clean, y2);
        CHECK(max_abs_diff(y1, y2, K, NULL) == 0, "leftover tensors changed the logits");
        uint64_t attn = 2 * D + 3 * D * D + 3 * D + D * D + D;
        CHECK(vit_param_count(dense) - vit_param_count(clean) == attn, "params drop %llu, expected %llu",
              (unsigned long long)(vit_param_count(dense) - vit_param_count(clean)), (unsigned long long)attn);
        CHECK(vit_weight_bytes(dense) - vit_weight_bytes(clean) == attn * 4, "resident bytes drop %llu, expected %llu",
              (unsigned long long)(vit_weight_bytes(dense) - vit_weight_bytes(clean)), (unsigned long long)attn * 4);
        CHECK(vit_weight_bytes(left) == vit_weight_bytes(clean), "leftover attention was loaded");
    }
    vit_free(left);
    vit_free(clean);
    vit_free(dense);

    /* timm folder layout: config.json gives the heads */
    make_model();
    char folder[128], cj[160];
    snprintf(folder, sizeof folder, "%s/timm", dir);
    mkdir(folder, 0755);
    write_model("timm/model.safetensors", NULL);
    snprintf(cj, sizeof cj, "%s/config.json", folder);
    FILE *f = fopen(cj, "w");
    fprintf(f, "{\"architecture\": \"vit_test\", \"num_classes\": %d, \"model_args\": {\"num_heads\": 4},"
               " \"pretrained_cfg\": {\"input_size\": [3, %d, %d], \"interpolation\": \"bilinear\", \"crop_pct\": 0.875,"
               " \"mean\": [0.5, 0.5, 0.5], \"std\": [0.5, 0.5, 0.5]}, \"label_names\": [\"a\", \"b\", \"c\", \"d\", \"e\"]}", K, S, S);
    fclose(f);
    vit_model *tm = expect_load("timm folder", folder);
    if (tm) {
        const vit_config *c = vit_config_of(tm);
        CHECK(c->heads == 4 && c->interp == IMG_BILINEAR && c->crop_pct == 0.875f && c->mean[0] == 0.5f,
              "config.json not applied");
        CHECK(vit_label(tm, 2) && !strcmp(vit_label(tm, 2), "c"), "labels not read");
        CHECK(!strcmp(vit_source(tm), "config.json"), "source %s", vit_source(tm));
    }
    vit_free(tm);
    f = fopen(cj, "w");
    fprintf(f, "{\"model_args\": {\"embed_dim\": 96}}");
    fclose(f);
    expect_fail("config.json contradicts shapes", folder, VT_ESHAPE, "embed_dim");
    f = fopen(cj, "w");
    fprintf(f, "{\"model_args\": ");
    fclose(f);
    expect_fail("config.json truncated", folder, VT_EFORMAT, "config.json");

    /* damaged checkpoints */
    make_model();
    const char *badjson[] = {"vitd.config", "{\"model_args\": [", NULL};
    expect_fail("vitd.config not JSON", write_model("badjson.safetensors", badjson), VT_EFORMAT, "vitd.config");
    const char *badheads[] = {"vitd.config", "{\"model_args\": {\"num_heads\": 3}}", NULL};
    expect_fail("heads do not divide width", write_model("badheads.safetensors", badheads), VT_ESHAPE, "num_heads");
    const char *badrm[] = {"vitd.removed_blocks", "0,7", NULL};
    expect_fail("removed block out of range", write_model("badrm.safetensors", badrm), VT_EFORMAT, "removed_blocks");
    const char *badrm2[] = {"vitd.removed_blocks", "1;2", NULL};
    expect_fail("removed list malformed", write_model("badrm2.safetensors", badrm2), VT_EFORMAT, "removed_blocks");
    const char *badinterp[] = {"vitd.config", "{\"pretrained_cfg\": {\"interpolation\": \"lanczos\"}}", NULL};
    expect_fail("unsupported interpolation", write_model("interp.safetensors", badinterp), VT_EUNSUPPORTED, "interpolation");
    const char *badlabels[] = {"vitd.config", "{\"label_names\": [\"a\"]}", NULL};
    expect_fail("wrong label count", write_model("labels.safetensors", badlabels), VT_EFORMAT, "label_names");

    tensor *t = find("blocks.1.attn.qkv.weight");
    t->shape[0] = D; t->shape[1] = 3 * D; /* transposed */
    expect_fail("qkv weight transposed", write_model("transposed.safetensors", heads2), VT_ESHAPE, "blocks.1.attn.qkv.weight");
    make_model();
    drop("blocks.2.mlp.fc1.bias");
    expect_fail("missing MLP bias", write_model("missing.safetensors", heads2), VT_ESHAPE, "blocks.2.mlp.fc1.bias");
    make_model();
    drop("blocks.0.attn.proj.weight");
    expect_fail("partial attention", write_model("partial.safetensors", heads2), VT_ESHAPE, "blocks.0.attn.proj.weight");
    make_model();
    add("blocks.0.ls1.gamma", 1, D, 0, 0, 0);
    expect_fail("LayerScale tensor (unknown)", write_model("ls.safetensors", heads2), VT_EUNSUPPORTED, "blocks.0.ls1.gamma");
    make_model();
    find("blocks.1.mlp.fc2.weight")->data[17] = NAN;
    expect_fail("NaN weight", write_model("nan.safetensors", heads2), VT_EFORMAT, "blocks.1.mlp.fc2.weight");
    make_model();
    tensor *pos = find("pos_embed");
    pos->shape[1] = N + 2;
    pos->data = realloc(pos->data, (size_t)(N + 2) * D * 4);
    memset(pos->data, 0, (size_t)(N + 2) * D * 4);
    expect_fail("pos_embed not square", write_model("pos.safetensors", heads2), VT_ESHAPE, "pos_embed");
    make_model();
    drop("head.weight");
    expect_fail("no head", write_model("nohead.safetensors", heads2), VT_ESHAPE, "head.weight");
    make_model();
    find("head.bias")->shape[0] = K - 1;
    expect_fail("head bias short", write_model("headb.safetensors", heads2), VT_ESHAPE, "head.bias");
    make_model();
    drop("cls_token");
    expect_fail("not a ViT", write_model("notvit.safetensors", NULL), VT_ESHAPE, "cls_token");

    /* truncation of a valid file at many lengths: an error every time, never a crash */
    make_model();
    const char *full = write_model("full.safetensors", heads2);
    size_t len;
    FILE *in = fopen(full, "rb");
    fseek(in, 0, SEEK_END);
    len = (size_t)ftell(in);
    fseek(in, 0, SEEK_SET);
    unsigned char *buf = malloc(len);
    CHECK(fread(buf, 1, len, in) == len, "read back");
    fclose(in);
    char cut[160];
    snprintf(cut, sizeof cut, "%s/cut.safetensors", dir);
    int refused = 0, tries = 0;
    for (size_t n = 0; n < len; n += (n < 200 ? 1 : len / 97)) {
        FILE *o = fopen(cut, "wb");
        fwrite(buf, 1, n, o);
        fclose(o);
        vit_model *m = NULL;
        char err[256];
        tries++;
        if (vit_load(cut, NULL, &m, err, sizeof err) != VT_OK && !m) refused++;
        vit_free(m);
    }
    CHECK(refused == tries, "%d of %d truncated files loaded", tries - refused, tries);
    printf("truncated at %d lengths: all refused\n", tries);
    free(buf);
    expect_fail("no such file", "/nonexistent/model.safetensors", VT_EIO, "no such file");

    for (int i = 0; i < nts; i++) free(ts[i].data);
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", dir);
    return check_done("test_load");
}
