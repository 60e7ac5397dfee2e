// Internal to core/json_schema/ (its .cpp files only): URIs for "$id"/"$ref" and JSON pointers (RFC 6901).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

// hexValue and percentDecodeOnce (%-escapes, and the hex digits regex.cpp and formats.cpp read),
// appendPointerToken.
#include "core/text.hpp"

namespace keyway::core::json_schema {

// A URI reference split into its RFC 3986 components; the has_ flags tell an empty component from
// an absent one.
struct UriParts {
  std::string scheme;
  bool has_authority = false;
  std::string authority;
  std::string path;
  bool has_query = false;
  std::string query;
  bool has_fragment = false;
  std::string fragment;
};

// Splits without validating (formats.cpp checks the characters of a "uri" value first).
UriParts parseUri(std::string_view s);

// RFC 3986 reference resolution, enough for "$id"/"$ref" handling (no normalisation beyond
// dot-segment removal).
std::string resolveUri(std::string_view base, std::string_view ref);

// "http://x/y#" and "http://x/y" name the same resource.
std::string stripEmptyFragment(std::string uri);

// `uri` up to its '#', if any.
std::string withoutFragment(const std::string& uri);

// `parent` extended by one member name or array index.
std::string childPointer(const std::string& parent, std::string_view token);
std::string childPointer(const std::string& parent, std::size_t index);

}  // namespace keyway::core::json_schema
