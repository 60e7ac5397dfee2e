// The typed, validated, immutable configuration model (docs/config.md). Loaded from YAML by
// daemon/yaml_config_loader; everything here is plain data plus validation helpers.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/cache_policy.hpp"
#include "core/result.hpp"
#include "core/upstream_tls.hpp"

namespace keyway::core {

// True when `address` (a host without port: a client's address as ListenerContext::peer holds
// it, or a configured host) is this host's: 127.0.0.0/8 as a dotted quad, ::1, or either
// IPv4-mapped (::ffff:127.x.y.z). Names ("localhost") and "-" (unknown) are not.
bool isLoopbackAddress(std::string_view address);

// host:port as written in the config, already checked.
struct ListenAddress {
  std::string host;   // "127.0.0.1", "::1", "0.0.0.0", "localhost"
  uint16_t port = 0;  // 0 = ephemeral (tests)
  bool empty() const { return host.empty(); }
  std::string toString() const;  // "127.0.0.1:8750", "[::1]:8750"
};

// How an upstream expects its credential and how an SDK presents its "API key" to keyway.
enum class Protocol { kBundleUp, kBosa, kBundleIq, kGeneric };

struct CredentialInjection {
  std::string header;        // e.g. "Authorization", "X-API-Key", "X-Api-Key"
  std::string prefix;        // e.g. "Bearer " (prepended to the secret value)
  std::string secret;        // secret name in the store, e.g. "bundleup.api_key"; empty = inject nothing
};

// Retries of BOSA action calls (docs/bosa.md). Other upstreams' requests are never retried: their
// writes are not known to be idempotent and their SDKs retry themselves.
struct RetryConfig {
  int attempts = 3;                                   // total attempts per call, 1 = no retry
  std::chrono::milliseconds budget{25000};            // all attempts and waits (SDK timeout is 30 s)
  std::chrono::milliseconds retry_after_cap{10000};   // longer Retry-After: client gets the 429
  std::chrono::milliseconds backoff{200};             // first wait; doubles, plus up to 100% jitter
  // Read-like actions, also retried on 5xx and after-send failures (globs on the action name).
  std::vector<std::string> safe_actions = {"list_*", "get_*", "search_*"};
};

// BOSA-only settings of an upstream (protocol bosa).
struct BosaSettings {
  std::chrono::milliseconds schema_ttl{3600000};          // background refresh after this age
  std::chrono::milliseconds user_token_margin{60000};     // re-mint this long before expires_at
  RetryConfig retry;
};

struct UpstreamConfig {
  std::string name;          // mount name: /<name>/
  std::string base_url;      // scheme://host[:port][/path], no trailing slash after normalisation
  ListenAddress compat_listen;  // empty = off
  Protocol protocol = Protocol::kGeneric;
  CredentialInjection credential;
  std::chrono::milliseconds connect_timeout{5000};
  std::chrono::milliseconds timeout{60000};   // whole exchange (not applied to streams)
  size_t max_response_bytes = 64u << 20;      // buffered responses; streams are not limited
  // Upstream connections open at once (all reactor threads together); requests beyond it wait
  // for a connection. Envoy's default circuit-breaker bound: high enough that HTTP/1.1
  // upstreams with slow answers are not throttled, low enough that a burst cannot open
  // thousands of TLS handshakes. At least server.threads (each thread keeps one).
  size_t max_connections = 1024;
  BosaSettings bosa;                          // used when protocol == kBosa
  // `tls:` (https:// only); null = the system's CAs and no client certificate. Shared with every
  // request to this upstream (UpstreamRequest::tls), so a request costs no copy of it.
  std::shared_ptr<const UpstreamTls> tls;
};

struct LimitsConfig {
  size_t max_body_bytes = 32u << 20;          // 413 above this (docs/http.md default 32 MiB)
  size_t max_header_bytes = 64u << 10;        // request line + headers; 431 above
  size_t max_headers = 100;                   // header count; 431 above
  std::chrono::milliseconds header_timeout{10000};  // slowloris guard: full head within this
  std::chrono::milliseconds body_timeout{60000};    // full body within this after the head
  std::chrono::milliseconds idle_timeout{75000};    // keep-alive idle connection close
  size_t max_connections = 16384;
};

struct ServerConfig {
  size_t threads = 2;                          // reactor threads per listener
  // listen(2) backlog of every listener (the kernel caps it at net.core.somaxconn). Pistache's
  // default of 128 overflows when a client pool opens hundreds of connections at once: the
  // handshakes that do not fit are retried by TCP after a second, and requests already written
  // on them wait that long (bench (c): p99 0.7 s instead of 0.11 s).
  size_t listen_backlog = 4096;
  std::chrono::milliseconds shutdown_grace{25000};
};

struct LogConfig {
  std::string level = "info";   // debug | info | warn | error
  bool access_log = true;
  // credential_use audit lines: "summary" = the first use of a credential by a client, then at
  // most one line a minute per (client, team, upstream, credential, scope) with the count of
  // uses; "every" = one line per use.
  std::string audit = "summary";
};

// `fleet:` (docs/fleet.md): the credential store of record is etcd; this host serves from its
// LMDB copy. Absent: a single host.
struct FleetConfig {
  std::vector<std::string> endpoints;  // http(s)://host:port of etcd's client URLs
  std::string prefix = "/keyway/";     // starts and ends with '/'
  std::chrono::milliseconds dial_timeout{2000};
  std::chrono::milliseconds request_timeout{5000};
  std::string username;       // empty: etcd without authentication
  std::string password_file;  // required with username; the password is read when used
  UpstreamTls tls;            // ca_file, client_cert, client_key for https:// endpoints
};

struct Config {
  ListenAddress listen;                 // main listener
  std::string state_dir;                // resolved: config, else $STATE_DIRECTORY, else ./keyway-state
  std::string master_key_file;          // resolved: config, else $CREDENTIALS_DIRECTORY/master.key,
                                        // else <state_dir>/master.key
  std::vector<UpstreamConfig> upstreams;  // in config order
  LimitsConfig limits;
  ServerConfig server;
  LogConfig log;
  CachePolicyConfig cache = defaultCachePolicy();  // `cache:` section (docs/cache.md)
  std::optional<FleetConfig> fleet;

  const UpstreamConfig* findUpstream(std::string_view name) const;
};

// Protocol defaults for an upstream named `name` when the config does not say (bundleup* ->
// BundleUp, bosa* -> BOSA, bundleiq* -> BundleIQ, else generic).
Protocol defaultProtocolFor(std::string_view upstream_name);
CredentialInjection defaultCredentialFor(Protocol protocol);
const char* protocolName(Protocol protocol);

}  // namespace keyway::core
