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

// The same with the given key (rekey writes the next key this way): 32 raw bytes, O_EXCL, 0600,
// fsync'ed with its directory. Errors as createMasterKeyFile; the parent directory must exist.
core::Status writeMasterKeyFile(const std::string& path, const MasterKey& key);

// Where `keywayctl rekey` puts the next master key before it re-seals the store: beside
// `key_file`, renamed over it once the store is sealed under it (storage/credential_keys.hpp).
std::string nextMasterKeyFile(const std::string& key_file);

}  // namespace keyway::storage
