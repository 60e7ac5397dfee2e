// Name validation and the escaping of names in error messages.
#include "storage/names.hpp"

#include <algorithm>

namespace keyway::storage {

bool isValidName(std::string_view name) {
  if (name.empty() || name.size() > kMaxNameLength || name.front() == '-') return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '.' || c == '_' || c == '@' || c == '+' || c == '-';
  });
}

core::Status validateName(std::string_view kind, std::string_view name) {
  if (isValidName(name)) return core::okStatus();
  return core::Error::make(core::ErrorCode::kBadRequest,
                           "invalid " + std::string(kind) + " name '" + printable(name) +
                               "': use 1-128 characters from A-Z a-z 0-9 . _ @ + -, not "
                               "starting with '-'");
}

std::string printable(std::string_view s) {
  std::string out;
  for (char c : s.substr(0, 64)) {
    const auto u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u < 0x7f) {
      out.push_back(c);
    } else {
      static const char* kHex = "0123456789abcdef";
      out += "\\x";
      out.push_back(kHex[u >> 4]);
      out.push_back(kHex[u & 15]);
    }
  }
  if (s.size() > 64) out += "...";
  return out;
}

}  // namespace keyway::storage
