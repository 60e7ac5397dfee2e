// One exchange in libcurl's terms: request checks, URL parts, the response callbacks and the
// classification of how an exchange ended (see curl_internal.hpp).
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <sys/socket.h>

#include "core/http_parser.hpp"
#include "core/text.hpp"
#include "daemon/curl_internal.hpp"
#include "daemon/curl_tls.hpp"

namespace keyway::daemon::curl {

using core::isToken;
using core::startsWithNoCase;
using core::trimOws;

namespace {

bool hasLineBreakOrNul(std::string_view s) {
  return s.find_first_of(std::string_view("\r\n\0", 3)) != std::string_view::npos;
}

}  // namespace

void globalInit() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) fatal("curl_global_init failed");
  });
}

bool parseStatusLine(std::string_view line, int& status, std::string& reason) {
  if (!startsWithNoCase(line, "HTTP/")) return false;
  const size_t sp = line.find(' ');
  if (sp == std::string_view::npos || line.size() < sp + 4) return false;
  const std::string_view version = line.substr(5, sp - 5);
  const std::string_view code = line.substr(sp + 1, 3);
  if (!std::all_of(code.begin(), code.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return false;
  }
  const std::string_view rest = line.substr(sp + 4);
  if (!rest.empty() && rest.front() != ' ') return false;
  status = (code[0] - '0') * 100 + (code[1] - '0') * 10 + (code[2] - '0');
  if (status < 100) return false;
  const bool has_phrase = !version.empty() && version.front() == '1';
  reason = has_phrase && !rest.empty() ? std::string(rest.substr(1)) : std::string();
  return true;
}

UrlParts splitUrl(std::string_view url) {
  const size_t scheme_end = url.find("://");
  const size_t authority = scheme_end == std::string_view::npos ? 0 : scheme_end + 3;
  const size_t target = url.find_first_of("/?#", authority);
  UrlParts parts;
  if (target == std::string_view::npos) {
    parts.origin = url;
    parts.target = "/";
    return parts;
  }
  parts.origin = url.substr(0, target);
  if (url[target] != '/') parts.target = "/";
  parts.target.append(url.substr(target));
  return parts;
}

std::string invalidRequestReason(const core::UpstreamRequest& request) {
  if (!isToken(request.method)) return "method is not an HTTP token";
  if (!startsWithNoCase(request.url, "http://") && !startsWithNoCase(request.url, "https://")) {
    return "URL scheme is not http or https";
  }
  if (hasLineBreakOrNul(request.url)) return "URL contains CR, LF or NUL";
  // The target goes on the request line as it is (CURLOPT_REQUEST_TARGET), so what would break
  // the line is refused here rather than by libcurl's URL parser.
  for (const char c : request.url) {
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7F) return "URL contains a space or a control character";
  }
  for (const auto& header : request.headers) {
    if (!isToken(header.name)) return "a header name is not an HTTP token";
    if (hasLineBreakOrNul(header.value)) return "header '" + header.name + "' contains CR, LF or NUL";
  }
  return {};
}

curl_socket_t onOpenSocket(void* clientp, curlsocktype, curl_sockaddr* address) {
  const int fd = ::socket(address->family, address->socktype | SOCK_CLOEXEC, address->protocol);
  if (fd < 0) return CURL_SOCKET_BAD;
  auto* counts = static_cast<SocketCounts*>(clientp);
  counts->all->fetch_add(1, std::memory_order_relaxed);
  const int64_t now_open = counts->pool->open.fetch_add(1, std::memory_order_relaxed) + 1;
  int64_t peak = counts->pool->peak.load(std::memory_order_relaxed);
  while (now_open > peak && !counts->pool->peak.compare_exchange_weak(peak, now_open, std::memory_order_relaxed)) {
  }
  if (counts->opened) counts->opened(counts->owner, fd);
  return fd;
}

int onCloseSocket(void* clientp, curl_socket_t fd) {
  auto* counts = static_cast<SocketCounts*>(clientp);
  counts->all->fetch_sub(1, std::memory_order_relaxed);
  counts->pool->open.fetch_sub(1, std::memory_order_relaxed);
  if (counts->closed) counts->closed(counts->owner, fd);
  return ::close(fd);
}

[[noreturn]] void fatal(const char* what) {
  std::fprintf(stderr, "keyway: upstream client: %s\n", what);
  std::abort();
}

void classify(const Transfer& transfer, CURLcode code, bool request_sent, core::UpstreamOutcome& outcome) {
  if (code == CURLE_OK) {
    if (!transfer.headers_delivered) {
      outcome.failure = UpstreamFailure::kProtocol;
      outcome.message = "upstream response had no header block";
    }
    return;
  }
  if (transfer.local_failure != UpstreamFailure::kNone) {
    outcome.failure = transfer.local_failure;
    outcome.message = transfer.local_message;
    return;
  }
  if (transfer.cancel_requested.load(std::memory_order_acquire)) {
    outcome.failure = UpstreamFailure::kCancelled;
    outcome.message = "cancelled";
    return;
  }
  // libcurl's error buffer is quoted only for connect and TLS failures, where it names host,
  // port or certificate; elsewhere it may quote response header values, which logs must not see.
  const std::string detail =
      transfer.error_buffer[0] != '\0' ? std::string(transfer.error_buffer) : curl_easy_strerror(code);
  if (auto problem = tlsProblemOf(transfer.easy.get(), code, transfer.error_buffer, transfer.headers_delivered)) {
    outcome.failure = UpstreamFailure::kTls;
    outcome.tls_problem = *problem;
    // A failed verification is said in general words only: libcurl's text may quote the
    // certificate ("certificate subject name '...' does not match target host name").
    outcome.message = core::isCertificateVerification(*problem)
                          ? "TLS certificate verification failed: " + std::string(core::tlsProblemText(*problem))
                          : "TLS handshake failed: " + detail;
    return;
  }
  switch (code) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
      outcome.failure = UpstreamFailure::kConnectFailed;
      outcome.message = "cannot connect to upstream: " + detail;
      return;
    case CURLE_OPERATION_TIMEDOUT:
      outcome.failure = UpstreamFailure::kTimeout;
      outcome.message = transfer.headers_delivered ? "upstream timed out while sending the body"
                        : request_sent             ? "upstream timed out before answering"
                                                   : "upstream timed out while connecting";
      return;
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_HTTP3:
      outcome.failure = UpstreamFailure::kSendFailed;
      outcome.message = std::string(transfer.headers_delivered ? "upstream connection failed mid-response: "
                                                               : "upstream connection failed: ") +
                        curl_easy_strerror(code);
      return;
    case CURLE_OUT_OF_MEMORY:
      // What libcurl 7.88 returns for a response header line over its fixed 100 KB limit
      // (CURL_MAX_HTTP_HEADER; 8.6 has CURLE_TOO_LARGE): the upstream's answer is unusable, the
      // connection did not fail. (A real allocation failure ends here too; it is as fatal.)
      outcome.failure = UpstreamFailure::kProtocol;
      outcome.message = "upstream response header too large (over libcurl's 100 KB per line)";
      return;
    case CURLE_URL_MALFORMAT:
      outcome.failure = UpstreamFailure::kProtocol;
      outcome.message = "invalid upstream request: URL does not parse";
      return;
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_UNSUPPORTED_PROTOCOL:  // also what 7.88 returns for a reply that is not HTTP/1+
    case CURLE_BAD_CONTENT_ENCODING:
    case CURLE_RANGE_ERROR:
    case CURLE_FILESIZE_EXCEEDED:
    case CURLE_WRITE_ERROR:
    case CURLE_ABORTED_BY_CALLBACK:
      outcome.failure = UpstreamFailure::kProtocol;
      outcome.message = std::string("upstream protocol error: ") + curl_easy_strerror(code);
      return;
    default:
      outcome.failure = request_sent ? UpstreamFailure::kSendFailed : UpstreamFailure::kConnectFailed;
      outcome.message = std::string("upstream exchange failed: ") + curl_easy_strerror(code);
      return;
  }
}

size_t onHeaderLine(char* data, size_t size, size_t count, void* userp) {
  auto* transfer = static_cast<Transfer*>(userp);
  const size_t length = size * count;
  if (transfer->headers_delivered) return length;  // trailers of a chunked body: not forwarded
  transfer->header_bytes += length;
  if (transfer->header_bytes > transfer->max_header_bytes) {
    transfer->local_failure = UpstreamFailure::kProtocol;
    transfer->local_message = "upstream response headers exceed " +
                              std::to_string(transfer->max_header_bytes) + " bytes";
    return 0;
  }
  std::string_view line(data, length);
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.remove_suffix(1);

  if (!transfer->in_header_block) {
    if (!parseStatusLine(line, transfer->status, transfer->reason)) {
      transfer->local_failure = UpstreamFailure::kProtocol;
      transfer->local_message = "upstream sent a malformed status line";
      return 0;
    }
    transfer->in_header_block = true;
    transfer->interim = transfer->status < 200;
    transfer->headers.clear();
    transfer->content_length.clear();
    return length;
  }
  if (line.empty()) {  // end of a header block
    transfer->in_header_block = false;
    if (transfer->interim) {
      transfer->headers.clear();
      return length;
    }
    transfer->headers_delivered = true;
    try {
      transfer->observer->onHeaders(transfer->status, transfer->reason, std::move(transfer->headers));
    } catch (...) {
      transfer->local_failure = UpstreamFailure::kProtocol;
      transfer->local_message = "response observer failed in onHeaders";
      return 0;
    }
    transfer->headers = core::Headers{};
    return length;
  }
  if (transfer->interim) return length;
  if (line.front() == ' ' || line.front() == '\t') {
    // Obsolete line folding (RFC 9112 §5.2): join with a single space.
    if (!transfer->headers.empty()) {
      transfer->headers.back().value += ' ';
      transfer->headers.back().value += trimOws(line);
    }
    return length;
  }
  const size_t colon = line.find(':');
  if (colon == std::string_view::npos || colon == 0) return length;  // not a field: dropped
  const std::string_view name = line.substr(0, colon);
  if (core::iequals(name, "Content-Length")) {
    // RFC 9112 §6.3: differing Content-Length values make the framing invalid; a proxy must
    // discard the response and answer 502 (libcurl 7.88 takes one of them). Identical repeats,
    // also as one comma-separated list, are allowed.
    std::string_view values = line.substr(colon + 1);
    while (!values.empty()) {
      const size_t comma = values.find(',');
      const std::string_view value = trimOws(values.substr(0, comma));
      values = comma == std::string_view::npos ? std::string_view() : values.substr(comma + 1);
      if (transfer->content_length.empty()) {
        transfer->content_length = std::string(value);
      } else if (transfer->content_length != value) {
        transfer->local_failure = UpstreamFailure::kProtocol;
        transfer->local_message = "upstream sent conflicting Content-Length values";
        return 0;
      }
    }
    return length;
  }
  if (core::iequals(name, "Transfer-Encoding")) return length;
  transfer->headers.push_back(core::Header{std::string(name), std::string(trimOws(line.substr(colon + 1)))});
  return length;
}

size_t onBodyData(char* data, size_t size, size_t count, void* userp) {
  auto* transfer = static_cast<Transfer*>(userp);
  const size_t length = size * count;
  if (transfer->cancel_requested.load(std::memory_order_relaxed)) return 0;  // stop reading now
  std::string_view chunk(data, length);
  if (transfer->redelivered_bytes_to_skip > 0) {
    const size_t skip = std::min(transfer->redelivered_bytes_to_skip, chunk.size());
    chunk.remove_prefix(skip);
    transfer->redelivered_bytes_to_skip -= skip;
    if (chunk.empty()) return length;
  }
  if (!transfer->headers_delivered) {
    transfer->local_failure = UpstreamFailure::kProtocol;
    transfer->local_message = "upstream sent body bytes before its headers";
    return 0;
  }
  if (!transfer->request.allow_streaming &&
      chunk.size() > transfer->request.max_response_bytes - std::min(transfer->body_bytes, transfer->request.max_response_bytes)) {
    transfer->local_failure = UpstreamFailure::kResponseTooLarge;
    transfer->local_message = "upstream response body exceeds " +
                              std::to_string(transfer->request.max_response_bytes) + " bytes";
    return 0;
  }
  transfer->body_bytes += chunk.size();
  bool more = true;
  try {
    more = transfer->observer->onBody(chunk);
  } catch (...) {
    transfer->local_failure = UpstreamFailure::kProtocol;
    transfer->local_message = "response observer failed in onBody";
    return 0;
  }
  if (!more) {
    transfer->paused = true;
    // libcurl keeps all `length` bytes of this call and passes them again on resume.
    transfer->redelivered_bytes_to_skip = length;
    return CURL_WRITEFUNC_PAUSE;
  }
  return length;
}

}  // namespace keyway::daemon::curl
