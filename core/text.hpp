// Small text helpers shared by every layer: the ASCII character classes of HTTP (RFC 9110 token,
// field value, OWS) and of numbers, trimming and comma lists, case-insensitive matching (with
// iequals of http_types.hpp), hex, percent-escapes and JSON Pointer tokens. One definition each,
// inline; nothing allocates except the functions that return a std::string.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "core/http_types.hpp"

namespace keyway::core {

// ---- character classes ----

namespace detail {
struct CharTable {
  bool v[256];
};
// tchar of RFC 9110 §5.6.2: "!#$%&'*+-.^_`|~" DIGIT ALPHA.
constexpr CharTable makeTokenTable() {
  CharTable t{};
  for (int c = '0'; c <= '9'; ++c) t.v[c] = true;
  for (int c = 'a'; c <= 'z'; ++c) t.v[c] = true;
  for (int c = 'A'; c <= 'Z'; ++c) t.v[c] = true;
  for (char c : std::string_view("!#$%&'*+-.^_`|~")) t.v[static_cast<unsigned char>(c)] = true;
  return t;
}
// field-vchar / SP / HTAB / obs-text of RFC 9110 §5.5: every byte except CTLs (0x00-0x1F but
// HTAB, and DEL). Rejecting CR, LF and NUL here is what stops header injection.
constexpr CharTable makeFieldValueTable() {
  CharTable t{};
  for (int c = 0x20; c < 256; ++c) t.v[c] = true;
  t.v[0x7F] = false;
  t.v[static_cast<unsigned char>('\t')] = true;
  return t;
}
inline constexpr CharTable kTokenTable = makeTokenTable();
inline constexpr CharTable kFieldValueTable = makeFieldValueTable();
}  // namespace detail

// True for a tchar (the characters of methods, header names and transfer codings).
inline bool isTokenChar(char c) { return detail::kTokenTable.v[static_cast<unsigned char>(c)]; }
// True for a non-empty string of tchars. Inline: every header name of both heads of a forwarded
// exchange goes through it.
inline bool isToken(std::string_view s) {
  if (s.empty()) return false;
  for (const char c : s) {
    if (!isTokenChar(c)) return false;
  }
  return true;
}
// True for a byte allowed inside a header field value (no CTL except HTAB, no DEL).
inline bool isFieldValueChar(char c) {
  return detail::kFieldValueTable.v[static_cast<unsigned char>(c)];
}
// Index of the first byte of s that isFieldValueChar refuses, or npos. Header lines are most
// of the bytes of both heads of a forwarded exchange, and each is checked: eight bytes per step
// (any byte below 0x20 or equal to 0x7F flags its word; HTAB flags too and is then settled by
// the exact per-byte check from that word on).
inline size_t findNonFieldValueChar(std::string_view s) {
  constexpr uint64_t kOnes = 0x0101010101010101ull;
  constexpr uint64_t kHighs = 0x8080808080808080ull;
  size_t i = 0;
  for (; i + 8 <= s.size(); i += 8) {
    uint64_t x;
    std::memcpy(&x, s.data() + i, 8);
    const uint64_t below_space = (x - kOnes * 0x20) & ~x & kHighs;  // some byte < 0x20
    const uint64_t d = x ^ (kOnes * 0x7F);
    const uint64_t del = (d - kOnes) & ~d & kHighs;  // some byte == 0x7F
    if ((below_space | del) != 0) break;
  }
  for (; i < s.size(); ++i) {
    if (!isFieldValueChar(s[i])) return i;
  }
  return std::string_view::npos;
}

// ASCII classes, the same in every locale (unlike std::isdigit and std::isalpha).
inline bool isDigit(char c) { return c >= '0' && c <= '9'; }
inline bool isAlpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

// True for a non-empty string of ASCII digits.
inline bool isDigits(std::string_view s) {
  if (s.empty()) return false;
  for (const char c : s) {
    if (!isDigit(c)) return false;
  }
  return true;
}

// Optional whitespace (RFC 9110 §5.6.3): SP and HTAB.
inline bool isOws(char c) { return c == ' ' || c == '\t'; }

// ---- whitespace and lists ----

// Optional whitespace removed from both ends.
inline std::string_view trimOws(std::string_view s) {
  while (!s.empty() && isOws(s.front())) s.remove_prefix(1);
  while (!s.empty() && isOws(s.back())) s.remove_suffix(1);
  return s;
}

// Calls fn(element) for each non-empty element of a comma-separated field value (RFC 9110
// §5.6.1: `#element` lists; empty elements are ignored), OWS-trimmed, as views into `value`, in
// order; stops as soon as fn returns true, and then returns true. No quoted-string handling:
// for lists of tokens (Connection, Transfer-Encoding).
template <typename Fn>
bool forEachListElement(std::string_view value, Fn&& fn) {
  size_t pos = 0;
  while (pos <= value.size()) {
    size_t comma = value.find(',', pos);
    if (comma == std::string_view::npos) comma = value.size();
    const std::string_view element = trimOws(value.substr(pos, comma - pos));
    pos = comma + 1;
    if (!element.empty() && fn(element)) return true;
  }
  return false;
}

// ---- case-insensitive matching (ASCII) ----

inline bool startsWithNoCase(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && iequals(s.substr(0, prefix.size()), prefix);
}

inline bool containsNoCase(std::string_view haystack, std::string_view needle) {
  if (needle.size() > haystack.size()) return false;
  for (size_t i = 0; i + needle.size() <= haystack.size(); ++i) {
    if (iequals(haystack.substr(i, needle.size()), needle)) return true;
  }
  return false;
}

// ---- hex and escapes ----

// The value of a hex digit, or -1.
inline int hexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Appends the two lower-case hex digits of `byte`: the HH of a "\xHH" or "\u00HH" escape.
// The value of a base64 digit, standard ('+', '/') or URL-safe ('-', '_') alphabet; -1 otherwise.
inline int base64Value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+' || c == '-') return 62;
  if (c == '/' || c == '_') return 63;
  return -1;
}

inline void appendHexByte(std::string& out, unsigned char byte) {
  constexpr char kHex[] = "0123456789abcdef";
  out.push_back(kHex[byte >> 4]);
  out.push_back(kHex[byte & 0xF]);
}

// `s` with every control byte (below 0x20, and DEL) written as "\xHH": text from a file or an
// upstream, shown on one line of a message or a terminal, cannot break the line or drive the
// terminal. Other bytes, UTF-8 included, are kept.
inline std::string escapeControlBytes(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) {
      out += "\\x";
      appendHexByte(out, u);
    } else {
      out += c;
    }
  }
  return out;
}

namespace detail {
inline std::string percentDecode(std::string_view s, bool plus_is_space) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size()) {
      const int hi = hexValue(s[i + 1]);
      const int lo = hexValue(s[i + 2]);
      if (hi >= 0 && lo >= 0) {
        out.push_back(static_cast<char>(hi * 16 + lo));
        i += 2;
        continue;
      }
    }
    out.push_back(plus_is_space && s[i] == '+' ? ' ' : s[i]);
  }
  return out;
}
}  // namespace detail

// One round of %XX decoding (RFC 3986), as a URL decoder does it; a malformed escape stays as it
// is. The result is not decoded again: "%2541" gives "%41".
inline std::string percentDecodeOnce(std::string_view s) { return detail::percentDecode(s, false); }

// A name or value of an application/x-www-form-urlencoded query: percentDecodeOnce, and a '+' is
// a space (an escaped "%2B" stays a '+').
inline std::string formDecode(std::string_view s) { return detail::percentDecode(s, true); }

// ---- JSON Pointer (RFC 6901) ----

// Appends "/" and `token` with '~' as "~0" and '/' as "~1" (RFC 6901 §3): `out`, a JSON
// Pointer, then points one level down, at the member or index `token`.
inline void appendPointerToken(std::string* out, std::string_view token) {
  out->push_back('/');
  for (char c : token) {
    if (c == '~') {
      out->append("~0");
    } else if (c == '/') {
      out->append("~1");
    } else {
      out->push_back(c);
    }
  }
}

}  // namespace keyway::core
