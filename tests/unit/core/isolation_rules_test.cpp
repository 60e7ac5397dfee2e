// Table tests of the three isolation rules (docs/isolation.md): the token rule
// (core/client_token), the validation rule (core/bosa_route) and the cache-key rule's identity
// (core/cache_policy cacheIdentity).
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "core/bosa_route.hpp"
#include "core/cache_policy.hpp"
#include "core/client_token.hpp"
#include "core/header_rules.hpp"

namespace keyway::core {
namespace {

// A well-formed token: "kw_" + 43 base64url characters.
const std::string kToken = "kw_" + std::string("AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_AbCdE");

std::string base64(std::string_view in) {
  static const char* kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  unsigned acc = 0;
  int bits = 0;
  for (unsigned char c : in) {
    acc = (acc << 8) | c;
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out.push_back(kAlphabet[(acc >> bits) & 63u]);
    }
  }
  if (bits > 0) out.push_back(kAlphabet[(acc << (6 - bits)) & 63u]);
  while (out.size() % 4 != 0) out.push_back('=');
  return out;
}

std::string percentEncodeAll(std::string_view in) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : in) {
    out.push_back('%');
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 15]);
  }
  return out;
}

}  // namespace

TEST_CASE("token rule: carriesClientToken, whatever the header, scheme or position") {
  REQUIRE(kToken.size() == kClientTokenLength);
  REQUIRE(isWellFormedClientToken(kToken));
  struct Case {
    std::string text;
    bool carries;
  };
  const std::vector<Case> cases = {
      {kToken, true},
      {"Bearer " + kToken, true},
      {"bearer   " + kToken + "  ", true},
      {"Token " + kToken, true},
      {"Basic " + kToken, true},                       // not even base64: the raw token
      {"Basic " + base64("user:" + kToken), true},     // the token as the password
      {"Basic " + base64(kToken + ":"), true},         // the token as the user
      {"basic " + base64("x:" + kToken), true},
      {"session=abc; kw=" + kToken + "; theme=dark", true},  // a cookie
      {"a," + kToken + ",b", true},                    // inside a list
      {"prefix" + kToken + "suffix", true},            // glued on both sides
      {percentEncodeAll(kToken), true},                // fully percent-encoded
      {"kw%5F" + kToken.substr(3), true},              // the underscore encoded
      {kToken + "extra-chars", true},                  // longer than a token: still withheld
      {"Basic " + base64("u:" + percentEncodeAll(kToken)), true},
      // Not a token's shape: kept.
      {"", false},
      {"Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig", false},
      {"kw_", false},
      {"kw_short", false},
      {kToken.substr(0, kToken.size() - 1), false},     // one character short
      {"KW_" + kToken.substr(3), false},                // another prefix
      {"kwu_alice", false},                             // a BOSA user handle is no secret
      {"Basic " + base64("alice:hunter2"), false},
      {"kw_" + std::string(42, 'a') + "!" + "aaaa", false},
      {"%zz%4", false},
      {"Basic ", false},
      {"Basic !!!!", false},
  };
  for (const auto& c : cases) {
    CAPTURE(c.text);
    CHECK(carriesClientToken(c.text) == c.carries);
  }
}

TEST_CASE("token rule: upstreamRequestHeaders withholds every field that carries a token") {
  const Headers in = {{"X-Api-Key", kToken},
                      {"Authorization", "Bearer eyJ.jwt.sig"},
                      {"Authorization", "Bearer " + kToken},
                      {"Cookie", "s=" + kToken},
                      {"X-Trace", "t-1"},
                      {"X-Keyway-Token", kToken},  // keyway's own: dropped, not counted
                      {"Proxy-Authorization", "Basic " + base64("u:" + kToken)}};  // hop-by-hop
  size_t withheld = 99;
  const Headers out = upstreamRequestHeaders(in, "", &withheld);
  std::vector<std::string> kept;
  for (const auto& h : out) kept.push_back(h.name + ": " + h.value);
  CHECK(kept == std::vector<std::string>{"Authorization: Bearer eyJ.jwt.sig", "X-Trace: t-1"});
  CHECK(withheld == 3);
  size_t none = 99;
  upstreamRequestHeaders({{"Accept", "*/*"}}, "", &none);
  CHECK(none == 0);
}

TEST_CASE("validation rule: classifyBosaPath") {
  using K = BosaRouteKind;
  struct Case {
    const char* path;
    K kind;
    bool canonical;
    const char* connector;
    const char* action;
  };
  const std::vector<Case> cases = {
      {"/connectors", K::kDiscovery, true, "", ""},
      {"/connectors/", K::kDiscovery, true, "", ""},
      {"/connectors/names", K::kDiscovery, true, "", ""},
      {"/connectors//", K::kDiscovery, false, "", ""},
      {"/connectors/names/", K::kDiscovery, false, "", ""},
      {"/connectors/github/create_issue", K::kAction, true, "github", "create_issue"},
      {"/connectors/github/create_issue/", K::kAction, false, "github", "create_issue"},
      {"/connectors/github/create_issue//", K::kAction, false, "github", "create_issue"},
      {"/connectors//github/create_issue", K::kAction, false, "github", "create_issue"},
      {"/connectors/github//create_issue", K::kAction, false, "github", "create_issue"},
      {"/connectors/github/create%5Fissue", K::kAction, false, "github", "create_issue"},
      {"/connectors/github%2Fcreate_issue", K::kAction, false, "github", "create_issue"},
      {"/connectors%2Fgithub%2Fcreate_issue", K::kAction, false, "github", "create_issue"},
      {"/%63onnectors/github/create_issue", K::kAction, false, "github", "create_issue"},
      {"/connectors/github/list-pull-requests", K::kAction, true, "github", "list-pull-requests"},
      {"/connectors/github/integrations", K::kIntegration, true, "github", ""},
      {"/connectors/github/integrations/octocat", K::kIntegration, true, "github", ""},
      {"/connectors/github/integrations/octocat/", K::kIntegration, false, "github", ""},
      {"/connectors/github/integration-exists", K::kIntegration, true, "github", ""},
      {"/connectors/github/success-authorize-callback", K::kIntegration, true, "github", ""},
      {"/connectors/github/create_issue/extra", K::kOther, true, "", ""},
      {"/users", K::kUser, true, "", ""},
      {"/users/me", K::kUser, true, "", ""},
      {"/users/me/", K::kUser, false, "", ""},
      {"/auth/tokens", K::kUser, true, "", ""},
      {"/clients/user", K::kUser, true, "", ""},
      {"/github/mcp", K::kOther, true, "", ""},
      {"/", K::kOther, true, "", ""},
      {"/Connectors/github/create_issue", K::kOther, true, "", ""},  // routes are case-sensitive
  };
  for (const auto& c : cases) {
    CAPTURE(c.path);
    const BosaRoute r = classifyBosaPath(c.path);
    CHECK(r.kind == c.kind);
    CHECK(r.canonical == c.canonical);
    CHECK(r.connector == c.connector);
    CHECK(r.action == c.action);
  }
}

TEST_CASE("validation rule: a minted user token only goes with canonical known routes") {
  struct Case {
    const char* method;
    const char* path;
    bool takes;
  };
  const std::vector<Case> cases = {
      {"POST", "/connectors/github/create_issue", true},
      {"GET", "/connectors/github/create_issue", false},
      {"POST", "/connectors/github/create_issue/", false},
      {"POST", "/connectors//github/create_issue", false},
      {"POST", "/connectors/github/integrations", true},
      {"GET", "/connectors/github/integrations/octocat", true},
      {"DELETE", "/connectors/github/integrations/octocat", true},
      {"GET", "/connectors/github/integration-exists", true},
      {"GET", "/users/me", true},
      {"GET", "/connectors", false},
      {"GET", "/github/mcp", false},
      {"POST", "/anything/else", false},
  };
  for (const auto& c : cases) {
    CAPTURE(c.method);
    CAPTURE(c.path);
    CHECK(bosaRouteTakesUserToken(classifyBosaPath(c.path), c.method) == c.takes);
  }
}

TEST_CASE("cache-key rule: cacheIdentity reads the request as forwarded") {
  std::vector<std::string> hashed;
  const KeyedHash hash = [&hashed](std::string_view v) {
    hashed.emplace_back(v);
    return "H(" + std::string(v) + ")";
  };
  struct Case {
    const char* label;
    Headers forwarded;
    const char* credential_header;
    const char* bosa_user;
    std::string passthrough;  // expected
    std::string connection_id;
    std::string include_raw;
  };
  const std::vector<Case> cases = {
      {"nothing but keyway's key", {{"X-API-Key", "real"}, {"Accept", "*/*"}}, "X-API-Key", "", "", "", ""},
      {"a passed-through JWT", {{"X-API-Key", "real"}, {"Authorization", "Bearer jwt-a"}}, "X-API-Key", "",
       "H(authorization:Bearer jwt-a\n)", "", ""},
      {"the minted user token is keyway's", {{"X-API-Key", "real"}, {"Authorization", "Bearer minted"}},
       "X-API-Key", "alice", "", "", ""},
      {"BundleUp's Authorization is the injected key",
       {{"Authorization", "Bearer real"}, {"X-Api-Key", "other-account"}}, "Authorization", "",
       "H(x-api-key:other-account\n)", "", ""},
      {"cookies and session headers count", {{"Cookie", "s=1"}, {"Mcp-Session-Id", "m"}}, "", "",
       "H(cookie:s=1\nmcp-session-id:m\n)", "", ""},
      {"view headers, every line", {{"BU-Connection-Id", "a"}, {"bu-connection-id", "b"}, {"BU-Include-Raw", "true"}},
       "", "", "", "a, b", "true"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.label);
    const IdentitySources in{c.forwarded, c.credential_header, "bundleup.api_key", "shared", "fp1", c.bosa_user};
    const CacheIdentity id = cacheIdentity(in, hash);
    CHECK(id.passthrough == c.passthrough);
    CHECK(id.connection_id == c.connection_id);
    CHECK(id.include_raw == c.include_raw);
    CHECK(id.bosa_user == c.bosa_user);
    CHECK(id.credential == "bundleup.api_key@shared#fp1");
  }
  // No credential injected: the credential field stays empty.
  const Headers none;
  CHECK(cacheIdentity(IdentitySources{none, "", "", "", "", ""}, hash).credential.empty());
}

TEST_CASE("cache-key rule: every identity input separates keys") {
  const KeyedHash hash = [](std::string_view v) { return "H(" + std::string(v) + ")"; };
  auto keyOf = [&](const Headers& forwarded, std::string_view fingerprint, std::string_view user) {
    const IdentitySources in{forwarded, "X-API-Key", "bosa.api_key", "shared", fingerprint, user};
    return cacheKey("bosa", "POST", "/connectors/github/list_pull_requests", "", "{}", cacheIdentity(in, hash));
  };
  const Headers plain = {{"X-API-Key", "k"}};
  const Headers alice = {{"X-API-Key", "k"}, {"Authorization", "Bearer alice-jwt"}};
  const Headers bob = {{"X-API-Key", "k"}, {"Authorization", "Bearer bob-jwt"}};
  const Headers raw = {{"X-API-Key", "k"}, {"BU-Include-Raw", "true"}};
  const Headers integration = {{"X-API-Key", "k"}, {"X-Bosa-Integration", "octo"}};
  const std::vector<std::string> keys = {keyOf(plain, "fp1", ""),       keyOf(alice, "fp1", ""),
                                         keyOf(bob, "fp1", ""),         keyOf(plain, "fp2", ""),
                                         keyOf(plain, "fp1", "alice"),  keyOf(raw, "fp1", ""),
                                         keyOf(integration, "fp1", "")};
  for (size_t i = 0; i < keys.size(); ++i) {
    for (size_t j = i + 1; j < keys.size(); ++j) {
      CAPTURE(i);
      CAPTURE(j);
      CHECK(keys[i] != keys[j]);
    }
  }
  // The same inputs give the same key; a non-credential header does not matter.
  CHECK(keyOf(plain, "fp1", "") == keyOf({{"X-API-Key", "k"}, {"User-Agent", "sdk/1"}}, "fp1", ""));
}

TEST_CASE("isCredentialHeaderName") {
  for (const char* n : {"Authorization", "Cookie", "X-Api-Key", "X-API-KEY", "X-Auth-Token", "Mcp-Session-Id",
                        "X-Client-Secret", "X-Signature", "Idempotency-Key", "Password"}) {
    CAPTURE(n);
    CHECK(isCredentialHeaderName(n));
  }
  for (const char* n : {"Accept", "User-Agent", "Content-Type", "BU-Connection-Id", "X-Request-Id", ""}) {
    CAPTURE(n);
    CHECK_FALSE(isCredentialHeaderName(n));
  }
}

}  // namespace keyway::core
