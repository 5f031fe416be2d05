// Per-pixel math of the training transforms, shared by the CPU pipeline (transforms.cc), its host batch path and the
// GPU augmentation kernels (native/cuda/augment.cu): the same inline functions compile as plain C++ and, under nvcc,
// as __host__ __device__ ones, so the arithmetic the GPU runs is the arithmetic the CPU tests check.
//
// Bit-for-bit agreement needs the same rounding on both sides. nvcc contracts a*b+c into one FMA by default (one
// rounding instead of two) and the host build does not (plain x86-64, no -mfma), so in device code every multiply,
// add and divide goes through the explicitly rounded intrinsics (__fmul_rn, ...), which are never contracted.
// No CUDA header is needed by the host side; no cuDNN/cuBLAS header by either.
#pragma once
#include <cmath>
#include <cstdint>

#include "../hd.h"

namespace vgg::data::am {

VGG_HD float mul(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
VGG_HD float add(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
VGG_HD float sub(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
VGG_HD float div(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}
// std::max / std::min's exact rules (the CPU code used them), without <algorithm> in device code.
VGG_HD float maxf(float a, float b) { return a < b ? b : a; }
VGG_HD float minf(float a, float b) { return b < a ? b : a; }
VGG_HD float clamp01(float v) { return v < 0.f ? 0.f : (v > 1.f ? 1.f : v); }

// uint8 -> [0, 1], correctly rounded (torchvision's to_tensor / convert_image_dtype).
VGG_HD float unit(uint8_t v) { return div(float(v), 255.f); }

// ---- bilinear resampling, align_corners=False, no antialias (torch.nn.functional.interpolate)
// Source taps of output coordinate `o` for a window of `in_size` pixels resampled to `scale` = in_size / out_size:
// s = scale * (o + 0.5) - 0.5 clamped at 0; i0 = floor(s), i1 = i0 + 1 clamped to the window, weight s - i0.
VGG_HD void bilinear_tap(float scale, int o, int in_size, int& i0, int& i1, float& w) {
  float s = sub(mul(scale, add(float(o), 0.5f)), 0.5f);
  if (s < 0) s = 0;
  const int i = int(s);
  i0 = i;
  i1 = i + (i < in_size - 1 ? 1 : 0);
  w = sub(s, float(i));
}
VGG_HD float lerp(float a, float b, float w) { return add(a, mul(w, sub(b, a))); }

// ---- colour (torchvision.transforms.v1 functional, tensor path); values in [0, 1]
VGG_HD float gray(float r, float g, float b) { return add(add(mul(0.2989f, r), mul(0.587f, g)), mul(0.114f, b)); }
VGG_HD float brightness(float v, float f) { return clamp01(mul(f, v)); }
// Contrast blends with the mean of the grayscale image: `offset` = (1 - f) * mean, see contrast_offset.
VGG_HD float contrast(float v, float f, float offset) { return clamp01(add(mul(f, v), offset)); }
// `gray_sum`: the sum of gray() over the n pixels, accumulated as the CPU does it (float partial sums over blocks of
// kContrastBlock pixels, added in order in double).
constexpr int kContrastBlock = 256;
VGG_HD float contrast_offset(double gray_sum, double n, float f) {
  const float mean = float(gray_sum / n);
  return mul(sub(1.f, f), mean);
}
VGG_HD void saturation(float& r, float& g, float& b, float f) {
  const float gr = mul(sub(1.f, f), gray(r, g, b));
  r = clamp01(add(mul(f, r), gr));
  g = clamp01(add(mul(f, g), gr));
  b = clamp01(add(mul(f, b), gr));
}
// torchvision _rgb2hsv, shift H by hf (mod 1), _hsv2rgb.
VGG_HD void hue(float& R, float& G, float& B, float hf) {
  float r = R, g = G, b = B;
  const float maxc = maxf(r, maxf(g, b)), minc = minf(r, minf(g, b));
  const bool eqc = maxc == minc;
  const float cr = sub(maxc, minc);
  const float s = div(cr, eqc ? 1.f : maxc);
  const float crd = eqc ? 1.f : cr;
  const float rc = div(sub(maxc, r), crd), gc = div(sub(maxc, g), crd), bc = div(sub(maxc, b), crd);
  float h;
  if (maxc == r) h = sub(bc, gc);
  else if (maxc == g) h = sub(add(2.f, rc), bc);
  else h = sub(add(4.f, gc), rc);
  h = fmodf(add(div(h, 6.f), 1.f), 1.f);
  const float v = maxc;
  h = add(h, hf);
  h = sub(h, floorf(h));  // Python's % 1.0
  const float i6 = floorf(mul(h, 6.f));
  const float f = sub(mul(h, 6.f), i6);
  int ii = int(i6) % 6;
  if (ii < 0) ii += 6;
  const float p = clamp01(mul(v, sub(1.f, s))), q = clamp01(mul(v, sub(1.f, mul(s, f)))),
              t = clamp01(mul(v, sub(1.f, mul(s, sub(1.f, f)))));
  switch (ii) {
    case 0: r = v; g = t; b = p; break;
    case 1: r = q; g = v; b = p; break;
    case 2: r = p; g = v; b = t; break;
    case 3: r = p; g = q; b = v; break;
    case 4: r = t; g = p; b = v; break;
    default: r = v; g = p; b = q; break;
  }
  R = r; G = g; B = b;
}
// (v - mean) * (1 / std); `inv_std` is 1.f / std computed once.
VGG_HD float normalize(float v, float mean, float inv_std) { return mul(sub(v, mean), inv_std); }

// ---- the GPU path's description of one batch (see transforms.h: augment_const / augment_sample)
// Pipeline-level constants: source (3, h, w) uint8 CHW, output (3, oh, ow).
struct AugConst {
  int h = 0, w = 0, oh = 0, ow = 0;
  int has_jitter = 0, has_b = 0, has_c = 0, has_s = 0, has_h = 0, has_norm = 0;
  float mean[3] = {0, 0, 0}, inv_std[3] = {1, 1, 1};
};
// Per-sample parameters: the resampled window [top, top+ch) x [left, left+cw) of the source, the flip, and the colour
// jitter's order (perm: 0 brightness, 1 contrast, 2 saturation, 3 hue) and factors.
struct AugSample {
  int top = 0, left = 0, ch = 0, cw = 0, flip = 0;
  int perm[4] = {0, 1, 2, 3};
  float fb = 1, fc = 1, fs = 1, fh = 0;
};
// The JS side carries an AugSample as kAugFloats float32 values (integers here stay far below 2^24: exact).
constexpr int kAugFloats = 16;
VGG_HD void pack(const AugSample& s, float* p) {
  p[0] = float(s.top); p[1] = float(s.left); p[2] = float(s.ch); p[3] = float(s.cw); p[4] = float(s.flip);
  for (int i = 0; i < 4; ++i) p[5 + i] = float(s.perm[i]);
  p[9] = s.fb; p[10] = s.fc; p[11] = s.fs; p[12] = s.fh;
  p[13] = p[14] = p[15] = 0.f;
}
VGG_HD AugSample unpack(const float* p) {
  AugSample s;
  s.top = int(p[0]); s.left = int(p[1]); s.ch = int(p[2]); s.cw = int(p[3]); s.flip = int(p[4]);
  for (int i = 0; i < 4; ++i) s.perm[i] = int(p[5 + i]);
  s.fb = p[9]; s.fc = p[10]; s.fs = p[11]; s.fh = p[12];
  return s;
}

// Output pixel (y, x) of the resampled (and flipped) window, three channels, from a uint8 CHW source `src` of k.h x
// k.w: resize_window_impl's arithmetic (horizontal lerp of each needed row, then vertical), pixels outside the
// image read 0. A window of the image's own size is an exact copy (scale 1, weight 0).
VGG_HD void sample_px(const uint8_t* src, const AugConst& k, const AugSample& s, int y, int x, float rgb[3]) {
  int y0, y1, x0, x1;
  float wy, wx;
  bilinear_tap(div(float(s.ch), float(k.oh)), y, s.ch, y0, y1, wy);
  bilinear_tap(div(float(s.cw), float(k.ow)), s.flip ? k.ow - 1 - x : x, s.cw, x0, x1, wx);
  const int sy0 = s.top + y0, sy1 = s.top + y1, sx0 = s.left + x0, sx1 = s.left + x1;
  const int64_t plane = int64_t(k.h) * k.w;
  for (int c = 0; c < 3; ++c) {
    const uint8_t* p = src + c * plane;
    auto px = [&](int yy, int xx) -> float {
      return (yy < 0 || yy >= k.h || xx < 0 || xx >= k.w) ? 0.f : unit(p[int64_t(yy) * k.w + xx]);
    };
    const float a = lerp(px(sy0, sx0), px(sy0, sx1), wx);
    const float b = lerp(px(sy1, sx0), px(sy1, sx1), wx);
    rgb[c] = lerp(a, b, wy);
  }
}

// Colour jitter steps perm[t] for t in [t0, t1) on one pixel; contrast uses `offset` (contrast_offset).
VGG_HD void jitter_steps(const AugConst& k, const AugSample& s, int t0, int t1, float offset, float rgb[3]) {
  for (int t = t0; t < t1; ++t) {
    const int op = s.perm[t];
    if (op == 0 && k.has_b) {
      for (int c = 0; c < 3; ++c) rgb[c] = brightness(rgb[c], s.fb);
    } else if (op == 1 && k.has_c) {
      for (int c = 0; c < 3; ++c) rgb[c] = contrast(rgb[c], s.fc, offset);
    } else if (op == 2 && k.has_s) {
      saturation(rgb[0], rgb[1], rgb[2], s.fs);
    } else if (op == 3 && k.has_h) {
      hue(rgb[0], rgb[1], rgb[2], s.fh);
    }
  }
}
// Where the per-pixel work must stop for the image-wide contrast mean: the step index of contrast, or 4 (none).
VGG_HD int contrast_step(const AugConst& k, const AugSample& s) {
  if (!k.has_jitter || !k.has_c) return 4;
  for (int t = 0; t < 4; ++t)
    if (s.perm[t] == 1) return t;
  return 4;
}
// The final values written out: normalised when the pipeline ends in normalize.
VGG_HD void finish_px(const AugConst& k, float rgb[3]) {
  if (k.has_norm)
    for (int c = 0; c < 3; ++c) rgb[c] = normalize(rgb[c], k.mean[c], k.inv_std[c]);
}

}  // namespace vgg::data::am
