// An asynchronous Redis client on hiredis 0.14 (the shared cache's transport, docs/cache.md):
// a few pipelined connections and one subscriber connection, all driven by one I/O thread of
// its own, so that no caller ever waits on Redis. Every command ends within its timeout: with
// the reply, a server error, a timeout, or "unavailable" at once while Redis is known to be down.
//
// Why a thread of its own and not the reactor threads: every reactor shares the same few
// connections (Redis answers in order on each, so pipelining many callers over one connection
// is what makes it fast), and a reactor thread never runs a callback of another component.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.hpp"
#include "core/secret.hpp"

namespace keyway::daemon {

struct RedisReply {
  enum class Type { kNil, kString, kInteger, kArray, kStatus, kError };
  Type type = Type::kNil;
  std::string str;  // kString, kStatus, kError
  int64_t integer = 0;
  std::vector<RedisReply> elements;
};

enum class RedisFailure {
  kNone,
  kTimeout,      // no reply within the timeout (a paused or overloaded server)
  kUnavailable,  // no connection up, the connection broke, or the client stopped
  kServerError,  // an error reply (-OOM when full, -NOSCRIPT, -WRONGTYPE, ...)
};

struct RedisResult {
  RedisFailure failure = RedisFailure::kNone;
  std::string message;  // when failed: what happened, for a log line (never a value)
  RedisReply reply;
  bool ok() const { return failure == RedisFailure::kNone; }
};

struct RedisClientOptions {
  // "host:port", "[v6]:port", or a unix socket path (starting with '/').
  std::string address;
  std::optional<core::SecretString> password;  // AUTH on every connection when set
  std::chrono::milliseconds timeout{50};
  size_t max_connections = 2;  // command connections; the subscriber is one more
};

struct RedisClientStats {
  uint64_t commands = 0;
  uint64_t timeouts = 0;
  uint64_t unavailable = 0;  // commands refused at once or lost with their connection
  uint64_t server_errors = 0;
  uint64_t reconnects = 0;   // connections (re)established after the first
  size_t connections_up = 0;
  bool subscribed = false;
  std::string last_error;    // the last connection failure, for status and logs (no values)
};

// Splits an address into host and port, or a unix path (port 0). Error text names the problem.
core::Result<std::pair<std::string, int>> parseRedisAddress(std::string_view address);

class RedisClient {
 public:
  // Starts the I/O thread and connects in the background (a server that is down now is not an
  // error: the client keeps trying with a growing pause).
  static core::Result<std::unique_ptr<RedisClient>> start(RedisClientOptions options);
  // Stops the thread; commands still pending complete with kUnavailable.
  ~RedisClient();
  RedisClient(const RedisClient&) = delete;
  RedisClient& operator=(const RedisClient&) = delete;

  using Done = std::function<void(RedisResult)>;
  // Thread-safe; never blocks. `done` runs exactly once, on the client's thread (never inline).
  void command(std::vector<std::string> argv, Done done);

  // Delivers every message published on `channel` to `on_message`, on the client's thread.
  // `on_gap` runs each time the subscription was (re)established after a loss: messages
  // published meanwhile were missed. Call once, before or after the first command.
  void subscribe(std::string channel, std::function<void(std::string_view)> on_message,
                 std::function<void()> on_gap);

  RedisClientStats stats() const;

  // Stops the thread now (pending commands complete with kUnavailable); later commands complete
  // at once, inline, with kUnavailable.
  void stop();

  class Impl;

 private:
  explicit RedisClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace keyway::daemon
