// One client request from arrival to its answer: the transport's Responder, the access record,
// the timings and the metrics it counts in, with one place (finish) where every answer is
// accounted for, whichever way it leaves (keyway's own answer, upstream, cache, stream).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>

#include "core/clock.hpp"
#include "core/errors.hpp"
#include "core/http_types.hpp"
#include "core/metrics.hpp"

namespace keyway::core {

// The outgoing side of one request, implemented by the server. Thread-safe: the gateway may call it
// from a server thread or from the upstream client's thread. Either send() once, or startStream()
// then writeChunk()* then endStream() / abortStream().
class Responder {
 public:
  virtual ~Responder() = default;
  virtual void send(HttpResponse response) = 0;
  virtual void startStream(int status, std::string_view reason, Headers headers) = 0;
  // Returns false when the client is gone. `drained` (may be empty) is called once, from any
  // thread, when the bytes queued for the client drop below the low-water mark after this call
  // found them above the high-water mark; `*paused` tells the caller whether that happened.
  virtual bool writeChunk(std::string_view data, bool* paused, std::function<void()> drained) = 0;
  virtual void endStream() = 0;
  virtual void abortStream() = 0;  // the body cannot be completed: close the connection
  // True if the request arrived over HTTP/1.0 (no chunked framing available).
  virtual bool http10() const = 0;
};

// Where the request came in.
struct ListenerContext {
  bool main = true;           // main listener (mounts) vs compat listener
  std::string compat_upstream;  // for compat listeners: the upstream served at the root
  std::string peer;           // client address, for logs
};

// One line of the access log (docs/operations.md). Never carries a secret or token: only names,
// codes and the message keyway itself answered with.
struct AccessRecord {
  std::string client;     // client name, "-" if unauthenticated
  std::string team;       // "-" if unknown
  std::string upstream;   // "-" for keyway's own endpoints
  std::string method;
  std::string path;       // without the query (queries may carry identifiers)
  int status = 0;
  std::string cache = "BYPASS";
  std::string credential;  // secret name injected ("" if none) and its scope, for the audit trail
  std::string credential_scope;
  std::string user;        // the BOSA user the request acts as (or asked to act as), "" for none
  // How the BOSA user token was had: "kept" (a token still valid) or "minted" (minted for this
  // request, or by a concurrent one it waited for); empty without a user token. Static strings.
  std::string_view user_token;
  double upstream_ms = -1;  // -1 if no upstream exchange
  double total_ms = 0;
  size_t bytes_in = 0;
  size_t bytes_out = 0;
  std::string error;      // keyway error code, if any
  // Why, for an error: the message the client was told (docs/errors.md: no secret, token or
  // request target in it), or a more precise one for the operator where the client's message is
  // deliberately vague (an unknown BOSA user and an ungranted one are answered alike).
  std::string cause;
  std::string listener;   // "main" or "compat"
  std::string peer;
  uint64_t request_id = 0;  // set when the request writes debug lines (RequestTrace), else 0
};

// One fact of a log line: a key and a text, integer, millisecond or boolean value. Texts are
// names, codes and messages: never a secret, a token or a request target's query. Views only:
// the line is written before the call that got the field returns.
struct EventField {
  enum class Kind { kText, kInteger, kMillis, kBool };
  EventField(std::string_view k, std::string_view v) : key(k), text(v) {}
  EventField(std::string_view k, const char* v) : key(k), text(v) {}
  EventField(std::string_view k, const std::string& v) : key(k), text(v) {}
  template <typename T, std::enable_if_t<std::is_integral_v<T> && !std::is_same_v<T, bool>, int> = 0>
  EventField(std::string_view k, T v) : key(k), kind(Kind::kInteger), integer(static_cast<int64_t>(v)) {}
  EventField(std::string_view k, bool v) : key(k), kind(Kind::kBool), integer(v ? 1 : 0) {}
  static EventField millis(std::string_view k, double ms) {
    EventField f(k, std::string_view());
    f.kind = Kind::kMillis;
    f.number = ms;
    return f;
  }

  std::string_view key;
  Kind kind = Kind::kText;
  std::string_view text;
  int64_t integer = 0;
  double number = 0;
};

class EventSink {
 public:
  virtual ~EventSink() = default;
  virtual void access(const AccessRecord& record) = 0;
  // A warn line; repeats of the same message about the same subject (its fields, except a
  // free-text `cause` or `error`) may be counted instead of written.
  virtual void warn(std::string_view message, std::initializer_list<EventField> fields = {}) = 0;
  // Whether debug() writes anything (log.level: debug). Cheap: checked once per request.
  virtual bool debugEnabled() const { return false; }
  // One debug line about request `request` (its number, also on its access line), `at_ms` after
  // it started (< 0: not given).
  virtual void debug(uint64_t /*request*/, double /*at_ms*/, std::string_view /*message*/,
                     std::initializer_list<EventField> /*fields*/) {}
};

// What every request's bookkeeping uses; owned by the gateway, shared by its requests.
struct RequestServices {
  std::shared_ptr<Metrics> metrics;
  std::shared_ptr<EventSink> events;
  std::shared_ptr<Clock> clock;
};

// A request's debug lines (log.level: debug, docs/operations.md). Off (and free: no request
// number, no formatting) unless debug was on when the request started; callers check on()
// before they build fields. Cheap to copy, so a stage that no longer holds the RequestContext (a
// cache fill, a retry hook) still writes lines under the request's number. Thread-safe.
class RequestTrace {
 public:
  RequestTrace() = default;
  bool on() const { return services_ != nullptr; }
  uint64_t id() const { return id_; }
  void operator()(std::string_view message, std::initializer_list<EventField> fields = {}) const;

 private:
  friend class RequestContext;
  std::shared_ptr<const RequestServices> services_;  // null when off
  uint64_t id_ = 0;
  std::chrono::steady_clock::time_point start_;
};

// Owns one request's answer. Exactly one of the answering calls below is made (each ends with
// finish(): status, bytes and total time into the record; the status class, latency and cache
// counters; the in-flight gauge; then the access line). A context destroyed without an answer
// (an exception, a lost callback) answers 500 `internal` itself and says so in the log, so that no
// client ever waits for a request keyway forgot. Not thread-safe: one thread at a time, which
// may change as the request moves (server thread, upstream client's thread).
class RequestContext {
 public:
  RequestContext(std::shared_ptr<const RequestServices> services, std::shared_ptr<Responder> responder,
                 std::chrono::steady_clock::time_point start, bool head);
  ~RequestContext();
  RequestContext(const RequestContext&) = delete;
  RequestContext& operator=(const RequestContext&) = delete;

  AccessRecord& record() { return record_; }
  const AccessRecord& record() const { return record_; }
  // The upstream the request is for: the record's name and the metrics it counts in.
  void setUpstream(const std::string& name);
  UpstreamMetrics* upstreamMetrics() const { return upstream_metrics_; }
  std::chrono::steady_clock::time_point start() const { return start_; }
  bool head() const { return head_; }
  bool answered() const { return answered_; }
  Responder& responder() { return *responder_; }
  const RequestTrace& trace() const { return trace_; }

  // A buffered answer (keyway's own, the upstream's, a cached one): sent as it is. `cache` is the
  // X-Keyway-Cache result it counts as (already in the response's headers when it matters).
  void respond(HttpResponse response, std::string_view cache = "BYPASS");
  // keyway's JSON error (docs/errors.md); on an upstream route it says X-Keyway-Cache: BYPASS.
  // The access line gets its code and, as its cause, `cause` when given, else its message.
  // `status` (non-zero) replaces the code's status (408 for a request that did not arrive in time).
  void respondError(const Error& error, std::string_view cause = {}, int status = 0);
  // A streamed answer: its head went out through responder().startStream() and its body through
  // writeChunk(); this ends it (`complete`) or cuts it (the connection is closed) and finishes.
  void endStream(int status, bool complete, size_t bytes_out);

 private:
  void finish(int status, size_t bytes_out, std::string_view cache);

  std::shared_ptr<const RequestServices> services_;
  std::shared_ptr<Responder> responder_;
  std::chrono::steady_clock::time_point start_;
  bool head_;
  bool answered_ = false;
  UpstreamMetrics* upstream_metrics_ = nullptr;
  AccessRecord record_;
  RequestTrace trace_;
};

}  // namespace keyway::core
