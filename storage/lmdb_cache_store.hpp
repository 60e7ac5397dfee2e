// The persistent response cache (docs/cache.md): CacheStore over its own LMDB environment (not
// the credential store's), shared by keywayd and `keywayctl cache stats|purge` (LMDB is
// multi-process safe). Implemented in lmdb_cache_{store,env,writer}.cpp and cache_codec.cpp.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "core/cache_store.hpp"
#include "core/clock.hpp"

namespace keyway::storage {

struct LmdbCacheStoreOptions {
  std::string dir;                        // environment directory, e.g. <state_dir>/cache
  size_t max_bytes = size_t{256} << 20;   // accounted bytes bound (LRU eviction above it)
  // Virtual map size; 0 = 2 * max_bytes + 64 MiB (B-tree pages, page rounding of large values
  // and copy-on-write need room beyond the accounted bytes). Processes sharing the directory
  // should agree (same config); LMDB keeps the larger.
  size_t map_size = 0;
  unsigned max_readers = 1022;
  std::shared_ptr<const core::Clock> clock;            // null = RealClock
  std::function<void(std::string_view message)> warn;  // null = warnOnStderr (warning.hpp)
  std::chrono::milliseconds sweep_interval{60'000};    // expired-entry sweep period
  std::chrono::milliseconds sync_interval{5'000};      // mdb_env_sync period while dirty
  std::chrono::milliseconds recovery_interval{30'000}; // retry period while degraded
  // A read this soon after the last recorded read of the same entry does not rewrite its LRU
  // position, unless the entry may be among the next evicted (see the design notes below).
  std::chrono::milliseconds touch_interval{30'000};
  // Bound on the heap held by put()s accepted but not yet written; beyond it puts are dropped
  // (counted). One put is always accepted while none is pending, whatever its size.
  size_t max_pending_bytes = size_t{16} << 20;
  // After each expired-entry sweep, if the process's heap holds more than this many free bytes
  // (glibc mallinfo2), give its free pages back to the kernel (malloc_trim): a burst of
  // requests otherwise leaves RSS at its peak for good. 0 = never. The trim locks each malloc
  // arena while it walks it, so it costs in proportion to the free heap, at most once per sweep.
  // A few MiB: a wave of background refreshes (every key of a hot set going stale together)
  // leaves about that much free in the upstream I/O threads' arenas, which a larger threshold
  // would keep resident for good (bench/README.md, scenario (f)).
  size_t release_free_heap_above = size_t{4} << 20;
};

// Design (why it looks like this):
//  - Not durable per write: MDB_NOSYNC | MDB_NOMETASYNC, one mdb_env_sync every sync_interval
//    and at close. A crash loses at most the last seconds of cache writes, never correctness.
//  - Records are keyed by BLAKE2b-256(full key); the full key is stored in the record and
//    compared on read, so a collision is a miss, never another key's response.
//  - One writer thread applies puts, invalidations, purges, recency updates and counters in
//    batched write transactions; request threads never wait for the LMDB write lock. Each
//    transaction is bounded (16 puts or invalidations, 256 recency updates, 64 swept
//    entries): LMDB keeps the pages a transaction dirtied on the heap until the environment
//    closes, so memory stays bounded whatever the size of a burst or of the key set. A put is
//    visible to get() at once through an in-memory pending map until it is committed;
//    invalidations mark the affected keys (tombstones) at once and are resolved again by the
//    writer inside its transaction.
//  - Reads use pooled read-only transactions (MDB_NOTLS, reset/renew), taken without blocking.
//  - Secondary indexes: (upstream, identity tag, path) and (upstream, path) -> record, so
//    invalidation and `purge --upstream U --prefix P` do not scan the cache; a least-recently-
//    used index, an expiry index (swept every sweep_interval) and a stored-time index.
//  - Recency is recorded in memory on get() and persisted by the writer's next batch (at least
//    once a second), so a hit never costs a write transaction. LRU ticks carry the time of the
//    access; while the cache is less than half full, a read within touch_interval of the
//    entry's recorded one is not rewritten (memcached's ITEM_UPDATE_INTERVAL). Past half full
//    every read is recorded: the order is exact where eviction is near.
//  - A generation counter in the environment is bumped by every purge (from any process); a
//    pending put or an in-memory copy from an older generation is never served or written.
//    get() always reads the environment, so another process's purge is seen at once.
//  - Failures: MDB_MAP_FULL -> evict a quarter, retry; then empty the cache, retry; then drop
//    the batch's puts; a map still full even then is recreated. (Freed pages become reusable
//    two commits later, so each eviction is followed by two tiny commits; when even eviction
//    cannot get a page, the map grows by a quarter, up to twice its configured size.) A corrupt
//    or unopenable environment is moved aside (<dir>.corrupt-<ms>) and recreated empty; if even
//    that fails the store is degraded (healthy() false, every call a cheap no-op) and retries
//    every recovery_interval. A directory holding anything but data.mdb/lock.mdb is never moved.
//    MDB_READERS_FULL: stale reader slots are cleared and the read retried once, else it is a
//    miss. Every such event is logged (warn) and counted (stats().degraded_events).
class LmdbCacheStore final : public core::CacheStore {
 public:
  // Never fails: a store whose environment cannot be opened or recreated starts degraded (with a
  // warning) and keeps retrying. Starts the writer thread.
  static std::unique_ptr<LmdbCacheStore> open(LmdbCacheStoreOptions options);
  // Applies everything queued, syncs the environment, stops the writer.
  ~LmdbCacheStore() override;
  LmdbCacheStore(const LmdbCacheStore&) = delete;
  LmdbCacheStore& operator=(const LmdbCacheStore&) = delete;

  std::optional<core::CachedResponse> get(std::string_view key) override;
  void put(std::string_view key, const core::CacheEntryMeta& meta,
           core::CachedResponse response) override;
  size_t invalidate(std::string_view upstream, std::string_view identity_tag,
                    std::string_view path) override;
  size_t invalidatePrefix(std::string_view upstream, std::string_view identity_tag,
                          std::string_view path_prefix) override;
  size_t purge(std::string_view upstream, std::string_view path_prefix) override;
  // Reads the environment: entries, bytes, oldest entry and the counters persisted by every
  // process, plus this process's not yet persisted counts.
  core::CacheStats stats() override;
  bool healthy() override;
  void flush() override;

  // Removes entries past their stale_until now (normally every sweep_interval); returns how many.
  size_t sweepExpired();

 private:
  class Impl;
  explicit LmdbCacheStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace keyway::storage
