// The credential store's backup file (`keywayctl backup`): every record of a snapshot exactly as
// stored (sealed fields stay sealed), with the id of the master key that seals them and a MAC
// under that key. Pure functions with no I/O: the decoder rejects any malformed input with an
// Error (never crashes, never over-allocates), so it is a fuzzing surface.
//
// Layout (integers little-endian, strings u32-length-prefixed):
//   "KWBACKUP" | u32 format | u64 file size | u32 schema version | str key id | u64 generation |
//   i64 created (unix s) | u32 record count | records: str table, str key, str value |
//   32-byte MAC (Keyring::mac of everything before it)
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.hpp"
#include "storage/crypto.hpp"

namespace keyway::storage {

inline constexpr std::string_view kBackupMagic = "KWBACKUP";
inline constexpr uint32_t kBackupFormat = 1;

struct BackupRecord {
  std::string table;  // a table of the credential environment (record_codec.hpp)
  std::string key;
  std::string value;
};

struct Backup {
  uint32_t schema_version = 0;
  std::string key_id;       // Keyring::keyId of the key that seals the records
  uint64_t generation = 0;  // the store's generation when the snapshot was taken
  int64_t created_unix = 0;
  std::vector<BackupRecord> records;
};

// The file's bytes, MAC'ed with `keyring` (whose keyId() is expected to be backup.key_id).
std::string encodeBackup(const Backup& backup, const Keyring& keyring);

// Parses the file without authenticating it. Errors (kBadRequest, the message says what is wrong
// with the file and never quotes it): not a backup, another format, truncated, trailing bytes,
// malformed or unknown records. Records themselves are not decoded (decodeRecord does that).
core::Result<Backup> decodeBackup(std::string_view bytes);

// Whether the MAC at the end of `bytes` (a decodeBackup'ed file) is `keyring`'s over the rest.
bool backupAuthentic(std::string_view bytes, const Keyring& keyring);

}  // namespace keyway::storage
