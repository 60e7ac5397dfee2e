// The default warning sink of storage/: JSON lines on stderr.
#include "storage/warning.hpp"

#include <stdio.h>
#include <unistd.h>

#include <string>

namespace keyway::storage {
namespace {

std::string jsonEscape(std::string_view s) {
  std::string out;
  for (const char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(static_cast<unsigned char>(c)));
      out += buf;
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace

void warnOnStderr(std::string_view component, std::string_view message) {
  const std::string line = "{\"level\":\"warn\",\"component\":\"" + jsonEscape(component) +
                           "\",\"message\":\"" + jsonEscape(message) + "\"}\n";
  // A failed write to stderr is dropped: there is nowhere left to report it.
  (void)!::write(2, line.data(), line.size());
}

}  // namespace keyway::storage
