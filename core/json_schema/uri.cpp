// URI reference resolution (RFC 3986) for "$id"/"$ref", and JSON pointer (RFC 6901) building.
#include "core/json_schema/uri.hpp"

#include <algorithm>
#include <cctype>
#include <vector>

namespace keyway::core::json_schema {

namespace {

std::string removeDotSegments(std::string_view in) {
  std::vector<std::string_view> out;
  const bool absolute = !in.empty() && in[0] == '/';
  std::size_t i = absolute ? 1 : 0;
  bool trailing = false;
  while (i <= in.size()) {
    const std::size_t e = std::min(in.find('/', i), in.size());
    const std::string_view seg = in.substr(i, e - i);
    trailing = false;
    if (seg == ".") {
      trailing = true;
    } else if (seg == "..") {
      if (!out.empty()) out.pop_back();
      trailing = true;
    } else {
      out.push_back(seg);
    }
    i = e + 1;
  }
  std::string result = absolute ? "/" : "";
  for (std::size_t k = 0; k < out.size(); ++k) {
    if (k > 0) result += '/';
    result += out[k];
  }
  if (trailing && !result.empty() && result.back() != '/') result += '/';
  return result;
}

std::string composeUri(const UriParts& p) {
  std::string out;
  if (!p.scheme.empty()) out += p.scheme + ":";
  if (p.has_authority) out += "//" + p.authority;
  out += p.path;
  if (p.has_query) out += "?" + p.query;
  if (p.has_fragment) out += "#" + p.fragment;
  return out;
}

}  // namespace

UriParts parseUri(std::string_view s) {
  UriParts p;
  std::size_t i = 0;
  const std::size_t colon = s.find(':');
  const std::size_t delim = s.find_first_of("/?#");
  if (colon != std::string_view::npos && colon > 0 && (delim == std::string_view::npos || colon < delim) &&
      std::isalpha(static_cast<unsigned char>(s[0]))) {
    bool scheme_ok = true;
    for (std::size_t k = 0; k < colon; ++k) {
      const auto c = static_cast<unsigned char>(s[k]);
      if (!std::isalnum(c) && c != '+' && c != '-' && c != '.') scheme_ok = false;
    }
    if (scheme_ok) {
      p.scheme = std::string(s.substr(0, colon));
      i = colon + 1;
    }
  }
  if (s.substr(i, 2) == "//") {
    i += 2;
    const std::size_t e = std::min(s.find_first_of("/?#", i), s.size());
    p.has_authority = true;
    p.authority = std::string(s.substr(i, e - i));
    i = e;
  }
  std::size_t e = std::min(s.find_first_of("?#", i), s.size());
  p.path = std::string(s.substr(i, e - i));
  i = e;
  if (i < s.size() && s[i] == '?') {
    e = std::min(s.find('#', i), s.size());
    p.has_query = true;
    p.query = std::string(s.substr(i + 1, e - i - 1));
    i = e;
  }
  if (i < s.size() && s[i] == '#') {
    p.has_fragment = true;
    p.fragment = std::string(s.substr(i + 1));
  }
  return p;
}

std::string resolveUri(std::string_view base, std::string_view ref) {
  const UriParts r = parseUri(ref);
  const UriParts b = parseUri(base);
  UriParts t;
  if (!r.scheme.empty()) {
    t = r;
    t.path = removeDotSegments(r.path);
  } else {
    if (r.has_authority) {
      t.has_authority = true;
      t.authority = r.authority;
      t.path = removeDotSegments(r.path);
      t.has_query = r.has_query;
      t.query = r.query;
    } else {
      if (r.path.empty()) {
        t.path = b.path;
        t.has_query = r.has_query || b.has_query;
        t.query = r.has_query ? r.query : b.query;
      } else {
        if (r.path[0] == '/') {
          t.path = removeDotSegments(r.path);
        } else {
          std::string merged;
          if (b.has_authority && b.path.empty()) {
            merged = "/" + r.path;
          } else {
            const std::size_t slash = b.path.rfind('/');
            merged = (slash == std::string::npos ? std::string() : b.path.substr(0, slash + 1)) + r.path;
          }
          t.path = removeDotSegments(merged);
        }
        t.has_query = r.has_query;
        t.query = r.query;
      }
      t.has_authority = b.has_authority;
      t.authority = b.authority;
    }
    t.scheme = b.scheme;
  }
  t.has_fragment = r.has_fragment;
  t.fragment = r.fragment;
  return composeUri(t);
}

std::string stripEmptyFragment(std::string uri) {
  if (!uri.empty() && uri.back() == '#') uri.pop_back();
  return uri;
}

std::string withoutFragment(const std::string& uri) {
  const std::size_t hash = uri.find('#');
  return hash == std::string::npos ? uri : uri.substr(0, hash);
}

std::string childPointer(const std::string& parent, std::string_view token) {
  std::string out = parent;
  appendPointerToken(&out, token);
  return out;
}

std::string childPointer(const std::string& parent, std::size_t index) {
  return parent + "/" + std::to_string(index);
}

}  // namespace keyway::core::json_schema
