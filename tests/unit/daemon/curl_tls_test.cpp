// Tests of daemon/curl_tls: libcurl's results read as TLS problems, the options of `tls:` settings,
// and CurlUpstreamClient applying them (the handshakes themselves, with real certificates, are in
// tests/integration/test_tls.py).
#include "daemon/curl_tls.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>

#include "daemon/curl_upstream_client.hpp"
#include "tests/unit/daemon/raw_http_server.hpp"

namespace keyway::daemon {
namespace {

using core::TlsProblem;
using core::UpstreamFailure;

// Waits for one exchange's end.
class Outcome final : public core::UpstreamObserver {
 public:
  void onHeaders(int, std::string_view, core::Headers) override {}
  bool onBody(std::string_view) override { return true; }
  void onComplete(const core::UpstreamOutcome& outcome) override {
    std::lock_guard<std::mutex> lock(mutex_);
    outcome_ = outcome;
    done_ = true;
    cv_.notify_all();
  }
  core::UpstreamOutcome wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    REQUIRE(cv_.wait_for(lock, std::chrono::seconds(20), [&] { return done_; }));
    return outcome_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  bool done_ = false;
  core::UpstreamOutcome outcome_;
};

core::UpstreamOutcome fetch(CurlUpstreamClient& client, const std::string& url,
                            std::shared_ptr<const core::UpstreamTls> tls) {
  core::UpstreamRequest request;
  request.method = "GET";
  request.url = url;
  request.connect_timeout = std::chrono::seconds(5);
  request.total_timeout = std::chrono::seconds(10);
  request.tls = std::move(tls);
  auto observer = std::make_shared<Outcome>();
  client.start(std::move(request), observer);
  return observer->wait();
}

std::shared_ptr<const core::UpstreamTls> tlsOf(std::string ca, std::string cert, std::string key) {
  return std::make_shared<const core::UpstreamTls>(core::UpstreamTls{std::move(ca), std::move(cert), std::move(key), {}});
}

}  // namespace

TEST_CASE("tlsProblemOf reads libcurl 7.88's verification failures") {
  // The texts are libcurl's own (lib/vtls/openssl.c); without a handle there is no X509 result.
  CHECK(tlsProblemOf(nullptr, CURLE_PEER_FAILED_VERIFICATION,
                     "SSL: no alternative certificate subject name matches target host name '127.0.0.1'") ==
        TlsProblem::kHostMismatch);
  CHECK(tlsProblemOf(nullptr, CURLE_PEER_FAILED_VERIFICATION,
                     "SSL: certificate subject name 'api.example' does not match target host name 'x'") ==
        TlsProblem::kHostMismatch);
  CHECK(tlsProblemOf(nullptr, CURLE_PEER_FAILED_VERIFICATION, "SSL certificate verification failed") ==
        TlsProblem::kOtherVerification);
  CHECK(tlsProblemOf(nullptr, CURLE_SSL_CACERT_BADFILE, "error setting certificate file: /x") ==
        TlsProblem::kCaFileUnusable);
  CHECK(tlsProblemOf(nullptr, CURLE_SSL_PINNEDPUBKEYNOTMATCH, "") == TlsProblem::kOtherVerification);
  for (auto problem : {TlsProblem::kHostMismatch, TlsProblem::kCaFileUnusable, TlsProblem::kOtherVerification}) {
    CHECK(core::isCertificateVerification(problem));
  }
}

TEST_CASE("tlsProblemOf: handshake failures, client certificates and what is not TLS") {
  CHECK(tlsProblemOf(nullptr, CURLE_SSL_CONNECT_ERROR,
                     "OpenSSL/3.0.19: error:0A00010B:SSL routines::wrong version number") == TlsProblem::kHandshake);
  CHECK(tlsProblemOf(nullptr, CURLE_SSL_CONNECT_ERROR,
                     "OpenSSL/3.0.19: error:0A000418:SSL routines::tlsv1 alert unknown ca") ==
        TlsProblem::kClientCertRefused);
  CHECK(tlsProblemOf(nullptr, CURLE_SSL_CLIENTCERT, "") == TlsProblem::kClientCertRefused);
  CHECK(tlsProblemOf(nullptr, CURLE_SSL_CERTPROBLEM, "could not load PEM client certificate") ==
        TlsProblem::kClientCertUnusable);
  // TLS 1.3: the refusal of a client certificate arrives on the first read, as an alert.
  const char* alert = "OpenSSL SSL_read: OpenSSL/3.0.19: error:0A00045C:SSL routines::tlsv13 alert certificate required, errno 0";
  CHECK(tlsProblemOf(nullptr, CURLE_RECV_ERROR, alert) == TlsProblem::kClientCertRefused);
  CHECK_FALSE(tlsProblemOf(nullptr, CURLE_RECV_ERROR, alert, /*response_started=*/true).has_value());
  CHECK(tlsProblemOf(nullptr, CURLE_SEND_ERROR, "SSL_write: error:0A000410:SSL routines::sslv3 alert handshake failure") ==
        TlsProblem::kHandshake);
  CHECK_FALSE(tlsProblemOf(nullptr, CURLE_RECV_ERROR, "Connection reset by peer").has_value());
  CHECK_FALSE(tlsProblemOf(nullptr, CURLE_RECV_ERROR,
                           "OpenSSL SSL_read: error:0A000126:SSL routines::unexpected eof while reading")
                  .has_value());
  CHECK_FALSE(tlsProblemOf(nullptr, CURLE_COULDNT_CONNECT, "").has_value());
  CHECK_FALSE(tlsProblemOf(nullptr, CURLE_OPERATION_TIMEDOUT, "").has_value());
  CHECK_FALSE(tlsProblemOf(nullptr, CURLE_OK, "").has_value());
}

TEST_CASE("setUpstreamTls takes every setting and none") {
  CURL* easy = curl_easy_init();
  REQUIRE(easy != nullptr);
  CHECK(setUpstreamTls(easy, nullptr) == CURLE_OK);
  const auto all = tlsOf("/etc/keyway/ca.pem", "/etc/keyway/client.pem", "/etc/keyway/client.key");
  CHECK(setUpstreamTls(easy, all.get()) == CURLE_OK);
  const auto ca_only = tlsOf("/etc/keyway/ca.pem", "", "");
  CHECK(setUpstreamTls(easy, ca_only.get()) == CURLE_OK);
  curl_easy_cleanup(easy);
}

TEST_CASE("CurlUpstreamClient applies the request's CA file and client certificate") {
  // libcurl loads both before it sends its ClientHello: a plain TCP peer is enough to see that the
  // files named by the request (not some global setting) were used.
  testing::RawHttpServer server([](const testing::ReceivedRequest&) { return testing::Script{}; },
                                testing::Script{testing::send("HTTP/1.1 400 Bad Request\r\n\r\n"),
                                                testing::closeConnection()});
  const std::string url = "https://127.0.0.1:" + std::to_string(server.port()) + "/";
  CurlUpstreamClient client;

  const auto no_ca = fetch(client, url, tlsOf("/nonexistent/keyway-ca.pem", "", ""));
  CHECK(no_ca.failure == UpstreamFailure::kTls);
  CHECK(no_ca.tls_problem == TlsProblem::kCaFileUnusable);
  CHECK(no_ca.message.rfind("TLS certificate verification failed: ", 0) == 0);

  const auto no_cert = fetch(client, url, tlsOf("", "/nonexistent/keyway-client.pem", "/nonexistent/keyway-client.key"));
  CHECK(no_cert.failure == UpstreamFailure::kTls);
  CHECK(no_cert.tls_problem == TlsProblem::kClientCertUnusable);

  // Without settings the system's CAs are used and the (plain) peer fails the handshake.
  const auto plain = fetch(client, url, nullptr);
  CHECK(plain.failure == UpstreamFailure::kTls);
  CHECK(plain.tls_problem == TlsProblem::kHandshake);
}

}  // namespace keyway::daemon
