// One 3×3 stride-1 pad-1 bf16 convolution in oneDNN 2.6: every implementation oneDNN offers for it (walked with
// next_impl; its reference kernels left out), for each activation layout asked (tag::any, nhwc, nChw16c), each direction, interleaved so that load
// from other processes hits all alike. The measurement behind the choice of bf16 kernels in native/cpu/conv.cc.
//   g++ -O2 -std=c++17 scripts/bench_conv_bf16.cc -ldnnl -o /tmp/cbf16 && OMP_NUM_THREADS=2 /tmp/cbf16 N C K HW [reps]
// bf16 src/weights/dst, f32 bias and weight gradient (what vggnet's native bf16 path asks for). Prints, per
// direction and implementation, the median of `reps` runs (default 5) after one warm-up and GFLOP/s counted as
// direct convolution FLOPs.
#include <dnnl.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>
using namespace dnnl;
using tag = memory::format_tag;
using dt = memory::data_type;

struct Run {
  std::string name;
  std::function<void()> exec;
  std::vector<double> ms;
};

static memory filled(const memory::desc& d, const engine& eng) {
  memory m(d, eng);
  // bf16 0x3f80-ish patterns or f32: small values either way; byte noise is enough for timing.
  auto* p = static_cast<uint16_t*>(m.get_data_handle());
  for (size_t i = 0; i < d.get_size() / 2; ++i) p[i] = uint16_t(0x3c00 + (i * 2654435761u) % 0x300);
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
  const auto bias = memory::desc(b, dt::f32, tag::a);
  std::vector<Run> runs[3];
  for (auto lay : {tag::any, tag::nhwc, tag::nChw16c}) {
    const char* ln = lay == tag::any ? "any" : lay == tag::nhwc ? "nhwc" : "nChw16c";
    auto act = [&](const memory::dims& d) { return memory::desc(d, dt::bf16, lay); };
    const auto wa = memory::desc(w, dt::bf16, tag::any), wf = memory::desc(w, dt::f32, tag::any);
    convolution_forward::desc fd(prop_kind::forward_training, algorithm::convolution_direct, act(x), wa, bias, act(y), st,
                                 pd, pd);
    convolution_forward::primitive_desc hint(fd, eng);
    auto add = [&](int d, auto pdesc, auto make) {
      do {
        const std::string impl = pdesc.impl_info_str();
        if (impl.rfind("ref", 0) == 0) continue;  // the reference kernels: minutes per call at these sizes
        runs[d].push_back({std::string(ln) + " " + impl, make(pdesc), {}});
      } while (pdesc.next_impl());
    };
    add(0, convolution_forward::primitive_desc(fd, eng), [&](convolution_forward::primitive_desc f) {
      auto xs = filled(f.src_desc(), eng), ws = filled(f.weights_desc(), eng), bs = filled(f.bias_desc(), eng),
           ys = filled(f.dst_desc(), eng);
      auto p = std::make_shared<convolution_forward>(f);
      return std::function<void()>([=, &s] {
        p->execute(s, {{DNNL_ARG_SRC, xs}, {DNNL_ARG_WEIGHTS, ws}, {DNNL_ARG_BIAS, bs}, {DNNL_ARG_DST, ys}});
      });
    });
    add(1,
        convolution_backward_data::primitive_desc(
            convolution_backward_data::desc(algorithm::convolution_direct, act(x), wa, act(y), st, pd, pd), eng, hint),
        [&](convolution_backward_data::primitive_desc bd) {
          auto dx = filled(bd.diff_src_desc(), eng), wd = filled(bd.weights_desc(), eng),
               dy = filled(bd.diff_dst_desc(), eng);
          auto p = std::make_shared<convolution_backward_data>(bd);
          return std::function<void()>([=, &s] {
            p->execute(s, {{DNNL_ARG_DIFF_DST, dy}, {DNNL_ARG_WEIGHTS, wd}, {DNNL_ARG_DIFF_SRC, dx}});
          });
        });
    add(2,
        convolution_backward_weights::primitive_desc(
            convolution_backward_weights::desc(algorithm::convolution_direct, act(x), wf, bias, act(y), st, pd, pd), eng,
            hint),
        [&](convolution_backward_weights::primitive_desc bw) {
          auto xs = filled(bw.src_desc(), eng), dy = filled(bw.diff_dst_desc(), eng),
               dw = filled(bw.diff_weights_desc(), eng), db = filled(bw.diff_bias_desc(), eng);
          auto p = std::make_shared<convolution_backward_weights>(bw);
          return std::function<void()>([=, &s] {
            p->execute(s, {{DNNL_ARG_SRC, xs}, {DNNL_ARG_DIFF_DST, dy}, {DNNL_ARG_DIFF_WEIGHTS, dw}, {DNNL_ARG_DIFF_BIAS, db}});
          });
        });
  }
  for (int it = 0; it <= reps; ++it)
    for (auto& rs : runs)
      for (auto& r : rs) {
        const auto t0 = std::chrono::steady_clock::now();
        r.exec();
        s.wait();
        if (it) r.ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
      }
  const double gflop = 2.0 * N * C * K * H * H * 9 / 1e9;
  const char* dir[] = {"fwd", "bwd-data", "bwd-weights"};
  for (int d = 0; d < 3; ++d)
    for (auto& r : runs[d]) {
      std::sort(r.ms.begin(), r.ms.end());
      const double m = r.ms[r.ms.size() / 2];
      std::printf("N%d C%d K%d %dx%d %-11s %-40s %8.2f ms %5.0f GF/s\n", N, C, K, H, H, dir[d], r.name.c_str(), m,
                  gflop / m * 1e3);
    }
}
