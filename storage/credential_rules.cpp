// The credential rules (docs/auth.md): names, scopes, duplicates, unknown teams, cascades. Each
// call checks and writes in one unit of the records, so a check cannot go stale before its write
// (keywayctl and keywayd share an LMDB environment).
#include "storage/credential_rules.hpp"

#include <algorithm>

#include "storage/names.hpp"

namespace keyway::storage {

using core::Result;
using core::Status;
using Txn = CredentialRecordsTxn;

namespace {

// The errors of the rules ("what failed and what to do"); tests and keywayctl's users rely on
// their codes and wording.
core::Error badRequest(std::string msg) {
  return core::Error::make(core::ErrorCode::kBadRequest, std::move(msg));
}
core::Error unknownTeam(std::string_view team) {
  return badRequest("unknown team '" + std::string(team) + "'; create it with `keywayctl team add " +
                    std::string(team) + "` or see `keywayctl team list`");
}
core::Error duplicateTeam(std::string_view team) {
  return badRequest("team '" + std::string(team) + "' already exists");
}
core::Error teamInUse(std::string_view team, size_t clients, std::string_view first) {
  return badRequest("team '" + std::string(team) + "' still has " + std::to_string(clients) +
                    " active client(s) (e.g. '" + std::string(first) +
                    "'); revoke them first with `keywayctl client revoke NAME`");
}
core::Error teamHasData(std::string_view team, const std::vector<std::string>& secrets,
                        const std::vector<std::string>& users) {
  std::string what;
  auto join = [](const std::vector<std::string>& items) {
    std::string out;
    for (const auto& item : items) out += (out.empty() ? "" : ", ") + item;
    return out;
  };
  if (!secrets.empty()) what = "its own secret(s) " + join(secrets);
  if (!users.empty()) {
    what += std::string(what.empty() ? "" : " and ") + "the grant(s) of BOSA user(s) " + join(users);
  }
  return badRequest("team '" + std::string(team) + "' still has " + what +
                    ", which would be deleted with it; run `keywayctl team rm " +
                    std::string(team) + " --force` to delete them too");
}
core::Error noUpstreams() {
  return badRequest("a team needs at least one upstream (omit --upstreams to allow all)");
}
core::Error unknownClient(std::string_view client) {
  return badRequest("unknown client '" + std::string(client) + "'; see `keywayctl client list`");
}
core::Error duplicateClient(std::string_view client) {
  return badRequest("client '" + std::string(client) +
                    "' already exists; for a new token run `keywayctl client rotate " +
                    std::string(client) + "`, or pick another name");
}
core::Error revokedClient(std::string_view client) {
  return badRequest("client '" + std::string(client) +
                    "' is revoked and gets no new token; re-create it with `keywayctl client add " +
                    std::string(client) + " --team TEAM`");
}
core::Error activeClient(std::string_view client) {
  const std::string c(client);
  return badRequest("client '" + c + "' is active (its token works); revoke it first with "
                    "`keywayctl client revoke " + c + "`, or remove it at once with "
                    "`keywayctl client rm " + c + " --force`");
}
core::Error badGrace() {
  return badRequest("the grace period must be between 0 and " +
                    std::to_string(core::kMaxRotationGraceSeconds / 86400) + " days");
}
core::Error emptySecret() { return badRequest("the secret value is empty; nothing was stored"); }
core::Error unknownSecret(std::string_view name, std::string_view team) {
  return badRequest("no secret '" + std::string(name) + "' " +
                    (team.empty() ? std::string("(shared)") : "for team '" + std::string(team) + "'") +
                    "; see `keywayctl secret list`");
}
core::Error unknownUser(std::string_view id) {
  return badRequest("unknown BOSA user '" + std::string(id) + "'; see `keywayctl bosa-user list`");
}
core::Error duplicateUser(std::string_view id) {
  return badRequest("BOSA user '" + std::string(id) + "' already exists");
}

// A secret's scope: "" is shared; a team scope must be a valid team name.
Status validateScope(std::string_view team) {
  return team.empty() ? core::okStatus() : validateName("team", team);
}

Status requireTeam(Txn& txn, std::string_view team) {
  auto found = txn.team(team);
  if (!found) return found.takeError();
  if (!*found) return unknownTeam(team);
  return core::okStatus();
}

std::vector<std::string> dedupe(const std::vector<std::string>& items) {
  std::vector<std::string> out;
  for (const auto& s : items) {
    if (std::find(out.begin(), out.end(), s) == out.end()) out.push_back(s);
  }
  return out;
}

// Runs fn (Txn& -> Result<T>) as one read-only unit of `records`.
template <class Fn>
auto readUnit(CredentialRecords& records, Fn&& fn) -> decltype(fn(std::declval<Txn&>())) {
  std::optional<decltype(fn(std::declval<Txn&>()))> out;
  auto status = records.view([&](Txn& txn) -> Status {
    out.emplace(fn(txn));
    return core::okStatus();
  });
  if (!status) return status.takeError();
  return std::move(*out);
}

// The checks of a team record before it is written: valid names, at least one upstream unless
// it has them all, no duplicates.
Status normaliseTeam(core::TeamRecord& record) {
  auto valid = validateName("team", record.name);
  if (!valid) return valid;
  if (record.all_upstreams) {
    record.upstreams.clear();
    return core::okStatus();
  }
  if (record.upstreams.empty()) return noUpstreams();
  for (const auto& u : record.upstreams) {
    auto ok = validateName("upstream", u);
    if (!ok) return ok;
  }
  record.upstreams = dedupe(record.upstreams);
  return core::okStatus();
}

// Forgets every token a client was issued, so that none of them finds anybody again.
Status deleteTokenRefs(Txn& txn, const StoredClient& client) {
  auto deleted = txn.deleteTokenOwner(client.token_hash);
  if (!deleted || client.previous_token_hash.empty()) return deleted;
  return txn.deleteTokenOwner(client.previous_token_hash);
}

// The unit of the client commands: a valid name of an existing client, then `change(txn, client)`
// in the same transaction.
template <class Change>
Status changeClient(CredentialRecords& records, std::string_view name, Change change) {
  auto valid = validateName("client", name);
  if (!valid) return valid;
  return records.update([&](Txn& txn) -> Status {
    auto client = txn.client(name);
    if (!client) return client.takeError();
    if (!*client) return unknownClient(name);
    return change(txn, **client);
  });
}

// The unit of grantBosaUser and revokeBosaUser: every name valid, the user and every team known,
// then `change(teams, team)` edits the user's teams for one team and says whether it changed
// anything. Writes only when something changed; returns the teams that did.
template <class Change>
Result<std::vector<std::string>> changeUserTeams(CredentialRecords& records,
                                                 std::string_view identifier,
                                                 const std::vector<std::string>& teams,
                                                 Change change) {
  auto valid = validateName("BOSA user", identifier);
  if (!valid) return valid.takeError();
  for (const auto& team : teams) {
    valid = validateName("team", team);
    if (!valid) return valid.takeError();
  }
  std::vector<std::string> changed;
  auto status = records.update([&](Txn& txn) -> Status {
    changed.clear();
    auto user = txn.user(identifier);
    if (!user) return user.takeError();
    if (!*user) return unknownUser(identifier);
    auto& granted = (*user)->teams;
    for (const auto& team : dedupe(teams)) {
      auto has_team = requireTeam(txn, team);
      if (!has_team) return has_team;
      if (change(granted, team)) changed.push_back(team);
    }
    if (changed.empty()) return core::okStatus();
    return txn.putUserTeams(identifier, granted);
  });
  if (!status) return status.takeError();
  return changed;
}

}  // namespace

CredentialRules::CredentialRules(std::unique_ptr<CredentialRecords> records,
                                 std::shared_ptr<const core::Clock> clock)
    : records_(std::move(records)),
      clock_(clock ? std::move(clock) : std::make_shared<core::RealClock>()) {}

// --- request path: a lookup by an invalid name or a malformed token finds nothing ------------

Result<std::optional<core::ClientRecord>> CredentialRules::findClientByToken(
    std::string_view token) {
  using Out = std::optional<core::ClientRecord>;
  if (!isWellFormedClientToken(token)) return Out();
  return readUnit(*records_, [&](Txn& txn) -> Result<Out> {
    const std::string hash = txn.keyring().tokenHash(token);
    auto owner = txn.tokenOwner(hash);
    if (!owner) return owner.takeError();
    if (!*owner) return Out();
    auto client = txn.client(**owner);
    if (!client) return client.takeError();
    if (!*client) return Out();
    // The client may have been re-created or rotated since: only its current hash counts, and
    // the one before the last rotation until its grace period ends.
    const StoredClient& stored = **client;
    if (core::constantTimeEquals(stored.token_hash, hash)) return Out(stored.client);
    if (!stored.previous_token_hash.empty() &&
        core::constantTimeEquals(stored.previous_token_hash, hash) &&
        clock_->unixSeconds() < stored.client.previous_token_until_unix) {
      Out found(stored.client);
      found->token_expires_unix = stored.client.previous_token_until_unix;
      return found;
    }
    return Out();
  });
}

Result<std::optional<core::TeamRecord>> CredentialRules::findTeam(std::string_view name) {
  if (!isValidName(name)) return std::optional<core::TeamRecord>();
  return readUnit(*records_, [&](Txn& txn) { return txn.team(name); });
}

// The team's own secret if it has one, else the shared one.
Result<std::optional<core::ResolvedSecret>> CredentialRules::resolveSecret(
    std::string_view name, std::string_view team) {
  using Out = std::optional<core::ResolvedSecret>;
  if (!isValidName(name)) return Out();
  std::vector<std::string_view> scopes;
  if (!team.empty() && isValidName(team)) scopes.push_back(team);
  scopes.push_back(std::string_view());  // shared
  return readUnit(*records_, [&](Txn& txn) -> Result<Out> {
    for (std::string_view scope : scopes) {
      auto value = txn.secret(scope, name);
      if (!value) return value.takeError();
      if (!*value) continue;
      std::string fingerprint = txn.keyring().fingerprint((*value)->view());
      return Out(core::ResolvedSecret{
          std::string(name), scope.empty() ? std::string("shared") : "team:" + std::string(scope),
          std::move(**value), std::move(fingerprint)});
    }
    return Out();
  });
}

Result<std::optional<core::BosaUserRecord>> CredentialRules::findBosaUser(
    std::string_view identifier) {
  if (!isValidName(identifier)) return std::optional<core::BosaUserRecord>();
  return readUnit(*records_, [&](Txn& txn) { return txn.user(identifier); });
}

Result<std::optional<core::SecretString>> CredentialRules::bosaUserSecret(
    std::string_view identifier) {
  if (!isValidName(identifier)) return std::optional<core::SecretString>();
  return readUnit(*records_, [&](Txn& txn) { return txn.userSecret(identifier); });
}

Result<std::optional<core::UserToken>> CredentialRules::findUserToken(
    std::string_view identifier) {
  if (!isValidName(identifier)) return std::optional<core::UserToken>();
  return readUnit(*records_, [&](Txn& txn) { return txn.userToken(identifier); });
}

Status CredentialRules::storeUserToken(std::string_view identifier,
                                       const core::UserToken& token) {
  auto valid = validateName("BOSA user", identifier);
  if (!valid) return valid;
  if (token.token.empty()) return badRequest("refusing to store an empty user token");
  return records_->update([&](Txn& txn) -> Status {
    auto user = txn.user(identifier);
    if (!user) return user.takeError();
    if (!*user) return unknownUser(identifier);
    return txn.putUserToken(identifier, token);
  });
}

// --- teams ------------------------------------------------------------------------------------

Status CredentialRules::addTeam(const core::TeamRecord& team) {
  core::TeamRecord record = team;
  auto valid = normaliseTeam(record);
  if (!valid) return valid;
  if (record.created_unix == 0) record.created_unix = clock_->unixSeconds();
  return records_->update([&](Txn& txn) -> Status {
    auto existing = txn.team(record.name);
    if (!existing) return existing.takeError();
    if (*existing) return duplicateTeam(record.name);
    return txn.putTeam(record);
  });
}

Status CredentialRules::setTeamUpstreams(const core::TeamRecord& team) {
  core::TeamRecord record = team;
  auto valid = normaliseTeam(record);
  if (!valid) return valid;
  return records_->update([&](Txn& txn) -> Status {
    auto existing = txn.team(record.name);
    if (!existing) return existing.takeError();
    if (!*existing) return unknownTeam(record.name);
    record.created_unix = (*existing)->created_unix;
    if (record.all_upstreams == (*existing)->all_upstreams &&
        record.upstreams == (*existing)->upstreams) {
      return core::okStatus();  // nothing to write: the generation stays
    }
    return txn.putTeam(record);
  });
}

// Active clients block the removal; revoked ones go with it, and so do (when asked for) the
// team's own secrets and its user grants, so that a later team of the same name inherits nothing.
Result<core::TeamRemoval> CredentialRules::removeTeam(std::string_view name, bool with_data) {
  auto valid = validateName("team", name);
  if (!valid) return valid.takeError();
  core::TeamRemoval removal;
  auto status = records_->update([&](Txn& txn) -> Status {
    removal = core::TeamRemoval();
    auto exists = requireTeam(txn, name);
    if (!exists) return exists;
    auto clients = txn.clients();
    if (!clients) return clients.takeError();
    std::vector<StoredClient> revoked;
    size_t active = 0;
    std::string first_active;
    for (auto& client : *clients) {
      if (client.client.team != name) continue;
      if (client.client.revoked) {
        revoked.push_back(std::move(client));
      } else if (active++ == 0) {
        first_active = client.client.name;
      }
    }
    if (active > 0) return teamInUse(name, active, first_active);
    auto secrets = txn.secretNamesOf(name);
    if (!secrets) return secrets.takeError();
    auto users = txn.users();
    if (!users) return users.takeError();
    removal.secrets = std::move(*secrets);
    for (const auto& user : *users) {
      if (std::find(user.teams.begin(), user.teams.end(), name) != user.teams.end()) {
        removal.bosa_users.push_back(user.identifier);
      }
    }
    if (!with_data && (!removal.secrets.empty() || !removal.bosa_users.empty())) {
      return teamHasData(name, removal.secrets, removal.bosa_users);
    }

    for (const auto& client : revoked) {
      auto deleted = txn.deleteClient(client.client.name);
      if (!deleted) return deleted;
      deleted = deleteTokenRefs(txn, client);
      if (!deleted) return deleted;
      removal.revoked_clients.push_back(client.client.name);
    }
    for (const auto& secret : removal.secrets) {
      auto deleted = txn.deleteSecret(name, secret);
      if (!deleted) return deleted.takeError();
    }
    for (auto& user : *users) {
      auto it = std::find(user.teams.begin(), user.teams.end(), name);
      if (it == user.teams.end()) continue;
      user.teams.erase(it);
      auto put = txn.putUserTeams(user.identifier, user.teams);
      if (!put) return put;
    }
    return txn.deleteTeam(name);
  });
  if (!status) return status.takeError();
  return removal;
}

Result<std::vector<core::TeamRecord>> CredentialRules::listTeams() {
  return readUnit(*records_, [](Txn& txn) { return txn.teams(); });
}

// --- clients ----------------------------------------------------------------------------------

Result<core::SecretString> CredentialRules::addClient(std::string_view name,
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
  auto status = records_->update([&](Txn& txn) -> Status {
    record.token_hash = txn.keyring().tokenHash(token.view());
    auto has_team = requireTeam(txn, team);
    if (!has_team) return has_team;
    auto existing = txn.client(name);
    if (!existing) return existing.takeError();
    if (*existing) {
      if (!(*existing)->client.revoked) return duplicateClient(name);
      // Re-using the name of a revoked client: its old tokens must stay dead.
      auto deleted = deleteTokenRefs(txn, **existing);
      if (!deleted) return deleted;
    }
    auto put = txn.putTokenOwner(record.token_hash, record.client.name);
    if (!put) return put;
    return txn.putClient(record);
  });
  if (!status) return status.takeError();
  return token;
}

Result<core::SecretString> CredentialRules::rotateClient(std::string_view name,
                                                         int64_t grace_seconds) {
  if (grace_seconds < 0 || grace_seconds > core::kMaxRotationGraceSeconds) return badGrace();
  core::SecretString token = generateClientToken();
  const int64_t now = clock_->unixSeconds();
  auto status = changeClient(*records_, name, [&](Txn& txn, StoredClient& record) -> Status {
    if (record.client.revoked) return revokedClient(name);
    // The keyring of this transaction: a rekey may have replaced the one this store opened with.
    const std::string hash = txn.keyring().tokenHash(token.view());
    // One hand-over at a time: a token from before an earlier rotation stops now.
    if (!record.previous_token_hash.empty()) {
      auto deleted = txn.deleteTokenOwner(record.previous_token_hash);
      if (!deleted) return deleted;
    }
    if (grace_seconds > 0) {
      record.previous_token_hash = record.token_hash;
      record.client.previous_token_until_unix = now + grace_seconds;
    } else {
      auto deleted = txn.deleteTokenOwner(record.token_hash);
      if (!deleted) return deleted;
      record.previous_token_hash.clear();
      record.client.previous_token_until_unix = 0;
    }
    record.token_hash = hash;
    record.client.rotated_unix = now;
    auto put = txn.putTokenOwner(hash, record.client.name);
    if (!put) return put;
    return txn.putClient(record);
  });
  if (!status) return status.takeError();
  return token;
}

Status CredentialRules::revokeClient(std::string_view name) {
  return changeClient(*records_, name, [](Txn& txn, StoredClient& record) -> Status {
    if (record.client.revoked) return core::okStatus();
    record.client.revoked = true;
    // The tokens stay known, so that they are recognised as revoked (not unknown).
    return txn.putClient(record);
  });
}

Status CredentialRules::removeClient(std::string_view name, bool even_active) {
  return changeClient(*records_, name, [&](Txn& txn, StoredClient& record) -> Status {
    if (!record.client.revoked && !even_active) return activeClient(name);
    auto deleted = deleteTokenRefs(txn, record);
    if (!deleted) return deleted;
    return txn.deleteClient(name);
  });
}

Result<std::vector<core::ClientRecord>> CredentialRules::listClients() {
  auto clients = readUnit(*records_, [](Txn& txn) { return txn.clients(); });
  if (!clients) return clients.takeError();
  std::vector<core::ClientRecord> out;
  for (auto& client : *clients) out.push_back(std::move(client.client));
  return out;
}

// --- secrets ----------------------------------------------------------------------------------

Status CredentialRules::setSecret(std::string_view name, std::string_view team,
                                  const core::SecretString& value) {
  auto valid = validateName("secret", name);
  if (!valid) return valid;
  valid = validateScope(team);
  if (!valid) return valid;
  if (value.empty()) return emptySecret();
  const int64_t now = clock_->unixSeconds();
  return records_->update([&](Txn& txn) -> Status {
    if (!team.empty()) {
      auto has_team = requireTeam(txn, team);
      if (!has_team) return has_team;
    }
    return txn.putSecret(team, name, now, value);
  });
}

Status CredentialRules::removeSecret(std::string_view name, std::string_view team) {
  auto valid = validateName("secret", name);
  if (!valid) return valid;
  valid = validateScope(team);
  if (!valid) return valid;
  return records_->update([&](Txn& txn) -> Status {
    auto deleted = txn.deleteSecret(team, name);
    if (!deleted) return deleted.takeError();
    if (!*deleted) return unknownSecret(name, team);
    return core::okStatus();
  });
}

Result<std::vector<core::SecretInfo>> CredentialRules::listSecrets() {
  return readUnit(*records_, [](Txn& txn) { return txn.secrets(); });
}

// --- BOSA users -------------------------------------------------------------------------------

Status CredentialRules::addBosaUser(std::string_view identifier,
                                    const core::SecretString& secret,
                                    const std::vector<std::string>& teams) {
  auto valid = validateName("BOSA user", identifier);
  if (!valid) return valid;
  for (const auto& t : teams) {
    valid = validateName("team", t);
    if (!valid) return valid;
  }
  if (secret.empty()) return emptySecret();
  core::BosaUserRecord record;
  record.identifier = std::string(identifier);
  record.teams = dedupe(teams);
  record.created_unix = clock_->unixSeconds();
  return records_->update([&](Txn& txn) -> Status {
    for (const auto& t : record.teams) {
      auto has_team = requireTeam(txn, t);
      if (!has_team) return has_team;
    }
    auto existing = txn.user(identifier);
    if (!existing) return existing.takeError();
    if (*existing) return duplicateUser(identifier);
    // A stale token of an earlier user with this identifier must not be reused.
    auto deleted = txn.deleteUserToken(identifier);
    if (!deleted) return deleted;
    return txn.putUser(record, secret);
  });
}

Result<std::vector<std::string>> CredentialRules::grantBosaUser(
    std::string_view identifier, const std::vector<std::string>& teams) {
  return changeUserTeams(*records_, identifier, teams,
                         [](std::vector<std::string>& granted, const std::string& team) {
                           if (std::find(granted.begin(), granted.end(), team) != granted.end()) {
                             return false;  // already granted
                           }
                           granted.push_back(team);
                           return true;
                         });
}

Result<std::vector<std::string>> CredentialRules::revokeBosaUser(
    std::string_view identifier, const std::vector<std::string>& teams) {
  return changeUserTeams(*records_, identifier, teams,
                         [](std::vector<std::string>& granted, const std::string& team) {
                           auto it = std::find(granted.begin(), granted.end(), team);
                           if (it == granted.end()) return false;  // not granted
                           granted.erase(it);
                           return true;
                         });
}

Status CredentialRules::setBosaUserSecret(std::string_view identifier,
                                          const core::SecretString& secret) {
  auto valid = validateName("BOSA user", identifier);
  if (!valid) return valid;
  if (secret.empty()) return emptySecret();
  return records_->update([&](Txn& txn) -> Status {
    auto user = txn.user(identifier);
    if (!user) return user.takeError();
    if (!*user) return unknownUser(identifier);
    auto put = txn.putUser(**user, secret);
    if (!put) return put;
    // A token minted with the old secret must not outlive it here.
    return txn.deleteUserToken(identifier);
  });
}

Status CredentialRules::removeBosaUser(std::string_view identifier) {
  auto valid = validateName("BOSA user", identifier);
  if (!valid) return valid;
  return records_->update([&](Txn& txn) -> Status {
    auto deleted = txn.deleteUser(identifier);
    if (!deleted) return deleted.takeError();
    if (!*deleted) return unknownUser(identifier);
    return txn.deleteUserToken(identifier);
  });
}

Result<std::vector<core::BosaUserRecord>> CredentialRules::listBosaUsers() {
  return readUnit(*records_, [](Txn& txn) { return txn.users(); });
}

}  // namespace keyway::storage
