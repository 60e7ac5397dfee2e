// What an upstream exchange's outcome means for the client and for the metrics, and the observer
// that relays an uncached exchange to the client (buffered when small, streamed when large or an
// event stream).
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "core/config.hpp"
#include "core/errors.hpp"
#include "core/request_context.hpp"
#include "core/upstream_client.hpp"

namespace keyway::core {

// keyway's answer (docs/errors.md) to an exchange that failed: 502 upstream_unreachable or 504
// upstream_timeout, saying which upstream and what to check; a TLS verification failure says so
// and why, in general words only (docs/operations.md, "TLS to upstreams").
Error errorForFailure(const UpstreamConfig& upstream, const UpstreamOutcome& outcome);

// Counts an ended exchange in the upstream's metrics (latency, connection reused or new, the kind
// of failure, its health: `status` is the HTTP status it answered, when it did) and writes the
// warn line a TLS failure deserves. `um` may be null.
void recordUpstreamOutcome(UpstreamMetrics* um, EventSink& events, const UpstreamConfig& upstream,
                           const UpstreamOutcome& outcome, int status);

// The debug line of an ended exchange (`trace` on): upstream (its connection pool), the status
// when one came, whether a pooled connection was reused, the time, and the failure if any.
void traceUpstreamOutcome(const RequestTrace& trace, const UpstreamConfig& upstream, int status,
                          const UpstreamOutcome& outcome);

// Response headers as the client gets them from an upstream: hop-by-hop ones dropped, and a
// Content-Type guaranteed on BOSA upstreams (the BOSA SDK fails on a response without one).
Headers relayedResponseHeaders(const UpstreamConfig& upstream, Headers headers);

// Relays one exchange to the request's client. Small bodies are buffered and sent with an exact
// Content-Length; from kStreamThreshold on, and for text/event-stream, the body is streamed as it
// arrives, with the client's backpressure pausing the upstream. `on_success` (may be empty) runs
// after a 2xx, before the answer is sent (write invalidation).
class RelayObserver final : public UpstreamObserver, public std::enable_shared_from_this<RelayObserver> {
 public:
  static constexpr size_t kStreamThreshold = 256u << 10;

  // `upstream` points into the request's config snapshot, which it keeps alive.
  RelayObserver(std::unique_ptr<RequestContext> ctx, std::shared_ptr<const UpstreamConfig> upstream,
                std::shared_ptr<EventSink> events, std::function<void(int)> on_success);

  // The exchange, so that a client going away can cancel it and backpressure pause it.
  void setCall(std::shared_ptr<UpstreamCall> call);

  void onHeaders(int status, std::string_view reason, Headers headers) override;
  bool onBody(std::string_view chunk) override;
  void onComplete(const UpstreamOutcome& outcome) override;

 private:
  void beginStream();
  bool writeChunk(std::string_view data);
  void resume();
  void cancel();

  std::unique_ptr<RequestContext> ctx_;
  std::shared_ptr<const UpstreamConfig> upstream_;
  std::shared_ptr<EventSink> events_;
  std::function<void(int)> on_success_;
  bool streaming_ = false;
  int status_ = 502;
  std::string reason_;
  Headers headers_;
  std::string body_;
  size_t bytes_ = 0;
  std::mutex call_mu_;
  std::shared_ptr<UpstreamCall> call_;
};

}  // namespace keyway::core
