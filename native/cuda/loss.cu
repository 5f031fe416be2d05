// Softmax cross-entropy with mean reduction. One block per row: max, sum of exp, row loss and the row's gradient
// (softmax - onehot) / N, all in float32; then one block sums the row losses in a fixed order (deterministic).
#include <type_traits>

#include "common.cuh"

namespace vgg::cuk {

template <class T>
__global__ void ce_rows_k(float* row_loss, float* dlogits, const T* logits, const int32_t* labels, int64_t C,
                          float inv_n) {
  __shared__ float shm[32];
  const int64_t r = blockIdx.x;
  const T* x = logits + r * C;
  float* g = dlogits + r * C;
  const int32_t label = labels[r];
  float m = -INFINITY;
  for (int64_t j = threadIdx.x; j < C; j += blockDim.x) m = fmaxf(m, ld(x, j));
  m = block_max(m, shm);
  float s = 0.f;
  for (int64_t j = threadIdx.x; j < C; j += blockDim.x) s += expf(ld(x, j) - m);
  s = block_sum(s, shm);
  const float lse = m + logf(s);
  for (int64_t j = threadIdx.x; j < C; j += blockDim.x)
    g[j] = (expf(ld(x, j) - lse) - (j == label ? 1.f : 0.f)) * inv_n;
  if (threadIdx.x == 0) row_loss[r] = (label >= 0 && label < C) ? lse - ld(x, label) : NAN;
}

__global__ void ce_mean_k(float* loss, const float* row_loss, int64_t N) {
  __shared__ double shm[32];
  double s = 0.0;
  for (int64_t i = threadIdx.x; i < N; i += blockDim.x) s += row_loss[i];
  s = block_sum_d(s, shm);
  if (threadIdx.x == 0) loss[0] = float(s / double(N));
}

void cross_entropy(float* loss, float* dlogits, float* row_loss, const void* logits, DType dt, const int32_t* labels,
                   int64_t N, int64_t C) {
  if (N <= 0 || C <= 0) throw Error("cross_entropy: empty logits");
  if (N > 2147483647LL) throw Error("cross_entropy: too many rows");
  dispatch_float(dt, "cross_entropy", [&](auto* t) {
    using T = std::remove_pointer_t<decltype(t)>;
    ce_rows_k<T><<<unsigned(N), kThreads, 0, cuk::stream()>>>(row_loss, dlogits, (const T*)logits, labels, C, 1.f / float(N));
  });
  check_launch("cross_entropy");
  ce_mean_k<<<1, 1024, 0, cuk::stream()>>>(loss, row_loss, N);
  check_launch("cross_entropy (mean)");
}

}  // namespace vgg::cuk
