// LmdbCredentialStore: every operation is one LMDB transaction, so admin checks (team exists,
// client still active, ...) and their writes are atomic even against another process.
#include "storage/lmdb_credential_store.hpp"

#include <algorithm>

#include "storage/credential_errors.hpp"
#include "storage/file_util.hpp"
#include "storage/master_key.hpp"
#include "storage/record_codec.hpp"

namespace keyway::storage {

using core::Error;
using core::ErrorCode;
using core::Result;
using core::Status;

std::string credentialEnvPath(const std::string& state_dir) {
  std::string path = state_dir;
  if (!path.empty() && path.back() != '/') path.push_back('/');
  path.append(kCredentialEnvDir);
  return path;
}

namespace {

std::vector<std::string> dedupe(const std::vector<std::string>& items) {
  std::vector<std::string> out;
  for (const auto& s : items) {
    if (std::find(out.begin(), out.end(), s) == out.end()) out.push_back(s);
  }
  return out;
}

}  // namespace

Result<std::unique_ptr<LmdbCredentialStore>> LmdbCredentialStore::open(
    std::shared_ptr<LmdbEnv> env, const MasterKey& master_key,
    std::shared_ptr<const core::Clock> clock) {
  if (!env) return Error::make(ErrorCode::kInternal, "no LMDB environment");
  auto dbis = env->openDbis({std::string(table::kTeams), std::string(table::kClients),
                             std::string(table::kClientTokens), std::string(table::kSecrets),
                             std::string(table::kBosaUsers), std::string(table::kUserTokens),
                             std::string(table::kMeta)});
  if (!dbis) return dbis.takeError();
  const auto& d = *dbis;
  auto keyring = Keyring::create(master_key);
  if (!keyring) return keyring.takeError();
  if (!clock) clock = std::make_shared<core::RealClock>();
  std::unique_ptr<LmdbCredentialStore> store(
      new LmdbCredentialStore(std::move(env), Dbis{d[0], d[1], d[2], d[3], d[4], d[5], d[6]},
                              std::move(keyring).value(), std::move(clock)));
  auto verified = store->verifyOrInitialise();
  if (!verified) return verified.takeError();
  return store;
}

Status LmdbCredentialStore::verifyOrInitialise() {
  const std::string check_ad = associatedData(table::kMeta, kMetaKeyCheck);
  // Returns true when the meta records were found (and verified), false when there are none.
  auto verify = [&](const LmdbTxn& txn) -> Result<bool> {
    auto version = txn.get(dbis_.meta, kMetaSchemaVersion);
    if (!version) return version.takeError();
    auto check = txn.get(dbis_.meta, kMetaKeyCheck);
    if (!check) return check.takeError();
    if (!*version && !*check) return false;
    if (!*version || !*check) {
      return Error::make(ErrorCode::kInternal,
                         "credential store " + env_->path() +
                             " is damaged (incomplete meta records); restore it from backup");
    }
    auto v = decodeSchemaVersion(**version);
    if (!v) return v.takeError();
    if (*v != kSchemaVersion) {
      return Error::make(ErrorCode::kInternal,
                         "credential store " + env_->path() + " has schema version " +
                             std::to_string(*v) + "; this keyway supports version " +
                             std::to_string(kSchemaVersion) + " (upgrade keyway)");
    }
    auto sealed = decodeKeyCheck(**check);
    if (!sealed) return sealed.takeError();
    auto opened = keyring_.open(*sealed, check_ad);
    if (!opened || !core::constantTimeEquals(opened->view(), kKeyCheckPlaintext)) {
      return Error::make(ErrorCode::kInternal,
                         "master key does not match this state directory (" + env_->path() +
                             "): use the master key it was initialised with");
    }
    return true;
  };

  auto txn = env_->beginRead();
  if (!txn) return txn.takeError();
  auto found = verify(*txn);
  txn->abort();
  if (!found) return found.takeError();
  if (*found) return core::okStatus();

  // Fresh environment: write the meta records, re-checking inside the write transaction in case
  // another process (keywayctl and keywayd starting together) got there first.
  return env_->update([&](LmdbTxn& wtxn) -> Status {
    auto again = verify(wtxn);
    if (!again) return again.takeError();
    if (*again) return core::okStatus();
    for (MDB_dbi dbi : {dbis_.teams, dbis_.clients, dbis_.secrets, dbis_.bosa_users}) {
      auto n = wtxn.count(dbi);
      if (!n) return n.takeError();
      if (*n != 0) {
        return Error::make(ErrorCode::kInternal,
                           "credential store " + env_->path() +
                               " has records but no key check; it is damaged, restore it from "
                               "backup");
      }
    }
    auto status = wtxn.put(dbis_.meta, kMetaSchemaVersion, encodeSchemaVersion(kSchemaVersion));
    if (!status) return status;
    return wtxn.put(dbis_.meta, kMetaKeyCheck,
                    encodeKeyCheck(keyring_.seal(kKeyCheckPlaintext, check_ad)));
  });
}

Status LmdbCredentialStore::requireTeam(const LmdbTxn& txn, std::string_view team) const {
  auto found = txn.get(dbis_.teams, team);
  if (!found) return found.takeError();
  if (!*found) return errors::unknownTeam(team);
  return core::okStatus();
}

// --- request path -----------------------------------------------------------------------------

Result<std::optional<core::ClientRecord>> LmdbCredentialStore::findClientByToken(
    std::string_view token) {
  using Out = std::optional<core::ClientRecord>;
  if (!isWellFormedClientToken(token)) return Out();
  const std::string hash = keyring_.tokenHash(token);
  Out out;
  auto status = env_->view([&](LmdbTxn& txn) -> Status {
    auto ref = txn.get(dbis_.client_tokens, hash);
    if (!ref) return ref.takeError();
    if (!*ref) return core::okStatus();
    auto name = decodeClientTokenRef(hash, **ref);
    if (!name) return name.takeError();
    auto raw = txn.get(dbis_.clients, *name);
    if (!raw) return raw.takeError();
    if (!*raw) return core::okStatus();
    auto client = decodeClient(*name, **raw);
    if (!client) return client.takeError();
    // The client may have been re-created with a new token; only its current hash counts.
    if (core::constantTimeEquals(client->token_hash, hash)) out = std::move(client->client);
    return core::okStatus();
  });
  if (!status) return status.takeError();
  return out;
}

Result<std::optional<core::TeamRecord>> LmdbCredentialStore::findTeam(std::string_view name) {
  using Out = std::optional<core::TeamRecord>;
  if (!isValidName(name)) return Out();
  Out out;
  auto status = env_->view([&](LmdbTxn& txn) -> Status {
    auto raw = txn.get(dbis_.teams, name);
    if (!raw) return raw.takeError();
    if (!*raw) return core::okStatus();
    auto team = decodeTeam(name, **raw);
    if (!team) return team.takeError();
    out = std::move(team).value();
    return core::okStatus();
  });
  if (!status) return status.takeError();
  return out;
}

Result<std::optional<core::ResolvedSecret>> LmdbCredentialStore::resolveSecret(
    std::string_view name, std::string_view team) {
  using Out = std::optional<core::ResolvedSecret>;
  if (!isValidName(name)) return Out();
  Out out;
  auto status = env_->view([&](LmdbTxn& txn) -> Status {
    std::vector<std::string_view> scopes;
    if (!team.empty() && isValidName(team)) scopes.push_back(team);
    scopes.push_back(std::string_view());  // shared
    for (std::string_view scope : scopes) {
      const std::string key = secretKey(scope, name);
      auto raw = txn.get(dbis_.secrets, key);
      if (!raw) return raw.takeError();
      if (!*raw) continue;
      auto stored = decodeSecret(key, **raw);
      if (!stored) return stored.takeError();
      auto value = keyring_.open(stored->sealed, associatedData(table::kSecrets, key));
      if (!value) return value.takeError();
      std::string fingerprint = keyring_.fingerprint(value->view());
      out = core::ResolvedSecret{std::string(name),
                                 scope.empty() ? std::string("shared")
                                               : "team:" + std::string(scope),
                                 std::move(value).value(), std::move(fingerprint)};
      return core::okStatus();
    }
    return core::okStatus();
  });
  if (!status) return status.takeError();
  return out;
}

Result<std::optional<core::BosaUserRecord>> LmdbCredentialStore::findBosaUser(
    std::string_view identifier) {
  using Out = std::optional<core::BosaUserRecord>;
  if (!isValidName(identifier)) return Out();
  Out out;
  auto status = env_->view([&](LmdbTxn& txn) -> Status {
    auto raw = txn.get(dbis_.bosa_users, identifier);
    if (!raw) return raw.takeError();
    if (!*raw) return core::okStatus();
    auto user = decodeBosaUser(identifier, **raw);
    if (!user) return user.takeError();
    out = std::move(user->user);
    return core::okStatus();
  });
  if (!status) return status.takeError();
  return out;
}

Result<std::optional<core::SecretString>> LmdbCredentialStore::bosaUserSecret(
    std::string_view identifier) {
  using Out = std::optional<core::SecretString>;
  if (!isValidName(identifier)) return Out();
  Out out;
  auto status = env_->view([&](LmdbTxn& txn) -> Status {
    auto raw = txn.get(dbis_.bosa_users, identifier);
    if (!raw) return raw.takeError();
    if (!*raw) return core::okStatus();
    auto user = decodeBosaUser(identifier, **raw);
    if (!user) return user.takeError();
    auto secret =
        keyring_.open(user->sealed_secret, associatedData(table::kBosaUsers, identifier));
    if (!secret) return secret.takeError();
    out = std::move(secret).value();
    return core::okStatus();
  });
  if (!status) return status.takeError();
  return out;
}

Result<std::optional<core::UserToken>> LmdbCredentialStore::findUserToken(
    std::string_view identifier) {
  using Out = std::optional<core::UserToken>;
  if (!isValidName(identifier)) return Out();
  Out out;
  auto status = env_->view([&](LmdbTxn& txn) -> Status {
    auto raw = txn.get(dbis_.user_tokens, identifier);
    if (!raw) return raw.takeError();
    if (!*raw) return core::okStatus();
    auto stored = decodeUserToken(identifier, **raw);
    if (!stored) return stored.takeError();
    auto token =
        keyring_.open(stored->sealed_token, associatedData(table::kUserTokens, identifier));
    if (!token) return token.takeError();
    out = core::UserToken{std::move(token).value(), stored->expires_unix};
    return core::okStatus();
  });
  if (!status) return status.takeError();
  return out;
}

Status LmdbCredentialStore::storeUserToken(std::string_view identifier,
                                           const core::UserToken& token) {
  auto valid = validateName("BOSA user", identifier);
  if (!valid) return valid;
  if (token.token.empty()) return errors::badRequest("refusing to store an empty user token");
  return env_->update([&](LmdbTxn& txn) -> Status {
    auto user = txn.get(dbis_.bosa_users, identifier);
    if (!user) return user.takeError();
    if (!*user) return errors::unknownUser(identifier);
    StoredUserToken stored{token.expires_unix,
                           keyring_.seal(token.token.view(),
                                         associatedData(table::kUserTokens, identifier))};
    return txn.put(dbis_.user_tokens, identifier, encodeUserToken(stored));
  });
}

// --- admin: teams -----------------------------------------------------------------------------

Status LmdbCredentialStore::addTeam(const core::TeamRecord& team) {
  auto valid = validateName("team", team.name);
  if (!valid) return valid;
  core::TeamRecord record = team;
  if (record.all_upstreams) {
    record.upstreams.clear();
  } else {
    if (record.upstreams.empty()) return errors::noUpstreams();
    for (const auto& u : record.upstreams) {
      auto ok = validateName("upstream", u);
      if (!ok) return ok;
    }
    record.upstreams = dedupe(record.upstreams);
  }
  if (record.created_unix == 0) record.created_unix = clock_->unixSeconds();
  return env_->update([&](LmdbTxn& txn) -> Status {
    auto existing = txn.get(dbis_.teams, record.name);
    if (!existing) return existing.takeError();
    if (*existing) return errors::duplicateTeam(record.name);
    return txn.put(dbis_.teams, record.name, encodeTeam(record));
  });
}

Status LmdbCredentialStore::removeTeam(std::string_view name) {
  auto valid = validateName("team", name);
  if (!valid) return valid;
  return env_->update([&](LmdbTxn& txn) -> Status {
    auto exists = requireTeam(txn, name);
    if (!exists) return exists;
    // Active clients block the removal; revoked ones, the team's own secrets and its user
    // grants go with it, so that a later team of the same name inherits nothing.
    std::vector<StoredClient> revoked;
    size_t active = 0;
    std::string first_active;
    Status scan = core::okStatus();
    auto iterated = txn.forEach(dbis_.clients, {}, [&](std::string_view k, std::string_view v) {
      auto client = decodeClient(k, v);
      if (!client) {
        scan = client.takeError();
        return false;
      }
      if (client->client.team != name) return true;
      if (client->client.revoked) {
        revoked.push_back(std::move(client).value());
      } else if (active++ == 0) {
        first_active = client->client.name;
      }
      return true;
    });
    if (!iterated) return iterated;
    if (!scan) return scan;
    if (active > 0) return errors::teamInUse(name, active, first_active);

    std::vector<std::string> secret_keys;
    const std::string prefix = secretKey(name, "");
    iterated = txn.forEach(dbis_.secrets, prefix, [&](std::string_view k, std::string_view) {
      secret_keys.emplace_back(k);
      return true;
    });
    if (!iterated) return iterated;

    std::vector<StoredBosaUser> grants;
    iterated = txn.forEach(dbis_.bosa_users, {}, [&](std::string_view k, std::string_view v) {
      auto user = decodeBosaUser(k, v);
      if (!user) {
        scan = user.takeError();
        return false;
      }
      auto& teams = user->user.teams;
      auto it = std::find(teams.begin(), teams.end(), name);
      if (it != teams.end()) {
        teams.erase(it);
        grants.push_back(std::move(user).value());
      }
      return true;
    });
    if (!iterated) return iterated;
    if (!scan) return scan;

    for (const auto& client : revoked) {
      auto d1 = txn.del(dbis_.clients, client.client.name);
      if (!d1) return d1.takeError();
      auto d2 = txn.del(dbis_.client_tokens, client.token_hash);
      if (!d2) return d2.takeError();
    }
    for (const auto& key : secret_keys) {
      auto d = txn.del(dbis_.secrets, key);
      if (!d) return d.takeError();
    }
    for (const auto& user : grants) {
      // The sealed secret's associated data is its own key, so it stays valid re-encoded.
      auto put = txn.put(dbis_.bosa_users, user.user.identifier, encodeBosaUser(user));
      if (!put) return put;
    }
    auto d = txn.del(dbis_.teams, name);
    if (!d) return d.takeError();
    return core::okStatus();
  });
}

Result<std::vector<core::TeamRecord>> LmdbCredentialStore::listTeams() {
  std::vector<core::TeamRecord> out;
  Status scan = core::okStatus();
  auto status = env_->view([&](LmdbTxn& txn) -> Status {
    auto it = txn.forEach(dbis_.teams, {}, [&](std::string_view k, std::string_view v) {
      auto team = decodeTeam(k, v);
      if (!team) {
        scan = team.takeError();
        return false;
      }
      out.push_back(std::move(team).value());
      return true;
    });
    if (!it) return it;
    return scan;
  });
  if (!status) return status.takeError();
  return out;
}

// --- admin: clients ---------------------------------------------------------------------------

Result<core::SecretString> LmdbCredentialStore::addClient(std::string_view name,
                                                          std::string_view team) {
  auto valid = validateName("client", name);
  if (!valid) return valid.takeError();
  valid = validateName("team", team);
  if (!valid) return valid.takeError();
  core::SecretString token = generateClientToken();
  StoredClient record;
  record.client.name = std::string(name);
  record.client.team = std::string(team);
  record.client.created_unix = clock_->unixSeconds();
  record.token_hash = keyring_.tokenHash(token.view());
  auto status = env_->update([&](LmdbTxn& txn) -> Status {
    auto has_team = requireTeam(txn, team);
    if (!has_team) return has_team;
    auto existing = txn.get(dbis_.clients, name);
    if (!existing) return existing.takeError();
    if (*existing) {
      auto old = decodeClient(name, **existing);
      if (!old) return old.takeError();
      if (!old->client.revoked) return errors::duplicateClient(name);
      // Re-using the name of a revoked client: its old token must stay dead.
      auto d = txn.del(dbis_.client_tokens, old->token_hash);
      if (!d) return d.takeError();
    }
    auto put = txn.put(dbis_.client_tokens, record.token_hash,
                       encodeClientTokenRef(record.client.name));
    if (!put) return put;
    return txn.put(dbis_.clients, name, encodeClient(record));
  });
  if (!status) return status.takeError();
  return token;
}

Status LmdbCredentialStore::revokeClient(std::string_view name) {
  auto valid = validateName("client", name);
  if (!valid) return valid;
  return env_->update([&](LmdbTxn& txn) -> Status {
    auto raw = txn.get(dbis_.clients, name);
    if (!raw) return raw.takeError();
    if (!*raw) return errors::unknownClient(name);
    auto client = decodeClient(name, **raw);
    if (!client) return client.takeError();
    if (client->client.revoked) return core::okStatus();
    client->client.revoked = true;
    // The token reference stays so that the token is recognised as revoked (not unknown).
    return txn.put(dbis_.clients, name, encodeClient(*client));
  });
}

Result<std::vector<core::ClientRecord>> LmdbCredentialStore::listClients() {
  std::vector<core::ClientRecord> out;
  Status scan = core::okStatus();
  auto status = env_->view([&](LmdbTxn& txn) -> Status {
    auto it = txn.forEach(dbis_.clients, {}, [&](std::string_view k, std::string_view v) {
      auto client = decodeClient(k, v);
      if (!client) {
        scan = client.takeError();
        return false;
      }
      out.push_back(std::move(client->client));
      return true;
    });
    if (!it) return it;
    return scan;
  });
  if (!status) return status.takeError();
  return out;
}

// --- admin: secrets ---------------------------------------------------------------------------

Status LmdbCredentialStore::setSecret(std::string_view name, std::string_view team,
                                      const core::SecretString& value) {
  auto valid = validateName("secret", name);
  if (!valid) return valid;
  if (!team.empty()) {
    valid = validateName("team", team);
    if (!valid) return valid;
  }
  if (value.empty()) return errors::emptySecret();
  const std::string key = secretKey(team, name);
  const std::string record =
      encodeSecret(clock_->unixSeconds(),
                   keyring_.seal(value.view(), associatedData(table::kSecrets, key)));
  return env_->update([&](LmdbTxn& txn) -> Status {
    if (!team.empty()) {
      auto has_team = requireTeam(txn, team);
      if (!has_team) return has_team;
    }
    return txn.put(dbis_.secrets, key, record);
  });
}

Status LmdbCredentialStore::removeSecret(std::string_view name, std::string_view team) {
  auto valid = validateName("secret", name);
  if (!valid) return valid;
  if (!team.empty()) {
    valid = validateName("team", team);
    if (!valid) return valid;
  }
  return env_->update([&](LmdbTxn& txn) -> Status {
    auto deleted = txn.del(dbis_.secrets, secretKey(team, name));
    if (!deleted) return deleted.takeError();
    if (!*deleted) return errors::unknownSecret(name, team);
    return core::okStatus();
  });
}

Result<std::vector<core::SecretInfo>> LmdbCredentialStore::listSecrets() {
  std::vector<core::SecretInfo> out;
  Status scan = core::okStatus();
  auto status = env_->view([&](LmdbTxn& txn) -> Status {
    auto it = txn.forEach(dbis_.secrets, {}, [&](std::string_view k, std::string_view v) {
      auto secret = decodeSecret(k, v);  // never decrypted: listing shows no values
      if (!secret) {
        scan = secret.takeError();
        return false;
      }
      out.push_back(core::SecretInfo{secret->name, secret->team, secret->updated_unix});
      return true;
    });
    if (!it) return it;
    return scan;
  });
  if (!status) return status.takeError();
  return out;
}

// --- admin: BOSA users ------------------------------------------------------------------------

Status LmdbCredentialStore::addBosaUser(std::string_view identifier,
                                        const core::SecretString& secret,
                                        const std::vector<std::string>& teams) {
  auto valid = validateName("BOSA user", identifier);
  if (!valid) return valid;
  for (const auto& t : teams) {
    valid = validateName("team", t);
    if (!valid) return valid;
  }
  if (secret.empty()) return errors::emptySecret();
  StoredBosaUser record;
  record.user.identifier = std::string(identifier);
  record.user.teams = dedupe(teams);
  record.user.created_unix = clock_->unixSeconds();
  record.sealed_secret =
      keyring_.seal(secret.view(), associatedData(table::kBosaUsers, identifier));
  return env_->update([&](LmdbTxn& txn) -> Status {
    for (const auto& t : record.user.teams) {
      auto has_team = requireTeam(txn, t);
      if (!has_team) return has_team;
    }
    auto existing = txn.get(dbis_.bosa_users, identifier);
    if (!existing) return existing.takeError();
    if (*existing) return errors::duplicateUser(identifier);
    // A stale token of an earlier user with this identifier must not be reused.
    auto d = txn.del(dbis_.user_tokens, identifier);
    if (!d) return d.takeError();
    return txn.put(dbis_.bosa_users, identifier, encodeBosaUser(record));
  });
}

Status LmdbCredentialStore::grantBosaUser(std::string_view identifier, std::string_view team) {
  auto valid = validateName("BOSA user", identifier);
  if (!valid) return valid;
  valid = validateName("team", team);
  if (!valid) return valid;
  return env_->update([&](LmdbTxn& txn) -> Status {
    auto raw = txn.get(dbis_.bosa_users, identifier);
    if (!raw) return raw.takeError();
    if (!*raw) return errors::unknownUser(identifier);
    auto has_team = requireTeam(txn, team);
    if (!has_team) return has_team;
    auto user = decodeBosaUser(identifier, **raw);
    if (!user) return user.takeError();
    auto& teams = user->user.teams;
    if (std::find(teams.begin(), teams.end(), team) != teams.end()) return core::okStatus();
    teams.emplace_back(team);
    return txn.put(dbis_.bosa_users, identifier, encodeBosaUser(*user));
  });
}

Status LmdbCredentialStore::revokeBosaUser(std::string_view identifier, std::string_view team) {
  auto valid = validateName("BOSA user", identifier);
  if (!valid) return valid;
  valid = validateName("team", team);
  if (!valid) return valid;
  return env_->update([&](LmdbTxn& txn) -> Status {
    auto raw = txn.get(dbis_.bosa_users, identifier);
    if (!raw) return raw.takeError();
    if (!*raw) return errors::unknownUser(identifier);
    auto user = decodeBosaUser(identifier, **raw);
    if (!user) return user.takeError();
    auto& teams = user->user.teams;
    auto it = std::find(teams.begin(), teams.end(), team);
    if (it == teams.end()) return errors::userNotGranted(identifier, team);
    teams.erase(it);
    return txn.put(dbis_.bosa_users, identifier, encodeBosaUser(*user));
  });
}

Status LmdbCredentialStore::removeBosaUser(std::string_view identifier) {
  auto valid = validateName("BOSA user", identifier);
  if (!valid) return valid;
  return env_->update([&](LmdbTxn& txn) -> Status {
    auto deleted = txn.del(dbis_.bosa_users, identifier);
    if (!deleted) return deleted.takeError();
    if (!*deleted) return errors::unknownUser(identifier);
    auto token = txn.del(dbis_.user_tokens, identifier);
    if (!token) return token.takeError();
    return core::okStatus();
  });
}

Result<std::vector<core::BosaUserRecord>> LmdbCredentialStore::listBosaUsers() {
  std::vector<core::BosaUserRecord> out;
  Status scan = core::okStatus();
  auto status = env_->view([&](LmdbTxn& txn) -> Status {
    auto it = txn.forEach(dbis_.bosa_users, {}, [&](std::string_view k, std::string_view v) {
      auto user = decodeBosaUser(k, v);
      if (!user) {
        scan = user.takeError();
        return false;
      }
      out.push_back(std::move(user->user));
      return true;
    });
    if (!it) return it;
    return scan;
  });
  if (!status) return status.takeError();
  return out;
}

uint64_t LmdbCredentialStore::generation() { return env_->lastTxnId(); }

// --- factory and init -------------------------------------------------------------------------

namespace {

Error withKeyFile(Error error, const std::string& master_key_file) {
  if (error.message.find("master key does not match") != std::string::npos) {
    error.message += " (key file: " + master_key_file + ")";
  }
  return error;
}

}  // namespace

Result<std::unique_ptr<core::CredentialStore>> openLmdbCredentialStore(
    const std::string& state_dir, const std::string& master_key_file) {
  if (state_dir.empty()) return Error::make(ErrorCode::kInternal, "no state directory configured");
  // The key first: without it nothing (not even an empty environment) is created.
  auto key = loadMasterKeyFile(master_key_file);
  if (!key) return key.takeError();
  auto dir = ensurePrivateDirectory(state_dir);
  if (!dir) return dir.takeError();
  auto env = LmdbEnv::open(credentialEnvPath(state_dir));
  if (!env) return env.takeError();
  auto store = LmdbCredentialStore::open(std::move(env).value(), *key);
  if (!store) return withKeyFile(store.takeError(), master_key_file);
  return std::unique_ptr<core::CredentialStore>(std::move(store).value());
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
