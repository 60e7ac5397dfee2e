// GET /_keyway/status's document (see status_report.hpp).
#include "daemon/status_report.hpp"

#include <limits.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

namespace keyway::daemon {

namespace {

using Writer = rapidjson::Writer<rapidjson::StringBuffer>;

int64_t nowUnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

void string(Writer& w, const std::string& s) { w.String(s.data(), static_cast<rapidjson::SizeType>(s.size())); }

void key(Writer& w, const char* k) { w.Key(k); }

// UTC ISO 8601 to the second, or null for "never" (0).
void time(Writer& w, int64_t unix_ms) {
  if (unix_ms <= 0) {
    w.Null();
    return;
  }
  const time_t t = static_cast<time_t>(unix_ms / 1000);
  struct tm tm {};
  char buf[32];
  if (gmtime_r(&t, &tm) == nullptr || strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) {
    w.Null();
    return;
  }
  w.String(buf);
}

void optionalString(Writer& w, const std::string& s) {
  if (s.empty()) {
    w.Null();
  } else {
    string(w, s);
  }
}

}  // namespace

std::string absolutePath(const std::string& path) {
  if (path.empty()) return path;
  char resolved[PATH_MAX];
  if (::realpath(path.c_str(), resolved) != nullptr) return resolved;
  if (path.front() == '/') return path;
  char cwd[PATH_MAX];
  if (::getcwd(cwd, sizeof cwd) == nullptr) return path;
  std::string rest = path;
  while (rest.compare(0, 2, "./") == 0) rest.erase(0, 2);
  return std::string(cwd) + (std::string(cwd) == "/" ? "" : "/") + rest;
}

std::string urlOrigin(const std::string& url) {
  const size_t scheme_end = url.find("://");
  if (scheme_end == std::string::npos) return "";
  const size_t authority_begin = scheme_end + 3;
  size_t authority_end = url.find_first_of("/?#", authority_begin);
  if (authority_end == std::string::npos) authority_end = url.size();
  std::string authority = url.substr(authority_begin, authority_end - authority_begin);
  const size_t at = authority.rfind('@');
  if (at != std::string::npos) authority.erase(0, at + 1);
  return url.substr(0, authority_begin) + authority;
}

StatusReport::StatusReport(StatusPaths paths)
    : paths_(std::move(paths)), started_unix_ms_(nowUnixMs()), started_(std::chrono::steady_clock::now()) {}

void StatusReport::setSources(Sources sources) {
  std::atomic_store(&sources_, std::shared_ptr<const Sources>(std::make_shared<Sources>(std::move(sources))));
}

void StatusReport::setListeners(std::vector<StatusListener> listeners) {
  std::atomic_store(&listeners_, std::shared_ptr<const std::vector<StatusListener>>(
                                     std::make_shared<std::vector<StatusListener>>(std::move(listeners))));
}

std::string StatusReport::render() const {
  const auto sources = std::atomic_load(&sources_);
  const auto listeners = std::atomic_load(&listeners_);
  std::shared_ptr<core::Gateway> gateway;
  std::shared_ptr<core::CredentialStore> store;
  std::shared_ptr<core::CacheStore> cache;
  std::shared_ptr<core::Metrics> metrics;
  std::shared_ptr<CurlUpstreamClient> upstream;
  if (sources) {
    gateway = sources->gateway.lock();
    store = sources->store.lock();
    cache = sources->cache.lock();
    metrics = sources->metrics.lock();
    upstream = sources->upstream.lock();
  }

  rapidjson::StringBuffer buffer;
  Writer w(buffer);
  w.StartObject();
  key(w, "version");
  w.String(KEYWAY_VERSION);
  key(w, "pid");
  w.Int64(static_cast<int64_t>(::getpid()));
  key(w, "started_at");
  time(w, started_unix_ms_);
  key(w, "uptime_seconds");
  w.Int64(std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - started_).count());
  key(w, "ready");
  w.Bool(sources && sources->ready && sources->ready());
  key(w, "draining");
  w.Bool(gateway && gateway->draining());
  key(w, "config_file");
  if (paths_.config_file) {
    string(w, *paths_.config_file);
  } else {
    w.Null();
  }
  key(w, "state_dir");
  string(w, paths_.state_dir);
  key(w, "master_key_file");
  string(w, paths_.master_key_file);

  key(w, "credential_store");
  w.StartObject();
  key(w, "path");
  string(w, paths_.credential_store);
  key(w, "device");
  w.Uint64(static_cast<uint64_t>(paths_.device));
  key(w, "inode");
  w.Uint64(static_cast<uint64_t>(paths_.inode));
  key(w, "generation");
  if (store) {
    w.Uint64(store->generation());
  } else {
    w.Null();
  }
  w.EndObject();

  key(w, "cache");
  w.StartObject();
  key(w, "enabled");
  w.Bool(!paths_.cache_dir.empty());
  key(w, "path");
  optionalString(w, paths_.cache_dir);
  if (cache) {
    const core::CacheStats stats = cache->stats();
    key(w, "healthy");
    w.Bool(stats.healthy);
    key(w, "generation");
    w.Uint64(stats.generation);
    key(w, "entries");
    w.Uint64(stats.entries);
    key(w, "bytes");
    w.Uint64(stats.bytes);
    key(w, "max_bytes");
    w.Uint64(stats.max_bytes);
  }
  key(w, "shared");
  if (sources && sources->shared_cache) {
    const std::string shared = sources->shared_cache();
    w.RawValue(shared.data(), shared.size(), rapidjson::kObjectType);
  } else {
    w.Null();
  }
  w.EndObject();

  key(w, "fleet");
  if (sources && sources->fleet) {
    const std::string fleet = sources->fleet();
    w.RawValue(fleet.data(), fleet.size(), rapidjson::kObjectType);
  } else {
    w.Null();
  }

  key(w, "listeners");
  w.StartArray();
  if (listeners) {
    for (const auto& l : *listeners) {
      w.StartObject();
      key(w, "name");
      string(w, l.name);
      if (!l.upstream.empty()) {
        key(w, "upstream");
        string(w, l.upstream);
      }
      key(w, "address");
      string(w, l.address);
      w.EndObject();
    }
  }
  w.EndArray();

  key(w, "upstreams");
  w.StartArray();
  if (gateway) {
    CurlStats curl;
    if (upstream) curl = upstream->stats();
    const auto config = gateway->config();
    for (const auto& u : config->upstreams) {
      w.StartObject();
      key(w, "name");
      string(w, u.name);
      key(w, "protocol");
      w.String(core::protocolName(u.protocol));
      key(w, "origin");
      string(w, urlOrigin(u.base_url));
      key(w, "credential_secret");
      optionalString(w, u.credential.secret);
      key(w, "tls_ca_file");
      optionalString(w, u.tls ? u.tls->ca_file : std::string());
      int64_t open = 0;
      for (const auto& pool : curl.pools) {
        if (pool.pool == u.name) open = pool.open;
      }
      key(w, "connections_open");
      w.Int64(open);
      core::UpstreamHealth::Snapshot health;
      core::UpstreamMetrics* um = metrics ? metrics->upstreamByName(u.name) : nullptr;
      if (um != nullptr) health = um->health.snapshot();
      key(w, "last_answer_at");
      time(w, health.last_answer_unix_ms);
      key(w, "last_status");
      if (health.last_status != 0) {
        w.Int(health.last_status);
      } else {
        w.Null();
      }
      key(w, "last_failure_at");
      time(w, health.last_failure_unix_ms);
      key(w, "last_failure_class");
      if (health.last_failure_kind != core::UpstreamErrorKind::kCount) {
        w.String(core::upstreamErrorKindName(health.last_failure_kind));
      } else {
        w.Null();
      }
      key(w, "last_failure");
      optionalString(w, health.last_failure);
      // Since start, by class: the same counters as keyway_upstream_errors_total.
      key(w, "errors");
      w.StartObject();
      for (size_t k = 0; k < static_cast<size_t>(core::UpstreamErrorKind::kCount); ++k) {
        key(w, core::upstreamErrorKindName(static_cast<core::UpstreamErrorKind>(k)));
        w.Uint64(um != nullptr ? um->errors[k].load(std::memory_order_relaxed) : 0);
      }
      w.EndObject();
      w.EndObject();
    }
  }
  w.EndArray();
  w.EndObject();
  return std::string(buffer.GetString(), buffer.GetSize());
}

}  // namespace keyway::daemon
