// Softmax cross-entropy (mean over N) and the SGD step over all parameters, plain C++.
//   cross_entropy: logits (N,C) f32|bf16, labels (N) i32 -> loss [1] f32 = mean_n(logsumexp(x_n) - x_n[label_n]),
//                  dlogits (N,C) f32 = (softmax(x_n) - onehot(label_n)) / N
//   sgd_step:      torch.optim.SGD, in float32 like PyTorch (see ops.h for the formula)
#include <algorithm>
#include <cmath>

#include "cpu_common.h"

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
  VGG_CHECK(N >= 1 && C >= 1, "cross_entropy: empty logits %s", shape_str(logits.shape).c_str());
  const int32_t* lab = labels.data<int32_t>();
  for (int64_t n = 0; n < N; ++n)
    VGG_CHECK(lab[n] >= 0 && lab[n] < C, "cross_entropy: label at index %lld is %d, out of range [0, %lld)",
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

void CpuBackend::sgd_step(std::vector<Tensor>& params, const std::vector<Tensor>& grads, std::vector<Tensor>& bufs,
                          const SgdParams& p, bool first) {
  const bool use_momentum = p.momentum != 0;
  VGG_CHECK(grads.size() == params.size(), "sgd_step: %zu params but %zu grads", params.size(), grads.size());
  VGG_CHECK(!use_momentum || bufs.size() == params.size(), "sgd_step: %zu params but %zu momentum buffers",
            params.size(), bufs.size());
  VGG_CHECK(!p.nesterov || (use_momentum && p.dampening == 0),
            "sgd_step: nesterov momentum requires a momentum and zero dampening");
  for (size_t i = 0; i < params.size(); ++i) {
    const std::string wi = "sgd_step: param " + std::to_string(i);
    check_cpu(params[i], wi.c_str());
    check_dtype(params[i], DType::F32, wi.c_str());
    const std::string gi = "sgd_step: grad " + std::to_string(i);
    check_cpu(grads[i], gi.c_str());
    check_dtype(grads[i], DType::F32, gi.c_str());
    check_shape(grads[i], params[i].shape, gi.c_str());
    if (use_momentum) {
      const std::string bi = "sgd_step: momentum buffer " + std::to_string(i);
      check_cpu(bufs[i], bi.c_str());
      check_dtype(bufs[i], DType::F32, bi.c_str());
      check_shape(bufs[i], params[i].shape, bi.c_str());
    }
  }
  const float lr = float(p.lr), mom = float(p.momentum), damp = float(1.0 - p.dampening),
              wd = float(p.weight_decay);
  const bool nesterov = p.nesterov;
  for (size_t t = 0; t < params.size(); ++t) {
    float* w = params[t].data<float>();
    const float* g = grads[t].data<float>();
    float* b = use_momentum ? bufs[t].data<float>() : nullptr;
    const int64_t n = params[t].numel();
#pragma omp parallel for simd schedule(static) if (n > 32768)
    for (int64_t i = 0; i < n; ++i) {
      float d = g[i];
      if (wd != 0.f) d = d + wd * w[i];
      if (b) {
        b[i] = first ? d : mom * b[i] + damp * d;
        d = nesterov ? d + mom * b[i] : b[i];
      }
      w[i] = w[i] - lr * d;
    }
  }
}

}  // namespace vgg::cpu
