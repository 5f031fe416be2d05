// Transforms on float32 CHW images, following torchvision.transforms.v1 functional definitions (tensor path).
#include "data/transforms.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "rng.h"
#include "tensor.h"

namespace vgg::data {

uint64_t sample_key(uint64_t seed, uint64_t epoch, uint64_t index) {
  uint64_t k = mix64(seed);
  k = mix64(k ^ epoch);
  return mix64(k ^ index);
}

static inline double u01(uint64_t key, uint64_t counter) { return double(uniform01(key, counter)); }
// Python's round(): half to even (the default FP rounding mode).
static inline int pyround(double x) { return int(std::nearbyint(x)); }
static inline int floordiv2(int a) { return a >= 0 ? a / 2 : -((-a + 1) / 2); }

void resize_size(int h, int w, const Op& op, int& oh, int& ow) {
  if (op.short_side > 0) {
    int short_ = std::min(h, w), long_ = std::max(h, w);
    int new_short = op.short_side, new_long = int(double(op.short_side) * long_ / short_);
    if (op.max_size > 0 && new_long > op.max_size) {
      new_short = int(double(op.max_size) * new_short / new_long);
      new_long = op.max_size;
    }
    if (w <= h) { ow = new_short; oh = new_long; } else { oh = new_short; ow = new_long; }
  } else {
    oh = op.h;
    ow = op.w;
  }
  VGG_CHECK(oh > 0 && ow > 0, "resize: output size %dx%d from %dx%d is empty", oh, ow, h, w);
}

void output_shape(const Pipeline& ops, int& c, int& h, int& w) {
  VGG_CHECK(c == 3 || c == 1, "transforms: expected 1 or 3 channels, got %d", c);
  for (const Op& op : ops) {
    switch (op.kind) {
      case Op::Resize: resize_size(h, w, op, h, w); break;
      case Op::CenterCrop:
      case Op::RandomResizedCrop: h = op.h; w = op.w; break;
      case Op::ColorJitter:
        VGG_CHECK(c == 3 || !(op.has_s || op.has_h), "colorJitter: saturation/hue need 3 channels, got %d", c);
        break;
      case Op::Normalize: VGG_CHECK(c == 3, "normalize: expected 3 channels, got %d", c); break;
      default: break;
    }
  }
}

// Bilinear, align_corners=False, no antialias (torch.nn.functional.interpolate on the window [top, top+ch) x
// [left, left+cw) of `in`, as torchvision's resized_crop = crop then resize). Out-of-image window pixels read 0.
// Separable: each needed window row is resampled horizontally once, then output rows blend two of those rows.
// `mirror` writes the result horizontally flipped (a fused randomHorizontalFlip).
static void resize_window_impl(const Image& in, int top, int left, int ch, int cw, int oh, int ow, bool mirror,
                               Image& out) {
  out.c = in.c; out.h = oh; out.w = ow;
  out.data.resize(size_t(in.c) * oh * ow);
  thread_local std::vector<int> y0, y1, x0, x1;
  thread_local std::vector<float> ly, lx, rows;
  y0.resize(oh); y1.resize(oh); ly.resize(oh);
  x0.resize(ow); x1.resize(ow); lx.resize(ow);
  const float sy = float(ch) / float(oh), sx = float(cw) / float(ow);
  for (int y = 0; y < oh; ++y) {
    float s = sy * (y + 0.5f) - 0.5f;
    if (s < 0) s = 0;
    int i = int(s);
    y0[y] = i; y1[y] = i + (i < ch - 1 ? 1 : 0); ly[y] = s - i;
  }
  for (int x = 0; x < ow; ++x) {
    float s = sx * (x + 0.5f) - 0.5f;
    if (s < 0) s = 0;
    int i = int(s);
    int xo = mirror ? ow - 1 - x : x;
    x0[xo] = i; x1[xo] = i + (i < cw - 1 ? 1 : 0); lx[xo] = s - i;
  }
  // window rows actually used
  const int r_lo = y0[0], r_hi = y1[oh - 1];
  const int nr = r_hi - r_lo + 1;
  rows.resize(size_t(nr) * ow);
  const bool inside = top >= 0 && left >= 0 && top + ch <= in.h && left + cw <= in.w;
  for (int c = 0; c < in.c; ++c) {
    const float* plane = in.data.data() + size_t(c) * in.h * in.w;
    for (int r = 0; r < nr; ++r) {
      float* dst = rows.data() + size_t(r) * ow;
      const int sy = r_lo + r + top;
      if (inside) {
        const float* src = plane + size_t(sy) * in.w + left;
        for (int x = 0; x < ow; ++x) dst[x] = src[x0[x]] + lx[x] * (src[x1[x]] - src[x0[x]]);
      } else {
        auto px = [&](int xx) -> float {
          xx += left;
          return (sy < 0 || sy >= in.h || xx < 0 || xx >= in.w) ? 0.f : plane[size_t(sy) * in.w + xx];
        };
        for (int x = 0; x < ow; ++x) dst[x] = px(x0[x]) + lx[x] * (px(x1[x]) - px(x0[x]));
      }
    }
    float* o = out.data.data() + size_t(c) * oh * ow;
    for (int y = 0; y < oh; ++y, o += ow) {
      const float* a = rows.data() + size_t(y0[y] - r_lo) * ow;
      const float* b = rows.data() + size_t(y1[y] - r_lo) * ow;
      const float w1 = ly[y];
      for (int x = 0; x < ow; ++x) o[x] = a[x] + w1 * (b[x] - a[x]);
    }
  }
}

void resize_window(const Image& in, int top, int left, int ch, int cw, int oh, int ow, Image& out) {
  resize_window_impl(in, top, left, ch, cw, oh, ow, false, out);
}

static void crop(const Image& in, int top, int left, int ch, int cw, Image& out) {
  out.c = in.c; out.h = ch; out.w = cw;
  out.data.assign(size_t(in.c) * ch * cw, 0.f);
  for (int c = 0; c < in.c; ++c)
    for (int y = 0; y < ch; ++y) {
      int sy = y + top;
      if (sy < 0 || sy >= in.h) continue;
      const float* src = in.data.data() + (size_t(c) * in.h + sy) * in.w;
      float* dst = out.data.data() + (size_t(c) * ch + y) * cw;
      for (int x = 0; x < cw; ++x) {
        int sx = x + left;
        if (sx >= 0 && sx < in.w) dst[x] = src[sx];
      }
    }
}

// torchvision RandomResizedCrop.get_params: 10 attempts, then the central crop clipped to the ratio range.
void rrc_params(const Op& op, int height, int width, uint64_t key, uint64_t counter, int& top, int& left, int& ch,
                int& cw) {
  const double area = double(height) * width;
  const double lr0 = std::log(op.ratio[0]), lr1 = std::log(op.ratio[1]);
  for (int attempt = 0; attempt < 10; ++attempt) {
    uint64_t k = counter + uint64_t(attempt) * 4;
    double target_area = area * (op.scale[0] + u01(key, k) * (op.scale[1] - op.scale[0]));
    double aspect = std::exp(lr0 + u01(key, k + 1) * (lr1 - lr0));
    int w = pyround(std::sqrt(target_area * aspect));
    int h = pyround(std::sqrt(target_area / aspect));
    if (w > 0 && w <= width && h > 0 && h <= height) {
      top = int(u01(key, k + 2) * (height - h + 1));
      left = int(u01(key, k + 3) * (width - w + 1));
      ch = h; cw = w;
      return;
    }
  }
  double in_ratio = double(width) / height;
  double rmin = std::min(op.ratio[0], op.ratio[1]), rmax = std::max(op.ratio[0], op.ratio[1]);
  if (in_ratio < rmin) { cw = width; ch = pyround(cw / rmin); }
  else if (in_ratio > rmax) { ch = height; cw = pyround(ch * rmax); }
  else { cw = width; ch = height; }
  top = (height - ch) / 2;
  left = (width - cw) / 2;
}

static inline float clamp01(float v) { return v < 0.f ? 0.f : (v > 1.f ? 1.f : v); }
static inline float gray(float r, float g, float b) { return 0.2989f * r + 0.587f * g + 0.114f * b; }

static void adjust_brightness(Image& im, float f) {
  for (float& v : im.data) v = clamp01(f * v);
}
static void adjust_contrast(Image& im, float f) {
  const size_t n = size_t(im.h) * im.w;
  double sum = 0;  // float partial sums over blocks (vectorised), accumulated in double
  const float *r = im.data.data(), *g = r + n, *b = g + n;
  for (size_t i0 = 0; i0 < n; i0 += 256) {
    const size_t i1 = std::min(n, i0 + 256);
    float part = 0.f;
    if (im.c == 3)
      for (size_t i = i0; i < i1; ++i) part += gray(r[i], g[i], b[i]);
    else
      for (size_t i = i0; i < i1; ++i) part += r[i];
    sum += part;
  }
  const float mean = float(sum / double(n)), add = (1.f - f) * mean;
  for (float& v : im.data) v = clamp01(f * v + add);
}
static void adjust_saturation(Image& im, float f) {
  const size_t n = size_t(im.h) * im.w;
  float *r = im.data.data(), *g = r + n, *b = g + n;
  const float f1 = 1.f - f;
  for (size_t i = 0; i < n; ++i) {
    const float gr = f1 * gray(r[i], g[i], b[i]);
    r[i] = clamp01(f * r[i] + gr);
    g[i] = clamp01(f * g[i] + gr);
    b[i] = clamp01(f * b[i] + gr);
  }
}
// torchvision _rgb2hsv / _hsv2rgb.
static void adjust_hue(Image& im, float hf) {
  const size_t n = size_t(im.h) * im.w;
  float *R = im.data.data(), *G = R + n, *B = G + n;
  for (size_t i = 0; i < n; ++i) {
    float r = R[i], g = G[i], b = B[i];
    float maxc = std::max(r, std::max(g, b)), minc = std::min(r, std::min(g, b));
    bool eqc = maxc == minc;
    float cr = maxc - minc;
    float s = cr / (eqc ? 1.f : maxc);
    float crd = eqc ? 1.f : cr;
    float rc = (maxc - r) / crd, gc = (maxc - g) / crd, bc = (maxc - b) / crd;
    float h;
    if (maxc == r) h = bc - gc;
    else if (maxc == g) h = 2.f + rc - bc;
    else h = 4.f + gc - rc;
    h = std::fmod(h / 6.f + 1.f, 1.f);
    float v = maxc;
    h = h + hf;
    h = h - std::floor(h);  // Python % 1.0
    float i6 = std::floor(h * 6.f);
    float f = h * 6.f - i6;
    int ii = int(i6) % 6;
    if (ii < 0) ii += 6;
    float p = clamp01(v * (1.f - s)), q = clamp01(v * (1.f - s * f)), t = clamp01(v * (1.f - s * (1.f - f)));
    switch (ii) {
      case 0: r = v; g = t; b = p; break;
      case 1: r = q; g = v; b = p; break;
      case 2: r = p; g = v; b = t; break;
      case 3: r = p; g = q; b = v; break;
      case 4: r = t; g = p; b = v; break;
      default: r = v; g = p; b = q; break;
    }
    R[i] = r; G[i] = g; B[i] = b;
  }
}

static void hflip(Image& im) {
  for (int c = 0; c < im.c; ++c)
    for (int y = 0; y < im.h; ++y) {
      float* row = im.data.data() + (size_t(c) * im.h + y) * im.w;
      std::reverse(row, row + im.w);
    }
}

void run_pipeline(const Pipeline& ops, const uint8_t* src, int c, int h, int w, uint64_t key, float* out) {
  thread_local Image a, b;  // reused: no page faults per sample
  a.c = c; a.h = h; a.w = w;
  a.data.resize(size_t(c) * h * w);
  float lut[256];  // v / 255 correctly rounded, as torchvision's to_tensor / convert_image_dtype
  for (int v = 0; v < 256; ++v) lut[v] = float(v) / 255.f;
  for (size_t i = 0; i < a.data.size(); ++i) a.data[i] = lut[src[i]];
  size_t n_ops = ops.size();
  const bool final_norm = n_ops > 0 && ops[n_ops - 1].kind == Op::Normalize;
  if (final_norm) --n_ops;  // applied while writing `out`
  // A flip right after a resampling op is fused into it (same draw, same result).
  auto fused_flip = [&](size_t k) -> bool {
    if (k + 1 >= n_ops || ops[k + 1].kind != Op::HFlip) return false;
    return u01(key, uint64_t(k + 1) * 64) < ops[k + 1].p;
  };
  for (size_t k = 0; k < n_ops; ++k) {
    const Op& op = ops[k];
    const uint64_t ctr = uint64_t(k) * 64;  // each op owns 64 draws
    switch (op.kind) {
      case Op::Resize: {
        int oh, ow;
        resize_size(a.h, a.w, op, oh, ow);
        if (oh == a.h && ow == a.w) break;  // torchvision returns the image unchanged
        bool flip = fused_flip(k);
        resize_window_impl(a, 0, 0, a.h, a.w, oh, ow, flip, b);
        std::swap(a, b);
        if (k + 1 < n_ops && ops[k + 1].kind == Op::HFlip) ++k;
        break;
      }
      case Op::CenterCrop: {
        if (op.h == a.h && op.w == a.w) break;
        int top = op.h > a.h ? -floordiv2(op.h - a.h) : pyround((a.h - op.h) / 2.0);
        int left = op.w > a.w ? -floordiv2(op.w - a.w) : pyround((a.w - op.w) / 2.0);
        crop(a, top, left, op.h, op.w, b);
        std::swap(a, b);
        break;
      }
      case Op::RandomResizedCrop: {
        int top, left, ch, cw;
        rrc_params(op, a.h, a.w, key, ctr, top, left, ch, cw);
        bool flip = fused_flip(k);
        resize_window_impl(a, top, left, ch, cw, op.h, op.w, flip, b);
        std::swap(a, b);
        if (k + 1 < n_ops && ops[k + 1].kind == Op::HFlip) ++k;
        break;
      }
      case Op::HFlip:
        if (u01(key, ctr) < op.p) hflip(a);
        break;
      case Op::ColorJitter: {
        int perm[4] = {0, 1, 2, 3};
        for (int i = 3; i > 0; --i) {
          int j = int(u01(key, ctr + uint64_t(i)) * (i + 1));
          std::swap(perm[i], perm[j]);
        }
        float fb = float(op.b[0] + u01(key, ctr + 4) * (op.b[1] - op.b[0]));
        float fc = float(op.c[0] + u01(key, ctr + 5) * (op.c[1] - op.c[0]));
        float fs = float(op.s[0] + u01(key, ctr + 6) * (op.s[1] - op.s[0]));
        float fh = float(op.hu[0] + u01(key, ctr + 7) * (op.hu[1] - op.hu[0]));
        for (int t : perm) {
          if (t == 0 && op.has_b) adjust_brightness(a, fb);
          if (t == 1 && op.has_c) adjust_contrast(a, fc);
          if (t == 2 && op.has_s) adjust_saturation(a, fs);
          if (t == 3 && op.has_h) adjust_hue(a, fh);
        }
        break;
      }
      case Op::Normalize: {
        const size_t n = size_t(a.h) * a.w;
        for (int ch = 0; ch < a.c; ++ch) {
          const float m = op.mean[ch], is = 1.f / op.std[ch];
          float* p = a.data.data() + ch * n;
          for (size_t i = 0; i < n; ++i) p[i] = (p[i] - m) * is;
        }
        break;
      }
    }
  }
  if (final_norm) {
    const Op& op = ops.back();
    const size_t n = size_t(a.h) * a.w;
    for (int ch = 0; ch < a.c; ++ch) {
      const float m = op.mean[ch], is = 1.f / op.std[ch];
      const float* p = a.data.data() + ch * n;
      float* o = out + ch * n;
      for (size_t i = 0; i < n; ++i) o[i] = (p[i] - m) * is;
    }
  } else {
    std::memcpy(out, a.data.data(), a.data.size() * sizeof(float));
  }
}

}  // namespace vgg::data
