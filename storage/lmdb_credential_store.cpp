// The credential store's records in LMDB: one transaction per unit, records encoded by
// storage/record_codec, secrets sealed under the master key. The rules are CredentialRules'.
#include "storage/lmdb_credential_store.hpp"

#include "storage/credential_keys.hpp"
#include "storage/credential_rules.hpp"
#include "storage/file_util.hpp"
#include "storage/lmdb_env.hpp"
#include "storage/master_key.hpp"
#include "storage/record_codec.hpp"
#include "storage/table_records.hpp"
#include "storage/core_names.hpp"

namespace keyway::storage {

std::string credentialEnvPath(const std::string& state_dir) {
  std::string path = state_dir;
  if (!path.empty() && path.back() != '/') path.push_back('/');
  path.append(kCredentialEnvDir);
  return path;
}

namespace {

// The credential environment's tables in one LMDB transaction.
class LmdbTables final : public RecordTables {
 public:
  LmdbTables(LmdbTxn& txn, const CredentialDbis& dbis) : txn_(txn), dbis_(dbis) {}
  Result<std::optional<std::string_view>> get(RecordTable table, std::string_view key) override {
    return txn_.get(dbi(table), key);
  }
  Status put(RecordTable table, std::string_view key, std::string_view value) override {
    return txn_.put(dbi(table), key, value);
  }
  Result<bool> del(RecordTable table, std::string_view key) override { return txn_.del(dbi(table), key); }
  Status forEach(RecordTable table, std::string_view prefix,
                 const std::function<bool(std::string_view, std::string_view)>& fn) override {
    return txn_.forEach(dbi(table), prefix, fn);
  }

 private:
  MDB_dbi dbi(RecordTable table) const { return credentialDbi(dbis_, table); }
  LmdbTxn& txn_;
  const CredentialDbis& dbis_;
};

class LmdbCredentialRecords final : public CredentialRecords {
 public:
  // `key` is the content of `key_file`, loaded by the caller (and tried first).
  static Result<std::unique_ptr<LmdbCredentialRecords>> open(CredentialEnv env,
                                                             const std::string& key_file,
                                                             const MasterKey& key) {
    std::unique_ptr<LmdbCredentialRecords> records(
        new LmdbCredentialRecords(std::move(env), key_file));
    auto verified = records->verifyOrInitialise(key);
    if (!verified) return verified.takeError();
    return records;
  }

  Status view(const Unit& fn) override {
    return env_.env->view([&](LmdbTxn& txn) { return run(txn, fn); });
  }
  Status update(const Unit& fn) override {
    return env_.env->update([&](LmdbTxn& txn) { return run(txn, fn); });
  }
  // An update that wrote nothing commits no new transaction id. The id of a snapshot, not of the
  // newest meta page: during a commit by another writer (keywayctl, the fleet replica) the meta
  // page moves first, and a cache labelled with it could keep what a read still saw before.
  uint64_t generation() override { return env_.env->snapshotTxnId(); }
  std::shared_ptr<const Keyring> keyring() const override { return keyrings_.latest(); }

 private:
  LmdbCredentialRecords(CredentialEnv env, const std::string& key_file)
      : env_(std::move(env)), keyrings_(key_file, env_.env->path()) {}
  Status verifyOrInitialise(const MasterKey& key);

  // Each unit with the keyring of its own snapshot: a rekey by another process re-seals every
  // record in one commit, and a unit that begins after it opens them with the new key.
  Status run(LmdbTxn& txn, const Unit& fn) {
    auto keyring = keyrings_.forSnapshot(txn, env_.dbis, /*live=*/true);
    if (!keyring) return keyring.takeError();
    LmdbTables tables(txn, env_.dbis);
    auto records = tableRecordsTxn(tables, **keyring);
    return fn(*records);
  }

  CredentialEnv env_;
  StoreKeyrings keyrings_;
};

// On a fresh environment writes the meta records; otherwise verifies them. Errors (kInternal):
// newer schema, damaged meta, or a master key that does not match (fails closed).
Status LmdbCredentialRecords::verifyOrInitialise(const MasterKey& key) {
  const CredentialDbis& dbis = env_.dbis;
  const std::string& path = env_.env->path();
  // Returns true when the meta records were found (and verified), false when there are none.
  auto verify = [&](const LmdbTxn& txn) -> Result<bool> {
    auto info = readKeyInfo(txn, dbis);
    if (!info) return info.takeError();
    if (!info->schema_version && !info->key_check) return false;
    if (!info->schema_version || !info->key_check) {
      return Error::make(ErrorCode::kInternal,
                         "credential store " + path +
                             " is damaged (incomplete meta records); restore it from backup");
    }
    if (*info->schema_version != kSchemaVersion) {
      return Error::make(ErrorCode::kInternal,
                         "credential store " + path + " has schema version " +
                             std::to_string(*info->schema_version) +
                             "; this keyway supports version " + std::to_string(kSchemaVersion) +
                             " (upgrade keyway)");
    }
    auto keyring = keyrings_.forSnapshot(txn, dbis, /*live=*/false, &key);
    if (!keyring) return keyring.takeError();
    return true;
  };

  auto txn = env_.env->beginRead();
  if (!txn) return txn.takeError();
  auto found = verify(*txn);
  txn->abort();
  if (!found) return found.takeError();
  if (*found) return core::okStatus();

  // Fresh environment: write the meta records, re-checking inside the write transaction in case
  // another process (keywayctl and keywayd starting together) got there first.
  auto initialised = env_.env->update([&](LmdbTxn& wtxn) -> Status {
    auto again = verify(wtxn);
    if (!again) return again.takeError();
    if (*again) return core::okStatus();
    for (MDB_dbi dbi : {dbis.teams, dbis.clients, dbis.secrets, dbis.bosa_users}) {
      auto n = wtxn.count(dbi);
      if (!n) return n.takeError();
      if (*n != 0) {
        return Error::make(ErrorCode::kInternal,
                           "credential store " + path +
                               " has records but no key check; it is damaged, restore it from "
                               "backup");
      }
    }
    auto status = wtxn.put(dbis.meta, kMetaSchemaVersion, encodeSchemaVersion(kSchemaVersion));
    if (!status) return status;
    auto keyring = Keyring::create(key);
    if (!keyring) return keyring.takeError();
    return writeKeyRecords(wtxn, dbis, *keyring);
  });
  if (!initialised) return initialised;
  // Learn the keyring of what is now stored (ours, or the other process's).
  return env_.env->view([&](LmdbTxn& rtxn) -> Status {
    auto keyring = keyrings_.forSnapshot(rtxn, dbis, /*live=*/false, &key);
    if (!keyring) return keyring.takeError();
    return core::okStatus();
  });
}

}  // namespace

// --- factory and init -------------------------------------------------------------------------

Result<std::unique_ptr<core::CredentialStore>> openLmdbCredentialStore(
    const std::string& state_dir, const std::string& master_key_file,
    std::shared_ptr<const core::Clock> clock) {
  if (state_dir.empty()) return Error::make(ErrorCode::kInternal, "no state directory configured");
  std::optional<CredentialEnv> env;
  // A rekey that stopped half-way is completed or rolled back first: it may rename the key file.
  if (pathExists(nextMasterKeyFile(master_key_file))) {
    auto opened = openCredentialEnv(state_dir);
    if (!opened) return opened.takeError();
    auto settled = settleKeyFiles(*opened, master_key_file);
    if (!settled) return settled.takeError();
    env = std::move(opened).value();
  }
  // The key next: without it nothing (not even an empty environment) is created.
  auto key = loadMasterKeyFile(master_key_file);
  if (!key) return key.takeError();
  if (!env) {
    auto opened = openCredentialEnv(state_dir);
    if (!opened) return opened.takeError();
    env = std::move(opened).value();
  }
  auto records = LmdbCredentialRecords::open(std::move(*env), master_key_file, *key);
  if (!records) return records.takeError();
  return std::unique_ptr<core::CredentialStore>(
      std::make_unique<CredentialRules>(std::move(records).value(), std::move(clock)));
}

Result<InitReport> initStateDir(const std::string& state_dir,
                                const std::string& master_key_file) {
  if (state_dir.empty()) return Error::make(ErrorCode::kInternal, "no state directory configured");
  InitReport report;
  report.env_path = credentialEnvPath(state_dir);
  auto dir = ensurePrivateDirectory(state_dir, &report.created_state_dir);
  if (!dir) return dir.takeError();
  if (!pathExists(master_key_file)) {
    auto created = createMasterKeyFile(master_key_file);
    if (!created) return created.takeError();
    report.created_master_key = true;
  }
  report.created_store = !pathExists(report.env_path + "/data.mdb");
  auto store = openLmdbCredentialStore(state_dir, master_key_file);
  if (!store) return store.takeError();
  return report;
}

}  // namespace keyway::storage
