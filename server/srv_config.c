/* srv_config.c - defaults, config file, VITD_* environment, flags (see srv_config.h).
 *
 * Every source goes through the same string parser (set_value), so a value means the same
 * thing wherever it is written; the file's JSON types are checked first (a port written as a
 * string is an error, not a silent conversion).
 */
#include "srv_config.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef enum { T_I, T_D, T_B, T_S, T_F } conf_type;

typedef struct {
    conf_type type;
    const char *name, *def, *words, *help;
    double lo, hi;              /* bounds of I and D keys (whole numbers for I) */
    size_t off;
} conf_key;

#define CONF_ENTRY_I(n, d, lo, hi, h) {T_I, #n, d, NULL, h, lo, hi, offsetof(conf_t, n)},
#define CONF_ENTRY_D(n, d, lo, hi, h) {T_D, #n, d, NULL, h, lo, hi, offsetof(conf_t, n)},
#define CONF_ENTRY_B(n, d, lo, hi, h) {T_B, #n, d, NULL, h, 0, 1, offsetof(conf_t, n)},
#define CONF_ENTRY_S(n, d, lo, hi, h) {T_S, #n, d, NULL, h, 0, 0, offsetof(conf_t, n)},
#define CONF_ENTRY_F(n, d, lo, hi, h) {T_F, #n, d, lo, h, 0, 0, offsetof(conf_t, n)},
#define CONF_ENTRY(t, n, d, lo, hi, h) CONF_ENTRY_##t(n, d, lo, hi, h)
static const conf_key keys[] = {CONF_KEYS(CONF_ENTRY)};
#undef CONF_ENTRY
#define NKEYS (sizeof keys / sizeof keys[0])

static int fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

static void env_name(const char *name, char *out, size_t n)
{
    size_t k = snprintf(out, n, "VITD_");
    for (; *name && k + 1 < n; name++) out[k++] = (char)toupper((unsigned char)*name);
    out[k] = '\0';
}

static void flag_name(const char *name, char *out, size_t n)
{
    size_t k = snprintf(out, n, "--");
    for (; *name && k + 1 < n; name++) out[k++] = *name == '_' ? '-' : *name;
    out[k] = '\0';
}

int conf_valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > CONF_NAME_MAX) return 0;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '_' && *s != '-') return 0;
    return 1;
}

/* Index of word in "a|b|c", or -1. */
static int word_index(const char *words, const char *w)
{
    int i = 0;
    size_t n = strlen(w);
    for (const char *p = words; *p; i++) {
        const char *e = strchr(p, '|');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == n && !strncmp(p, w, n)) return i;
        if (!e) break;
        p = e + 1;
    }
    return -1;
}

/* Parses val for key k into c; src says where it came from, for the message. */
static int set_value(conf_t *c, const conf_key *k, const char *val, const char *src,
                     char *err, size_t errlen)
{
    char *base = (char *)c + k->off;
    switch (k->type) {
    case T_I: {
        char *end;
        errno = 0;
        long v = strtol(val, &end, 10);
        if (end == val || *end || errno)
            return fail(err, errlen, "%s: %s: '%s' is not an integer", src, k->name, val);
        if (v < k->lo || v > k->hi)
            return fail(err, errlen, "%s: %s: %ld is outside %.0f..%.0f", src, k->name, v, k->lo, k->hi);
        *(long *)base = v;
        return 0;
    }
    case T_D: {
        char *end;
        errno = 0;
        double v = strtod(val, &end);
        if (end == val || *end || errno || v != v)
            return fail(err, errlen, "%s: %s: '%s' is not a number", src, k->name, val);
        if (v < k->lo || v > k->hi)
            return fail(err, errlen, "%s: %s: %g is outside %g..%g", src, k->name, v, k->lo, k->hi);
        *(double *)base = v;
        return 0;
    }
    case T_B:
        if (!strcmp(val, "true") || !strcmp(val, "1") || !strcmp(val, "yes")) *(int *)base = 1;
        else if (!strcmp(val, "false") || !strcmp(val, "0") || !strcmp(val, "no")) *(int *)base = 0;
        else return fail(err, errlen, "%s: %s: '%s' is not true or false", src, k->name, val);
        return 0;
    case T_S:
        if (strlen(val) >= 256 || (!*val && *k->def))
            return fail(err, errlen, "%s: %s: must be 1..255 characters", src, k->name);
        strcpy(base, val);
        return 0;
    case T_F: {
        int i = word_index(k->words, val);
        if (i < 0) return fail(err, errlen, "%s: %s: '%s' is not one of %s", src, k->name, val, k->words);
        *(int *)base = i;
        return 0;
    }
    }
    return -1;
}

/* A model name from a bare path: the file name without extension, or the folder's name
 * when the file is model.safetensors (timm's layout). */
static void name_from_path(const char *path, char *name)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", path);
    size_t n = strlen(buf);
    while (n > 1 && buf[n - 1] == '/') buf[--n] = '\0';
    char *slash = strrchr(buf, '/');
    char *file = slash ? slash + 1 : buf;
    if (!strcmp(file, "model.safetensors") && slash) {
        *slash = '\0';
        char *prev = strrchr(buf, '/');
        file = prev ? prev + 1 : buf;
    } else {
        char *dot = strrchr(file, '.');
        if (dot && dot != file) *dot = '\0';
    }
    size_t k = 0;
    for (; file[k] && k < CONF_NAME_MAX; k++)
        name[k] = isalnum((unsigned char)file[k]) || file[k] == '_' || file[k] == '-' ? file[k] : '-';
    name[k] = '\0';
}

/* Adds "NAME=PATH" (or a bare PATH) to c->models. */
static int add_model(conf_t *c, const char *spec, const char *src, char *err, size_t errlen)
{
    if (c->nmodels == CONF_MAX_MODELS)
        return fail(err, errlen, "%s: models: more than %d models", src, CONF_MAX_MODELS);
    conf_model *m = &c->models[c->nmodels];
    const char *eq = strchr(spec, '=');
    const char *path = eq ? eq + 1 : spec;
    if (eq) {
        size_t n = (size_t)(eq - spec);
        if (n > CONF_NAME_MAX) n = 0; /* overlong: left empty, so rejected below */
        memcpy(m->name, spec, n);
        m->name[n] = '\0';
    } else {
        name_from_path(spec, m->name);
    }
    if (!conf_valid_name(m->name))
        return fail(err, errlen, "%s: models: '%s': the model name must be 1..%d of A-Z a-z 0-9 _ -",
                    src, spec, CONF_NAME_MAX);
    if (!*path || strlen(path) >= sizeof m->path)
        return fail(err, errlen, "%s: models: '%s': missing or overlong path", src, spec);
    for (int i = 0; i < c->nmodels; i++)
        if (!strcmp(c->models[i].name, m->name))
            return fail(err, errlen, "%s: models: the name '%s' is given twice", src, m->name);
    strcpy(m->path, path);
    c->nmodels++;
    return 0;
}

/* "NAME=PATH,NAME=PATH" */
static int set_models_list(conf_t *c, const char *list, const char *src, char *err, size_t errlen)
{
    char buf[8192];
    if (strlen(list) >= sizeof buf) return fail(err, errlen, "%s: models: list too long", src);
    strcpy(buf, list);
    c->nmodels = 0;
    char *save = NULL;
    for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save))
        if (add_model(c, t, src, err, errlen)) return -1;
    if (!c->nmodels) return fail(err, errlen, "%s: models: empty list", src);
    return 0;
}

static const conf_key *find_key(const char *name)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (!strcmp(keys[i].name, name)) return &keys[i];
    return NULL;
}

static int load_file(conf_t *c, const char *path, char *err, size_t errlen)
{
    json_error_t je;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!root) return fail(err, errlen, "%s: line %d: %s", path, je.line, je.text);
    int rc = -1;
    const char *name;
    json_t *v;
    if (!json_is_object(root)) { fail(err, errlen, "%s: must hold one JSON object", path); goto done; }
    json_object_foreach(root, name, v) {
        char src[1100], sval[64];
        snprintf(src, sizeof src, "%s", path);
        if (!strcmp(name, "models")) {
            c->nmodels = 0;
            const char *mn;
            json_t *mp;
            if (!json_is_object(v) || !json_object_size(v)) {
                fail(err, errlen, "%s: models: must be an object {\"NAME\": \"PATH\", ...}", path);
                goto done;
            }
            json_object_foreach(v, mn, mp) {
                char spec[1200];
                if (!json_is_string(mp)) { fail(err, errlen, "%s: models: %s: the path must be a string", path, mn); goto done; }
                if (!conf_valid_name(mn)) {
                    fail(err, errlen, "%s: models: '%s': the model name must be 1..%d of A-Z a-z 0-9 _ -", path, mn, CONF_NAME_MAX);
                    goto done;
                }
                snprintf(spec, sizeof spec, "%s=%s", mn, json_string_value(mp));
                if (add_model(c, spec, src, err, errlen)) goto done;
            }
            continue;
        }
        const conf_key *k = find_key(name);
        if (!strcmp(name, "admin_token")) {
            fail(err, errlen, "%s: admin_token: the admin token is never read from the config file; "
                              "set VITD_ADMIN_TOKEN or name a file with admin_token_file", path);
            goto done;
        }
        if (!k) { fail(err, errlen, "%s: unknown key '%s' (vitd serve --help lists the keys)", path, name); goto done; }
        const char *s = NULL;
        if (k->type == T_I && json_is_integer(v)) {
            snprintf(sval, sizeof sval, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
            s = sval;
        } else if (k->type == T_D && json_is_number(v)) {
            snprintf(sval, sizeof sval, "%.17g", json_number_value(v));
            s = sval;
        } else if (k->type == T_B && json_is_boolean(v)) {
            s = json_is_true(v) ? "true" : "false";
        } else if ((k->type == T_S || k->type == T_F) && json_is_string(v)) {
            s = json_string_value(v);
        }
        if (!s) {
            fail(err, errlen, "%s: %s: must be %s", path, name,
                 k->type == T_I ? "an integer" : k->type == T_D ? "a number" : k->type == T_B ? "true or false" : "a string");
            goto done;
        }
        if (set_value(c, k, s, src, err, errlen)) goto done;
    }
    rc = 0;
done:
    json_decref(root);
    return rc;
}

void conf_print_keys(FILE *f)
{
    fprintf(f, "%-24s %-28s %-28s %-12s %s\n", "key (config file)", "environment", "flag", "default", "meaning");
    for (size_t i = 0; i < NKEYS; i++) {
        char e[64], fl[64];
        env_name(keys[i].name, e, sizeof e);
        flag_name(keys[i].name, fl, sizeof fl);
        fprintf(f, "%-24s %-28s %-28s %-12s %s", keys[i].name, e, fl, keys[i].def, keys[i].help);
        if (keys[i].type == T_I) fprintf(f, " [%.0f..%.0f]", keys[i].lo, keys[i].hi);
        if (keys[i].type == T_D) fprintf(f, " [%g..%g]", keys[i].lo, keys[i].hi);
        if (keys[i].type == T_F) fprintf(f, " [%s]", keys[i].words);
        fputc('\n', f);
    }
    fprintf(f, "%-24s %-28s %-28s %-12s %s\n", "models", "VITD_MODELS", "--model", CONF_DEFAULT_MODEL_NAME,
            "models to serve: {\"NAME\": \"PATH\"} / NAME=PATH,NAME=PATH / NAME=PATH (repeatable)");
    fprintf(f, "%-24s %-28s %-28s %-12s %s\n", "(the file itself)", "VITD_CONFIG", "--config", "config/vitd.json",
            "JSON config file (read when it exists)");
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: vitd serve [--model NAME=PATH]... [--config FILE] [--KEY VALUE]...\n\n"
            "Serves models over HTTP: the Open Inference Protocol (KServe v2) under /v2, a plain\n"
            "image endpoint POST /v1/models/NAME/classify, and Prometheus metrics at /metrics\n"
            "(docs/serving.md). With no model named it serves %s (%s).\n\n"
            "Every key below is a config-file key, a VITD_* environment variable and a flag;\n"
            "precedence flag > environment > file > default.\n\n",
            CONF_DEFAULT_MODEL_PATH, CONF_DEFAULT_MODEL_NAME);
    conf_print_keys(f);
}

int conf_load(conf_t *c, int argc, char **argv, char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < NKEYS; i++)
        if (set_value(c, &keys[i], keys[i].def, "default", err, errlen)) return -1;

    /* the file: --config, else VITD_CONFIG, else config/vitd.json if present */
    const char *file = getenv("VITD_CONFIG");
    int explicit_file = file != NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { usage(stdout); return 1; }
        if (!strcmp(argv[i], "--config") || !strncmp(argv[i], "--config=", 9)) {
            if (argv[i][8] == '=') file = argv[i] + 9;
            else if (i + 1 < argc) file = argv[++i];
            else return fail(err, errlen, "--config needs a file");
            explicit_file = 1;
        }
    }
    struct stat sb;
    if (!file && stat("config/vitd.json", &sb) == 0) file = "config/vitd.json";
    if (file) {
        if (!*file || (explicit_file && stat(file, &sb) != 0))
            return fail(err, errlen, "config file '%s' cannot be read", file);
        if (strlen(file) >= sizeof c->config_file) return fail(err, errlen, "config file path too long");
        if (load_file(c, file, err, errlen)) return -1;
        strcpy(c->config_file, file);
    }

    /* environment */
    for (size_t i = 0; i < NKEYS; i++) {
        char e[64];
        env_name(keys[i].name, e, sizeof e);
        const char *v = getenv(e);
        if (v && set_value(c, &keys[i], v, e, err, errlen)) return -1;
    }
    const char *em = getenv("VITD_MODELS");
    if (em && set_models_list(c, em, "VITD_MODELS", err, errlen)) return -1;

    /* flags: --key VALUE or --key=VALUE; --model accumulates and replaces the other sources */
    int flag_models = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = NULL;
        if (!strcmp(a, "--config")) { i++; continue; }
        if (!strncmp(a, "--config=", 9)) continue;
        if (strncmp(a, "--", 2)) return fail(err, errlen, "unexpected argument '%s' (vitd serve --help)", a);
        char name[64];
        const char *eq = strchr(a, '=');
        size_t n = eq ? (size_t)(eq - a) : strlen(a);
        if (n >= sizeof name) return fail(err, errlen, "unknown option '%s'", a);
        memcpy(name, a, n);
        name[n] = '\0';
        if (!strcmp(name, "--admin-token"))
            return fail(err, errlen, "--admin-token is not accepted: a token on the command line is visible to every "
                                     "user (ps, /proc); set VITD_ADMIN_TOKEN or name a file with --admin-token-file");
        int is_bool = 0;
        for (size_t j = 0; j < NKEYS; j++) {
            char fl[64];
            flag_name(keys[j].name, fl, sizeof fl);
            if (!strcmp(fl, name)) is_bool = keys[j].type == T_B;
        }
        if (eq) val = eq + 1;
        else if (is_bool && (i + 1 >= argc || !strncmp(argv[i + 1], "--", 2))) val = "true"; /* bare --exif */
        else if (i + 1 < argc) val = argv[++i];
        else return fail(err, errlen, "option %s needs a value", name);
        if (!strcmp(name, "--model")) {
            if (!flag_models) c->nmodels = 0;
            flag_models = 1;
            if (add_model(c, val, "--model", err, errlen)) return -1;
            continue;
        }
        const conf_key *k = NULL;
        for (size_t j = 0; j < NKEYS && !k; j++) {
            char fl[64];
            flag_name(keys[j].name, fl, sizeof fl);
            if (!strcmp(fl, name)) k = &keys[j];
        }
        if (!k) return fail(err, errlen, "unknown option '%s' (vitd serve --help)", name);
        if (set_value(c, k, val, name, err, errlen)) return -1;
    }

    if (!c->nmodels) {
        c->default_model = 1;
        c->nmodels = 1;
        strcpy(c->models[0].name, CONF_DEFAULT_MODEL_NAME);
        strcpy(c->models[0].path, CONF_DEFAULT_MODEL_PATH);
    }
    /* cross-key rules */
    if (c->port && c->admin_port == c->port)
        return fail(err, errlen, "admin_port (%ld) and port (%ld) must differ: the admin and inference listeners never share a port",
                    c->admin_port, c->port);
    if (c->max_images_per_request > c->max_queue_images)
        return fail(err, errlen, "max_images_per_request (%ld) must not exceed max_queue_images (%ld)",
                    c->max_images_per_request, c->max_queue_images);
    return 0;
}
