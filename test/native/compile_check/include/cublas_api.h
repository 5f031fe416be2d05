// compile-check only: declares the subset of the cuBLAS API vggnet uses, with the documented signatures, types and
// enum values; never linked or shipped. Used by scripts/compile-cuda.sh on machines without cuBLAS (CI). Include
// <cublas_v2.h>, as the real code does: it defines CUBLASAPI and maps the unsuffixed names to the _v2 symbols.
//
// Source of every signature and value: cuBLAS 13.0.0's cublas_api.h (the same in 12.6 but for the one enumerator
// marked 12.9+) and the cuBLAS API reference; cudaDataType and libraryPropertyType come from the CUDA toolkit's own
// library_types.h. What is declared: every function vggnet calls and every type it names, with all enumerators of
// the small enums; of cublasGemmAlgo_t only the defaults.
#ifndef VGG_COMPILE_CHECK_CUBLAS_API_H
#define VGG_COMPILE_CHECK_CUBLAS_API_H

#ifndef CUBLASAPI
#error "This file should not be included without defining CUBLASAPI (include <cublas_v2.h>)"
#endif
#define CUBLASWINAPI

#include <driver_types.h>   // cudaStream_t (the toolkit's own header)
#include <library_types.h>  // cudaDataType, libraryPropertyType (the toolkit's own header)
#include <stddef.h>

#if defined(__cplusplus)
extern "C" {
#endif

typedef enum {
  CUBLAS_STATUS_SUCCESS = 0,
  CUBLAS_STATUS_NOT_INITIALIZED = 1,
  CUBLAS_STATUS_ALLOC_FAILED = 3,
  CUBLAS_STATUS_INVALID_VALUE = 7,
  CUBLAS_STATUS_ARCH_MISMATCH = 8,
  CUBLAS_STATUS_MAPPING_ERROR = 11,
  CUBLAS_STATUS_EXECUTION_FAILED = 13,
  CUBLAS_STATUS_INTERNAL_ERROR = 14,
  CUBLAS_STATUS_NOT_SUPPORTED = 15,
  CUBLAS_STATUS_LICENSE_ERROR = 16
} cublasStatus_t;

typedef enum {
  CUBLAS_OP_N = 0,
  CUBLAS_OP_T = 1,
  CUBLAS_OP_C = 2,
  CUBLAS_OP_HERMITAN = 2,
  CUBLAS_OP_CONJG = 3
} cublasOperation_t;

typedef enum { CUBLAS_POINTER_MODE_HOST = 0, CUBLAS_POINTER_MODE_DEVICE = 1 } cublasPointerMode_t;

typedef enum {
  CUBLAS_GEMM_DEFAULT = -1,
  CUBLAS_GEMM_DEFAULT_TENSOR_OP = 99,
} cublasGemmAlgo_t;

typedef enum {
  CUBLAS_COMPUTE_16F = 64,
  CUBLAS_COMPUTE_16F_PEDANTIC = 65,
  CUBLAS_COMPUTE_32F = 68,
  CUBLAS_COMPUTE_32F_PEDANTIC = 69,
  CUBLAS_COMPUTE_32F_FAST_16F = 74,
  CUBLAS_COMPUTE_32F_FAST_16BF = 75,
  CUBLAS_COMPUTE_32F_FAST_TF32 = 77,
  CUBLAS_COMPUTE_32F_EMULATED_16BFX9 = 78,  // cuBLAS 12.9+
  CUBLAS_COMPUTE_64F = 70,
  CUBLAS_COMPUTE_64F_PEDANTIC = 71,
  CUBLAS_COMPUTE_32I = 72,
  CUBLAS_COMPUTE_32I_PEDANTIC = 73,
} cublasComputeType_t;

struct cublasContext;
typedef struct cublasContext* cublasHandle_t;

CUBLASAPI cublasStatus_t CUBLASWINAPI cublasCreate_v2(cublasHandle_t* handle);
CUBLASAPI cublasStatus_t CUBLASWINAPI cublasDestroy_v2(cublasHandle_t handle);
CUBLASAPI cublasStatus_t CUBLASWINAPI cublasGetProperty(libraryPropertyType type, int* value);
CUBLASAPI cublasStatus_t CUBLASWINAPI cublasSetWorkspace_v2(cublasHandle_t handle, void* workspace,
                                                           size_t workspaceSizeInBytes);
CUBLASAPI cublasStatus_t CUBLASWINAPI cublasSetStream_v2(cublasHandle_t handle, cudaStream_t streamId);
CUBLASAPI cublasStatus_t CUBLASWINAPI cublasSetPointerMode_v2(cublasHandle_t handle, cublasPointerMode_t mode);

CUBLASAPI cublasStatus_t CUBLASWINAPI cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa,
                                                  cublasOperation_t transb, int m, int n, int k, const void* alpha,
                                                  const void* A, cudaDataType Atype, int lda, const void* B,
                                                  cudaDataType Btype, int ldb, const void* beta, void* C,
                                                  cudaDataType Ctype, int ldc, cublasComputeType_t computeType,
                                                  cublasGemmAlgo_t algo);

#if defined(__cplusplus)
}

// C++ only, as in NVIDIA's header: the pre-CUDA-11 form with a cudaDataType compute type, which cuBLAS's inline
// wrapper maps to a cublasComputeType_t (cublasMigrateComputeType). Declared so that what compiles against the real
// header compiles here too; never defined, as nothing is linked.
cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n,
                            int k, const void* alpha, const void* A, cudaDataType Atype, int lda, const void* B,
                            cudaDataType Btype, int ldb, const void* beta, void* C, cudaDataType Ctype, int ldc,
                            cudaDataType computeType, cublasGemmAlgo_t algo);
#endif

#endif
