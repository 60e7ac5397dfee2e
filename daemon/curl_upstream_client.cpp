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

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <map>
#include <optional>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "daemon/curl_tls.hpp"
#include "daemon/event_mailbox.hpp"
#include "daemon/tls_trust.hpp"

namespace keyway::daemon {
namespace {

using core::UpstreamFailure;
using SteadyClock = std::chrono::steady_clock;

struct EasyDeleter {
  void operator()(CURL* easy) const { curl_easy_cleanup(easy); }
};
struct MultiDeleter {
  void operator()(CURLM* multi) const { curl_multi_cleanup(multi); }
};
struct ShareDeleter {
  void operator()(CURLSH* share) const { curl_share_cleanup(share); }
};
struct SlistDeleter {
  void operator()(curl_slist* list) const { curl_slist_free_all(list); }
};
using EasyPtr = std::unique_ptr<CURL, EasyDeleter>;
using MultiPtr = std::unique_ptr<CURLM, MultiDeleter>;
using SharePtr = std::unique_ptr<CURLSH, ShareDeleter>;
using SlistPtr = std::unique_ptr<curl_slist, SlistDeleter>;

// An owned file descriptor.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

// Resource exhaustion while building the client's own machinery (not per request) leaves no
// degraded mode worth having: say so on one line and stop.
[[noreturn]] void fatal(const char* what) {
  std::fprintf(stderr, "keyway: upstream client: %s\n", what);
  std::abort();
}

void globalInit() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) fatal("curl_global_init failed");
  });
}

bool isTchar(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  switch (c) {
    case '!': case '#': case '$': case '%': case '&': case '\'': case '*': case '+': case '-':
    case '.': case '^': case '_': case '`': case '|': case '~':
      return true;
    default:
      return false;
  }
}

bool isToken(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), isTchar);
}

bool hasLineBreakOrNul(std::string_view s) {
  return s.find_first_of(std::string_view("\r\n\0", 3)) != std::string_view::npos;
}

bool startsWithNoCase(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && core::iequals(s.substr(0, prefix.size()), prefix);
}

std::string_view trimOws(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// "HTTP/<version> <3 digits>[ <reason>]". HTTP/2 and later carry no reason phrase (libcurl
// synthesises "HTTP/2 200 "), so theirs is empty; HTTP/1.x keeps the phrase byte for byte.
bool parseStatusLine(std::string_view line, int& status, std::string& reason) {
  if (!startsWithNoCase(line, "HTTP/")) return false;
  const size_t sp = line.find(' ');
  if (sp == std::string_view::npos || line.size() < sp + 4) return false;
  const std::string_view version = line.substr(5, sp - 5);
  const std::string_view code = line.substr(sp + 1, 3);
  if (!std::all_of(code.begin(), code.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return false;
  }
  const std::string_view rest = line.substr(sp + 4);
  if (!rest.empty() && rest.front() != ' ') return false;
  status = (code[0] - '0') * 100 + (code[1] - '0') * 10 + (code[2] - '0');
  if (status < 100) return false;
  const bool has_phrase = !version.empty() && version.front() == '1';
  reason = has_phrase && !rest.empty() ? std::string(rest.substr(1)) : std::string();
  return true;
}

// An absolute http(s) URL cut into its origin ("scheme://host[:port]") and its request-target
// (everything after the authority, "/" first).
struct UrlParts {
  std::string_view origin;
  std::string target;
};
UrlParts splitUrl(std::string_view url) {
  const size_t scheme_end = url.find("://");
  const size_t authority = scheme_end == std::string_view::npos ? 0 : scheme_end + 3;
  const size_t target = url.find_first_of("/?#", authority);
  UrlParts parts;
  if (target == std::string_view::npos) {
    parts.origin = url;
    parts.target = "/";
    return parts;
  }
  parts.origin = url.substr(0, target);
  if (url[target] != '/') parts.target = "/";
  parts.target.append(url.substr(target));
  return parts;
}

struct UrlDeleter {
  void operator()(CURLU* url) const { curl_url_cleanup(url); }
};
using UrlPtr = std::unique_ptr<CURLU, UrlDeleter>;

class NullObserver final : public core::UpstreamObserver {
 public:
  void onHeaders(int, std::string_view, core::Headers) override {}
  bool onBody(std::string_view) override { return true; }
  void onComplete(const core::UpstreamOutcome&) override {}
};

class Transfer;

// A liveness probe (CurlUpstreamClient::probeIoThreads): each I/O thread counts itself in.
struct Probe {
  std::mutex mutex;
  std::condition_variable cv;
  size_t answered = 0;
};

enum class CommandKind { kStart, kCancel, kResume, kProbe };
struct Command {
  CommandKind kind;
  std::shared_ptr<Transfer> transfer;  // null for kProbe
  std::shared_ptr<Probe> probe = nullptr;  // kProbe only
};

using Mailbox = EventMailbox<Command>;

// One exchange. The public UpstreamCall face is thread-safe; every other member belongs to the
// I/O thread that runs it.
class Transfer final : public core::UpstreamCall, public std::enable_shared_from_this<Transfer> {
 public:
  Transfer(core::UpstreamRequest req, std::shared_ptr<core::UpstreamObserver> obs,
           std::shared_ptr<Mailbox> box)
      : request(std::move(req)), observer(std::move(obs)), mailbox_(std::move(box)) {}

  void cancel() override {
    if (finished.load(std::memory_order_acquire)) return;
    cancel_requested.store(true, std::memory_order_release);
    mailbox_->post(Command{CommandKind::kCancel, shared_from_this()});
  }
  void resume() override {
    if (finished.load(std::memory_order_acquire)) return;
    mailbox_->post(Command{CommandKind::kResume, shared_from_this()});
  }

  // Thread-shared.
  std::atomic<bool> cancel_requested{false};
  std::atomic<bool> finished{false};
  const SteadyClock::time_point started_at = SteadyClock::now();

  // I/O thread only.
  core::UpstreamRequest request;
  void* pool = nullptr;  // the Worker::Pool whose multi handle runs it, while it runs
  // Until libcurl gives it a connection (CURLOPT_PREREQFUNCTION), a transfer may wait in its
  // multi's queue (pool at its limit, or a first TLS connection finding out whether the upstream
  // multiplexes), where libcurl 7.88 applies none of its timeouts: the worker does
  // (Worker::waits_).
  SharedTrustStore trust;  // https only: the CA store its connection verifies against
  bool has_connection = false;
  bool wait_armed = false;
  std::multimap<SteadyClock::time_point, Transfer*>::iterator wait_it;
  std::shared_ptr<core::UpstreamObserver> observer;
  EasyPtr easy;
  SlistPtr header_list;
  std::string request_target;  // CURLOPT_REQUEST_TARGET points here
  char error_buffer[CURL_ERROR_SIZE] = {};
  size_t max_header_bytes = 0;
  // Response state.
  int status = 0;
  std::string reason;
  std::string content_length;  // the response's Content-Length, to refuse a conflicting second one
  core::Headers headers;
  bool in_header_block = false;
  bool interim = false;  // the current header block belongs to a 1xx response
  bool headers_delivered = false;
  size_t header_bytes = 0;
  size_t body_bytes = 0;
  // After a pause, libcurl hands the paused callback's bytes over again on resume; those were
  // already given to the observer (sendf.c chop_write()/pausewrite()).
  size_t redelivered_bytes_to_skip = 0;
  bool paused = false;
  UpstreamFailure local_failure = UpstreamFailure::kNone;
  std::string local_message;

 private:
  std::shared_ptr<Mailbox> mailbox_;
};

std::string invalidRequestReason(const core::UpstreamRequest& request) {
  if (!isToken(request.method)) return "method is not an HTTP token";
  if (!startsWithNoCase(request.url, "http://") && !startsWithNoCase(request.url, "https://")) {
    return "URL scheme is not http or https";
  }
  if (hasLineBreakOrNul(request.url)) return "URL contains CR, LF or NUL";
  // The target goes on the request line as it is (CURLOPT_REQUEST_TARGET), so what would break
  // the line is refused here rather than by libcurl's URL parser.
  for (const char c : request.url) {
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7F) return "URL contains a space or a control character";
  }
  for (const auto& header : request.headers) {
    if (!isToken(header.name)) return "a header name is not an HTTP token";
    if (hasLineBreakOrNul(header.value)) return "header '" + header.name + "' contains CR, LF or NUL";
  }
  return {};
}

size_t onHeaderLine(char* data, size_t size, size_t count, void* userp);
size_t onBodyData(char* data, size_t size, size_t count, void* userp);

// libcurl's socket open/close hooks, only to count the upstream sockets open (idle pooled
// connections included: libcurl 7.88 reports no such number). The counter outlives every
// connection: the multi handles, which own the connection caches, die before the client's
// counters. libcurl stores the close hook with the connection when it creates it, so a pooled
// connection closed later by another transfer (or by curl_multi_cleanup) is still counted.
// What a pool's sockets count into: the client's total and the pool's gauge.
struct SocketCounts {
  std::atomic<int64_t>* all = nullptr;
  PoolGauge* pool = nullptr;
  // Tells the owning worker that a connection socket opened or closed (its epoll bookkeeping
  // follows the socket's life, not curl's interest in it).
  void* owner = nullptr;
  void (*opened)(void* owner, curl_socket_t fd) = nullptr;
  void (*closed)(void* owner, curl_socket_t fd) = nullptr;
};

curl_socket_t onOpenSocket(void* clientp, curlsocktype, curl_sockaddr* address) {
  const int fd = ::socket(address->family, address->socktype | SOCK_CLOEXEC, address->protocol);
  if (fd < 0) return CURL_SOCKET_BAD;
  auto* counts = static_cast<SocketCounts*>(clientp);
  counts->all->fetch_add(1, std::memory_order_relaxed);
  const int64_t now_open = counts->pool->open.fetch_add(1, std::memory_order_relaxed) + 1;
  int64_t peak = counts->pool->peak.load(std::memory_order_relaxed);
  while (now_open > peak && !counts->pool->peak.compare_exchange_weak(peak, now_open, std::memory_order_relaxed)) {
  }
  if (counts->opened) counts->opened(counts->owner, fd);
  return fd;
}

int onCloseSocket(void* clientp, curl_socket_t fd) {
  auto* counts = static_cast<SocketCounts*>(clientp);
  counts->all->fetch_sub(1, std::memory_order_relaxed);
  counts->pool->open.fetch_sub(1, std::memory_order_relaxed);
  if (counts->closed) counts->closed(counts->owner, fd);
  return ::close(fd);
}

// The worker the current thread hosts, and the id of the client it belongs to (a hosted worker
// outlives its client while a reactor still holds it, so the id is checked before the pointer is
// used).
thread_local void* tl_hosted_worker = nullptr;
thread_local uint64_t tl_hosted_client = 0;
std::atomic<uint64_t> g_next_client_id{1};

// epoll tags for the worker's own descriptors; curl's sockets carry a SocketContext pointer.
char kEventTag;
char kTimerTag;

}  // namespace

class CurlUpstreamClient::Worker final : public ReactorGuest {
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
  void classify(const Transfer& transfer, CURLcode code, bool request_sent, core::UpstreamOutcome& outcome) const;
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
  const long per_worker =
      max_connections == 0 ? 0L : static_cast<long>(std::max<size_t>(1, max_connections / workers));
  // A pool's requests all go to one host, so the per-host limit is the pool's.
  curl_multi_setopt(pool.multi.get(), CURLMOPT_MAX_HOST_CONNECTIONS, per_worker);
  curl_multi_setopt(pool.multi.get(), CURLMOPT_MAX_TOTAL_CONNECTIONS, per_worker);
  curl_multi_setopt(pool.multi.get(), CURLMOPT_MAXCONNECTS,
                    per_worker > 0 ? per_worker : std::max(1L, options_.max_cached_connections));
}

void CurlUpstreamClient::Worker::startTransfer(const std::shared_ptr<Transfer>& transfer) {
  core::UpstreamOutcome outcome;
  if (transfer->cancel_requested.load(std::memory_order_acquire)) {
    outcome.failure = UpstreamFailure::kCancelled;
    outcome.message = "cancelled";
    finish(transfer, std::move(outcome));
    return;
  }
  if (std::string why = invalidRequestReason(transfer->request); !why.empty()) {
    outcome.failure = UpstreamFailure::kProtocol;
    outcome.message = "invalid upstream request: " + why;
    finish(transfer, std::move(outcome));
    return;
  }
  if (startsWithNoCase(transfer->request.url, "https://")) {
    auto trust = trust_->get(transfer->request.tls ? transfer->request.tls->ca_file : std::string());
    if (!trust.ok()) {
      outcome.failure = UpstreamFailure::kTls;
      outcome.tls_problem = core::TlsProblem::kCaFileUnusable;
      outcome.message = "TLS certificate verification failed: " +
                        std::string(core::tlsProblemText(core::TlsProblem::kCaFileUnusable));
      finish(transfer, std::move(outcome));
      return;
    }
    transfer->trust = std::move(trust.value());
  }
  Pool& pool = poolFor(transfer->request, transfer->trust);
  transfer->pool = &pool;  // configure() and the callbacks find the pool here; not yet added
  EasyPtr easy = acquireEasy(pool);
  if (!easy || !configure(*transfer, easy.get())) {
    transfer->pool = nullptr;
    outcome.failure = UpstreamFailure::kProtocol;
    outcome.message = "cannot set up the upstream request (out of memory?)";
    finish(transfer, std::move(outcome));
    return;
  }
  transfer->easy = std::move(easy);
  active_.emplace(transfer.get(), transfer);
  if (curl_multi_add_handle(pool.multi.get(), transfer->easy.get()) != CURLM_OK) {
    transfer->pool = nullptr;
    outcome.failure = UpstreamFailure::kProtocol;
    outcome.message = "cannot add the upstream request to the transfer loop";
    finish(transfer, std::move(outcome));
    return;
  }
  ++pool.active;
  const auto budget = transfer->request.total_timeout.count() > 0 ? transfer->request.total_timeout
                                                                   : transfer->request.connect_timeout;
  if (!transfer->has_connection && budget.count() > 0) {
    transfer->wait_it = waits_.emplace(transfer->started_at + budget, transfer.get());
    transfer->wait_armed = true;
  }
}

bool CurlUpstreamClient::Worker::setPoolOptions(Pool& pool, CURL* easy) {
  CURLcode rc = CURLE_OK;
  auto set = [&rc, easy](CURLoption option, auto value) {
    if (rc == CURLE_OK) rc = curl_easy_setopt(easy, option, value);
  };
  set(CURLOPT_CURLU, pool.base.get());
  set(CURLOPT_PATH_AS_IS, 1L);
  set(CURLOPT_PROTOCOLS_STR, "http,https");
  set(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  set(CURLOPT_FOLLOWLOCATION, 0L);
  // Never a proxy from the environment; NOPROXY too, or libcurl still reads no_proxy per request.
  set(CURLOPT_PROXY, "");
  set(CURLOPT_NOPROXY, "");
  set(CURLOPT_NOSIGNAL, 1L);
  set(CURLOPT_HTTP_CONTENT_DECODING, 0L);
  set(CURLOPT_HTTP_TRANSFER_DECODING, 1L);
  set(CURLOPT_HTTP09_ALLOWED, 0L);
  set(CURLOPT_TCP_NODELAY, 1L);
  set(CURLOPT_TCP_KEEPALIVE, 1L);
  set(CURLOPT_TCP_KEEPIDLE, static_cast<long>(std::max<int64_t>(1, options_.tcp_keepalive_idle.count())));
  set(CURLOPT_TCP_KEEPINTVL, static_cast<long>(std::max<int64_t>(1, options_.tcp_keepalive_interval.count())));
  if (options_.http2) {
    set(CURLOPT_HTTP_VERSION, static_cast<long>(CURL_HTTP_VERSION_2TLS));
    // Over TLS, wait for a connection being set up to say (ALPN) whether it multiplexes rather
    // than opening one connection per request of a burst. Not for http://, which never
    // multiplexes here: 7.88 would still hold a burst back until the first connect finished.
    if (pool.https) set(CURLOPT_PIPEWAIT, 1L);
  } else {
    set(CURLOPT_HTTP_VERSION, static_cast<long>(CURL_HTTP_VERSION_1_1));
  }
  // The trust anchors come pre-parsed (daemon/tls_trust.hpp): with CAINFO or CAPATH set,
  // libcurl would parse the CA bundle again for every new connection.
  if (rc == CURLE_OK) rc = setUpstreamTls(easy, pool.tls.get(), pool.trust.get());
  set(CURLOPT_SHARE, pool.share.get());
  set(CURLOPT_OPENSOCKETFUNCTION, &onOpenSocket);
  set(CURLOPT_OPENSOCKETDATA, static_cast<void*>(&pool.socket_counts));
  set(CURLOPT_CLOSESOCKETFUNCTION, &onCloseSocket);
  set(CURLOPT_CLOSESOCKETDATA, static_cast<void*>(&pool.socket_counts));
  set(CURLOPT_PREREQFUNCTION, &Worker::onConnectionReady);
  set(CURLOPT_HEADERFUNCTION, &onHeaderLine);
  set(CURLOPT_WRITEFUNCTION, &onBodyData);
  return rc == CURLE_OK;
}

bool CurlUpstreamClient::Worker::configure(Transfer& transfer, CURL* easy) {
  const core::UpstreamRequest& request = transfer.request;
  const std::string& method = request.method;
  transfer.max_header_bytes = options_.max_header_bytes;

  // Headers exactly as given. libcurl's own defaults are suppressed with "Name:" entries unless
  // the caller supplied that header; "Name;" is libcurl's syntax for an empty value. The body
  // length is libcurl's to state (a stale Content-Length would desynchronise the connection).
  bool has_accept = false;
  bool has_expect = false;
  bool has_content_type = false;
  bool has_content_length = false;
  SlistPtr list;
  auto append = [&list](const std::string& text) {
    // curl_slist_append returns the (unchanged) head, or NULL and leaves the list intact.
    curl_slist* head = curl_slist_append(list.get(), text.c_str());
    if (!head) return false;
    list.release();
    list.reset(head);
    return true;
  };
  std::string line;
  for (const auto& header : request.headers) {
    if (core::iequals(header.name, "Content-Length")) {
      has_content_length = true;
      continue;
    }
    if (core::iequals(header.name, "Transfer-Encoding")) continue;
    has_accept = has_accept || core::iequals(header.name, "Accept");
    has_expect = has_expect || core::iequals(header.name, "Expect");
    has_content_type = has_content_type || core::iequals(header.name, "Content-Type");
    line.assign(header.name);
    if (header.value.empty()) {
      line += ';';
    } else {
      line += ": ";
      line += header.value;
    }
    if (!append(line)) return false;
  }
  const bool is_head = method == "HEAD";
  const bool has_body = !is_head && (!request.body.empty() || method == "POST" || method == "PUT" ||
                                     method == "PATCH" || has_content_length);
  if (!has_accept && !append("Accept:")) return false;
  // libcurl adds Expect: 100-continue only to a body (of more than 1 MiB in 7.88).
  if (has_body && !has_expect && !append("Expect:")) return false;
  if (has_body && !has_content_type && !append("Content-Type:")) return false;
  transfer.header_list = std::move(list);

  CURLcode rc = CURLE_OK;
  auto set = [&rc, easy](CURLoption option, auto value) {
    if (rc == CURLE_OK) rc = curl_easy_setopt(easy, option, value);
  };
  const auto clampMs = [](std::chrono::milliseconds ms) {
    return static_cast<long>(std::max<int64_t>(0, ms.count()));
  };
  // libcurl takes scheme, host and port from the pool's parsed origin; the target goes out as
  // given: even with PATH_AS_IS, 7.88 would rewrite some targets taken from a URL (raw non-ASCII
  // path bytes percent-encoded by curl_url_get(CURLU_URLENCODE) in url.c, a '#...' tail dropped).
  transfer.request_target = splitUrl(request.url).target;
  set(CURLOPT_REQUEST_TARGET, transfer.request_target.c_str());
  set(CURLOPT_CONNECTTIMEOUT_MS, clampMs(request.connect_timeout));
  set(CURLOPT_TIMEOUT_MS, clampMs(request.total_timeout));
  set(CURLOPT_PRIVATE, static_cast<void*>(&transfer));
  set(CURLOPT_PREREQDATA, static_cast<void*>(&transfer));
  set(CURLOPT_ERRORBUFFER, transfer.error_buffer);
  set(CURLOPT_HEADERDATA, static_cast<void*>(&transfer));
  set(CURLOPT_WRITEDATA, static_cast<void*>(&transfer));
  set(CURLOPT_HTTPHEADER, transfer.header_list.get());
  // The method, all of it every time: a kept handle still has the previous exchange's.
  if (is_head) {
    set(CURLOPT_NOBODY, 1L);
    set(CURLOPT_CUSTOMREQUEST, static_cast<const char*>(nullptr));
  } else if (has_body) {
    set(CURLOPT_NOBODY, 0L);
    // libcurl reads the body straight from the request's string, which lives in `transfer`
    // (never moved while the transfer runs).
    set(CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(request.body.size()));
    set(CURLOPT_POSTFIELDS, request.body.data());
    set(CURLOPT_CUSTOMREQUEST, method != "POST" ? method.c_str() : static_cast<const char*>(nullptr));
  } else {
    set(CURLOPT_HTTPGET, 1L);
    set(CURLOPT_CUSTOMREQUEST, method != "GET" ? method.c_str() : static_cast<const char*>(nullptr));
  }
  return rc == CURLE_OK;
}

void CurlUpstreamClient::Worker::resumeTransfer(const std::shared_ptr<Transfer>& transfer) {
  if (transfer->finished.load(std::memory_order_relaxed) || !transfer->easy || !transfer->paused) {
    return;
  }
  transfer->paused = false;
  // May hand the held-back data to onBodyData right here (which may pause again).
  const CURLcode rc = curl_easy_pause(transfer->easy.get(), CURLPAUSE_CONT);
  if (auto* pool = static_cast<Pool*>(transfer->pool); pool != nullptr && !pool->dirty) {
    pool->dirty = true;
    dirty_pools_.push_back(pool);
  }
  if (rc != CURLE_OK) finishWithCode(transfer, rc);
}

void CurlUpstreamClient::Worker::finishWithCode(const std::shared_ptr<Transfer>& transfer, CURLcode code) {
  core::UpstreamOutcome outcome;
  long request_size = 0;
  if (transfer->easy) curl_easy_getinfo(transfer->easy.get(), CURLINFO_REQUEST_SIZE, &request_size);
  classify(*transfer, code, request_size > 0, outcome);
  finish(transfer, std::move(outcome));
}

void CurlUpstreamClient::Worker::finish(const std::shared_ptr<Transfer>& transfer, core::UpstreamOutcome outcome) {
  if (transfer->finished.exchange(true, std::memory_order_acq_rel)) return;
  disarmWait(*transfer);
  outcome.headers_received = transfer->headers_delivered;
  if (transfer->easy) {
    long connects = 0;
    long request_size = 0;
    curl_easy_getinfo(transfer->easy.get(), CURLINFO_NUM_CONNECTS, &connects);
    curl_easy_getinfo(transfer->easy.get(), CURLINFO_REQUEST_SIZE, &request_size);
    outcome.connection_reused = connects == 0 && (request_size > 0 || transfer->headers_delivered);
    if (connects > 0) counters_->connections_opened.fetch_add(static_cast<uint64_t>(connects));
    if (outcome.connection_reused) counters_->connections_reused.fetch_add(1);
    releaseEasy(*transfer);
  }
  active_.erase(transfer.get());
  outcome.elapsed = std::chrono::duration_cast<std::chrono::microseconds>(SteadyClock::now() - transfer->started_at);
  counters_->in_flight.fetch_sub(1);
  // Drop what the exchange held (body, headers, observer) even if the caller keeps its handle;
  // the observer lives until onComplete returns.
  std::shared_ptr<core::UpstreamObserver> observer = std::move(transfer->observer);
  transfer->request = core::UpstreamRequest{};
  transfer->headers = core::Headers{};
  transfer->reason = std::string{};
  if (observer) {
    try {
      observer->onComplete(outcome);
    } catch (...) {
      // An observer's exception must not unwind through the event loop; the exchange is over
      // either way and the observer owns its own error reporting (the gateway's answer 500).
    }
  }
}

EasyPtr CurlUpstreamClient::Worker::acquireEasy(Pool& pool) {
  if (!pool.idle.empty()) {
    EasyPtr easy = std::move(pool.idle.back());
    pool.idle.pop_back();
    return easy;
  }
  EasyPtr easy(curl_easy_init());
  if (easy && !setPoolOptions(pool, easy.get())) easy.reset();
  return easy;
}

void CurlUpstreamClient::Worker::releaseEasy(Transfer& transfer) {
  auto* pool = static_cast<Pool*>(transfer.pool);
  EasyPtr easy = std::move(transfer.easy);
  if (pool == nullptr) return;  // never configured for a pool: not worth keeping
  curl_multi_remove_handle(pool->multi.get(), easy.get());
  transfer.pool = nullptr;
  --pool->active;
  // Pointers into the transfer must not outlive it in a kept handle: the next exchange sets its
  // own before it runs, and nothing reads them in between (nor curl_easy_cleanup).
  curl_easy_setopt(easy.get(), CURLOPT_HTTPHEADER, static_cast<curl_slist*>(nullptr));
  curl_easy_setopt(easy.get(), CURLOPT_ERRORBUFFER, static_cast<char*>(nullptr));
  transfer.header_list.reset();
  if (pool->idle.size() < options_.max_idle_handles) pool->idle.push_back(std::move(easy));
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
  if (auto* pool = static_cast<Pool*>(transfer->pool)) pool->worker->disarmWait(*transfer);
  return CURL_PREREQFUNC_OK;
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

void CurlUpstreamClient::Worker::classify(const Transfer& transfer, CURLcode code,
                                          bool request_sent, core::UpstreamOutcome& outcome) const {
  if (code == CURLE_OK) {
    if (!transfer.headers_delivered) {
      outcome.failure = UpstreamFailure::kProtocol;
      outcome.message = "upstream response had no header block";
    }
    return;
  }
  if (transfer.local_failure != UpstreamFailure::kNone) {
    outcome.failure = transfer.local_failure;
    outcome.message = transfer.local_message;
    return;
  }
  if (transfer.cancel_requested.load(std::memory_order_acquire)) {
    outcome.failure = UpstreamFailure::kCancelled;
    outcome.message = "cancelled";
    return;
  }
  // libcurl's error buffer is quoted only for connect and TLS failures, where it names host,
  // port or certificate; elsewhere it may quote response header values, which logs must not see.
  const std::string detail =
      transfer.error_buffer[0] != '\0' ? std::string(transfer.error_buffer) : curl_easy_strerror(code);
  if (auto problem = tlsProblemOf(transfer.easy.get(), code, transfer.error_buffer, transfer.headers_delivered)) {
    outcome.failure = UpstreamFailure::kTls;
    outcome.tls_problem = *problem;
    // A failed verification is said in general words only: libcurl's text may quote the
    // certificate ("certificate subject name '...' does not match target host name").
    outcome.message = core::isCertificateVerification(*problem)
                          ? "TLS certificate verification failed: " + std::string(core::tlsProblemText(*problem))
                          : "TLS handshake failed: " + detail;
    return;
  }
  switch (code) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
      outcome.failure = UpstreamFailure::kConnectFailed;
      outcome.message = "cannot connect to upstream: " + detail;
      return;
    case CURLE_OPERATION_TIMEDOUT:
      outcome.failure = UpstreamFailure::kTimeout;
      outcome.message = transfer.headers_delivered ? "upstream timed out while sending the body"
                        : request_sent             ? "upstream timed out before answering"
                                                   : "upstream timed out while connecting";
      return;
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_HTTP3:
      outcome.failure = UpstreamFailure::kSendFailed;
      outcome.message = std::string(transfer.headers_delivered ? "upstream connection failed mid-response: "
                                                               : "upstream connection failed: ") +
                        curl_easy_strerror(code);
      return;
    case CURLE_OUT_OF_MEMORY:
      // What libcurl 7.88 returns for a response header line over its fixed 100 KB limit
      // (CURL_MAX_HTTP_HEADER; 8.6 has CURLE_TOO_LARGE): the upstream's answer is unusable, the
      // connection did not fail. (A real allocation failure ends here too; it is as fatal.)
      outcome.failure = UpstreamFailure::kProtocol;
      outcome.message = "upstream response header too large (over libcurl's 100 KB per line)";
      return;
    case CURLE_URL_MALFORMAT:
      outcome.failure = UpstreamFailure::kProtocol;
      outcome.message = "invalid upstream request: URL does not parse";
      return;
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_UNSUPPORTED_PROTOCOL:  // also what 7.88 returns for a reply that is not HTTP/1+
    case CURLE_BAD_CONTENT_ENCODING:
    case CURLE_RANGE_ERROR:
    case CURLE_FILESIZE_EXCEEDED:
    case CURLE_WRITE_ERROR:
    case CURLE_ABORTED_BY_CALLBACK:
      outcome.failure = UpstreamFailure::kProtocol;
      outcome.message = std::string("upstream protocol error: ") + curl_easy_strerror(code);
      return;
    default:
      outcome.failure = request_sent ? UpstreamFailure::kSendFailed : UpstreamFailure::kConnectFailed;
      outcome.message = std::string("upstream exchange failed: ") + curl_easy_strerror(code);
      return;
  }
}

namespace {

size_t onHeaderLine(char* data, size_t size, size_t count, void* userp) {
  auto* transfer = static_cast<Transfer*>(userp);
  const size_t length = size * count;
  if (transfer->headers_delivered) return length;  // trailers of a chunked body: not forwarded
  transfer->header_bytes += length;
  if (transfer->header_bytes > transfer->max_header_bytes) {
    transfer->local_failure = UpstreamFailure::kProtocol;
    transfer->local_message = "upstream response headers exceed " +
                              std::to_string(transfer->max_header_bytes) + " bytes";
    return 0;
  }
  std::string_view line(data, length);
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.remove_suffix(1);

  if (!transfer->in_header_block) {
    if (!parseStatusLine(line, transfer->status, transfer->reason)) {
      transfer->local_failure = UpstreamFailure::kProtocol;
      transfer->local_message = "upstream sent a malformed status line";
      return 0;
    }
    transfer->in_header_block = true;
    transfer->interim = transfer->status < 200;
    transfer->headers.clear();
    transfer->content_length.clear();
    return length;
  }
  if (line.empty()) {  // end of a header block
    transfer->in_header_block = false;
    if (transfer->interim) {
      transfer->headers.clear();
      return length;
    }
    transfer->headers_delivered = true;
    try {
      transfer->observer->onHeaders(transfer->status, transfer->reason, std::move(transfer->headers));
    } catch (...) {
      transfer->local_failure = UpstreamFailure::kProtocol;
      transfer->local_message = "response observer failed in onHeaders";
      return 0;
    }
    transfer->headers = core::Headers{};
    return length;
  }
  if (transfer->interim) return length;
  if (line.front() == ' ' || line.front() == '\t') {
    // Obsolete line folding (RFC 9112 §5.2): join with a single space.
    if (!transfer->headers.empty()) {
      transfer->headers.back().value += ' ';
      transfer->headers.back().value += trimOws(line);
    }
    return length;
  }
  const size_t colon = line.find(':');
  if (colon == std::string_view::npos || colon == 0) return length;  // not a field: dropped
  const std::string_view name = line.substr(0, colon);
  if (core::iequals(name, "Content-Length")) {
    // RFC 9112 §6.3: differing Content-Length values make the framing invalid; a proxy must
    // discard the response and answer 502 (libcurl 7.88 takes one of them). Identical repeats,
    // also as one comma-separated list, are allowed.
    std::string_view values = line.substr(colon + 1);
    while (!values.empty()) {
      const size_t comma = values.find(',');
      const std::string_view value = trimOws(values.substr(0, comma));
      values = comma == std::string_view::npos ? std::string_view() : values.substr(comma + 1);
      if (transfer->content_length.empty()) {
        transfer->content_length = std::string(value);
      } else if (transfer->content_length != value) {
        transfer->local_failure = UpstreamFailure::kProtocol;
        transfer->local_message = "upstream sent conflicting Content-Length values";
        return 0;
      }
    }
    return length;
  }
  if (core::iequals(name, "Transfer-Encoding")) return length;
  transfer->headers.push_back(core::Header{std::string(name), std::string(trimOws(line.substr(colon + 1)))});
  return length;
}

size_t onBodyData(char* data, size_t size, size_t count, void* userp) {
  auto* transfer = static_cast<Transfer*>(userp);
  const size_t length = size * count;
  if (transfer->cancel_requested.load(std::memory_order_relaxed)) return 0;  // stop reading now
  std::string_view chunk(data, length);
  if (transfer->redelivered_bytes_to_skip > 0) {
    const size_t skip = std::min(transfer->redelivered_bytes_to_skip, chunk.size());
    chunk.remove_prefix(skip);
    transfer->redelivered_bytes_to_skip -= skip;
    if (chunk.empty()) return length;
  }
  if (!transfer->headers_delivered) {
    transfer->local_failure = UpstreamFailure::kProtocol;
    transfer->local_message = "upstream sent body bytes before its headers";
    return 0;
  }
  if (!transfer->request.allow_streaming &&
      chunk.size() > transfer->request.max_response_bytes - std::min(transfer->body_bytes, transfer->request.max_response_bytes)) {
    transfer->local_failure = UpstreamFailure::kResponseTooLarge;
    transfer->local_message = "upstream response body exceeds " +
                              std::to_string(transfer->request.max_response_bytes) + " bytes";
    return 0;
  }
  transfer->body_bytes += chunk.size();
  bool more = true;
  try {
    more = transfer->observer->onBody(chunk);
  } catch (...) {
    transfer->local_failure = UpstreamFailure::kProtocol;
    transfer->local_message = "response observer failed in onBody";
    return 0;
  }
  if (!more) {
    transfer->paused = true;
    // libcurl keeps all `length` bytes of this call and passes them again on resume.
    transfer->redelivered_bytes_to_skip = length;
    return CURL_WRITEFUNC_PAUSE;
  }
  return length;
}

}  // namespace

CurlUpstreamClient::CurlUpstreamClient(CurlUpstreamClientOptions options)
    : options_(std::move(options)),
      counters_(std::make_shared<Counters>()),
      client_id_(g_next_client_id.fetch_add(1, std::memory_order_relaxed)) {
  globalInit();
  if (!options_.trust) options_.trust = std::make_shared<TrustStores>();
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
      // As in finish(): the observer's failure is its own to report.
    }
  }
  return transfer;
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
