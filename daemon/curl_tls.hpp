// TLS to upstreams in libcurl terms: the per-transfer options of an upstream's `tls:` settings and
// the reading of a failed transfer's result as a core::TlsProblem. Shared by CurlUpstreamClient and
// keywayctl's schema fetch, so both trust, present and report the same.
#pragma once

#include <curl/curl.h>

#include <optional>
#include <string_view>

#include "core/upstream_tls.hpp"

namespace keyway::daemon {

// Sets on `easy`: verification of the peer and of its host name (always, whatever `tls` says),
// and, from `tls` (null = the system's CAs, no client certificate), the CA file that replaces the
// system's CA bundle and directory and the PEM client certificate and key for mutual TLS.
// libcurl copies the strings. Returns the first failing setopt's code.
//
// Connection reuse: libcurl reuses a pooled connection (and resumes a TLS session) only when the
// new transfer's CA file, CA directory and client certificate paths equal those the connection
// was made with (lib/url.c ConnectionExists() -> lib/vtls/vtls.c Curl_ssl_config_matches() in
// 7.88), so a request never rides a connection made under other settings (e.g. before a reload).
// The client key's path is not compared: it belongs to the certificate, whose path is.
//
// `trust_store` (an X509_STORE*, may be null): the CA store to verify against, already parsed
// (daemon/tls_trust.hpp). Given, it is handed to each new connection's SSL_CTX and libcurl loads
// no CA file or directory itself (with OpenSSL 3 that costs ~35 ms per connection); its owner
// must keep it alive until the transfer ends (connections take their own reference). Null, the
// CA file (or the system's default) is given to libcurl, for one-shot callers.
CURLcode setUpstreamTls(CURL* easy, const core::UpstreamTls* tls, void* trust_store = nullptr);

// What a transfer that ended with `code` says about TLS: the problem, or nullopt when it was not
// a TLS failure. `easy` (may be null) is the handle that ran it (its X509 verification result is
// read); `error_text` is what libcurl wrote to its error buffer. Send and receive errors count as
// TLS only when they carry an alert the upstream sent (TLS 1.3 servers refuse a client
// certificate after the handshake); pass response_started = true once response bytes arrived, and
// those never do.
std::optional<core::TlsProblem> tlsProblemOf(CURL* easy, CURLcode code, std::string_view error_text,
                                             bool response_started = false);

}  // namespace keyway::daemon
