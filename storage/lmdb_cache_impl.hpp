// Private to storage/: the state and the methods of LmdbCacheStore, shared by the files that
// implement its jobs: lmdb_cache_store.cpp (the CacheStore face: reads, queued mutations,
// stats), lmdb_cache_env.cpp (environment open, format check, recovery, map size) and
// lmdb_cache_writer.cpp (the writer thread: batching, eviction, expiry, full-map relief).
#pragma once

#ifndef KEYWAY_STORAGE_PRIVATE
#error "private to storage/ (it brings in <lmdb.h>): use the public storage headers' factories"
#endif

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "storage/cache_codec.hpp"
#include "storage/lmdb_cache_store.hpp"
#include "storage/lmdb_env.hpp"
#include "storage/warning.hpp"

namespace keyway::storage {

namespace cache {

inline constexpr size_t kMaxPooledReaders = 64;
// Bounds on one write transaction. LMDB (without MDB_WRITEMAP) mallocs every page a write
// transaction dirties and, after the commit, keeps those pages on the environment's free list
// (me_dpages) until the environment is closed: the largest transaction ever run sets a floor
// under the process's heap for good. So bursts are split into transactions of at most this many
// queued operations, recency updates and swept entries (each touches a few pages in each of the
// seven databases). Small rather than large because LMDB cannot reuse the pages the last
// transaction or two freed, so the free pages a wave of rewrites needs on top of the live ones
// grow with the pages each transaction dirties; much smaller again costs more than it saves
// (more commits, and readers pin more freed pages). bench/README.md, scenario (f), has the
// measurements behind 16.
inline constexpr size_t kMaxOpsPerTxn = 16;
inline constexpr size_t kMaxTouchesPerTxn = 256;
inline constexpr size_t kMaxDeletesPerTxn = 64;
// A periodic sweep runs this many transactions per writer turn, so queued puts are applied in
// between when a large part of the cache expires at once.
inline constexpr int kMaxSweepTxnsPerTurn = 16;
// Recency records kept in memory between two writer batches. The writer is woken early once
// kTouchFlushAt are waiting; beyond kMaxTouches (a writer that cannot keep up) reads are not
// recorded, which only makes the LRU order approximate.
inline constexpr size_t kTouchFlushAt = 16 * kMaxTouchesPerTxn;
inline constexpr size_t kMaxTouches = 64 * kMaxTouchesPerTxn;
// LRU ticks are wall-clock milliseconds shifted left by this much, plus a counter for accesses
// within one millisecond (kept strictly increasing): a tick says when, not only in what order.
inline constexpr unsigned kTickShift = 10;
// Heap a pending put costs beyond the bytes of its strings: the PendingPut, its shared_ptr
// control block, the queue entry and the pending_ map node (a generous estimate, so that
// max_pending_bytes bounds what the pending puts really hold).
inline constexpr size_t kPendingOverhead = 384;
inline constexpr int kMaxOpAttempts = 3;
// Returned by internal functions when there is no environment (degraded).
inline constexpr int kNoEnv = -1;
// At most one warning of a kind (reads, degraded paths) per this period: a failure repeated on
// every request is logged once per period and counted every time.
inline constexpr int64_t kWarnPeriodMs = 10'000;

using Touch = std::pair<Hash, uint64_t>;  // entry hash, access tick

// One rwlock per environment directory, shared by every LmdbCacheStore of this process on it:
// held shared by every transaction, exclusively to remap (adopt a grown map) or replace the
// environment, which LMDB allows only with no transaction live in the process. Keyed by pid too:
// a forked child (keywayctl in tests) must not inherit a lock the parent's writer thread held at
// the fork, as LmdbEnv's registry does for the environments themselves.
std::shared_ptr<std::shared_mutex> envLockFor(const std::string& dir);

}  // namespace cache

// The cache's own vocabulary, for the files that implement LmdbCacheStore.
using core::CachedResponse;
using core::CacheEntryMeta;
using core::CacheStats;
using cache::Decoded;
using cache::decodeInfo;
using cache::decodeRecord;
using cache::decodeU64;
using cache::encodeInfo;
using cache::encodeRecord;
using cache::EntryInfo;
using cache::fromOrderedTime;
using cache::Hash;
using cache::hashFromSuffix;
using cache::HashHasher;
using cache::hashKey;
using cache::hashView;
using cache::head16;
using cache::indexKey;
using cache::kFormatVersion;
using cache::kHashSize;
using cache::kMaxDeletesPerTxn;
using cache::kMaxIndexedPath;
using cache::kMaxOpAttempts;
using cache::kMaxOpsPerTxn;
using cache::kMaxPooledReaders;
using cache::kMaxSweepTxnsPerTurn;
using cache::kMaxTouches;
using cache::kMaxTouchesPerTxn;
using cache::kNoEnv;
using cache::kPendingOverhead;
using cache::kTickShift;
using cache::kTouchFlushAt;
using cache::orderedTime;
using cache::timeKey;
using cache::Touch;
using cache::u64Value;

class LmdbCacheStore::Impl {
 public:
  explicit Impl(LmdbCacheStoreOptions options);
  ~Impl();

  void start() { writer_ = std::thread([this] { writerLoop(); }); }

  std::optional<core::CachedResponse> get(std::string_view key);
  void put(std::string_view key, const core::CacheEntryMeta& meta, core::CachedResponse response);
  size_t invalidate(std::string_view upstream, std::string_view identity_tag,
                    std::string_view path, bool prefix);
  size_t purge(std::string_view upstream, std::string_view path_prefix);
  core::CacheStats stats();
  bool healthy() const { return healthy_.load(std::memory_order_acquire); }
  void flush();
  size_t sweepExpired();

 private:
  struct Dbis {
    MDB_dbi entries = 0, info = 0, by_identity = 0, by_path = 0, lru = 0, expiry = 0, stored = 0,
            meta = 0;
  };

  struct PendingPut {
    std::string key;
    cache::Hash hash{};
    core::CacheEntryMeta meta;
    core::CachedResponse response;
    uint64_t generation = 0;  // the store generation this response belongs to
    uint64_t tick = 0;        // LRU tick of the put (nextTickLocked)
    size_t bytes = 0;         // approximate entry size, for the byte bounds
    size_t cost = 0;          // heap held while pending (bytes, key copy, overheads)
  };

  enum class OpKind { kPut, kDelete, kInvalidate, kPurge, kSweep, kBarrier };
  struct Op {
    OpKind kind = OpKind::kBarrier;
    cache::Hash hash{};
    std::shared_ptr<const PendingPut> put;
    std::string upstream, identity, path;
    bool prefix = false;
    uint64_t tombstone_seq = 0;
    std::vector<cache::Hash> tombstones;
    int attempts = 0;
    size_t result = 0;
    std::shared_ptr<std::promise<size_t>> done;
  };

  // Values read from the meta database at the start of a write transaction and written back.
  struct TxnState {
    uint64_t bytes = 0, generation = 0, tick = 0, evictions = 0, expired = 0;
  };

  // Counters counted in memory and added to the environment's totals by the writer.
  enum Counter { kHits, kMisses, kDropped, kDegraded, kNumCounters };
  static constexpr const char* kCounterNames[kNumCounters] = {"hits", "misses", "dropped",
                                                              "degraded"};

  // A pooled read transaction; returned (reset) to the pool on destruction. Must not outlive
  // the shared env lock under which it was taken.
  class ReadTxn {
   public:
    ReadTxn(Impl* impl, MDB_txn* txn) : impl_(impl), txn_(txn) {}
    ReadTxn(ReadTxn&& o) noexcept : impl_(o.impl_), txn_(std::exchange(o.txn_, nullptr)) {}
    ReadTxn(const ReadTxn&) = delete;
    ReadTxn& operator=(const ReadTxn&) = delete;
    ReadTxn& operator=(ReadTxn&&) = delete;
    ~ReadTxn() {
      if (txn_ != nullptr) impl_->releaseRead(txn_);
    }
    MDB_txn* get() const { return txn_; }
    explicit operator bool() const { return txn_ != nullptr; }

   private:
    Impl* impl_;
    MDB_txn* txn_;
  };

  // --- environment lifecycle (env_lock_ held exclusively, or during construction)
  bool openEnvLocked(bool allow_move_aside);
  core::Status attachEnvLocked(std::shared_ptr<LmdbEnv> env);
  void closeEnvLocked();
  void recover(const std::string& why);

  // --- reads
  ReadTxn acquireRead();
  void releaseRead(MDB_txn* txn);
  void clearReadPoolLocked();
  uint64_t readGeneration(MDB_txn* txn);
  bool readRecord(std::string_view key, const cache::Hash& h,
                  std::optional<core::CachedResponse>* stored, uint64_t* generation,
                  bool* corrupt_record);
  int collect(MDB_txn* txn, std::string_view upstream, std::string_view identity,
              std::string_view path, bool prefix, std::vector<cache::Hash>* out);

  // --- writer
  void writerLoop();
  // Applies `ops` and the recency updates touches[first, last) in one write transaction.
  void runBatch(std::vector<Op>& ops, const std::vector<cache::Touch>& touches, size_t first,
                size_t last);
  int tryBatch(std::vector<Op>& ops, const std::vector<cache::Touch>& touches, size_t first,
               size_t last, const std::array<uint64_t, kNumCounters>& deltas, bool include_puts,
               TxnState* out_state);
  // Runs up to kMaxSweepTxnsPerTurn sweep transactions; true when nothing expired is left (or
  // the store is unusable), false when more remain.
  bool sweepSome();
  int beginWrite(std::shared_lock<std::shared_mutex>& lock, MDB_txn** txn);
  void adoptMapSize();
  int readState(MDB_txn* txn, TxnState* st);
  int writeState(MDB_txn* txn, const TxnState& st,
                 const std::array<uint64_t, kNumCounters>& deltas);
  // `replacing`: the entry is about to be written again under the same hash; if its stored
  // upstream, identity and path are these, its two path-index keys (identical for the new
  // version) are left in place and *kept_indexes is set, so the caller does not rewrite them.
  int deleteEntry(MDB_txn* txn, TxnState* st, const cache::Hash& h, bool* existed,
                  const core::CacheEntryMeta* replacing = nullptr, bool* kept_indexes = nullptr);
  int insertEntry(MDB_txn* txn, TxnState* st, const PendingPut& p);
  // When a read's recency may be left unwritten (see touchEntry).
  struct TouchPolicy {
    uint64_t interval_ticks = 0;  // options_.touch_interval in ticks
    bool far_from_bound = false;  // accounted bytes below half of max_bytes
  };
  int touchEntry(MDB_txn* txn, const cache::Hash& h, uint64_t tick, const TouchPolicy& policy);
  int evictTo(MDB_txn* txn, TxnState* st, uint64_t target);
  int sweep(MDB_txn* txn, TxnState* st, int64_t now_ms, size_t* removed);
  int clearAll(MDB_txn* txn, TxnState* st);
  int purgeTxn(MDB_txn* txn, TxnState* st, std::string_view upstream, std::string_view prefix,
               size_t* count);
  int smallWrite(const std::function<int(MDB_txn*, TxnState*)>& fn);
  bool growMap();
  bool makeRoom(double fraction);
  void finishBatch(std::vector<Op>& ops, bool committed, bool puts_applied, uint64_t generation);
  void syncIfDirty();

  // --- misc
  int64_t nowMs() const;
  void warn(const std::string& message);
  void warnRateLimited(const std::string& message);
  std::function<void(const std::string&)> warner() {
    return [this](const std::string& message) { warn(message); };
  }
  // A storage failure survived: counted in stats().degraded_events and logged (rate-limited).
  void degraded(const std::string& message) {
    count(kDegraded);
    warnRateLimited(message);
  }
  // Asks the writer to replace the damaged environment (`reason` goes into its warning).
  void requestRecovery(const std::string& reason);
  // The next LRU tick (state_mu_ held): from the clock, strictly increasing, and above every
  // tick already in the environment.
  uint64_t nextTickLocked(int64_t now_ms) {
    const uint64_t from_clock = static_cast<uint64_t>(std::max<int64_t>(now_ms, 0))
                                << cache::kTickShift;
    last_tick_ = std::max(last_tick_ + 1, from_clock);
    return last_tick_;
  }
  void count(Counter c, uint64_t n = 1) {
    local_[c].fetch_add(n, std::memory_order_relaxed);
  }
  void enqueue(Op op);
  size_t submitAndWait(Op op);

  const LmdbCacheStoreOptions options_;
  const size_t map_size_;
  std::shared_ptr<std::shared_mutex> env_lock_;

  // Guarded by env_lock_ (written only with it held exclusively, or before the writer starts).
  std::shared_ptr<LmdbEnv> env_;
  Dbis dbis_;

  std::atomic<bool> healthy_{false};
  std::atomic<bool> resize_requested_{false};
  WarnLimiter warn_limiter_{cache::kWarnPeriodMs};

  std::mutex pool_mu_;
  std::vector<MDB_txn*> pool_;

  // In-memory state shared by request threads and the writer.
  std::mutex state_mu_;
  std::condition_variable cv_;
  std::deque<Op> queue_;
  cache::HashMap<std::shared_ptr<const PendingPut>> pending_;
  size_t pending_bytes_ = 0;
  cache::HashMap<uint64_t> tombstones_;  // hash -> seq of its invalidation
  // Bumped (under state_mu_) whenever a pending put or a tombstone of a key in the stripe is
  // retired, i.e. after the commit that wrote it. get() reads the environment before it looks
  // at pending_ and tombstones_: when its stripe moved in between, its snapshot may predate the
  // commit. Striped so that other keys' commits rarely make a read try again.
  static constexpr size_t kRetiredStripes = 4096;
  static size_t stripeOf(const cache::Hash& h) {
    return ((size_t{h[0]} << 8) | h[1]) % kRetiredStripes;
  }
  std::array<std::atomic<uint64_t>, kRetiredStripes> retired_epochs_{};
  cache::HashMap<uint64_t> touches_;  // hash -> latest access tick
  uint64_t seq_ = 0;        // invalidation order (tombstones)
  uint64_t last_tick_ = 0;  // the last LRU tick handed out (nextTickLocked)
  uint64_t observed_generation_ = 0;
  bool stop_ = false;
  bool recovery_requested_ = false;
  std::string recovery_reason_;

  std::array<std::atomic<uint64_t>, kNumCounters> local_{};
  std::array<uint64_t, kNumCounters> flushed_{};  // part of local_ already in the environment
  std::mutex flushed_mu_;

  // Writer-thread only.
  bool dirty_ = false;
  bool sweep_unfinished_ = false;  // a periodic sweep stopped at kMaxSweepTxnsPerTurn
  std::chrono::steady_clock::time_point last_sync_, last_sweep_, last_recovery_;

  std::thread writer_;
};

}  // namespace keyway::storage
