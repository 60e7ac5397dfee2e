// One request's answer and its bookkeeping, in one place.
#include "core/request_context.hpp"

#include <atomic>

namespace keyway::core {

namespace {
// Request numbers for debug lines; only requests started with debug on take one, so the shared
// counter costs nothing at info.
std::atomic<uint64_t> next_request_id{1};
}  // namespace

void RequestTrace::operator()(std::string_view message, std::initializer_list<EventField> fields) const {
  if (!services_) return;
  const double at_ms = std::chrono::duration<double, std::milli>(services_->clock->monotonicNow() - start_).count();
  services_->events->debug(id_, at_ms, message, fields);
}

RequestContext::RequestContext(std::shared_ptr<const RequestServices> services, std::shared_ptr<Responder> responder,
                               std::chrono::steady_clock::time_point start, bool head)
    : services_(std::move(services)), responder_(std::move(responder)), start_(start), head_(head) {
  record_.client = "-";
  record_.team = "-";
  record_.upstream = "-";
  services_->metrics->in_flight.fetch_add(1, std::memory_order_relaxed);
  if (services_->events->debugEnabled()) {
    trace_.services_ = services_;
    trace_.id_ = next_request_id.fetch_add(1, std::memory_order_relaxed);
    trace_.start_ = start_;
    record_.request_id = trace_.id_;
  }
}

RequestContext::~RequestContext() {
  if (answered_) return;
  // Every path answers before it lets go of its context; reaching this is a bug in keyway (an
  // exception thrown midway, a callback never called). The client still gets an answer.
  services_->events->warn("a request was left without an answer; answering 500 internal");
  try {
    respondError(Error::make(ErrorCode::kInternal, "keyway failed to handle this request; see its log"));
  } catch (...) {
    // A destructor must not throw; the warn line above already reported the request.
    answered_ = true;
  }
}

void RequestContext::setUpstream(const std::string& name) {
  record_.upstream = name;
  upstream_metrics_ = services_->metrics->upstreamByName(name);
}

void RequestContext::respond(HttpResponse response, std::string_view cache) {
  const size_t bytes = head_ ? 0 : response.body.size();
  const int status = response.status;
  answered_ = true;
  // The counters move before the client can see the answer, so that a scrape made after a
  // response arrived already counts it.
  finish(status, bytes, cache);
  responder_->send(std::move(response));
  services_->events->access(record_);
}

void RequestContext::respondError(const Error& error, std::string_view cause, int status) {
  record_.error = errorCodeName(error.code);
  record_.cause.assign(cause.empty() ? std::string_view(error.message) : cause);
  HttpResponse response = errorResponse(error);
  if (status != 0) {
    response.status = status;
    response.reason = std::string(reasonPhrase(status));
  }
  // Every response on an upstream route says how the cache treated it (docs/cache.md).
  if (record_.upstream != "-") response.headers.push_back({"X-Keyway-Cache", "BYPASS"});
  if (response.status == 401 || response.status == 403) {
    services_->metrics->auth_failures.fetch_add(1, std::memory_order_relaxed);
  }
  respond(std::move(response), "BYPASS");
}

void RequestContext::endStream(int status, bool complete, size_t bytes_out) {
  answered_ = true;
  finish(status, bytes_out, "BYPASS");
  if (complete) {
    responder_->endStream();
  } else {
    // Headers already went out: the only honest signal left is an incomplete body.
    responder_->abortStream();
  }
  services_->events->access(record_);
}

void RequestContext::finish(int status, size_t bytes_out, std::string_view cache) {
  const auto now = services_->clock->monotonicNow();
  record_.status = status;
  record_.bytes_out = bytes_out;
  record_.cache = std::string(cache);
  record_.total_ms = std::chrono::duration<double, std::milli>(now - start_).count();
  Metrics& metrics = *services_->metrics;
  if (upstream_metrics_ != nullptr) {
    upstream_metrics_->responses_by_class[statusClassIndex(status)].fetch_add(1, std::memory_order_relaxed);
    upstream_metrics_->total_latency.observe(now - start_);
    if (cache == "HIT") {
      upstream_metrics_->cache_hits.fetch_add(1, std::memory_order_relaxed);
    } else if (cache == "STALE") {
      upstream_metrics_->cache_stale.fetch_add(1, std::memory_order_relaxed);
    } else if (cache == "MISS") {
      upstream_metrics_->cache_misses.fetch_add(1, std::memory_order_relaxed);
    }
  } else {
    metrics.local_responses_by_class[statusClassIndex(status)].fetch_add(1, std::memory_order_relaxed);
  }
  metrics.in_flight.fetch_sub(1, std::memory_order_relaxed);
}

}  // namespace keyway::core
