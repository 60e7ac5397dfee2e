// What every keywayctl command runs with: config, credential store, exit codes, shared checks.
#include "daemon/ctl/context.hpp"

#include <iostream>
#include <memory>

#include "daemon/etcd_client.hpp"
#include "storage/fleet_store.hpp"
#include "storage/lmdb_credential_store.hpp"
#include "storage/names.hpp"

namespace keyway::daemon::ctl {

using core::ErrorCode;

int exitFor(const core::Error& error) {
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

int Context::fail(const std::string& message, int code) const {
  err << "keywayctl: " << message << "\n";
  return code;
}

namespace {

struct ConfigChoice {
  std::string path;
  std::string source;
};

// --config, else $KEYWAY_CONFIG, else the installed file when it exists, else an error that
// says how to name one.
core::Result<ConfigChoice> findConfig(const std::optional<std::string>& given,
                                      const CtlConfigSearch& search) {
  if (given) return ConfigChoice{*given, "--config"};
  if (auto env = search.getenv ? search.getenv("KEYWAY_CONFIG") : std::nullopt;
      env && !env->empty()) {
    return ConfigChoice{*env, "$KEYWAY_CONFIG"};
  }
  if (!search.installed.empty() && search.exists && search.exists(search.installed)) {
    return ConfigChoice{search.installed, "the installed default"};
  }
  return core::Error::make(
      ErrorCode::kBadRequest,
      "no configuration: pass the file keywayd runs with as --config FILE, set KEYWAY_CONFIG, or "
      "install " + (search.installed.empty() ? std::string("one") : search.installed) +
          " (keywayd without --config runs on the embedded default, equal to conf/keyway.yaml: "
          "pass that file)");
}

}  // namespace

std::string Context::whereHint() const {
  return "state_dir " + config->state_dir + " comes from " + config_path + " (" + config_source +
         "); if keywayd runs with another configuration, pass it with --config FILE";
}

core::Result<std::unique_ptr<core::CredentialStore>> openFleetStore(const core::Config& config) {
  auto etcd = EtcdClient::create(*config.fleet);
  if (!etcd) return etcd.takeError();
  return storage::openFleetCredentialStore(std::move(etcd).value(), config.fleet->prefix, config.master_key_file);
}

int runCommand(const Command& command, const Args& args, std::istream& in, std::ostream& out,
               std::ostream& err, const CtlConfigLoader& load_config,
               const CtlConfigSearch& search) {
  Context ctx{args, in, out, err};
  auto choice = findConfig(args.config, search);
  if (!choice) {
    err << "keywayctl: " << choice.error().message << "\n";
    return kCtlExitUsage;
  }
  ctx.config_path = choice->path;
  ctx.config_source = choice->source;
  auto config = load_config(choice->path);
  if (!config) {
    err << "keywayctl: cannot load the configuration"
        << (choice->source == "--config" ? std::string() : " (found by " + choice->source + ")")
        << ": " << config.error().message << "\n";
    return exitFor(config.error());
  }
  ctx.config = &*config;
  ctx.config_file = choice->path;  // the file found, also through $KEYWAY_CONFIG or the installed one
  std::unique_ptr<core::CredentialStore> store;
  if (command.store == Store::kCredentials) {
    // A fleet's store of record is etcd (docs/fleet.md): every command reads and writes it there.
    auto opened = config->fleet ? openFleetStore(*config) : storage::openLmdbCredentialStore(config->state_dir, config->master_key_file);
    if (!opened) {
      err << "keywayctl: cannot open the credential store: " << opened.error().message << " ("
          << ctx.whereHint() << ")\n";
      return kCtlExitFailure;
    }
    store = std::move(opened).value();
    ctx.store = store.get();
  }
  return command.run(ctx);
}

int reportChange(Context& c, const core::Status& status, const std::string& done) {
  if (!status) return c.fail(status.error());
  c.out << done << "\n";
  return kCtlExitOk;
}

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

bool teamReachesBosa(const core::Config& config, const core::TeamRecord& team) {
  for (const auto& u : config.upstreams) {
    if (u.protocol != core::Protocol::kBosa) continue;
    if (team.all_upstreams) return true;
    for (const auto& name : team.upstreams) {
      if (name == u.name) return true;
    }
  }
  return false;
}

std::optional<int> teamList(Context& c, std::vector<std::string>* teams) {
  const std::string given = *c.option("--team");
  *teams = splitList(given);
  for (const auto& t : *teams) {
    if (t.empty()) return c.fail("--team has an empty entry: '" + given + "'", kCtlExitUsage);
  }
  return std::nullopt;
}

std::optional<int> checkUpstream(Context& c, const std::string& name) {
  if (c.config->findUpstream(name) != nullptr) return std::nullopt;
  std::vector<std::string> configured;
  for (const auto& u : c.config->upstreams) configured.push_back(u.name);
  return c.fail("unknown upstream '" + name + "'; configured upstreams: " + joinList(configured),
                kCtlExitUsage);
}

}  // namespace keyway::daemon::ctl
