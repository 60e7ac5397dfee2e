// MemoryCredentialStore: core::CredentialStore in process memory with the same semantics (and
// the same errors) as LmdbCredentialStore; for gateway tests. Nothing is persisted.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "core/clock.hpp"
#include "core/credential_store.hpp"
#include "storage/crypto.hpp"

namespace keyway::storage {

// Thread-safe (one mutex). Secret values are held as SecretStrings (wiped on removal); client
// tokens only as keyed hashes under a random per-instance key, as in the LMDB store.
class MemoryCredentialStore final : public core::CredentialStore {
 public:
  // Aborts only if libsodium cannot initialise (then nothing in storage/ works).
  explicit MemoryCredentialStore(std::shared_ptr<const core::Clock> clock = nullptr);

  core::Result<std::optional<core::ClientRecord>> findClientByToken(
      std::string_view token) override;
  core::Result<std::optional<core::TeamRecord>> findTeam(std::string_view name) override;
  core::Result<std::optional<core::ResolvedSecret>> resolveSecret(std::string_view name,
                                                                  std::string_view team) override;
  core::Result<std::optional<core::BosaUserRecord>> findBosaUser(
      std::string_view identifier) override;
  core::Result<std::optional<core::SecretString>> bosaUserSecret(
      std::string_view identifier) override;
  core::Result<std::optional<core::UserToken>> findUserToken(
      std::string_view identifier) override;
  core::Status storeUserToken(std::string_view identifier, const core::UserToken& token) override;

  core::Status addTeam(const core::TeamRecord& team) override;
  core::Status removeTeam(std::string_view name) override;
  core::Result<std::vector<core::TeamRecord>> listTeams() override;
  core::Result<core::SecretString> addClient(std::string_view name,
                                             std::string_view team) override;
  core::Status revokeClient(std::string_view name) override;
  core::Result<std::vector<core::ClientRecord>> listClients() override;
  core::Status setSecret(std::string_view name, std::string_view team,
                         const core::SecretString& value) override;
  core::Status removeSecret(std::string_view name, std::string_view team) override;
  core::Result<std::vector<core::SecretInfo>> listSecrets() override;
  core::Status addBosaUser(std::string_view identifier, const core::SecretString& secret,
                           const std::vector<std::string>& teams) override;
  core::Status grantBosaUser(std::string_view identifier, std::string_view team) override;
  core::Status revokeBosaUser(std::string_view identifier, std::string_view team) override;
  core::Status removeBosaUser(std::string_view identifier) override;
  core::Result<std::vector<core::BosaUserRecord>> listBosaUsers() override;

  uint64_t generation() override { return generation_.load(); }
  std::string fingerprint(std::string_view value) const override { return keyring_->fingerprint(value); }

 private:
  struct Client {
    core::ClientRecord record;
    std::string token_hash;
  };
  struct Secret {
    int64_t updated_unix = 0;
    core::SecretString value;
  };
  struct User {
    core::BosaUserRecord record;
    core::SecretString secret;
  };
  using SecretKey = std::pair<std::string, std::string>;  // (team or "", name)

  void bump() { generation_.fetch_add(1); }

  std::shared_ptr<const core::Clock> clock_;
  std::unique_ptr<Keyring> keyring_;
  std::mutex mutex_;
  std::map<std::string, core::TeamRecord, std::less<>> teams_;
  std::map<std::string, Client, std::less<>> clients_;
  std::map<std::string, std::string, std::less<>> tokens_;  // hash -> client name
  std::map<SecretKey, Secret> secrets_;
  std::map<std::string, User, std::less<>> users_;
  std::map<std::string, core::UserToken, std::less<>> user_tokens_;
  std::atomic<uint64_t> generation_{1};
};

}  // namespace keyway::storage
