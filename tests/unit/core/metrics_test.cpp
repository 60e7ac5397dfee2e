// Unit tests for core/metrics: striped counters, gauges and histograms add up exactly across
// threads, and the Prometheus rendering carries the sums.
#include "core/metrics.hpp"

#include <doctest/doctest.h>

#include <string>
#include <thread>
#include <vector>

namespace keyway::core {
namespace {

// The value of the first sample line that starts with `series` ("name{labels}"), or -1.
double sample(const std::string& text, const std::string& series) {
  size_t pos = 0;
  while ((pos = text.find(series + " ", pos)) != std::string::npos) {
    if (pos == 0 || text[pos - 1] == '\n') return std::stod(text.substr(pos + series.size() + 1));
    pos += series.size();
  }
  return -1;
}

// More threads than stripes, so that stripes are shared too.
constexpr int kThreads = static_cast<int>(kMetricStripes) + 3;
constexpr int kPerThread = 20000;

template <typename Fn>
void onThreads(Fn fn) {
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) threads.emplace_back([&fn, t] { fn(t); });
  for (auto& th : threads) th.join();
}

}  // namespace

TEST_CASE("metrics: a striped counter sums every thread's adds exactly") {
  static_assert(sizeof(StripedCounter) == kMetricStripes * 64, "one cache line per stripe");
  StripedCounter counter;
  onThreads([&](int) {
    for (int i = 0; i < kPerThread; ++i) counter.fetch_add(1, std::memory_order_relaxed);
  });
  counter.fetch_add(5);
  CHECK(counter.load() == static_cast<uint64_t>(kThreads) * kPerThread + 5);
}

TEST_CASE("metrics: a striped gauge ended on another thread than it was raised on reads 0") {
  StripedGauge gauge;
  std::thread([&] {
    for (int i = 0; i < 1000; ++i) gauge.fetch_add(1);
  }).join();
  CHECK(gauge.load() == 1000);
  std::thread([&] {
    for (int i = 0; i < 1000; ++i) gauge.fetch_sub(1);
  }).join();
  CHECK(gauge.load() == 0);
  gauge.fetch_sub(2);
  CHECK(gauge.load() == -2);
}

TEST_CASE("metrics: histogram buckets, count and sum add up across threads") {
  Metrics metrics({"up"});
  UpstreamMetrics* um = metrics.upstreamByName("up");
  REQUIRE(um != nullptr);
  // Each thread: one observation exactly on the 1 ms bound (le="0.001" holds it), one at 3 ms,
  // one over every bound (+Inf only).
  onThreads([&](int) {
    for (int i = 0; i < 100; ++i) {
      um->total_latency.observe(std::chrono::milliseconds(1));
      um->total_latency.observe(std::chrono::milliseconds(3));
      um->total_latency.observe(std::chrono::seconds(20));
    }
    um->responses_by_class[1].fetch_add(1);
    metrics.in_flight.fetch_add(1);
  });
  const std::string text = metrics.render();
  const std::string l = "keyway_request_duration_seconds_bucket{upstream=\"up\",le=";
  const double n = kThreads * 100.0;
  CHECK(sample(text, l + "\"0.0005\"}") == 0);
  CHECK(sample(text, l + "\"0.001\"}") == n);
  CHECK(sample(text, l + "\"0.0025\"}") == n);
  CHECK(sample(text, l + "\"0.005\"}") == 2 * n);
  CHECK(sample(text, l + "\"10\"}") == 2 * n);
  CHECK(sample(text, l + "\"+Inf\"}") == 3 * n);
  CHECK(sample(text, "keyway_request_duration_seconds_count{upstream=\"up\"}") == 3 * n);
  CHECK(sample(text, "keyway_request_duration_seconds_sum{upstream=\"up\"}") ==
        doctest::Approx(n * (0.001 + 0.003 + 20.0)));
  CHECK(sample(text, "keyway_requests_total{upstream=\"up\",class=\"2xx\"}") == kThreads);
  CHECK(sample(text, "keyway_requests_in_flight") == kThreads);
}

}  // namespace keyway::core
