// The CUDA backend's lifetime and what it shares between op families: handles, the convolutions' workspace, the
// capture hooks, conform(), synchronize(); the singleton; and backends()' description of the build and devices.
#include <cstring>
#include <mutex>
#include <sstream>

#include "backend.h"
#include "cuda_info.h"
#include "graph_memory.h"

namespace vgg {
namespace cuda {

CudaBackend::CudaBackend() {
  CUDA_OK("cuda backend", cudaSetDevice(0));
  CUDNN_OK("cuda backend", cudnnCreate(&cudnn_));
  CUBLAS_OK("cuda backend", cublasCreate(&cublas_));
  CUBLAS_OK("cuda backend", cublasSetPointerMode(cublas_, CUBLAS_POINTER_MODE_HOST));
  const cudaStream_t st = static_cast<cudaStream_t>(cuda_stream());
  CUDNN_OK("cuda backend", cudnnSetStream(cudnn_, st));
  CUBLAS_OK("cuda backend", cublasSetStream(cublas_, st));  // (resets the workspace: set it after)
  // A workspace of our own, kept for the life of the process: cuBLAS then never allocates, which a graph
  // capture could not take.
  cublas_ws_ = cuda_alloc(kCublasWorkspace);
  CUBLAS_OK("cuda backend", cublasSetWorkspace(cublas_, cublas_ws_, kCublasWorkspace));
}

CudaBackend::~CudaBackend() {
  // The process is exiting or the addon unloading: release quietly, never throw.
  if (ws_) cuda_free(ws_, ws_size_);
  if (cublas_ws_) cuda_free(cublas_ws_, kCublasWorkspace);
  for (auto& kv : sgd_plans_) cuda_free(kv.second.plan.table, kv.second.plan.bytes);
  plans_.clear();
  if (cublas_) cublasDestroy(cublas_);
  if (cudnn_) cudnnDestroy(cudnn_);
}

void CudaBackend::on_capture_begin() {
  if (ws_) cuda_pool_adopt(ws_);
  sgd_captured_.clear();
}
// The workspace is scratch (eager ops and replays take turns on one stream); the SGD table is data the graph reads:
// it leaves the backend's cache, and the next eager step over those parameters uploads a new one.
void CudaBackend::on_capture_end() noexcept {
  auto it = sgd_plans_.find(sgd_captured_);
  if (!sgd_captured_.empty() && it != sgd_plans_.end()) {
    cuda_free(it->second.plan.table, it->second.plan.bytes);  // into the graph's pool
    sgd_plans_.erase(it);
  }
  sgd_captured_.clear();
}

Tensor CudaBackend::conform(const Tensor& t, DType dt, Layout layout, const char* what) {
  check_float(t, what);
  Tensor r = t;
  if (r.dtype != dt) r = cast(r, dt);
  if (r.ndim() == 4 && r.layout != layout) r = to_layout(r, layout);
  return r;
}

void* CudaBackend::workspace(size_t n, const char* op) {
  if (n > ws_size_) {
    if (ws_) cuda_free(ws_, ws_size_);
    ws_ = nullptr;
    ws_size_ = 0;
    ws_ = cuda_alloc(n);
    ws_size_ = n;
  }
  return ws_;
}

void CudaBackend::synchronize() {
  CUDA_OK("synchronize", cudaDeviceSynchronize());
  CUDA_OK("synchronize", cudaGetLastError());
}

}  // namespace cuda

namespace {
std::string g_init_error;

std::string json_escape(const std::string& s) {
  std::string r;
  for (char c : s) {
    if (c == '"' || c == '\\') {
      r += '\\';
      r += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      r += strprintf("\\u%04x", c);
    } else {
      r += c;
    }
  }
  return r;
}

}  // namespace

void cuda_backend_on_capture_begin() {
  if (Backend* b = cuda_backend_or_null()) static_cast<cuda::CudaBackend*>(b)->on_capture_begin();
}
void cuda_backend_on_capture_end() noexcept {
  if (Backend* b = cuda_backend_or_null()) static_cast<cuda::CudaBackend*>(b)->on_capture_end();
}

Backend* cuda_backend_or_null() {
  static std::once_flag once;
  static cuda::CudaBackend* instance = nullptr;
  std::call_once(once, [] {
    if (cuda_device_count() <= 0) {
      g_init_error = "no CUDA device";
      return;
    }
    try {
      instance = new cuda::CudaBackend();  // kept for the life of the process
    } catch (const std::exception& e) {
      g_init_error = e.what();
      instance = nullptr;
    }
  });
  return instance;
}

std::string cuda_info_json() {
  std::ostringstream o;
  o << "{\"built\":true";
  int rt = 0, drv = 0;
  if (cudaRuntimeGetVersion(&rt) != cudaSuccess) cudaGetLastError();
  if (cudaDriverGetVersion(&drv) != cudaSuccess) cudaGetLastError();
  o << ",\"runtime\":\"" << rt / 1000 << "." << (rt % 1000) / 10 << "\"";
  o << ",\"driver\":\"" << drv / 1000 << "." << (drv % 1000) / 10 << "\"";
  const size_t cv = cudnnGetVersion();
  if (cv >= 90000)
    o << ",\"cudnn\":\"" << cv / 10000 << "." << (cv % 10000) / 100 << "." << cv % 100 << "\"";
  else
    o << ",\"cudnn\":\"" << cv / 1000 << "." << (cv % 1000) / 100 << "." << cv % 100 << "\"";
  o << ",\"cudnnHeader\":\"" << CUDNN_MAJOR << "." << CUDNN_MINOR << "." << CUDNN_PATCHLEVEL << "\"";
  int bmaj = 0, bmin = 0, bpatch = 0;
  if (cublasGetProperty(MAJOR_VERSION, &bmaj) == CUBLAS_STATUS_SUCCESS &&
      cublasGetProperty(MINOR_VERSION, &bmin) == CUBLAS_STATUS_SUCCESS &&
      cublasGetProperty(PATCH_LEVEL, &bpatch) == CUBLAS_STATUS_SUCCESS)
    o << ",\"cublas\":\"" << bmaj << "." << bmin << "." << bpatch << "\"";
  else
    o << ",\"cublas\":null";
  o << ",\"mathMode\":" << cuda_math_mode();
  o << ",\"devices\":[";
  std::string err;
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    err = cudaGetErrorString(e);
    cudaGetLastError();
    n = 0;
  }
  for (int i = 0; i < n; ++i) {
    cudaDeviceProp prop;
    std::memset(&prop, 0, sizeof(prop));
    if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) {
      err = strprintf("cudaGetDeviceProperties(%d): %s", i, cudaGetErrorString(cudaGetLastError()));
      continue;
    }
    o << (i ? "," : "") << "{\"index\":" << i << ",\"name\":\"" << json_escape(prop.name) << "\",\"cc\":\""
      << prop.major << "." << prop.minor << "\",\"memory\":" << prop.totalGlobalMem
      << ",\"sms\":" << prop.multiProcessorCount << "}";
  }
  o << "]";
  if (err.empty() && !g_init_error.empty()) err = g_init_error;
  if (err.empty())
    o << ",\"error\":null";
  else
    o << ",\"error\":\"" << json_escape(err) << "\"";
  o << "}";
  return o.str();
}

}  // namespace vgg
