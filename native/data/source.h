// Where samples come from: STL10 .bin files read with positioned reads (pread; nothing is loaded up front but the
// labels), or decoded images held in native memory (ImageFolder). Reads are thread-safe.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace vgg::data {

struct Source {
  virtual ~Source() = default;
  virtual int64_t size() const = 0;
  virtual int label(int64_t i) const = 0;
  virtual void shape(int64_t i, int& c, int& h, int& w) const = 0;
  virtual void read(int64_t i, uint8_t* dst_chw) const = 0;  // c*h*w bytes
  void check_index(int64_t i) const;
};

constexpr int kStlSide = 96;
constexpr int64_t kStlBytes = 3 * kStlSide * kStlSide;

// One or more (X, y) file pairs concatenated (train+unlabeled), optionally restricted to `subset` indices (a fold).
struct Stl10Source : Source {
  struct Part {
    std::string x_path;
    int fd = -1;
    int64_t count = 0;
    std::vector<int32_t> labels;  // 0..9, empty when the part has no labels (-1)
  };
  std::vector<Part> parts;
  std::vector<int64_t> subset;  // empty: all
  int64_t total = 0;

  // y_path empty: unlabeled. Validates sizes and labels; throws vgg::Error naming the file.
  void add_part(const std::string& x_path, const std::string& y_path);
  void set_subset(std::vector<int64_t> idx);
  ~Stl10Source() override;
  int64_t size() const override { return subset.empty() ? total : int64_t(subset.size()); }
  int label(int64_t i) const override;
  void shape(int64_t, int& c, int& h, int& w) const override { c = 3; h = w = kStlSide; }
  void read(int64_t i, uint8_t* dst) const override;

 private:
  void locate(int64_t i, const Part*& part, int64_t& j) const;
};

struct MemorySource : Source {
  struct Item { int c, h, w, label; std::vector<uint8_t> chw; };
  std::vector<Item> items;
  // Copies one image of (c, h, w) in: planar (CHW) bytes, or interleaved (HWC, as decoders give it) when `hwc`.
  // `index` names it in the error when nbytes does not match the shape.
  void add(const uint8_t* bytes, size_t nbytes, int c, int h, int w, int label, bool hwc, size_t index);
  int64_t size() const override { return int64_t(items.size()); }
  int label(int64_t i) const override { check_index(i); return items[size_t(i)].label; }
  void shape(int64_t i, int& c, int& h, int& w) const override;
  void read(int64_t i, uint8_t* dst) const override;
};

}  // namespace vgg::data
