// Http1UpstreamClient: each I/O thread runs an edge-triggered epoll loop over non-blocking
// upstream sockets, with a command mailbox (start/cancel/resume/probe/resolved) woken by an
// eventfd, a deadline map for connect and total timeouts, and a keep-alive pool per host:port.
// Hosted (options.hosted: keywayd's default), a listener's reactor thread runs each loop instead
// (ReactorGuest), a timerfd stands in for the epoll_wait timeout, and start() on that thread
// begins the exchange inline.
//
// Why not libcurl for http://: a callgrind profile of bench scenario (b) put libcurl at ~40% of
// keywayd's instructions per request (URL parsing, curl_maprintf, header matching, easy-handle
// setup). Plain HTTP/1.1 to a known upstream needs none of that: the request head is built in
// one string, the response head parsed in place, and a reused connection costs one sendmsg and
// one recv per exchange. libcurl keeps https:// (TLS, HTTP/2): see routing_upstream_client.hpp.
//
// Sockets are registered once, edge-triggered, for IN|OUT|RDHUP: no epoll_ctl per exchange.
// The rule that comes with edge triggering: a socket is read until recv() returns less than
// asked (then the kernel buffer was empty: a new edge will come) unless the exchange is paused,
// and resume() reads by itself.

#include "daemon/http1_upstream_client.hpp"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <climits>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <utility>

#include "core/http_parser.hpp"
#include "daemon/event_mailbox.hpp"

namespace keyway::daemon {

// ---------------------------------------------------------------------------------------------
// Http1ResponseParser

namespace {

// Not find_first_of: with a three-byte set it calls memchr once per input byte (the profile of
// bench (b) had 110 memchr calls per request from here). CR, LF and NUL are all refused by
// findNonFieldValueChar, whose word-at-a-time scan settles the usual value at once.
bool hasLineBreakOrNul(std::string_view s) {
  for (size_t i = core::findNonFieldValueChar(s); i < s.size(); ++i) {
    if (s[i] == '\r' || s[i] == '\n' || s[i] == '\0') return true;
  }
  return false;
}

bool startsWithNoCase(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && core::iequals(s.substr(0, prefix.size()), prefix);
}

std::string_view trimOws(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// A control character other than HTAB (RFC 9110 §5.5: field values never carry CR, LF, NUL; a
// bare CR or VT passed on would let a hostile upstream split keyway's own response).
bool hasControl(std::string_view s) { return core::findNonFieldValueChar(s) != std::string_view::npos; }

std::string_view stripCr(std::string_view line) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  return line;
}

// Position just past the empty line that ends a head ("\n\n" or "\n\r\n"), searching from
// `from`; npos if not there yet.
size_t findHeadEnd(std::string_view s, size_t from) {
  size_t i = from;
  while (i < s.size()) {
    const void* hit = std::memchr(s.data() + i, '\n', s.size() - i);
    if (hit == nullptr) return std::string_view::npos;
    const size_t lf = static_cast<size_t>(static_cast<const char*>(hit) - s.data());
    if (lf + 1 < s.size() && s[lf + 1] == '\n') return lf + 2;
    if (lf + 2 < s.size() && s[lf + 1] == '\r' && s[lf + 2] == '\n') return lf + 3;
    i = lf + 1;
  }
  return std::string_view::npos;
}

bool parseDecimal(std::string_view s, uint64_t& out) {
  if (s.empty() || s.size() > 18) return false;
  uint64_t v = 0;
  for (const char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  out = v;
  return true;
}

// Tokens of a comma-separated header value, trimmed, case-insensitive match.
bool listHas(std::string_view value, std::string_view token) {
  while (!value.empty()) {
    const size_t comma = value.find(',');
    if (core::iequals(trimOws(value.substr(0, comma)), token)) return true;
    if (comma == std::string_view::npos) break;
    value.remove_prefix(comma + 1);
  }
  return false;
}

std::string_view lastListItem(std::string_view value) {
  const size_t comma = value.rfind(',');
  return trimOws(comma == std::string_view::npos ? value : value.substr(comma + 1));
}

constexpr size_t kMaxChunkLine = 4096;  // chunk size plus extensions

}  // namespace

void Http1ResponseParser::reset(bool head_request) {
  state_ = State::kHead;
  error_.clear();
  head_request_ = head_request;
  cut_short_ = false;
  any_byte_ = false;
  head_delivered_ = false;
  keep_alive_ = false;
  status_ = 0;
  head_buf_.clear();
  head_bytes_ = 0;
  head_scan_ = 0;
  body_mode_ = BodyMode::kNone;
  remaining_ = 0;
  chunk_state_ = ChunkState::kSize;
  line_buf_.clear();
  trailer_bytes_ = 0;
  pause_requested_ = false;
}

void Http1ResponseParser::fail(std::string message) {
  state_ = State::kError;
  error_ = std::move(message);
}

size_t Http1ResponseParser::feed(const char* data, size_t size, Sink& sink) {
  size_t used = 0;
  while (used < size) {
    if (state_ == State::kHead) {
      used += feedHead(data + used, size - used, sink);  // a whole head, or all into head_buf_
    } else if (state_ == State::kBody) {
      const size_t n = body_mode_ == BodyMode::kChunked ? feedChunked(data + used, size - used, sink)
                                                        : feedBody(data + used, size - used, sink);
      used += n;
      if (pause_requested_) {
        pause_requested_ = false;
        return used;
      }
    } else {
      return used;
    }
  }
  return used;
}

size_t Http1ResponseParser::feedHead(const char* data, size_t size, Sink& sink) {
  any_byte_ = any_byte_ || size > 0;
  const size_t budget = max_header_bytes_ - std::min(head_bytes_, max_header_bytes_);
  if (head_buf_.empty()) {
    // The common case: the whole head is in this read. Parse it where it lies.
    const std::string_view view(data, size);
    const size_t end = findHeadEnd(view, 0);
    if (end != std::string_view::npos) {
      if (end > budget) {
        fail("upstream response headers exceed " + std::to_string(max_header_bytes_) + " bytes");
        return size;
      }
      parseHead(view.substr(0, end), sink);
      return end;
    }
    if (size > budget) {
      fail("upstream response headers exceed " + std::to_string(max_header_bytes_) + " bytes");
      return size;
    }
    head_buf_.assign(data, size);
    head_scan_ = size;
    return size;
  }
  const size_t old = head_buf_.size();
  head_buf_.append(data, size);
  // A terminator may straddle the two pieces: look back over the last two bytes.
  const size_t end = findHeadEnd(head_buf_, head_scan_ >= 2 ? head_scan_ - 2 : 0);
  if (end == std::string_view::npos) {
    if (head_buf_.size() > budget) {
      fail("upstream response headers exceed " + std::to_string(max_header_bytes_) + " bytes");
      return size;
    }
    head_scan_ = head_buf_.size();
    return size;
  }
  if (end > budget) {
    fail("upstream response headers exceed " + std::to_string(max_header_bytes_) + " bytes");
    return size;
  }
  std::string head = std::move(head_buf_);
  head_buf_.clear();
  head_scan_ = 0;
  head.resize(end);
  parseHead(head, sink);
  return end - old;
}

bool Http1ResponseParser::parseHead(std::string_view head, Sink& sink) {
  head_bytes_ += head.size();
  size_t pos = 0;
  auto nextLine = [&](std::string_view& line) {
    const size_t lf = head.find('\n', pos);
    if (lf == std::string_view::npos) return false;
    line = stripCr(head.substr(pos, lf - pos));
    pos = lf + 1;
    return true;
  };
  std::string_view line;
  nextLine(line);
  // "HTTP/1.<d> <3 digits>[ <reason>]"; the reason may be empty or missing.
  if (line.size() < 12 || !startsWithNoCase(line, "HTTP/1.") || line[7] < '0' || line[7] > '9' ||
      line[8] != ' ' || hasControl(line)) {
    fail("upstream sent a malformed status line");
    return false;
  }
  const std::string_view code = line.substr(9, 3);
  if (!std::all_of(code.begin(), code.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
      (line.size() > 12 && line[12] != ' ')) {
    fail("upstream sent a malformed status line");
    return false;
  }
  const int status = (code[0] - '0') * 100 + (code[1] - '0') * 10 + (code[2] - '0');
  if (status < 100) {
    fail("upstream sent a malformed status line");
    return false;
  }
  if (status < 200) {
    if (status == 101) {
      fail("upstream switched protocols, which was not asked for");
      return false;
    }
    return true;  // interim (100, 102, 103, ...): its fields are not forwarded
  }
  const std::string_view reason = line.size() > 13 ? line.substr(13) : std::string_view();
  const bool http10 = line[7] == '0';

  core::Headers headers;
  headers.reserve(16);  // typical API responses carry 5-15 fields: no regrowth
  std::string_view content_length;
  bool has_content_length = false;
  bool has_te = false;
  bool chunked = false;
  bool conn_close = false;
  bool conn_keep_alive = false;
  while (nextLine(line)) {
    if (line.empty()) break;
    if (hasControl(line)) {
      fail("upstream sent a control character in a header field");
      return false;
    }
    if (line.front() == ' ' || line.front() == '\t') {
      // Obsolete line folding (RFC 9112 §5.2): join with a single space.
      if (headers.empty()) {
        fail("upstream sent a continuation line without a header field");
        return false;
      }
      headers.back().value += ' ';
      headers.back().value += trimOws(line);
      continue;
    }
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) {
      // libcurl 7.88 refuses such a head too (CURLE_WEIRD_SERVER_REPLY): it is not HTTP.
      fail("upstream sent a header line without a field name and colon");
      return false;
    }
    const std::string_view name = line.substr(0, colon);
    if (!core::isToken(name)) {
      // Whitespace before the colon and the like (RFC 9112 §5.1: must be rejected).
      fail("upstream sent an invalid header field name");
      return false;
    }
    const std::string_view value = trimOws(line.substr(colon + 1));
    if (core::iequals(name, "Content-Length")) {
      // RFC 9112 §6.3: differing values make the framing invalid; identical repeats, also as one
      // comma-separated list, are allowed.
      std::string_view values = value;
      do {
        const size_t comma = values.find(',');
        const std::string_view one = trimOws(values.substr(0, comma));
        values = comma == std::string_view::npos ? std::string_view() : values.substr(comma + 1);
        uint64_t ignored = 0;
        if (!parseDecimal(one, ignored)) {
          fail("upstream sent an invalid Content-Length");
          return false;
        }
        if (!has_content_length) {
          content_length = one;
          has_content_length = true;
        } else if (content_length != one) {
          fail("upstream sent conflicting Content-Length values");
          return false;
        }
      } while (!values.empty());
      continue;
    }
    if (core::iequals(name, "Transfer-Encoding")) {
      has_te = true;
      chunked = core::iequals(lastListItem(value), "chunked");
      continue;
    }
    if (core::iequals(name, "Connection")) {
      conn_close = conn_close || listHas(value, "close");
      conn_keep_alive = conn_keep_alive || listHas(value, "keep-alive");
    }
    headers.push_back(core::Header{std::string(name), std::string(value)});
  }

  keep_alive_ = http10 ? (conn_keep_alive && !conn_close) : !conn_close;
  if (head_request_ || status == 204 || status == 304) {
    body_mode_ = BodyMode::kNone;
  } else if (has_te) {
    // RFC 9112 §6.3: Transfer-Encoding overrides Content-Length; a final coding that is not
    // chunked runs until the close.
    body_mode_ = chunked ? BodyMode::kChunked : BodyMode::kUntilClose;
    if (!chunked || has_content_length) keep_alive_ = false;
  } else if (has_content_length) {
    body_mode_ = BodyMode::kLength;
    parseDecimal(content_length, remaining_);
  } else {
    body_mode_ = BodyMode::kUntilClose;
    keep_alive_ = false;
  }
  status_ = status;
  head_delivered_ = true;
  if (!sink.onHead(status, reason, std::move(headers))) {
    state_ = State::kAborted;
    return false;
  }
  if (state_ != State::kHead) return false;  // the sink may not change it, but be safe
  state_ = body_mode_ == BodyMode::kNone || (body_mode_ == BodyMode::kLength && remaining_ == 0)
               ? State::kDone
               : State::kBody;
  chunk_state_ = ChunkState::kSize;
  return true;
}

bool Http1ResponseParser::deliver(std::string_view bytes, Sink& sink, bool& pause) {
  if (bytes.empty()) return true;
  switch (sink.onBody(bytes)) {
    case Sink::BodyAction::kContinue:
      return true;
    case Sink::BodyAction::kPause:
      pause = true;
      pause_requested_ = true;
      return true;
    case Sink::BodyAction::kAbort:
      state_ = State::kAborted;
      return false;
  }
  return true;
}

size_t Http1ResponseParser::feedBody(const char* data, size_t size, Sink& sink) {
  bool pause = false;
  if (body_mode_ == BodyMode::kUntilClose) {
    deliver(std::string_view(data, size), sink, pause);
    return size;
  }
  const size_t take = static_cast<size_t>(std::min<uint64_t>(remaining_, size));
  remaining_ -= take;
  const bool ended = remaining_ == 0;
  if (deliver(std::string_view(data, take), sink, pause) && ended) state_ = State::kDone;
  return take;
}

size_t Http1ResponseParser::feedChunked(const char* data, size_t size, Sink& sink) {
  size_t i = 0;
  bool pause = false;
  // One line (chunk size, CRLF after data, trailer) may arrive in pieces: line_buf_ holds the
  // start. kNeedMore: everything was taken; kTooLong: the line exceeds `limit` bytes.
  enum class Line { kLine, kNeedMore, kTooLong };
  auto takeLine = [&](std::string_view& line, size_t limit) -> Line {
    const void* hit = std::memchr(data + i, '\n', size - i);
    if (hit == nullptr) {
      if (line_buf_.size() + (size - i) > limit) return Line::kTooLong;
      line_buf_.append(data + i, size - i);
      i = size;
      return Line::kNeedMore;
    }
    const size_t lf = static_cast<size_t>(static_cast<const char*>(hit) - data);
    if (line_buf_.size() + (lf - i) > limit) return Line::kTooLong;
    if (line_buf_.empty()) {
      line = std::string_view(data + i, lf - i);
    } else {
      line_buf_.append(data + i, lf - i);
      line = line_buf_;
    }
    i = lf + 1;
    line = stripCr(line);
    return Line::kLine;
  };
  while (i < size && state_ == State::kBody && !pause) {
    switch (chunk_state_) {
      case ChunkState::kSize: {
        std::string_view line;
        const Line got = takeLine(line, kMaxChunkLine);
        if (got == Line::kNeedMore) break;
        if (got == Line::kTooLong) {
          fail("upstream sent an over-long chunk size line");
          return size;
        }
        uint64_t value = 0;
        size_t digits = 0;
        while (digits < line.size() && std::isxdigit(static_cast<unsigned char>(line[digits]))) {
          const char c = line[digits];
          const uint64_t d = c <= '9' ? static_cast<uint64_t>(c - '0')
                                      : static_cast<uint64_t>((c | 0x20) - 'a' + 10);
          if (value > (UINT64_MAX >> 4)) {
            fail("upstream sent a chunk size that overflows");
            return size;
          }
          value = (value << 4) | d;
          ++digits;
        }
        std::string_view rest = trimOws(line.substr(digits));
        if (digits == 0 || (!rest.empty() && rest.front() != ';')) {
          fail("upstream sent an invalid chunk size");
          return size;
        }
        line_buf_.clear();
        if (value == 0) {
          chunk_state_ = ChunkState::kTrailer;
        } else {
          remaining_ = value;
          chunk_state_ = ChunkState::kData;
        }
        break;
      }
      case ChunkState::kData: {
        const size_t take = static_cast<size_t>(std::min<uint64_t>(remaining_, size - i));
        remaining_ -= take;
        const std::string_view piece(data + i, take);
        i += take;
        if (remaining_ == 0) chunk_state_ = ChunkState::kDataCrlf;
        if (!deliver(piece, sink, pause)) return i;
        break;
      }
      case ChunkState::kDataCrlf: {
        std::string_view line;
        const Line got = takeLine(line, 2);
        if (got == Line::kNeedMore) break;
        if (got == Line::kTooLong || !line.empty()) {
          fail("upstream sent chunk data longer than its chunk size");
          return size;
        }
        line_buf_.clear();
        chunk_state_ = ChunkState::kSize;
        break;
      }
      case ChunkState::kTrailer: {
        std::string_view line;
        const size_t budget = max_header_bytes_ - std::min(trailer_bytes_, max_header_bytes_);
        const Line got = takeLine(line, budget);
        if (got == Line::kNeedMore) break;
        if (got == Line::kTooLong) {
          fail("upstream response trailers exceed " + std::to_string(max_header_bytes_) + " bytes");
          return size;
        }
        trailer_bytes_ += line.size() + 2;
        const bool last = line.empty();
        line_buf_.clear();
        if (last) state_ = State::kDone;  // trailers are not forwarded
        break;
      }
    }
  }
  return i;
}

Http1ResponseParser::State Http1ResponseParser::finishOnEof() {
  if (state_ == State::kBody && body_mode_ == BodyMode::kUntilClose) {
    state_ = State::kDone;
  } else if (state_ == State::kHead || state_ == State::kBody) {
    cut_short_ = true;
    fail(state_ == State::kHead ? (any_byte_ ? "upstream response was cut short in its header block"
                                             : "upstream closed the connection without answering")
                                : "upstream closed the connection before the response ended");
  }
  return state_;
}

// ---------------------------------------------------------------------------------------------
// The client

namespace {

using core::UpstreamFailure;
using SteadyClock = std::chrono::steady_clock;

constexpr size_t kReadSize = 64u << 10;

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

[[noreturn]] void fatal(const char* what) {
  std::fprintf(stderr, "keyway: http/1.1 upstream client: %s\n", what);
  std::abort();
}

// What the "http://<authority>" part of a URL says: where to connect and what Host carries.
struct Authority {
  std::string host;         // without brackets
  std::string host_header;  // as Host: carries it
  uint16_t port = 80;
  std::string key;          // "host:port", the pool and DNS cache key
  bool numeric = false;
  sockaddr_storage address{};
  socklen_t address_len = 0;
};

// Where an http:// URL points and what goes on the request line.
struct Endpoint {
  std::shared_ptr<const Authority> authority;
  // The request-target: a view into the request's URL (which the exchange owns and never
  // changes), after a '/' when slash_first (a URL like "http://h?x" has none).
  std::string_view target;
  bool slash_first = false;
};

// Authorities a worker has parsed, by the URL's "http://<authority>" prefix. Every exchange to
// an upstream has the same one, and parsing it (inet_pton, four strings) cost ~2k instructions
// per request. A handful of upstreams per host: a short list, searched in order.
class AuthorityCache {
 public:
  std::shared_ptr<const Authority> find(std::string_view prefix) const {
    for (const auto& entry : entries_) {
      if (entry.first == prefix) return entry.second;
    }
    return nullptr;
  }
  void add(std::string_view prefix, std::shared_ptr<const Authority> authority) {
    if (entries_.size() >= kMaxEntries) entries_.clear();  // many distinct URLs: start over
    entries_.emplace_back(std::string(prefix), std::move(authority));
  }

 private:
  static constexpr size_t kMaxEntries = 64;
  std::vector<std::pair<std::string, std::shared_ptr<const Authority>>> entries_;
};

bool isHostChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.' || c == '_';
}

// Empty on success, else what is wrong.
std::string parseAuthority(std::string_view authority, Authority& out) {
  if (authority.find('@') != std::string_view::npos) return "URL has user information (not supported)";
  std::string_view host;
  std::string_view port;
  bool has_port = false;
  const bool bracketed = !authority.empty() && authority.front() == '[';
  if (bracketed) {
    const size_t close = authority.find(']');
    if (close == std::string_view::npos) return "URL host does not parse";
    host = authority.substr(1, close - 1);
    const std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return "URL host does not parse";
      port = after.substr(1);
      has_port = true;
    }
    in6_addr v6{};
    if (::inet_pton(AF_INET6, std::string(host).c_str(), &v6) != 1) return "URL host does not parse";
    auto* sa = reinterpret_cast<sockaddr_in6*>(&out.address);
    sa->sin6_family = AF_INET6;
    sa->sin6_addr = v6;
    out.address_len = sizeof(sockaddr_in6);
    out.numeric = true;
  } else {
    const size_t colon = authority.find(':');
    host = authority.substr(0, colon);
    if (colon != std::string_view::npos) {
      port = authority.substr(colon + 1);
      has_port = true;
    }
    if (host.empty()) return "URL has no host";
    if (!std::all_of(host.begin(), host.end(), isHostChar)) return "URL host does not parse";
    in_addr v4{};
    if (::inet_pton(AF_INET, std::string(host).c_str(), &v4) == 1) {
      auto* sa = reinterpret_cast<sockaddr_in*>(&out.address);
      sa->sin_family = AF_INET;
      sa->sin_addr = v4;
      out.address_len = sizeof(sockaddr_in);
      out.numeric = true;
    }
  }
  if (host.empty()) return "URL has no host";
  uint64_t port_number = 80;
  if (has_port && !port.empty()) {
    if (!parseDecimal(port, port_number) || port_number == 0 || port_number > 65535) {
      return "URL port is not a number from 1 to 65535";
    }
  }
  out.port = static_cast<uint16_t>(port_number);
  if (out.numeric) {
    if (out.address.ss_family == AF_INET) {
      reinterpret_cast<sockaddr_in*>(&out.address)->sin_port = htons(out.port);
    } else {
      reinterpret_cast<sockaddr_in6*>(&out.address)->sin6_port = htons(out.port);
    }
  }
  out.host = std::string(host);
  out.host_header = bracketed ? "[" + out.host + "]" : out.host;
  // As libcurl: the port is stated unless it is the scheme's default.
  if (out.port != 80) out.host_header += ":" + std::to_string(out.port);
  out.key = out.host_header;
  if (out.port == 80) out.key += ":80";
  return {};
}

// Empty on success, else what is wrong (never quoting the URL: it may carry a query secret).
// `out.target` views `url`.
std::string parseHttpUrl(std::string_view url, Endpoint& out, AuthorityCache& cache) {
  if (!startsWithNoCase(url, "http://")) return "URL scheme is not http";
  for (const char c : url) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u == 0x7f) {
      return hasLineBreakOrNul(url) ? "URL contains CR, LF or NUL" : "URL contains a space or control character";
    }
  }
  const std::string_view rest = url.substr(7);
  // A loop, not find_first_of("/?#"): that calls memchr once per byte, on every request.
  size_t authority_end = 0;
  while (authority_end < rest.size() && rest[authority_end] != '/' && rest[authority_end] != '?' &&
         rest[authority_end] != '#') {
    ++authority_end;
  }
  const std::string_view prefix = url.substr(0, 7 + authority_end);
  out.authority = cache.find(prefix);
  if (!out.authority) {
    auto parsed = std::make_shared<Authority>();
    if (std::string why = parseAuthority(rest.substr(0, authority_end), *parsed); !why.empty()) return why;
    out.authority = parsed;
    cache.add(prefix, std::move(parsed));
  }
  out.target = rest.substr(authority_end);
  out.slash_first = out.target.empty() || out.target.front() != '/';
  return {};
}

std::string invalidRequestReason(const core::UpstreamRequest& request, Endpoint& endpoint,
                                 AuthorityCache& authorities) {
  if (!core::isToken(request.method)) return "method is not an HTTP token";
  for (const auto& header : request.headers) {
    if (!core::isToken(header.name)) return "a header name is not an HTTP token";
    if (hasLineBreakOrNul(header.value)) return "header '" + header.name + "' contains CR, LF or NUL";
  }
  return parseHttpUrl(request.url, endpoint, authorities);
}

class NullObserver final : public core::UpstreamObserver {
 public:
  void onHeaders(int, std::string_view, core::Headers) override {}
  bool onBody(std::string_view) override { return true; }
  void onComplete(const core::UpstreamOutcome&) override {}
};

struct Probe {
  std::mutex mutex;
  std::condition_variable cv;
  size_t answered = 0;
};

struct Resolved {
  std::string key;
  std::vector<sockaddr_storage> addresses;  // with the port set
  std::string error;                        // when empty addresses
};

class Transfer;
enum class CommandKind { kStart, kCancel, kResume, kProbe, kResolved };
struct Command {
  CommandKind kind;
  std::shared_ptr<Transfer> transfer;
  std::shared_ptr<Probe> probe = nullptr;
  std::shared_ptr<Resolved> resolved = nullptr;
};

using Mailbox = EventMailbox<Command>;

// One upstream TCP connection, owned by the exchange using it or by the idle pool.
struct Conn {
  Conn(int fd_in, std::string key_in, std::atomic<int64_t>* open_counter)
      : fd(fd_in), key(std::move(key_in)), counter(open_counter) {
    counter->fetch_add(1, std::memory_order_relaxed);
  }
  ~Conn() { close(); }
  Conn(const Conn&) = delete;
  Conn& operator=(const Conn&) = delete;
  void close() {
    if (fd.get() >= 0) {
      fd.reset();
      counter->fetch_sub(1, std::memory_order_relaxed);
    }
    closed = true;
  }

  Fd fd;
  std::string key;
  std::atomic<int64_t>* counter;
  Transfer* owner = nullptr;
  bool closed = false;
  bool connected = false;
  // The peer's FIN (or an error) was reported: read to the end, a short read proves nothing.
  bool peer_closed = false;
  SteadyClock::time_point idle_since{};
};
using ConnPtr = std::unique_ptr<Conn>;

enum class Phase { kQueued, kResolving, kConnecting, kExchanging };

using TimerMap = std::multimap<SteadyClock::time_point, Transfer*>;

// One exchange. The public UpstreamCall face is thread-safe; everything else belongs to the I/O
// thread running it.
class Transfer final : public core::UpstreamCall,
                       public Http1ResponseParser::Sink,
                       public std::enable_shared_from_this<Transfer> {
 public:
  Transfer(core::UpstreamRequest req, std::shared_ptr<core::UpstreamObserver> obs,
           std::shared_ptr<Mailbox> box, size_t max_header_bytes)
      : request(std::move(req)), observer(std::move(obs)), parser(max_header_bytes), mailbox_(std::move(box)) {}

  void cancel() override {
    if (finished.load(std::memory_order_acquire)) return;
    cancel_requested.store(true, std::memory_order_release);
    mailbox_->post(Command{CommandKind::kCancel, shared_from_this()});
  }
  void resume() override {
    if (finished.load(std::memory_order_acquire)) return;
    mailbox_->post(Command{CommandKind::kResume, shared_from_this()});
  }

  bool onHead(int status, std::string_view reason, core::Headers headers) override {
    headers_delivered = true;
    try {
      observer->onHeaders(status, reason, std::move(headers));
    } catch (...) {
      local_failure = UpstreamFailure::kProtocol;
      local_message = "response observer failed in onHeaders";
      return false;
    }
    return true;
  }

  BodyAction onBody(std::string_view chunk) override {
    if (cancel_requested.load(std::memory_order_relaxed)) {
      local_failure = UpstreamFailure::kCancelled;
      local_message = "cancelled";
      return BodyAction::kAbort;
    }
    if (!request.allow_streaming &&
        chunk.size() > request.max_response_bytes - std::min(body_bytes, request.max_response_bytes)) {
      local_failure = UpstreamFailure::kResponseTooLarge;
      local_message = "upstream response body exceeds " + std::to_string(request.max_response_bytes) + " bytes";
      return BodyAction::kAbort;
    }
    body_bytes += chunk.size();
    bool more = true;
    try {
      more = observer->onBody(chunk);
    } catch (...) {
      local_failure = UpstreamFailure::kProtocol;
      local_message = "response observer failed in onBody";
      return BodyAction::kAbort;
    }
    if (!more) {
      paused = true;
      return BodyAction::kPause;
    }
    return BodyAction::kContinue;
  }

  // Thread-shared.
  std::atomic<bool> cancel_requested{false};
  std::atomic<bool> finished{false};
  const SteadyClock::time_point started_at = SteadyClock::now();

  // I/O thread only.
  core::UpstreamRequest request;
  std::shared_ptr<core::UpstreamObserver> observer;
  Endpoint endpoint;
  std::string head;  // the request line and header block
  bool send_body = false;
  bool caller_close = false;  // the caller asked for Connection: close
  size_t head_sent = 0;
  size_t body_sent = 0;
  bool request_sent = false;  // at least one byte of this attempt went out
  bool request_done = false;  // all of it went out
  Phase phase = Phase::kQueued;
  ConnPtr conn;
  bool reused = false;
  bool retried = false;
  std::vector<sockaddr_storage> addresses;
  size_t next_address = 0;
  int last_connect_errno = 0;
  std::optional<SteadyClock::time_point> connect_deadline;
  std::optional<SteadyClock::time_point> total_deadline;
  std::optional<TimerMap::iterator> timer;
  Http1ResponseParser parser;
  bool headers_delivered = false;
  size_t body_bytes = 0;
  bool paused = false;
  std::string pending;  // bytes read but not yet parsed when the observer paused
  size_t pending_pos = 0;
  UpstreamFailure local_failure = UpstreamFailure::kNone;
  std::string local_message;

 private:
  std::shared_ptr<Mailbox> mailbox_;
};

void buildHead(Transfer& t) {
  const core::UpstreamRequest& request = t.request;
  const bool is_head = request.method == "HEAD";
  bool has_host = false;
  bool has_content_length = false;
  size_t size = request.method.size() + t.endpoint.target.size() + 64 + t.endpoint.authority->host_header.size();
  for (const auto& header : request.headers) {
    size += header.name.size() + header.value.size() + 4;
    has_host = has_host || core::iequals(header.name, "Host");
    has_content_length = has_content_length || core::iequals(header.name, "Content-Length");
  }
  const std::string& m = request.method;
  t.send_body = !is_head && (!request.body.empty() || m == "POST" || m == "PUT" || m == "PATCH" ||
                             has_content_length);
  // Sized once and written through a cursor: ~15 append calls cost more than the bytes.
  // `size` covers every piece: the request line's fixed parts, the Host line and the
  // Content-Length line fit in its 64 spare bytes.
  std::string& out = t.head;
  out.resize(size);
  char* w = out.data();
  auto put = [&w](std::string_view piece) {
    std::memcpy(w, piece.data(), piece.size());
    w += piece.size();
  };
  put(request.method);
  *w++ = ' ';
  if (t.endpoint.slash_first) *w++ = '/';
  put(t.endpoint.target);
  put(" HTTP/1.1\r\n");
  if (!has_host) {
    put("Host: ");
    put(t.endpoint.authority->host_header);
    put("\r\n");
  }
  for (const auto& header : request.headers) {
    if (core::iequals(header.name, "Content-Length") || core::iequals(header.name, "Transfer-Encoding")) {
      continue;
    }
    if (core::iequals(header.name, "Connection") && listHas(header.value, "close")) t.caller_close = true;
    put(header.name);
    if (header.value.empty()) {
      put(":\r\n");
    } else {
      put(": ");
      put(header.value);
      put("\r\n");
    }
  }
  if (t.send_body) {
    put("Content-Length: ");
    w = std::to_chars(w, w + 20, static_cast<uint64_t>(request.body.size())).ptr;
    put("\r\n");
  }
  put("\r\n");
  out.resize(static_cast<size_t>(w - out.data()));
}

std::string describeErrno(int err) {
  char buf[128];
  // GNU strerror_r returns the message (maybe not in buf).
  const char* text = ::strerror_r(err, buf, sizeof buf);
  return text ? std::string(text) : std::to_string(err);
}

}  // namespace

// Resolves host names off the I/O threads (getaddrinfo blocks) and posts the answer back.
class Http1UpstreamClient::Resolver {
 public:
  Resolver() {
    try {
      thread_ = std::thread([this] { run(); });
    } catch (...) {
      fatal("cannot start the resolver thread");
    }
    pthread_setname_np(thread_.native_handle(), "kw-h1-resolve");
  }
  ~Resolver() { stop(); }

  void resolve(std::string host, uint16_t port, std::string key, std::shared_ptr<Transfer> transfer,
               std::shared_ptr<Mailbox> mailbox) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) return;  // the workers have finished every exchange already
    jobs_.push_back(Job{std::move(host), port, std::move(key), std::move(transfer), std::move(mailbox)});
    cv_.notify_one();
  }

  void stop() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
      jobs_.clear();
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

 private:
  struct Job {
    std::string host;
    uint16_t port;
    std::string key;
    std::shared_ptr<Transfer> transfer;
    std::shared_ptr<Mailbox> mailbox;
  };

  void run() {
    for (;;) {
      Job job;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        cv_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
        if (stopping_) return;
        job = std::move(jobs_.front());
        jobs_.pop_front();
      }
      auto result = std::make_shared<Resolved>();
      result->key = job.key;
      addrinfo hints{};
      hints.ai_family = AF_UNSPEC;
      hints.ai_socktype = SOCK_STREAM;
      addrinfo* list = nullptr;
      const std::string service = std::to_string(job.port);
      const int rc = ::getaddrinfo(job.host.c_str(), service.c_str(), &hints, &list);
      if (rc != 0) {
        result->error = ::gai_strerror(rc);
      } else {
        for (addrinfo* ai = list; ai != nullptr; ai = ai->ai_next) {
          if (ai->ai_addrlen > sizeof(sockaddr_storage)) continue;
          sockaddr_storage address{};
          std::memcpy(&address, ai->ai_addr, ai->ai_addrlen);
          result->addresses.push_back(address);
        }
        ::freeaddrinfo(list);
        if (result->addresses.empty()) result->error = "no address";
      }
      job.mailbox->post(Command{CommandKind::kResolved, std::move(job.transfer), nullptr, std::move(result)});
    }
  }

  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<Job> jobs_;
  bool stopping_ = false;
  std::thread thread_;
};

// One event loop over upstream sockets: on its own thread, or (options.hosted) run by a
// listener's reactor thread as a ReactorGuest, which then also starts its exchanges inline.
class Http1UpstreamClient::Worker final : public ReactorGuest {
 public:
  Worker(const Http1UpstreamClientOptions& options, std::shared_ptr<Counters> counters,
         Resolver* resolver, unsigned index, uint64_t client_id);
  ~Worker() override;
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  const std::shared_ptr<Mailbox>& mailbox() const { return mailbox_; }
  void requestStop();
  void join();

  // ReactorGuest (hosted workers only).
  int pollFd() const override { return epoll_fd_.get(); }
  void enter() override;
  void runReady() override;
  // Hosted: ends the worker for good (completes what is in flight with kCancelled, closes the
  // mailbox); runReady() does nothing afterwards. Any thread; the client's destructor calls it.
  void retire();
  // The hosted worker the calling thread runs, if it belongs to client `client_id` and may start
  // an exchange inline right now (not from inside its own loop); else nullptr.
  static Worker* inlineFor(uint64_t client_id);
  // Starts an exchange on the calling (hosting) thread, without the mailbox; false (nothing
  // done) once the worker is retired.
  bool startInline(const std::shared_ptr<Transfer>& t);

 private:
  struct DnsEntry {
    std::vector<sockaddr_storage> addresses;
    SteadyClock::time_point expires;
  };

  void run();
  // One pass of the loop: wait up to timeout_ms (0: do not block) and handle what is ready.
  void loopOnce(int timeout_ms, std::vector<epoll_event>& events, std::vector<Command>& commands);
  // Hosted: the timerfd fires at the next deadline (timeouts, idle sweep) when one is due
  // before the one it is set for. Armed only when the next deadline moves earlier or the
  // timer went off, so an exchange normally costs no timerfd call.
  void rearmTimer();
  void shutdown();
  void processCommands(std::vector<Command>& commands);
  void startTransfer(const std::shared_ptr<Transfer>& t);
  void acquireConnection(const std::shared_ptr<Transfer>& t);
  void openConnection(const std::shared_ptr<Transfer>& t);
  void connectNext(const std::shared_ptr<Transfer>& t);
  void onResolved(const std::shared_ptr<Transfer>& t, const Resolved& resolved);
  void onConnected(const std::shared_ptr<Transfer>& t);
  void handleEvent(Conn* conn, uint32_t flags);
  void sendSome(const std::shared_ptr<Transfer>& t);
  void readSome(const std::shared_ptr<Transfer>& t);
  // Feeds bytes to the parser and acts on its state. False when the exchange must not read
  // more now (finished, failed or paused; unparsed bytes are kept in t->pending).
  bool consume(const std::shared_ptr<Transfer>& t, const char* data, size_t size, bool from_pending);
  void onEof(const std::shared_ptr<Transfer>& t);
  void onConnectionError(const std::shared_ptr<Transfer>& t, int err);
  bool retryOnFreshConnection(const std::shared_ptr<Transfer>& t);
  void resumeTransfer(const std::shared_ptr<Transfer>& t);
  void completeOk(const std::shared_ptr<Transfer>& t, bool surplus);
  void finish(const std::shared_ptr<Transfer>& t, UpstreamFailure failure, std::string message);
  void fail(const std::shared_ptr<Transfer>& t, UpstreamFailure failure, std::string message) {
    finish(t, failure, std::move(message));
  }
  void onTimeout(const std::shared_ptr<Transfer>& t);
  void armTimer(Transfer& t, std::optional<SteadyClock::time_point> when);
  void expireTimers();
  void discard(ConnPtr conn);
  void releaseToPool(ConnPtr conn);
  ConnPtr takeFromPool(const std::string& key);
  void closeIdle(Conn* conn);
  void sweepIdle(SteadyClock::time_point now);
  // The next moment the loop has work without an event: a transfer's deadline or, while
  // connections sit idle, the next pool sweep.
  std::optional<SteadyClock::time_point> nextDeadline() const;
  int nextTimeoutMs();

  const Http1UpstreamClientOptions options_;
  std::shared_ptr<Counters> counters_;
  Resolver* resolver_;
  const uint64_t client_id_;
  Fd epoll_fd_;
  Fd event_fd_;
  Fd timer_fd_;  // hosted only
  std::optional<SteadyClock::time_point> timer_armed_for_;
  // Hosted: runReady() and retire() exclude each other; in_loop_ marks a pass in progress on
  // the hosting thread (an observer starting an exchange then goes through the mailbox).
  std::mutex host_mu_;
  std::atomic<bool> retired_{false};  // written under host_mu_; read by inlineFor() without it
  bool in_loop_ = false;
  std::vector<epoll_event> host_events_;
  std::vector<Command> host_commands_;
  std::shared_ptr<Mailbox> mailbox_;
  using ActiveMap = std::unordered_map<Transfer*, std::shared_ptr<Transfer>>;
  ActiveMap active_;
  // Nodes of finished exchanges, reused by the next start (as spare_timers_ below): each
  // exchange enters active_ once. Bounded by kSpareNodes.
  static constexpr size_t kSpareNodes = 64;
  std::vector<ActiveMap::node_type> spare_active_;
  TimerMap timers_;
  // Map nodes of disarmed timers, reused by the next arm: every exchange arms one and disarms it,
  // and a node kept here saves a malloc and a free each time. Bounded by kSpareNodes.
  std::vector<TimerMap::node_type> spare_timers_;
  std::unordered_map<std::string, std::vector<ConnPtr>> idle_;
  size_t idle_count_ = 0;
  SteadyClock::time_point next_sweep_{};
  std::unordered_map<std::string, DnsEntry> dns_cache_;
  AuthorityCache authorities_;
  // Connections closed during one batch of events live until the batch ends: a later event of
  // the same batch may still point at them.
  std::vector<ConnPtr> graveyard_;
  std::unique_ptr<char[]> read_buffer_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

Http1UpstreamClient::Worker::Worker(const Http1UpstreamClientOptions& options,
                                    std::shared_ptr<Counters> counters, Resolver* resolver,
                                    unsigned index, uint64_t client_id)
    : options_(options),
      counters_(std::move(counters)),
      resolver_(resolver),
      client_id_(client_id),
      epoll_fd_(::epoll_create1(EPOLL_CLOEXEC)),
      event_fd_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)),
      read_buffer_(new char[kReadSize]) {
  if (epoll_fd_.get() < 0) fatal("epoll_create1 failed");
  if (event_fd_.get() < 0) fatal("eventfd failed");
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = nullptr;  // the eventfd; connections carry their Conn*
  if (::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, event_fd_.get(), &ev) != 0) {
    fatal("epoll_ctl(eventfd) failed");
  }
  mailbox_ = std::make_shared<Mailbox>(event_fd_.get());
  next_sweep_ = SteadyClock::now() + std::chrono::seconds(1);
  if (options_.hosted) {
    timer_fd_.reset(::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
    if (timer_fd_.get() < 0) fatal("timerfd_create failed");
    ev.events = EPOLLIN;
    ev.data.ptr = &timer_fd_;  // tells the timer apart from the eventfd and connections
    if (::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, timer_fd_.get(), &ev) != 0) {
      fatal("epoll_ctl(timerfd) failed");
    }
    host_events_.resize(512);
    return;  // no thread: a reactor thread runs this loop
  }
  try {
    thread_ = std::thread([this] { run(); });
  } catch (...) {
    fatal("cannot start an I/O thread");
  }
  char name[16];
  std::snprintf(name, sizeof name, "kw-h1-%u", index % 100);
  pthread_setname_np(thread_.native_handle(), name);
}

Http1UpstreamClient::Worker::~Worker() {
  if (options_.hosted) {
    retire();
  } else {
    requestStop();
    join();
  }
  active_.clear();
  idle_.clear();
  graveyard_.clear();
}

void Http1UpstreamClient::Worker::requestStop() {
  stopping_.store(true, std::memory_order_release);
  mailbox_->wake();
}

void Http1UpstreamClient::Worker::join() {
  if (thread_.joinable()) thread_.join();
}

std::optional<SteadyClock::time_point> Http1UpstreamClient::Worker::nextDeadline() const {
  std::optional<SteadyClock::time_point> next;
  if (!timers_.empty()) next = timers_.begin()->first;
  if (idle_count_ > 0 && (!next || next_sweep_ < *next)) next = next_sweep_;
  return next;
}

int Http1UpstreamClient::Worker::nextTimeoutMs() {
  const std::optional<SteadyClock::time_point> next = nextDeadline();
  if (!next) return -1;
  const auto now = SteadyClock::now();
  if (*next <= now) return 0;
  // Round up so we do not spin on a sub-millisecond remainder.
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(*next - now);
  return static_cast<int>(std::min<int64_t>(left.count(), INT_MAX));
}

void Http1UpstreamClient::Worker::run() {
  std::vector<epoll_event> events(512);
  std::vector<Command> commands;
  while (!stopping_.load(std::memory_order_acquire)) loopOnce(nextTimeoutMs(), events, commands);
  shutdown();
}

void Http1UpstreamClient::Worker::loopOnce(int timeout_ms, std::vector<epoll_event>& events,
                                           std::vector<Command>& commands) {
  const int n = ::epoll_wait(epoll_fd_.get(), events.data(), static_cast<int>(events.size()), timeout_ms);
  if (n < 0 && errno != EINTR) fatal("epoll_wait failed");
  bool woken = false;
  for (int i = 0; i < n; ++i) {
    void* tag = events[i].data.ptr;
    if (tag == nullptr || tag == &timer_fd_) {
      uint64_t value = 0;
      const int fd = tag == nullptr ? event_fd_.get() : timer_fd_.get();
      while (::read(fd, &value, sizeof value) < 0 && errno == EINTR) {
      }
      if (tag == nullptr) {
        woken = true;
      } else {
        timer_armed_for_.reset();  // went off: rearmTimer() sets the next one
      }
      continue;
    }
    handleEvent(static_cast<Conn*>(tag), events[i].events);
  }
  if (!timers_.empty()) expireTimers();
  if (woken) {
    mailbox_->take(commands);
    processCommands(commands);
    commands.clear();
  }
  const auto now = SteadyClock::now();
  if (now >= next_sweep_) {
    sweepIdle(now);
    next_sweep_ = now + std::chrono::seconds(1);
  }
  graveyard_.clear();
}

namespace {
// The hosted worker the current thread runs, and the id of the client it belongs to (a worker
// outlives its client while a reactor still holds it, so the id is checked before the pointer
// is used).
thread_local void* tl_hosted_worker = nullptr;
thread_local uint64_t tl_hosted_client = 0;
std::atomic<uint64_t> g_next_client_id{1};
}  // namespace

void Http1UpstreamClient::Worker::enter() {
  tl_hosted_worker = this;
  tl_hosted_client = client_id_;
}

Http1UpstreamClient::Worker* Http1UpstreamClient::Worker::inlineFor(uint64_t client_id) {
  if (tl_hosted_client != client_id || tl_hosted_worker == nullptr) return nullptr;
  auto* worker = static_cast<Worker*>(tl_hosted_worker);
  // Only this thread sets in_loop_. A retired worker (shutdown()) takes no new exchange: start()
  // then goes through its closed mailbox and completes at once.
  return worker->in_loop_ || worker->retired_.load(std::memory_order_acquire) ? nullptr : worker;
}

bool Http1UpstreamClient::Worker::startInline(const std::shared_ptr<Transfer>& t) {
  std::lock_guard<std::mutex> lock(host_mu_);
  if (retired_.load(std::memory_order_relaxed)) return false;  // retired since inlineFor()
  in_loop_ = true;
  startTransfer(t);
  graveyard_.clear();
  in_loop_ = false;
  rearmTimer();
  return true;
}

void Http1UpstreamClient::Worker::runReady() {
  std::lock_guard<std::mutex> lock(host_mu_);
  if (retired_.load(std::memory_order_relaxed)) return;
  in_loop_ = true;
  loopOnce(0, host_events_, host_commands_);
  in_loop_ = false;
  rearmTimer();
}

void Http1UpstreamClient::Worker::rearmTimer() {
  const std::optional<SteadyClock::time_point> next = nextDeadline();
  if (!next || (timer_armed_for_ && *timer_armed_for_ <= *next)) return;
  itimerspec spec{};
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(next->time_since_epoch()).count();
  // steady_clock is CLOCK_MONOTONIC; 0 would disarm, so a deadline at the epoch becomes 1 ns.
  spec.it_value.tv_sec = static_cast<time_t>(ns / 1000000000);
  spec.it_value.tv_nsec = static_cast<long>(ns % 1000000000);
  if (spec.it_value.tv_sec == 0 && spec.it_value.tv_nsec == 0) spec.it_value.tv_nsec = 1;
  if (::timerfd_settime(timer_fd_.get(), TFD_TIMER_ABSTIME, &spec, nullptr) != 0) fatal("timerfd_settime failed");
  timer_armed_for_ = next;
}

void Http1UpstreamClient::Worker::retire() {
  std::lock_guard<std::mutex> lock(host_mu_);
  if (retired_.load(std::memory_order_relaxed)) return;
  retired_.store(true, std::memory_order_release);
  stopping_.store(true, std::memory_order_release);
  shutdown();
  // Leave nothing readable behind: the host's epoll set may still hold pollFd() (level-triggered)
  // and would otherwise wake its thread for nothing, again and again.
  uint64_t value = 0;
  while (::read(event_fd_.get(), &value, sizeof value) > 0 || errno == EINTR) {
  }
  itimerspec off{};
  ::timerfd_settime(timer_fd_.get(), 0, &off, nullptr);
  while (::read(timer_fd_.get(), &value, sizeof value) > 0 || errno == EINTR) {
  }
}

void Http1UpstreamClient::Worker::shutdown() {
  std::vector<Command> commands;
  for (;;) {
    std::vector<std::shared_ptr<Transfer>> in_flight;
    in_flight.reserve(active_.size());
    for (auto& entry : active_) in_flight.push_back(entry.second);
    for (auto& t : in_flight) finish(t, UpstreamFailure::kCancelled, "cancelled: upstream client is shutting down");
    if (active_.empty() && mailbox_->closeIfEmpty(commands)) break;
    for (auto& command : commands) {
      if (command.kind == CommandKind::kStart) {
        finish(command.transfer, UpstreamFailure::kCancelled, "cancelled: upstream client is shutting down");
      }
    }
    commands.clear();
  }
  graveyard_.clear();
  idle_.clear();
  idle_count_ = 0;
}

void Http1UpstreamClient::Worker::processCommands(std::vector<Command>& commands) {
  for (auto& command : commands) {
    const auto& t = command.transfer;
    switch (command.kind) {
      case CommandKind::kStart:
        startTransfer(t);
        break;
      case CommandKind::kCancel:
        if (!t->finished.load(std::memory_order_relaxed)) finish(t, UpstreamFailure::kCancelled, "cancelled");
        break;
      case CommandKind::kResume:
        resumeTransfer(t);
        break;
      case CommandKind::kProbe: {
        std::lock_guard<std::mutex> lock(command.probe->mutex);
        ++command.probe->answered;
        command.probe->cv.notify_all();
        break;
      }
      case CommandKind::kResolved:
        onResolved(t, *command.resolved);
        break;
    }
  }
}

void Http1UpstreamClient::Worker::startTransfer(const std::shared_ptr<Transfer>& t) {
  if (spare_active_.empty()) {
    active_.emplace(t.get(), t);
  } else {
    ActiveMap::node_type node = std::move(spare_active_.back());
    spare_active_.pop_back();
    node.key() = t.get();
    node.mapped() = t;
    active_.insert(std::move(node));
  }
  if (t->cancel_requested.load(std::memory_order_acquire)) {
    finish(t, UpstreamFailure::kCancelled, "cancelled");
    return;
  }
  if (std::string why = invalidRequestReason(t->request, t->endpoint, authorities_); !why.empty()) {
    finish(t, UpstreamFailure::kProtocol, "invalid upstream request: " + why);
    return;
  }
  buildHead(*t);
  t->parser.reset(t->request.method == "HEAD");
  if (t->request.total_timeout.count() > 0) t->total_deadline = SteadyClock::now() + t->request.total_timeout;
  acquireConnection(t);
}

void Http1UpstreamClient::Worker::acquireConnection(const std::shared_ptr<Transfer>& t) {
  if (!t->retried) {
    if (ConnPtr conn = takeFromPool(t->endpoint.authority->key)) {
      conn->owner = t.get();
      t->conn = std::move(conn);
      t->reused = true;
      t->phase = Phase::kExchanging;
      armTimer(*t, t->total_deadline);
      sendSome(t);
      return;
    }
  }
  openConnection(t);
}

void Http1UpstreamClient::Worker::openConnection(const std::shared_ptr<Transfer>& t) {
  t->reused = false;
  t->next_address = 0;
  t->addresses.clear();
  // libcurl's rule: a connect timeout of 0 means its default of 300 s.
  const auto connect_timeout = t->request.connect_timeout.count() > 0 ? t->request.connect_timeout
                                                                     : std::chrono::milliseconds(300000);
  t->connect_deadline = SteadyClock::now() + connect_timeout;
  armTimer(*t, t->total_deadline && *t->total_deadline < *t->connect_deadline ? t->total_deadline
                                                                              : t->connect_deadline);
  if (t->endpoint.authority->numeric) {
    t->addresses.push_back(t->endpoint.authority->address);
    connectNext(t);
    return;
  }
  const auto it = dns_cache_.find(t->endpoint.authority->key);
  if (it != dns_cache_.end() && it->second.expires > SteadyClock::now()) {
    t->addresses = it->second.addresses;
    connectNext(t);
    return;
  }
  t->phase = Phase::kResolving;
  resolver_->resolve(t->endpoint.authority->host, t->endpoint.authority->port, t->endpoint.authority->key, t, mailbox_);
}

void Http1UpstreamClient::Worker::onResolved(const std::shared_ptr<Transfer>& t, const Resolved& resolved) {
  if (!resolved.addresses.empty()) {
    dns_cache_[resolved.key] = DnsEntry{resolved.addresses, SteadyClock::now() + options_.dns_cache_time};
  }
  if (t->finished.load(std::memory_order_relaxed) || t->phase != Phase::kResolving) return;
  if (resolved.addresses.empty()) {
    finish(t, UpstreamFailure::kConnectFailed,
           "cannot connect to upstream: could not resolve host '" + t->endpoint.authority->host + "': " + resolved.error);
    return;
  }
  t->addresses = resolved.addresses;
  t->next_address = 0;
  connectNext(t);
}

void Http1UpstreamClient::Worker::connectNext(const std::shared_ptr<Transfer>& t) {
  while (t->next_address < t->addresses.size()) {
    const sockaddr_storage& address = t->addresses[t->next_address++];
    const socklen_t length = address.ss_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
    const int fd = ::socket(address.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      t->last_connect_errno = errno;
      continue;
    }
    ConnPtr conn = std::make_unique<Conn>(fd, t->endpoint.authority->key, &counters_->open_sockets);
    const int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    const int idle = static_cast<int>(std::max<int64_t>(1, options_.tcp_keepalive_idle.count()));
    const int interval = static_cast<int>(std::max<int64_t>(1, options_.tcp_keepalive_interval.count()));
    ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
    int rc = ::connect(fd, reinterpret_cast<const sockaddr*>(&address), length);
    if (rc != 0 && errno != EINPROGRESS) {
      t->last_connect_errno = errno;
      continue;  // conn closes the socket
    }
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    ev.data.ptr = conn.get();
    if (::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
      t->last_connect_errno = errno;
      continue;
    }
    conn->owner = t.get();
    t->conn = std::move(conn);
    t->phase = Phase::kConnecting;
    if (rc == 0) onConnected(t);
    return;  // otherwise EPOLLOUT says when the connect finished
  }
  char port[8];
  std::snprintf(port, sizeof port, "%u", static_cast<unsigned>(t->endpoint.authority->port));
  finish(t, UpstreamFailure::kConnectFailed,
         "cannot connect to upstream: failed to connect to " + t->endpoint.authority->host + " port " + port + ": " +
             describeErrno(t->last_connect_errno));
}

void Http1UpstreamClient::Worker::onConnected(const std::shared_ptr<Transfer>& t) {
  t->conn->connected = true;
  counters_->connections_opened.fetch_add(1, std::memory_order_relaxed);
  t->phase = Phase::kExchanging;
  armTimer(*t, t->total_deadline);
  sendSome(t);
}

void Http1UpstreamClient::Worker::handleEvent(Conn* conn, uint32_t flags) {
  if (conn->closed) return;
  if (conn->owner == nullptr) {
    // Idle in the pool: data or a close from the upstream means it is no longer usable.
    if (flags & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) closeIdle(conn);
    return;
  }
  std::shared_ptr<Transfer> t = conn->owner->shared_from_this();
  if (t->phase == Phase::kConnecting) {
    if ((flags & (EPOLLOUT | EPOLLERR | EPOLLHUP)) == 0) return;
    int err = 0;
    socklen_t len = sizeof err;
    if (::getsockopt(conn->fd.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
    if (err == 0 && (flags & (EPOLLERR | EPOLLHUP)) && !(flags & EPOLLOUT)) err = ECONNREFUSED;
    if (err != 0) {
      t->last_connect_errno = err;
      discard(std::move(t->conn));
      connectNext(t);
      return;
    }
    onConnected(t);
    return;
  }
  if (flags & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) conn->peer_closed = true;
  if ((flags & EPOLLOUT) && !t->request_done) sendSome(t);
  if (t->finished.load(std::memory_order_relaxed) || t->conn.get() != conn) return;
  if ((flags & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) && !t->paused) readSome(t);
}

void Http1UpstreamClient::Worker::sendSome(const std::shared_ptr<Transfer>& t) {
  const std::string& body = t->request.body;
  const size_t body_size = t->send_body ? body.size() : 0;
  while (t->head_sent < t->head.size() || t->body_sent < body_size) {
    iovec iov[2];
    int count = 0;
    if (t->head_sent < t->head.size()) {
      iov[count].iov_base = const_cast<char*>(t->head.data() + t->head_sent);
      iov[count].iov_len = t->head.size() - t->head_sent;
      ++count;
    }
    if (t->body_sent < body_size) {
      iov[count].iov_base = const_cast<char*>(body.data() + t->body_sent);
      iov[count].iov_len = body_size - t->body_sent;
      ++count;
    }
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = static_cast<size_t>(count);
    const ssize_t n = ::sendmsg(t->conn->fd.get(), &msg, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;  // EPOLLOUT follows
      onConnectionError(t, errno);
      return;
    }
    t->request_sent = true;
    size_t left = static_cast<size_t>(n);
    const size_t from_head = std::min(left, t->head.size() - t->head_sent);
    t->head_sent += from_head;
    left -= from_head;
    t->body_sent += left;
  }
  t->request_done = true;
}

void Http1UpstreamClient::Worker::readSome(const std::shared_ptr<Transfer>& t) {
  char* buffer = read_buffer_.get();
  for (;;) {
    const ssize_t n = ::recv(t->conn->fd.get(), buffer, kReadSize, 0);
    if (n > 0) {
      if (!consume(t, buffer, static_cast<size_t>(n), false)) return;
      // A short read drained the socket: the next arrival raises a new edge. Not so for a FIN
      // that came with the data (it raised its edge already): then read on to the end.
      if (static_cast<size_t>(n) < kReadSize && !t->conn->peer_closed) return;
      continue;
    }
    if (n == 0) {
      onEof(t);
      return;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return;
    onConnectionError(t, errno);
    return;
  }
}

bool Http1UpstreamClient::Worker::consume(const std::shared_ptr<Transfer>& t, const char* data,
                                          size_t size, bool from_pending) {
  const size_t used = t->parser.feed(data, size, *t);
  switch (t->parser.state()) {
    case Http1ResponseParser::State::kDone:
      completeOk(t, used < size);
      return false;
    case Http1ResponseParser::State::kError:
      finish(t, UpstreamFailure::kProtocol, "upstream protocol error: " + t->parser.error());
      return false;
    case Http1ResponseParser::State::kAborted:
      finish(t, t->local_failure == UpstreamFailure::kNone ? UpstreamFailure::kProtocol : t->local_failure,
             t->local_message.empty() ? std::string("response aborted") : t->local_message);
      return false;
    case Http1ResponseParser::State::kHead:
    case Http1ResponseParser::State::kBody:
      break;
  }
  if (t->paused) {
    if (from_pending) {
      t->pending_pos += used;
    } else if (used < size) {
      t->pending.assign(data + used, size - used);
      t->pending_pos = 0;
    }
    return false;
  }
  if (from_pending) {
    t->pending.clear();
    t->pending_pos = 0;
  }
  return true;
}

void Http1UpstreamClient::Worker::resumeTransfer(const std::shared_ptr<Transfer>& t) {
  if (t->finished.load(std::memory_order_relaxed) || !t->paused || !t->conn) return;
  t->paused = false;
  if (t->pending_pos < t->pending.size()) {
    if (!consume(t, t->pending.data() + t->pending_pos, t->pending.size() - t->pending_pos, true)) return;
  } else {
    t->pending.clear();
    t->pending_pos = 0;
  }
  // Edge-triggered: whatever arrived while paused raised no new event.
  readSome(t);
}

bool Http1UpstreamClient::Worker::retryOnFreshConnection(const std::shared_ptr<Transfer>& t) {
  // libcurl's rule: a reused connection that fails before any response byte was probably closed
  // by the upstream while idle; the request is sent once more on a new connection.
  if (!t->reused || t->retried || t->parser.anyByte() ||
      t->cancel_requested.load(std::memory_order_relaxed)) {
    return false;
  }
  t->retried = true;
  discard(std::move(t->conn));
  t->head_sent = 0;
  t->body_sent = 0;
  t->request_sent = false;
  t->request_done = false;
  t->parser.reset(t->request.method == "HEAD");
  openConnection(t);
  return true;
}

void Http1UpstreamClient::Worker::onEof(const std::shared_ptr<Transfer>& t) {
  if (retryOnFreshConnection(t)) return;
  const bool any_byte = t->parser.anyByte();
  const bool head_done = t->parser.headDelivered();
  if (t->parser.finishOnEof() == Http1ResponseParser::State::kDone) {
    completeOk(t, false);
    return;
  }
  // As libcurl classifies them: nothing at all (CURLE_GOT_NOTHING) and a body cut short
  // (CURLE_PARTIAL_FILE) are connection failures; a head cut short never was a response.
  if (!any_byte) {
    finish(t, UpstreamFailure::kSendFailed, "upstream connection failed: the upstream closed the connection without answering");
  } else if (!head_done) {
    finish(t, UpstreamFailure::kProtocol, "upstream protocol error: " + t->parser.error());
  } else {
    finish(t, UpstreamFailure::kSendFailed,
           "upstream connection failed mid-response: the upstream closed the connection before the response ended");
  }
}

void Http1UpstreamClient::Worker::onConnectionError(const std::shared_ptr<Transfer>& t, int err) {
  if (retryOnFreshConnection(t)) return;
  finish(t, UpstreamFailure::kSendFailed,
         std::string(t->headers_delivered ? "upstream connection failed mid-response: "
                                          : "upstream connection failed: ") +
             describeErrno(err));
}

void Http1UpstreamClient::Worker::completeOk(const std::shared_ptr<Transfer>& t, bool surplus) {
  // Reusable only when both sides ended their message cleanly on it and nothing else arrived.
  if (t->conn && t->parser.keepAlive() && !surplus && t->request_done && !t->caller_close &&
      !t->conn->peer_closed) {
    ConnPtr conn = std::move(t->conn);
    releaseToPool(std::move(conn));
  }
  finish(t, UpstreamFailure::kNone, {});
}

void Http1UpstreamClient::Worker::onTimeout(const std::shared_ptr<Transfer>& t) {
  const char* message = t->headers_delivered                          ? "upstream timed out while sending the body"
                        : t->phase == Phase::kExchanging && t->request_sent ? "upstream timed out before answering"
                                                                      : "upstream timed out while connecting";
  finish(t, UpstreamFailure::kTimeout, message);
}

void Http1UpstreamClient::Worker::armTimer(Transfer& t, std::optional<SteadyClock::time_point> when) {
  if (t.timer) {
    TimerMap::node_type node = timers_.extract(*t.timer);
    t.timer.reset();
    if (spare_timers_.size() < kSpareNodes) spare_timers_.push_back(std::move(node));
  }
  if (!when) return;
  if (spare_timers_.empty()) {
    t.timer = timers_.emplace(*when, &t);
    return;
  }
  TimerMap::node_type node = std::move(spare_timers_.back());
  spare_timers_.pop_back();
  node.key() = *when;
  node.mapped() = &t;
  t.timer = timers_.insert(std::move(node));
}

void Http1UpstreamClient::Worker::expireTimers() {
  const auto now = SteadyClock::now();
  while (!timers_.empty() && timers_.begin()->first <= now) {
    Transfer* raw = timers_.begin()->second;
    timers_.erase(timers_.begin());
    raw->timer.reset();
    std::shared_ptr<Transfer> t = raw->shared_from_this();
    onTimeout(t);
  }
}

void Http1UpstreamClient::Worker::finish(const std::shared_ptr<Transfer>& t, UpstreamFailure failure,
                                         std::string message) {
  if (t->finished.exchange(true, std::memory_order_acq_rel)) return;
  armTimer(*t, std::nullopt);
  if (t->conn) discard(std::move(t->conn));  // a connection mid-exchange cannot be reused
  core::UpstreamOutcome outcome;
  outcome.failure = failure;
  outcome.message = std::move(message);
  outcome.headers_received = t->headers_delivered;
  outcome.connection_reused = t->reused && (t->request_sent || t->headers_delivered);
  if (outcome.connection_reused) counters_->connections_reused.fetch_add(1, std::memory_order_relaxed);
  outcome.elapsed = std::chrono::duration_cast<std::chrono::microseconds>(SteadyClock::now() - t->started_at);
  counters_->in_flight.fetch_sub(1, std::memory_order_relaxed);
  // Drop what the exchange held even if the caller keeps its handle; the observer lives until
  // onComplete returns.
  std::shared_ptr<core::UpstreamObserver> observer = std::move(t->observer);
  t->request = core::UpstreamRequest{};
  t->endpoint.target = {};  // viewed the URL just dropped
  t->head = std::string{};
  t->pending = std::string{};
  t->addresses = {};
  std::shared_ptr<Transfer> keep = t;  // `t` may reference the map entry erased below
  if (ActiveMap::node_type node = active_.extract(keep.get())) {
    node.mapped().reset();
    if (spare_active_.size() < kSpareNodes) spare_active_.push_back(std::move(node));
  }
  if (observer) {
    try {
      observer->onComplete(outcome);
    } catch (...) {
      // An observer's exception must not unwind through the I/O loop; the exchange is over.
    }
  }
}

void Http1UpstreamClient::Worker::discard(ConnPtr conn) {
  if (!conn) return;
  conn->owner = nullptr;
  conn->close();  // close() drops it from the epoll set as well
  graveyard_.push_back(std::move(conn));
}

void Http1UpstreamClient::Worker::releaseToPool(ConnPtr conn) {
  auto& list = idle_[conn->key];
  if (idle_count_ >= options_.max_idle_connections || list.size() >= options_.max_idle_per_host) {
    discard(std::move(conn));
    return;
  }
  conn->owner = nullptr;
  conn->idle_since = SteadyClock::now();
  list.push_back(std::move(conn));
  ++idle_count_;
}

ConnPtr Http1UpstreamClient::Worker::takeFromPool(const std::string& key) {
  const auto it = idle_.find(key);
  if (it == idle_.end() || it->second.empty()) return nullptr;
  // Most recently used first: the warmest connection, least likely to have been closed.
  ConnPtr conn = std::move(it->second.back());
  it->second.pop_back();
  --idle_count_;
  return conn;
}

void Http1UpstreamClient::Worker::closeIdle(Conn* conn) {
  const auto it = idle_.find(conn->key);
  if (it == idle_.end()) return;
  auto& list = it->second;
  for (size_t i = 0; i < list.size(); ++i) {
    if (list[i].get() == conn) {
      ConnPtr owned = std::move(list[i]);
      list.erase(list.begin() + static_cast<std::ptrdiff_t>(i));
      --idle_count_;
      discard(std::move(owned));
      return;
    }
  }
}

void Http1UpstreamClient::Worker::sweepIdle(SteadyClock::time_point now) {
  const auto limit = now - options_.max_idle_time;
  for (auto it = idle_.begin(); it != idle_.end();) {
    auto& list = it->second;
    // Oldest first (connections are pushed at the back).
    size_t old = 0;
    while (old < list.size() && list[old]->idle_since <= limit) ++old;
    for (size_t i = 0; i < old; ++i) discard(std::move(list[i]));
    list.erase(list.begin(), list.begin() + static_cast<std::ptrdiff_t>(old));
    idle_count_ -= old;
    it = list.empty() ? idle_.erase(it) : std::next(it);
  }
  for (auto it = dns_cache_.begin(); it != dns_cache_.end();) {
    it = it->second.expires <= now ? dns_cache_.erase(it) : std::next(it);
  }
}

// ---------------------------------------------------------------------------------------------

Http1UpstreamClient::Http1UpstreamClient(Http1UpstreamClientOptions options)
    : options_(std::move(options)), counters_(std::make_shared<Counters>()) {
  resolver_ = std::make_unique<Resolver>();
  client_id_ = g_next_client_id.fetch_add(1, std::memory_order_relaxed);
  const unsigned threads = std::max(1u, options_.io_threads);
  workers_.reserve(threads);
  for (unsigned i = 0; i < threads; ++i) {
    workers_.push_back(std::make_shared<Worker>(options_, counters_, resolver_.get(), i, client_id_));
  }
}

std::vector<std::shared_ptr<ReactorGuest>> Http1UpstreamClient::guests() const {
  std::vector<std::shared_ptr<ReactorGuest>> out;
  if (!options_.hosted) return out;
  for (const auto& worker : workers_) out.push_back(worker);
  return out;
}

Http1UpstreamClient::~Http1UpstreamClient() {
  shutdown();
  resolver_->stop();
  workers_.clear();
  resolver_.reset();
}

void Http1UpstreamClient::shutdown() {
  // Stop every thread before destroying any: an observer's onComplete may call start() during
  // shutdown, which reads workers_ (a stopped worker's closed mailbox then completes it inline).
  if (options_.hosted) {
    // Reactor threads may still hold the workers: retiring them ends their loops for good.
    for (auto& worker : workers_) worker->retire();
  } else {
    for (auto& worker : workers_) worker->requestStop();
    for (auto& worker : workers_) worker->join();
  }
}

bool Http1UpstreamClient::handles(std::string_view url) { return startsWithNoCase(url, "http://"); }

std::shared_ptr<core::UpstreamCall> Http1UpstreamClient::start(core::UpstreamRequest request,
                                                               std::shared_ptr<core::UpstreamObserver> observer) {
  if (!observer) observer = std::make_shared<NullObserver>();
  counters_->requests.fetch_add(1, std::memory_order_relaxed);
  counters_->in_flight.fetch_add(1, std::memory_order_relaxed);
  Worker* local = options_.hosted ? Worker::inlineFor(client_id_) : nullptr;
  Worker* worker =
      local ? local : workers_[next_worker_.fetch_add(1, std::memory_order_relaxed) % workers_.size()].get();
  auto transfer = std::make_shared<Transfer>(std::move(request), std::move(observer), worker->mailbox(),
                                             options_.max_header_bytes);
  // On a reactor thread that runs one of our loops: no hand-off to another thread.
  if (local && local->startInline(transfer)) return transfer;
  if (!worker->mailbox()->post(Command{CommandKind::kStart, transfer})) {
    // Shutdown already finished on that thread: nobody else will complete this exchange.
    transfer->finished.store(true, std::memory_order_release);
    counters_->in_flight.fetch_sub(1, std::memory_order_relaxed);
    core::UpstreamOutcome outcome;
    outcome.failure = UpstreamFailure::kCancelled;
    outcome.message = "cancelled: upstream client is shutting down";
    auto obs = std::move(transfer->observer);
    transfer->request = core::UpstreamRequest{};
    try {
      obs->onComplete(outcome);
    } catch (...) {
    }
  }
  return transfer;
}

Http1Stats Http1UpstreamClient::stats() const {
  Http1Stats stats;
  stats.requests = counters_->requests.load(std::memory_order_relaxed);
  stats.connections_opened = counters_->connections_opened.load(std::memory_order_relaxed);
  stats.connections_reused = counters_->connections_reused.load(std::memory_order_relaxed);
  stats.in_flight = counters_->in_flight.load(std::memory_order_relaxed);
  stats.open_connections = counters_->open_sockets.load(std::memory_order_relaxed);
  return stats;
}

bool Http1UpstreamClient::probeIoThreads(std::chrono::milliseconds deadline) {
  auto probe = std::make_shared<Probe>();
  for (auto& worker : workers_) {
    if (!worker->mailbox()->post(Command{CommandKind::kProbe, nullptr, probe})) return false;
  }
  std::unique_lock<std::mutex> lock(probe->mutex);
  return probe->cv.wait_for(lock, deadline, [&] { return probe->answered == workers_.size(); });
}

}  // namespace keyway::daemon
