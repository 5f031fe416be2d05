// The rendezvous key-value store (torchrun's TCPStore in spirit): rank 0 serves it over TCP on MASTER_PORT; every
// rank, rank 0 included, connects to MASTER_ADDR:MASTER_PORT as a client. gloo's pair addresses and NCCL's unique id
// are exchanged through it, and it is how a failing rank learns who is gone: each rank's client connection says
// HELLO with its rank, and a connection that closes without BYE marks that rank as lost.
//
// Every wait has a deadline; errors name the address and the ranks concerned. Plain POSIX sockets, no CUDA, no N-API.
#pragma once
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace vgg::dist {

using Clock = std::chrono::steady_clock;
using Millis = std::chrono::milliseconds;

// What the server knows about the ranks (STATUS).
struct WorldStatus {
  int world = 0;
  std::vector<int> joined;   // ranks that said HELLO (in rank order)
  std::vector<int> lost;     // ranks whose connection closed without BYE
  std::vector<int> left;     // ranks that said BYE
  std::vector<int64_t> progress;  // per rank: the last collective number it reported (-1: none)
  std::vector<int64_t> silent_ms; // per rank: milliseconds since the server last heard from it (-1: never)
};

// The server: a thread polling the listening socket and the clients. Started by rank 0 only.
class StoreServer {
 public:
  // Binds 0.0.0.0:port (SO_REUSEADDR). Throws vgg::Error naming the port when it is in use or cannot be bound.
  StoreServer(int port, int world);
  ~StoreServer();  // stops the thread, closes every socket
  StoreServer(const StoreServer&) = delete;
  StoreServer& operator=(const StoreServer&) = delete;
  int port() const { return port_; }
  // Waits (up to `timeout`) until every rank that joined has said BYE or closed; for an orderly shutdown of rank 0,
  // whose store the others may still be using.
  void drain(Millis timeout);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int port_ = 0;
};

// A client connection (one per process group). Thread-safe: one request at a time.
class StoreClient {
 public:
  // Connects to host:port, retrying refused/unreachable attempts until `timeout`. The error says which address could
  // not be reached, for how long, and the last reason.
  StoreClient(const std::string& host, int port, Millis timeout);
  ~StoreClient();
  StoreClient(const StoreClient&) = delete;
  StoreClient& operator=(const StoreClient&) = delete;

  const std::string& address() const { return address_; }  // "host:port"
  // The local IP address of this connection: the interface this machine reaches the master through (what gloo's
  // transport binds to when GLOO_SOCKET_IFNAME is not set).
  const std::string& local_ip() const { return local_ip_; }

  void set(const std::string& key, const std::vector<char>& value);
  // Waits (server side) until the key exists; throws a timeout error naming the key after `timeout`.
  std::vector<char> get(const std::string& key, Millis timeout);
  bool wait(const std::vector<std::string>& keys, Millis timeout);  // false on timeout
  int64_t add(const std::string& key, int64_t delta);
  // Registers this connection as rank `rank` of a world of `world` ranks. Throws when the server's world differs
  // or another connection already holds that rank.
  void hello(int rank, int world);
  // Waits until every rank of the world has said HELLO; returns the ranks missing at the deadline (empty: all came).
  std::vector<int> wait_world(Millis timeout);
  WorldStatus status(Millis timeout);
  // Fire and forget: this rank is about to run collective number n (what a timeout report compares). Also sent
  // every second by the process group's heartbeat, so that a stopped process shows as silent.
  void progress(int64_t n) noexcept;
  void bye() noexcept;

 private:
  void request(uint8_t op, const std::string& key, const std::vector<char>& value, std::vector<char>* reply,
               Millis timeout, const char* what);
  std::mutex mu_;
  int fd_ = -1;
  std::string address_, local_ip_;
};

// "1, 3" / "1" (for messages).
std::string join_ranks(const std::vector<int>& ranks);

}  // namespace vgg::dist
