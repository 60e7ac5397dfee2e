// LmdbCredentialStore: the durable, encrypted core::CredentialStore on an LMDB environment
// (<state_dir>/credentials), shared by keywayd and keywayctl, plus the state-dir factory and init.
#pragma once

#include <memory>
#include <string>

#include "core/clock.hpp"
#include "core/credential_store.hpp"
#include "storage/crypto.hpp"
#include "storage/lmdb_env.hpp"

namespace keyway::storage {

// Subdirectory of the state directory holding the credential environment.
inline constexpr std::string_view kCredentialEnvDir = "credentials";
std::string credentialEnvPath(const std::string& state_dir);

// Layout: named databases teams, clients, client_tokens, secrets, bosa_users, user_tokens, meta
// (record encoding: storage/record_codec.hpp). Secret values, BOSA user secrets and user tokens
// are sealed with the master key (associated data: table and key); client tokens are stored only
// as keyed hashes. Thread-safe: each call runs in its own LMDB transaction, so it sees every
// write committed before it, by any process.
class LmdbCredentialStore final : public core::CredentialStore {
 public:
  // Opens the store on `env`. On a fresh environment writes the schema version and the
  // key-check record; otherwise verifies both. Errors (kInternal): newer schema, damaged meta,
  // or "master key does not match this state directory" (fails closed: nothing is readable).
  static core::Result<std::unique_ptr<LmdbCredentialStore>> open(
      std::shared_ptr<LmdbEnv> env, const MasterKey& master_key,
      std::shared_ptr<const core::Clock> clock = nullptr);

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

  uint64_t generation() override;
  std::string fingerprint(std::string_view value) const override { return keyring_.fingerprint(value); }

  const std::shared_ptr<LmdbEnv>& env() const { return env_; }

 private:
  struct Dbis {
    MDB_dbi teams, clients, client_tokens, secrets, bosa_users, user_tokens, meta;
  };
  LmdbCredentialStore(std::shared_ptr<LmdbEnv> env, Dbis dbis, Keyring keyring,
                      std::shared_ptr<const core::Clock> clock)
      : env_(std::move(env)), dbis_(dbis), keyring_(std::move(keyring)),
        clock_(std::move(clock)) {}
  core::Status verifyOrInitialise();
  core::Status requireTeam(const LmdbTxn& txn, std::string_view team) const;

  std::shared_ptr<LmdbEnv> env_;
  Dbis dbis_;
  Keyring keyring_;
  std::shared_ptr<const core::Clock> clock_;
};

// Opens <state_dir>/credentials (creating the directories and environment files if absent) with
// the key in `master_key_file`, which must already exist (see loadMasterKeyFile). Errors name
// the paths and what to do (e.g. run `keywayctl init`).
core::Result<std::unique_ptr<core::CredentialStore>> openLmdbCredentialStore(
    const std::string& state_dir, const std::string& master_key_file);

// What `keywayctl init` did.
struct InitReport {
  bool created_state_dir = false;
  bool created_master_key = false;
  bool created_store = false;  // false: the store existed and the key matched it
  std::string env_path;
};

// Creates the state directory (0700), the master key (0600) if absent and the credential store
// with its key-check record. Idempotent: on an initialised directory it only verifies that the
// key matches. Errors as openLmdbCredentialStore / createMasterKeyFile.
core::Result<InitReport> initStateDir(const std::string& state_dir,
                                      const std::string& master_key_file);

}  // namespace keyway::storage
