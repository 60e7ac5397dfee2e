// HTTP/1.1 connections on Pistache's TCP reactor: parsing, pipelining, keep-alive, timeouts,
// buffered and streamed responses, back-pressure.
#include "daemon/http_server.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <utility>
#include <vector>
#include <pistache/async.h>
#include <pistache/listener.h>
#include <pistache/net.h>
#include <pistache/peer.h>
#include <pistache/tcp.h>

#include "core/errors.hpp"
#include "core/http_parser.hpp"
#include "daemon/guest_transport.hpp"

namespace keyway::daemon {

namespace {

using Clock = std::chrono::steady_clock;

// Streamed bodies: pause the upstream when this much is queued for a slow client, resume below
// the low-water mark.
constexpr size_t kHighWater = 1u << 20;
constexpr size_t kLowWater = 256u << 10;

core::ParserLimits parserLimits(const core::LimitsConfig& l) {
  core::ParserLimits p;
  p.max_header_bytes = l.max_header_bytes;
  p.max_headers = l.max_headers;
  p.max_body_bytes = l.max_body_bytes;
  return p;
}

struct DirCloser {
  void operator()(DIR* d) const { ::closedir(d); }
};

// Descriptors of this process's listening sockets (SO_ACCEPTCONN), from /proc/self/fd.
std::vector<int> listeningSockets() {
  std::vector<int> out;
  std::unique_ptr<DIR, DirCloser> dir(::opendir("/proc/self/fd"));
  if (!dir) return out;
  const int own = ::dirfd(dir.get());
  while (const dirent* entry = ::readdir(dir.get())) {
    char* end = nullptr;
    const long fd = std::strtol(entry->d_name, &end, 10);
    if (end == entry->d_name || *end != '\0' || fd < 0 || fd == own) continue;
    int accepting = 0;
    socklen_t len = sizeof accepting;
    if (::getsockopt(static_cast<int>(fd), SOL_SOCKET, SO_ACCEPTCONN, &accepting, &len) == 0 && accepting != 0) {
      out.push_back(static_cast<int>(fd));
    }
  }
  return out;
}

// The local port and address family of a socket, or {0, AF_UNSPEC}.
std::pair<uint16_t, int> localPort(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return {0, AF_UNSPEC};
  if (ss.ss_family == AF_INET) return {ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port), AF_INET};
  if (ss.ss_family == AF_INET6) return {ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port), AF_INET6};
  return {0, AF_UNSPEC};
}

}  // namespace

// State shared by the listener's handler clones, the housekeeper and the responders.
class ServerShared {
 public:
  ServerShared(std::shared_ptr<core::Gateway> gateway, std::shared_ptr<core::Metrics> metrics,
               core::LimitsConfig limits, core::ListenerContext context)
      : gateway_(std::move(gateway)), metrics_(std::move(metrics)), limits_(limits), context_(std::move(context)) {}

  core::Gateway& gateway() { return *gateway_; }
  core::Metrics& metrics() { return *metrics_; }
  const core::ListenerContext& context() const { return context_; }

  core::LimitsConfig limits() {
    std::lock_guard<std::mutex> lock(limits_mu_);
    return limits_;
  }
  void setLimits(const core::LimitsConfig& l) {
    std::lock_guard<std::mutex> lock(limits_mu_);
    limits_ = l;
  }

  void add(const std::shared_ptr<Connection>& c);
  void remove(Connection* c);
  std::vector<std::shared_ptr<Connection>> snapshot();
  size_t count() {
    std::lock_guard<std::mutex> lock(reg_mu_);
    return connections_.size();
  }

  // Cleared by HttpServer::stopAccepting(): connections accepted from then on are closed at once.
  bool accepting() const { return accepting_.load(std::memory_order_acquire); }
  void stopAccepting() { accepting_.store(false, std::memory_order_release); }

 private:
  std::atomic<bool> accepting_{true};
  std::shared_ptr<core::Gateway> gateway_;
  std::shared_ptr<core::Metrics> metrics_;
  std::mutex limits_mu_;
  core::LimitsConfig limits_;
  core::ListenerContext context_;
  std::mutex reg_mu_;
  std::unordered_map<Connection*, std::weak_ptr<Connection>> connections_;
};

// One client connection. All state is guarded by mu_; the peer's fd is only touched while
// closed_ is false under mu_, and Pistache calls onDisconnection (which sets closed_) before it
// closes the fd, so a late write or shutdown can never hit a reused descriptor number.
class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(std::shared_ptr<Pistache::Tcp::Peer> peer, std::shared_ptr<ServerShared> shared)
      : peer_(std::move(peer)),
        shared_(std::move(shared)),
        parser_(parserLimits(shared_->limits())),
        last_activity_(Clock::now()) {
    context_ = shared_->context();
    try {
      context_.peer = peer_->address().host();
    } catch (...) {
      // Pistache throws for a peer that went away between accept and here: the address is only
      // for the access line, which then says "-" (visible; nothing else depends on it).
      context_.peer = "-";
    }
  }

  void onInput(const char* data, size_t len) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (closed_ || shut_) return;
      last_activity_ = Clock::now();
      if (inbuf_.empty() && !parser_started_) request_started_ = last_activity_;
      inbuf_.append(data, len);
      // A client that keeps sending while we work on its previous request can only queue so
      // much: one more full request at most. (The limits are read only then: limits() takes a
      // mutex every reactor thread shares.)
      if (busy_) {
        const auto limits = shared_->limits();
        if (inbuf_.size() > limits.max_header_bytes + limits.max_body_bytes + 65536) {
          hardCloseLocked();
          return;
        }
      }
    }
    drive();
  }

  void onDisconnected() {
    std::function<void()> drained;
    {
      std::lock_guard<std::mutex> send_lock(send_mu_);
      std::lock_guard<std::mutex> lock(mu_);
      closed_ = true;
      peer_.reset();
      drained = std::move(drained_);
    }
    // A paused stream must learn that its client is gone; resuming lets it see writeChunk fail.
    if (drained) drained();
  }

  // Timeouts: called by the housekeeper about once a second.
  void checkTimeouts(Clock::time_point now, const core::LimitsConfig& limits) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (closed_ || shut_ || busy_) return;
      if (parser_started_ || !inbuf_.empty()) {
        const bool head_done = parser_.headComplete();
        const auto limit = head_done ? limits.header_timeout + limits.body_timeout : limits.header_timeout;
        if (now - request_started_ <= limit) return;
        // RFC 9110 408: the client was too slow to send its request (slowloris guard).
        refuseLocked(lock, core::Error::make(core::ErrorCode::kBadRequest,
                                             "the request was not received in time; send it promptly"),
                     408);
      } else if (now - last_activity_ > limits.idle_timeout) {
        gracefulCloseLocked();
      }
    }
    flush();
  }

  void closeNow() {
    std::lock_guard<std::mutex> lock(mu_);
    hardCloseLocked();
  }

  bool busy() {
    std::lock_guard<std::mutex> lock(mu_);
    return busy_;
  }

  // A request is being handled, or response bytes are still on their way to the client.
  bool active() {
    std::lock_guard<std::mutex> lock(mu_);
    return !closed_ && (busy_ || pending_bytes_ > 0 || !outq_.empty());
  }

  // --- used by ConnResponder ---
  void sendResponse(const core::HttpResponse& response, bool keep_alive, int version_minor, bool head) {
    std::string out;
    out.reserve(256 + response.body.size());
    const bool close = !keep_alive || shared_->gateway().draining();
    core::appendResponseHead(out, response.status, response.reason, response.headers,
                             response.body.size(), false, close, version_minor);
    if (!head) out.append(response.body);
    {
      std::lock_guard<std::mutex> lock(mu_);
      queueLocked(std::move(out));
      finishLocked(close);
    }
    flush();
    drive();
  }

  void startStream(int status, std::string_view reason, const core::Headers& headers, bool keep_alive,
                   int version_minor) {
    std::string out;
    const bool chunked = version_minor >= 1;
    // HTTP/1.0 has no chunked framing: the body ends when the connection closes.
    const bool close = !keep_alive || !chunked || shared_->gateway().draining();
    core::appendResponseHead(out, status, reason, headers, std::nullopt, chunked, close, version_minor);
    {
      std::lock_guard<std::mutex> lock(mu_);
      stream_close_ = close;
      stream_chunked_ = chunked;
      queueLocked(std::move(out));
    }
    flush();
  }

  bool writeChunk(std::string_view data, bool* paused, std::function<void()> drained) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (closed_ || shut_) return false;
      std::string out;
      if (stream_chunked_) {
        core::appendChunk(out, data);
      } else {
        out.assign(data.data(), data.size());
      }
      queueLocked(std::move(out));
      if (pending_bytes_ > kHighWater && drained) {
        drained_ = std::move(drained);
        if (paused != nullptr) *paused = true;
      }
    }
    flush();
    return true;
  }

  void endStream() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stream_chunked_) {
        std::string out;
        core::appendLastChunk(out);
        queueLocked(std::move(out));
      }
      finishLocked(stream_close_);
    }
    flush();
    drive();
  }

  void abortStream() {
    std::lock_guard<std::mutex> lock(mu_);
    // Let what is queued go out, then cut the connection: the client sees a truncated body
    // (missing last chunk), never a wrong one.
    gracefulCloseLocked();
  }

 private:
  // Queues bytes for the client under mu_; flush() hands them to Pistache outside mu_, because
  // Pistache may run a write's continuation inline (an already-resolved promise), and that
  // continuation (onWritten) takes mu_.
  void queueLocked(std::string data) {
    if (closed_ || !peer_ || data.empty()) return;
    pending_bytes_ += data.size();
    outq_.push_back(std::move(data));
    has_out_.store(true, std::memory_order_relaxed);
  }

  // Sends what is queued, in order. send_mu_ serialises flushers (so bytes never reorder) and is
  // also taken by onDisconnected, so the fd cannot be closed by Pistache while we write to it or
  // enqueue on it.
  //
  // Direct write first (why): Pistache 0.0.5's Transport::asyncWrite copies the buffer and always
  // enqueues it for its reactor, woken through an eventfd: per response an eventfd write, an
  // epoll wake-up, an eventfd read and only then the send. When Pistache holds none of this
  // connection's bytes, one non-blocking send(2) from here usually takes the whole response; what
  // it cannot take (a full socket buffer, an error) goes to Pistache as before, which waits for
  // writability or reports the error. Order holds: nothing is sent directly while a Pistache
  // write of ours is pending.
  //
  // Nothing queued (the common call: drive() flushes before and after every request, and most
  // find nothing): return without taking either mutex. Safe because every caller that queues
  // bytes calls flush() itself afterwards, on its own thread, and sees its own store; a flusher
  // that misses a concurrent queuer's bytes leaves them to that queuer's flush.
  void flush() {
    if (!has_out_.load(std::memory_order_relaxed)) return;
    size_t written_directly = 0;
    {
      std::lock_guard<std::mutex> send_lock(send_mu_);
      std::string data;
      std::vector<std::string> batch;
      std::shared_ptr<Pistache::Tcp::Peer> peer;
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (outq_.empty()) return;
        has_out_.store(false, std::memory_order_relaxed);
        if (closed_ || !peer_) {
          outq_.clear();
          return;
        }
        // One response (the common case) is moved out and outq_ keeps its capacity, so the
        // next push_back does not allocate. Several pieces (a stream) are joined outside mu_.
        if (outq_.size() == 1) {
          data = std::move(outq_.front());
          outq_.clear();
        } else {
          batch.swap(outq_);
        }
        peer = peer_;
      }
      if (!batch.empty()) {
        size_t total = 0;
        for (const auto& b : batch) total += b.size();
        data.reserve(total);
        for (const auto& b : batch) data.append(b);
      }
      if (pistache_writes_.load(std::memory_order_acquire) == 0) {
        const ssize_t n = ::send(peer->fd(), data.data(), data.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
          written_directly = static_cast<size_t>(n);
          data.erase(0, written_directly);
        }
      }
      if (!data.empty()) {
        const size_t size = data.size();
        std::weak_ptr<Connection> weak = weak_from_this();
        pistache_writes_.fetch_add(1, std::memory_order_acq_rel);
        peer->send(Pistache::RawBuffer(std::move(data), size))
            .then([weak, size](ssize_t) {
                    if (auto self = weak.lock()) self->onPistacheWritten(size);
                  },
                  [weak, size](std::exception_ptr&) {
                    if (auto self = weak.lock()) self->onPistacheWritten(size);
                  });
      }
    }
    // Outside send_mu_: onWritten may run a paused stream's resume callback.
    if (written_directly > 0) onWritten(written_directly);
  }

  void onPistacheWritten(size_t size) {
    pistache_writes_.fetch_sub(1, std::memory_order_acq_rel);
    onWritten(size);
  }

  void onWritten(size_t size) {
    std::function<void()> drained;
    {
      std::lock_guard<std::mutex> lock(mu_);
      pending_bytes_ = pending_bytes_ >= size ? pending_bytes_ - size : 0;
      if (drained_ && pending_bytes_ < kLowWater) drained = std::move(drained_);
      if (pending_bytes_ == 0 && shut_after_write_ && !closed_ && peer_) {
        ::shutdown(peer_->fd(), SHUT_WR);
        shut_after_write_ = false;
      }
    }
    if (drained) drained();
  }

  // The current request's response is fully queued.
  void finishLocked(bool close) {
    busy_ = false;
    last_activity_ = Clock::now();
    if (close) gracefulCloseLocked();
  }

  // FIN after the queued bytes are written; the client reads the response, then closes, and
  // Pistache reaps the connection. (Closing outright could RST away an unread response.)
  void gracefulCloseLocked() {
    shut_ = true;
    if (closed_ || !peer_) return;
    if (pending_bytes_ == 0) {
      ::shutdown(peer_->fd(), SHUT_WR);
    } else {
      shut_after_write_ = true;
    }
  }

  void hardCloseLocked() {
    shut_ = true;
    if (closed_ || !peer_) return;
    ::shutdown(peer_->fd(), SHUT_RDWR);
  }

  // Answers a request the parser refused, or one that did not arrive in time, then closes (the
  // connection's framing is lost). The answer goes through the gateway, so that it has its access
  // line (with the upstream and client when the head was read). Called and returns with `lock`
  // held on mu_; releases it meanwhile (the answer takes mu_).
  void refuseLocked(std::unique_lock<std::mutex>& lock, const core::Error& error, int status = 0) {
    core::HttpRequest head;
    if (parser_.headComplete()) {
      head = std::move(parser_.request());
      head.body.clear();
    }
    const int version_minor = parser_.headComplete() ? head.version_minor : 1;
    busy_ = true;  // nothing more is parsed; the answer's finishLocked closes
    inbuf_.clear();
    auto responder = makeResponder(false, version_minor, head.method == "HEAD");
    lock.unlock();
    shared_->gateway().refuse(std::move(head), context_, error, status, std::move(responder));
    lock.lock();
  }

  // Parses and dispatches buffered requests, one at a time per connection (responses must go out
  // in request order). Re-entrant calls from a synchronous response just return: the frame
  // already driving picks the next request up.
  void drive() {
    std::unique_lock<std::mutex> lock(mu_);
    if (driving_) return;
    driving_ = true;
    while (!busy_ && !shut_ && !closed_ && !inbuf_.empty()) {
      const size_t consumed = parser_.feed(inbuf_);
      parser_started_ = true;
      if (consumed > 0) inbuf_.erase(0, consumed);
      const auto state = parser_.state();
      if (state == core::RequestParser::State::kNeedMore) {
        if (parser_.headComplete() && parser_.expectContinue() && !continue_sent_) {
          continue_sent_ = true;
          queueLocked("HTTP/1.1 100 Continue\r\n\r\n");
        }
        break;
      }
      if (state == core::RequestParser::State::kError) {
        const core::Error error = parser_.error();
        refuseLocked(lock, error);
        break;
      }
      // Complete request.
      busy_ = true;
      core::HttpRequest request = std::move(parser_.request());
      const bool keep_alive = parser_.keepAlive();
      const int version_minor = request.version_minor;
      parser_.reset();
      parser_started_ = false;
      continue_sent_ = false;
      request_started_ = Clock::now();
      auto responder = makeResponder(keep_alive, version_minor, request.method == "HEAD");
      lock.unlock();
      flush();  // a 100 Continue queued for an earlier read
      shared_->gateway().handle(std::move(request), context_, std::move(responder));
      lock.lock();
    }
    driving_ = false;
    lock.unlock();
    flush();
  }

  std::shared_ptr<core::Responder> makeResponder(bool keep_alive, int version_minor, bool head);

  std::mutex send_mu_;  // taken before mu_, never while holding mu_
  std::mutex mu_;
  std::atomic<int> pistache_writes_{0};  // writes handed to Pistache and not yet completed
  std::atomic<bool> has_out_{false};     // outq_ is not empty; written under mu_, read by flush()
  std::shared_ptr<Pistache::Tcp::Peer> peer_;
  std::vector<std::string> outq_;
  std::shared_ptr<ServerShared> shared_;
  core::ListenerContext context_;
  core::RequestParser parser_;
  std::string inbuf_;
  bool busy_ = false;
  bool closed_ = false;
  bool shut_ = false;
  bool shut_after_write_ = false;
  bool driving_ = false;
  bool parser_started_ = false;
  bool continue_sent_ = false;
  bool stream_chunked_ = true;
  bool stream_close_ = false;
  size_t pending_bytes_ = 0;
  std::function<void()> drained_;
  Clock::time_point last_activity_;
  Clock::time_point request_started_;
};

namespace {

class ConnResponder final : public core::Responder {
 public:
  ConnResponder(std::shared_ptr<Connection> conn, bool keep_alive, int version_minor, bool head)
      : conn_(std::move(conn)), keep_alive_(keep_alive), version_minor_(version_minor), head_(head) {}

  void send(core::HttpResponse response) override {
    if (done_.exchange(true)) return;
    conn_->sendResponse(response, keep_alive_, version_minor_, head_);
  }
  void startStream(int status, std::string_view reason, core::Headers headers) override {
    if (done_.exchange(true)) return;
    conn_->startStream(status, reason, headers, keep_alive_, version_minor_);
  }
  bool writeChunk(std::string_view data, bool* paused, std::function<void()> drained) override {
    return conn_->writeChunk(data, paused, std::move(drained));
  }
  void endStream() override { conn_->endStream(); }
  void abortStream() override { conn_->abortStream(); }
  bool http10() const override { return version_minor_ == 0; }

 private:
  std::shared_ptr<Connection> conn_;
  bool keep_alive_;
  int version_minor_;
  bool head_;
  std::atomic<bool> done_{false};
};

}  // namespace

std::shared_ptr<core::Responder> Connection::makeResponder(bool keep_alive, int version_minor, bool head) {
  return std::make_shared<ConnResponder>(shared_from_this(), keep_alive, version_minor, head);
}

void ServerShared::add(const std::shared_ptr<Connection>& c) {
  std::lock_guard<std::mutex> lock(reg_mu_);
  connections_.emplace(c.get(), c);
}

void ServerShared::remove(Connection* c) {
  std::lock_guard<std::mutex> lock(reg_mu_);
  connections_.erase(c);
}

std::vector<std::shared_ptr<Connection>> ServerShared::snapshot() {
  std::vector<std::shared_ptr<Connection>> out;
  std::lock_guard<std::mutex> lock(reg_mu_);
  out.reserve(connections_.size());
  for (auto& [ptr, weak] : connections_) {
    if (auto c = weak.lock()) out.push_back(std::move(c));
  }
  return out;
}

namespace {

// Pistache clones this handler once per reactor thread; each clone only sees its own peers, on
// its own thread, so `connections_` needs no lock.
class TcpHandler final : public Pistache::Tcp::Handler {
 public:
  PROTOTYPE_OF(Pistache::Tcp::Handler, TcpHandler)

  explicit TcpHandler(std::shared_ptr<ServerShared> shared) : shared_(std::move(shared)) {}
  TcpHandler(const TcpHandler& other) : Pistache::Tcp::Handler(), shared_(other.shared_) {}

  void onConnection(const std::shared_ptr<Pistache::Tcp::Peer>& peer) override {
    auto& metrics = shared_->metrics();
    metrics.connections_accepted.fetch_add(1, std::memory_order_relaxed);
    metrics.open_connections.fetch_add(1, std::memory_order_relaxed);
    auto conn = std::make_shared<Connection>(peer, shared_);
    connections_.emplace(peer.get(), conn);
    shared_->add(conn);
    if (!shared_->accepting()) {
      conn->closeNow();  // accepted in the instant before stopAccepting() closed the socket
    } else if (shared_->count() > shared_->limits().max_connections) {
      conn->closeNow();  // over the configured limit: refuse by closing at once
    }
  }

  void onInput(const char* buffer, size_t len, const std::shared_ptr<Pistache::Tcp::Peer>& peer) override {
    auto it = connections_.find(peer.get());
    if (it == connections_.end()) return;
    auto conn = it->second;  // keep alive across the call
    conn->onInput(buffer, len);
  }

  void onDisconnection(const std::shared_ptr<Pistache::Tcp::Peer>& peer) override {
    auto it = connections_.find(peer.get());
    if (it == connections_.end()) return;
    auto conn = std::move(it->second);
    connections_.erase(it);
    shared_->remove(conn.get());
    shared_->metrics().open_connections.fetch_sub(1, std::memory_order_relaxed);
    conn->onDisconnected();
  }

 private:
  std::shared_ptr<ServerShared> shared_;
  std::unordered_map<Pistache::Tcp::Peer*, std::shared_ptr<Connection>> connections_;
};

}  // namespace

HttpServer::HttpServer(ServerOptions options, std::shared_ptr<core::Gateway> gateway,
                       std::shared_ptr<core::Metrics> metrics)
    : options_(std::move(options)),
      shared_(std::make_shared<ServerShared>(std::move(gateway), std::move(metrics), options_.limits,
                                             options_.context)) {}

HttpServer::~HttpServer() { stop(); }

core::Status HttpServer::start() {
  try {
    Pistache::Address addr(options_.address.host, Pistache::Port(options_.address.port));
    listener_ = std::make_unique<Pistache::Tcp::Listener>(addr);
    listener_->init(options_.threads, Pistache::Flags<Pistache::Tcp::Options>(Pistache::Tcp::Options::ReuseAddr) |
                                          Pistache::Tcp::Options::NoDelay,
                    "kw-" + options_.name.substr(0, 10), options_.listen_backlog);
    auto handler = std::make_shared<TcpHandler>(shared_);
    listener_->setHandler(handler);
    // Always our transport: it reads connections with fewer system calls, and hosts the guests
    // when there are any.
    listener_->setTransportFactory(guestTransportFactory(handler, options_.guests));
    const std::vector<int> before = listeningSockets();
    listener_->bind();
    port_ = static_cast<uint16_t>(listener_->getPort());
    // Our listening socket is the one bind() just added on our port (listeners start one after
    // another on one thread, and nothing else in keywayd listens).
    std::vector<int> found;
    for (int fd : listeningSockets()) {
      if (std::find(before.begin(), before.end(), fd) == before.end() && localPort(fd).first == port_) {
        found.push_back(fd);
      }
    }
    if (found.size() == 1) listen_fd_ = found.front();
    listener_->runThreaded();
  } catch (const std::exception& e) {
    listener_.reset();
    return core::Error::make(core::ErrorCode::kUnavailable,
                             "cannot listen on " + options_.address.toString() + " (" + options_.name +
                                 "): " + e.what());
  }
  housekeeper_ = std::thread([this] {
    while (!stopping_.load(std::memory_order_relaxed)) {
      for (int i = 0; i < 10 && !stopping_.load(std::memory_order_relaxed); ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
      const auto now = Clock::now();
      const auto limits = shared_->limits();
      for (auto& c : shared_->snapshot()) c->checkTimeouts(now, limits);
    }
  });
  return core::okStatus();
}

std::string HttpServer::boundAddress() const {
  core::ListenAddress a = options_.address;
  a.port = port_;
  return a.toString();
}

void HttpServer::setLimits(const core::LimitsConfig& limits) { shared_->setLimits(limits); }

size_t HttpServer::openConnections() const { return shared_->count(); }

size_t HttpServer::busyConnections() const {
  size_t n = 0;
  for (auto& c : shared_->snapshot()) n += c->busy() ? 1 : 0;
  return n;
}

size_t HttpServer::activeConnections() const {
  size_t n = 0;
  for (auto& c : shared_->snapshot()) n += c->active() ? 1 : 0;
  return n;
}

core::Status HttpServer::stopAccepting() {
  shared_->stopAccepting();
  std::lock_guard<std::mutex> lock(accept_mu_);
  if (stopping_.load() || !listener_ || accept_stopped_) return core::okStatus();
  accept_stopped_ = true;
  if (listen_fd_ < 0) {
    return core::Error::make(core::ErrorCode::kInternal,
                             "cannot close the listening socket of " + options_.name + " (" + boundAddress() +
                                 "): it was not identified at start; new connections are closed as they arrive");
  }
  // Pistache 0.0.5 can only stop its accept loop together with the reactors that serve the open
  // connections. Instead, an unbound non-listening socket takes over the listening descriptor's
  // number (dup3): the listening socket is released at once, so the kernel refuses new
  // connections and resets the ones not yet accepted; epoll drops a released socket from
  // Pistache's accept loop by itself; and Pistache's eventual close() of that number closes the
  // placeholder, never a descriptor reused by someone else. An accept already under way fails
  // on the placeholder with EINVAL, which Pistache logs and ignores (SocketError).
  const int family = localPort(listen_fd_).second;
  const int placeholder = ::socket(family == AF_UNSPEC ? AF_INET : family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (placeholder < 0) {
    const int err = errno;
    return core::Error::make(core::ErrorCode::kInternal,
                             "cannot close the listening socket of " + options_.name + ": socket(): " +
                                 std::strerror(err) + "; new connections are closed as they arrive");
  }
  const int rc = ::dup3(placeholder, listen_fd_, O_CLOEXEC);
  const int err = errno;
  ::close(placeholder);
  if (rc < 0) {
    return core::Error::make(core::ErrorCode::kInternal,
                             "cannot close the listening socket of " + options_.name + ": dup3(): " +
                                 std::strerror(err) + "; new connections are closed as they arrive");
  }
  listen_fd_ = -1;
  return core::okStatus();
}

void HttpServer::stop() {
  std::lock_guard<std::mutex> accept_lock(accept_mu_);  // never concurrently with stopAccepting()
  if (stopping_.exchange(true)) return;
  if (housekeeper_.joinable()) housekeeper_.join();
  if (listener_) {
    for (auto& c : shared_->snapshot()) c->closeNow();
    try {
      listener_->shutdown();
    } catch (...) {
      // Pistache throws when its reactor already stopped; the server is going away either way
      // and its connections were closed above, so there is nothing left to report or to undo.
    }
  }
}

}  // namespace keyway::daemon
