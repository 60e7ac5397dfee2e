// keywayd's systemd watchdog: WATCHDOG=1 only after a round of real checks of the serving path
// passed (docs/operations.md, "Running as a systemd service").
#pragma once

#include <sys/socket.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "daemon/log.hpp"

namespace keyway::daemon {

// Where the watchdog's self-check connects: the main listener's bound port on its host, with a
// wildcard bind (0.0.0.0 / ::) reached through loopback.
struct SelfCheckTarget {
  std::vector<sockaddr_storage> addresses;
  std::vector<socklen_t> lengths;
};
SelfCheckTarget resolveSelfCheckTarget(const std::string& host, uint16_t port);

// What one self-check exchange saw.
struct SelfCheckOutcome {
  bool ok = false;
  bool closed_without_answer = false;  // accepted, then closed before any response byte
  std::string error;                   // why it failed (no secrets: only our own endpoint)
};

// One HTTP exchange with our own main listener, exactly as a client does it: connect, send
// `GET /_keyway/health` with Connection: close, read to EOF, expect 200. A pass proves that the
// accept loop, the reactor thread the connection lands on, the request parser, the gateway and
// the response path all work within `deadline`.
SelfCheckOutcome httpSelfCheck(const SelfCheckTarget& target, std::chrono::steady_clock::time_point deadline);

// The pinging thread. Rounds start every period/3; a round must pass within max(period/6, the
// shorter of period/3 and 250 ms), so one slow or failed round leaves the next one time to ping
// before systemd's deadline, and two in a row get keywayd restarted (sd_watchdog_enabled(3)).
class Watchdog {
 public:
  struct Checks {
    SelfCheckTarget target;
    // True when the main listener refuses connections because it holds limits.max_connections:
    // alive and enforcing its limit (a restart would only drop every open connection).
    std::function<bool()> listener_saturated;
    // Every upstream event loop answered through its command queue within the time given.
    std::function<bool(std::chrono::milliseconds)> upstream_loops_answer;
    // The STATUS= text sent with each ping.
    std::function<std::string()> status;
  };
  Watchdog(std::chrono::microseconds period, Checks checks, std::shared_ptr<Logger> logger);
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  // No ping from now on (the thread may finish its round); the destructor also joins.
  void halt();

 private:
  void loop();
  bool round(std::chrono::steady_clock::time_point deadline);

  const std::chrono::microseconds period_;
  Checks checks_;
  std::shared_ptr<Logger> logger_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;  // guarded by mu_
  std::thread thread_;
};

}  // namespace keyway::daemon
