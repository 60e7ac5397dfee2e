// The request pipeline's spine: keyway's own endpoints, routing, authentication, credential
// injection and the cache decision (the BOSA stages are in gateway_bosa.cpp, the cache's in
// gateway_cache.cpp).
#include "core/gateway.hpp"

#include <algorithm>

#include "core/client_token.hpp"
#include "core/canonical_json.hpp"
#include "core/errors.hpp"
#include "core/header_rules.hpp"
#include "core/target.hpp"
#include "core/text.hpp"
#include "core/upstream_relay.hpp"

namespace keyway::core {

namespace {

constexpr std::string_view kKeywayTokenHeader = "X-Keyway-Token";

// The path an access line shows. A path holding something of a client token's shape (a client
// that put its token in the URL: refused, never forwarded) is not shown: tokens stay out of logs.
constexpr std::string_view kWithheldPath = "(withheld: it holds a client token)";

void setLoggedPath(AccessRecord& record, std::string_view path) {
  if (carriesClientToken(path)) {
    record.path.assign(kWithheldPath.data(), kWithheldPath.size());
  } else {
    record.path.assign(path.data(), path.size());
  }
}

// After routing: the path of the rest, a suffix of the target's path starting at a '/', holds a
// token only if the whole did (setLoggedPath already looked), so it is not scanned again.
void setLoggedRestPath(AccessRecord& record, std::string_view rest_path) {
  if (record.path != kWithheldPath) record.path.assign(rest_path.data(), rest_path.size());
}

HttpResponse jsonResponse(int status, std::string body) {
  HttpResponse r;
  r.status = status;
  r.headers.push_back({"Content-Type", "application/json"});
  r.body = std::move(body);
  return r;
}

}  // namespace

namespace {

// The first `name` field whose value is `prefix` (case-insensitive, may be empty) then a kw_ token.
std::string_view tokenInField(const Headers& headers, std::string_view name, std::string_view prefix) {
  for (const auto& h : headers) {
    if (!iequals(h.name, name)) continue;
    std::string_view v = trimOws(h.value);
    if (!prefix.empty()) {
      if (!startsWithNoCase(v, prefix)) continue;
      v = trimOws(v.substr(prefix.size()));
    }
    if (v.substr(0, kClientTokenPrefix.size()) == kClientTokenPrefix) return v;
  }
  return {};
}

// Where `upstream` takes a client token besides X-Keyway-Token: its credential header (with its
// prefix), or Authorization: Bearer for an upstream without one.
std::string_view tokenHeaderOf(const UpstreamConfig& upstream) {
  return upstream.credential.header.empty() ? std::string_view("Authorization")
                                            : std::string_view(upstream.credential.header);
}

}  // namespace

std::string_view presentedToken(const Headers& headers, const UpstreamConfig& upstream) {
  if (auto v = headerValue(headers, kKeywayTokenHeader)) return trimOws(*v);
  const std::string_view prefix =
      upstream.credential.header.empty() ? std::string_view("Bearer ") : std::string_view(upstream.credential.prefix);
  return tokenInField(headers, tokenHeaderOf(upstream), prefix);
}


namespace {
// Config generations, unique in the process, so that a per-thread copy cached for one Gateway is
// never mistaken for another's (tests build many, possibly at the same address).
uint64_t nextConfigGeneration() {
  static std::atomic<uint64_t> next{1};
  return next.fetch_add(1, std::memory_order_relaxed);
}
}  // namespace

Gateway::Gateway(std::shared_ptr<const Config> config, GatewayDeps deps)
    : config_(std::move(config)), config_generation_(nextConfigGeneration()), deps_(std::move(deps)) {
  if (!deps_.clock) deps_.clock = std::make_shared<RealClock>();
  if (!deps_.ready) deps_.ready = [] { return true; };
  if (!deps_.schemas) deps_.schemas = std::make_shared<NullSchemaStore>();
  services_ = std::make_shared<const RequestServices>(RequestServices{deps_.metrics, deps_.events, deps_.clock});
  std::weak_ptr<EventSink> events = deps_.events;
  bosa_schemas_ = std::make_unique<BosaSchemaService>(deps_.schemas, deps_.upstream, deps_.clock, deps_.metrics,
                                                      [events](std::string_view m) {
                                                        if (auto e = events.lock()) e->warn(m);
                                                      });
  bosa_tokens_ =
      std::make_unique<BosaTokenService>(deps_.store, deps_.upstream, deps_.clock, deps_.metrics, deps_.events);
}

Gateway::~Gateway() {
  // Completing transfers call back into this object (landFlight) and into the BOSA services: end
  // them while everything is whole (the services hold the last references to the client).
  deps_.upstream.reset();
  bosa_tokens_.reset();
  bosa_schemas_.reset();
}

void Gateway::setConfig(std::shared_ptr<const Config> config) {
  std::vector<std::string> names;
  for (const auto& u : config->upstreams) names.push_back(u.name);
  deps_.metrics->ensureUpstreams(names);
  std::atomic_store(&config_, std::move(config));
  // After the store: a thread that sees the new generation loads the new snapshot.
  config_generation_.store(nextConfigGeneration(), std::memory_order_release);
}

std::shared_ptr<const Config> Gateway::config() const {
  // Every request takes a snapshot. std::atomic_load on a shared_ptr locks one of libstdc++'s
  // global mutexes, the same one on every reactor thread, and bumps a reference count both
  // threads write. Each thread instead keeps the snapshot it last loaded, behind a control block
  // of its own (an aliasing pointer into a per-thread holder), and reloads it only when the
  // generation moved. A stale generation read just costs one reload.
  struct Cached {
    uint64_t generation = 0;
    std::shared_ptr<const Config> config;
  };
  thread_local Cached cached;
  const uint64_t generation = config_generation_.load(std::memory_order_acquire);
  if (cached.generation != generation || !cached.config) {
    auto holder = std::make_shared<std::shared_ptr<const Config>>(std::atomic_load(&config_));
    const Config* raw = holder->get();
    cached.config = std::shared_ptr<const Config>(std::move(holder), raw);
    cached.generation = generation;
  }
  return cached.config;
}

std::unique_ptr<RequestContext> Gateway::newContext(std::shared_ptr<Responder> responder, bool head) const {
  return std::make_unique<RequestContext>(services_, std::move(responder), deps_.clock->monotonicNow(), head);
}

void Gateway::handle(HttpRequest request, const ListenerContext& listener, std::shared_ptr<Responder> responder) {
  std::unique_ptr<RequestContext> ctx = newContext(std::move(responder), request.method == "HEAD");
  try {
    handleInternal(request, listener, ctx);
    return;
  } catch (const std::exception& e) {
    deps_.events->warn(std::string("internal error while handling a request: ") + e.what());
  } catch (...) {
    deps_.events->warn("internal error while handling a request");
  }
  // Last resort (a catch in every handler that answers 500). A context already handed on answers
  // by itself when it is dropped (RequestContext's destructor).
  if (ctx && !ctx->answered()) {
    ctx->respondError(Error::make(ErrorCode::kInternal, "keyway failed to handle this request; see its log"));
  }
}

const UpstreamConfig* Gateway::mountedUpstream(const Config& config, const std::string& target,
                                               const ListenerContext& listener, std::string* rest) {
  if (!listener.main) {
    // A compat listener whose upstream a reload removed while the listener still runs: none.
    const UpstreamConfig* upstream = config.findUpstream(listener.compat_upstream);
    if (upstream != nullptr) *rest = target;
    return upstream;
  }
  auto split = splitMount(target);
  const UpstreamConfig* upstream = split ? config.findUpstream(split->mount) : nullptr;
  if (upstream != nullptr) *rest = std::move(split->rest);
  return upstream;
}

void Gateway::handleInternal(HttpRequest& request, const ListenerContext& listener,
                             std::unique_ptr<RequestContext>& ctx) {
  const std::shared_ptr<const Config> config = this->config();
  AccessRecord& record = ctx->record();
  record.method = request.method;
  setLoggedPath(record, targetPath(request.target));
  record.bytes_in = request.body.size();
  record.listener = listener.main ? "main" : "compat";
  record.peer = listener.peer;

  if (draining()) {
    ctx->respondError(Error::make(ErrorCode::kUnavailable, "keyway is shutting down; retry on a new connection"));
    return;
  }
  // CONNECT would turn a pooled upstream connection into a tunnel, and a TRACE response reflects
  // the request, injected credentials included (RFC 9110 §9.3.6, §9.3.8): neither is forwarded.
  if (request.method == "CONNECT" || request.method == "TRACE") {
    deps_.metrics->rejected_requests.fetch_add(1, std::memory_order_relaxed);
    ctx->respondError(Error::make(ErrorCode::kBadRequest, request.method +
                                                               " is not supported: keyway forwards API calls, it is "
                                                               "not a tunnel and never reflects requests"));
    return;
  }
  if (auto st = validateTarget(request.target); !st.ok()) {
    deps_.metrics->rejected_requests.fetch_add(1, std::memory_order_relaxed);
    ctx->respondError(st.error());
    return;
  }

  if (listener.main) {
    const std::string_view path = targetPath(request.target);
    if (path.substr(0, 9) == "/_keyway/") {
      serveKeywayEndpoint(request, path, listener, std::move(ctx));
      return;
    }
  }
  std::string rest;
  const UpstreamConfig* upstream = mountedUpstream(*config, request.target, listener, &rest);
  if (upstream == nullptr) {
    if (!listener.main) {
      ctx->respondError(Error::make(ErrorCode::kNotFound, "the upstream served on this port is no longer configured"));
      return;
    }
    std::string names;
    for (const auto& u : config->upstreams) names += (names.empty() ? "/" : ", /") + u.name + "/";
    ctx->respondError(
        Error::make(ErrorCode::kNotFound, "no upstream is mounted at this path; configured mounts: " + names));
    return;
  }
  ctx->setUpstream(upstream->name);
  setLoggedRestPath(record, targetPath(rest));
  if (const RequestTrace& trace = ctx->trace(); trace.on()) {
    trace("route", {{"upstream", upstream->name},
                    {"via", listener.main ? "mount" : "compat listener"},
                    {"path", record.path},
                    {"protocol", protocolName(upstream->protocol)}});
  }
  if (auto st = validateRestOfValidTarget(rest); !st.ok()) {  // request.target passed validateTarget
    deps_.metrics->rejected_requests.fetch_add(1, std::memory_order_relaxed);
    ctx->respondError(st.error());
    return;
  }
  forward(std::move(request), config, *upstream, std::move(rest), std::move(ctx));
}

void Gateway::refuse(HttpRequest head, const ListenerContext& listener, const Error& error, int status,
                     std::shared_ptr<Responder> responder) {
  std::unique_ptr<RequestContext> ctx = newContext(std::move(responder), head.method == "HEAD");
  deps_.metrics->rejected_requests.fetch_add(1, std::memory_order_relaxed);
  AccessRecord& record = ctx->record();
  record.listener = listener.main ? "main" : "compat";
  record.peer = listener.peer;
  record.method = "-";  // unless the head was read
  record.path = "-";
  try {
    // Who sent it and where to, for the log only: the request is refused whatever the answers.
    if (!head.method.empty() && validateTarget(head.target).ok()) {
      record.method = head.method;
      setLoggedPath(record, targetPath(head.target));
      std::string rest;
      const bool own = listener.main && targetPath(head.target).substr(0, 9) == "/_keyway/";
      const std::shared_ptr<const Config> config = this->config();
      const UpstreamConfig* upstream = own ? nullptr : mountedUpstream(*config, head.target, listener, &rest);
      if (upstream != nullptr) {
        ctx->setUpstream(upstream->name);
        setLoggedRestPath(record, targetPath(rest));
        const std::string_view token = presentedToken(head.headers, *upstream);
        auto identity = token.empty() ? Result<std::shared_ptr<const Identity>>(std::shared_ptr<const Identity>())
                                      : lookupToken(token);
        if (identity.ok() && *identity != nullptr) {
          record.client = (*identity)->client.name;
          record.team = (*identity)->team.name;
        }
      }
    }
  } catch (const std::exception& e) {
    deps_.events->warn("internal error while logging a refused request", {{"error", e.what()}});
  }
  ctx->respondError(error, {}, status);
}

void Gateway::serveKeywayEndpoint(const HttpRequest& request, std::string_view path,
                                  const ListenerContext& listener, std::unique_ptr<RequestContext> ctx) {
  if (request.method != "GET" && request.method != "HEAD") {
    ctx->respondError(Error::make(ErrorCode::kBadRequest, "keyway's own endpoints answer GET only"));
    return;
  }
  HttpResponse response;
  if (path == "/_keyway/health") {
    response = jsonResponse(200, "{\"status\":\"ok\"}");
  } else if (path == "/_keyway/ready") {
    const std::string details = deps_.ready_details ? deps_.ready_details() : std::string();
    if (deps_.ready()) {
      response = jsonResponse(200, "{\"status\":\"ready\"" + (details.empty() ? "" : "," + details) + "}");
    } else {
      response = errorResponse(Error::make(ErrorCode::kUnavailable, "keyway is not ready yet"));
      if (!details.empty() && !response.body.empty() && response.body.back() == '}') {
        response.body.pop_back();
        response.body += "," + details + "}";
      }
    }
  } else if (path == "/_keyway/metrics") {
    response.status = 200;
    response.headers.push_back({"Content-Type", "text/plain; version=0.0.4; charset=utf-8"});
    response.body = deps_.metrics->render();
  } else if (path == "/_keyway/status" && deps_.status) {
    // It names files and hosts (never a secret): for the host's operators, not for whoever can
    // reach a listener bound beyond loopback.
    if (!isLoopbackAddress(listener.peer)) {
      ctx->respondError(Error::make(ErrorCode::kForbidden,
                                    "/_keyway/status answers only clients on this host (loopback); run "
                                    "`keywayctl status` on the host keywayd runs on"));
      return;
    }
    response = jsonResponse(200, deps_.status());
    response.headers.push_back({"Cache-Control", "no-store"});
  } else {
    ctx->respondError(Error::make(ErrorCode::kNotFound,
                                  "no such keyway endpoint; use /_keyway/health, /_keyway/ready, "
                                  "/_keyway/metrics or /_keyway/status"));
    return;
  }
  ctx->respond(std::move(response));
}

Result<std::shared_ptr<const Gateway::Identity>> Gateway::lookupToken(std::string_view token, bool* cached) {
  const uint64_t generation = deps_.store->generation();
  {
    // The lookup key in a reused per-thread buffer: no allocation per request (C++17's
    // unordered_map cannot look up by string_view). A client token is a credential: the buffer
    // is zeroed again before it is left behind.
    thread_local std::string probe;
    probe.assign(token.data(), token.size());
    std::shared_ptr<const Identity> hit;
    {
      std::shared_lock<std::shared_mutex> lock(auth_mu_);
      if (generation == auth_generation_) {
        auto it = auth_cache_.find(probe);
        if (it != auth_cache_.end()) hit = it->second;
      }
    }
    std::fill(probe.begin(), probe.end(), '\0');
    if (hit) {
      // A rotated-out token ends with its grace period, which no store write marks.
      const int64_t expires = hit->client.token_expires_unix;
      if (expires != 0 && deps_.clock->unixSeconds() >= expires) return std::shared_ptr<const Identity>();
      if (cached != nullptr) *cached = true;
      return hit;
    }
  }
  if (cached != nullptr) *cached = false;
  auto client = deps_.store->findClientByToken(token);
  if (!client.ok()) return client.error();
  if (!client->has_value() || (*client)->revoked) return std::shared_ptr<const Identity>();
  auto team = deps_.store->findTeam((*client)->team);
  if (!team.ok()) return team.error();
  if (!team->has_value()) return std::shared_ptr<const Identity>();
  auto identity = std::make_shared<const Identity>(Identity{std::move(**client), std::move(**team)});
  std::unique_lock<std::shared_mutex> lock(auth_mu_);
  if (generation != auth_generation_) {
    auth_cache_.clear();
    auth_generation_ = generation;
  }
  // Bounded: a flood of distinct valid tokens cannot exist (tokens are issued), but stay safe.
  if (auth_cache_.size() > 10000) auth_cache_.clear();
  auth_cache_.emplace(std::string(token), identity);
  return identity;
}

Result<std::shared_ptr<const ResolvedSecret>> Gateway::resolveSecret(const std::string& name, const std::string& team,
                                                                     bool* cached) {
  const uint64_t generation = deps_.store->generation();
  thread_local std::string key;  // reused: no allocation per request
  key.clear();
  key.append(name).append(1, '\0').append(team);
  {
    std::shared_lock<std::shared_mutex> lock(secrets_mu_);
    if (generation == secrets_generation_) {
      auto it = secret_cache_.find(key);
      if (it != secret_cache_.end()) {
        if (cached != nullptr) *cached = true;
        return it->second;
      }
    }
  }
  if (cached != nullptr) *cached = false;
  auto resolved = deps_.store->resolveSecret(name, team);
  if (!resolved.ok()) return resolved.error();
  if (!resolved->has_value()) return std::shared_ptr<const ResolvedSecret>();
  auto secret = std::make_shared<const ResolvedSecret>(std::move(**resolved));
  std::unique_lock<std::shared_mutex> lock(secrets_mu_);
  if (generation != secrets_generation_) {
    secret_cache_.clear();
    secrets_generation_ = generation;
  }
  if (secret_cache_.size() > 10000) secret_cache_.clear();  // names x teams: bounded in practice
  secret_cache_.emplace(key, secret);
  return secret;
}

Result<std::shared_ptr<const Gateway::Identity>> Gateway::authenticate(const HttpRequest& request,
                                                                     const UpstreamConfig& upstream,
                                                                     RequestContext& ctx) {
  const std::string_view token = presentedToken(request.headers, upstream);
  if (token.empty()) {
    const std::string_view header = tokenHeaderOf(upstream);
    if (!iequals(header, "Authorization") && !tokenInField(request.headers, "Authorization", "Bearer ").empty()) {
      // A token where this upstream does not take it (docs/auth.md): say where it goes. On BOSA,
      // Authorization: Bearer names the user to act as (kwu_<identifier>), never the client.
      std::string message = "upstream '" + upstream.name + "' takes the keyway client token as ";
      message.append(header).append(": kw_... or X-Keyway-Token: kw_..., not as Authorization: Bearer");
      if (upstream.protocol == Protocol::kBosa) {
        message += ", which on BOSA names the user to act as (Bearer kwu_<identifier>)";
      }
      message += "; nothing was sent upstream";
      return Error::make(ErrorCode::kUnauthorized, std::move(message));
    }
    return Error::make(ErrorCode::kUnauthorized,
                       "a keyway client token is required: send it as X-Keyway-Token: kw_... or in place "
                       "of the upstream's API key (see `keywayctl client add`)");
  }
  bool cached = false;
  auto identity = lookupToken(token, &cached);
  if (!identity.ok()) {
    deps_.metrics->degraded_events.fetch_add(1, std::memory_order_relaxed);
    return Error::make(ErrorCode::kUnavailable,
                       "the credential store could not be read; see keyway's log and retry");
  }
  if (*identity == nullptr) {
    return Error::make(ErrorCode::kUnauthorized,
                       "the client token is unknown or revoked; ask an operator for a new one "
                       "(`keywayctl client add`)");
  }
  const Identity& id = **identity;
  AccessRecord& record = ctx.record();
  record.client = id.client.name;
  record.team = id.team.name;
  if (const RequestTrace& trace = ctx.trace(); trace.on()) {
    trace("client authenticated", {{"client", id.client.name},
                                   {"team", id.team.name},
                                   {"token_from", headerValue(request.headers, kKeywayTokenHeader)
                                                      ? kKeywayTokenHeader
                                                      : tokenHeaderOf(upstream)},
                                   {"lookup", cached ? "cached" : "store"}});
  }
  const auto& ups = id.team.upstreams;
  if (!id.team.all_upstreams && std::find(ups.begin(), ups.end(), upstream.name) == ups.end()) {
    return Error::make(ErrorCode::kForbidden, "team '" + id.team.name + "' has no access to upstream '" +
                                                  upstream.name + "'");
  }
  return std::move(*identity);
}

void Gateway::respondPendingError(const std::shared_ptr<Pending>& p, const Error& error) {
  p->ctx->respondError(error);
}

void Gateway::forward(HttpRequest&& request, std::shared_ptr<const Config> config, const UpstreamConfig& upstream,
                      std::string rest, std::unique_ptr<RequestContext> ctx) {
  const bool bosa = upstream.protocol == Protocol::kBosa;
  if (bosa && (request.method == "GET" || request.method == "HEAD") && isBosaDiscoveryPath(targetPath(rest))) {
    // docs/auth.md: discovery needs no client token (the SDK sends none) and is served from the store.
    serveDiscovery(upstream, rest, std::move(ctx));
    return;
  }
  if (carriesClientToken(rest)) {
    // The token rule: a client token never leaves the host, and a target is forwarded byte for
    // byte, so one that holds a token is refused rather than rewritten.
    deps_.metrics->rejected_requests.fetch_add(1, std::memory_order_relaxed);
    ctx->respondError(Error::make(ErrorCode::kBadRequest,
                                  "the request target holds a keyway client token, which would be sent to the "
                                  "upstream; send the token as X-Keyway-Token (or in the upstream's credential "
                                  "header) only"));
    return;
  }
  auto identity = authenticate(request, upstream, *ctx);
  if (!identity.ok()) {
    ctx->respondError(identity.error());
    return;
  }
  const Identity& id = **identity;
  AccessRecord& record = ctx->record();

  auto p = std::make_shared<Pending>();
  p->trace = ctx->trace();
  p->config = std::move(config);
  p->upstream = &upstream;
  UpstreamRequest& out = p->out;
  out.method = request.method;
  out.url.reserve(upstream.base_url.size() + rest.size());
  out.url.append(upstream.base_url).append(rest.data(), rest.size());
  // The client's own field of the credential's name (its keyway token, for Authorization) is
  // dropped here rather than copied and removed: it never goes upstream.
  size_t withheld = 0;
  out.headers = upstreamRequestHeaders(request.headers, upstream.credential.header, &withheld);
  if (withheld != 0) deps_.metrics->client_tokens_withheld.fetch_add(withheld, std::memory_order_relaxed);
  if (!upstream.credential.secret.empty()) {
    bool cached = false;
    auto secret = resolveSecret(upstream.credential.secret, id.team.name, &cached);
    if (!secret.ok()) {
      deps_.metrics->degraded_events.fetch_add(1, std::memory_order_relaxed);
      ctx->respondError(
          Error::make(ErrorCode::kUnavailable, "the credential store could not be read; see keyway's log and retry"));
      return;
    }
    if (*secret == nullptr) {
      ctx->respondError(Error::make(ErrorCode::kUnavailable,
                                    "no secret '" + upstream.credential.secret + "' is stored for team '" +
                                        id.team.name + "' or shared; an operator must run: keywayctl secret set " +
                                        upstream.credential.secret + " [--team " + id.team.name + "]"));
      return;
    }
    const ResolvedSecret& resolved = **secret;
    std::string value;
    value.reserve(upstream.credential.prefix.size() + resolved.value.size());
    value.append(upstream.credential.prefix).append(resolved.value.view());
    out.headers.push_back(Header{upstream.credential.header, std::move(value)});
    record.credential = resolved.name;
    record.credential_scope = resolved.scope;
    if (p->trace.on()) {
      p->trace("credential injected", {{"credential", resolved.name},
                                       {"scope", resolved.scope},
                                       {"header", upstream.credential.header},
                                       {"lookup", cached ? "cached" : "store"}});
    }
    p->credential_fingerprint = resolved.fingerprint;
    if (bosa) p->api_key = std::move(*secret);
  }
  out.body = std::move(request.body);
  out.connect_timeout = upstream.connect_timeout;
  out.total_timeout = upstream.timeout;
  out.max_response_bytes = upstream.max_response_bytes;
  out.pool = upstream.name;
  out.max_connections = upstream.max_connections;
  out.allow_streaming = true;
  out.tls = upstream.tls;
  UpstreamMetrics* um = ctx->upstreamMetrics();
  if (um != nullptr && !record.credential.empty()) um->credential_uses.fetch_add(1, std::memory_order_relaxed);
  p->rest = std::move(rest);
  p->client_headers = std::move(request.headers);
  p->ctx = std::move(ctx);
  if (bosa) {
    forwardBosa(std::move(p), id);
    return;
  }
  dispatch(std::move(p));
}

CacheIdentity Gateway::cacheIdentityOf(const Pending& p) const {
  // The cache-key rule (docs/isolation.md): from the request exactly as it goes upstream.
  const AccessRecord& record = p.ctx->record();
  const IdentitySources sources{p.out.headers,
                                record.credential.empty() ? std::string_view() : std::string_view(p.upstream->credential.header),
                                record.credential,
                                record.credential_scope,
                                p.credential_fingerprint,
                                p.bosa_user};
  const std::shared_ptr<CredentialStore>& store = deps_.store;
  return cacheIdentity(sources, [&store](std::string_view v) { return store->fingerprint(v); });
}

void Gateway::relay(const std::shared_ptr<Pending>& p, std::function<void(int)> on_success) {
  UpstreamMetrics* um = p->ctx->upstreamMetrics();
  if (um != nullptr) um->cache_bypass.fetch_add(1, std::memory_order_relaxed);
  // Aliasing pointer: the observer keeps the config snapshot alive instead of copying the upstream.
  std::shared_ptr<const UpstreamConfig> upstream_ref(p->config, p->upstream);
  auto observer = std::make_shared<RelayObserver>(std::move(p->ctx), std::move(upstream_ref), deps_.events,
                                                  std::move(on_success));
  observer->setCall(startUpstream(p, std::move(p->out), observer));
}

void Gateway::dispatch(std::shared_ptr<Pending> p) {
  const Config& config = *p->config;
  const UpstreamConfig& upstream = *p->upstream;
  const std::shared_ptr<CacheStore>& cache = deps_.cache;
  if (!cache || !config.cache.enabled) {
    if (p->trace.on()) p->trace("cache", {{"result", "BYPASS"}, {"why", "the cache is off"}});
    relay(p, nullptr);
    return;
  }
  const std::string_view path = targetPath(p->rest);  // p, and its rest, outlive this call
  const std::string_view action = upstream.protocol == Protocol::kBosa ? bosaActionName(path) : std::string_view();
  const bool healthy = cache->healthy();
  const CacheRule* rule = healthy ? matchRule(config.cache, upstream.name, p->out.method, path, action) : nullptr;
  const ClientCacheDirective directive = clientDirective(p->client_headers);
  std::string canonical_body;
  bool canonical = true;
  if (rule != nullptr && !p->out.body.empty()) {
    auto canon = p->out.body.size() <= config.cache.max_key_body_bytes
                     ? canonicalJson(p->out.body)
                     : Result<std::string>(Error::make(ErrorCode::kBadRequest, "too large"));
    if (canon.ok()) {
      canonical_body = std::move(canon.value());
    } else {
      rule = nullptr;  // a body we cannot canonicalise is not worth a key
      canonical = false;
    }
  }
  if (rule != nullptr && directive != ClientCacheDirective::kNoStore) {
    dispatchCacheable(p, *rule, std::move(canonical_body), directive);
    return;
  }
  if (p->trace.on()) {
    p->trace("cache", {{"result", "BYPASS"},
                       {"why", !healthy     ? "the cache store is failing"
                               : !canonical ? "the body is not JSON or too large for a cache key"
                               : rule != nullptr ? "the client sent Cache-Control: no-store"
                                                 : "no cache rule matches"},
                       {"invalidates_on_success", invalidatesOnSuccess(p->out.method)}});
  }
  std::function<void(int)> on_success;
  if (invalidatesOnSuccess(p->out.method)) {
    // A successful write makes this identity's cached view of the resource and its collection
    // (BOSA: of the connector) stale.
    // With a shared cache, the same entries become unreachable there and on every other host.
    on_success = [cache, shared = deps_.shared, name = upstream.name, tag = identityTag(cacheIdentityOf(*p)),
                  path = std::string(path)](int) {
      if (auto prefix = bosaConnectorPrefix(path)) {
        cache->invalidatePrefix(name, tag, *prefix);
        if (shared) shared->invalidate(name, tag, {std::string(*prefix)}, true);
      } else {
        std::vector<std::string> paths;
        for (const auto& inv : invalidationPaths(path)) {
          cache->invalidate(name, tag, inv);
          paths.emplace_back(inv);
        }
        if (shared) shared->invalidate(name, tag, std::move(paths), false);
      }
    };
  }
  relay(p, std::move(on_success));
}

}  // namespace keyway::core
