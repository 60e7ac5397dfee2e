// Time as an injected interface, so tests drive the clock (Envoy's TimeSource pattern).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace keyway::core {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual std::chrono::steady_clock::time_point monotonicNow() const = 0;
  virtual std::chrono::system_clock::time_point systemNow() const = 0;
  int64_t unixSeconds() const {
    return std::chrono::duration_cast<std::chrono::seconds>(systemNow().time_since_epoch())
        .count();
  }
};

class RealClock final : public Clock {
 public:
  std::chrono::steady_clock::time_point monotonicNow() const override {
    return std::chrono::steady_clock::now();
  }
  std::chrono::system_clock::time_point systemNow() const override {
    return std::chrono::system_clock::now();
  }
};

// A clock that moves only when told to. Thread-safe: tests advance it while threads under test
// (a cache store's writer, an I/O thread) read it.
class ManualClock final : public Clock {
 public:
  std::chrono::steady_clock::time_point monotonicNow() const override {
    return std::chrono::steady_clock::time_point(
        std::chrono::steady_clock::duration(mono_.load(std::memory_order_acquire)));
  }
  std::chrono::system_clock::time_point systemNow() const override {
    return std::chrono::system_clock::time_point(
        std::chrono::system_clock::duration(sys_.load(std::memory_order_acquire)));
  }
  void advance(std::chrono::milliseconds d) {
    mono_.fetch_add(std::chrono::duration_cast<std::chrono::steady_clock::duration>(d).count(),
                    std::memory_order_acq_rel);
    sys_.fetch_add(std::chrono::duration_cast<std::chrono::system_clock::duration>(d).count(),
                   std::memory_order_acq_rel);
  }
  void setSystem(std::chrono::system_clock::time_point t) {
    sys_.store(t.time_since_epoch().count(), std::memory_order_release);
  }

 private:
  std::atomic<std::chrono::steady_clock::rep> mono_{
      std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::hours(1)).count()};
  std::atomic<std::chrono::system_clock::rep> sys_{
      std::chrono::duration_cast<std::chrono::system_clock::duration>(std::chrono::seconds(1'700'000'000))
          .count()};
};

}  // namespace keyway::core
