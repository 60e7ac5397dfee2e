// keywayd's answer to GET /_keyway/status (docs/http.md): what this process serves from where,
// so that `keywayctl status` can tell whether it edits the store the daemon reads. Never a secret:
// paths, names, origins, counters and health only.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/cache_store.hpp"
#include "core/credential_store.hpp"
#include "core/gateway.hpp"
#include "core/metrics.hpp"
#include "daemon/curl_upstream_client.hpp"

namespace keyway::daemon {

// Where the process keeps its state, fixed at start-up (paths absolute, resolved against the
// working directory keywayd started in).
struct StatusPaths {
  std::optional<std::string> config_file;  // none: the embedded default
  std::string state_dir;
  std::string master_key_file;
  std::string credential_store;  // <state_dir>/credentials
  // The credential store directory's identity: equal (device, inode) is the same directory
  // whatever path leads there (symlinks, systemd's /var/lib/private, bind mounts).
  dev_t device = 0;
  ino_t inode = 0;
  std::string cache_dir;  // "" when the cache is disabled
};

struct StatusListener {
  std::string name;      // "main" or "compat"
  std::string upstream;  // compat listeners: the upstream served at the root
  std::string address;   // as bound: "127.0.0.1:8750"
};

// Thread-safe: render() runs on reactor threads while the main thread sets the listeners once.
class StatusReport {
 public:
  struct Sources {
    std::weak_ptr<core::Gateway> gateway;  // the configuration in use, draining
    std::weak_ptr<core::CredentialStore> store;
    std::weak_ptr<core::CacheStore> cache;  // expired = cache disabled
    std::weak_ptr<core::Metrics> metrics;
    std::weak_ptr<CurlUpstreamClient> upstream;
    std::function<bool()> ready;
    // The `fleet` object (a JSON object's text), or null for a single host.
    std::function<std::string()> fleet;
    // The cache's `shared` member (a JSON object's text), or null without cache.shared.
    std::function<std::string()> shared_cache;
  };

  explicit StatusReport(StatusPaths paths);

  // Set once, after start-up (empty before: the process is not ready yet).
  void setSources(Sources sources);
  void setListeners(std::vector<StatusListener> listeners);

  // The JSON document. Cheap: atomics, one LMDB environment info call, the cache's stats (one
  // read transaction), the pools' gauges; no disk write, no lock held across I/O.
  std::string render() const;

 private:
  const StatusPaths paths_;
  const int64_t started_unix_ms_;
  const std::chrono::steady_clock::time_point started_;
  std::shared_ptr<const Sources> sources_;                   // std::atomic_load/store
  std::shared_ptr<const std::vector<StatusListener>> listeners_;  // std::atomic_load/store
};

// Absolute form of `path`: realpath(3) when it exists, else joined to the working directory.
std::string absolutePath(const std::string& path);

// scheme://host[:port] of `url`, without userinfo, path, query or fragment ("" when `url` has no
// "://"). Status documents show upstreams by origin only: a path could hold a token.
std::string urlOrigin(const std::string& url);

}  // namespace keyway::daemon
