// The worker's exchanges: starting one on a pool (options set once per handle, then per
// exchange), resuming, finishing, and keeping easy handles for reuse.
#include <algorithm>

#include "core/text.hpp"
#include "daemon/curl_tls.hpp"
#include "daemon/curl_worker.hpp"

namespace keyway::daemon {

using namespace curl;  // NOLINT: the worker is curl's side of the client
using core::UpstreamFailure;
using core::startsWithNoCase;

void CurlUpstreamClient::Worker::startTransfer(const std::shared_ptr<Transfer>& transfer) {
  core::UpstreamOutcome outcome;
  if (transfer->cancel_requested.load(std::memory_order_acquire)) {
    outcome.failure = UpstreamFailure::kCancelled;
    outcome.message = "cancelled";
    finish(transfer, std::move(outcome));
    return;
  }
  if (std::string why = invalidRequestReason(transfer->request); !why.empty()) {
    outcome.failure = UpstreamFailure::kProtocol;
    outcome.message = "invalid upstream request: " + why;
    finish(transfer, std::move(outcome));
    return;
  }
  if (startsWithNoCase(transfer->request.url, "https://")) {
    auto trust = trust_->get(transfer->request.tls ? transfer->request.tls->ca_file : std::string());
    if (!trust.ok()) {
      outcome.failure = UpstreamFailure::kTls;
      outcome.tls_problem = core::TlsProblem::kCaFileUnusable;
      outcome.message = "TLS certificate verification failed: " +
                        std::string(core::tlsProblemText(core::TlsProblem::kCaFileUnusable));
      finish(transfer, std::move(outcome));
      return;
    }
    transfer->trust = std::move(trust.value());
  }
  Pool& pool = poolFor(transfer->request, transfer->trust);
  transfer->pool = &pool;  // configure() and the callbacks find the pool here; not yet added
  EasyPtr easy = acquireEasy(pool);
  if (!easy || !configure(*transfer, easy.get())) {
    transfer->pool = nullptr;
    outcome.failure = UpstreamFailure::kProtocol;
    outcome.message = "cannot set up the upstream request (out of memory?)";
    finish(transfer, std::move(outcome));
    return;
  }
  transfer->easy = std::move(easy);
  active_.emplace(transfer.get(), transfer);
  if (curl_multi_add_handle(pool.multi.get(), transfer->easy.get()) != CURLM_OK) {
    transfer->pool = nullptr;
    outcome.failure = UpstreamFailure::kProtocol;
    outcome.message = "cannot add the upstream request to the transfer loop";
    finish(transfer, std::move(outcome));
    return;
  }
  ++pool.active;
  const auto budget = transfer->request.total_timeout.count() > 0 ? transfer->request.total_timeout
                                                                   : transfer->request.connect_timeout;
  if (!transfer->has_connection && budget.count() > 0) {
    transfer->wait_it = waits_.emplace(transfer->started_at + budget, transfer.get());
    transfer->wait_armed = true;
  }
}

bool CurlUpstreamClient::Worker::setPoolOptions(Pool& pool, CURL* easy) {
  CURLcode rc = CURLE_OK;
  auto set = [&rc, easy](CURLoption option, auto value) {
    if (rc == CURLE_OK) rc = curl_easy_setopt(easy, option, value);
  };
  set(CURLOPT_CURLU, pool.base.get());
  set(CURLOPT_PATH_AS_IS, 1L);
  set(CURLOPT_PROTOCOLS_STR, "http,https");
  set(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  set(CURLOPT_FOLLOWLOCATION, 0L);
  // Never a proxy from the environment; NOPROXY too, or libcurl still reads no_proxy per request.
  set(CURLOPT_PROXY, "");
  set(CURLOPT_NOPROXY, "");
  set(CURLOPT_NOSIGNAL, 1L);
  set(CURLOPT_HTTP_CONTENT_DECODING, 0L);
  set(CURLOPT_HTTP_TRANSFER_DECODING, 1L);
  set(CURLOPT_HTTP09_ALLOWED, 0L);
  set(CURLOPT_TCP_NODELAY, 1L);
  set(CURLOPT_TCP_KEEPALIVE, 1L);
  set(CURLOPT_TCP_KEEPIDLE, static_cast<long>(std::max<int64_t>(1, options_.tcp_keepalive_idle.count())));
  set(CURLOPT_TCP_KEEPINTVL, static_cast<long>(std::max<int64_t>(1, options_.tcp_keepalive_interval.count())));
  if (options_.http2) {
    set(CURLOPT_HTTP_VERSION, static_cast<long>(CURL_HTTP_VERSION_2TLS));
    // Over TLS, wait for a connection being set up to say (ALPN) whether it multiplexes rather
    // than opening one connection per request of a burst. Not for http://, which never
    // multiplexes here: 7.88 would still hold a burst back until the first connect finished.
    if (pool.https) set(CURLOPT_PIPEWAIT, 1L);
  } else {
    set(CURLOPT_HTTP_VERSION, static_cast<long>(CURL_HTTP_VERSION_1_1));
  }
  // The trust anchors come pre-parsed (daemon/tls_trust.hpp): with CAINFO or CAPATH set,
  // libcurl would parse the CA bundle again for every new connection.
  if (rc == CURLE_OK) rc = setUpstreamTls(easy, pool.tls.get(), pool.trust.get());
  set(CURLOPT_SHARE, pool.share.get());
  set(CURLOPT_OPENSOCKETFUNCTION, &onOpenSocket);
  set(CURLOPT_OPENSOCKETDATA, static_cast<void*>(&pool.socket_counts));
  set(CURLOPT_CLOSESOCKETFUNCTION, &onCloseSocket);
  set(CURLOPT_CLOSESOCKETDATA, static_cast<void*>(&pool.socket_counts));
  set(CURLOPT_PREREQFUNCTION, &Worker::onConnectionReady);
  set(CURLOPT_HEADERFUNCTION, &onHeaderLine);
  set(CURLOPT_WRITEFUNCTION, &onBodyData);
  return rc == CURLE_OK;
}

bool CurlUpstreamClient::Worker::configure(Transfer& transfer, CURL* easy) {
  const core::UpstreamRequest& request = transfer.request;
  const std::string& method = request.method;
  transfer.max_header_bytes = options_.max_header_bytes;

  // Headers exactly as given. libcurl's own defaults are suppressed with "Name:" entries unless
  // the caller supplied that header; "Name;" is libcurl's syntax for an empty value. The body
  // length is libcurl's to state (a stale Content-Length would desynchronise the connection).
  bool has_accept = false;
  bool has_expect = false;
  bool has_content_type = false;
  bool has_content_length = false;
  SlistPtr list;
  auto append = [&list](const std::string& text) {
    // curl_slist_append returns the (unchanged) head, or NULL and leaves the list intact.
    curl_slist* head = curl_slist_append(list.get(), text.c_str());
    if (!head) return false;
    list.release();
    list.reset(head);
    return true;
  };
  std::string line;
  for (const auto& header : request.headers) {
    if (core::iequals(header.name, "Content-Length")) {
      has_content_length = true;
      continue;
    }
    if (core::iequals(header.name, "Transfer-Encoding")) continue;
    has_accept = has_accept || core::iequals(header.name, "Accept");
    has_expect = has_expect || core::iequals(header.name, "Expect");
    has_content_type = has_content_type || core::iequals(header.name, "Content-Type");
    line.assign(header.name);
    if (header.value.empty()) {
      line += ';';
    } else {
      line += ": ";
      line += header.value;
    }
    if (!append(line)) return false;
  }
  const bool is_head = method == "HEAD";
  const bool has_body = !is_head && (!request.body.empty() || method == "POST" || method == "PUT" ||
                                     method == "PATCH" || has_content_length);
  if (!has_accept && !append("Accept:")) return false;
  // libcurl adds Expect: 100-continue only to a body (of more than 1 MiB in 7.88).
  if (has_body && !has_expect && !append("Expect:")) return false;
  if (has_body && !has_content_type && !append("Content-Type:")) return false;
  transfer.header_list = std::move(list);

  CURLcode rc = CURLE_OK;
  auto set = [&rc, easy](CURLoption option, auto value) {
    if (rc == CURLE_OK) rc = curl_easy_setopt(easy, option, value);
  };
  const auto clampMs = [](std::chrono::milliseconds ms) {
    return static_cast<long>(std::max<int64_t>(0, ms.count()));
  };
  // libcurl takes scheme, host and port from the pool's parsed origin; the target goes out as
  // given: even with PATH_AS_IS, 7.88 would rewrite some targets taken from a URL (raw non-ASCII
  // path bytes percent-encoded by curl_url_get(CURLU_URLENCODE) in url.c, a '#...' tail dropped).
  transfer.request_target = splitUrl(request.url).target;
  set(CURLOPT_REQUEST_TARGET, transfer.request_target.c_str());
  set(CURLOPT_CONNECTTIMEOUT_MS, clampMs(request.connect_timeout));
  set(CURLOPT_TIMEOUT_MS, clampMs(request.total_timeout));
  set(CURLOPT_PRIVATE, static_cast<void*>(&transfer));
  set(CURLOPT_PREREQDATA, static_cast<void*>(&transfer));
  set(CURLOPT_ERRORBUFFER, transfer.error_buffer);
  set(CURLOPT_HEADERDATA, static_cast<void*>(&transfer));
  set(CURLOPT_WRITEDATA, static_cast<void*>(&transfer));
  set(CURLOPT_HTTPHEADER, transfer.header_list.get());
  // The method, all of it every time: a kept handle still has the previous exchange's.
  if (is_head) {
    set(CURLOPT_NOBODY, 1L);
    set(CURLOPT_CUSTOMREQUEST, static_cast<const char*>(nullptr));
  } else if (has_body) {
    set(CURLOPT_NOBODY, 0L);
    // libcurl reads the body straight from the request's string, which lives in `transfer`
    // (never moved while the transfer runs).
    set(CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(request.body.size()));
    set(CURLOPT_POSTFIELDS, request.body.data());
    set(CURLOPT_CUSTOMREQUEST, method != "POST" ? method.c_str() : static_cast<const char*>(nullptr));
  } else {
    set(CURLOPT_HTTPGET, 1L);
    set(CURLOPT_CUSTOMREQUEST, method != "GET" ? method.c_str() : static_cast<const char*>(nullptr));
  }
  return rc == CURLE_OK;
}

void CurlUpstreamClient::Worker::resumeTransfer(const std::shared_ptr<Transfer>& transfer) {
  if (transfer->finished.load(std::memory_order_relaxed) || !transfer->easy || !transfer->paused) {
    return;
  }
  transfer->paused = false;
  // May hand the held-back data to onBodyData right here (which may pause again).
  const CURLcode rc = curl_easy_pause(transfer->easy.get(), CURLPAUSE_CONT);
  if (auto* pool = static_cast<Pool*>(transfer->pool); pool != nullptr && !pool->dirty) {
    pool->dirty = true;
    dirty_pools_.push_back(pool);
  }
  if (rc != CURLE_OK) finishWithCode(transfer, rc);
}

void CurlUpstreamClient::Worker::finishWithCode(const std::shared_ptr<Transfer>& transfer, CURLcode code) {
  core::UpstreamOutcome outcome;
  long request_size = 0;
  if (transfer->easy) curl_easy_getinfo(transfer->easy.get(), CURLINFO_REQUEST_SIZE, &request_size);
  classify(*transfer, code, request_size > 0, outcome);
  finish(transfer, std::move(outcome));
}

void CurlUpstreamClient::Worker::finish(const std::shared_ptr<Transfer>& transfer, core::UpstreamOutcome outcome) {
  if (transfer->finished.exchange(true, std::memory_order_acq_rel)) return;
  disarmWait(*transfer);
  outcome.headers_received = transfer->headers_delivered;
  if (transfer->easy) {
    long connects = 0;
    long request_size = 0;
    curl_easy_getinfo(transfer->easy.get(), CURLINFO_NUM_CONNECTS, &connects);
    curl_easy_getinfo(transfer->easy.get(), CURLINFO_REQUEST_SIZE, &request_size);
    outcome.connection_reused = connects == 0 && (request_size > 0 || transfer->headers_delivered);
    if (transfer->headers_delivered) {
      if (auto* pool = static_cast<Pool*>(transfer->pool)) noteProtocol(*pool, transfer->easy.get());
    }
    if (connects > 0) counters_->connections_opened.fetch_add(static_cast<uint64_t>(connects));
    if (outcome.connection_reused) counters_->connections_reused.fetch_add(1);
    releaseEasy(*transfer);
  }
  active_.erase(transfer.get());
  outcome.elapsed = std::chrono::duration_cast<std::chrono::microseconds>(SteadyClock::now() - transfer->started_at);
  counters_->in_flight.fetch_sub(1);
  // Drop what the exchange held (body, headers, observer) even if the caller keeps its handle;
  // the observer lives until onComplete returns.
  std::shared_ptr<core::UpstreamObserver> observer = std::move(transfer->observer);
  transfer->request = core::UpstreamRequest{};
  transfer->headers = core::Headers{};
  transfer->reason = std::string{};
  if (observer) {
    try {
      observer->onComplete(outcome);
    } catch (...) {
      // It must not unwind through the event loop; the exchange is over either way.
      counters_->observerFailed("onComplete");
    }
  }
}

EasyPtr CurlUpstreamClient::Worker::acquireEasy(Pool& pool) {
  if (!pool.idle.empty()) {
    EasyPtr easy = std::move(pool.idle.back());
    pool.idle.pop_back();
    return easy;
  }
  EasyPtr easy(curl_easy_init());
  if (easy && !setPoolOptions(pool, easy.get())) easy.reset();
  return easy;
}

void CurlUpstreamClient::Worker::releaseEasy(Transfer& transfer) {
  auto* pool = static_cast<Pool*>(transfer.pool);
  EasyPtr easy = std::move(transfer.easy);
  if (pool == nullptr) return;  // never configured for a pool: not worth keeping
  curl_multi_remove_handle(pool->multi.get(), easy.get());
  transfer.pool = nullptr;
  --pool->active;
  // Pointers into the transfer must not outlive it in a kept handle: the next exchange sets its
  // own before it runs, and nothing reads them in between (nor curl_easy_cleanup).
  curl_easy_setopt(easy.get(), CURLOPT_HTTPHEADER, static_cast<curl_slist*>(nullptr));
  curl_easy_setopt(easy.get(), CURLOPT_ERRORBUFFER, static_cast<char*>(nullptr));
  transfer.header_list.reset();
  if (pool->idle.size() < options_.max_idle_handles) pool->idle.push_back(std::move(easy));
}

}  // namespace keyway::daemon
