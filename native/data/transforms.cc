// Transforms on float32 CHW images, following torchvision.transforms.v1 functional definitions (tensor path).
// The per-pixel arithmetic lives in data/augment_math.h, shared with the GPU augmentation kernels.
#include "data/transforms.h"
#include "data/augment.h"

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
  const float sy = am::div(float(ch), float(oh)), sx = am::div(float(cw), float(ow));
  for (int y = 0; y < oh; ++y) am::bilinear_tap(sy, y, ch, y0[y], y1[y], ly[y]);
  for (int x = 0; x < ow; ++x) {
    int xo = mirror ? ow - 1 - x : x;
    am::bilinear_tap(sx, x, cw, x0[xo], x1[xo], lx[xo]);
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
        for (int x = 0; x < ow; ++x) dst[x] = am::lerp(src[x0[x]], src[x1[x]], lx[x]);
      } else {
        auto px = [&](int xx) -> float {
          xx += left;
          return (sy < 0 || sy >= in.h || xx < 0 || xx >= in.w) ? 0.f : plane[size_t(sy) * in.w + xx];
        };
        for (int x = 0; x < ow; ++x) dst[x] = am::lerp(px(x0[x]), px(x1[x]), lx[x]);
      }
    }
    float* o = out.data.data() + size_t(c) * oh * ow;
    for (int y = 0; y < oh; ++y, o += ow) {
      const float* a = rows.data() + size_t(y0[y] - r_lo) * ow;
      const float* b = rows.data() + size_t(y1[y] - r_lo) * ow;
      const float w1 = ly[y];
      for (int x = 0; x < ow; ++x) o[x] = am::lerp(a[x], b[x], w1);
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

static void adjust_brightness(Image& im, float f) {
  for (float& v : im.data) v = am::brightness(v, f);
}
// Sum of the grayscale image: float partial sums over blocks of am::kContrastBlock pixels (vectorised), accumulated
// in double. augment_batch_host and the GPU kernel reproduce this order exactly.
static double gray_sum(const float* r, const float* g, const float* b, size_t n, bool rgb) {
  double sum = 0;
  for (size_t i0 = 0; i0 < n; i0 += am::kContrastBlock) {
    const size_t i1 = std::min(n, i0 + am::kContrastBlock);
    float part = 0.f;
    if (rgb)
      for (size_t i = i0; i < i1; ++i) part += am::gray(r[i], g[i], b[i]);
    else
      for (size_t i = i0; i < i1; ++i) part += r[i];
    sum += part;
  }
  return sum;
}
static void adjust_contrast(Image& im, float f) {
  const size_t n = size_t(im.h) * im.w;
  const float *r = im.data.data(), *g = r + n, *b = g + n;
  const float offset = am::contrast_offset(gray_sum(r, g, b, n, im.c == 3), double(n), f);
  for (float& v : im.data) v = am::contrast(v, f, offset);
}
static void adjust_saturation(Image& im, float f) {
  const size_t n = size_t(im.h) * im.w;
  float *r = im.data.data(), *g = r + n, *b = g + n;
  for (size_t i = 0; i < n; ++i) am::saturation(r[i], g[i], b[i], f);
}
static void adjust_hue(Image& im, float hf) {
  const size_t n = size_t(im.h) * im.w;
  float *R = im.data.data(), *G = R + n, *B = G + n;
  for (size_t i = 0; i < n; ++i) am::hue(R[i], G[i], B[i], hf);
}

bool flip_draw(const Op& op, uint64_t key, uint64_t counter) { return u01(key, counter) < op.p; }

void jitter_draw(const Op& op, uint64_t key, uint64_t ctr, int perm[4], float& fb, float& fc, float& fs, float& fh) {
  for (int i = 0; i < 4; ++i) perm[i] = i;
  for (int i = 3; i > 0; --i) {
    int j = int(u01(key, ctr + uint64_t(i)) * (i + 1));
    std::swap(perm[i], perm[j]);
  }
  fb = float(op.b[0] + u01(key, ctr + 4) * (op.b[1] - op.b[0]));
  fc = float(op.c[0] + u01(key, ctr + 5) * (op.c[1] - op.c[0]));
  fs = float(op.s[0] + u01(key, ctr + 6) * (op.s[1] - op.s[0]));
  fh = float(op.hu[0] + u01(key, ctr + 7) * (op.hu[1] - op.hu[0]));
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
  for (int v = 0; v < 256; ++v) lut[v] = am::unit(uint8_t(v));
  for (size_t i = 0; i < a.data.size(); ++i) a.data[i] = lut[src[i]];
  size_t n_ops = ops.size();
  const bool final_norm = n_ops > 0 && ops[n_ops - 1].kind == Op::Normalize;
  if (final_norm) --n_ops;  // applied while writing `out`
  // A flip right after a resampling op is fused into it (same draw, same result).
  auto fused_flip = [&](size_t k) -> bool {
    if (k + 1 >= n_ops || ops[k + 1].kind != Op::HFlip) return false;
    return flip_draw(ops[k + 1], key, uint64_t(k + 1) * 64);
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
        if (flip_draw(op, key, ctr)) hflip(a);
        break;
      case Op::ColorJitter: {
        int perm[4];
        float fb, fc, fs, fh;
        jitter_draw(op, key, ctr, perm, fb, fc, fs, fh);
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
          for (size_t i = 0; i < n; ++i) p[i] = am::normalize(p[i], m, is);
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
      for (size_t i = 0; i < n; ++i) o[i] = am::normalize(p[i], m, is);
    }
  } else {
    std::memcpy(out, a.data.data(), a.data.size() * sizeof(float));
  }
}

}  // namespace vgg::data

// ---- augmentation on the GPU: parameters and the host twin of the kernels ----------------------------------------

namespace vgg::data {

namespace {
// Positions of the supported ops in `ops` (-1: absent); throws with the reason when the pipeline is not supported.
struct AugLayout {
  int geo = -1, flip = -1, jitter = -1, norm = -1;
};
AugLayout augment_layout(const Pipeline& ops, std::string* why) {
  AugLayout l;
  size_t k = 0;
  auto fail = [&](const std::string& s) {
    if (why) *why = s;
    return l;
  };
  if (k < ops.size() && (ops[k].kind == Op::RandomResizedCrop || ops[k].kind == Op::Resize)) l.geo = int(k++);
  if (k < ops.size() && ops[k].kind == Op::HFlip) l.flip = int(k++);
  if (k < ops.size() && ops[k].kind == Op::ColorJitter) l.jitter = int(k++);
  if (k < ops.size() && ops[k].kind == Op::Normalize) l.norm = int(k++);
  if (k < ops.size()) {
    static const char* names[] = {"resize", "centerCrop", "randomResizedCrop", "randomHorizontalFlip", "colorJitter",
                                  "normalize"};
    return fail(strprintf("transform %zu (%s) is not supported there: the GPU runs [randomResizedCrop | resize]? "
                          "[randomHorizontalFlip]? [colorJitter]? [normalize]? in that order",
                          k, names[ops[k].kind]));
  }
  if (why) why->clear();
  return l;
}
}  // namespace

std::string augment_unsupported(const Pipeline& ops) {
  std::string why;
  augment_layout(ops, &why);
  return why;
}

am::AugConst augment_const(const Pipeline& ops, int h, int w) {
  std::string why;
  const AugLayout l = augment_layout(ops, &why);
  VGG_CHECK(why.empty(), "augment: %s", why.c_str());
  VGG_CHECK(h > 0 && w > 0, "augment: empty source image %dx%d", h, w);
  am::AugConst k;
  k.h = h;
  k.w = w;
  k.oh = h;
  k.ow = w;
  if (l.geo >= 0) {
    const Op& op = ops[size_t(l.geo)];
    if (op.kind == Op::Resize) {
      resize_size(h, w, op, k.oh, k.ow);
    } else {
      k.oh = op.h;
      k.ow = op.w;
    }
  }
  if (l.jitter >= 0) {
    const Op& op = ops[size_t(l.jitter)];
    k.has_jitter = 1;
    k.has_b = op.has_b;
    k.has_c = op.has_c;
    k.has_s = op.has_s;
    k.has_h = op.has_h;
  }
  if (l.norm >= 0) {
    const Op& op = ops[size_t(l.norm)];
    k.has_norm = 1;
    for (int c = 0; c < 3; ++c) {
      k.mean[c] = op.mean[c];
      k.inv_std[c] = 1.f / op.std[c];  // as run_pipeline's `is`
    }
  }
  return k;
}

am::AugSample augment_sample(const Pipeline& ops, int h, int w, uint64_t key) {
  std::string why;
  const AugLayout l = augment_layout(ops, &why);
  VGG_CHECK(why.empty(), "augment: %s", why.c_str());
  am::AugSample s;
  s.top = 0;
  s.left = 0;
  s.ch = h;
  s.cw = w;
  // Counters: op k owns draws [64k, 64k + 64), as in run_pipeline.
  if (l.geo >= 0 && ops[size_t(l.geo)].kind == Op::RandomResizedCrop)
    rrc_params(ops[size_t(l.geo)], h, w, key, uint64_t(l.geo) * 64, s.top, s.left, s.ch, s.cw);
  if (l.flip >= 0) s.flip = flip_draw(ops[size_t(l.flip)], key, uint64_t(l.flip) * 64) ? 1 : 0;
  if (l.jitter >= 0)
    jitter_draw(ops[size_t(l.jitter)], key, uint64_t(l.jitter) * 64, s.perm, s.fb, s.fc, s.fs, s.fh);
  return s;
}

void augment_batch_host(const am::AugConst& k, const uint8_t* src, const float* params, int64_t n, float* out) {
  const size_t hw = size_t(k.oh) * k.ow, in_px = size_t(k.h) * k.w;
  std::vector<float> buf(3 * hw);
  for (int64_t i = 0; i < n; ++i) {
    const am::AugSample s = am::unpack(params + i * am::kAugFloats);
    const uint8_t* img = src + size_t(i) * 3 * in_px;
    float* o = out + size_t(i) * 3 * hw;
    const int tc = am::contrast_step(k, s);
    // Pass 1 (the kernel's first pass): resample, flip, jitter steps before contrast.
    for (int y = 0; y < k.oh; ++y)
      for (int x = 0; x < k.ow; ++x) {
        float rgb[3];
        am::sample_px(img, k, s, y, x, rgb);
        am::jitter_steps(k, s, 0, tc, 0.f, rgb);
        const size_t p = size_t(y) * k.ow + x;
        for (int c = 0; c < 3; ++c) buf[c * hw + p] = rgb[c];
      }
    // The contrast mean over the whole image, then pass 2: contrast and the remaining steps.
    const float offset =
        tc < 4 ? am::contrast_offset(gray_sum(buf.data(), buf.data() + hw, buf.data() + 2 * hw, hw, true),
                                     double(hw), s.fc)
               : 0.f;
    for (size_t p = 0; p < hw; ++p) {
      float rgb[3] = {buf[p], buf[hw + p], buf[2 * hw + p]};
      am::jitter_steps(k, s, tc, 4, offset, rgb);
      am::finish_px(k, rgb);
      for (int c = 0; c < 3; ++c) o[c * hw + p] = rgb[c];
    }
  }
}

}  // namespace vgg::data
