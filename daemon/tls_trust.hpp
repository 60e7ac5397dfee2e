// Trust anchors for upstream TLS, loaded once and shared by every connection (OpenSSL).
#pragma once

#include <openssl/x509.h>

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/result.hpp"

namespace keyway::daemon {

using SharedTrustStore = std::shared_ptr<X509_STORE>;

// Why: with OpenSSL 3 parsing a CA bundle costs tens of milliseconds of CPU, and libcurl 7.88
// (with Debian's default CA directory set) parses it again for every new TLS connection, on the
// event loop: a burst of clients then stalls a reactor thread for a second. The stores here are
// parsed once and handed to each new connection's SSL_CTX (CURLOPT_SSL_CTX_FUNCTION).
//
// Thread-safe. Stores are immutable once loaded (OpenSSL locks their lookups) and live as long
// as a connection or a caller holds them.
class TrustStores {
 public:
  // The store for `ca_file`; "" = the CA bundle and directory libcurl was built with (Debian:
  // /etc/ssl/certs/ca-certificates.crt and /etc/ssl/certs). Loaded on first use (blocking)
  // unless preloaded. kUnavailable, naming the file and the reason, when it cannot be loaded.
  core::Result<SharedTrustStore> get(const std::string& ca_file);

  // Loads the default store and every file of `ca_files` anew (start-up and SIGHUP, off the
  // reactor threads), so that a changed CA file takes effect for new connections. A file that
  // fails to load is reported and keeps its previous store, if any.
  core::Status reload(const std::vector<std::string>& ca_files);

 private:
  static core::Result<SharedTrustStore> load(const std::string& ca_file);

  std::mutex mutex_;
  std::map<std::string, SharedTrustStore> stores_;
};

}  // namespace keyway::daemon
