// POSIX filesystem helpers for the state directory and the master key file.
#include "storage/file_util.hpp"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

namespace keyway::storage {

core::Error errnoError(core::ErrorCode code, std::string_view what, const std::string& path,
                       int errnum) {
  std::string msg(what);
  msg += " ";
  msg += path;
  msg += ": ";
  msg += strerror(errnum);
  return core::Error::make(code, std::move(msg));
}

std::string parentDirectory(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

bool pathExists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

core::Status ensurePrivateDirectory(const std::string& path, bool* created) {
  if (created != nullptr) *created = false;
  if (path.empty()) {
    return core::Error::make(core::ErrorCode::kBadRequest, "empty directory path");
  }
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode)) {
      return core::Error::make(core::ErrorCode::kInternal,
                               "not a directory: " + path + " (move it away or pick another path)");
    }
    return core::okStatus();
  }
  if (errno != ENOENT) return errnoError(core::ErrorCode::kInternal, "cannot access", path, errno);
  const std::string parent = parentDirectory(path);
  if (parent != path && parent != "." && parent != "/") {
    auto parent_status = ensurePrivateDirectory(parent, nullptr);
    if (!parent_status) return parent_status;
  }
  if (::mkdir(path.c_str(), 0700) != 0 && errno != EEXIST) {
    return errnoError(core::ErrorCode::kInternal, "cannot create directory", path, errno);
  }
  // mkdir's mode is filtered by the umask; 0700 can only lose bits, never gain them, but be
  // explicit so a strange umask (e.g. 0777) still leaves the owner able to use it.
  if (::chmod(path.c_str(), 0700) != 0) {
    return errnoError(core::ErrorCode::kInternal, "cannot chmod 0700", path, errno);
  }
  if (created != nullptr) *created = true;
  return core::okStatus();
}

core::Status fsyncDirectory(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return errnoError(core::ErrorCode::kInternal, "cannot open directory", path, errno);
  const int rc = ::fsync(fd);
  const int saved = errno;
  ::close(fd);
  if (rc != 0) return errnoError(core::ErrorCode::kInternal, "cannot fsync directory", path, saved);
  return core::okStatus();
}

}  // namespace keyway::storage
