// Registration of keywayd's metrics beyond the gateway's own series (docs/operations.md).
#pragma once

#include <memory>
#include <string>

#include "core/cache_store.hpp"
#include "core/credential_store.hpp"
#include "core/gateway.hpp"
#include "core/metrics.hpp"
#include "daemon/curl_upstream_client.hpp"
#include "daemon/redis_shared_cache.hpp"

namespace keyway::daemon {

// In flight, connections open (all and per upstream pool, with their peak).
void registerUpstreamMetrics(core::Metrics& metrics, const std::shared_ptr<CurlUpstreamClient>& upstream);
// Generation, file size and records by kind (recounted only when the generation moved).
void registerStoreMetrics(core::Metrics& metrics, const std::shared_ptr<core::CredentialStore>& credential_store,
                          const std::string& state_dir);
// Entries, bytes, health, evictions, dropped writes and degraded events of the response cache.
void registerCacheMetrics(core::Metrics& metrics, const std::shared_ptr<core::CacheStore>& cache);
// Age, actions and unenforced constructs of the BOSA schemas in use, per BOSA upstream.
void registerBosaMetrics(core::Metrics& metrics, const std::shared_ptr<core::Gateway>& gateway);
// The fleet replica's revision, lag, watch and counters (docs/fleet.md); `fleet` outlives the metrics' use.
class FleetReplicator;
void registerFleetMetrics(core::Metrics& metrics, const FleetReplicator* fleet);
void registerSharedCacheMetrics(core::Metrics& metrics, std::shared_ptr<const RedisSharedCache> shared);

}  // namespace keyway::daemon
