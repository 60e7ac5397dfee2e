// Client token shape and the scan that keeps tokens from leaving the host.
#include "core/client_token.hpp"

#include <string>

#include "core/text.hpp"

namespace keyway::core {

namespace {

bool isBase64UrlChar(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

// "kw_" followed by at least kClientTokenBodyChars base64url characters, anywhere in `text`.
bool scanRaw(std::string_view text) {
  size_t pos = 0;
  while ((pos = text.find(kClientTokenPrefix, pos)) != std::string_view::npos) {
    const size_t body = pos + kClientTokenPrefix.size();
    size_t n = 0;
    while (body + n < text.size() && n < kClientTokenBodyChars && isBase64UrlChar(text[body + n])) ++n;
    if (n == kClientTokenBodyChars) return true;
    pos = body;
  }
  return false;
}

// Standard or URL-safe base64, padding optional; stops at the first character outside both
// alphabets (a lenient decoder, as the servers that read Basic credentials are).
std::string base64Decoded(std::string_view text) {
  std::string out;
  out.reserve(text.size() / 4 * 3 + 3);
  unsigned acc = 0;
  int bits = 0;
  for (char c : text) {
    const int v = base64Value(c);
    if (v < 0) break;
    acc = (acc << 6) | static_cast<unsigned>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xFFu));
    }
  }
  return out;
}

}  // namespace

bool isWellFormedClientToken(std::string_view token) {
  if (token.size() != kClientTokenLength) return false;
  if (token.substr(0, kClientTokenPrefix.size()) != kClientTokenPrefix) return false;
  for (char c : token.substr(kClientTokenPrefix.size())) {
    if (!isBase64UrlChar(c)) return false;
  }
  return true;
}

bool carriesClientToken(std::string_view text) {
  if (scanRaw(text)) return true;
  if (text.find('%') != std::string_view::npos && scanRaw(percentDecodeOnce(text))) return true;
  // Authorization: Basic base64(user ":" password), with the token as either part.
  const std::string_view v = trimOws(text);
  constexpr std::string_view kBasic = "Basic ";
  if (v.size() > kBasic.size() && iequals(v.substr(0, kBasic.size()), kBasic)) {
    const std::string decoded = base64Decoded(trimOws(v.substr(kBasic.size())));
    if (scanRaw(decoded)) return true;
    if (decoded.find('%') != std::string::npos && scanRaw(percentDecodeOnce(decoded))) return true;
  }
  return false;
}

}  // namespace keyway::core
