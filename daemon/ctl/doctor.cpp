// keywayctl doctor: checks what usually goes wrong (docs/cli.md, "keywayctl doctor") and says
// for each what to run next: keywayd on another store, key file and state directory permissions,
// secrets missing for a team, upstreams unreachable, refusing their key or failing TLS.
#include "daemon/ctl/doctor.hpp"

#include <grp.h>
#include <pwd.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>

#include "daemon/ctl/groups.hpp"
#include "daemon/ctl/status.hpp"
#include "daemon/http_fetch.hpp"
#include "daemon/status_report.hpp"
#include "storage/lmdb_credential_store.hpp"
#include "storage/master_key.hpp"

namespace keyway::daemon::ctl {

const char* checkResultName(CheckResult result) {
  switch (result) {
    case CheckResult::kOk: return "ok";
    case CheckResult::kWarn: return "warn";
    case CheckResult::kFail: return "fail";
    case CheckResult::kSkip: return "skip";
  }
  return "fail";
}

int doctorExitCode(const std::vector<Check>& checks) {
  for (const auto& c : checks) {
    if (c.result == CheckResult::kFail) return 1;
  }
  return 0;
}

CheckResult judgeKeyMode(mode_t mode) {
  if ((mode & 077) != 0) return CheckResult::kFail;
  const mode_t owner = mode & 0700;
  return owner == 0600 || owner == 0400 ? CheckResult::kOk : CheckResult::kWarn;
}

CheckResult judgeStateDirMode(mode_t mode) {
  if ((mode & 022) != 0) return CheckResult::kFail;
  return (mode & 077) != 0 ? CheckResult::kWarn : CheckResult::kOk;
}

ProbePlan probePlanFor(const core::UpstreamConfig& upstream) {
  const bool has_key = !upstream.credential.secret.empty() && !upstream.credential.header.empty();
  switch (upstream.protocol) {
    case core::Protocol::kBundleUp:
      // Read-only on the Platform API; the Proxy and Unify hosts check the key before they look
      // for a connection (protocols: "Errors the proxy raises itself"), and none is sent, so
      // nothing reaches an integrated provider.
      if (has_key) return {"/v1/integrations?limit=1", true};
      break;
    case core::Protocol::kBundleIq:
      if (has_key) return {"/v1/workspaces", true};
      break;
    case core::Protocol::kBosa:
      return {"/connectors/names", false};
    case core::Protocol::kGeneric:
      break;
  }
  return {"", false};
}

ProbeVerdict judgeProbeAnswer(long status, bool key_sent) {
  const std::string http = "HTTP " + std::to_string(status);
  if (status == 401 || status == 403) {
    if (key_sent) return {CheckResult::kFail, "the upstream refuses the key (" + http + ")"};
    return {CheckResult::kWarn, "the upstream answers " + http + " to a request that needs no key"};
  }
  if (status == 429) return {CheckResult::kWarn, "the upstream is rate limiting (" + http + "); check again later"};
  if (status >= 500) return {CheckResult::kWarn, "the upstream answers " + http + "; it may be down"};
  if (status >= 200 && status < 300) {
    return {CheckResult::kOk, key_sent ? "the key is accepted (" + http + ")" : "reachable (" + http + ")"};
  }
  return {CheckResult::kOk, key_sent ? "reachable, and the key is not refused (" + http + ")" : "reachable (" + http + ")"};
}

bool teamUses(const core::TeamRecord& team, const std::string& upstream) {
  return team.all_upstreams || std::find(team.upstreams.begin(), team.upstreams.end(), upstream) != team.upstreams.end();
}

namespace {

std::string octal(mode_t mode) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(mode & 07777));
  return buf;
}

std::string userName(uid_t uid) {
  const struct passwd* pw = ::getpwuid(uid);
  return pw != nullptr ? std::string(pw->pw_name) : std::to_string(uid);
}

std::string groupName(gid_t gid) {
  const struct group* gr = ::getgrgid(gid);
  return gr != nullptr ? std::string(gr->gr_name) : std::to_string(gid);
}

class Doctor {
 public:
  explicit Doctor(Context& c) : c_(c) {}

  int run() {
    // Opened first so that describeLocalStore reads its generation instead of opening it again.
    auto opened = openStore();
    c_.store = store_.get();
    checkDaemon();
    checkStateDir();
    checkMasterKey();
    add(std::move(opened));
    if (store_) {
      checkSecretsAndReach();
    } else {
      add({"secret", "", "", CheckResult::kSkip, "the credential store is not open (see above)", ""});
    }
    return report();
  }

 private:
  void add(Check check) { checks_.push_back(std::move(check)); }

  void checkDaemon() {
    daemon_ = askDaemon(c_);
    local_ = describeLocalStore(c_);
    switch (daemon_.reach) {
      case Reach::kAnswered: {
        const rapidjson::Value& d = daemon_.doc;
        const bool ready = jsonBool(d, "ready");
        add({"daemon", "", "", ready ? CheckResult::kOk : CheckResult::kWarn,
             "keywayd " + jsonString(d, "version") + " answers at " + daemon_.address + " (pid " +
                 std::to_string(jsonInt(d, "pid").value_or(0)) + (ready ? ")" : ", not ready yet)"),
             ready ? "" : "journalctl -u keyway (why it is not ready)"});
        break;
      }
      case Reach::kNotRunning:
        add({"daemon", "", "", CheckResult::kWarn, daemon_.problem,
             "systemctl start keyway (or keywayd --config FILE); keywayctl --address HOST:PORT doctor if it "
             "listens elsewhere"});
        break;
      case Reach::kNoAddress:
        add({"daemon", "", "", CheckResult::kWarn, daemon_.problem, "keywayctl doctor --address HOST:PORT"});
        break;
      case Reach::kFailed:
        add({"daemon", "", "", CheckResult::kFail, daemon_.problem, "keywayctl status"});
        break;
    }
    if (daemon_.reach != Reach::kAnswered) {
      add({"same_store", "", "", CheckResult::kSkip, "keywayd did not answer", ""});
    } else if (sameStore(daemon_.store, local_.store)) {
      add({"same_store", "", "", CheckResult::kOk, "keywayd reads " + daemon_.store.path + ", the store this keywayctl edits", ""});
    } else {
      add({"same_store", "", "", CheckResult::kFail,
           "keywayd reads " + daemon_.store.path + ", but this keywayctl edits " + local_.store.path +
               ": what it changes never reaches the daemon",
           otherStoreHint(daemon_, local_)});
    }
  }

  void checkStateDir() {
    const std::string& dir = local_.state_dir;
    struct stat st {};
    if (::stat(dir.c_str(), &st) != 0) {
      add({"state_dir", "", "", CheckResult::kFail,
           "no state directory at " + dir + " (" + std::strerror(errno) + ")", "keywayctl init"});
      return;
    }
    if (!S_ISDIR(st.st_mode)) {
      add({"state_dir", "", "", CheckResult::kFail, dir + " is not a directory", "set state_dir to a directory"});
      return;
    }
    state_dir_uid_ = st.st_uid;
    state_dir_gid_ = st.st_gid;
    have_state_dir_ = true;
    const CheckResult mode_result = judgeStateDirMode(st.st_mode);
    if (mode_result != CheckResult::kOk) {
      add({"state_dir", "", "", mode_result,
           dir + ": group or others may " + (mode_result == CheckResult::kFail ? "write" : "read") +
               " it (mode " + octal(st.st_mode) + "); it holds the sealed credentials and the cache",
           "chmod 700 " + dir});
      return;
    }
    // Files made by keywayctl run as another user (`sudo keywayctl ...`) cannot be written by
    // keywayd: every file must belong to the directory's owner.
    std::vector<std::string> foreign;
    std::vector<std::string> world_writable;
    std::error_code ec;
    std::filesystem::recursive_directory_iterator it(dir, std::filesystem::directory_options::skip_permission_denied, ec);
    for (; !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
      if (it.depth() > 3) {
        it.disable_recursion_pending();
        continue;
      }
      struct stat fst {};
      if (::lstat(it->path().c_str(), &fst) != 0) continue;
      if (fst.st_uid != st.st_uid) foreign.push_back(it->path().string() + " (owner " + userName(fst.st_uid) + ")");
      if (!S_ISLNK(fst.st_mode) && (fst.st_mode & 0002) != 0) world_writable.push_back(it->path().string());
    }
    if (!foreign.empty()) {
      if (foreign.size() > 3) {
        foreign.resize(3);
        foreign.emplace_back("...");
      }
      add({"state_dir", "", "", CheckResult::kFail,
           dir + " belongs to " + userName(st.st_uid) + " but holds files of another user, which keywayd (running as " +
               userName(st.st_uid) + ") may not write: " + joinList(foreign),
           "chown -R " + userName(st.st_uid) + ":" + groupName(st.st_gid) + " " + dir +
               " (and run keywayctl as that user)"});
      return;
    }
    if (!world_writable.empty()) {
      add({"state_dir", "", "", CheckResult::kFail, "others may write " + joinList(world_writable),
           "chmod -R o-w " + dir});
      return;
    }
    add({"state_dir", "", "", CheckResult::kOk, dir + " (mode " + octal(st.st_mode) + ", owner " + userName(st.st_uid) + ")", ""});
  }

  void checkMasterKey() {
    const std::string& key = local_.master_key_file;
    struct stat st {};
    if (::stat(key.c_str(), &st) != 0) {
      const int e = errno;
      if (e == ENOENT && local_.exists) {
        add({"master_key", "", "", CheckResult::kFail,
             "no master key at " + key + ", but a credential store exists: a new key cannot read it",
             "restore the key file from your backup to " + key + " (or set master_key_file to where it is)"});
      } else if (e == ENOENT) {
        add({"master_key", "", "", CheckResult::kFail, "no master key at " + key, "keywayctl init"});
      } else {
        add({"master_key", "", "", CheckResult::kFail, "cannot look at " + key + ": " + std::strerror(e),
             "run keywayctl as root or as the user keywayd runs as"});
      }
      return;
    }
    if (!S_ISREG(st.st_mode)) {
      add({"master_key", "", "", CheckResult::kFail, key + " is not a regular file", "set master_key_file to the key file"});
      return;
    }
    const CheckResult mode_result = judgeKeyMode(st.st_mode);
    if (mode_result == CheckResult::kFail) {
      add({"master_key", "", "", CheckResult::kFail,
           key + ": group or others have access to it (mode " + octal(st.st_mode) + "); keyway refuses such a key",
           "chmod 600 " + key});
      return;
    }
    if (have_state_dir_ && st.st_uid != state_dir_uid_ && st.st_uid != 0) {
      add({"master_key", "", "", CheckResult::kWarn,
           key + " belongs to " + userName(st.st_uid) + ", the state directory to " + userName(state_dir_uid_) +
               ": keywayd runs as one of them and the other may not read the key",
           "chown " + userName(state_dir_uid_) + " " + key});
      return;
    }
    if (auto loaded = storage::loadMasterKeyFile(key); !loaded) {
      add({"master_key", "", "", CheckResult::kFail, loaded.error().message,
           ::access(key.c_str(), R_OK) != 0 ? "run keywayctl as root or as the user keywayd runs as"
                                             : "restore the key file from your backup"});
      return;
    }
    if (mode_result == CheckResult::kWarn) {
      add({"master_key", "", "", CheckResult::kWarn, key + ": mode " + octal(st.st_mode) + ", 0600 or 0400 expected",
           "chmod 600 " + key});
      return;
    }
    add({"master_key", "", "", CheckResult::kOk, key + " (mode " + octal(st.st_mode) + ", owner " + userName(st.st_uid) + ")", ""});
  }

  // The store check; the store is opened only when its directory exists (doctor makes no state
  // directory; opening settles an interrupted rekey, as every command does).
  Check openStore() {
    const std::string path = storage::credentialEnvPath(absolutePath(c_.config->state_dir));
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      return {"store", "", "", CheckResult::kFail, "no credential store at " + path, "keywayctl init"};
    }
    auto opened = storage::openLmdbCredentialStore(c_.config->state_dir, c_.config->master_key_file);
    if (!opened) {
      return {"store", "", "", CheckResult::kFail, "cannot open the credential store: " + opened.error().message,
              "fix the master key (see master_key), or run keywayctl as the user keywayd runs as"};
    }
    store_ = std::move(opened).value();
    return {"store", "", "", CheckResult::kOk,
            path + " opens with the master key (generation " + std::to_string(store_->generation()) + ")", ""};
  }

  // For each upstream: is its secret there for every team that may use it, and does the upstream
  // answer with it (one probe per distinct value: the shared key and each team's own)?
  void checkSecretsAndReach() {
    auto teams = store_->listTeams();
    if (!teams) {
      add({"secret", "", "", CheckResult::kFail, teams.error().message, ""});
      return;
    }
    if (teams->empty()) {
      add({"secret", "", "", CheckResult::kWarn, "no team yet: no client can use any upstream",
           "keywayctl team add NAME [--upstreams a,b]"});
    }
    for (const auto& u : c_.config->upstreams) {
      const std::string& secret = u.credential.secret;
      struct Key {
        std::shared_ptr<core::ResolvedSecret> value;
        std::vector<std::string> teams;
      };
      std::map<std::string, Key> keys;  // by fingerprint
      std::vector<std::string> users, missing;
      for (const auto& t : *teams) {
        if (!teamUses(t, u.name)) continue;
        users.push_back(t.name);
        if (secret.empty()) continue;
        auto resolved = store_->resolveSecret(secret, t.name);
        if (!resolved) {
          add({"secret", u.name, "", CheckResult::kFail, resolved.error().message, ""});
          return;
        }
        if (!*resolved) {
          missing.push_back(t.name);
          continue;
        }
        Key& k = keys[(*resolved)->fingerprint];
        if (!k.value) k.value = std::make_shared<core::ResolvedSecret>(std::move(**resolved));
        k.teams.push_back(t.name);
      }
      if (secret.empty()) {
        add({"secret", u.name, "", CheckResult::kOk, "injects no credential (credential.secret is empty)", ""});
      } else if (users.empty()) {
        add({"secret", u.name, "", CheckResult::kOk, "no team may use it; nothing to inject", ""});
      } else if (!missing.empty()) {
        const std::string teams_text = joinList(missing);
        add({"secret", u.name, "", CheckResult::kFail,
             "no " + secret + " for team " + teams_text + " (neither shared nor the team's own): its clients get 503 unavailable",
             "keywayctl secret set " + secret + (missing.size() == 1 && missing.size() < users.size()
                                                     ? " --team " + missing.front()
                                                     : std::string()) +
                 " (the value on stdin)"});
      } else {
        add({"secret", u.name, "", CheckResult::kOk, secret + " is set for every team that may use it (" + joinList(users) + ")", ""});
      }
      probe(u, keys);
    }
  }

  template <typename Keys>
  void probe(const core::UpstreamConfig& u, const Keys& keys) {
    const ProbePlan plan = probePlanFor(u);
    if (!plan.send_key || keys.empty()) {
      probeOnce(u, plan.send_key ? ProbePlan{"", false} : plan, nullptr, "");
      return;
    }
    for (const auto& [fingerprint, key] : keys) {
      (void)fingerprint;
      probeOnce(u, plan, key.value.get(), keys.size() > 1 ? key.value->scope : std::string());
    }
  }

  void probeOnce(const core::UpstreamConfig& u, const ProbePlan& plan, const core::ResolvedSecret* key,
                 const std::string& scope) {
    HttpFetchOptions options;
    options.connect_timeout = std::min(u.connect_timeout, std::chrono::milliseconds(5000));
    options.total_timeout = std::min(u.timeout, std::chrono::milliseconds(10000));
    options.max_body_bytes = 1u << 20;
    options.tls = u.tls;
    options.connect_only = plan.target.empty();
    core::SecretString header;
    if (key != nullptr) {
      std::string line = u.credential.header + ": " + u.credential.prefix;
      line.append(key->value.view());
      header = core::SecretString(std::move(line));
      options.credential_header = &header;
    }
    const std::string url = u.base_url + plan.target;
    HttpFetchResult got = httpFetch(url, options);
    const std::string origin = urlOrigin(u.base_url);
    const std::string trust = u.tls && !u.tls->ca_file.empty() ? "tls.ca_file " + u.tls->ca_file : "the system's CAs";
    const bool https = u.base_url.compare(0, 8, "https://") == 0;
    Check check{"reach", u.name, scope, CheckResult::kOk, "", ""};
    if (got.error) {
      check.result = CheckResult::kFail;
      // By origin only, as everywhere else: a base_url's path may carry a token.
      check.message = got.error->message;
      for (size_t at = check.message.find(u.base_url); at != std::string::npos;
           at = check.message.find(u.base_url, at + origin.size())) {
        check.message.replace(at, u.base_url.size(), origin);
      }
      if (got.tls_problem && core::isCertificateVerification(*got.tls_problem)) {
        check.message = origin + ": its TLS certificate does not verify against " + trust + ": " +
                        std::string(core::tlsProblemText(*got.tls_problem));
        check.next = u.tls && !u.tls->ca_file.empty()
                         ? "point upstreams." + u.name + ".tls.ca_file at the CA that issued " + origin + "'s certificate"
                         : "set upstreams." + u.name + ".tls.ca_file to the CA that issued " + origin + "'s certificate";
      } else if (got.tls_problem) {
        check.next = "check upstreams." + u.name + ".tls (client_cert, client_key) and what " + origin + " accepts";
      } else {
        check.next = "check upstreams." + u.name + ".base_url (" + origin + ") and that the host can reach it";
      }
    } else if (plan.target.empty()) {
      check.message = origin + ": connected" + std::string(https ? ", TLS verified against " + trust : "") +
                      (u.protocol == core::Protocol::kGeneric ? " (a generic upstream has no request known to be harmless)"
                                                              : " (no key to try: none is set)");
    } else {
      const ProbeVerdict verdict = judgeProbeAnswer(got.response.status, plan.send_key);
      check.result = verdict.result;
      check.message = "GET " + origin + plan.target + ": " + verdict.message +
                      (https ? "; TLS verified against " + trust : "");
      if (u.protocol == core::Protocol::kBosa) check.message += "; the API key cannot be checked without side effects";
      if (verdict.result == CheckResult::kFail && key != nullptr) {
        check.next = "keywayctl secret set " + key->name +
                     (key->scope.rfind("team:", 0) == 0 ? " --team " + key->scope.substr(5) : std::string()) +
                     " (the right value on stdin)";
      }
    }
    noteDaemonView(u, check);
    add(std::move(check));
  }

  // What keywayd itself last saw of the upstream, when that is a failure after its last answer.
  void noteDaemonView(const core::UpstreamConfig& u, Check& check) const {
    if (daemon_.reach != Reach::kAnswered) return;
    const rapidjson::Value* upstreams = jsonMember(daemon_.doc, "upstreams");
    if (upstreams == nullptr || !upstreams->IsArray()) return;
    for (const auto& entry : upstreams->GetArray()) {
      if (jsonString(entry, "name") != u.name) continue;
      const std::string failed_at = jsonString(entry, "last_failure_at");
      if (failed_at.empty() || failed_at < jsonString(entry, "last_answer_at")) return;
      check.message += "; keywayd's last exchange failed at " + failed_at + ": " + jsonString(entry, "last_failure");
      if (check.result == CheckResult::kOk) {
        check.result = CheckResult::kWarn;
        check.next = "keywayctl status (keywayd may run with another configuration or network than keywayctl)";
      }
      return;
    }
  }

  int report() {
    const int code = doctorExitCode(checks_);
    size_t counts[4] = {0, 0, 0, 0};
    for (const auto& ch : checks_) ++counts[static_cast<size_t>(ch.result)];
    if (c_.flag("--json")) {
      rapidjson::StringBuffer buffer;
      rapidjson::Writer<rapidjson::StringBuffer> w(buffer);
      const auto str = [&](const std::string& s) {
        if (s.empty()) {
          w.Null();
        } else {
          w.String(s.data(), static_cast<rapidjson::SizeType>(s.size()));
        }
      };
      w.StartObject();
      w.Key("checks");
      w.StartArray();
      for (const auto& ch : checks_) {
        w.StartObject();
        w.Key("check");
        str(ch.check);
        w.Key("upstream");
        str(ch.upstream);
        w.Key("scope");
        str(ch.scope);
        w.Key("result");
        w.String(checkResultName(ch.result));
        w.Key("message");
        str(ch.message);
        w.Key("next");
        str(ch.next);
        w.EndObject();
      }
      w.EndArray();
      for (CheckResult r : {CheckResult::kOk, CheckResult::kWarn, CheckResult::kFail, CheckResult::kSkip}) {
        w.Key(checkResultName(r));
        w.Uint64(counts[static_cast<size_t>(r)]);
      }
      w.Key("exit");
      w.Int(code);
      w.EndObject();
      c_.out << buffer.GetString() << "\n";
      return code;
    }
    std::vector<std::string> names;
    size_t width = 0;
    for (const auto& ch : checks_) {
      std::string name = ch.check + (ch.upstream.empty() ? "" : " " + ch.upstream) + (ch.scope.empty() ? "" : " [" + ch.scope + "]");
      width = std::max(width, name.size());
      names.push_back(std::move(name));
    }
    for (size_t i = 0; i < checks_.size(); ++i) {
      const Check& ch = checks_[i];
      std::string result = checkResultName(ch.result);
      c_.out << result << std::string(6 - result.size(), ' ') << names[i] << std::string(width - names[i].size() + 2, ' ')
             << ch.message << "\n";
      if (!ch.next.empty()) c_.out << std::string(6 + width + 2, ' ') << "next: " << ch.next << "\n";
    }
    c_.out << "\n" << counts[static_cast<size_t>(CheckResult::kFail)] << " failed, "
           << counts[static_cast<size_t>(CheckResult::kWarn)] << " warnings, "
           << counts[static_cast<size_t>(CheckResult::kOk)] << " ok, "
           << counts[static_cast<size_t>(CheckResult::kSkip)] << " skipped\n";
    return code;
  }

  Context& c_;
  DaemonAnswer daemon_;
  LocalStore local_;
  bool have_state_dir_ = false;
  uid_t state_dir_uid_ = 0;
  gid_t state_dir_gid_ = 0;
  std::unique_ptr<core::CredentialStore> store_;
  std::vector<Check> checks_;
};

int cmdDoctor(Context& c) { return Doctor(c).run(); }

}  // namespace

const CommandGroup& doctorGroup() {
  static const CommandGroup group = {
      "doctor",
      "usage: keywayctl doctor [--json] [--address HOST:PORT]\n"
      "\n"
      "Checks what usually goes wrong and prints each check as ok, warn, fail or skip, with the\n"
      "command to run next:\n"
      "  daemon       keywayd answers at the configuration's listen (or --address)\n"
      "  same_store   it reads the credential store this keywayctl edits (keywayctl status)\n"
      "  state_dir    exists, not open to group or others, every file owned by its owner\n"
      "  master_key   exists, mode 0600 or 0400, owned like the state directory, loads\n"
      "  store        the credential store opens with that key\n"
      "  secret U     every team that may use upstream U has its secret (shared or its own)\n"
      "  reach U      U answers a harmless request with each distinct key (BundleUp: GET\n"
      "               /v1/integrations?limit=1, BundleIQ: GET /v1/workspaces, BOSA: GET\n"
      "               /connectors/names without a key, generic: connect only), TLS verified\n"
      "               against its tls.ca_file or the system's CAs\n"
      "Keys go to the upstream only, never to arguments or output. Run it as the user keywayd runs\n"
      "as (or root): it reads the master key.\n"
      "\n"
      "options:\n"
      "  --json               one JSON object: checks [{check, upstream, scope, result, message,\n"
      "                       next}], counts ok/warn/fail/skip, exit\n"
      "  --address HOST:PORT  where keywayd listens (default: the configuration's listen)\n"
      "\n"
      "exit status: 0 no check failed (warnings allowed), 1 a check failed (or bad usage)\n",
      {
          {"", 0, 0, {"--address"}, {"--json"}, {}, "keywayctl doctor [--json] [--address HOST:PORT]", Store::kNone,
           Input::kNone, cmdDoctor, checkDaemonAddressOption},
      }};
  return group;
}

}  // namespace keyway::daemon::ctl
