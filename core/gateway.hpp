// The request pipeline: routing, client authentication, credential injection, forwarding and
// keyway's own endpoints. Transport-agnostic: the server hands it parsed requests and a Responder.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <unordered_map>

#include "core/bosa_route.hpp"
#include "core/bosa_service.hpp"
#include "core/bosa_tokens.hpp"
#include "core/cache_policy.hpp"
#include "core/cache_store.hpp"
#include "core/clock.hpp"
#include "core/config.hpp"
#include "core/credential_store.hpp"
#include "core/http_types.hpp"
#include "core/metrics.hpp"
#include "core/result.hpp"
#include "core/retry.hpp"
#include "core/schema_store.hpp"
#include "core/upstream_client.hpp"

namespace keyway::core {

// The outgoing side of one request, implemented by the server. Thread-safe: the gateway may call it
// from a server thread or from the upstream client's thread. Either send() once, or startStream()
// then writeChunk()* then endStream() / abortStream().
class Responder {
 public:
  virtual ~Responder() = default;
  virtual void send(HttpResponse response) = 0;
  virtual void startStream(int status, std::string_view reason, Headers headers) = 0;
  // Returns false when the client is gone. `drained` (may be empty) is called once, from any
  // thread, when the bytes queued for the client drop below the low-water mark after this call
  // found them above the high-water mark; `*paused` tells the caller whether that happened.
  virtual bool writeChunk(std::string_view data, bool* paused, std::function<void()> drained) = 0;
  virtual void endStream() = 0;
  virtual void abortStream() = 0;  // the body cannot be completed: close the connection
  // True if the request arrived over HTTP/1.0 (no chunked framing available).
  virtual bool http10() const = 0;
};

// Where the request came in.
struct ListenerContext {
  bool main = true;           // main listener (mounts) vs compat listener
  std::string compat_upstream;  // for compat listeners: the upstream served at the root
  std::string peer;           // client address, for logs
};

// One line of the access log (docs/operations.md). Never carries a secret or token.
struct AccessRecord {
  std::string client;     // client name, "-" if unauthenticated
  std::string team;       // "-" if unknown
  std::string upstream;   // "-" for keyway's own endpoints
  std::string method;
  std::string path;       // without the query (queries may carry identifiers)
  int status = 0;
  std::string cache = "BYPASS";
  std::string credential;  // secret name injected ("" if none) and its scope, for the audit trail
  std::string credential_scope;
  double upstream_ms = -1;  // -1 if no upstream exchange
  double total_ms = 0;
  size_t bytes_in = 0;
  size_t bytes_out = 0;
  std::string error;      // keyway error code, if any
  std::string listener;   // "main" or "compat"
  std::string peer;
};

class EventSink {
 public:
  virtual ~EventSink() = default;
  virtual void access(const AccessRecord& record) = 0;
  virtual void warn(std::string_view message) = 0;
};

struct GatewayDeps {
  std::shared_ptr<CredentialStore> store;
  std::shared_ptr<UpstreamClient> upstream;
  std::shared_ptr<Metrics> metrics;
  std::shared_ptr<EventSink> events;
  std::shared_ptr<Clock> clock;
  // Response cache (docs/cache.md); null = no caching (every upstream response is BYPASS).
  std::shared_ptr<CacheStore> cache;
  // Readiness of parts outside the gateway (listeners bound). Defaults to true.
  std::function<bool()> ready;
  // BOSA schema store (docs/bosa.md); null = schemas are fetched but kept in memory only.
  std::shared_ptr<SchemaStore> schemas;
  // Timers for retry waits; null = BOSA actions are never retried.
  std::shared_ptr<Scheduler> scheduler;
};

class Gateway {
 public:
  Gateway(std::shared_ptr<const Config> config, GatewayDeps deps);
  ~Gateway();
  Gateway(const Gateway&) = delete;
  Gateway& operator=(const Gateway&) = delete;

  // Handles one complete request; never blocks on I/O; never throws. The responder is always
  // answered exactly once.
  void handle(HttpRequest request, const ListenerContext& listener,
              std::shared_ptr<Responder> responder);

  // Swaps the configuration (SIGHUP). Requests in flight keep the config they started with.
  void setConfig(std::shared_ptr<const Config> config);
  std::shared_ptr<const Config> config() const;

  // While draining, new requests get 503 unavailable (with Connection: close from the server).
  void setDraining(bool draining) { draining_.store(draining, std::memory_order_relaxed); }
  bool draining() const { return draining_.load(std::memory_order_relaxed); }

  Metrics& metrics() { return *deps_.metrics; }

  // The BOSA schemas in memory for `upstream` (null before the first use), for metrics.
  std::shared_ptr<const BosaSnapshot> bosaSchemas(std::string_view upstream) const {
    return bosa_schemas_->peek(upstream);
  }

 private:
  struct Identity {
    ClientRecord client;
    TeamRecord team;
  };
 public:
  // One request waiting on a cache fill (internal; public for the observer in gateway.cpp).
  struct Waiter {
    std::shared_ptr<Responder> responder;
    AccessRecord record;
    std::chrono::steady_clock::time_point start;
    bool head = false;
  };
  struct Flight {
    std::vector<Waiter> waiters;
  };
  // Removes the flight of `key` and returns its waiters (the fill is done).
  std::vector<Waiter> landFlight(const std::string& key);
  // Answers `waiter` from a cached entry; takes the entry's headers and body (pass a copy to keep it).
  void serveCached(CachedResponse entry, const char* cache_status, Waiter waiter);

 private:

  void handleInternal(HttpRequest& request, const ListenerContext& listener,
                      const std::shared_ptr<Responder>& responder,
                      std::chrono::steady_clock::time_point start);
  // A request on its way upstream, carried across the asynchronous BOSA stages (schema fetch,
  // token mint). `upstream` points into `config`, which this keeps alive.
  struct Pending {
    std::shared_ptr<const Config> config;
    const UpstreamConfig* upstream = nullptr;
    Headers client_headers;  // as the client sent them (cache identity)
    std::string rest;
    AccessRecord record;
    std::shared_ptr<Responder> responder;
    std::chrono::steady_clock::time_point start;
    UpstreamRequest out;
    bool head = false;
    // BOSA
    std::shared_ptr<const ResolvedSecret> api_key;  // the injected client key (user tokens are tied to it)
    std::string bosa_user;                  // identifier acted as, "" for none
    std::string action;                     // action name for action calls, "" otherwise
    std::string user_token_header;          // the Authorization value injected (for a 401 re-mint)
    BosaRoute bosa_route;                   // classifyBosaPath of the path (BOSA upstreams)
    std::string credential_fingerprint;     // of the injected credential's value (cache identity)
  };
  void forward(HttpRequest&& request, std::shared_ptr<const Config> config, const UpstreamConfig& upstream,
               std::string rest, AccessRecord&& record, const std::shared_ptr<Responder>& responder,
               std::chrono::steady_clock::time_point start);
  // BOSA stages, then dispatch(): validation against the action's schema, then the user token.
  void bosaValidate(std::shared_ptr<Pending> p);
  void bosaUserToken(std::shared_ptr<Pending> p);
  void dispatch(std::shared_ptr<Pending> p);
  // Starts the upstream exchange of `p` (with retries and a 401 re-mint for BOSA).
  std::shared_ptr<UpstreamCall> startUpstream(const std::shared_ptr<Pending>& p, UpstreamRequest out,
                                              std::shared_ptr<UpstreamObserver> observer);
  void serveDiscovery(const UpstreamConfig& upstream, const std::string& rest, AccessRecord record,
                      const std::shared_ptr<Responder>& responder, std::chrono::steady_clock::time_point start);
  void respondPendingError(const std::shared_ptr<Pending>& p, const Error& error);
  // Both share the cached identity (never null on success of authenticate; null from
  // lookupToken for an unknown or revoked token): no copy of its records per request.
  Result<std::shared_ptr<const Identity>> authenticate(const HttpRequest& request, const UpstreamConfig& upstream);
  Result<std::shared_ptr<const Identity>> lookupToken(std::string_view token);
  // CredentialStore::resolveSecret, remembered for one store generation (decrypting the secret
  // on every request cost more than the rest of the lookup).
  // The cached secret, shared (null: none stored for that name and team).
  Result<std::shared_ptr<const ResolvedSecret>> resolveSecret(const std::string& name, const std::string& team);

  void respondLocal(const std::shared_ptr<Responder>& responder, HttpResponse response,
                    AccessRecord record, std::chrono::steady_clock::time_point start);
  void respondError(const std::shared_ptr<Responder>& responder, const Error& error,
                    AccessRecord record, std::chrono::steady_clock::time_point start);

  std::shared_ptr<const Config> config_;  // accessed with std::atomic_load/store
  // Changes with every setConfig(), unique across Gateway instances: config() keeps a
  // per-thread copy of the snapshot and reloads it only when this moved.
  std::atomic<uint64_t> config_generation_;
  GatewayDeps deps_;
  std::atomic<bool> draining_{false};

  // Positive authentication results keyed by presented token, valid for one store generation:
  // any keywayctl change (revoke, team edit) bumps the generation and empties the cache.
  std::shared_mutex auth_mu_;
  uint64_t auth_generation_ = 0;
  std::unordered_map<std::string, std::shared_ptr<const Identity>> auth_cache_;
  // Resolved secrets by name and team, for the same generation; SecretStrings wipe on eviction.
  std::shared_mutex secrets_mu_;
  uint64_t secrets_generation_ = 0;
  std::unordered_map<std::string, std::shared_ptr<const ResolvedSecret>> secret_cache_;

  std::unique_ptr<BosaSchemaService> bosa_schemas_;
  std::unique_ptr<BosaTokenService> bosa_tokens_;

  // Cache fills in flight, by cache key: concurrent misses on one key make one upstream request.
  std::mutex flights_mu_;
  std::unordered_map<std::string, std::shared_ptr<Flight>> flights_;
};

// The token a client presented for `upstream`: X-Keyway-Token wins, else the upstream's own
// credential header (Authorization: Bearer kw_..., X-API-Key: kw_..., X-Api-Key: kw_...).
// Returns "" when none is present.
std::string_view presentedToken(const Headers& headers, const UpstreamConfig& upstream);

}  // namespace keyway::core
