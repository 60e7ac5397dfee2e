// Unit tests for the request-target rules of docs/http.md (core/target).
#include "core/target.hpp"

#include <doctest/doctest.h>

#include <string>
#include <vector>

using keyway::core::ErrorCode;
using keyway::core::splitMount;
using keyway::core::targetPath;
using keyway::core::targetQuery;
using keyway::core::validateRest;
using keyway::core::validateRestOfValidTarget;
using keyway::core::validateTarget;

namespace {
bool refused(std::string_view t) {
  const auto s = validateTarget(t);
  if (s.ok()) return false;
  CHECK(s.error().code == ErrorCode::kBadRequest);
  CHECK_FALSE(s.error().message.empty());
  return true;
}
}  // namespace

TEST_CASE("target: origin-form targets are accepted") {
  for (const char* t : {"/", "/bosa", "/bosa/", "/bundleup-api/v1/connections?limit=10&after=x",
                        "/bosa/connectors/github/list_repos", "/a/b%2Fc/d", "/a/...", "/a/.b",
                        "/a/b./c", "/a/..b", "/x/%2e%2e%2e", "/x?path=../../etc&y=./z",
                        "/x?q=%2e%2e", "/a%20b", "/a;b=c", "/a/b/?x"}) {
    CAPTURE(t);
    CHECK(validateTarget(t).ok());
  }
}

TEST_CASE("target: non-origin forms are refused") {
  CHECK(refused(""));
  CHECK(refused("*"));
  CHECK(refused("http://evil.example/x"));
  CHECK(refused("https://api.bosa.id/connectors"));
  CHECK(refused("evil.example:443"));
  CHECK(refused("bosa/connectors"));
  CHECK(validateTarget("http://evil/x").error().message.find("absolute-form") !=
        std::string::npos);
}

TEST_CASE("target: fragments, bad bytes and malformed escapes are refused") {
  CHECK(refused("/a#frag"));
  CHECK(refused("/a?x=1#frag"));
  CHECK(refused("/a b"));
  CHECK(refused(std::string_view("/a\0b", 4)));
  CHECK(refused("/a\r\nX: y"));
  CHECK(refused("/caf\xC3\xA9"));
  CHECK(refused("/a%"));
  CHECK(refused("/a%2"));
  CHECK(refused("/a%zz"));
  CHECK(refused("/a%2g"));
  CHECK(refused("/a?x=%"));
  CHECK(validateTarget("/a%23b").ok());
  CHECK(validateTarget("/a%25").ok());
}

TEST_CASE("target: dot segments, raw or percent-encoded in any case, are refused") {
  for (const char* t :
       {"/.", "/..", "/bosa/.", "/bosa/..", "/bosa/../x", "/bosa/./x", "/bosa/x/..?q=1",
        "/bosa/%2e", "/bosa/%2E", "/bosa/%2e%2e", "/bosa/%2E%2e/x", "/bosa/.%2e/x",
        "/bosa/%2e./x", "/bosa/..%2Fetc", "/bosa/..%2fetc", "/bosa/%2e%2e%2f", "/bosa/x%2F..",
        "/bosa/..\\x", "/bosa/x\\..\\y", "/bosa/..%5Cx", "/bosa/..;jsessionid=1/x",
        "/bosa/.;x", "/bosa//../x", "/bosa/../"}) {
    CAPTURE(t);
    CHECK(refused(t));
  }
  CHECK(validateTarget("/a/../b").error().message.find("'..'") != std::string::npos);
}

namespace {
// The rules of docs/http.md for an origin-form target, written the plain way (every byte, every
// segment decoded): what validateTarget's table scan and skipped dot walk must agree with.
bool referenceAccepts(std::string_view t) {
  if (t.empty() || t[0] != '/') return false;
  auto hex = [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
  };
  for (size_t i = 0; i < t.size(); ++i) {
    const auto c = static_cast<unsigned char>(t[i]);
    if (c <= 0x20 || c >= 0x7F || c == '#') return false;
    if (c == '%' && (i + 2 >= t.size() || !hex(t[i + 1]) || !hex(t[i + 2]))) return false;
  }
  std::string decoded;  // the path, decoded
  const std::string_view path = t.substr(0, t.find('?'));
  for (size_t i = 0; i < path.size(); ++i) {
    if (path[i] == '%') {
      decoded.push_back(static_cast<char>(std::stoi(std::string(path.substr(i + 1, 2)), nullptr, 16)));
      i += 2;
    } else {
      decoded.push_back(path[i]);
    }
  }
  size_t start = 0;
  for (size_t i = 0; i <= decoded.size(); ++i) {
    if (i < decoded.size() && decoded[i] != '/' && decoded[i] != '\\') continue;
    std::string segment = decoded.substr(start, i - start);
    segment = segment.substr(0, segment.find(';'));  // "..;x" is still ".."
    if (segment == "." || segment == "..") return false;
    start = i + 1;
  }
  return true;
}
}  // namespace

TEST_CASE("target: validateTarget agrees with a plain reference on generated targets") {
  // Pieces that hit every branch of the scan (bad bytes, '#', escapes good and bad, raw and
  // encoded dots and separators, ';', the query), up to four per target, plus every byte value
  // at the start, middle and end of a plain target.
  const char* pieces[] = {"/", "a", ".", "..", "%2e", "%2E", "%2F", "%5C", "\\", ";x", "?", "#", " ",
                          "%zz", "%2", "%", "\x7f", "\x80", "~"};
  size_t accepted = 0;
  size_t total = 0;
  auto check = [&](const std::string& t) {
    CAPTURE(t);
    const bool ok = validateTarget(t).ok();
    CHECK(ok == referenceAccepts(t));
    accepted += ok ? 1 : 0;
    ++total;
  };
  for (const char* p1 : pieces) {
    for (const char* p2 : pieces) {
      for (const char* p3 : pieces) {
        for (const char* p4 : pieces) check(std::string("/u") + p1 + p2 + p3 + p4);
      }
    }
  }
  for (int c = 0; c < 256; ++c) {
    const std::string b(1, static_cast<char>(c));
    check("/" + b + "x/y");
    check("/up/x" + b + "y");
    check("/up/xy" + b);
  }
  CHECK(accepted > 1000);
  CHECK(total - accepted > 1000);
}

TEST_CASE("target: splitMount") {
  auto s = splitMount("/bundleup-api/v1/x?y=1");
  REQUIRE(s.has_value());
  CHECK(s->mount == "bundleup-api");
  CHECK(s->rest == "/v1/x?y=1");
  s = splitMount("/bosa");
  REQUIRE(s.has_value());
  CHECK(s->mount == "bosa");
  CHECK(s->rest == "/");
  s = splitMount("/bosa?x=1");
  REQUIRE(s.has_value());
  CHECK(s->mount == "bosa");
  CHECK(s->rest == "/?x=1");
  s = splitMount("/bosa/");
  REQUIRE(s.has_value());
  CHECK(s->rest == "/");
  s = splitMount("/bosa/a%2Fb//c/?q=a/b");
  REQUIRE(s.has_value());
  CHECK(s->rest == "/a%2Fb//c/?q=a/b");
  s = splitMount("/_keyway/health");
  REQUIRE(s.has_value());
  CHECK(s->mount == "_keyway");
  s = splitMount("/bosa//evil.example/x");
  REQUIRE(s.has_value());
  CHECK(s->rest == "//evil.example/x");
  CHECK_FALSE(splitMount("/").has_value());
  CHECK_FALSE(splitMount("//x").has_value());
  CHECK_FALSE(splitMount("/?x=1").has_value());
  CHECK_FALSE(splitMount("").has_value());
  CHECK_FALSE(splitMount("bosa/x").has_value());
}

TEST_CASE("target: validateRest") {
  CHECK(validateRest("/").ok());
  CHECK(validateRest("/?x=1").ok());
  CHECK(validateRest("/v1/a%2Fb/").ok());
  CHECK(validateRest("/%2Fevil.example").ok());  // encoded: stays a path
  CHECK(validateRest("/a//b").ok());
  for (const char* r : {"", "v1/x", "//evil.example/x", "//", "/\\evil.example", "/../x",
                        "/a/%2e%2e", "/a/.", "/a#b", "/a b", "/a%zz"}) {
    CAPTURE(r);
    const auto st = validateRest(r);
    REQUIRE_FALSE(st.ok());
    CHECK(st.error().code == ErrorCode::kBadRequest);
  }
  CHECK(validateRest("//evil").error().message.find("//") != std::string::npos);
}

TEST_CASE("target: validateRestOfValidTarget agrees with validateRest on every rest of a valid target") {
  // Every target over an alphabet of the bytes and pieces that matter (separators, dots,
  // escapes, encoded slashes and dots, ';', '?', '#', bad bytes), up to four pieces: where
  // validateTarget accepts it, the rest splitMount cuts, and the whole target as a compat
  // listener's rest, get the same verdict from both functions.
  const char* pieces[] = {"/", "a", ".", "..", "%2e", "%2F", "%5C", "\\", ";x", "?", "?q=/..", "#", " ", "%zz", "//"};
  size_t checked = 0;
  size_t refused_rests = 0;
  std::string t;
  auto visit = [&](const std::string& target) {
    if (!validateTarget(target).ok()) return;
    std::vector<std::string> rests{target};
    if (auto split = splitMount(target)) rests.push_back(split->rest);
    for (const auto& rest : rests) {
      CAPTURE(target);
      CAPTURE(rest);
      const bool full = validateRest(rest).ok();
      CHECK(validateRestOfValidTarget(rest).ok() == full);
      ++checked;
      refused_rests += full ? 0 : 1;
    }
  };
  for (const char* p1 : pieces) {
    for (const char* p2 : pieces) {
      for (const char* p3 : pieces) {
        for (const char* p4 : pieces) {
          visit(std::string("/up") + p1 + p2 + p3 + p4);
          visit(std::string("/") + p1 + p2 + p3 + p4);
        }
      }
    }
  }
  CHECK(checked > 1000);
  CHECK(refused_rests > 0);  // "//" rests exist among them: both must refuse those
}

TEST_CASE("target: targetPath and targetQuery") {
  CHECK(targetPath("/a/b?x=1&y=2") == "/a/b");
  CHECK(targetQuery("/a/b?x=1&y=2") == "x=1&y=2");
  CHECK(targetPath("/a/b") == "/a/b");
  CHECK(targetQuery("/a/b") == "");
  CHECK(targetQuery("/a?") == "");
  CHECK(targetPath("/a?") == "/a");
  CHECK(targetQuery("/a?b?c") == "b?c");
  CHECK(targetPath("") == "");
}
