// core::UpstreamClient on libcurl's multi interface: pooled connections, streaming, own I/O threads.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/upstream_client.hpp"

namespace keyway::daemon {

struct CurlUpstreamClientOptions {
  // I/O threads, each with its own multi handle, connection cache, DNS cache and TLS session
  // cache. Requests are spread round-robin. 0 is taken as 1.
  unsigned io_threads = 1;
  // Connection limits for the whole client (split evenly across I/O threads, rounded up);
  // 0 = no limit. Requests over a limit wait in libcurl's queue (their timeouts still run).
  long max_total_connections = 0;
  long max_host_connections = 0;
  // Size of each I/O thread's connection cache (CURLMOPT_MAXCONNECTS): how many connections are
  // kept for reuse. Sized for thousands of concurrent requests.
  long max_cached_connections = 8192;
  // Easy handles kept for reuse per I/O thread once their transfer ended.
  size_t max_idle_handles = 512;
  // Negotiate HTTP/2 via ALPN over TLS (plain http:// always uses HTTP/1.1).
  bool http2 = true;
  // TCP keepalive probes on upstream connections.
  std::chrono::seconds tcp_keepalive_idle{60};
  std::chrono::seconds tcp_keepalive_interval{30};
  // Upper bound on a response's status line + header block; more is a kProtocol failure.
  size_t max_header_bytes = 256u << 10;
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
// - Invalid input (a method that is not a token, a header name that is not a token, CR/LF/NUL in
//   a value, a URL that is not http(s) or does not parse) completes with kProtocol and a message
//   saying which part is invalid; nothing is sent.
// - Backpressure: onBody returning false pauses the transfer (the socket is no longer read);
//   resume() continues it. A resume() that arrives while the transfer is not paused is ignored.
// Threading: start(), stats() and every UpstreamCall method are thread-safe and never block on
// I/O. Observer callbacks run on one of the client's I/O threads and may call start(), cancel()
// and resume() (those are queued, never re-entrant). Observers must not block.
// Lifetime: the destructor cancels every exchange in flight (onComplete(kCancelled) on the I/O
// thread) and joins the threads. A start() issued after shutdown began (e.g. from an observer's
// onComplete) completes at once with kCancelled on the calling thread. UpstreamCall handles may
// outlive the client (then no-ops).
class CurlUpstreamClient final : public core::UpstreamClient {
 public:
  explicit CurlUpstreamClient(CurlUpstreamClientOptions options = {});
  ~CurlUpstreamClient() override;

  CurlUpstreamClient(const CurlUpstreamClient&) = delete;
  CurlUpstreamClient& operator=(const CurlUpstreamClient&) = delete;

  std::shared_ptr<core::UpstreamCall> start(core::UpstreamRequest request,
                                            std::shared_ptr<core::UpstreamObserver> observer) override;

  CurlStats stats() const;

  // Liveness probe for a watchdog: asks every I/O thread to answer through its command queue
  // and waits until all did or `deadline` passed. True only if every thread answered, which
  // proves none is stuck (in a callback, a lock, a blocking call). Blocks the caller for at most
  // `deadline`: never call it from an I/O thread or an observer. False once shutdown began.
  bool probeIoThreads(std::chrono::milliseconds deadline);

 private:
  class Worker;  // one I/O thread
  struct Counters {
    std::atomic<uint64_t> requests{0};
    std::atomic<uint64_t> connections_opened{0};
    std::atomic<uint64_t> connections_reused{0};
    std::atomic<int64_t> in_flight{0};
    std::atomic<int64_t> open_sockets{0};
  };

  CurlUpstreamClientOptions options_;
  std::shared_ptr<Counters> counters_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::atomic<size_t> next_worker_{0};
};

}  // namespace keyway::daemon
