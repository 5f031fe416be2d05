// Batch norm over C of (N,C,H,W), plain C++ with double accumulators (PyTorch's numerics; threads split the channels,
// nchw8c does the 8 channels of a block together so that each pass reads memory once).
//   train: mean, biased var over (N,H,W); y = (x-mean)/sqrt(var+eps)*gamma + beta;
//          running = (1-m)*running + m*batch (running var uses the unbiased var). saved = {mean, invstd} (C) f32
//   eval:  y = (x-running_mean)/sqrt(running_var+eps)*gamma + beta
//   backward (train): xhat = (x-mean)*invstd, dbeta = sum dy, dgamma = sum dy*xhat,
//          dx = gamma*invstd/M * (M*dy - dbeta - xhat*dgamma), M = N*H*W
//   relu fused (BN then ReLU, as in vgg*_bn): forward writes max(0, y); backward, given that output, first masks
//   dy where it is 0 — each saves a full pass over the activation.
// bf16 activations (x, y, dy, dx, the relu output) are read and written through float by the same loops (templated
// on the storage type); statistics, gamma/beta and their gradients are f32 on every path.
#include <cmath>

#include "backend.h"

namespace vgg::cpu {

namespace {
// Visits every element of the G channels c0..c0+G-1 (G = 8 for nchw8c, whose 8 channels of a block are adjacent
// in memory, else 1): f(offset, j) for channel c0+j, each channel in (n, h, w) order.
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
                                     Saved* saved, bool relu) {
  check_4d_image(x, "batchnorm_forward: input");
  check_float_activation(x, "batchnorm_forward: input");
  const int64_t C = x.dim(1);
  check_param(gamma, {C}, "batchnorm_forward: weight");
  check_param(beta, {C}, "batchnorm_forward: bias");
  check_param(running_mean, {C}, "batchnorm_forward: running_mean");
  check_param(running_var, {C}, "batchnorm_forward: running_var");
  VGG_CHECK(eps > 0, "batchnorm_forward: eps must be > 0, got %g", eps);
  check_nonzero_dims(x.shape, 1, "batchnorm_forward: input");
  const int64_t M = x.dim(0) * x.dim(2) * x.dim(3);
  VGG_CHECK(!training || M > 1,
            "batchnorm_forward: expected more than 1 value per channel when training, got input %s",
            shape_str(x.shape).c_str());
  Tensor y = Tensor::empty(x.shape, x.dtype, Device::CPU, x.layout);
  const Strides4 st = strides4(x.shape, x.layout);
  const float* g = gamma.data<float>();
  const float* b = beta.data<float>();
  float* rm = running_mean.data<float>();
  float* rv = running_var.data<float>();
  Tensor mean_t, invstd_t;
  if (training) {
    mean_t = Tensor::empty({C}, DType::F32, Device::CPU);
    invstd_t = Tensor::empty({C}, DType::F32, Device::CPU);
  }
  float* mp = training ? mean_t.data<float>() : nullptr;
  float* ip = training ? invstd_t.data<float>() : nullptr;
  const int G = st.blocked ? 8 : 1;  // channels done together (one nchw8c block)
  dispatch_float(x.dtype, [&](auto type) {
    using T = decltype(type);
    const T* xp = x.data<T>();
    T* yp = y.data<T>();
#pragma omp parallel for schedule(static)
    for (int64_t c0 = 0; c0 < C; c0 += G) {
      double mean[8], invstd[8];
      if (training) {
        double sum[8] = {0}, ss[8] = {0};
        for_group(x.shape, st, c0, G, [&](int64_t o, int j) { sum[j] += to_f32(xp[o]); });
        for (int j = 0; j < G; ++j) mean[j] = sum[j] / double(M);
        for_group(x.shape, st, c0, G, [&](int64_t o, int j) {
          const double d = to_f32(xp[o]) - mean[j];
          ss[j] += d * d;
        });
        for (int j = 0; j < G; ++j) {
          const int64_t c = c0 + j;
          const double var = ss[j] / double(M);
          invstd[j] = 1.0 / std::sqrt(var + eps);
          mp[c] = float(mean[j]);
          ip[c] = float(invstd[j]);
          rm[c] = float((1.0 - momentum) * rm[c] + momentum * mean[j]);
          rv[c] = float((1.0 - momentum) * rv[c] + momentum * (ss[j] / double(M - 1)));
        }
      } else {
        for (int j = 0; j < G; ++j) {
          mean[j] = rm[c0 + j];
          invstd[j] = 1.0 / std::sqrt(double(rv[c0 + j]) + eps);
        }
      }
      float fs[8], fb[8];
      for (int j = 0; j < G; ++j) {
        const double scale = double(g[c0 + j]) * invstd[j], shift = double(b[c0 + j]) - mean[j] * scale;
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
    }
  });
  if (training && saved) {
    saved->clear();
    saved->push_back(mean_t);
    saved->push_back(invstd_t);
  } else if (saved) {
    // Eval mode with a backward to come: the running statistics are constants of the function. The third tensor
    // marks the eval form for backward.
    Tensor m = Tensor::empty({C}, DType::F32, Device::CPU), is = Tensor::empty({C}, DType::F32, Device::CPU);
    const float *rm = running_mean.data<float>(), *rv = running_var.data<float>();
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
                                      const Tensor& relu_y) {
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
  VGG_CHECK(saved.size() == 2 || saved.size() == 3,
            "batchnorm_backward: saved must hold {mean, invstd} of a forward that kept them (got %zu tensors)",
            saved.size());
  const bool batch_stats = saved.size() == 2;  // eval form: running statistics, no terms through the batch mean/var
  check_param(saved[0], {C}, "batchnorm_backward: saved mean");
  check_param(saved[1], {C}, "batchnorm_backward: saved invstd");
  if (relu_y.defined()) {
    check_float_activation(relu_y, "batchnorm_backward: relu output");
    check_same_dtype(relu_y, x, "batchnorm_backward: relu output and input");
    check_shape(relu_y, x.shape, "batchnorm_backward: relu output");
    check_same_layout(relu_y, x, "batchnorm_backward: relu output and input");
  }
  const int64_t M = x.dim(0) * x.dim(2) * x.dim(3);
  Tensor dx = Tensor::empty(x.shape, dy.dtype, Device::CPU, x.layout);
  const Strides4 st = strides4(x.shape, x.layout);
  const float* g = gamma.data<float>();
  const float *mp = saved[0].data<float>(), *ip = saved[1].data<float>();
  float *dg = dgamma.data<float>(), *db = dbeta.data<float>();
  const int G = st.blocked ? 8 : 1;  // channels done together (one nchw8c block)
  dispatch_float(x.dtype, [&](auto type) {
    using T = decltype(type);
    const T *xp = x.data<T>(), *dyp = dy.data<T>();
    const T* yr = relu_y.defined() ? relu_y.data<T>() : nullptr;
    T* dxp = dx.data<T>();
    // dy through the fused ReLU: 0 where its output was 0 (torch's threshold_backward: y > 0 passes).
    auto grad = [&](int64_t o) { return yr && !(to_f32(yr[o]) > 0.f) ? 0.f : to_f32(dyp[o]); };
#pragma omp parallel for schedule(static)
    for (int64_t c0 = 0; c0 < C; c0 += G) {
      double mean[8], invstd[8], sdy[8] = {0}, sdyx[8] = {0};
      for (int j = 0; j < G; ++j) mean[j] = mp[c0 + j], invstd[j] = ip[c0 + j];
      for_group(x.shape, st, c0, G, [&](int64_t o, int j) {
        const float d = grad(o);
        sdy[j] += d;
        sdyx[j] += double(d) * (double(to_f32(xp[o])) - mean[j]);
      });
      // dx = k * (dy - dbeta/M - xhat * dgamma/M), k = gamma*invstd
      double k[8], a[8], bcoef[8];
      for (int j = 0; j < G; ++j) {
        const int64_t c = c0 + j;
        const double dgamma_c = sdyx[j] * invstd[j], dbeta_c = sdy[j];
        k[j] = double(g[c]) * invstd[j];
        a[j] = batch_stats ? dbeta_c / double(M) : 0.0;
        bcoef[j] = batch_stats ? dgamma_c * invstd[j] / double(M) : 0.0;
        if (accumulate) {
          dg[c] += float(dgamma_c);
          db[c] += float(dbeta_c);
        } else {
          dg[c] = float(dgamma_c);
          db[c] = float(dbeta_c);
        }
      }
      for_group(x.shape, st, c0, G, [&](int64_t o, int j) {
        from_f32(dxp[o], float(k[j] * (double(grad(o)) - a[j] - (double(to_f32(xp[o])) - mean[j]) * bcoef[j])));
      });
    }
  });
  return dx;
}

}  // namespace vgg::cpu
