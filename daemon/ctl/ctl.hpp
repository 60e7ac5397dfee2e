// keywayctl (docs/cli.md) as a function, the one public entry point of daemon/ctl/.
#pragma once

#include <functional>
#include <iosfwd>
#include <optional>
#include <string>
#include <vector>

#include "core/config.hpp"
#include "core/result.hpp"

namespace keyway::daemon {

inline constexpr int kCtlExitOk = 0;
inline constexpr int kCtlExitUsage = 1;    // bad usage or input (unknown team, client, user, ...)
inline constexpr int kCtlExitFailure = 2;  // runtime failure (storage, master key, I/O)

// Loads the configuration file at `path` (keywayctl always passes one; nullopt would be the
// embedded default).
using CtlConfigLoader =
    std::function<core::Result<core::Config>(const std::optional<std::string>& path)>;

// Where keywayctl looks for the configuration when no --config is given (docs/cli.md):
// $KEYWAY_CONFIG, then `installed` when it exists. Never the embedded default: its state_dir is
// relative to the working directory, so it would silently name another store than the daemon's.
struct CtlConfigSearch {
  std::function<std::optional<std::string>(const char* name)> getenv;
  std::function<bool(const std::string& path)> exists;
  std::string installed;  // <sysconfdir>/keyway/keyway.yaml of this build
};
// The real environment and filesystem.
CtlConfigSearch systemConfigSearch();

// Runs one keywayctl command. `args` excludes the program name. Secret values are read from `in`
// (one trailing newline stripped; when `in` is std::cin on a terminal, a prompt without echo is
// shown on `err`). Output for people goes to `out`, one-line errors to `err`. Returns the exit
// code. Never throws. Opens the credential store of the configured state directory directly
// (multi-process safe: a running keywayd sees the change at once).
int runCtl(std::vector<std::string> args, std::istream& in, std::ostream& out, std::ostream& err);

// The same with an injected config loader (tests); the other overload uses
// keyway::daemon::loadConfig from daemon/yaml_config_loader.hpp.
int runCtl(std::vector<std::string> args, std::istream& in, std::ostream& out, std::ostream& err,
           const CtlConfigLoader& load_config);
// The same with an injected search for the configuration too.
int runCtl(std::vector<std::string> args, std::istream& in, std::ostream& out, std::ostream& err,
           const CtlConfigLoader& load_config, const CtlConfigSearch& search);

}  // namespace keyway::daemon
