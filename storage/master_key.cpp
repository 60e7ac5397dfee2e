// Master key file handling: strict load, exclusive durable creation.
#include "storage/master_key.hpp"

#include <cstdlib>

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>

#include "storage/file_util.hpp"
#include "storage/core_names.hpp"

namespace keyway::storage {

namespace {

constexpr size_t kHexBytes = 2 * kKeyBytes;

struct FdCloser {
  int fd;
  ~FdCloser() {
    if (fd >= 0) ::close(fd);
  }
};

std::string octalMode(mode_t mode) {
  char buf[8];
  snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(mode & 07777));
  return buf;
}

}  // namespace

Result<MasterKey> loadMasterKeyFile(const std::string& path) {
  if (path.empty()) return Error::make(ErrorCode::kInternal, "no master key file configured");
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    const int saved = errno;
    if (saved == ENOENT) {
      return Error::make(ErrorCode::kInternal,
                         "master key file " + path +
                             " does not exist; create it with `keywayctl init` (or `openssl rand "
                             "-hex 32 > FILE && chmod 600 FILE`)");
    }
    return errnoError(ErrorCode::kInternal, "cannot open master key file", path, saved);
  }
  FdCloser closer{fd};
  struct stat st {};
  // fstat on the opened descriptor: what we check is what we read (no TOCTOU).
  if (::fstat(fd, &st) != 0) {
    return errnoError(ErrorCode::kInternal, "cannot stat master key file", path, errno);
  }
  if (!S_ISREG(st.st_mode)) {
    return Error::make(ErrorCode::kInternal, "master key file " + path + " is not a regular file");
  }
  // systemd's LoadCredential= hands the key over in $CREDENTIALS_DIRECTORY, a private read-only
  // mount, and may grant the (dynamic) service user read access through an ACL, which stat shows
  // as group-read bits. There, group-read is the manager's doing and is accepted; write and
  // other-read never are.
  mode_t forbidden = 0066;
  if (const char* creds = std::getenv("CREDENTIALS_DIRECTORY"); creds != nullptr && *creds != '\0') {
    const std::string dir = std::string(creds) + "/";
    if (path.compare(0, dir.size(), dir) == 0) forbidden = 0026;
  }
  if ((st.st_mode & forbidden) != 0) {
    return Error::make(ErrorCode::kInternal,
                       "master key file " + path + " has mode " + octalMode(st.st_mode) +
                           ", readable or writable by group or others; run `chmod 600 " + path +
                           "`");
  }
  const auto size = static_cast<size_t>(st.st_size);
  if (size != kKeyBytes && size != kHexBytes && size != kHexBytes + 1) {
    return Error::make(ErrorCode::kInternal,
                       "master key file " + path + " has " + std::to_string(size) +
                           " bytes; expected 32 raw bytes or 64 hex characters");
  }
  unsigned char buf[kHexBytes + 2];
  size_t got = 0;
  while (got < sizeof buf) {
    const ssize_t n = ::read(fd, buf + got, sizeof buf - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int saved = errno;
      sodium_memzero(buf, sizeof buf);
      return errnoError(ErrorCode::kInternal, "cannot read master key file", path, saved);
    }
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  Result<MasterKey> key = Error::make(ErrorCode::kInternal, "");
  if (got != size) {
    key = Error::make(ErrorCode::kInternal, "master key file " + path + " changed while reading");
  } else if (size == kKeyBytes) {
    key = MasterKey::fromBytes(std::string_view(reinterpret_cast<char*>(buf), kKeyBytes));
  } else if (size == kHexBytes + 1 && buf[kHexBytes] != '\n') {
    key = Error::make(ErrorCode::kInternal, "master key file " + path +
                                                " has 65 bytes but does not end with a newline");
  } else {
    unsigned char raw[kKeyBytes];
    size_t raw_len = 0;
    const char* end = nullptr;
    const int rc = sodium_hex2bin(raw, sizeof raw, reinterpret_cast<const char*>(buf), kHexBytes,
                                  nullptr, &raw_len, &end);
    if (rc != 0 || raw_len != kKeyBytes || end != reinterpret_cast<const char*>(buf) + kHexBytes) {
      key = Error::make(ErrorCode::kInternal,
                        "master key file " + path + " is not 64 hexadecimal characters");
    } else {
      key = MasterKey::fromBytes(std::string_view(reinterpret_cast<char*>(raw), kKeyBytes));
    }
    sodium_memzero(raw, sizeof raw);
  }
  sodium_memzero(buf, sizeof buf);
  return key;
}

std::string nextMasterKeyFile(const std::string& key_file) { return key_file + ".next"; }

Status createMasterKeyFile(const std::string& path) {
  if (path.empty()) return Error::make(ErrorCode::kBadRequest, "no master key file configured");
  auto key = MasterKey::random();
  if (!key) return key.takeError();
  auto dir_status = ensurePrivateDirectory(parentDirectory(path));
  if (!dir_status) return dir_status;
  return writeMasterKeyFile(path, *key);
}

Status writeMasterKeyFile(const std::string& path, const MasterKey& key) {
  const std::string dir = parentDirectory(path);
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) {
    const int saved = errno;
    if (saved == EEXIST) {
      return Error::make(ErrorCode::kBadRequest, "master key file " + path + " already exists");
    }
    return errnoError(ErrorCode::kInternal, "cannot create master key file", path, saved);
  }
  Status status = core::okStatus();
  size_t written = 0;
  // The umask can only remove bits from 0600, but make the mode explicit anyway.
  if (::fchmod(fd, 0600) != 0) {
    status = errnoError(ErrorCode::kInternal, "cannot chmod master key file", path, errno);
  }
  while (status && written < MasterKey::size()) {
    const ssize_t n = ::write(fd, key.data() + written, MasterKey::size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      status = errnoError(ErrorCode::kInternal, "cannot write master key file", path, errno);
      break;
    }
    written += static_cast<size_t>(n);
  }
  if (status && ::fsync(fd) != 0) {
    status = errnoError(ErrorCode::kInternal, "cannot fsync master key file", path, errno);
  }
  if (::close(fd) != 0 && status) {
    status = errnoError(ErrorCode::kInternal, "cannot close master key file", path, errno);
  }
  if (!status) {
    ::unlink(path.c_str());  // best effort: `status` already says what failed and where
    return status;
  }
  return fsyncDirectory(dir);
}

}  // namespace keyway::storage
