// The gloo engine (engine.h): host buffers over gloo's TCP transport, one gloo context per process group. Built when
// CMake finds gloo (VGG_WITH_GLOO); otherwise make_gloo says it is missing.
#include <cstring>
#include <sstream>

#include "dist/engine.h"
#include "dist/store.h"
#include "tensor.h"

#ifndef VGG_WITH_GLOO
#define VGG_WITH_GLOO 0
#endif

#if VGG_WITH_GLOO
#include <gloo/allreduce.h>
#include <gloo/broadcast.h>
#include <gloo/config.h>
#include <gloo/math.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/store.h>
#include <gloo/transport/tcp/device.h>
#endif

namespace vgg::dist {

size_t elem_size(Elem e) { return e == Elem::F64 ? 8 : e == Elem::F32 ? 4 : 2; }

bool gloo_built() { return VGG_WITH_GLOO != 0; }

std::string gloo_version() {
#if VGG_WITH_GLOO
  return strprintf("%d.%d.%d", GLOO_VERSION_MAJOR, GLOO_VERSION_MINOR, GLOO_VERSION_PATCH);
#else
  return "";
#endif
}

#if VGG_WITH_GLOO
namespace {

// gloo's rendezvous through our store, its keys under "gloo/".
class GlooStore : public gloo::rendezvous::Store {
 public:
  GlooStore(StoreClient& s, std::chrono::milliseconds timeout) : s_(s), timeout_(timeout) {}
  void set(const std::string& key, const std::vector<char>& data) override { s_.set("gloo/" + key, data); }
  std::vector<char> get(const std::string& key) override { return s_.get("gloo/" + key, timeout_); }
  void wait(const std::vector<std::string>& keys) override { wait(keys, timeout_); }
  void wait(const std::vector<std::string>& keys, const std::chrono::milliseconds& timeout) override {
    std::vector<std::string> k;
    for (const auto& key : keys) k.push_back("gloo/" + key);
    if (!s_.wait(k, timeout))
      throw Error(strprintf("timed out after %.0f s waiting for the other ranks' gloo addresses in the rendezvous "
                            "store at %s",
                            double(timeout.count()) / 1000.0, s_.address().c_str()));
  }

 private:
  StoreClient& s_;
  std::chrono::milliseconds timeout_;
};

// bfloat16 sum for gradient compression: each pair of values added in float32 and rounded to nearest even.
uint16_t bf16_round(float f) {
  uint32_t u = 0;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // NaN stays NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}
float bf16_float(uint16_t h) {
  const uint32_t u = uint32_t(h) << 16;
  float f = 0;
  std::memcpy(&f, &u, 4);
  return f;
}
void sum_bf16(void* c_, const void* a_, const void* b_, size_t n) {
  auto* c = static_cast<uint16_t*>(c_);
  auto* a = static_cast<const uint16_t*>(a_);
  auto* b = static_cast<const uint16_t*>(b_);
  for (size_t i = 0; i < n; ++i) c[i] = bf16_round(bf16_float(a[i]) + bf16_float(b[i]));
}

class GlooEngine : public Engine {
 public:
  GlooEngine(StoreClient& store, int rank, int world, std::chrono::milliseconds timeout, const std::string& hostname,
             const std::string& iface) {
    gloo::transport::tcp::attr attr;
    if (!iface.empty()) attr.iface = iface;
    else attr.hostname = hostname.empty() ? "127.0.0.1" : hostname;
    try {
      device_ = gloo::transport::tcp::CreateDevice(attr);
      auto ctx = std::make_shared<gloo::rendezvous::Context>(rank, world);
      ctx->setTimeout(timeout);
      GlooStore gs(store, timeout);
      ctx->connectFullMesh(gs, device_);
      context_ = ctx;
    } catch (const Error&) {
      throw;
    } catch (const std::exception& e) {
      throw Error(strprintf("gloo could not connect rank %d to the other %d rank(s) (listening on %s): %s", rank,
                            world - 1, iface.empty() ? attr.hostname.c_str() : ("interface " + iface).c_str(),
                            e.what()));
    }
  }
  const char* name() const override { return "gloo"; }
  std::string version() const override { return gloo_version(); }
  bool on_device() const override { return false; }
  void allreduce_sum(void* buf, size_t count, Elem e, void*) override {
    if (count == 0) return;
    gloo::AllreduceOptions opts(context_);
    switch (e) {
      case Elem::F32:
        opts.setOutput(static_cast<float*>(buf), count);
        opts.setReduceFunction(static_cast<void (*)(void*, const void*, const void*, size_t)>(&gloo::sum<float>));
        break;
      case Elem::F64:
        opts.setOutput(static_cast<double*>(buf), count);
        opts.setReduceFunction(static_cast<void (*)(void*, const void*, const void*, size_t)>(&gloo::sum<double>));
        break;
      case Elem::BF16:
        opts.setOutput(static_cast<uint16_t*>(buf), count);
        opts.setReduceFunction(&sum_bf16);
        break;
    }
    run([&] { gloo::allreduce(opts); }, "all-reduce");
  }
  void broadcast(void* buf, size_t bytes, int root, void*) override {
    if (bytes == 0) return;
    gloo::BroadcastOptions opts(context_);
    opts.setOutput(static_cast<uint8_t*>(buf), bytes);
    opts.setRoot(root);
    run([&] { gloo::broadcast(opts); }, "broadcast");
  }

 private:
  template <class F>
  void run(F&& f, const char* what) {
    try {
      f();
    } catch (const std::exception& e) {
      // gloo's messages start with "[file:line] "; keep what follows.
      std::string m = e.what();
      if (!m.empty() && m[0] == '[') {
        const size_t p = m.find("] ");
        if (p != std::string::npos) m = m.substr(p + 2);
      }
      throw Error(strprintf("gloo %s failed: %s", what, m.c_str()));
    }
  }
  std::shared_ptr<gloo::transport::Device> device_;
  std::shared_ptr<gloo::Context> context_;
};

}  // namespace

std::unique_ptr<Engine> make_gloo(StoreClient& store, int rank, int world, std::chrono::milliseconds timeout,
                                  const std::string& hostname, const std::string& iface) {
  return std::make_unique<GlooEngine>(store, rank, world, timeout, hostname, iface);
}

#else

std::unique_ptr<Engine> make_gloo(StoreClient&, int, int, std::chrono::milliseconds, const std::string&,
                                  const std::string&) {
  throw Error("the gloo engine is not built into this addon (gloo was not found at build time: on Debian/Ubuntu "
              "apt-get install libgloo-dev, then npm run build:native)");
}

#endif

}  // namespace vgg::dist
