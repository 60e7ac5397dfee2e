// keywayctl's synchronous HTTP on a libcurl easy handle: BOSA discovery (`schemas refresh`), the
// daemon's status (`status`, `doctor`) and doctor's upstream probes. keywayd never uses it (its
// exchanges go through CurlUpstreamClient).
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/result.hpp"
#include "core/secret.hpp"
#include "core/upstream_tls.hpp"

namespace keyway::daemon {

struct HttpFetchOptions {
  std::chrono::milliseconds connect_timeout{5000};
  std::chrono::milliseconds total_timeout{30000};
  size_t max_body_bytes = 1u << 20;             // more: kPayloadTooLarge
  std::shared_ptr<const core::UpstreamTls> tls;  // the upstream's `tls:` (null: system CAs)
  std::vector<std::string> headers;            // "Name: value", after Accept and User-Agent
  // A credential header ("Name: value", the value being the secret): handed to libcurl only,
  // its copies wiped after the transfer; never in an error message.
  const core::SecretString* credential_header = nullptr;
  // Connect (TCP, and the TLS handshake with verification for https) and send nothing.
  bool connect_only = false;
};

struct HttpFetchResponse {
  long status = 0;           // 0 with connect_only
  std::string content_type;  // empty when the server sent none
  std::string body;
};

// How a fetch ended: `error` when no HTTP answer came (then `tls_problem` says why when TLS
// failed), else `response`, whatever its status.
struct HttpFetchResult {
  std::optional<core::Error> error;
  std::optional<core::TlsProblem> tls_problem;
  HttpFetchResponse response;
};

// GET `url` (or only connect to it): sends `Accept: application/json`, a User-Agent and
// `options.headers`. No redirects, no proxy from the environment, no decompression, http/https
// only, TLS always verified (with the upstream's CA file and client certificate from
// `options.tls`, as keywayd does).
// Errors (the message names the URL and says what happened, a certificate in general words only):
//   kBadRequest           the URL is not http(s) or does not parse
//   kUpstreamUnreachable  DNS, connect, TLS or connection-reset failures, a garbled response
//   kUpstreamTimeout      connect or total timeout
//   kPayloadTooLarge      the body exceeds max_body_bytes (the transfer is stopped there)
//   kInternal             libcurl could not start or set up TLS
// Blocking; thread-safe (one easy handle per call). Never throws.
HttpFetchResult httpFetch(const std::string& url, const HttpFetchOptions& options = {});

}  // namespace keyway::daemon
