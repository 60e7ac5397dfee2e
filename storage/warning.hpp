// Warnings from storage/ to the process that runs it: the default sink for a store opened
// without a warn callback (one JSON line on stderr) and a limiter, so that a failure repeated on
// every request is logged once per period (and counted by the store every time).
#pragma once

#include <atomic>
#include <cstdint>
#include <string_view>

namespace keyway::storage {

// Writes {"level":"warn","component":"<component>","message":"<message>"} and a newline to
// stderr in one write(2), so lines of concurrent writers do not interleave. Never fails.
void warnOnStderr(std::string_view component, std::string_view message);

// Lets the first warning through, then at most one per period. Thread-safe, lock-free.
class WarnLimiter {
 public:
  explicit WarnLimiter(int64_t period_ms) : period_ms_(period_ms) {}
  // True when a warning made at `now_ms` is to be logged.
  bool allow(int64_t now_ms) {
    int64_t last = last_ms_.load(std::memory_order_relaxed);
    if (last != 0 && now_ms - last < period_ms_) return false;
    return last_ms_.compare_exchange_strong(last, now_ms);
  }

 private:
  const int64_t period_ms_;
  std::atomic<int64_t> last_ms_{0};
};

}  // namespace keyway::storage
