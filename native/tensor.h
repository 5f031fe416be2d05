// Tensor storage shared by every backend: logical shape (NCHW for images), dtype, device, physical layout and a
// ref-counted buffer from the caching allocator. A Tensor is a cheap value (copying shares the buffer).
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace vgg {

// I8: int8 inference's quantized weights (native/cpu/int8.cc).
enum class DType : int { F32 = 0, BF16 = 1, I32 = 2, I64 = 3, U8 = 4, I8 = 5 };
enum class Device : int { CPU = 0, CUDA = 1 };
// Contiguous: row-major over the logical shape. ChannelsLast: a 4-D (N,C,H,W) tensor stored as NHWC.
// Blocked8: a 4-D (N,C,H,W) tensor with C % 8 == 0 stored as oneDNN's nChw8c, i.e. (N, C/8, H, W, 8): the CPU
// backend's native activation layout between layers (no padding, so it holds exactly numel elements). CPU only.
// Blocked16: the same with 16 channels per block (oneDNN's nChw16c, C % 16 == 0), what oneDNN's AVX-512 kernels
// read and write: the CPU backend's layout between layers there (cpu::blocked_layout()).
enum class Layout : int { Contiguous = 0, ChannelsLast = 1, Blocked8 = 2, Blocked16 = 3 };
const char* layout_name(Layout l);  // "nchw", "nhwc", "nchw8c", "nchw16c"
// Channels per block of a blocked layout (8 or 16); 0 for nchw and nhwc.
inline int layout_block(Layout l) { return l == Layout::Blocked8 ? 8 : l == Layout::Blocked16 ? 16 : 0; }

size_t dtype_size(DType t);
const char* dtype_name(DType t);
const char* device_name(Device d);
DType dtype_from_name(const std::string& s);      // throws on unknown names
Device device_from_name(const std::string& s);

// The native code's exceptions. The bindings turn each into the JS error of the same class and message, as
// better-sqlite3 does: TypeError for a value of the wrong type (a string where a number belongs, not a Tensor, a
// tensor of the wrong dtype), RangeError for a value outside what is allowed (an index, a label, a probability, a
// count, an unknown name), Error for everything else (shape mismatches, I/O, device failures).
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct TypeError : Error {
  using Error::Error;
};
struct RangeError : Error {
  using Error::Error;
};
std::string strprintf(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
#define VGG_CHECK(cond, ...)                                       \
  do {                                                             \
    if (!(cond)) throw ::vgg::Error(::vgg::strprintf(__VA_ARGS__)); \
  } while (0)
#define VGG_CHECK_TYPE(cond, ...)                                      \
  do {                                                                 \
    if (!(cond)) throw ::vgg::TypeError(::vgg::strprintf(__VA_ARGS__)); \
  } while (0)
#define VGG_CHECK_RANGE(cond, ...)                                      \
  do {                                                                  \
    if (!(cond)) throw ::vgg::RangeError(::vgg::strprintf(__VA_ARGS__)); \
  } while (0)

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);
int64_t shape_numel(const Shape& s);  // throws on negative dims or overflow

// A device buffer. Freed back to its device's caching allocator when the last reference goes.
struct Storage {
  void* ptr = nullptr;
  size_t nbytes = 0;
  Device device = Device::CPU;
  // CUDA: a non-blocking host->device copy into this buffer that the default stream has not yet been ordered after
  // (cuda_hooks.h). Set by to_device_async; cleared, with the wait queued, on first use from JS or at destruction.
  std::shared_ptr<void> pending;
  // How many times native code has written into this buffer after creating it (see Tensor::mark_written).
  std::atomic<uint64_t> version{0};
  // Values a backend derived from this buffer's contents, tagged with the version they were made from (the CPU
  // backend's bf16 copy of a weight and its pool fold, native/cpu/common.cc); they die with the buffer. Touched on
  // the JS thread only.
  std::shared_ptr<void> derived;
  Storage(size_t nbytes, Device device);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
};

struct Tensor {
  std::shared_ptr<Storage> storage;
  Shape shape;
  DType dtype = DType::F32;
  Layout layout = Layout::Contiguous;

  static Tensor empty(const Shape& shape, DType dtype, Device device, Layout layout = Layout::Contiguous);
  static Tensor zeros(const Shape& shape, DType dtype, Device device, Layout layout = Layout::Contiguous);

  bool defined() const { return storage != nullptr; }
  Device device() const { return storage ? storage->device : Device::CPU; }
  int64_t numel() const { return shape_numel(shape); }
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype); }
  int64_t dim(int i) const { return shape.at(i < 0 ? shape.size() + i : i); }
  int ndim() const { return int(shape.size()); }
  void* raw() const { return storage ? storage->ptr : nullptr; }
  // The buffer's write count, as PyTorch's tensor._version: every native entry point that writes into a tensor it
  // was given marks it (the bindings: copy_, fill, add_, fillRandom, weight/bias gradients, BN running statistics,
  // process-group collectives; Backend::sgd_step for its parameters and buffers), so that a value derived from a
  // tensor can tell whether it still is. Ops that create their outputs need not. CUDA-graph replays do not mark
  // (nothing derived is kept for CUDA tensors).
  uint64_t version() const { return storage ? storage->version.load(std::memory_order_acquire) : 0; }
  void mark_written() const {
    if (storage) storage->version.fetch_add(1, std::memory_order_acq_rel);
  }
  template <class T> T* data() const { return static_cast<T*>(raw()); }
  // Same buffer, another logical shape of the same element count (Contiguous only).
  Tensor view(const Shape& new_shape) const;
  std::string describe() const;  // "float32[2,3,4,4] cpu"
};

// Argument checks shared by the ops; `what` names the op and argument, e.g. "conv2d_forward: weight".
void check_defined(const Tensor& t, const char* what);
void check_dtype(const Tensor& t, DType dt, const char* what);
void check_device(const Tensor& t, Device d, const char* what);
void check_ndim(const Tensor& t, int n, const char* what);
void check_shape(const Tensor& t, const Shape& s, const char* what);

// Raw memory management per device (CPU here; CUDA in cuda/ when built). Caching: freed blocks are kept by size
// and reused, so a training loop of fixed shapes stops calling malloc/cudaMalloc after its first step.
void* device_alloc(Device d, size_t nbytes);
void device_free(Device d, void* p, size_t nbytes);
void device_empty_cache(Device d);
struct MemoryStats { size_t in_use = 0, cached = 0, peak = 0; };
MemoryStats device_memory_stats(Device d);
void device_reset_peak(Device d);

// Copies between any two devices, bytes as they are (no layout change).
void copy_bytes(void* dst, Device dd, const void* src, Device sd, size_t n);

bool cuda_built();
int cuda_device_count();  // 0 when not built or no usable GPU

}  // namespace vgg
