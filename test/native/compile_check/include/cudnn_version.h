// compile-check only: declares the subset of the cuDNN API vggnet uses, with the documented signatures, types and
// enum values; never linked or shipped. Used by scripts/compile-cuda.sh on machines without cuDNN (CI).
//
// The newest version these declarations were checked against: cuDNN 9.13.0 (also 9.6.0). As NVIDIA's
// cudnn_version.h: CUDNN_VERSION = MAJOR * 10000 + MINOR * 100 + PATCHLEVEL since 9.0.
#ifndef VGG_COMPILE_CHECK_CUDNN_VERSION_H
#define VGG_COMPILE_CHECK_CUDNN_VERSION_H

#define CUDNN_MAJOR 9
#define CUDNN_MINOR 13
#define CUDNN_PATCHLEVEL 0
#define CUDNN_VERSION (CUDNN_MAJOR * 10000 + CUDNN_MINOR * 100 + CUDNN_PATCHLEVEL)

#endif
