// keywayd's process: assembles the store, upstream client, cache, gateway and listeners from a
// configuration, serves until a signal, reloads on SIGHUP and drains on SIGTERM
// (docs/operations.md). keywayd_main.cpp is only its command line.
#pragma once

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/config.hpp"
#include "core/gateway.hpp"
#include "core/metrics.hpp"
#include "daemon/curl_upstream_client.hpp"
#include "daemon/http_server.hpp"
#include "daemon/log.hpp"
#include "daemon/tls_trust.hpp"
#include "daemon/fleet_replicator.hpp"
#include "daemon/redis_shared_cache.hpp"
#include "daemon/watchdog.hpp"

namespace keyway::daemon {

// keywayd's exit status (docs/operations.md), the convention of keywayctl's: 1 for what the
// operator fixes in the command line or configuration (systemd should not restart on it), 2 for a
// failure at start-up or run time (a port in use, the credential store unreadable).
inline constexpr int kExitUsageOrConfig = 1;
inline constexpr int kExitRuntime = 2;

class Daemon {
 public:
  // `config_file`: what --config named (none: the embedded default), read again on SIGHUP.
  Daemon(std::optional<std::string> config_file, core::Config config, std::shared_ptr<Logger> logger);
  ~Daemon();

  // Serves until SIGTERM/SIGINT (then drains) and returns the exit status: 0 after a stop,
  // kExitRuntime when start-up failed (one error line says why; READY=1 was never sent).
  int run();

 private:
  void reload();
  int drainAndStop();
  core::Status startFleet(const core::FleetConfig& fleet);
  core::Status startSharedCache(const core::SharedCacheConfig& config, std::shared_ptr<core::CacheStore> local,
                                std::shared_ptr<core::Scheduler> scheduler, std::shared_ptr<core::Clock> clock);
  std::string statusLine() const;
  // WATCHDOG=1 from the serving path (daemon/watchdog.hpp). No-op without WATCHDOG_USEC.
  void startWatchdog();
  // Connections and requests a drain still waits for.
  int64_t drainPending() const;

  std::optional<std::string> config_file_;
  std::shared_ptr<const core::Config> config_;  // main thread only; other threads use gateway_->config()
  std::shared_ptr<Logger> logger_;
  std::shared_ptr<core::Metrics> metrics_;
  std::shared_ptr<core::Gateway> gateway_;
  std::shared_ptr<LogEventSink> events_;
  std::vector<std::unique_ptr<HttpServer>> servers_;
  std::shared_ptr<CurlUpstreamClient> upstream_;
  std::shared_ptr<TrustStores> trust_;
  std::atomic<bool> ready_{false};
  std::unique_ptr<Watchdog> watchdog_;
  std::unique_ptr<FleetReplicator> fleet_;  // null for a single host
  std::shared_ptr<RedisSharedCache> shared_cache_;  // null without cache.shared
};

}  // namespace keyway::daemon
