// Plain HTTP message types shared by every layer: no parsing, no I/O.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace keyway::core {

// A header as received or to be sent: name keeps its original spelling, order is kept.
struct Header {
  std::string name;
  std::string value;
};
using Headers = std::vector<Header>;

// ASCII case-insensitive comparison, as header names require (RFC 9110 §5.1). Inline: header
// lookups call it a few dozen times per forwarded request.
inline bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    const auto x = static_cast<unsigned char>(a[i]);
    const auto y = static_cast<unsigned char>(b[i]);
    if (x == y) continue;
    // Equal apart from case only if they differ in bit 0x20 alone and are letters.
    const unsigned folded = x | 0x20u;
    if ((x ^ y) != 0x20u || folded < 'a' || folded > 'z') return false;
  }
  return true;
}

// First header with that name (case-insensitive), or nullptr.
const Header* findHeader(const Headers& headers, std::string_view name);
std::optional<std::string_view> headerValue(const Headers& headers, std::string_view name);
// Removes every header with that name; returns how many were removed.
size_t removeHeader(Headers& headers, std::string_view name);
// Replaces every header with that name by one header with that value (appended at the end).
void setHeader(Headers& headers, std::string_view name, std::string_view value);

// A request as the client sent it. `target` is the raw request-target, byte for byte.
struct HttpRequest {
  std::string method;
  std::string target;
  int version_minor = 1;  // HTTP/1.<minor>
  Headers headers;
  std::string body;
};

// A complete (buffered) response.
struct HttpResponse {
  int status = 200;
  std::string reason;  // empty = the standard phrase for `status`
  Headers headers;
  std::string body;
};

}  // namespace keyway::core
