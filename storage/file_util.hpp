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

// Writes `content` to `path` through a temporary file in the same directory (mode 0600,
// fsync'ed), renamed into place, then fsyncs the directory: a reader, or a crash at any point,
// sees no file or the old one or the whole new one, never part of it. With `replace` false an
// existing `path` is kept and the call fails with kBadRequest (checked by the rename itself,
// RENAME_NOREPLACE, so two writers cannot both win). Other errors: kInternal naming the path;
// the temporary file is removed.
core::Status writeFileAtomically(const std::string& path, std::string_view content, bool replace);

// The content of the regular file `path`. kBadRequest when it is missing, not a regular file or
// larger than `max_bytes` (an input the caller was given), kInternal for I/O errors.
core::Result<std::string> readWholeFile(const std::string& path, size_t max_bytes);

// An exclusive flock(2) on `path` (created 0600 if missing), held until destruction; the kernel
// drops it when the process dies, so a killed holder never leaves it taken. Blocks while another
// process holds it.
class FileLock {
 public:
  static core::Result<FileLock> acquire(const std::string& path);
  FileLock(FileLock&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  FileLock& operator=(FileLock&&) = delete;
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;
  ~FileLock();

 private:
  explicit FileLock(int fd) : fd_(fd) {}
  int fd_;
};

}  // namespace keyway::storage
