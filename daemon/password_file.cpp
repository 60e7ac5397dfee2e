#include "daemon/password_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace keyway::daemon {

core::Result<core::SecretString> readPasswordFile(const std::string& key, const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) {
    return core::Error::make(core::ErrorCode::kBadRequest,
                       key + " " + path + ": cannot open it: " + std::strerror(errno));
  }
  struct stat st {};
  std::string text;
  bool ok = ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size <= 4096;
  const bool world_readable = ok && (st.st_mode & S_IROTH) != 0;
  if (ok && !world_readable) {
    char buf[4097];
    const ssize_t n = ::read(fd, buf, sizeof buf);
    ok = n >= 0;
    if (ok) text.assign(buf, static_cast<size_t>(n));
    core::secureWipe(buf, sizeof buf);
  }
  ::close(fd);
  if (world_readable) {
    return core::Error::make(core::ErrorCode::kBadRequest, key + " " + path +
                                                   " can be read by every user: chmod o-r it (0600 or 0640)");
  }
  if (!ok) return core::Error::make(core::ErrorCode::kBadRequest, key + " " + path + ": not a readable file of at most 4 KiB");
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  core::SecretString secret(text);
  core::secureWipe(text.data(), text.size());
  if (secret.view().empty()) return core::Error::make(core::ErrorCode::kBadRequest, key + " " + path + " is empty");
  return secret;
}

}  // namespace keyway::daemon
