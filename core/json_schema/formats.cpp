// The "format" checks: RFC 3339 dates and times, durations, emails, UUIDs, URIs, hostnames, IPs, base64, ...
#include "core/json_schema/formats.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>
#include <climits>
#include <cstring>
#include <string>

#include "core/json_schema/regex.hpp"
#include "core/json_schema/uri.hpp"
#include "core/json_schema/values.hpp"

namespace keyway::core::json_schema {

namespace {

constexpr FormatInfo kFormats[] = {
    {"date-time", Format::kDateTime, "must be a valid date-time (RFC 3339, e.g. 2024-01-31T12:00:00Z)"},
    {"date", Format::kDate, "must be a valid date (YYYY-MM-DD)"},
    {"time", Format::kTime, "must be a valid time (HH:MM[:SS[.fff]][Z|+HH:MM])"},
    {"duration", Format::kDuration, "must be a valid ISO 8601 duration (e.g. P1DT2H)"},
    {"email", Format::kEmail, "must be a valid email address"},
    {"idn-email", Format::kEmail, "must be a valid email address"},
    {"uuid", Format::kUuid, "must be a valid UUID"},
    {"uuid1", Format::kUuid, "must be a valid UUID"},
    {"uuid3", Format::kUuid, "must be a valid UUID"},
    {"uuid4", Format::kUuid, "must be a valid UUID"},
    {"uuid5", Format::kUuid, "must be a valid UUID"},
    {"uri", Format::kUri, "must be a valid absolute URI"},
    {"uri-reference", Format::kUriReference, "must be a valid URI reference"},
    {"hostname", Format::kHostname, "must be a valid hostname"},
    {"ipv4", Format::kIpv4, "must be a valid IPv4 address"},
    {"ipv6", Format::kIpv6, "must be a valid IPv6 address"},
    {"ipvanyaddress", Format::kIpAny, "must be a valid IP address"},
    {"ipvanyinterface", Format::kIpInterface, "must be a valid IP interface (address[/prefix])"},
    {"ipvanynetwork", Format::kIpInterface, "must be a valid IP network (address[/prefix])"},
    {"ipv4interface", Format::kIpInterface, "must be a valid IP interface (address[/prefix])"},
    {"ipv6interface", Format::kIpInterface, "must be a valid IP interface (address[/prefix])"},
    {"ipv4network", Format::kIpInterface, "must be a valid IP network (address[/prefix])"},
    {"ipv6network", Format::kIpInterface, "must be a valid IP network (address[/prefix])"},
    {"regex", Format::kRegex, "must be a valid regular expression"},
    // A file field: in a JSON body the file travels as a string (multipart bodies are not JSON).
    {"binary", Format::kBinary, ""},
    // OpenAPI/pydantic SecretStr: a UI hint with no constraint on the value.
    {"password", Format::kPassword, ""},
    {"byte", Format::kBase64, "must be valid base64"},
    {"base64", Format::kBase64, "must be valid base64"},
    {"base64url", Format::kBase64Url, "must be valid base64url"},
    {"json-string", Format::kJsonString, "must be a string holding valid JSON"},
    {"json-pointer", Format::kJsonPointer, "must be a valid JSON pointer (RFC 6901)"},
    {"int32", Format::kInt32, "must be a 32-bit integer"},
    {"int64", Format::kInt64, "must be a 64-bit integer"},
    {"float", Format::kFloat, ""},
    {"double", Format::kFloat, ""},
};

bool digitsAt(std::string_view s, std::size_t i, std::size_t n, int* value) {
  if (i + n > s.size()) return false;
  int v = 0;
  for (std::size_t k = 0; k < n; ++k) {
    const char c = s[i + k];
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  *value = v;
  return true;
}

bool checkDate(std::string_view s) {
  int y = 0;
  int m = 0;
  int d = 0;
  if (s.size() != 10 || s[4] != '-' || s[7] != '-') return false;
  if (!digitsAt(s, 0, 4, &y) || !digitsAt(s, 5, 2, &m) || !digitsAt(s, 8, 2, &d)) return false;
  if (m < 1 || m > 12 || d < 1) return false;
  static const int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  const bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  const int max_day = (m == 2 && leap) ? 29 : kDays[m - 1];
  return d <= max_day;
}

// HH:MM[:SS[.frac]][Z|z|(+|-)HH[:]MM], as RFC 3339 with the seconds and offset optional: pydantic,
// which validates on the upstream side, accepts naive times ("2025-07-31T20:20:01.970582").
bool checkTime(std::string_view s) {
  int h = 0;
  int mi = 0;
  int sec = 0;
  if (!digitsAt(s, 0, 2, &h) || s.size() < 5 || s[2] != ':' || !digitsAt(s, 3, 2, &mi)) return false;
  if (h > 23 || mi > 59) return false;
  std::size_t i = 5;
  if (i < s.size() && s[i] == ':') {
    if (!digitsAt(s, i + 1, 2, &sec) || sec > 60) return false;  // 60: leap second
    i += 3;
    if (i < s.size() && (s[i] == '.' || s[i] == ',')) {
      const std::size_t start = ++i;
      while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i;
      if (i == start) return false;
    }
  }
  if (i == s.size()) return true;
  if ((s[i] == 'Z' || s[i] == 'z') && i + 1 == s.size()) return true;
  if (s[i] != '+' && s[i] != '-') return false;
  int oh = 0;
  int om = 0;
  if (!digitsAt(s, i + 1, 2, &oh)) return false;
  std::size_t k = i + 3;
  if (k < s.size() && s[k] == ':') ++k;
  if (!digitsAt(s, k, 2, &om) || k + 2 != s.size()) return false;
  return oh <= 23 && om <= 59;
}

bool checkDateTime(std::string_view s) {
  if (s.size() < 16) return false;
  if (s[10] != 'T' && s[10] != 't' && s[10] != ' ') return false;
  return checkDate(s.substr(0, 10)) && checkTime(s.substr(11));
}

bool checkDuration(std::string_view s) {
  std::size_t i = 0;
  if (i < s.size() && s[i] == '-') ++i;
  if (i >= s.size() || s[i] != 'P') return false;
  ++i;
  bool any = false;
  bool in_time = false;
  bool time_any = false;
  const char* date_units = "YMWD";
  const char* time_units = "HMS";
  std::size_t unit_pos = 0;
  while (i < s.size()) {
    if (s[i] == 'T') {
      if (in_time) return false;
      in_time = true;
      unit_pos = 0;
      ++i;
      continue;
    }
    const std::size_t start = i;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i;
    if (i == start) return false;
    if (i < s.size() && (s[i] == '.' || s[i] == ',')) {
      const std::size_t frac = ++i;
      while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i;
      if (i == frac) return false;
    }
    if (i >= s.size()) return false;
    const char* units = in_time ? time_units : date_units;
    const char* found = std::strchr(units + unit_pos, s[i]);
    if (found == nullptr || s[i] == '\0') return false;
    unit_pos = static_cast<std::size_t>(found - units) + 1;
    any = true;
    if (in_time) time_any = true;
    ++i;
  }
  return any && (!in_time || time_any);
}

// Every dot-separated label of `name` has 1 to 63 letters, digits and inner hyphens; with
// `international`, non-ASCII bytes count as letters (internationalised email domains).
bool labelsOk(std::string_view name, bool international) {
  std::size_t i = 0;
  while (true) {
    const std::size_t e = std::min(name.find('.', i), name.size());
    const std::string_view label = name.substr(i, e - i);
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') return false;
    for (char c : label) {
      const auto u = static_cast<unsigned char>(c);
      if (international && u >= 0x80) continue;
      if (!std::isalnum(u) && c != '-') return false;
    }
    if (e == name.size()) return true;
    i = e + 1;
  }
}

bool checkHostname(std::string_view s) {
  if (s.empty() || s.size() > 253) return false;
  return labelsOk(s, false);
}

bool checkEmail(std::string_view s) {
  const std::size_t at = s.rfind('@');
  if (at == std::string_view::npos || at == 0 || at + 1 >= s.size() || at > 64) return false;
  const std::string_view local = s.substr(0, at);
  const std::string_view domain = s.substr(at + 1);
  if (local.front() == '.' || local.back() == '.' || local.find("..") != std::string_view::npos) return false;
  for (char c : local) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u == 0x7f || std::strchr("\"(),:;<>@[\\]", c) != nullptr) return false;
  }
  if (domain.find('.') == std::string_view::npos) return false;
  return labelsOk(domain, true);
}

bool checkUuid(std::string_view s) {
  if (s.size() == 32) {
    return std::all_of(s.begin(), s.end(), [](char c) { return hexValue(c) >= 0; });
  }
  if (s.size() != 36) return false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (s[i] != '-') return false;
    } else if (hexValue(s[i]) < 0) {
      return false;
    }
  }
  return true;
}

bool uriCharsOk(std::string_view s) {
  for (std::size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c == '%') {
      if (i + 2 >= s.size() || hexValue(s[i + 1]) < 0 || hexValue(s[i + 2]) < 0) {
        return false;
      }
      i += 2;
      continue;
    }
    if (std::isalnum(c) || std::strchr("-._~:/?#[]@!$&'()*+,;=", c) != nullptr) {
      if (c == '\0') return false;
      continue;
    }
    return false;
  }
  return true;
}

bool checkUri(std::string_view s, bool require_scheme) {
  if (!uriCharsOk(s)) return false;
  const UriParts p = parseUri(s);
  if (require_scheme && p.scheme.empty()) return false;
  // A '#' inside the fragment or '[' outside an authority is not a URI.
  if (p.fragment.find('#') != std::string::npos) return false;
  if (p.path.find_first_of("[]") != std::string::npos || p.query.find_first_of("[]") != std::string::npos) {
    return false;
  }
  return true;
}

bool checkIpv4(std::string_view s) {
  int parts = 0;
  std::size_t i = 0;
  while (true) {
    const std::size_t start = i;
    int value = 0;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9' && i - start < 3) {
      value = value * 10 + (s[i] - '0');
      ++i;
    }
    const std::size_t len = i - start;
    if (len == 0 || value > 255 || (len > 1 && s[start] == '0')) return false;
    ++parts;
    if (i == s.size()) break;
    if (s[i] != '.' || parts == 4) return false;
    ++i;
  }
  return parts == 4;
}

bool checkIpv6(std::string_view s) {
  if (s.empty() || s.size() > 45) return false;
  char buf[64];
  std::memcpy(buf, s.data(), s.size());
  buf[s.size()] = '\0';
  if (std::strlen(buf) != s.size()) return false;  // embedded NUL
  unsigned char out[16];
  return inet_pton(AF_INET6, buf, out) == 1;
}

bool checkIpInterface(std::string_view s) {
  const std::size_t slash = s.find('/');
  const std::string_view addr = s.substr(0, slash);
  const bool v4 = checkIpv4(addr);
  if (!v4 && !checkIpv6(addr)) return false;
  if (slash == std::string_view::npos) return true;
  const std::string_view prefix = s.substr(slash + 1);
  int value = 0;
  if (prefix.empty() || prefix.size() > 3 || !digitsAt(prefix, 0, prefix.size(), &value)) return false;
  return value <= (v4 ? 32 : 128);
}

bool checkBase64(std::string_view s, bool url) {
  std::size_t n = s.size();
  std::size_t pad = 0;
  while (n > 0 && s[n - 1] == '=' && pad < 2) {
    --n;
    ++pad;
  }
  if (!url && (s.size() % 4) != 0) return false;
  if (url && pad > 0 && (s.size() % 4) != 0) return false;
  for (std::size_t i = 0; i < n; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (std::isalnum(c)) continue;
    if (!url && (c == '+' || c == '/')) continue;
    if (url && (c == '-' || c == '_')) continue;
    return false;
  }
  return !(url && n % 4 == 1);
}

bool checkJsonPointer(std::string_view s) {
  if (!s.empty() && s[0] != '/') return false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '~' && (i + 1 >= s.size() || (s[i + 1] != '0' && s[i + 1] != '1'))) return false;
  }
  return true;
}

bool checkJsonString(std::string_view s) {
  rapidjson::Document doc;
  doc.Parse<rapidjson::kParseIterativeFlag>(s.data(), s.size());
  return !doc.HasParseError();
}

}  // namespace

const FormatInfo* findFormat(std::string_view name) {
  const FormatInfo* info = nullptr;
  for (const auto& f : kFormats) {
    if (name == f.name) info = &f;
  }
  return info;
}

bool checkStringFormat(Format f, std::string_view s) {
  switch (f) {
    case Format::kDateTime: return checkDateTime(s);
    case Format::kDate: return checkDate(s);
    case Format::kTime: return checkTime(s);
    case Format::kDuration: return checkDuration(s);
    case Format::kEmail: return checkEmail(s);
    case Format::kUuid: return checkUuid(s);
    case Format::kUri: return checkUri(s, true);
    case Format::kUriReference: return checkUri(s, false);
    case Format::kHostname: return checkHostname(s);
    case Format::kIpv4: return checkIpv4(s);
    case Format::kIpv6: return checkIpv6(s);
    case Format::kIpAny: return checkIpv4(s) || checkIpv6(s);
    case Format::kIpInterface: return checkIpInterface(s);
    case Format::kRegex: {
      std::string why;
      return compilePattern(s, 1 << 20, &why) != nullptr;
    }
    case Format::kBase64: return checkBase64(s, false);
    case Format::kBase64Url: return checkBase64(s, true);
    case Format::kJsonString: return checkJsonString(s);
    case Format::kJsonPointer: return checkJsonPointer(s);
    case Format::kNone:
    case Format::kBinary:
    case Format::kPassword:
    case Format::kInt32:
    case Format::kInt64:
    case Format::kFloat: return true;
  }
  return true;
}

bool checkNumberFormat(Format f, const Value& v) {
  if (f != Format::kInt32 && f != Format::kInt64) return true;
  if (!isIntegralNumber(v)) return false;
  const Num n = Num::of(v);
  if (f == Format::kInt64)
    return n.kind == Num::kInt ||
           (n.kind == Num::kDouble && n.d >= -9223372036854775808.0 && n.d < 9223372036854775808.0);
  if (n.kind == Num::kInt) return n.i >= INT32_MIN && n.i <= INT32_MAX;
  if (n.kind == Num::kDouble) return n.d >= INT32_MIN && n.d <= INT32_MAX;
  return false;
}

}  // namespace keyway::core::json_schema
