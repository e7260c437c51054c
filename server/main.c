/* main.c - the vitd program: a command table, top to bottom. Only main() exits. */
#include <stdio.h>
#include <string.h>

#include "cmd.h"

typedef struct {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *summary;
} command;

static const command commands[] = {
    {"inspect", cmd_inspect, "print a model's configuration, removed blocks, parameters, MACs"},
    {"preprocess", cmd_preprocess, "decode and preprocess images into the tensor a model sees (.npy)"},
    {"logits", cmd_logits, "run the forward pass on a float32 NCHW .npy, write [N, classes] .npy"},
    {"classify", cmd_classify, "classify image files: labels and probabilities"},
    {"bench", cmd_bench, "measure images/s and latency of the forward pass"},
    {"serve", cmd_serve, "serve models over HTTP (Open Inference Protocol, /v1 classify, /metrics)"},
    {"train", cmd_train, "train a ViT from scratch (IDX, ImageFolder or tar data)"},
    {"finetune", cmd_finetune, "remove attention blocks by dilution learning (METHOD.md section 4)"},
    {"eval", cmd_eval, "top-1/top-5 accuracy of a model on a data set"},
    {"entropy", cmd_entropy, "per-block entropy of attention and MLP outputs on a proxy set (table, SVG chart)"},
    {"prune", cmd_prune, "choose attention layers to remove (nose, first, random) and write the pruned model"},
};
#define NCOMMANDS (sizeof commands / sizeof commands[0])

static void usage(FILE *f)
{
    fprintf(f, "usage: vitd COMMAND [options]   (vitd COMMAND --help for its options)\n\n"
               "vitd serves and runs Vision Transformers whose uninformative attention layers\n"
               "were removed (entropy-guided selection, dilution learning).\n\ncommands:\n");
    for (size_t i = 0; i < NCOMMANDS; i++)
        fprintf(f, "  %-11s %s\n", commands[i].name, commands[i].summary);
}

int main(int argc, char **argv)
{
    if (argc < 2) { usage(stderr); return 2; }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    /* A waiting OpenMP thread spins ~300,000 iterations by default before it sleeps: on
     * cores shared with anything else that burns the time slices the partner thread needs
     * to finish its part, and oneDNN's static partitioning then waits for it at every one
     * of the ~100 parallel regions of a forward pass. Measured on 2 CPUs (DeiT-T, batch 1,
     * images/s, idle / one busy process beside): default 96-104 / 18; 1,000 spins 100-105 /
     * 45-49; 0 spins (passive) 61 / 55. `serve` sets its own value from its configuration. */
    if (strcmp(argv[1], "serve")) cli_reexec_spincount(1000, 0, argc, argv);
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "vitd: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
