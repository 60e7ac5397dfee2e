// The response cache store role (docs/cache.md): where cached upstream responses live. Implemented by
// storage/lmdb_cache_store (persistent, shared with keywayctl) and storage/memory_cache_store.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "core/http_types.hpp"

namespace keyway::core {

// A stored response. The body is identity-encoded (never gzip etc.); headers are what the
// gateway chose to keep (it strips hop-by-hop headers and recomputes Content-Length on serve).
// Times are Unix milliseconds: fresh until fresh_until, usable stale until stale_until (the end
// of the larger of the swr and sie windows; see core/cache_policy.hpp freshnessWindow()).
struct CachedResponse {
  int status = 200;
  std::string reason;
  Headers headers;
  std::string body;
  int64_t stored_unix_ms = 0;
  int64_t fresh_until_unix_ms = 0;
  int64_t stale_until_unix_ms = 0;
};

// What an entry is about, for purge and invalidation. `path` is without the query.
struct CacheEntryMeta {
  std::string upstream;
  std::string path;
  std::string identity_tag;  // core::identityTag() of the request's identity
};

// Counters are totals over the store's life: LmdbCacheStore persists them in the environment, so
// they survive restarts and every process (keywayd, keywayctl) sees the same figures.
struct CacheStats {
  uint64_t entries = 0;
  uint64_t bytes = 0;           // accounted bytes (keys + serialised responses), bounded by max_bytes
  uint64_t max_bytes = 0;
  uint64_t hits = 0;            // get() calls that returned an entry (fresh or stale)
  uint64_t misses = 0;          // get() calls that returned nothing
  uint64_t evictions = 0;       // entries removed to stay within max_bytes (or on a full map)
  uint64_t expired = 0;         // entries swept after their stale_until
  uint64_t dropped_writes = 0;  // put()s not stored (too large, queue full, degraded, failures)
  uint64_t degraded_events = 0; // storage failures survived (corruption, full map, reader table)
  int64_t oldest_stored_unix_ms = 0;  // stored_unix_ms of the oldest entry; 0 when empty
  uint64_t generation = 0;      // moves with every purge (by any process)
  bool healthy = true;
};

// Thread-safe. The request path calls get()/put()/invalidate*() and must never wait on disk
// writes: implementations may apply put() asynchronously but a put() is visible to this store's
// get() at once; invalidate*() and purge() take effect for get() at once, also when another
// process (keywayctl) purges. Keys come from core::cacheKey() and are compared in full (a hash
// collision never returns another key's entry). No method throws; failures degrade to "no
// entry"/"not stored" and are counted in stats().
class CacheStore {
 public:
  virtual ~CacheStore() = default;

  // The entry stored under `key` unless it is past stale_until_unix_ms (the caller classifies
  // fresh/stale with core::cacheFreshness()). Records the access for least-recently-used
  // eviction (without a write transaction per hit).
  virtual std::optional<CachedResponse> get(std::string_view key) = 0;

  // Stores (replaces) the entry for `key`. May be applied asynchronously and never fsyncs.
  // Entries past stale_until, larger than the store's bound, or offered while unhealthy are
  // dropped (counted).
  virtual void put(std::string_view key, const CacheEntryMeta& meta, CachedResponse response) = 0;

  // Drops the entries of (upstream, identity_tag) whose path is exactly `path`, whatever their
  // query. Returns how many were dropped.
  virtual size_t invalidate(std::string_view upstream, std::string_view identity_tag,
                            std::string_view path) = 0;

  // Drops the entries of (upstream, identity_tag) whose path starts with `path_prefix` (BOSA: a
  // connector's entries after a write action). Returns how many were dropped.
  virtual size_t invalidatePrefix(std::string_view upstream, std::string_view identity_tag,
                                  std::string_view path_prefix) = 0;

  // Drops every entry of `upstream` ("" = all upstreams) whose path starts with `path_prefix`
  // ("" = any), for every identity; synchronous (done when it returns). Returns how many.
  virtual size_t purge(std::string_view upstream, std::string_view path_prefix) = 0;

  virtual CacheStats stats() = 0;

  // False while degraded (storage unusable): then get() misses and put() drops at no cost, and
  // the gateway forwards without caching. Implementations recover on their own when they can.
  virtual bool healthy() = 0;

  // Waits until every put()/invalidation accepted so far is applied to storage (tests, clean
  // shutdown). No-op for synchronous implementations.
  virtual void flush() {}
};

}  // namespace keyway::core
