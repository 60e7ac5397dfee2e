// The durable, encrypted credential store on an LMDB environment (<state_dir>/credentials),
// shared by keywayd and keywayctl: its factory and `keywayctl init`. What it does and refuses is
// CredentialRules' (storage/credential_rules.hpp); this file only says where it lives.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "core/clock.hpp"
#include "core/credential_store.hpp"
#include "core/result.hpp"

namespace keyway::storage {

// Subdirectory of the state directory holding the credential environment.
inline constexpr std::string_view kCredentialEnvDir = "credentials";
std::string credentialEnvPath(const std::string& state_dir);

// Opens <state_dir>/credentials (creating the directories and environment files if absent) with
// the key in `master_key_file`, which must already exist (see loadMasterKeyFile). On a fresh
// environment writes the schema version and the key-check record; otherwise verifies both.
// Errors name the paths and what to do (e.g. run `keywayctl init`); a key that does not match
// fails closed ("master key does not match this state directory", nothing is readable).
// Layout: named databases teams, clients, client_tokens, secrets, bosa_users, user_tokens, meta
// (record encoding: storage/record_codec.hpp). Secret values, BOSA user secrets and user tokens
// are sealed with the master key (associated data: table and key); client tokens are stored only
// as keyed hashes. Each call is one LMDB transaction, so it sees every write committed before
// it, by any process. An interrupted `keywayctl rekey` is completed or rolled back before anything
// else, and each call opens its snapshot with the key that sealed it, loading the key file again
// after a rekey by another process (storage/credential_keys.hpp). `clock` null = RealClock.
core::Result<std::unique_ptr<core::CredentialStore>> openLmdbCredentialStore(
    const std::string& state_dir, const std::string& master_key_file,
    std::shared_ptr<const core::Clock> clock = nullptr);

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
