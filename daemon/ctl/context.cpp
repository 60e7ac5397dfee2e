// What every keywayctl command runs with: config, credential store, exit codes, shared checks.
#include "daemon/ctl/context.hpp"

#include <iostream>
#include <memory>

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

int runCommand(const Command& command, const Args& args, std::istream& in, std::ostream& out,
               std::ostream& err, const CtlConfigLoader& load_config) {
  Context ctx{args, in, out, err};
  auto config = load_config(args.config);
  if (!config) {
    err << "keywayctl: cannot load the configuration: " << config.error().message << "\n";
    return exitFor(config.error());
  }
  ctx.config = &*config;
  ctx.config_file = args.config;
  std::unique_ptr<core::CredentialStore> store;
  if (command.store == Store::kCredentials) {
    auto opened = storage::openLmdbCredentialStore(config->state_dir, config->master_key_file);
    if (!opened) {
      err << "keywayctl: cannot open the credential store: " << opened.error().message << "\n";
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

std::optional<int> checkUpstream(Context& c, const std::string& name) {
  if (c.config->findUpstream(name) != nullptr) return std::nullopt;
  std::vector<std::string> configured;
  for (const auto& u : c.config->upstreams) configured.push_back(u.name);
  return c.fail("unknown upstream '" + name + "'; configured upstreams: " + joinList(configured),
                kCtlExitUsage);
}

}  // namespace keyway::daemon::ctl
