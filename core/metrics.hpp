// Process metrics: lock-free counters and histograms with fixed, bounded label sets, rendered in
// the Prometheus text exposition format. Labels never carry raw paths, tokens or secrets: only
// configured upstream names, status classes and fixed enumerations.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace keyway::core {

// A cumulative histogram with fixed bucket bounds (seconds). Thread-safe, wait-free observe.
class Histogram {
 public:
  static constexpr std::array<double, 14> kBounds = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                    0.05,   0.1,   0.25,   0.5,   1.0,  2.5,
                                                    5.0,    10.0};
  void observe(std::chrono::nanoseconds d);
  void render(std::string& out, const std::string& name, const std::string& labels) const;

 private:
  std::array<std::atomic<uint64_t>, kBounds.size() + 1> buckets_{};  // last = +Inf
  std::atomic<uint64_t> count_{0};
  std::atomic<uint64_t> sum_ns_{0};
};

// Failure kinds counted per upstream; fixed so the label set stays bounded.
enum class UpstreamErrorKind : size_t { kConnect, kTimeout, kReset, kTls, kProtocol, kTooLarge, kCount };
const char* upstreamErrorKindName(UpstreamErrorKind kind);

// Per-upstream series. Index = position in Config::upstreams (fixed for the process lifetime;
// a reload that adds upstreams gets new slots via Metrics::ensureUpstreams).
struct UpstreamMetrics {
  std::string name;
  std::array<std::atomic<uint64_t>, 5> responses_by_class{};  // 1xx..5xx sent to clients
  std::array<std::atomic<uint64_t>, static_cast<size_t>(UpstreamErrorKind::kCount)> errors{};
  std::atomic<uint64_t> retries{0};
  std::atomic<uint64_t> cache_hits{0}, cache_misses{0}, cache_stale{0}, cache_bypass{0};
  std::atomic<uint64_t> coalesced_waits{0};
  std::atomic<int64_t> background_refreshes{0};        // running now (bounded per upstream)
  std::atomic<uint64_t> background_refreshes_deferred{0};  // stale hits that found the bound full
  std::atomic<uint64_t> validation_failures{0};
  std::atomic<uint64_t> credential_uses{0};
  std::atomic<uint64_t> connections_reused{0}, connections_new{0};
  Histogram total_latency;
  Histogram upstream_latency;
};

class Metrics {
 public:
  explicit Metrics(const std::vector<std::string>& upstream_names);

  // Slot for an upstream name, or nullptr (unknown mount).
  UpstreamMetrics* upstreamByName(const std::string& name);
  // Adds slots for names not yet present (reload). Existing slots keep their counters. Called from
  // one thread at a time; readers on other threads see a slot only once it is fully built.
  void ensureUpstreams(const std::vector<std::string>& names);
  static constexpr size_t kMaxUpstreams = 256;

  std::atomic<int64_t> in_flight{0};               // requests being handled
  std::atomic<int64_t> open_connections{0};        // client connections
  std::atomic<uint64_t> connections_accepted{0};
  std::atomic<uint64_t> local_responses_by_class[5]{};  // keyway's own answers without an upstream
  std::atomic<uint64_t> rejected_requests{0};      // refused before routing (bad target, limits)
  std::atomic<uint64_t> auth_failures{0};          // 401 and 403
  std::atomic<uint64_t> cache_evictions{0};
  std::atomic<uint64_t> schema_refreshes{0};
  std::atomic<uint64_t> schema_refresh_failures{0};
  std::atomic<uint64_t> degraded_events{0};        // store/cache trouble the gateway survived

  // Extra gauges computed at scrape time (store sizes, upstream client stats...).
  using GaugeFn = std::function<double()>;
  void addGauge(std::string name, std::string help, GaugeFn fn);

  // Appends whole series (HELP, TYPE and samples, labels included) at scrape time, for families
  // whose label sets only their owner knows (e.g. per-upstream BOSA schema ages). Register before
  // serving starts; the function must be thread-safe.
  using RenderFn = std::function<void(std::string& out)>;
  void addRenderer(RenderFn fn);

  std::atomic<uint64_t> token_mints{0};            // BOSA user tokens minted
  std::atomic<uint64_t> token_mint_failures{0};

  std::string render() const;

 private:
  // Fixed capacity so readers never race a reallocation; slots are published by count_.
  std::array<std::unique_ptr<UpstreamMetrics>, kMaxUpstreams> upstreams_{};
  std::atomic<size_t> count_{0};
  struct Gauge {
    std::string name, help;
    GaugeFn fn;
  };
  std::vector<Gauge> gauges_;
  std::vector<RenderFn> renderers_;
};

// "2xx" -> index 1 etc.; out-of-range statuses count as 5xx.
inline size_t statusClassIndex(int status) {
  if (status < 100 || status > 599) return 4;
  return static_cast<size_t>(status / 100 - 1);
}

}  // namespace keyway::core
