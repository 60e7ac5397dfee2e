// The persistence role under CredentialRules: what a credential store keeps (teams, clients and
// their token hashes, secrets, BOSA users, minted user tokens), read and written in atomic units.
// Implementations persist and decide nothing: every rule (names, duplicates, unknown teams,
// what a removal takes with it) is CredentialRules' (storage/credential_rules.hpp).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/credential_store.hpp"
#include "core/result.hpp"
#include "core/secret.hpp"
#include "storage/crypto.hpp"
#include "storage/record_codec.hpp"

namespace keyway::storage {

// The records of one unit of work. "Not found" is an empty optional (or false from a delete);
// an Error is a storage failure (or a damaged record), never a rule. `team` "" names the shared
// scope of a secret. Writes are refused in a unit opened by view().
class CredentialRecordsTxn {
 public:
  virtual ~CredentialRecordsTxn() = default;

  // The keyring of this unit's snapshot (token hashes, fingerprints); valid for the unit.
  virtual const Keyring& keyring() const = 0;

  virtual core::Result<std::optional<core::TeamRecord>> team(std::string_view name) = 0;
  virtual core::Result<std::vector<core::TeamRecord>> teams() = 0;
  virtual core::Status putTeam(const core::TeamRecord& team) = 0;
  virtual core::Status deleteTeam(std::string_view name) = 0;

  virtual core::Result<std::optional<StoredClient>> client(std::string_view name) = 0;
  virtual core::Result<std::vector<StoredClient>> clients() = 0;
  virtual core::Status putClient(const StoredClient& client) = 0;
  virtual core::Status deleteClient(std::string_view name) = 0;
  // The client a token hash was issued to (it may have been re-issued since).
  virtual core::Result<std::optional<std::string>> tokenOwner(std::string_view token_hash) = 0;
  virtual core::Status putTokenOwner(std::string_view token_hash, std::string_view client) = 0;
  virtual core::Status deleteTokenOwner(std::string_view token_hash) = 0;

  virtual core::Result<std::optional<core::SecretString>> secret(std::string_view team,
                                                                 std::string_view name) = 0;
  // Without values; shared ones first, then by team, then by name.
  virtual core::Result<std::vector<core::SecretInfo>> secrets() = 0;
  // The names of `team`'s own secrets (not the shared ones).
  virtual core::Result<std::vector<std::string>> secretNamesOf(std::string_view team) = 0;
  virtual core::Status putSecret(std::string_view team, std::string_view name,
                                 int64_t updated_unix, const core::SecretString& value) = 0;
  virtual core::Result<bool> deleteSecret(std::string_view team, std::string_view name) = 0;

  virtual core::Result<std::optional<core::BosaUserRecord>> user(std::string_view id) = 0;
  virtual core::Result<std::vector<core::BosaUserRecord>> users() = 0;
  virtual core::Result<std::optional<core::SecretString>> userSecret(std::string_view id) = 0;
  virtual core::Status putUser(const core::BosaUserRecord& user,
                               const core::SecretString& secret) = 0;
  // Replaces the teams of an existing user, keeping its secret.
  virtual core::Status putUserTeams(std::string_view id, const std::vector<std::string>& teams) = 0;
  virtual core::Result<bool> deleteUser(std::string_view id) = 0;
  virtual core::Result<std::optional<core::UserToken>> userToken(std::string_view id) = 0;
  virtual core::Status putUserToken(std::string_view id, const core::UserToken& token) = 0;
  virtual core::Status deleteUserToken(std::string_view id) = 0;
};

// Thread-safe. Units see every unit committed before them, also by other processes where the
// implementation is shared between processes (LMDB).
class CredentialRecords {
 public:
  virtual ~CredentialRecords() = default;
  using Unit = std::function<core::Status(CredentialRecordsTxn&)>;
  // Runs fn on a consistent snapshot.
  virtual core::Status view(const Unit& fn) = 0;
  // Runs fn atomically: its writes are kept when it returns ok, none of them otherwise (fn's
  // error is returned). Concurrent updates, from any process, are serialised.
  virtual core::Status update(const Unit& fn) = 0;
  // Changes whenever a committed update wrote anything (any process).
  virtual uint64_t generation() = 0;
  // The keyring of the newest snapshot a unit saw, for work outside a unit (fingerprints). Its
  // hashing subkeys are those of every snapshot: a rekey carries them over.
  virtual std::shared_ptr<const Keyring> keyring() const = 0;
};

}  // namespace keyway::storage
