/* prune.h - writes a pruned checkpoint: the parent with the attention of chosen blocks cut.
 *
 * What a pruned checkpoint holds (safetensors, written atomically by st_writer, all F32):
 *   tensors   every tensor of the parent, in the parent's order, except
 *             blocks.<i>.norm1.* and blocks.<i>.attn.* for every block i in `removed`
 *             (F16/BF16 parents are widened to F32: the loader sees the same floats);
 *   metadata  every key of the parent's __metadata__, except the four it replaces:
 *     "vitd.removed_blocks"  "0,2,4": every removed block, sorted (the parent's and the new);
 *     "vitd.config"          the parent's configuration JSON (its vitd.config, or else the
 *                            timm config.json beside it, or else {}) with the top-level
 *                            "removed_blocks" set to the same list (and any copy of that key
 *                            inside "pretrained_cfg"/"model_args" dropped, so no other value
 *                            can win), so the file alone carries preprocessing and labels;
 *     "vitd.parent_sha256"   SHA-256 of the parent's .safetensors file, hex;
 *     "vitd.selection"       the selection report JSON (select.h), when one is given.
 * The parent is a .safetensors file or a timm folder (model.safetensors + config.json), as
 * vit_load takes it. out is a file path; an existing folder gets out/model.safetensors.
 * Nothing here prints. Thread-safe: no shared state.
 */
#ifndef VT_PRUNE_H
#define VT_PRUNE_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

/* removed: every block that must be removed in the output (bit i = block i), normally the
 * parent's removed blocks plus the selection's. selection_json may be NULL. The output is
 * verified to load with exactly `removed` before the call returns VT_OK; when parent_sha256
 * is not NULL it receives the parent's hash (65 bytes). */
vt_status prune_write(const char *parent, uint64_t removed, const char *selection_json,
                      const char *out, char parent_sha256[65], char *err, size_t errlen);

#endif
