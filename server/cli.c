/* cli.c - helpers shared by the vitd sub-commands (see cmd.h). */
#include "cmd.h"

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

unsigned char *cli_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    unsigned char *buf = malloc(cap);
    while (buf) {
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (n < cap) break;
        unsigned char *nb = cap > SIZE_MAX / 2 ? NULL : realloc(buf, cap * 2);
        if (!nb) { free(buf); buf = NULL; errno = ENOMEM; break; }
        buf = nb;
        cap *= 2;
    }
    if (buf && ferror(f)) { free(buf); buf = NULL; errno = EIO; }
    fclose(f);
    if (buf) *len = n;
    return buf;
}

int cli_parse_blocks(const char *s, int limit, unsigned long long *mask)
{
    *mask = 0;
    if (!*s) return 0;
    while (*s) {
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (end == s || errno || v < 0 || v >= limit || v >= 64) return -1;
        *mask |= 1ull << v;
        if (*end == ',') end++;
        else if (*end) return -1;
        s = end;
    }
    return 0;
}

int cli_opt(int argc, char **argv, int *i, const char *opt, const char **val)
{
    const char *a = argv[*i];
    size_t n = strlen(opt);
    if (strncmp(a, opt, n) != 0) return 0;
    if (!val) return a[n] == '\0';
    if (a[n] == '=') { *val = a + n + 1; return 1; }
    if (a[n] != '\0') return 0;
    if (*i + 1 >= argc) {
        fprintf(stderr, "vitd %s: option %s needs a value\n", argv[0], opt);
        return -1;
    }
    *val = argv[++*i];
    return 1;
}

int cli_int(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s || *end || errno || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

int cli_float(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || errno) return -1;
    *out = v;
    return 0;
}

void cli_reexec_spincount(long spins, int active, int argc, char **argv)
{
    if (spins < 0 || getenv("GOMP_SPINCOUNT") || getenv("OMP_WAIT_POLICY") || getenv("VITD_OMP_REEXEC"))
        return;
    char v[32];
    snprintf(v, sizeof v, "%ld", spins);
    char **args = calloc((size_t)argc + 1, sizeof *args);
    if (!args) return;
    for (int i = 0; i < argc; i++) args[i] = argv[i];
    setenv("GOMP_SPINCOUNT", v, 1);
    if (active && spins > 0) setenv("OMP_WAIT_POLICY", "active", 1);
    setenv("VITD_OMP_REEXEC", "1", 1);
    /* the binary's own path, so ps and top still say "vitd" (not "exe") */
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) {
        self[n] = '\0';
        execv(self, args);
    }
    /* still here: run with libgomp's default */
    unsetenv("GOMP_SPINCOUNT");
    unsetenv("OMP_WAIT_POLICY");
    free(args);
}
