// CredentialRules: the one core::CredentialStore implementation, holding every credential rule
// (valid names, duplicates, unknown teams, what removing a team takes with it; docs/auth.md)
// over a CredentialRecords that only persists (LMDB, or memory for tests).
#pragma once

#include <memory>

#include "core/clock.hpp"
#include "core/credential_store.hpp"
#include "storage/credential_records.hpp"

namespace keyway::storage {

// Thread-safe as its records are. Each call is one unit of its records: every check and the
// writes it allows are atomic, also against another process sharing an LMDB environment.
// Errors: kBadRequest with "what failed and what to do" for invalid names, unknown or duplicate
// teams, clients and users, empty secrets; storage failures as the records report them. Names
// in messages are validated names, never secrets.
class CredentialRules : public core::CredentialStore {
 public:
  // `clock` null = RealClock (created_unix, updated_unix).
  CredentialRules(std::unique_ptr<CredentialRecords> records,
                  std::shared_ptr<const core::Clock> clock);

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
  core::Status setTeamUpstreams(const core::TeamRecord& team) override;
  core::Result<core::TeamRemoval> removeTeam(std::string_view name, bool with_data) override;
  core::Result<std::vector<core::TeamRecord>> listTeams() override;
  core::Result<core::SecretString> addClient(std::string_view name,
                                             std::string_view team) override;
  core::Result<core::SecretString> rotateClient(std::string_view name,
                                                int64_t grace_seconds) override;
  core::Status revokeClient(std::string_view name) override;
  core::Status removeClient(std::string_view name, bool even_active) override;
  core::Result<std::vector<core::ClientRecord>> listClients() override;
  core::Status setSecret(std::string_view name, std::string_view team,
                         const core::SecretString& value) override;
  core::Status removeSecret(std::string_view name, std::string_view team) override;
  core::Result<std::vector<core::SecretInfo>> listSecrets() override;
  core::Status addBosaUser(std::string_view identifier, const core::SecretString& secret,
                           const std::vector<std::string>& teams) override;
  core::Result<std::vector<std::string>> grantBosaUser(
      std::string_view identifier, const std::vector<std::string>& teams) override;
  core::Result<std::vector<std::string>> revokeBosaUser(
      std::string_view identifier, const std::vector<std::string>& teams) override;
  core::Status setBosaUserSecret(std::string_view identifier,
                                 const core::SecretString& secret) override;
  core::Status removeBosaUser(std::string_view identifier) override;
  core::Result<std::vector<core::BosaUserRecord>> listBosaUsers() override;

  uint64_t generation() override { return records_->generation(); }
  std::string fingerprint(std::string_view value) const override {
    return records_->keyring()->fingerprint(value);
  }

 private:
  std::unique_ptr<CredentialRecords> records_;
  std::shared_ptr<const core::Clock> clock_;
};

}  // namespace keyway::storage
