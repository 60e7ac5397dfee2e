// HTTP/1.1 request parser (RFC 9112) and response serializer; hot path: memchr scans, no regex.
#include "core/http_parser.hpp"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <limits>

#include "core/errors.hpp"
#include "core/text.hpp"

namespace keyway::core {

namespace {

// uri-host [":" port] (RFC 9112 §3.2, RFC 3986 §3.2.2): the characters of reg-name, IP-literal
// and port. Empty is allowed.
bool isValidHostValue(std::string_view v) {
  for (char c : v) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    std::string_view("-._~!$&'()*+,;=%:[]").find(c) != std::string_view::npos;
    if (!ok) return false;
  }
  return true;
}

constexpr size_t kNpos = std::string_view::npos;
// A chunk-size line (size + extensions) longer than this is abuse, not HTTP.
constexpr size_t kMaxChunkLineBytes = 4096;
// Reserve at most this much for a declared Content-Length: a client may announce 32 MiB and send
// nothing, and the reservation must not turn into a memory amplifier across many connections.
constexpr size_t kMaxBodyReserve = 1 << 20;
// Buffers that grew beyond this are released by reset() instead of being kept for reuse.
constexpr size_t kKeepCapacity = 64 << 10;

// The registered transfer codings (IANA); any other is "unknown" and gets 501.
bool isKnownCoding(std::string_view name) {
  return iequals(name, "chunked") || iequals(name, "gzip") || iequals(name, "deflate") ||
         iequals(name, "compress") || iequals(name, "x-gzip") || iequals(name, "x-compress") ||
         iequals(name, "identity");
}

// Splits one header/trailer field line (terminator removed) into name and trimmed value.
// Returns nullptr on success, else a message saying what is wrong (never quoting the value).
const char* parseFieldLine(std::string_view line, std::string_view& name, std::string_view& value) {
  if (isOws(line[0])) {
    return "obsolete line folding (a header line starting with whitespace) is not allowed; "
           "send each header field on a single line";
  }
  size_t i = 0;
  while (i < line.size() && isTokenChar(line[i])) ++i;
  if (i == line.size()) return "malformed header line: missing ':' after the field name";
  if (line[i] != ':') {
    if (isOws(line[i])) return "whitespace between a header field name and ':' is not allowed";
    if (line[i] == '\r') return "bare CR in a header line; lines must end with CRLF";
    return "invalid character in a header field name (only RFC 9110 token characters allowed)";
  }
  if (i == 0) return "empty header field name";
  name = line.substr(0, i);
  value = trimOws(line.substr(i + 1));
  if (const size_t bad = findNonFieldValueChar(value); bad != std::string_view::npos) {
    if (value[bad] == '\r') return "bare CR in a header value; lines must end with CRLF";
    if (value[bad] == '\0') return "NUL byte in a header value";
    return "control character in a header value";
  }
  return nullptr;
}

}  // namespace

RequestParser::RequestParser(ParserLimits limits) : limits_(limits) {}

void RequestParser::fail(ErrorCode code, std::string message) {
  state_ = State::kError;
  error_ = Error::make(code, std::move(message));
}

void RequestParser::complete() {
  state_ = State::kComplete;
  phase_ = Phase::kDone;
}

bool RequestParser::keepAlive() const {
  if (state_ == State::kError || !head_complete_ || conn_close_) return false;
  return version_minor_ >= 1 || conn_keep_alive_;
}

bool RequestParser::expectContinue() const {
  return state_ == State::kNeedMore && head_complete_ && expect_continue_ &&
         version_minor_ >= 1 && (phase_ == Phase::kFixedBody || phase_ == Phase::kChunkedBody);
}

std::optional<uint64_t> RequestParser::contentLength() const {
  if (!has_cl_) return std::nullopt;
  return content_length_;
}

void RequestParser::reset() {
  state_ = State::kNeedMore;
  phase_ = Phase::kHead;
  head_complete_ = false;
  request_.method.clear();
  request_.target.clear();
  request_.version_minor = 1;
  request_.headers.clear();
  request_.body.clear();
  if (request_.body.capacity() > kKeepCapacity) std::string().swap(request_.body);
  error_ = Error{};

  head_buf_.clear();
  if (head_buf_.capacity() > kKeepCapacity) std::string().swap(head_buf_);
  skipped_ = 0;
  started_ = false;
  line_start_ = 0;
  line_end_ = 0;
  method_checked_ = 0;
  scan_pos_ = 0;

  version_minor_ = 1;
  conn_close_ = false;
  conn_keep_alive_ = false;
  expect_continue_ = false;
  has_cl_ = false;
  content_length_ = 0;
  has_te_ = false;
  chunked_ = false;
  host_count_ = 0;
  te_codings_ = 0;
  te_chunked_count_ = 0;
  te_last_chunked_ = false;
  te_last_known_ = false;
  te_syntax_error_ = false;
  te_unsupported_.clear();

  remaining_ = 0;
  chunk_state_ = ChunkState::kSize;
  chunk_size_ = 0;
  chunk_digits_ = 0;
  chunk_line_bytes_ = 0;
  trailer_line_.clear();
  if (trailer_line_.capacity() > kKeepCapacity) std::string().swap(trailer_line_);
  trailer_bytes_ = 0;
  trailer_count_ = 0;
}

size_t RequestParser::feed(std::string_view data) {
  if (state_ != State::kNeedMore) return 0;
  size_t used = 0;
  if (phase_ == Phase::kHead) {
    used = feedHead(data);
    if (state_ != State::kNeedMore || phase_ == Phase::kHead) return used;
  }
  if (phase_ == Phase::kFixedBody) {
    used += feedFixed(data.substr(used));
  } else if (phase_ == Phase::kChunkedBody) {
    used += feedChunked(data.substr(used));
  }
  return used;
}

size_t RequestParser::feedHead(std::string_view data) {
  const size_t max = limits_.max_header_bytes;
  // Invariant: skipped_ <= max. Looking at one byte more than allowed is enough to know the
  // head is too large, and bounds both the copy and the scan whatever the caller hands us.
  const size_t cap = max - skipped_ + 1;
  const size_t prior = head_buf_.size();
  std::string_view v;
  size_t taken = 0;
  if (prior == 0) {
    // Fast path: the whole head is usually in one read; parse it in place, no copy.
    taken = std::min(data.size(), cap);
    v = data.substr(0, taken);
  } else {
    taken = std::min(data.size(), cap > prior ? cap - prior : 0);
    head_buf_.append(data.data(), taken);
    v = head_buf_;
  }

  const size_t end = scanHead(v);
  if (state_ == State::kError) return taken;
  if (end != kNpos) {
    const size_t consumed = end - prior;
    if (skipped_ + end > max) {
      fail(ErrorCode::kHeadersTooLarge, "request line and headers exceed " +
                                            std::to_string(max) + " bytes; send fewer or smaller headers");
      return consumed;
    }
    if (parseHeaderBlock(v.substr(line_end_, end - line_end_))) finishHead();
    head_buf_.clear();
    skipped_ = 0;
    started_ = false;
    line_start_ = line_end_ = method_checked_ = scan_pos_ = 0;
    return consumed;
  }
  if (skipped_ + v.size() > max) {
    fail(ErrorCode::kHeadersTooLarge, "request line and headers exceed " + std::to_string(max) +
                                          " bytes; send fewer or smaller headers");
    return taken;
  }
  if (prior == 0) {
    // Keep the partial head for the next feed; drop the leading empty lines already skipped.
    head_buf_.assign(v.substr(line_start_));
    skipped_ += line_start_;
    scan_pos_ -= std::min(scan_pos_, line_start_);
    if (line_end_ != 0) line_end_ -= line_start_;
    line_start_ = 0;
  }
  return taken;
}

size_t RequestParser::scanHead(std::string_view v) {
  const char* base = v.data();
  const size_t n = v.size();
  if (!started_) {
    // RFC 9112 §2.2: ignore empty lines received before the request line.
    size_t i = line_start_;
    while (i < n) {
      if (base[i] == '\n') {
        ++i;
      } else if (base[i] == '\r') {
        if (i + 1 == n) break;  // Wait for the LF.
        if (base[i + 1] != '\n') {
          fail(ErrorCode::kBadRequest, "bare CR before the request line; lines must end with CRLF");
          return kNpos;
        }
        i += 2;
      } else {
        started_ = true;
        break;
      }
    }
    line_start_ = i;
    if (!started_) return kNpos;
    scan_pos_ = line_start_;
    method_checked_ = 0;
  }

  if (line_end_ == 0) {
    const void* nl = scan_pos_ < n ? std::memchr(base + scan_pos_, '\n', n - scan_pos_) : nullptr;
    if (nl == nullptr) {
      // Fail fast on bytes that cannot start an HTTP request (TLS, HTTP/2 frames, binary junk)
      // instead of buffering them up to the header limit.
      size_t i = line_start_ + method_checked_;
      while (i < n && base[i] != ' ') {
        if (!isTokenChar(base[i])) {
          fail(ErrorCode::kBadRequest,
               "malformed request line: invalid character in the method (keyway speaks plain "
               "HTTP/1.1: 'METHOD /<upstream>/path HTTP/1.1')");
          return kNpos;
        }
        ++i;
      }
      method_checked_ = i - line_start_;
      scan_pos_ = n;
      return kNpos;
    }
    const size_t nl_pos = static_cast<size_t>(static_cast<const char*>(nl) - base);
    std::string_view line = v.substr(line_start_, nl_pos - line_start_);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (!parseRequestLine(line)) return kNpos;
    line_end_ = nl_pos + 1;
    scan_pos_ = nl_pos;  // The blank-line search starts at the request line's LF.
  }

  // The head ends at the first empty line: LF followed by LF or by CRLF.
  size_t i = scan_pos_;
  while (i < n) {
    const void* p = std::memchr(base + i, '\n', n - i);
    if (p == nullptr) break;
    i = static_cast<size_t>(static_cast<const char*>(p) - base);
    if (i + 1 >= n) {
      scan_pos_ = i;
      return kNpos;
    }
    if (base[i + 1] == '\n') return i + 2;
    if (base[i + 1] == '\r') {
      if (i + 2 >= n) {
        scan_pos_ = i;
        return kNpos;
      }
      if (base[i + 2] == '\n') return i + 3;
    }
    ++i;
  }
  scan_pos_ = n;
  return kNpos;
}

bool RequestParser::parseRequestLine(std::string_view line) {
  const size_t n = line.size();
  size_t i = 0;
  while (i < n && isTokenChar(line[i])) ++i;
  if (i == 0 || i == n || line[i] != ' ') {
    fail(ErrorCode::kBadRequest,
         i == 0 ? "malformed request line: missing or invalid method (expected "
                  "'METHOD /<upstream>/path HTTP/1.1')"
                : "malformed request line: invalid character in the method or missing "
                  "request-target (expected 'METHOD /<upstream>/path HTTP/1.1')");
    return false;
  }
  const size_t method_end = i;
  const size_t target_begin = ++i;
  while (i < n && line[i] > 0x20 && line[i] < 0x7F) ++i;
  if (i == target_begin) {
    fail(ErrorCode::kBadRequest,
         "malformed request line: missing request-target or more than one space after the method");
    return false;
  }
  if (i == n) {
    fail(ErrorCode::kBadRequest,
         "malformed request line: missing HTTP version (HTTP/0.9 is not supported; use HTTP/1.1)");
    return false;
  }
  if (line[i] != ' ') {
    fail(ErrorCode::kBadRequest,
         "the request-target contains a space, control character or non-ASCII byte; "
         "percent-encode it");
    return false;
  }
  const std::string_view version = line.substr(i + 1);
  int minor = -1;
  if (version == "HTTP/1.1") {
    minor = 1;
  } else if (version == "HTTP/1.0") {
    minor = 0;
  }
  if (minor < 0) {
    const bool shaped = version.size() == 8 && version.substr(0, 5) == "HTTP/" &&
                        version[5] >= '0' && version[5] <= '9' && version[6] == '.' &&
                        version[7] >= '0' && version[7] <= '9';
    if (shaped && version[5] >= '2') {
      fail(ErrorCode::kBadRequest,
           "HTTP/2 and later are not supported on this port (no h2c); use HTTP/1.1");
    } else if (shaped) {
      fail(ErrorCode::kBadRequest, "unsupported HTTP version; use HTTP/1.1 or HTTP/1.0");
    } else {
      fail(ErrorCode::kBadRequest,
           "malformed request line: the HTTP version must be exactly 'HTTP/1.1' or 'HTTP/1.0'");
    }
    return false;
  }
  request_.method.assign(line.data(), method_end);
  request_.target.assign(line.data() + target_begin, i - target_begin);
  request_.version_minor = minor;
  version_minor_ = minor;
  return true;
}

bool RequestParser::parseHeaderBlock(std::string_view block) {
  const char* p = block.data();
  const char* const e = p + block.size();
  size_t count = 0;
  // The server usually moves the request out, so the vector starts empty: avoid its regrowth.
  if (request_.headers.capacity() == 0) request_.headers.reserve(16);
  while (p < e) {
    const void* nl = std::memchr(p, '\n', static_cast<size_t>(e - p));
    if (nl == nullptr) break;  // Cannot happen: the block ends with the blank line.
    std::string_view line(p, static_cast<size_t>(static_cast<const char*>(nl) - p));
    p = static_cast<const char*>(nl) + 1;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) break;
    std::string_view name, value;
    if (const char* msg = parseFieldLine(line, name, value)) {
      fail(ErrorCode::kBadRequest, msg);
      return false;
    }
    if (++count > limits_.max_headers) {
      fail(ErrorCode::kHeadersTooLarge, "more than " + std::to_string(limits_.max_headers) +
                                            " header fields; send fewer headers");
      return false;
    }
    request_.headers.push_back(Header{std::string(name), std::string(value)});

    // Only the fields that decide framing and connection handling are interpreted here.
    switch (name.size()) {
      case 4:
        if (iequals(name, "Host")) {
          if (++host_count_ > 1) {
            fail(ErrorCode::kBadRequest, "more than one Host header field");
            return false;
          }
          if (!isValidHostValue(value)) {
            fail(ErrorCode::kBadRequest, "the Host header field is not a host[:port]");
            return false;
          }
        }
        break;
      case 6:
        if (iequals(name, "Expect") && iequals(value, "100-continue")) expect_continue_ = true;
        break;
      case 10:
        if (iequals(name, "Connection")) {
          forEachListElement(value, [this](std::string_view opt) {
            if (iequals(opt, "close")) conn_close_ = true;
            if (iequals(opt, "keep-alive")) conn_keep_alive_ = true;
            return false;
          });
        }
        break;
      case 14:
        if (iequals(name, "Content-Length")) {
          if (value.empty()) {
            fail(ErrorCode::kBadRequest, "empty Content-Length header");
            return false;
          }
          uint64_t cl = 0;
          for (char c : value) {
            if (c < '0' || c > '9') {
              fail(ErrorCode::kBadRequest,
                   "Content-Length must be a single non-negative decimal number");
              return false;
            }
            const auto d = static_cast<uint64_t>(c - '0');
            if (cl > (std::numeric_limits<uint64_t>::max() - d) / 10) {
              fail(ErrorCode::kBadRequest, "Content-Length is too large (overflow)");
              return false;
            }
            cl = cl * 10 + d;
          }
          if (has_cl_ && cl != content_length_) {
            fail(ErrorCode::kBadRequest,
                 "conflicting Content-Length header fields; send exactly one");
            return false;
          }
          has_cl_ = true;
          content_length_ = cl;
        }
        break;
      case 17:
        if (iequals(name, "Transfer-Encoding")) {
          has_te_ = true;
          // Empty list elements are ignored (RFC 9110 §5.6.1).
          forEachListElement(value, [this](std::string_view elem) {
            ++te_codings_;
            const size_t semi = elem.find(';');
            const std::string_view coding =
                semi == kNpos ? elem : trimOws(elem.substr(0, semi));
            if (!isToken(coding)) {
              te_syntax_error_ = true;
              te_last_chunked_ = te_last_known_ = false;
              return false;
            }
            const bool is_chunked = iequals(coding, "chunked");
            if (is_chunked && semi != kNpos) {
              // chunked takes no parameters (RFC 9112 §7.1); "chunked;x=y" cannot be trusted.
              te_syntax_error_ = true;
              te_last_chunked_ = te_last_known_ = false;
              return false;
            }
            if (is_chunked) ++te_chunked_count_;
            te_last_chunked_ = is_chunked;
            te_last_known_ = isKnownCoding(coding);
            if (!is_chunked && te_unsupported_.empty()) {
              te_unsupported_.assign(coding.substr(0, 40));
            }
            return false;
          });
        }
        break;
      default:
        break;
    }
  }
  return true;
}

bool RequestParser::finishHead() {
  head_complete_ = true;
  // RFC 9112 §3.2: a server MUST answer 400 to an HTTP/1.1 request without a Host field.
  if (version_minor_ >= 1 && host_count_ == 0) {
    fail(ErrorCode::kBadRequest, "an HTTP/1.1 request needs a Host header field (RFC 9112 section 3.2)");
    return false;
  }
  if (has_te_) {
    // RFC 9112 §6.1 and §6.3: these are the request-smuggling guards.
    if (has_cl_) {
      fail(ErrorCode::kBadRequest,
           "both Content-Length and Transfer-Encoding are present; send only one");
      return false;
    }
    if (version_minor_ == 0) {
      fail(ErrorCode::kBadRequest, "Transfer-Encoding is not allowed in an HTTP/1.0 request");
      return false;
    }
    if (te_codings_ == 0 || te_syntax_error_) {
      fail(ErrorCode::kBadRequest, "malformed Transfer-Encoding header");
      return false;
    }
    if (te_chunked_count_ > 1) {
      fail(ErrorCode::kBadRequest, "the chunked transfer coding is applied more than once");
      return false;
    }
    if (!te_last_chunked_ && te_last_known_) {
      fail(ErrorCode::kBadRequest,
           "chunked must be the final transfer coding of a request; send "
           "'Transfer-Encoding: chunked' or a Content-Length");
      return false;
    }
    if (!te_unsupported_.empty()) {
      fail(ErrorCode::kNotImplemented,
           "transfer coding '" + te_unsupported_ +
               "' is not implemented; only chunked is (or send a Content-Length)");
      return false;
    }
    chunked_ = true;
    phase_ = Phase::kChunkedBody;
    chunk_state_ = ChunkState::kSize;
    return true;
  }
  if (has_cl_) {
    if (content_length_ > limits_.max_body_bytes) {
      fail(ErrorCode::kPayloadTooLarge,
           "request body of " + std::to_string(content_length_) + " bytes exceeds the limit of " +
               std::to_string(limits_.max_body_bytes) + " bytes");
      return false;
    }
    if (content_length_ == 0) {
      complete();
      return true;
    }
    remaining_ = content_length_;
    request_.body.reserve(static_cast<size_t>(std::min<uint64_t>(content_length_, kMaxBodyReserve)));
    phase_ = Phase::kFixedBody;
    return true;
  }
  complete();  // RFC 9112 §6.3: a request without CL or TE has no body.
  return true;
}

size_t RequestParser::feedFixed(std::string_view data) {
  const auto take = static_cast<size_t>(std::min<uint64_t>(remaining_, data.size()));
  request_.body.append(data.data(), take);
  remaining_ -= take;
  if (remaining_ == 0) complete();
  return take;
}

bool RequestParser::onChunkSizeLine() {
  chunk_line_bytes_ = 0;
  chunk_digits_ = 0;
  if (chunk_size_ == 0) {
    chunk_state_ = ChunkState::kTrailer;
    trailer_line_.clear();
    return true;
  }
  remaining_ = chunk_size_;
  chunk_size_ = 0;
  chunk_state_ = ChunkState::kData;
  return true;
}

bool RequestParser::onTrailerLine() {
  std::string_view line = trailer_line_;
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (line.empty()) {
    complete();
    return true;
  }
  std::string_view name, value;
  if (const char* msg = parseFieldLine(line, name, value)) {
    fail(ErrorCode::kBadRequest, std::string("in the chunked trailer section: ") + msg);
    return false;
  }
  if (++trailer_count_ > limits_.max_headers) {
    fail(ErrorCode::kHeadersTooLarge,
         "more than " + std::to_string(limits_.max_headers) + " trailer fields");
    return false;
  }
  // Trailers are validated and dropped: keyway forwards the body with a Content-Length.
  trailer_line_.clear();
  return true;
}

size_t RequestParser::feedChunked(std::string_view data) {
  const char* const d = data.data();
  const size_t n = data.size();
  size_t i = 0;
  while (i < n && state_ == State::kNeedMore) {
    switch (chunk_state_) {
      case ChunkState::kSize: {
        const char c = d[i];
        const int h = hexValue(c);
        if (h >= 0) {
          if (chunk_size_ > (std::numeric_limits<uint64_t>::max() >> 4)) {
            fail(ErrorCode::kBadRequest, "chunk size overflows");
            return i;
          }
          chunk_size_ = chunk_size_ * 16 + static_cast<uint64_t>(h);
          ++chunk_digits_;
          if (chunk_size_ > limits_.max_body_bytes - request_.body.size()) {
            fail(ErrorCode::kPayloadTooLarge, "chunked request body exceeds the limit of " +
                                                  std::to_string(limits_.max_body_bytes) +
                                                  " bytes");
            return i;
          }
          if (++chunk_line_bytes_ > kMaxChunkLineBytes) {
            fail(ErrorCode::kBadRequest, "chunk size line is too long");
            return i;
          }
          ++i;
          break;
        }
        if (chunk_digits_ == 0) {
          fail(ErrorCode::kBadRequest,
               "malformed chunked body: expected a hexadecimal chunk size");
          return i;
        }
        ++i;
        if (c == ';') {
          chunk_state_ = ChunkState::kExt;
        } else if (isOws(c)) {
          chunk_state_ = ChunkState::kSizeWs;
        } else if (c == '\r') {
          chunk_state_ = ChunkState::kSizeLf;
        } else if (c == '\n') {
          onChunkSizeLine();
        } else {
          fail(ErrorCode::kBadRequest, "malformed chunked body: invalid character in a chunk size");
          return i - 1;
        }
        break;
      }
      case ChunkState::kSizeWs: {
        // BWS is only allowed before a chunk extension (RFC 9112 §7.1.1).
        const char c = d[i];
        if (isOws(c)) {
          if (++chunk_line_bytes_ > kMaxChunkLineBytes) {
            fail(ErrorCode::kBadRequest, "chunk size line is too long");
            return i;
          }
          ++i;
        } else if (c == ';') {
          ++i;
          chunk_state_ = ChunkState::kExt;
        } else {
          fail(ErrorCode::kBadRequest, "malformed chunked body: whitespace after a chunk size");
          return i;
        }
        break;
      }
      case ChunkState::kExt: {
        // Extensions are skipped, but still may not carry CTLs (no bare CR smuggling).
        while (i < n) {
          const char c = d[i];
          if (c == '\r' || c == '\n') break;
          if (!isFieldValueChar(c)) {
            fail(ErrorCode::kBadRequest, "invalid byte in a chunk extension");
            return i;
          }
          if (++chunk_line_bytes_ > kMaxChunkLineBytes) {
            fail(ErrorCode::kBadRequest, "chunk extension is too long");
            return i;
          }
          ++i;
        }
        if (i < n) {
          const char c = d[i++];
          if (c == '\r') {
            chunk_state_ = ChunkState::kSizeLf;
          } else {
            onChunkSizeLine();
          }
        }
        break;
      }
      case ChunkState::kSizeLf:
        if (d[i] != '\n') {
          fail(ErrorCode::kBadRequest, "malformed chunked body: bare CR in a chunk size line");
          return i;
        }
        ++i;
        onChunkSizeLine();
        break;
      case ChunkState::kData: {
        const auto take = static_cast<size_t>(std::min<uint64_t>(remaining_, n - i));
        request_.body.append(d + i, take);
        i += take;
        remaining_ -= take;
        if (remaining_ == 0) chunk_state_ = ChunkState::kDataCr;
        break;
      }
      case ChunkState::kDataCr:
        if (d[i] == '\r') {
          chunk_state_ = ChunkState::kDataLf;
        } else if (d[i] == '\n') {
          chunk_state_ = ChunkState::kSize;
        } else {
          fail(ErrorCode::kBadRequest,
               "malformed chunked body: chunk data is longer than its size or not followed by "
               "CRLF");
          return i;
        }
        ++i;
        break;
      case ChunkState::kDataLf:
        if (d[i] != '\n') {
          fail(ErrorCode::kBadRequest, "malformed chunked body: bare CR after chunk data");
          return i;
        }
        ++i;
        chunk_state_ = ChunkState::kSize;
        break;
      case ChunkState::kTrailer: {
        const void* nl = std::memchr(d + i, '\n', n - i);
        const size_t upto =
            nl != nullptr ? static_cast<size_t>(static_cast<const char*>(nl) - d) : n;
        trailer_bytes_ += upto - i + (nl != nullptr ? 1 : 0);
        if (trailer_bytes_ > limits_.max_header_bytes) {
          fail(ErrorCode::kHeadersTooLarge,
               "chunked trailer section exceeds " + std::to_string(limits_.max_header_bytes) +
                   " bytes");
          return i;
        }
        trailer_line_.append(d + i, upto - i);
        i = upto;
        if (nl != nullptr) {
          ++i;
          onTrailerLine();
        }
        break;
      }
    }
  }
  return i;
}

// ---------------------------------------------------------------------------------------------
// Serialization.

void appendResponseHead(std::string& out, int status, std::string_view reason,
                        const Headers& headers, std::optional<size_t> content_length,
                        bool chunked, bool close, int request_version_minor) {
  if (status < 100 || status > 999) status = 500;
  if (findNonFieldValueChar(reason) != std::string_view::npos) reason = {};  // CR/LF would split the status line
  if (reason.empty()) reason = reasonPhrase(status);

  // Sized once, then written through a cursor: a head is ~20 pieces, and as many append calls
  // cost more than the bytes. kTail covers what follows the fields: the longest framing line
  // ("Content-Length: " + 20 digits + CRLF), the longest Connection line and the blank line.
  constexpr size_t kTail = 38 + 24 + 2;
  size_t need = 9 + 4 + reason.size() + 2 + kTail;
  for (const auto& h : headers) need += h.name.size() + h.value.size() + 4;
  const size_t base = out.size();
  out.resize(base + need);
  char* w = out.data() + base;
  auto put = [&w](const char* data, size_t n) {
    std::memcpy(w, data, n);
    w += n;
  };

  put("HTTP/1.1 ", 9);
  *w++ = static_cast<char>('0' + status / 100);
  *w++ = static_cast<char>('0' + (status / 10) % 10);
  *w++ = static_cast<char>('0' + status % 10);
  *w++ = ' ';
  put(reason.data(), reason.size());
  put("\r\n", 2);

  for (const auto& h : headers) {
    if (!isToken(h.name)) continue;
    if (iequals(h.name, "Content-Length") || iequals(h.name, "Transfer-Encoding") ||
        iequals(h.name, "Connection")) {
      continue;
    }
    if (findNonFieldValueChar(h.value) != std::string_view::npos) continue;
    put(h.name.data(), h.name.size());
    put(": ", 2);
    put(h.value.data(), h.value.size());
    put("\r\n", 2);
  }

  const bool informational = status < 200;
  // 1xx and 204 never have a body (RFC 9110 §6.4.1); a 304's Content-Length would describe the
  // selected representation, not this message, so none is sent.
  const bool bodiless = informational || status == 204 || status == 304;
  if (!bodiless) {
    if (content_length.has_value()) {
      put("Content-Length: ", 16);
      w = std::to_chars(w, w + 20, static_cast<uint64_t>(*content_length)).ptr;
      put("\r\n", 2);
    } else if (chunked && request_version_minor >= 1) {
      put("Transfer-Encoding: chunked\r\n", 28);
    } else {
      close = true;  // No length: the body can only be delimited by closing the connection.
    }
  }
  if (!informational) {
    if (close) {
      put("Connection: close\r\n", 19);
    } else if (request_version_minor == 0) {
      put("Connection: keep-alive\r\n", 24);
    }
  }
  put("\r\n", 2);
  out.resize(static_cast<size_t>(w - out.data()));
}

void appendChunk(std::string& out, std::string_view data) {
  if (data.empty()) return;
  char buf[20];
  auto r = std::to_chars(buf, buf + sizeof(buf), static_cast<uint64_t>(data.size()), 16);
  out.reserve(out.size() + static_cast<size_t>(r.ptr - buf) + data.size() + 4);
  out.append(buf, static_cast<size_t>(r.ptr - buf));
  out.append("\r\n", 2);
  out.append(data.data(), data.size());
  out.append("\r\n", 2);
}

void appendLastChunk(std::string& out) { out.append("0\r\n\r\n", 5); }

}  // namespace keyway::core
