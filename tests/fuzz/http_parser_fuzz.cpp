// Fuzz target: the HTTP/1.1 request parser fed in random splits, cross-checked against a one-shot
// parse, plus the response serializer (no CR/LF may escape a header value).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "core/http_parser.hpp"

using keyway::core::ErrorCode;
using keyway::core::HttpRequest;
using keyway::core::ParserLimits;
using keyway::core::RequestParser;

namespace {

#define FUZZ_CHECK(cond)                                                         \
  do {                                                                           \
    if (!(cond)) {                                                               \
      std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                              \
    }                                                                            \
  } while (0)

struct Run {
  std::vector<HttpRequest> requests;
  std::vector<bool> keep_alive;
  RequestParser::State state = RequestParser::State::kNeedMore;
  ErrorCode code = ErrorCode::kInternal;
};

// Splits come from a tiny LCG seeded by the input, so a crash reproduces from the file alone.
Run run(std::string_view input, const ParserLimits& limits, uint32_t seed, bool whole) {
  Run out;
  RequestParser p(limits);
  std::string pending;
  size_t pos = 0;
  uint32_t rng = seed * 2654435761u + 1;
  while (true) {
    while (!pending.empty()) {
      const size_t used = p.feed(pending);
      FUZZ_CHECK(used <= pending.size());
      pending.erase(0, used);
      if (p.state() == RequestParser::State::kComplete) {
        const HttpRequest& r = p.request();
        // Invariants of every complete request.
        FUZZ_CHECK(keyway::core::isToken(r.method));
        FUZZ_CHECK(!r.target.empty());
        for (char c : r.target) FUZZ_CHECK(c > 0x20 && c < 0x7F);
        FUZZ_CHECK(r.version_minor == 0 || r.version_minor == 1);
        FUZZ_CHECK(r.headers.size() <= limits.max_headers);
        for (const auto& h : r.headers) {
          FUZZ_CHECK(keyway::core::isToken(h.name));
          for (char c : h.value) FUZZ_CHECK(keyway::core::isFieldValueChar(c));
          if (!h.value.empty()) {
            FUZZ_CHECK(h.value.front() != ' ' && h.value.front() != '\t');
            FUZZ_CHECK(h.value.back() != ' ' && h.value.back() != '\t');
          }
        }
        FUZZ_CHECK(r.body.size() <= limits.max_body_bytes);
        FUZZ_CHECK(p.headComplete());
        out.keep_alive.push_back(p.keepAlive());
        out.requests.push_back(std::move(p.request()));
        p.reset();
        continue;
      }
      if (p.state() == RequestParser::State::kError) {
        FUZZ_CHECK(!p.error().message.empty());
        FUZZ_CHECK(!p.keepAlive());
        FUZZ_CHECK(p.feed("x") == 0);
        out.state = p.state();
        out.code = p.error().code;
        return out;
      }
      FUZZ_CHECK(pending.empty());  // kNeedMore consumes everything it is given.
      break;
    }
    if (pos >= input.size()) break;
    size_t take = input.size() - pos;
    if (!whole) {
      rng = rng * 1103515245u + 12345u;
      take = std::min<size_t>(take, 1 + (rng >> 16) % 23);
    }
    pending.append(input.substr(pos, take));
    pos += take;
  }
  out.state = p.state();
  return out;
}

void checkSerializer(const std::vector<HttpRequest>& requests, std::string_view raw) {
  keyway::core::Headers headers;
  for (const auto& r : requests) {
    for (const auto& h : r.headers) headers.push_back(h);
  }
  // Raw fuzz bytes as names and values: the serializer must drop what could inject a line.
  const size_t half = raw.size() / 2;
  headers.push_back({std::string(raw.substr(0, half)), std::string(raw.substr(half))});
  headers.push_back({"X-Raw", std::string(raw)});
  size_t clean = 0;
  for (const auto& h : headers) {
    bool ok = keyway::core::isToken(h.name) && !keyway::core::iequals(h.name, "Content-Length") &&
              !keyway::core::iequals(h.name, "Transfer-Encoding") &&
              !keyway::core::iequals(h.name, "Connection");
    for (char c : h.value) ok = ok && keyway::core::isFieldValueChar(c);
    if (ok) ++clean;
  }
  std::string out;
  const int status = 100 + static_cast<int>(raw.size() % 500);
  keyway::core::appendResponseHead(out, status, raw.substr(0, raw.size() % 40), headers,
                                   raw.size() % 3 == 0 ? std::nullopt
                                                       : std::optional<size_t>(raw.size()),
                                   raw.size() % 2 == 0, raw.size() % 5 == 0,
                                   static_cast<int>(raw.size() % 2));
  // Every line ends with CRLF, no bare CR/LF, the head ends with exactly one blank line.
  size_t lines = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i] == '\r') FUZZ_CHECK(i + 1 < out.size() && out[i + 1] == '\n');
    if (out[i] == '\n') {
      FUZZ_CHECK(i > 0 && out[i - 1] == '\r');
      ++lines;
    }
  }
  FUZZ_CHECK(out.size() >= 4 && out.compare(out.size() - 4, 4, "\r\n\r\n") == 0);
  FUZZ_CHECK(out.find("\r\n\r\n") == out.size() - 4);
  // status line + clean headers + at most 2 framing/connection lines + blank line.
  FUZZ_CHECK(lines >= 2 + clean && lines <= 4 + clean);

  std::string chunk;
  keyway::core::appendChunk(chunk, raw);
  keyway::core::appendLastChunk(chunk);
  RequestParser p(ParserLimits{});
  std::string req = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk;
  FUZZ_CHECK(p.feed(req) == req.size());
  FUZZ_CHECK(p.state() == RequestParser::State::kComplete);
  FUZZ_CHECK(p.request().body == raw);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const uint8_t cfg = data[0];
  const uint8_t seed = data[1];
  const std::string_view input(reinterpret_cast<const char*>(data) + 2, size - 2);
  ParserLimits limits;
  if ((cfg & 1) != 0) {  // Small limits, to reach every limit path.
    limits.max_header_bytes = 16 + (cfg >> 1);
    limits.max_headers = 1 + (cfg >> 5);
    limits.max_body_bytes = (cfg >> 2) * 3u;
  }
  const Run whole = run(input, limits, seed, true);
  const Run split = run(input, limits, seed, false);
  // However the bytes arrive, the outcome is the same.
  FUZZ_CHECK(whole.requests.size() == split.requests.size());
  FUZZ_CHECK(whole.state == split.state);
  FUZZ_CHECK(whole.keep_alive == split.keep_alive);
  if (whole.state == RequestParser::State::kError) FUZZ_CHECK(whole.code == split.code);
  for (size_t i = 0; i < whole.requests.size(); ++i) {
    const HttpRequest& a = whole.requests[i];
    const HttpRequest& b = split.requests[i];
    FUZZ_CHECK(a.method == b.method && a.target == b.target && a.body == b.body);
    FUZZ_CHECK(a.version_minor == b.version_minor && a.headers.size() == b.headers.size());
    for (size_t k = 0; k < a.headers.size(); ++k) {
      FUZZ_CHECK(a.headers[k].name == b.headers[k].name);
      FUZZ_CHECK(a.headers[k].value == b.headers[k].value);
    }
  }
  checkSerializer(whole.requests, input.substr(0, 512));
  return 0;
}
