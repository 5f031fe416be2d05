// Tensor storage and the CPU caching allocator. CUDA memory goes through cuda/cuda_hooks.h.
#include "tensor.h"

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>

#include "cuda/cuda_hooks.h"

namespace vgg {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::BF16: return 2;
    case DType::I32: return 4;
    case DType::I64: return 8;
    case DType::U8: return 1;
    case DType::I8: return 1;
  }
  return 0;
}
const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "float32";
    case DType::BF16: return "bfloat16";
    case DType::I32: return "int32";
    case DType::I64: return "int64";
    case DType::U8: return "uint8";
    case DType::I8: return "int8";
  }
  return "?";
}
const char* layout_name(Layout l) {
  switch (l) {
    case Layout::Contiguous: return "nchw";
    case Layout::ChannelsLast: return "nhwc";
    case Layout::Blocked8: return "nchw8c";
    case Layout::Blocked16: return "nchw16c";
  }
  return "?";
}
const char* device_name(Device d) { return d == Device::CUDA ? "cuda" : "cpu"; }
DType dtype_from_name(const std::string& s) {
  if (s == "float32") return DType::F32;
  if (s == "bfloat16") return DType::BF16;
  if (s == "int32") return DType::I32;
  if (s == "int64") return DType::I64;
  if (s == "uint8") return DType::U8;
  if (s == "int8") return DType::I8;
  throw RangeError("unknown dtype '" + s + "' (expected float32, bfloat16, int32, int64, uint8 or int8)");
}
Device device_from_name(const std::string& s) {
  if (s == "cpu") return Device::CPU;
  if (s == "cuda") return Device::CUDA;
  throw RangeError("unknown device '" + s + "' (expected cpu or cuda)");
}

std::string strprintf(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char buf[1024];
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  return buf;
}

std::string shape_str(const Shape& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); i++) r += (i ? "," : "") + std::to_string(s[i]);
  return r + "]";
}
int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) {
    VGG_CHECK_RANGE(d >= 0, "shape %s has a negative dimension", shape_str(s).c_str());
    VGG_CHECK_RANGE(d == 0 || n <= (int64_t(1) << 50) / d, "shape %s has too many elements", shape_str(s).c_str());
    n *= d;
  }
  return n;
}

Storage::Storage(size_t n, Device d) : nbytes(n), device(d) { ptr = device_alloc(d, n); }
Storage::~Storage() {
  // A copy still writing into the buffer: order the default stream after it before the block can be reused.
  if (pending) cuda_order_after_copy_noexcept(pending);
  device_free(device, ptr, nbytes);
}

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device, Layout layout) {
  Tensor t;
  t.shape = shape;
  t.dtype = dtype;
  t.layout = layout;
  VGG_CHECK(layout == Layout::Contiguous || shape.size() == 4, "%s layout needs a 4-D shape, got %s",
            layout_name(layout), shape_str(shape).c_str());
  const int block = layout_block(layout);
  VGG_CHECK(!block || device == Device::CPU, "%s layout is the CPU backend's own: a %s tensor must be nchw or nhwc",
            layout_name(layout), device_name(device));
  VGG_CHECK(!block || shape[1] % block == 0, "%s layout needs a channel count divisible by %d, got shape %s",
            layout_name(layout), block, shape_str(shape).c_str());
  t.storage = std::make_shared<Storage>(size_t(shape_numel(shape)) * dtype_size(dtype), device);
  return t;
}
Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device, Layout layout) {
  Tensor t = empty(shape, dtype, device, layout);
  if (device == Device::CPU)
    std::memset(t.raw(), 0, t.nbytes());
  else
    cuda_zero(t.raw(), t.nbytes());
  return t;
}
Tensor Tensor::view(const Shape& new_shape) const {
  VGG_CHECK(layout == Layout::Contiguous, "view: %s is not contiguous", describe().c_str());
  VGG_CHECK(shape_numel(new_shape) == numel(), "view: cannot view %s as %s", describe().c_str(),
            shape_str(new_shape).c_str());
  Tensor t = *this;
  t.shape = new_shape;
  return t;
}
std::string Tensor::describe() const {
  return std::string(dtype_name(dtype)) + shape_str(shape) + " " + device_name(device()) +
         (layout == Layout::ChannelsLast ? " channels-last" : layout_block(layout) ? std::string(" ") + layout_name(layout) : "");
}

void check_defined(const Tensor& t, const char* what) { VGG_CHECK(t.defined(), "%s: tensor is missing", what); }
void check_dtype(const Tensor& t, DType dt, const char* what) {
  check_defined(t, what);
  VGG_CHECK_TYPE(t.dtype == dt, "%s: expected %s, got %s", what, dtype_name(dt), dtype_name(t.dtype));
}
void check_device(const Tensor& t, Device d, const char* what) {
  check_defined(t, what);
  VGG_CHECK(t.device() == d, "%s: expected a tensor on %s, got one on %s", what, device_name(d),
            device_name(t.device()));
}
void check_ndim(const Tensor& t, int n, const char* what) {
  check_defined(t, what);
  VGG_CHECK(t.ndim() == n, "%s: expected %d dimensions, got shape %s", what, n, shape_str(t.shape).c_str());
}
void check_shape(const Tensor& t, const Shape& s, const char* what) {
  check_defined(t, what);
  VGG_CHECK(t.shape == s, "%s: expected shape %s, got %s", what, shape_str(s).c_str(), shape_str(t.shape).c_str());
}

// ---- CPU caching allocator: exact-size free lists (a training loop asks for the same sizes every step).
namespace {
struct HostCache {
  std::mutex mu;
  std::multimap<size_t, void*> free_blocks;
  MemoryStats stats;
  ~HostCache() {
    for (auto& kv : free_blocks) std::free(kv.second);
  }
};
HostCache& host_cache() {
  static HostCache* c = new HostCache();  // never destroyed: tensors may be freed by finalisers at exit
  return *c;
}
constexpr size_t kAlign = 64;
size_t round_up(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }
}  // namespace

void* device_alloc(Device d, size_t nbytes) {
  if (d == Device::CUDA) return cuda_alloc(nbytes);
  size_t n = round_up(nbytes ? nbytes : 1);
  HostCache& c = host_cache();
  {
    std::lock_guard<std::mutex> g(c.mu);
    auto it = c.free_blocks.find(n);
    if (it != c.free_blocks.end()) {
      void* p = it->second;
      c.free_blocks.erase(it);
      c.stats.cached -= n;
      c.stats.in_use += n;
      if (c.stats.in_use > c.stats.peak) c.stats.peak = c.stats.in_use;
      return p;
    }
  }
  void* p = std::aligned_alloc(kAlign, n);
  if (!p) {
    device_empty_cache(Device::CPU);
    p = std::aligned_alloc(kAlign, n);
  }
  VGG_CHECK(p != nullptr, "out of host memory: asked %zu bytes", n);
  std::lock_guard<std::mutex> g(c.mu);
  c.stats.in_use += n;
  if (c.stats.in_use > c.stats.peak) c.stats.peak = c.stats.in_use;
  return p;
}

void device_free(Device d, void* p, size_t nbytes) {
  if (!p) return;
  if (d == Device::CUDA) return cuda_free(p, nbytes);
  size_t n = round_up(nbytes ? nbytes : 1);
  HostCache& c = host_cache();
  std::lock_guard<std::mutex> g(c.mu);
  c.stats.in_use -= n;
  // Small blocks are cheap to get again; keep the cache from growing past what the loop really reuses.
  if (c.stats.cached + n > (size_t(8) << 30)) {
    std::free(p);
    return;
  }
  c.free_blocks.emplace(n, p);
  c.stats.cached += n;
}

void device_empty_cache(Device d) {
  if (d == Device::CUDA) return cuda_empty_cache();
  HostCache& c = host_cache();
  std::lock_guard<std::mutex> g(c.mu);
  for (auto& kv : c.free_blocks) std::free(kv.second);
  c.free_blocks.clear();
  c.stats.cached = 0;
}

MemoryStats device_memory_stats(Device d) {
  if (d == Device::CUDA) return cuda_memory_stats();
  HostCache& c = host_cache();
  std::lock_guard<std::mutex> g(c.mu);
  return c.stats;
}
void device_reset_peak(Device d) {
  if (d == Device::CUDA) return cuda_reset_peak();
  HostCache& c = host_cache();
  std::lock_guard<std::mutex> g(c.mu);
  c.stats.peak = c.stats.in_use;
}

void copy_bytes(void* dst, Device dd, const void* src, Device sd, size_t n) {
  if (n == 0) return;
  if (dd == Device::CPU && sd == Device::CPU) {
    std::memcpy(dst, src, n);
    return;
  }
  cuda_copy(dst, dd, src, sd, n);
}

}  // namespace vgg
