// Encoding and strict decoding of the credential store's backup file.
#include "storage/backup_format.hpp"

#include "storage/byte_codec.hpp"
#include "storage/record_codec.hpp"
#include "storage/core_names.hpp"

namespace keyway::storage {

namespace {

// magic, format, file size, schema version, key id length, generation, created, record count.
constexpr size_t kFixedHeaderBytes = 8 + 4 + 8 + 4 + 4 + 8 + 8 + 4;
// A record is at least its three string lengths.
constexpr size_t kMinRecordBytes = 12;

Error bad(const std::string& what) {
  return Error::make(ErrorCode::kBadRequest, "the file is not a usable keyway backup: " + what);
}

bool knownTable(std::string_view name) {
  for (std::string_view t : {table::kTeams, table::kClients, table::kClientTokens, table::kSecrets,
                             table::kBosaUsers, table::kUserTokens, table::kMeta}) {
    if (name == t) return true;
  }
  return false;
}

}  // namespace

std::string encodeBackup(const Backup& backup, const Keyring& keyring) {
  ByteWriter body;
  body.u32(backup.schema_version);
  body.str(backup.key_id);
  body.u64(backup.generation);
  body.i64(backup.created_unix);
  body.u32(static_cast<uint32_t>(backup.records.size()));
  for (const auto& r : backup.records) {
    body.str(r.table);
    body.str(r.key);
    body.str(r.value);
  }
  ByteWriter out;
  out.raw(kBackupMagic);
  out.u32(kBackupFormat);
  out.u64(kBackupMagic.size() + 4 + 8 + body.bytes().size() + kMacBytes);
  out.raw(body.bytes());
  std::string bytes = out.take();
  bytes += keyring.mac(bytes);
  return bytes;
}

Result<Backup> decodeBackup(std::string_view bytes) {
  if (bytes.substr(0, kBackupMagic.size()) != kBackupMagic) {
    return bad("it does not start with the keyway backup header (is it a backup written by "
               "`keywayctl backup`?)");
  }
  if (bytes.size() < kFixedHeaderBytes + kMacBytes) {
    return bad("it is truncated (" + std::to_string(bytes.size()) + " bytes)");
  }
  ByteReader r(bytes.substr(0, bytes.size() - kMacBytes));
  std::string_view magic;
  uint32_t format = 0;
  uint64_t size = 0;
  r.raw(kBackupMagic.size(), magic);
  r.u32(format);
  r.u64(size);
  if (format != kBackupFormat) {
    return bad("it has format " + std::to_string(format) + "; this keyway reads format " +
               std::to_string(kBackupFormat) + " (written by a newer keyway?)");
  }
  if (size > bytes.size()) {
    return bad("it is truncated (" + std::to_string(bytes.size()) + " of " + std::to_string(size) +
               " bytes)");
  }
  if (size < bytes.size()) {
    return bad("it has " + std::to_string(bytes.size() - size) + " unexpected bytes at its end");
  }
  Backup backup;
  uint32_t count = 0;
  if (!r.u32(backup.schema_version) || !r.str(backup.key_id) ||
      backup.key_id.size() != kKeyIdBytes || !r.u64(backup.generation) ||
      !r.i64(backup.created_unix) || !r.u32(count)) {
    return bad("its header is damaged");
  }
  // Each record takes at least kMinRecordBytes: a count the file cannot hold is refused before
  // anything is reserved.
  if (count > (bytes.size() - r.position()) / kMinRecordBytes) return bad("its header is damaged");
  backup.records.reserve(count);
  for (uint32_t i = 0; i < count; ++i) {
    BackupRecord rec;
    if (!r.str(rec.table) || !r.str(rec.key) || !r.str(rec.value)) {
      return bad("record " + std::to_string(i + 1) + " of " + std::to_string(count) +
                 " is damaged");
    }
    if (!knownTable(rec.table)) {
      return bad("record " + std::to_string(i + 1) + " names an unknown table");
    }
    backup.records.push_back(std::move(rec));
  }
  if (!r.atEnd()) return bad("it has bytes after its last record");
  return backup;
}

bool backupAuthentic(std::string_view bytes, const Keyring& keyring) {
  if (bytes.size() < kMacBytes) return false;
  const std::string_view body = bytes.substr(0, bytes.size() - kMacBytes);
  return core::constantTimeEquals(keyring.mac(body), bytes.substr(body.size()));
}

}  // namespace keyway::storage
