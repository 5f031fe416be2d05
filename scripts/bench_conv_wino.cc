// One 3×3 stride-1 pad-1 convolution in oneDNN 2.6, direct against Winograd (convolution_winograd, oneDNN's
// jit_wino_4x3 on avx512_core), all three directions, interleaved (direct, wino, direct, wino, ...) so that load from
// other processes hits both alike — the measurement behind use_winograd() in native/cpu/conv.cc. Build and run:
//   g++ -O2 -std=c++17 scripts/bench_conv_wino.cc -ldnnl -o /tmp/wino && OMP_NUM_THREADS=2 /tmp/wino N C K HW [reps]
// e.g. `8 256 256 56` (vgg16's third block at 224²). Prints each direction's implementation, the median of `reps`
// runs (default 5) after one warm-up, and GFLOP/s counted as direct convolution FLOPs; then the same for the process's
// CPU time (all threads), steadier than wall time when other processes share the cores (run with
// OMP_WAIT_POLICY=passive so that waiting threads do not spin).
#include <dnnl.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <vector>
using namespace dnnl;
using tag = memory::format_tag;

struct Run {
  std::string impl;
  std::function<void()> exec;
  std::vector<double> ms, cpu;
};

static double cpu_ms() {
  timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return t.tv_sec * 1e3 + t.tv_nsec * 1e-6;
}

static memory filled(const memory::desc& d, const engine& eng) {
  memory m(d, eng);
  float* p = static_cast<float*>(m.get_data_handle());
  for (size_t i = 0; i < d.get_size() / 4; ++i) p[i] = float((i * 2654435761u) % 1000) / 1000.f - 0.5f;
  return m;
}

int main(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr, "usage: %s N C K HW [reps]\n", argv[0]);
    return 2;
  }
  const int N = atoi(argv[1]), C = atoi(argv[2]), K = atoi(argv[3]), H = atoi(argv[4]);
  const int reps = argc > 5 ? atoi(argv[5]) : 5;
  engine eng(engine::kind::cpu, 0);
  stream s(eng);
  const memory::dims x{N, C, H, H}, w{K, C, 3, 3}, b{K}, y{N, K, H, H}, st{1, 1}, pd{1, 1};
  auto any = [](const memory::dims& d) { return memory::desc(d, memory::data_type::f32, tag::any); };
  const auto bias = memory::desc(b, memory::data_type::f32, tag::a);
  std::vector<Run> runs;  // fwd, bwd-data, bwd-weights for direct, then the same for Winograd
  for (auto alg : {algorithm::convolution_direct, algorithm::convolution_winograd}) {
    try {
      convolution_forward::primitive_desc f(
          convolution_forward::desc(prop_kind::forward_training, alg, any(x), any(w), bias, any(y), st, pd, pd), eng);
      convolution_backward_data::primitive_desc bd(convolution_backward_data::desc(alg, any(x), any(w), any(y), st, pd, pd),
                                                   eng, f);
      convolution_backward_weights::primitive_desc bw(
          convolution_backward_weights::desc(alg, any(x), any(w), bias, any(y), st, pd, pd), eng, f);
      auto xs = filled(f.src_desc(), eng), ws = filled(f.weights_desc(), eng), bs = filled(f.bias_desc(), eng),
           ys = filled(f.dst_desc(), eng);
      auto dx = filled(bd.diff_src_desc(), eng), wd = filled(bd.weights_desc(), eng), dyd = filled(bd.diff_dst_desc(), eng);
      auto xw = filled(bw.src_desc(), eng), dyw = filled(bw.diff_dst_desc(), eng), dw = filled(bw.diff_weights_desc(), eng),
           db = filled(bw.diff_bias_desc(), eng);
      auto pf = std::make_shared<convolution_forward>(f);
      auto pb = std::make_shared<convolution_backward_data>(bd);
      auto pw = std::make_shared<convolution_backward_weights>(bw);
      runs.push_back({f.impl_info_str(), [=, &s] { pf->execute(s, {{DNNL_ARG_SRC, xs}, {DNNL_ARG_WEIGHTS, ws}, {DNNL_ARG_BIAS, bs}, {DNNL_ARG_DST, ys}}); }, {}});
      runs.push_back({bd.impl_info_str(), [=, &s] { pb->execute(s, {{DNNL_ARG_DIFF_DST, dyd}, {DNNL_ARG_WEIGHTS, wd}, {DNNL_ARG_DIFF_SRC, dx}}); }, {}});
      runs.push_back({bw.impl_info_str(), [=, &s] { pw->execute(s, {{DNNL_ARG_SRC, xw}, {DNNL_ARG_DIFF_DST, dyw}, {DNNL_ARG_DIFF_WEIGHTS, dw}, {DNNL_ARG_DIFF_BIAS, db}}); }, {}});
    } catch (const error& e) {
      std::printf("%s: not available here (%s)\n", alg == algorithm::convolution_direct ? "direct" : "winograd", e.what());
      return 1;
    }
  }
  for (int it = 0; it <= reps; ++it)
    for (auto& r : runs) {
      const auto t0 = std::chrono::steady_clock::now();
      const double c0 = cpu_ms();
      r.exec();
      s.wait();
      const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      if (it) r.ms.push_back(ms), r.cpu.push_back(cpu_ms() - c0);
    }
  const double gflop = 2.0 * N * C * K * H * H * 9 / 1e9;
  const char* dir[] = {"fwd", "bwd-data", "bwd-weights"};
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  for (int d = 0; d < 3; ++d) {
    const double w0 = median(runs[d].ms), w1 = median(runs[3 + d].ms);
    const double c0 = median(runs[d].cpu), c1 = median(runs[3 + d].cpu);
    std::printf("N%d C%d K%d %dx%d %-11s direct %-16s %8.2f ms %5.0f GF/s | wino %-24s %8.2f ms %5.0f GF/s | wall %.2fx cpu %.2fx\n",
                N, C, K, H, H, dir[d], runs[d].impl.c_str(), w0, gflop / w0 * 1e3, runs[3 + d].impl.c_str(), w1,
                gflop / w1 * 1e3, w0 / w1, c0 / c1);
  }
}
