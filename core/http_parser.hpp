// HTTP/1.1 wire layer: an incremental, allocation-light request parser and the response serializer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "core/http_types.hpp"
#include "core/result.hpp"
#include "core/text.hpp"

namespace keyway::core {

struct ParserLimits {
  size_t max_header_bytes = 64 << 10;  // request line + header fields + blank line (also: trailers)
  size_t max_headers = 100;            // header fields (and, separately, trailer fields)
  size_t max_body_bytes = 32 << 20;    // de-chunked body
};

// Incremental HTTP/1.1 request parser (RFC 9112), one instance per connection.
//
// Contract: feed() the bytes read from the socket; it consumes bytes of at most ONE request and
// returns how many it consumed. Bytes after the end of a request are left to the caller, who
// keeps them and feeds them again after reset() (pipelining). While the head is incomplete every
// byte given is consumed (the parser buffers a partial head internally, up to max_header_bytes).
// After kComplete or kError, feed() consumes nothing until reset().
//
// Errors (state kError, see error()): kBadRequest (malformed syntax, CRLF/NUL injection, obs-fold,
// bad or conflicting Content-Length, Content-Length together with Transfer-Encoding, bad chunk
// framing, HTTP version other than 1.0/1.1), kHeadersTooLarge (head or trailers above
// max_header_bytes, or more than max_headers fields), kPayloadTooLarge (Content-Length above
// max_body_bytes, reported right after the head and before any body byte is read; or a chunked
// body growing past it), kNotImplemented (a transfer coding other than chunked). After an error
// the framing of the connection is lost: the server answers and closes (keepAlive() is false).
// Messages say what is wrong; they never quote header values.
//
// Host (RFC 9112 §3.2): an HTTP/1.1 request without one, with more than one, or with a value
// that is not a uri-host [":" port] (characters outside unreserved, sub-delims, '%', ':', '[',
// ']') is a kBadRequest. An empty value is allowed (a target without authority). keyway routes on
// the target and never forwards Host.
//
// Accepted leniencies: bare LF as line terminator (RFC 9112 §2.2), empty lines before the request
// line (RFC 9112 §2.2).
//
// Thread-safety: none; one parser per connection, used by one thread at a time.
class RequestParser {
 public:
  enum class State { kNeedMore, kComplete, kError };

  explicit RequestParser(ParserLimits limits = ParserLimits{});

  size_t feed(std::string_view data);
  State state() const { return state_; }
  // Request line and header fields are parsed (true from then until reset(), also once complete).
  bool headComplete() const { return head_complete_; }
  // The request; complete only in kComplete: method, raw target (byte for byte), version_minor,
  // header fields in order and as sent (Content-Length/Transfer-Encoding included), de-chunked
  // body. The caller may move from it; reset() clears it.
  HttpRequest& request() { return request_; }
  // Meaningful in kError.
  const Error& error() const { return error_; }
  // Once the head is parsed: HTTP/1.1 unless "Connection: close"; HTTP/1.0 only with
  // "Connection: keep-alive". False in kError and before the head is complete.
  bool keepAlive() const;
  // True when an HTTP/1.1 request carries "Expect: 100-continue" and has a body to read (the
  // server then sends "100 Continue" before reading it; never in kError, e.g. after an early 413).
  bool expectContinue() const;
  // The declared Content-Length, if the request had one (valid once headComplete()).
  std::optional<uint64_t> contentLength() const;
  bool chunked() const { return chunked_; }
  // Ready for the next request on the same connection. Releases buffers that grew large.
  void reset();

 private:
  enum class Phase { kHead, kFixedBody, kChunkedBody, kDone };
  enum class ChunkState { kSize, kSizeWs, kExt, kSizeLf, kData, kDataCr, kDataLf, kTrailer };

  size_t feedHead(std::string_view data);
  size_t feedFixed(std::string_view data);
  size_t feedChunked(std::string_view data);
  // Scans `v` (the head bytes seen so far); returns the end of the head (index after the blank
  // line) or npos when more bytes are needed. Sets kError on a violation.
  size_t scanHead(std::string_view v);
  bool parseRequestLine(std::string_view line);
  bool parseHeaderBlock(std::string_view block);
  bool finishHead();
  bool onChunkSizeLine();
  bool onTrailerLine();
  void fail(ErrorCode code, std::string message);
  void complete();

  ParserLimits limits_;
  State state_ = State::kNeedMore;
  Phase phase_ = Phase::kHead;
  bool head_complete_ = false;
  HttpRequest request_;
  Error error_;

  // Head scanning. Indices are into the current view (data or head_buf_).
  std::string head_buf_;
  size_t skipped_ = 0;        // leading empty-line bytes dropped in earlier feeds
  bool started_ = false;      // request line start found (after leading empty lines)
  size_t line_start_ = 0;     // start of the request line
  size_t line_end_ = 0;       // index after the request line's LF; 0 = not parsed yet
  size_t method_checked_ = 0; // bytes of the method already validated
  size_t scan_pos_ = 0;       // where the search for the blank line resumes

  // Semantics gathered from the request line and header fields (kept apart from request_,
  // which the caller may move from).
  int version_minor_ = 1;
  bool conn_close_ = false;
  bool conn_keep_alive_ = false;
  bool expect_continue_ = false;
  bool has_cl_ = false;
  uint64_t content_length_ = 0;
  bool has_te_ = false;
  bool chunked_ = false;
  size_t host_count_ = 0;
  size_t te_codings_ = 0;
  size_t te_chunked_count_ = 0;
  bool te_last_chunked_ = false;
  bool te_last_known_ = false;  // last coding is a registered one (gzip, deflate, ...)
  bool te_syntax_error_ = false;
  std::string te_unsupported_;  // first coding we do not implement, for the 501 message

  // Body.
  uint64_t remaining_ = 0;  // fixed body bytes left, or bytes left in the current chunk
  ChunkState chunk_state_ = ChunkState::kSize;
  uint64_t chunk_size_ = 0;
  size_t chunk_digits_ = 0;
  size_t chunk_line_bytes_ = 0;
  std::string trailer_line_;
  size_t trailer_bytes_ = 0;
  size_t trailer_count_ = 0;
};

// Appends "HTTP/1.1 <status> <reason>\r\n", the headers, then framing headers and the blank line.
// - reason empty (or containing a CTL) -> reasonPhrase(status). A status outside 100..999 is
//   written as 500.
// - Header fields whose name is not a token or whose value holds a CTL other than HTAB (CR, LF,
//   NUL, ...) are dropped, so nothing can inject a line. Content-Length, Transfer-Encoding and
//   Connection in `headers` are dropped too: framing comes only from the parameters below.
// - content_length set -> "Content-Length: n"; else chunked -> "Transfer-Encoding: chunked"
//   (content_length wins when both are given). For 1xx, 204 and 304 no framing header is
//   written (those responses never have a body).
// - HTTP/1.0 clients (request_version_minor == 0) cannot receive chunked: with chunked and no
//   content_length the head gets no framing header and "Connection: close"; the caller then
//   writes the body raw (not through appendChunk) and closes the connection.
// - close -> "Connection: close"; else for HTTP/1.0 clients -> "Connection: keep-alive". 1xx
//   responses (e.g. "100 Continue") never get a Connection header.
// No Date header. Thread-safe (pure function).
void appendResponseHead(std::string& out, int status, std::string_view reason,
                        const Headers& headers, std::optional<size_t> content_length,
                        bool chunked, bool close, int request_version_minor);
// One chunk: "<hex size>\r\n<data>\r\n". Empty data writes nothing (it would end the body).
void appendChunk(std::string& out, std::string_view data);
// The last chunk and the end of the (empty) trailer section: "0\r\n\r\n".
void appendLastChunk(std::string& out);

}  // namespace keyway::core
