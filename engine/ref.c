/* ref.c - plain C reference kernels (see ref.h). */
#include "ref.h"

#include <math.h>

void ref_layernorm(const float *x, float *y, int rows, int D, const float *g, const float *b,
                   float eps)
{
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * D;
        float *yr = y + (size_t)r * D;
        double mean = 0, var = 0;
        for (int i = 0; i < D; i++) mean += xr[i];
        mean /= D;
        for (int i = 0; i < D; i++) var += (xr[i] - mean) * (xr[i] - mean);
        var /= D;
        double inv = 1.0 / sqrt(var + eps);
        for (int i = 0; i < D; i++) yr[i] = (float)((xr[i] - mean) * inv * g[i] + b[i]);
    }
}

void ref_linear(const float *x, const float *W, const float *b, float *y, int rows, int I, int O)
{
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * I;
        for (int o = 0; o < O; o++) {
            const float *w = W + (size_t)o * I;
            double acc = b ? b[o] : 0.0;
            for (int i = 0; i < I; i++) acc += (double)xr[i] * w[i];
            y[(size_t)r * O + o] = (float)acc;
        }
    }
}

void ref_gelu(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) x[i] = (float)(0.5 * x[i] * (1.0 + erf(x[i] / sqrt(2.0))));
}

void ref_softmax(float *x, int rows, int n)
{
    for (int r = 0; r < rows; r++) {
        float *xr = x + (size_t)r * n;
        float mx = xr[0];
        for (int i = 1; i < n; i++) mx = xr[i] > mx ? xr[i] : mx;
        double sum = 0;
        for (int i = 0; i < n; i++) sum += exp((double)xr[i] - mx);
        for (int i = 0; i < n; i++) xr[i] = (float)(exp((double)xr[i] - mx) / sum);
    }
}

void ref_attention(const float *qkv, float *out, int B, int N, int D, int H, float scale,
                   float *scratch)
{
    int dh = D / H;
    for (int b = 0; b < B; b++) {
        const float *base = qkv + (size_t)b * N * 3 * D;
        for (int h = 0; h < H; h++) {
            for (int i = 0; i < N; i++) {
                const float *q = base + (size_t)i * 3 * D + h * dh;
                for (int j = 0; j < N; j++) {
                    const float *k = base + (size_t)j * 3 * D + D + h * dh;
                    double s = 0;
                    for (int e = 0; e < dh; e++) s += (double)q[e] * k[e];
                    scratch[j] = (float)(s * scale);
                }
                ref_softmax(scratch, 1, N);
                float *o = out + ((size_t)b * N + i) * D + h * dh;
                for (int e = 0; e < dh; e++) {
                    double acc = 0;
                    for (int j = 0; j < N; j++)
                        acc += (double)scratch[j] * base[(size_t)j * 3 * D + 2 * D + h * dh + e];
                    o[e] = (float)acc;
                }
            }
        }
    }
}

void ref_im2col(const float *img, float *cols, int B, int C, int S, int P)
{
    int G = S / P, K = C * P * P;
    for (int b = 0; b < B; b++)
        for (int gy = 0; gy < G; gy++)
            for (int gx = 0; gx < G; gx++) {
                float *row = cols + ((size_t)(b * G + gy) * G + gx) * K;
                for (int c = 0; c < C; c++)
                    for (int ky = 0; ky < P; ky++)
                        for (int kx = 0; kx < P; kx++)
                            row[(c * P + ky) * P + kx] =
                                img[(((size_t)b * C + c) * S + gy * P + ky) * S + gx * P + kx];
            }
}
