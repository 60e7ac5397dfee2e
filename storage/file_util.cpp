// POSIX filesystem helpers for the state directory and the master key file.
#include "storage/file_util.hpp"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <vector>

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

namespace {

core::Status writeAll(int fd, std::string_view content, const std::string& path) {
  size_t written = 0;
  while (written < content.size()) {
    const ssize_t n = ::write(fd, content.data() + written, content.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      return errnoError(core::ErrorCode::kInternal, "cannot write", path, n < 0 ? errno : EIO);
    }
    written += static_cast<size_t>(n);
  }
  return core::okStatus();
}

// rename(2) that refuses to replace `to`: renameat2(RENAME_NOREPLACE), or link(2) + unlink(2)
// on a filesystem without it. 0 or an errno value (EEXIST when `to` exists).
int renameNoReplace(const std::string& from, const std::string& to) {
  if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE) == 0) return 0;
  if (errno != EINVAL && errno != ENOSYS) return errno;
  if (::link(from.c_str(), to.c_str()) != 0) return errno;
  ::unlink(from.c_str());  // `to` now holds the content; a leftover temp name is only clutter
  return 0;
}

}  // namespace

core::Status writeFileAtomically(const std::string& path, std::string_view content,
                                 bool replace) {
  const std::string dir = parentDirectory(path);
  if (!replace && pathExists(path)) {
    return core::Error::make(core::ErrorCode::kBadRequest, path + " already exists");
  }
  std::string tmpl = path + ".tmp-XXXXXX";
  std::vector<char> name(tmpl.begin(), tmpl.end());
  name.push_back('\0');
  // mkstemp creates the file 0600 with O_EXCL: no other user can read what is written into it.
  const int fd = ::mkostemp(name.data(), O_CLOEXEC);
  if (fd < 0) return errnoError(core::ErrorCode::kInternal, "cannot create a file beside", path, errno);
  const std::string tmp(name.data());
  core::Status status = writeAll(fd, content, tmp);
  if (status && ::fsync(fd) != 0) {
    status = errnoError(core::ErrorCode::kInternal, "cannot fsync", tmp, errno);
  }
  if (::close(fd) != 0 && status) {
    status = errnoError(core::ErrorCode::kInternal, "cannot close", tmp, errno);
  }
  if (status) {
    const int rc = replace ? (::rename(tmp.c_str(), path.c_str()) == 0 ? 0 : errno)
                           : renameNoReplace(tmp, path);
    if (rc == EEXIST) {
      status = core::Error::make(core::ErrorCode::kBadRequest, path + " already exists");
    } else if (rc != 0) {
      status = errnoError(core::ErrorCode::kInternal, "cannot rename a file to", path, rc);
    }
  }
  if (!status) {
    ::unlink(tmp.c_str());  // best effort: `status` says what failed
    return status;
  }
  return fsyncDirectory(dir);
}

core::Result<std::string> readWholeFile(const std::string& path, size_t max_bytes) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    const int saved = errno;
    const auto code = saved == ENOENT || saved == ENOTDIR || saved == EISDIR
                          ? core::ErrorCode::kBadRequest
                          : core::ErrorCode::kInternal;
    return errnoError(code, "cannot open", path, saved);
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) return errnoError(core::ErrorCode::kInternal, "cannot stat", path, errno);
  if (!S_ISREG(st.st_mode)) {
    return core::Error::make(core::ErrorCode::kBadRequest, path + " is not a regular file");
  }
  if (static_cast<uint64_t>(st.st_size) > max_bytes) {
    return core::Error::make(core::ErrorCode::kBadRequest,
                             path + " is larger than " + std::to_string(max_bytes) + " bytes");
  }
  std::string content;
  char buf[65536];
  while (true) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errnoError(core::ErrorCode::kInternal, "cannot read", path, errno);
    if (n == 0) break;
    content.append(buf, static_cast<size_t>(n));
    if (content.size() > max_bytes) {
      return core::Error::make(core::ErrorCode::kBadRequest,
                               path + " is larger than " + std::to_string(max_bytes) + " bytes");
    }
  }
  return content;
}

core::Result<FileLock> FileLock::acquire(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return errnoError(core::ErrorCode::kInternal, "cannot open the lock file", path, errno);
  while (::flock(fd, LOCK_EX) != 0) {
    if (errno == EINTR) continue;
    const int saved = errno;
    ::close(fd);
    return errnoError(core::ErrorCode::kInternal, "cannot lock", path, saved);
  }
  return FileLock(fd);
}

FileLock::~FileLock() {
  if (fd_ >= 0) ::close(fd_);  // closing the only descriptor releases the flock
}

}  // namespace keyway::storage
