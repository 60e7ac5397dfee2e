// Tests of CurlUpstreamClient: the cases every upstream client shares (upstream_client_cases.hpp),
// on its own threads and hosted by reactor threads as in keywayd, plus connection pooling, pool
// limits and TLS failures, against raw-socket fake upstreams on 127.0.0.1.
#include "daemon/curl_upstream_client.hpp"

#include <set>

#include "tests/unit/daemon/hosted_client.hpp"
#include "tests/unit/daemon/upstream_client_cases.hpp"

namespace keyway::daemon {
using HostedCurlClient = testing::HostedClient<CurlUpstreamClient, CurlUpstreamClientOptions>;
}  // namespace keyway::daemon

DOCTEST_TYPE_TO_STRING_AS("CurlUpstreamClient", keyway::daemon::CurlUpstreamClient);
DOCTEST_TYPE_TO_STRING_AS("CurlUpstreamClient(hosted)", keyway::daemon::HostedCurlClient);

namespace keyway::daemon {

template <>
struct ClientTraits<CurlUpstreamClient> {
  using Options = CurlUpstreamClientOptions;
};
template <>
struct ClientTraits<HostedCurlClient> {
  using Options = CurlUpstreamClientOptions;
};

TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase01, CurlUpstreamClient);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase02, CurlUpstreamClient);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase03, CurlUpstreamClient);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase04, CurlUpstreamClient);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase05, CurlUpstreamClient);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase06, CurlUpstreamClient);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase07, CurlUpstreamClient);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase08, CurlUpstreamClient);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase09, CurlUpstreamClient);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase10, CurlUpstreamClient);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase11, CurlUpstreamClient);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase12, CurlUpstreamClient);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase13, CurlUpstreamClient);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase14, CurlUpstreamClient);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase15, CurlUpstreamClient);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase16, CurlUpstreamClient);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase17, CurlUpstreamClient);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase18, CurlUpstreamClient);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase19, CurlUpstreamClient);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase20, CurlUpstreamClient);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase21, CurlUpstreamClient);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase22, CurlUpstreamClient);

TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase01, HostedCurlClient);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase02, HostedCurlClient);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase03, HostedCurlClient);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase04, HostedCurlClient);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase05, HostedCurlClient);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase06, HostedCurlClient);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase07, HostedCurlClient);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase08, HostedCurlClient);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase09, HostedCurlClient);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase10, HostedCurlClient);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase11, HostedCurlClient);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase12, HostedCurlClient);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase13, HostedCurlClient);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase14, HostedCurlClient);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase15, HostedCurlClient);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase16, HostedCurlClient);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase17, HostedCurlClient);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase18, HostedCurlClient);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase19, HostedCurlClient);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase20, HostedCurlClient);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase21, HostedCurlClient);
TEST_CASE_TEMPLATE_INVOKE(kwUpstreamCase22, HostedCurlClient);

TEST_CASE("CurlUpstreamClient reports a TLS handshake failure as kTls") {
  // A plain-HTTP peer on an https:// URL: the handshake fails.
  RawHttpServer server(echoOk(), Script{testing::send("HTTP/1.1 400 Bad Request\r\n\r\n"),
                                        testing::closeConnection()});
  CurlUpstreamClient client;
  auto recorder =
      exchange(client, makeRequest("GET", "https://127.0.0.1:" + std::to_string(server.port()) + "/"));
  CHECK(recorder->outcome().failure == UpstreamFailure::kTls);
  CHECK_FALSE(recorder->outcome().headers_received);
}

TEST_CASE("CurlUpstreamClient retries a stale pooled connection on a new connection") {
  CurlUpstreamClient client;
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
  CHECK(server.connectionsAccepted() == 2);
  const auto requests = server.requests();
  REQUIRE(requests.size() == 3);
  CHECK(requests[2].connection == 1);
  CHECK(requests[2].body == "{}");
}

TEST_CASE("CurlUpstreamClient pools connections only when the response allows it") {
  CurlUpstreamClient client;
  struct Case {
    std::string response;
    bool pooled;
  };
  const std::vector<Case> cases = {
      {"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", false},
      {"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", false},
      {"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", true},
      {"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", true},
      {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", true},
      {"HTTP/1.1 204 No Content\r\n\r\n", true},
  };
  for (const auto& c : cases) {
    CAPTURE(c.response);
    // Responses keep the connection open whatever they say: only the client decides to close.
    RawHttpServer server([&c](const ReceivedRequest&) { return Script{testing::send(c.response)}; });
    auto first = exchange(client, makeRequest("GET", server.url("/p")));
    CHECK(first->outcome().failure == UpstreamFailure::kNone);
    auto second = exchange(client, makeRequest("GET", server.url("/p")));
    CHECK(second->outcome().failure == UpstreamFailure::kNone);
    CHECK(second->outcome().connection_reused == c.pooled);
    CHECK(server.connectionsAccepted() == (c.pooled ? 1u : 2u));
  }
}

TEST_CASE("CurlUpstreamClient keeps a pool within its connection limit and queues the rest") {
  // 40 slow requests to a pool limited to 4 connections: at most 4 connections are ever open at
  // the upstream, every request succeeds, and the queued ones reuse the pool's connections.
  RawHttpServer server([&](const ReceivedRequest& r) {
    return Script{testing::delay(std::chrono::milliseconds(30)),
                  testing::send(testing::response(200, "OK", {}, r.target))};
  });
  CurlUpstreamClientOptions options;
  options.io_threads = 2;
  HostedCurlClient client(options);
  std::vector<std::shared_ptr<Recorder>> recorders;
  for (int i = 0; i < 40; ++i) {
    auto request = makeRequest("GET", server.url("/r" + std::to_string(i)));
    request.pool = "limited";
    request.max_connections = 4;
    auto recorder = std::make_shared<Recorder>();
    client.start(std::move(request), recorder);
    recorders.push_back(recorder);
  }
  for (size_t i = 0; i < recorders.size(); ++i) {
    CAPTURE(i);
    REQUIRE(recorders[i]->waitComplete());
    CHECK(recorders[i]->outcome().failure == UpstreamFailure::kNone);
    CHECK(recorders[i]->body() == "/r" + std::to_string(i));
  }
  CHECK(server.connectionsAccepted() <= 4u);
  const auto stats = client.stats();
  CHECK(stats.connections_opened <= 4u);
  CHECK(stats.connections_reused >= 36u);
  REQUIRE(stats.pools.size() == 1);
  CHECK(stats.pools[0].pool == "limited");
  CHECK(stats.pools[0].peak >= 1);
  CHECK(stats.pools[0].peak <= 4);
  CHECK(stats.pools[0].open <= 4);
}

TEST_CASE("CurlUpstreamClient times out a request still waiting for a connection of a full pool") {
  // One connection allowed; the first request holds it (the upstream never answers). The second
  // waits in libcurl's queue, where libcurl 7.88 runs no timeout of its own: the client's own
  // deadline must end it at its timeout, not when the first one gives up.
  RawHttpServer server([](const ReceivedRequest& r) {
    if (r.target == "/hold") return Script{testing::stall()};
    return Script{testing::send(testing::response(200, "OK", {}, "late"))};
  });
  for (bool hosted : {false, true}) {
    CAPTURE(hosted);
    CurlUpstreamClientOptions options;
    std::unique_ptr<core::UpstreamClient> client;
    if (hosted) {
      client = std::make_unique<HostedCurlClient>(options);
    } else {
      client = std::make_unique<CurlUpstreamClient>(options);
    }
    auto hold_request = makeRequest("GET", server.url("/hold"));
    hold_request.pool = "one";
    hold_request.max_connections = 1;
    hold_request.total_timeout = std::chrono::milliseconds(5000);
    auto hold = std::make_shared<Recorder>();
    client->start(std::move(hold_request), hold);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // the first one has the connection
    auto queued_request = makeRequest("GET", server.url("/queued"));
    queued_request.pool = "one";
    queued_request.max_connections = 1;
    queued_request.total_timeout = std::chrono::milliseconds(400);
    auto queued = std::make_shared<Recorder>();
    const auto started = std::chrono::steady_clock::now();
    client->start(std::move(queued_request), queued);
    REQUIRE(queued->waitComplete(std::chrono::milliseconds(3000)));
    const auto took = std::chrono::steady_clock::now() - started;
    CHECK(queued->outcome().failure == UpstreamFailure::kTimeout);
    CHECK(took < std::chrono::milliseconds(1500));
    CHECK(took >= std::chrono::milliseconds(350));
    CHECK_FALSE(hold->waitComplete(std::chrono::milliseconds(10)));  // still holding its connection
    client.reset();
    CHECK(hold->outcome().failure == UpstreamFailure::kCancelled);
  }
}

}  // namespace keyway::daemon
