// Unit tests for the configuration model (core/config) and its value parsers (core/config_parse).
#include "core/config.hpp"

#include <doctest/doctest.h>

#include <map>

#include "core/config_parse.hpp"

using namespace keyway::core;
using std::chrono::milliseconds;

namespace {

EnvLookup envOf(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const char* name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

// A small valid config built in code, as other components' tests do.
Config validConfig() {
  Config config;
  config.listen = {"127.0.0.1", 8750};
  config.state_dir = "/tmp/keyway-state";
  config.master_key_file = "/tmp/keyway-state/master.key";
  UpstreamConfig bosa;
  bosa.name = "bosa";
  bosa.base_url = "https://api.bosa.id";
  bosa.compat_listen = {"127.0.0.1", 8754};
  bosa.protocol = Protocol::kBosa;
  bosa.credential = defaultCredentialFor(Protocol::kBosa);
  config.upstreams.push_back(bosa);
  UpstreamConfig iq;
  iq.name = "bundleiq";
  iq.base_url = "https://api.bundleiq.com";
  iq.protocol = Protocol::kBundleIq;
  iq.credential = defaultCredentialFor(Protocol::kBundleIq);
  config.upstreams.push_back(iq);
  return config;
}

}  // namespace

TEST_CASE("ListenAddress::toString brackets IPv6 only") {
  CHECK(ListenAddress{"127.0.0.1", 8750}.toString() == "127.0.0.1:8750");
  CHECK(ListenAddress{"localhost", 0}.toString() == "localhost:0");
  CHECK(ListenAddress{"::1", 8750}.toString() == "[::1]:8750");
  CHECK(ListenAddress{"::", 65535}.toString() == "[::]:65535");
  CHECK(ListenAddress{}.empty());
  CHECK_FALSE(ListenAddress{"::1", 1}.empty());
}

TEST_CASE("ListenAddress::toString round-trips through parseListenAddress") {
  for (const char* text : {"127.0.0.1:8750", "[::1]:8750", "localhost:0", "[fe80::1]:65535"}) {
    auto parsed = parseListenAddress(text);
    REQUIRE(parsed.ok());
    CHECK(parsed->toString() == text);
  }
}

TEST_CASE("Config::findUpstream finds by exact name") {
  Config config = validConfig();
  REQUIRE(config.findUpstream("bosa") != nullptr);
  CHECK(config.findUpstream("bosa")->base_url == "https://api.bosa.id");
  CHECK(config.findUpstream("bundleiq") == &config.upstreams[1]);
  CHECK(config.findUpstream("BOSA") == nullptr);
  CHECK(config.findUpstream("bos") == nullptr);
  CHECK(config.findUpstream("") == nullptr);
}

TEST_CASE("defaultProtocolFor follows the name prefix") {
  CHECK(defaultProtocolFor("bundleup-api") == Protocol::kBundleUp);
  CHECK(defaultProtocolFor("bundleup") == Protocol::kBundleUp);
  CHECK(defaultProtocolFor("bundleup-mcp") == Protocol::kBundleUp);
  CHECK(defaultProtocolFor("bosa") == Protocol::kBosa);
  CHECK(defaultProtocolFor("bosa-staging") == Protocol::kBosa);
  CHECK(defaultProtocolFor("bundleiq") == Protocol::kBundleIq);
  CHECK(defaultProtocolFor("bundleiq2") == Protocol::kBundleIq);
  CHECK(defaultProtocolFor("bundle") == Protocol::kGeneric);
  CHECK(defaultProtocolFor("my-bosa") == Protocol::kGeneric);
  CHECK(defaultProtocolFor("github") == Protocol::kGeneric);
  CHECK(defaultProtocolFor("") == Protocol::kGeneric);
}

TEST_CASE("defaultCredentialFor gives docs/auth.md injection per protocol") {
  auto bu = defaultCredentialFor(Protocol::kBundleUp);
  CHECK(bu.header == "Authorization");
  CHECK(bu.prefix == "Bearer ");
  CHECK(bu.secret == "bundleup.api_key");
  auto bosa = defaultCredentialFor(Protocol::kBosa);
  CHECK(bosa.header == "X-API-Key");
  CHECK(bosa.prefix.empty());
  CHECK(bosa.secret == "bosa.api_key");
  auto iq = defaultCredentialFor(Protocol::kBundleIq);
  CHECK(iq.header == "X-Api-Key");
  CHECK(iq.prefix.empty());
  CHECK(iq.secret == "bundleiq.api_key");
  auto generic = defaultCredentialFor(Protocol::kGeneric);
  CHECK(generic.header.empty());
  CHECK(generic.secret.empty());
}

TEST_CASE("protocolName and parseProtocol are inverses") {
  for (Protocol p :
       {Protocol::kBundleUp, Protocol::kBosa, Protocol::kBundleIq, Protocol::kGeneric}) {
    auto parsed = parseProtocol(protocolName(p));
    REQUIRE(parsed.ok());
    CHECK(*parsed == p);
  }
  CHECK(std::string(protocolName(Protocol::kBundleIq)) == "bundleiq");
  CHECK_FALSE(parseProtocol("BOSA").ok());
  CHECK_FALSE(parseProtocol("").ok());
  CHECK(parseProtocol("http").error().code == ErrorCode::kBadRequest);
  CHECK(parseProtocol("x").error().message.find("bundleup, bosa, bundleiq, generic") !=
        std::string::npos);
}

TEST_CASE("parseDuration") {
  CHECK(parseDuration("500ms").value() == milliseconds(500));
  CHECK(parseDuration("10s").value() == milliseconds(10000));
  CHECK(parseDuration("5m").value() == milliseconds(300000));
  CHECK(parseDuration("1h").value() == milliseconds(3600000));
  CHECK(parseDuration("0s").value() == milliseconds(0));
  CHECK(parseDuration("24000h").value() == milliseconds(int64_t{24000} * 3600000));
  for (const char* bad :
       {"", "10", "s", "10 s", " 10s", "10s ", "-1s", "+1s", "1.5s", "10S", "10sec", "1d", "10ms5",
        "0x10s", "1h30m", "24001h", "99999999999999999999999s"}) {
    CAPTURE(bad);
    auto r = parseDuration(bad);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == ErrorCode::kBadRequest);
  }
  CHECK(parseDuration("10").error().message.find("\"500ms\"") != std::string::npos);
  CHECK(parseDuration("99999999999999999999999s").error().message.find("too large") !=
        std::string::npos);
}

TEST_CASE("parseSize") {
  CHECK(parseSize("0").value() == 0);
  CHECK(parseSize("65536").value() == 65536);
  CHECK(parseSize("10B").value() == 10);
  CHECK(parseSize("64KiB").value() == 64u * 1024);
  CHECK(parseSize("32MiB").value() == 32u * 1024 * 1024);
  CHECK(parseSize("1GiB").value() == uint64_t{1} << 30);
  CHECK(parseSize("1024GiB").value() == uint64_t{1} << 40);
  for (const char* bad : {"", "KiB", "64kib", "64KB", "64K", "64 KiB", "-1", "1.5MiB", "1TiB",
                          "1025GiB", "0x10", "1e6", "99999999999999999999999"}) {
    CAPTURE(bad);
    CHECK_FALSE(parseSize(bad).ok());
  }
  CHECK(parseSize("1025GiB").error().message.find("too large") != std::string::npos);
}

TEST_CASE("parseCount and parseBool") {
  CHECK(parseCount("0").value() == 0);
  CHECK(parseCount("64").value() == 64);
  CHECK(parseCount("007").value() == 7);
  for (const char* bad : {"", "-1", "+1", "1.0", "0x1", "1e3", "12a", " 1", "10000000000000000"}) {
    CAPTURE(bad);
    CHECK_FALSE(parseCount(bad).ok());
  }
  CHECK(parseBool("true").value());
  CHECK(parseBool("True").value());
  CHECK(parseBool("TRUE").value());
  CHECK_FALSE(parseBool("false").value());
  CHECK_FALSE(parseBool("FALSE").value());
  for (const char* bad : {"", "yes", "no", "on", "off", "1", "0", "tRUE", "y"}) {
    CAPTURE(bad);
    CHECK_FALSE(parseBool(bad).ok());
  }
}

TEST_CASE("parseListenAddress accepts host:port forms") {
  auto a = parseListenAddress("127.0.0.1:8750");
  REQUIRE(a.ok());
  CHECK(a->host == "127.0.0.1");
  CHECK(a->port == 8750);
  auto b = parseListenAddress("[::1]:8751");
  REQUIRE(b.ok());
  CHECK(b->host == "::1");
  CHECK(b->port == 8751);
  auto c = parseListenAddress("localhost:0");
  REQUIRE(c.ok());
  CHECK(c->host == "localhost");
  CHECK(c->port == 0);
  CHECK(parseListenAddress("0.0.0.0:65535")->port == 65535);
  CHECK(parseListenAddress("[::]:1")->host == "::");
  CHECK(parseListenAddress("gw.internal.example:80")->host == "gw.internal.example");
}

TEST_CASE("parseListenAddress refuses malformed addresses") {
  for (const char* bad : {"",
                          "8750",
                          ":8750",
                          "127.0.0.1",
                          "127.0.0.1:",
                          "127.0.0.1:65536",
                          "127.0.0.1:-1",
                          "127.0.0.1:87a0",
                          "::1:8750",
                          "[::1]8750",
                          "[::1]:",
                          "[::1",
                          "[zz::1]:80",
                          "[127.0.0.1]:80",
                          "999.0.0.1:80",
                          "1.2.3:80",
                          "host name:80",
                          "-bad:80",
                          "bad-:80",
                          "a..b:80",
                          "under_score:80",
                          "http://127.0.0.1:8750",
                          "127.0.0.1:8750/"}) {
    CAPTURE(bad);
    auto r = parseListenAddress(bad);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == ErrorCode::kBadRequest);
    CHECK_FALSE(r.error().message.empty());
  }
  CHECK(parseListenAddress("::1:8750").error().message.find("brackets") != std::string::npos);
  CHECK(parseListenAddress("1.2.3.4:70000").error().message.find("0..65535") != std::string::npos);
}

TEST_CASE("normaliseBaseUrl accepts and normalises") {
  CHECK(normaliseBaseUrl("https://api.bundleup.io").value() == "https://api.bundleup.io");
  CHECK(normaliseBaseUrl("https://api.bundleup.io/").value() == "https://api.bundleup.io");
  CHECK(normaliseBaseUrl("https://api.bundleup.io///").value() == "https://api.bundleup.io");
  CHECK(normaliseBaseUrl("HTTP://127.0.0.1:8080/v1/").value() == "http://127.0.0.1:8080/v1");
  CHECK(normaliseBaseUrl("http://[::1]:9000/a/b").value() == "http://[::1]:9000/a/b");
  CHECK(normaliseBaseUrl("http://[::1]").value() == "http://[::1]");
  CHECK(normaliseBaseUrl("https://x.io/a%2Fb/c-d_e~f").value() == "https://x.io/a%2Fb/c-d_e~f");
  CHECK(normaliseBaseUrl("https://internal_host:1/").value() == "https://internal_host:1");
  CHECK(normaliseBaseUrl("https://x.io/v1.2/.well/..x").value() == "https://x.io/v1.2/.well/..x");
}

TEST_CASE("normaliseBaseUrl refuses what is not a plain base URL") {
  for (const char* bad : {"",
                          "api.bundleup.io",
                          "ftp://x.io",
                          "https//x.io",
                          "https://",
                          "https:///path",
                          "https://:80",
                          "https://x.io:",
                          "https://x.io:0",
                          "https://x.io:65536",
                          "https://x.io:8o",
                          "https://user@x.io",
                          "https://user:pw@x.io",
                          "https://x.io?a=1",
                          "https://x.io/#f",
                          "https://x.io/a b",
                          "https://x.io/a\\b",
                          "https://x.io/%zz",
                          "https://x.io/%2",
                          "https://x.io/./a",
                          "https://x.io/a/..",
                          "https://x.io/%2e%2E/a",
                          "https://x.io/a/%2E",
                          "https://[::1",
                          "https://[zz]/",
                          "https://[::1]x",
                          "https://x..io",
                          "https://-x.io",
                          "https://x.io/\xc3\xa9",
                          "https://300.1.1.1",
                          "https://x.io/a\"b"}) {
    CAPTURE(bad);
    auto r = normaliseBaseUrl(bad);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == ErrorCode::kBadRequest);
  }
  CHECK(normaliseBaseUrl(std::string(3000, 'a')).error().message.find("too long") !=
        std::string::npos);
}

TEST_CASE("normaliseBaseUrl errors never echo the URL") {
  // Someone may paste a key as userinfo or a query parameter: it must not reach a log line.
  for (const char* bad : {"https://user:sk-live-SECRET@x.io", "https://x.io/?key=sk-live-SECRET",
                          "https://x.io/sk-live-SECRET/ /"}) {
    auto r = normaliseBaseUrl(bad);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().message.find("SECRET") == std::string::npos);
  }
}

TEST_CASE("checkUpstreamName") {
  const std::string longest(63, 'x');
  const std::string too_long(64, 'x');
  for (const char* good : {"bosa", "bundleup-api", "a", "0", "a.b_c-d", longest.c_str()}) {
    CAPTURE(good);
    CHECK(checkUpstreamName(good).ok());
  }
  for (const char* bad : {"", "_keyway", "Bosa", "-a", ".a", "_a", "a/b", "a b", "a%2F", "\xc3\xbc",
                          too_long.c_str()}) {
    CAPTURE(bad);
    CHECK_FALSE(checkUpstreamName(bad).ok());
  }
  CHECK(checkUpstreamName("_keyway").error().message.find("reserved") != std::string::npos);
}

TEST_CASE("header names, prefixes and secret names") {
  CHECK(checkCredentialHeader("Authorization").ok());
  CHECK(checkCredentialHeader("x-api-key").ok());
  for (const char* bad : {"", "X Key", "Host", "content-length", "Transfer-Encoding", "Connection",
                          "X-Keyway-Token", "x-keyway-user"}) {
    CAPTURE(bad);
    CHECK_FALSE(checkCredentialHeader(bad).ok());
  }

  CHECK(checkHeaderValuePrefix("").ok());
  CHECK(checkHeaderValuePrefix("Bearer ").ok());
  CHECK(checkHeaderValuePrefix("Token\t").ok());
  CHECK_FALSE(checkHeaderValuePrefix("Bearer\r\nX-Evil: 1").ok());
  CHECK_FALSE(checkHeaderValuePrefix(std::string("a\0b", 3)).ok());
  CHECK_FALSE(checkHeaderValuePrefix("\x7f").ok());
  CHECK_FALSE(checkHeaderValuePrefix(std::string(257, 'a')).ok());

  CHECK(checkSecretName("bundleup.api_key").ok());
  CHECK(checkSecretName("A-1").ok());
  const std::string too_long(129, 'a');
  CHECK(checkSecretName(too_long.substr(1)).ok());
  for (const char* bad : {"", ".x", "a b", "a/b", "a:b", too_long.c_str()}) {
    CAPTURE(bad);
    CHECK_FALSE(checkSecretName(bad).ok());
  }
}

TEST_CASE("checkLogLevel and checkPath") {
  for (const char* level : {"debug", "info", "warn", "error"}) CHECK(checkLogLevel(level).ok());
  for (const char* level : {"", "INFO", "warning", "trace", "fatal"})
    CHECK_FALSE(checkLogLevel(level).ok());
  CHECK(checkPath("/var/lib/keyway").ok());
  CHECK(checkPath("relative/dir").ok());
  CHECK_FALSE(checkPath("").ok());
  CHECK_FALSE(checkPath("/a\nb").ok());
  CHECK_FALSE(checkPath(std::string(4097, 'a')).ok());
}

TEST_CASE("listenAddressesConflict") {
  const ListenAddress a{"127.0.0.1", 8750};
  CHECK(listenAddressesConflict(a, {"127.0.0.1", 8750}));
  CHECK_FALSE(listenAddressesConflict(a, {"127.0.0.1", 8751}));
  CHECK_FALSE(listenAddressesConflict(a, {"127.0.0.2", 8750}));
  CHECK(listenAddressesConflict(a, {"0.0.0.0", 8750}));
  CHECK(listenAddressesConflict({"::", 8750}, a));
  CHECK(listenAddressesConflict({"LocalHost", 9}, {"localhost", 9}));
  CHECK_FALSE(listenAddressesConflict({"127.0.0.1", 0}, {"127.0.0.1", 0}));
  CHECK_FALSE(listenAddressesConflict(a, ListenAddress{}));
}

TEST_CASE("resolveStateDir: config, then $STATE_DIRECTORY's first entry, then ./keyway-state") {
  CHECK(resolveStateDir("/srv/kw", envOf({{"STATE_DIRECTORY", "/var/lib/keyway"}})) == "/srv/kw");
  CHECK(resolveStateDir("", envOf({{"STATE_DIRECTORY", "/var/lib/keyway"}})) == "/var/lib/keyway");
  CHECK(resolveStateDir("", envOf({{"STATE_DIRECTORY", "/var/lib/keyway:/var/lib/other"}})) ==
        "/var/lib/keyway");
  CHECK(resolveStateDir("", envOf({{"STATE_DIRECTORY", ""}})) == "./keyway-state");
  CHECK(resolveStateDir("", envOf({})) == "./keyway-state");
  CHECK(resolveStateDir("", nullptr) == "./keyway-state");
}

TEST_CASE("resolveMasterKeyFile: config, then $CREDENTIALS_DIRECTORY, then <state_dir>") {
  auto creds = envOf({{"CREDENTIALS_DIRECTORY", "/run/credentials/keyway.service"}});
  CHECK(resolveMasterKeyFile("/etc/kw.key", "/s", creds) == "/etc/kw.key");
  CHECK(resolveMasterKeyFile("", "/s", creds) == "/run/credentials/keyway.service/master.key");
  CHECK(resolveMasterKeyFile("", "/s", envOf({{"CREDENTIALS_DIRECTORY", "/c/"}})) ==
        "/c/master.key");
  CHECK(resolveMasterKeyFile("", "/var/lib/keyway", envOf({})) == "/var/lib/keyway/master.key");
  CHECK(resolveMasterKeyFile("", "./keyway-state", envOf({{"CREDENTIALS_DIRECTORY", ""}})) ==
        "./keyway-state/master.key");
  CHECK(resolveMasterKeyFile("", "/s/", nullptr) == "/s/master.key");
}

TEST_CASE("validateConfig accepts a valid config and names the broken key") {
  CHECK(validateConfig(validConfig()).ok());

  struct Case {
    const char* key;
    std::function<void(Config&)> breakIt;
  };
  const Case cases[] = {
      {"listen", [](Config& c) { c.listen = {}; }},
      {"state_dir", [](Config& c) { c.state_dir.clear(); }},
      {"master_key_file", [](Config& c) { c.master_key_file = "a\nb"; }},
      {"server.threads", [](Config& c) { c.server.threads = 0; }},
      {"server.threads", [](Config& c) { c.server.threads = 65; }},
      {"limits.max_body_bytes", [](Config& c) { c.limits.max_body_bytes = 0; }},
      {"limits.max_header_bytes", [](Config& c) { c.limits.max_header_bytes = 10; }},
      {"limits.max_headers", [](Config& c) { c.limits.max_headers = 0; }},
      {"limits.max_connections", [](Config& c) { c.limits.max_connections = 0; }},
      {"limits.header_timeout", [](Config& c) { c.limits.header_timeout = milliseconds(0); }},
      {"limits.idle_timeout", [](Config& c) { c.limits.idle_timeout = milliseconds(-5); }},
      {"log.level", [](Config& c) { c.log.level = "verbose"; }},
      {"upstreams", [](Config& c) { c.upstreams.clear(); }},
      {"upstreams._keyway", [](Config& c) { c.upstreams[0].name = "_keyway"; }},
      {"upstreams.bosa", [](Config& c) { c.upstreams[1].name = "bosa"; }},
      {"upstreams.bosa.base_url", [](Config& c) { c.upstreams[0].base_url = "https://x.io/"; }},
      {"upstreams.bosa.base_url", [](Config& c) { c.upstreams[0].base_url = "ftp://x.io"; }},
      {"upstreams.bosa.credential.header",
       [](Config& c) { c.upstreams[0].credential.header = ""; }},
      {"upstreams.bosa.credential.secret",
       [](Config& c) { c.upstreams[0].credential.secret = "a b"; }},
      {"upstreams.bosa.credential.prefix",
       [](Config& c) { c.upstreams[0].credential.prefix = "\n"; }},
      {"upstreams.bosa.connect_timeout",
       [](Config& c) { c.upstreams[0].connect_timeout = milliseconds(0); }},
      {"upstreams.bosa.timeout",
       [](Config& c) { c.upstreams[0].timeout = std::chrono::hours(25); }},
      {"upstreams.bosa.max_response_bytes",
       [](Config& c) { c.upstreams[0].max_response_bytes = 0; }},
      {"upstreams.bosa.compat_listen", [](Config& c) { c.upstreams[0].compat_listen = c.listen; }},
      {"upstreams.bosa.tls",
       [](Config& c) {
         c.upstreams[0].base_url = "http://127.0.0.1:9";
         c.upstreams[0].tls = std::make_shared<const UpstreamTls>(UpstreamTls{"/etc/ca.pem", "", "", {}});
       }},
      {"upstreams.bosa.tls.client_key",
       [](Config& c) {
         c.upstreams[0].tls = std::make_shared<const UpstreamTls>(UpstreamTls{"", "/etc/c.pem", "", {}});
       }},
      {"upstreams.bosa.tls.client_cert",
       [](Config& c) {
         c.upstreams[0].tls = std::make_shared<const UpstreamTls>(UpstreamTls{"", "", "/etc/c.key", {}});
       }},
      {"upstreams.bosa.tls.ca_file",
       [](Config& c) {
         c.upstreams[0].tls = std::make_shared<const UpstreamTls>(UpstreamTls{"/etc/\n", "", "", {}});
       }},
  };
  for (const Case& test : cases) {
    const std::string key = test.key;
    CAPTURE(key);
    Config config = validConfig();
    test.breakIt(config);
    Status status = validateConfig(config);
    REQUIRE_FALSE(status.ok());
    CHECK(status.error().code == ErrorCode::kBadRequest);
    CAPTURE(status.error().message);
    CHECK(status.error().message.rfind(key + ": ", 0) == 0);
  }

  // Generic upstreams without a credential are fine; port-0 listeners may repeat.
  Config config = validConfig();
  config.upstreams[1].credential = {};
  config.listen.port = 0;
  config.upstreams[0].compat_listen = {"127.0.0.1", 0};
  CHECK(validateConfig(config).ok());
  // TLS settings on https://, the key in the certificate's own file.
  config.upstreams[0].tls =
      std::make_shared<const UpstreamTls>(UpstreamTls{"/etc/ca.pem", "/etc/c.pem", "/etc/c.pem", {}});
  CHECK(validateConfig(config).ok());
}

TEST_CASE("configWarnings: a listener beyond loopback, plain http:// beyond loopback") {
  CHECK(configWarnings(validConfig()).empty());
  Config local = validConfig();
  local.listen = {"::1", 8750};
  local.upstreams[0].compat_listen = {"localhost", 8754};
  local.upstreams[1].base_url = "http://127.0.0.2:9000";
  local.upstreams[0].base_url = "http://[::1]:9000/v1";
  CHECK(configWarnings(local).empty());

  Config open = validConfig();
  open.listen = {"0.0.0.0", 8750};
  open.upstreams[0].compat_listen = {"10.0.0.5", 8754};
  open.upstreams[1].base_url = "http://api.example.com:8080/v1";
  const auto warnings = configWarnings(open);
  REQUIRE(warnings.size() == 3);
  CHECK(warnings[0].find("listen 0.0.0.0:8750 is not a loopback address") == 0);
  CHECK(warnings[1].find("upstreams.bosa.compat_listen 10.0.0.5:8754") == 0);
  CHECK(warnings[2].find("upstreams.bundleiq.base_url http://api.example.com:8080/v1 is plain "
                         "http://") == 0);
  // A name that merely starts like loopback is not loopback.
  Config tricky = validConfig();
  tricky.upstreams[1].base_url = "http://127.evil.example";
  CHECK(configWarnings(tricky).size() == 1);
}

TEST_CASE("TLS problems: verification or not, and words without certificate contents") {
  const TlsProblem verification[] = {TlsProblem::kUntrustedCertificate, TlsProblem::kHostMismatch,
                                     TlsProblem::kExpired,          TlsProblem::kNotYetValid,
                                     TlsProblem::kRevoked,          TlsProblem::kCaFileUnusable,
                                     TlsProblem::kOtherVerification};
  for (TlsProblem p : verification) {
    CHECK(isCertificateVerification(p));
    CHECK(tlsProblemText(p).rfind("the ", 0) == 0);
  }
  for (TlsProblem p : {TlsProblem::kHandshake, TlsProblem::kClientCertUnusable, TlsProblem::kClientCertRefused}) {
    CHECK_FALSE(isCertificateVerification(p));
  }
  CHECK(tlsProblemText(TlsProblem::kUntrustedCertificate).find("tls.ca_file") != std::string_view::npos);
  CHECK(tlsProblemText(TlsProblem::kExpired) == "the certificate has expired");
  CHECK(tlsProblemText(TlsProblem::kHostMismatch).find("host name") != std::string_view::npos);
}
