// core::UpstreamClient for plain http:// upstreams: a lean native HTTP/1.1 client (epoll I/O
// threads, keep-alive pool) and the incremental response parser it runs on.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/http_types.hpp"
#include "core/metrics.hpp"
#include "core/upstream_client.hpp"
#include "daemon/reactor_guest.hpp"

namespace keyway::daemon {

// Incremental HTTP/1.1 response parser (RFC 9112), push style: feed() it bytes as they arrive.
// It parses the head in place when a whole head arrives in one piece (copies only a head split
// over reads), skips 1xx responses, de-chunks, and hands body bytes out as views into the input.
// Not thread-safe; one instance per exchange (reset() to reuse). Never throws on any input
// (std::bad_alloc aside); every malformed input ends in kError with a message that quotes no
// header value.
class Http1ResponseParser {
 public:
  struct Sink {
    virtual ~Sink() = default;
    // The final status line and headers (Content-Length / Transfer-Encoding removed).
    // Return false to abort: feed() then returns with state kAborted.
    virtual bool onHead(int status, std::string_view reason, core::Headers headers) = 0;
    // Body bytes (de-chunked). Return kPause to make feed() return right after this piece.
    enum class BodyAction { kContinue, kPause, kAbort };
    virtual BodyAction onBody(std::string_view chunk) = 0;
  };
  enum class State { kHead, kBody, kDone, kError, kAborted };

  explicit Http1ResponseParser(size_t max_header_bytes = 256u << 10) : max_header_bytes_(max_header_bytes) {}

  // Starts a new response. `head_request`: the request was HEAD (no body, whatever the headers).
  void reset(bool head_request);
  // Consumes bytes; returns how many were used. Stops early when the response is complete
  // (kDone: the rest is not part of it), on a pause requested by onBody (the rest must be fed
  // again later), on an error or on an abort.
  size_t feed(const char* data, size_t size, Sink& sink);
  // The peer closed the connection. Returns the state after it: kDone when the body was
  // delimited by the close (or already complete), kError when the response was cut short.
  State finishOnEof();

  State state() const { return state_; }
  const std::string& error() const { return error_; }
  // Why the last error happened, for classification: the response was cut short by the close
  // (vs. malformed).
  bool cutShort() const { return cut_short_; }
  // True once any byte of a response was consumed.
  bool anyByte() const { return any_byte_; }
  bool headDelivered() const { return head_delivered_; }
  // After kDone: whether the connection may carry another exchange (HTTP/1.1 without
  // "Connection: close", HTTP/1.0 with keep-alive, body not delimited by the close).
  bool keepAlive() const { return keep_alive_; }
  int status() const { return status_; }

 private:
  enum class BodyMode { kNone, kLength, kChunked, kUntilClose };
  enum class ChunkState { kSize, kData, kDataCrlf, kTrailer };

  size_t feedHead(const char* data, size_t size, Sink& sink);
  // Parses one complete head (status line .. final empty line, `head` excludes nothing).
  bool parseHead(std::string_view head, Sink& sink);
  size_t feedBody(const char* data, size_t size, Sink& sink);
  size_t feedChunked(const char* data, size_t size, Sink& sink);
  bool deliver(std::string_view bytes, Sink& sink, bool& pause);
  void fail(std::string message);

  size_t max_header_bytes_;
  State state_ = State::kHead;
  std::string error_;
  bool head_request_ = false;
  bool cut_short_ = false;
  bool any_byte_ = false;
  bool head_delivered_ = false;
  bool keep_alive_ = false;
  int status_ = 0;
  std::string head_buf_;  // a head split across feeds
  size_t head_bytes_ = 0;  // every head so far (1xx included), against max_header_bytes
  size_t head_scan_ = 0;  // where to resume looking for the end of the head in head_buf_
  BodyMode body_mode_ = BodyMode::kNone;
  uint64_t remaining_ = 0;  // kLength: bytes left; kChunked: bytes left in the current chunk
  ChunkState chunk_state_ = ChunkState::kSize;
  std::string line_buf_;  // a chunk-size or trailer line split across feeds
  size_t trailer_bytes_ = 0;
  bool pause_requested_ = false;
};

struct Http1UpstreamClientOptions {
  // I/O threads, each with its own epoll loop and connection pool. Requests are spread
  // round-robin. 0 is taken as 1.
  unsigned io_threads = 1;
  // Idle keep-alive connections kept per I/O thread, per host:port and in all.
  size_t max_idle_per_host = 1024;
  size_t max_idle_connections = 8192;
  // A pooled connection idle for longer is closed (libcurl's default max age is 118 s).
  std::chrono::seconds max_idle_time{118};
  // Host names (not numeric addresses) are resolved on a resolver thread; answers are cached
  // per I/O thread this long (libcurl's DNS cache default).
  std::chrono::seconds dns_cache_time{60};
  // TCP keepalive probes on upstream connections.
  std::chrono::seconds tcp_keepalive_idle{60};
  std::chrono::seconds tcp_keepalive_interval{30};
  // Upper bound on a response's status line + header block (1xx included); more is kProtocol.
  size_t max_header_bytes = 256u << 10;
  // No threads of its own: the io_threads loops are run by whoever hosts guests() (keywayd: the
  // main listener's reactor threads, one loop each). start() called on a hosting thread then
  // begins the exchange inline, and the response comes back on that thread: no thread hop.
  // Loops nobody hosts never run, so every guest must be hosted before requests are started.
  // Observers then run on the hosting threads. Destroy the client on a thread that hosts none of
  // its loops (keywayd: the main thread, after the listeners stopped); exchanges still in flight
  // complete with kCancelled on the destroying thread.
  bool hosted = false;
};

// Counters for metrics. Monotonic except in_flight and open_connections (same meaning as
// CurlStats).
struct Http1Stats {
  uint64_t requests = 0;
  uint64_t connections_opened = 0;  // connections established
  uint64_t connections_reused = 0;  // exchanges completed on an already open connection
  int64_t in_flight = 0;
  int64_t open_connections = 0;     // sockets open now, idle pooled ones included
};

// Contract: core::UpstreamClient (core/upstream_client.hpp), the same as CurlUpstreamClient's
// (daemon/curl_upstream_client.hpp) for http:// URLs, which are the only ones it takes:
// - The request-target is the URL's bytes after host[:port], verbatim ("/" when empty); method
//   and headers go out exactly as given, in order. Only Host (when absent, first) and
//   Content-Length (computed; a caller's Content-Length / Transfer-Encoding is dropped) are
//   added. A body is sent when non-empty, and always (maybe "Content-Length: 0") for POST, PUT,
//   PATCH or when the caller gave Content-Length; never for HEAD.
// - Invalid input (method or header name not a token, CR/LF/NUL in a value, a URL that is not
//   http:// or does not parse, userinfo in the URL) completes with kProtocol, nothing sent.
// - No redirects, no decompression, no proxy. Responses: 1xx skipped; HEAD/204/304 bodiless;
//   bodies by Content-Length, chunked or until close. Failures are classified as libcurl's are
//   by CurlUpstreamClient: refused/unresolvable -> kConnectFailed; timeouts -> kTimeout; reset
//   or close before the response completed -> kSendFailed; malformed (status line, header,
//   chunk size, conflicting Content-Length, head over max_header_bytes, head cut short) ->
//   kProtocol; body over max_response_bytes (unless allow_streaming) -> kResponseTooLarge.
// - A pooled connection that fails before any response byte arrived (closed by the upstream
//   while idle) is retried once on a new connection.
// - Backpressure: onBody returning false stops reading that socket until resume().
// Threading and lifetime: exactly as CurlUpstreamClient (start/stats/cancel/resume thread-safe
// and non-blocking; observers run on the I/O threads and may call start/cancel/resume; the
// destructor completes every exchange with kCancelled and joins the threads, waiting for a name
// lookup in progress; start() after shutdown began completes at once with kCancelled).
class Http1UpstreamClient final : public core::UpstreamClient {
 public:
  explicit Http1UpstreamClient(Http1UpstreamClientOptions options = {});
  ~Http1UpstreamClient() override;

  Http1UpstreamClient(const Http1UpstreamClient&) = delete;
  Http1UpstreamClient& operator=(const Http1UpstreamClient&) = delete;

  // True for the URLs this client serves: scheme http (any case).
  static bool handles(std::string_view url);

  std::shared_ptr<core::UpstreamCall> start(core::UpstreamRequest request,
                                            std::shared_ptr<core::UpstreamObserver> observer) override;

  Http1Stats stats() const;

  // Completes every exchange in flight with kCancelled and stops the loops (the destructor does
  // the same). Later start() calls complete at once with kCancelled. Idempotent; never call it
  // from an I/O or hosting thread.
  void shutdown();

  // The loops to host (options.hosted), one per io_thread; empty otherwise. A guest may outlive
  // the client: after the client's destructor it does nothing.
  std::vector<std::shared_ptr<ReactorGuest>> guests() const;

  // As CurlUpstreamClient::probeIoThreads: true only if every I/O thread answered through its
  // command queue before `deadline`. Never call from an I/O thread or an observer.
  bool probeIoThreads(std::chrono::milliseconds deadline);

 private:
  class Worker;
  class Resolver;
  // Striped (core/metrics.hpp): every exchange counts on the thread it runs on.
  struct Counters {
    core::StripedCounter requests;
    core::StripedCounter connections_opened;
    core::StripedCounter connections_reused;
    core::StripedGauge in_flight;
    std::atomic<int64_t> open_sockets{0};  // per connection, not per exchange
  };

  Http1UpstreamClientOptions options_;
  std::shared_ptr<Counters> counters_;
  std::unique_ptr<Resolver> resolver_;
  std::vector<std::shared_ptr<Worker>> workers_;
  std::atomic<size_t> next_worker_{0};
  uint64_t client_id_ = 0;
};

}  // namespace keyway::daemon
