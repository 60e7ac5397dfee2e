// Credential records in process memory: maps under one mutex, updated on a copy that replaces
// them only when the whole unit succeeds (so a unit is atomic, as an LMDB transaction is).
#include "storage/memory_credential_store.hpp"

#include <atomic>
#include <cstdlib>
#include <map>
#include <mutex>

namespace keyway::storage {

using core::Result;
using core::Status;

namespace {

struct Secret {
  int64_t updated_unix = 0;
  core::SecretString value;
};

struct User {
  core::BosaUserRecord record;
  core::SecretString secret;
};

// Ordered maps, so that listings come in the LMDB store's key order.
struct State {
  std::map<std::string, core::TeamRecord, std::less<>> teams;
  std::map<std::string, StoredClient, std::less<>> clients;
  std::map<std::string, std::string, std::less<>> token_owners;  // token hash -> client name
  // (team or "" for shared, name): the order of the LMDB key "<team>\0<name>".
  std::map<std::pair<std::string, std::string>, Secret> secrets;
  std::map<std::string, User, std::less<>> users;
  std::map<std::string, core::UserToken, std::less<>> user_tokens;

  // Secrets are move-only: every copy is an explicit clone.
  State clone() const {
    State out;
    out.teams = teams;
    out.clients = clients;
    out.token_owners = token_owners;
    for (const auto& [key, secret] : secrets) {
      out.secrets.emplace(key, Secret{secret.updated_unix, secret.value.clone()});
    }
    for (const auto& [id, user] : users)
      out.users.emplace(id, User{user.record, user.secret.clone()});
    for (const auto& [id, token] : user_tokens) {
      out.user_tokens.emplace(id, core::UserToken{token.token.clone(), token.expires_unix});
    }
    return out;
  }
};

template <class Map, class Key>
auto find(const Map& map, const Key& key) -> std::optional<typename Map::mapped_type> {
  auto it = map.find(key);
  if (it == map.end()) return std::nullopt;
  return it->second;
}

class MemoryTxn final : public CredentialRecordsTxn {
 public:
  MemoryTxn(State& state, const Keyring& keyring, bool writable)
      : state_(state), keyring_(keyring), writable_(writable) {}
  bool wrote() const { return wrote_; }
  const Keyring& keyring() const override { return keyring_; }

  Result<std::optional<core::TeamRecord>> team(std::string_view name) override {
    return find(state_.teams, name);
  }
  Result<std::vector<core::TeamRecord>> teams() override {
    std::vector<core::TeamRecord> out;
    for (const auto& entry : state_.teams) out.push_back(entry.second);
    return out;
  }
  Status putTeam(const core::TeamRecord& team) override {
    return write([&] { state_.teams[team.name] = team; });
  }
  Status deleteTeam(std::string_view name) override {
    return write([&] { state_.teams.erase(std::string(name)); });
  }

  Result<std::optional<StoredClient>> client(std::string_view name) override {
    return find(state_.clients, name);
  }
  Result<std::vector<StoredClient>> clients() override {
    std::vector<StoredClient> out;
    for (const auto& entry : state_.clients) out.push_back(entry.second);
    return out;
  }
  Status putClient(const StoredClient& client) override {
    return write([&] { state_.clients[client.client.name] = client; });
  }
  Status deleteClient(std::string_view name) override {
    return write([&] { state_.clients.erase(std::string(name)); });
  }
  Result<std::optional<std::string>> tokenOwner(std::string_view token_hash) override {
    return find(state_.token_owners, token_hash);
  }
  Status putTokenOwner(std::string_view token_hash, std::string_view client) override {
    return write([&] { state_.token_owners[std::string(token_hash)] = std::string(client); });
  }
  Status deleteTokenOwner(std::string_view token_hash) override {
    return write([&] { state_.token_owners.erase(std::string(token_hash)); });
  }

  Result<std::optional<core::SecretString>> secret(std::string_view team,
                                                   std::string_view name) override {
    auto it = state_.secrets.find({std::string(team), std::string(name)});
    if (it == state_.secrets.end()) return std::optional<core::SecretString>();
    return std::optional<core::SecretString>(it->second.value.clone());
  }
  Result<std::vector<core::SecretInfo>> secrets() override {
    std::vector<core::SecretInfo> out;
    for (const auto& [key, secret] : state_.secrets) {
      out.push_back(core::SecretInfo{key.second, key.first, secret.updated_unix});
    }
    return out;
  }
  Result<std::vector<std::string>> secretNamesOf(std::string_view team) override {
    std::vector<std::string> out;
    for (const auto& entry : state_.secrets) {
      if (entry.first.first == team) out.push_back(entry.first.second);
    }
    return out;
  }
  Status putSecret(std::string_view team, std::string_view name, int64_t updated_unix,
                   const core::SecretString& value) override {
    return write([&] {
      state_.secrets[{std::string(team), std::string(name)}] = Secret{updated_unix, value.clone()};
    });
  }
  Result<bool> deleteSecret(std::string_view team, std::string_view name) override {
    bool erased = false;
    auto status = write(
        [&] { erased = state_.secrets.erase({std::string(team), std::string(name)}) != 0; });
    if (!status) return status.takeError();
    return erased;
  }

  Result<std::optional<core::BosaUserRecord>> user(std::string_view id) override {
    auto it = state_.users.find(id);
    if (it == state_.users.end()) return std::optional<core::BosaUserRecord>();
    return std::optional<core::BosaUserRecord>(it->second.record);
  }
  Result<std::vector<core::BosaUserRecord>> users() override {
    std::vector<core::BosaUserRecord> out;
    for (const auto& entry : state_.users) out.push_back(entry.second.record);
    return out;
  }
  Result<std::optional<core::SecretString>> userSecret(std::string_view id) override {
    auto it = state_.users.find(id);
    if (it == state_.users.end()) return std::optional<core::SecretString>();
    return std::optional<core::SecretString>(it->second.secret.clone());
  }
  Status putUser(const core::BosaUserRecord& user, const core::SecretString& secret) override {
    return write([&] { state_.users[user.identifier] = User{user, secret.clone()}; });
  }
  Status putUserTeams(std::string_view id, const std::vector<std::string>& teams) override {
    return write([&] {
      auto it = state_.users.find(id);
      if (it != state_.users.end()) it->second.record.teams = teams;
    });
  }
  Result<bool> deleteUser(std::string_view id) override {
    bool erased = false;
    auto status = write([&] { erased = state_.users.erase(std::string(id)) != 0; });
    if (!status) return status.takeError();
    return erased;
  }
  Result<std::optional<core::UserToken>> userToken(std::string_view id) override {
    auto it = state_.user_tokens.find(id);
    if (it == state_.user_tokens.end()) return std::optional<core::UserToken>();
    return std::optional<core::UserToken>(
        core::UserToken{it->second.token.clone(), it->second.expires_unix});
  }
  Status putUserToken(std::string_view id, const core::UserToken& token) override {
    return write([&] {
      state_.user_tokens[std::string(id)] =
          core::UserToken{token.token.clone(), token.expires_unix};
    });
  }
  Status deleteUserToken(std::string_view id) override {
    return write([&] { state_.user_tokens.erase(std::string(id)); });
  }

 private:
  template <class Fn>
  Status write(Fn&& fn) {
    if (!writable_) {
      return core::Error::make(core::ErrorCode::kInternal, "write in a read-only unit");
    }
    fn();
    wrote_ = true;
    return core::okStatus();
  }

  State& state_;
  const Keyring& keyring_;
  const bool writable_;
  bool wrote_ = false;
};

class MemoryCredentialRecords final : public CredentialRecords {
 public:
  MemoryCredentialRecords() {
    auto key = SecureKey::random();
    if (!key) std::abort();  // libsodium unusable: impossible on a supported system
    auto keyring = Keyring::create(*key);
    if (!keyring) std::abort();
    keyring_ = std::make_shared<const Keyring>(std::move(keyring).value());
  }

  Status view(const Unit& fn) override {
    std::lock_guard<std::mutex> lock(mutex_);
    MemoryTxn txn(state_, *keyring_, /*writable=*/false);
    return fn(txn);
  }

  // On a copy, so that a unit that fails halfway leaves nothing behind.
  Status update(const Unit& fn) override {
    std::lock_guard<std::mutex> lock(mutex_);
    State working = state_.clone();
    MemoryTxn txn(working, *keyring_, /*writable=*/true);
    auto status = fn(txn);
    if (!status) return status;
    if (txn.wrote()) {
      state_ = std::move(working);
      generation_.fetch_add(1);
    }
    return status;
  }

  uint64_t generation() override { return generation_.load(); }
  std::shared_ptr<const Keyring> keyring() const override { return keyring_; }

 private:
  std::shared_ptr<const Keyring> keyring_;
  std::mutex mutex_;
  State state_;
  std::atomic<uint64_t> generation_{1};
};

}  // namespace

MemoryCredentialStore::MemoryCredentialStore(std::shared_ptr<const core::Clock> clock)
    : CredentialRules(std::make_unique<MemoryCredentialRecords>(), std::move(clock)) {}

}  // namespace keyway::storage
