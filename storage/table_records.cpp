// The credential records' encoding over any RecordTables, and tables in memory.
#include "storage/table_records.hpp"

#include "storage/core_names.hpp"
#include "storage/record_codec.hpp"

namespace keyway::storage {

std::string_view recordTableName(RecordTable t) {
  switch (t) {
    case RecordTable::kTeams: return table::kTeams;
    case RecordTable::kClients: return table::kClients;
    case RecordTable::kClientTokens: return table::kClientTokens;
    case RecordTable::kSecrets: return table::kSecrets;
    case RecordTable::kBosaUsers: return table::kBosaUsers;
    case RecordTable::kUserTokens: return table::kUserTokens;
  }
  return {};
}

std::optional<RecordTable> recordTableNamed(std::string_view name) {
  for (RecordTable t : kRecordTables) {
    if (recordTableName(t) == name) return t;
  }
  return std::nullopt;
}

namespace {

// Decodes every record of `table` with `decode(key, value) -> Result<T>` and maps it with `take`.
template <class T, class Decode, class Take>
Status collectAll(RecordTables& tables, RecordTable table, Decode decode, Take take,
                  std::vector<T>* out) {
  Status scan = core::okStatus();
  auto iterated = tables.forEach(table, {}, [&](std::string_view k, std::string_view v) {
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

// One unit's tables seen as credential records.
class TableRecordsTxn final : public CredentialRecordsTxn {
 public:
  TableRecordsTxn(RecordTables& tables, const Keyring& keyring) : txn_(tables), keyring_(keyring) {}

  const Keyring& keyring() const override { return keyring_; }

  Result<std::optional<core::TeamRecord>> team(std::string_view name) override {
    return get(RecordTable::kTeams, name, decodeTeam);
  }
  Result<std::vector<core::TeamRecord>> teams() override {
    std::vector<core::TeamRecord> out;
    auto status = collectAll(
        txn_, RecordTable::kTeams, decodeTeam, [](core::TeamRecord t) { return t; }, &out);
    if (!status) return status.takeError();
    return out;
  }
  Status putTeam(const core::TeamRecord& team) override {
    return txn_.put(RecordTable::kTeams, team.name, encodeTeam(team));
  }
  Status deleteTeam(std::string_view name) override { return del(RecordTable::kTeams, name); }

  Result<std::optional<StoredClient>> client(std::string_view name) override {
    return get(RecordTable::kClients, name, decodeClient);
  }
  Result<std::vector<StoredClient>> clients() override {
    std::vector<StoredClient> out;
    auto status = collectAll(
        txn_, RecordTable::kClients, decodeClient, [](StoredClient c) { return c; }, &out);
    if (!status) return status.takeError();
    return out;
  }
  Status putClient(const StoredClient& client) override {
    return txn_.put(RecordTable::kClients, client.client.name, encodeClient(client));
  }
  Status deleteClient(std::string_view name) override { return del(RecordTable::kClients, name); }
  Result<std::optional<std::string>> tokenOwner(std::string_view token_hash) override {
    return get(RecordTable::kClientTokens, token_hash, decodeClientTokenRef);
  }
  Status putTokenOwner(std::string_view token_hash, std::string_view client) override {
    return txn_.put(RecordTable::kClientTokens, token_hash, encodeClientTokenRef(client));
  }
  Status deleteTokenOwner(std::string_view token_hash) override {
    return del(RecordTable::kClientTokens, token_hash);
  }

  Result<std::optional<core::SecretString>> secret(std::string_view team,
                                                   std::string_view name) override {
    const std::string key = secretKey(team, name);
    auto stored = get(RecordTable::kSecrets, key, decodeSecret);
    if (!stored) return stored.takeError();
    if (!*stored) return std::optional<core::SecretString>();
    return open((*stored)->sealed, table::kSecrets, key);
  }
  Result<std::vector<core::SecretInfo>> secrets() override {
    std::vector<core::SecretInfo> out;
    auto status = collectAll(  // never decrypted: listing shows no values
        txn_, RecordTable::kSecrets, decodeSecret,
        [](StoredSecret s) { return core::SecretInfo{s.name, s.team, s.updated_unix}; }, &out);
    if (!status) return status.takeError();
    return out;
  }
  Result<std::vector<std::string>> secretNamesOf(std::string_view team) override {
    std::vector<std::string> out;
    const std::string prefix = secretKey(team, "");
    auto iterated = txn_.forEach(RecordTable::kSecrets, prefix, [&](std::string_view k, std::string_view) {
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
        RecordTable::kSecrets, key,
        encodeSecret(updated_unix,
                     keyring_.seal(value.view(), associatedData(table::kSecrets, key))));
  }
  Result<bool> deleteSecret(std::string_view team, std::string_view name) override {
    return txn_.del(RecordTable::kSecrets, secretKey(team, name));
  }

  Result<std::optional<core::BosaUserRecord>> user(std::string_view id) override {
    auto stored = get(RecordTable::kBosaUsers, id, decodeBosaUser);
    if (!stored) return stored.takeError();
    if (!*stored) return std::optional<core::BosaUserRecord>();
    return std::optional<core::BosaUserRecord>(std::move((*stored)->user));
  }
  Result<std::vector<core::BosaUserRecord>> users() override {
    std::vector<core::BosaUserRecord> out;
    auto status = collectAll(txn_, RecordTable::kBosaUsers, decodeBosaUser,
                             [](StoredBosaUser u) { return std::move(u.user); }, &out);
    if (!status) return status.takeError();
    return out;
  }
  Result<std::optional<core::SecretString>> userSecret(std::string_view id) override {
    auto stored = get(RecordTable::kBosaUsers, id, decodeBosaUser);
    if (!stored) return stored.takeError();
    if (!*stored) return std::optional<core::SecretString>();
    return open((*stored)->sealed_secret, table::kBosaUsers, id);
  }
  Status putUser(const core::BosaUserRecord& user, const core::SecretString& secret) override {
    StoredBosaUser record{
        user, keyring_.seal(secret.view(), associatedData(table::kBosaUsers, user.identifier))};
    return txn_.put(RecordTable::kBosaUsers, user.identifier, encodeBosaUser(record));
  }
  // The sealed secret's associated data is its own key, so it stays valid re-encoded.
  Status putUserTeams(std::string_view id, const std::vector<std::string>& teams) override {
    auto stored = get(RecordTable::kBosaUsers, id, decodeBosaUser);
    if (!stored) return stored.takeError();
    if (!*stored) return core::okStatus();
    (*stored)->user.teams = teams;
    return txn_.put(RecordTable::kBosaUsers, id, encodeBosaUser(**stored));
  }
  Result<bool> deleteUser(std::string_view id) override { return txn_.del(RecordTable::kBosaUsers, id); }
  Result<std::optional<core::UserToken>> userToken(std::string_view id) override {
    auto stored = get(RecordTable::kUserTokens, id, decodeUserToken);
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
    return txn_.put(RecordTable::kUserTokens, id, encodeUserToken(stored));
  }
  Status deleteUserToken(std::string_view id) override { return del(RecordTable::kUserTokens, id); }

 private:
  // The record under `key` decoded, or nullopt.
  template <class Decode>
  auto get(RecordTable dbi, std::string_view key, Decode decode)
      -> Result<std::optional<std::decay_t<decltype(*decode(key, key))>>> {
    using T = std::decay_t<decltype(*decode(key, key))>;
    auto raw = txn_.get(dbi, key);
    if (!raw) return raw.takeError();
    if (!*raw) return std::optional<T>();
    auto decoded = decode(key, **raw);
    if (!decoded) return decoded.takeError();
    return std::optional<T>(std::move(decoded).value());
  }
  Status del(RecordTable dbi, std::string_view key) {
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

  RecordTables& txn_;
  const Keyring& keyring_;
};

}  // namespace

std::unique_ptr<CredentialRecordsTxn> tableRecordsTxn(RecordTables& tables, const Keyring& keyring) {
  return std::make_unique<TableRecordsTxn>(tables, keyring);
}

Result<std::optional<std::string_view>> MapTables::get(RecordTable table, std::string_view key) {
  const auto& t = tables_[static_cast<size_t>(table)];
  auto it = t.find(key);
  if (it == t.end()) return std::optional<std::string_view>();
  return std::optional<std::string_view>(it->second);
}

Status MapTables::put(RecordTable table, std::string_view key, std::string_view value) {
  tables_[static_cast<size_t>(table)][std::string(key)] = std::string(value);
  changes_[{table, std::string(key)}] = std::string(value);
  return core::okStatus();
}

Result<bool> MapTables::del(RecordTable table, std::string_view key) {
  auto& t = tables_[static_cast<size_t>(table)];
  auto it = t.find(key);
  if (it == t.end()) return false;
  t.erase(it);
  changes_[{table, std::string(key)}] = std::nullopt;
  return true;
}

Status MapTables::forEach(RecordTable table, std::string_view prefix,
                          const std::function<bool(std::string_view, std::string_view)>& fn) {
  const auto& t = tables_[static_cast<size_t>(table)];
  for (auto it = t.lower_bound(prefix); it != t.end(); ++it) {
    if (it->first.compare(0, prefix.size(), prefix) != 0) break;
    if (!fn(it->first, it->second)) break;
  }
  return core::okStatus();
}

void MapTables::load(RecordTable table, std::string key, std::string value) {
  tables_[static_cast<size_t>(table)][std::move(key)] = std::move(value);
}

}  // namespace keyway::storage
