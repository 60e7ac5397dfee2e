// keywayctl's entry point: the command line parsed, help and usage errors, the command run.
#include "daemon/ctl/ctl.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <set>

#include "daemon/ctl/context.hpp"
#include "daemon/ctl/groups.hpp"
#include "daemon/yaml_config_loader.hpp"

namespace keyway::daemon {
namespace {

using ctl::Args;
using ctl::Command;
using ctl::CommandGroup;
using ctl::Input;
using ctl::joinList;

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
    "  team set NAME --upstreams a,b,... | --all-upstreams\n"
    "                                              change a team's upstreams in place\n"
    "  team list | team rm NAME [--force]\n"
    "  client add NAME --team TEAM                 add a client; prints its kw_ token once\n"
    "  client rotate NAME [--grace DURATION]       a new token for a client; prints it once\n"
    "  client list [--team T,...] | client revoke NAME | client rm NAME [--force]\n"
    "  secret set NAME [--team TEAM]               set a secret (value on stdin)\n"
    "  secret list [--team T,...] | secret rm NAME [--team TEAM]\n"
    "  bosa-user add IDENTIFIER --team T1[,T2...]  add a BOSA user (user secret on stdin)\n"
    "  bosa-user set-secret IDENTIFIER             replace a user's secret (stdin), keep grants\n"
    "  bosa-user grant|revoke IDENTIFIER --team T1[,T2...]\n"
    "  bosa-user list [--team T,...] | bosa-user rm IDENTIFIER\n"
    "  cache stats | cache purge [--upstream U] [--prefix PATH] [--all]\n"
    "  schemas list                                BOSA schemas: fetch time, connectors, gaps\n"
    "  schemas refresh [CONNECTOR]                 fetch BOSA schemas (all, or one connector)\n"
    "  status [--json]                             the running keywayd: version, store, upstreams;\n"
    "                                              does it read the store this keywayctl edits?\n"
    "  doctor [--json]                             check what usually goes wrong, say what to run\n"
    "  rekey                                       rotate the master key (re-seal the store)\n"
    "  backup FILE [--force]                       write a sealed copy of the credential store\n"
    "  restore FILE [--key-file OLD_KEY]           replace the credential store with a backup\n"
    "  fleet status [--json] | fleet import        the etcd cluster of a fleet; push a store into it\n"
    "\n"
    "options:\n"
    "  --config FILE   the configuration keywayd runs with; default: $KEYWAY_CONFIG, else\n"
    "                  " KEYWAY_INSTALLED_CONFIG " when it exists\n"
    "  --json          list and stats commands: a JSON array (or object) instead of a table\n"
    "  --help, -h      help for keywayctl or for one command\n"
    "  --version       print the version\n"
    "\n"
    "exit status: 0 ok, 1 bad usage or input, 2 runtime failure (status and doctor: see their\n"
    "--help)\n";

const std::vector<const CommandGroup*>& groups() {
  static const std::vector<const CommandGroup*> all = {
      &ctl::initGroup(),     &ctl::teamGroup(),  &ctl::clientGroup(),   &ctl::secretGroup(),
      &ctl::bosaUserGroup(), &ctl::cacheGroup(), &ctl::schemasGroup(),
      &ctl::statusGroup(),   &ctl::doctorGroup(),
      &ctl::rekeyGroup(),    &ctl::backupGroup(), &ctl::restoreGroup(), &ctl::fleetGroup(),
  };
  return all;
}

const CommandGroup* findGroup(const std::string& name) {
  for (const CommandGroup* g : groups()) {
    if (g->name == name) return g;
  }
  return nullptr;
}

// The options some command declares; the parser takes them wherever they stand on the line (before
// the command is known), and dispatch then refuses those its command does not declare.
struct DeclaredOptions {
  std::set<std::string> values;  // take a value: --team T, --team=T
  std::set<std::string> flags;   // take none: --all
};
const DeclaredOptions& declaredOptions() {
  static const DeclaredOptions all = [] {
    DeclaredOptions d;
    for (const CommandGroup* g : groups()) {
      for (const Command& c : g->commands) {
        d.values.insert(c.options.begin(), c.options.end());
        d.flags.insert(c.flags.begin(), c.flags.end());
      }
    }
    return d;
  }();
  return all;
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
    if (a == "--version") {
      args.version = true;
      continue;
    }
    const size_t eq = a.find('=');
    const std::string name = a.substr(0, eq);
    const bool inline_value = eq != std::string::npos;
    if (name == "--config" || declaredOptions().values.count(name) != 0) {
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
    if (declaredOptions().flags.count(name) != 0) {
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

int usageError(std::ostream& err, const std::string& message) {
  err << "keywayctl: " << message << "\n";
  return kCtlExitUsage;
}

int dispatch(const std::vector<std::string>& raw, std::istream& in, std::ostream& out,
             std::ostream& err, const CtlConfigLoader& load_config,
             const CtlConfigSearch& search) {
  Args args;
  if (auto problem = parseArgs(raw, args)) return usageError(err, problem->message);
  if (args.version) {
    out << "keywayctl " KEYWAY_VERSION "\n";
    return kCtlExitOk;
  }

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
      const CommandGroup* wanted = findGroup(args.words[1]);
      if (wanted == nullptr) {
        return usageError(err, "no help for unknown command '" + args.words[1] + "'");
      }
      out << wanted->help;
    } else {
      out << kGlobalUsage;
    }
    return kCtlExitOk;
  }
  const CommandGroup* found = findGroup(group);
  if (found == nullptr) {
    return usageError(err, "unknown command '" + group + "'; run `keywayctl --help`");
  }
  if (args.help) {
    out << found->help;
    return kCtlExitOk;
  }

  // A group that is a single command (`init`) takes no action word.
  const bool has_actions = !found->commands.front().action.empty();
  const std::string action = !has_actions ? "" : (args.words.size() > 1 ? args.words[1] : "");
  const Command* cmd = nullptr;
  std::vector<std::string> actions;
  for (const auto& c : found->commands) {
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

  return ctl::runCommand(*cmd, args, in, out, err, load_config, search);
}

}  // namespace

CtlConfigSearch systemConfigSearch() {
  CtlConfigSearch search;
  search.getenv = [](const char* name) -> std::optional<std::string> {
    const char* value = std::getenv(name);
    if (value == nullptr) return std::nullopt;
    return std::string(value);
  };
  search.exists = [](const std::string& path) {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0;
  };
  search.installed = KEYWAY_INSTALLED_CONFIG;
  return search;
}

int runCtl(std::vector<std::string> args, std::istream& in, std::ostream& out, std::ostream& err,
           const CtlConfigLoader& load_config, const CtlConfigSearch& search) {
  try {
    return dispatch(args, in, out, err, load_config, search);
  } catch (const std::exception& e) {
    // Last resort: third-party code (YAML, iostreams) may throw; never crash the CLI.
    err << "keywayctl: internal error: " << e.what() << "\n";
  } catch (...) {
    err << "keywayctl: internal error\n";
  }
  return kCtlExitFailure;
}

int runCtl(std::vector<std::string> args, std::istream& in, std::ostream& out, std::ostream& err,
           const CtlConfigLoader& load_config) {
  return runCtl(std::move(args), in, out, err, load_config, systemConfigSearch());
}

int runCtl(std::vector<std::string> args, std::istream& in, std::ostream& out, std::ostream& err) {
  return runCtl(std::move(args), in, out, err,
                [](const std::optional<std::string>& path) { return loadConfig(path); });
}

}  // namespace keyway::daemon
