// libcurl options and result codes for TLS to upstreams (see curl_tls.hpp).
#include "daemon/curl_tls.hpp"

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <algorithm>
#include <chrono>
#include <initializer_list>

namespace keyway::daemon {

namespace {

using core::TlsProblem;

// X509 verification results as OpenSSL numbers them (include/openssl/x509_vfy.h; part of its ABI,
// unchanged since 1.1). Spelt out here so that the daemon builds against libcurl's headers alone.
constexpr long kX509Ok = 0;
constexpr long kX509Unspecified = 1;  // also libcurl's "not verified yet" (openssl.c sets !X509_V_OK)
constexpr long kUnableToGetIssuerCert = 2;
constexpr long kCertSignatureFailure = 7;
constexpr long kCertNotYetValid = 9;
constexpr long kCertHasExpired = 10;
constexpr long kDepthZeroSelfSignedCert = 18;
constexpr long kSelfSignedCertInChain = 19;
constexpr long kUnableToGetIssuerCertLocally = 20;
constexpr long kUnableToVerifyLeafSignature = 21;
constexpr long kCertRevoked = 23;
constexpr long kCertUntrusted = 27;
constexpr long kHostnameMismatch = 62;
constexpr long kIpAddressMismatch = 64;
constexpr long kInvalidCa = 79;

// libcurl caches the CA store it built for a CA file in the multi handle, 24 h by default.
constexpr long kDefaultCaCacheSeconds = 24 * 60 * 60;

bool contains(std::string_view text, std::string_view what) { return text.find(what) != std::string_view::npos; }

// A TLS alert the upstream sent about keyway's own certificate: what a server that wants a client
// certificate answers when it got none, or one it does not accept. OpenSSL's reason texts, as
// libcurl quotes them ("error:0A000418:SSL routines::tlsv1 alert unknown ca").
bool clientCertificateAlert(std::string_view text) {
  for (std::string_view alert : {"alert certificate required", "alert bad certificate", "alert unknown ca",
                                 "alert certificate unknown", "alert certificate expired",
                                 "alert certificate revoked", "alert unsupported certificate",
                                 "alert access denied"}) {
    if (contains(text, alert)) return true;
  }
  return false;
}

TlsProblem verificationProblem(CURL* easy, std::string_view text) {
  long result = kX509Ok;
  if (easy != nullptr) curl_easy_getinfo(easy, CURLINFO_SSL_VERIFYRESULT, &result);
  switch (result) {
    case kCertHasExpired:
      return TlsProblem::kExpired;
    case kCertNotYetValid:
      return TlsProblem::kNotYetValid;
    case kCertRevoked:
      return TlsProblem::kRevoked;
    case kHostnameMismatch:
    case kIpAddressMismatch:
      return TlsProblem::kHostMismatch;
    case kUnableToGetIssuerCert:
    case kDepthZeroSelfSignedCert:
    case kSelfSignedCertInChain:
    case kUnableToGetIssuerCertLocally:
    case kUnableToVerifyLeafSignature:
    case kCertUntrusted:
    case kInvalidCa:
      return TlsProblem::kUntrustedCertificate;
    case kCertSignatureFailure:
      return TlsProblem::kOtherVerification;
    case kX509Ok:
    case kX509Unspecified:
      break;
    default:
      return TlsProblem::kOtherVerification;
  }
  // libcurl 7.88 checks the host name itself once the chain verified (openssl.c
  // Curl_ossl_verifyhost), leaving no X509 result; all its messages for it end in "target host name".
  if (contains(text, "host name")) return TlsProblem::kHostMismatch;
  // SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED is also reported as a verification failure, but it is the
  // upstream saying that keyway's own certificate expired.
  if (clientCertificateAlert(text)) return TlsProblem::kClientCertRefused;
  return TlsProblem::kOtherVerification;
}

// CURLOPT_SSL_CTX_FUNCTION: libcurl makes an SSL_CTX per new connection; it gets the shared,
// already parsed trust store instead of loading the CA bundle.
CURLcode onSslContext(CURL*, void* ssl_ctx, void* userp) {
  auto* store = static_cast<X509_STORE*>(userp);
  if (X509_STORE_up_ref(store) != 1) return CURLE_OUT_OF_MEMORY;
  auto* ctx = static_cast<SSL_CTX*>(ssl_ctx);
  SSL_CTX_set_cert_store(ctx, store);  // takes the reference
  // A pooled connection waits idle most of its life; OpenSSL then gives back its ~50 KiB of read
  // and write buffers instead of holding them per connection (a thousand connections to a slow
  // upstream otherwise cost ~100 KiB each).
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  return CURLE_OK;
}

}  // namespace

CURLcode setUpstreamTls(CURL* easy, const core::UpstreamTls* tls, void* trust_store) {
  CURLcode rc = CURLE_OK;
  auto set = [&rc, easy](CURLoption option, auto value) {
    if (rc == CURLE_OK) rc = curl_easy_setopt(easy, option, value);
  };
  // docs/config.md: verification is never off. Set explicitly rather than left to libcurl's defaults.
  set(CURLOPT_SSL_VERIFYPEER, 1L);
  set(CURLOPT_SSL_VERIFYHOST, 2L);
  if (trust_store != nullptr) {
    // Both cleared: with either set, libcurl 7.88 would load it into the store at every
    // connection (openssl.c populate_x509_store).
    set(CURLOPT_CAINFO, static_cast<const char*>(nullptr));
    set(CURLOPT_CAPATH, static_cast<const char*>(nullptr));
    set(CURLOPT_SSL_CTX_FUNCTION, &onSslContext);
    set(CURLOPT_SSL_CTX_DATA, trust_store);
  }
  if (tls == nullptr) return rc;
  if (!tls->ca_file.empty() && trust_store == nullptr) {
    set(CURLOPT_CAINFO, tls->ca_file.c_str());
    // Debian's libcurl also trusts the directory /etc/ssl/certs by default (--with-ca-path); the
    // upstream's CA file replaces the system's trust, so the directory goes too.
    set(CURLOPT_CAPATH, static_cast<const char*>(nullptr));
    // A CA store libcurl cached before these settings were loaded may hold the file's old content
    // (rewritten in place, then SIGHUP): it counts as expired. Stores cached since stay valid.
    const auto loaded_for =
        std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - tls->loaded_at);
    set(CURLOPT_CA_CACHE_TIMEOUT, std::clamp<long>(static_cast<long>(loaded_for.count()), 0L, kDefaultCaCacheSeconds));
  }
  if (!tls->client_cert.empty()) {
    set(CURLOPT_SSLCERT, tls->client_cert.c_str());
    set(CURLOPT_SSLCERTTYPE, "PEM");
    set(CURLOPT_SSLKEY, tls->client_key.c_str());
    set(CURLOPT_SSLKEYTYPE, "PEM");
  }
  return rc;
}

std::optional<core::TlsProblem> tlsProblemOf(CURL* easy, CURLcode code, std::string_view error_text,
                                             bool response_started) {
  switch (code) {
    case CURLE_PEER_FAILED_VERIFICATION:
      return verificationProblem(easy, error_text);
    case CURLE_SSL_CACERT_BADFILE:
      return TlsProblem::kCaFileUnusable;
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
      return TlsProblem::kOtherVerification;
    case CURLE_SSL_CERTPROBLEM:
      return TlsProblem::kClientCertUnusable;
    case CURLE_SSL_CLIENTCERT:  // 7.88: a TLS 1.3 "certificate required" alert in the handshake
      return TlsProblem::kClientCertRefused;
    case CURLE_SSL_CONNECT_ERROR:
      return clientCertificateAlert(error_text) ? TlsProblem::kClientCertRefused : TlsProblem::kHandshake;
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_SSL_SHUTDOWN_FAILED:
    case CURLE_USE_SSL_FAILED:
      return TlsProblem::kHandshake;
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
      // A TLS 1.3 server checks the client certificate after the client finished the handshake:
      // its refusal arrives as an alert on the first read or write of the request.
      if (!response_started && contains(error_text, "SSL routines") && contains(error_text, " alert ")) {
        return clientCertificateAlert(error_text) ? TlsProblem::kClientCertRefused : TlsProblem::kHandshake;
      }
      return std::nullopt;
    default:
      return std::nullopt;
  }
}

}  // namespace keyway::daemon
