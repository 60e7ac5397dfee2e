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

// Loads the configuration; nullopt = the embedded default (as keywayd does).
using CtlConfigLoader =
    std::function<core::Result<core::Config>(const std::optional<std::string>& path)>;

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

}  // namespace keyway::daemon
