// The rendezvous store (store.h). Wire format, little-endian:
//   request  u8 op, u32 key length, key, u32 value length, value
//   reply    u8 status (0 ok, 1 timeout, 2 error), u32 length, payload
// One request at a time per connection (PROGRESS has no reply). The server is one thread around poll(); a request
// that waits (GET, WAIT, WAIT_WORLD) is parked until its keys exist or its deadline passes.
#include "dist/store.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <map>
#include <set>

#include "tensor.h"

namespace vgg::dist {

namespace {

enum Op : uint8_t { kSet = 1, kGet = 2, kWait = 3, kAdd = 4, kHello = 5, kWaitWorld = 6, kStatus = 7, kProgress = 8, kBye = 9 };
enum Status : uint8_t { kOk = 0, kTimeout = 1, kError = 2 };

void put_u32(std::vector<char>& b, uint32_t v) {
  for (int i = 0; i < 4; ++i) b.push_back(char((v >> (8 * i)) & 0xff));
}
void put_i64(std::vector<char>& b, int64_t v) {
  const uint64_t u = uint64_t(v);
  for (int i = 0; i < 8; ++i) b.push_back(char((u >> (8 * i)) & 0xff));
}
uint32_t get_u32(const char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= uint32_t(uint8_t(p[i])) << (8 * i);
  return v;
}
int64_t get_i64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= uint64_t(uint8_t(p[i])) << (8 * i);
  return int64_t(v);
}
std::vector<char> i64_bytes(int64_t v) {
  std::vector<char> b;
  put_i64(b, v);
  return b;
}

// Writes all of buf (blocking socket); false when the peer is gone.
bool send_all(int fd, const char* p, size_t n) {
  while (n > 0) {
    const ssize_t k = ::send(fd, p, n, MSG_NOSIGNAL);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return false;
    p += k;
    n -= size_t(k);
  }
  return true;
}

std::vector<char> frame(uint8_t head, const std::string& key, const std::vector<char>& value, bool request) {
  std::vector<char> b;
  b.push_back(char(head));
  if (request) {
    put_u32(b, uint32_t(key.size()));
    b.insert(b.end(), key.begin(), key.end());
  }
  put_u32(b, uint32_t(value.size()));
  b.insert(b.end(), value.begin(), value.end());
  return b;
}

int64_t remaining_ms(Clock::time_point deadline) {
  return std::max<int64_t>(0, std::chrono::duration_cast<Millis>(deadline - Clock::now()).count());
}

}  // namespace

std::string join_ranks(const std::vector<int>& ranks) {
  std::string s;
  for (size_t i = 0; i < ranks.size(); ++i) s += (i ? ", " : "") + std::to_string(ranks[i]);
  return s;
}

// ------------------------------------------------------------------------------------------------------- server

struct StoreServer::Impl {
  struct Conn {
    int fd = -1;
    std::string in;
    int rank = -1;
    bool bye = false;
  };
  struct Waiter {
    int fd;
    uint8_t op;
    std::vector<std::string> keys;  // GET: one key; WAIT: the keys
    Clock::time_point deadline;
  };
  int listen_fd = -1;
  int wake[2] = {-1, -1};
  int world = 0;
  std::thread thread;
  std::map<int, Conn> conns;
  std::map<std::string, std::vector<char>> kv;
  std::vector<Waiter> waiters;
  std::map<int, int> rank_fd;  // rank -> fd of its HELLO connection (while connected)
  std::set<int> joined, lost, left;
  std::vector<int64_t> progress;
  std::vector<Clock::time_point> heard;  // per rank: when the server last heard from it
  std::mutex mu;  // guards joined/lost/left for drain()
  std::condition_variable cv;

  void reply(int fd, uint8_t status, const std::vector<char>& payload) {
    const std::vector<char> b = frame(status, "", payload, false);
    send_all(fd, b.data(), b.size());
  }
  std::vector<int> missing() const {
    std::vector<int> m;
    for (int r = 0; r < world; ++r)
      if (!joined.count(r)) m.push_back(r);
    return m;
  }
  // Answers the parked requests that can be answered now (or that are past their deadline).
  void service_waiters() {
    const auto now = Clock::now();
    for (size_t i = 0; i < waiters.size();) {
      Waiter& w = waiters[i];
      bool ready = false;
      std::vector<char> payload;
      if (w.op == kGet) {
        auto it = kv.find(w.keys[0]);
        if (it != kv.end()) ready = true, payload = it->second;
      } else if (w.op == kWait) {
        ready = std::all_of(w.keys.begin(), w.keys.end(), [&](const std::string& k) { return kv.count(k) > 0; });
      } else if (w.op == kWaitWorld) {
        ready = int(joined.size()) == world;
      }
      if (ready) {
        reply(w.fd, kOk, payload);
      } else if (now >= w.deadline) {
        std::vector<char> p;
        if (w.op == kWaitWorld)
          for (int r : missing()) put_u32(p, uint32_t(r));
        reply(w.fd, kTimeout, p);
      } else {
        ++i;
        continue;
      }
      waiters.erase(waiters.begin() + long(i));
    }
  }
  void drop(int fd) {
    auto it = conns.find(fd);
    if (it == conns.end()) return;
    {
      std::lock_guard<std::mutex> lock(mu);
      const Conn& c = it->second;
      if (c.rank >= 0) {
        if (!c.bye) lost.insert(c.rank);
        auto rf = rank_fd.find(c.rank);
        if (rf != rank_fd.end() && rf->second == fd) rank_fd.erase(rf);
      }
    }
    cv.notify_all();
    waiters.erase(std::remove_if(waiters.begin(), waiters.end(), [&](const Waiter& w) { return w.fd == fd; }),
                  waiters.end());
    ::close(fd);
    conns.erase(it);
  }
  // One complete request from `c`; false to drop the connection.
  bool handle(Conn& c, uint8_t op, const std::string& key, const std::vector<char>& value) {
    switch (op) {
      case kSet:
        kv[key] = value;
        reply(c.fd, kOk, {});
        return true;
      case kGet:
      case kWait:
      case kWaitWorld: {
        if (value.size() < 8) return false;
        Waiter w{c.fd, op, {}, Clock::now() + Millis(get_i64(value.data()))};
        if (op == kGet) {
          w.keys.push_back(key);
        } else if (op == kWait) {
          size_t s = 0;
          for (size_t i = 0; i <= key.size(); ++i)
            if (i == key.size() || key[i] == '\0') {
              if (i > s) w.keys.push_back(key.substr(s, i - s));
              s = i + 1;
            }
        }
        waiters.push_back(std::move(w));
        return true;
      }
      case kAdd: {
        if (value.size() < 8) return false;
        int64_t v = 0;
        auto it = kv.find(key);
        if (it != kv.end() && it->second.size() == 8) v = get_i64(it->second.data());
        v += get_i64(value.data());
        kv[key] = i64_bytes(v);
        reply(c.fd, kOk, i64_bytes(v));
        return true;
      }
      case kHello: {
        if (value.size() < 8) return false;
        const int rank = int(get_u32(value.data())), w = int(get_u32(value.data() + 4));
        std::string err;
        if (w != world) {
          err = strprintf("rank %d says the world has %d ranks, but rank 0 started it with WORLD_SIZE=%d", rank, w, world);
        } else if (rank < 0 || rank >= world) {
          err = strprintf("rank %d is outside the world of %d ranks (RANK must be in [0, %d))", rank, world, world);
        } else if (rank_fd.count(rank)) {
          err = strprintf("two workers say they are rank %d (each RANK must be given to one worker only)", rank);
        }
        if (!err.empty()) {
          reply(c.fd, kError, std::vector<char>(err.begin(), err.end()));
          return true;
        }
        {
          std::lock_guard<std::mutex> lock(mu);
          c.rank = rank;
          joined.insert(rank);
          lost.erase(rank);
          rank_fd[rank] = c.fd;
        }
        reply(c.fd, kOk, {});
        return true;
      }
      case kStatus: {
        std::vector<char> p;
        put_u32(p, uint32_t(world));
        for (const std::set<int>* s : {&joined, &lost, &left}) {
          put_u32(p, uint32_t(s->size()));
          for (int r : *s) put_u32(p, uint32_t(r));
        }
        for (int r = 0; r < world; ++r) put_i64(p, progress[size_t(r)]);
        const auto now = Clock::now();
        for (int r = 0; r < world; ++r)
          put_i64(p, joined.count(r) ? std::chrono::duration_cast<Millis>(now - heard[size_t(r)]).count() : -1);
        reply(c.fd, kOk, p);
        return true;
      }
      case kProgress:
        if (value.size() >= 8 && c.rank >= 0) progress[size_t(c.rank)] = std::max(progress[size_t(c.rank)], get_i64(value.data()));
        return true;
      case kBye: {
        {
          std::lock_guard<std::mutex> lock(mu);
          c.bye = true;
          if (c.rank >= 0) left.insert(c.rank);
        }
        cv.notify_all();
        reply(c.fd, kOk, {});
        return true;
      }
      default:
        return false;
    }
  }
  // Parses every complete request buffered for `c`; false to drop it.
  bool parse(Conn& c) {
    for (;;) {
      if (c.in.size() < 5) return true;
      const uint32_t kl = get_u32(c.in.data() + 1);
      if (kl > (1u << 20)) return false;
      if (c.in.size() < 5 + size_t(kl) + 4) return true;
      const uint32_t vl = get_u32(c.in.data() + 5 + kl);
      if (vl > (64u << 20)) return false;
      const size_t total = 5 + size_t(kl) + 4 + vl;
      if (c.in.size() < total) return true;
      const uint8_t op = uint8_t(c.in[0]);
      std::string key = c.in.substr(5, kl);
      std::vector<char> value(c.in.begin() + long(9 + kl), c.in.begin() + long(total));
      c.in.erase(0, total);
      if (!handle(c, op, key, value)) return false;
      if (c.rank >= 0) heard[size_t(c.rank)] = Clock::now();
    }
  }
  void loop() {
    for (;;) {
      std::vector<pollfd> fds{{wake[0], POLLIN, 0}, {listen_fd, POLLIN, 0}};
      for (auto& kv_ : conns) fds.push_back({kv_.first, POLLIN, 0});
      int timeout = -1;
      for (const Waiter& w : waiters) {
        const int64_t ms = remaining_ms(w.deadline);
        timeout = timeout < 0 ? int(std::min<int64_t>(ms, 1 << 30)) : std::min(timeout, int(ms));
      }
      const int n = ::poll(fds.data(), fds.size(), timeout);
      if (n < 0 && errno != EINTR) break;
      if (fds[0].revents) break;  // stop requested
      if (fds[1].revents & POLLIN) {
        const int fd = ::accept(listen_fd, nullptr, nullptr);
        if (fd >= 0) {
          const int one = 1;
          setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          conns[fd].fd = fd;
        }
      }
      for (size_t i = 2; i < fds.size(); ++i) {
        if (!fds[i].revents) continue;
        const int fd = fds[i].fd;
        auto it = conns.find(fd);
        if (it == conns.end()) continue;
        char buf[65536];
        const ssize_t k = ::recv(fd, buf, sizeof buf, 0);
        if (k < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (k <= 0) {
          drop(fd);
          continue;
        }
        it->second.in.append(buf, size_t(k));
        if (!parse(it->second)) drop(fd);
      }
      service_waiters();
    }
  }
};

StoreServer::StoreServer(int port, int world) : impl_(new Impl) {
  Impl& s = *impl_;
  s.world = world;
  s.progress.assign(size_t(world), -1);
  s.heard.assign(size_t(world), Clock::now());
  s.listen_fd = ::socket(AF_INET, SOCK_STREAM, 0);
  VGG_CHECK(s.listen_fd >= 0, "rendezvous store: socket() failed: %s", std::strerror(errno));
  const int one = 1;
  setsockopt(s.listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_ANY);
  a.sin_port = htons(uint16_t(port));
  if (::bind(s.listen_fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(s.listen_fd, 1024) != 0) {
    const int e = errno;
    ::close(s.listen_fd);
    if (e == EADDRINUSE)
      throw Error(strprintf("rank 0 cannot serve the rendezvous store on port %d: the port is in use (another job, "
                            "or a worker of an earlier one still running?); choose another with --master-port or "
                            "MASTER_PORT",
                            port));
    throw Error(strprintf("rank 0 cannot serve the rendezvous store on port %d: %s", port, std::strerror(e)));
  }
  socklen_t len = sizeof a;
  getsockname(s.listen_fd, reinterpret_cast<sockaddr*>(&a), &len);
  port_ = ntohs(a.sin_port);
  VGG_CHECK(::pipe(s.wake) == 0, "rendezvous store: pipe() failed: %s", std::strerror(errno));
  s.thread = std::thread([&s] { s.loop(); });
}

StoreServer::~StoreServer() {
  Impl& s = *impl_;
  if (s.wake[1] >= 0) {
    const char c = 1;
    (void)!::write(s.wake[1], &c, 1);
  }
  if (s.thread.joinable()) s.thread.join();
  for (auto& kv : s.conns) ::close(kv.first);
  for (int fd : {s.listen_fd, s.wake[0], s.wake[1]})
    if (fd >= 0) ::close(fd);
}

void StoreServer::drain(Millis timeout) {
  Impl& s = *impl_;
  std::unique_lock<std::mutex> lock(s.mu);
  s.cv.wait_for(lock, timeout, [&] {
    for (int r : s.joined)
      if (!s.left.count(r) && !s.lost.count(r)) return false;
    return true;
  });
}

// ------------------------------------------------------------------------------------------------------- client

StoreClient::StoreClient(const std::string& host, int port, Millis timeout) {
  address_ = host + ":" + std::to_string(port);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const std::string service = std::to_string(port);
  const int gai = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &res);
  if (gai != 0)
    throw Error(strprintf("cannot resolve the master address '%s' (MASTER_ADDR / --master-addr): %s", host.c_str(),
                          gai_strerror(gai)));
  std::unique_ptr<addrinfo, void (*)(addrinfo*)> guard(res, freeaddrinfo);
  const auto deadline = Clock::now() + timeout;
  std::string last = "no attempt";
  for (;;) {
    for (addrinfo* ai = res; ai && fd_ < 0; ai = ai->ai_next) {
      const int fd = ::socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
      if (fd < 0) continue;
      ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
      int rc = ::connect(fd, ai->ai_addr, ai->ai_addrlen);
      int err = rc == 0 ? 0 : errno;
      if (err == EINPROGRESS) {
        pollfd p{fd, POLLOUT, 0};
        const int wait = int(std::min<int64_t>(std::max<int64_t>(remaining_ms(deadline), 1), 2000));
        if (::poll(&p, 1, wait) == 1) {
          socklen_t l = sizeof err;
          getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &l);
        } else {
          err = ETIMEDOUT;
        }
      }
      if (err == 0) {
        ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
        const int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        fd_ = fd;
      } else {
        last = std::strerror(err);
        ::close(fd);
      }
    }
    if (fd_ >= 0) break;
    if (Clock::now() >= deadline)
      throw Error(strprintf("could not reach the master (rank 0's rendezvous store) at %s within %.0f s (last error: "
                            "%s). Is rank 0 running, and are --master-addr/--master-port (MASTER_ADDR/MASTER_PORT) the "
                            "address and port it serves on?",
                            address_.c_str(), double(timeout.count()) / 1000.0, last.c_str()));
    std::this_thread::sleep_for(Millis(std::min<int64_t>(200, std::max<int64_t>(1, remaining_ms(deadline)))));
  }
  sockaddr_storage local{};
  socklen_t len = sizeof local;
  char ip[INET6_ADDRSTRLEN] = "";
  if (getsockname(fd_, reinterpret_cast<sockaddr*>(&local), &len) == 0) {
    if (local.ss_family == AF_INET)
      inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(&local)->sin_addr, ip, sizeof ip);
    else if (local.ss_family == AF_INET6)
      inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(&local)->sin6_addr, ip, sizeof ip);
  }
  local_ip_ = ip;
}

StoreClient::~StoreClient() {
  if (fd_ >= 0) ::close(fd_);
}

void StoreClient::request(uint8_t op, const std::string& key, const std::vector<char>& value,
                          std::vector<char>* reply, Millis timeout, const char* what) {
  std::lock_guard<std::mutex> lock(mu_);
  const std::vector<char> b = frame(op, key, value, true);
  auto gone = [&](const char* how) {
    return Error(strprintf("%s: the rendezvous store at %s %s: rank 0 (which serves it) has exited or its machine is "
                           "unreachable",
                           what, address_.c_str(), how));
  };
  if (fd_ < 0 || !send_all(fd_, b.data(), b.size())) throw gone("cannot be written to");
  if (!reply) return;
  // The server answers a parked request at its deadline; allow it some slack on top.
  const auto deadline = Clock::now() + timeout + Millis(10000);
  std::vector<char> in;
  size_t need = 5;
  while (in.size() < need) {
    pollfd p{fd_, POLLIN, 0};
    const int n = ::poll(&p, 1, int(std::min<int64_t>(remaining_ms(deadline), 1 << 30)));
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) throw gone("does not answer");
    char buf[65536];
    const ssize_t k = ::recv(fd_, buf, sizeof buf, 0);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) throw gone("closed the connection");
    in.insert(in.end(), buf, buf + k);
    if (in.size() >= 5) need = 5 + get_u32(in.data() + 1);
  }
  const uint8_t status = uint8_t(in[0]);
  reply->assign(in.begin() + 5, in.begin() + long(need));
  if (status == kError) throw Error(strprintf("%s: %s", what, std::string(reply->begin(), reply->end()).c_str()));
  if (status == kTimeout) reply->insert(reply->begin(), '\x01');  // marker for the caller
  else reply->insert(reply->begin(), '\x00');
}

void StoreClient::set(const std::string& key, const std::vector<char>& value) {
  std::vector<char> r;
  request(kSet, key, value, &r, Millis(30000), "rendezvous store set");
}

std::vector<char> StoreClient::get(const std::string& key, Millis timeout) {
  std::vector<char> r;
  request(kGet, key, i64_bytes(timeout.count()), &r, timeout, "rendezvous store get");
  if (r[0] == 1)
    throw Error(strprintf("timed out after %.0f s waiting for key '%s' in the rendezvous store at %s",
                          double(timeout.count()) / 1000.0, key.c_str(), address_.c_str()));
  return std::vector<char>(r.begin() + 1, r.end());
}

bool StoreClient::wait(const std::vector<std::string>& keys, Millis timeout) {
  std::string joined;
  for (size_t i = 0; i < keys.size(); ++i) joined += (i ? std::string(1, '\0') : std::string()) + keys[i];
  std::vector<char> r;
  request(kWait, joined, i64_bytes(timeout.count()), &r, timeout, "rendezvous store wait");
  return r[0] == 0;
}

int64_t StoreClient::add(const std::string& key, int64_t delta) {
  std::vector<char> r;
  request(kAdd, key, i64_bytes(delta), &r, Millis(30000), "rendezvous store add");
  VGG_CHECK(r.size() == 9, "rendezvous store add: malformed reply");
  return get_i64(r.data() + 1);
}

void StoreClient::hello(int rank, int world) {
  std::vector<char> v, r;
  put_u32(v, uint32_t(rank));
  put_u32(v, uint32_t(world));
  request(kHello, "", v, &r, Millis(30000), strprintf("rank %d joining the rendezvous at %s", rank, address_.c_str()).c_str());
}

std::vector<int> StoreClient::wait_world(Millis timeout) {
  std::vector<char> r;
  request(kWaitWorld, "", i64_bytes(timeout.count()), &r, timeout, "rendezvous");
  std::vector<int> missing;
  if (r[0] == 1)
    for (size_t i = 1; i + 4 <= r.size(); i += 4) missing.push_back(int(get_u32(r.data() + i)));
  return missing;
}

WorldStatus StoreClient::status(Millis timeout) {
  std::vector<char> r;
  request(kStatus, "", {}, &r, timeout, "rendezvous store status");
  WorldStatus s;
  const char* p = r.data() + 1;
  const char* end = r.data() + r.size();
  auto u32 = [&]() -> uint32_t {
    VGG_CHECK(p + 4 <= end, "rendezvous store status: malformed reply");
    const uint32_t v = get_u32(p);
    p += 4;
    return v;
  };
  s.world = int(u32());
  for (std::vector<int>* v : {&s.joined, &s.lost, &s.left}) {
    const uint32_t n = u32();
    for (uint32_t i = 0; i < n; ++i) v->push_back(int(u32()));
  }
  for (int i = 0; i < s.world && p + 8 <= end; ++i, p += 8) s.progress.push_back(get_i64(p));
  for (int i = 0; i < s.world && p + 8 <= end; ++i, p += 8) s.silent_ms.push_back(get_i64(p));
  return s;
}

void StoreClient::progress(int64_t n) noexcept {
  std::unique_lock<std::mutex> lock(mu_, std::try_to_lock);
  if (!lock.owns_lock() || fd_ < 0) return;  // best effort: never wait behind a parked request
  const std::vector<char> b = frame(kProgress, "", i64_bytes(n), true);
  send_all(fd_, b.data(), b.size());
}

void StoreClient::bye() noexcept {
  try {
    std::vector<char> r;
    request(kBye, "", {}, &r, Millis(5000), "rendezvous store bye");
  } catch (...) {
  }
}

}  // namespace vgg::dist
