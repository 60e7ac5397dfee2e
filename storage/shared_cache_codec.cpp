#include "storage/shared_cache_codec.hpp"

#include <charconv>

#include "storage/byte_codec.hpp"
#include "storage/cache_codec.hpp"

namespace keyway::storage {

namespace {

constexpr uint8_t kMessageFormat = 1;
constexpr uint32_t kMaxMessagePaths = 64;

bool parseTime(std::string_view text, int64_t& out) {
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc() && end == text.data() + text.size() && !text.empty();
}

core::Error damaged(const char* what) {
  return core::Error::make(core::ErrorCode::kInternal, std::string("shared cache ") + what);
}

}  // namespace

core::Result<SharedCacheCodec> SharedCacheCodec::create(const MasterKey& master, std::string prefix) {
  auto keyring = Keyring::create(master);
  if (!keyring) return keyring.takeError();
  return SharedCacheCodec(std::make_shared<const Keyring>(std::move(keyring).value()), std::move(prefix));
}

// Length-prefixed parts under a domain, so that no two different inputs hash alike.
std::string SharedCacheCodec::hashed(std::string_view domain, std::initializer_list<std::string_view> parts) const {
  ByteWriter w;
  w.str(domain);
  for (std::string_view part : parts) w.str(part);
  return keyring_->fingerprint(w.bytes());
}

std::string SharedCacheCodec::entryBase(std::string_view cache_key) const {
  return prefix_ + "c:" + hashed("shared-cache entry", {cache_key});
}

std::string SharedCacheCodec::identityEpochKey(std::string_view upstream, std::string_view identity_tag) const {
  return prefix_ + "e:" + hashed("shared-cache identity epoch", {upstream, identity_tag});
}

std::string SharedCacheCodec::upstreamEpochKey(std::string_view upstream) const {
  return prefix_ + "u:" + hashed("shared-cache upstream epoch", {upstream});
}

std::string SharedCacheCodec::globalEpochKey() const { return prefix_ + "g"; }

std::string SharedCacheCodec::channel() const { return prefix_ + "events"; }

std::string SharedCacheCodec::sealEntry(std::string_view name, std::string_view cache_key,
                                        const core::CachedResponse& r) const {
  std::string out = std::to_string(r.fresh_until_unix_ms);
  out.append(":").append(std::to_string(r.stale_until_unix_ms)).append(":");
  out.append(keyring_->seal(cache::encodeRecord(cache_key, r), name));
  return out;
}

core::Result<core::CachedResponse> SharedCacheCodec::openEntry(std::string_view name, std::string_view cache_key,
                                                               std::string_view value) const {
  const size_t a = value.find(':');
  const size_t b = a == std::string_view::npos ? a : value.find(':', a + 1);
  int64_t fresh = 0;
  int64_t stale = 0;
  if (b == std::string_view::npos || !parseTime(value.substr(0, a), fresh) ||
      !parseTime(value.substr(a + 1, b - a - 1), stale)) {
    return damaged("value does not parse");
  }
  auto plain = keyring_->open(value.substr(b + 1), name);
  if (!plain) return damaged("value does not open (tampered, moved, or sealed under another master key)");
  core::CachedResponse r;
  if (cache::decodeRecord(plain->view(), cache_key, &r) != cache::Decoded::kMatch) {
    return damaged("value belongs to another key");
  }
  // The clear times must say what the sealed record says: they decide freshness in Redis.
  if (r.fresh_until_unix_ms != fresh || r.stale_until_unix_ms != stale) return damaged("value's times were changed");
  return r;
}

std::string SharedCacheCodec::sealMessage(const Message& m) const {
  ByteWriter w;
  w.u8(kMessageFormat);
  w.u8(static_cast<uint8_t>(m.kind));
  w.str(m.origin);
  w.str(m.upstream);
  w.str(m.identity_tag);
  w.list(m.paths);
  w.u8(m.prefix ? 1 : 0);
  return keyring_->seal(w.bytes(), channel());
}

core::Result<SharedCacheCodec::Message> SharedCacheCodec::openMessage(std::string_view sealed) const {
  auto plain = keyring_->open(sealed, channel());
  if (!plain) return damaged("message does not open");
  ByteReader r(plain->view());
  Message m;
  uint8_t format = 0;
  uint8_t kind = 0;
  if (!r.u8(format) || format != kMessageFormat || !r.u8(kind) ||
      (kind != static_cast<uint8_t>(Message::Kind::kInvalidate) && kind != static_cast<uint8_t>(Message::Kind::kPurge)) ||
      !r.str(m.origin) || !r.str(m.upstream) || !r.str(m.identity_tag) || !r.list(m.paths, kMaxMessagePaths) || !r.boolean(m.prefix) ||
      !r.atEnd()) {
    return damaged("message does not parse");
  }
  m.kind = static_cast<Message::Kind>(kind);
  return m;
}

}  // namespace keyway::storage
