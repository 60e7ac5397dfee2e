// Synchronous GET on a libcurl easy handle (see http_fetch.hpp).
#include "daemon/http_fetch.hpp"

#include <curl/curl.h>

#include <cstring>
#include <mutex>

#include "daemon/curl_tls.hpp"

namespace keyway::daemon {

using core::Error;
using core::ErrorCode;

namespace {

struct EasyDeleter {
  void operator()(CURL* easy) const { curl_easy_cleanup(easy); }
};
// Wipes every header line before freeing it: one of them may carry a credential.
struct SlistDeleter {
  void operator()(curl_slist* list) const {
    for (curl_slist* node = list; node != nullptr; node = node->next) {
      if (node->data != nullptr) core::secureWipe(node->data, std::strlen(node->data));
    }
    curl_slist_free_all(list);
  }
};
using EasyPtr = std::unique_ptr<CURL, EasyDeleter>;
using SlistPtr = std::unique_ptr<curl_slist, SlistDeleter>;

bool globalInit() {
  static std::once_flag once;
  static bool ok = false;
  std::call_once(once, [] { ok = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK; });
  return ok;
}

struct Sink {
  std::string body;
  size_t limit = 0;
  bool overflow = false;
};

size_t onData(char* data, size_t size, size_t count, void* user) {
  auto* sink = static_cast<Sink*>(user);
  const size_t n = size * count;
  if (sink->body.size() + n > sink->limit) {
    sink->overflow = true;
    return 0;  // CURLE_WRITE_ERROR: stop reading a body we would refuse anyway
  }
  sink->body.append(data, n);
  return n;
}

bool append(SlistPtr& list, const char* line) {
  curl_slist* next = curl_slist_append(list.get(), line);
  if (next == nullptr) return false;
  (void)list.release();  // now owned through `next`
  list.reset(next);
  return true;
}

HttpFetchResult failed(ErrorCode code, std::string message) {
  HttpFetchResult r;
  r.error = Error::make(code, std::move(message));
  return r;
}

}  // namespace

HttpFetchResult httpFetch(const std::string& url, const HttpFetchOptions& options) {
  if (url.compare(0, 7, "http://") != 0 && url.compare(0, 8, "https://") != 0) {
    return failed(ErrorCode::kBadRequest, "cannot fetch " + url + ": not an http(s) URL");
  }
  if (!globalInit()) return failed(ErrorCode::kInternal, "cannot fetch " + url + ": libcurl failed to start");
  EasyPtr easy(curl_easy_init());
  if (!easy) return failed(ErrorCode::kInternal, "cannot fetch " + url + ": out of memory");
  SlistPtr headers;
  bool built = append(headers, "Accept: application/json") && append(headers, "User-Agent: keywayctl/" KEYWAY_VERSION);
  for (const auto& h : options.headers) built = built && append(headers, h.c_str());
  if (options.credential_header != nullptr) {
    // NUL-terminated copy for libcurl (which copies it again), wiped when it goes out of scope.
    core::SecretString line(options.credential_header->view());
    built = built && append(headers, line.data());
  }
  if (!built) return failed(ErrorCode::kInternal, "cannot fetch " + url + ": out of memory");
  Sink sink;
  sink.limit = options.max_body_bytes;
  char errbuf[CURL_ERROR_SIZE] = {0};
  CURL* h = easy.get();
  curl_easy_setopt(h, CURLOPT_URL, url.c_str());
  curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
  // The environment's proxy settings are for people, not for a gateway talking to its upstream.
  curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(options.connect_timeout.count()));
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, static_cast<long>(options.total_timeout.count()));
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers.get());
  curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, static_cast<curl_off_t>(options.max_body_bytes));
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, onData);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &sink);
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
  if (options.connect_only) curl_easy_setopt(h, CURLOPT_CONNECT_ONLY, 1L);
  if (const CURLcode tls_rc = setUpstreamTls(h, options.tls.get()); tls_rc != CURLE_OK) {
    return failed(ErrorCode::kInternal,
                  "cannot fetch " + url + ": cannot set up TLS (" + curl_easy_strerror(tls_rc) + ")");
  }

  const CURLcode rc = curl_easy_perform(h);
  if (rc != CURLE_OK) {
    std::string detail = errbuf[0] != '\0' ? std::string(errbuf) : curl_easy_strerror(rc);
    if (!detail.empty() && detail.back() == '\n') detail.pop_back();
    ErrorCode code = ErrorCode::kUpstreamUnreachable;
    std::string what;
    const auto problem = tlsProblemOf(h, rc, detail);
    if (sink.overflow || rc == CURLE_FILESIZE_EXCEEDED) {
      code = ErrorCode::kPayloadTooLarge;
      what = "the body is larger than " + std::to_string(options.max_body_bytes) + " bytes";
    } else if (rc == CURLE_OPERATION_TIMEDOUT) {
      code = ErrorCode::kUpstreamTimeout;
      what = "timed out (" + detail + ")";
    } else if (problem && core::isCertificateVerification(*problem)) {
      // libcurl's text may quote the certificate: say why in keyway's words only.
      what = "TLS certificate verification failed: " + std::string(core::tlsProblemText(*problem));
    } else if (problem) {
      what = "TLS handshake failed: " + std::string(core::tlsProblemText(*problem)) + " (" + detail + ")";
    } else if (rc == CURLE_URL_MALFORMAT || rc == CURLE_UNSUPPORTED_PROTOCOL) {
      code = ErrorCode::kBadRequest;
      what = "invalid URL (" + detail + ")";
    } else {
      what = "unreachable (" + detail + ")";
    }
    HttpFetchResult r = failed(code, (options.connect_only ? "connect to " : "GET ") + url + ": " + what);
    r.tls_problem = problem;
    return r;
  }
  HttpFetchResult out;
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &out.response.status);
  char* content_type = nullptr;
  if (curl_easy_getinfo(h, CURLINFO_CONTENT_TYPE, &content_type) == CURLE_OK && content_type != nullptr) {
    out.response.content_type = content_type;
  }
  out.response.body = std::move(sink.body);
  return out;
}

}  // namespace keyway::daemon
