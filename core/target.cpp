// Request-target rules of docs/http.md: origin-form only, no dot segments, mount/rest split.
#include "core/target.hpp"

#include "core/text.hpp"

namespace keyway::core {

namespace {

Error badRequest(const char* message) { return Error::make(ErrorCode::kBadRequest, message); }

// "scheme:" at the start (RFC 3986 §3.1): what an absolute-form target begins with.
bool startsWithScheme(std::string_view t) {
  if (t.empty() || !isAlpha(t[0])) return false;
  for (size_t i = 1; i < t.size(); ++i) {
    const char c = t[i];
    if (c == ':') return true;
    if (!isAlpha(c) && !isDigit(c) && c != '+' && c != '-' && c != '.') return false;
  }
  return false;
}

// What checkCommon's byte scan must look at: everything else (letters, digits, most
// punctuation) is settled by one table load.
enum ByteClass : unsigned char { kByteOk, kByteBad, kByteHash, kBytePct, kByteDot };
struct ByteClasses {
  unsigned char of[256];
  constexpr ByteClasses() : of() {
    for (int c = 0; c < 256; ++c) of[c] = (c <= 0x20 || c >= 0x7F) ? kByteBad : kByteOk;
    of[static_cast<unsigned char>('#')] = kByteHash;
    of[static_cast<unsigned char>('%')] = kBytePct;
    of[static_cast<unsigned char>('.')] = kByteDot;
  }
};
constexpr ByteClasses kByteClasses;

// Checks the bytes of a target or rest: visible ASCII, no fragment, well-formed escapes, and no
// dot segment in the path part. Returns nullptr when fine, else the message. Runs on every
// request, so the byte scan is a table walk, and the dot-segment walk only runs when a '.' or
// an escape (which could encode one) is present.
const char* checkCommon(std::string_view t) {
  const size_t n = t.size();
  bool dot_or_escape = false;
  for (size_t i = 0; i < n; ++i) {
    const unsigned char cls = kByteClasses.of[static_cast<unsigned char>(t[i])];
    if (cls == kByteOk) continue;
    switch (cls) {
      case kByteBad:
        return "the request-target contains a space, control character or non-ASCII byte; "
               "percent-encode it";
      case kByteHash:
        return "the request-target must not contain a fragment ('#'); percent-encode '#' as %23";
      case kBytePct:
        if (i + 2 >= n || hexValue(t[i + 1]) < 0 || hexValue(t[i + 2]) < 0) {
          return "malformed percent-escape in the request-target: '%' must be followed by two "
                 "hex digits (encode a literal '%' as %25)";
        }
        i += 2;
        dot_or_escape = true;
        break;
      default:  // kByteDot
        dot_or_escape = true;
        break;
    }
  }
  if (!dot_or_escape) return nullptr;  // no segment can be "." or ".."

  // Dot segments, raw or encoded. Escapes are well-formed here, so t[i+1], t[i+2] exist.
  const std::string_view path = targetPath(t);
  size_t dots = 0;
  bool other = false;   // the segment holds something besides dots
  bool params = false;  // after ';' in the segment: ignored, "..;x" is still ".."
  auto segmentIsDot = [&]() { return !other && (dots == 1 || dots == 2); };
  for (size_t i = 0; i < path.size(); ++i) {
    char c = path[i];
    if (c == '%') {
      c = static_cast<char>(hexValue(path[i + 1]) * 16 + hexValue(path[i + 2]));
      i += 2;
    }
    if (c == '/' || c == '\\') {
      if (segmentIsDot()) break;
      dots = 0;
      other = params = false;
      continue;
    }
    if (params) continue;
    if (c == ';') {
      params = true;
    } else if (c == '.') {
      ++dots;
    } else {
      other = true;
    }
  }
  if (segmentIsDot()) {
    return "the request-target holds a '.' or '..' path segment (raw or percent-encoded); "
           "send the normalised path";
  }
  return nullptr;
}

}  // namespace

Status validateTarget(std::string_view target) {
  if (target.empty()) return badRequest("empty request-target");
  if (target[0] != '/') {
    if (target == "*") {
      return badRequest("asterisk-form request-target ('*') is not accepted; send "
                        "'/<upstream>/<path>'");
    }
    if (startsWithScheme(target) && target.find("://") != std::string_view::npos) {
      return badRequest("absolute-form request-target (a full URL) is not accepted: keyway is not "
                        "a forward proxy; send the path '/<upstream>/<path>' only");
    }
    return badRequest("the request-target must be origin-form, starting with '/': send "
                      "'/<upstream>/<path>' (authority-form and CONNECT are not supported)");
  }
  if (const char* msg = checkCommon(target)) return badRequest(msg);
  return okStatus();
}

std::optional<MountSplit> splitMount(std::string_view target) {
  if (target.empty() || target[0] != '/') return std::nullopt;
  // A loop, not find_first_of("/?"): that calls memchr once per byte.
  size_t end = 1;
  while (end < target.size() && target[end] != '/' && target[end] != '?') ++end;
  if (end == 1) return std::nullopt;
  MountSplit split;
  split.mount = target.substr(1, end - 1);
  if (end == target.size()) {
    split.rest = "/";
  } else if (target[end] == '?') {
    split.rest.reserve(target.size() - end + 1);
    split.rest.push_back('/');
    split.rest.append(target.substr(end));
  } else {
    split.rest.assign(target.substr(end));
  }
  return split;
}

Status validateRestOfValidTarget(std::string_view rest) {
  if (rest.empty() || rest[0] != '/') {
    return badRequest("the path after the upstream name must start with '/'");
  }
  if (rest.size() >= 2 && (rest[1] == '/' || rest[1] == '\\')) {
    return badRequest("the path after the upstream name must not start with '//' (it could "
                      "change the upstream host); remove the extra '/'");
  }
  return okStatus();
}

Status validateRest(std::string_view rest) {
  if (auto st = validateRestOfValidTarget(rest); !st.ok()) return st;
  if (const char* msg = checkCommon(rest)) return badRequest(msg);
  return okStatus();
}

std::string_view targetPath(std::string_view target) {
  const size_t q = target.find('?');
  return q == std::string_view::npos ? target : target.substr(0, q);
}

std::string_view targetQuery(std::string_view target) {
  const size_t q = target.find('?');
  return q == std::string_view::npos ? std::string_view() : target.substr(q + 1);
}

}  // namespace keyway::core
