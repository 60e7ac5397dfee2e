// Internal to daemon/ctl/: what a command is given (arguments, config, store), how it is declared.
#pragma once

#include <algorithm>
#include <istream>
#include <map>
#include <optional>
#include <ostream>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "core/config.hpp"
#include "core/credential_store.hpp"
#include "core/result.hpp"
#include "daemon/ctl/ctl.hpp"
#include "daemon/ctl/text.hpp"

namespace keyway::daemon::ctl {

// The command line once parsed: words in order, options by name, wherever they stood.
struct Args {
  std::vector<std::string> words;
  std::map<std::string, std::string> options;  // "--team" -> value
  std::set<std::string> flags;                 // "--all"
  std::optional<std::string> config;
  bool help = false;
  bool version = false;
};

// kCtlExitUsage for errors in what was asked (bad input, unknown or duplicate names), else
// kCtlExitFailure (storage, I/O).
int exitFor(const core::Error& error);

// What a command's run() is given; out for people, err for one-line errors and notes.
struct Context {
  const Args& args;
  std::istream& in;
  std::ostream& out;
  std::ostream& err;
  const core::Config* config = nullptr;
  std::optional<std::string> config_file{};  // the file `config` came from, as found
  core::CredentialStore* store = nullptr;  // set for commands declared with Store::kCredentials
  std::string config_path{};               // the configuration file in use
  std::string config_source{};             // how it was found: "--config", "$KEYWAY_CONFIG", ...

  // 0 is the group, 1 the action, 2 the first argument (dispatch has checked how many there are).
  const std::string& word(size_t i) const { return args.words[i]; }
  std::optional<std::string> option(const std::string& name) const {
    auto it = args.options.find(name);
    if (it == args.options.end()) return std::nullopt;
    return it->second;
  }
  bool flag(const std::string& name) const { return args.flags.count(name) != 0; }
  // Prints "keywayctl: MESSAGE" on err and returns `code`.
  int fail(const std::string& message, int code) const;
  int fail(const core::Error& error) const { return fail(error.message, exitFor(error)); }
  // For "nothing found here" messages: which configuration named this state directory, and
  // how to name the daemon's own.
  std::string whereHint() const;
};

enum class Store { kNone, kCredentials };  // kCredentials: opened before run, in Context::store
enum class Input { kNone, kSecret };      // kSecret: reads a secret on stdin, never from arguments

// One command: what dispatch checks before the configuration or a store is touched, then what runs.
struct Command {
  std::string action;  // the second word; empty for a group that is a single command (`init`)
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

// A first word of the command line, e.g. `team`, with its help text and its commands.
struct CommandGroup {
  std::string name;
  std::string help;               // `keywayctl NAME --help`
  std::vector<Command> commands;  // in the order usage errors list their actions
};

// The fleet's credential store in etcd, for a configuration with `fleet:`.
core::Result<std::unique_ptr<core::CredentialStore>> openFleetStore(const core::Config& config);

// Finds and loads the configuration, opens the credential store when `command` needs it and
// runs it.
int runCommand(const Command& command, const Args& args, std::istream& in, std::ostream& out,
               std::ostream& err, const CtlConfigLoader& load_config,
               const CtlConfigSearch& search);

// Checks that run before a secret is prompted for or anything is written, so that nobody types a
// secret for nothing: nullopt when they pass, else the exit code of the error printed.
std::optional<int> checkTeams(Context& c, const std::vector<std::string>& teams);
std::optional<int> checkUpstream(Context& c, const std::string& name);
// Whether the team may use some BOSA upstream of the configuration (BOSA users only act there).
bool teamReachesBosa(const core::Config& config, const core::TeamRecord& team);
// A --team list (T1[,T2...]) without empty entries, or the exit code of the error printed.
std::optional<int> teamList(Context& c, std::vector<std::string>* teams);

// The end of a command that changes the store: the error, or `done` as a line on stdout.
int reportChange(Context& c, const core::Status& status, const std::string& done);

// A listing: with --json a JSON array of `json(item)` objects (docs/cli.md), else `none` when
// there is nothing, else a table under `header`, a row per item.
template <typename T, typename Row, typename Json>
int printListing(Context& c, const core::Result<std::vector<T>>& items, const std::string& none,
                 std::vector<std::string> header, Row row, Json json) {
  if (!items) return c.fail(items.error());
  if (c.flag("--json")) {
    std::vector<std::string> objects;
    for (const auto& item : *items) objects.push_back(json(item).text());
    c.out << jsonArray(objects) << "\n";
    return kCtlExitOk;
  }
  if (items->empty()) {
    c.out << none << "\n";
    return kCtlExitOk;
  }
  std::vector<std::vector<std::string>> rows = {std::move(header)};
  for (const auto& item : *items) rows.push_back(row(item));
  printTable(c.out, rows);
  return kCtlExitOk;
}

// The --team T1[,T2] filter of a list command: when given (every team known), keeps the items
// `in_teams(item, listed)` accepts, where `listed(team)` says whether the team was named, and sets
// `none` to `none_prefix` + the teams. Returns the exit code of the error printed, if any.
template <typename T, typename InTeams>
std::optional<int> filterByTeams(Context& c, core::Result<std::vector<T>>& items, std::string& none,
                                 const std::string& none_prefix, InTeams in_teams) {
  if (!c.option("--team") || !items) return std::nullopt;
  std::vector<std::string> teams;
  if (auto rc = teamList(c, &teams)) return rc;
  if (auto rc = checkTeams(c, teams)) return rc;
  const auto listed = [&teams](const std::string& team) {
    return std::find(teams.begin(), teams.end(), team) != teams.end();
  };
  std::vector<T> kept;
  for (auto& item : *items) {
    if (in_teams(item, listed)) kept.push_back(std::move(item));
  }
  items = std::move(kept);
  none = none_prefix + joinList(teams);
  return std::nullopt;
}

}  // namespace keyway::daemon::ctl
