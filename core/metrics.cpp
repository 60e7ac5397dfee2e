// Prometheus text rendering of keyway's counters and histograms.
#include "core/metrics.hpp"

#include <algorithm>
#include <cstdio>

namespace keyway::core {

namespace {

void appendUint(std::string& out, uint64_t v) { out += std::to_string(v); }

void appendDouble(std::string& out, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  out += buf;
}

void header(std::string& out, const char* name, const char* type, const char* help) {
  out += "# HELP ";
  out += name;
  out += ' ';
  out += help;
  out += "\n# TYPE ";
  out += name;
  out += ' ';
  out += type;
  out += '\n';
}

const char* const kClassNames[5] = {"1xx", "2xx", "3xx", "4xx", "5xx"};

}  // namespace

const char* upstreamErrorKindName(UpstreamErrorKind kind) {
  switch (kind) {
    case UpstreamErrorKind::kConnect: return "connect";
    case UpstreamErrorKind::kTimeout: return "timeout";
    case UpstreamErrorKind::kReset: return "reset";
    case UpstreamErrorKind::kTls: return "tls";
    case UpstreamErrorKind::kProtocol: return "protocol";
    case UpstreamErrorKind::kTooLarge: return "too_large";
    case UpstreamErrorKind::kCount: break;
  }
  return "other";
}

UpstreamHealth::Snapshot UpstreamHealth::snapshot() const {
  Snapshot s;
  s.last_answer_unix_ms = last_answer_unix_ms_.load(std::memory_order_relaxed);
  s.last_status = last_status_.load(std::memory_order_relaxed);
  s.last_failure_unix_ms = last_failure_unix_ms_.load(std::memory_order_relaxed);
  std::lock_guard<std::mutex> lock(mu_);
  s.last_failure_kind = last_failure_kind_;
  s.last_failure = last_failure_;
  return s;
}

void Histogram::observe(std::chrono::nanoseconds d) {
  const double s = static_cast<double>(d.count()) / 1e9;
  size_t i = 0;
  while (i < kBounds.size() && s > kBounds[i]) ++i;
  Stripe& stripe = stripes_[metricStripe()];
  stripe.buckets[i].fetch_add(1, std::memory_order_relaxed);
  stripe.sum_ns.fetch_add(static_cast<uint64_t>(d.count() < 0 ? 0 : d.count()), std::memory_order_relaxed);
}

void Histogram::render(std::string& out, const std::string& name, const std::string& labels) const {
  uint64_t cumulative = 0;
  uint64_t sum_ns = 0;
  for (const Stripe& stripe : stripes_) sum_ns += stripe.sum_ns.load(std::memory_order_relaxed);
  const std::string sep = labels.empty() ? "" : ",";
  for (size_t i = 0; i <= kBounds.size(); ++i) {
    for (const Stripe& stripe : stripes_) cumulative += stripe.buckets[i].load(std::memory_order_relaxed);
    out += name;
    out += "_bucket{";
    out += labels;
    out += sep;
    out += "le=\"";
    if (i < kBounds.size()) {
      appendDouble(out, kBounds[i]);
    } else {
      out += "+Inf";
    }
    out += "\"} ";
    appendUint(out, cumulative);
    out += '\n';
  }
  out += name + "_sum{" + labels + "} ";
  appendDouble(out, static_cast<double>(sum_ns) / 1e9);
  out += '\n';
  out += name + "_count{" + labels + "} ";
  appendUint(out, cumulative);  // _count is the +Inf bucket: the same figure, by definition
  out += '\n';
}

Metrics::Metrics(const std::vector<std::string>& upstream_names) { ensureUpstreams(upstream_names); }

UpstreamMetrics* Metrics::upstreamByName(const std::string& name) {
  const size_t n = count_.load(std::memory_order_acquire);
  for (size_t i = 0; i < n; ++i) {
    if (upstreams_[i]->name == name) return upstreams_[i].get();
  }
  return nullptr;
}

void Metrics::ensureUpstreams(const std::vector<std::string>& names) {
  for (const auto& name : names) {
    if (upstreamByName(name) != nullptr) continue;
    const size_t n = count_.load(std::memory_order_relaxed);
    if (n >= kMaxUpstreams) return;  // config validation keeps the count far below this
    upstreams_[n] = std::make_unique<UpstreamMetrics>();
    upstreams_[n]->name = name;
    count_.store(n + 1, std::memory_order_release);
  }
}

void Metrics::addGauge(std::string name, std::string help, GaugeFn fn) {
  gauges_.push_back(Gauge{std::move(name), std::move(help), std::move(fn)});
}

void Metrics::addRenderer(RenderFn fn) { renderers_.push_back(std::move(fn)); }

std::string Metrics::render() const {
  std::string out;
  out.reserve(16384);
  const size_t n = count_.load(std::memory_order_acquire);
  auto perUpstream = [&](const char* name, const char* type, const char* help, auto&& value) {
    header(out, name, type, help);
    for (size_t i = 0; i < n; ++i) {
      out += name;
      out += "{upstream=\"" + upstreams_[i]->name + "\"} ";
      appendUint(out, value(*upstreams_[i]));
      out += '\n';
    }
  };

  header(out, "keyway_requests_total", "counter",
         "Responses sent to clients, by upstream (\"-\" for keyway's own) and status class.");
  for (size_t i = 0; i < n; ++i) {
    for (size_t c = 0; c < 5; ++c) {
      out += "keyway_requests_total{upstream=\"" + upstreams_[i]->name + "\",class=\"" + kClassNames[c] + "\"} ";
      appendUint(out, upstreams_[i]->responses_by_class[c].load(std::memory_order_relaxed));
      out += '\n';
    }
  }
  for (size_t c = 0; c < 5; ++c) {
    out += std::string("keyway_requests_total{upstream=\"-\",class=\"") + kClassNames[c] + "\"} ";
    appendUint(out, local_responses_by_class[c].load(std::memory_order_relaxed));
    out += '\n';
  }

  header(out, "keyway_request_duration_seconds", "histogram",
         "Time from a complete request to the last response byte queued, by upstream.");
  for (size_t i = 0; i < n; ++i) {
    upstreams_[i]->total_latency.render(out, "keyway_request_duration_seconds",
                                        "upstream=\"" + upstreams_[i]->name + "\"");
  }
  header(out, "keyway_upstream_duration_seconds", "histogram",
         "Time spent waiting on the upstream exchange, by upstream.");
  for (size_t i = 0; i < n; ++i) {
    upstreams_[i]->upstream_latency.render(out, "keyway_upstream_duration_seconds",
                                           "upstream=\"" + upstreams_[i]->name + "\"");
  }

  header(out, "keyway_upstream_errors_total", "counter",
         "Upstream exchanges that failed, by upstream and kind.");
  for (size_t i = 0; i < n; ++i) {
    for (size_t k = 0; k < static_cast<size_t>(UpstreamErrorKind::kCount); ++k) {
      out += "keyway_upstream_errors_total{upstream=\"" + upstreams_[i]->name + "\",kind=\"" +
             upstreamErrorKindName(static_cast<UpstreamErrorKind>(k)) + "\"} ";
      appendUint(out, upstreams_[i]->errors[k].load(std::memory_order_relaxed));
      out += '\n';
    }
  }

  perUpstream("keyway_retries_total", "counter", "Upstream attempts retried.",
              [](const UpstreamMetrics& m) { return m.retries.load(std::memory_order_relaxed); });
  perUpstream("keyway_cache_hits_total", "counter", "Responses served fresh from the cache.",
              [](const UpstreamMetrics& m) { return m.cache_hits.load(std::memory_order_relaxed); });
  perUpstream("keyway_cache_misses_total", "counter", "Cacheable requests fetched from the upstream.",
              [](const UpstreamMetrics& m) { return m.cache_misses.load(std::memory_order_relaxed); });
  perUpstream("keyway_cache_stale_total", "counter", "Responses served stale from the cache.",
              [](const UpstreamMetrics& m) { return m.cache_stale.load(std::memory_order_relaxed); });
  perUpstream("keyway_cache_bypass_total", "counter", "Requests that bypassed the cache.",
              [](const UpstreamMetrics& m) { return m.cache_bypass.load(std::memory_order_relaxed); });
  perUpstream("keyway_cache_coalesced_waits_total", "counter",
              "Requests that waited on another request's upstream fetch instead of sending their own.",
              [](const UpstreamMetrics& m) { return m.coalesced_waits.load(std::memory_order_relaxed); });
  perUpstream("keyway_cache_background_refreshes", "gauge",
              "Stale-while-revalidate refreshes running now (at most cache.max_background_refreshes).",
              [](const UpstreamMetrics& m) {
                return static_cast<uint64_t>(std::max<int64_t>(0, m.background_refreshes.load(std::memory_order_relaxed)));
              });
  perUpstream("keyway_cache_refreshes_deferred_total", "counter",
              "Stale hits served without starting a refresh because the upstream's refresh bound was full.",
              [](const UpstreamMetrics& m) { return m.background_refreshes_deferred.load(std::memory_order_relaxed); });
  perUpstream("keyway_validation_failures_total", "counter",
              "Action calls refused by schema validation before forwarding.",
              [](const UpstreamMetrics& m) { return m.validation_failures.load(std::memory_order_relaxed); });
  perUpstream("keyway_credential_uses_total", "counter", "Requests forwarded with an injected stored credential.",
              [](const UpstreamMetrics& m) { return m.credential_uses.load(std::memory_order_relaxed); });
  perUpstream("keyway_upstream_connections_reused_total", "counter",
              "Upstream exchanges that reused a pooled connection.",
              [](const UpstreamMetrics& m) { return m.connections_reused.load(std::memory_order_relaxed); });
  perUpstream("keyway_upstream_connections_new_total", "counter",
              "Upstream exchanges that opened a new connection.",
              [](const UpstreamMetrics& m) { return m.connections_new.load(std::memory_order_relaxed); });

  auto scalar = [&](const char* name, const char* type, const char* help, double v) {
    header(out, name, type, help);
    out += name;
    out += ' ';
    appendDouble(out, v);
    out += '\n';
  };
  scalar("keyway_requests_in_flight", "gauge", "Requests being handled right now.",
         static_cast<double>(in_flight.load(std::memory_order_relaxed)));
  scalar("keyway_client_connections", "gauge", "Open client connections.",
         static_cast<double>(open_connections.load(std::memory_order_relaxed)));
  scalar("keyway_client_connections_accepted_total", "counter", "Client connections accepted.",
         static_cast<double>(connections_accepted.load(std::memory_order_relaxed)));
  scalar("keyway_rejected_requests_total", "counter",
         "Requests refused before routing (malformed, over a limit, bad target).",
         static_cast<double>(rejected_requests.load(std::memory_order_relaxed)));
  scalar("keyway_auth_failures_total", "counter", "Requests refused with 401 or 403.",
         static_cast<double>(auth_failures.load(std::memory_order_relaxed)));
  scalar("keyway_cache_evictions_total", "counter", "Cache entries evicted to stay within the size bound.",
         static_cast<double>(cache_evictions.load(std::memory_order_relaxed)));
  scalar("keyway_schema_refreshes_total", "counter", "Successful BOSA schema refreshes.",
         static_cast<double>(schema_refreshes.load(std::memory_order_relaxed)));
  scalar("keyway_schema_refresh_failures_total", "counter", "Failed BOSA schema refreshes.",
         static_cast<double>(schema_refresh_failures.load(std::memory_order_relaxed)));
  scalar("keyway_degraded_events_total", "counter",
         "Storage or cache failures the gateway survived by degrading (see the log).",
         static_cast<double>(degraded_events.load(std::memory_order_relaxed)));
  scalar("keyway_client_tokens_withheld_total", "counter",
         "Request header fields not forwarded because they held a keyway client token.",
         static_cast<double>(client_tokens_withheld.load(std::memory_order_relaxed)));
  scalar("keyway_bosa_token_mints_total", "counter", "BOSA user tokens minted through POST /auth/tokens.",
         static_cast<double>(token_mints.load(std::memory_order_relaxed)));
  scalar("keyway_bosa_token_mint_failures_total", "counter", "BOSA user token mints that failed.",
         static_cast<double>(token_mint_failures.load(std::memory_order_relaxed)));
  for (const auto& g : gauges_) scalar(g.name.c_str(), "gauge", g.help.c_str(), g.fn());
  for (const auto& r : renderers_) r(out);
  return out;
}

}  // namespace keyway::core
