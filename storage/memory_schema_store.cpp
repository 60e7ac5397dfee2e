// In-memory SchemaStore, with LmdbSchemaStore's checks (checkSchemasToSave) and limits.
#include "storage/memory_schema_store.hpp"

#include "storage/lmdb_schema_store.hpp"
#include "storage/names.hpp"

namespace keyway::storage {

namespace {

core::Error unavailable() {
  return core::Error::make(core::ErrorCode::kUnavailable,
                           "the schema store is unavailable (test failure)");
}

}  // namespace

core::Result<std::optional<core::StoredSchemas>> MemorySchemaStore::load(
    std::string_view upstream) {
  auto valid = validateName("upstream", upstream);
  if (!valid) return valid.takeError();
  std::lock_guard<std::mutex> lock(mutex_);
  if (failing_) return unavailable();
  auto it = documents_.find(upstream);
  if (it == documents_.end()) return std::optional<core::StoredSchemas>();
  return std::optional<core::StoredSchemas>(it->second);
}

core::Status MemorySchemaStore::save(std::string_view upstream,
                                     const core::StoredSchemas& schemas) {
  auto valid = checkSchemasToSave(upstream, schemas);
  if (!valid) return valid;
  std::lock_guard<std::mutex> lock(mutex_);
  if (failing_) return unavailable();
  documents_[std::string(upstream)] = schemas;
  ++generation_;
  return core::okStatus();
}

uint64_t MemorySchemaStore::generation() {
  std::lock_guard<std::mutex> lock(mutex_);
  return generation_;
}

void MemorySchemaStore::setFailing(bool failing) {
  std::lock_guard<std::mutex> lock(mutex_);
  failing_ = failing;
}

}  // namespace keyway::storage
