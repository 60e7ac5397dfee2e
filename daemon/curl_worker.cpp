// The worker's event loop: hosting, epoll, curl's sockets and timers, pools and their limits,
// the command mailbox, and the deadlines of exchanges waiting for a connection.
#include <errno.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>

#include <algorithm>
#include <climits>
#include <cstdio>

#include "core/text.hpp"
#include "daemon/curl_worker.hpp"

#include <openssl/ssl.h>

namespace keyway::daemon {

using namespace curl;  // NOLINT: the worker is curl's side of the client
using core::UpstreamFailure;
using core::startsWithNoCase;

namespace {

// The worker the current thread hosts, and the id of the client it belongs to (a hosted worker
// outlives its client while a reactor still holds it, so the id is checked before the pointer is
// used).
thread_local void* tl_hosted_worker = nullptr;
thread_local uint64_t tl_hosted_client = 0;

// epoll tags for the worker's own descriptors; curl's sockets carry a SocketContext pointer.
char kEventTag;
char kTimerTag;


}  // namespace

CurlUpstreamClient::Worker::Worker(const CurlUpstreamClientOptions& options, std::shared_ptr<Counters> counters,
                                   std::shared_ptr<TrustStores> trust, unsigned index, uint64_t client_id)
    : options_(options),
      counters_(std::move(counters)),
      trust_(std::move(trust)),
      index_(index),
      client_id_(client_id),
      epoll_fd_(::epoll_create1(EPOLL_CLOEXEC)),
      event_fd_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)),
      timer_fd_(options.hosted ? ::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC) : -1),
      events_(512) {
  if (epoll_fd_.get() < 0) fatal("epoll_create1 failed");
  if (event_fd_.get() < 0) fatal("eventfd failed");
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = &kEventTag;
  if (::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, event_fd_.get(), &ev) != 0) fatal("epoll_ctl(eventfd) failed");
  if (options_.hosted) {
    if (timer_fd_.get() < 0) fatal("timerfd_create failed");
    ev.data.ptr = &kTimerTag;
    if (::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, timer_fd_.get(), &ev) != 0) fatal("epoll_ctl(timerfd) failed");
  }
  mailbox_ = std::make_shared<Mailbox>(event_fd_.get());

  if (options_.hosted) return;
  try {
    thread_ = std::thread([this] { run(); });
  } catch (...) {
    fatal("cannot start an I/O thread");
  }
  char name[16];
  std::snprintf(name, sizeof name, "kw-upstream-%u", index_ % 100);
  pthread_setname_np(thread_.native_handle(), name);
}

void CurlUpstreamClient::Worker::requestStop() {
  stopping_.store(true, std::memory_order_release);
  mailbox_->wake();
}

void CurlUpstreamClient::Worker::join() {
  if (thread_.joinable()) thread_.join();
}

CurlUpstreamClient::Worker::~Worker() {
  if (!options_.hosted) {
    requestStop();
    join();
  } else {
    retire();
  }
  active_.clear();
  pools_.clear();
  for (FdState& state : fds_) retireContext(state);
  dead_sockets_.clear();
}

void CurlUpstreamClient::Worker::enter() {
  tl_hosted_worker = this;
  tl_hosted_client = client_id_;
}

CurlUpstreamClient::Worker* CurlUpstreamClient::Worker::inlineFor(uint64_t client_id) {
  if (tl_hosted_client != client_id || tl_hosted_worker == nullptr) return nullptr;
  auto* worker = static_cast<Worker*>(tl_hosted_worker);
  // Only this thread sets in_loop_. A retired worker takes no new exchange: start() then goes
  // through its closed mailbox and completes at once.
  return worker->in_loop_ || worker->retired_.load(std::memory_order_acquire) ? nullptr : worker;
}

bool CurlUpstreamClient::Worker::startInline(const std::shared_ptr<Transfer>& transfer) {
  std::lock_guard<std::mutex> lock(host_mu_);
  if (retired_.load(std::memory_order_relaxed)) return false;  // retired since inlineFor()
  in_loop_ = true;
  startTransfer(transfer);
  // Adding a handle sets its multi's timer to "now": run it here rather than one epoll round
  // (and a timerfd write) later, so the exchange leaves at once, on a pooled connection if one
  // is idle.
  runDueTimers();
  drainDone();
  in_loop_ = false;
  collectRetiredPools();
  dead_sockets_.clear();
  rearmTimer();
  return true;
}

void CurlUpstreamClient::Worker::runReady() {
  std::lock_guard<std::mutex> lock(host_mu_);
  if (retired_.load(std::memory_order_relaxed)) return;
  in_loop_ = true;
  loopOnce(0);
  in_loop_ = false;
  rearmTimer();
}

void CurlUpstreamClient::Worker::retire() {
  std::lock_guard<std::mutex> lock(host_mu_);
  if (retired_.load(std::memory_order_relaxed)) return;
  retired_.store(true, std::memory_order_release);
  stopping_.store(true, std::memory_order_release);
  shutdown();
  // Leave nothing readable behind: the host's epoll set may still hold pollFd() (level-triggered)
  // and would otherwise wake its thread for nothing, again and again.
  uint64_t value = 0;
  while (::read(event_fd_.get(), &value, sizeof value) > 0 || errno == EINTR) {
  }
  if (timer_fd_.get() >= 0) {
    itimerspec off{};
    ::timerfd_settime(timer_fd_.get(), 0, &off, nullptr);
    while (::read(timer_fd_.get(), &value, sizeof value) > 0 || errno == EINTR) {
    }
  }
  // The cancelled transfers' connections stay cached in the multis: close them now.
  pools_.clear();
  for (FdState& state : fds_) retireContext(state);
  dead_sockets_.clear();
}

void CurlUpstreamClient::Worker::run() {
  while (!stopping_.load(std::memory_order_acquire)) {
    int timeout_ms = -1;
    if (const auto next = nextDeadline()) {
      const auto now = SteadyClock::now();
      if (*next <= now) {
        timeout_ms = 0;
      } else {
        // Round up so we do not spin on a sub-millisecond remainder.
        const auto left = std::chrono::ceil<std::chrono::milliseconds>(*next - now);
        timeout_ms = static_cast<int>(std::min<int64_t>(left.count(), INT_MAX));
      }
    }
    loopOnce(timeout_ms);
  }
  shutdown();
}

void CurlUpstreamClient::Worker::loopOnce(int timeout_ms) {
  const int n = ::epoll_wait(epoll_fd_.get(), events_.data(), static_cast<int>(events_.size()), timeout_ms);
  if (n < 0 && errno != EINTR) fatal("epoll_wait failed");
  bool woken = false;
  for (int i = 0; i < n; ++i) {
    void* tag = events_[i].data.ptr;
    const uint32_t flags = events_[i].events;
    if (tag == &kEventTag || tag == &kTimerTag) {
      uint64_t value = 0;
      while (::read(tag == &kEventTag ? event_fd_.get() : timer_fd_.get(), &value, sizeof value) < 0 &&
             errno == EINTR) {
      }
      if (tag == &kEventTag) {
        woken = true;
      } else {
        timer_armed_for_.reset();
      }
      continue;
    }
    auto* ctx = static_cast<SocketContext*>(tag);
    if (ctx->dead) continue;
    if (!ctx->watched) {
      // An idle pooled connection turned readable: curl finds out when it next checks it; until
      // then it must not wake this loop again and again.
      FdState& state = fdState(ctx->fd);
      ::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_DEL, ctx->fd, nullptr);
      state.registered = 0;
      continue;
    }
    // A hang-up is reported as readable so libcurl reads what is left and then sees EOF;
    // CURL_CSELECT_ERR would discard a response the peer sent just before closing.
    int action = 0;
    if (flags & (EPOLLIN | EPOLLHUP | EPOLLRDHUP)) action |= CURL_CSELECT_IN;
    if (flags & EPOLLOUT) action |= CURL_CSELECT_OUT;
    if (action == 0 && (flags & EPOLLERR)) action = CURL_CSELECT_ERR;
    Pool* pool = ctx->pool;
    int running = 0;
    curl_multi_socket_action(pool->multi.get(), ctx->fd, action, &running);
    if (!pool->dirty) {
      pool->dirty = true;
      dirty_pools_.push_back(pool);
    }
  }
  runDueTimers();
  drainDone();
  if (woken) {
    mailbox_->take(commands_);
    processCommands(commands_);
    commands_.clear();
    runDueTimers();
    drainDone();
  }
  collectRetiredPools();
  dead_sockets_.clear();
}

void CurlUpstreamClient::Worker::runDueTimers() {
  // Bounded so that a multi that keeps asking for 0 ms cannot starve the rest of the loop.
  constexpr int kMaxPasses = 64;
  SteadyClock::time_point now = SteadyClock::now();
  for (int pass = 0; pass < kMaxPasses; ++pass) {
    for (auto& [name, pool] : pools_) {
      if (pool->alpn_learnt != 0) {
        const bool multiplexed = pool->alpn_learnt == 1;
        pool->alpn_learnt = 0;
        if (multiplexed != pool->multiplexed) {
          pool->multiplexed = multiplexed;
          applyLimit(*pool, pool->max_connections);
          pool->kick = true;  // the limit changed: waiting exchanges look again
        }
      }
      if (pool->kick) kickWaiting(*pool);
    }
    bool ran = false;
    for (auto& [name, pool] : pools_) {
      if (!pool->deadline || *pool->deadline > now) continue;
      pool->deadline.reset();  // onTimer may set a new one during the call below
      int running = 0;
      curl_multi_socket_action(pool->multi.get(), CURL_SOCKET_TIMEOUT, 0, &running);
      ran = true;
      if (!pool->dirty) {
        pool->dirty = true;
        dirty_pools_.push_back(pool.get());
      }
    }
    if (!ran) break;
    now = SteadyClock::now();
  }
  expireWaits(now);
}

void CurlUpstreamClient::Worker::expireWaits(SteadyClock::time_point now) {
  while (!waits_.empty() && waits_.begin()->first <= now) {
    Transfer* raw = waits_.begin()->second;
    disarmWait(*raw);
    auto it = active_.find(raw);
    if (it == active_.end()) continue;
    std::shared_ptr<Transfer> transfer = it->second;
    core::UpstreamOutcome outcome;
    outcome.failure = UpstreamFailure::kTimeout;
    outcome.message = "no connection to the upstream became free in time (the pool is at max_connections)";
    finish(transfer, std::move(outcome));
  }
}

void CurlUpstreamClient::Worker::disarmWait(Transfer& transfer) {
  if (!transfer.wait_armed) return;
  waits_.erase(transfer.wait_it);
  transfer.wait_armed = false;
}

void CurlUpstreamClient::Worker::drainDone() {
  // finish() may start nothing here (in_loop_ or own thread: starts are queued), so the list
  // of dirty pools does not change while it is walked.
  for (Pool* pool : dirty_pools_) {
    pool->dirty = false;
    int left = 0;
    while (CURLMsg* message = curl_multi_info_read(pool->multi.get(), &left)) {
      if (message->msg != CURLMSG_DONE) continue;
      // Copy out: the message dies with curl_multi_remove_handle.
      CURL* easy = message->easy_handle;
      const CURLcode code = message->data.result;
      char* raw = nullptr;
      curl_easy_getinfo(easy, CURLINFO_PRIVATE, &raw);
      auto it = active_.find(reinterpret_cast<Transfer*>(raw));
      if (it == active_.end()) continue;
      std::shared_ptr<Transfer> transfer = it->second;
      finishWithCode(transfer, code);
    }
  }
  dirty_pools_.clear();
}

std::optional<SteadyClock::time_point> CurlUpstreamClient::Worker::nextDeadline() const {
  std::optional<SteadyClock::time_point> next;
  if (!waits_.empty()) next = waits_.begin()->first;
  for (const auto& [name, pool] : pools_) {
    if (pool->deadline && (!next || *pool->deadline < *next)) next = pool->deadline;
  }
  return next;
}

void CurlUpstreamClient::Worker::rearmTimer() {
  const std::optional<SteadyClock::time_point> next = nextDeadline();
  if (!next || (timer_armed_for_ && *timer_armed_for_ <= *next)) return;
  itimerspec spec{};
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(next->time_since_epoch()).count();
  // steady_clock is CLOCK_MONOTONIC; 0 would disarm, so a deadline at the epoch becomes 1 ns.
  spec.it_value.tv_sec = static_cast<time_t>(ns / 1000000000);
  spec.it_value.tv_nsec = static_cast<long>(ns % 1000000000);
  if (spec.it_value.tv_sec == 0 && spec.it_value.tv_nsec == 0) spec.it_value.tv_nsec = 1;
  if (::timerfd_settime(timer_fd_.get(), TFD_TIMER_ABSTIME, &spec, nullptr) != 0) fatal("timerfd_settime failed");
  timer_armed_for_ = next;
}

void CurlUpstreamClient::Worker::shutdown() {
  // Observers may start new exchanges from onComplete; keep completing until nobody queues more.
  std::vector<Command> commands;
  for (;;) {
    std::vector<std::shared_ptr<Transfer>> in_flight;
    in_flight.reserve(active_.size());
    for (auto& entry : active_) in_flight.push_back(entry.second);
    for (auto& transfer : in_flight) {
      core::UpstreamOutcome outcome;
      outcome.failure = UpstreamFailure::kCancelled;
      outcome.message = "cancelled: upstream client is shutting down";
      finish(transfer, std::move(outcome));
    }
    if (active_.empty() && mailbox_->closeIfEmpty(commands)) break;
    for (auto& command : commands) {
      if (command.kind == CommandKind::kProbe) {
        continue;  // not answered: the worker is going away
      }
      if (command.kind != CommandKind::kStart) continue;
      core::UpstreamOutcome outcome;
      outcome.failure = UpstreamFailure::kCancelled;
      outcome.message = "cancelled: upstream client is shutting down";
      finish(command.transfer, std::move(outcome));
    }
    commands.clear();
  }
}

void CurlUpstreamClient::Worker::processCommands(std::vector<Command>& commands) {
  for (auto& command : commands) {
    auto& transfer = command.transfer;
    switch (command.kind) {
      case CommandKind::kStart:
        startTransfer(transfer);
        break;
      case CommandKind::kCancel:
        if (!transfer->finished.load(std::memory_order_relaxed)) {
          core::UpstreamOutcome outcome;
          outcome.failure = UpstreamFailure::kCancelled;
          outcome.message = "cancelled";
          finish(transfer, std::move(outcome));
        }
        break;
      case CommandKind::kResume:
        resumeTransfer(transfer);
        break;
      case CommandKind::kProbe: {
        std::lock_guard<std::mutex> lock(command.probe->mutex);
        ++command.probe->answered;
        command.probe->cv.notify_all();
        break;
      }
    }
  }
}

CurlUpstreamClient::Worker::Pool& CurlUpstreamClient::Worker::poolFor(const core::UpstreamRequest& request,
                                                                       const SharedTrustStore& trust) {
  const UrlParts url = splitUrl(request.url);
  pool_key_.assign(request.pool);
  pool_key_.append(1, '\x1f').append(url.origin);
  if (request.tls) {
    pool_key_.append(1, '\x1f').append(request.tls->ca_file);
    pool_key_.append(1, '\x1f').append(request.tls->client_cert);
    pool_key_.append(1, '\x1f').append(request.tls->client_key);
  }
  if (trust) {
    char address[2 + 2 * sizeof(void*) + 1];
    std::snprintf(address, sizeof address, "%p", static_cast<void*>(trust.get()));
    pool_key_.append(1, '\x1f').append(address);
  }
  auto it = pools_.find(pool_key_);
  if (it != pools_.end()) {
    if (it->second->max_connections != request.max_connections) applyLimit(*it->second, request.max_connections);
    return *it->second;
  }
  for (auto& [key, other] : pools_) {
    if (other->name == request.pool && !other->retired) {
      other->retired = true;
      retired_pools_ = true;
    }
  }
  auto pool = std::make_unique<Pool>();
  pool->worker = this;
  pool->name = request.pool;
  pool->key = pool_key_;
  pool->trust = trust;
  pool->tls = request.tls;
  pool->https = startsWithNoCase(url.origin, "https://");
  pool->base.reset(curl_url());
  if (!pool->base) fatal("curl_url failed");
  // A URL that does not parse is caught at the exchange (invalidRequestReason, CURLOPT_CURLU).
  curl_url_set(pool->base.get(), CURLUPART_URL, (std::string(url.origin) + "/").c_str(), 0);
  pool->socket_counts.all = &counters_->open_sockets;
  pool->socket_counts.pool = counters_->gauge(request.pool);
  pool->socket_counts.owner = this;
  pool->socket_counts.opened = &Worker::onConnectionSocketOpened;
  pool->socket_counts.closed = &Worker::onConnectionSocketClosed;
  // Only this worker's thread touches the share, so it needs no lock callbacks.
  pool->share.reset(curl_share_init());
  if (!pool->share) fatal("curl_share_init failed");
  curl_share_setopt(pool->share.get(), CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
  curl_share_setopt(pool->share.get(), CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
  pool->multi.reset(curl_multi_init());
  if (!pool->multi) fatal("curl_multi_init failed");
  CURLM* multi = pool->multi.get();
  curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, &Worker::onSocket);
  curl_multi_setopt(multi, CURLMOPT_SOCKETDATA, pool.get());
  curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, &Worker::onTimer);
  curl_multi_setopt(multi, CURLMOPT_TIMERDATA, pool.get());
  curl_multi_setopt(multi, CURLMOPT_PIPELINING, static_cast<long>(CURLPIPE_MULTIPLEX));
  applyLimit(*pool, request.max_connections);
  Pool& out = *pool;
  pools_.emplace(pool_key_, std::move(pool));
  return out;
}

void CurlUpstreamClient::Worker::collectRetiredPools() {
  if (!retired_pools_) return;
  retired_pools_ = false;
  for (auto it = pools_.begin(); it != pools_.end();) {
    Pool& pool = *it->second;
    if (!pool.retired) {
      ++it;
      continue;
    }
    if (pool.active > 0) {
      retired_pools_ = true;  // look again once its exchanges ended
      ++it;
      continue;
    }
    it = pools_.erase(it);  // closes its idle connections
  }
}

void CurlUpstreamClient::Worker::applyLimit(Pool& pool, size_t max_connections) {
  pool.max_connections = max_connections;
  // The pool's limit is the whole client's: each worker takes its share, at least one.
  const size_t workers = std::max(1u, options_.io_threads);
  long per_worker = max_connections == 0 ? 0L : static_cast<long>(std::max<size_t>(1, max_connections / workers));
  if (pool.multiplexed) per_worker = per_worker == 0 ? kMultiplexedConnections : std::min(per_worker, kMultiplexedConnections);
  // A pool's requests all go to one host, so the per-host limit is the pool's.
  curl_multi_setopt(pool.multi.get(), CURLMOPT_MAX_HOST_CONNECTIONS, per_worker);
  curl_multi_setopt(pool.multi.get(), CURLMOPT_MAX_TOTAL_CONNECTIONS, per_worker);
  curl_multi_setopt(pool.multi.get(), CURLMOPT_MAXCONNECTS,
                    per_worker > 0 ? per_worker : std::max(1L, options_.max_cached_connections));
}

CurlUpstreamClient::Worker::FdState& CurlUpstreamClient::Worker::fdState(curl_socket_t fd) {
  const auto index = static_cast<size_t>(fd);
  if (index >= fds_.size()) fds_.resize(std::max(index + 1, fds_.size() * 2));
  return fds_[index];
}

void CurlUpstreamClient::Worker::retireContext(FdState& state) {
  if (state.ctx == nullptr) return;
  state.ctx->dead = true;
  dead_sockets_.emplace_back(state.ctx);
  state.ctx = nullptr;
}

void CurlUpstreamClient::Worker::onConnectionSocketOpened(void* owner, curl_socket_t fd) {
  auto* self = static_cast<Worker*>(owner);
  FdState& state = self->fdState(fd);
  self->retireContext(state);  // a number reused behind our back (not one of our closes)
  state = FdState{};
  state.connection = true;
}

void CurlUpstreamClient::Worker::onConnectionSocketClosed(void* owner, curl_socket_t fd) {
  auto* self = static_cast<Worker*>(owner);
  FdState& state = self->fdState(fd);
  self->retireContext(state);
  state = FdState{};  // closing the socket takes it out of the epoll set
}

int CurlUpstreamClient::Worker::onSocket(CURL*, curl_socket_t socket, int what, void* userp, void*) {
  auto* pool = static_cast<Pool*>(userp);
  Worker* self = pool->worker;
  FdState& state = self->fdState(socket);
  if (what == CURL_POLL_REMOVE) {
    if (state.ctx != nullptr) state.ctx->watched = false;
    // A connection socket waiting only for input stays registered (see FdState).
    if (state.connection && state.registered == EPOLLIN) return 0;
    if (state.registered != 0) {
      // May fail if libcurl already closed the socket; epoll forgets closed sockets by itself.
      ::epoll_ctl(self->epoll_fd_.get(), EPOLL_CTL_DEL, socket, nullptr);
      state.registered = 0;
    }
    // Not ours (a resolver's descriptor): we would not see its close, so forget it now.
    if (!state.connection) self->retireContext(state);
    return 0;
  }
  if (state.ctx == nullptr) state.ctx = new SocketContext{pool, socket};
  state.ctx->pool = pool;
  state.ctx->watched = true;
  const uint32_t wanted = ((what & CURL_POLL_IN) ? EPOLLIN : 0u) | ((what & CURL_POLL_OUT) ? EPOLLOUT : 0u);
  if (state.registered == wanted) return 0;
  epoll_event ev{};
  ev.data.ptr = state.ctx;
  ev.events = wanted;
  int op = state.registered != 0 ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
  if (::epoll_ctl(self->epoll_fd_.get(), op, socket, &ev) != 0) {
    op = op == EPOLL_CTL_ADD ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    if (::epoll_ctl(self->epoll_fd_.get(), op, socket, &ev) != 0) return -1;
  }
  state.registered = wanted;
  return 0;
}

int CurlUpstreamClient::Worker::onConnectionReady(void* clientp, char*, char*, int, int) {
  auto* transfer = static_cast<Transfer*>(clientp);
  transfer->has_connection = true;
  if (auto* pool = static_cast<Pool*>(transfer->pool)) {
    pool->worker->disarmWait(*transfer);
    long connects = 0;
    if (transfer->easy && curl_easy_getinfo(transfer->easy.get(), CURLINFO_NUM_CONNECTS, &connects) == CURLE_OK &&
        connects > 0) {
      // A new connection: its ALPN says, before any response, whether the upstream multiplexes.
      curl_tlssessioninfo* tls = nullptr;
      if (pool->https && curl_easy_getinfo(transfer->easy.get(), CURLINFO_TLS_SSL_PTR, &tls) == CURLE_OK &&
          tls != nullptr && tls->backend == CURLSSLBACKEND_OPENSSL && tls->internals != nullptr) {
        const unsigned char* alpn = nullptr;
        unsigned int length = 0;
        SSL_get0_alpn_selected(static_cast<SSL*>(tls->internals), &alpn, &length);
        const bool h2 = length == 2 && alpn[0] == 'h' && alpn[1] == '2';
        pool->alpn_learnt = h2 ? 1 : 2;
      }
      if (pool->multiplexed) pool->kick = true;
    }
  }
  return CURL_PREREQFUNC_OK;
}

void CurlUpstreamClient::Worker::noteProtocol(Pool& pool, CURL* easy) {
  long version = 0;
  if (curl_easy_getinfo(easy, CURLINFO_HTTP_VERSION, &version) != CURLE_OK || version == 0) return;
  const bool multiplexed = version >= CURL_HTTP_VERSION_2_0;
  if (multiplexed == pool.multiplexed) return;
  pool.multiplexed = multiplexed;  // an upstream may change its mind behind a load balancer
  applyLimit(pool, pool.max_connections);
}

void CurlUpstreamClient::Worker::kickWaiting(Pool& pool) {
  pool.kick = false;
  // Enough for one new connection's streams; the next one that comes up kicks again.
  constexpr size_t kMaxKicked = 128;
  std::vector<Transfer*> waiting;
  for (auto& [raw, transfer] : active_) {
    if (waiting.size() >= kMaxKicked) break;
    if (transfer->pool == &pool && !transfer->has_connection && transfer->easy) waiting.push_back(raw);
  }
  for (Transfer* transfer : waiting) {
    // Out of libcurl's queue and back in: the exchange looks for a connection again now.
    curl_multi_remove_handle(pool.multi.get(), transfer->easy.get());
    if (curl_multi_add_handle(pool.multi.get(), transfer->easy.get()) != CURLM_OK) {
      --pool.active;
      transfer->pool = nullptr;  // not in the multi any more: finish() must not remove it again
      core::UpstreamOutcome outcome;
      outcome.failure = UpstreamFailure::kProtocol;
      outcome.message = "cannot add the upstream request to the transfer loop";
      auto it = active_.find(transfer);
      if (it != active_.end()) {
        std::shared_ptr<Transfer> keep = it->second;
        finish(keep, std::move(outcome));
      }
    }
  }
}

int CurlUpstreamClient::Worker::onTimer(CURLM*, long timeout_ms, void* userp) {
  auto* pool = static_cast<Pool*>(userp);
  if (timeout_ms < 0) {
    pool->deadline.reset();
  } else {
    pool->deadline = SteadyClock::now() + std::chrono::milliseconds(timeout_ms);
  }
  return 0;
}

}  // namespace keyway::daemon
