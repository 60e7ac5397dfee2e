// Writes the seed corpus of the backup fuzz target: backups made by encodeBackup under the public
// fuzz key (empty, one record of each table, a real-looking store), and cut or altered copies.
// Usage: fuzz_backup_make_corpus DIR (existing files are overwritten).
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "storage/backup_format.hpp"
#include "storage/record_codec.hpp"
#include "tests/fuzz/record/record_fuzz_input.hpp"

namespace st = keyway::storage;

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 1;
  }
  const std::filesystem::path dir(argv[1]);
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return 1;
  const st::Keyring* ring = &keyway::fuzz::record::fuzzKeyring();
  bool ok = true;
  auto put = [&](const std::string& name, const std::string& bytes) {
    std::ofstream out(dir / name, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    ok = ok && static_cast<bool>(out);
  };
  st::Backup empty;
  empty.schema_version = st::kSchemaVersion;
  empty.key_id = ring->keyId();
  put("empty_store", st::encodeBackup(empty, *ring));

  st::Backup full = empty;
  full.generation = 17;
  full.created_unix = 1700000000;
  const std::string ad = st::associatedData(st::table::kSecrets, st::secretKey("", "bosa.api_key"));
  full.records = {
      {"teams", "ops", st::encodeTeam({"ops", false, {"bosa"}, 1700000000})},
      {"clients", "app", st::encodeClient({{"app", "ops", false, 1700000000}, std::string(32, 'h')})},
      {"client_tokens", std::string(32, 'h'), st::encodeClientTokenRef("app")},
      {"secrets", st::secretKey("", "bosa.api_key"), st::encodeSecret(1700000000, ring->seal("v", ad))},
      {"meta", "schema_version", st::encodeSchemaVersion(st::kSchemaVersion)},
      {"meta", "key_id", st::encodeKeyId(ring->keyId())},
  };
  const std::string bytes = st::encodeBackup(full, *ring);
  put("store", bytes);
  put("store_truncated", bytes.substr(0, bytes.size() - 40));
  put("store_trailing", bytes + "x");
  std::string other_format = bytes;
  other_format[8] = 2;
  put("store_format_2", other_format);
  put("header_only", bytes.substr(0, 60));
  put("not_a_backup", "SQLite format 3");
  if (!ok) return 1;
  std::printf("wrote seeds to %s\n", argv[1]);
  return 0;
}
