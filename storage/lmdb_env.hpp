// Private to storage/: RAII wrapper over LMDB (MDB_env, transactions, named databases, cursors),
// shared by every LMDB-backed store (credentials, cache, schemas). LMDB return codes are
// translated into core::Error here and nowhere else (as Knot Resolver's cdb_lmdb.c
// lmdb_error() does).
#pragma once

#ifndef KEYWAY_STORAGE_PRIVATE
#error "private to storage/ (it brings in <lmdb.h>): use the public storage headers' factories"
#endif

#include <lmdb.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <condition_variable>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.hpp"

namespace keyway::storage {

// Translates an LMDB (or errno) return code into a core::Error whose message says what failed,
// on which environment, and what to do. Never call with rc == MDB_SUCCESS.
core::Error lmdbError(int rc, std::string_view operation, std::string_view env_path);

// LMDB's compiled-in maximum key length (MDB_MAXKEYSIZE in Debian's build).
inline constexpr size_t kMaxKeySize = 511;

struct LmdbEnvOptions {
  // Virtual size of the memory map; the file is sparse, so a generous value costs nothing.
  size_t map_size = size_t{1} << 30;
  unsigned max_dbs = 32;
  // Reader slots. With MDB_NOTLS every live read transaction takes one slot.
  unsigned max_readers = 1022;
  // true: every commit is fsync'ed (credential store). false: MDB_NOSYNC | MDB_NOMETASYNC; the
  // owner calls sync() periodically (cache). Two opens of one path must agree on this.
  bool durable = true;
  // MDB_NORDAHEAD: no kernel readahead on the map. For stores read at random (the cache): a
  // lookup then brings in the pages it reads, not the 128 KiB around each, which keeps the
  // mapped file's resident share to what is used.
  bool no_readahead = false;
};

class LmdbEnv;

// A read-only or read-write transaction. Move-only; aborts on destruction unless committed.
// Views returned by get()/cursors point into the map and are valid until the transaction ends.
// A transaction must not be used by two threads at once; read transactions may move between
// threads (MDB_NOTLS). Do not begin a second transaction on the same thread while holding one.
class LmdbTxn {
 public:
  LmdbTxn(LmdbTxn&& other) noexcept;
  LmdbTxn& operator=(LmdbTxn&& other) noexcept;
  LmdbTxn(const LmdbTxn&) = delete;
  LmdbTxn& operator=(const LmdbTxn&) = delete;
  ~LmdbTxn();

  bool readOnly() const { return read_only_; }
  bool live() const { return txn_ != nullptr; }

  // The value stored under `key`, or nullopt.
  core::Result<std::optional<std::string_view>> get(MDB_dbi dbi, std::string_view key) const;
  // Stores key -> value (flags: e.g. MDB_NOOVERWRITE, then an existing key gives kBadRequest).
  core::Status put(MDB_dbi dbi, std::string_view key, std::string_view value,
                   unsigned flags = 0);
  // Deletes `key`; false when it was absent.
  core::Result<bool> del(MDB_dbi dbi, std::string_view key);
  // Calls fn(key, value) for each record whose key starts with `prefix` (all when empty), in
  // key order, until fn returns false.
  core::Status forEach(
      MDB_dbi dbi, std::string_view prefix,
      const std::function<bool(std::string_view key, std::string_view value)>& fn) const;
  // Number of records in `dbi`.
  core::Result<size_t> count(MDB_dbi dbi) const;
  // Deletes every record of `dbi` (write transactions only); the database itself stays.
  core::Status clear(MDB_dbi dbi);

  core::Status commit();
  void abort();

  MDB_txn* raw() const { return txn_; }
  const std::string& envPath() const;

 private:
  friend class LmdbEnv;
  LmdbTxn(std::shared_ptr<LmdbEnv> env, MDB_txn* txn, bool read_only);
  void release();

  friend class LmdbCursor;
  // Keeps the environment alive; while txn_ is live we are counted in its TxnGate.
  std::shared_ptr<LmdbEnv> env_;
  MDB_txn* txn_ = nullptr;
  // Cleared when the transaction ends, so cursors know whether they may still be used/closed.
  std::shared_ptr<bool> live_flag_;
  bool read_only_ = true;
};

// A cursor within one transaction. Move-only. Using it after its transaction ended gives an
// Error; destroying it afterwards is safe (LMDB itself frees write-transaction cursors then).
class LmdbCursor {
 public:
  static core::Result<LmdbCursor> open(const LmdbTxn& txn, MDB_dbi dbi);
  LmdbCursor(LmdbCursor&& other) noexcept;
  LmdbCursor& operator=(LmdbCursor&& other) noexcept;
  LmdbCursor(const LmdbCursor&) = delete;
  LmdbCursor& operator=(const LmdbCursor&) = delete;
  ~LmdbCursor();

  // Positioning: true when the cursor now points at a record, false at the end.
  core::Result<bool> first();
  core::Result<bool> last();
  core::Result<bool> seek(std::string_view key);  // first record with key >= `key`
  core::Result<bool> next();
  core::Result<bool> prev();
  std::string_view key() const { return key_; }
  std::string_view value() const { return value_; }
  // Deletes the current record (write transactions only).
  core::Status del();

 private:
  LmdbCursor(MDB_cursor* cursor, std::string path, std::shared_ptr<bool> txn_live, bool write)
      : cursor_(cursor), path_(std::move(path)), txn_live_(std::move(txn_live)), write_(write) {}
  core::Result<bool> move(MDB_cursor_op op, std::string_view key);
  bool usable() const { return cursor_ != nullptr && txn_live_ && *txn_live_; }
  void close();

  MDB_cursor* cursor_ = nullptr;
  std::string path_;
  std::shared_ptr<bool> txn_live_;
  bool write_ = false;
  std::string_view key_;
  std::string_view value_;
};

// Counts live transactions so that adopting a grown map (which LMDB allows only with no live
// transaction in the process) can wait for them. Unlike a shared_mutex it does not care which
// thread leaves: MDB_NOTLS read transactions may end on another thread than they began.
class TxnGate {
 public:
  void enter();
  void leave();
  void beginExclusive();  // waits until no transaction is live and blocks new ones
  void endExclusive();

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  size_t active_ = 0;
  bool exclusive_ = false;
};

// One LMDB environment (a directory holding data.mdb and lock.mdb). Thread-safe.
// LMDB forbids opening one environment twice in a process (closing either breaks the other's
// locks), so open() returns the process-wide instance for a path while anyone still holds it.
class LmdbEnv : public std::enable_shared_from_this<LmdbEnv> {
 public:
  // Opens (creating if absent) the environment in directory `dir` (created 0700; files 0600),
  // with MDB_NOTLS. Errors: kInternal/kUnavailable with the path and what to do; kInternal if
  // the path is already open in this process with a different `durable` setting.
  static core::Result<std::shared_ptr<LmdbEnv>> open(const std::string& dir,
                                                     const LmdbEnvOptions& options = {});
  ~LmdbEnv();
  LmdbEnv(const LmdbEnv&) = delete;
  friend class LmdbTxn;
  LmdbEnv& operator=(const LmdbEnv&) = delete;

  // The handle of named database `name` (created if absent; `flags` e.g. MDB_DUPSORT). Handles
  // are cached per environment and stay valid for its lifetime.
  // Must not be called while the calling thread holds a transaction of this environment.
  core::Result<MDB_dbi> openDbi(const std::string& name, unsigned flags = 0);
  // Several at once, in one write transaction (one fsync on a fresh environment).
  core::Result<std::vector<MDB_dbi>> openDbis(const std::vector<std::string>& names,
                                              unsigned flags = 0);

  core::Result<LmdbTxn> beginRead();
  core::Result<LmdbTxn> beginWrite();

  // Runs fn in a fresh read transaction.
  core::Status view(const std::function<core::Status(LmdbTxn&)>& fn);
  // Runs fn in a write transaction and commits when it returns ok (aborts otherwise; fn's error
  // is returned).
  core::Status update(const std::function<core::Status(LmdbTxn&)>& fn);

  // The id of the last committed transaction of any process (mdb_env_info me_last_txnid).
  uint64_t lastTxnId() const;
  // The id of the snapshot a read transaction begun now sees. Unlike lastTxnId (the newest meta
  // page), never ahead of what a read begun after it sees: a cache labelled with it holds data
  // at least that new. 0 when no read transaction can begin.
  uint64_t snapshotTxnId();
  // Flushes buffers to disk (meaningful for non-durable environments).
  core::Status sync(bool force = true);
  // Grows (or adopts another process's) map size; waits for this process's transactions.
  core::Status setMapSize(size_t bytes);
  // Clears reader slots left by dead processes; returns how many.
  core::Result<int> clearStaleReaders();

  const std::string& path() const { return path_; }
  const LmdbEnvOptions& options() const { return options_; }
  MDB_env* raw() const { return env_; }

 private:
  LmdbEnv(MDB_env* env, std::string path, LmdbEnvOptions options)
      : env_(env), path_(std::move(path)), options_(options) {}
  core::Result<LmdbTxn> begin(bool read_only);

  MDB_env* env_;
  std::string path_;
  LmdbEnvOptions options_;
  TxnGate gate_;
  std::mutex dbi_mutex_;  // mdb_dbi_open must not run concurrently with itself in a process
  std::map<std::string, MDB_dbi> dbis_;
};

// Raw helpers for code that runs its own MDB_txn (the cache's writer and read pool, the schema
// store's save): they return LMDB's code unchanged, for a caller that acts on it (a full map is
// grown, a corrupt one recovered) before translating it with lmdbError().
// LMDB never writes through mv_data of a key or of a value passed to mdb_put.
inline MDB_val lmdbVal(std::string_view s) {
  return MDB_val{s.size(), const_cast<char*>(s.data())};
}
inline std::string_view lmdbView(const MDB_val& v) {
  return std::string_view(static_cast<const char*>(v.mv_data), v.mv_size);
}
int rawGet(MDB_txn* txn, MDB_dbi dbi, std::string_view key, std::string_view* out);
int rawPut(MDB_txn* txn, MDB_dbi dbi, std::string_view key, std::string_view value);
// Deletes `key`; absent is not an error.
int rawDel(MDB_txn* txn, MDB_dbi dbi, std::string_view key);
// The first key of `dbi`, or MDB_NOTFOUND.
int firstKey(MDB_txn* txn, MDB_dbi dbi, std::string* out);
// Codes that say the environment itself is damaged (replace it), not one call's failure.
bool isCorruption(int rc);

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
  MDB_val k = lmdbVal(prefix);
  MDB_val v{};
  rc = mdb_cursor_get(raw, &k, &v, prefix.empty() ? MDB_FIRST : MDB_SET_RANGE);
  while (rc == MDB_SUCCESS) {
    const std::string_view key = lmdbView(k);
    if (key.substr(0, prefix.size()) != prefix) break;
    if (!fn(key, lmdbView(v))) break;
    rc = mdb_cursor_get(raw, &k, &v, MDB_NEXT);
  }
  return rc == MDB_NOTFOUND ? MDB_SUCCESS : rc;
}

}  // namespace keyway::storage
