// The gateway's cache path (docs/cache.md): hits and stale hits answered from the store, and one
// upstream fill for all concurrent misses of a key, stored when the policy allows.
#include <cstring>

#include "core/gateway.hpp"
#include "core/header_rules.hpp"
#include "core/target.hpp"
#include "core/upstream_relay.hpp"

namespace keyway::core {

namespace {

int64_t unixMs(const Clock& clock) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(clock.systemNow().time_since_epoch()).count();
}

// What a cache key is made of, for a debug line: names and which views and credentials count,
// never their values (a query, a body, a connection id or a fingerprint stays out).
std::string describeKey(const AccessRecord& record, const CacheIdentity& id) {
  std::string out;
  if (!record.credential.empty()) out.append("credential ").append(record.credential).append("@").append(record.credential_scope);
  const auto add = [&out](std::string_view part) { out.append(out.empty() ? "" : ", ").append(part); };
  if (!id.bosa_user.empty()) add("user " + id.bosa_user);
  if (!id.connection_id.empty()) add("BU-Connection-Id");
  if (!id.bosa_integration.empty()) add("X-Bosa-Integration");
  if (!id.include_raw.empty()) add("BU-Include-Raw");
  if (!id.passthrough.empty()) add("a passed-through credential (keyed hash)");
  return out.empty() ? "no identity" : out;
}

// How often a miss looks the cache up again when fills of its stripe keep landing meanwhile;
// after that it fetches (at worst one extra upstream request, never a wrong answer).
constexpr int kMaxCacheLookups = 3;

const char* freshnessName(CacheFreshness f) {
  switch (f) {
    case CacheFreshness::kFresh: return "fresh";
    case CacheFreshness::kStale: return "stale";
    case CacheFreshness::kStaleIfError: return "stale-if-error only";
    case CacheFreshness::kExpired: break;
  }
  return "expired";
}

// Fetches one cacheable response for every request waiting on its key: buffers it, stores it when
// the policy allows, and answers all waiters (MISS), or serves the stale entry when the upstream
// fails and stale-if-error allows it.
class CacheFillObserver final : public UpstreamObserver {
 public:
  CacheFillObserver(Gateway* gateway, std::shared_ptr<Metrics> metrics, UpstreamMetrics* um,
                    std::shared_ptr<EventSink> events,
                    std::shared_ptr<Clock> clock, std::shared_ptr<CacheStore> cache,
                    std::shared_ptr<const UpstreamConfig> upstream, CacheRule rule, std::string key, CacheEntryMeta meta,
                    std::optional<CachedResponse> stale, size_t max_entry_bytes, bool holds_refresh_slot,
                    RequestTrace trace, std::shared_ptr<SharedCache> shared, std::string ticket)
      : gateway_(gateway), metrics_(std::move(metrics)), um_(um), events_(std::move(events)), clock_(std::move(clock)), cache_(std::move(cache)),
        upstream_(std::move(upstream)), rule_(std::move(rule)), key_(std::move(key)), meta_(std::move(meta)),
        stale_(std::move(stale)), max_entry_bytes_(max_entry_bytes),
        holds_refresh_slot_(holds_refresh_slot && um != nullptr), trace_(std::move(trace)),
        shared_(std::move(shared)), ticket_(std::move(ticket)) {}
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
    headers_ = relayedResponseHeaders(*upstream_, std::move(headers));
  }
  bool onBody(std::string_view chunk) override {
    body_.append(chunk.data(), chunk.size());
    return true;
  }

  void onComplete(const UpstreamOutcome& outcome) override {
    recordUpstreamOutcome(um_, *events_, *upstream_, outcome, status_);
    if (trace_.on()) traceUpstreamOutcome(trace_, *upstream_, status_, outcome);
    const bool upstream_failed = outcome.failure != UpstreamFailure::kNone;
    const bool upstream_error_status = !upstream_failed && (status_ >= 500 || status_ == 429);
    const char* stored = upstream_failed ? "no: the exchange failed" : store();
    if (shared_) {
      // The hosts waiting on this fill's lock find the entry, or see the lock go and fetch.
      if (shared_entry_) {
        shared_->store(key_, ticket_, *shared_entry_);
      } else {
        shared_->release(key_, ticket_);
      }
    }
    // Land the flight before answering: later requests see the stored entry or start a new fill.
    std::vector<std::unique_ptr<RequestContext>> waiters = gateway_->landFlight(key_);
    if (trace_.on()) trace_("cache fill", {{"stored", stored}, {"waiters", waiters.size()}});
    if ((upstream_failed || upstream_error_status) && stale_) {
      // stale-if-error: timeouts, refusals, 5xx and 429 are answered from the stale entry.
      if (trace_.on()) trace_("cache", {{"result", "STALE"}, {"why", "stale-if-error: the upstream failed"}});
      for (auto& w : waiters) gateway_->serveCached(*stale_, "STALE", std::move(w));
      return;
    }
    HttpResponse response;
    std::string error_code;
    std::string cause;
    if (upstream_failed) {
      Error error = errorForFailure(*upstream_, outcome);
      response = errorResponse(error);
      error_code = errorCodeName(error.code);
      cause = std::move(error.message);
    } else {
      response.status = status_;
      response.reason = reason_;
      response.headers = headers_;
      response.body = std::move(body_);
    }
    response.headers.push_back({"X-Keyway-Cache", "MISS"});
    const double upstream_ms = std::chrono::duration<double, std::milli>(outcome.elapsed).count();
    for (size_t i = 0; i < waiters.size(); ++i) {
      RequestContext& w = *waiters[i];
      w.record().error = error_code;
      w.record().cause = cause;
      w.record().upstream_ms = upstream_ms;
      // The last waiter may take the body; the others get a copy.
      w.respond(i + 1 == waiters.size() ? std::move(response) : response, "MISS");
    }
  }

 private:
  // Stores the response when the policy allows; says whether it did, and why not, for the debug line.
  const char* store() {
    const StoreDecision decision = storeDecision(rule_, status_, headers_);
    if (!decision.store) return status_ < 200 || status_ > 299 ? "no: not a 2xx" : "no: the upstream's Cache-Control";
    if (body_.size() > max_entry_bytes_) return "no: larger than cache.max_entry_bytes";
    CachedResponse entry;
    entry.status = status_;
    entry.reason = reason_;
    entry.headers = headers_;
    entry.body = body_;
    entry.stored_unix_ms = unixMs(*clock_);
    const FreshnessWindow w = freshnessWindow(entry.stored_unix_ms, decision);
    entry.fresh_until_unix_ms = w.fresh_until_unix_ms;
    entry.stale_until_unix_ms = w.stale_until_unix_ms;
    if (shared_) shared_entry_ = entry;
    cache_->put(key_, meta_, std::move(entry));
    return "yes";
  }

  Gateway* gateway_;
  // Keeps um_ valid: the upstream client may drop this observer after the gateway's owner let
  // go of the metrics (a pending refresh at shutdown), and the destructor still counts in it.
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
  RequestTrace trace_;  // of the request that started the fill
  // Set when this fill follows a shared-cache lookup: the entry goes there too.
  std::shared_ptr<SharedCache> shared_;
  std::string ticket_;
  std::optional<CachedResponse> shared_entry_;
  int status_ = 502;
  std::string reason_;
  Headers headers_;
  std::string body_;
};

}  // namespace

void Gateway::dispatchCacheable(const std::shared_ptr<Pending>& p, const CacheRule& rule, std::string canonical_body,
                                ClientCacheDirective directive) {
  const Config& config = *p->config;
  const UpstreamConfig& upstream = *p->upstream;
  const std::shared_ptr<CacheStore>& cache = deps_.cache;
  UpstreamMetrics* um = p->ctx->upstreamMetrics();
  const std::string_view path = targetPath(p->rest);
  const std::string_view query = targetQuery(p->rest);
  const CacheIdentity cache_id = cacheIdentityOf(*p);
  std::string key = cacheKey(upstream.name, p->out.method, path, query, canonical_body, cache_id);
  if (p->trace.on()) {
    p->trace("cache key", {{"rule", rule.action.empty() ? rule.path : rule.action},
                           {"ttl_s", rule.ttl.count()},
                           {"identity", describeKey(p->ctx->record(), cache_id)}});
  }
  std::unique_ptr<RequestContext> waiter = std::move(p->ctx);
  std::optional<CachedResponse> stale;
  bool refresh_in_background = false;
  const char* no_fill = nullptr;  // why this request starts no fill (for the debug line, written unlocked)
  const size_t stripe = landedStripe(key);
  for (int lookup = 1;; ++lookup) {
    const uint64_t landed = landed_[stripe].load(std::memory_order_acquire);
    if (directive != ClientCacheDirective::kNormal) {
      if (p->trace.on()) p->trace("cache lookup", {{"result", "skipped: the client sent Cache-Control: no-cache"}});
    } else {
      auto entry = cache->get(key);
      if (!entry && p->trace.on()) p->trace("cache lookup", {{"result", "miss"}});
      if (entry) {
        const auto freshness = cacheFreshness(unixMs(*deps_.clock), entry->fresh_until_unix_ms,
                                              entry->stale_until_unix_ms, rule.stale_while_revalidate,
                                              rule.stale_if_error);
        if (p->trace.on()) p->trace("cache lookup", {{"result", freshnessName(freshness)}});
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
    std::lock_guard<std::mutex> lock(flights_mu_);
    auto it = flights_.find(key);
    // A fill of this stripe landed between the lookup and here, and none runs now: the lookup
    // may predate the entry that fill stored. A stale hit already answered needs no refresh then
    // (at worst the next stale hit starts one); a miss looks again rather than fetch twice.
    const bool lookup_outdated = it == flights_.end() && directive == ClientCacheDirective::kNormal &&
                                 landed_[stripe].load(std::memory_order_relaxed) != landed;
    if (lookup_outdated && !refresh_in_background && lookup < kMaxCacheLookups) {
      stale.reset();
      continue;
    }
    if (it != flights_.end()) {
      // Another request is already fetching this key: wait for its response (exactly one
      // upstream request per key). A background refresh needs nobody to wait.
      if (!refresh_in_background) {
        it->second->waiters.push_back(std::move(waiter));
        if (um != nullptr) um->coalesced_waits.fetch_add(1, std::memory_order_relaxed);
      }
      no_fill = refresh_in_background ? "a refresh of this key already runs" : "waits for the fill in flight";
    } else if (lookup_outdated && refresh_in_background) {
      no_fill = "a fill of this key may have just stored a newer entry";
    } else if (refresh_in_background && um != nullptr &&
               um->background_refreshes.fetch_add(1, std::memory_order_relaxed) >=
                   static_cast<int64_t>(config.cache.max_background_refreshes)) {
      // Bounded per upstream: a refresh beyond the bound is not started (the entry stays stale and
      // the next stale hit tries again), so an expiry wave cannot burst at the upstream.
      um->background_refreshes.fetch_sub(1, std::memory_order_relaxed);
      um->background_refreshes_deferred.fetch_add(1, std::memory_order_relaxed);
      no_fill = "refresh deferred: cache.max_background_refreshes reached";
    } else {
      auto flight = std::make_shared<Flight>();
      if (!refresh_in_background) flight->waiters.push_back(std::move(waiter));
      flights_.emplace(key, std::move(flight));
    }
    break;
  }
  if (no_fill != nullptr) {
    if (p->trace.on()) p->trace("cache fill", {{"none", no_fill}});
    return;
  }
  // Cached bodies are stored identity-encoded: ask the upstream for exactly that.
  removeHeader(p->out.headers, "Accept-Encoding");
  FillPlan plan{rule, std::move(key), CacheEntryMeta{upstream.name, std::string(path), identityTag(cache_id)},
                refresh_in_background, um};
  // The fleet's shared cache first, unless the client asked for a fresh answer (that fill is
  // not shared: it has no lock to store under).
  if (deps_.shared && directive == ClientCacheDirective::kNormal) {
    consultShared(p, std::move(plan), std::move(stale));
    return;
  }
  startFill(p, std::move(plan), std::move(stale), "");
}

void Gateway::consultShared(const std::shared_ptr<Pending>& p, FillPlan plan, std::optional<CachedResponse> stale) {
  if (p->trace.on()) p->trace("shared cache", {{"lookup", plan.refresh ? "before a refresh" : "after a miss"}});
  const std::chrono::milliseconds lock_for = p->upstream->timeout;
  const std::string key = plan.key;
  const CacheEntryMeta meta = plan.meta;
  deps_.shared->lookup(key, meta, lock_for,
                       [this, p, plan = std::move(plan), stale = std::move(stale)](SharedLookup found) mutable {
                         onSharedLookup(p, plan, std::move(stale), std::move(found));
                       });
}

void Gateway::onSharedLookup(const std::shared_ptr<Pending>& p, const FillPlan& plan,
                             std::optional<CachedResponse> stale, SharedLookup found) {
  using Outcome = SharedLookup::Outcome;
  const int64_t now = unixMs(*deps_.clock);
  const auto freshnessOf = [&](const CachedResponse& e) {
    return cacheFreshness(now, e.fresh_until_unix_ms, e.stale_until_unix_ms, plan.rule.stale_while_revalidate,
                          plan.rule.stale_if_error);
  };
  const CacheFreshness shared_freshness = found.entry ? freshnessOf(*found.entry) : CacheFreshness::kExpired;
  if (p->trace.on()) {
    const char* what = found.outcome == Outcome::kUnavailable ? "unavailable"
                       : found.outcome == Outcome::kFresh     ? "fresh"
                       : found.outcome == Outcome::kFill      ? "this host fills"
                                                              : "another host fills";
    p->trace("shared cache", {{"result", what}, {"copy", freshnessName(shared_freshness)}});
  }
  if (found.outcome == Outcome::kUnavailable) {
    startFill(p, plan, std::move(stale), "");
    return;
  }
  if (found.outcome == Outcome::kFresh || shared_freshness == CacheFreshness::kFresh) {
    deps_.cache->put(plan.key, plan.meta, *found.entry);
    if (found.outcome == Outcome::kFill) deps_.shared->release(plan.key, found.ticket);
    endFlight(plan, *found.entry, "HIT");
    return;
  }
  if (shared_freshness == CacheFreshness::kStale) {
    // Stale-while-revalidate across the fleet: answer the waiters from the shared copy now; the
    // host holding the lock refreshes it.
    deps_.cache->put(plan.key, plan.meta, *found.entry);
    for (auto& w : takeWaiters(plan.key)) serveCached(*found.entry, "STALE", std::move(w));
  }
  // For stale-if-error, the newer of the two copies.
  if (found.entry && shared_freshness != CacheFreshness::kExpired &&
      (!stale || stale->stored_unix_ms < found.entry->stored_unix_ms)) {
    stale = std::move(found.entry);
  }
  if (found.outcome == Outcome::kFill) {
    startFill(p, plan, std::move(stale), std::move(found.ticket));
    return;
  }
  // Another host fills. A refresh, or waiters already answered stale, need nothing more.
  if ((plan.refresh || shared_freshness == CacheFreshness::kStale) && stale) {
    endFlight(plan, *stale, "STALE");
    return;
  }
  deps_.shared->await(plan.key, found.ticket, p->upstream->timeout,
                      [this, p, plan, stale = std::move(stale)](std::optional<CachedResponse> filled) mutable {
                        if (!filled) {
                          // The other host's fill failed or it died: fetch here.
                          if (p->trace.on()) p->trace("shared cache", {{"wait", "the lock went away without an entry"}});
                          startFill(p, plan, std::move(stale), "");
                          return;
                        }
                        if (p->trace.on()) p->trace("shared cache", {{"wait", "the other host's entry arrived"}});
                        deps_.cache->put(plan.key, plan.meta, *filled);
                        endFlight(plan, *filled, "HIT");
                      });
}

void Gateway::startFill(const std::shared_ptr<Pending>& p, FillPlan plan, std::optional<CachedResponse> stale,
                        std::string ticket) {
  const Config& config = *p->config;
  std::shared_ptr<const UpstreamConfig> upstream_ref(p->config, p->upstream);
  std::shared_ptr<SharedCache> shared = ticket.empty() ? nullptr : deps_.shared;
  auto observer = std::make_shared<CacheFillObserver>(this, deps_.metrics, plan.um, deps_.events, deps_.clock,
                                                      deps_.cache, std::move(upstream_ref), std::move(plan.rule),
                                                      std::move(plan.key), std::move(plan.meta), std::move(stale),
                                                      config.cache.max_entry_bytes,
                                                      plan.refresh, p->trace, std::move(shared), std::move(ticket));
  if (p->trace.on()) {
    p->trace("cache fill", {{"started", plan.refresh ? "a background refresh" : "for this request"}});
  }
  startUpstream(p, std::move(p->out), observer);
}

void Gateway::endFlight(const FillPlan& plan, const CachedResponse& entry, const char* cache_status) {
  for (auto& w : landFlight(plan.key)) serveCached(entry, cache_status, std::move(w));
  if (plan.refresh && plan.um != nullptr) plan.um->background_refreshes.fetch_sub(1, std::memory_order_relaxed);
}

std::vector<std::unique_ptr<RequestContext>> Gateway::takeWaiters(const std::string& key) {
  std::lock_guard<std::mutex> lock(flights_mu_);
  auto it = flights_.find(key);
  if (it == flights_.end()) return {};
  return std::move(it->second->waiters);
}

std::vector<std::unique_ptr<RequestContext>> Gateway::landFlight(const std::string& key) {
  std::shared_ptr<Flight> flight;
  {
    std::lock_guard<std::mutex> lock(flights_mu_);
    auto it = flights_.find(key);
    if (it == flights_.end()) return {};
    flight = std::move(it->second);
    flights_.erase(it);
    landed_[landedStripe(key)].fetch_add(1, std::memory_order_release);
  }
  return std::move(flight->waiters);
}

void Gateway::serveCached(CachedResponse entry, const char* cache_status, std::unique_ptr<RequestContext> ctx) {
  HttpResponse response;
  response.status = entry.status;
  response.reason = std::move(entry.reason);
  response.headers = std::move(entry.headers);
  const int64_t age_ms = unixMs(*deps_.clock) - entry.stored_unix_ms;
  response.headers.push_back({"X-Keyway-Cache", cache_status});
  response.headers.push_back({"Age", std::to_string(age_ms > 0 ? age_ms / 1000 : 0)});
  response.body = std::move(entry.body);
  ctx->respond(std::move(response), cache_status);
}

}  // namespace keyway::core
