#include "data/source.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "tensor.h"

namespace vgg::data {

void Source::check_index(int64_t i) const {
  VGG_CHECK_RANGE(i >= 0 && i < size(), "dataset: index %lld out of range [0, %lld)", (long long)i, (long long)size());
}

// What a non-regular file is, for the error that names it.
static const char* kind_of(mode_t m) {
  if (S_ISDIR(m)) return "a folder";
  if (S_ISFIFO(m)) return "a FIFO (named pipe)";
  if (S_ISSOCK(m)) return "a socket";
  if (S_ISCHR(m)) return "a character device";
  if (S_ISBLK(m)) return "a block device";
  return "not a regular file";
}

// Opens `path` for reading if it is a regular file: non-blocking (a FIFO would block open() until a writer comes)
// and checked with fstat on the descriptor itself; `size` gets its size. A folder of a lucky size used to open and
// fail only at the first read. Throws naming the file and what was expected.
static int open_regular(const std::string& path, const char* expect, int64_t& size) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    const int e = errno;
    struct stat st;  // a socket cannot be opened at all (ENXIO): say what it is
    if (e != ENOENT && ::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode))
      throw Error(strprintf("STL10: %s: expected %s, got %s", path.c_str(), expect, kind_of(st.st_mode)));
    throw Error(e == ENOENT ? strprintf("STL10: %s: expected %s, got missing file", path.c_str(), expect)
                            : strprintf("STL10: %s: cannot open (%s)", path.c_str(), std::strerror(e)));
  }
  struct stat st;
  const bool ok = ::fstat(fd, &st) == 0;
  const int e = errno;
  if (!ok || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(strprintf("STL10: %s: expected %s, got %s", path.c_str(), expect,
                          ok ? kind_of(st.st_mode) : std::strerror(e)));
  }
  size = int64_t(st.st_size);
  return fd;
}

static void pread_all(int fd, void* dst, size_t n, int64_t off, const std::string& path) {
  char* p = static_cast<char*>(dst);
  while (n > 0) {
    ssize_t r = ::pread(fd, p, n, off);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0)
      throw Error(strprintf("STL10: %s: read of %zu bytes at offset %lld failed (%s)", path.c_str(), n,
                            (long long)off, r == 0 ? "unexpected end of file" : std::strerror(errno)));
    p += r; n -= size_t(r); off += r;
  }
}

void Stl10Source::add_part(const std::string& x_path, const std::string& y_path) {
  int64_t xs = 0;
  Part part;
  part.fd = open_regular(x_path, "a file of N*27648 bytes (N images of 3x96x96)", xs);
  part.x_path = x_path;
  try {
    VGG_CHECK(xs > 0 && xs % kStlBytes == 0,
              "STL10: %s: expected a size that is a positive multiple of 27648 bytes (3x96x96 per image), got %lld "
              "bytes", x_path.c_str(), (long long)xs);
    part.count = xs / kStlBytes;
    if (!y_path.empty()) {
      int64_t ys = 0;
      const int yfd = open_regular(y_path, "a labels file", ys);
      std::vector<uint8_t> raw;
      try {
        VGG_CHECK(ys == part.count, "STL10: %s: expected %lld bytes (one label per image of %s), got %lld bytes",
                  y_path.c_str(), (long long)part.count, x_path.c_str(), (long long)ys);
        raw.resize(static_cast<size_t>(ys));
        pread_all(yfd, raw.data(), raw.size(), 0, y_path);
      } catch (...) {
        ::close(yfd);
        throw;
      }
      ::close(yfd);
      part.labels.resize(raw.size());
      for (size_t i = 0; i < raw.size(); ++i) {
        VGG_CHECK(raw[i] >= 1 && raw[i] <= 10, "STL10: %s: expected labels in 1..10, got %d at index %zu",
                  y_path.c_str(), int(raw[i]), i);
        part.labels[i] = int32_t(raw[i]) - 1;
      }
    }
  } catch (...) {
    ::close(part.fd);
    throw;
  }
  total += part.count;
  parts.push_back(std::move(part));
}

void Stl10Source::set_subset(std::vector<int64_t> idx) {
  for (int64_t i : idx)
    VGG_CHECK_RANGE(i >= 0 && i < total, "STL10: fold index %lld out of range [0, %lld)", (long long)i, (long long)total);
  subset = std::move(idx);
}

Stl10Source::~Stl10Source() {
  for (Part& p : parts)
    if (p.fd >= 0) ::close(p.fd);
}

void Stl10Source::locate(int64_t i, const Part*& part, int64_t& j) const {
  check_index(i);
  j = subset.empty() ? i : subset[size_t(i)];
  for (const Part& p : parts) {
    if (j < p.count) { part = &p; return; }
    j -= p.count;
  }
  throw Error("STL10: internal index error");
}

int Stl10Source::label(int64_t i) const {
  const Part* p;
  int64_t j;
  locate(i, p, j);
  return p->labels.empty() ? -1 : p->labels[size_t(j)];
}

void Stl10Source::read(int64_t i, uint8_t* dst) const {
  const Part* p;
  int64_t j;
  locate(i, p, j);
  uint8_t raw[kStlBytes];
  pread_all(p->fd, raw, sizeof raw, j * kStlBytes, p->x_path);
  // Each channel is stored column-major: raw[c][x][y] -> dst[c][y][x].
  constexpr int S = kStlSide;
  for (int c = 0; c < 3; ++c) {
    const uint8_t* s = raw + c * S * S;
    uint8_t* d = dst + c * S * S;
    for (int x = 0; x < S; ++x)
      for (int y = 0; y < S; ++y) d[y * S + x] = s[x * S + y];
  }
}

void MemorySource::add(const uint8_t* bytes, size_t nbytes, int c, int h, int w, int label, bool hwc, size_t index) {
  VGG_CHECK(c > 0 && h > 0 && w > 0 && size_t(c) * h * w == nbytes,
            "dataMemorySource: image %zu: %zu bytes do not match shape [%d,%d,%d]", index, nbytes, c, h, w);
  Item it{c, h, w, label, {}};
  if (hwc && c > 1) {  // interleaved -> planar
    it.chw.resize(nbytes);
    const size_t n = size_t(h) * w;
    for (size_t px = 0; px < n; ++px)
      for (int ch = 0; ch < c; ++ch) it.chw[ch * n + px] = bytes[px * c + ch];
  } else {
    it.chw.assign(bytes, bytes + nbytes);
  }
  items.push_back(std::move(it));
}

void MemorySource::shape(int64_t i, int& c, int& h, int& w) const {
  check_index(i);
  const Item& it = items[size_t(i)];
  c = it.c; h = it.h; w = it.w;
}

void MemorySource::read(int64_t i, uint8_t* dst) const {
  check_index(i);
  const Item& it = items[size_t(i)];
  std::memcpy(dst, it.chw.data(), it.chw.size());
}

}  // namespace vgg::data
