// The role interface of the credential store: teams, clients, secrets, BOSA users and their
// minted tokens. Implemented once, by storage/credential_rules, over durable encrypted LMDB
// records (storage/lmdb_credential_store.hpp) or in-memory ones (storage/MemoryCredentialStore).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.hpp"
#include "core/secret.hpp"

namespace keyway::core {

struct TeamRecord {
  std::string name;
  bool all_upstreams = true;            // `team add` without --upstreams
  std::vector<std::string> upstreams;   // meaningful when !all_upstreams
  int64_t created_unix = 0;
};

struct ClientRecord {
  std::string name;
  std::string team;
  bool revoked = false;
  int64_t created_unix = 0;
};

struct SecretInfo {   // never carries the value
  std::string name;
  std::string team;   // empty = shared
  int64_t updated_unix = 0;
};

// A secret value together with where it came from (for cache identity and audit logs).
struct ResolvedSecret {
  std::string name;
  std::string scope;  // "shared" or "team:<name>"
  SecretString value;
  // CredentialStore::fingerprint(value): which value this is, without revealing it. A rotation
  // changes it, so cached answers fetched with the old value are never served for the new one.
  std::string fingerprint;
};

struct BosaUserRecord {
  std::string identifier;
  std::vector<std::string> teams;
  int64_t created_unix = 0;
};

struct UserToken {
  SecretString token;
  int64_t expires_unix = 0;
};

// Thread-safe. Reads reflect writes made by other processes on the same environment (keywayctl)
// without a restart. Every method returns an Error (kInternal/kUnavailable) on storage failure;
// "not found" is an empty optional, never an Error. Admin mutations return kBadRequest for
// unknown teams/clients/users and for duplicates.
class CredentialStore {
 public:
  virtual ~CredentialStore() = default;

  // --- request path ---
  // Looks a presented `kw_...` token up by its hash. Revoked clients are returned with revoked=true.
  virtual Result<std::optional<ClientRecord>> findClientByToken(std::string_view token) = 0;
  virtual Result<std::optional<TeamRecord>> findTeam(std::string_view name) = 0;
  // The team-scoped secret NAME of `team` if set, else the shared one, else empty.
  virtual Result<std::optional<ResolvedSecret>> resolveSecret(std::string_view name,
                                                              std::string_view team) = 0;
  virtual Result<std::optional<BosaUserRecord>> findBosaUser(std::string_view identifier) = 0;
  virtual Result<std::optional<SecretString>> bosaUserSecret(std::string_view identifier) = 0;
  virtual Result<std::optional<UserToken>> findUserToken(std::string_view identifier) = 0;
  virtual Status storeUserToken(std::string_view identifier, const UserToken& token) = 0;

  // --- admin (keywayctl) ---
  virtual Status addTeam(const TeamRecord& team) = 0;
  virtual Status removeTeam(std::string_view name) = 0;  // fails if clients still reference it
  virtual Result<std::vector<TeamRecord>> listTeams() = 0;
  // Creates the client and returns its new token (shown once; only its hash is stored).
  virtual Result<SecretString> addClient(std::string_view name, std::string_view team) = 0;
  virtual Status revokeClient(std::string_view name) = 0;
  virtual Result<std::vector<ClientRecord>> listClients() = 0;
  virtual Status setSecret(std::string_view name, std::string_view team,
                           const SecretString& value) = 0;  // team empty = shared
  virtual Status removeSecret(std::string_view name, std::string_view team) = 0;
  virtual Result<std::vector<SecretInfo>> listSecrets() = 0;
  virtual Status addBosaUser(std::string_view identifier, const SecretString& secret,
                             const std::vector<std::string>& teams) = 0;
  virtual Status grantBosaUser(std::string_view identifier, std::string_view team) = 0;
  virtual Status revokeBosaUser(std::string_view identifier, std::string_view team) = 0;
  virtual Status removeBosaUser(std::string_view identifier) = 0;
  virtual Result<std::vector<BosaUserRecord>> listBosaUsers() = 0;

  // A number that changes whenever any record changes (any process). Lets callers keep derived
  // in-memory state and refresh it cheaply.
  virtual uint64_t generation() = 0;

  // A keyed hash of `value` under a key derived from the master key (short, printable): names a
  // credential in cache identities without revealing it. Equal values give equal fingerprints
  // for as long as the master key stays; without the key it cannot be tested against guesses.
  // Thread-safe, no I/O.
  virtual std::string fingerprint(std::string_view value) const = 0;
};

}  // namespace keyway::core
