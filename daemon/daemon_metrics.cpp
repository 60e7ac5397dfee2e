// keywayd's metrics beyond the gateway's own series: upstream connections, the credential store,
// the response cache and the BOSA schemas in use (docs/operations.md, "Logs, signals and metrics").
#include "daemon/daemon_metrics.hpp"

#include <sys/stat.h>

#include <array>
#include <cstdio>
#include <chrono>
#include <mutex>

#include "daemon/fleet_replicator.hpp"
#include "storage/lmdb_credential_store.hpp"

namespace keyway::daemon {

void registerUpstreamMetrics(core::Metrics& metrics, const std::shared_ptr<CurlUpstreamClient>& upstream) {
  metrics.addGauge("keyway_upstream_observer_failures",
                   "Upstream exchanges whose observer threw (a bug in keyway; the log names where).",
                   [upstream] { return static_cast<double>(upstream->stats().observer_failures); });
  metrics.addGauge("keyway_upstream_requests_in_flight", "Upstream exchanges in flight.",
                     [upstream] { return static_cast<double>(upstream->stats().in_flight); });
  metrics.addGauge("keyway_upstream_connections_open",
                     "Upstream connections open now, idle pooled ones included.",
                     [upstream] { return static_cast<double>(upstream->stats().open_connections); });
  {
    // Per upstream (one pool each): what max_connections bounds, now and at its highest.
    std::weak_ptr<CurlUpstreamClient> weak_upstream = upstream;
    metrics.addRenderer([weak_upstream](std::string& out) {
      auto live = weak_upstream.lock();
      if (!live) return;
      const auto stats = live->stats();
      auto family = [&](const char* name, const char* help, auto value) {
        out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " gauge\n";
        for (const auto& pool : stats.pools) {
          if (pool.pool.empty()) continue;
          out += std::string(name) + "{upstream=\"" + pool.pool + "\"} " + std::to_string(value(pool)) + "\n";
        }
      };
      family("keyway_upstream_pool_connections_open", "Connections open to the upstream now, idle ones included.",
             [](const PoolStats& p) { return p.open; });
      family("keyway_upstream_pool_connections_peak",
             "The most connections ever open to the upstream at once (bounded by its max_connections).",
             [](const PoolStats& p) { return p.peak; });
    });
  }
}

void registerStoreMetrics(core::Metrics& metrics, const std::shared_ptr<core::CredentialStore>& credential_store,
                          const std::string& state_dir) {
  metrics.addGauge("keyway_credential_store_generation", "Last committed credential store transaction id.",
                     [credential_store] { return static_cast<double>(credential_store->generation()); });
  {
    // Store size without a storage/ stats call: the LMDB data file's size (LMDB grows it page
    // by page; storage/ does not map it writable, so it is not preallocated to the map size).
    const std::string data_file = storage::credentialEnvPath(state_dir) + "/data.mdb";
    metrics.addGauge("keyway_credential_store_file_bytes", "Size of the credential store's LMDB data file.",
                       [data_file] {
                         struct stat st {};
                         return ::stat(data_file.c_str(), &st) == 0 ? static_cast<double>(st.st_size) : 0.0;
                       });
    // Records by kind, recounted only when the store's generation moved (keywayctl or a token
    // mint committed something), so a scrape costs no LMDB scan in the steady state.
    struct Counts {
      std::mutex mu;
      uint64_t generation = 0;
      bool valid = false;
      std::array<int64_t, 4> n{};
    };
    auto counts = std::make_shared<Counts>();
    std::weak_ptr<core::CredentialStore> weak_store = credential_store;
    metrics.addRenderer([weak_store, counts](std::string& out) {
      auto live_store = weak_store.lock();
      if (!live_store) return;
      std::array<int64_t, 4> n{};
      {
        std::lock_guard<std::mutex> lock(counts->mu);
        const uint64_t generation = live_store->generation();
        if (!counts->valid || counts->generation != generation) {
          auto teams = live_store->listTeams();
          auto clients = live_store->listClients();
          auto secrets = live_store->listSecrets();
          auto users = live_store->listBosaUsers();
          counts->n = {teams.ok() ? static_cast<int64_t>(teams->size()) : -1,
                       clients.ok() ? static_cast<int64_t>(clients->size()) : -1,
                       secrets.ok() ? static_cast<int64_t>(secrets->size()) : -1,
                       users.ok() ? static_cast<int64_t>(users->size()) : -1};
          // A failed listing is retried at the next scrape instead of being cached.
          counts->valid = teams.ok() && clients.ok() && secrets.ok() && users.ok();
          counts->generation = generation;
        }
        n = counts->n;
      }
      static constexpr const char* kKinds[4] = {"teams", "clients", "secrets", "bosa_users"};
      out += "# HELP keyway_credential_store_entries Records in the credential store by kind (names only, never values).\n"
             "# TYPE keyway_credential_store_entries gauge\n";
      for (size_t i = 0; i < n.size(); ++i) {
        if (n[i] < 0) continue;
        out += std::string("keyway_credential_store_entries{kind=\"") + kKinds[i] + "\"} " + std::to_string(n[i]) + "\n";
      }
    });
  }

}

void registerCacheMetrics(core::Metrics& metrics, const std::shared_ptr<core::CacheStore>& cache) {
  metrics.addGauge("keyway_cache_entries", "Entries in the response cache.",
                     [cache] { return static_cast<double>(cache->stats().entries); });
  metrics.addGauge("keyway_cache_bytes", "Bytes accounted in the response cache.",
                     [cache] { return static_cast<double>(cache->stats().bytes); });
  metrics.addGauge("keyway_cache_healthy", "1 while the response cache works, 0 while it is degraded.",
                     [cache] { return cache->healthy() ? 1.0 : 0.0; });
  metrics.addGauge("keyway_cache_evictions", "Entries evicted from the response cache (LRU) since start.",
                     [cache] { return static_cast<double>(cache->stats().evictions); });
    // A full or failing disk shows here while the gateway keeps forwarding.
  metrics.addGauge("keyway_cache_dropped_writes", "Cache writes not stored (too large, full, failing) since start.",
                     [cache] { return static_cast<double>(cache->stats().dropped_writes); });
  metrics.addGauge("keyway_cache_degraded_events", "Cache storage failures survived since start.",
                     [cache] { return static_cast<double>(cache->stats().degraded_events); });
}

void registerBosaMetrics(core::Metrics& metrics, const std::shared_ptr<core::Gateway>& gateway_ptr) {
  {
    std::weak_ptr<core::Gateway> weak = gateway_ptr;
    metrics.addRenderer([weak](std::string& out) {
      auto gateway = weak.lock();
      if (!gateway) return;
      std::vector<std::string> names;
      for (const auto& u : gateway->config()->upstreams) {
        if (u.protocol == core::Protocol::kBosa) names.push_back(u.name);
      }
      const auto now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                              std::chrono::system_clock::now().time_since_epoch()).count();
      auto family = [&](const char* name, const char* help, auto&& value) {
        out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " gauge\n";
        for (const auto& n : names) {
          auto snap = gateway->bosaSchemas(n);
          if (!snap) continue;
          out += std::string(name) + "{upstream=\"" + n + "\"} " + std::to_string(value(*snap)) + "\n";
        }
      };
      family("keyway_bosa_schema_age_seconds", "Age of the BOSA schemas in use.",
             [&](const core::BosaSnapshot& s) { return (now_ms - s.fetched_unix_ms) / 1000; });
      family("keyway_bosa_schema_actions", "BOSA actions known from the schemas in use.",
             [](const core::BosaSnapshot& s) { return static_cast<int64_t>(s.catalog->actionCount()); });
      family("keyway_bosa_schema_unenforced", "Schema constructs keyway cannot enforce (keywayctl schemas list).",
             [](const core::BosaSnapshot& s) { return static_cast<int64_t>(s.catalog->issueCount()); });
    });
  }

}

void registerFleetMetrics(core::Metrics& metrics, const FleetReplicator* fleet) {
  metrics.addRenderer([fleet](std::string& out) {
    const auto series = [&out](const char* name, const char* type, const char* help, const std::string& value) {
      out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n" + name + " " + value + "\n";
    };
    char lag[32];
    std::snprintf(lag, sizeof lag, "%.3f", fleet->lagSeconds());
    series("keyway_fleet_replica_revision", "gauge", "The etcd revision this host's replica holds.",
           std::to_string(fleet->replicaRevision()));
    series("keyway_fleet_lag_seconds", "gauge",
           "0 while the watch is connected and its member answers; else seconds since the replica was last known current.",
           lag);
    series("keyway_fleet_watch_connected", "gauge", "1 while the watch on etcd is connected.",
           fleet->watchConnected() ? "1" : "0");
    series("keyway_fleet_reconnects_total", "counter", "Watches that ended and were set up again.",
           std::to_string(fleet->reconnects()));
    series("keyway_fleet_snapshots_total", "counter", "Snapshots of the fleet loaded into the replica.",
           std::to_string(fleet->snapshots()));
    series("keyway_fleet_events_applied_total", "counter", "Watch events applied to the replica.",
           std::to_string(fleet->eventsApplied()));
    series("keyway_fleet_errors_total", "counter",
           "etcd calls that failed and records that could not be applied (see the log).", std::to_string(fleet->errors()));
  });
}

void registerSharedCacheMetrics(core::Metrics& metrics, std::shared_ptr<const RedisSharedCache> shared) {
  metrics.addRenderer([shared](std::string& out) {
    const auto series = [&out](const char* name, const char* type, const char* help, uint64_t value) {
      out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n" + name + " " +
             std::to_string(value) + "\n";
    };
    const SharedCacheCounters& c = shared->counters();
    const auto load = [](const std::atomic<uint64_t>& v) { return v.load(std::memory_order_relaxed); };
    series("keyway_cache_l2_hits_total", "counter", "Shared-cache lookups that found a fresh entry (or waited for one).",
           load(c.hits));
    series("keyway_cache_l2_misses_total", "counter", "Shared-cache lookups without a fresh entry.", load(c.misses));
    series("keyway_cache_l2_errors_total", "counter",
           "Shared-cache commands that failed: error replies (a full Redis), lost connections, skipped while Redis "
           "failed, unexpected answers.",
           load(c.errors));
    series("keyway_cache_l2_timeouts_total", "counter", "Shared-cache commands without an answer within the timeout.",
           load(c.timeouts));
    series("keyway_cache_l2_lock_waits_total", "counter",
           "Misses that found another host fetching the key and waited for its entry.", load(c.lock_waits));
    series("keyway_cache_l2_rejected_total", "counter",
           "Shared-cache values or messages that did not open (tampered, or another master key).", load(c.rejected));
    series("keyway_cache_l2_invalidations_received_total", "counter",
           "Invalidations and purges announced by other hosts and applied here.", load(c.invalidations_received));
    series("keyway_cache_l2_up", "gauge", "1 while a connection to the shared cache's Redis is up.",
           shared->clientStats().connections_up > 0 ? 1 : 0);
  });
}

}  // namespace keyway::daemon
