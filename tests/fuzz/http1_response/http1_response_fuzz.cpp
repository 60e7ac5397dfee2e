// Fuzz target for the native upstream client's HTTP/1.1 response parser
// (daemon/http1_upstream_client: Http1ResponseParser): any bytes an upstream could send.
// Input: 1 control byte (bit 0: the request was HEAD; bit 1: the peer closes after the bytes;
// bits 2-7: the piece size for the split feed), then the wire bytes. Invariants:
// - feeding in one piece and in small pieces gives the same verdict, status, headers and body
//   (the parser has no state that depends on how reads are cut);
// - whatever reaches the observer is safe to forward: header names are tokens, values and the
//   reason carry no CR, LF, NUL or other control bytes (no response splitting), and there is
//   at most one head;
// - body bytes never exceed the input, and nothing is consumed past a complete response;
// - errors are short, printable, fixed messages (no echo of upstream bytes).
// Built as a libFuzzer binary with -Dfuzzing=true, and always as a replay executable.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/http1_upstream_client.hpp"

namespace {

using keyway::daemon::Http1ResponseParser;

[[noreturn]] void violated(const char* what, int line) {
  std::fprintf(stderr, "http1_response fuzz invariant violated (http1_response_fuzz.cpp:%d): %s\n", line, what);
  std::abort();
}

#define FUZZ_CHECK(cond)                    \
  do {                                      \
    if (!(cond)) violated(#cond, __LINE__); \
  } while (0)

bool isTchar(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool safeValue(std::string_view s) {
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if ((u < 0x20 && u != '\t') || u == 0x7f) return false;
  }
  return true;
}

struct Log : Http1ResponseParser::Sink {
  int heads = 0;
  int status = 0;
  std::string reason;
  keyway::core::Headers headers;
  std::string body;
  bool pause_sometimes = false;
  unsigned pieces = 0;
  bool onHead(int s, std::string_view r, keyway::core::Headers h) override {
    ++heads;
    status = s;
    reason = std::string(r);
    headers = std::move(h);
    return true;
  }
  BodyAction onBody(std::string_view chunk) override {
    FUZZ_CHECK(!chunk.empty());
    body.append(chunk);
    ++pieces;
    return pause_sometimes && pieces % 3 == 0 ? BodyAction::kPause : BodyAction::kContinue;
  }
};

struct Verdict {
  Http1ResponseParser::State state;
  size_t used;
  bool keep_alive;
};

Verdict run(std::string_view wire, size_t step, bool head, bool eof, Log& log) {
  Http1ResponseParser parser(4096);
  parser.reset(head);
  size_t pos = 0;
  using State = Http1ResponseParser::State;
  while (pos < wire.size() && (parser.state() == State::kHead || parser.state() == State::kBody)) {
    const size_t n = std::min(step, wire.size() - pos);
    const size_t used = parser.feed(wire.data() + pos, n, log);
    FUZZ_CHECK(used <= n);
    // Only a pause may leave bytes of a response that is still going on unconsumed.
    if (used < n && (parser.state() == State::kHead || parser.state() == State::kBody)) {
      FUZZ_CHECK(log.pause_sometimes);
    }
    if (used == 0 && (parser.state() == State::kHead || parser.state() == State::kBody)) {
      FUZZ_CHECK(log.pause_sometimes);  // a paused, empty feed: feed again (no pause twice in a row)
    }
    pos += used;
  }
  State state = parser.state();
  if (eof && (state == State::kHead || state == State::kBody)) state = parser.finishOnEof();
  if (state == State::kError) {
    const std::string& e = parser.error();
    FUZZ_CHECK(!e.empty() && e.size() < 120);
    for (const char c : e) FUZZ_CHECK(c >= 0x20 && c < 0x7f);
  }
  return Verdict{state, pos, state == State::kDone && parser.keepAlive()};
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t control = data[0];
  const bool head = (control & 1) != 0;
  const bool eof = (control & 2) != 0;
  const size_t step = 1 + (control >> 2);
  const std::string_view wire(reinterpret_cast<const char*>(data + 1), size - 1);

  Log whole;
  const Verdict a = run(wire, wire.size() + 1, head, eof, whole);
  Log split;
  split.pause_sometimes = true;
  const Verdict b = run(wire, step, head, eof, split);

  FUZZ_CHECK(a.state == b.state);
  if (a.state == Http1ResponseParser::State::kDone) FUZZ_CHECK(a.used == b.used);
  FUZZ_CHECK(a.keep_alive == b.keep_alive);
  FUZZ_CHECK(whole.heads == split.heads);
  FUZZ_CHECK(whole.status == split.status);
  FUZZ_CHECK(whole.reason == split.reason);
  FUZZ_CHECK(whole.body == split.body);
  FUZZ_CHECK(whole.headers.size() == split.headers.size());
  for (size_t i = 0; i < whole.headers.size(); ++i) {
    FUZZ_CHECK(whole.headers[i].name == split.headers[i].name);
    FUZZ_CHECK(whole.headers[i].value == split.headers[i].value);
  }
  FUZZ_CHECK(whole.heads <= 1);
  FUZZ_CHECK(whole.body.size() <= wire.size());
  if (whole.heads == 1) {
    FUZZ_CHECK(whole.status >= 200 && whole.status <= 999);
    FUZZ_CHECK(safeValue(whole.reason));
    for (const auto& h : whole.headers) {
      FUZZ_CHECK(!h.name.empty());
      for (const char c : h.name) FUZZ_CHECK(isTchar(c));
      FUZZ_CHECK(safeValue(h.value));
      FUZZ_CHECK(!keyway::core::iequals(h.name, "Content-Length"));
      FUZZ_CHECK(!keyway::core::iequals(h.name, "Transfer-Encoding"));
    }
    if (head) FUZZ_CHECK(whole.body.empty());
  } else {
    FUZZ_CHECK(whole.body.empty());
  }
  return 0;
}
