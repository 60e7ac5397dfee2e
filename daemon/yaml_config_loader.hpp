// Loads keyway's YAML configuration (docs/config.md) into a validated core::Config.
#pragma once

#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "core/config.hpp"
#include "core/result.hpp"

namespace keyway::daemon {

// Looks an environment variable up (empty optional = unset).
using EnvLookup = std::function<std::optional<std::string>(const char*)>;

// Configuration files (and texts) above this size are refused.
inline constexpr size_t kMaxConfigBytes = 1u << 20;

// Every function here returns a complete, validated Config (state_dir and master_key_file
// resolved, upstream defaults applied, base URLs normalised), or an Error whose message is one
// line for people: "<source>:<line>: <dotted.key.path>: <what is wrong and what is accepted>",
// lines 1-based. Bad YAML, unknown or duplicate keys, bad types and bad values are kBadRequest;
// a file that cannot be read is kBadRequest naming the path. Values from the file are never
// echoed into messages (a credential pasted into the wrong key must not reach a log).
// Nothing throws: yaml-cpp's exceptions are caught here. Thread-safe (no shared state), but
// loadConfig without `env` reads the process environment with getenv.

// Loads FILE, or the embedded default (daemon/embedded_default.hpp) when `path` is empty.
core::Result<core::Config> loadConfig(const std::optional<std::string>& path);
// The same, with environment lookups injected (tests).
core::Result<core::Config> loadConfig(const std::optional<std::string>& path, const EnvLookup& env);

// Parses YAML text; `source` names it in errors; `env` looks STATE_DIRECTORY and
// CREDENTIALS_DIRECTORY up (a null function means "all unset").
core::Result<core::Config> parseConfig(std::string_view yaml, std::string_view source,
                                       const EnvLookup& env);

// The process environment, through getenv.
std::optional<std::string> processEnv(const char* name);

}  // namespace keyway::daemon
