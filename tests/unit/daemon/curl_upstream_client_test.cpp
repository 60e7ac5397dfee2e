// Tests of CurlUpstreamClient: the cases every upstream client shares
// (upstream_client_cases.hpp) plus the TLS ones, against raw-socket fake upstreams on 127.0.0.1.
#include "daemon/curl_upstream_client.hpp"

#include "tests/unit/daemon/upstream_client_cases.hpp"

DOCTEST_TYPE_TO_STRING_AS("CurlUpstreamClient", keyway::daemon::CurlUpstreamClient);

namespace keyway::daemon {

template <>
struct ClientTraits<CurlUpstreamClient> {
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

}  // namespace keyway::daemon
