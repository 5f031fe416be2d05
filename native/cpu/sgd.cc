// The SGD step over all parameters: torch.optim.SGD, in float32 like PyTorch (see ops.h for the formula), one
// vectorised loop per flag combination; it writes a weight's prepared bf16 copy and pool fold along with the weight,
// and pools a gradient given as the pool's input (ops.h, PooledGrad) block by block as it goes.
#include "backend.h"

namespace vgg::cpu {

namespace {

template <class F>
void dispatch_bool(bool v, F&& f) {
  if (v) f(std::true_type{});
  else f(std::false_type{});
}

// What the step also writes beside the weight: nothing, or its prepared copy (common.h, PreparedWeight) in bf16 or
// as bf16-rounded f32, from the updated weight.
enum class Also { Nothing, Bf16, Rounded };

// torch.optim.SGD: d = g + wd*w; buf = first ? d : mom*buf + (1-dampening)*d; d = nesterov ? d + mom*buf : buf;
// w -= lr*d. One serial loop per flag combination, each compiled for AVX2 too (VGG_VECTOR_CLONES): with the flags
// inside, the loop no longer vectorises cleanly and runs at about half the memory bandwidth (the step is
// memory-bound: 120M classifier parameters at 32²).
template <bool WD, bool MOM, bool FIRST, bool NEST, Also ALSO>
VGG_VECTOR_CLONES void sgd_run(float* w, const float* g, float* b, void* prepared, int64_t n, float lr, float mom,
                               float damp, float wd) {
  for (int64_t i = 0; i < n; ++i) {
    float d = g[i];
    if (WD) d += wd * w[i];
    if (MOM) {
      const float v = FIRST ? d : mom * b[i] + damp * d;
      b[i] = v;
      d = NEST ? d + mom * v : v;
    }
    const float nw = w[i] - lr * d;
    w[i] = nw;
    if (ALSO == Also::Bf16) static_cast<uint16_t*>(prepared)[i] = f32_to_bf16(nw);
    if (ALSO == Also::Rounded) static_cast<float*>(prepared)[i] = bf16_to_f32(f32_to_bf16(nw));
  }
}

}  // namespace

void CpuBackend::sgd_step(std::vector<Tensor>& params, const std::vector<Tensor>& grads, std::vector<Tensor>& bufs,
                          const SgdParams& p, bool first, const std::vector<PooledGrad>& pooled) {
  const bool use_momentum = p.momentum != 0;
  VGG_CHECK(pooled.empty() || pooled.size() == params.size(), "sgd_step: %zu params but %zu pooled entries",
            params.size(), pooled.size());
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
    if (!pooled.empty() && pooled[i].on()) {
      const PooledGrad& pg = pooled[i];
      check_ndim(params[i], 2, wi.c_str());
      VGG_CHECK(params[i].dim(1) == pg.C * pg.oh * pg.ow, "%s: %lld inputs, but a pooled gradient for %lld·%d·%d",
                wi.c_str(), (long long)params[i].dim(1), (long long)pg.C, pg.oh, pg.ow);
      check_shape(grads[i], {params[i].dim(0), pg.C * pg.H * pg.W}, gi.c_str());
    } else {
      check_shape(grads[i], params[i].shape, gi.c_str());
    }
    if (use_momentum) {
      const std::string bi = "sgd_step: momentum buffer " + std::to_string(i);
      check_cpu(bufs[i], bi.c_str());
      check_dtype(bufs[i], DType::F32, bi.c_str());
      check_shape(bufs[i], params[i].shape, bi.c_str());
    }
  }
  const float lr = float(p.lr), mom = float(p.momentum), damp = float(1.0 - p.dampening),
              wd = float(p.weight_decay);
  const bool wdecay = wd != 0.f;
  for (size_t t = 0; t < params.size(); ++t) {
    float* w = params[t].data<float>();
    const float* g = grads[t].data<float>();
    float* b = use_momentum ? bufs[t].data<float>() : nullptr;
    const int64_t n = params[t].numel();
    // The weight's prepared copy, when current and held by no op or layer, is rewritten in the same pass (one read
    // of the new weight instead of a second pass over it at the next forward).
    PreparedWeight* pw = prepared_for_update(params[t]);
    void* prep = pw ? pw->t.raw() : nullptr;
    const Also also = !pw ? Also::Nothing : pw->t.dtype == DType::BF16 ? Also::Bf16 : Also::Rounded;
    // Likewise the weight's pool fold (common.h, FoldedWeight): each block of planes folded right after its update,
    // while it is in cache.
    FoldedWeight* fold = folded_for_update(params[t]);
    // A gradient given as the pool's input: each block's gradient pooled into a buffer in cache, right before use.
    const bool pools = !pooled.empty() && pooled[t].on();
    const PoolPlan pool = pools ? make_pool_plan(pooled[t].H, pooled[t].W, pooled[t].oh, pooled[t].ow) : PoolPlan{};
    VGG_CHECK(!pools || !fold || fold->plan.Q == pool.Q, "sgd_step: param %zu: its fold and pooled gradient differ",
              t);
    auto run = [&](auto wd_on, auto mom_on, auto first_on, auto nest_on, auto also_c) {
      constexpr Also A = decltype(also_c)::value;
      auto update = [&](int64_t lo, int64_t hi, const float* gl) {  // gl: the gradient of [lo, hi)
        void* pp = A == Also::Nothing ? nullptr
                   : A == Also::Bf16  ? static_cast<void*>(static_cast<uint16_t*>(prep) + lo)
                                      : static_cast<void*>(static_cast<float*>(prep) + lo);
        sgd_run<decltype(wd_on)::value, decltype(mom_on)::value, decltype(first_on)::value,
                decltype(nest_on)::value, A>(w + lo, gl, b ? b + lo : nullptr, pp, hi - lo, lr, mom, damp, wd);
      };
      if (!fold && !pools) return parallel_chunks(n, [&](int64_t lo, int64_t hi) { update(lo, hi, g + lo); });
      const int64_t Q = pools ? pool.Q : fold->plan.Q;  // the weight's values per plane (output row × channel)
      parallel_chunks(n / Q, [&](int64_t p0, int64_t p1) {
        constexpr int64_t kBlock = 256;  // planes: 49 KB of weights at Q = 49, in L2 for the fold
        std::vector<float> gbuf(pools ? size_t(kBlock * Q) : 0);
        for (int64_t lo = p0; lo < p1; lo += kBlock) {
          const int64_t hi = std::min(p1, lo + kBlock);
          if (pools) pool.run(g + lo * pool.M, gbuf.data(), hi - lo);
          update(lo * Q, hi * Q, pools ? gbuf.data() : g + lo * Q);
          if (fold) fold->plan.run(w + lo * Q, fold->t.data<float>() + lo * fold->plan.M, hi - lo);
        }
      });
    };
    auto with_also = [&](auto a, auto m, auto f, auto ne) {
      if (also == Also::Bf16) run(a, m, f, ne, std::integral_constant<Also, Also::Bf16>{});
      else if (also == Also::Rounded) run(a, m, f, ne, std::integral_constant<Also, Also::Rounded>{});
      else run(a, m, f, ne, std::integral_constant<Also, Also::Nothing>{});
    };
    dispatch_bool(wdecay, [&](auto a) {
      dispatch_bool(use_momentum, [&](auto m) {
        dispatch_bool(use_momentum && first, [&](auto f) {
          dispatch_bool(use_momentum && p.nesterov, [&](auto ne) { with_also(a, m, f, ne); });
        });
      });
    });
    params[t].mark_written();
    if (use_momentum) bufs[t].mark_written();
    if (pw) pw->version = params[t].version();
    if (fold) {
      fold->t.mark_written();  // for what was derived from the fold itself (its bf16 copy)
      fold->version = params[t].version();
      fold->t_version = fold->t.version();
    }
  }
}

}  // namespace vgg::cpu

namespace vgg {

using namespace cpu;

void cpu_deferred_materialise(Tensor& w_out, Tensor& b_out, const Tensor& anchor_w, const Tensor& anchor_b,
                              const Tensor& zw, const Tensor& zb, const double p[4], const PooledGrad& g) {
  const char* op = "deferred_materialise";
  VGG_CHECK(g.on(), "%s: no pool geometry", op);
  VGG_CHECK(anchor_b.defined() == zb.defined(), "%s: a momentum anchor needs its z and the other way round", op);
  VGG_CHECK(!b_out.defined() || zb.defined(), "%s: no momentum to work out", op);
  for (const Tensor* t : std::initializer_list<const Tensor*>{&w_out, &b_out, &anchor_w, &anchor_b, &zw, &zb}) {
    if (!t->defined()) continue;
    check_cpu(*t, op);
    check_dtype(*t, DType::F32, op);
    check_ndim(*t, 2, op);
  }
  const int64_t rows = zw.dim(0), M = g.H * g.W, Q = int64_t(g.oh) * g.ow;
  VGG_CHECK(zw.dim(1) == g.C * M, "%s: z has %lld columns, expected %lld·%lld·%lld", op, (long long)zw.dim(1),
            (long long)g.C, (long long)g.H, (long long)g.W);
  check_shape(anchor_w, {rows, g.C * Q}, "deferred_materialise: the weight's anchor");
  for (const Tensor* t : std::initializer_list<const Tensor*>{&w_out, &b_out, &anchor_b})
    if (t->defined()) check_shape(*t, anchor_w.shape, op);
  if (zb.defined()) check_shape(zb, zw.shape, "deferred_materialise: the momentum's z");
  const PoolPlan pool = make_pool_plan(g.H, g.W, g.oh, g.ow);
  const float* aw = anchor_w.data<float>();
  const float* ab = anchor_b.defined() ? anchor_b.data<float>() : nullptr;
  float* w = w_out.defined() ? w_out.data<float>() : nullptr;
  float* b = b_out.defined() ? b_out.data<float>() : nullptr;
  // Block by block as sgd_step pools a gradient: each block of z pooled out into a buffer in cache, then combined.
  parallel_chunks(rows * g.C, [&](int64_t p_lo, int64_t p_hi) {
    constexpr int64_t kBlock = 256;  // planes
    std::vector<float> ew(size_t(kBlock * Q)), eb(ab ? size_t(kBlock * Q) : 0);
    for (int64_t lo = p_lo; lo < p_hi; lo += kBlock) {
      const int64_t n = std::min(p_hi, lo + kBlock) - lo, e0 = lo * Q;
      pool.run(zw.data<float>() + lo * M, ew.data(), n);
      if (ab) pool.run(zb.data<float>() + lo * M, eb.data(), n);
      for (int64_t i = 0; i < n * Q; ++i) {
        const double x = aw[e0 + i], y = ab ? ab[e0 + i] : 0.0;  // both read before either output is written
        if (w) w[e0 + i] = float(p[0] * x + p[1] * y + double(ew[size_t(i)]));
        if (b) b[e0 + i] = float(p[2] * x + p[3] * y + double(eb[size_t(i)]));
      }
    }
  });
  if (w) w_out.mark_written();
  if (b) b_out.mark_written();
}

}  // namespace vgg
