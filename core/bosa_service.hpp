// BOSA schema service: each BOSA upstream's discovery document, loaded from the schema store,
// fetched from the upstream when absent (one fetch for all waiters), refreshed in the background
// after its TTL, and served to SDKs without a client token (docs/bosa.md).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "core/bosa_catalog.hpp"
#include "core/clock.hpp"
#include "core/config.hpp"
#include "core/http_types.hpp"
#include "core/metrics.hpp"
#include "core/result.hpp"
#include "core/schema_store.hpp"
#include "core/upstream_client.hpp"

namespace keyway::core {

// One immutable version of an upstream's schemas. Shared freely across threads.
struct BosaSnapshot {
  std::shared_ptr<const BosaCatalog> catalog;
  std::string document;                          // bytes exactly as the upstream sent them
  std::map<std::string, std::string, std::less<>> connector_json;  // name -> its object, serialised
  std::string names_json;                        // ["github","gmail",...] in document order
  // Action path (as in the document) -> {connector, action}, for actions whose path is not the
  // usual /connectors/{app}/{action}.
  std::map<std::string, std::pair<std::string, std::string>, std::less<>> by_path;
  int64_t fetched_unix_ms = 0;

  // The action a POST to `path` calls, or null. Looks at /connectors/{app}/{action} first, then
  // at the document's own `path` fields.
  const BosaAction* actionForPath(std::string_view path) const;
};

// Builds a snapshot from a discovery document; fails when it is not a JSON object.
Result<std::shared_ptr<const BosaSnapshot>> makeBosaSnapshot(std::string document, int64_t fetched_unix_ms);

// Whether a GET of `path` is schema discovery: /connectors, /connectors/ or /connectors/names.
bool isBosaDiscoveryPath(std::string_view path);

// The discovery response for `path` + `query` from a snapshot (200, JSON, X-Keyway-Cache: HIT,
// Age). `modules` lists the connectors asked for with ?modules= (comma-separated, repeatable).
std::vector<std::string> bosaModulesQuery(std::string_view query);
HttpResponse bosaDiscoveryResponse(const BosaSnapshot& snapshot, std::string_view path,
                                   const std::vector<std::string>& modules, int64_t now_unix_ms);

// A store that keeps nothing: the service then holds schemas in memory only (tests, or a daemon
// built without a schema store).
class NullSchemaStore final : public SchemaStore {
 public:
  Result<std::optional<StoredSchemas>> load(std::string_view) override { return std::optional<StoredSchemas>(); }
  Status save(std::string_view, const StoredSchemas&) override { return okStatus(); }
  uint64_t generation() override { return 0; }
};

// Receives warnings (failed fetches, unenforced constructs). Thread-safe.
using BosaWarn = std::function<void(std::string_view)>;

class BosaSchemaService {
 public:
  BosaSchemaService(std::shared_ptr<SchemaStore> store, std::shared_ptr<UpstreamClient> upstream,
                    std::shared_ptr<Clock> clock, std::shared_ptr<Metrics> metrics, BosaWarn warn);
  ~BosaSchemaService();

  using Callback = std::function<void(Result<std::shared_ptr<const BosaSnapshot>>)>;

  // Calls `done` exactly once with the upstream's current schemas: inline when they are in memory
  // (or in the store), else after one upstream fetch shared by every concurrent caller (then on
  // the upstream client's thread). A snapshot older than the upstream's schema_ttl is returned at
  // once and refreshed in the background. `want` names connectors the caller needs: when one is
  // missing and the last fetch attempt is older than 30 s, the caller waits for a refresh.
  // Errors: kUnavailable when nothing is stored and the fetch failed.
  void get(const UpstreamConfig& upstream, const std::vector<std::string>& want, Callback done);

  // The snapshot in memory, if any (no I/O); for metrics.
  std::shared_ptr<const BosaSnapshot> peek(std::string_view upstream) const;

 private:
  struct State;
  State& stateFor(const std::string& name);
  void startFetch(const UpstreamConfig& upstream, State& state);  // state.mu held
  friend class SchemaFetchObserver;
  void finishFetch(const std::string& upstream_name, Result<std::shared_ptr<const BosaSnapshot>> result);

  std::shared_ptr<SchemaStore> store_;
  std::shared_ptr<UpstreamClient> upstream_;
  std::shared_ptr<Clock> clock_;
  std::shared_ptr<Metrics> metrics_;
  BosaWarn warn_;
  mutable std::mutex mu_;  // guards states_ (the map; each State has its own lock)
  std::map<std::string, std::unique_ptr<State>, std::less<>> states_;
};

}  // namespace keyway::core
