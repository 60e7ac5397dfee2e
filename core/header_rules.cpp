// Which header fields cross keyway in each direction: hop-by-hop filtering (RFC 9110 §7.6.1).
#include "core/header_rules.hpp"

#include <algorithm>
#include <vector>

#include "core/client_token.hpp"
#include "core/text.hpp"

namespace keyway::core {

namespace {

// Calls fn(option) for each non-empty connection option of every Connection field, in order,
// with views into `headers`; stops early when fn returns true, and then returns true.
template <typename Fn>
bool forEachConnectionOption(const Headers& headers, Fn&& fn) {
  for (const auto& h : headers) {
    if (iequals(h.name, "Connection") && forEachListElement(h.value, fn)) return true;
  }
  return false;
}

// The connection options named in every Connection field; views into `headers`.
std::vector<std::string_view> connectionOptions(const Headers& headers) {
  std::vector<std::string_view> names;
  forEachConnectionOption(headers, [&names](std::string_view opt) {
    names.push_back(opt);
    return false;
  });
  return names;
}

// True if a Connection field of `headers` names `name` (never empty: a field name) as an
// option; walks the fields in place, allocating nothing.
bool namedInConnection(const Headers& headers, std::string_view name) {
  return forEachConnectionOption(headers, [name](std::string_view opt) { return iequals(opt, name); });
}

bool namedIn(const std::vector<std::string_view>& names, std::string_view name) {
  for (auto n : names) {
    if (iequals(n, name)) return true;
  }
  return false;
}

bool isKeywayPrivate(std::string_view name) {
  constexpr std::string_view kPrefix = "X-Keyway-";
  return name.size() >= kPrefix.size() && iequals(name.substr(0, kPrefix.size()), kPrefix);
}

}  // namespace

bool isHopByHop(std::string_view name) {
  switch (name.size()) {
    case 2: return iequals(name, "TE");
    case 7: return iequals(name, "Trailer") || iequals(name, "Upgrade");
    case 10: return iequals(name, "Connection") || iequals(name, "Keep-Alive");
    case 16: return iequals(name, "Proxy-Connection");
    case 17: return iequals(name, "Transfer-Encoding");
    case 18: return iequals(name, "Proxy-Authenticate");
    case 19: return iequals(name, "Proxy-Authorization");
    default: return false;
  }
}

Headers upstreamRequestHeaders(const Headers& client_headers, std::string_view replaced, size_t* withheld) {
  const auto named = connectionOptions(client_headers);
  Headers out;
  out.reserve(client_headers.size());
  size_t tokens = 0;
  for (const auto& h : client_headers) {
    if (isHopByHop(h.name) || iequals(h.name, "Host") || iequals(h.name, "Content-Length") ||
        iequals(h.name, "Expect") || isKeywayPrivate(h.name) || namedIn(named, h.name) ||
        (!replaced.empty() && iequals(h.name, replaced))) {
      continue;
    }
    // A keyway client token never leaves the host (docs/isolation.md, "The token rule").
    if (carriesClientToken(h.value)) {
      ++tokens;
      continue;
    }
    out.push_back(h);
  }
  if (withheld != nullptr) *withheld = tokens;
  return out;
}

Headers clientResponseHeaders(Headers&& upstream_headers) {
  Headers out = std::move(upstream_headers);
  // The Connection options live in `out`'s own fields, so every field's fate is decided before
  // any is moved. Nearly every upstream sends a Connection field; with the verdicts on the stack
  // for a usual head and the options walked in place, filtering allocates nothing.
  constexpr size_t kSmall = 64;
  unsigned char small_keep[kSmall];
  std::vector<unsigned char> big_keep(out.size() > kSmall ? out.size() : 0);
  unsigned char* keep = out.size() > kSmall ? big_keep.data() : small_keep;
  for (size_t i = 0; i < out.size(); ++i) {
    const Header& h = out[i];
    keep[i] = !(isHopByHop(h.name) || iequals(h.name, "Content-Length") || namedInConnection(out, h.name));
  }
  size_t kept = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    if (keep[i] == 0) continue;
    if (i != kept) out[kept] = std::move(out[i]);
    ++kept;
  }
  out.resize(kept);
  return out;
}

Headers clientResponseHeaders(const Headers& upstream_headers) {
  // One filtering rule: the in-place version's, on a copy.
  return clientResponseHeaders(Headers(upstream_headers));
}

}  // namespace keyway::core
