// core::UpstreamClient that sends plain http:// URLs to the native HTTP/1.1 client and every
// other URL (https://: TLS, HTTP/2) to the libcurl client; one face for stats and the watchdog.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>

#include "core/upstream_client.hpp"
#include "daemon/curl_upstream_client.hpp"
#include "daemon/http1_upstream_client.hpp"

namespace keyway::daemon {

// The sum of both clients' counters (same meanings as CurlStats / Http1Stats).
struct UpstreamClientStats {
  uint64_t requests = 0;
  uint64_t connections_opened = 0;
  uint64_t connections_reused = 0;
  int64_t in_flight = 0;
  int64_t open_connections = 0;
};

// Contract: core::UpstreamClient, with the threading and lifetime rules of the clients it holds
// (daemon/curl_upstream_client.hpp). `curl` must not be null; a null `http1` sends every URL to
// curl (keywayd's KEYWAY_UPSTREAM_CLIENT=curl). Owns both (shared with nobody else in keywayd):
// destroying the router cancels what is in flight in both, as each client's destructor does.
// Thread-safe.
class RoutingUpstreamClient final : public core::UpstreamClient {
 public:
  RoutingUpstreamClient(std::unique_ptr<CurlUpstreamClient> curl, std::unique_ptr<Http1UpstreamClient> http1);
  ~RoutingUpstreamClient() override;

  RoutingUpstreamClient(const RoutingUpstreamClient&) = delete;
  RoutingUpstreamClient& operator=(const RoutingUpstreamClient&) = delete;

  std::shared_ptr<core::UpstreamCall> start(core::UpstreamRequest request,
                                            std::shared_ptr<core::UpstreamObserver> observer) override;

  UpstreamClientStats stats() const;

  // True only if every I/O thread of both clients answered within `deadline` (in all). Blocks the
  // caller up to `deadline`: never from an I/O thread or an observer.
  bool probeIoThreads(std::chrono::milliseconds deadline);

  bool nativeHttp1() const { return http1_ != nullptr; }
  // Ends the native client's exchanges now (kCancelled) instead of at destruction: keywayd calls
  // it once its listeners have stopped, so that abandoned exchanges let go of their observers
  // (which hold the metrics, the gateway and the connections that hold the client: a cycle).
  void shutdownNative() {
    if (http1_) http1_->shutdown();
  }

 private:
  std::atomic<bool> closing_{false};
  std::unique_ptr<CurlUpstreamClient> curl_;
  std::unique_ptr<Http1UpstreamClient> http1_;
};

}  // namespace keyway::daemon
