// Tests for core/cache_policy and core/canonical_json: keys, identities, rules, directives,
// store decisions and invalidation paths.
#include <doctest/doctest.h>

#include <string>

#include "core/cache_policy.hpp"
#include "core/canonical_json.hpp"

using namespace keyway::core;
using std::chrono::seconds;

namespace {

std::string canon(std::string_view json) {
  auto r = canonicalJson(json);
  REQUIRE_MESSAGE(r.ok(), "canonicalJson failed on: " << std::string(json));
  return r.value();
}

bool canonFails(std::string_view json) { return !canonicalJson(json).ok(); }

CacheIdentity identity() {
  CacheIdentity id;
  id.credential = "bundleup.api_key@shared";
  id.bosa_user = "alice";
  id.connection_id = "conn_1";
  id.bosa_integration = "github-1";
  id.include_raw = "true";
  return id;
}

std::string key(const CacheIdentity& id, std::string_view query = "a=1",
                std::string_view body = "") {
  return cacheKey("bundleup-unify", "GET", "/v1/chat/channels", query, body, id);
}

}  // namespace

TEST_CASE("canonicalQuery is order-insensitive across keys and keeps each part's bytes") {
  CHECK(canonicalQuery("b=2&a=1") == "a=1&b=2");
  CHECK(canonicalQuery("b=2&a=1") == canonicalQuery("a=1&b=2"));
  CHECK(canonicalQuery("") == "");
  CHECK(canonicalQuery("&&a=1&&") == "a=1");  // empty parts carry nothing
  // Percent-encoding and '+' are kept exactly: different bytes stay different.
  CHECK(canonicalQuery("q=a%20b&p=%2F") == "p=%2F&q=a%20b");
  CHECK(canonicalQuery("q=a%20b") != canonicalQuery("q=a+b"));
  CHECK(canonicalQuery("q=%2f") != canonicalQuery("q=%2F"));
  CHECK(canonicalQuery("flag") != canonicalQuery("flag="));
  // Repeated keys keep their relative order (sort=name&sort=date is not sort=date&sort=name),
  // while moving as a group with respect to other keys.
  CHECK(canonicalQuery("sort=name&x=1&sort=date") == "sort=name&sort=date&x=1");
  CHECK(canonicalQuery("a=2&a=1") == "a=2&a=1");
  CHECK(canonicalQuery("a=2&a=1") != canonicalQuery("a=1&a=2"));
  // Idempotent.
  const std::string once = canonicalQuery("z=1&y=2&z=0&b&a=");
  CHECK(canonicalQuery(once) == once);
  CHECK(once == "a=&b&y=2&z=1&z=0");
}

TEST_CASE("canonicalJson sorts keys and drops insignificant whitespace") {
  CHECK(canon(R"({"b":1,"a":2})") == R"({"a":2,"b":1})");
  CHECK(canon(" {\n\t\"b\" : [ 1 , 2 ] ,\r\n \"a\" : { \"d\" : null , \"c\" : true } } ") ==
        R"({"a":{"c":true,"d":null},"b":[1,2]})");
  CHECK(canon(R"({"owner":"x","repo":"y"})") == canon(R"({ "repo" : "y", "owner" : "x" })"));
  // Array order is meaningful and kept.
  CHECK(canon("[3,1,2]") == "[3,1,2]");
  CHECK(canon("[3,1,2]") != canon("[1,2,3]"));
  // Sorting is by UTF-8 bytes: "B" (0x42) < "a" (0x61) < "é" (0xC3 0xA9).
  CHECK(canon("{\"\xC3\xA9\":1,\"a\":2,\"B\":3}") == "{\"B\":3,\"a\":2,\"\xC3\xA9\":1}");
  // Duplicate names keep their order: Python keeps the last one, so these differ.
  CHECK(canon(R"({"a":1,"a":2})") == R"({"a":1,"a":2})");
  CHECK(canon(R"({"a":1,"a":2})") != canon(R"({"a":2,"a":1})"));
  // Scalars at top level, empty containers.
  CHECK(canon(" 42 ") == "42");
  CHECK(canon("{ }") == "{}");
  CHECK(canon("[ ]") == "[]");
  CHECK(canon(R"({"a":[],"b":{}})") == R"({"a":[],"b":{}})");
}

TEST_CASE("canonicalJson re-escapes strings minimally") {
  CHECK(canon(R"("\u0041\/\u00e9")") == "\"A/\xC3\xA9\"");
  CHECK(canon("\"\xC3\xA9\"") == canon(R"("\u00E9")"));
  CHECK(canon(R"("a\"b\\c")") == R"("a\"b\\c")");
  CHECK(canon(R"("\n\t\r\b\f\u0001\u001F")") == R"("\n\t\r\b\f\u0001\u001f")");
  CHECK(canon(R"("\u007f")") == "\"\x7f\"");
  // A surrogate pair becomes the 4-byte UTF-8 sequence (U+1F600).
  CHECK(canon(R"("\ud83d\ude00")") == "\"\xF0\x9F\x98\x80\"");
  // Lone surrogates (accepted by Python) survive as lowercase escapes, distinct from each other.
  CHECK(canon(R"("\uD800")") == R"("\ud800")");
  CHECK(canon(R"("\udc00x")") == R"("\udc00x")");
  CHECK(canon(R"("\uD800\u0041")") == R"("\ud800A")");
  CHECK(canon(R"("\ud800")") != canon(R"("\ud801")"));
  // Names are re-escaped the same way.
  CHECK(canon(R"({"\u0062":1,"a":2})") == R"({"a":2,"b":1})");
}

TEST_CASE("canonicalJson normalises floats but never merges ints with floats") {
  CHECK(canon("1.0") == "1.0");
  CHECK(canon("1e0") == "1.0");
  CHECK(canon("10e-1") == "1.0");
  CHECK(canon("1.00") == "1.0");
  CHECK(canon("1E+0") == "1.0");
  CHECK(canon("1") == "1");
  CHECK(canon("1") != canon("1.0"));
  CHECK(canon("-0") == "0");
  CHECK(canon("-0.0") == "-0.0");  // a distinct Python float
  CHECK(canon("0.1") == "0.1");
  CHECK(canon("0.10000000000000000001") == "0.1");  // the same double
  CHECK(canon("1.5e300") == "1.5e+300");
  CHECK(canon("1e21") == "1e+21");
  CHECK(canon("123456789012345678901234567890") == "123456789012345678901234567890");
  CHECK(canon("1e400") == "1e400");  // overflows a double: kept as written
  CHECK(canon(R"({"limit":10.0,"page":1})") == canon(R"({"page":1,"limit":1e1})"));
  CHECK(canon(R"({"limit":10})") != canon(R"({"limit":10.0})"));
}

TEST_CASE("canonicalJson rejects invalid JSON with the offset") {
  for (const char* bad :
       {"", " ", "{", "}", "[1,]", "{\"a\":1,}", "{'a':1}", "NaN", "Infinity", "01", "1.", ".5",
        "1e", "-", "+1", "tru", "nul", "\"abc", "\"a\\x\"", "\"\\u12\"", "\"\\u12G4\"", "[1 2]",
        "{\"a\" 1}", "{1:2}", "1 2", "[1]]", "\"\x01\"", "\"\xC3\"", "\"\xC0\xAF\"",
        "\"\xED\xA0\x80\"", "\"\xF4\x90\x80\x80\"", "\xEF\xBB\xBF{}"}) {
    CAPTURE(bad);
    CHECK(canonFails(bad));
  }
  auto r = canonicalJson("[1,2,}");
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == ErrorCode::kBadRequest);
  CHECK(r.error().message.find("byte 5") != std::string::npos);
}

TEST_CASE("canonicalJson bounds nesting depth") {
  const size_t limit = kMaxCanonicalJsonDepth;
  std::string ok_arrays = std::string(limit, '[') + std::string(limit, ']');
  CHECK(canon(ok_arrays) == ok_arrays);
  std::string deep_arrays = std::string(limit + 1, '[') + std::string(limit + 1, ']');
  CHECK(canonFails(deep_arrays));
  std::string deep_objects;
  for (size_t i = 0; i <= limit; ++i) deep_objects += "{\"a\":";
  deep_objects += "1" + std::string(limit + 1, '}');
  CHECK(canonFails(deep_objects));
  // Very deep input fails quickly instead of overflowing the stack.
  CHECK(canonFails(std::string(1'000'000, '[')));
}

TEST_CASE("cacheKey separates every identity field and is unambiguous") {
  const CacheIdentity base = identity();
  const std::string k = key(base);
  CHECK(k == key(base));

  CacheIdentity other = base;
  other.credential = "bundleup.api_key@team:blue";  // a team with its own secret
  CHECK(key(other) != k);
  other = base;
  other.bosa_user = "bob";
  CHECK(key(other) != k);
  other = base;
  other.connection_id = "conn_2";
  CHECK(key(other) != k);
  other = base;
  other.bosa_integration = "github-2";
  CHECK(key(other) != k);
  other = base;
  other.include_raw = "";
  CHECK(key(other) != k);

  // Teams sharing the same shared secret share keys: the identity names the credential.
  CacheIdentity same = base;
  CHECK(key(same) == k);

  // Field boundaries cannot be shifted: lengths are part of the key.
  CacheIdentity a, b;
  a.credential = "x@shared";
  a.bosa_user = "y";
  b.credential = "x@sharedy";
  b.bosa_user = "";
  CHECK(key(a) != key(b));
  CHECK(cacheKey("ab", "GET", "/c", "", "", a) != cacheKey("a", "bGET", "/c", "", "", a));
  CHECK(cacheKey("u", "GET", "/p", "q=1", "", a) != cacheKey("u", "GET", "/pq=1", "", "", a));

  // Method, path, query and body all matter; query order does not.
  CHECK(cacheKey("u", "GET", "/p", "", "", a) != cacheKey("u", "HEAD", "/p", "", "", a));
  CHECK(cacheKey("u", "GET", "/p", "", "", a) != cacheKey("u", "GET", "/p/", "", "", a));
  CHECK(cacheKey("u", "GET", "/p", "b=1&a=2", "", a) == cacheKey("u", "GET", "/p", "a=2&b=1", "", a));
  CHECK(cacheKey("u", "GET", "/p", "a=1", "", a) != cacheKey("u", "GET", "/p", "a=2", "", a));
  CHECK(cacheKey("u", "POST", "/p", "", canon(R"({"b":1, "a":2})"), a) ==
        cacheKey("u", "POST", "/p", "", canon(R"({"a":2,"b":1})"), a));
  CHECK(cacheKey("u", "POST", "/p", "", canon(R"({"a":1})"), a) !=
        cacheKey("u", "POST", "/p", "", canon(R"({"a":2})"), a));
}

TEST_CASE("identityTag owns data: credential, user and connection, not the view headers") {
  const CacheIdentity base = identity();
  const std::string tag = identityTag(base);
  CacheIdentity other = base;
  other.credential = "bundleup.api_key@team:blue";
  CHECK(identityTag(other) != tag);
  other = base;
  other.bosa_user = "bob";
  CHECK(identityTag(other) != tag);
  other = base;
  other.connection_id = "conn_2";
  CHECK(identityTag(other) != tag);
  // Views of the same data share the tag, so a write through one invalidates all of them.
  other = base;
  other.include_raw = "";
  other.bosa_integration = "";
  CHECK(identityTag(other) == tag);
  CHECK(key(other) != key(base));
}

TEST_CASE("globMatch: '*' stays within a segment, '**' crosses them") {
  CHECK(globMatch("**", ""));
  CHECK(globMatch("**", "/a/b/c"));
  CHECK(globMatch("/v1/*", "/v1/connections"));
  CHECK(globMatch("/v1/*", "/v1/"));
  CHECK_FALSE(globMatch("/v1/*", "/v1/connections/c1"));
  CHECK(globMatch("/v1/**", "/v1/connections/c1"));
  CHECK_FALSE(globMatch("/v1/**", "/v2/connections"));
  CHECK(globMatch("**/mcp", "/mcp"));
  CHECK(globMatch("**/mcp", "/v1/mcp"));
  CHECK_FALSE(globMatch("**/mcp", "/v1/mcp/"));
  CHECK_FALSE(globMatch("**/mcp", "/v1/mcpx"));
  CHECK_FALSE(globMatch("**/mcp/**", std::string_view()));  // null data(): no memmem on it
  CHECK_FALSE(globMatch("**/mcp", std::string_view()));
  CHECK(globMatch("**/mcp/**", "/mcp/"));
  CHECK(globMatch("list_*", "list_pull_requests"));
  CHECK_FALSE(globMatch("list_*", "create_issue"));
  CHECK(globMatch("/connectors/*/*", "/connectors/github/list_x"));
  CHECK_FALSE(globMatch("/connectors/*/*", "/connectors/github/a/b"));
  CHECK(globMatch("a*b*c", "aXXbYYc"));
  CHECK_FALSE(globMatch("a*b*c", "aXXbYY"));
  CHECK(globMatch("", ""));
  CHECK_FALSE(globMatch("", "x"));
  CHECK_FALSE(globMatch("/V1/**", "/v1/x"));  // case-sensitive
  // No exponential blow-up on adversarial patterns.
  CHECK_FALSE(globMatch("*a*a*a*a*a*a*a*a*a*a*a*a*b", std::string(5000, 'a')));
  CHECK_FALSE(globMatch("**a**a**a**a**a**a**a**a**b", std::string(5000, 'a')));
}

namespace {

// Reference matcher for the differential test below: plain backtracking over the same rules
// ('*' anything but '/', '**' anything), fine for short inputs.
bool refGlob(std::string_view p, std::string_view t) {
  if (p.empty()) return t.empty();
  if (p.substr(0, 2) == "**") {
    size_t k = 2;
    while (k < p.size() && p[k] == '*') ++k;
    for (size_t i = 0; i <= t.size(); ++i) {
      if (refGlob(p.substr(k), t.substr(i))) return true;
    }
    return false;
  }
  if (p[0] == '*') {
    for (size_t i = 0; i <= t.size(); ++i) {
      if (refGlob(p.substr(1), t.substr(i))) return true;
      if (i < t.size() && t[i] == '/') break;
    }
    return false;
  }
  return !t.empty() && t[0] == p[0] && refGlob(p.substr(1), t.substr(1));
}

}  // namespace

TEST_CASE("globMatch agrees with a reference matcher on random patterns and paths") {
  // Covers the literal-only-between-'**' fast path and the NFA alike.
  uint32_t seed = 12345;
  const auto next = [&seed](uint32_t n) {
    seed = seed * 1103515245u + 12345u;
    return (seed >> 16) % n;
  };
  const char* pieces[] = {"*", "**", "/", "a", "b", "m", "/a", "ab"};
  const char alphabet[] = {'/', 'a', 'b', 'm'};
  int fast_path_cases = 0;
  int suffix_cases = 0;    // "**<literal>": the suffix test
  int contains_cases = 0;  // "**<literal>**": the substring search
  for (int round = 0; round < 20'000; ++round) {
    std::string pattern;
    for (uint32_t k = next(6); k > 0; --k) {
      const std::string piece = pieces[next(8)];
      // Keep runs of stars at most two long (validateCachePolicy refuses '***').
      if (piece[0] == '*' && !pattern.empty() && pattern.back() == '*') continue;
      pattern += piece;
    }
    std::string text;
    for (uint32_t k = next(9); k > 0; --k) text += alphabet[next(4)];
    if (pattern.find("**") != std::string::npos) ++fast_path_cases;
    if (pattern.size() > 2 && pattern.compare(0, 2, "**") == 0) {
      const std::string rest = pattern.substr(2);
      if (rest.find('*') == std::string::npos) ++suffix_cases;
      if (rest.size() > 2 && rest.compare(rest.size() - 2, 2, "**") == 0 &&
          rest.substr(0, rest.size() - 2).find('*') == std::string::npos) {
        ++contains_cases;
      }
    }
    INFO("pattern '" << pattern << "' text '" << text << "'");
    REQUIRE(globMatch(pattern, text) == refGlob(pattern, text));
  }
  CHECK(fast_path_cases > 1000);
  CHECK(suffix_cases > 200);
  CHECK(contains_cases > 50);
}

TEST_CASE("default rules: Platform, Unify, BundleIQ GETs and BOSA read actions; never Proxy or MCP") {
  const CachePolicyConfig policy = defaultCachePolicy();
  REQUIRE(validateCachePolicy(policy).ok());

  const CacheRule* api = matchRule(policy, "bundleup-api", "GET", "/v1/connections", "");
  REQUIRE(api != nullptr);
  CHECK(api->ttl == seconds(60));
  CHECK(api->stale_while_revalidate == seconds(30));
  CHECK(api->stale_if_error == seconds(3600));
  CHECK(api->ignore_upstream_cache_control);
  CHECK(matchRule(policy, "bundleup-api", "GET", "/v1/webhooks/wh_1", "") != nullptr);
  CHECK(matchRule(policy, "bundleup-api", "POST", "/v1/webhooks", "") == nullptr);
  CHECK(matchRule(policy, "bundleup-api", "DELETE", "/v1/webhooks/wh_1", "") == nullptr);

  CHECK(matchRule(policy, "bundleup-unify", "GET", "/v1/chat/channels", "") != nullptr);
  CHECK(matchRule(policy, "bundleup-unify", "GET", "/chat/channels", "") != nullptr);
  // Unified MCP and any MCP path on any upstream: never.
  CHECK(matchRule(policy, "bundleup-unify", "GET", "/v1/mcp", "") == nullptr);
  CHECK(matchRule(policy, "bundleup-unify", "GET", "/v1/mcp/", "") == nullptr);
  CHECK(matchRule(policy, "bundleiq", "GET", "/github/mcp", "") == nullptr);
  CHECK(matchRule(policy, "bundleup-mcp", "GET", "/", "") == nullptr);
  CHECK(matchRule(policy, "bundleup-mcp", "GET", "/v1/tools", "") == nullptr);
  // Proxy: never, whatever the method or path.
  CHECK(matchRule(policy, "bundleup-proxy", "GET", "/repos/o/r/pulls", "") == nullptr);
  CHECK(matchRule(policy, "bundleup-proxy", "GET", "/", "") == nullptr);

  const CacheRule* iq = matchRule(policy, "bundleiq", "GET", "/v1/notes", "");
  REQUIRE(iq != nullptr);
  CHECK(iq->ttl == seconds(30));

  // BOSA: read-like actions only, and only as actions.
  for (const char* action : {"list_pull_requests", "search_issues", "get_repository"}) {
    CAPTURE(action);
    const std::string path = std::string("/connectors/github/") + action;
    CHECK(bosaActionName(path) == action);
    CHECK(matchRule(policy, "bosa", "POST", path, action) != nullptr);
    CHECK(matchRule(policy, "bosa", "POST", path, "") == nullptr);  // not flagged as an action
  }
  CHECK(matchRule(policy, "bosa", "POST", "/connectors/github/create_issue", "create_issue") ==
        nullptr);
  CHECK(matchRule(policy, "bosa", "GET", "/connectors/github/integration-exists", "") == nullptr);
  CHECK(matchRule(policy, "bosa", "GET", "/connectors", "") == nullptr);

  // Unknown upstreams are not cached by default.
  CHECK(matchRule(policy, "bundleup-auth", "GET", "/v1/me", "") == nullptr);

  CachePolicyConfig off = policy;
  off.enabled = false;
  CHECK(matchRule(off, "bundleup-api", "GET", "/v1/connections", "") == nullptr);
}

TEST_CASE("matchRule: first match wins, disabled rules deny, methods and actions filter") {
  CachePolicyConfig policy;
  CacheRule deny;
  deny.upstream = "svc";
  deny.methods = {"*"};
  deny.path = "/private/**";
  deny.enabled = false;
  CacheRule get_all;
  get_all.upstream = "svc";
  get_all.methods = {"get", "HEAD"};  // case-insensitive
  get_all.path = "**";
  get_all.ttl = seconds(5);
  CacheRule actions;
  actions.upstream = "*";
  actions.methods = {"POST"};
  actions.path = "/connectors/*/*";
  actions.action = "list_*";
  policy.rules = {deny, get_all, actions};
  REQUIRE(validateCachePolicy(policy).ok());

  CHECK(matchRule(policy, "svc", "GET", "/private/x", "") == nullptr);
  const CacheRule* r = matchRule(policy, "svc", "GET", "/public/x", "");
  REQUIRE(r != nullptr);
  CHECK(r->ttl == seconds(5));
  CHECK(matchRule(policy, "svc", "HEAD", "/public/x", "") == r);
  CHECK(matchRule(policy, "svc", "PUT", "/public/x", "") == nullptr);
  CHECK(matchRule(policy, "other", "GET", "/public/x", "") == nullptr);
  CHECK(matchRule(policy, "other", "POST", "/connectors/a/list_b", "list_b") == &policy.rules[2]);
  CHECK(matchRule(policy, "other", "POST", "/connectors/a/get_b", "get_b") == nullptr);

  CacheRule empty_methods;
  empty_methods.methods.clear();
  policy.rules = {empty_methods};
  CHECK(matchRule(policy, "x", "GET", "/", "") != nullptr);
  CHECK(matchRule(policy, "x", "POST", "/", "") == nullptr);
}

TEST_CASE("validateCachePolicy names the rule and field") {
  CachePolicyConfig policy;
  policy.rules.resize(2);
  REQUIRE(validateCachePolicy(policy).ok());
  policy.rules[1].path = "v1/**";
  auto s = validateCachePolicy(policy);
  REQUIRE_FALSE(s.ok());
  CHECK(s.error().message.find("cache.rules[1].path") != std::string::npos);
  policy.rules[1].path = "/v1?x";
  CHECK_FALSE(validateCachePolicy(policy).ok());
  policy.rules[1].path = "/***";
  CHECK_FALSE(validateCachePolicy(policy).ok());
  policy.rules[1].path = "/v1/**";
  policy.rules[0].ttl = seconds(-1);
  s = validateCachePolicy(policy);
  REQUIRE_FALSE(s.ok());
  CHECK(s.error().message.find("cache.rules[0].ttl") != std::string::npos);
  policy.rules[0].ttl = seconds(1);
  policy.rules[0].methods = {"GE T"};
  CHECK_FALSE(validateCachePolicy(policy).ok());
  policy.rules[0].methods = {"GET"};
  policy.rules[0].upstream = "";
  CHECK_FALSE(validateCachePolicy(policy).ok());
  policy.rules[0].upstream = "*";
  policy.max_bytes = 0;
  CHECK_FALSE(validateCachePolicy(policy).ok());
}

TEST_CASE("clientDirective: no-cache, no-store, Pragma") {
  CHECK(clientDirective({}) == ClientCacheDirective::kNormal);
  CHECK(clientDirective({{"Cache-Control", "no-cache"}}) == ClientCacheDirective::kNoCache);
  CHECK(clientDirective({{"cache-control", "No-Store"}}) == ClientCacheDirective::kNoStore);
  CHECK(clientDirective({{"Cache-Control", "no-cache, no-store"}}) ==
        ClientCacheDirective::kNoStore);
  CHECK(clientDirective({{"Cache-Control", "no-cache"}, {"Cache-Control", "no-store"}}) ==
        ClientCacheDirective::kNoStore);
  CHECK(clientDirective({{"Pragma", "no-cache"}}) == ClientCacheDirective::kNoCache);
  CHECK(clientDirective({{"Cache-Control", "max-age=0"}}) == ClientCacheDirective::kNoCache);
  CHECK(clientDirective({{"Cache-Control", "max-age=60"}}) == ClientCacheDirective::kNormal);
  CHECK(clientDirective({{"Cache-Control", " max-stale , no-transform "}}) ==
        ClientCacheDirective::kNormal);
  // A quoted argument is not a directive, even when it contains one.
  CHECK(clientDirective({{"Cache-Control", "foo=\"no-store, no-cache\""}}) ==
        ClientCacheDirective::kNormal);
  CHECK(clientDirective({{"X-Cache-Control", "no-store"}}) == ClientCacheDirective::kNormal);
  CHECK(clientDirective({{"Cache-Control", ",,,"}}) == ClientCacheDirective::kNormal);
}

TEST_CASE("storeDecision: only clean 2xx responses, with the rule's windows") {
  CacheRule rule;
  rule.ttl = seconds(60);
  rule.stale_while_revalidate = seconds(30);
  rule.stale_if_error = seconds(3600);

  StoreDecision d = storeDecision(rule, 200, {{"Content-Type", "application/json"}});
  CHECK(d.store);
  CHECK(d.ttl == seconds(60));
  CHECK(d.swr == seconds(30));
  CHECK(d.sie == seconds(3600));
  CHECK(storeDecision(rule, 204, {}).store);

  for (int status : {100, 199, 206, 301, 304, 400, 401, 404, 429, 500, 503}) {
    CAPTURE(status);
    CHECK_FALSE(storeDecision(rule, status, {}).store);
  }
  CHECK_FALSE(storeDecision(rule, 200, {{"Set-Cookie", "s=1"}}).store);
  CHECK_FALSE(storeDecision(rule, 200, {{"Vary", "*"}}).store);
  CHECK_FALSE(storeDecision(rule, 200, {{"Vary", "Accept-Encoding, Accept"}}).store);
  CHECK(storeDecision(rule, 200, {{"Vary", "accept-encoding, BU-Connection-Id"}}).store);
  CHECK_FALSE(storeDecision(rule, 200, {{"Content-Type", "text/event-stream; charset=utf-8"}}).store);
  CHECK_FALSE(storeDecision(rule, 200, {{"Content-Encoding", "gzip"}}).store);
  CHECK(storeDecision(rule, 200, {{"Content-Encoding", "identity"}}).store);

  // The rule ignores upstream Cache-Control by default...
  const Headers forbid = {{"Cache-Control", "private, no-store, max-age=0"}};
  CHECK(storeDecision(rule, 200, forbid).store);
  CHECK(storeDecision(rule, 200, forbid).ttl == seconds(60));
  // ... and honours it when told to.
  CacheRule strict = rule;
  strict.ignore_upstream_cache_control = false;
  CHECK_FALSE(storeDecision(strict, 200, forbid).store);
  CHECK_FALSE(storeDecision(strict, 200, {{"Cache-Control", "no-cache"}}).store);
  CHECK_FALSE(storeDecision(strict, 200, {{"Pragma", "no-cache"}}).store);
  d = storeDecision(strict, 200, {{"Cache-Control", "public, max-age=5"}});
  CHECK(d.store);
  CHECK(d.ttl == seconds(5));
  d = storeDecision(strict, 200,
                    {{"Cache-Control", "max-age=5, s-maxage=7, stale-while-revalidate=9, "
                                       "stale-if-error=11"}});
  CHECK(d.ttl == seconds(7));
  CHECK(d.swr == seconds(9));
  CHECK(d.sie == seconds(11));
  CHECK(storeDecision(strict, 200, {{"Cache-Control", "max-age=abc"}}).ttl == seconds(60));

  // Set-Cookie is never stored, even when Cache-Control is ignored.
  CHECK_FALSE(storeDecision(rule, 200, {{"set-cookie", "a=b"}}).store);

  CacheRule nothing = rule;
  nothing.ttl = nothing.stale_while_revalidate = nothing.stale_if_error = seconds(0);
  CHECK_FALSE(storeDecision(nothing, 200, {}).store);
  CacheRule disabled = rule;
  disabled.enabled = false;
  CHECK_FALSE(storeDecision(disabled, 200, {}).store);
}

TEST_CASE("freshnessWindow and cacheFreshness") {
  StoreDecision d;
  d.store = true;
  d.ttl = seconds(60);
  d.swr = seconds(30);
  d.sie = seconds(3600);
  const int64_t t0 = 1'700'000'000'000;
  const FreshnessWindow w = freshnessWindow(t0, d);
  CHECK(w.fresh_until_unix_ms == t0 + 60'000);
  CHECK(w.stale_until_unix_ms == t0 + 60'000 + 3'600'000);

  const auto at = [&](int64_t offset_ms) {
    return cacheFreshness(t0 + offset_ms, w.fresh_until_unix_ms, w.stale_until_unix_ms, d.swr,
                          d.sie);
  };
  CHECK(at(0) == CacheFreshness::kFresh);
  CHECK(at(59'999) == CacheFreshness::kFresh);
  CHECK(at(60'000) == CacheFreshness::kStale);
  CHECK(at(89'999) == CacheFreshness::kStale);
  CHECK(at(90'000) == CacheFreshness::kStaleIfError);
  CHECK(at(3'659'999) == CacheFreshness::kStaleIfError);
  CHECK(at(3'660'000) == CacheFreshness::kExpired);
  // A shrunk rule (config reload) bounds the windows too.
  CHECK(cacheFreshness(t0 + 61'000, w.fresh_until_unix_ms, w.stale_until_unix_ms, seconds(0),
                       seconds(0)) == CacheFreshness::kExpired);
}

TEST_CASE("invalidationPaths: the resource and its collection") {
  using V = std::vector<std::string>;
  CHECK(invalidationPaths("/v1/webhooks/wh_1") ==
        V{"/v1/webhooks/wh_1", "/v1/webhooks/wh_1/", "/v1/webhooks", "/v1/webhooks/"});
  CHECK(invalidationPaths("/v1/webhooks/wh_1/") == invalidationPaths("/v1/webhooks/wh_1"));
  CHECK(invalidationPaths("/v1/webhooks") == V{"/v1/webhooks", "/v1/webhooks/", "/v1", "/v1/"});
  CHECK(invalidationPaths("/v1") == V{"/v1", "/v1/", "/"});
  CHECK(invalidationPaths("/") == V{"/"});
  CHECK(invalidationPaths("") == V{"/"});
  CHECK(invalidationPaths("//") == V{"/"});

  CHECK(invalidatesOnSuccess("POST"));
  CHECK(invalidatesOnSuccess("delete"));
  CHECK(invalidatesOnSuccess("PATCH"));
  CHECK(invalidatesOnSuccess("PUT"));
  CHECK_FALSE(invalidatesOnSuccess("GET"));
  CHECK_FALSE(invalidatesOnSuccess("HEAD"));
}

TEST_CASE("BOSA helpers: action names and connector prefixes") {
  CHECK(bosaActionName("/connectors/github/list_pull_requests") == "list_pull_requests");
  CHECK(bosaActionName("/connectors/github/") == "");
  CHECK(bosaActionName("/connectors//list_x") == "");
  CHECK(bosaActionName("/connectors/github/a/b") == "");
  CHECK(bosaActionName("/connectors") == "");
  CHECK(bosaActionName("/users/github/list_x") == "");

  CHECK(bosaConnectorPrefix("/connectors/github/create_issue") == "/connectors/github/");
  CHECK(bosaConnectorPrefix("/connectors/github/integrations/alice") == "/connectors/github/");
  CHECK(bosaConnectorPrefix("/connectors/github") == std::nullopt);
  CHECK(bosaConnectorPrefix("/connectors//x") == std::nullopt);
  CHECK(bosaConnectorPrefix("/users/x") == std::nullopt);
}
