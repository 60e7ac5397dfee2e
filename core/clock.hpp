// Time as an injected interface, so tests drive the clock (Envoy's TimeSource pattern).
#pragma once

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

// A clock that moves only when told to.
class ManualClock final : public Clock {
 public:
  std::chrono::steady_clock::time_point monotonicNow() const override { return mono_; }
  std::chrono::system_clock::time_point systemNow() const override { return sys_; }
  void advance(std::chrono::milliseconds d) {
    mono_ += d;
    sys_ += d;
  }
  void setSystem(std::chrono::system_clock::time_point t) { sys_ = t; }

 private:
  std::chrono::steady_clock::time_point mono_{std::chrono::hours(1)};
  std::chrono::system_clock::time_point sys_{std::chrono::seconds(1'700'000'000)};
};

}  // namespace keyway::core
