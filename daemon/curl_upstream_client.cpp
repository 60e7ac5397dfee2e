// CurlUpstreamClient: each worker runs an epoll loop driving its CURLM handles (one per
// connection pool) through curl_multi_socket_action, with a command mailbox (start/cancel/
// resume/probe) woken by an eventfd. Hosted, the loop is a ReactorGuest run by a listener's
// reactor thread, with curl's timer on a timerfd; otherwise it runs on a thread of its own.
//
// Why socket_action and not curl_multi_poll/curl_multi_perform: in libcurl 7.88,
// curl_multi_perform visits every easy handle and Curl_readwrite() issues one poll() syscall per
// transfer in the PERFORM state, and curl_multi_poll rebuilds a pollfd array of every socket on
// each call. With thousands of slow requests held open, every wakeup would cost thousands of
// syscalls. With socket_action only the sockets epoll reports (and expired timers) are run.
// See https://everything.curl.dev/transfers/drive/multi-socket.html

#include "daemon/curl_upstream_client.hpp"

#include "daemon/curl_worker.hpp"

namespace keyway::daemon {

using namespace curl;  // NOLINT: the client's own internals
using core::UpstreamFailure;

namespace {

std::atomic<uint64_t> g_next_client_id{1};

}  // namespace

CurlUpstreamClient::CurlUpstreamClient(CurlUpstreamClientOptions options)
    : options_(std::move(options)),
      counters_(std::make_shared<Counters>()),
      client_id_(g_next_client_id.fetch_add(1, std::memory_order_relaxed)) {
  globalInit();
  if (!options_.trust) options_.trust = std::make_shared<TrustStores>();
  counters_->warn = options_.warn;
  const unsigned workers = std::max(1u, options_.io_threads);
  workers_.reserve(workers);
  for (unsigned i = 0; i < workers; ++i) {
    workers_.push_back(std::make_shared<Worker>(options_, counters_, options_.trust, i, client_id_));
  }
}

CurlUpstreamClient::~CurlUpstreamClient() {
  shutdown();
  workers_.clear();
}

void CurlUpstreamClient::shutdown() {
  if (shut_down_.exchange(true)) return;
  // Stop every worker before destroying any: an observer's onComplete may call start() during
  // shutdown, which reads workers_ (a stopped worker's closed mailbox then completes it inline).
  if (options_.hosted) {
    // Reactor threads may still hold the workers: retiring them ends their loops for good.
    for (auto& worker : workers_) worker->retire();
  } else {
    for (auto& worker : workers_) worker->requestStop();
    for (auto& worker : workers_) worker->join();
  }
}

std::vector<std::shared_ptr<ReactorGuest>> CurlUpstreamClient::guests() const {
  std::vector<std::shared_ptr<ReactorGuest>> out;
  if (!options_.hosted) return out;
  for (const auto& worker : workers_) out.push_back(worker);
  return out;
}

std::shared_ptr<core::UpstreamCall> CurlUpstreamClient::start(core::UpstreamRequest request,
                                                              std::shared_ptr<core::UpstreamObserver> observer) {
  if (!observer) observer = std::make_shared<NullObserver>();
  counters_->requests.fetch_add(1, std::memory_order_relaxed);
  counters_->in_flight.fetch_add(1, std::memory_order_relaxed);
  Worker* local = options_.hosted ? Worker::inlineFor(client_id_) : nullptr;
  Worker* worker =
      local ? local : workers_[next_worker_.fetch_add(1, std::memory_order_relaxed) % workers_.size()].get();
  auto transfer = std::make_shared<Transfer>(std::move(request), std::move(observer), worker->mailbox());
  // On a reactor thread that runs one of our loops: no hand-off to another thread.
  if (local && local->startInline(transfer)) return transfer;
  if (!worker->mailbox()->post(Command{CommandKind::kStart, transfer})) {
    // Shutdown already finished on that worker: nobody else will complete this exchange.
    transfer->finished.store(true, std::memory_order_release);
    counters_->in_flight.fetch_sub(1, std::memory_order_relaxed);
    core::UpstreamOutcome outcome;
    outcome.failure = UpstreamFailure::kCancelled;
    outcome.message = "cancelled: upstream client is shutting down";
    auto obs = std::move(transfer->observer);
    transfer->request = core::UpstreamRequest{};
    try {
      obs->onComplete(outcome);
    } catch (...) {
      counters_->observerFailed("onComplete");
    }
  }
  return transfer;
}

void CurlUpstreamClient::Counters::observerFailed(std::string_view where) {
  observer_failures.fetch_add(1, std::memory_order_relaxed);
  if (warn) warn(std::string("an upstream exchange's observer threw in ") + std::string(where) + "; the exchange ended");
}

PoolGauge* CurlUpstreamClient::Counters::gauge(const std::string& pool) {
  std::lock_guard<std::mutex> lock(pools_mu);
  auto& slot = pools[pool];
  if (!slot) slot = std::make_unique<PoolGauge>();
  return slot.get();
}

CurlStats CurlUpstreamClient::stats() const {
  CurlStats stats;
  stats.requests = counters_->requests.load(std::memory_order_relaxed);
  stats.connections_opened = counters_->connections_opened.load(std::memory_order_relaxed);
  stats.connections_reused = counters_->connections_reused.load(std::memory_order_relaxed);
  stats.in_flight = counters_->in_flight.load(std::memory_order_relaxed);
  stats.open_connections = counters_->open_sockets.load(std::memory_order_relaxed);
  stats.observer_failures = counters_->observer_failures.load(std::memory_order_relaxed);
  std::lock_guard<std::mutex> lock(counters_->pools_mu);
  for (const auto& [name, gauge] : counters_->pools) {
    stats.pools.push_back(PoolStats{name, gauge->open.load(std::memory_order_relaxed),
                                    gauge->peak.load(std::memory_order_relaxed)});
  }
  return stats;
}

bool CurlUpstreamClient::probeIoThreads(std::chrono::milliseconds deadline) {
  auto probe = std::make_shared<Probe>();
  for (auto& worker : workers_) {
    if (!worker->mailbox()->post(Command{CommandKind::kProbe, nullptr, probe})) return false;
  }
  std::unique_lock<std::mutex> lock(probe->mutex);
  return probe->cv.wait_for(lock, deadline, [&] { return probe->answered == workers_.size(); });
}

}  // namespace keyway::daemon
