// Unit tests for the header helpers of the plain HTTP types (core/http_types).
#include "core/http_types.hpp"

#include <doctest/doctest.h>

using namespace keyway::core;

TEST_CASE("http_types: iequals is ASCII case-insensitive") {
  CHECK(iequals("Content-Type", "content-type"));
  CHECK(iequals("", ""));
  CHECK(iequals("X-KEYWAY-token", "x-keyway-TOKEN"));
  CHECK_FALSE(iequals("Content-Type", "Content-Typ"));
  CHECK_FALSE(iequals("a", "b"));
  CHECK_FALSE(iequals("[", "{"));  // 0x5B vs 0x7B: only letters fold
  CHECK_FALSE(iequals("\xC3\x89", "\xC3\xA9"));
}

TEST_CASE("http_types: findHeader and headerValue") {
  const Headers h = {{"Accept", "a"}, {"X-Dup", "1"}, {"x-dup", "2"}, {"Empty", ""}};
  REQUIRE(findHeader(h, "x-DUP") != nullptr);
  CHECK(findHeader(h, "x-DUP")->value == "1");  // the first one
  CHECK(findHeader(h, "Missing") == nullptr);
  CHECK(headerValue(h, "accept").value() == "a");
  CHECK(headerValue(h, "empty").value().empty());
  CHECK_FALSE(headerValue(h, "nope").has_value());
  CHECK(findHeader({}, "x") == nullptr);
}

TEST_CASE("http_types: removeHeader and setHeader") {
  Headers h = {{"A", "1"}, {"B", "2"}, {"a", "3"}, {"C", "4"}};
  CHECK(removeHeader(h, "A") == 2);
  REQUIRE(h.size() == 2);
  CHECK(h[0].name == "B");
  CHECK(h[1].name == "C");
  CHECK(removeHeader(h, "A") == 0);

  setHeader(h, "b", "new");
  REQUIRE(h.size() == 2);
  CHECK(h[0].name == "C");
  CHECK(h[1].name == "b");
  CHECK(h[1].value == "new");
  setHeader(h, "D", "d");
  CHECK(h.size() == 3);
  CHECK(headerValue(h, "d").value() == "d");
}

TEST_CASE("http_types: defaults") {
  const HttpRequest req;
  CHECK(req.version_minor == 1);
  CHECK(req.headers.empty());
  const HttpResponse resp;
  CHECK(resp.status == 200);
  CHECK(resp.reason.empty());
}
