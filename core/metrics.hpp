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
#include <mutex>
#include <string>
#include <vector>

namespace keyway::core {

// Why the series below are striped: every forwarded request adds to a dozen of them, from
// whichever reactor thread serves it. One atomic per series, written by every thread, moves its
// cache line between cores on nearly every request, and a locked add on a line another core
// holds stalls until it arrives; nginx's workers, separate processes, never pay that. Each
// thread adds to a stripe of its own (its own cache line); a scrape sums the stripes. Every
// stripe only grows, so a counter's sum never goes backwards between scrapes.
inline constexpr size_t kMetricStripes = 8;
// This thread's stripe: threads take stripes in turn as they first count something.
inline size_t metricStripe() {
  static std::atomic<size_t> next{0};
  thread_local const size_t stripe = next.fetch_add(1, std::memory_order_relaxed) % kMetricStripes;
  return stripe;
}

// The stripes and their sum, shared by the counter and the gauge below; they differ only in
// which updates they allow.
template <typename T>
class StripedValue {
 public:
  T load(std::memory_order = std::memory_order_relaxed) const {
    T sum = 0;
    for (const auto& s : stripes_) sum += s.value.load(std::memory_order_relaxed);
    return sum;
  }

 protected:
  std::atomic<T>& mine() { return stripes_[metricStripe()].value; }

 private:
  struct alignas(64) Stripe {
    std::atomic<T> value{0};
  };
  std::array<Stripe, kMetricStripes> stripes_{};
};

// A counter (monotonic). Same calls as the std::atomic<uint64_t> it replaces.
class StripedCounter : public StripedValue<uint64_t> {
 public:
  void fetch_add(uint64_t n, std::memory_order = std::memory_order_relaxed) {
    mine().fetch_add(n, std::memory_order_relaxed);
  }
};

// A gauge that goes up and down (requests in flight, open connections): a stripe may go
// negative when another thread ends what this one started; the sum is the value.
class StripedGauge : public StripedValue<int64_t> {
 public:
  void fetch_add(int64_t n, std::memory_order = std::memory_order_relaxed) {
    mine().fetch_add(n, std::memory_order_relaxed);
  }
  void fetch_sub(int64_t n, std::memory_order = std::memory_order_relaxed) {
    mine().fetch_sub(n, std::memory_order_relaxed);
  }
};

// A cumulative histogram with fixed bucket bounds (seconds). Thread-safe, wait-free observe;
// striped as a whole (each stripe's buckets and sum share its own lines).
class Histogram {
 public:
  static constexpr std::array<double, 14> kBounds = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                    0.05,   0.1,   0.25,   0.5,   1.0,  2.5,
                                                    5.0,    10.0};
  void observe(std::chrono::nanoseconds d);
  void render(std::string& out, const std::string& name, const std::string& labels) const;

 private:
  struct alignas(64) Stripe {
    std::array<std::atomic<uint64_t>, kBounds.size() + 1> buckets{};  // last = +Inf
    std::atomic<uint64_t> sum_ns{0};
  };
  std::array<Stripe, kMetricStripes> stripes_{};
};

// Failure kinds counted per upstream; fixed so the label set stays bounded.
enum class UpstreamErrorKind : size_t { kConnect, kTimeout, kReset, kTls, kProtocol, kTooLarge, kCount };
const char* upstreamErrorKindName(UpstreamErrorKind kind);

// An upstream's recent health as GET /_keyway/status reports it: when an exchange last got an
// HTTP answer (any status) and when one last failed, of which kind and why. Wall-clock unix ms,
// 0 = never.
// Each time is written at most once a second (a compare-exchange picks one writer), so threads
// forwarding thousands of requests a second do not all write one cache line; the times are
// therefore up to a second old. The cause is what the client was told (docs/errors.md): safe to
// show, never a credential or certificate content. Thread-safe.
class UpstreamHealth {
 public:
  struct Snapshot {
    int64_t last_answer_unix_ms = 0;
    int last_status = 0;
    int64_t last_failure_unix_ms = 0;
    UpstreamErrorKind last_failure_kind = UpstreamErrorKind::kCount;  // kCount: none yet
    std::string last_failure;
  };

  void noteAnswer(int status, int64_t now_unix_ms) {
    if (!claim(last_answer_unix_ms_, now_unix_ms)) return;
    last_status_.store(status, std::memory_order_relaxed);
  }
  // `cause()` is called only when this failure is the one recorded.
  template <typename Cause>
  void noteFailure(UpstreamErrorKind kind, int64_t now_unix_ms, Cause&& cause) {
    if (!claim(last_failure_unix_ms_, now_unix_ms)) return;
    std::string text = cause();
    std::lock_guard<std::mutex> lock(mu_);
    last_failure_kind_ = kind;
    last_failure_ = std::move(text);
  }
  Snapshot snapshot() const;

 private:
  static constexpr int64_t kWriteEveryMs = 1000;
  // True for the one caller that moves `slot` to `now` (at least kWriteEveryMs after it).
  static bool claim(std::atomic<int64_t>& slot, int64_t now) {
    int64_t seen = slot.load(std::memory_order_relaxed);
    if (seen != 0 && now - seen < kWriteEveryMs && now >= seen) return false;
    return slot.compare_exchange_strong(seen, now, std::memory_order_relaxed);
  }

  alignas(64) std::atomic<int64_t> last_answer_unix_ms_{0};
  std::atomic<int> last_status_{0};
  alignas(64) std::atomic<int64_t> last_failure_unix_ms_{0};
  mutable std::mutex mu_;
  UpstreamErrorKind last_failure_kind_ = UpstreamErrorKind::kCount;
  std::string last_failure_;
};

// Per-upstream series. Index = position in Config::upstreams (fixed for the process lifetime;
// a reload that adds upstreams gets new slots via Metrics::ensureUpstreams).
struct UpstreamMetrics {
  std::string name;
  std::array<StripedCounter, 5> responses_by_class{};  // 1xx..5xx sent to clients
  std::array<StripedCounter, static_cast<size_t>(UpstreamErrorKind::kCount)> errors{};
  StripedCounter retries;
  StripedCounter cache_hits, cache_misses, cache_stale, cache_bypass;
  StripedCounter coalesced_waits;
  // Running now, bounded per upstream: a plain atomic, because the bound is checked on the
  // value fetch_add returns.
  std::atomic<int64_t> background_refreshes{0};
  StripedCounter background_refreshes_deferred;  // stale hits that found the bound full
  StripedCounter validation_failures;
  StripedCounter credential_uses;
  StripedCounter connections_reused, connections_new;
  Histogram total_latency;
  Histogram upstream_latency;
  UpstreamHealth health;
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

  StripedGauge in_flight;                          // requests being handled
  StripedGauge open_connections;                   // client connections
  StripedCounter connections_accepted;
  StripedCounter local_responses_by_class[5]{};  // keyway's own answers without an upstream
  StripedCounter rejected_requests;                // refused before routing (bad target, limits)
  StripedCounter auth_failures;                    // 401 and 403
  StripedCounter cache_evictions;
  StripedCounter schema_refreshes;
  StripedCounter schema_refresh_failures;
  StripedCounter degraded_events;                  // store/cache trouble the gateway survived
  StripedCounter client_tokens_withheld;           // header fields not forwarded: they held a kw_ token

  // Extra gauges computed at scrape time (store sizes, upstream client stats...).
  using GaugeFn = std::function<double()>;
  void addGauge(std::string name, std::string help, GaugeFn fn);

  // Appends whole series (HELP, TYPE and samples, labels included) at scrape time, for families
  // whose label sets only their owner knows (e.g. per-upstream BOSA schema ages). Register before
  // serving starts; the function must be thread-safe.
  using RenderFn = std::function<void(std::string& out)>;
  void addRenderer(RenderFn fn);

  StripedCounter token_mints;                      // BOSA user tokens minted
  StripedCounter token_mint_failures;

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
