// keywayd: the gateway daemon's process — config, store, listeners, signals, sd_notify.
#include <signal.h>
#include <systemd/sd-daemon.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "core/clock.hpp"
#include "core/gateway.hpp"
#include "core/metrics.hpp"
#include "daemon/curl_upstream_client.hpp"
#include "daemon/http_server.hpp"
#include "daemon/log.hpp"
#include "daemon/timer_scheduler.hpp"
#include "daemon/yaml_config_loader.hpp"
#include "storage/lmdb_cache_store.hpp"
#include "storage/lmdb_credential_store.hpp"
#include "storage/lmdb_schema_store.hpp"

namespace {

using namespace keyway;

constexpr const char* kUsage =
    "usage: keywayd [--config FILE] [--check-config]\n"
    "  --config FILE    configuration file (default: the embedded default, equal to conf/keyway.yaml)\n"
    "  --check-config   validate the configuration, print the result, exit 0 (valid) or 1 (invalid)\n"
    "  --version        print the version\n";

struct Args {
  std::optional<std::string> config;
  bool check = false;
};

int parseArgs(int argc, char** argv, Args& args) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--config" || a == "-c") {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "keywayd: --config needs a file name\n%s", kUsage);
        return 1;
      }
      args.config = argv[++i];
    } else if (a.rfind("--config=", 0) == 0) {
      args.config = a.substr(9);
    } else if (a == "--check-config") {
      args.check = true;
    } else if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (a == "--version") {
      std::puts("keywayd " KEYWAY_VERSION);
      return 0;
    } else {
      std::fprintf(stderr, "keywayd: unknown argument '%s'\n%s", a.c_str(), kUsage);
      return 1;
    }
  }
  return -1;
}

std::vector<std::string> upstreamNames(const core::Config& c) {
  std::vector<std::string> names;
  for (const auto& u : c.upstreams) names.push_back(u.name);
  return names;
}

void notify(const std::string& state) { sd_notify(0, state.c_str()); }

class Daemon {
 public:
  Daemon(Args args, core::Config config, std::shared_ptr<daemon::Logger> logger)
      : args_(std::move(args)), config_(std::make_shared<const core::Config>(std::move(config))), logger_(std::move(logger)) {}

  int run();

 private:
  void reload();
  int drainAndStop();
  std::string statusLine() const;

  Args args_;
  std::shared_ptr<const core::Config> config_;
  std::shared_ptr<daemon::Logger> logger_;
  std::shared_ptr<core::Metrics> metrics_;
  std::shared_ptr<core::Gateway> gateway_;
  std::vector<std::unique_ptr<daemon::HttpServer>> servers_;
  std::atomic<bool> ready_{false};
};

std::string Daemon::statusLine() const {
  return "serving " + std::to_string(config_->upstreams.size()) + " upstreams on " +
         (servers_.empty() ? std::string("-") : servers_.front()->boundAddress()) + ", " +
         std::to_string(metrics_->in_flight.load()) + " requests in flight";
}

int Daemon::run() {
  const core::Config& config = *config_;
  auto store = storage::openLmdbCredentialStore(config.state_dir, config.master_key_file);
  if (!store.ok()) {
    logger_->error("cannot open the credential store", {daemon::field("error", store.error().message)});
    return 1;
  }
  std::shared_ptr<core::CredentialStore> credential_store = std::move(store.value());

  daemon::CurlUpstreamClientOptions curl_options;
  // One upstream I/O thread per reactor thread: a single curl thread saturates first under load.
  curl_options.io_threads = static_cast<unsigned>(config.server.threads);
  auto upstream = std::make_shared<daemon::CurlUpstreamClient>(curl_options);

  metrics_ = std::make_shared<core::Metrics>(upstreamNames(config));
  metrics_->addGauge("keyway_upstream_requests_in_flight", "Upstream exchanges in flight.",
                     [upstream] { return static_cast<double>(upstream->stats().in_flight); });
  metrics_->addGauge("keyway_credential_store_generation", "Last committed credential store transaction id.",
                     [credential_store] { return static_cast<double>(credential_store->generation()); });

  std::shared_ptr<core::CacheStore> cache;
  if (config.cache.enabled) {
    storage::LmdbCacheStoreOptions cache_options;
    cache_options.dir = config.cache.dir.empty() ? config.state_dir + "/cache" : config.cache.dir;
    cache_options.max_bytes = config.cache.max_bytes;
    auto logger = logger_;
    cache_options.warn = [logger](std::string_view m) { logger->warnRateLimited(m, m, std::chrono::seconds(10)); };
    cache = storage::LmdbCacheStore::open(cache_options);
    metrics_->addGauge("keyway_cache_entries", "Entries in the response cache.",
                       [cache] { return static_cast<double>(cache->stats().entries); });
    metrics_->addGauge("keyway_cache_bytes", "Bytes accounted in the response cache.",
                       [cache] { return static_cast<double>(cache->stats().bytes); });
    metrics_->addGauge("keyway_cache_healthy", "1 while the response cache works, 0 while it is degraded.",
                       [cache] { return cache->healthy() ? 1.0 : 0.0; });
    metrics_->addGauge("keyway_cache_evictions", "Entries evicted from the response cache (LRU) since start.",
                       [cache] { return static_cast<double>(cache->stats().evictions); });
  }

  core::GatewayDeps deps;
  deps.cache = cache;
  deps.store = credential_store;
  deps.upstream = upstream;
  deps.metrics = metrics_;
  deps.events = std::make_shared<daemon::LogEventSink>(logger_);
  deps.clock = std::make_shared<core::RealClock>();
  deps.ready = [this] { return ready_.load(std::memory_order_relaxed); };
  // BOSA schemas survive restarts so validation keeps working while BOSA is down (SPEC §6).
  if (auto schemas = storage::LmdbSchemaStore::open(config.state_dir); schemas.ok()) {
    deps.schemas = std::move(schemas.value());
  } else {
    logger_->error("cannot open the BOSA schema store; schemas are kept in memory only until it is fixed",
                   {daemon::field("error", schemas.error().message)});
  }
  deps.scheduler = std::make_shared<daemon::TimerScheduler>();
  gateway_ = std::make_shared<core::Gateway>(config_, deps);
  {
    std::weak_ptr<core::Gateway> weak = gateway_;
    metrics_->addRenderer([weak](std::string& out) {
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

  // Main listener, then one compat listener per upstream that asks for one.
  std::vector<daemon::ServerOptions> listeners;
  {
    daemon::ServerOptions o;
    o.address = config.listen;
    o.threads = config.server.threads;
    o.limits = config.limits;
    o.context.main = true;
    o.name = "main";
    listeners.push_back(o);
  }
  for (const auto& u : config.upstreams) {
    if (u.compat_listen.empty()) continue;
    daemon::ServerOptions o;
    o.address = u.compat_listen;
    // Compat ports carry one SDK's traffic each; one reactor thread keeps the thread count sane.
    o.threads = 1;
    o.limits = config.limits;
    o.context.main = false;
    o.context.compat_upstream = u.name;
    o.name = "compat:" + u.name;
    listeners.push_back(o);
  }
  for (auto& o : listeners) {
    auto server = std::make_unique<daemon::HttpServer>(o, gateway_, metrics_);
    if (auto st = server->start(); !st.ok()) {
      logger_->error("cannot start a listener", {daemon::field("listener", o.name), daemon::field("error", st.error().message)});
      for (auto& s : servers_) s->stop();
      return 1;
    }
    if (o.context.main) {
      logger_->info("listening", {daemon::field("listener", "main"), daemon::field("address", server->boundAddress())});
    } else {
      logger_->info("listening", {daemon::field("listener", "compat"), daemon::field("upstream", o.context.compat_upstream),
                                  daemon::field("address", server->boundAddress())});
    }
    servers_.push_back(std::move(server));
  }
  ready_.store(true);
  logger_->info("ready", {daemon::field("version", KEYWAY_VERSION), daemon::field("state_dir", config.state_dir),
                          daemon::field("upstreams", static_cast<int64_t>(config.upstreams.size()))});
  notify("READY=1\nSTATUS=" + statusLine());

  // Signals were blocked before any thread started; only this thread receives them.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  uint64_t watchdog_usec = 0;
  const bool watchdog = sd_watchdog_enabled(0, &watchdog_usec) > 0;
  for (;;) {
    struct timespec timeout {1, 0};
    if (watchdog) {
      const uint64_t half = watchdog_usec / 2;
      timeout.tv_sec = static_cast<time_t>(half / 1000000);
      timeout.tv_nsec = static_cast<long>((half % 1000000) * 1000);
    }
    const int sig = sigtimedwait(&set, nullptr, &timeout);
    if (sig == SIGHUP) {
      reload();
    } else if (sig == SIGTERM || sig == SIGINT) {
      return drainAndStop();
    }
    if (watchdog) notify("WATCHDOG=1\nSTATUS=" + statusLine());
  }
}

void Daemon::reload() {
  notify("RELOADING=1");
  auto fresh = daemon::loadConfig(args_.config);
  if (!fresh.ok()) {
    logger_->error("reload refused: the new configuration is invalid; the running one stays",
                   {daemon::field("error", fresh.error().message)});
    notify("READY=1");
    return;
  }
  core::Config next = std::move(fresh.value());
  const core::Config& cur = *config_;
  std::vector<std::string> restart_needed;
  if (next.listen.toString() != cur.listen.toString()) restart_needed.push_back("listen");
  if (next.state_dir != cur.state_dir) restart_needed.push_back("state_dir");
  if (next.master_key_file != cur.master_key_file) restart_needed.push_back("master_key_file");
  if (next.server.threads != cur.server.threads) restart_needed.push_back("server.threads");
  for (const auto& u : next.upstreams) {
    const auto* old = cur.findUpstream(u.name);
    if ((old == nullptr && !u.compat_listen.empty()) ||
        (old != nullptr && old->compat_listen.toString() != u.compat_listen.toString())) {
      restart_needed.push_back("upstreams." + u.name + ".compat_listen");
    }
  }
  if (auto level = daemon::parseLogLevel(next.log.level)) logger_->setLevel(*level);
  logger_->setAccessLog(next.log.access_log);
  for (auto& s : servers_) s->setLimits(next.limits);
  config_ = std::make_shared<const core::Config>(std::move(next));
  gateway_->setConfig(config_);
  std::string pending;
  for (const auto& r : restart_needed) pending += (pending.empty() ? "" : ", ") + r;
  logger_->info("configuration reloaded", {daemon::field("needs_restart", pending.empty() ? "none" : pending)});
  notify("READY=1\nSTATUS=" + statusLine());
}

int Daemon::drainAndStop() {
  notify("STOPPING=1");
  const auto grace = config_->server.shutdown_grace;
  logger_->info("draining", {daemon::field("in_flight", metrics_->in_flight.load()),
                             daemon::field("grace_ms", static_cast<int64_t>(grace.count()))});
  gateway_->setDraining(true);
  const auto deadline = std::chrono::steady_clock::now() + grace;
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  bool forced = false;
  while (metrics_->in_flight.load() > 0 && std::chrono::steady_clock::now() < deadline) {
    struct timespec tick {0, 50 * 1000 * 1000};
    const int sig = sigtimedwait(&set, nullptr, &tick);
    if (sig == SIGTERM || sig == SIGINT) {
      forced = true;
      break;
    }
  }
  const auto left = metrics_->in_flight.load();
  for (auto& s : servers_) s->stop();
  logger_->info("stopped", {daemon::field("abandoned_requests", static_cast<int64_t>(left)),
                            daemon::field("forced", forced ? "yes" : "no")});
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Args args;
  if (int rc = parseArgs(argc, argv, args); rc >= 0) return rc;

  auto config = daemon::loadConfig(args.config);
  if (args.check) {
    if (!config.ok()) {
      std::fprintf(stderr, "keywayd: invalid configuration: %s\n", config.error().message.c_str());
      return 1;
    }
    std::printf("configuration OK: %s (%zu upstreams, listen %s)\n",
                args.config ? args.config->c_str() : "embedded default", config->upstreams.size(),
                config->listen.toString().c_str());
    return 0;
  }
  auto logger = std::make_shared<daemon::Logger>(2);
  if (!config.ok()) {
    logger->error("invalid configuration", {daemon::field("error", config.error().message)});
    return 1;
  }
  if (auto level = daemon::parseLogLevel(config->log.level)) logger->setLevel(*level);
  logger->setAccessLog(config->log.access_log);

  // Broken client sockets must surface as write errors, not kill the process.
  signal(SIGPIPE, SIG_IGN);
  // Block the signals we handle before any thread exists, so every thread inherits the mask and
  // only the main thread's sigtimedwait sees them.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);

  try {
    Daemon d(args, std::move(config.value()), logger);
    return d.run();
  } catch (const std::exception& e) {
    logger->error("fatal error", {daemon::field("error", e.what())});
    return 1;
  }
}
