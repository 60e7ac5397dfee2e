// Trust stores for upstream TLS: parsed once per CA file, shared by every connection.
#include "daemon/tls_trust.hpp"

#include <curl/curl.h>
#include <openssl/err.h>

#include <memory>

namespace keyway::daemon {

namespace {

using core::Error;
using core::ErrorCode;

struct EasyCleanup {
  void operator()(CURL* easy) const { curl_easy_cleanup(easy); }
};

// The last OpenSSL error in words (the queue is emptied), or `fallback`.
std::string opensslReason(const char* fallback) {
  unsigned long last = 0;
  while (const unsigned long e = ERR_get_error()) last = e;
  if (last == 0) return fallback;
  const char* reason = ERR_reason_error_string(last);
  return reason != nullptr ? reason : fallback;
}

}  // namespace

core::Result<SharedTrustStore> TrustStores::load(const std::string& ca_file) {
  SharedTrustStore store(X509_STORE_new(), &X509_STORE_free);
  if (!store) return Error::make(ErrorCode::kInternal, "cannot allocate a TLS trust store");
  std::string file = ca_file;
  std::string dir;
  if (file.empty()) {
    // What libcurl would use without CURLOPT_CAINFO / CURLOPT_CAPATH (its build's defaults).
    std::unique_ptr<CURL, EasyCleanup> easy(curl_easy_init());
    char* info = nullptr;
    char* path = nullptr;
    if (easy && curl_easy_getinfo(easy.get(), CURLINFO_CAINFO, &info) == CURLE_OK && info != nullptr) file = info;
    if (easy && curl_easy_getinfo(easy.get(), CURLINFO_CAPATH, &path) == CURLE_OK && path != nullptr) dir = path;
    if (file.empty() && dir.empty()) {
      if (X509_STORE_set_default_paths(store.get()) != 1) {
        return Error::make(ErrorCode::kUnavailable,
                           "cannot load the system's CA certificates: " + opensslReason("unknown error"));
      }
      return store;
    }
  }
  ERR_clear_error();
  if (!file.empty() && X509_STORE_load_file(store.get(), file.c_str()) != 1) {
    return Error::make(ErrorCode::kUnavailable, "cannot load CA certificates from " + file + ": " +
                                                    opensslReason("no certificate could be read"));
  }
  // A hashed directory is searched lazily, certificate by certificate, at verification time.
  if (!dir.empty() && X509_STORE_load_path(store.get(), dir.c_str()) != 1) {
    ERR_clear_error();  // a missing default directory is not fatal: the bundle holds the same CAs
  }
  return store;
}

core::Result<SharedTrustStore> TrustStores::get(const std::string& ca_file) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = stores_.find(ca_file);
    if (it != stores_.end()) return it->second;
  }
  auto loaded = load(ca_file);
  if (!loaded.ok()) return loaded.error();
  std::lock_guard<std::mutex> lock(mutex_);
  // Another thread may have loaded it meanwhile: keep the first, so every connection shares one.
  auto [it, inserted] = stores_.emplace(ca_file, std::move(loaded.value()));
  return it->second;
}

core::Status TrustStores::reload(const std::vector<std::string>& ca_files) {
  std::vector<std::string> files = ca_files;
  files.insert(files.begin(), std::string());
  core::Status result = core::okStatus();
  for (const auto& file : files) {
    auto loaded = load(file);
    if (!loaded.ok()) {
      if (result.ok()) result = loaded.error();
      continue;
    }
    std::lock_guard<std::mutex> lock(mutex_);
    stores_[file] = std::move(loaded.value());
  }
  return result;
}

}  // namespace keyway::daemon
