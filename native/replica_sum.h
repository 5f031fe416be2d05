// Cross-replica sums for SyncBatchNorm (distributed training; native/dist's process group implements it), kept out of
// ops.h so that the backends stay free of the distributed layer: a backend's batch norm only calls sum().
#pragma once
#include <cstdint>

#include "tensor.h"

namespace vgg {

// Adds `n` float64 values in place over every replica. On the CPU the sum is complete on return; on CUDA `data` is
// device memory and the sum is queued in compute-stream order (after the kernels that wrote it, before those queued
// next).
struct ReplicaSum {
  virtual ~ReplicaSum() = default;
  virtual void sum(double* data, int64_t n, Device device) = 0;
};

}  // namespace vgg
