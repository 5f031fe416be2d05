// Batch norm over C of (N,C,H,W), plain C++ with double accumulators (PyTorch's numerics; threads split the channels,
// a blocked layout does the 8 or 16 channels of a block together so that each pass reads memory once).
//   train: mean, biased var over (N,H,W); y = (x-mean)/sqrt(var+eps)*gamma + beta;
//          running = (1-m)*running + m*batch (running var uses the unbiased var). saved = {mean, invstd} (C) f32
//   eval:  y = (x-running_mean)/sqrt(running_var+eps)*gamma + beta
//   backward (train): xhat = (x-mean)*invstd, dbeta = sum dy, dgamma = sum dy*xhat,
//          dx = gamma*invstd/M * (M*dy - dbeta - xhat*dgamma), M = N*H*W
//   relu fused (BN then ReLU, as in vgg*_bn): forward writes max(0, y); backward, given that output, first masks
//   dy where it is 0 — each saves a full pass over the activation.
//   sync (SyncBatchNorm): the per-channel sums of each pass (sum x with the count, then sum (x-mean)^2; in backward
//   sum dy and sum dy*(x-mean)) are added across replicas between the passes, in float64; with one replica the
//   arithmetic is exactly the unsynced one. saved = {mean, invstd, total count (I64), marker}.
// bf16 activations (x, y, dy, dx, the relu output) are read and written through float by the same loops (templated
// on the storage type); statistics, gamma/beta and their gradients are f32 on every path.
#include <cmath>
#include <vector>

#include "backend.h"

namespace vgg::cpu {

namespace {
constexpr int kMaxBlock = 16;  // the widest channel block (nchw16c)
// Visits every element of the G channels c0..c0+G-1 (G = 8 or 16 for nchw8c/nchw16c, whose channels of a block are
// adjacent in memory, else 1): f(offset, j) for channel c0+j, each channel in (n, h, w) order.
template <class F>
inline void for_group(const Shape& s, const Strides4& st, int64_t c0, int G, F&& f) {
  const int64_t N = s[0], HW = s[2] * s[3];
  for (int64_t n = 0; n < N; ++n) {
    const int64_t base = n * st.n + st.coff(c0);
    for (int64_t i = 0; i < HW; ++i)
      for (int j = 0; j < G; ++j) f(base + i * st.w + j, j);
  }
}
}  // namespace

Tensor CpuBackend::batchnorm_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& running_mean,
                                     Tensor& running_var, bool training, double momentum, double eps,
                                     Saved* saved, bool relu, ReplicaSum* sync) {
  check_4d_image(x, "batchnorm_forward: input");
  check_float_activation(x, "batchnorm_forward: input");
  const int64_t C = x.dim(1);
  check_param(gamma, {C}, "batchnorm_forward: weight");
  check_param(beta, {C}, "batchnorm_forward: bias");
  check_param(running_mean, {C}, "batchnorm_forward: running_mean");
  check_param(running_var, {C}, "batchnorm_forward: running_var");
  VGG_CHECK(eps > 0, "batchnorm_forward: eps must be > 0, got %g", eps);
  check_nonzero_dims(x.shape, 1, "batchnorm_forward: input");
  VGG_CHECK(training || !sync, "batchnorm_forward: cross-replica statistics (sync) are for training mode only");
  const int64_t M = x.dim(0) * x.dim(2) * x.dim(3);
  VGG_CHECK(!training || M > 1 || sync,
            "batchnorm_forward: expected more than 1 value per channel when training, got input %s",
            shape_str(x.shape).c_str());
  Tensor y = Tensor::empty(x.shape, x.dtype, Device::CPU, x.layout);
  const Strides4 st = strides4(x.shape, x.layout);
  const float* g = gamma.data<float>();
  const float* b = beta.data<float>();
  float* rm = running_mean.data<float>();
  float* rv = running_var.data<float>();
  Tensor mean_t, invstd_t;
  // Per channel, in double: the statistics used to normalise (batch or running).
  std::vector<double> mean(static_cast<size_t>(C)), invstd(static_cast<size_t>(C));
  double total = double(M);  // values per channel over every replica
  const int G = st.block ? st.block : 1;  // channels done together (one nchw8c/nchw16c block)
  if (training) {
    mean_t = Tensor::empty({C}, DType::F32, Device::CPU);
    invstd_t = Tensor::empty({C}, DType::F32, Device::CPU);
  }
  float* mp = training ? mean_t.data<float>() : nullptr;
  float* ip = training ? invstd_t.data<float>() : nullptr;
  dispatch_float(x.dtype, [&](auto type) {
    using T = decltype(type);
    const T* xp = x.data<T>();
    T* yp = y.data<T>();
    // The passes over one group of channels (the same arithmetic whether or not replicas are summed in between).
    auto sum_pass = [&](int64_t c0, double* sum) {
      for (int j = 0; j < G; ++j) sum[j] = 0;
      for_group(x.shape, st, c0, G, [&](int64_t o, int j) { sum[j] += to_f32(xp[o]); });
    };
    auto sq_pass = [&](int64_t c0, double* ss) {
      for (int j = 0; j < G; ++j) ss[j] = 0;
      for_group(x.shape, st, c0, G, [&](int64_t o, int j) {
        const double d = to_f32(xp[o]) - mean[size_t(c0 + j)];
        ss[j] += d * d;
      });
    };
    auto finish = [&](int64_t c, double ssq) {  // batch statistics and running statistics of channel c
      const double var = ssq / total;
      invstd[size_t(c)] = 1.0 / std::sqrt(var + eps);
      mp[c] = float(mean[size_t(c)]);
      ip[c] = float(invstd[size_t(c)]);
      rm[c] = float((1.0 - momentum) * rm[c] + momentum * mean[size_t(c)]);
      rv[c] = float((1.0 - momentum) * rv[c] + momentum * (ssq / (total - 1)));
    };
    auto apply_pass = [&](int64_t c0) {  // normalise (and the fused ReLU)
      float fs[kMaxBlock], fb[kMaxBlock];
      for (int j = 0; j < G; ++j) {
        const size_t c = size_t(c0 + j);
        const double scale = double(g[c]) * invstd[c], shift = double(b[c]) - mean[c] * scale;
        fs[j] = float(scale);
        fb[j] = float(shift);
      }
      if (relu)
        for_group(x.shape, st, c0, G, [&](int64_t o, int j) {
          const float v = to_f32(xp[o]) * fs[j] + fb[j];
          from_f32(yp[o], v > 0.f ? v : 0.f);  // as relu_forward
        });
      else
        for_group(x.shape, st, c0, G, [&](int64_t o, int j) { from_f32(yp[o], to_f32(xp[o]) * fs[j] + fb[j]); });
    };
    if (training && !sync) {
      // One group of channels at a time, all three passes while its data is in cache.
#pragma omp parallel for schedule(static)
      for (int64_t c0 = 0; c0 < C; c0 += G) {
        double sum[kMaxBlock], ss[kMaxBlock];
        sum_pass(c0, sum);
        for (int j = 0; j < G; ++j) mean[size_t(c0 + j)] = sum[j] / total;
        sq_pass(c0, ss);
        for (int j = 0; j < G; ++j) finish(c0 + j, ss[j]);
        apply_pass(c0);
      }
      return;
    }
    if (training) {
      // SyncBatchNorm: each pass over every channel, the sums added across replicas in between.
      std::vector<double> sums(static_cast<size_t>(C) + 1), sqs(static_cast<size_t>(C));
#pragma omp parallel for schedule(static)
      for (int64_t c0 = 0; c0 < C; c0 += G) {
        double sum[kMaxBlock];
        sum_pass(c0, sum);
        for (int j = 0; j < G; ++j) sums[size_t(c0 + j)] = sum[j];
      }
      sums[size_t(C)] = double(M);
      sync->sum(sums.data(), C + 1, Device::CPU);
      total = sums[size_t(C)];
      VGG_CHECK(total > 1, "batchnorm_forward: expected more than 1 value per channel over all replicas, got %.0f",
                total);
      for (int64_t c = 0; c < C; ++c) mean[size_t(c)] = sums[size_t(c)] / total;
#pragma omp parallel for schedule(static)
      for (int64_t c0 = 0; c0 < C; c0 += G) {
        double ss[kMaxBlock];
        sq_pass(c0, ss);
        for (int j = 0; j < G; ++j) sqs[size_t(c0 + j)] = ss[j];
      }
      sync->sum(sqs.data(), C, Device::CPU);
      for (int64_t c = 0; c < C; ++c) finish(c, sqs[size_t(c)]);
    } else {
      for (int64_t c = 0; c < C; ++c) {
        mean[size_t(c)] = rm[c];
        invstd[size_t(c)] = 1.0 / std::sqrt(double(rv[c]) + eps);
      }
    }
#pragma omp parallel for schedule(static)
    for (int64_t c0 = 0; c0 < C; c0 += G) apply_pass(c0);
  });
  if (training && saved) {
    *saved = {mean_t, invstd_t};
    if (sync) {
      Tensor count = Tensor::empty({1}, DType::I64, Device::CPU);
      count.data<int64_t>()[0] = int64_t(total);
      saved->push_back(count);
      saved->push_back(Tensor::zeros({1}, DType::U8, Device::CPU));
    }
  } else if (saved) {
    // Eval mode with a backward to come: the running statistics are constants of the function. The third tensor
    // marks the eval form for backward.
    Tensor m = Tensor::empty({C}, DType::F32, Device::CPU), is = Tensor::empty({C}, DType::F32, Device::CPU);
    for (int64_t c = 0; c < C; ++c) {
      m.data<float>()[c] = rm[c];
      is.data<float>()[c] = float(1.0 / std::sqrt(double(rv[c]) + eps));
    }
    *saved = {m, is, Tensor::zeros({1}, DType::U8, Device::CPU)};
  }
  return y;
}

Tensor CpuBackend::batchnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma, double eps,
                                      const Saved& saved, Tensor& dgamma, Tensor& dbeta, bool accumulate,
                                      const Tensor& relu_y, ReplicaSum* sync) {
  check_4d_image(x, "batchnorm_backward: input");
  check_float_activation(x, "batchnorm_backward: input");
  check_float_activation(dy, "batchnorm_backward: dy");
  check_same_dtype(dy, x, "batchnorm_backward: dy and input");
  check_shape(dy, x.shape, "batchnorm_backward: dy");
  check_same_layout(dy, x, "batchnorm_backward: dy and input");
  check_nonzero_dims(x.shape, 1, "batchnorm_backward: input");
  const int64_t C = x.dim(1);
  check_param(gamma, {C}, "batchnorm_backward: weight");
  check_param(dgamma, {C}, "batchnorm_backward: dgamma");
  check_param(dbeta, {C}, "batchnorm_backward: dbeta");
  VGG_CHECK(saved.size() >= 2 && saved.size() <= 4,
            "batchnorm_backward: saved must hold {mean, invstd} of a forward that kept them (got %zu tensors)",
            saved.size());
  const bool batch_stats = saved.size() != 3;  // eval form: running statistics, no terms through the batch mean/var
  const bool synced = saved.size() == 4;
  VGG_CHECK(synced == (sync != nullptr),
            synced ? "batchnorm_backward: the forward synchronised its statistics across replicas; backward needs the "
                     "same process group"
                   : "batchnorm_backward: the forward used this replica's statistics only; backward cannot synchronise");
  check_param(saved[0], {C}, "batchnorm_backward: saved mean");
  check_param(saved[1], {C}, "batchnorm_backward: saved invstd");
  if (relu_y.defined()) {
    check_float_activation(relu_y, "batchnorm_backward: relu output");
    check_same_dtype(relu_y, x, "batchnorm_backward: relu output and input");
    check_shape(relu_y, x.shape, "batchnorm_backward: relu output");
    check_same_layout(relu_y, x, "batchnorm_backward: relu output and input");
  }
  double total = double(x.dim(0) * x.dim(2) * x.dim(3));
  if (synced) {
    check_dtype(saved[2], DType::I64, "batchnorm_backward: saved count");
    total = double(saved[2].data<int64_t>()[0]);
  }
  Tensor dx = Tensor::empty(x.shape, dy.dtype, Device::CPU, x.layout);
  const Strides4 st = strides4(x.shape, x.layout);
  const float* g = gamma.data<float>();
  const float *mp = saved[0].data<float>(), *ip = saved[1].data<float>();
  float *dg = dgamma.data<float>(), *db = dbeta.data<float>();
  const int G = st.block ? st.block : 1;  // channels done together (one nchw8c/nchw16c block)
  // sums[c] = sum dy, sums[C + c] = sum dy * (x - mean), per channel (then across replicas when synced).
  std::vector<double> sums(2 * static_cast<size_t>(C));
  dispatch_float(x.dtype, [&](auto type) {
    using T = decltype(type);
    const T *xp = x.data<T>(), *dyp = dy.data<T>();
    const T* yr = relu_y.defined() ? relu_y.data<T>() : nullptr;
    T* dxp = dx.data<T>();
    // dy through the fused ReLU: 0 where its output was 0 (torch's threshold_backward: y > 0 passes).
    auto grad = [&](int64_t o) { return yr && !(to_f32(yr[o]) > 0.f) ? 0.f : to_f32(dyp[o]); };
    auto reduce_pass = [&](int64_t c0) {  // this replica's sums, and dgamma/dbeta from them
      double mean[kMaxBlock], sdy[kMaxBlock] = {0}, sdyx[kMaxBlock] = {0};
      for (int j = 0; j < G; ++j) mean[j] = mp[c0 + j];
      for_group(x.shape, st, c0, G, [&](int64_t o, int j) {
        const float d = grad(o);
        sdy[j] += d;
        sdyx[j] += double(d) * (double(to_f32(xp[o])) - mean[j]);
      });
      for (int j = 0; j < G; ++j) {
        const size_t c = size_t(c0 + j);
        sums[c] = sdy[j];
        sums[size_t(C) + c] = sdyx[j];
        // This replica's parameter gradients (distributed training averages them like every other gradient).
        const double dgamma_c = sdyx[j] * double(ip[c]), dbeta_c = sdy[j];
        if (accumulate) {
          dg[c] += float(dgamma_c);
          db[c] += float(dbeta_c);
        } else {
          dg[c] = float(dgamma_c);
          db[c] = float(dbeta_c);
        }
      }
    };
    // dx = k * (dy - sum_dy/M - xhat * sum_dy_xhat/M), k = gamma*invstd
    auto dx_pass = [&](int64_t c0) {
      double mean[kMaxBlock], k[kMaxBlock], a[kMaxBlock], bcoef[kMaxBlock];
      for (int j = 0; j < G; ++j) {
        const size_t c = size_t(c0 + j);
        const double invstd = ip[c];
        mean[j] = mp[c];
        k[j] = double(g[c]) * invstd;
        a[j] = batch_stats ? sums[c] / total : 0.0;
        bcoef[j] = batch_stats ? sums[size_t(C) + c] * invstd * invstd / total : 0.0;
      }
      for_group(x.shape, st, c0, G, [&](int64_t o, int j) {
        from_f32(dxp[o], float(k[j] * (double(grad(o)) - a[j] - (double(to_f32(xp[o])) - mean[j]) * bcoef[j])));
      });
    };
    if (!sync) {
      // One group of channels at a time, both passes while its data is in cache.
#pragma omp parallel for schedule(static)
      for (int64_t c0 = 0; c0 < C; c0 += G) {
        reduce_pass(c0);
        dx_pass(c0);
      }
      return;
    }
#pragma omp parallel for schedule(static)
    for (int64_t c0 = 0; c0 < C; c0 += G) reduce_pass(c0);
    sync->sum(sums.data(), 2 * C, Device::CPU);
#pragma omp parallel for schedule(static)
    for (int64_t c0 = 0; c0 < C; c0 += G) dx_pass(c0);
  });
  return dx;
}

}  // namespace vgg::cpu
