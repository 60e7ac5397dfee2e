// keywayd's process: assembly, serving, reload and drain (see daemon.hpp).
#include "daemon/daemon.hpp"

#include <signal.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>

#include "core/clock.hpp"
#include "core/config_parse.hpp"
#include "daemon/daemon_metrics.hpp"
#include "daemon/status_report.hpp"
#include "daemon/timer_scheduler.hpp"
#include "storage/master_key.hpp"
#include "daemon/yaml_config_loader.hpp"
#include "storage/lmdb_cache_store.hpp"
#include "storage/fleet_replica.hpp"
#include "storage/lmdb_credential_store.hpp"
#include "storage/lmdb_schema_store.hpp"

namespace keyway::daemon {

namespace {

using SteadyClock = std::chrono::steady_clock;

// How often summarised credential_use counts are written (LogEventSink, log.audit: summary).
constexpr std::chrono::seconds kAuditPeriod{60};

std::vector<std::string> upstreamNames(const core::Config& c) {
  std::vector<std::string> names;
  for (const auto& u : c.upstreams) names.push_back(u.name);
  return names;
}

void notify(const std::string& state) { sd_notify(0, state.c_str()); }

// Every upstream's tls.ca_file ("" = the system's CAs is always loaded by TrustStores::reload).
std::vector<std::string> caFilesOf(const core::Config& config) {
  std::vector<std::string> files;
  for (const auto& u : config.upstreams) {
    if (u.tls && !u.tls->ca_file.empty()) files.push_back(u.tls->ca_file);
  }
  return files;
}

// Flushes the summarised audit counts every kAuditPeriod until the sink or the scheduler is gone.
void armAuditFlush(const std::shared_ptr<core::Scheduler>& scheduler,
                   const std::shared_ptr<LogEventSink>& events) {
  std::weak_ptr<core::Scheduler> weak_scheduler = scheduler;
  std::weak_ptr<LogEventSink> weak_events = events;
  scheduler->after(kAuditPeriod, [weak_scheduler, weak_events] {
    auto s = weak_scheduler.lock();
    auto e = weak_events.lock();
    if (!s || !e) return;
    e->flushAudit();
    armAuditFlush(s, e);
  });
}

}  // namespace

Daemon::Daemon(std::optional<std::string> config_file, core::Config config, std::shared_ptr<Logger> logger)
    : config_file_(std::move(config_file)),
      config_(std::make_shared<const core::Config>(std::move(config))),
      logger_(std::move(logger)) {}

Daemon::~Daemon() { watchdog_.reset(); }

std::string Daemon::statusLine() const {
  // Called from the watchdog thread too: the config comes from the gateway (atomic), servers_
  // and metrics_ are fixed once serving starts.
  return "serving " + std::to_string(gateway_->config()->upstreams.size()) + " upstreams on " +
         (servers_.empty() ? std::string("-") : servers_.front()->boundAddress()) + ", " +
         std::to_string(metrics_->in_flight.load()) + " requests in flight";
}

void Daemon::startWatchdog() {
  uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0 || servers_.empty()) return;
  logger_->info("watchdog enabled", {field("watchdog_ms", static_cast<int64_t>(usec / 1000)),
                                     field("check_every_ms", static_cast<int64_t>(usec / 3000))});
  Watchdog::Checks checks;
  checks.target = resolveSelfCheckTarget(gateway_->config()->listen.host, servers_.front()->port());
  checks.listener_saturated = [this] {
    return servers_.front()->openConnections() >= gateway_->config()->limits.max_connections;
  };
  std::shared_ptr<CurlUpstreamClient> upstream = upstream_;
  checks.upstream_loops_answer = [upstream](std::chrono::milliseconds deadline) {
    return upstream->probeIoThreads(deadline);
  };
  checks.status = [this] { return statusLine(); };
  watchdog_ = std::make_unique<Watchdog>(std::chrono::microseconds(usec), std::move(checks), logger_);
}

int Daemon::run() {
  const core::Config& config = *config_;
  auto store = storage::openLmdbCredentialStore(config.state_dir, config.master_key_file);
  if (!store.ok()) {
    logger_->error("cannot open the credential store", {field("error", store.error().message)});
    return kExitRuntime;
  }
  std::shared_ptr<core::CredentialStore> credential_store = std::move(store.value());
  if (config.fleet) {
    if (auto st = startFleet(*config.fleet); !st.ok()) {
      logger_->error("cannot set up the fleet replica", {field("component", "fleet"), field("error", st.error().message)});
      return kExitRuntime;
    }
  }

  CurlUpstreamClientOptions curl_options;
  // One event loop per reactor thread of the main listener, run by that thread: a forwarded
  // request, its upstream exchange and its response stay on one thread, with no hand-off to an
  // I/O thread and back (README, "Upstream connections").
  curl_options.io_threads = static_cast<unsigned>(config.server.threads);
  curl_options.hosted = true;
  // The CA stores every upstream's TLS connections verify against, parsed now rather than by
  // the first connection of a burst on a reactor thread.
  trust_ = std::make_shared<TrustStores>();
  if (auto st = trust_->reload(caFilesOf(config)); !st.ok()) {
    logger_->error("cannot load the CA certificates for upstream TLS", {field("error", st.error().message)});
    return kExitRuntime;
  }
  curl_options.trust = trust_;
  std::weak_ptr<Logger> weak_logger = logger_;
  curl_options.warn = [weak_logger](std::string_view message) {
    if (auto logger = weak_logger.lock()) logger->warnRateLimited("upstream-observer", message, std::chrono::seconds(10));
  };
  auto upstream = std::make_shared<CurlUpstreamClient>(curl_options);
  const std::vector<std::shared_ptr<ReactorGuest>> reactor_guests = upstream->guests();
  upstream_ = upstream;

  metrics_ = std::make_shared<core::Metrics>(upstreamNames(config));
  registerUpstreamMetrics(*metrics_, upstream);
  registerStoreMetrics(*metrics_, credential_store, config.state_dir);

  std::shared_ptr<core::CacheStore> cache;
  if (config.cache.enabled) {
    storage::LmdbCacheStoreOptions cache_options;
    cache_options.dir = config.cache.dir.empty() ? config.state_dir + "/cache" : config.cache.dir;
    cache_options.max_bytes = config.cache.max_bytes;
    auto logger = logger_;
    cache_options.warn = [logger](std::string_view m) { logger->warnRateLimited(m, m, std::chrono::seconds(10)); };
    cache = storage::LmdbCacheStore::open(cache_options);
    registerCacheMetrics(*metrics_, cache);
  }

  StatusPaths paths;
  if (config_file_) paths.config_file = absolutePath(*config_file_);
  paths.state_dir = absolutePath(config.state_dir);
  paths.master_key_file = absolutePath(config.master_key_file);
  paths.credential_store = storage::credentialEnvPath(paths.state_dir);
  if (struct stat st {}; ::stat(paths.credential_store.c_str(), &st) == 0) {
    paths.device = st.st_dev;
    paths.inode = st.st_ino;
  }
  if (cache) paths.cache_dir = absolutePath(config.cache.dir.empty() ? config.state_dir + "/cache" : config.cache.dir);
  auto status = std::make_shared<StatusReport>(std::move(paths));

  core::GatewayDeps deps;
  deps.status = [status] { return status->render(); };
  deps.cache = cache;
  deps.store = credential_store;
  deps.upstream = upstream;
  deps.metrics = metrics_;
  events_ = std::make_shared<LogEventSink>(logger_, kAuditPeriod);
  events_->setAuditEveryUse(config.log.audit == "every");
  deps.events = events_;
  deps.clock = std::make_shared<core::RealClock>();
  // A fleet host that never held the fleet's records would answer with the wrong ones.
  deps.ready = [this] { return ready_.load(std::memory_order_relaxed) && (!fleet_ || fleet_->synced()); };
  if (fleet_) {
    FleetReplicator* fleet = fleet_.get();
    deps.ready_details = [fleet] { return "\"fleet\":" + fleetStatusJson(*fleet); };
  }
  // BOSA schemas survive restarts so validation keeps working while BOSA is down (docs/bosa.md).
  if (auto schemas = storage::LmdbSchemaStore::open(config.state_dir); schemas.ok()) {
    deps.schemas = std::move(schemas.value());
  } else {
    logger_->error("cannot open the BOSA schema store; schemas are kept in memory only until it is fixed",
                   {field("error", schemas.error().message)});
  }
  auto scheduler = std::make_shared<TimerScheduler>();
  metrics_->addGauge("keyway_timer_callback_failures",
                     "Timer callbacks (retry waits, audit flushes) that threw; each is a bug, see the log.",
                     [scheduler] { return static_cast<double>(scheduler->failedCallbacks()); });
  deps.scheduler = scheduler;
  if (cache && config.cache.shared) {
    if (auto st = startSharedCache(*config.cache.shared, cache, scheduler, deps.clock); !st.ok()) {
      logger_->error("cannot set up the shared cache", {field("component", "shared_cache"), field("error", st.error().message)});
      return kExitRuntime;
    }
    deps.shared = shared_cache_;
    registerSharedCacheMetrics(*metrics_, shared_cache_);
  }
  // Summarised credential_use counts reach the log at least every audit period, even when the
  // credential is not used again.
  armAuditFlush(deps.scheduler, events_);
  gateway_ = std::make_shared<core::Gateway>(config_, deps);
  registerBosaMetrics(*metrics_, gateway_);
  StatusReport::Sources sources{gateway_, credential_store, cache, metrics_, upstream, deps.ready, nullptr};
  if (fleet_) {
    FleetReplicator* fleet = fleet_.get();
    sources.fleet = [fleet] { return fleetStatusJson(*fleet); };
    registerFleetMetrics(*metrics_, fleet);
  }
  if (shared_cache_) {
    std::shared_ptr<const RedisSharedCache> shared = shared_cache_;
    sources.shared_cache = [shared] { return sharedCacheStatusJson(*shared); };
  }
  status->setSources(std::move(sources));

  // Main listener, then one compat listener per upstream that asks for one.
  std::vector<ServerOptions> listeners;
  {
    ServerOptions o;
    o.address = config.listen;
    o.threads = config.server.threads;
    o.listen_backlog = static_cast<int>(config.server.listen_backlog);
    o.limits = config.limits;
    o.guests = reactor_guests;  // one per reactor thread (io_threads == server.threads)
    o.context.main = true;
    o.name = "main";
    listeners.push_back(o);
  }
  for (const auto& u : config.upstreams) {
    if (u.compat_listen.empty()) continue;
    ServerOptions o;
    o.address = u.compat_listen;
    // Compat ports carry one SDK's traffic each; one reactor thread keeps the thread count sane.
    o.threads = 1;
    o.listen_backlog = static_cast<int>(config.server.listen_backlog);
    o.limits = config.limits;
    o.context.main = false;
    o.context.compat_upstream = u.name;
    o.name = "compat:" + u.name;
    listeners.push_back(o);
  }
  for (auto& o : listeners) {
    auto server = std::make_unique<HttpServer>(o, gateway_, metrics_);
    if (auto st = server->start(); !st.ok()) {
      logger_->error("cannot start a listener", {field("listener", o.name), field("error", st.error().message)});
      for (auto& s : servers_) s->stop();
      return kExitRuntime;
    }
    if (o.context.main) {
      logger_->info("listening", {field("listener", "main"), field("address", server->boundAddress())});
    } else {
      logger_->info("listening", {field("listener", "compat"), field("upstream", o.context.compat_upstream),
                                  field("address", server->boundAddress())});
    }
    servers_.push_back(std::move(server));
  }
  {
    std::vector<StatusListener> bound;
    for (size_t i = 0; i < servers_.size(); ++i) {
      bound.push_back({listeners[i].context.main ? "main" : "compat", listeners[i].context.compat_upstream,
                       servers_[i]->boundAddress()});
    }
    status->setListeners(std::move(bound));
  }
  ready_.store(true);
  logger_->info("ready", {field("version", KEYWAY_VERSION), field("state_dir", config.state_dir),
                          field("upstreams", static_cast<int64_t>(config.upstreams.size()))});
  notify("READY=1\nSTATUS=" + statusLine());
  startWatchdog();

  // Signals were blocked before any thread started; only this thread receives them.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  for (;;) {
    struct timespec timeout {1, 0};
    const int sig = sigtimedwait(&set, nullptr, &timeout);
    if (sig == SIGHUP) {
      reload();
    } else if (sig == SIGTERM || sig == SIGINT) {
      return drainAndStop();
    }
  }
}

void Daemon::reload() {
  notify("RELOADING=1");
  auto fresh = loadConfig(config_file_);
  if (!fresh.ok()) {
    logger_->error("reload refused: the new configuration is invalid; the running one stays",
                   {field("error", fresh.error().message)});
    notify("READY=1");
    return;
  }
  core::Config next = std::move(fresh.value());
  // CA files are read again (a CA rewritten in place takes effect): requests started after the
  // reload verify against the new stores, on new connections.
  if (auto st = trust_->reload(caFilesOf(next)); !st.ok()) {
    logger_->error("reload refused: the CA certificates for upstream TLS cannot be loaded; the running "
                   "configuration stays", {field("error", st.error().message)});
    notify("READY=1");
    return;
  }
  const core::Config& cur = *config_;
  std::vector<std::string> restart_needed;
  if (next.listen.toString() != cur.listen.toString()) restart_needed.push_back("listen");
  if (next.state_dir != cur.state_dir) restart_needed.push_back("state_dir");
  if (next.master_key_file != cur.master_key_file) restart_needed.push_back("master_key_file");
  if (next.server.threads != cur.server.threads) restart_needed.push_back("server.threads");
  const auto fleetId = [](const core::Config& c) {
    if (!c.fleet) return std::string();
    // Every key: the replicator and its etcd client are made once, at start.
    const core::FleetConfig& f = *c.fleet;
    std::string id = f.prefix + "|" + f.username + "|" + f.password_file + "|" + f.tls.ca_file + "|" +
                     f.tls.client_cert + "|" + f.tls.client_key + "|" + std::to_string(f.dial_timeout.count()) +
                     "|" + std::to_string(f.request_timeout.count());
    for (const auto& e : f.endpoints) id += "|" + e;
    return id;
  };
  if (fleetId(next) != fleetId(cur)) restart_needed.push_back("fleet");
  const auto sharedId = [](const core::Config& c) {
    if (!c.cache.shared) return std::string();
    const core::SharedCacheConfig& s = *c.cache.shared;
    return s.address + "|" + s.password_file + "|" + s.key_prefix + "|" + std::to_string(s.timeout.count()) + "|" +
           std::to_string(s.max_connections);
  };
  if (sharedId(next) != sharedId(cur)) restart_needed.push_back("cache.shared");
  if (next.server.listen_backlog != cur.server.listen_backlog) restart_needed.push_back("server.listen_backlog");
  for (const auto& u : next.upstreams) {
    const auto* old = cur.findUpstream(u.name);
    if ((old == nullptr && !u.compat_listen.empty()) ||
        (old != nullptr && old->compat_listen.toString() != u.compat_listen.toString())) {
      restart_needed.push_back("upstreams." + u.name + ".compat_listen");
    }
  }
  for (const auto& warning : core::configWarnings(next)) {
    logger_->warn("configuration warning", {field("warning", warning)});
  }
  const auto level = parseLogLevel(next.log.level);
  logger_->setAccessLog(next.log.access_log);
  events_->flushAudit();  // counts so far, at the old level and in the old mode
  events_->setAuditEveryUse(next.log.audit == "every");
  for (auto& s : servers_) s->setLimits(next.limits);
  config_ = std::make_shared<const core::Config>(std::move(next));
  gateway_->setConfig(config_);
  std::string pending;
  for (const auto& r : restart_needed) pending += (pending.empty() ? "" : ", ") + r;
  // Said at the old level, so that raising the level to warn still leaves a trace of the reload.
  logger_->info("configuration reloaded", {field("needs_restart", pending.empty() ? "none" : pending)});
  if (!pending.empty()) {
    logger_->warn("configuration changes that apply only after a restart (the running values stay)",
                  {field("needs_restart", pending)});
  }
  if (level) logger_->setLevel(*level);
  notify("READY=1\nSTATUS=" + statusLine());
}

core::Status Daemon::startFleet(const core::FleetConfig& fleet) {
  auto etcd = EtcdClient::create(fleet);
  if (!etcd) return etcd.takeError();
  auto replica = storage::openFleetReplica(config_->state_dir, config_->master_key_file, fleet.prefix);
  if (!replica) return replica.takeError();
  fleet_ = std::make_unique<FleetReplicator>(fleet, std::move(etcd).value(), std::move(replica).value(), logger_);
  if (fleet_->synced()) {
    logger_->info("fleet replica present; serving it while etcd is asked for changes",
                  {field("component", "fleet"), field("replica_revision", fleet_->replicaRevision())});
  } else {
    logger_->info("fleet replica empty; ready once the first snapshot is loaded",
                  {field("component", "fleet"), field("prefix", fleet.prefix)});
  }
  fleet_->start();
  return core::okStatus();
}

int64_t Daemon::drainPending() const {
  int64_t n = metrics_->in_flight.load();
  for (const auto& s : servers_) n += static_cast<int64_t>(s->activeConnections());
  return n;
}

// SIGTERM (docs/operations.md): stop accepting at once, answer requests that still arrive on open
// connections with 503 + Connection: close, let in-flight requests finish (their responses
// fully written) for up to server.shutdown_grace, then exit. A second SIGTERM/SIGINT or the end
// of the grace stops at once.
// Exit status: 0 in every case. The stop was asked for; a non-zero status would mark the unit
// failed (and, for a SIGTERM not sent by systemd, make Restart=on-failure start it again). What
// was cut short is logged at warn level ("stopped" with abandoned_requests and reason).
core::Status Daemon::startSharedCache(const core::SharedCacheConfig& config, std::shared_ptr<core::CacheStore> local,
                                      std::shared_ptr<core::Scheduler> scheduler, std::shared_ptr<core::Clock> clock) {
  // Values are sealed with the master key: every host that shares the cache holds the same one.
  auto master = storage::loadMasterKeyFile(config_->master_key_file);
  if (!master) return master.takeError();
  auto codec = storage::SharedCacheCodec::create(*master, config.key_prefix);
  if (!codec) return codec.takeError();
  std::weak_ptr<Logger> weak_logger = logger_;
  auto warn = [weak_logger](std::string_view key, std::string message) {
    if (auto logger = weak_logger.lock()) logger->warnRateLimited(key, message, std::chrono::seconds(10));
  };
  auto shared = RedisSharedCache::start(config, std::move(codec).value(), std::move(local), std::move(scheduler),
                                        std::move(clock), std::move(warn));
  if (!shared) return shared.takeError();
  shared_cache_ = std::move(shared).value();
  logger_->info("shared cache", {field("redis", config.address), field("key_prefix", config.key_prefix)});
  return core::okStatus();
}

int Daemon::drainAndStop() {
  if (watchdog_) watchdog_->halt();
  notify("STOPPING=1");
  for (auto& s : servers_) {
    if (auto st = s->stopAccepting(); !st.ok()) {
      logger_->warn("cannot stop accepting", {field("error", st.error().message)});
    }
  }
  gateway_->setDraining(true);
  const auto grace = config_->server.shutdown_grace;
  logger_->info("draining", {field("in_flight", metrics_->in_flight.load()),
                             field("grace_ms", static_cast<int64_t>(grace.count()))});
  const auto deadline = SteadyClock::now() + grace;
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  const char* reason = "drained";
  // Requests count until their last byte is handed to the kernel, not merely until the gateway
  // is done with them: closing a connection earlier could cut a queued response.
  while (drainPending() > 0) {
    if (SteadyClock::now() >= deadline) {
      reason = "grace ended";
      break;
    }
    struct timespec tick {0, 20 * 1000 * 1000};
    const int sig = sigtimedwait(&set, nullptr, &tick);
    if (sig == SIGTERM || sig == SIGINT) {
      reason = "second signal";
      break;
    }
  }
  const auto in_flight = metrics_->in_flight.load();
  size_t unfinished = 0;
  for (const auto& s : servers_) unfinished += s->activeConnections();
  for (auto& s : servers_) s->stop();
  watchdog_.reset();
  // Exchanges abandoned by the grace's end complete now (cancelled): their observers hold the
  // metrics, the gateway and the connections, which hold the client.
  // Lookups waiting on Redis end now, while the upstream client can still take (and cancel) the
  // fills they fall back to.
  if (shared_cache_) shared_cache_->stop();
  upstream_->shutdown();
  if (fleet_) fleet_->stop();
  events_->flushAudit();
  const std::initializer_list<LogField> fields = {
      field("reason", reason), field("abandoned_requests", static_cast<int64_t>(in_flight)),
      field("unfinished_connections", static_cast<int64_t>(unfinished))};
  if (in_flight > 0 || unfinished > 0) {
    logger_->warn("stopped", fields);
  } else {
    logger_->info("stopped", fields);
  }
  return 0;
}

}  // namespace keyway::daemon
