// Loads keyway's YAML configuration with yaml-cpp: generic key checking (unknown and duplicate
// keys, types, lines), then one small function per section.
#include "daemon/yaml_config_loader.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/depthguard.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <sstream>
#include <system_error>
#include <utility>
#include <vector>

#include "core/config_parse.hpp"
#include "core/secret.hpp"
#include "daemon/embedded_default.hpp"
#include "daemon/redis_client.hpp"
#include "daemon/yaml_fields.hpp"

namespace keyway::daemon {

namespace {

using core::Error;
using core::ErrorCode;
using core::Status;
using std::chrono::milliseconds;
namespace limits = core::config_limits;

constexpr const char* kEmbeddedSource = "<embedded conf/keyway.yaml>";

using yaml_fields::check;
using yaml_fields::Ctx;
using yaml_fields::describe;
using yaml_fields::Entry;
using yaml_fields::Field;
using yaml_fields::FieldParser;
using yaml_fields::formatDuration;
using yaml_fields::formatSize;
using yaml_fields::parseMap;
using yaml_fields::readBool;
using yaml_fields::readCount;
using yaml_fields::readDuration;
using yaml_fields::readListen;
using yaml_fields::readPlainScalar;
using yaml_fields::readScalar;
using yaml_fields::readSize;
using yaml_fields::readString;
using yaml_fields::walkMap;
using yaml_fields::lineOf;

// Sees the parse events of a document only to note where a second one starts.
class DocumentCounter final : public YAML::EventHandler {
 public:
  // The second document is located at its first node (where LoadAll's node would be), else at
  // its start.
  void OnDocumentStart(const YAML::Mark& mark) override {
    if (++documents == 2) second_line = lineAt(mark);
  }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark& m, YAML::anchor_t) override { node(m); }
  void OnAlias(const YAML::Mark& m, YAML::anchor_t) override { node(m); }
  void OnScalar(const YAML::Mark& m, const std::string&, YAML::anchor_t, const std::string&) override { node(m); }
  void OnSequenceStart(const YAML::Mark& m, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {
    node(m);
  }
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark& m, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {
    node(m);
  }
  void OnMapEnd() override {}
  int documents = 0;
  int second_line = 1;

 private:
  static int lineAt(const YAML::Mark& m) { return m.is_null() ? 1 : m.line + 1; }
  void node(const YAML::Mark& m) {
    if (documents == 2 && !located_) {
      located_ = true;
      if (!m.is_null()) second_line = lineAt(m);
    }
  }
  bool located_ = false;
};

// ---- sections ----

// A bound listener, remembered to check that no two of them collide.
struct Listener {
  std::string path;
  int line;  // 0 = not in the file (the default)
  core::ListenAddress address;
};

struct State {
  core::Config config;
  std::string state_dir;        // as written ("" = default)
  std::string master_key_file;  // as written ("" = default)
  bool have_upstreams = false;
  int listen_line = 0;
  std::vector<Listener> compat_listeners;
  // upstreams.<name>.max_connections as written, checked against server.threads once both
  // sections are read.
  struct Placed {
    std::string path;
    int line = 0;
    std::string upstream;
  };
  std::vector<Placed> max_connections_lines;
};

constexpr milliseconds kOneMs{1};
constexpr bool kNullIsEmpty = true;  // `section:` with every sub-key commented out = defaults

// ---- one function per section: its fields are its allowed keys ----

Status parseServer(const Ctx& ctx, const Entry& section, core::ServerConfig& out) {
  const std::vector<Field> fields = {
      {"threads",
       [&](const Entry& e) -> Status {
         return readCount(ctx, e, limits::kMinThreads, limits::kMaxThreads, out.threads);
       }},
      {"listen_backlog",
       [&](const Entry& e) -> Status { return readCount(ctx, e, 16, 65535, out.listen_backlog); }},
      {"shutdown_grace",
       [&](const Entry& e) -> Status {
         return readDuration(ctx, e, milliseconds(0), limits::kMaxShutdownGrace,
                             out.shutdown_grace);
       }},
  };
  return parseMap(ctx, section, kNullIsEmpty, fields);
}

Status parseLimits(const Ctx& ctx, const Entry& section, core::LimitsConfig& out) {
  const std::vector<Field> fields = {
      {"max_body_bytes",
       [&](const Entry& e) -> Status {
         return readSize(ctx, e, 1, limits::kMaxBodyBytes, out.max_body_bytes);
       }},
      {"max_header_bytes",
       [&](const Entry& e) -> Status {
         return readSize(ctx, e, limits::kMinHeaderBytes, limits::kMaxHeaderBytes,
                         out.max_header_bytes);
       }},
      {"max_headers",
       [&](const Entry& e) -> Status {
         return readCount(ctx, e, 1, limits::kMaxHeaders, out.max_headers);
       }},
      {"header_timeout",
       [&](const Entry& e) -> Status {
         return readDuration(ctx, e, kOneMs, limits::kMaxTimeout, out.header_timeout);
       }},
      {"body_timeout",
       [&](const Entry& e) -> Status {
         return readDuration(ctx, e, kOneMs, limits::kMaxTimeout, out.body_timeout);
       }},
      {"idle_timeout",
       [&](const Entry& e) -> Status {
         return readDuration(ctx, e, kOneMs, limits::kMaxTimeout, out.idle_timeout);
       }},
      {"max_connections",
       [&](const Entry& e) -> Status {
         return readCount(ctx, e, 1, limits::kMaxConnections, out.max_connections);
       }},
  };
  return parseMap(ctx, section, kNullIsEmpty, fields);
}

Status parseLog(const Ctx& ctx, const Entry& section, core::LogConfig& out) {
  const std::vector<Field> fields = {
      {"level",
       [&](const Entry& e) -> Status {
         if (auto s = readScalar(ctx, e, "one of debug, info, warn, error", out.level); !s) {
           return s;
         }
         return check(ctx, e, core::checkLogLevel(out.level));
       }},
      {"access_log", [&](const Entry& e) -> Status { return readBool(ctx, e, out.access_log); }},
      {"audit",
       [&](const Entry& e) -> Status {
         if (auto s = readScalar(ctx, e, "one of summary, every", out.audit); !s) return s;
         return check(ctx, e, core::checkLogAudit(out.audit));
       }},
  };
  return parseMap(ctx, section, kNullIsEmpty, fields);
}

// `cache:` (docs/cache.md). Rules given here are tried before the built-in defaults (first match
// wins), so a rule can tighten, loosen or disable caching for some paths and the rest keeps the
// defaults; `default_rules: false` drops the defaults entirely.
Status parseCacheRule(const Ctx& ctx, const Entry& section, core::CacheRule& out) {
  milliseconds ttl = out.ttl, swr = out.stale_while_revalidate, sie = out.stale_if_error;
  const std::vector<Field> fields = {
      {"upstream", [&](const Entry& e) -> Status { return readScalar(ctx, e, "an upstream name or glob", out.upstream); }},
      {"methods",
       [&](const Entry& e) -> Status {
         if (!e.value.IsSequence()) return ctx.error(e, "expected a list of methods, got " + describe(e.value));
         out.methods.clear();
         for (const auto& m : e.value) {
           if (!m.IsScalar()) return ctx.error(e, "expected a list of methods");
           out.methods.push_back(m.Scalar());
         }
         return core::okStatus();
       }},
      {"path", [&](const Entry& e) -> Status { return readScalar(ctx, e, "a path glob", out.path); }},
      {"action", [&](const Entry& e) -> Status { return readScalar(ctx, e, "an action glob", out.action); }},
      {"ttl", [&](const Entry& e) -> Status { return readDuration(ctx, e, milliseconds(0), limits::kMaxTimeout, ttl); }},
      {"stale_while_revalidate",
       [&](const Entry& e) -> Status { return readDuration(ctx, e, milliseconds(0), limits::kMaxTimeout, swr); }},
      {"stale_if_error",
       [&](const Entry& e) -> Status { return readDuration(ctx, e, milliseconds(0), limits::kMaxTimeout, sie); }},
      {"ignore_upstream_cache_control",
       [&](const Entry& e) -> Status { return readBool(ctx, e, out.ignore_upstream_cache_control); }},
      {"enabled", [&](const Entry& e) -> Status { return readBool(ctx, e, out.enabled); }},
  };
  if (auto st = parseMap(ctx, section, !kNullIsEmpty, fields); !st) return st;
  out.ttl = std::chrono::duration_cast<std::chrono::seconds>(ttl);
  out.stale_while_revalidate = std::chrono::duration_cast<std::chrono::seconds>(swr);
  out.stale_if_error = std::chrono::duration_cast<std::chrono::seconds>(sie);
  return core::okStatus();
}

Status parsePasswordFile(const Ctx& ctx, const Entry& e, const EnvLookup& env, std::string& out);

// `password:` beside a password_file key (etcd, Redis): refused, so that the secret never sits in
// the configuration.
Status refuseInlinePassword(const Ctx& ctx, const Entry& e) {
  return ctx.error(e, "a password is never written in the configuration: put it in a file (mode 0600) "
                      "and name it with password_file");
}

Status parseSharedRedis(const Ctx& ctx, const Entry& section, const EnvLookup& env, core::SharedCacheConfig& out) {
  int address_line = 0;
  const std::vector<Field> fields = {
      {"address",
       [&](const Entry& e) -> Status {
         address_line = e.key_line;
         if (auto s = readScalar(ctx, e, "host:port or a unix socket path", out.address); !s) return s;
         if (auto where = parseRedisAddress(out.address); !where) {
           return ctx.error(e, "'" + out.address + "' " + where.error().message);
         }
         return core::okStatus();
       }},
      {"password", [&](const Entry& e) -> Status { return refuseInlinePassword(ctx, e); }},
      {"password_file", [&](const Entry& e) -> Status { return parsePasswordFile(ctx, e, env, out.password_file); }},
      {"key_prefix",
       [&](const Entry& e) -> Status {
         if (auto s = readScalar(ctx, e, "a key prefix such as keyway:", out.key_prefix); !s) return s;
         if (out.key_prefix.empty() || out.key_prefix.size() > 64 ||
             out.key_prefix.find_first_of(" \t\r\n") != std::string::npos) {
           return ctx.error(e, "must be 1 to 64 characters without spaces, e.g. keyway: or keyway:prod:");
         }
         return core::okStatus();
       }},
      {"timeout",
       [&](const Entry& e) -> Status { return readDuration(ctx, e, milliseconds(1), milliseconds(10000), out.timeout); }},
      {"max_connections",
       [&](const Entry& e) -> Status { return readCount(ctx, e, 1, 64, out.max_connections); }},
      {"tls",
       [&](const Entry& e) -> Status {
         // hiredis 0.14, the client Debian 12 ships, has no TLS.
         return ctx.error(e, "TLS to Redis is not supported (hiredis 0.14 has none): use a unix socket, or a "
                             "local TLS tunnel (stunnel) and point address at its local end");
       }},
  };
  if (auto st = parseMap(ctx, section, !kNullIsEmpty, fields); !st) return st;
  if (address_line == 0) return ctx.error(section, "address: required, e.g. 127.0.0.1:6379 or /run/redis/redis.sock");
  return core::okStatus();
}

// A section whose one member `name` is required (`fleet: {etcd: ...}`, `cache.shared:
// {redis: ...}`); `out` is set only once that member parsed.
template <class T, class Parse>
Status parseSoleMember(const Ctx& ctx, const Entry& section, const char* name, const char* what, Parse parse,
                       std::optional<T>& out) {
  T value;
  bool have = false;
  const std::vector<Field> fields = {{name, [&](const Entry& e) -> Status {
                                        have = true;
                                        return parse(e, value);
                                      }}};
  if (auto st = parseMap(ctx, section, !kNullIsEmpty, fields); !st) return st;
  if (!have) return ctx.error(section, std::string(name) + ": required (" + what + ")");
  out = std::move(value);
  return core::okStatus();
}

Status parseShared(const Ctx& ctx, const Entry& section, const EnvLookup& env,
                   std::optional<core::SharedCacheConfig>& out) {
  return parseSoleMember(
      ctx, section, "redis", "the shared cache's server",
      [&](const Entry& e, core::SharedCacheConfig& shared) { return parseSharedRedis(ctx, e, env, shared); }, out);
}

Status parseCache(const Ctx& ctx, const Entry& section, const EnvLookup& env, core::CachePolicyConfig& out) {
  bool default_rules = true;
  std::vector<core::CacheRule> rules;
  const std::vector<Field> fields = {
      {"enabled", [&](const Entry& e) -> Status { return readBool(ctx, e, out.enabled); }},
      {"dir",
       [&](const Entry& e) -> Status {
         if (auto st = readString(ctx, e, true, out.dir); !st) return st;
         return out.dir.empty() ? core::okStatus() : check(ctx, e, core::checkPath(out.dir));
       }},
      {"max_bytes",
       [&](const Entry& e) -> Status { return readSize(ctx, e, 1u << 20, uint64_t{64} << 30, out.max_bytes); }},
      {"max_entry_bytes",
       [&](const Entry& e) -> Status { return readSize(ctx, e, 1, uint64_t{1} << 30, out.max_entry_bytes); }},
      {"max_background_refreshes",
       [&](const Entry& e) -> Status { return readCount(ctx, e, 1, 4096, out.max_background_refreshes); }},
      {"default_rules", [&](const Entry& e) -> Status { return readBool(ctx, e, default_rules); }},
      {"shared", [&](const Entry& e) -> Status { return parseShared(ctx, e, env, out.shared); }},
      {"rules",
       [&](const Entry& e) -> Status {
         if (!e.value.IsSequence()) return ctx.error(e, "expected a list of rules, got " + describe(e.value));
         for (size_t i = 0; i < e.value.size(); ++i) {
           Entry item;
           item.value = e.value[i];
           item.path = e.path + "[" + std::to_string(i) + "]";
           item.key_line = item.value_line = lineOf(item.value, e.value_line);
           core::CacheRule rule;
           if (auto st = parseCacheRule(ctx, item, rule); !st) return st;
           rules.push_back(std::move(rule));
         }
         return core::okStatus();
       }},
  };
  if (auto st = parseMap(ctx, section, kNullIsEmpty, fields); !st) return st;
  if (default_rules) {
    for (auto& r : core::defaultCachePolicy().rules) rules.push_back(std::move(r));
  }
  out.rules = std::move(rules);
  if (auto st = core::validateCachePolicy(out); !st) return ctx.error(section, st.error().message);
  return core::okStatus();
}

// What an upstream's `credential:` said; unset fields come from the protocol's default.
struct CredentialOverride {
  std::optional<std::string> header, prefix, secret;
  int line = 0;         // of the `credential:` key
  int header_line = 0;  // of header:, when given
};

Status parseCredential(const Ctx& ctx, const Entry& section, CredentialOverride& out) {
  out.line = section.key_line;
  const std::vector<Field> fields = {
      {"header",
       [&](const Entry& e) -> Status {
         std::string value;
         if (auto s = readString(ctx, e, false, value); !s) return s;
         if (!value.empty()) {
           if (auto s = check(ctx, e, core::checkCredentialHeader(value)); !s) return s;
         }
         out.header_line = e.value_line;
         out.header = std::move(value);
         return core::okStatus();
       }},
      {"prefix",
       [&](const Entry& e) -> Status {
         std::string value;
         if (auto s = readString(ctx, e, true, value); !s) return s;
         if (auto s = check(ctx, e, core::checkHeaderValuePrefix(value)); !s) return s;
         out.prefix = std::move(value);
         return core::okStatus();
       }},
      {"secret",
       [&](const Entry& e) -> Status {
         std::string value;
         if (auto s = readString(ctx, e, false, value); !s) return s;
         if (!value.empty()) {
           if (auto s = check(ctx, e, core::checkSecretName(value)); !s) return s;
         }
         out.secret = std::move(value);
         return core::okStatus();
       }},
  };
  return parseMap(ctx, section, kNullIsEmpty, fields);
}

// ---- BOSA settings (core::BosaSettings): accepted on any upstream, used for protocol bosa ----

constexpr milliseconds kMinSchemaTtl{std::chrono::seconds(1)};
constexpr milliseconds kMaxSchemaTtl{std::chrono::hours(24 * 30)};
constexpr milliseconds kMaxTokenMargin{std::chrono::hours(24)};
constexpr milliseconds kMaxBackoff{std::chrono::minutes(10)};
constexpr uint64_t kMaxRetryAttempts = 10;
constexpr size_t kMaxSafeActions = 256;
constexpr size_t kMaxActionGlobBytes = 128;

bool isActionGlob(const std::string& text) {
  if (text.empty() || text.size() > kMaxActionGlobBytes) return false;
  return std::all_of(text.begin(), text.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-' || c == '*';
  });
}

// `safe_actions: [list_*, get_*]`: globs over BOSA action names. An empty list is allowed (no
// action is retried on 5xx). Items are checked one by one so an error points at its own line.
Status readSafeActions(const Ctx& ctx, const Entry& e, std::vector<std::string>& out) {
  if (!e.value.IsSequence()) {
    return ctx.error(e, "expected a list of action globs (e.g. [list_*, get_*]), got " +
                            describe(e.value));
  }
  if (e.value.size() > kMaxSafeActions) {
    return ctx.error(e, "at most " + std::to_string(kMaxSafeActions) + " entries");
  }
  std::vector<std::string> globs;
  for (size_t i = 0; i < e.value.size(); ++i) {
    Entry item;
    item.value = e.value[i];
    item.path = e.path + "[" + std::to_string(i) + "]";
    item.key_line = item.value_line = lineOf(item.value, e.value_line);
    std::string text;
    if (auto s = readScalar(ctx, item, "an action glob (e.g. list_*)", text); !s) return s;
    // The value is not echoed: whatever was pasted here stays out of logs.
    if (!isActionGlob(text)) {
      return ctx.error(item, "must be an action name glob of 1.." +
                                 std::to_string(kMaxActionGlobBytes) +
                                 " letters, digits, '_', '-' and '*' (e.g. list_*)");
    }
    globs.push_back(std::move(text));
  }
  out = std::move(globs);
  return core::okStatus();
}

Status parseRetry(const Ctx& ctx, const Entry& section, core::RetryConfig& out) {
  const std::vector<Field> fields = {
      {"attempts",
       [&](const Entry& e) -> Status {
         size_t attempts = 0;
         if (auto s = readCount(ctx, e, 1, kMaxRetryAttempts, attempts); !s) return s;
         out.attempts = static_cast<int>(attempts);
         return core::okStatus();
       }},
      {"budget",
       [&](const Entry& e) -> Status {
         return readDuration(ctx, e, kOneMs, limits::kMaxTimeout, out.budget);
       }},
      {"retry_after_cap",
       [&](const Entry& e) -> Status {
         return readDuration(ctx, e, milliseconds(0), limits::kMaxTimeout, out.retry_after_cap);
       }},
      {"backoff",
       [&](const Entry& e) -> Status { return readDuration(ctx, e, kOneMs, kMaxBackoff, out.backoff); }},
      {"safe_actions",
       [&](const Entry& e) -> Status { return readSafeActions(ctx, e, out.safe_actions); }},
  };
  return parseMap(ctx, section, kNullIsEmpty, fields);
}

// ---- tls: (core::UpstreamTls) ----

// Closes a file descriptor on scope exit.
class FileDescriptor {
 public:
  explicit FileDescriptor(int fd) : fd_(fd) {}
  ~FileDescriptor() {
    if (fd_ >= 0) ::close(fd_);
  }
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

// Larger than any sane CA bundle (Debian's is about 220 KB).
constexpr size_t kMaxPemFileBytes = 8u << 20;

enum class PemKind { kCertificates, kPrivateKey };

// Checks now, at load and under --check-config, what libcurl would otherwise find only at the
// first connection: the file exists, is readable and holds what its key says (a PEM certificate,
// or a PEM private key). The messages never quote the path or the content (a private key is a
// secret); the key and line say which file.
Status checkPemFile(const Ctx& ctx, const Entry& e, const std::string& path, PemKind kind) {
  auto errnoText = [] { return std::error_code(errno, std::generic_category()).message(); };
  // O_NONBLOCK: a FIFO named by mistake must not hang the loader.
  FileDescriptor fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
  if (fd.get() < 0) return ctx.error(e, "cannot open the file (" + errnoText() + ")");
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return ctx.error(e, "cannot stat the file (" + errnoText() + ")");
  if (!S_ISREG(st.st_mode)) return ctx.error(e, "not a regular file");
  if (st.st_size > static_cast<off_t>(kMaxPemFileBytes)) return ctx.error(e, "the file is larger than 8 MiB");
  std::string text;
  text.reserve(static_cast<size_t>(st.st_size));
  char buffer[16384];
  Status status = core::okStatus();
  for (;;) {
    const ssize_t n = ::read(fd.get(), buffer, sizeof buffer);
    if (n < 0) {
      if (errno == EINTR) continue;
      status = ctx.error(e, "cannot read the file (" + errnoText() + ")");
      break;
    }
    if (n == 0) break;
    if (text.size() + static_cast<size_t>(n) > kMaxPemFileBytes) {
      status = ctx.error(e, "the file is larger than 8 MiB");
      break;
    }
    text.append(buffer, static_cast<size_t>(n));
  }
  if (status) {
    if (kind == PemKind::kCertificates && text.find("-----BEGIN CERTIFICATE-----") == std::string::npos) {
      status = ctx.error(e, "holds no PEM certificate (-----BEGIN CERTIFICATE-----)");
    }
    // "PRIVATE KEY-----" ends every PEM private key label: PKCS#8, RSA, EC, ENCRYPTED.
    if (kind == PemKind::kPrivateKey && (text.find("-----BEGIN ") == std::string::npos ||
                                         text.find("PRIVATE KEY-----") == std::string::npos)) {
      status = ctx.error(e, "holds no PEM private key (-----BEGIN ... PRIVATE KEY-----)");
    }
  }
  // The key file's bytes (and a certificate file that also holds the key) leave no copy behind.
  core::secureWipe(text.data(), text.size());
  core::secureWipe(buffer, sizeof buffer);
  return status;
}

// `tls: { ca_file, client_cert, client_key }`. An empty value, or an empty mapping, leaves the
// setting unset; whether the whole is consistent (https://, cert with key) is checked once the
// upstream's entry is complete.
Status parseTls(const Ctx& ctx, const Entry& section, core::UpstreamTls& out) {
  auto path = [&](std::string& target, PemKind kind) {
    return [&ctx, &target, kind](const Entry& e) -> Status {
      if (auto s = readString(ctx, e, kNullIsEmpty, target); !s) return s;
      if (target.empty()) return core::okStatus();
      if (auto s = check(ctx, e, core::checkPath(target)); !s) return s;
      return checkPemFile(ctx, e, target, kind);
    };
  };
  const std::vector<Field> fields = {
      {"ca_file", path(out.ca_file, PemKind::kCertificates)},
      {"client_cert", path(out.client_cert, PemKind::kCertificates)},
      {"client_key", path(out.client_key, PemKind::kPrivateKey)},
  };
  return parseMap(ctx, section, kNullIsEmpty, fields);
}

// `fleet: { etcd: {...} }` (docs/fleet.md). The password is named by a file, never written here.
// A password file: a bare file name is a systemd credential (LoadCredential=NAME:...) for
// keywayd, and the file next to the configuration for keywayctl (docs/fleet.md). Checked now,
// like the TLS files, so that --check-config finds it; read when used.
Status parsePasswordFile(const Ctx& ctx, const Entry& e, const EnvLookup& env, std::string& out) {
  if (auto s = readString(ctx, e, false, out); !s) return s;
  if (auto s = check(ctx, e, core::checkPath(out)); !s) return s;
  if (out.find('/') == std::string::npos) {
    std::string dir;
    if (auto creds = env ? env("CREDENTIALS_DIRECTORY") : std::nullopt; creds && !creds->empty()) {
      dir = *creds;
    } else if (const size_t slash = ctx.source().rfind('/'); slash != std::string::npos) {
      dir = ctx.source().substr(0, slash);
    } else {
      dir = ".";
    }
    out = dir + "/" + out;
  }
  struct stat st {};
  if (::stat(out.c_str(), &st) != 0) {
    return ctx.error(e, out + ": " + std::error_code(errno, std::generic_category()).message());
  }
  if (!S_ISREG(st.st_mode)) return ctx.error(e, out + ": not a regular file");
  if ((st.st_mode & S_IROTH) != 0) {
    return ctx.error(e, out + " can be read by every user: chmod o-r it (0600 or 0640)");
  }
  return core::okStatus();
}

Status parseFleetEtcd(const Ctx& ctx, const Entry& section, const EnvLookup& env, core::FleetConfig& out) {
  int endpoints_line = section.key_line;
  int username_line = 0;
  const std::vector<Field> fields = {
      {"endpoints",
       [&](const Entry& e) -> Status {
         endpoints_line = e.key_line;
         if (!e.value.IsSequence() || e.value.size() == 0) {
           return ctx.error(e, "expected a list of etcd client URLs (http://host:port), got " + describe(e.value));
         }
         for (const auto& item : e.value) {
           if (!item.IsScalar()) return ctx.error(e, "expected a list of URLs");
           const std::string url = item.Scalar();
           const bool http = url.rfind("http://", 0) == 0, https = url.rfind("https://", 0) == 0;
           const std::string rest = url.substr(http ? 7 : https ? 8 : 0);
           if ((!http && !https) || rest.empty() || rest.find_first_of("/?#@ ") != std::string::npos ||
               rest.find(':') == std::string::npos) {
             return ctx.error(lineOf(item, e.value_line), e.path,
                              "'" + url + "' is not an etcd client URL: expected http://host:port or https://host:port");
           }
           out.endpoints.push_back(url);
         }
         return core::okStatus();
       }},
      {"prefix",
       [&](const Entry& e) -> Status {
         if (auto s = readScalar(ctx, e, "a key prefix such as /keyway/", out.prefix); !s) return s;
         if (out.prefix.size() < 2 || out.prefix.front() != '/' || out.prefix.back() != '/' ||
             out.prefix.find_first_of(" \t\r\n") != std::string::npos) {
           return ctx.error(e, "must start and end with '/' and hold no spaces, e.g. /keyway/ or /keyway/prod/");
         }
         return core::okStatus();
       }},
      {"dial_timeout",
       [&](const Entry& e) -> Status { return readDuration(ctx, e, milliseconds(10), milliseconds(60000), out.dial_timeout); }},
      {"request_timeout",
       [&](const Entry& e) -> Status {
         return readDuration(ctx, e, milliseconds(100), milliseconds(300000), out.request_timeout);
       }},
      {"username",
       [&](const Entry& e) -> Status {
         username_line = e.key_line;
         return readScalar(ctx, e, "an etcd user name", out.username);
       }},
      {"password", [&](const Entry& e) -> Status { return refuseInlinePassword(ctx, e); }},
      {"password_file",
       [&](const Entry& e) -> Status { return parsePasswordFile(ctx, e, env, out.password_file); }},
      {"tls", [&](const Entry& e) -> Status { return parseTls(ctx, e, out.tls); }},
  };
  if (auto st = parseMap(ctx, section, !kNullIsEmpty, fields); !st) return st;
  if (out.endpoints.empty()) return ctx.error(endpoints_line, section.path, "endpoints: required, e.g. [http://127.0.0.1:2379]");
  if (!out.username.empty() && out.password_file.empty()) {
    return ctx.error(username_line, section.path + ".password_file", "required with username");
  }
  if (!out.tls.client_cert.empty() != !out.tls.client_key.empty()) {
    return ctx.error(section, "tls: client_cert and client_key go together");
  }
  return core::okStatus();
}

Status parseFleet(const Ctx& ctx, const Entry& section, const EnvLookup& env, std::optional<core::FleetConfig>& out) {
  return parseSoleMember(
      ctx, section, "etcd", "the fleet's store of record",
      [&](const Entry& e, core::FleetConfig& fleet) { return parseFleetEtcd(ctx, e, env, fleet); }, out);
}

Status parseUpstream(const Ctx& ctx, const Entry& entry, State& state) {
  core::UpstreamConfig up;
  up.name = entry.key.Scalar();
  if (auto s = core::checkUpstreamName(up.name); !s) {
    return ctx.error(entry.key_line, entry.path, s.error().message);
  }
  if (entry.value.IsNull()) {
    return ctx.error(entry,
                     "expected a mapping with at least base_url, e.g. "
                     "{ base_url: https://api.example.com }");
  }
  bool have_base_url = false;
  std::optional<core::Protocol> protocol;
  CredentialOverride credential;
  int compat_line = 0;
  core::UpstreamTls tls;
  std::map<std::string, int> tls_lines;  // "tls", "tls.ca_file", ... -> line, for later checks
  const std::vector<Field> fields = {
      {"base_url",
       [&](const Entry& e) -> Status {
         std::string text;
         if (auto s = readScalar(ctx, e, "an http:// or https:// URL", text); !s) return s;
         auto url = core::normaliseBaseUrl(text);
         if (!url) return ctx.error(e, url.error().message);
         up.base_url = std::move(url).value();
         have_base_url = true;
         return core::okStatus();
       }},
      {"compat_listen",
       [&](const Entry& e) -> Status {
         compat_line = e.value_line;
         return readListen(ctx, e, true, up.compat_listen);
       }},
      {"protocol",
       [&](const Entry& e) -> Status {
         std::string text;
         if (auto s = readScalar(ctx, e, "one of bundleup, bosa, bundleiq, generic", text); !s) {
           return s;
         }
         auto parsed = core::parseProtocol(text);
         if (!parsed) return ctx.error(e, parsed.error().message);
         protocol = *parsed;
         return core::okStatus();
       }},
      {"credential", [&](const Entry& e) -> Status { return parseCredential(ctx, e, credential); }},
      {"connect_timeout",
       [&](const Entry& e) -> Status {
         return readDuration(ctx, e, kOneMs, limits::kMaxConnectTimeout, up.connect_timeout);
       }},
      {"timeout",
       [&](const Entry& e) -> Status {
         return readDuration(ctx, e, kOneMs, limits::kMaxTimeout, up.timeout);
       }},
      {"max_response_bytes",
       [&](const Entry& e) -> Status {
         return readSize(ctx, e, 1, limits::kMaxResponseBytes, up.max_response_bytes);
       }},
      {"max_connections",
       [&](const Entry& e) -> Status {
         state.max_connections_lines.push_back({e.path, e.value_line, up.name});
         return readCount(ctx, e, 1, limits::kMaxUpstreamConnections, up.max_connections);
       }},
      // BOSA settings: accepted on every upstream (a renamed mount may set protocol later in
      // the entry), used only when the protocol is bosa.
      {"schema_ttl",
       [&](const Entry& e) -> Status {
         return readDuration(ctx, e, kMinSchemaTtl, kMaxSchemaTtl, up.bosa.schema_ttl);
       }},
      {"user_token_margin",
       [&](const Entry& e) -> Status {
         return readDuration(ctx, e, milliseconds(0), kMaxTokenMargin, up.bosa.user_token_margin);
       }},
      {"retry", [&](const Entry& e) -> Status { return parseRetry(ctx, e, up.bosa.retry); }},
      {"tls",
       [&](const Entry& e) -> Status {
         tls_lines["tls"] = e.key_line;
         if (e.value.IsMap()) {
           for (auto it = e.value.begin(); it != e.value.end(); ++it) {
             if (it->first.IsScalar()) tls_lines["tls." + it->first.Scalar()] = lineOf(it->first, e.key_line);
           }
         }
         return parseTls(ctx, e, tls);
       }},
  };
  if (auto status = parseMap(ctx, entry, !kNullIsEmpty, fields); !status) return status;
  if (!have_base_url) {
    return ctx.error(entry.key_line, entry.path + ".base_url",
                     "required: the upstream's http:// or https:// URL, e.g. "
                     "https://api.example.com");
  }
  // The protocol decides the credential defaults, so both are settled after the whole entry.
  up.protocol = protocol.value_or(core::defaultProtocolFor(up.name));
  up.credential = core::defaultCredentialFor(up.protocol);
  if (credential.header) up.credential.header = *credential.header;
  if (credential.prefix) up.credential.prefix = *credential.prefix;
  if (credential.secret) up.credential.secret = *credential.secret;
  if (!up.credential.secret.empty() && up.credential.header.empty()) {
    if (credential.header) {
      return ctx.error(credential.header_line, entry.path + ".credential.header",
                       "must not be empty while a secret is injected (secret: \"\" injects "
                       "nothing)");
    }
    return ctx.error(credential.line != 0 ? credential.line : entry.key_line,
                     entry.path + ".credential.header",
                     std::string("required when a secret is injected (protocol ") +
                         core::protocolName(up.protocol) + " has no default header)");
  }
  if (!tls.empty()) {
    std::string part;
    if (auto s = core::checkUpstreamTls(tls, up.base_url, &part); !s) {
      // A missing half of the client pair is reported at the `tls:` key, the rest at their own.
      const auto line = tls_lines.find(part);
      return ctx.error(line != tls_lines.end() ? line->second : tls_lines["tls"], entry.path + "." + part,
                       s.error().message);
    }
    up.tls = std::make_shared<const core::UpstreamTls>(std::move(tls));
  }
  if (!up.compat_listen.empty()) {
    state.compat_listeners.push_back(
        {entry.path + ".compat_listen", compat_line, up.compat_listen});
  }
  state.config.upstreams.push_back(std::move(up));
  return core::okStatus();
}

Status parseUpstreams(const Ctx& ctx, const Entry& section, State& state) {
  state.have_upstreams = true;
  if (section.value.IsNull() || (section.value.IsMap() && section.value.size() == 0)) {
    return ctx.error(section,
                     "at least one upstream is required, e.g. "
                     "bosa: { base_url: https://api.bosa.id }");
  }
  return walkMap(ctx, section.value, section.path, section.value_line, false,
                 [&](const Entry& e) -> Status { return parseUpstream(ctx, e, state); });
}

Status checkListeners(const Ctx& ctx, const State& state) {
  std::vector<Listener> all = {{"listen", state.listen_line, state.config.listen}};
  all.insert(all.end(), state.compat_listeners.begin(), state.compat_listeners.end());
  for (size_t i = 1; i < all.size(); ++i) {
    for (size_t j = 0; j < i; ++j) {
      if (!core::listenAddressesConflict(all[i].address, all[j].address)) continue;
      std::string other = all[j].path;
      other += all[j].line == 0 ? " (default)" : " (line " + std::to_string(all[j].line) + ")";
      return ctx.error(all[i].line, all[i].path,
                       all[i].address.toString() + " is already used by " + other +
                           "; every listener needs its own address (port 0 excepted)");
    }
  }
  return core::okStatus();
}

Status parseTop(const Ctx& ctx, const YAML::Node& root, State& state, const EnvLookup& env) {
  if (root.IsNull()) {
    return ctx.error(1, "upstreams",
                     "required: the file is empty; expected a mapping with at "
                     "least `upstreams:`");
  }
  const int root_line = lineOf(root, 1);
  const std::vector<Field> fields = {
      {"listen",
       [&](const Entry& e) -> Status {
         state.listen_line = e.value_line;
         return readListen(ctx, e, false, state.config.listen);
       }},
      {"state_dir",
       [&](const Entry& e) -> Status {
         if (auto s = readString(ctx, e, true, state.state_dir); !s) return s;
         if (state.state_dir.empty()) return core::okStatus();
         return check(ctx, e, core::checkPath(state.state_dir));
       }},
      {"master_key_file",
       [&](const Entry& e) -> Status {
         if (auto s = readString(ctx, e, true, state.master_key_file); !s) return s;
         if (state.master_key_file.empty()) return core::okStatus();
         return check(ctx, e, core::checkPath(state.master_key_file));
       }},
      {"server",
       [&](const Entry& e) -> Status { return parseServer(ctx, e, state.config.server); }},
      {"limits",
       [&](const Entry& e) -> Status { return parseLimits(ctx, e, state.config.limits); }},
      {"log", [&](const Entry& e) -> Status { return parseLog(ctx, e, state.config.log); }},
      {"cache", [&](const Entry& e) -> Status { return parseCache(ctx, e, env, state.config.cache); }},
      {"upstreams", [&](const Entry& e) -> Status { return parseUpstreams(ctx, e, state); }},
      {"fleet", [&](const Entry& e) -> Status { return parseFleet(ctx, e, env, state.config.fleet); }},
  };
  Entry top;
  top.value = root;
  top.key_line = top.value_line = root_line;
  if (auto status = parseMap(ctx, top, !kNullIsEmpty, fields); !status) return status;
  if (!state.have_upstreams) {
    return ctx.error(root_line, "upstreams",
                     "required: at least one upstream, e.g. "
                     "upstreams: { bosa: { base_url: https://api.bosa.id } }");
  }
  if (auto s = checkListeners(ctx, state); !s) return s;
  for (const auto& placed : state.max_connections_lines) {
    const core::UpstreamConfig* up = state.config.findUpstream(placed.upstream);
    if (up != nullptr && up->max_connections < state.config.server.threads) {
      return ctx.error(placed.line, placed.path,
                       "must be at least server.threads (" + std::to_string(state.config.server.threads) +
                           "): each reactor thread keeps at least one connection");
    }
  }
  state.config.state_dir = core::resolveStateDir(state.state_dir, env);
  state.config.master_key_file =
      core::resolveMasterKeyFile(state.master_key_file, state.config.state_dir, env);
  return core::okStatus();
}

core::Result<std::string> readConfigFile(const std::string& path) {
  auto fail = [&](const std::string& what) {
    return Error::make(ErrorCode::kBadRequest, path + ": " + what);
  };
  auto errnoText = [] { return std::error_code(errno, std::generic_category()).message(); };
  // O_NONBLOCK: opening a FIFO by mistake must not hang --check-config; regular files ignore it.
  FileDescriptor fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
  if (fd.get() < 0) return fail("cannot open the configuration file: " + errnoText());
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0)
    return fail("cannot stat the configuration file: " + errnoText());
  if (!S_ISREG(st.st_mode)) return fail("not a regular file");
  if (st.st_size > static_cast<off_t>(kMaxConfigBytes)) {
    return fail("the configuration file is too large (at most 1 MiB)");
  }
  std::string text;
  char buffer[16384];
  for (;;) {
    const ssize_t n = ::read(fd.get(), buffer, sizeof buffer);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail("cannot read the configuration file: " + errnoText());
    }
    if (n == 0) break;
    text.append(buffer, static_cast<size_t>(n));
    if (text.size() > kMaxConfigBytes)
      return fail("the configuration file is too large (at most 1 MiB)");
  }
  return text;
}

}  // namespace

std::optional<std::string> processEnv(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr) return std::nullopt;
  return std::string(value);
}

core::Result<core::Config> parseConfig(std::string_view yaml, std::string_view source,
                                       const EnvLookup& env) {
  const Ctx ctx(source);
  if (yaml.size() > kMaxConfigBytes) {
    return ctx.error(1, "", "the configuration is too large (at most 1 MiB)");
  }
  // yaml-cpp reads through a C string in places; a NUL would silently cut the file short.
  if (const size_t nul = yaml.find('\0'); nul != std::string_view::npos) {
    const int line = 1 + static_cast<int>(std::count(yaml.begin(), yaml.begin() + nul, '\n'));
    return ctx.error(line, "", "a NUL byte is not allowed in a configuration file");
  }
  try {
    // Count documents with a bounded loop instead of YAML::LoadAll: yaml-cpp 0.7 yields empty
    // documents forever on some inputs (a lone ",": jbeder/yaml-cpp#1040), so LoadAll never ends.
    const std::string text(yaml);
    {
      std::istringstream stream(text);
      YAML::Parser parser(stream);
      DocumentCounter counter;
      if (parser.HandleNextDocument(counter) && parser.HandleNextDocument(counter)) {
        return ctx.error(counter.second_line, "", "only one YAML document is allowed (found a second '---')");
      }
    }
    State state;
    state.config.listen = core::ListenAddress{"127.0.0.1", 8750};
    const YAML::Node root = YAML::Load(text);
    if (auto status = parseTop(ctx, root, state, env); !status) return status.takeError();
    // The loader enforces everything validateConfig does, with lines; this is the safety net
    // that keeps the two in agreement.
    if (auto status = core::validateConfig(state.config); !status) {
      return ctx.error(1, "", status.error().message);
    }
    return std::move(state.config);
  } catch (const YAML::DeepRecursion& e) {
    // yaml-cpp's own message for this one is a misleading "bad file".
    return ctx.error(e.mark.is_null() ? 1 : e.mark.line + 1, "",
                     "invalid YAML: nesting is too deep");
  } catch (const YAML::Exception& e) {
    // e.what() repeats the position in yaml-cpp's own words; msg is the bare reason.
    const int line = e.mark.is_null() ? 1 : e.mark.line + 1;
    std::string where =
        e.mark.is_null() ? "" : " (column " + std::to_string(e.mark.column + 1) + ")";
    return ctx.error(line, "", "invalid YAML: " + e.msg + where);
  } catch (const std::exception& e) {
    return Error::make(ErrorCode::kInternal,
                       std::string(source) + ": cannot load the configuration: " + e.what());
  }
}

core::Result<core::Config> loadConfig(const std::optional<std::string>& path,
                                      const EnvLookup& env) {
  if (!path) return parseConfig(embeddedDefaultConfig(), kEmbeddedSource, env);
  auto text = readConfigFile(*path);
  if (!text) return text.takeError();
  return parseConfig(*text, *path, env);
}

core::Result<core::Config> loadConfig(const std::optional<std::string>& path) {
  return loadConfig(path, processEnv);
}

}  // namespace keyway::daemon
