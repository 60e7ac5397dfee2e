// In-memory core::SchemaStore with LmdbSchemaStore's rules (for gateway and BOSA unit tests).
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "core/schema_store.hpp"

namespace keyway::storage {

// Thread-safe (one mutex); nothing persists. Same limits and errors as LmdbSchemaStore: an
// invalid upstream name is kBadRequest, a document over kMaxSchemaDocumentBytes is
// kPayloadTooLarge and leaves the store unchanged. generation() starts at 0 and increases by one
// per successful save.
class MemorySchemaStore final : public core::SchemaStore {
 public:
  MemorySchemaStore() = default;

  core::Result<std::optional<core::StoredSchemas>> load(std::string_view upstream) override;
  core::Status save(std::string_view upstream, const core::StoredSchemas& schemas) override;
  uint64_t generation() override;

  // Tests: make the next load()/save() calls fail with kUnavailable (storage down) until reset.
  void setFailing(bool failing);

 private:
  std::mutex mutex_;
  std::map<std::string, core::StoredSchemas, std::less<>> documents_;
  uint64_t generation_ = 0;
  bool failing_ = false;
};

}  // namespace keyway::storage
