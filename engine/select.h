/* select.h - choosing which attention layers to remove: NOSE (entropy-guided, greedy),
 * the first k blocks, or k blocks at random (METHOD.md section 3).
 *
 * NOSE. With H the Gaussian entropy of entropy.h, measured at the logits (default) or at the
 * class feature after the final LayerNorm, and T(S) = H(Y_full) - H(Y_without_S), where
 * "without S" is the same model with every block of S run as removed (y = 2x;
 * x = y + MLP(LN2(y)), no retraining):
 *
 *     S = {}
 *     repeat k times:
 *         for each candidate block i not in S: score(i) = T(S + {i})
 *         S = S + {argmin_i score(i)}        (signed; ties go to the lower block index)
 *
 * Every score of every step is kept (sel_result.score). Candidates are the blocks the model
 * still has attention in: blocks it was loaded without are part of Y_full and never chosen.
 *
 * Activation reuse. Candidate i differs from the current set S only from block i on, so its
 * pass equals S's pass up to block i's entry. Per greedy step and per batch of images, the
 * candidate with the largest index, c_max, runs from the images and saves the residual
 * stream entering every other candidate block (vit_opts.save_x): up to c_max its pass is S's.
 * Each other candidate i resumes there (vit_opts.start_x) with S + {i} removed, and at step 0
 * the baseline (the full model) resumes at c_max. Per step that is as many passes as the
 * naive loop but L + sum_{i != c_max} (L - i) blocks instead of |candidates| x L, and the
 * images are embedded once. Memory: |candidates| x B x N x D floats of saved streams, for
 * one batch at a time (the proxy set is streamed batch by batch and each candidate's
 * statistics accumulate across batches), e.g. 12 x 8 x 197 x 192 x 4 bytes = 14.5 MB for
 * DeiT-T at batch 8 (58 MB for DeiT-B).
 * The naive mode recomputes every pass from the images; both modes feed each candidate's
 * statistics the same vectors in the same order, so they give bit-identical scores (tests
 * check it) and the naive mode is the brute-force oracle and the speed-up baseline.
 *
 * first: the first k candidate blocks. random: k candidates drawn without replacement by a
 * Fisher-Yates shuffle driven by splitmix64(seed); the chosen order is the draw order.
 * Both optionally measure T of the chosen set (two passes) so strategies can be compared.
 *
 * Threads: sel_run works on the calling thread with a runner of its own; the model is only
 * read, so requests may keep using it meanwhile. Progress and cancellation: entropy.h's
 * ent_control; cancellation is honoured between two forward passes (VT_ECANCELLED).
 */
#ifndef VT_SELECT_H
#define VT_SELECT_H

#include <stddef.h>
#include <stdint.h>

#include "entropy.h"
#include "status.h"
#include "vit.h"

typedef enum { SEL_NOSE, SEL_FIRST, SEL_RANDOM } sel_strategy;
typedef enum { SEL_AT_LOGITS, SEL_AT_FEATURE } sel_measure;

typedef struct sel_result sel_result;

const char *sel_strategy_name(sel_strategy s);                 /* "nose", "first", "random" */
int sel_strategy_parse(const char *name, sel_strategy *out);   /* 0 ok, -1 unknown */
const char *sel_measure_name(sel_measure m);                   /* "logits", "feature" */

typedef struct {
    sel_strategy strategy;
    int k;              /* blocks to choose: 1..number of candidates */
    uint64_t seed;      /* SEL_RANDOM */
    sel_measure measure;
    int batch;          /* images per forward pass, 1..64; 0 means 8 */
    int naive;          /* SEL_NOSE: recompute every pass from the images (no reuse) */
    int evaluate;       /* SEL_FIRST/SEL_RANDOM: also measure H_full and T(chosen) */
    /* SEL_NOSE, optional: called on the computing thread after greedy step `step` is decided,
     * with the result so far (score[step][*] and chosen[step] are final; h_full is set). */
    void (*on_step)(void *ctx, const sel_result *r, int step);
    void *step_ctx;
} sel_opts;

/* The outcome, and the whole NOSE score table. About 34 KB: allocate it. */
struct sel_result {
    sel_strategy strategy;
    sel_measure measure;
    int naive;
    uint64_t seed;
    int depth;                  /* L */
    int k;
    int images;                 /* proxy images used (0 when nothing was measured) */
    int batch;
    uint64_t already_removed;   /* blocks the model was loaded without (never candidates) */
    int chosen[VIT_MAX_DEPTH];  /* (k) block indices in the order chosen */
    uint64_t chosen_mask;
    double h_full;              /* H(Y_full) of the model as loaded; NAN when not measured */
    /* (k, L): score[s][i] = T(S_s + {i}), S_s the set before step s; NAN when block i was not
     * a candidate at step s (already in S_s, or removed in the model). NOSE only. */
    double score[VIT_MAX_DEPTH][VIT_MAX_DEPTH];
    double t_chosen;            /* T(chosen set); NAN when not measured */
    long passes;                /* forward passes run (a resumed one counts as one) */
    long blocks_run;            /* transformer blocks computed over all passes */
    double seconds;             /* wall time of sel_run */
};

/* Chooses o->k blocks of m. src is needed by SEL_NOSE and by evaluate (>= 2 images); it may
 * be NULL for first/random without evaluate. ctl may be NULL. out is filled on success and
 * left in an unspecified state on failure. */
vt_status sel_run(const vit_model *m, const ent_images *src, const sel_opts *o,
                  const ent_control *ctl, sel_result *out, char *err, size_t errlen);

/* The selection report, a JSON object (malloc'd string, caller frees; NULL when out of
 * memory):
 *   {"strategy", "measure", "mode": "reuse"|"naive", "k", "seed" (random), "depth",
 *    "images", "images_failed", "batch", "model", "data" (the two strings as given, null
 *    when NULL), "already_removed": [..], "baseline_h": H_full|null,
 *    "steps": [{"step": s, "removed_before": [..],
 *               "scores": [{"block": i, "score": T(S+{i}), "h": H(without S+{i})}, ...],
 *               "chosen": i}, ...]            (NOSE; [] for first/random),
 *    "chosen": [blocks in order], "removed_blocks": [all removed after pruning, sorted],
 *    "t_chosen": T|null, "passes", "blocks_run", "seconds"} */
char *sel_report_json(const sel_result *r, int images_failed, const char *model, const char *data);

#endif
