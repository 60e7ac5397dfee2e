// Test helpers for storage and keywayctl tests: a self-removing temp directory and file helpers.
#pragma once

#include <ftw.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

namespace keyway::testing {

// mkdtemp under $TMPDIR (or /tmp); removed recursively on destruction.
class TempDir {
 public:
  TempDir() {
    const char* base = getenv("TMPDIR");
    std::string tmpl = std::string(base != nullptr && *base != '\0' ? base : "/tmp") +
                       "/keyway-test-XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    if (mkdtemp(buf.data()) != nullptr) path_ = buf.data();
  }
  ~TempDir() {
    if (!path_.empty()) {
      nftw(path_.c_str(),
           [](const char* p, const struct stat*, int, struct FTW*) { return ::remove(p); }, 16,
           FTW_DEPTH | FTW_PHYS);
    }
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& rel) const { return path_ + "/" + rel; }

 private:
  std::string path_;
};

// The whole file ("" when absent). stdio, not istreambuf_iterator: GCC 12 at -O2 reports a false
// -Wnull-dereference inside the latter, once per test file that includes this header.
inline std::string readFile(const std::string& path) {
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  std::string content;
  if (!f) return content;
  char buf[4096];
  size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, f.get())) > 0) content.append(buf, n);
  return content;
}

inline void writeFile(const std::string& path, const std::string& content, mode_t mode) {
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << content;
  }
  ::chmod(path.c_str(), mode);
}

inline mode_t fileMode(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return 0;
  return st.st_mode & 07777;
}

// Every regular file below `dir` (recursive).
inline std::vector<std::string> listFiles(const std::string& dir) {
  static thread_local std::vector<std::string>* out = nullptr;
  std::vector<std::string> files;
  out = &files;
  nftw(dir.c_str(),
       [](const char* p, const struct stat* st, int type, struct FTW*) {
         if (type == FTW_F && S_ISREG(st->st_mode)) out->push_back(p);
         return 0;
       },
       16, FTW_PHYS);
  out = nullptr;
  return files;
}

// Runs fn in a forked child (a separate process, like keywayctl next to keywayd) and returns its
// exit status (fn's return value), or -1 if it did not exit normally (e.g. it killed itself).
inline int runInChild(const std::function<int()>& fn) {
  const pid_t pid = ::fork();
  if (pid == 0) ::_exit(fn());
  int status = 0;
  if (pid < 0 || ::waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) return -1;
  return WEXITSTATUS(status);
}

inline bool contains(std::string_view haystack, std::string_view needle) {
  return haystack.find(needle) != std::string_view::npos;
}

}  // namespace keyway::testing
