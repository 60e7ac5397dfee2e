// In-memory response cache: a hash map plus an LRU list, bounded by accounted bytes.
#include "storage/memory_cache_store.hpp"

#include <algorithm>
#include <chrono>

namespace keyway::storage {

size_t memoryEntryBytes(std::string_view key, const core::CacheEntryMeta& meta,
                        const core::CachedResponse& response) {
  size_t bytes = 64 + key.size() + response.reason.size() + response.body.size() +
                 meta.upstream.size() + meta.path.size() + meta.identity_tag.size();
  for (const auto& header : response.headers) bytes += 8 + header.name.size() + header.value.size();
  return bytes;
}

MemoryCacheStore::MemoryCacheStore(MemoryCacheStoreOptions options)
    : options_(std::move(options)) {}

int64_t MemoryCacheStore::nowMs() const {
  const auto now = options_.clock ? options_.clock->systemNow() : std::chrono::system_clock::now();
  return std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
}

void MemoryCacheStore::eraseLocked(Map::iterator it) {
  bytes_ -= it->second.bytes;
  lru_.erase(it->second.lru);
  entries_.erase(it);
}

template <class Pred>
size_t MemoryCacheStore::eraseIfLocked(Pred pred) {
  size_t n = 0;
  for (auto it = entries_.begin(); it != entries_.end();) {
    auto next = std::next(it);
    if (pred(it->second)) {
      eraseLocked(it);
      ++n;
    }
    it = next;
  }
  return n;
}

void MemoryCacheStore::sweepLocked(int64_t now_ms) {
  counters_.expired += eraseIfLocked(
      [now_ms](const Entry& e) { return e.response.stale_until_unix_ms <= now_ms; });
}

std::optional<core::CachedResponse> MemoryCacheStore::get(std::string_view key) {
  const int64_t now = nowMs();
  std::lock_guard<std::mutex> lock(mu_);
  if (!healthy_) {
    ++counters_.misses;
    return std::nullopt;
  }
  auto it = entries_.find(std::string(key));
  if (it == entries_.end()) {
    ++counters_.misses;
    return std::nullopt;
  }
  if (it->second.response.stale_until_unix_ms <= now) {
    eraseLocked(it);
    ++counters_.expired;
    ++counters_.misses;
    return std::nullopt;
  }
  lru_.splice(lru_.begin(), lru_, it->second.lru);
  ++counters_.hits;
  return it->second.response;
}

void MemoryCacheStore::put(std::string_view key, const core::CacheEntryMeta& meta,
                           core::CachedResponse response) {
  const int64_t now = nowMs();
  const size_t bytes = memoryEntryBytes(key, meta, response);
  std::lock_guard<std::mutex> lock(mu_);
  if (!healthy_ || response.stale_until_unix_ms <= now || bytes > options_.max_bytes) {
    ++counters_.dropped_writes;
    return;
  }
  if ((++puts_ % 64) == 0) sweepLocked(now);
  std::string owned(key);
  if (auto it = entries_.find(owned); it != entries_.end()) eraseLocked(it);
  lru_.push_front(owned);
  Entry entry{meta, std::move(response), bytes, lru_.begin()};
  entries_.emplace(std::move(owned), std::move(entry));
  bytes_ += bytes;
  // The new entry is at the front and fits on its own, so this stops before reaching it.
  while (bytes_ > options_.max_bytes && !lru_.empty()) {
    eraseLocked(entries_.find(lru_.back()));
    ++counters_.evictions;
  }
}

size_t MemoryCacheStore::invalidate(std::string_view upstream, std::string_view identity_tag,
                                    std::string_view path) {
  std::lock_guard<std::mutex> lock(mu_);
  return eraseIfLocked([&](const Entry& e) {
    return e.meta.upstream == upstream && e.meta.identity_tag == identity_tag &&
           e.meta.path == path;
  });
}

size_t MemoryCacheStore::invalidatePrefix(std::string_view upstream,
                                          std::string_view identity_tag,
                                          std::string_view path_prefix) {
  std::lock_guard<std::mutex> lock(mu_);
  return eraseIfLocked([&](const Entry& e) {
    return e.meta.upstream == upstream && e.meta.identity_tag == identity_tag &&
           std::string_view(e.meta.path).substr(0, path_prefix.size()) == path_prefix;
  });
}

size_t MemoryCacheStore::purge(std::string_view upstream, std::string_view path_prefix) {
  std::lock_guard<std::mutex> lock(mu_);
  ++counters_.generation;
  return eraseIfLocked([&](const Entry& e) {
    return (upstream.empty() || e.meta.upstream == upstream) &&
           std::string_view(e.meta.path).substr(0, path_prefix.size()) == path_prefix;
  });
}

core::CacheStats MemoryCacheStore::stats() {
  std::lock_guard<std::mutex> lock(mu_);
  core::CacheStats s = counters_;
  s.entries = entries_.size();
  s.bytes = bytes_;
  s.max_bytes = options_.max_bytes;
  s.healthy = healthy_;
  s.oldest_stored_unix_ms = 0;
  for (const auto& kv : entries_) {
    const int64_t stored = kv.second.response.stored_unix_ms;
    if (s.oldest_stored_unix_ms == 0 || stored < s.oldest_stored_unix_ms) {
      s.oldest_stored_unix_ms = stored;
    }
  }
  return s;
}

bool MemoryCacheStore::healthy() {
  std::lock_guard<std::mutex> lock(mu_);
  return healthy_;
}

void MemoryCacheStore::setHealthy(bool healthy) {
  std::lock_guard<std::mutex> lock(mu_);
  if (healthy_ && !healthy) ++counters_.degraded_events;
  healthy_ = healthy;
}

}  // namespace keyway::storage
