// Passwords of the services keyway talks to (etcd, Redis), read from a file named in the config
// (never inline in it).
#pragma once

#include <string>

#include "core/result.hpp"
#include "core/secret.hpp"

namespace keyway::daemon {

// The file's content without a final newline. A file every user can read is refused (it would
// hand the service to every local user), as are an empty file and one over 4 KiB. Messages start
// with `key` (the config key, e.g. "fleet.etcd.password_file") and the path.
core::Result<core::SecretString> readPasswordFile(const std::string& key, const std::string& path);

}  // namespace keyway::daemon
