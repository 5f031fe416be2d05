// Backward-weights of one 3×3 convolution in oneDNN 2.6, two ways: its direct kernel on blocked layouts (what
// format_tag::any picks) and its GEMM-based kernel (what plain nchw gets) — the measurement behind
// bwdw_via_gemm() in native/cpu/conv.cc. Build and run:
//   g++ -O2 -std=c++17 scripts/bench_conv_bwdw.cc -ldnnl -o /tmp/bwdw && OMP_NUM_THREADS=2 /tmp/bwdw N C K HW
// e.g. `8 256 256 56` (vgg16's third block at 224²). Prints the implementation oneDNN chose, the best of three
// runs after one warm-up, and GFLOP/s.
#include <dnnl.hpp>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <algorithm>
using namespace dnnl;
using tag = memory::format_tag;
int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: %s N C K HW\n", argv[0]);
    return 2;
  }
  int N = atoi(argv[1]), C = atoi(argv[2]), K = atoi(argv[3]), H = atoi(argv[4]);
  engine eng(engine::kind::cpu, 0); stream s(eng);
  memory::dims x{N, C, H, H}, w{K, C, 3, 3}, y{N, K, H, H}, st{1, 1}, pd{1, 1};
  for (int mode = 0; mode < 2; ++mode) {
    tag xt = mode == 0 ? tag::any : tag::nchw;
    auto src = memory::desc(x, memory::data_type::f32, xt);
    auto dst = memory::desc(y, memory::data_type::f32, xt);
    auto wei = memory::desc(w, memory::data_type::f32, tag::any);
    convolution_forward::desc fd(prop_kind::forward_training, algorithm::convolution_direct, src, wei, dst, st, pd, pd);
    convolution_forward::primitive_desc fpd(fd, eng);
    convolution_backward_weights::desc bd(algorithm::convolution_direct, src, wei, dst, st, pd, pd);
    convolution_backward_weights::primitive_desc bpd(bd, eng, fpd);
    memory sm(bpd.src_desc(), eng), dm(bpd.diff_dst_desc(), eng), wm(bpd.diff_weights_desc(), eng);
    memset(sm.get_data_handle(), 0, bpd.src_desc().get_size());
    memset(dm.get_data_handle(), 0, bpd.diff_dst_desc().get_size());
    convolution_backward_weights p(bpd);
    double best = 1e9;
    for (int it = 0; it < 4; ++it) {
      auto t0 = std::chrono::steady_clock::now();
      p.execute(s, {{DNNL_ARG_SRC, sm}, {DNNL_ARG_DIFF_DST, dm}, {DNNL_ARG_DIFF_WEIGHTS, wm}});
      s.wait();
      double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      if (it) best = std::min(best, ms);
    }
    double gf = 2.0 * N * C * K * H * H * 9 / best / 1e6;
    printf("%-6s impl %-24s %.1f ms  %.0f GFLOP/s\n", mode == 0 ? "any" : "nchw", bpd.impl_info_str(), best, gf);
  }
}
