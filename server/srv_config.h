/* srv_config.h - the configuration of `vitd serve`: one table of keys, four sources.
 *
 * Every key has a config-file name (`max_batch_size`), an environment variable (VITD_ + upper
 * case: `VITD_MAX_BATCH_SIZE`) and a flag (`--max-batch-size`). Precedence, lowest first:
 * built-in default < config file < environment < flag. The config file is JSON, one object
 * whose keys are the names below (unknown keys are errors); it is `--config FILE` or
 * VITD_CONFIG, else config/vitd.json when that file exists, else none.
 *
 * Models: file key "models" = {"NAME": "PATH", ...}, VITD_MODELS=NAME=PATH,NAME=PATH, flag
 * --model NAME=PATH (repeatable; a bare PATH is named after its file or folder). A source
 * that names models replaces the models of the sources below it.
 *
 * Any invalid value stops start-up: conf_load returns -1 with a message naming the key and
 * where it came from. The result is immutable after start-up (a global of cmd_serve).
 * Threads: conf_load runs once in main's thread before any other thread exists.
 */
#ifndef VT_SRV_CONFIG_H
#define VT_SRV_CONFIG_H

#include <stddef.h>
#include <stdio.h>

#define CONF_MAX_MODELS 16
#define CONF_NAME_MAX 64     /* model names: [A-Za-z0-9_-]{1,64} */
#define CONF_DEFAULT_MODEL_NAME "fashion-vit"
#define CONF_DEFAULT_MODEL_PATH "models/fashion-vit/model.safetensors"

/* X(type, name, default, min, max, help)
 *   I: integer in [min, max]; D: number in [min, max]; B: true/false; S: string (empty only
 *   when its default is empty); F: one of the words in min ("a|b")
 * The admin token is deliberately not a key: it comes from VITD_ADMIN_TOKEN or the file named
 * by admin_token_file, never from argv (visible to every user in ps) or the config file. */
#define CONF_KEYS(X) \
    X(S, host, "127.0.0.1", 0, 0, "address of the inference listener (the container sets 0.0.0.0)") \
    X(I, port, "8080", 0, 65535, "TCP port of the inference listener (0: any free port, logged)") \
    X(I, http_threads, "2", 1, 64, "HTTP threads: parse, decode and preprocess requests") \
    X(I, threads, "0", 0, 1024, "OpenMP threads of each inference worker (0: every CPU the process may use; 1 for models under 0.5 GMAC per batch)") \
    X(I, instances, "0", 0, 16, "inference workers per model, each with its own runner, taking batches side by side (0: CPUs / threads, so one per CPU for one-thread models)") \
    X(I, max_batch_size, "8", 1, 64, "largest batch the worker forms from queued images") \
    X(I, max_queue_delay_us, "0", 0, 1000000, "how long the worker waits for more images before running a partial batch") \
    X(I, max_queue_images, "64", 1, 100000, "images waiting per model; a request that does not fit gets 503") \
    X(I, request_timeout_ms, "30000", 1, 3600000, "deadline from arrival to the start of inference; past it 503") \
    X(I, max_body_bytes, "16777216", 1024, 1073741824, "largest request body; larger gets 413") \
    X(I, max_image_pixels, "40000000", 1, 89478485, "largest width x height of an image; larger gets 413") \
    X(I, max_images_per_request, "64", 1, 4096, "most images in one request; more gets 413") \
    X(I, max_connections, "256", 1, 60000, "open connections; more wait in the listen backlog") \
    X(I, max_connections_per_ip, "0", 0, 60000, "open connections per client address (0: no per-address cap)") \
    X(I, idle_timeout_s, "30", 1, 86400, "a connection idle this long is closed") \
    X(I, drain_timeout_s, "20", 0, 3600, "on SIGTERM/SIGINT, how long in-flight requests may take to finish") \
    X(I, retry_after_s, "1", 0, 3600, "Retry-After seconds sent with 503") \
    X(I, default_top_k, "5", 1, 1000000, "classes per image of /v1 classify without ?top_k") \
    X(B, exif, "false", 0, 0, "apply the JPEG EXIF orientation (PyTorch pipelines do not)") \
    X(B, access_log, "true", 0, 0, "one log line per request") \
    X(F, log_format, "text", "text|json", 0, "log lines as text or JSON Lines") \
    X(I, worker_nice, "5", 0, 19, "nice value added to the inference workers (and their OpenMP teams), so HTTP threads go first") \
    X(I, gomp_spincount, "1000", -1, 1000000000, "GNU OpenMP spin iterations before a waiting thread sleeps (0: at once; -1: libgomp's default)") \
    X(S, store_dir, "store", 0, 0, "the versioned model store (<model>/<version>/ folders and state.json, server/srv_store.h); uploads spool in its .spool/") \
    X(I, keep_versions, "5", 1, 256, "versions kept per model after a publish (the active one and its parent are always kept)") \
    X(S, admin_host, "127.0.0.1", 0, 0, "address of the admin listener") \
    X(I, admin_port, "8081", 0, 65535, "TCP port of the admin listener (0: any free port, logged); never the inference port") \
    X(S, admin_token_file, "", 0, 0, "file holding the admin bearer token (VITD_ADMIN_TOKEN wins; never a flag); no token: no admin listener") \
    X(I, admin_max_archive_bytes, "1073741824", 1024, 68719476736, "largest prune upload (tar archive bytes); larger gets 413") \
    X(I, admin_max_archive_entries, "100000", 1, 10000000, "most entries (headers of any kind) in a prune upload") \
    X(I, admin_max_entry_bytes, "33554432", 1, 1073741824, "largest file inside a prune upload") \
    X(I, job_threads, "1", 1, 1024, "OpenMP threads of an admin job (pruning runs beside serving)") \
    X(I, job_nice, "19", 0, 19, "nice value of an admin job's thread") \
    X(D, job_cpu_share, "0.2", 0.01, 1, "while inference is active, an admin job pauses after each forward pass so that it uses at most this share of one CPU (1: no pauses)") \
    X(B, job_idle, "true", 0, 0, "run admin jobs under SCHED_IDLE (CPU only when inference and HTTP threads leave it idle); false: nice only") \
    X(D, job_gate, "0.9", 0, 1, "default minimum top-1 agreement of a pruned candidate with the active version on the held-out images; below it the version is stored but not activated") \
    X(D, job_holdout, "0.2", 0, 0.9, "fraction of an uploaded proxy set held out for the check (at most 0.9: the selection needs the rest)")

typedef struct {
    char name[CONF_NAME_MAX + 1];
    char path[1024];
} conf_model;

#define CONF_FIELD_I(n) long n;
#define CONF_FIELD_D(n) double n;
#define CONF_FIELD_B(n) int n;
#define CONF_FIELD_S(n) char n[256];
#define CONF_FIELD_F(n) int n; /* index of the word */
#define CONF_FIELD(t, n, d, lo, hi, h) CONF_FIELD_##t(n)
typedef struct {
    CONF_KEYS(CONF_FIELD)
    int nmodels;
    int default_model;       /* 1: no model was named; serving the default */
    conf_model models[CONF_MAX_MODELS];
    char config_file[1024];  /* the file read, or "" */
} conf_t;
#undef CONF_FIELD

/* Fills c from defaults, file, environment and argv (argv[0] is the command name). Returns 0,
 * 1 when --help was printed (usage and the key table), -1 after writing a message into err. */
int conf_load(conf_t *c, int argc, char **argv, char *err, size_t errlen);

/* The key table: name, environment variable, flag, default, meaning. */
void conf_print_keys(FILE *f);

/* A valid model name: [A-Za-z0-9_-]{1,64}. */
int conf_valid_name(const char *s);

#endif
