// LmdbSchemaStore: the durable core::SchemaStore on its own LMDB environment (<state_dir>/schemas),
// shared by keywayd (serves and validates from it) and `keywayctl schemas list|refresh`.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "core/result.hpp"
#include "core/schema_store.hpp"

namespace keyway::storage {

// Subdirectory of the state directory holding the schema environment.
inline constexpr std::string_view kSchemaEnvDir = "schemas";
std::string schemaEnvPath(const std::string& state_dir);

// Largest discovery document either schema store accepts (real ones are a few MiB). A bigger one
// is refused by save() with kPayloadTooLarge and the store is left unchanged.
inline constexpr size_t kMaxSchemaDocumentBytes = size_t{64} << 20;

// What either schema store checks before a save: a valid upstream name (kBadRequest) and a
// document within kMaxSchemaDocumentBytes (kPayloadTooLarge).
core::Status checkSchemasToSave(std::string_view upstream, const core::StoredSchemas& schemas);

// Virtual map size of the schema environment: room for a few large documents and LMDB's
// copy-on-write copies of them. The file is sparse; this costs address space only. When a save
// finds the map full, the map grows (doubling, up to kMaxSchemaMapSize) and the save is retried.
inline constexpr size_t kSchemaMapSize = size_t{256} << 20;
inline constexpr size_t kMaxSchemaMapSize = size_t{1} << 30;

// Layout: named database "schemas" (upstream name -> record: format byte 1, fetched_unix_ms as
// 8 bytes little-endian, then the document bytes) and "meta" ("generation" -> 8 bytes little-
// endian, bumped in the same write transaction as every save). Durable: every save is fsync'ed
// before it returns (no MDB_NOSYNC); schemas are written rarely.
// Thread-safe and multi-process safe: each call runs in its own LMDB transaction (MDB_NOTLS), so
// it sees everything committed before it by any process (e.g. keywayctl next to keywayd).
// Errors: storage failures are kUnavailable/kInternal with the environment path and what to do; a
// record that does not decode is kInternal ("damaged ... run keywayctl schemas refresh"), never a
// crash; an upstream name that is not a valid name (storage/names.hpp) is kBadRequest.
class LmdbSchemaStore final : public core::SchemaStore {
 public:
  // Opens (creating the directories and environment files if absent, 0700/0600) the environment
  // at <state_dir>/schemas. Within one process every open of the same directory shares one
  // MDB_env (storage/lmdb_env.hpp's registry); `map_size` applies when this process opens the
  // environment first (tests pass a small one to exercise growth).
  static core::Result<std::shared_ptr<LmdbSchemaStore>> open(const std::string& state_dir,
                                                             size_t map_size = kSchemaMapSize);
  ~LmdbSchemaStore() override;

  core::Result<std::optional<core::StoredSchemas>> load(std::string_view upstream) override;
  core::Status save(std::string_view upstream, const core::StoredSchemas& schemas) override;
  // The counter record, read in a read transaction. If it cannot be read (storage failure) the
  // last value this instance saw is returned, so a transient failure is not taken for a change.
  uint64_t generation() override;

  const std::string& path() const;

 private:
  struct Env;  // the LMDB environment and its databases (lmdb_schema_store.cpp)
  explicit LmdbSchemaStore(std::unique_ptr<Env> env);
  // One attempt at the write transaction of save(); false with `error` set when it failed, and
  // `map_full` when the failure was a full map (grow and retry).
  bool trySave(std::string_view upstream, std::string_view record, core::Error* error,
               bool* map_full);

  std::unique_ptr<Env> env_;
  std::atomic<uint64_t> last_generation_{0};
};

// The record codec (exposed for tests and fuzzing). decode never reads past `record` and rejects
// any record that is not version 1 with its 9-byte header.
std::string encodeSchemaRecord(const core::StoredSchemas& schemas);
core::Result<core::StoredSchemas> decodeSchemaRecord(std::string_view upstream,
                                                     std::string_view record);

}  // namespace keyway::storage
