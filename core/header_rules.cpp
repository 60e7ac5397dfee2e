// Which header fields cross keyway in each direction: hop-by-hop filtering (RFC 9110 §7.6.1).
#include "core/header_rules.hpp"

#include <algorithm>
#include <vector>

namespace keyway::core {

namespace {

std::string_view trimOws(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && (s[b] == ' ' || s[b] == '\t')) ++b;
  while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t')) --e;
  return s.substr(b, e - b);
}

// The connection options named in every Connection field; views into `headers`.
std::vector<std::string_view> connectionOptions(const Headers& headers) {
  std::vector<std::string_view> names;
  for (const auto& h : headers) {
    if (!iequals(h.name, "Connection")) continue;
    const std::string_view v = h.value;
    size_t pos = 0;
    while (pos <= v.size()) {
      size_t comma = v.find(',', pos);
      if (comma == std::string_view::npos) comma = v.size();
      const std::string_view opt = trimOws(v.substr(pos, comma - pos));
      if (!opt.empty()) names.push_back(opt);
      pos = comma + 1;
    }
  }
  return names;
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

Headers upstreamRequestHeaders(const Headers& client_headers) {
  const auto named = connectionOptions(client_headers);
  Headers out;
  out.reserve(client_headers.size());
  for (const auto& h : client_headers) {
    if (isHopByHop(h.name) || iequals(h.name, "Host") || iequals(h.name, "Content-Length") ||
        iequals(h.name, "Expect") || isKeywayPrivate(h.name) || namedIn(named, h.name)) {
      continue;
    }
    out.push_back(h);
  }
  return out;
}

Headers clientResponseHeaders(Headers&& upstream_headers) {
  // Owned copies: remove_if overwrites the Connection fields the options would point into.
  std::vector<std::string> owned;
  for (std::string_view option : connectionOptions(upstream_headers)) owned.emplace_back(option);
  const std::vector<std::string_view> named(owned.begin(), owned.end());
  Headers out = std::move(upstream_headers);
  out.erase(std::remove_if(out.begin(), out.end(),
                           [&named](const Header& h) {
                             return isHopByHop(h.name) || iequals(h.name, "Content-Length") ||
                                    namedIn(named, h.name);
                           }),
            out.end());
  return out;
}

Headers clientResponseHeaders(const Headers& upstream_headers) {
  // One filtering rule: the in-place version's, on a copy.
  return clientResponseHeaders(Headers(upstream_headers));
}

}  // namespace keyway::core
