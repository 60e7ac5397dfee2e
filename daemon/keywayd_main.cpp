// keywayd: the gateway daemon's process — config, store, listeners, signals, sd_notify, watchdog.
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <memory>
#include <mutex>
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

using SteadyClock = std::chrono::steady_clock;

// An owned file descriptor.
class FdGuard {
 public:
  explicit FdGuard(int fd) : fd_(fd) {}
  ~FdGuard() {
    if (fd_ >= 0) ::close(fd_);
  }
  FdGuard(const FdGuard&) = delete;
  FdGuard& operator=(const FdGuard&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

// Where the watchdog's self-check connects: the main listener's bound port on its host, with a
// wildcard bind (0.0.0.0 / ::) reached through loopback.
struct SelfCheckTarget {
  std::vector<sockaddr_storage> addresses;
  std::vector<socklen_t> lengths;
};

SelfCheckTarget resolveSelfCheckTarget(const std::string& host, uint16_t port) {
  SelfCheckTarget target;
  std::string h = host;
  if (h.empty() || h == "0.0.0.0") h = "127.0.0.1";
  if (h == "::" || h == "[::]") h = "::1";
  if (h.size() > 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* result = nullptr;
  if (::getaddrinfo(h.c_str(), std::to_string(port).c_str(), &hints, &result) != 0) return target;
  for (const addrinfo* a = result; a != nullptr; a = a->ai_next) {
    sockaddr_storage ss{};
    std::memcpy(&ss, a->ai_addr, a->ai_addrlen);
    target.addresses.push_back(ss);
    target.lengths.push_back(static_cast<socklen_t>(a->ai_addrlen));
  }
  ::freeaddrinfo(result);
  return target;
}

// What one self-check exchange saw.
struct SelfCheckOutcome {
  bool ok = false;
  bool closed_without_answer = false;  // accepted, then closed before any response byte
  std::string error;                   // why it failed (no secrets: only our own endpoint)
};

// Waits for `events` on fd until `deadline`; false on timeout or poll error.
bool waitFor(int fd, short events, SteadyClock::time_point deadline) {
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - SteadyClock::now()).count();
    if (left <= 0) return false;
    pollfd p{fd, events, 0};
    const int n = ::poll(&p, 1, static_cast<int>(std::min<long long>(left, 60000)));
    if (n > 0) return true;
    if (n < 0 && errno != EINTR) return false;
  }
}

// One HTTP exchange with our own main listener, exactly as a client does it: connect, send
// `GET /_keyway/health` with Connection: close, read to EOF, expect 200. A pass proves that the
// accept loop, the reactor thread the connection lands on, the request parser, the gateway and
// the response path all work within `deadline`.
SelfCheckOutcome httpSelfCheck(const SelfCheckTarget& target, SteadyClock::time_point deadline) {
  SelfCheckOutcome out;
  if (target.addresses.empty()) {
    out.error = "the main listener's address does not resolve";
    return out;
  }
  static constexpr char kRequest[] =
      "GET /_keyway/health HTTP/1.1\r\nHost: localhost\r\nUser-Agent: keywayd-watchdog\r\n"
      "Connection: close\r\n\r\n";
  for (size_t i = 0; i < target.addresses.size(); ++i) {
    const auto& address = target.addresses[i];
    FdGuard fd(::socket(address.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (fd.get() < 0) {
      out.error = std::string("cannot create a socket: ") + std::strerror(errno);
      return out;
    }
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&address), target.lengths[i]) != 0) {
      if (errno != EINPROGRESS) {
        out.error = std::string("cannot connect to the main listener: ") + std::strerror(errno);
        continue;  // e.g. "localhost" resolving to ::1 first while the listener is on 127.0.0.1
      }
      if (!waitFor(fd.get(), POLLOUT, deadline)) {
        out.error = "the main listener did not accept within the deadline";
        return out;
      }
      int err = 0;
      socklen_t len = sizeof err;
      ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
      if (err != 0) {
        out.error = std::string("cannot connect to the main listener: ") + std::strerror(err);
        continue;
      }
    }
    size_t sent = 0;
    const size_t total = sizeof kRequest - 1;
    while (sent < total) {
      const ssize_t n = ::send(fd.get(), kRequest + sent, total - sent, MSG_NOSIGNAL);
      if (n > 0) {
        sent += static_cast<size_t>(n);
      } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        if (!waitFor(fd.get(), POLLOUT, deadline)) {
          out.error = "could not send the health request within the deadline";
          return out;
        }
      } else {
        out.error = std::string("sending the health request failed: ") + std::strerror(errno);
        return out;
      }
    }
    std::string response;
    for (;;) {
      if (!waitFor(fd.get(), POLLIN, deadline)) {
        out.error = response.empty() ? "no response from the main listener within the deadline"
                                     : "incomplete response from the main listener within the deadline";
        return out;
      }
      char buf[4096];
      const ssize_t n = ::recv(fd.get(), buf, sizeof buf, 0);
      if (n > 0) {
        if (response.size() < 65536) response.append(buf, static_cast<size_t>(n));
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      if (n < 0 && errno != ECONNRESET) {
        out.error = std::string("reading the health response failed: ") + std::strerror(errno);
        return out;
      }
      break;  // EOF (or a reset after the response): Connection: close was honoured
    }
    if (response.empty()) {
      out.closed_without_answer = true;
      out.error = "the main listener closed the connection without answering";
      return out;
    }
    if (response.rfind("HTTP/1.1 200 ", 0) == 0) {
      out.ok = true;
      return out;
    }
    const auto eol = response.find("\r\n");
    out.error = "the health endpoint answered \"" + response.substr(0, std::min<size_t>(eol, 64)) + "\"";
    return out;
  }
  return out;
}

// How often summarised credential_use counts are written (LogEventSink, log.audit: summary).
constexpr std::chrono::seconds kAuditPeriod{60};
void armAuditFlush(const std::shared_ptr<core::Scheduler>& scheduler,
                   const std::shared_ptr<daemon::LogEventSink>& events);

class Daemon {
 public:
  Daemon(Args args, core::Config config, std::shared_ptr<daemon::Logger> logger)
      : args_(std::move(args)), config_(std::make_shared<const core::Config>(std::move(config))), logger_(std::move(logger)) {}
  ~Daemon() { stopWatchdog(); }

  int run();

 private:
  void reload();
  int drainAndStop();
  std::string statusLine() const;
  // WATCHDOG=1 from the serving path (see watchdogLoop). No-op without WATCHDOG_USEC.
  void startWatchdog(std::shared_ptr<daemon::CurlUpstreamClient> upstream);
  // Stops the pings at once (the thread may finish its round); stopWatchdog() also joins.
  void haltWatchdog();
  void stopWatchdog();
  void watchdogLoop(std::chrono::microseconds period, SelfCheckTarget target,
                    std::shared_ptr<daemon::CurlUpstreamClient> upstream);
  bool watchdogRound(SteadyClock::time_point deadline, const SelfCheckTarget& target,
                     daemon::CurlUpstreamClient& upstream);
  // Connections and requests a drain still waits for.
  int64_t drainPending() const;

  Args args_;
  std::shared_ptr<const core::Config> config_;  // main thread only; other threads use gateway_->config()
  std::shared_ptr<daemon::Logger> logger_;
  std::shared_ptr<core::Metrics> metrics_;
  std::shared_ptr<core::Gateway> gateway_;
  std::shared_ptr<daemon::LogEventSink> events_;
  std::vector<std::unique_ptr<daemon::HttpServer>> servers_;
  std::shared_ptr<daemon::CurlUpstreamClient> upstream_;
  std::shared_ptr<daemon::TrustStores> trust_;
  std::atomic<bool> ready_{false};

  std::thread watchdog_;
  std::mutex watchdog_mu_;
  std::condition_variable watchdog_cv_;
  bool watchdog_stop_ = false;  // guarded by watchdog_mu_
};

// Every upstream's tls.ca_file ("" = the system's CAs is always loaded by TrustStores::reload).
std::vector<std::string> caFilesOf(const core::Config& config) {
  std::vector<std::string> files;
  for (const auto& u : config.upstreams) {
    if (u.tls && !u.tls->ca_file.empty()) files.push_back(u.tls->ca_file);
  }
  return files;
}

std::string Daemon::statusLine() const {
  // Called from the watchdog thread too: the config comes from the gateway (atomic), servers_
  // and metrics_ are fixed once serving starts.
  return "serving " + std::to_string(gateway_->config()->upstreams.size()) + " upstreams on " +
         (servers_.empty() ? std::string("-") : servers_.front()->boundAddress()) + ", " +
         std::to_string(metrics_->in_flight.load()) + " requests in flight";
}

void Daemon::startWatchdog(std::shared_ptr<daemon::CurlUpstreamClient> upstream) {
  uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0 || servers_.empty()) return;
  SelfCheckTarget target = resolveSelfCheckTarget(gateway_->config()->listen.host, servers_.front()->port());
  const auto period = std::chrono::microseconds(usec);
  logger_->info("watchdog enabled", {daemon::field("watchdog_ms", static_cast<int64_t>(usec / 1000)),
                                     daemon::field("check_every_ms", static_cast<int64_t>(usec / 3000))});
  watchdog_ = std::thread([this, period, target = std::move(target), upstream = std::move(upstream)]() mutable {
    watchdogLoop(period, std::move(target), std::move(upstream));
  });
}

void Daemon::haltWatchdog() {
  {
    std::lock_guard<std::mutex> lock(watchdog_mu_);
    watchdog_stop_ = true;
  }
  watchdog_cv_.notify_all();
}

void Daemon::stopWatchdog() {
  haltWatchdog();
  if (watchdog_.joinable()) watchdog_.join();
}

// Why here and not in the signal loop: a ping from a thread that proves nothing would keep
// a wedged server alive forever. A ping is sent only after a round of checks passed:
//  1. an HTTP self-check through the main listener (httpSelfCheck);
//  2. every upstream I/O thread answering a probe through its command queue.
// Rounds start every WatchdogSec/3; a round must pass within max(WatchdogSec/6, the shorter of
// WatchdogSec/3 and 250 ms), so one slow or failed round leaves the next one time to ping
// before systemd's deadline, and two in a row get keywayd restarted (sd_watchdog_enabled(3)).
void Daemon::watchdogLoop(std::chrono::microseconds period, SelfCheckTarget target,
                          std::shared_ptr<daemon::CurlUpstreamClient> upstream) {
  const auto interval = period / 3;
  const auto budget = std::max<std::chrono::microseconds>(
      period / 6, std::min<std::chrono::microseconds>(interval, std::chrono::milliseconds(250)));
  auto next = SteadyClock::now();
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(watchdog_mu_);
      if (watchdog_cv_.wait_until(lock, next, [this] { return watchdog_stop_; })) return;
    }
    const auto start = SteadyClock::now();
    next = start + interval;
    const bool ok = watchdogRound(start + budget, target, *upstream);
    std::lock_guard<std::mutex> lock(watchdog_mu_);
    // No ping once stopping began: the manager is no longer waiting for them, and after the
    // drain closed the listener the port may even belong to someone else.
    if (watchdog_stop_) return;
    if (ok) notify("WATCHDOG=1\nSTATUS=" + statusLine());
  }
}

bool Daemon::watchdogRound(SteadyClock::time_point deadline, const SelfCheckTarget& target,
                           daemon::CurlUpstreamClient& upstream) {
  SelfCheckOutcome http = httpSelfCheck(target, deadline);
  if (!http.ok && http.closed_without_answer &&
      servers_.front()->openConnections() >= gateway_->config()->limits.max_connections) {
    // Refused at limits.max_connections: the listener is alive and enforcing its limit. A
    // restart would only drop every open connection, so this counts as a pass.
    logger_->warnRateLimited("watchdog-saturated",
                             "watchdog self-check refused at limits.max_connections; the listener is alive",
                             std::chrono::seconds(30));
    http.ok = true;
  }
  if (!http.ok) {
    logger_->warnRateLimited("watchdog-http", "watchdog self-check failed: not pinging systemd",
                             std::chrono::seconds(5),
                             {daemon::field("check", "http"), daemon::field("error", http.error)});
    return false;
  }
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - SteadyClock::now());
  if (!upstream.probeIoThreads(std::max(left, std::chrono::milliseconds(1)))) {
    logger_->warnRateLimited("watchdog-upstream", "watchdog self-check failed: not pinging systemd",
                             std::chrono::seconds(5),
                             {daemon::field("check", "upstream_io_threads"),
                              daemon::field("error", "an upstream I/O thread did not answer within the deadline")});
    return false;
  }
  return true;
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
  // One event loop per reactor thread of the main listener, run by that thread: a forwarded
  // request, its upstream exchange and its response stay on one thread, with no hand-off to an
  // I/O thread and back (README, "Upstream connections").
  curl_options.io_threads = static_cast<unsigned>(config.server.threads);
  curl_options.hosted = true;
  // The CA stores every upstream's TLS connections verify against, parsed now rather than by
  // the first connection of a burst on a reactor thread.
  trust_ = std::make_shared<daemon::TrustStores>();
  if (auto st = trust_->reload(caFilesOf(config)); !st.ok()) {
    logger_->error("cannot load the CA certificates for upstream TLS", {daemon::field("error", st.error().message)});
    return 1;
  }
  curl_options.trust = trust_;
  auto upstream = std::make_shared<daemon::CurlUpstreamClient>(curl_options);
  const std::vector<std::shared_ptr<daemon::ReactorGuest>> reactor_guests = upstream->guests();
  upstream_ = upstream;

  metrics_ = std::make_shared<core::Metrics>(upstreamNames(config));
  metrics_->addGauge("keyway_upstream_requests_in_flight", "Upstream exchanges in flight.",
                     [upstream] { return static_cast<double>(upstream->stats().in_flight); });
  metrics_->addGauge("keyway_credential_store_generation", "Last committed credential store transaction id.",
                     [credential_store] { return static_cast<double>(credential_store->generation()); });
  metrics_->addGauge("keyway_upstream_connections_open",
                     "Upstream connections open now, idle pooled ones included.",
                     [upstream] { return static_cast<double>(upstream->stats().open_connections); });
  {
    // Per upstream (one pool each): what max_connections bounds, now and at its highest.
    std::weak_ptr<daemon::CurlUpstreamClient> weak_upstream = upstream;
    metrics_->addRenderer([weak_upstream](std::string& out) {
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
             [](const daemon::PoolStats& p) { return p.open; });
      family("keyway_upstream_pool_connections_peak",
             "The most connections ever open to the upstream at once (bounded by its max_connections).",
             [](const daemon::PoolStats& p) { return p.peak; });
    });
  }
  {
    // Store size without a storage/ stats call: the LMDB data file's size (LMDB grows it page
    // by page, without MDB_WRITEMAP it is not preallocated to the map size).
    const std::string data_file = storage::credentialEnvPath(config.state_dir) + "/data.mdb";
    metrics_->addGauge("keyway_credential_store_file_bytes", "Size of the credential store's LMDB data file.",
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
    metrics_->addRenderer([weak_store, counts](std::string& out) {
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
    // A full or failing disk shows here while the gateway keeps forwarding.
    metrics_->addGauge("keyway_cache_dropped_writes", "Cache writes not stored (too large, full, failing) since start.",
                       [cache] { return static_cast<double>(cache->stats().dropped_writes); });
    metrics_->addGauge("keyway_cache_degraded_events", "Cache storage failures survived since start.",
                       [cache] { return static_cast<double>(cache->stats().degraded_events); });
  }

  core::GatewayDeps deps;
  deps.cache = cache;
  deps.store = credential_store;
  deps.upstream = upstream;
  deps.metrics = metrics_;
  events_ = std::make_shared<daemon::LogEventSink>(logger_, kAuditPeriod);
  events_->setAuditEveryUse(config.log.audit == "every");
  deps.events = events_;
  deps.clock = std::make_shared<core::RealClock>();
  deps.ready = [this] { return ready_.load(std::memory_order_relaxed); };
  // BOSA schemas survive restarts so validation keeps working while BOSA is down (docs/bosa.md).
  if (auto schemas = storage::LmdbSchemaStore::open(config.state_dir); schemas.ok()) {
    deps.schemas = std::move(schemas.value());
  } else {
    logger_->error("cannot open the BOSA schema store; schemas are kept in memory only until it is fixed",
                   {daemon::field("error", schemas.error().message)});
  }
  deps.scheduler = std::make_shared<daemon::TimerScheduler>();
  // Summarised credential_use counts reach the log at least every audit period, even when the
  // credential is not used again.
  armAuditFlush(deps.scheduler, events_);
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
    o.listen_backlog = static_cast<int>(config.server.listen_backlog);
    o.limits = config.limits;
    o.guests = reactor_guests;  // one per reactor thread (io_threads == server.threads)
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
    o.listen_backlog = static_cast<int>(config.server.listen_backlog);
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
  startWatchdog(upstream);

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
  auto fresh = daemon::loadConfig(args_.config);
  if (!fresh.ok()) {
    logger_->error("reload refused: the new configuration is invalid; the running one stays",
                   {daemon::field("error", fresh.error().message)});
    notify("READY=1");
    return;
  }
  core::Config next = std::move(fresh.value());
  // CA files are read again (a CA rewritten in place takes effect): requests started after the
  // reload verify against the new stores, on new connections.
  if (auto st = trust_->reload(caFilesOf(next)); !st.ok()) {
    logger_->error("reload refused: the CA certificates for upstream TLS cannot be loaded; the running "
                   "configuration stays", {daemon::field("error", st.error().message)});
    notify("READY=1");
    return;
  }
  const core::Config& cur = *config_;
  std::vector<std::string> restart_needed;
  if (next.listen.toString() != cur.listen.toString()) restart_needed.push_back("listen");
  if (next.state_dir != cur.state_dir) restart_needed.push_back("state_dir");
  if (next.master_key_file != cur.master_key_file) restart_needed.push_back("master_key_file");
  if (next.server.threads != cur.server.threads) restart_needed.push_back("server.threads");
  if (next.server.listen_backlog != cur.server.listen_backlog) restart_needed.push_back("server.listen_backlog");
  for (const auto& u : next.upstreams) {
    const auto* old = cur.findUpstream(u.name);
    if ((old == nullptr && !u.compat_listen.empty()) ||
        (old != nullptr && old->compat_listen.toString() != u.compat_listen.toString())) {
      restart_needed.push_back("upstreams." + u.name + ".compat_listen");
    }
  }
  const auto level = daemon::parseLogLevel(next.log.level);
  logger_->setAccessLog(next.log.access_log);
  events_->flushAudit();  // counts so far, at the old level and in the old mode
  events_->setAuditEveryUse(next.log.audit == "every");
  for (auto& s : servers_) s->setLimits(next.limits);
  config_ = std::make_shared<const core::Config>(std::move(next));
  gateway_->setConfig(config_);
  std::string pending;
  for (const auto& r : restart_needed) pending += (pending.empty() ? "" : ", ") + r;
  // Said at the old level, so that raising the level to warn still leaves a trace of the reload.
  logger_->info("configuration reloaded", {daemon::field("needs_restart", pending.empty() ? "none" : pending)});
  if (!pending.empty()) {
    logger_->warn("configuration changes that apply only after a restart (the running values stay)",
                  {daemon::field("needs_restart", pending)});
  }
  if (level) logger_->setLevel(*level);
  notify("READY=1\nSTATUS=" + statusLine());
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
// Flushes the summarised audit counts every kAuditPeriod until the sink or the scheduler is gone.
void armAuditFlush(const std::shared_ptr<core::Scheduler>& scheduler,
                   const std::shared_ptr<daemon::LogEventSink>& events) {
  std::weak_ptr<core::Scheduler> weak_scheduler = scheduler;
  std::weak_ptr<daemon::LogEventSink> weak_events = events;
  scheduler->after(kAuditPeriod, [weak_scheduler, weak_events] {
    auto s = weak_scheduler.lock();
    auto e = weak_events.lock();
    if (!s || !e) return;
    e->flushAudit();
    armAuditFlush(s, e);
  });
}

int Daemon::drainAndStop() {
  haltWatchdog();
  notify("STOPPING=1");
  for (auto& s : servers_) {
    if (auto st = s->stopAccepting(); !st.ok()) {
      logger_->warn("cannot stop accepting", {daemon::field("error", st.error().message)});
    }
  }
  gateway_->setDraining(true);
  const auto grace = config_->server.shutdown_grace;
  logger_->info("draining", {daemon::field("in_flight", metrics_->in_flight.load()),
                             daemon::field("grace_ms", static_cast<int64_t>(grace.count()))});
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
  stopWatchdog();
  // Exchanges abandoned by the grace's end complete now (cancelled): their observers hold the
  // metrics, the gateway and the connections, which hold the client.
  upstream_->shutdown();
  events_->flushAudit();
  const std::initializer_list<daemon::LogField> fields = {
      daemon::field("reason", reason), daemon::field("abandoned_requests", static_cast<int64_t>(in_flight)),
      daemon::field("unfinished_connections", static_cast<int64_t>(unfinished))};
  if (in_flight > 0 || unfinished > 0) {
    logger_->warn("stopped", fields);
  } else {
    logger_->info("stopped", fields);
  }
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
