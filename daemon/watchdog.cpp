// The watchdog's self-check and its pinging thread.
#include "daemon/watchdog.hpp"

#include <netdb.h>
#include <poll.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace keyway::daemon {

namespace {

using SteadyClock = std::chrono::steady_clock;

// An owned file descriptor.
class FdGuard {
 public:
  explicit FdGuard(int fd) : fd_(fd) {}
  ~FdGuard() {
    if (fd_ >= 0) ::close(fd_);
  }
  FdGuard(const FdGuard&) = delete;
  FdGuard& operator=(const FdGuard&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

// Waits for `events` on fd until `deadline`; false on timeout or poll error.
bool waitFor(int fd, short events, SteadyClock::time_point deadline) {
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - SteadyClock::now()).count();
    if (left <= 0) return false;
    pollfd p{fd, events, 0};
    const int n = ::poll(&p, 1, static_cast<int>(std::min<long long>(left, 60000)));
    if (n > 0) return true;
    if (n < 0 && errno != EINTR) return false;
  }
}

}  // namespace

SelfCheckTarget resolveSelfCheckTarget(const std::string& host, uint16_t port) {
  SelfCheckTarget target;
  std::string h = host;
  if (h.empty() || h == "0.0.0.0") h = "127.0.0.1";
  if (h == "::" || h == "[::]") h = "::1";
  if (h.size() > 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* result = nullptr;
  if (::getaddrinfo(h.c_str(), std::to_string(port).c_str(), &hints, &result) != 0) return target;
  for (const addrinfo* a = result; a != nullptr; a = a->ai_next) {
    sockaddr_storage ss{};
    std::memcpy(&ss, a->ai_addr, a->ai_addrlen);
    target.addresses.push_back(ss);
    target.lengths.push_back(static_cast<socklen_t>(a->ai_addrlen));
  }
  ::freeaddrinfo(result);
  return target;
}

SelfCheckOutcome httpSelfCheck(const SelfCheckTarget& target, SteadyClock::time_point deadline) {
  SelfCheckOutcome out;
  if (target.addresses.empty()) {
    out.error = "the main listener's address does not resolve";
    return out;
  }
  static constexpr char kRequest[] =
      "GET /_keyway/health HTTP/1.1\r\nHost: localhost\r\nUser-Agent: keywayd-watchdog\r\n"
      "Connection: close\r\n\r\n";
  for (size_t i = 0; i < target.addresses.size(); ++i) {
    const auto& address = target.addresses[i];
    FdGuard fd(::socket(address.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (fd.get() < 0) {
      out.error = std::string("cannot create a socket: ") + std::strerror(errno);
      return out;
    }
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&address), target.lengths[i]) != 0) {
      if (errno != EINPROGRESS) {
        out.error = std::string("cannot connect to the main listener: ") + std::strerror(errno);
        continue;  // e.g. "localhost" resolving to ::1 first while the listener is on 127.0.0.1
      }
      if (!waitFor(fd.get(), POLLOUT, deadline)) {
        out.error = "the main listener did not accept within the deadline";
        return out;
      }
      int err = 0;
      socklen_t len = sizeof err;
      ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
      if (err != 0) {
        out.error = std::string("cannot connect to the main listener: ") + std::strerror(err);
        continue;
      }
    }
    size_t sent = 0;
    const size_t total = sizeof kRequest - 1;
    while (sent < total) {
      const ssize_t n = ::send(fd.get(), kRequest + sent, total - sent, MSG_NOSIGNAL);
      if (n > 0) {
        sent += static_cast<size_t>(n);
      } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        if (!waitFor(fd.get(), POLLOUT, deadline)) {
          out.error = "could not send the health request within the deadline";
          return out;
        }
      } else {
        out.error = std::string("sending the health request failed: ") + std::strerror(errno);
        return out;
      }
    }
    std::string response;
    for (;;) {
      if (!waitFor(fd.get(), POLLIN, deadline)) {
        out.error = response.empty() ? "no response from the main listener within the deadline"
                                     : "incomplete response from the main listener within the deadline";
        return out;
      }
      char buf[4096];
      const ssize_t n = ::recv(fd.get(), buf, sizeof buf, 0);
      if (n > 0) {
        if (response.size() < 65536) response.append(buf, static_cast<size_t>(n));
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      if (n < 0 && errno != ECONNRESET) {
        out.error = std::string("reading the health response failed: ") + std::strerror(errno);
        return out;
      }
      break;  // EOF (or a reset after the response): Connection: close was honoured
    }
    if (response.empty()) {
      out.closed_without_answer = true;
      out.error = "the main listener closed the connection without answering";
      return out;
    }
    if (response.rfind("HTTP/1.1 200 ", 0) == 0) {
      out.ok = true;
      return out;
    }
    const auto eol = response.find("\r\n");
    out.error = "the health endpoint answered \"" + response.substr(0, std::min<size_t>(eol, 64)) + "\"";
    return out;
  }
  return out;
}

Watchdog::Watchdog(std::chrono::microseconds period, Checks checks, std::shared_ptr<Logger> logger)
    : period_(period), checks_(std::move(checks)), logger_(std::move(logger)) {
  thread_ = std::thread([this] { loop(); });
}

Watchdog::~Watchdog() {
  halt();
  if (thread_.joinable()) thread_.join();
}

void Watchdog::halt() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
}

// Why here and not in the signal loop: a ping from a thread that proves nothing would keep a
// wedged server alive forever. A ping is sent only after a round of checks passed: an HTTP
// self-check through the main listener, and every upstream event loop answering a probe.
void Watchdog::loop() {
  const auto interval = period_ / 3;
  const auto budget = std::max<std::chrono::microseconds>(
      period_ / 6, std::min<std::chrono::microseconds>(interval, std::chrono::milliseconds(250)));
  auto next = SteadyClock::now();
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (cv_.wait_until(lock, next, [this] { return stop_; })) return;
    }
    const auto start = SteadyClock::now();
    next = start + interval;
    const bool ok = round(start + budget);
    std::lock_guard<std::mutex> lock(mu_);
    // No ping once stopping began: the manager is no longer waiting for them, and after the
    // drain closed the listener the port may even belong to someone else.
    if (stop_) return;
    if (ok) sd_notify(0, ("WATCHDOG=1\nSTATUS=" + checks_.status()).c_str());
  }
}

bool Watchdog::round(SteadyClock::time_point deadline) {
  SelfCheckOutcome http = httpSelfCheck(checks_.target, deadline);
  if (!http.ok && http.closed_without_answer && checks_.listener_saturated()) {
    logger_->warnRateLimited("watchdog-saturated",
                             "watchdog self-check refused at limits.max_connections; the listener is alive",
                             std::chrono::seconds(30));
    http.ok = true;
  }
  if (!http.ok) {
    logger_->warnRateLimited("watchdog-http", "watchdog self-check failed: not pinging systemd",
                             std::chrono::seconds(5), {field("check", "http"), field("error", http.error)});
    return false;
  }
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - SteadyClock::now());
  if (!checks_.upstream_loops_answer(std::max(left, std::chrono::milliseconds(1)))) {
    logger_->warnRateLimited("watchdog-upstream", "watchdog self-check failed: not pinging systemd",
                             std::chrono::seconds(5),
                             {field("check", "upstream_io_threads"),
                              field("error", "an upstream event loop did not answer within the deadline")});
    return false;
  }
  return true;
}

}  // namespace keyway::daemon
