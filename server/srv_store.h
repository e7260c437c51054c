/* srv_store.h - the versioned model store: every served model's versions on disk, and which
 * one is active, surviving restarts and crashes.
 *
 * Layout (root is the `store_dir` setting):
 *   root/<model>/state.json           {"active": 3, "next": 5, "source": {...}}  (see below)
 *   root/<model>/<version>/model.safetensors
 *   root/<model>/<version>/config.json        (only when the imported source had one)
 *   root/<model>/<version>/version.json
 *       {"version": 3, "parent": 1, "created": "2026-11-29T12:00:00Z",
 *        "origin": "import"|"prune"|..., "removed_blocks": [0, 9, 11],
 *        "params": N,                (parameters vit_load loads)
 *        "bytes": N,                 (size of model.safetensors on disk)
 *        "sha256": "<model.safetensors>",
 *        "files": ["model.safetensors", "config.json"],   (what a complete version holds)
 *        "info": {...}}         (free-form: the job's selection report, gate results, ...;
 *                                an import records {"source": PATH, "import": "link"|"copy"})
 *   root/<model>/.tmp-*        versions being written (removed at open: a crash leftover)
 * state.json: {"active": N (0: none yet), "next": N,
 *              "source": {"path": ABSOLUTE PATH, "sha256": HEX, "config_sha256": HEX}}
 *   ("source": the last import; "config_sha256" only when the source had a config.json).
 * Versions are numbered from 1 per model and never reused (state.json "next", and never below
 * 1 + the highest version folder present).
 * The version folder is what vit_load loads (store_version.dir): a timm source (a folder, or
 * a file named model.safetensors with a config.json beside it) keeps its config.json there.
 *
 * Crash safety (kill -9 at any instant leaves a store that opens and names a complete active
 * version): a version is written into root/<model>/.tmp-XXXXXX (files fsynced), then renamed
 * to root/<model>/<version> and the model folder fsynced; only then does state.json change,
 * through fs_write_atomic (temp file, fsync, rename, fsync of the folder). state.json never
 * names a version folder that is not complete. A version folder without a state.json entry
 * (crash between the two steps) is kept and listed; it is simply not active.
 *
 * Import: at start-up each configured model NAME=PATH is imported: when root/NAME has no
 * state.json, PATH (a .safetensors file or a timm folder) becomes version 1 (hard link when
 * possible, else a copy; a timm folder's config.json is folded into the copy's metadata only
 * if the loader needs it: simplest is copying both files) and is made active. When the store
 * already has NAME, its "source" record (PATH's absolute path and the SHA-256 of its
 * checkpoint) is compared: the same checkpoint keeps the store's active version (so a
 * restart serves what was active, e.g. a pruned version 3); a different checkpoint is
 * imported as a new version and activated (the operator deployed a new model).
 *
 * A state.json that names a version whose folder is missing or incomplete (only a person
 * editing the store can cause it) is an error of store_import naming the file and the fix;
 * the store does not silently fall back to another version, since serving a model other than
 * the one the operator activated is worse than not starting.
 * Hard links: an imported file shares its inode with the source, so a source overwritten IN
 * PLACE (not replaced by rename) would change the stored version too; deploy new checkpoints
 * by writing a new file and renaming it (or to another path).
 *
 * Retention: store_prune_old keeps the newest `keep` versions plus the active one and its
 * parent chain's first link (the version it was pruned from); older folders are deleted.
 *
 * Threads: one mutex per store serialises every call; paths returned are copies.
 */
#ifndef VT_SRV_STORE_H
#define VT_SRV_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define STORE_MAX_VERSIONS 256

typedef struct store store;

typedef struct {
    int version;
    int parent;                 /* 0: none */
    char origin[16];            /* "import", "prune" */
    char created[32];           /* UTC, ISO 8601 */
    uint64_t removed;           /* removed attention blocks, bit i = block i */
    uint64_t params, bytes;
    char sha256[65];
    char path[1024];            /* .../<version>/model.safetensors */
    char dir[1024];             /* .../<version>: the folder to vit_load */
    int active;                 /* 1 for the active version */
} store_version;

/* Opens (creating when missing) the store at root; removes crash leftovers (.tmp-*). */
vt_status store_open(const char *root, store **out, char *err, size_t errlen);
void store_close(store *s);     /* NULL is a no-op */
const char *store_root(const store *s);

/* Imports the configured checkpoint of `model` as described above; *active receives the
 * version to serve. */
vt_status store_import(store *s, const char *model, const char *path, int *active,
                       char *err, size_t errlen);

/* A new version in two steps. store_begin reserves the next number and a temporary folder
 * (its path in tmpdir); the caller writes model.safetensors there (e.g. prune_write). Then
 * store_commit fsyncs it, writes version.json (info_json: a JSON object or NULL), renames
 * the folder into place and advances "next"; it does not change the active version.
 * store_commit loads the checkpoint once (vit_load, under the store's mutex) to record its
 * parameters and removed blocks: a checkpoint that does not load is refused, and the version
 * stays begun (store_abort it). store_abort removes the temporary folder; store_close removes
 * those of versions begun and never committed. An aborted number may be drawn again (it never
 * named a version). */
vt_status store_begin(store *s, const char *model, int *version, char *tmpdir, size_t tmplen,
                      char *err, size_t errlen);
vt_status store_commit(store *s, const char *model, int version, int parent, const char *origin,
                       const char *info_json, char *err, size_t errlen);
void store_abort(store *s, const char *model, int version);

/* Makes an existing, complete version active (state.json, atomically). VT_EINVAL when the
 * version does not exist. */
vt_status store_activate(store *s, const char *model, int version, char *err, size_t errlen);

/* The active version of model (0 when the model is unknown, has no active version yet, or its
 * state.json cannot be read or names no complete version). */
int store_active(store *s, const char *model);

/* One version's record (VT_EINVAL when absent); info_json, when not NULL, receives a malloc'd
 * copy of its "info" object (or NULL). */
vt_status store_get(store *s, const char *model, int version, store_version *out, char **info_json);

/* The versions of model, ascending; returns the count (at most max). */
int store_list(store *s, const char *model, store_version *out, int max);

/* Deletes versions beyond the newest `keep` (never the active one or its parent). Returns the
 * number deleted. */
int store_prune_old(store *s, const char *model, int keep);

#endif
