// Upstream outcomes for clients and metrics, and the relay of an uncached exchange to its client.
#include "core/upstream_relay.hpp"

#include <chrono>

#include "core/header_rules.hpp"
#include "core/text.hpp"

namespace keyway::core {

namespace {

UpstreamErrorKind errorKindFor(UpstreamFailure f) {
  switch (f) {
    case UpstreamFailure::kConnectFailed: return UpstreamErrorKind::kConnect;
    case UpstreamFailure::kTimeout: return UpstreamErrorKind::kTimeout;
    case UpstreamFailure::kSendFailed: return UpstreamErrorKind::kReset;
    case UpstreamFailure::kTls: return UpstreamErrorKind::kTls;
    case UpstreamFailure::kResponseTooLarge: return UpstreamErrorKind::kTooLarge;
    case UpstreamFailure::kProtocol:
    case UpstreamFailure::kCancelled:
    case UpstreamFailure::kNone: break;
  }
  return UpstreamErrorKind::kProtocol;
}

// One warn line per TLS failure (the sink rate-limits repeats of a line), so that an operator sees
// which upstream and why before a client reports its 502: with upstream name and reason only.
void warnTlsFailure(EventSink& events, const UpstreamConfig& upstream, const UpstreamOutcome& outcome) {
  if (outcome.failure != UpstreamFailure::kTls) return;
  std::string line = "upstream '" + upstream.name + "': ";
  if (isCertificateVerification(outcome.tls_problem)) {
    line += "TLS certificate verification failed: ";
    line += tlsProblemText(outcome.tls_problem);
  } else if (outcome.tls_problem != TlsProblem::kHandshake) {
    line += "TLS handshake failed: ";
    line += tlsProblemText(outcome.tls_problem);
  } else {
    line += outcome.message;
  }
  events.warn(line);
}

}  // namespace

Error errorForFailure(const UpstreamConfig& upstream, const UpstreamOutcome& outcome) {
  const std::string who = "upstream '" + upstream.name + "'";
  switch (outcome.failure) {
    case UpstreamFailure::kConnectFailed:
      return Error::make(ErrorCode::kUpstreamUnreachable,
                         who + " could not be reached (" + outcome.message + "); check its base_url and that it is up");
    case UpstreamFailure::kTimeout:
      return Error::make(ErrorCode::kUpstreamTimeout,
                         who + " did not answer in time (" + outcome.message + "); retry later or raise its timeout");
    case UpstreamFailure::kTls:
      // A certificate that does not verify is said to be one, and why in general words; never what
      // the certificate holds (outcome.message does not either).
      if (isCertificateVerification(outcome.tls_problem)) {
        return Error::make(ErrorCode::kUpstreamUnreachable,
                           "TLS certificate verification failed for " + who + ": " +
                               std::string(tlsProblemText(outcome.tls_problem)) +
                               "; keyway does not talk to an upstream whose certificate does not verify");
      }
      if (outcome.tls_problem != TlsProblem::kHandshake) {
        return Error::make(ErrorCode::kUpstreamUnreachable,
                           who + " failed the TLS handshake: " + std::string(tlsProblemText(outcome.tls_problem)) +
                               " (" + outcome.message + ")");
      }
      return Error::make(ErrorCode::kUpstreamUnreachable,
                         who + " failed the TLS handshake (" + outcome.message + "); check its base_url and tls settings");
    case UpstreamFailure::kResponseTooLarge:
      return Error::make(ErrorCode::kUpstreamUnreachable, who + " sent a response larger than max_response_bytes");
    case UpstreamFailure::kSendFailed:
    case UpstreamFailure::kProtocol:
    case UpstreamFailure::kCancelled:
    case UpstreamFailure::kNone:
      break;
  }
  return Error::make(ErrorCode::kUpstreamUnreachable,
                     who + " failed during the exchange (" + outcome.message + "); retry later");
}

void recordUpstreamOutcome(UpstreamMetrics* um, EventSink& events, const UpstreamConfig& upstream,
                           const UpstreamOutcome& outcome, int status) {
  if (um != nullptr) {
    um->upstream_latency.observe(outcome.elapsed);
    if (outcome.headers_received) {
      (outcome.connection_reused ? um->connections_reused : um->connections_new).fetch_add(1, std::memory_order_relaxed);
    }
    // Wall-clock time only for people reading /_keyway/status; nothing decides on it.
    const int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                               std::chrono::system_clock::now().time_since_epoch()).count();
    if (outcome.failure != UpstreamFailure::kNone && outcome.failure != UpstreamFailure::kCancelled) {
      const UpstreamErrorKind kind = errorKindFor(outcome.failure);
      um->errors[static_cast<size_t>(kind)].fetch_add(1, std::memory_order_relaxed);
      um->health.noteFailure(kind, now_ms, [&] { return errorForFailure(upstream, outcome).message; });
    } else if (outcome.failure == UpstreamFailure::kNone) {
      um->health.noteAnswer(status, now_ms);
    }
  }
  warnTlsFailure(events, upstream, outcome);
}

void traceUpstreamOutcome(const RequestTrace& trace, const UpstreamConfig& upstream, int status,
                          const UpstreamOutcome& outcome) {
  const bool failed = outcome.failure != UpstreamFailure::kNone;
  trace("upstream exchange",
        {{"upstream", upstream.name},
         {"status", outcome.headers_received || !failed ? status : 0},
         {"connection", !outcome.headers_received ? "-" : outcome.connection_reused ? "reused" : "new"},
         EventField::millis("upstream_ms", std::chrono::duration<double, std::milli>(outcome.elapsed).count()),
         {"failure", !failed                                          ? "none"
                     : outcome.failure == UpstreamFailure::kCancelled ? "cancelled"
                                                                      : upstreamErrorKindName(errorKindFor(outcome.failure))},
         {"detail", outcome.message}});
}

Headers relayedResponseHeaders(const UpstreamConfig& upstream, Headers headers) {
  Headers out = clientResponseHeaders(std::move(headers));
  // docs/bosa.md: the BOSA SDK crashes on a response without Content-Type, so keyway always sends
  // one (bytes of unknown type are application/octet-stream, RFC 9110 §8.3).
  if (upstream.protocol == Protocol::kBosa && !headerValue(out, "Content-Type")) {
    out.push_back({"Content-Type", "application/octet-stream"});
  }
  return out;
}

RelayObserver::RelayObserver(std::unique_ptr<RequestContext> ctx, std::shared_ptr<const UpstreamConfig> upstream,
                             std::shared_ptr<EventSink> events, std::function<void(int)> on_success)
    : ctx_(std::move(ctx)),
      upstream_(std::move(upstream)),
      events_(std::move(events)),
      on_success_(std::move(on_success)) {}

void RelayObserver::setCall(std::shared_ptr<UpstreamCall> call) {
  std::lock_guard<std::mutex> lock(call_mu_);
  call_ = std::move(call);
}

void RelayObserver::onHeaders(int status, std::string_view reason, Headers headers) {
  status_ = status;
  reason_ = std::string(reason);
  headers_ = relayedResponseHeaders(*upstream_, std::move(headers));
  headers_.push_back({"X-Keyway-Cache", "BYPASS"});
  const auto type = headerValue(headers_, "Content-Type");
  if (type && containsNoCase(*type, "text/event-stream") && !ctx_->responder().http10() && !ctx_->head()) {
    beginStream();
  }
}

bool RelayObserver::onBody(std::string_view chunk) {
  bytes_ += chunk.size();
  if (ctx_->head()) return true;
  if (!streaming_) {
    body_.append(chunk.data(), chunk.size());
    if (body_.size() > kStreamThreshold && !ctx_->responder().http10()) {
      beginStream();
      std::string pending;
      pending.swap(body_);
      return writeChunk(pending);
    }
    return true;
  }
  return writeChunk(chunk);
}

void RelayObserver::onComplete(const UpstreamOutcome& outcome) {
  ctx_->record().upstream_ms = std::chrono::duration<double, std::milli>(outcome.elapsed).count();
  recordUpstreamOutcome(ctx_->upstreamMetrics(), *events_, *upstream_, outcome, status_);
  if (ctx_->trace().on()) traceUpstreamOutcome(ctx_->trace(), *upstream_, status_, outcome);
  if (outcome.failure == UpstreamFailure::kNone) {
    if (on_success_ && status_ >= 200 && status_ < 300) on_success_(status_);
    if (streaming_) {
      ctx_->endStream(status_, true, bytes_);
    } else {
      HttpResponse response;
      response.status = status_;
      response.reason = std::move(reason_);
      response.headers = std::move(headers_);
      response.body = std::move(body_);
      ctx_->respond(std::move(response));
    }
  } else if (streaming_) {
    ctx_->record().error = "upstream_aborted";
    ctx_->record().cause = outcome.message;  // the client only sees a body cut short
    ctx_->endStream(status_, false, bytes_);
  } else {
    ctx_->respondError(errorForFailure(*upstream_, outcome));
  }
  std::lock_guard<std::mutex> lock(call_mu_);
  call_.reset();  // break the observer <-> call cycle
}

void RelayObserver::beginStream() {
  streaming_ = true;
  ctx_->responder().startStream(status_, reason_, std::move(headers_));
}

bool RelayObserver::writeChunk(std::string_view data) {
  bool paused = false;
  std::weak_ptr<RelayObserver> weak = weak_from_this();
  const bool alive = ctx_->responder().writeChunk(data, &paused, [weak] {
    if (auto self = weak.lock()) self->resume();
  });
  if (!alive) {
    cancel();
    return true;
  }
  return !paused;
}

void RelayObserver::resume() {
  std::lock_guard<std::mutex> lock(call_mu_);
  if (call_) call_->resume();
}

void RelayObserver::cancel() {
  std::lock_guard<std::mutex> lock(call_mu_);
  if (call_) call_->cancel();
}

}  // namespace keyway::core
