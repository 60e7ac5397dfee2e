// Unit tests for the HTTP/1.1 request parser and the response serializer (core/http_parser).
#include "core/http_parser.hpp"

#include <doctest/doctest.h>

#include <string>
#include <vector>

using keyway::core::appendChunk;
using keyway::core::appendLastChunk;
using keyway::core::appendResponseHead;
using keyway::core::ErrorCode;
using keyway::core::Headers;
using keyway::core::headerValue;
using keyway::core::HttpRequest;
using keyway::core::ParserLimits;
using keyway::core::RequestParser;
using State = RequestParser::State;

namespace {

struct Outcome {
  std::vector<HttpRequest> requests;
  State final_state = State::kNeedMore;
  ErrorCode error_code = ErrorCode::kInternal;
  std::string error_message;
  std::vector<bool> keep_alive;
  std::string leftover;  // bytes not consumed when parsing stopped
};

// Feeds `input` in pieces of `step` bytes (0 = all at once) the way the server does: keeps what
// feed() did not consume and feeds it again after reset() (pipelining).
Outcome parseAll(std::string_view input, size_t step = 0, ParserLimits limits = ParserLimits{}) {
  Outcome out;
  RequestParser p(limits);
  std::string pending;
  size_t pos = 0;
  if (step == 0) step = input.size() == 0 ? 1 : input.size();
  while (true) {
    bool progressed = false;
    while (!pending.empty()) {
      const size_t used = p.feed(pending);
      REQUIRE(used <= pending.size());
      pending.erase(0, used);
      if (p.state() == State::kComplete) {
        out.keep_alive.push_back(p.keepAlive());
        out.requests.push_back(std::move(p.request()));
        p.reset();
        progressed = true;
        continue;
      }
      if (p.state() == State::kError) {
        out.final_state = State::kError;
        out.error_code = p.error().code;
        out.error_message = p.error().message;
        out.leftover = pending + std::string(input.substr(pos));
        return out;
      }
      // kNeedMore: everything given must have been consumed.
      REQUIRE(pending.empty());
      break;
    }
    (void)progressed;
    if (pos >= input.size()) break;
    const size_t take = std::min(step, input.size() - pos);
    pending.append(input.substr(pos, take));
    pos += take;
  }
  out.final_state = p.state();
  return out;
}

ErrorCode errorOf(std::string_view input, ParserLimits limits = ParserLimits{}) {
  const Outcome o = parseAll(input, 0, limits);
  REQUIRE(o.final_state == State::kError);
  return o.error_code;
}

HttpRequest parseOne(std::string_view input) {
  Outcome o = parseAll(input);
  REQUIRE(o.final_state != State::kError);
  REQUIRE(o.requests.size() == 1);
  return std::move(o.requests[0]);
}

}  // namespace

TEST_CASE("parser: simple GET keeps method, raw target, version and headers in order") {
  const HttpRequest r = parseOne(
      "GET /bosa/a%2Fb/c/?z=1&a=2&a=3 HTTP/1.1\r\nHost: 127.0.0.1\r\nX-B: 1\r\nx-a:   two  \r\n"
      "X-B: 3\r\n\r\n");
  CHECK(r.method == "GET");
  CHECK(r.target == "/bosa/a%2Fb/c/?z=1&a=2&a=3");
  CHECK(r.version_minor == 1);
  REQUIRE(r.headers.size() == 4);
  CHECK(r.headers[0].name == "Host");
  CHECK(r.headers[1].name == "X-B");
  CHECK(r.headers[1].value == "1");
  CHECK(r.headers[2].name == "x-a");
  CHECK(r.headers[2].value == "two");
  CHECK(r.headers[3].value == "3");
  CHECK(r.body.empty());
}

TEST_CASE("parser: state, headComplete, keepAlive and feed after completion") {
  RequestParser p(ParserLimits{});
  CHECK_FALSE(p.headComplete());
  CHECK_FALSE(p.keepAlive());
  const std::string req = "POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n";
  CHECK(p.feed(req) == req.size());
  CHECK(p.state() == State::kNeedMore);
  CHECK(p.headComplete());
  CHECK(p.contentLength().value() == 5);
  CHECK(p.feed("ab") == 2);
  CHECK(p.feed("cdeGET") == 3);  // Stops at the end of the body.
  CHECK(p.state() == State::kComplete);
  CHECK(p.request().body == "abcde");
  CHECK(p.keepAlive());
  CHECK(p.feed("more") == 0);
  p.reset();
  CHECK_FALSE(p.headComplete());
  CHECK(p.request().method.empty());
  CHECK(p.feed("GET / HTTP/1.0\r\n\r\n") == 18);
  CHECK(p.state() == State::kComplete);
  CHECK(p.request().version_minor == 0);
  CHECK_FALSE(p.keepAlive());
}

TEST_CASE("parser: bare LF line endings and leading empty lines are accepted") {
  const HttpRequest r = parseOne("\r\n\nGET /a HTTP/1.1\nHost: x\nA: b\n\n");
  CHECK(r.target == "/a");
  REQUIRE(r.headers.size() == 2);
  CHECK(r.headers[1].value == "b");
  // Mixed terminators, including the CRLF blank line after LF lines.
  const HttpRequest m = parseOne("GET /m HTTP/1.1\nHost: h\nA: 1\r\nB: 2\n\r\n");
  CHECK(m.headers.size() == 3);
  CHECK(errorOf("\rGET / HTTP/1.1\r\nHost: h\r\n\r\n") == ErrorCode::kBadRequest);
}

TEST_CASE("parser: keep-alive rules for HTTP/1.1 and HTTP/1.0") {
  auto ka = [](std::string_view req) {
    Outcome o = parseAll(req);
    REQUIRE(o.keep_alive.size() == 1);
    return static_cast<bool>(o.keep_alive[0]);
  };
  CHECK(ka("GET / HTTP/1.1\r\nHost: h\r\n\r\n"));
  CHECK_FALSE(ka("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"));
  CHECK_FALSE(ka("GET / HTTP/1.1\r\nHost: h\r\nConnection: foo, CLOSE\r\n\r\n"));
  CHECK_FALSE(ka("GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n"));
  CHECK_FALSE(ka("GET / HTTP/1.0\r\n\r\n"));
  CHECK(ka("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
  CHECK_FALSE(ka("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n"));
}

TEST_CASE("parser: methods are token characters; unknown methods are accepted") {
  CHECK(parseOne("PURGE /x HTTP/1.1\r\nHost: h\r\n\r\n").method == "PURGE");
  CHECK(parseOne("M-SEARCH * HTTP/1.1\r\nHost: h\r\n\r\n").method == "M-SEARCH");
  CHECK(parseOne("get / HTTP/1.1\r\nHost: h\r\n\r\n").method == "get");
  CHECK(errorOf("G@T / HTTP/1.1\r\nHost: h\r\n\r\n") == ErrorCode::kBadRequest);
  CHECK(errorOf(" / HTTP/1.1\r\nHost: h\r\n\r\n") == ErrorCode::kBadRequest);
  CHECK(errorOf("GET\r\n\r\n") == ErrorCode::kBadRequest);
  CHECK(errorOf("GET  / HTTP/1.1\r\nHost: h\r\n\r\n") == ErrorCode::kBadRequest);
  CHECK(errorOf("GET /\r\n\r\n") == ErrorCode::kBadRequest);  // HTTP/0.9
}

TEST_CASE("parser: non-HTTP bytes fail fast, before the header limit") {
  RequestParser tls(ParserLimits{});
  const char hello[] = {0x16, 0x03, 0x01, 0x02, 0x00};
  tls.feed(std::string_view(hello, sizeof(hello)));
  CHECK(tls.state() == State::kError);
  CHECK(tls.error().code == ErrorCode::kBadRequest);

  RequestParser bin(ParserLimits{});
  bin.feed("GE");
  CHECK(bin.state() == State::kNeedMore);
  bin.feed(std::string_view("T\0", 2));
  CHECK(bin.state() == State::kError);
}

TEST_CASE("parser: only HTTP/1.0 and HTTP/1.1") {
  CHECK(errorOf("GET / HTTP/1.2\r\n\r\n") == ErrorCode::kBadRequest);
  CHECK(errorOf("GET / HTTP/2.0\r\n\r\n") == ErrorCode::kBadRequest);
  CHECK(errorOf("GET / http/1.1\r\n\r\n") == ErrorCode::kBadRequest);
  CHECK(errorOf("GET / HTTP/1.1 \r\n\r\n") == ErrorCode::kBadRequest);
  CHECK(errorOf("GET / HTTP/11\r\n\r\n") == ErrorCode::kBadRequest);
  const Outcome h2 = parseAll("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
  REQUIRE(h2.final_state == State::kError);
  CHECK(h2.error_code == ErrorCode::kBadRequest);
  CHECK(h2.error_message.find("HTTP/2") != std::string::npos);
  // The HTTP/2 preface is refused as soon as its first line is complete.
  RequestParser p(ParserLimits{});
  p.feed("PRI * HTTP/2.0\r\n");
  CHECK(p.state() == State::kError);
}

TEST_CASE("parser: the request-target must be visible ASCII and is kept byte for byte") {
  CHECK(parseOne("GET http://evil/x HTTP/1.1\r\nHost: h\r\n\r\n").target == "http://evil/x");
  CHECK(parseOne("GET /a%20b;c=d?x=%2F&y HTTP/1.1\r\nHost: h\r\n\r\n").target == "/a%20b;c=d?x=%2F&y");
  CHECK(errorOf("GET /a b HTTP/1.1\r\nHost: h\r\n\r\n") == ErrorCode::kBadRequest);
  CHECK(errorOf("GET /a\tb HTTP/1.1\r\nHost: h\r\n\r\n") == ErrorCode::kBadRequest);
  CHECK(errorOf(std::string_view("GET /a\0b HTTP/1.1\r\nHost: h\r\n\r\n", 21)) == ErrorCode::kBadRequest);
  CHECK(errorOf("GET /caf\xC3\xA9 HTTP/1.1\r\nHost: h\r\n\r\n") == ErrorCode::kBadRequest);
  CHECK(errorOf("GET /a\x7F HTTP/1.1\r\nHost: h\r\n\r\n") == ErrorCode::kBadRequest);
  CHECK(errorOf("GET /a\rb HTTP/1.1\r\nHost: h\r\n\r\n") == ErrorCode::kBadRequest);
}

TEST_CASE("parser: header field names are tokens") {
  CHECK(errorOf("GET / HTTP/1.1\r\nHost : x\r\n\r\n") == ErrorCode::kBadRequest);
  CHECK(errorOf("GET / HTTP/1.1\r\nHost: h\r\nHo(st: x\r\n\r\n") == ErrorCode::kBadRequest);
  CHECK(errorOf("GET / HTTP/1.1\r\nHost: h\r\n: x\r\n\r\n") == ErrorCode::kBadRequest);
  CHECK(errorOf("GET / HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n") == ErrorCode::kBadRequest);
  CHECK(errorOf("GET / HTTP/1.1\r\nHost: h\r\nX\xC3\xA9: 1\r\n\r\n") == ErrorCode::kBadRequest);
  const HttpRequest r = parseOne("GET / HTTP/1.1\r\nHost: h\r\nX-Empty:\r\nX-Sp:   \r\n\r\n");
  REQUIRE(r.headers.size() == 3);
  CHECK(r.headers[1].value.empty());
  CHECK(r.headers[2].value.empty());
}

TEST_CASE("parser: header values refuse NUL, bare CR and CTLs (CRLF injection)") {
  CHECK(errorOf(std::string_view("GET / HTTP/1.1\r\nHost: h\r\nX: a\0b\r\n\r\n", 35)) ==
        ErrorCode::kBadRequest);
  CHECK(errorOf("GET / HTTP/1.1\r\nHost: h\r\nX: a\rInjected: b\r\n\r\n") == ErrorCode::kBadRequest);
  CHECK(errorOf("GET / HTTP/1.1\r\nHost: h\r\nX: a\r\r\n\r\n") == ErrorCode::kBadRequest);
  CHECK(errorOf("GET / HTTP/1.1\r\nHost: h\r\nX: a\x01\r\n\r\n") == ErrorCode::kBadRequest);
  CHECK(errorOf("GET / HTTP/1.1\r\nHost: h\r\nX: a\x7F\r\n\r\n") == ErrorCode::kBadRequest);
  CHECK(errorOf("GET / HTTP/1.1\r\nHost: h\r\nX: a\x1B[31m\r\n\r\n") == ErrorCode::kBadRequest);
  // HTAB inside a value and obs-text are allowed; surrounding OWS is trimmed.
  const HttpRequest r = parseOne("GET / HTTP/1.1\r\nHost: h\r\nX: \t a\tb \xE2\x82\xAC \t\r\n\r\n");
  CHECK(r.headers[1].value == "a\tb \xE2\x82\xAC");
}

TEST_CASE("parser: obsolete line folding is refused") {
  CHECK(errorOf("GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n") == ErrorCode::kBadRequest);
  CHECK(errorOf("GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n\tb\r\n\r\n") == ErrorCode::kBadRequest);
  CHECK(errorOf("GET / HTTP/1.1\r\nHost: h\r\n X: a\r\n\r\n") == ErrorCode::kBadRequest);
}

TEST_CASE("parser: header size and count limits give 431") {
  const std::string big(100 * 1024, 'a');
  const std::string req = "GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + big + "\r\n\r\n";
  CHECK(errorOf(req) == ErrorCode::kHeadersTooLarge);
  // Byte by byte too (the buffered path), and without ever seeing the end of the head.
  CHECK(parseAll(req, 1).error_code == ErrorCode::kHeadersTooLarge);
  CHECK(parseAll("GET / HTTP/1.1\r\nHost: h\r\nX: " + big, 4096).error_code == ErrorCode::kHeadersTooLarge);
  // A request line alone that is too long.
  CHECK(errorOf("GET /" + big + " HTTP/1.1\r\nHost: h\r\n\r\n") == ErrorCode::kHeadersTooLarge);

  // Exactly at the limit is fine, one byte more is not.
  const std::string head = "GET / HTTP/1.1\r\nHost: h\r\nA: 12345\r\n\r\n";
  ParserLimits exact;
  exact.max_header_bytes = head.size();
  CHECK(parseAll(head, 0, exact).requests.size() == 1);
  CHECK(parseAll(head, 1, exact).requests.size() == 1);
  exact.max_header_bytes = head.size() - 1;
  CHECK(parseAll(head, 0, exact).error_code == ErrorCode::kHeadersTooLarge);
  CHECK(parseAll(head, 1, exact).error_code == ErrorCode::kHeadersTooLarge);
  // Leading empty lines count too.
  exact.max_header_bytes = head.size();
  CHECK(parseAll("\r\n" + head, 1, exact).error_code == ErrorCode::kHeadersTooLarge);

  ParserLimits few;
  few.max_headers = 4;
  CHECK(parseAll("GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", 0, few).requests.size() == 1);
  CHECK(parseAll("GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n", 0, few).error_code ==
        ErrorCode::kHeadersTooLarge);
  std::string many = "GET / HTTP/1.1\r\nHost: h\r\n";
  for (int i = 0; i < 101; ++i) many += "H" + std::to_string(i) + ": v\r\n";
  CHECK(errorOf(many + "\r\n") == ErrorCode::kHeadersTooLarge);
}

TEST_CASE("parser: Content-Length bodies") {
  const HttpRequest r = parseOne("POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 12\r\n\r\nhello\r\nworld");
  CHECK(r.body == "hello\r\nworld");
  // The framing headers stay in the parsed request as sent.
  CHECK(headerValue(r.headers, "content-length").value() == "12");
  CHECK(parseOne("POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n").body.empty());
  CHECK(parseOne("POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 007\r\n\r\nabcdefg").body == "abcdefg");
  // Duplicates that agree are fine.
  CHECK(parseOne("POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok").body ==
        "ok");
  // A request without CL/TE has no body: what follows is the next request.
  const Outcome o = parseAll("POST /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n");
  REQUIRE(o.requests.size() == 2);
  CHECK(o.requests[0].body.empty());
  CHECK(o.requests[1].target == "/b");
}

TEST_CASE("parser: bad Content-Length values are 400 (smuggling guards)") {
  for (const char* v : {"-1", "+5", "5 5", "0x5", "5,5", "5, 5", "abc", "1e3", "\xEF\xBC\x95"}) {
    CAPTURE(v);
    CHECK(errorOf(std::string("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: ") + v + "\r\n\r\n") ==
          ErrorCode::kBadRequest);
  }
  CHECK(errorOf("POST / HTTP/1.1\r\nHost: h\r\nContent-Length:\r\n\r\n") == ErrorCode::kBadRequest);
  CHECK(errorOf("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd") ==
        ErrorCode::kBadRequest);
  CHECK(errorOf("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999999\r\n\r\n") ==
        ErrorCode::kBadRequest);
  CHECK(errorOf("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 18446744073709551616\r\n\r\n") ==
        ErrorCode::kBadRequest);
}

TEST_CASE("parser: Content-Length above the limit is 413 right after the head") {
  ParserLimits small;
  small.max_body_bytes = 10;
  RequestParser p(small);
  const std::string head = "POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 11\r\n\r\n";
  p.feed(head);  // No body byte sent yet.
  CHECK(p.state() == State::kError);
  CHECK(p.error().code == ErrorCode::kPayloadTooLarge);
  CHECK(p.headComplete());
  CHECK_FALSE(p.expectContinue());
  CHECK_FALSE(p.keepAlive());
  // The largest representable value is 413 too, not a crash or an allocation.
  CHECK(errorOf("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 18446744073709551615\r\n\r\n") ==
        ErrorCode::kPayloadTooLarge);
  CHECK(parseAll("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n0123456789", 0, small)
            .requests.size() == 1);
}

TEST_CASE("parser: Expect: 100-continue") {
  RequestParser p(ParserLimits{});
  p.feed("PUT /x HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n");
  CHECK(p.expectContinue());
  p.feed("abc");
  CHECK(p.state() == State::kComplete);
  CHECK_FALSE(p.expectContinue());

  RequestParser chunked(ParserLimits{});
  chunked.feed("PUT /x HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n");
  CHECK(chunked.expectContinue());

  RequestParser no_body(ParserLimits{});
  no_body.feed("PUT /x HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n");
  CHECK(no_body.state() == State::kComplete);
  CHECK_FALSE(no_body.expectContinue());

  RequestParser http10(ParserLimits{});
  http10.feed("PUT /x HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
  CHECK_FALSE(http10.expectContinue());

  RequestParser none(ParserLimits{});
  none.feed("PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n");
  CHECK_FALSE(none.expectContinue());
}

TEST_CASE("parser: chunked bodies are de-chunked; extensions skipped; trailers dropped") {
  const std::string req =
      "POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
      "5\r\nhello\r\n"
      "1A;name=value;q=\"quoted;ext\"\r\nabcdefghijklmnopqrstuvwxyz\r\n"
      "a ; ext\r\n0123456789\r\n"
      "0\r\nX-Trailer: t\r\nChecksum: abc\r\n\r\n";
  const HttpRequest r = parseOne(req);
  CHECK(r.body == "helloabcdefghijklmnopqrstuvwxyz0123456789");
  CHECK(headerValue(r.headers, "Transfer-Encoding").value() == "chunked");
  CHECK(headerValue(r.headers, "X-Trailer") == std::nullopt);
  // Case-insensitive coding name, bare LF framing, empty list elements.
  CHECK(parseOne("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: , Chunked\r\n\r\n3\nabc\n0\n\n").body ==
        "abc");
  CHECK(parseOne("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n").body.empty());
}

TEST_CASE("parser: chunked body split at every boundary, and byte by byte") {
  const std::string req =
      "POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
      "4;e=1\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nT: 1\r\n\r\n"
      "GET /next HTTP/1.1\r\nHost: h\r\n\r\n";
  const std::string expected_body = "Wikipedia in\r\n\r\nchunks.";
  for (size_t split = 0; split <= req.size(); ++split) {
    CAPTURE(split);
    RequestParser p(ParserLimits{});
    std::string pending = req.substr(0, split);
    const std::string second = req.substr(split);
    std::vector<std::string> targets, bodies;
    for (const std::string* part : {&second, static_cast<const std::string*>(nullptr)}) {
      while (!pending.empty()) {
        const size_t used = p.feed(pending);
        pending.erase(0, used);
        REQUIRE(p.state() != State::kError);
        if (p.state() != State::kComplete) break;
        targets.push_back(p.request().target);
        bodies.push_back(p.request().body);
        p.reset();
      }
      if (part != nullptr) pending += *part;
    }
    REQUIRE(targets.size() == 2);
    CHECK(bodies[0] == expected_body);
    CHECK(targets[1] == "/next");
  }
  const Outcome bytewise = parseAll(req, 1);
  REQUIRE(bytewise.requests.size() == 2);
  CHECK(bytewise.requests[0].body == expected_body);
}

TEST_CASE("parser: malformed chunked framing is 400") {
  const std::string head = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (const char* body : {"-5\r\nhello\r\n0\r\n\r\n", "\r\nabc\r\n0\r\n\r\n",
                           "x\r\n", "5 \r\nhello\r\n0\r\n\r\n", "5\rhello\r\n0\r\n\r\n",
                           "3\r\nabcd\r\n0\r\n\r\n", "3\r\nabc\rX0\r\n\r\n",
                           "3;a\x01\r\nabc\r\n0\r\n\r\n", "3;a\rb\r\nabc\r\n0\r\n\r\n",
                           "0x3\r\nabc\r\n0\r\n\r\n", "3\r\nabc\r\n0\r\nBad Trailer\r\n\r\n",
                           "3\r\nabc\r\n0\r\n folded: x\r\n\r\n"}) {
    CAPTURE(body);
    CHECK(errorOf(head + body) == ErrorCode::kBadRequest);
    CHECK(parseAll(head + body, 1).error_code == ErrorCode::kBadRequest);
  }
  // A NUL in a trailer value.
  CHECK(errorOf(head + std::string("0\r\nT: a\0b\r\n\r\n", 13)) == ErrorCode::kBadRequest);
  // A chunk-size line that never ends.
  CHECK(errorOf(head + "1;" + std::string(5000, 'x')) == ErrorCode::kBadRequest);
}

TEST_CASE("parser: chunk sizes overflow-checked; chunked totals bounded by max_body_bytes") {
  const std::string head = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
  ParserLimits unlimited;
  unlimited.max_body_bytes = static_cast<size_t>(-1);
  CHECK(errorOf(head + "10000000000000000\r\n", unlimited) == ErrorCode::kBadRequest);
  // With the default limit a huge size is refused as soon as it passes the limit.
  CHECK(errorOf(head + "ffffffffffffffffff\r\n") == ErrorCode::kPayloadTooLarge);
  // Leading zeros do not count as overflow.
  CHECK(parseOne(head + "00000000000000000000003\r\nabc\r\n0\r\n\r\n").body == "abc");

  ParserLimits small;
  small.max_body_bytes = 8;
  CHECK(parseAll(head + "4\r\nabcd\r\n4\r\nefgh\r\n0\r\n\r\n", 0, small).requests.at(0).body ==
        "abcdefgh");
  CHECK(parseAll(head + "4\r\nabcd\r\n5\r\nefghi\r\n0\r\n\r\n", 0, small).error_code ==
        ErrorCode::kPayloadTooLarge);
  CHECK(parseAll(head + "9\r\n", 1, small).error_code == ErrorCode::kPayloadTooLarge);

  ParserLimits tiny_trailers;
  tiny_trailers.max_header_bytes = 100;
  const std::string small_head = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
  CHECK(parseAll(small_head + "0\r\nT: " + std::string(200, 'a') + "\r\n\r\n", 7, tiny_trailers)
            .error_code == ErrorCode::kHeadersTooLarge);
  ParserLimits few;
  few.max_headers = 2;
  CHECK(parseAll(small_head + "0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", 0, few).error_code ==
        ErrorCode::kHeadersTooLarge);
}

TEST_CASE("parser: Transfer-Encoding rules (RFC 9112 §6.1) and CL+TE smuggling") {
  CHECK(errorOf("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
                "0\r\n\r\n") == ErrorCode::kBadRequest);
  CHECK(errorOf("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"
                "0\r\n\r\n") == ErrorCode::kBadRequest);
  CHECK(errorOf("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n") ==
        ErrorCode::kBadRequest);
  CHECK(errorOf("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n") == ErrorCode::kBadRequest);
  CHECK(errorOf("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n") ==
        ErrorCode::kBadRequest);
  CHECK(errorOf("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, chunked\r\n\r\n") ==
        ErrorCode::kBadRequest);
  CHECK(errorOf("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked"
                "\r\n\r\n") == ErrorCode::kBadRequest);
  CHECK(errorOf("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked;x=1\r\n\r\n") ==
        ErrorCode::kBadRequest);
  CHECK(errorOf("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\r\n\r\n") == ErrorCode::kBadRequest);
  CHECK(errorOf("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: \"chunked\"\r\n\r\n") ==
        ErrorCode::kBadRequest);
  CHECK(errorOf("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: foo\r\n\r\n") ==
        ErrorCode::kNotImplemented);
  CHECK(errorOf("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n") ==
        ErrorCode::kNotImplemented);
  CHECK(errorOf("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked"
                "\r\n\r\n") == ErrorCode::kNotImplemented);
  CHECK(errorOf("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n") ==
        ErrorCode::kNotImplemented);
}

TEST_CASE("parser: Host (RFC 9112 section 3.2): required in HTTP/1.1, once, a host[:port]") {
  CHECK(errorOf("GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n") == ErrorCode::kBadRequest);
  CHECK(errorOf("GET / HTTP/1.1\r\n\r\n") == ErrorCode::kBadRequest);
  CHECK(errorOf("GET / HTTP/1.1\r\nX-Host: a\r\n\r\n") == ErrorCode::kBadRequest);
  CHECK(errorOf("GET / HTTP/1.1\r\nHost: a b\r\n\r\n") == ErrorCode::kBadRequest);
  CHECK(errorOf("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n") == ErrorCode::kBadRequest);
  CHECK(errorOf("GET / HTTP/1.1\r\nHost: user@a\r\n\r\n") == ErrorCode::kBadRequest);
  CHECK(parseOne("GET / HTTP/1.1\r\nHost: h\r\n\r\n").headers.size() == 1);
  CHECK(parseOne("GET / HTTP/1.1\r\nHost: 127.0.0.1:8750\r\n\r\n").headers.size() == 1);
  CHECK(parseOne("GET / HTTP/1.1\r\nHost: [::1]:8750\r\n\r\n").headers.size() == 1);
  CHECK(parseOne("GET / HTTP/1.1\r\nHost:\r\n\r\n").headers.size() == 1);  // no authority
  // HTTP/1.0 predates Host: tolerated without one.
  CHECK(parseOne("GET / HTTP/1.0\r\n\r\n").headers.empty());
}

TEST_CASE("parser: pipelined requests in one buffer and byte by byte") {
  const std::string a = "GET /one HTTP/1.1\r\nHost: h\r\n\r\n";
  const std::string b = "POST /two HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nbody";
  const std::string c =
      "PUT /three?x=1 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n";
  const std::string d = "GET /four HTTP/1.0\r\n\r\n";
  const std::string all = a + b + c + d;

  // feed() stops at the end of the first request.
  RequestParser p(ParserLimits{});
  CHECK(p.feed(all) == a.size());
  CHECK(p.state() == State::kComplete);
  p.reset();
  CHECK(p.feed(std::string_view(all).substr(a.size())) == b.size());
  CHECK(p.request().body == "body");

  for (size_t step : {size_t{0}, size_t{1}, size_t{2}, size_t{3}, size_t{7}, size_t{64}}) {
    CAPTURE(step);
    const Outcome o = parseAll(all, step);
    CHECK(o.final_state == State::kNeedMore);
    REQUIRE(o.requests.size() == 4);
    CHECK(o.requests[0].target == "/one");
    CHECK(o.requests[1].method == "POST");
    CHECK(o.requests[1].body == "body");
    CHECK(o.requests[2].target == "/three?x=1");
    CHECK(o.requests[2].body == "ok");
    CHECK(o.requests[3].version_minor == 0);
    CHECK(o.keep_alive == std::vector<bool>{true, true, true, false});
  }
  // An error in the second request leaves the first intact.
  const Outcome bad = parseAll(a + "GET / HTTP/1.1\r\nHost: h\r\nX: \x01\r\n\r\n" + d, 1);
  CHECK(bad.requests.size() == 1);
  CHECK(bad.final_state == State::kError);
}

TEST_CASE("parser: reset() releases large buffers and the parser is reusable") {
  RequestParser p(ParserLimits{});
  const std::string big(1 << 20, 'z');
  const std::string req = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: " + std::to_string(big.size()) +
                          "\r\n\r\n" + big;
  CHECK(p.feed(req) == req.size());
  CHECK(p.request().body.size() == big.size());
  p.reset();
  CHECK(p.request().body.capacity() < big.size());
  for (int i = 0; i < 1000; ++i) {
    const std::string r = "GET /" + std::to_string(i) + " HTTP/1.1\r\nHost: h\r\nA: b\r\n\r\n";
    REQUIRE(p.feed(r) == r.size());
    REQUIRE(p.state() == State::kComplete);
    CHECK(p.request().target == "/" + std::to_string(i));
    p.reset();
  }
}

TEST_CASE("parser: error messages never quote header values") {
  const Outcome o = parseAll("GET / HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer kw_secret\x01\r\n\r\n");
  REQUIRE(o.final_state == State::kError);
  CHECK(o.error_message.find("kw_secret") == std::string::npos);
  CHECK_FALSE(o.error_message.empty());
}

// ---------------------------------------------------------------------------------------------

TEST_CASE("serializer: status line, headers in order, Content-Length") {
  std::string out = "prefix|";
  appendResponseHead(out, 200, "", {{"Content-Type", "application/json"}, {"X-A", "1"}}, 17,
                     false, false, 1);
  CHECK(out ==
        "prefix|HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-A: 1\r\n"
        "Content-Length: 17\r\n\r\n");
  out.clear();
  appendResponseHead(out, 404, "Nope", {}, 0, false, false, 1);
  CHECK(out == "HTTP/1.1 404 Nope\r\nContent-Length: 0\r\n\r\n");
  out.clear();
  appendResponseHead(out, 299, "", {}, 0, false, false, 1);
  CHECK(out == "HTTP/1.1 299 \r\nContent-Length: 0\r\n\r\n");
  out.clear();
  appendResponseHead(out, 42, "", {}, 0, false, false, 1);
  CHECK(out.rfind("HTTP/1.1 500 Internal Server Error\r\n", 0) == 0);
}

TEST_CASE("serializer: never emits CR/LF from header values or the reason phrase") {
  std::string out;
  const Headers headers = {{"X-Ok", "fine\tvalue"},
                           {"X-Bad", "a\r\nSet-Cookie: evil=1"},
                           {"X-Lf", "a\nb"},
                           {"X-Nul", std::string("a\0b", 3)},
                           {"Bad Name", "x"},
                           {"", "x"},
                           {"X-Inj\r\nEvil", "x"},
                           {"Content-Length", "999"},
                           {"transfer-encoding", "chunked"},
                           {"Connection", "keep-alive"}};
  appendResponseHead(out, 502, "Bad\r\nEvil: 1", headers, 5, false, true, 1);
  CHECK(out ==
        "HTTP/1.1 502 Bad Gateway\r\nX-Ok: fine\tvalue\r\nContent-Length: 5\r\n"
        "Connection: close\r\n\r\n");
}

TEST_CASE("serializer: framing and connection headers") {
  std::string out;
  appendResponseHead(out, 200, "", {}, std::nullopt, true, false, 1);
  CHECK(out == "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
  out.clear();
  appendResponseHead(out, 200, "", {}, 3, true, false, 1);
  CHECK(out == "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n");
  out.clear();
  appendResponseHead(out, 200, "", {}, 3, false, false, 0);
  CHECK(out == "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\n");
  out.clear();
  appendResponseHead(out, 200, "", {}, 3, false, true, 0);
  CHECK(out == "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\n");
  out.clear();
  // HTTP/1.0 cannot receive chunked: no framing, close-delimited.
  appendResponseHead(out, 200, "", {}, std::nullopt, true, false, 0);
  CHECK(out == "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
  out.clear();
  // No length at all: close-delimited.
  appendResponseHead(out, 200, "", {}, std::nullopt, false, false, 1);
  CHECK(out == "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
  out.clear();
  appendResponseHead(out, 100, "", {}, std::nullopt, false, false, 1);
  CHECK(out == "HTTP/1.1 100 Continue\r\n\r\n");
  out.clear();
  appendResponseHead(out, 204, "", {{"X-A", "b"}}, 0, false, false, 1);
  CHECK(out == "HTTP/1.1 204 No Content\r\nX-A: b\r\n\r\n");
  out.clear();
  appendResponseHead(out, 304, "", {{"ETag", "\"v1\""}}, 0, false, false, 1);
  CHECK(out == "HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n\r\n");
  out.clear();
  appendResponseHead(out, 503, "", {}, 2, false, true, 1);
  CHECK(out == "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\nConnection: close\r\n\r\n");
}

TEST_CASE("serializer: chunks round-trip through the parser") {
  std::string out;
  appendChunk(out, "");
  CHECK(out.empty());
  appendChunk(out, std::string(26, 'x'));
  CHECK(out.rfind("1a\r\n", 0) == 0);
  out.clear();
  appendChunk(out, "hello ");
  appendChunk(out, std::string(300, 'w'));
  appendChunk(out, "");
  appendLastChunk(out);
  CHECK(out.substr(out.size() - 5) == "0\r\n\r\n");
  const HttpRequest r = parseOne("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + out);
  CHECK(r.body == "hello " + std::string(300, 'w'));
}

TEST_CASE("findNonFieldValueChar finds the first refused byte wherever it sits in the word") {
  // Every byte value at every position of strings of 0..19 bytes (words, a word and a tail,
  // tails alone), over a clean filler and over one that already holds an HTAB, against the
  // one-byte-at-a-time rule.
  using keyway::core::findNonFieldValueChar;
  using keyway::core::isFieldValueChar;
  size_t refused = 0;
  for (const char filler : {'a', '\t'}) {
    for (size_t len = 0; len < 20; ++len) {
      for (size_t pos = 0; pos < len; ++pos) {
        for (int b = 0; b < 256; ++b) {
          std::string s(len, 'x');
          if (filler == '\t' && len > 1) s[(pos + 1) % len] = '\t';
          s[pos] = static_cast<char>(b);
          size_t expect = std::string::npos;
          for (size_t i = 0; i < s.size(); ++i) {
            if (!isFieldValueChar(s[i])) {
              expect = i;
              break;
            }
          }
          CAPTURE(len);
          CAPTURE(pos);
          CAPTURE(b);
          REQUIRE(findNonFieldValueChar(s) == expect);
          refused += expect != std::string::npos ? 1 : 0;
        }
      }
    }
  }
  CHECK(refused == 2 * 190 * 32);  // 0x00-0x1F but HTAB, and 0x7F: 32 refused values
  CHECK(findNonFieldValueChar("") == std::string::npos);
  CHECK(findNonFieldValueChar("application/json; charset=utf-8\x7f") == 31);
  CHECK(findNonFieldValueChar("caf\xc3\xa9 \t obs-text is allowed") == std::string::npos);
}
