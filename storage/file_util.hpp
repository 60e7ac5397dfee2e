// Small POSIX filesystem helpers for private state: 0700 directories, fsync of directories,
// errno translation into core::Error.
#pragma once

#include <string>
#include <string_view>

#include "core/result.hpp"

namespace keyway::storage {

// An Error of `code` saying "<what> <path>: <strerror(errnum)>". Never include file contents.
core::Error errnoError(core::ErrorCode code, std::string_view what, const std::string& path,
                       int errnum);

// Creates `path` and any missing parents with mode 0700 (mkdir -p). Directories that already
// exist are left as they are (their mode is the operator's choice). Returns true in `created`
// when the last component was created by this call. Errors: kInternal naming the path.
core::Status ensurePrivateDirectory(const std::string& path, bool* created = nullptr);

// fsync()s a directory so that a file created in it survives a crash.
core::Status fsyncDirectory(const std::string& path);

// The directory part of `path` ("." when there is none).
std::string parentDirectory(const std::string& path);

bool pathExists(const std::string& path);

}  // namespace keyway::storage
