// Batch norm over C of (N,C,H,W) (NCHW or NHWC), float32 statistics for float32 or bfloat16 activations.
// Forward (training): bn_stats (per channel mean and biased variance, two passes, one block per channel) ->
// bn_scale_shift -> bn_apply. Eval: bn_scale_shift from the running stats -> bn_apply.
// Backward: one block per channel reduces sum(dy) and sum(dy * xhat), then an elementwise pass writes dx.
#include <type_traits>

#include "common.cuh"

namespace vgg::cuk {

template <class T>
__global__ void bn_stats_k(float* mean, float* invstd, float* rmean, float* rvar, const T* x, int64_t N, int64_t C,
                           int64_t HW, bool cl, float momentum, float eps) {
  __shared__ double shm[32];
  const int64_t c = blockIdx.x, M = N * HW;
  double s = 0.0;
  for (int64_t j = threadIdx.x; j < M; j += blockDim.x) s += ld(x, img_off(j / HW, c, j % HW, C, HW, cl));
  const double mu = block_sum_d(s, shm) / double(M);
  double q = 0.0;
  for (int64_t j = threadIdx.x; j < M; j += blockDim.x) {
    const double d = double(ld(x, img_off(j / HW, c, j % HW, C, HW, cl))) - mu;
    q += d * d;
  }
  const double var = block_sum_d(q, shm) / double(M);
  if (threadIdx.x == 0) {
    mean[c] = float(mu);
    invstd[c] = float(1.0 / sqrt(var + double(eps)));
    if (rmean) rmean[c] = (1.f - momentum) * rmean[c] + momentum * float(mu);
    if (rvar) {
      const double unbiased = M > 1 ? var * double(M) / double(M - 1) : var;
      rvar[c] = (1.f - momentum) * rvar[c] + momentum * float(unbiased);
    }
  }
}

void bn_stats(float* mean, float* invstd, float* running_mean, float* running_var, const void* x, DType dt,
              int64_t N, int64_t C, int64_t HW, bool cl, float momentum, float eps) {
  if (C <= 0) return;
  dispatch_float(dt, "batchnorm_forward", [&](auto* t) {
    using T = std::remove_pointer_t<decltype(t)>;
    bn_stats_k<T><<<unsigned(C), 512, 0, cuk::stream()>>>(mean, invstd, running_mean, running_var, (const T*)x, N, C, HW, cl,
                                        momentum, eps);
  });
  check_launch("batchnorm_forward (statistics)");
}

__global__ void bn_scale_shift_k(float* scale, float* shift, const float* gamma, const float* beta, const float* mean,
                                 const float* invstd, const float* var, float eps, int64_t C) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= C) return;
  const float is = invstd ? invstd[c] : rsqrtf(var[c] + eps);
  const float g = gamma ? gamma[c] : 1.f, b = beta ? beta[c] : 0.f;
  scale[c] = g * is;
  shift[c] = b - mean[c] * g * is;
}

void bn_scale_shift(float* scale, float* shift, const float* gamma, const float* beta, const float* mean,
                    const float* invstd, const float* var, float eps, int64_t C) {
  if (C <= 0) return;
  bn_scale_shift_k<<<grid_for(C), kThreads, 0, cuk::stream()>>>(scale, shift, gamma, beta, mean, invstd, var, eps, C);
  check_launch("batchnorm_forward (scale)");
}

template <class T>
__global__ void bn_apply_k(T* y, const T* x, const float* scale, const float* shift, int64_t n, int64_t C,
                           int64_t HW, bool cl) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = cl ? i % C : (i / HW) % C;
    st(y, i, ld(x, i) * scale[c] + shift[c]);
  }
}

void bn_apply(void* y, const void* x, DType dt, const float* scale, const float* shift, int64_t N, int64_t C,
              int64_t HW, bool cl) {
  const int64_t n = N * C * HW;
  if (n <= 0) return;
  dispatch_float(dt, "batchnorm_forward", [&](auto* t) {
    using T = std::remove_pointer_t<decltype(t)>;
    bn_apply_k<T><<<grid_for(n), kThreads, 0, cuk::stream()>>>((T*)y, (const T*)x, scale, shift, n, C, HW, cl);
  });
  check_launch("batchnorm_forward (apply)");
}

// sums[c] = sum dy, sums[C + c] = sum dy * xhat over this replica's batch (S: float for the local backward, double
// for SyncBatchNorm's, whose sums are all-reduced first); dgamma/dbeta are written from them.
template <class T, class S>
__global__ void bn_bwd_reduce_k(S* sums, float* dgamma, float* dbeta, const T* dy, const T* x, const float* mean,
                                const float* invstd, int64_t N, int64_t C, int64_t HW, bool cl, bool acc) {
  __shared__ double shm[32];
  const int64_t c = blockIdx.x, M = N * HW;
  const float mu = mean[c], is = invstd[c];
  double sdy = 0.0, sdyx = 0.0;
  for (int64_t j = threadIdx.x; j < M; j += blockDim.x) {
    const int64_t o = img_off(j / HW, c, j % HW, C, HW, cl);
    const float g = ld(dy, o);
    sdy += g;
    sdyx += double(g) * double((ld(x, o) - mu) * is);
  }
  sdy = block_sum_d(sdy, shm);
  sdyx = block_sum_d(sdyx, shm);
  if (threadIdx.x == 0) {
    sums[c] = S(sdy);
    sums[C + c] = S(sdyx);
    if (dgamma) dgamma[c] = (acc ? dgamma[c] : 0.f) + float(sdyx);
    if (dbeta) dbeta[c] = (acc ? dbeta[c] : 0.f) + float(sdy);
  }
}

template <class T>
__global__ void bn_bwd_dx_k(T* dx, const T* dy, const T* x, const float* gamma, const float* mean, const float* invstd,
                            const float* sums, int64_t n, int64_t C, int64_t HW, bool cl, float inv_m) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = cl ? i % C : (i / HW) % C;
    const float is = invstd[c], xhat = (ld(x, i) - mean[c]) * is;
    const float g = gamma ? gamma[c] : 1.f;
    st(dx, i, g * is * (ld(dy, i) - sums[c] * inv_m - xhat * sums[C + c] * inv_m));
  }
}

void bn_backward(void* dx, float* dgamma, float* dbeta, const void* dy, const void* x, DType dt, const float* gamma,
                 const float* mean, const float* invstd, float* sums, int64_t N, int64_t C, int64_t HW, bool cl,
                 bool accumulate, bool batch_stats) {
  const int64_t n = N * C * HW;
  if (n <= 0) return;
  dispatch_float(dt, "batchnorm_backward", [&](auto* t) {
    using T = std::remove_pointer_t<decltype(t)>;
    bn_bwd_reduce_k<T, float><<<unsigned(C), 512, 0, cuk::stream()>>>(sums, dgamma, dbeta, (const T*)dy, (const T*)x, mean, invstd, N, C, HW,
                                             cl, accumulate);
    check_launch("batchnorm_backward (reduce)");
    bn_bwd_dx_k<T><<<grid_for(n), kThreads, 0, cuk::stream()>>>((T*)dx, (const T*)dy, (const T*)x, gamma, mean, invstd, sums, n, C,
                                              HW, cl, batch_stats ? 1.f / float(N * HW) : 0.f);
  });
  check_launch("batchnorm_backward");
}

}  // namespace vgg::cuk

// ---------------------------------------------------------------- SyncBatchNorm (statistics across replicas)
// The same two passes as bn_stats, with float64 per-channel sums that the process group adds across replicas in
// between (native/dist): sums[c] = sum x and sums[C] = this replica's count; then sq[c] = sum (x - mean)^2 around the
// global mean; bn_sync_finish turns the global sums into mean, invstd, the total count and the running statistics.
namespace vgg::cuk {

template <class T>
__global__ void bn_sync_sum_k(double* sums, const T* x, int64_t N, int64_t C, int64_t HW, bool cl) {
  __shared__ double shm[32];
  const int64_t c = blockIdx.x, M = N * HW;
  double s = 0.0;
  for (int64_t j = threadIdx.x; j < M; j += blockDim.x) s += ld(x, img_off(j / HW, c, j % HW, C, HW, cl));
  s = block_sum_d(s, shm);
  if (threadIdx.x == 0) {
    sums[c] = s;
    if (c == 0) sums[C] = double(M);
  }
}

template <class T>
__global__ void bn_sync_sq_k(double* sq, const double* sums, const T* x, int64_t N, int64_t C, int64_t HW, bool cl) {
  __shared__ double shm[32];
  const int64_t c = blockIdx.x, M = N * HW;
  const double mu = sums[c] / sums[C];
  double q = 0.0;
  for (int64_t j = threadIdx.x; j < M; j += blockDim.x) {
    const double d = double(ld(x, img_off(j / HW, c, j % HW, C, HW, cl))) - mu;
    q += d * d;
  }
  q = block_sum_d(q, shm);
  if (threadIdx.x == 0) sq[c] = q;
}

__global__ void bn_sync_finish_k(float* mean, float* invstd, int64_t* count, float* rmean, float* rvar,
                                 const double* sums, const double* sq, int64_t C, float momentum, float eps) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= C) return;
  const double total = sums[C], mu = sums[c] / total, var = sq[c] / total;
  mean[c] = float(mu);
  invstd[c] = float(1.0 / sqrt(var + double(eps)));
  if (c == 0) count[0] = int64_t(total);
  if (rmean) rmean[c] = (1.f - momentum) * rmean[c] + momentum * float(mu);
  if (rvar) {
    const double unbiased = total > 1 ? sq[c] / (total - 1) : var;
    rvar[c] = (1.f - momentum) * rvar[c] + momentum * float(unbiased);
  }
}

void bn_sync_sum(double* sums, const void* x, DType dt, int64_t N, int64_t C, int64_t HW, bool cl) {
  if (C <= 0) return;
  dispatch_float(dt, "batchnorm_forward", [&](auto* t) {
    using T = std::remove_pointer_t<decltype(t)>;
    bn_sync_sum_k<T><<<unsigned(C), 512, 0, cuk::stream()>>>(sums, (const T*)x, N, C, HW, cl);
  });
  check_launch("batchnorm_forward (synced sums)");
}
void bn_sync_sq(double* sq, const double* sums, const void* x, DType dt, int64_t N, int64_t C, int64_t HW, bool cl) {
  if (C <= 0) return;
  dispatch_float(dt, "batchnorm_forward", [&](auto* t) {
    using T = std::remove_pointer_t<decltype(t)>;
    bn_sync_sq_k<T><<<unsigned(C), 512, 0, cuk::stream()>>>(sq, sums, (const T*)x, N, C, HW, cl);
  });
  check_launch("batchnorm_forward (synced squares)");
}
void bn_sync_finish(float* mean, float* invstd, int64_t* count, float* running_mean, float* running_var,
                    const double* sums, const double* sq, int64_t C, float momentum, float eps) {
  if (C <= 0) return;
  bn_sync_finish_k<<<grid_for(C), kThreads, 0, cuk::stream()>>>(mean, invstd, count, running_mean, running_var, sums,
                                                                sq, C, momentum, eps);
  check_launch("batchnorm_forward (synced statistics)");
}

// Backward: the replica's sums by bn_bwd_reduce_k<T, double> (dgamma/dbeta written from them), summed across replicas
// by the caller, then dx from the global sums and the total count.
template <class T>
__global__ void bn_sync_bwd_dx_k(T* dx, const T* dy, const T* x, const float* gamma, const float* mean,
                                 const float* invstd, const double* sums, const int64_t* count, int64_t n, int64_t C,
                                 int64_t HW, bool cl) {
  const float inv_m = 1.f / float(count[0]);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = cl ? i % C : (i / HW) % C;
    const float is = invstd[c], xhat = (ld(x, i) - mean[c]) * is;
    const float g = gamma ? gamma[c] : 1.f;
    st(dx, i, g * is * (ld(dy, i) - float(sums[c]) * inv_m - xhat * float(sums[C + c]) * inv_m));
  }
}

void bn_sync_backward_reduce(double* sums, float* dgamma, float* dbeta, const void* dy, const void* x, DType dt,
                             const float* mean, const float* invstd, int64_t N, int64_t C, int64_t HW, bool cl,
                             bool accumulate) {
  if (C <= 0) return;
  dispatch_float(dt, "batchnorm_backward", [&](auto* t) {
    using T = std::remove_pointer_t<decltype(t)>;
    bn_bwd_reduce_k<T, double><<<unsigned(C), 512, 0, cuk::stream()>>>(sums, dgamma, dbeta, (const T*)dy, (const T*)x,
                                                                     mean, invstd, N, C, HW, cl, accumulate);
  });
  check_launch("batchnorm_backward (synced reduce)");
}
void bn_sync_backward_dx(void* dx, const void* dy, const void* x, DType dt, const float* gamma, const float* mean,
                         const float* invstd, const double* sums, const int64_t* count, int64_t N, int64_t C,
                         int64_t HW, bool cl) {
  const int64_t n = N * C * HW;
  if (n <= 0) return;
  dispatch_float(dt, "batchnorm_backward", [&](auto* t) {
    using T = std::remove_pointer_t<decltype(t)>;
    bn_sync_bwd_dx_k<T><<<grid_for(n), kThreads, 0, cuk::stream()>>>((T*)dx, (const T*)dy, (const T*)x, gamma, mean,
                                                                      invstd, sums, count, n, C, HW, cl);
  });
  check_launch("batchnorm_backward (synced dx)");
}

}  // namespace vgg::cuk
