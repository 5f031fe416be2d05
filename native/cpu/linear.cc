// linear on oneDNN matmul (plain row-major operands; the transposes are expressed as strides).
//   forward          y (N,M) = x (N,K) · w(M,K)^T + b (M)        [relu post-op when asked]
//   backward data    dx (N,K) = dy (N,M) · w (M,K)
//   backward weights dw (M,K) (+)= dy^T (M,N) · x (N,K)  [sum post-op when accumulating];  db (M) (+)= sum_n dy
#include "cpu_common.h"

namespace vgg::cpu {

using dnnl::memory;
using tag = memory::format_tag;

namespace {

memory::desc f32md(const memory::dims& d, tag t) { return memory::desc(d, memory::data_type::f32, t); }

}  // namespace

Tensor CpuBackend::linear_forward(const Tensor& x, const Tensor& w, const Tensor& b, bool relu) {
  const char* op = "linear_forward";
  check_f32_activation(x, "linear_forward: input");
  check_ndim(x, 2, "linear_forward: input");
  check_cpu(w, "linear_forward: weight");
  check_dtype(w, DType::F32, "linear_forward: weight");
  check_ndim(w, 2, "linear_forward: weight");
  const int64_t N = x.dim(0), K = x.dim(1), M = w.dim(0);
  VGG_CHECK(w.dim(1) == K, "linear_forward: input has %lld features, weight expects %lld", (long long)K,
            (long long)w.dim(1));
  if (b.defined()) check_param(b, {M}, "linear_forward: bias");
  return guard(op, [&] {
    auto a = f32md({N, K}, tag::ab), wt = f32md({K, M}, tag::ba), c = f32md({N, M}, tag::ab);
    auto bias = f32md({1, M}, tag::ab);
    auto& e = matmul_entry(cache_key(op, N, K, M, b.defined(), relu), a, wt, b.defined() ? &bias : nullptr, c,
                           relu, false);
    Tensor y = Tensor::empty({N, M}, x.dtype, Device::CPU);
    std::unordered_map<int, memory> args{{DNNL_ARG_SRC, mem_of(x, a)}, {DNNL_ARG_WEIGHTS, mem_of(w, wt)},
                                         {DNNL_ARG_DST, mem_of(y, c)}};
    if (b.defined()) args.emplace(DNNL_ARG_BIAS, mem_of(b, bias));
    e.prim.execute(stream(), args);
    stream().wait();
    return y;
  });
}

Tensor CpuBackend::linear_backward_data(const Tensor& dy, const Tensor& w) {
  const char* op = "linear_backward_data";
  check_f32_activation(dy, "linear_backward_data: dy");
  check_ndim(dy, 2, "linear_backward_data: dy");
  check_cpu(w, "linear_backward_data: weight");
  check_dtype(w, DType::F32, "linear_backward_data: weight");
  check_ndim(w, 2, "linear_backward_data: weight");
  const int64_t N = dy.dim(0), M = dy.dim(1), K = w.dim(1);
  VGG_CHECK(w.dim(0) == M, "linear_backward_data: dy has %lld features, weight has %lld outputs", (long long)M,
            (long long)w.dim(0));
  return guard(op, [&] {
    auto a = f32md({N, M}, tag::ab), wm = f32md({M, K}, tag::ab), c = f32md({N, K}, tag::ab);
    auto& e = matmul_entry(cache_key(op, N, K, M), a, wm, nullptr, c, false, false);
    Tensor dx = Tensor::empty({N, K}, dy.dtype, Device::CPU);
    e.prim.execute(stream(), {{DNNL_ARG_SRC, mem_of(dy, a)}, {DNNL_ARG_WEIGHTS, mem_of(w, wm)},
                              {DNNL_ARG_DST, mem_of(dx, c)}});
    stream().wait();
    return dx;
  });
}

void CpuBackend::linear_backward_weights(const Tensor& x, const Tensor& dy, Tensor& dw, Tensor& db,
                                         bool accumulate) {
  const char* op = "linear_backward_weights";
  check_f32_activation(x, "linear_backward_weights: input");
  check_ndim(x, 2, "linear_backward_weights: input");
  check_f32_activation(dy, "linear_backward_weights: dy");
  check_ndim(dy, 2, "linear_backward_weights: dy");
  const int64_t N = x.dim(0), K = x.dim(1), M = dy.dim(1);
  VGG_CHECK(dy.dim(0) == N, "linear_backward_weights: input has batch %lld, dy has %lld", (long long)N,
            (long long)dy.dim(0));
  check_param(dw, {M, K}, "linear_backward_weights: dw");
  if (db.defined()) check_param(db, {M}, "linear_backward_weights: db");
  guard(op, [&] {
    auto a = f32md({M, N}, tag::ba), xm = f32md({N, K}, tag::ab), c = f32md({M, K}, tag::ab);
    auto& e = matmul_entry(cache_key(op, N, K, M, accumulate), a, xm, nullptr, c, false, accumulate);
    e.prim.execute(stream(), {{DNNL_ARG_SRC, mem_of(dy, a)}, {DNNL_ARG_WEIGHTS, mem_of(x, xm)},
                              {DNNL_ARG_DST, mem_of(dw, c)}});
    stream().wait();
  });
  if (db.defined()) {
    const float* d = dy.data<float>();
    float* o = db.data<float>();
#pragma omp parallel for schedule(static)
    for (int64_t m = 0; m < M; ++m) {
      float s = 0;
      for (int64_t n = 0; n < N; ++n) s += d[n * M + m];
      o[m] = accumulate ? o[m] + s : s;
    }
  }
}

}  // namespace vgg::cpu
