// Versioned binary encoding of the credential store's LMDB records.
// Pure functions with no I/O: decoders reject any malformed input with an Error (never crash,
// never over-allocate), so they are the fuzzing surface of the store.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include "core/credential_store.hpp"
#include "core/result.hpp"
#include "storage/names.hpp"  // the decoders accept valid names only

namespace keyway::storage {

// Named databases of the credential environment.
namespace table {
inline constexpr std::string_view kTeams = "teams";
inline constexpr std::string_view kClients = "clients";
inline constexpr std::string_view kClientTokens = "client_tokens";
inline constexpr std::string_view kSecrets = "secrets";
inline constexpr std::string_view kBosaUsers = "bosa_users";
inline constexpr std::string_view kUserTokens = "user_tokens";
inline constexpr std::string_view kMeta = "meta";
}  // namespace table

// Keys of the meta table.
inline constexpr std::string_view kMetaSchemaVersion = "schema_version";
inline constexpr std::string_view kMetaKeyCheck = "key_check";
// Written at init, by rekey and by restore (and carried by backups): which master key seals the
// store (Keyring::keyId, kKeyIdSize bytes, never the key) and the hashing subkeys of the key the
// store was initialised with, sealed. Stores made before key ids have neither until a rekey.
inline constexpr std::string_view kMetaKeyId = "key_id";
inline constexpr std::string_view kMetaHashKeys = "hash_keys";
inline constexpr size_t kKeyIdSize = 16;
inline constexpr uint32_t kSchemaVersion = 1;
// The plaintext sealed into the key-check record at init.
inline constexpr std::string_view kKeyCheckPlaintext = "keyway master key check v1";

// The associated data binding a ciphertext to its record: "<table>\0<key>".
std::string associatedData(std::string_view table, std::string_view key);

struct StoredClient {
  core::ClientRecord client;  // token_expires_unix is not stored
  std::string token_hash;     // keyed hash of its token (kTokenHashBytes)
  // Keyed hash of the token before the last rotation while it may still work (its grace period
  // ends at client.previous_token_until_unix); empty when there is none.
  std::string previous_token_hash{};
};

struct StoredSecret {
  std::string team;  // empty = shared
  std::string name;
  int64_t updated_unix = 0;
  std::string sealed;  // Keyring::seal output
};

struct StoredBosaUser {
  core::BosaUserRecord user;
  std::string sealed_secret;
};

struct StoredUserToken {
  int64_t expires_unix = 0;
  std::string sealed_token;
};

// teams: key = team name.
std::string encodeTeam(const core::TeamRecord& team);
core::Result<core::TeamRecord> decodeTeam(std::string_view key, std::string_view value);

// clients: key = client name. Version 1 records carry no rotation; version 2 adds the rotation
// time and the previous token's hash and end of grace. A client never rotated is written as
// version 1, so that each record has one encoding (and keyway versions without rotation still
// read it).
std::string encodeClient(const StoredClient& client);
core::Result<StoredClient> decodeClient(std::string_view key, std::string_view value);

// client_tokens: key = token hash, value = client name.
std::string encodeClientTokenRef(std::string_view client_name);
core::Result<std::string> decodeClientTokenRef(std::string_view key, std::string_view value);

// secrets: key = "<team>\0<name>", "\0<name>" for shared ones.
std::string secretKey(std::string_view team, std::string_view name);
core::Result<std::pair<std::string, std::string>> decodeSecretKey(std::string_view key);
std::string encodeSecret(int64_t updated_unix, std::string_view sealed);
core::Result<StoredSecret> decodeSecret(std::string_view key, std::string_view value);

// bosa_users: key = identifier.
std::string encodeBosaUser(const StoredBosaUser& user);
core::Result<StoredBosaUser> decodeBosaUser(std::string_view key, std::string_view value);

// user_tokens: key = identifier.
std::string encodeUserToken(const StoredUserToken& token);
core::Result<StoredUserToken> decodeUserToken(std::string_view key, std::string_view value);

// meta: schema_version, key_check, key_id, hash_keys.
std::string encodeSchemaVersion(uint32_t version);
core::Result<uint32_t> decodeSchemaVersion(std::string_view value);
std::string encodeKeyCheck(std::string_view sealed);
core::Result<std::string> decodeKeyCheck(std::string_view value);
std::string encodeKeyId(std::string_view key_id);
core::Result<std::string> decodeKeyId(std::string_view value);
std::string encodeHashKeys(std::string_view sealed);
core::Result<std::string> decodeHashKeys(std::string_view value);

// Decodes a record of any table (the fuzz entry point). kInternal for malformed records,
// kBadRequest for an unknown table.
core::Status decodeRecord(std::string_view table_name, std::string_view key,
                          std::string_view value);

}  // namespace keyway::storage
