/* check.h - the assertions of the C test programs (header only).
 *
 * CHECK(cond, fmt, ...) counts a check and, when cond is false, prints file:line and the
 * message and counts a failure; the program carries on so one run shows every failure.
 * check_done(name) prints the totals and returns the exit status (non-zero on any failure).
 */
#ifndef VT_CHECK_H
#define VT_CHECK_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static int check_total, check_failed;

#define CHECK(cond, ...)                                                  \
    do {                                                                  \
        check_total++;                                                    \
        if (!(cond)) {                                                    \
            check_failed++;                                               \
            fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                 \
            fputc('\n', stderr);                                          \
        }                                                                 \
    } while (0)

static inline int check_done(const char *name)
{
    printf("%s: %d checks, %d failed\n", name, check_total, check_failed);
    return check_failed ? 1 : 0;
}

/* Largest |a - b| and largest |b| over n values. */
static inline double max_abs_diff(const float *a, const float *b, size_t n, double *max_b)
{
    double d = 0, m = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - b[i]);
        if (e > d || isnan(e)) d = isnan(e) ? INFINITY : e;
        if (fabs(b[i]) > m) m = fabs(b[i]);
    }
    if (max_b) *max_b = m;
    return d;
}

/* Deterministic normal-ish random numbers (sum of uniforms) for test inputs. */
static inline float check_randn(unsigned *state)
{
    float s = 0;
    for (int i = 0; i < 4; i++) {
        *state = *state * 1664525u + 1013904223u;
        s += (float)(*state >> 8) / (float)(1u << 24);
    }
    return (s - 2.0f) * 1.7320508f;
}

#endif
