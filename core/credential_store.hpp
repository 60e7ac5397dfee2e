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
  int64_t rotated_unix = 0;  // the last `client rotate`; 0 = never rotated
  // Until then the token it had before the last rotation still works (the grace period);
  // 0 = it stopped working at the rotation.
  int64_t previous_token_until_unix = 0;
  // Set by findClientByToken only: the token presented is the previous one, which stops working
  // at this time; 0 = the current token, which does not expire.
  int64_t token_expires_unix = 0;
};

// The longest grace period of a rotated client token: longer would be a second token, not a
// hand-over.
inline constexpr int64_t kMaxRotationGraceSeconds = int64_t{30} * 86400;

// What removeTeam took away with the team.
struct TeamRemoval {
  std::vector<std::string> secrets;          // names of the team's own secrets
  std::vector<std::string> bosa_users;       // users whose grant to the team was dropped
  std::vector<std::string> revoked_clients;  // revoked clients of the team
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
  // The token a client had before its last rotation finds the client (token_expires_unix set)
  // until its grace period ends, then nothing.
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
  // Replaces an existing team's upstream access (all_upstreams, upstreams); name and creation
  // time stay, and so do its clients, their tokens, secrets and grants.
  virtual Status setTeamUpstreams(const TeamRecord& team) = 0;
  // Fails while active clients belong to the team. Its revoked clients go with it; its own
  // secrets and BOSA user grants go with it only when `with_data` is set (otherwise their
  // presence is an error that names them). Returns what went with the team.
  virtual Result<TeamRemoval> removeTeam(std::string_view name, bool with_data) = 0;
  virtual Result<std::vector<TeamRecord>> listTeams() = 0;
  // Creates the client and returns its new token (shown once; only its hash is stored).
  virtual Result<SecretString> addClient(std::string_view name, std::string_view team) = 0;
  // A new token for an active client (shown once). The previous token keeps working for
  // `grace_seconds` (0: stops at once); a token from before an earlier rotation stops at once.
  virtual Result<SecretString> rotateClient(std::string_view name, int64_t grace_seconds) = 0;
  virtual Status revokeClient(std::string_view name) = 0;
  // Deletes the client and its tokens. An active client only with `even_active`.
  virtual Status removeClient(std::string_view name, bool even_active) = 0;
  virtual Result<std::vector<ClientRecord>> listClients() = 0;
  virtual Status setSecret(std::string_view name, std::string_view team,
                           const SecretString& value) = 0;  // team empty = shared
  virtual Status removeSecret(std::string_view name, std::string_view team) = 0;
  virtual Result<std::vector<SecretInfo>> listSecrets() = 0;
  virtual Status addBosaUser(std::string_view identifier, const SecretString& secret,
                             const std::vector<std::string>& teams) = 0;
  // Grant and revoke are idempotent and atomic over `teams`: they return the teams that changed
  // (granted now, or revoked now); an unknown user or team changes nothing and is an error.
  virtual Result<std::vector<std::string>> grantBosaUser(std::string_view identifier,
                                                         const std::vector<std::string>& teams) = 0;
  virtual Result<std::vector<std::string>> revokeBosaUser(std::string_view identifier,
                                                          const std::vector<std::string>& teams) = 0;
  // Replaces the user's secret, keeping its grants; a user token minted with the old secret is
  // dropped, so the next request mints one with the new secret.
  virtual Status setBosaUserSecret(std::string_view identifier, const SecretString& secret) = 0;
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
