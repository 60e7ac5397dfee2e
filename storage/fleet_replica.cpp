// A host's LMDB copy of its fleet's records, and the import of a single-host store into a fleet
// (see fleet_replica.hpp).
#include "storage/fleet_replica.hpp"

#include <charconv>
#include <set>

#include "storage/core_names.hpp"
#include "storage/credential_keys.hpp"
#include "storage/master_key.hpp"
#include "storage/record_codec.hpp"

namespace keyway::storage {

namespace {

// The replica's own meta records (never in etcd).
constexpr std::string_view kMetaFleetPrefix = "fleet_prefix";
constexpr std::string_view kMetaFleetRevision = "fleet_revision";
constexpr std::string_view kMetaFleetSynced = "fleet_synced_unix_ms";
constexpr std::string_view kMetaFleetHead = "fleet_head";

// The tables a fleet holds; user_tokens stays each host's.
constexpr RecordTable kFleetTables[] = {RecordTable::kTeams, RecordTable::kClients,
                                        RecordTable::kClientTokens, RecordTable::kSecrets,
                                        RecordTable::kBosaUsers};

std::optional<int64_t> parseInt(std::string_view s) {
  int64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  return v;
}

int64_t nowUnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Hashing subkeys decide token hashes: a host whose store has others than the fleet's would
// find none of the fleet's clients.
constexpr std::string_view kHashProbe = "keyway fleet hashing check";

class LmdbFleetReplica final : public FleetReplica {
 public:
  LmdbFleetReplica(CredentialEnv env, const std::string& key_file, std::string prefix, MasterKey key)
      : env_(std::move(env)), keyrings_(key_file, env_.env->path()), prefix_(std::move(prefix)),
        key_(std::move(key)) {}

  Result<FleetReplicaState> state() override {
    FleetReplicaState st;
    auto status = env_.env->view([&](LmdbTxn& txn) -> Status {
      auto prefix = txn.get(env_.dbis.meta, kMetaFleetPrefix);
      if (!prefix) return prefix.takeError();
      if (!*prefix || **prefix != prefix_) return core::okStatus();
      auto rev = txn.get(env_.dbis.meta, kMetaFleetRevision);
      if (!rev) return rev.takeError();
      if (*rev) st.revision = parseInt(**rev);
      auto synced = txn.get(env_.dbis.meta, kMetaFleetSynced);
      if (!synced) return synced.takeError();
      if (*synced) st.synced_unix_ms = parseInt(**synced).value_or(0);
      auto head = txn.get(env_.dbis.meta, kMetaFleetHead);
      if (!head) return head.takeError();
      if (*head) st.head = std::string(**head);
      return core::okStatus();
    });
    if (!status) return status.takeError();
    return st;
  }

  Result<size_t> applySnapshot(const FleetRange& range) override {
    auto keyring = fleetKeyring(range, prefix_, key_);
    if (!keyring) return keyring.takeError();
    FleetCodec codec(prefix_, *keyring);
    std::vector<FleetCodec::Record> records;
    for (const auto& e : range.entries) {
      auto record = codec.open(e.key, e.value);
      if (!record) return record.takeError();
      if (*record && (*record)->table != RecordTable::kUserTokens) records.push_back(std::move(**record));
    }
    size_t n = records.size();
    auto status = env_.env->update([&](LmdbTxn& txn) -> Status {
      if (auto st = checkHashing(txn, **keyring); !st) return st;
      for (RecordTable t : kFleetTables) {
        if (auto st = txn.clear(credentialDbi(env_.dbis, t)); !st) return st;
      }
      for (const auto& r : records) {
        if (auto st = txn.put(credentialDbi(env_.dbis, r.table), r.key, r.value); !st) return st;
      }
      // Tokens minted for users the fleet no longer has go with them.
      std::vector<std::string> orphans;
      auto scan = txn.forEach(env_.dbis.user_tokens, {}, [&](std::string_view k, std::string_view) {
        orphans.emplace_back(k);
        return true;
      });
      if (!scan) return scan;
      for (const auto& id : orphans) {
        auto user = txn.get(env_.dbis.bosa_users, id);
        if (!user) return user.takeError();
        if (!*user) {
          if (auto d = txn.del(env_.dbis.user_tokens, id); !d) return d.takeError();
        }
      }
      const FleetEntry* head = findFleetEntry(range, prefix_ + std::string(kFleetHead));
      if (auto st = txn.put(env_.dbis.meta, kMetaFleetHead, head != nullptr ? head->value : std::string()); !st) {
        return st;
      }
      return writeState(txn, range.revision);
    });
    if (!status) return status.takeError();
    codec_ = std::make_unique<FleetCodec>(std::move(codec));
    return n;
  }

  Status applyEvents(const std::vector<FleetEvent>& events, int64_t revision) override {
    const std::string meta_prefix = prefix_ + "meta/";
    const std::string head_key = prefix_ + std::string(kFleetHead);
    return env_.env->update([&](LmdbTxn& txn) -> Status {
      if (!codec_) {
        // Resuming from an earlier run's copy: its last snapshot checked that the fleet's keys
        // are this store's (checkHashing), and a change of the fleet's keys comes as a meta event.
        auto local = keyrings_.forSnapshot(txn, env_.dbis, /*live=*/true);
        if (!local) return local.takeError();
        codec_ = std::make_unique<FleetCodec>(prefix_, *local);
      }
      auto current = currentRevision(txn);
      if (!current) return current.takeError();
      for (const auto& ev : events) {
        if (ev.mod_revision <= *current) continue;  // already applied (a resumed watch)
        if (ev.key == head_key) {
          if (auto st = txn.put(env_.dbis.meta, kMetaFleetHead, ev.value.value_or(std::string())); !st) return st;
          continue;
        }
        if (ev.key.compare(0, meta_prefix.size(), meta_prefix) == 0) {
          return Error::make(ErrorCode::kBadRequest, "the fleet's meta records changed; a new snapshot is needed");
        }
        if (!ev.value) {
          // A deleted record's name is in its hash only: find it by the keys it may have.
          if (auto st = deleteByFleetKey(txn, ev.key); !st) return st;
          continue;
        }
        auto record = codec_->open(ev.key, *ev.value);
        if (!record) return record.takeError();
        if (!*record || (*record)->table == RecordTable::kUserTokens) continue;
        if (auto st = txn.put(credentialDbi(env_.dbis, (*record)->table), (*record)->key, (*record)->value); !st) {
          return st;
        }
        if ((*record)->table == RecordTable::kBosaUsers) {
          // A user's record changes with its secret (or its grants): the token this host minted
          // may be the old secret's, so the next request mints one again, as on a single host.
          auto dropped = txn.del(env_.dbis.user_tokens, (*record)->key);
          if (!dropped) return dropped.takeError();
        }
      }
      return writeState(txn, std::max(revision, *current));
    });
  }

 private:
  Status checkHashing(LmdbTxn& txn, const Keyring& fleet) {
    auto local = keyrings_.forSnapshot(txn, env_.dbis, /*live=*/true);
    if (!local) return local.takeError();
    if ((*local)->tokenHash(kHashProbe) != fleet.tokenHash(kHashProbe)) {
      return Error::make(ErrorCode::kInternal,
                         "this host's credential store (" + env_.env->path() +
                             ") has other hashing keys than the fleet's (it was re-keyed or restored on its "
                             "own): move it aside and start keywayd again to make a new replica (docs/fleet.md)");
    }
    return core::okStatus();
  }

  Result<int64_t> currentRevision(const LmdbTxn& txn) {
    auto rev = txn.get(env_.dbis.meta, kMetaFleetRevision);
    if (!rev) return rev.takeError();
    if (!*rev) return int64_t{0};
    return parseInt(**rev).value_or(0);
  }

  Status writeState(LmdbTxn& txn, int64_t revision) {
    if (auto st = txn.put(env_.dbis.meta, kMetaFleetPrefix, prefix_); !st) return st;
    if (auto st = txn.put(env_.dbis.meta, kMetaFleetRevision, std::to_string(revision)); !st) return st;
    return txn.put(env_.dbis.meta, kMetaFleetSynced, std::to_string(nowUnixMs()));
  }

  // Deletes the local record whose fleet key is `etcd_key`. The key names its table; the record
  // is found by hashing the names present in that table (a deletion carries no value to open).
  Status deleteByFleetKey(LmdbTxn& txn, const std::string& etcd_key) {
    const std::string records = prefix_ + std::string(kFleetRecords);
    if (etcd_key.compare(0, records.size(), records) != 0) return core::okStatus();
    const std::string_view rest = std::string_view(etcd_key).substr(records.size());
    const auto table = recordTableNamed(rest.substr(0, rest.find('/')));
    if (!table || *table == RecordTable::kUserTokens) return core::okStatus();
    const MDB_dbi dbi = credentialDbi(env_.dbis, *table);
    std::optional<std::string> found;
    auto scan = txn.forEach(dbi, {}, [&](std::string_view k, std::string_view) {
      if (codec_->recordKey(*table, k) == etcd_key) {
        found = std::string(k);
        return false;
      }
      return true;
    });
    if (!scan) return scan;
    if (!found) return core::okStatus();
    auto d = txn.del(dbi, *found);
    if (!d) return d.takeError();
    if (*table == RecordTable::kBosaUsers) {
      auto t = txn.del(env_.dbis.user_tokens, *found);
      if (!t) return t.takeError();
    }
    return core::okStatus();
  }

  CredentialEnv env_;
  StoreKeyrings keyrings_;
  std::string prefix_;
  MasterKey key_;
  std::unique_ptr<FleetCodec> codec_;  // of the last snapshot (the replicator's thread only)
};

}  // namespace

Result<std::unique_ptr<FleetReplica>> openFleetReplica(const std::string& state_dir,
                                                       const std::string& master_key_file,
                                                       const std::string& prefix) {
  auto env = openCredentialEnv(state_dir);
  if (!env) return env.takeError();
  auto key = loadMasterKeyFile(master_key_file);
  if (!key) return key.takeError();
  return std::unique_ptr<FleetReplica>(
      std::make_unique<LmdbFleetReplica>(std::move(env).value(), master_key_file, prefix, std::move(key).value()));
}

Result<FleetImportReport> importIntoFleet(FleetKv& kv, const std::string& prefix, const std::string& state_dir,
                                          const std::string& master_key_file) {
  auto range = kv.range(prefix);
  if (!range) return range.takeError();
  const std::string head = prefix + std::string(kFleetHead);
  if (findFleetEntry(*range, head) != nullptr) {
    return Error::make(ErrorCode::kBadRequest,
                       "the fleet prefix " + prefix + " is not empty (" + std::to_string(range->entries.size()) +
                           " keys): a store is imported only into an empty prefix");
  }
  auto env = openCredentialEnv(state_dir);
  if (!env) return env.takeError();
  StoreKeyrings keyrings(master_key_file, env->env->path());
  FleetImportReport report;
  std::vector<FleetWrite> writes;
  std::set<std::string> written;
  auto status = env->env->view([&](LmdbTxn& txn) -> Status {
    auto info = readKeyInfo(txn, env->dbis);
    if (!info) return info.takeError();
    if (!info->key_check) {
      return Error::make(ErrorCode::kBadRequest, "there is no credential store at " + env->env->path() +
                                                     " to import (run keywayctl init, or check --config)");
    }
    auto keyring = keyrings.forSnapshot(txn, env->dbis, /*live=*/true);
    if (!keyring) return keyring.takeError();
    FleetCodec codec(prefix, *keyring);
    writes = fleetMetaWrites(prefix, **keyring);
    for (RecordTable t : kFleetTables) {
      auto scan = txn.forEach(credentialDbi(env->dbis, t), {}, [&](std::string_view k, std::string_view v) {
        FleetWrite w{codec.recordKey(t, k), codec.seal(t, k, v)};
        written.insert(w.key);
        writes.push_back(std::move(w));
        ++report.records;
        switch (t) {
          case RecordTable::kTeams: ++report.counts.teams; break;
          case RecordTable::kClients: ++report.counts.clients; break;
          case RecordTable::kSecrets: ++report.counts.secrets; break;
          case RecordTable::kBosaUsers: ++report.counts.bosa_users; break;
          default: break;
        }
        return true;
      });
      if (!scan) return scan;
    }
    return core::okStatus();
  });
  if (!status) return status.takeError();
  // What an interrupted import left and this store does not have goes.
  for (const auto& e : range->entries) {
    if (e.key.compare(0, prefix.size() + kFleetRecords.size(), prefix + std::string(kFleetRecords)) == 0 &&
        written.count(e.key) == 0) {
      writes.push_back(FleetWrite{e.key, std::nullopt});
    }
  }
  writes.push_back(FleetWrite{head, newFleetHeadValue()});
  for (size_t i = 0; i < writes.size(); i += kFleetMaxWritesPerTxn) {
    std::vector<FleetWrite> chunk(writes.begin() + static_cast<std::ptrdiff_t>(i),
                                  writes.begin() + static_cast<std::ptrdiff_t>(std::min(writes.size(), i + kFleetMaxWritesPerTxn)));
    auto committed = kv.commit({FleetGuard{head, 0}}, chunk);
    if (!committed) return committed.takeError();
    if (!*committed) {
      return Error::make(ErrorCode::kUnavailable,
                         "another writer changed the fleet under " + prefix + " during the import; nothing more was "
                         "written: check it with `keywayctl fleet status`");
    }
  }
  return report;
}

}  // namespace keyway::storage
