// A convolution shape's cuDNN plan: its descriptors and, per direction, the algorithm cuDNN's timed search chose
// (once per shape, dtype, layout and math mode; kept for the life of the backend). One search routine serves the
// three directions.
#pragma once
#include <string>

#include "common.h"

namespace vgg::cuda {

// One direction's choice: the algorithm, the math type it was timed with, and its workspace.
template <class Algo>
struct ConvChoice {
  bool found = false;
  Algo algo{};
  cudnnMathType_t math{};
  size_t ws = 0;
};

struct ConvPlan {
  TensorDesc x, y, bias;
  FilterDesc w;
  ConvDesc conv;
  ActDesc relu;
  ConvChoice<cudnnConvolutionFwdAlgo_t> fwd;
  ConvChoice<cudnnConvolutionBwdDataAlgo_t> bwd_data;
  ConvChoice<cudnnConvolutionBwdFilterAlgo_t> bwd_filter;
  bool fused_ok = true;  // cleared when cudnnConvolutionBiasActivationForward says NOT_SUPPORTED
};

// Memory for an algorithm search, straight from cudaMalloc (not kept by the cache): as large as fits, up to 1 GiB.
struct SearchWorkspace {
  void* p = nullptr;
  size_t n = 0;
  SearchWorkspace();
  ~SearchWorkspace();
  SearchWorkspace(const SearchWorkspace&) = delete;
  SearchWorkspace& operator=(const SearchWorkspace&) = delete;
};

// The math type a search asks for: tensor cores for bf16; for float32, TF32 or not by cuda_math_mode().
cudnnMathType_t requested_math(DType dt);
// "no <what> algorithm succeeded (status, ...)"
std::string algo_failures(const char* what, const int* status, int n);

// Runs cuDNN's timed search for one direction and keeps the fastest algorithm that succeeded within the search
// workspace. `find(perf, &n, workspace, bytes)` is that direction's cudnnFindConvolution*AlgorithmEx; Perf its
// result struct. An algorithm search runs and times kernels, synchronising: impossible inside a graph capture, so
// there it says that eager warm-up steps are needed. `what` names the direction, `shape_name` and `shape` the tensor
// in errors.
template <class Perf, class Algo, class Find>
void search_algorithm(ConvChoice<Algo>& choice, ConvPlan& plan, DType dt, const char* op, const char* what,
                      const char* shape_name, const Shape& shape, Find&& find) {
  VGG_CHECK(!cuda_graph_capturing(), "%s: no algorithm has been chosen for this shape yet, and a CUDA graph "
            "capture cannot search (capture only after eager warm-up steps on the same shapes)", op);
  SearchWorkspace sw;
  Perf perf[16];
  int n = 0;
  CUDNN_OK(op, cudnnSetConvolutionMathType(plan.conv.d, requested_math(dt)));
  CUDNN_OK(op, find(perf, &n, sw.p, sw.n));
  int status[16];
  for (int i = 0; i < n; ++i) {
    status[i] = int(perf[i].status);
    if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].memory <= sw.n) {
      choice.algo = perf[i].algo;
      choice.ws = perf[i].memory;
      choice.math = perf[i].mathType;
      choice.found = true;
      return;
    }
  }
  throw Error(strprintf("%s: %s for %s %s", op, algo_failures(what, status, n).c_str(), shape_name,
                        shape_str(shape).c_str()));
}

}  // namespace vgg::cuda
