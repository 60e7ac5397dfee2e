// Unit tests for the hop-by-hop and keyway-private header filters (core/header_rules).
#include "core/header_rules.hpp"

#include <doctest/doctest.h>

#include <string>
#include <vector>

using keyway::core::clientResponseHeaders;
using keyway::core::Headers;
using keyway::core::isHopByHop;
using keyway::core::upstreamRequestHeaders;

namespace {
std::vector<std::string> names(const Headers& h) {
  std::vector<std::string> out;
  for (const auto& x : h) out.push_back(x.name);
  return out;
}
}  // namespace

TEST_CASE("header_rules: isHopByHop") {
  for (const char* n : {"Connection", "keep-alive", "PROXY-CONNECTION", "TE", "te", "Trailer",
                        "Transfer-Encoding", "Upgrade", "Proxy-Authenticate",
                        "proxy-authorization"}) {
    CAPTURE(n);
    CHECK(isHopByHop(n));
  }
  for (const char* n : {"Content-Type", "Authorization", "Host", "Content-Length", "Trailers",
                        "TEE", "X-Connection", "", "Upgrade-Insecure-Requests"}) {
    CAPTURE(n);
    CHECK_FALSE(isHopByHop(n));
  }
}

TEST_CASE("header_rules: upstreamRequestHeaders") {
  const Headers in = {{"Host", "127.0.0.1:8750"},
                      {"Content-Type", "application/json"},
                      {"Connection", "keep-alive, X-Drop-Me"},
                      {"connection", " x-also-drop "},
                      {"X-Drop-Me", "1"},
                      {"X-Also-Drop", "1"},
                      {"Keep-Alive", "timeout=5"},
                      {"Content-Length", "12"},
                      {"Transfer-Encoding", "chunked"},
                      {"TE", "trailers"},
                      {"Expect", "100-continue"},
                      {"Upgrade", "h2c"},
                      {"Proxy-Authorization", "Basic x"},
                      {"X-Keyway-Token", "kw_abc"},
                      {"x-keyway-user", "alice"},
                      {"Authorization", "Bearer x"},
                      {"BU-Connection-Id", "c1"},
                      {"X-Keyway", "not-private"},
                      {"Accept", "a"},
                      {"Accept", "b"}};
  const Headers out = upstreamRequestHeaders(in);
  CHECK(names(out) == std::vector<std::string>{"Content-Type", "Authorization",
                                               "BU-Connection-Id", "X-Keyway", "Accept",
                                               "Accept"});
  CHECK(out[4].value == "a");
  CHECK(out[5].value == "b");
  CHECK(upstreamRequestHeaders({}).empty());

  SUBCASE("a replaced field is dropped whatever its spelling, and only that one") {
    const Headers with_auth = {{"authorization", "Bearer kw_client"},
                               {"Accept", "a"},
                               {"AUTHORIZATION", "Bearer second"},
                               {"Authorization-Extra", "kept"},
                               {"X-Api-Key", "kept too"}};
    const Headers dropped = upstreamRequestHeaders(with_auth, "Authorization");
    CHECK(names(dropped) == std::vector<std::string>{"Accept", "Authorization-Extra", "X-Api-Key"});
    CHECK(dropped[2].value == "kept too");
    // Positive control: without the argument the client's Authorization fields are copied.
    CHECK(names(upstreamRequestHeaders(with_auth)) ==
          std::vector<std::string>{"authorization", "Accept", "AUTHORIZATION", "Authorization-Extra", "X-Api-Key"});
    CHECK(names(upstreamRequestHeaders(with_auth, "x-api-key")) ==
          std::vector<std::string>{"authorization", "Accept", "AUTHORIZATION", "Authorization-Extra"});
    // The usual filter still applies on top of it.
    CHECK(names(upstreamRequestHeaders(in, "Accept")) ==
          std::vector<std::string>{"Content-Type", "Authorization", "BU-Connection-Id", "X-Keyway"});
  }
}

TEST_CASE("header_rules: clientResponseHeaders") {
  const Headers in = {{"Content-Type", "text/plain"},
                      {"Content-Length", "5"},
                      {"Transfer-Encoding", "chunked"},
                      {"Connection", "close, X-Hop"},
                      {"X-Hop", "1"},
                      {"Keep-Alive", "timeout=5"},
                      {"Retry-After", "3"},
                      {"Mcp-Session-Id", "abc"},
                      {"Set-Cookie", "a=1"},
                      {"Set-Cookie", "b=2"},
                      {"Trailer", "X"},
                      {"Upgrade", "websocket"}};
  const Headers out = clientResponseHeaders(in);
  CHECK(names(out) == std::vector<std::string>{"Content-Type", "Retry-After", "Mcp-Session-Id",
                                               "Set-Cookie", "Set-Cookie"});
  CHECK(out[4].value == "b=2");
  SUBCASE("the in-place overload gives the same, also when kept fields overwrite Connection") {
    const auto same = [](const Headers& a, const Headers& b) {
      if (a.size() != b.size()) return false;
      for (size_t i = 0; i < a.size(); ++i) {
        if (a[i].name != b[i].name || a[i].value != b[i].value) return false;
      }
      return true;
    };
    CHECK(same(clientResponseHeaders(Headers(in)), out));
    // The Connection field comes first and names fields after it: filtering in place moves kept
    // fields over it while the named options are still being compared.
    const Headers first = {{"Connection", "X-A, X-B"}, {"Date", "today"}, {"X-A", "1"},
                           {"Server", "s"}, {"X-B", "2"}, {"X-C", "3"}};
    const Headers kept = clientResponseHeaders(Headers(first));
    CHECK(names(kept) == std::vector<std::string>{"Date", "Server", "X-C"});
    CHECK(same(kept, clientResponseHeaders(first)));
  }
  SUBCASE("more fields than the verdicts kept on the stack") {
    Headers many;
    for (int i = 0; i < 100; ++i) many.push_back({"X-" + std::to_string(i), std::to_string(i)});
    many.insert(many.begin() + 50, {"Connection", "x-5 , X-70"});
    const Headers kept = clientResponseHeaders(std::move(many));
    REQUIRE(kept.size() == 98);
    CHECK(kept[5].name == "X-6");
    CHECK(kept[97].name == "X-99");
    for (const auto& h : kept) CHECK((h.name != "X-70" && h.name != "Connection"));
  }
}
