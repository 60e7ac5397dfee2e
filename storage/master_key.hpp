// The master key file: loading (strict permission and size checks) and creation for
// `keywayctl init`. Error messages name the path, never the content.
#pragma once

#include <string>

#include "core/result.hpp"
#include "storage/crypto.hpp"

namespace keyway::storage {

// Loads a master key from `path`: exactly 32 raw bytes, or 64 hex characters optionally followed
// by one newline (`openssl rand -hex 32 > FILE`). Refuses a file that is not a regular file, that
// group or others may read or write (chmod 600 fixes it), or that has any other size.
// Errors: kInternal (missing, unreadable, bad mode, bad size or content), message names `path`.
core::Result<MasterKey> loadMasterKeyFile(const std::string& path);

// Creates `path` with 32 fresh random bytes: O_CREAT|O_EXCL, mode 0600, fsync'ed together with
// its directory; a missing parent directory is created 0700. Errors: kBadRequest if the file
// already exists, kInternal otherwise (nothing half-written is left behind).
core::Status createMasterKeyFile(const std::string& path);

}  // namespace keyway::storage
