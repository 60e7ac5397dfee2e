// Reading a secret from stdin: no echo on a terminal, bounded, refused if unfit for an HTTP header.
#include "daemon/ctl/secret_input.hpp"

#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <iostream>
#include <string_view>

namespace keyway::daemon::ctl {
namespace {

constexpr size_t kMaxSecretBytes = 64 * 1024;

// Turns terminal echo off for its lifetime.
class EchoOff {
 public:
  explicit EchoOff(int fd) : fd_(fd) {
    if (tcgetattr(fd_, &saved_) == 0) {
      struct termios quiet = saved_;
      quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
      // TCSANOW, not TCSAFLUSH: a value typed or pasted ahead of the prompt must not be lost.
      active_ = tcsetattr(fd_, TCSANOW, &quiet) == 0;
    }
  }
  ~EchoOff() {
    if (active_) tcsetattr(fd_, TCSANOW, &saved_);
  }
  EchoOff(const EchoOff&) = delete;
  EchoOff& operator=(const EchoOff&) = delete;

 private:
  int fd_;
  struct termios saved_ {};
  bool active_ = false;
};

}  // namespace

SecretInput readSecret(std::istream& in, std::ostream& err, const std::string& what) {
  std::string buf;
  if (&in == &std::cin && ::isatty(STDIN_FILENO) == 1) {
    err << "Enter " << what << " (input hidden): " << std::flush;
    {
      EchoOff quiet(STDIN_FILENO);
      std::getline(in, buf);
    }
    err << "\n";
  } else {
    char chunk[4096];
    while (in.read(chunk, sizeof chunk) || in.gcount() > 0) {
      buf.append(chunk, static_cast<size_t>(in.gcount()));
      if (buf.size() > kMaxSecretBytes) break;
    }
    core::secureWipe(chunk, sizeof chunk);
    if (!buf.empty() && buf.back() == '\n') {
      buf.pop_back();
      if (!buf.empty() && buf.back() == '\r') buf.pop_back();
    }
  }
  SecretInput result;
  if (buf.size() > kMaxSecretBytes) {
    result.error = "the " + what + " on standard input is larger than 64 KiB; nothing was stored";
  } else if (buf.empty()) {
    result.error = "empty " + what + "; nothing was stored (give it on standard input, e.g. "
                   "printf '%s' \"$VALUE\" | keywayctl ...)";
  } else if (std::any_of(buf.begin(), buf.end(), [](char c) {
               const auto u = static_cast<unsigned char>(c);
               return u < 0x20 || u == 0x7f;
             })) {
    // It is injected as an HTTP header value: line breaks or control bytes would corrupt it.
    result.error = "the " + what + " contains a line break or control character (only one "
                   "trailing newline is stripped); nothing was stored";
  } else {
    result.value = core::SecretString(std::string_view(buf));
  }
  core::secureWipe(buf.data(), buf.size());
  return result;
}

}  // namespace keyway::daemon::ctl
