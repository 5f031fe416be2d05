// VGG_HD marks a function compiled for both the host and, under nvcc, the GPU (rng.h, data/augment_math.h).
#pragma once

#if defined(__CUDACC__)
#define VGG_HD __host__ __device__ __forceinline__
#else
#define VGG_HD inline
#endif
