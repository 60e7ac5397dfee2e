// In-memory SchemaStore; mirrors LmdbSchemaStore's validation and limits.
#include "storage/memory_schema_store.hpp"

#include "storage/lmdb_schema_store.hpp"
#include "storage/record_codec.hpp"

namespace keyway::storage {

using core::Error;
using core::ErrorCode;
using core::Result;
using core::Status;

namespace {

Error unavailable() {
  return Error::make(ErrorCode::kUnavailable, "the schema store is unavailable (test failure)");
}

}  // namespace

Result<std::optional<core::StoredSchemas>> MemorySchemaStore::load(std::string_view upstream) {
  auto valid = validateName("upstream", upstream);
  if (!valid) return valid.takeError();
  std::lock_guard<std::mutex> lock(mutex_);
  if (failing_) return unavailable();
  auto it = documents_.find(upstream);
  if (it == documents_.end()) return std::optional<core::StoredSchemas>();
  return std::optional<core::StoredSchemas>(it->second);
}

Status MemorySchemaStore::save(std::string_view upstream, const core::StoredSchemas& schemas) {
  auto valid = validateName("upstream", upstream);
  if (!valid) return valid;
  if (schemas.document.size() > kMaxSchemaDocumentBytes) {
    return Error::make(ErrorCode::kPayloadTooLarge,
                       "the discovery document of upstream '" + std::string(upstream) + "' is " +
                           std::to_string(schemas.document.size()) +
                           " bytes, more than the limit of " +
                           std::to_string(kMaxSchemaDocumentBytes) +
                           " bytes; it was not stored (the stored one, if any, is kept)");
  }
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
