// keywayctl end to end on a temp state dir: every command, exit codes, outputs (the token alone on
// the last line, never a secret value), --config placement, secret input rules, and that a store
// already open (the daemon) sees keywayctl's writes at once, also from another process; cache
// stats and purge against a cache store held open by the "daemon"; schemas list and refresh
// against a fake BOSA on port 0 (stored byte for byte, module merge, bad answers never stored).
#include "daemon/ctl/ctl.hpp"

#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <memory>
#include <sstream>

#include "core/cache_store.hpp"
#include "daemon/etcd_client.hpp"
#include "core/config.hpp"
#include "storage/crypto.hpp"
#include "storage/file_util.hpp"
#include "storage/lmdb_cache_store.hpp"
#include "storage/lmdb_credential_store.hpp"
#include "storage/lmdb_schema_store.hpp"
#include "daemon/schema_fetch.hpp"
#include "tests/unit/daemon/raw_http_server.hpp"
#include "tests/unit/storage/test_util.hpp"

#include <rapidjson/document.h>

#include <map>
#include <mutex>
#include <set>

namespace keyway::daemon {
namespace {

using keyway::testing::contains;
using keyway::testing::fileMode;
using keyway::testing::readFile;
using keyway::testing::TempDir;
using keyway::testing::writeFile;

struct Outcome {
  int rc = -1;
  std::string out;
  std::string err;
  std::string lastLine() const {
    std::string s = out;
    if (!s.empty() && s.back() == '\n') s.pop_back();
    const size_t nl = s.rfind('\n');
    return nl == std::string::npos ? s : s.substr(nl + 1);
  }
};

// Where keywayctl looks without --config in these tests: $KEYWAY_CONFIG names a file (the
// injected loaders ignore the path), and there is no installed file.
CtlConfigSearch testSearch(std::map<std::string, std::string> env = {{"KEYWAY_CONFIG",
                                                                      "/test/keyway.yaml"}},
                           std::set<std::string> existing = {}) {
  CtlConfigSearch out;
  out.getenv = [env](const char* name) -> std::optional<std::string> {
    auto it = env.find(name);
    if (it == env.end()) return std::nullopt;
    return it->second;
  };
  out.exists = [existing](const std::string& path) { return existing.count(path) != 0; };
  out.installed = "/etc/keyway/keyway.yaml";
  return out;
}

// A keywayctl with an injected config loader: state in a temp dir, three upstreams.
struct Ctl {
  TempDir dir;
  std::vector<std::optional<std::string>> config_paths;  // what the loader was asked for
  std::optional<core::Error> config_error;
  // Where keywayctl looks without --config (testSearch).
  std::map<std::string, std::string> env = {{"KEYWAY_CONFIG", "/test/keyway.yaml"}};
  std::set<std::string> existing_files;

  core::Config config() const {
    core::Config c;
    c.state_dir = dir / "state";
    c.master_key_file = dir / "state/master.key";
    for (const char* name : {"bundleup-api", "bosa", "bundleiq"}) {
      core::UpstreamConfig u;
      u.name = name;
      u.base_url = "http://127.0.0.1:1";
      u.protocol = core::defaultProtocolFor(name);
      u.credential.secret = std::string(name == std::string("bosa")       ? "bosa.api_key"
                                        : name == std::string("bundleiq") ? "bundleiq.api_key"
                                                                          : "bundleup.api_key");
      c.upstreams.push_back(u);
    }
    return c;
  }

  Outcome run(std::vector<std::string> args, const std::string& stdin_text = "") {
    std::istringstream in(stdin_text);
    std::ostringstream out;
    std::ostringstream err;
    Outcome o;
    o.rc = runCtl(std::move(args), in, out, err,
                  [this](const std::optional<std::string>& path) -> core::Result<core::Config> {
                    config_paths.push_back(path);
                    if (config_error) return *config_error;
                    return config();
                  },
                  search());
    o.out = out.str();
    o.err = err.str();
    return o;
  }

  CtlConfigSearch search() const { return testSearch(env, existing_files); }

  std::unique_ptr<core::CredentialStore> openStore() {
    auto store = storage::openLmdbCredentialStore(dir / "state", dir / "state/master.key");
    REQUIRE(store.ok());
    return std::move(store).value();
  }
};

#define CHECK_RC(outcome, expected) \
  CHECK_MESSAGE((outcome).rc == (expected), "out: " << (outcome).out << " err: " << (outcome).err)

TEST_CASE("keywayctl: help and usage errors") {
  Ctl ctl;
  auto help = ctl.run({"--help"});
  CHECK_RC(help, 0);
  CHECK(contains(help.out, "usage: keywayctl"));
  CHECK(contains(help.out, "bosa-user add"));
  for (const char* group : {"init", "team", "client", "secret", "bosa-user", "cache", "schemas"}) {
    auto g = ctl.run({group, "--help"});
    CHECK_RC(g, 0);
    CHECK(contains(g.out, std::string("keywayctl ") + group));
    CHECK(g.err.empty());
  }
  CHECK_RC(ctl.run({"secret", "set", "--help"}), 0);
  CHECK_RC(ctl.run({"-h", "client"}), 0);
  CHECK_RC(ctl.run({"help", "team"}), 0);

  auto none = ctl.run({});
  CHECK_RC(none, 1);
  CHECK(contains(none.err, "missing command"));
  auto unknown = ctl.run({"frobnicate"});
  CHECK_RC(unknown, 1);
  CHECK(contains(unknown.err, "unknown command 'frobnicate'"));
  auto sub = ctl.run({"team", "destroy", "x"});
  CHECK_RC(sub, 1);
  CHECK(contains(sub.err, "unknown subcommand"));
  CHECK_RC(ctl.run({"team"}), 1);
  CHECK_RC(ctl.run({"team", "add"}), 1);
  CHECK_RC(ctl.run({"team", "add", "a", "b"}), 1);
  CHECK_RC(ctl.run({"team", "list", "--bogus"}), 1);
  CHECK_RC(ctl.run({"team", "list", "--team", "x"}), 1);
  auto missing_team = ctl.run({"client", "add", "app"});
  CHECK_RC(missing_team, 1);
  CHECK(contains(missing_team.err, "--team is required"));
  CHECK_RC(ctl.run({"client", "add", "app", "--team"}), 1);
  CHECK_RC(ctl.run({"--config"}), 1);
  CHECK_RC(ctl.run({"--config", "a", "--config", "b", "team", "list"}), 1);
  // Usage errors are found before any configuration or store is touched.
  CHECK(ctl.config_paths.empty());
  for (const auto& o : {none, unknown, sub, missing_team}) {
    CHECK(o.out.empty());
    CHECK(std::count(o.err.begin(), o.err.end(), '\n') == 1);  // one line
  }
}

TEST_CASE("keywayctl: --config before or after the subcommand") {
  Ctl ctl;
  REQUIRE(ctl.run({"init"}).rc == 0);
  CHECK_RC(ctl.run({"--config", "/etc/a.yaml", "team", "list"}), 0);
  CHECK_RC(ctl.run({"team", "list", "--config", "/etc/b.yaml"}), 0);
  CHECK_RC(ctl.run({"team", "--config=/etc/c.yaml", "list"}), 0);
  REQUIRE(ctl.config_paths.size() == 4);
  CHECK(ctl.config_paths[0] == std::optional<std::string>("/test/keyway.yaml"));  // $KEYWAY_CONFIG
  CHECK(ctl.config_paths[1] == std::optional<std::string>("/etc/a.yaml"));
  CHECK(ctl.config_paths[2] == std::optional<std::string>("/etc/b.yaml"));
  CHECK(ctl.config_paths[3] == std::optional<std::string>("/etc/c.yaml"));

  ctl.config_error = core::Error::make(core::ErrorCode::kBadRequest, "x.yaml:3: listen: bad");
  auto bad = ctl.run({"team", "list", "--config", "x.yaml"});
  CHECK_RC(bad, 1);
  CHECK(contains(bad.err, "x.yaml:3: listen: bad"));
}

TEST_CASE("keywayctl: without --config, $KEYWAY_CONFIG, then the installed file, else an error") {
  Ctl ctl;
  // --config wins over both.
  ctl.existing_files = {"/etc/keyway/keyway.yaml"};
  CHECK_RC(ctl.run({"team", "list", "--config", "/etc/a.yaml"}), 2);  // no store yet
  // $KEYWAY_CONFIG wins over the installed file.
  CHECK_RC(ctl.run({"team", "list"}), 2);
  // An empty $KEYWAY_CONFIG counts as unset.
  ctl.env = {{"KEYWAY_CONFIG", ""}};
  auto installed = ctl.run({"team", "list"});
  CHECK_RC(installed, 2);
  REQUIRE(ctl.config_paths.size() == 3);
  CHECK(ctl.config_paths[0] == std::optional<std::string>("/etc/a.yaml"));
  CHECK(ctl.config_paths[1] == std::optional<std::string>("/test/keyway.yaml"));
  CHECK(ctl.config_paths[2] == std::optional<std::string>("/etc/keyway/keyway.yaml"));
  // The store error names the configuration that chose the state dir, and --config.
  CHECK(contains(installed.err, "/etc/keyway/keyway.yaml (the installed default)"));
  CHECK(contains(installed.err, "--config FILE"));

  // Nothing to go by: refused (never a store under the working directory), naming the ways.
  ctl.existing_files.clear();
  auto none = ctl.run({"init"});
  CHECK_RC(none, 1);
  CHECK(contains(none.err, "--config FILE"));
  CHECK(contains(none.err, "KEYWAY_CONFIG"));
  CHECK(contains(none.err, "/etc/keyway/keyway.yaml"));
  CHECK(ctl.config_paths.size() == 3);  // no loader call
  CHECK_FALSE(storage::pathExists(ctl.dir / "state"));

  // A configuration found by $KEYWAY_CONFIG that does not load says how it was found.
  ctl.env = {{"KEYWAY_CONFIG", "/test/keyway.yaml"}};
  ctl.config_error = core::Error::make(core::ErrorCode::kBadRequest, "/test/keyway.yaml: nope");
  auto bad = ctl.run({"team", "list"});
  CHECK_RC(bad, 1);
  CHECK(contains(bad.err, "found by $KEYWAY_CONFIG"));
}

TEST_CASE("keywayctl: --version needs no configuration") {
  Ctl ctl;
  ctl.env.clear();
  auto v = ctl.run({"--version"});
  CHECK_RC(v, 0);
  CHECK(v.out == "keywayctl " KEYWAY_VERSION "\n");
  CHECK(ctl.config_paths.empty());
}

TEST_CASE("keywayctl: init, then the store is refused without it or with a bad key") {
  Ctl ctl;
  auto before = ctl.run({"team", "list"});
  CHECK_RC(before, 2);
  CHECK(contains(before.err, "keywayctl init"));
  CHECK(contains(before.err, "--config"));

  auto init = ctl.run({"init"});
  CHECK_RC(init, 0);
  CHECK(contains(init.out, "created master key"));
  CHECK(fileMode(ctl.dir / "state") == 0700);
  CHECK(fileMode(ctl.dir / "state/master.key") == 0600);
  CHECK(fileMode(ctl.dir / "state/credentials/data.mdb") == 0600);
  auto again = ctl.run({"init"});
  CHECK_RC(again, 0);
  CHECK(contains(again.out, "already initialised"));

  ::chmod((ctl.dir / "state/master.key").c_str(), 0644);
  auto loose = ctl.run({"team", "list"});
  CHECK_RC(loose, 2);
  CHECK(contains(loose.err, "chmod 600"));
  ::chmod((ctl.dir / "state/master.key").c_str(), 0600);

  writeFile(ctl.dir / "state/master.key", std::string(64, 'f'), 0600);  // another valid key
  auto wrong = ctl.run({"team", "list"});
  CHECK_RC(wrong, 2);
  CHECK(contains(wrong.err, "master key does not match this state directory"));
}

TEST_CASE("keywayctl: teams") {
  Ctl ctl;
  REQUIRE(ctl.run({"init"}).rc == 0);
  CHECK(contains(ctl.run({"team", "list"}).out, "no teams"));
  auto add = ctl.run({"team", "add", "ops"});
  CHECK_RC(add, 0);
  CHECK(contains(add.out, "upstreams: all"));
  CHECK_RC(ctl.run({"team", "add", "dev", "--upstreams", "bosa, bundleiq"}), 0);
  auto dup = ctl.run({"team", "add", "ops"});
  CHECK_RC(dup, 1);
  CHECK(contains(dup.err, "already exists"));
  auto bad_up = ctl.run({"team", "add", "qa", "--upstreams", "bosa,nope"});
  CHECK_RC(bad_up, 1);
  CHECK(contains(bad_up.err, "unknown upstream 'nope'"));
  CHECK(contains(bad_up.err, "bundleup-api, bosa, bundleiq"));
  CHECK_RC(ctl.run({"team", "add", "qa", "--upstreams", "bosa,"}), 1);
  auto bad_name = ctl.run({"team", "add", "bad/name"});
  CHECK_RC(bad_name, 1);
  CHECK(contains(bad_name.err, "invalid team name"));

  auto list = ctl.run({"team", "list"});
  CHECK_RC(list, 0);
  CHECK(contains(list.out, "NAME"));
  CHECK(contains(list.out, "dev   bosa,bundleiq"));
  CHECK(contains(list.out, "ops   all"));
  CHECK_FALSE(contains(list.out, "qa"));

  auto json = ctl.run({"team", "list", "--json"});
  CHECK_RC(json, 0);
  rapidjson::Document doc;
  REQUIRE_FALSE(doc.Parse(json.out.c_str()).HasParseError());
  REQUIRE(doc.IsArray());
  REQUIRE(doc.Size() == 2);
  CHECK(std::string(doc[0]["name"].GetString()) == "dev");
  CHECK_FALSE(doc[0]["all_upstreams"].GetBool());
  CHECK(doc[0]["upstreams"].Size() == 2);
  CHECK(doc[1]["all_upstreams"].GetBool());
  CHECK(doc[1]["created"].IsString());

  // team set: in place, either a list or --all-upstreams.
  CHECK_RC(ctl.run({"team", "set", "dev"}), 1);
  CHECK_RC(ctl.run({"team", "set", "dev", "--upstreams", "bosa", "--all-upstreams"}), 1);
  CHECK_RC(ctl.run({"team", "set", "nope", "--all-upstreams"}), 1);
  CHECK_RC(ctl.run({"team", "set", "dev", "--upstreams", "nope"}), 1);
  auto set = ctl.run({"team", "set", "dev", "--upstreams", "bundleup-api"});
  CHECK_RC(set, 0);
  CHECK(contains(set.out, "now has upstreams: bundleup-api"));
  CHECK(contains(ctl.run({"team", "list"}).out, "dev   bundleup-api"));
  CHECK_RC(ctl.run({"team", "set", "dev", "--all-upstreams"}), 0);
  CHECK(contains(ctl.run({"team", "list"}).out, "dev   all"));

  CHECK_RC(ctl.run({"team", "rm", "nope"}), 1);
  auto rm = ctl.run({"team", "rm", "dev"});
  CHECK_RC(rm, 0);
  CHECK(contains(rm.out, "removed team 'dev'"));
  CHECK_FALSE(contains(ctl.run({"team", "list"}).out, "dev"));
}

TEST_CASE("keywayctl: team rm names what would go with the team; --force deletes it") {
  Ctl ctl;
  REQUIRE(ctl.run({"init"}).rc == 0);
  REQUIRE(ctl.run({"team", "add", "ops"}).rc == 0);
  REQUIRE(ctl.run({"client", "add", "app", "--team", "ops"}).rc == 0);
  REQUIRE(ctl.run({"client", "revoke", "app"}).rc == 0);
  REQUIRE(ctl.run({"secret", "set", "bosa.api_key", "--team", "ops"}, "k").rc == 0);
  REQUIRE(ctl.run({"bosa-user", "add", "alice", "--team", "ops"}, "sk-user-a").rc == 0);
  auto refused = ctl.run({"team", "rm", "ops"});
  CHECK_RC(refused, 1);
  CHECK(contains(refused.err, "secret(s) bosa.api_key"));
  CHECK(contains(refused.err, "BOSA user(s) alice"));
  CHECK(contains(refused.err, "--force"));
  CHECK(contains(ctl.run({"team", "list"}).out, "ops"));
  auto forced = ctl.run({"team", "rm", "ops", "--force"});
  CHECK_RC(forced, 0);
  CHECK(contains(forced.out, "its secrets bosa.api_key"));
  CHECK(contains(forced.out, "its grants of BOSA users alice"));
  CHECK(contains(forced.out, "its revoked clients app"));
  CHECK(contains(ctl.run({"client", "list"}).out, "no clients"));
}

TEST_CASE("keywayctl: client rotate, rm, list --team and --json") {
  Ctl ctl;
  REQUIRE(ctl.run({"init"}).rc == 0);
  REQUIRE(ctl.run({"team", "add", "ops"}).rc == 0);
  REQUIRE(ctl.run({"team", "add", "dev"}).rc == 0);
  const std::string t1 = ctl.run({"client", "add", "app", "--team", "ops"}).lastLine();
  REQUIRE(ctl.run({"client", "add", "tool", "--team", "dev"}).rc == 0);
  auto store = ctl.openStore();

  CHECK_RC(ctl.run({"client", "rotate", "ghost"}), 1);
  CHECK_RC(ctl.run({"client", "rotate", "app", "--grace", "soon"}), 1);
  CHECK_RC(ctl.run({"client", "rotate", "app", "--grace", "31d"}), 1);
  CHECK_RC(ctl.run({"client", "rotate", "app", "--grace", "721h"}), 1);
  auto rotated = ctl.run({"client", "rotate", "app", "--grace", "1h"});
  CHECK_RC(rotated, 0);
  const std::string t2 = rotated.lastLine();
  CHECK(storage::isWellFormedClientToken(t2));
  CHECK(t2 != t1);
  CHECK(contains(rotated.out, "the old token keeps working until"));
  CHECK((*store->findClientByToken(t1))->name == "app");
  CHECK((*store->findClientByToken(t2))->name == "app");

  auto list = ctl.run({"client", "list", "--json"});
  CHECK_RC(list, 0);
  CHECK_FALSE(contains(list.out, t1));
  CHECK_FALSE(contains(list.out, t2));
  rapidjson::Document doc;
  REQUIRE_FALSE(doc.Parse(list.out.c_str()).HasParseError());
  REQUIRE(doc.Size() == 2);
  CHECK(std::string(doc[0]["name"].GetString()) == "app");
  CHECK(std::string(doc[0]["status"].GetString()) == "active");
  CHECK(doc[0]["rotated"].IsString());
  CHECK(doc[0]["previous_token_valid_until"].IsString());
  CHECK(doc[1]["rotated"].IsNull());
  CHECK(doc[1]["previous_token_valid_until"].IsNull());
  auto filtered = ctl.run({"client", "list", "--team", "dev"});
  CHECK_RC(filtered, 0);
  CHECK(contains(filtered.out, "tool"));
  CHECK_FALSE(contains(filtered.out, "app"));
  CHECK_RC(ctl.run({"client", "list", "--team", "nope"}), 1);
  CHECK_RC(ctl.run({"client", "list", "--team", "ops,dev", "--json"}), 0);

  auto now = ctl.run({"client", "rotate", "app"});  // no grace: both earlier tokens stop
  CHECK_RC(now, 0);
  CHECK(contains(now.out, "stopped working now"));
  CHECK_FALSE(store->findClientByToken(t1)->has_value());
  CHECK_FALSE(store->findClientByToken(t2)->has_value());
  const std::string t3 = now.lastLine();

  auto active = ctl.run({"client", "rm", "app"});
  CHECK_RC(active, 1);
  CHECK(contains(active.err, "client revoke app"));
  CHECK_RC(ctl.run({"client", "rm", "app", "--force"}), 0);
  CHECK_FALSE(store->findClientByToken(t3)->has_value());
  CHECK_RC(ctl.run({"client", "rm", "app"}), 1);
  CHECK_RC(ctl.run({"client", "revoke", "tool"}), 0);
  CHECK_RC(ctl.run({"client", "rm", "tool"}), 0);
  CHECK(ctl.run({"client", "list", "--json"}).out == "[]\n");
}

TEST_CASE("keywayctl: clients; the token alone on the last line") {
  Ctl ctl;
  REQUIRE(ctl.run({"init"}).rc == 0);
  REQUIRE(ctl.run({"team", "add", "ops"}).rc == 0);
  auto unknown_team = ctl.run({"client", "add", "app", "--team", "nope"});
  CHECK_RC(unknown_team, 1);
  CHECK(contains(unknown_team.err, "unknown team 'nope'"));

  auto add = ctl.run({"client", "add", "app", "--team", "ops"});
  CHECK_RC(add, 0);
  const std::string token = add.lastLine();
  CHECK(storage::isWellFormedClientToken(token));
  CHECK(add.out.size() > token.size() + 1);  // there is explanation above it
  CHECK(add.out.substr(add.out.size() - token.size() - 1) == token + "\n");
  CHECK_FALSE(contains(add.err, token));

  auto store = ctl.openStore();
  auto client = store->findClientByToken(token);
  REQUIRE(client.ok());
  REQUIRE(client->has_value());
  CHECK((*client)->name == "app");
  CHECK((*client)->team == "ops");

  CHECK_RC(ctl.run({"client", "add", "app", "--team", "ops"}), 1);
  auto list = ctl.run({"client", "list"});
  CHECK_RC(list, 0);
  CHECK(contains(list.out, "app   ops   active"));
  CHECK_FALSE(contains(list.out, token));

  auto rm_team = ctl.run({"team", "rm", "ops"});
  CHECK_RC(rm_team, 1);
  CHECK(contains(rm_team.err, "active client"));

  CHECK_RC(ctl.run({"client", "revoke", "ghost"}), 1);
  CHECK_RC(ctl.run({"client", "revoke", "app"}), 0);
  CHECK((*store->findClientByToken(token))->revoked);  // the daemon's view, at once
  CHECK(contains(ctl.run({"client", "list"}).out, "revoked"));
  CHECK_RC(ctl.run({"team", "rm", "ops"}), 0);
}

TEST_CASE("keywayctl: secrets come from stdin only and are never shown") {
  Ctl ctl;
  REQUIRE(ctl.run({"init"}).rc == 0);
  REQUIRE(ctl.run({"team", "add", "ops"}).rc == 0);
  auto daemon = ctl.openStore();  // opened before the writes, like a running keywayd

  auto set = ctl.run({"secret", "set", "bosa.api_key"}, "shared-VALUE-123\n");
  CHECK_RC(set, 0);
  CHECK(contains(set.out, "(shared)"));
  CHECK(set.err.empty());
  auto set_team = ctl.run({"secret", "set", "bosa.api_key", "--team", "ops"}, "ops-VALUE-456");
  CHECK_RC(set_team, 0);
  CHECK(contains(set_team.out, "team 'ops'"));
  auto resolved = daemon->resolveSecret("bosa.api_key", "ops");
  REQUIRE(resolved.ok());
  REQUIRE(resolved->has_value());
  CHECK((*resolved)->value.view() == "ops-VALUE-456");
  CHECK((*daemon->resolveSecret("bosa.api_key", ""))->value.view() == "shared-VALUE-123");
  REQUIRE(ctl.run({"secret", "set", "crlf.key"}, "crlf-VALUE\r\n").rc == 0);
  CHECK((*daemon->resolveSecret("crlf.key", ""))->value.view() == "crlf-VALUE");

  auto typo = ctl.run({"secret", "set", "bosa.apikey"}, "v");
  CHECK_RC(typo, 0);
  CHECK(contains(typo.err, "note: no configured upstream injects 'bosa.apikey'"));

  auto as_arg = ctl.run({"secret", "set", "bosa.api_key", "ARG-SECRET-789"});
  CHECK_RC(as_arg, 1);
  CHECK(contains(as_arg.err, "standard input"));
  CHECK_FALSE(contains(as_arg.err, "ARG-SECRET-789"));
  auto as_opt = ctl.run({"secret", "set", "bosa.api_key", "--value=OPT-SECRET-789"});
  CHECK_RC(as_opt, 1);
  CHECK_FALSE(contains(as_opt.err, "OPT-SECRET-789"));
  auto empty = ctl.run({"secret", "set", "x"}, "\n");
  CHECK_RC(empty, 1);
  CHECK(contains(empty.err, "empty"));
  auto two_lines = ctl.run({"secret", "set", "x"}, "line1\nline2\n");
  CHECK_RC(two_lines, 1);
  CHECK(contains(two_lines.err, "line break"));
  CHECK_FALSE(contains(two_lines.err, "line1"));
  CHECK_RC(ctl.run({"secret", "set", "x"}, std::string(70000, 'a')), 1);
  CHECK_RC(ctl.run({"secret", "set", "x", "--team", "nope"}, "v"), 1);
  CHECK_FALSE(daemon->resolveSecret("x", "").value().has_value());

  auto list = ctl.run({"secret", "list"});
  CHECK_RC(list, 0);
  CHECK(contains(list.out, "bosa.api_key"));
  CHECK(contains(list.out, "shared"));
  CHECK(contains(list.out, "team:ops"));
  CHECK(contains(list.out, "Z"));  // update time, ISO 8601 UTC
  CHECK_FALSE(contains(list.out, "VALUE"));

  CHECK_RC(ctl.run({"secret", "rm", "bosa.api_key", "--team", "ops"}), 0);
  CHECK((*daemon->resolveSecret("bosa.api_key", "ops"))->scope == "shared");
  auto rm_again = ctl.run({"secret", "rm", "bosa.api_key", "--team", "ops"});
  CHECK_RC(rm_again, 1);
  CHECK(contains(rm_again.err, "no secret 'bosa.api_key'"));
}

TEST_CASE("keywayctl: BOSA users") {
  Ctl ctl;
  REQUIRE(ctl.run({"init"}).rc == 0);
  REQUIRE(ctl.run({"team", "add", "ops"}).rc == 0);
  REQUIRE(ctl.run({"team", "add", "dev"}).rc == 0);
  auto add = ctl.run({"bosa-user", "add", "alice@example.com", "--team", "ops,dev"},
                     "sk-user-SECRET-abc\n");
  CHECK_RC(add, 0);
  CHECK(contains(add.out, "teams: ops, dev"));
  CHECK(add.err.empty());
  auto store = ctl.openStore();
  CHECK((*store->bosaUserSecret("alice@example.com"))->view() == "sk-user-SECRET-abc");

  CHECK_RC(ctl.run({"bosa-user", "add", "alice@example.com", "--team", "ops"}, "sk-user-x"), 1);
  CHECK_RC(ctl.run({"bosa-user", "add", "bob", "--team", "nope"}, "sk-user-x"), 1);
  CHECK_RC(ctl.run({"bosa-user", "add", "bob"}, "sk-user-x"), 1);
  CHECK_RC(ctl.run({"bosa-user", "add", "bob", "--team", "ops", "sk-user-arg"}), 1);
  auto odd = ctl.run({"bosa-user", "add", "bob", "--team", "ops"}, "not-a-user-secret");
  CHECK_RC(odd, 0);
  CHECK(contains(odd.err, "sk-user-"));
  CHECK_FALSE(contains(odd.err, "not-a-user-secret"));

  auto list = ctl.run({"bosa-user", "list"});
  CHECK_RC(list, 0);
  CHECK(contains(list.out, "alice@example.com"));
  CHECK(contains(list.out, "ops,dev"));
  CHECK_FALSE(contains(list.out, "SECRET"));

  CHECK_RC(ctl.run({"bosa-user", "revoke", "alice@example.com", "--team", "ops"}), 0);
  // Idempotent, as grant: what is already so is said and exits 0.
  auto again = ctl.run({"bosa-user", "revoke", "alice@example.com", "--team", "ops"});
  CHECK_RC(again, 0);
  CHECK(contains(again.out, "was not granted to team(s) ops"));
  CHECK((*store->findBosaUser("alice@example.com"))->teams == std::vector<std::string>{"dev"});
  // A list, as for add; a team already granted is reported, the others granted.
  auto both = ctl.run({"bosa-user", "grant", "alice@example.com", "--team", "ops,dev"});
  CHECK_RC(both, 0);
  CHECK(contains(both.out, "granted BOSA user 'alice@example.com': team(s) ops"));
  CHECK(contains(both.out, "was already granted to team(s) dev"));
  CHECK((*store->findBosaUser("alice@example.com"))->teams ==
        std::vector<std::string>{"dev", "ops"});
  CHECK_RC(ctl.run({"bosa-user", "revoke", "alice@example.com", "--team", "ops,nope"}), 1);
  CHECK((*store->findBosaUser("alice@example.com"))->teams ==
        std::vector<std::string>{"dev", "ops"});  // all or nothing
  CHECK_RC(ctl.run({"bosa-user", "grant", "alice@example.com", "--team", "ops,"}), 1);

  // A team without a BOSA upstream could never use the grant: refused, naming the fix.
  REQUIRE(ctl.run({"team", "add", "web", "--upstreams", "bundleup-api"}).rc == 0);
  auto no_bosa = ctl.run({"bosa-user", "grant", "alice@example.com", "--team", "web"});
  CHECK_RC(no_bosa, 1);
  CHECK(contains(no_bosa.err, "team 'web' has no access to a BOSA upstream"));
  CHECK(contains(no_bosa.err, "keywayctl team set web --upstreams bundleup-api,bosa"));
  CHECK_RC(ctl.run({"bosa-user", "add", "dave", "--team", "web"}, "sk-user-d"), 1);
  CHECK_FALSE(store->findBosaUser("dave")->has_value());

  // set-secret replaces the secret and keeps the grants.
  auto set = ctl.run({"bosa-user", "set-secret", "alice@example.com"}, "sk-user-NEW\n");
  CHECK_RC(set, 0);
  CHECK(contains(set.out, "teams kept: dev, ops"));
  CHECK_FALSE(contains(set.out + set.err, "sk-user-NEW"));
  CHECK((*store->bosaUserSecret("alice@example.com"))->view() == "sk-user-NEW");
  CHECK((*store->findBosaUser("alice@example.com"))->teams ==
        std::vector<std::string>{"dev", "ops"});
  CHECK_RC(ctl.run({"bosa-user", "set-secret", "carol"}, "sk-user-x"), 1);
  CHECK_RC(ctl.run({"bosa-user", "set-secret", "alice@example.com"}, ""), 1);
  CHECK((*store->bosaUserSecret("alice@example.com"))->view() == "sk-user-NEW");

  CHECK_RC(ctl.run({"bosa-user", "grant", "carol", "--team", "ops"}), 1);
  CHECK_RC(ctl.run({"bosa-user", "grant", "alice@example.com"}), 1);
  CHECK_RC(ctl.run({"bosa-user", "rm", "alice@example.com"}), 0);
  CHECK_RC(ctl.run({"bosa-user", "rm", "alice@example.com"}), 1);
  CHECK_FALSE(store->findBosaUser("alice@example.com")->has_value());
}

TEST_CASE("keywayctl: schemas usage errors; list on a fresh state dir creates nothing") {
  Ctl ctl;
  auto list = ctl.run({"schemas", "list"});
  CHECK_RC(list, 0);
  CHECK(contains(list.out, "no schemas stored yet for upstream 'bosa'"));
  CHECK(contains(list.out, "keywayctl schemas refresh"));
  CHECK_FALSE(contains(list.out, "bundleiq"));  // only protocol bosa upstreams
  CHECK_FALSE(storage::pathExists(ctl.dir / "state"));
  CHECK_RC(ctl.run({"schemas", "list", "extra"}), 1);
  CHECK_RC(ctl.run({"schemas", "refresh", "a", "b"}), 1);
  CHECK_RC(ctl.run({"schemas", "refresh", "--all"}), 1);
  CHECK_RC(ctl.run({"schemas", "bogus"}), 1);
  for (const char* bad : {"a,b", "a b", "../x", "x?y=1", "a/b", ""}) {
    auto o = ctl.run({"schemas", "refresh", bad});
    CHECK_RC(o, 1);
    CHECK(contains(o.err, "invalid connector name"));
  }
  CHECK_RC(ctl.run({"schemas", "refresh", std::string(129, 'a')}), 1);
  // Without a state directory nothing is fetched or created.
  auto refresh = ctl.run({"schemas", "refresh"});
  CHECK_RC(refresh, 2);
  CHECK(contains(refresh.err, "keywayctl init"));
  CHECK_FALSE(storage::pathExists(ctl.dir / "state"));
  CHECK_RC(ctl.run({"cache", "bogus"}), 1);
  auto help = ctl.run({"cache", "--help"});
  CHECK_RC(help, 0);
  CHECK(contains(help.out, "--all"));
}

// Runs keywayctl in a child process: LMDB forbids one process opening an environment twice, and
// the parent holds the "daemon's" cache store open. Output comes back through files.
Outcome runInChild(Ctl& ctl, const std::vector<std::string>& args) {
  const std::string out_path = ctl.dir / "child.out";
  const std::string err_path = ctl.dir / "child.err";
  const pid_t pid = ::fork();
  if (pid == 0) {
    auto o = ctl.run(args);
    writeFile(out_path, o.out, 0600);
    writeFile(err_path, o.err, 0600);
    ::_exit(o.rc);
  }
  Outcome o;
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  o.rc = WEXITSTATUS(status);
  o.out = readFile(out_path);
  o.err = readFile(err_path);
  return o;
}

int64_t nowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

core::CachedResponse response(const std::string& body) {
  core::CachedResponse r;
  r.status = 200;
  r.reason = "OK";
  r.headers.push_back({"Content-Type", "application/json"});
  r.body = body;
  r.stored_unix_ms = nowMs();
  r.fresh_until_unix_ms = r.stored_unix_ms + 60'000;
  r.stale_until_unix_ms = r.stored_unix_ms + 3'600'000;
  return r;
}

std::unique_ptr<storage::LmdbCacheStore> openDaemonCache(Ctl& ctl) {
  storage::LmdbCacheStoreOptions options;
  options.dir = ctl.dir / "state/cache";
  options.max_bytes = ctl.config().cache.max_bytes;
  auto store = storage::LmdbCacheStore::open(options);
  REQUIRE(store);
  REQUIRE(store->healthy());
  return store;
}

TEST_CASE("keywayctl: cache purge needs a scope; bad options are usage errors") {
  Ctl ctl;
  auto none = ctl.run({"cache", "purge"});
  CHECK_RC(none, 1);
  CHECK(contains(none.err, "--all"));
  CHECK(none.out.empty());
  CHECK_RC(ctl.run({"cache", "purge", "--all", "--upstream", "bosa"}), 1);
  CHECK_RC(ctl.run({"cache", "purge", "--all", "--prefix", "/x"}), 1);
  CHECK_RC(ctl.run({"cache", "purge", "--upstream"}), 1);
  CHECK_RC(ctl.run({"cache", "purge", "extra", "--all"}), 1);
  CHECK_RC(ctl.run({"cache", "stats", "--all"}), 1);
  CHECK_RC(ctl.run({"cache", "stats", "--upstream", "bosa"}), 1);
  // Found before the configuration is loaded.
  CHECK(ctl.config_paths.empty());

  auto unknown = ctl.run({"cache", "purge", "--upstream", "github"});
  CHECK_RC(unknown, 1);
  CHECK(contains(unknown.err, "unknown upstream 'github'"));
  CHECK(contains(unknown.err, "bundleup-api"));
  auto relative = ctl.run({"cache", "purge", "--prefix", "v1/webhooks"});
  CHECK_RC(relative, 1);
  CHECK(contains(relative.err, "starting with '/'"));
  CHECK_RC(ctl.run({"cache", "purge", "--prefix", "/v1/webhooks?limit=5"}), 1);

  ctl.config_error = core::Error::make(core::ErrorCode::kInternal, "boom");
  auto bad_config = ctl.run({"cache", "stats"});
  CHECK(bad_config.rc != 0);
  CHECK(contains(bad_config.err, "boom"));
}

TEST_CASE("keywayctl: cache stats and purge without a cache directory create nothing") {
  Ctl ctl;
  REQUIRE(ctl.run({"init"}).rc == 0);
  auto stats = ctl.run({"cache", "stats"});
  CHECK_RC(stats, 0);
  CHECK(contains(stats.out, "no response cache yet"));
  auto purge = ctl.run({"cache", "purge", "--all"});
  CHECK_RC(purge, 0);
  CHECK(contains(purge.out, "purged 0 entries"));
  struct stat st {};
  CHECK(::stat((ctl.dir / "state/cache").c_str(), &st) != 0);
}

TEST_CASE("keywayctl: cache stats uses cache.dir and says when the cache is disabled") {
  Ctl ctl;
  REQUIRE(ctl.run({"init"}).rc == 0);
  core::Config config = ctl.config();
  config.cache.enabled = false;
  config.cache.dir = ctl.dir / "elsewhere";
  std::istringstream in;
  std::ostringstream out, err;
  const auto loader = [&config](const std::optional<std::string>&) -> core::Result<core::Config> {
    return config;
  };
  CHECK(runCtl({"cache", "stats"}, in, out, err, loader, testSearch()) == 0);
  CHECK(contains(out.str(), "disabled"));
  CHECK(contains(out.str(), ctl.dir / "elsewhere"));
  {
    storage::LmdbCacheStoreOptions options;
    options.dir = ctl.dir / "elsewhere";
    auto store = storage::LmdbCacheStore::open(options);
    REQUIRE(store->healthy());
    store->put("k", {"bosa", "/connectors/x/list_y", "id"}, response("{}"));
    store->flush();
  }
  std::ostringstream out2, err2;
  CHECK(runCtl({"cache", "stats"}, in, out2, err2, loader, testSearch()) == 0);
  CHECK_MESSAGE(contains(out2.str(), "entries:          1"), out2.str());
  std::ostringstream out3, err3;
  CHECK(runCtl({"cache", "purge", "--upstream", "bosa", "--prefix", "/connectors/x"}, in, out3,
               err3, loader, testSearch()) == 0);
  CHECK(contains(out3.str(), "purged 1 entry"));
}

TEST_CASE("keywayctl: cache stats reads the daemon's store; purge takes effect in it at once") {
  Ctl ctl;
  REQUIRE(ctl.run({"init"}).rc == 0);
  auto daemon = openDaemonCache(ctl);
  const int64_t before_ms = nowMs();
  daemon->put("k-webhooks", {"bundleup-api", "/v1/webhooks", "idA"}, response("[1]"));
  daemon->put("k-webhooks-b", {"bundleup-api", "/v1/webhooks", "idB"}, response("[2]"));
  daemon->put("k-conns", {"bundleup-api", "/v1/connections", "idA"}, response("[3]"));
  daemon->put("k-notes", {"bundleiq", "/v1/notes", "idA"}, response("[4]"));
  CHECK(daemon->get("k-webhooks").has_value());
  CHECK(daemon->get("k-notes").has_value());
  CHECK_FALSE(daemon->get("k-absent").has_value());
  daemon->flush();
  const core::CacheStats daemon_stats = daemon->stats();

  auto stats = runInChild(ctl, {"cache", "stats"});
  CHECK_RC(stats, 0);
  CHECK(contains(stats.out, "entries:"));
  CHECK(contains(stats.out, "entries:          4"));
  REQUIRE(daemon_stats.bytes > 0);
  CHECK(contains(stats.out, "bytes:            " + std::to_string(daemon_stats.bytes) + " B"));
  CHECK(contains(stats.out, "of max " + std::to_string(daemon_stats.max_bytes) + " B"));
  CHECK(daemon_stats.max_bytes == ctl.config().cache.max_bytes);
  const uint64_t hits = daemon_stats.hits, misses = daemon_stats.misses;
  REQUIRE(hits + misses > 0);
  std::ostringstream ratio;
  ratio.precision(1);
  ratio << std::fixed << 100.0 * static_cast<double>(hits) / static_cast<double>(hits + misses)
        << "% (" << hits << " hits, " << misses << " misses)";
  CHECK_MESSAGE(contains(stats.out, ratio.str()), stats.out);
  CHECK(contains(stats.out, "healthy:          yes"));
  // The oldest entry time is this test's minute (UTC, ISO 8601), not "-".
  const time_t t = static_cast<time_t>(before_ms / 1000);
  struct tm tm {};
  gmtime_r(&t, &tm);
  char year[8];
  strftime(year, sizeof year, "%Y-", &tm);
  CHECK(contains(stats.out, std::string("oldest entry:     ") + year));

  // Scoped purge: one upstream and path prefix, every identity.
  auto scoped = runInChild(ctl, {"cache", "purge", "--upstream", "bundleup-api", "--prefix",
                                 "/v1/webhooks"});
  CHECK_RC(scoped, 0);
  CHECK(contains(scoped.out, "purged 2 entries"));
  CHECK_FALSE(daemon->get("k-webhooks").has_value());
  CHECK_FALSE(daemon->get("k-webhooks-b").has_value());
  CHECK(daemon->get("k-conns").has_value());
  CHECK(daemon->get("k-notes").has_value());

  auto by_upstream = runInChild(ctl, {"cache", "purge", "--upstream", "bundleiq"});
  CHECK_RC(by_upstream, 0);
  CHECK(contains(by_upstream.out, "purged 1 entry"));
  CHECK_FALSE(daemon->get("k-notes").has_value());
  CHECK(daemon->get("k-conns").has_value());

  // A put the daemon has not written yet belongs to the old generation: never served after.
  daemon->put("k-pending", {"bundleiq", "/v1/notes", "idA"}, response("[5]"));
  auto all = runInChild(ctl, {"cache", "purge", "--all"});
  CHECK_RC(all, 0);
  CHECK(contains(all.out, "purged "));
  CHECK_FALSE(daemon->get("k-conns").has_value());
  CHECK_FALSE(daemon->get("k-pending").has_value());
  daemon->flush();
  CHECK(daemon->stats().entries == 0);

  auto empty = runInChild(ctl, {"cache", "stats"});
  CHECK_RC(empty, 0);
  CHECK(contains(empty.out, "entries:          0"));
  CHECK(contains(empty.out, "oldest entry:     -"));
}

TEST_CASE("keywayctl: a write from another process is seen by an open store at once") {
  Ctl ctl;
  REQUIRE(ctl.run({"init"}).rc == 0);
  REQUIRE(ctl.run({"team", "add", "ops"}).rc == 0);
  auto daemon = ctl.openStore();
  const uint64_t g0 = daemon->generation();
  const pid_t pid = ::fork();
  if (pid == 0) {
    auto o = ctl.run({"secret", "set", "bundleiq.api_key"}, "child-value\n");
    ::_exit(o.rc);
  }
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(daemon->generation() != g0);
  auto resolved = daemon->resolveSecret("bundleiq.api_key", "ops");
  REQUIRE(resolved.ok());
  REQUIRE(resolved->has_value());
  CHECK((*resolved)->value.view() == "child-value");
}

TEST_CASE("keywayctl: through the real YAML loader") {
  TempDir dir;
  const std::string config = dir / "keyway.yaml";
  writeFile(config,
            "listen: 127.0.0.1:0\n"
            "state_dir: " + (dir / "state") + "\n"
            "master_key_file: " + (dir / "keys/master.key") + "\n"
            "upstreams:\n"
            "  bosa: { base_url: http://127.0.0.1:9 }\n"
            "  bundleiq: { base_url: http://127.0.0.1:9 }\n",
            0600);
  std::istringstream in;
  std::ostringstream out;
  std::ostringstream err;
  REQUIRE_MESSAGE(runCtl({"init", "--config", config}, in, out, err) == 0, err.str());
  CHECK(fileMode(dir / "keys/master.key") == 0600);
  CHECK(fileMode(dir / "keys") == 0700);
  CHECK(runCtl({"--config", config, "team", "add", "ops", "--upstreams", "bosa"}, in, out, err) ==
        0);
  std::ostringstream err2;
  CHECK(runCtl({"--config", config, "team", "add", "x", "--upstreams", "bundleup-api"}, in, out,
               err2) == 1);
  CHECK(contains(err2.str(), "unknown upstream 'bundleup-api'"));
  std::ostringstream err3;
  CHECK(runCtl({"--config", dir / "missing.yaml", "team", "list"}, in, out, err3) != 0);
  CHECK(contains(err3.str(), "missing.yaml"));
}


// --- schemas list | refresh against a fake BOSA on port 0 ---------------------------------------

using core::ErrorCode;

// Two connectors; github/list_pull_requests has a pattern RE2 cannot enforce (a backreference),
// slack has a malformed entry (a catalog problem), github/integrations is not an action.
const std::string kDiscovery = R"({
  "github": {
    "list_pull_requests": {"method": "POST", "path": "/connectors/github/list_pull_requests",
      "docstring": "List pull requests", "parameters": {},
      "request_body": {"title": "R", "type": "object", "required": ["owner"],
        "properties": {"owner": {"type": "string"}, "repo": {"type": "string", "pattern": "^(a)\\1$"}}}},
    "create_issue": {"method": "POST", "path": "/connectors/github/create_issue", "docstring": "",
      "parameters": {}, "request_body": {"title": "C", "type": "object",
        "properties": {"title": {"type": "string", "maxLength": 10}}}},
    "integrations": {"method": "POST", "path": "/connectors/github/integrations"}
  },
  "slack": {"send_message": {"method": "POST", "path": "/connectors/slack/send_message",
              "docstring": "", "parameters": {},
              "request_body": {"title": "S", "type": "object", "properties": {"text": {"type": "string"}}}},
            "broken": 1.50E1}
}
)";

// What `?modules=github` answers after github gained an action.
const std::string kGithubModule = R"({"github": {
  "list_pull_requests": {"method": "POST", "path": "/connectors/github/list_pull_requests",
    "docstring": "", "parameters": {}, "request_body": {"title": "R", "type": "object",
      "properties": {"owner": {"type": "string"}}}},
  "create_issue": {"method": "POST", "path": "/connectors/github/create_issue", "docstring": "",
    "parameters": {}, "request_body": {"title": "C", "type": "object"}},
  "get_repo": {"method": "POST", "path": "/connectors/github/get_repo", "docstring": "",
    "parameters": {}, "request_body": {"title": "G", "type": "object", "properties": {"r": {"$ref": "https://example.com/remote.json"}}}}
}})";

// A fake BOSA: answers each path from a table the test changes as it goes.
class FakeBosa {
 public:
  FakeBosa()
      : server_([this](const testing::ReceivedRequest& request) {
          std::lock_guard<std::mutex> lock(mutex_);
          auto it = answers_.find(request.target);
          if (it == answers_.end()) {
            return testing::Script{testing::send(testing::response(404, "Not Found", {}, "no"))};
          }
          return testing::Script{testing::send(it->second)};
        }) {}
  void answer(const std::string& target, int status, const std::string& body,
              const std::string& content_type = "application/json") {
    std::lock_guard<std::mutex> lock(mutex_);
    answers_[target] = testing::response(status, status == 200 ? "OK" : "Error",
                                         {{"Content-Type", content_type}}, body);
  }
  std::string baseUrl() const { return server_.url(""); }
  std::vector<testing::ReceivedRequest> requests() const { return server_.requests(); }

 private:
  std::mutex mutex_;
  std::map<std::string, std::string> answers_;
  testing::RawHttpServer server_;
};

// A keywayctl whose configuration has the given BOSA upstreams (name -> base URL) and one
// BundleIQ upstream; the state directory exists (as after keywayd's first start).
struct SchemaCtl {
  TempDir dir;
  core::Config config;

  explicit SchemaCtl(const std::vector<std::pair<std::string, std::string>>& bosa,
                     bool make_state_dir = true) {
    config.state_dir = dir / "state";
    config.master_key_file = dir / "state/master.key";
    for (const auto& [name, base] : bosa) {
      core::UpstreamConfig u;
      u.name = name;
      u.base_url = base;
      u.protocol = core::Protocol::kBosa;
      u.credential.header = "X-API-Key";
      u.credential.secret = "bosa.api_key";
      u.connect_timeout = std::chrono::milliseconds(2000);
      config.upstreams.push_back(u);
    }
    core::UpstreamConfig iq;
    iq.name = "bundleiq";
    iq.base_url = "http://127.0.0.1:1";
    iq.protocol = core::Protocol::kBundleIq;
    config.upstreams.push_back(iq);
    if (make_state_dir) REQUIRE(storage::ensurePrivateDirectory(config.state_dir).ok());
  }

  Outcome run(std::vector<std::string> args) {
    std::istringstream in;
    std::ostringstream out;
    std::ostringstream err;
    Outcome o;
    o.rc = runCtl(std::move(args), in, out, err,
                  [this](const std::optional<std::string>&) -> core::Result<core::Config> {
                    return config;
                  },
                  testSearch());
    o.out = out.str();
    o.err = err.str();
    return o;
  }

  std::shared_ptr<storage::LmdbSchemaStore> store() {
    auto s = storage::LmdbSchemaStore::open(config.state_dir);
    REQUIRE(s.ok());
    return s.value();
  }
  std::optional<core::StoredSchemas> stored(const std::string& upstream = "bosa") {
    auto loaded = store()->load(upstream);
    REQUIRE(loaded.ok());
    return *loaded;
  }
};

void checkNoCredentials(const testing::ReceivedRequest& r) {
  CHECK(r.method == "GET");
  CHECK(core::headerValue(r.headers, "Accept").value_or("") == "application/json");
  CHECK(core::findHeader(r.headers, "X-API-Key") == nullptr);
  CHECK(core::findHeader(r.headers, "Authorization") == nullptr);
  CHECK(core::findHeader(r.headers, "Cookie") == nullptr);
  CHECK(r.body.empty());
}

TEST_CASE("keywayctl schemas: refresh stores the document, list shows it") {
  FakeBosa bosa;
  bosa.answer("/connectors", 200, kDiscovery);
  SchemaCtl ctl({{"bosa", bosa.baseUrl()}});
  const uint64_t g0 = ctl.store()->generation();  // the "daemon" holds the store open

  const int64_t before = nowMs();
  auto refresh = ctl.run({"schemas", "refresh"});
  const int64_t after = nowMs();
  CHECK_RC(refresh, 0);
  CHECK(refresh.out ==
        "bosa: 2 connectors, 3 actions, 1 unenforced construct, 1 catalog problem, stored\n");
  CHECK(refresh.err.empty());
  const auto requests = bosa.requests();
  REQUIRE(requests.size() == 1);
  CHECK(requests[0].target == "/connectors");
  checkNoCredentials(requests[0]);

  auto stored = ctl.stored();
  REQUIRE(stored.has_value());
  CHECK(stored->document == kDiscovery);  // byte for byte, as the upstream sent it
  CHECK(stored->fetched_unix_ms >= before);
  CHECK(stored->fetched_unix_ms <= after);
  CHECK(ctl.store()->generation() != g0);
  CHECK(fileMode(storage::schemaEnvPath(ctl.config.state_dir)) == 0700);

  auto list = ctl.run({"schemas", "list"});
  CHECK_RC(list, 0);
  INFO(list.out);
  CHECK(contains(list.out, "upstream bosa (" + bosa.baseUrl() + ")"));
  CHECK(contains(list.out, "fetched:"));
  CHECK(contains(list.out, "Z ("));
  CHECK(contains(list.out, "s ago)"));
  CHECK(contains(list.out, "2 connectors, 3 actions, 1 unenforced construct"));
  CHECK(contains(list.out, "CONNECTOR"));
  // Per connector: actions and unenforced constructs, aligned columns.
  CHECK(contains(list.out, "  github     2        1\n"));
  CHECK(contains(list.out, "  slack      1        0\n"));
  CHECK(contains(list.out,
                 "    github/list_pull_requests: "
                 "/github/list_pull_requests/request_body/properties/repo/pattern: "));
  CHECK(contains(list.out, "backreference"));
  CHECK(contains(list.out, "    slack/broken: endpoint entry is not an object; skipped\n"));
  CHECK_FALSE(contains(list.out, "integrations"));
  CHECK_FALSE(contains(list.out, "no schemas stored"));
  CHECK(list.err.empty());
}

TEST_CASE("keywayctl schemas: a refresh by another process is seen by the daemon's store") {
  FakeBosa bosa;
  bosa.answer("/connectors", 200, kDiscovery);
  SchemaCtl ctl({{"bosa", bosa.baseUrl()}});
  auto daemon = ctl.store();
  const uint64_t g0 = daemon->generation();
  CHECK_FALSE(daemon->load("bosa")->has_value());
  const pid_t pid = ::fork();
  if (pid == 0) ::_exit(ctl.run({"schemas", "refresh"}).rc);
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(daemon->generation() != g0);
  auto loaded = daemon->load("bosa");
  REQUIRE(loaded.ok());
  REQUIRE(loaded->has_value());
  CHECK((*loaded)->document == kDiscovery);
}

TEST_CASE("keywayctl schemas: refresh CONNECTOR merges that connector only") {
  FakeBosa bosa;
  bosa.answer("/connectors", 200, kDiscovery);
  bosa.answer("/connectors/?modules=github", 200, kGithubModule);
  bosa.answer("/connectors/?modules=nope", 200, "{}");
  SchemaCtl ctl({{"bosa", bosa.baseUrl()}});
  CHECK_RC(ctl.run({"schemas", "refresh"}), 0);
  const int64_t first_fetch = ctl.stored()->fetched_unix_ms;

  auto module = ctl.run({"schemas", "refresh", "github"});
  CHECK_RC(module, 0);
  CHECK(module.out ==
        "bosa: connector 'github' refreshed (3 actions, 1 unenforced construct); document: "
        "2 connectors, 4 actions, 1 unenforced construct, 1 catalog problem, stored\n");
  const auto requests = bosa.requests();
  REQUIRE(requests.size() == 2);
  CHECK(requests[1].target == "/connectors/?modules=github");
  checkNoCredentials(requests[1]);

  auto stored = ctl.stored();
  REQUIRE(stored.has_value());
  CHECK(stored->fetched_unix_ms >= first_fetch);
  rapidjson::Document merged, original, fresh;
  merged.Parse(stored->document.c_str());
  original.Parse(kDiscovery.c_str());
  fresh.Parse(kGithubModule.c_str());
  REQUIRE(merged.IsObject());
  CHECK(merged.MemberCount() == 2);
  CHECK(merged.MemberBegin()->name == "github");  // kept in place
  CHECK(merged["github"] == fresh["github"]);
  CHECK(merged["slack"] == original["slack"]);
  // The other connectors are the very bytes the upstream sent (1.50E1 would come out of a
  // re-encoding as 15.0), and so is the refreshed one.
  const size_t slack_begin = kDiscovery.find("\"slack\"");
  const size_t slack_end = kDiscovery.find("1.50E1}") + 7;
  CHECK(contains(stored->document, kDiscovery.substr(slack_begin, slack_end - slack_begin)));
  CHECK(contains(stored->document, kGithubModule.substr(1, kGithubModule.size() - 2)));

  auto list = ctl.run({"schemas", "list"});
  CHECK_RC(list, 0);
  CHECK(contains(list.out, "  github     3        1\n"));
  CHECK(contains(list.out, "github/get_repo: /github/get_repo/request_body/properties/r"));

  // A connector the upstream does not have: usage error, nothing changes.
  const uint64_t g = ctl.store()->generation();
  const std::string doc = ctl.stored()->document;
  auto nope = ctl.run({"schemas", "refresh", "nope"});
  CHECK_RC(nope, 1);
  CHECK(contains(nope.out, "bosa: no connector 'nope'"));
  CHECK(contains(nope.err, "no configured BOSA upstream has a connector 'nope'"));
  CHECK(ctl.store()->generation() == g);
  CHECK(ctl.stored()->document == doc);
}

TEST_CASE("keywayctl schemas: a module refresh with nothing stored stores just that module") {
  FakeBosa bosa;
  bosa.answer("/connectors/?modules=github", 200, kGithubModule);
  SchemaCtl ctl({{"bosa", bosa.baseUrl()}});
  auto o = ctl.run({"schemas", "refresh", "github"});
  CHECK_RC(o, 0);
  CHECK(contains(o.out, "document: 1 connector, 3 actions"));
  CHECK(ctl.stored()->document == kGithubModule);
  CHECK(bosa.requests().size() == 1);
}

TEST_CASE("keywayctl schemas: a bad answer never replaces the stored document") {
  FakeBosa bosa;
  bosa.answer("/connectors", 200, kDiscovery);
  SchemaCtl ctl({{"bosa", bosa.baseUrl()}});
  CHECK_RC(ctl.run({"schemas", "refresh"}), 0);
  const auto good = ctl.stored();
  const uint64_t g = ctl.store()->generation();

  struct Bad {
    int status;
    std::string body;
    std::string expect;
  };
  for (const Bad& bad : {Bad{500, "{\"detail\":\"boom\"}", "answered HTTP 500 ({\"detail\":\"boom\"})"},
                         Bad{503, "", "answered HTTP 503;"},
                         Bad{200, "<html>maintenance</html>", "not a discovery document"},
                         Bad{200, "[\"github\"]", "not a discovery document"},
                         Bad{200, "{\"github\": {", "not a discovery document"},
                         Bad{200, "{}", "without any connector"},
                         Bad{404, "no", "answered HTTP 404"}}) {
    CAPTURE(bad.body);
    bosa.answer("/connectors", bad.status, bad.body);
    bosa.answer("/connectors/?modules=github", bad.status, bad.body);
    auto full = ctl.run({"schemas", "refresh"});
    CHECK_RC(full, 2);
    CHECK(contains(full.err, "keywayctl: bosa: "));
    CHECK(contains(full.err, bad.expect));
    CHECK(contains(full.err, "the stored document was kept"));
    CHECK(full.out.empty());
    if (bad.body != "{}") {  // `{}` is a valid (empty) module answer: "no connector", exit 1
      auto module = ctl.run({"schemas", "refresh", "github"});
      CHECK_RC(module, 2);
      CHECK(contains(module.err, "the stored document was kept"));
    }
    CHECK(ctl.stored()->document == good->document);
    CHECK(ctl.stored()->fetched_unix_ms == good->fetched_unix_ms);
    CHECK(ctl.store()->generation() == g);
  }
  // A control character in the error body is shown escaped, never sent to the terminal raw.
  bosa.answer("/connectors", 502, "bad\x1b[31mgateway");
  auto escaped = ctl.run({"schemas", "refresh"});
  CHECK_RC(escaped, 2);
  CHECK(contains(escaped.err, "bad\\x1b[31mgateway"));
  CHECK_FALSE(contains(escaped.err, "\x1b"));
}

TEST_CASE("keywayctl schemas: unreachable upstream exits 2; nothing stored stays nothing") {
  SchemaCtl ctl({{"bosa", std::string("http://127.0.0.1:1")}});  // nothing listens on port 1
  auto o = ctl.run({"schemas", "refresh"});
  CHECK_RC(o, 2);
  CHECK(contains(o.err, "keywayctl: bosa: GET http://127.0.0.1:1/connectors: unreachable"));
  CHECK(contains(o.err, "nothing was stored"));
  CHECK_FALSE(ctl.stored().has_value());
  auto list = ctl.run({"schemas", "list"});
  CHECK_RC(list, 0);
  CHECK(contains(list.out, "no schemas stored yet for upstream 'bosa'"));
}

TEST_CASE("keywayctl schemas: every BOSA upstream is refreshed; one failing gives exit 2") {
  FakeBosa prod;
  FakeBosa staging;
  prod.answer("/connectors", 200, kDiscovery);
  staging.answer("/connectors", 200, kGithubModule);
  SchemaCtl ctl({{"bosa", prod.baseUrl()}, {"bosa-staging", staging.baseUrl()}});
  auto o = ctl.run({"schemas", "refresh"});
  CHECK_RC(o, 0);
  CHECK(contains(o.out, "bosa: 2 connectors, 3 actions"));
  CHECK(contains(o.out, "bosa-staging: 1 connector, 3 actions"));
  CHECK(ctl.stored("bosa")->document == kDiscovery);
  CHECK(ctl.stored("bosa-staging")->document == kGithubModule);
  auto list = ctl.run({"schemas", "list"});
  CHECK_RC(list, 0);
  CHECK(contains(list.out, "upstream bosa ("));
  CHECK(contains(list.out, "upstream bosa-staging ("));

  staging.answer("/connectors", 500, "down");
  prod.answer("/connectors", 200, kGithubModule);
  auto partial = ctl.run({"schemas", "refresh"});
  CHECK_RC(partial, 2);
  CHECK(contains(partial.out, "bosa: 1 connector, 3 actions"));  // the healthy one is stored
  CHECK(contains(partial.err, "bosa-staging: GET "));
  CHECK(ctl.stored("bosa")->document == kGithubModule);
  CHECK(ctl.stored("bosa-staging")->document == kGithubModule);
}

TEST_CASE("keywayctl schemas: no BOSA upstream configured; a damaged stored document") {
  SchemaCtl none({});
  auto list = none.run({"schemas", "list"});
  CHECK_RC(list, 0);
  CHECK(contains(list.out, "no BOSA upstreams configured"));
  auto refresh = none.run({"schemas", "refresh"});
  CHECK_RC(refresh, 1);
  CHECK(contains(refresh.err, "no BOSA upstreams configured"));

  SchemaCtl ctl({{"bosa", std::string("http://127.0.0.1:1")}});
  REQUIRE(ctl.store()->save("bosa", {"not json", nowMs()}).ok());
  auto damaged = ctl.run({"schemas", "list"});
  CHECK_RC(damaged, 2);
  CHECK(contains(damaged.err, "the stored document is unusable"));
  CHECK(contains(damaged.err, "keywayctl schemas refresh"));
}

TEST_CASE("keywayctl schemas: list escapes control characters from the document") {
  SchemaCtl ctl({{"bosa", std::string("http://127.0.0.1:1")}});
  const std::string doc =
      R"({"evil\u001b[2J": {"act": {"method": "POST", "path": "/x", "request_body": {"type": "object", "properties": {"a": {"type": "string", "pattern": "(a)\\1"}}}}}})";
  REQUIRE(ctl.store()->save("bosa", {doc, nowMs() - 3'725'000}).ok());
  auto list = ctl.run({"schemas", "list"});
  CHECK_RC(list, 0);
  CHECK(contains(list.out, "evil\\x1b[2J"));
  CHECK_FALSE(contains(list.out, "\x1b"));
  CHECK(contains(list.out, "(1h 2m ago)"));
}

TEST_CASE("schema fetch: merge splices bytes; spans; bounds") {
  const std::string stored = "{ \"a\" : [1, 2.50] ,\n\"b\":{\"x\":1.50E1}, \"a\": 3 , \"c\\u0041\": \"s\"}";
  const std::string module = "{\"a\": {\"new\" : true}}";
  auto merged = mergeConnector(&stored, module, "a");
  REQUIRE(merged.ok());
  // a replaced in place (the later duplicate dropped), b and cA verbatim.
  CHECK(*merged == "{\"a\": {\"new\" : true},\"b\":{\"x\":1.50E1},\"c\\u0041\": \"s\"}");
  auto appended = mergeConnector(&stored, "{\"z\":{}, \"y\":{}}", "z");
  REQUIRE(appended.ok());
  CHECK(*appended ==
        "{\"a\" : [1, 2.50],\"b\":{\"x\":1.50E1},\"a\": 3,\"c\\u0041\": \"s\",\"z\":{}}");
  auto alone = mergeConnector(nullptr, "{\"z\":{}, \"y\":{}}", "y");
  REQUIRE(alone.ok());
  CHECK(*alone == "{\"y\":{}}");
  auto cA = mergeConnector(&stored, "{\"cA\":{\"k\":1}}", "cA");  // keys compare decoded
  REQUIRE(cA.ok());
  CHECK(contains(*cA, "\"cA\":{\"k\":1}}"));
  CHECK_FALSE(contains(*cA, "\\u0041"));

  CHECK(mergeConnector(&stored, "{\"a\": 5}", "a").error().code == ErrorCode::kNotFound);
  CHECK(mergeConnector(&stored, "{}", "a").error().code == ErrorCode::kNotFound);
  CHECK(mergeConnector(&stored, "[]", "a").error().code == ErrorCode::kBadRequest);
  CHECK(mergeConnector(&stored, "{\"a\":{}} x", "a").error().code == ErrorCode::kBadRequest);
  const std::string bad_stored = "\"text\"";
  auto e = mergeConnector(&bad_stored, module, "a");
  REQUIRE_FALSE(e.ok());
  CHECK(contains(e.error().message, "stored document"));

  // Deep nesting is no problem for the iterative reader.
  const std::string deep = "{\"d\":" + std::string(200000, '[') + std::string(200000, ']') + "}";
  auto spans = topLevelMembers(deep);
  REQUIRE(spans.ok());
  REQUIRE(spans->size() == 1);
  CHECK((*spans)[0].value_end == deep.size() - 1);
  CHECK_FALSE((*spans)[0].value_is_object);
  for (const std::string& not_object : {std::string(""), std::string("1"), std::string("null"),
                                        std::string("{\"a\":"), std::string("{\"a\":1}}"),
                                        std::string("{\"\xff\":1}")}) {
    CAPTURE(not_object);
    CHECK(topLevelMembers(not_object).error().code == ErrorCode::kBadRequest);
  }
}

TEST_CASE("schema fetch: size bound, timeout, bad URLs") {
  FakeBosa bosa;
  bosa.answer("/big", 200, std::string(5000, 'x'));
  SchemaFetchOptions small;
  small.max_body_bytes = 1000;
  auto big = fetchSchemaDocument(bosa.baseUrl() + "/big", small);
  REQUIRE_FALSE(big.ok());
  CHECK(big.error().code == ErrorCode::kPayloadTooLarge);
  auto ok = fetchSchemaDocument(bosa.baseUrl() + "/big");
  REQUIRE(ok.ok());
  CHECK(ok->status == 200);
  CHECK(ok->body.size() == 5000);
  CHECK(ok->content_type == "application/json");

  testing::RawHttpServer stalled([](const testing::ReceivedRequest&) {
    return testing::Script{testing::stall()};
  });
  SchemaFetchOptions quick;
  quick.total_timeout = std::chrono::milliseconds(300);
  const auto t0 = std::chrono::steady_clock::now();
  auto slow = fetchSchemaDocument(stalled.url("/connectors"), quick);
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5));
  REQUIRE_FALSE(slow.ok());
  CHECK(slow.error().code == ErrorCode::kUpstreamTimeout);
  CHECK(contains(slow.error().message, "timed out"));

  CHECK(fetchSchemaDocument("ftp://127.0.0.1/x").error().code == ErrorCode::kBadRequest);
  CHECK(fetchSchemaDocument("file:///etc/passwd").error().code == ErrorCode::kBadRequest);
  CHECK(fetchSchemaDocument("http://[::1/").error().code == ErrorCode::kBadRequest);
}

}  // namespace
}  // namespace keyway::daemon

TEST_CASE("etcd gateway encoding: standard base64 both ways, and prefix range ends") {
  using keyway::daemon::base64Decode;
  using keyway::daemon::base64Encode;
  using keyway::daemon::prefixRangeEnd;
  CHECK(base64Encode("") == "");
  CHECK(base64Encode("f") == "Zg==");
  CHECK(base64Encode("fo") == "Zm8=");
  CHECK(base64Encode("foo") == "Zm9v");
  CHECK(base64Encode("/keyway/") == "L2tleXdheS8=");
  std::string all;
  for (int i = 0; i < 256; ++i) all.push_back(static_cast<char>(i));
  CHECK(base64Decode(base64Encode(all)) == all);
  CHECK(base64Decode("Zm9v") == std::string("foo"));
  CHECK_FALSE(base64Decode("Zm9v!").has_value());
  CHECK_FALSE(base64Decode("Z").has_value());
  CHECK(prefixRangeEnd("/keyway/") == "/keyway0");
  CHECK(prefixRangeEnd(std::string("a\xff", 2)) == "b");
  CHECK(prefixRangeEnd(std::string("\xff", 1)) == std::string(1, '\0'));
}
