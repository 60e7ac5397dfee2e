// LmdbCacheStore's environment: opening it (format check, a walk of every database's edges),
// moving a damaged one aside and recreating it, adopting and growing the map size, syncing.
#include <dirent.h>
#include <errno.h>
#include <unistd.h>

#include <map>

#include "storage/file_util.hpp"
#include "storage/lmdb_cache_impl.hpp"

namespace keyway::storage {

namespace cache {

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

}  // namespace cache

namespace {

// Moves a damaged environment aside (never deletes it outright), first removing copies that
// earlier recoveries moved aside, so repeated failures cannot fill the disk. Only LMDB's own
// two files are ever unlinked. A copy that cannot be removed is logged through `warn` (not
// counted: the recovery that calls this is counted once).
core::Status moveAside(const std::string& dir, int64_t now_ms,
                       const std::function<void(const std::string&)>& warn) {
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
      if (::rmdir(path.c_str()) != 0 && errno != ENOENT) {
        warn(errnoError(core::ErrorCode::kInternal, "cannot remove an earlier damaged copy", path,
                        errno)
                 .message);
      }
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
    if (auto moved = moveAside(options_.dir, nowMs(), warner()); !moved) {
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
    rc = rawGet(raw, d.meta, "gen", &v);
    if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND) return lmdbError(rc, "read", env->path());
    if (rc == MDB_SUCCESS) generation = decodeU64(v);
    if (!same) {
      // Bump rather than reset: another process may hold pending puts of the old generation.
      ++generation;
      rc = rawPut(raw, d.meta, "gen", u64Value(generation));
      if (rc != MDB_SUCCESS) return lmdbError(rc, "reset", env->path());
    }
    rc = rawGet(raw, d.meta, "tick", &v);
    if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND) return lmdbError(rc, "read", env->path());
    if (rc == MDB_SUCCESS) tick = decodeU64(v);
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

void LmdbCacheStore::Impl::requestRecovery(const std::string& reason) {
  {
    std::lock_guard<std::mutex> lock(state_mu_);
    recovery_requested_ = true;
    recovery_reason_ = reason;
  }
  cv_.notify_all();
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
  if (auto moved = moveAside(options_.dir, nowMs(), warner()); !moved) {
    warn(moved.error().message);
  }
  if (openEnvLocked(true)) warn("response cache at " + options_.dir + " recreated empty");
}

void LmdbCacheStore::Impl::adoptMapSize() {
  std::unique_lock<std::shared_mutex> lock(*env_lock_);
  if (!env_) return;
  clearReadPoolLocked();  // no transaction of ours may be live (or pooled) across a remap
  if (auto status = env_->setMapSize(0); !status) {
    count(kDegraded);
    warn(status.error().message);
  }
}

// Grows the map by a quarter of its configured size, up to twice the configured size: the relief
// valve for a map so full that even deleting (which copies pages on write) fails. Other
// processes adopt the new size through MDB_MAP_RESIZED.
bool LmdbCacheStore::Impl::growMap() {
  std::unique_lock<std::shared_mutex> lock(*env_lock_);
  if (!env_) return false;
  MDB_envinfo info{};
  if (const int rc = mdb_env_info(env_->raw(), &info); rc != MDB_SUCCESS) {
    degraded(lmdbError(rc, "map size read", options_.dir).message);
    return false;
  }
  const size_t limit = map_size_ * 2;
  if (info.me_mapsize >= limit) return false;
  const size_t next = std::min(limit, info.me_mapsize + std::max(map_size_ / 4, size_t{1} << 20));
  clearReadPoolLocked();  // no transaction of ours may be live (or pooled) across a remap
  if (auto status = env_->setMapSize(next); !status) {
    count(kDegraded);
    warn(status.error().message);
    return false;
  }
  warn("response cache map grown to " + std::to_string(next) + " bytes (" + options_.dir + ")");
  return true;
}

void LmdbCacheStore::Impl::syncIfDirty() {
  last_sync_ = std::chrono::steady_clock::now();
  if (!dirty_) return;
  std::shared_lock<std::shared_mutex> lock(*env_lock_);
  if (env_) {
    if (auto synced = env_->sync(true); !synced) {
      count(kDegraded);
      warn(synced.error().message);
    }
  }
  dirty_ = false;
}

}  // namespace keyway::storage
