// The request pipeline: routing, client authentication, credential injection, forwarding and
// keyway's own endpoints. Transport-agnostic: the server hands it parsed requests and a Responder.
// Its parts: gateway.cpp (routing, authentication, injection, the cache decision),
// gateway_bosa.cpp (BOSA discovery, validation, user tokens, retries), gateway_cache.cpp (cache
// hits and the single flight of misses), upstream_relay (uncached exchanges), request_context
// (every request's answer and bookkeeping).
#pragma once

#include <array>
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
#include <vector>

#include "core/bosa_route.hpp"
#include "core/bosa_service.hpp"
#include "core/bosa_tokens.hpp"
#include "core/cache_policy.hpp"
#include "core/cache_store.hpp"
#include "core/shared_cache.hpp"
#include "core/clock.hpp"
#include "core/config.hpp"
#include "core/credential_store.hpp"
#include "core/http_types.hpp"
#include "core/metrics.hpp"
#include "core/request_context.hpp"
#include "core/result.hpp"
#include "core/retry.hpp"
#include "core/schema_store.hpp"
#include "core/upstream_client.hpp"

namespace keyway::core {

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
  // The body of GET /_keyway/status (docs/http.md): a JSON document without any secret. Runs on
  // the serving thread, so it must be cheap and never wait on I/O. Null = no such endpoint (404).
  std::function<std::string()> status;
  // Members added to GET /_keyway/ready's answer (e.g. `"fleet":{...}`, docs/fleet.md): the text
  // of JSON object members, or "". Cheap, never waiting on I/O. Null = none.
  std::function<std::string()> ready_details;
  // The fleet's shared cache behind `cache` (docs/cache.md); null = none.
  std::shared_ptr<SharedCache> shared;
};

class Gateway {
 public:
  Gateway(std::shared_ptr<const Config> config, GatewayDeps deps);
  ~Gateway();
  Gateway(const Gateway&) = delete;
  Gateway& operator=(const Gateway&) = delete;

  // Handles one complete request; never blocks on I/O; never throws. The responder is always
  // answered exactly once.
  void handle(HttpRequest request, const ListenerContext& listener, std::shared_ptr<Responder> responder);
  // Answers `error` to a request the server could not take in (a framing or size error, a head or
  // body that did not arrive in time; `status` non-zero replaces the code's status), so that it
  // has its access line like any other. `head` is what was parsed of it (empty method: nothing
  // usable): with a head, the line names the upstream and, when the token is known, the client
  // and team; nothing is forwarded. Never throws.
  void refuse(HttpRequest head, const ListenerContext& listener, const Error& error, int status,
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

  // A cache fill's end (gateway_cache.cpp): removes the flight of `key` and returns the requests
  // that waited on it.
  std::vector<std::unique_ptr<RequestContext>> landFlight(const std::string& key);
  // Answers a request from a cached entry (HIT or STALE, with Age); takes the entry's headers and
  // body (pass a copy to keep it).
  void serveCached(CachedResponse entry, const char* cache_status, std::unique_ptr<RequestContext> ctx);
  // The requests waiting on the flight of `key`, taken out of it; the flight stays (its fill
  // goes on as a refresh).
  std::vector<std::unique_ptr<RequestContext>> takeWaiters(const std::string& key);

 private:
  struct Identity {
    ClientRecord client;
    TeamRecord team;
  };
  // Cache fills in flight by cache key: concurrent misses on one key make one upstream request.
  struct Flight {
    std::vector<std::unique_ptr<RequestContext>> waiters;
  };
  // A request on its way upstream, carried across the asynchronous BOSA stages (schema fetch,
  // token mint). `upstream` points into `config`, which this keeps alive.
  struct Pending {
    std::shared_ptr<const Config> config;
    const UpstreamConfig* upstream = nullptr;
    std::unique_ptr<RequestContext> ctx;
    RequestTrace trace;      // ctx's, for the stages after ctx moved on (a fill, a retry hook)
    Headers client_headers;  // as the client sent them
    std::string rest;
    UpstreamRequest out;
    std::string credential_fingerprint;  // of the injected credential's value (cache identity)
    // BOSA
    std::shared_ptr<const ResolvedSecret> api_key;  // the injected client key (user tokens are tied to it)
    BosaRoute bosa_route;                   // classifyBosaPath of the path
    std::string bosa_user;                  // identifier acted as, "" for none
    std::string action;                     // action name for action calls, "" otherwise
    std::string user_token_header;          // the Authorization value injected (for a 401 re-mint)
  };

  // gateway.cpp
  void handleInternal(HttpRequest& request, const ListenerContext& listener, std::unique_ptr<RequestContext>& ctx);
  void serveKeywayEndpoint(const HttpRequest& request, std::string_view path, const ListenerContext& listener,
                           std::unique_ptr<RequestContext> ctx);
  void forward(HttpRequest&& request, std::shared_ptr<const Config> config, const UpstreamConfig& upstream,
               std::string rest, std::unique_ptr<RequestContext> ctx);
  // The upstream a target that passed validateTarget is for, and the rest of the target after
  // its mount (the whole target on a compat listener); null when none is mounted there.
  static const UpstreamConfig* mountedUpstream(const Config& config, const std::string& target,
                                               const ListenerContext& listener, std::string* rest);
  // Both share the cached identity (never null on success of authenticate; null from
  // lookupToken for an unknown or revoked token): no copy of its records per request.
  // authenticate names the client and team in ctx's record as soon as it knows them, so that a
  // refusal (403: no access to the upstream) says whom it refused.
  Result<std::shared_ptr<const Identity>> authenticate(const HttpRequest& request, const UpstreamConfig& upstream,
                                                       RequestContext& ctx);
  // `cached` (may be null) says whether the answer came from the per-generation cache.
  Result<std::shared_ptr<const Identity>> lookupToken(std::string_view token, bool* cached = nullptr);
  // CredentialStore::resolveSecret, remembered for one store generation (decrypting the secret
  // on every request cost more than the rest of the lookup). Null: none stored for that name.
  Result<std::shared_ptr<const ResolvedSecret>> resolveSecret(const std::string& name, const std::string& team,
                                                              bool* cached = nullptr);
  // The cache decision (docs/cache.md), then the upstream exchange: relayed (bypass) or as a
  // cache fill (gateway_cache.cpp).
  void dispatch(std::shared_ptr<Pending> p);
  void relay(const std::shared_ptr<Pending>& p, std::function<void(int)> on_success);
  CacheIdentity cacheIdentityOf(const Pending& p) const;

  // gateway_cache.cpp: a cacheable request, answered from the cache or by one fill for all
  // concurrent misses of its key.
  // A cache fill about to start (gateway_cache.cpp): of a miss with requests waiting on its
  // flight, or a background refresh of a stale entry.
  struct FillPlan {
    CacheRule rule;
    std::string key;
    CacheEntryMeta meta;
    bool refresh = false;
    UpstreamMetrics* um = nullptr;
  };
  void consultShared(const std::shared_ptr<Pending>& p, FillPlan plan, std::optional<CachedResponse> stale);
  void onSharedLookup(const std::shared_ptr<Pending>& p, const FillPlan& plan, std::optional<CachedResponse> stale,
                      SharedLookup found);
  void startFill(const std::shared_ptr<Pending>& p, FillPlan plan, std::optional<CachedResponse> stale,
                 std::string ticket);
  // Ends a flight without a fill of its own: its waiters get `entry` as `cache_status`, and a
  // refresh gives its slot back.
  void endFlight(const FillPlan& plan, const CachedResponse& entry, const char* cache_status);
  void dispatchCacheable(const std::shared_ptr<Pending>& p, const CacheRule& rule, std::string canonical_body,
                         ClientCacheDirective directive);

  // gateway_bosa.cpp
  void serveDiscovery(const UpstreamConfig& upstream, const std::string& rest, std::unique_ptr<RequestContext> ctx);
  // The BOSA part of forward(): route classification, the user a request acts as, then validation.
  void forwardBosa(std::shared_ptr<Pending> p, const Identity& id);
  void bosaValidate(std::shared_ptr<Pending> p);
  void bosaUserToken(std::shared_ptr<Pending> p);
  // Starts the upstream exchange of `p` (with retries and a 401 re-mint for BOSA).
  std::shared_ptr<UpstreamCall> startUpstream(const std::shared_ptr<Pending>& p, UpstreamRequest out,
                                              std::shared_ptr<UpstreamObserver> observer);
  static void respondPendingError(const std::shared_ptr<Pending>& p, const Error& error);

  std::unique_ptr<RequestContext> newContext(std::shared_ptr<Responder> responder, bool head) const;

  std::shared_ptr<const Config> config_;  // accessed with std::atomic_load/store
  // Changes with every setConfig(), unique across Gateway instances: config() keeps a
  // per-thread copy of the snapshot and reloads it only when this moved.
  std::atomic<uint64_t> config_generation_;
  GatewayDeps deps_;
  std::shared_ptr<const RequestServices> services_;
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

  std::mutex flights_mu_;
  std::unordered_map<std::string, std::shared_ptr<Flight>> flights_;
  // Moves (under flights_mu_) each time a flight of a key in the stripe lands. A request reads
  // its stripe before its cache lookup; finding it moved and no flight under the lock means a
  // fill stored its entry after that lookup, so the lookup is out of date (gateway_cache.cpp).
  static constexpr size_t kLandedStripes = 64;
  std::array<std::atomic<uint64_t>, kLandedStripes> landed_{};
  static size_t landedStripe(const std::string& key) { return std::hash<std::string>{}(key) % kLandedStripes; }
};

// The token a client presented for `upstream`: X-Keyway-Token wins, else the upstream's own
// credential header (Authorization: Bearer kw_..., X-API-Key: kw_..., X-Api-Key: kw_...).
// Returns "" when none is present.
std::string_view presentedToken(const Headers& headers, const UpstreamConfig& upstream);


}  // namespace keyway::core
