// Pure parsers and checks for configuration values; see config_parse.hpp for the contracts.
#include "core/config_parse.hpp"

#include <arpa/inet.h>

#include <array>
#include <set>

#include "core/http_types.hpp"
#include "core/text.hpp"

namespace keyway::core {

namespace {

Error bad(std::string message) { return Error::make(ErrorCode::kBadRequest, std::move(message)); }

bool isLowerAlnum(char c) { return isDigit(c) || (c >= 'a' && c <= 'z'); }

// Leading decimal digits of `text` as a number; nullopt on no digits or above `max`.
// `consumed` receives how many characters were digits.
std::optional<uint64_t> leadingNumber(std::string_view text, uint64_t max, size_t& consumed) {
  consumed = 0;
  uint64_t value = 0;
  while (consumed < text.size() && isDigit(text[consumed])) {
    const uint64_t digit = static_cast<uint64_t>(text[consumed] - '0');
    // Checked before multiplying, so a 30-digit input cannot wrap around.
    if (value > (max - digit) / 10) return std::nullopt;
    value = value * 10 + digit;
    ++consumed;
  }
  if (consumed == 0) return std::nullopt;
  return value;
}

// DNS name (or a dotted IPv4 literal checked separately): labels of letters, digits, '-' (and
// '_' when `allow_underscore`, which real internal hostnames use), 1..63 each, 253 in all.
bool isHostName(std::string_view host, bool allow_underscore) {
  if (host.empty() || host.size() > 253) return false;
  size_t label_len = 0;
  char prev = '.';
  for (char c : host) {
    if (c == '.') {
      if (label_len == 0 || prev == '-') return false;
      label_len = 0;
    } else if (isAlpha(c) || isDigit(c) || c == '-' || (allow_underscore && c == '_')) {
      if (label_len == 0 && c == '-') return false;
      if (++label_len > 63) return false;
    } else {
      return false;
    }
    prev = c;
  }
  return label_len > 0 && prev != '-';
}

bool isIpv4(std::string_view host) {
  if (host.size() > 15) return false;
  std::string copy(host);
  in_addr addr{};
  return inet_pton(AF_INET, copy.c_str(), &addr) == 1;
}

bool isIpv6(std::string_view host) {
  if (host.size() > 45) return false;
  std::string copy(host);
  in6_addr addr{};
  return inet_pton(AF_INET6, copy.c_str(), &addr) == 1;
}

// A host that is a name, or an IPv4 literal. A name whose last label is all digits must be a
// valid IPv4 literal: "999.1.1.1" is a typo, not a hostname.
Status checkNameOrIpv4(std::string_view host, bool allow_underscore) {
  if (!isHostName(host, allow_underscore)) {
    return bad("expected a host name, an IPv4 address or a bracketed IPv6 address");
  }
  const size_t dot = host.rfind('.');
  const std::string_view last = dot == std::string_view::npos ? host : host.substr(dot + 1);
  bool all_digits = true;
  for (char c : last) all_digits = all_digits && isDigit(c);
  if (all_digits && !isIpv4(host)) return bad("not a valid IPv4 address");
  return okStatus();
}

std::optional<uint16_t> parsePort(std::string_view text, uint64_t min) {
  if (text.empty() || text.size() > 5) return std::nullopt;
  size_t consumed = 0;
  auto value = leadingNumber(text, 65535, consumed);
  if (!value || consumed != text.size() || *value < min) return std::nullopt;
  return static_cast<uint16_t>(*value);
}

bool isWildcard(const std::string& host) { return host == "0.0.0.0" || host == "::"; }

// RFC 3986 path characters: unreserved / sub-delims / ':' / '@' / '/' ('%' is checked apart).
bool isPathChar(char c) {
  return isAlpha(c) || isDigit(c) ||
         std::string_view("-._~!$&'()*+,;=:@/").find(c) != std::string_view::npos;
}

bool isDotSegment(std::string_view segment) {
  // Percent-encoded dots count too: "%2e%2E" is ".." to most servers.
  std::string decoded;
  for (size_t i = 0; i < segment.size(); ++i) {
    if (segment[i] == '%' && i + 2 < segment.size() && segment[i + 1] == '2' &&
        (segment[i + 2] == 'e' || segment[i + 2] == 'E')) {
      decoded += '.';
      i += 2;
    } else {
      decoded += segment[i];
    }
  }
  return decoded == "." || decoded == "..";
}

}  // namespace

Result<std::chrono::milliseconds> parseDuration(std::string_view text) {
  static const char* const kAccepted =
      "expected a duration: an integer with a unit ms, s, m or h, e.g. \"500ms\", \"10s\", \"5m\"";
  // 1000 days in ms: large enough for any timeout, small enough never to overflow a clock.
  constexpr uint64_t kMaxMs = uint64_t{1000} * 24 * 3600 * 1000;
  size_t consumed = 0;
  auto number = leadingNumber(text, kMaxMs, consumed);
  if (!number) {
    if (!text.empty() && isDigit(text[0])) return bad("duration is too large (at most 1000 days)");
    return bad(kAccepted);
  }
  const std::string_view unit = text.substr(consumed);
  uint64_t factor = 0;
  if (unit == "ms") {
    factor = 1;
  } else if (unit == "s") {
    factor = 1000;
  } else if (unit == "m") {
    factor = 60 * 1000;
  } else if (unit == "h") {
    factor = 3600 * 1000;
  } else {
    return bad(kAccepted);
  }
  if (*number > kMaxMs / factor) return bad("duration is too large (at most 1000 days)");
  return std::chrono::milliseconds(static_cast<int64_t>(*number * factor));
}

Result<uint64_t> parseSize(std::string_view text) {
  static const char* const kAccepted =
      "expected a size: bytes as an integer, or an integer with a unit B, KiB, MiB or GiB, "
      "e.g. 65536, \"64KiB\", \"32MiB\"";
  constexpr uint64_t kMax = uint64_t{1} << 40;
  size_t consumed = 0;
  auto number = leadingNumber(text, kMax, consumed);
  if (!number) {
    if (!text.empty() && isDigit(text[0])) return bad("size is too large (at most 1 TiB)");
    return bad(kAccepted);
  }
  const std::string_view unit = text.substr(consumed);
  int shift = -1;
  if (unit.empty() || unit == "B") {
    shift = 0;
  } else if (unit == "KiB") {
    shift = 10;
  } else if (unit == "MiB") {
    shift = 20;
  } else if (unit == "GiB") {
    shift = 30;
  } else {
    return bad(kAccepted);
  }
  if (*number > (kMax >> shift)) return bad("size is too large (at most 1 TiB)");
  return *number << shift;
}

Result<uint64_t> parseCount(std::string_view text) {
  constexpr uint64_t kMax = 1000000000000000ull;
  size_t consumed = 0;
  auto number = leadingNumber(text, kMax, consumed);
  if (!number) {
    if (!text.empty() && isDigit(text[0])) return bad("number is too large");
    return bad("expected a non-negative integer");
  }
  if (consumed != text.size()) return bad("expected a non-negative integer");
  return *number;
}

Result<bool> parseBool(std::string_view text) {
  if (text == "true" || text == "True" || text == "TRUE") return true;
  if (text == "false" || text == "False" || text == "FALSE") return false;
  return bad("expected true or false");
}

Result<ListenAddress> parseListenAddress(std::string_view text) {
  static const char* const kAccepted =
      "expected host:port, e.g. 127.0.0.1:8750, localhost:8750 or [::1]:8750 (port 0..65535)";
  if (text.empty() || text.size() > 300) return bad(kAccepted);
  ListenAddress out;
  std::string_view port_text;
  if (text.front() == '[') {
    const size_t close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return bad(kAccepted);
    }
    const std::string_view host = text.substr(1, close - 1);
    if (!isIpv6(host)) return bad("not a valid IPv6 address inside the brackets");
    out.host = std::string(host);
    port_text = text.substr(close + 2);
  } else {
    const size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) return bad(kAccepted);
    const std::string_view host = text.substr(0, colon);
    if (host.find(':') != std::string_view::npos) {
      return bad("an IPv6 address needs brackets, e.g. [::1]:8750");
    }
    if (host.empty()) return bad("host is missing (use 0.0.0.0 for every interface)");
    auto host_ok = checkNameOrIpv4(host, /*allow_underscore=*/false);
    if (!host_ok) return host_ok.takeError();
    out.host = std::string(host);
    port_text = text.substr(colon + 1);
  }
  auto port = parsePort(port_text, 0);
  if (!port) return bad("port must be an integer 0..65535");
  out.port = *port;
  return out;
}

Result<std::string> normaliseBaseUrl(std::string_view text) {
  static const char* const kAccepted =
      "expected an http:// or https:// URL with a host, an optional port and an optional path "
      "prefix, e.g. https://api.bundleup.io";
  if (text.size() > 2048) return bad("URL is too long (at most 2048 bytes)");
  std::string scheme;
  const size_t sep = text.find("://");
  if (sep == std::string_view::npos) return bad(kAccepted);
  for (char c : text.substr(0, sep)) scheme += static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c);
  if (scheme != "http" && scheme != "https") return bad(kAccepted);
  const std::string_view rest = text.substr(sep + 3);
  if (rest.find('?') != std::string_view::npos || rest.find('#') != std::string_view::npos) {
    return bad("a query or a fragment is not allowed: give only scheme, host, port and path");
  }
  const size_t path_start = rest.find('/');
  const std::string_view authority = rest.substr(0, path_start);
  std::string_view path =
      path_start == std::string_view::npos ? std::string_view{} : rest.substr(path_start);
  if (authority.find('@') != std::string_view::npos) {
    return bad("credentials in the URL (user@host) are not allowed: keyway injects them");
  }
  if (authority.empty()) return bad("host is missing; " + std::string(kAccepted));

  std::string_view port_text;
  bool has_port = false;
  if (authority.front() == '[') {
    const size_t close = authority.find(']');
    if (close == std::string_view::npos) return bad("unterminated '[' in the host");
    const std::string_view host = authority.substr(1, close - 1);
    if (!isIpv6(host)) return bad("not a valid IPv6 address inside the brackets");
    const std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return bad(kAccepted);
      has_port = true;
      port_text = after.substr(1);
    }
  } else {
    const size_t colon = authority.find(':');
    const std::string_view host = authority.substr(0, colon);
    if (host.empty()) return bad("host is missing; " + std::string(kAccepted));
    auto host_ok = checkNameOrIpv4(host, /*allow_underscore=*/true);
    if (!host_ok) return host_ok.takeError();
    if (colon != std::string_view::npos) {
      has_port = true;
      port_text = authority.substr(colon + 1);
    }
  }
  if (has_port && !parsePort(port_text, 1)) return bad("port must be an integer 1..65535");

  // Path prefix: RFC 3986 path characters and %XX escapes only, no dot segments (they would
  // let the prefix escape itself once joined with the request path).
  for (size_t i = 0; i < path.size(); ++i) {
    const char c = path[i];
    if (c == '%') {
      if (i + 2 >= path.size() || hexValue(path[i + 1]) < 0 || hexValue(path[i + 2]) < 0) {
        return bad("bad percent-escape in the path (expected %XX with two hex digits)");
      }
      i += 2;
    } else if (!isPathChar(c)) {
      return bad(
          "the path holds a character that must be percent-encoded (space, control, "
          "non-ASCII, '\\', '\"', '<', '>', '^', '`', '{', '|', '}')");
    }
  }
  size_t seg_start = 0;
  while (seg_start < path.size()) {
    size_t seg_end = path.find('/', seg_start + 1);
    if (seg_end == std::string_view::npos) seg_end = path.size();
    if (isDotSegment(path.substr(seg_start + 1, seg_end - seg_start - 1))) {
      return bad("'.' and '..' path segments are not allowed");
    }
    seg_start = seg_end;
  }
  while (!path.empty() && path.back() == '/') path.remove_suffix(1);

  return scheme + "://" + std::string(authority) + std::string(path);
}

Status checkUpstreamName(std::string_view name) {
  if (name == "_keyway") return bad("\"_keyway\" is reserved for keyway's own endpoints");
  bool ok = !name.empty() && name.size() <= 63 && isLowerAlnum(name[0]);
  for (size_t i = 1; ok && i < name.size(); ++i) {
    const char c = name[i];
    ok = isLowerAlnum(c) || c == '.' || c == '_' || c == '-';
  }
  if (!ok) {
    return bad(
        "upstream names are 1..63 characters: lower-case letters, digits, '.', '_', '-', "
        "starting with a letter or digit");
  }
  return okStatus();
}

Status checkCredentialHeader(std::string_view name) {
  if (name.size() > 256 || !isToken(name)) {
    return bad("expected a header name (letters, digits and !#$%&'*+-.^_`|~), e.g. X-API-Key");
  }
  static const std::array<std::string_view, 12> kManaged = {"Host",
                                                            "Content-Length",
                                                            "Transfer-Encoding",
                                                            "Connection",
                                                            "Keep-Alive",
                                                            "Upgrade",
                                                            "TE",
                                                            "Trailer",
                                                            "Proxy-Connection",
                                                            "Proxy-Authorization",
                                                            "Expect",
                                                            "Content-Type"};
  for (std::string_view managed : kManaged) {
    if (iequals(name, managed)) {
      return bad("this header is managed by HTTP itself and cannot carry a credential");
    }
  }
  if (name.size() >= 9 && iequals(name.substr(0, 9), "X-Keyway-")) {
    return bad("X-Keyway-* headers are keyway's own and cannot carry a credential");
  }
  return okStatus();
}

Status checkHeaderValuePrefix(std::string_view prefix) {
  if (prefix.size() > 256) return bad("prefix is too long (at most 256 bytes)");
  for (char c : prefix) {
    const auto u = static_cast<unsigned char>(c);
    if (!(u == '\t' || (u >= 0x20 && u < 0x7f))) {
      return bad("the prefix may hold only printable ASCII, spaces and tabs");
    }
  }
  return okStatus();
}

Status checkSecretName(std::string_view name) {
  bool ok = !name.empty() && name.size() <= 128 && (isAlpha(name[0]) || isDigit(name[0]));
  for (size_t i = 1; ok && i < name.size(); ++i) {
    const char c = name[i];
    ok = isAlpha(c) || isDigit(c) || c == '.' || c == '_' || c == '-';
  }
  if (!ok) {
    return bad(
        "expected a secret name (1..128 of letters, digits, '.', '_', '-', starting with a "
        "letter or digit), e.g. bundleup.api_key");
  }
  return okStatus();
}

Result<Protocol> parseProtocol(std::string_view text) {
  if (text == "bundleup") return Protocol::kBundleUp;
  if (text == "bosa") return Protocol::kBosa;
  if (text == "bundleiq") return Protocol::kBundleIq;
  if (text == "generic") return Protocol::kGeneric;
  return bad("expected one of bundleup, bosa, bundleiq, generic");
}

Status checkLogLevel(std::string_view level) {
  if (level == "debug" || level == "info" || level == "warn" || level == "error") return okStatus();
  return bad("expected one of debug, info, warn, error");
}

Status checkLogAudit(std::string_view audit) {
  if (audit == "summary" || audit == "every") return okStatus();
  return bad("expected one of summary, every");
}

Status checkPath(std::string_view path) {
  if (path.empty()) return bad("path is empty");
  if (path.size() > 4096) return bad("path is too long (at most 4096 bytes)");
  for (char c : path) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) return bad("path holds a control character");
  }
  return okStatus();
}

Status checkUpstreamTls(const UpstreamTls& tls, std::string_view base_url, std::string* key) {
  auto fail = [key](const char* part, std::string what) {
    if (key != nullptr) *key = part;
    return Status(bad(std::move(what)));
  };
  if (base_url.substr(0, 8) != "https://") {
    return fail("tls", "applies only to an https:// base_url (this one is http://, which keyway sends in "
                       "plain text); remove tls or use https://");
  }
  const std::pair<const char*, const std::string*> paths[] = {
      {"tls.ca_file", &tls.ca_file}, {"tls.client_cert", &tls.client_cert}, {"tls.client_key", &tls.client_key}};
  for (const auto& [part, path] : paths) {
    if (path->empty()) continue;
    if (auto s = checkPath(*path); !s) return fail(part, s.error().message);
  }
  if (!tls.client_cert.empty() && tls.client_key.empty()) {
    return fail("tls.client_key",
                "required with client_cert: the PEM file of that certificate's private key (it may be "
                "the client_cert file itself when that holds both)");
  }
  if (tls.client_cert.empty() && !tls.client_key.empty()) {
    return fail("tls.client_cert", "required with client_key: the PEM file of the client certificate");
  }
  return okStatus();
}

bool listenAddressesConflict(const ListenAddress& a, const ListenAddress& b) {
  if (a.empty() || b.empty() || a.port == 0 || b.port == 0 || a.port != b.port) return false;
  return iequals(a.host, b.host) || isWildcard(a.host) || isWildcard(b.host);
}

std::string resolveStateDir(std::string_view configured, const EnvLookup& env) {
  if (!configured.empty()) return std::string(configured);
  if (env) {
    if (auto value = env("STATE_DIRECTORY"); value && !value->empty()) {
      // systemd lists one path per StateDirectory= entry, colon-separated; ours is the first.
      std::string first = value->substr(0, value->find(':'));
      if (!first.empty()) return first;
    }
  }
  return "./keyway-state";
}

std::string resolveMasterKeyFile(std::string_view configured, std::string_view state_dir,
                                 const EnvLookup& env) {
  if (!configured.empty()) return std::string(configured);
  auto join = [](std::string dir) {
    if (dir.empty() || dir.back() != '/') dir += '/';
    return dir + "master.key";
  };
  if (env) {
    if (auto value = env("CREDENTIALS_DIRECTORY"); value && !value->empty()) return join(*value);
  }
  return join(std::string(state_dir));
}

Status validateConfig(const Config& config) {
  namespace L = config_limits;
  auto fail = [](const std::string& key, const std::string& what) {
    return Status(bad(key + ": " + what));
  };
  if (config.listen.empty()) return fail("listen", "required");
  if (auto s = checkPath(config.state_dir); !s) return fail("state_dir", s.error().message);
  if (auto s = checkPath(config.master_key_file); !s) {
    return fail("master_key_file", s.error().message);
  }
  if (config.server.threads < L::kMinThreads || config.server.threads > L::kMaxThreads) {
    return fail("server.threads", "must be 1..64");
  }
  if (config.server.shutdown_grace.count() < 0 ||
      config.server.shutdown_grace > L::kMaxShutdownGrace) {
    return fail("server.shutdown_grace", "must be 0s..1h");
  }
  const auto& lim = config.limits;
  if (lim.max_body_bytes == 0 || lim.max_body_bytes > L::kMaxBodyBytes) {
    return fail("limits.max_body_bytes", "must be 1 byte..4GiB");
  }
  if (lim.max_header_bytes < L::kMinHeaderBytes || lim.max_header_bytes > L::kMaxHeaderBytes) {
    return fail("limits.max_header_bytes", "must be 1KiB..1MiB");
  }
  if (lim.max_headers == 0 || lim.max_headers > L::kMaxHeaders) {
    return fail("limits.max_headers", "must be 1..10000");
  }
  if (lim.max_connections == 0 || lim.max_connections > L::kMaxConnections) {
    return fail("limits.max_connections", "must be 1..1000000");
  }
  const std::pair<const char*, std::chrono::milliseconds> timeouts[] = {
      {"limits.header_timeout", lim.header_timeout},
      {"limits.body_timeout", lim.body_timeout},
      {"limits.idle_timeout", lim.idle_timeout}};
  for (const auto& [key, value] : timeouts) {
    if (value.count() <= 0 || value > L::kMaxTimeout) {
      return fail(key, "must be above 0s, at most 24h");
    }
  }
  if (auto s = checkLogLevel(config.log.level); !s) return fail("log.level", s.error().message);
  if (auto s = checkLogAudit(config.log.audit); !s) return fail("log.audit", s.error().message);
  if (config.upstreams.empty()) return fail("upstreams", "at least one upstream is required");

  std::set<std::string> names;
  std::vector<std::pair<std::string, ListenAddress>> listeners = {{"listen", config.listen}};
  for (const auto& up : config.upstreams) {
    const std::string key = "upstreams." + up.name;
    if (auto s = checkUpstreamName(up.name); !s) return fail(key, s.error().message);
    if (!names.insert(up.name).second) return fail(key, "duplicate upstream name");
    auto url = normaliseBaseUrl(up.base_url);
    if (!url) return fail(key + ".base_url", url.error().message);
    if (*url != up.base_url)
      return fail(key + ".base_url", "not normalised (see normaliseBaseUrl)");
    if (!up.credential.secret.empty()) {
      if (auto s = checkCredentialHeader(up.credential.header); !s) {
        return fail(key + ".credential.header", s.error().message);
      }
      if (auto s = checkSecretName(up.credential.secret); !s) {
        return fail(key + ".credential.secret", s.error().message);
      }
    }
    if (auto s = checkHeaderValuePrefix(up.credential.prefix); !s) {
      return fail(key + ".credential.prefix", s.error().message);
    }
    if (up.connect_timeout.count() <= 0 || up.connect_timeout > L::kMaxConnectTimeout) {
      return fail(key + ".connect_timeout", "must be above 0s, at most 10m");
    }
    if (up.timeout.count() <= 0 || up.timeout > L::kMaxTimeout) {
      return fail(key + ".timeout", "must be above 0s, at most 24h");
    }
    if (up.max_response_bytes == 0 || up.max_response_bytes > L::kMaxResponseBytes) {
      return fail(key + ".max_response_bytes", "must be 1 byte..4GiB");
    }
    if (up.max_connections < config.server.threads || up.max_connections > L::kMaxUpstreamConnections) {
      return fail(key + ".max_connections", "must be at least server.threads (" + std::to_string(config.server.threads) +
                                                ": each reactor thread keeps one) and at most 65536");
    }
    if (up.tls) {
      std::string part;
      if (auto s = checkUpstreamTls(*up.tls, up.base_url, &part); !s) {
        return fail(key + "." + part, s.error().message);
      }
    }
    if (!up.compat_listen.empty()) listeners.emplace_back(key + ".compat_listen", up.compat_listen);
  }
  for (size_t i = 0; i < listeners.size(); ++i) {
    for (size_t j = 0; j < i; ++j) {
      if (listenAddressesConflict(listeners[i].second, listeners[j].second)) {
        return fail(listeners[i].first,
                    listeners[i].second.toString() + " is already used by " + listeners[j].first);
      }
    }
  }
  return okStatus();
}

namespace {

bool isLoopbackHost(std::string_view host) { return host == "localhost" || isLoopbackAddress(host); }

// The host of a normalised base URL: after "scheme://", up to the port or path.
std::string_view urlHost(std::string_view url) {
  const size_t scheme = url.find("://");
  if (scheme == std::string_view::npos) return {};
  std::string_view rest = url.substr(scheme + 3);
  rest = rest.substr(0, rest.find('/'));
  if (!rest.empty() && rest.front() == '[') return rest.substr(0, rest.find(']') + 1);
  return rest.substr(0, rest.find(':'));
}

std::string exposedListener(const std::string& what, const ListenAddress& address) {
  return what + " " + address.toString() +
         " is not a loopback address: any host that can reach it can use keyway's credentials "
         "with a client token (keyway has no TLS of its own); listen on 127.0.0.1 unless a "
         "firewall restricts it";
}

}  // namespace

std::vector<std::string> configWarnings(const Config& config) {
  std::vector<std::string> out;
  if (!config.listen.empty() && !isLoopbackHost(config.listen.host)) {
    out.push_back(exposedListener("listen", config.listen));
  }
  for (const auto& u : config.upstreams) {
    if (!u.compat_listen.empty() && !isLoopbackHost(u.compat_listen.host)) {
      out.push_back(exposedListener("upstreams." + u.name + ".compat_listen", u.compat_listen));
    }
    if (u.base_url.rfind("http://", 0) == 0 && !isLoopbackHost(urlHost(u.base_url))) {
      out.push_back("upstreams." + u.name + ".base_url " + u.base_url +
                    " is plain http:// to a host other than loopback: the credential keyway "
                    "injects crosses the network unencrypted; use https://");
    }
  }
  return out;
}

}  // namespace keyway::core
