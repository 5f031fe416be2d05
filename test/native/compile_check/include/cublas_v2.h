// compile-check only: declares the subset of the cuBLAS API vggnet uses, with the documented signatures, types and
// enum values; never linked or shipped. As NVIDIA's cublas_v2.h (cuBLAS 12.x / 13.0): defines CUBLASAPI, includes
// cublas_api.h and maps the unsuffixed names vggnet calls to the library's _v2 symbols.
#ifndef VGG_COMPILE_CHECK_CUBLAS_V2_H
#define VGG_COMPILE_CHECK_CUBLAS_V2_H

#undef CUBLASAPI
#ifdef __CUDACC__
#define CUBLASAPI __host__ __device__
#else
#define CUBLASAPI
#endif

#include "cublas_api.h"

#define cublasCreate cublasCreate_v2
#define cublasDestroy cublasDestroy_v2
#define cublasSetWorkspace cublasSetWorkspace_v2
#define cublasSetStream cublasSetStream_v2
#define cublasSetPointerMode cublasSetPointerMode_v2

#endif
