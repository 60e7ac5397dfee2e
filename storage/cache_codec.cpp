// The cache environment's byte formats: records, per-entry info, index and time keys.
#include "storage/cache_codec.hpp"

#include <sodium.h>

#include <cstring>

namespace keyway::storage::cache {
namespace {

constexpr size_t kHeadSize = 16;
constexpr unsigned char kRecordVersion = 1;
constexpr unsigned char kMetaVersion = 1;

void putU32(std::string& out, uint32_t v) {
  for (int i = 3; i >= 0; --i) out += static_cast<char>((v >> (8 * i)) & 0xFF);
}
void putU64(std::string& out, uint64_t v) {
  for (int i = 7; i >= 0; --i) out += static_cast<char>((v >> (8 * i)) & 0xFF);
}
void putBytes(std::string& out, std::string_view s) {
  putU32(out, static_cast<uint32_t>(s.size()));
  out += s;
}

class ByteReader {
 public:
  explicit ByteReader(std::string_view in) : in_(in) {}
  bool ok() const { return ok_; }
  bool done() const { return pos_ == in_.size(); }
  unsigned char u8() {
    if (!need(1)) return 0;
    return static_cast<unsigned char>(in_[pos_++]);
  }
  uint32_t u32() {
    if (!need(4)) return 0;
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v = (v << 8) | static_cast<unsigned char>(in_[pos_++]);
    return v;
  }
  uint64_t u64() {
    if (!need(8)) return 0;
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<unsigned char>(in_[pos_++]);
    return v;
  }
  int64_t i64() { return static_cast<int64_t>(u64()); }
  std::string_view bytes() {
    const uint32_t n = u32();
    if (!need(n)) return {};
    const std::string_view s = in_.substr(pos_, n);
    pos_ += n;
    return s;
  }

 private:
  bool need(size_t n) {
    if (!ok_ || in_.size() - pos_ < n) {
      ok_ = false;
      return false;
    }
    return true;
  }
  std::string_view in_;
  size_t pos_ = 0;
  bool ok_ = true;
};

}  // namespace

uint64_t orderedTime(int64_t t) { return static_cast<uint64_t>(t) ^ (uint64_t{1} << 63); }
int64_t fromOrderedTime(uint64_t v) { return static_cast<int64_t>(v ^ (uint64_t{1} << 63)); }

Hash hashKey(std::string_view key) {
  Hash h{};
  crypto_generichash(h.data(), h.size(), reinterpret_cast<const unsigned char*>(key.data()),
                     key.size(), nullptr, 0);
  return h;
}

std::string_view hashView(const Hash& h) {
  return std::string_view(reinterpret_cast<const char*>(h.data()), h.size());
}

Hash hashFromSuffix(std::string_view key) {
  Hash h{};
  if (key.size() >= kHashSize) std::memcpy(h.data(), key.data() + key.size() - kHashSize, kHashSize);
  return h;
}

uint64_t decodeU64(std::string_view v) {
  ByteReader r(v);
  const uint64_t x = r.u64();
  return r.ok() ? x : 0;
}

std::string u64Value(uint64_t v) {
  std::string s;
  putU64(s, v);
  return s;
}

std::string head16(std::initializer_list<std::string_view> fields) {
  std::string buf;
  for (std::string_view f : fields) putBytes(buf, f);
  unsigned char out[kHeadSize];
  crypto_generichash(out, sizeof out, reinterpret_cast<const unsigned char*>(buf.data()),
                     buf.size(), nullptr, 0);
  return std::string(reinterpret_cast<const char*>(out), sizeof out);
}

std::string indexKey(const std::string& head, std::string_view path, const Hash& h) {
  std::string k = head;
  k += path.substr(0, kMaxIndexedPath);
  k += '\0';
  k += hashView(h);
  return k;
}

std::string timeKey(uint64_t ordered, const Hash& h) {
  std::string k;
  putU64(k, ordered);
  k += hashView(h);
  return k;
}

std::string encodeRecord(std::string_view key, const core::CachedResponse& r) {
  size_t size = 64 + key.size() + r.reason.size() + r.body.size();
  for (const auto& h : r.headers) size += 8 + h.name.size() + h.value.size();
  std::string out;
  out.reserve(size);
  out += static_cast<char>(kRecordVersion);
  putBytes(out, key);
  putU32(out, static_cast<uint32_t>(r.status));
  putBytes(out, r.reason);
  putU32(out, static_cast<uint32_t>(r.headers.size()));
  for (const auto& h : r.headers) {
    putBytes(out, h.name);
    putBytes(out, h.value);
  }
  putU64(out, static_cast<uint64_t>(r.stored_unix_ms));
  putU64(out, static_cast<uint64_t>(r.fresh_until_unix_ms));
  putU64(out, static_cast<uint64_t>(r.stale_until_unix_ms));
  putBytes(out, r.body);
  return out;
}

Decoded decodeRecord(std::string_view value, std::string_view key, core::CachedResponse* out) {
  ByteReader r(value);
  if (r.u8() != kRecordVersion) return Decoded::kCorrupt;
  const std::string_view stored_key = r.bytes();
  if (!r.ok()) return Decoded::kCorrupt;
  if (stored_key != key) return Decoded::kOtherKey;  // a BLAKE2b collision: never serve it
  core::CachedResponse resp;
  resp.status = static_cast<int>(r.u32());
  resp.reason = std::string(r.bytes());
  const uint32_t n = r.u32();
  if (!r.ok() || n > value.size() / 8) return Decoded::kCorrupt;
  resp.headers.reserve(n);
  for (uint32_t i = 0; i < n && r.ok(); ++i) {
    core::Header h;
    h.name = std::string(r.bytes());
    h.value = std::string(r.bytes());
    resp.headers.push_back(std::move(h));
  }
  resp.stored_unix_ms = r.i64();
  resp.fresh_until_unix_ms = r.i64();
  resp.stale_until_unix_ms = r.i64();
  resp.body = std::string(r.bytes());
  if (!r.ok() || !r.done()) return Decoded::kCorrupt;
  *out = std::move(resp);
  return Decoded::kMatch;
}

std::string encodeInfo(const EntryInfo& e) {
  std::string out;
  out += static_cast<char>(kMetaVersion);
  putU64(out, e.tick);
  putU64(out, static_cast<uint64_t>(e.stored));
  putU64(out, static_cast<uint64_t>(e.stale_until));
  putU64(out, e.bytes);
  putBytes(out, e.upstream);
  putBytes(out, e.identity);
  putBytes(out, e.path);
  return out;
}

bool decodeInfo(std::string_view value, EntryInfo* e) {
  ByteReader r(value);
  if (r.u8() != kMetaVersion) return false;
  e->tick = r.u64();
  e->stored = r.i64();
  e->stale_until = r.i64();
  e->bytes = r.u64();
  e->upstream = std::string(r.bytes());
  e->identity = std::string(r.bytes());
  e->path = std::string(r.bytes());
  return r.ok() && r.done();
}

}  // namespace keyway::storage::cache
