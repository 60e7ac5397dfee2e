// Tests of Http1UpstreamClient: the cases every upstream client shares (upstream_client_cases.hpp),
// the native client's own (stale pooled connections, framing edge cases, long heads) and its
// response parser fed at every split point.
#include "daemon/http1_upstream_client.hpp"

#include <netdb.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/eventfd.h>

#include <future>

#include "tests/unit/daemon/upstream_client_cases.hpp"

DOCTEST_TYPE_TO_STRING_AS("Http1UpstreamClient", keyway::daemon::Http1UpstreamClient);
namespace keyway::daemon {
namespace {
class HostedHttp1Client;
}
}  // namespace keyway::daemon
DOCTEST_TYPE_TO_STRING_AS("Http1UpstreamClient(hosted)", keyway::daemon::HostedHttp1Client);

namespace keyway::daemon {

template <>
struct ClientTraits<Http1UpstreamClient> {
  using Options = Http1UpstreamClientOptions;
};

TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase01, Http1UpstreamClient);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase02, Http1UpstreamClient);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase03, Http1UpstreamClient);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase04, Http1UpstreamClient);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase05, Http1UpstreamClient);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase06, Http1UpstreamClient);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase07, Http1UpstreamClient);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase08, Http1UpstreamClient);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase09, Http1UpstreamClient);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase10, Http1UpstreamClient);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase11, Http1UpstreamClient);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase12, Http1UpstreamClient);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase13, Http1UpstreamClient);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase14, Http1UpstreamClient);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase15, Http1UpstreamClient);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase16, Http1UpstreamClient);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase17, Http1UpstreamClient);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase18, Http1UpstreamClient);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase19, Http1UpstreamClient);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase20, Http1UpstreamClient);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase21, Http1UpstreamClient);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase22, Http1UpstreamClient);

namespace {

// Http1UpstreamClient with options.hosted, its loops run by "reactor" threads as keywayd's
// listener runs them (daemon/guest_transport.cpp): each Host thread polls its guest's fd and a
// task queue. start() from the test thread runs as a task on a host thread, so the exchange is
// started inline there (the path keywayd's requests take); start() from an observer (inside the
// guest's loop) goes through the mailbox. The destructor stops the hosts first, then the client,
// in keywayd's order (listeners stop before the upstream client goes).
class HostedHttp1Client final : public core::UpstreamClient {
 public:
  explicit HostedHttp1Client(Http1UpstreamClientOptions options = {}) {
    options.hosted = true;
    inner_ = std::make_unique<Http1UpstreamClient>(options);
    for (auto& guest : inner_->guests()) hosts_.push_back(std::make_unique<Host>(guest));
    REQUIRE(hosts_.size() == std::max(1u, options.io_threads));
  }
  ~HostedHttp1Client() override {
    stopped_.store(true);
    for (auto& host : hosts_) host->stop();
    // inner_ goes with the members; not reset(): an observer completing during its destructor
    // may still call start() on this wrapper, which needs inner_.
  }

  std::shared_ptr<core::UpstreamCall> start(UpstreamRequest request,
                                            std::shared_ptr<core::UpstreamObserver> observer) override {
    if (Host::onHostThread() || stopped_.load()) return inner_->start(std::move(request), std::move(observer));
    Host& host = *hosts_[next_.fetch_add(1) % hosts_.size()];
    return host.call([&] { return inner_->start(std::move(request), std::move(observer)); });
  }
  Http1Stats stats() const { return inner_->stats(); }
  bool probeIoThreads(std::chrono::milliseconds deadline) { return inner_->probeIoThreads(deadline); }

 private:
  class Host {
   public:
    explicit Host(std::shared_ptr<ReactorGuest> guest)
        : guest_(std::move(guest)), epoll_fd_(::epoll_create1(EPOLL_CLOEXEC)), task_fd_(::eventfd(0, EFD_NONBLOCK)) {
      REQUIRE(epoll_fd_ >= 0);
      REQUIRE(task_fd_ >= 0);
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u64 = 1;
      REQUIRE(::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, guest_->pollFd(), &ev) == 0);
      ev.data.u64 = 2;
      REQUIRE(::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, task_fd_, &ev) == 0);
      thread_ = std::thread([this] { run(); });
    }
    ~Host() {
      stop();
      ::close(epoll_fd_);
      ::close(task_fd_);
    }
    static bool onHostThread() { return tl_on_host; }

    std::shared_ptr<core::UpstreamCall> call(const std::function<std::shared_ptr<core::UpstreamCall>()>& fn) {
      auto task = std::make_shared<std::packaged_task<std::shared_ptr<core::UpstreamCall>()>>(fn);
      auto result = task->get_future();
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (stopping_) return fn();
        tasks_.push_back([task] { (*task)(); });
      }
      const uint64_t one = 1;
      REQUIRE(::write(task_fd_, &one, sizeof one) == sizeof one);
      return result.get();
    }

    void stop() {
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (stopping_) return;
        stopping_ = true;
      }
      const uint64_t one = 1;
      REQUIRE(::write(task_fd_, &one, sizeof one) == sizeof one);
      thread_.join();
      runTasks();  // queued before the stop: run them here
    }

   private:
    void runTasks() {
      std::vector<std::function<void()>> tasks;
      {
        std::lock_guard<std::mutex> lock(mu_);
        tasks.swap(tasks_);
      }
      for (auto& task : tasks) task();
    }
    void run() {
      tl_on_host = true;
      epoll_event events[2];
      for (;;) {
        guest_->enter();
        const int n = ::epoll_wait(epoll_fd_, events, 2, -1);
        bool guest_ready = false;
        for (int i = 0; i < n; ++i) {
          if (events[i].data.u64 == 1) {
            guest_ready = true;
            continue;
          }
          uint64_t value = 0;
          if (::read(task_fd_, &value, sizeof value) < 0) REQUIRE(errno == EAGAIN);
          runTasks();
          std::lock_guard<std::mutex> lock(mu_);
          if (stopping_) return;
        }
        if (guest_ready) guest_->runReady();
      }
    }

    static thread_local bool tl_on_host;
    std::shared_ptr<ReactorGuest> guest_;
    int epoll_fd_;
    int task_fd_;
    std::mutex mu_;
    std::vector<std::function<void()>> tasks_;
    bool stopping_ = false;
    std::thread thread_;
  };

  std::unique_ptr<Http1UpstreamClient> inner_;
  std::vector<std::unique_ptr<Host>> hosts_;
  std::atomic<size_t> next_{0};
  std::atomic<bool> stopped_{false};
};

thread_local bool HostedHttp1Client::Host::tl_on_host = false;

}  // namespace

template <>
struct ClientTraits<HostedHttp1Client> {
  using Options = Http1UpstreamClientOptions;
};

TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase01, HostedHttp1Client);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase02, HostedHttp1Client);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase03, HostedHttp1Client);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase04, HostedHttp1Client);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase05, HostedHttp1Client);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase06, HostedHttp1Client);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase07, HostedHttp1Client);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase08, HostedHttp1Client);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase09, HostedHttp1Client);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase10, HostedHttp1Client);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase11, HostedHttp1Client);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase12, HostedHttp1Client);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase13, HostedHttp1Client);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase14, HostedHttp1Client);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase15, HostedHttp1Client);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase16, HostedHttp1Client);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase17, HostedHttp1Client);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase18, HostedHttp1Client);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase19, HostedHttp1Client);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase20, HostedHttp1Client);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase21, HostedHttp1Client);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase22, HostedHttp1Client);

namespace {

// Parser events, for comparing one-shot with byte-by-byte feeding.
struct ParseLog : Http1ResponseParser::Sink {
  int heads = 0;
  int status = 0;
  std::string reason;
  Headers headers;
  std::string body;
  bool pause_every_piece = false;
  bool onHead(int s, std::string_view r, Headers h) override {
    ++heads;
    status = s;
    reason = std::string(r);
    headers = std::move(h);
    return true;
  }
  BodyAction onBody(std::string_view chunk) override {
    body.append(chunk);
    return pause_every_piece ? BodyAction::kPause : BodyAction::kContinue;
  }
};

// Feeds `wire` in pieces of `step` bytes (re-feeding what a pause left), then EOF if `eof`.
Http1ResponseParser::State parseInPieces(const std::string& wire, size_t step, ParseLog& log,
                                         bool head_request = false, bool eof = false,
                                         size_t* used_total = nullptr) {
  Http1ResponseParser parser;
  parser.reset(head_request);
  size_t pos = 0;
  while (pos < wire.size()) {
    const size_t n = std::min(step, wire.size() - pos);
    const size_t used = parser.feed(wire.data() + pos, n, log);
    pos += used;
    if (parser.state() != Http1ResponseParser::State::kHead &&
        parser.state() != Http1ResponseParser::State::kBody) {
      break;
    }
    REQUIRE((used > 0 || log.pause_every_piece));
    if (used == 0 && log.pause_every_piece) {
      FAIL("a paused parser took nothing");
    }
  }
  if (used_total) *used_total = pos;
  if (eof) return parser.finishOnEof();
  return parser.state();
}

}  // namespace

TEST_CASE("Http1ResponseParser gives the same result at every split point") {
  using State = Http1ResponseParser::State;
  struct Case {
    std::string wire;
    bool head_request;
    bool eof;
    State state;
    int status;
    std::string body;
    size_t header_count;
  };
  const std::vector<Case> cases = {
      {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhello", false, false, State::kDone, 200, "hello", 1},
      {"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early\r\nLink: x\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
       false, false, State::kDone, 201, "ok", 0},
      {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6 ; q\r\n world\r\n0;last\r\nT: x\r\n\r\n",
       false, false, State::kDone, 200, "hello world", 0},
      {"HTTP/1.1 200 OK\nContent-Length: 3\n\nabc", false, false, State::kDone, 200, "abc", 0},
      {"HTTP/1.0 200 OK\r\n\r\nuntil close", false, true, State::kDone, 200, "until close", 0},
      {"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n", false, false, State::kDone, 204, "", 0},
      {"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", true, false, State::kDone, 200, "", 0},
      {"HTTP/1.1 200 OK\r\nX-Fold: a\r\n  b\r\nContent-Length: 0\r\n\r\n", false, false, State::kDone, 200, "", 1},
      {"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3, 3\r\n\r\nabc", false, false, State::kDone, 200, "abc", 0},
      {"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", false, false, State::kError, 0, "", 0},
      {"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", false, false, State::kError, 0, "", 0},
      {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", false, false, State::kError, 200, "", 0},
      {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n", false, false, State::kError, 200, "abc", 0},
      {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n", false, false, State::kError, 200, "", 0},
      {"HTTP/1.1 200 OK\r\nX-Bad: a\x0b" "b\r\n\r\n", false, false, State::kError, 0, "", 0},
      {"HTTP/1.1 200 OK\r\nBad Name: v\r\n\r\n", false, false, State::kError, 0, "", 0},
      {"HTTP/1.1 200 OK\r\nNo colon here\r\nContent-Length: 2\r\n\r\nok", false, false, State::kError, 0, "", 0},
      {"HTTP/1.1 200 OK\r\n: empty name\r\n\r\n", false, false, State::kError, 0, "", 0},
      {"HTTP/1.1 abc\r\n\r\n", false, false, State::kError, 0, "", 0},
      {"SSH-2.0-OpenSSH_9.2p1\r\n\r\n", false, false, State::kError, 0, "", 0},
      {"HTTP/1.1 101 Switching Protocols\r\n\r\n", false, false, State::kError, 0, "", 0},
      {"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", false, true, State::kError, 200, "short", 0},
      {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", false, true, State::kError, 200, "hel", 0},
      {"HTTP/1.1 200 OK\r\nX-A: 1\r\n", false, true, State::kError, 0, "", 0},
  };
  for (const auto& c : cases) {
    CAPTURE(c.wire);
    for (size_t step : {c.wire.size(), size_t{1}, size_t{2}, size_t{3}, size_t{7}}) {
      if (step == 0) continue;
      CAPTURE(step);
      ParseLog log;
      const State state = parseInPieces(c.wire, step, log, c.head_request, c.eof);
      CHECK(state == c.state);
      CHECK(log.body == c.body);
      if (c.status != 0) {
        CHECK(log.status == c.status);
        CHECK(log.headers.size() == c.header_count);
      }
      CHECK(log.heads <= 1);
    }
  }
  SUBCASE("a pause after each body piece loses nothing") {
    const std::string wire = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n";
    ParseLog log;
    log.pause_every_piece = true;
    CHECK(parseInPieces(wire, wire.size(), log) == State::kDone);
    CHECK(log.body == "abcdefg");
  }
  SUBCASE("bytes after a complete response are left unconsumed") {
    const std::string wire = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA";
    ParseLog log;
    size_t used = 0;
    CHECK(parseInPieces(wire, wire.size(), log, false, false, &used) == State::kDone);
    CHECK(used == wire.size() - 5);
  }
  SUBCASE("the head limit counts interim responses too") {
    Http1ResponseParser parser(64);
    parser.reset(false);
    ParseLog log;
    const std::string wire = "HTTP/1.1 100 Continue\r\nX: " + std::string(40, 'a') +
                             "\r\n\r\nHTTP/1.1 200 OK\r\nY: " + std::string(30, 'b') + "\r\n\r\n";
    parser.feed(wire.data(), wire.size(), log);
    CHECK(parser.state() == State::kError);
    CHECK(parser.error().find("64 bytes") != std::string::npos);
    CHECK(log.heads == 0);
  }
}

TEST_CASE("Http1UpstreamClient retries a stale pooled connection once, on a new connection") {
  Http1UpstreamClient client;
  // The first request on each connection is answered; a second one on it is closed unanswered,
  // as by an upstream that timed the idle connection out just as the request went out.
  std::mutex mutex;
  std::set<int> answered_connections;
  auto handler = [&](const ReceivedRequest& r) {
    std::lock_guard<std::mutex> lock(mutex);
    if (answered_connections.insert(r.connection).second) {
      return Script{testing::send(testing::response(200, "OK", {}, "fresh" + std::to_string(r.connection)))};
    }
    return Script{testing::closeConnection()};
  };
  RawHttpServer server(handler);
  auto first = exchange(client, makeRequest("GET", server.url("/one")));
  CHECK(first->outcome().failure == UpstreamFailure::kNone);
  CHECK(first->body() == "fresh0");
  auto second = exchange(client, makeRequest("POST", server.url("/two"), {}, "{}"));
  CHECK(second->outcome().failure == UpstreamFailure::kNone);
  CHECK(second->body() == "fresh1");
  CHECK_FALSE(second->outcome().connection_reused);
  CHECK(server.connectionsAccepted() == 2);
  const auto requests = server.requests();
  REQUIRE(requests.size() == 3);
  CHECK(requests[1].connection == 0);
  CHECK(requests[2].connection == 1);
  CHECK(requests[2].body == "{}");
  CHECK(client.stats().connections_opened == 2);
}

TEST_CASE("Http1UpstreamClient retries a reset pooled connection, but only once") {
  std::atomic<int> seen{0};
  RawHttpServer server([&](const ReceivedRequest&) {
    if (seen.fetch_add(1) == 0) return Script{testing::send(testing::response(200, "OK", {}, "first"))};
    return Script{testing::resetConnection()};
  });
  Http1UpstreamClient client;
  CHECK(exchange(client, makeRequest("GET", server.url("/a")))->body() == "first");
  auto second = exchange(client, makeRequest("GET", server.url("/b")));
  // Reset on the pooled connection, retried on a fresh one, reset again: no third attempt.
  CHECK(second->outcome().failure == UpstreamFailure::kSendFailed);
  CHECK_FALSE(second->outcome().headers_received);
  CHECK(server.requestCount() == 3);
  CHECK(server.connectionsAccepted() == 2);
}

TEST_CASE("Http1UpstreamClient does not retry once a response byte arrived") {
  std::atomic<int> seen{0};
  RawHttpServer server([&](const ReceivedRequest&) {
    if (seen.fetch_add(1) == 0) return Script{testing::send(testing::response(200, "OK", {}, "first"))};
    return Script{testing::send("HTTP/1.1 200 OK\r\nX-Half"), testing::closeConnection()};
  });
  Http1UpstreamClient client;
  CHECK(exchange(client, makeRequest("GET", server.url("/a")))->body() == "first");
  auto second = exchange(client, makeRequest("GET", server.url("/b")));
  CHECK(second->outcome().failure == UpstreamFailure::kProtocol);
  CHECK(second->outcome().connection_reused);
  CHECK(server.requestCount() == 2);
  CHECK(server.connectionsAccepted() == 1);
}

TEST_CASE("Http1UpstreamClient closes a connection that carried bytes past the response") {
  RawHttpServer server([](const ReceivedRequest& r) {
    return Script{testing::send(testing::response(200, "OK", {}, r.target) +
                                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray")};
  });
  Http1UpstreamClient client;
  auto first = exchange(client, makeRequest("GET", server.url("/1")));
  CHECK(first->outcome().failure == UpstreamFailure::kNone);
  CHECK(first->body() == "/1");
  auto second = exchange(client, makeRequest("GET", server.url("/2")));
  CHECK(second->body() == "/2");  // not the stray response
  CHECK_FALSE(second->outcome().connection_reused);
  CHECK(server.connectionsAccepted() == 2);
}

TEST_CASE("Http1UpstreamClient pools connections only when the response allows it") {
  Http1UpstreamClient client;
  struct Case {
    std::string response;
    bool pooled;
  };
  const std::vector<Case> cases = {
      {"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", false},
      {"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 2\r\n\r\nok", false},
      {"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", false},
      {"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", true},
      {"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", true},
      {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", true},
      {"HTTP/1.1 204 No Content\r\n\r\n", true},
      {"HTTP/1.1 304 Not Modified\r\nETag: \"e\"\r\n\r\n", true},
  };
  for (const auto& c : cases) {
    CAPTURE(c.response);
    // Responses keep the connection open whatever they say: only the client decides to close.
    RawHttpServer server([&c](const ReceivedRequest&) { return Script{testing::send(c.response)}; });
    auto first = exchange(client, makeRequest("GET", server.url("/p")));
    CHECK(first->outcome().failure == UpstreamFailure::kNone);
    CHECK((first->status() == 200 ? first->body() == "ok" : first->body().empty()));
    auto second = exchange(client, makeRequest("GET", server.url("/p")));
    CHECK(second->outcome().failure == UpstreamFailure::kNone);
    CHECK(second->outcome().connection_reused == c.pooled);
    CHECK(server.connectionsAccepted() == (c.pooled ? 1u : 2u));
  }
  SUBCASE("an HTTP/1.0 body delimited by the close") {
    RawHttpServer server([](const ReceivedRequest&) {
      return Script{testing::send("HTTP/1.0 200 Fine\r\nX-A: 1\r\n\r\nuntil the end"), testing::closeConnection()};
    });
    auto r = exchange(client, makeRequest("GET", server.url("/old")));
    CHECK(r->outcome().failure == UpstreamFailure::kNone);
    CHECK(r->reason() == "Fine");
    CHECK(r->body() == "until the end");
    CHECK(sameHeaders(r->headers(), {{"X-A", "1"}}));
  }
}

TEST_CASE("Http1UpstreamClient framing errors and chunk extensions") {
  Http1UpstreamClient client;
  auto run = [&](std::string wire, bool close_after) {
    RawHttpServer server([wire, close_after](const ReceivedRequest&) {
      Script s{testing::send(wire)};
      if (close_after) s.push_back(testing::closeConnection());
      return s;
    });
    return exchange(client, makeRequest("GET", server.url("/f")));
  };
  auto ext = run("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;name=\"v;x\"\r\nhello\r\n0;end\r\nT: 1\r\n\r\n", false);
  CHECK(ext->outcome().failure == UpstreamFailure::kNone);
  CHECK(ext->body() == "hello");
  auto bad_size = run("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n", false);
  CHECK(bad_size->outcome().failure == UpstreamFailure::kProtocol);
  CHECK(bad_size->outcome().message.find("chunk") != std::string::npos);
  auto cut_chunked = run("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nabc", true);
  CHECK(cut_chunked->outcome().failure == UpstreamFailure::kSendFailed);
  CHECK(cut_chunked->outcome().headers_received);
  auto two_lengths = run("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde", false);
  CHECK(two_lengths->outcome().failure == UpstreamFailure::kProtocol);
  CHECK(two_lengths->headerCalls() == 0);
  auto control = run("HTTP/1.1 200 OK\r\nX-Evil: a\rInjected: 1\r\nContent-Length: 2\r\n\r\nok", false);
  CHECK(control->outcome().failure == UpstreamFailure::kProtocol);
  CHECK(control->headerCalls() == 0);
  auto head_cut = run("HTTP/1.1 200 OK\r\nX-A: 1\r\n", true);
  CHECK(head_cut->outcome().failure == UpstreamFailure::kProtocol);
  auto nothing = run("", true);
  CHECK(nothing->outcome().failure == UpstreamFailure::kSendFailed);
}

TEST_CASE("Http1UpstreamClient handles very long heads, also split over many reads") {
  Http1UpstreamClient client;
  const std::string big(200000, 'v');
  SUBCASE("under the limit, in pieces") {
    const std::string wire = "HTTP/1.1 200 OK\r\nX-Big: " + big + "\r\nX-After: 1\r\nContent-Length: 2\r\n\r\nok";
    RawHttpServer server([wire](const ReceivedRequest&) {
      Script s;
      for (size_t i = 0; i < wire.size(); i += 65000) {
        s.push_back(testing::send(wire.substr(i, 65000)));
        s.push_back(testing::delay(5ms));
      }
      return s;
    });
    auto r = exchange(client, makeRequest("GET", server.url("/long")));
    CHECK(r->outcome().failure == UpstreamFailure::kNone);
    CHECK(core::headerValue(r->headers(), "X-Big") == std::optional<std::string_view>(big));
    CHECK(core::headerValue(r->headers(), "X-After") == std::optional<std::string_view>("1"));
    CHECK(r->body() == "ok");
  }
  SUBCASE("over max_header_bytes") {
    Http1UpstreamClientOptions options;
    options.max_header_bytes = 100000;
    Http1UpstreamClient small(options);
    RawHttpServer server([&big](const ReceivedRequest&) {
      return Script{testing::send("HTTP/1.1 200 OK\r\nX-Big: " + big + "\r\nContent-Length: 0\r\n\r\n")};
    });
    auto r = exchange(small, makeRequest("GET", server.url("/too-long")));
    CHECK(r->outcome().failure == UpstreamFailure::kProtocol);
    CHECK(r->outcome().message.find("100000") != std::string::npos);
    CHECK(r->headerCalls() == 0);
  }
}

namespace {
// True if getaddrinfo() knows `name` on this machine (a bare debootstrap root has no /etc/hosts,
// so not even "localhost" resolves there).
bool resolvable(const char* name) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const bool ok = ::getaddrinfo(name, "80", &hints, &found) == 0;
  if (found != nullptr) ::freeaddrinfo(found);
  return ok;
}

void checkResolvedExchange(const std::string& host) {
  RawHttpServer server(echoOk());
  Http1UpstreamClient client;
  const std::string url = "http://" + host + ":" + std::to_string(server.port()) + "/named";
  auto r = exchange(client, makeRequest("GET", url));
  CHECK(r->outcome().failure == UpstreamFailure::kNone);
  CHECK(r->body() == "ok");
  const auto requests = server.requests();
  REQUIRE(requests.size() == 1);
  CHECK(core::headerValue(requests[0].headers, "Host") ==
        std::optional<std::string_view>(host + ":" + std::to_string(server.port())));
  // Cached: the second exchange reuses the connection (and would reuse the answer).
  auto again = exchange(client, makeRequest("GET", url));
  CHECK(again->outcome().connection_reused);
}
}  // namespace

TEST_CASE("Http1UpstreamClient resolves host names off the I/O thread") {
  SUBCASE("a name getaddrinfo settles without /etc/hosts or DNS") {
    // "127.1" is not a dotted quad, so the client's inet_pton() refuses it and it takes the
    // resolver thread like any host name; getaddrinfo() reads it as 127.0.0.1 on any machine.
    checkResolvedExchange("127.1");
  }
  SUBCASE("localhost, where the machine resolves it") {
    // localhost may resolve to ::1 first, where the fake does not listen: the next address is
    // tried. A bare root without /etc/hosts cannot resolve it: said, not failed.
    if (!resolvable("localhost")) {
      MESSAGE("localhost does not resolve on this machine (no /etc/hosts?): case not run");
      return;
    }
    checkResolvedExchange("localhost");
  }
}

TEST_CASE("Http1UpstreamClient sends each URL to its own authority, with the target as written") {
  // A worker keeps the authorities it has parsed: alternating upstreams, spellings of the same
  // one, and a bad URL in between must still each go where their URL says, with their Host.
  auto echo = [](const ReceivedRequest& r) {
    return Script{testing::send(testing::response(200, "OK", {}, r.target))};
  };
  RawHttpServer a(echo);
  RawHttpServer b(echo);
  Http1UpstreamClient client;
  const std::string a_host = "127.0.0.1:" + std::to_string(a.port());
  const std::string b_host = "127.0.0.1:" + std::to_string(b.port());
  struct Case {
    std::string url;
    RawHttpServer* server;
    std::string host;
    std::string target;
  };
  const std::vector<Case> cases = {
      {"http://" + a_host + "/one?x=1", &a, a_host, "/one?x=1"},
      {"http://" + b_host + "/two", &b, b_host, "/two"},
      {"http://" + a_host + "?q=3", &a, a_host, "/?q=3"},
      {"http://" + b_host, &b, b_host, "/"},
      {"HTTP://" + a_host + "/five", &a, a_host, "/five"},
      {"http://127.0.0.1:1/x", nullptr, "", ""},            // refused: fails on its own
      {"http://[::1/x", nullptr, "", ""},                   // fails to parse, is not kept
      {"http://" + b_host + "/six", &b, b_host, "/six"},
  };
  size_t expected_a = 0;
  size_t expected_b = 0;
  for (const auto& c : cases) {
    CAPTURE(c.url);
    auto r = exchange(client, makeRequest("GET", c.url));
    if (c.server == nullptr) {
      CHECK(r->outcome().failure != UpstreamFailure::kNone);
      continue;
    }
    REQUIRE(r->outcome().failure == UpstreamFailure::kNone);
    CHECK(r->body() == c.target);
    (c.server == &a ? expected_a : expected_b) += 1;
    REQUIRE(c.server->requestCount() == (c.server == &a ? expected_a : expected_b));
    const ReceivedRequest got = c.server->requests().back();
    CHECK(got.target == c.target);
    const core::Header* host = core::findHeader(got.headers, "Host");
    REQUIRE(host != nullptr);
    CHECK(host->value == c.host);
  }
  CHECK(a.requestCount() == 3);
  CHECK(b.requestCount() == 3);
}

TEST_CASE("Http1UpstreamClient takes only http:// URLs") {
  CHECK(Http1UpstreamClient::handles("http://127.0.0.1/x"));
  CHECK(Http1UpstreamClient::handles("HTTP://example.test"));
  CHECK_FALSE(Http1UpstreamClient::handles("https://example.test"));
  CHECK_FALSE(Http1UpstreamClient::handles("ftp://example.test"));
  Http1UpstreamClient client;
  for (const std::string url : {"https://127.0.0.1/x", "http://user:secret-value@127.0.0.1/x", "http://:80/x",
                                "http://127.0.0.1:99999/x", "http://[::1/x", "http://bad_host!/x"}) {
    CAPTURE(url);
    auto r = exchange(client, makeRequest("GET", url));
    CHECK(r->outcome().failure == UpstreamFailure::kProtocol);
    CHECK(r->outcome().message.find("URL") != std::string::npos);
    CHECK(r->outcome().message.find("secret-value") == std::string::npos);
  }
}

}  // namespace keyway::daemon
