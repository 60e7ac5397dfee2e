// LMDB-backed response cache: hashed records, secondary indexes, one batching writer thread,
// pooled read transactions, LRU eviction, expiry sweeps, and recovery from a full or corrupt map.
#include "storage/lmdb_cache_store.hpp"

#include <dirent.h>
#include <errno.h>
#include <lmdb.h>
#include <malloc.h>
#include <sodium.h>
#include <stdio.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <shared_mutex>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "storage/file_util.hpp"
#include "storage/lmdb_env.hpp"

namespace keyway::storage {
namespace {

using core::CachedResponse;
using core::CacheEntryMeta;
using core::CacheStats;

constexpr std::string_view kFormatVersion = "keyway-cache-1";
constexpr size_t kHashSize = 32;
constexpr size_t kHeadSize = 16;
// Index keys hold at most this much of the path (LMDB keys are <= 511 bytes); longer paths are
// still found: the full path is the index value and every match is verified against it.
constexpr size_t kMaxIndexedPath = 400;
constexpr size_t kMaxPooledReaders = 64;
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
constexpr size_t kMaxOpsPerTxn = 16;
constexpr size_t kMaxTouchesPerTxn = 256;
constexpr size_t kMaxDeletesPerTxn = 64;
// A periodic sweep runs this many transactions per writer turn, so queued puts are applied in
// between when a large part of the cache expires at once.
constexpr int kMaxSweepTxnsPerTurn = 16;
// Recency records kept in memory between two writer batches. The writer is woken early once
// kTouchFlushAt are waiting; beyond kMaxTouches (a writer that cannot keep up) reads are not
// recorded, which only makes the LRU order approximate.
constexpr size_t kTouchFlushAt = 16 * kMaxTouchesPerTxn;
constexpr size_t kMaxTouches = 64 * kMaxTouchesPerTxn;
// LRU ticks are wall-clock milliseconds shifted left by this much, plus a counter for accesses
// within one millisecond (kept strictly increasing): a tick says when, not only in what order.
constexpr unsigned kTickShift = 10;
// Heap a pending put costs beyond the bytes of its strings: the PendingPut, its shared_ptr
// control block, the queue entry and the pending_ map node (a generous estimate, so that
// max_pending_bytes bounds what the pending puts really hold).
constexpr size_t kPendingOverhead = 384;
constexpr int kMaxOpAttempts = 3;
constexpr unsigned char kRecordVersion = 1;
constexpr unsigned char kMetaVersion = 1;
// Returned by internal functions when there is no environment (degraded).
constexpr int kNoEnv = -1;

// ---------------------------------------------------------------------------------------------
// Hashes and byte encodings

using Hash = std::array<unsigned char, kHashSize>;
using Touch = std::pair<Hash, uint64_t>;  // entry hash, access tick
struct HashHasher {
  size_t operator()(const Hash& h) const noexcept {
    size_t v = 0;
    std::memcpy(&v, h.data(), sizeof v);
    return v;
  }
};

void ensureSodium() {
  static const bool initialised = [] { return sodium_init() >= 0; }();
  (void)initialised;  // BLAKE2b needs no random source; init only makes sodium pick fast paths
}

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
// Big-endian with the sign bit flipped, so signed times sort correctly as bytes.
uint64_t orderedTime(int64_t t) { return static_cast<uint64_t>(t) ^ (uint64_t{1} << 63); }
int64_t fromOrderedTime(uint64_t v) { return static_cast<int64_t>(v ^ (uint64_t{1} << 63)); }

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

// A 16-byte BLAKE2b digest of length-prefixed fields: the fixed-size head of index keys.
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

// The record: the full key (compared on read), then the response.
std::string encodeRecord(std::string_view key, const CachedResponse& r) {
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

enum class Decoded { kMatch, kOtherKey, kCorrupt };

Decoded decodeRecord(std::string_view value, std::string_view key, CachedResponse* out) {
  ByteReader r(value);
  if (r.u8() != kRecordVersion) return Decoded::kCorrupt;
  const std::string_view stored_key = r.bytes();
  if (!r.ok()) return Decoded::kCorrupt;
  if (stored_key != key) return Decoded::kOtherKey;  // a BLAKE2b collision: never serve it
  CachedResponse resp;
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

// Per-entry bookkeeping (small, so recency updates never rewrite the large record).
struct EntryInfo {
  uint64_t tick = 0;  // LRU order
  int64_t stored = 0;
  int64_t stale_until = 0;
  uint64_t bytes = 0;
  std::string upstream, identity, path;
};

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

// ---------------------------------------------------------------------------------------------
// Raw LMDB helpers (the writer and the read pool manage their own transactions; see Impl).

MDB_val toVal(std::string_view s) { return MDB_val{s.size(), const_cast<char*>(s.data())}; }
std::string_view fromVal(const MDB_val& v) {
  return std::string_view(static_cast<const char*>(v.mv_data), v.mv_size);
}

int rawGet(MDB_txn* txn, MDB_dbi dbi, std::string_view key, std::string_view* out) {
  MDB_val k = toVal(key);
  MDB_val v{};
  const int rc = mdb_get(txn, dbi, &k, &v);
  if (rc == MDB_SUCCESS) *out = fromVal(v);
  return rc;
}

int rawPut(MDB_txn* txn, MDB_dbi dbi, std::string_view key, std::string_view value) {
  MDB_val k = toVal(key);
  MDB_val v = toVal(value);
  return mdb_put(txn, dbi, &k, &v, 0);
}

// Deletes `key`; absent is not an error.
int rawDel(MDB_txn* txn, MDB_dbi dbi, std::string_view key) {
  MDB_val k = toVal(key);
  const int rc = mdb_del(txn, dbi, &k, nullptr);
  return rc == MDB_NOTFOUND ? MDB_SUCCESS : rc;
}

struct CursorCloser {
  void operator()(MDB_cursor* c) const { mdb_cursor_close(c); }
};
using CursorPtr = std::unique_ptr<MDB_cursor, CursorCloser>;

// Calls fn(key, value) for each record whose key starts with `prefix` ("" = all), until fn
// returns false. Returns an LMDB code (MDB_SUCCESS at the end of the range).
template <class Fn>
int scanPrefix(MDB_txn* txn, MDB_dbi dbi, std::string_view prefix, Fn&& fn) {
  MDB_cursor* raw = nullptr;
  int rc = mdb_cursor_open(txn, dbi, &raw);
  if (rc != MDB_SUCCESS) return rc;
  CursorPtr cursor(raw);
  MDB_val k = toVal(prefix);
  MDB_val v{};
  rc = mdb_cursor_get(raw, &k, &v, prefix.empty() ? MDB_FIRST : MDB_SET_RANGE);
  while (rc == MDB_SUCCESS) {
    const std::string_view key = fromVal(k);
    if (key.substr(0, prefix.size()) != prefix) break;
    if (!fn(key, fromVal(v))) break;
    rc = mdb_cursor_get(raw, &k, &v, MDB_NEXT);
  }
  return rc == MDB_NOTFOUND ? MDB_SUCCESS : rc;
}

// The first key of `dbi`, or MDB_NOTFOUND.
int firstKey(MDB_txn* txn, MDB_dbi dbi, std::string* out) {
  MDB_cursor* raw = nullptr;
  int rc = mdb_cursor_open(txn, dbi, &raw);
  if (rc != MDB_SUCCESS) return rc;
  CursorPtr cursor(raw);
  MDB_val k{}, v{};
  rc = mdb_cursor_get(raw, &k, &v, MDB_FIRST);
  if (rc == MDB_SUCCESS) *out = std::string(fromVal(k));
  return rc;
}

bool isCorruption(int rc) {
  return rc == MDB_CORRUPTED || rc == MDB_PAGE_NOTFOUND || rc == MDB_PANIC ||
         rc == MDB_INVALID || rc == MDB_VERSION_MISMATCH || rc == MDB_BAD_TXN;
}

// One rwlock per environment directory, shared by every LmdbCacheStore of this process on it:
// held shared by every transaction, exclusively to remap (adopt a grown map) or replace the
// environment, which LMDB allows only with no transaction live in the process. Keyed by pid too:
// a forked child (keywayctl in tests) must not inherit a lock the parent's writer thread held at
// the fork, as LmdbEnv's registry does for the environments themselves.
std::shared_ptr<std::shared_mutex> envLockFor(const std::string& dir) {
  static std::mutex mu;
  static auto* locks = new std::map<std::string, std::weak_ptr<std::shared_mutex>>();
  std::lock_guard<std::mutex> guard(mu);
  auto& weak = (*locks)[std::to_string(::getpid()) + ":" + dir];
  if (auto existing = weak.lock()) return existing;
  auto created = std::make_shared<std::shared_mutex>();
  weak = created;
  return created;
}

std::string jsonEscape(std::string_view s) {
  std::string out;
  for (const char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(static_cast<unsigned char>(c)));
      out += buf;
    } else {
      out += c;
    }
  }
  return out;
}

// Moves a damaged environment aside (never deletes it outright), first removing copies that
// earlier recoveries moved aside, so repeated failures cannot fill the disk. Only LMDB's own
// two files are ever unlinked.
core::Status moveAside(const std::string& dir, int64_t now_ms) {
  // Only ever an LMDB environment directory: a misconfigured path (a regular file, or a
  // directory holding anything else, e.g. the credential store next to master.key) is left
  // alone and the cache stays degraded.
  if (DIR* d = ::opendir(dir.c_str())) {
    bool only_lmdb = true;
    while (dirent* e = ::readdir(d)) {
      const std::string_view name = e->d_name;
      if (name != "." && name != ".." && name != "data.mdb" && name != "lock.mdb") {
        only_lmdb = false;
      }
    }
    ::closedir(d);
    if (!only_lmdb) {
      return core::Error::make(core::ErrorCode::kInternal,
                               "not moving " + dir +
                                   " aside: it holds files other than data.mdb and lock.mdb "
                                   "(is cache.dir pointing at another directory?)");
    }
  } else if (errno != ENOENT) {
    return errnoError(core::ErrorCode::kInternal, "not moving aside (not a directory?)", dir,
                      errno);
  }
  const std::string parent = parentDirectory(dir);
  const size_t slash = dir.find_last_of('/');
  const std::string base = slash == std::string::npos ? dir : dir.substr(slash + 1);
  const std::string marker = base + ".corrupt-";
  if (DIR* d = ::opendir(parent.c_str())) {
    std::vector<std::string> old;
    while (dirent* e = ::readdir(d)) {
      const std::string name = e->d_name;
      if (name.compare(0, marker.size(), marker) == 0) old.push_back(parent + "/" + name);
    }
    ::closedir(d);
    for (const auto& path : old) {
      ::unlink((path + "/data.mdb").c_str());
      ::unlink((path + "/lock.mdb").c_str());
      ::rmdir(path.c_str());
    }
  }
  const std::string target = dir + ".corrupt-" + std::to_string(now_ms);
  if (::rename(dir.c_str(), target.c_str()) != 0 && errno != ENOENT) {
    return errnoError(core::ErrorCode::kInternal, "cannot move the damaged cache aside:", dir,
                      errno);
  }
  return core::okStatus();
}

}  // namespace

// =============================================================================================

class LmdbCacheStore::Impl {
 public:
  explicit Impl(LmdbCacheStoreOptions options);
  ~Impl();

  void start() { writer_ = std::thread([this] { writerLoop(); }); }

  std::optional<CachedResponse> get(std::string_view key);
  void put(std::string_view key, const CacheEntryMeta& meta, CachedResponse response);
  size_t invalidate(std::string_view upstream, std::string_view identity_tag,
                    std::string_view path, bool prefix);
  size_t purge(std::string_view upstream, std::string_view path_prefix);
  CacheStats stats();
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
    Hash hash{};
    CacheEntryMeta meta;
    CachedResponse response;
    uint64_t generation = 0;  // the store generation this response belongs to
    uint64_t tick = 0;        // LRU tick of the put (nextTickLocked)
    size_t bytes = 0;         // approximate entry size, for the byte bounds
    size_t cost = 0;          // heap held while pending (bytes, key copy, overheads)
  };

  enum class OpKind { kPut, kDelete, kInvalidate, kPurge, kSweep, kBarrier };
  struct Op {
    OpKind kind = OpKind::kBarrier;
    Hash hash{};
    std::shared_ptr<const PendingPut> put;
    std::string upstream, identity, path;
    bool prefix = false;
    uint64_t tombstone_seq = 0;
    std::vector<Hash> tombstones;
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
  bool readRecord(std::string_view key, const Hash& h, std::optional<CachedResponse>* stored,
                  uint64_t* generation, bool* corrupt_record);
  int collect(MDB_txn* txn, std::string_view upstream, std::string_view identity,
              std::string_view path, bool prefix, std::vector<Hash>* out);

  // --- writer
  void writerLoop();
  // Applies `ops` and the recency updates touches[first, last) in one write transaction.
  void runBatch(std::vector<Op>& ops, const std::vector<Touch>& touches, size_t first,
                size_t last);
  int tryBatch(std::vector<Op>& ops, const std::vector<Touch>& touches, size_t first, size_t last,
               const std::array<uint64_t, kNumCounters>& deltas, bool include_puts,
               TxnState* out_state);
  // Runs up to kMaxSweepTxnsPerTurn sweep transactions; true when nothing expired is left (or
  // the store is unusable), false when more remain.
  bool sweepSome();
  void releaseFreeHeap();
  int beginWrite(std::shared_lock<std::shared_mutex>& lock, MDB_txn** txn);
  void adoptMapSize();
  int readState(MDB_txn* txn, TxnState* st);
  int writeState(MDB_txn* txn, const TxnState& st,
                 const std::array<uint64_t, kNumCounters>& deltas);
  // `replacing`: the entry is about to be written again under the same hash; if its stored
  // upstream, identity and path are these, its two path-index keys (identical for the new
  // version) are left in place and *kept_indexes is set, so the caller does not rewrite them.
  int deleteEntry(MDB_txn* txn, TxnState* st, const Hash& h, bool* existed,
                  const CacheEntryMeta* replacing = nullptr, bool* kept_indexes = nullptr);
  int insertEntry(MDB_txn* txn, TxnState* st, const PendingPut& p);
  // When a read's recency may be left unwritten (see touchEntry).
  struct TouchPolicy {
    uint64_t interval_ticks = 0;  // options_.touch_interval in ticks
    bool far_from_bound = false;  // accounted bytes below half of max_bytes
  };
  int touchEntry(MDB_txn* txn, const Hash& h, uint64_t tick, const TouchPolicy& policy);
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
  // The next LRU tick (state_mu_ held): from the clock, strictly increasing, and above every
  // tick already in the environment.
  uint64_t nextTickLocked(int64_t now_ms) {
    const uint64_t from_clock = static_cast<uint64_t>(std::max<int64_t>(now_ms, 0)) << kTickShift;
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
  std::atomic<int64_t> last_read_warn_ms_{0};

  std::mutex pool_mu_;
  std::vector<MDB_txn*> pool_;

  // In-memory state shared by request threads and the writer.
  std::mutex state_mu_;
  std::condition_variable cv_;
  std::deque<Op> queue_;
  std::unordered_map<Hash, std::shared_ptr<const PendingPut>, HashHasher> pending_;
  size_t pending_bytes_ = 0;
  std::unordered_map<Hash, uint64_t, HashHasher> tombstones_;  // hash -> seq of its invalidation
  // Bumped (under state_mu_) whenever a pending put or a tombstone of a key in the stripe is
  // retired, i.e. after the commit that wrote it. get() reads the environment before it looks
  // at pending_ and tombstones_: when its stripe moved in between, its snapshot may predate the
  // commit. Striped so that other keys' commits rarely make a read try again.
  static constexpr size_t kRetiredStripes = 4096;
  static size_t stripeOf(const Hash& h) {
    return ((size_t{h[0]} << 8) | h[1]) % kRetiredStripes;
  }
  std::array<std::atomic<uint64_t>, kRetiredStripes> retired_epochs_{};
  std::unordered_map<Hash, uint64_t, HashHasher> touches_;     // hash -> latest access tick
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

LmdbCacheStore::Impl::Impl(LmdbCacheStoreOptions options)
    : options_(std::move(options)),
      map_size_(options_.map_size != 0 ? options_.map_size
                                       : options_.max_bytes * 2 + (size_t{64} << 20)),
      env_lock_(envLockFor(options_.dir)) {
  ensureSodium();
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
  if (env_) env_->sync(true);
  closeEnvLocked();
}

int64_t LmdbCacheStore::Impl::nowMs() const {
  const auto now = options_.clock ? options_.clock->systemNow() : std::chrono::system_clock::now();
  return std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
}

void LmdbCacheStore::Impl::warn(const std::string& message) {
  if (options_.warn) {
    options_.warn(message);
    return;
  }
  const std::string line =
      "{\"level\":\"warn\",\"component\":\"cache\",\"message\":\"" + jsonEscape(message) + "\"}\n";
  (void)!::write(2, line.data(), line.size());
}

void LmdbCacheStore::Impl::warnRateLimited(const std::string& message) {
  const int64_t now = nowMs();
  int64_t last = last_read_warn_ms_.load(std::memory_order_relaxed);
  if (now - last < 10'000 && last != 0) return;
  if (last_read_warn_ms_.compare_exchange_strong(last, now)) warn(message);
}

// ---------------------------------------------------------------------------------------------
// Environment lifecycle

bool LmdbCacheStore::Impl::openEnvLocked(bool allow_move_aside) {
  LmdbEnvOptions env_options;
  env_options.map_size = map_size_;
  env_options.max_dbs = 16;
  env_options.max_readers = options_.max_readers;
  env_options.durable = false;  // MDB_NOSYNC | MDB_NOMETASYNC: a cache write never fsyncs
  env_options.no_readahead = true;
  for (int attempt = 0; attempt < 2; ++attempt) {
    auto env = LmdbEnv::open(options_.dir, env_options);
    core::Status status = env ? attachEnvLocked(std::move(env.value())) : env.takeError();
    if (status) {
      healthy_.store(true, std::memory_order_release);
      return true;
    }
    closeEnvLocked();
    warn("response cache at " + options_.dir + " is unusable (" + status.error().message + ")" +
         (attempt == 0 && allow_move_aside ? "; moving it aside and starting empty" : ""));
    if (attempt > 0 || !allow_move_aside) break;
    if (status.error().message.find("different durability") != std::string::npos) {
      break;  // the directory is another store's environment, open in this process: not ours
    }
    if (auto moved = moveAside(options_.dir, nowMs()); !moved) {
      warn(moved.error().message);
      break;
    }
  }
  healthy_.store(false, std::memory_order_release);
  return false;
}

core::Status LmdbCacheStore::Impl::attachEnvLocked(std::shared_ptr<LmdbEnv> env) {
  auto dbis = env->openDbis(
      {"entries", "info", "by_identity", "by_path", "lru", "expiry", "stored", "meta"});
  if (!dbis) return dbis.takeError();
  Dbis d;
  d.entries = (*dbis)[0];
  d.info = (*dbis)[1];
  d.by_identity = (*dbis)[2];
  d.by_path = (*dbis)[3];
  d.lru = (*dbis)[4];
  d.expiry = (*dbis)[5];
  d.stored = (*dbis)[6];
  d.meta = (*dbis)[7];

  // Check the format marker and walk the edges of every database, so that a damaged file is
  // found now (and replaced) rather than on the request path. Another format: start empty.
  uint64_t generation = 0, tick = 0;
  auto status = env->update([&](LmdbTxn& txn) -> core::Status {
    MDB_txn* raw = txn.raw();
    std::string_view format;
    int rc = rawGet(raw, d.meta, "format", &format);
    if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND) return lmdbError(rc, "read", env->path());
    const bool same = rc == MDB_SUCCESS && format == kFormatVersion;
    for (MDB_dbi dbi : {d.entries, d.info, d.by_identity, d.by_path, d.lru, d.expiry, d.stored}) {
      if (!same) {
        rc = mdb_drop(raw, dbi, 0);
        if (rc != MDB_SUCCESS) return lmdbError(rc, "reset", env->path());
        continue;
      }
      std::string first;
      rc = firstKey(raw, dbi, &first);
      if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND) return lmdbError(rc, "check", env->path());
      MDB_cursor* c = nullptr;
      if ((rc = mdb_cursor_open(raw, dbi, &c)) != MDB_SUCCESS) {
        return lmdbError(rc, "check", env->path());
      }
      CursorPtr cursor(c);
      MDB_val k{}, v{};
      rc = mdb_cursor_get(c, &k, &v, MDB_LAST);
      if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND) return lmdbError(rc, "check", env->path());
    }
    if (!same) {
      for (const char* name : {"bytes", "tick", "evictions", "expired", "hits", "misses",
                               "dropped", "degraded"}) {
        rc = rawPut(raw, d.meta, name, u64Value(0));
        if (rc != MDB_SUCCESS) return lmdbError(rc, "reset", env->path());
      }
      rc = rawPut(raw, d.meta, "format", kFormatVersion);
      if (rc != MDB_SUCCESS) return lmdbError(rc, "reset", env->path());
    }
    std::string_view v;
    if (rawGet(raw, d.meta, "gen", &v) == MDB_SUCCESS) generation = decodeU64(v);
    if (!same) {
      // Bump rather than reset: another process may hold pending puts of the old generation.
      ++generation;
      rc = rawPut(raw, d.meta, "gen", u64Value(generation));
      if (rc != MDB_SUCCESS) return lmdbError(rc, "reset", env->path());
    }
    if (rawGet(raw, d.meta, "tick", &v) == MDB_SUCCESS) tick = decodeU64(v);
    return core::okStatus();
  });
  if (!status) return status;
  env_ = std::move(env);
  dbis_ = d;
  {
    std::lock_guard<std::mutex> lock(state_mu_);
    observed_generation_ = generation;
    last_tick_ = std::max(last_tick_, tick);  // even if the clock is behind the stored ticks
  }
  return core::okStatus();
}

void LmdbCacheStore::Impl::closeEnvLocked() {
  clearReadPoolLocked();
  env_.reset();
}

// Writer thread only. Replaces a damaged environment by an empty one.
void LmdbCacheStore::Impl::recover(const std::string& why) {
  last_recovery_ = std::chrono::steady_clock::now();
  std::unique_lock<std::shared_mutex> lock(*env_lock_);
  healthy_.store(false, std::memory_order_release);
  std::weak_ptr<LmdbEnv> weak = env_;
  closeEnvLocked();
  if (auto still = weak.lock()) {
    // Another store of this process still uses the environment: it cannot be replaced under it.
    warn("response cache at " + options_.dir + " needs recovery (" + why +
         ") but is shared with another store in this process; staying degraded");
    return;
  }
  {
    // Everything in memory belongs to the old environment.
    std::lock_guard<std::mutex> state(state_mu_);
    count(kDropped, pending_.size());
    pending_.clear();
    pending_bytes_ = 0;
    tombstones_.clear();
    touches_.clear();
  }
  if (why.empty()) {
    // Degraded since opening: just try to open again (moving aside if still unusable).
    if (openEnvLocked(true)) warn("response cache at " + options_.dir + " recovered");
    return;
  }
  warn("response cache at " + options_.dir + " is damaged (" + why +
       "); moving it aside and starting empty");
  count(kDegraded);
  if (auto moved = moveAside(options_.dir, nowMs()); !moved) warn(moved.error().message);
  if (openEnvLocked(true)) warn("response cache at " + options_.dir + " recreated empty");
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
      // Slots of crashed processes are reclaimed by mdb_reader_check; then try once more.
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
    std::lock_guard<std::mutex> lock(state_mu_);
    recovery_requested_ = true;
    recovery_reason_ = mdb_strerror(rc);
    cv_.notify_all();
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

uint64_t LmdbCacheStore::Impl::readGeneration(MDB_txn* txn) {
  std::string_view v;
  return rawGet(txn, dbis_.meta, "gen", &v) == MDB_SUCCESS ? decodeU64(v) : 0;
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
  if (isCorruption(rc)) {
    std::lock_guard<std::mutex> state(state_mu_);
    recovery_requested_ = true;
    recovery_reason_ = mdb_strerror(rc);
    cv_.notify_all();
  }
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
// Request-path mutations

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
        MDB_stat st{};
        if (mdb_stat(txn.get(), dbis_.entries, &st) == MDB_SUCCESS) s.entries = st.ms_entries;
        std::string_view v;
        const auto meta = [&](const char* name) -> uint64_t {
          return rawGet(txn.get(), dbis_.meta, name, &v) == MDB_SUCCESS ? decodeU64(v) : 0;
        };
        s.bytes = meta("bytes");
        s.evictions = meta("evictions");
        s.expired = meta("expired");
        for (int c = 0; c < kNumCounters; ++c) persisted[c] = meta(kCounterNames[c]);
        std::string first;
        if (firstKey(txn.get(), dbis_.stored, &first) == MDB_SUCCESS && first.size() >= 8) {
          s.oldest_stored_unix_ms = fromOrderedTime(decodeU64(first.substr(0, 8)));
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

// ---------------------------------------------------------------------------------------------
// Writer

void LmdbCacheStore::Impl::writerLoop() {
  while (true) {
    std::vector<Op> ops;
    std::unordered_map<Hash, uint64_t, HashHasher> touched;
    bool stopping = false;
    bool recover_now = false;
    std::string reason;
    {
      std::unique_lock<std::mutex> lock(state_mu_);
      cv_.wait_for(lock, std::chrono::seconds(1), [&] {
        return stop_ || !queue_.empty() || touches_.size() >= kTouchFlushAt || sweep_unfinished_ ||
               recovery_requested_ || resize_requested_.load(std::memory_order_relaxed);
      });
      stopping = stop_;
      // At most kMaxOpsPerTxn operations per transaction (see kMaxOpsPerTxn); the rest stay
      // queued for the next turn, which starts at once.
      const size_t take = std::min(queue_.size(), kMaxOpsPerTxn);
      ops.assign(std::make_move_iterator(queue_.begin()),
                 std::make_move_iterator(queue_.begin() + static_cast<std::ptrdiff_t>(take)));
      queue_.erase(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(take));
      if (queue_.empty()) queue_.shrink_to_fit();  // a burst's deque blocks go back at once
      touched.swap(touches_);
      recover_now = recovery_requested_;
      reason = recovery_reason_;
      recovery_requested_ = false;
    }
    if (resize_requested_.exchange(false)) adoptMapSize();
    const auto now = std::chrono::steady_clock::now();
    if (recover_now) {
      recover(reason);
    } else if (!healthy() && now - last_recovery_ >= options_.recovery_interval) {
      recover("");
    }
    // In key order, so that each transaction's share of the recency updates lands on
    // neighbouring pages of the info database rather than all over it.
    std::vector<Touch> touches(touched.begin(), touched.end());
    touched = {};
    std::sort(touches.begin(), touches.end(),
              [](const Touch& a, const Touch& b) { return a.first < b.first; });
    // flush() waits for its barrier: answer it only once every recency update taken with it is
    // applied too (they may need more than one transaction).
    std::vector<std::shared_ptr<std::promise<size_t>>> barriers;
    for (Op& op : ops) {
      if (op.kind == OpKind::kBarrier && op.done) barriers.push_back(std::move(op.done));
    }
    size_t first = 0;
    do {
      const size_t last = std::min(touches.size(), first + kMaxTouchesPerTxn);
      runBatch(ops, touches, first, last);
      ops.clear();
      first = last;
    } while (first < touches.size());
    for (auto& barrier : barriers) barrier->set_value(0);
    if (sweep_unfinished_ || now - last_sweep_ >= options_.sweep_interval) {
      if (!sweep_unfinished_) last_sweep_ = now;
      sweep_unfinished_ = !sweepSome();
      if (!sweep_unfinished_) releaseFreeHeap();
    }
    if (stopping) {
      std::lock_guard<std::mutex> lock(state_mu_);
      if (queue_.empty()) break;
      continue;
    }
    if (now - last_sync_ >= options_.sync_interval) syncIfDirty();
  }
  syncIfDirty();
}

bool LmdbCacheStore::Impl::sweepSome() {
  static const std::vector<Touch> kNone;
  for (int i = 0; i < kMaxSweepTxnsPerTurn; ++i) {
    std::vector<Op> ops(1);
    ops[0].kind = OpKind::kSweep;
    runBatch(ops, kNone, 0, 0);
    // Less than a full transaction's worth removed: nothing expired is left.
    if (ops[0].result < kMaxDeletesPerTxn || !healthy()) return true;
  }
  return false;
}

// Gives the heap's free pages back to the kernel. glibc keeps what a burst freed (many
// concurrent requests, large bodies) in its arenas, in pieces between live allocations, so the
// pages stay resident: RSS stays at the burst's peak (bench/README.md, scenario (f)). This is
// the process's only periodic housekeeping thread off the request path, hence here; see
// malloc_trim(3), mallinfo2(3).
void LmdbCacheStore::Impl::releaseFreeHeap() {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
  if (options_.release_free_heap_above == 0) return;
  if (::mallinfo2().fordblks > options_.release_free_heap_above) ::malloc_trim(0);
#endif
}

void LmdbCacheStore::Impl::syncIfDirty() {
  last_sync_ = std::chrono::steady_clock::now();
  if (!dirty_) return;
  std::shared_lock<std::shared_mutex> lock(*env_lock_);
  if (env_) {
    if (auto synced = env_->sync(true); !synced) warn(synced.error().message);
  }
  dirty_ = false;
}

void LmdbCacheStore::Impl::adoptMapSize() {
  std::unique_lock<std::shared_mutex> lock(*env_lock_);
  if (!env_) return;
  clearReadPoolLocked();  // no transaction of ours may be live (or pooled) across a remap
  if (auto status = env_->setMapSize(0); !status) warn(status.error().message);
}

int LmdbCacheStore::Impl::beginWrite(std::shared_lock<std::shared_mutex>& lock, MDB_txn** txn) {
  for (int attempt = 0; attempt < 3; ++attempt) {
    lock = std::shared_lock<std::shared_mutex>(*env_lock_);
    if (!env_) return kNoEnv;
    const int rc = mdb_txn_begin(env_->raw(), nullptr, 0, txn);
    if (rc != MDB_MAP_RESIZED) return rc;
    lock.unlock();
    adoptMapSize();
  }
  return MDB_MAP_RESIZED;
}

int LmdbCacheStore::Impl::readState(MDB_txn* txn, TxnState* st) {
  std::string_view v;
  const auto read = [&](const char* name, uint64_t* out) {
    const int rc = rawGet(txn, dbis_.meta, name, &v);
    if (rc == MDB_SUCCESS) *out = decodeU64(v);
    return rc == MDB_NOTFOUND ? MDB_SUCCESS : rc;
  };
  int rc;
  if ((rc = read("bytes", &st->bytes)) != MDB_SUCCESS) return rc;
  if ((rc = read("gen", &st->generation)) != MDB_SUCCESS) return rc;
  if ((rc = read("tick", &st->tick)) != MDB_SUCCESS) return rc;
  if ((rc = read("evictions", &st->evictions)) != MDB_SUCCESS) return rc;
  return read("expired", &st->expired);
}

int LmdbCacheStore::Impl::writeState(MDB_txn* txn, const TxnState& st,
                                     const std::array<uint64_t, kNumCounters>& deltas) {
  int rc;
  if ((rc = rawPut(txn, dbis_.meta, "bytes", u64Value(st.bytes))) != MDB_SUCCESS) return rc;
  if ((rc = rawPut(txn, dbis_.meta, "gen", u64Value(st.generation))) != MDB_SUCCESS) return rc;
  if ((rc = rawPut(txn, dbis_.meta, "tick", u64Value(st.tick))) != MDB_SUCCESS) return rc;
  if ((rc = rawPut(txn, dbis_.meta, "evictions", u64Value(st.evictions))) != MDB_SUCCESS) {
    return rc;
  }
  if ((rc = rawPut(txn, dbis_.meta, "expired", u64Value(st.expired))) != MDB_SUCCESS) return rc;
  for (int c = 0; c < kNumCounters; ++c) {
    if (deltas[c] == 0) continue;
    std::string_view v;
    uint64_t total = 0;
    rc = rawGet(txn, dbis_.meta, kCounterNames[c], &v);
    if (rc == MDB_SUCCESS) total = decodeU64(v);
    if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND) return rc;
    if ((rc = rawPut(txn, dbis_.meta, kCounterNames[c], u64Value(total + deltas[c]))) !=
        MDB_SUCCESS) {
      return rc;
    }
  }
  return MDB_SUCCESS;
}

int LmdbCacheStore::Impl::deleteEntry(MDB_txn* txn, TxnState* st, const Hash& h, bool* existed,
                                      const CacheEntryMeta* replacing, bool* kept_indexes) {
  *existed = false;
  if (kept_indexes != nullptr) *kept_indexes = false;
  std::string_view value;
  int rc = rawGet(txn, dbis_.info, hashView(h), &value);
  if (rc == MDB_NOTFOUND) return rawDel(txn, dbis_.entries, hashView(h));  // orphan record
  if (rc != MDB_SUCCESS) return rc;
  EntryInfo info;
  const bool decoded = decodeInfo(value, &info);  // copies: `value` dies with the next write
  *existed = true;
  if ((rc = rawDel(txn, dbis_.entries, hashView(h))) != MDB_SUCCESS) return rc;
  if ((rc = rawDel(txn, dbis_.info, hashView(h))) != MDB_SUCCESS) return rc;
  if (!decoded) return MDB_SUCCESS;  // index keys left behind are skipped and cleaned lazily
  if ((rc = rawDel(txn, dbis_.lru, timeKey(info.tick, h))) != MDB_SUCCESS) return rc;
  if ((rc = rawDel(txn, dbis_.expiry, timeKey(orderedTime(info.stale_until), h))) != MDB_SUCCESS) {
    return rc;
  }
  if ((rc = rawDel(txn, dbis_.stored, timeKey(orderedTime(info.stored), h))) != MDB_SUCCESS) {
    return rc;
  }
  // A refresh of the same key: its path-index entries would be deleted and put back byte for
  // byte. Left alone, a refresh dirties two B-tree leaves fewer (of seven), and a wave of
  // refreshes needs that many fewer free pages (see kMaxOpsPerTxn).
  const bool keep = replacing != nullptr && kept_indexes != nullptr &&
                    info.upstream == replacing->upstream &&
                    info.identity == replacing->identity_tag && info.path == replacing->path;
  if (keep) {
    *kept_indexes = true;
  } else {
    if ((rc = rawDel(txn, dbis_.by_identity,
                     indexKey(head16({info.upstream, info.identity}), info.path, h))) !=
        MDB_SUCCESS) {
      return rc;
    }
    if ((rc = rawDel(txn, dbis_.by_path, indexKey(head16({info.upstream}), info.path, h))) !=
        MDB_SUCCESS) {
      return rc;
    }
  }
  st->bytes = st->bytes >= info.bytes ? st->bytes - info.bytes : 0;
  return MDB_SUCCESS;
}

int LmdbCacheStore::Impl::insertEntry(MDB_txn* txn, TxnState* st, const PendingPut& p) {
  bool existed = false;
  bool kept_indexes = false;
  int rc = deleteEntry(txn, st, p.hash, &existed, &p.meta, &kept_indexes);
  if (rc != MDB_SUCCESS) return rc;
  const std::string record = encodeRecord(p.key, p.response);
  EntryInfo info;
  info.tick = p.tick;
  info.stored = p.response.stored_unix_ms;
  info.stale_until = p.response.stale_until_unix_ms;
  info.bytes = record.size() + kHashSize;
  info.upstream = p.meta.upstream;
  info.identity = p.meta.identity_tag;
  info.path = p.meta.path;
  const std::string_view h = hashView(p.hash);
  if ((rc = rawPut(txn, dbis_.entries, h, record)) != MDB_SUCCESS) return rc;
  if ((rc = rawPut(txn, dbis_.info, h, encodeInfo(info))) != MDB_SUCCESS) return rc;
  if ((rc = rawPut(txn, dbis_.lru, timeKey(info.tick, p.hash), {})) != MDB_SUCCESS) return rc;
  if ((rc = rawPut(txn, dbis_.expiry, timeKey(orderedTime(info.stale_until), p.hash), {})) !=
      MDB_SUCCESS) {
    return rc;
  }
  if ((rc = rawPut(txn, dbis_.stored, timeKey(orderedTime(info.stored), p.hash), {})) !=
      MDB_SUCCESS) {
    return rc;
  }
  // A kept index key is only looked up (no page dirtied); one found missing, which no code path
  // should leave behind, is written again rather than trusted.
  const auto putIndex = [&](MDB_dbi dbi, const std::string& key) {
    if (kept_indexes) {
      std::string_view present;
      const int got = rawGet(txn, dbi, key, &present);
      if (got != MDB_NOTFOUND) return got;
    }
    return rawPut(txn, dbi, key, info.path);
  };
  if ((rc = putIndex(dbis_.by_identity,
                     indexKey(head16({info.upstream, info.identity}), info.path, p.hash))) !=
      MDB_SUCCESS) {
    return rc;
  }
  if ((rc = putIndex(dbis_.by_path, indexKey(head16({info.upstream}), info.path, p.hash))) !=
      MDB_SUCCESS) {
    return rc;
  }
  st->bytes += info.bytes;
  st->tick = std::max(st->tick, info.tick);
  return MDB_SUCCESS;
}

// Records a read in the LRU order. Rewriting an entry's recency costs pages in two databases
// (and LMDB's page copies on the heap), and under a hot key set every entry is read every
// second. So, as memcached does (ITEM_UPDATE_INTERVAL), a read less than touch_interval after
// the last recorded one is not written while the cache is less than half full: no eviction is
// near then, and the order stays right to within touch_interval. Past half full, every read is
// recorded (exact LRU where it matters).
int LmdbCacheStore::Impl::touchEntry(MDB_txn* txn, const Hash& h, uint64_t tick,
                                     const TouchPolicy& policy) {
  std::string_view value;
  int rc = rawGet(txn, dbis_.info, hashView(h), &value);
  if (rc == MDB_NOTFOUND) return MDB_SUCCESS;  // evicted or purged since the read
  if (rc != MDB_SUCCESS) return rc;
  EntryInfo info;
  if (!decodeInfo(value, &info) || info.tick >= tick) return MDB_SUCCESS;
  if (policy.far_from_bound && tick - info.tick < policy.interval_ticks) return MDB_SUCCESS;
  if ((rc = rawDel(txn, dbis_.lru, timeKey(info.tick, h))) != MDB_SUCCESS) return rc;
  info.tick = tick;
  if ((rc = rawPut(txn, dbis_.lru, timeKey(info.tick, h), {})) != MDB_SUCCESS) return rc;
  return rawPut(txn, dbis_.info, hashView(h), encodeInfo(info));
}

// Evicts least recently used entries until at most `target` bytes remain.
int LmdbCacheStore::Impl::evictTo(MDB_txn* txn, TxnState* st, uint64_t target) {
  while (st->bytes > target) {
    std::string first;
    int rc = firstKey(txn, dbis_.lru, &first);
    if (rc == MDB_NOTFOUND) {
      st->bytes = 0;  // nothing left to evict: the accounting had drifted
      return MDB_SUCCESS;
    }
    if (rc != MDB_SUCCESS) return rc;
    bool existed = false;
    if ((rc = deleteEntry(txn, st, hashFromSuffix(first), &existed)) != MDB_SUCCESS) return rc;
    if ((rc = rawDel(txn, dbis_.lru, first)) != MDB_SUCCESS) return rc;  // progress, always
    if (existed) ++st->evictions;
  }
  return MDB_SUCCESS;
}

int LmdbCacheStore::Impl::sweep(MDB_txn* txn, TxnState* st, int64_t now_ms, size_t* removed) {
  *removed = 0;
  while (*removed < kMaxDeletesPerTxn) {
    std::string first;
    int rc = firstKey(txn, dbis_.expiry, &first);
    if (rc == MDB_NOTFOUND) return MDB_SUCCESS;
    if (rc != MDB_SUCCESS) return rc;
    if (fromOrderedTime(decodeU64(first.substr(0, 8))) > now_ms) return MDB_SUCCESS;
    bool existed = false;
    if ((rc = deleteEntry(txn, st, hashFromSuffix(first), &existed)) != MDB_SUCCESS) return rc;
    if ((rc = rawDel(txn, dbis_.expiry, first)) != MDB_SUCCESS) return rc;
    if (existed) {
      ++*removed;
      ++st->expired;
    }
  }
  return MDB_SUCCESS;
}

int LmdbCacheStore::Impl::clearAll(MDB_txn* txn, TxnState* st) {
  for (MDB_dbi dbi : {dbis_.entries, dbis_.info, dbis_.by_identity, dbis_.by_path, dbis_.lru,
                      dbis_.expiry, dbis_.stored}) {
    const int rc = mdb_drop(txn, dbi, 0);
    if (rc != MDB_SUCCESS) return rc;
  }
  st->bytes = 0;
  return MDB_SUCCESS;
}

int LmdbCacheStore::Impl::purgeTxn(MDB_txn* txn, TxnState* st, std::string_view upstream,
                                   std::string_view prefix, size_t* count_out) {
  *count_out = 0;
  ++st->generation;  // drops every pending put and in-memory copy, in every process
  int rc;
  if (upstream.empty() && prefix.empty()) {
    MDB_stat stat{};
    if ((rc = mdb_stat(txn, dbis_.entries, &stat)) != MDB_SUCCESS) return rc;
    *count_out = stat.ms_entries;
    return clearAll(txn, st);
  }
  std::string key_prefix;
  if (!upstream.empty()) {
    key_prefix = head16({upstream});
    key_prefix += prefix.substr(0, kMaxIndexedPath);
  }
  std::vector<Hash> hashes;
  rc = scanPrefix(txn, dbis_.by_path, key_prefix,
                  [&](std::string_view key, std::string_view full_path) {
                    if (full_path.substr(0, prefix.size()) == prefix) {
                      hashes.push_back(hashFromSuffix(key));
                    }
                    return true;
                  });
  if (rc != MDB_SUCCESS) return rc;
  for (const Hash& h : hashes) {
    bool existed = false;
    if ((rc = deleteEntry(txn, st, h, &existed)) != MDB_SUCCESS) return rc;
    if (existed) ++*count_out;
  }
  return MDB_SUCCESS;
}

int LmdbCacheStore::Impl::tryBatch(std::vector<Op>& ops, const std::vector<Touch>& touches,
                                   size_t first, size_t last,
                                   const std::array<uint64_t, kNumCounters>& deltas,
                                   bool include_puts, TxnState* out_state) {
  std::shared_lock<std::shared_mutex> lock;
  MDB_txn* txn = nullptr;
  int rc = beginWrite(lock, &txn);
  if (rc != MDB_SUCCESS) return rc;
  TxnState st;
  const auto fail = [&](int code) {
    mdb_txn_abort(txn);
    return code;
  };
  if ((rc = readState(txn, &st)) != MDB_SUCCESS) return fail(rc);
  for (Op& op : ops) {
    op.result = 0;
    switch (op.kind) {
      case OpKind::kPut: {
        if (!include_puts || op.put->generation != st.generation) break;
        {
          // Superseded by a newer put or cancelled by an invalidation: skip.
          std::lock_guard<std::mutex> state(state_mu_);
          auto it = pending_.find(op.hash);
          if (it == pending_.end() || it->second != op.put) break;
        }
        if ((rc = insertEntry(txn, &st, *op.put)) != MDB_SUCCESS) return fail(rc);
        op.result = 1;
        break;
      }
      case OpKind::kDelete: {
        bool existed = false;
        if ((rc = deleteEntry(txn, &st, op.hash, &existed)) != MDB_SUCCESS) return fail(rc);
        break;
      }
      case OpKind::kInvalidate: {
        std::vector<Hash> hashes;
        rc = collect(txn, op.upstream, op.identity, op.path, op.prefix, &hashes);
        if (rc != MDB_SUCCESS) return fail(rc);
        hashes.insert(hashes.end(), op.tombstones.begin(), op.tombstones.end());
        for (const Hash& h : hashes) {
          bool existed = false;
          if ((rc = deleteEntry(txn, &st, h, &existed)) != MDB_SUCCESS) return fail(rc);
        }
        break;
      }
      case OpKind::kPurge:
        if ((rc = purgeTxn(txn, &st, op.upstream, op.path, &op.result)) != MDB_SUCCESS) {
          return fail(rc);
        }
        break;
      case OpKind::kSweep:
        if ((rc = sweep(txn, &st, nowMs(), &op.result)) != MDB_SUCCESS) return fail(rc);
        break;
      case OpKind::kBarrier:
        break;
    }
  }
  // Recency after the puts (a read older than a replacing put does not count: touchEntry keeps
  // the larger tick) and before eviction, so that eviction sees every read made so far.
  if (first < last) {
    TouchPolicy policy;
    policy.interval_ticks =
        static_cast<uint64_t>(std::max<int64_t>(options_.touch_interval.count(), 0)) << kTickShift;
    policy.far_from_bound = st.bytes < options_.max_bytes / 2;
    for (size_t i = first; i < last; ++i) {
      const Touch& touch = touches[i];
      if ((rc = touchEntry(txn, touch.first, touch.second, policy)) != MDB_SUCCESS) {
        return fail(rc);
      }
      st.tick = std::max(st.tick, touch.second);
    }
  }
  if ((rc = evictTo(txn, &st, options_.max_bytes)) != MDB_SUCCESS) return fail(rc);
  if ((rc = writeState(txn, st, deltas)) != MDB_SUCCESS) return fail(rc);
  rc = mdb_txn_commit(txn);
  if (rc != MDB_SUCCESS) return rc;
  dirty_ = true;
  *out_state = st;
  return MDB_SUCCESS;
}

// Runs fn in a write transaction of its own, with the meta state read before and written after
// (so even a no-op fn makes a real commit). Returns an LMDB code.
int LmdbCacheStore::Impl::smallWrite(const std::function<int(MDB_txn*, TxnState*)>& fn) {
  std::shared_lock<std::shared_mutex> lock;
  MDB_txn* txn = nullptr;
  int rc = beginWrite(lock, &txn);
  if (rc != MDB_SUCCESS) return rc;
  TxnState st;
  if ((rc = readState(txn, &st)) == MDB_SUCCESS && (rc = fn(txn, &st)) == MDB_SUCCESS) {
    rc = writeState(txn, st, {});
  }
  if (rc != MDB_SUCCESS) {
    mdb_txn_abort(txn);
    return rc;
  }
  rc = mdb_txn_commit(txn);
  if (rc == MDB_SUCCESS) dirty_ = true;
  return rc;
}

// Grows the map by a quarter of its configured size, up to twice the configured size: the relief
// valve for a map so full that even deleting (which copies pages on write) fails. Other
// processes adopt the new size through MDB_MAP_RESIZED.
bool LmdbCacheStore::Impl::growMap() {
  std::unique_lock<std::shared_mutex> lock(*env_lock_);
  if (!env_) return false;
  MDB_envinfo info{};
  if (mdb_env_info(env_->raw(), &info) != MDB_SUCCESS) return false;
  const size_t limit = map_size_ * 2;
  if (info.me_mapsize >= limit) return false;
  const size_t next = std::min(limit, info.me_mapsize + std::max(map_size_ / 4, size_t{1} << 20));
  clearReadPoolLocked();  // no transaction of ours may be live (or pooled) across a remap
  if (auto status = env_->setMapSize(next); !status) {
    warn(status.error().message);
    return false;
  }
  warn("response cache map grown to " + std::to_string(next) + " bytes (" + options_.dir + ")");
  return true;
}

// MDB_MAP_FULL relief: evicts `fraction` of the accounted bytes (1.0: everything), then commits
// two small transactions, because LMDB reuses the pages freed by transaction N only from
// transaction N+2 on (mdb_page_alloc / mdb_find_oldest). Grows the map when even that cannot
// get pages.
bool LmdbCacheStore::Impl::makeRoom(double fraction) {
  const auto withGrowth = [this](const std::function<int(MDB_txn*, TxnState*)>& fn) {
    int rc = smallWrite(fn);
    if (rc == MDB_MAP_FULL && growMap()) rc = smallWrite(fn);
    return rc == MDB_SUCCESS;
  };
  const bool evicted = withGrowth([&](MDB_txn* txn, TxnState* st) {
    if (fraction >= 1.0) {
      MDB_stat stat{};
      const int rc = mdb_stat(txn, dbis_.entries, &stat);
      if (rc != MDB_SUCCESS) return rc;
      st->evictions += stat.ms_entries;
      return clearAll(txn, st);
    }
    return evictTo(txn, st, static_cast<uint64_t>(static_cast<double>(st->bytes) * (1 - fraction)));
  });
  if (!evicted) return false;
  for (int i = 0; i < 2; ++i) {
    if (!withGrowth([](MDB_txn*, TxnState*) { return MDB_SUCCESS; })) return false;
  }
  return true;
}

void LmdbCacheStore::Impl::runBatch(std::vector<Op>& ops, const std::vector<Touch>& touches,
                                    size_t first, size_t last) {
  std::array<uint64_t, kNumCounters> deltas{};
  {
    std::lock_guard<std::mutex> lock(flushed_mu_);
    for (int c = 0; c < kNumCounters; ++c) {
      deltas[c] = local_[c].load(std::memory_order_relaxed) - flushed_[c];
    }
  }
  const bool counters_due =
      std::any_of(deltas.begin(), deltas.end(), [](uint64_t d) { return d != 0; });
  if (ops.empty() && first == last && !counters_due) return;
  if (!healthy()) {
    finishBatch(ops, false, false, 0);
    return;
  }
  TxnState st;
  bool map_stuck = false;
  for (int attempt = 0; attempt < 4; ++attempt) {
    const bool puts = attempt < 3;
    const int rc = tryBatch(ops, touches, first, last, deltas, puts, &st);
    if (rc == MDB_SUCCESS) {
      {
        std::lock_guard<std::mutex> lock(flushed_mu_);
        for (int c = 0; c < kNumCounters; ++c) flushed_[c] += deltas[c];
      }
      finishBatch(ops, true, puts, st.generation);
      return;
    }
    if (rc == MDB_MAP_FULL) {
      // The map (not the byte bound) is exhausted: fragmentation, or a map too small for
      // max_bytes. Make room and retry; as a last resort drop this batch's puts.
      count(kDegraded);
      if (attempt == 0) {
        warn("response cache map is full (" + options_.dir +
             "); evicting a quarter of the entries");
        makeRoom(0.25);
      } else if (attempt == 1) {
        warn("response cache map still full; emptying the cache");
        makeRoom(1.0);
      } else if (attempt == 2) {
        warn("response cache map full even when empty; dropping this batch's writes");
      } else {
        map_stuck = true;
      }
      continue;
    }
    if (rc == kNoEnv) break;
    count(kDegraded);
    warn(lmdbError(rc, "cache write", options_.dir).message);
    if (isCorruption(rc)) {
      std::lock_guard<std::mutex> lock(state_mu_);
      recovery_requested_ = true;
      recovery_reason_ = mdb_strerror(rc);
    }
    break;
  }
  finishBatch(ops, false, false, 0);
  if (map_stuck) {
    // Even a batch without puts failed on a full map: the environment is stuck.
    std::lock_guard<std::mutex> lock(state_mu_);
    recovery_requested_ = true;
    recovery_reason_ = "map full";
  }
}

void LmdbCacheStore::Impl::finishBatch(std::vector<Op>& ops, bool committed, bool puts_applied,
                                       uint64_t generation) {
  std::vector<std::pair<std::shared_ptr<std::promise<size_t>>, size_t>> fulfil;
  std::vector<Op> retry;
  {
    std::lock_guard<std::mutex> lock(state_mu_);
    if (committed) observed_generation_ = generation;
    for (Op& op : ops) {
      switch (op.kind) {
        case OpKind::kPut: {
          // Written (or skipped as stale/superseded, or dropped): either way it is no longer
          // pending, unless a newer put replaced it.
          auto it = pending_.find(op.hash);
          if (it != pending_.end() && it->second == op.put) {
            pending_bytes_ -= it->second->cost;
            pending_.erase(it);
            retired_epochs_[stripeOf(op.hash)].fetch_add(1, std::memory_order_release);
            // A burst grows the bucket array; erasing never shrinks it.
            if (pending_.empty() && pending_.bucket_count() > 1024) pending_.rehash(0);
          }
          if (!committed || !puts_applied) count(kDropped);
          break;
        }
        case OpKind::kInvalidate:
        case OpKind::kDelete:
        case OpKind::kPurge:
          if (!committed && healthy() && ++op.attempts < kMaxOpAttempts) {
            retry.push_back(std::move(op));  // keep tombstones; try again next batch
            continue;
          }
          if (op.kind == OpKind::kInvalidate) {
            for (const Hash& h : op.tombstones) {
              auto it = tombstones_.find(h);
              // Only if no later invalidation re-marked it. Left standing when the delete
              // failed for good: the entry must not be served again.
              if (committed && it != tombstones_.end() && it->second == op.tombstone_seq) {
                tombstones_.erase(it);
                retired_epochs_[stripeOf(h)].fetch_add(1, std::memory_order_release);
              }
            }
          }
          break;
        default:
          break;
      }
      if (op.done) fulfil.emplace_back(op.done, committed ? op.result : 0);
    }
    for (Op& op : retry) queue_.push_back(std::move(op));
  }
  for (auto& f : fulfil) f.first->set_value(f.second);
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
