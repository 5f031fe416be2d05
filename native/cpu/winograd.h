// Our own Winograd F(4×4, 3×3) convolution for CPUs where oneDNN has none (AVX2: oneDNN 2.6's jit_wino_4x3 needs
// avx512_core). 3×3 stride-1 pad-1, f32, activations in a blocked layout (nchw8c, nchw16c). Per chunk of 4×4 output
// tiles: the input tiles transformed (Bᵀ d B, 6×6), 36 GEMMs over channels as one batched oneDNN matmul, the
// results transformed back (Aᵀ m A) with bias and ReLU. Backward-data is the same convolution of dy with the
// weights flipped and transposed; backward-weights transforms x's tiles and dy's (A dy Aᵀ), one batched matmul
// reduces over the tiles, and Gᵀ · G maps the 6×6 sums back to 3×3. About a quarter of a direct convolution's
// multiplies; see conv.cc (use_our_winograd) for when it runs and winograd.cc for what it measured.
#pragma once
#include "common.h"

namespace vgg::cpu::winograd {

// The shape part of the rule: 3×3 kernel, stride 1, padding 1 on every side, f32, Cin and Cout multiples of 8 with
// at least 64 in, output maps of at least 8×8, activations in a blocked layout of 8 or 16 channels.
struct Shape3x3 {
  int64_t N, C, H, W, K;  // x (N,C,H,W), w (K,C,3,3); y (N,K,H,W)
};

// y (N,K,H,W) = conv(x, w) + b, optional ReLU; x and y blocked, w plain (K,C,3,3), b may be null.
void forward(const Shape3x3& s, const Tensor& x, const float* w, const float* b, bool relu, Tensor& y);
// dx (N,C,H,W) = the input gradient of that convolution for dy (N,K,H,W).
void backward_data(const Shape3x3& s, const Tensor& dy, const float* w, Tensor& dx);
// dw (K,C,3,3) (+)= the weight gradient; db (K) (+)= Σ dy when db is not null.
void backward_weights(const Shape3x3& s, const Tensor& x, const Tensor& dy, float* dw, float* db, bool accumulate);

// Whether this CPU can run it at all (AVX2 and FMA).
bool cpu_supported();

// Winograd F(2×2, 3×3) for native bf16 activations (winograd_bf16.cc): the same shapes with channel counts multiples
// of 16 and activations in nchw16c; f32 weights (transformed, then rounded to bf16), bias and weight gradients; bf16
// x, y, dy and dx. The transformed operands are rounded to bf16 and multiplied by oneDNN's bf16 matmul.
void forward_bf16(const Shape3x3& s, const Tensor& x, const float* w, const float* b, bool relu, Tensor& y);
void backward_data_bf16(const Shape3x3& s, const Tensor& dy, const float* w, Tensor& dx);
void backward_weights_bf16(const Shape3x3& s, const Tensor& x, const Tensor& dy, float* dw, float* db,
                           bool accumulate);
// Whether this CPU can run those (AVX-512 with bf16 conversions).
bool bf16_supported();

}  // namespace vgg::cpu::winograd
