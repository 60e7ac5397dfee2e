// In-memory CacheStore with the same semantics as LmdbCacheStore (for gateway unit tests).
#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "core/cache_store.hpp"
#include "core/clock.hpp"

namespace keyway::storage {

struct MemoryCacheStoreOptions {
  size_t max_bytes = size_t{256} << 20;
  std::shared_ptr<const core::Clock> clock;  // null = RealClock
};

// Thread-safe (one mutex); synchronous; nothing persists. Least-recently-read eviction by
// accounted bytes (memoryEntryBytes()); expired entries are dropped on access and swept every
// 64 puts.
class MemoryCacheStore final : public core::CacheStore {
 public:
  explicit MemoryCacheStore(MemoryCacheStoreOptions options = {});

  std::optional<core::CachedResponse> get(std::string_view key) override;
  void put(std::string_view key, const core::CacheEntryMeta& meta,
           core::CachedResponse response) override;
  size_t invalidate(std::string_view upstream, std::string_view identity_tag,
                    std::string_view path) override;
  size_t invalidatePrefix(std::string_view upstream, std::string_view identity_tag,
                          std::string_view path_prefix) override;
  size_t purge(std::string_view upstream, std::string_view path_prefix) override;
  core::CacheStats stats() override;
  bool healthy() override;

  // Tests: simulate degraded storage (get misses, put drops, healthy() false).
  void setHealthy(bool healthy);

 private:
  struct Entry {
    core::CacheEntryMeta meta;
    core::CachedResponse response;
    size_t bytes = 0;
    std::list<std::string>::iterator lru;  // position in lru_ (front = most recently used)
  };
  using Map = std::unordered_map<std::string, Entry>;

  int64_t nowMs() const;
  void eraseLocked(Map::iterator it);
  template <class Pred>
  size_t eraseIfLocked(Pred pred);
  void sweepLocked(int64_t now_ms);

  const MemoryCacheStoreOptions options_;
  std::mutex mu_;
  Map entries_;
  std::list<std::string> lru_;
  size_t bytes_ = 0;
  uint64_t puts_ = 0;
  core::CacheStats counters_;  // hits, misses, evictions, expired, dropped_writes
  bool healthy_ = true;
};

// The bytes a MemoryCacheStore accounts for one entry (key, response, meta, fixed overhead).
size_t memoryEntryBytes(std::string_view key, const core::CacheEntryMeta& meta,
                        const core::CachedResponse& response);

}  // namespace keyway::storage
