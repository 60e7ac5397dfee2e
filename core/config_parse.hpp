// Pure parsers and checks for configuration values (durations, sizes, addresses, URLs, names),
// shared by the YAML loader and by anyone who builds a core::Config by hand.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/config.hpp"
#include "core/result.hpp"

namespace keyway::core {

// Every parser below returns the value, or an Error (kBadRequest) whose message says what is
// wrong and what is accepted, WITHOUT a location and WITHOUT echoing the input (a user may have
// pasted a credential into the wrong field): the caller prefixes "<source>:<line>: <key>: ".
// All functions are pure and thread-safe; none throws.

// "500ms", "10s", "5m", "1h": a non-negative decimal integer followed by ms|s|m|h. Bare numbers,
// fractions, signs and spaces are refused; values beyond 1000 days are refused.
Result<std::chrono::milliseconds> parseDuration(std::string_view text);

// Bytes as a decimal integer ("1048576"), or an integer with a binary unit: "64KiB", "32MiB",
// "1GiB" (also "B"). Values beyond 1 TiB are refused.
Result<uint64_t> parseSize(std::string_view text);

// A non-negative decimal integer (no sign, no leading '+', no hex), at most 10^15.
Result<uint64_t> parseCount(std::string_view text);

// YAML 1.2 core booleans: true|True|TRUE|false|False|FALSE (not yes/no/on/off).
Result<bool> parseBool(std::string_view text);

// "host:port" with port 0..65535; host is an IPv4 literal, a DNS name, or an IPv6 literal in
// brackets ("[::1]:8750"; the brackets are not kept in ListenAddress::host).
Result<ListenAddress> parseListenAddress(std::string_view text);

// http:// or https:// URL with a host, an optional port (1..65535) and an optional path prefix;
// no userinfo, query or fragment, no "." or ".." path segments. Returns it normalised: scheme in
// lower case, trailing '/' removed ("https://api.x.io/v1/" -> "https://api.x.io/v1").
Result<std::string> normaliseBaseUrl(std::string_view text);

// Upstream mount names: [a-z0-9][a-z0-9._-]{0,62}; "_keyway" is reserved.
Status checkUpstreamName(std::string_view name);

// A header that can carry an injected credential: a token, and not one that keyway manages
// itself (Host, Content-Length, Transfer-Encoding, hop-by-hop headers, X-Keyway-*).
Status checkCredentialHeader(std::string_view name);

// Visible ASCII, space and tab only (no CR/LF/NUL), at most 256 bytes: a header value prefix.
Status checkHeaderValuePrefix(std::string_view prefix);

// Credential-store secret names: [A-Za-z0-9][A-Za-z0-9._-]{0,127}, e.g. "bundleup.api_key".
Status checkSecretName(std::string_view name);

// "bundleup" | "bosa" | "bundleiq" | "generic".
Result<Protocol> parseProtocol(std::string_view text);

// "debug" | "info" | "warn" | "error".
Status checkLogLevel(std::string_view level);

// "summary" | "every" (LogConfig::audit).
Status checkLogAudit(std::string_view audit);

// A filesystem path as written in the config: not empty, at most 4096 bytes, no control bytes.
Status checkPath(std::string_view path);

// An upstream's `tls:` settings, without touching the filesystem (the loader also checks that each
// file is a readable PEM file): only an https:// base URL takes them (on http:// they would be
// silently unused), every path passes checkPath, and client_cert and client_key come together.
// On error, `*key` (if given) is set to the part at fault: "tls", "tls.ca_file", "tls.client_cert"
// or "tls.client_key".
Status checkUpstreamTls(const UpstreamTls& tls, std::string_view base_url, std::string* key = nullptr);

// True when both addresses cannot be bound at once: same non-zero port and the same host, or
// either host a wildcard (0.0.0.0, ::). Port 0 (ephemeral) never conflicts.
bool listenAddressesConflict(const ListenAddress& a, const ListenAddress& b);

// Looks an environment variable up; empty optional = unset. Injected so tests stay hermetic.
using EnvLookup = std::function<std::optional<std::string>(const char*)>;

// `configured` if not empty; else the first entry of $STATE_DIRECTORY (systemd passes a
// colon-separated list) if set and non-empty; else "./keyway-state".
std::string resolveStateDir(std::string_view configured, const EnvLookup& env);

// `configured` if not empty; else $CREDENTIALS_DIRECTORY/master.key if that variable is set and
// non-empty (systemd LoadCredential=); else <state_dir>/master.key.
std::string resolveMasterKeyFile(std::string_view configured, std::string_view state_dir,
                                 const EnvLookup& env);

// What a valid configuration does that is usually a mistake, one sentence each, in config order
// (keywayd --check-config prints them, keywayd logs them at start): a listener on an address
// other than loopback (any host that reaches it can spend keyway's credentials with a client
// token), and an http:// base URL whose host is not loopback (the injected credential crosses
// the network unencrypted). Loopback: 127.0.0.0/8, ::1 and "localhost".
std::vector<std::string> configWarnings(const Config& config);

// Checks the invariants of a Config built in code (the loader checks the same things with line
// numbers): at least one upstream, names valid and unique, base URLs normalised, credential
// fields valid, listen addresses distinct, numbers in range. Errors: kBadRequest naming the key.
Status validateConfig(const Config& config);

// Ranges enforced by the loader and validateConfig, shared so both agree.
namespace config_limits {
inline constexpr uint64_t kMinThreads = 1, kMaxThreads = 64;
inline constexpr uint64_t kMinHeaderBytes = 1u << 10, kMaxHeaderBytes = 1u << 20;
inline constexpr uint64_t kMaxBodyBytes = uint64_t{4} << 30;
inline constexpr uint64_t kMaxResponseBytes = uint64_t{4} << 30;
inline constexpr uint64_t kMaxHeaders = 10000;
inline constexpr uint64_t kMaxConnections = 1000000;
inline constexpr uint64_t kMaxUpstreamConnections = 65536;
inline constexpr std::chrono::milliseconds kMaxConnectTimeout{std::chrono::minutes(10)};
inline constexpr std::chrono::milliseconds kMaxTimeout{std::chrono::hours(24)};
inline constexpr std::chrono::milliseconds kMaxShutdownGrace{std::chrono::hours(1)};
}  // namespace config_limits

}  // namespace keyway::core
