// The credential store's records in LMDB: one transaction per unit, records encoded by
// storage/record_codec, secrets sealed under the master key. The rules are CredentialRules'.
#include "storage/lmdb_credential_store.hpp"

#include "storage/credential_keys.hpp"
#include "storage/credential_rules.hpp"
#include "storage/file_util.hpp"
#include "storage/lmdb_env.hpp"
#include "storage/master_key.hpp"
#include "storage/record_codec.hpp"
#include "storage/core_names.hpp"

namespace keyway::storage {

std::string credentialEnvPath(const std::string& state_dir) {
  std::string path = state_dir;
  if (!path.empty() && path.back() != '/') path.push_back('/');
  path.append(kCredentialEnvDir);
  return path;
}

namespace {

// Decodes every record of `dbi` with `decode(key, value) -> Result<T>` and maps it with `take`.
template <class T, class Decode, class Take>
Status collectAll(const LmdbTxn& txn, MDB_dbi dbi, Decode decode, Take take,
                  std::vector<T>* out) {
  Status scan = core::okStatus();
  auto iterated = txn.forEach(dbi, {}, [&](std::string_view k, std::string_view v) {
    auto decoded = decode(k, v);
    if (!decoded) {
      scan = decoded.takeError();
      return false;
    }
    out->push_back(take(std::move(decoded).value()));
    return true;
  });
  if (!iterated) return iterated;
  return scan;
}

// One LMDB transaction seen as credential records.
class LmdbRecordsTxn final : public CredentialRecordsTxn {
 public:
  LmdbRecordsTxn(LmdbTxn& txn, const CredentialDbis& dbis, const Keyring& keyring)
      : txn_(txn), dbis_(dbis), keyring_(keyring) {}

  const Keyring& keyring() const override { return keyring_; }

  Result<std::optional<core::TeamRecord>> team(std::string_view name) override {
    return get(dbis_.teams, name, decodeTeam);
  }
  Result<std::vector<core::TeamRecord>> teams() override {
    std::vector<core::TeamRecord> out;
    auto status = collectAll(
        txn_, dbis_.teams, decodeTeam, [](core::TeamRecord t) { return t; }, &out);
    if (!status) return status.takeError();
    return out;
  }
  Status putTeam(const core::TeamRecord& team) override {
    return txn_.put(dbis_.teams, team.name, encodeTeam(team));
  }
  Status deleteTeam(std::string_view name) override { return del(dbis_.teams, name); }

  Result<std::optional<StoredClient>> client(std::string_view name) override {
    return get(dbis_.clients, name, decodeClient);
  }
  Result<std::vector<StoredClient>> clients() override {
    std::vector<StoredClient> out;
    auto status = collectAll(
        txn_, dbis_.clients, decodeClient, [](StoredClient c) { return c; }, &out);
    if (!status) return status.takeError();
    return out;
  }
  Status putClient(const StoredClient& client) override {
    return txn_.put(dbis_.clients, client.client.name, encodeClient(client));
  }
  Status deleteClient(std::string_view name) override { return del(dbis_.clients, name); }
  Result<std::optional<std::string>> tokenOwner(std::string_view token_hash) override {
    return get(dbis_.client_tokens, token_hash, decodeClientTokenRef);
  }
  Status putTokenOwner(std::string_view token_hash, std::string_view client) override {
    return txn_.put(dbis_.client_tokens, token_hash, encodeClientTokenRef(client));
  }
  Status deleteTokenOwner(std::string_view token_hash) override {
    return del(dbis_.client_tokens, token_hash);
  }

  Result<std::optional<core::SecretString>> secret(std::string_view team,
                                                   std::string_view name) override {
    const std::string key = secretKey(team, name);
    auto stored = get(dbis_.secrets, key, decodeSecret);
    if (!stored) return stored.takeError();
    if (!*stored) return std::optional<core::SecretString>();
    return open((*stored)->sealed, table::kSecrets, key);
  }
  Result<std::vector<core::SecretInfo>> secrets() override {
    std::vector<core::SecretInfo> out;
    auto status = collectAll(  // never decrypted: listing shows no values
        txn_, dbis_.secrets, decodeSecret,
        [](StoredSecret s) { return core::SecretInfo{s.name, s.team, s.updated_unix}; }, &out);
    if (!status) return status.takeError();
    return out;
  }
  Result<std::vector<std::string>> secretNamesOf(std::string_view team) override {
    std::vector<std::string> out;
    const std::string prefix = secretKey(team, "");
    auto iterated = txn_.forEach(dbis_.secrets, prefix, [&](std::string_view k, std::string_view) {
      out.emplace_back(k.substr(prefix.size()));
      return true;
    });
    if (!iterated) return iterated.takeError();
    return out;
  }
  Status putSecret(std::string_view team, std::string_view name, int64_t updated_unix,
                   const core::SecretString& value) override {
    const std::string key = secretKey(team, name);
    return txn_.put(
        dbis_.secrets, key,
        encodeSecret(updated_unix,
                     keyring_.seal(value.view(), associatedData(table::kSecrets, key))));
  }
  Result<bool> deleteSecret(std::string_view team, std::string_view name) override {
    return txn_.del(dbis_.secrets, secretKey(team, name));
  }

  Result<std::optional<core::BosaUserRecord>> user(std::string_view id) override {
    auto stored = get(dbis_.bosa_users, id, decodeBosaUser);
    if (!stored) return stored.takeError();
    if (!*stored) return std::optional<core::BosaUserRecord>();
    return std::optional<core::BosaUserRecord>(std::move((*stored)->user));
  }
  Result<std::vector<core::BosaUserRecord>> users() override {
    std::vector<core::BosaUserRecord> out;
    auto status = collectAll(txn_, dbis_.bosa_users, decodeBosaUser,
                             [](StoredBosaUser u) { return std::move(u.user); }, &out);
    if (!status) return status.takeError();
    return out;
  }
  Result<std::optional<core::SecretString>> userSecret(std::string_view id) override {
    auto stored = get(dbis_.bosa_users, id, decodeBosaUser);
    if (!stored) return stored.takeError();
    if (!*stored) return std::optional<core::SecretString>();
    return open((*stored)->sealed_secret, table::kBosaUsers, id);
  }
  Status putUser(const core::BosaUserRecord& user, const core::SecretString& secret) override {
    StoredBosaUser record{
        user, keyring_.seal(secret.view(), associatedData(table::kBosaUsers, user.identifier))};
    return txn_.put(dbis_.bosa_users, user.identifier, encodeBosaUser(record));
  }
  // The sealed secret's associated data is its own key, so it stays valid re-encoded.
  Status putUserTeams(std::string_view id, const std::vector<std::string>& teams) override {
    auto stored = get(dbis_.bosa_users, id, decodeBosaUser);
    if (!stored) return stored.takeError();
    if (!*stored) return core::okStatus();
    (*stored)->user.teams = teams;
    return txn_.put(dbis_.bosa_users, id, encodeBosaUser(**stored));
  }
  Result<bool> deleteUser(std::string_view id) override { return txn_.del(dbis_.bosa_users, id); }
  Result<std::optional<core::UserToken>> userToken(std::string_view id) override {
    auto stored = get(dbis_.user_tokens, id, decodeUserToken);
    if (!stored) return stored.takeError();
    if (!*stored) return std::optional<core::UserToken>();
    auto token = open((*stored)->sealed_token, table::kUserTokens, id);
    if (!token) return token.takeError();
    return std::optional<core::UserToken>(
        core::UserToken{std::move(**token), (*stored)->expires_unix});
  }
  Status putUserToken(std::string_view id, const core::UserToken& token) override {
    StoredUserToken stored{token.expires_unix,
                           keyring_.seal(token.token.view(),
                                         associatedData(table::kUserTokens, id))};
    return txn_.put(dbis_.user_tokens, id, encodeUserToken(stored));
  }
  Status deleteUserToken(std::string_view id) override { return del(dbis_.user_tokens, id); }

 private:
  // The record under `key` decoded, or nullopt.
  template <class Decode>
  auto get(MDB_dbi dbi, std::string_view key, Decode decode)
      -> Result<std::optional<std::decay_t<decltype(*decode(key, key))>>> {
    using T = std::decay_t<decltype(*decode(key, key))>;
    auto raw = txn_.get(dbi, key);
    if (!raw) return raw.takeError();
    if (!*raw) return std::optional<T>();
    auto decoded = decode(key, **raw);
    if (!decoded) return decoded.takeError();
    return std::optional<T>(std::move(decoded).value());
  }
  Status del(MDB_dbi dbi, std::string_view key) {
    auto deleted = txn_.del(dbi, key);
    if (!deleted) return deleted.takeError();
    return core::okStatus();
  }
  Result<std::optional<core::SecretString>> open(std::string_view sealed, std::string_view table,
                                                 std::string_view key) {
    auto value = keyring_.open(sealed, associatedData(table, key));
    if (!value) return value.takeError();
    return std::optional<core::SecretString>(std::move(value).value());
  }

  LmdbTxn& txn_;
  const CredentialDbis& dbis_;
  const Keyring& keyring_;
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
  // An update that wrote nothing commits no new transaction id.
  uint64_t generation() override { return env_.env->lastTxnId(); }
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
    LmdbRecordsTxn records(txn, env_.dbis, **keyring);
    return fn(records);
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
