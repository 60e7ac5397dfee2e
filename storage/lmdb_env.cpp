// LMDB environment, transactions and cursors; the one place LMDB codes become core::Error.
#include "storage/lmdb_env.hpp"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <string>
#include <utility>

#include "storage/file_util.hpp"
#include "storage/core_names.hpp"

namespace keyway::storage {

namespace {

// The process-wide registry of open environments (LMDB: "do not have open an LMDB database twice
// in the same process at the same time"). Keyed by canonical path. A forked child must not use
// its parent's handles (lmdb.h, "Caveats"), so entries belong to the pid that opened them.
struct Registry {
  // Recursive: dropping the last reference (which closes the env under this lock) may happen
  // while open() holds it.
  std::recursive_mutex mutex;
  pid_t pid = 0;
  std::map<std::string, std::weak_ptr<LmdbEnv>> envs;
};

Registry& registry() {
  static Registry* r = new Registry();  // never destroyed: envs may outlive static destruction
  return *r;
}

// Narrows a mode an operator widened; mdb_env_open creates the files 0600. Best effort, and
// silent: LmdbEnv reports only through the Errors of its calls, and refusing to open over a
// mode is loadMasterKeyFile's job, not the environment's.
void tightenMode(const std::string& file) {
  struct stat st {};
  if (::stat(file.c_str(), &st) == 0 && (st.st_mode & 077) != 0) {
    ::chmod(file.c_str(), st.st_mode & 0700);
  }
}

}  // namespace

Error lmdbError(int rc, std::string_view operation, std::string_view env_path) {
  std::string msg(operation);
  msg += " failed on LMDB environment ";
  msg += env_path;
  msg += ": ";
  ErrorCode code = ErrorCode::kInternal;
  switch (rc) {
    case MDB_MAP_FULL:
      code = ErrorCode::kUnavailable;
      msg += "the database map is full; raise its map size or free space (e.g. purge the cache)";
      break;
    case MDB_READERS_FULL:
      code = ErrorCode::kUnavailable;
      msg += "too many concurrent readers (reader table full); retry, and check for stuck "
             "processes with `mdb_stat -r`";
      break;
    case MDB_MAP_RESIZED:
      code = ErrorCode::kUnavailable;
      msg += "another process keeps resizing the map; retry";
      break;
    case MDB_TXN_FULL:
    case MDB_CURSOR_FULL:
    case MDB_PAGE_FULL:
      msg += std::string(mdb_strerror(rc)) + " (transaction too large)";
      break;
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_PANIC:
      msg += std::string(mdb_strerror(rc)) +
             "; the database is damaged: stop keyway and restore the state directory from backup";
      break;
    case MDB_INVALID:
    case MDB_VERSION_MISMATCH:
      msg += std::string(mdb_strerror(rc)) +
             "; the files are not an LMDB environment this build can read";
      break;
    case MDB_KEYEXIST:
      code = ErrorCode::kBadRequest;
      msg += "the record already exists";
      break;
    case MDB_DBS_FULL:
      msg += "too many named databases (raise max_dbs)";
      break;
    case EIO:
      // LMDB reports a write cut short by a full filesystem as EIO (a short pwrite): say so
      // when the filesystem is indeed full, since that is what an operator can act on.
      if (struct statvfs fs{}; statvfs(std::string(env_path).c_str(), &fs) == 0 &&
                              static_cast<unsigned long long>(fs.f_bavail) * fs.f_frsize < (1ull << 20)) {
        code = ErrorCode::kUnavailable;
        msg += "no space left on device (input/output error while the filesystem is full); free disk space";
      } else {
        msg += mdb_strerror(rc);
      }
      break;
    case ENOSPC:
      code = ErrorCode::kUnavailable;
      msg += "no space left on device; free disk space";
      break;
    case EACCES:
    case EPERM:
      msg += "permission denied; run as the user that owns the state directory";
      break;
    case ENOENT:
      msg += "no such file or directory";
      break;
    default:
      msg += mdb_strerror(rc);  // also formats plain errno values
      break;
  }
  return Error::make(code, std::move(msg));
}

int rawGet(MDB_txn* txn, MDB_dbi dbi, std::string_view key, std::string_view* out) {
  MDB_val k = lmdbVal(key);
  MDB_val v{};
  const int rc = mdb_get(txn, dbi, &k, &v);
  if (rc == MDB_SUCCESS) *out = lmdbView(v);
  return rc;
}

int rawPut(MDB_txn* txn, MDB_dbi dbi, std::string_view key, std::string_view value) {
  MDB_val k = lmdbVal(key);
  MDB_val v = lmdbVal(value);
  return mdb_put(txn, dbi, &k, &v, 0);
}

int rawDel(MDB_txn* txn, MDB_dbi dbi, std::string_view key) {
  MDB_val k = lmdbVal(key);
  const int rc = mdb_del(txn, dbi, &k, nullptr);
  return rc == MDB_NOTFOUND ? MDB_SUCCESS : rc;
}

int firstKey(MDB_txn* txn, MDB_dbi dbi, std::string* out) {
  MDB_cursor* raw = nullptr;
  int rc = mdb_cursor_open(txn, dbi, &raw);
  if (rc != MDB_SUCCESS) return rc;
  CursorPtr cursor(raw);
  MDB_val k{}, v{};
  rc = mdb_cursor_get(raw, &k, &v, MDB_FIRST);
  if (rc == MDB_SUCCESS) *out = std::string(lmdbView(k));
  return rc;
}

bool isCorruption(int rc) {
  return rc == MDB_CORRUPTED || rc == MDB_PAGE_NOTFOUND || rc == MDB_PANIC ||
         rc == MDB_INVALID || rc == MDB_VERSION_MISMATCH || rc == MDB_BAD_TXN;
}

// ---------------------------------------------------------------------------------------------
// LmdbTxn

void TxnGate::enter() {
  std::unique_lock<std::mutex> lock(mutex_);
  cv_.wait(lock, [&] { return !exclusive_; });
  ++active_;
}

void TxnGate::leave() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (--active_ == 0) cv_.notify_all();
}

void TxnGate::beginExclusive() {
  std::unique_lock<std::mutex> lock(mutex_);
  cv_.wait(lock, [&] { return !exclusive_; });
  exclusive_ = true;
  cv_.wait(lock, [&] { return active_ == 0; });
}

void TxnGate::endExclusive() {
  std::lock_guard<std::mutex> lock(mutex_);
  exclusive_ = false;
  cv_.notify_all();
}

LmdbTxn::LmdbTxn(std::shared_ptr<LmdbEnv> env, MDB_txn* txn, bool read_only)
    : env_(std::move(env)),
      txn_(txn),
      live_flag_(std::make_shared<bool>(true)),
      read_only_(read_only) {}

LmdbTxn::LmdbTxn(LmdbTxn&& other) noexcept
    : env_(std::move(other.env_)),
      txn_(std::exchange(other.txn_, nullptr)),
      live_flag_(std::move(other.live_flag_)),
      read_only_(other.read_only_) {}

LmdbTxn& LmdbTxn::operator=(LmdbTxn&& other) noexcept {
  if (this != &other) {
    abort();
    env_ = std::move(other.env_);
    txn_ = std::exchange(other.txn_, nullptr);
    live_flag_ = std::move(other.live_flag_);
    read_only_ = other.read_only_;
  }
  return *this;
}

LmdbTxn::~LmdbTxn() { abort(); }

const std::string& LmdbTxn::envPath() const {
  static const std::string kNone = "(closed)";
  return env_ ? env_->path() : kNone;
}

void LmdbTxn::release() {
  txn_ = nullptr;
  if (live_flag_) *live_flag_ = false;
  env_->gate_.leave();
}

void LmdbTxn::abort() {
  if (txn_ != nullptr) {
    mdb_txn_abort(txn_);
    release();
  }
}

Status LmdbTxn::commit() {
  if (txn_ == nullptr) {
    return Error::make(ErrorCode::kInternal, "commit on a finished LMDB transaction");
  }
  const int rc = mdb_txn_commit(txn_);  // frees the txn whatever the outcome
  release();
  if (rc != MDB_SUCCESS) return lmdbError(rc, "commit", envPath());
  return core::okStatus();
}

Result<std::optional<std::string_view>> LmdbTxn::get(MDB_dbi dbi, std::string_view key) const {
  if (txn_ == nullptr) return Error::make(ErrorCode::kInternal, "get on a finished transaction");
  if (key.empty() || key.size() > kMaxKeySize) return std::optional<std::string_view>();
  MDB_val k = lmdbVal(key);
  MDB_val v{};
  const int rc = mdb_get(txn_, dbi, &k, &v);
  if (rc == MDB_NOTFOUND) return std::optional<std::string_view>();
  if (rc != MDB_SUCCESS) return lmdbError(rc, "read", envPath());
  return std::optional<std::string_view>(lmdbView(v));
}

Status LmdbTxn::put(MDB_dbi dbi, std::string_view key, std::string_view value, unsigned flags) {
  if (txn_ == nullptr || read_only_) {
    return Error::make(ErrorCode::kInternal, "put outside a write transaction");
  }
  if (key.empty() || key.size() > kMaxKeySize) {
    return Error::make(ErrorCode::kBadRequest, "LMDB key is empty or too long");
  }
  MDB_val k = lmdbVal(key);
  MDB_val v = lmdbVal(value);
  const int rc = mdb_put(txn_, dbi, &k, &v, flags);
  if (rc != MDB_SUCCESS) return lmdbError(rc, "write", envPath());
  return core::okStatus();
}

Result<bool> LmdbTxn::del(MDB_dbi dbi, std::string_view key) {
  if (txn_ == nullptr || read_only_) {
    return Error::make(ErrorCode::kInternal, "delete outside a write transaction");
  }
  if (key.empty() || key.size() > kMaxKeySize) return false;
  MDB_val k = lmdbVal(key);
  const int rc = mdb_del(txn_, dbi, &k, nullptr);
  if (rc == MDB_NOTFOUND) return false;
  if (rc != MDB_SUCCESS) return lmdbError(rc, "delete", envPath());
  return true;
}

Status LmdbTxn::forEach(
    MDB_dbi dbi, std::string_view prefix,
    const std::function<bool(std::string_view key, std::string_view value)>& fn) const {
  auto cursor = LmdbCursor::open(*this, dbi);
  if (!cursor) return cursor.takeError();
  auto pos = prefix.empty() ? cursor->first() : cursor->seek(prefix);
  while (true) {
    if (!pos) return pos.takeError();
    if (!*pos) break;
    const std::string_view key = cursor->key();
    if (key.substr(0, prefix.size()) != prefix) break;
    if (!fn(key, cursor->value())) break;
    pos = cursor->next();
  }
  return core::okStatus();
}

Result<size_t> LmdbTxn::count(MDB_dbi dbi) const {
  MDB_stat st{};
  const int rc = mdb_stat(txn_, dbi, &st);
  if (rc != MDB_SUCCESS) return lmdbError(rc, "stat", envPath());
  return static_cast<size_t>(st.ms_entries);
}

Status LmdbTxn::clear(MDB_dbi dbi) {
  if (txn_ == nullptr || read_only_) {
    return Error::make(ErrorCode::kInternal, "clear outside a write transaction");
  }
  const int rc = mdb_drop(txn_, dbi, 0);
  if (rc != MDB_SUCCESS) return lmdbError(rc, "clear database", envPath());
  return core::okStatus();
}

// ---------------------------------------------------------------------------------------------
// LmdbCursor

Result<LmdbCursor> LmdbCursor::open(const LmdbTxn& txn, MDB_dbi dbi) {
  if (!txn.live()) return Error::make(ErrorCode::kInternal, "cursor on a finished transaction");
  MDB_cursor* cursor = nullptr;
  const int rc = mdb_cursor_open(txn.raw(), dbi, &cursor);
  if (rc != MDB_SUCCESS) return lmdbError(rc, "open cursor", txn.envPath());
  return LmdbCursor(cursor, txn.envPath(), txn.live_flag_, !txn.readOnly());
}

LmdbCursor::LmdbCursor(LmdbCursor&& other) noexcept
    : cursor_(std::exchange(other.cursor_, nullptr)),
      path_(std::move(other.path_)),
      txn_live_(std::move(other.txn_live_)),
      write_(other.write_),
      key_(other.key_),
      value_(other.value_) {}

LmdbCursor& LmdbCursor::operator=(LmdbCursor&& other) noexcept {
  if (this != &other) {
    close();
    cursor_ = std::exchange(other.cursor_, nullptr);
    path_ = std::move(other.path_);
    txn_live_ = std::move(other.txn_live_);
    write_ = other.write_;
    key_ = other.key_;
    value_ = other.value_;
  }
  return *this;
}

LmdbCursor::~LmdbCursor() { close(); }

void LmdbCursor::close() {
  if (cursor_ == nullptr) return;
  // A write transaction frees its cursors when it ends; a read-only one never does (lmdb.h,
  // mdb_cursor_open()), so its cursors are closed whenever we are done with them.
  if (!write_ || (txn_live_ && *txn_live_)) mdb_cursor_close(cursor_);
  cursor_ = nullptr;
}

Result<bool> LmdbCursor::move(MDB_cursor_op op, std::string_view key) {
  if (!usable()) return Error::make(ErrorCode::kInternal, "cursor used after its transaction ended");
  MDB_val k = lmdbVal(key);
  MDB_val v{};
  if (op == MDB_SET_RANGE && (key.empty() || key.size() > kMaxKeySize)) {
    return Error::make(ErrorCode::kInternal, "cursor seek with an empty or oversized key");
  }
  const int rc = mdb_cursor_get(cursor_, &k, &v, op);
  if (rc == MDB_NOTFOUND) {
    key_ = {};
    value_ = {};
    return false;
  }
  if (rc != MDB_SUCCESS) return lmdbError(rc, "cursor read", path_);
  key_ = lmdbView(k);
  value_ = lmdbView(v);
  return true;
}

Result<bool> LmdbCursor::first() { return move(MDB_FIRST, {}); }
Result<bool> LmdbCursor::last() { return move(MDB_LAST, {}); }
Result<bool> LmdbCursor::seek(std::string_view key) { return move(MDB_SET_RANGE, key); }
Result<bool> LmdbCursor::next() { return move(MDB_NEXT, {}); }
Result<bool> LmdbCursor::prev() { return move(MDB_PREV, {}); }

Status LmdbCursor::del() {
  if (!usable()) return Error::make(ErrorCode::kInternal, "cursor used after its transaction ended");
  const int rc = mdb_cursor_del(cursor_, 0);
  if (rc != MDB_SUCCESS) return lmdbError(rc, "cursor delete", path_);
  return core::okStatus();
}

// ---------------------------------------------------------------------------------------------
// LmdbEnv

Result<std::shared_ptr<LmdbEnv>> LmdbEnv::open(const std::string& dir,
                                                const LmdbEnvOptions& options) {
  auto dir_status = ensurePrivateDirectory(dir);
  if (!dir_status) return dir_status.takeError();
  char resolved[PATH_MAX];
  if (::realpath(dir.c_str(), resolved) == nullptr) {
    return errnoError(ErrorCode::kInternal, "cannot resolve", dir, errno);
  }
  const std::string path(resolved);

  Registry& reg = registry();
  std::lock_guard<std::recursive_mutex> guard(reg.mutex);
  if (reg.pid != ::getpid()) {
    // Forked child: the parent's handles must not be used (nor closed) here; forget them.
    for (auto& entry : reg.envs) {
      if (auto env = entry.second.lock()) {
        new std::shared_ptr<LmdbEnv>(env);  // deliberately leaked: never mdb_env_close it
      }
    }
    reg.envs.clear();
    reg.pid = ::getpid();
  }
  if (auto it = reg.envs.find(path); it != reg.envs.end()) {
    if (auto existing = it->second.lock()) {
      if (existing->options_.durable != options.durable) {
        return Error::make(ErrorCode::kInternal,
                           "LMDB environment " + path +
                               " is already open in this process with different durability");
      }
      return existing;
    }
  }

  MDB_env* raw = nullptr;
  int rc = mdb_env_create(&raw);
  if (rc != MDB_SUCCESS) return lmdbError(rc, "create", path);
  std::unique_ptr<MDB_env, void (*)(MDB_env*)> guard_env(raw, mdb_env_close);
  if ((rc = mdb_env_set_mapsize(raw, options.map_size)) != MDB_SUCCESS ||
      (rc = mdb_env_set_maxreaders(raw, options.max_readers)) != MDB_SUCCESS ||
      (rc = mdb_env_set_maxdbs(raw, options.max_dbs)) != MDB_SUCCESS) {
    return lmdbError(rc, "configure", path);
  }
  // MDB_NOTLS: read transactions are not tied to threads (handlers hop threads and keywayctl
  // shares the environment). The credential store keeps full durability: no MDB_NOSYNC.
  unsigned flags = MDB_NOTLS;
  if (!options.durable) flags |= MDB_NOSYNC | MDB_NOMETASYNC;
  if (options.no_readahead) flags |= MDB_NORDAHEAD;
  rc = mdb_env_open(raw, path.c_str(), flags, 0600);
  if (rc != MDB_SUCCESS) return lmdbError(rc, "open", path);
  tightenMode(path + "/data.mdb");
  tightenMode(path + "/lock.mdb");
  int dead = 0;
  // Slots of crashed processes would otherwise leak forever. A failed check is not reported:
  // begin() checks again when the reader table is full, and fails with a clear Error then.
  mdb_reader_check(raw, &dead);

  // Closed under the registry lock: a concurrent open() of the same path must not create a
  // second MDB_env before this one is closed (closing would drop the new one's fcntl locks).
  std::shared_ptr<LmdbEnv> env(new LmdbEnv(guard_env.release(), path, options), [](LmdbEnv* e) {
    Registry& r = registry();
    std::lock_guard<std::recursive_mutex> lock(r.mutex);
    auto it = r.envs.find(e->path());
    if (r.pid == ::getpid() && it != r.envs.end() && it->second.expired()) r.envs.erase(it);
    delete e;
  });
  reg.envs[path] = env;
  return env;
}

LmdbEnv::~LmdbEnv() {
  if (env_ != nullptr) mdb_env_close(env_);
}

Result<MDB_dbi> LmdbEnv::openDbi(const std::string& name, unsigned flags) {
  auto dbis = openDbis({name}, flags);
  if (!dbis) return dbis.takeError();
  return dbis->front();
}

Result<std::vector<MDB_dbi>> LmdbEnv::openDbis(const std::vector<std::string>& names,
                                               unsigned flags) {
  // mdb_dbi_open must not run in two transactions of one process at once, and a handle opened
  // in a transaction is only shared once that transaction commits (lmdb.h, mdb_dbi_open()).
  std::lock_guard<std::mutex> guard(dbi_mutex_);
  std::vector<MDB_dbi> out;
  std::vector<std::string> missing;
  for (const auto& name : names) {
    if (dbis_.find(name) == dbis_.end()) missing.push_back(name);
  }
  if (!missing.empty()) {
    auto txn = beginWrite();
    if (!txn) return txn.takeError();
    std::vector<MDB_dbi> opened;
    for (const auto& name : missing) {
      MDB_dbi dbi = 0;
      const int rc = mdb_dbi_open(txn->raw(), name.c_str(), flags | MDB_CREATE, &dbi);
      if (rc != MDB_SUCCESS) return lmdbError(rc, "open database '" + name + "'", path_);
      opened.push_back(dbi);
    }
    auto committed = txn->commit();
    if (!committed) return committed.takeError();
    for (size_t i = 0; i < missing.size(); ++i) dbis_[missing[i]] = opened[i];
  }
  for (const auto& name : names) out.push_back(dbis_[name]);
  return out;
}

Result<LmdbTxn> LmdbEnv::begin(bool read_only) {
  for (int attempt = 0;; ++attempt) {
    gate_.enter();
    MDB_txn* txn = nullptr;
    const int rc = mdb_txn_begin(env_, nullptr, read_only ? MDB_RDONLY : 0, &txn);
    if (rc == MDB_SUCCESS) return LmdbTxn(shared_from_this(), txn, read_only);
    gate_.leave();
    if (attempt < 3 && rc == MDB_MAP_RESIZED) {
      // Another process grew the map: adopt its size (allowed only with no live transaction in
      // this process, hence the exclusive gate), then retry. lmdb.h, mdb_env_set_mapsize().
      gate_.beginExclusive();
      const int set_rc = mdb_env_set_mapsize(env_, 0);
      gate_.endExclusive();
      if (set_rc != MDB_SUCCESS) return lmdbError(set_rc, "adopt new map size", path_);
      continue;
    }
    if (attempt == 0 && rc == MDB_READERS_FULL) {
      int dead = 0;
      mdb_reader_check(env_, &dead);  // maybe slots of crashed processes; else fail below
      if (dead > 0) continue;
    }
    return lmdbError(rc, read_only ? "begin read" : "begin write", path_);
  }
}

Result<LmdbTxn> LmdbEnv::beginRead() { return begin(true); }
Result<LmdbTxn> LmdbEnv::beginWrite() { return begin(false); }

Status LmdbEnv::view(const std::function<Status(LmdbTxn&)>& fn) {
  auto txn = beginRead();
  if (!txn) return txn.takeError();
  return fn(*txn);  // the read transaction is aborted when it goes out of scope
}

Status LmdbEnv::update(const std::function<Status(LmdbTxn&)>& fn) {
  auto txn = beginWrite();
  if (!txn) return txn.takeError();
  auto status = fn(*txn);
  if (!status) return status;  // aborted by ~LmdbTxn
  return txn->commit();
}

uint64_t LmdbEnv::lastTxnId() const {
  MDB_envinfo info{};
  if (mdb_env_info(env_, &info) != MDB_SUCCESS) return 0;  // only for a null env: never here
  return static_cast<uint64_t>(info.me_last_txnid);
}

uint64_t LmdbEnv::snapshotTxnId() {
  auto txn = beginRead();
  if (!txn) return 0;
  const uint64_t id = static_cast<uint64_t>(mdb_txn_id(txn->raw()));
  txn->abort();
  return id;
}

Status LmdbEnv::sync(bool force) {
  const int rc = mdb_env_sync(env_, force ? 1 : 0);
  if (rc != MDB_SUCCESS) return lmdbError(rc, "sync", path_);
  return core::okStatus();
}

Status LmdbEnv::setMapSize(size_t bytes) {
  gate_.beginExclusive();
  const int rc = mdb_env_set_mapsize(env_, bytes);
  gate_.endExclusive();
  if (rc != MDB_SUCCESS) return lmdbError(rc, "set map size", path_);
  return core::okStatus();
}

Result<int> LmdbEnv::clearStaleReaders() {
  int dead = 0;
  const int rc = mdb_reader_check(env_, &dead);
  if (rc != MDB_SUCCESS) return lmdbError(rc, "reader check", path_);
  return dead;
}

}  // namespace keyway::storage
