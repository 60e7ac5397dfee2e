// keywayctl: argument parsing, the commands of docs/cli.md on the LMDB credential store, the response
// cache and the BOSA schema store, secret input from stdin (never from arguments), human output on
// stdout, one-line errors on stderr.
#include "daemon/ctl/ctl.hpp"

#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <exception>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <sstream>
#include <sys/stat.h>

#include "core/bosa_catalog.hpp"
#include "core/cache_store.hpp"
#include "core/credential_store.hpp"
#include "core/secret.hpp"
#include "daemon/ctl/secret_input.hpp"
#include "daemon/ctl/text.hpp"
#include "daemon/schema_fetch.hpp"
#include "daemon/yaml_config_loader.hpp"
#include "storage/file_util.hpp"
#include "storage/lmdb_cache_store.hpp"
#include "storage/lmdb_credential_store.hpp"
#include "storage/lmdb_schema_store.hpp"
#include "storage/record_codec.hpp"

namespace keyway::daemon {
namespace {

using core::Error;
using core::ErrorCode;
using ctl::formatBytes;
using ctl::formatTime;
using ctl::joinList;
using ctl::printTable;
using ctl::readSecret;
using ctl::splitList;

// ---------------------------------------------------------------------------------------------
// Help texts

constexpr const char* kGlobalUsage =
    "usage: keywayctl [--config FILE] COMMAND [ARGS...]\n"
    "\n"
    "Administers the keyway credential store, response cache and BOSA schema store of the\n"
    "configured state directory. Changes take effect in a running keywayd at once. Secret\n"
    "values are read from standard input only.\n"
    "\n"
    "commands:\n"
    "  init                                        create the state directory and master key\n"
    "  team add NAME [--upstreams a,b,...]         add a team (default: all upstreams)\n"
    "  team list | team rm NAME\n"
    "  client add NAME --team TEAM                 add a client; prints its kw_ token once\n"
    "  client list | client revoke NAME\n"
    "  secret set NAME [--team TEAM]               set a secret (value on stdin)\n"
    "  secret list | secret rm NAME [--team TEAM]\n"
    "  bosa-user add IDENTIFIER --team T1[,T2...]  add a BOSA user (user secret on stdin)\n"
    "  bosa-user list | bosa-user grant|revoke IDENTIFIER --team TEAM | bosa-user rm IDENTIFIER\n"
    "  cache stats | cache purge [--upstream U] [--prefix PATH] [--all]\n"
    "  schemas list                                BOSA schemas: fetch time, connectors, gaps\n"
    "  schemas refresh [CONNECTOR]                 fetch BOSA schemas (all, or one connector)\n"
    "\n"
    "options:\n"
    "  --config FILE   configuration file (default: the embedded default, as keywayd)\n"
    "  --help, -h      help for keywayctl or for one command\n"
    "\n"
    "exit status: 0 ok, 1 bad usage or input, 2 runtime failure\n";

const std::map<std::string, std::string>& groupHelp() {
  static const std::map<std::string, std::string> help = {
      {"init",
       "usage: keywayctl init\n"
       "\n"
       "Creates the state directory (mode 0700), the master key file (mode 0600, 32 random\n"
       "bytes) and the credential store, each only if absent. On an initialised directory it\n"
       "checks that the master key matches the store.\n"},
      {"team",
       "usage: keywayctl team add NAME [--upstreams a,b,...]\n"
       "       keywayctl team list\n"
       "       keywayctl team rm NAME\n"
       "\n"
       "A team groups clients; it may use every configured upstream (default) or only those\n"
       "listed with --upstreams. `team rm` refuses while active clients belong to the team;\n"
       "it also removes the team's own secrets and its BOSA user grants.\n"},
      {"client",
       "usage: keywayctl client add NAME --team TEAM\n"
       "       keywayctl client list\n"
       "       keywayctl client revoke NAME\n"
       "\n"
       "`client add` prints the new client token (kw_...) once, alone on the last line; only a\n"
       "keyed hash of it is stored. `client revoke` makes the token stop working at once.\n"},
      {"secret",
       "usage: keywayctl secret set NAME [--team TEAM]\n"
       "       keywayctl secret list\n"
       "       keywayctl secret rm NAME [--team TEAM]\n"
       "\n"
       "Secrets are the real upstream credentials, e.g. bundleup.api_key, bosa.api_key,\n"
       "bundleiq.api_key. Without --team a secret is shared by all teams; a team's own secret\n"
       "overrides the shared one for its clients. The value is read from standard input (one\n"
       "trailing newline stripped), never from arguments:\n"
       "  printf '%s' \"$BOSA_KEY\" | keywayctl secret set bosa.api_key\n"
       "`secret list` shows names, scopes and update times, never values.\n"},
      {"bosa-user",
       "usage: keywayctl bosa-user add IDENTIFIER --team TEAM[,TEAM...]\n"
       "       keywayctl bosa-user list\n"
       "       keywayctl bosa-user grant IDENTIFIER --team TEAM\n"
       "       keywayctl bosa-user revoke IDENTIFIER --team TEAM\n"
       "       keywayctl bosa-user rm IDENTIFIER\n"
       "\n"
       "Stores a BOSA user's identifier and secret (sk-user-..., read from standard input) and\n"
       "grants the user to teams. Apps of those teams act as the user with\n"
       "`Authorization: Bearer kwu_IDENTIFIER` or `X-Keyway-User: IDENTIFIER`.\n"},
      {"cache",
       "usage: keywayctl cache stats\n"
       "       keywayctl cache purge [--upstream U] [--prefix PATH] [--all]\n"
       "\n"
       "Works on the response cache environment of the configuration (cache.dir, default\n"
       "<state_dir>/cache), the same one a running keywayd uses.\n"
       "`cache stats` shows entries, bytes and the bound, the hit ratio, the oldest entry,\n"
       "evictions and whether the store is healthy.\n"
       "`cache purge` drops entries of every identity: --upstream U only those of upstream U,\n"
       "--prefix PATH only those whose path starts with PATH (e.g. /v1/webhooks), both together\n"
       "the intersection; --all everything. Without an option it refuses. A running keywayd\n"
       "stops serving the purged entries at once.\n"},
      {"schemas",
       "usage: keywayctl schemas list\n"
       "       keywayctl schemas refresh [CONNECTOR]\n"
       "\n"
       "Works on the BOSA schema store of the state directory (<state_dir>/schemas), the one a\n"
       "running keywayd serves discovery from and validates action inputs against.\n"
       "`schemas list` shows, per BOSA upstream, when its discovery document was fetched, each\n"
       "connector with its action count and the number of schema constructs keyway cannot\n"
       "enforce, then each such construct (connector/action: schema pointer: why) and any\n"
       "catalog problem (entries skipped as malformed).\n"
       "`schemas refresh` fetches GET <base_url>/connectors from every BOSA upstream (no\n"
       "credentials are sent) and stores it; with CONNECTOR it fetches\n"
       "<base_url>/connectors/?modules=CONNECTOR and replaces only that connector in the stored\n"
       "document. A running keywayd uses the new document on its next request. An answer that\n"
       "is not 200 or not a discovery document is never stored (exit 2, the old one is kept).\n"},
  };
  return help;
}

// ---------------------------------------------------------------------------------------------
// Arguments

struct Args {
  std::vector<std::string> words;
  std::map<std::string, std::string> options;  // "--team" -> value
  std::set<std::string> flags;                 // "--all"
  std::optional<std::string> config;
  bool help = false;
};

const std::set<std::string>& valueOptions() {
  static const std::set<std::string> s = {"--team", "--upstreams", "--upstream", "--prefix"};
  return s;
}
const std::set<std::string>& flagOptions() {
  static const std::set<std::string> s = {"--all"};
  return s;
}

// A usage error: exit 1 with one line on stderr.
struct UsageError {
  std::string message;
};

bool looksLikeSecretOption(const std::string& name) {
  for (const char* s : {"--value", "--secret", "--key", "--token", "--password", "--api-key"}) {
    if (name == s) return true;
  }
  return false;
}

std::optional<UsageError> parseArgs(const std::vector<std::string>& raw, Args& args) {
  bool only_words = false;
  for (size_t i = 0; i < raw.size(); ++i) {
    const std::string& a = raw[i];
    if (only_words || a.empty() || a[0] != '-' || a == "-") {
      args.words.push_back(a);
      continue;
    }
    if (a == "--") {
      only_words = true;
      continue;
    }
    if (a == "-h" || a == "--help") {
      args.help = true;
      continue;
    }
    const size_t eq = a.find('=');
    const std::string name = a.substr(0, eq);
    const bool inline_value = eq != std::string::npos;
    if (name == "--config" || valueOptions().count(name) != 0) {
      std::string value;
      if (inline_value) {
        value = a.substr(eq + 1);
      } else if (i + 1 < raw.size()) {
        value = raw[++i];
      } else {
        return UsageError{"option " + name + " needs a value"};
      }
      if (value.empty()) return UsageError{"option " + name + " needs a non-empty value"};
      if (name == "--config") {
        if (args.config) return UsageError{"option --config given twice"};
        args.config = value;
      } else {
        if (args.options.count(name) != 0) return UsageError{"option " + name + " given twice"};
        args.options[name] = value;
      }
      continue;
    }
    if (flagOptions().count(name) != 0) {
      if (inline_value) return UsageError{"option " + name + " takes no value"};
      args.flags.insert(name);
      continue;
    }
    if (looksLikeSecretOption(name)) {
      // Never echo the argument: it may be the secret itself.
      return UsageError{"secret values are never taken from arguments (they would leak into "
                        "shell history and the process list); pipe the value on standard input, "
                        "e.g. printf '%s' \"$VALUE\" | keywayctl secret set NAME"};
    }
    return UsageError{"unknown option '" + name + "'; see keywayctl --help"};
  }
  return std::nullopt;
}

int exitFor(const Error& error) {
  switch (error.code) {
    case ErrorCode::kBadRequest:
    case ErrorCode::kNotFound:
    case ErrorCode::kInvalidParameters:
    case ErrorCode::kForbidden:
    case ErrorCode::kUnauthorized:
      return kCtlExitUsage;
    default:
      return kCtlExitFailure;
  }
}

// ---------------------------------------------------------------------------------------------
// Commands

struct Context {
  const Args& args;
  std::istream& in;
  std::ostream& out;
  std::ostream& err;
  const core::Config* config = nullptr;
  core::CredentialStore* store = nullptr;

  const std::string& word(size_t i) const { return args.words[i]; }
  std::optional<std::string> option(const std::string& name) const {
    auto it = args.options.find(name);
    if (it == args.options.end()) return std::nullopt;
    return it->second;
  }
  int fail(const std::string& message, int code) const {
    err << "keywayctl: " << message << "\n";
    return code;
  }
  int fail(const Error& error) const { return fail(error.message, exitFor(error)); }
};

enum class Store { kNone, kCredentials };  // kCredentials: opened before run, in Context::store
enum class Input { kNone, kSecret };      // kSecret: reads a secret on stdin, never from arguments

// One keywayctl command: what dispatch checks before anything is touched, and what runs then.
struct Command {
  std::string group;
  std::string action;  // empty for `init`
  size_t min_words;    // words after group and action
  size_t max_words;
  std::vector<std::string> options;  // allowed value options
  std::vector<std::string> flags;    // allowed flags
  std::vector<std::string> required;
  std::string usage;
  Store store;
  Input input;
  int (*run)(Context&);
  // Usage rules beyond the above: the message of the usage error, or nullopt.
  std::optional<std::string> (*check)(const Args&) = nullptr;
};

// A listing: a hint when there is nothing yet, else an aligned table under `header`, a row per item.
template <typename T, typename Row>
int printListing(Context& c, const core::Result<std::vector<T>>& items, const char* none,
                 std::vector<std::string> header, Row row) {
  if (!items) return c.fail(items.error());
  if (items->empty()) {
    c.out << none << "\n";
    return kCtlExitOk;
  }
  std::vector<std::vector<std::string>> rows = {std::move(header)};
  for (const auto& item : *items) rows.push_back(row(item));
  printTable(c.out, rows);
  return kCtlExitOk;
}

// nullopt when `name` is a configured upstream, else the exit code of the error printed.
std::optional<int> checkUpstream(Context& c, const std::string& name) {
  if (c.config->findUpstream(name) != nullptr) return std::nullopt;
  std::vector<std::string> configured;
  for (const auto& u : c.config->upstreams) configured.push_back(u.name);
  return c.fail("unknown upstream '" + name + "'; configured upstreams: " + joinList(configured),
                kCtlExitUsage);
}

int cmdTeamAdd(Context& c) {
  core::TeamRecord team;
  team.name = c.word(2);
  if (auto list = c.option("--upstreams")) {
    team.all_upstreams = false;
    for (const auto& u : splitList(*list)) {
      if (u.empty()) {
        return c.fail("--upstreams has an empty entry: '" + *list + "'", kCtlExitUsage);
      }
      if (auto rc = checkUpstream(c, u)) return *rc;
      team.upstreams.push_back(u);
    }
  }
  auto status = c.store->addTeam(team);
  if (!status) return c.fail(status.error());
  c.out << "added team '" << team.name << "' (upstreams: "
        << (team.all_upstreams ? std::string("all") : joinList(team.upstreams)) << ")\n";
  return kCtlExitOk;
}

int cmdTeamList(Context& c) {
  return printListing(c, c.store->listTeams(), "no teams; add one with: keywayctl team add NAME",
                      {"NAME", "UPSTREAMS", "CREATED"}, [](const core::TeamRecord& t) {
                        return std::vector<std::string>{
                            t.name, t.all_upstreams ? "all" : joinList(t.upstreams, ","),
                            formatTime(t.created_unix)};
                      });
}

int cmdTeamRm(Context& c) {
  auto status = c.store->removeTeam(c.word(2));
  if (!status) return c.fail(status.error());
  c.out << "removed team '" << c.word(2) << "'\n";
  return kCtlExitOk;
}

int cmdClientAdd(Context& c) {
  const std::string team = *c.option("--team");
  auto token = c.store->addClient(c.word(2), team);
  if (!token) return c.fail(token.error());
  c.out << "added client '" << c.word(2) << "' to team '" << team << "'\n"
        << "its token is shown only this once; store it now (keyway keeps only a hash):\n"
        << token->view() << "\n";
  c.out.flush();
  return kCtlExitOk;
}

int cmdClientList(Context& c) {
  return printListing(c, c.store->listClients(),
                      "no clients; add one with: keywayctl client add NAME --team TEAM",
                      {"NAME", "TEAM", "STATUS", "CREATED"}, [](const core::ClientRecord& cl) {
                        return std::vector<std::string>{cl.name, cl.team,
                                                        cl.revoked ? "revoked" : "active",
                                                        formatTime(cl.created_unix)};
                      });
}

int cmdClientRevoke(Context& c) {
  auto status = c.store->revokeClient(c.word(2));
  if (!status) return c.fail(status.error());
  c.out << "revoked client '" << c.word(2) << "'; its token no longer works\n";
  return kCtlExitOk;
}

std::string scopeText(const std::string& team) {
  return team.empty() ? std::string("shared") : "team '" + team + "'";
}

// Checks a team before a secret is prompted for, so nobody types a secret for nothing.
std::optional<int> checkTeams(Context& c, const std::vector<std::string>& teams) {
  for (const auto& t : teams) {
    auto valid = storage::validateName("team", t);
    if (!valid) return c.fail(valid.error());
    auto found = c.store->findTeam(t);
    if (!found) return c.fail(found.error());
    if (!*found) {
      return c.fail("unknown team '" + t + "'; create it with `keywayctl team add " + t + "`",
                    kCtlExitUsage);
    }
  }
  return std::nullopt;
}

int cmdSecretSet(Context& c) {
  const std::string& name = c.word(2);
  const std::string team = c.option("--team").value_or("");
  auto valid = storage::validateName("secret", name);
  if (!valid) return c.fail(valid.error());
  if (!team.empty()) {
    if (auto rc = checkTeams(c, {team})) return *rc;
  }
  auto input = readSecret(c.in, c.err, "secret value");
  if (!input.value) return c.fail(input.error, kCtlExitUsage);
  auto status = c.store->setSecret(name, team, *input.value);
  if (!status) return c.fail(status.error());
  c.out << "stored secret '" << name << "' (" << scopeText(team) << ")\n";
  // A hint only: a name no upstream injects is probably a typo.
  std::vector<std::string> injected;
  for (const auto& u : c.config->upstreams) {
    if (!u.credential.secret.empty() &&
        std::find(injected.begin(), injected.end(), u.credential.secret) == injected.end()) {
      injected.push_back(u.credential.secret);
    }
  }
  if (!injected.empty() && std::find(injected.begin(), injected.end(), name) == injected.end()) {
    c.err << "keywayctl: note: no configured upstream injects '" << name
          << "' (they use: " << joinList(injected) << ")\n";
  }
  return kCtlExitOk;
}

int cmdSecretList(Context& c) {
  return printListing(c, c.store->listSecrets(),
                      "no secrets; set one with: keywayctl secret set NAME [--team TEAM] < value",
                      {"NAME", "SCOPE", "UPDATED"}, [](const core::SecretInfo& s) {
                        return std::vector<std::string>{
                            s.name, s.team.empty() ? "shared" : "team:" + s.team,
                            formatTime(s.updated_unix)};
                      });
}

int cmdSecretRm(Context& c) {
  const std::string team = c.option("--team").value_or("");
  auto status = c.store->removeSecret(c.word(2), team);
  if (!status) return c.fail(status.error());
  c.out << "removed secret '" << c.word(2) << "' (" << scopeText(team) << ")\n";
  return kCtlExitOk;
}

int cmdUserAdd(Context& c) {
  const std::string& id = c.word(2);
  auto valid = storage::validateName("BOSA user", id);
  if (!valid) return c.fail(valid.error());
  const auto teams = splitList(*c.option("--team"));
  if (auto rc = checkTeams(c, teams)) return *rc;
  auto existing = c.store->findBosaUser(id);
  if (!existing) return c.fail(existing.error());
  if (*existing) return c.fail("BOSA user '" + id + "' already exists", kCtlExitUsage);
  auto input = readSecret(c.in, c.err, "BOSA user secret");
  if (!input.value) return c.fail(input.error, kCtlExitUsage);
  if (input.value->view().substr(0, 8) != "sk-user-") {
    c.err << "keywayctl: note: BOSA user secrets usually start with 'sk-user-'; stored anyway\n";
  }
  auto status = c.store->addBosaUser(id, *input.value, teams);
  if (!status) return c.fail(status.error());
  c.out << "added BOSA user '" << id << "' (teams: " << joinList(teams) << ")\n";
  return kCtlExitOk;
}

int cmdUserList(Context& c) {
  return printListing(c, c.store->listBosaUsers(),
                      "no BOSA users; add one with: keywayctl bosa-user add IDENTIFIER --team TEAM",
                      {"IDENTIFIER", "TEAMS", "CREATED"}, [](const core::BosaUserRecord& u) {
                        return std::vector<std::string>{
                            u.identifier, u.teams.empty() ? "-" : joinList(u.teams, ","),
                            formatTime(u.created_unix)};
                      });
}

int cmdUserGrant(Context& c) {
  const std::string team = *c.option("--team");
  auto status = c.store->grantBosaUser(c.word(2), team);
  if (!status) return c.fail(status.error());
  c.out << "granted BOSA user '" << c.word(2) << "' to team '" << team << "'\n";
  return kCtlExitOk;
}

int cmdUserRevoke(Context& c) {
  const std::string team = *c.option("--team");
  auto status = c.store->revokeBosaUser(c.word(2), team);
  if (!status) return c.fail(status.error());
  c.out << "revoked team '" << team << "' from BOSA user '" << c.word(2) << "'\n";
  return kCtlExitOk;
}

int cmdUserRm(Context& c) {
  auto status = c.store->removeBosaUser(c.word(2));
  if (!status) return c.fail(status.error());
  c.out << "removed BOSA user '" << c.word(2) << "'\n";
  return kCtlExitOk;
}

int cmdInit(Context& c) {
  auto report = storage::initStateDir(c.config->state_dir, c.config->master_key_file);
  if (!report) return c.fail(report.error());
  c.out << (report->created_state_dir ? "created state directory " : "state directory ")
        << c.config->state_dir << "\n"
        << (report->created_master_key ? "created master key " : "master key ")
        << c.config->master_key_file
        << (report->created_master_key ? " (mode 0600; back it up: without it the store is "
                                         "unreadable)"
                                       : " (matches the store)")
        << "\n"
        << (report->created_store ? "created credential store " : "credential store ")
        << report->env_path << "\n";
  if (!report->created_state_dir && !report->created_master_key && !report->created_store) {
    c.out << "already initialised; nothing changed\n";
  }
  return kCtlExitOk;
}

// ---------------------------------------------------------------------------------------------
// Response cache

std::string cacheDir(const core::Config& config) {
  return config.cache.dir.empty() ? config.state_dir + "/cache" : config.cache.dir;
}

// Opens the cache environment exactly as keywayd does (same directory and bound, so both agree on
// the map size). nullptr (after an error on `err`) when there is no cache directory yet: keywayctl
// must not create one the daemon has not made, and there is nothing to report or purge.
// Warnings of the cache store arrive on its writer thread: they are collected here and printed by
// the command's thread, so stderr lines never interleave.
class WarningSink {
 public:
  void add(std::string_view message) {
    std::lock_guard<std::mutex> lock(mutex_);
    lines_.emplace_back(message);
  }
  void drainTo(std::ostream& err) {
    std::vector<std::string> lines;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      lines.swap(lines_);
    }
    for (const auto& line : lines) err << "keywayctl: warning: " << line << "\n";
  }

 private:
  std::mutex mutex_;
  std::vector<std::string> lines_;
};

// Opens the cache environment exactly as keywayd does (same directory and bound, so both agree on
// the map size). Null store when there is no cache directory yet (keywayctl must not create one
// the daemon has not made, and there is nothing to report or purge: rc 0) or when it is unusable
// (rc 2, error printed). close() applies what is queued, stops the writer and prints warnings.
struct OpenedCache {
  std::unique_ptr<storage::LmdbCacheStore> store;
  std::shared_ptr<WarningSink> warnings = std::make_shared<WarningSink>();
  int rc = kCtlExitOk;  // meaningful when store is null

  void close(std::ostream& err) {
    store.reset();
    warnings->drainTo(err);
  }
};

OpenedCache openCache(Context& c) {
  OpenedCache opened;
  const std::string dir = cacheDir(*c.config);
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    c.out << "no response cache yet at " << dir << " (keywayd creates it when it starts)\n";
    return opened;
  }
  if (::access(dir.c_str(), R_OK | W_OK | X_OK) != 0) {
    // Checked here because the store treats an environment it cannot open as corrupt and moves
    // it aside: a keywayctl run as the wrong user must not take the daemon's cache away.
    opened.rc = c.fail("no permission to use the response cache at " + dir +
                           "; run keywayctl as the user keywayd runs as",
                       kCtlExitFailure);
    return opened;
  }
  storage::LmdbCacheStoreOptions options;
  options.dir = dir;
  options.max_bytes = c.config->cache.max_bytes;
  options.warn = [sink = opened.warnings](std::string_view message) { sink->add(message); };
  opened.store = storage::LmdbCacheStore::open(std::move(options));
  if (!opened.store || !opened.store->healthy()) {
    opened.close(c.err);
    opened.rc = c.fail("cannot use the response cache at " + dir +
                           " (see the warnings above); nothing was done",
                       kCtlExitFailure);
  }
  return opened;
}

int cmdCacheStats(Context& c) {
  if (!c.config->cache.enabled) {
    c.out << "note: the cache is disabled in the configuration (cache.enabled: false)\n";
  }
  auto opened = openCache(c);
  if (!opened.store) return opened.rc;
  const core::CacheStats st = opened.store->stats();
  opened.close(c.err);
  const uint64_t lookups = st.hits + st.misses;
  std::ostringstream ratio;
  if (lookups == 0) {
    ratio << "- (no lookups yet)";
  } else {
    ratio.precision(1);
    ratio << std::fixed << 100.0 * static_cast<double>(st.hits) / static_cast<double>(lookups)
          << "% (" << st.hits << " hits, " << st.misses << " misses)";
  }
  std::vector<std::vector<std::string>> rows = {
      {"directory:", cacheDir(*c.config)},
      {"entries:", std::to_string(st.entries)},
      {"bytes:", formatBytes(st.bytes) + " of max " + formatBytes(st.max_bytes)},
      {"hit ratio:", ratio.str()},
      {"oldest entry:", st.entries == 0 ? std::string("-")
                                        : formatTime(st.oldest_stored_unix_ms / 1000)},
      {"evictions:", std::to_string(st.evictions)},
      {"expired:", std::to_string(st.expired)},
      {"dropped writes:", std::to_string(st.dropped_writes)},
      {"degraded events:", std::to_string(st.degraded_events)},
      {"healthy:", st.healthy ? "yes" : "no"},
  };
  printTable(c.out, rows);
  return st.healthy ? kCtlExitOk : kCtlExitFailure;
}

int cmdCachePurge(Context& c) {
  const bool all = c.args.flags.count("--all") != 0;
  const auto upstream = c.option("--upstream");
  const auto prefix = c.option("--prefix");
  if (upstream) {
    if (auto rc = checkUpstream(c, *upstream)) return *rc;
  }
  if (prefix && (*prefix)[0] != '/') {
    return c.fail("--prefix must be a path starting with '/', e.g. /v1/webhooks", kCtlExitUsage);
  }
  if (prefix && prefix->find('?') != std::string::npos) {
    return c.fail("--prefix is a path without a query (entries of every query are purged)",
                  kCtlExitUsage);
  }
  auto opened = openCache(c);
  if (!opened.store) {
    if (opened.rc == kCtlExitOk) c.out << "purged 0 entries\n";
    return opened.rc;
  }
  // purge() is synchronous and bumps the store generation: a running keywayd stops serving the
  // purged entries (and its not yet written puts) at once.
  const size_t dropped =
      all ? opened.store->purge("", "") : opened.store->purge(upstream.value_or(""),
                                                              prefix.value_or(""));
  opened.close(c.err);
  std::string scope = all ? std::string("all upstreams, all paths")
                          : (upstream ? "upstream " + *upstream : std::string("all upstreams")) +
                                (prefix ? ", paths under " + *prefix : std::string(", all paths"));
  c.out << "purged " << dropped << (dropped == 1 ? " entry" : " entries") << " (" << scope
        << ")\n";
  return kCtlExitOk;
}

// ---------------------------------------------------------------------------------------------
// BOSA schemas

// Connector names for `schemas refresh CONNECTOR`: RFC 3986 unreserved characters only, so the
// name goes into `?modules=` as is (BOSA connector names are snake_case or hyphenated).
constexpr size_t kMaxConnectorName = 128;
// The BOSA SDK's own discovery timeout (docs/bosa.md).
constexpr std::chrono::milliseconds kSchemaFetchTimeout{30000};

std::vector<const core::UpstreamConfig*> bosaUpstreams(const core::Config& config) {
  std::vector<const core::UpstreamConfig*> out;
  for (const auto& u : config.upstreams) {
    if (u.protocol == core::Protocol::kBosa) out.push_back(&u);
  }
  return out;
}

std::string plural(size_t n, const std::string& word) {
  return std::to_string(n) + " " + word + (n == 1 ? "" : "s");
}

// Text that came from an upstream (schema pointers, messages, error bodies) is shown escaped: a
// document must not be able to drive the operator's terminal. Cut at `max` bytes.
std::string printable(std::string_view s, size_t max = 400) {
  std::string out;
  for (size_t i = 0; i < s.size() && i < max; ++i) {
    const auto u = static_cast<unsigned char>(s[i]);
    if (u < 0x20 || u == 0x7f) {
      static const char* kHex = "0123456789abcdef";
      out += "\\x";
      out += kHex[u >> 4];
      out += kHex[u & 0xf];
    } else {
      out += s[i];
    }
  }
  if (s.size() > max) out += "...";
  return out;
}

int64_t nowUnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// "45s", "12m 5s", "3h 2m", "4d 1h".
std::string formatAge(int64_t ms) {
  if (ms < 0) return "in the future: check the clock";
  int64_t s = ms / 1000;
  std::ostringstream o;
  if (s < 60) {
    o << s << "s";
  } else if (s < 3600) {
    o << s / 60 << "m " << s % 60 << "s";
  } else if (s < 86400) {
    o << s / 3600 << "h " << (s % 3600) / 60 << "m";
  } else {
    o << s / 86400 << "d " << (s % 86400) / 3600 << "h";
  }
  o << " ago";
  return o.str();
}

std::string catalogSummary(const core::BosaCatalog& catalog) {
  std::string s = plural(catalog.connectorNames().size(), "connector") + ", " +
                  plural(catalog.actionCount(), "action") + ", " +
                  plural(catalog.issueCount(), "unenforced construct");
  if (!catalog.problems().empty()) s += ", " + plural(catalog.problems().size(), "catalog problem");
  return s;
}

bool canUse(const std::string& path, int mode) { return ::access(path.c_str(), mode) == 0; }

// Opens the schema environment (<state_dir>/schemas) that keywayd uses. For reading, a missing
// environment is not an error: `store` stays null (nothing stored yet; keywayctl creates nothing
// then). For writing, the state directory must exist (keywayd or `keywayctl init` makes it), and
// keywayctl refuses to create the environment in a state directory another user owns: files it
// creates (0600) would be unreadable to keywayd. Returns kCtlExitOk or the exit code of the
// error it printed.
int openSchemaStore(Context& c, bool for_write, std::shared_ptr<storage::LmdbSchemaStore>* store) {
  const std::string& state_dir = c.config->state_dir;
  const std::string env_dir = storage::schemaEnvPath(state_dir);
  struct stat st {};
  const bool env_exists = ::stat(env_dir.c_str(), &st) == 0;
  if (!env_exists && !for_write) return kCtlExitOk;
  const std::string as_daemon_user = "; run keywayctl as the user keywayd runs as";
  if (env_exists) {
    if (!S_ISDIR(st.st_mode)) {
      return c.fail("the schema store path " + env_dir + " is not a directory", kCtlExitFailure);
    }
    // LMDB readers write their slot into lock.mdb, so even `list` needs write access.
    for (const std::string& p : {env_dir, env_dir + "/data.mdb", env_dir + "/lock.mdb"}) {
      if (storage::pathExists(p) && !canUse(p, R_OK | W_OK)) {
        return c.fail("no permission to use the schema store at " + env_dir + as_daemon_user,
                      kCtlExitFailure);
      }
    }
  } else {
    struct stat state {};
    if (::stat(state_dir.c_str(), &state) != 0 || !S_ISDIR(state.st_mode)) {
      return c.fail("no state directory at " + state_dir +
                        " yet; run `keywayctl init` (or start keywayd) first",
                    kCtlExitFailure);
    }
    if (!canUse(state_dir, W_OK | X_OK)) {
      return c.fail("no permission to write in the state directory " + state_dir +
                        as_daemon_user,
                    kCtlExitFailure);
    }
    if (state.st_uid != ::geteuid()) {
      return c.fail("the state directory " + state_dir + " belongs to uid " +
                        std::to_string(state.st_uid) + ", not to this user; the schema store "
                        "created now would be unreadable to keywayd" + as_daemon_user,
                    kCtlExitFailure);
    }
  }
  auto opened = storage::LmdbSchemaStore::open(state_dir);
  if (!opened) {
    return c.fail("cannot open the schema store: " + opened.error().message, kCtlExitFailure);
  }
  *store = std::move(opened).value();
  return kCtlExitOk;
}

void printSchemas(Context& c, const core::UpstreamConfig& upstream,
                  const core::StoredSchemas& stored, const core::BosaCatalog& catalog) {
  std::ostream& out = c.out;
  const int64_t now = nowUnixMs();
  out << "upstream " << upstream.name << " (" << upstream.base_url << ")\n";
  std::vector<std::vector<std::string>> head = {
      {"  fetched:", stored.fetched_unix_ms <= 0
                         ? std::string("-")
                         : formatTime(stored.fetched_unix_ms / 1000) + " (" +
                               formatAge(now - stored.fetched_unix_ms) + ")"},
      {"  document:", formatBytes(stored.document.size())},
      {"  catalog:", catalogSummary(catalog)},
  };
  printTable(out, head);
  const auto names = catalog.connectorNames();
  if (!names.empty()) {
    std::vector<std::vector<std::string>> rows = {{"  CONNECTOR", "ACTIONS", "UNENFORCED"}};
    for (const auto& name : names) {
      const core::BosaConnector* connector = catalog.connector(name);
      size_t issues = 0;
      for (const auto& [action_name, action] : connector->actions) issues += action.issues.size();
      rows.push_back({"  " + printable(name, 120), std::to_string(connector->actions.size()),
                      std::to_string(issues)});
    }
    printTable(out, rows);
  }
  if (catalog.issueCount() > 0) {
    out << "  unenforced constructs (keyway cannot check these):\n";
    for (const auto& name : names) {
      for (const auto& [action_name, action] : catalog.connector(name)->actions) {
        for (const auto& issue : action.issues) {
          out << "    " << printable(name, 120) << "/" << printable(action_name, 120) << ": "
              << printable(issue.schema_pointer) << ": " << printable(issue.message) << "\n";
        }
      }
    }
  }
  if (!catalog.problems().empty()) {
    out << "  catalog problems (entries keyway skipped or ignored):\n";
    for (const auto& p : catalog.problems()) {
      std::string where = printable(p.connector, 120);
      if (!p.action.empty()) where += "/" + printable(p.action, 120);
      out << "    " << (where.empty() ? std::string("(document)") : where) << ": "
          << printable(p.message) << "\n";
    }
  }
}

int cmdSchemasList(Context& c) {
  const auto upstreams = bosaUpstreams(*c.config);
  if (upstreams.empty()) {
    c.out << "no BOSA upstreams configured (upstreams with protocol bosa); nothing to list\n";
    return kCtlExitOk;
  }
  std::shared_ptr<storage::LmdbSchemaStore> store;
  if (int rc = openSchemaStore(c, false, &store); rc != kCtlExitOk) return rc;
  int rc = kCtlExitOk;
  for (size_t i = 0; i < upstreams.size(); ++i) {
    const core::UpstreamConfig& u = *upstreams[i];
    if (i != 0) c.out << "\n";
    std::optional<core::StoredSchemas> stored;
    if (store) {
      auto loaded = store->load(u.name);
      if (!loaded) {
        rc = c.fail("upstream '" + u.name + "': " + loaded.error().message, kCtlExitFailure);
        continue;
      }
      stored = std::move(loaded).value();
    }
    if (!stored) {
      c.out << "no schemas stored yet for upstream '" << u.name
            << "' (they are fetched on first use, or run: keywayctl schemas refresh)\n";
      continue;
    }
    auto catalog = core::BosaCatalog::parse(stored->document);
    if (!catalog) {
      rc = c.fail("upstream '" + u.name + "': the stored document is unusable (" +
                      printable(catalog.error().message) +
                      "); replace it with `keywayctl schemas refresh`",
                  kCtlExitFailure);
      continue;
    }
    printSchemas(c, u, *stored, **catalog);
  }
  return rc;
}

enum class RefreshOutcome { kStored, kNoSuchConnector, kFailed };

RefreshOutcome refreshUpstream(Context& c, storage::LmdbSchemaStore& store,
                               const core::UpstreamConfig& u,
                               const std::optional<std::string>& connector) {
  auto current = store.load(u.name);
  if (!current) {
    c.fail(u.name + ": " + current.error().message + "; nothing was fetched", kCtlExitFailure);
    return RefreshOutcome::kFailed;
  }
  const bool have = current->has_value();
  const std::string kept = have ? "the stored document was kept" : "nothing was stored";
  const std::string url =
      u.base_url + (connector ? "/connectors/?modules=" + *connector : std::string("/connectors"));

  SchemaFetchOptions options;
  options.connect_timeout = u.connect_timeout;
  options.total_timeout = kSchemaFetchTimeout;
  options.tls = u.tls;
  auto fetched = fetchSchemaDocument(url, options);
  if (!fetched) {
    c.fail(u.name + ": " + fetched.error().message + "; " + kept, kCtlExitFailure);
    return RefreshOutcome::kFailed;
  }
  if (fetched->status != 200) {
    // An error page is shown on one line: whitespace runs (HTML indentation) become one space.
    std::string flat;
    for (char ch : std::string_view(fetched->body).substr(0, 4096)) {
      const bool space = ch == ' ' || ch == '\n' || ch == '\r' || ch == '\t';
      if (!space) {
        flat += ch;
      } else if (!flat.empty() && flat.back() != ' ') {
        flat += ' ';
      }
    }
    while (!flat.empty() && flat.back() == ' ') flat.pop_back();
    const std::string body = printable(flat, 200);
    c.fail(u.name + ": GET " + url + " answered HTTP " + std::to_string(fetched->status) +
               (body.empty() ? std::string() : " (" + body + ")") + "; " + kept,
           kCtlExitFailure);
    return RefreshOutcome::kFailed;
  }
  // Never replace a good document with garbage: what is stored must parse as a catalog.
  auto catalog = core::BosaCatalog::parse(fetched->body);
  if (!catalog) {
    c.fail(u.name + ": GET " + url + " answered 200 but not a discovery document (" +
               printable(catalog.error().message) + "); " + kept,
           kCtlExitFailure);
    return RefreshOutcome::kFailed;
  }

  std::string document;
  std::string summary;
  if (!connector) {
    if (catalog.value()->connectorNames().empty() && have) {
      auto old = core::BosaCatalog::parse((*current)->document);
      if (old && !old.value()->connectorNames().empty()) {
        c.fail(u.name + ": GET " + url + " answered a discovery document without any connector; " +
                   "the stored document was kept (" +
                   plural(old.value()->connectorNames().size(), "connector") + ")",
               kCtlExitFailure);
        return RefreshOutcome::kFailed;
      }
    }
    document = std::move(fetched->body);
    summary = u.name + ": " + catalogSummary(**catalog) + ", stored";
  } else {
    auto merged = mergeConnector(have ? &(*current)->document : nullptr, fetched->body, *connector);
    if (!merged) {
      if (merged.error().code == ErrorCode::kNotFound) {
        c.out << u.name << ": no connector '" << *connector
              << "' at the upstream; the stored document is unchanged\n";
        return RefreshOutcome::kNoSuchConnector;
      }
      c.fail(u.name + ": cannot merge connector '" + *connector + "': " +
                 printable(merged.error().message) + "; " + kept,
             kCtlExitFailure);
      return RefreshOutcome::kFailed;
    }
    auto whole = core::BosaCatalog::parse(*merged);
    if (!whole) {
      c.fail(u.name + ": the merged document does not parse (" +
                 printable(whole.error().message) + "); " + kept,
             kCtlExitFailure);
      return RefreshOutcome::kFailed;
    }
    const core::BosaConnector* fresh = whole.value()->connector(*connector);
    size_t issues = 0;
    if (fresh != nullptr) {
      for (const auto& [name, action] : fresh->actions) issues += action.issues.size();
    }
    summary = u.name + ": connector '" + *connector + "' refreshed (" +
              plural(fresh != nullptr ? fresh->actions.size() : 0, "action") + ", " +
              plural(issues, "unenforced construct") + "); document: " +
              catalogSummary(**whole) + ", stored";
    document = std::move(merged).value();
  }
  auto saved = store.save(u.name, {std::move(document), nowUnixMs()});
  if (!saved) {
    c.fail(u.name + ": " + saved.error().message, kCtlExitFailure);
    return RefreshOutcome::kFailed;
  }
  c.out << summary << "\n";
  return RefreshOutcome::kStored;
}

int cmdSchemasRefresh(Context& c) {
  std::optional<std::string> connector;
  if (c.args.words.size() > 2) {
    connector = c.word(2);
    const bool ok = !connector->empty() && connector->size() <= kMaxConnectorName &&
                    std::all_of(connector->begin(), connector->end(), [](char ch) {
                      return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                             (ch >= '0' && ch <= '9') || ch == '-' || ch == '_' || ch == '.' ||
                             ch == '~';
                    });
    if (!ok) {
      return c.fail("invalid connector name '" + printable(*connector, 130) +
                        "': 1.." + std::to_string(kMaxConnectorName) +
                        " of letters, digits, '-', '_', '.', '~' (one connector at a time)",
                    kCtlExitUsage);
    }
  }
  const auto upstreams = bosaUpstreams(*c.config);
  if (upstreams.empty()) {
    return c.fail("no BOSA upstreams configured (upstreams with protocol bosa); nothing to refresh",
                  kCtlExitUsage);
  }
  std::shared_ptr<storage::LmdbSchemaStore> store;
  if (int rc = openSchemaStore(c, true, &store); rc != kCtlExitOk) return rc;
  size_t failed = 0;
  size_t missing = 0;
  for (const auto* u : upstreams) {
    switch (refreshUpstream(c, *store, *u, connector)) {
      case RefreshOutcome::kStored:
        break;
      case RefreshOutcome::kNoSuchConnector:
        ++missing;
        break;
      case RefreshOutcome::kFailed:
        ++failed;
        break;
    }
  }
  if (failed > 0) return kCtlExitFailure;
  if (missing == upstreams.size()) {
    return c.fail("no configured BOSA upstream has a connector '" + *connector + "'",
                  kCtlExitUsage);
  }
  return kCtlExitOk;
}

// Purging everything by accident would cost every app a cold cache: ask for it explicitly.
std::optional<std::string> checkCachePurgeScope(const Args& args) {
  const bool all = args.flags.count("--all") != 0;
  if (!all && args.options.empty()) {
    return std::string("say what to purge: --upstream U and/or --prefix PATH, or --all for "
                       "everything");
  }
  if (all && !args.options.empty()) {
    return std::string("--all purges everything; do not combine it with --upstream or --prefix");
  }
  return std::nullopt;
}

const std::vector<Command>& commands() {
  constexpr Store kNoStore = Store::kNone;
  constexpr Store kStore = Store::kCredentials;
  constexpr Input kNoInput = Input::kNone;
  constexpr Input kSecretInput = Input::kSecret;
  static const std::vector<Command> table = {
      {"init", "", 0, 0, {}, {}, {}, "keywayctl init", kNoStore, kNoInput, cmdInit},
      {"team", "add", 1, 1, {"--upstreams"}, {}, {},
       "keywayctl team add NAME [--upstreams a,b,...]", kStore, kNoInput, cmdTeamAdd},
      {"team", "list", 0, 0, {}, {}, {}, "keywayctl team list", kStore, kNoInput, cmdTeamList},
      {"team", "rm", 1, 1, {}, {}, {}, "keywayctl team rm NAME", kStore, kNoInput, cmdTeamRm},
      {"client", "add", 1, 1, {"--team"}, {}, {"--team"}, "keywayctl client add NAME --team TEAM",
       kStore, kNoInput, cmdClientAdd},
      {"client", "list", 0, 0, {}, {}, {}, "keywayctl client list", kStore, kNoInput,
       cmdClientList},
      {"client", "revoke", 1, 1, {}, {}, {}, "keywayctl client revoke NAME", kStore, kNoInput,
       cmdClientRevoke},
      {"secret", "set", 1, 1, {"--team"}, {}, {}, "keywayctl secret set NAME [--team TEAM] < value",
       kStore, kSecretInput, cmdSecretSet},
      {"secret", "list", 0, 0, {}, {}, {}, "keywayctl secret list", kStore, kNoInput,
       cmdSecretList},
      {"secret", "rm", 1, 1, {"--team"}, {}, {}, "keywayctl secret rm NAME [--team TEAM]", kStore,
       kNoInput, cmdSecretRm},
      {"bosa-user", "add", 1, 1, {"--team"}, {}, {"--team"},
       "keywayctl bosa-user add IDENTIFIER --team TEAM[,TEAM...] < user-secret", kStore,
       kSecretInput, cmdUserAdd},
      {"bosa-user", "list", 0, 0, {}, {}, {}, "keywayctl bosa-user list", kStore, kNoInput,
       cmdUserList},
      {"bosa-user", "grant", 1, 1, {"--team"}, {}, {"--team"},
       "keywayctl bosa-user grant IDENTIFIER --team TEAM", kStore, kNoInput, cmdUserGrant},
      {"bosa-user", "revoke", 1, 1, {"--team"}, {}, {"--team"},
       "keywayctl bosa-user revoke IDENTIFIER --team TEAM", kStore, kNoInput, cmdUserRevoke},
      {"bosa-user", "rm", 1, 1, {}, {}, {}, "keywayctl bosa-user rm IDENTIFIER", kStore, kNoInput,
       cmdUserRm},
      {"cache", "stats", 0, 0, {}, {}, {}, "keywayctl cache stats", kNoStore, kNoInput,
       cmdCacheStats},
      {"cache", "purge", 0, 0, {"--upstream", "--prefix"}, {"--all"}, {},
       "keywayctl cache purge [--upstream U] [--prefix PATH] [--all]", kNoStore, kNoInput,
       cmdCachePurge, checkCachePurgeScope},
      {"schemas", "list", 0, 0, {}, {}, {}, "keywayctl schemas list", kNoStore, kNoInput,
       cmdSchemasList},
      {"schemas", "refresh", 0, 1, {}, {}, {}, "keywayctl schemas refresh [CONNECTOR]", kNoStore,
       kNoInput, cmdSchemasRefresh},
  };
  return table;
}

int usageError(std::ostream& err, const std::string& message) {
  err << "keywayctl: " << message << "\n";
  return kCtlExitUsage;
}

int dispatch(const std::vector<std::string>& raw, std::istream& in, std::ostream& out,
             std::ostream& err, const CtlConfigLoader& load_config) {
  Args args;
  if (auto problem = parseArgs(raw, args)) return usageError(err, problem->message);

  if (args.words.empty()) {
    if (args.help) {
      out << kGlobalUsage;
      return kCtlExitOk;
    }
    return usageError(err, "missing command; run `keywayctl --help` for the list");
  }
  const std::string& group = args.words[0];
  if (group == "help") {
    if (args.words.size() > 1) {
      auto it = groupHelp().find(args.words[1]);
      if (it == groupHelp().end()) {
        return usageError(err, "no help for unknown command '" + args.words[1] + "'");
      }
      out << it->second;
    } else {
      out << kGlobalUsage;
    }
    return kCtlExitOk;
  }
  auto help = groupHelp().find(group);
  if (help == groupHelp().end()) {
    return usageError(err, "unknown command '" + group + "'; run `keywayctl --help`");
  }
  if (args.help) {
    out << help->second;
    return kCtlExitOk;
  }

  const std::string action = group == "init" ? "" : (args.words.size() > 1 ? args.words[1] : "");
  const Command* cmd = nullptr;
  std::vector<std::string> actions;
  for (const auto& c : commands()) {
    if (c.group != group) continue;
    if (!c.action.empty()) actions.push_back(c.action);
    if (c.action == action) cmd = &c;
  }
  if (cmd == nullptr) {
    if (action.empty()) {
      return usageError(err, "`" + group + "` needs a subcommand (" + joinList(actions, ", ") +
                                 "); run `keywayctl " + group + " --help`");
    }
    return usageError(err, "unknown subcommand '" + group + " " + action + "' (expected " +
                               joinList(actions, ", ") + ")");
  }
  const size_t skip = cmd->action.empty() ? 1 : 2;
  const size_t given = args.words.size() - skip;
  const std::string prefix = group + (cmd->action.empty() ? "" : " " + cmd->action);
  const auto usage = [&](const std::string& message) {
    return usageError(err, prefix + ": " + message + " (usage: " + cmd->usage + ")");
  };
  if (cmd->input == Input::kSecret && given > cmd->max_words) {
    return usage("secret values are never taken from arguments (they would leak into shell "
                 "history and the process list); pipe the value on standard input");
  }
  if (given < cmd->min_words) return usage("missing argument");
  if (given > cmd->max_words) return usage("too many arguments");
  for (const auto& [name, value] : args.options) {
    if (std::find(cmd->options.begin(), cmd->options.end(), name) == cmd->options.end()) {
      return usage("option " + name + " does not apply");
    }
  }
  for (const auto& name : args.flags) {
    if (std::find(cmd->flags.begin(), cmd->flags.end(), name) == cmd->flags.end()) {
      return usage("option " + name + " does not apply");
    }
  }
  if (cmd->check != nullptr) {
    if (auto problem = cmd->check(args)) return usage(*problem);
  }
  for (const auto& name : cmd->required) {
    if (args.options.count(name) == 0) {
      return usage(name + " is required");
    }
  }

  Context ctx{args, in, out, err};

  auto config = load_config(args.config);
  if (!config) {
    err << "keywayctl: cannot load the configuration: " << config.error().message << "\n";
    return exitFor(config.error());
  }
  ctx.config = &*config;
  std::unique_ptr<core::CredentialStore> store;
  if (cmd->store == Store::kCredentials) {
    auto opened = storage::openLmdbCredentialStore(config->state_dir, config->master_key_file);
    if (!opened) {
      err << "keywayctl: cannot open the credential store: " << opened.error().message << "\n";
      return kCtlExitFailure;
    }
    store = std::move(opened).value();
    ctx.store = store.get();
  }
  return cmd->run(ctx);
}

}  // namespace

int runCtl(std::vector<std::string> args, std::istream& in, std::ostream& out, std::ostream& err,
           const CtlConfigLoader& load_config) {
  try {
    return dispatch(args, in, out, err, load_config);
  } catch (const std::exception& e) {
    // Last resort: third-party code (YAML, iostreams) may throw; never crash the CLI.
    err << "keywayctl: internal error: " << e.what() << "\n";
  } catch (...) {
    err << "keywayctl: internal error\n";
  }
  return kCtlExitFailure;
}

int runCtl(std::vector<std::string> args, std::istream& in, std::ostream& out, std::ostream& err) {
  return runCtl(std::move(args), in, out, err,
                [](const std::optional<std::string>& path) { return loadConfig(path); });
}

}  // namespace keyway::daemon
