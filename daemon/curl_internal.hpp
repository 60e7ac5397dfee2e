// libcurl's side of CurlUpstreamClient, internal to daemon/curl_*.cpp: the RAII handles, one
// exchange (Transfer) and the command mailbox, the response callbacks, and the small parsers the
// client needs. Not for use outside the client's files.
#pragma once

#include <curl/curl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "core/upstream_client.hpp"
#include "daemon/curl_upstream_client.hpp"
#include "daemon/event_mailbox.hpp"
#include "daemon/owned_fd.hpp"
#include "daemon/tls_trust.hpp"

namespace keyway::daemon::curl {

using core::UpstreamFailure;
using SteadyClock = std::chrono::steady_clock;

struct EasyDeleter {
  void operator()(CURL* easy) const { curl_easy_cleanup(easy); }
};
struct MultiDeleter {
  void operator()(CURLM* multi) const { curl_multi_cleanup(multi); }
};
struct ShareDeleter {
  void operator()(CURLSH* share) const { curl_share_cleanup(share); }
};
struct SlistDeleter {
  void operator()(curl_slist* list) const { curl_slist_free_all(list); }
};
using EasyPtr = std::unique_ptr<CURL, EasyDeleter>;
using MultiPtr = std::unique_ptr<CURLM, MultiDeleter>;
using SharePtr = std::unique_ptr<CURLSH, ShareDeleter>;
using SlistPtr = std::unique_ptr<curl_slist, SlistDeleter>;

// Resource exhaustion while building the client's own machinery (not per request) leaves no
// degraded mode worth having: say so on one line and stop.
[[noreturn]] void fatal(const char* what);

// curl_global_init, once per process.
void globalInit();

// "HTTP/<version> <3 digits>[ <reason>]". HTTP/2 and later carry no reason phrase (libcurl
// synthesises "HTTP/2 200 "), so theirs is empty; HTTP/1.x keeps the phrase byte for byte.
bool parseStatusLine(std::string_view line, int& status, std::string& reason);

// An absolute http(s) URL cut into its origin ("scheme://host[:port]") and its request-target
// (everything after the authority, "/" first).
struct UrlParts {
  std::string_view origin;
  std::string target;
};
UrlParts splitUrl(std::string_view url);

struct UrlDeleter {
  void operator()(CURLU* url) const { curl_url_cleanup(url); }
};
using UrlPtr = std::unique_ptr<CURLU, UrlDeleter>;

class NullObserver final : public core::UpstreamObserver {
 public:
  void onHeaders(int, std::string_view, core::Headers) override {}
  bool onBody(std::string_view) override { return true; }
  void onComplete(const core::UpstreamOutcome&) override {}
};

class Transfer;

// A liveness probe (CurlUpstreamClient::probeIoThreads): each I/O thread counts itself in.
struct Probe {
  std::mutex mutex;
  std::condition_variable cv;
  size_t answered = 0;
};

enum class CommandKind { kStart, kCancel, kResume, kProbe };
struct Command {
  CommandKind kind;
  std::shared_ptr<Transfer> transfer;  // null for kProbe
  std::shared_ptr<Probe> probe = nullptr;  // kProbe only
};

using Mailbox = EventMailbox<Command>;

// One exchange. The public UpstreamCall face is thread-safe; every other member belongs to the
// I/O thread that runs it.
class Transfer final : public core::UpstreamCall, public std::enable_shared_from_this<Transfer> {
 public:
  Transfer(core::UpstreamRequest req, std::shared_ptr<core::UpstreamObserver> obs,
           std::shared_ptr<Mailbox> box)
      : request(std::move(req)), observer(std::move(obs)), mailbox_(std::move(box)) {}

  void cancel() override {
    if (finished.load(std::memory_order_acquire)) return;
    cancel_requested.store(true, std::memory_order_release);
    mailbox_->post(Command{CommandKind::kCancel, shared_from_this()});
  }
  void resume() override {
    if (finished.load(std::memory_order_acquire)) return;
    mailbox_->post(Command{CommandKind::kResume, shared_from_this()});
  }

  // Thread-shared.
  std::atomic<bool> cancel_requested{false};
  std::atomic<bool> finished{false};
  const SteadyClock::time_point started_at = SteadyClock::now();

  // I/O thread only.
  core::UpstreamRequest request;
  void* pool = nullptr;  // the Worker::Pool whose multi handle runs it, while it runs
  // Until libcurl gives it a connection (CURLOPT_PREREQFUNCTION), a transfer may wait in its
  // multi's queue (pool at its limit, or a first TLS connection finding out whether the upstream
  // multiplexes), where libcurl 7.88 applies none of its timeouts: the worker does
  // (Worker::waits_).
  SharedTrustStore trust;  // https only: the CA store its connection verifies against
  bool has_connection = false;
  bool wait_armed = false;
  std::multimap<SteadyClock::time_point, Transfer*>::iterator wait_it;
  std::shared_ptr<core::UpstreamObserver> observer;
  EasyPtr easy;
  SlistPtr header_list;
  std::string request_target;  // CURLOPT_REQUEST_TARGET points here
  char error_buffer[CURL_ERROR_SIZE] = {};
  size_t max_header_bytes = 0;
  // Response state.
  int status = 0;
  std::string reason;
  std::string content_length;  // the response's Content-Length, to refuse a conflicting second one
  core::Headers headers;
  bool in_header_block = false;
  bool interim = false;  // the current header block belongs to a 1xx response
  bool headers_delivered = false;
  size_t header_bytes = 0;
  size_t body_bytes = 0;
  // After a pause, libcurl hands the paused callback's bytes over again on resume; those were
  // already given to the observer (sendf.c chop_write()/pausewrite()).
  size_t redelivered_bytes_to_skip = 0;
  bool paused = false;
  UpstreamFailure local_failure = UpstreamFailure::kNone;
  std::string local_message;

 private:
  std::shared_ptr<Mailbox> mailbox_;
};

// Why `request` cannot be sent (a method or header name that is not a token, CR/LF/NUL or a
// space in the URL or a value, a scheme other than http(s)), or "" when it can.
std::string invalidRequestReason(const core::UpstreamRequest& request);

// What a pool's sockets count into: the client's total and the pool's gauge.
struct SocketCounts {
  std::atomic<int64_t>* all = nullptr;
  PoolGauge* pool = nullptr;
  // Tells the owning worker that a connection socket opened or closed (its epoll bookkeeping
  // follows the socket's life, not curl's interest in it).
  void* owner = nullptr;
  void (*opened)(void* owner, curl_socket_t fd) = nullptr;
  void (*closed)(void* owner, curl_socket_t fd) = nullptr;
};

// libcurl's socket open/close hooks (clientp: the pool's SocketCounts), to count the upstream
// sockets open, idle pooled connections included (libcurl 7.88 reports no such number).
// libcurl stores the close hook with the connection when it creates it, so a pooled connection
// closed later by another transfer (or by curl_multi_cleanup) is still counted; the counts live
// in the pool, which outlives its connections.
curl_socket_t onOpenSocket(void* clientp, curlsocktype, curl_sockaddr* address);
int onCloseSocket(void* clientp, curl_socket_t fd);

// The response callbacks (CURLOPT_HEADERFUNCTION, CURLOPT_WRITEFUNCTION); userp is the Transfer.
size_t onHeaderLine(char* data, size_t size, size_t count, void* userp);
size_t onBodyData(char* data, size_t size, size_t count, void* userp);

// What libcurl's result code (and the transfer's own findings) mean for the caller.
void classify(const Transfer& transfer, CURLcode code, bool request_sent, core::UpstreamOutcome& outcome);

}  // namespace keyway::daemon::curl
