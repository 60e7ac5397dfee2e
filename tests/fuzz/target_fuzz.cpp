// Fuzz target: request-target validation and the mount split, against a naive reference model.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "core/target.hpp"

namespace {

#define FUZZ_CHECK(cond)                                                         \
  do {                                                                           \
    if (!(cond)) {                                                               \
      std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                              \
    }                                                                            \
  } while (0)

int hex(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Written independently of core/target.cpp, as simply as possible: decode once, then split.
bool referenceOk(std::string_view t) {
  if (t.empty() || t[0] != '/') return false;
  for (size_t i = 0; i < t.size(); ++i) {
    const char c = t[i];
    if (c <= 0x20 || c >= 0x7F || c == '#') return false;
    if (c == '%' && (i + 2 >= t.size() || hex(t[i + 1]) < 0 || hex(t[i + 2]) < 0)) return false;
  }
  std::string_view path = t.substr(0, t.find('?'));
  std::string decoded;
  for (size_t i = 0; i < path.size(); ++i) {
    if (path[i] == '%') {
      decoded.push_back(static_cast<char>(hex(path[i + 1]) * 16 + hex(path[i + 2])));
      i += 2;
    } else {
      decoded.push_back(path[i]);
    }
  }
  for (char& c : decoded) {
    if (c == '\\') c = '/';
  }
  size_t start = 0;
  while (start <= decoded.size()) {
    size_t end = decoded.find('/', start);
    if (end == std::string::npos) end = decoded.size();
    std::string seg = decoded.substr(start, end - start);
    seg = seg.substr(0, seg.find(';'));
    if (seg == "." || seg == "..") return false;
    start = end + 1;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view t(reinterpret_cast<const char*>(data), size);
  const auto st = keyway::core::validateTarget(t);
  FUZZ_CHECK(st.ok() == referenceOk(t));
  if (!st.ok()) {
    FUZZ_CHECK(st.error().code == keyway::core::ErrorCode::kBadRequest);
    FUZZ_CHECK(!st.error().message.empty());
  }

  const auto path = keyway::core::targetPath(t);
  const auto query = keyway::core::targetQuery(t);
  if (path.size() == t.size()) {
    FUZZ_CHECK(query.empty());
  } else {
    FUZZ_CHECK(std::string(path) + "?" + std::string(query) == t);
  }

  const auto split = keyway::core::splitMount(t);
  if (!split) {
    FUZZ_CHECK(t.size() < 2 || t[0] != '/' || t[1] == '/' || t[1] == '?');
    return 0;
  }
  FUZZ_CHECK(!split->mount.empty());
  FUZZ_CHECK(split->mount.find_first_of("/?") == std::string_view::npos);
  FUZZ_CHECK(!split->rest.empty() && split->rest[0] == '/');
  const std::string prefix = "/" + std::string(split->mount);
  const bool rebuilt = prefix + split->rest == t ||
                       (split->rest == "/" && prefix == t) ||
                       (split->rest.compare(0, 2, "/?") == 0 && prefix + split->rest.substr(1) == t);
  FUZZ_CHECK(rebuilt);
  const auto rest_st = keyway::core::validateRest(split->rest);
  if (st.ok()) {
    // The rest of a valid target is valid unless it starts with "//" or "/\".
    const bool host_like = split->rest.size() >= 2 && (split->rest[1] == '/' || split->rest[1] == '\\');
    FUZZ_CHECK(rest_st.ok() == !host_like);
  }
  if (rest_st.ok()) FUZZ_CHECK(referenceOk(split->rest));
  return 0;
}
