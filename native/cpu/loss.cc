// Softmax cross-entropy (mean over N), plain C++:
//   logits (N,C) f32|bf16, labels (N) i32 -> loss [1] f32 = mean_n(logsumexp(x_n) - x_n[label_n]),
//   dlogits (N,C) f32 = (softmax(x_n) - onehot(label_n)) / N
#include <algorithm>
#include <cmath>

#include "backend.h"

namespace vgg::cpu {

void CpuBackend::cross_entropy(const Tensor& logits, const Tensor& labels, Tensor& loss, Tensor& dlogits) {
  check_cpu(logits, "cross_entropy: logits");
  VGG_CHECK(logits.dtype == DType::F32 || logits.dtype == DType::BF16,
            "cross_entropy: logits: expected float32 or bfloat16, got %s", dtype_name(logits.dtype));
  check_ndim(logits, 2, "cross_entropy: logits");
  check_cpu(labels, "cross_entropy: labels");
  check_dtype(labels, DType::I32, "cross_entropy: labels");
  const int64_t N = logits.dim(0), C = logits.dim(1);
  check_shape(labels, {N}, "cross_entropy: labels");
  check_cross_entropy_sizes(logits.shape);
  const int32_t* lab = labels.data<int32_t>();
  for (int64_t n = 0; n < N; ++n)
    VGG_CHECK_RANGE(lab[n] >= 0 && lab[n] < C, "cross_entropy: label at index %lld is %d, out of range [0, %lld)",
              (long long)n, lab[n], (long long)C);
  if (!loss.defined()) loss = Tensor::empty({1}, DType::F32, Device::CPU);
  check_cpu(loss, "cross_entropy: loss");
  check_dtype(loss, DType::F32, "cross_entropy: loss");
  VGG_CHECK(loss.numel() == 1, "cross_entropy: loss must have 1 element, got %s", shape_str(loss.shape).c_str());
  if (!dlogits.defined()) dlogits = Tensor::empty({N, C}, DType::F32, Device::CPU);
  check_param(dlogits, {N, C}, "cross_entropy: dlogits");

  Tensor xf = logits.dtype == DType::F32 ? logits : cpu_backend().cast(logits, DType::F32);
  const float* x = xf.data<float>();
  float* d = dlogits.data<float>();
  double total = 0;
#pragma omp parallel for reduction(+ : total) schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const float* row = x + n * C;
    float* drow = d + n * C;
    double mx = row[0];
    for (int64_t c = 1; c < C; ++c) mx = std::max(mx, double(row[c]));
    double sum = 0;
    for (int64_t c = 0; c < C; ++c) sum += std::exp(double(row[c]) - mx);
    const double lse = mx + std::log(sum);
    total += lse - double(row[lab[n]]);
    const double inv_n = 1.0 / double(N);
    for (int64_t c = 0; c < C; ++c)
      drow[c] = float((std::exp(double(row[c]) - lse) - (c == lab[n] ? 1.0 : 0.0)) * inv_n);
  }
  loss.data<float>()[0] = float(total / double(N));
}

}  // namespace vgg::cpu
