// The Redis client's I/O thread (redis_client.hpp): hiredis async contexts whose descriptors sit
// in one epoll set with a command mailbox (eventfd) and a timer (timerfd) for timeouts,
// reconnects and the pause after repeated failures.
#include "daemon/redis_client.hpp"

#include <errno.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <sodium.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "daemon/event_mailbox.hpp"
#include "daemon/owned_fd.hpp"

namespace keyway::daemon {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

core::Result<std::pair<std::string, int>> parseRedisAddress(std::string_view address) {
  if (address.empty()) return core::Error::make(core::ErrorCode::kBadRequest, "is empty");
  if (address.front() == '/') return std::pair<std::string, int>{std::string(address), 0};
  std::string_view host;
  std::string_view port;
  if (address.front() == '[') {
    const size_t close = address.find(']');
    if (close == std::string_view::npos || close + 1 >= address.size() || address[close + 1] != ':') {
      return core::Error::make(core::ErrorCode::kBadRequest, "must be [v6-address]:port, host:port or a unix socket path");
    }
    host = address.substr(1, close - 1);
    port = address.substr(close + 2);
  } else {
    const size_t colon = address.rfind(':');
    if (colon == std::string_view::npos || address.find(':') != colon) {
      return core::Error::make(core::ErrorCode::kBadRequest, "must be host:port, [v6-address]:port or a unix socket path");
    }
    host = address.substr(0, colon);
    port = address.substr(colon + 1);
  }
  int n = 0;
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), n);
  if (host.empty() || ec != std::errc() || end != port.data() + port.size() || n < 1 || n > 65535) {
    return core::Error::make(core::ErrorCode::kBadRequest, "needs a host and a port between 1 and 65535");
  }
  return std::pair<std::string, int>{std::string(host), n};
}

namespace {

// After this many timeouts in a row, commands are refused at once
// for a pause that doubles from kPauseFirst up to kPauseMax: a paused or dying Redis then costs
// requests nothing instead of one timeout each.
constexpr int kFailuresBeforePause = 3;
constexpr milliseconds kPauseFirst{500};
constexpr milliseconds kPauseMax{5000};
constexpr milliseconds kReconnectFirst{100};
constexpr milliseconds kReconnectMax{2000};

milliseconds jitter(milliseconds base) {
  const auto half = static_cast<uint32_t>(std::max<int64_t>(1, base.count() / 2));
  return milliseconds(base.count() - half + randombytes_uniform(2 * half + 1));
}

RedisReply convert(const redisReply* r) {
  RedisReply out;
  switch (r->type) {
    case REDIS_REPLY_STRING: out.type = RedisReply::Type::kString; break;
    case REDIS_REPLY_STATUS: out.type = RedisReply::Type::kStatus; break;
    case REDIS_REPLY_ERROR: out.type = RedisReply::Type::kError; break;
    case REDIS_REPLY_INTEGER: out.type = RedisReply::Type::kInteger; break;
    case REDIS_REPLY_ARRAY: out.type = RedisReply::Type::kArray; break;
    default: out.type = RedisReply::Type::kNil; break;
  }
  if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS || r->type == REDIS_REPLY_ERROR) {
    out.str.assign(r->str, r->len);
  }
  if (r->type == REDIS_REPLY_INTEGER) out.integer = r->integer;
  if (r->type == REDIS_REPLY_ARRAY) {
    out.elements.reserve(r->elements);
    for (size_t i = 0; i < r->elements; ++i) out.elements.push_back(convert(r->element[i]));
  }
  return out;
}

}  // namespace

class RedisClient::Impl {
 public:
  explicit Impl(RedisClientOptions options) : options_(std::move(options)) {}
  ~Impl() { stop(); }

  core::Status init() {
    auto where = parseRedisAddress(options_.address);
    if (!where) return core::Error::make(core::ErrorCode::kBadRequest, "redis address: " + where.error().message);
    host_ = where->first;
    port_ = where->second;
    epoll_.reset(::epoll_create1(EPOLL_CLOEXEC));
    event_.reset(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    timer_.reset(::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
    if (epoll_.get() < 0 || event_.get() < 0 || timer_.get() < 0) {
      return core::Error::make(core::ErrorCode::kInternal, std::string("redis client: ") + strerror(errno));
    }
    for (int fd : {event_.get(), timer_.get()}) {
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.fd = fd;
      if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
        return core::Error::make(core::ErrorCode::kInternal, std::string("redis client: ") + strerror(errno));
      }
    }
    mailbox_ = std::make_unique<EventMailbox<Post>>(event_.get());
    const size_t n = std::max<size_t>(1, options_.max_connections);
    for (size_t i = 0; i < n; ++i) conns_.push_back(std::make_unique<Conn>(this, false));
    thread_ = std::thread([this] { run(); });
    return core::okStatus();
  }

  void stop() {
    if (!thread_.joinable()) return;
    stopping_.store(true);
    mailbox_->wake();
    thread_.join();
  }

  void command(std::vector<std::string> argv, Done done) {
    Post p;
    p.argv = std::move(argv);
    p.done = std::move(done);
    if (!mailbox_->postOrKeep(p)) {
      // Only after the thread has shut down: then nobody else would ever run it.
      RedisResult r;
      r.failure = RedisFailure::kUnavailable;
      r.message = "the Redis client has stopped";
      if (p.done) p.done(std::move(r));
    }
  }

  void subscribe(std::string channel, std::function<void(std::string_view)> on_message, std::function<void()> on_gap) {
    Post p;
    p.subscribe = true;
    p.channel = std::move(channel);
    p.on_message = std::move(on_message);
    p.on_gap = std::move(on_gap);
    mailbox_->post(std::move(p));
  }

  RedisClientStats stats() const {
    std::lock_guard<std::mutex> lock(stats_mu_);
    return stats_;
  }

 private:
  struct Post {
    std::vector<std::string> argv;
    Done done;
    bool subscribe = false;
    std::string channel;
    std::function<void(std::string_view)> on_message;
    std::function<void()> on_gap;
  };

  struct Conn {
    Conn(Impl* owner, bool for_subscription) : impl(owner), subscriber(for_subscription) {}
    Impl* impl;
    bool subscriber;
    redisAsyncContext* ac = nullptr;
    bool up = false;
    bool close_requested = false;
    uint32_t events = 0;  // registered with epoll (0 = not registered)
    uint32_t wanted = 0;  // what hiredis asked for
    int fd = -1;
    Clock::time_point next_connect{};
    milliseconds backoff{0};
    bool ever_up = false;
    std::deque<Clock::time_point> issued;  // sent, reply not yet read (in order)
  };

  struct Pending {
    Done done;
    Clock::time_point deadline;
  };

  // --- hiredis event hooks (the Conn is ev.data) ---------------------------------------------
  static void hookAddRead(void* d) { static_cast<Conn*>(d)->impl->want(static_cast<Conn*>(d), EPOLLIN, true); }
  static void hookDelRead(void* d) { static_cast<Conn*>(d)->impl->want(static_cast<Conn*>(d), EPOLLIN, false); }
  static void hookAddWrite(void* d) { static_cast<Conn*>(d)->impl->want(static_cast<Conn*>(d), EPOLLOUT, true); }
  static void hookDelWrite(void* d) { static_cast<Conn*>(d)->impl->want(static_cast<Conn*>(d), EPOLLOUT, false); }
  static void hookCleanup(void* d) {
    auto* c = static_cast<Conn*>(d);
    c->impl->unregister(c);
  }

  static void onConnect(const redisAsyncContext* ac, int status) {
    auto* c = static_cast<Conn*>(ac->ev.data);
    if (status != REDIS_OK) {
      // hiredis frees the context after this callback.
      c->ac = nullptr;
      c->up = false;
      c->impl->connectionLost(c, ac->errstr);
      return;
    }
    c->up = true;
    c->backoff = milliseconds(0);
    if (c->ever_up) {
      std::lock_guard<std::mutex> lock(c->impl->stats_mu_);
      ++c->impl->stats_.reconnects;
    }
    c->ever_up = true;
    c->impl->countUp();
  }

  static void onDisconnect(const redisAsyncContext* ac, int status) {
    auto* c = static_cast<Conn*>(ac->ev.data);
    const bool was_up = c->up;
    c->ac = nullptr;  // hiredis frees it after this callback
    c->up = false;
    if (was_up) c->impl->countUp();
    c->impl->connectionLost(c, status == REDIS_OK ? "closed" : ac->errstr);
  }

  static void onReply(redisAsyncContext* ac, void* reply, void* privdata) {
    auto* c = static_cast<Conn*>(ac->ev.data);
    c->impl->reply(c, static_cast<redisReply*>(reply), reinterpret_cast<uintptr_t>(privdata));
  }

  static void onSubscription(redisAsyncContext* ac, void* reply, void* /*privdata*/) {
    auto* c = static_cast<Conn*>(ac->ev.data);
    c->impl->subscription(static_cast<redisReply*>(reply));
  }

  // --- the loop ------------------------------------------------------------------------------
  void run() {
    std::vector<Post> posts;
    epoll_event events[32];
    while (!stopping_.load()) {
      maintain();
      const int n = ::epoll_wait(epoll_.get(), events, 32, -1);
      if (n < 0 && errno != EINTR) break;
      for (int i = 0; i < std::max(n, 0); ++i) {
        const int fd = events[i].data.fd;
        if (fd == event_.get()) {
          uint64_t v;
          while (::read(event_.get(), &v, sizeof v) > 0) {
          }
          posts.clear();
          mailbox_->take(posts);
          for (Post& p : posts) handle(std::move(p));
        } else if (fd == timer_.get()) {
          uint64_t v;
          while (::read(timer_.get(), &v, sizeof v) > 0) {
          }
        } else {
          Conn* c = byFd(fd);
          if (c == nullptr || c->ac == nullptr) continue;
          // Read first: a reply may free room for the writes hiredis has queued.
          if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) redisAsyncHandleRead(c->ac);
          if (c->ac != nullptr && (events[i].events & (EPOLLOUT | EPOLLERR))) redisAsyncHandleWrite(c->ac);
        }
      }
      expire();
      closeRequested();
    }
    shutdown();
  }

  Conn* byFd(int fd) {
    for (auto& c : conns_) {
      if (c->fd == fd) return c.get();
    }
    if (sub_ && sub_->fd == fd) return sub_.get();
    return nullptr;
  }

  void handle(Post p) {
    if (p.subscribe) {
      channel_ = std::move(p.channel);
      on_message_ = std::move(p.on_message);
      on_gap_ = std::move(p.on_gap);
      sub_ = std::make_unique<Conn>(this, true);
      return;
    }
    const auto now = Clock::now();
    {
      std::lock_guard<std::mutex> lock(stats_mu_);
      ++stats_.commands;
    }
    if (now < paused_until_) {
      fail(p.done, RedisFailure::kUnavailable, "Redis is skipped for a while after repeated failures");
      return;
    }
    Conn* c = pick();
    if (c == nullptr) {
      fail(p.done, RedisFailure::kUnavailable, "no connection to Redis at " + options_.address);
      return;
    }
    std::vector<const char*> args;
    std::vector<size_t> lens;
    args.reserve(p.argv.size());
    lens.reserve(p.argv.size());
    for (const auto& a : p.argv) {
      args.push_back(a.data());
      lens.push_back(a.size());
    }
    const uint64_t id = next_id_++;
    if (redisAsyncCommandArgv(c->ac, &Impl::onReply, reinterpret_cast<void*>(static_cast<uintptr_t>(id)),
                              static_cast<int>(args.size()), args.data(), lens.data()) != REDIS_OK) {
      fail(p.done, RedisFailure::kUnavailable, "the Redis connection is closing");
      return;
    }
    c->issued.push_back(now);
    const auto deadline = now + options_.timeout;
    pending_.emplace(id, Pending{std::move(p.done), deadline});
    deadlines_.emplace(deadline, id);
  }

  Conn* pick() {
    for (size_t i = 0; i < conns_.size(); ++i) {
      Conn* c = conns_[(rr_ + i) % conns_.size()].get();
      if (c->up && c->ac != nullptr && !c->close_requested) {
        rr_ = (rr_ + i + 1) % conns_.size();
        return c;
      }
    }
    return nullptr;
  }

  void reply(Conn* c, redisReply* r, uint64_t id) {
    if (!c->issued.empty()) c->issued.pop_front();
    auto it = pending_.find(id);
    if (it == pending_.end()) return;  // timed out already
    Done done = std::move(it->second.done);
    pending_.erase(it);
    RedisResult result;
    if (r == nullptr) {
      result.failure = RedisFailure::kUnavailable;
      result.message = "the connection to Redis at " + options_.address + " was lost";
      noteFailure(RedisFailure::kUnavailable);
    } else if (r->type == REDIS_REPLY_ERROR) {
      result.failure = RedisFailure::kServerError;
      result.message = "Redis answered an error: " + std::string(r->str, std::min<size_t>(r->len, 200));
      std::lock_guard<std::mutex> lock(stats_mu_);
      ++stats_.server_errors;
    } else {
      result.reply = convert(r);
      consecutive_failures_ = 0;
      pause_ = milliseconds(0);
    }
    done(std::move(result));
  }

  void subscription(redisReply* r) {
    if (r == nullptr || r->type != REDIS_REPLY_ARRAY || r->elements < 3) return;
    const std::string_view kind(r->element[0]->str == nullptr ? "" : r->element[0]->str,
                                r->element[0]->str == nullptr ? 0 : r->element[0]->len);
    if (kind == "subscribe") {
      {
        std::lock_guard<std::mutex> lock(stats_mu_);
        stats_.subscribed = true;
      }
      if (subscribed_once_ && on_gap_) on_gap_();
      subscribed_once_ = true;
    } else if (kind == "message" && r->element[2]->type == REDIS_REPLY_STRING && on_message_) {
      on_message_(std::string_view(r->element[2]->str, r->element[2]->len));
    }
  }

  void fail(Done& done, RedisFailure f, std::string message) {
    RedisResult r;
    r.failure = f;
    r.message = std::move(message);
    noteFailure(f);
    done(std::move(r));
  }

  void noteFailure(RedisFailure f) {
    {
      std::lock_guard<std::mutex> lock(stats_mu_);
      if (f == RedisFailure::kTimeout) ++stats_.timeouts;
      if (f == RedisFailure::kUnavailable) ++stats_.unavailable;
    }
    // Only a timeout costs the request anything; a command refused for want of a connection
    // ends at once, and counting it would keep Redis skipped while its connections come back.
    if (f != RedisFailure::kTimeout) return;
    const auto now = Clock::now();
    if (now < paused_until_) return;
    if (++consecutive_failures_ >= kFailuresBeforePause) {
      pause_ = pause_.count() == 0 ? kPauseFirst : std::min(kPauseMax, pause_ * 2);
      paused_until_ = now + jitter(pause_);
      consecutive_failures_ = 0;
    }
  }

  void expire() {
    const auto now = Clock::now();
    while (!deadlines_.empty() && deadlines_.begin()->first <= now) {
      const uint64_t id = deadlines_.begin()->second;
      deadlines_.erase(deadlines_.begin());
      auto it = pending_.find(id);
      if (it == pending_.end()) continue;  // answered in time
      Done done = std::move(it->second.done);
      pending_.erase(it);
      fail(done, RedisFailure::kTimeout,
           "Redis at " + options_.address + " did not answer within " + std::to_string(options_.timeout.count()) + " ms");
    }
    // A connection whose oldest unanswered command is long overdue is dead or its server paused:
    // drop it (its late replies are of no use) and connect again.
    const auto stuck = std::max(milliseconds(1000), options_.timeout * 10);
    for (auto& c : conns_) {
      if (c->ac != nullptr && !c->issued.empty() && now - c->issued.front() > stuck) c->close_requested = true;
    }
  }

  void closeRequested() {
    for (auto& c : conns_) {
      if (c->close_requested && c->ac != nullptr) {
        redisAsyncContext* ac = c->ac;
        const bool was_up = c->up;
        redisAsyncFree(ac);  // pending callbacks get a null reply; onDisconnect runs if it was connected
        c->ac = nullptr;
        c->up = false;
        if (c->fd >= 0) connectionLost(c.get(), "closed");  // onDisconnect did not run
        if (was_up) countUp();
      }
      c->close_requested = false;
    }
  }

  // Connects what is down and due, and arms the timer for the next deadline or reconnect.
  void maintain() {
    const auto now = Clock::now();
    Clock::time_point next = Clock::time_point::max();
    auto consider = [&](Conn& c) {
      if (c.ac != nullptr) return;
      if (now >= c.next_connect) connect(c);
      if (c.ac == nullptr) next = std::min(next, c.next_connect);
    };
    for (auto& c : conns_) consider(*c);
    if (sub_) consider(*sub_);
    if (!deadlines_.empty()) next = std::min(next, deadlines_.begin()->first);
    itimerspec its{};
    if (next != Clock::time_point::max()) {
      const auto wait = std::max<int64_t>(
          1, std::chrono::duration_cast<std::chrono::microseconds>(next - now).count());
      its.it_value.tv_sec = wait / 1000000;
      its.it_value.tv_nsec = (wait % 1000000) * 1000;
    }
    ::timerfd_settime(timer_.get(), 0, &its, nullptr);
  }

  void connect(Conn& c) {
    redisAsyncContext* ac = port_ == 0 ? redisAsyncConnectUnix(host_.c_str()) : redisAsyncConnect(host_.c_str(), port_);
    if (ac == nullptr || ac->err != 0) {
      if (ac != nullptr) redisAsyncFree(ac);
      scheduleReconnect(c);
      return;
    }
    c.ac = ac;
    c.fd = ac->c.fd;
    c.events = 0;
    c.wanted = 0;
    c.issued.clear();
    ac->ev.data = &c;
    ac->ev.addRead = &Impl::hookAddRead;
    ac->ev.delRead = &Impl::hookDelRead;
    ac->ev.addWrite = &Impl::hookAddWrite;
    ac->ev.delWrite = &Impl::hookDelWrite;
    ac->ev.cleanup = &Impl::hookCleanup;
    redisAsyncSetConnectCallback(ac, &Impl::onConnect);
    redisAsyncSetDisconnectCallback(ac, &Impl::onDisconnect);
    // The connect completes on the first writable event (hiredis checks the socket then).
    want(&c, EPOLLOUT, true);
    if (options_.password) {
      const std::string_view pw = options_.password->view();
      const char* args[] = {"AUTH", pw.data()};
      const size_t lens[] = {4, pw.size()};
      redisAsyncCommandArgv(ac, &Impl::onAuth, nullptr, 2, args, lens);
    }
    if (c.subscriber) {
      const char* args[] = {"SUBSCRIBE", channel_.c_str()};
      const size_t lens[] = {9, channel_.size()};
      redisAsyncCommandArgv(ac, &Impl::onSubscription, nullptr, 2, args, lens);
    }
  }

  static void onAuth(redisAsyncContext* ac, void* reply, void*) {
    auto* r = static_cast<redisReply*>(reply);
    if (r != nullptr && r->type == REDIS_REPLY_ERROR) {
      auto* c = static_cast<Conn*>(ac->ev.data);
      c->impl->setLastError("Redis refused the password: " + std::string(r->str, std::min<size_t>(r->len, 200)));
      c->close_requested = true;  // unusable: every command would fail with NOAUTH
    }
  }

  void scheduleReconnect(Conn& c) {
    c.backoff = c.backoff.count() == 0 ? kReconnectFirst : std::min(kReconnectMax, c.backoff * 2);
    c.next_connect = Clock::now() + jitter(c.backoff);
  }

  void connectionLost(Conn* c, const char* why) {
    unregister(c);
    c->fd = -1;
    setLastError(std::string("connection to Redis at ") + options_.address + ": " + (why != nullptr ? why : "lost"));
    c->events = 0;
    c->issued.clear();
    if (c->subscriber) {
      std::lock_guard<std::mutex> lock(stats_mu_);
      stats_.subscribed = false;
    }
    scheduleReconnect(*c);
  }

  void setLastError(std::string message) {
    std::lock_guard<std::mutex> lock(stats_mu_);
    stats_.last_error = std::move(message);
  }

  void countUp() {
    size_t n = 0;
    for (auto& c : conns_) n += c->up ? 1 : 0;
    std::lock_guard<std::mutex> lock(stats_mu_);
    stats_.connections_up = n;
  }

  void want(Conn* c, uint32_t what, bool on) {
    c->wanted = on ? (c->wanted | what) : (c->wanted & ~what);
    if (c->fd < 0) return;
    epoll_event ev{};
    ev.events = c->wanted;
    ev.data.fd = c->fd;
    if (c->events == 0 && c->wanted != 0) {
      if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, c->fd, &ev) == 0) c->events = c->wanted;
    } else if (c->events != 0 && c->wanted == 0) {
      ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, c->fd, nullptr);
      c->events = 0;
    } else if (c->events != c->wanted) {
      if (::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, c->fd, &ev) == 0) c->events = c->wanted;
    }
  }

  void unregister(Conn* c) {
    if (c->fd >= 0 && c->events != 0) ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, c->fd, nullptr);
    c->events = 0;
    c->wanted = 0;
  }

  void shutdown() {
    for (auto& c : conns_) {
      if (c->ac != nullptr) redisAsyncFree(c->ac);
    }
    if (sub_ && sub_->ac != nullptr) redisAsyncFree(sub_->ac);
    std::vector<Post> rest;
    while (!mailbox_->closeIfEmpty(rest)) {
      for (Post& p : rest) {
        if (p.done) fail(p.done, RedisFailure::kUnavailable, "the Redis client has stopped");
      }
      rest.clear();
    }
    for (auto& [id, p] : pending_) fail(p.done, RedisFailure::kUnavailable, "the Redis client has stopped");
    pending_.clear();
  }

  RedisClientOptions options_;
  std::string host_;
  int port_ = 0;
  Fd epoll_, event_, timer_;
  std::unique_ptr<EventMailbox<Post>> mailbox_;
  std::thread thread_;
  std::atomic<bool> stopping_{false};

  // I/O thread only.
  std::vector<std::unique_ptr<Conn>> conns_;
  std::unique_ptr<Conn> sub_;
  std::string channel_;
  std::function<void(std::string_view)> on_message_;
  std::function<void()> on_gap_;
  bool subscribed_once_ = false;
  size_t rr_ = 0;
  uint64_t next_id_ = 1;
  std::unordered_map<uint64_t, Pending> pending_;
  std::multimap<Clock::time_point, uint64_t> deadlines_;
  int consecutive_failures_ = 0;
  milliseconds pause_{0};
  Clock::time_point paused_until_{};

  mutable std::mutex stats_mu_;
  RedisClientStats stats_;
};

core::Result<std::unique_ptr<RedisClient>> RedisClient::start(RedisClientOptions options) {
  auto impl = std::make_unique<Impl>(std::move(options));
  if (auto st = impl->init(); !st) return st.takeError();
  return std::unique_ptr<RedisClient>(new RedisClient(std::move(impl)));
}

RedisClient::RedisClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
RedisClient::~RedisClient() = default;

void RedisClient::command(std::vector<std::string> argv, Done done) { impl_->command(std::move(argv), std::move(done)); }

void RedisClient::subscribe(std::string channel, std::function<void(std::string_view)> on_message,
                            std::function<void()> on_gap) {
  impl_->subscribe(std::move(channel), std::move(on_message), std::move(on_gap));
}

RedisClientStats RedisClient::stats() const { return impl_->stats(); }

void RedisClient::stop() { impl_->stop(); }

}  // namespace keyway::daemon
