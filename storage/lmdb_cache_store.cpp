// LmdbCacheStore's face: the CacheStore calls (reads from pooled read transactions; puts,
// invalidations and purges queued for the writer), stats, and the store's lifetime. Design:
// storage/lmdb_cache_store.hpp; behaviour: docs/cache.md.
#include "storage/lmdb_cache_store.hpp"

#include <unordered_set>

#include "storage/crypto.hpp"
#include "storage/lmdb_cache_impl.hpp"

namespace keyway::storage {

LmdbCacheStore::Impl::Impl(LmdbCacheStoreOptions options)
    : options_(std::move(options)),
      map_size_(options_.map_size != 0 ? options_.map_size
                                       : options_.max_bytes * 2 + (size_t{64} << 20)),
      env_lock_(cache::envLockFor(options_.dir)) {
  // The key hash (BLAKE2b) needs no random source, so a failed init costs only sodium's fast
  // paths and cannot be reported anywhere useful: nothing is logged or counted for it.
  (void)initSodium();
  const auto now = std::chrono::steady_clock::now();
  last_sync_ = last_sweep_ = last_recovery_ = now;
  std::unique_lock<std::shared_mutex> lock(*env_lock_);
  if (!openEnvLocked(/*allow_move_aside=*/true)) {
    warn("response cache disabled: cannot open or recreate " + options_.dir +
         "; requests are forwarded without caching; retrying every " +
         std::to_string(options_.recovery_interval.count()) + " ms");
    count(kDegraded);
  }
}

LmdbCacheStore::Impl::~Impl() {
  {
    std::lock_guard<std::mutex> lock(state_mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (writer_.joinable()) writer_.join();
  std::unique_lock<std::shared_mutex> lock(*env_lock_);
  if (env_) {
    // Logged only: the counters die with this store, and the environment stays consistent
    // (a cache write is never durable before its sync anyway).
    if (auto synced = env_->sync(true); !synced) warn(synced.error().message);
  }
  closeEnvLocked();
}

int64_t LmdbCacheStore::Impl::nowMs() const {
  const auto now = options_.clock ? options_.clock->systemNow() : std::chrono::system_clock::now();
  return std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
}

void LmdbCacheStore::Impl::warn(const std::string& message) {
  if (options_.warn) {
    options_.warn(message);
  } else {
    warnOnStderr("cache", message);
  }
}

void LmdbCacheStore::Impl::warnRateLimited(const std::string& message) {
  if (warn_limiter_.allow(nowMs())) warn(message);
}

// ---------------------------------------------------------------------------------------------
// Reads

LmdbCacheStore::Impl::ReadTxn LmdbCacheStore::Impl::acquireRead() {
  MDB_txn* txn = nullptr;
  {
    std::lock_guard<std::mutex> lock(pool_mu_);
    if (!pool_.empty()) {
      txn = pool_.back();
      pool_.pop_back();
    }
  }
  int rc = MDB_SUCCESS;
  if (txn != nullptr) {
    rc = mdb_txn_renew(txn);
    if (rc == MDB_SUCCESS) return ReadTxn(this, txn);
    mdb_txn_abort(txn);
    txn = nullptr;
  }
  if (rc != MDB_MAP_RESIZED) {
    rc = mdb_txn_begin(env_->raw(), nullptr, MDB_RDONLY, &txn);
    if (rc == MDB_READERS_FULL) {
      // Slots of crashed processes are reclaimed by mdb_reader_check; then try once more (a
      // failed check shows as the retry's failure, counted and logged below).
      int dead = 0;
      mdb_reader_check(env_->raw(), &dead);
      rc = mdb_txn_begin(env_->raw(), nullptr, MDB_RDONLY, &txn);
    }
  }
  if (rc == MDB_SUCCESS) return ReadTxn(this, txn);
  count(kDegraded);
  if (rc == MDB_MAP_RESIZED) {
    // Another process grew the map; the writer adopts the new size (needs exclusive access).
    resize_requested_.store(true, std::memory_order_relaxed);
    cv_.notify_all();
  } else if (isCorruption(rc)) {
    requestRecovery(mdb_strerror(rc));
  }
  warnRateLimited(lmdbError(rc, "cache read", options_.dir).message +
                  " (served as a miss)");
  return ReadTxn(this, nullptr);
}

void LmdbCacheStore::Impl::releaseRead(MDB_txn* txn) {
  mdb_txn_reset(txn);
  {
    std::lock_guard<std::mutex> lock(pool_mu_);
    if (pool_.size() < kMaxPooledReaders) {
      pool_.push_back(txn);
      return;
    }
  }
  mdb_txn_abort(txn);
}

void LmdbCacheStore::Impl::clearReadPoolLocked() {
  std::lock_guard<std::mutex> lock(pool_mu_);
  for (MDB_txn* txn : pool_) mdb_txn_abort(txn);
  pool_.clear();
}

// 0 when the counter cannot be read: every pending put of another generation then stays
// unserved, which is safe.
uint64_t LmdbCacheStore::Impl::readGeneration(MDB_txn* txn) {
  std::string_view v;
  const int rc = rawGet(txn, dbis_.meta, "gen", &v);
  if (rc == MDB_SUCCESS) return decodeU64(v);
  if (rc != MDB_NOTFOUND) degraded(lmdbError(rc, "cache generation read", options_.dir).message);
  return 0;
}

// Hashes of the entries of (upstream, identity) whose path is `path` (or starts with it).
int LmdbCacheStore::Impl::collect(MDB_txn* txn, std::string_view upstream,
                                  std::string_view identity, std::string_view path, bool prefix,
                                  std::vector<Hash>* out) {
  std::string key_prefix = head16({upstream, identity});
  key_prefix += path.substr(0, kMaxIndexedPath);
  if (!prefix) key_prefix += '\0';
  return scanPrefix(txn, dbis_.by_identity, key_prefix,
                    [&](std::string_view key, std::string_view full_path) {
                      const bool match = prefix ? full_path.substr(0, path.size()) == path
                                                : full_path == path;
                      if (match) out->push_back(hashFromSuffix(key));
                      return true;
                    });
}

// One read of `key`'s record from a fresh snapshot. Returns whether the environment answered
// (found or not found); *stored holds the response when found.
bool LmdbCacheStore::Impl::readRecord(std::string_view key, const Hash& h,
                                      std::optional<CachedResponse>* stored,
                                      uint64_t* generation, bool* corrupt_record) {
  // Never wait: the lock is exclusive only while the map is replaced or remapped.
  std::shared_lock<std::shared_mutex> lock(*env_lock_, std::try_to_lock);
  if (!lock.owns_lock() || !env_) return false;
  ReadTxn txn = acquireRead();
  if (!txn) return false;
  *generation = readGeneration(txn.get());
  std::string_view value;
  const int rc = rawGet(txn.get(), dbis_.entries, hashView(h), &value);
  if (rc == MDB_SUCCESS) {
    CachedResponse r;
    const Decoded d = decodeRecord(value, key, &r);
    if (d == Decoded::kMatch) *stored = std::move(r);
    *corrupt_record = d == Decoded::kCorrupt;
    return true;
  }
  if (rc == MDB_NOTFOUND) return true;
  count(kDegraded);
  warnRateLimited(lmdbError(rc, "cache read", options_.dir).message);
  if (isCorruption(rc)) requestRecovery(mdb_strerror(rc));
  return false;
}

std::optional<CachedResponse> LmdbCacheStore::Impl::get(std::string_view key) {
  if (!healthy()) {
    count(kMisses);
    return std::nullopt;
  }
  const Hash h = hashKey(key);
  const int64_t now = nowMs();
  std::shared_ptr<const PendingPut> pending;
  std::optional<CachedResponse> stored;
  bool hit = false;
  bool wake_writer = false;
  for (int attempt = 0;; ++attempt) {
    stored.reset();
    uint64_t generation = 0;
    bool corrupt_record = false;
    // Read before the snapshot is taken: see the retired-epoch check below.
    const uint64_t retired_epoch = retired_epochs_[stripeOf(h)].load(std::memory_order_acquire);
    const bool db_ok = readRecord(key, h, &stored, &generation, &corrupt_record);
    if (corrupt_record) {
      degraded("response cache at " + options_.dir +
               ": a damaged entry was served as a miss and is being removed");
      Op op;
      op.kind = OpKind::kDelete;
      op.hash = h;
      enqueue(std::move(op));
    }
    std::lock_guard<std::mutex> lock(state_mu_);
    if (db_ok) observed_generation_ = generation;
    auto it = pending_.find(h);
    if (db_ok && it != pending_.end() && it->second->generation == generation &&
        it->second->key == key) {
      pending = it->second;
      hit = pending->response.stale_until_unix_ms > now;
    } else if (tombstones_.count(h) != 0) {
      stored.reset();
    } else if (retired_epochs_[stripeOf(h)].load(std::memory_order_relaxed) != retired_epoch) {
      // A put or an invalidation was committed and left pending_/tombstones_ after our snapshot
      // was taken: the snapshot may lack that put (a miss, or an older stale copy, right after
      // the response was stored) or still hold an invalidated entry. Read again from a newer
      // snapshot; if commits keep landing there, a miss (never a possibly invalidated entry).
      stored.reset();
      if (attempt < 3) continue;
    } else {
      hit = stored && stored->stale_until_unix_ms > now;
    }
    if (hit && touches_.size() < kMaxTouches) {
      touches_[h] = nextTickLocked(now);
      wake_writer = touches_.size() == kTouchFlushAt;  // once, not on every read past it
    }
    break;
  }
  if (wake_writer) cv_.notify_all();
  if (!hit) {
    count(kMisses);
    return std::nullopt;
  }
  count(kHits);
  if (pending) return pending->response;  // copied outside the lock; PendingPut is immutable
  return stored;
}

// ---------------------------------------------------------------------------------------------
// Request-path mutations and stats

void LmdbCacheStore::Impl::enqueue(Op op) {
  {
    std::lock_guard<std::mutex> lock(state_mu_);
    queue_.push_back(std::move(op));
  }
  cv_.notify_all();
}

size_t LmdbCacheStore::Impl::submitAndWait(Op op) {
  auto done = std::make_shared<std::promise<size_t>>();
  auto result = done->get_future();
  op.done = done;
  {
    std::lock_guard<std::mutex> lock(state_mu_);
    if (stop_) return 0;
    queue_.push_back(std::move(op));
  }
  cv_.notify_all();
  return result.get();
}

void LmdbCacheStore::Impl::put(std::string_view key, const CacheEntryMeta& meta,
                               CachedResponse response) {
  if (!healthy() || response.stale_until_unix_ms <= nowMs()) {
    count(kDropped);
    return;
  }
  auto p = std::make_shared<PendingPut>();
  p->bytes = 128 + key.size() + response.reason.size() + response.body.size() +
             meta.upstream.size() + meta.path.size() + meta.identity_tag.size();
  for (const auto& header : response.headers) p->bytes += 8 + header.name.size() + header.value.size();
  // Larger than the whole bound (it would evict everything) or than a quarter of the map
  // (it could not be written next to the rest): forward it, do not store it.
  if (p->bytes > options_.max_bytes || p->bytes > map_size_ / 4) {
    count(kDropped);
    return;
  }
  p->cost = p->bytes + key.size() + kPendingOverhead +
            response.headers.size() * sizeof(core::Header);
  p->key = std::string(key);
  p->hash = hashKey(key);
  p->meta = meta;
  p->response = std::move(response);
  {
    std::lock_guard<std::mutex> lock(state_mu_);
    // Bounded (max_pending_bytes), except that one put is always accepted while nothing is
    // pending, so an entry larger than the pending bound can still be stored.
    if (stop_ || (!pending_.empty() && pending_bytes_ + p->cost > options_.max_pending_bytes)) {
      count(kDropped);
      return;
    }
    p->tick = nextTickLocked(nowMs());
    p->generation = observed_generation_;
    auto& slot = pending_[p->hash];
    if (slot) pending_bytes_ -= slot->cost;  // superseded: the writer skips the older put
    slot = p;
    pending_bytes_ += p->cost;
    Op op;
    op.kind = OpKind::kPut;
    op.hash = p->hash;
    op.put = std::move(p);
    queue_.push_back(std::move(op));
  }
  cv_.notify_all();
}

size_t LmdbCacheStore::Impl::invalidate(std::string_view upstream, std::string_view identity_tag,
                                        std::string_view path, bool prefix) {
  if (!healthy()) return 0;
  std::unordered_set<Hash, HashHasher> matched;
  // Pending puts first, then the committed entries from a snapshot taken after: a put leaves
  // pending_ only once committed, so every put accepted before this call is found in one or
  // the other (the other order would miss a put committed between the two looks).
  {
    std::lock_guard<std::mutex> lock(state_mu_);
    for (auto it = pending_.begin(); it != pending_.end();) {
      const CacheEntryMeta& m = it->second->meta;
      const bool match = m.upstream == upstream && m.identity_tag == identity_tag &&
                         (prefix ? std::string_view(m.path).substr(0, path.size()) == path
                                 : m.path == path);
      if (match) {
        matched.insert(it->first);
        pending_bytes_ -= it->second->cost;
        it = pending_.erase(it);  // its queued put is skipped by the writer
      } else {
        ++it;
      }
    }
  }
  // The committed entries (a read transaction, no waiting), tombstoned below so that get()
  // stops serving them at once; the writer resolves the same query again inside its
  // transaction, which also catches entries committed in between.
  {
    std::vector<Hash> found;
    std::shared_lock<std::shared_mutex> lock(*env_lock_, std::try_to_lock);
    if (lock.owns_lock() && env_) {
      ReadTxn txn = acquireRead();
      if (txn) {
        const int rc = collect(txn.get(), upstream, identity_tag, path, prefix, &found);
        if (rc != MDB_SUCCESS) {
          count(kDegraded);
          warnRateLimited(lmdbError(rc, "cache invalidation lookup", options_.dir).message);
        }
      }
    }
    matched.insert(found.begin(), found.end());
  }
  Op op;
  op.kind = OpKind::kInvalidate;
  op.upstream = std::string(upstream);
  op.identity = std::string(identity_tag);
  op.path = std::string(path);
  op.prefix = prefix;
  {
    std::lock_guard<std::mutex> lock(state_mu_);
    op.tombstone_seq = ++seq_;
    for (const Hash& h : matched) {
      tombstones_[h] = op.tombstone_seq;
      op.tombstones.push_back(h);
    }
    queue_.push_back(std::move(op));
  }
  cv_.notify_all();
  return matched.size();
}

size_t LmdbCacheStore::Impl::purge(std::string_view upstream, std::string_view path_prefix) {
  if (!healthy()) return 0;
  Op op;
  op.kind = OpKind::kPurge;
  op.upstream = std::string(upstream);
  op.path = std::string(path_prefix);
  return submitAndWait(std::move(op));
}

void LmdbCacheStore::Impl::flush() {
  Op op;
  op.kind = OpKind::kBarrier;
  submitAndWait(std::move(op));
}

size_t LmdbCacheStore::Impl::sweepExpired() {
  size_t total = 0;
  while (true) {
    Op op;
    op.kind = OpKind::kSweep;
    const size_t removed = submitAndWait(std::move(op));
    total += removed;
    if (removed < kMaxDeletesPerTxn) return total;
  }
}

CacheStats LmdbCacheStore::Impl::stats() {
  CacheStats s;
  s.max_bytes = options_.max_bytes;
  s.healthy = healthy();
  std::array<uint64_t, kNumCounters> persisted{};
  {
    std::shared_lock<std::shared_mutex> lock(*env_lock_);
    if (env_) {
      ReadTxn txn = acquireRead();
      if (txn) {
        int failed = MDB_SUCCESS;  // the first failure, reported once below
        const auto note = [&](int rc) {
          if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND && failed == MDB_SUCCESS) failed = rc;
          return rc;
        };
        MDB_stat st{};
        if (note(mdb_stat(txn.get(), dbis_.entries, &st)) == MDB_SUCCESS) s.entries = st.ms_entries;
        std::string_view v;
        const auto meta = [&](const char* name) -> uint64_t {
          return note(rawGet(txn.get(), dbis_.meta, name, &v)) == MDB_SUCCESS ? decodeU64(v) : 0;
        };
        s.bytes = meta("bytes");
        s.evictions = meta("evictions");
        s.expired = meta("expired");
        s.generation = meta("gen");
        for (int c = 0; c < kNumCounters; ++c) persisted[c] = meta(kCounterNames[c]);
        std::string first;
        if (note(firstKey(txn.get(), dbis_.stored, &first)) == MDB_SUCCESS && first.size() >= 8) {
          s.oldest_stored_unix_ms = fromOrderedTime(decodeU64(first.substr(0, 8)));
        }
        if (failed != MDB_SUCCESS) {
          degraded(lmdbError(failed, "cache stats read", options_.dir).message +
                   " (those figures read as 0)");
        }
      }
    }
  }
  std::array<uint64_t, kNumCounters> total{};
  {
    std::lock_guard<std::mutex> lock(flushed_mu_);
    for (int c = 0; c < kNumCounters; ++c) {
      total[c] = persisted[c] + (local_[c].load(std::memory_order_relaxed) - flushed_[c]);
    }
  }
  s.hits = total[kHits];
  s.misses = total[kMisses];
  s.dropped_writes = total[kDropped];
  s.degraded_events = total[kDegraded];
  return s;
}

// =============================================================================================

std::unique_ptr<LmdbCacheStore> LmdbCacheStore::open(LmdbCacheStoreOptions options) {
  auto impl = std::make_unique<Impl>(std::move(options));
  impl->start();
  return std::unique_ptr<LmdbCacheStore>(new LmdbCacheStore(std::move(impl)));
}

LmdbCacheStore::LmdbCacheStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
LmdbCacheStore::~LmdbCacheStore() = default;

std::optional<CachedResponse> LmdbCacheStore::get(std::string_view key) { return impl_->get(key); }
void LmdbCacheStore::put(std::string_view key, const CacheEntryMeta& meta,
                         CachedResponse response) {
  impl_->put(key, meta, std::move(response));
}
size_t LmdbCacheStore::invalidate(std::string_view upstream, std::string_view identity_tag,
                                  std::string_view path) {
  return impl_->invalidate(upstream, identity_tag, path, false);
}
size_t LmdbCacheStore::invalidatePrefix(std::string_view upstream, std::string_view identity_tag,
                                        std::string_view path_prefix) {
  return impl_->invalidate(upstream, identity_tag, path_prefix, true);
}
size_t LmdbCacheStore::purge(std::string_view upstream, std::string_view path_prefix) {
  return impl_->purge(upstream, path_prefix);
}
CacheStats LmdbCacheStore::stats() { return impl_->stats(); }
bool LmdbCacheStore::healthy() { return impl_->healthy(); }
void LmdbCacheStore::flush() { impl_->flush(); }
size_t LmdbCacheStore::sweepExpired() { return impl_->sweepExpired(); }

}  // namespace keyway::storage
