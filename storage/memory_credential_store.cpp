// In-memory CredentialStore; mirrors LmdbCredentialStore's rules (see its comments for why).
#include "storage/memory_credential_store.hpp"

#include <algorithm>
#include <cstdlib>

#include "storage/credential_errors.hpp"
#include "storage/record_codec.hpp"

namespace keyway::storage {

using core::Result;
using core::Status;

namespace {

std::vector<std::string> dedupe(const std::vector<std::string>& items) {
  std::vector<std::string> out;
  for (const auto& s : items) {
    if (std::find(out.begin(), out.end(), s) == out.end()) out.push_back(s);
  }
  return out;
}

}  // namespace

MemoryCredentialStore::MemoryCredentialStore(std::shared_ptr<const core::Clock> clock)
    : clock_(clock ? std::move(clock) : std::make_shared<core::RealClock>()) {
  auto key = SecureKey::random();
  if (!key) std::abort();  // libsodium unusable: impossible on a supported system
  auto keyring = Keyring::create(*key);
  if (!keyring) std::abort();
  keyring_ = std::make_unique<Keyring>(std::move(keyring).value());
}

Result<std::optional<core::ClientRecord>> MemoryCredentialStore::findClientByToken(
    std::string_view token) {
  using Out = std::optional<core::ClientRecord>;
  if (!isWellFormedClientToken(token)) return Out();
  const std::string hash = keyring_->tokenHash(token);
  std::lock_guard<std::mutex> lock(mutex_);
  auto ref = tokens_.find(hash);
  if (ref == tokens_.end()) return Out();
  auto client = clients_.find(ref->second);
  if (client == clients_.end() || !core::constantTimeEquals(client->second.token_hash, hash)) {
    return Out();
  }
  return Out(client->second.record);
}

Result<std::optional<core::TeamRecord>> MemoryCredentialStore::findTeam(std::string_view name) {
  using Out = std::optional<core::TeamRecord>;
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = teams_.find(name);
  if (it == teams_.end()) return Out();
  return Out(it->second);
}

Result<std::optional<core::ResolvedSecret>> MemoryCredentialStore::resolveSecret(
    std::string_view name, std::string_view team) {
  using Out = std::optional<core::ResolvedSecret>;
  if (!isValidName(name)) return Out();
  std::lock_guard<std::mutex> lock(mutex_);
  if (!team.empty() && isValidName(team)) {
    auto it = secrets_.find(SecretKey(team, name));
    if (it != secrets_.end()) {
      return Out(core::ResolvedSecret{std::string(name), "team:" + std::string(team),
                                      it->second.value.clone(), keyring_->fingerprint(it->second.value.view())});
    }
  }
  auto it = secrets_.find(SecretKey("", name));
  if (it == secrets_.end()) return Out();
  return Out(core::ResolvedSecret{std::string(name), "shared", it->second.value.clone(),
                                  keyring_->fingerprint(it->second.value.view())});
}

Result<std::optional<core::BosaUserRecord>> MemoryCredentialStore::findBosaUser(
    std::string_view identifier) {
  using Out = std::optional<core::BosaUserRecord>;
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = users_.find(identifier);
  if (it == users_.end()) return Out();
  return Out(it->second.record);
}

Result<std::optional<core::SecretString>> MemoryCredentialStore::bosaUserSecret(
    std::string_view identifier) {
  using Out = std::optional<core::SecretString>;
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = users_.find(identifier);
  if (it == users_.end()) return Out();
  return Out(it->second.secret.clone());
}

Result<std::optional<core::UserToken>> MemoryCredentialStore::findUserToken(
    std::string_view identifier) {
  using Out = std::optional<core::UserToken>;
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = user_tokens_.find(identifier);
  if (it == user_tokens_.end()) return Out();
  return Out(core::UserToken{it->second.token.clone(), it->second.expires_unix});
}

Status MemoryCredentialStore::storeUserToken(std::string_view identifier,
                                             const core::UserToken& token) {
  auto valid = validateName("BOSA user", identifier);
  if (!valid) return valid;
  if (token.token.empty()) return errors::badRequest("refusing to store an empty user token");
  std::lock_guard<std::mutex> lock(mutex_);
  if (users_.find(identifier) == users_.end()) return errors::unknownUser(identifier);
  user_tokens_[std::string(identifier)] = core::UserToken{token.token.clone(), token.expires_unix};
  bump();
  return core::okStatus();
}

Status MemoryCredentialStore::addTeam(const core::TeamRecord& team) {
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
  std::lock_guard<std::mutex> lock(mutex_);
  if (teams_.count(record.name) != 0) return errors::duplicateTeam(record.name);
  teams_.emplace(record.name, record);
  bump();
  return core::okStatus();
}

Status MemoryCredentialStore::removeTeam(std::string_view name) {
  auto valid = validateName("team", name);
  if (!valid) return valid;
  std::lock_guard<std::mutex> lock(mutex_);
  auto team = teams_.find(name);
  if (team == teams_.end()) return errors::unknownTeam(name);
  size_t active = 0;
  std::string first_active;
  for (const auto& [client_name, client] : clients_) {
    if (client.record.team == name && !client.record.revoked && active++ == 0) {
      first_active = client_name;
    }
  }
  if (active > 0) return errors::teamInUse(name, active, first_active);
  for (auto it = clients_.begin(); it != clients_.end();) {
    if (it->second.record.team == name) {
      tokens_.erase(it->second.token_hash);
      it = clients_.erase(it);
    } else {
      ++it;
    }
  }
  for (auto it = secrets_.begin(); it != secrets_.end();) {
    it = it->first.first == name ? secrets_.erase(it) : std::next(it);
  }
  for (auto& [id, user] : users_) {
    auto& teams = user.record.teams;
    teams.erase(std::remove(teams.begin(), teams.end(), name), teams.end());
  }
  teams_.erase(team);
  bump();
  return core::okStatus();
}

Result<std::vector<core::TeamRecord>> MemoryCredentialStore::listTeams() {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<core::TeamRecord> out;
  for (const auto& entry : teams_) out.push_back(entry.second);
  return out;
}

Result<core::SecretString> MemoryCredentialStore::addClient(std::string_view name,
                                                            std::string_view team) {
  auto valid = validateName("client", name);
  if (!valid) return valid.takeError();
  valid = validateName("team", team);
  if (!valid) return valid.takeError();
  std::lock_guard<std::mutex> lock(mutex_);
  if (teams_.find(team) == teams_.end()) return errors::unknownTeam(team);
  auto existing = clients_.find(name);
  if (existing != clients_.end()) {
    if (!existing->second.record.revoked) return errors::duplicateClient(name);
    tokens_.erase(existing->second.token_hash);
    clients_.erase(existing);
  }
  core::SecretString token = generateClientToken();
  Client client;
  client.record.name = std::string(name);
  client.record.team = std::string(team);
  client.record.created_unix = clock_->unixSeconds();
  client.token_hash = keyring_->tokenHash(token.view());
  tokens_[client.token_hash] = client.record.name;
  clients_.emplace(client.record.name, std::move(client));
  bump();
  return token;
}

Status MemoryCredentialStore::revokeClient(std::string_view name) {
  auto valid = validateName("client", name);
  if (!valid) return valid;
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = clients_.find(name);
  if (it == clients_.end()) return errors::unknownClient(name);
  if (!it->second.record.revoked) {
    it->second.record.revoked = true;
    bump();
  }
  return core::okStatus();
}

Result<std::vector<core::ClientRecord>> MemoryCredentialStore::listClients() {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<core::ClientRecord> out;
  for (const auto& entry : clients_) out.push_back(entry.second.record);
  return out;
}

Status MemoryCredentialStore::setSecret(std::string_view name, std::string_view team,
                                        const core::SecretString& value) {
  auto valid = validateName("secret", name);
  if (!valid) return valid;
  if (!team.empty()) {
    valid = validateName("team", team);
    if (!valid) return valid;
  }
  if (value.empty()) return errors::emptySecret();
  std::lock_guard<std::mutex> lock(mutex_);
  if (!team.empty() && teams_.find(team) == teams_.end()) return errors::unknownTeam(team);
  secrets_[SecretKey(team, name)] = Secret{clock_->unixSeconds(), value.clone()};
  bump();
  return core::okStatus();
}

Status MemoryCredentialStore::removeSecret(std::string_view name, std::string_view team) {
  auto valid = validateName("secret", name);
  if (!valid) return valid;
  if (!team.empty()) {
    valid = validateName("team", team);
    if (!valid) return valid;
  }
  std::lock_guard<std::mutex> lock(mutex_);
  if (secrets_.erase(SecretKey(team, name)) == 0) return errors::unknownSecret(name, team);
  bump();
  return core::okStatus();
}

Result<std::vector<core::SecretInfo>> MemoryCredentialStore::listSecrets() {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<core::SecretInfo> out;
  // Same order as the LMDB store: by "<team>\0<name>" bytes, i.e. shared ones first.
  for (const auto& [key, secret] : secrets_) {
    out.push_back(core::SecretInfo{key.second, key.first, secret.updated_unix});
  }
  return out;
}

Status MemoryCredentialStore::addBosaUser(std::string_view identifier,
                                          const core::SecretString& secret,
                                          const std::vector<std::string>& teams) {
  auto valid = validateName("BOSA user", identifier);
  if (!valid) return valid;
  for (const auto& t : teams) {
    valid = validateName("team", t);
    if (!valid) return valid;
  }
  if (secret.empty()) return errors::emptySecret();
  std::lock_guard<std::mutex> lock(mutex_);
  const auto unique_teams = dedupe(teams);
  for (const auto& t : unique_teams) {
    if (teams_.find(t) == teams_.end()) return errors::unknownTeam(t);
  }
  if (users_.find(identifier) != users_.end()) return errors::duplicateUser(identifier);
  User user;
  user.record.identifier = std::string(identifier);
  user.record.teams = unique_teams;
  user.record.created_unix = clock_->unixSeconds();
  user.secret = secret.clone();
  user_tokens_.erase(user.record.identifier);
  users_.emplace(user.record.identifier, std::move(user));
  bump();
  return core::okStatus();
}

Status MemoryCredentialStore::grantBosaUser(std::string_view identifier, std::string_view team) {
  auto valid = validateName("BOSA user", identifier);
  if (!valid) return valid;
  valid = validateName("team", team);
  if (!valid) return valid;
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = users_.find(identifier);
  if (it == users_.end()) return errors::unknownUser(identifier);
  if (teams_.find(team) == teams_.end()) return errors::unknownTeam(team);
  auto& teams = it->second.record.teams;
  if (std::find(teams.begin(), teams.end(), team) == teams.end()) {
    teams.emplace_back(team);
    bump();
  }
  return core::okStatus();
}

Status MemoryCredentialStore::revokeBosaUser(std::string_view identifier, std::string_view team) {
  auto valid = validateName("BOSA user", identifier);
  if (!valid) return valid;
  valid = validateName("team", team);
  if (!valid) return valid;
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = users_.find(identifier);
  if (it == users_.end()) return errors::unknownUser(identifier);
  auto& teams = it->second.record.teams;
  auto pos = std::find(teams.begin(), teams.end(), team);
  if (pos == teams.end()) return errors::userNotGranted(identifier, team);
  teams.erase(pos);
  bump();
  return core::okStatus();
}

Status MemoryCredentialStore::removeBosaUser(std::string_view identifier) {
  auto valid = validateName("BOSA user", identifier);
  if (!valid) return valid;
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = users_.find(identifier);
  if (it == users_.end()) return errors::unknownUser(identifier);
  users_.erase(it);
  auto token = user_tokens_.find(identifier);
  if (token != user_tokens_.end()) user_tokens_.erase(token);
  bump();
  return core::okStatus();
}

Result<std::vector<core::BosaUserRecord>> MemoryCredentialStore::listBosaUsers() {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<core::BosaUserRecord> out;
  for (const auto& entry : users_) out.push_back(entry.second.record);
  return out;
}

}  // namespace keyway::storage
