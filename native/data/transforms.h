// Image transforms with torchvision's semantics, executed per sample on worker threads. An image enters as uint8 CHW
// and is converted to float32 in [0, 1] (ToTensor) before the first op; every op then works on float32 CHW, so no
// rounding happens between ops (torchvision's float tensor path). Randomness: sample_key(seed, epoch, index) and a
// counter per draw (rng.h), so a sample's result does not depend on which thread or batch computes it.
#pragma once
#include <cstdint>
#include <string>
#include <vector>


namespace vgg::data {

struct Op {
  enum Kind { Resize, CenterCrop, RandomResizedCrop, HFlip, ColorJitter, Normalize } kind = Resize;
  // Resize: `short_side` > 0 resizes the shorter edge to it keeping the aspect ratio (torchvision int size),
  // else to (h, w). CenterCrop / RandomResizedCrop: output (h, w).
  int h = 0, w = 0, short_side = 0, max_size = 0;
  double scale[2] = {0.08, 1.0}, ratio[2] = {3.0 / 4.0, 4.0 / 3.0};
  double p = 0.5;
  // ColorJitter ranges [lo, hi]; `has_*` false when the factor was 0/None.
  bool has_b = false, has_c = false, has_s = false, has_h = false;
  float b[2] = {1, 1}, c[2] = {1, 1}, s[2] = {1, 1}, hu[2] = {0, 0};
  float mean[3] = {0, 0, 0}, std[3] = {1, 1, 1};
};
using Pipeline = std::vector<Op>;

struct Image {  // float32 CHW
  int c = 0, h = 0, w = 0;
  std::vector<float> data;
};

uint64_t sample_key(uint64_t seed, uint64_t epoch, uint64_t index);
// Output (c, h, w) of the pipeline for an input of (c, h, w); throws on invalid sizes.
void output_shape(const Pipeline& ops, int& c, int& h, int& w);
// Runs the pipeline on one uint8 CHW image, writing float32 CHW of output_shape to `out`.
void run_pipeline(const Pipeline& ops, const uint8_t* src, int c, int h, int w, uint64_t key, float* out);

// Pieces, exposed for tests and reuse.
void resize_window(const Image& in, int top, int left, int ch, int cw, int oh, int ow, Image& out);  // bilinear
void resize_size(int h, int w, const Op& op, int& oh, int& ow);
void rrc_params(const Op& op, int h, int w, uint64_t key, uint64_t counter, int& top, int& left, int& ch, int& cw);
// The draws of randomHorizontalFlip and colorJitter for the op whose draws start at `counter` (op index * 64).
bool flip_draw(const Op& op, uint64_t key, uint64_t counter);
void jitter_draw(const Op& op, uint64_t key, uint64_t counter, int perm[4], float& fb, float& fc, float& fs, float& fh);

}  // namespace vgg::data
