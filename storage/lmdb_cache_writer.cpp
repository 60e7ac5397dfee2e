// LmdbCacheStore's writer thread: batches queued puts, invalidations, purges and recency
// updates into bounded write transactions, evicts least recently used entries above max_bytes,
// sweeps expired ones, and relieves a full map.
#include <algorithm>

#include "storage/lmdb_cache_impl.hpp"
#include "storage/memory_release.hpp"

namespace keyway::storage {

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
      if (!sweep_unfinished_) releaseFreeHeap(options_.release_free_heap_above);
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
  if (!decoded) {
    degraded("response cache at " + options_.dir + ": a damaged entry record was removed");
  }
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
  if (!decodeInfo(value, &info)) {
    degraded("response cache at " + options_.dir + ": a damaged entry record kept its LRU place");
    return MDB_SUCCESS;
  }
  if (info.tick >= tick) return MDB_SUCCESS;
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
    if (isCorruption(rc)) requestRecovery(mdb_strerror(rc));
    break;
  }
  finishBatch(ops, false, false, 0);
  if (map_stuck) {
    requestRecovery("map full");  // even a batch without puts failed: the map is stuck
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

}  // namespace keyway::storage
