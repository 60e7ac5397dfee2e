// Fuzz target: the token rule (core/client_token) and the validation rule's path classification
// (core/bosa_route), each against a naive reference written independently, plus the header filter
// that applies the token rule (core/header_rules). Input: the first byte picks what is checked.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "core/bosa_route.hpp"
#include "core/client_token.hpp"
#include "core/header_rules.hpp"

namespace {

#define FUZZ_CHECK(cond)                                                             \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                  \
    }                                                                                \
  } while (0)

bool b64url(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

// Naive: try every offset.
bool refRaw(const std::string& s) {
  for (size_t i = 0; i + 46 <= s.size(); ++i) {
    if (s.compare(i, 3, "kw_") != 0) continue;
    bool all = true;
    for (size_t k = i + 3; k < i + 46; ++k) all = all && b64url(s[k]);
    if (all) return true;
  }
  return false;
}

int hexv(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string refPercent(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && hexv(s[i + 1]) >= 0 && hexv(s[i + 2]) >= 0) {
      out += static_cast<char>(hexv(s[i + 1]) * 16 + hexv(s[i + 2]));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

std::string refBase64(const std::string& s) {
  const std::string std_alpha = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const std::string url_alpha = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string bits;
  for (char c : s) {
    size_t v = std_alpha.find(c);
    if (v == std::string::npos) v = url_alpha.find(c);
    if (v == std::string::npos) break;
    for (int b = 5; b >= 0; --b) bits += ((v >> b) & 1) ? '1' : '0';
  }
  std::string out;
  for (size_t i = 0; i + 8 <= bits.size(); i += 8) out += static_cast<char>(std::stoi(bits.substr(i, 8), nullptr, 2));
  return out;
}

std::string trimmed(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && (s[b] == ' ' || s[b] == '\t')) ++b;
  while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t')) --e;
  return s.substr(b, e - b);
}

bool refCarries(const std::string& s) {
  if (refRaw(s) || refRaw(refPercent(s))) return true;
  const std::string t = trimmed(s);
  if (t.size() > 6) {
    std::string scheme = t.substr(0, 6);
    for (char& c : scheme) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c);
    if (scheme == "basic ") {
      const std::string d = refBase64(trimmed(t.substr(6)));
      if (refRaw(d) || refRaw(refPercent(d))) return true;
    }
  }
  return false;
}

void checkToken(const std::string& s) {
  FUZZ_CHECK(keyway::core::carriesClientToken(s) == refCarries(s));
  // The filter never lets a carrying field through, whatever the field name.
  keyway::core::Headers in;
  size_t start = 0;
  while (start <= s.size()) {
    size_t nl = s.find('\n', start);
    if (nl == std::string::npos) nl = s.size();
    const std::string line = s.substr(start, nl - start);
    const size_t colon = line.find(':');
    if (colon != std::string::npos) in.push_back({line.substr(0, colon), line.substr(colon + 1)});
    start = nl + 1;
  }
  size_t withheld = 0;
  const auto out = keyway::core::upstreamRequestHeaders(in, "", &withheld);
  for (const auto& h : out) FUZZ_CHECK(!keyway::core::carriesClientToken(h.value));
  FUZZ_CHECK(withheld <= in.size());
}

void checkRoute(const std::string& raw) {
  using keyway::core::BosaRouteKind;
  const auto r = keyway::core::classifyBosaPath(raw);
  // The normalised path: rooted, no empty segment, no trailing '/' (but "/"), no escapes left
  // that the normalisation would decode again only if the input held double escapes.
  FUZZ_CHECK(!r.path.empty() && r.path[0] == '/');
  FUZZ_CHECK(r.path.find("//") == std::string::npos);
  FUZZ_CHECK(r.path == "/" || r.path.back() != '/');
  if (r.canonical) FUZZ_CHECK(r.path == raw || raw == "/connectors/");
  if (r.kind == BosaRouteKind::kAction) {
    FUZZ_CHECK(!r.connector.empty() && !r.action.empty());
    FUZZ_CHECK(r.path == "/connectors/" + r.connector + "/" + r.action);
    FUZZ_CHECK(r.action.find('/') == std::string::npos && r.connector.find('/') == std::string::npos);
  }
  // A canonical spelling is the normalised path itself, so classifying it again changes nothing
  // unless it still holds escapes (which a second decoding would act on).
  if (r.path.find('%') == std::string::npos) {
    const auto again = keyway::core::classifyBosaPath(r.path);
    FUZZ_CHECK(again.kind == r.kind);
    FUZZ_CHECK(again.path == r.path);
    FUZZ_CHECK(again.canonical || r.kind == BosaRouteKind::kDiscovery);
  }
  // A user token never goes with a path that is not its route's own spelling.
  if (keyway::core::bosaRouteTakesUserToken(r, "POST")) FUZZ_CHECK(r.canonical);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (data[0] % 2 == 0) {
    checkToken(rest);
  } else {
    checkRoute(rest);
  }
  return 0;
}
