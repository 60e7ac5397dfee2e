// CurlUpstreamClient's worker: one event loop over its connection pools (a multi handle each),
// hosted by a reactor thread or on a thread of its own. Internal to daemon/curl_*.cpp.
#pragma once

#include <sys/epoll.h>

#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "daemon/curl_internal.hpp"
#include "daemon/reactor_guest.hpp"

namespace keyway::daemon {

class CurlUpstreamClient::Worker final : public ReactorGuest {
  using Command = curl::Command;
  using EasyPtr = curl::EasyPtr;
  using Fd = daemon::Fd;
  using Mailbox = curl::Mailbox;
  using MultiPtr = curl::MultiPtr;
  using SharePtr = curl::SharePtr;
  using SocketCounts = curl::SocketCounts;
  using SteadyClock = curl::SteadyClock;
  using Transfer = curl::Transfer;
  using UrlPtr = curl::UrlPtr;

 public:
  Worker(const CurlUpstreamClientOptions& options, std::shared_ptr<Counters> counters,
         std::shared_ptr<TrustStores> trust, unsigned index, uint64_t client_id);
  ~Worker() override;
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  const std::shared_ptr<Mailbox>& mailbox() const { return mailbox_; }
  // Own thread (not hosted): asks it to cancel everything and exit; join() waits. Idempotent.
  void requestStop();
  void join();

  // ReactorGuest (hosted workers only).
  int pollFd() const override { return epoll_fd_.get(); }
  void enter() override;
  void runReady() override;
  // Hosted: ends the worker for good (completes what is in flight with kCancelled, closes the
  // mailbox); runReady() does nothing afterwards. Any thread; the client's shutdown calls it.
  void retire();
  // The hosted worker the calling thread runs, if it belongs to client `client_id` and may start
  // an exchange inline right now (not from inside its own loop); else nullptr.
  static Worker* inlineFor(uint64_t client_id);
  // Starts an exchange on the calling (hosting) thread, without the mailbox; false (nothing
  // done) once the worker is retired.
  bool startInline(const std::shared_ptr<Transfer>& transfer);

 private:
  // One connection pool: a multi handle with its own connection cache and limits.
  struct Pool {
    ~Pool() {
      idle.clear();   // handles first: they refer to the share and the pool's counters
      multi.reset();  // closes cached connections: their callbacks still see this pool
      share.reset();  // after every handle that used it
    }
    Worker* worker = nullptr;
    std::string name;
    MultiPtr multi;
    size_t max_connections = 0;  // as requested (the whole client's limit)
    std::optional<SteadyClock::time_point> deadline;  // curl's timer for this multi
    bool dirty = false;  // socket_action ran: completed transfers may wait in info_read
    SocketCounts socket_counts;  // connections hold a pointer to it until they close (in ~Pool)
    // DNS answers and TLS sessions of this pool's connections. Per pool, not per worker: a TLS
    // session resumed skips certificate verification, so a session made under one trust store
    // must never be resumed under another (a reload makes a new pool).
    SharePtr share;
    std::string key;           // name + origin + TLS settings + trust store (pools_'s key)
    SharedTrustStore trust;    // kept alive (and unique) while the pool exists
    std::shared_ptr<const core::UpstreamTls> tls;
    // The origin, parsed once (CURLOPT_CURLU): parsing and re-printing the full URL of every
    // request was the largest cost libcurl had per exchange. The target goes in
    // CURLOPT_REQUEST_TARGET, byte for byte.
    UrlPtr base;
    bool https = false;
    // Easy handles that ran this pool's exchanges, with the pool's options still set: a reused
    // handle only gets the options of its new exchange (curl_easy_reset and setting ~40 options
    // again cost more than the rest of the set-up).
    std::vector<EasyPtr> idle;
    size_t active = 0;         // exchanges in its multi
    bool retired = false;      // replaced by a pool with newer settings
    // The upstream answered over HTTP/2 (multiplexing): the pool keeps few connections.
    bool multiplexed = false;
    // A new multiplexed connection came up while exchanges were waiting (see kickWaiting).
    bool kick = false;
    // What a new TLS connection's ALPN said (0: nothing new, 1: h2, 2: http/1.1), learnt inside
    // libcurl's callbacks and acted on after them (no multi calls from inside libcurl).
    int alpn_learnt = 0;
  };
  // What epoll reports for one of curl's sockets. Freed only between loop passes: an event for
  // a socket closed earlier in the same pass still points at valid memory (dead = true).
  struct SocketContext {
    Pool* pool;
    curl_socket_t fd;
    bool dead = false;
    bool watched = false;  // curl wants events (between its CURL_POLL_IN/OUT and REMOVE)
  };
  // The epoll state of one descriptor number. A connection socket that curl stops watching
  // (idle in its pool) stays registered for input: a request reusing it then costs no
  // epoll_ctl, where curl's REMOVE and ADD around every exchange would cost two. Only when the
  // idle socket turns readable (the upstream closed it, or sent something unasked) is it taken
  // out. The state is dropped when the socket closes (our close hook), since the kernel drops
  // it from the epoll set then and the number may come back for another socket.
  struct FdState {
    SocketContext* ctx = nullptr;  // owned; retired through dead_sockets_
    uint32_t registered = 0;       // events in the epoll set, 0 = not in it
    bool connection = false;       // opened through our hook (we see its close)
  };
  FdState& fdState(curl_socket_t fd);
  void retireContext(FdState& state);
  static void onConnectionSocketOpened(void* owner, curl_socket_t fd);
  static void onConnectionSocketClosed(void* owner, curl_socket_t fd);

  void run();
  // One pass of the loop: wait up to timeout_ms (0: do not block) and handle what is ready.
  void loopOnce(int timeout_ms);
  // Runs the multis whose timer is due, again while a pass leaves one due at once (libcurl
  // wakes queued transfers one by one through 0 ms timers), then fails queued transfers whose
  // deadline passed.
  void runDueTimers();
  void expireWaits(SteadyClock::time_point now);
  void disarmWait(Transfer& transfer);
  void drainDone();
  // Hosted: the timerfd fires at the earliest pool deadline when that moved earlier than the
  // one it is set for (or it went off); so most passes cost no timerfd call.
  void rearmTimer();
  std::optional<SteadyClock::time_point> nextDeadline() const;
  void shutdown();
  void processCommands(std::vector<Command>& commands);
  void startTransfer(const std::shared_ptr<Transfer>& transfer);
  // The pool of the request's upstream for its TLS settings and trust store: connections made
  // under other settings (before a reload) are never reused for it. A pool that another one
  // replaced is retired and goes once its last exchange ended (collectRetiredPools).
  Pool& poolFor(const core::UpstreamRequest& request, const SharedTrustStore& trust);
  void collectRetiredPools();
  void applyLimit(Pool& pool, size_t max_connections);
  // libcurl 7.88, once it knows an upstream multiplexes, opens a connection for every exchange
  // that finds the established ones full while others are still being set up (they are not
  // candidates yet): a burst of a thousand turned into hundreds of TLS handshakes. A multiplexed
  // pool is therefore capped at kMultiplexedConnections per worker, and exchanges beyond what
  // those carry wait in libcurl's queue. libcurl wakes that queue only when an exchange ends, not
  // when a new connection comes up; kickWaiting() re-adds waiting exchanges then, so they take
  // the new connection's streams at once.
  static constexpr long kMultiplexedConnections = 8;
  void kickWaiting(Pool& pool);
  void noteProtocol(Pool& pool, CURL* easy);
  // The options every exchange of `pool` shares, set once per easy handle.
  bool setPoolOptions(Pool& pool, CURL* easy);
  // The options of one exchange, set on every start.
  bool configure(Transfer& transfer, CURL* easy);
  void resumeTransfer(const std::shared_ptr<Transfer>& transfer);
  // Ends an exchange exactly once, whether or not it reached a multi: detaches and recycles its
  // easy handle, updates the counters and calls onComplete (last reference to the observer).
  void finish(const std::shared_ptr<Transfer>& transfer, core::UpstreamOutcome outcome);
  // finish() with the outcome libcurl's result code maps to.
  void finishWithCode(const std::shared_ptr<Transfer>& transfer, CURLcode code);
  EasyPtr acquireEasy(Pool& pool);
  void releaseEasy(Transfer& transfer);

  static int onSocket(CURL* easy, curl_socket_t socket, int what, void* userp, void* socketp);
  static int onConnectionReady(void* clientp, char*, char*, int, int);
  static int onTimer(CURLM* multi, long timeout_ms, void* userp);

  const CurlUpstreamClientOptions options_;
  std::shared_ptr<Counters> counters_;
  std::shared_ptr<TrustStores> trust_;
  const unsigned index_;
  const uint64_t client_id_;
  Fd epoll_fd_;
  Fd event_fd_;
  Fd timer_fd_;  // hosted only
  std::optional<SteadyClock::time_point> timer_armed_for_;
  std::shared_ptr<Mailbox> mailbox_;
  // Hosted: runReady(), startInline() and retire() exclude each other; in_loop_ marks a pass in
  // progress on the hosting thread (an observer starting an exchange then goes through the
  // mailbox: libcurl forbids adding a handle from inside its callbacks).
  std::mutex host_mu_;
  std::atomic<bool> retired_{false};  // written under host_mu_; read by inlineFor() without it
  bool in_loop_ = false;
  std::vector<epoll_event> events_;
  std::vector<Command> commands_;
  // Destruction order matters: idle easy handles (which may still point at a pool's share)
  // before the pools. See ~Worker.
  std::unordered_map<std::string, std::unique_ptr<Pool>> pools_;
  std::vector<Pool*> dirty_pools_;
  std::string pool_key_;  // poolFor's lookup buffer, reused
  bool retired_pools_ = false;  // some retired pool may be empty now
  std::unordered_map<Transfer*, std::shared_ptr<Transfer>> active_;
  std::vector<FdState> fds_;
  std::vector<std::unique_ptr<SocketContext>> dead_sockets_;
  // Deadlines of transfers that have no connection yet (see Transfer::has_connection).
  std::multimap<SteadyClock::time_point, Transfer*> waits_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace keyway::daemon
