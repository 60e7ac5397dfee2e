// The behaviour every core::UpstreamClient implementation in daemon/ shares (the contract of
// daemon/curl_upstream_client.hpp), as doctest template cases run against raw-socket fake
// upstreams on 127.0.0.1 (port 0). A test file includes this, specialises ClientTraits for its
// client and invokes each kwUpstreamCaseNN id (KEYWAY_INVOKE_UPSTREAM_CASES does all of them).
#pragma once

#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>
#include <tuple>

#include "core/upstream_client.hpp"
#include "tests/unit/daemon/raw_http_server.hpp"

namespace keyway::daemon {

// Specialise with `using Options = ...;` (the client's options struct, with io_threads).
template <class Client>
struct ClientTraits;

namespace {

using namespace std::chrono_literals;
using core::Header;
using core::Headers;
using core::UpstreamFailure;
using core::UpstreamOutcome;
using core::UpstreamRequest;
using testing::RawHttpServer;
using testing::ReceivedRequest;
using testing::Script;

// Records every event; the test thread waits on it.
class Recorder : public core::UpstreamObserver {
 public:
  void onHeaders(int status, std::string_view reason, Headers headers) override {
    std::lock_guard<std::mutex> lock(mutex_);
    status_ = status;
    reason_ = std::string(reason);
    headers_ = std::move(headers);
    ++header_calls_;
    io_thread_ = std::this_thread::get_id();
    changed_.notify_all();
  }
  bool onBody(std::string_view chunk) override {
    bool more = true;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      body_.append(chunk);
      chunks_.emplace_back(chunk);
      if (complete_calls_ > 0 || header_calls_ == 0) out_of_order_ = true;
      if (body_hook_) more = body_hook_(chunk);
      if (!more) ++pauses_;
    }
    changed_.notify_all();
    return more;
  }
  void onComplete(const UpstreamOutcome& outcome) override {
    std::function<void()> hook;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      outcome_ = outcome;
      ++complete_calls_;
      hook = complete_hook_;
    }
    if (hook) hook();
    changed_.notify_all();
  }

  bool waitComplete(std::chrono::milliseconds timeout = 10s) {
    std::unique_lock<std::mutex> lock(mutex_);
    return changed_.wait_for(lock, timeout, [this] { return complete_calls_ > 0; });
  }
  template <class Pred>
  bool waitUntil(Pred pred, std::chrono::milliseconds timeout = 10s) {
    std::unique_lock<std::mutex> lock(mutex_);
    return changed_.wait_for(lock, timeout, [&] { return pred(*this); });
  }

  // Accessors (copy under the lock).
  template <class F>
  auto locked(F f) {
    std::lock_guard<std::mutex> lock(mutex_);
    return f();
  }
  int status() { return locked([&] { return status_; }); }
  std::string reason() { return locked([&] { return reason_; }); }
  Headers headers() { return locked([&] { return headers_; }); }
  std::string body() { return locked([&] { return body_; }); }
  size_t bodySize() { return locked([&] { return body_.size(); }); }
  std::vector<std::string> chunks() { return locked([&] { return chunks_; }); }
  int headerCalls() { return locked([&] { return header_calls_; }); }
  int completeCalls() { return locked([&] { return complete_calls_; }); }
  int pauses() { return locked([&] { return pauses_; }); }
  bool outOfOrder() { return locked([&] { return out_of_order_; }); }
  UpstreamOutcome outcome() { return locked([&] { return outcome_; }); }
  std::thread::id ioThread() { return locked([&] { return io_thread_; }); }
  void setBodyHook(std::function<bool(std::string_view)> hook) { body_hook_ = std::move(hook); }
  void setCompleteHook(std::function<void()> hook) { complete_hook_ = std::move(hook); }

  // Unlocked views for waitUntil predicates (called with the lock held).
  int pausesLocked() const { return pauses_; }
  int completeCallsLocked() const { return complete_calls_; }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  int status_ = -1;
  std::string reason_;
  Headers headers_;
  std::string body_;
  std::vector<std::string> chunks_;
  int header_calls_ = 0;
  int complete_calls_ = 0;
  int pauses_ = 0;
  bool out_of_order_ = false;
  UpstreamOutcome outcome_;
  std::thread::id io_thread_;
  std::function<bool(std::string_view)> body_hook_;
  std::function<void()> complete_hook_;
};

UpstreamRequest makeRequest(std::string method, std::string url, Headers headers = {},
                            std::string body = {}) {
  UpstreamRequest request;
  request.method = std::move(method);
  request.url = std::move(url);
  request.headers = std::move(headers);
  request.body = std::move(body);
  request.connect_timeout = 5s;
  request.total_timeout = 10s;
  return request;
}

RawHttpServer::Handler answer(int status, std::string reason, Headers headers, std::string body) {
  return [=](const ReceivedRequest&) {
    return Script{testing::send(testing::response(status, reason, headers, body))};
  };
}

RawHttpServer::Handler echoOk() { return answer(200, "OK", {}, "ok"); }

// Runs one exchange to completion and returns the recorder.
template <class Client>
std::shared_ptr<Recorder> exchange(Client& client, UpstreamRequest request) {
  auto recorder = std::make_shared<Recorder>();
  client.start(std::move(request), recorder);
  REQUIRE(recorder->waitComplete());
  return recorder;
}

Headers withoutHost(const Headers& headers) {
  Headers out;
  for (const auto& header : headers) {
    if (!core::iequals(header.name, "Host")) out.push_back(header);
  }
  return out;
}

bool sameHeaders(const Headers& a, const Headers& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].name != b[i].name || a[i].value != b[i].value) return false;
  }
  return true;
}

std::string patternBytes(size_t n) {
  std::string out(n, '\0');
  uint32_t x = 2463534242u;
  for (size_t i = 0; i < n; ++i) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    out[i] = static_cast<char>(x & 0xff);
  }
  return out;
}

// A port on 127.0.0.1 that refuses connections: bound, never listening, kept for the test.
class RefusingPort {
 public:
  RefusingPort() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    socklen_t len = sizeof addr;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
  }
  ~RefusingPort() { ::close(fd_); }
  uint16_t port() const { return port_; }

 private:
  int fd_ = -1;
  uint16_t port_ = 0;
};

}  // namespace

TEST_CASE_TEMPLATE_DEFINE("upstream client forwards the target byte for byte", Client, kwUpstreamCase01) {
  RawHttpServer server(echoOk());
  Client client;
  const std::vector<std::string> targets = {
      "/v1/files/a%2Fb%2Fc/content",
      "/search?a=2&b=1&a=1",
      "/collection/",
      "/collection/?q=%2F%3F%26&empty=&flag",
      "/lower%2fhex/%7e/~user;param=1",
      "/p?",
      "/p?q=a+b&bad=%zz&quote=\"x\"",
      "/raw/caf\xc3\xa9?name=\xc3\xa9t\xc3\xa9",  // raw UTF-8, not re-encoded
      "/a/../b/./c//d",  // refused by the gateway, but never normalised here
      "/p?a=1#fragment",  // likewise: not valid in a request, still not silently cut
      "/",
  };
  for (const auto& target : targets) {
    CAPTURE(target);
    auto recorder = exchange(client, makeRequest("GET", server.url(target)));
    CHECK(recorder->outcome().failure == UpstreamFailure::kNone);
  }
  const auto received = server.requests();
  REQUIRE(received.size() == targets.size());
  for (size_t i = 0; i < targets.size(); ++i) {
    CHECK(received[i].method == "GET");
    CHECK(received[i].target == targets[i]);
    CHECK(received[i].version == "HTTP/1.1");
  }
  SUBCASE("a URL without a path asks for /") {
    auto recorder = exchange(client, makeRequest("GET", "http://127.0.0.1:" + std::to_string(server.port())));
    CHECK(recorder->outcome().failure == UpstreamFailure::kNone);
    CHECK(server.requests().back().target == "/");
    exchange(client, makeRequest("GET", "http://127.0.0.1:" + std::to_string(server.port()) + "?x=1"));
    CHECK(server.requests().back().target == "/?x=1");
  }
}


TEST_CASE_TEMPLATE_DEFINE("upstream client sends exactly the given headers, in order, and nothing of its own", Client, kwUpstreamCase02) {
  RawHttpServer server(echoOk());
  Client client;
  const Headers given = {
      {"X-First", "1"},
      {"x-lower-case", "Two Words"},
      {"X-Empty", ""},
      {"Accept-Encoding", "gzip"},
      {"X-Dup", "a"},
      {"X-Dup", "b"},
      {"Authorization", "Bearer upstream-key"},
  };
  auto recorder = exchange(client, makeRequest("GET", server.url("/h"), given));
  CHECK(recorder->outcome().failure == UpstreamFailure::kNone);
  const auto received = server.requests();
  REQUIRE(received.size() == 1);
  const ReceivedRequest& request = received[0];
  CAPTURE(request.head);
  // Host is the only header libcurl adds (HTTP/1.1 requires it), and it comes first.
  REQUIRE(!request.headers.empty());
  CHECK(request.headers[0].name == "Host");
  CHECK(request.headers[0].value == "127.0.0.1:" + std::to_string(server.port()));
  CHECK(sameHeaders(withoutHost(request.headers), given));
  CHECK(request.head.find("\r\nX-Empty:\r\n") != std::string::npos);
  CHECK(core::findHeader(request.headers, "User-Agent") == nullptr);
  CHECK(core::findHeader(request.headers, "Accept") == nullptr);
  CHECK(core::findHeader(request.headers, "Content-Length") == nullptr);

  SUBCASE("a given Host and Accept replace libcurl's") {
    auto second = exchange(client, makeRequest("GET", server.url("/h2"),
                                               {{"Accept", "application/json"},
                                                {"Host", "api.example.test"}}));
    CHECK(second->outcome().failure == UpstreamFailure::kNone);
    const auto all = server.requests();
    REQUIRE(all.size() == 2);
    const Headers& h = all[1].headers;
    CHECK(h.size() == 2);
    CHECK(core::headerValue(h, "Host") == std::optional<std::string_view>("api.example.test"));
    CHECK(core::headerValue(h, "Accept") == std::optional<std::string_view>("application/json"));
  }
}


TEST_CASE_TEMPLATE_DEFINE("upstream client sends bodies for every method that has one", Client, kwUpstreamCase03) {
  RawHttpServer server(echoOk());
  Client client;
  for (const char* method_name : {"POST", "PUT", "PATCH", "DELETE", "PROPFIND"}) {
    const std::string method = method_name;
    CAPTURE(method);
    std::string body = "{\"m\":\"" + method + "\"}";
    body.push_back('\0');
    body += "binary\r\n\r\ntail";
    auto recorder = exchange(client, makeRequest(method, server.url("/b"),
                                                 {{"Content-Type", "application/json"}}, body));
    CHECK(recorder->outcome().failure == UpstreamFailure::kNone);
    const auto received = server.requests();
    REQUIRE(!received.empty());
    const ReceivedRequest& request = received.back();
    CHECK(request.method == method);
    CHECK(request.body == body);
    CHECK(core::headerValue(request.headers, "Content-Length") ==
          std::optional<std::string_view>(std::to_string(body.size())));
    CHECK(core::headerValue(request.headers, "Content-Type") ==
          std::optional<std::string_view>("application/json"));
    CHECK(core::findHeader(request.headers, "Expect") == nullptr);
  }

  SUBCASE("a large POST without Content-Type gets neither Expect nor a form Content-Type") {
    const std::string big = patternBytes(3u << 20);
    auto recorder = exchange(client, makeRequest("POST", server.url("/big"), {}, big));
    CHECK(recorder->outcome().failure == UpstreamFailure::kNone);
    const ReceivedRequest request = server.requests().back();
    CHECK(request.body == big);
    CHECK(core::findHeader(request.headers, "Expect") == nullptr);
    CHECK(core::findHeader(request.headers, "Content-Type") == nullptr);
  }
  SUBCASE("an empty POST says Content-Length: 0; bodiless methods send no length") {
    exchange(client, makeRequest("POST", server.url("/e")));
    exchange(client, makeRequest("DELETE", server.url("/e")));
    exchange(client, makeRequest("OPTIONS", server.url("/e")));
    exchange(client, makeRequest("PURGE", server.url("/e")));
    // A stale Content-Length from the caller is replaced by the real one.
    exchange(client, makeRequest("GET", server.url("/e"), {{"Content-Length", "99"}}));
    const auto all = server.requests();
    REQUIRE(all.size() >= 5);
    const auto& post = all[all.size() - 5];
    CHECK(post.method == "POST");
    CHECK(core::headerValue(post.headers, "Content-Length") == std::optional<std::string_view>("0"));
    CHECK(all[all.size() - 4].method == "DELETE");
    CHECK(core::findHeader(all[all.size() - 4].headers, "Content-Length") == nullptr);
    CHECK(all[all.size() - 3].method == "OPTIONS");
    CHECK(core::findHeader(all[all.size() - 3].headers, "Content-Length") == nullptr);
    CHECK(all[all.size() - 2].method == "PURGE");
    CHECK(all.back().method == "GET");
    CHECK(core::headerValue(all.back().headers, "Content-Length") == std::optional<std::string_view>("0"));
  }
}


TEST_CASE_TEMPLATE_DEFINE("upstream client HEAD reads no body", Client, kwUpstreamCase04) {
  RawHttpServer server([](const ReceivedRequest&) {
    return Script{testing::send("HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nETag: \"x\"\r\n\r\n")};
  });
  Client client;
  auto recorder = exchange(client, makeRequest("HEAD", server.url("/head")));
  CHECK(recorder->outcome().failure == UpstreamFailure::kNone);
  CHECK(recorder->status() == 200);
  CHECK(recorder->body().empty());
  CHECK(server.requests().at(0).method == "HEAD");
  CHECK(sameHeaders(recorder->headers(), {{"ETag", "\"x\""}}));
}


TEST_CASE_TEMPLATE_DEFINE("upstream client reuses one connection for sequential requests", Client, kwUpstreamCase05) {
  RawHttpServer server(answer(200, "OK", {{"X-N", "1"}}, "hello"));
  Client client;
  std::vector<UpstreamOutcome> outcomes;
  for (int i = 0; i < 3; ++i) {
    auto recorder = exchange(client, makeRequest("GET", server.url("/k" + std::to_string(i))));
    CHECK(recorder->body() == "hello");
    outcomes.push_back(recorder->outcome());
  }
  CHECK(server.connectionsAccepted() == 1);
  for (const auto& request : server.requests()) CHECK(request.connection == 0);
  CHECK_FALSE(outcomes[0].connection_reused);
  CHECK(outcomes[1].connection_reused);
  CHECK(outcomes[2].connection_reused);
  const auto stats = client.stats();
  CHECK(stats.requests == 3);
  CHECK(stats.connections_opened == 1);
  CHECK(stats.connections_reused == 2);
  CHECK(stats.in_flight == 0);
}


TEST_CASE_TEMPLATE_DEFINE("upstream client returns status, reason phrase and headers as received", Client, kwUpstreamCase06) {
  Client client;
  SUBCASE("custom reason, repeated Set-Cookie, spelling and order kept, Content-Length dropped") {
    RawHttpServer server([](const ReceivedRequest&) {
      return Script{testing::send(
          "HTTP/1.1 418 I'm  a Teapot (really)\r\n"
          "Set-Cookie: a=1; Path=/\r\n"
          "x-custom-LOWER:   spaced value  \r\n"
          "set-cookie: b=2\r\n"
          "Retry-After: 7\r\n"
          "Content-Length: 5\r\n"
          "\r\nhello")};
    });
    auto recorder = exchange(client, makeRequest("GET", server.url("/t")));
    CHECK(recorder->outcome().failure == UpstreamFailure::kNone);
    CHECK(recorder->outcome().headers_received);
    CHECK(recorder->status() == 418);
    CHECK(recorder->reason() == "I'm  a Teapot (really)");
    CHECK(sameHeaders(recorder->headers(), {{"Set-Cookie", "a=1; Path=/"},
                                            {"x-custom-LOWER", "spaced value"},
                                            {"set-cookie", "b=2"},
                                            {"Retry-After", "7"}}));
    CHECK(recorder->body() == "hello");
    CHECK(recorder->headerCalls() == 1);
    CHECK_FALSE(recorder->outOfOrder());
    CHECK((recorder->ioThread() != std::this_thread::get_id()));
  }
  SUBCASE("no reason phrase gives an empty reason") {
    RawHttpServer server([](const ReceivedRequest&) {
      return Script{testing::send("HTTP/1.1 503\r\nContent-Length: 0\r\n\r\n")};
    });
    auto recorder = exchange(client, makeRequest("GET", server.url("/t")));
    CHECK(recorder->status() == 503);
    CHECK(recorder->reason().empty());
  }
  SUBCASE("1xx interim responses are skipped") {
    RawHttpServer server([](const ReceivedRequest&) {
      return Script{testing::send(
          "HTTP/1.1 100 Continue\r\n\r\n"
          "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
          "HTTP/1.1 201 Created\r\nLocation: /things/1\r\nContent-Length: 2\r\n\r\nok")};
    });
    auto recorder = exchange(client, makeRequest("POST", server.url("/things"), {}, "{}"));
    CHECK(recorder->outcome().failure == UpstreamFailure::kNone);
    CHECK(recorder->status() == 201);
    CHECK(recorder->reason() == "Created");
    CHECK(sameHeaders(recorder->headers(), {{"Location", "/things/1"}}));
    CHECK(recorder->headerCalls() == 1);
    CHECK(recorder->body() == "ok");
  }
  SUBCASE("redirects are returned, not followed") {
    RawHttpServer server(answer(302, "Found", {{"Location", "/elsewhere"}}, ""));
    auto recorder = exchange(client, makeRequest("GET", server.url("/r")));
    CHECK(recorder->status() == 302);
    CHECK(sameHeaders(recorder->headers(), {{"Location", "/elsewhere"}}));
    CHECK(server.requestCount() == 1);
  }
  SUBCASE("encoded bodies pass through undecoded") {
    const std::string gz = std::string("\x1f\x8b\x08\x00", 4) + patternBytes(64);
    RawHttpServer server(answer(200, "OK", {{"Content-Encoding", "gzip"}}, gz));
    auto recorder = exchange(client, makeRequest("GET", server.url("/gz"), {{"Accept-Encoding", "gzip"}}));
    CHECK(recorder->outcome().failure == UpstreamFailure::kNone);
    CHECK(recorder->body() == gz);
    CHECK(sameHeaders(recorder->headers(), {{"Content-Encoding", "gzip"}}));
  }
}


TEST_CASE_TEMPLATE_DEFINE("upstream client de-chunks a chunked response and drops trailers", Client, kwUpstreamCase07) {
  RawHttpServer server([](const ReceivedRequest&) {
    return Script{testing::send("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-B: 2\r\n\r\n" +
                                testing::chunk("hello") + testing::chunk(" world") +
                                "0\r\nX-Trailer: t\r\n\r\n")};
  });
  Client client;
  auto first = exchange(client, makeRequest("GET", server.url("/c")));
  CHECK(first->outcome().failure == UpstreamFailure::kNone);
  CHECK(first->body() == "hello world");
  CHECK(sameHeaders(first->headers(), {{"X-B", "2"}}));
  // The chunked framing ended the response cleanly: the connection is reused.
  auto second = exchange(client, makeRequest("GET", server.url("/c")));
  CHECK(second->body() == "hello world");
  CHECK(second->outcome().connection_reused);
  CHECK(server.connectionsAccepted() == 1);
}


TEST_CASE_TEMPLATE_DEFINE("upstream client streams SSE events before the response ends", Client, kwUpstreamCase08) {
  auto recorder = std::make_shared<Recorder>();
  RawHttpServer server([recorder](const ReceivedRequest&) {
    return Script{
        testing::send("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                      "Transfer-Encoding: chunked\r\n\r\n" +
                      testing::chunk("data: one\n\n")),
        // The next event is only sent once the observer has seen the first one.
        testing::waitFor([recorder] { return recorder->body().find("one") != std::string::npos; }, 8s),
        testing::send(testing::chunk("data: two\n\n")),
        testing::waitFor([recorder] { return recorder->body().find("two") != std::string::npos; }, 8s),
        testing::send(testing::chunk("")),
    };
  });
  Client client;
  UpstreamRequest request = makeRequest("GET", server.url("/events"), {{"Accept", "text/event-stream"}});
  request.allow_streaming = true;
  request.total_timeout = 0ms;
  const auto began = std::chrono::steady_clock::now();
  client.start(std::move(request), recorder);
  REQUIRE(recorder->waitComplete(20s));
  CHECK(std::chrono::steady_clock::now() - began < 6s);  // no gate had to give up
  CHECK(recorder->outcome().failure == UpstreamFailure::kNone);
  const auto chunks = recorder->chunks();
  REQUIRE(chunks.size() == 2);
  CHECK(chunks[0] == "data: one\n\n");
  CHECK(chunks[1] == "data: two\n\n");
  CHECK_FALSE(recorder->outOfOrder());
}


TEST_CASE_TEMPLATE_DEFINE("upstream client pauses on backpressure and resumes without losing or repeating bytes", Client, kwUpstreamCase09) {
  const std::string payload = patternBytes(4u << 20);
  RawHttpServer server(answer(200, "OK", {}, payload));
  Client client;
  auto recorder = std::make_shared<Recorder>();
  int calls = 0;
  recorder->setBodyHook([&calls](std::string_view) { return ++calls % 3 != 0; });
  UpstreamRequest request = makeRequest("GET", server.url("/big"));
  request.total_timeout = 120s;  // generous: sanitizer builds are slow
  auto call = client.start(std::move(request), recorder);
  int resumes = 0;
  while (recorder->completeCalls() == 0) {
    // Every pause needs one resume: wait for the pause that follows the last resume.
    const bool paused = recorder->waitUntil(
        [&](Recorder& r) { return r.pausesLocked() > resumes || r.completeCallsLocked() > 0; });
    REQUIRE(paused);
    if (recorder->completeCalls() > 0) break;
    // While paused nothing more arrives.
    const size_t size_at_pause = recorder->bodySize();
    std::this_thread::sleep_for(resumes < 2 ? 100ms : 1ms);
    CHECK(recorder->bodySize() == size_at_pause);
    call->resume();
    ++resumes;
    REQUIRE(resumes < 10000);
  }
  REQUIRE(recorder->waitComplete());
  CHECK(resumes >= 2);
  CHECK(recorder->outcome().failure == UpstreamFailure::kNone);
  CHECK(recorder->body().size() == payload.size());
  CHECK(recorder->body() == payload);
  call->resume();  // after completion: a no-op
  call->cancel();
  std::this_thread::sleep_for(20ms);
  CHECK(recorder->completeCalls() == 1);
}


TEST_CASE_TEMPLATE_DEFINE("upstream client enforces max_response_bytes unless streaming is allowed", Client, kwUpstreamCase10) {
  const std::string body(5000, 'x');
  Client client;
  SUBCASE("Content-Length body") {
    RawHttpServer server(answer(200, "OK", {}, body));
    UpstreamRequest request = makeRequest("GET", server.url("/large"));
    request.max_response_bytes = 1000;
    auto recorder = exchange(client, request);
    CHECK(recorder->outcome().failure == UpstreamFailure::kResponseTooLarge);
    CHECK(recorder->outcome().headers_received);
    CHECK(recorder->body().size() <= 1000);

    request.allow_streaming = true;
    auto streamed = exchange(client, request);
    CHECK(streamed->outcome().failure == UpstreamFailure::kNone);
    CHECK(streamed->body() == body);
  }
  SUBCASE("chunked body, exactly at the limit and one byte over") {
    RawHttpServer server([](const ReceivedRequest& r) {
      const size_t n = r.target == "/at" ? 1000 : 1001;
      return Script{testing::send("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" +
                                  testing::chunk(std::string(n, 'y')) + testing::chunk(""))};
    });
    UpstreamRequest at = makeRequest("GET", server.url("/at"));
    at.max_response_bytes = 1000;
    CHECK(exchange(client, at)->outcome().failure == UpstreamFailure::kNone);
    UpstreamRequest over = makeRequest("GET", server.url("/over"));
    over.max_response_bytes = 1000;
    CHECK(exchange(client, over)->outcome().failure == UpstreamFailure::kResponseTooLarge);
  }
}


TEST_CASE_TEMPLATE_DEFINE("upstream client times out on a stalled upstream", Client, kwUpstreamCase11) {
  Client client;
  SUBCASE("no answer at all") {
    RawHttpServer server([](const ReceivedRequest&) { return Script{testing::stall()}; });
    UpstreamRequest request = makeRequest("GET", server.url("/stall"));
    request.total_timeout = 300ms;
    auto recorder = exchange(client, request);
    const UpstreamOutcome outcome = recorder->outcome();
    CHECK(outcome.failure == UpstreamFailure::kTimeout);
    CHECK_FALSE(outcome.headers_received);
    CHECK(outcome.elapsed >= 250ms);
    CHECK(outcome.elapsed < 8s);
    CHECK(recorder->headerCalls() == 0);
  }
  SUBCASE("headers, then the body stalls") {
    RawHttpServer server([](const ReceivedRequest&) {
      return Script{testing::send("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial"),
                    testing::stall()};
    });
    UpstreamRequest request = makeRequest("GET", server.url("/stall"));
    request.total_timeout = 300ms;
    auto recorder = exchange(client, request);
    CHECK(recorder->outcome().failure == UpstreamFailure::kTimeout);
    CHECK(recorder->outcome().headers_received);
    CHECK(recorder->body() == "partial");
  }
}


TEST_CASE_TEMPLATE_DEFINE("upstream client reports a refused connection as kConnectFailed", Client, kwUpstreamCase12) {
  RefusingPort refusing;
  Client client;
  auto recorder = exchange(
      client, makeRequest("GET", "http://127.0.0.1:" + std::to_string(refusing.port()) + "/x"));
  const UpstreamOutcome outcome = recorder->outcome();
  CHECK(outcome.failure == UpstreamFailure::kConnectFailed);
  CHECK_FALSE(outcome.headers_received);
  CHECK_FALSE(outcome.connection_reused);
  CHECK(!outcome.message.empty());
  CHECK(recorder->headerCalls() == 0);
  CHECK(client.stats().in_flight == 0);
}


TEST_CASE_TEMPLATE_DEFINE("upstream client reports a connection lost after sending as kSendFailed", Client, kwUpstreamCase13) {
  Client client;
  SUBCASE("reset mid-response") {
    RawHttpServer server([](const ReceivedRequest&) {
      return Script{testing::send("HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" +
                                  std::string(1000, 'z')),
                    testing::delay(50ms), testing::resetConnection()};
    });
    auto recorder = exchange(client, makeRequest("GET", server.url("/reset")));
    CHECK(recorder->outcome().failure == UpstreamFailure::kSendFailed);
    CHECK(recorder->outcome().headers_received);
    CHECK(recorder->status() == 200);
  }
  SUBCASE("closed mid-response (short body)") {
    RawHttpServer server([](const ReceivedRequest&) {
      return Script{testing::send("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort"),
                    testing::closeConnection()};
    });
    auto recorder = exchange(client, makeRequest("GET", server.url("/cut")));
    CHECK(recorder->outcome().failure == UpstreamFailure::kSendFailed);
    CHECK(recorder->outcome().headers_received);
  }
  SUBCASE("closed before any answer") {
    RawHttpServer server([](const ReceivedRequest&) { return Script{testing::closeConnection()}; });
    auto recorder = exchange(client, makeRequest("POST", server.url("/nothing"), {}, "{}"));
    CHECK(recorder->outcome().failure == UpstreamFailure::kSendFailed);
    CHECK_FALSE(recorder->outcome().headers_received);
    CHECK(recorder->headerCalls() == 0);
  }
}


TEST_CASE_TEMPLATE_DEFINE("upstream client reports garbage instead of HTTP as kProtocol", Client, kwUpstreamCase14) {
  Client client;
  for (const std::string& garbage :
       {std::string("SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"), std::string("HTTP/1.1 abc\r\n\r\n"),
        std::string("\x16\x03\x01\x00\x05hello", 10)}) {
    CAPTURE(garbage);
    RawHttpServer server([garbage](const ReceivedRequest&) {
      return Script{testing::send(garbage), testing::closeConnection()};
    });
    auto recorder = exchange(client, makeRequest("GET", server.url("/g")));
    CHECK(recorder->outcome().failure == UpstreamFailure::kProtocol);
    CHECK(recorder->headerCalls() == 0);
  }
}

TEST_CASE_TEMPLATE_DEFINE("upstream client reports a 300 KB response header line as kProtocol", Client,
                          kwUpstreamCase22) {
  // Over both clients' limits (libcurl: 100 KB per line, reported as "out of memory" by 7.88;
  // the native client: max_header_bytes, 256 KB): a protocol failure, not a connection failure.
  RawHttpServer server([](const ReceivedRequest&) {
    return Script{testing::send("HTTP/1.1 200 OK\r\nX-Big: " + std::string(300'000, 'a') +
                                "\r\nContent-Length: 2\r\n\r\nok"),
                  testing::closeConnection()};
  });
  Client client;
  auto recorder = exchange(client, makeRequest("GET", server.url("/big-head")));
  CHECK(recorder->outcome().failure == UpstreamFailure::kProtocol);
  CHECK(recorder->headerCalls() == 0);
  CHECK(recorder->outcome().message.find(std::string(100, 'a')) == std::string::npos);
}

TEST_CASE_TEMPLATE_DEFINE("upstream client cancel completes once with kCancelled", Client, kwUpstreamCase15) {
  RawHttpServer server([](const ReceivedRequest&) { return Script{testing::stall()}; });
  Client client;
  SUBCASE("while waiting for the upstream") {
    auto recorder = std::make_shared<Recorder>();
    auto call = client.start(makeRequest("GET", server.url("/slow")), recorder);
    for (int i = 0; i < 500 && server.requestCount() == 0; ++i) std::this_thread::sleep_for(10ms);
    REQUIRE(server.requestCount() == 1);
    call->cancel();
    REQUIRE(recorder->waitComplete());
    CHECK(recorder->outcome().failure == UpstreamFailure::kCancelled);
    call->cancel();
    call->resume();
    std::this_thread::sleep_for(50ms);
    CHECK(recorder->completeCalls() == 1);
    CHECK(client.stats().in_flight == 0);
  }
  SUBCASE("right after start") {
    auto recorder = std::make_shared<Recorder>();
    auto call = client.start(makeRequest("GET", server.url("/slow")), recorder);
    call->cancel();
    REQUIRE(recorder->waitComplete());
    CHECK(recorder->outcome().failure == UpstreamFailure::kCancelled);
    std::this_thread::sleep_for(50ms);
    CHECK(recorder->completeCalls() == 1);
  }
  SUBCASE("from inside onBody") {
    RawHttpServer streaming([](const ReceivedRequest&) {
      return Script{testing::send("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" +
                                  testing::chunk("first")),
                    testing::stall()};
    });
    auto recorder = std::make_shared<Recorder>();
    std::shared_ptr<core::UpstreamCall> call;
    std::mutex call_mutex;
    recorder->setBodyHook([&](std::string_view) {
      std::lock_guard<std::mutex> lock(call_mutex);
      if (call) call->cancel();
      return true;
    });
    {
      std::lock_guard<std::mutex> lock(call_mutex);
      call = client.start(makeRequest("GET", streaming.url("/s")), recorder);
    }
    REQUIRE(recorder->waitComplete());
    CHECK(recorder->outcome().failure == UpstreamFailure::kCancelled);
    CHECK(recorder->outcome().headers_received);
    CHECK(recorder->body() == "first");
  }
}


TEST_CASE_TEMPLATE_DEFINE("upstream client ignores proxy settings from the environment", Client, kwUpstreamCase16) {
  RawHttpServer server(echoOk());
  RefusingPort proxy;
  const std::string proxy_url = "http://127.0.0.1:" + std::to_string(proxy.port());
  ::setenv("http_proxy", proxy_url.c_str(), 1);
  ::setenv("HTTP_PROXY", proxy_url.c_str(), 1);
  ::setenv("ALL_PROXY", proxy_url.c_str(), 1);
  Client client;
  auto recorder = exchange(client, makeRequest("GET", server.url("/direct")));
  ::unsetenv("http_proxy");
  ::unsetenv("HTTP_PROXY");
  ::unsetenv("ALL_PROXY");
  CHECK(recorder->outcome().failure == UpstreamFailure::kNone);
  CHECK(server.requests().at(0).target == "/direct");
}


TEST_CASE_TEMPLATE_DEFINE("upstream client refuses invalid requests with a clear error and sends nothing", Client, kwUpstreamCase17) {
  RawHttpServer server(echoOk());
  Client client;
  struct Bad {
    UpstreamRequest request;
    std::string expected;
  };
  std::vector<Bad> cases;
  cases.push_back({makeRequest("GET", server.url("/x"), {{"X-Inject", "v\r\nX-Evil: 1"}}), "CR, LF"});
  cases.push_back({makeRequest("GET", server.url("/x"), {{"Bad Name", "secret-value"}}), "header name"});
  cases.push_back({makeRequest("GE T", server.url("/x")), "method"});
  cases.push_back({makeRequest("", server.url("/x")), "method"});
  cases.push_back({makeRequest("GET", "ftp://127.0.0.1/x"), "scheme"});
  cases.push_back({makeRequest("GET", "/relative"), "scheme"});
  cases.push_back({makeRequest("GET", server.url("/a b")), "URL"});
  cases.push_back({makeRequest("GET", server.url(std::string("/nul\0x", 6))), "URL"});
  for (auto& bad : cases) {
    CAPTURE(bad.request.url);
    auto recorder = exchange(client, bad.request);
    const UpstreamOutcome outcome = recorder->outcome();
    CHECK(outcome.failure == UpstreamFailure::kProtocol);
    CHECK(outcome.message.find(bad.expected) != std::string::npos);
    CHECK(outcome.message.find("secret-value") == std::string::npos);
    CHECK(recorder->headerCalls() == 0);
  }
  std::this_thread::sleep_for(50ms);
  CHECK(server.connectionsAccepted() == 0);
  // A null observer is tolerated.
  client.start(makeRequest("GET", server.url("/null-observer")), nullptr);
  for (int i = 0; i < 500 && client.stats().in_flight != 0; ++i) std::this_thread::sleep_for(10ms);
  CHECK(client.stats().in_flight == 0);
}


TEST_CASE_TEMPLATE_DEFINE("upstream client survives an observer that throws", Client, kwUpstreamCase18) {
  RawHttpServer server(answer(200, "OK", {}, "body"));
  Client client;
  class Throwing : public Recorder {
   public:
    bool onBody(std::string_view) override { throw std::runtime_error("boom"); }
  };
  auto recorder = std::make_shared<Throwing>();
  client.start(makeRequest("GET", server.url("/throw")), recorder);
  REQUIRE(recorder->waitComplete());
  CHECK(recorder->outcome().failure == UpstreamFailure::kProtocol);
  // The client still works.
  CHECK(exchange(client, makeRequest("GET", server.url("/after")))->body() == "body");
}


TEST_CASE_TEMPLATE_DEFINE("upstream client spreads requests over several I/O threads", Client, kwUpstreamCase19) {
  RawHttpServer server(echoOk());
  typename ClientTraits<Client>::Options options;
  options.io_threads = 3;
  Client client(options);
  std::vector<std::shared_ptr<Recorder>> recorders;
  for (int i = 0; i < 30; ++i) {
    recorders.push_back(std::make_shared<Recorder>());
    client.start(makeRequest("GET", server.url("/t" + std::to_string(i))), recorders.back());
  }
  std::set<std::thread::id> threads;
  for (auto& recorder : recorders) {
    REQUIRE(recorder->waitComplete());
    CHECK(recorder->outcome().failure == UpstreamFailure::kNone);
    threads.insert(recorder->ioThread());
  }
  CHECK(threads.size() == 3);
  CHECK(server.requestCount() == 30);
  CHECK(client.stats().requests == 30);
}


TEST_CASE_TEMPLATE_DEFINE("upstream client holds 2000 concurrent slow requests", Client, kwUpstreamCase20) {
  // Each request needs a client and a server socket in this process.
  rlimit limit{};
  ::getrlimit(RLIMIT_NOFILE, &limit);
  if (limit.rlim_cur < 5000 && limit.rlim_max >= 5000) {
    limit.rlim_cur = std::min<rlim_t>(limit.rlim_max, 8192);
    ::setrlimit(RLIMIT_NOFILE, &limit);
  }
  REQUIRE(limit.rlim_cur >= 4500);
  constexpr int kRequests = 2000;
  RawHttpServer server([](const ReceivedRequest& request) {
    return Script{testing::delay(1s), testing::send(testing::response(200, "OK", {}, request.target))};
  });
  Client client;
  std::mutex mutex;
  std::condition_variable done;
  int completed = 0;
  int ok = 0;
  class Counting : public core::UpstreamObserver {
   public:
    Counting(std::string expected, std::function<void(bool)> report)
        : expected_(std::move(expected)), report_(std::move(report)) {}
    void onHeaders(int status, std::string_view, Headers) override { status_ = status; }
    bool onBody(std::string_view chunk) override {
      body_.append(chunk);
      return true;
    }
    void onComplete(const UpstreamOutcome& outcome) override {
      report_(outcome.failure == UpstreamFailure::kNone && status_ == 200 && body_ == expected_);
    }

   private:
    std::string expected_;
    std::function<void(bool)> report_;
    int status_ = 0;
    std::string body_;
  };
  auto report = [&](bool success) {
    std::lock_guard<std::mutex> lock(mutex);
    ++completed;
    if (success) ++ok;
    done.notify_all();
  };
  const auto began = std::chrono::steady_clock::now();
  for (int i = 0; i < kRequests; ++i) {
    const std::string target = "/slow/" + std::to_string(i);
    UpstreamRequest request = makeRequest("GET", server.url(target));
    request.total_timeout = 30s;
    client.start(std::move(request), std::make_shared<Counting>(target, report));
  }
  CHECK(client.stats().in_flight > 0);
  {
    std::unique_lock<std::mutex> lock(mutex);
    done.wait_for(lock, 20s, [&] { return completed == kRequests; });
    CHECK(completed == kRequests);
    CHECK(ok == kRequests);
  }
  const auto took = std::chrono::steady_clock::now() - began;
  MESSAGE("2000 concurrent 1 s requests took "
          << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << " ms");
  CHECK(took >= 1s);
  const auto stats = client.stats();
  CHECK(stats.in_flight == 0);
  CHECK(stats.requests == kRequests);
  // HTTP/1.1: each exchange opened a connection or reused one another had finished with. Most
  // ran side by side (a serial client would need 2,000 s); on a loaded machine starting 2,000
  // exchanges can take longer than the first ones' 1 s, and those connections are reused.
  CHECK(stats.connections_opened + stats.connections_reused == static_cast<uint64_t>(kRequests));
  CHECK(stats.connections_opened >= static_cast<uint64_t>(kRequests / 4));
}


TEST_CASE_TEMPLATE_DEFINE("upstream client destructor cancels requests in flight", Client, kwUpstreamCase21) {
  RawHttpServer server([](const ReceivedRequest&) { return Script{testing::stall()}; });
  std::vector<std::shared_ptr<Recorder>> recorders;
  std::vector<std::shared_ptr<core::UpstreamCall>> calls;
  auto late = std::make_shared<Recorder>();
  {
    typename ClientTraits<Client>::Options options;
    options.io_threads = 2;
    Client client(options);
    for (int i = 0; i < 50; ++i) {
      recorders.push_back(std::make_shared<Recorder>());
      calls.push_back(client.start(makeRequest("GET", server.url("/hang")), recorders.back()));
    }
    // One observer starts another exchange from onComplete, as a retry would.
    bool restarted = false;
    recorders[0]->setCompleteHook([&] {
      if (!restarted) {
        restarted = true;
        client.start(makeRequest("GET", server.url("/again")), late);
      }
    });
    for (int i = 0; i < 500 && server.requestCount() < 50; ++i) std::this_thread::sleep_for(10ms);
    CHECK(server.requestCount() == 50);
  }
  for (auto& recorder : recorders) {
    CHECK(recorder->completeCalls() == 1);
    CHECK(recorder->outcome().failure == UpstreamFailure::kCancelled);
  }
  CHECK(late->completeCalls() == 1);
  CHECK(late->outcome().failure == UpstreamFailure::kCancelled);
  // Handles outliving the client are harmless.
  for (auto& call : calls) {
    call->cancel();
    call->resume();
  }
}

}  // namespace keyway::daemon
