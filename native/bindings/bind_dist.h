// What the other bindings need from the distributed ones: the SyncBatchNorm reduction of a process group argument.
#pragma once
#include <napi.h>

#include "replica_sum.h"

namespace vgg::js {

void init_dist(Napi::Env env, Napi::Object exports);
// The process group passed as an op's argument (SyncBatchNorm), or null for undefined/null.
ReplicaSum* replica_sum_arg(const Napi::Value& v, const char* what);

}  // namespace vgg::js
