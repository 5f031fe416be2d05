// The CPU backend's singleton, what oneDNN dispatches to on this machine, and synchronize (oneDNN's in-order stream).
#include <cstdlib>
#include <optional>

#include "backend.h"

namespace vgg {

Backend& cpu_backend() {
  static cpu::CpuBackend b;
  return b;
}

namespace cpu {

namespace {
const char* isa_name(dnnl::cpu_isa isa) {
  using I = dnnl::cpu_isa;
  switch (isa) {
    case I::sse41: return "sse41";
    case I::avx: return "avx";
    case I::avx2: return "avx2";
    case I::avx2_vnni: return "avx2_vnni";
    case I::avx512_mic: return "avx512_mic";
    case I::avx512_mic_4ops: return "avx512_mic_4ops";
    case I::avx512_core: return "avx512_core";
    case I::avx512_core_vnni: return "avx512_core_vnni";
    case I::avx512_core_bf16: return "avx512_core_bf16";
    case I::avx512_core_amx: return "avx512_core_amx";
    case I::all: return "all";
    default: return "unknown";
  }
}
// The source format oneDNN picks for a 3×3 stride-1 pad-1 forward convolution of x's shape onto as many channels
// (format_tag::any everywhere), as the plain or blocked tag it equals (nchw, nhwc, nChw8c, nChw16c; undef for any
// other); nullopt when oneDNN has no such convolution for this data type here.
std::optional<dnnl::memory::format_tag> conv_src_choice(const dnnl::memory::dims& x, dnnl::memory::data_type dt) {
  using dnnl::memory;
  try {
    const memory::dims w{x[1], x[1], 3, 3}, s1{1, 1}, p1{1, 1};
    auto md = [&](const memory::dims& d) { return memory::desc(d, dt, memory::format_tag::any); };
    dnnl::convolution_forward::desc d(dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, md(x),
                                      md(w), md(x), s1, p1, p1);
    dnnl::convolution_forward::primitive_desc pd(d, engine());
    for (auto t : {memory::format_tag::nchw, memory::format_tag::nhwc, memory::format_tag::nChw8c,
                   memory::format_tag::nChw16c})
      if (pd.src_desc() == memory::desc(x, dt, t)) return t;
    return memory::format_tag::undef;
  } catch (const dnnl::error&) {
    return std::nullopt;
  }
}
}  // namespace

void CpuBackend::synchronize() { stream().wait(); }

}  // namespace cpu

CpuIsaInfo cpu_isa_info() {
  static const CpuIsaInfo info = [] {
    CpuIsaInfo i;
    i.isa = cpu::isa_name(dnnl::get_effective_cpu_isa());
    // The ISA enum says what the JIT may use; whether a bf16 convolution exists is best asked of oneDNN itself.
    i.bf16 = cpu::conv_src_choice({1, 16, 8, 8}, dnnl::memory::data_type::bf16).has_value();
    // oneDNN 2.6 has bf16 kernels from avx512_core on, but only avx512_core_bf16 and AMX compute in bf16: on plain
    // avx512_core its kernels convert inside, and a vgg16 b8 64² training step ran 2.3-2.5x slower on them than on
    // the emulated path (the f32 kernels, Winograd included, plus the conversions; Xeon avx512_core, 2 threads). So
    // the native path also needs bf16 instructions. VGGNET_CPU_BF16=native takes oneDNN's bf16 kernels wherever they
    // exist (to compare, and to test them on avx512_core); =emulate never. bf16 says which path the backend takes,
    // for the ops, VGGNet's note and the bench alike.
    const char* env = std::getenv("VGGNET_CPU_BF16");
    const std::string mode = env ? env : "";
    i.avx512 = i.isa.rfind("avx512_core", 0) == 0;
    i.bf16_dot = i.isa == "avx512_core_bf16" || i.isa == "avx512_core_amx";
    i.bf16 = i.bf16 && mode != "emulate" && (i.bf16_dot || mode == "native");
    i.bf16_winograd_layers = i.bf16 && i.isa == "avx512_core_bf16" && mode != "native";
    using tag = dnnl::memory::format_tag;
    // The activation layout between layers: the blocked format oneDNN's f32 convolution picks for itself here
    // (nChw16c on AVX-512, nChw8c on AVX2), so that no layer reorders its input or output.
    // VGGNET_CPU_BLOCK=8 keeps nchw8c (to compare).
    const auto f32 = cpu::conv_src_choice({1, 64, 8, 8}, dnnl::memory::data_type::f32);
    const char* block = std::getenv("VGGNET_CPU_BLOCK");
    const bool b16 = f32 && *f32 == tag::nChw16c && !(block && std::string(block) == "8");
    i.blocked = b16 ? Layout::Blocked16 : Layout::Blocked8;
    // Native bf16: the source layout oneDNN's bf16 convolution picks for a mid-network VGG layer. Its AMX kernels
    // work in nhwc; handing them nchw16c cost two activation reorders per conv and direction (vgg16 b8 224²: ~60 ms
    // of a ~790 ms step, Xeon with AMX, 2 threads).
    i.bf16_layout = i.blocked;
    if (i.bf16) {
      const auto bf = cpu::conv_src_choice({8, 128, 56, 56}, dnnl::memory::data_type::bf16);
      if (bf && *bf == tag::nhwc) i.bf16_layout = Layout::ChannelsLast;
      else if (bf && *bf == tag::nChw16c) i.bf16_layout = Layout::Blocked16;
    }
    return i;
  }();
  return info;
}

Layout cpu_activation_layout(DType activation) {
  const CpuIsaInfo& i = cpu_isa_info();
  return activation == DType::BF16 ? i.bf16_layout : i.blocked;
}

}  // namespace vgg
