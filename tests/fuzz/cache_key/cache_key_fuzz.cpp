// Fuzz target for cache keys: canonicalJson, canonicalQuery, cacheKey, the rule globs and the
// header directive parsers. Checks invariants (idempotence, order-insensitivity, injectivity),
// not just absence of crashes. Built as a libFuzzer binary with -Dfuzzing=true, and always as a
// replay executable (with tests/fuzz/replay_main.cpp) that `meson test` runs over corpus/.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <algorithm>
#include <string>
#include <string_view>
#include <vector>

#include "core/cache_policy.hpp"
#include "core/canonical_json.hpp"

namespace {

using namespace keyway::core;

[[noreturn]] void violated(const char* what) {
  fprintf(stderr, "cache_key fuzz invariant violated: %s\n", what);
  abort();
}

#define FUZZ_CHECK(cond) \
  do {                   \
    if (!(cond)) violated(#cond); \
  } while (0)

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  size_t start = 0;
  while (true) {
    const size_t at = s.find(sep, start);
    out.push_back(s.substr(start, at == std::string_view::npos ? std::string_view::npos : at - start));
    if (at == std::string_view::npos) break;
    start = at + 1;
  }
  return out;
}

void checkJson(std::string_view in) {
  auto canonical = canonicalJson(in);
  if (!canonical.ok()) {
    FUZZ_CHECK(!canonical.error().message.empty());
    return;
  }
  // Canonical text is valid JSON, is its own canonical form, and has no insignificant space.
  auto again = canonicalJson(*canonical);
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(*again == *canonical);
  // Wrapping in whitespace changes nothing.
  const std::string padded = " \n\t" + std::string(in) + "\r\n ";
  auto padded_canonical = canonicalJson(padded);
  FUZZ_CHECK(padded_canonical.ok() && *padded_canonical == *canonical);
}

void checkQuery(std::string_view in) {
  const std::string q = canonicalQuery(in);
  FUZZ_CHECK(canonicalQuery(q) == q);
  FUZZ_CHECK(q.size() <= in.size());
  // Reversing the parts changes nothing when every key is distinct.
  std::vector<std::string_view> parts;
  for (std::string_view p : split(in, '&')) {
    if (!p.empty()) parts.push_back(p);
  }
  std::vector<std::string_view> keys;
  for (std::string_view p : parts) keys.push_back(p.substr(0, p.find('=')));
  std::sort(keys.begin(), keys.end());
  if (std::adjacent_find(keys.begin(), keys.end()) == keys.end()) {
    std::string reversed;
    for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
      if (!reversed.empty()) reversed += '&';
      reversed += *it;
    }
    FUZZ_CHECK(canonicalQuery(reversed) == q);
  }
}

// The input, split on NUL, gives the key's eleven fields; changing any one field, or moving a
// byte across a field boundary, must change the key.
void checkKey(std::string_view in) {
  constexpr size_t kFields = 11;
  std::vector<std::string> f;
  for (std::string_view part : split(in, '\0')) {
    if (f.size() == kFields) break;
    f.emplace_back(part);
  }
  f.resize(kFields);
  const auto identity = [](const std::vector<std::string>& v) {
    CacheIdentity id;
    id.credential = v[5];
    id.bosa_user = v[6];
    id.connection_id = v[7];
    id.bosa_integration = v[8];
    id.include_raw = v[9];
    id.passthrough = v[10];
    return id;
  };
  const auto make = [&identity](const std::vector<std::string>& v) {
    return cacheKey(v[0], v[1], v[2], v[3], v[4], identity(v));
  };
  const auto tag = [&identity](const std::vector<std::string>& v) { return identityTag(identity(v)); };
  const std::string base = make(f);
  FUZZ_CHECK(make(f) == base);
  const size_t i = in.size() % kFields;
  std::vector<std::string> changed = f;
  changed[i] += 'x';
  // Field 3 is the query: "a&" and "a" are the same canonical query, so append a real part.
  if (i == 3) changed[i] = f[i] + "&zz=" + std::to_string(f[i].size());
  FUZZ_CHECK(make(changed) != base);
  for (size_t b = 0; b + 1 < f.size(); ++b) {
    if (f[b].empty() || b == 3 || b + 1 == 3) continue;
    std::vector<std::string> shifted = f;
    shifted[b + 1].insert(shifted[b + 1].begin(), shifted[b].back());
    shifted[b].pop_back();
    FUZZ_CHECK(make(shifted) != base);
  }
  // The identity tag depends on credential, user, connection and passed-through credentials only.
  std::vector<std::string> view = f;
  view[8] += "i";
  view[9] += "r";
  FUZZ_CHECK(tag(view) == tag(f));
  static constexpr size_t kOwning[] = {5, 6, 7, 10};
  view[kOwning[in.size() % 4]] += "o";
  FUZZ_CHECK(tag(view) != tag(f));
}

void checkPolicy(std::string_view in) {
  // Glob: pattern is the first line, text the rest. Must terminate quickly.
  const size_t nl = in.find('\n');
  const std::string_view pattern = in.substr(0, nl);
  const std::string_view text = nl == std::string_view::npos ? std::string_view() : in.substr(nl + 1);
  const bool matched = globMatch(pattern, text);
  if (pattern.find('*') == std::string_view::npos) FUZZ_CHECK(matched == (pattern == text));
  FUZZ_CHECK(globMatch("**", text));

  // Headers: "Name: value" lines.
  Headers headers;
  for (std::string_view line : split(in, '\n')) {
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    headers.push_back({std::string(line.substr(0, colon)), std::string(line.substr(colon + 1))});
  }
  (void)clientDirective(headers);
  CacheRule rule;
  rule.ignore_upstream_cache_control = (in.size() % 2) == 0;
  const StoreDecision d = storeDecision(rule, 200, headers);
  if (d.store) {
    FUZZ_CHECK(d.ttl.count() >= 0 && d.swr.count() >= 0 && d.sie.count() >= 0);
    FUZZ_CHECK(findHeader(headers, "Set-Cookie") == nullptr);
  }
  const auto paths = invalidationPaths(text);
  FUZZ_CHECK(!paths.empty() && paths.size() <= 4);
  for (const auto& p : paths) FUZZ_CHECK(!p.empty());
  (void)bosaConnectorPrefix(text);
  (void)bosaActionName(text);
  (void)matchRule(defaultCachePolicy(), pattern, "GET", text, bosaActionName(text));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  checkJson(in);
  checkQuery(in);
  checkKey(in);
  checkPolicy(in);
  return 0;
}
