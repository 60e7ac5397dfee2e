// The role interface of the BOSA schema store: each BOSA upstream's discovery document
// (GET /connectors) kept with its fetch time, durable across restarts. Implemented by
// storage/LmdbSchemaStore (keywayd and keywayctl share it) and storage/MemorySchemaStore (tests).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "core/result.hpp"

namespace keyway::core {

struct StoredSchemas {
  std::string document;         // the discovery document's bytes exactly as the upstream sent them
  int64_t fetched_unix_ms = 0;  // when keyway (or keywayctl) fetched it
};

// Thread-safe and multi-process safe: a save() by keywayctl is visible to the running daemon's
// next load(). Schemas are not secret, so nothing here is encrypted. load() of an upstream never
// saved is an empty optional, not an Error; storage failures are Errors (kUnavailable).
class SchemaStore {
 public:
  virtual ~SchemaStore() = default;
  virtual Result<std::optional<StoredSchemas>> load(std::string_view upstream) = 0;
  // Replaces the upstream's document durably (synced before returning: schemas are fetched
  // rarely and must survive a crash, unlike cache entries).
  virtual Status save(std::string_view upstream, const StoredSchemas& schemas) = 0;
  // Changes whenever any process saves any document. Cheap (no disk I/O beyond a read
  // transaction), so the daemon may poll it on the request path.
  virtual uint64_t generation() = 0;
};

}  // namespace keyway::core
