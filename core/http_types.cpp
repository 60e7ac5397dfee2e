// Header helpers for the plain HTTP types.
#include "core/http_types.hpp"

#include <algorithm>

namespace keyway::core {


const Header* findHeader(const Headers& headers, std::string_view name) {
  for (const auto& h : headers) {
    if (iequals(h.name, name)) return &h;
  }
  return nullptr;
}

std::optional<std::string_view> headerValue(const Headers& headers, std::string_view name) {
  const Header* h = findHeader(headers, name);
  if (h == nullptr) return std::nullopt;
  return std::string_view(h->value);
}

size_t removeHeader(Headers& headers, std::string_view name) {
  const auto before = headers.size();
  headers.erase(std::remove_if(headers.begin(), headers.end(),
                               [&](const Header& h) { return iequals(h.name, name); }),
                headers.end());
  return before - headers.size();
}

void setHeader(Headers& headers, std::string_view name, std::string_view value) {
  removeHeader(headers, name);
  headers.push_back(Header{std::string(name), std::string(value)});
}

}  // namespace keyway::core
