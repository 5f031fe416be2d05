# Placeholder until the CUDA backend lands: CPU-only build.
set(VGG_CUDA_BUILT OFF)
message(STATUS "vggnet: building CPU-only (CUDA backend not written yet)")
