// core::UpstreamClient on libcurl's multi socket interface: the one upstream client of keyway,
// for http:// and https:// (TLS, HTTP/2), run by the listener's reactor threads or its own.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/metrics.hpp"
#include "core/upstream_client.hpp"
#include "daemon/reactor_guest.hpp"
#include "daemon/tls_trust.hpp"

namespace keyway::daemon {

struct CurlUpstreamClientOptions {
  // Event loops ("workers"), each with its own multi handles, connection pools, DNS cache, TLS
  // session cache and reusable easy handles. Requests started off a worker's thread are spread
  // round-robin. 0 is taken as 1.
  unsigned io_threads = 1;
  // No threads of its own: the io_threads loops are run by whoever hosts guests() (keywayd: the
  // main listener's reactor threads, one loop each). start() called on a hosting thread then
  // begins the exchange inline, and the response comes back on that thread: no thread hop.
  // Loops nobody hosts never run, so every guest must be hosted before requests are started.
  // Destroy the client on a thread that hosts none of its loops (keywayd: the main thread, after
  // the listeners stopped); exchanges still in flight then complete with kCancelled there.
  bool hosted = false;
  // Idle connections kept for reuse per pool and worker (CURLMOPT_MAXCONNECTS), when the pool
  // has no connection limit; a limited pool keeps up to its limit.
  long max_cached_connections = 8192;
  // Easy handles kept for reuse per pool and worker once their transfer ended; more are freed
  // (each holds ~20 KiB of buffers), so a burst does not stay in memory after it passed.
  size_t max_idle_handles = 128;
  // TLS is always verified. The CA stores, parsed once and shared by every connection (null:
  // the client makes its own); keywayd reloads them on SIGHUP.
  std::shared_ptr<TrustStores> trust;
  // Negotiate HTTP/2 via ALPN over TLS (plain http:// always uses HTTP/1.1).
  bool http2 = true;
  // TCP keepalive probes on upstream connections.
  std::chrono::seconds tcp_keepalive_idle{60};
  std::chrono::seconds tcp_keepalive_interval{30};
  // Upper bound on a response's status line + header block; more is a kProtocol failure.
  size_t max_header_bytes = 256u << 10;
  // Told (from any worker) when an observer threw; the client counts it too
  // (CurlStats::observer_failures). May be empty.
  std::function<void(std::string_view)> warn;
};

// Connections of one pool (all workers together).
struct PoolGauge {
  std::atomic<int64_t> open{0};  // sockets open now, idle pooled ones included
  std::atomic<int64_t> peak{0};  // the most that were ever open at once
};

struct PoolStats {
  std::string pool;
  int64_t open = 0;
  int64_t peak = 0;
};

// Counters for metrics. Monotonic except in_flight and open_connections.
struct CurlStats {
  uint64_t requests = 0;            // start() calls
  uint64_t connections_opened = 0;  // new upstream connections (CURLINFO_NUM_CONNECTS summed)
  uint64_t connections_reused = 0;  // exchanges served on an already open connection
  int64_t in_flight = 0;            // started and not yet completed
  // Upstream sockets open right now, idle pooled connections included (counted where libcurl
  // opens and closes them; a connect racing IPv6 against IPv4 briefly counts twice).
  int64_t open_connections = 0;
  std::vector<PoolStats> pools;  // by pool name
  uint64_t observer_failures = 0;  // observer callbacks that threw (a bug in the caller)
};

// Contract: core::UpstreamClient (core/upstream_client.hpp).
// - The URL is sent as given (no normalisation, no re-encoding; only http:// and https://).
// - Request headers go out exactly as given, in order; libcurl adds only Host (when absent) and
//   Content-Length (computed from the body; a caller's Content-Length / Transfer-Encoding is
//   dropped). No Accept, Expect, Content-Type or User-Agent of libcurl's own. An empty value is
//   sent as "Name:".
// - A body is sent for any method when non-empty, and always for POST/PUT/PATCH or when the
//   caller gave Content-Length. HEAD never reads a body.
// - No redirects, no decompression, no proxy (environment ignored). TLS is always verified; the
//   request's `tls` settings choose the CA file and the client certificate (daemon/curl_tls.hpp).
// - Connection pools: one per UpstreamRequest::pool (and TLS settings) and worker. A pool with
//   max_connections > 0 holds at most max_connections / io_threads connections per worker (at
//   least 1); requests beyond that wait for a connection (their timeouts run), they do not
//   fail. Over TLS, HTTP/2 is negotiated when the upstream offers it, and then a pool's
//   requests share connections.
// - Invalid input (a method that is not a token, a header name that is not a token, CR/LF/NUL in
//   a value, a URL that is not http(s) or does not parse) completes with kProtocol and a message
//   saying which part is invalid; nothing is sent.
// - Backpressure: onBody returning false pauses the transfer (the socket is no longer read);
//   resume() continues it. A resume() that arrives while the transfer is not paused is ignored.
// Threading: start(), stats() and every UpstreamCall method are thread-safe and never block on
// I/O. Observer callbacks run on a worker's thread and may call start(), cancel() and resume()
// (those are queued, never re-entrant). Observers must not block.
// Lifetime: the destructor cancels every exchange in flight (onComplete(kCancelled)) and joins
// its threads. A start() issued after shutdown began (e.g. from an observer's onComplete)
// completes at once with kCancelled on the calling thread. UpstreamCall handles and hosted
// guests may outlive the client (then no-ops).
class CurlUpstreamClient final : public core::UpstreamClient {
 public:
  explicit CurlUpstreamClient(CurlUpstreamClientOptions options = {});
  ~CurlUpstreamClient() override;

  CurlUpstreamClient(const CurlUpstreamClient&) = delete;
  CurlUpstreamClient& operator=(const CurlUpstreamClient&) = delete;

  std::shared_ptr<core::UpstreamCall> start(core::UpstreamRequest request,
                                            std::shared_ptr<core::UpstreamObserver> observer) override;

  CurlStats stats() const;

  // Completes every exchange in flight with kCancelled and stops the loops (the destructor does
  // the same). Later start() calls complete at once with kCancelled. Idempotent; never call it
  // from a worker's or hosting thread.
  void shutdown();

  // The loops to host (options.hosted), one per io_thread; empty otherwise.
  std::vector<std::shared_ptr<ReactorGuest>> guests() const;

  // Liveness probe for a watchdog: asks every worker to answer through its command queue and
  // waits until all did or `deadline` passed. True only if every worker answered, which proves
  // none is stuck (in a callback, a lock, a blocking call) and, hosted, that its reactor thread
  // runs. Blocks the caller for at most `deadline`: never call it from a worker or an observer.
  // False once shutdown began.
  bool probeIoThreads(std::chrono::milliseconds deadline);

 private:
  class Worker;
  // Striped (core/metrics.hpp): every exchange counts on the thread it runs on.
  struct Counters {
    core::StripedCounter requests;
    core::StripedCounter connections_opened;
    core::StripedCounter connections_reused;
    core::StripedGauge in_flight;
    core::StripedCounter observer_failures;
    std::function<void(std::string_view)> warn;
    // An observer threw: counted and told; the exchange goes on ending as it was.
    void observerFailed(std::string_view where);
    std::atomic<int64_t> open_sockets{0};  // per connection, not per exchange
    // Per pool; entries are never removed, so a connection may keep a pointer to its gauge.
    PoolGauge* gauge(const std::string& pool);
    mutable std::mutex pools_mu;
    std::map<std::string, std::unique_ptr<PoolGauge>> pools;
  };

  CurlUpstreamClientOptions options_;
  std::shared_ptr<Counters> counters_;
  std::vector<std::shared_ptr<Worker>> workers_;
  std::atomic<size_t> next_worker_{0};
  std::atomic<bool> shut_down_{false};
  uint64_t client_id_ = 0;
};

}  // namespace keyway::daemon
