// The HTTP/1.1 server: Pistache's TCP reactor (accept, epoll, writes) with keyway's own request
// parser (core/http_parser) on top, one per listener (main and compat ports).
//
// Why not Pistache's Http::Handler: in Debian's 0.0.5 it drops query order and duplicate keys, has
// no raw request-target, answers `Connection: Close` to HTTP/1.1 requests without a Connection
// header, and discards pipelined bytes after each request. Parsing ourselves fixes all of it and
// lets the same parser be unit-tested and fuzzed in core/.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>

#include "core/config.hpp"
#include "core/gateway.hpp"
#include "daemon/reactor_guest.hpp"
#include "core/metrics.hpp"
#include "core/result.hpp"

namespace Pistache::Tcp {
class Listener;
}

namespace keyway::daemon {

class Connection;
class ServerShared;

struct ServerOptions {
  core::ListenAddress address;
  size_t threads = 2;
  int listen_backlog = 4096;  // listen(2) backlog (core::ServerConfig::listen_backlog)
  core::LimitsConfig limits;
  core::ListenerContext context;  // main or compat(upstream)
  std::string name;               // for thread names and logs: "main", "compat:bosa"
  // Loops the reactor threads run besides their connections, one per thread (extra guests are
  // not run: give at most `threads`). See daemon/reactor_guest.hpp.
  std::vector<std::shared_ptr<ReactorGuest>> guests;
};

// Thread-safe. start() binds and runs the reactor threads; stop() closes every connection and
// joins them. Requests are handed to the gateway on reactor threads; responses may be sent from
// any thread.
class HttpServer {
 public:
  HttpServer(ServerOptions options, std::shared_ptr<core::Gateway> gateway,
             std::shared_ptr<core::Metrics> metrics);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds and starts serving. Errors (address in use, bad address) are returned, not thrown.
  core::Status start();
  // The bound port (useful with port 0).
  uint16_t port() const { return port_; }
  std::string boundAddress() const;
  // New limits (timeouts, sizes) for connections parsed from now on (SIGHUP).
  void setLimits(const core::LimitsConfig& limits);
  // Connections currently open and requests being handled on them.
  size_t openConnections() const;
  size_t busyConnections() const;
  // Connections with a request being handled or response bytes not yet handed to the kernel:
  // what a drain waits for. Idle keep-alive connections do not count.
  size_t activeConnections() const;
  // Drain (SIGTERM): closes the listening socket at once, so new connection attempts are refused
  // by the kernel (connections still waiting in its accept queue are reset), while connections
  // already open keep being served. A connection accepted concurrently with the call is closed at
  // once. Idempotent; thread-safe; a no-op after stop(). Error (kInternal) when the listening
  // socket could not be identified at start(): new connections are then still closed as they
  // arrive, but the port stays bound until stop().
  core::Status stopAccepting();
  // Stops: closes all connections and joins the threads. Idempotent.
  void stop();

 private:
  ServerOptions options_;
  std::shared_ptr<ServerShared> shared_;
  std::unique_ptr<Pistache::Tcp::Listener> listener_;
  uint16_t port_ = 0;
  // Pistache keeps its listening descriptor private; start() finds it (listeningSockets() in the
  // .cpp) so that stopAccepting() can close it without stopping the reactor. -1 = unknown or
  // already closed.
  std::mutex accept_mu_;
  int listen_fd_ = -1;
  bool accept_stopped_ = false;
  std::thread housekeeper_;
  std::atomic<bool> stopping_{false};
};

}  // namespace keyway::daemon
