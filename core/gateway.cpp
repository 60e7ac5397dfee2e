// The request pipeline: keyway's own endpoints, routing, authentication, injection, forwarding.
#include "core/gateway.hpp"

#include <algorithm>
#include <cstring>

#include "core/bosa_route.hpp"
#include "core/canonical_json.hpp"
#include "core/client_token.hpp"
#include "core/json_schema.hpp"
#include "core/errors.hpp"
#include "core/header_rules.hpp"
#include "core/target.hpp"

namespace keyway::core {

namespace {

constexpr std::string_view kTokenPrefix = "kw_";
constexpr std::string_view kKeywayTokenHeader = "X-Keyway-Token";
// Buffered responses get an exact Content-Length; past this size the body is streamed instead,
// so a large download never sits whole in memory.
constexpr size_t kStreamThreshold = 256u << 10;

double msSince(std::chrono::steady_clock::time_point start, std::chrono::steady_clock::time_point now) {
  return std::chrono::duration<double, std::milli>(now - start).count();
}

std::string_view trim(std::string_view v) {
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
  return v;
}

bool startsWithNoCase(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && iequals(s.substr(0, prefix.size()), prefix);
}

bool containsNoCase(std::string_view haystack, std::string_view needle) {
  if (needle.size() > haystack.size()) return false;
  for (size_t i = 0; i + needle.size() <= haystack.size(); ++i) {
    if (iequals(haystack.substr(i, needle.size()), needle)) return true;
  }
  return false;
}

HttpResponse jsonResponse(int status, std::string body) {
  HttpResponse r;
  r.status = status;
  r.headers.push_back({"Content-Type", "application/json"});
  r.body = std::move(body);
  return r;
}

UpstreamErrorKind errorKindFor(UpstreamFailure f) {
  switch (f) {
    case UpstreamFailure::kConnectFailed: return UpstreamErrorKind::kConnect;
    case UpstreamFailure::kTimeout: return UpstreamErrorKind::kTimeout;
    case UpstreamFailure::kSendFailed: return UpstreamErrorKind::kReset;
    case UpstreamFailure::kTls: return UpstreamErrorKind::kTls;
    case UpstreamFailure::kResponseTooLarge: return UpstreamErrorKind::kTooLarge;
    case UpstreamFailure::kProtocol:
    case UpstreamFailure::kCancelled:
    case UpstreamFailure::kNone: break;
  }
  return UpstreamErrorKind::kProtocol;
}

Error errorForFailure(const UpstreamConfig& upstream, const UpstreamOutcome& outcome) {
  const std::string who = "upstream '" + upstream.name + "'";
  switch (outcome.failure) {
    case UpstreamFailure::kConnectFailed:
      return Error::make(ErrorCode::kUpstreamUnreachable,
                         who + " could not be reached (" + outcome.message +
                             "); check its base_url and that it is up");
    case UpstreamFailure::kTimeout:
      return Error::make(ErrorCode::kUpstreamTimeout,
                         who + " did not answer in time (" + outcome.message +
                             "); retry later or raise its timeout");
    case UpstreamFailure::kTls:
      // docs/operations.md: a certificate that does not verify is said to be one, and why in general words;
      // never what the certificate holds (outcome.message does not either).
      if (isCertificateVerification(outcome.tls_problem)) {
        return Error::make(ErrorCode::kUpstreamUnreachable,
                           "TLS certificate verification failed for " + who + ": " +
                               std::string(tlsProblemText(outcome.tls_problem)) +
                               "; keyway does not talk to an upstream whose certificate does not verify");
      }
      if (outcome.tls_problem != TlsProblem::kHandshake) {
        return Error::make(ErrorCode::kUpstreamUnreachable,
                           who + " failed the TLS handshake: " + std::string(tlsProblemText(outcome.tls_problem)) +
                               " (" + outcome.message + ")");
      }
      return Error::make(ErrorCode::kUpstreamUnreachable,
                         who + " failed the TLS handshake (" + outcome.message +
                             "); check its base_url and tls settings");
    case UpstreamFailure::kResponseTooLarge:
      return Error::make(ErrorCode::kUpstreamUnreachable,
                         who + " sent a response larger than max_response_bytes");
    case UpstreamFailure::kSendFailed:
    case UpstreamFailure::kProtocol:
    case UpstreamFailure::kCancelled:
    case UpstreamFailure::kNone:
      break;
  }
  return Error::make(ErrorCode::kUpstreamUnreachable,
                     who + " failed during the exchange (" + outcome.message + "); retry later");
}

// One warn line per TLS failure (the sink rate-limits repeats of a line), so that an operator sees
// which upstream and why before a client reports its 502: with upstream name and reason only.
void warnTlsFailure(EventSink& events, const UpstreamConfig& upstream, const UpstreamOutcome& outcome) {
  if (outcome.failure != UpstreamFailure::kTls) return;
  std::string line = "upstream '" + upstream.name + "': ";
  if (isCertificateVerification(outcome.tls_problem)) {
    line += "TLS certificate verification failed: ";
    line += tlsProblemText(outcome.tls_problem);
  } else if (outcome.tls_problem != TlsProblem::kHandshake) {
    line += "TLS handshake failed: ";
    line += tlsProblemText(outcome.tls_problem);
  } else {
    line += outcome.message;
  }
  events.warn(line);
}

// docs/bosa.md: the BOSA SDK crashes on a response without Content-Type, so keyway always
// sends one (bytes of unknown type are application/octet-stream, RFC 9110 §8.3).
void ensureContentType(const UpstreamConfig& upstream, Headers& headers) {
  if (upstream.protocol == Protocol::kBosa && !headerValue(headers, "Content-Type")) {
    headers.push_back({"Content-Type", "application/octet-stream"});
  }
}

// Receives one upstream exchange and relays it to the client: buffered with an exact
// Content-Length when small, streamed (chunked) when large or text/event-stream.
class ForwardObserver final : public UpstreamObserver, public std::enable_shared_from_this<ForwardObserver> {
 public:
  ForwardObserver(std::shared_ptr<Responder> responder, std::shared_ptr<Metrics> metrics_owner,
                  UpstreamMetrics* metrics, std::shared_ptr<EventSink> events,
                  std::shared_ptr<Clock> clock, std::shared_ptr<const UpstreamConfig> upstream, AccessRecord&& record,
                  std::chrono::steady_clock::time_point start, bool head,
                  std::function<void(int)> on_success = nullptr)
      : on_success_(std::move(on_success)),
        responder_(std::move(responder)),
        metrics_owner_(std::move(metrics_owner)),
        metrics_(metrics),
        events_(std::move(events)),
        clock_(std::move(clock)),
        upstream_(std::move(upstream)),
        record_(std::move(record)),
        start_(start),
        head_(head) {}

  void setCall(std::shared_ptr<UpstreamCall> call) {
    std::lock_guard<std::mutex> lock(call_mu_);
    call_ = std::move(call);
  }

  void onHeaders(int status, std::string_view reason, Headers headers) override {
    status_ = status;
    reason_ = std::string(reason);
    headers_ = clientResponseHeaders(std::move(headers));
    ensureContentType(*upstream_, headers_);
    headers_.push_back({"X-Keyway-Cache", "BYPASS"});
    const auto ct = headerValue(headers_, "Content-Type");
    if (ct && containsNoCase(*ct, "text/event-stream") && !responder_->http10() && !head_) {
      beginStream();
    }
  }

  bool onBody(std::string_view chunk) override {
    record_.bytes_out += chunk.size();
    if (head_) return true;
    if (!streaming_) {
      body_.append(chunk.data(), chunk.size());
      if (body_.size() > kStreamThreshold && !responder_->http10()) {
        beginStream();
        std::string pending;
        pending.swap(body_);
        return writeChunk(pending);
      }
      return true;
    }
    return writeChunk(chunk);
  }

  void onComplete(const UpstreamOutcome& outcome) override {
    const auto now = clock_->monotonicNow();
    record_.upstream_ms = std::chrono::duration<double, std::milli>(outcome.elapsed).count();
    if (metrics_ != nullptr) {
      metrics_->upstream_latency.observe(outcome.elapsed);
      if (outcome.headers_received) {
        (outcome.connection_reused ? metrics_->connections_reused : metrics_->connections_new)
            .fetch_add(1, std::memory_order_relaxed);
      }
    }
    if (outcome.failure == UpstreamFailure::kNone) {
      if (on_success_ && status_ >= 200 && status_ < 300) on_success_(status_);
      if (streaming_) {
        responder_->endStream();
      } else {
        HttpResponse response;
        response.status = status_;
        response.reason = std::move(reason_);
        response.headers = std::move(headers_);
        response.body = std::move(body_);
        responder_->send(std::move(response));
      }
      record_.status = status_;
    } else {
      if (metrics_ != nullptr && outcome.failure != UpstreamFailure::kCancelled) {
        metrics_->errors[static_cast<size_t>(errorKindFor(outcome.failure))].fetch_add(
            1, std::memory_order_relaxed);
      }
      warnTlsFailure(*events_, *upstream_, outcome);
      if (streaming_) {
        // Headers already went out: the only honest signal left is an incomplete body.
        responder_->abortStream();
        record_.status = status_;
        record_.error = "upstream_aborted";
      } else {
        const Error error = errorForFailure(*upstream_, outcome);
        HttpResponse response = errorResponse(error);
        response.headers.push_back({"X-Keyway-Cache", "BYPASS"});
        record_.status = response.status;
        record_.error = errorCodeName(error.code);
        record_.bytes_out = response.body.size();
        responder_->send(std::move(response));
      }
    }
    record_.total_ms = msSince(start_, now);
    if (metrics_ != nullptr) {
      metrics_->responses_by_class[statusClassIndex(record_.status)].fetch_add(1, std::memory_order_relaxed);
      metrics_->total_latency.observe(now - start_);
    }
    metrics_owner_->in_flight.fetch_sub(1, std::memory_order_relaxed);
    events_->access(record_);
    std::lock_guard<std::mutex> lock(call_mu_);
    call_.reset();  // break the observer <-> call cycle
  }

 private:
  void beginStream() {
    streaming_ = true;
    responder_->startStream(status_, reason_, std::move(headers_));
  }

  bool writeChunk(std::string_view data) {
    bool paused = false;
    std::weak_ptr<ForwardObserver> weak = weak_from_this();
    const bool alive = responder_->writeChunk(data, &paused, [weak] {
      if (auto self = weak.lock()) self->resume();
    });
    if (!alive) {
      cancel();
      return true;
    }
    return !paused;
  }

  void resume() {
    std::lock_guard<std::mutex> lock(call_mu_);
    if (call_) call_->resume();
  }
  void cancel() {
    std::lock_guard<std::mutex> lock(call_mu_);
    if (call_) call_->cancel();
  }

  std::function<void(int)> on_success_;
  std::shared_ptr<Responder> responder_;
  std::shared_ptr<Metrics> metrics_owner_;
  UpstreamMetrics* metrics_;
  std::shared_ptr<EventSink> events_;
  std::shared_ptr<Clock> clock_;
  // Points into the request's config snapshot, which it keeps alive (no copy per request).
  std::shared_ptr<const UpstreamConfig> upstream_;
  AccessRecord record_;
  std::chrono::steady_clock::time_point start_;
  bool head_;
  bool streaming_ = false;
  int status_ = 502;
  std::string reason_;
  Headers headers_;
  std::string body_;
  std::mutex call_mu_;
  std::shared_ptr<UpstreamCall> call_;
};


int64_t unixMs(const Clock& clock) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(clock.systemNow().time_since_epoch()).count();
}

// Fetches one cacheable response for every request waiting on its key: buffers it, stores it when
// the policy allows, and answers all waiters (MISS) — or serves the stale entry when the upstream
// fails and stale-if-error allows it.
class CacheFillObserver final : public UpstreamObserver {
 public:
  CacheFillObserver(Gateway* gateway, std::shared_ptr<Metrics> metrics, UpstreamMetrics* um,
                    std::shared_ptr<EventSink> events, std::shared_ptr<Clock> clock,
                    std::shared_ptr<CacheStore> cache, std::shared_ptr<const UpstreamConfig> upstream,
                    CacheRule rule, std::string key,
                    CacheEntryMeta meta, std::optional<CachedResponse> stale, size_t max_entry_bytes,
                    bool holds_refresh_slot)
      : gateway_(gateway), metrics_(std::move(metrics)), um_(um), events_(std::move(events)),
        clock_(std::move(clock)), cache_(std::move(cache)), upstream_(std::move(upstream)),
        rule_(std::move(rule)), key_(std::move(key)), meta_(std::move(meta)), stale_(std::move(stale)),
        max_entry_bytes_(max_entry_bytes), holds_refresh_slot_(holds_refresh_slot && um != nullptr) {}
  CacheFillObserver(const CacheFillObserver&) = delete;
  CacheFillObserver& operator=(const CacheFillObserver&) = delete;
  // The upstream client drops the observer once the exchange is over, whatever its outcome: that
  // is when a background refresh gives its slot back.
  ~CacheFillObserver() override {
    if (holds_refresh_slot_) um_->background_refreshes.fetch_sub(1, std::memory_order_relaxed);
  }

  void onHeaders(int status, std::string_view reason, Headers headers) override {
    status_ = status;
    reason_ = std::string(reason);
    headers_ = clientResponseHeaders(std::move(headers));
    ensureContentType(*upstream_, headers_);
  }
  bool onBody(std::string_view chunk) override {
    body_.append(chunk.data(), chunk.size());
    return true;
  }

  void onComplete(const UpstreamOutcome& outcome) override {
    const auto now = clock_->monotonicNow();
    if (um_ != nullptr) {
      um_->upstream_latency.observe(outcome.elapsed);
      if (outcome.headers_received) {
        (outcome.connection_reused ? um_->connections_reused : um_->connections_new)
            .fetch_add(1, std::memory_order_relaxed);
      }
      if (outcome.failure != UpstreamFailure::kNone && outcome.failure != UpstreamFailure::kCancelled) {
        um_->errors[static_cast<size_t>(errorKindFor(outcome.failure))].fetch_add(1, std::memory_order_relaxed);
      }
    }
    warnTlsFailure(*events_, *upstream_, outcome);
    const bool upstream_failed = outcome.failure != UpstreamFailure::kNone;
    const bool upstream_error_status = !upstream_failed && (status_ >= 500 || status_ == 429);
    if (!upstream_failed) {
      const StoreDecision decision = storeDecision(rule_, status_, headers_);
      if (decision.store && body_.size() <= max_entry_bytes_) {
        CachedResponse entry;
        entry.status = status_;
        entry.reason = reason_;
        entry.headers = headers_;
        entry.body = body_;
        entry.stored_unix_ms = unixMs(*clock_);
        const FreshnessWindow w = freshnessWindow(entry.stored_unix_ms, decision);
        entry.fresh_until_unix_ms = w.fresh_until_unix_ms;
        entry.stale_until_unix_ms = w.stale_until_unix_ms;
        cache_->put(key_, meta_, std::move(entry));
      }
    }
    // Land the flight before answering: later requests see the stored entry or start a new fill.
    std::vector<Gateway::Waiter> waiters = gateway_->landFlight(key_);
    if ((upstream_failed || upstream_error_status) && stale_) {
      // stale-if-error: timeouts, refusals, 5xx and 429 are answered from the stale entry.
      for (auto& w : waiters) gateway_->serveCached(*stale_, "STALE", std::move(w));
      return;
    }
    HttpResponse response;
    std::string error_code;
    if (upstream_failed) {
      const Error error = errorForFailure(*upstream_, outcome);
      response = errorResponse(error);
      error_code = errorCodeName(error.code);
    } else {
      response.status = status_;
      response.reason = reason_;
      response.headers = headers_;
      response.body = std::move(body_);
    }
    response.headers.push_back({"X-Keyway-Cache", "MISS"});
    for (size_t i = 0; i < waiters.size(); ++i) {
      auto& w = waiters[i];
      w.record.cache = "MISS";
      w.record.status = response.status;
      w.record.error = error_code;
      w.record.upstream_ms = std::chrono::duration<double, std::milli>(outcome.elapsed).count();
      w.record.bytes_out = w.head ? 0 : response.body.size();
      w.record.total_ms = msSince(w.start, now);
      if (um_ != nullptr) {
        um_->responses_by_class[statusClassIndex(response.status)].fetch_add(1, std::memory_order_relaxed);
        um_->total_latency.observe(now - w.start);
        um_->cache_misses.fetch_add(1, std::memory_order_relaxed);
      }
      metrics_->in_flight.fetch_sub(1, std::memory_order_relaxed);
      // The last waiter may take the body; the others get a copy.
      w.responder->send(i + 1 == waiters.size() ? std::move(response) : response);
      events_->access(w.record);
    }
  }

 private:
  Gateway* gateway_;
  std::shared_ptr<Metrics> metrics_;
  UpstreamMetrics* um_;
  std::shared_ptr<EventSink> events_;
  std::shared_ptr<Clock> clock_;
  std::shared_ptr<CacheStore> cache_;
  // Points into the request's config snapshot, which it keeps alive (no copy per request).
  std::shared_ptr<const UpstreamConfig> upstream_;
  CacheRule rule_;
  std::string key_;
  CacheEntryMeta meta_;
  std::optional<CachedResponse> stale_;
  size_t max_entry_bytes_;
  bool holds_refresh_slot_;
  int status_ = 502;
  std::string reason_;
  Headers headers_;
  std::string body_;
};

}  // namespace

std::string_view presentedToken(const Headers& headers, const UpstreamConfig& upstream) {
  if (auto v = headerValue(headers, kKeywayTokenHeader)) return trim(*v);
  const std::string& name = upstream.credential.header.empty() ? std::string("Authorization")
                                                               : upstream.credential.header;
  const std::string_view prefix =
      upstream.credential.header.empty() ? std::string_view("Bearer ") : std::string_view(upstream.credential.prefix);
  for (const auto& h : headers) {
    if (!iequals(h.name, name)) continue;
    std::string_view v = trim(h.value);
    if (!prefix.empty()) {
      if (!startsWithNoCase(v, prefix)) continue;
      v = trim(v.substr(prefix.size()));
    }
    if (v.substr(0, kTokenPrefix.size()) == kTokenPrefix) return v;
  }
  return {};
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
  std::weak_ptr<EventSink> events = deps_.events;
  bosa_schemas_ = std::make_unique<BosaSchemaService>(deps_.schemas, deps_.upstream, deps_.clock, deps_.metrics,
                                                      [events](std::string_view m) {
                                                        if (auto e = events.lock()) e->warn(m);
                                                      });
  bosa_tokens_ = std::make_unique<BosaTokenService>(deps_.store, deps_.upstream, deps_.clock, deps_.metrics);
}

Gateway::~Gateway() {
  // Completing transfers call back into this object (landFlight) and into the BOSA services: end
  // them while everything is whole (the services hold the last references to the client).
  deps_.upstream.reset();
  bosa_tokens_.reset();
  bosa_schemas_.reset();
}

std::vector<Gateway::Waiter> Gateway::landFlight(const std::string& key) {
  std::shared_ptr<Flight> flight;
  {
    std::lock_guard<std::mutex> lock(flights_mu_);
    auto it = flights_.find(key);
    if (it == flights_.end()) return {};
    flight = std::move(it->second);
    flights_.erase(it);
  }
  return std::move(flight->waiters);
}

void Gateway::serveCached(CachedResponse entry, const char* cache_status, Waiter waiter) {
  const auto now = deps_.clock->monotonicNow();
  HttpResponse response;
  response.status = entry.status;
  response.reason = std::move(entry.reason);
  response.headers = std::move(entry.headers);
  const int64_t age_ms = unixMs(*deps_.clock) - entry.stored_unix_ms;
  response.headers.push_back({"X-Keyway-Cache", cache_status});
  response.headers.push_back({"Age", std::to_string(age_ms > 0 ? age_ms / 1000 : 0)});
  response.body = std::move(entry.body);
  UpstreamMetrics* um = deps_.metrics->upstreamByName(waiter.record.upstream);
  if (um != nullptr) {
    (std::strcmp(cache_status, "HIT") == 0 ? um->cache_hits : um->cache_stale).fetch_add(1, std::memory_order_relaxed);
    um->responses_by_class[statusClassIndex(response.status)].fetch_add(1, std::memory_order_relaxed);
    um->total_latency.observe(now - waiter.start);
  }
  waiter.record.cache = cache_status;
  waiter.record.status = response.status;
  waiter.record.bytes_out = waiter.head ? 0 : response.body.size();
  waiter.record.total_ms = msSince(waiter.start, now);
  deps_.metrics->in_flight.fetch_sub(1, std::memory_order_relaxed);
  waiter.responder->send(std::move(response));
  deps_.events->access(waiter.record);
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

void Gateway::handle(HttpRequest request, const ListenerContext& listener,
                     std::shared_ptr<Responder> responder) {
  const auto start = deps_.clock->monotonicNow();
  deps_.metrics->in_flight.fetch_add(1, std::memory_order_relaxed);
  const std::string method = request.method;
  try {
    handleInternal(request, listener, responder, start);
    return;
  } catch (const std::exception& e) {
    deps_.events->warn(std::string("internal error while handling a request: ") + e.what());
  } catch (...) {
    deps_.events->warn("internal error while handling a request");
  }
  // Last resort (STYLE: a catch in every handler that answers 500). handleInternal answers the
  // responder only at its very end, so an exception means it has not answered yet.
  AccessRecord record;
  record.method = method;
  respondError(responder, Error::make(ErrorCode::kInternal, "keyway failed to handle this request; see its log"),
               std::move(record), start);
}

void Gateway::respondLocal(const std::shared_ptr<Responder>& responder, HttpResponse response,
                           AccessRecord record, std::chrono::steady_clock::time_point start) {
  const auto now = deps_.clock->monotonicNow();
  record.status = response.status;
  record.bytes_out = response.body.size();
  record.total_ms = msSince(start, now);
  UpstreamMetrics* um = record.upstream == "-" ? nullptr : deps_.metrics->upstreamByName(record.upstream);
  if (um != nullptr) {
    um->responses_by_class[statusClassIndex(response.status)].fetch_add(1, std::memory_order_relaxed);
    um->total_latency.observe(now - start);
  } else {
    deps_.metrics->local_responses_by_class[statusClassIndex(response.status)].fetch_add(1, std::memory_order_relaxed);
  }
  if (response.status == 401 || response.status == 403) {
    deps_.metrics->auth_failures.fetch_add(1, std::memory_order_relaxed);
  }
  deps_.metrics->in_flight.fetch_sub(1, std::memory_order_relaxed);
  responder->send(std::move(response));
  deps_.events->access(record);
}

void Gateway::respondError(const std::shared_ptr<Responder>& responder, const Error& error,
                           AccessRecord record, std::chrono::steady_clock::time_point start) {
  record.error = errorCodeName(error.code);
  HttpResponse response = errorResponse(error);
  // docs/cache.md: every response on an upstream route says how the cache treated it.
  if (record.upstream != "-") response.headers.push_back({"X-Keyway-Cache", "BYPASS"});
  respondLocal(responder, std::move(response), std::move(record), start);
}

void Gateway::handleInternal(HttpRequest& request, const ListenerContext& listener,
                             const std::shared_ptr<Responder>& responder,
                             std::chrono::steady_clock::time_point start) {
  const std::shared_ptr<const Config> config = this->config();
  AccessRecord record;
  record.method = request.method;
  record.path = std::string(targetPath(request.target));
  record.bytes_in = request.body.size();
  record.listener = listener.main ? "main" : "compat";
  record.peer = listener.peer;
  record.client = "-";
  record.team = "-";
  record.upstream = "-";

  if (draining()) {
    respondError(responder, Error::make(ErrorCode::kUnavailable,
                                        "keyway is shutting down; retry on a new connection"),
                 std::move(record), start);
    return;
  }

  // CONNECT would turn a pooled upstream connection into a tunnel, and a TRACE response reflects
  // the request, injected credentials included (RFC 9110 §9.3.6, §9.3.8): neither is forwarded.
  if (request.method == "CONNECT" || request.method == "TRACE") {
    deps_.metrics->rejected_requests.fetch_add(1, std::memory_order_relaxed);
    respondError(responder, Error::make(ErrorCode::kBadRequest,
                                        request.method + " is not supported: keyway forwards API calls, "
                                        "it is not a tunnel and never reflects requests"),
                 std::move(record), start);
    return;
  }

  if (auto st = validateTarget(request.target); !st.ok()) {
    deps_.metrics->rejected_requests.fetch_add(1, std::memory_order_relaxed);
    respondError(responder, st.error(), std::move(record), start);
    return;
  }

  const UpstreamConfig* upstream = nullptr;
  std::string rest;
  if (listener.main) {
    const std::string_view path = targetPath(request.target);
    if (path.substr(0, 9) == "/_keyway/") {
      HttpResponse response;
      if (request.method != "GET" && request.method != "HEAD") {
        respondError(responder, Error::make(ErrorCode::kBadRequest, "keyway's own endpoints answer GET only"),
                     std::move(record), start);
        return;
      }
      if (path == "/_keyway/health") {
        response = jsonResponse(200, "{\"status\":\"ok\"}");
      } else if (path == "/_keyway/ready") {
        const bool ready = deps_.ready();
        response = ready ? jsonResponse(200, "{\"status\":\"ready\"}")
                         : errorResponse(Error::make(ErrorCode::kUnavailable, "keyway is not ready yet"));
      } else if (path == "/_keyway/metrics") {
        response.status = 200;
        response.headers.push_back({"Content-Type", "text/plain; version=0.0.4; charset=utf-8"});
        response.body = deps_.metrics->render();
      } else {
        respondError(responder, Error::make(ErrorCode::kNotFound,
                                            "no such keyway endpoint; use /_keyway/health, "
                                            "/_keyway/ready or /_keyway/metrics"),
                     std::move(record), start);
        return;
      }
      respondLocal(responder, std::move(response), std::move(record), start);
      return;
    }
    auto split = splitMount(request.target);
    if (split) upstream = config->findUpstream(split->mount);
    if (upstream == nullptr) {
      std::string names;
      for (const auto& u : config->upstreams) names += (names.empty() ? "/" : ", /") + u.name + "/";
      respondError(responder, Error::make(ErrorCode::kNotFound,
                                          "no upstream is mounted at this path; configured mounts: " + names),
                   std::move(record), start);
      return;
    }
    rest = std::move(split->rest);
  } else {
    upstream = config->findUpstream(listener.compat_upstream);
    if (upstream == nullptr) {  // removed by a reload while this listener still runs
      respondError(responder, Error::make(ErrorCode::kNotFound,
                                          "the upstream served on this port is no longer configured"),
                   std::move(record), start);
      return;
    }
    rest = request.target;
  }
  record.upstream = upstream->name;
  record.path = std::string(targetPath(rest));

  if (auto st = validateRestOfValidTarget(rest); !st.ok()) {  // request.target passed validateTarget
    deps_.metrics->rejected_requests.fetch_add(1, std::memory_order_relaxed);
    respondError(responder, st.error(), std::move(record), start);
    return;
  }
  forward(std::move(request), config, *upstream, std::move(rest), std::move(record), responder, start);
}

Result<std::shared_ptr<const Gateway::Identity>> Gateway::lookupToken(std::string_view token) {
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
    if (hit) return hit;
  }
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

Result<std::shared_ptr<const ResolvedSecret>> Gateway::resolveSecret(const std::string& name, const std::string& team) {
  const uint64_t generation = deps_.store->generation();
  thread_local std::string key;  // reused: no allocation per request
  key.clear();
  key.append(name).append(1, '\0').append(team);
  {
    std::shared_lock<std::shared_mutex> lock(secrets_mu_);
    if (generation == secrets_generation_) {
      auto it = secret_cache_.find(key);
      if (it != secret_cache_.end()) return it->second;
    }
  }
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

Result<std::shared_ptr<const Gateway::Identity>> Gateway::authenticate(const HttpRequest& request, const UpstreamConfig& upstream) {
  const std::string_view token = presentedToken(request.headers, upstream);
  if (token.empty()) {
    return Error::make(ErrorCode::kUnauthorized,
                       "a keyway client token is required: send it as X-Keyway-Token: kw_... or in place "
                       "of the upstream's API key (see `keywayctl client add`)");
  }
  auto identity = lookupToken(token);
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
  const auto& ups = id.team.upstreams;
  if (!id.team.all_upstreams && std::find(ups.begin(), ups.end(), upstream.name) == ups.end()) {
    return Error::make(ErrorCode::kForbidden, "team '" + id.team.name + "' has no access to upstream '" +
                                                  upstream.name + "'");
  }
  return std::move(*identity);
}

void Gateway::respondPendingError(const std::shared_ptr<Pending>& p, const Error& error) {
  respondError(p->responder, error, std::move(p->record), p->start);
}

void Gateway::forward(HttpRequest&& request, std::shared_ptr<const Config> config, const UpstreamConfig& upstream,
                      std::string rest, AccessRecord&& record, const std::shared_ptr<Responder>& responder,
                      std::chrono::steady_clock::time_point start) {
  const bool bosa = upstream.protocol == Protocol::kBosa;
  if (bosa && (request.method == "GET" || request.method == "HEAD") && isBosaDiscoveryPath(targetPath(rest))) {
    // docs/auth.md: discovery needs no client token (the SDK sends none) and is served from the store.
    serveDiscovery(upstream, rest, std::move(record), responder, start);
    return;
  }

  if (carriesClientToken(rest)) {
    // The token rule: a client token never leaves the host, and a target is forwarded byte for
    // byte, so one that holds a token is refused rather than rewritten.
    deps_.metrics->rejected_requests.fetch_add(1, std::memory_order_relaxed);
    respondError(responder, Error::make(ErrorCode::kBadRequest,
                                        "the request target holds a keyway client token, which would be sent to the "
                                        "upstream; send the token as X-Keyway-Token (or in the upstream's credential "
                                        "header) only"),
                 std::move(record), start);
    return;
  }
  auto identity = authenticate(request, upstream);
  if (!identity.ok()) {
    respondError(responder, identity.error(), std::move(record), start);
    return;
  }
  const Identity& id = **identity;
  record.client = id.client.name;
  record.team = id.team.name;

  auto p = std::make_shared<Pending>();
  p->config = std::move(config);
  p->upstream = &upstream;
  p->responder = responder;
  p->start = start;
  p->head = request.method == "HEAD";
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
    auto secret = resolveSecret(upstream.credential.secret, id.team.name);
    if (!secret.ok()) {
      deps_.metrics->degraded_events.fetch_add(1, std::memory_order_relaxed);
      respondError(responder, Error::make(ErrorCode::kUnavailable,
                                          "the credential store could not be read; see keyway's log and retry"),
                   std::move(record), start);
      return;
    }
    if (*secret == nullptr) {
      respondError(responder,
                   Error::make(ErrorCode::kUnavailable,
                               "no secret '" + upstream.credential.secret + "' is stored for team '" +
                                   id.team.name + "' or shared; an operator must run: keywayctl secret set " +
                                   upstream.credential.secret + " [--team " + id.team.name + "]"),
                   std::move(record), start);
      return;
    }
    const ResolvedSecret& resolved = **secret;
    std::string value;
    value.reserve(upstream.credential.prefix.size() + resolved.value.size());
    value.append(upstream.credential.prefix).append(resolved.value.view());
    out.headers.push_back(Header{upstream.credential.header, std::move(value)});
    record.credential = resolved.name;
    record.credential_scope = resolved.scope;
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
  UpstreamMetrics* um = deps_.metrics->upstreamByName(upstream.name);
  if (um != nullptr && !record.credential.empty()) um->credential_uses.fetch_add(1, std::memory_order_relaxed);
  p->rest = std::move(rest);
  p->record = std::move(record);
  p->client_headers = std::move(request.headers);

  if (!bosa) {
    dispatch(std::move(p));
    return;
  }
  // The validation rule (docs/isolation.md): decided once on how BOSA's server would route the
  // path, so no spelling of an action path escapes validation.
  p->bosa_route = classifyBosaPath(targetPath(p->rest));
  const BosaRoute& route = p->bosa_route;
  const bool action_call = route.kind == BosaRouteKind::kAction && out.method == "POST";
  if (action_call && !route.canonical) {
    deps_.metrics->rejected_requests.fetch_add(1, std::memory_order_relaxed);
    respondPendingError(p, Error::make(ErrorCode::kBadRequest,
                                       "this path reaches BOSA action '" + route.connector + "/" + route.action +
                                           "' only after decoding or slash clean-up, and keyway forwards actions "
                                           "only as validated; send POST /connectors/" + route.connector + "/" +
                                           route.action + " (no trailing slash, empty segment or percent-escape)"));
    return;
  }
  // docs/auth.md: act as a BOSA user named by X-Keyway-User (wins) or Authorization: Bearer kwu_<id>.
  bool wants_user = false;
  std::string user;
  if (auto v = headerValue(p->client_headers, "X-Keyway-User")) {
    wants_user = true;
    user = std::string(trim(*v));
  }
  std::string handle;  // from the Authorization fields; every one of them is looked at
  for (const auto& h : p->client_headers) {
    if (!iequals(h.name, "Authorization")) continue;
    std::string_view v = trim(h.value);
    if (!startsWithNoCase(v, "Bearer ")) continue;
    v = trim(v.substr(7));
    if (v.substr(0, 4) != "kwu_") continue;
    if (!handle.empty() && handle != v.substr(4)) {
      respondPendingError(p, Error::make(ErrorCode::kBadRequest,
                                         "the request names two different BOSA users in Authorization; send one "
                                         "Authorization: Bearer kwu_<user> (or X-Keyway-User)"));
      return;
    }
    handle = std::string(v.substr(4));
    wants_user = true;
  }
  if (user.empty()) user = handle;
  if (wants_user) {
    // The handle is keyway's, never the upstream's: every Authorization field goes.
    removeHeader(out.headers, "Authorization");
    if (!bosaRouteTakesUserToken(route, out.method)) {
      deps_.metrics->rejected_requests.fetch_add(1, std::memory_order_relaxed);
      respondPendingError(p, Error::make(ErrorCode::kBadRequest,
                                         "keyway sends a BOSA user token only with action calls (POST "
                                         "/connectors/{app}/{action}), integration routes (/connectors/{app}/"
                                         "integrations...) and user routes (/users/me, /auth/tokens), spelt exactly "
                                         "so; this request asks for user '" + user + "' on another path"));
      return;
    }
    const Error refused = Error::make(ErrorCode::kForbidden, "BOSA user '" + user + "' is unknown or not granted to team '" +
                                                                 id.team.name +
                                                                 "'; an operator can run: keywayctl bosa-user grant " +
                                                                 user + " --team " + id.team.name);
    auto found = user.empty() ? Result<std::optional<BosaUserRecord>>(std::optional<BosaUserRecord>())
                              : deps_.store->findBosaUser(user);
    if (!found.ok()) {
      respondPendingError(p, Error::make(ErrorCode::kUnavailable,
                                         "the credential store could not be read; see keyway's log and retry"));
      return;
    }
    const auto& teams = found->has_value() ? (*found)->teams : std::vector<std::string>();
    if (!found->has_value() || std::find(teams.begin(), teams.end(), id.team.name) == teams.end()) {
      deps_.metrics->auth_failures.fetch_add(1, std::memory_order_relaxed);
      respondPendingError(p, refused);
      return;
    }
    if (!p->api_key) {
      respondPendingError(p, Error::make(ErrorCode::kUnavailable,
                                         "upstream '" + upstream.name + "' injects no client key, so no BOSA user "
                                         "token can be minted; configure its credential.secret"));
      return;
    }
    p->bosa_user = std::move(user);
  }
  if (action_call) {
    bosaValidate(std::move(p));
    return;
  }
  bosaUserToken(std::move(p));
}

void Gateway::serveDiscovery(const UpstreamConfig& upstream, const std::string& rest, AccessRecord record,
                             const std::shared_ptr<Responder>& responder, std::chrono::steady_clock::time_point start) {
  const std::string path(targetPath(rest));
  std::vector<std::string> modules = path == "/connectors/names" ? std::vector<std::string>()
                                                                  : bosaModulesQuery(targetQuery(rest));
  auto config = this->config();  // keeps `upstream` alive while a fetch runs
  bosa_schemas_->get(upstream, modules,
                     [this, config, path, modules, record = std::move(record), responder,
                      start](Result<std::shared_ptr<const BosaSnapshot>> snap) mutable {
                       if (!snap.ok()) {
                         respondError(responder, snap.error(), std::move(record), start);
                         return;
                       }
                       record.cache = "HIT";
                       respondLocal(responder, bosaDiscoveryResponse(**snap, path, modules, unixMs(*deps_.clock)),
                                    std::move(record), start);
                     });
}

void Gateway::bosaValidate(std::shared_ptr<Pending> p) {
  // A canonical action path: its spelling is the route's (classifyBosaPath).
  const std::string path = p->bosa_route.path;
  // The connector is wanted, so a new one triggers a refresh.
  std::vector<std::string> want{p->bosa_route.connector};
  const UpstreamConfig& upstream = *p->upstream;
  bosa_schemas_->get(upstream, want, [this, p, path, connector = want[0]](
                                         Result<std::shared_ptr<const BosaSnapshot>> snap) mutable {
    if (!snap.ok()) {
      respondPendingError(p, snap.error());
      return;
    }
    const BosaAction* action = (*snap)->actionForPath(path);
    if (action == nullptr) {
      std::string message;
      const auto names = (*snap)->catalog->actionNames(connector);
      if ((*snap)->catalog->connector(connector) == nullptr) {
        std::string all;
        for (const auto& c : (*snap)->catalog->connectorNames()) all += (all.empty() ? "" : ", ") + c;
        message = "BOSA has no connector '" + connector + "'; available connectors: " + (all.empty() ? "none" : all);
      } else {
        std::string list;
        for (const auto& n : names) list += (list.empty() ? "" : ", ") + n;
        message = "BOSA connector '" + connector + "' has no action '" +
                  std::string(path.substr(path.rfind('/') + 1)) + "'; available actions: " +
                  (list.empty() ? "none" : list);
      }
      respondPendingError(p, Error::make(ErrorCode::kNotFound, message));
      return;
    }
    p->action = action->name;
    const auto content_type = headerValue(p->client_headers, "Content-Type");
    const bool form = content_type && (containsNoCase(*content_type, "multipart/form-data") ||
                                       containsNoCase(*content_type, "application/x-www-form-urlencoded"));
    if (!form) {
      // docs/bosa.md: the body is checked against the action's schema before anything leaves the host.
      rapidjson::Document doc;
      const std::string_view body = p->out.body.empty() ? std::string_view("{}") : std::string_view(p->out.body);
      UpstreamMetrics* um = deps_.metrics->upstreamByName(p->upstream->name);
      if (auto st = parseJsonText(body, &doc); !st.ok()) {
        if (um != nullptr) um->validation_failures.fetch_add(1, std::memory_order_relaxed);
        respondPendingError(p, Error::make(ErrorCode::kBadRequest, "the body of BOSA action '" + connector + "/" +
                                                                       action->name + "' is " + st.error().message +
                                                                       "; send a JSON object of its parameters"));
        return;
      }
      std::vector<ErrorDetail> violations = validate(*action->schema, doc);
      if (!violations.empty()) {
        if (um != nullptr) um->validation_failures.fetch_add(1, std::memory_order_relaxed);
        Error error = Error::make(ErrorCode::kInvalidParameters,
                                  std::to_string(violations.size()) + " parameter problem(s) for BOSA action '" +
                                      connector + "/" + action->name + "'; see details (nothing was sent upstream)");
        error.details = std::move(violations);
        respondPendingError(p, error);
        return;
      }
    }
    bosaUserToken(std::move(p));
  });
}

void Gateway::bosaUserToken(std::shared_ptr<Pending> p) {
  if (p->bosa_user.empty()) {
    dispatch(std::move(p));
    return;
  }
  const UpstreamConfig& upstream = *p->upstream;
  bosa_tokens_->acquire(upstream, p->bosa_user, *p->api_key, {}, [this, p](Result<SecretString> token) mutable {
    if (!token.ok()) {
      if (token.error().code == ErrorCode::kForbidden) deps_.metrics->auth_failures.fetch_add(1, std::memory_order_relaxed);
      respondPendingError(p, token.error());
      return;
    }
    p->user_token_header = "Bearer ";
    p->user_token_header.append(token->view());
    p->out.headers.push_back({"Authorization", p->user_token_header});
    dispatch(std::move(p));
  });
}

std::shared_ptr<UpstreamCall> Gateway::startUpstream(const std::shared_ptr<Pending>& p, UpstreamRequest out,
                                                     std::shared_ptr<UpstreamObserver> observer) {
  const UpstreamConfig& upstream = *p->upstream;
  if (upstream.protocol != Protocol::kBosa || !deps_.scheduler || (p->action.empty() && p->bosa_user.empty())) {
    return deps_.upstream->start(std::move(out), std::move(observer));
  }
  RetryPolicy policy = retryPolicyFor(upstream.bosa.retry, p->action);
  // Only action calls are retried (docs/bosa.md); users, tokens and integrations calls go once.
  if (p->action.empty()) policy.max_attempts = 1;
  RetryHooks hooks;
  UpstreamMetrics* um = deps_.metrics->upstreamByName(upstream.name);
  hooks.on_retry = [um] {
    if (um != nullptr) um->retries.fetch_add(1, std::memory_order_relaxed);
  };
  if (!p->bosa_user.empty()) {
    // docs/auth.md: a 401 to a minted token gets one fresh token and one more try.
    hooks.on_unauthorized = [this, p](UpstreamRequest& request, std::function<void(bool)> done) {
      const std::string rejected = p->user_token_header.substr(7);
      UpstreamRequest* target = &request;
      bosa_tokens_->acquire(*p->upstream, p->bosa_user, *p->api_key, rejected,
                            [p, target, done = std::move(done)](Result<SecretString> token) {
                              if (!token.ok()) {
                                done(false);
                                return;
                              }
                              p->user_token_header = "Bearer ";
                              p->user_token_header.append(token->view());
                              removeHeader(target->headers, "Authorization");
                              target->headers.push_back({"Authorization", p->user_token_header});
                              done(true);
                            });
    };
  }
  return startWithRetries(deps_.upstream, deps_.scheduler, deps_.clock, std::move(out), policy, std::move(hooks),
                          std::move(observer));
}

void Gateway::dispatch(std::shared_ptr<Pending> p) {
  const Config& config = *p->config;
  const UpstreamConfig& upstream = *p->upstream;
  UpstreamRequest& out = p->out;
  const std::shared_ptr<Responder>& responder = p->responder;
  const auto start = p->start;
  const bool head = p->head;
  UpstreamMetrics* um = deps_.metrics->upstreamByName(upstream.name);

  // --- response cache (docs/cache.md) ---
  // Forwards without the cache; `on_success` runs after a 2xx (write invalidation).
  auto bypass = [&](std::function<void(int)> on_success) {
    if (um != nullptr) um->cache_bypass.fetch_add(1, std::memory_order_relaxed);
    // Aliasing pointer: the observer keeps the config snapshot alive instead of copying the upstream.
    std::shared_ptr<const UpstreamConfig> upstream_ref(p->config, p->upstream);
    auto observer = std::make_shared<ForwardObserver>(responder, deps_.metrics, um, deps_.events, deps_.clock,
                                                      std::move(upstream_ref), std::move(p->record), start, head,
                                                      std::move(on_success));
    observer->setCall(startUpstream(p, std::move(out), observer));
  };
  const std::shared_ptr<CacheStore>& cache = deps_.cache;
  if (!cache || !config.cache.enabled) {
    bypass(nullptr);
    return;
  }
  const std::string_view path = targetPath(p->rest);  // p, and its rest, outlive this call
  const std::string_view query = targetQuery(p->rest);
  // Built only when a key or an invalidation needs it: most forwarded requests need neither.
  // The cache-key rule (docs/isolation.md): from the request exactly as it goes upstream.
  auto makeCacheIdentity = [&p, &out, &upstream, this] {
    const AccessRecord& record = p->record;
    const IdentitySources sources{out.headers,
                                  record.credential.empty() ? std::string_view() : std::string_view(upstream.credential.header),
                                  record.credential,
                                  record.credential_scope,
                                  p->credential_fingerprint,
                                  p->bosa_user};
    const std::shared_ptr<CredentialStore>& store = deps_.store;
    return cacheIdentity(sources, [&store](std::string_view v) { return store->fingerprint(v); });
  };
  const std::string_view action = upstream.protocol == Protocol::kBosa ? bosaActionName(path) : std::string_view();
  const CacheRule* rule = cache->healthy() ? matchRule(config.cache, upstream.name, out.method, path, action) : nullptr;
  const ClientCacheDirective directive = clientDirective(p->client_headers);
  std::string canonical_body;
  if (rule != nullptr && !out.body.empty()) {
    auto canon = out.body.size() <= config.cache.max_key_body_bytes ? canonicalJson(out.body)
                                                                     : Result<std::string>(Error::make(ErrorCode::kBadRequest, "too large"));
    if (canon.ok()) {
      canonical_body = std::move(canon.value());
    } else {
      rule = nullptr;  // a body we cannot canonicalise is not worth a key
    }
  }
  if (rule == nullptr || directive == ClientCacheDirective::kNoStore) {
    std::function<void(int)> on_success;
    if (invalidatesOnSuccess(out.method)) {
      // A successful write makes this identity's cached view of the resource and its collection
      // (BOSA: of the connector) stale.
      on_success = [cache, name = upstream.name, tag = identityTag(makeCacheIdentity()), path = std::string(path)](int) {
        if (auto prefix = bosaConnectorPrefix(path)) {
          cache->invalidatePrefix(name, tag, *prefix);
        } else {
          for (const auto& inv : invalidationPaths(path)) cache->invalidate(name, tag, inv);
        }
      };
    }
    bypass(std::move(on_success));
    return;
  }

  const CacheIdentity cache_id = makeCacheIdentity();  // before the record moves into the waiter
  std::string key = cacheKey(upstream.name, out.method, path, query, canonical_body, cache_id);
  Waiter waiter{responder, std::move(p->record), start, head};
  std::optional<CachedResponse> stale;
  bool refresh_in_background = false;
  if (directive == ClientCacheDirective::kNormal) {
    if (auto entry = cache->get(key)) {
      const auto freshness = cacheFreshness(unixMs(*deps_.clock), entry->fresh_until_unix_ms,
                                            entry->stale_until_unix_ms, rule->stale_while_revalidate,
                                            rule->stale_if_error);
      if (freshness == CacheFreshness::kFresh) {
        serveCached(std::move(*entry), "HIT", std::move(waiter));
        return;
      }
      if (freshness == CacheFreshness::kStale) {
        serveCached(*entry, "STALE", std::move(waiter));
        refresh_in_background = true;
      }
      if (freshness != CacheFreshness::kExpired) stale = std::move(entry);
    }
  }
  {
    std::lock_guard<std::mutex> lock(flights_mu_);
    auto it = flights_.find(key);
    if (it != flights_.end()) {
      // Another request is already fetching this key: wait for its response (exactly one
      // upstream request per key). A background refresh needs nobody to wait.
      if (!refresh_in_background) {
        it->second->waiters.push_back(std::move(waiter));
        if (um != nullptr) um->coalesced_waits.fetch_add(1, std::memory_order_relaxed);
      }
      return;
    }
    if (refresh_in_background && um != nullptr) {
      // Bounded per upstream: a refresh beyond the bound is not started (the entry stays stale and
      // the next stale hit tries again), so an expiry wave cannot burst at the upstream.
      const auto bound = static_cast<int64_t>(config.cache.max_background_refreshes);
      if (um->background_refreshes.fetch_add(1, std::memory_order_relaxed) >= bound) {
        um->background_refreshes.fetch_sub(1, std::memory_order_relaxed);
        um->background_refreshes_deferred.fetch_add(1, std::memory_order_relaxed);
        return;
      }
    }
    auto flight = std::make_shared<Flight>();
    if (!refresh_in_background) flight->waiters.push_back(std::move(waiter));
    flights_.emplace(key, std::move(flight));
  }
  // Cached bodies are stored identity-encoded: ask the upstream for exactly that.
  removeHeader(out.headers, "Accept-Encoding");
  CacheEntryMeta meta{upstream.name, std::string(path), identityTag(cache_id)};
  std::shared_ptr<const UpstreamConfig> upstream_ref(p->config, p->upstream);
  auto observer = std::make_shared<CacheFillObserver>(this, deps_.metrics, um, deps_.events, deps_.clock, cache,
                                                      std::move(upstream_ref), *rule, key, std::move(meta), std::move(stale),
                                                      config.cache.max_entry_bytes, refresh_in_background);
  startUpstream(p, std::move(out), observer);
}

}  // namespace keyway::core
