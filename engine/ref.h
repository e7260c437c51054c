/* ref.h - plain C reference kernels: the oracle for every oneDNN call of the engine.
 *
 * Written for clarity, not speed: double accumulation where it is cheap, no blocking, no
 * threads. Tests compare each oneDNN primitive the engine builds (ops.h) with the kernel
 * here, and vit_forward(..., reference = 1) runs a whole model on them. Weights are in
 * PyTorch's layouts (Linear.weight is (out, in)); activations are token-major (rows, width).
 * Thread-safe: no state.
 */
#ifndef VT_REF_H
#define VT_REF_H

#include <stddef.h>

/* y (rows, D) = LayerNorm(x) * g + b, biased variance, eps inside the square root. */
void ref_layernorm(const float *x, float *y, int rows, int D, const float *g, const float *b,
                   float eps);
/* y (rows, O) = x (rows, I) W^T + b, W (O, I); b may be NULL. */
void ref_linear(const float *x, const float *W, const float *b, float *y, int rows, int I, int O);
/* In place, exact GELU: x * 0.5 * (1 + erf(x / sqrt 2)). */
void ref_gelu(float *x, size_t n);
/* In place, each of `rows` rows of n values. */
void ref_softmax(float *x, int rows, int n);
/* Multi-head self-attention core (timm): qkv (B, N, 3D) holds [q heads | k heads | v heads]
 * per token; out (B, N, D) = concat_h softmax(q_h k_h^T * scale) v_h. scratch: N floats. */
void ref_attention(const float *qkv, float *out, int B, int N, int D, int H, float scale,
                   float *scratch);
/* im2col of a stride-P PxP convolution: cols (B*G*G, C*P*P) from img (B, C, S, S), G = S/P,
 * column order (c, ky, kx) so that cols x W^T with W (D, C, P, P) viewed (D, C*P*P) is the conv. */
void ref_im2col(const float *img, float *cols, int B, int C, int S, int P);

#endif
