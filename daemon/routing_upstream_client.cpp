// RoutingUpstreamClient: picks the client per URL scheme and merges their stats.
#include "daemon/routing_upstream_client.hpp"

#include <algorithm>
#include <utility>

namespace keyway::daemon {
namespace {

class FinishedCall final : public core::UpstreamCall {
 public:
  void cancel() override {}
  void resume() override {}
};

}  // namespace

RoutingUpstreamClient::RoutingUpstreamClient(std::unique_ptr<CurlUpstreamClient> curl,
                                             std::unique_ptr<Http1UpstreamClient> http1)
    : curl_(std::move(curl)), http1_(std::move(http1)) {}

RoutingUpstreamClient::~RoutingUpstreamClient() {
  // An observer's onComplete may start a retry through this router while the clients shut down:
  // from now on start() completes it at once (kCancelled) instead of reaching a client.
  closing_.store(true, std::memory_order_release);
  http1_.reset();
  curl_.reset();
}

std::shared_ptr<core::UpstreamCall> RoutingUpstreamClient::start(core::UpstreamRequest request,
                                                                 std::shared_ptr<core::UpstreamObserver> observer) {
  if (closing_.load(std::memory_order_acquire)) {
    core::UpstreamOutcome outcome;
    outcome.failure = core::UpstreamFailure::kCancelled;
    outcome.message = "cancelled: upstream client is shutting down";
    if (observer) {
      try {
        observer->onComplete(outcome);
      } catch (...) {
      }
    }
    return std::make_shared<FinishedCall>();
  }
  if (http1_ && Http1UpstreamClient::handles(request.url)) {
    return http1_->start(std::move(request), std::move(observer));
  }
  return curl_->start(std::move(request), std::move(observer));
}

UpstreamClientStats RoutingUpstreamClient::stats() const {
  const CurlStats c = curl_->stats();
  UpstreamClientStats out{c.requests, c.connections_opened, c.connections_reused, c.in_flight, c.open_connections};
  if (http1_) {
    const Http1Stats h = http1_->stats();
    out.requests += h.requests;
    out.connections_opened += h.connections_opened;
    out.connections_reused += h.connections_reused;
    out.in_flight += h.in_flight;
    out.open_connections += h.open_connections;
  }
  return out;
}

bool RoutingUpstreamClient::probeIoThreads(std::chrono::milliseconds deadline) {
  const auto began = std::chrono::steady_clock::now();
  if (http1_ && !http1_->probeIoThreads(deadline)) return false;
  const auto spent = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - began);
  return curl_->probeIoThreads(std::max(deadline - spent, std::chrono::milliseconds(1)));
}

}  // namespace keyway::daemon
