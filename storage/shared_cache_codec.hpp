// What the shared cache keeps in Redis (docs/cache.md, "Shared cache"): key names are keyed
// hashes and values and messages are sealed under the master key, so someone who reads Redis
// learns neither the cached data nor who asked for what. Every host holding the same master
// key and prefix reads what the others wrote.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/cache_store.hpp"
#include "core/result.hpp"
#include "storage/crypto.hpp"

namespace keyway::storage {

class SharedCacheCodec {
 public:
  static core::Result<SharedCacheCodec> create(const MasterKey& master, std::string prefix);

  // An entry's name before its epochs are appended: prefix "c:" + keyed hash of the cache key.
  std::string entryBase(std::string_view cache_key) const;
  // Counters whose values are part of every entry name: a write bumps the first, a purge the
  // second (one upstream) or the third (everything), and the entries under the old values can no
  // longer be named.
  std::string identityEpochKey(std::string_view upstream, std::string_view identity_tag) const;
  std::string upstreamEpochKey(std::string_view upstream) const;
  std::string globalEpochKey() const;
  // The pub/sub channel the hosts tell each other about invalidations and purges on.
  std::string channel() const;
  const std::string& prefix() const { return prefix_; }

  // "<fresh_until_ms>:<stale_until_ms>:<sealed record>": the two times in clear so that Redis
  // itself (a script) can tell fresh from stale; the record carries the full cache key, sealed
  // with `name` as associated data (a value copied under another name does not open).
  std::string sealEntry(std::string_view name, std::string_view cache_key, const core::CachedResponse& r) const;
  // kInternal for a value that does not parse, open, or belong to `cache_key`.
  core::Result<core::CachedResponse> openEntry(std::string_view name, std::string_view cache_key,
                                               std::string_view value) const;

  struct Message {
    enum class Kind : uint8_t { kInvalidate = 1, kPurge = 2 };
    Kind kind = Kind::kInvalidate;
    std::string origin;  // the host that sent it (it ignores its own)
    std::string upstream;
    std::string identity_tag;
    std::vector<std::string> paths;  // purge: one path prefix ("" = every path)
    bool prefix = false;
  };
  std::string sealMessage(const Message& m) const;
  core::Result<Message> openMessage(std::string_view sealed) const;

 private:
  SharedCacheCodec(std::shared_ptr<const Keyring> keyring, std::string prefix)
      : keyring_(std::move(keyring)), prefix_(std::move(prefix)) {}
  std::string hashed(std::string_view domain, std::initializer_list<std::string_view> parts) const;

  std::shared_ptr<const Keyring> keyring_;
  std::string prefix_;
};

}  // namespace keyway::storage
