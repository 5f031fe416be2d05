// The CPU backend's shared helpers (common.h).
#include <cstdlib>

#include "common.h"

namespace vgg::cpu {

using dnnl::memory;

dnnl::engine& engine() {
  static dnnl::engine e = guard("cpu backend init", [] { return dnnl::engine(dnnl::engine::kind::cpu, 0); });
  return e;
}
dnnl::stream& stream() {
  static dnnl::stream s = guard("cpu backend init", [] { return dnnl::stream(engine()); });
  return s;
}

memory::data_type dnnl_dtype(DType t) {
  switch (t) {
    case DType::F32: return memory::data_type::f32;
    case DType::BF16: return memory::data_type::bf16;
    case DType::I32: return memory::data_type::s32;
    case DType::U8: return memory::data_type::u8;
    case DType::I8: return memory::data_type::s8;
    default: throw Error(strprintf("cpu backend: dtype %s has no oneDNN equivalent", dtype_name(t)));
  }
}

memory::dims dims_of(const Shape& s) { return memory::dims(s.begin(), s.end()); }

memory::format_tag plain_tag(int ndim, Layout layout) {
  using T = memory::format_tag;
  if (layout == Layout::ChannelsLast) {
    VGG_CHECK(ndim == 4, "cpu backend: channels-last layout needs a 4-D tensor, got %d-D", ndim);
    return T::nhwc;
  }
  if (const int block = layout_block(layout)) {
    VGG_CHECK(ndim == 4, "cpu backend: %s layout needs a 4-D tensor, got %d-D", layout_name(layout), ndim);
    return block == 16 ? T::aBcd16b : T::aBcd8b;
  }
  switch (ndim) {
    case 1: return T::a;
    case 2: return T::ab;
    case 3: return T::abc;
    case 4: return T::abcd;
    case 5: return T::abcde;
    default: throw Error(strprintf("cpu backend: %d-D tensors are not supported", ndim));
  }
}

memory::desc md_plain(const Shape& s, DType dt, Layout layout) {
  return memory::desc(dims_of(s), dnnl_dtype(dt), plain_tag(int(s.size()), layout));
}
memory::desc md_of(const Tensor& t) { return md_plain(t.shape, t.dtype, t.layout); }
memory mem_of(const Tensor& t, const memory::desc& md) { return memory(md, engine(), t.raw()); }
memory mem_of(const Tensor& t) { return mem_of(t, md_of(t)); }

Tensor scratch(size_t nbytes) { return Tensor::empty({int64_t(nbytes ? nbytes : 1)}, DType::U8, Device::CPU); }

void reorder(const memory& from, const memory& to, float scale) {
  auto key = std::string("reorder");
  // memory::desc has no hash; its blob of the C struct identifies it.
  const auto& a = from.get_desc().data;
  const auto& b = to.get_desc().data;
  key.append(reinterpret_cast<const char*>(&a), sizeof(a));
  key.append(reinterpret_cast<const char*>(&b), sizeof(b));
  key.append(reinterpret_cast<const char*>(&scale), sizeof(scale));
  auto& r = cached<dnnl::reorder>(key, [&] {
    dnnl::primitive_attr attr;
    if (scale != 1.0f) attr.set_output_scales(0, {scale});
    return new dnnl::reorder(dnnl::reorder::primitive_desc(from, to, attr));
  });
  r.execute(stream(), const_cast<memory&>(from), const_cast<memory&>(to));
}

memory to_desc(const memory& user, const memory::desc& want, std::vector<Tensor>& keep) {
  if (user.get_desc() == want) return user;
  keep.push_back(scratch(want.get_size()));
  memory m(want, engine(), keep.back().raw());
  reorder(user, m);
  return m;
}

MatmulEntry& matmul_entry(const std::string& key, const memory::desc& a, const memory::desc& b,
                          const memory::desc* bias, const memory::desc& c, bool relu, bool accumulate) {
  return cached<MatmulEntry>(key, [&] {
    dnnl::primitive_attr attr;
    dnnl::post_ops po;
    if (accumulate) po.append_sum(1.0f);
    if (relu) po.append_eltwise(1.0f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
    attr.set_post_ops(po);
    auto d = bias ? dnnl::matmul::desc(a, b, *bias, c) : dnnl::matmul::desc(a, b, c);
    dnnl::matmul::primitive_desc pd(d, attr, engine());
    return new MatmulEntry{pd, dnnl::matmul(pd)};
  });
}

void check_cpu(const Tensor& t, const char* what) {
  check_defined(t, what);
  check_device(t, Device::CPU, what);
}

void check_float_activation(const Tensor& t, const char* what) {
  check_cpu(t, what);
  VGG_CHECK_TYPE(t.dtype == DType::F32 || t.dtype == DType::BF16, "%s: expected float32 or bfloat16, got %s", what,
            dtype_name(t.dtype));
}

void check_same_dtype(const Tensor& a, const Tensor& b, const char* what) {
  VGG_CHECK(a.dtype == b.dtype, "%s: dtypes differ (%s vs %s)", what, dtype_name(a.dtype), dtype_name(b.dtype));
}

Bf16Path bf16_path(DType activation) {
  if (activation != DType::BF16) return Bf16Path::None;
  return cpu_isa_info().bf16 ? Bf16Path::Native : Bf16Path::Emulated;
}

Tensor bf16_operand(const Tensor& act, Bf16Path path) {
  return path == Bf16Path::Emulated ? cpu_backend().cast(act, DType::F32) : act;
}

namespace {
std::mutex& prepared_mutex() {
  static std::mutex m;
  return m;
}
// What Storage::derived holds on the CPU: a weight's prepared copy and its pool fold, either absent.
struct DerivedValues {
  std::shared_ptr<PreparedWeight> prepared;
  std::shared_ptr<FoldedWeight> folded;
};
DerivedValues& derived_of(const Tensor& w) {
  if (!w.storage->derived) w.storage->derived = std::make_shared<DerivedValues>();
  return *static_cast<DerivedValues*>(w.storage->derived.get());
}
PreparedWeight* prepared_of(const Tensor& w) { return derived_of(w).prepared.get(); }
bool current(const FoldedWeight* f, const Tensor& w) {
  return f->version == w.version() && f->t_version == f->t.version();
}
// pw was made from w's present contents, in w's shape.
bool current(const PreparedWeight* pw, const Tensor& w) { return pw->version == w.version() && pw->t.shape == w.shape; }
// to (bf16, or f32 rounded to bf16) = w converted, n elements.
void convert_weights(const float* w, const Tensor& to, int64_t n) {
  if (to.dtype == DType::BF16) f32_to_bf16_array(w, to.data<uint16_t>(), n);
  else round_to_bf16_array(w, to.data<float>(), n);
}
}  // namespace

Tensor bf16_weights(const Tensor& w, Bf16Path path) {
  if (path == Bf16Path::None) return w;
  std::lock_guard<std::mutex> lock(prepared_mutex());
  PreparedWeight* pw = prepared_of(w);
  const bool same_kind = pw && pw->path == path && pw->t.shape == w.shape;
  if (same_kind && current(pw, w)) return pw->t;
  // Made again into the old buffer when nothing but this cache holds it (an op or a layer still holding the old
  // copy must not see it change), else into a new one.
  Tensor t = same_kind && pw->t.storage.use_count() == 1
                 ? pw->t
                 : Tensor::empty(w.shape, path == Bf16Path::Native ? DType::BF16 : DType::F32, Device::CPU, w.layout);
  convert_weights(w.data<float>(), t, w.numel());
  derived_of(w).prepared = std::make_shared<PreparedWeight>(PreparedWeight{w.version(), path, t});
  return t;
}

PreparedWeight* prepared_for_update(const Tensor& w) {
  std::lock_guard<std::mutex> lock(prepared_mutex());
  PreparedWeight* pw = w.storage ? prepared_of(w) : nullptr;
  return pw && current(pw, w) && pw->t.storage.use_count() == 1 ? pw : nullptr;
}

FoldedWeight* folded_for_update(const Tensor& w) {
  std::lock_guard<std::mutex> lock(prepared_mutex());
  FoldedWeight* f = w.storage ? derived_of(w).folded.get() : nullptr;
  return f && f->plan.by_planes() && current(f, w) && f->t.storage.use_count() == 1 ? f : nullptr;
}

std::shared_ptr<FoldedWeight> cached_fold(const Tensor& w, int64_t C, int64_t H, int64_t W, int oh, int ow) {
  std::lock_guard<std::mutex> lock(prepared_mutex());
  std::shared_ptr<FoldedWeight> f = derived_of(w).folded;
  return f && f->plan.same_geometry(C, H, W, oh, ow) && current(f.get(), w) ? f : nullptr;
}

void store_fold(const Tensor& w, std::shared_ptr<FoldedWeight> f) {
  std::lock_guard<std::mutex> lock(prepared_mutex());
  derived_of(w).folded = std::move(f);
}

namespace {
// The serial kernels, one copy per ISA (see f32_to_bf16_array in common.h).
VGG_VECTOR_CLONES void f32_to_bf16_run(const float* a, uint16_t* o, int64_t n) {
  for (int64_t i = 0; i < n; ++i) o[i] = f32_to_bf16(a[i]);
}
VGG_VECTOR_CLONES void bf16_to_f32_run(const uint16_t* a, float* o, int64_t n) {
  for (int64_t i = 0; i < n; ++i) o[i] = bf16_to_f32(a[i]);
}
VGG_VECTOR_CLONES void round_to_bf16_run(const float* a, float* o, int64_t n) {
  for (int64_t i = 0; i < n; ++i) o[i] = bf16_to_f32(f32_to_bf16(a[i]));
}

}  // namespace

void f32_to_bf16_array(const float* a, uint16_t* o, int64_t n) {
  parallel_chunks(n, [&](int64_t b, int64_t e) { f32_to_bf16_run(a + b, o + b, e - b); });
}
void bf16_to_f32_array(const uint16_t* a, float* o, int64_t n) {
  parallel_chunks(n, [&](int64_t b, int64_t e) { bf16_to_f32_run(a + b, o + b, e - b); });
}
void round_to_bf16_array(const float* a, float* o, int64_t n) {
  parallel_chunks(n, [&](int64_t b, int64_t e) { round_to_bf16_run(a + b, o + b, e - b); });
}

Tensor bf16_result(const Tensor& y, Bf16Path path) {
  return path == Bf16Path::Emulated ? cpu_backend().cast(y, DType::BF16) : y;
}

void check_4d_image(const Tensor& t, const char* what) {
  check_cpu(t, what);
  check_ndim(t, 4, what);
}

void check_param(const Tensor& t, const Shape& s, const char* what) {
  check_cpu(t, what);
  check_dtype(t, DType::F32, what);
  check_shape(t, s, what);
}

void check_same_layout(const Tensor& a, const Tensor& b, const char* what) {
  VGG_CHECK(a.layout == b.layout, "%s: layouts differ (%s vs %s)", what, layout_name(a.layout),
            layout_name(b.layout));
}

Strides4 strides4(const Shape& s, Layout layout) {
  const int64_t C = s[1], H = s[2], W = s[3];
  if (layout == Layout::ChannelsLast) return {H * W * C, 1, W * C, C, 0};
  if (const int B = layout_block(layout)) return {C * H * W, B * H * W, B * W, B, B};
  return {C * H * W, H * W, W, 1, 0};
}

}  // namespace vgg::cpu
