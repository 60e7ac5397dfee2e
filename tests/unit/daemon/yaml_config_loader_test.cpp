// Unit tests for the YAML configuration loader: every key, types, unknown and duplicate keys,
// line numbers, environment resolution, files, the embedded default, and hostile input.
#include "daemon/yaml_config_loader.hpp"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <vector>

#include "daemon/embedded_default.hpp"
#include "tests/unit/storage/test_util.hpp"

using namespace keyway;
using core::Config;
using core::ErrorCode;
using core::Protocol;
using daemon::EnvLookup;
using std::chrono::milliseconds;

namespace {

const std::string kMinimal = "upstreams:\n  bosa: {base_url: https://api.bosa.id}\n";

EnvLookup envOf(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const char* name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

const EnvLookup kNoEnv = envOf({});

core::Result<Config> parse(const std::string& yaml, const EnvLookup& env = kNoEnv) {
  return daemon::parseConfig(yaml, "t.yaml", env);
}

// Parses `yaml`, expects a kBadRequest error "t.yaml:<line>: <path>: ..." and returns it.
std::string expectError(const std::string& yaml, int line, const std::string& path) {
  CAPTURE(yaml);
  auto result = parse(yaml);
  REQUIRE_FALSE(result.ok());
  const std::string& message = result.error().message;
  CAPTURE(message);
  CHECK(result.error().code == ErrorCode::kBadRequest);
  const std::string prefix =
      "t.yaml:" + std::to_string(line) + ": " + (path.empty() ? "" : path + ": ");
  CHECK(message.rfind(prefix, 0) == 0);
  CHECK(message.size() > prefix.size());
  CHECK(message.find('\n') == std::string::npos);
  return message;
}

// Where a key sits in the test documents built below, and the YAML that puts VALUE there.
enum class Where { kTop, kServer, kLimits, kLog, kUpstream, kCredential };

struct Placed {
  std::string yaml;
  int line;
  std::string path;
};

Placed place(Where where, const std::string& key, const std::string& value) {
  switch (where) {
    case Where::kTop:
      return {key + ": " + value + "\n" + kMinimal, 1, key};
    case Where::kServer:
      return {"server:\n  " + key + ": " + value + "\n" + kMinimal, 2, "server." + key};
    case Where::kLimits:
      return {"# limits\n\nlimits:\n  " + key + ": " + value + "\n" + kMinimal, 4, "limits." + key};
    case Where::kLog:
      return {"log:\n  " + key + ": " + value + "\n" + kMinimal, 2, "log." + key};
    case Where::kUpstream:
      if (key == "base_url") {
        return {"upstreams:\n  bosa:\n    compat_listen: \"\"\n    base_url: " + value + "\n", 4,
                "upstreams.bosa.base_url"};
      }
      return {"upstreams:\n  bosa:\n    base_url: https://api.bosa.id\n    " + key + ": " + value +
                  "\n",
              4, "upstreams.bosa." + key};
    case Where::kCredential:
      return {"upstreams:\n  bosa:\n    base_url: https://api.bosa.id\n    credential:\n      " +
                  key + ": " + value + "\n",
              5, "upstreams.bosa.credential." + key};
  }
  return {};
}

struct KeyCase {
  Where where;
  const char* key;
};

// Every scalar key of the model.
const KeyCase kScalarKeys[] = {
    {Where::kTop, "listen"},
    {Where::kTop, "state_dir"},
    {Where::kTop, "master_key_file"},
    {Where::kServer, "threads"},
    {Where::kServer, "shutdown_grace"},
    {Where::kServer, "listen_backlog"},
    {Where::kLimits, "max_body_bytes"},
    {Where::kLimits, "max_header_bytes"},
    {Where::kLimits, "max_headers"},
    {Where::kLimits, "header_timeout"},
    {Where::kLimits, "body_timeout"},
    {Where::kLimits, "idle_timeout"},
    {Where::kLimits, "max_connections"},
    {Where::kLog, "level"},
    {Where::kLog, "access_log"},
    {Where::kLog, "audit"},
    {Where::kUpstream, "base_url"},
    {Where::kUpstream, "compat_listen"},
    {Where::kUpstream, "protocol"},
    {Where::kUpstream, "connect_timeout"},
    {Where::kUpstream, "timeout"},
    {Where::kUpstream, "max_response_bytes"},
    {Where::kUpstream, "max_connections"},
    {Where::kCredential, "header"},
    {Where::kCredential, "prefix"},
    {Where::kCredential, "secret"},
};

std::string readFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// A private temporary directory, removed with its files at scope exit.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/keyway_config_test_XXXXXX";
    const char* made = ::mkdtemp(tmpl);
    REQUIRE(made != nullptr);
    path_ = made;
  }
  ~TempDir() {
    for (const auto& file : files_) ::unlink(file.c_str());
    ::rmdir(path_.c_str());
  }
  std::string file(const std::string& name) {
    files_.push_back(path_ + "/" + name);
    return files_.back();
  }
  std::string write(const std::string& name, const std::string& content) {
    const std::string p = file(name);
    std::ofstream(p, std::ios::binary) << content;
    return p;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::vector<std::string> files_;
};

}  // namespace

TEST_CASE("a minimal config gets every default") {
  auto result = parse(kMinimal);
  REQUIRE(result.ok());
  const Config& c = *result;
  CHECK(c.listen.host == "127.0.0.1");
  CHECK(c.listen.port == 8750);
  CHECK(c.state_dir == "./keyway-state");
  CHECK(c.master_key_file == "./keyway-state/master.key");
  CHECK(c.server.threads == 2);
  CHECK(c.server.shutdown_grace == milliseconds(25000));
  CHECK(c.limits.max_body_bytes == 32u << 20);
  CHECK(c.limits.max_header_bytes == 64u << 10);
  CHECK(c.limits.max_headers == 100);
  CHECK(c.limits.header_timeout == milliseconds(10000));
  CHECK(c.limits.body_timeout == milliseconds(60000));
  CHECK(c.limits.idle_timeout == milliseconds(75000));
  CHECK(c.limits.max_connections == 16384);
  CHECK(c.log.level == "info");
  CHECK(c.log.access_log);
  CHECK(c.log.audit == "summary");
  REQUIRE(c.upstreams.size() == 1);
  const auto& up = c.upstreams[0];
  CHECK(up.name == "bosa");
  CHECK(up.base_url == "https://api.bosa.id");
  CHECK(up.compat_listen.empty());
  CHECK(up.protocol == Protocol::kBosa);
  CHECK(up.credential.header == "X-API-Key");
  CHECK(up.credential.prefix.empty());
  CHECK(up.credential.secret == "bosa.api_key");
  CHECK(up.connect_timeout == milliseconds(5000));
  CHECK(up.timeout == milliseconds(60000));
  CHECK(up.max_response_bytes == 64u << 20);
  CHECK(up.max_connections == 1024);
}

TEST_CASE("every key takes a non-default value") {
  const std::string yaml = R"(listen: "[::1]:0"
state_dir: /srv/keyway
master_key_file: /etc/keyway/master.key
server: {threads: 64, shutdown_grace: 0s, listen_backlog: 511}
limits:
  max_body_bytes: 1GiB
  max_header_bytes: 16384
  max_headers: 50
  header_timeout: 2s
  body_timeout: 5m
  idle_timeout: 1h
  max_connections: 100
log: {level: debug, access_log: false, audit: every}
upstreams:
  zeta:
    base_url: "HTTP://127.0.0.1:9000/base/"
    compat_listen: localhost:0
    protocol: bosa
    credential: {header: X-Token, prefix: "Token ", secret: zeta.key}
    connect_timeout: 250ms
    timeout: 2m
    max_response_bytes: 1024
    max_connections: 64
  alpha: {base_url: https://alpha.example}
  bundleup-mcp: {base_url: https://mcp.bundleup.io, credential: {secret: bundleup.mcp_key}}
)";
  auto result =
      parse(yaml, envOf({{"STATE_DIRECTORY", "/ignored"}, {"CREDENTIALS_DIRECTORY", "/x"}}));
  REQUIRE(result.ok());
  const Config& c = *result;
  CHECK(c.listen.toString() == "[::1]:0");
  CHECK(c.state_dir == "/srv/keyway");
  CHECK(c.master_key_file == "/etc/keyway/master.key");
  CHECK(c.server.threads == 64);
  CHECK(c.server.shutdown_grace == milliseconds(0));
  CHECK(c.server.listen_backlog == 511);
  CHECK(c.limits.max_body_bytes == size_t{1} << 30);
  CHECK(c.limits.max_header_bytes == 16384);
  CHECK(c.limits.max_headers == 50);
  CHECK(c.limits.header_timeout == milliseconds(2000));
  CHECK(c.limits.body_timeout == milliseconds(300000));
  CHECK(c.limits.idle_timeout == milliseconds(3600000));
  CHECK(c.limits.max_connections == 100);
  CHECK(c.log.level == "debug");
  CHECK_FALSE(c.log.access_log);
  CHECK(c.log.audit == "every");
  REQUIRE(c.upstreams.size() == 3);
  // Order is the file's, not alphabetical.
  CHECK(c.upstreams[0].name == "zeta");
  CHECK(c.upstreams[1].name == "alpha");
  CHECK(c.upstreams[2].name == "bundleup-mcp");
  const auto& z = c.upstreams[0];
  CHECK(z.base_url == "http://127.0.0.1:9000/base");
  CHECK(z.compat_listen.toString() == "localhost:0");
  CHECK(z.protocol == Protocol::kBosa);
  CHECK(z.credential.header == "X-Token");
  CHECK(z.credential.prefix == "Token ");
  CHECK(z.credential.secret == "zeta.key");
  CHECK(z.connect_timeout == milliseconds(250));
  CHECK(z.timeout == milliseconds(120000));
  CHECK(z.max_response_bytes == 1024);
  CHECK(z.max_connections == 64);
  const auto& a = c.upstreams[1];
  CHECK(a.protocol == Protocol::kGeneric);
  CHECK(a.credential.header.empty());
  CHECK(a.credential.secret.empty());
  // A partial credential keeps the protocol's other fields.
  const auto& m = c.upstreams[2];
  CHECK(m.protocol == Protocol::kBundleUp);
  CHECK(m.credential.header == "Authorization");
  CHECK(m.credential.prefix == "Bearer ");
  CHECK(m.credential.secret == "bundleup.mcp_key");
  CHECK(c.findUpstream("alpha") == &c.upstreams[1]);
}

TEST_CASE("empty values mean the default where the key is documented so") {
  auto result = parse(
      "state_dir:\nmaster_key_file: \"\"\nserver:\nlimits: {}\nlog:\n"
      "upstreams:\n  bosa: {base_url: https://api.bosa.id, compat_listen: \"\"}\n"
      "  bundleiq:\n    base_url: https://api.bundleiq.com\n    compat_listen:\n"
      "    credential:\n");
  REQUIRE(result.ok());
  CHECK(result->state_dir == "./keyway-state");
  CHECK(result->server.threads == 2);
  CHECK(result->upstreams[0].compat_listen.empty());
  CHECK(result->upstreams[1].compat_listen.empty());
  CHECK(result->upstreams[1].credential.header == "X-Api-Key");
}

TEST_CASE("bad values are errors naming the key and its line") {
  struct Case {
    Where where;
    const char* key;
    const char* value;
    const char* says;  // part of the message
  };
  const Case cases[] = {
      {Where::kTop, "listen", "127.0.0.1", "host:port"},
      {Where::kTop, "listen", "127.0.0.1:70000", "0..65535"},
      {Where::kTop, "listen", "::1:8750", "brackets"},
      {Where::kTop, "listen", "\"\"", "host:port"},
      {Where::kTop, "state_dir", "\"a\\nb\"", "control"},
      {Where::kTop, "master_key_file", "\"a\\tb\"", "control"},
      {Where::kServer, "threads", "0", "1..64"},
      {Where::kServer, "threads", "65", "1..64"},
      {Where::kServer, "threads", "-1", "integer"},
      {Where::kServer, "threads", "2.5", "integer"},
      {Where::kServer, "threads", "\"2\"", "quoted"},
      {Where::kServer, "shutdown_grace", "25", "unit"},
      {Where::kServer, "listen_backlog", "8", "16..65535"},
      {Where::kServer, "listen_backlog", "70000", "16..65535"},
      {Where::kServer, "shutdown_grace", "2h", "between 0s and 1h"},
      {Where::kLimits, "max_body_bytes", "0", "between"},
      {Where::kLimits, "max_body_bytes", "5GiB", "between 1 bytes and 4GiB"},
      {Where::kLimits, "max_body_bytes", "32MB", "KiB, MiB or GiB"},
      {Where::kLimits, "max_body_bytes", "-5", "size"},
      {Where::kLimits, "max_header_bytes", "100", "between 1KiB and 1MiB"},
      {Where::kLimits, "max_header_bytes", "2MiB", "between 1KiB and 1MiB"},
      {Where::kLimits, "max_headers", "0", "1..10000"},
      {Where::kLimits, "max_headers", "10001", "1..10000"},
      {Where::kLimits, "header_timeout", "0s", "above 0"},
      {Where::kLimits, "header_timeout", "10", "unit"},
      {Where::kLimits, "body_timeout", "1.5s", "unit"},
      {Where::kLimits, "idle_timeout", "25h", "at most 24h"},
      {Where::kLimits, "max_connections", "0", "1..1000000"},
      {Where::kLimits, "max_connections", "99999999999999999999", "too large"},
      {Where::kLog, "level", "verbose", "debug, info, warn, error"},
      {Where::kLog, "level", "INFO", "debug, info, warn, error"},
      {Where::kLog, "access_log", "yes", "true or false"},
      {Where::kLog, "access_log", "\"true\"", "quoted"},
      {Where::kLog, "access_log", "1", "true or false"},
      {Where::kLog, "audit", "all", "summary, every"},
      {Where::kLog, "audit", "[every]", "summary, every"},
      {Where::kUpstream, "base_url", "api.bosa.id", "http:// or https://"},
      {Where::kUpstream, "base_url", "ftp://api.bosa.id", "http:// or https://"},
      {Where::kUpstream, "base_url", "https://u:p@api.bosa.id", "user@host"},
      {Where::kUpstream, "base_url", "\"https://api.bosa.id/?a=1\"", "query"},
      {Where::kUpstream, "base_url", "https://api.bosa.id/../x", "'..'"},
      {Where::kUpstream, "base_url", "https://:443", "host"},
      {Where::kUpstream, "compat_listen", "8754", "host:port"},
      {Where::kUpstream, "compat_listen", "127.0.0.1:8750", "already used by listen (default)"},
      {Where::kUpstream, "protocol", "BOSA", "bundleup, bosa, bundleiq, generic"},
      {Where::kUpstream, "protocol", "grpc", "bundleup, bosa, bundleiq, generic"},
      {Where::kUpstream, "connect_timeout", "0ms", "above 0"},
      {Where::kUpstream, "connect_timeout", "11m", "at most 10m"},
      {Where::kUpstream, "timeout", "5", "unit"},
      {Where::kUpstream, "max_response_bytes", "0", "between"},
      {Where::kUpstream, "max_response_bytes", "5GiB", "4GiB"},
      {Where::kUpstream, "max_connections", "0", "1..65536"},
      {Where::kUpstream, "max_connections", "1", "at least server.threads (2)"},
      {Where::kUpstream, "max_connections", "65537", "1..65536"},
      {Where::kCredential, "header", "\"X Key\"", "header name"},
      {Where::kCredential, "header", "Host", "cannot carry a credential"},
      {Where::kCredential, "header", "X-Keyway-Token", "cannot carry a credential"},
      {Where::kCredential, "header", "\"\"", "must not be empty"},
      {Where::kCredential, "prefix", "\"Bearer\\r\\nX: y\"", "printable ASCII"},
      {Where::kCredential, "secret", "\"bosa key\"", "secret name"},
      {Where::kCredential, "secret", "/etc/key", "secret name"},
  };
  for (const Case& test : cases) {
    const Placed placed = place(test.where, test.key, test.value);
    const std::string message = expectError(placed.yaml, placed.line, placed.path);
    CAPTURE(message);
    CHECK(message.find(test.says) != std::string::npos);
  }
}

TEST_CASE("bad types are errors naming the key and its line") {
  for (const KeyCase& key : kScalarKeys) {
    for (const char* value : {"[1, 2]", "{a: 1}", "[]"}) {
      const Placed placed = place(key.where, key.key, value);
      const std::string message = expectError(placed.yaml, placed.line, placed.path);
      CAPTURE(message);
      CHECK(message.find("got a ") != std::string::npos);
    }
  }
  // Keys where an empty value does not mean "default".
  for (const KeyCase& key : kScalarKeys) {
    const std::string name = key.key;
    if (name == "state_dir" || name == "master_key_file" || name == "compat_listen" ||
        name == "prefix") {
      continue;
    }
    const Placed placed = place(key.where, key.key, "");
    const std::string message = expectError(placed.yaml, placed.line, placed.path);
    CAPTURE(message);
    CHECK(message.find("got nothing") != std::string::npos);
  }
  // Sections must be mappings.
  expectError("server: 4\n" + kMinimal, 1, "server");
  expectError("limits: [1]\n" + kMinimal, 1, "limits");
  expectError("log: info\n" + kMinimal, 1, "log");
  expectError("upstreams: [bosa]\n", 1, "upstreams");
  expectError("upstreams:\n  bosa: https://api.bosa.id\n", 2, "upstreams.bosa");
  expectError("upstreams:\n  bosa: {base_url: https://api.bosa.id, credential: none}\n", 2,
              "upstreams.bosa.credential");
  expectError("- listen\n- upstreams\n", 1, "");
  expectError("just a string\n", 1, "");
  expectError("listen: 127.0.0.1:1\n[a]: 1\n" + kMinimal, 2, "");
}

TEST_CASE("unknown keys are errors at every level, listing the accepted keys") {
  const std::string top = expectError("listn: 127.0.0.1:1\n" + kMinimal, 1, "listn");
  CHECK(top.find("unknown key") != std::string::npos);
  CHECK(top.find("listen, state_dir, master_key_file, server, limits, log, cache, upstreams") !=
        std::string::npos);
  expectError("server:\n  threads: 2\n  thread: 3\n" + kMinimal, 3, "server.thread");
  CHECK(expectError("limits: {max_body: 1}\n" + kMinimal, 1, "limits.max_body")
            .find("max_body_bytes") != std::string::npos);
  expectError("log:\n  format: json\n" + kMinimal, 2, "log.format");
  CHECK(expectError("upstreams:\n  bosa:\n    base_url: https://api.bosa.id\n    retries: 3\n", 4,
                    "upstreams.bosa.retries")
            .find("base_url, compat_listen, protocol, credential") != std::string::npos);
  expectError(
      "upstreams:\n  bosa:\n    base_url: https://api.bosa.id\n    credential:\n"
      "      value: sk-123\n",
      5, "upstreams.bosa.credential.value");
  // Keys are case-sensitive, and YAML merge keys are not supported.
  expectError("Listen: 127.0.0.1:1\n" + kMinimal, 1, "Listen");
  expectError("base: &b {threads: 3}\nserver:\n  <<: *b\n" + kMinimal, 1, "base");
}

TEST_CASE("duplicate keys are errors at every level") {
  CHECK(expectError("listen: 127.0.0.1:1\nlisten: 127.0.0.1:2\n" + kMinimal, 2, "listen")
            .find("duplicate key (first at line 1)") != std::string::npos);
  expectError("server:\n  threads: 2\n\n  threads: 3\n" + kMinimal, 4, "server.threads");
  expectError("limits: {max_headers: 5, max_headers: 6}\n" + kMinimal, 1, "limits.max_headers");
  expectError("log:\n  level: info\n  \"level\": debug\n" + kMinimal, 3, "log.level");
  CHECK(expectError("upstreams:\n  bosa: {base_url: http://a}\n  bundleiq: {base_url: http://b}\n"
                    "  bosa: {base_url: http://c}\n",
                    4, "upstreams.bosa")
            .find("first at line 2") != std::string::npos);
  expectError("upstreams:\n  bosa:\n    base_url: http://a\n    base_url: http://b\n", 4,
              "upstreams.bosa.base_url");
  expectError(
      "upstreams:\n  bosa:\n    base_url: http://a\n    credential:\n      secret: a\n"
      "      secret: b\n",
      6, "upstreams.bosa.credential.secret");
  expectError(kMinimal + "upstreams:\n  bundleiq: {base_url: http://b}\n", 3, "upstreams");
}

TEST_CASE("upstreams: required, names checked, base_url required") {
  CHECK(expectError("listen: 127.0.0.1:1\n", 1, "upstreams").find("required") != std::string::npos);
  expectError("", 1, "upstreams");
  expectError("# only a comment\n", 1, "upstreams");
  expectError("listen: 127.0.0.1:1\nupstreams:\n", 2, "upstreams");
  expectError("upstreams: {}\n", 1, "upstreams");
  CHECK(expectError("upstreams:\n  _keyway: {base_url: http://a}\n", 2, "upstreams._keyway")
            .find("reserved") != std::string::npos);
  expectError("upstreams:\n  Bosa: {base_url: http://a}\n", 2, "upstreams.Bosa");
  expectError("upstreams:\n  -x: {base_url: http://a}\n", 2, "upstreams.-x");
  expectError("upstreams:\n  a/b: {base_url: http://a}\n", 2, "upstreams.a/b");
  expectError("upstreams:\n  " + std::string(64, 'a') + ": {base_url: http://a}\n", 2,
              "upstreams." + std::string(64, 'a'));
  CHECK(expectError("upstreams:\n  bosa:\n    compat_listen: 127.0.0.1:1\n", 2,
                    "upstreams.bosa.base_url")
            .find("required") != std::string::npos);
  expectError("upstreams:\n  bosa:\n", 2, "upstreams.bosa");
  CHECK(parse("upstreams:\n  " + std::string(63, 'a') + ": {base_url: http://a}\n").ok());
}

TEST_CASE("credential and protocol defaults") {
  auto result = parse(
      "upstreams:\n"
      "  bundleup-api: {base_url: https://api.bundleup.io}\n"
      "  bosa: {base_url: https://api.bosa.id}\n"
      "  bundleiq: {base_url: https://api.bundleiq.com}\n"
      "  notes: {base_url: https://api.bundleiq.com, protocol: bundleiq}\n"
      "  plain: {base_url: https://example.com}\n"
      "  bundleup-public: {base_url: https://api.bundleup.io, credential: {secret: \"\"}}\n"
      "  custom: {base_url: https://example.com, credential: {header: X-Key, secret: "
      "custom.key}}\n");
  REQUIRE(result.ok());
  const Config& c = *result;
  CHECK(c.findUpstream("bundleup-api")->credential.secret == "bundleup.api_key");
  CHECK(c.findUpstream("bundleup-api")->credential.prefix == "Bearer ");
  CHECK(c.findUpstream("bosa")->credential.header == "X-API-Key");
  CHECK(c.findUpstream("bundleiq")->credential.header == "X-Api-Key");
  CHECK(c.findUpstream("notes")->protocol == Protocol::kBundleIq);
  CHECK(c.findUpstream("notes")->credential.secret == "bundleiq.api_key");
  CHECK(c.findUpstream("plain")->protocol == Protocol::kGeneric);
  CHECK(c.findUpstream("plain")->credential.secret.empty());
  CHECK(c.findUpstream("bundleup-public")->credential.secret.empty());
  CHECK(c.findUpstream("bundleup-public")->credential.header == "Authorization");
  CHECK(c.findUpstream("custom")->credential.header == "X-Key");
  CHECK(c.findUpstream("custom")->credential.prefix.empty());

  // A generic upstream given a secret but no header cannot inject it.
  CHECK(expectError("upstreams:\n  plain:\n    base_url: https://example.com\n    credential:\n"
                    "      secret: plain.key\n",
                    4, "upstreams.plain.credential.header")
            .find("generic") != std::string::npos);
}

TEST_CASE("listeners must be distinct unless port 0") {
  expectError(
      "listen: 127.0.0.1:9000\nupstreams:\n  a: {base_url: http://x, compat_listen: "
      "127.0.0.1:9001}\n  b: {base_url: http://x, compat_listen: 127.0.0.1:9001}\n",
      4, "upstreams.b.compat_listen");
  const std::string message = expectError(
      "listen: 0.0.0.0:9000\nupstreams:\n  a:\n    base_url: http://x\n    compat_listen: "
      "\"[::1]:9000\"\n",
      5, "upstreams.a.compat_listen");
  CHECK(message.find("[::1]:9000 is already used by listen (line 1)") != std::string::npos);
  CHECK(parse("listen: 127.0.0.1:0\nupstreams:\n  a: {base_url: http://x, compat_listen: "
              "127.0.0.1:0}\n  b: {base_url: http://x, compat_listen: 127.0.0.1:0}\n")
            .ok());
  CHECK(parse("listen: 127.0.0.1:9000\nupstreams:\n  a: {base_url: http://x, compat_listen: "
              "127.0.0.2:9000}\n")
            .ok());
}

TEST_CASE("state_dir and master_key_file resolve through the environment") {
  auto resolve = [](const std::string& head, std::map<std::string, std::string> env) {
    auto result = parse(head + kMinimal, envOf(std::move(env)));
    REQUIRE(result.ok());
    return std::make_pair(result->state_dir, result->master_key_file);
  };
  CHECK(resolve("", {}) ==
        std::make_pair(std::string("./keyway-state"), std::string("./keyway-state/master.key")));
  CHECK(resolve("", {{"STATE_DIRECTORY", "/var/lib/keyway"}}) ==
        std::make_pair(std::string("/var/lib/keyway"), std::string("/var/lib/keyway/master.key")));
  CHECK(
      resolve("state_dir: \"\"\n", {{"STATE_DIRECTORY", "/var/lib/keyway:/var/lib/extra"}}).first ==
      "/var/lib/keyway");
  CHECK(resolve("", {{"STATE_DIRECTORY", "/s"}, {"CREDENTIALS_DIRECTORY", "/run/credentials/k"}}) ==
        std::make_pair(std::string("/s"), std::string("/run/credentials/k/master.key")));
  CHECK(resolve("state_dir: /data\n", {{"STATE_DIRECTORY", "/s"}}) ==
        std::make_pair(std::string("/data"), std::string("/data/master.key")));
  CHECK(resolve("master_key_file: /k/m.key\n", {{"CREDENTIALS_DIRECTORY", "/c"}}).second ==
        "/k/m.key");
  CHECK(resolve("", {{"STATE_DIRECTORY", ""}, {"CREDENTIALS_DIRECTORY", ""}}) ==
        std::make_pair(std::string("./keyway-state"), std::string("./keyway-state/master.key")));
  // A null lookup function means "nothing set".
  auto result = daemon::parseConfig(kMinimal, "t.yaml", nullptr);
  REQUIRE(result.ok());
  CHECK(result->state_dir == "./keyway-state");
}

TEST_CASE("YAML syntax errors give the line") {
  CHECK(expectError("listen: 127.0.0.1:1\nupstreams:\n  bosa: {base_url: http://a\n", 4, "")
            .find("invalid YAML") != std::string::npos);
  expectError("listen: [\n", 2, "");
  expectError(kMinimal + "log:\n  level: info\n   access_log: true\n", 5, "");
  expectError("server:\n\tthreads: 2\n" + kMinimal, 2, "");
  expectError(kMinimal + "listen: \"a\" b\n", 3, "");
  expectError(kMinimal + "x: *nowhere\n", 3, "");
  CHECK(expectError(kMinimal + "---\nlisten: 127.0.0.1:1\n", 4, "").find("one YAML document") !=
        std::string::npos);
}

TEST_CASE("hostile input never crashes or hangs") {
  CHECK(expectError(std::string(5000, '['), 1, "").find("too deep") != std::string::npos);
  CHECK(expectError(std::string(5000, '{'), 1, "").find("invalid YAML") != std::string::npos);
  CHECK(expectError("listen: 127.0.0.1:1\n" + std::string("upstr\0eams: x\n", 14), 2, "")
            .find("NUL") != std::string::npos);
  CHECK(expectError(std::string(daemon::kMaxConfigBytes + 1, '#'), 1, "").find("too large") !=
        std::string::npos);
  // Aliases are resolved, not expanded: a "billion laughs" document stays small.
  std::string laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\n";
  for (char c = 'b'; c <= 'z'; ++c) {
    laughs += std::string(1, c) + ": &" + c + " [";
    for (int i = 0; i < 10; ++i) laughs += std::string(i ? ", *" : "*") + static_cast<char>(c - 1);
    laughs += "]\n";
  }
  expectError(laughs + kMinimal, 1, "a");
  // Aliases in valid places are fine.
  auto aliased = parse("limits: {header_timeout: &t 7s, body_timeout: *t}\n" + kMinimal);
  REQUIRE(aliased.ok());
  CHECK(aliased->limits.body_timeout == milliseconds(7000));

  // Random damage to the shipped file: each result is a Config or a located error.
  const std::string base = daemon::embeddedDefaultConfig();
  std::mt19937 rng(20240501);
  const std::string alphabet = ":-[]{}\"'#&*!|>%@`,? \n\t\\0aZ9.";
  int rejected = 0;
  for (int round = 0; round < 1500; ++round) {
    std::string text = base;
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits && !text.empty(); ++e) {
      const size_t at = rng() % text.size();
      const char c = alphabet[rng() % alphabet.size()];
      switch (rng() % 3) {
        case 0:
          text[at] = c;
          break;
        case 1:
          text.insert(text.begin() + static_cast<std::ptrdiff_t>(at), c);
          break;
        default:
          text.erase(at, 1 + rng() % 8);
          break;
      }
    }
    auto result = parse(text);
    if (result.ok()) {
      CHECK_FALSE(result->upstreams.empty());
      continue;
    }
    ++rejected;
    const std::string& message = result.error().message;
    CAPTURE(message);
    REQUIRE(message.size() > 8);
    CHECK(message.rfind("t.yaml:", 0) == 0);
    CHECK(message[7] >= '1');
    CHECK(message[7] <= '9');
    CHECK(result.error().code == ErrorCode::kBadRequest);
  }
  CHECK(rejected > 100);
}

TEST_CASE("error messages do not echo the offending value") {
  const char* secret = "sk-live-0123456789SECRET";
  for (const auto& [where, key] :
       {std::make_pair(Where::kTop, "listen"), std::make_pair(Where::kUpstream, "base_url"),
        std::make_pair(Where::kCredential, "secret"), std::make_pair(Where::kCredential, "header"),
        std::make_pair(Where::kLog, "level"), std::make_pair(Where::kLimits, "body_timeout")}) {
    const std::string value = std::string("\"https://u:") + secret + "@x y\"";
    const Placed placed = place(where, key, value);
    CHECK(expectError(placed.yaml, placed.line, placed.path).find("SECRET") == std::string::npos);
  }
}

TEST_CASE("the embedded default equals conf/keyway.yaml and parses") {
  const std::string shipped = readFile(KEYWAY_SOURCE_ROOT "/conf/keyway.yaml");
  REQUIRE_FALSE(shipped.empty());
  CHECK(shipped == std::string(daemon::embeddedDefaultConfig()));

  auto result = daemon::loadConfig(std::nullopt, kNoEnv);
  REQUIRE(result.ok());
  const Config& c = *result;
  CHECK(c.listen.toString() == "127.0.0.1:8750");
  CHECK(c.state_dir == "./keyway-state");
  const std::vector<std::tuple<std::string, std::string, uint16_t, Protocol>> expected = {
      {"bundleup-api", "https://api.bundleup.io", 8751, Protocol::kBundleUp},
      {"bundleup-proxy", "https://proxy.bundleup.io", 8752, Protocol::kBundleUp},
      {"bundleup-unify", "https://unify.bundleup.io", 8753, Protocol::kBundleUp},
      {"bosa", "https://api.bosa.id", 8754, Protocol::kBosa},
      {"bundleiq", "https://api.bundleiq.com", 8755, Protocol::kBundleIq},
  };
  REQUIRE(c.upstreams.size() == expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    const auto& up = c.upstreams[i];
    CHECK(up.name == std::get<0>(expected[i]));
    CHECK(up.base_url == std::get<1>(expected[i]));
    CHECK(up.compat_listen.toString() == "127.0.0.1:" + std::to_string(std::get<2>(expected[i])));
    CHECK(up.protocol == std::get<3>(expected[i]));
    CHECK(up.credential.secret == core::defaultCredentialFor(up.protocol).secret);
  }

  // The shipped file and a config given with --config agree.
  auto from_file = daemon::loadConfig(std::string(KEYWAY_SOURCE_ROOT "/conf/keyway.yaml"), kNoEnv);
  REQUIRE(from_file.ok());
  CHECK(from_file->upstreams.size() == c.upstreams.size());
}

TEST_CASE("every value line of the shipped file is located when it goes wrong") {
  // Replace one value at a time with a list (a bad type for every scalar key) and check that
  // the error names that line and that key's dotted path, derived here from the indentation.
  const std::string shipped = daemon::embeddedDefaultConfig();
  std::vector<std::string> lines;
  {
    std::istringstream in(shipped);
    for (std::string line; std::getline(in, line);) lines.push_back(line);
  }
  std::vector<std::pair<size_t, std::string>> stack;  // indent, key
  int checked = 0;
  for (size_t n = 0; n < lines.size(); ++n) {
    const std::string& line = lines[n];
    const size_t indent = line.find_first_not_of(' ');
    if (indent == std::string::npos || line[indent] == '#') continue;
    const size_t colon = line.find(':', indent);
    REQUIRE(colon != std::string::npos);
    const std::string key = line.substr(indent, colon - indent);
    while (!stack.empty() && stack.back().first >= indent) stack.pop_back();
    std::string path;
    for (const auto& level : stack) path += level.second + ".";
    path += key;
    std::string value = line.substr(colon + 1);
    if (value.find_first_not_of(' ') == std::string::npos) {
      stack.emplace_back(indent, key);
      continue;
    }
    std::string broken;
    for (size_t m = 0; m < lines.size(); ++m) {
      broken += m == n ? line.substr(0, colon + 1) + " [oops]" : lines[m];
      broken += '\n';
    }
    CAPTURE(line);
    CHECK(expectError(broken, static_cast<int>(n) + 1, path).find("got a list") !=
          std::string::npos);
    ++checked;
  }
  CHECK(checked >= 30);
}

TEST_CASE("cache section: rules before the defaults, validation with key paths") {
  auto cfg = daemon::parseConfig("cache:\n  max_bytes: 8MiB\n  max_background_refreshes: 4\n  rules:\n    - { upstream: bundleiq, path: \"/v1/notes\", ttl: 5m }\n" + kMinimal,
                                 "t.yaml", [](const char*) { return std::optional<std::string>(); });
  REQUIRE(cfg.ok());
  CHECK(cfg->cache.max_bytes == (size_t{8} << 20));
  CHECK(cfg->cache.max_background_refreshes == 4);
  REQUIRE(cfg->cache.rules.size() > 1);
  CHECK(cfg->cache.rules[0].upstream == "bundleiq");
  CHECK(cfg->cache.rules[0].ttl == std::chrono::seconds(300));
  CHECK(cfg->cache.rules.size() == core::defaultCachePolicy().rules.size() + 1);
  auto only = daemon::parseConfig("cache:\n  default_rules: false\n" + kMinimal, "t.yaml",
                                  [](const char*) { return std::optional<std::string>(); });
  REQUIRE(only.ok());
  CHECK(only->cache.rules.empty());
  expectError("cache:\n  rules:\n    - { upstream: bundleiq, ttl: soon }\n" + kMinimal, 3, "cache.rules[0].ttl");
  expectError("cache:\n  rules: 3\n" + kMinimal, 2, "cache.rules");
  expectError("cache:\n  max_background_refreshes: 0\n" + kMinimal, 2, "cache.max_background_refreshes");
}

TEST_CASE("loadConfig reads files and reports unreadable ones") {
  TempDir dir;
  const std::string good = dir.write("good.yaml", "listen: 127.0.0.1:0\n" + kMinimal);
  auto result = daemon::loadConfig(good, envOf({{"STATE_DIRECTORY", dir.path()}}));
  REQUIRE(result.ok());
  CHECK(result->listen.port == 0);
  CHECK(result->state_dir == dir.path());

  const std::string bad = dir.write("bad.yaml", "\n\nlisten: nope\n" + kMinimal);
  auto bad_result = daemon::loadConfig(bad, kNoEnv);
  REQUIRE_FALSE(bad_result.ok());
  CHECK(bad_result.error().message.rfind(bad + ":3: listen: ", 0) == 0);

  auto missing = daemon::loadConfig(dir.path() + "/missing.yaml", kNoEnv);
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.error().code == ErrorCode::kBadRequest);
  CHECK(missing.error().message.rfind(dir.path() + "/missing.yaml: cannot open", 0) == 0);
  CHECK(missing.error().message.find("No such file") != std::string::npos);

  auto directory = daemon::loadConfig(dir.path(), kNoEnv);
  REQUIRE_FALSE(directory.ok());
  CHECK(directory.error().message.find("not a regular file") != std::string::npos);

  // A FIFO with no writer must not block --check-config.
  const std::string fifo = dir.file("fifo.yaml");
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  auto from_fifo = daemon::loadConfig(fifo, kNoEnv);
  REQUIRE_FALSE(from_fifo.ok());
  CHECK(from_fifo.error().message.find("not a regular file") != std::string::npos);

  const std::string huge = dir.write("huge.yaml", std::string(daemon::kMaxConfigBytes + 10, '#'));
  auto too_big = daemon::loadConfig(huge, kNoEnv);
  REQUIRE_FALSE(too_big.ok());
  CHECK(too_big.error().message.find("too large") != std::string::npos);
}

TEST_CASE("processEnv reads the process environment") {
  REQUIRE(::setenv("KEYWAY_CONFIG_TEST_VAR", "/from/env", 1) == 0);
  CHECK(daemon::processEnv("KEYWAY_CONFIG_TEST_VAR") == std::optional<std::string>("/from/env"));
  ::unsetenv("KEYWAY_CONFIG_TEST_VAR");
  CHECK_FALSE(daemon::processEnv("KEYWAY_CONFIG_TEST_VAR").has_value());
}

// ---- BOSA settings: schema_ttl, user_token_margin, retry ----

namespace {

const std::string kBosaHead = "upstreams:\n  bosa:\n    base_url: https://api.bosa.id\n";

}  // namespace

TEST_CASE("BOSA settings: defaults, every key set, and empty retry") {
  auto defaults = parse(kMinimal);
  REQUIRE(defaults.ok());
  const core::BosaSettings& d = defaults->upstreams[0].bosa;
  CHECK(d.schema_ttl == milliseconds(3600000));
  CHECK(d.user_token_margin == milliseconds(60000));
  CHECK(d.retry.attempts == 3);
  CHECK(d.retry.budget == milliseconds(25000));
  CHECK(d.retry.retry_after_cap == milliseconds(10000));
  CHECK(d.retry.backoff == milliseconds(200));
  CHECK(d.retry.safe_actions == std::vector<std::string>{"list_*", "get_*", "search_*"});

  auto set = parse(kBosaHead +
                   "    schema_ttl: 5m\n"
                   "    user_token_margin: 0s\n"
                   "    retry:\n"
                   "      attempts: 10\n"
                   "      budget: 1m\n"
                   "      retry_after_cap: 0s\n"
                   "      backoff: 50ms\n"
                   "      safe_actions: [list_*, \"get-*\", Fetch_Report, \"*\"]\n");
  REQUIRE(set.ok());
  const core::BosaSettings& b = set->upstreams[0].bosa;
  CHECK(b.schema_ttl == milliseconds(300000));
  CHECK(b.user_token_margin == milliseconds(0));
  CHECK(b.retry.attempts == 10);
  CHECK(b.retry.budget == milliseconds(60000));
  CHECK(b.retry.retry_after_cap == milliseconds(0));
  CHECK(b.retry.backoff == milliseconds(50));
  CHECK(b.retry.safe_actions == std::vector<std::string>{"list_*", "get-*", "Fetch_Report", "*"});

  auto empty = parse(kBosaHead + "    retry:\n    schema_ttl: 720h\n");
  REQUIRE(empty.ok());
  CHECK(empty->upstreams[0].bosa.retry.attempts == 3);
  CHECK(empty->upstreams[0].bosa.schema_ttl == milliseconds(std::chrono::hours(720)));

  auto none = parse(kBosaHead + "    retry: {safe_actions: []}\n");
  REQUIRE(none.ok());
  CHECK(none->upstreams[0].bosa.retry.safe_actions.empty());
  CHECK(none->upstreams[0].bosa.retry.budget == milliseconds(25000));

  // Accepted on any upstream (a mount of another protocol simply does not use them).
  auto other = parse(
      "upstreams:\n  bundleiq:\n    base_url: https://api.bundleiq.com\n"
      "    retry: {attempts: 1}\n    schema_ttl: 10s\n");
  REQUIRE(other.ok());
  CHECK(other->upstreams[0].protocol == Protocol::kBundleIq);
  CHECK(other->upstreams[0].bosa.retry.attempts == 1);
  CHECK(other->upstreams[0].bosa.schema_ttl == milliseconds(10000));
}

TEST_CASE("BOSA settings: bad values name the key and its line") {
  struct Case {
    std::string yaml;  // after kBosaHead (line 3 is base_url)
    int line;
    const char* path;
    const char* says;
  };
  const Case cases[] = {
      {"    schema_ttl: 0s\n", 4, "upstreams.bosa.schema_ttl", "between 1s and 720h"},
      {"    schema_ttl: 721h\n", 4, "upstreams.bosa.schema_ttl", "between 1s and 720h"},
      {"    schema_ttl: 60\n", 4, "upstreams.bosa.schema_ttl", "unit"},
      {"    schema_ttl: [1h]\n", 4, "upstreams.bosa.schema_ttl", "got a list"},
      {"    user_token_margin: 25h\n", 4, "upstreams.bosa.user_token_margin", "between 0s and 24h"},
      {"    user_token_margin: -1s\n", 4, "upstreams.bosa.user_token_margin", "duration"},
      {"    retry: 3\n", 4, "upstreams.bosa.retry", "expected a mapping"},
      {"    retry: [attempts]\n", 4, "upstreams.bosa.retry", "expected a mapping"},
      {"    retry:\n      attempts: 0\n", 5, "upstreams.bosa.retry.attempts", "1..10"},
      {"    retry:\n      attempts: 11\n", 5, "upstreams.bosa.retry.attempts", "1..10"},
      {"    retry:\n      attempts: \"3\"\n", 5, "upstreams.bosa.retry.attempts", "quoted"},
      {"    retry:\n      attempts: 2.5\n", 5, "upstreams.bosa.retry.attempts", "integer"},
      {"    retry:\n      budget: 0s\n", 5, "upstreams.bosa.retry.budget", "above 0"},
      {"    retry:\n      budget: 25\n", 5, "upstreams.bosa.retry.budget", "unit"},
      {"    retry:\n      budget: 25h\n", 5, "upstreams.bosa.retry.budget", "at most 24h"},
      {"    retry:\n      retry_after_cap: 2d\n", 5, "upstreams.bosa.retry.retry_after_cap", "ms"},
      {"    retry:\n      retry_after_cap: 25h\n", 5, "upstreams.bosa.retry.retry_after_cap",
       "between 0s and 24h"},
      {"    retry:\n      backoff: 0ms\n", 5, "upstreams.bosa.retry.backoff", "above 0"},
      {"    retry:\n      backoff: 11m\n", 5, "upstreams.bosa.retry.backoff", "at most 10m"},
      {"    retry:\n      backoff: {a: 1}\n", 5, "upstreams.bosa.retry.backoff", "got a mapping"},
      {"    retry:\n      safe_actions: list_*\n", 5, "upstreams.bosa.retry.safe_actions",
       "expected a list of action globs"},
      {"    retry:\n      safe_actions:\n", 5, "upstreams.bosa.retry.safe_actions",
       "expected a list of action globs"},
      {"    retry:\n      safe_actions:\n        - list_*\n        - \"list issues\"\n", 7,
       "upstreams.bosa.retry.safe_actions[1]", "letters, digits"},
      {"    retry:\n      safe_actions: [\"a/b\"]\n", 5, "upstreams.bosa.retry.safe_actions[0]",
       "letters, digits"},
      {"    retry:\n      safe_actions: [\"\"]\n", 5, "upstreams.bosa.retry.safe_actions[0]",
       "letters, digits"},
      {"    retry:\n      safe_actions: [\"" + std::string(129, 'a') + "\"]\n", 5,
       "upstreams.bosa.retry.safe_actions[0]", "1..128"},
      {"    retry:\n      safe_actions:\n        - {a: b}\n", 6,
       "upstreams.bosa.retry.safe_actions[0]", "got a mapping"},
      {"    retry:\n      safe_actions: [[x]]\n", 5, "upstreams.bosa.retry.safe_actions[0]",
       "got a list"},
      {"    retry:\n      max_attempts: 3\n", 5, "upstreams.bosa.retry.max_attempts",
       "accepted here: attempts, budget, retry_after_cap, backoff, safe_actions"},
      {"    retry:\n      attempts: 2\n      attempts: 3\n", 6, "upstreams.bosa.retry.attempts",
       "duplicate key (first at line 5)"},
  };
  for (const Case& test : cases) {
    const std::string message = expectError(kBosaHead + test.yaml, test.line, test.path);
    CAPTURE(message);
    CHECK(message.find(test.says) != std::string::npos);
  }
  // Too many safe actions.
  std::string many = "    retry:\n      safe_actions: [";
  for (int i = 0; i < 257; ++i) many += std::string(i ? ", " : "") + "a" + std::to_string(i);
  many += "]\n";
  CHECK(expectError(kBosaHead + many, 5, "upstreams.bosa.retry.safe_actions").find("at most 256") !=
        std::string::npos);
  // The upstream's list of accepted keys names the new ones.
  CHECK(expectError(kBosaHead + "    retries: {}\n", 4, "upstreams.bosa.retries")
            .find("schema_ttl, user_token_margin, retry") != std::string::npos);
}

TEST_CASE("BOSA settings: a bad safe_actions entry is not echoed") {
  const std::string message = expectError(
      kBosaHead + "    retry:\n      safe_actions: [\"sk-live-0123456789SECRET key\"]\n", 5,
      "upstreams.bosa.retry.safe_actions[0]");
  CHECK(message.find("SECRET") == std::string::npos);
}

TEST_CASE("BOSA settings: the commented example in conf/keyway.yaml parses to the defaults") {
  // Uncomment the key lines of the bosa entry's example block and compare with the defaults, so
  // the documented defaults cannot drift from the code.
  const std::string shipped = daemon::embeddedDefaultConfig();
  std::istringstream in(shipped);
  std::string out;
  int uncommented = 0;
  const char* keys[] = {"schema_ttl:", "user_token_margin:", "retry:",      "attempts:",
                        "budget:",     "retry_after_cap:",   "backoff:",    "safe_actions:"};
  for (std::string line; std::getline(in, line);) {
    for (const char* prefix : {"    # ", "    #   "}) {
      const std::string p(prefix);
      if (line.rfind(p, 0) != 0) continue;
      const std::string rest = line.substr(p.size());
      for (const char* key : keys) {
        if (rest.rfind(key, 0) == 0) {
          line = std::string(p.size() - 2, ' ') + rest;
          ++uncommented;
          break;
        }
      }
    }
    out += line + "\n";
  }
  CHECK(uncommented == 8);
  auto result = parse(out);
  REQUIRE(result.ok());
  const core::UpstreamConfig* bosa = result->findUpstream("bosa");
  REQUIRE(bosa != nullptr);
  const core::BosaSettings defaults;
  CHECK(bosa->bosa.schema_ttl == defaults.schema_ttl);
  CHECK(bosa->bosa.user_token_margin == defaults.user_token_margin);
  CHECK(bosa->bosa.retry.attempts == defaults.retry.attempts);
  CHECK(bosa->bosa.retry.budget == defaults.retry.budget);
  CHECK(bosa->bosa.retry.retry_after_cap == defaults.retry.retry_after_cap);
  CHECK(bosa->bosa.retry.backoff == defaults.retry.backoff);
  CHECK(bosa->bosa.retry.safe_actions == defaults.retry.safe_actions);
}

// ---- tls: ca_file, client_cert, client_key ----

namespace {

// Only the PEM labels matter to the loader (libcurl reads the files at connect time), so these
// stand-ins hold no real certificate or key.
const std::string kPemCert = "-----BEGIN CERTIFICATE-----\nMIIBstandin\n-----END CERTIFICATE-----\n";
const std::string kPemKey = "-----BEGIN PRIVATE KEY-----\nMIGHstandin\n-----END PRIVATE KEY-----\n";

// An https upstream `bosa` whose `tls:` mapping starts at line 4 with `body` (indented lines).
std::string tlsConfig(const std::string& body, const std::string& base_url = "https://api.bosa.id") {
  return "upstreams:\n  bosa:\n    base_url: " + base_url + "\n    tls:\n" + body;
}

}  // namespace

TEST_CASE("tls: every key, the same file for certificate and key, and empty values") {
  TempDir dir;
  const std::string ca = dir.write("ca.pem", kPemCert + kPemCert);
  const std::string cert = dir.write("client.pem", kPemCert);
  const std::string key = dir.write("client.key", kPemKey);
  const std::string both = dir.write("both.pem", kPemCert + kPemKey);

  auto full = parse(tlsConfig("      ca_file: " + ca + "\n      client_cert: " + cert + "\n      client_key: " + key + "\n"));
  REQUIRE(full.ok());
  REQUIRE(full->upstreams[0].tls != nullptr);
  CHECK(full->upstreams[0].tls->ca_file == ca);
  CHECK(full->upstreams[0].tls->client_cert == cert);
  CHECK(full->upstreams[0].tls->client_key == key);

  auto combined = parse(tlsConfig("      client_cert: " + both + "\n      client_key: " + both + "\n"));
  REQUIRE(combined.ok());
  CHECK(combined->upstreams[0].tls->ca_file.empty());
  CHECK(combined->upstreams[0].tls->client_key == both);

  // Unset, empty mapping or empty values: no settings at all (system CAs, no client certificate).
  CHECK(parse(kMinimal)->upstreams[0].tls == nullptr);
  CHECK(parse(tlsConfig(""))->upstreams[0].tls == nullptr);
  CHECK(parse("upstreams:\n  bosa: {base_url: https://api.bosa.id, tls: {}}\n")->upstreams[0].tls == nullptr);
  CHECK(parse(tlsConfig("      ca_file: \"\"\n      client_cert:\n"))->upstreams[0].tls == nullptr);

  // Each upstream has its own settings.
  auto two = parse("upstreams:\n  a: {base_url: https://a.example, tls: {ca_file: " + ca +
                   "}}\n  b: {base_url: https://b.example}\n");
  REQUIRE(two.ok());
  CHECK(two->upstreams[0].tls->ca_file == ca);
  CHECK(two->upstreams[1].tls == nullptr);
}

TEST_CASE("tls: bad keys, types, files and combinations name the key and its line") {
  TempDir dir;
  const std::string cert = dir.write("client.pem", kPemCert);
  const std::string key = dir.write("client.key", kPemKey);
  const std::string not_pem = dir.write("notes.txt", "just text\n");
  const std::string missing = dir.path() + "/missing.pem";

  CHECK(expectError(tlsConfig("      ca_fille: " + cert + "\n"), 5, "upstreams.bosa.tls.ca_fille")
            .find("unknown key (accepted here: ca_file, client_cert, client_key)") != std::string::npos);
  CHECK(expectError("upstreams:\n  bosa:\n    base_url: https://api.bosa.id\n    tls: [a]\n", 4,
                    "upstreams.bosa.tls")
            .find("expected a mapping") != std::string::npos);
  CHECK(expectError(tlsConfig("      ca_file: [a]\n"), 5, "upstreams.bosa.tls.ca_file").find("got a list") !=
        std::string::npos);

  const std::string no_file = expectError(tlsConfig("      ca_file: " + missing + "\n"), 5, "upstreams.bosa.tls.ca_file");
  CHECK(no_file.find("No such file") != std::string::npos);
  CHECK(no_file.find(missing) == std::string::npos);  // values are not echoed
  CHECK(expectError(tlsConfig("\n      client_cert: " + dir.path() + "\n      client_key: " + key + "\n"), 6,
                    "upstreams.bosa.tls.client_cert")
            .find("not a regular file") != std::string::npos);
  CHECK(expectError(tlsConfig("      ca_file: " + not_pem + "\n"), 5, "upstreams.bosa.tls.ca_file")
            .find("no PEM certificate") != std::string::npos);
  CHECK(expectError(tlsConfig("      ca_file: " + key + "\n"), 5, "upstreams.bosa.tls.ca_file")
            .find("no PEM certificate") != std::string::npos);
  CHECK(expectError(tlsConfig("      client_cert: " + cert + "\n      client_key: " + cert + "\n"), 6,
                    "upstreams.bosa.tls.client_key")
            .find("no PEM private key") != std::string::npos);
  if (::geteuid() != 0) {  // root reads any file
    const std::string locked = dir.write("locked.pem", kPemCert);
    REQUIRE(::chmod(locked.c_str(), 0) == 0);
    CHECK(expectError(tlsConfig("      ca_file: " + locked + "\n"), 5, "upstreams.bosa.tls.ca_file")
              .find("Permission denied") != std::string::npos);
  }

  // Half a client pair is reported at the `tls:` key, naming the missing half.
  CHECK(expectError(tlsConfig("      client_cert: " + cert + "\n"), 4, "upstreams.bosa.tls.client_key")
            .find("required with client_cert") != std::string::npos);
  CHECK(expectError(tlsConfig("      client_key: " + key + "\n"), 4, "upstreams.bosa.tls.client_cert")
            .find("required with client_key") != std::string::npos);

  // tls on http:// would be silently unused: an error, wherever base_url stands in the entry.
  CHECK(expectError(tlsConfig("      ca_file: " + cert + "\n", "http://127.0.0.1:9"), 4, "upstreams.bosa.tls")
            .find("https://") != std::string::npos);
  expectError("upstreams:\n  bosa:\n    tls: {ca_file: " + cert + "}\n    base_url: http://127.0.0.1:9\n", 3,
              "upstreams.bosa.tls");
}

TEST_CASE("tls: the key file's content never reaches an error message") {
  TempDir dir;
  const std::string cert = dir.write("client.pem", kPemCert);
  // A key file that is not PEM (a raw secret pasted into a file): refused, never quoted.
  const std::string raw = dir.write("raw.key", "sk-live-SECRETKEYMATERIAL-0123456789\n");
  const std::string message =
      expectError(tlsConfig("      client_cert: " + cert + "\n      client_key: " + raw + "\n"), 6,
                  "upstreams.bosa.tls.client_key");
  CHECK(message.find("SECRETKEYMATERIAL") == std::string::npos);
  CHECK(message.find("no PEM private key") != std::string::npos);
}

TEST_CASE("fleet section: endpoints, prefix, timeouts, password file, errors with key and line") {
  using keyway::testing::TempDir;
  using keyway::testing::writeFile;
  TempDir dir;
  writeFile(dir / "etcd.password", "pw\n", 0600);
  writeFile(dir / "open.password", "pw\n", 0644);
  const std::string ok = "fleet:\n  etcd:\n    endpoints: [http://127.0.0.1:2379, https://e2:2379]\n"
                         "    prefix: /kw/prod/\n    dial_timeout: 500ms\n    request_timeout: 3s\n"
                         "    username: keyway\n    password_file: " + (dir / "etcd.password") + "\n" + kMinimal;
  auto cfg = parse(ok);
  REQUIRE(cfg.ok());
  REQUIRE(cfg->fleet.has_value());
  CHECK(cfg->fleet->endpoints == std::vector<std::string>{"http://127.0.0.1:2379", "https://e2:2379"});
  CHECK(cfg->fleet->prefix == "/kw/prod/");
  CHECK(cfg->fleet->dial_timeout == milliseconds(500));
  CHECK(cfg->fleet->request_timeout == milliseconds(3000));
  CHECK(cfg->fleet->username == "keyway");
  // Absent: a single host.
  REQUIRE(parse(kMinimal).ok());
  CHECK_FALSE(parse(kMinimal)->fleet.has_value());
  // Defaults.
  auto d = parse("fleet:\n  etcd:\n    endpoints: [http://127.0.0.1:2379]\n" + kMinimal);
  REQUIRE(d.ok());
  CHECK(d->fleet->prefix == "/keyway/");
  CHECK(d->fleet->dial_timeout == milliseconds(2000));
  CHECK(d->fleet->request_timeout == milliseconds(5000));
  // A bare password file name: the systemd credential, else next to the configuration.
  auto bare = parse("fleet:\n  etcd:\n    endpoints: [http://e:2379]\n    username: u\n    password_file: etcd.password\n" +
                        kMinimal,
                    envOf({{"CREDENTIALS_DIRECTORY", dir.path()}}));
  REQUIRE(bare.ok());
  CHECK(bare->fleet->password_file == dir / "etcd.password");
  auto beside = daemon::parseConfig(
      "fleet:\n  etcd:\n    endpoints: [http://e:2379]\n    username: u\n    password_file: etcd.password\n" + kMinimal,
      dir / "keyway.yaml", kNoEnv);
  REQUIRE(beside.ok());
  CHECK(beside->fleet->password_file == dir / "etcd.password");

  expectError("fleet:\n  etcd:\n    prefix: /k/\n" + kMinimal, 2, "fleet.etcd");
  expectError("fleet:\n  etcd:\n    endpoints: [etcd1:2379]\n" + kMinimal, 3, "fleet.etcd.endpoints");
  expectError("fleet:\n  etcd:\n    endpoints: []\n" + kMinimal, 3, "fleet.etcd.endpoints");
  expectError("fleet:\n  etcd:\n    endpoints: [http://e:1/path]\n" + kMinimal, 3, "fleet.etcd.endpoints");
  expectError("fleet:\n  etcd:\n    endpoints: [http://e:1]\n    prefix: keyway\n" + kMinimal, 4, "fleet.etcd.prefix");
  expectError("fleet:\n  etcd:\n    endpoints: [http://e:1]\n    dial_timeout: 0s\n" + kMinimal, 4,
              "fleet.etcd.dial_timeout");
  const std::string inline_pw =
      expectError("fleet:\n  etcd:\n    endpoints: [http://e:1]\n    password: hunter2\n" + kMinimal, 4,
                  "fleet.etcd.password");
  CHECK(inline_pw.find("hunter2") == std::string::npos);
  expectError("fleet:\n  etcd:\n    endpoints: [http://e:1]\n    username: u\n" + kMinimal, 4,
              "fleet.etcd.password_file");
  expectError("fleet:\n  etcd:\n    endpoints: [http://e:1]\n    username: u\n    password_file: " +
                  (dir / "open.password") + "\n" + kMinimal,
              5, "fleet.etcd.password_file");
  expectError("fleet:\n  etcd:\n    endpoints: [http://e:1]\n    username: u\n    password_file: " +
                  (dir / "missing") + "\n" + kMinimal,
              5, "fleet.etcd.password_file");
  expectError("fleet:\n  etcd:\n    endpoints: [http://e:1]\n    colour: blue\n" + kMinimal, 4, "fleet.etcd.colour");
  expectError("fleet:\n  zookeeper: {}\n" + kMinimal, 2, "fleet.zookeeper");
}
